//! Vivaldi network coordinates (AD-35 §12.1), in integer fixed point.
//!
//! Each node holds a coordinate — a 4-dimensional position and a height, in
//! microseconds of round-trip time, plus a relative error — and moves it after every RTT
//! sample against a peer so that the distance between two coordinates predicts their
//! RTT (Dabek, Cox, Kaashoek, Morris: "Vivaldi", SIGCOMM 2004, with the height-vector
//! model of §5.4: distance = ‖x_a − x_b‖ + h_a + h_b).
//!
//! **Arithmetic.** Everything is integer: positions and heights in `i64` microseconds,
//! ratios (errors, weights, gains) in parts per million ([`PPM`]), intermediate products in
//! `i128`/`u128`, truncating division, and the Euclidean norm through [`isqrt_round`] (the
//! exactly rounded integer square root). The seed's `float` values map one to one onto
//! these units (`1.0` → `1_000_000` ppm, `100.0` ms → `100_000` µs). Floating point was
//! rejected: `no_std` has no `f64::sqrt`, and libm's `pow`/`exp` are not correctly rounded,
//! so results could differ between platforms; integers are identical everywhere and in a
//! replay. A microsecond resolution is three orders of magnitude below the jitter of any
//! real RTT, so nothing is lost.
//!
//! **No randomness.** Two coincident coordinates need a direction to separate; Vivaldi
//! draws one at random. Here it is derived from (local id, peer id, sample count) by a
//! fixed mixing function: deterministic, yet different for different pairs.
//!
//! Invariants: every coordinate component and height stays within ±[`MAX_COORD_US`]
//! (height ≥ [`HEIGHT_MIN_US`]); the error stays within `[min_error, max_error]`; a peer
//! coordinate from the wire is validated before use ([`Coordinate::validate`]).

use alloc::collections::BTreeMap;

use crate::{NodeId, PPM, isqrt_round, mul_ppm};

/// Dimensions of the position vector (§12.1.1).
pub const DIMENSIONS: usize = 4;
/// Bound on each position component and on the height (100 s of RTT): keeps every square
/// sum of differences below `u64::MAX` (4 × (2 × 10⁸)² = 1.6 × 10¹⁷).
pub const MAX_COORD_US: i64 = 100_000_000;
/// Smallest height (Serf's 10 µs): a node always has some access-link latency.
pub const HEIGHT_MIN_US: i64 = 10;
/// Most peer coordinates one system remembers.
pub const MAX_PEERS: usize = 4_096;

/// A node's Vivaldi coordinate (§12.1.1). Serializable because a cluster member's own
/// coordinate enters the replicated state through its load heartbeat (a log entry).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Coordinate {
    pub position_us: [i64; DIMENSIONS],
    pub height_us: i64,
    /// Relative prediction error in ppm (lower is better).
    pub error_ppm: u64,
    pub sample_count: u32,
    pub updated_at_ms: u64,
}

impl Coordinate {
    /// The origin with the configured initial error.
    pub fn origin(cfg: &VivaldiConfig) -> Coordinate {
        Coordinate {
            position_us: [0; DIMENSIONS],
            height_us: HEIGHT_MIN_US,
            error_ppm: cfg.initial_error_ppm,
            sample_count: 0,
            updated_at_ms: 0,
        }
    }

    /// Checks a coordinate received from a peer.
    pub fn validate(&self, cfg: &VivaldiConfig) -> Result<(), VivaldiError> {
        if self
            .position_us
            .iter()
            .any(|c| c.unsigned_abs() > MAX_COORD_US as u64)
        {
            return Err(VivaldiError::BadCoordinate(
                "position component beyond ±100 s",
            ));
        }
        if !(HEIGHT_MIN_US..=MAX_COORD_US).contains(&self.height_us) {
            return Err(VivaldiError::BadCoordinate("height outside [10 µs, 100 s]"));
        }
        if !(cfg.min_error_ppm..=cfg.max_error_ppm).contains(&self.error_ppm) {
            return Err(VivaldiError::BadCoordinate(
                "error outside [min_error, max_error]",
            ));
        }
        Ok(())
    }
}

/// Version byte of a coordinate's wire form ([`Coordinate::encode`]).
pub const COORD_WIRE_VERSION: u8 = 1;
/// Bytes of a coordinate's wire form: version, 4 + 1 `i64`s, error `u64`, samples
/// `u32`, updated-at `u64`, all little-endian.
pub const COORD_WIRE_BYTES: usize = 1 + 8 * DIMENSIONS + 8 + 8 + 4 + 8;

impl Coordinate {
    /// The wire form a node piggy-backs on its transport pings and acks (fixed size,
    /// little-endian, versioned).
    pub fn encode(&self) -> [u8; COORD_WIRE_BYTES] {
        let mut out = [0u8; COORD_WIRE_BYTES];
        out[0] = COORD_WIRE_VERSION;
        let mut at = 1;
        let mut put = |b: &[u8]| {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        for c in self.position_us {
            put(&c.to_le_bytes());
        }
        put(&self.height_us.to_le_bytes());
        put(&self.error_ppm.to_le_bytes());
        put(&self.sample_count.to_le_bytes());
        put(&self.updated_at_ms.to_le_bytes());
        out
    }

    /// Parses and validates a peer's coordinate: exact length, known version, every
    /// field within the bounds [`Coordinate::validate`] checks. Never panics.
    pub fn decode(bytes: &[u8], cfg: &VivaldiConfig) -> Result<Coordinate, VivaldiError> {
        if bytes.len() != COORD_WIRE_BYTES {
            return Err(VivaldiError::BadCoordinate("wire form of the wrong length"));
        }
        if bytes[0] != COORD_WIRE_VERSION {
            return Err(VivaldiError::BadCoordinate("unknown wire version"));
        }
        let mut at = 1;
        let mut take = |n: usize| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&bytes[at..at + n]);
            at += n;
            b
        };
        let mut position_us = [0i64; DIMENSIONS];
        for c in position_us.iter_mut() {
            *c = i64::from_le_bytes(take(8));
        }
        let height_us = i64::from_le_bytes(take(8));
        let error_ppm = u64::from_le_bytes(take(8));
        let s = take(4);
        let sample_count = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let updated_at_ms = u64::from_le_bytes(take(8));
        let c = Coordinate {
            position_us,
            height_us,
            error_ppm,
            sample_count,
            updated_at_ms,
        };
        c.validate(cfg)?;
        Ok(c)
    }
}

/// Tuning of the coordinate system (§12.1.12, §12.9.1), in fixed-point units.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VivaldiConfig {
    pub initial_error_ppm: u64,
    pub min_error_ppm: u64,
    pub max_error_ppm: u64,
    /// `ce`: how fast the error estimate follows new samples.
    pub error_adjustment_ppm: u64,
    /// `cc`: how far one sample moves the coordinate.
    pub coordinate_adjustment_ppm: u64,
    /// Converged when the error is below this.
    pub convergence_threshold_ppm: u64,
    pub rtt_default_us: u64,
    pub rtt_min_us: u64,
    pub rtt_max_us: u64,
    pub sigma_default_us: u64,
    pub sigma_min_us: u64,
    pub sigma_max_us: u64,
    /// Upper confidence bound: `rtt + k_sigma × sigma`.
    pub k_sigma_ppm: u64,
    pub min_samples_for_routing: u32,
    /// A coordinate error (sigma) at or below this is "good" for quality.
    pub error_good_us: u64,
    /// A coordinate older than this loses quality.
    pub coord_ttl_ms: u64,
}

impl VivaldiConfig {
    /// The seed's defaults (§12.1.12), converted to fixed point.
    pub const DEFAULT: VivaldiConfig = VivaldiConfig {
        initial_error_ppm: PPM,
        min_error_ppm: 1_000,
        max_error_ppm: 1_500_000,
        error_adjustment_ppm: 250_000,
        coordinate_adjustment_ppm: 250_000,
        convergence_threshold_ppm: 150_000,
        rtt_default_us: 100_000,
        rtt_min_us: 1_000,
        rtt_max_us: 10_000_000,
        sigma_default_us: 50_000,
        sigma_min_us: 5_000,
        sigma_max_us: 500_000,
        k_sigma_ppm: 2 * PPM,
        min_samples_for_routing: 5,
        error_good_us: 20_000,
        coord_ttl_ms: 300_000,
    };

    pub fn validate(&self) -> Result<(), VivaldiError> {
        let ok = 0 < self.min_error_ppm
            && self.min_error_ppm <= self.initial_error_ppm
            && self.initial_error_ppm <= self.max_error_ppm
            && self.error_adjustment_ppm <= PPM
            && self.coordinate_adjustment_ppm <= PPM
            && 0 < self.rtt_min_us
            && self.rtt_min_us <= self.rtt_default_us
            && self.rtt_default_us <= self.rtt_max_us
            && self.rtt_max_us <= MAX_COORD_US as u64
            && self.sigma_min_us <= self.sigma_default_us
            && self.sigma_default_us <= self.sigma_max_us
            && self.min_samples_for_routing > 0
            && self.error_good_us > 0
            && self.coord_ttl_ms > 0;
        if ok {
            Ok(())
        } else {
            Err(VivaldiError::BadConfig)
        }
    }
}

impl Default for VivaldiConfig {
    fn default() -> Self {
        VivaldiConfig::DEFAULT
    }
}

/// A refused input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VivaldiError {
    BadConfig,
    BadCoordinate(&'static str),
    /// An RTT sample of zero or above `rtt_max`.
    RttOutOfRange(u64),
    /// The peer table is full (and the peer is new).
    TooManyPeers,
    /// A sample against ourselves.
    SelfSample,
}

/// Squared Euclidean distance of two positions (fits `u64` by the ±100 s bound).
#[inline]
fn position_diff(a: &Coordinate, b: &Coordinate) -> ([i64; DIMENSIONS], u64) {
    let mut d = [0i64; DIMENSIONS];
    let mut sq = 0u64;
    for ((di, pa), pb) in d.iter_mut().zip(a.position_us).zip(b.position_us) {
        *di = pa - pb;
        sq += di.unsigned_abs() * di.unsigned_abs();
    }
    (d, sq)
}

/// Predicted RTT between two coordinates (§12.1.2): ‖x_a − x_b‖ + h_a + h_b.
#[inline]
pub fn distance_us(a: &Coordinate, b: &Coordinate) -> u64 {
    let (_, sq) = position_diff(a, b);
    isqrt_round(sq) + a.height_us.max(0) as u64 + b.height_us.max(0) as u64
}

/// RTT estimate between two coordinates, clamped to `[rtt_min, rtt_max]`.
#[inline]
pub fn rtt_estimate_us(cfg: &VivaldiConfig, a: &Coordinate, b: &Coordinate) -> u64 {
    distance_us(a, b).clamp(cfg.rtt_min_us, cfg.rtt_max_us)
}

/// The uncertainty of an RTT estimate: the mean relative error of both ends times the
/// estimate, clamped to `[sigma_min, sigma_max]`; `sigma_default` for an unknown peer.
pub fn sigma_us(cfg: &VivaldiConfig, local: &Coordinate, remote: Option<&Coordinate>) -> u64 {
    estimate_and_sigma_us(cfg, local, remote).1
}

/// (RTT estimate, sigma) with one distance computation: `rtt_default` and
/// `sigma_default` for an unknown peer. [`sigma_us`] and [`rtt_ucb_us`] are built on it,
/// so a caller that needs several of them (the router, per cluster) gets the same bits
/// for a third of the square roots.
#[inline]
pub fn estimate_and_sigma_us(
    cfg: &VivaldiConfig,
    local: &Coordinate,
    remote: Option<&Coordinate>,
) -> (u64, u64) {
    let Some(r) = remote else {
        return (cfg.rtt_default_us, cfg.sigma_default_us);
    };
    let rtt = rtt_estimate_us(cfg, local, r);
    let rel = (local.error_ppm + r.error_ppm) / 2;
    (
        rtt,
        mul_ppm(rtt, rel).clamp(cfg.sigma_min_us, cfg.sigma_max_us),
    )
}

/// `rtt + k_sigma × sigma`, clamped to `[rtt_min, rtt_max]` (§12.1.7).
#[inline]
pub fn ucb_of_us(cfg: &VivaldiConfig, rtt_us: u64, sigma_us: u64) -> u64 {
    rtt_us
        .saturating_add(mul_ppm(sigma_us, cfg.k_sigma_ppm))
        .clamp(cfg.rtt_min_us, cfg.rtt_max_us)
}

/// Upper confidence bound of the RTT (§12.1.7): `rtt + k_sigma × sigma`, clamped to
/// `[rtt_min, rtt_max]`. An unknown peer gets `rtt_default + k_sigma × sigma_default`.
pub fn rtt_ucb_us(cfg: &VivaldiConfig, local: &Coordinate, remote: Option<&Coordinate>) -> u64 {
    let (rtt, sigma) = estimate_and_sigma_us(cfg, local, remote);
    ucb_of_us(cfg, rtt, sigma)
}

/// Quality of a coordinate for routing, 0..=[`PPM`] (§12.1.3): the product of a sample
/// quality (samples / `min_samples_for_routing`, capped at 1), an error quality
/// (`error_good / error`, capped at 1) and a staleness quality (`coord_ttl / staleness`
/// beyond the TTL, else 1).
#[inline]
pub fn coordinate_quality(
    cfg: &VivaldiConfig,
    sample_count: u32,
    error_us: u64,
    staleness_ms: u64,
) -> u64 {
    with_staleness(
        cfg,
        fresh_quality(cfg, sample_count, error_us),
        staleness_ms,
    )
}

/// [`coordinate_quality`] without its staleness part (the sample and error qualities'
/// product): it depends on the two coordinates only, so a router can keep it between
/// decisions.
#[inline]
pub fn fresh_quality(cfg: &VivaldiConfig, sample_count: u32, error_us: u64) -> u64 {
    let samples = (u64::from(sample_count) * PPM / u64::from(cfg.min_samples_for_routing)).min(PPM);
    let error = if error_us <= cfg.error_good_us {
        PPM
    } else {
        cfg.error_good_us * PPM / error_us
    };
    mul_ppm(samples, error)
}

/// A [`fresh_quality`] aged by `staleness_ms`: `coordinate_quality` exactly.
#[inline]
pub fn with_staleness(cfg: &VivaldiConfig, fresh: u64, staleness_ms: u64) -> u64 {
    let stale = if staleness_ms <= cfg.coord_ttl_ms {
        PPM
    } else {
        cfg.coord_ttl_ms * PPM / staleness_ms
    };
    mul_ppm(fresh, stale)
}

/// A deterministic direction for two coincident coordinates: four components in
/// [−1024, 1023] from the project's one generator (`xdv_types::rng::SplitMix64`)
/// seeded with the pair and the sample count: no randomness, the same on every node.
fn tie_direction(local: NodeId, peer: NodeId, samples: u32) -> [i64; DIMENSIONS] {
    let seed = (u64::from(local.0) << 32 | u64::from(peer.0)) ^ (u64::from(samples) << 17);
    let z = xdv_types::rng::SplitMix64::new(seed).next_u64();
    let mut d = [0i64; DIMENSIONS];
    for (i, c) in d.iter_mut().enumerate() {
        *c = ((z >> (16 * i)) & 0x7FF) as i64 - 1024;
    }
    if d == [0; DIMENSIONS] {
        d[0] = 1;
    }
    d
}

/// One Vivaldi step of `local` against `remote` with a measured `rtt_us` (already
/// clamped to `[rtt_min, rtt_max]`). Returns the sample's relative error in ppm.
pub fn vivaldi_step(
    cfg: &VivaldiConfig,
    local: &mut Coordinate,
    remote: &Coordinate,
    rtt_us: u64,
    tie: [i64; DIMENSIONS],
) -> u64 {
    let e_l = local.error_ppm.clamp(cfg.min_error_ppm, cfg.max_error_ppm);
    let e_r = remote.error_ppm.clamp(cfg.min_error_ppm, cfg.max_error_ppm);
    let w = e_l * PPM / (e_l + e_r);
    let dist = distance_us(local, remote);
    let sample_err = (dist.abs_diff(rtt_us) * PPM / rtt_us).min(cfg.max_error_ppm);
    let cew = mul_ppm(cfg.error_adjustment_ppm, w);
    let e_new = (u128::from(sample_err) * u128::from(cew)
        + u128::from(e_l) * u128::from(PPM - cew))
        / u128::from(PPM);
    local.error_ppm = (e_new as u64).clamp(cfg.min_error_ppm, cfg.max_error_ppm);
    // force = cc · w · (rtt − dist), signed microseconds.
    let delta = mul_ppm(cfg.coordinate_adjustment_ppm, w) as i128;
    let force = delta * (rtt_us as i128 - dist as i128) / PPM as i128;
    let (diff, sq) = position_diff(local, remote);
    let mag = isqrt_round(sq);
    if mag == 0 {
        let norm = isqrt_round(tie.iter().map(|c| (c * c) as u64).sum()) as i128;
        for (p, t) in local.position_us.iter_mut().zip(tie) {
            *p = clamp_coord(*p as i128 + force * t as i128 / norm);
        }
    } else {
        // Height-vector model: the unit vector is [x_l − x_r, h_l + h_r] / dist.
        let full = dist as i128;
        for (p, d) in local.position_us.iter_mut().zip(diff) {
            *p = clamp_coord(*p as i128 + force * d as i128 / full);
        }
        let hsum = (local.height_us + remote.height_us) as i128;
        local.height_us =
            clamp_coord(local.height_us as i128 + force * hsum / full).max(HEIGHT_MIN_US);
    }
    local.sample_count = local.sample_count.saturating_add(1);
    sample_err
}

fn clamp_coord(v: i128) -> i64 {
    v.clamp(-(MAX_COORD_US as i128), MAX_COORD_US as i128) as i64
}

/// What the system remembers of a peer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PeerCoordinate {
    pub coordinate: Coordinate,
    pub last_rtt_us: u64,
    pub updated_at_ms: u64,
}

/// Counters of §12.8.1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VivaldiMetrics {
    pub coordinate_updates: u64,
    pub samples_rejected: u64,
    pub last_prediction_error_ppm: u64,
    /// When the local error first fell below the convergence threshold.
    pub converged_at_ms: Option<u64>,
}

/// One node's coordinate system (§12.1.4): its own coordinate and its peers'.
#[derive(Clone, Debug)]
pub struct VivaldiSystem {
    cfg: VivaldiConfig,
    id: NodeId,
    local: Coordinate,
    peers: BTreeMap<NodeId, PeerCoordinate>,
    pub metrics: VivaldiMetrics,
}

impl VivaldiSystem {
    pub fn new(id: NodeId, cfg: VivaldiConfig) -> Result<VivaldiSystem, VivaldiError> {
        cfg.validate()?;
        Ok(VivaldiSystem {
            cfg,
            id,
            local: Coordinate::origin(&cfg),
            peers: BTreeMap::new(),
            metrics: VivaldiMetrics::default(),
        })
    }

    pub fn config(&self) -> &VivaldiConfig {
        &self.cfg
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// An RTT sample against `peer` whose coordinate (from its ping or ack) is
    /// `peer_coord` (§12.1.5). Returns the sample's relative prediction error in ppm.
    /// Samples below `rtt_min` count as `rtt_min`.
    pub fn update(
        &mut self,
        peer: NodeId,
        peer_coord: Coordinate,
        rtt_us: u64,
        now_ms: u64,
    ) -> Result<u64, VivaldiError> {
        let checked = self.check_sample(peer, &peer_coord, rtt_us);
        if let Err(e) = checked {
            self.metrics.samples_rejected += 1;
            return Err(e);
        }
        let rtt = rtt_us.max(self.cfg.rtt_min_us);
        let tie = tie_direction(self.id, peer, self.local.sample_count);
        let err = vivaldi_step(&self.cfg, &mut self.local, &peer_coord, rtt, tie);
        self.local.updated_at_ms = now_ms;
        let entry = PeerCoordinate {
            coordinate: peer_coord,
            last_rtt_us: rtt,
            updated_at_ms: now_ms,
        };
        self.peers.insert(peer, entry);
        self.metrics.coordinate_updates += 1;
        self.metrics.last_prediction_error_ppm = err;
        if self.metrics.converged_at_ms.is_none() && self.is_converged() {
            self.metrics.converged_at_ms = Some(now_ms);
        }
        Ok(err)
    }

    fn check_sample(
        &self,
        peer: NodeId,
        peer_coord: &Coordinate,
        rtt_us: u64,
    ) -> Result<(), VivaldiError> {
        if peer == self.id {
            return Err(VivaldiError::SelfSample);
        }
        if rtt_us == 0 || rtt_us > self.cfg.rtt_max_us {
            return Err(VivaldiError::RttOutOfRange(rtt_us));
        }
        peer_coord.validate(&self.cfg)?;
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            return Err(VivaldiError::TooManyPeers);
        }
        Ok(())
    }

    /// Forgets a peer (it left the membership).
    pub fn forget(&mut self, peer: NodeId) -> bool {
        self.peers.remove(&peer).is_some()
    }

    /// RTT estimate to `peer` (§12.1.6), `rtt_default` when unknown.
    pub fn estimate_rtt_us(&self, peer: NodeId) -> u64 {
        self.peer_coordinate(peer)
            .map_or(self.cfg.rtt_default_us, |c| {
                rtt_estimate_us(&self.cfg, &self.local, c)
            })
    }

    /// Upper confidence bound of the RTT to `peer` (§12.1.7).
    pub fn estimate_rtt_ucb_us(&self, peer: NodeId) -> u64 {
        rtt_ucb_us(&self.cfg, &self.local, self.peer_coordinate(peer))
    }

    /// Quality of what we know of `peer` at `now_ms` (§12.1.3), 0..=PPM.
    pub fn peer_quality(&self, peer: NodeId, now_ms: u64) -> u64 {
        let Some(p) = self.peers.get(&peer) else {
            return 0;
        };
        let sigma = sigma_us(&self.cfg, &self.local, Some(&p.coordinate));
        let samples = self.local.sample_count.min(p.coordinate.sample_count);
        coordinate_quality(
            &self.cfg,
            samples,
            sigma,
            now_ms.saturating_sub(p.updated_at_ms),
        )
    }

    pub fn local_coordinate(&self) -> &Coordinate {
        &self.local
    }

    pub fn peer_coordinate(&self, peer: NodeId) -> Option<&Coordinate> {
        self.peers.get(&peer).map(|p| &p.coordinate)
    }

    pub fn peer(&self, peer: NodeId) -> Option<&PeerCoordinate> {
        self.peers.get(&peer)
    }

    pub fn error_ppm(&self) -> u64 {
        self.local.error_ppm
    }

    /// `error < convergence_threshold` (§12.1.11).
    pub fn is_converged(&self) -> bool {
        self.local.error_ppm < self.cfg.convergence_threshold_ppm
    }
}
