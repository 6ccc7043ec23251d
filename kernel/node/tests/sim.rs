//! The simulator of real nodes: seeds with crashes, torn writes, partitions, clogging,
//! slow nodes and skew; safety after every step and liveness after healing.

use xdv_node::sim::{Sim, SimOptions, sweep};

/// Seeds swept by `cargo test` (CI); `cargo xdv sim --seeds 0..1000` sweeps more.
const SEEDS: u64 = 40;

#[test]
fn seeds_pass_safety_and_liveness() {
    let reports = sweep(0..SEEDS, &SimOptions::new(0)).unwrap_or_else(|t| panic!("{t}"));
    let crashes: u64 = reports.iter().map(|r| r.1.crashes).sum();
    let torn: u64 = reports.iter().map(|r| r.1.torn_writes).sum();
    let restored: u64 = reports.iter().map(|r| r.1.snapshots_restored).sum();
    let accepted: u64 = reports.iter().map(|r| r.1.accepted).sum();
    assert!(
        crashes > SEEDS / 2,
        "faults really happen: {crashes} crashes"
    );
    assert!(torn > 0, "torn writes really happen");
    assert!(restored > 0, "snapshot installs really happen");
    assert_eq!(accepted, SEEDS * SimOptions::new(0).requests);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = Sim::new(SimOptions::new(7)).run().unwrap();
    let b = Sim::new(SimOptions::new(7)).run().unwrap();
    assert_eq!(a, b);
}
