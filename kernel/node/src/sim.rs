//! The deterministic simulator of real nodes: N [`Node`]s — the type the kernel runs —
//! over the testing kit's packet network (`xdv_testkit::PacketSim`), each with a real
//! durable Raft region (a byte vector that can be torn in the middle of a write), with
//! signed clients that retry, and workers that finish the tasks the nodes dispatch.
//!
//! Faults (seeded, one PRNG): crashes at any point, including in the middle of a
//! durable write (the region keeps a prefix of the torn write and nothing after);
//! restarts from the region's bytes; partitions (symmetric and one-way); clogged
//! links; loss, duplication and reordering; slow nodes; clock skew between nodes.
//!
//! Accelerators: node 2 has a Q device and node 3 a Φ device, each the real device
//! side of the ring protocol (`xdv_accel::device`) over plain memory, driven by the
//! node's [`AccelPool`] exactly as in the kernel. Device faults: hardware failure
//! mid-job, hangs (caught by the driver's watchdog), forced instability, recovery.
//! A quarter of the clients' requests are Q or Φ jobs. Clients reserve Q containers on
//! node 2, and the operator changes the tenants' contract policies meanwhile
//! ([`SimOptions::policy_changes`], from a second console with its own PRNG), so
//! reservations conflict and preempt one another; at the end every member must have
//! decided every contract the same (refusals, contracts in force, how each ended).
//!
//! Task timeouts and cancellation (AD-34, seed 003 §11): the cluster's timeouts are
//! [`TaskTimeouts::DEFAULT`] scaled by [`SimOptions::timeouts_per_mille`] (default 25:
//! stuck after 3 s without progress, 15 s default timeout). Workers report progress
//! for every task they run (every 500 ms); one task in eight hangs (never finishes,
//! never reports: it is timed out, re-placed, and ends `Timeout` after its attempts);
//! one in sixteen runs for seconds and asks for an extension; clients cancel one
//! accepted task in three (running, pending, hung or already done). A stopped attempt
//! is dropped by its worker.
//!
//! After every step [`Sim::invariants`]: each node's own invariants, at most one
//! leader per term, committed entries never change, the same state hash for an index
//! on every node that applied it, a completed task never changes (so a cancelled or
//! timed-out task never completes later), and a task completes only at its latest
//! attempt (no completion with a stale fence token is applied). After the faults
//! stop, liveness: every accepted request completed exactly once and every node has
//! converged on the same state. A failure returns the seed's trace.

use crate::accel::{AccelPool, Port};
use crate::config::{Identity, NodeConfig, Timing};
use crate::node::{ClientConn, Node, RunTask};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use xdv_accel::device::{DeviceSide, Taken};
use xdv_accel::regs::{self, DeviceMemory, Kind, MemWindow};
use xdv_accel::ring::{CqStatus, Opcode};
use xdv_cluster::mgmt::{self, Denied, Principal, Request, Response, SignedRequest, Submit};
use xdv_cluster::{Completion, Domain, Outcome, TaskStatus, TaskTimeouts, Work};
use xdv_raft::{NodeId, Role, Storage};
use xdv_testkit::{NetFaults, PacketSim};
use xdv_types::rng::SplitMix64;
use xdv_types::{Hash32, Priority, TaskId, TenantId};

/// Size of each simulated node's Raft region.
pub const SIM_REGION_BYTES: usize = 512 * 1024;
/// Simulated clients are network nodes from this id up.
const CLIENT_BASE: u32 = 1000;
/// A client resends its request (same seq, possibly another node) after this long.
const CLIENT_RETRY_MS: u64 = 3_000;
/// Most trace lines kept for a failure report.
const TRACE_LINES: usize = 400;
/// Workers report progress for their running tasks this often.
const PROGRESS_EVERY_MS: u64 = 500;
/// Each node pings every other member this often (the kernel transport's
/// `HEARTBEAT_MS`); the pongs are the nodes' RTT samples.
const PING_EVERY_MS: u64 = 500;

/// What the simulated worker does with the K task of client request `seq`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Runs 1..=`max_task_ms`, reporting progress.
    Normal,
    /// Never finishes and never reports progress.
    Hang,
    /// Runs 4–6 s, reporting progress, and asks for a 2 s extension when it starts.
    Long,
}

fn behaviour(seq: u64, hangs: bool) -> Behaviour {
    match (seq % 8, seq % 16) {
        (6, _) if hangs => Behaviour::Hang,
        (_, 4) if hangs => Behaviour::Long,
        _ => Behaviour::Normal,
    }
}

/// What a seed runs.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub nodes: u32,
    /// Simulated milliseconds with faults on.
    pub fault_ms: u64,
    /// Simulated milliseconds allowed, after faults stop, to converge.
    pub heal_ms: u64,
    /// Requests the clients submit.
    pub requests: u64,
    pub clients: u32,
    /// Longest task run, ms (tasks take 1..=this).
    pub max_task_ms: u64,
    /// 0 = no faults; 1 = network only; 2 = + crashes, torn writes, skew, slow nodes.
    pub faults: u8,
    /// Trace lines kept (the last ones; a failure prints them).
    pub trace_lines: usize,
    /// Corrupt this node's replica of the state at this time (hash voting must find
    /// it): `(node, at_ms)`. Its state hash is then exempt from the cross-node check.
    pub corrupt: Option<(u32, u64)>,
    /// Rewrite this node's audit history at this time (its first record changes, as
    /// a node rewriting what it already published would): `(node, at_ms)`. Its next
    /// published root must fail its consistency proof on every node.
    pub rewrite_audit: Option<(u32, u64)>,
    /// The late-completion hook: at `at_ms` this node holds its next completion
    /// `hold_ms` before proposing it as it was: `(node, at_ms, hold_ms)`.
    pub late_completion: Option<(u32, u64, u64)>,
    /// Clients also reserve devices and submit Q/Φ jobs (else K tasks only).
    pub device_jobs: bool,
    /// Membership changes while the faults run: the operator admits `joins` new
    /// nodes (booted with the cluster's genesis, caught up from the log or a
    /// snapshot, promoted to voters; the first also observers when `observer`), then
    /// removes node 1, through signed `AddWorker` / `RemoveWorker` requests.
    pub joins: u32,
    /// The first joining node is an observer (follows, verifies, never votes nor runs).
    pub observer: bool,
    /// The cluster's task timeouts: [`TaskTimeouts::DEFAULT`] scaled by this / 1000.
    pub timeouts_per_mille: u64,
    /// Some tasks hang and some run long with an extension (see the module doc).
    pub hangs: bool,
    /// Clients cancel one accepted task in three.
    pub cancels: bool,
    /// With device jobs: the operator changes tenants' contract policy this many
    /// times (every second from 200 ms on, tenants in turn, a random priority each),
    /// so reservations preempt one another.
    pub policy_changes: u32,
    /// The operator sets this placement policy through the log (a signed
    /// `SetPlacementPolicy`) before anything else, and clients submit only once it is
    /// in force.
    pub placement: Option<xdv_cluster::PlacementKind>,
    /// This node's driver reports its cores busy with local work and
    /// [`LOADED_QUEUE`] tasks waiting in its run queues (its load heartbeats say so).
    pub loaded: Option<u32>,
}

/// Tasks a [`SimOptions::loaded`] node reports waiting in its run queues.
pub const LOADED_QUEUE: u64 = 32;

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: 3,
            fault_ms: 8_000,
            heal_ms: 40_000,
            requests: 24,
            clients: 2,
            max_task_ms: 200,
            faults: 2,
            trace_lines: TRACE_LINES,
            corrupt: None,
            rewrite_audit: None,
            late_completion: None,
            device_jobs: true,
            joins: 0,
            observer: false,
            timeouts_per_mille: 25,
            hangs: true,
            cancels: true,
            policy_changes: 4,
            placement: None,
            loaded: None,
        }
    }
}

/// What a seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub simulated_ms: u64,
    pub accepted: u64,
    pub completed: u64,
    pub crashes: u64,
    pub torn_writes: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub elections: u64,
    pub snapshots_restored: u64,
    /// `TasksCompleted` entries proposed (the most any one node proposed).
    pub completion_groups: u64,
    /// `AssignTasks` entries a leader proposed for more than one request (the most
    /// any one node proposed).
    pub submission_groups: u64,
    /// Submissions sent as a `RunBatch` (submit and await in one request) that were
    /// answered with their task's report.
    pub run_batches_answered: u64,
    /// Members seen marked down in some node's applied state (times, summed).
    pub node_downs: u64,
    /// Device jobs that ended, by outcome: executed, device-failed, unstable.
    pub device_executed: u64,
    pub device_failed: u64,
    pub device_unstable: u64,
    /// Reservations the log accepted / rejected.
    pub contracts_accepted: u64,
    pub contracts_rejected: u64,
    /// Device jobs that ran under a contract.
    pub contract_jobs: u64,
    /// Reservations the clients saw rejected for a conflict with a contract in force.
    pub contract_conflicts: u64,
    /// Contracts preempted (the final state's recently ended contracts).
    pub contracts_preempted: u64,
    /// Policy changes the operator saw applied.
    pub policies_set: u64,
    /// Contract decisions (refusals, ends, contracts in force) found identical on
    /// every node at the end, summed over the nodes compared.
    pub contract_decisions_agreed: u64,
    /// Hash-voting alarms raised (summed over nodes).
    pub hash_alarms: u64,
    /// Audit-root alarms raised (summed over nodes): a published root that does not
    /// extend the node's last one.
    pub root_alarms: u64,
    /// Audit roots the log took (the most any node counted).
    pub roots_published: u64,
    /// Membership changes the operator saw done (admitted, removed).
    pub members_added: u64,
    pub members_removed: u64,
    /// Membership requests refused because another change was in progress.
    pub membership_busy: u64,
    /// The final Raft configuration (a member's view): voters and learners.
    pub voters: Vec<u32>,
    pub learners: Vec<u32>,
    /// Nodes quarantined in the final state.
    pub quarantined: Vec<u32>,
    pub final_hash: Option<Hash32>,
    /// The last `trace_lines` trace lines.
    pub trace: Vec<String>,
    /// Attempts the cluster timed out, tasks that ended `Timeout`, tasks cancelled
    /// (from the final state's counters), stale completions refused.
    pub timed_out: u64,
    pub ended_timeout: u64,
    pub cancelled: u64,
    pub stale_completions: u64,
    /// Running attempts the nodes told their workers to stop (summed).
    pub stopped: u64,
    /// Extensions granted (final state).
    pub extensions: u64,
    /// RTT samples the nodes took into their Vivaldi coordinates, and members they
    /// suspected and found dead (summed over the nodes running at the end).
    pub rtt_samples: u64,
    pub peers_suspected: u64,
    pub peers_dead: u64,
    /// The largest local coordinate error at the end (ppm).
    pub worst_error_ppm: u64,
    /// The operator's placement policy was applied ([`SimOptions::placement`]).
    pub placement_set: bool,
    /// Task attempts each node's workers started, by node id.
    pub started_on: BTreeMap<u32, u64>,
}

/// The simulated nodes' Raft region: bytes whose writes can be torn.
pub type SimRegion = crate::durable::TearRegion;

#[derive(Clone, Debug)]
enum Msg {
    Raft(Vec<u8>),
    Forward(Vec<u8>),
    Request {
        generation: u64,
        bytes: Vec<u8>,
    },
    Reply {
        generation: u64,
        bytes: Vec<u8>,
    },
    /// The transport's liveness ping between members: the sender's send time, echoed
    /// in the pong (with the answering node's coordinate), so the sender measures the
    /// RTT. (The kernel's ping also carries the sender's coordinate; a node takes a
    /// peer's coordinate only with an RTT sample, so the simulator leaves it out.)
    Ping {
        sent_ms: u64,
    },
    Pong {
        sent_ms: u64,
        coordinate: Vec<u8>,
    },
}

struct SimNode {
    node: Option<Node<SimRegion>>,
    /// The region of a crashed node, until it restarts.
    parked: Option<SimRegion>,
    restart_at_ms: u64,
    skew_ms: u64,
    /// Handles inputs only every this many ms (1 = every step).
    slow_every: u64,
    inbox: VecDeque<(u32, Msg)>,
    /// Tasks running on this node's workers: finish time → completion.
    workers: BTreeMap<(u64, TaskId, u32), Completion>,
    /// Hung tasks on this node's workers (never finish unless stopped).
    hung: alloc::collections::BTreeSet<(TaskId, u32)>,
    audit_records: u64,
    audit_head: Hash32,
    /// Every record's hash, the Merkle accumulator over them, and the accumulators at
    /// the sizes offered for publication (the driver's proofs, as the kernel's log).
    audit_hashes: Vec<Hash32>,
    audit_acc: xdv_audit::merkle::MerkleAccumulator,
    audit_snaps: BTreeMap<u64, xdv_audit::merkle::MerkleAccumulator>,
    /// The node's accelerator hardware (outlives the node's crashes) and the node's
    /// driver pool over it (rebuilt at restart).
    device: Option<SimDevice>,
    pool: Option<AccelPool<SimPort>>,
    /// Not in the cluster: a node not yet admitted, or one removed (never restarted).
    outside: bool,
}

/// What the simulated operator does to membership, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberOp {
    Join {
        node: u32,
        observer: bool,
    },
    Remove {
        node: u32,
    },
    /// Not membership, but the same console: the cluster's placement policy.
    Placement(xdv_cluster::PlacementKind),
}

/// The operator's membership request in flight: (op, seq, generation, sent at).
type OpInflight = (MemberOp, u64, u64, u64);

/// The simulated operator's network id (a client).
const OPERATOR_ID: u32 = CLIENT_BASE + 900;
/// The operator's second console, which sets tenants' policies (its own requests in
/// flight, the same key and sequence numbers as the membership console).
const POLICY_ID: u32 = CLIENT_BASE + 901;

/// The policy change in flight: (tenant, priority, seq, generation, sent at).
type PolicyInflight = (TenantId, Priority, u64, u64, u64);

/// A simulated accelerator: the device side of the ring protocol over plain memory.
struct SimDevice {
    kind: Kind,
    mem: Rc<MemWindow>,
    side: DeviceSide,
    /// Jobs taken: finish time → job.
    jobs: BTreeMap<(u64, u32), Taken>,
    hung: bool,
    unstable_next: bool,
}

/// The node's view of a simulated device: the same window; the device looks at its
/// ring every simulated millisecond, so the doorbell has nothing to do.
pub struct SimPort(Rc<MemWindow>);

impl Port for SimPort {
    fn mem(&self) -> &dyn DeviceMemory {
        &*self.0
    }
    fn ring(&self) {}
}

impl SimDevice {
    fn new(kind: Kind) -> SimDevice {
        let mem = Rc::new(MemWindow::new(regs::STD_WINDOW_BYTES));
        let (units, slots) = match kind {
            Kind::Q => (16, 2),
            Kind::Phi => (64, 4),
        };
        let side = DeviceSide::new(&*mem, kind, units, slots, units / slots, 0);
        SimDevice {
            kind,
            mem,
            side,
            jobs: BTreeMap::new(),
            hung: false,
            unstable_next: false,
        }
    }

    /// One millisecond of the device: take new commands, finish due jobs with a
    /// result derived from the job and its seed.
    fn step(&mut self, now_ms: u64, rng: &mut SplitMix64) {
        if self.hung {
            return;
        }
        let (taken, _) = self.side.take(&*self.mem);
        for t in taken {
            let took = 1 + rng.below(40);
            self.jobs.insert((now_ms + took, t.sub.cmd), t);
        }
        let due: Vec<(u64, u32)> = self
            .jobs
            .range(..(now_ms + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let Some(t) = self.jobs.remove(&k) else {
                continue;
            };
            let mut h = Sha256::new();
            h.update(&t.job);
            h.update(t.sub.seed.to_le_bytes());
            let result = h.finalize()[..12].to_vec();
            let status = if t.sub.opcode == Opcode::Run && self.unstable_next {
                self.unstable_next = false;
                match self.kind {
                    Kind::Phi => CqStatus::Unstable,
                    Kind::Q => CqStatus::DeviceFault,
                }
            } else {
                CqStatus::Ok
            };
            self.side.complete(
                &*self.mem,
                &t.sub,
                status,
                &result,
                0,
                k.0 - now_ms.min(k.0),
            );
        }
    }
}

struct Client {
    id: u32,
    seed: [u8; 32],
    tenant: TenantId,
    next_seq: u64,
    /// The request in flight: (seq, generation, sent at).
    inflight: Option<(u64, u64, u64)>,
    generation: u64,
    /// The client's latest accepted contract (its Q jobs may run under it).
    contract: Option<u64>,
    /// Accepted tasks to cancel, and the cancellation in flight: (task, seq,
    /// generation, sent at).
    to_cancel: VecDeque<TaskId>,
    cancel_inflight: Option<(TaskId, u64, u64, u64)>,
}

/// The simulator. See the module documentation.
pub struct Sim {
    opts: SimOptions,
    rng: SplitMix64,
    now_ms: u64,
    net: PacketSim<Msg>,
    nodes: Vec<SimNode>,
    configs: Vec<NodeConfig>,
    clients: Vec<Client>,
    cluster: u32,
    submitted: u64,
    /// (tenant, seq) → task, as the clients were told.
    accepted: BTreeMap<(TenantId, u64), TaskId>,
    leaders: BTreeMap<u64, NodeId>,
    committed_terms: BTreeMap<u64, u64>,
    hashes: BTreeMap<u64, Hash32>,
    completed: BTreeMap<TaskId, (NodeId, u32, Hash32)>,
    /// Accepted contracts' targets (what the clients were told).
    contract_targets: BTreeMap<u64, NodeId>,
    checked_commit: Vec<u64>,
    trace: VecDeque<String>,
    report: SimReport,
    operator_seed: [u8; 32],
    operator_seq: u64,
    member_ops: VecDeque<MemberOp>,
    op_inflight: Option<OpInflight>,
    /// Policy changes still to make, and the one in flight.
    policies_left: u32,
    policy_inflight: Option<PolicyInflight>,
    /// The policy console's own PRNG (priorities, which member it asks), so the plan
    /// leaves the main stream as it was.
    policy_rng: SplitMix64,
    /// The highest attempt any node's applied state ever assigned each task.
    max_attempt: BTreeMap<TaskId, u32>,
    /// Tasks whose cancellation a client saw answered `Cancelled`.
    cancelled: alloc::collections::BTreeSet<TaskId>,
}

fn seed_bytes(rng: &mut SplitMix64) -> [u8; 32] {
    let mut s = [0u8; 32];
    for chunk in s.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    s
}

/// A device job of `domain` for request `seq`: a Bell circuit or a small envelope,
/// in their wire forms (the state machine decodes them before accepting the task).
/// Whether a client's request `seq` is a `RunBatch` of one: every third plain task
/// (never one the client later cancels, `seq % 3 == 0`; with device jobs, plain
/// tasks are the even numbers).
fn is_run_batch(device_jobs: bool, seq: u64) -> bool {
    seq % 3 == 2 && (!device_jobs || seq.is_multiple_of(2))
}

fn sim_job(domain: Domain, seq: u64) -> Vec<u8> {
    use xdv_accel::job::{Circuit, Envelope};
    match domain {
        Domain::Phi => Envelope {
            oscillators: 4,
            frequencies_milli: vec![1000, 1010, 990, 1005],
            coupling_milli: 2000 + (seq % 7) as u32,
            amplitude_milli: 1000,
            phases_milli: vec![0, 100, 200, 300],
            steps: 100,
            dt_micros: 1000,
            windows: 4,
            min_stability_milli: 500,
        }
        .encode(),
        _ => Circuit::bell(100 + (seq % 100) as u32).encode(),
    }
}

/// The Raft and timing parameters of simulated nodes: the kernel's, with snapshots
/// every 30 entries so restarts and lagging nodes go through snapshot installs.
fn sim_config(identity: Identity, timeouts_per_mille: u64) -> NodeConfig {
    let mut c = NodeConfig::new(identity, 2);
    // Requesting nodes sign contracts under this capability.
    c.capabilities = vec![xdv_types::CapabilityId(1)];
    c.raft.snapshot_threshold = 30;
    c.raft.log_compaction_threshold = 45;
    c.raft.snapshot_chunk_bytes = 4096;
    c.state.max_retained_tasks = 256;
    c.state.timeouts = TaskTimeouts::DEFAULT.scaled(timeouts_per_mille);
    c.timing = Timing {
        publish_ms: 2_000,
        // Progress reaches the log well within the scaled stuck threshold.
        progress_report_ms: 1_000,
        ..Timing::default()
    };
    c
}

impl Sim {
    pub fn new(opts: SimOptions) -> Sim {
        let mut rng = SplitMix64(opts.seed);
        let cluster = 1 + (rng.next_u64() % 1000) as u32;
        let total = opts.nodes + opts.joins;
        let seeds: Vec<[u8; 32]> = (0..total).map(|_| seed_bytes(&mut rng)).collect();
        let peers: Vec<(u32, [u8; 32])> = seeds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32 + 1, xdv_cluster::public_key(s)))
            .collect();
        let clients: Vec<Client> = (0..opts.clients)
            .map(|c| Client {
                id: CLIENT_BASE + c,
                seed: seed_bytes(&mut rng),
                tenant: TenantId(c + 1),
                next_seq: 1,
                inflight: None,
                generation: 0,
                contract: None,
                to_cancel: VecDeque::new(),
                cancel_inflight: None,
            })
            .collect();
        // The operator's key from its own stream: the runs without membership changes
        // stay what they were.
        let operator_seed = seed_bytes(&mut SplitMix64(opts.seed ^ 0x6f70_6572_6174_6f72));
        let operator_key = xdv_cluster::public_key(&operator_seed);
        let tenants: Vec<(TenantId, [u8; 32])> = clients
            .iter()
            .map(|c| (c.tenant, xdv_cluster::public_key(&c.seed)))
            .collect();
        let configs: Vec<NodeConfig> = seeds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // The first nodes were provisioned with each other; a joining node
                // with everyone up to itself.
                let known = (i as u32 + 1).max(opts.nodes) as usize;
                let mut c = sim_config(
                    Identity {
                        node: i as u32 + 1,
                        cluster,
                        seed: Some(*s),
                        peers: peers[..known].to_vec(),
                        tenants: tenants.clone(),
                        operator_key,
                    },
                    opts.timeouts_per_mille,
                );
                // A joining node starts from the cluster's genesis.
                if i as u32 >= opts.nodes {
                    c.genesis_members = Some((1..=opts.nodes).collect());
                }
                c
            })
            .collect();
        let nodes: Vec<SimNode> = configs
            .iter()
            .map(|c| {
                let joiner = c.genesis_members.is_some();
                let region = SimRegion::new(vec![0; SIM_REGION_BYTES]);
                let (node, parked) = if joiner {
                    (None, Some(region))
                } else {
                    (Some(Node::new(c.clone(), region, 0)), None)
                };
                SimNode {
                    node,
                    parked,
                    outside: joiner,
                    restart_at_ms: if joiner { u64::MAX } else { 0 },
                    skew_ms: 0,
                    slow_every: 1,
                    inbox: VecDeque::new(),
                    workers: BTreeMap::new(),
                    hung: alloc::collections::BTreeSet::new(),
                    audit_records: 0,
                    audit_head: Hash32::ZERO,
                    audit_hashes: Vec::new(),
                    audit_acc: xdv_audit::merkle::MerkleAccumulator::new(),
                    audit_snaps: BTreeMap::new(),
                    device: None,
                    pool: None,
                }
            })
            .collect();
        let net_seed = rng.next_u64();
        let mut member_ops: VecDeque<MemberOp> = (0..opts.joins)
            .map(|j| MemberOp::Join {
                node: opts.nodes + j + 1,
                observer: opts.observer && j == 0,
            })
            .collect();
        if opts.joins > 0 {
            member_ops.push_back(MemberOp::Remove { node: 1 });
        }
        if let Some(p) = opts.placement {
            member_ops.push_front(MemberOp::Placement(p));
        }
        let mut nodes = nodes;
        for (i, kind) in [(1usize, Kind::Q), (2, Kind::Phi)] {
            if let Some(n) = nodes.get_mut(i) {
                let dev = SimDevice::new(kind);
                let mut pool = AccelPool::new(NodeId(i as u32 + 1));
                pool.add(
                    alloc::format!("sim-{}", kind.name()),
                    SimPort(dev.mem.clone()),
                    0,
                );
                n.device = Some(dev);
                n.pool = Some(pool);
            }
        }
        Sim {
            net: PacketSim::new(net_seed, NetFaults::none()),
            checked_commit: vec![0; total as usize],
            operator_seed,
            operator_seq: 0,
            member_ops,
            op_inflight: None,
            policies_left: if opts.device_jobs {
                opts.policy_changes
            } else {
                0
            },
            policy_inflight: None,
            policy_rng: SplitMix64(opts.seed ^ 0x706f_6c69_6379),
            opts,
            rng,
            now_ms: 0,
            nodes,
            configs,
            clients,
            cluster,
            submitted: 0,
            accepted: BTreeMap::new(),
            leaders: BTreeMap::new(),
            committed_terms: BTreeMap::new(),
            hashes: BTreeMap::new(),
            completed: BTreeMap::new(),
            contract_targets: BTreeMap::new(),
            trace: VecDeque::new(),
            report: SimReport::default(),
            max_attempt: BTreeMap::new(),
            cancelled: alloc::collections::BTreeSet::new(),
        }
    }

    fn trace(&mut self, line: String) {
        if self.trace.len() >= self.opts.trace_lines.max(1) {
            self.trace.pop_front();
        }
        self.trace
            .push_back(alloc::format!("[{:>6} ms] {line}", self.now_ms));
    }

    fn fail(&self, why: String) -> String {
        let mut s = alloc::format!(
            "seed {} failed at {} ms: {why}\n-- last {} trace lines --\n",
            self.opts.seed,
            self.now_ms,
            self.trace.len()
        );
        for l in &self.trace {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Runs the seed: faults, then healing until converged. `Err` is the trace.
    pub fn run(mut self) -> Result<SimReport, String> {
        if self.opts.faults > 0 {
            let f = NetFaults {
                loss_ppm: 20_000,
                dup_ppm: 10_000,
                min_delay_ms: 1,
                max_delay_ms: 8,
                ..NetFaults::none()
            };
            self.net.set_faults(f);
        }
        while self.now_ms < self.opts.fault_ms {
            self.step(true)?;
        }
        self.heal();
        let deadline = self.now_ms + self.opts.heal_ms;
        while self.now_ms < deadline {
            self.step(false)?;
            if self.now_ms.is_multiple_of(100) && self.converged() {
                self.report.simulated_ms = self.now_ms;
                self.report.accepted = self.accepted.len() as u64;
                self.report.completed = self.completed.len() as u64;
                let first = self.nodes.iter().find_map(|n| n.node.as_ref());
                self.report.final_hash = first.map(|n| n.state().hash());
                if let Some(conf) = first.and_then(|n| n.raft()).map(|r| r.status().conf) {
                    self.report.voters = conf.voters.iter().map(|v| v.0).collect();
                    self.report.learners = conf.learners.iter().map(|v| v.0).collect();
                }
                self.report.quarantined = first
                    .map(|n| {
                        n.state()
                            .data()
                            .nodes
                            .iter()
                            .filter(|(_, r)| r.quarantined)
                            .map(|(id, _)| id.0)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(n) = first {
                    let c = &n.state().data().counters;
                    self.report.timed_out = c.tasks_timed_out;
                    self.report.cancelled = c.tasks_cancelled;
                    self.report.stale_completions = c.stale_completions;
                    self.report.extensions = c.extensions_granted;
                    self.report.ended_timeout = n
                        .state()
                        .data()
                        .tasks
                        .values()
                        .filter(|t| {
                            matches!(
                                t.status,
                                TaskStatus::Completed {
                                    outcome: Outcome::Timeout(_),
                                    ..
                                }
                            )
                        })
                        .count() as u64;
                }
                for n in self.nodes.iter().filter_map(|n| n.node.as_ref()) {
                    let h = n.health_counters();
                    self.report.rtt_samples += h.rtt_samples;
                    self.report.peers_suspected += h.suspected;
                    self.report.peers_dead += h.dead;
                    let e = n.peer_health().error_ppm;
                    self.report.worst_error_ppm = self.report.worst_error_ppm.max(e);
                }
                self.contract_decisions()?;
                self.report.trace = self.trace.iter().cloned().collect();
                return Ok(self.report);
            }
        }
        let why = self.why_not_converged();
        Err(self.fail(alloc::format!("no convergence after healing: {why}")))
    }

    fn heal(&mut self) {
        self.trace("faults stop: heal the network, restart every node".into());
        self.net.heal_all();
        self.net.set_faults(NetFaults::none());
        for i in 0..self.nodes.len() {
            self.nodes[i].slow_every = 1;
            if let Some(d) = self.nodes[i].device.as_mut() {
                d.side.recover();
                d.hung = false;
            }
            // A torn write armed during the faults does not fire after them.
            if let Some(r) = self.nodes[i].node.as_mut().and_then(|n| n.region_mut()) {
                r.disarm();
            }
            if self.nodes[i].node.is_none() && !self.nodes[i].outside {
                self.nodes[i].restart_at_ms = self.now_ms;
            }
        }
    }

    /// One simulated millisecond.
    pub fn step(&mut self, faulty: bool) -> Result<(), String> {
        self.now_ms += 1;
        if let Some((n, at)) = self.opts.corrupt
            && at == self.now_ms
            && let Some(node) = self
                .nodes
                .get_mut(n as usize - 1)
                .and_then(|x| x.node.as_mut())
        {
            node.corrupt_state_for_test();
            self.trace(alloc::format!("n{n}: state replica corrupted (test fault)"));
        }
        if let Some((n, at)) = self.opts.rewrite_audit
            && at == self.now_ms
        {
            self.rewrite_audit(n as usize - 1);
            self.trace(alloc::format!("n{n}: audit history rewritten (test fault)"));
        }
        if let Some((n, at, hold)) = self.opts.late_completion
            && at == self.now_ms
            && let Some(node) = self
                .nodes
                .get_mut(n as usize - 1)
                .and_then(|x| x.node.as_mut())
        {
            node.delay_next_completion_for_test(hold);
            self.trace(alloc::format!(
                "n{n}: its next completion is held {hold} ms (test fault)"
            ));
        }
        if faulty && self.opts.faults > 0 {
            self.faults();
        }
        self.restarts()?;
        self.clients_step();
        self.operator_step();
        self.policy_step();
        for d in self.net.deliver(self.now_ms) {
            if d.to == OPERATOR_ID {
                self.operator_reply(d.msg);
            } else if d.to == POLICY_ID {
                self.policy_reply(d.msg);
            } else if d.to >= CLIENT_BASE {
                self.client_reply(d.to, d.msg);
            } else if let Some(n) = self.nodes.get_mut(d.to as usize - 1)
                && n.node.is_some()
            {
                n.inbox.push_back((d.from, d.msg));
            }
        }
        for i in 0..self.nodes.len() {
            self.node_step(i);
        }
        self.invariants().map_err(|e| self.fail(e))
    }

    fn node_step(&mut self, i: usize) {
        let now = self.now_ms;
        let n = &mut self.nodes[i];
        let Some(node) = n.node.as_mut() else { return };
        if !now.is_multiple_of(n.slow_every) {
            return;
        }
        let local = now + n.skew_ms;
        let mut sends: Vec<(u32, Msg)> = Vec::new();
        node.set_audit_head(n.audit_records, n.audit_head);
        // The driver's run queues: the workers' tasks run at once; a loaded node's
        // cores are busy with local work and tasks wait behind it.
        let loaded = self.opts.loaded == Some(i as u32 + 1);
        node.set_local_metrics(crate::metrics::LocalMetrics {
            tasks_running: n.workers.len() as u64 + if loaded { 2 } else { 0 },
            tasks_queued: if loaded { LOADED_QUEUE } else { 0 },
            ..Default::default()
        });
        if node.audit_root_due(local) {
            self.offer_audit_root(i);
        }
        let n = &mut self.nodes[i];
        let Some(node) = n.node.as_mut() else { return };
        // One step is one iteration of the kernel's loop: group commit as there.
        node.hold();
        node.tick(local);
        while let Some((from, msg)) = n.inbox.pop_front() {
            match msg {
                Msg::Raft(b) => {
                    node.on_peer_heard(NodeId(from));
                    node.on_peer_raft(NodeId(from), &b);
                }
                Msg::Forward(b) => {
                    node.on_peer_heard(NodeId(from));
                    node.on_peer_forward(NodeId(from), &b);
                }
                Msg::Request { generation, bytes } => {
                    let conn = ClientConn {
                        slot: from,
                        generation,
                    };
                    node.on_client(conn, &bytes);
                }
                Msg::Ping { sent_ms, .. } => {
                    node.on_peer_heard(NodeId(from));
                    let coordinate = node.coordinate_payload();
                    sends.push((
                        from,
                        Msg::Pong {
                            sent_ms,
                            coordinate,
                        },
                    ));
                }
                Msg::Pong {
                    sent_ms,
                    coordinate,
                } => {
                    // The driver's measurement: ms resolution here, 1 ms at least.
                    let rtt_us = now.saturating_sub(sent_ms).max(1) * 1000;
                    node.on_peer_rtt(NodeId(from), rtt_us, &coordinate);
                }
                Msg::Reply { .. } => {}
            }
        }
        if (now + i as u64 * 37).is_multiple_of(PING_EVERY_MS) {
            for to in 1..=self.configs.len() as u32 {
                if to != i as u32 + 1 && node.state().data().nodes.contains_key(&NodeId(to)) {
                    sends.push((to, Msg::Ping { sent_ms: now }));
                }
            }
        }
        let due: Vec<(u64, TaskId, u32)> = n
            .workers
            .range(..(now + 1, TaskId(0), 0))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(c) = n.workers.remove(&k) {
                node.on_task_done(c);
            }
        }
        if now.is_multiple_of(PROGRESS_EVERY_MS) {
            for &(_, task, attempt) in n.workers.keys() {
                node.on_task_progress(task, attempt);
            }
        }
        if let Some(d) = n.device.as_mut() {
            d.step(now, &mut self.rng);
        }
        if let Some(pool) = n.pool.as_mut() {
            for c in pool.poll(local) {
                node.on_task_done(c);
            }
            let (q, phi) = pool.offer();
            node.set_accel_offer(q, phi);
        }
        node.release();
        for (to, m) in sends {
            self.net.send(now, i as u32 + 1, to, m);
        }
        self.perform(i);
    }

    /// Performs node `i`'s outbox, unless a torn write crashed it meanwhile.
    fn perform(&mut self, i: usize) {
        let me = i as u32 + 1;
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let out = node.drain();
        let torn = node.raft().is_some_and(|r| r.storage().region().crashed());
        if torn {
            self.report.torn_writes += 1;
            self.trace(alloc::format!("n{me}: torn durable write, node crashes"));
            self.crash(i);
            return;
        }
        for line in out.notes {
            if line.starts_with("ALARM: audit root") {
                self.report.root_alarms += 1;
            } else if line.starts_with("ALARM") {
                self.report.hash_alarms += 1;
            }
            self.trace(alloc::format!("n{me}: {line}"));
        }
        for (to, b) in out.raft {
            self.net.send(self.now_ms, me, to.0, Msg::Raft(b));
        }
        for (to, b) in out.forwards {
            self.net.send(self.now_ms, me, to.0, Msg::Forward(b));
        }
        for (conn, bytes) in out.replies {
            let generation = conn.generation;
            self.net
                .send(self.now_ms, me, conn.slot, Msg::Reply { generation, bytes });
        }
        for body in out.audit {
            self.append_audit(i, &body);
        }
        for (task, attempt) in out.stop {
            self.stop_task(i, task, attempt);
        }
        let mut audit = Vec::new();
        for run in out.run {
            if run.spec.domain == Domain::K {
                self.start_task(i, run);
                continue;
            }
            self.trace(alloc::format!(
                "n{me}: device job {} #{}",
                run.task,
                run.attempt
            ));
            let n = &mut self.nodes[i];
            let done = match n.pool.as_mut() {
                Some(pool) => pool.run(run),
                None => None,
            };
            if let (Some(c), Some(node)) = (done, n.node.as_mut()) {
                node.on_task_done(c);
            }
        }
        if let Some(pool) = self.nodes[i].pool.as_mut() {
            let (records, notes) = pool.drain();
            audit = records;
            for line in notes {
                self.trace(alloc::format!("n{me}: {line}"));
            }
        }
        for body in audit {
            self.append_audit(i, &body);
        }
    }

    fn append_audit(&mut self, i: usize, body: &xdv_audit::RecordBody) {
        let n = &mut self.nodes[i];
        let bytes = postcard::to_allocvec(body).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(n.audit_head.0);
        h.update(&bytes);
        n.audit_head = Hash32(h.finalize().into());
        n.audit_records += 1;
        n.audit_hashes.push(n.audit_head);
        n.audit_acc.push(&n.audit_head);
    }

    /// The audit root of node `i` now, with the proof from the size the cluster holds
    /// (as the kernel's driver does with its audit log).
    fn offer_audit_root(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(node) = n.node.as_mut() else { return };
        let records = n.audit_records;
        n.audit_snaps.insert(records, n.audit_acc.clone());
        let (from, proof) = match node.audit_published() {
            Some(m) if m > 0 && m <= records => {
                n.audit_snaps.retain(|&k, _| k >= m);
                let proof = match n.audit_snaps.get(&m) {
                    Some(acc) => acc.consistency_proof_to(&n.audit_hashes[m as usize..]),
                    None => xdv_audit::merkle::consistency_proof(
                        &n.audit_hashes,
                        m as usize,
                        records as usize,
                    ),
                };
                (m, proof.unwrap_or_default())
            }
            Some(m) => (m, Vec::new()),
            None => (0, Vec::new()),
        };
        node.set_audit_root(records, n.audit_acc.root(), from, proof);
    }

    /// The rewrite fault: node `i`'s first record is replaced (its chain and tree
    /// computed again), as if it rewrote history it already published.
    fn rewrite_audit(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(first) = n.audit_hashes.first_mut() {
            first.0[0] ^= 0xFF;
        }
        n.audit_acc = xdv_audit::merkle::MerkleAccumulator::new();
        for h in &n.audit_hashes {
            n.audit_acc.push(h);
        }
        n.audit_snaps.clear();
    }

    /// The node asked its worker to stop `(task, attempt)` (cancelled, timed out,
    /// re-placed): the worker drops it and reports it stopped (the node drops that).
    fn stop_task(&mut self, i: usize, task: TaskId, attempt: u32) {
        self.report.stopped += 1;
        let n = &mut self.nodes[i];
        let running = n.hung.remove(&(task, attempt))
            || n.workers
                .extract_if(.., |k, _| k.1 == task && k.2 == attempt)
                .count()
                > 0;
        self.trace(alloc::format!(
            "n{}: stops {task} #{attempt}{}",
            i + 1,
            if running {
                ""
            } else {
                " (device job: finishes)"
            }
        ));
        if !running {
            return;
        }
        if let Some(node) = self.nodes[i].node.as_mut() {
            node.on_task_done(Completion {
                task,
                node: NodeId(i as u32 + 1),
                attempt,
                outcome: Outcome::Trapped("stopped".into()),
                ticks: 0,
                output_hash: Hash32::ZERO,
                output: Vec::new(),
                log: Vec::new(),
            });
        }
    }

    fn start_task(&mut self, i: usize, run: RunTask) {
        *self.report.started_on.entry(i as u32 + 1).or_default() += 1;
        let seq = run
            .spec
            .input
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        let how = behaviour(seq, self.opts.hangs);
        if how == Behaviour::Hang {
            self.trace(alloc::format!(
                "n{}: runs {} #{} and hangs",
                i + 1,
                run.task,
                run.attempt
            ));
            self.nodes[i].hung.insert((run.task, run.attempt));
            return;
        }
        let took = match how {
            Behaviour::Long => 4_000 + self.rng.below(2_000),
            _ => 1 + self.rng.below(self.opts.max_task_ms.max(1)),
        };
        if how == Behaviour::Long
            && let Some(node) = self.nodes[i].node.as_mut()
        {
            node.request_extension(run.task, run.attempt, 2_000);
        }
        let mut h = Sha256::new();
        h.update(run.task.0.to_le_bytes());
        h.update(&run.spec.input);
        let output_hash = Hash32(h.finalize().into());
        let c = Completion {
            task: run.task,
            node: NodeId(i as u32 + 1),
            attempt: run.attempt,
            outcome: Outcome::Executed,
            ticks: took,
            output_hash,
            output: output_hash.0[..8].to_vec(),
            log: Vec::new(),
        };
        self.trace(alloc::format!(
            "n{}: runs {} #{} for {took} ms",
            i + 1,
            run.task,
            run.attempt
        ));
        self.nodes[i]
            .workers
            .insert((self.now_ms + took, run.task, run.attempt), c);
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(node) = n.node.take() else { return };
        self.report.crashes += 1;
        let region = node.into_region();
        n.parked = region.map(|mut r| {
            r.disarm();
            r
        });
        n.workers.clear();
        n.hung.clear();
        n.inbox.clear();
        n.pool = None;
        let down = 200 + self.rng.below(3_000);
        n.restart_at_ms = self.now_ms + down;
        self.net.drop_all_to(i as u32 + 1);
        self.trace(alloc::format!("n{}: down for {down} ms", i + 1));
    }

    fn restarts(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.node.is_some() || n.outside || self.now_ms < n.restart_at_ms {
                continue;
            }
            let Some(region) = self.nodes[i].parked.take() else {
                return Err(self.fail(alloc::format!("n{} lost its region", i + 1)));
            };
            let skew = if self.opts.faults >= 2 {
                self.rng.below(50)
            } else {
                0
            };
            let node = Node::new(self.configs[i].clone(), region, self.now_ms + skew);
            if let Some(h) = node.halted() {
                return Err(self.fail(alloc::format!("n{} restarted halted: {h}", i + 1)));
            }
            self.report.restarts += 1;
            if let Some(d) = self.nodes[i].device.as_ref() {
                let mut pool = AccelPool::new(NodeId(i as u32 + 1));
                let name = alloc::format!("sim-{}", d.kind.name());
                pool.add(name, SimPort(d.mem.clone()), self.now_ms + skew);
                self.nodes[i].pool = Some(pool);
            }
            self.nodes[i].node = Some(node);
            self.nodes[i].skew_ms = skew;
            self.trace(alloc::format!("n{}: restarts from its region", i + 1));
            self.perform(i);
        }
        Ok(())
    }

    /// The nodes in the cluster now (admitted and not removed).
    fn members(&self) -> Vec<u32> {
        (1..=self.nodes.len() as u32)
            .filter(|&n| !self.nodes[n as usize - 1].outside)
            .collect()
    }

    /// A random member's id.
    fn any_member(&mut self) -> u32 {
        let ids = self.members();
        ids[self.rng.below(ids.len() as u64) as usize]
    }

    fn faults(&mut self) {
        let ids = self.members();
        let r = self.rng.below(10_000);
        match r {
            0..=9 if self.opts.faults >= 2 => {
                let i = self.any_member() as usize - 1;
                if self.nodes[i].node.is_some() {
                    if self.rng.chance_pct(50) {
                        self.trace(alloc::format!("n{}: crash", i + 1));
                        self.crash(i);
                    } else {
                        // Arm a torn write: a prefix of the k-th next write lands.
                        let k = self.rng.below(12);
                        let keep = self.rng.below(80) as usize;
                        self.trace(alloc::format!(
                            "n{}: write {k} from now tears after {keep} bytes",
                            i + 1
                        ));
                        self.arm_tear(i, k, keep);
                    }
                }
            }
            10..=14 => {
                self.report.partitions += 1;
                if self.rng.chance_pct(50) {
                    let sides = self.net.partition_random(&mut self.rng, &ids);
                    self.trace(alloc::format!("partition {sides:?}"));
                } else {
                    let a = self.any_member();
                    let b = self.any_member();
                    if a != b {
                        self.net.partition_one_way(&[a], &[b]);
                        self.trace(alloc::format!("one-way cut {a} -> {b}"));
                    }
                }
            }
            15..=24 => {
                self.net.heal_all();
                self.trace("heal".into());
            }
            25..=27 => {
                let a = self.any_member();
                let b = self.any_member();
                let until = self.now_ms + 200 + self.rng.below(1_000);
                self.net.clog(a, b, until, 100);
                self.trace(alloc::format!("clog {a} -> {b} until {until}"));
            }
            30..=34 if self.opts.faults >= 2 => self.device_fault(),
            28..=29 if self.opts.faults >= 2 => {
                let i = self.any_member() as usize - 1;
                let every = 1 + self.rng.below(20);
                self.nodes[i].slow_every = every;
                self.trace(alloc::format!("n{} slow: every {every} ms", i + 1));
            }
            _ => {}
        }
    }

    /// A fault on one node's device: hardware failure (running jobs abort), a hang
    /// (the watchdog must notice), a forced instability, or recovery.
    fn device_fault(&mut self) {
        let with: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].device.is_some())
            .collect();
        if with.is_empty() {
            return;
        }
        let i = with[self.rng.below(with.len() as u64) as usize];
        let what = self.rng.below(4);
        let Some(d) = self.nodes[i].device.as_mut() else {
            return;
        };
        let line = match what {
            0 => {
                d.jobs.clear();
                let _ = d.side.break_hardware(&*d.mem);
                "hardware fails"
            }
            1 => {
                d.hung = true;
                "hangs"
            }
            2 => {
                d.unstable_next = true;
                "next job unstable"
            }
            _ => {
                d.side.recover();
                d.hung = false;
                "recovers"
            }
        };
        self.trace(alloc::format!("n{}: device {line}", i + 1));
    }

    fn arm_tear(&mut self, i: usize, k: u64, keep: usize) {
        if let Some(r) = self.nodes[i].node.as_mut().and_then(|n| n.region_mut()) {
            r.arm(k, keep);
        }
    }

    /// A client cancels one of its accepted tasks (a new sequence number each try:
    /// cancellation is idempotent in the log, a second one is refused as finished).
    fn cancel_step(&mut self, c: usize) {
        let now = self.now_ms;
        let cl = &self.clients[c];
        let task = match cl.cancel_inflight {
            Some((task, _, _, at)) if now.saturating_sub(at) >= CLIENT_RETRY_MS => task,
            Some(_) => return,
            None => match cl.to_cancel.front() {
                Some(&t) if self.rng.chance_pct(5) => t,
                _ => return,
            },
        };
        let cl = &mut self.clients[c];
        let seq = cl.next_seq;
        cl.next_seq += 1;
        cl.generation += 1;
        let generation = cl.generation;
        cl.cancel_inflight = Some((task, seq, generation, now));
        let req = SignedRequest::sign(
            self.cluster,
            Principal::Tenant(cl.tenant),
            seq,
            Request::Cancel { task },
            &cl.seed,
        );
        let from = cl.id;
        let to = self.any_member();
        self.net.send(
            now,
            from,
            to,
            Msg::Request {
                generation,
                bytes: mgmt::encode(&req),
            },
        );
    }

    /// The answer to a client's cancellation: decided (cancelled, or already over),
    /// or to be tried again.
    fn cancel_reply(&mut self, c: usize, reply: Result<Response, Denied>) {
        let Some((task, _, _, _)) = self.clients[c].cancel_inflight else {
            return;
        };
        let tenant = self.clients[c].tenant;
        let decided = match &reply {
            Ok(Response::Cancelled { task: t, .. }) if *t == task => {
                self.cancelled.insert(task);
                true
            }
            Ok(Response::Refused(Denied::TaskFinished { .. } | Denied::UnknownTask(_))) => true,
            _ => false,
        };
        self.trace(alloc::format!("{tenant} cancel {task}: {reply:?}"));
        self.clients[c].cancel_inflight = None;
        if decided {
            self.clients[c].to_cancel.pop_front();
        }
    }

    fn clients_step(&mut self) {
        for c in 0..self.clients.len() {
            if self.opts.cancels {
                self.cancel_step(c);
            }
            let now = self.now_ms;
            // With an operator placement policy, clients wait until it is in force.
            let waiting = self.opts.placement.is_some() && !self.report.placement_set;
            let retry = match self.clients[c].inflight {
                Some((_, _, at)) => now.saturating_sub(at) >= CLIENT_RETRY_MS,
                None => !waiting && self.submitted < self.opts.requests && self.rng.chance_pct(2),
            };
            if !retry {
                continue;
            }
            let cl = &mut self.clients[c];
            let seq = match cl.inflight {
                Some((seq, _, _)) => seq,
                None => {
                    self.submitted += 1;
                    let s = cl.next_seq;
                    cl.next_seq += 1;
                    s
                }
            };
            cl.generation += 1;
            let generation = cl.generation;
            cl.inflight = Some((seq, generation, now));
            // Every fourth request of a client is a device job, Q and Φ in turn; one
            // in eight reserves a Q container on node 2, and one in eight runs a Q
            // job under the client's latest contract.
            let kind = if self.opts.device_jobs { seq % 8 } else { 0 };
            let (domain, work, contract) = match kind {
                3 => (Domain::Q, Work::Job(sim_job(Domain::Q, seq)), None),
                5 => (Domain::Q, Work::Job(sim_job(Domain::Q, seq)), cl.contract),
                7 => (Domain::Phi, Work::Job(sim_job(Domain::Phi, seq)), None),
                _ => (Domain::K, Work::Builtin("hash".into()), None),
            };
            let request = if kind == 1 {
                Request::Reserve(xdv_cluster::mgmt::Reserve {
                    domain: Domain::Q,
                    target: NodeId(2),
                    resources: vec![(seq / 8 % 2) as u16],
                    duration_ms: 4_000,
                    capability: xdv_types::CapabilityId(1),
                })
            } else {
                let submit = Submit {
                    domain,
                    contract,
                    ..Submit::new(work, seq.to_le_bytes().to_vec(), 1_000)
                };
                // Every third plain task is a `RunBatch` of one: answered once it
                // finished (or its status at the reply timeout), with the same
                // retry rules as a `Submit`.
                if is_run_batch(self.opts.device_jobs, seq) {
                    Request::RunBatch(alloc::vec![submit])
                } else {
                    Request::Submit(submit)
                }
            };
            let req = SignedRequest::sign(
                self.cluster,
                Principal::Tenant(cl.tenant),
                seq,
                request,
                &cl.seed,
            );
            let from = cl.id;
            let to = self.any_member();
            let bytes = mgmt::encode(&req);
            self.net
                .send(now, from, to, Msg::Request { generation, bytes });
        }
    }

    /// The operator's membership plan: one request at a time, from a quarter into the
    /// faults on; a joining node boots (from the genesis, on an empty region) just
    /// before its `AddWorker` is sent; a removed node is stopped once the log has its
    /// `RemoveWorker`. A request unanswered for a while is sent again with the same
    /// sequence number; one refused (no leader, another change in progress, …) with a
    /// new one.
    fn operator_step(&mut self) {
        let now = self.now_ms;
        // The placement policy goes first, as soon as the cluster may have a leader;
        // membership changes wait for the faults.
        let placement_next = matches!(self.member_ops.front(), Some(MemberOp::Placement(_)));
        if now < self.opts.fault_ms / 4 && !placement_next {
            return;
        }
        let (op, seq) = match self.op_inflight {
            Some((op, seq, _, at)) if now.saturating_sub(at) >= CLIENT_RETRY_MS => (op, seq),
            Some(_) => return,
            None => {
                let Some(&op) = self.member_ops.front() else {
                    return;
                };
                // One change every two seconds at most, so faults meet each.
                let every = if placement_next { 250 } else { 2_000 };
                if !now.is_multiple_of(every) {
                    return;
                }
                if let MemberOp::Join { node, .. } = op {
                    let n = &mut self.nodes[node as usize - 1];
                    if n.outside {
                        n.outside = false;
                        n.restart_at_ms = now;
                        self.trace(alloc::format!("operator: boots n{node} to join"));
                    }
                }
                self.operator_seq += 1;
                (op, self.operator_seq)
            }
        };
        let request = match op {
            MemberOp::Join { node, observer } => Request::AddWorker {
                node: NodeId(node),
                public_key: xdv_cluster::public_key(
                    &self.configs[node as usize - 1]
                        .identity
                        .seed
                        .expect("sim nodes have keys"),
                ),
                observer,
            },
            MemberOp::Remove { node } => Request::RemoveWorker { node: NodeId(node) },
            MemberOp::Placement(policy) => Request::SetPlacementPolicy { policy },
        };
        let req = SignedRequest::sign(
            self.cluster,
            Principal::Operator,
            seq,
            request,
            &self.operator_seed,
        );
        let generation = self.op_inflight.map_or(0, |o| o.2) + 1;
        self.op_inflight = Some((op, seq, generation, now));
        let to = self.any_member();
        self.net.send(
            now,
            OPERATOR_ID,
            to,
            Msg::Request {
                generation,
                bytes: mgmt::encode(&req),
            },
        );
    }

    /// The operator's policy plan: from 200 ms on, one change a second, tenants in
    /// turn, each to a random priority; unanswered changes are sent again with the
    /// same sequence number, refused ones with a new one.
    fn policy_step(&mut self) {
        let now = self.now_ms;
        let (tenant, priority, seq) = match self.policy_inflight {
            Some((t, p, seq, _, at)) if now.saturating_sub(at) >= CLIENT_RETRY_MS => (t, p, seq),
            Some(_) => return,
            None if self.policies_left == 0 || now < 200 || now % 1_000 != 200 => return,
            None => {
                let k = self.opts.policy_changes - self.policies_left;
                let tenant = TenantId(k % self.opts.clients.max(1) + 1);
                let priority = [Priority::Low, Priority::Normal, Priority::High]
                    [self.policy_rng.below(3) as usize];
                self.operator_seq += 1;
                (tenant, priority, self.operator_seq)
            }
        };
        let req = SignedRequest::sign(
            self.cluster,
            Principal::Operator,
            seq,
            Request::SetPolicy { tenant, priority },
            &self.operator_seed,
        );
        let generation = self.policy_inflight.map_or(0, |p| p.3) + 1;
        self.policy_inflight = Some((tenant, priority, seq, generation, now));
        let members = self.members();
        let to = members[self.policy_rng.below(members.len() as u64) as usize];
        let bytes = mgmt::encode(&req);
        self.net
            .send(now, POLICY_ID, to, Msg::Request { generation, bytes });
    }

    fn policy_reply(&mut self, msg: Msg) {
        let Msg::Reply { generation, bytes } = msg else {
            return;
        };
        let Some((tenant, priority, _, g, _)) = self.policy_inflight else {
            return;
        };
        if g != generation {
            return;
        }
        match mgmt::decode::<Response>(&bytes) {
            Ok(Response::PolicySet { tenant: t }) if t == tenant => {
                self.trace(alloc::format!(
                    "operator: {tenant} policy {}",
                    priority.name()
                ));
                self.report.policies_set += 1;
                self.policies_left -= 1;
                self.policy_inflight = None;
            }
            // A retry of an applied change: replayed, and done.
            Ok(Response::Refused(Denied::Replayed { .. })) => {
                self.policies_left -= 1;
                self.policy_inflight = None;
            }
            // No leader, not committed in time: again, with a new sequence number.
            _ => self.policy_inflight = None,
        }
    }

    fn operator_reply(&mut self, msg: Msg) {
        use xdv_cluster::mgmt::MembershipDenied as M;
        let Msg::Reply { generation, bytes } = msg else {
            return;
        };
        let Some((op, _, g, _)) = self.op_inflight else {
            return;
        };
        if g != generation {
            return;
        }
        let reply = mgmt::decode::<Response>(&bytes);
        let done = match (&reply, op) {
            (Ok(Response::Member { member: true, .. }), MemberOp::Join { .. })
            | (
                Ok(Response::Refused(Denied::Membership(M::AlreadyMember(_)))),
                MemberOp::Join { .. },
            )
            | (Ok(Response::Member { member: false, .. }), MemberOp::Remove { .. })
            | (
                Ok(Response::Refused(Denied::Membership(M::NotMember(_)))),
                MemberOp::Remove { .. },
            ) => true,
            (Ok(Response::PlacementPolicySet { policy }), MemberOp::Placement(p)) => *policy == p,
            (Ok(Response::Refused(Denied::Membership(M::ChangeInProgress { .. }))), _) => {
                self.report.membership_busy += 1;
                false
            }
            _ => false,
        };
        if !done {
            // Refused (no leader, replayed, busy, not committed in time): sent again
            // with a new sequence number; the change itself is idempotent (a node
            // admitted twice is refused as a member, and the answer says so).
            self.op_inflight = None;
            let what = match &reply {
                Ok(Response::Refused(d)) => alloc::format!("refused: {d}"),
                Ok(r) => alloc::format!("{r:?}"),
                Err(d) => alloc::format!("undecodable: {d}"),
            };
            self.trace(alloc::format!("operator: {op:?}: {what}"));
            return;
        }
        self.trace(alloc::format!("operator: {op:?} done"));
        self.op_inflight = None;
        self.member_ops.pop_front();
        match op {
            MemberOp::Placement(_) => self.report.placement_set = true,
            MemberOp::Join { .. } => self.report.members_added += 1,
            MemberOp::Remove { node } => {
                self.report.members_removed += 1;
                let i = node as usize - 1;
                self.crash(i);
                self.nodes[i].outside = true;
                self.nodes[i].parked = None;
                self.trace(alloc::format!("operator: n{node} stopped for good"));
            }
        }
    }

    fn client_reply(&mut self, to: u32, msg: Msg) {
        let Msg::Reply { generation, bytes } = msg else {
            return;
        };
        let c = (to - CLIENT_BASE) as usize;
        if self.clients[c]
            .cancel_inflight
            .is_some_and(|(_, _, g, _)| g == generation)
        {
            self.cancel_reply(c, mgmt::decode::<Response>(&bytes));
            return;
        }
        let Some((seq, g, _)) = self.clients[c].inflight else {
            return;
        };
        if g != generation {
            return;
        }
        let tenant = self.clients[c].tenant;
        let reply = mgmt::decode::<Response>(&bytes);
        if self.opts.device_jobs && seq % 8 == 1 {
            // A reservation: decided once the log took it (a retry of a decided one
            // is refused as replayed).
            use xdv_cluster::mgmt::ContractAnswer;
            let done = match reply {
                Ok(Response::Contract(ContractAnswer::Accepted { id })) => {
                    self.clients[c].contract = Some(id);
                    self.contract_targets.insert(id, NodeId(2));
                    self.report.contracts_accepted += 1;
                    self.trace(alloc::format!("{tenant} seq {seq}: contract {id} accepted"));
                    true
                }
                Ok(Response::Contract(ContractAnswer::Rejected { id, reason })) => {
                    self.report.contracts_rejected += 1;
                    if matches!(reason, xdv_cluster::Refusal::Conflict { .. }) {
                        self.report.contract_conflicts += 1;
                    }
                    self.trace(alloc::format!(
                        "{tenant} seq {seq}: contract {id} rejected: {reason}"
                    ));
                    true
                }
                Ok(Response::Refused(Denied::Replayed { .. })) => true,
                _ => false,
            };
            if done {
                self.clients[c].inflight = None;
            }
            return;
        }
        let task = match reply {
            Ok(Response::Submitted { task }) if !self.run_batch(seq) => Some(task),
            Ok(Response::Refused(Denied::Duplicate { task })) if !self.run_batch(seq) => Some(task),
            Ok(Response::BatchRan { seq: s, reports }) if self.run_batch(seq) && s == seq => {
                match reports.as_slice() {
                    [r] if r.tenant == tenant => {
                        self.report.run_batches_answered += 1;
                        Some(r.task)
                    }
                    other => {
                        self.trace(alloc::format!(
                            "{tenant} seq {seq}: a RunBatch of one answered with {} reports",
                            other.len()
                        ));
                        None
                    }
                }
            }
            // No leader yet, not committed in time: retry after the back-off.
            _ => None,
        };
        if let Some(task) = task {
            if let Some(prev) = self.accepted.insert((tenant, seq), task)
                && prev != task
            {
                self.trace(alloc::format!(
                    "{tenant} seq {seq}: {prev} and then {task}!"
                ));
            }
            self.trace(alloc::format!("{tenant} seq {seq} accepted as {task}"));
            self.clients[c].inflight = None;
            if self.opts.cancels
                && seq.is_multiple_of(3)
                && !self.clients[c].to_cancel.contains(&task)
            {
                self.clients[c].to_cancel.push_back(task);
            }
        }
    }

    /// [`is_run_batch`] under this run's options.
    fn run_batch(&self, seq: u64) -> bool {
        is_run_batch(self.opts.device_jobs, seq)
    }

    /// Cross-node safety, checked after every step.
    pub fn invariants(&mut self) -> Result<(), String> {
        // Every published root extends the node's last one (its proof verifies on
        // every node), unless the test rewrote a node's audit history.
        if self.opts.rewrite_audit.is_none() && self.report.root_alarms > 0 {
            return Err(alloc::format!(
                "{} audit-root alarms without a rewritten audit history",
                self.report.root_alarms
            ));
        }
        for i in 0..self.nodes.len() {
            let Some(node) = self.nodes[i].node.as_ref() else {
                continue;
            };
            node.invariants()?;
            if let Some(p) = self.nodes[i].pool.as_ref() {
                p.invariants()
                    .map_err(|e| alloc::format!("n{}: accel: {e}", i + 1))?;
            }
            let Some(r) = node.raft() else {
                return Err(alloc::format!("n{} is halted: {:?}", i + 1, node.halted()));
            };
            let st = r.status();
            if st.role == Role::Leader {
                match self.leaders.get(&st.term) {
                    Some(l) if *l != st.id => {
                        return Err(alloc::format!(
                            "two leaders in term {}: {} and {}",
                            st.term,
                            l,
                            st.id
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(st.term, st.id);
                        self.report.elections += 1;
                    }
                }
            }
            // Committed entries never change (checked from the last checked index).
            let s = r.storage();
            let from = self.checked_commit[i].max(s.first_index()).max(1);
            for idx in from..=st.commit.min(s.last_index()) {
                let Ok(term) = s.term(idx) else { continue };
                match self.committed_terms.get(&idx) {
                    Some(&t) if t != term => {
                        return Err(alloc::format!(
                            "n{}: committed index {idx} has term {term}, elsewhere {t}",
                            i + 1
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.committed_terms.insert(idx, term);
                    }
                }
            }
            self.checked_commit[i] = st.commit;
            let state = node.state();
            let applied = state.data().applied_index;
            let hash = state.hash();
            let corrupted = self
                .opts
                .corrupt
                .is_some_and(|(n, at)| n == i as u32 + 1 && self.now_ms >= at);
            match self.hashes.get(&applied) {
                _ if corrupted => {}
                Some(h) if *h != hash => {
                    return Err(alloc::format!(
                        "n{}: state hash {} at index {applied}, another node had {}",
                        i + 1,
                        hash.short(),
                        h.short()
                    ));
                }
                Some(_) => {}
                None => {
                    self.hashes.insert(applied, hash);
                }
            }
            for (id, t) in &state.data().tasks {
                if let TaskStatus::Assigned { attempt, .. } = t.status {
                    let m = self.max_attempt.entry(*id).or_default();
                    *m = (*m).max(attempt);
                }
                if let TaskStatus::Completed {
                    node,
                    attempt,
                    output_hash,
                    outcome,
                    ..
                } = &t.status
                {
                    // Only a node with a device of the task's kind executes a device job.
                    let device_node = match t.spec.domain {
                        Domain::K => None,
                        Domain::Q => Some(NodeId(2)),
                        Domain::Phi => Some(NodeId(3)),
                    };
                    if device_node.is_some_and(|d| d != *node) && *outcome == Outcome::Executed {
                        return Err(alloc::format!(
                            "{id} ({}) executed on {node}",
                            t.spec.domain
                        ));
                    }
                    // Fence tokens: a task ends at its latest attempt, never an older one.
                    if let Some(&max) = self.max_attempt.get(id)
                        && *attempt < max
                    {
                        return Err(alloc::format!(
                            "{id} completed ({outcome}) at attempt {attempt} after attempt {max} was assigned"
                        ));
                    }
                    if self.cancelled.contains(id) && *outcome != Outcome::Cancelled {
                        return Err(alloc::format!(
                            "{id} was cancelled, yet ended {outcome} on n{}",
                            i + 1
                        ));
                    }
                    let now = (*node, *attempt, *output_hash);
                    match self.completed.get(id) {
                        Some(prev) if *prev != now => {
                            return Err(alloc::format!(
                                "{id} completed twice: {prev:?} then {now:?}"
                            ));
                        }
                        Some(_) => {}
                        None => {
                            self.completed.insert(*id, now);
                            if t.spec.contract.is_some() {
                                self.report.contract_jobs += 1;
                            }
                            if t.spec.domain != Domain::K {
                                match outcome {
                                    Outcome::Executed => self.report.device_executed += 1,
                                    Outcome::DeviceFailed(_) => self.report.device_failed += 1,
                                    Outcome::Unstable(_) => self.report.device_unstable += 1,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
            let down = state.data().nodes.values().filter(|r| !r.up).count() as u64;
            self.report.node_downs = self.report.node_downs.max(down);
            self.report.snapshots_restored = self
                .report
                .snapshots_restored
                .max(node.counters().snapshots_restored);
            self.report.completion_groups = self
                .report
                .completion_groups
                .max(node.counters().completion_groups_proposed);
            self.report.submission_groups = self
                .report
                .submission_groups
                .max(node.counters().submission_groups_proposed);
            self.report.roots_published = self
                .report
                .roots_published
                .max(node.counters().audit_roots_taken);
        }
        self.net.invariants();
        Ok(())
    }

    fn converged(&self) -> bool {
        if self.submitted < self.opts.requests
            || self.clients.iter().any(|c| {
                c.inflight.is_some() || c.cancel_inflight.is_some() || !c.to_cancel.is_empty()
            })
        {
            return false;
        }
        if !self.member_ops.is_empty() || self.op_inflight.is_some() {
            return false;
        }
        if self.policies_left > 0 || self.policy_inflight.is_some() {
            return false;
        }
        let mut hash = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.outside {
                continue;
            }
            let Some(node) = n.node.as_ref() else {
                return false;
            };
            // Raft's configuration has caught up with the members: workers vote,
            // observers learn.
            if node.membership_pending().is_some() {
                return false;
            }
            let h = node.state().hash();
            if let Some((bad, _)) = self.opts.corrupt {
                // Every replica (its own too) has the corrupted node quarantined.
                let q = node.state().data().nodes.get(&NodeId(bad));
                if !q.is_some_and(|r| r.quarantined) {
                    return false;
                }
                if bad == i as u32 + 1 {
                    continue;
                }
            }
            if *hash.get_or_insert(h) != h {
                return false;
            }
            for task in self.accepted.values() {
                let done = matches!(
                    node.state().task(*task).map(|t| &t.status),
                    Some(TaskStatus::Completed { .. } | TaskStatus::Rejected(_))
                );
                if !done {
                    return false;
                }
            }
            // What the devices offer has reached the log.
            if let Some(pool) = n.pool.as_ref() {
                let me = node.id();
                let rec = node.state().data().nodes.get(&me);
                let offer = pool.offer();
                if rec.map(|r| (r.offered_q, r.offered_phi)) != Some(offer) {
                    return false;
                }
            }
        }
        true
    }

    /// Every member decided the same about every contract: the same refusals count,
    /// the same contracts in force (and their states), the same ended contracts and how
    /// each ended. (The state hash covers this too; this says which part differs.)
    fn contract_decisions(&mut self) -> Result<(), String> {
        type Decisions = (u64, Vec<(u64, bool)>, Vec<(u64, xdv_cluster::ContractEnd)>);
        let mut first: Option<(usize, Decisions)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(node) = n.node.as_ref().filter(|_| !n.outside) else {
                continue;
            };
            if self
                .opts
                .corrupt
                .is_some_and(|(bad, _)| bad == i as u32 + 1)
            {
                continue;
            }
            let d = node.state().data();
            let mine: Decisions = (
                d.counters.contracts_refused,
                d.contracts
                    .iter()
                    .map(|(id, r)| (*id, r.state == xdv_cluster::ContractState::Active))
                    .collect(),
                d.ended_contracts
                    .values()
                    .map(|e| (e.contract.contract_id, e.end.clone()))
                    .collect(),
            );
            let count = mine.0 + mine.1.len() as u64 + mine.2.len() as u64;
            match &first {
                None => {
                    self.report.contracts_preempted = mine
                        .2
                        .iter()
                        .filter(|(_, e)| matches!(e, xdv_cluster::ContractEnd::Preempted { .. }))
                        .count() as u64;
                    first = Some((i, mine));
                }
                Some((j, theirs)) if *theirs != mine => {
                    return Err(self.fail(alloc::format!(
                        "contract decisions differ: n{} {theirs:?}, n{} {mine:?}",
                        j + 1,
                        i + 1
                    )));
                }
                Some(_) => {}
            }
            self.report.contract_decisions_agreed += count;
        }
        Ok(())
    }

    fn why_not_converged(&self) -> String {
        let mut s = alloc::format!(
            "{} of {} requests submitted, {} accepted; ",
            self.submitted,
            self.opts.requests,
            self.accepted.len()
        );
        for (i, n) in self.nodes.iter().enumerate() {
            match n.node.as_ref() {
                None => s.push_str(&alloc::format!("n{} down; ", i + 1)),
                Some(node) => {
                    let open: Vec<String> = self
                        .accepted
                        .values()
                        .filter(|t| {
                            !matches!(
                                node.state().task(**t).map(|r| &r.status),
                                Some(TaskStatus::Completed { .. })
                            )
                        })
                        .map(|t| {
                            alloc::format!("{t}={:?}", node.state().task(*t).map(|r| &r.status))
                        })
                        .collect();
                    let v = node.view();
                    s.push_str(&alloc::format!(
                        "n{} {} term {} applied {} hash {} open [{}]; ",
                        i + 1,
                        v.role,
                        v.term,
                        v.applied,
                        v.state_hash.short(),
                        open.join(", ")
                    ));
                }
            }
        }
        s
    }
}

/// Runs seeds `range` with `base` options; the first failure's trace, or the reports.
pub fn sweep(
    range: core::ops::Range<u64>,
    base: &SimOptions,
) -> Result<Vec<(u64, SimReport)>, String> {
    let mut out = Vec::new();
    for seed in range {
        let opts = SimOptions {
            seed,
            ..base.clone()
        };
        out.push((seed, Sim::new(opts).run()?));
    }
    Ok(out)
}
