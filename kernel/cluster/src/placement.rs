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
//!
//! So that a `Routed` decision costs no distance, the state machine keeps each
//! member's [`RouteInputs`] (what changes only with its load heartbeat or the leader's
//! coordinate) in a `RouteCache`: derived from the replicated state, never
//! serialized nor hashed, and checked against a fresh rebuild in debug builds; the
//! policy reads them from [`Candidate::route`] and gets the same bits as computing
//! them afresh (asserted per candidate in debug builds).

use crate::types::TaskSpec;
use alloc::vec::Vec;
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
    /// [`Routed`]'s inputs for it that change only with its load heartbeat or the
    /// origin's coordinate, as the state machine keeps them per member
    /// ([`Routed::inputs`] of [`ROUTED`] from [`PlacementContext::origin`]); `None`:
    /// computed by the policy from `coordinate` (hand-built candidates).
    pub route: Option<RouteInputs>,
}

/// What [`Routed`] scores a member by that changes only with its load heartbeat or
/// the origin's coordinate: its RTT upper bound from the origin, its coordinate's
/// quality penalty while the report is younger than the Vivaldi TTL, and its load
/// factor at zero utilisation (the queue term). The state machine computes them when
/// the member's load heartbeat or the leader's coordinate changes, so a placement
/// costs no distance and no queue division. Computed per decision: what depends on
/// time (the staleness bucket; a coordinate older than the TTL, scored afresh) and on
/// the tasks assigned (the utilisation, which takes the node's share of them).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteInputs {
    /// `rtt_ucb` from the origin to the member's coordinate (the default RTT's bound
    /// without one); 0 without an origin.
    pub rtt_ucb_us: u64,
    /// `quality_penalty` of its coordinate at a report age within `coord_ttl_ms`
    /// (the worst penalty without a coordinate or an origin).
    pub fresh_penalty_ppm: u64,
    /// `load_factor_of` at zero utilisation for its reported queue depth. The load
    /// factor at utilisation `u` is `min(this + a_util × u, load_factor_max)`: its
    /// terms add, and a factor at the cap stays there ([`Routed::bucket`] checks it).
    pub idle_load_factor_ppm: u64,
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
    /// (bucket, score) of one candidate; `origin` only when coordinate-aware. Computed
    /// from the candidate's own fields, never from [`Candidate::route`].
    pub fn rank(&self, c: &Candidate, origin: Option<&Coordinate>) -> (Health, u64) {
        let (bucket, lf) = self.bucket(c);
        (bucket, self.score(c, lf, origin))
    }

    /// The [`RouteInputs`] of a member whose latest load heartbeat reported
    /// `queue_depth` and `coordinate`, from `origin` (the leader's coordinate, usable
    /// for routing or not).
    pub fn inputs(
        &self,
        origin: Option<&Coordinate>,
        coordinate: Option<&Coordinate>,
        queue_depth: u32,
    ) -> RouteInputs {
        let v = &self.cfg.vivaldi;
        let idle_load_factor_ppm = load_factor_of(&self.cfg, 0, queue_depth, 0, PPM);
        let Some(o) = origin else {
            return RouteInputs {
                rtt_ucb_us: 0,
                fresh_penalty_ppm: quality_penalty_of(&self.cfg, 0),
                idle_load_factor_ppm,
            };
        };
        let (est, sigma) = estimate_and_sigma_us(v, o, coordinate);
        let quality = coordinate.map_or(0, |r| {
            let samples = o.sample_count.min(r.sample_count);
            coordinate_quality(v, samples, sigma, 0)
        });
        RouteInputs {
            rtt_ucb_us: ucb_of_us(v, est, sigma),
            fresh_penalty_ppm: quality_penalty_of(&self.cfg, quality),
            idle_load_factor_ppm,
        }
    }

    /// The candidate's health bucket and load factor (cheap: no distance).
    pub fn bucket(&self, c: &Candidate) -> (Health, u64) {
        let share = (u64::from(c.load) * PPM)
            .checked_div(u64::from(c.capacity))
            .unwrap_or(PPM);
        let util = share.max(u64::from(c.utilisation_ppm)).min(PPM);
        let lf = load_factor_of(&self.cfg, util, c.queue_depth, 0, PPM);
        (self.health(c, util, lf), lf)
    }

    /// [`Self::bucket`] with the candidate's cached idle load factor, the same bits:
    /// no queue division, and no share division when the reported utilisation is at
    /// least the share of assigned tasks (the common case).
    fn bucket_cached(&self, c: &Candidate, inputs: &RouteInputs) -> (Health, u64) {
        let reported = u64::from(c.utilisation_ppm).min(PPM);
        let load_ppm = u64::from(c.load) * PPM;
        let capacity = u64::from(c.capacity);
        // floor(load·PPM / capacity) ≤ reported ⟺ load·PPM < (reported + 1)·capacity.
        let util = if capacity > 0 && load_ppm < (reported + 1) * capacity {
            reported
        } else {
            load_ppm
                .checked_div(capacity)
                .unwrap_or(PPM)
                .clamp(reported, PPM)
        };
        let lf = (inputs.idle_load_factor_ppm + xdv_federation::mul_ppm(self.cfg.a_util_ppm, util))
            .min(self.cfg.load_factor_max_ppm);
        let r = (self.health(c, util, lf), lf);
        debug_assert_eq!(r, self.bucket(c), "cached bucket of {}", c.node);
        r
    }

    /// Rule 1 over the candidate's utilisation and load factor.
    fn health(&self, c: &Candidate, util: u64, lf: u64) -> Health {
        if c.report_age_ms.is_none_or(|a| a > ROUTED_STALE_MS)
            || c.queue_depth >= ROUTED_OVERLOAD_QUEUE
            || lf >= self.cfg.load_factor_max_ppm
        {
            Health::Degraded
        } else if c.queue_depth > 0 || util >= ROUTED_BUSY_UTIL_PPM {
            Health::Busy
        } else {
            Health::Healthy
        }
    }

    /// [`Self::score`] from the candidate's cached inputs, the same bits: only a
    /// coordinate older than the Vivaldi TTL (its quality decays with age) is scored
    /// afresh.
    fn score_cached(
        &self,
        c: &Candidate,
        lf: u64,
        origin: Option<&Coordinate>,
        inputs: &RouteInputs,
    ) -> u64 {
        if origin.is_none() {
            return lf;
        }
        if c.report_age_ms
            .is_none_or(|a| a > self.cfg.vivaldi.coord_ttl_ms)
        {
            return self.score(c, lf, origin);
        }
        let s = xdv_federation::mul_ppm(
            xdv_federation::mul_ppm(inputs.rtt_ucb_us, lf),
            inputs.fresh_penalty_ppm,
        );
        debug_assert_eq!(s, self.score(c, lf, origin), "cached score of {}", c.node);
        s
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

    /// (bucket, score) from the candidate's cached inputs when it carries them (and
    /// this is [`ROUTED`]'s configuration, which the state machine's cache uses), else
    /// computed afresh — the same pair either way.
    fn rank_for_place(
        &self,
        c: &Candidate,
        ctx: &PlacementContext,
        origin: Option<&Coordinate>,
        best: Option<Health>,
    ) -> Option<(Health, u64)> {
        let cached = c.route.as_ref().filter(|_| self.cfg == ROUTED.cfg);
        let (bucket, lf) = match cached {
            Some(inputs) => {
                debug_assert_eq!(
                    *inputs,
                    self.inputs(ctx.origin.as_ref(), c.coordinate.as_ref(), c.queue_depth),
                    "the state machine's cached inputs of {}",
                    c.node
                );
                self.bucket_cached(c, inputs)
            }
            None => self.bucket(c),
        };
        // A candidate in a worse bucket than the best so far is not scored.
        if best.is_some_and(|b| bucket > b) {
            return None;
        }
        let score = match cached {
            Some(inputs) => self.score_cached(c, lf, origin, inputs),
            None => self.score(c, lf, origin),
        };
        debug_assert_eq!((bucket, score), self.rank(c, origin));
        Some((bucket, score))
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
            let Some(r) = self.rank_for_place(c, ctx, origin, best.map(|(_, (b, _))| b)) else {
                continue;
            };
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

/// [`RouteInputs`] of every member from the leader's coordinate, kept by the state
/// machine. Derived from the replicated state alone (the members' latest load
/// heartbeats and the leader the log names), so it is never serialized nor hashed
/// (like [`crate::hashed::HashedMap`]'s cache) and is rebuilt whenever the state is
/// replaced. Invariant: one entry per member, sorted by node id — candidates read it
/// in step with the member map, with no lookup — each equal to [`Routed::inputs`] of
/// [`ROUTED`] from `origin` (checked after every entry in debug builds).
/// What a member's latest load heartbeat reported that [`RouteInputs`] depend on:
/// its coordinate and queue depth (`None`, 0 before the first).
pub(crate) type Reported<'a> = (Option<&'a Coordinate>, u32);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RouteCache {
    origin: Option<Coordinate>,
    members: Vec<(NodeId, RouteInputs)>,
}

impl RouteCache {
    /// The cache of `members` (sorted by node id, each with the queue depth and
    /// coordinate of its latest load heartbeat) from `origin`.
    pub(crate) fn build<'a>(
        origin: Option<Coordinate>,
        members: impl Iterator<Item = (NodeId, Reported<'a>)>,
    ) -> RouteCache {
        let o = origin.as_ref();
        let members: Vec<(NodeId, RouteInputs)> = members
            .map(|(n, (c, q))| (n, ROUTED.inputs(o, c, q)))
            .collect();
        debug_assert!(members.windows(2).all(|w| w[0].0 < w[1].0));
        RouteCache { origin, members }
    }

    /// The leader's coordinate the inputs are measured from.
    pub(crate) fn origin(&self) -> Option<&Coordinate> {
        self.origin.as_ref()
    }

    /// Every member's inputs, sorted by node id.
    pub(crate) fn members(&self) -> &[(NodeId, RouteInputs)] {
        &self.members
    }

    pub(crate) fn get(&self, node: NodeId) -> Option<RouteInputs> {
        self.members
            .binary_search_by_key(&node, |(n, _)| *n)
            .ok()
            .map(|i| self.members[i].1)
    }

    /// `node` is a member whose latest load heartbeat reported `Some(..)`, or no
    /// longer a member (`None`). Same origin only: a new origin rebuilds the whole
    /// cache.
    pub(crate) fn set(&mut self, node: NodeId, member: Option<Reported<'_>>) {
        let at = self.members.binary_search_by_key(&node, |(n, _)| *n);
        match (member, at) {
            (Some((c, q)), Ok(i)) => self.members[i].1 = ROUTED.inputs(self.origin.as_ref(), c, q),
            (Some((c, q)), Err(i)) => {
                let inputs = ROUTED.inputs(self.origin.as_ref(), c, q);
                self.members.insert(i, (node, inputs));
            }
            (None, Ok(i)) => {
                self.members.remove(i);
            }
            (None, Err(_)) => {}
        }
    }
}
