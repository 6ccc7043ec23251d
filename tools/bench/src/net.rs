//! `cargo xdv bench net`: two QEMU nodes on the host switch.
//! - TCP bulk throughput node→node (`bulk` console command) against the switch's own
//!   forwarding limit measured in the same run with host-side generators (no VMs);
//!   and the same transfer between two nodes with e1000e NICs (virtio-net vs e1000e):
//!   [`BULK_RUNS`] rounds, each booting a virtio-net pair then an e1000e pair, the
//!   median of each model and their ratio;
//! - round-trip time of a small framed request (Ping → Pong) over the management port
//!   (host → node 2) and node-to-node (ICMP echo through the switch), p50/p99;
//! - the same TCP transfer and back-to-back ICMP round trips between two stock Debian
//!   Linux guests (virtio-net, same switch program, same QEMU options;
//!   [`crate::linux_guest`]), booted once after round 1, with the goals' ratios:
//!   RTT p50 XDV / Linux ≤ 1.0, TCP XDV / Linux ≥ 3, TCP XDV / switch limit ≥ 0.1.
//!   When the Linux kernel or busybox cannot be installed, the baseline is skipped
//!   with the reason and the XDV numbers still print.

use crate::linux_guest::{self, Measured};
use crate::report::print_json;
use anyhow::{Context, Result, bail};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use xdv::qemu::{Config, NicModel, Vm, temp_dir};
use xdv::switch::{Faults, SwitchConfig, SwitchHandle};
use xdv_net::wire::{ClusterMessage, FrameDecoder, FrameHeader, Ping, encode_frame, read_frame};
use xdv_types::{NodeId, Timestamp};

const T: Duration = Duration::from_secs(180);
const BULK_BYTES: u64 = 8 << 20;
const RTT_SAMPLES: usize = 200;
/// Bulk transfers per NIC model (the median is compared: the host is shared and noisy).
const BULK_RUNS: usize = 3;

fn node(dir: &std::path::Path, id: u16, mgmt_port: u16, nic: NicModel) -> Result<Vm> {
    let cfg = Config::kernel(&format!("node={id} ip=10.0.0.{id}/24 peers=1,2"))?.with_nics_of(
        nic,
        dir,
        id,
        Some(mgmt_port),
    );
    let mut vm = Vm::spawn(&cfg)?;
    vm.wait_for("xdv> ", T)?;
    Ok(vm)
}

fn command(vm: &mut Vm, cmd: &str, needle: &str) -> Result<String> {
    vm.command(cmd, needle, T)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mgmt_rtts(port: u16) -> Result<Vec<f64>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("management port")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut dec = FrameDecoder::new();
    let mut out = Vec::with_capacity(RTT_SAMPLES);
    for seq in 0..RTT_SAMPLES as u64 + 10 {
        let hdr = FrameHeader {
            source: NodeId(0),
            target: NodeId(2),
            timestamp: Timestamp(seq),
            message_id: seq,
        };
        let frame = encode_frame(
            &hdr,
            &ClusterMessage::Ping(Ping {
                seq,
                payload: vec![0; 32],
            }),
        )
        .map_err(|e| anyhow::anyhow!("encode: {e}"))?;
        let t = Instant::now();
        std::io::Write::write_all(&mut s, &frame)?;
        let reply = read_frame(&mut s, &mut dec)?;
        if !matches!(reply.message, ClusterMessage::Pong(ref p) if p.seq == seq) {
            bail!("unexpected reply {:?}", reply.message.msg_type());
        }
        if seq >= 10 {
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn icmp_rtts(vm: &mut Vm) -> Result<Vec<f64>> {
    let out = command(
        vm,
        &format!("ping 10.0.0.2 {}", RTT_SAMPLES),
        "ping 10.0.0.2:",
    )?;
    let mut v: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("reply from 10.0.0.2"))
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    if v.len() < RTT_SAMPLES / 2 {
        bail!("only {} ICMP replies", v.len());
    }
    Ok(v)
}

/// [`bulk_once`], tried a second time (with the first failure printed) if it fails.
fn bulk(n1: &mut Vm) -> Result<f64> {
    bulk_once(n1).or_else(|e| {
        eprintln!("bulk transfer failed, trying once more: {e:#}");
        bulk_once(n1)
    })
}

/// `bulk 2 BULK_BYTES` from `n1`; MB/s.
fn bulk_once(n1: &mut Vm) -> Result<f64> {
    command(n1, "ping 10.0.0.2 2", "ping 10.0.0.2:")?;
    let out = command(n1, &format!("bulk 2 {BULK_BYTES}"), "bulk: sent")?;
    let line = out
        .lines()
        .rfind(|l| l.contains("bulk: sent"))
        .unwrap_or("");
    let kbps: f64 = line
        .split("= ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no bulk rate in the node's output:\n{out}"))?;
    Ok(kbps / 1024.0)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn show(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
    parts.join(", ")
}

/// `bench net --bulk-only`: one virtio-net pair and one e1000e pair, one bulk transfer
/// each, and their ratio (a quick look while changing the TCP path; the full run adds
/// the switch's limit and the Linux guests as baselines).
fn bulk_only() -> Result<()> {
    let mut rates = Vec::new();
    for nic in [NicModel::Virtio, NicModel::E1000e] {
        let mut p = Pair::boot(nic)?;
        let mbps = bulk(&mut p.n1)?;
        p.halt()?;
        println!("TCP bulk node1 -> node2, {}: {mbps:.2} MB/s", nic.name());
        rates.push(mbps);
    }
    println!(
        "ratio e1000e / virtio-net TCP bulk: {:.2}x (one transfer each)",
        rates[1] / rates[0]
    );
    Ok(())
}

/// Two nodes with NICs of `nic` on a switch of their own, booted to the prompt.
struct Pair {
    n1: Vm,
    n2: Vm,
    mgmt2: u16,
    _switch: SwitchHandle,
}

impl Pair {
    fn boot(nic: NicModel) -> Result<Pair> {
        let dir = temp_dir(&format!("bench-net-{}", nic.name()))?;
        let switch = xdv::switch::spawn(SwitchConfig {
            dir: dir.clone(),
            ports: 2,
            seed: 1,
            faults: Faults::default(),
        })?;
        let (p1, p2) = (xdv::testbed::free_port(), xdv::testbed::free_port());
        let n1 = node(&dir, 1, p1, nic)?;
        let n2 = node(&dir, 2, p2, nic)?;
        Ok(Pair {
            n1,
            n2,
            mgmt2: p2,
            _switch: switch,
        })
    }

    fn halt(mut self) -> Result<()> {
        for vm in [&mut self.n1, &mut self.n2] {
            vm.send_line("halt")?;
            let _ = vm.wait_exit(Duration::from_secs(30));
        }
        Ok(())
    }
}

pub fn run(args: &[String]) -> Result<()> {
    match args {
        [] => {}
        [q] if q == "--bulk-only" => return bulk_only(),
        _ => bail!("usage: bench net [--bulk-only]"),
    }
    let (_, limit_mbps) = xdv::switch::bench_forwarding(Duration::from_secs(2))?;
    println!("switch forwarding limit (host generators, 1500-byte frames): {limit_mbps:.1} MB/s");
    // Round 0 on virtio-net also measures the round trips. The models alternate, one
    // pair booted at a time, so a change in the shared host's load hits both alike.
    let (mut virtio, mut e1000e) = (Vec::new(), Vec::new());
    let (mut icmp, mut mgmt) = (Vec::new(), Vec::new());
    let mut linux = Err(anyhow::anyhow!("not run"));
    for round in 0..BULK_RUNS {
        let mut p = Pair::boot(NicModel::Virtio)?;
        virtio.push(bulk(&mut p.n1)?);
        if round == 0 {
            icmp = icmp_rtts(&mut p.n1)?;
            mgmt = mgmt_rtts(p.mgmt2)?;
        }
        p.halt()?;
        if round == 0 {
            linux = linux_baseline();
        }
        let mut p = Pair::boot(NicModel::E1000e)?;
        e1000e.push(bulk(&mut p.n1)?);
        p.halt()?;
        eprintln!(
            "round {}: virtio-net {:.2} MB/s, e1000e {:.2} MB/s",
            round + 1,
            virtio[round],
            e1000e[round]
        );
    }
    let (mbps, e1000e_mbps) = (median(&virtio), median(&e1000e));
    println!(
        "TCP bulk node1 -> node2 through the switch, virtio-net: {mbps:.2} MB/s \
         (median of {BULK_RUNS} x {BULK_BYTES} bytes: {})",
        show(&virtio)
    );
    println!(
        "TCP bulk node1 -> node2 through the switch, e1000e: {e1000e_mbps:.2} MB/s \
         (median of {BULK_RUNS}: {})",
        show(&e1000e)
    );
    println!(
        "ratio e1000e / virtio-net TCP bulk: {:.2}x",
        e1000e_mbps / mbps
    );
    println!(
        "node-to-node RTT (ICMP through the switch, virtio-net): p50 {:.3} ms p99 {:.3} ms",
        percentile(&icmp, 0.5),
        percentile(&icmp, 0.99)
    );
    println!(
        "management port RTT (framed Ping/Pong, host -> node): p50 {:.3} ms p99 {:.3} ms",
        percentile(&mgmt, 0.5),
        percentile(&mgmt, 0.99)
    );
    println!(
        "ratio TCP bulk (virtio-net) / switch limit: {:.3} (goal >= 0.1)",
        mbps / limit_mbps
    );
    let linux_json = show_linux(&linux, mbps, &icmp);
    print_json(
        "net",
        "MB/s",
        mbps,
        limit_mbps,
        serde_json::json!({
            "icmp_rtt_ms_p50": percentile(&icmp, 0.5), "icmp_rtt_ms_p99": percentile(&icmp, 0.99),
            "mgmt_rtt_ms_p50": percentile(&mgmt, 0.5), "mgmt_rtt_ms_p99": percentile(&mgmt, 0.99),
            "e1000e_mbps": e1000e_mbps, "e1000e_over_virtio": e1000e_mbps / mbps,
            "virtio_runs_mbps": virtio, "e1000e_runs_mbps": e1000e,
            "tcp_over_switch_limit": mbps / limit_mbps, "linux": linux_json,
        }),
    );
    Ok(())
}

/// The Linux guest pair's numbers, or why there are none (printed; the bench goes on).
fn linux_baseline() -> Result<Measured> {
    let dir = temp_dir("bench-net-linux")?;
    let m = linux_guest::measure(
        &dir,
        linux_guest::Plan {
            pings: RTT_SAMPLES,
            bulk_bytes: BULK_BYTES,
            bulk_runs: BULK_RUNS,
        },
    );
    match &m {
        Ok(m) => eprintln!(
            "Linux guest pair: TCP bulk nc {} MB/s, HTTP {} MB/s",
            show(&m.bulk_mibps),
            show(&m.http_mibps)
        ),
        Err(e) => eprintln!("Linux guest pair skipped: {e:#}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    m
}

/// Prints the Linux pair's numbers beside XDV's (`mbps`, sorted `icmp`) with the
/// goals' ratios; returns them for the JSON line (`null` fields when skipped).
fn show_linux(linux: &Result<Measured>, mbps: f64, icmp: &[f64]) -> serde_json::Value {
    let m = match linux {
        Ok(m) => m,
        Err(e) => {
            println!("Linux guest pair: skipped ({e:#})");
            return serde_json::json!({ "skipped": format!("{e:#}") });
        }
    };
    let (nc_mbps, http_mbps) = (median(&m.bulk_mibps), median(&m.http_mibps));
    let linux_mbps = nc_mbps.max(http_mbps);
    let (p50, p99) = (percentile(&m.rtts_ms, 0.5), percentile(&m.rtts_ms, 0.99));
    println!(
        "Linux guest pair ({} + busybox initramfs, virtio-net, same switch): TCP bulk \
         nc {nc_mbps:.2} MB/s (median of {}: {}), httpd -> wget {http_mbps:.2} MB/s \
         (median of {}: {}); ICMP RTT back-to-back p50 {p50:.3} ms p99 {p99:.3} ms \
         ({} replies)",
        m.kernel,
        m.bulk_mibps.len(),
        show(&m.bulk_mibps),
        m.http_mibps.len(),
        show(&m.http_mibps),
        m.rtts_ms.len()
    );
    let rtt_ratio = percentile(icmp, 0.5) / p50;
    println!("ratio node-to-node RTT p50 XDV / Linux: {rtt_ratio:.2} (goal <= 1.0)");
    println!(
        "ratio TCP bulk XDV / Linux (the faster of nc and HTTP, {linux_mbps:.2} MB/s): {:.2} (goal >= 3)",
        mbps / linux_mbps
    );
    serde_json::json!({
        "kernel": m.kernel, "tcp_mbps": linux_mbps, "nc_mbps": nc_mbps, "http_mbps": http_mbps,
        "nc_runs_mbps": m.bulk_mibps, "http_runs_mbps": m.http_mibps,
        "icmp_rtt_ms_p50": p50, "icmp_rtt_ms_p99": p99,
        "xdv_over_linux_rtt_p50": rtt_ratio, "xdv_over_linux_tcp": mbps / linux_mbps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_ratios_use_the_faster_transfer_and_skips_say_why() {
        let m = Measured {
            rtts_ms: vec![0.2, 0.4, 0.6],
            bulk_mibps: vec![1.0, 2.0, 3.0],
            http_mibps: vec![8.0, 10.0, 12.0],
            kernel: "vmlinuz-test".into(),
        };
        let j = show_linux(&Ok(m), 5.0, &[0.2, 0.8, 1.0]);
        assert_eq!(j["tcp_mbps"], 10.0);
        assert_eq!(j["xdv_over_linux_tcp"], 0.5);
        assert_eq!(j["xdv_over_linux_rtt_p50"], 2.0);
        let j = show_linux(&Err(anyhow::anyhow!("no kernel")), 5.0, &[1.0]);
        assert_eq!(j["skipped"], "no kernel");
    }
}
