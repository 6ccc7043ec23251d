//! Deterministic simulator: N nodes, a virtual network and clock, faults, a client
//! workload against a small KV state machine, and safety checks after every step.
//!
//! One step (one simulated millisecond of the network) = every live node ticks once,
//! due messages are delivered (in an order the seeded PRNG picks), faults and client
//! operations are injected, every node's `Ready` is processed, then the checks run:
//! - election safety: at most one leader per term, ever;
//! - log matching: entries with equal (index, term) have equal payloads and equal
//!   predecessor terms on every node (checked incrementally on every write);
//! - leader completeness: a leader holds every entry known committed;
//! - state-machine safety: no two nodes apply different entries (or reach different
//!   KV states) at an index;
//! - linearizability of the client history, per key (see [`lin`]), whenever an
//!   operation on that key completes or is resolved.
//!
//! The network is the testing kit's [`PacketSim`] (loss, duplication, delay,
//! partitions incl. one-way cuts, clogging); randomness is the one
//! [`SplitMix64`], seeded from the config (the network is seeded from its first draw).
//!
//! Node ids are 1..=N. The first `voters` nodes bootstrap the cluster; the rest are
//! spares that membership changes add as learners and promote. Removed nodes are
//! retired (never restarted), so a node id is never reused with fresh state.

pub mod lin;

use crate::{
    ConfChange, Config, Entry, EntryKind, LogIndex, MemStorage, Message, NodeId, RaftNode, Role,
    StateMachine, Storage, Term,
};
use lin::{LinOp, LinResult, OpKind};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use xdv_testkit::{NetFaults, PacketSim, SendOutcome, SplitMix64};

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Total node slots (bootstrap voters + spares).
    pub nodes: usize,
    pub steps: u64,
    pub faults: bool,
    pub membership: bool,
    pub trace: bool,
    pub raft: Config,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: usize, steps: u64) -> Self {
        SimConfig {
            seed,
            nodes,
            steps,
            faults: true,
            membership: true,
            trace: false,
            raft: sim_raft_config(),
        }
    }
}

/// A small configuration that makes snapshots, compaction and chunked transfer
/// happen often.
pub fn sim_raft_config() -> Config {
    Config {
        election_timeout_ticks: 10,
        election_spacing_ticks: 3,
        heartbeat_interval_ticks: 2,
        max_entries_per_append: 16,
        max_inflight_appends: 8,
        snapshot_threshold: 30,
        log_compaction_threshold: 45,
        snapshot_chunk_bytes: 8,
        max_committed_per_ready: 64,
        max_append_bytes: 64 * 1024,
    }
}

/// Most concurrent clients.
const CLIENTS: usize = 3;
/// Keys of the KV workload.
const KEYS: u8 = 4;
/// Runs at least this long end with a calm phase and a liveness check.
const LIVENESS_MIN_STEPS: u64 = 300;
/// Steps before the end at which the liveness target is sampled.
const LIVENESS_WINDOW: u64 = 30;
/// Maximum extra message delay (ticks) on top of the one-tick minimum.
const MAX_DELAY: u64 = 3;
/// Most messages in flight per directed link; beyond it new ones are dropped (a
/// full switch queue).
const MAX_IN_FLIGHT_PER_LINK: usize = 4096;
/// Message loss and duplication while faults are on (parts per million).
const LOSS_PPM: u64 = 30_000;
const DUP_PPM: u64 = 15_000;

/// The network's settings: with `faults`, delays of 1..=1+MAX_DELAY ticks (which
/// reorder messages) and, unless `calm`, loss and duplication; without, a perfect
/// one-tick network.
fn net_faults(faults: bool, calm: bool) -> NetFaults {
    let lossy = faults && !calm;
    NetFaults {
        loss_ppm: if lossy { LOSS_PPM } else { 0 },
        dup_ppm: if lossy { DUP_PPM } else { 0 },
        min_delay_ms: 1,
        max_delay_ms: if faults { 1 + MAX_DELAY } else { 1 },
        max_in_flight: MAX_IN_FLIGHT_PER_LINK,
    }
}

/// The KV state machine: `key -> value` (0 = absent).
#[derive(Clone, Debug, Default)]
pub struct Kv {
    map: BTreeMap<u8, u64>,
}

impl Kv {
    pub fn get(&self, k: u8) -> u64 {
        self.map.get(&k).copied().unwrap_or(0)
    }
    pub fn hash(&self) -> u64 {
        let mut h = Fnv::new();
        for (k, v) in &self.map {
            h.write(&[*k]);
            h.write(&v.to_le_bytes());
        }
        h.0
    }
}

impl StateMachine for Kv {
    fn apply(&mut self, _index: LogIndex, data: &[u8]) {
        if let Some((_, key, value)) = decode_put(data) {
            self.map.insert(key, value);
        }
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.map.len() * 9);
        for (k, v) in &self.map {
            out.push(*k);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
    fn restore(&mut self, data: &[u8]) {
        self.map.clear();
        for c in data.chunks_exact(9) {
            let mut v = [0u8; 8];
            v.copy_from_slice(&c[1..9]);
            self.map.insert(c[0], u64::from_le_bytes(v));
        }
    }
}

fn encode_put(op: u64, key: u8, value: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(17);
    d.extend_from_slice(&op.to_le_bytes());
    d.push(key);
    d.extend_from_slice(&value.to_le_bytes());
    d
}

fn decode_put(d: &[u8]) -> Option<(u64, u8, u64)> {
    if d.len() != 17 {
        return None;
    }
    let op = u64::from_le_bytes(d[0..8].try_into().ok()?);
    let value = u64::from_le_bytes(d[9..17].try_into().ok()?);
    Some((op, d[8], value))
}

struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= *x as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn entry_hash(e: &Entry) -> u64 {
    let mut h = Fnv::new();
    h.write(&e.term.to_le_bytes());
    h.write(&e.index.to_le_bytes());
    match &e.kind {
        EntryKind::Normal(d) => {
            h.write(&[0]);
            h.write(d);
        }
        EntryKind::ConfigChange(cc) => {
            let (tag, id) = match cc {
                ConfChange::AddLearner(i) => (1u8, i.0),
                ConfChange::PromoteLearner(i) => (2, i.0),
                ConfChange::Remove(i) => (3, i.0),
            };
            h.write(&[tag]);
            h.write(&id.to_le_bytes());
        }
        EntryKind::Noop => h.write(&[9]),
    }
    h.0
}

struct SimNode {
    id: NodeId,
    node: Option<RaftNode<MemStorage>>,
    /// Durable state while the node is down.
    parked: Option<MemStorage>,
    kv: Kv,
    applied: LogIndex,
    retired: bool,
}

#[derive(Clone, Debug)]
enum Pending {
    Put {
        node: NodeId,
        index: LogIndex,
        op: u64,
        key: u8,
        hist: usize,
    },
    Get {
        node: NodeId,
        key: u8,
        ctx: u64,
        read_index: Option<LogIndex>,
        term: Term,
        invoke: u64,
    },
}

/// What a finished run reports.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub steps: u64,
    pub violation: Option<String>,
    pub elections: u64,
    pub max_term: Term,
    pub committed: LogIndex,
    pub ops_completed: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    pub conf_changes: u64,
    pub transfers: u64,
    pub lin_inconclusive: u64,
    pub messages: u64,
    /// Snapshot chunks sent, and how many of them the network lost (torn transfers).
    pub snapshot_chunks: u64,
    pub snapshot_chunks_lost: u64,
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    rng: SplitMix64,
    now: u64,
    clock: u64,
    calm: bool,
    nodes: Vec<SimNode>,
    net: PacketSim<Message>,
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) -> (entry hash, predecessor term)
    log_ids: BTreeMap<(LogIndex, Term), (u64, Term)>,
    /// index -> (entry hash, KV hash after applying it)
    applied: BTreeMap<LogIndex, (u64, u64)>,
    applied_entries: BTreeMap<LogIndex, Entry>,
    commit_term: BTreeMap<LogIndex, Term>,
    max_committed: LogIndex,
    clients: Vec<Option<Pending>>,
    history: BTreeMap<u8, Vec<Option<LinOp>>>,
    /// Puts whose client gave up: (index, op id, key, history slot).
    unresolved: Vec<(LogIndex, u64, u8, usize)>,
    dirty_keys: BTreeSet<u8>,
    next_op: u64,
    report: SimReport,
    pub trace: Vec<String>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let n = cfg.nodes.max(1);
        let voters_n = if n >= 5 {
            n - 2
        } else if n >= 4 {
            n - 1
        } else {
            n
        };
        let voters: Vec<NodeId> = (1..=voters_n as u32).map(NodeId).collect();
        let mut nodes = Vec::new();
        for i in 1..=n as u32 {
            let id = NodeId(i);
            let st = if (i as usize) <= voters_n {
                MemStorage::new_with_voters(&voters)
            } else {
                MemStorage::new_with_voters(&[])
            };
            let node = RaftNode::new(id, cfg.raft.clone(), st).expect("simulator config is valid");
            nodes.push(SimNode {
                id,
                node: Some(node),
                parked: None,
                kv: Kv::default(),
                applied: 0,
                retired: false,
            });
        }
        let seed = cfg.seed;
        let mut rng = SplitMix64::new(seed ^ 0x5851_F42D_4C95_7F2D);
        let net = PacketSim::new(rng.next_u64(), net_faults(cfg.faults, false));
        Sim {
            rng,
            cfg,
            now: 0,
            clock: 0,
            calm: false,
            nodes,
            net,
            leaders: BTreeMap::new(),
            log_ids: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_entries: BTreeMap::new(),
            commit_term: BTreeMap::new(),
            max_committed: 0,
            clients: vec![None; CLIENTS],
            history: BTreeMap::new(),
            unresolved: Vec::new(),
            dirty_keys: BTreeSet::new(),
            next_op: 1,
            report: SimReport {
                seed,
                ..SimReport::default()
            },
            trace: Vec::new(),
        }
    }

    fn event(&mut self, s: impl FnOnce() -> String) {
        if self.cfg.trace {
            let line = format!("{:>6} {}", self.now, s());
            self.trace.push(line);
        }
    }

    /// Runs all steps; stops at the first violation.
    pub fn run(mut self) -> (SimReport, Vec<String>) {
        let steps = self.cfg.steps;
        let liveness = steps >= LIVENESS_MIN_STEPS;
        let calm_from = steps - steps / 5;
        let mut checkpoint = None;
        for _ in 0..steps {
            if liveness && self.now == calm_from {
                self.calm_down();
            }
            if liveness && self.now == steps - LIVENESS_WINDOW {
                checkpoint = self
                    .leader()
                    .and_then(|l| self.nodes[Self::idx(l)].node.as_ref())
                    .map(|n| n.commit_index());
            }
            if let Err(v) = self.step() {
                self.event(|| format!("VIOLATION {v}"));
                self.report.violation = Some(format!("step {}: {v}", self.now));
                break;
            }
        }
        if liveness
            && self.report.violation.is_none()
            && let Err(v) = self.check_liveness(checkpoint)
        {
            self.event(|| format!("VIOLATION {v}"));
            self.report.violation = Some(format!("step {}: {v}", self.now));
        }
        self.report.steps = self.now;
        self.report.committed = self.max_committed;
        (self.report, self.trace)
    }

    /// The last fifth of a run: heal partitions, restart crashed nodes, stop loss
    /// and membership changes, so the liveness check can expect convergence.
    fn calm_down(&mut self) {
        self.calm = true;
        self.net.heal_all();
        self.net.set_faults(net_faults(self.cfg.faults, true));
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|s| s.node.is_none() && !s.retired)
            .map(|s| s.id)
            .collect();
        for id in down {
            self.restart(id);
        }
        self.event(|| "calm: faults off, all nodes up".to_string());
    }

    /// After the calm phase: a leader exists, and every live member has committed
    /// at least what the leader had committed `LIVENESS_WINDOW` steps before the end.
    fn check_liveness(&self, checkpoint: Option<LogIndex>) -> Result<(), String> {
        let Some(l) = self.leader() else {
            return Err("liveness: no leader after the calm phase".into());
        };
        // No leader yet at the checkpoint (a slow election after the calm began):
        // only the final leader is required.
        let want = checkpoint.unwrap_or(0);
        let conf = self.nodes[Self::idx(l)]
            .node
            .as_ref()
            .map(|n| n.status().conf)
            .unwrap_or_default();
        for s in &self.nodes {
            let Some(n) = s.node.as_ref() else { continue };
            if conf.contains(s.id) && n.commit_index() < want {
                return Err(format!(
                    "liveness: {} committed {} < {want} (leader {l})",
                    s.id,
                    n.commit_index()
                ));
            }
        }
        Ok(())
    }

    fn idx(id: NodeId) -> usize {
        id.0 as usize - 1
    }

    /// One simulation step.
    pub fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        for i in 0..self.nodes.len() {
            if let Some(n) = self.nodes[i].node.as_mut() {
                n.tick();
            }
        }
        self.deliver();
        if self.cfg.faults && !self.calm {
            self.inject_faults();
        }
        if self.cfg.membership && !self.calm {
            self.membership_ops();
        }
        self.client_ops();
        for i in 0..self.nodes.len() {
            self.process_ready(i)?;
        }
        self.check()
    }

    /// Hands every due message to its node. Messages to a crashed node are lost;
    /// ones still in flight when it restarts reach the restarted node, as on a real
    /// network (so `PacketSim::drop_all_to` is not used on a crash).
    fn deliver(&mut self) {
        let mut due = self.net.deliver(self.now);
        // The network orders by due time, then send order; shuffling what is due in
        // the same step lets the seed explore more interleavings.
        self.rng.shuffle(&mut due);
        for d in due {
            let i = Self::idx(d.msg.to);
            if let Some(n) = self.nodes.get_mut(i).and_then(|s| s.node.as_mut()) {
                n.step(d.msg);
            }
        }
    }

    fn send(&mut self, m: Message) {
        self.report.messages += 1;
        let is_chunk = u64::from(matches!(m.body, crate::MessageBody::Snapshot { .. }));
        match self.net.send(self.now, m.from.0, m.to.0, m) {
            SendOutcome::DroppedCut | SendOutcome::DroppedFull => {}
            SendOutcome::DroppedLoss => {
                self.report.snapshot_chunks += is_chunk;
                self.report.snapshot_chunks_lost += is_chunk;
            }
            SendOutcome::Queued | SendOutcome::Duplicated => {
                self.report.snapshot_chunks += is_chunk;
            }
        }
    }

    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn inject_faults(&mut self) {
        let n = self.nodes.len() as u64;
        // Partitions: symmetric split, or one-way cut; and clogged links.
        let cut_any = self.net.cuts().next().is_some();
        if !cut_any && self.rng.chance_ppm(8_000) {
            let ids: Vec<u32> = (1..=n as u32).collect();
            let side = self.net.partition_random(&mut self.rng, &ids);
            self.event(|| format!("partition sides={side:?}"));
        } else if !cut_any && self.rng.chance_ppm(5_000) {
            let a = NodeId(1 + self.rng.below(n) as u32);
            let b = NodeId(1 + self.rng.below(n) as u32);
            if a != b {
                self.net.cut(a.0, b.0);
                self.event(|| format!("one-way cut {a}->{b}"));
            }
        } else if cut_any && self.rng.chance_ppm(30_000) {
            self.net.heal_all();
            self.event(|| "heal".to_string());
        }
        if self.rng.chance_ppm(3_000) {
            let a = NodeId(1 + self.rng.below(n) as u32);
            let b = NodeId(1 + self.rng.below(n) as u32);
            let extra = self.rng.range(2..2 * MAX_DELAY + 3);
            self.net.clog(a.0, b.0, self.now + 20, extra);
            self.event(|| format!("clog {a}->{b} +{extra} for 20"));
        }
        // Crash one node, restart one node.
        if self.rng.chance_ppm(6_000) {
            let live = self.live_ids();
            if !live.is_empty() {
                let id = live[self.rng.below(live.len() as u64) as usize];
                self.crash(id);
            }
        }
        if self.rng.chance_ppm(60_000) {
            let down: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|s| s.node.is_none() && !s.retired)
                .map(|s| s.id)
                .collect();
            if !down.is_empty() {
                let id = down[self.rng.below(down.len() as u64) as usize];
                self.restart(id);
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        let s = &mut self.nodes[Self::idx(id)];
        if let Some(node) = s.node.take() {
            s.parked = Some(node.into_storage());
            s.kv = Kv::default();
            s.applied = 0;
            self.report.crashes += 1;
            self.event(|| format!("crash {id}"));
        }
        // Clients waiting on this node lose their answer.
        for c in 0..self.clients.len() {
            let node_of = match &self.clients[c] {
                Some(Pending::Put { node, .. }) | Some(Pending::Get { node, .. }) => *node,
                None => continue,
            };
            if node_of == id {
                self.abandon(c);
            }
        }
    }

    fn restart(&mut self, id: NodeId) {
        let raft = self.cfg.raft.clone();
        let s = &mut self.nodes[Self::idx(id)];
        if let Some(st) = s.parked.take() {
            match RaftNode::new(id, raft, st) {
                Ok(n) => s.node = Some(n),
                Err(e) => panic!("restart {id}: {e}"),
            }
            self.event(|| format!("restart {id}"));
        }
    }

    fn leader(&self) -> Option<NodeId> {
        // The live leader with the highest term (a stale one may linger).
        self.nodes
            .iter()
            .filter_map(|s| s.node.as_ref())
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Any live node that believes it leads, chosen by the seed (a deposed leader
    /// that has not noticed yet is a valid choice: it must refuse or stay correct).
    /// A strictly increasing history clock: every invocation and response gets
    /// its own instant, so real-time order within one step is exact.
    fn history_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn any_leader(&mut self) -> Option<NodeId> {
        let claims: Vec<NodeId> = self
            .nodes
            .iter()
            .filter_map(|s| s.node.as_ref())
            .filter(|n| n.role() == Role::Leader)
            .map(|n| n.id())
            .collect();
        if claims.is_empty() {
            return None;
        }
        Some(claims[self.rng.below(claims.len() as u64) as usize])
    }

    fn membership_ops(&mut self) {
        if !self.rng.chance_ppm(15_000) {
            return;
        }
        let Some(lid) = self.leader() else { return };
        let conf = self.nodes[Self::idx(lid)]
            .node
            .as_ref()
            .map(|n| n.status().conf)
            .unwrap_or_default();
        let choice = self.rng.below(4);
        let cc = match choice {
            0 => {
                let spare = self
                    .nodes
                    .iter()
                    .find(|s| !s.retired && s.node.is_some() && !conf.contains(s.id));
                match spare {
                    Some(s) => ConfChange::AddLearner(s.id),
                    None => return,
                }
            }
            1 => match conf.learners.first() {
                Some(l) => ConfChange::PromoteLearner(*l),
                None => return,
            },
            2 if conf.voters.len() > 3 => {
                let v = conf.voters[self.rng.below(conf.voters.len() as u64) as usize];
                ConfChange::Remove(v)
            }
            _ => {
                // Leadership transfer to a random other voter.
                let others: Vec<NodeId> =
                    conf.voters.iter().copied().filter(|v| *v != lid).collect();
                if others.is_empty() {
                    return;
                }
                let t = others[self.rng.below(others.len() as u64) as usize];
                if let Some(n) = self.nodes[Self::idx(lid)].node.as_mut()
                    && n.transfer_leader(t).is_ok()
                {
                    self.report.transfers += 1;
                    self.event(|| format!("transfer {lid}->{t}"));
                }
                return;
            }
        };
        let Some(n) = self.nodes[Self::idx(lid)].node.as_mut() else {
            return;
        };
        let res = n.propose_conf_change(cc.clone());
        if let Ok(i) = res {
            self.report.conf_changes += 1;
            self.event(|| format!("propose {cc:?} at {i} via {lid}"));
        }
    }

    fn client_ops(&mut self) {
        for c in 0..self.clients.len() {
            if self.clients[c].is_some() || !self.rng.chance_ppm(300_000) {
                continue;
            }
            let Some(lid) = self.any_leader() else { return };
            let key = self.rng.below(KEYS as u64) as u8;
            let op = self.next_op;
            let is_put = self.rng.chance_ppm(500_000);
            let now = self.history_clock();
            let Some(n) = self.nodes[Self::idx(lid)].node.as_mut() else {
                return;
            };
            if is_put {
                let value = op; // unique, non-zero
                if let Ok(index) = n.propose(encode_put(op, key, value)) {
                    self.next_op += 1;
                    let h = self.history.entry(key).or_default();
                    h.push(Some(LinOp {
                        kind: OpKind::Put(value),
                        invoke: now,
                        ret: None,
                    }));
                    let hist = h.len() - 1;
                    self.clients[c] = Some(Pending::Put {
                        node: lid,
                        index,
                        op,
                        key,
                        hist,
                    });
                }
            } else {
                let term = n.term();
                if n.read_index(op).is_ok() {
                    self.next_op += 1;
                    self.clients[c] = Some(Pending::Get {
                        node: lid,
                        key,
                        ctx: op,
                        read_index: None,
                        term,
                        invoke: now,
                    });
                }
            }
        }
    }

    /// The client gives up waiting: a put stays in the history with an unknown
    /// outcome (resolved later from the committed log); a get is dropped.
    fn abandon(&mut self, c: usize) {
        if let Some(Pending::Put {
            index,
            op,
            key,
            hist,
            ..
        }) = self.clients[c].take()
        {
            self.unresolved.push((index, op, key, hist));
        }
    }

    fn process_ready(&mut self, i: usize) -> Result<(), String> {
        let mut guard = 0;
        loop {
            let s = &mut self.nodes[i];
            let Some(node) = s.node.as_mut() else {
                return Ok(());
            };
            if !node.has_ready() {
                break;
            }
            guard += 1;
            if guard > 1000 {
                return Err(format!("node {} ready loop does not settle", s.id));
            }
            let rd = node.ready();
            let id = s.id;
            if let Some(snap) = &rd.snapshot {
                s.kv.restore(&snap.data);
                s.applied = snap.meta.index;
                let (index, kvh) = (snap.meta.index, s.kv.hash());
                self.report.snapshots_installed += 1;
                self.event(|| format!("{id} restores snapshot at {index}"));
                if let Some((_, h)) = self.applied.get(&index)
                    && *h != kvh
                {
                    return Err(format!(
                        "{id}: snapshot at {index} has KV hash {kvh:x}, applied state had {h:x}"
                    ));
                }
            }
            for m in rd.messages {
                self.send(m);
            }
            for e in &rd.committed {
                self.apply(i, e)?;
            }
            for rs in rd.read_states {
                for c in self.clients.iter_mut().flatten() {
                    if let Pending::Get {
                        node,
                        ctx,
                        read_index,
                        ..
                    } = c
                        && *node == id
                        && *ctx == rs.ctx
                    {
                        *read_index = Some(rs.index);
                    }
                }
            }
            let s = &mut self.nodes[i];
            let Some(node) = s.node.as_mut() else {
                return Ok(());
            };
            node.advance();
            if node.snapshot_due() {
                node.create_snapshot(s.kv.snapshot());
            }
        }
        self.serve_reads(i);
        Ok(())
    }

    fn apply(&mut self, i: usize, e: &Entry) -> Result<(), String> {
        let s = &mut self.nodes[i];
        let id = s.id;
        if e.index != s.applied + 1 {
            return Err(format!("{id} applies {} after {}", e.index, s.applied));
        }
        if let EntryKind::Normal(d) = &e.kind {
            s.kv.apply(e.index, d);
        }
        s.applied = e.index;
        let (h, kvh) = (entry_hash(e), s.kv.hash());
        match self.applied.get(&e.index) {
            Some((h0, k0)) if *h0 != h || *k0 != kvh => {
                return Err(format!(
                    "state-machine safety: {id} applied a different entry/state at {}",
                    e.index
                ));
            }
            Some(_) => {}
            None => {
                self.applied.insert(e.index, (h, kvh));
                self.applied_entries.insert(e.index, e.clone());
                let bound = self
                    .nodes
                    .iter()
                    .filter_map(|s| s.node.as_ref())
                    .map(|n| n.term())
                    .max()
                    .unwrap_or(0)
                    .max(self.report.max_term);
                self.commit_term.insert(e.index, bound);
                self.max_committed = self.max_committed.max(e.index);
                if let EntryKind::ConfigChange(cc) = &e.kind {
                    let cc = cc.clone();
                    let idx = e.index;
                    self.event(|| format!("commit {cc:?} at {idx}"));
                    if let ConfChange::Remove(r) = cc {
                        self.retire(r);
                    }
                }
            }
        }
        // Resolve a client's put waiting on this node and index.
        for c in 0..self.clients.len() {
            if let Some(Pending::Put {
                node,
                index,
                op,
                key,
                hist,
            }) = self.clients[c].clone()
                && node == id
                && index == e.index
            {
                self.clients[c] = None;
                let ours = matches!(&e.kind, EntryKind::Normal(d) if decode_put(d).is_some_and(|p| p.0 == op));
                self.finish_put(key, hist, ours);
            }
        }
        Ok(())
    }

    fn finish_put(&mut self, key: u8, hist: usize, applied: bool) {
        let now = self.history_clock();
        if let Some(h) = self.history.get_mut(&key) {
            if applied {
                if let Some(op) = h[hist].as_mut() {
                    op.ret = Some(now);
                }
                self.report.ops_completed += 1;
            } else {
                // Definitely never took effect: it could only commit at its index.
                h[hist] = None;
            }
        }
        self.dirty_keys.insert(key);
    }

    fn retire(&mut self, id: NodeId) {
        let s = &mut self.nodes[Self::idx(id)];
        if !s.retired {
            s.retired = true;
            s.node = None;
            s.parked = None;
            self.event(|| format!("retire {id}"));
        }
    }

    fn serve_reads(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let applied = self.nodes[i].applied;
        let now = self.history_clock();
        for c in 0..self.clients.len() {
            let Some(Pending::Get {
                node,
                key,
                read_index: Some(ri),
                invoke,
                ..
            }) = self.clients[c].clone()
            else {
                continue;
            };
            if node != id || applied < ri {
                continue;
            }
            let v = self.nodes[i].kv.get(key);
            self.clients[c] = None;
            self.history.entry(key).or_default().push(Some(LinOp {
                kind: OpKind::Get(v),
                invoke,
                ret: Some(now),
            }));
            self.report.ops_completed += 1;
            self.dirty_keys.insert(key);
        }
        // A get whose node lost leadership before confirming its read is dropped.
        for c in 0..self.clients.len() {
            if let Some(Pending::Get {
                node,
                read_index: None,
                term,
                ..
            }) = &self.clients[c]
                && *node == id
            {
                let n = self.nodes[i].node.as_ref();
                if n.is_none_or(|n| n.term() != *term || n.role() != Role::Leader) {
                    self.clients[c] = None;
                }
            }
        }
    }
}

impl Sim {
    /// Every safety check; called after each step.
    fn check(&mut self) -> Result<(), String> {
        self.check_roles()?;
        self.check_logs()?;
        self.resolve_unknown_puts();
        self.check_linearizable()
    }

    fn check_roles(&mut self) -> Result<(), String> {
        let mut new_leaders = Vec::new();
        for s in &self.nodes {
            let Some(n) = s.node.as_ref() else { continue };
            self.report.max_term = self.report.max_term.max(n.term());
            if n.role() != Role::Leader {
                continue;
            }
            match self.leaders.get(&n.term()) {
                Some(l) if *l != s.id => {
                    return Err(format!(
                        "election safety: {} and {} both lead term {}",
                        l,
                        s.id,
                        n.term()
                    ));
                }
                Some(_) => {}
                None => new_leaders.push((n.term(), s.id)),
            }
        }
        for (t, id) in new_leaders {
            self.leaders.insert(t, id);
            self.report.elections += 1;
            let n = self.nodes[Self::idx(id)]
                .node
                .as_ref()
                .expect("leader is live");
            let (voters, last) = (n.status().conf.voters, n.storage().last_index());
            self.event(|| format!("{id} leads term {t} (voters {voters:?}, last {last})"));
            let n = self.nodes[Self::idx(id)]
                .node
                .as_ref()
                .expect("leader is live");
            let st = n.storage();
            let lo = st.first_index();
            // Leader completeness: every entry committed by a leader of an earlier
            // term is in this leader's log. `commit_term[i]` bounds from above the
            // term of the leader that committed `i` (the newest term seen then).
            for (i, e) in self.applied_entries.range(lo..) {
                if self.commit_term.get(i).is_none_or(|ct| *ct >= t) {
                    continue;
                }
                match st.entry(*i) {
                    Some(x) if x == e => {}
                    _ => {
                        return Err(format!(
                            "leader completeness: {id} (term {t}) lacks committed entry {i}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_logs(&mut self) -> Result<(), String> {
        for k in 0..self.nodes.len() {
            let id = self.nodes[k].id;
            let Some(n) = self.nodes[k].node.as_mut() else {
                continue;
            };
            let Some(from) = n.storage_mut().take_dirty_from() else {
                continue;
            };
            let st = n.storage();
            let lo = from.max(st.first_index());
            for i in lo..=st.last_index() {
                let Some(e) = st.entry(i) else { break };
                let prev_term = st.term(i - 1).unwrap_or(0);
                let key = (i, e.term);
                let val = (entry_hash(e), prev_term);
                match self.log_ids.get(&key) {
                    Some(v) if *v != val => {
                        return Err(format!(
                            "log matching: {id} has a different entry at ({i}, term {})",
                            e.term
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.log_ids.insert(key, val);
                    }
                }
            }
        }
        Ok(())
    }

    fn resolve_unknown_puts(&mut self) {
        let mut keep = Vec::new();
        for (index, op, key, hist) in std::mem::take(&mut self.unresolved) {
            match self.applied_entries.get(&index) {
                None => keep.push((index, op, key, hist)),
                Some(e) => {
                    let ours = matches!(&e.kind, EntryKind::Normal(d) if decode_put(d).is_some_and(|p| p.0 == op));
                    if !ours {
                        if let Some(h) = self.history.get_mut(&key) {
                            h[hist] = None;
                        }
                        self.dirty_keys.insert(key);
                    }
                    // If ours, it took effect at an unknown time: leave ret = None.
                }
            }
        }
        self.unresolved = keep;
    }

    fn check_linearizable(&mut self) -> Result<(), String> {
        for key in std::mem::take(&mut self.dirty_keys) {
            let ops: Vec<LinOp> = self
                .history
                .get(&key)
                .map(|h| h.iter().flatten().copied().collect())
                .unwrap_or_default();
            match lin::check(&ops) {
                LinResult::Ok => {}
                LinResult::Inconclusive => self.report.lin_inconclusive += 1,
                LinResult::Violation => {
                    let mut s = format!("linearizability: key {key} history:");
                    for o in &ops {
                        let _ = write!(s, " {:?}@{}..{:?}", o.kind, o.invoke, o.ret);
                    }
                    return Err(s);
                }
            }
        }
        Ok(())
    }
}

/// Runs one seed.
pub fn run_seed(cfg: SimConfig) -> (SimReport, Vec<String>) {
    Sim::new(cfg).run()
}

#[cfg(test)]
mod tests;
