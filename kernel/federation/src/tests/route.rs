//! §13.13: routing; plus determinism and decoder fuzzing.

use alloc::vec;
use alloc::vec::Vec;
use xdv_types::rng::SplitMix64;

use crate::route::*;
use crate::vivaldi::{Coordinate, rtt_ucb_us};
use crate::{ClusterId, NodeId, PPM, TaskId};

const C1: ClusterId = ClusterId(1);
const C2: ClusterId = ClusterId(2);
const C3: ClusterId = ClusterId(3);
const C4: ClusterId = ClusterId(4);

/// A converged coordinate `x_us` away from the origin along the first axis.
fn at(x_us: i64) -> Coordinate {
    Coordinate {
        position_us: [x_us, 0, 0, 0],
        height_us: 10,
        error_ppm: 100_000,
        sample_count: 50,
        updated_at_ms: 0,
    }
}

fn gate_coord() -> Coordinate {
    at(0)
}

fn bootstrap_coord() -> Coordinate {
    Coordinate {
        sample_count: 2,
        ..at(0)
    }
}

fn leader(
    c: ClusterId,
    health: Health,
    avail: u32,
    queue: u32,
    coord: Option<Coordinate>,
) -> Heartbeat {
    Heartbeat {
        cluster: c,
        manager: NodeId(c.0 * 10),
        is_leader: true,
        health,
        available_cores: avail,
        total_cores: 100,
        queue_depth: queue,
        load_multiplier_ppm: PPM,
        circuit: Circuit::Closed,
        coordinate: coord,
    }
}

fn router_with(hbs: &[Heartbeat], now: u64) -> Router {
    let mut r = Router::new(RouteConfig::DEFAULT);
    for hb in hbs {
        r.on_heartbeat(hb, now).unwrap();
    }
    r
}

fn line(d: &RouteDecision, c: ClusterId) -> ScoreLine {
    *d.scores
        .iter()
        .find(|s| s.cluster == c)
        .expect("cluster scored")
}

#[test]
fn t13_13_1_routing_respects_health_buckets() {
    let hbs = [
        leader(C1, Health::Healthy, 100, 0, Some(at(200_000))),
        leader(C2, Health::Busy, 100, 0, Some(at(5_000))),
        leader(C3, Health::Degraded, 100, 0, Some(at(1_000))),
        leader(C4, Health::Unhealthy, 100, 0, Some(at(1_000))),
    ];
    let mut r = router_with(&hbs, 0);
    let d = r.route(1, &[C2, C3, C4], &gate_coord(), 0);
    assert_eq!(
        (d.primary, d.bucket, d.reason),
        (Some(C1), Some(Health::Healthy), Reason::Initial)
    );
    assert_eq!(
        d.fallbacks(),
        [C2, C3],
        "buckets in order, unhealthy never listed"
    );
    assert!(d.scores.iter().all(|s| s.cluster != C4));
    assert!(
        line(&d, C2).score < line(&d, C1).score,
        "the busy cluster scores better, yet comes second"
    );
    // A stale heartbeat demotes C1 to DEGRADED: BUSY C2 takes over, even inside the hold-down.
    for hb in &hbs[1..] {
        r.on_heartbeat(hb, 31_000).unwrap();
    }
    let mut hb1 = hbs[0];
    hb1.is_leader = false;
    r.on_heartbeat(&hb1, 31_000).unwrap(); // the manager is live; the cluster report is old
    let d = r.route(1, &[], &gate_coord(), 31_000);
    assert_eq!((d.primary, d.reason), (Some(C2), Reason::BucketChange));
    assert_eq!(line(&d, C1).bucket, Health::Degraded);
    // A cluster whose every manager's circuit is open is excluded.
    let mut open = hbs[1];
    open.circuit = Circuit::Open;
    r.on_heartbeat(&open, 32_000).unwrap();
    let d = r.route(2, &[], &gate_coord(), 32_000);
    assert!(d.scores.iter().all(|s| s.cluster != C2));
    assert_eq!(d.bucket, Some(Health::Degraded));
}

#[test]
fn t13_13_2_rtt_ucb_scoring_within_bucket() {
    let mut r = router_with(
        &[
            leader(C1, Health::Healthy, 100, 0, Some(at(80_000))),
            leader(C2, Health::Healthy, 100, 0, Some(at(10_000))),
        ],
        0,
    );
    let d = r.route(1, &[], &gate_coord(), 0);
    assert_eq!(d.mode, Mode::Coordinates);
    assert_eq!(d.primary, Some(C2), "nearer wins at equal load");
    let cfg = RouteConfig::DEFAULT;
    for (c, x) in [(C1, 80_000), (C2, 10_000)] {
        let l = line(&d, c);
        assert_eq!(
            l.rtt_ucb_us,
            rtt_ucb_us(&cfg.vivaldi, &gate_coord(), Some(&at(x)))
        );
        assert_eq!(
            l.score,
            l.rtt_ucb_us * l.load_factor_ppm / PPM * l.quality_penalty_ppm / PPM
        );
    }
    // 10.02 ms estimate, sigma clamped up to 5 ms: 20.02 ms upper bound.
    assert_eq!(line(&d, C2).rtt_ucb_us, 20_020);
}

#[test]
fn t13_13_3_load_factor_calculation() {
    let mut r = Router::new(RouteConfig::DEFAULT);
    r.on_heartbeat(&leader(C1, Health::Healthy, 25, 10, None), 0)
        .unwrap();
    for (i, circuit) in [Circuit::Closed, Circuit::Closed, Circuit::Open]
        .into_iter()
        .enumerate()
    {
        let mut hb = leader(C1, Health::Healthy, 25, 10, None);
        (hb.manager, hb.is_leader, hb.circuit) = (NodeId(100 + i as u32), false, circuit);
        r.on_heartbeat(&hb, 0).unwrap();
    }
    // util 0.75 × 2 + queue 10/(10+10) × 1 + circuits 1/4 × 3 = 1.5 + 0.5 + 0.75, plus 1.
    assert_eq!(r.load_factor_ppm(r.cluster(C1).unwrap()), 3_750_000);
    // Saturated everything: capped at 5.
    let mut r = router_with(&[leader(C2, Health::Healthy, 0, 1_000_000, None)], 0);
    let mut open = leader(C2, Health::Healthy, 0, 1_000_000, None);
    open.circuit = Circuit::Open;
    r.on_heartbeat(&open, 0).unwrap();
    assert_eq!(r.load_factor_ppm(r.cluster(C2).unwrap()), 5 * PPM);
    // Idle, but the leader reports a load multiplier of 2.
    let mut hb = leader(C3, Health::Healthy, 100, 0, None);
    hb.load_multiplier_ppm = 2 * PPM;
    let r = router_with(&[hb], 0);
    assert_eq!(r.load_factor_ppm(r.cluster(C3).unwrap()), 2 * PPM);
    assert_eq!(
        Router::new(RouteConfig::DEFAULT)
            .on_heartbeat(&leader(C1, Health::Healthy, 101, 0, None), 0),
        Err(RouteError::BadCores {
            available: 101,
            total: 100
        })
    );
}

#[test]
fn t13_13_4_quality_penalty_for_stale_coordinates() {
    let r = Router::new(RouteConfig::DEFAULT);
    let g = gate_coord();
    let remote = at(10_000);
    assert_eq!(
        r.quality_penalty_ppm(&g, Some(&remote), 0, 0),
        PPM,
        "fresh and converged: no penalty"
    );
    assert_eq!(
        r.quality_penalty_ppm(&g, Some(&remote), 0, 600_000),
        1_250_000,
        "twice the TTL: quality 1/2"
    );
    assert_eq!(
        r.quality_penalty_ppm(&g, None, 0, 0),
        1_500_000,
        "no coordinate: quality 0"
    );
    // In a decision: same place, same load; C1's coordinate is 600 s old, C2's fresh.
    let mut r = router_with(&[leader(C1, Health::Healthy, 100, 0, Some(remote))], 0);
    for now in [300_000, 600_000] {
        r.on_heartbeat(&leader(C1, Health::Healthy, 100, 0, None), now)
            .unwrap();
    }
    r.on_heartbeat(&leader(C2, Health::Healthy, 100, 0, Some(remote)), 600_000)
        .unwrap();
    let d = r.route(1, &[], &g, 600_000);
    assert_eq!(line(&d, C1).quality_penalty_ppm, 1_250_000);
    assert_eq!(line(&d, C2).quality_penalty_ppm, PPM);
    assert_eq!(d.primary, Some(C2));
}

#[test]
fn t13_13_5_hysteresis_prevents_oscillation() {
    let b = bootstrap_coord(); // score = load factor: easy to steer
    let mut r = router_with(
        &[
            leader(C1, Health::Healthy, 100, 0, None),
            leader(C2, Health::Healthy, 99, 0, None),
        ],
        0,
    );
    assert_eq!(r.route(9, &[], &b, 0).primary, Some(C1));
    let mut reasons = Vec::new();
    for step in 1..=20u64 {
        let now = step * 10_000;
        // The two trade places by a few percent every ten seconds.
        let (a1, a2) = if step % 2 == 1 { (98, 100) } else { (100, 99) };
        r.on_heartbeat(&leader(C1, Health::Healthy, a1, 0, None), now)
            .unwrap();
        r.on_heartbeat(&leader(C2, Health::Healthy, a2, 0, None), now)
            .unwrap();
        let d = r.route(9, &[], &b, now);
        assert_eq!(d.primary, Some(C1), "no flapping at {now}");
        reasons.push(d.reason);
    }
    assert_eq!(r.metrics.switches, 0);
    assert!(reasons.contains(&Reason::HoldDown) && reasons.contains(&Reason::Sticky));
    // A real improvement (≥ 20 %) after the hold-down switches.
    r.on_heartbeat(&leader(C1, Health::Healthy, 60, 0, None), 210_000)
        .unwrap();
    r.on_heartbeat(&leader(C2, Health::Healthy, 100, 0, None), 210_000)
        .unwrap();
    let d = r.route(9, &[], &b, 210_000);
    assert_eq!((d.primary, d.reason), (Some(C2), Reason::Improvement));
    // Degradation: C2 (selected at 1.0) rises to 1.6 while C1 sits at 1.3 (not 20 % better):
    // a switch only after the 60 s confirmation.
    let mut switched_at = None;
    for step in 0..10u64 {
        let now = 250_000 + step * 10_000;
        r.on_heartbeat(&leader(C1, Health::Healthy, 85, 0, None), now)
            .unwrap();
        r.on_heartbeat(&leader(C2, Health::Healthy, 70, 0, None), now)
            .unwrap();
        let d = r.route(9, &[], &b, now);
        if d.primary == Some(C1) && switched_at.is_none() {
            assert_eq!(d.reason, Reason::Degraded);
            switched_at = Some(now);
        }
    }
    assert_eq!(switched_at, Some(310_000));
}

#[test]
fn t13_13_6_cooldown_after_dispatch_failure() {
    let g = gate_coord();
    let mut r = router_with(
        &[
            leader(C1, Health::Healthy, 100, 0, Some(at(10_000))),
            leader(C2, Health::Healthy, 90, 0, Some(at(10_000))),
        ],
        0,
    );
    assert_eq!(r.route(1, &[], &g, 0).primary, Some(C1));
    r.record_dispatch_failure(C1, 1_000).unwrap();
    let d = r.route(1, &[], &g, 2_000);
    assert_eq!(
        (d.primary, d.reason),
        (Some(C2), Reason::Cooldown),
        "safety beats the hold-down"
    );
    assert!(line(&d, C1).cooldown);
    assert_eq!(d.fallbacks(), [C1], "a cooling cluster stays in the chain");
    assert!(r.in_cooldown(C1, 120_999) && !r.in_cooldown(C1, 121_000));
    for hb in [
        leader(C1, Health::Healthy, 100, 0, None),
        leader(C2, Health::Healthy, 90, 0, None),
    ] {
        r.on_heartbeat(&hb, 121_000).unwrap();
    }
    let d = r.route(1, &[], &g, 121_000);
    assert!(!line(&d, C1).cooldown);
    assert_eq!(
        (d.primary, d.reason),
        (Some(C2), Reason::Sticky),
        "C1 is back but not 20 % better"
    );
    r.record_dispatch_failure(C2, 122_000).unwrap();
    r.record_dispatch_success(C2);
    assert!(!r.in_cooldown(C2, 122_001));
    assert_eq!(
        r.record_dispatch_failure(C4, 0),
        Err(RouteError::UnknownCluster(C4))
    );
    assert_eq!(r.metrics.dispatch_failures, 2);
}

#[test]
fn t13_13_7_bootstrap_mode_without_coordinates() {
    let hbs = [
        leader(C1, Health::Healthy, 10, 0, Some(at(5_000))),
        leader(C2, Health::Healthy, 100, 0, Some(at(150_000))),
    ];
    let mut r = router_with(&hbs, 0);
    assert!(!r.coordinate_aware(&bootstrap_coord()));
    let d = r.route(1, &[], &bootstrap_coord(), 0);
    assert_eq!(
        (d.mode, d.primary),
        (Mode::Bootstrap, Some(C2)),
        "idle capacity first, distance ignored"
    );
    assert!(
        d.scores
            .iter()
            .all(|s| s.rtt_ucb_us == 0 && s.score == s.load_factor_ppm)
    );
    assert_eq!(line(&d, C1).score, 2_800_000);
    // A converged gate weighs distance too: the near cluster wins despite its load.
    let mut high_error = gate_coord();
    high_error.error_ppm = 600_000;
    assert!(
        !r.coordinate_aware(&high_error),
        "too much error is bootstrap too"
    );
    let d = r.route(2, &[], &gate_coord(), 0);
    assert_eq!((d.mode, d.primary), (Mode::Coordinates, Some(C1)));
}

#[test]
fn t13_13_8_fallback_chain_construction() {
    let hbs = [
        leader(ClusterId(1), Health::Healthy, 100, 0, Some(at(50_000))),
        leader(ClusterId(2), Health::Healthy, 100, 0, Some(at(20_000))),
        leader(ClusterId(3), Health::Busy, 100, 0, Some(at(90_000))),
        leader(ClusterId(4), Health::Busy, 100, 0, Some(at(30_000))),
        leader(ClusterId(5), Health::Degraded, 100, 0, Some(at(1_000))),
        leader(ClusterId(6), Health::Unhealthy, 100, 0, Some(at(1_000))),
    ];
    let mut r = router_with(&hbs, 0);
    let d = r.route(1, &[], &gate_coord(), 0);
    assert_eq!(d.primary, Some(ClusterId(2)));
    assert_eq!(d.fallbacks(), [1, 4, 3, 5].map(ClusterId));
    assert_eq!(d.next_fallback(&[ClusterId(2)]), Some(ClusterId(1)));
    assert_eq!(
        d.next_fallback(&[1, 2, 3, 4].map(ClusterId)),
        Some(ClusterId(5))
    );
    assert_eq!(d.next_fallback(&[1, 2, 3, 4, 5].map(ClusterId)), None);
    let empty = Router::new(RouteConfig::DEFAULT).route(1, &[], &gate_coord(), 0);
    assert_eq!(
        (empty.primary, empty.reason, empty.bucket),
        (None, Reason::NoCandidates, None)
    );
}

#[test]
fn t13_13_9_manager_selection_within_dc() {
    let g = gate_coord();
    let mk = |id: u32, circuit, queue, avail, x| Heartbeat {
        manager: NodeId(id),
        is_leader: id == 1,
        circuit,
        queue_depth: queue,
        available_cores: avail,
        coordinate: Some(at(x)),
        ..leader(C1, Health::Healthy, 100, 0, None)
    };
    let mut r = Router::new(RouteConfig::DEFAULT);
    r.on_heartbeat(&mk(9, Circuit::Closed, 0, 100, 1_000), 0)
        .unwrap(); // will go stale
    for hb in [
        mk(1, Circuit::Open, 0, 100, 1_000),
        mk(2, Circuit::Closed, 50, 100, 10_000),
        mk(3, Circuit::Closed, 0, 100, 30_000),
    ] {
        r.on_heartbeat(&hb, 40_000).unwrap();
    }
    // m1 open, m9 stale; m2 is near but queued (×1.83), m3 farther and idle.
    let s2 = r.manager_score(&r.cluster(C1).unwrap().managers[&NodeId(2)], &g, 40_000);
    let s3 = r.manager_score(&r.cluster(C1).unwrap().managers[&NodeId(3)], &g, 40_000);
    assert!(s2 < s3, "{s2} vs {s3}");
    assert_eq!(r.select_manager(C1, TaskId(1), &g, 40_000), Some(NodeId(2)));
    // The gate's try order: every eligible manager by score, the open and the stale
    // one left out; ranking changes nothing.
    let before = r.clone();
    assert_eq!(r.rank_managers(C1, &g, 40_000), [NodeId(2), NodeId(3)]);
    assert_eq!(r, before);
    assert!(
        r.rank_managers(C2, &g, 40_000).is_empty(),
        "unknown cluster"
    );
    // Sticky per job: m3 becomes better, job 1 stays, job 2 goes to m3.
    r.on_heartbeat(&mk(2, Circuit::Closed, 500, 0, 10_000), 41_000)
        .unwrap();
    assert_eq!(r.select_manager(C1, TaskId(1), &g, 41_000), Some(NodeId(2)));
    assert_eq!(r.select_manager(C1, TaskId(2), &g, 41_000), Some(NodeId(3)));
    // m2's circuit opens: job 1 moves.
    r.on_heartbeat(&mk(2, Circuit::Open, 500, 0, 10_000), 42_000)
        .unwrap();
    assert_eq!(r.select_manager(C1, TaskId(1), &g, 42_000), Some(NodeId(3)));
    r.forget_job(TaskId(1));
    assert_eq!(
        r.select_manager(C2, TaskId(1), &g, 42_000),
        None,
        "unknown cluster"
    );
    r.on_heartbeat(&mk(3, Circuit::Open, 0, 100, 30_000), 43_000)
        .unwrap();
    assert_eq!(
        r.select_manager(C1, TaskId(3), &g, 43_000),
        None,
        "no eligible manager"
    );
}

#[test]
fn t13_13_10_preferred_dc_multiplier() {
    let g = gate_coord();
    let hbs = [
        leader(C1, Health::Healthy, 100, 0, Some(at(20_000))),
        leader(C2, Health::Healthy, 100, 0, Some(at(22_000))),
        leader(C3, Health::Busy, 100, 0, Some(at(1_000))),
    ];
    let mut r = router_with(&hbs, 0);
    let plain = r.route(1, &[], &g, 0);
    assert_eq!(plain.primary, Some(C1));
    let d = r.route(2, &[C2, C3], &g, 0);
    assert_eq!(d.primary, Some(C2), "0.8 × a 10 % worse score wins");
    assert!(line(&d, C2).preferred);
    assert_eq!(line(&d, C2).score, line(&plain, C2).score * 800_000 / PPM);
    assert!(
        !line(&d, C3).preferred,
        "the multiplier applies inside the primary bucket only"
    );
    assert_eq!(line(&d, C3).score, line(&plain, C3).score);
    assert_eq!(d.fallbacks(), [C1, C3]);
    let text = d.explain();
    assert!(
        text.contains("primary: c2 (bucket healthy, reason: initial)"),
        "{text}"
    );
    assert!(text.contains("preferred PRIMARY"), "{text}");
    assert!(text.contains("fallbacks: c1, c3"), "{text}");
}

/// Random heartbeats, failures and routes, from a seed.
fn scenario(seed: u64, clusters: u32, steps: u64) -> (Vec<RouteDecision>, Vec<Vec<u8>>) {
    let mut rng = SplitMix64::new(seed);
    let mut r = Router::new(RouteConfig::DEFAULT);
    let healths = [
        Health::Healthy,
        Health::Busy,
        Health::Degraded,
        Health::Unhealthy,
    ];
    let (mut out, mut bytes) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let now = step * 5_000;
        let c = ClusterId(rng.below(u64::from(clusters)) as u32);
        let total = 1 + rng.below(256) as u32;
        let coord = rng.chance_pct(80).then(|| at(rng.below(300_000) as i64));
        let hb = Heartbeat {
            cluster: c,
            manager: NodeId(rng.below(3) as u32),
            is_leader: rng.chance_pct(70),
            health: *rng.pick(&healths).unwrap(),
            available_cores: rng.below(u64::from(total) + 1) as u32,
            total_cores: total,
            queue_depth: rng.below(100) as u32,
            load_multiplier_ppm: PPM + rng.below(2 * PPM),
            circuit: *rng
                .pick(&[
                    Circuit::Closed,
                    Circuit::Closed,
                    Circuit::HalfOpen,
                    Circuit::Open,
                ])
                .unwrap(),
            coordinate: coord,
        };
        r.on_heartbeat(&hb, now).unwrap();
        if rng.chance_pct(10) {
            let _ = r.record_dispatch_failure(c, now);
        }
        let local = if rng.chance_pct(20) {
            bootstrap_coord()
        } else {
            gate_coord()
        };
        let preferred = [ClusterId(rng.below(u64::from(clusters)) as u32)];
        let d = r.route(rng.below(4), &preferred, &local, now);
        bytes.push(d.encode());
        out.push(d);
    }
    (out, bytes)
}

#[test]
fn determinism_same_inputs_same_decisions_and_bytes() {
    for seed in 0..20 {
        let (a, ab) = scenario(seed, 12, 200);
        let (b, bb) = scenario(seed, 12, 200);
        assert_eq!(a, b, "seed {seed}");
        assert_eq!(ab, bb, "seed {seed}");
        for (d, bytes) in a.iter().zip(&ab) {
            assert_eq!(
                &RouteDecision::decode(bytes).unwrap(),
                d,
                "round trip, seed {seed}"
            );
            // Invariants: buckets in order; the primary is in the best bucket.
            assert!(d.scores.windows(2).all(|w| w[0].bucket <= w[1].bucket));
            if let Some(p) = d.primary {
                assert_eq!(Some(line(d, p).bucket), d.bucket);
                assert_eq!(d.fallbacks().len() + 1, d.scores.len());
            }
        }
    }
    let (a, _) = scenario(1, 12, 50);
    let (b, _) = scenario(2, 12, 50);
    assert_ne!(a, b, "different seeds differ (the test can fail)");
}

#[test]
fn decoder_refuses_bad_input_with_clear_errors() {
    let (ds, bytes) = scenario(5, 8, 40);
    let good = bytes
        .iter()
        .zip(&ds)
        .find(|(_, d)| d.primary.is_some_and(|p| p.0 != 0) && d.scores.len() > 1)
        .unwrap()
        .0
        .clone();
    assert_eq!(RouteDecision::decode(&[]), Err(DecodeError::Empty));
    let mut v = good.clone();
    v[0] = 9;
    assert_eq!(
        RouteDecision::decode(&v),
        Err(DecodeError::UnsupportedVersion(9))
    );
    assert!(matches!(
        RouteDecision::decode(&good[..good.len() - 1]),
        Err(DecodeError::Truncated {
            field: "score.score",
            ..
        })
    ));
    let mut v = good.clone();
    v.push(0);
    assert_eq!(
        RouteDecision::decode(&v),
        Err(DecodeError::TrailingBytes(1))
    );
    let mut v = good.clone();
    v[17] = 7; // mode
    assert_eq!(
        RouteDecision::decode(&v),
        Err(DecodeError::BadTag {
            field: "mode",
            value: 7
        })
    );
    let mut v = good.clone();
    v[19] = 3; // bucket: unhealthy is never a primary bucket
    assert_eq!(
        RouteDecision::decode(&v),
        Err(DecodeError::BadTag {
            field: "bucket",
            value: 3
        })
    );
    let mut v = good.clone();
    v[20] = 0; // no primary, but a nonzero id follows
    assert_eq!(
        RouteDecision::decode(&v),
        Err(DecodeError::NonCanonical("primary"))
    );
    let mut v = good.clone();
    v[27] ^= 0x80; // the first fallback no longer the chain's second cluster
    assert_eq!(
        RouteDecision::decode(&v),
        Err(DecodeError::NonCanonical("fallbacks"))
    );
    let mut v = vec![DECISION_VERSION];
    v.extend_from_slice(&[0; 24]);
    v.extend_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        RouteDecision::decode(&v),
        Err(DecodeError::TooMany {
            field: "fallbacks",
            count: 65_535,
            max: MAX_CLUSTERS
        })
    );
    assert!(alloc::format!("{}", DecodeError::TrailingBytes(3)).contains("3 trailing bytes"));
}

#[test]
fn fuzz_decoder_never_panics() {
    let (_, valid) = scenario(11, 16, 60);
    let mut rng = SplitMix64::new(0xF022);
    let mut accepted = 0;
    for i in 0..20_000u64 {
        let input: Vec<u8> = if i % 2 == 0 {
            // Random bytes, usually with the right version byte so parsing goes deep.
            let n = rng.below(200) as usize;
            let mut v: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            if !v.is_empty() && rng.chance_pct(90) {
                v[0] = DECISION_VERSION;
            }
            v
        } else {
            // A valid encoding, mutated: flips, truncation, extension.
            let mut v = rng.pick(&valid).unwrap().clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(3) {
                    0 if !v.is_empty() => {
                        let at = rng.below(v.len() as u64) as usize;
                        v[at] ^= 1 << rng.below(8);
                    }
                    1 => v.truncate(rng.below(v.len() as u64 + 1) as usize),
                    _ => v.push(rng.next_u64() as u8),
                }
            }
            v
        };
        if let Ok(d) = RouteDecision::decode(&input) {
            accepted += 1;
            assert_eq!(d.encode(), input, "accepted input is canonical");
            let _ = d.explain();
        }
    }
    assert!(
        accepted > 0,
        "some mutations stay valid (the fuzzer reaches the end)"
    );
}

/// The per-cluster distance memo and the values cached on heartbeats change no
/// decision: a router that routed from other gate coordinates in between, and saw a
/// new heartbeat, decides exactly as a fresh router with the same state.
#[test]
fn remembered_distances_change_no_decision() {
    let c = |i: u32| ClusterId(i);
    let hbs: Vec<Heartbeat> = (1..=6)
        .map(|i| {
            leader(
                c(i),
                Health::Healthy,
                10 * i,
                i,
                Some(at(i64::from(i) * 7_000)),
            )
        })
        .collect();
    let mut warm = router_with(&hbs, 0);
    for x in [0, 3_000, 40_000, 0, 11_000] {
        warm.route(1, &[], &at(x), 10);
    }
    let moved = leader(c(3), Health::Healthy, 90, 0, Some(at(1_000)));
    warm.on_heartbeat(&moved, 20).unwrap();
    for x in [5_000, 0] {
        warm.route(2, &[], &at(x), 30);
    }
    let mut all = hbs.clone();
    all[2] = moved;
    let mut fresh = Router::new(RouteConfig::DEFAULT);
    for hb in &hbs {
        fresh.on_heartbeat(hb, 0).unwrap();
    }
    fresh.on_heartbeat(&moved, 20).unwrap();
    for x in [0, 5_000, 22_000] {
        let a = warm.route(100 + x as u64, &[], &at(x), 40);
        let b = fresh.route(100 + x as u64, &[], &at(x), 40);
        assert_eq!(a.scores, b.scores, "gate at {x}");
        assert_eq!(a.primary, b.primary);
        assert_eq!(a.encode(), b.encode());
    }
    assert_eq!(warm.clusters().count(), all.len());
}
