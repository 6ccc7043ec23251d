//! A node's RAM file as the host reads it: where its Raft and audit regions are, their
//! bytes, and the configuration the node was built from (for the genesis state).
//!
//! Where the regions are: `--raft`/`--audit` if given, else the node's kernel command
//! line in the cluster directory's `cluster.json` (`raft=`/`audit=` words), else the
//! kernel defaults (`xdv_boot::cmdline::DEFAULT_RAFT_REGION`, `DEFAULT_AUDIT_REGION`).
//! Who the node is and whom it trusted: its provisioning module (`node<N>.prov`, or
//! rebuilt from `keys.json`), turned into an [`Identity`] the way the kernel does
//! (`kernel/image/src/service.rs`), and into the [`NodeConfig`] recipe the kernel uses.
//!
//! Refusals are specific: a RAM file whose size differs from what `cluster.json` says
//! the node was started with, a file that ends before a region, a provisioning module
//! for another node.

use crate::cluster::ClusterState as ClusterFile;
use crate::mgmt::Keys;
use anyhow::{Context, Result, anyhow, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use xdv_boot::cmdline::{DEFAULT_AUDIT_REGION, DEFAULT_RAFT_REGION};
use xdv_node::{GENESIS_CORES, Identity, NodeConfig};

/// Largest region read (the kernel accepts up to 1 GiB of audit region).
const MAX_REGION_BYTES: u64 = 1 << 30;

/// Where a region lies in the RAM file (= its physical address and size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionPlace {
    pub offset: u64,
    pub bytes: u64,
}

impl std::fmt::Display for RegionPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}+{:#x}", self.offset, self.bytes)
    }
}

/// What to override when locating a node's regions and identity.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub raft: Option<RegionPlace>,
    pub audit: Option<RegionPlace>,
    /// The node's provisioning module.
    pub prov: Option<PathBuf>,
}

/// One node's RAM file, read.
pub struct NodeImage {
    pub path: PathBuf,
    /// From the file name (`node<N>.ram`), if it has that shape.
    pub file_node: Option<u32>,
    pub raft_at: RegionPlace,
    pub raft: Vec<u8>,
    pub audit_at: RegionPlace,
    pub audit: Vec<u8>,
    /// The configuration recipe the kernel builds the node from (genesis input).
    pub config: Option<NodeConfig>,
    /// Where the identity came from, or why there is none.
    pub config_from: String,
}

/// The node configuration the kernel builds for `identity` (`kernel/image/src/service.rs`):
/// what decides the genesis state is the members, the tenants, the genesis cores and
/// the capabilities every member offers.
pub fn kernel_config(identity: Identity) -> NodeConfig {
    let mut cfg = NodeConfig::new(identity, GENESIS_CORES);
    cfg.capabilities = vec![xdv_sandbox::CAP_ECHO_LEN];
    cfg.builtins = xdv_sandbox::BUILTINS
        .iter()
        .map(|b| b.name.to_string())
        .collect();
    cfg
}

/// The identity the kernel derives from a provisioning module (the same recipe:
/// `Identity::from_provision`).
pub fn identity_from_module(bytes: &[u8]) -> Result<Identity> {
    Identity::from_provision(bytes).map_err(|e| anyhow!("provisioning module refused: {e}"))
}

/// `node<N>.ram` → N.
pub fn node_of_file(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("node")?
        .strip_suffix(".ram")?
        .parse()
        .ok()
}

fn read_at(f: &mut File, place: RegionPlace) -> Result<Vec<u8>> {
    f.seek(SeekFrom::Start(place.offset))?;
    let mut buf = Vec::with_capacity(place.bytes as usize);
    f.take(place.bytes).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Reads node `path`'s regions and identity (see the module doc).
pub fn load_node(path: &Path, opts: &LoadOptions) -> Result<NodeImage> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_len = f.metadata()?.len();
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_node = node_of_file(path);
    let cluster_file = ClusterFile::load(dir).ok();
    let spec = file_node.and_then(|n| cluster_file.as_ref()?.node(n).ok().cloned());
    let parsed = spec
        .as_ref()
        .map(|s| xdv_boot::cmdline::parse(&s.cmdline).options);
    let place = |(offset, bytes): (u64, u64)| RegionPlace { offset, bytes };
    let raft_at = opts
        .raft
        .unwrap_or_else(|| place(parsed.as_ref().map_or(DEFAULT_RAFT_REGION, |o| o.raft)));
    let audit_at = opts
        .audit
        .unwrap_or_else(|| place(parsed.as_ref().map_or(DEFAULT_AUDIT_REGION, |o| o.audit)));
    if let Some(s) = &spec {
        let expected = u64::from(s.mem_mib) << 20;
        if file_len != expected {
            bail!(
                "{} is {file_len} bytes but cluster.json says node {} was started with {} MiB \
                 ({expected} bytes): not this node's RAM file (another cluster's or a copy cut short?)",
                path.display(),
                s.id,
                s.mem_mib
            );
        }
    }
    for (what, at) in [("Raft", raft_at), ("audit", audit_at)] {
        if at.bytes > MAX_REGION_BYTES {
            bail!("the {what} region {at} is larger than 1 GiB");
        }
        if at.offset.saturating_add(at.bytes) > file_len {
            bail!(
                "{} is {file_len} bytes and ends before the {what} region at {at}: not a RAM file \
                 of a node with that region (pass --{} ADDR,SIZE if the node was booted with another)",
                path.display(),
                what.to_lowercase()
            );
        }
    }
    let raft = read_at(&mut f, raft_at)?;
    let audit = read_at(&mut f, audit_at)?;
    let (config, config_from) = find_identity(dir, file_node, spec.as_ref(), opts)?;
    Ok(NodeImage {
        path: path.to_path_buf(),
        file_node,
        raft_at,
        raft,
        audit_at,
        audit,
        config,
        config_from,
    })
}

/// The identity: `--prov`, `node<N>.prov` beside the file, `keys.json` beside it, or
/// the command-line peers of a node `up` started without a module.
fn find_identity(
    dir: &Path,
    node: Option<u32>,
    spec: Option<&crate::cluster::NodeSpec>,
    opts: &LoadOptions,
) -> Result<(Option<NodeConfig>, String)> {
    let from_module = |bytes: Vec<u8>, from: String| -> Result<(Option<NodeConfig>, String)> {
        let id = identity_from_module(&bytes).with_context(|| from.clone())?;
        if let Some(n) = node.filter(|&n| n != id.node) {
            bail!(
                "{from} is the provisioning module of node {}, not of node {n}",
                id.node
            );
        }
        Ok((Some(kernel_config(id)), from))
    };
    if let Some(p) = &opts.prov {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        return from_module(bytes, format!("provisioning module {}", p.display()));
    }
    let Some(n) = node else {
        return Ok((None, "no node<N>.ram file name and no --prov".into()));
    };
    let prov = dir.join(format!("node{n}.prov"));
    if prov.is_file() {
        let bytes = std::fs::read(&prov)?;
        return from_module(bytes, format!("provisioning module {}", prov.display()));
    }
    if Keys::file(dir).is_file() {
        let keys = Keys::load(dir)?;
        let bytes = keys
            .module(n)
            .with_context(|| format!("keys.json in {} has no key for node {n}", dir.display()))?;
        return from_module(bytes, format!("{} (node {n})", Keys::file(dir).display()));
    }
    if let Some(s) = spec.filter(|s| s.provision.is_none()) {
        let o = xdv_boot::cmdline::parse(&s.cmdline).options;
        return Ok((
            Some(kernel_config(Identity::from_cmdline(n, o.peers()))),
            "command-line peers (no provisioning module)".into(),
        ));
    }
    Ok((
        None,
        format!(
            "no node{n}.prov and no keys.json in {} (pass --prov)",
            dir.display()
        ),
    ))
}
