//! Cluster lifecycle commands: `up`, `down`, `status`, `console`, `kill`, `start`.
//! (`submit` and `quota` are in `submit.rs` and `quota.rs`.)
//!
//! A cluster directory holds history: each node's RAM file carries its Raft log and
//! audit chain under the keys in `keys.json`. `up` therefore never reuses a directory
//! silently: `--resume` boots the same members with the same keys (and refuses if what
//! was asked differs), `--fresh` wipes the directory and starts a new cluster.

use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdv::cluster::{self, ClusterState, MAX_NODES, NodeSpec, NodeState};
use xdv::mgmt::{self, Keys};
use xdv_cluster::Quota;
use xdv_cluster::mgmt::ClusterView;

/// Most tenants `up` registers (`xdv_boot::provision::MAX_TENANTS`).
const MAX_TENANTS: u32 = xdv_boot::provision::MAX_TENANTS as u32;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Number of nodes, ids 1..=N (1-9) [default: 3; with --resume: the directory's].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_NODES as i64))]
    nodes: Option<u32>,
    /// CPUs per node (1-16) [default: 2; with --resume: the directory's]. The boot
    /// CPU serves the network and consensus, the others run cluster tasks, so a node
    /// with 1 CPU takes no tasks.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    smp: Option<u32>,
    /// RAM per node in MiB (128-16384) [default: 256; with --resume: the directory's].
    #[arg(long, value_parser = clap::value_parser!(u32).range(128..=16384))]
    mem_mib: Option<u32>,
    /// Seed of the switch's fault generator [default: 1; with --resume: the directory's].
    #[arg(long)]
    seed: Option<u64>,
    /// Tenants to register, ids 1..=N, each with its own key [default: 2; with
    /// --resume: the directory's].
    #[arg(long)]
    tenants: Option<u32>,
    /// Cluster directory: RAM files, logs, sockets, keys [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Start a new cluster: wipe the cluster files in the directory first (new keys,
    /// empty RAM files: the old Raft logs and audit chains are gone).
    #[arg(long, conflicts_with = "resume")]
    fresh: bool,
    /// Boot the cluster already in the directory again: same keys, same members, the
    /// Raft logs and audit chains in its RAM files. Refused if --nodes, --tenants,
    /// --smp, --mem-mib or the kernel command line differ from the directory's.
    #[arg(long)]
    resume: bool,
    /// Host port of node 1's management API minus 1: node N listens on BASE+N
    /// [default: 17200].
    #[arg(long)]
    mgmt_port_base: Option<u16>,
    /// Seconds to wait for every node's ready line.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Return once every node is ready instead of showing the live table (also what
    /// happens when stdout is not a terminal).
    #[arg(long)]
    detach: bool,
    /// Accelerators, as NODE=KIND pairs separated by commas (e.g. `2=q,3=phi`):
    /// each such node gets a device process (`xdv accel serve`) and an
    /// `ivshmem-doorbell` connected to it [default: none; with --resume: the
    /// directory's].
    #[arg(long, value_delimiter = ',')]
    accel: Vec<String>,
    /// A TOML file with the cluster to boot instead of flags: nodes, smp, mem_mib,
    /// tenants, seed, mgmt_port_base, accel = { 2 = "q" }, and [quotas.N] tables set
    /// once the nodes are ready. Flags given as well override the file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// NIC model of every node's peer and management NIC [default: virtio; with
    /// --resume: the directory's].
    #[arg(long, value_enum)]
    nic: Option<xdv::qemu::NicModel>,
    /// How nodes boot: `kernel` (QEMU loads the kernel directly) or `pxe` (the
    /// management NIC boots GRUB over QEMU's user network from a TFTP tree that `up`
    /// writes into DIR/tftp, as `cargo xdv pxe` does for real machines) [default:
    /// kernel; with --resume: the directory's].
    #[arg(long, value_enum)]
    boot: Option<BootMode>,
    /// Firmware of PXE-booting nodes: `bios` (SeaBIOS) or `uefi` (OVMF).
    #[arg(long, value_enum, requires = "boot")]
    firmware: Option<xdv::pxe::Firmware>,
    /// Where every node's peer NIC is: `switch` (the cluster's host switch) or
    /// `bridge=NAME` (a TAP device on that existing Linux bridge, to reach nodes on
    /// other hosts; `bridge=NAME,netns=NS` for a bridge in network namespace NS; needs
    /// root) [default: switch; with --resume: the directory's].
    #[arg(long)]
    net: Option<xdv::bridge::PeerNet>,
    /// A federation (docs/federation.md): C member clusters of --nodes nodes each
    /// [--nodes default: 1] behind a gate group of --gates nodes [default: 1], every
    /// node on the one host switch. Ids: gates 1..=G, then cluster 1's nodes, cluster
    /// 2's, ... At most 9 nodes in all.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    clusters: Option<u32>,
    /// Nodes of the federation's gate group (1-3) [default: 1; needs --clusters].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3), requires = "clusters")]
    gates: Option<u32>,
    /// The gate's router hold-down (30 s), degrade confirmation (60 s) and cooldown
    /// (120 s) in ‰ of the seed's: tests shorten them [default: 1000; needs --clusters].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000), requires = "clusters")]
    route_scale: Option<u32>,
    /// Extra kernel command-line words for every node, after `--`.
    #[arg(last = true)]
    cmdline: Vec<String>,
}

/// A federation's dispatch round and heartbeat period (ms).
const FED_DISPATCH_MS: u32 = 500;
const FED_HEARTBEAT_MS: u32 = 1_000;

impl UpArgs {
    /// (gates, clusters, nodes per cluster) when `up` starts a federation.
    fn federation(&self) -> Option<(u32, u32, u32)> {
        self.clusters
            .map(|c| (self.gates.unwrap_or(1), c, self.nodes.unwrap_or(1)))
    }

    /// How many machines `up` boots.
    fn total_nodes(&self) -> u32 {
        match self.federation() {
            Some((g, c, n)) => g + c * n,
            None => self.nodes.unwrap_or(3),
        }
    }
}

/// How `up` boots its nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BootMode {
    Kernel,
    Pxe,
}

/// Applies `--nic`, `--boot` and `--firmware` to the cluster's machine settings.
fn apply_machine(a: &UpArgs, st: &mut ClusterState) -> Result<()> {
    if let Some(nic) = a.nic {
        st.machine.nic = nic;
    }
    match a.boot {
        Some(BootMode::Kernel) => st.machine.pxe = None,
        Some(BootMode::Pxe) => {
            st.machine.pxe = Some(xdv::pxe::PxeBoot {
                tftp: st.dir.join("tftp"),
                firmware: a.firmware.unwrap_or_default(),
            })
        }
        None => {}
    }
    if a.firmware.is_some() && a.boot != Some(BootMode::Pxe) {
        bail!("--firmware applies to --boot pxe only");
    }
    if let Some(net) = &a.net {
        let bridge = net.clone().bridge();
        if let Some(b) = &bridge {
            xdv::bridge::check(b)?;
        }
        for n in &mut st.nodes {
            n.bridge = bridge.clone();
        }
    }
    Ok(())
}

/// With `--boot pxe`: writes the cluster's netboot tree (every node by its
/// management NIC's MAC, with its command line and provisioning module).
fn write_pxe_tree(st: &ClusterState, keys: &Keys) -> Result<()> {
    let Some(pxe) = &st.machine.pxe else {
        return Ok(());
    };
    let uefi = pxe.firmware == xdv::pxe::Firmware::Uefi;
    if uefi {
        xdv::prereq::ensure(&[xdv::prereq::Need::Uefi])?;
    }
    let nodes = st
        .nodes
        .iter()
        .map(|n| {
            Ok(xdv::pxe::PxeNode {
                id: n.id,
                mac: xdv::qemu::mgmt_mac(n.id as u16),
                cmdline: n.cmdline.clone(),
                module: n
                    .provision
                    .as_ref()
                    .map(|_| keys.module(n.id))
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let tree = xdv::pxe::write_tree(&pxe.tftp, &st.kernel, &nodes, uefi)?;
    eprintln!(
        "xdv: nodes boot by PXE ({}) from {}",
        pxe.firmware.name(),
        tree.dir.display()
    );
    Ok(())
}

/// Parses `--accel 2=q,3=phi` for a cluster of `nodes` nodes: node id -> kind name.
pub fn parse_accel(
    pairs: &[String],
    nodes: u32,
) -> Result<std::collections::BTreeMap<u32, String>> {
    let mut m = std::collections::BTreeMap::new();
    for p in pairs {
        let Some((id, kind)) = p.split_once('=') else {
            bail!("bad --accel `{p}` (want NODE=KIND, e.g. 2=q or 3=phi)");
        };
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("bad node `{id}` in --accel `{p}` (want a node id)"))?;
        if !(1..=nodes).contains(&id) {
            bail!("--accel `{p}`: node {id} is not in the cluster (nodes 1..={nodes})");
        }
        let kind = xdv::accel::parse_kind(kind.trim())?;
        if m.insert(id, xdv::accel::daemon::kind_arg(kind).to_string())
            .is_some()
        {
            bail!("--accel names node {id} twice");
        }
    }
    Ok(m)
}

#[derive(clap::Args)]
pub struct DirArgs {
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object (fields: dir, switch, nodes[], health) instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct NodeArgs {
    /// Node id (a member of the cluster: 1..=N).
    node: u32,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn dir(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(cluster::default_dir)
}

/// Refuses if any process of the cluster in `dir` is running.
fn refuse_if_running(dir: &Path) -> Result<()> {
    if let Ok(old) = ClusterState::load(dir)
        && (!old.running().is_empty()
            || old.switch_running()
            || old
                .nodes
                .iter()
                .any(|n| n.accel_pid.is_some_and(cluster::alive)))
    {
        bail!(
            "a cluster is already running in {} (stop it with `cargo xdv down`)",
            dir.display()
        );
    }
    Ok(())
}

/// Fills in what the command line left out from the configuration file: a flag given
/// on the command line wins. Returns the quotas to set once the cluster is up.
fn merge_config(a: &mut UpArgs, c: super::up_config::UpConfig) -> BTreeMap<u32, Quota> {
    a.nodes = a.nodes.or(c.nodes);
    a.smp = a.smp.or(c.smp);
    a.mem_mib = a.mem_mib.or(c.mem_mib);
    a.tenants = a.tenants.or(c.tenants);
    a.seed = a.seed.or(c.seed);
    a.mgmt_port_base = a.mgmt_port_base.or(c.mgmt_port_base);
    if a.accel.is_empty() {
        a.accel = c.accel;
    }
    c.quotas
}

/// Refuses quotas for tenants the cluster does not register.
fn check_quota_tenants(quotas: &BTreeMap<u32, Quota>, tenants: u32) -> Result<()> {
    if let Some(t) = quotas.keys().find(|&&t| t == 0 || t > tenants) {
        bail!(
            "the configuration sets a quota for tenant {t}, but the cluster has tenants 1..={tenants}"
        );
    }
    Ok(())
}

/// Sets the configuration file's quotas through node `port` as the operator, waiting
/// for a leader, and records them as `cargo xdv quota` does.
fn apply_quotas(
    st: &ClusterState,
    keys: &Keys,
    port: u16,
    quotas: &BTreeMap<u32, Quota>,
) -> Result<()> {
    use xdv_cluster::mgmt::{Principal, Request, Response};
    let end = Instant::now() + Duration::from_secs(30);
    let mut record = super::quota::load_record(&st.dir)?;
    for (&tenant, &q) in quotas {
        let req = mgmt::signed(
            keys,
            Principal::Operator,
            Request::SetQuota {
                tenant: xdv_types::TenantId(tenant),
                quota: Some(q),
            },
        )?;
        match mgmt::call_until_decided(port, &req, end)? {
            Response::QuotaSet { .. } => {}
            Response::Refused(d) => bail!("quota for tenant {tenant} refused: {d}"),
            other => bail!("unexpected answer: {}", mgmt::response_kind(&other)),
        }
        record.insert(tenant, q);
        super::quota::save_record(&st.dir, &record)?;
        eprintln!(
            "xdv: tenant {tenant}: quota set: {}",
            super::quota::describe(&q)
        );
    }
    Ok(())
}

pub fn up(mut a: UpArgs) -> Result<()> {
    let quotas = match a.config.clone() {
        Some(path) => merge_config(&mut a, super::up_config::UpConfig::load(&path)?),
        None => BTreeMap::new(),
    };
    let dir = dir(a.dir.clone());
    refuse_if_running(&dir)?;
    if let Some(b) = a.net.clone().and_then(xdv::bridge::PeerNet::bridge) {
        xdv::bridge::check(&b)?;
    }
    // Decide and check everything before the (possibly long) kernel build; write
    // nothing until it succeeded.
    let existing = cluster::cluster_files(&dir);
    let resumed = match (existing.is_empty(), a.fresh, a.resume) {
        (true, _, true) => bail!(
            "nothing to resume: {} holds no cluster (start one with `cargo xdv up`)",
            dir.display()
        ),
        (false, false, false) => bail!("{}", exists_message(&dir)),
        (false, _, true) => Some(resume_state(&a, &dir)?),
        (_, _, false) => {
            check_new(&a)?;
            None
        }
    };
    let tenants = match &resumed {
        Some((_, keys)) => keys.tenants.len() as u32,
        None => a.tenants.unwrap_or(2),
    };
    check_quota_tenants(&quotas, tenants)?;
    let kernel = xdv::qemu::build_kernel_with(true, true)?;
    let (mut st, keys) = match resumed {
        Some(r) => r,
        None => {
            if !existing.is_empty() {
                let n = cluster::wipe(&dir)?;
                eprintln!(
                    "xdv: --fresh: removed {n} cluster files from {}",
                    dir.display()
                );
            }
            new_state(&a, &dir)?
        }
    };
    st.kernel = kernel;
    apply_machine(&a, &mut st)?;
    eprintln!(
        "xdv: {} cluster {} with {} nodes and tenants 1..={}; keys in {}",
        if a.resume { "resuming" } else { "new" },
        keys.cluster,
        st.nodes.len(),
        keys.tenants.len(),
        Keys::file(&dir).display()
    );
    if let Some(f) = &keys.federation {
        eprintln!("{}", federation_lines(f));
    }
    for n in &st.nodes {
        if let Some(p) = &n.provision {
            std::fs::write(p, keys.module(n.id)?)?;
        }
    }
    write_pxe_tree(&st, &keys)?;
    st.save()?;
    for n in &st.nodes {
        cluster::check_port(n)?;
    }
    cluster::start_switch(&mut st)?;
    let ids: Vec<u32> = st.nodes.iter().map(|n| n.id).collect();
    for id in ids {
        let pid = cluster::start_node(&mut st, id)?;
        eprintln!("xdv: node {id} started (pid {pid})");
    }
    wait_ready(&st, Duration::from_secs(a.timeout))?;
    if let Some(first) = st.nodes.first() {
        apply_quotas(&st, &keys, first.mgmt_port(), &quotas)?;
    }
    println!(
        "xdv: {} nodes ready; consoles: `cargo xdv console <n>`; stop with `cargo xdv down`",
        st.nodes.len()
    );
    if a.detach || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(());
    }
    eprintln!("xdv: live cluster table (Ctrl-C leaves the cluster running)");
    watch(&st)
}

/// The federation's groups, one line each.
pub fn federation_lines(f: &mgmt::Federation) -> String {
    let ids = |g: &mgmt::FedGroup| {
        g.nodes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut lines = Vec::new();
    if let Some(g) = f.gate() {
        lines.push(format!(
            "xdv: federation: gate group {} on node(s) {}; dispatch every {} ms, route scale {}/1000",
            g.cluster,
            ids(g),
            f.dispatch_ms,
            f.route_per_mille
        ));
    }
    for (n, g) in f.clusters() {
        lines.push(format!(
            "xdv: federation: cluster {n} (id {}) on node(s) {}; heartbeat every {} ms",
            g.cluster,
            ids(g),
            f.heartbeat_ms
        ));
    }
    lines.join("\n")
}

/// Why `up` will not touch an existing cluster directory without a flag.
fn exists_message(dir: &Path) -> String {
    let what = match (ClusterState::load(dir), Keys::load(dir)) {
        (Ok(st), Ok(k)) => format!(
            "cluster {} with nodes {} and tenants 1..={}",
            k.cluster,
            st.member_list(),
            k.tenants.len()
        ),
        _ => "files of an earlier cluster".to_string(),
    };
    format!(
        "{} already holds {what} (its RAM files carry that cluster's Raft log and audit chain).\n\
         Boot it again with `cargo xdv up --resume` (same keys and members), or wipe it and start \
         a new cluster with `cargo xdv up --fresh`.",
        dir.display()
    )
}

/// Refuses arguments a new cluster cannot have.
fn check_new(a: &UpArgs) -> Result<()> {
    let nodes = a.total_nodes();
    if let Some((g, c, n)) = a.federation() {
        if nodes > MAX_NODES {
            bail!(
                "a federation of {g} gate node(s) and {c} cluster(s) of {n} node(s) is {nodes} \
                 machines; at most {MAX_NODES} fit (try --clusters 2 --nodes 1 --gates 1)"
            );
        }
        if !a.accel.is_empty() || a.boot == Some(BootMode::Pxe) || a.net.is_some() {
            bail!(
                "a federation boots its nodes with -kernel on the host switch: \
                 --accel, --boot pxe and --net are not supported with --clusters"
            );
        }
    }
    if a.tenants.unwrap_or(2) > MAX_TENANTS {
        bail!("--tenants must be 0..={MAX_TENANTS}");
    }
    parse_accel(&a.accel, nodes)?;
    let base = a.mgmt_port_base.unwrap_or(cluster::MGMT_HOST_PORT_BASE);
    if u32::from(base) + nodes > u32::from(u16::MAX) {
        bail!("--mgmt-port-base {base} + {nodes} nodes is past port 65535");
    }
    Ok(())
}

/// A new cluster in `dir`: fresh keys, node specs, nothing started yet.
fn new_state(a: &UpArgs, dir: &Path) -> Result<(ClusterState, Keys)> {
    let nodes = a.total_nodes();
    let tenants = a.tenants.unwrap_or(2);
    let base = a.mgmt_port_base.unwrap_or(cluster::MGMT_HOST_PORT_BASE);
    std::fs::create_dir_all(dir)?;
    let keys = match a.federation() {
        Some((g, c, n)) => Keys::generate_federation(
            g,
            c,
            n,
            tenants,
            (
                FED_DISPATCH_MS,
                FED_HEARTBEAT_MS,
                a.route_scale.unwrap_or(1000),
            ),
        )?,
        None => Keys::generate(nodes, tenants)?,
    };
    keys.save(dir)?;
    let extra = a.cmdline.join(" ");
    let accel = parse_accel(&a.accel, nodes)?;
    // Each node's genesis members: its own cluster's (a federation's groups are
    // separate clusters).
    let genesis_of = |id: u32| -> String {
        let ids: Vec<u32> = match keys.federation.as_ref().and_then(|f| f.group_of(id)) {
            Some(g) => g.nodes.clone(),
            None => (1..=nodes).collect(),
        };
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        ids.join(",")
    };
    let specs = (1..=nodes)
        .map(|id| NodeSpec {
            id,
            smp: a.smp.unwrap_or(2),
            mem_mib: a.mem_mib.unwrap_or(256),
            cmdline: format!(
                "node={id} ip=10.0.0.{id}/24 genesis={} {extra}",
                genesis_of(id)
            )
            .trim()
            .to_string(),
            provision: Some(dir.join(format!("node{id}.prov"))),
            pid: None,
            mgmt_port: base + id as u16,
            log_offset: 0,
            accel: accel.get(&id).cloned(),
            accel_pid: None,
            bridge: None,
            discovering: false,
        })
        .collect();
    let st = ClusterState {
        switch_dir: dir.join("net"),
        dir: dir.to_path_buf(),
        kernel: PathBuf::new(),
        nodes: specs,
        switch_pid: None,
        seed: a.seed.unwrap_or(1),
        extra_cmdline: extra,
        genesis: (1..=nodes).collect(),
        machine: Default::default(),
    };
    Ok((st, keys))
}

/// The cluster in `dir`, checked against what `a` asks for.
fn resume_state(a: &UpArgs, dir: &Path) -> Result<(ClusterState, Keys)> {
    let st = ClusterState::load(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot resume: {e:#}; start a new cluster with `cargo xdv up --fresh` (wipes {})",
            dir.display()
        )
    })?;
    let keys = Keys::load(dir)?;
    let mut differ = Vec::new();
    let first = st.nodes.first();
    let mut cmp = |what: &str, asked: Option<String>, has: String| {
        if let Some(asked) = asked
            && asked != has
        {
            differ.push(format!("{what} {asked} (the directory's: {has})"));
        }
    };
    let fed = keys
        .federation
        .as_ref()
        .map(|f| (f.gate().map_or(0, |g| g.nodes.len()), f.clusters().count()));
    let per_cluster = keys
        .federation
        .as_ref()
        .and_then(|f| f.clusters().next().map(|(_, g)| g.nodes.len()));
    cmp(
        "--nodes",
        a.nodes.map(|n| n.to_string()),
        per_cluster.unwrap_or(st.nodes.len()).to_string(),
    );
    cmp(
        "--clusters",
        a.clusters.map(|n| n.to_string()),
        fed.map_or("none".into(), |f| f.1.to_string()),
    );
    cmp(
        "--gates",
        a.gates.map(|n| n.to_string()),
        fed.map_or("none".into(), |f| f.0.to_string()),
    );
    cmp(
        "--tenants",
        a.tenants.map(|n| n.to_string()),
        keys.tenants.len().to_string(),
    );
    cmp(
        "--smp",
        a.smp.map(|n| n.to_string()),
        first.map_or(0, |n| n.smp).to_string(),
    );
    cmp(
        "--mem-mib",
        a.mem_mib.map(|n| n.to_string()),
        first.map_or(0, |n| n.mem_mib).to_string(),
    );
    cmp("--seed", a.seed.map(|n| n.to_string()), st.seed.to_string());
    cmp(
        "kernel command line",
        (!a.cmdline.is_empty()).then(|| format!("`{}`", a.cmdline.join(" "))),
        format!("`{}`", st.extra_cmdline),
    );
    let base = st.nodes.first().map(|n| n.mgmt_port() - n.id as u16);
    cmp(
        "--mgmt-port-base",
        a.mgmt_port_base.map(|n| n.to_string()),
        base.unwrap_or(0).to_string(),
    );
    let has: Vec<String> = st
        .nodes
        .iter()
        .filter_map(|n| n.accel.as_ref().map(|k| format!("{}={k}", n.id)))
        .collect();
    let asked = parse_accel(&a.accel, st.nodes.len() as u32)?;
    let asked: Vec<String> = asked.iter().map(|(id, k)| format!("{id}={k}")).collect();
    cmp(
        "--accel",
        (!a.accel.is_empty()).then(|| asked.join(",")),
        has.join(","),
    );
    // Removed nodes keep their keys (a joining node needs the genesis members' keys).
    let key_ids: Vec<u32> = keys.nodes.iter().map(|(n, _)| *n).collect();
    let st_ids: Vec<u32> = st.nodes.iter().map(|n| n.id).collect();
    if !st_ids.iter().all(|id| key_ids.contains(id)) {
        bail!(
            "cannot resume: keys.json has nodes {key_ids:?} but cluster.json has {st_ids:?}; \
             start a new cluster with `cargo xdv up --fresh`"
        );
    }
    if !differ.is_empty() {
        bail!(
            "cannot resume cluster {} in {}: asked for {}. Resume it as it is with \
             `cargo xdv up --resume` and no other flags, or wipe it and start a new cluster \
             with `cargo xdv up --fresh`.",
            keys.cluster,
            dir.display(),
            differ.join(", ")
        );
    }
    Ok((st, keys))
}

/// Shows the nodes' state until every node is ready: an in-place table on a
/// terminal, one line per change otherwise.
fn wait_ready(st: &ClusterState, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    let ansi = std::io::stderr().is_terminal();
    let mut shown: Vec<String> = Vec::new();
    loop {
        let states: Vec<NodeState> = st.nodes.iter().map(|n| NodeState::of(st, n)).collect();
        let lines: Vec<String> = st.nodes.iter().map(|n| cluster::node_line(st, n)).collect();
        let mut err = std::io::stderr();
        if ansi {
            if !shown.is_empty() {
                let _ = write!(err, "\x1b[{}A", shown.len());
            }
            for l in &lines {
                let _ = writeln!(err, "\x1b[2K{l}");
            }
        } else {
            for (i, l) in lines.iter().enumerate() {
                if shown.get(i) != Some(l) {
                    let _ = writeln!(err, "{l}");
                }
            }
        }
        shown = lines;
        if states.iter().all(|s| matches!(s, NodeState::Ready(_))) {
            return Ok(());
        }
        if let Some(n) = st
            .nodes
            .iter()
            .zip(&states)
            .find_map(|(n, s)| (*s == NodeState::Stopped).then_some(n))
        {
            let id = n.id;
            let why = cluster::exit_reason(st, id)
                .map_or_else(String::new, |r| format!(" (QEMU said: {r})"));
            bail!(
                "node {id} exited during boot{why}; see node{id}.log and node{id}.qemu.err in {}",
                st.dir.display()
            );
        }
        if Instant::now() > end {
            bail!(
                "not every node was ready after {} s; see the logs in {}",
                timeout.as_secs(),
                st.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn down(a: DirArgs) -> Result<()> {
    let mut st = ClusterState::load(&dir(a.dir))?;
    let ids = st.running();
    let ours = st.own_running().len();
    let t0 = Instant::now();
    if ours == 0 {
        eprintln!("xdv: no node is running");
    } else {
        eprintln!(
            "xdv: stopping {ours} node{} (QMP quit; SIGTERM after {} s, SIGKILL after {} s more)...",
            if ours == 1 { "" } else { "s" },
            cluster::STOP_QUIT_GRACE.as_secs(),
            cluster::STOP_TERM_GRACE.as_secs()
        );
    }
    cluster::stop_nodes(&mut st, &ids, false, &mut |id, how, t| {
        if how != cluster::Stopped::NotRunning {
            eprintln!("xdv: node {id} {how} after {:.1} s", t.as_secs_f64());
        }
    })?;
    for id in cluster::stop_accels(&mut st)? {
        eprintln!("xdv: node {id}'s accelerator device stopped");
    }
    if st.switch_running() {
        cluster::stop_switch(&mut st);
        eprintln!("xdv: switch stopped");
    }
    st.switch_pid = None;
    st.save()?;
    eprintln!(
        "xdv: cluster down in {:.1} s; RAM files kept in {} (`cargo xdv up --resume` boots it again)",
        t0.elapsed().as_secs_f64(),
        st.dir.display()
    );
    Ok(())
}

/// One operator-signed `ClusterStatus` to every running node.
pub fn views(st: &ClusterState, keys: &Keys) -> Vec<(u32, Result<ClusterView>)> {
    st.nodes
        .iter()
        .filter(|n| n.pid.is_some_and(cluster::alive) && !n.discovering)
        .map(|n| {
            (
                n.id,
                mgmt::cluster_view(n.mgmt_port(), &keys.for_node(n.id)),
            )
        })
        .collect()
}

/// The cluster table: node, role, term, commit, applied, tasks, audit head, state hash;
/// then the federated root.
pub fn table(views: &[(u32, Result<ClusterView>)]) -> String {
    let mut out = String::from(
        "node  role           term  commit  applied  tasks  done  audit-recs  audit-head        state-hash\n",
    );
    for (id, v) in views {
        match v {
            Ok(v) => {
                out += &format!(
                    "{id:<5} {:<14} {:<5} {:<7} {:<8} {:<6} {:<5} {:<11} {}  {}\n",
                    mgmt::role_name(&v.role),
                    v.term,
                    v.commit,
                    v.applied,
                    v.tasks,
                    v.completed,
                    v.audit_records,
                    v.audit_head.short(),
                    v.state_hash.short()
                )
            }
            Err(e) => out += &format!("{id:<5} unreachable: {e:#}\n"),
        }
    }
    let mut fed: Vec<String> = views
        .iter()
        .filter_map(|(_, v)| v.as_ref().ok())
        .map(|v| {
            v.federated_root
                .map_or("none".into(), |r| r.short().to_string())
        })
        .collect();
    fed.dedup();
    out += &format!("federated audit root: {}\n", fed.join(" / "));
    out
}

/// Whether the views agree: the state hashes of nodes at the same applied index.
fn hashes_agree(ok: &[&ClusterView]) -> bool {
    ok.iter().all(|a| {
        ok.iter()
            .all(|b| a.applied != b.applied || a.state_hash == b.state_hash)
    })
}

/// The health summary: JSON and one line (leader and term; quorum, from the members
/// the leader sees up; nodes running and answering; whether the state hashes of nodes
/// at the same applied index agree).
fn health(st: &ClusterState, views: &[(u32, Result<ClusterView>)]) -> (Value, String) {
    let ok: Vec<&ClusterView> = views.iter().filter_map(|(_, v)| v.as_ref().ok()).collect();
    let leader = ok
        .iter()
        .filter(|v| mgmt::role_name(&v.role) == "leader")
        .max_by_key(|v| v.term);
    let total = st.nodes.len();
    // The leader's member list says who it hears from; without one, who answers us.
    let up = match leader {
        Some(l) if !l.members.is_empty() => l.members.iter().filter(|m| m.up).count(),
        _ => ok.len(),
    };
    let quorum = leader.is_some() && up > total / 2;
    let agree = hashes_agree(&ok);
    let hashes = match (ok.is_empty(), agree) {
        (true, _) => "no node answers",
        (false, true) => "state hashes agree",
        (false, false) => "STATE HASHES DIFFER at the same applied index",
    };
    let (quarantined, q_line) = cluster::quarantine_summary(&ok);
    let line = format!(
        "{}; {}, {up} of {total} members up; {} of {total} nodes running, {} answering; {hashes}{q_line}",
        leader.map_or("no leader".to_string(), |v| format!(
            "leader node {} (term {})",
            v.node.0, v.term
        )),
        if quorum { "quorum" } else { "NO QUORUM" },
        st.running().len(),
        ok.len(),
    );
    let json = json!({
        "leader": leader.map(|v| v.node.0),
        "placement_policy": placement_policy(views),
        "term": leader.map(|v| v.term),
        "quorum": quorum,
        "members_up": up,
        "members": total,
        "running": st.running().len(),
        "answering": ok.len(),
        "hashes_agree": (!ok.is_empty()).then_some(agree),
        "quarantined": quarantined,
        "line": line,
    });
    (json, line)
}

fn view_json(v: &ClusterView) -> Value {
    json!({
        "role": mgmt::role_name(&v.role),
        "term": v.term,
        "leader": v.leader.map(|n| n.0),
        "commit": v.commit,
        "applied": v.applied,
        "tasks": v.tasks,
        "completed": v.completed,
        "pending": v.pending,
        "audit_records": v.audit_records,
        "audit_head": v.audit_head.to_string(),
        "state_hash": v.state_hash.to_string(),
        "federated_root": v.federated_root.map(|r| r.to_string()),
        "members": v.members.iter().map(|m| json!({
            "node": m.node.0,
            "up": m.up,
            "assigned": m.assigned,
            "completed": m.completed,
            "audit_records": m.audit_records,
            "observer": m.observer,
            "raft": m.raft,
        })).collect::<Vec<_>>(),
        "peer_health": peer_health_json(&v.peer_health),
        "placement_policy": v.placement_policy,
    })
}

/// The placement policy in force, as the leader's state has it (else any answering
/// node's): it is replicated, so every node that applied the same entries agrees.
pub fn placement_policy(views: &[(u32, Result<ClusterView>)]) -> Option<String> {
    let ok: Vec<&ClusterView> = views.iter().filter_map(|(_, v)| v.as_ref().ok()).collect();
    ok.iter()
        .filter(|v| mgmt::role_name(&v.role) == "leader")
        .max_by_key(|v| v.term)
        .or_else(|| ok.iter().max_by_key(|v| v.applied))
        .map(|v| v.placement_policy.clone())
}

/// The node's Vivaldi coordinate, confirmation counters (seed 003 §12.8) and its view
/// of each member: state, role, measured and estimated RTT, adaptive suspicion timeout.
fn peer_health_json(h: &xdv_cluster::mgmt::PeerHealthView) -> Value {
    json!({
        "coordinate_us": h.position_us,
        "height_us": h.height_us,
        "error_ppm": h.error_ppm,
        "samples": h.samples,
        "converged": h.converged,
        "coordinate_updates": h.coordinate_updates,
        "samples_rejected": h.samples_rejected,
        "last_prediction_error_ppm": h.last_prediction_error_ppm,
        "unconfirmed": h.counts.0,
        "alive": h.counts.1,
        "suspect": h.counts.2,
        "dead": h.counts.3,
        "confirmed": h.confirmed,
        "removed_unconfirmed": h.removed_unconfirmed,
        "suspected": h.suspected,
        "refuted": h.refuted,
        "declared_dead": h.dead,
        "load_ppm": h.load_ppm,
        "peers": h.peers.iter().map(|p| json!({
            "node": p.node.0,
            "role": p.role,
            "state": p.state,
            "rtt_last_us": p.rtt_last_us,
            "rtt_estimate_us": p.rtt_estimate_us,
            "rtt_ucb_us": p.rtt_ucb_us,
            "quality_ppm": p.quality_ppm,
            "silent_ms": p.silent_ms,
            "suspicion_timeout_ms": p.suspicion_timeout_ms,
        })).collect::<Vec<_>>(),
    })
}

/// `status --json`: `{dir, switch, nodes: [{id, state, pid, ready, peer_ip, mgmt_port,
/// log, view, error}], health: {leader, term, quorum, members_up, members, running,
/// answering, hashes_agree, line}}`; `view` is null for a node that is not running or does not
/// answer (then `error` says why).
fn status_json(
    st: &ClusterState,
    views: &[(u32, Result<ClusterView>)],
    keys_err: Option<String>,
) -> Value {
    let nodes: Vec<Value> = st
        .nodes
        .iter()
        .map(|n| {
            let state = NodeState::of(st, n);
            let v = views.iter().find(|(id, _)| *id == n.id).map(|(_, v)| v);
            let error = match (v, &keys_err) {
                (Some(Err(e)), _) => Some(format!("{e:#}")),
                (None, Some(k)) if state != NodeState::Stopped => Some(k.clone()),
                _ => None,
            };
            json!({
                "id": n.id,
                "state": state.word(),
                "pid": n.pid.filter(|&p| cluster::alive(p)),
                "ready": match &state { NodeState::Ready(l) => Some(l.clone()), _ => None },
                "peer_ip": format!("10.0.0.{}", n.id),
                "discovering": n.discovering,
                "mgmt_port": n.mgmt_port(),
                "log": st.path(n.id, "log").display().to_string(),
                "view": v.and_then(|v| v.as_ref().ok()).map(view_json),
                "error": error,
            })
        })
        .collect();
    json!({
        "dir": st.dir.display().to_string(),
        "switch": if st.switch_running() { "running" } else { "stopped" },
        "nodes": nodes,
        "health": health(st, views).0,
    })
}

pub fn status(a: StatusArgs) -> Result<()> {
    let st = ClusterState::load(&dir(a.dir))?;
    let keys = Keys::load(&st.dir);
    let views = match &keys {
        Ok(k) => views(&st, k),
        Err(_) => Vec::new(),
    };
    if a.json {
        let err = keys.as_ref().err().map(|e| format!("{e:#}"));
        let mut j = status_json(&st, &views, err);
        // A federation: its groups (gate group first) with their cluster ids.
        if let Some(f) = keys.as_ref().ok().and_then(|k| k.federation.as_ref()) {
            j["federation"] = json!(
                f.groups
                    .iter()
                    .map(|g| json!({
                        "role": if g.gate { "gate" } else { "cluster" },
                        "cluster": g.cluster,
                        "nodes": g.nodes,
                    }))
                    .collect::<Vec<_>>()
            );
        }
        println!("{j}");
        return Ok(());
    }
    let sw = if st.switch_running() {
        "running"
    } else {
        "stopped"
    };
    let fed = keys.as_ref().ok().and_then(|k| k.federation.clone());
    if let (Some(f), false) = (&fed, st.running().is_empty()) {
        // Each cluster of the federation is its own Raft group: its own health line.
        for g in &f.groups {
            let sub = ClusterState {
                nodes: st
                    .nodes
                    .iter()
                    .filter(|n| g.nodes.contains(&n.id))
                    .cloned()
                    .collect(),
                ..st.clone()
            };
            let sub_views: Vec<(u32, Result<ClusterView>)> = views
                .iter()
                .filter(|(id, _)| g.nodes.contains(id))
                .map(|(id, v)| {
                    (
                        *id,
                        match v {
                            Ok(v) => Ok(v.clone()),
                            Err(e) => Err(anyhow::anyhow!("{e:#}")),
                        },
                    )
                })
                .collect();
            let name = match f.clusters().find(|(_, c)| c.cluster == g.cluster) {
                Some((n, _)) => format!("cluster {n} (id {})", g.cluster),
                None => format!("gate group (id {})", g.cluster),
            };
            println!("{name}: {}", health(&sub, &sub_views).1);
            let leader = sub_views
                .iter()
                .filter_map(|(_, v)| v.as_ref().ok())
                .find(|v| mgmt::role_name(&v.role) == "leader");
            if let (true, Some(l)) = (g.gate, leader) {
                println!(
                    "gate: node {} is the gate leader; jobs {} ({} finished or failed, {} open)",
                    l.node.0, l.tasks, l.completed, l.pending
                );
            }
        }
    } else if keys.is_ok() && !st.running().is_empty() {
        println!("health: {}", health(&st, &views).1);
        if let Some(p) = placement_policy(&views) {
            println!("placement: {p}");
        }
    }
    println!("cluster {} (switch {sw})", st.dir.display());
    for n in &st.nodes {
        println!("{}", cluster::node_line(&st, n));
    }
    match &keys {
        Ok(_) if st.running().is_empty() => {
            println!("no node is running (`cargo xdv up --resume` boots the cluster again)")
        }
        Ok(_) => print!("{}", table(&views)),
        Err(e) => println!("(no cluster table: {e:#})"),
    }
    Ok(())
}

fn watch(st: &ClusterState) -> Result<()> {
    let keys = Keys::load(&st.dir)?;
    let mut shown = 0;
    loop {
        let v = views(st, &keys);
        let t = format!("health: {}\n{}", health(st, &v).1, table(&v));
        let mut err = std::io::stderr();
        if shown > 0 {
            let _ = write!(err, "\x1b[{shown}A");
        }
        for l in t.lines() {
            let _ = writeln!(err, "\x1b[2K{l}");
        }
        shown = t.lines().count();
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub fn console(a: NodeArgs) -> Result<()> {
    let st = ClusterState::load(&dir(a.dir))?;
    st.running_node_port(a.node)?;
    cluster::attach_console(&st, a.node)
}

pub fn kill(a: NodeArgs) -> Result<()> {
    let mut st = ClusterState::load(&dir(a.dir))?;
    if cluster::stop_node(&mut st, a.node, true)? {
        eprintln!(
            "xdv: node {} killed (SIGKILL); restart it with `cargo xdv start {}`",
            a.node, a.node
        );
    } else {
        eprintln!("xdv: node {} was not running", a.node);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct StartArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Move the node's peer NIC first: `switch`, `bridge=NAME` or
    /// `bridge=NAME,netns=NS` (as `up --net`) [default: where it was].
    #[arg(long)]
    net: Option<xdv::bridge::PeerNet>,
}

pub fn start(a: StartArgs) -> Result<()> {
    let StartArgs { node: a, net } = a;
    let mut st = ClusterState::load(&dir(a.dir))?;
    st.node(a.node)?;
    if let Some(net) = net {
        if let Some(pid) = st.node(a.node)?.pid.filter(|&p| cluster::alive(p)) {
            bail!(
                "node {} is running (pid {pid}); stop it with `cargo xdv kill {}` before moving its NIC",
                a.node,
                a.node
            );
        }
        let bridge = net.bridge();
        if let Some(b) = &bridge {
            xdv::bridge::check(b)?;
        }
        if let Some(n) = st.nodes.iter_mut().find(|n| n.id == a.node) {
            n.bridge = bridge;
        }
        st.save()?;
    }
    if let Some(pid) = cluster::ensure_switch(&mut st)? {
        eprintln!("xdv: the switch was not running; started it (pid {pid})");
    }
    let pid = cluster::start_node(&mut st, a.node)?;
    eprintln!("xdv: node {} started on its RAM file (pid {pid})", a.node);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_accel;

    fn words(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn accel_pairs_parse_and_bad_ones_are_named() {
        let m = parse_accel(&words("2=q,3=PHI"), 3).unwrap();
        assert_eq!(m.get(&2).map(String::as_str), Some("q"));
        assert_eq!(m.get(&3).map(String::as_str), Some("phi"));
        assert!(parse_accel(&[], 3).unwrap().is_empty());
        let err = |s: &str| parse_accel(&words(s), 3).unwrap_err().to_string();
        assert_eq!(
            err("4=q"),
            "--accel `4=q`: node 4 is not in the cluster (nodes 1..=3)"
        );
        assert_eq!(err("2=x"), "unknown accelerator kind `x` (want q or phi)");
        assert!(err("2").contains("want NODE=KIND"));
        assert_eq!(err("2=q,2=phi"), "--accel names node 2 twice");
    }

    #[derive(clap::Parser)]
    struct Up {
        #[command(flatten)]
        up: super::UpArgs,
    }

    fn up_args(args: &[&str]) -> super::UpArgs {
        use clap::Parser;
        Up::try_parse_from(std::iter::once("up").chain(args.iter().copied()))
            .unwrap()
            .up
    }

    /// Flags on the command line win over the file; what they leave out comes from it.
    #[test]
    fn config_fills_in_what_flags_leave_out() {
        let cfg = super::super::up_config::UpConfig::parse(
            "nodes = 4\nsmp = 3\nmem_mib = 512\ntenants = 3\naccel = { 2 = \"q\" }\n[quotas.2]\nmax_in_flight = 1\n",
        )
        .unwrap();
        let mut a = up_args(&["--nodes", "5", "--accel", "3=phi"]);
        let quotas = super::merge_config(&mut a, cfg.clone());
        assert_eq!(a.nodes, Some(5), "the flag wins");
        assert_eq!(a.smp, Some(3));
        assert_eq!(a.mem_mib, Some(512));
        assert_eq!(a.tenants, Some(3));
        assert_eq!(a.seed, None, "neither says: the default applies later");
        assert_eq!(
            a.accel,
            vec!["3=phi".to_string()],
            "--accel replaces the file's"
        );
        assert_eq!(quotas[&2].max_in_flight, 1);
        super::check_new(&a).unwrap();
        super::check_quota_tenants(&quotas, 3).unwrap();
        let e = super::check_quota_tenants(&quotas, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("quota for tenant 2"), "{e}");

        let mut b = up_args(&[]);
        super::merge_config(&mut b, cfg);
        assert_eq!(b.nodes, Some(4));
        assert_eq!(b.accel, vec!["2=q".to_string()]);
    }
}
