//! `cargo xdv pxe`: write a PXE netboot tree (TFTP root) for N nodes, each picked by
//! the MAC it boots from, with the keys and provisioning modules `up` would make
//! (docs/pxe.md). `--dnsmasq` adds dnsmasq configurations to serve it.

use anyhow::{Result, bail};
use std::path::PathBuf;
use xdv::cluster::MAX_NODES;
use xdv::mgmt::Keys;
use xdv::pxe::{self, PxeNode};
use xdv::qemu;

#[derive(clap::Args)]
pub struct Args {
    /// The TFTP root to write (created; files already there are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Number of nodes, ids 1..=N (1-9).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=MAX_NODES as i64))]
    nodes: u32,
    /// The MAC each node boots from, in node order, comma-separated [default: the
    /// management NICs of QEMU nodes, 52:54:00:00:01:NN].
    #[arg(long, value_delimiter = ',')]
    macs: Vec<String>,
    /// Tenants to register (new keys only).
    #[arg(long, default_value_t = 2)]
    tenants: u32,
    /// Where the cluster's keys live (`keys.json`, secret: keep it off the TFTP
    /// root): reused if present with as many nodes, else generated there
    /// [default: target/xdv/pxe].
    #[arg(long)]
    keys_dir: Option<PathBuf>,
    /// Do not make UEFI images even if `grub-efi-amd64-bin` is installed.
    #[arg(long)]
    no_uefi: bool,
    /// Also write `dnsmasq.conf` (DHCP + TFTP) and `dnsmasq-proxy.conf` (proxy-DHCP
    /// beside an existing DHCP server) into the TFTP root.
    #[arg(long)]
    dnsmasq: bool,
    /// Network interface dnsmasq serves.
    #[arg(long, default_value = "eth1", requires = "dnsmasq")]
    interface: String,
    /// DHCP address range of the DHCP + TFTP configuration.
    #[arg(
        long,
        default_value = "192.168.50.100,192.168.50.200",
        requires = "dnsmasq"
    )]
    dhcp_range: String,
    /// The network address the proxy-DHCP configuration answers on.
    #[arg(long, default_value = "192.168.50.0", requires = "dnsmasq")]
    proxy_subnet: String,
    /// Extra kernel command-line words for every node, after `--`.
    #[arg(last = true)]
    cmdline: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let macs: Vec<String> = if a.macs.is_empty() {
        (1..=a.nodes).map(|id| qemu::mgmt_mac(id as u16)).collect()
    } else {
        a.macs.clone()
    };
    if macs.len() != a.nodes as usize {
        bail!(
            "--macs names {} MACs for {} nodes (one per node, in node order)",
            macs.len(),
            a.nodes
        );
    }
    let keys_dir = a
        .keys_dir
        .clone()
        .unwrap_or_else(|| qemu::repo_root().join("target/xdv/pxe"));
    let keys = load_or_generate(&keys_dir, a.nodes, a.tenants)?;
    let kernel = qemu::build_kernel_with(true, true)?;
    let extra = a.cmdline.join(" ");
    let nodes = macs
        .iter()
        .zip(1..=a.nodes)
        .map(|(mac, id)| {
            Ok(PxeNode {
                id,
                mac: mac.clone(),
                cmdline: format!("node={id} ip=10.0.0.{id}/24 {extra}")
                    .trim()
                    .to_string(),
                module: Some(keys.module(id)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let tree = pxe::write_tree(&a.out, &kernel, &nodes, !a.no_uefi)?;
    let names: Vec<&str> = tree.firmwares.iter().map(|f| f.name()).collect();
    println!(
        "xdv: PXE tree for {} nodes in {} ({}); keys in {}",
        a.nodes,
        a.out.display(),
        names.join(" and "),
        Keys::file(&keys_dir).display()
    );
    for f in &tree.firmwares {
        println!("  {} boot file: {}", f.name(), f.bootfile());
    }
    for (id, mac) in &tree.nodes {
        println!("  node {id}: MAC {mac} -> xdv/mac-{mac}.cfg");
    }
    if !a.no_uefi && !tree.firmwares.contains(&pxe::Firmware::Uefi) {
        eprintln!(
            "xdv: no UEFI images: GRUB's x86_64-efi modules are missing; install with `{}`",
            xdv::prereq::apt_line(&["grub-efi-amd64-bin"])
        );
    }
    if a.dnsmasq {
        for (name, proxy, range) in [
            ("dnsmasq.conf", false, &a.dhcp_range),
            ("dnsmasq-proxy.conf", true, &a.proxy_subnet),
        ] {
            let path = a.out.join(name);
            std::fs::write(
                &path,
                pxe::dnsmasq_config(&tree, &a.interface, range, proxy),
            )?;
            println!("  {}", path.display());
        }
    }
    Ok(())
}

/// The keys in `dir` if they are for `nodes` nodes, else new ones saved there.
fn load_or_generate(dir: &std::path::Path, nodes: u32, tenants: u32) -> Result<Keys> {
    if Keys::file(dir).exists() {
        let k = Keys::load(dir)?;
        if k.nodes.len() != nodes as usize {
            bail!(
                "{} holds keys for {} nodes, not {nodes}; pass another --keys-dir or remove it",
                Keys::file(dir).display(),
                k.nodes.len()
            );
        }
        return Ok(k);
    }
    std::fs::create_dir_all(dir)?;
    let k = Keys::generate(nodes, tenants)?;
    k.save(dir)?;
    Ok(k)
}
