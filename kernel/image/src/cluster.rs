//! The cluster service on a node: the replicated `xdv_cluster::ClusterState` fed by
//! committed Raft entries, the management API, running the tasks placed on this node,
//! and the leader's failure detector.
//!
//! Identity comes from the provisioning module (node id, cluster id, node key, peers
//! with their keys, tenants with theirs, the operator key); without one the node runs
//! with its command-line `node=`/`peers=`, no keys, and refuses every management
//! request (nobody can be authenticated).
//!
//! Locking: this module's lock is taken after TRANSPORT/NET (management requests arrive
//! inside the transport's poll) and before RAFT (proposals). It never calls into the
//! transport: frames it wants sent wait in `outgoing`/`replies` until the transport's
//! next poll takes them.

use crate::{audit, println, time};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;
use xdv_audit::RecordBody;
use xdv_boot::provision::Provision;
use xdv_cluster::mgmt::{
    self, ClusterView, Denied, Gate, MemberView, PeerForward, Principal, Request, Response,
    SignedRequest,
};
use xdv_cluster::{
    ClusterState, Command, Completion, Config, Event, GlobalTime, HeartbeatInfo, Outcome, Proposal,
    Resources, TaskStatus, Work, WorkerInfo,
};
use xdv_types::{CapabilityId, CoreId, Hash32, LamportClock, NodeId, TaskId, TenantId};

/// K cores every worker advertises at genesis (identical on every node); heartbeats
/// then report how many the node really grants.
const GENESIS_CORES: u16 = 4;
/// Capabilities every worker offers (the sandbox's echo-length service).
const WORKER_CAPS: [CapabilityId; 1] = [xdv_sandbox::CAP_ECHO_LEN];
/// A parked submission is answered within this long (then: retry with the same seq).
const REPLY_TIMEOUT_MS: u64 = 10_000;
/// A peer unheard of this long is declared down by the leader.
const NODE_DOWN_MS: u64 = 4_000;
/// Unconfirmed own commands are sent again after this long.
const RESEND_MS: u64 = 1_500;
/// Audit root publication period.
const PUBLISH_MS: u64 = 5_000;
/// Most tasks run in one batch.
const MAX_BATCH: usize = 32;
/// Most parked replies.
const MAX_PARKED: usize = 256;
/// Audit `Custom` tag of the per-entry cluster record: postcard (index, command, state hash).
pub const AUDIT_TAG_APPLIED: u16 = 0xC1;
/// Local run-queue ids of cluster tasks: bit 62 set, attempt in bits 40..62.
const LOCAL_ID_BASE: u64 = 1 << 62;

/// Who this node is and whom it trusts.
pub struct Identity {
    pub node: u32,
    pub cluster: u32,
    pub seed: Option<[u8; 32]>,
    /// (node, public key), this node included, sorted by id.
    pub peers: Vec<(u32, [u8; 32])>,
    pub tenants: Vec<(TenantId, [u8; 32])>,
    pub operator_key: [u8; 32],
}

impl Identity {
    pub fn peer_ids(&self) -> Vec<u32> {
        self.peers.iter().map(|p| p.0).collect()
    }

    pub fn key_of(&self, node: NodeId) -> Option<[u8; 32]> {
        self.peers
            .iter()
            .find(|p| p.0 == node.0)
            .map(|p| p.1)
            .filter(|_| self.seed.is_some())
    }
}

/// Finds and checks the provisioning module. `Err` is the reason it was refused.
pub fn identity_from(
    module: Option<&[u8]>,
    cmd_node: u32,
    cmd_node_given: bool,
    cmd_peers: &[u32],
) -> Result<Identity, String> {
    let Some(bytes) = module else {
        let mut peers: Vec<(u32, [u8; 32])> = cmd_peers.iter().map(|&p| (p, [0; 32])).collect();
        if !peers.iter().any(|p| p.0 == cmd_node) {
            peers.push((cmd_node, [0; 32]));
        }
        peers.sort();
        return Ok(Identity {
            node: cmd_node,
            cluster: 0,
            seed: None,
            peers,
            tenants: Vec::new(),
            operator_key: [0; 32],
        });
    };
    let p = Provision::parse(bytes).map_err(|e| alloc::format!("{e}"))?;
    if xdv_cluster::public_key(&p.secret_seed) != p.me().public_key {
        return Err(alloc::format!(
            "the secret key does not match node {}'s public key in the peer list",
            p.node
        ));
    }
    if cmd_node_given && cmd_node != p.node {
        return Err(alloc::format!(
            "command line says node={cmd_node} but the module is for node {}",
            p.node
        ));
    }
    Ok(Identity {
        node: p.node,
        cluster: p.cluster,
        seed: Some(p.secret_seed),
        peers: p.peers().iter().map(|x| (x.node, x.public_key)).collect(),
        tenants: p
            .tenants()
            .iter()
            .map(|t| (TenantId(t.tenant), t.public_key))
            .collect(),
        operator_key: p.operator_key,
    })
}

/// What a parked request waits for in the applied state.
enum Wait {
    /// The submission `(tenant, seq)` became a task.
    Task { tenant: TenantId, seq: u64 },
    /// The tenant's quota is the requested one.
    Quota {
        tenant: TenantId,
        quota: Option<xdv_cluster::Quota>,
    },
}

struct Parked {
    conn: usize,
    generation: u64,
    wait: Wait,
    deadline_ms: u64,
}

struct Service {
    me: NodeId,
    state: ClusterState,
    gate: Gate,
    clock: LamportClock,
    /// Tasks placed here, waiting to run: (task, attempt).
    to_run: VecDeque<(TaskId, u32)>,
    /// Completions proposed and not yet seen applied, with when they were last sent.
    unconfirmed: Vec<(Completion, u64)>,
    /// (peer, bytes of a `PeerForward`) for the transport to send.
    outgoing: Vec<(NodeId, Vec<u8>)>,
    /// (conn, generation, bytes of a `Response`) for the transport to send.
    replies: Vec<(usize, u64, Vec<u8>)>,
    parked: Vec<Parked>,
    last_detect_ms: u64,
    last_publish_ms: u64,
    last_heartbeat_ms: u64,
    refused: u64,
    forwarded_in: u64,
    forwards_dropped: u64,
}

static SERVICE: Mutex<Option<Service>> = Mutex::new(None);
pub static IDENTITY: spin::Once<Identity> = spin::Once::new();

/// Starts the service from `id` (genesis: every peer a worker, every tenant registered).
pub fn init(id: Identity) {
    let id = IDENTITY.call_once(|| id);
    let workers: Vec<WorkerInfo> = id
        .peers
        .iter()
        .map(|&(node, key)| WorkerInfo {
            node: NodeId(node),
            public_key: key,
            resources: Resources {
                k_cores: GENESIS_CORES,
                q_units: 0,
                phi_windows: 0,
            },
            capabilities: WORKER_CAPS.to_vec(),
        })
        .collect();
    let state = match ClusterState::genesis(Config::default(), &workers, &id.tenants) {
        Ok(s) => s,
        Err(e) => {
            println!("cluster: cannot start: {e}");
            return;
        }
    };
    println!(
        "cluster: node {} of cluster {} with {} members, {} tenants, state {}",
        id.node,
        id.cluster,
        workers.len(),
        id.tenants.len(),
        state.hash().short()
    );
    *SERVICE.lock() = Some(Service {
        me: NodeId(id.node),
        state,
        gate: Gate::new(id.cluster, id.operator_key),
        clock: LamportClock::new(),
        to_run: VecDeque::new(),
        unconfirmed: Vec::new(),
        outgoing: Vec::new(),
        replies: Vec::new(),
        parked: Vec::new(),
        last_detect_ms: 0,
        last_publish_ms: 0,
        last_heartbeat_ms: 0,
        refused: 0,
        forwarded_in: 0,
        forwards_dropped: 0,
    });
}

fn now_ms() -> u64 {
    time::uptime_us() / 1000
}

impl Service {
    fn stamp(&mut self) -> GlobalTime {
        GlobalTime {
            lamport: self.clock.tick().0,
            node: self.me,
        }
    }

    /// Proposes `cmd` if this node leads, else forwards it to the leader.
    fn submit_own(&mut self, cmd: Command) {
        // A lost proposal is not an error here: its sender resends until the log has it.
        let _ = self.propose_or_forward(cmd, PeerForward::Own);
    }

    /// Proposes `command` if this node leads; otherwise queues `forward(proposal)` for
    /// the leader. `Err` when there is no leader or the proposal is refused.
    fn propose_or_forward(
        &mut self,
        command: Command,
        forward: impl FnOnce(Proposal) -> PeerForward,
    ) -> Result<(), Denied> {
        let p = Proposal {
            time: self.stamp(),
            command,
        };
        match crate::raft::leader() {
            (_, true) => {
                let bytes = p
                    .encode()
                    .map_err(|e| Denied::NotReady(alloc::format!("{e}")))?;
                crate::raft::propose(bytes)
                    .map(|_| ())
                    .map_err(Denied::NotReady)
            }
            (Some(l), false) => {
                self.outgoing.push((l, mgmt::encode(&forward(p))));
                Ok(())
            }
            (None, false) => Err(Denied::NoLeader),
        }
    }

    fn apply(&mut self, index: u64, bytes: &[u8]) {
        let applied = self.state.apply(index, bytes);
        // The log's time never reaches u64::MAX from honest leaders (one tick per
        // proposal); a saturated one must not panic the node's clock.
        if applied.time.lamport < u64::MAX - 1 {
            self.clock.recv(xdv_types::Timestamp(applied.time.lamport));
        }
        let hash = self.state.hash();
        let body = mgmt::encode(&(index, applied.command.unwrap_or("invalid"), hash));
        audit::record(
            CoreId(0),
            &RecordBody::Custom {
                tag: AUDIT_TAG_APPLIED,
                bytes: body,
            },
        );
        for e in applied.events {
            match e {
                Event::TaskAssigned {
                    task,
                    node,
                    attempt,
                    ..
                } if node == self.me => self.to_run.push_back((task, attempt)),
                Event::TaskRejected { task, reason } => {
                    log::info!("cluster: {task} refused: {reason}");
                }
                _ => {}
            }
        }
    }

    /// A management request from a client connection; `Some` is the reply now.
    fn client_request(&mut self, conn: usize, generation: u64, bytes: &[u8]) -> Option<Response> {
        let req: SignedRequest = match mgmt::decode(bytes) {
            Ok(r) => r,
            Err(d) => return Some(self.refuse(None, d)),
        };
        let principal = req.principal;
        match self.gate.authorize(&self.state, &req) {
            Err(d) => Some(self.refuse(Some(principal), d)),
            Ok(Some(command)) => {
                let wait = match &command {
                    Command::AssignTask(spec) => Wait::Task {
                        tenant: spec.tenant,
                        seq: spec.request_seq,
                    },
                    Command::SetQuota { tenant, quota } => Wait::Quota {
                        tenant: *tenant,
                        quota: *quota,
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
                // A follower forwards the signed request itself: the leader checks it again.
                if let Err(d) = self.propose_or_forward(command, |_| PeerForward::Client(req)) {
                    return Some(self.refuse(Some(principal), d));
                }
                self.parked.push(Parked {
                    conn,
                    generation,
                    wait,
                    deadline_ms: now_ms() + REPLY_TIMEOUT_MS,
                });
                None
            }
            Ok(None) => Some(match req.request {
                Request::TaskStatus { task } => match self.state.task(task) {
                    Some(t) => Response::Task {
                        task,
                        tenant: t.spec.tenant,
                        status: t.status.clone(),
                    },
                    None => Response::Refused(Denied::UnknownTask(task)),
                },
                Request::ClusterStatus => Response::Cluster(self.view()),
                Request::Submit(_) | Request::SetQuota { .. } => {
                    Response::Refused(Denied::NotReady("unreachable".into()))
                }
            }),
        }
    }

    fn refuse(&mut self, who: Option<Principal>, d: Denied) -> Response {
        self.refused += 1;
        let who = who.map_or_else(|| String::from("unknown"), |p| alloc::format!("{p}"));
        let reason = clip(
            alloc::format!("mgmt {who}: {d}"),
            xdv_audit::body::MAX_REFUSAL_REASON_BYTES,
        );
        audit::record(CoreId(0), &RecordBody::RequestRefused { reason });
        Response::Refused(d)
    }

    /// A `PeerForward` from authenticated peer `from` (this node should lead).
    fn peer_forward(&mut self, from: NodeId, bytes: &[u8]) {
        let f: PeerForward = match mgmt::decode(bytes) {
            Ok(f) => f,
            Err(_) => {
                self.forwards_dropped += 1;
                return;
            }
        };
        self.forwarded_in += 1;
        let proposal = match f {
            PeerForward::Client(req) => match self.gate.authorize(&self.state, &req) {
                Ok(Some(command)) => Proposal {
                    time: self.stamp(),
                    command,
                },
                _ => {
                    self.forwards_dropped += 1;
                    return;
                }
            },
            PeerForward::Own(p) => {
                if !PeerForward::own_is_allowed(from, &p.command) {
                    self.forwards_dropped += 1;
                    log::warn!("cluster: {from} forwarded a command not about itself; dropped");
                    return;
                }
                // The leader stamps what it proposes: a follower's stamp is not trusted
                // to order the log.
                Proposal {
                    time: self.stamp(),
                    command: p.command,
                }
            }
        };
        if let Ok(b) = proposal.encode() {
            let _ = crate::raft::propose(b);
        }
    }

    fn view(&self) -> ClusterView {
        let st = crate::raft::status();
        let d = self.state.data();
        let (audit_records, audit_head) = audit::head();
        ClusterView {
            node: self.me,
            role: st
                .as_ref()
                .map_or("none".into(), |s| alloc::format!("{:?}", s.role)),
            term: st.as_ref().map_or(0, |s| s.term),
            leader: st.as_ref().and_then(|s| s.leader),
            commit: st.as_ref().map_or(0, |s| s.commit),
            applied: d.applied_index,
            state_hash: self.state.hash(),
            federated_root: self.state.federated_root().map(|f| f.global_root),
            audit_head,
            audit_records,
            tasks: d.tasks.len() as u64,
            completed: d
                .tasks
                .values()
                .filter(|t| matches!(t.status, TaskStatus::Completed { .. }))
                .count() as u64,
            pending: d.pending.len() as u64,
            members: d
                .nodes
                .iter()
                .map(|(n, r)| MemberView {
                    node: *n,
                    up: r.up,
                    assigned: r.assigned,
                    completed: r.completed,
                    audit_records: r.audit.map_or(0, |a| a.0),
                })
                .collect(),
            commit_latency_us: crate::raft::commit_latency_us(),
        }
    }

    /// Answers parked submissions that were applied (or timed out).
    fn answer_parked(&mut self) {
        let now = now_ms();
        let mut keep = Vec::new();
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
            };
            let reply = match done {
                Some(r) => Some(r),
                None if now >= p.deadline_ms => Some(Response::Refused(Denied::NotReady(
                    "not committed in time; retry with the same seq".into(),
                ))),
                None => None,
            };
            match reply {
                Some(r) => self.replies.push((p.conn, p.generation, mgmt::encode(&r))),
                None => keep.push(p),
            }
        }
        self.parked = keep;
    }
}

/// Applies committed entries (called by the Raft poll, outside its lock).
pub fn apply_committed(entries: Vec<(u64, Vec<u8>)>) {
    let mut g = SERVICE.lock();
    let Some(s) = g.as_mut() else { return };
    for (index, bytes) in entries {
        s.apply(index, &bytes);
    }
}

/// The snapshot image of the state (for Raft compaction).
pub fn snapshot_image() -> Option<Vec<u8>> {
    SERVICE.lock().as_ref().map(|s| s.state.snapshot_image())
}

/// Restores the state from a Raft snapshot.
pub fn restore(image: &[u8]) {
    // The bootstrap snapshot carries no state-machine image.
    if image.is_empty() {
        return;
    }
    if let Some(s) = SERVICE.lock().as_mut()
        && let Err(e) = s.state.restore_image(image)
    {
        println!("cluster: snapshot image refused: {e}; keeping the current state");
    }
}

/// A management frame on a client connection; `Some(bytes)` is the reply to send now.
pub fn mgmt_request(conn: usize, generation: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut g = SERVICE.lock();
    let Some(s) = g.as_mut() else {
        return Some(mgmt::encode(&Response::Refused(Denied::NotReady(
            "cluster service not running".into(),
        ))));
    };
    s.client_request(conn, generation, bytes)
        .map(|r| mgmt::encode(&r))
}

/// A management frame from authenticated peer `from`.
pub fn peer_request(from: NodeId, bytes: &[u8]) {
    if let Some(s) = SERVICE.lock().as_mut() {
        s.peer_forward(from, bytes);
    }
}

/// Frames for the transport: (peer forwards, client replies).
/// (peer, `PeerForward` bytes) to send over peer connections.
pub type Forwards = Vec<(NodeId, Vec<u8>)>;
/// (connection, generation, `Response` bytes) to send to management clients.
pub type Replies = Vec<(usize, u64, Vec<u8>)>;

pub fn take_outgoing() -> (Forwards, Replies) {
    match SERVICE.lock().as_mut() {
        Some(s) => (
            core::mem::take(&mut s.outgoing),
            core::mem::take(&mut s.replies),
        ),
        None => (Vec::new(), Vec::new()),
    }
}

/// Periodic work: run placed tasks, report them, detect failures, publish roots.
pub fn poll() {
    let batch = {
        let mut g = SERVICE.lock();
        let Some(s) = g.as_mut() else { return };
        s.answer_parked();
        resend_and_publish(s);
        detect_failures(s);
        let n = s.to_run.len().min(MAX_BATCH);
        let batch: Vec<crate::tasks::Placed> = s
            .to_run
            .drain(..n)
            .filter_map(|(task, attempt)| {
                let record = s.state.task(task)?.clone();
                let quota = s.state.data().tenants.get(&record.spec.tenant)?.quota;
                let (pages, elements) = xdv_cluster::Quota::task_limits(quota.as_ref());
                Some(crate::tasks::Placed {
                    task,
                    attempt,
                    record,
                    limits: xdv_sandbox::Limits {
                        memory_pages: pages as usize,
                        table_elements: elements as usize,
                    },
                })
            })
            .collect();
        batch
    };
    if batch.is_empty() {
        return;
    }
    let done = crate::tasks::run_cluster_tasks(&batch);
    let mut g = SERVICE.lock();
    let Some(s) = g.as_mut() else { return };
    for c in done {
        s.unconfirmed.push((c.clone(), now_ms()));
        s.submit_own(Command::TaskCompleted(c));
    }
}

fn resend_and_publish(s: &mut Service) {
    let now = now_ms();
    // Completions the log has not taken yet (lost in a failover) go again.
    let me = s.me;
    s.unconfirmed.retain(|(c, _)| {
        matches!(s.state.task(c.task).map(|t| &t.status),
            Some(TaskStatus::Assigned { node, attempt }) if *node == me && *attempt == c.attempt)
    });
    let due: Vec<Completion> = s
        .unconfirmed
        .iter_mut()
        .filter(|(_, at)| now.saturating_sub(*at) >= RESEND_MS)
        .map(|(c, at)| {
            *at = now;
            c.clone()
        })
        .collect();
    for c in due {
        s.submit_own(Command::TaskCompleted(c));
    }
    // Both go again until the replicated state shows them (a proposal can be lost).
    let cores = crate::smp::online().min(usize::from(GENESIS_CORES)) as u16;
    let mine = s.state.data().nodes.get(&me);
    let (granted, published) = (
        mine.map(|r| r.available_cores),
        mine.and_then(|r| r.audit).map_or(0, |a| a.0),
    );
    if granted != Some(cores) && now.saturating_sub(s.last_heartbeat_ms) >= RESEND_MS {
        s.last_heartbeat_ms = now;
        s.submit_own(Command::Heartbeat(HeartbeatInfo {
            node: me,
            available_cores: cores,
            local_load: 0,
        }));
    }
    if now.saturating_sub(s.last_publish_ms) >= PUBLISH_MS {
        s.last_publish_ms = now;
        let (records, root) = audit::merkle();
        if records != published && crate::raft::leader().0.is_some() {
            s.submit_own(Command::PublishAuditRoot {
                node: me,
                records,
                root,
            });
        }
    }
}

/// The leader declares a member down after `NODE_DOWN_MS` without hearing it, and up
/// again once it is heard.
fn detect_failures(s: &mut Service) {
    let now = now_ms();
    if now.saturating_sub(s.last_detect_ms) < 500 || !crate::raft::leader().1 {
        return;
    }
    s.last_detect_ms = now;
    let heard = crate::transport::peer_silence_ms();
    let members: Vec<(NodeId, bool)> = s
        .state
        .data()
        .nodes
        .iter()
        .map(|(n, r)| (*n, r.up))
        .collect();
    for (node, up) in members {
        if node == s.me {
            continue;
        }
        let silent = heard
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(u64::MAX, |(_, ms)| *ms);
        if up && silent >= NODE_DOWN_MS && now >= NODE_DOWN_MS * 2 {
            s.submit_own(Command::NodeDown { node });
        } else if !up && silent < crate::transport::PEER_TIMEOUT_MS {
            s.submit_own(Command::NodeUp { node });
        }
    }
}

/// The outcome of a local run as the log reports it.
pub fn completion(
    task: TaskId,
    node: NodeId,
    attempt: u32,
    outcome: Outcome,
    ticks: u64,
    output_hash: Hash32,
    mut output: Vec<u8>,
) -> Completion {
    output.truncate(xdv_cluster::MAX_OUTPUT_BYTES);
    Completion {
        task,
        node,
        attempt,
        outcome,
        ticks,
        output_hash,
        output,
    }
}

/// The run-queue id of attempt `attempt` of cluster task `task`.
pub fn local_id(task: TaskId, attempt: u32) -> TaskId {
    TaskId(LOCAL_ID_BASE | (u64::from(attempt & 0x3f_ffff) << 40) | (task.0 & 0xff_ffff_ffff))
}

/// A short name of what a task runs (for `cluster tasks`).
fn work_name(w: &Work) -> String {
    match w {
        Work::Builtin(n) => n.clone(),
        Work::Wasm(m) => alloc::format!("wasm({} bytes)", m.len()),
        Work::Dropped(h) => alloc::format!("wasm {}", h.short()),
    }
}

/// `cluster` console command.
pub fn print_cluster() {
    let g = SERVICE.lock();
    let Some(s) = g.as_ref() else {
        println!("cluster: not running");
        return;
    };
    let v = s.view();
    println!(
        "cluster: node {} role {} term {} leader {} commit {} applied {} state {}",
        v.node,
        v.role,
        v.term,
        v.leader.map_or("none".into(), |l| alloc::format!("{l}")),
        v.commit,
        v.applied,
        v.state_hash
    );
    println!(
        "cluster: tasks {} completed {} pending {} refused-requests {} forwarded-in {} dropped {} policy {}",
        v.tasks,
        v.completed,
        v.pending,
        s.refused,
        s.forwarded_in,
        s.forwards_dropped,
        s.state.policy_name()
    );
    match s.state.federated_root() {
        Some(f) => println!(
            "cluster: federated root {} over {} nodes",
            f.global_root,
            f.node_roots.len()
        ),
        None => println!("cluster: federated root none (no roots published yet)"),
    }
    for m in &v.members {
        println!(
            "  {:<5} {:<4} assigned {} completed {} audit records {}",
            alloc::format!("{}", m.node),
            if m.up { "up" } else { "down" },
            m.assigned,
            m.completed,
            m.audit_records
        );
    }
}

/// `tasks` console command, cluster part: the most recent cluster tasks.
pub fn print_tasks(limit: usize) {
    let g = SERVICE.lock();
    let Some(s) = g.as_ref() else { return };
    let tasks = &s.state.data().tasks;
    println!("cluster tasks: {} known", tasks.len());
    for t in tasks.values().rev().take(limit) {
        let status = match &t.status {
            TaskStatus::Pending => String::from("pending"),
            TaskStatus::Assigned { node, attempt } => alloc::format!("assigned {node} #{attempt}"),
            TaskStatus::Completed {
                node,
                outcome,
                ticks,
                output_hash,
                ..
            } => alloc::format!(
                "{outcome} on {node} ticks={ticks} output={}",
                output_hash.short()
            ),
            TaskStatus::Rejected(r) => alloc::format!("refused: {r}"),
        };
        println!(
            "  {} {} {} {}",
            t.id,
            t.spec.tenant,
            work_name(&t.spec.work),
            status
        );
    }
}

/// `contracts` console command.
pub fn print_contracts() {
    let g = SERVICE.lock();
    let Some(s) = g.as_ref() else {
        println!("contracts: cluster not running");
        return;
    };
    let d = s.state.data();
    println!(
        "contracts: {} in force, {} refused",
        d.contracts.len(),
        d.counters.contracts_refused
    );
    for (id, r) in &d.contracts {
        let c = &r.contract;
        println!(
            "  #{id} {}->{} {} {:?} until {} {:?} {:?}",
            c.requesting_node,
            c.target_node,
            c.domain,
            c.resource_set,
            c.expires_at(),
            c.priority,
            r.state
        );
    }
}

/// `shards` console command.
pub fn print_shards() {
    let g = SERVICE.lock();
    let Some(s) = g.as_ref() else {
        println!("shards: cluster not running");
        return;
    };
    let sh = &s.state.data().shards;
    println!("shards: {}", sh.count());
    for (i, a) in sh.shards.iter().enumerate() {
        let f = |n: Option<NodeId>| n.map_or("-".into(), |n| alloc::format!("{n}"));
        println!(
            "  {i:>3} primary {:<4} secondary {}",
            f(a.primary),
            f(a.secondary)
        );
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn clip(s: String, max: usize) -> String {
    String::from(xdv_types::prefix_within(&s, max))
}
