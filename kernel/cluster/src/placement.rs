//! Placement (seed 000 §3.3): the state machine filters the members that may take a
//! task — up, offering the task's domain and every capability it needs, with spare
//! capacity, the pinned node if it names one — and hands the candidates, sorted by
//! node id, to a [`PlacementPolicy`]. The policy is a plug-in; whatever it returns must
//! be one of the candidates (asserted), and since every node runs the same policy over
//! the same replicated state, the same log gives the same placements everywhere.

use crate::types::TaskSpec;
use xdv_types::NodeId;

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
}

/// A placement plug-in. Must be a pure function of its arguments.
pub trait PlacementPolicy {
    fn name(&self) -> &'static str;
    /// Picks one of `candidates` (never empty, sorted by node id) or `None` to refuse.
    fn place(&self, task: &TaskSpec, candidates: &[Candidate]) -> Option<NodeId>;
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

    fn place(&self, _task: &TaskSpec, candidates: &[Candidate]) -> Option<NodeId> {
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

    fn place(&self, _task: &TaskSpec, candidates: &[Candidate]) -> Option<NodeId> {
        candidates.first().map(|c| c.node)
    }
}
