//! Hash voting at run time (seed 001) on three booted nodes: node 3 boots with the
//! test-only fault hook `fault=corrupt-state@MS` and corrupts its own replica of the
//! cluster state a few seconds in. Nodes vote their state hash through the log every
//! `VOTE_EVERY` entries; the log finds node 3 in the minority and every node — node 3
//! included — quarantines it, records the alarm in its audit region and says so in
//! its status; node 3 then takes no placements while the cluster goes on committing.

use std::time::{Duration, Instant};
use xdv::operate::image::LoadOptions;
use xdv::operate::load_node;
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_audit::RecordBody;
use xdv_cluster::TaskStatus;
use xdv_cluster::mgmt::{Principal, Request, Response};
use xdv_types::{NodeId, TenantId};

const CORRUPT_AT_MS: u64 = 6_000;

fn quarantined_everywhere(tb: &Testbed) -> bool {
    (1..=3).all(|n| {
        tb.view(n).is_ok_and(|v| {
            v.members
                .iter()
                .any(|m| m.node == NodeId(3) && m.quarantined)
        })
    })
}

#[test]
fn a_corrupted_replica_is_outvoted_quarantined_and_recorded_everywhere() {
    let t0 = Instant::now();
    let mut tb = Testbed::prepare("hashvote", 3, Faults::default(), 5, "").unwrap();
    for id in 1..=2 {
        tb.vms[id - 1] = Some(tb.boot(id, &format!("node{id}.prov")).unwrap());
    }
    tb.cmdline = format!("fault=corrupt-state@{CORRUPT_AT_MS}");
    tb.test_hooks = true;
    tb.vms[2] = Some(tb.boot(3, "node3.prov").unwrap());
    tb.leader(&[1, 2, 3], Duration::from_secs(30)).unwrap();
    // Entries until the votes after the corruption are in (tasks give two entries each).
    let end = Instant::now() + Duration::from_secs(120);
    let mut k = 0;
    while !quarantined_everywhere(&tb) {
        assert!(
            Instant::now() < end,
            "node 3 not quarantined everywhere\n{}",
            tb.logs()
        );
        tb.submit(1, 8, &format!("load {k}"), Duration::from_secs(30))
            .unwrap();
        k += 1;
    }
    eprintln!(
        "quarantined everywhere after {:?} ({k} rounds of 8 tasks)",
        t0.elapsed()
    );
    let out3 = tb.vms[2].as_ref().unwrap().output();
    assert!(
        out3.contains("fault: state replica corrupted (test hook)"),
        "{out3}"
    );
    for n in [1usize, 3] {
        let out = tb.vms[n - 1].as_ref().unwrap().output();
        assert!(
            out.contains("ALARM: state hash of n3"),
            "node {n} printed no alarm:\n{out}"
        );
    }
    // The operator sees it in status: `cargo xdv status`'s health clause from the
    // nodes' own views, and each node's console `cluster` table (node 3's included),
    // where only node 3's row says so.
    let views: Vec<_> = (1..=3).map(|n| tb.view(n).unwrap()).collect();
    let refs: Vec<_> = views.iter().collect();
    let (quarantined, clause) = xdv::cluster::quarantine_summary(&refs);
    assert_eq!(quarantined, vec![3]);
    assert_eq!(
        clause,
        "; QUARANTINED node 3 (state hash disagreed with the majority)"
    );
    for n in 1..=3 {
        let start = tb.vm(n).output().len();
        // The table is whole once the next prompt follows it.
        let out = tb
            .vm(n)
            .command("cluster", "\nxdv> ", Duration::from_secs(20))
            .unwrap();
        let table = &out[start..];
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("  n") && l.contains(" assigned "))
            .take(3)
            .collect();
        assert_eq!(rows.len(), 3, "node {n}'s member table:\n{table}");
        for row in rows {
            assert_eq!(
                row.contains("QUARANTINED (state hash disagreed with the majority)"),
                row.starts_with("  n3 "),
                "node {n}'s row: {row}"
            );
        }
    }

    // The cluster goes on; node 3 takes no placements.
    let tasks = tb.submit(2, 10, "after", Duration::from_secs(30)).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    for t in tasks {
        loop {
            let q = xdv::mgmt::signed(
                &tb.keys,
                Principal::Tenant(TenantId(1)),
                Request::TaskStatus { task: t },
            )
            .unwrap();
            let r = xdv::mgmt::Client::connect(tb.port(1), Duration::from_secs(2))
                .and_then(|mut c| c.call(&q, Duration::from_secs(5)))
                .unwrap();
            if let Response::Task {
                status: TaskStatus::Completed { node, .. },
                ..
            } = r
            {
                assert_ne!(node, NodeId(3), "{t} ran on the quarantined node");
                break;
            }
            assert!(Instant::now() < end, "{t} did not complete\n{}", tb.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Every node's audit region holds the alarm record.
    for vm in tb.vms.iter_mut() {
        drop(vm.take());
    }
    for n in 1..=3u32 {
        let img = load_node(
            &tb.dir.join(format!("node{n}.ram")),
            &LoadOptions {
                prov: Some(tb.dir.join(format!("node{n}.prov"))),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let mut alarms = 0;
        xdv_audit::inspect_region_with(&img.audit, &mut |r| {
            if let RecordBody::Custom { tag, bytes } = &r.body
                && *tag == xdv_node::AUDIT_TAG_HASH_ALARM
                && let Ok((_, node, _, _)) = xdv_cluster::mgmt::decode::<(
                    u64,
                    NodeId,
                    xdv_types::Hash32,
                    xdv_types::Hash32,
                )>(bytes)
            {
                assert_eq!(node, NodeId(3));
                alarms += 1;
            }
        });
        assert!(alarms >= 1, "node {n} recorded no alarm");
    }
    eprintln!("hash-voting QEMU test took {:?}", t0.elapsed());
}
