//! The management API carried in `MgmtRequest` / `MgmtResponse` wire frames, and who
//! may do what.
//!
//! Every request is signed with Ed25519 by its principal (the operator, or a tenant
//! registered in the replicated state) over `MGMT_SIGNING_DOMAIN ‖ postcard(cluster,
//! principal, seq, request)` and carries a sequence number taken at most once per
//! principal (an anti-replay window: concurrent clients may arrive out of order). [`authorize`] is the one check every node runs: unknown principal, bad
//! signature, wrong cluster, a replayed or stale sequence, and a tenant touching another
//! tenant's task are refused with a specific [`Denied`]. Submissions are deduplicated
//! by the state machine on `(tenant, seq)`, so a client retrying through a failover
//! gets the task it already has, never a second one.
//!
//! Between nodes the same frame type carries [`PeerForward`]: a follower forwards a
//! client's signed request (the leader checks it again) or its own commands
//! (completions, heartbeats, audit roots — only about itself) to the leader.

use crate::command::{Command, Proposal};
use crate::state::{ClusterState, TaskStatus};
use crate::types::{
    Domain, MAX_TASK_MEMORY_PAGES, MAX_TASK_TABLE_ELEMENTS, Quota, ReplayWindow, TaskSpec, Work,
};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};
use xdv_types::{CapabilityId, Hash32, NodeId, Priority, TaskId, TenantId};

pub const MGMT_SIGNING_DOMAIN: &[u8] = b"XDV-MGMT-v1\0";
/// Largest encoded request or response.
pub const MAX_MGMT_BYTES: usize = 256 * 1024;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Principal {
    Operator,
    Tenant(TenantId),
}

impl Principal {
    /// May this principal see what belongs to `tenant` (the operator sees everything)?
    pub fn may_see(&self, tenant: TenantId) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Tenant(t) => *t == tenant,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Operator => f.write_str("operator"),
            Principal::Tenant(t) => write!(f, "{t}"),
        }
    }
}

/// A task as a tenant submits it (the tenant is the request's principal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    pub work: Work,
    pub input: Vec<u8>,
    pub budget_ticks: u64,
    pub priority: Priority,
    pub guards: Vec<CapabilityId>,
    pub needs: Vec<CapabilityId>,
    pub domain: Domain,
    pub pin: Option<NodeId>,
    /// Run under this contract (its tenant's own).
    pub contract: Option<u64>,
    /// Cluster-time limit of one attempt in ms (`None`: the cluster's default).
    pub timeout_ms: Option<u64>,
    /// Through a gate: member clusters the tenant prefers (seed §13.4: a preferred
    /// cluster's score is multiplied by `preference_mult` within the primary health
    /// bucket; the first [`MAX_PREFERRED`] count). A cluster ignores it.
    pub prefer: Vec<xdv_federation::ClusterId>,
}

impl Submit {
    /// A plain submission: `work` on `input` within `budget_ticks`, a K task at normal
    /// priority with no guards, needs, pin, contract or preferred clusters, under the
    /// cluster's default timeout. Other fields by struct update:
    /// `Submit { timeout_ms: Some(2_000), ..Submit::new(work, input, budget) }`.
    pub fn new(work: Work, input: Vec<u8>, budget_ticks: u64) -> Submit {
        Submit {
            work,
            input,
            budget_ticks,
            priority: Priority::Normal,
            guards: Vec::new(),
            needs: Vec::new(),
            domain: Domain::K,
            pin: None,
            contract: None,
            timeout_ms: None,
            prefer: Vec::new(),
        }
    }
}

/// Preferred clusters a gate reads from one submission.
pub const MAX_PREFERRED: usize = 8;

/// A tenant's reservation of resources on a target node (seed 000 §4). The node the
/// request reaches is the requesting node: it builds the contract, signs it with its
/// node key and proposes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    pub domain: Domain,
    pub target: NodeId,
    /// Container (Q), window (Φ) or core-slot (K) indices on the target, sorted, unique.
    pub resources: Vec<u16>,
    /// Cluster time (ms) it lasts from acceptance.
    pub duration_ms: u64,
    /// A capability the requesting node holds.
    pub capability: CapabilityId,
}

/// A contract as `cargo xdv contracts` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractView {
    pub id: u64,
    pub hash: Hash32,
    pub tenant: TenantId,
    pub requester: NodeId,
    pub target: NodeId,
    pub domain: Domain,
    pub resources: Vec<u16>,
    pub suspended: bool,
    pub priority: Priority,
    pub expires_ms: u64,
    /// How it ended and the cluster time (ms) it ended at, for a recently ended
    /// contract (`Response::Contracts::ended`); `None` while it is in force.
    pub ended: Option<(crate::contract::ContractEnd, u64)>,
}

impl ContractView {
    /// `active`, `suspended`, or how it ended (`preempted`, `released`, `expired`,
    /// `aborted`, `terminated`).
    pub fn state(&self) -> &'static str {
        match &self.ended {
            Some((end, _)) => end.name(),
            None if self.suspended => "suspended",
            None => "active",
        }
    }
}

/// How a reservation or a release ended, as the log decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractAnswer {
    Accepted {
        id: u64,
    },
    Rejected {
        id: u64,
        reason: crate::types::Refusal,
    },
    Released {
        id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Tenant: reserve resources on a node.
    Reserve(Reserve),
    /// Tenant: give up one of its contracts.
    Release {
        contract: u64,
    },
    /// The contracts in force (a tenant sees its own, the operator all), and the
    /// cluster time.
    Contracts,
    /// Operator only: a tenant's policy priority for contract conflicts.
    SetPolicy {
        tenant: TenantId,
        priority: Priority,
    },
    Submit(Submit),
    TaskStatus {
        task: TaskId,
    },
    ClusterStatus,
    /// The newest tasks (a tenant sees its own, the operator all), newest first, at
    /// most `limit` (capped at [`MAX_LIST_TASKS`]), optionally only those in `state`.
    ListTasks {
        state: Option<TaskState>,
        limit: u32,
    },
    /// Operator only: set (or with `None` clear) a tenant's quota.
    SetQuota {
        tenant: TenantId,
        quota: Option<Quota>,
    },
    /// Operator only: admit node `node` with its Ed25519 key (the one in its
    /// provisioning module) as a worker, or as an observer that follows the log and
    /// verifies but never votes nor runs tasks. Answered once the log has it.
    AddWorker {
        node: NodeId,
        public_key: [u8; 32],
        observer: bool,
    },
    /// Operator only: node `node` leaves the cluster. Answered once the log has it.
    RemoveWorker {
        node: NodeId,
    },
    /// Operator only: the answering node's metrics in the Prometheus text exposition
    /// format (`Response::Metrics`), computed by the node from its own state.
    Metrics,
    /// Tenant: cancel one of its own tasks (pending or running). Answered
    /// [`Response::Cancelled`] once the log has it.
    Cancel {
        task: TaskId,
    },
    /// As [`Request::TaskStatus`], but answered once the task finished (completed or
    /// refused), or with its status then when the node's reply timeout passes first.
    /// Lets a client pipeline submissions and wait for their outcomes without polling.
    AwaitTask {
        task: TaskId,
    },
    /// Tenant: up to [`MAX_BATCH_SUBMISSIONS`] submissions under this one signature.
    /// Submission `i` takes sequence number `seq + i`: the client reserves the range
    /// `seq .. seq + len` (each number is taken once, as a single `Submit`'s is, so a
    /// retried batch gets the tasks it already has and nothing runs twice). Answered
    /// [`Response::SubmittedBatch`] once the log placed all of them.
    SubmitBatch(Vec<Submit>),
    /// As [`Request::AwaitTask`] for up to [`MAX_AWAIT_TASKS`] distinct tasks:
    /// answered [`Response::TaskReports`] once every one finished, or with their
    /// statuses then when the node's reply timeout passes first.
    AwaitTasks {
        tasks: Vec<TaskId>,
    },
    /// Operator only: the cluster's placement policy from the entry that carries it
    /// on. Answered [`Response::PlacementPolicySet`] once the log has it.
    SetPlacementPolicy {
        policy: crate::placement::PlacementKind,
    },
    /// Operator only: the discovered machines (`crate::discovery`), by MAC.
    Discovered,
    /// Operator only: the discovered machine `mac` was provisioned and admitted as
    /// member `node` (its `AddWorker` came first): it leaves the discovered table and
    /// its next report is answered "admitted". Answered [`Response::DiscoveredAdmitted`]
    /// once the log has it.
    AdmitDiscovered {
        mac: crate::discovery::Mac,
        node: NodeId,
    },
    /// A gate group only: why job `job` went where it went (the decision's
    /// `explain()` text). A tenant sees its own jobs, the operator all.
    RouteExplain {
        job: u64,
    },
    /// Tenant: [`Request::SubmitBatch`] and [`Request::AwaitTasks`] in one request
    /// (one signature, one round trip): the same submissions under the same rules
    /// (`seq + i` each, a retry gets the tasks it already has), answered
    /// [`Response::TaskReports`] in submission order once every task finished, or
    /// with their statuses then when the node's reply timeout passes first (a
    /// `NotReady` refusal if the log had not placed them all by then: retry with the
    /// same seq).
    RunBatch(Vec<Submit>),
}

/// Most submissions one [`Request::SubmitBatch`] carries.
pub const MAX_BATCH_SUBMISSIONS: usize = 64;
/// Most tasks one [`Request::AwaitTasks`] waits for (each report carries at most
/// `MAX_OUTPUT_BYTES` of output and no log lines, so the answer stays well below
/// [`MAX_MGMT_BYTES`]).
pub const MAX_AWAIT_TASKS: usize = 64;
const _: () = assert!(MAX_AWAIT_TASKS * (crate::MAX_OUTPUT_BYTES + 512) < MAX_MGMT_BYTES);
const _: () = assert!(MAX_BATCH_SUBMISSIONS <= crate::types::MAX_WINDOW_SEQS / 4);
// A `RunBatch` is answered with one report per submission.
const _: () = assert!(MAX_BATCH_SUBMISSIONS <= MAX_AWAIT_TASKS);

/// One task in a [`Response::TaskReports`]: its status as in [`Response::Task`],
/// without the module's log lines (ask [`Request::TaskStatus`] for those).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task: TaskId,
    pub tenant: TenantId,
    pub status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    pub cluster: u32,
    pub principal: Principal,
    pub seq: u64,
    pub request: Request,
    pub signature: Vec<u8>,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Denied {
    Malformed(String),
    UnknownPrincipal(Principal),
    BadSignature,
    WrongCluster {
        expected: u32,
        got: u32,
    },
    Replayed {
        seq: u64,
        last: u64,
    },
    /// The sequence number jumps too far ahead (or past the maximum).
    SeqOutOfRange {
        seq: u64,
        highest: u64,
    },
    /// The submission was already accepted as `task`.
    Duplicate {
        task: TaskId,
    },
    OutOfScope {
        task: TaskId,
    },
    OperatorCannotSubmit,
    OperatorOnly,
    UnknownTask(TaskId),
    UnknownContract(u64),
    NotYourContract(u64),
    NoLeader,
    NotReady(String),
    /// A membership change that cannot be made (already a member, not a member, a
    /// change in progress, quorum would be lost).
    Membership(MembershipDenied),
    /// The task already ended (`outcome` in words): nothing to cancel.
    TaskFinished {
        task: TaskId,
        outcome: String,
    },
    /// `AdmitDiscovered`: no machine with this MAC is in the discovered table.
    UnknownMac(crate::discovery::Mac),
    /// `AdmitDiscovered`: the MAC was admitted already, as this node.
    MacAdmitted {
        mac: crate::discovery::Mac,
        node: NodeId,
    },
}

/// Why a membership change is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipDenied {
    AlreadyMember(NodeId),
    NotMember(NodeId),
    /// Another change (`node` joining or leaving) is not finished yet.
    ChangeInProgress {
        node: NodeId,
    },
    /// Removing `node` would leave fewer voters up than the new quorum.
    QuorumWouldBeLost {
        node: NodeId,
        up: u32,
        quorum: u32,
    },
    /// The last voter cannot leave.
    LastVoter(NodeId),
    /// Node id 0 is reserved, and ids above the peer network's address plan (10.0.0.k).
    BadNodeId(NodeId),
}

impl fmt::Display for MembershipDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipDenied::AlreadyMember(n) => write!(f, "{n} is already a member"),
            MembershipDenied::NotMember(n) => write!(f, "{n} is not a member"),
            MembershipDenied::ChangeInProgress { node } => write!(
                f,
                "a membership change ({node}) is still in progress; retry when it is done"
            ),
            MembershipDenied::QuorumWouldBeLost { node, up, quorum } => write!(
                f,
                "removing {node} would lose quorum: {up} voters would be up, {quorum} needed"
            ),
            MembershipDenied::LastVoter(n) => write!(f, "{n} is the last voter"),
            MembershipDenied::BadNodeId(n) => {
                write!(f, "{n} is not a valid member id (1..={MAX_MEMBER_ID})")
            }
        }
    }
}

/// Highest member id: peer `k` lives at 10.0.0.k on the peer network.
pub const MAX_MEMBER_ID: u32 = 254;

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Malformed(why) => write!(f, "malformed request: {why}"),
            Denied::UnknownPrincipal(p) => write!(f, "{p} is not registered in this cluster"),
            Denied::BadSignature => write!(f, "signature does not verify"),
            Denied::WrongCluster { expected, got } => {
                write!(
                    f,
                    "request is for cluster {got}, this is cluster {expected}"
                )
            }
            Denied::Replayed { seq, last } => {
                write!(f, "replayed request: seq {seq} is not above {last}")
            }
            Denied::SeqOutOfRange { seq, highest } => write!(
                f,
                "sequence number {seq} out of range: at most {} past the highest accepted ({highest}) and below {}",
                crate::MAX_SEQ_JUMP,
                crate::MAX_SEQ
            ),
            Denied::Duplicate { task } => write!(f, "replayed request: already accepted as {task}"),
            Denied::OutOfScope { task } => write!(f, "{task} belongs to another tenant"),
            Denied::OperatorCannotSubmit => write!(f, "only tenants submit tasks"),
            Denied::OperatorOnly => write!(f, "only the operator may do this"),
            Denied::UnknownTask(t) => write!(f, "no task {t} (never submitted or expired)"),
            Denied::UnknownContract(c) => {
                write!(
                    f,
                    "no contract {c} in force (never accepted, expired or released)"
                )
            }
            Denied::NotYourContract(c) => write!(f, "contract {c} belongs to another tenant"),
            Denied::NoLeader => write!(f, "no leader at the moment; retry"),
            Denied::NotReady(why) => write!(f, "not ready: {why}"),
            Denied::Membership(why) => write!(f, "membership change refused: {why}"),
            Denied::TaskFinished { task, outcome } => {
                write!(f, "{task} already finished ({outcome}); nothing to cancel")
            }
            Denied::UnknownMac(mac) => write!(
                f,
                "no machine with MAC {} has reported itself as discovered (see `cargo xdv nodes --discovered`)",
                crate::discovery::mac_string(mac)
            ),
            Denied::MacAdmitted { mac, node } => write!(
                f,
                "MAC {} was admitted already, as {node}",
                crate::discovery::mac_string(mac)
            ),
        }
    }
}

/// One member in a [`ClusterView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub node: NodeId,
    pub up: bool,
    /// Its state hash disagreed with the majority's: it takes no placements.
    pub quarantined: bool,
    pub assigned: u32,
    pub completed: u64,
    pub audit_records: u64,
    /// An observer (follows and verifies, never votes nor runs tasks).
    pub observer: bool,
    /// Its place in this node's Raft configuration: "voter", "learner" or "joining"
    /// (admitted by the log, not yet in the configuration).
    pub raft: String,
}

/// `cluster status` as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub node: NodeId,
    pub role: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit: u64,
    pub applied: u64,
    pub state_hash: Hash32,
    pub federated_root: Option<Hash32>,
    pub audit_head: Hash32,
    pub audit_records: u64,
    pub tasks: u64,
    pub completed: u64,
    pub pending: u64,
    pub members: Vec<MemberView>,
    /// Propose-to-apply latency of this node's own proposals: p50, p99 (µs), samples.
    pub commit_latency_us: (u64, u64, u64),
    /// Where a task's time goes on this node, stage by stage, over the most recent
    /// tasks it saw (both ends of a stage measured on this node's clock).
    pub stages: Vec<StageStat>,
    /// How long the node's loop has worked (not waited for an interrupt) since it
    /// started, µs, as its driver reports it (0 where it does not measure).
    pub loop_busy_us: u64,
    /// That work split by what the loop did (driver-defined phase names, e.g. `nic`,
    /// `client`, `raft`, `audit`), µs since boot; empty where it does not measure.
    pub loop_phases_us: Vec<(String, u64)>,
    /// Iterations of the node's loop since it started (0 where it does not count):
    /// with `loop_busy_us`, the fixed cost an iteration pays whatever it finds to do.
    pub loop_iterations: u64,
    /// This node's network coordinate and what it knows of each peer (AD-35).
    pub peer_health: alloc::boxed::Box<PeerHealthView>,
    /// The placement policy in force (`least-loaded`, `first-fit`, `routed`).
    pub placement_policy: String,
}

/// A node's Vivaldi coordinate and peer confirmation state (seed 003 §12.8), fed by
/// the transport's ping/ack RTT samples. Integers: µs, ppm, ms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealthView {
    /// The local coordinate: 4 components and height, µs.
    pub position_us: [i64; 4],
    pub height_us: i64,
    /// Relative prediction error, ppm (1 000 000 = 100 %).
    pub error_ppm: u64,
    pub samples: u32,
    pub converged: bool,
    /// §12.8.1: coordinate updates, samples refused, last sample's relative error.
    pub coordinate_updates: u64,
    pub samples_rejected: u64,
    pub last_prediction_error_ppm: u64,
    /// §12.8.2–3: (unconfirmed, alive, suspect, dead) peers; transitions.
    pub counts: (u32, u32, u32, u32),
    pub confirmed: u64,
    pub removed_unconfirmed: u64,
    pub suspected: u64,
    pub refuted: u64,
    pub dead: u64,
    /// The node's own load multiplier, ppm (stretches its suspicion timeouts).
    pub load_ppm: u64,
    pub peers: Vec<PeerHealth>,
}

/// One peer as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    pub node: NodeId,
    /// `gate`, `manager` or `worker` (§12.4).
    pub role: String,
    /// `unconfirmed`, `alive`, `suspect`, `dead` or `removed`.
    pub state: String,
    /// Last measured RTT, µs (0: no sample yet).
    pub rtt_last_us: u64,
    /// Vivaldi RTT estimate and its upper confidence bound, µs.
    pub rtt_estimate_us: u64,
    pub rtt_ucb_us: u64,
    /// Coordinate quality 0..=1 000 000.
    pub quality_ppm: u64,
    /// Milliseconds since last heard (`None`: never).
    pub silent_ms: Option<u64>,
    /// The adaptive SUSPECT → DEAD timeout this peer gets now, ms.
    pub suspicion_timeout_ms: u64,
}

/// One stage of the request path as a node measured it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStat {
    /// What the stage spans, e.g. `"applied->queued"`.
    pub name: String,
    pub p50_us: u64,
    pub p99_us: u64,
    pub samples: u64,
}

/// Most tasks one [`Request::ListTasks`] answers with (a summary is well under 1 KiB,
/// so the answer stays far below [`MAX_MGMT_BYTES`]).
pub const MAX_LIST_TASKS: u32 = 256;

/// A task's state in one word, for listing and filtering.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted, waiting for an eligible node.
    Pending,
    /// Assigned to a node, not completed yet.
    Running,
    /// Ran to an outcome (succeeded or failed).
    Done,
    /// Never ran: refused by the cluster or by the placed node.
    Refused,
}

impl TaskState {
    pub fn of(status: &TaskStatus) -> TaskState {
        match status {
            TaskStatus::Pending => TaskState::Pending,
            TaskStatus::Assigned { .. } => TaskState::Running,
            TaskStatus::Completed {
                outcome: crate::types::Outcome::Refused(_),
                ..
            }
            | TaskStatus::Rejected(_) => TaskState::Refused,
            TaskStatus::Completed { .. } => TaskState::Done,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Done,
            TaskState::Refused,
        ]
        .into_iter()
        .find(|t| t.word() == s)
    }
}

/// One task in a [`Response::Tasks`] list: where it stands, without its output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub task: TaskId,
    pub tenant: TenantId,
    pub state: TaskState,
    pub domain: Domain,
    /// The node it runs or ran on (none while pending or when the cluster refused it).
    pub node: Option<NodeId>,
    pub attempt: Option<u32>,
    /// How it ended (done, or refused by the node).
    pub outcome: Option<crate::types::Outcome>,
    /// Why the cluster refused it.
    pub rejected: Option<crate::types::Refusal>,
    pub ticks: u64,
    pub output_bytes: u32,
}

impl TaskSummary {
    pub fn of(id: TaskId, rec: &crate::state::TaskRecord) -> TaskSummary {
        let mut s = TaskSummary {
            task: id,
            tenant: rec.spec.tenant,
            state: TaskState::of(&rec.status),
            domain: rec.spec.domain,
            node: None,
            attempt: None,
            outcome: None,
            rejected: None,
            ticks: 0,
            output_bytes: 0,
        };
        match &rec.status {
            TaskStatus::Pending => {}
            TaskStatus::Assigned { node, attempt } => {
                s.node = Some(*node);
                s.attempt = Some(*attempt);
            }
            TaskStatus::Completed {
                node,
                attempt,
                outcome,
                ticks,
                output,
                ..
            } => {
                s.node = Some(*node);
                s.attempt = Some(*attempt);
                s.outcome = Some(outcome.clone());
                s.ticks = *ticks;
                s.output_bytes = u32::try_from(output.len()).unwrap_or(u32::MAX);
            }
            TaskStatus::Rejected(r) => s.rejected = Some(r.clone()),
        }
        s
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Submitted {
        task: TaskId,
    },
    Task {
        task: TaskId,
        tenant: TenantId,
        status: TaskStatus,
        /// The lines the task's module wrote with `log()`, once it completed.
        log: Vec<String>,
    },
    Cluster(ClusterView),
    /// The quota change is applied.
    QuotaSet {
        tenant: TenantId,
    },
    Contract(ContractAnswer),
    Contracts {
        clock_ms: u64,
        /// In force (active or suspended).
        contracts: Vec<ContractView>,
        /// Recently ended (the state keeps the last `MAX_ENDED_CONTRACTS`), oldest first.
        ended: Vec<ContractView>,
    },
    PolicySet {
        tenant: TenantId,
    },
    /// Answer to [`Request::SetPlacementPolicy`]: the log applied it.
    PlacementPolicySet {
        policy: crate::placement::PlacementKind,
    },
    /// Answer to [`Request::ListTasks`], newest first.
    Tasks(Vec<TaskSummary>),
    Refused(Denied),
    /// The membership change is in the log: `node` is now a member (`true`) or not.
    /// Raft learner → voter promotion follows as the node catches up.
    Member {
        node: NodeId,
        member: bool,
    },
    /// Answer to [`Request::Metrics`]: Prometheus text exposition format 0.0.4.
    Metrics(String),
    /// The cancellation is applied: `task` ended `Cancelled` (at `attempt` on `node`,
    /// none if it never ran).
    Cancelled {
        task: TaskId,
        node: Option<NodeId>,
        attempt: u32,
    },
    /// Answer to [`Request::SubmitBatch`]: submission `i` became `tasks[i]`.
    SubmittedBatch {
        tasks: Vec<TaskId>,
    },
    /// Answer to [`Request::AwaitTasks`], in the order asked.
    TaskReports(Vec<TaskReport>),
    /// Answer to [`Request::Discovered`]: the table by MAC, with cluster time now.
    Discovered {
        clock_ms: u64,
        machines: Vec<(crate::discovery::Mac, crate::discovery::DiscoveredMachine)>,
        /// Reports refused because the table was full / as invalid.
        refused_full: u64,
        refused_invalid: u64,
    },
    /// Answer to [`Request::AdmitDiscovered`]: the log has it.
    DiscoveredAdmitted {
        mac: crate::discovery::Mac,
        node: NodeId,
    },
    /// A gate group's answer to [`Request::Submit`]: the submission is job `job`,
    /// routed to `cluster` (`None`: no cluster was eligible, the job failed).
    Routed {
        job: u64,
        cluster: Option<xdv_federation::ClusterId>,
    },
    /// Answer to [`Request::RouteExplain`].
    RouteExplained {
        job: u64,
        text: String,
        /// Where the job is now (the text's last line says the same in words).
        status: crate::gate::JobStatus,
    },
    /// Answer to [`Request::RunBatch`] with first sequence number `seq` (so a client
    /// with several batches in flight on one connection knows which one this is):
    /// submission `i`'s task and status in `reports[i]`.
    BatchRan {
        seq: u64,
        reports: Vec<TaskReport>,
    },
}

/// What nodes send each other in `MgmtRequest` frames on peer connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerForward {
    /// A client's request, for the leader to check and propose.
    Client(SignedRequest),
    /// A command the sending node proposes about itself.
    Own(Proposal),
    /// Between a gate group and its member clusters (`crate::gate::FedMsg`).
    Federation(crate::gate::FedMsg),
}

impl PeerForward {
    /// Whether `from` may forward `command` as its own: only reports about itself
    /// (completions, heartbeats, audit roots); everything else is the leader's to
    /// propose or comes from a client through [`PeerForward::Client`].
    pub fn own_is_allowed(from: NodeId, command: &Command) -> bool {
        let about = match command {
            Command::TaskCompleted(c) => c.node,
            // A group only of the sender's own completions, within the batch limit.
            Command::TasksCompleted(cs) => {
                return !cs.is_empty()
                    && cs.len() <= MAX_BATCH_SUBMISSIONS
                    && cs.iter().all(|c| c.node == from);
            }
            Command::Heartbeat(h) => h.node,
            Command::LoadHeartbeat(l) => l.node,
            Command::PublishAuditRoot { node, .. } => *node,
            Command::ProposeContract(sc) => sc.contract.requesting_node,
            Command::AbortContracts { node, .. } => *node,
            Command::StateVote { node, .. } => *node,
            Command::TaskProgress { node, .. } => *node,
            Command::RequestExtension { node, .. } => *node,
            _ => return false,
        };
        about == from
    }
}

fn signing_bytes(cluster: u32, principal: Principal, seq: u64, request: &Request) -> Vec<u8> {
    let mut out = Vec::from(MGMT_SIGNING_DOMAIN);
    // Encoding plain data into a Vec cannot fail.
    let body = postcard::to_allocvec(&(cluster, principal, seq, request)).unwrap_or_default();
    out.extend_from_slice(&body);
    out
}

impl SignedRequest {
    pub fn sign(
        cluster: u32,
        principal: Principal,
        seq: u64,
        request: Request,
        seed: &[u8; 32],
    ) -> SignedRequest {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed));
        let sig = kp
            .sk
            .sign(signing_bytes(cluster, principal, seq, &request), None);
        SignedRequest {
            cluster,
            principal,
            seq,
            request,
            signature: sig.to_vec(),
        }
    }

    pub fn verify(&self, public_key: &[u8; 32]) -> bool {
        let Ok(sig) = ed25519_compact::Signature::from_slice(&self.signature) else {
            return false;
        };
        let pk = ed25519_compact::PublicKey::new(*public_key);
        let msg = signing_bytes(self.cluster, self.principal, self.seq, &self.request);
        pk.verify(msg, &sig).is_ok()
    }
}

/// Postcard with a size limit and no trailing bytes; never panics.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Denied> {
    if bytes.len() > MAX_MGMT_BYTES {
        return Err(Denied::Malformed(alloc::format!(
            "{} bytes (limit {MAX_MGMT_BYTES})",
            bytes.len()
        )));
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Denied::Malformed(alloc::format!(
            "{} trailing bytes",
            rest.len()
        ))),
        Err(e) => Err(Denied::Malformed(alloc::format!("{e}"))),
    }
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

/// A node's own view of who may do what: the operator key and each principal's
/// anti-replay window of query sequence numbers (submissions are checked against the
/// replicated window instead, so they agree on every node).
pub struct Gate {
    pub cluster: u32,
    pub operator_key: [u8; 32],
    queries: BTreeMap<Principal, ReplayWindow>,
}

impl Gate {
    pub fn new(cluster: u32, operator_key: [u8; 32]) -> Gate {
        Gate {
            cluster,
            operator_key,
            queries: BTreeMap::new(),
        }
    }

    /// Checks `req` against `state`; on success a request that changes the cluster
    /// comes back as the [`Command`] to propose (queries as `None`).
    pub fn authorize(
        &mut self,
        state: &ClusterState,
        req: &SignedRequest,
    ) -> Result<Option<Command>, Denied> {
        if req.cluster != self.cluster {
            return Err(Denied::WrongCluster {
                expected: self.cluster,
                got: req.cluster,
            });
        }
        let key = match req.principal {
            Principal::Operator => Some(self.operator_key),
            Principal::Tenant(t) => state.tenant_key(t),
        }
        .ok_or(Denied::UnknownPrincipal(req.principal))?;
        if !req.verify(&key) {
            return Err(Denied::BadSignature);
        }
        match &req.request {
            Request::Submit(s) => {
                let Principal::Tenant(tenant) = req.principal else {
                    return Err(Denied::OperatorCannotSubmit);
                };
                if let Some(task) = state.task_for_request(tenant, req.seq) {
                    return Err(Denied::Duplicate { task });
                }
                if let Some(t) = state.data().tenants.get(&tenant)
                    && let Err(highest) = t.seqs.check_range(req.seq)
                {
                    return Err(Denied::SeqOutOfRange {
                        seq: req.seq,
                        highest,
                    });
                }
                if let Some(t) = state.data().tenants.get(&tenant)
                    && let Err(last) = t.seqs.check(req.seq)
                {
                    return Err(Denied::Replayed { seq: req.seq, last });
                }
                Ok(Some(Command::AssignTask(spec_of(tenant, req.seq, s))))
            }
            Request::Reserve(r) => {
                let Principal::Tenant(tenant) = req.principal else {
                    return Err(Denied::OperatorCannotSubmit);
                };
                if let Some(t) = state.data().tenants.get(&tenant) {
                    t.seqs
                        .check_range(req.seq)
                        .map_err(|highest| Denied::SeqOutOfRange {
                            seq: req.seq,
                            highest,
                        })?;
                    t.seqs
                        .check(req.seq)
                        .map_err(|last| Denied::Replayed { seq: req.seq, last })?;
                }
                // The requesting node fills in itself, the time and its signature.
                let contract = crate::contract::Contract {
                    contract_id: crate::contract::contract_id_for(tenant, req.seq),
                    requesting_node: NodeId(0),
                    target_node: r.target,
                    tenant,
                    request_seq: req.seq,
                    domain: r.domain,
                    resource_set: r.resources.clone(),
                    duration_ms: r.duration_ms,
                    capability: r.capability,
                    logical_timestamp: 0,
                };
                Ok(Some(Command::ProposeContract(
                    crate::contract::SignedContract {
                        contract,
                        signature: [0; 64],
                    },
                )))
            }
            Request::Release { contract } => {
                let Principal::Tenant(tenant) = req.principal else {
                    return Err(Denied::OperatorCannotSubmit);
                };
                self.check_query_seq(req)?;
                let rec = state
                    .data()
                    .contracts
                    .get(contract)
                    .ok_or(Denied::UnknownContract(*contract))?;
                if rec.contract.tenant != tenant {
                    return Err(Denied::NotYourContract(*contract));
                }
                Ok(Some(Command::ReleaseContract {
                    contract_id: *contract,
                    by: crate::state::Party::Tenant(tenant),
                }))
            }
            Request::Contracts => self.check_query_seq(req).map(|()| None),
            Request::SetPolicy { tenant, priority } => {
                self.check_operator(state, req)?;
                if state.tenant_key(*tenant).is_none() {
                    return Err(Denied::UnknownPrincipal(Principal::Tenant(*tenant)));
                }
                Ok(Some(Command::SetPolicy {
                    tenant: *tenant,
                    priority: *priority,
                    seq: req.seq,
                }))
            }
            Request::SetPlacementPolicy { policy } => {
                self.check_operator(state, req)?;
                Ok(Some(Command::SetPlacementPolicy {
                    policy: *policy,
                    seq: req.seq,
                }))
            }
            Request::AddWorker {
                node,
                public_key,
                observer,
            } => {
                self.check_operator(state, req)?;
                if node.0 == 0 || node.0 > MAX_MEMBER_ID {
                    return Err(Denied::Membership(MembershipDenied::BadNodeId(*node)));
                }
                if state.data().nodes.contains_key(node) {
                    return Err(Denied::Membership(MembershipDenied::AlreadyMember(*node)));
                }
                // The proposing node fills in the cores and capabilities members offer.
                Ok(Some(Command::AddMember {
                    info: crate::WorkerInfo {
                        node: *node,
                        public_key: *public_key,
                        resources: crate::Resources {
                            k_cores: 0,
                            q_units: 0,
                            phi_windows: 0,
                        },
                        capabilities: Vec::new(),
                        observer: *observer,
                    },
                    seq: req.seq,
                }))
            }
            Request::RemoveWorker { node } => {
                self.check_operator(state, req)?;
                if !state.data().nodes.contains_key(node) {
                    return Err(Denied::Membership(MembershipDenied::NotMember(*node)));
                }
                Ok(Some(Command::RemoveMember {
                    node: *node,
                    seq: req.seq,
                }))
            }
            Request::SetQuota { tenant, quota } => {
                self.check_operator(state, req)?;
                if state.tenant_key(*tenant).is_none() {
                    return Err(Denied::UnknownPrincipal(Principal::Tenant(*tenant)));
                }
                if let Some(q) = quota
                    && (q.memory_pages > MAX_TASK_MEMORY_PAGES
                        || q.table_elements > MAX_TASK_TABLE_ELEMENTS)
                {
                    return Err(Denied::Malformed(alloc::format!(
                        "quota limits over the sandbox maxima ({MAX_TASK_MEMORY_PAGES} pages, {MAX_TASK_TABLE_ELEMENTS} table elements)"
                    )));
                }
                Ok(Some(Command::SetQuota {
                    tenant: *tenant,
                    quota: *quota,
                    seq: req.seq,
                }))
            }
            Request::SubmitBatch(items) | Request::RunBatch(items) => {
                self.authorize_batch(state, req, items)
            }
            Request::AwaitTasks { tasks } => {
                check_await_list(tasks)?;
                self.check_query_seq(req)?;
                for task in tasks {
                    let rec = state.task(*task).ok_or(Denied::UnknownTask(*task))?;
                    if !req.principal.may_see(rec.spec.tenant) {
                        return Err(Denied::OutOfScope { task: *task });
                    }
                }
                Ok(None)
            }
            Request::TaskStatus { task } | Request::AwaitTask { task } => {
                self.check_query_seq(req)?;
                let rec = state.task(*task).ok_or(Denied::UnknownTask(*task))?;
                match req.principal {
                    Principal::Tenant(t) if t != rec.spec.tenant => {
                        Err(Denied::OutOfScope { task: *task })
                    }
                    _ => Ok(None),
                }
            }
            Request::ClusterStatus | Request::ListTasks { .. } => {
                self.check_query_seq(req).map(|()| None)
            }
            Request::Metrics | Request::Discovered => {
                if req.principal != Principal::Operator {
                    return Err(Denied::OperatorOnly);
                }
                self.check_query_seq(req).map(|()| None)
            }
            Request::AdmitDiscovered { mac, node } => {
                self.check_operator(state, req)?;
                let discovery = &state.data().discovery;
                if let Some(admitted) = discovery.admitted_as(mac) {
                    return Err(Denied::MacAdmitted {
                        mac: *mac,
                        node: admitted,
                    });
                }
                if !discovery.machines.contains_key(mac) {
                    return Err(Denied::UnknownMac(*mac));
                }
                if !state.data().nodes.contains_key(node) {
                    return Err(Denied::Membership(MembershipDenied::NotMember(*node)));
                }
                Ok(Some(Command::AdmitDiscovered {
                    mac: *mac,
                    node: *node,
                    seq: req.seq,
                }))
            }
            Request::RouteExplain { job } => {
                self.check_query_seq(req)?;
                let gate = state
                    .gate()
                    .ok_or_else(|| Denied::NotReady("not a gate group".into()))?;
                let j = gate
                    .jobs
                    .get(job)
                    .ok_or(Denied::UnknownTask(TaskId(*job)))?;
                if !req.principal.may_see(j.tenant) {
                    return Err(Denied::OutOfScope { task: TaskId(*job) });
                }
                Ok(None)
            }
            Request::Cancel { task } => {
                let Principal::Tenant(tenant) = req.principal else {
                    return Err(Denied::OperatorCannotSubmit);
                };
                self.check_query_seq(req)?;
                let rec = state.task(*task).ok_or(Denied::UnknownTask(*task))?;
                if rec.spec.tenant != tenant {
                    return Err(Denied::OutOfScope { task: *task });
                }
                match &rec.status {
                    TaskStatus::Pending | TaskStatus::Assigned { .. } => {
                        Ok(Some(Command::CancelTask {
                            task: *task,
                            tenant,
                        }))
                    }
                    other => Err(Denied::TaskFinished {
                        task: *task,
                        outcome: finished_word(other),
                    }),
                }
            }
        }
    }

    /// A submission a gate group dispatched here ([`crate::gate::FedMsg::Dispatch`]):
    /// signed by the tenant for the gate group's cluster id `gate_cluster` and
    /// forwarded unchanged, so it is checked as a submission to that cluster id
    /// against this cluster's tenants (the same keys are provisioned on both). Only
    /// `Submit` is accepted this way.
    pub fn authorize_routed(
        &mut self,
        state: &ClusterState,
        req: &SignedRequest,
        gate_cluster: u32,
    ) -> Result<Option<Command>, Denied> {
        if !matches!(req.request, Request::Submit(_)) {
            return Err(Denied::Malformed(
                "a gate dispatches only submissions".into(),
            ));
        }
        let own = core::mem::replace(&mut self.cluster, gate_cluster);
        let r = self.authorize(state, req);
        self.cluster = own;
        r
    }

    /// `SubmitBatch`: one signature (already checked) for every submission; each
    /// takes `seq + i`. Numbers already accepted (a retried batch) are left out of the
    /// command — the answer names their tasks; any other number the window refuses
    /// refuses the whole batch. `Ok(None)` when every submission was already accepted.
    fn authorize_batch(
        &mut self,
        state: &ClusterState,
        req: &SignedRequest,
        items: &[Submit],
    ) -> Result<Option<Command>, Denied> {
        let Principal::Tenant(tenant) = req.principal else {
            return Err(Denied::OperatorCannotSubmit);
        };
        let seqs = batch_seqs(req.seq, items.len())?;
        let window = state.data().tenants.get(&tenant).map(|t| &t.seqs);
        let mut specs = Vec::new();
        for (seq, s) in seqs.zip(items) {
            if state.task_for_request(tenant, seq).is_some() {
                continue;
            }
            if let Some(w) = window {
                window_admits(w, seq)?;
            }
            specs.push(spec_of(tenant, seq, s));
        }
        if specs.is_empty() {
            return Ok(None);
        }
        let bytes = encode(&specs).len();
        if bytes > MAX_BATCH_ENTRY_BYTES {
            return Err(Denied::Malformed(alloc::format!(
                "batch of {} submissions encodes to {bytes} bytes, over the {MAX_BATCH_ENTRY_BYTES} a log entry holds; send fewer or smaller",
                items.len()
            )));
        }
        Ok(Some(Command::AssignTasks(specs)))
    }

    /// An operator request: the replicated window first (a request applied before a
    /// leader change), then this node's own.
    fn check_operator(&mut self, state: &ClusterState, req: &SignedRequest) -> Result<(), Denied> {
        if req.principal != Principal::Operator {
            return Err(Denied::OperatorOnly);
        }
        window_admits(&state.data().operator_seqs, req.seq)?;
        self.check_query_seq(req)
    }

    fn check_query_seq(&mut self, req: &SignedRequest) -> Result<(), Denied> {
        let w = self.queries.entry(req.principal).or_default();
        window_admits(w, req.seq)?;
        w.accept(req.seq);
        Ok(())
    }
}

/// Room in a log entry for a batch's task specs (the proposal's envelope, its time
/// and the command tag take the rest of [`crate::MAX_ENTRY_BYTES`]).
pub const MAX_BATCH_ENTRY_BYTES: usize = crate::MAX_ENTRY_BYTES - 64;

/// The task spec a tenant's submission becomes under sequence number `seq`.
fn spec_of(tenant: TenantId, seq: u64, s: &Submit) -> TaskSpec {
    TaskSpec {
        tenant,
        request_seq: seq,
        work: s.work.clone(),
        input: s.input.clone(),
        budget_ticks: s.budget_ticks,
        priority: s.priority,
        guards: s.guards.clone(),
        needs: s.needs.clone(),
        domain: s.domain,
        pin: s.pin,
        contract: s.contract,
        timeout_ms: s.timeout_ms,
    }
}

/// The sequence numbers of a batch of `len` submissions starting at `seq`: 1 to
/// [`MAX_BATCH_SUBMISSIONS`] of them, all at or below [`crate::types::MAX_SEQ`].
pub fn batch_seqs(seq: u64, len: usize) -> Result<core::ops::Range<u64>, Denied> {
    if len == 0 || len > MAX_BATCH_SUBMISSIONS {
        return Err(Denied::Malformed(alloc::format!(
            "a batch holds 1 to {MAX_BATCH_SUBMISSIONS} submissions, not {len}"
        )));
    }
    let end = seq.saturating_add(len as u64);
    if end - 1 > crate::types::MAX_SEQ {
        return Err(Denied::SeqOutOfRange { seq, highest: 0 });
    }
    Ok(seq..end)
}

/// An `AwaitTasks` list: 1 to [`MAX_AWAIT_TASKS`] tasks, none twice.
fn check_await_list(tasks: &[TaskId]) -> Result<(), Denied> {
    if tasks.is_empty() || tasks.len() > MAX_AWAIT_TASKS {
        return Err(Denied::Malformed(alloc::format!(
            "AwaitTasks waits for 1 to {MAX_AWAIT_TASKS} tasks, not {}",
            tasks.len()
        )));
    }
    let mut sorted = tasks.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Denied::Malformed(alloc::format!(
            "AwaitTasks names {} twice",
            w[0]
        )));
    }
    Ok(())
}

/// Whether anti-replay window `w` admits `seq` (in range, not seen), as a refusal.
fn window_admits(w: &ReplayWindow, seq: u64) -> Result<(), Denied> {
    w.check_range(seq)
        .map_err(|highest| Denied::SeqOutOfRange { seq, highest })?;
    w.check(seq).map_err(|last| Denied::Replayed { seq, last })
}

/// How a finished task ended, in words (for [`Denied::TaskFinished`]).
pub fn finished_word(status: &TaskStatus) -> String {
    match status {
        TaskStatus::Completed { outcome, .. } => alloc::format!("{outcome}"),
        TaskStatus::Rejected(r) => alloc::format!("refused: {r}"),
        TaskStatus::Pending => "pending".into(),
        TaskStatus::Assigned { .. } => "running".into(),
    }
}

/// Domain tag of the peer handshake signature.
pub const PEER_AUTH_DOMAIN: &[u8] = b"XDV-PEER-AUTH-v1\0";

fn peer_auth_bytes(cluster: u32, signer: NodeId, verifier: NodeId, nonce: &[u8]) -> Vec<u8> {
    let mut m = Vec::from(PEER_AUTH_DOMAIN);
    m.extend_from_slice(&cluster.to_le_bytes());
    m.extend_from_slice(&signer.0.to_le_bytes());
    m.extend_from_slice(&verifier.0.to_le_bytes());
    m.extend_from_slice(nonce);
    m
}

/// The `Auth` signature `signer` sends after `verifier`'s `Hello` carried `nonce`: it
/// proves the signer holds its node key, for this cluster, to this peer, now.
pub fn sign_peer_auth(
    seed: &[u8; 32],
    cluster: u32,
    signer: NodeId,
    verifier: NodeId,
    nonce: &[u8],
) -> Vec<u8> {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed));
    kp.sk
        .sign(peer_auth_bytes(cluster, signer, verifier, nonce), None)
        .to_vec()
}

/// Checks an `Auth` signature made by [`sign_peer_auth`].
pub fn verify_peer_auth(
    public_key: &[u8; 32],
    cluster: u32,
    signer: NodeId,
    verifier: NodeId,
    nonce: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(sig) = ed25519_compact::Signature::from_slice(signature) else {
        return false;
    };
    ed25519_compact::PublicKey::new(*public_key)
        .verify(peer_auth_bytes(cluster, signer, verifier, nonce), &sig)
        .is_ok()
}
