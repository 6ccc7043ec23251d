//! Property tests over random task sets: determinism of the log, independence of
//! per-task outcomes from the core count, and corruption detection.
#![cfg(not(loom))]

use std::collections::BTreeMap;

use proptest::prelude::*;
use xdv_sched::{
    BuiltinWork, DeterministicScheduler, Guards, MaskPlacement, ReplayComparison, ReplayEvent,
    ReplayLog, TaskSpec, Work, WorkOutcome, compare_replays,
};
use xdv_types::{CapabilityId, Priority, TaskId, TenantId};

/// Capabilities every core holds in these tests; guards draw from 0..GUARD_SPACE.
const GRANTED: [u32; 3] = [0, 1, 2];
const GUARD_SPACE: u32 = 5;
const CORE_COUNTS: [u16; 5] = [1, 2, 3, 4, 8];

fn work() -> impl Strategy<Value = BuiltinWork> {
    prop_oneof![
        Just(BuiltinWork::Empty),
        (0u64..80).prop_map(|steps| BuiltinWork::HashChain { steps }),
        (0u32..48, any::<u64>()).prop_map(|(n, seed)| BuiltinWork::Sort { n, seed }),
        (0u32..4).prop_map(|code| BuiltinWork::Trap { code }),
    ]
}

fn task(id: u64) -> impl Strategy<Value = TaskSpec<BuiltinWork>> {
    (
        prop_oneof![
            Just(Priority::High),
            Just(Priority::Normal),
            Just(Priority::Low)
        ],
        proptest::collection::vec(0..GUARD_SPACE, 0..4),
        0u64..200,
        work(),
        0u32..3,
    )
        .prop_map(move |(priority, guards, budget_ticks, work, tenant)| {
            let caps: Vec<CapabilityId> = guards.into_iter().map(CapabilityId).collect();
            TaskSpec {
                id: TaskId(id),
                tenant: TenantId(tenant),
                priority,
                guards: Guards::new(&caps).expect("at most 3 guards"),
                budget_ticks,
                work,
            }
        })
}

/// Tasks with distinct, scattered ids (so placement spreads them unevenly).
fn task_set(max: usize) -> impl Strategy<Value = Vec<TaskSpec<BuiltinWork>>> {
    proptest::collection::btree_set(0u64..1000, 0..max)
        .prop_flat_map(|ids| ids.into_iter().map(task).collect::<Vec<_>>())
}

fn run(tasks: &[TaskSpec<BuiltinWork>], cores: u16) -> ReplayLog {
    let mut s = DeterministicScheduler::new(cores, MaskPlacement).expect("core count");
    for c in GRANTED {
        s.grant_all(CapabilityId(c)).expect("room");
    }
    for t in tasks {
        s.submit(t.clone()).expect("enqueue");
    }
    s.run_until_idle().expect("append");
    s.into_replay_log()
}

/// Outcome events of a log keyed by task, without stamps.
fn outcomes(log: &ReplayLog) -> BTreeMap<TaskId, ReplayEvent> {
    let mut m = BTreeMap::new();
    for e in log.events().filter(|e| e.event.is_outcome()) {
        let id = e.event.task().expect("outcome has a task");
        assert!(
            m.insert(id, e.event.clone()).is_none(),
            "task {id} has two outcomes"
        );
    }
    m
}

/// What a task's outcome must be, computed without any scheduler.
fn oracle(t: &TaskSpec<BuiltinWork>) -> ReplayEvent {
    if let Some(missing) = t.guards.as_slice().iter().find(|c| !GRANTED.contains(&c.0)) {
        return ReplayEvent::GuardDenied {
            task: t.id,
            missing: *missing,
        };
    }
    let r = t.work.clone().run(t.budget_ticks);
    match r.outcome {
        WorkOutcome::Completed { output_hash } => ReplayEvent::TaskExecuted {
            task: t.id,
            ticks: r.ticks_used,
            output_hash,
        },
        WorkOutcome::BudgetExceeded => ReplayEvent::BudgetExceeded {
            task: t.id,
            ticks: t.budget_ticks,
        },
        WorkOutcome::Trapped { reason } => ReplayEvent::Trapped {
            task: t.id,
            ticks: r.ticks_used,
            reason,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn same_input_same_log(tasks in task_set(40), ci in 0usize..CORE_COUNTS.len()) {
        let cores = CORE_COUNTS[ci];
        let a = run(&tasks, cores);
        let b = run(&tasks, cores);
        prop_assert_eq!(a.head_hash(), b.head_hash());
        prop_assert_eq!(a.to_bytes(), b.to_bytes());
        prop_assert_eq!(compare_replays(&a, &b), ReplayComparison::ExactMatch);
        prop_assert!(a.verify().is_ok());
        prop_assert_eq!(a.len(), 2 * tasks.len());
    }

    #[test]
    fn outcome_per_task_independent_of_core_count(tasks in task_set(40)) {
        let expect: BTreeMap<TaskId, ReplayEvent> = tasks.iter().map(|t| (t.id, oracle(t))).collect();
        let base = run(&tasks, 1);
        prop_assert_eq!(&outcomes(&base), &expect);
        for cores in CORE_COUNTS {
            let log = run(&tasks, cores);
            prop_assert_eq!(&outcomes(&log), &expect, "cores = {}", cores);
            let cmp = compare_replays(&base, &log);
            prop_assert!(
                matches!(cmp, ReplayComparison::ExactMatch | ReplayComparison::MinorDifference),
                "cores = {}: {:?}", cores, cmp
            );
        }
    }

    #[test]
    fn single_byte_corruption_is_rejected(
        tasks in task_set(10),
        cores in 1u16..5,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..64),
    ) {
        let bytes = run(&tasks, cores).to_bytes();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            let mut bad = bytes.clone();
            bad[i] ^= x;
            let Err(err) = ReplayLog::from_bytes(&bad) else {
                return Err(TestCaseError::fail(format!("flip {x:#x} at {i} accepted")));
            };
            prop_assert!(err.offset <= i, "offset {} after damage at {}", err.offset, i);
        }
    }

    #[test]
    fn verify_catches_edited_entry(tasks in task_set(20), at in any::<prop::sample::Index>()) {
        let log = run(&tasks, 2);
        prop_assume!(!log.is_empty());
        let i = at.index(log.len());
        let mut entries = log.entries().to_vec();
        entries[i].event.stamp.time.0 ^= 1;
        let err = ReplayLog::from_entries_unverified(entries).verify().expect_err("edit caught");
        prop_assert_eq!(err.index, i);
    }
}
