//! Two QEMU nodes on the host switch: ICMP both ways, a 4 MB TCP stream through 10 %
//! drop and reordering arriving intact, garbage on the management port, and a partition
//! taking the peer down until it heals.

use std::io::Write;
use std::time::{Duration, Instant};
use xdv::qemu::{Config, Exit, Vm, temp_dir};
use xdv::switch::{Faults, SwitchConfig};
use xdv::testbed::free_port;

const T: Duration = Duration::from_secs(120);

fn node(dir: &std::path::Path, id: u16, mgmt_port: u16) -> Vm {
    let cfg = Config::kernel(&format!("node={id} ip=10.0.0.{id}/24 peers=1,2"))
        .unwrap()
        .with_nics(dir, id, Some(mgmt_port));
    let mut vm = Vm::spawn(&cfg).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    vm
}

/// Sends `cmd` and waits for `needle` to appear more times than before.
fn run(vm: &mut Vm, cmd: &str, needle: &str, timeout: Duration) -> String {
    vm.command(cmd, needle, timeout).unwrap()
}

fn wait_peer_state(vm: &mut Vm, state: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(vm, "peers", "bad frames:", T);
        let last = out.rsplit("node n").next().unwrap_or("");
        if last.lines().any(|l| l.contains(&format!(" {state} "))) {
            return;
        }
        assert!(Instant::now() < end, "peer never {state}:\n{out}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Bytes of the TCP stream sent through the faulty switch.
const BULK_BYTES: u64 = 4_000_000;
/// The stream must be through (sent, acknowledged, hashed on both sides) by then.
const BULK_TIMEOUT: Duration = Duration::from_secs(100);

/// Tail of a serial log (failure messages stay readable).
fn tail(out: &str, lines: usize) -> String {
    let all: Vec<&str> = out.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Streams `bytes` from `from` to `to`'s bulk sink; on a stall, prints both nodes'
/// network counters (virtio rings, bulk sockets) and the switch's statistics.
fn bulk(
    from: &mut Vm,
    to: &mut Vm,
    to_node: u16,
    sw: &xdv::switch::SwitchHandle,
    bytes: u64,
) -> String {
    let received = format!("bulk: received {bytes} bytes");
    let before = from.output().matches("bulk: sent").count();
    from.send_line(&format!("bulk {to_node} {bytes}")).unwrap();
    let end = Instant::now() + BULK_TIMEOUT;
    loop {
        let out = from.output();
        if out.matches("bulk: sent").count() > before && to.output().contains(&received) {
            return out;
        }
        if Instant::now() > end || out.contains("bulk: failed") || out.contains("connection lost") {
            let net = to
                .command("net", "bulk sink:", Duration::from_secs(20))
                .unwrap_or_else(|e| format!("{e:#}"));
            panic!(
                "stream of {bytes} bytes did not arrive within {BULK_TIMEOUT:?}\n\
                 --- sender ---\n{}\n--- receiver ---\n{}\n--- switch ---\n{}",
                tail(&out, 40),
                tail(&net, 40),
                sw.control("stats").unwrap_or_else(|e| format!("{e:#}"))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_nodes_through_the_switch() {
    let dir = temp_dir("net").unwrap();
    let sw = xdv::switch::spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 2,
        seed: 7,
        faults: Faults::default(),
    })
    .unwrap();
    let (m1, m2) = (free_port(), free_port());
    let mut n1 = node(&dir, 1, m1);
    let mut n2 = node(&dir, 2, m2);

    // ICMP both ways.
    let out = run(&mut n1, "ping 10.0.0.2 3", "ping 10.0.0.2:", T);
    assert!(out.contains("reply from 10.0.0.2: seq=0"), "{out}");
    let out = run(&mut n2, "ping 10.0.0.1 3", "ping 10.0.0.1:", T);
    assert!(out.contains("reply from 10.0.0.1: seq=0"), "{out}");
    wait_peer_state(&mut n1, "up");

    // A TCP stream through 10 % drop and 10 % reordering arrives intact.
    sw.control("drop 10").unwrap();
    sw.control("reorder 10").unwrap();
    let started = Instant::now();
    let sent = bulk(&mut n1, &mut n2, 2, &sw, BULK_BYTES);
    eprintln!(
        "bulk: {BULK_BYTES} bytes through 10 % drop + 10 % reorder in {:?}",
        started.elapsed()
    );
    assert!(
        sent.contains(&format!("bulk: sent {BULK_BYTES} bytes (the bulk pattern)")),
        "{}",
        tail(&sent, 20)
    );
    let got = format!("bulk: received {BULK_BYTES} bytes, pattern intact");
    assert!(n2.output().contains(&got), "{}", tail(&n2.output(), 20));
    let stats = sw.control("stats").unwrap();
    sw.control("drop 0").unwrap();
    sw.control("reorder 0").unwrap();
    assert!(stats.contains("dropped"), "{stats}");

    // Garbage, an oversized length and a wrong version on the management port:
    // counted, connection closed, node keeps serving.
    for payload in [vec![0xa5u8; 3000], {
        let mut v = (1u32 << 31).to_le_bytes().to_vec();
        v.extend_from_slice(b"junk");
        v
    }] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", m2)).unwrap();
        s.write_all(&payload).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let end = Instant::now() + T;
    loop {
        let out = run(&mut n2, "peers", "bad frames:", T);
        let total: u64 = out
            .lines()
            .rfind(|l| l.starts_with("bad frames:"))
            .unwrap()
            .rsplit("total=")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if total >= 2 {
            assert!(out.contains("length_over_limit="), "{out}");
            break;
        }
        assert!(Instant::now() < end, "garbage not counted:\n{out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    run(&mut n2, "ping 10.0.0.1 1", "ping 10.0.0.1:", T);

    // A partition takes the peer down; healing brings it back.
    sw.control("partition 1/2").unwrap();
    wait_peer_state(&mut n1, "down");
    sw.control("heal").unwrap();
    wait_peer_state(&mut n1, "up");

    for vm in [&mut n1, &mut n2] {
        vm.send_line("halt").unwrap();
        vm.expect_exit(Exit::Halted, T).unwrap();
    }
    sw.shutdown().unwrap();
}
