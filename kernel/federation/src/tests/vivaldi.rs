//! §12.10.1–§12.10.4: Vivaldi coordinates.

use alloc::vec::Vec;
use xdv_types::rng::SplitMix64;

use crate::NodeId;
use crate::vivaldi::*;

/// A known topology: nodes on a plane (0..200 ms) with access heights (0.5..5 ms).
pub(crate) struct Topology {
    pub xy_us: Vec<(i64, i64)>,
    pub height_us: Vec<i64>,
}

impl Topology {
    pub(crate) fn new(n: usize, seed: u64) -> Topology {
        let mut rng = SplitMix64::new(seed);
        let xy_us = (0..n)
            .map(|_| (rng.below(200_000) as i64, rng.below(200_000) as i64))
            .collect();
        let height_us = (0..n).map(|_| 500 + rng.below(4_500) as i64).collect();
        Topology { xy_us, height_us }
    }

    pub(crate) fn rtt_us(&self, a: usize, b: usize) -> u64 {
        let (dx, dy) = (
            self.xy_us[a].0 - self.xy_us[b].0,
            self.xy_us[a].1 - self.xy_us[b].1,
        );
        crate::isqrt_round((dx * dx + dy * dy) as u64)
            + (self.height_us[a] + self.height_us[b]) as u64
    }
}

/// Every node samples one random peer per round (RTT with ±`jitter_pct` % noise).
pub(crate) fn simulate(
    topo: &Topology,
    rounds: u64,
    seed: u64,
    jitter_pct: u64,
) -> Vec<VivaldiSystem> {
    let n = topo.xy_us.len();
    let mut nodes: Vec<VivaldiSystem> = (0..n)
        .map(|i| VivaldiSystem::new(NodeId(i as u32), VivaldiConfig::DEFAULT).unwrap())
        .collect();
    let mut rng = SplitMix64::new(seed);
    for round in 0..rounds {
        for i in 0..n {
            let j = (i + 1 + rng.below(n as u64 - 1) as usize) % n;
            let base = topo.rtt_us(i, j);
            let jitter = if jitter_pct == 0 {
                0
            } else {
                rng.below(2 * jitter_pct + 1)
            };
            let rtt = base * (100 + jitter - jitter_pct) / 100;
            let peer = *nodes[j].local_coordinate();
            nodes[i]
                .update(NodeId(j as u32), peer, rtt.max(1), round * 1_000)
                .unwrap();
        }
    }
    nodes
}

/// Median relative prediction error (ppm) over all ordered pairs, from each node's own
/// coordinate and the other's current one.
pub(crate) fn median_error_ppm(topo: &Topology, nodes: &[VivaldiSystem]) -> u64 {
    let mut errs = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate().skip(i + 1) {
            let est = distance_us(a.local_coordinate(), b.local_coordinate());
            let truth = topo.rtt_us(i, j);
            errs.push(est.abs_diff(truth) * 1_000_000 / truth);
        }
    }
    errs.sort_unstable();
    errs[errs.len() / 2]
}

#[test]
fn t12_10_1_vivaldi_coordinate_convergence() {
    let topo = Topology::new(16, 1);
    let early = simulate(&topo, 3, 2, 0);
    assert!(
        early.iter().all(|n| !n.is_converged()),
        "three samples are not enough"
    );
    let nodes = simulate(&topo, 300, 2, 0);
    for n in &nodes {
        assert!(
            n.is_converged(),
            "node {:?} error {} ppm",
            n.id(),
            n.error_ppm()
        );
        assert!(n.metrics.converged_at_ms.is_some());
        assert_eq!(n.metrics.coordinate_updates, 300);
    }
    // Same inputs, same coordinates: bit for bit.
    let again = simulate(&topo, 300, 2, 0);
    for (a, b) in nodes.iter().zip(&again) {
        assert_eq!(a.local_coordinate(), b.local_coordinate());
    }
}

#[test]
fn t12_10_2_rtt_prediction_accuracy() {
    let topo = Topology::new(24, 7);
    let nodes = simulate(&topo, 400, 8, 5);
    let median = median_error_ppm(&topo, &nodes);
    assert!(
        median < 100_000,
        "median relative error {median} ppm (want < 10 %)"
    );
    // Each node's own estimate to a peer it has sampled agrees with the truth too.
    let (i, a) = (0, &nodes[0]);
    let sampled: Vec<NodeId> = (1..24u32)
        .map(NodeId)
        .filter(|p| a.peer(*p).is_some())
        .collect();
    assert!(!sampled.is_empty());
    for p in sampled {
        let truth = topo.rtt_us(i, p.0 as usize);
        let est = a.estimate_rtt_us(p);
        assert!(
            est.abs_diff(truth) * 100 / truth < 50,
            "peer {p:?}: est {est} truth {truth}"
        );
    }
}

#[test]
fn t12_10_3_coordinate_update_on_ping_ack() {
    let cfg = VivaldiConfig::DEFAULT;
    let mut a = VivaldiSystem::new(NodeId(1), cfg).unwrap();
    let remote = Coordinate {
        position_us: [40_000, 0, 0, 0],
        height_us: 1_000,
        error_ppm: 200_000,
        sample_count: 50,
        updated_at_ms: 0,
    };
    let before = a.estimate_rtt_us(NodeId(2));
    assert_eq!(before, cfg.rtt_default_us, "unknown peer: default RTT");
    let err = a.update(NodeId(2), remote, 30_000, 10).unwrap();
    assert!(err > 0);
    let c = *a.local_coordinate();
    assert_eq!((c.sample_count, c.updated_at_ms), (1, 10));
    assert_ne!(c.position_us, [0; 4], "the coordinate moved");
    assert!(
        c.error_ppm < cfg.initial_error_ppm,
        "a sample lowers the initial error"
    );
    assert_eq!(a.peer(NodeId(2)).unwrap().last_rtt_us, 30_000);
    let gap_before = distance_us(&Coordinate::origin(&cfg), &remote).abs_diff(30_000);
    let gap_after = a.estimate_rtt_us(NodeId(2)).abs_diff(30_000);
    assert!(
        gap_after < gap_before,
        "the prediction moved toward the sample ({gap_before} -> {gap_after})"
    );
    // Bad samples are refused and counted; the coordinate does not move.
    assert_eq!(
        a.update(NodeId(2), remote, 0, 11),
        Err(VivaldiError::RttOutOfRange(0))
    );
    assert_eq!(
        a.update(NodeId(2), remote, cfg.rtt_max_us + 1, 11),
        Err(VivaldiError::RttOutOfRange(cfg.rtt_max_us + 1))
    );
    assert_eq!(
        a.update(NodeId(1), remote, 5_000, 11),
        Err(VivaldiError::SelfSample)
    );
    let mut bad = remote;
    bad.position_us[3] = MAX_COORD_US + 1;
    assert!(matches!(
        a.update(NodeId(2), bad, 5_000, 11),
        Err(VivaldiError::BadCoordinate(_))
    ));
    bad = remote;
    bad.error_ppm = 0;
    assert!(matches!(
        a.update(NodeId(2), bad, 5_000, 11),
        Err(VivaldiError::BadCoordinate(_))
    ));
    assert_eq!(a.metrics.samples_rejected, 5);
    assert_eq!(*a.local_coordinate(), c);
    // Two coincident nodes separate deterministically.
    let mut x = VivaldiSystem::new(NodeId(3), cfg).unwrap();
    let origin = Coordinate::origin(&cfg);
    x.update(NodeId(4), origin, 20_000, 1).unwrap();
    let mut y = VivaldiSystem::new(NodeId(3), cfg).unwrap();
    y.update(NodeId(4), origin, 20_000, 1).unwrap();
    assert_eq!(x.local_coordinate(), y.local_coordinate());
    assert!(x.local_coordinate().position_us.iter().any(|&c| c != 0));
}

#[test]
fn t12_10_4_ucb_calculation_with_confidence() {
    let cfg = VivaldiConfig::DEFAULT;
    let mut local = Coordinate::origin(&cfg);
    local.error_ppm = 100_000;
    let mut remote = Coordinate {
        position_us: [30_000, 40_000, 0, 0],
        height_us: 10,
        error_ppm: 100_000,
        sample_count: 9,
        updated_at_ms: 0,
    };
    assert_eq!(distance_us(&local, &remote), 50_020);
    // sigma = 0.1 × 50.02 ms = 5.002 ms; ucb = rtt + 2 sigma.
    assert_eq!(sigma_us(&cfg, &local, Some(&remote)), 5_002);
    assert_eq!(rtt_ucb_us(&cfg, &local, Some(&remote)), 60_024);
    // Less confidence, wider bound.
    local.error_ppm = PPM_ONE;
    remote.error_ppm = PPM_ONE;
    assert_eq!(rtt_ucb_us(&cfg, &local, Some(&remote)), 150_060);
    // Unknown peer: default RTT plus k × default sigma.
    assert_eq!(rtt_ucb_us(&cfg, &local, None), 200_000);
    // Sigma floor and the RTT ceiling.
    local.error_ppm = 1_000;
    remote.error_ppm = 1_000;
    assert_eq!(sigma_us(&cfg, &local, Some(&remote)), cfg.sigma_min_us);
    remote.position_us = [9_000_000, 0, 0, 0];
    local.error_ppm = PPM_ONE;
    remote.error_ppm = PPM_ONE;
    assert_eq!(sigma_us(&cfg, &local, Some(&remote)), cfg.sigma_max_us);
    assert_eq!(rtt_ucb_us(&cfg, &local, Some(&remote)), cfg.rtt_max_us);
    // Quality: samples, error and staleness each pull it down.
    assert_eq!(coordinate_quality(&cfg, 5, 20_000, 0), PPM_ONE);
    assert_eq!(coordinate_quality(&cfg, 1, 20_000, 0), 200_000);
    assert_eq!(coordinate_quality(&cfg, 5, 40_000, 0), 500_000);
    assert_eq!(coordinate_quality(&cfg, 5, 20_000, 600_000), 500_000);
}

const PPM_ONE: u64 = crate::PPM;

/// The coordinate a node piggy-backs on its pings round-trips exactly, and a wrong
/// length, an unknown version or an out-of-bounds field is refused, never a panic.
#[test]
fn coordinate_wire_form_round_trips_and_refuses_bad_bytes() {
    let cfg = VivaldiConfig::DEFAULT;
    let mut a = VivaldiSystem::new(NodeId(1), cfg).unwrap();
    let b = VivaldiSystem::new(NodeId(2), cfg).unwrap();
    for t in 0..20 {
        a.update(NodeId(2), *b.local_coordinate(), 12_000, t)
            .unwrap();
    }
    let c = *a.local_coordinate();
    let bytes = c.encode();
    assert_eq!(Coordinate::decode(&bytes, &cfg), Ok(c));
    assert!(Coordinate::decode(&bytes[..bytes.len() - 1], &cfg).is_err());
    let mut v = bytes;
    v[0] = 9;
    assert!(Coordinate::decode(&v, &cfg).is_err());
    let mut far = c;
    far.position_us[0] = i64::MAX;
    assert!(Coordinate::decode(&far.encode(), &cfg).is_err());
    let mut rng = SplitMix64::new(5);
    for _ in 0..2000 {
        let mut m = bytes;
        let i = (rng.next_u64() as usize) % m.len();
        m[i] ^= 1 << (rng.next_u64() % 8);
        if let Ok(d) = Coordinate::decode(&m, &cfg) {
            assert_eq!(d.encode(), m, "accepted bytes are canonical");
        }
    }
}
