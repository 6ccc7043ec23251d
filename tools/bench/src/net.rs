//! `cargo xdv bench net`: two QEMU nodes on the host switch.
//! - TCP bulk throughput node→node (`bulk` console command) against the switch's own
//!   forwarding limit measured in the same run with host-side generators (no VMs);
//!   then the same transfer between two nodes with e1000e NICs (virtio-net vs e1000e);
//! - round-trip time of a small framed request (Ping → Pong) over the management port
//!   (host → node 2) and node-to-node (ICMP echo through the switch), p50/p99.

use crate::report::print_json;
use anyhow::{Context, Result, bail};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use xdv::qemu::{Config, NicModel, Vm, temp_dir};
use xdv::switch::{Faults, SwitchConfig};
use xdv_net::wire::{ClusterMessage, FrameDecoder, FrameHeader, Ping, encode_frame, read_frame};
use xdv_types::{NodeId, Timestamp};

const T: Duration = Duration::from_secs(180);
const BULK_BYTES: u64 = 8 << 20;
const RTT_SAMPLES: usize = 200;

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

/// `bulk 2 BULK_BYTES` from `n1`; MB/s.
fn bulk(n1: &mut Vm) -> Result<f64> {
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
        .context("bulk rate")?;
    Ok(kbps / 1024.0)
}

/// The same bulk transfer between two nodes with e1000e NICs on a switch of their own.
fn e1000e_bulk() -> Result<f64> {
    let dir = temp_dir("bench-net-e1000e")?;
    let sw = xdv::switch::spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 2,
        seed: 1,
        faults: Faults::default(),
    })?;
    let (p1, p2) = (xdv::testbed::free_port(), xdv::testbed::free_port());
    let mut n1 = node(&dir, 1, p1, NicModel::E1000e)?;
    let mut n2 = node(&dir, 2, p2, NicModel::E1000e)?;
    let mbps = bulk(&mut n1)?;
    for vm in [&mut n1, &mut n2] {
        vm.send_line("halt")?;
        let _ = vm.wait_exit(Duration::from_secs(30));
    }
    drop(sw);
    Ok(mbps)
}

pub fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: bench net");
    }
    let (_, limit_mbps) = xdv::switch::bench_forwarding(Duration::from_secs(2))?;
    println!("switch forwarding limit (host generators, 1500-byte frames): {limit_mbps:.1} MB/s");
    let dir = temp_dir("bench-net")?;
    let sw = xdv::switch::spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 2,
        seed: 1,
        faults: Faults::default(),
    })?;
    let free = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (p1, p2) = (free()?, free()?);
    let mut n1 = node(&dir, 1, p1, NicModel::Virtio)?;
    let mut n2 = node(&dir, 2, p2, NicModel::Virtio)?;
    let mbps = bulk(&mut n1)?;
    println!("TCP bulk node1 -> node2 through the switch: {mbps:.2} MB/s ({BULK_BYTES} bytes)");
    let icmp = icmp_rtts(&mut n1)?;
    println!(
        "node-to-node RTT (ICMP through the switch): p50 {:.3} ms p99 {:.3} ms",
        percentile(&icmp, 0.5),
        percentile(&icmp, 0.99)
    );
    let mgmt = mgmt_rtts(p2)?;
    println!(
        "management port RTT (framed Ping/Pong, host -> node): p50 {:.3} ms p99 {:.3} ms",
        percentile(&mgmt, 0.5),
        percentile(&mgmt, 0.99)
    );
    println!("ratio TCP bulk / switch limit: {:.3}", mbps / limit_mbps);
    for vm in [&mut n1, &mut n2] {
        vm.send_line("halt")?;
        let _ = vm.wait_exit(Duration::from_secs(30));
    }
    drop(sw);
    let e1000e = e1000e_bulk()?;
    println!(
        "TCP bulk node1 -> node2 on e1000e NICs (own switch, same run): {e1000e:.2} MB/s \
         ({:.2}x virtio-net)",
        e1000e / mbps
    );
    print_json(
        "net",
        "MB/s",
        mbps,
        limit_mbps,
        serde_json::json!({
            "icmp_rtt_ms_p50": percentile(&icmp, 0.5), "icmp_rtt_ms_p99": percentile(&icmp, 0.99),
            "mgmt_rtt_ms_p50": percentile(&mgmt, 0.5), "mgmt_rtt_ms_p99": percentile(&mgmt, 0.99),
            "e1000e_mbps": e1000e,
        }),
    );
    Ok(())
}
