//! Cross-cluster job routing at a gate (AD-36, seed §13).
//!
//! The [`Router`] holds what the gate knows of every cluster, fed only by heartbeats from
//! the clusters' managers ([`Router::on_heartbeat`]) and by dispatch outcomes, and turns
//! one routing request into a [`RouteDecision`]: a primary cluster, an ordered fallback
//! chain, every candidate's score components and the reason. Decisions encode to bytes
//! ([`RouteDecision::encode`] / [`RouteDecision::decode`]) and explain themselves as text
//! ([`RouteDecision::explain`]).
//!
//! Rules, in priority order:
//! 1. **Health first (AD-17).** Candidates are bucketed HEALTHY > BUSY > DEGRADED;
//!    UNHEALTHY clusters, clusters without a live manager and clusters whose live
//!    managers all have open circuits are excluded; a cluster whose heartbeat is stale is
//!    demoted to DEGRADED (soft demotion, §13.2.3). The primary always comes from the best
//!    non-empty bucket and the chain lists buckets in order, so no score can ever put a
//!    worse bucket ahead of a better one.
//! 2. **Score within a bucket (§13.4):** `rtt_ucb × load_factor × quality_penalty`, lower
//!    is better; × `preference_mult` for a preferred cluster in the primary bucket; ×
//!    `cooldown_penalty` for a cluster that failed a dispatch in the last `cooldown_ms`.
//!    Without a usable local coordinate (too few samples or too much error) the router
//!    is in bootstrap mode (§13.6): the RTT factor is left out.
//! 3. **Hysteresis (§13.5)** per routing context: a primary is kept unless it left the
//!    primary bucket, is cooling down after a failure (both are safety, so they apply even
//!    during the hold-down), or — after the hold-down — another is better by the
//!    improvement ratio, or its own score stayed degraded by the degrade ratio for the
//!    confirmation period.
//!
//! All arithmetic is integer (see `vivaldi` for the units); ties break by cluster id.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::vivaldi::{
    Coordinate, VivaldiConfig, coordinate_quality, estimate_and_sigma_us, fresh_quality,
    rtt_ucb_us, sigma_us, ucb_of_us, with_staleness,
};
use crate::{ClusterId, JobId, NodeId, PPM, mul_ppm};

/// Most clusters a router knows (and most candidates in a decision).
pub const MAX_CLUSTERS: usize = 1_024;
/// Most managers per cluster.
pub const MAX_MANAGERS_PER_CLUSTER: usize = 64;
/// Most routing contexts with hysteresis state.
pub const MAX_ROUTE_CONTEXTS: usize = 4_096;
/// Most (cluster, job) manager stickiness entries.
pub const MAX_STICKY_JOBS: usize = 65_536;
/// Version byte of the decision encoding.
pub const DECISION_VERSION: u8 = 1;

/// A cluster's health bucket (AD-17). The order is the routing order.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Health {
    Healthy,
    Busy,
    Degraded,
    Unhealthy,
}

impl Health {
    fn tag(self) -> u8 {
        self as u8
    }

    fn from_tag(t: u8) -> Option<Health> {
        [
            Health::Healthy,
            Health::Busy,
            Health::Degraded,
            Health::Unhealthy,
        ]
        .get(usize::from(t))
        .copied()
    }

    pub fn name(self) -> &'static str {
        ["healthy", "busy", "degraded", "unhealthy"][self as usize]
    }
}

/// A manager's circuit breaker state, as the gate sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Circuit {
    Closed,
    HalfOpen,
    Open,
}

/// Scoring and hysteresis constants (§13.4.6, §13.5.6, §13.12), fixed point.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteConfig {
    pub a_util_ppm: u64,
    pub a_queue_ppm: u64,
    pub a_cb_ppm: u64,
    pub a_quality_ppm: u64,
    /// Queue depth at which the queue term is one half.
    pub queue_smoothing: u64,
    pub load_factor_max_ppm: u64,
    pub quality_penalty_max_ppm: u64,
    pub preference_mult_ppm: u64,
    pub hold_down_ms: u64,
    pub improvement_ratio_ppm: u64,
    pub degrade_ratio_ppm: u64,
    pub degrade_confirm_ms: u64,
    pub cooldown_ms: u64,
    /// Score multiplier of a cluster cooling down (not in the seed: 4× keeps it behind
    /// any healthy peer of similar score, yet ahead of nothing in a worse bucket).
    pub cooldown_penalty_ppm: u64,
    /// A cluster heartbeat older than this demotes the cluster to DEGRADED.
    pub cluster_stale_ms: u64,
    /// A manager heartbeat older than this excludes the manager.
    pub manager_stale_ms: u64,
    /// Coordinate-aware routing needs the local error at or below this (relative, ppm).
    pub error_max_for_routing_ppm: u64,
    pub vivaldi: VivaldiConfig,
}

impl RouteConfig {
    pub const DEFAULT: RouteConfig = RouteConfig {
        a_util_ppm: 2 * PPM,
        a_queue_ppm: PPM,
        a_cb_ppm: 3 * PPM,
        a_quality_ppm: 500_000,
        queue_smoothing: 10,
        load_factor_max_ppm: 5 * PPM,
        quality_penalty_max_ppm: 2 * PPM,
        preference_mult_ppm: 800_000,
        hold_down_ms: 30_000,
        improvement_ratio_ppm: 800_000,
        degrade_ratio_ppm: 1_500_000,
        degrade_confirm_ms: 60_000,
        cooldown_ms: 120_000,
        cooldown_penalty_ppm: 4 * PPM,
        cluster_stale_ms: 30_000,
        manager_stale_ms: 30_000,
        error_max_for_routing_ppm: 500_000,
        vivaldi: VivaldiConfig::DEFAULT,
    };
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig::DEFAULT
    }
}

/// One manager of a cluster (§13.1.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManagerRouting {
    pub circuit: Circuit,
    pub available_cores: u32,
    pub queue_depth: u32,
    pub coordinate: Option<Coordinate>,
    pub last_heartbeat_ms: u64,
}

/// One cluster (§13.1.1). Cluster-wide fields come from its leader's heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterRouting {
    pub health: Health,
    pub available_cores: u32,
    pub total_cores: u32,
    pub queue_depth: u32,
    /// The leader's load multiplier (LHM), ppm; ≥ 1 scales the load factor.
    pub load_multiplier_ppm: u64,
    pub managers: BTreeMap<NodeId, ManagerRouting>,
    pub leader: Option<NodeId>,
    pub leader_coordinate: Option<Coordinate>,
    pub coordinate_updated_at_ms: u64,
    pub heartbeat_updated_at_ms: u64,
    /// Derived from the fields above on every heartbeat (the only input that changes
    /// them), so a decision reads them instead of recomputing per cluster: the load
    /// factor ([`Router::load_factor_ppm`]) and the newest heartbeat of a manager whose
    /// circuit is not open (a cluster with none live is excluded).
    cached_load_factor_ppm: u64,
    newest_usable_manager_ms: Option<u64>,
    /// The last [`Distance`] (RTT upper bound and the quality's fresh part) computed
    /// against the leader's coordinate: a gate routes many requests between two moves
    /// of its coordinate, and the square root and divisions are the costliest steps. The epoch
    /// ([`Router`]'s `local_memo`) names the local coordinate, so a decision compares
    /// that coordinate once, not once per cluster. Cleared by every heartbeat. A pure
    /// memo: the same inputs give the same bits with or without it.
    #[serde(skip)]
    distance_memo: DistanceMemo,
}

/// [`ClusterRouting::distance_memo`]: a cache, so not part of a cluster's equality.
#[derive(Clone, Debug, Default)]
struct DistanceMemo(core::cell::Cell<Option<Distance>>);

/// What a decision needs of one cluster's coordinate against the local one (the
/// staleness part of the quality is applied per decision: it moves with the clock).
#[derive(Copy, Clone, Debug)]
struct Distance {
    /// The local coordinate's epoch these were computed for.
    epoch: u64,
    rtt_ucb_us: u64,
    /// [`fresh_quality`]; `None` without a leader coordinate (quality 0).
    fresh_quality_ppm: Option<u64>,
}

impl PartialEq for DistanceMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DistanceMemo {}

/// The local coordinate of the last decision and its epoch (counting from 1, one more
/// each time the coordinate changes): what [`ClusterRouting::distance_memo`] entries
/// are keyed by. A cache, so not part of the router's equality nor its encoding.
#[derive(Clone, Debug, Default)]
struct LocalMemo {
    local: Option<Coordinate>,
    epoch: u64,
}

impl PartialEq for LocalMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LocalMemo {}

/// A manager's heartbeat as the gate receives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    pub cluster: ClusterId,
    pub manager: NodeId,
    /// The cluster's Raft leader speaks for the cluster.
    pub is_leader: bool,
    pub health: Health,
    pub available_cores: u32,
    pub total_cores: u32,
    pub queue_depth: u32,
    pub load_multiplier_ppm: u64,
    pub circuit: Circuit,
    pub coordinate: Option<Coordinate>,
}

/// A refused routing input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    Full {
        what: &'static str,
        max: usize,
    },
    /// `available_cores > total_cores`.
    BadCores {
        available: u32,
        total: u32,
    },
    BadCoordinate(&'static str),
    UnknownCluster(ClusterId),
}

/// Why the primary is what it is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// First decision for this context.
    Initial,
    /// The current primary is still the best.
    Best,
    /// Kept: inside the hold-down period.
    HoldDown,
    /// Kept: no candidate is better by the improvement ratio.
    Sticky,
    /// Switched: a candidate is better by the improvement ratio.
    Improvement,
    /// Switched: the current primary stayed degraded for the confirmation period.
    Degraded,
    /// Switched: the current primary is excluded.
    CurrentExcluded,
    /// Switched: the current primary fell to a worse bucket.
    BucketChange,
    /// Switched: the current primary failed a dispatch and is cooling down.
    Cooldown,
    /// No eligible cluster at all.
    NoCandidates,
}

const REASONS: [Reason; 10] = [
    Reason::Initial,
    Reason::Best,
    Reason::HoldDown,
    Reason::Sticky,
    Reason::Improvement,
    Reason::Degraded,
    Reason::CurrentExcluded,
    Reason::BucketChange,
    Reason::Cooldown,
    Reason::NoCandidates,
];

impl Reason {
    fn tag(self) -> u8 {
        REASONS.iter().position(|r| *r == self).unwrap_or(0) as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Best => "best",
            Reason::HoldDown => "hold-down",
            Reason::Sticky => "sticky",
            Reason::Improvement => "improvement",
            Reason::Degraded => "degraded",
            Reason::CurrentExcluded => "current-excluded",
            Reason::BucketChange => "bucket-change",
            Reason::Cooldown => "cooldown",
            Reason::NoCandidates => "no-candidates",
        }
    }
}

/// How the scores were computed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `rtt_ucb × load × quality`.
    Coordinates,
    /// No usable local coordinate: `load` only (§13.6).
    Bootstrap,
}

/// One candidate's score and its components.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ScoreLine {
    pub cluster: ClusterId,
    pub bucket: Health,
    /// 0 in bootstrap mode.
    pub rtt_ucb_us: u64,
    pub load_factor_ppm: u64,
    pub quality_penalty_ppm: u64,
    pub preferred: bool,
    pub cooldown: bool,
    /// Lower is better. Coordinates mode: microseconds; bootstrap mode: ppm of load.
    pub score: u64,
}

/// A routing decision (§13.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDecision {
    pub context: u64,
    pub at_ms: u64,
    pub mode: Mode,
    pub reason: Reason,
    /// The primary bucket; `None` when no cluster is eligible.
    pub bucket: Option<Health>,
    pub primary: Option<ClusterId>,
    /// Every candidate, in chain order (sorted by bucket, score, id).
    pub scores: Vec<ScoreLine>,
}

/// Hysteresis state of one routing context (§13.5.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hysteresis {
    pub current: ClusterId,
    pub selected_at_ms: u64,
    pub score_at_selection: u64,
    pub degraded_since_ms: Option<u64>,
}

/// Counters of §13.11.1.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteMetrics {
    pub decisions: u64,
    pub switches: u64,
    pub hold_down_blocks: u64,
    pub dispatch_failures: u64,
    pub no_candidates: u64,
}

/// The gate's routing state (§13.9.1). Serializable and comparable because a gate
/// group replicates it (its state machine is the router): the encoding holds every
/// input-derived field, including the per-cluster caches (pure functions of the
/// rest), and leaves out only the distance memo.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Router {
    cfg: RouteConfig,
    clusters: BTreeMap<ClusterId, ClusterRouting>,
    hysteresis: BTreeMap<u64, Hysteresis>,
    cooldowns: BTreeMap<ClusterId, u64>,
    sticky_managers: BTreeMap<(ClusterId, JobId), NodeId>,
    pub metrics: RouteMetrics,
    #[serde(skip)]
    local_memo: LocalMemo,
}

impl Router {
    pub fn new(cfg: RouteConfig) -> Router {
        Router {
            cfg,
            clusters: BTreeMap::new(),
            hysteresis: BTreeMap::new(),
            cooldowns: BTreeMap::new(),
            sticky_managers: BTreeMap::new(),
            metrics: RouteMetrics::default(),
            local_memo: LocalMemo::default(),
        }
    }

    pub fn config(&self) -> &RouteConfig {
        &self.cfg
    }

    pub fn cluster(&self, id: ClusterId) -> Option<&ClusterRouting> {
        self.clusters.get(&id)
    }

    /// Every known cluster, in id order.
    pub fn clusters(&self) -> impl Iterator<Item = (ClusterId, &ClusterRouting)> {
        self.clusters.iter().map(|(&id, c)| (id, c))
    }

    pub fn hysteresis(&self, context: u64) -> Option<&Hysteresis> {
        self.hysteresis.get(&context)
    }

    /// A manager's heartbeat (§13.9.3, §13.10.4).
    pub fn on_heartbeat(&mut self, hb: &Heartbeat, now_ms: u64) -> Result<(), RouteError> {
        if hb.available_cores > hb.total_cores {
            return Err(RouteError::BadCores {
                available: hb.available_cores,
                total: hb.total_cores,
            });
        }
        if let Some(c) = &hb.coordinate {
            c.validate(&self.cfg.vivaldi).map_err(|e| match e {
                crate::vivaldi::VivaldiError::BadCoordinate(s) => RouteError::BadCoordinate(s),
                _ => RouteError::BadCoordinate("invalid coordinate"),
            })?;
        }
        if !self.clusters.contains_key(&hb.cluster) && self.clusters.len() >= MAX_CLUSTERS {
            return Err(RouteError::Full {
                what: "clusters",
                max: MAX_CLUSTERS,
            });
        }
        let cfg = self.cfg;
        let c = self
            .clusters
            .entry(hb.cluster)
            .or_insert_with(|| ClusterRouting {
                health: Health::Unhealthy,
                available_cores: 0,
                total_cores: 0,
                queue_depth: 0,
                load_multiplier_ppm: PPM,
                managers: BTreeMap::new(),
                leader: None,
                leader_coordinate: None,
                coordinate_updated_at_ms: 0,
                heartbeat_updated_at_ms: now_ms,
                cached_load_factor_ppm: PPM,
                newest_usable_manager_ms: None,
                distance_memo: DistanceMemo::default(),
            });
        if !c.managers.contains_key(&hb.manager) && c.managers.len() >= MAX_MANAGERS_PER_CLUSTER {
            return Err(RouteError::Full {
                what: "managers of a cluster",
                max: MAX_MANAGERS_PER_CLUSTER,
            });
        }
        let m = ManagerRouting {
            circuit: hb.circuit,
            available_cores: hb.available_cores,
            queue_depth: hb.queue_depth,
            coordinate: hb.coordinate,
            last_heartbeat_ms: now_ms,
        };
        c.managers.insert(hb.manager, m);
        if hb.is_leader {
            c.health = hb.health;
            c.available_cores = hb.available_cores;
            c.total_cores = hb.total_cores;
            c.queue_depth = hb.queue_depth;
            c.load_multiplier_ppm = hb.load_multiplier_ppm;
            c.leader = Some(hb.manager);
            c.heartbeat_updated_at_ms = now_ms;
            if hb.coordinate.is_some() {
                c.leader_coordinate = hb.coordinate;
                c.coordinate_updated_at_ms = now_ms;
            }
        }
        c.newest_usable_manager_ms = c
            .managers
            .values()
            .filter(|m| m.circuit != Circuit::Open)
            .map(|m| m.last_heartbeat_ms)
            .max();
        c.cached_load_factor_ppm = load_factor(&cfg, c);
        c.distance_memo.0.set(None);
        Ok(())
    }

    /// A dispatch to `cluster` failed (§13.9.4): it cools down for `cooldown_ms`.
    pub fn record_dispatch_failure(
        &mut self,
        cluster: ClusterId,
        now_ms: u64,
    ) -> Result<(), RouteError> {
        if !self.clusters.contains_key(&cluster) {
            return Err(RouteError::UnknownCluster(cluster));
        }
        self.cooldowns
            .insert(cluster, now_ms.saturating_add(self.cfg.cooldown_ms));
        self.metrics.dispatch_failures += 1;
        Ok(())
    }

    /// A dispatch to `cluster` succeeded (§13.9.5): any cooldown ends.
    pub fn record_dispatch_success(&mut self, cluster: ClusterId) {
        self.cooldowns.remove(&cluster);
    }

    /// Whether `cluster` is cooling down at `now_ms` (§13.5.4).
    pub fn in_cooldown(&self, cluster: ClusterId, now_ms: u64) -> bool {
        self.cooldowns
            .get(&cluster)
            .is_some_and(|&until| now_ms < until)
    }

    /// Coordinate-aware mode (§13.6.1): enough samples and a small enough error.
    pub fn coordinate_aware(&self, local: &Coordinate) -> bool {
        local.sample_count >= self.cfg.vivaldi.min_samples_for_routing
            && local.error_ppm <= self.cfg.error_max_for_routing_ppm
    }

    /// The cluster's bucket after filtering and soft demotion (§13.2), or `None` when
    /// excluded.
    pub fn bucket_of(&self, c: &ClusterRouting, now_ms: u64) -> Option<Health> {
        if c.health == Health::Unhealthy {
            return None;
        }
        // Excluded when no live manager has a usable circuit: liveness only grows with
        // the heartbeat time, so looking at the newest usable one decides it.
        let usable = c.newest_usable_manager_ms?;
        if now_ms.saturating_sub(usable) > self.cfg.manager_stale_ms {
            return None;
        }
        if now_ms.saturating_sub(c.heartbeat_updated_at_ms) > self.cfg.cluster_stale_ms {
            return Some(c.health.max(Health::Degraded));
        }
        Some(c.health)
    }

    fn manager_live(&self, m: &ManagerRouting, now_ms: u64) -> bool {
        now_ms.saturating_sub(m.last_heartbeat_ms) <= self.cfg.manager_stale_ms
    }

    /// `1 + a_util·util + a_queue·queue + a_cb·cb`, times the leader's load multiplier
    /// (when above 1), capped at `load_factor_max` (§13.4.2).
    pub fn load_factor_ppm(&self, c: &ClusterRouting) -> u64 {
        load_factor(&self.cfg, c)
    }

    /// `1 + a_quality·(1 − quality)`, capped (§13.4.3). No coordinate: quality 0.
    pub fn quality_penalty_ppm(
        &self,
        local: &Coordinate,
        remote: Option<&Coordinate>,
        updated_at_ms: u64,
        now_ms: u64,
    ) -> u64 {
        let v = &self.cfg.vivaldi;
        let quality = remote.map_or(0, |r| {
            let samples = local.sample_count.min(r.sample_count);
            coordinate_quality(
                v,
                samples,
                sigma_us(v, local, Some(r)),
                now_ms.saturating_sub(updated_at_ms),
            )
        });
        self.penalty_of(quality)
    }

    fn penalty_of(&self, quality_ppm: u64) -> u64 {
        quality_penalty_of(&self.cfg, quality_ppm)
    }

    fn score_line(
        &self,
        id: ClusterId,
        c: &ClusterRouting,
        bucket: Health,
        (local, epoch): (&Coordinate, u64),
        mode: Mode,
        now_ms: u64,
    ) -> ScoreLine {
        let load = c.cached_load_factor_ppm;
        debug_assert_eq!(load, self.load_factor_ppm(c));
        let cooldown = !self.cooldowns.is_empty() && self.in_cooldown(id, now_ms);
        let (rtt, qp, base) = match mode {
            Mode::Coordinates => {
                // One distance per cluster for the UCB and the quality's sigma (the
                // same bits as `rtt_ucb_us` and `quality_penalty_ppm`).
                let v = &self.cfg.vivaldi;
                let remote = c.leader_coordinate.as_ref();
                let (rtt, fresh) = match c.distance_memo.0.get() {
                    Some(m) if m.epoch == epoch => (m.rtt_ucb_us, m.fresh_quality_ppm),
                    _ => {
                        let (est, sigma) = estimate_and_sigma_us(v, local, remote);
                        let m = Distance {
                            epoch,
                            rtt_ucb_us: ucb_of_us(v, est, sigma),
                            fresh_quality_ppm: remote.map(|r| {
                                fresh_quality(v, local.sample_count.min(r.sample_count), sigma)
                            }),
                        };
                        c.distance_memo.0.set(Some(m));
                        (m.rtt_ucb_us, m.fresh_quality_ppm)
                    }
                };
                let stale = now_ms.saturating_sub(c.coordinate_updated_at_ms);
                let qp = self.penalty_of(fresh.map_or(0, |q| with_staleness(v, q, stale)));
                debug_assert_eq!(rtt, rtt_ucb_us(v, local, remote));
                debug_assert_eq!(
                    qp,
                    self.quality_penalty_ppm(local, remote, c.coordinate_updated_at_ms, now_ms)
                );
                (rtt, qp, mul_ppm(mul_ppm(rtt, load), qp))
            }
            Mode::Bootstrap => (0, PPM, load),
        };
        let score = if cooldown {
            mul_ppm(base, self.cfg.cooldown_penalty_ppm)
        } else {
            base
        };
        ScoreLine {
            cluster: id,
            bucket,
            rtt_ucb_us: rtt,
            load_factor_ppm: load,
            quality_penalty_ppm: qp,
            preferred: false,
            cooldown,
            score,
        }
    }

    /// Routes one request of routing context `context` (a tenant, a job class, or a job)
    /// from this gate, whose own coordinate is `local` (§13.9.2).
    pub fn route(
        &mut self,
        context: u64,
        preferred: &[ClusterId],
        local: &Coordinate,
        now_ms: u64,
    ) -> RouteDecision {
        let mode = if self.coordinate_aware(local) {
            Mode::Coordinates
        } else {
            Mode::Bootstrap
        };
        if self.local_memo.local != Some(*local) {
            self.local_memo = LocalMemo {
                local: Some(*local),
                epoch: self.local_memo.epoch + 1,
            };
        }
        let epoch = self.local_memo.epoch;
        let mut scores: Vec<ScoreLine> = Vec::with_capacity(self.clusters.len());
        for (&id, c) in &self.clusters {
            if let Some(bucket) = self.bucket_of(c, now_ms) {
                scores.push(self.score_line(id, c, bucket, (local, epoch), mode, now_ms));
            }
        }
        let bucket = scores.iter().map(|s| s.bucket).min();
        if let Some(b) = bucket {
            for s in scores
                .iter_mut()
                .filter(|s| s.bucket == b && preferred.contains(&s.cluster))
            {
                s.preferred = true;
                s.score = mul_ppm(s.score, self.cfg.preference_mult_ppm);
            }
        }
        // One u128 compare per step instead of a three-level tuple compare: bucket,
        // score, cluster packed in that order give the same (total) order, the cluster
        // id making every key distinct.
        scores.sort_unstable_by_key(|s| {
            (u128::from(s.bucket.tag()) << 96)
                | (u128::from(s.score) << 32)
                | u128::from(s.cluster.0)
        });
        debug_assert!(
            scores
                .windows(2)
                .all(|w| (w[0].bucket, w[0].score, w[0].cluster)
                    < (w[1].bucket, w[1].score, w[1].cluster))
        );
        self.metrics.decisions += 1;
        let (primary, reason) = match scores.first() {
            None => {
                self.metrics.no_candidates += 1;
                (None, Reason::NoCandidates)
            }
            Some(best) => {
                let (p, r) = self.apply_hysteresis(context, *best, &scores, now_ms);
                (Some(p), r)
            }
        };
        RouteDecision {
            context,
            at_ms: now_ms,
            mode,
            reason,
            bucket,
            primary,
            scores,
        }
    }

    /// §13.5.2, with the safety checks (exclusion, bucket drop, cooldown) ahead of the
    /// hold-down so that stickiness can never route to an excluded or worse cluster.
    fn apply_hysteresis(
        &mut self,
        context: u64,
        best: ScoreLine,
        scores: &[ScoreLine],
        now_ms: u64,
    ) -> (ClusterId, Reason) {
        let cfg = self.cfg;
        let Some(h) = self.hysteresis.get(&context).copied() else {
            self.select(context, best, now_ms, false);
            return (best.cluster, Reason::Initial);
        };
        let switch = |me: &mut Router, why: Reason| {
            me.select(context, best, now_ms, true);
            (best.cluster, why)
        };
        let Some(cur) = scores.iter().find(|s| s.cluster == h.current) else {
            return switch(self, Reason::CurrentExcluded);
        };
        if cur.bucket != best.bucket {
            return switch(self, Reason::BucketChange);
        }
        if cur.cooldown && !best.cooldown {
            return switch(self, Reason::Cooldown);
        }
        if cur.cluster == best.cluster {
            self.set_degraded(context, None);
            return (cur.cluster, Reason::Best);
        }
        if now_ms.saturating_sub(h.selected_at_ms) < cfg.hold_down_ms {
            self.metrics.hold_down_blocks += 1;
            return (cur.cluster, Reason::HoldDown);
        }
        if cur.score >= mul_ppm(h.score_at_selection, cfg.degrade_ratio_ppm) {
            let since = h.degraded_since_ms.unwrap_or(now_ms);
            if now_ms - since >= cfg.degrade_confirm_ms {
                return switch(self, Reason::Degraded);
            }
            self.set_degraded(context, Some(since));
        } else {
            self.set_degraded(context, None);
        }
        if best.score <= mul_ppm(cur.score, cfg.improvement_ratio_ppm) {
            return switch(self, Reason::Improvement);
        }
        (cur.cluster, Reason::Sticky)
    }

    fn set_degraded(&mut self, context: u64, since: Option<u64>) {
        if let Some(h) = self.hysteresis.get_mut(&context) {
            h.degraded_since_ms = since;
        }
    }

    /// Records `best` as the context's primary. With the table full a new context is
    /// routed but not remembered (it starts fresh next time).
    fn select(&mut self, context: u64, best: ScoreLine, now_ms: u64, switched: bool) {
        if switched {
            self.metrics.switches += 1;
        }
        if !self.hysteresis.contains_key(&context) && self.hysteresis.len() >= MAX_ROUTE_CONTEXTS {
            return;
        }
        let h = Hysteresis {
            current: best.cluster,
            selected_at_ms: now_ms,
            score_at_selection: best.score,
            degraded_since_ms: None,
        };
        self.hysteresis.insert(context, h);
    }

    /// Forgets a routing context's hysteresis.
    pub fn forget_context(&mut self, context: u64) -> bool {
        self.hysteresis.remove(&context).is_some()
    }

    /// The manager of `cluster` to send `job` to (§13.8): live managers with a closed or
    /// half-open circuit, by `rtt_ucb × manager load × quality penalty`, sticky per job
    /// while the chosen one stays eligible.
    pub fn select_manager(
        &mut self,
        cluster: ClusterId,
        job: JobId,
        local: &Coordinate,
        now_ms: u64,
    ) -> Option<NodeId> {
        let c = self.clusters.get(&cluster)?;
        let eligible =
            |m: &ManagerRouting| m.circuit != Circuit::Open && self.manager_live(m, now_ms);
        if let Some(&id) = self.sticky_managers.get(&(cluster, job))
            && c.managers.get(&id).is_some_and(eligible)
        {
            return Some(id);
        }
        let best = c
            .managers
            .iter()
            .filter(|(_, m)| eligible(m))
            .map(|(&id, m)| (self.manager_score(m, local, now_ms), id))
            .min()
            .map(|(_, id)| id)?;
        if self.sticky_managers.len() >= MAX_STICKY_JOBS
            && !self.sticky_managers.contains_key(&(cluster, job))
        {
            self.sticky_managers.pop_first();
        }
        self.sticky_managers.insert((cluster, job), best);
        Some(best)
    }

    /// Every eligible manager of `cluster` (live, circuit not open), best first by the
    /// §13.8 score (ties by node id): what a gate tries in turn when the one it sent a
    /// job to does not answer. Unlike [`Router::select_manager`] it changes nothing, so
    /// a gate leader can rank from the replicated router without touching it.
    pub fn rank_managers(
        &self,
        cluster: ClusterId,
        local: &Coordinate,
        now_ms: u64,
    ) -> Vec<NodeId> {
        let Some(c) = self.clusters.get(&cluster) else {
            return Vec::new();
        };
        let mut ranked: Vec<(u64, NodeId)> = c
            .managers
            .iter()
            .filter(|(_, m)| m.circuit != Circuit::Open && self.manager_live(m, now_ms))
            .map(|(&id, m)| (self.manager_score(m, local, now_ms), id))
            .collect();
        ranked.sort_unstable();
        ranked.into_iter().map(|(_, id)| id).collect()
    }

    /// A manager's score (§13.8.2).
    pub fn manager_score(&self, m: &ManagerRouting, local: &Coordinate, now_ms: u64) -> u64 {
        let cfg = &self.cfg;
        let q = u64::from(m.queue_depth);
        let mut load = PPM + mul_ppm(cfg.a_queue_ppm, q * PPM / (q + cfg.queue_smoothing.max(1)));
        if m.available_cores == 0 {
            load += cfg.a_util_ppm;
        }
        if m.circuit == Circuit::HalfOpen {
            load += cfg.a_cb_ppm / 2;
        }
        let load = load.min(cfg.load_factor_max_ppm);
        let rtt = rtt_ucb_us(&cfg.vivaldi, local, m.coordinate.as_ref());
        let qp =
            self.quality_penalty_ppm(local, m.coordinate.as_ref(), m.last_heartbeat_ms, now_ms);
        mul_ppm(mul_ppm(rtt, load), qp)
    }

    /// Forgets the manager stickiness of a finished job.
    pub fn forget_job(&mut self, job: JobId) {
        self.sticky_managers.retain(|(_, j), _| *j != job);
    }
}

/// A decision's bytes could not be decoded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    UnsupportedVersion(u8),
    Truncated {
        field: &'static str,
        offset: usize,
    },
    BadTag {
        field: &'static str,
        value: u8,
    },
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
    /// A field that must be zero (no primary, reserved flag bits) was not.
    NonCanonical(&'static str),
    TrailingBytes(usize),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty route decision"),
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "route decision version {v} (this build reads {DECISION_VERSION})"
            ),
            DecodeError::Truncated { field, offset } => {
                write!(f, "route decision truncated in `{field}` at byte {offset}")
            }
            DecodeError::BadTag { field, value } => {
                write!(f, "route decision: bad `{field}` tag {value}")
            }
            DecodeError::TooMany { field, count, max } => {
                write!(f, "route decision: {count} {field} (at most {max})")
            }
            DecodeError::NonCanonical(field) => {
                write!(f, "route decision: non-canonical `{field}`")
            }
            DecodeError::TrailingBytes(n) => write!(f, "route decision: {n} trailing bytes"),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or(DecodeError::Truncated {
            field,
            offset: self.at,
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, field)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, field)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let n = usize::from(self.u16(field)?);
        if n > MAX_CLUSTERS {
            return Err(DecodeError::TooMany {
                field,
                count: n,
                max: MAX_CLUSTERS,
            });
        }
        Ok(n)
    }
    fn bucket(&mut self, field: &'static str) -> Result<Health, DecodeError> {
        let t = self.u8(field)?;
        Health::from_tag(t)
            .filter(|h| *h != Health::Unhealthy)
            .ok_or(DecodeError::BadTag { field, value: t })
    }
}

const NO_BUCKET: u8 = 0xFF;

impl RouteDecision {
    /// The rest of the chain (§13.7): every candidate but the primary, in chain order
    /// (the primary bucket by score, then worse buckets).
    pub fn fallbacks(&self) -> Vec<ClusterId> {
        self.rest().collect()
    }

    fn rest(&self) -> impl Iterator<Item = ClusterId> + '_ {
        self.scores
            .iter()
            .map(|s| s.cluster)
            .filter(|c| Some(*c) != self.primary)
    }

    /// The canonical encoding (little endian):
    /// `version u8 · context u64 · at_ms u64 · mode u8 · reason u8 · bucket u8 (0xFF none) ·
    /// has_primary u8 · primary u32 (0 when none) · n u16 · n × cluster u32 ·
    /// m u16 · m × (cluster u32 · bucket u8 · rtt_ucb_us u64 · load_ppm u64 ·
    /// quality_penalty_ppm u64 · flags u8 (1 preferred, 2 cooldown) · score u64)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + 46 * self.scores.len());
        v.push(DECISION_VERSION);
        v.extend_from_slice(&self.context.to_le_bytes());
        v.extend_from_slice(&self.at_ms.to_le_bytes());
        v.push(match self.mode {
            Mode::Coordinates => 0,
            Mode::Bootstrap => 1,
        });
        v.push(self.reason.tag());
        v.push(self.bucket.map_or(NO_BUCKET, Health::tag));
        v.push(u8::from(self.primary.is_some()));
        v.extend_from_slice(&self.primary.map_or(0, |c| c.0).to_le_bytes());
        let n = self.rest().count().min(MAX_CLUSTERS);
        v.extend_from_slice(&(n as u16).to_le_bytes());
        for c in self.rest().take(n) {
            v.extend_from_slice(&c.0.to_le_bytes());
        }
        let m = self.scores.len().min(MAX_CLUSTERS);
        v.extend_from_slice(&(m as u16).to_le_bytes());
        for s in &self.scores[..m] {
            v.extend_from_slice(&s.cluster.0.to_le_bytes());
            v.push(s.bucket.tag());
            v.extend_from_slice(&s.rtt_ucb_us.to_le_bytes());
            v.extend_from_slice(&s.load_factor_ppm.to_le_bytes());
            v.extend_from_slice(&s.quality_penalty_ppm.to_le_bytes());
            v.push(u8::from(s.preferred) | u8::from(s.cooldown) << 1);
            v.extend_from_slice(&s.score.to_le_bytes());
        }
        v
    }

    /// Decodes [`RouteDecision::encode`]'s output; refuses anything else with a reason.
    /// Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<RouteDecision, DecodeError> {
        let mut r = Reader { b: bytes, at: 0 };
        let version = *bytes.first().ok_or(DecodeError::Empty)?;
        if version != DECISION_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        r.at = 1;
        let context = r.u64("context")?;
        let at_ms = r.u64("at_ms")?;
        let mode = match r.u8("mode")? {
            0 => Mode::Coordinates,
            1 => Mode::Bootstrap,
            t => {
                return Err(DecodeError::BadTag {
                    field: "mode",
                    value: t,
                });
            }
        };
        let t = r.u8("reason")?;
        let reason = *REASONS.get(usize::from(t)).ok_or(DecodeError::BadTag {
            field: "reason",
            value: t,
        })?;
        let bucket = match r.u8("bucket")? {
            NO_BUCKET => None,
            t => Some(
                Health::from_tag(t)
                    .filter(|h| *h != Health::Unhealthy)
                    .ok_or(DecodeError::BadTag {
                        field: "bucket",
                        value: t,
                    })?,
            ),
        };
        let has_primary = r.u8("has_primary")?;
        let raw = r.u32("primary")?;
        let primary = match has_primary {
            0 if raw == 0 => None,
            0 => return Err(DecodeError::NonCanonical("primary")),
            1 => Some(ClusterId(raw)),
            t => {
                return Err(DecodeError::BadTag {
                    field: "has_primary",
                    value: t,
                });
            }
        };
        let n = r.count("fallbacks")?;
        let mut fallbacks = Vec::with_capacity(n);
        for _ in 0..n {
            fallbacks.push(ClusterId(r.u32("fallback")?));
        }
        let m = r.count("scores")?;
        let mut scores = Vec::with_capacity(m);
        for _ in 0..m {
            scores.push(Self::decode_line(&mut r)?);
        }
        if r.at != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.at));
        }
        let d = RouteDecision {
            context,
            at_ms,
            mode,
            reason,
            bucket,
            primary,
            scores,
        };
        // The chain is written twice (fallbacks, then with the scores): they must agree.
        if !d.rest().eq(fallbacks.iter().copied()) {
            return Err(DecodeError::NonCanonical("fallbacks"));
        }
        Ok(d)
    }

    fn decode_line(r: &mut Reader<'_>) -> Result<ScoreLine, DecodeError> {
        let cluster = ClusterId(r.u32("score.cluster")?);
        let bucket = r.bucket("score.bucket")?;
        let rtt_ucb_us = r.u64("score.rtt_ucb_us")?;
        let load_factor_ppm = r.u64("score.load_factor_ppm")?;
        let quality_penalty_ppm = r.u64("score.quality_penalty_ppm")?;
        let flags = r.u8("score.flags")?;
        if flags & !3 != 0 {
            return Err(DecodeError::NonCanonical("score.flags"));
        }
        let score = r.u64("score.score")?;
        let (preferred, cooldown) = (flags & 1 != 0, flags & 2 != 0);
        Ok(ScoreLine {
            cluster,
            bucket,
            rtt_ucb_us,
            load_factor_ppm,
            quality_penalty_ppm,
            preferred,
            cooldown,
            score,
        })
    }

    /// The next cluster of the chain not in `failed` (§13.7.2).
    pub fn next_fallback(&self, failed: &[ClusterId]) -> Option<ClusterId> {
        self.primary
            .into_iter()
            .chain(self.rest())
            .find(|c| !failed.contains(c))
    }

    /// A human-readable account of the decision, for `cargo xdv route explain`.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let mode = match self.mode {
            Mode::Coordinates => "coordinates: score = rtt_ucb x load x quality",
            Mode::Bootstrap => "bootstrap (no usable local coordinate): score = load",
        };
        let _ = writeln!(
            s,
            "route decision for context {} at {} ms ({mode})",
            self.context, self.at_ms
        );
        match (self.primary, self.bucket) {
            (Some(p), Some(b)) => {
                let _ = writeln!(
                    s,
                    "primary: {p} (bucket {}, reason: {})",
                    b.name(),
                    self.reason.name()
                );
            }
            _ => {
                let _ = writeln!(s, "primary: none (reason: {})", self.reason.name());
            }
        }
        let chain: Vec<String> = self.rest().map(|c| alloc::format!("{c}")).collect();
        let _ = writeln!(
            s,
            "fallbacks: {}",
            if chain.is_empty() {
                String::from("none")
            } else {
                chain.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "{:<8} {:<9} {:>12} {:>7} {:>8} {:>14} flags",
            "cluster", "bucket", "rtt_ucb_ms", "load", "quality", "score"
        );
        for l in &self.scores {
            let mut flags = String::new();
            if l.preferred {
                flags.push_str("preferred ");
            }
            if l.cooldown {
                flags.push_str("cooldown ");
            }
            if Some(l.cluster) == self.primary {
                flags.push_str("PRIMARY");
            }
            let _ = writeln!(
                s,
                "{:<8} {:<9} {:>12} {:>7} {:>8} {:>14} {}",
                alloc::format!("{}", l.cluster),
                l.bucket.name(),
                fixed(l.rtt_ucb_us, 1_000),
                fixed(l.load_factor_ppm, PPM),
                fixed(l.quality_penalty_ppm, PPM),
                l.score,
                flags.trim_end()
            );
        }
        s
    }
}

/// `v / unit` with three decimals, from integers only.
fn fixed(v: u64, unit: u64) -> String {
    let milli = u128::from(v) * 1000 / u128::from(unit);
    alloc::format!("{}.{:03}", milli / 1000, milli % 1000)
}

/// `1 + a_util·util + a_queue·queue + a_cb·cb`, times the leader's load multiplier
/// (when above 1), capped at `load_factor_max` (§13.4.2).
fn load_factor(cfg: &RouteConfig, c: &ClusterRouting) -> u64 {
    let free = if c.total_cores == 0 {
        0
    } else {
        (u64::from(c.available_cores) * PPM / u64::from(c.total_cores)).min(PPM)
    };
    let total = c.managers.len() as u64;
    let open = c
        .managers
        .values()
        .filter(|m| m.circuit == Circuit::Open)
        .count() as u64;
    let cb = (open * PPM).checked_div(total).unwrap_or(PPM);
    load_factor_of(cfg, PPM - free, c.queue_depth, cb, c.load_multiplier_ppm)
}

/// The load factor of §13.4.2 from its parts: utilisation and circuit-breaker share in
/// ppm (each capped at 1), queue depth, load multiplier in ppm. The router's per-cluster
/// factor and a cluster's `Routed` placement policy (per node) both use it.
#[inline]
pub fn load_factor_of(
    cfg: &RouteConfig,
    util_ppm: u64,
    queue_depth: u32,
    cb_ppm: u64,
    load_multiplier_ppm: u64,
) -> u64 {
    let q = u64::from(queue_depth);
    let queue = q * PPM / (q + cfg.queue_smoothing.max(1));
    let lf = PPM
        + mul_ppm(cfg.a_util_ppm, util_ppm.min(PPM))
        + mul_ppm(cfg.a_queue_ppm, queue)
        + mul_ppm(cfg.a_cb_ppm, cb_ppm.min(PPM));
    mul_ppm(lf, load_multiplier_ppm.max(PPM)).min(cfg.load_factor_max_ppm)
}

/// `1 + a_quality·(1 − quality)`, capped at `quality_penalty_max` (§13.4.3).
#[inline]
pub fn quality_penalty_of(cfg: &RouteConfig, quality_ppm: u64) -> u64 {
    (PPM + mul_ppm(cfg.a_quality_ppm, PPM - quality_ppm.min(PPM))).min(cfg.quality_penalty_max_ppm)
}
