//! A real cluster in one process, written out as a cluster directory: for the
//! `replay`/`verify`/`timeline` tests and `cargo xdv bench replay`, without QEMU.
//!
//! N `xdv_node::Node`s (the type the kernel runs) built from provisioning modules the
//! way the kernel builds them (`super::image::kernel_config`), each over a Raft region
//! of the kernel's default size and an audit region written by `xdv_audit::AuditLog`
//! (the kernel's writer), stamped and fed back to the node as the kernel's loop does
//! (`set_audit_head`, `set_audit_root` when due). Messages take one millisecond; a
//! tenant submits built-in tasks; workers finish them a few milliseconds later.
//! Faults: one node silent for a while (declared down, then up again) and one node
//! (by default the first leader) crashed and, a second later, restarted from its
//! regions (audit log reopened, `audited_through` from its `RaftApplied` records, as
//! the kernel does). Optional, off by default: one node cut off from every other while
//! it keeps running (a partition), and one node's replica corrupted (the test-only
//! fault hook `Node::corrupt_state_for_test`) so that hash voting raises an alarm.
//!
//! The output directory looks like `cargo xdv up`'s: `keys.json`, `cluster.json`,
//! `node<N>.prov`, and `node<N>.ram` (a sparse RAM file with both regions at the
//! kernel's default physical addresses).
//!
//! Each boot's audit region is leaked (`Box::leak`), like the kernel's `&'static mut`
//! region: a few MiB per node and boot, for a test or benchmark process.

use super::image::{identity_from_module, kernel_config};
use crate::cluster::{ClusterState as ClusterFile, NodeSpec};
use crate::mgmt::Keys;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdv_audit::{AuditLog, RecordBody};
use xdv_boot::cmdline::{DEFAULT_AUDIT_REGION, DEFAULT_RAFT_REGION};
use xdv_cluster::mgmt::{Principal, Request, SignedRequest, Submit};
use xdv_cluster::{Completion, Outcome, Work};
use xdv_node::{ClientConn, Node, NodeConfig};
use xdv_types::{CoreId, Hash32, NodeId, TenantId, Timestamp};

/// RAM per fixture node (the smallest `up` allows; the file is sparse).
pub const FIXTURE_MEM_MIB: u32 = 128;
/// How long a crashed node stays down before it restarts.
pub const CRASH_DOWN_MS: u64 = 1_000;
/// A finished task is reported this long after it was dispatched.
const TASK_MS: u64 = 3;

/// What the fixture runs.
#[derive(Clone, Debug)]
pub struct FixtureOptions {
    pub nodes: u32,
    /// Simulated milliseconds.
    pub run_ms: u64,
    /// Tasks the tenant submits, spread over the first half of the run.
    pub tasks: u64,
    /// (node, from ms, to ms): the node neither runs nor hears anything meanwhile.
    pub silent: Option<(u32, u64, u64)>,
    /// (node, at ms): the node crashes, stays down [`CRASH_DOWN_MS`] and restarts from
    /// its regions.
    pub crash: Option<(u32, u64)>,
    /// Raft snapshot threshold (small: the log is replayed from a snapshot image).
    pub snapshot_threshold: Option<u64>,
    /// (node, from ms, to ms): the node keeps running but no message crosses between
    /// it and any other node meanwhile (a partition).
    pub partition: Option<(u32, u64, u64)>,
    /// (node, at ms): the node's replica of the state is corrupted (only its hash
    /// changes); hash voting finds it, every node records the alarm.
    pub corrupt: Option<(u32, u64)>,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            nodes: 3,
            run_ms: 24_000,
            tasks: 12,
            silent: Some((3, 9_000, 15_000)),
            crash: Some((1, 17_000)),
            snapshot_threshold: None,
            partition: None,
            corrupt: None,
        }
    }
}

/// What the run did.
#[derive(Clone, Debug, Default)]
pub struct FixtureRun {
    pub dir: PathBuf,
    /// Entries each node applied to its state (all boots).
    pub applied: Vec<u64>,
    /// Time spent inside each node's calls and its audit appends.
    pub busy: Vec<Duration>,
    pub submitted: u64,
}

/// Deterministic keys (the fixture needs no secrecy and stays reproducible).
pub fn fixture_keys(nodes: u32) -> Keys {
    let hex32 = |b: u8| hex::encode([b; 32]);
    Keys {
        cluster: 0x5eed_0001,
        operator: hex32(0x55),
        nodes: (1..=nodes).map(|n| (n, hex32(n as u8))).collect(),
        tenants: vec![(1, hex32(0x71))],
        federation: None,
    }
}

struct Member {
    id: u32,
    cfg: NodeConfig,
    node: Node<Vec<u8>>,
    audit: AuditLog<'static>,
    stamp: u64,
    applied_before: u64,
    busy: Duration,
}

fn open_audit(bytes: Vec<u8>, id: u32) -> Result<AuditLog<'static>> {
    let region: &'static mut [u8] = Box::leak(bytes.into_boxed_slice());
    let (mut log, report) =
        AuditLog::open(region, NodeId(id)).map_err(|e| anyhow::anyhow!("audit open: {e:?}"))?;
    log.append(
        Timestamp(0),
        CoreId(0),
        &RecordBody::Boot {
            count: report.boot_count,
        },
    )
    .map_err(|e| anyhow::anyhow!("audit boot record: {e:?}"))?;
    Ok(log)
}

impl Member {
    fn perform_audit(&mut self, records: Vec<RecordBody>) {
        for body in records {
            self.stamp += 1;
            // A full region refuses; the run goes on as the kernel's does.
            let _ = self.audit.append(Timestamp(self.stamp), CoreId(0), &body);
        }
    }

    /// Highest index a `RaftApplied` record covers (the kernel's `last_raft_applied`).
    fn last_raft_applied(&self) -> u64 {
        self.audit
            .records()
            .filter_map(Result::ok)
            .filter_map(|r| match r.body {
                RecordBody::RaftApplied { index, .. } => Some(index),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn crash_and_restart(&mut self, now_ms: u64) -> Result<()> {
        let blank = Node::new(self.cfg.clone(), Vec::new(), now_ms);
        let old = std::mem::replace(&mut self.node, blank);
        self.applied_before += old.counters().applied_entries;
        let region = old
            .into_region()
            .context("a crashed fixture node had no region")?;
        let bytes = self.audit.region().to_vec();
        let placeholder = open_audit(vec![0u8; 64 * 1024], self.id)?;
        drop(std::mem::replace(&mut self.audit, placeholder));
        self.audit = open_audit(bytes, self.id)?;
        let mut cfg = self.cfg.clone();
        cfg.audited_through = self.last_raft_applied();
        self.node = Node::new(cfg, region, now_ms);
        if let Some(h) = self.node.halted() {
            bail!("node {} did not come back: {h}", self.id);
        }
        Ok(())
    }
}

enum Wire {
    Raft(Vec<u8>),
    Forward(Vec<u8>),
}

fn submit_bytes(keys: &Keys, seq: u64) -> Result<Vec<u8>> {
    let req = SignedRequest::sign(
        keys.cluster,
        Principal::Tenant(TenantId(1)),
        seq,
        Request::Submit(Submit::new(
            Work::Builtin("hash".into()),
            seq.to_le_bytes().to_vec(),
            10_000,
        )),
        &keys.tenant_seed(1)?,
    );
    Ok(xdv_cluster::mgmt::encode(&req))
}

fn write_ram_file(path: &Path, raft: &[u8], audit: &[u8]) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(u64::from(FIXTURE_MEM_MIB) << 20)?;
    f.seek(SeekFrom::Start(DEFAULT_RAFT_REGION.0))?;
    f.write_all(raft)?;
    f.seek(SeekFrom::Start(DEFAULT_AUDIT_REGION.0))?;
    f.write_all(audit)?;
    Ok(())
}

fn write_cluster_files(dir: &Path, keys: &Keys) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    keys.save(dir)?;
    let mut nodes = Vec::new();
    for (id, _) in &keys.nodes {
        let prov = dir.join(format!("node{id}.prov"));
        std::fs::write(&prov, keys.module(*id)?)?;
        nodes.push(NodeSpec {
            id: *id,
            smp: 2,
            mem_mib: FIXTURE_MEM_MIB,
            cmdline: format!("node={id} ip=10.0.0.{id}/24"),
            provision: Some(prov),
            pid: None,
            mgmt_port: 0,
            log_offset: 0,
            accel: None,
            accel_pid: None,
            bridge: None,
            discovering: false,
        });
    }
    ClusterFile {
        dir: dir.to_path_buf(),
        kernel: PathBuf::new(),
        nodes,
        switch_pid: None,
        switch_dir: dir.join("net"),
        seed: 1,
        extra_cmdline: String::new(),
        genesis: Vec::new(),
        machine: Default::default(),
    }
    .save()
}

/// Runs the fixture cluster and writes its directory into `dir`.
pub fn build(dir: &Path, opts: &FixtureOptions) -> Result<FixtureRun> {
    let keys = fixture_keys(opts.nodes);
    write_cluster_files(dir, &keys)?;
    let mut members = Vec::new();
    for id in 1..=opts.nodes {
        let mut cfg = kernel_config(identity_from_module(&keys.module(id)?)?);
        cfg.cores = 1;
        if let Some(t) = opts.snapshot_threshold {
            cfg.raft.snapshot_threshold = t;
            cfg.raft.log_compaction_threshold = t;
        }
        let node = Node::new(cfg.clone(), vec![0u8; DEFAULT_RAFT_REGION.1 as usize], 0);
        if let Some(h) = node.halted() {
            bail!("fixture node {id} halted at start: {h}");
        }
        let audit = open_audit(vec![0u8; DEFAULT_AUDIT_REGION.1 as usize], id)?;
        members.push(Member {
            id,
            cfg,
            node,
            audit,
            stamp: 0,
            applied_before: 0,
            busy: Duration::ZERO,
        });
    }
    let run = drive(&mut members, &keys, opts)?;
    for m in &members {
        let raft = m
            .node
            .raft()
            .map(|r| r.storage().region().clone())
            .context("a fixture node lost its Raft region")?;
        write_ram_file(
            &dir.join(format!("node{}.ram", m.id)),
            &raft,
            m.audit.region(),
        )?;
    }
    Ok(FixtureRun {
        dir: dir.to_path_buf(),
        applied: members
            .iter()
            .map(|m| m.applied_before + m.node.counters().applied_entries)
            .collect(),
        busy: members.iter().map(|m| m.busy).collect(),
        submitted: run,
    })
}

fn silent(opts: &FixtureOptions, id: u32, t: u64) -> bool {
    let crashed = opts
        .crash
        .is_some_and(|(n, at)| n == id && (at..at + CRASH_DOWN_MS).contains(&t));
    crashed
        || opts
            .silent
            .is_some_and(|(n, from, to)| n == id && (from..to).contains(&t))
}

/// Whether the partition keeps messages between nodes `a` and `b` apart at `t`.
fn cut(opts: &FixtureOptions, a: u32, b: u32, t: u64) -> bool {
    opts.partition
        .is_some_and(|(n, from, to)| (n == a) != (n == b) && (from..to).contains(&t))
}

/// Every live member pings every other live one this often.
const PING_MS: u64 = 500;

/// The RTT between nodes `a` and `b` at `t` ms: a line topology (0.6 ms plus 0.35 ms
/// per hop) with up to 80 µs of deterministic jitter.
fn fixture_rtt_us(a: u32, b: u32, t: u64) -> u64 {
    let jitter = (t / PING_MS + u64::from(a) * 7 + u64::from(b) * 3) % 5 * 20;
    600 + 350 * u64::from(a.abs_diff(b)) + jitter
}

/// One ping round: each live member measures each other live one and is given the
/// sample with the peer's coordinate, as the kernel's transport does (its Vivaldi
/// input, recorded in its audit log).
fn ping_round(members: &mut [Member], opts: &FixtureOptions, t: u64) {
    let coords: Vec<Vec<u8>> = members
        .iter()
        .map(|m| m.node.coordinate_payload())
        .collect();
    for m in members.iter_mut() {
        if silent(opts, m.id, t) {
            continue;
        }
        let start = Instant::now();
        for (k, c) in coords.iter().enumerate() {
            let peer = k as u32 + 1;
            if peer != m.id && !silent(opts, peer, t) && !cut(opts, m.id, peer, t) {
                m.node
                    .on_peer_rtt(NodeId(peer), fixture_rtt_us(m.id, peer, t), c);
            }
        }
        m.busy += start.elapsed();
    }
}

/// The main loop: one millisecond per iteration. Returns the tasks submitted.
fn drive(members: &mut [Member], keys: &Keys, opts: &FixtureOptions) -> Result<u64> {
    let mut wire: Vec<(u32, u32, Wire)> = Vec::new();
    let mut done: VecDeque<(u64, u32, Completion)> = VecDeque::new();
    let every = (opts.run_ms / 2 / opts.tasks.max(1)).max(1);
    let mut submitted = 0u64;
    for t in 0..opts.run_ms {
        if let Some((n, at)) = opts.crash
            && at + CRASH_DOWN_MS == t
        {
            members[n as usize - 1].crash_and_restart(t)?;
        }
        if let Some((n, at)) = opts.corrupt
            && at == t
        {
            members[n as usize - 1].node.corrupt_state_for_test();
        }
        let due = std::mem::take(&mut wire);
        for (from, to, w) in due {
            if silent(opts, from, t) || silent(opts, to, t) || cut(opts, from, to, t) {
                continue;
            }
            let m = &mut members[to as usize - 1];
            let start = Instant::now();
            m.node.on_peer_heard(NodeId(from));
            match w {
                Wire::Raft(b) => m.node.on_peer_raft(NodeId(from), &b),
                Wire::Forward(b) => m.node.on_peer_forward(NodeId(from), &b),
            }
            m.busy += start.elapsed();
        }
        while done.front().is_some_and(|d| d.0 <= t) {
            let (_, id, c) = done.pop_front().expect("checked");
            if !silent(opts, id, t) {
                let m = &mut members[id as usize - 1];
                let start = Instant::now();
                m.node.on_task_done(c);
                m.busy += start.elapsed();
            }
        }
        if t >= 1_000 && submitted < opts.tasks && t % every == 0 {
            let leader = members
                .iter()
                .position(|m| m.node.view().role == "Leader")
                .unwrap_or(0);
            submitted += 1;
            let bytes = submit_bytes(keys, submitted)?;
            let m = &mut members[leader];
            let start = Instant::now();
            m.node.on_client(
                ClientConn {
                    slot: 0,
                    generation: submitted,
                },
                &bytes,
            );
            m.busy += start.elapsed();
        }
        if t % PING_MS == PING_MS / 2 {
            ping_round(members, opts, t);
        }
        for m in members.iter_mut() {
            if silent(opts, m.id, t) {
                continue;
            }
            let start = Instant::now();
            if m.node.audit_root_due(t) {
                let published = m.node.audit_published();
                let (records, root, from, proof) = m.audit.root_for_publication(published);
                m.node.set_audit_root(records, root, from, proof);
            }
            m.node.set_audit_head(m.audit.len(), m.audit.head_hash());
            m.node.tick(t);
            let out = m.node.drain();
            m.perform_audit(out.audit);
            m.busy += start.elapsed();
            for (to, b) in out.raft {
                wire.push((m.id, to.0, Wire::Raft(b)));
            }
            for (to, b) in out.forwards {
                wire.push((m.id, to.0, Wire::Forward(b)));
            }
            for r in out.run {
                let output = Sha256::digest(&r.spec.input).to_vec();
                done.push_back((
                    t + TASK_MS,
                    m.id,
                    Completion {
                        task: r.task,
                        node: NodeId(m.id),
                        attempt: r.attempt,
                        outcome: Outcome::Executed,
                        ticks: 100,
                        output_hash: Hash32(Sha256::digest(&output).into()),
                        output,
                        log: Vec::new(),
                    },
                ));
            }
        }
    }
    Ok(submitted)
}
