//! The node: consensus, the replicated cluster state, the management gate and the
//! node's own timers, as one value driven by explicit inputs.
//!
//! Inputs are method calls; time enters only through [`Node::tick`]. Every input ends
//! by handling what Raft made ready (durable writes happen inside the storage, before
//! any message that depends on them is put in the outbox), applying committed entries
//! and deriving the node's actions from the applied state. Outputs accumulate in one
//! [`Outbox`] that the driver drains and performs: the kernel's loop sends frames over
//! smoltcp, appends audit records and dispatches tasks to its run queues; the
//! simulator delivers them through its packet network and fake workers.
//!
//! Invariants ([`Node::invariants`], checked by the simulator after every step):
//! - the applied index never exceeds the commit index, which never exceeds the log;
//! - the cluster state's own invariants hold;
//! - a task is dispatched at most once per (task, attempt) while it stays assigned
//!   here, and every task assigned here is dispatched or reported (derived from the
//!   applied state, not from events: a restart or a snapshot install cannot lose one,
//!   and a finished task is never run again);
//! - a running attempt the state no longer assigns here (cancelled, timed out,
//!   re-placed) is asked to stop exactly once ([`Outbox::stop`]); whatever it reports
//!   afterwards is dropped, never proposed.

pub mod discovery;
pub mod federation;
mod membership;
pub mod peers;
pub mod stages;

use crate::config::{Identity, NodeConfig};
use crate::durable::{DurableStorage, Opened, Region};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use stages::{Moment, Stages};
use xdv_audit::RecordBody;
use xdv_cluster::mgmt::{
    self, ClusterView, Denied, Gate, MemberView, PeerForward, Principal, Request, Response,
    SignedRequest,
};
use xdv_cluster::{
    ClusterState, Command, Completion, Domain, HeartbeatInfo, LoadReport, Proposal, Resources,
    TaskSpec, TaskStatus, WorkerInfo,
};
use xdv_raft::{EntryKind, Message, RaftNode, Role, Storage};
use xdv_types::{Hash32, LamportClock, NodeId, TaskId, TenantId, Timestamp};

/// Audit `Custom` tag of the per-entry cluster record: postcard (index, command, state hash).
pub const AUDIT_TAG_APPLIED: u16 = 0xC1;
/// Audit `Custom` tag of the node's start record: postcard (how the Raft region was found).
pub const AUDIT_TAG_NODE: u16 = 0xC2;
/// Audit `Custom` tag of a contract event this node is a party to: postcard
/// ([`ContractRecordBody`]). Written by both the requesting and the target node.
pub const AUDIT_TAG_CONTRACT: u16 = 0xC4;
/// Audit `Custom` tag of a hash-voting alarm: postcard (index, node, its hash, the
/// majority's). Every node records it.
pub const AUDIT_TAG_HASH_ALARM: u16 = 0xC5;
/// The event of the requesting node's record of a contract it signed and proposed
/// (before the log decides it; only the requesting node writes it).
pub const EVENT_PROPOSED: &str = "proposed";
/// Audit `Custom` tag of a peer-health transition this node saw: postcard
/// ([`PeerRecordBody`]): confirmed, removed, suspected (with the adaptive timeout and
/// its factors), refuted, dead. The leader's `NodeDown` follows a `dead` or `removed`.
pub const AUDIT_TAG_PEER: u16 = 0xC6;
/// Audit `Custom` tag of an RTT sample this node was given (its Vivaldi input log):
/// postcard ([`RttRecordBody`]). Replaying a boot's samples in order through
/// [`replay_coordinate`] gives the coordinate the node had.
pub const AUDIT_TAG_RTT: u16 = 0xC9;
/// Audit `Custom` tag of an audit-root alarm: postcard (node, records held, records
/// claimed): a node published a root that does not extend the one the cluster held for
/// it. Every node (an observer too) records it.
pub const AUDIT_TAG_ROOT_ALARM: u16 = 0xCA;
/// Contract answers kept for parked reservations (the most recent ones).
const MAX_CONTRACT_ANSWERS: usize = 256;
/// Completions in one `TasksCompleted` entry at most (as a `SubmitBatch`'s tasks).
pub const MAX_COMPLETIONS_PER_ENTRY: usize = xdv_cluster::mgmt::MAX_BATCH_SUBMISSIONS;
/// Task specs in one merged `AssignTasks` entry at most (four full batches).
pub const MAX_SPECS_PER_ENTRY: usize = 4 * xdv_cluster::mgmt::MAX_BATCH_SUBMISSIONS;

/// What a contract audit record holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContractRecordBody {
    pub index: u64,
    pub contract: u64,
    pub hash: Hash32,
    pub event: String,
    pub tenant: TenantId,
    pub requester: NodeId,
    pub target: NodeId,
    /// For a job under the contract that ended: (task, output hash) — the requesting
    /// node's reference to what the target ran (its entanglement and teleportation use
    /// is in the target's own device record and in the output).
    pub job: Option<(TaskId, Hash32)>,
    pub detail: String,
}
/// What a peer-health audit record holds ([`AUDIT_TAG_PEER`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerRecordBody {
    pub peer: NodeId,
    pub event: String,
    pub at_ms: u64,
    /// For `suspected`: (timeout ms, latency ppm, load ppm, confidence ppm).
    pub timeout: Option<(u64, u64, u64, u64)>,
}

/// What an RTT-sample audit record holds ([`AUDIT_TAG_RTT`]): the whole input of one
/// [`Node::on_peer_rtt`] call and whether the node took it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RttRecordBody {
    pub peer: NodeId,
    pub rtt_us: u64,
    pub at_ms: u64,
    /// The peer's coordinate, in its wire form, as it arrived.
    pub coordinate: Vec<u8>,
    /// The sample moved the coordinate (else it was refused and counted).
    pub accepted: bool,
}

/// Replays one boot's RTT samples (in record order) from a fresh coordinate, as node
/// `me` with configuration `cfg` ran them: the coordinate's wire form at the end, or
/// the first sample whose verdict differs from the node's (replay diverged).
pub fn replay_coordinate(
    me: NodeId,
    cfg: &NodeConfig,
    samples: &[RttRecordBody],
) -> Result<Vec<u8>, String> {
    replay_coordinate_with(me, cfg, samples, |_| {})
}

/// [`replay_coordinate`], calling `each(coordinate)` after every sample the node took,
/// with the coordinate it then had (what its load heartbeats report).
pub fn replay_coordinate_with<'a>(
    me: NodeId,
    cfg: &NodeConfig,
    samples: impl IntoIterator<Item = &'a RttRecordBody>,
    mut each: impl FnMut(&xdv_federation::vivaldi::Coordinate),
) -> Result<Vec<u8>, String> {
    let mut h = peers::PeerHealth::new(me, cfg.vivaldi, cfg.confirm)?;
    for (i, r) in samples.into_iter().enumerate() {
        let took = h
            .rtt_sample(r.peer, r.rtt_us, &r.coordinate, r.at_ms)
            .is_ok();
        if took != r.accepted {
            return Err(alloc::format!(
                "sample {i} (from {} at {} ms): the node {} it, the replay {}",
                r.peer,
                r.at_ms,
                if r.accepted { "took" } else { "refused" },
                if took { "took" } else { "refused" }
            ));
        }
        if took {
            each(h.vivaldi.local_coordinate());
        }
    }
    Ok(h.coordinate_bytes())
}

/// A load heartbeat differs materially from the one the log holds: another queue
/// depth, utilisation 10 points apart, a coordinate gained, moved by 1 ms or more
/// (L1 over position and height) or with an error 10 points apart. Smaller changes
/// wait for the periodic heartbeat, so a jittering coordinate does not flood the log.
pub fn load_changed(old: &LoadReport, new: &LoadReport) -> bool {
    const UTIL_STEP_PPM: u32 = 100_000;
    const MOVE_US: u64 = 1_000;
    const ERROR_STEP_PPM: u64 = 100_000;
    let coordinate = match (&old.coordinate, &new.coordinate) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            let moved: u64 = a
                .position_us
                .iter()
                .zip(b.position_us)
                .map(|(x, y)| x.abs_diff(y))
                .sum::<u64>()
                + a.height_us.abs_diff(b.height_us);
            moved >= MOVE_US || a.error_ppm.abs_diff(b.error_ppm) >= ERROR_STEP_PPM
        }
        _ => true,
    };
    old.queue_depth != new.queue_depth
        || old.utilisation_ppm.abs_diff(new.utilisation_ppm) >= UTIL_STEP_PPM
        || coordinate
}

/// Most parked client requests (submissions waiting for the log, `AwaitTask`s
/// waiting for an outcome): enough for a few hundred pipelined tasks in flight.
pub const MAX_PARKED: usize = 1024;
/// Tasks named since the last dispatch past which it walks every assigned task instead
/// (a burst of entries: the walk is then the cheaper).
const MAX_DISPATCH_TASKS: usize = 4096;
/// Most queued outbound items of one kind before the driver drains (beyond: dropped
/// and counted; Raft and clients retry).
pub const MAX_OUTBOX: usize = 4096;
/// Own proposals tracked for commit latency.
const MAX_TRACKED: usize = 512;

/// The task specs a command submits (`AssignTask`, `AssignTasks`), else none.
fn specs_of(command: &Command) -> &[TaskSpec] {
    match command {
        Command::AssignTask(spec) => core::slice::from_ref(spec),
        Command::AssignTasks(specs) => specs,
        _ => &[],
    }
}

/// How many submissions a `SubmitBatch` or `RunBatch` request carries (0 for
/// anything else).
fn batch_len(request: &Request) -> u64 {
    match request {
        Request::SubmitBatch(items) | Request::RunBatch(items) => items.len() as u64,
        _ => 0,
    }
}

/// A management client connection: the driver's slot and its generation (bumped when
/// the slot is reused, so a late reply never reaches a new client).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientConn {
    pub slot: u32,
    pub generation: u64,
}

/// A task for the driver to run: the (task, attempt) the log assigned here, what it
/// runs and the tenant's sandbox limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunTask {
    pub task: TaskId,
    pub attempt: u32,
    pub spec: TaskSpec,
    /// Lamport time of the submission (the sandbox's logical clock).
    pub submitted_lamport: u64,
    pub memory_pages: u32,
    pub table_elements: u32,
    /// Device tasks: the containers or windows it may use — its contract's, or those
    /// no contract holds. Empty for K tasks.
    pub slots: Vec<u16>,
}

/// What the node asks its driver to do.
#[derive(Default, Debug)]
pub struct Outbox {
    /// Encoded Raft messages for peers.
    pub raft: Vec<(NodeId, Vec<u8>)>,
    /// Encoded `PeerForward`s for peers (requests and own commands for the leader).
    pub forwards: Vec<(NodeId, Vec<u8>)>,
    /// Encoded `Response`s for management clients.
    pub replies: Vec<(ClientConn, Vec<u8>)>,
    /// Tasks to run.
    pub run: Vec<RunTask>,
    /// Running (task, attempt)s to stop: the log cancelled, timed out or re-placed
    /// them. The driver stops each (the sandbox's cancel flag; the simulator drops it)
    /// and then reports it through [`Node::on_task_done`] as usual (dropped there).
    pub stop: Vec<(TaskId, u32)>,
    /// Audit records to append, in order.
    pub audit: Vec<RecordBody>,
    /// Lines for the operator (console / log).
    pub notes: Vec<String>,
    /// The members and their keys, when they changed (the log admitted or removed
    /// one): the transport keeps connections to exactly these.
    pub members: Option<Vec<(NodeId, [u8; 32])>>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.raft.is_empty()
            && self.forwards.is_empty()
            && self.replies.is_empty()
            && self.run.is_empty()
            && self.stop.is_empty()
            && self.audit.is_empty()
            && self.notes.is_empty()
            && self.members.is_none()
    }
}

/// Counters for the console and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub applied_entries: u64,
    pub refused_requests: u64,
    /// Refusals folded into summary records instead of one record each.
    pub refusals_summarised: u64,
    pub forwarded_in: u64,
    pub forwards_dropped: u64,
    pub raft_bad_messages: u64,
    pub outbox_dropped: u64,
    pub tasks_dispatched: u64,
    pub completions_proposed: u64,
    /// `TasksCompleted` entries proposed: completions reported together, one entry.
    pub completion_groups_proposed: u64,
    /// `AssignTasks` entries the leader proposed for more than one request: the
    /// submissions of one loop iteration, one entry.
    pub submission_groups_proposed: u64,
    /// Audit roots the log took (any node's; after a node's first, each with a
    /// verified consistency proof).
    pub audit_roots_taken: u64,
    /// Running attempts the driver was asked to stop.
    pub tasks_stopped: u64,
    /// `TaskProgress` and `RequestExtension` commands sent.
    pub progress_reports: u64,
    pub extension_requests: u64,
    pub snapshots_restored: u64,
    pub snapshot_images_refused: u64,
    /// Walks of every task assigned in the cluster ([`Node::dispatch`]): the first
    /// dispatch, after a snapshot restore, or after an event that moves tasks without
    /// naming them; ordinary entries dispatch the tasks their events name.
    pub dispatch_walks: u64,
    /// Walks of the parked requests ([`Node::answer_parked`]): after a change of the
    /// state, a new parked request or a parked request's deadline only.
    pub parked_walks: u64,
}

/// Why the node does not take part in consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Halt {
    /// No peers and no provisioning: a development node without a cluster.
    NoCluster,
    /// The durable Raft state could not be trusted (or stopped being durable).
    Storage(String),
    /// The cluster state machine could not start.
    State(String),
}

impl core::fmt::Display for Halt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Halt::NoCluster => f.write_str("no cluster (no provisioning module, no peers= list)"),
            Halt::Storage(why) => write!(
                f,
                "{why}; this node takes no part until an operator wipes its Raft region"
            ),
            Halt::State(why) => write!(f, "cluster state unusable: {why}"),
        }
    }
}

enum Wait {
    Task {
        tenant: TenantId,
        seq: u64,
    },
    Quota {
        tenant: TenantId,
        quota: Option<xdv_cluster::Quota>,
    },
    Contract {
        id: u64,
    },
    Released {
        id: u64,
    },
    Policy {
        tenant: TenantId,
        priority: xdv_types::Priority,
    },
    Placement {
        policy: xdv_cluster::PlacementKind,
    },
    Member {
        node: NodeId,
        member: bool,
    },
    Cancel {
        task: TaskId,
    },
    /// `AwaitTask`: the task's outcome.
    Done {
        task: TaskId,
    },
    /// `SubmitBatch`: every one of `tenant`'s numbers `first .. first + count` placed;
    /// `RunBatch` (`then_await`): and then every one of those tasks finished.
    Batch {
        tenant: TenantId,
        first: u64,
        count: u64,
        then_await: bool,
    },
    /// `AwaitTasks`: every task's outcome.
    AllDone {
        tasks: Vec<TaskId>,
    },
    /// A gate's `Submit`: the submission routed (`RouteJob` applied).
    Routed {
        tenant: TenantId,
        seq: u64,
    },
    /// `AdmitDiscovered`: the MAC admitted.
    Admitted {
        mac: xdv_cluster::discovery::Mac,
        node: NodeId,
    },
}

struct Parked {
    conn: ClientConn,
    wait: Wait,
    deadline_ms: u64,
}

/// Rate limiter for refusal records: the first refusal of a window is recorded in
/// full, the rest are counted and summarised in one record when the window ends.
#[derive(Default)]
struct RefusalLimiter {
    window_start_ms: u64,
    in_window: u64,
    first: Option<String>,
}

/// One XDV node. `R` is the byte region its durable Raft state lives in.
pub struct Node<R: Region> {
    cfg: NodeConfig,
    me: NodeId,
    raft: Option<RaftNode<DurableStorage<R>>>,
    halted: Option<Halt>,
    opened: Option<Opened>,
    state: ClusterState,
    gate: Gate,
    clock: LamportClock,
    now_ms: u64,
    last_tick_ms: u64,
    /// Dispatched to the driver and not reported yet.
    running: BTreeSet<(TaskId, u32)>,
    /// Completions proposed and not yet applied, with when they were last sent.
    unconfirmed: BTreeMap<(TaskId, u32), (Completion, u64)>,
    /// Running attempts the driver was asked to stop (a subset of `running`).
    stopping: BTreeSet<(TaskId, u32)>,
    /// The late-completion test hook: hold the next completion this long (ms).
    late_hook: Option<u64>,
    /// Completions the hook holds: when each is proposed, as it was.
    late: Vec<(u64, Completion)>,
    /// Completions reported since the last proposal: proposed together at the next
    /// [`Node::process`] (the end of a [`Node::hold`]), one entry for the group.
    completions: Vec<Completion>,
    /// Submissions (`AssignTask`, `AssignTasks`) this leader accepted while held:
    /// proposed together at the release, the whole requests of the iteration in as
    /// few entries as fit ([`Node::propose_submissions`]).
    submissions: Vec<Command>,
    /// Progress of running attempts: (progress seen since the last report, when the
    /// last report was sent).
    progress: BTreeMap<(TaskId, u32), (bool, u64)>,
    parked: Vec<Parked>,
    /// When each member was last heard by the transport.
    heard_ms: BTreeMap<NodeId, u64>,
    last_detect_ms: u64,
    last_publish_ms: u64,
    last_heartbeat_ms: u64,
    /// When this node last proposed its load heartbeat.
    last_load_ms: u64,
    /// (Q containers, Φ windows) this node's devices offer now, from the driver.
    offer: (u16, u16),
    /// How recent reservations and releases ended, from applied entries.
    contract_answers: BTreeMap<u64, xdv_cluster::mgmt::ContractAnswer>,
    /// Discovery reports heard and proposed (this node's own bookkeeping).
    pub discovery: discovery::DiscoveryLocal,
    last_clock_tick_ms: u64,
    /// (records, chain head) of this node's audit log, from the driver.
    audit_head: (u64, Hash32),
    /// (records, Merkle root) to publish, when the driver computed it.
    audit_root: Option<(u64, Hash32, u64, Vec<Hash32>)>,
    /// (index, term, ms) of own proposals not yet applied.
    proposed: VecDeque<(u64, u64, u64)>,
    latencies_ms: VecDeque<u64>,
    refusals: RefusalLimiter,
    counters: NodeCounters,
    /// The finest time input so far (µs; [`Node::set_time_us`], or `tick`'s ms).
    now_us: u64,
    /// Per-task stage stamps (the request path's breakdown, [`ClusterView::stages`]).
    stages: Stages,
    /// The driver's loop time spent working, µs ([`Node::set_loop_busy_us`]).
    loop_busy_us: u64,
    /// The same split by phase ([`Node::set_loop_phases_us`]).
    loop_phases_us: Vec<(&'static str, u64)>,
    /// The driver's loop iterations ([`Node::set_loop_iterations`]).
    loop_iterations: u64,
    out: Outbox,
    /// The member set last given to the driver ([`Outbox::members`]).
    members_sent: Vec<(NodeId, [u8; 32])>,
    /// The driver's own numbers for the metrics answer ([`Node::set_local_metrics`]).
    local_metrics: crate::metrics::LocalMetrics,
    /// Vivaldi coordinate and role-aware confirmation of the members ([`peers`]).
    health: peers::PeerHealth,
    /// Group commit ([`Node::hold`]): Raft's output waits for [`Node::release`].
    held: bool,
    /// Counts changes of the state (entries applied, snapshots restored). The tasks
    /// assigned here and the answers to parked requests can differ only after one, so
    /// [`Node::dispatch`] and [`Node::answer_parked`] walk (every task in flight, every
    /// parked request) only when it moved since their last walk, or a parked request's
    /// deadline came: walking on every loop iteration made each iteration's cost grow
    /// with the load.
    state_changes: u64,
    /// The leader's `ClockTick` of a held iteration, proposed at its release after the
    /// iteration's completions and submissions.
    tick_held: bool,
    /// `state_changes` at the last [`Node::dispatch`] (`u64::MAX`: never).
    dispatched_at: u64,
    /// The tasks the entries applied since the last [`Node::dispatch`] named in their
    /// events: only their assignments here can have changed, so dispatch looks at
    /// them alone, unless `dispatch_all` says otherwise.
    dispatch_tasks: BTreeSet<TaskId>,
    /// Dispatch walks every task assigned in the cluster: nothing dispatched yet, a
    /// snapshot restored, or an applied event that can move tasks without naming them
    /// (a node down or removed, contracts, quarantine, a gate's events).
    dispatch_all: bool,
    /// `state_changes` at the last [`Node::answer_parked`] walk (`u64::MAX` after a
    /// request was parked: the next call walks).
    answered_at: u64,
    /// The earliest deadline of a parked request (`u64::MAX`: none).
    parked_deadline_ms: u64,
    /// Federation timers and counters ([`federation`]); idle without a federation.
    fed: federation::FedLocal,
}

/// The cluster state a node built from `cfg` starts from before its log: every member
/// with the genesis cores and capabilities, every tenant. Public so that host replay
/// (`cargo xdv replay`) starts from exactly the state the node started from.
pub fn genesis(cfg: &NodeConfig) -> Result<ClusterState, String> {
    let peers = cfg.identity.genesis_peers(cfg.genesis_members.as_deref());
    if let Some(g) = &cfg.genesis_members
        && let Some(missing) = g.iter().find(|n| !peers.iter().any(|p| p.0 == **n))
    {
        return Err(alloc::format!(
            "genesis member {missing} has no key in the provisioning module"
        ));
    }
    let workers: Vec<WorkerInfo> = peers
        .iter()
        .map(|&(node, key)| WorkerInfo {
            node: NodeId(node),
            public_key: key,
            resources: Resources {
                k_cores: cfg.genesis_cores,
                q_units: 0,
                phi_windows: 0,
            },
            capabilities: cfg.capabilities.clone(),
            observer: false,
        })
        .collect();
    let mut state = ClusterState::genesis(cfg.state.clone(), &workers, &cfg.identity.tenants)
        .map_err(|e| alloc::format!("{e}"))?;
    if let Some(crate::config::FederationConfig::Gate { route, .. }) = &cfg.federation {
        state.enable_gate(**route);
    }
    Ok(state)
}

impl<R: Region> Node<R> {
    /// Builds the node at time `now_ms` over its Raft region. A node whose region
    /// cannot be trusted still comes up, halted, and says why ([`Node::halted`]).
    pub fn new(cfg: NodeConfig, region: R, now_ms: u64) -> Node<R> {
        let id = &cfg.identity;
        let me = NodeId(id.node);
        // A joining node bootstraps with the cluster's genesis voters (not itself):
        // it never stands for election until the log makes it a voter.
        let voters: Vec<NodeId> = id
            .genesis_peers(cfg.genesis_members.as_deref())
            .iter()
            .map(|p| NodeId(p.0))
            .collect();
        let (state, mut state_error) = match genesis(&cfg) {
            Ok(s) => (s, None),
            Err(e) => (
                ClusterState::new(xdv_cluster::Config::default())
                    .expect("the default state config is valid"),
                Some(e),
            ),
        };
        let health = match peers::PeerHealth::new(me, cfg.vivaldi, cfg.confirm) {
            Ok(h) => h,
            Err(e) => {
                state_error.get_or_insert(e);
                peers::PeerHealth::new(
                    me,
                    xdv_federation::vivaldi::VivaldiConfig::DEFAULT,
                    cfg.confirm,
                )
                .expect("the default Vivaldi configuration is valid")
            }
        };
        let mut node = Node {
            me,
            raft: None,
            halted: None,
            opened: None,
            state,
            gate: Gate::new(id.cluster, id.operator_key),
            clock: LamportClock::new(),
            now_ms,
            now_us: now_ms.saturating_mul(1000),
            stages: Stages::default(),
            loop_busy_us: 0,
            loop_phases_us: Vec::new(),
            loop_iterations: 0,
            last_tick_ms: now_ms,
            running: BTreeSet::new(),
            unconfirmed: BTreeMap::new(),
            stopping: BTreeSet::new(),
            late_hook: None,
            late: Vec::new(),
            completions: Vec::new(),
            submissions: Vec::new(),
            progress: BTreeMap::new(),
            parked: Vec::new(),
            heard_ms: BTreeMap::new(),
            last_detect_ms: now_ms,
            last_publish_ms: now_ms,
            last_heartbeat_ms: 0,
            last_load_ms: 0,
            offer: (0, 0),
            contract_answers: BTreeMap::new(),
            discovery: discovery::DiscoveryLocal::default(),
            last_clock_tick_ms: 0,
            audit_head: (0, Hash32::ZERO),
            audit_root: None,
            proposed: VecDeque::new(),
            latencies_ms: VecDeque::new(),
            refusals: RefusalLimiter::default(),
            counters: NodeCounters::default(),
            out: Outbox::default(),
            members_sent: Vec::new(),
            local_metrics: crate::metrics::LocalMetrics::default(),
            health,
            held: false,
            state_changes: 0,
            tick_held: false,
            dispatched_at: u64::MAX,
            dispatch_tasks: BTreeSet::new(),
            dispatch_all: true,
            answered_at: u64::MAX,
            parked_deadline_ms: u64::MAX,
            fed: federation::FedLocal::default(),
            cfg,
        };
        if let Some(e) = state_error {
            node.halt(Halt::State(e));
            return node;
        }
        let provisioned = node.cfg.identity.seed.is_some();
        if voters.is_empty() || (voters.len() < 2 && !provisioned) {
            node.halted = Some(Halt::NoCluster);
            return node;
        }
        let cluster = node.cfg.identity.cluster;
        match DurableStorage::open(region, cluster, me.0, &voters) {
            Ok((storage, opened)) => match RaftNode::new(me, node.cfg.raft.clone(), storage) {
                Ok(r) => {
                    let st = r.status();
                    node.note(alloc::format!(
                        "raft: node {} {} term {} last index {} commit {} (voters {})",
                        me.0,
                        match opened {
                            Opened::Fresh => "bootstrapped at",
                            Opened::Restored { .. } => "restored from its region at",
                        },
                        st.term,
                        st.last_index,
                        r.storage().hard_state().commit,
                        list(&voters)
                    ));
                    node.opened = Some(opened);
                    node.raft = Some(r);
                }
                Err(e) => node.halt(Halt::State(alloc::format!("raft config: {e:?}"))),
            },
            Err(e) => node.halt(Halt::Storage(alloc::format!("{e}"))),
        }
        node
    }

    fn halt(&mut self, why: Halt) {
        let line = alloc::format!("node: halted: {why}");
        self.note(line.clone());
        self.out.audit.push(RecordBody::Custom {
            tag: AUDIT_TAG_NODE,
            bytes: mgmt::encode(&line),
        });
        self.raft = None;
        self.halted = Some(why);
    }

    fn note(&mut self, line: String) {
        if self.out.notes.len() < MAX_OUTBOX {
            self.out.notes.push(line);
        }
    }

    // ---- inputs ----------------------------------------------------------------

    /// Time passes: Raft ticks, timers, parked deadlines.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_us = self.now_us.max(now_ms.saturating_mul(1000));
        if let Some(r) = self.raft.as_mut() {
            let step = self.cfg.tick_ms.max(1);
            let mut fired = 0;
            while self.now_ms - self.last_tick_ms >= step
                && fired < self.cfg.timing.max_catch_up_ticks
            {
                self.last_tick_ms += step;
                r.tick();
                fired += 1;
            }
            if self.now_ms - self.last_tick_ms >= step {
                self.last_tick_ms = self.now_ms;
            }
        }
        self.flush_refusals(false);
        self.process();
        self.timers();
        self.answer_parked();
    }

    /// The time now, in µs, between ticks: only stamps the request path's stages
    /// ([`ClusterView::stages`]); timers and Raft still run on [`Node::tick`]'s ms.
    pub fn set_time_us(&mut self, now_us: u64) {
        self.now_us = self.now_us.max(now_us);
    }

    /// How long the driver's loop has worked (not waited) so far, µs: reported in
    /// [`ClusterView::loop_busy_us`] (CPU cost per task under load), decides nothing.
    pub fn set_loop_busy_us(&mut self, busy_us: u64) {
        self.loop_busy_us = busy_us;
    }

    /// The driver's loop time by phase, µs since boot, for
    /// [`ClusterView::loop_phases_us`] (where the time goes under load); decides
    /// nothing.
    pub fn set_loop_phases_us(&mut self, phases: &[(&'static str, u64)]) {
        self.loop_phases_us.clear();
        self.loop_phases_us.extend_from_slice(phases);
    }

    /// How many times the driver's loop has run so far, for
    /// [`ClusterView::loop_iterations`]; decides nothing.
    pub fn set_loop_iterations(&mut self, iterations: u64) {
        self.loop_iterations = iterations;
    }

    /// The driver started running `task`'s attempt `attempt` (it left the run queue).
    pub fn on_task_started(&mut self, task: TaskId, attempt: u32) {
        if self.running.contains(&(task, attempt)) {
            self.stages.stamp(task, Moment::Started, self.now_us);
        }
    }

    /// A `Raft` frame from authenticated peer `from`.
    pub fn on_peer_raft(&mut self, from: NodeId, bytes: &[u8]) {
        let Some(r) = self.raft.as_mut() else { return };
        match postcard::from_bytes::<Message>(bytes) {
            Ok(m) if m.from == from && m.to == self.me => r.step(m),
            _ => self.counters.raft_bad_messages += 1,
        }
        self.process();
    }

    /// The transport heard from authenticated member `peer` (any frame).
    pub fn on_peer_heard(&mut self, peer: NodeId) {
        if self.knows(peer) && peer != self.me {
            self.heard_ms.insert(peer, self.now_ms);
            let role = self.peer_role(peer);
            if let Some(a) = self.health.heard(peer, role, self.now_ms) {
                self.peer_event(a);
            }
        }
    }

    /// An RTT sample: this node's ping to member `peer` was answered after `rtt_us`
    /// (measured by the driver), the answer carrying the peer's coordinate
    /// (`coordinate`, its [`xdv_federation::vivaldi::Coordinate`] wire form). It moves
    /// this node's Vivaldi coordinate; a refused sample (bad coordinate, RTT out of
    /// range) is counted and changes nothing.
    pub fn on_peer_rtt(&mut self, peer: NodeId, rtt_us: u64, coordinate: &[u8]) {
        if !self.knows(peer) || peer == self.me {
            return;
        }
        self.on_peer_heard(peer);
        let accepted = self
            .health
            .rtt_sample(peer, rtt_us, coordinate, self.now_ms)
            .is_ok();
        // The measured input, logged: replay reproduces the coordinate from these.
        let body = RttRecordBody {
            peer,
            rtt_us,
            at_ms: self.now_ms,
            coordinate: coordinate.to_vec(),
            accepted,
        };
        self.out.audit.push(RecordBody::Custom {
            tag: AUDIT_TAG_RTT,
            bytes: mgmt::encode(&body),
        });
    }

    /// This node's coordinate in its wire form, for the driver to piggy-back on its
    /// pings and acks.
    pub fn coordinate_payload(&self) -> Vec<u8> {
        self.health.coordinate_bytes()
    }

    /// A management frame (`PeerForward`) from authenticated peer `from`.
    pub fn on_peer_forward(&mut self, from: NodeId, bytes: &[u8]) {
        if self.raft.is_none() {
            self.counters.forwards_dropped += 1;
            return;
        }
        let Ok(f) = mgmt::decode::<PeerForward>(bytes) else {
            self.counters.forwards_dropped += 1;
            return;
        };
        self.counters.forwarded_in += 1;
        let command = match f {
            PeerForward::Federation(m) => {
                self.on_federation(from, m);
                self.process();
                return;
            }
            PeerForward::Client(req)
                if self.is_gate_node() && matches!(req.request, Request::Submit(_)) =>
            {
                match self.route_command(&req) {
                    Ok(command) => command,
                    Err(_) => {
                        self.counters.forwards_dropped += 1;
                        return;
                    }
                }
            }
            PeerForward::Client(req) => match self.gate.authorize(&self.state, &req) {
                Ok(Some(command)) if self.check_membership(&command).is_ok() => {
                    self.complete_member(command)
                }
                _ => {
                    self.counters.forwards_dropped += 1;
                    return;
                }
            },
            PeerForward::Own(p) if PeerForward::own_is_allowed(from, &p.command) => p.command,
            PeerForward::Own(_) => {
                self.counters.forwards_dropped += 1;
                self.note(alloc::format!(
                    "cluster: {from} forwarded a command not about itself; dropped"
                ));
                return;
            }
        };
        // The leader stamps what it proposes: a follower's stamp does not order the log.
        if self.is_leader() {
            let _ = self.propose(command);
        } else {
            self.counters.forwards_dropped += 1;
        }
        self.process();
    }

    /// A management request frame from client connection `conn`. The answer goes to
    /// the outbox now (refusals, queries) or once the request is applied.
    pub fn on_client(&mut self, conn: ClientConn, bytes: &[u8]) {
        if let Some(r) = self.client_request(conn, bytes) {
            self.reply(conn, &r);
        }
        self.process();
    }

    /// The driver finished running a task dispatched by [`Outbox::run`].
    pub fn on_task_done(&mut self, mut c: Completion) {
        let key = (c.task, c.attempt);
        if !self.running.remove(&key) {
            return;
        }
        self.stopping.remove(&key);
        self.progress.remove(&key);
        c.node = self.me;
        c.output.truncate(xdv_cluster::MAX_OUTPUT_BYTES);
        self.stages.stamp(c.task, Moment::Finished, self.now_us);
        if self.still_mine(c.task, c.attempt) {
            if let Some(hold) = self.late_hook.take() {
                // Held, not resent (`u64::MAX`: never due) and not run again.
                self.out.notes.push(alloc::format!(
                    "fault: {} attempt {} finished; its completion is held {hold} ms (test hook)",
                    c.task,
                    c.attempt
                ));
                self.unconfirmed.insert(key, (c.clone(), u64::MAX));
                self.late.push((self.now_ms.saturating_add(hold), c));
            } else {
                self.unconfirmed.insert(key, (c.clone(), self.now_ms));
                self.counters.completions_proposed += 1;
                self.completions.push(c);
            }
        }
        self.process();
    }

    /// Proposes the completions reported since the last call: a single one as
    /// `TaskCompleted`, more as `TasksCompleted` entries of at most
    /// [`MAX_COMPLETIONS_PER_ENTRY`] that fit an entry. Under TCG most of an entry's
    /// cost is its state hash (the roots of the maps it changed), so a group shares it.
    fn propose_completions(&mut self) {
        if self.completions.is_empty() {
            return;
        }
        // Followers' completions merged here while this node led (`propose`) cannot be
        // forwarded as its own once it no longer leads: the new leader would refuse the
        // whole group (`PeerForward::own_is_allowed`). They are dropped; each follower
        // sends its own again after `Timing::resend_ms`.
        if !self.is_leader() {
            let me = self.me;
            self.completions.retain(|c| c.node == me);
        }
        let mut batch: Vec<Completion> = Vec::new();
        let mut bytes = 0usize;
        for c in core::mem::take(&mut self.completions) {
            let size = postcard::to_allocvec(&c).map_or(usize::MAX, |v| v.len());
            if !batch.is_empty()
                && (batch.len() == MAX_COMPLETIONS_PER_ENTRY
                    || bytes.saturating_add(size) > xdv_cluster::mgmt::MAX_BATCH_ENTRY_BYTES)
            {
                self.propose_completion_group(core::mem::take(&mut batch));
                bytes = 0;
            }
            bytes = bytes.saturating_add(size);
            batch.push(c);
        }
        self.propose_completion_group(batch);
    }

    /// One completion stays `TaskCompleted` (the form older logs hold); more are a group.
    fn propose_completion_group(&mut self, group: Vec<Completion>) {
        match <[Completion; 1]>::try_from(group) {
            Ok([c]) => self.submit_own(Command::TaskCompleted(c)),
            Err(group) => {
                self.counters.completion_groups_proposed += 1;
                self.submit_own(Command::TasksCompleted(group));
            }
        }
    }

    /// Test-only fault hook: the next completion this node reports is held `hold_ms`
    /// and then proposed as it was, whatever the log decided meanwhile — a completion
    /// delayed in the network. If the task timed out and was re-placed in between,
    /// the log must refuse it by its stale attempt (fence token).
    #[cfg(feature = "fault-hooks")]
    pub fn delay_next_completion_for_test(&mut self, hold_ms: u64) {
        self.late_hook = Some(hold_ms);
    }

    /// Proposes the held completions that are due (the late-completion hook).
    fn release_late(&mut self) {
        let now = self.now_ms;
        let (due, kept): (Vec<_>, Vec<_>) = core::mem::take(&mut self.late)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.late = kept;
        for (_, c) in due {
            let key = (c.task, c.attempt);
            let mine = self.still_mine(c.task, c.attempt);
            self.out.notes.push(alloc::format!(
                "fault: held completion of {} attempt {} proposed now (the log {})",
                c.task,
                c.attempt,
                if mine {
                    "still assigns that attempt here"
                } else {
                    "moved the task on"
                }
            ));
            if let Some(u) = self.unconfirmed.get_mut(&key) {
                u.1 = now;
            }
            self.counters.completions_proposed += 1;
            self.submit_own(Command::TaskCompleted(c));
        }
    }

    /// A running task reported progress (the sandbox's `progress` host call). The
    /// node tells the log at most every `Timing::progress_report_ms` per task, which
    /// restarts the task's stuck timer on every replica.
    pub fn on_task_progress(&mut self, task: TaskId, attempt: u32) {
        let key = (task, attempt);
        if !self.running.contains(&key)
            || self.stopping.contains(&key)
            || !self.still_mine(task, attempt)
        {
            return;
        }
        self.progress.entry(key).or_insert((false, 0)).0 = true;
    }

    /// A running task asks for `extension_ms` more cluster time (`RequestExtension`;
    /// the log grants it within the attempt's extension limit).
    pub fn request_extension(&mut self, task: TaskId, attempt: u32, extension_ms: u64) {
        if !self.running.contains(&(task, attempt)) || !self.still_mine(task, attempt) {
            return;
        }
        self.counters.extension_requests += 1;
        self.submit_own(Command::RequestExtension {
            task,
            node: self.me,
            attempt,
            extension_ms,
        });
        self.process();
    }

    /// The driver's audit log now holds `records` records; `head` is its chain head.
    /// What this node's devices offer now: Q containers and Φ windows (0 for a kind
    /// it has no device of, or whose devices have all failed). The node reports a
    /// change to the cluster in a heartbeat, and again until the log has it.
    pub fn set_accel_offer(&mut self, q_units: u16, phi_windows: u16) {
        if self.offer != (q_units, phi_windows) {
            self.note(alloc::format!(
                "node: devices offer {q_units} Q containers, {phi_windows} Φ windows"
            ));
            let before = self.offer;
            self.offer = (q_units, phi_windows);
            // Report at once, not after the resend interval.
            self.last_heartbeat_ms = 0;
            // Seed 000 §6.1: the device of a kind failed — the contracts on it end.
            for (d, was, now) in [
                (Domain::Q, before.0, q_units),
                (Domain::Phi, before.1, phi_windows),
            ] {
                if was > 0 && now == 0 && !self.state.reserved_on(self.me, d).is_empty() {
                    self.submit_own(Command::AbortContracts {
                        node: self.me,
                        domain: d,
                        reason: alloc::format!("{d} device failed on {}", self.me),
                    });
                }
            }
        }
    }

    pub fn set_audit_head(&mut self, records: u64, head: Hash32) {
        self.audit_head = (records, head);
    }

    /// Whether the audit root is due for publication at `now_ms` (the driver then
    /// computes it and calls [`Node::set_audit_root`]; computing it every iteration
    /// would cost a Merkle tree each time).
    pub fn audit_root_due(&self, now_ms: u64) -> bool {
        self.raft.is_some()
            && now_ms.saturating_sub(self.last_publish_ms) >= self.cfg.timing.publish_ms
    }

    /// The size of this node's audit root the cluster holds (the last one it took),
    /// which the driver proves the next root extends ([`Node::set_audit_root`]).
    pub fn audit_published(&self) -> Option<u64> {
        self.state
            .data()
            .nodes
            .get(&self.me)
            .and_then(|r| r.audit)
            .map(|(records, _)| records)
    }

    /// The audit log's Merkle root over `records` records, for publication, with the
    /// consistency proof from the size [`Node::audit_published`] gave (`from`; 0 and
    /// no proof when none was published yet). A proof from a size the cluster no
    /// longer holds is ignored by the log, and the next publication tries again.
    pub fn set_audit_root(&mut self, records: u64, root: Hash32, from: u64, proof: Vec<Hash32>) {
        self.audit_root = Some((records, root, from, proof));
    }

    /// Proposes opaque bytes (the operator's `raft propose`, a diagnostic): the state
    /// machine records them as an invalid entry on every node alike.
    pub fn propose_raw(&mut self, data: Vec<u8>) -> Result<u64, String> {
        let r = self
            .raft
            .as_mut()
            .ok_or_else(|| String::from("consensus is not running"))?;
        let index = r.propose(data).map_err(|e| alloc::format!("{e:?}"))?;
        self.process();
        Ok(index)
    }

    /// Group commit, for one iteration of the driver's loop: until [`Node::release`],
    /// inputs still propose at once (each entry durable in the storage before it can
    /// be sent), but what Raft made ready waits — so everything proposed in the
    /// iteration goes to each follower in one append, and what committed is applied
    /// and its placements dispatched together at the release.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Ends [`Node::hold`]: handles what Raft made ready (appends out, committed
    /// entries applied, tasks dispatched) and answers the parked requests that this
    /// made answerable, in this same iteration.
    pub fn release(&mut self) {
        if core::mem::take(&mut self.held) {
            self.process();
            self.answer_parked();
        }
    }

    /// Everything the node asked for since the last drain.
    pub fn drain(&mut self) -> Outbox {
        debug_assert!(!self.held, "drained while held: release first");
        core::mem::take(&mut self.out)
    }

    // ---- consensus ---------------------------------------------------------------

    fn is_leader(&self) -> bool {
        self.raft.as_ref().is_some_and(|r| r.role() == Role::Leader)
    }

    fn leader(&self) -> Option<NodeId> {
        self.raft.as_ref().and_then(|r| r.leader())
    }

    fn stamp(&mut self) -> xdv_cluster::GlobalTime {
        xdv_cluster::GlobalTime {
            lamport: self.clock.tick().0,
            node: self.me,
        }
    }

    /// Proposes `command` (leader only), stamped now. While held, a submission waits
    /// for the release, to share an entry with the iteration's other submissions, and
    /// completions (a follower's, forwarded) join this node's own: one entry for the
    /// completions of every node that reported in the iteration, not one per node.
    fn propose(&mut self, command: Command) -> Result<(), Denied> {
        for spec in specs_of(&command) {
            self.stages
                .proposed(spec.tenant, spec.request_seq, self.now_us);
        }
        let held = self.held && self.is_leader();
        match command {
            Command::TaskCompleted(c) if held => {
                self.completions.push(c);
                Ok(())
            }
            Command::TasksCompleted(cs) if held => {
                self.completions.extend(cs);
                Ok(())
            }
            command if held && !specs_of(&command).is_empty() => {
                self.submissions.push(command);
                Ok(())
            }
            command => self.propose_now(command),
        }
    }

    /// Appends `command` to the log now (leader only), stamped now.
    fn propose_now(&mut self, command: Command) -> Result<(), Denied> {
        let p = Proposal {
            time: self.stamp(),
            command,
        };
        let bytes = p
            .encode()
            .map_err(|e| Denied::NotReady(alloc::format!("{e}")))?;
        let r = self.raft.as_mut().ok_or(Denied::NoLeader)?;
        let index = r
            .propose(bytes)
            .map_err(|e| Denied::NotReady(alloc::format!("{e:?}")))?;
        if self.proposed.len() == MAX_TRACKED {
            self.proposed.pop_front();
        }
        let term = r.term();
        self.proposed.push_back((index, term, self.now_ms));
        Ok(())
    }

    /// Proposes the submissions accepted while held. One request stays its own entry
    /// as it came; more are merged, whole requests in order, into `AssignTasks`
    /// entries of at most [`MAX_SPECS_PER_ENTRY`] specs that fit an entry. Applying
    /// the merged entry is applying the requests' entries one after the other; what
    /// changes is that they share one Raft entry, one apply, one state hash and one
    /// audit record on every node. A request whose entry the log refuses (this node
    /// lost its leadership meanwhile) is answered with the refusal.
    fn propose_submissions(&mut self) {
        let held = core::mem::take(&mut self.submissions);
        if let [_] = held.as_slice() {
            for command in held {
                self.propose_group(command);
            }
            return;
        }
        let mut group: Vec<TaskSpec> = Vec::new();
        let mut bytes = 0usize;
        let mut requests = 0usize;
        for command in held {
            // Only submissions are held (see `propose`).
            let specs = match command {
                Command::AssignTask(spec) => alloc::vec![spec],
                Command::AssignTasks(specs) => specs,
                other => specs_of(&other).to_vec(),
            };
            let size = mgmt::encode(&specs).len();
            if !group.is_empty()
                && (group.len() + specs.len() > MAX_SPECS_PER_ENTRY
                    || bytes.saturating_add(size) > xdv_cluster::mgmt::MAX_BATCH_ENTRY_BYTES)
            {
                self.propose_merged(core::mem::take(&mut group), requests);
                (bytes, requests) = (0, 0);
            }
            bytes = bytes.saturating_add(size);
            requests += 1;
            group.extend(specs);
        }
        self.propose_merged(group, requests);
    }

    /// One entry for the specs of `requests` held requests.
    fn propose_merged(&mut self, group: Vec<TaskSpec>, requests: usize) {
        if !group.is_empty() && self.propose_group(Command::AssignTasks(group)) && requests > 1 {
            self.counters.submission_groups_proposed += 1;
        }
    }

    /// Proposes a held submission entry (true if the log took it); if the log
    /// refuses it, the requests waiting on its specs here get the refusal now.
    fn propose_group(&mut self, command: Command) -> bool {
        let keys: Vec<(TenantId, u64)> = specs_of(&command)
            .iter()
            .map(|s| (s.tenant, s.request_seq))
            .collect();
        match self.propose_now(command) {
            Ok(()) => true,
            Err(d) => {
                self.refuse_waiting(&keys, d);
                false
            }
        }
    }

    /// Answers every parked request waiting on one of `keys` (tenant, request seq)
    /// with `d`.
    fn refuse_waiting(&mut self, keys: &[(TenantId, u64)], d: Denied) {
        let covers = |w: &Wait| match *w {
            Wait::Task { tenant, seq } => keys.contains(&(tenant, seq)),
            Wait::Batch {
                tenant,
                first,
                count,
                ..
            } => keys
                .iter()
                .any(|&(t, s)| t == tenant && s >= first && s - first < count),
            _ => false,
        };
        let (refused, keep): (Vec<Parked>, Vec<Parked>) = core::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| covers(&p.wait));
        self.parked = keep;
        for p in refused {
            self.reply(p.conn, &Response::Refused(d.clone()));
        }
    }

    /// Proposes `command` if this node leads; otherwise sends `forward(proposal)` to
    /// the leader. `Err` when there is no leader or the proposal is refused.
    fn propose_or_forward(
        &mut self,
        command: Command,
        forward: impl FnOnce(Proposal) -> PeerForward,
    ) -> Result<(), Denied> {
        if self.is_leader() {
            return self.propose(command);
        }
        let Some(l) = self.leader().filter(|&l| l != self.me) else {
            return Err(Denied::NoLeader);
        };
        let p = Proposal {
            time: self.stamp(),
            command,
        };
        if self.out.forwards.len() < MAX_OUTBOX {
            self.out.forwards.push((l, mgmt::encode(&forward(p))));
        } else {
            self.counters.outbox_dropped += 1;
        }
        Ok(())
    }

    /// Own commands: a lost proposal is resent by its timer until the log has it.
    fn submit_own(&mut self, cmd: Command) {
        let _ = self.propose_or_forward(cmd, PeerForward::Own);
    }

    /// Handles what Raft made ready: messages out, snapshot restore, committed entries
    /// applied, snapshots taken; then derives the tasks to run.
    fn process(&mut self) {
        if self.held {
            return;
        }
        self.propose_submissions();
        self.propose_completions();
        if core::mem::take(&mut self.tick_held) && self.is_leader() {
            let _ = self.propose_now(Command::ClockTick);
        }
        let mut restored = false;
        loop {
            let Some(r) = self.raft.as_mut() else { return };
            if !r.has_ready() {
                break;
            }
            let rd = r.ready();
            if let Some(snap) = rd.snapshot {
                restored |= self.restore(&snap.data);
            }
            for m in rd.messages {
                match postcard::to_allocvec(&m) {
                    Ok(b) if self.out.raft.len() < MAX_OUTBOX => self.out.raft.push((m.to, b)),
                    _ => self.counters.outbox_dropped += 1,
                }
            }
            for e in rd.committed {
                self.applied_entry(&e);
            }
            let Some(r) = self.raft.as_mut() else { return };
            r.advance();
            let full = r.storage().nearly_full();
            if r.snapshot_due() || full {
                let image = self.state.snapshot_image();
                let r = self.raft.as_mut().expect("checked above");
                if full {
                    r.create_snapshot_and_compact(image);
                } else {
                    r.create_snapshot(image);
                }
            }
            if let Some(why) = self.raft.as_ref().and_then(|r| r.storage().failure()) {
                let why = alloc::format!("durable Raft storage stopped: {why}");
                self.halt(Halt::Storage(why));
                return;
            }
        }
        if restored {
            self.counters.snapshots_restored += 1;
        }
        self.publish_members();
        if self.dispatched_at != self.state_changes {
            self.dispatch();
        }
    }

    fn restore(&mut self, image: &[u8]) -> bool {
        // The bootstrap snapshot carries no state-machine image.
        if image.is_empty() {
            return false;
        }
        match self.state.restore_image(image) {
            Ok(()) => {
                self.state_changes += 1;
                self.dispatch_all = true;
                true
            }
            Err(e) => {
                self.counters.snapshot_images_refused += 1;
                self.note(alloc::format!(
                    "cluster: snapshot image refused: {e}; keeping the current state"
                ));
                false
            }
        }
    }

    fn applied_entry(&mut self, e: &xdv_raft::Entry) {
        // After a restart the log is applied again from the snapshot: what the audit
        // log already holds is not recorded a second time.
        let audit = e.index > self.cfg.audited_through;
        if audit {
            let bytes = postcard::to_allocvec(e).unwrap_or_default();
            let entry_hash = Hash32(Sha256::digest(&bytes).into());
            self.out.audit.push(RecordBody::RaftApplied {
                index: e.index,
                term: e.term,
                entry_hash,
            });
        }
        while self.proposed.front().is_some_and(|&(i, _, _)| i <= e.index) {
            let (i, term, at) = self.proposed.pop_front().expect("checked");
            // Only our own entry: a later leader may have put another there.
            if i == e.index && term == e.term {
                if self.latencies_ms.len() == MAX_TRACKED {
                    self.latencies_ms.pop_front();
                }
                self.latencies_ms.push_back(self.now_ms.saturating_sub(at));
            }
        }
        let EntryKind::Normal(data) = &e.kind else {
            return;
        };
        // Entries the state already covers (a restored snapshot) change nothing.
        if e.index <= self.state.data().applied_index {
            return;
        }
        let applied = self.state.apply(e.index, data);
        self.state_changes += 1;
        self.note_dispatch(&applied.events);
        self.counters.applied_entries += 1;
        // The log's time never reaches u64::MAX from honest leaders; a saturated one
        // must not panic the clock.
        if applied.time.lamport < u64::MAX - 1 {
            self.clock.recv(Timestamp(applied.time.lamport));
        }
        if audit {
            let hash = self.state.hash();
            let body = mgmt::encode(&(e.index, applied.command.unwrap_or("invalid"), hash));
            self.out.audit.push(RecordBody::Custom {
                tag: AUDIT_TAG_APPLIED,
                bytes: body,
            });
        }
        self.stage_events(&applied.events);
        self.contract_events(e.index, &applied.events, audit);
        self.hash_votes(e.index, &applied.events, audit);
        self.discovery_events(&applied.events, audit);
        self.gate_events(e.index, &applied.events, audit);
    }

    /// Stamps the stages an applied entry ends: an assignment, a completion.
    fn stage_events(&mut self, events: &[xdv_cluster::Event]) {
        for ev in events {
            match ev {
                xdv_cluster::Event::TaskAssigned { task, tenant, .. } => {
                    if let Some(seq) = self.state.task(*task).map(|t| t.spec.request_seq) {
                        self.stages.applied(*task, *tenant, seq, self.now_us);
                    }
                }
                xdv_cluster::Event::TaskCompleted { task, .. } => {
                    self.stages
                        .stamp(*task, Moment::CompletionApplied, self.now_us);
                }
                xdv_cluster::Event::StaleCompletion {
                    task,
                    node,
                    attempt,
                } if *node == self.me => {
                    let now = match self.state.task(*task).map(|t| &t.status) {
                        Some(TaskStatus::Assigned { node, attempt }) => {
                            alloc::format!("attempt {attempt} runs on {node}")
                        }
                        Some(TaskStatus::Completed { attempt, .. }) => {
                            alloc::format!("it ended at attempt {attempt}")
                        }
                        _ => "it is no longer assigned".into(),
                    };
                    self.out.notes.push(alloc::format!(
                        "cluster: {task} attempt {attempt}: completion refused, stale fence token ({now})"
                    ));
                }
                _ => {}
            }
        }
    }

    /// Hash voting: after every `VOTE_EVERY`-th entry this node reports its state hash
    /// through the log; a mismatch the log found is an alarm in every node's audit log
    /// (and a line for the operator).
    fn hash_votes(&mut self, index: u64, events: &[xdv_cluster::Event], audit: bool) {
        // Not again for entries re-applied after a restart (already voted, or stale).
        if index.is_multiple_of(xdv_cluster::VOTE_EVERY) && self.raft.is_some() && audit {
            let hash = self.state.hash();
            self.submit_own(Command::StateVote {
                node: self.me,
                index,
                hash,
            });
        }
        for ev in events {
            if let xdv_cluster::Event::RootPublished { .. } = ev {
                self.counters.audit_roots_taken += 1;
            }
            if let xdv_cluster::Event::AuditRootInconsistent {
                node,
                held,
                records,
            } = ev
            {
                let me = if *node == self.me { " (this node)" } else { "" };
                self.note(alloc::format!(
                    "ALARM: audit root of {node}{me} over {records} records does not extend its root over {held} (consistency proof fails): its audit history differs from what it published"
                ));
                if audit {
                    self.out.audit.push(RecordBody::Custom {
                        tag: AUDIT_TAG_ROOT_ALARM,
                        bytes: mgmt::encode(&(*node, *held, *records)),
                    });
                }
            }
            if let xdv_cluster::Event::HashMismatch {
                index: at,
                node,
                theirs,
                majority,
            } = ev
            {
                let me = if *node == self.me { " (this node)" } else { "" };
                self.note(alloc::format!(
                    "ALARM: state hash of {node}{me} at index {at} is {}, the majority's {}: {node} quarantined",
                    theirs.short(),
                    majority.short()
                ));
                if audit {
                    self.out.audit.push(RecordBody::Custom {
                        tag: AUDIT_TAG_HASH_ALARM,
                        bytes: mgmt::encode(&(*at, *node, *theirs, *majority)),
                    });
                }
            }
        }
    }

    /// Test-only fault hook: corrupts this node's replica of the state (only its hash
    /// changes), so hash voting must find and quarantine it.
    #[cfg(feature = "fault-hooks")]
    pub fn corrupt_state_for_test(&mut self) {
        self.state.corrupt_for_test();
        self.state_changes += 1;
        self.dispatch_all = true;
    }

    /// Contract events: remembered for parked reservations; recorded in the audit log
    /// when this node is the requesting or the target node (both write one), and the
    /// end of a job under a contract this node requested is referenced here too.
    fn contract_events(&mut self, index: u64, events: &[xdv_cluster::Event], audit: bool) {
        use xdv_cluster::mgmt::ContractAnswer;
        use xdv_cluster::{ContractChange, Event};
        for ev in events {
            let (body, answer) = match ev {
                Event::Contract(c) => {
                    let answer = match &c.change {
                        ContractChange::Accepted => Some(ContractAnswer::Accepted { id: c.id }),
                        ContractChange::Rejected(r) => Some(ContractAnswer::Rejected {
                            id: c.id,
                            reason: r.clone(),
                        }),
                        ContractChange::Released => Some(ContractAnswer::Released { id: c.id }),
                        _ => None,
                    };
                    let detail = match &c.change {
                        ContractChange::Rejected(r) => alloc::format!("{r}"),
                        ContractChange::Preempted { by } => alloc::format!("by contract {by}"),
                        ContractChange::Reallocated { from, to } => {
                            alloc::format!("{from} -> {to}")
                        }
                        ContractChange::Aborted(w) | ContractChange::Terminated(w) => w.clone(),
                        _ => String::new(),
                    };
                    let body = ContractRecordBody {
                        index,
                        contract: c.id,
                        hash: c.hash,
                        event: String::from(c.change.name()),
                        tenant: c.tenant,
                        requester: c.requester,
                        target: c.target,
                        job: None,
                        detail,
                    };
                    (Some(body), answer)
                }
                Event::TaskCompleted {
                    task,
                    node,
                    outcome,
                    output_hash,
                    ..
                } => {
                    let Some(id) = self.state.task(*task).and_then(|t| t.spec.contract) else {
                        continue;
                    };
                    let Some(r) = self.state.data().contracts.get(&id) else {
                        continue;
                    };
                    let c = &r.contract;
                    let body = ContractRecordBody {
                        index,
                        contract: id,
                        hash: c.hash(),
                        event: String::from("job-ended"),
                        tenant: c.tenant,
                        requester: c.requesting_node,
                        target: *node,
                        job: Some((*task, *output_hash)),
                        detail: alloc::format!("{outcome}"),
                    };
                    (Some(body), None)
                }
                _ => continue,
            };
            if let Some(a) = answer {
                let id = match &a {
                    ContractAnswer::Accepted { id }
                    | ContractAnswer::Rejected { id, .. }
                    | ContractAnswer::Released { id } => *id,
                };
                if self.contract_answers.len() >= MAX_CONTRACT_ANSWERS {
                    self.contract_answers.pop_first();
                }
                self.contract_answers.insert(id, a);
            }
            if let Some(b) = body
                && audit
                && (b.requester == self.me || b.target == self.me)
            {
                self.out.audit.push(RecordBody::Custom {
                    tag: AUDIT_TAG_CONTRACT,
                    bytes: mgmt::encode(&b),
                });
            }
        }
    }

    // ---- tasks -------------------------------------------------------------------

    fn still_mine(&self, task: TaskId, attempt: u32) -> bool {
        self.attempt_here(task) == Some(attempt)
    }

    /// The attempt of `task` the applied state assigns to this node, if any.
    fn attempt_here(&self, task: TaskId) -> Option<u32> {
        match self.state.task(task).map(|t| &t.status) {
            Some(TaskStatus::Assigned { node, attempt }) if *node == self.me => Some(*attempt),
            _ => None,
        }
    }

    /// What an applied entry's events tell [`Node::dispatch`]: the tasks they name, or
    /// that it must walk them all.
    fn note_dispatch(&mut self, events: &[xdv_cluster::Event]) {
        use xdv_cluster::Event as E;
        if self.dispatch_all {
            return;
        }
        for e in events {
            match e {
                E::TaskAssigned { task, .. }
                | E::TaskQueued { task }
                | E::TaskRejected { task, .. }
                | E::DuplicateRequest { task }
                | E::TaskCompleted { task, .. }
                | E::StaleCompletion { task, .. }
                | E::TaskReplaced { task, .. }
                | E::TaskProgress { task, .. }
                | E::ExtensionGranted { task, .. }
                | E::StaleReport { task, .. }
                | E::TaskTimedOut { task, .. }
                | E::TaskCancelled { task, .. }
                | E::GateReport { task, .. }
                | E::GateFellBack { task, .. }
                | E::GateTimedOut { task, .. }
                | E::GateMessageRefused { task, .. } => {
                    self.dispatch_tasks.insert(*task);
                }
                // Events that assign nothing and take nothing away.
                E::WorkerAdded { .. }
                | E::WorkerRefused { .. }
                | E::Heartbeat { .. }
                | E::LoadReported { .. }
                | E::PlacementPolicySet { .. }
                | E::NodeUp { .. }
                | E::ShardMigrated(_)
                | E::PolicySet { .. }
                | E::Voted { .. }
                | E::ClockTick { .. }
                | E::QuotaSet { .. }
                | E::TenantRegistered { .. }
                | E::RootPublished { .. }
                | E::SnapshotMarked { .. }
                | E::Invalid(_)
                | E::Ignored(_)
                | E::Discovered { .. }
                | E::DiscoveredAdmitted { .. }
                | E::TimeoutLeaderChanged { .. }
                | E::AuditRootInconsistent { .. } => {}
                // Anything else may move tasks it does not name.
                _ => self.dispatch_all = true,
            }
        }
        if self.dispatch_all || self.dispatch_tasks.len() > MAX_DISPATCH_TASKS {
            // The walk covers them all: the named set is not needed (a restart or a
            // lagging follower applies many entries in one pass).
            self.dispatch_all = true;
            self.dispatch_tasks.clear();
        }
    }

    /// Runs what the log assigned here and has not run yet; stops what it took away.
    /// After ordinary entries only the tasks their events named are looked at (their
    /// cost is what the entries changed); otherwise every task assigned in the cluster
    /// ([`Node::dispatch_all`]). Either way the outcome is the full walk's:
    /// [`Node::invariants`] checks it after every step of the simulator.
    fn dispatch(&mut self) {
        self.dispatched_at = self.state_changes;
        let tasks = core::mem::take(&mut self.dispatch_tasks);
        if !core::mem::take(&mut self.dispatch_all) {
            self.dispatch_named(&tasks);
            return;
        }
        self.counters.dispatch_walks += 1;
        let me = self.me;
        let assigned: BTreeSet<(TaskId, u32)> = self
            .state
            .assigned_to(me)
            .map(|(t, attempt)| (t.id, attempt))
            .collect();
        self.unconfirmed.retain(|k, _| assigned.contains(k));
        self.progress.retain(|k, _| assigned.contains(k));
        // A running attempt the log took away (cancelled, timed out, re-placed) is
        // stopped once; it keeps its slot until the driver reports it, and that
        // report is then dropped.
        let gone: Vec<(TaskId, u32)> = self
            .running
            .iter()
            .filter(|k| !assigned.contains(k) && !self.stopping.contains(k))
            .copied()
            .collect();
        for key in gone {
            self.stopping.insert(key);
            self.counters.tasks_stopped += 1;
            self.out.stop.push(key);
        }
        for key in assigned {
            self.run_assigned(key);
        }
    }

    /// [`Node::dispatch`] for `tasks` only: their attempts here that the log no longer
    /// assigns are stopped (running) or forgotten (reported, progress), and the attempt
    /// it assigns here now runs unless it already did.
    fn dispatch_named(&mut self, tasks: &BTreeSet<TaskId>) {
        let now: Vec<(TaskId, Option<u32>)> =
            tasks.iter().map(|&t| (t, self.attempt_here(t))).collect();
        for &(t, a) in &now {
            let range = (t, 0)..=(t, u32::MAX);
            let stale = |k: &(TaskId, u32)| Some(k.1) != a;
            self.unconfirmed
                .extract_if(range.clone(), |k, _| stale(k))
                .for_each(drop);
            self.progress
                .extract_if(range.clone(), |k, _| stale(k))
                .for_each(drop);
            let stop: Vec<(TaskId, u32)> = self
                .running
                .range(range)
                .filter(|k| stale(k))
                .copied()
                .collect();
            for key in stop {
                if self.stopping.insert(key) {
                    self.counters.tasks_stopped += 1;
                    self.out.stop.push(key);
                }
            }
        }
        for (t, a) in now {
            if let Some(a) = a {
                self.run_assigned((t, a));
            }
        }
    }

    /// Once dispatch has seen the current state, what the full walk guarantees: every
    /// attempt assigned here runs or was reported; every running attempt is assigned
    /// here or being stopped; nothing else is remembered as reported or progressing.
    fn dispatch_invariants(&self) -> Result<(), String> {
        if self.raft.is_none() || self.held || self.dispatched_at != self.state_changes {
            return Ok(());
        }
        let mine = |k: &(TaskId, u32)| self.still_mine(k.0, k.1);
        for (t, attempt) in self.state.assigned_to(self.me) {
            let key = (t.id, attempt);
            if !self.running.contains(&key) && !self.unconfirmed.contains_key(&key) {
                return Err(alloc::format!(
                    "{}: {} attempt {} assigned here but never dispatched",
                    self.me,
                    key.0,
                    key.1
                ));
            }
        }
        if let Some(k) = self
            .running
            .iter()
            .find(|k| !mine(k) && !self.stopping.contains(k))
        {
            return Err(alloc::format!(
                "{}: {} attempt {} runs but is not assigned here and not being stopped",
                self.me,
                k.0,
                k.1
            ));
        }
        if let Some(k) = self
            .unconfirmed
            .keys()
            .chain(self.progress.keys())
            .find(|k| !mine(k))
        {
            return Err(alloc::format!(
                "{}: {} attempt {} remembered but not assigned here",
                self.me,
                k.0,
                k.1
            ));
        }
        Ok(())
    }

    /// Runs attempt `key`, assigned here, unless it runs or ran already.
    fn run_assigned(&mut self, key: (TaskId, u32)) {
        if self.running.contains(&key) || self.unconfirmed.contains_key(&key) {
            return;
        }
        let Some(rec) = self.state.task(key.0) else {
            return;
        };
        let quota = self
            .state
            .data()
            .tenants
            .get(&rec.spec.tenant)
            .and_then(|t| t.quota);
        let (pages, elements) = xdv_cluster::Quota::task_limits(quota.as_ref());
        let slots = self.slots_for(&rec.spec);
        let run = RunTask {
            task: key.0,
            attempt: key.1,
            spec: rec.spec.clone(),
            submitted_lamport: rec.submitted.lamport,
            memory_pages: pages,
            table_elements: elements,
            slots,
        };
        self.running.insert(key);
        self.stages.stamp(key.0, Moment::Queued, self.now_us);
        self.counters.tasks_dispatched += 1;
        self.out.run.push(run);
    }

    /// The device units a task may use here (see [`RunTask::slots`]).
    fn slots_for(&self, spec: &TaskSpec) -> Vec<u16> {
        let offered = match spec.domain {
            Domain::K => return Vec::new(),
            Domain::Q => self.offer.0,
            Domain::Phi => self.offer.1,
        };
        if let Some(r) = spec
            .contract
            .and_then(|id| self.state.data().contracts.get(&id))
        {
            return r.contract.resource_set.clone();
        }
        let reserved = self.state.reserved_on(self.me, spec.domain);
        (0..offered).filter(|u| !reserved.contains(u)).collect()
    }

    // ---- timers ------------------------------------------------------------------

    fn timers(&mut self) {
        if self.raft.is_none() {
            return;
        }
        let now = self.now_ms;
        let t = self.cfg.timing;
        // Completions the log has not taken yet (lost in a failover) go again.
        let due: Vec<Completion> = self
            .unconfirmed
            .values_mut()
            .filter(|(_, at)| now.saturating_sub(*at) >= t.resend_ms)
            .map(|(c, at)| {
                *at = now;
                c.clone()
            })
            .collect();
        for c in due {
            self.submit_own(Command::TaskCompleted(c));
        }
        if !self.late.is_empty() {
            self.release_late();
        }
        self.report_progress();
        let me = self.me;
        let mine = self.state.data().nodes.get(&me);
        let recorded = mine.map(|r| (r.available_cores, r.offered_q, r.offered_phi));
        let published = mine.and_then(|r| r.audit).map_or(0, |a| a.0);
        // An observer offers nothing: it never runs tasks.
        let current = if mine.is_some_and(|r| r.info.observer) {
            (0, 0, 0)
        } else {
            (self.cfg.cores, self.offer.0, self.offer.1)
        };
        if recorded.is_some_and(|r| r != current)
            && (self.last_heartbeat_ms == 0
                || now.saturating_sub(self.last_heartbeat_ms) >= t.resend_ms)
        {
            self.last_heartbeat_ms = now.max(1);
            self.submit_own(Command::Heartbeat(HeartbeatInfo {
                node: me,
                available_cores: current.0,
                local_load: 0,
                q_units: current.1,
                phi_windows: current.2,
            }));
        }
        self.report_load(now);
        if now.saturating_sub(self.last_publish_ms) >= t.publish_ms {
            self.last_publish_ms = now;
            if let Some((records, root, from, proof)) = self.audit_root.take()
                && records != published
                && records > 0
                && self.leader().is_some()
            {
                self.submit_own(Command::PublishAuditRoot {
                    node: me,
                    records,
                    root,
                    from,
                    proof,
                });
            }
        }
        self.detect_failures();
        self.reconcile_membership();
        self.federation_timers();
        // Cluster time: the leader adds a tick per second of its own time.
        if self.is_leader()
            && now.saturating_sub(self.last_clock_tick_ms) >= xdv_cluster::CLOCK_TICK_MS
        {
            self.last_clock_tick_ms = now;
            if self.held {
                // After the iteration's completions and submissions (`process`): a
                // report that reached the leader in this iteration is ordered before
                // the tick that could time its task out.
                self.tick_held = true;
            } else {
                let _ = self.propose(Command::ClockTick);
            }
        }
    }

    /// Progress seen since the last report goes to the log, at most every
    /// `progress_report_ms` per task (rate-limited: a task calling `progress` in a
    /// tight loop costs one log entry per period).
    fn report_progress(&mut self) {
        let now = self.now_ms;
        let every = self.cfg.timing.progress_report_ms;
        let due: Vec<(TaskId, u32)> = self
            .progress
            .iter_mut()
            .filter(|(_, (seen, at))| *seen && (*at == 0 || now.saturating_sub(*at) >= every))
            .map(|(k, (seen, at))| {
                *seen = false;
                *at = now.max(1);
                *k
            })
            .collect();
        for (task, attempt) in due {
            self.counters.progress_reports += 1;
            self.submit_own(Command::TaskProgress {
                task,
                node: self.me,
                attempt,
            });
        }
    }

    /// Every node watches its members' health ([`peers`]); the leader declares a member
    /// down when it is DEAD (or was never confirmed within its role's timeout), and up
    /// again once it is ALIVE and heard within `peer_up_ms`.
    fn detect_failures(&mut self) {
        let now = self.now_ms;
        let t = self.cfg.timing;
        if now.saturating_sub(self.last_detect_ms) < t.detect_every_ms {
            return;
        }
        self.last_detect_ms = now;
        let members = self.health_members();
        let load = self.load_ppm();
        for a in self.health.detect(now, &members, t.suspect_after_ms, load) {
            self.peer_event(a);
        }
        if !self.is_leader() {
            return;
        }
        let ups: Vec<(NodeId, bool)> = self
            .state
            .data()
            .nodes
            .iter()
            .map(|(n, r)| (*n, r.up))
            .collect();
        for (node, up) in ups {
            if node == self.me {
                continue;
            }
            let silent = self.silence_ms(node);
            match self.health.verdict(node) {
                peers::Verdict::Down if up => {
                    let _ = self.propose(Command::NodeDown { node });
                }
                peers::Verdict::Up if !up && silent.is_some_and(|s| s < t.peer_up_ms) => {
                    let _ = self.propose(Command::NodeUp { node });
                }
                _ => {}
            }
        }
    }

    /// The members other than this node with their role and silence.
    fn health_members(&self) -> Vec<(NodeId, xdv_federation::confirm::Role, Option<u64>)> {
        self.state
            .data()
            .nodes
            .keys()
            .filter(|n| **n != self.me)
            .map(|&n| (n, self.peer_role(n), self.silence_ms(n)))
            .collect()
    }

    /// A member that votes can become the cluster's manager (its leader); an observer
    /// (or a node the state does not list yet) only works. From the replicated state:
    /// a lookup, cheap enough for every frame.
    fn peer_role(&self, peer: NodeId) -> xdv_federation::confirm::Role {
        use xdv_federation::confirm::Role;
        match self.state.data().nodes.get(&peer) {
            Some(r) if !r.info.observer => Role::Manager,
            _ => Role::Worker,
        }
    }

    fn load_ppm(&self) -> u64 {
        peers::load_multiplier_ppm(self.running.len(), self.cfg.cores)
    }

    /// Records a peer-health transition (audit record and a line for the operator).
    fn peer_event(&mut self, a: xdv_federation::confirm::Action) {
        use xdv_federation::confirm::Action;
        let (peer, event, timeout) = match a {
            Action::Confirmed { peer, .. } => (peer, "confirmed", None),
            Action::Removed { peer, .. } => (peer, "removed", None),
            Action::Suspected { peer, timeout } => (
                peer,
                "suspected",
                Some((
                    timeout.timeout_ms,
                    timeout.latency_ppm,
                    timeout.load_ppm,
                    timeout.confidence_ppm,
                )),
            ),
            Action::Refuted { peer } => (peer, "refuted", None),
            Action::Dead { peer } => (peer, "dead", None),
            // The transport pings every configured member continuously: a probe is
            // only counted.
            Action::Probe { .. } => return,
        };
        if event != "confirmed" {
            let extra = timeout.map_or(String::new(), |(ms, l, ld, c)| {
                alloc::format!(
                    ": dead in {ms} ms unless heard (latency x{}.{:03}, load x{}.{:03}, confidence x{}.{:03})",
                    l / 1_000_000,
                    l % 1_000_000 / 1000,
                    ld / 1_000_000,
                    ld % 1_000_000 / 1000,
                    c / 1_000_000,
                    c % 1_000_000 / 1000
                )
            });
            self.note(alloc::format!("peers: {peer} {event}{extra}"));
        }
        let body = PeerRecordBody {
            peer,
            event: String::from(event),
            at_ms: self.now_ms,
            timeout,
        };
        self.out.audit.push(RecordBody::Custom {
            tag: AUDIT_TAG_PEER,
            bytes: mgmt::encode(&body),
        });
    }

    // ---- management ----------------------------------------------------------------

    fn reply(&mut self, conn: ClientConn, r: &Response) {
        if self.out.replies.len() < MAX_OUTBOX {
            self.out.replies.push((conn, mgmt::encode(r)));
        } else {
            self.counters.outbox_dropped += 1;
        }
    }

    fn client_request(&mut self, conn: ClientConn, bytes: &[u8]) -> Option<Response> {
        if let Some(h) = &self.halted {
            let d = Denied::NotReady(
                xdv_types::prefix_within(&alloc::format!("node halted: {h}"), 200).into(),
            );
            return Some(self.refuse(None, d));
        }
        let req: SignedRequest = match mgmt::decode(bytes) {
            Ok(r) => r,
            Err(d) => return Some(self.refuse(None, d)),
        };
        let principal = req.principal;
        if self.is_gate_node() && matches!(req.request, Request::Submit(_)) {
            return self.gate_submit(conn, req);
        }
        match self.gate.authorize(&self.state, &req) {
            Err(d) => Some(self.refuse(Some(principal), d)),
            Ok(Some(command))
                if !self.cfg.builtins.is_empty()
                    && specs_of(&command).iter().any(|spec| {
                        matches!(&spec.work, xdv_cluster::Work::Builtin(n)
                            if !self.cfg.builtins.iter().any(|b| b == n))
                    }) =>
            {
                let d = Denied::Malformed(alloc::format!(
                    "unknown built-in task (this cluster has: {})",
                    self.cfg.builtins.join(", ")
                ));
                Some(self.refuse(Some(principal), d))
            }
            Ok(Some(command)) => {
                if let Err(d) = self.check_membership(&command) {
                    return Some(self.refuse(Some(principal), d));
                }
                let command = self.complete_member(command);
                for spec in specs_of(&command) {
                    self.stages
                        .received(spec.tenant, spec.request_seq, self.now_us);
                }
                let wait = match &command {
                    Command::AssignTask(spec) => Wait::Task {
                        tenant: spec.tenant,
                        seq: spec.request_seq,
                    },
                    Command::AssignTasks(specs) => Wait::Batch {
                        tenant: specs.first().map_or(TenantId(0), |s| s.tenant),
                        first: req.seq,
                        count: batch_len(&req.request),
                        then_await: matches!(req.request, Request::RunBatch(_)),
                    },
                    Command::SetQuota { tenant, quota, .. } => Wait::Quota {
                        tenant: *tenant,
                        quota: *quota,
                    },
                    Command::ProposeContract(sc) => Wait::Contract {
                        id: sc.contract.contract_id,
                    },
                    Command::ReleaseContract { contract_id, .. } => {
                        Wait::Released { id: *contract_id }
                    }
                    Command::SetPolicy {
                        tenant, priority, ..
                    } => Wait::Policy {
                        tenant: *tenant,
                        priority: *priority,
                    },
                    c @ (Command::AddMember { .. } | Command::RemoveMember { .. }) => {
                        Self::member_wait(c).expect("a membership command")
                    }
                    Command::CancelTask { task, .. } => Wait::Cancel { task: *task },
                    Command::SetPlacementPolicy { policy, .. } => {
                        Wait::Placement { policy: *policy }
                    }
                    Command::AdmitDiscovered { mac, node, .. } => Wait::Admitted {
                        mac: *mac,
                        node: *node,
                    },
                    other => {
                        let d =
                            Denied::NotReady(alloc::format!("{} is not a request", other.name()));
                        return Some(self.refuse(Some(principal), d));
                    }
                };
                if self.parked.len() >= MAX_PARKED {
                    let d = Denied::NotReady("too many requests waiting".into());
                    return Some(self.refuse(Some(principal), d));
                }
                let sent = match command {
                    // This node is the requesting node: it signs the contract with its
                    // own key and proposes it as its own.
                    Command::ProposeContract(sc) => match self.sign_contract(sc) {
                        Ok(signed) => {
                            let body = self.proposed_record(&signed.contract);
                            let sent = self.propose_or_forward(
                                Command::ProposeContract(signed),
                                PeerForward::Own,
                            );
                            if sent.is_ok() {
                                self.out.audit.push(RecordBody::Custom {
                                    tag: AUDIT_TAG_CONTRACT,
                                    bytes: mgmt::encode(&body),
                                });
                            }
                            sent
                        }
                        Err(d) => Err(d),
                    },
                    // A follower forwards the signed request itself: the leader checks it again.
                    command => self.propose_or_forward(command, |_| PeerForward::Client(req)),
                };
                if let Err(d) = sent {
                    return Some(self.refuse(Some(principal), d));
                }
                self.push_parked(conn, wait);
                None
            }
            Ok(None) if matches!(req.request, Request::AwaitTask { .. }) => {
                let Request::AwaitTask { task } = req.request else {
                    unreachable!("matched above")
                };
                self.await_task(conn, principal, task)
            }
            Ok(None) if matches!(req.request, Request::AwaitTasks { .. }) => {
                let Request::AwaitTasks { tasks } = req.request else {
                    unreachable!("matched above")
                };
                self.await_tasks(conn, principal, tasks)
            }
            // Every submission of the batch was accepted before (a retry): wait for
            // them as an `AwaitTasks` would once the log placed them all.
            Ok(None) if matches!(req.request, Request::RunBatch(_)) => {
                let Principal::Tenant(tenant) = principal else {
                    unreachable!("the gate lets only tenants submit")
                };
                let (first, count) = (req.seq, batch_len(&req.request));
                if self.batch_tasks(tenant, first, count).is_none() {
                    return Some(Response::Refused(Denied::NotReady(
                        "batch not placed yet; retry with the same seq".into(),
                    )));
                }
                if let Some(r) = self.batch_ran(tenant, first, count) {
                    return Some(r);
                }
                let wait = Wait::Batch {
                    tenant,
                    first,
                    count,
                    then_await: true,
                };
                self.park(conn, principal, wait)
            }
            // Every submission of the batch was accepted before (a retry).
            Ok(None) if matches!(req.request, Request::SubmitBatch(_)) => {
                let Principal::Tenant(tenant) = principal else {
                    unreachable!("the gate lets only tenants submit")
                };
                let count = batch_len(&req.request);
                Some(
                    self.batch_answer(tenant, req.seq, count)
                        .unwrap_or_else(|| {
                            Response::Refused(Denied::NotReady(
                                "batch not placed yet; retry with the same seq".into(),
                            ))
                        }),
                )
            }
            Ok(None) => Some(match req.request {
                Request::TaskStatus { task } => self.task_answer(task),
                Request::ClusterStatus => Response::Cluster(self.view()),
                Request::ListTasks { state, limit } => {
                    Response::Tasks(self.task_summaries(principal, state, limit))
                }
                Request::Contracts => Response::Contracts {
                    clock_ms: self.state.data().clock_ms,
                    contracts: self.contract_views(principal),
                    ended: self.ended_contract_views(principal),
                },
                Request::Metrics => Response::Metrics(self.metrics()),
                Request::Discovered => {
                    let d = &self.state.data().discovery;
                    Response::Discovered {
                        clock_ms: self.state.data().clock_ms,
                        machines: d.machines.iter().map(|(m, x)| (*m, x.clone())).collect(),
                        refused_full: d.refused_full,
                        refused_invalid: d.refused_invalid,
                    }
                }
                Request::RouteExplain { job } => self.route_explain(job),
                Request::Submit(_)
                | Request::AdmitDiscovered { .. }
                | Request::SetQuota { .. }
                | Request::Reserve(_)
                | Request::Release { .. }
                | Request::AddWorker { .. }
                | Request::RemoveWorker { .. }
                | Request::Cancel { .. }
                | Request::AwaitTask { .. }
                | Request::SubmitBatch(_)
                | Request::RunBatch(_)
                | Request::AwaitTasks { .. }
                | Request::SetPolicy { .. }
                | Request::SetPlacementPolicy { .. } => {
                    Response::Refused(Denied::NotReady("unreachable".into()))
                }
            }),
        }
    }

    /// `AwaitTask` (the gate allowed it): the answer now if the task finished, else
    /// parked until it does (or the reply timeout passes).
    fn await_task(&mut self, conn: ClientConn, who: Principal, task: TaskId) -> Option<Response> {
        if let Some(r) = self.finished_task(task) {
            self.stages.replied(task, self.now_us);
            return Some(r);
        }
        self.park(conn, who, Wait::Done { task })
    }

    /// Parks a request until `wait` is met or the reply timeout passes; refused at
    /// once when [`MAX_PARKED`] requests already wait.
    fn park(&mut self, conn: ClientConn, who: Principal, wait: Wait) -> Option<Response> {
        if self.parked.len() >= MAX_PARKED {
            let d = Denied::NotReady("too many requests waiting".into());
            return Some(self.refuse(Some(who), d));
        }
        self.push_parked(conn, wait);
        None
    }

    /// Parks `wait` until the reply timeout; the next [`Node::answer_parked`] walks.
    fn push_parked(&mut self, conn: ClientConn, wait: Wait) {
        let deadline_ms = self.now_ms + self.cfg.timing.reply_timeout_ms;
        self.parked.push(Parked {
            conn,
            wait,
            deadline_ms,
        });
        self.parked_deadline_ms = self.parked_deadline_ms.min(deadline_ms);
        self.answered_at = u64::MAX;
    }

    /// `AwaitTasks` (the gate allowed it): the answer now if every task finished,
    /// else parked until they have (or the reply timeout passes).
    fn await_tasks(
        &mut self,
        conn: ClientConn,
        who: Principal,
        tasks: Vec<TaskId>,
    ) -> Option<Response> {
        if let Some(r) = self.all_finished(&tasks) {
            return Some(r);
        }
        self.park(conn, who, Wait::AllDone { tasks })
    }

    /// `Response::TaskReports` for `tasks` if every one finished (stamping the
    /// replies), else `None`.
    fn all_finished(&mut self, tasks: &[TaskId]) -> Option<Response> {
        let done = tasks.iter().all(|t| self.finished(*t));
        done.then(|| self.task_reports(tasks))
    }

    /// `Response::BatchRan` for `RunBatch` `first .. first + count` once every
    /// submission has its task and every one of those finished, else `None`.
    fn batch_ran(&mut self, tenant: TenantId, first: u64, count: u64) -> Option<Response> {
        let tasks = self.batch_tasks(tenant, first, count)?;
        let done = tasks.iter().all(|t| self.finished(*t));
        done.then(|| Response::BatchRan {
            seq: first,
            reports: self.reports_now(&tasks),
        })
    }

    /// Whether `task` finished (completed or refused), or is no longer retained.
    fn finished(&self, task: TaskId) -> bool {
        self.state.task(task).is_none_or(|r| {
            matches!(
                r.status,
                TaskStatus::Completed { .. } | TaskStatus::Rejected(_)
            )
        })
    }

    /// The reports on `tasks` as they are now (a task the state no longer retains
    /// is left out); stamps each finished one replied.
    fn task_reports(&mut self, tasks: &[TaskId]) -> Response {
        Response::TaskReports(self.reports_now(tasks))
    }

    fn reports_now(&mut self, tasks: &[TaskId]) -> Vec<mgmt::TaskReport> {
        let mut out = Vec::with_capacity(tasks.len());
        for &task in tasks {
            let Some(t) = self.state.task(task) else {
                continue;
            };
            if matches!(
                t.status,
                TaskStatus::Completed { .. } | TaskStatus::Rejected(_)
            ) {
                self.stages.replied(task, self.now_us);
            }
            let t = self.state.task(task).expect("checked above");
            out.push(mgmt::TaskReport {
                task,
                tenant: t.spec.tenant,
                status: t.status.clone(),
            });
        }
        out
    }

    /// `SubmittedBatch` once every number of the batch has its task.
    fn batch_answer(&self, tenant: TenantId, first: u64, count: u64) -> Option<Response> {
        self.batch_tasks(tenant, first, count)
            .map(|tasks| Response::SubmittedBatch { tasks })
    }

    /// The tasks of `tenant`'s numbers `first .. first + count`, once every one has
    /// its task.
    fn batch_tasks(&self, tenant: TenantId, first: u64, count: u64) -> Option<Vec<TaskId>> {
        (first..first.saturating_add(count))
            .map(|seq| self.state.task_for_request(tenant, seq))
            .collect()
    }

    /// `Response::Task` for `task` if it finished (completed or refused).
    fn finished_task(&self, task: TaskId) -> Option<Response> {
        let t = self.state.task(task)?;
        matches!(
            t.status,
            TaskStatus::Completed { .. } | TaskStatus::Rejected(_)
        )
        .then(|| self.task_answer(task))
    }

    /// The answer about `task` as it is now: its status and log lines, or unknown.
    fn task_answer(&self, task: TaskId) -> Response {
        match self.state.task(task) {
            Some(t) => Response::Task {
                task,
                tenant: t.spec.tenant,
                status: t.status.clone(),
                log: t.log.clone(),
            },
            None => Response::Refused(Denied::UnknownTask(task)),
        }
    }

    /// Fills in this node as the requesting node, the time, and its signature.
    fn sign_contract(
        &mut self,
        sc: xdv_cluster::SignedContract,
    ) -> Result<xdv_cluster::SignedContract, Denied> {
        let Some(seed) = self.cfg.identity.seed else {
            return Err(Denied::NotReady(
                "this node has no key to sign contracts".into(),
            ));
        };
        let mut c = sc.contract;
        c.requesting_node = self.me;
        c.logical_timestamp = self.stamp().lamport;
        Ok(c.sign(&seed))
    }

    /// The `proposed` record of a contract this node signed and sent to the log: the
    /// requesting node's alone (the target hears of it only when the log decides), so
    /// its index is this node's applied index when it proposed, not the deciding entry.
    fn proposed_record(&self, c: &xdv_cluster::Contract) -> ContractRecordBody {
        ContractRecordBody {
            index: self.state.data().applied_index,
            contract: c.contract_id,
            hash: c.hash(),
            event: String::from(EVENT_PROPOSED),
            tenant: c.tenant,
            requester: c.requesting_node,
            target: c.target_node,
            job: None,
            detail: alloc::format!(
                "{:?} units {:?} for {} ms at Lamport {}",
                c.domain,
                c.resource_set,
                c.duration_ms,
                c.logical_timestamp
            ),
        }
    }

    /// The newest tasks a principal may see (a tenant its own, the operator all),
    /// newest first, at most `limit` (capped at `MAX_LIST_TASKS`), only in `state` if given.
    fn task_summaries(
        &self,
        who: Principal,
        state: Option<xdv_cluster::mgmt::TaskState>,
        limit: u32,
    ) -> Vec<xdv_cluster::mgmt::TaskSummary> {
        use xdv_cluster::mgmt::{MAX_LIST_TASKS, TaskState, TaskSummary};
        let limit = limit.min(MAX_LIST_TASKS) as usize;
        let out: Vec<TaskSummary> = self
            .state
            .data()
            .tasks
            .iter()
            .rev()
            .filter(|(_, r)| match who {
                Principal::Operator => true,
                Principal::Tenant(t) => r.spec.tenant == t,
            })
            .filter(|(_, r)| state.is_none_or(|s| TaskState::of(&r.status) == s))
            .take(limit)
            .map(|(id, r)| TaskSummary::of(*id, r))
            .collect();
        debug_assert!(out.windows(2).all(|w| w[0].task > w[1].task));
        out
    }

    /// The contracts in force a principal may see (a tenant its own, the operator all).
    fn contract_views(&self, who: Principal) -> Vec<xdv_cluster::mgmt::ContractView> {
        self.state
            .data()
            .contracts
            .values()
            .filter(|r| who.may_see(r.contract.tenant))
            .map(|r| {
                let suspended = r.state != xdv_cluster::ContractState::Active;
                self.contract_view(&r.contract, suspended, r.expires_ms, None)
            })
            .collect()
    }

    /// The recently ended contracts `who` may see, oldest first: a preempted (or
    /// otherwise ended) holder still sees how its contract ended.
    fn ended_contract_views(&self, who: Principal) -> Vec<xdv_cluster::mgmt::ContractView> {
        self.state
            .data()
            .ended_contracts
            .values()
            .filter(|e| who.may_see(e.contract.tenant))
            .map(|e| {
                let end = Some((e.end.clone(), e.ended_ms));
                self.contract_view(&e.contract, false, e.ended_ms, end)
            })
            .collect()
    }

    fn contract_view(
        &self,
        c: &xdv_cluster::Contract,
        suspended: bool,
        expires_ms: u64,
        ended: Option<(xdv_cluster::ContractEnd, u64)>,
    ) -> xdv_cluster::mgmt::ContractView {
        xdv_cluster::mgmt::ContractView {
            id: c.contract_id,
            hash: c.hash(),
            tenant: c.tenant,
            requester: c.requesting_node,
            target: c.target_node,
            domain: c.domain,
            resources: c.resource_set.clone(),
            suspended,
            priority: self.state.policy(c.tenant),
            expires_ms,
            ended,
        }
    }

    /// Counts a refusal; records it through the rate limiter.
    fn refuse(&mut self, who: Option<Principal>, d: Denied) -> Response {
        self.counters.refused_requests += 1;
        let who = who.map_or_else(|| String::from("unknown"), |p| alloc::format!("{p}"));
        let reason = alloc::format!("mgmt {who}: {d}");
        let window = self.cfg.timing.refusal_window_ms;
        if self.now_ms.saturating_sub(self.refusals.window_start_ms) >= window {
            self.flush_refusals(true);
        }
        if self.refusals.in_window == 0 {
            self.refusals.window_start_ms = self.now_ms;
            let reason = String::from(xdv_types::prefix_within(
                &reason,
                xdv_audit::body::MAX_REFUSAL_REASON_BYTES,
            ));
            self.out.audit.push(RecordBody::RequestRefused {
                reason: reason.clone(),
            });
            self.refusals.first = Some(reason);
        } else {
            self.counters.refusals_summarised += 1;
        }
        self.refusals.in_window += 1;
        Response::Refused(d)
    }

    /// Ends the refusal window if it is over (or `force`): one summary record for the
    /// refusals after the first.
    fn flush_refusals(&mut self, force: bool) {
        let l = &mut self.refusals;
        let over =
            self.now_ms.saturating_sub(l.window_start_ms) >= self.cfg.timing.refusal_window_ms;
        if l.in_window == 0 || !(force || over) {
            return;
        }
        if l.in_window > 1 {
            let first = l.first.take().unwrap_or_default();
            self.out.audit.push(RecordBody::RefusalSummary {
                refused: l.in_window - 1,
                first_reason: first,
                unrecorded: 0,
            });
        }
        *l = RefusalLimiter {
            window_start_ms: self.now_ms,
            ..RefusalLimiter::default()
        };
    }

    /// Answers parked requests that were applied (or timed out).
    fn answer_parked(&mut self) {
        let now = self.now_ms;
        if self.answered_at == self.state_changes && now < self.parked_deadline_ms {
            return;
        }
        self.answered_at = self.state_changes;
        self.counters.parked_walks += 1;
        let mut keep: Vec<Parked> = Vec::new();
        for p in core::mem::take(&mut self.parked) {
            let done = match &p.wait {
                Wait::Task { tenant, seq } => self
                    .state
                    .task_for_request(*tenant, *seq)
                    .map(|task| Response::Submitted { task }),
                Wait::Quota { tenant, quota } => {
                    let now_set = self.state.data().tenants.get(tenant).map(|t| t.quota);
                    (now_set == Some(*quota)).then_some(Response::QuotaSet { tenant: *tenant })
                }
                Wait::Contract { id } => match self.contract_answers.get(id) {
                    Some(a @ xdv_cluster::mgmt::ContractAnswer::Accepted { .. })
                    | Some(a @ xdv_cluster::mgmt::ContractAnswer::Rejected { .. }) => {
                        Some(Response::Contract(a.clone()))
                    }
                    _ => None,
                },
                Wait::Released { id } => (!self.state.data().contracts.contains_key(id)).then_some(
                    Response::Contract(xdv_cluster::mgmt::ContractAnswer::Released { id: *id }),
                ),
                Wait::Policy { tenant, priority } => (self.state.policy(*tenant) == *priority)
                    .then_some(Response::PolicySet { tenant: *tenant }),
                Wait::Placement { policy } => (self.state.data().placement == *policy)
                    .then_some(Response::PlacementPolicySet { policy: *policy }),
                Wait::Member { node, member } => (self.state.data().nodes.contains_key(node)
                    == *member)
                    .then_some(Response::Member {
                        node: *node,
                        member: *member,
                    }),
                Wait::Cancel { task } => self.cancel_answer(*task),
                Wait::Done { task } => {
                    let r = self.finished_task(*task);
                    if r.is_some() {
                        self.stages.replied(*task, self.now_us);
                    }
                    r
                }
                Wait::Batch {
                    tenant,
                    first,
                    count,
                    then_await: false,
                } => self.batch_answer(*tenant, *first, *count),
                Wait::Batch {
                    tenant,
                    first,
                    count,
                    then_await: true,
                } => self.batch_ran(*tenant, *first, *count),
                Wait::AllDone { tasks } => self.all_finished(tasks),
                Wait::Routed { tenant, seq } => self.routed_answer(*tenant, *seq),
                Wait::Admitted { mac, node } => (self.state.data().discovery.admitted_as(mac)
                    == Some(*node))
                .then_some(Response::DiscoveredAdmitted {
                    mac: *mac,
                    node: *node,
                }),
            };
            let reply = match (done, &p.wait) {
                (Some(r), _) => Some(r),
                (None, Wait::AllDone { tasks }) if now >= p.deadline_ms => {
                    Some(self.task_reports(tasks))
                }
                // Placed but not all finished: the reports as they are now (not all
                // placed: refused below, to be retried with the same seq).
                (
                    None,
                    Wait::Batch {
                        tenant,
                        first,
                        count,
                        then_await: true,
                    },
                ) if now >= p.deadline_ms
                    && let Some(tasks) = self.batch_tasks(*tenant, *first, *count) =>
                {
                    Some(Response::BatchRan {
                        seq: *first,
                        reports: self.reports_now(&tasks),
                    })
                }
                // Waited long enough: the status as it is now.
                (None, Wait::Done { task }) if now >= p.deadline_ms => {
                    Some(self.task_answer(*task))
                }
                (None, _) if now >= p.deadline_ms => Some(Response::Refused(Denied::NotReady(
                    "not committed in time; retry with the same seq".into(),
                ))),
                (None, _) => None,
            };
            match reply {
                Some(r) => self.reply(p.conn, &r),
                None => keep.push(p),
            }
        }
        self.parked_deadline_ms = keep.iter().map(|p| p.deadline_ms).min().unwrap_or(u64::MAX);
        self.parked = keep;
    }

    /// The answer to a parked cancellation once the task ended: `Cancelled`, or
    /// `TaskFinished` if it ended otherwise first (completed, timed out).
    fn cancel_answer(&self, task: TaskId) -> Option<Response> {
        let status = &self.state.task(task)?.status;
        match status {
            TaskStatus::Pending | TaskStatus::Assigned { .. } => None,
            TaskStatus::Completed {
                outcome: xdv_cluster::Outcome::Cancelled,
                node,
                attempt,
                ..
            } => Some(Response::Cancelled {
                task,
                node: (node.0 != 0).then_some(*node),
                attempt: *attempt,
            }),
            other => Some(Response::Refused(Denied::TaskFinished {
                task,
                outcome: mgmt::finished_word(other),
            })),
        }
    }

    // ---- views -------------------------------------------------------------------

    /// The status a `ClusterStatus` request answers with.
    pub fn view(&self) -> ClusterView {
        let st = self.raft.as_ref().map(|r| r.status());
        let conf = st.as_ref().map(|s| s.conf.clone()).unwrap_or_default();
        let d = self.state.data();
        ClusterView {
            node: self.me,
            role: match (&st, &self.halted) {
                (Some(s), _) => alloc::format!("{:?}", s.role),
                (None, Some(Halt::Storage(_))) => "halted".into(),
                (None, _) => "none".into(),
            },
            term: st.as_ref().map_or(0, |s| s.term),
            leader: st.as_ref().and_then(|s| s.leader),
            commit: st.as_ref().map_or(0, |s| s.commit),
            applied: d.applied_index,
            state_hash: self.state.hash(),
            federated_root: self.state.federated_root().map(|f| f.global_root),
            audit_head: self.audit_head.1,
            audit_records: self.audit_head.0,
            // A gate group's figures are its jobs: all, finished, open.
            tasks: match self.state.gate() {
                Some(g) => g.jobs.len() as u64,
                None => d.tasks.len() as u64,
            },
            completed: match self.state.gate() {
                Some(g) => g.jobs.iter().filter(|(_, j)| j.status.is_final()).count() as u64,
                None => d
                    .tasks
                    .values()
                    .filter(|t| matches!(t.status, TaskStatus::Completed { .. }))
                    .count() as u64,
            },
            pending: match self.state.gate() {
                Some(g) => g.open_jobs().count() as u64,
                None => d.pending.len() as u64,
            },
            members: d
                .nodes
                .iter()
                .map(|(n, r)| MemberView {
                    node: *n,
                    up: r.up,
                    quarantined: r.quarantined,
                    assigned: r.assigned,
                    completed: r.completed,
                    audit_records: r.audit.map_or(0, |a| a.0),
                    observer: r.info.observer,
                    raft: Self::raft_place(&conf, *n).into(),
                })
                .collect(),
            commit_latency_us: {
                let (p50, p99, n) = self.commit_latency_ms();
                (p50 * 1000, p99 * 1000, n)
            },
            stages: self.stages.stats(),
            loop_busy_us: self.loop_busy_us,
            loop_phases_us: self
                .loop_phases_us
                .iter()
                .map(|(n, us)| ((*n).into(), *us))
                .collect(),
            loop_iterations: self.loop_iterations,
            peer_health: alloc::boxed::Box::new(self.peer_health()),
            placement_policy: self.state.policy_name().into(),
        }
    }

    /// The node's coordinate and its view of each member (§12.8).
    pub fn peer_health(&self) -> xdv_cluster::mgmt::PeerHealthView {
        let members = self.health_members();
        self.health.view(self.now_ms, &members, self.load_ppm())
    }

    /// Peer-health transition counters.
    pub fn health_counters(&self) -> peers::HealthCounters {
        self.health.counters
    }

    /// (p50, p99, samples) of propose-to-apply latency of own proposals, ms.
    pub fn commit_latency_ms(&self) -> (u64, u64, u64) {
        let mut v: Vec<u64> = self.latencies_ms.iter().copied().collect();
        if v.is_empty() {
            return (0, 0, 0);
        }
        v.sort_unstable();
        let at = |p: usize| v[(v.len() - 1) * p / 100];
        (at(50), at(99), v.len() as u64)
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Hands in the driver's own numbers (audit region, NICs, run queues) for the
    /// metrics answer.
    pub fn set_local_metrics(&mut self, m: crate::metrics::LocalMetrics) {
        self.local_metrics = m;
    }

    /// What this node measures of itself for its load heartbeat: the driver's run
    /// queues (tasks waiting for a core, [`Node::set_local_metrics`]), its cores' busy
    /// share (tasks running ÷ granted cores, ppm, capped at 100 %) and its own Vivaldi
    /// coordinate once it has taken a sample.
    pub fn load_report(&self) -> LoadReport {
        let m = &self.local_metrics;
        let running = m.tasks_running.saturating_mul(xdv_federation::PPM);
        let util = running
            .checked_div(u64::from(self.cfg.cores))
            .unwrap_or(if m.tasks_running > 0 {
                xdv_federation::PPM
            } else {
                0
            })
            .min(xdv_federation::PPM);
        let c = self.health.vivaldi.local_coordinate();
        LoadReport {
            node: self.me,
            queue_depth: u32::try_from(m.tasks_queued).unwrap_or(u32::MAX),
            utilisation_ppm: util as u32,
            coordinate: (c.sample_count > 0).then_some(*c),
        }
    }

    /// Proposes the load heartbeat when it is due: every `Timing::load_report_ms`, or
    /// after `Timing::load_change_ms` when it differs materially from what the log
    /// holds ([`load_changed`]). Members only; never an observer (it runs nothing).
    fn report_load(&mut self, now: u64) {
        let t = self.cfg.timing;
        if t.load_report_ms == 0 || self.leader().is_none() {
            return;
        }
        let Some(rec) = self.state.data().nodes.get(&self.me) else {
            return;
        };
        if rec.info.observer {
            return;
        }
        let report = self.load_report();
        let since = now.saturating_sub(self.last_load_ms);
        let changed = rec
            .load
            .as_ref()
            .is_none_or(|(l, _)| load_changed(l, &report));
        if (changed && (self.last_load_ms == 0 || since >= t.load_change_ms))
            || since >= t.load_report_ms
        {
            self.last_load_ms = now.max(1);
            self.submit_own(Command::LoadHeartbeat(report));
        }
    }

    /// This node's metrics, Prometheus text exposition ([`crate::metrics`]).
    pub fn metrics(&self) -> String {
        crate::metrics::render(self, &self.local_metrics)
    }
    pub fn identity(&self) -> &Identity {
        &self.cfg.identity
    }
    pub fn state(&self) -> &ClusterState {
        &self.state
    }
    pub fn raft(&self) -> Option<&RaftNode<DurableStorage<R>>> {
        self.raft.as_ref()
    }
    pub fn halted(&self) -> Option<&Halt> {
        self.halted.as_ref()
    }
    pub fn opened(&self) -> Option<Opened> {
        self.opened
    }
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }
    pub fn running(&self) -> usize {
        self.running.len()
    }
    pub fn unconfirmed(&self) -> usize {
        self.unconfirmed.len()
    }
    pub fn parked(&self) -> usize {
        self.parked.len()
    }
    /// Milliseconds since `peer` was last heard, if ever.
    pub fn silence_ms(&self, peer: NodeId) -> Option<u64> {
        self.heard_ms
            .get(&peer)
            .map(|&t| self.now_ms.saturating_sub(t))
    }

    /// The Raft region (the simulator arms torn writes through it).
    pub fn region_mut(&mut self) -> Option<&mut R> {
        self.raft.as_mut().map(|r| r.storage_mut().region_mut())
    }

    /// Takes the Raft region back (the simulator's crash: what is in the region is all
    /// that survives).
    pub fn into_region(self) -> Option<R> {
        self.raft.map(|r| r.into_storage().into_region())
    }

    /// The node's own invariants (see the module doc); `Err` names the broken one.
    pub fn invariants(&self) -> Result<(), String> {
        self.state.invariants()?;
        if let Some(r) = &self.raft {
            let st = r.status();
            if st.commit > st.last_index {
                return Err(alloc::format!(
                    "{}: commit {} past the last index {}",
                    self.me,
                    st.commit,
                    st.last_index
                ));
            }
            if self.state.data().applied_index > st.commit {
                return Err(alloc::format!(
                    "{}: applied {} past commit {}",
                    self.me,
                    self.state.data().applied_index,
                    st.commit
                ));
            }
        }
        for key in self.running.iter() {
            if self.unconfirmed.contains_key(key) {
                return Err(alloc::format!(
                    "{}: {} attempt {} both running and reported",
                    self.me,
                    key.0,
                    key.1
                ));
            }
        }
        if let Some(k) = self.stopping.iter().find(|k| !self.running.contains(k)) {
            return Err(alloc::format!(
                "{}: {} attempt {} stopping but not running",
                self.me,
                k.0,
                k.1
            ));
        }
        for (key, (c, _)) in &self.unconfirmed {
            if c.task != key.0 || c.attempt != key.1 || c.node != self.me {
                return Err(alloc::format!(
                    "{}: unconfirmed completion mislabelled",
                    self.me
                ));
            }
        }
        self.dispatch_invariants()?;
        Ok(())
    }
}

fn list(ids: &[NodeId]) -> String {
    let mut s = String::new();
    for (i, n) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&alloc::format!("{}", n.0));
    }
    s
}
