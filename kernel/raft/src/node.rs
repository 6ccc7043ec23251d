//! The Raft state machine: sans-IO, deterministic, driven by `tick`, `step`,
//! `propose`, `read_index` and drained through `ready` / `advance`.
//!
//! Invariants asserted here (on in release builds too):
//! - a committed entry is never truncated (`truncate_from > commit`);
//! - the commit index never decreases and never exceeds the last index;
//! - a leader only counts entries of its own term towards commit directly.

use crate::config::{Config, ConfigError, MAX_SNAPSHOT_BYTES};
use crate::storage::{Storage, StorageError};
use crate::types::*;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt;

/// The role a node plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Why a proposal or request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts requests; `leader_hint` is the leader this node knows.
    NotLeader { leader_hint: Option<NodeId> },
    /// A leadership transfer is under way.
    TransferInProgress,
    /// The leader has not yet committed an entry of its term (reads, conf changes).
    NotReady,
    /// Another membership change is not yet committed.
    ConfChangePending,
    /// The membership change does not apply to the current configuration.
    InvalidConfChange,
    /// The learner to promote is not replicating within one append message of the
    /// commit index.
    LearnerNotCaughtUp,
    /// The read queue is full.
    TooManyReads,
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader {
                leader_hint: Some(l),
            } => write!(f, "not the leader (leader is {l})"),
            ProposeError::NotLeader { leader_hint: None } => {
                write!(f, "not the leader (leader unknown)")
            }
            ProposeError::TransferInProgress => write!(f, "leadership transfer in progress"),
            ProposeError::NotReady => {
                write!(f, "leader has not committed an entry of its term yet")
            }
            ProposeError::ConfChangePending => {
                write!(f, "a membership change is still uncommitted")
            }
            ProposeError::InvalidConfChange => write!(f, "membership change does not apply"),
            ProposeError::LearnerNotCaughtUp => write!(f, "learner has not caught up"),
            ProposeError::TooManyReads => write!(f, "too many pending reads"),
        }
    }
}

/// Most read-index requests a leader queues.
pub const MAX_PENDING_READS: usize = 4096;

/// A snapshot of the node's externally visible state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub last_index: LogIndex,
    pub conf: ConfState,
}

/// What durable writes the batch in this `Ready` depended on (already performed
/// through [`Storage`] before `ready()` returned; reported for audit/metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub hard_state: Option<HardState>,
    /// Log entries written since the previous ready: `(first, last)` index.
    pub entries: Option<(LogIndex, LogIndex)>,
    /// Index of a snapshot installed since the previous ready.
    pub snapshot_index: Option<LogIndex>,
}

/// Everything the caller must act on, in this order: (1) restore `snapshot` into
/// the state machine if present, (2) send `messages`, (3) apply `committed`,
/// (4) serve `read_states` once applied ≥ their index, then call `advance()`.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    pub persisted: Persisted,
    pub messages: Vec<Message>,
    pub snapshot: Option<Snapshot>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressState {
    Probe,
    Replicate,
    Snapshot {
        index: LogIndex,
        offset: u64,
        acked: bool,
    },
}

#[derive(Clone, Debug)]
struct Progress {
    matched: LogIndex,
    next: LogIndex,
    state: ProgressState,
    probe_sent: bool,
    inflight: VecDeque<LogIndex>,
    sent_commit: LogIndex,
    recent_active: bool,
    read_ack: u64,
}

impl Progress {
    fn new(next: LogIndex) -> Self {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            sent_commit: 0,
            recent_active: true,
            read_ack: 0,
        }
    }
    fn become_probe(&mut self, next: LogIndex) {
        self.state = ProgressState::Probe;
        self.next = next;
        self.probe_sent = false;
        self.inflight.clear();
    }
}

#[derive(Clone, Debug)]
struct PendingRead {
    ctx: u64,
    index: LogIndex,
    seq: u64,
}

#[derive(Clone, Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_len: u64,
    data: Vec<u8>,
}

/// One Raft participant. See the crate docs for the calling contract.
#[derive(Clone, Debug)]
pub struct RaftNode<S: Storage> {
    id: NodeId,
    cfg: Config,
    storage: S,
    term: Term,
    vote: Option<NodeId>,
    commit: LogIndex,
    /// Highest index handed out by `ready()`.
    handed: LogIndex,
    /// Highest index acknowledged by `advance()`.
    applied: LogIndex,
    role: Role,
    leader: Option<NodeId>,
    conf: ConfState,
    /// Membership after each conf-change entry above the snapshot (index -> conf).
    conf_history: BTreeMap<LogIndex, ConfState>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    pending_conf_index: LogIndex,
    read_seq: u64,
    reads: VecDeque<PendingRead>,
    transfer: Option<(NodeId, u32)>,
    incoming: Option<IncomingSnapshot>,
    snapshot_out: Option<Snapshot>,
    need_bcast: bool,
    msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    persisted: Persisted,
    hs_written: HardState,
}

impl<S: Storage> RaftNode<S> {
    /// Restores a node from `storage` (a fresh node starts from its bootstrap
    /// configuration, `Storage::initial_conf`).
    pub fn new(id: NodeId, cfg: Config, storage: S) -> Result<Self, ConfigError> {
        cfg.validate()?;
        if id.0 == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        let hs = storage.hard_state();
        let snap_index = storage.snapshot().meta.index;
        let conf = storage.initial_conf();
        let mut node = RaftNode {
            id,
            cfg,
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit.max(snap_index).min(storage.last_index()),
            handed: snap_index,
            applied: snap_index,
            role: Role::Follower,
            leader: None,
            conf,
            conf_history: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            pending_conf_index: 0,
            read_seq: 0,
            reads: VecDeque::new(),
            transfer: None,
            incoming: None,
            snapshot_out: None,
            need_bcast: false,
            msgs: Vec::new(),
            read_states: Vec::new(),
            persisted: Persisted::default(),
            hs_written: hs,
            storage,
        };
        node.rebuild_conf_history();
        if snap_index > 0 {
            node.snapshot_out = Some(node.storage.snapshot().clone());
        }
        Ok(node)
    }

    fn rebuild_conf_history(&mut self) {
        let (first, last) = (self.storage.first_index(), self.storage.last_index());
        let mut conf = self.storage.snapshot().meta.conf.clone();
        if self.storage.snapshot().meta.index == 0 && first == 1 {
            conf = self.storage.initial_conf();
        }
        self.conf = conf.clone();
        let mut lo = first.max(self.storage.snapshot().meta.index + 1);
        while lo <= last {
            let batch = self.storage.entries(lo, last + 1, 1024).unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                if let EntryKind::ConfigChange(cc) = &e.kind {
                    conf.apply(cc);
                    self.conf_history.insert(e.index, conf.clone());
                }
            }
            lo += batch.len() as u64;
        }
        self.conf = conf;
    }

    // ----- accessors -------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit: self.commit,
            applied: self.applied,
            last_index: self.storage.last_index(),
            conf: self.conf.clone(),
        }
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }
    pub fn storage(&self) -> &S {
        &self.storage
    }
    /// Mutable access for callers that inspect or instrument storage; writing the
    /// log through it breaks the node's invariants.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }
    pub fn into_storage(self) -> S {
        self.storage
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Match index of a peer as seen by this leader.
    pub fn peer_match(&self, peer: NodeId) -> Option<LogIndex> {
        self.progress.get(&peer).map(|p| p.matched)
    }

    /// The deterministic election timeout, in ticks, for this node at its current
    /// term: `base + ((rank + term) mod n) * spacing`, where `rank` is the node's
    /// position in the sorted voter list and `n` the number of voters. Exactly one
    /// voter holds each slot at a given term, and the slots rotate by one every
    /// term, so the first node to stand is reproducible and a dead or unelectable
    /// node cannot stay first.
    pub fn election_timeout_ticks(&self) -> u32 {
        let n = self.conf.voters.len().max(1) as u64;
        let rank = self
            .conf
            .voters
            .iter()
            .position(|v| *v == self.id)
            .unwrap_or(0) as u64;
        let slot = ((rank + self.term) % n) as u32;
        self.cfg.election_timeout_ticks + slot * self.cfg.election_spacing_ticks
    }

    fn last_term(&self) -> Term {
        self.storage.term(self.storage.last_index()).unwrap_or(0)
    }

    fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_term(to, self.term, body);
    }
    fn send_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    fn write_hard_state(&mut self) {
        let hs = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        };
        if hs != self.hs_written {
            self.storage.set_hard_state(hs);
            self.hs_written = hs;
            self.persisted.hard_state = Some(hs);
        }
    }

    fn append_local(&mut self, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        assert!(
            first.index > self.commit,
            "truncating committed entry {}",
            first.index
        );
        // Drop membership recorded for entries being replaced.
        let stale: Vec<LogIndex> = self
            .conf_history
            .range(first.index..)
            .map(|(i, _)| *i)
            .collect();
        let conf_reverted = !stale.is_empty();
        for i in stale {
            self.conf_history.remove(&i);
        }
        if conf_reverted {
            self.conf = self
                .conf_history
                .values()
                .next_back()
                .cloned()
                .unwrap_or_else(|| self.storage.snapshot().meta.conf.clone());
        }
        self.storage.append(entries);
        let mut changed = conf_reverted;
        for e in entries {
            if let EntryKind::ConfigChange(cc) = &e.kind {
                self.conf.apply(cc);
                self.conf_history.insert(e.index, self.conf.clone());
                changed = true;
            }
        }
        self.persisted.entries = Some(match self.persisted.entries {
            Some((a, _)) => (a.min(first.index), last.index),
            None => (first.index, last.index),
        });
        if changed {
            self.on_conf_changed();
        }
    }

    fn on_conf_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let next = self.storage.last_index() + 1;
        let members: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .chain(self.conf.learners.iter())
            .copied()
            .collect();
        for id in &members {
            if *id != self.id && !self.progress.contains_key(id) {
                self.progress.insert(*id, Progress::new(next));
            }
        }
        self.progress.retain(|id, _| members.contains(id));
        self.need_bcast = true;
    }

    // ----- role changes ----------------------------------------------------------

    fn reset(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        self.progress.clear();
        self.reads.clear();
        self.transfer = None;
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        self.write_hard_state();
    }

    fn become_pre_candidate(&mut self) {
        // Pre-vote does not change term or vote.
        self.role = Role::PreCandidate;
        self.votes.clear();
        self.leader = None;
        self.election_elapsed = 0;
        self.votes.insert(self.id, true);
    }

    fn become_candidate(&mut self) {
        let term = self.term + 1;
        self.reset(term);
        self.role = Role::Candidate;
        self.vote = Some(self.id);
        self.votes.insert(self.id, true);
        self.write_hard_state();
    }

    fn become_leader(&mut self) {
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let last = self.storage.last_index();
        self.on_conf_changed();
        for p in self.progress.values_mut() {
            *p = Progress::new(last + 1);
        }
        // A leader may not propose a membership change before it commits an entry
        // of its term (Ongaro's single-server-change fix): the no-op provides it.
        self.pending_conf_index = last + 1;
        let noop = Entry {
            term,
            index: last + 1,
            kind: EntryKind::Noop,
        };
        self.append_local(&[noop]);
        self.maybe_commit();
        self.need_bcast = true;
    }

    fn campaign(&mut self, pre: bool, transfer: bool) {
        if !self.promotable() {
            return;
        }
        if pre {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
        if self.tally() {
            if pre {
                self.campaign(false, false);
            } else {
                self.become_leader();
            }
            return;
        }
        let (li, lt) = (self.storage.last_index(), self.last_term());
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.id)
            .collect();
        for v in voters {
            if pre {
                self.send_term(
                    v,
                    self.term + 1,
                    MessageBody::PreVote {
                        last_index: li,
                        last_term: lt,
                    },
                );
            } else {
                self.send(
                    v,
                    MessageBody::Vote {
                        last_index: li,
                        last_term: lt,
                        transfer,
                    },
                );
            }
        }
    }

    /// True once a majority of voters granted.
    fn tally(&self) -> bool {
        let granted = self
            .conf
            .voters
            .iter()
            .filter(|v| self.votes.get(v) == Some(&true))
            .count();
        granted >= self.conf.quorum()
    }
    fn lost(&self) -> bool {
        let rejected = self
            .conf
            .voters
            .iter()
            .filter(|v| self.votes.get(v) == Some(&false))
            .count();
        rejected > self.conf.voters.len() - self.conf.quorum()
    }

    // ----- inputs ----------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.election_timeout_ticks() && self.promotable() {
            self.campaign(true, false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        // A transfer that has not completed within an election timeout is abandoned
        // and proposals are accepted again.
        if let Some((_, t)) = self.transfer.as_mut() {
            *t += 1;
            if *t >= self.cfg.election_timeout_ticks {
                self.transfer = None;
            }
        }
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            // Check quorum: step down when a majority has not been heard from.
            let id = self.id;
            let active = self
                .conf
                .voters
                .iter()
                .filter(|v| **v == id || self.progress.get(v).is_some_and(|p| p.recent_active))
                .count();
            if active < self.conf.quorum() {
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            for p in self.progress.values_mut() {
                p.recent_active = false;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    /// Proposes an application command. Returns the index it will have if committed.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        Ok(self.append_new(EntryKind::Normal(data)))
    }

    /// Proposes several commands at once (one log write, one broadcast).
    pub fn propose_batch(&mut self, batch: Vec<Vec<u8>>) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        let mut index = self.storage.last_index();
        let term = self.term;
        let entries: Vec<Entry> = batch
            .into_iter()
            .map(|d| {
                index += 1;
                Entry {
                    term,
                    index,
                    kind: EntryKind::Normal(d),
                }
            })
            .collect();
        self.append_local(&entries);
        self.maybe_commit();
        self.need_bcast = true;
        Ok(index)
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    fn append_new(&mut self, kind: EntryKind) -> LogIndex {
        let index = self.storage.last_index() + 1;
        let e = Entry {
            term: self.term,
            index,
            kind,
        };
        self.append_local(core::slice::from_ref(&e));
        self.maybe_commit();
        self.need_bcast = true;
        index
    }

    /// Proposes a single-server membership change.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.commit {
            return Err(if self.term_committed() {
                ProposeError::ConfChangePending
            } else {
                ProposeError::NotReady
            });
        }
        match cc {
            ConfChange::AddLearner(id) if self.conf.contains(id) || id.0 == 0 => {
                return Err(ProposeError::InvalidConfChange);
            }
            ConfChange::PromoteLearner(id) => {
                if !self.conf.is_learner(id) {
                    return Err(ProposeError::InvalidConfChange);
                }
                // Caught up enough: replicating (not probing or taking a snapshot)
                // and within one append message of the commit index. Demanding
                // every committed entry would never be met while clients keep
                // committing (the learner trails by the batch in flight); the
                // lag left is sent with the next append.
                let lag = self.cfg.max_entries_per_append as LogIndex;
                if self.progress.get(&id).is_none_or(|p| {
                    !matches!(p.state, ProgressState::Replicate)
                        || p.matched.saturating_add(lag) < self.commit
                }) {
                    return Err(ProposeError::LearnerNotCaughtUp);
                }
            }
            ConfChange::Remove(id)
                if (!self.conf.contains(id)
                    || (self.conf.is_voter(id) && self.conf.voters.len() == 1)) =>
            {
                return Err(ProposeError::InvalidConfChange);
            }
            _ => {}
        }
        let index = self.append_new(EntryKind::ConfigChange(cc));
        self.pending_conf_index = index;
        Ok(index)
    }

    fn term_committed(&self) -> bool {
        self.storage.term(self.commit).is_ok_and(|t| t == self.term)
    }

    /// Requests a linearizable read point; the answer arrives as a `ReadState`
    /// with the same `ctx` once a majority confirmed this node is still leader.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.check_can_propose()?;
        if !self.term_committed() {
            return Err(ProposeError::NotReady);
        }
        if self.reads.len() >= MAX_PENDING_READS {
            return Err(ProposeError::TooManyReads);
        }
        self.read_seq += 1;
        self.reads.push_back(PendingRead {
            ctx,
            index: self.commit,
            seq: self.read_seq,
        });
        self.bcast_heartbeat();
        self.release_reads();
        Ok(())
    }

    /// Hands leadership to `target` (a voter): it is brought up to date, then told
    /// to stand at once. Proposals are refused until the transfer ends.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), ProposeError> {
        self.check_can_propose()?;
        if target == self.id || !self.conf.is_voter(target) {
            return Err(ProposeError::InvalidConfChange);
        }
        self.transfer = Some((target, 0));
        let last = self.storage.last_index();
        if self
            .progress
            .get(&target)
            .is_some_and(|p| p.matched == last)
        {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    /// True when enough entries were applied since the last snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.applied >= self.storage.snapshot().meta.index + self.cfg.snapshot_threshold
    }

    /// Records a snapshot of the state machine at the applied index (the caller
    /// serialized it after `advance()`), then compacts the log if it is longer than
    /// the compaction threshold.
    pub fn create_snapshot(&mut self, data: Vec<u8>) {
        self.snapshot_and_maybe_compact(data, false);
    }

    /// As [`create_snapshot`](Self::create_snapshot), and compacts the log through the
    /// snapshot whatever its length (the durable medium is filling up). Followers that
    /// still need the dropped entries get the snapshot instead.
    pub fn create_snapshot_and_compact(&mut self, data: Vec<u8>) {
        self.snapshot_and_maybe_compact(data, true);
    }

    fn snapshot_and_maybe_compact(&mut self, data: Vec<u8>, force: bool) {
        let index = self.applied;
        if index <= self.storage.snapshot().meta.index {
            return;
        }
        let term = self.storage.term(index).unwrap_or(0);
        let conf = self
            .conf_history
            .range(..=index)
            .next_back()
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| self.storage.snapshot().meta.conf.clone());
        self.storage.save_snapshot(Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        });
        let held = self.storage.last_index() + 1 - self.storage.first_index();
        if force || held > self.cfg.log_compaction_threshold {
            self.storage.compact(index);
            // Keep the last membership at or below the compaction point as base.
            let below: Vec<LogIndex> = self.conf_history.range(..=index).map(|(i, _)| *i).collect();
            for i in below {
                self.conf_history.remove(&i);
            }
        }
    }

    /// Processes one message from a peer.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id {
            return;
        }
        if m.term > self.term {
            let lease =
                self.leader.is_some() && self.election_elapsed < self.cfg.election_timeout_ticks;
            match &m.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResp { granted: true } => {}
                MessageBody::Vote { transfer, .. } => {
                    if lease && !*transfer {
                        return;
                    }
                    self.become_follower(m.term, None);
                }
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => {
                    // Tell the stale leader about the newer term.
                    self.send(
                        m.from,
                        MessageBody::AppendResp {
                            success: false,
                            index: 0,
                            hint_term: None,
                            hint_index: 0,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResp { granted: false })
                }
                _ => {}
            }
            return;
        }
        self.step_same_term(m);
    }

    fn log_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let lt = self.last_term();
        last_term > lt || (last_term == lt && last_index >= self.storage.last_index())
    }

    fn step_same_term(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => {
                let lease = self.role == Role::Leader
                    || (self.leader.is_some()
                        && self.election_elapsed < self.cfg.election_timeout_ticks);
                let granted =
                    m.term > self.term && !lease && self.log_up_to_date(last_index, last_term);
                let t = if granted { m.term } else { self.term };
                self.send_term(from, t, MessageBody::PreVoteResp { granted });
            }
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => {
                let can = self.vote.is_none_or(|v| v == from) && self.leader.is_none();
                let granted = can && self.log_up_to_date(last_index, last_term);
                if granted {
                    self.vote = Some(from);
                    self.election_elapsed = 0;
                    self.write_hard_state();
                }
                self.send(from, MessageBody::VoteResp { granted });
            }
            MessageBody::PreVoteResp { granted } => {
                if self.role == Role::PreCandidate && (m.term == self.term + 1 || !granted) {
                    self.votes.insert(from, granted);
                    if self.tally() {
                        self.campaign(false, false);
                    } else if self.lost() {
                        let t = self.term;
                        self.become_follower(t, None);
                    }
                }
            }
            MessageBody::VoteResp { granted } => {
                if self.role == Role::Candidate {
                    self.votes.insert(from, granted);
                    if self.tally() {
                        self.become_leader();
                    } else if self.lost() {
                        let t = self.term;
                        self.become_follower(t, None);
                    }
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.follow(from);
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, read_seq } => {
                self.follow(from);
                if commit > self.commit && commit <= self.storage.last_index() {
                    self.set_commit(commit);
                }
                self.send(from, MessageBody::HeartbeatResp { read_seq });
            }
            MessageBody::Snapshot {
                meta,
                offset,
                total_len,
                data,
            } => {
                self.follow(from);
                self.handle_snapshot(from, meta, offset, total_len, data);
            }
            MessageBody::TimeoutNow => {
                if self.promotable() {
                    self.campaign(false, true);
                }
            }
            MessageBody::AppendResp {
                success,
                index,
                hint_term,
                hint_index,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_resp(from, success, index, hint_term, hint_index);
                }
            }
            MessageBody::HeartbeatResp { read_seq } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_resp(from, read_seq);
                }
            }
            MessageBody::SnapshotResp {
                index,
                next_offset,
                done,
            } => {
                if self.role == Role::Leader {
                    self.handle_snapshot_resp(from, index, next_offset, done);
                }
            }
        }
    }

    fn follow(&mut self, leader: NodeId) {
        // Election safety: a leader never hears from another leader of its own term.
        assert!(
            self.role != Role::Leader,
            "election safety: {} and {} both lead term {}",
            self.id,
            leader,
            self.term
        );
        if self.role != Role::Follower {
            let t = self.term;
            self.become_follower(t, Some(leader));
        }
        self.leader = Some(leader);
        self.election_elapsed = 0;
    }

    fn set_commit(&mut self, commit: LogIndex) {
        assert!(commit <= self.storage.last_index(), "commit beyond log");
        if commit > self.commit {
            self.commit = commit;
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) {
        let compact_point = self.storage.first_index() - 1;
        let (mut prev_index, mut prev_term, mut entries) = (prev_index, prev_term, entries);
        if prev_index < compact_point {
            // The prefix through the compaction point is committed and matches.
            let skip = entries
                .iter()
                .take_while(|e| e.index <= compact_point)
                .count();
            entries.drain(..skip);
            prev_index = compact_point;
            prev_term = self.storage.term(compact_point).unwrap_or(0);
            if skip == 0
                && entries
                    .first()
                    .is_some_and(|e| e.index != compact_point + 1)
            {
                return;
            }
        }
        match self.storage.term(prev_index) {
            Ok(t) if t == prev_term => {}
            Ok(t) => {
                let hint_index = self.first_index_of_term(t, prev_index);
                self.send(
                    from,
                    MessageBody::AppendResp {
                        success: false,
                        index: prev_index,
                        hint_term: Some(t),
                        hint_index,
                    },
                );
                return;
            }
            Err(_) => {
                let hint_index = self.storage.last_index() + 1;
                self.send(
                    from,
                    MessageBody::AppendResp {
                        success: false,
                        index: prev_index,
                        hint_term: None,
                        hint_index,
                    },
                );
                return;
            }
        }
        let verified = prev_index + entries.len() as u64;
        // Find the first entry that is new or conflicts.
        let last = self.storage.last_index();
        let mut start = entries.len();
        for (k, e) in entries.iter().enumerate() {
            if e.index > last || (self.storage.term(e.index) != Ok(e.term)) {
                start = k;
                break;
            }
        }
        if start < entries.len() {
            self.append_local(&entries[start..]);
        }
        let new_commit = commit.min(verified);
        if new_commit > self.commit {
            self.set_commit(new_commit);
        }
        self.send(
            from,
            MessageBody::AppendResp {
                success: true,
                index: verified,
                hint_term: None,
                hint_index: 0,
            },
        );
    }

    /// First index of term `t` at or below `hi` (terms are non-decreasing in a log).
    fn first_index_of_term(&self, t: Term, hi: LogIndex) -> LogIndex {
        let mut lo = self.storage.first_index();
        let mut hi = hi;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.storage.term(mid).map_or(true, |x| x < t) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Last index with term ≤ `t` at or below `hi`, with that term.
    fn last_index_upto_term(&self, t: Term, hi: LogIndex) -> Option<(LogIndex, Term)> {
        let first = self.storage.first_index() - 1;
        let (mut lo, mut hi) = (first, hi.min(self.storage.last_index()));
        if self.storage.term(lo).map_or(true, |x| x > t) {
            return None;
        }
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.storage.term(mid).is_ok_and(|x| x <= t) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        self.storage.term(lo).ok().map(|x| (lo, x))
    }

    fn handle_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
    ) {
        if meta.index <= self.commit {
            self.incoming = None;
            self.send(
                from,
                MessageBody::SnapshotResp {
                    index: meta.index,
                    next_offset: total_len,
                    done: true,
                },
            );
            return;
        }
        if total_len > MAX_SNAPSHOT_BYTES {
            return;
        }
        let same = self
            .incoming
            .as_ref()
            .is_some_and(|s| s.meta == meta && s.total_len == total_len);
        if !same {
            self.incoming = Some(IncomingSnapshot {
                meta: meta.clone(),
                total_len,
                data: Vec::new(),
            });
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        if offset == inc.data.len() as u64 && offset + data.len() as u64 <= total_len {
            inc.data.extend_from_slice(&data);
        }
        let have = inc.data.len() as u64;
        if have < total_len {
            self.send(
                from,
                MessageBody::SnapshotResp {
                    index: meta.index,
                    next_offset: have,
                    done: false,
                },
            );
            return;
        }
        let Some(inc) = self.incoming.take() else {
            return;
        };
        let snap = Snapshot {
            meta: inc.meta,
            data: inc.data,
        };
        self.install_snapshot(snap);
        self.send(
            from,
            MessageBody::SnapshotResp {
                index: meta.index,
                next_offset: total_len,
                done: true,
            },
        );
    }

    fn install_snapshot(&mut self, snap: Snapshot) {
        let index = snap.meta.index;
        assert!(index > self.commit, "installing a snapshot below commit");
        self.conf_history.clear();
        self.conf = snap.meta.conf.clone();
        self.storage.install_snapshot(snap.clone());
        self.commit = index;
        self.handed = index;
        self.applied = index;
        self.persisted.snapshot_index = Some(index);
        self.snapshot_out = Some(snap);
        self.write_hard_state();
    }

    // ----- leader side -----------------------------------------------------------

    fn maybe_commit(&mut self) {
        if self.role != Role::Leader || self.conf.voters.is_empty() {
            return;
        }
        let last = self.storage.last_index();
        let mut matches: Vec<LogIndex> = self
            .conf
            .voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    last
                } else {
                    self.progress.get(v).map_or(0, |p| p.matched)
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[self.conf.quorum() - 1];
        if candidate > self.commit && self.storage.term(candidate).is_ok_and(|t| t == self.term) {
            self.set_commit(candidate);
            self.need_bcast = true;
            self.release_reads();
            // A leader removed from the configuration steps down once that is committed.
            if !self.conf.contains(self.id) && self.pending_conf_index <= self.commit {
                let t = self.term;
                self.bcast_append_all();
                self.become_follower(t, None);
            }
        }
    }

    fn bcast_append_all(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for p in peers {
            self.send_append(p, false);
        }
    }

    fn bcast_heartbeat(&mut self) {
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|(id, p)| (*id, p.matched))
            .collect();
        for (p, matched) in peers {
            let commit = self.commit.min(matched);
            self.send(
                p,
                MessageBody::Heartbeat {
                    commit,
                    read_seq: self.read_seq,
                },
            );
            // A snapshot transfer that saw no acknowledgement since the last
            // heartbeat resumes from the last acknowledged offset.
            let resend = match self.progress.get_mut(&p).map(|pr| &mut pr.state) {
                Some(ProgressState::Snapshot { acked, .. }) => {
                    let stalled = !*acked;
                    *acked = false;
                    stalled
                }
                _ => false,
            };
            if resend {
                self.send_snapshot_chunk(p);
            }
        }
    }

    /// Sends new entries (or a commit update) to `to`. `force` sends even when the
    /// follower is up to date (as a probe).
    fn send_append(&mut self, to: NodeId, force: bool) {
        let last = self.storage.last_index();
        let commit = self.commit;
        let max = self.cfg.max_entries_per_append;
        let max_inflight = self.cfg.max_inflight_appends;
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        match pr.state {
            ProgressState::Snapshot { .. } => return,
            ProgressState::Probe if pr.probe_sent && !force => return,
            ProgressState::Replicate if pr.inflight.len() >= max_inflight => return,
            _ => {}
        }
        if pr.next > last && pr.sent_commit >= commit && !force {
            return;
        }
        let next = pr.next;
        let prev = next - 1;
        let prev_term = match self.storage.term(prev) {
            Ok(t) => t,
            Err(StorageError::Compacted) => return self.start_snapshot(to),
            Err(StorageError::Unavailable) => {
                // Optimistic next ran past our log (after truncation): probe back.
                if let Some(pr) = self.progress.get_mut(&to) {
                    let m = pr.matched;
                    pr.become_probe(m + 1);
                }
                return self.send_append(to, force);
            }
        };
        let mut entries = match self.storage.entries(next, last + 1, max) {
            Ok(e) => e,
            Err(_) => return self.start_snapshot(to),
        };
        truncate_to_bytes(&mut entries, self.cfg.max_append_bytes);
        let sent_last = prev + entries.len() as u64;
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        match pr.state {
            ProgressState::Replicate => {
                if !entries.is_empty() {
                    pr.next = sent_last + 1;
                    pr.inflight.push_back(sent_last);
                }
            }
            _ => pr.probe_sent = true,
        }
        pr.sent_commit = commit;
        self.send(
            to,
            MessageBody::Append {
                prev_index: prev,
                prev_term,
                entries,
                commit,
            },
        );
    }

    fn start_snapshot(&mut self, to: NodeId) {
        let index = self.storage.snapshot().meta.index;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.state = ProgressState::Snapshot {
                index,
                offset: 0,
                acked: true,
            };
            pr.inflight.clear();
        }
        self.send_snapshot_chunk(to);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let ProgressState::Snapshot { index, offset, .. } = pr.state else {
            return;
        };
        let snap = self.storage.snapshot();
        if snap.meta.index != index {
            // The snapshot was replaced: start over with the current one.
            return self.start_snapshot(to);
        }
        let total = snap.data.len() as u64;
        let lo = offset.min(total) as usize;
        let hi = (lo + self.cfg.snapshot_chunk_bytes).min(snap.data.len());
        let body = MessageBody::Snapshot {
            meta: snap.meta.clone(),
            offset: lo as u64,
            total_len: total,
            data: snap.data[lo..hi].to_vec(),
        };
        self.send(to, body);
    }

    fn handle_snapshot_resp(
        &mut self,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
        done: bool,
    ) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let ProgressState::Snapshot { index: si, .. } = pr.state else {
            return;
        };
        if index != si {
            return;
        }
        if done {
            pr.matched = pr.matched.max(index);
            pr.become_probe(index + 1);
            pr.state = ProgressState::Replicate;
            self.maybe_commit();
            self.send_append(from, true);
        } else {
            pr.state = ProgressState::Snapshot {
                index,
                offset: next_offset,
                acked: true,
            };
            self.send_snapshot_chunk(from);
        }
    }

    fn handle_heartbeat_resp(&mut self, from: NodeId, read_seq: u64) {
        let last = self.storage.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.read_ack = pr.read_ack.max(read_seq);
        pr.probe_sent = false;
        let behind = pr.matched < last;
        let lagging = behind || pr.sent_commit < self.commit;
        if behind
            && pr.state == ProgressState::Replicate
            && pr.inflight.len() >= self.cfg.max_inflight_appends
        {
            // A full window at a heartbeat means appends were probably lost:
            // fall back to probing from the last confirmed index.
            let m = pr.matched;
            pr.become_probe(m + 1);
        }
        self.release_reads();
        if lagging {
            // `force` when behind: if the optimistic appends were lost, the (possibly
            // empty) append at `next - 1` draws a rejection that restarts probing.
            self.send_append(from, behind);
        }
    }

    fn release_reads(&mut self) {
        while let Some(r) = self.reads.front() {
            let acks = self
                .conf
                .voters
                .iter()
                .filter(|v| {
                    **v == self.id || self.progress.get(v).is_some_and(|p| p.read_ack >= r.seq)
                })
                .count();
            if acks < self.conf.quorum() {
                break;
            }
            self.read_states.push(ReadState {
                ctx: r.ctx,
                index: r.index,
            });
            self.reads.pop_front();
        }
    }

    fn handle_append_resp(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint_term: Option<Term>,
        hint_index: LogIndex,
    ) {
        let last = self.storage.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if success {
            if index > pr.matched {
                pr.matched = index;
            }
            pr.next = pr.next.max(index + 1);
            while pr.inflight.front().is_some_and(|i| *i <= index) {
                pr.inflight.pop_front();
            }
            match pr.state {
                ProgressState::Probe => {
                    let m = pr.matched;
                    pr.become_probe(m + 1);
                    pr.state = ProgressState::Replicate;
                }
                ProgressState::Snapshot { .. } => return,
                ProgressState::Replicate => {}
            }
            let caught_up = pr.matched == last;
            self.maybe_commit();
            if self.role != Role::Leader {
                return;
            }
            if caught_up && self.transfer.is_some_and(|(t, _)| t == from) {
                self.send(from, MessageBody::TimeoutNow);
            }
            self.send_append(from, false);
            return;
        }
        if index == 0 && hint_index == 0 {
            return; // term notification only
        }
        // Rejection: ignore stale ones.
        if index <= pr.matched {
            return;
        }
        if pr.state == ProgressState::Probe && pr.next != index + 1 {
            return;
        }
        if matches!(pr.state, ProgressState::Snapshot { .. }) {
            return;
        }
        let floor = pr.matched + 1;
        let mut next = match hint_term {
            Some(t) => match self.last_index_upto_term(t, index) {
                Some((i, term)) if term == t => i + 1,
                Some(_) => hint_index,
                None => hint_index,
            },
            None => hint_index,
        };
        next = next.clamp(floor, index.max(floor));
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.become_probe(next);
        }
        self.send_append(from, false);
    }

    // ----- outputs ---------------------------------------------------------------

    /// True when `ready()` has something to hand out.
    pub fn has_ready(&self) -> bool {
        self.need_bcast
            || !self.msgs.is_empty()
            || !self.read_states.is_empty()
            || self.snapshot_out.is_some()
            || self.commit > self.handed
    }

    /// Collects outputs. All durable writes they depend on are already done.
    pub fn ready(&mut self) -> Ready {
        if self.need_bcast && self.role == Role::Leader {
            self.need_bcast = false;
            self.bcast_append_all();
        }
        self.need_bcast = false;
        self.write_hard_state();
        let mut committed = Vec::new();
        if self.commit > self.handed {
            let hi = self.commit + 1;
            let max = self.cfg.max_committed_per_ready;
            committed = self
                .storage
                .entries(self.handed + 1, hi, max)
                .unwrap_or_default();
            if let Some(e) = committed.last() {
                self.handed = e.index;
            }
        }
        Ready {
            persisted: core::mem::take(&mut self.persisted),
            messages: core::mem::take(&mut self.msgs),
            snapshot: self.snapshot_out.take(),
            committed,
            read_states: core::mem::take(&mut self.read_states),
        }
    }

    /// Acknowledges that everything from the last `ready()` was applied.
    pub fn advance(&mut self) {
        self.applied = self.handed;
    }
}

/// Payload bytes an entry adds to an append (its data plus a fixed allowance).
fn entry_bytes(e: &Entry) -> usize {
    const OVERHEAD_BYTES: usize = 32;
    OVERHEAD_BYTES
        + match &e.kind {
            EntryKind::Normal(d) => d.len(),
            _ => 0,
        }
}

/// Keeps the longest prefix of `entries` within `max_bytes`, and never less than one.
fn truncate_to_bytes(entries: &mut Vec<Entry>, max_bytes: usize) {
    let mut total = 0usize;
    let keep = entries
        .iter()
        .take_while(|e| {
            total = total.saturating_add(entry_bytes(e));
            total <= max_bytes
        })
        .count()
        .max(1);
    entries.truncate(keep);
}

#[cfg(test)]
mod append_bytes_tests {
    use super::*;

    fn entry(i: u64, len: usize) -> Entry {
        Entry {
            term: 1,
            index: i,
            kind: EntryKind::Normal(alloc::vec![0; len]),
        }
    }

    #[test]
    fn appends_stay_within_their_byte_budget_but_carry_at_least_one_entry() {
        let mut v: Vec<Entry> = (1..=10).map(|i| entry(i, 1000)).collect();
        truncate_to_bytes(&mut v, 3 * 1032);
        assert_eq!(v.len(), 3);
        let mut big = alloc::vec![entry(1, 1 << 20), entry(2, 10)];
        truncate_to_bytes(&mut big, 1024);
        assert_eq!(
            big.len(),
            1,
            "an entry larger than the budget still goes alone"
        );
        let mut none: Vec<Entry> = Vec::new();
        truncate_to_bytes(&mut none, 10);
        assert!(none.is_empty());
    }
}
