//! The commands of the replicated log and their envelope. A Raft `Normal` entry holds
//! one [`Proposal`]: the proposer's global logical time and one [`Command`], postcard
//! encoded behind a version byte. Decoding never panics; an entry that does not decode
//! is applied as a recorded no-op so every node still agrees on the state.

use crate::contract::SignedContract;
use crate::placement::PlacementKind;
use crate::state::Party;
use crate::types::{
    Completion, Domain, GlobalTime, HeartbeatInfo, LoadReport, Quota, TaskSpec, WorkerInfo,
};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use xdv_types::{Hash32, NodeId, Priority, TaskId, TenantId};

/// Version byte in front of every encoded proposal.
pub const ENTRY_VERSION: u8 = 1;
/// Largest encoded proposal (a module plus input fits; Raft frames allow 1 MiB).
pub const MAX_ENTRY_BYTES: usize = 128 * 1024;

/// Seed 002's commands plus contracts, liveness, quotas and audit publication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A tenant's task: validated, quota-checked and placed when applied.
    AssignTask(TaskSpec),
    /// The placed node reports how the task ended.
    TaskCompleted(Completion),
    /// A worker's resources, replicated for placement.
    Heartbeat(HeartbeatInfo),
    AddWorker(WorkerInfo),
    RemoveWorker {
        node: NodeId,
    },
    /// Snapshot boundary marker (seed 002): recorded, changes nothing else.
    Snapshot {
        snapshot_id: u64,
    },
    /// A contract the requesting node built for a tenant's reservation and signed.
    ProposeContract(SignedContract),
    /// Its tenant or one of its nodes gives a contract up.
    ReleaseContract {
        contract_id: u64,
        by: Party,
    },
    SuspendContracts {
        node: NodeId,
    },
    /// `node`'s device of `domain` failed: its contracts end aborted (seed 000 §6.1).
    AbortContracts {
        node: NodeId,
        domain: Domain,
        reason: String,
    },
    /// The leader's clock: cluster time advances by `CLOCK_TICK_MS`.
    ClockTick,
    /// A node's state hash after applying entry `index` (every `VOTE_EVERY` entries):
    /// hash voting (seed 001). A node whose hash differs from the majority's is
    /// quarantined.
    StateVote {
        node: NodeId,
        index: u64,
        hash: Hash32,
    },
    /// Operator: a tenant's policy priority for contract conflicts.
    SetPolicy {
        tenant: TenantId,
        priority: Priority,
        seq: u64,
    },
    /// The leader's failure detector declared `node` down: contracts suspended, its
    /// tasks re-placed, its shards migrated.
    NodeDown {
        node: NodeId,
    },
    NodeUp {
        node: NodeId,
    },
    SetQuota {
        tenant: TenantId,
        quota: Option<Quota>,
        /// The operator request's sequence number: the operator's anti-replay window
        /// is replicated, so no request is applied twice by the cluster (a captured
        /// request replayed after a leader change included).
        seq: u64,
    },
    /// A tenant allowed to submit (management requests are checked against this set).
    RegisterTenant {
        tenant: TenantId,
        public_key: [u8; 32],
    },
    /// A node's audit Merkle root over its first `records` records, with the
    /// consistency proof (RFC 9162) that it extends the node's root over `from`
    /// records, the last one the cluster holds (`from` 0, no proof: its first).
    PublishAuditRoot {
        node: NodeId,
        records: u64,
        root: Hash32,
        from: u64,
        proof: Vec<Hash32>,
    },
    /// Operator (`AddWorker` request): a new member. The leader then adds it to Raft
    /// as a learner and, once it caught up, promotes it to voter (not an observer).
    AddMember {
        info: WorkerInfo,
        seq: u64,
    },
    /// Operator (`RemoveWorker` request): a member leaves; its tasks are re-placed and
    /// its contracts released; the leader then removes it from Raft (handing
    /// leadership on first if it is the one leaving).
    RemoveMember {
        node: NodeId,
        seq: u64,
    },
    /// The node running attempt `attempt` of `task` saw it make progress (the task
    /// called the `progress` host function): its stuck timer restarts. Sent at most
    /// every `Timing::progress_report_ms` per task.
    TaskProgress {
        task: TaskId,
        node: NodeId,
        attempt: u32,
    },
    /// The node running attempt `attempt` of `task` asks for `extension_ms` more
    /// cluster time (granted up to `TaskTimeouts::max_extension_ms` per attempt).
    RequestExtension {
        task: TaskId,
        node: NodeId,
        attempt: u32,
        extension_ms: u64,
    },
    /// A tenant cancels one of its tasks (`Request::Cancel`): it ends `Cancelled`, its
    /// quota is freed, and the node running it stops it.
    CancelTask {
        task: TaskId,
        tenant: TenantId,
    },
    /// A tenant's batch of tasks under one signed request (`Request::SubmitBatch`,
    /// `RunBatch`), or the whole submissions a leader accepted in one loop iteration
    /// (several requests, possibly of several tenants): applied as that many
    /// `AssignTask`s in order, in one entry (one Raft append, one apply, one state
    /// hash, one audit record).
    AssignTasks(Vec<TaskSpec>),
    /// A member's periodic load heartbeat: its run-queue depth, utilisation and own
    /// Vivaldi coordinate, for `Routed` placement. A variant of its own (appended, so
    /// the encoding of every older entry is unchanged) rather than new fields of
    /// [`Command::Heartbeat`], whose postcard form older logs hold.
    LoadHeartbeat(LoadReport),
    /// Operator: the placement policy from this entry on.
    SetPlacementPolicy {
        policy: PlacementKind,
        seq: u64,
    },
    /// The leader heard a discovery-mode machine's report (`crate::discovery`): a new
    /// machine enters the discovered table, a known one is refreshed. A measured,
    /// unauthenticated input, validated again when applied.
    Discovered {
        mac: crate::discovery::Mac,
        hardware: crate::discovery::Hardware,
    },
    /// Operator (`AdmitDiscovered` request, after the machine's `AddMember`): the MAC
    /// leaves the discovered table and its next report is answered "admitted as
    /// `node`".
    AdmitDiscovered {
        mac: crate::discovery::Mac,
        node: NodeId,
        seq: u64,
    },
    /// Gate group only (`crate::gate`): a member cluster's leader reported its health
    /// and load; the gate leader proposes it (a measured input, logged).
    ClusterHeartbeat(xdv_federation::route::Heartbeat),
    /// Gate group only: route a tenant's signed submission (`submission`, a postcard
    /// `SignedRequest` forwarded unchanged to the chosen cluster). `local` is the
    /// proposing gate's Vivaldi coordinate, an input of the decision.
    RouteJob {
        tenant: TenantId,
        seq: u64,
        submission: Vec<u8>,
        local: Option<xdv_federation::vivaldi::Coordinate>,
    },
    /// Gate group only: `cluster` accepted or refused `job`.
    DispatchOutcome {
        job: u64,
        cluster: xdv_federation::ClusterId,
        result: crate::gate::DispatchResult,
    },
    /// Gate group only: `job` ended as `cluster`'s task `task`.
    JobFinished {
        job: u64,
        cluster: xdv_federation::ClusterId,
        task: TaskId,
        outcome: crate::types::Outcome,
    },
    /// Member cluster: a gate group (`gate_cluster`) dispatched this submission as its
    /// job `job`. Applied as `AssignTask`; the task's timeouts are gate-coordinated.
    AssignRoutedTask {
        spec: TaskSpec,
        gate_cluster: u32,
        job: u64,
    },
    /// Member cluster: the gate acknowledged the routed task's report with
    /// `fence_token` (proves the gate reachable; clears a pending timeout report).
    GateAck {
        task: TaskId,
        job: u64,
        fence_token: u64,
    },
    /// Member cluster: the gate declared job `job` (the routed task `task`) timed out.
    GateVerdict {
        task: TaskId,
        job: u64,
        reason: xdv_federation::timeout::TimeoutReason,
        fence_token: u64,
    },
    /// Gate group only: a member cluster's leader (`manager`) reported on `job`, its
    /// task `task` (progress, local timeout, leader transfer).
    JobReport {
        job: u64,
        cluster: xdv_federation::ClusterId,
        task: TaskId,
        manager: NodeId,
        report: crate::gate::JobReport,
    },
    /// Completions a node reported together (one loop iteration's): applied as that
    /// many `TaskCompleted`s in order, in one entry (one Raft append, one apply, one
    /// state hash, one audit record for the group). Each is checked on its own: a
    /// stale attempt among them is refused alone.
    TasksCompleted(Vec<Completion>),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::AssignTask(_) => "AssignTask",
            Command::TaskCompleted(_) => "TaskCompleted",
            Command::Heartbeat(_) => "Heartbeat",
            Command::AddWorker(_) => "AddWorker",
            Command::RemoveWorker { .. } => "RemoveWorker",
            Command::AddMember { .. } => "AddMember",
            Command::RemoveMember { .. } => "RemoveMember",
            Command::Snapshot { .. } => "Snapshot",
            Command::ProposeContract(_) => "ProposeContract",
            Command::ReleaseContract { .. } => "ReleaseContract",
            Command::SuspendContracts { .. } => "SuspendContracts",
            Command::AbortContracts { .. } => "AbortContracts",
            Command::ClockTick => "ClockTick",
            Command::StateVote { .. } => "StateVote",
            Command::SetPolicy { .. } => "SetPolicy",
            Command::NodeDown { .. } => "NodeDown",
            Command::NodeUp { .. } => "NodeUp",
            Command::SetQuota { .. } => "SetQuota",
            Command::RegisterTenant { .. } => "RegisterTenant",
            Command::PublishAuditRoot { .. } => "PublishAuditRoot",
            Command::TaskProgress { .. } => "TaskProgress",
            Command::RequestExtension { .. } => "RequestExtension",
            Command::CancelTask { .. } => "CancelTask",
            Command::AssignTasks(_) => "AssignTasks",
            Command::LoadHeartbeat(_) => "LoadHeartbeat",
            Command::SetPlacementPolicy { .. } => "SetPlacementPolicy",
            Command::Discovered { .. } => "Discovered",
            Command::AdmitDiscovered { .. } => "AdmitDiscovered",
            Command::ClusterHeartbeat(_) => "ClusterHeartbeat",
            Command::RouteJob { .. } => "RouteJob",
            Command::DispatchOutcome { .. } => "DispatchOutcome",
            Command::JobFinished { .. } => "JobFinished",
            Command::AssignRoutedTask { .. } => "AssignRoutedTask",
            Command::GateAck { .. } => "GateAck",
            Command::GateVerdict { .. } => "GateVerdict",
            Command::JobReport { .. } => "JobReport",
            Command::TasksCompleted(_) => "TasksCompleted",
        }
    }
}

/// One log entry's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposer's `L_global` when it proposed.
    pub time: GlobalTime,
    pub command: Command,
}

/// Why an entry's bytes are not a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecodeError {
    Empty,
    UnknownVersion(u8),
    TooLarge(usize),
    Malformed,
    TrailingBytes(usize),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty entry"),
            DecodeError::UnknownVersion(v) => write!(f, "unknown entry version {v}"),
            DecodeError::TooLarge(n) => write!(f, "entry of {n} bytes (limit {MAX_ENTRY_BYTES})"),
            DecodeError::Malformed => write!(f, "entry does not decode as a proposal"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the proposal"),
        }
    }
}

impl Proposal {
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = alloc::vec![ENTRY_VERSION];
        let body = postcard::to_allocvec(self).map_err(|_| DecodeError::Malformed)?;
        out.extend_from_slice(&body);
        if out.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::TooLarge(out.len()));
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        let (&v, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if v != ENTRY_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (p, rest) =
            postcard::take_from_bytes::<Proposal>(body).map_err(|_| DecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok(p)
    }
}
