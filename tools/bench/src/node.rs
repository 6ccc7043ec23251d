//! `cargo xdv bench node`: the node issue's numbers, side by side in one run.
//!
//! (a) The simulator of real nodes: simulated node-seconds per wall second with 3 and
//!     5 nodes (faults on: crashes, torn writes, partitions).
//! (b) Durable Raft append cost with 100 000 entries in the log vs 1 000, same run:
//!     the append-only region writes only the new record, so the ratio stays near 1
//!     (goal ≤ 1.2). For contrast, the whole-image rewrite the node replaced
//!     (postcard of the whole log into a slot after every write) at 1 000 and 10 000.

use crate::report::print_json;
use std::time::Instant;
use xdv_node::DurableStorage;
use xdv_node::sim::{Sim, SimOptions};
use xdv_raft::{Entry, EntryKind, MemStorage, NodeId, Storage};

const SEEDS: u64 = 6;
const PAYLOAD_BYTES: usize = 64;
const TIMED_APPENDS: u64 = 5_000;

fn sim_speed(nodes: u32) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut simulated_ms = 0u64;
    for seed in 0..SEEDS {
        let mut o = SimOptions::new(seed);
        o.nodes = nodes;
        let r = Sim::new(o)
            .run()
            .map_err(|t| anyhow::anyhow!("seed {seed} failed:\n{t}"))?;
        simulated_ms += r.simulated_ms;
    }
    let wall = start.elapsed().as_secs_f64();
    let node_s = simulated_ms as f64 / 1000.0 * f64::from(nodes);
    println!(
        "node sim: {nodes} nodes, {SEEDS} seeds: {node_s:.0} simulated node-seconds in {wall:.2} s = {:.0} node-s per wall second",
        node_s / wall
    );
    Ok(node_s / wall)
}

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        kind: EntryKind::Normal(vec![(index % 251) as u8; PAYLOAD_BYTES]),
    }
}

/// ns per single-entry append with `held` entries already in the log.
fn durable_append_ns(held: u64) -> f64 {
    // Touch every page first: the region is reserved memory on the node, not lazily
    // faulted-in pages.
    let mut region = vec![0u8; 64 << 20];
    for p in region.chunks_mut(4096) {
        p[0] = 1;
        p[0] = 0;
    }
    std::hint::black_box(&mut region);
    let (mut s, _) = DurableStorage::open(region, 1, 1, &[NodeId(1)]).expect("blank region");
    let first = s.last_index() + 1;
    let batch: Vec<Entry> = (first..first + held).map(entry).collect();
    for chunk in batch.chunks(1000) {
        s.append(chunk);
    }
    let next = s.last_index() + 1;
    let t = Instant::now();
    for i in next..next + TIMED_APPENDS {
        s.append(&[entry(i)]);
    }
    t.elapsed().as_nanos() as f64 / TIMED_APPENDS as f64
}

/// ns per append of the replaced design: the whole log re-encoded after each write.
fn whole_image_append_ns(held: u64) -> f64 {
    let mut m = MemStorage::new_with_voters(&[NodeId(1)]);
    let first = m.last_index() + 1;
    m.append(&(first..first + held).map(entry).collect::<Vec<_>>());
    let mut slot = Vec::new();
    let n = 50;
    let next = m.last_index() + 1;
    let t = Instant::now();
    for i in next..next + n {
        m.append(&[entry(i)]);
        let log = m
            .entries(m.first_index(), m.last_index() + 1, usize::MAX)
            .unwrap();
        slot = postcard::to_allocvec(&log).unwrap();
    }
    std::hint::black_box(slot);
    t.elapsed().as_nanos() as f64 / n as f64
}

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let three = sim_speed(3)?;
    let five = sim_speed(5)?;
    // Alternate the two sizes over rounds and take medians: the machine is shared.
    let (mut smalls, mut larges) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        smalls.push(durable_append_ns(1_000));
        larges.push(durable_append_ns(100_000));
    }
    smalls.sort_by(f64::total_cmp);
    larges.sort_by(f64::total_cmp);
    let (small, large) = (smalls[2], larges[2]);
    println!(
        "durable append ({PAYLOAD_BYTES}-byte entries): {small:.0} ns with 1 000 entries held, {large:.0} ns with 100 000: ratio {:.2} (goal <= 1.2)",
        large / small
    );
    let old_small = whole_image_append_ns(1_000);
    let old_large = whole_image_append_ns(10_000);
    println!(
        "replaced whole-image write: {old_small:.0} ns with 1 000 entries, {old_large:.0} ns with 10 000: ratio {:.1}",
        old_large / old_small
    );
    print_json(
        "node",
        "ns per durable append (100k held vs 1k held)",
        large,
        small,
        serde_json::json!({
            "sim_node_seconds_per_wall_second_3": three,
            "sim_node_seconds_per_wall_second_5": five,
            "whole_image_ns_1k": old_small,
            "whole_image_ns_10k": old_large,
        }),
    );
    Ok(())
}
