//! Issue 16: the gate group's replicated state (`crate::gate`): heartbeats, routing
//! decisions, dispatch outcomes with cooldown and fallback, completions, hashing and
//! snapshots.

use crate::gate::{DispatchResult, GateEvent, JobStatus};
use crate::tests::{Log, worker};
use crate::*;
use alloc::vec::Vec;
use xdv_federation::ClusterId;
use xdv_federation::route::{Circuit, Health, Heartbeat, Reason, RouteConfig, RouteDecision};
use xdv_types::{NodeId, TaskId, TenantId};

fn gate_state() -> ClusterState {
    let workers = [worker(1, 2, &[]), worker(2, 2, &[]), worker(3, 2, &[])];
    let mut s =
        ClusterState::genesis(Config::default(), &workers, &[(TenantId(10), [1; 32])]).unwrap();
    s.enable_gate(RouteConfig::DEFAULT);
    s
}

fn hb(cluster: u32, queue: u32) -> Command {
    Command::ClusterHeartbeat(Heartbeat {
        cluster: ClusterId(cluster),
        manager: NodeId(cluster * 10 + 1),
        is_leader: true,
        health: Health::Healthy,
        available_cores: 4,
        total_cores: 4,
        queue_depth: queue,
        load_multiplier_ppm: 1_000_000,
        circuit: Circuit::Closed,
        coordinate: None,
    })
}

fn route(seq: u64) -> Command {
    Command::RouteJob {
        tenant: TenantId(10),
        seq,
        submission: alloc::vec![seq as u8; 8],
        local: None,
    }
}

fn routed(a: &Applied) -> (u64, Option<ClusterId>, Vec<u8>) {
    match &a.events[..] {
        [
            Event::Gate(GateEvent::Routed {
                job,
                cluster,
                decision,
                ..
            }),
        ] => (*job, *cluster, decision.clone()),
        other => panic!("not routed: {other:?}"),
    }
}

fn outcome(job: u64, cluster: u32, result: DispatchResult) -> Command {
    Command::DispatchOutcome {
        job,
        cluster: ClusterId(cluster),
        result,
    }
}

#[test]
fn a_job_is_routed_by_load_accepted_and_finished_with_its_decision_kept() {
    let mut s = gate_state();
    let mut log = Log::new();
    log.push(&mut s, Command::ClockTick);
    let h0 = s.hash();
    let a = log.push(&mut s, hb(1, 8));
    assert_eq!(
        a.events,
        alloc::vec![Event::Gate(GateEvent::HeartbeatApplied {
            cluster: ClusterId(1)
        })]
    );
    assert_ne!(s.hash(), h0, "the router is part of the hashed state");
    log.push(&mut s, hb(2, 0));
    let (job, cluster, bytes) = routed(&log.push(&mut s, route(1)));
    // Bootstrap mode (no coordinate): the lighter queue wins.
    assert_eq!(cluster, Some(ClusterId(2)));
    let d = RouteDecision::decode(&bytes).unwrap();
    assert_eq!(d.primary, Some(ClusterId(2)));
    assert_eq!(d.fallbacks, [ClusterId(1)]);
    assert_eq!(d.reason, Reason::Initial);
    assert!(d.explain().contains("c2"), "{}", d.explain());
    let g = s.gate().unwrap();
    assert_eq!(g.job_for(TenantId(10), 1), Some(job));
    assert_eq!(
        g.jobs[&job].decision, bytes,
        "the encoded decision is stored"
    );
    // A resubmission is the same job.
    let a = log.push(&mut s, route(1));
    assert_eq!(
        a.events,
        alloc::vec![Event::Gate(GateEvent::Duplicate { job })]
    );
    // An answer from a cluster the job is not at changes nothing.
    let a = log.push(
        &mut s,
        outcome(job, 1, DispatchResult::Accepted { task: TaskId(5) }),
    );
    assert!(matches!(a.events[0], Event::Gate(GateEvent::Stale { .. })));
    log.push(
        &mut s,
        outcome(job, 2, DispatchResult::Accepted { task: TaskId(7) }),
    );
    assert_eq!(
        s.gate().unwrap().jobs[&job].status,
        JobStatus::Accepted {
            cluster: ClusterId(2),
            task: TaskId(7)
        }
    );
    let a = log.push(
        &mut s,
        Command::JobFinished {
            job,
            cluster: ClusterId(2),
            task: TaskId(7),
            outcome: Outcome::Executed,
        },
    );
    assert!(matches!(
        a.events[0],
        Event::Gate(GateEvent::Finished { .. })
    ));
    assert!(s.gate().unwrap().jobs[&job].status.is_final());
    assert_eq!(s.gate().unwrap().open_jobs().count(), 0);
    // A second completion is stale.
    let a = log.push(
        &mut s,
        Command::JobFinished {
            job,
            cluster: ClusterId(2),
            task: TaskId(7),
            outcome: Outcome::Executed,
        },
    );
    assert!(matches!(a.events[0], Event::Gate(GateEvent::Stale { .. })));

    // Every replica applying the same log holds the same state; a snapshot of it
    // restores to the same hash.
    let mut r = gate_state();
    for (i, e) in log.entries.iter().enumerate() {
        r.apply(i as u64 + 1, e);
    }
    assert_eq!(r.hash(), s.hash());
    assert_eq!(s.hash(), s.hash_from_scratch());
    let image = s.snapshot_image();
    let mut t = gate_state();
    t.restore_image(&image).unwrap();
    assert_eq!(t.hash(), s.hash());
    assert!(t.data() == s.data());
}

#[test]
fn a_refusal_cools_the_cluster_down_and_the_job_goes_to_its_fallback() {
    let mut s = gate_state();
    let mut log = Log::new();
    log.push(&mut s, Command::ClockTick);
    log.push(&mut s, hb(1, 0));
    log.push(&mut s, hb(2, 4));
    log.push(&mut s, hb(3, 8));
    let (job, first, _) = routed(&log.push(&mut s, route(1)));
    assert_eq!(first, Some(ClusterId(1)));
    let a = log.push(
        &mut s,
        outcome(
            job,
            1,
            DispatchResult::Refused {
                reason: "unknown tenant".into(),
            },
        ),
    );
    assert_eq!(
        a.events,
        alloc::vec![Event::Gate(GateEvent::Refused {
            job,
            cluster: ClusterId(1),
            reason: "unknown tenant".into(),
            next: Some(ClusterId(2)),
        })]
    );
    let now = s.data().clock_ms;
    let g = s.gate().unwrap();
    assert!(g.router.in_cooldown(ClusterId(1), now));
    assert_eq!(
        g.jobs[&job].status,
        JobStatus::Dispatching {
            cluster: ClusterId(2)
        }
    );
    // The next job of the same tenant avoids the cooling cluster.
    let (_, second, bytes) = routed(&log.push(&mut s, route(2)));
    assert_eq!(second, Some(ClusterId(2)));
    assert_eq!(
        RouteDecision::decode(&bytes).unwrap().reason,
        Reason::Cooldown
    );
    // Every cluster of the chain refuses: the job fails.
    for c in [2, 3] {
        log.push(
            &mut s,
            outcome(
                job,
                c,
                DispatchResult::Refused {
                    reason: "full".into(),
                },
            ),
        );
    }
    assert!(matches!(
        s.gate().unwrap().jobs[&job].status,
        JobStatus::Failed { .. }
    ));
    assert_eq!(s.gate().unwrap().counters.refusals, 3);
    // Once the cooldown is over the cluster is eligible as before.
    let cooldown = RouteConfig::DEFAULT.cooldown_ms;
    for _ in 0..cooldown / CLOCK_TICK_MS {
        log.push(&mut s, Command::ClockTick);
    }
    log.push(&mut s, hb(1, 0));
    log.push(&mut s, hb(2, 4));
    log.push(&mut s, hb(3, 8));
    assert!(
        !s.gate()
            .unwrap()
            .router
            .in_cooldown(ClusterId(1), s.data().clock_ms)
    );
}

#[test]
fn without_clusters_a_job_fails_and_an_ordinary_cluster_ignores_gate_commands() {
    let mut s = gate_state();
    let mut log = Log::new();
    let (job, cluster, bytes) = routed(&log.push(&mut s, route(1)));
    assert_eq!(cluster, None);
    assert_eq!(
        RouteDecision::decode(&bytes).unwrap().reason,
        Reason::NoCandidates
    );
    assert!(matches!(
        s.gate().unwrap().jobs[&job].status,
        JobStatus::Failed { .. }
    ));

    let workers = [worker(1, 2, &[])];
    let mut plain =
        ClusterState::genesis(Config::default(), &workers, &[(TenantId(10), [1; 32])]).unwrap();
    let mut log = Log::new();
    log.push(&mut plain, Command::ClockTick);
    let before = plain.hash();
    for c in [hb(1, 0), route(1)] {
        let a = log.push(&mut plain, c);
        assert_eq!(
            a.events,
            alloc::vec![Event::Ignored(IgnoredReason::NotAGate)]
        );
    }
    assert!(plain.gate().is_none());
    // Only the bookkeeping of two applied entries changed.
    assert_ne!(plain.hash(), before);
    assert_eq!(plain.data().counters.entries, 3);
}
