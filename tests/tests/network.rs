//! Two QEMU nodes on the host switch: ICMP both ways, a TCP stream through 10 % drop
//! and reordering arriving intact, garbage on the management port, and a partition
//! taking the peer down until it heals.

use std::io::Write;
use std::time::{Duration, Instant};
use xdv::qemu::{Config, Exit, Vm, temp_dir};
use xdv::switch::{Faults, SwitchConfig};

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn last_hash(out: &str, prefix: &str) -> String {
    // Asynchronous lines can follow the console prompt on the same line.
    let line = out
        .lines()
        .filter_map(|l| l.find(prefix).map(|at| &l[at..]))
        .next_back();
    let line = line.unwrap_or_else(|| panic!("no {prefix}: {out}"));
    line.split("sha256=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
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
    let sent = run(
        &mut n1,
        "bulk 2 1000000",
        "bulk: sent",
        Duration::from_secs(240),
    );
    let end = Instant::now() + T;
    while !n2.output().contains("bulk: received 1000000 bytes") {
        assert!(
            Instant::now() < end,
            "stream did not arrive:\n{}",
            n2.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        last_hash(&sent, "bulk: sent"),
        last_hash(&n2.output(), "bulk: received")
    );
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
