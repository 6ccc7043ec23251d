//! Membership while the cluster runs, on real QEMU nodes through the CLI (issue 17):
//! a 3-node cluster grows to 4 (a worker joins: it boots from the genesis, catches
//! up, is promoted to voter) and to 5 (an observer: a learner that runs no task), then
//! node 1 — the first leader — is removed (leadership moves first). A client submits
//! tasks the whole time, and every phase commits some. Refusals are specific: adding
//! a member twice, removing a non-member.
//! Boots QEMU: `cargo test -p xdv --test membership`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::{Down, xdv};

/// The members (node, raft place, observer) the leader reports, and the leader
/// (waits up to 30 s for one).
fn members(dir: &str) -> (Option<u64>, Vec<(u64, String, bool)>) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = members_once(dir);
        if r.0.is_some() || Instant::now() > end {
            return r;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn members_once(dir: &str) -> (Option<u64>, Vec<(u64, String, bool)>) {
    let o = xdv(&["status", "--json", "--dir", dir]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    for n in v["nodes"].as_array().unwrap() {
        let view = &n["view"];
        if view["role"] == "leader" {
            let m = view["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["node"].as_u64().unwrap(),
                        m["raft"].as_str().unwrap().to_string(),
                        m["observer"].as_bool().unwrap(),
                    )
                })
                .collect();
            return (n["id"].as_u64(), m);
        }
    }
    (None, Vec::new())
}

#[test]
fn three_to_five_nodes_then_one_leaves_while_clients_commit() {
    let dir = xdv::qemu::temp_dir("membership").unwrap();
    let _down = Down(dir.clone());
    let d = dir.to_str().unwrap().to_string();
    let base = common::mgmt_port_base();
    let o = xdv(&[
        "up",
        "--dir",
        &d,
        "--detach",
        "--timeout",
        "180",
        "--nodes",
        "3",
        "--tenants",
        "1",
        "--mgmt-port-base",
        &base,
    ]);
    assert_eq!(o.code, 0, "{o:?}");

    let (first_leader, m) = members(&d);
    assert_eq!(m.len(), 3, "{m:?}");
    let leaving = first_leader.expect("a leader").to_string();
    // The two first nodes that stay, for the client and the final lookups.
    let stay: Vec<String> = (1..=3u64)
        .filter(|n| Some(*n) != first_leader)
        .map(|n| n.to_string())
        .collect();
    // A client commits tasks through the two nodes that stay, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, done, d, stay) = (stop.clone(), done.clone(), d.clone(), stay.clone());
        std::thread::spawn(move || {
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let node = &stay[k as usize % 2];
                let o = xdv(&[
                    "submit", "hash", "--tenant", "1", "--node", node, "--dir", &d,
                ]);
                if o.code == 0 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let committed_during = |what: &str, f: &mut dyn FnMut()| {
        let before = done.load(Ordering::Relaxed);
        f();
        // Let the client get a task through the changed cluster.
        let end = Instant::now() + Duration::from_secs(60);
        while done.load(Ordering::Relaxed) <= before {
            assert!(Instant::now() < end, "no task committed after {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    committed_during("node 4 joined", &mut || {
        let o = xdv(&["join", "--dir", &d, "--timeout", "240"]);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(
            o.stdout.contains("node 4 joined as a worker (voter)"),
            "{o:?}"
        );
    });
    let o = xdv(&["join", "--node", "4", "--dir", &d]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("node 4 is already a member"), "{o:?}");

    committed_during("node 5 joined as an observer", &mut || {
        let o = xdv(&["join", "--observer", "--dir", &d, "--timeout", "240"]);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(
            o.stdout.contains("node 5 joined as an observer (learner)"),
            "{o:?}"
        );
    });
    let (_, m) = members(&d);
    let places: Vec<(u64, &str, bool)> = m.iter().map(|(n, r, o)| (*n, r.as_str(), *o)).collect();
    assert_eq!(
        places,
        [
            (1, "voter", false),
            (2, "voter", false),
            (3, "voter", false),
            (4, "voter", false),
            (5, "learner", true)
        ]
    );

    committed_during("the first leader left", &mut || {
        let o = xdv(&["remove", &leaving, "--dir", &d]);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(o.stdout.contains("removed and stopped"), "{o:?}");
    });
    let o = xdv(&["remove", &leaving, "--dir", &d]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("is not a member"), "{o:?}");
    let (leader, m) = members(&d);
    assert!(
        leader.is_some_and(|l| l.to_string() != leaving),
        "{leader:?}"
    );
    assert_eq!(m.len(), 4, "{m:?}");
    assert!(!m.iter().any(|(n, _, _)| n.to_string() == leaving), "{m:?}");

    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    // The observer ran nothing: every task's node is a worker.
    let o = xdv(&[
        "task", "list", "--node", &stay[0], "--limit", "256", "--dir", &d, "--json",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        !o.stdout.contains("\"node\":5"),
        "the observer ran a task: {o:?}"
    );
    eprintln!(
        "tasks committed meanwhile: {}",
        done.load(Ordering::Relaxed)
    );

    // Off-line replay of a real node that stayed throughout: its log re-applied on the
    // host matches its state hashes, and its RTT samples (pings to 2–4 peers) replay
    // to every coordinate its load heartbeats reported.
    let o = xdv(&["down", "--dir", &d]);
    assert_eq!(o.code, 0, "{o:?}");
    let ram = format!("{d}/node{}.ram", stay[0]);
    let o = xdv(&["replay", &ram, "--json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["verdict"]["result"], "ExactMatch", "{v}");
    let rtt = &v["rtt"];
    eprintln!("replay of node {}: {} rtt {rtt}", stay[0], v["verdict"]);
    assert_eq!(rtt["ok"], true, "{rtt}");
    assert!(rtt["taken"].as_u64().unwrap() >= 20, "{rtt}");
    assert!(rtt["heartbeats"].as_u64().unwrap() >= 1, "{rtt}");
    assert_eq!(rtt["matched"], rtt["heartbeats"], "{rtt}");

    // The scheduler replay logs of these real nodes: an export compares ExactMatch
    // with its RAM file (exit 0), and two nodes that ran different tasks are Diverged
    // (exit 1) at the first event, naming a task only one of them ran.
    let slog = format!("{d}/node{}.slog", stay[0]);
    let o = xdv(&["replay", "export", &ram, "-o", &slog]);
    assert_eq!(o.code, 0, "{o:?}");
    let events: u64 = o
        .stdout
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no event count: {o:?}"));
    assert!(
        events > 0,
        "node {} logged no scheduler events: {o:?}",
        stay[0]
    );
    let o = xdv(&["replay", "compare", &ram, &slog]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.starts_with("ExactMatch"), "{o:?}");
    let other = format!("{d}/node{}.ram", stay[1]);
    let o = xdv(&["replay", "compare", &ram, &other, "--json"]);
    assert_eq!(o.code, 1, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["result"], "Diverged", "{v}");
    // The task is named as the cluster knows it, not by its run-queue id.
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("(attempt ")),
        "{v}"
    );
    eprintln!("replay compare of nodes {} and {}: {v}", stay[0], stay[1]);
}
