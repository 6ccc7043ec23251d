//! Placement (seed 000 §3.3): the state machine filters the members that may take a
//! task — up, offering the task's domain and every capability it needs, with spare
//! capacity, the pinned node if it names one — and hands the candidates, sorted by
//! node id, to a [`PlacementPolicy`]. The policy is a plug-in; whatever it returns must
//! be one of the candidates (asserted), and since every node runs the same policy over
//! the same replicated state, the same log gives the same placements everywhere.
//!
//! Which built-in policy runs is itself replicated ([`PlacementKind`], set by the
//! operator's `SetPlacementPolicy` entry), so a policy change takes effect at the same
//! log index on every node. [`Routed`] is seed 003's routing (§13) applied to the
//! members of one cluster: health bucket first, then `rtt_ucb × load_factor ×
//! quality_penalty` with `xdv_federation::route`'s fixed-point arithmetic.

use crate::types::TaskSpec;
use serde::{Deserialize, Serialize};
use xdv_federation::PPM;
use xdv_federation::route::{Health, RouteConfig, load_factor_of, quality_penalty_of};
use xdv_federation::vivaldi::{Coordinate, coordinate_quality, estimate_and_sigma_us, ucb_of_us};
use xdv_types::NodeId;

/// The built-in policies, as the replicated state names the one in force.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementKind {
    #[default]
    LeastLoaded,
    FirstFit,
    Routed,
}

impl PlacementKind {
    pub const ALL: [PlacementKind; 3] = [
        PlacementKind::LeastLoaded,
        PlacementKind::FirstFit,
        PlacementKind::Routed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlacementKind::LeastLoaded => LeastLoaded.name(),
            PlacementKind::FirstFit => FirstFit.name(),
            PlacementKind::Routed => ROUTED.name(),
        }
    }

    /// `least-loaded`, `first-fit` or `routed`.
    pub fn parse(s: &str) -> Option<PlacementKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The policy itself.
    pub fn policy(self) -> &'static (dyn PlacementPolicy + Send + Sync) {
        match self {
            PlacementKind::LeastLoaded => &LeastLoaded,
            PlacementKind::FirstFit => &FirstFit,
            PlacementKind::Routed => &ROUTED,
        }
    }
}

/// What a policy knows beyond the candidates: the coordinate of the node placements
/// are measured from — the cluster's leader as the log sees it (the node whose
/// `ClockTick`s the log carries: it proposes every placement, and it is the cluster's
/// manager in seed 003's vocabulary), from its latest load heartbeat.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementContext {
    pub origin: Option<Coordinate>,
}

/// One node that may take the task, as the policy sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    /// Tasks assigned to it and not completed, plus its reported local load.
    pub load: u32,
    /// Tasks it may hold at once (available cores × tasks per core).
    pub capacity: u32,
    /// Tasks it has been given in its lifetime (completed + assigned).
    pub lifetime: u64,
    /// 0 if it is the primary of the task's shard, 1 the secondary, 2 otherwise.
    pub shard_rank: u32,
    /// From its latest load heartbeat (all zero / `None` before the first one): tasks
    /// waiting in its run queues, its cores' busy share (ppm), its coordinate.
    pub queue_depth: u32,
    pub utilisation_ppm: u32,
    pub coordinate: Option<Coordinate>,
    /// Cluster milliseconds since that heartbeat; `None`: it never sent one.
    pub report_age_ms: Option<u64>,
}

/// A placement plug-in. Must be a pure function of its arguments.
pub trait PlacementPolicy {
    fn name(&self) -> &'static str;
    /// Picks one of `candidates` (never empty, sorted by node id) or `None` to refuse.
    fn place(
        &self,
        task: &TaskSpec,
        ctx: &PlacementContext,
        candidates: &[Candidate],
    ) -> Option<NodeId>;
}

/// The default: least relative load (`load / capacity`, compared exactly by cross
/// multiplication), then the fewest tasks given in its lifetime (so work submitted one
/// task at a time still spreads), then the shard's primary before its secondary before
/// others, then the lowest node id.
#[derive(Copy, Clone, Debug, Default)]
pub struct LeastLoaded;

impl PlacementPolicy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn place(
        &self,
        _task: &TaskSpec,
        _ctx: &PlacementContext,
        candidates: &[Candidate],
    ) -> Option<NodeId> {
        candidates
            .iter()
            .min_by(|a, b| {
                let la = u64::from(a.load) * u64::from(b.capacity);
                let lb = u64::from(b.load) * u64::from(a.capacity);
                la.cmp(&lb)
                    .then(a.lifetime.cmp(&b.lifetime))
                    .then(a.shard_rank.cmp(&b.shard_rank))
                    .then(a.node.cmp(&b.node))
            })
            .map(|c| c.node)
    }
}

/// Always the lowest node id with capacity: a second policy for tests and for operators
/// who want packing instead of spreading.
#[derive(Copy, Clone, Debug, Default)]
pub struct FirstFit;

impl PlacementPolicy for FirstFit {
    fn name(&self) -> &'static str {
        "first-fit"
    }

    fn place(
        &self,
        _task: &TaskSpec,
        _ctx: &PlacementContext,
        candidates: &[Candidate],
    ) -> Option<NodeId> {
        candidates.first().map(|c| c.node)
    }
}

/// A load heartbeat older than this (cluster time) no longer describes its node: the
/// node is DEGRADED. Nodes send one at least every 5 s (`Timing::load_report_ms`).
pub const ROUTED_STALE_MS: u64 = 15_000;
/// Utilisation at or above which a node is BUSY.
pub const ROUTED_BUSY_UTIL_PPM: u64 = 900_000;
/// Tasks waiting in a node's run queues at or above which it is DEGRADED (overloaded).
pub const ROUTED_OVERLOAD_QUEUE: u32 = 16;

/// The one `Routed` instance ([`PlacementKind::policy`]).
pub static ROUTED: Routed = Routed {
    cfg: RouteConfig::DEFAULT,
};

/// Seed 003's routing inside a cluster. Rules, in priority order:
/// 1. **Health bucket** (never UNHEALTHY: a node that is down or quarantined is not a
///    candidate at all): DEGRADED when its load heartbeat is missing or older than
///    [`ROUTED_STALE_MS`], at least [`ROUTED_OVERLOAD_QUEUE`] tasks wait in its run
///    queues, or its load factor is at the cap; BUSY when tasks wait in its
///    run queues or its utilisation is at least [`ROUTED_BUSY_UTIL_PPM`]; else HEALTHY.
///    The best non-empty bucket wins, whatever the scores.
/// 2. **Score** `rtt_ucb × load_factor × quality_penalty` (lower is better), with the
///    RTT from the leader's coordinate ([`PlacementContext::origin`]) to the
///    candidate's, and the load factor of §13.4.2 over the candidate's utilisation (the
///    larger of its reported one and its share of assigned tasks) and queue depth.
///    Without a usable leader coordinate (too few samples, too much error: §13.6
///    bootstrap) the score is the load factor alone.
/// 3. **Ties**: [`LeastLoaded`]'s order (relative load, lifetime, shard rank, node id).
#[derive(Copy, Clone, Debug)]
pub struct Routed {
    pub cfg: RouteConfig,
}

impl Default for Routed {
    fn default() -> Self {
        ROUTED
    }
}

impl Routed {
    /// (bucket, score) of one candidate; `origin` only when coordinate-aware.
    pub fn rank(&self, c: &Candidate, origin: Option<&Coordinate>) -> (Health, u64) {
        let (bucket, lf) = self.bucket(c);
        (bucket, self.score(c, lf, origin))
    }

    /// The candidate's health bucket and load factor (cheap: no distance).
    pub fn bucket(&self, c: &Candidate) -> (Health, u64) {
        let share = (u64::from(c.load) * PPM)
            .checked_div(u64::from(c.capacity))
            .unwrap_or(PPM);
        let util = share.max(u64::from(c.utilisation_ppm)).min(PPM);
        let lf = load_factor_of(&self.cfg, util, c.queue_depth, 0, PPM);
        let bucket = if c.report_age_ms.is_none_or(|a| a > ROUTED_STALE_MS)
            || c.queue_depth >= ROUTED_OVERLOAD_QUEUE
            || lf >= self.cfg.load_factor_max_ppm
        {
            Health::Degraded
        } else if c.queue_depth > 0 || util >= ROUTED_BUSY_UTIL_PPM {
            Health::Busy
        } else {
            Health::Healthy
        };
        (bucket, lf)
    }

    /// `rtt_ucb × load_factor × quality_penalty` from `origin`, or the load factor
    /// alone without one (bootstrap).
    fn score(&self, c: &Candidate, lf: u64, origin: Option<&Coordinate>) -> u64 {
        let v = &self.cfg.vivaldi;
        let age = c.report_age_ms;
        let Some(o) = origin else {
            return lf;
        };
        let remote = c.coordinate.as_ref();
        let (est, sigma) = estimate_and_sigma_us(v, o, remote);
        let rtt = ucb_of_us(v, est, sigma);
        let quality = remote.map_or(0, |r| {
            let samples = o.sample_count.min(r.sample_count);
            coordinate_quality(v, samples, sigma, age.unwrap_or(u64::MAX))
        });
        let qp = quality_penalty_of(&self.cfg, quality);
        xdv_federation::mul_ppm(xdv_federation::mul_ppm(rtt, lf), qp)
    }

    /// The origin coordinate if it is good enough to route by (§13.6.1).
    pub fn usable_origin<'a>(&self, ctx: &'a PlacementContext) -> Option<&'a Coordinate> {
        ctx.origin.as_ref().filter(|o| {
            o.sample_count >= self.cfg.vivaldi.min_samples_for_routing
                && o.error_ppm <= self.cfg.error_max_for_routing_ppm
        })
    }
}

impl PlacementPolicy for Routed {
    fn name(&self) -> &'static str {
        "routed"
    }

    fn place(
        &self,
        _task: &TaskSpec,
        ctx: &PlacementContext,
        candidates: &[Candidate],
    ) -> Option<NodeId> {
        let origin = self.usable_origin(ctx);
        // The bucket decides first and costs no distance: a candidate in a worse
        // bucket than the best so far is not scored (the same choice as ranking every
        // one, since the bucket is compared before the score).
        let mut best: Option<(&Candidate, (Health, u64))> = None;
        for c in candidates {
            let (bucket, lf) = self.bucket(c);
            if best.as_ref().is_some_and(|(_, (b, _))| bucket > *b) {
                continue;
            }
            let r = (bucket, self.score(c, lf, origin));
            debug_assert_eq!(r, self.rank(c, origin));
            let better = match &best {
                None => true,
                Some((b, br)) => r
                    .cmp(br)
                    .then_with(|| {
                        let la = u64::from(c.load) * u64::from(b.capacity);
                        let lb = u64::from(b.load) * u64::from(c.capacity);
                        la.cmp(&lb)
                            .then(c.lifetime.cmp(&b.lifetime))
                            .then(c.shard_rank.cmp(&b.shard_rank))
                            .then(c.node.cmp(&b.node))
                    })
                    .is_lt(),
            };
            if better {
                best = Some((c, r));
            }
        }
        best.map(|(c, _)| c.node)
    }
}
