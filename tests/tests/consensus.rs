//! Raft in the kernel, three QEMU nodes on the host switch: they elect one leader,
//! replicate proposals, survive the leader's SIGKILL (a new leader in a later term
//! keeps committing), and the killed node restarts from its RAM file and catches up.

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

#[derive(Debug, Clone, PartialEq)]
struct RaftStatus {
    role: String,
    term: u64,
    leader: String,
    commit: u64,
}

fn status(vm: &mut Vm) -> RaftStatus {
    let before = vm.count("raft: node n");
    vm.send_line("raft").unwrap();
    let end = Instant::now() + T;
    while vm.count("raft: node n") <= before {
        assert!(Instant::now() < end, "no raft status:\n{}", vm.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = vm.output();
    let line = out
        .lines()
        .rfind(|l| l.contains("raft: node n"))
        .unwrap()
        .to_string();
    let word = |k: &str| {
        line.split_whitespace()
            .skip_while(|w| *w != k)
            .nth(1)
            .unwrap()
            .to_string()
    };
    RaftStatus {
        role: word("role"),
        term: word("term").parse().unwrap(),
        leader: word("leader"),
        commit: word("commit").parse().unwrap(),
    }
}

/// Waits until every node in `vms` (by index) agrees on one leader; returns its id.
fn agreed_leader(vms: &mut [Option<Vm>], not: Option<usize>) -> (usize, u64) {
    let end = Instant::now() + T;
    loop {
        let st: Vec<_> = vms.iter_mut().map(|v| v.as_mut().map(status)).collect();
        let live: Vec<_> = st.iter().flatten().collect();
        let leader = &live[0].leader;
        if leader != "none"
            && live
                .iter()
                .all(|s| &s.leader == leader && s.term == live[0].term)
        {
            let id: usize = leader.trim_start_matches('n').parse().unwrap();
            if not != Some(id) {
                return (id, live[0].term);
            }
        }
        assert!(Instant::now() < end, "no agreed leader: {st:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn propose(vm: &mut Vm, text: &str) {
    vm.command(
        &format!("raft propose {text}"),
        "raft: proposed at index",
        T,
    )
    .unwrap();
}

fn wait_commit(vms: &mut [Option<Vm>], at_least: u64) {
    let end = Instant::now() + T;
    loop {
        let commits: Vec<_> = vms
            .iter_mut()
            .map(|v| v.as_mut().map(|vm| status(vm).commit))
            .collect();
        if commits.iter().flatten().all(|&c| c >= at_least) {
            return;
        }
        assert!(
            Instant::now() < end,
            "commit did not reach {at_least}: {commits:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn three_nodes_elect_replicate_fail_over_and_recover() {
    let dir = temp_dir("raft").unwrap();
    let sw = xdv::switch::spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 3,
        seed: 5,
        faults: Faults::default(),
    })
    .unwrap();
    let mut vms: Vec<Option<Vm>> = (1..=3).map(|id| Some(node(&dir, id))).collect();
    let (leader, term) = agreed_leader(&mut vms, None);
    let base = status(vms[leader - 1].as_mut().unwrap()).commit;
    for i in 0..5 {
        propose(vms[leader - 1].as_mut().unwrap(), &format!("entry-{i}"));
    }
    wait_commit(&mut vms, base + 5);

    // Kill the leader: the other two elect a new one in a later term and commit.
    vms[leader - 1].as_mut().unwrap().kill();
    vms[leader - 1] = None;
    let (leader2, term2) = agreed_leader(&mut vms, Some(leader));
    assert_ne!(leader2, leader);
    assert!(term2 > term, "term did not advance: {term} -> {term2}");
    let base2 = status(vms[leader2 - 1].as_mut().unwrap()).commit;
    for i in 0..3 {
        propose(
            vms[leader2 - 1].as_mut().unwrap(),
            &format!("after-failover-{i}"),
        );
    }
    wait_commit(&mut vms, base2 + 3);

    // Restart the killed node on its RAM file: it restores its log and catches up.
    let back = node(&dir, leader as u16);
    assert!(
        back.output().contains("restored from its region"),
        "{}",
        back.output()
    );
    vms[leader - 1] = Some(back);
    wait_commit(&mut vms, base2 + 3);
    let (leader3, _) = agreed_leader(&mut vms, None);
    assert_eq!(leader3, leader2, "the restarted node disturbed the leader");
    for vm in vms.iter_mut().flatten() {
        vm.send_line("halt").unwrap();
        let _ = vm.wait_exit(Duration::from_secs(30));
    }
    sw.shutdown().unwrap();
}
