//! Shared helpers for the audit tests: a seeded PRNG and region builders.
#![allow(dead_code)]

use xdv_audit::format::MIN_REGION_BYTES;
use xdv_audit::{AuditLog, RecordBody};
use xdv_types::{CapabilityId, CoreId, Hash32, NodeId, TaskId, Timestamp};

pub const NODE: NodeId = NodeId(7);

/// SplitMix64: the tests' only randomness, always from an explicit seed.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

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
