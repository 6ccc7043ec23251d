//! Wire and storage types: log entries, hard state, configuration, snapshots and
//! messages. Everything here derives serde so the kernel can encode it with postcard.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
pub use xdv_types::NodeId;

/// A Raft term.
pub type Term = u64;
/// A position in the replicated log; index 0 is the empty prefix.
pub type LogIndex = u64;

/// A single-server membership change, carried through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Add a non-voting member that receives the log.
    AddLearner(NodeId),
    /// Promote a caught-up learner to voter.
    PromoteLearner(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// An opaque application command.
    Normal(Vec<u8>),
    /// A membership change (takes effect as soon as it is in a log).
    ConfigChange(ConfChange),
    /// The entry every new leader appends to commit its term.
    Noop,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
}

/// State that must be durable before any message depending on it leaves the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: LogIndex,
}

/// The membership: sorted, disjoint voter and learner sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A configuration of the given voters (sorted, deduplicated).
    pub fn with_voters(voters: &[NodeId]) -> Self {
        let mut v = voters.to_vec();
        v.sort();
        v.dedup();
        ConfState {
            voters: v,
            learners: Vec::new(),
        }
    }
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }
    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
    /// Applies one change. Invalid changes (checked by the leader before proposing)
    /// leave the configuration unchanged.
    pub fn apply(&mut self, cc: &ConfChange) {
        match *cc {
            ConfChange::AddLearner(id) => {
                if !self.contains(id) {
                    insert_sorted(&mut self.learners, id);
                }
            }
            ConfChange::PromoteLearner(id) => {
                if let Ok(pos) = self.learners.binary_search(&id) {
                    self.learners.remove(pos);
                    insert_sorted(&mut self.voters, id);
                }
            }
            ConfChange::Remove(id) => {
                self.voters.retain(|v| *v != id);
                self.learners.retain(|v| *v != id);
            }
        }
    }
}

fn insert_sorted(v: &mut Vec<NodeId>, id: NodeId) {
    if let Err(pos) = v.binary_search(&id) {
        v.insert(pos, id);
    }
}

/// Where a snapshot ends and the membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub conf: ConfState,
}

/// An application state-machine image covering the log through `meta.index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Index of the bootstrap snapshot (see [`Snapshot::bootstrap`]).
pub const BOOTSTRAP_INDEX: LogIndex = 1;

impl Snapshot {
    /// The snapshot every bootstrap voter's storage starts with: index
    /// [`BOOTSTRAP_INDEX`], term 0, empty data, the initial voters. Nodes that join
    /// later start with empty storage (no snapshot, no configuration) and receive
    /// this or a later snapshot from the leader, so they learn the membership the
    /// log's configuration changes build on.
    pub fn bootstrap(voters: &[NodeId]) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: BOOTSTRAP_INDEX,
                term: 0,
                conf: ConfState::with_voters(voters),
            },
            data: Vec::new(),
        }
    }
}

/// A message between nodes. `term` is the sender's term, except in `PreVote` /
/// granted `PreVoteResp`, where it is the term the pre-candidate would stand in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    PreVote {
        last_index: LogIndex,
        last_term: Term,
    },
    PreVoteResp {
        granted: bool,
    },
    /// `transfer`: sent after TimeoutNow; bypasses the leader-lease check.
    Vote {
        last_index: LogIndex,
        last_term: Term,
        transfer: bool,
    },
    VoteResp {
        granted: bool,
    },
    Append {
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    },
    /// On success `index` is the last index the message verified; on rejection it is
    /// the rejected `prev_index` and the hint says where the follower's log diverges:
    /// `hint_term` is the follower's term at `prev_index` (None if its log is shorter)
    /// and `hint_index` the first index of that term (or its last index + 1).
    AppendResp {
        success: bool,
        index: LogIndex,
        hint_term: Option<Term>,
        hint_index: LogIndex,
    },
    Heartbeat {
        commit: LogIndex,
        read_seq: u64,
    },
    HeartbeatResp {
        read_seq: u64,
    },
    /// One chunk of a snapshot: `data` starts at byte `offset` of the `total_len` bytes.
    Snapshot {
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
    },
    /// `next_offset` is where the follower wants the next chunk (the resume point);
    /// `done` means the snapshot at `index` is installed (or already covered).
    SnapshotResp {
        index: LogIndex,
        next_offset: u64,
        done: bool,
    },
    /// Leadership transfer: start an election now.
    TimeoutNow,
}

/// A linearizable read point: once the state machine has applied `index`, a read
/// issued with `ctx` may be served locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: LogIndex,
}
