//! Peer health in the kernel (AD-35): three QEMU nodes on the host switch. The
//! transport's pings and pongs carry the nodes' Vivaldi coordinates, so the `health`
//! console command shows every member ALIVE with measured RTTs and a coordinate that
//! took samples; after node 3 is killed, the others suspect it (1.5 s of silence) and
//! then find it dead at the adaptive deadline, and the `health` view says so.

use std::time::{Duration, Instant};
use xdv::qemu::{Config, Vm, temp_dir};
use xdv::switch::{Faults, SwitchConfig};

const T: Duration = Duration::from_secs(120);

fn node(dir: &std::path::Path, id: u16) -> Vm {
    let cfg = Config::kernel(&format!("node={id} ip=10.0.0.{id}/24 peers=1,2,3"))
        .unwrap()
        .ram_file(dir.join(format!("node{id}.ram")))
        .with_nics(dir, id, None);
    let mut vm = Vm::spawn(&cfg).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    vm
}

/// The `health` answer's lines (the coordinate line, the members line, one per peer).
fn health(vm: &mut Vm) -> Vec<String> {
    let before = vm.count("members: ");
    vm.send_line("health").unwrap();
    let end = Instant::now() + T;
    while vm.count("members: ") <= before {
        assert!(Instant::now() < end, "no health answer:\n{}", vm.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = vm.output();
    let start = out.rfind("coordinate [").expect("coordinate line");
    out[start..].lines().take(4).map(str::to_string).collect()
}

/// The peer line about `peer` in a `health` answer.
fn peer_line(lines: &[String], peer: u32) -> String {
    let tag = format!("  n{peer} ");
    lines
        .iter()
        .find(|l| l.starts_with(&tag))
        .cloned()
        .unwrap_or_else(|| panic!("no line for n{peer}: {lines:#?}"))
}

fn rtt_us(line: &str) -> u64 {
    line.split("rtt ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rtt in {line}"))
}

#[test]
fn pings_feed_coordinates_and_a_killed_member_is_suspected_then_dead() {
    let dir = temp_dir("health").unwrap();
    let sw = xdv::switch::spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 3,
        seed: 7,
        faults: Faults::default(),
    })
    .unwrap();
    let mut vms: Vec<Vm> = (1..=3).map(|id| node(&dir, id)).collect();
    // Every member alive with measured RTTs, on node 1.
    let end = Instant::now() + T;
    let lines = loop {
        let l = health(&mut vms[0]);
        let ok = [2, 3].iter().all(|&p| {
            let line = peer_line(&l, p);
            line.contains(" alive ") && rtt_us(&line) > 0
        });
        if ok {
            break l;
        }
        assert!(
            Instant::now() < end,
            "members never alive with RTTs: {l:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(lines[1].contains("0 unconfirmed, 2 alive"), "{lines:#?}");
    let samples: u64 = lines[0]
        .split(" samples")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(samples > 0, "{lines:#?}");

    // Kill node 3: nodes 1 and 2 suspect it, then find it dead.
    vms[2].kill();
    let killed = Instant::now();
    for vm in vms.iter_mut().take(2) {
        vm.wait_for("peers: n3 suspected: dead in", T).unwrap();
        vm.wait_for("peers: n3 dead", T).unwrap();
    }
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(3_000),
        "dead too soon: {took:?}"
    );
    let l = health(&mut vms[0]);
    assert!(peer_line(&l, 3).contains(" dead "), "{l:#?}");
    assert!(peer_line(&l, 2).contains(" alive "), "{l:#?}");
    for vm in vms.iter_mut().take(2) {
        vm.send_line("halt").unwrap();
        let _ = vm.wait_exit(Duration::from_secs(30));
    }
    sw.shutdown().unwrap();
}
