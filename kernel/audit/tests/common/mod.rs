//! Shared helpers for the audit tests: the seeded PRNG (re-exported) and region builders.
#![allow(dead_code)]

use xdv_audit::format::MIN_REGION_BYTES;
use xdv_audit::{AuditLog, RecordBody};
use xdv_types::{CapabilityId, CoreId, Hash32, NodeId, TaskId, Timestamp};

pub const NODE: NodeId = NodeId(7);

/// The tests' only randomness, always from an explicit seed: the project's one PRNG.
pub use xdv_types::rng::SplitMix64;

/// A deterministic body of every kind, chosen by `i`.
pub fn body(i: u64) -> RecordBody {
    let t = TaskId(i);
    let h = Hash32([i as u8; 32]);
    match i % 14 {
        0 => RecordBody::Boot { count: i },
        1 => RecordBody::Recovered {
            dropped_bytes: i * 3,
        },
        2 => RecordBody::TaskEnqueued {
            task: t,
            core: CoreId(i as u16 % 4),
        },
        3 => RecordBody::TaskExecuted {
            task: t,
            ticks: i * 1000,
            output_hash: h,
        },
        4 => RecordBody::BudgetExceeded { task: t, ticks: 77 },
        5 => RecordBody::GuardDenied {
            task: t,
            capability: CapabilityId(9),
        },
        6 => RecordBody::Trapped {
            task: t,
            ticks: 5,
            reason: "unreachable".into(),
        },
        7 => RecordBody::ConsoleCommand {
            line: "submit demo 3".into(),
        },
        8 => RecordBody::ReplayHead {
            len: i,
            head_hash: h,
        },
        9 => RecordBody::RaftApplied {
            index: i,
            term: 2,
            entry_hash: h,
        },
        10 => RecordBody::MerkleRootPublished { size: i, root: h },
        11 => RecordBody::RequestRefused {
            reason: "queue full".into(),
        },
        12 => RecordBody::Custom {
            tag: 3,
            bytes: vec![i as u8; (i % 40) as usize],
        },
        _ => RecordBody::Boot { count: 1 },
    }
}

/// A region of `size` bytes holding `n` records (bodies from [`body`]).
pub fn region_with(n: u64, size: usize) -> Vec<u8> {
    let mut region = vec![0u8; size];
    let (mut log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(rep.formatted);
    for i in 0..n {
        assert_eq!(
            log.append(Timestamp(i + 1), CoreId(0), &body(i)).unwrap(),
            i
        );
    }
    region
}

pub fn small_region(n: u64) -> Vec<u8> {
    region_with(n, 2 * MIN_REGION_BYTES)
}

/// (offset, length) of every record of a valid region.
pub fn extents(region: &[u8]) -> Vec<(usize, usize)> {
    let mut copy = region.to_vec();
    let (log, _) = AuditLog::open(&mut copy, NODE).unwrap();
    log.records()
        .map(|r| {
            let r = r.unwrap();
            (r.offset as usize, r.header.record_bytes())
        })
        .collect()
}
