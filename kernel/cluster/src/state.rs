//! The cluster state machine: applied identically on every node, entry by entry, from
//! the Raft log. It owns the membership and liveness view, every task from submission to
//! completion, the contracts in force, the shard table, tenant quotas and the published
//! audit roots.
//!
//! Invariants (asserted after every entry in debug builds, see [`ClusterState::check`]):
//! - a task is in exactly one status; `Pending` tasks are exactly the `pending` list;
//! - a node's `assigned` count equals the tasks `Assigned` to it; a tenant's
//!   `in_flight` equals its `Pending` + `Assigned` tasks;
//! - no two contracts in force on one target and domain share a resource;
//! - `time` only grows; `applied_index` only grows.
//!
//! Determinism: only `BTreeMap`/`BTreeSet`/`Vec` are iterated; nothing reads a clock; the
//! hash is SHA-256 over the canonical encoding of the small fields (postcard, declaration
//! order, maps in key order) and the content roots of the large maps ([`HashedMap`]:
//! tasks, requests, finished, tenants, contracts), so equal states give equal hashes
//! and an entry's hash costs what it changed, not what the state retains.

use crate::command::{Command, DecodeError, Proposal};
use crate::contract::{
    ContractEnd, ContractRecord, ContractState, EndedContract, MAX_ENDED_CONTRACTS, SignedContract,
};
use crate::hashed::{HashedMap, HashedSet, MapRoot, ShadowRoot};
use crate::placement::{
    Candidate, PlacementContext, PlacementKind, PlacementPolicy, RouteCache, RouteInputs,
};
use crate::shard::{Migration, ShardMap, shard_of};
use crate::types::*;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xdv_audit::FederatedAuditRoot;
use xdv_federation::timeout::{
    Authority, Decision, JobEnd, JobTimeoutSpec, TimeoutError, TimeoutReason, TimeoutState,
    TimeoutTracker,
};
use xdv_types::{Hash32, NodeId, Priority, TaskId, TenantId};

/// Domain tag in front of the canonical encoding when hashing the state.
pub const STATE_HASH_DOMAIN: &[u8] = b"XDV-CLUSTER-STATE-v2\0";
/// Version byte in front of a snapshot image.
pub const SNAPSHOT_VERSION: u8 = 5;
/// Most contracts in force at once.
pub const MAX_CONTRACTS: usize = 1024;
/// Most Q containers or Φ windows one node may offer (its devices together).
pub const MAX_OFFERED_SLOTS: u16 = 256;
/// Most tasks waiting for a node.
pub const MAX_PENDING: usize = 4096;
/// Most registered tenants.
pub const MAX_TENANTS: usize = 1024;

/// State-machine parameters; identical on every node (part of the hashed state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub shard_count: u32,
    /// Tasks one available core may hold assigned at once.
    pub tasks_per_core: u32,
    /// Finished tasks kept for status queries; older ones are dropped, oldest first.
    pub max_retained_tasks: usize,
    pub max_nodes: usize,
    /// Task timeouts (AD-34 local authority): defaults, maximum, check interval,
    /// stuck threshold.
    pub timeouts: TaskTimeouts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shard_count: 16,
            tasks_per_core: 64,
            max_retained_tasks: 1024,
            max_nodes: 64,
            timeouts: TaskTimeouts::DEFAULT,
        }
    }
}

/// An impossible configuration value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    ShardCount(u32),
    TasksPerCore(u32),
    MaxRetained(usize),
    MaxNodes(usize),
    Timeouts(&'static str),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::ShardCount(n) => write!(
                f,
                "shard_count {n} must be 1..={}",
                crate::shard::MAX_SHARDS
            ),
            ConfigError::TasksPerCore(n) => write!(f, "tasks_per_core {n} must be 1..=4096"),
            ConfigError::MaxRetained(n) => write!(f, "max_retained_tasks {n} must be 1..=1000000"),
            ConfigError::MaxNodes(n) => write!(f, "max_nodes {n} must be 1..=1024"),
            ConfigError::Timeouts(why) => write!(f, "timeouts: {why}"),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shard_count == 0 || self.shard_count > crate::shard::MAX_SHARDS {
            return Err(ConfigError::ShardCount(self.shard_count));
        }
        if self.tasks_per_core == 0 || self.tasks_per_core > 4096 {
            return Err(ConfigError::TasksPerCore(self.tasks_per_core));
        }
        if self.max_retained_tasks == 0 || self.max_retained_tasks > 1_000_000 {
            return Err(ConfigError::MaxRetained(self.max_retained_tasks));
        }
        if self.max_nodes == 0 || self.max_nodes > 1024 {
            return Err(ConfigError::MaxNodes(self.max_nodes));
        }
        self.timeouts.validate().map_err(ConfigError::Timeouts)?;
        Ok(())
    }
}

/// A member as the state machine sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub info: WorkerInfo,
    pub up: bool,
    pub available_cores: u16,
    pub local_load: u32,
    /// Tasks assigned to it and not completed.
    pub assigned: u32,
    pub completed: u64,
    pub last_heartbeat: Option<GlobalTime>,
    /// Its latest published audit root: (records covered, Merkle root).
    pub audit: Option<(u64, Hash32)>,
    /// Q containers and Φ windows its devices offer, from its latest heartbeat (a
    /// failed device offers none).
    pub offered_q: u16,
    pub offered_phi: u16,
    /// Its state hash disagreed with the majority's (hash voting): no placements.
    pub quarantined: bool,
    /// Its latest load heartbeat (`Command::LoadHeartbeat`) and the cluster time
    /// (`clock_ms`) it was applied at; `None` before the first.
    pub load: Option<(LoadReport, u64)>,
}

impl NodeRecord {
    fn capacity(&self, cfg: &Config, d: Domain) -> u32 {
        match d {
            Domain::K => u32::from(self.available_cores).saturating_mul(cfg.tasks_per_core),
            // A container or window runs one job at a time.
            _ => u32::from(self.offered(d)),
        }
    }

    /// Units of domain `d` the node offers: its cores for K, what its devices offer
    /// now for Q and Φ.
    pub fn offered(&self, d: Domain) -> u16 {
        match d {
            Domain::K => self.info.resources.k_cores,
            Domain::Q => self.offered_q,
            Domain::Phi => self.offered_phi,
        }
    }
}

/// Where a task stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Accepted, waiting for an eligible node.
    Pending,
    Assigned {
        node: NodeId,
        attempt: u32,
    },
    Completed {
        node: NodeId,
        attempt: u32,
        outcome: Outcome,
        ticks: u64,
        output_hash: Hash32,
        output: Vec<u8>,
    },
    Rejected(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub status: TaskStatus,
    pub shard: u32,
    pub submitted: GlobalTime,
    /// Nodes it was taken from by recovery, in order.
    pub replaced_from: Vec<NodeId>,
    /// The `log()` lines of the completion that finished it ([`crate::keep_log`]).
    pub log: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub public_key: [u8; 32],
    pub quota: Option<Quota>,
    /// Request sequence numbers taken (accepted or refused): each at most once.
    pub seqs: ReplayWindow,
    pub in_flight: u32,
    pub budget_used_ticks: u64,
    pub submitted: u64,
}

crate::postcard_item_hash!(TaskRecord, ContractRecord, NodeRecord, EndedContract);

impl crate::hashed::ItemHash for TenantRecord {
    /// The fields' encoding, with the anti-replay window by its root (a window holds
    /// up to `MAX_WINDOW_SEQS` numbers; one submission changes one of them).
    fn feed(&self, h: &mut Sha256, scratch: bool) {
        let TenantRecord {
            public_key,
            quota,
            seqs,
            in_flight,
            budget_used_ticks,
            submitted,
        } = self;
        let fields = (public_key, quota, in_flight, budget_used_ticks, submitted);
        crate::hashed::feed_postcard(h, &fields);
        seqs.feed_hash(h, scratch);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub entries: u64,
    pub invalid_entries: u64,
    pub tasks_refused: u64,
    pub contracts_refused: u64,
    pub stale_completions: u64,
    /// Tasks ended `Failed` after `MAX_ATTEMPTS` attempts.
    pub tasks_failed: u64,
    pub last_snapshot_id: Option<u64>,
    /// Attempts the cluster timed out (re-placed or ended `Timeout`).
    pub tasks_timed_out: u64,
    /// Tasks their tenant cancelled.
    pub tasks_cancelled: u64,
    /// Progress reports and extension requests for an attempt that is not the task's
    /// current one (a stale fence token), refused.
    pub stale_reports: u64,
    pub extensions_granted: u64,
    /// Contracts that ended after being in force (the key of the next one in
    /// [`StateData::ended_contracts`]).
    pub contracts_ended: u64,
}

/// Everything replicated; [`ClusterState::hash`] hashes it (see [`state_hash`]), and
/// its postcard encoding is the snapshot image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateData {
    pub config: Config,
    pub applied_index: u64,
    pub time: GlobalTime,
    pub next_task: u64,
    pub nodes: HashedMap<NodeId, NodeRecord>,
    pub tasks: HashedMap<TaskId, TaskRecord>,
    pub requests: HashedMap<(TenantId, u64), TaskId>,
    pub pending: Vec<TaskId>,
    pub finished: HashedSet<TaskId>,
    pub tenants: HashedMap<TenantId, TenantRecord>,
    pub contracts: HashedMap<u64, ContractRecord>,
    /// The most recent [`MAX_ENDED_CONTRACTS`] contracts that ended, by the order they
    /// ended in (the value of `counters.contracts_ended` then): how each ended stays
    /// visible to its holder.
    pub ended_contracts: HashedMap<u64, EndedContract>,
    pub shards: ShardMap,
    pub counters: Counters,
    /// The operator's sequence numbers, replicated (hardening case 8).
    pub operator_seqs: ReplayWindow,
    /// Cluster time in ms: advanced only by the leader's `ClockTick`s.
    pub clock_ms: u64,
    /// Per-tenant policy priority (contracts' conflicts); `Normal` when unset.
    pub policies: BTreeMap<TenantId, Priority>,
    /// Hash voting: the state hashes nodes reported per vote index (the last
    /// [`VOTE_ROUNDS_KEPT`] rounds).
    pub votes: HashedMap<u64, BTreeMap<NodeId, Hash32>>,
    /// Timeout tracking of every `Assigned` task (exactly those), in cluster time.
    pub timeouts: TimeoutTracker,
    /// The node whose `ClockTick`s the log carries (the leader as the log sees it); a
    /// change steps every tracked task's timeout fence token.
    pub clock_leader: Option<NodeId>,
    /// The placement policy in force (the operator's `SetPlacementPolicy`).
    pub placement: PlacementKind,
    /// Machines that reported themselves in discovery mode, and admitted MACs.
    pub discovery: crate::discovery::Discovery,
    /// A gate group's router and job table (`crate::gate`); `None` in an ordinary
    /// cluster, whose state hash is then what it was before gates existed.
    pub gate: Option<crate::gate::GateState>,
    /// Tasks a gate dispatched here (`AssignRoutedTask`), until they end: their
    /// timeouts are gate-coordinated. Hashed only when not empty, so a cluster that
    /// never ran a routed task has the state hash it had before.
    pub routed: BTreeMap<TaskId, RoutedTask>,
}

/// A task a gate group dispatched to this cluster (gate-coordinated timeouts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedTask {
    /// The gate group's cluster id (the tracker's gate is `NodeId(gate_cluster)`).
    pub gate_cluster: u32,
    /// The gate's job id.
    pub job: u64,
    /// The gate was silent for the fallback period: this cluster is the task's
    /// timeout authority for good (later attempts are tracked locally).
    pub fell_back: bool,
    /// The fence token its last tracking ended with (a re-placed attempt keeps it).
    pub fence_token: u64,
}

/// The state hash over `d` (see [`ClusterState::hash`]); `from_scratch` ignores the
/// maps' caches.
/// Every field is named, so a new field cannot be left out of the hash unnoticed.
/// The timeout tracker enters as its small fields and the root of its jobs
/// (`timeout_jobs`: [`crate::hashed::ShadowRoot`]'s, or from scratch when `None`), so an
/// entry costs the jobs it changed, not every task in flight.
fn state_hash(
    d: &StateData,
    from_scratch: bool,
    timeout_jobs: Option<&ShadowRoot<TaskId, TimeoutState>>,
) -> Hash32 {
    let StateData {
        config,
        applied_index,
        time,
        next_task,
        nodes,
        tasks,
        requests,
        pending,
        finished,
        tenants,
        contracts,
        ended_contracts,
        shards,
        counters,
        operator_seqs,
        clock_ms,
        policies,
        votes,
        timeouts,
        clock_leader,
        placement,
        discovery,
        gate,
        routed,
    } = d;
    // `finished` is not hashed: it is exactly the retained tasks whose status is final
    // (an invariant checked after every entry in debug builds and on every snapshot
    // restore), so the tasks' root covers it.
    let _ = finished;
    let small = (
        (config, applied_index, time, next_task, pending),
        (shards, counters, operator_seqs, clock_ms, policies),
        (
            (
                timeouts.config(),
                timeouts.next_check_ms(),
                &timeouts.metrics,
            ),
            clock_leader,
            placement,
            discovery,
        ),
    );
    let timeout_jobs_root = match timeout_jobs {
        Some(shadow) if !from_scratch => shadow.root(timeouts.jobs()),
        _ => ShadowRoot::root_from_scratch(timeouts.jobs()),
    };
    let mut h = Sha256::new();
    h.update(STATE_HASH_DOMAIN);
    crate::hashed::feed_postcard(&mut h, &small);
    for m in [
        nodes as &dyn MapRoot,
        tasks,
        requests,
        tenants,
        contracts,
        ended_contracts,
        votes,
    ] {
        let r = if from_scratch {
            m.root_from_scratch()
        } else {
            m.root()
        };
        h.update(r.0);
    }
    h.update(timeout_jobs_root.0);
    if let Some(g) = gate {
        g.feed_hash(&mut h, from_scratch);
    }
    if !routed.is_empty() {
        crate::hashed::feed_postcard(&mut h, routed);
    }
    Hash32(h.finalize().into())
}

/// Nodes vote their state hash after every entry whose index is a multiple of this.
pub const VOTE_EVERY: u64 = 32;
/// Vote rounds kept (older votes are refused as stale).
pub const VOTE_ROUNDS_KEPT: usize = 4;

/// What applying one entry did, for the audit log and the node's own actions (a node
/// runs the tasks assigned to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    TaskAssigned {
        task: TaskId,
        tenant: TenantId,
        node: NodeId,
        attempt: u32,
    },
    TaskQueued {
        task: TaskId,
    },
    TaskRejected {
        task: TaskId,
        reason: Refusal,
    },
    DuplicateRequest {
        task: TaskId,
    },
    TaskCompleted {
        task: TaskId,
        node: NodeId,
        outcome: Outcome,
        ticks: u64,
        output_hash: Hash32,
    },
    StaleCompletion {
        task: TaskId,
        node: NodeId,
        attempt: u32,
    },
    TaskReplaced {
        task: TaskId,
        from: NodeId,
        to: Option<NodeId>,
        attempt: u32,
    },
    WorkerAdded {
        node: NodeId,
    },
    WorkerRefused {
        node: NodeId,
        reason: Refusal,
    },
    WorkerRemoved {
        node: NodeId,
    },
    Heartbeat {
        node: NodeId,
    },
    /// A member's load heartbeat was recorded.
    LoadReported {
        node: NodeId,
        queue_depth: u32,
        utilisation_ppm: u32,
    },
    /// The operator chose the placement policy.
    PlacementPolicySet {
        policy: PlacementKind,
    },
    NodeDown {
        node: NodeId,
    },
    NodeUp {
        node: NodeId,
    },
    ShardMigrated(Migration),
    Contract(ContractEvent),
    PolicySet {
        tenant: TenantId,
        priority: Priority,
    },
    /// Hash voting found `node`'s state hash at `index` different from the majority's:
    /// it is quarantined. Every node records the alarm.
    HashMismatch {
        index: u64,
        node: NodeId,
        theirs: Hash32,
        majority: Hash32,
    },
    Voted {
        node: NodeId,
        index: u64,
    },
    ClockTick {
        now_ms: u64,
    },
    QuotaSet {
        tenant: TenantId,
    },
    TenantRegistered {
        tenant: TenantId,
    },
    RootPublished {
        node: NodeId,
        records: u64,
    },
    SnapshotMarked {
        id: u64,
    },
    Invalid(DecodeError),
    Ignored(IgnoredReason),
    /// A discovery-mode machine's report was applied (`outcome` says how).
    Discovered {
        mac: crate::discovery::Mac,
        outcome: crate::discovery::Reported,
    },
    /// `AdmitDiscovered` for `mac` as `node`: done, or why not.
    DiscoveredAdmitted {
        mac: crate::discovery::Mac,
        node: NodeId,
        refused: Option<crate::discovery::AdmitRefused>,
    },
    /// A gate group's command was applied (`crate::gate`).
    Gate(crate::gate::GateEvent),
    /// The current attempt of `task` made progress (its stuck timer restarted).
    TaskProgress {
        task: TaskId,
        node: NodeId,
        attempt: u32,
    },
    ExtensionGranted {
        task: TaskId,
        node: NodeId,
        attempt: u32,
        extension_ms: u64,
        /// The attempt's deadline now, in cluster ms.
        deadline_ms: u64,
    },
    /// A progress report or extension request for an attempt that is not the task's
    /// current one (a stale fence token): refused and counted.
    StaleReport {
        task: TaskId,
        node: NodeId,
        attempt: u32,
    },
    /// The cluster timed attempt `attempt` out; `retry` says whether it was re-placed
    /// (else the task ended `Timeout`).
    TaskTimedOut {
        task: TaskId,
        node: NodeId,
        attempt: u32,
        reason: String,
        retry: bool,
    },
    /// Its tenant cancelled `task`; `node` ran its current attempt (none if pending).
    TaskCancelled {
        task: TaskId,
        node: Option<NodeId>,
        attempt: u32,
    },
    /// The log's `ClockTick`s now come from `leader`: every tracked task's timeout
    /// fence token stepped by one and its stuck timer restarted.
    TimeoutLeaderChanged {
        leader: NodeId,
    },
    /// A routed task's timeout tracking has a report for its gate group
    /// (`gate_cluster`, job `job`): the leader sends it (progress, a timeout report —
    /// resent every report interval until acknowledged — or a leader transfer).
    GateReport {
        task: TaskId,
        gate_cluster: u32,
        job: u64,
        report: crate::gate::JobReport,
    },
    /// The gate was silent for `silent_ms` (the fallback period): the cluster is the
    /// routed task's timeout authority from now on.
    GateFellBack {
        task: TaskId,
        job: u64,
        silent_ms: u64,
    },
    /// The gate's timeout verdict for `task` (`GateVerdict`) was applied: the task
    /// ended `Timeout` on the gate's authority.
    GateTimedOut {
        task: TaskId,
        job: u64,
        reason: TimeoutReason,
        fence_token: u64,
    },
    /// A gate message (`GateVerdict`, `GateAck`) refused: a fence token older than the
    /// task's (counted in `timeouts.metrics.fence_rejections`), or a task that is not
    /// (any more) that job's running attempt.
    GateMessageRefused {
        task: TaskId,
        reason: String,
    },
    /// `node` published a root over `records` records that does not extend its root
    /// over `held` records the cluster holds (its consistency proof fails): its audit
    /// history differs from what it published. Not taken; every node records it.
    AuditRootInconsistent {
        node: NodeId,
        held: u64,
        records: u64,
    },
}

/// Something that happened to a contract, with what both of its nodes need to record it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractEvent {
    pub id: u64,
    /// SHA-256 of the contract's signed bytes.
    pub hash: Hash32,
    pub tenant: TenantId,
    pub requester: NodeId,
    pub target: NodeId,
    pub domain: Domain,
    pub change: ContractChange,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractChange {
    Accepted,
    Rejected(Refusal),
    /// Displaced by a contract of a tenant with a higher policy priority.
    Preempted {
        by: u64,
    },
    Released,
    Expired,
    /// An end is down (seed 000 §6.3).
    Suspended,
    Resumed,
    Reallocated {
        from: NodeId,
        to: NodeId,
    },
    /// The target's device failed: the container or window was aborted (§6.1).
    Aborted(String),
    /// A Φ window went unstable: the envelope is invalid and the window ends (§6.2).
    Terminated(String),
}

impl ContractChange {
    pub fn name(&self) -> &'static str {
        match self {
            ContractChange::Accepted => "accepted",
            ContractChange::Rejected(_) => "rejected",
            ContractChange::Preempted { .. } => "preempted",
            ContractChange::Released => "released",
            ContractChange::Expired => "expired",
            ContractChange::Suspended => "suspended",
            ContractChange::Resumed => "resumed",
            ContractChange::Reallocated { .. } => "reallocated",
            ContractChange::Aborted(_) => "aborted",
            ContractChange::Terminated(_) => "terminated",
        }
    }
}

impl ContractEnd {
    /// The contract event of this end.
    pub fn change(&self) -> ContractChange {
        match self {
            ContractEnd::Preempted { by } => ContractChange::Preempted { by: *by },
            ContractEnd::Released => ContractChange::Released,
            ContractEnd::Expired => ContractChange::Expired,
            ContractEnd::Aborted(w) => ContractChange::Aborted(w.clone()),
            ContractEnd::Terminated(w) => ContractChange::Terminated(w.clone()),
        }
    }
}

fn contract_event(c: &crate::contract::Contract, change: ContractChange) -> Event {
    Event::Contract(ContractEvent {
        id: c.contract_id,
        hash: c.hash(),
        tenant: c.tenant,
        requester: c.requesting_node,
        target: c.target_node,
        domain: c.domain,
        change,
    })
}

/// Who releases a contract: its holder (the tenant) or one of its nodes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Party {
    Tenant(TenantId),
    Node(NodeId),
}

/// Cluster time one `ClockTick` adds (the leader proposes one per second of its own
/// time, however busy the log is: contract durations do not depend on traffic).
pub const CLOCK_TICK_MS: u64 = 1_000;

/// Why an otherwise valid command changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IgnoredReason {
    AlreadyApplied,
    UnknownNode,
    UnknownTenant,
    UnknownContract,
    NotAParty,
    AlreadyInThatState,
    OutputTooLarge,
    OlderRoot,
    QuotaOverMaximum,
    /// An operator request whose sequence number was already applied.
    Replayed,
    /// A state vote for an index that is not a vote index, not applied yet, or stale.
    BadVote,
    /// A cancellation for a task the state does not hold.
    UnknownTask,
    /// A cancellation by a tenant that does not own the task.
    NotYourTask,
    /// A cancellation for a task that already ended.
    AlreadyFinished,
    /// An extension of zero or past the attempt's total extension limit.
    ExtensionOverLimit,
    /// A load heartbeat with a utilisation above 100 % or an invalid coordinate.
    BadLoadReport,
    /// A gate command (`ClusterHeartbeat`, `RouteJob`, …) in a cluster that is not a
    /// gate group.
    NotAGate,
    /// A published root's proof starts from another size than the cluster holds
    /// (an earlier root of the node was applied after the proof was made).
    StaleRootProof,
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub time: GlobalTime,
    pub command: Option<&'static str>,
    pub events: Vec<Event>,
}

/// The replicated state, and optionally a plug-in placement policy that overrides the
/// replicated choice ([`ClusterState::with_policy`]: identical everywhere, or the
/// nodes diverge).
pub struct ClusterState {
    data: StateData,
    policy: Option<Box<dyn PlacementPolicy + Send + Sync>>,
    /// `Routed`'s per-member inputs from the leader's coordinate, derived from `data`
    /// (never serialized nor hashed): refreshed when a load heartbeat, the membership
    /// or the leader changes, rebuilt on restore.
    route: RouteCache,
    /// The timeout tracker's jobs as the state hash sees them (a cache, never
    /// serialized nor hashed itself: see [`state_hash`]).
    timeout_jobs: ShadowRoot<TaskId, TimeoutState>,
    /// Snapshot images that did not decode (kept out of the hashed state).
    pub restore_errors: u64,
}

impl ClusterState {
    pub fn new(config: Config) -> Result<ClusterState, ConfigError> {
        Self::build(config, None)
    }

    /// A state whose placement is always `policy`, whatever the log's
    /// `SetPlacementPolicy` entries say (tests and custom builds).
    pub fn with_policy(
        config: Config,
        policy: Box<dyn PlacementPolicy + Send + Sync>,
    ) -> Result<ClusterState, ConfigError> {
        Self::build(config, Some(policy))
    }

    fn build(
        config: Config,
        policy: Option<Box<dyn PlacementPolicy + Send + Sync>>,
    ) -> Result<ClusterState, ConfigError> {
        config.validate()?;
        let shards = ShardMap::new(config.shard_count);
        let timeouts = TimeoutTracker::new(config.timeouts.tracker)
            .map_err(|_| ConfigError::Timeouts("bad tracker intervals"))?;
        Ok(ClusterState {
            data: StateData {
                config,
                applied_index: 0,
                time: GlobalTime::default(),
                next_task: 1,
                nodes: HashedMap::new(),
                tasks: HashedMap::new(),
                requests: HashedMap::new(),
                pending: Vec::new(),
                finished: HashedSet::new(),
                tenants: HashedMap::new(),
                contracts: HashedMap::new(),
                ended_contracts: HashedMap::new(),
                shards,
                counters: Counters::default(),
                operator_seqs: ReplayWindow::default(),
                clock_ms: 0,
                policies: BTreeMap::new(),
                votes: HashedMap::new(),
                timeouts,
                clock_leader: None,
                placement: PlacementKind::default(),
                discovery: crate::discovery::Discovery::default(),
                gate: None,
                routed: BTreeMap::new(),
            },
            policy,
            route: RouteCache::default(),
            timeout_jobs: ShadowRoot::new(),
            restore_errors: 0,
        })
    }

    /// The genesis state every node of a provisioned cluster starts from: the same
    /// workers and tenants in the same order give the same state everywhere.
    pub fn genesis(
        config: Config,
        workers: &[WorkerInfo],
        tenants: &[(TenantId, [u8; 32])],
    ) -> Result<ClusterState, ConfigError> {
        let mut s = Self::new(config)?;
        for w in workers {
            let mut ev = Vec::new();
            s.add_worker(w.clone(), &mut ev);
        }
        for (t, k) in tenants {
            let mut ev = Vec::new();
            s.register_tenant(*t, *k, &mut ev);
        }
        Ok(s)
    }

    pub fn data(&self) -> &StateData {
        &self.data
    }

    /// Makes this the state of a gate group (before its first entry, identically on
    /// every gate replica): the router with `cfg` and an empty job table.
    pub fn enable_gate(&mut self, cfg: xdv_federation::route::RouteConfig) {
        let timeouts = self.data.config.timeouts.tracker;
        self.data.gate = Some(crate::gate::GateState::new(cfg, timeouts));
    }

    /// The gate group's state, in a gate group.
    pub fn gate(&self) -> Option<&crate::gate::GateState> {
        self.data.gate.as_ref()
    }

    /// The name of the placement policy in force.
    pub fn policy_name(&self) -> &'static str {
        self.placement_policy().name()
    }

    fn placement_policy(&self) -> &(dyn PlacementPolicy + Send + Sync) {
        match &self.policy {
            Some(p) => p.as_ref(),
            None => self.data.placement.policy(),
        }
    }

    /// What the policy knows beyond the candidates: the coordinate of the leader (the
    /// node whose clock the log carries) from its latest load heartbeat.
    fn placement_context(&self) -> PlacementContext {
        let origin = self
            .data
            .clock_leader
            .and_then(|l| self.data.nodes.get(&l))
            .and_then(|r| r.load.as_ref())
            .and_then(|(l, _)| l.coordinate);
        PlacementContext { origin }
    }

    /// The state hash: SHA-256 over the domain tag, the canonical encoding of the
    /// small parts of the state, and the roots of its large maps (tasks, requests,
    /// finished tasks, tenants, contracts), each kept current incrementally
    /// ([`HashedMap`]), so this costs what changed since the last hash, not what the
    /// state holds.
    pub fn hash(&self) -> Hash32 {
        state_hash(&self.data, false, Some(&self.timeout_jobs))
    }

    /// The same hash computed with no cached part (tests: must equal [`Self::hash`]).
    pub fn hash_from_scratch(&self) -> Hash32 {
        state_hash(&self.data, true, None)
    }

    /// The snapshot image: version byte + canonical encoding.
    pub fn snapshot_image(&self) -> Vec<u8> {
        let mut out = alloc::vec![SNAPSHOT_VERSION];
        out.extend_from_slice(&postcard::to_allocvec(&self.data).unwrap_or_default());
        out
    }

    /// Replaces the state from a snapshot image; on any error the state is unchanged.
    pub fn restore_image(&mut self, image: &[u8]) -> Result<(), DecodeError> {
        let (&v, body) = image.split_first().ok_or(DecodeError::Empty)?;
        if v != SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        let data: StateData = postcard::from_bytes(body).map_err(|_| DecodeError::Malformed)?;
        if data.config.validate().is_err() || invariants(&data).is_err() {
            return Err(DecodeError::Malformed);
        }
        self.data = data;
        self.route = self.fresh_route_cache();
        Ok(())
    }

    /// [`RouteCache`] computed from nothing but the state.
    fn fresh_route_cache(&self) -> RouteCache {
        let members = self.data.nodes.iter().map(|(n, r)| (*n, reported(r)));
        RouteCache::build(self.placement_context().origin, members)
    }

    /// Brings the route cache up to date after `node`'s membership or load heartbeat
    /// changed (`Some`) or the leader did (`None`): one member's inputs, or every
    /// member's when the leader's coordinate moved.
    fn refresh_route(&mut self, node: Option<NodeId>) {
        let origin = self.placement_context().origin;
        if origin.as_ref() != self.route.origin() {
            self.route = self.fresh_route_cache();
            return;
        }
        if let Some(n) = node {
            let member = self.data.nodes.get(&n).map(reported);
            self.route.set(n, member);
        }
    }

    pub fn task(&self, id: TaskId) -> Option<&TaskRecord> {
        self.data.tasks.get(&id)
    }

    /// The task a tenant's request became, if it was applied.
    pub fn task_for_request(&self, tenant: TenantId, seq: u64) -> Option<TaskId> {
        self.data.requests.get(&(tenant, seq)).copied()
    }

    pub fn tenant_key(&self, tenant: TenantId) -> Option<[u8; 32]> {
        self.data.tenants.get(&tenant).map(|t| t.public_key)
    }

    /// Tasks assigned to `node` and not completed, in task-id order.
    /// Walks only the assigned tasks (the timeout tracker holds exactly those), not
    /// every task the state retains.
    pub fn assigned_to(&self, node: NodeId) -> impl Iterator<Item = (&TaskRecord, u32)> {
        self.data
            .timeouts
            .jobs()
            .filter_map(|(id, _)| self.data.tasks.get(id))
            .filter_map(move |t| match t.status {
                TaskStatus::Assigned { node: n, attempt } if n == node => Some((t, attempt)),
                _ => None,
            })
    }

    /// Members that are up, in id order.
    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.data
            .nodes
            .iter()
            .filter(|(_, r)| r.up)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The federated audit root over every member's latest published root, in node-id
    /// order (audit issue's format); `None` until some member has published.
    pub fn federated_root(&self) -> Option<FederatedAuditRoot> {
        let roots: Vec<(NodeId, Hash32)> = self
            .data
            .nodes
            .iter()
            .filter_map(|(n, r)| r.audit.map(|(_, root)| (*n, root)))
            .collect();
        if roots.is_empty() {
            return None;
        }
        FederatedAuditRoot::new(roots).ok()
    }

    /// Applies the Raft entry at `index` (its `Normal` payload bytes).
    pub fn apply(&mut self, index: u64, bytes: &[u8]) -> Applied {
        let mut events = Vec::new();
        if index <= self.data.applied_index {
            events.push(Event::Ignored(IgnoredReason::AlreadyApplied));
            return Applied {
                index,
                time: self.data.time,
                command: None,
                events,
            };
        }
        self.data.applied_index = index;
        self.data.counters.entries += 1;
        let command = match Proposal::decode(bytes) {
            Err(e) => {
                self.data.counters.invalid_entries += 1;
                events.push(Event::Invalid(e));
                None
            }
            Ok(p) => {
                self.advance_time(p.time);
                let name = p.command.name();
                self.dispatch(p.command, &mut events);
                Some(name)
            }
        };
        self.check();
        Applied {
            index,
            time: self.data.time,
            command,
            events,
        }
    }

    /// `time` only grows: an entry stamped at or before the current time is applied at
    /// `(current lamport + 1, its node)`. A pure function of the log.
    ///
    /// A stamp near `u64::MAX` (a faulty proposer) cannot wrap the clock: it saturates,
    /// and from there time stays at the maximum — never moves backwards, never panics.
    fn advance_time(&mut self, t: GlobalTime) {
        let prev = self.data.time;
        self.data.time = if t > prev {
            t
        } else {
            GlobalTime {
                lamport: prev.lamport.saturating_add(1),
                node: t.node,
            }
        };
        assert!(
            self.data.time > prev || prev.lamport == u64::MAX,
            "global time must grow"
        );
    }

    fn dispatch(&mut self, c: Command, ev: &mut Vec<Event>) {
        match c {
            Command::AssignTask(spec) => self.assign_task(spec, ev),
            Command::AssignTasks(specs) => {
                for spec in specs {
                    self.assign_task(spec, ev);
                }
            }
            Command::TaskCompleted(c) => self.task_completed(c, ev),
            Command::TasksCompleted(cs) => {
                for c in cs {
                    self.task_completed(c, ev);
                }
            }
            Command::Heartbeat(h) => self.heartbeat(h, ev),
            Command::LoadHeartbeat(l) => self.load_heartbeat(l, ev),
            Command::SetPlacementPolicy { seq, .. }
                if self.data.operator_seqs.check(seq).is_err()
                    || self.data.operator_seqs.check_range(seq).is_err() =>
            {
                ev.push(Event::Ignored(IgnoredReason::Replayed))
            }
            Command::SetPlacementPolicy { policy, seq } => {
                self.data.operator_seqs.accept(seq);
                self.data.placement = policy;
                ev.push(Event::PlacementPolicySet { policy });
            }
            Command::AddWorker(w) => self.add_worker(w, ev),
            Command::RemoveWorker { node } => self.remove_worker(node, ev),
            Command::Snapshot { snapshot_id } => {
                self.data.counters.last_snapshot_id = Some(snapshot_id);
                ev.push(Event::SnapshotMarked { id: snapshot_id });
            }
            // Contracts that end free their units for other tasks, and the tasks
            // waiting under them are refused: every pending task is looked at again.
            Command::ProposeContract(sc) => {
                self.propose_contract(sc, ev);
                self.place_pending(ev);
            }
            Command::ReleaseContract { contract_id, by } => {
                self.release(contract_id, by, ev);
                self.place_pending(ev);
            }
            Command::SuspendContracts { node } => self.suspend_contracts_of(node, ev),
            Command::AbortContracts {
                node,
                domain,
                reason,
            } => {
                self.abort_contracts(node, domain, reason, ev);
                self.place_pending(ev);
            }
            Command::ClockTick => {
                self.data.clock_ms = self.data.clock_ms.saturating_add(CLOCK_TICK_MS);
                ev.push(Event::ClockTick {
                    now_ms: self.data.clock_ms,
                });
                self.clock_from(self.data.time.node, ev);
                let before = self.data.contracts.len();
                self.expire_contracts(ev);
                let timed_out = self.check_timeouts(ev);
                if self.data.contracts.len() != before || timed_out {
                    self.place_pending(ev);
                }
                let now = self.data.clock_ms;
                if let Some(g) = self.data.gate.as_mut() {
                    ev.extend(g.timeout_tick(now).into_iter().map(Event::Gate));
                }
            }
            Command::StateVote { node, index, hash } => self.state_vote(node, index, hash, ev),
            Command::SetPolicy { seq, .. }
                if self.data.operator_seqs.check(seq).is_err()
                    || self.data.operator_seqs.check_range(seq).is_err() =>
            {
                ev.push(Event::Ignored(IgnoredReason::Replayed))
            }
            Command::SetPolicy {
                tenant,
                priority,
                seq,
            } => {
                if self.data.tenants.contains_key(&tenant) {
                    self.data.operator_seqs.accept(seq);
                    self.data.policies.insert(tenant, priority);
                    ev.push(Event::PolicySet { tenant, priority });
                } else {
                    ev.push(Event::Ignored(IgnoredReason::UnknownTenant));
                }
            }
            Command::NodeDown { node } => self.node_down(node, ev),
            Command::NodeUp { node } => self.node_up(node, ev),
            Command::SetQuota { seq, .. }
                if self.data.operator_seqs.check(seq).is_err()
                    || self.data.operator_seqs.check_range(seq).is_err() =>
            {
                ev.push(Event::Ignored(IgnoredReason::Replayed))
            }
            Command::SetQuota { quota: Some(q), .. }
                if q.memory_pages > MAX_TASK_MEMORY_PAGES
                    || q.table_elements > MAX_TASK_TABLE_ELEMENTS =>
            {
                ev.push(Event::Ignored(IgnoredReason::QuotaOverMaximum))
            }
            Command::SetQuota { tenant, quota, seq } => match self.data.tenants.get_mut(&tenant) {
                Some(t) => {
                    t.quota = quota;
                    self.data.operator_seqs.accept(seq);
                    ev.push(Event::QuotaSet { tenant });
                }
                None => ev.push(Event::Ignored(IgnoredReason::UnknownTenant)),
            },
            Command::RegisterTenant { tenant, public_key } => {
                self.register_tenant(tenant, public_key, ev)
            }
            Command::PublishAuditRoot {
                node,
                records,
                root,
                from,
                proof,
            } => self.publish_root(node, records, root, from, &proof, ev),
            Command::AddMember { seq, .. } | Command::RemoveMember { seq, .. }
                if self.data.operator_seqs.check(seq).is_err()
                    || self.data.operator_seqs.check_range(seq).is_err() =>
            {
                ev.push(Event::Ignored(IgnoredReason::Replayed))
            }
            // The sequence number is used up either way, so an old request replayed
            // after the node left cannot bring it back.
            Command::AddMember { info, seq } => {
                self.data.operator_seqs.accept(seq);
                if self.data.nodes.contains_key(&info.node) {
                    ev.push(Event::WorkerRefused {
                        node: info.node,
                        reason: Refusal::AlreadyMember(info.node),
                    })
                } else {
                    self.add_worker(info, ev);
                }
            }
            Command::RemoveMember { seq, node } => {
                self.data.operator_seqs.accept(seq);
                self.remove_worker(node, ev);
            }
            Command::TaskProgress {
                task,
                node,
                attempt,
            } => self.task_progress(task, node, attempt, ev),
            Command::RequestExtension {
                task,
                node,
                attempt,
                extension_ms,
            } => self.request_extension(task, node, attempt, extension_ms, ev),
            Command::CancelTask { task, tenant } => self.cancel_task(task, tenant, ev),
            Command::Discovered { mac, hardware } => {
                let report = crate::discovery::Report { mac, hardware };
                let outcome = self.data.discovery.report(&report, self.data.clock_ms);
                ev.push(Event::Discovered { mac, outcome });
            }
            Command::AdmitDiscovered { seq, .. }
                if self.data.operator_seqs.check(seq).is_err()
                    || self.data.operator_seqs.check_range(seq).is_err() =>
            {
                ev.push(Event::Ignored(IgnoredReason::Replayed))
            }
            Command::AssignRoutedTask {
                spec,
                gate_cluster,
                job,
            } => self.assign_routed_task(spec, gate_cluster, job, ev),
            Command::GateAck {
                task,
                job,
                fence_token,
            } => self.gate_ack(task, job, fence_token, ev),
            Command::GateVerdict {
                task,
                job,
                reason,
                fence_token,
            } => {
                if self.gate_verdict(task, job, reason, fence_token, ev) {
                    self.place_pending(ev);
                }
            }
            Command::ClusterHeartbeat(_)
            | Command::RouteJob { .. }
            | Command::DispatchOutcome { .. }
            | Command::JobFinished { .. }
            | Command::JobReport { .. }
                if self.data.gate.is_none() =>
            {
                ev.push(Event::Ignored(IgnoredReason::NotAGate))
            }
            Command::ClusterHeartbeat(hb) => {
                let now = self.data.clock_ms;
                if let Some(g) = self.data.gate.as_mut() {
                    ev.push(Event::Gate(g.heartbeat(&hb, now)));
                }
            }
            Command::RouteJob {
                tenant,
                seq,
                submission,
                local,
            } => {
                let now = self.data.clock_ms;
                if let Some(g) = self.data.gate.as_mut() {
                    ev.push(Event::Gate(
                        g.route_job(tenant, seq, submission, local, now),
                    ));
                }
            }
            Command::DispatchOutcome {
                job,
                cluster,
                result,
            } => {
                let now = self.data.clock_ms;
                if let Some(g) = self.data.gate.as_mut() {
                    ev.push(Event::Gate(g.dispatch_outcome(job, cluster, result, now)));
                }
            }
            Command::JobFinished {
                job,
                cluster,
                task,
                outcome,
            } => {
                if let Some(g) = self.data.gate.as_mut() {
                    ev.push(Event::Gate(g.job_finished(job, cluster, task, outcome)));
                }
            }
            Command::JobReport {
                job,
                cluster,
                task,
                manager,
                report,
            } => {
                let now = self.data.clock_ms;
                if let Some(g) = self.data.gate.as_mut() {
                    ev.push(Event::Gate(
                        g.job_report(job, cluster, task, manager, report, now),
                    ));
                }
            }
            Command::AdmitDiscovered { mac, node, seq } => {
                self.data.operator_seqs.accept(seq);
                let admitted = self.data.discovery.admit(&mac, node);
                ev.push(Event::DiscoveredAdmitted {
                    mac,
                    node,
                    refused: admitted.err(),
                });
            }
        }
    }

    /// Hash voting (seed 001): records `node`'s state hash after entry `index` and,
    /// once a majority of members agrees on one hash there, quarantines every voter
    /// that reported another. Deterministic: it depends on the log alone.
    fn state_vote(&mut self, node: NodeId, index: u64, hash: Hash32, ev: &mut Vec<Event>) {
        let member = self.data.nodes.contains_key(&node);
        let latest = self.data.votes.keys().next_back().copied().unwrap_or(0);
        let window = VOTE_EVERY * VOTE_ROUNDS_KEPT as u64;
        let stale = index.saturating_add(window) <= latest;
        if !member
            || index == 0
            || !index.is_multiple_of(VOTE_EVERY)
            || index >= self.data.applied_index
            || stale
        {
            ev.push(Event::Ignored(IgnoredReason::BadVote));
            return;
        }
        let round = self.data.votes.get_or_insert_default(index);
        if round.contains_key(&node) {
            ev.push(Event::Ignored(IgnoredReason::AlreadyApplied));
            return;
        }
        round.insert(node, hash);
        ev.push(Event::Voted { node, index });
        while self.data.votes.len() > VOTE_ROUNDS_KEPT {
            self.data.votes.pop_first();
        }
        let Some(round) = self.data.votes.get(&index) else {
            return;
        };
        let quorum = self.data.nodes.len() / 2 + 1;
        let mut tally: BTreeMap<Hash32, usize> = BTreeMap::new();
        for h in round.values() {
            *tally.entry(*h).or_default() += 1;
        }
        let Some((&majority, _)) = tally.iter().find(|(_, n)| **n >= quorum) else {
            return;
        };
        let odd: Vec<(NodeId, Hash32)> = round
            .iter()
            .filter(|(_, h)| **h != majority)
            .map(|(n, h)| (*n, *h))
            .collect();
        for (n, theirs) in odd {
            let Some(r) = self.data.nodes.get_mut(&n) else {
                continue;
            };
            if !r.quarantined {
                r.quarantined = true;
                ev.push(Event::HashMismatch {
                    index,
                    node: n,
                    theirs,
                    majority,
                });
            }
        }
        self.place_pending(ev);
    }

    /// Test-only fault hook: makes this replica's state differ from every other's
    /// without changing what it decides (a counter only the hash sees).
    #[cfg(feature = "fault-hooks")]
    pub fn corrupt_for_test(&mut self) {
        self.data.counters.entries = self.data.counters.entries.wrapping_add(1_000_000);
    }

    fn register_tenant(&mut self, tenant: TenantId, public_key: [u8; 32], ev: &mut Vec<Event>) {
        if let Some(t) = self.data.tenants.get_mut(&tenant) {
            t.public_key = public_key;
        } else if self.data.tenants.len() < MAX_TENANTS {
            self.data.tenants.insert(
                tenant,
                TenantRecord {
                    public_key,
                    quota: None,
                    seqs: ReplayWindow::default(),
                    in_flight: 0,
                    budget_used_ticks: 0,
                    submitted: 0,
                },
            );
        } else {
            ev.push(Event::Ignored(IgnoredReason::UnknownTenant));
            return;
        }
        ev.push(Event::TenantRegistered { tenant });
    }

    /// Every node checks a published root against the one the cluster holds for that
    /// node: the new root must extend it (its consistency proof verifies), so a node
    /// cannot rewrite audit history it already published. A root that does not is
    /// not taken, and every node records the alarm ([`Event::AuditRootInconsistent`]).
    fn publish_root(
        &mut self,
        node: NodeId,
        records: u64,
        root: Hash32,
        from: u64,
        proof: &[Hash32],
        ev: &mut Vec<Event>,
    ) {
        let Some(r) = self.data.nodes.get_mut(&node) else {
            ev.push(Event::Ignored(IgnoredReason::UnknownNode));
            return;
        };
        if let Some((held, held_root)) = r.audit {
            // A root over fewer records than already published is not an advance.
            if records < held {
                ev.push(Event::Ignored(IgnoredReason::OlderRoot));
                return;
            }
            // A proof from another size (an earlier publication applied meanwhile).
            if from != held {
                ev.push(Event::Ignored(IgnoredReason::StaleRootProof));
                return;
            }
            if xdv_audit::merkle::verify_consistency(held, records, &held_root, &root, proof)
                .is_err()
            {
                ev.push(Event::AuditRootInconsistent {
                    node,
                    held,
                    records,
                });
                return;
            }
        }
        r.audit = Some((records, root));
        ev.push(Event::RootPublished { node, records });
    }

    // ----- tasks -----

    fn validate_spec(&self, s: &TaskSpec) -> Result<(), Refusal> {
        if s.budget_ticks == 0 {
            return Err(Refusal::ZeroBudget);
        }
        if s.budget_ticks > MAX_BUDGET_TICKS {
            return Err(Refusal::BudgetOverLimit {
                budget_ticks: s.budget_ticks,
            });
        }
        // A tenant without a quota gets the default per-task ceiling.
        let quota = self.data.tenants.get(&s.tenant).and_then(|t| t.quota);
        if quota.is_none() && s.budget_ticks > DEFAULT_TASK_BUDGET_CEILING_TICKS {
            return Err(Refusal::BudgetOverCeiling {
                budget_ticks: s.budget_ticks,
                ceiling_ticks: DEFAULT_TASK_BUDGET_CEILING_TICKS,
            });
        }
        if s.guards.len() > MAX_GUARDS {
            return Err(Refusal::TooManyGuards(s.guards.len()));
        }
        if s.needs.len() > MAX_NEEDS {
            return Err(Refusal::TooManyNeeds(s.needs.len()));
        }
        if s.input.len() > MAX_INPUT_BYTES {
            return Err(Refusal::InputTooLarge(s.input.len()));
        }
        self.data.config.timeouts.effective(s.timeout_ms)?;
        match (&s.work, s.domain) {
            (Work::Job(_), Domain::K)
            | (Work::Wasm(_) | Work::Builtin(_), Domain::Q | Domain::Phi) => {
                return Err(Refusal::WorkNotForDomain { domain: s.domain });
            }
            (Work::Job(j), d) => crate::jobs::check(d, j).map_err(Refusal::BadJob)?,
            _ => {}
        }
        match &s.work {
            Work::Wasm(m) if m.len() > MAX_MODULE_BYTES => {
                return Err(Refusal::ModuleTooLarge(m.len()));
            }
            Work::Builtin(n) if n.is_empty() || n.len() > MAX_BUILTIN_NAME_BYTES => {
                return Err(Refusal::BadBuiltinName);
            }
            Work::Dropped(_) => return Err(Refusal::BadBuiltinName),
            _ => {}
        }
        let t = self
            .data
            .tenants
            .get(&s.tenant)
            .ok_or(Refusal::UnknownTenant(s.tenant))?;
        if let Err(highest) = t.seqs.check_range(s.request_seq) {
            return Err(Refusal::SeqOutOfRange {
                seq: s.request_seq,
                highest,
            });
        }
        if let Err(last) = t.seqs.check(s.request_seq) {
            return Err(Refusal::StaleRequest {
                seq: s.request_seq,
                last,
            });
        }
        if let Some(q) = t.quota {
            if t.in_flight >= q.max_in_flight {
                return Err(Refusal::QuotaInFlight {
                    limit: q.max_in_flight,
                });
            }
            if t.budget_used_ticks.saturating_add(s.budget_ticks) > q.max_budget_ticks {
                return Err(Refusal::QuotaBudget {
                    limit_ticks: q.max_budget_ticks,
                    used_ticks: t.budget_used_ticks,
                });
            }
        }
        if let Some(p) = s.pin
            && !self.data.nodes.contains_key(&p)
        {
            return Err(Refusal::PinnedNodeIneligible(p));
        }
        if let Some(id) = s.contract {
            return self.check_task_contract(s, id);
        }
        // Hardening case 5: a task no member could ever run (a domain nobody offers,
        // a capability nobody has) is refused now instead of waiting forever while it
        // holds the tenant's quota and a pending slot.
        if !self.could_run(s) {
            return Err(Refusal::NoMemberCanRun { domain: s.domain });
        }
        Ok(())
    }

    /// Could any member run `s`, now or once it is up: one that is not quarantined,
    /// offers the domain (for Q and Φ: its devices now), has the capabilities and
    /// matches the pin.
    fn could_run(&self, s: &TaskSpec) -> bool {
        self.data.nodes.values().any(|r| {
            !r.quarantined
                && r.offered(s.domain) > 0
                && s.needs.iter().all(|c| r.info.capabilities.contains(c))
                && s.pin.is_none_or(|p| p == r.info.node)
        })
    }

    /// A task under a contract: the contract is in force, its tenant's, of the task's
    /// domain, and not suspended. It runs on the contract's target only.
    fn check_task_contract(&self, s: &TaskSpec, id: u64) -> Result<(), Refusal> {
        let r = self
            .data
            .contracts
            .get(&id)
            .ok_or_else(|| self.contract_gone(s.tenant, id))?;
        if r.contract.tenant != s.tenant {
            return Err(Refusal::NotYourContract(id));
        }
        if r.contract.domain != s.domain {
            return Err(Refusal::ContractDomainMismatch {
                contract: id,
                domain: r.contract.domain,
            });
        }
        if r.state != ContractState::Active {
            return Err(Refusal::ContractSuspended(id));
        }
        if s.pin.is_some_and(|p| p != r.contract.target_node) {
            return Err(Refusal::PinnedNodeIneligible(r.contract.target_node));
        }
        Ok(())
    }

    /// Units of `domain` on `node` held by active contracts.
    pub fn reserved_on(&self, node: NodeId, domain: Domain) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .data
            .contracts
            .values()
            .filter(|r| r.contract.target_node == node && r.contract.domain == domain)
            .flat_map(|r| r.contract.resource_set.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Tasks assigned and not completed under contract `id`.
    fn running_under(&self, id: u64) -> u32 {
        self.data
            .tasks
            .values()
            .filter(|t| {
                t.spec.contract == Some(id) && matches!(t.status, TaskStatus::Assigned { .. })
            })
            .count() as u32
    }

    fn assign_task(&mut self, spec: TaskSpec, ev: &mut Vec<Event>) {
        if let Some(&task) = self.data.requests.get(&(spec.tenant, spec.request_seq)) {
            ev.push(Event::DuplicateRequest { task });
            return;
        }
        let id = TaskId(self.data.next_task);
        self.data.next_task += 1;
        let shard = shard_of(spec.tenant, self.data.config.shard_count);
        let verdict = self.validate_spec(&spec);
        let tenant = spec.tenant;
        let seq = spec.request_seq;
        let mut rec = TaskRecord {
            id,
            spec,
            status: TaskStatus::Pending,
            shard,
            submitted: self.data.time,
            replaced_from: Vec::new(),
            log: Vec::new(),
        };
        if let Err(reason) = verdict {
            self.data.counters.tasks_refused += 1;
            rec.status = TaskStatus::Rejected(reason.clone());
            rec.spec.work = drop_work(&rec.spec.work);
            ev.push(Event::TaskRejected { task: id, reason });
            // A refused request still takes its sequence number if the tenant exists,
            // so a retry gets the same answer and not a second task — unless the number
            // itself is out of range (taking it would lock the tenant out).
            if let Some(t) = self.data.tenants.get_mut(&tenant)
                && t.seqs.check(seq).is_ok()
                && t.seqs.check_range(seq).is_ok()
            {
                t.seqs.accept(seq);
                self.data.requests.insert((tenant, seq), id);
            }
            self.data.tasks.insert(id, rec);
            self.finish(id);
            return;
        }
        let t = self.data.tenants.get_mut(&tenant).expect("validated");
        t.seqs.accept(seq);
        t.in_flight += 1;
        t.budget_used_ticks = t.budget_used_ticks.saturating_add(rec.spec.budget_ticks);
        t.submitted += 1;
        self.data.requests.insert((tenant, seq), id);
        self.data.tasks.insert(id, rec);
        self.place_or_queue(id, 1, None, ev);
    }

    /// Eligible nodes for a task, sorted by node id. A task under a contract may run
    /// only on its target, in the contract's units (one task per unit at a time); a
    /// device task without one only in the target's units no contract holds.
    fn candidates(&self, spec: &TaskSpec, shard: u32, exclude: Option<NodeId>) -> Vec<Candidate> {
        if let Some(id) = spec.contract {
            let Some(r) = self.data.contracts.get(&id) else {
                return Vec::new();
            };
            let node = r.contract.target_node;
            let units = r.contract.resource_set.len() as u32;
            let load = self.running_under(id);
            let ok = r.state == ContractState::Active
                && Some(node) != exclude
                && load < units
                && self
                    .data
                    .nodes
                    .get(&node)
                    .is_some_and(|n| n.up && !n.quarantined);
            return if ok {
                let n = &self.data.nodes[&node];
                let route = self.route.get(node);
                alloc::vec![self.candidate(n, load, units, shard, route)]
            } else {
                Vec::new()
            };
        }
        let cfg = &self.data.config;
        // The route cache holds one entry per member in node order: read in step.
        assert_eq!(self.route.members().len(), self.data.nodes.len());
        let mut out = Vec::with_capacity(self.data.nodes.len());
        for ((&n, r), &(m, inputs)) in self.data.nodes.iter().zip(self.route.members()) {
            assert_eq!(n, m, "route cache out of step with the members");
            let eligible = r.up
                && !r.quarantined
                && Some(n) != exclude
                && spec.pin.is_none_or(|p| p == n)
                && spec.needs.iter().all(|c| r.info.capabilities.contains(c));
            if !eligible {
                continue;
            }
            let load = r.assigned.saturating_add(r.local_load);
            let capacity = self.free_capacity(r, cfg, spec.domain);
            if load < capacity {
                out.push(self.candidate(r, load, capacity, shard, Some(inputs)));
            }
        }
        out
    }

    fn candidate(
        &self,
        r: &NodeRecord,
        load: u32,
        capacity: u32,
        shard: u32,
        route: Option<RouteInputs>,
    ) -> Candidate {
        let report = r.load.as_ref();
        Candidate {
            node: r.info.node,
            load,
            capacity,
            lifetime: r.completed + u64::from(r.assigned),
            shard_rank: self.data.shards.rank(shard, r.info.node),
            queue_depth: report.map_or(0, |(l, _)| l.queue_depth),
            utilisation_ppm: report.map_or(0, |(l, _)| l.utilisation_ppm),
            coordinate: report.and_then(|(l, _)| l.coordinate),
            report_age_ms: report.map(|(_, at)| self.data.clock_ms.saturating_sub(*at)),
            route,
        }
    }

    /// Capacity for tasks without a contract: for Q and Φ, the units no contract holds
    /// (minus the contract tasks running there, which `assigned` also counts).
    fn free_capacity(&self, r: &NodeRecord, cfg: &Config, d: Domain) -> u32 {
        let all = r.capacity(cfg, d);
        if d == Domain::K {
            return all;
        }
        let node = r.info.node;
        let reserved = self.reserved_on(node, d).len() as u32;
        let contract_tasks = self
            .assigned_to(node)
            .filter(|(t, _)| {
                t.spec.domain == d
                    && t.spec
                        .contract
                        .is_some_and(|c| self.data.contracts.contains_key(&c))
            })
            .count() as u32;
        all.saturating_sub(reserved).saturating_add(contract_tasks)
    }

    /// The node the policy in force would place `spec` on now (no state change): the
    /// whole placement decision — candidates, then the policy — as `AssignTask` makes
    /// it for a task without a contract (benchmarks, diagnostics).
    pub fn placement_preview(&self, spec: &TaskSpec) -> Option<NodeId> {
        let shard = shard_of(spec.tenant, self.data.config.shard_count);
        let cands = self.candidates(spec, shard, None);
        if cands.is_empty() {
            return None;
        }
        self.placement_policy()
            .place(spec, &self.placement_context(), &cands)
    }

    /// Places task `id` (currently Pending, not in the pending list) or queues it.
    fn place_or_queue(
        &mut self,
        id: TaskId,
        attempt: u32,
        exclude: Option<NodeId>,
        ev: &mut Vec<Event>,
    ) -> Option<NodeId> {
        let rec = &self.data.tasks[&id];
        debug_assert!(matches!(rec.status, TaskStatus::Pending));
        // A task whose contract ended while it waited can never run: refused.
        if let Some(cid) = rec.spec.contract
            && !self.data.contracts.contains_key(&cid)
        {
            let why = self.contract_gone(rec.spec.tenant, cid);
            self.refuse_in_flight(id, why, ev);
            return None;
        }
        let cands = self.candidates(&rec.spec, rec.shard, exclude);
        let choice = if cands.is_empty() {
            None
        } else {
            self.placement_policy()
                .place(&rec.spec, &self.placement_context(), &cands)
        };
        if let Some(node) = choice {
            assert!(
                cands.iter().any(|c| c.node == node),
                "placement policy {} chose a node that is not a candidate",
                self.policy_name()
            );
            let tenant = rec.spec.tenant;
            let asked = rec.spec.timeout_ms;
            self.data.tasks.get_mut(&id).expect("exists").status =
                TaskStatus::Assigned { node, attempt };
            self.data.nodes.get_mut(&node).expect("candidate").assigned += 1;
            self.track(id, asked);
            ev.push(Event::TaskAssigned {
                task: id,
                tenant,
                node,
                attempt,
            });
            return Some(node);
        }
        if self.data.pending.len() >= MAX_PENDING {
            self.refuse_in_flight(id, Refusal::NoEligibleNode, ev);
            return None;
        }
        // Nobody could run it any more (its devices failed, the only node offering its
        // domain was quarantined): refused instead of waiting forever.
        let spec = &self.data.tasks[&id].spec;
        if spec.contract.is_none() && !self.could_run(spec) {
            let domain = spec.domain;
            self.refuse_in_flight(id, Refusal::NoMemberCanRun { domain }, ev);
            return None;
        }
        self.data.pending.push(id);
        ev.push(Event::TaskQueued { task: id });
        None
    }

    /// Refuses a task that had been accepted (counts it out of its tenant).
    fn refuse_in_flight(&mut self, id: TaskId, reason: Refusal, ev: &mut Vec<Event>) {
        let rec = self.data.tasks.get_mut(&id).expect("exists");
        rec.status = TaskStatus::Rejected(reason.clone());
        rec.spec.work = drop_work(&rec.spec.work);
        let tenant = rec.spec.tenant;
        if let Some(t) = self.data.tenants.get_mut(&tenant) {
            t.in_flight -= 1;
        }
        self.data.counters.tasks_refused += 1;
        ev.push(Event::TaskRejected { task: id, reason });
        self.finish(id);
    }

    /// Retries every pending task in id order (after capacity or membership grew).
    fn place_pending(&mut self, ev: &mut Vec<Event>) {
        let waiting = core::mem::take(&mut self.data.pending);
        for id in waiting {
            let attempt = self.data.tasks[&id].replaced_from.len() as u32 + 1;
            self.place_or_queue(id, attempt, None, ev);
        }
    }

    fn task_completed(&mut self, c: Completion, ev: &mut Vec<Event>) {
        if c.output.len() > MAX_OUTPUT_BYTES {
            ev.push(Event::Ignored(IgnoredReason::OutputTooLarge));
            return;
        }
        let current = self.data.tasks.get(&c.task).map(|t| &t.status);
        if !matches!(current, Some(TaskStatus::Assigned { node, attempt })
            if *node == c.node && *attempt == c.attempt)
        {
            self.data.counters.stale_completions += 1;
            ev.push(Event::StaleCompletion {
                task: c.task,
                node: c.node,
                attempt: c.attempt,
            });
            return;
        }
        let end = match c.outcome {
            Outcome::Executed => JobEnd::Completed,
            _ => JobEnd::Failed,
        };
        self.untrack(c.task, end);
        let rec = self.data.tasks.get_mut(&c.task).expect("matched");
        rec.spec.work = drop_work(&rec.spec.work);
        rec.status = TaskStatus::Completed {
            node: c.node,
            attempt: c.attempt,
            outcome: c.outcome.clone(),
            ticks: c.ticks,
            output_hash: c.output_hash,
            output: c.output,
        };
        rec.log = crate::types::keep_log(c.log);
        let tenant = rec.spec.tenant;
        let n = self
            .data
            .nodes
            .get_mut(&c.node)
            .expect("assigned nodes are members");
        n.assigned -= 1;
        n.completed += 1;
        if let Some(t) = self.data.tenants.get_mut(&tenant) {
            t.in_flight -= 1;
        }
        let contract = self.data.tasks[&c.task].spec.contract;
        ev.push(Event::TaskCompleted {
            task: c.task,
            node: c.node,
            outcome: c.outcome.clone(),
            ticks: c.ticks,
            output_hash: c.output_hash,
        });
        // Seed 000 §6: a device failure under a contract aborts it (the container is
        // gone); an unstable window terminates its contract (the envelope is invalid).
        // Nothing else — other contracts, other windows — is touched.
        if let Some(id) = contract {
            match &c.outcome {
                Outcome::DeviceFailed(why) => {
                    self.end_contract(id, ContractEnd::Aborted(why.clone()), ev)
                }
                Outcome::Unstable(why) => {
                    self.end_contract(id, ContractEnd::Terminated(why.clone()), ev)
                }
                _ => {}
            }
        }
        self.finish(c.task);
        self.place_pending(ev);
    }

    /// Ends task `id` (assigned to `node`, already uncounted there) as `Failed` after
    /// `attempt` attempts whose nodes all went down.
    fn fail_task(&mut self, id: TaskId, node: NodeId, attempt: u32, ev: &mut Vec<Event>) {
        let rec = self.data.tasks.get_mut(&id).expect("exists");
        rec.spec.work = drop_work(&rec.spec.work);
        rec.replaced_from.push(node);
        let outcome = Outcome::Failed(alloc::format!(
            "{attempt} attempts; every node running it went down"
        ));
        rec.status = TaskStatus::Completed {
            node,
            attempt,
            outcome: outcome.clone(),
            ticks: 0,
            output_hash: Hash32::ZERO,
            output: Vec::new(),
        };
        let tenant = rec.spec.tenant;
        if let Some(t) = self.data.tenants.get_mut(&tenant) {
            t.in_flight -= 1;
        }
        self.data.counters.tasks_failed += 1;
        ev.push(Event::TaskCompleted {
            task: id,
            node,
            outcome,
            ticks: 0,
            output_hash: Hash32::ZERO,
        });
        self.finish(id);
    }

    /// Marks a task finished and drops the oldest finished tasks over the retention limit.
    fn finish(&mut self, id: TaskId) {
        self.data.routed.remove(&id);
        self.data.finished.insert(id, ());
        while self.data.finished.len() > self.data.config.max_retained_tasks {
            let Some((old, ())) = self.data.finished.pop_first() else {
                break;
            };
            if let Some(rec) = self.data.tasks.remove(&old) {
                self.data
                    .requests
                    .remove(&(rec.spec.tenant, rec.spec.request_seq));
            }
        }
    }

    // ----- timeouts (AD-34, local authority) -----

    /// Starts tracking the attempt just assigned, from the current cluster time.
    fn track(&mut self, id: TaskId, asked: Option<u64>) {
        let cfg = self.data.config.timeouts;
        // Validated at submission; a config change cannot reach a running cluster.
        let timeout_ms = cfg.effective(asked).unwrap_or(cfg.default_timeout_ms);
        // A routed task reports to its gate group, unless the gate was lost before;
        // a re-placed attempt keeps the fence token its gate heard.
        let routed = self.data.routed.get(&id);
        let spec = JobTimeoutSpec {
            timeout_ms,
            gate: routed
                .filter(|r| !r.fell_back)
                .map(|r| NodeId(r.gate_cluster)),
        };
        let fence = routed.map_or(0, |r| r.fence_token);
        let r = self
            .data
            .timeouts
            .start_at_fence(id, spec, fence, self.data.clock_ms);
        assert!(r.is_ok(), "tracking {id}: {r:?}");
    }

    /// Stops tracking a task leaving `Assigned` (completed, re-placed, cancelled, timed out).
    fn untrack(&mut self, id: TaskId, end: JobEnd) {
        let fence = self.data.timeouts.get(id).map(|st| st.timeout_fence_token);
        if let (Some(r), Some(f)) = (self.data.routed.get_mut(&id), fence) {
            r.fence_token = f;
        }
        // The final status of a routed task reaches its gate as the answer to the
        // gate's poll (`FedMsg::Answer`), from the applied state.
        let r = self.data.timeouts.stop(id, end);
        assert!(r.is_ok(), "untracking {id}: {r:?}");
    }

    /// `AssignRoutedTask`: the gate group `gate_cluster` dispatched `spec` as its job
    /// `job`. Applied as `AssignTask`; a new task is recorded as routed first, so its
    /// tracking starts gate-coordinated.
    fn assign_routed_task(
        &mut self,
        spec: TaskSpec,
        gate_cluster: u32,
        job: u64,
        ev: &mut Vec<Event>,
    ) {
        if !self
            .data
            .requests
            .contains_key(&(spec.tenant, spec.request_seq))
        {
            let id = TaskId(self.data.next_task);
            self.data.routed.insert(
                id,
                RoutedTask {
                    gate_cluster,
                    job,
                    fell_back: false,
                    fence_token: 0,
                },
            );
        }
        self.assign_task(spec, ev);
    }

    /// The routed task `task` of gate job `job`, if that is what it is.
    fn routed_job(&self, task: TaskId, job: u64) -> Result<(), String> {
        match self.data.routed.get(&task) {
            Some(r) if r.job == job => Ok(()),
            Some(r) => Err(alloc::format!("{task} is job {}, not {job}", r.job)),
            None => Err(alloc::format!("{task} is not a running routed task")),
        }
    }

    /// `GateAck`: the gate logged the routed task's report with `fence_token`.
    fn gate_ack(&mut self, task: TaskId, job: u64, fence_token: u64, ev: &mut Vec<Event>) {
        let now = self.data.clock_ms;
        let r = self.routed_job(task, job).and_then(|()| {
            self.data
                .timeouts
                .on_gate_ack(task, fence_token, now)
                .map_err(|e| gate_refusal(&e))
        });
        if let Err(reason) = r {
            ev.push(Event::GateMessageRefused { task, reason });
        }
    }

    /// `GateVerdict`: the gate declared job `job` (this cluster's `task`) timed out.
    /// Accepted, the attempt ends and the task with it (`Outcome::Timeout`, no retry:
    /// the gate's verdict is global); a stale fence token is refused and counted.
    fn gate_verdict(
        &mut self,
        task: TaskId,
        job: u64,
        reason: TimeoutReason,
        fence_token: u64,
        ev: &mut Vec<Event>,
    ) -> bool {
        let now = self.data.clock_ms;
        let r = self.routed_job(task, job).and_then(|()| {
            self.data
                .timeouts
                .on_global_timeout(task, reason, fence_token, now)
                .map_err(|e| gate_refusal(&e))
        });
        match r {
            Ok(Some(Decision::TimeOut {
                job: id,
                reason,
                elapsed_ms,
                fence_token,
                authority,
            })) => {
                ev.push(Event::GateTimedOut {
                    task: id,
                    job,
                    reason,
                    fence_token,
                });
                self.time_out(id, reason, elapsed_ms, authority, ev);
                true
            }
            Ok(_) => false,
            Err(reason) => {
                ev.push(Event::GateMessageRefused { task, reason });
                false
            }
        }
    }

    /// Events for the tracker's gate decisions (reports, fallback); the timeouts
    /// themselves are handled by the caller.
    fn gate_decision(&mut self, d: &Decision, ev: &mut Vec<Event>) {
        let (task, report) = match *d {
            Decision::ReportTimeout {
                job,
                reason,
                elapsed_ms,
                fence_token,
                ..
            } => (
                job,
                crate::gate::JobReport::Timeout {
                    reason,
                    elapsed_ms,
                    fence_token,
                },
            ),
            Decision::ReportProgress {
                job,
                fence_token,
                has_recent_progress,
                total_extensions_ms,
                max_worker_extension_ms,
                workers_with_extensions,
                ..
            } => (
                job,
                crate::gate::JobReport::Progress {
                    fence_token,
                    has_recent_progress,
                    total_extensions_ms,
                    max_worker_extension_ms,
                    workers_with_extensions,
                },
            ),
            Decision::ReportLeaderTransfer {
                job, fence_token, ..
            } => (job, crate::gate::JobReport::LeaderTransfer { fence_token }),
            Decision::FellBackToLocal { job, silent_ms, .. } => {
                if let Some(r) = self.data.routed.get_mut(&job) {
                    r.fell_back = true;
                    ev.push(Event::GateFellBack {
                        task: job,
                        job: r.job,
                        silent_ms,
                    });
                }
                return;
            }
            Decision::TimeOut { .. } | Decision::ReportFinalStatus { .. } => return,
        };
        if let Some(r) = self.data.routed.get(&task) {
            ev.push(Event::GateReport {
                task,
                gate_cluster: r.gate_cluster,
                job: r.job,
                report,
            });
        }
    }

    /// A `ClockTick` from `node`: if it is not the node the previous ticks came from,
    /// the log has a new leader, and every tracked task's fence token steps.
    fn clock_from(&mut self, node: NodeId, ev: &mut Vec<Event>) {
        if self.data.clock_leader == Some(node) {
            return;
        }
        if self.data.clock_leader.is_some() {
            let decisions = self.data.timeouts.on_leader_change(self.data.clock_ms);
            ev.push(Event::TimeoutLeaderChanged { leader: node });
            // Routed tasks tell their gate the new fence token.
            for d in &decisions {
                self.gate_decision(d, ev);
            }
        }
        self.data.clock_leader = Some(node);
        self.refresh_route(None);
    }

    /// The timeout check on a `ClockTick`: every attempt past its deadline or stuck is
    /// timed out, in task-id order. Whether any was (capacity was freed).
    fn check_timeouts(&mut self, ev: &mut Vec<Event>) -> bool {
        let mut any = false;
        for d in self.data.timeouts.on_tick(self.data.clock_ms) {
            if let Decision::TimeOut {
                job,
                reason,
                elapsed_ms,
                authority,
                ..
            } = d
            {
                self.time_out(job, reason, elapsed_ms, authority, ev);
                any = true;
            } else {
                self.gate_decision(&d, ev);
            }
        }
        any
    }

    /// Ends attempt `attempt` of `id` as timed out: re-placed with `attempt + 1` if
    /// attempts remain (its late completion is then stale), else ended `Timeout`. A
    /// gate's verdict (`Authority::Gate`) is global: the task ends at once.
    fn time_out(
        &mut self,
        id: TaskId,
        reason: TimeoutReason,
        elapsed_ms: u64,
        authority: Authority,
        ev: &mut Vec<Event>,
    ) {
        let Some(TaskStatus::Assigned { node, attempt }) = self.task(id).map(|t| t.status.clone())
        else {
            unreachable!("only assigned tasks are tracked");
        };
        let st = self.data.timeouts.get(id).cloned();
        // The gate's reason is global; the text says what this cluster saw locally.
        let local = match (authority, &st) {
            (Authority::Gate, Some(st)) => st.check(self.data.clock_ms).unwrap_or(reason),
            _ => reason,
        };
        let why = match (local, st) {
            (TimeoutReason::Stuck, Some(st)) => alloc::format!(
                "no progress for {} ms (stuck threshold {} ms)",
                self.data.clock_ms - st.last_progress_at_ms,
                st.stuck_threshold_ms
            ),
            (_, Some(st)) => alloc::format!(
                "{elapsed_ms} ms elapsed, over its timeout of {} ms + {} ms extensions",
                st.timeout_ms,
                st.total_extensions_granted_ms
            ),
            (_, None) => alloc::format!("{elapsed_ms} ms elapsed"),
        };
        let why = match authority {
            Authority::Local => why,
            Authority::Gate => {
                let g = match reason {
                    TimeoutReason::ClusterReported(c) => alloc::format!("{c} reported a timeout"),
                    TimeoutReason::AllClustersStuck => "no cluster made progress".into(),
                    TimeoutReason::Elapsed => "elapsed".into(),
                    TimeoutReason::Stuck => "stuck".into(),
                };
                alloc::format!("gate verdict ({g}): {why}")
            }
            Authority::Fallback => alloc::format!("gate silent, local fallback: {why}"),
        };
        self.untrack(id, JobEnd::TimedOut);
        self.data.nodes.get_mut(&node).expect("member").assigned -= 1;
        self.data.counters.tasks_timed_out += 1;
        let retry = attempt < MAX_ATTEMPTS && authority != Authority::Gate;
        ev.push(Event::TaskTimedOut {
            task: id,
            node,
            attempt,
            reason: why.clone(),
            retry,
        });
        let rec = self.data.tasks.get_mut(&id).expect("exists");
        rec.replaced_from.push(node);
        if retry {
            rec.status = TaskStatus::Pending;
            let to = self.place_or_queue(id, attempt + 1, None, ev);
            ev.push(Event::TaskReplaced {
                task: id,
                from: node,
                to,
                attempt: attempt + 1,
            });
            return;
        }
        let outcome = Outcome::Timeout(why);
        self.end_task(id, node, attempt, outcome.clone());
        ev.push(Event::TaskCompleted {
            task: id,
            node,
            outcome,
            ticks: 0,
            output_hash: Hash32::ZERO,
        });
    }

    /// Ends task `id` (already out of its node's count and untracked) with `outcome`:
    /// its module dropped, its tenant's in-flight count freed, finished.
    fn end_task(&mut self, id: TaskId, node: NodeId, attempt: u32, outcome: Outcome) {
        let rec = self.data.tasks.get_mut(&id).expect("exists");
        rec.spec.work = drop_work(&rec.spec.work);
        rec.status = TaskStatus::Completed {
            node,
            attempt,
            outcome,
            ticks: 0,
            output_hash: Hash32::ZERO,
            output: Vec::new(),
        };
        let tenant = rec.spec.tenant;
        if let Some(t) = self.data.tenants.get_mut(&tenant) {
            t.in_flight -= 1;
        }
        self.finish(id);
    }

    /// Whether `node` runs the current attempt `attempt` of `task`; a report for any
    /// other attempt carries a stale fence token: refused and counted.
    fn current_attempt(
        &mut self,
        task: TaskId,
        node: NodeId,
        attempt: u32,
        ev: &mut Vec<Event>,
    ) -> bool {
        let current = matches!(self.task(task).map(|t| &t.status),
            Some(TaskStatus::Assigned { node: n, attempt: a }) if *n == node && *a == attempt);
        if !current {
            self.data.counters.stale_reports += 1;
            ev.push(Event::StaleReport {
                task,
                node,
                attempt,
            });
        }
        current
    }

    fn task_progress(&mut self, task: TaskId, node: NodeId, attempt: u32, ev: &mut Vec<Event>) {
        if !self.current_attempt(task, node, attempt, ev) {
            return;
        }
        let r = self.data.timeouts.on_progress(task, self.data.clock_ms);
        assert!(r.is_ok(), "progress of tracked {task}: {r:?}");
        ev.push(Event::TaskProgress {
            task,
            node,
            attempt,
        });
    }

    fn request_extension(
        &mut self,
        task: TaskId,
        node: NodeId,
        attempt: u32,
        extension_ms: u64,
        ev: &mut Vec<Event>,
    ) {
        if !self.current_attempt(task, node, attempt, ev) {
            return;
        }
        let granted = self
            .data
            .timeouts
            .get(task)
            .map_or(0, |st| st.total_extensions_granted_ms);
        let max = self.data.config.timeouts.max_extension_ms;
        let now = self.data.clock_ms;
        if extension_ms == 0
            || granted.saturating_add(extension_ms) > max
            || self
                .data
                .timeouts
                .on_extension(task, node, extension_ms, now)
                .is_err()
        {
            ev.push(Event::Ignored(IgnoredReason::ExtensionOverLimit));
            return;
        }
        self.data.counters.extensions_granted += 1;
        let deadline_ms = self
            .data
            .timeouts
            .get(task)
            .map_or(0, |st| st.deadline_ms());
        ev.push(Event::ExtensionGranted {
            task,
            node,
            attempt,
            extension_ms,
            deadline_ms,
        });
    }

    /// A tenant cancels its task: a pending one leaves the queue, an assigned one its
    /// node (which stops it: the attempt is no longer assigned there). It ends
    /// `Cancelled` at its current attempt (node 0, attempt 0 if it never ran).
    fn cancel_task(&mut self, task: TaskId, tenant: TenantId, ev: &mut Vec<Event>) {
        let Some(rec) = self.task(task) else {
            ev.push(Event::Ignored(IgnoredReason::UnknownTask));
            return;
        };
        if rec.spec.tenant != tenant {
            ev.push(Event::Ignored(IgnoredReason::NotYourTask));
            return;
        }
        let (node, attempt, ran) = match rec.status {
            TaskStatus::Assigned { node, attempt } => (node, attempt, true),
            TaskStatus::Pending => {
                let node = rec.replaced_from.last().copied().unwrap_or(NodeId(0));
                (node, rec.replaced_from.len() as u32, false)
            }
            _ => {
                ev.push(Event::Ignored(IgnoredReason::AlreadyFinished));
                return;
            }
        };
        if ran {
            self.untrack(task, JobEnd::Cancelled);
            self.data.nodes.get_mut(&node).expect("member").assigned -= 1;
        } else {
            self.data.pending.retain(|t| *t != task);
        }
        self.data.counters.tasks_cancelled += 1;
        self.end_task(task, node, attempt, Outcome::Cancelled);
        ev.push(Event::TaskCancelled {
            task,
            node: ran.then_some(node),
            attempt,
        });
        self.place_pending(ev);
    }

    // ----- membership and liveness -----

    fn add_worker(&mut self, w: WorkerInfo, ev: &mut Vec<Event>) {
        let node = w.node;
        if let Err(reason) = w.validate() {
            ev.push(Event::WorkerRefused { node, reason });
            return;
        }
        let exists = self.data.nodes.contains_key(&node);
        if !exists && self.data.nodes.len() >= self.data.config.max_nodes {
            ev.push(Event::WorkerRefused {
                node,
                reason: Refusal::TooManyNodes,
            });
            return;
        }
        let cores = w.resources.k_cores;
        match self.data.nodes.get_mut(&node) {
            Some(r) => {
                r.info = w;
                r.available_cores = r.available_cores.min(cores);
            }
            None => {
                self.data.nodes.insert(
                    node,
                    NodeRecord {
                        info: w,
                        up: true,
                        available_cores: cores,
                        local_load: 0,
                        assigned: 0,
                        completed: 0,
                        last_heartbeat: None,
                        audit: None,
                        offered_q: 0,
                        offered_phi: 0,
                        quarantined: false,
                        load: None,
                    },
                );
            }
        }
        self.refresh_route(Some(node));
        ev.push(Event::WorkerAdded { node });
        let up = self.up_nodes();
        self.data.shards.rebalance(&up);
        self.place_pending(ev);
    }

    fn remove_worker(&mut self, node: NodeId, ev: &mut Vec<Event>) {
        if !self.data.nodes.contains_key(&node) {
            ev.push(Event::Ignored(IgnoredReason::UnknownNode));
            return;
        }
        self.take_down(node, ev);
        let ids: Vec<u64> = self.contracts_of(node);
        for id in ids {
            self.end_contract(id, ContractEnd::Released, ev);
        }
        self.data.nodes.remove(&node);
        self.refresh_route(Some(node));
        ev.push(Event::WorkerRemoved { node });
        let up = self.up_nodes();
        self.data.shards.rebalance(&up);
    }

    fn heartbeat(&mut self, h: HeartbeatInfo, ev: &mut Vec<Event>) {
        let time = self.data.time;
        let Some(r) = self.data.nodes.get_mut(&h.node) else {
            ev.push(Event::Ignored(IgnoredReason::UnknownNode));
            return;
        };
        r.available_cores = h.available_cores.min(r.info.resources.k_cores);
        r.local_load = h.local_load;
        // An observer never runs tasks: whatever it reports, it offers nothing.
        let cap = if r.info.observer {
            0
        } else {
            MAX_OFFERED_SLOTS
        };
        r.offered_q = h.q_units.min(cap);
        r.offered_phi = h.phi_windows.min(cap);
        r.last_heartbeat = Some(time);
        ev.push(Event::Heartbeat { node: h.node });
        if r.up {
            self.place_pending(ev);
        }
    }

    /// A member's measured load and coordinate. Refused (recorded, state unchanged)
    /// from an unknown node, with a utilisation above 100 % or an invalid coordinate.
    fn load_heartbeat(&mut self, l: LoadReport, ev: &mut Vec<Event>) {
        let now = self.data.clock_ms;
        let Some(r) = self.data.nodes.get_mut(&l.node) else {
            ev.push(Event::Ignored(IgnoredReason::UnknownNode));
            return;
        };
        let vivaldi = xdv_federation::vivaldi::VivaldiConfig::DEFAULT;
        if u64::from(l.utilisation_ppm) > xdv_federation::PPM
            || l.coordinate.is_some_and(|c| c.validate(&vivaldi).is_err())
        {
            ev.push(Event::Ignored(IgnoredReason::BadLoadReport));
            return;
        }
        r.load = Some((l, now));
        self.refresh_route(Some(l.node));
        ev.push(Event::LoadReported {
            node: l.node,
            queue_depth: l.queue_depth,
            utilisation_ppm: l.utilisation_ppm,
        });
    }

    fn node_down(&mut self, node: NodeId, ev: &mut Vec<Event>) {
        match self.data.nodes.get(&node) {
            None => ev.push(Event::Ignored(IgnoredReason::UnknownNode)),
            Some(r) if !r.up => ev.push(Event::Ignored(IgnoredReason::AlreadyInThatState)),
            Some(_) => {
                self.take_down(node, ev);
                ev.push(Event::NodeDown { node });
            }
        }
    }

    /// Seed 000 §6.3: suspend its contracts (reallocating K contracts it was the target
    /// of where another node has the same slots free), migrate its shards, re-place its
    /// tasks (task-id order, attempt + 1) away from it.
    fn take_down(&mut self, node: NodeId, ev: &mut Vec<Event>) {
        if let Some(r) = self.data.nodes.get_mut(&node) {
            r.up = false;
        }
        self.suspend_contracts_of(node, ev);
        let up = self.up_nodes();
        for m in self.data.shards.repair(&up) {
            ev.push(Event::ShardMigrated(m));
        }
        let orphans: Vec<(TaskId, u32)> = self
            .assigned_to(node)
            .map(|(t, attempt)| (t.id, attempt))
            .collect();
        // Extensions the node held are its no longer (the time granted stays with
        // the attempt, which ends here anyway: its task is re-placed or fails).
        self.data.timeouts.on_worker_failed(node);
        for (id, attempt) in orphans {
            self.data.nodes.get_mut(&node).expect("member").assigned -= 1;
            self.untrack(id, JobEnd::Failed);
            if attempt >= MAX_ATTEMPTS {
                // Every node that ran it went down: it may be what brings them down.
                // It ends `Failed` instead of being re-placed forever.
                self.fail_task(id, node, attempt, ev);
                continue;
            }
            let rec = self.data.tasks.get_mut(&id).expect("exists");
            rec.status = TaskStatus::Pending;
            rec.replaced_from.push(node);
            let to = self.place_or_queue(id, attempt + 1, Some(node), ev);
            ev.push(Event::TaskReplaced {
                task: id,
                from: node,
                to,
                attempt: attempt + 1,
            });
        }
    }

    fn node_up(&mut self, node: NodeId, ev: &mut Vec<Event>) {
        match self.data.nodes.get_mut(&node) {
            None => ev.push(Event::Ignored(IgnoredReason::UnknownNode)),
            Some(r) if r.up => ev.push(Event::Ignored(IgnoredReason::AlreadyInThatState)),
            Some(r) => {
                r.up = true;
                ev.push(Event::NodeUp { node });
                self.resume_contracts(ev);
                let up = self.up_nodes();
                // Fills in missing secondaries; live primaries stay where they moved.
                for m in self.data.shards.repair(&up) {
                    ev.push(Event::ShardMigrated(m));
                }
                self.place_pending(ev);
            }
        }
    }

    // ----- contracts -----

    fn contracts_of(&self, node: NodeId) -> Vec<u64> {
        self.data
            .contracts
            .iter()
            .filter(|(_, c)| c.contract.requesting_node == node || c.contract.target_node == node)
            .map(|(id, _)| *id)
            .collect()
    }

    fn validate_contract(&self, sc: &SignedContract) -> Result<(), Refusal> {
        let c = &sc.contract;
        let req = self
            .data
            .nodes
            .get(&c.requesting_node)
            .ok_or(Refusal::UnknownNode(c.requesting_node))?;
        if !sc.verify(&req.info.public_key) {
            return Err(Refusal::BadSignature);
        }
        if !req.info.capabilities.contains(&c.capability) {
            return Err(Refusal::CapabilityNotHeld(c.capability));
        }
        if self.data.contracts.contains_key(&c.contract_id) {
            return Err(Refusal::DuplicateContract(c.contract_id));
        }
        let t = self
            .data
            .tenants
            .get(&c.tenant)
            .ok_or(Refusal::UnknownTenant(c.tenant))?;
        if let Err(highest) = t.seqs.check_range(c.request_seq) {
            return Err(Refusal::SeqOutOfRange {
                seq: c.request_seq,
                highest,
            });
        }
        if let Err(last) = t.seqs.check(c.request_seq) {
            return Err(Refusal::StaleRequest {
                seq: c.request_seq,
                last,
            });
        }
        if c.contract_id != crate::contract::contract_id_for(c.tenant, c.request_seq) {
            return Err(Refusal::BadContractId(c.contract_id));
        }
        if !req.up {
            return Err(Refusal::NodeNotUp(c.requesting_node));
        }
        let target = self
            .data
            .nodes
            .get(&c.target_node)
            .ok_or(Refusal::UnknownNode(c.target_node))?;
        if !target.up {
            return Err(Refusal::NodeNotUp(c.target_node));
        }
        if c.duration_ms == 0 || c.duration_ms > crate::contract::MAX_CONTRACT_MS {
            return Err(Refusal::ZeroDuration);
        }
        let capacity = target.offered(c.domain);
        if capacity == 0 {
            return Err(Refusal::DomainNotOffered {
                node: c.target_node,
                domain: c.domain,
            });
        }
        check_resource_set(&c.resource_set, capacity)?;
        self.check_accel_quota(c)
    }

    /// A tenant's quota bounds the Q containers and Φ windows it holds at once.
    fn check_accel_quota(&self, c: &crate::contract::Contract) -> Result<(), Refusal> {
        let Some(q) = self.data.tenants.get(&c.tenant).and_then(|t| t.quota) else {
            return Ok(());
        };
        let limit = match c.domain {
            Domain::K => return Ok(()),
            Domain::Q => q.max_q_units,
            Domain::Phi => q.max_phi_windows,
        };
        let held: u32 = self
            .data
            .contracts
            .values()
            .filter(|r| r.contract.tenant == c.tenant && r.contract.domain == c.domain)
            .map(|r| r.contract.resource_set.len() as u32)
            .sum();
        let want = held.saturating_add(c.resource_set.len() as u32);
        if want > limit {
            return Err(Refusal::QuotaUnits {
                domain: c.domain,
                limit,
                wanted: want,
            });
        }
        Ok(())
    }

    /// A tenant's policy priority (the operator's `SetPolicy`; `Normal` when unset).
    pub fn policy(&self, tenant: TenantId) -> Priority {
        self.data
            .policies
            .get(&tenant)
            .copied()
            .unwrap_or(Priority::Normal)
    }

    fn holders(&self, node: NodeId, domain: Domain, set: &[u16], skip: u64) -> Vec<u64> {
        holders_in(&self.data, node, domain, set, skip)
    }

    /// Seed 000 §5.3: validate (signature, capability, tenant, resources), then policy
    /// priority — the operator's policy for each contract's tenant; a request preempts
    /// holders only if every one of them has strictly lower priority — then the
    /// deterministic tie-break (equal priority: the holder, earlier in the log, wins),
    /// allocate, record.
    fn propose_contract(&mut self, sc: SignedContract, ev: &mut Vec<Event>) {
        let id = sc.contract.contract_id;
        let verdict = self.validate_contract(&sc).and_then(|()| {
            if self.data.contracts.len() >= MAX_CONTRACTS {
                return Err(Refusal::TooManyContracts);
            }
            let c = &sc.contract;
            let mine = self.policy(c.tenant);
            let holders = self.holders(c.target_node, c.domain, &c.resource_set, id);
            match holders
                .iter()
                .find(|h| self.policy(self.data.contracts[h].contract.tenant) <= mine)
            {
                Some(&blocking) => Err(Refusal::Conflict { holder: blocking }),
                None => Ok(holders),
            }
        });
        // The request's sequence number is taken either way (a retry gets the same
        // answer), unless it is out of range or already taken.
        let (tenant, seq) = (sc.contract.tenant, sc.contract.request_seq);
        if let Some(t) = self.data.tenants.get_mut(&tenant)
            && t.seqs.check(seq).is_ok()
            && t.seqs.check_range(seq).is_ok()
        {
            t.seqs.accept(seq);
        }
        match verdict {
            Err(reason) => {
                self.data.counters.contracts_refused += 1;
                ev.push(contract_event(
                    &sc.contract,
                    ContractChange::Rejected(reason),
                ));
            }
            Ok(preempted) => {
                for p in preempted {
                    self.end_contract(p, ContractEnd::Preempted { by: id }, ev);
                }
                ev.push(contract_event(&sc.contract, ContractChange::Accepted));
                let expires_ms = self.data.clock_ms.saturating_add(sc.contract.duration_ms);
                self.data.contracts.insert(
                    id,
                    ContractRecord {
                        contract: sc.contract,
                        state: ContractState::Active,
                        accepted_at: self.data.time,
                        expires_ms,
                    },
                );
            }
        }
    }

    fn release(&mut self, id: u64, by: Party, ev: &mut Vec<Event>) {
        let Some(r) = self.data.contracts.get(&id) else {
            ev.push(Event::Ignored(IgnoredReason::UnknownContract));
            return;
        };
        let c = &r.contract;
        let party = match by {
            Party::Tenant(t) => t == c.tenant,
            Party::Node(n) => n == c.requesting_node || n == c.target_node,
        };
        if !party {
            ev.push(Event::Ignored(IgnoredReason::NotAParty));
            return;
        }
        self.end_contract(id, ContractEnd::Released, ev);
    }

    /// Ends contract `id` (if in force): its event, and it joins the recently ended
    /// contracts (the oldest of those is forgotten beyond [`MAX_ENDED_CONTRACTS`]).
    fn end_contract(&mut self, id: u64, end: ContractEnd, ev: &mut Vec<Event>) {
        let Some(r) = self.data.contracts.remove(&id) else {
            return;
        };
        ev.push(contract_event(&r.contract, end.change()));
        let key = self.data.counters.contracts_ended;
        self.data.counters.contracts_ended += 1;
        let ended = EndedContract {
            contract: r.contract,
            end,
            ended_ms: self.data.clock_ms,
            index: self.data.applied_index,
        };
        self.data.ended_contracts.insert(key, ended);
        while self.data.ended_contracts.len() > MAX_ENDED_CONTRACTS {
            self.data.ended_contracts.pop_first();
        }
        debug_assert!(self.data.ended_contracts.len() <= MAX_ENDED_CONTRACTS);
    }

    /// Why a task of `tenant` cannot use contract `id`, which is not in force: how it
    /// ended if the state remembers (another tenant's: not yours), else unknown.
    fn contract_gone(&self, tenant: TenantId, id: u64) -> Refusal {
        match self.ended_contract(id) {
            Some(e) if e.contract.tenant != tenant => Refusal::NotYourContract(id),
            Some(e) => Refusal::ContractEnded {
                contract: id,
                end: e.end.clone(),
            },
            None => Refusal::UnknownContract(id),
        }
    }

    /// How contract `id` ended, if it is among the recently ended ones.
    pub fn ended_contract(&self, id: u64) -> Option<&EndedContract> {
        self.data
            .ended_contracts
            .values()
            .find(|e| e.contract.contract_id == id)
    }

    /// Seed 000 §6.1: `node`'s device of `domain` failed — every contract on it ends
    /// aborted; contracts elsewhere and of other domains are untouched.
    fn abort_contracts(
        &mut self,
        node: NodeId,
        domain: Domain,
        reason: String,
        ev: &mut Vec<Event>,
    ) {
        let ids: Vec<u64> = self
            .data
            .contracts
            .iter()
            .filter(|(_, r)| r.contract.target_node == node && r.contract.domain == domain)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            ev.push(Event::Ignored(IgnoredReason::UnknownContract));
        }
        for id in ids {
            self.end_contract(id, ContractEnd::Aborted(reason.clone()), ev);
        }
    }

    fn expire_contracts(&mut self, ev: &mut Vec<Event>) {
        let now = self.data.clock_ms;
        let expired: Vec<u64> = self
            .data
            .contracts
            .iter()
            .filter(|(_, r)| r.expires_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_contract(id, ContractEnd::Expired, ev);
        }
    }

    /// Suspends every active contract `node` is a party to; a K contract whose target is
    /// `node` moves instead to the lowest-id up node where its slots are free.
    fn suspend_contracts_of(&mut self, node: NodeId, ev: &mut Vec<Event>) {
        if !self.data.nodes.contains_key(&node) {
            ev.push(Event::Ignored(IgnoredReason::UnknownNode));
            return;
        }
        for id in self.contracts_of(node) {
            let c = self.data.contracts[&id].contract.clone();
            if self.data.contracts[&id].state != ContractState::Active {
                continue;
            }
            if c.domain == Domain::K
                && c.target_node == node
                && c.requesting_node != node
                && let Some(to) = self.reallocation_target(&c, id)
            {
                ev.push(contract_event(
                    &c,
                    ContractChange::Reallocated { from: node, to },
                ));
                self.data
                    .contracts
                    .get_mut(&id)
                    .expect("exists")
                    .contract
                    .target_node = to;
                continue;
            }
            self.data.contracts.get_mut(&id).expect("exists").state = ContractState::Suspended;
            ev.push(contract_event(&c, ContractChange::Suspended));
        }
    }

    fn reallocation_target(&self, c: &crate::contract::Contract, id: u64) -> Option<NodeId> {
        self.data
            .nodes
            .iter()
            .filter(|(n, r)| {
                r.up && **n != c.target_node
                    && **n != c.requesting_node
                    && check_resource_set(&c.resource_set, r.info.resources.k_cores).is_ok()
            })
            .map(|(n, _)| *n)
            .find(|n| self.holders(*n, Domain::K, &c.resource_set, id).is_empty())
    }

    /// Resumes suspended contracts whose two ends are up again, in id order; one whose
    /// slots were taken meanwhile is released.
    fn resume_contracts(&mut self, ev: &mut Vec<Event>) {
        let suspended: Vec<u64> = self
            .data
            .contracts
            .iter()
            .filter(|(_, r)| r.state == ContractState::Suspended)
            .map(|(id, _)| *id)
            .collect();
        for id in suspended {
            let c = self.data.contracts[&id].contract.clone();
            let up = |n: NodeId| self.data.nodes.get(&n).is_some_and(|r| r.up);
            if !(up(c.requesting_node) && up(c.target_node)) {
                continue;
            }
            let clash = self
                .holders(c.target_node, c.domain, &c.resource_set, id)
                .into_iter()
                .any(|h| self.data.contracts[&h].state == ContractState::Active);
            if clash {
                self.end_contract(id, ContractEnd::Released, ev);
            } else {
                self.data.contracts.get_mut(&id).expect("exists").state = ContractState::Active;
                ev.push(contract_event(&c, ContractChange::Resumed));
            }
        }
    }

    /// The invariants listed in the module doc, as a check that never panics (the node
    /// simulator runs it after every step).
    pub fn invariants(&self) -> Result<(), alloc::string::String> {
        invariants(&self.data)
    }

    /// Asserts the invariants listed in the module doc after every entry (debug builds
    /// and tests; [`restore_image`](Self::restore_image) checks them always).
    pub fn check(&self) {
        if cfg!(debug_assertions) {
            if let Err(e) = invariants(&self.data) {
                panic!("cluster state invariant broken: {e}");
            }
            // The route cache is what the state gives from scratch.
            assert_eq!(
                self.route,
                self.fresh_route_cache(),
                "route cache differs from the state's"
            );
            // The incremental hash never drifts from the content.
            assert_eq!(
                self.hash(),
                self.hash_from_scratch(),
                "incremental state hash differs from the hash of the content"
            );
        }
    }
}

/// Contracts in force on `node`/`domain` sharing a resource with `set`, in id order.
fn holders_in(d: &StateData, node: NodeId, domain: Domain, set: &[u16], skip: u64) -> Vec<u64> {
    d.contracts
        .iter()
        .filter(|(id, r)| {
            **id != skip
                && r.contract.target_node == node
                && r.contract.domain == domain
                && r.contract.resource_set.iter().any(|x| set.contains(x))
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The invariants of the module doc, as a check that never panics (a snapshot image
/// from outside is refused when it breaks one).
fn invariants(d: &StateData) -> Result<(), alloc::string::String> {
    use alloc::format;
    if let Some(g) = &d.gate {
        g.check()?;
    }
    let mut per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
    let mut per_tenant: BTreeMap<TenantId, u32> = BTreeMap::new();
    if d.ended_contracts.len() > MAX_ENDED_CONTRACTS
        || d.ended_contracts
            .keys()
            .any(|k| *k >= d.counters.contracts_ended)
    {
        return Err("ended contracts beyond their bound or their counter".into());
    }
    let queued: BTreeSet<TaskId> = d.pending.iter().copied().collect();
    if queued.len() != d.pending.len() {
        return Err("pending list has duplicates".into());
    }
    let mut pending = 0;
    for (id, t) in &d.tasks {
        if *id != t.id || t.id.0 >= d.next_task {
            return Err(format!("task {} misfiled or beyond next id", t.id));
        }
        match t.status {
            TaskStatus::Assigned { node, .. } => {
                if !d.nodes.contains_key(&node) {
                    return Err(format!("task {} assigned to non-member {node}", t.id));
                }
                *per_node.entry(node).or_default() += 1;
                *per_tenant.entry(t.spec.tenant).or_default() += 1;
            }
            TaskStatus::Pending => {
                pending += 1;
                if !queued.contains(&t.id) {
                    return Err(format!("pending task {} not queued", t.id));
                }
                *per_tenant.entry(t.spec.tenant).or_default() += 1;
            }
            _ if !d.finished.contains_key(&t.id) => {
                return Err(format!("finished task {} untracked", t.id));
            }
            _ => {}
        }
    }
    if pending != d.pending.len() {
        return Err(format!(
            "pending list out of step ({pending} vs {})",
            d.pending.len()
        ));
    }
    if let Some(t) = d.finished.keys().find(|t| !d.tasks.contains_key(t)) {
        return Err(format!("finished task {t} unknown"));
    }
    // Exactly the final tasks (the state hash leaves `finished` out for this).
    let assigned: usize = per_node.values().map(|&n| n as usize).sum();
    let final_tasks = d.tasks.len() - pending - assigned;
    if d.finished.len() != final_tasks {
        return Err(format!(
            "finished set out of step ({} vs {final_tasks} final tasks)",
            d.finished.len()
        ));
    }
    for (n, r) in &d.nodes {
        if r.assigned != per_node.get(n).copied().unwrap_or(0) || r.info.node != *n {
            return Err(format!("{n} assigned count or id out of step"));
        }
    }
    for (t, r) in &d.tenants {
        if r.in_flight != per_tenant.get(t).copied().unwrap_or(0) {
            return Err(format!("{t} in flight out of step"));
        }
    }
    if per_tenant.keys().any(|t| !d.tenants.contains_key(t)) {
        return Err("task of an unregistered tenant in flight".into());
    }
    for (id, r) in &d.contracts {
        let c = &r.contract;
        if *id != c.contract_id {
            return Err(format!("contract {id} misfiled"));
        }
        let others = holders_in(d, c.target_node, c.domain, &c.resource_set, *id);
        if !others.is_empty() {
            return Err(format!("contract {id} overlaps {others:?}"));
        }
    }
    if d.shards.count() != d.config.shard_count {
        return Err("shard table size differs from the config".into());
    }
    // Timeout tracking follows exactly the assigned tasks.
    let assigned = d
        .tasks
        .values()
        .filter(|t| matches!(t.status, TaskStatus::Assigned { .. }))
        .map(|t| t.id);
    if !assigned.eq(d.timeouts.jobs().map(|(id, _)| *id)) {
        return Err("timeout tracking differs from the assigned tasks".into());
    }
    if d.timeouts.config() != &d.config.timeouts.tracker {
        return Err("timeout tracker config differs from the state config".into());
    }
    // Routed tasks are retained and not finished; a tracked one follows its gate
    // unless it fell back.
    for (id, r) in &d.routed {
        if d.finished.contains_key(id) || !d.tasks.contains_key(id) {
            return Err(format!("routed {id} is finished or unknown"));
        }
        if let Some(st) = d.timeouts.get(*id) {
            let ok = if r.fell_back {
                st.gate.is_none() || st.fell_back
            } else {
                st.gate == Some(NodeId(r.gate_cluster)) && !st.fell_back
            };
            if !ok {
                return Err(format!("routed {id}: tracking and fallback disagree"));
            }
        }
    }
    Ok(())
}

/// A gate message's refusal, as the event says it.
fn gate_refusal(e: &TimeoutError) -> String {
    match e {
        TimeoutError::StaleFence { got, current } => {
            alloc::format!("stale fence {got} < {current}")
        }
        other => alloc::format!("{other:?}"),
    }
}

fn check_resource_set(set: &[u16], capacity: u16) -> Result<(), Refusal> {
    if set.is_empty() {
        return Err(Refusal::EmptyResourceSet);
    }
    if set.len() > crate::contract::MAX_RESOURCES || !set.windows(2).all(|w| w[0] < w[1]) {
        return Err(Refusal::ResourcesNotSorted);
    }
    match set.iter().find(|&&r| r >= capacity) {
        Some(&resource) => Err(Refusal::ResourceOutOfRange { resource, capacity }),
        None => Ok(()),
    }
}

/// What `r`'s latest load heartbeat reported that its route inputs depend on.
fn reported(r: &NodeRecord) -> crate::placement::Reported<'_> {
    match &r.load {
        Some((l, _)) => (l.coordinate.as_ref(), l.queue_depth),
        None => (None, 0),
    }
}

/// A finished task keeps only its module's hash.
fn drop_work(w: &Work) -> Work {
    match w {
        Work::Wasm(m) | Work::Job(m) => Work::Dropped(Hash32(Sha256::digest(m).into())),
        other => other.clone(),
    }
}

impl xdv_raft::StateMachine for ClusterState {
    fn apply(&mut self, index: xdv_raft::LogIndex, data: &[u8]) {
        ClusterState::apply(self, index, data);
    }

    fn snapshot(&self) -> Vec<u8> {
        self.snapshot_image()
    }

    fn restore(&mut self, data: &[u8]) {
        if self.restore_image(data).is_err() {
            self.restore_errors += 1;
        }
    }
}
