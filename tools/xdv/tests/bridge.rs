//! A cluster across two "hosts" joined only by Linux bridges (issue 20): two network
//! namespaces, each with its own bridge, connected by a veth pair (as two hosts' bridges
//! are by a LAN or VXLAN). `up --net bridge=br0,netns=A` puts nodes 1 and 2 on host A's
//! bridge; `join --net bridge=br0,netns=B` boots node 3 on host B's, and it is admitted
//! as a voter through the veth pair. Node 1 is then killed: the survivors, one on each
//! side, elect and commit tasks submitted on both sides, and agree on the state hash.
//! A bridge that does not exist is refused by name. The test creates and removes every
//! namespace, bridge, veth and TAP it makes, also when it fails. Needs root (CI runs as
//! root); skipped with a message otherwise. Boots QEMU: `cargo test -p xdv --test bridge`.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{Down, xdv};

/// Is the effective uid 0? (From /proc: no libc call needed.)
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into()
}

/// The two "hosts": namespaces (their bridges and veth ends go with them) and any TAP
/// left in this namespace, removed on drop.
struct Hosts {
    netns: Vec<String>,
    taps: Vec<String>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for t in &self.taps {
            let _ = Command::new("ip").args(["link", "del", "dev", t]).output();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// (leader, state hashes of the answering nodes) from `status --json`.
fn leader_and_hashes(dir: &str) -> (Option<u64>, Vec<(u64, String)>) {
    let o = xdv(&["status", "--json", "--dir", dir]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let mut leader = None;
    let mut hashes = Vec::new();
    for n in v["nodes"].as_array().unwrap() {
        let view = &n["view"];
        if view.is_null() {
            continue;
        }
        if view["role"] == "leader" {
            leader = n["id"].as_u64();
        }
        hashes.push((
            n["id"].as_u64().unwrap(),
            view["state_hash"].as_str().unwrap().to_string(),
        ));
    }
    (leader, hashes)
}

fn commit_through(dir: &str, node: &str) {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let o = xdv(&[
            "submit", "hash", "--tenant", "1", "--node", node, "--dir", dir,
        ]);
        if o.code == 0 {
            return;
        }
        assert!(
            Instant::now() < end,
            "no task committed via node {node}: {o:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn nodes_on_two_bridged_hosts_form_one_cluster_and_commit() {
    if !is_root() {
        eprintln!(
            "SKIPPED: this test creates network namespaces, bridges and TAP devices and needs root (CI runs as root)"
        );
        return;
    }
    let tag = format!("xdvt{}", std::process::id());
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    let dir = xdv::qemu::temp_dir("bridge").unwrap();
    let d = dir.to_str().unwrap().to_string();
    let base = common::mgmt_port_base();
    let port0: u16 = base.parse().unwrap();
    // Dropped last: after `down` (below) has stopped the nodes.
    let _hosts = Hosts {
        netns: vec![a.clone(), b.clone()],
        taps: (1..=3).map(|n| xdv::bridge::tap_name(port0 + n)).collect(),
    };
    for ns in [&a, &b] {
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", ns, "link", "set", "br0", "up"]);
    }
    ip(&[
        "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b,
    ]);
    ip(&["-n", &a, "link", "set", "va", "master", "br0", "up"]);
    ip(&["-n", &b, "link", "set", "vb", "master", "br0", "up"]);
    let _down = Down(dir.clone());

    let on_a = format!("bridge=br0,netns={a}");
    let on_b = format!("bridge=br0,netns={b}");
    let o = xdv(&[
        "up",
        "--dir",
        &d,
        "--detach",
        "--timeout",
        "180",
        "--nodes",
        "2",
        "--tenants",
        "1",
        "--net",
        &on_a,
        "--mgmt-port-base",
        &base,
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    for (ns, n) in [(&a, 1), (&a, 2)] {
        let link = ip(&["-n", ns, "link", "show", &xdv::bridge::tap_name(port0 + n)]);
        assert!(link.contains("master br0"), "node {n}'s TAP: {link}");
    }
    commit_through(&d, "2");

    // A bridge that is not there is refused by name, and uses up no node id.
    let o = xdv(&[
        "join",
        "--dir",
        &d,
        "--net",
        &format!("bridge=nosuch0,netns={b}"),
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("no bridge nosuch0 in netns"), "{o:?}");

    let o = xdv(&["join", "--dir", &d, "--net", &on_b, "--timeout", "240"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("node 3 joined as a worker (voter)"),
        "{o:?}"
    );
    let link = ip(&["-n", &b, "link", "show", &xdv::bridge::tap_name(port0 + 3)]);
    assert!(link.contains("master br0"), "node 3's TAP: {link}");

    // Node 1 goes: node 2 (host A) and node 3 (host B) are a quorum only together.
    let o = xdv(&["kill", "1", "--dir", &d]);
    assert_eq!(o.code, 0, "{o:?}");
    commit_through(&d, "3");
    commit_through(&d, "2");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (l, h) = leader_and_hashes(&d);
        let ids: Vec<u64> = h.iter().map(|(n, _)| *n).collect();
        if l.is_some_and(|l| l != 1) && ids == [2, 3] && h[0].1 == h[1].1 {
            break;
        }
        assert!(
            Instant::now() < end,
            "no leader on 2/3 or hashes differ: {l:?} {h:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The veth pair, the only link between the hosts, carried the traffic both ways.
    let stats = ip(&["-n", &a, "-j", "-s", "link", "show", "va"]);
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let (rx, tx) = (
        v[0]["stats64"]["rx"]["packets"].as_u64().unwrap(),
        v[0]["stats64"]["tx"]["packets"].as_u64().unwrap(),
    );
    eprintln!("veth A<->B: {rx} packets in, {tx} out");
    assert!(rx > 100 && tx > 100, "{stats}");
}
