//! Host side of the management API: cluster keys and provisioning modules (written by
//! `cargo xdv up`), and a client that sends signed requests to a node's management port.
//!
//! `keys.json` in the cluster directory holds the cluster id, the operator's and every
//! tenant's Ed25519 seed (secret: the directory is the operator's), and every node's
//! seed; `node<N>.prov` is node N's provisioning module (its own seed, every node's and
//! tenant's public key). Sequence numbers are microseconds since the Unix epoch, so they
//! grow across invocations without stored state.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use xdv_boot::provision::{self, Peer, Provision, Tenant};
use xdv_cluster::mgmt::{
    self, ClusterView, Denied, MAX_AWAIT_TASKS, MAX_BATCH_SUBMISSIONS, Principal, Request,
    Response, SignedRequest, Submit,
};
use xdv_cluster::public_key;
use xdv_cluster::{Outcome, TaskStatus};
use xdv_net::wire::{self, ClusterMessage, FrameDecoder, FrameHeader, HOST_NODE};
use xdv_types::{NodeId, TaskId, TenantId, Timestamp};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keys {
    pub cluster: u32,
    /// Operator seed, hex.
    pub operator: String,
    /// (node id, seed)
    pub nodes: Vec<(u32, String)>,
    /// (tenant id, seed)
    pub tenants: Vec<(u32, String)>,
    /// A federation (`up --clusters C --gates G`): its gate group and member clusters,
    /// each with its own cluster id (`cluster` above is the gate group's, so tenants
    /// sign for the gate by default). `None`: one plain cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<Federation>,
}

/// The groups of a federation and its timing (`keys.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Federation {
    /// The gate group first, then member clusters 1..=C.
    pub groups: Vec<FedGroup>,
    /// A gate leader's dispatch round, ms.
    pub dispatch_ms: u32,
    /// A member leader's heartbeat to the gates, ms.
    pub heartbeat_ms: u32,
    /// The router's hold-down, degrade confirmation and cooldown × this / 1000.
    pub route_per_mille: u32,
}

/// One cluster of a federation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FedGroup {
    pub cluster: u32,
    pub gate: bool,
    pub nodes: Vec<u32>,
}

impl Federation {
    /// Node ids of a federation of `gates` gate nodes and `clusters` clusters of
    /// `nodes` nodes each: gates 1..=G, then cluster 1's nodes, cluster 2's, ...
    /// (unique across the federation: node k is 10.0.0.k on the one switch). Cluster
    /// ids: the gate group's `base`, cluster k's `base + k`.
    pub fn layout(base: u32, gates: u32, clusters: u32, nodes: u32) -> Vec<FedGroup> {
        let mut groups = vec![FedGroup {
            cluster: base,
            gate: true,
            nodes: (1..=gates).collect(),
        }];
        for k in 0..clusters {
            let first = gates + k * nodes + 1;
            groups.push(FedGroup {
                cluster: base.wrapping_add(k + 1).max(1),
                gate: false,
                nodes: (first..first + nodes).collect(),
            });
        }
        groups
    }

    pub fn group_of(&self, node: u32) -> Option<&FedGroup> {
        self.groups.iter().find(|g| g.nodes.contains(&node))
    }

    /// The member clusters (not the gate group), with their 1-based numbers.
    pub fn clusters(&self) -> impl Iterator<Item = (usize, &FedGroup)> {
        self.groups
            .iter()
            .filter(|g| !g.gate)
            .enumerate()
            .map(|(i, g)| (i + 1, g))
    }

    /// The gate group.
    pub fn gate(&self) -> Option<&FedGroup> {
        self.groups.iter().find(|g| g.gate)
    }
}

fn random_seed() -> Result<[u8; 32]> {
    let mut s = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut s))
        .context("reading /dev/urandom for a key")?;
    Ok(s)
}

fn seed_of(hex_seed: &str) -> Result<[u8; 32]> {
    let v = hex::decode(hex_seed).context("a seed in keys.json is not hex")?;
    v.try_into()
        .map_err(|_| anyhow!("a seed in keys.json is not 32 bytes"))
}

impl Keys {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("keys.json")
    }

    /// Fresh keys for nodes `1..=nodes` and tenants `1..=tenants`.
    pub fn generate(nodes: u32, tenants: u32) -> Result<Keys> {
        let mut c = [0u8; 4];
        c.copy_from_slice(&random_seed()?[..4]);
        Ok(Keys {
            cluster: u32::from_le_bytes(c) | 1,
            operator: hex::encode(random_seed()?),
            nodes: (1..=nodes)
                .map(|n| Ok((n, hex::encode(random_seed()?))))
                .collect::<Result<_>>()?,
            tenants: (1..=tenants)
                .map(|t| Ok((t, hex::encode(random_seed()?))))
                .collect::<Result<_>>()?,
            federation: None,
        })
    }

    /// Fresh keys for a federation (see [`Federation::layout`]).
    pub fn generate_federation(
        gates: u32,
        clusters: u32,
        nodes: u32,
        tenants: u32,
        timing: (u32, u32, u32),
    ) -> Result<Keys> {
        let total = gates + clusters * nodes;
        let mut k = Keys::generate(total, tenants)?;
        // Room for the member clusters' ids above the gate group's.
        k.cluster = (k.cluster & 0x7fff_ffff).max(1);
        let (dispatch_ms, heartbeat_ms, route_per_mille) = timing;
        k.federation = Some(Federation {
            groups: Federation::layout(k.cluster, gates, clusters, nodes),
            dispatch_ms,
            heartbeat_ms,
            route_per_mille,
        });
        Ok(k)
    }

    /// These keys as seen by node `node`'s cluster: requests to it are signed for its
    /// cluster id (a federation's member cluster has its own).
    pub fn for_node(&self, node: u32) -> Keys {
        let mut k = self.clone();
        if let Some(g) = self.federation.as_ref().and_then(|f| f.group_of(node)) {
            k.cluster = g.cluster;
        }
        k
    }

    /// These keys for member cluster `n` (1-based) of the federation.
    pub fn for_cluster(&self, n: usize) -> Result<Keys> {
        let f = self
            .federation
            .as_ref()
            .ok_or_else(|| anyhow!("this is not a federation (`up --clusters C --gates G`)"))?;
        let (_, g) = f
            .clusters()
            .find(|(i, _)| *i == n)
            .ok_or_else(|| anyhow!("the federation has no cluster {n}"))?;
        let mut k = self.clone();
        k.cluster = g.cluster;
        Ok(k)
    }

    pub fn load(dir: &Path) -> Result<Keys> {
        let f = Self::file(dir);
        let text = std::fs::read_to_string(&f).with_context(|| {
            format!(
                "reading {} (written by `cargo xdv up`; is a cluster set up there?)",
                f.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let f = Self::file(dir);
        std::fs::write(&f, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", f.display()))
    }

    /// Issues a key for a new node `node` (joining a running cluster); its seed.
    pub fn add_node(&mut self, node: u32) -> Result<[u8; 32]> {
        if self.nodes.iter().any(|(n, _)| *n == node) {
            bail!("node {node} already has a key");
        }
        let seed = random_seed()?;
        self.nodes.push((node, hex::encode(seed)));
        self.nodes.sort();
        Ok(seed)
    }

    pub fn operator_seed(&self) -> Result<[u8; 32]> {
        seed_of(&self.operator)
    }

    pub fn tenant_seed(&self, tenant: u32) -> Result<[u8; 32]> {
        let (_, s) = self
            .tenants
            .iter()
            .find(|(t, _)| *t == tenant)
            .ok_or_else(|| {
                let known: Vec<String> = self.tenants.iter().map(|t| t.0.to_string()).collect();
                anyhow!(
                    "tenant {tenant} is not registered in this cluster (tenants: {})",
                    known.join(", ")
                )
            })?;
        seed_of(s)
    }

    /// The provisioning module of `node`.
    pub fn module(&self, node: u32) -> Result<Vec<u8>> {
        let (_, seed) = self
            .nodes
            .iter()
            .find(|(n, _)| *n == node)
            .ok_or_else(|| anyhow!("node {node} has no key"))?;
        let operator = public_key(&self.operator_seed()?);
        let group = self.federation.as_ref().and_then(|f| f.group_of(node));
        let cluster = group.map_or(self.cluster, |g| g.cluster);
        let mut p = Provision::new(node, cluster, seed_of(seed)?, operator);
        for (n, s) in &self.nodes {
            if group.is_some_and(|g| !g.nodes.contains(n)) {
                continue;
            }
            let ok = p.add_peer(Peer {
                node: *n,
                ipv4: [10, 0, 0, *n as u8],
                public_key: public_key(&seed_of(s)?),
            });
            if !ok {
                bail!(
                    "too many nodes for one module (limit {})",
                    provision::MAX_PEERS
                );
            }
        }
        for (t, s) in &self.tenants {
            if !p.add_tenant(Tenant {
                tenant: *t,
                public_key: public_key(&seed_of(s)?),
            }) {
                bail!("too many tenants (limit {})", provision::MAX_TENANTS);
            }
        }
        let mut out = vec![0u8; provision::MAX_BYTES];
        let n = p
            .encode(&mut out)
            .ok_or_else(|| anyhow!("provisioning module does not fit"))?;
        out.truncate(n);
        if let (Some(f), Some(g)) = (&self.federation, group) {
            out.extend(self.fed_section(f, g)?);
        }
        Ok(out)
    }

    /// The federation section a node of group `g` gets after its provisioning record:
    /// a gate's peers are every member cluster's nodes, a member's the gate nodes.
    fn fed_section(&self, f: &Federation, g: &FedGroup) -> Result<Vec<u8>> {
        use xdv_boot::federation::{FedPeer, FedRole, FedSection, MAX_BYTES};
        let gate = f
            .gate()
            .ok_or_else(|| anyhow!("the federation has no gate group"))?;
        let (role, period) = if g.gate {
            (FedRole::Gate, f.dispatch_ms)
        } else {
            (FedRole::Member, f.heartbeat_ms)
        };
        let mut s = FedSection::new(role, gate.cluster, period, f.route_per_mille);
        for other in f.groups.iter().filter(|o| o.gate != g.gate) {
            for n in &other.nodes {
                let (_, seed) = self
                    .nodes
                    .iter()
                    .find(|(m, _)| m == n)
                    .ok_or_else(|| anyhow!("node {n} has no key"))?;
                if !s.add_peer(FedPeer {
                    node: *n,
                    cluster: other.cluster,
                    public_key: public_key(&seed_of(seed)?),
                }) {
                    bail!("too many federation peers for one module");
                }
            }
        }
        let mut out = vec![0u8; MAX_BYTES];
        let n = s
            .encode(&mut out)
            .ok_or_else(|| anyhow!("federation section does not fit"))?;
        out.truncate(n);
        Ok(out)
    }
}

/// A strictly growing sequence number (µs since the epoch, bumped past the last one).
pub fn next_seq() -> u64 {
    next_seqs(1)
}

/// The first of `n` consecutive fresh sequence numbers (a `SubmitBatch` of `n`
/// submissions takes `first .. first + n`); later calls return numbers past them.
pub fn next_seqs(n: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let n = n.max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let first = now.max(prev + 1);
        let last = first + n - 1;
        match LAST.compare_exchange(prev, last, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return first,
            Err(p) => prev = p,
        }
    }
}

/// Signs `request` as `principal` with sequence number `seq`.
pub fn signed_at(
    keys: &Keys,
    principal: Principal,
    seq: u64,
    request: Request,
) -> Result<SignedRequest> {
    let seed = match principal {
        Principal::Operator => keys.operator_seed()?,
        Principal::Tenant(t) => keys.tenant_seed(t.0)?,
    };
    Ok(SignedRequest::sign(
        keys.cluster,
        principal,
        seq,
        request,
        &seed,
    ))
}

/// `count` copies of `submit` as `tenant`, pipelined over one connection in
/// `RunBatch`es of at most [`MAX_BATCH_SUBMISSIONS`] (each under one signature, each
/// answered once its tasks finished, naming its first sequence number). Batches the
/// node cannot take yet (no leader, not committed in time) are sent again, with the
/// same numbers (never twice in the log), once every request out has its answer,
/// until `end`; tasks still running when a batch was answered (the node's reply
/// timeout) are awaited with `AwaitTasks`. Returns every task and its final status,
/// in submission order.
pub fn submit_many(
    port: u16,
    keys: &Keys,
    tenant: TenantId,
    submit: &Submit,
    count: usize,
    end: Instant,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(TaskId, TaskStatus)>> {
    let who = Principal::Tenant(tenant);
    let mut batches: Vec<(u64, SignedRequest)> = Vec::new();
    let mut left = count;
    while left > 0 {
        let n = left.min(MAX_BATCH_SUBMISSIONS);
        let first = next_seqs(n as u64);
        let req = Request::RunBatch(vec![submit.clone(); n]);
        batches.push((first, signed_at(keys, who, first, req)?));
        left -= n;
    }
    let mut c = Client::connect(port, Duration::from_secs(2))?;
    // Answers by first sequence number; a batch sent twice may be answered twice.
    let mut ran: std::collections::BTreeMap<u64, Vec<xdv_cluster::mgmt::TaskReport>> =
        Default::default();
    let mut out = 0usize;
    let mut retry = false;
    for (_, b) in &batches {
        c.send(b)?;
        out += 1;
    }
    while ran.len() < batches.len() {
        if out == 0 && retry {
            // Every answer is in and some batch was refused for now: send again
            // what has no answer.
            std::thread::sleep(Duration::from_millis(200));
            retry = false;
            for (first, b) in &batches {
                if !ran.contains_key(first) {
                    c.send(b)?;
                    out += 1;
                }
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let accepted: usize = ran.values().map(Vec::len).sum();
            bail!("{accepted} of {count} tasks accepted before the timeout");
        }
        let answer = c.recv(left)?;
        out = out.saturating_sub(1);
        match answer {
            Response::BatchRan { seq, reports } => {
                if batches.iter().any(|(first, _)| *first == seq) {
                    ran.entry(seq).or_insert(reports);
                }
                let accepted = ran.values().map(Vec::len).sum();
                let finished_now = ran
                    .values()
                    .flatten()
                    .filter(|r| finished(&r.status))
                    .count();
                progress(accepted, finished_now);
            }
            Response::Refused(Denied::NoLeader | Denied::NotReady(_)) => retry = true,
            Response::Refused(d) => bail!("a batch of {count} tasks was refused: {d}"),
            other => bail!("unexpected answer to a batch: {}", response_kind(&other)),
        }
    }
    let reports: Vec<xdv_cluster::mgmt::TaskReport> = batches
        .iter()
        .flat_map(|(first, _)| ran.remove(first).unwrap_or_default())
        .collect();
    if reports.len() != count {
        bail!("{} reports for {count} tasks", reports.len());
    }
    let tasks: Vec<TaskId> = reports.iter().map(|r| r.task).collect();
    let mut done: std::collections::BTreeMap<TaskId, TaskStatus> = Default::default();
    let mut open: Vec<TaskId> = Vec::new();
    for r in reports {
        if finished(&r.status) {
            done.insert(r.task, r.status);
        } else {
            open.push(r.task);
        }
    }
    while !open.is_empty() {
        let chunks: Vec<Vec<TaskId>> = open.chunks(MAX_AWAIT_TASKS).map(<[_]>::to_vec).collect();
        for ch in &chunks {
            c.send(&signed(
                keys,
                who,
                Request::AwaitTasks { tasks: ch.clone() },
            )?)?;
        }
        // The node answers each `AwaitTasks` once all of its tasks finished, so the
        // answers may come in another order than the requests: collect the reports of
        // every answer by task id, then look each task up.
        let mut reported: std::collections::BTreeMap<TaskId, TaskStatus> = Default::default();
        for _ in &chunks {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} of {count} tasks finished before the timeout",
                    done.len()
                );
            }
            match c.recv(left)? {
                Response::TaskReports(r) => {
                    reported.extend(r.into_iter().map(|r| (r.task, r.status)));
                }
                Response::Refused(d) => bail!("waiting for tasks refused: {d}"),
                other => bail!("unexpected answer to AwaitTasks: {}", response_kind(&other)),
            }
            let finished_now = reported.values().filter(|s| finished(s)).count();
            progress(tasks.len(), done.len() + finished_now);
        }
        let mut still = Vec::new();
        for t in open {
            match reported.remove(&t) {
                Some(s) if finished(&s) => {
                    done.insert(t, s);
                }
                Some(_) => still.push(t),
                None => bail!("{t} is no longer retained by the cluster"),
            }
        }
        open = still;
    }
    Ok(tasks
        .into_iter()
        .map(|t| {
            let s = done.remove(&t).unwrap_or(TaskStatus::Pending);
            (t, s)
        })
        .collect())
}

/// Whether a task status is final (completed or refused by the cluster).
pub fn finished(s: &TaskStatus) -> bool {
    matches!(s, TaskStatus::Completed { .. } | TaskStatus::Rejected(_))
}

/// One connection to a node's management port.
pub struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    msg_id: u64,
}

impl Client {
    pub fn connect(port: u16, timeout: Duration) -> Result<Client> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to the management port 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            decoder: FrameDecoder::new(),
            msg_id: 0,
        })
    }

    /// Sends raw bytes (tests send garbage through this).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Sends `req` and waits up to `timeout` for the response.
    pub fn call(&mut self, req: &SignedRequest, timeout: Duration) -> Result<Response> {
        self.send(req)?;
        self.read_response(timeout)
    }

    /// The next response, waiting up to `timeout` (pipelined requests are answered
    /// in the order the node finishes them).
    pub fn recv(&mut self, timeout: Duration) -> Result<Response> {
        self.read_response(timeout)
    }

    /// Sends `req` without waiting for its answer.
    pub fn send(&mut self, req: &SignedRequest) -> Result<()> {
        self.msg_id += 1;
        let frame = host_frame(self.msg_id, &ClusterMessage::MgmtRequest(mgmt::encode(req)))?;
        self.stream.write_all(&frame)?;
        Ok(())
    }

    fn read_response(&mut self, timeout: Duration) -> Result<Response> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            match self.decoder.pop() {
                Ok(Some(f)) => match f.message {
                    ClusterMessage::MgmtResponse(b) => {
                        return mgmt::decode(&b).map_err(|e| anyhow!("bad response: {e}"));
                    }
                    ClusterMessage::Error(e) => bail!("node error {}: {}", e.code, e.text),
                    _ => continue,
                },
                Ok(None) => {}
                Err(e) => bail!("bad frame from the node: {e}"),
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no response within {} ms", timeout.as_millis());
            }
            self.stream.set_read_timeout(Some(left))?;
            let n = match self.stream.read(&mut buf) {
                Ok(0) => bail!("the node closed the connection"),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let used = self.decoder.push(rest);
                rest = &rest[used..];
                if used == 0 {
                    bail!("response larger than a frame");
                }
            }
        }
    }
}

/// Signs `request` as `principal` with a fresh sequence number.
pub fn signed(keys: &Keys, principal: Principal, request: Request) -> Result<SignedRequest> {
    signed_at(keys, principal, next_seq(), request)
}

/// The operator's `ClusterStatus` of the node behind `port`.
pub fn cluster_view(port: u16, keys: &Keys) -> Result<ClusterView> {
    let mut c = Client::connect(port, Duration::from_secs(2))?;
    let req = signed(keys, Principal::Operator, Request::ClusterStatus)?;
    match c.call(&req, Duration::from_secs(5))? {
        Response::Cluster(v) => Ok(v),
        Response::Refused(d) => bail!("refused: {d}"),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    }
}

/// A frame from the host (`HOST_NODE`) to a node's management port, numbered `msg_id`.
pub fn host_frame(msg_id: u64, message: &ClusterMessage) -> Result<Vec<u8>> {
    let hdr = FrameHeader {
        source: HOST_NODE,
        target: NodeId(0),
        timestamp: Timestamp(msg_id),
        message_id: msg_id,
    };
    wire::encode_frame(&hdr, message).map_err(|e| anyhow!("encoding a frame: {e}"))
}

/// A response's kind in words (never its Rust `Debug` text).
pub fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Submitted { .. } => "task submitted",
        Response::Task { .. } => "task status",
        Response::Cluster(_) => "cluster status",
        Response::QuotaSet { .. } => "quota set",
        Response::Contract(_) => "contract answer",
        Response::Contracts { .. } => "contract list",
        Response::PolicySet { .. } => "policy set",
        Response::PlacementPolicySet { .. } => "placement policy set",
        Response::Tasks(_) => "task list",
        Response::Refused(_) => "refused",
        Response::Member { .. } => "membership change",
        Response::Metrics(_) => "metrics",
        Response::Cancelled { .. } => "task cancelled",
        Response::SubmittedBatch { .. } => "batch submitted",
        Response::TaskReports(_) => "task reports",
        Response::Discovered { .. } => "discovered machines",
        Response::DiscoveredAdmitted { .. } => "discovered machine admitted",
        Response::Routed { .. } => "job routed",
        Response::RouteExplained { .. } => "route explained",
        Response::BatchRan { .. } => "batch ran",
    }
}

/// A Raft role as the kernel reports it (`Leader`, `PreCandidate`, …) in lower-case
/// words: `leader`, `follower`, `candidate`, `pre-candidate`, `none`.
pub fn role_name(role: &str) -> String {
    let mut out = String::new();
    for (i, c) in role.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Is this error a refused TCP connection (nothing listens: the node is not running)?
pub fn connection_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// How handing a submission to the cluster ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The cluster took it as this task.
    Task(TaskId),
    /// The cluster refused it without giving it a task id.
    Refused(Denied),
}

/// Sends `req` (again, with the same seq, after a timeout or a lost connection) until
/// the cluster names its task. Safe to repeat: the state machine never runs a
/// request twice.
pub fn submit_until_placed(port: u16, req: &SignedRequest, end: Instant) -> Result<TaskId> {
    match submit_placed(port, req, end, false, &mut |_| {})? {
        Placement::Task(t) => Ok(t),
        Placement::Refused(d) => bail!("refused: {d}"),
    }
}

/// As [`submit_until_placed`], returning a refusal as a value. With `fail_fast`, a
/// refused connection (no process behind the port) fails at once instead of being
/// retried. `progress` hears each new reason for retrying, once.
pub fn submit_placed(
    port: u16,
    req: &SignedRequest,
    end: Instant,
    fail_fast: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Placement> {
    let mut last = String::new();
    while Instant::now() < end {
        let r = Client::connect(port, Duration::from_secs(2))
            .and_then(|mut c| c.call(req, Duration::from_secs(12)));
        let why = match r {
            Ok(Response::Submitted { task }) => return Ok(Placement::Task(task)),
            Ok(Response::Refused(Denied::Duplicate { task })) => return Ok(Placement::Task(task)),
            Ok(Response::Refused(d @ (Denied::NoLeader | Denied::NotReady(_)))) => d.to_string(),
            Ok(Response::Refused(d)) => return Ok(Placement::Refused(d)),
            Ok(other) => bail!("unexpected answer: {}", response_kind(&other)),
            Err(e) if fail_fast && connection_refused(&e) => {
                bail!(
                    "nothing listens on the management port 127.0.0.1:{port}: the node is not running"
                )
            }
            Err(e) => format!("{e:#}"),
        };
        if why != last {
            progress(&why);
            last = why;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("not accepted in time (last: {last})")
}

/// Polls the task's status until it completed or was refused.
pub fn wait_task(
    port: u16,
    keys: &Keys,
    who: Principal,
    task: TaskId,
    end: Instant,
) -> Result<TaskStatus> {
    wait_task_log(port, keys, who, task, end).map(|(s, _)| s)
}

/// As [`wait_task`], with the lines the task's module wrote with `log()`.
pub fn wait_task_log(
    port: u16,
    keys: &Keys,
    who: Principal,
    task: TaskId,
    end: Instant,
) -> Result<(TaskStatus, Vec<String>)> {
    let mut last = String::new();
    while Instant::now() < end {
        let r = signed(keys, who, Request::TaskStatus { task }).and_then(|req| {
            Client::connect(port, Duration::from_secs(2))?.call(&req, Duration::from_secs(5))
        });
        match r {
            Ok(Response::Task { status, log, .. })
                if matches!(
                    status,
                    TaskStatus::Completed { .. } | TaskStatus::Rejected(_)
                ) =>
            {
                return Ok((status, log));
            }
            Ok(Response::Task { status, .. }) => last = describe(&status),
            Ok(Response::Refused(d)) => last = d.to_string(),
            Ok(other) => bail!("unexpected answer: {}", response_kind(&other)),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("task {} did not finish in time (last: {last})", task.0)
}

/// A task status as one line of words: the state, where and how it ran, its output.
pub fn describe(s: &TaskStatus) -> String {
    match s {
        TaskStatus::Pending => "pending (waiting for an eligible node)".into(),
        TaskStatus::Assigned { node, attempt } => {
            format!("running on node {} (attempt {attempt})", node.0)
        }
        TaskStatus::Completed {
            node,
            attempt,
            outcome,
            ticks,
            output_hash,
            output,
        } => {
            let at = format!("on node {} (attempt {attempt})", node.0);
            match outcome {
                Outcome::Executed => format!(
                    "executed {at}: {ticks} ticks, output {} (sha256 {})",
                    quoted_output(output),
                    output_hash.short()
                ),
                Outcome::BudgetExceeded => {
                    format!("failed {at}: tick budget exceeded after {ticks} ticks")
                }
                Outcome::GuardDenied => {
                    format!("failed {at}: guard denied (a required capability is not held)")
                }
                Outcome::Trapped(r) => format!("failed {at}: trapped after {ticks} ticks: {r}"),
                Outcome::Refused(r) => format!("refused by node {}: {r}", node.0),
                Outcome::Failed(r) => format!("failed {at}: {r}"),
                Outcome::DeviceFailed(r) => format!("device failed {at}: {r}"),
                Outcome::Unstable(r) => format!("unstable {at}: {r}"),
                Outcome::Timeout(r) => format!("timed out {at}: {r}"),
                Outcome::Cancelled if node.0 == 0 => "cancelled before it ran".into(),
                Outcome::Cancelled => format!("cancelled {at}"),
            }
        }
        TaskStatus::Rejected(r) => format!("refused by the cluster: {r}"),
    }
}

/// Output for one line: `"text"` (escaped) when it is UTF-8 text, `0x…` otherwise,
/// `(none)` when empty.
pub fn quoted_output(output: &[u8]) -> String {
    if output.is_empty() {
        return "(none)".into();
    }
    if let Some(device) = xdv_accel_sim::render::describe(output) {
        return device;
    }
    match std::str::from_utf8(output) {
        Ok(t) => format!("\"{}\"", t.escape_debug()),
        Err(_) => format!("0x{}", hex::encode(output)),
    }
}

/// Sets (or clears) a tenant's quota as the operator, through the node behind `port`;
/// returns once the cluster applied it.
pub fn set_quota(
    port: u16,
    keys: &Keys,
    tenant: u32,
    quota: Option<xdv_cluster::Quota>,
) -> Result<()> {
    let req = signed(
        keys,
        Principal::Operator,
        Request::SetQuota {
            tenant: xdv_types::TenantId(tenant),
            quota,
        },
    )?;
    match Client::connect(port, Duration::from_secs(2))?.call(&req, Duration::from_secs(15))? {
        Response::QuotaSet { .. } => Ok(()),
        Response::Refused(d) => bail!("refused: {d}"),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    }
}

/// Output as text when it is printable UTF-8, else as hex (`0x…`).
pub fn printable(output: &[u8]) -> String {
    match std::str::from_utf8(output) {
        Ok(t) if t.chars().all(|c| !c.is_control() || c == '\n' || c == '\t') => t.to_string(),
        _ => format!("0x{}", hex::encode(output)),
    }
}

/// Sends a state-changing request (same seq on every retry) until the cluster
/// decides it: retries while there is no leader or it was not committed in time;
/// returns the first other answer.
pub fn call_until_decided(port: u16, req: &SignedRequest, end: Instant) -> Result<Response> {
    let mut last = String::new();
    while Instant::now() < end {
        let r = Client::connect(port, Duration::from_secs(2))
            .and_then(|mut c| c.call(req, Duration::from_secs(12)));
        match r {
            Ok(Response::Refused(d @ (Denied::NoLeader | Denied::NotReady(_)))) => {
                last = d.to_string()
            }
            Ok(other) => return Ok(other),
            Err(e) if connection_refused(&e) => bail!(
                "nothing listens on the management port 127.0.0.1:{port}: the node is not running"
            ),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("not decided in time (last: {last})")
}

/// A tenant's reservation through node `port`: `Ok(Ok(id))` accepted, `Ok(Err(reason))`
/// refused (by the gate or the log).
pub fn reserve(
    port: u16,
    keys: &Keys,
    tenant: u32,
    r: xdv_cluster::mgmt::Reserve,
    end: Instant,
) -> Result<std::result::Result<u64, String>> {
    use xdv_cluster::mgmt::ContractAnswer;
    let req = signed(
        keys,
        Principal::Tenant(xdv_types::TenantId(tenant)),
        Request::Reserve(r),
    )?;
    Ok(match call_until_decided(port, &req, end)? {
        Response::Contract(ContractAnswer::Accepted { id }) => Ok(id),
        Response::Contract(ContractAnswer::Rejected { reason, .. }) => Err(reason.to_string()),
        Response::Refused(d) => Err(d.to_string()),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    })
}

/// The contracts in force that `who` may see, and the cluster time.
pub fn contracts(
    port: u16,
    keys: &Keys,
    who: Principal,
) -> Result<(u64, Vec<xdv_cluster::mgmt::ContractView>)> {
    contract_list(port, keys, who).map(|l| (l.clock_ms, l.in_force))
}

/// What `contracts` answers: the cluster time, the contracts in force and the
/// recently ended ones (each with how it ended).
#[derive(Clone, Debug)]
pub struct ContractList {
    pub clock_ms: u64,
    pub in_force: Vec<xdv_cluster::mgmt::ContractView>,
    pub ended: Vec<xdv_cluster::mgmt::ContractView>,
}

/// The contracts `who` may see, in force and recently ended.
pub fn contract_list(port: u16, keys: &Keys, who: Principal) -> Result<ContractList> {
    let req = signed(keys, who, Request::Contracts)?;
    match Client::connect(port, Duration::from_secs(2))?.call(&req, Duration::from_secs(10))? {
        Response::Contracts {
            clock_ms,
            contracts,
            ended,
        } => Ok(ContractList {
            clock_ms,
            in_force: contracts,
            ended,
        }),
        Response::Refused(d) => bail!("refused: {d}"),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::TcpListener;

    /// A fake node proposes the first copy of every `RunBatch` but answers it "not
    /// committed in time"; answers the batches sent again (as the node's replay
    /// window does) last one first, each naming its first seq (answers come when the
    /// tasks finish, whatever the order of the requests), with one task not finished
    /// yet (the node's reply timeout), which the client must then `AwaitTasks`. Every
    /// task must be counted once, in submission order (earlier, answers without a
    /// request id were matched to the wrong batch: CI's `cli_cluster` failure).
    #[test]
    fn batches_and_awaits_are_matched_to_their_own_answers() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut dec = FrameDecoder::new();
            let mut buf = [0u8; 65536];
            let mut next = 1u64;
            let done = TaskStatus::Completed {
                node: NodeId(1),
                attempt: 1,
                outcome: Outcome::Executed,
                ticks: 1,
                output_hash: xdv_types::Hash32([0; 32]),
                output: Vec::new(),
            };
            let report = |task, status: &TaskStatus| xdv_cluster::mgmt::TaskReport {
                task,
                tenant: TenantId(1),
                status: status.clone(),
            };
            let mut ids: BTreeMap<u64, Vec<TaskId>> = BTreeMap::new();
            // Batches sent again, held until both are in.
            let mut again: Vec<(u64, u64)> = Vec::new();
            let reply = |s: &mut TcpStream, r: &Response, id: u64| {
                let hdr = FrameHeader {
                    source: NodeId(1),
                    target: HOST_NODE,
                    timestamp: Timestamp(id),
                    message_id: id,
                };
                let f = wire::encode_frame(&hdr, &ClusterMessage::MgmtResponse(mgmt::encode(r)))
                    .unwrap();
                s.write_all(&f).unwrap();
            };
            loop {
                let n = match s.read(&mut buf) {
                    Ok(0) | Err(_) => return ids.len(),
                    Ok(n) => n,
                };
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let used = dec.push(rest);
                    assert!(used > 0);
                    rest = &rest[used..];
                    while let Ok(Some(f)) = dec.pop() {
                        let ClusterMessage::MgmtRequest(b) = f.message else {
                            continue;
                        };
                        let req: SignedRequest = mgmt::decode(&b).unwrap();
                        let id = f.header.message_id;
                        let answer = match req.request {
                            Request::RunBatch(v) => match ids.entry(req.seq) {
                                std::collections::btree_map::Entry::Vacant(e) => {
                                    e.insert((next..next + v.len() as u64).map(TaskId).collect());
                                    next += v.len() as u64;
                                    Response::Refused(Denied::NotReady(
                                        "not committed in time; retry with the same seq".into(),
                                    ))
                                }
                                std::collections::btree_map::Entry::Occupied(_) => {
                                    again.push((req.seq, id));
                                    if again.len() < 2 {
                                        continue;
                                    }
                                    for (seq, id) in again.drain(..).rev() {
                                        let tasks = &ids[&seq];
                                        let reports = tasks
                                            .iter()
                                            .map(|&t| {
                                                // Task 70 is still running at the
                                                // reply timeout.
                                                if t == TaskId(70) {
                                                    report(t, &TaskStatus::Pending)
                                                } else {
                                                    report(t, &done)
                                                }
                                            })
                                            .collect();
                                        reply(&mut s, &Response::BatchRan { seq, reports }, id);
                                    }
                                    continue;
                                }
                            },
                            Request::AwaitTasks { tasks } => {
                                assert_eq!(tasks, vec![TaskId(70)], "only the unfinished one");
                                Response::TaskReports(
                                    tasks.iter().map(|&t| report(t, &done)).collect(),
                                )
                            }
                            _ => Response::Refused(Denied::Malformed("unexpected".into())),
                        };
                        reply(&mut s, &answer, id);
                    }
                }
            }
        });
        let keys = Keys::generate(1, 1).unwrap();
        let submit = Submit::new(xdv_cluster::Work::Builtin("hash".into()), Vec::new(), 10);
        let end = Instant::now() + Duration::from_secs(20);
        let done = submit_many(port, &keys, TenantId(1), &submit, 70, end, &mut |_, _| {}).unwrap();
        let tasks: Vec<u64> = done.iter().map(|(t, _)| t.0).collect();
        assert_eq!(tasks, (1..=70).collect::<Vec<_>>());
        drop(done);
        assert_eq!(server.join().unwrap(), 2, "two batches, each accepted once");
    }
}
