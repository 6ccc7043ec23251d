//! The demonstration task set used by the console's `sched demo <n>`, the in-kernel
//! `sched` test and the host tests that check the kernel against the host: the same
//! `n` gives the same tasks everywhere, so a QEMU node's replay-log head hash can be
//! compared with one computed on the host.
//!
//! Every core grants [`DEMO_GRANTS`]; tasks guard on granted and ungranted
//! capabilities, have budgets that some of them exceed, and a few trap.

use crate::replay::{ReplayEvent, ReplayLog};
use crate::task::sha256_parts;
use crate::task::{BuiltinWork, Guards, TaskSpec};
use alloc::vec::Vec;
use xdv_types::{CapabilityId, Hash32, Priority, TaskId, TenantId};

/// Capabilities every core grants in the demo.
pub const DEMO_GRANTS: [CapabilityId; 2] = [CapabilityId(1), CapabilityId(2)];
/// A capability no core grants (tasks guarding on it are denied).
pub const DEMO_DENIED: CapabilityId = CapabilityId(7);
/// Most tasks one demo batch may hold.
pub const MAX_DEMO_TASKS: u64 = 4096;

/// The demo task `id` (1-based).
pub fn demo_task(id: u64) -> TaskSpec<BuiltinWork> {
    let priority = match id % 3 {
        0 => Priority::High,
        1 => Priority::Normal,
        _ => Priority::Low,
    };
    let guards: &[CapabilityId] = match id % 11 {
        0 => &[DEMO_DENIED],
        1 | 2 => &[CapabilityId(1)],
        3 => &[CapabilityId(1), CapabilityId(2)],
        _ => &[],
    };
    let work = match id % 5 {
        0 => BuiltinWork::Sort {
            n: 32 + (id % 97) as u32,
            seed: id,
        },
        1 | 2 => BuiltinWork::HashChain {
            steps: 50 + (id * 37) % 400,
        },
        3 if id % 17 == 3 => BuiltinWork::Trap { code: id as u32 },
        3 => BuiltinWork::Empty,
        _ => BuiltinWork::HashChain {
            steps: 10 + id % 50,
        },
    };
    TaskSpec {
        id: TaskId(id),
        tenant: TenantId((id % 4) as u32),
        priority,
        guards: Guards::new(guards).unwrap_or_default(),
        // Some hash chains need more than 300 ticks and are stopped at the budget.
        budget_ticks: 300 + (id % 7) * 50,
        work,
    }
}

/// Tasks 1..=n.
pub fn demo_tasks(n: u64) -> Vec<TaskSpec<BuiltinWork>> {
    (1..=n.min(MAX_DEMO_TASKS)).map(demo_task).collect()
}

/// A digest of every task's outcome that does not depend on core count or
/// interleaving: SHA-256 over the outcome events sorted by task id, each encoded as
/// `task id (LE u64) || kind byte || ticks (LE u64) || detail` where detail is the
/// output hash (executed), the missing capability (denied) or the trap reason.
pub fn outcome_digest(log: &ReplayLog) -> Hash32 {
    let mut outcomes: Vec<(u64, Vec<u8>)> = log
        .entries()
        .iter()
        .filter_map(|e| {
            let task = e.event.event.task()?.0;
            let mut b = Vec::new();
            b.extend_from_slice(&task.to_le_bytes());
            match &e.event.event {
                ReplayEvent::TaskExecuted {
                    ticks, output_hash, ..
                } => {
                    b.push(1);
                    b.extend_from_slice(&ticks.to_le_bytes());
                    b.extend_from_slice(&output_hash.0);
                }
                ReplayEvent::BudgetExceeded { ticks, .. } => {
                    b.push(2);
                    b.extend_from_slice(&ticks.to_le_bytes());
                }
                ReplayEvent::GuardDenied { missing, .. } => {
                    b.push(3);
                    b.extend_from_slice(&0u64.to_le_bytes());
                    b.extend_from_slice(&missing.0.to_le_bytes());
                }
                ReplayEvent::Trapped { ticks, reason, .. } => {
                    b.push(4);
                    b.extend_from_slice(&ticks.to_le_bytes());
                    b.extend_from_slice(reason.as_str().as_bytes());
                }
                _ => return None,
            }
            Some((task, b))
        })
        .collect();
    outcomes.sort();
    let parts: Vec<&[u8]> = outcomes.iter().map(|(_, b)| b.as_slice()).collect();
    sha256_parts(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeterministicScheduler, MaskPlacement};

    fn run(cores: u16, n: u64) -> ReplayLog {
        let mut s = DeterministicScheduler::new(cores, MaskPlacement).unwrap();
        for cap in DEMO_GRANTS {
            s.grant_all(cap).unwrap();
        }
        for t in demo_tasks(n) {
            s.submit(t).unwrap();
        }
        s.run_until_idle().unwrap();
        s.into_replay_log()
    }

    #[test]
    fn demo_covers_every_outcome_and_is_core_count_independent() {
        let log4 = run(4, 64);
        let kinds = |l: &ReplayLog, f: fn(&ReplayEvent) -> bool| {
            l.entries().iter().filter(|e| f(&e.event.event)).count()
        };
        assert!(kinds(&log4, |e| matches!(e, ReplayEvent::TaskExecuted { .. })) > 10);
        assert!(kinds(&log4, |e| matches!(e, ReplayEvent::BudgetExceeded { .. })) > 0);
        assert!(kinds(&log4, |e| matches!(e, ReplayEvent::GuardDenied { .. })) > 0);
        assert!(kinds(&log4, |e| matches!(e, ReplayEvent::Trapped { .. })) > 0);
        let d4 = outcome_digest(&log4);
        for cores in [1, 2, 3, 8] {
            assert_eq!(outcome_digest(&run(cores, 64)), d4, "{cores} cores");
        }
        assert_eq!(run(4, 64).head_hash(), log4.head_hash());
        assert_ne!(run(2, 64).head_hash(), log4.head_hash());
        assert_ne!(outcome_digest(&run(4, 63)), d4);
    }

    /// Prints the reference values the QEMU test compares with (run with --nocapture).
    #[test]
    fn print_reference() {
        for cores in [1u16, 2, 4] {
            let log = run(cores, 64);
            std::println!(
                "demo 64 cores={cores} head={} outcomes={}",
                log.head_hash(),
                outcome_digest(&log)
            );
        }
    }
}
