//! Unit tests of task timeouts inside one cluster (AD-34 local authority): elapsed and
//! stuck timeouts, progress, extensions, fence tokens (attempts), cancellation, and the
//! cleanup of the tracking on every way a task leaves its node.

use crate::mgmt::{Denied, Gate, Principal, Request, SignedRequest};
use crate::state::IgnoredReason;
use crate::tests::{Log, seed, spec, worker};
use crate::*;
use alloc::vec::Vec;
use xdv_federation::timeout::TimeoutConfig;
use xdv_types::{Hash32, NodeId, TaskId, TenantId};

/// Timeouts checked every second of cluster time, stuck after 10 s, default 20 s.
fn timeouts() -> TaskTimeouts {
    TaskTimeouts {
        tracker: TimeoutConfig {
            check_interval_ms: 1_000,
            stuck_threshold_ms: 10_000,
            ..TimeoutConfig::DEFAULT.scaled(25)
        },
        default_timeout_ms: 20_000,
        max_timeout_ms: 60_000,
        max_extension_ms: 8_000,
    }
}

fn cluster_with(t: TaskTimeouts) -> ClusterState {
    let workers = [worker(1, 2, &[1]), worker(2, 2, &[1]), worker(3, 2, &[1])];
    let tenants = [(TenantId(10), [1; 32]), (TenantId(11), [2; 32])];
    let cfg = Config {
        timeouts: t,
        ..Config::default()
    };
    ClusterState::genesis(cfg, &workers, &tenants).unwrap()
}

fn timed(tenant: u32, seq: u64, timeout_ms: Option<u64>) -> Command {
    Command::AssignTask(TaskSpec {
        timeout_ms,
        ..spec(tenant, seq)
    })
}

fn status(s: &ClusterState, t: TaskId) -> TaskStatus {
    s.task(t).unwrap().status.clone()
}

fn assigned_at(s: &ClusterState, t: TaskId) -> (NodeId, u32) {
    match status(s, t) {
        TaskStatus::Assigned { node, attempt } => (node, attempt),
        other => panic!("{t} not assigned: {other:?}"),
    }
}

fn done(task: TaskId, node: NodeId, attempt: u32) -> Command {
    Command::TaskCompleted(Completion {
        task,
        node,
        attempt,
        outcome: Outcome::Executed,
        ticks: 5,
        output_hash: Hash32([7; 32]),
        output: Vec::new(),
        log: Vec::new(),
    })
}

/// `n` clock ticks; every event they caused.
fn ticks(s: &mut ClusterState, log: &mut Log, n: u32) -> Vec<Event> {
    (0..n)
        .flat_map(|_| log.push(s, Command::ClockTick).events)
        .collect()
}

fn timed_out(ev: &[Event]) -> Vec<(TaskId, u32, bool)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::TaskTimedOut {
                task,
                attempt,
                retry,
                ..
            } => Some((*task, *attempt, *retry)),
            _ => None,
        })
        .collect()
}

#[test]
fn default_timeouts_are_the_seeds_and_scale_by_one_factor() {
    let d = TaskTimeouts::DEFAULT;
    assert_eq!(d.tracker.check_interval_ms, 30_000);
    assert_eq!(d.tracker.stuck_threshold_ms, 120_000);
    assert_eq!(d.tracker.gate_check_interval_ms, 15_000);
    assert_eq!(d.tracker.gate_fallback_ms, 300_000);
    assert_eq!(d.tracker.all_clusters_stuck_threshold_ms, 180_000);
    let s = d.scaled(25);
    assert_eq!(s.tracker.check_interval_ms, 750);
    assert_eq!(s.tracker.stuck_threshold_ms, 3_000);
    assert_eq!(s.default_timeout_ms, 15_000);
    assert_eq!(d.scaled(1000), d);
    assert!(s.validate().is_ok());
    let bad = TaskTimeouts {
        default_timeout_ms: 0,
        ..d
    };
    assert!(
        Config {
            timeouts: bad,
            ..Config::default()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn bad_timeouts_are_refused_at_submission() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    for (seq, t) in [(1, 0), (2, 60_001)] {
        let a = log.push(&mut s, timed(10, seq, Some(t)));
        assert!(
            a.events.iter().any(|e| matches!(e,
                Event::TaskRejected { reason: Refusal::BadTimeout { timeout_ms, max_ms: 60_000 }, .. }
                    if *timeout_ms == t)),
            "{:?}",
            a.events
        );
    }
    assert!(s.data().timeouts.is_empty());
}

#[test]
fn an_attempt_past_its_timeout_is_replaced_then_the_task_ends_timeout() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    log.push(&mut s, timed(10, 1, Some(2_500)));
    let t = TaskId(1);
    let (n1, a1) = assigned_at(&s, t);
    assert_eq!(a1, 1);
    assert_eq!(s.data().timeouts.len(), 1);
    // 2 s elapsed: not over 2.5 s yet.
    assert!(timed_out(&ticks(&mut s, &mut log, 2)).is_empty());
    let ev = ticks(&mut s, &mut log, 1);
    assert_eq!(timed_out(&ev), vec![(t, 1, true)]);
    let (_, a2) = assigned_at(&s, t);
    assert_eq!(a2, 2, "re-placed with the next attempt");
    // The first attempt's late completion carries a stale fence: refused, counted.
    let before = s.data().counters.stale_completions;
    let a = log.push(&mut s, done(t, n1, a1));
    assert!(matches!(
        a.events[0],
        Event::StaleCompletion { attempt: 1, .. }
    ));
    assert_eq!(s.data().counters.stale_completions, before + 1);
    // Attempts 2 and 3 time out too; then the task ends `Timeout`.
    let ev = ticks(&mut s, &mut log, 6);
    assert_eq!(timed_out(&ev), vec![(t, 2, true), (t, 3, false)]);
    match status(&s, t) {
        TaskStatus::Completed {
            outcome: Outcome::Timeout(why),
            attempt: 3,
            ..
        } => assert!(why.contains("over its timeout of 2500 ms"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.data().counters.tasks_timed_out, 3);
    assert_eq!(s.data().tenants[&TenantId(10)].in_flight, 0);
    assert!(s.data().timeouts.is_empty());
    assert!(s.data().nodes.values().all(|n| n.assigned == 0));
    assert_eq!(s.task(t).unwrap().replaced_from.len(), 3);
    s.invariants().unwrap();
}

#[test]
fn a_task_without_progress_is_stuck_and_progress_keeps_it_alive() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    log.push(&mut s, timed(10, 1, Some(60_000)));
    log.push(&mut s, timed(10, 2, Some(60_000)));
    let (t1, t2) = (TaskId(1), TaskId(2));
    let (n1, a1) = assigned_at(&s, t1);
    let mut timeouts_seen = Vec::new();
    for _ in 0..12 {
        let a = log.push(
            &mut s,
            Command::TaskProgress {
                task: t1,
                node: n1,
                attempt: a1,
            },
        );
        assert!(matches!(a.events[0], Event::TaskProgress { .. }));
        timeouts_seen.extend(timed_out(&ticks(&mut s, &mut log, 1)));
    }
    // 12 s in: task 2 made no progress for more than 10 s; task 1 reported every second.
    assert_eq!(timeouts_seen, vec![(t2, 1, true)]);
    assert_eq!(assigned_at(&s, t1), (n1, a1));
    let why = s
        .data()
        .timeouts
        .get(t2)
        .map(|st| st.started_at_ms)
        .unwrap();
    assert_eq!(why, 11_000, "attempt 2 tracked from its placement");
    // A progress report for a stale attempt is refused and counted.
    let a = log.push(
        &mut s,
        Command::TaskProgress {
            task: t1,
            node: n1,
            attempt: a1 + 1,
        },
    );
    assert!(matches!(a.events[0], Event::StaleReport { .. }));
    assert_eq!(s.data().counters.stale_reports, 1);
    assert_eq!(s.data().timeouts.metrics.detected_stuck, 1);
}

#[test]
fn extensions_move_the_deadline_and_leave_with_a_failed_worker() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    log.push(&mut s, timed(10, 1, Some(3_000)));
    let t = TaskId(1);
    let (n, a) = assigned_at(&s, t);
    let ext = |node, ms| Command::RequestExtension {
        task: t,
        node,
        attempt: a,
        extension_ms: ms,
    };
    let ev = log.push(&mut s, ext(n, 5_000)).events;
    assert!(
        matches!(
            ev[0],
            Event::ExtensionGranted {
                deadline_ms: 8_000,
                ..
            }
        ),
        "{ev:?}"
    );
    // Over the total limit (8 s per attempt): refused.
    let ev = log.push(&mut s, ext(n, 3_001)).events;
    assert_eq!(ev[0], Event::Ignored(IgnoredReason::ExtensionOverLimit));
    // Another node cannot extend an attempt it does not run.
    let other = NodeId(if n.0 == 1 { 2 } else { 1 });
    let ev = log.push(&mut s, ext(other, 1_000)).events;
    assert!(matches!(ev[0], Event::StaleReport { .. }));
    // 7 s: within 3 s + 5 s.
    assert!(timed_out(&ticks(&mut s, &mut log, 7)).is_empty());
    let st = s.data().timeouts.get(t).unwrap();
    assert_eq!(st.active_workers_with_extensions.get(&n), Some(&5_000));
    assert_eq!(s.data().counters.extensions_granted, 1);
    // The worker fails: its extension is cleaned up with its attempt.
    let ev = log.push(&mut s, Command::NodeDown { node: n }).events;
    assert!(ev.iter().any(|e| matches!(e, Event::TaskReplaced { .. })));
    let (n2, a2) = assigned_at(&s, t);
    assert_ne!(n2, n);
    assert_eq!(a2, a + 1);
    let st = s.data().timeouts.get(t).unwrap();
    assert!(st.active_workers_with_extensions.is_empty());
    assert_eq!(st.total_extensions_granted_ms, 0);
    assert_eq!(st.started_at_ms, 7_000);
    s.invariants().unwrap();
}

#[test]
fn completion_stops_tracking_and_a_late_timeout_cannot_touch_it() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    log.push(&mut s, timed(10, 1, Some(1_000)));
    let t = TaskId(1);
    let (n, a) = assigned_at(&s, t);
    // The completion is applied before the tick that would time it out (seed §11.9.11).
    log.push(&mut s, done(t, n, a));
    assert!(s.data().timeouts.is_empty());
    assert!(timed_out(&ticks(&mut s, &mut log, 5)).is_empty());
    assert!(matches!(
        status(&s, t),
        TaskStatus::Completed {
            outcome: Outcome::Executed,
            ..
        }
    ));
}

#[test]
fn cancel_ends_pending_and_running_tasks_and_frees_their_quota() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    let quota = Quota {
        max_in_flight: 2,
        max_budget_ticks: 1_000_000,
        memory_pages: 16,
        table_elements: 1000,
        max_q_units: 0,
        max_phi_windows: 0,
    };
    log.push(
        &mut s,
        Command::SetQuota {
            tenant: TenantId(10),
            quota: Some(quota),
            seq: 1,
        },
    );
    log.push(&mut s, timed(10, 1, None));
    log.push(&mut s, timed(10, 2, None));
    let a = log.push(&mut s, timed(10, 3, None));
    assert!(matches!(
        a.events[0],
        Event::TaskRejected {
            reason: Refusal::QuotaInFlight { .. },
            ..
        }
    ));
    let t = TaskId(1);
    let (n, a1) = assigned_at(&s, t);
    let cancel = |task, tenant| Command::CancelTask {
        task,
        tenant: TenantId(tenant),
    };
    assert_eq!(
        log.push(&mut s, cancel(t, 11)).events,
        vec![Event::Ignored(IgnoredReason::NotYourTask)]
    );
    assert_eq!(
        log.push(&mut s, cancel(TaskId(99), 10)).events,
        vec![Event::Ignored(IgnoredReason::UnknownTask)]
    );
    let ev = log.push(&mut s, cancel(t, 10)).events;
    assert_eq!(
        ev[0],
        Event::TaskCancelled {
            task: t,
            node: Some(n),
            attempt: a1
        }
    );
    assert!(matches!(
        status(&s, t),
        TaskStatus::Completed {
            outcome: Outcome::Cancelled,
            ..
        }
    ));
    assert!(s.data().timeouts.get(t).is_none());
    assert_eq!(s.data().tenants[&TenantId(10)].in_flight, 1);
    // The quota it held is free: a new task is accepted.
    let a = log.push(&mut s, timed(10, 4, None));
    assert!(matches!(a.events[0], Event::TaskAssigned { .. }));
    // The cancelled attempt's late completion is stale; a second cancel is refused.
    let a = log.push(&mut s, done(t, n, a1));
    assert!(matches!(a.events[0], Event::StaleCompletion { .. }));
    assert_eq!(
        log.push(&mut s, cancel(t, 10)).events,
        vec![Event::Ignored(IgnoredReason::AlreadyFinished)]
    );
    assert_eq!(s.data().counters.tasks_cancelled, 1);
    s.invariants().unwrap();
}

#[test]
fn cancel_of_a_pending_task_takes_it_off_the_queue() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    for n in 1..=3 {
        log.push(
            &mut s,
            Command::Heartbeat(HeartbeatInfo {
                node: NodeId(n),
                available_cores: 0,
                local_load: 0,
                q_units: 0,
                phi_windows: 0,
            }),
        );
    }
    log.push(&mut s, timed(10, 1, None));
    let t = TaskId(1);
    assert_eq!(status(&s, t), TaskStatus::Pending);
    let ev = log
        .push(
            &mut s,
            Command::CancelTask {
                task: t,
                tenant: TenantId(10),
            },
        )
        .events;
    assert_eq!(
        ev[0],
        Event::TaskCancelled {
            task: t,
            node: None,
            attempt: 0
        }
    );
    assert!(s.data().pending.is_empty());
    assert_eq!(s.data().tenants[&TenantId(10)].in_flight, 0);
    s.invariants().unwrap();
}

#[test]
fn the_gate_refuses_cancels_clearly() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    let tenant_seed = seed(77);
    log.push(
        &mut s,
        Command::RegisterTenant {
            tenant: TenantId(12),
            public_key: public_key(&tenant_seed),
        },
    );
    log.push(&mut s, timed(10, 1, None));
    log.push(&mut s, timed(12, 1, None));
    let mut gate = Gate::new(5, [0; 32]);
    let t12 = Principal::Tenant(TenantId(12));
    let mut seq = 0;
    let mut ask = |s: &ClusterState, task| {
        seq += 1;
        let req = SignedRequest::sign(5, t12, seq, Request::Cancel { task }, &tenant_seed);
        gate.authorize(s, &req)
    };
    assert_eq!(ask(&s, TaskId(9)), Err(Denied::UnknownTask(TaskId(9))));
    assert_eq!(
        ask(&s, TaskId(1)),
        Err(Denied::OutOfScope { task: TaskId(1) })
    );
    assert_eq!(
        ask(&s, TaskId(2)),
        Ok(Some(Command::CancelTask {
            task: TaskId(2),
            tenant: TenantId(12)
        }))
    );
    let (n, a) = assigned_at(&s, TaskId(2));
    log.push(&mut s, done(TaskId(2), n, a));
    match ask(&s, TaskId(2)) {
        Err(Denied::TaskFinished { task, outcome }) => {
            assert_eq!(task, TaskId(2));
            assert_eq!(outcome, "executed");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_leader_steps_the_fence_token_and_restarts_the_stuck_timer() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    log.push(&mut s, timed(10, 1, Some(60_000)));
    let t = TaskId(1);
    ticks(&mut s, &mut log, 8);
    assert_eq!(s.data().clock_leader, Some(NodeId(1)));
    assert_eq!(s.data().timeouts.get(t).unwrap().timeout_fence_token, 0);
    // Node 2's ClockTicks: the log has a new leader.
    log.index += 1;
    let bytes = Proposal {
        time: GlobalTime {
            lamport: log.index * 10,
            node: NodeId(2),
        },
        command: Command::ClockTick,
    }
    .encode()
    .unwrap();
    let ev = s.apply(log.index, &bytes).events;
    assert!(ev.contains(&Event::TimeoutLeaderChanged { leader: NodeId(2) }));
    let st = s.data().timeouts.get(t).unwrap();
    assert_eq!(st.timeout_fence_token, 1);
    assert_eq!(
        st.last_progress_at_ms, 9_000,
        "the new leader's full threshold"
    );
    assert_eq!(s.data().timeouts.metrics.leader_transfers, 1);
    // Tracking resumed: the task is stuck more than 10 s after the change, not before.
    let later: Vec<_> = (0..11)
        .flat_map(|_| {
            log.index += 1;
            let b = Proposal {
                time: GlobalTime {
                    lamport: log.index * 10,
                    node: NodeId(2),
                },
                command: Command::ClockTick,
            }
            .encode()
            .unwrap();
            s.apply(log.index, &b).events
        })
        .collect();
    assert_eq!(timed_out(&later), vec![(t, 1, true)]);
}

#[test]
fn tracking_survives_a_snapshot_and_hashes_alike() {
    let mut s = cluster_with(timeouts());
    let mut log = Log::new();
    log.push(&mut s, timed(10, 1, Some(5_000)));
    ticks(&mut s, &mut log, 2);
    let mut r = cluster_with(timeouts());
    r.restore_image(&s.snapshot_image()).unwrap();
    assert_eq!(r.hash(), s.hash());
    assert_eq!(r.data().timeouts, s.data().timeouts);
    // Both time the task out at the same tick.
    let mut log2 = Log {
        index: log.index,
        entries: Vec::new(),
    };
    let a = timed_out(&ticks(&mut s, &mut log, 4));
    let b = timed_out(&ticks(&mut r, &mut log2, 4));
    assert_eq!(a, b);
    assert_eq!(a.len(), 1);
    assert_eq!(r.hash(), s.hash());
}

#[test]
fn the_state_hash_covers_each_tracked_job_and_stays_incremental() {
    // Two replicas get the same entries in a different order: progress before or after
    // the second tick. They end with the same tasks, clock and counters; only the
    // tracked job's last progress differs, and so must the state hash.
    let run = |progress_first: bool| {
        let mut s = cluster_with(timeouts());
        let mut log = Log::new();
        for seq in 1..=40 {
            log.push(&mut s, timed(10, seq, Some(60_000)));
            assert_eq!(s.hash(), s.hash_from_scratch(), "after task {seq}");
        }
        let (n1, a1) = assigned_at(&s, TaskId(1));
        let progress = Command::TaskProgress {
            task: TaskId(1),
            node: n1,
            attempt: a1,
        };
        ticks(&mut s, &mut log, 1);
        if progress_first {
            log.push(&mut s, progress);
            ticks(&mut s, &mut log, 1);
        } else {
            ticks(&mut s, &mut log, 1);
            log.push(&mut s, progress);
        }
        assert_eq!(s.hash(), s.hash_from_scratch());
        // Completions take jobs out of the tracker: still the reference hash.
        for t in 2..=10 {
            let (n, a) = assigned_at(&s, TaskId(t));
            log.push(&mut s, done(TaskId(t), n, a));
            assert_eq!(s.hash(), s.hash_from_scratch(), "after completing {t}");
        }
        s
    };
    let (a, b) = (run(true), run(false));
    assert_eq!(a.data().tasks, b.data().tasks);
    assert_eq!(a.data().clock_ms, b.data().clock_ms);
    assert_ne!(a.data().timeouts, b.data().timeouts);
    assert_ne!(a.hash(), b.hash());
    assert_eq!(a.data().timeouts.len(), 31);
}
