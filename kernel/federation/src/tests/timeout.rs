//! §11.9: adaptive job timeouts.

use alloc::vec::Vec;

use crate::timeout::*;
use crate::{ClusterId, JobId, NodeId, TaskId};

const GATE: NodeId = NodeId(100);
const JOB: JobId = TaskId(7);

fn tracker() -> TimeoutTracker {
    TimeoutTracker::new(TimeoutConfig::DEFAULT).expect("default config is valid")
}

fn local(timeout_ms: u64) -> JobTimeoutSpec {
    JobTimeoutSpec {
        timeout_ms,
        gate: None,
    }
}

fn gated(timeout_ms: u64) -> JobTimeoutSpec {
    JobTimeoutSpec {
        timeout_ms,
        gate: Some(GATE),
    }
}

fn timeouts(ds: &[Decision]) -> Vec<(TimeoutReason, Authority)> {
    ds.iter()
        .filter_map(|d| match d {
            Decision::TimeOut {
                reason, authority, ..
            } => Some((*reason, *authority)),
            _ => None,
        })
        .collect()
}

/// One gate and several clusters exchanging the protocol's messages in one step.
/// `reachable[i]` says whether cluster `i` and the gate hear each other this step.
struct Fed {
    gate: GateTracker,
    clusters: Vec<(ClusterId, TimeoutTracker)>,
    /// Every decision, tagged with the cluster index and the time.
    log: Vec<(usize, u64, Decision)>,
    global: Vec<GlobalTimeout>,
}

impl Fed {
    fn new(n: usize, timeout_ms: u64) -> Fed {
        let ids: Vec<ClusterId> = (1..=n as u32).map(ClusterId).collect();
        let mut gate = GateTracker::new(TimeoutConfig::DEFAULT).unwrap();
        gate.start(JOB, timeout_ms, &ids, 0).unwrap();
        let clusters = ids
            .iter()
            .map(|&c| {
                let mut t = tracker();
                t.start(JOB, gated(timeout_ms), 0).unwrap();
                (c, t)
            })
            .collect();
        Fed {
            gate,
            clusters,
            log: Vec::new(),
            global: Vec::new(),
        }
    }

    fn step(&mut self, now: u64, reachable: &[bool]) {
        for (i, (cluster, t)) in self.clusters.iter_mut().enumerate() {
            for d in t.on_tick(now) {
                if reachable[i] {
                    match d {
                        Decision::ReportProgress {
                            job,
                            fence_token,
                            has_recent_progress,
                            total_extensions_ms,
                            max_worker_extension_ms,
                            workers_with_extensions,
                            ..
                        } => {
                            let r = ProgressReport {
                                job,
                                cluster: *cluster,
                                manager: NodeId(i as u32),
                                fence_token,
                                has_recent_progress,
                                total_extensions_ms,
                                max_worker_extension_ms,
                                workers_with_extensions,
                            };
                            self.gate.on_progress(r, now).unwrap();
                            t.on_gate_contact(GATE, now);
                        }
                        Decision::ReportTimeout {
                            job, fence_token, ..
                        } => {
                            self.gate
                                .on_timeout_report(job, *cluster, fence_token)
                                .unwrap();
                            t.on_gate_ack(job, fence_token, now).unwrap();
                        }
                        _ => {}
                    }
                }
                self.log.push((i, now, d));
            }
        }
        for g in self.gate.on_tick(now) {
            for (i, (cluster, t)) in self.clusters.iter_mut().enumerate() {
                let fence = g.targets.iter().find(|(c, _)| c == cluster).unwrap().1;
                if !reachable[i] {
                    continue;
                }
                if let Some(d) = t.on_global_timeout(g.job, g.reason, fence, now).unwrap() {
                    self.log.push((i, now, d));
                }
            }
            self.global.push(g);
        }
    }

    fn timeouts_of(&self, i: usize) -> Vec<(u64, TimeoutReason, Authority)> {
        self.log
            .iter()
            .filter(|(c, _, _)| *c == i)
            .filter_map(|(_, t, d)| match d {
                Decision::TimeOut {
                    reason, authority, ..
                } => Some((*t, *reason, *authority)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn config_defaults_and_scaling() {
    let d = TimeoutConfig::DEFAULT;
    assert_eq!(
        (
            d.check_interval_ms,
            d.stuck_threshold_ms,
            d.gate_check_interval_ms,
            d.gate_fallback_ms,
            d.all_clusters_stuck_threshold_ms
        ),
        (30_000, 120_000, 15_000, 300_000, 180_000)
    );
    let s = d.scaled(10);
    assert_eq!(
        (
            s.check_interval_ms,
            s.gate_fallback_ms,
            s.progress_report_interval_ms
        ),
        (300, 3_000, 100)
    );
    assert_eq!(d.scaled(0).check_interval_ms, 1, "scaling floors at 1 ms");
    let mut bad = d;
    bad.gate_fallback_ms = bad.progress_report_interval_ms;
    assert!(matches!(
        TimeoutTracker::new(bad),
        Err(TimeoutError::BadConfig(_))
    ));
}

#[test]
fn t11_9_1_single_dc_local_authority_timeout() {
    let mut t = tracker();
    t.start(JOB, local(60_000), 0).unwrap();
    assert_eq!(t.get(JOB).unwrap().strategy, Strategy::LocalAuthority);
    for now in [0, 30_000, 60_000] {
        t.on_progress(JOB, now).unwrap();
        assert!(
            t.on_tick(now).is_empty(),
            "no timeout at {now} (elapsed not beyond 60 s)"
        );
    }
    let ds = t.on_tick(90_000);
    assert_eq!(timeouts(&ds), [(TimeoutReason::Elapsed, Authority::Local)]);
    assert!(matches!(
        ds[0],
        Decision::TimeOut {
            elapsed_ms: 90_000,
            fence_token: 0,
            ..
        }
    ));
    assert!(t.get(JOB).unwrap().locally_timed_out);
    assert!(t.on_tick(120_000).is_empty(), "the verdict is emitted once");
    assert_eq!(t.metrics.detected_elapsed, 1);
    assert!(
        t.on_global_timeout(JOB, TimeoutReason::Elapsed, 0, 120_000)
            .unwrap()
            .is_none(),
        "local authority ignores gates"
    );
}

#[test]
fn t11_9_2_multi_dc_gate_coordinated_timeout() {
    let mut fed = Fed::new(2, 3_600_000);
    for step in 0..=20u64 {
        let now = step * 10_000;
        // Cluster 2 makes progress; cluster 1 is stuck from the start.
        fed.clusters[1].1.on_progress(JOB, now).unwrap();
        fed.step(now, &[true, true]);
    }
    // Cluster 1 saw itself stuck at the 150 s check and reported, but did not cancel on its own.
    let first_report = fed
        .log
        .iter()
        .find(|(i, _, d)| *i == 0 && matches!(d, Decision::ReportTimeout { .. }));
    let (_, at, d) = first_report.expect("cluster 1 reports its local timeout");
    assert_eq!(*at, 150_000);
    assert!(matches!(
        d,
        Decision::ReportTimeout {
            reason: TimeoutReason::Stuck,
            gate: GATE,
            ..
        }
    ));
    // The gate declared, and both clusters accepted the gate's verdict.
    assert_eq!(fed.global.len(), 1);
    assert_eq!(
        fed.global[0].reason,
        TimeoutReason::ClusterReported(ClusterId(1))
    );
    let reason = TimeoutReason::ClusterReported(ClusterId(1));
    // The gate checks every 15 s (0, 20, 40, ... 160 s in 10 s steps): 160 s is its first
    // check after the report.
    assert_eq!(fed.timeouts_of(0), [(160_000, reason, Authority::Gate)]);
    assert_eq!(fed.timeouts_of(1), [(160_000, reason, Authority::Gate)]);
    assert!(
        !fed.clusters[1].1.get(JOB).unwrap().locally_timed_out,
        "cluster 2 was healthy"
    );
    assert!(
        fed.clusters[0].1.get(JOB).unwrap().pending_report.is_none(),
        "the ack cleared the report"
    );
    assert_eq!(fed.gate.metrics.global_timeouts_declared, 1);
}

#[test]
fn t11_9_3_extension_aware_timeout() {
    let mut t = tracker();
    t.start(JOB, local(60_000), 0).unwrap();
    t.on_extension(JOB, NodeId(3), 30_000, 50_000).unwrap();
    let st = t.get(JOB).unwrap();
    assert_eq!(
        (
            st.total_extensions_granted_ms,
            st.deadline_ms(),
            st.max_worker_extension_ms
        ),
        (30_000, 90_000, 30_000)
    );
    for now in [0, 30_000, 60_000, 90_000] {
        t.on_progress(JOB, now).unwrap();
        assert!(
            t.on_tick(now).is_empty(),
            "the extension holds the job alive at {now}"
        );
    }
    assert_eq!(
        timeouts(&t.on_tick(120_000)),
        [(TimeoutReason::Elapsed, Authority::Local)]
    );
    assert!(matches!(
        t.on_extension(JOB, NodeId(3), 0, 1),
        Err(TimeoutError::BadExtension(0))
    ));
    assert!(matches!(
        t.on_extension(JOB, NodeId(3), MAX_EXTENSION_MS + 1, 1),
        Err(TimeoutError::BadExtension(_))
    ));
}

#[test]
fn t11_9_4_stuck_detection() {
    let mut t = tracker();
    t.start(JOB, local(10_000_000), 0).unwrap();
    t.on_progress(JOB, 10_000).unwrap();
    let mut first = None;
    for step in 0..10u64 {
        let now = step * 30_000;
        if let Some(&(r, _)) = timeouts(&t.on_tick(now)).first() {
            first = first.or(Some((now, r)));
        }
    }
    // 120 s after the last progress is not yet "more than" the threshold; 150 s is.
    assert_eq!(first, Some((150_000, TimeoutReason::Stuck)));
    assert_eq!(
        (t.metrics.detected_stuck, t.metrics.detected_elapsed),
        (1, 0)
    );
}

#[test]
fn t11_9_5_leader_transfer_with_timeout_state() {
    let mut t = tracker();
    t.start(JOB, gated(100_000), 0).unwrap();
    t.on_extension(JOB, NodeId(4), 20_000, 10_000).unwrap();
    // Every replica holds the same state; the new leader's copy decides the same.
    let mut replica = t.clone();
    let ds = t.on_leader_change(100_000);
    assert_eq!(ds, replica.on_leader_change(100_000));
    assert_eq!(
        ds,
        [Decision::ReportLeaderTransfer {
            job: JOB,
            gate: GATE,
            fence_token: 1
        }]
    );
    let st = t.get(JOB).unwrap();
    assert_eq!(
        (st.timeout_fence_token, st.started_at_ms, st.deadline_ms()),
        (1, 0, 120_000)
    );
    assert_eq!(
        st.last_progress_at_ms, 100_000,
        "the new leader restarts the progress clock"
    );
    assert_eq!(t.metrics.leader_transfers, 1);
    // Tracking resumes: the deadline from before the transfer still holds.
    let ds = t.on_tick(130_000);
    assert!(ds.iter().any(|d| matches!(
        d,
        Decision::ReportTimeout {
            reason: TimeoutReason::Elapsed,
            fence_token: 1,
            ..
        }
    )));
    // The gate learns the new leader and refuses reports from the old one.
    let mut gate = GateTracker::new(TimeoutConfig::DEFAULT).unwrap();
    gate.start(JOB, 100_000, &[ClusterId(1)], 0).unwrap();
    gate.on_leader_transfer(JOB, ClusterId(1), NodeId(9), 1)
        .unwrap();
    assert_eq!(
        gate.get(JOB).unwrap().clusters[&ClusterId(1)].manager,
        Some(NodeId(9))
    );
    let old = ProgressReport {
        job: JOB,
        cluster: ClusterId(1),
        manager: NodeId(8),
        fence_token: 0,
        has_recent_progress: true,
        total_extensions_ms: 0,
        max_worker_extension_ms: 0,
        workers_with_extensions: 0,
    };
    assert_eq!(
        gate.on_progress(old, 1),
        Err(TimeoutError::StaleFence { got: 0, current: 1 })
    );
    assert_eq!(gate.metrics.fence_rejections, 1);
}

#[test]
fn t11_9_6_fence_token_rejection() {
    let mut t = tracker();
    t.start(JOB, gated(100_000), 0).unwrap();
    t.on_leader_change(1_000);
    t.on_leader_change(2_000);
    let stale = t.on_global_timeout(JOB, TimeoutReason::Elapsed, 1, 3_000);
    assert_eq!(stale, Err(TimeoutError::StaleFence { got: 1, current: 2 }));
    assert_eq!(t.metrics.fence_rejections, 1);
    assert!(
        !t.get(JOB).unwrap().globally_timed_out,
        "a stale verdict changes nothing"
    );
    assert_eq!(
        t.on_gate_ack(JOB, 0, 3_000),
        Err(TimeoutError::StaleFence { got: 0, current: 2 })
    );
    assert_eq!(t.metrics.fence_rejections, 2);
    let ok = t
        .on_global_timeout(JOB, TimeoutReason::Elapsed, 2, 4_000)
        .unwrap();
    assert!(matches!(
        ok,
        Some(Decision::TimeOut {
            authority: Authority::Gate,
            fence_token: 2,
            elapsed_ms: 4_000,
            ..
        })
    ));
    assert_eq!(
        t.on_global_timeout(JOB, TimeoutReason::Elapsed, 2, 5_000),
        Ok(None),
        "idempotent"
    );
    assert_eq!(t.metrics.global_timeouts_accepted, 1);
}

#[test]
fn t11_9_7_cleanup_on_job_completion() {
    let mut t = tracker();
    t.start(TaskId(1), local(60_000), 0).unwrap();
    t.start(JOB, gated(60_000), 0).unwrap();
    t.on_extension(JOB, NodeId(2), 1_000, 10).unwrap();
    assert_eq!(t.stop(TaskId(1), JobEnd::Completed), Ok(None));
    let fin = t.stop(JOB, JobEnd::Completed).unwrap();
    assert_eq!(
        fin,
        Some(Decision::ReportFinalStatus {
            job: JOB,
            gate: GATE,
            status: JobEnd::Completed,
            fence_token: 0
        })
    );
    assert!(t.is_empty(), "nothing survives stop");
    assert_eq!(t.on_progress(JOB, 20), Err(TimeoutError::UnknownJob(JOB)));
    assert_eq!(
        t.stop(JOB, JobEnd::Completed),
        Err(TimeoutError::UnknownJob(JOB)),
        "a double stop is visible"
    );
    assert!(t.on_tick(10_000_000).is_empty());
}

#[test]
fn t11_9_8_cleanup_on_job_cancellation() {
    let mut t = tracker();
    t.start(JOB, gated(30_000), 0).unwrap();
    let ds = t.on_tick(60_000);
    assert!(matches!(ds[..], [Decision::ReportTimeout { .. }]));
    assert!(t.get(JOB).unwrap().pending_report.is_some());
    let fin = t.stop(JOB, JobEnd::Cancelled).unwrap();
    assert!(matches!(
        fin,
        Some(Decision::ReportFinalStatus {
            status: JobEnd::Cancelled,
            ..
        })
    ));
    assert!(
        t.on_tick(80_000).is_empty(),
        "no resend of the report of a cancelled job"
    );
    let mut gate = GateTracker::new(TimeoutConfig::DEFAULT).unwrap();
    gate.start(JOB, 30_000, &[ClusterId(1), ClusterId(2)], 0)
        .unwrap();
    assert_eq!(
        gate.on_final_status(JOB, ClusterId(1), JobEnd::Cancelled, 0),
        Ok(false)
    );
    assert_eq!(
        gate.on_final_status(JOB, ClusterId(2), JobEnd::Cancelled, 0),
        Ok(true)
    );
    assert!(
        gate.get(JOB).is_none(),
        "the gate forgets a job every target ended"
    );
    assert!(gate.on_tick(1_000_000).is_empty());
}

#[test]
fn t11_9_9_worker_failure_extension_cleanup() {
    let mut t = tracker();
    t.start(JOB, gated(600_000), 0).unwrap();
    t.start(TaskId(8), local(600_000), 0).unwrap();
    t.on_extension(JOB, NodeId(1), 10_000, 1).unwrap();
    t.on_extension(JOB, NodeId(2), 5_000, 2).unwrap();
    t.on_extension(TaskId(8), NodeId(1), 7_000, 3).unwrap();
    let count = |ds: &[Decision]| {
        ds.iter().find_map(|d| match d {
            Decision::ReportProgress {
                workers_with_extensions,
                total_extensions_ms,
                ..
            } => Some((*workers_with_extensions, *total_extensions_ms)),
            _ => None,
        })
    };
    assert_eq!(count(&t.on_tick(10_000)), Some((2, 15_000)));
    assert_eq!(
        t.on_worker_failed(NodeId(1)),
        2,
        "worker 1 held extensions on two jobs"
    );
    assert_eq!(t.on_worker_failed(NodeId(1)), 0);
    assert!(
        !t.get(JOB)
            .unwrap()
            .active_workers_with_extensions
            .contains_key(&NodeId(1))
    );
    assert!(
        t.get(TaskId(8))
            .unwrap()
            .active_workers_with_extensions
            .is_empty()
    );
    // Granted time stays granted; only the set of holders shrinks.
    assert_eq!(count(&t.on_tick(20_000)), Some((1, 15_000)));
    assert_eq!(t.get(TaskId(8)).unwrap().deadline_ms(), 607_000);
}

#[test]
fn t11_9_10_gate_failure_fallback() {
    let mut t = tracker();
    t.start(JOB, gated(60_000), 0).unwrap();
    let mut all = Vec::new();
    for step in 0..=40u64 {
        let now = step * 10_000;
        t.on_progress(JOB, now).unwrap();
        for d in t.on_tick(now) {
            all.push((now, d));
        }
    }
    let first_timeout = all
        .iter()
        .find(|(_, d)| matches!(d, Decision::TimeOut { .. }));
    assert!(matches!(
        first_timeout,
        Some((
            300_000,
            Decision::TimeOut {
                authority: Authority::Fallback,
                reason: TimeoutReason::Elapsed,
                ..
            }
        ))
    ));
    let fell = all
        .iter()
        .filter(|(_, d)| matches!(d, Decision::FellBackToLocal { .. }))
        .count();
    assert_eq!(fell, 1);
    assert!(
        all.iter()
            .any(|(at, d)| *at == 90_000 && matches!(d, Decision::ReportTimeout { .. })),
        "reported first"
    );
    assert!(
        t.metrics.reports_resent >= 19,
        "the unacknowledged report was resent every 10 s"
    );
    assert_eq!(t.get(JOB).unwrap().strategy, Strategy::LocalAuthority);
    assert_eq!(
        all.iter()
            .filter(|(_, d)| matches!(d, Decision::TimeOut { .. }))
            .count(),
        1
    );

    // Control: a gate that answers keeps the authority, even long after the deadline.
    let mut t = tracker();
    t.start(JOB, gated(60_000), 0).unwrap();
    for step in 0..=40u64 {
        let now = step * 10_000;
        t.on_gate_contact(GATE, now);
        assert!(timeouts(&t.on_tick(now)).is_empty());
    }
    assert_eq!(t.metrics.gate_fallbacks, 0);
}

#[test]
fn t11_9_11_race_job_completes_during_timeout() {
    let mut fed = Fed::new(1, 60_000);
    let ds = fed.clusters[0].1.on_tick(90_000);
    let Some(&Decision::ReportTimeout { fence_token, .. }) = ds.first() else {
        panic!("report expected")
    };
    fed.gate
        .on_timeout_report(JOB, ClusterId(1), fence_token)
        .unwrap();
    // The cluster reported its local timeout; before the gate's verdict arrives the job completes.
    assert!(fed.clusters[0].1.get(JOB).unwrap().locally_timed_out);
    let fin = fed.clusters[0].1.stop(JOB, JobEnd::Completed).unwrap();
    let Some(Decision::ReportFinalStatus { fence_token, .. }) = fin else {
        panic!("final status expected")
    };
    // The gate's verdict, computed before it heard of the completion, meets no job.
    let mut gate = fed.gate.clone();
    let late = gate.on_tick(90_000);
    assert_eq!(late.len(), 1);
    let r = fed.clusters[0]
        .1
        .on_global_timeout(JOB, late[0].reason, late[0].targets[0].1, 90_001);
    assert_eq!(
        r,
        Err(TimeoutError::UnknownJob(JOB)),
        "a completed job is never timed out"
    );
    // And a gate that hears the completion first declares nothing.
    assert_eq!(
        fed.gate
            .on_final_status(JOB, ClusterId(1), JobEnd::Completed, fence_token),
        Ok(true)
    );
    assert!(fed.gate.on_tick(90_000).is_empty());
}

#[test]
fn t11_9_12_network_partition_isolation() {
    let mut fed = Fed::new(2, 10_000_000);
    for step in 0..=60u64 {
        let now = step * 10_000;
        fed.clusters[0].1.on_progress(JOB, now).unwrap();
        fed.clusters[1].1.on_progress(JOB, now).unwrap();
        // Cluster 1 is cut off from the gate for the whole run; cluster 2 is not.
        fed.step(now, &[false, true]);
    }
    assert!(
        fed.global.is_empty(),
        "one silent cluster is not a global timeout"
    );
    assert!(
        fed.timeouts_of(0).is_empty() && fed.timeouts_of(1).is_empty(),
        "progressing jobs survive a partition"
    );
    let fell: Vec<_> = fed
        .log
        .iter()
        .filter(|(_, _, d)| matches!(d, Decision::FellBackToLocal { .. }))
        .collect();
    assert_eq!(fell.len(), 1);
    assert!(matches!(
        fell[0],
        (
            0,
            300_000,
            Decision::FellBackToLocal {
                silent_ms: 300_000,
                ..
            }
        )
    ));
    assert_eq!(
        fed.clusters[1].1.get(JOB).unwrap().strategy,
        Strategy::GateCoordinated
    );
    // The isolated cluster is now its own authority: a stall there ends the job there.
    let t = &mut fed.clusters[0].1;
    let ds = t.on_tick(600_000 + 150_000);
    assert_eq!(timeouts(&ds), [(TimeoutReason::Stuck, Authority::Fallback)]);
}

/// A job tracked again (a re-placed attempt) keeps the fence token its gate heard, so
/// the gate never sees the token go back; leader changes step it from there.
#[test]
fn a_job_tracked_again_keeps_its_fence_token() {
    let mut t = TimeoutTracker::new(TimeoutConfig::DEFAULT).unwrap();
    let job = TaskId(1);
    t.start_at_fence(job, gated(60_000), 3, 0).unwrap();
    assert_eq!(t.get(job).unwrap().timeout_fence_token, 3);
    let d = t.on_leader_change(1_000);
    assert_eq!(
        d,
        [Decision::ReportLeaderTransfer {
            job,
            gate: GATE,
            fence_token: 4
        }]
    );
    // A gate message with the token before the restart is refused and counted.
    assert_eq!(
        t.on_gate_ack(job, 2, 2_000),
        Err(TimeoutError::StaleFence { got: 2, current: 4 })
    );
    assert_eq!(t.metrics.fence_rejections, 1);
    // `start` is `start_at_fence` at 0.
    t.start(TaskId(2), gated(60_000), 0).unwrap();
    assert_eq!(t.get(TaskId(2)).unwrap().timeout_fence_token, 0);
}
