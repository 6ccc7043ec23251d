//! Simulator tests: a fault-free run, determinism, a 1000-seed sweep with faults and
//! membership changes, and regression seeds.

use super::*;

#[test]
fn fault_free_cluster_commits_and_serves_ops() {
    let mut cfg = SimConfig::new(7, 3, 400);
    cfg.faults = false;
    cfg.membership = false;
    let (r, _) = run_seed(cfg);
    assert_eq!(r.violation, None);
    assert!(r.committed > 20, "committed only {}", r.committed);
    assert!(r.ops_completed > 20, "ops {}", r.ops_completed);
    assert_eq!(r.elections, 1, "a fault-free run elects exactly once");
}

#[test]
fn same_seed_same_run() {
    let a = run_seed(SimConfig::new(42, 5, 600));
    let b = run_seed(SimConfig::new(42, 5, 600));
    assert_eq!(format!("{:?}", a.0), format!("{:?}", b.0));
}

#[test]
fn sweep_1000_seeds() {
    let mut failures = Vec::new();
    let (mut snaps, mut confs, mut ops, mut torn) = (0, 0, 0, 0);
    for seed in 0..1000u64 {
        let nodes = 3 + (seed % 3) as usize;
        let (r, _) = run_seed(SimConfig::new(seed, nodes, 1000));
        snaps += r.snapshots_installed;
        confs += r.conf_changes;
        ops += r.ops_completed;
        torn += r.snapshot_chunks_lost;
        if let Some(v) = r.violation {
            failures.push(format!("seed {seed}: {v}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        snaps > 0 && confs > 0 && ops > 1000 && torn > 0,
        "workload too thin: {snaps} {confs} {ops}"
    );
}

/// Regression: seeds 5, 23, 31, … (1000 steps) once ended with a follower stuck
/// far behind: its optimistic appends were lost while the leader's pipelining
/// window was full, and heartbeats never restarted probing. Found by the
/// liveness check of the calm phase; fixed in `handle_heartbeat_resp`. (Since the
/// simulator moved to the testkit's network the seeds draw different fault
/// sequences, so this is now a plain seed check; the sweep covers the scenario.)
#[test]
fn regression_lost_pipeline_recovers() {
    for seed in [5u64, 23, 31, 33] {
        let (r, _) = run_seed(SimConfig::new(seed, 3 + (seed % 3) as usize, 1000));
        assert_eq!(r.violation, None, "seed {seed}");
    }
}
