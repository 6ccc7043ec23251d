//! §12.10.5–§12.10.12: role-aware confirmation and adaptive suspicion.

use alloc::vec::Vec;

use crate::confirm::*;
use crate::vivaldi::{Coordinate, VivaldiConfig, VivaldiSystem};
use crate::{NodeId, PPM};

const P: NodeId = NodeId(42);

fn viv() -> VivaldiSystem {
    VivaldiSystem::new(NodeId(1), VivaldiConfig::DEFAULT).unwrap()
}

/// Ticks every second from `from` to `to` (inclusive), collecting (time, action).
fn run(m: &mut Membership, v: &VivaldiSystem, from: u64, to: u64, load: u64) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        out.extend(m.on_tick(now, v, load).into_iter().map(|a| (now, a)));
        now += 1_000;
    }
    out
}

fn probe_times(acts: &[(u64, Action)]) -> Vec<(u64, u32)> {
    acts.iter()
        .filter_map(|(t, a)| match a {
            Action::Probe { attempt, .. } => Some((*t, *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn t12_10_5_gate_proactive_confirmation_5_attempts() {
    let v = viv();
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    m.on_discovered(P, Role::Gate, 0).unwrap();
    let acts = run(&mut m, &v, 0, 200_000, PPM);
    let probes = probe_times(&acts);
    assert_eq!(
        probes,
        [
            (120_000, 1),
            (125_000, 2),
            (130_000, 3),
            (135_000, 4),
            (140_000, 5)
        ]
    );
    let removed: Vec<_> = acts
        .iter()
        .filter(|(_, a)| matches!(a, Action::Removed { .. }))
        .collect();
    assert_eq!(removed.len(), 1);
    assert!(matches!(
        removed[0],
        (
            145_000,
            Action::Removed {
                reason: RemoveReason::AttemptsExhausted,
                role: Role::Gate,
                ..
            }
        )
    ));
    assert_eq!(m.metrics.confirmation_attempts, [5, 0, 0]);
    assert_eq!(m.metrics.removed_exhausted, [1, 0, 0]);
    // A gate that answers the second probe is confirmed.
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    m.on_discovered(P, Role::Gate, 0).unwrap();
    assert_eq!(probe_times(&run(&mut m, &v, 0, 126_000, PPM)).len(), 2);
    assert!(matches!(
        m.on_ack(P, 127_000),
        Ok(Some(Action::Confirmed {
            after_ms: 127_000,
            ..
        }))
    ));
    assert_eq!(m.metrics.confirmation_success, 1);
    assert!(run(&mut m, &v, 127_000, 300_000, PPM).is_empty());
}

#[test]
fn t12_10_6_manager_proactive_confirmation_3_attempts() {
    let v = viv();
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    m.on_discovered(P, Role::Manager, 0).unwrap();
    let acts = run(&mut m, &v, 0, 200_000, PPM);
    assert_eq!(probe_times(&acts), [(90_000, 1), (95_000, 2), (100_000, 3)]);
    assert!(acts.iter().any(|(t, a)| *t == 105_000
        && matches!(
            a,
            Action::Removed {
                role: Role::Manager,
                ..
            }
        )));
    assert_eq!(m.metrics.confirmation_attempts, [0, 3, 0]);
    // Under twice the load every wait doubles (adaptive attempt interval).
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    m.on_discovered(P, Role::Manager, 0).unwrap();
    let acts = run(&mut m, &v, 0, 200_000, 2 * PPM);
    assert_eq!(
        probe_times(&acts),
        [(90_000, 1), (100_000, 2), (110_000, 3)]
    );
    assert!(
        acts.iter()
            .any(|(t, a)| *t == 120_000 && matches!(a, Action::Removed { .. }))
    );
}

#[test]
fn t12_10_7_worker_passive_only_confirmation() {
    let v = viv();
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    m.on_discovered(P, Role::Worker, 0).unwrap();
    let acts = run(&mut m, &v, 0, 400_000, 10 * PPM);
    assert!(probe_times(&acts).is_empty(), "workers are never probed");
    assert_eq!(acts.len(), 1);
    assert!(matches!(
        acts[0],
        (
            180_000,
            Action::Removed {
                reason: RemoveReason::PassiveTimeout,
                role: Role::Worker,
                ..
            }
        )
    ));
    assert_eq!(m.metrics.confirmation_attempts, [0, 0, 0]);
    assert_eq!(m.metrics.removed_passive, [0, 0, 1]);
}

#[test]
fn t12_10_8_unconfirmed_to_alive() {
    let v = viv();
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    assert_eq!(m.on_discovered(P, Role::Manager, 1_000), Ok(true));
    assert_eq!(
        m.on_discovered(P, Role::Manager, 2_000),
        Ok(false),
        "gossip again changes nothing"
    );
    assert_eq!(m.counts().unconfirmed, 1);
    let a = m.on_ack(P, 6_000).unwrap();
    assert_eq!(
        a,
        Some(Action::Confirmed {
            peer: P,
            role: Role::Manager,
            after_ms: 5_000
        })
    );
    assert_eq!(m.peer(P).unwrap().state, PeerState::Alive);
    assert_eq!((m.counts().alive, m.counts().unconfirmed), (1, 0));
    assert_eq!(m.metrics.transitions_unconfirmed_to_alive, 1);
    assert_eq!(
        m.metrics.confirmation_success, 0,
        "confirmed passively, before any probe"
    );
    assert_eq!(m.on_ack(P, 7_000), Ok(None));
    assert!(
        run(&mut m, &v, 0, 1_000_000, PPM).is_empty(),
        "a confirmed peer is never removed by the timer"
    );
}

#[test]
fn t12_10_9_unconfirmed_to_removed() {
    let v = viv();
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    m.on_discovered(P, Role::Manager, 0).unwrap();
    m.on_discovered(NodeId(43), Role::Worker, 0).unwrap();
    let acts = run(&mut m, &v, 0, 200_000, PPM);
    assert_eq!(
        acts.iter()
            .filter(|(_, a)| matches!(a, Action::Removed { .. }))
            .count(),
        2
    );
    assert!(m.peer(P).is_none() && m.peer(NodeId(43)).is_none());
    assert!(
        m.in_state(PeerState::Dead).is_empty(),
        "removal is not death"
    );
    assert!(
        !acts
            .iter()
            .any(|(_, a)| matches!(a, Action::Dead { .. } | Action::Suspected { .. }))
    );
    assert_eq!(m.metrics.transitions_unconfirmed_to_removed, 2);
    assert_eq!(m.metrics.removed, [0, 1, 1]);
    assert_eq!(m.on_ack(P, 300_000), Err(ConfirmError::UnknownPeer(P)));
}

#[test]
fn t12_10_10_adaptive_timeout_calculation() {
    let cfg = ConfirmConfig::DEFAULT;
    // 50 ms RTT → 5× latency; 2× load; error 0.4 → 1.2 confidence.
    let t = adaptive_timeout(&cfg, &GATE_STRATEGY, 5_000, Some(50_000), 400_000, 2 * PPM);
    assert_eq!(
        (t.latency_ppm, t.load_ppm, t.confidence_ppm, t.timeout_ms),
        (5 * PPM, 2 * PPM, 1_200_000, 60_000)
    );
    // Caps: latency at 10×, a gate's load at 3×, confidence at 1.5.
    let t = adaptive_timeout(
        &cfg,
        &GATE_STRATEGY,
        5_000,
        Some(500_000),
        9 * PPM,
        20 * PPM,
    );
    assert_eq!(
        (t.latency_ppm, t.load_ppm, t.confidence_ppm, t.timeout_ms),
        (10 * PPM, 3 * PPM, 1_500_000, 225_000)
    );
    // Floors: a fast link never shortens the base.
    let t = adaptive_timeout(&cfg, &MANAGER_STRATEGY, 5_000, Some(1_000), 0, 0);
    assert_eq!(t.timeout_ms, 5_000);
    // Workers: no Vivaldi, only load (up to 10×).
    let t = adaptive_timeout(&cfg, &WORKER_STRATEGY, 5_000, Some(500_000), PPM, 20 * PPM);
    assert_eq!(
        (t.latency_ppm, t.confidence_ppm, t.timeout_ms),
        (PPM, PPM, 50_000)
    );

    // Through the membership: a manager 50 ms away is suspected with the adaptive timeout.
    let mut v = viv();
    let far = Coordinate {
        position_us: [50_000, 0, 0, 0],
        height_us: 10,
        error_ppm: 100_000,
        sample_count: 20,
        updated_at_ms: 0,
    };
    v.update(P, far, 50_000, 0).unwrap();
    let rtt = v.estimate_rtt_us(P);
    let mut m = Membership::new(cfg);
    m.on_discovered(P, Role::Manager, 0).unwrap();
    m.on_ack(P, 1).unwrap();
    let Ok(Some(Action::Suspected { timeout, .. })) = m.on_probe_failed(P, 10_000, &v, PPM) else {
        panic!("suspect expected")
    };
    let expect = adaptive_timeout(
        &cfg,
        &MANAGER_STRATEGY,
        cfg.suspicion_base_ms,
        Some(rtt),
        v.error_ppm(),
        PPM,
    );
    assert_eq!(timeout, expect);
    assert!(
        timeout.timeout_ms > cfg.suspicion_base_ms,
        "a distant peer gets longer than the base"
    );
    assert_eq!(m.metrics.last_adaptive_timeout[1], Some(timeout));
    let deadline = 10_000 + timeout.timeout_ms;
    assert!(m.on_tick(deadline - 1, &v, PPM).is_empty());
    assert_eq!(m.on_tick(deadline, &v, PPM), [Action::Dead { peer: P }]);
    assert_eq!(m.on_ack(P, deadline + 1), Err(ConfirmError::Dead(P)));
    // A suspect that answers in time is refuted.
    let mut m = Membership::new(cfg);
    m.on_discovered(P, Role::Gate, 0).unwrap();
    m.on_ack(P, 1).unwrap();
    m.on_probe_failed(P, 2, &v, PPM).unwrap();
    assert_eq!(m.on_ack(P, 3), Ok(Some(Action::Refuted { peer: P })));
    assert_eq!(m.peer(P).unwrap().state, PeerState::Alive);
}

#[test]
fn t12_10_11_role_detection_from_gossip() {
    assert_eq!(Role::from_gossip(Some(0)), Role::Gate);
    assert_eq!(Role::from_gossip(Some(1)), Role::Manager);
    assert_eq!(Role::from_gossip(Some(2)), Role::Worker);
    assert_eq!(
        Role::from_gossip(Some(200)),
        Role::Worker,
        "unknown tag: the never-probed role"
    );
    assert_eq!(Role::from_gossip(None), Role::Worker);
    for r in Role::ALL {
        assert_eq!(Role::from_gossip(Some(r.tag())), r);
    }
    // The detected role selects the strategy.
    let v = viv();
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    m.on_discovered(NodeId(1), Role::from_gossip(Some(0)), 0)
        .unwrap();
    m.on_discovered(NodeId(2), Role::from_gossip(Some(77)), 0)
        .unwrap();
    let acts = run(&mut m, &v, 0, 200_000, PPM);
    assert!(acts.iter().any(|(_, a)| matches!(
        a,
        Action::Probe {
            peer: NodeId(1),
            ..
        }
    )));
    assert!(!acts.iter().any(|(_, a)| matches!(
        a,
        Action::Probe {
            peer: NodeId(2),
            ..
        }
    )));
}

#[test]
fn t12_10_12_ad29_compliance_no_suspect_for_unconfirmed() {
    let v = viv();
    let mut m = Membership::new(ConfirmConfig::DEFAULT);
    for (i, r) in Role::ALL.into_iter().enumerate() {
        m.on_discovered(NodeId(10 + i as u32), r, 0).unwrap();
    }
    for i in 0..3 {
        let id = NodeId(10 + i);
        assert_eq!(
            m.on_probe_failed(id, 1_000, &v, PPM),
            Err(ConfirmError::NotConfirmed(id))
        );
        assert_eq!(m.peer(id).unwrap().state, PeerState::Unconfirmed);
    }
    assert_eq!(m.metrics.suspicions_refused_unconfirmed, 3);
    let mut now = 0;
    while now <= 400_000 {
        for a in m.on_tick(now, &v, PPM) {
            assert!(
                matches!(a, Action::Probe { .. } | Action::Removed { .. }),
                "unexpected {a:?}"
            );
        }
        let c = m.counts();
        assert_eq!((c.suspect, c.dead), (0, 0));
        now += 1_000;
    }
    assert_eq!(
        m.counts(),
        StateCounts::default(),
        "all three removed, none dead"
    );
}

/// One factor scales every confirmation duration (floor 1 ms) and nothing else.
#[test]
fn scaled_config_scales_every_duration_and_keeps_the_rest() {
    let d = ConfirmConfig::DEFAULT;
    let s = d.scaled(100);
    assert_eq!(s.gate.passive_timeout_ms, 12_000);
    assert_eq!(s.manager.passive_timeout_ms, 9_000);
    assert_eq!(s.worker.passive_timeout_ms, 18_000);
    assert_eq!(s.gate.attempt_interval_ms, 500);
    assert_eq!(s.worker.attempt_interval_ms, 0);
    assert_eq!(s.suspicion_base_ms, 500);
    assert_eq!((s.gate.attempts, s.manager.attempts), (5, 3));
    assert_eq!(s.reference_rtt_us, d.reference_rtt_us);
    assert_eq!(d.scaled(1000), d);
    assert_eq!(d.scaled(0).manager.passive_timeout_ms, 1);
}
