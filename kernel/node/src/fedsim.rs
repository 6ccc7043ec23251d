//! The federation simulator (issue 16): member clusters and a gate group of real
//! [`Node`]s — the type the kernel runs — over one `xdv_testkit::PacketSim`, with a
//! latency per link. Deterministic: one seed gives the same run, step for step.
//!
//! Layout: gate node `i` is node id `i` (1..=`gates`) of cluster id [`GATE_CLUSTER`];
//! node `j` of member cluster `k` (0-based) is node id `10·(k+1) + j` of cluster id
//! `k + 1`. Every link inside a group takes 1 ms; every link between a gate node and
//! a cluster's node takes 1 ms + that cluster's extra delay ([`FedSim::set_link_delay`],
//! both ways, a `PacketSim` clog), so the gate's Vivaldi coordinate and the clusters'
//! leaders' coordinates see it. Every node pings its members and its federation peers
//! every 500 ms (the kernel transport's heartbeat period); the pongs are RTT samples.
//!
//! One tenant submits through the gate ([`FedSim::submit`], signed for the gate
//! group's cluster id, resent to the next gate node until answered); the chosen
//! cluster's workers run each task for `task_ms` ([`FedSim::set_task_ms`] changes it
//! for later runs, e.g. a task that hangs). Faults: crashing a node for good
//! ([`FedSim::crash`]; its last state is kept for comparison), cutting every link
//! between the gates and one cluster ([`FedSim::cut_gate_links`]), and a federation
//! message put on the wire as if a node had sent it ([`FedSim::inject_fed`]: a late
//! or replayed message). Every group's task timeouts are `TaskTimeouts::DEFAULT`
//! scaled by `FedOptions::timeout_per_mille`.
//!
//! After every step [`FedSim::step`] checks: each running node's own invariants, at
//! most one leader per term in each group, and one state hash per applied index in
//! each group. [`FedSim::digest`] hashes everything the nodes put out (audit records,
//! notes), so two runs of one seed can be compared.

use crate::config::{FederationConfig, Identity, NodeConfig};
use crate::node::{ClientConn, Node};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use xdv_cluster::gate::GateState;
use xdv_cluster::mgmt::{self, Principal, Request, Response, SignedRequest, Submit};
use xdv_cluster::{Completion, Outcome, Work};
use xdv_federation::ClusterId;
use xdv_federation::route::RouteConfig;
use xdv_raft::Role;
use xdv_testkit::{NetFaults, PacketSim};
use xdv_types::rng::SplitMix64;
use xdv_types::{Hash32, NodeId, TenantId};

/// The gate group's cluster id.
pub const GATE_CLUSTER: u32 = 100;
/// The simulated tenant's client (a network node id above every node's).
pub const CLIENT_ID: u32 = 1000;
/// The one tenant.
pub const TENANT: TenantId = TenantId(1);
const PING_EVERY_MS: u64 = 500;
const CLIENT_RETRY_MS: u64 = 2_000;
const REGION_BYTES: usize = 512 * 1024;
/// Node notes kept for a failure report.
const TRACE_LINES: usize = 300;

/// What a run simulates.
#[derive(Clone, Debug)]
pub struct FedOptions {
    pub seed: u64,
    /// Gate nodes, 1..=3.
    pub gates: u32,
    /// Nodes of each member cluster, each 1..=3.
    pub clusters: Vec<u32>,
    /// Extra one-way delay (ms) on the links between the gates and each cluster, at
    /// the start.
    pub link_ms: Vec<u64>,
    /// The router's hold-down, degrade confirmation and cooldown scaled by this / 1000
    /// (the seed's 30 s / 60 s / 120 s at 1000).
    pub route_per_mille: u64,
    /// This member cluster (index) was provisioned without the tenant: it refuses
    /// every dispatch.
    pub unprovisioned: Option<usize>,
    /// How long each task runs, ms.
    pub task_ms: u64,
    /// Every group's `TaskTimeouts::DEFAULT` scaled by this / 1000 (50: checks every
    /// 1.5 s, stuck after 6 s, gate check 750 ms, gate fallback 15 s).
    pub timeout_per_mille: u64,
}

impl FedOptions {
    pub fn new(seed: u64) -> FedOptions {
        FedOptions {
            seed,
            gates: 1,
            clusters: vec![1, 1],
            link_ms: vec![4, 4],
            route_per_mille: 500,
            unprovisioned: None,
            task_ms: 50,
            timeout_per_mille: 50,
        }
    }

    /// The router's constants of the run.
    pub fn route(&self) -> RouteConfig {
        let d = RouteConfig::DEFAULT;
        let s = |ms: u64| (ms.saturating_mul(self.route_per_mille) / 1000).max(1);
        RouteConfig {
            hold_down_ms: s(d.hold_down_ms),
            degrade_confirm_ms: s(d.degrade_confirm_ms),
            cooldown_ms: s(d.cooldown_ms),
            ..d
        }
    }
}

#[derive(Clone, Debug)]
enum Msg {
    Raft(Vec<u8>),
    Forward(Vec<u8>),
    Request { generation: u64, bytes: Vec<u8> },
    Reply { generation: u64, bytes: Vec<u8> },
    Ping { sent_ms: u64 },
    Pong { sent_ms: u64, coordinate: Vec<u8> },
}

struct SimNode {
    id: u32,
    /// 0: the gate group; k + 1: member cluster k.
    group: u32,
    node: Option<Node<crate::durable::TearRegion>>,
    /// The node as it was when it crashed.
    crashed: Option<Node<crate::durable::TearRegion>>,
    members: Vec<u32>,
    fed_peers: Vec<u32>,
    inbox: VecDeque<(u32, Msg)>,
    /// Running tasks: finish time → completion.
    workers: BTreeMap<(u64, u64, u32), Completion>,
}

/// The simulator. See the module documentation.
pub struct FedSim {
    opts: FedOptions,
    now_ms: u64,
    net: PacketSim<Msg>,
    nodes: Vec<SimNode>,
    client_seed: [u8; 32],
    next_seq: u64,
    /// Submissions not answered yet: seq → (request bytes, gate tried, generation, sent at).
    inflight: BTreeMap<u64, (Vec<u8>, u32, u64, u64)>,
    generation: u64,
    /// What the client was told: seq → (job, cluster).
    routed: BTreeMap<u64, (u64, Option<ClusterId>)>,
    /// Queries sent ([`FedSim::query`]) by generation, and their answers.
    queries: BTreeMap<u64, Option<Response>>,
    leaders: BTreeMap<(u32, u64), u32>,
    hashes: BTreeMap<(u32, u64), Hash32>,
    digest: Sha256,
    trace: VecDeque<String>,
}

fn seed_bytes(rng: &mut SplitMix64) -> [u8; 32] {
    let mut s = [0u8; 32];
    for chunk in s.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    s
}

fn group_ids(opts: &FedOptions, group: u32) -> Vec<u32> {
    if group == 0 {
        (1..=opts.gates).collect()
    } else {
        (1..=opts.clusters[group as usize - 1])
            .map(|j| 10 * group + j)
            .collect()
    }
}

impl FedSim {
    pub fn new(opts: FedOptions) -> FedSim {
        assert!((1..=3).contains(&opts.gates), "1 to 3 gate nodes");
        assert!(
            opts.clusters.iter().all(|n| (1..=3).contains(n)),
            "1 to 3 nodes per cluster"
        );
        assert_eq!(opts.clusters.len(), opts.link_ms.len());
        let mut rng = SplitMix64(opts.seed);
        let client_seed = seed_bytes(&mut rng);
        let operator_key = xdv_cluster::public_key(&seed_bytes(&mut rng));
        let tenant = (TENANT, xdv_cluster::public_key(&client_seed));
        let groups = opts.clusters.len() as u32 + 1;
        let gate_ids: Vec<NodeId> = group_ids(&opts, 0).into_iter().map(NodeId).collect();
        let member_clusters: Vec<(ClusterId, Vec<NodeId>)> = (1..groups)
            .map(|g| {
                let ids = group_ids(&opts, g).into_iter().map(NodeId).collect();
                (ClusterId(g), ids)
            })
            .collect();
        let mut nodes = Vec::new();
        for g in 0..groups {
            let ids = group_ids(&opts, g);
            let seeds: Vec<[u8; 32]> = ids.iter().map(|_| seed_bytes(&mut rng)).collect();
            let peers: Vec<(u32, [u8; 32])> = ids
                .iter()
                .zip(&seeds)
                .map(|(&id, s)| (id, xdv_cluster::public_key(s)))
                .collect();
            let tenants = if g > 0 && opts.unprovisioned == Some(g as usize - 1) {
                Vec::new()
            } else {
                vec![tenant]
            };
            let federation = if g == 0 {
                FederationConfig::Gate {
                    clusters: member_clusters.clone(),
                    route: alloc::boxed::Box::new(opts.route()),
                    dispatch_every_ms: 300,
                }
            } else {
                FederationConfig::Member {
                    gate_cluster: GATE_CLUSTER,
                    gates: gate_ids.clone(),
                    heartbeat_every_ms: 1_000,
                }
            };
            let fed_peers: Vec<u32> = if g == 0 {
                member_clusters
                    .iter()
                    .flat_map(|(_, n)| n.iter().map(|x| x.0))
                    .collect()
            } else {
                gate_ids.iter().map(|x| x.0).collect()
            };
            for (&id, s) in ids.iter().zip(&seeds) {
                let identity = Identity {
                    node: id,
                    cluster: if g == 0 { GATE_CLUSTER } else { g },
                    seed: Some(*s),
                    peers: peers.clone(),
                    tenants: tenants.clone(),
                    operator_key,
                };
                let mut cfg = NodeConfig::new(identity, 2);
                cfg.federation = Some(federation.clone());
                cfg.state.timeouts =
                    xdv_cluster::TaskTimeouts::DEFAULT.scaled(opts.timeout_per_mille);
                let region = crate::durable::TearRegion::new(vec![0; REGION_BYTES]);
                nodes.push(SimNode {
                    id,
                    group: g,
                    node: Some(Node::new(cfg, region, 0)),
                    crashed: None,
                    members: ids.clone(),
                    fed_peers: fed_peers.clone(),
                    inbox: VecDeque::new(),
                    workers: BTreeMap::new(),
                });
            }
        }
        let mut net = PacketSim::new(rng.next_u64(), NetFaults::none());
        for (k, &extra) in opts.link_ms.iter().enumerate() {
            set_delay(&mut net, &opts, k, extra, 0);
        }
        FedSim {
            opts,
            now_ms: 0,
            net,
            nodes,
            client_seed,
            next_seq: 1,
            inflight: BTreeMap::new(),
            generation: 0,
            routed: BTreeMap::new(),
            queries: BTreeMap::new(),
            leaders: BTreeMap::new(),
            hashes: BTreeMap::new(),
            digest: Sha256::new(),
            trace: VecDeque::new(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The extra one-way delay between every gate node and cluster `k`'s nodes
    /// (both ways) from now on.
    pub fn set_link_delay(&mut self, k: usize, extra_ms: u64) {
        self.trace(alloc::format!(
            "links gate <-> c{} now +{extra_ms} ms",
            k + 1
        ));
        set_delay(&mut self.net, &self.opts, k, extra_ms, self.now_ms);
    }

    /// Tasks started from now on run for `ms` (a very long one hangs).
    pub fn set_task_ms(&mut self, ms: u64) {
        self.trace(alloc::format!("tasks now run {ms} ms"));
        self.opts.task_ms = ms;
    }

    /// Cuts (`true`) or heals every link between the gate nodes and cluster `k`'s nodes.
    pub fn cut_gate_links(&mut self, k: usize, cut: bool) {
        self.trace(alloc::format!(
            "links gate <-> c{} {}",
            k + 1,
            if cut { "cut" } else { "healed" }
        ));
        for g in group_ids(&self.opts, 0) {
            for c in group_ids(&self.opts, k as u32 + 1) {
                for (a, b) in [(g, c), (c, g)] {
                    if cut {
                        self.net.cut(a, b);
                    } else {
                        self.net.heal(a, b);
                    }
                }
            }
        }
    }

    /// Cuts (`true`) or heals the link between nodes `a` and `b`, both ways.
    pub fn cut_link(&mut self, a: u32, b: u32, cut: bool) {
        self.trace(alloc::format!(
            "link n{a} <-> n{b} {}",
            if cut { "cut" } else { "healed" }
        ));
        for (x, y) in [(a, b), (b, a)] {
            if cut {
                self.net.cut(x, y);
            } else {
                self.net.heal(x, y);
            }
        }
    }

    /// Puts federation message `m` on the wire from `from` to `to`, as `from` would
    /// send it (a late or replayed message).
    pub fn inject_fed(&mut self, from: u32, to: u32, m: xdv_cluster::gate::FedMsg) {
        self.trace(alloc::format!("inject n{from} -> n{to}: {m:?}"));
        let b = mgmt::encode(&mgmt::PeerForward::Federation(m));
        self.net.send(self.now_ms, from, to, Msg::Forward(b));
    }

    /// Crashes node `id` for good (its state is kept for [`FedSim::crashed_node`]).
    pub fn crash(&mut self, id: u32) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.id == id)
            && let Some(node) = n.node.take()
        {
            n.crashed = Some(node);
            n.inbox.clear();
            n.workers.clear();
            self.net.drop_all_to(id);
            self.trace(alloc::format!("n{id}: crashed"));
        }
    }

    pub fn node(&self, id: u32) -> Option<&Node<crate::durable::TearRegion>> {
        self.nodes.iter().find(|n| n.id == id)?.node.as_ref()
    }

    pub fn crashed_node(&self, id: u32) -> Option<&Node<crate::durable::TearRegion>> {
        self.nodes.iter().find(|n| n.id == id)?.crashed.as_ref()
    }

    /// The running leader of group `group` (0: the gates; k + 1: cluster k).
    pub fn leader(&self, group: u32) -> Option<u32> {
        self.nodes
            .iter()
            .filter(|n| n.group == group)
            .find(|n| {
                n.node
                    .as_ref()
                    .and_then(|x| x.raft())
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .map(|n| n.id)
    }

    /// The gate group's state on its leader (else on any running gate node).
    pub fn gate_state(&self) -> Option<&GateState> {
        let id = self.leader(0).or_else(|| {
            group_ids(&self.opts, 0)
                .into_iter()
                .find(|&i| self.node(i).is_some())
        })?;
        self.node(id)?.state().gate()
    }

    /// The running gate nodes' states.
    pub fn gate_replicas(&self) -> Vec<(u32, &GateState)> {
        self.nodes
            .iter()
            .filter(|n| n.group == 0)
            .filter_map(|n| Some((n.id, n.node.as_ref()?.state().gate()?)))
            .collect()
    }

    /// What the client was told for submission `seq`: (job, chosen cluster).
    pub fn routed(&self, seq: u64) -> Option<(u64, Option<ClusterId>)> {
        self.routed.get(&seq).copied()
    }

    /// The digest of everything the nodes put out so far.
    pub fn digest(&self) -> Hash32 {
        Hash32(self.digest.clone().finalize().into())
    }

    /// The last node notes and simulator events, for a failure message.
    pub fn trace(&mut self, line: String) {
        if self.trace.len() >= TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace
            .push_back(alloc::format!("[{:>6} ms] {line}", self.now_ms));
    }

    pub fn trace_text(&self) -> String {
        self.trace.iter().fold(String::new(), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        })
    }

    fn fail(&self, why: String) -> String {
        alloc::format!(
            "seed {} failed at {} ms: {why}\n{}",
            self.opts.seed,
            self.now_ms,
            self.trace_text()
        )
    }

    /// The tenant submits its next task through the gate; returns its seq.
    pub fn submit(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let req = SignedRequest::sign(
            GATE_CLUSTER,
            Principal::Tenant(TENANT),
            seq,
            Request::Submit(Submit::new(
                Work::Builtin("hash".into()),
                seq.to_le_bytes().to_vec(),
                1_000,
            )),
            &self.client_seed,
        );
        let bytes = mgmt::encode(&req);
        let to = self.leader(0).unwrap_or(1);
        self.send_request(seq, bytes, to);
        seq
    }

    fn send_request(&mut self, seq: u64, bytes: Vec<u8>, to: u32) {
        self.generation += 1;
        let generation = self.generation;
        self.net.send(
            self.now_ms,
            CLIENT_ID,
            to,
            Msg::Request {
                generation,
                bytes: bytes.clone(),
            },
        );
        self.inflight
            .insert(seq, (bytes, to, generation, self.now_ms));
    }

    fn client_step(&mut self) {
        let now = self.now_ms;
        let gates = self.opts.gates;
        let due: Vec<(u64, Vec<u8>, u32)> = self
            .inflight
            .iter()
            .filter(|(_, x)| now.saturating_sub(x.3) >= CLIENT_RETRY_MS)
            .map(|(s, x)| (*s, x.0.clone(), x.1 % gates + 1))
            .collect();
        for (seq, bytes, to) in due {
            self.send_request(seq, bytes, to);
        }
    }

    /// The tenant sends `request` (a query) to gate node `to` once; the answer, when
    /// it came, is [`FedSim::answer`] of the returned id.
    pub fn query(&mut self, to: u32, request: Request) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let req = SignedRequest::sign(
            GATE_CLUSTER,
            Principal::Tenant(TENANT),
            seq,
            request,
            &self.client_seed,
        );
        self.generation += 1;
        let generation = self.generation;
        let bytes = mgmt::encode(&req);
        self.net.send(
            self.now_ms,
            CLIENT_ID,
            to,
            Msg::Request { generation, bytes },
        );
        self.queries.insert(generation, None);
        generation
    }

    pub fn answer(&self, id: u64) -> Option<&Response> {
        self.queries.get(&id)?.as_ref()
    }

    fn client_reply(&mut self, generation: u64, bytes: &[u8]) {
        if let Some(slot) = self.queries.get_mut(&generation) {
            *slot = mgmt::decode::<Response>(bytes).ok();
            return;
        }
        let Some((&seq, _)) = self.inflight.iter().find(|(_, x)| x.2 == generation) else {
            return;
        };
        if let Ok(Response::Routed { job, cluster }) = mgmt::decode::<Response>(bytes) {
            self.inflight.remove(&seq);
            self.routed.insert(seq, (job, cluster));
            self.trace(alloc::format!(
                "client: seq {seq} is job {job} at {cluster:?}"
            ));
        }
    }

    /// Runs `ms` simulated milliseconds.
    pub fn run_for(&mut self, ms: u64) -> Result<(), String> {
        for _ in 0..ms {
            self.step()?;
        }
        Ok(())
    }

    /// Runs until `done` holds (checked every 10 ms) or `limit_ms` more passed;
    /// `Ok(false)` when it never held.
    pub fn run_until(
        &mut self,
        limit_ms: u64,
        done: impl Fn(&FedSim) -> bool,
    ) -> Result<bool, String> {
        let end = self.now_ms + limit_ms;
        while self.now_ms < end {
            if self.now_ms.is_multiple_of(10) && done(self) {
                return Ok(true);
            }
            self.step()?;
        }
        Ok(done(self))
    }

    /// One simulated millisecond, then the invariants.
    pub fn step(&mut self) -> Result<(), String> {
        self.now_ms += 1;
        let now = self.now_ms;
        self.client_step();
        for d in self.net.deliver(now) {
            if d.to == CLIENT_ID {
                if let Msg::Reply { generation, bytes } = d.msg {
                    self.client_reply(generation, &bytes);
                }
            } else if let Some(n) = self.nodes.iter_mut().find(|n| n.id == d.to)
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
        let id = n.id;
        let Some(node) = n.node.as_mut() else { return };
        let mut sends: Vec<(u32, Msg)> = Vec::new();
        node.hold();
        node.tick(now);
        while let Some((from, msg)) = n.inbox.pop_front() {
            let member = n.members.contains(&from);
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
                Msg::Ping { sent_ms } => {
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
                    let rtt_us = now.saturating_sub(sent_ms).max(1) * 1000;
                    if member {
                        node.on_peer_rtt(NodeId(from), rtt_us, &coordinate);
                    } else {
                        node.on_fed_rtt(NodeId(from), rtt_us, &coordinate);
                    }
                }
                Msg::Reply { .. } => {}
            }
        }
        if (now + u64::from(id) * 37).is_multiple_of(PING_EVERY_MS) {
            for &to in n.members.iter().chain(&n.fed_peers) {
                if to != id {
                    sends.push((to, Msg::Ping { sent_ms: now }));
                }
            }
        }
        let due: Vec<(u64, u64, u32)> = n
            .workers
            .range(..(now + 1, 0, 0))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(c) = n.workers.remove(&k) {
                node.on_task_done(c);
            }
        }
        node.release();
        let out = node.drain();
        for (to, m) in sends {
            self.net.send(now, id, to, m);
        }
        let mut h = Sha256::new();
        for line in &out.notes {
            h.update(line.as_bytes());
        }
        for body in &out.audit {
            h.update(postcard::to_allocvec(body).unwrap_or_default());
        }
        self.digest.update(id.to_le_bytes());
        self.digest.update(h.finalize());
        for line in out.notes {
            self.trace(alloc::format!("n{id}: {line}"));
        }
        for (to, b) in out.raft {
            self.net.send(now, id, to.0, Msg::Raft(b));
        }
        for (to, b) in out.forwards {
            self.net.send(now, id, to.0, Msg::Forward(b));
        }
        for (conn, bytes) in out.replies {
            let generation = conn.generation;
            self.net
                .send(now, id, conn.slot, Msg::Reply { generation, bytes });
        }
        for run in out.run {
            let took = self.opts.task_ms.max(1);
            self.trace(alloc::format!(
                "n{id}: runs {} #{} for {took} ms",
                run.task,
                run.attempt
            ));
            let c = Completion {
                task: run.task,
                node: NodeId(id),
                attempt: run.attempt,
                outcome: Outcome::Executed,
                ticks: took,
                output_hash: Hash32::ZERO,
                output: Vec::new(),
                log: Vec::new(),
            };
            self.nodes[i]
                .workers
                .insert((now + took, run.task.0, run.attempt), c);
        }
        for (task, attempt) in out.stop {
            self.nodes[i]
                .workers
                .retain(|k, _| !(k.1 == task.0 && k.2 == attempt));
        }
    }

    /// Each running node's invariants; one leader per term per group; one state hash
    /// per applied index per group.
    pub fn invariants(&mut self) -> Result<(), String> {
        for n in &self.nodes {
            let Some(node) = n.node.as_ref() else {
                continue;
            };
            node.invariants()
                .map_err(|e| alloc::format!("n{}: {e}", n.id))?;
            if let Some(r) = node.raft()
                && r.role() == Role::Leader
            {
                let term = r.term();
                match self.leaders.insert((n.group, term), n.id) {
                    Some(other) if other != n.id => {
                        return Err(alloc::format!(
                            "group {}: two leaders in term {term}: n{other} and n{}",
                            n.group,
                            n.id
                        ));
                    }
                    _ => {}
                }
            }
            let index = node.state().data().applied_index;
            let hash = node.state().hash();
            match self.hashes.insert((n.group, index), hash) {
                Some(h) if h != hash => {
                    return Err(alloc::format!(
                        "group {}: n{} has another state hash at index {index}",
                        n.group,
                        n.id
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn set_delay(net: &mut PacketSim<Msg>, opts: &FedOptions, k: usize, extra: u64, now: u64) {
    for g in group_ids(opts, 0) {
        for c in group_ids(opts, k as u32 + 1) {
            for (a, b) in [(g, c), (c, g)] {
                if extra == 0 {
                    net.unclog(a, b);
                } else {
                    net.clog(a, b, u64::MAX, extra);
                }
            }
        }
    }
    let _ = now;
}
