//! `cargo xdv join` and `cargo xdv remove`: membership while the cluster runs.
//!
//! `join` issues the new node's key (operator-issued, kept in `keys.json`), writes its
//! provisioning module (every member's key, the genesis members' included), boots it
//! with `genesis=` (it starts from the cluster's genesis and catches up from the log
//! or a snapshot), then asks the cluster to admit it with an operator-signed
//! `AddWorker` and follows it until it is a voter (an observer: a learner). `remove`
//! asks with `RemoveWorker`, waits until the log has it and leadership is elsewhere,
//! then stops the node. The cluster refuses what cannot be done (already a member,
//! not a member, a change in progress, quorum would be lost) and the refusal is
//! printed as it is.
//!
//! On a cluster that boots by PXE (`up --boot pxe`), `join` also writes the new
//! node's entry into the cluster's TFTP tree (`xdv/mac-<MAC>.cfg` for its management
//! NIC's MAC and `xdv/node<N>.prov`), so the new machine boots GRUB over the network
//! and finds its command line and module by MAC like the first members; `remove` (and
//! a refused `join`) takes the entry out again, so that MAC boots as unknown.

use super::cluster::{dir, views};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::{self, ClusterState, MAX_NODES, NodeSpec, SWITCH_PORTS};
use xdv::mgmt::{self, Keys};
use xdv_cluster::discovery::{Mac, mac_string, parse_mac};
use xdv_cluster::mgmt::{Denied, MembershipDenied, Principal, Request, Response};
use xdv_types::NodeId;

#[derive(clap::Args)]
pub struct JoinArgs {
    /// Id of the new node [default: one above the highest id ever used].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=254))]
    node: Option<u32>,
    /// Admit it as an observer: it follows the log and verifies, never votes nor runs tasks.
    #[arg(long)]
    observer: bool,
    /// Seconds to wait for the node to be admitted and caught up.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Where the new node's peer NIC is: `switch` (the cluster's host switch),
    /// `bridge=NAME` (a TAP on that existing Linux bridge) or `bridge=NAME,netns=NS`
    /// (the bridge is in network namespace NS) [default: as the lowest member's].
    #[arg(long)]
    net: Option<xdv::bridge::PeerNet>,
    /// Provision and admit the discovered machine that booted from this MAC (see
    /// `cargo xdv nodes --discovered`; PXE clusters): its TFTP entry is written, it is
    /// admitted by the log, and it resets into its new configuration.
    #[arg(long, conflicts_with = "unprovisioned")]
    mac: Option<String>,
    /// Boot a new QEMU machine by PXE with no TFTP entry (an unknown MAC, as a new
    /// server on the provisioning network): it joins nothing and reports itself as
    /// discovered; admit it with `--mac`.
    #[arg(long)]
    unprovisioned: bool,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct NodesArgs {
    /// List the machines that reported themselves in discovery mode (unknown MACs).
    #[arg(long)]
    discovered: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// Id of the member to remove.
    node: u32,
    /// Seconds to wait for the cluster to decide.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Sends an operator request to the running members (not `skip`) in turn until the
/// cluster decides it: each attempt is signed anew (a node's anti-replay window has
/// the old sequence number), so a retry after a lost answer is refused as "already
/// done" rather than applied twice.
fn ask(
    st: &ClusterState,
    keys: &Keys,
    request: &Request,
    skip: Option<u32>,
    end: Instant,
) -> Result<Response> {
    let mut last = String::from("no member is running");
    while Instant::now() < end {
        for n in st
            .nodes
            .iter()
            .filter(|n| Some(n.id) != skip && !n.discovering)
        {
            if !n.pid.is_some_and(cluster::alive) {
                continue;
            }
            let req = mgmt::signed(keys, Principal::Operator, request.clone())?;
            let r = mgmt::Client::connect(n.mgmt_port(), Duration::from_secs(2))
                .and_then(|mut c| c.call(&req, Duration::from_secs(12)));
            match r {
                Ok(Response::Refused(
                    d @ (Denied::NoLeader | Denied::NotReady(_) | Denied::Replayed { .. }),
                )) => last = format!("node {}: {d}", n.id),
                Ok(other) => return Ok(other),
                Err(e) => last = format!("node {}: {e:#}", n.id),
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("the cluster did not decide in time (last: {last})")
}

/// Follows `node` in the members' views until `done` says so; prints each new place.
fn follow(
    st: &ClusterState,
    keys: &Keys,
    node: u32,
    end: Instant,
    done: impl Fn(Option<&str>, Option<NodeId>) -> bool,
) -> Result<()> {
    let mut shown = String::new();
    loop {
        for (_, v) in views(st, keys) {
            let Ok(v) = v else { continue };
            if v.role != "Leader" {
                continue;
            }
            let place = v
                .members
                .iter()
                .find(|m| m.node.0 == node)
                .map(|m| m.raft.clone());
            let line = format!(
                "node {node}: {} (leader {})",
                place.as_deref().unwrap_or("not a member"),
                v.node
            );
            if line != shown {
                eprintln!("xdv: {line}");
                shown = line;
            }
            if done(place.as_deref(), Some(v.node)) {
                return Ok(());
            }
        }
        if Instant::now() >= end {
            bail!("node {node} did not get there in time (last seen: {shown})");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Membership of a federation's groups is fixed at `up`: every node's provisioning
/// module lists the federation peers it connects to across groups, and the gates reach
/// a cluster through the nodes named there, so a node added or removed later would be
/// unreachable from the other side (docs/federation.md).
fn refuse_federation(keys: &Keys, what: &str) -> Result<()> {
    if let Some(f) = &keys.federation {
        bail!(
            "`{what}` does not work on a federation yet: its {} groups' members are fixed at `cargo xdv up --clusters` (each node's module names its peers across groups); start a new federation with the size you need",
            f.clusters().count() + usize::from(f.gate().is_some())
        );
    }
    Ok(())
}

pub fn join(a: JoinArgs) -> Result<()> {
    let dir = dir(a.dir);
    let mut st = ClusterState::load(&dir)?;
    let mut keys = Keys::load(&dir)?;
    refuse_federation(&keys, "join")?;
    if !st.nodes.iter().any(|n| n.pid.is_some_and(cluster::alive)) {
        bail!(
            "no node of the cluster in {} is running; start it with `cargo xdv up --resume`",
            dir.display()
        );
    }
    let used = keys
        .nodes
        .iter()
        .map(|k| k.0)
        .chain(st.nodes.iter().map(|n| n.id))
        .max()
        .unwrap_or(0);
    let end = Instant::now() + Duration::from_secs(a.timeout);
    // `--mac`: the discovered machine's id is the one this host runs it as, if any.
    let discovered = match &a.mac {
        Some(m) => Some(discovered_machine(&st, &keys, m, end)?),
        None => None,
    };
    let id = match discovered {
        Some((_, Some(id))) => id,
        _ => a.node.unwrap_or(used + 1),
    };
    if a.unprovisioned {
        return boot_unprovisioned(&mut st, id);
    }
    let running_machine = discovered.is_some_and(|(_, m)| m.is_some());
    if st.nodes.iter().any(|n| n.id == id && !n.discovering) {
        bail!("node {id} is already a member (see `cargo xdv status`)");
    }
    if keys.nodes.iter().any(|k| k.0 == id) {
        bail!(
            "node id {id} was used before (its key is in keys.json); a removed node's id is not reused: join without --node"
        );
    }
    if id > SWITCH_PORTS {
        bail!("node id {id} is above the local switch's {SWITCH_PORTS} ports");
    }
    if st.nodes.len() as u32 >= MAX_NODES {
        bail!("the cluster already has {MAX_NODES} nodes, the most this host runs");
    }
    if st.genesis.is_empty() {
        bail!(
            "this cluster directory predates membership changes (no genesis list); start a new one with `cargo xdv up --fresh`"
        );
    }
    let template = st.nodes.first().cloned().expect("a running member exists");
    let bridge = match a.net {
        Some(net) => net.bridge(),
        None => template.bridge.clone(),
    };
    if let Some(b) = &bridge {
        xdv::bridge::check(b)?;
    }
    let seed = keys.add_node(id)?;
    keys.save(&dir)?;
    let genesis: Vec<String> = st.genesis.iter().map(u32::to_string).collect();
    let spec = NodeSpec {
        id,
        smp: template.smp,
        mem_mib: template.mem_mib,
        cmdline: format!(
            "node={id} ip=10.0.0.{id}/24 genesis={} {}",
            genesis.join(","),
            st.extra_cmdline
        )
        .trim()
        .to_string(),
        provision: Some(dir.join(format!("node{id}.prov"))),
        pid: None,
        mgmt_port: template.mgmt_port() - template.id as u16 + id as u16,
        log_offset: 0,
        accel: None,
        accel_pid: None,
        bridge,
        discovering: false,
    };
    if let Some(p) = &spec.provision {
        std::fs::write(p, keys.module(id)?)?;
    }
    // A PXE-booted cluster: the new machine finds its command line and module in the
    // TFTP tree by its MAC, as the first members did.
    if let Some(pxe) = &st.machine.pxe {
        let cfg = xdv::pxe::add_node(
            &pxe.tftp,
            &xdv::pxe::PxeNode {
                id,
                mac: boot_mac(discovered, id),
                cmdline: spec.cmdline.clone(),
                module: Some(keys.module(id)?),
            },
        )?;
        eprintln!("xdv: node {id} boots by PXE from {}", cfg.display());
    }
    // The machine that reported itself keeps running: it resets into its entry
    // once the cluster answers its next report with "admitted".
    let pid = st.nodes.iter().find(|n| n.id == id).and_then(|n| n.pid);
    st.nodes.retain(|n| n.id != id);
    st.nodes.push(NodeSpec { pid, ..spec });
    st.nodes.sort_by_key(|n| n.id);
    st.save()?;
    if let Some(pid) = cluster::ensure_switch(&mut st)? {
        eprintln!("xdv: the switch was not running; started it (pid {pid})");
    }
    if running_machine {
        eprintln!("xdv: node {id} is the discovered machine; asking the cluster to admit it");
    } else if discovered.is_some() {
        eprintln!(
            "xdv: node {id}: the discovered machine is not run by this host; asking the cluster to admit it"
        );
    } else {
        let pid = cluster::start_node(&mut st, id)?;
        eprintln!("xdv: node {id} booting (pid {pid}); asking the cluster to admit it");
    }
    let request = Request::AddWorker {
        node: NodeId(id),
        public_key: xdv_cluster::public_key(&seed),
        observer: a.observer,
    };
    let answer = ask(&st, &keys, &request, Some(id), end);
    match answer {
        Ok(Response::Member { member: true, .. })
        | Ok(Response::Refused(Denied::Membership(MembershipDenied::AlreadyMember(_)))) => {}
        other => {
            // Not admitted: the node goes away again, its key stays used.
            cluster::stop_node(&mut st, id, true)?;
            st.nodes.retain(|n| n.id != id);
            st.save()?;
            if let Some(pxe) = &st.machine.pxe {
                xdv::pxe::remove_node(&pxe.tftp, id, &boot_mac(discovered, id))?;
            }
            match other {
                Ok(Response::Refused(d)) => bail!("node {id} was not admitted: {d}"),
                Ok(r) => bail!("unexpected answer: {}", mgmt::response_kind(&r)),
                Err(e) => return Err(e),
            }
        }
    }
    eprintln!("xdv: node {id} admitted by the log; catching up");
    if let Some((mac, _)) = discovered {
        let request = Request::AdmitDiscovered {
            mac,
            node: NodeId(id),
        };
        match ask(&st, &keys, &request, Some(id), end)? {
            Response::DiscoveredAdmitted { .. } | Response::Refused(Denied::MacAdmitted { .. }) => {
            }
            Response::Refused(d) => bail!("MAC {} was not admitted: {d}", mac_string(&mac)),
            r => bail!("unexpected answer: {}", mgmt::response_kind(&r)),
        }
        eprintln!(
            "xdv: MAC {} admitted as node {id}; the machine resets into its configuration at its next report",
            mac_string(&mac)
        );
    }
    let want = if a.observer { "learner" } else { "voter" };
    follow(&st, &keys, id, end, |place, _| place == Some(want))?;
    println!(
        "xdv: node {id} joined as {} ({want}); `cargo xdv status` shows it",
        if a.observer {
            "an observer"
        } else {
            "a worker"
        }
    );
    Ok(())
}

/// The MAC a node boots from: the discovered machine's, else QEMU's management MAC.
fn boot_mac(discovered: Option<(Mac, Option<u32>)>, id: u32) -> String {
    match discovered {
        Some((mac, _)) => mac_string(&mac),
        None => xdv::qemu::mgmt_mac(id as u16),
    }
}

/// `join --mac M`: M parsed and in the cluster's discovered table; the id of the
/// machine this host runs with that management MAC (`join --unprovisioned`), if any.
fn discovered_machine(
    st: &ClusterState,
    keys: &Keys,
    mac: &str,
    end: Instant,
) -> Result<(Mac, Option<u32>)> {
    let grub = xdv::pxe::grub_mac(mac)?;
    let mac = parse_mac(&grub).expect("grub_mac checked six hex octets");
    if st.machine.pxe.is_none() {
        bail!("join --mac needs a cluster that boots by PXE (`cargo xdv up --boot pxe`)");
    }
    if let Some(n) = st
        .nodes
        .iter()
        .find(|n| !n.discovering && xdv::qemu::mgmt_mac(n.id as u16) == grub)
    {
        bail!("MAC {grub} is node {}'s, already a member", n.id);
    }
    let machines = match ask(st, keys, &Request::Discovered, None, end)? {
        Response::Discovered { machines, .. } => machines,
        Response::Refused(d) => bail!("the cluster refused to list discovered machines: {d}"),
        r => bail!("unexpected answer: {}", mgmt::response_kind(&r)),
    };
    if !machines.iter().any(|(m, _)| *m == mac) {
        bail!(
            "no machine with MAC {grub} has reported itself as discovered (`cargo xdv nodes --discovered` lists those that did)"
        );
    }
    let id = st
        .nodes
        .iter()
        .find(|n| n.discovering && xdv::qemu::mgmt_mac(n.id as u16) == grub)
        .map(|n| n.id);
    Ok((mac, id))
}

/// `join --unprovisioned`: a new QEMU machine that PXE-boots with no TFTP entry.
fn boot_unprovisioned(st: &mut ClusterState, id: u32) -> Result<()> {
    if st.machine.pxe.is_none() {
        bail!("join --unprovisioned needs a cluster that boots by PXE (`cargo xdv up --boot pxe`)");
    }
    if id > SWITCH_PORTS {
        bail!("node id {id} is above the local switch's {SWITCH_PORTS} ports");
    }
    let template = st.nodes.first().cloned().expect("a running member exists");
    st.nodes.push(NodeSpec {
        id,
        cmdline: String::new(),
        provision: None,
        pid: None,
        mgmt_port: template.mgmt_port() - template.id as u16 + id as u16,
        log_offset: 0,
        accel: None,
        accel_pid: None,
        discovering: true,
        ..template
    });
    st.nodes.sort_by_key(|n| n.id);
    st.save()?;
    cluster::ensure_switch(st)?;
    let pid = cluster::start_node(st, id)?;
    let mac = xdv::qemu::mgmt_mac(id as u16);
    println!(
        "xdv: machine {id} (pid {pid}) boots by PXE from MAC {mac}, which has no TFTP entry: it reports itself as discovered; admit it with `cargo xdv join --mac {mac}`"
    );
    Ok(())
}

/// `cargo xdv nodes`: the members, or with `--discovered` the machines that reported
/// themselves in discovery mode (operator-signed `Discovered` request).
pub fn nodes(a: NodesArgs) -> Result<()> {
    let dir = dir(a.dir);
    let st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    if !a.discovered {
        for n in &st.nodes {
            let what = if n.discovering {
                "discovering (not a member)"
            } else {
                "member"
            };
            let run = if n.pid.is_some_and(cluster::alive) {
                "running"
            } else {
                "stopped"
            };
            println!("node {}  {what}  {run}", n.id);
        }
        return Ok(());
    }
    let end = Instant::now() + Duration::from_secs(30);
    let (clock_ms, machines, full, invalid) =
        match ask(&st, &keys, &Request::Discovered, None, end)? {
            Response::Discovered {
                clock_ms,
                machines,
                refused_full,
                refused_invalid,
            } => (clock_ms, machines, refused_full, refused_invalid),
            Response::Refused(d) => bail!("refused: {d}"),
            r => bail!("unexpected answer: {}", mgmt::response_kind(&r)),
        };
    if a.json {
        let list: Vec<serde_json::Value> = machines
            .iter()
            .map(|(mac, m)| {
                serde_json::json!({
                    "mac": mac_string(mac),
                    "cores": m.hardware.cores,
                    "mem_mib": m.hardware.mem_mib,
                    "nic": m.hardware.nic.name(),
                    "firmware": m.hardware.firmware.name(),
                    "first_seen_ms": m.first_seen_ms,
                    "last_seen_ms": m.last_seen_ms,
                })
            })
            .collect();
        let v = serde_json::json!({
            "clock_ms": clock_ms,
            "discovered": list,
            "refused_table_full": full,
            "refused_invalid": invalid,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "mac                cores  mem-MiB  nic         firmware  first-seen-ms  last-seen-ms"
    );
    for (mac, m) in &machines {
        let (nic, fw) = (m.hardware.nic.name(), m.hardware.firmware.name());
        println!(
            "{}  {:<5}  {:<7}  {nic:<10}  {fw:<8}  {:<13}  {}",
            mac_string(mac),
            m.hardware.cores,
            m.hardware.mem_mib,
            m.first_seen_ms,
            m.last_seen_ms
        );
    }
    println!(
        "{} discovered (cluster time {clock_ms} ms); refused: {full} (table full), {invalid} (invalid)",
        machines.len()
    );
    Ok(())
}

pub fn remove(a: RemoveArgs) -> Result<()> {
    let dir = dir(a.dir);
    let mut st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    refuse_federation(&keys, "remove")?;
    if !st.nodes.iter().any(|n| n.id == a.node) {
        bail!(
            "node {} is not a member (members: {})",
            a.node,
            st.member_list()
        );
    }
    let end = Instant::now() + Duration::from_secs(a.timeout);
    let request = Request::RemoveWorker {
        node: NodeId(a.node),
    };
    match ask(&st, &keys, &request, Some(a.node), end)? {
        Response::Member { member: false, .. }
        | Response::Refused(Denied::Membership(MembershipDenied::NotMember(_))) => {}
        Response::Refused(d) => bail!("node {} was not removed: {d}", a.node),
        r => bail!("unexpected answer: {}", mgmt::response_kind(&r)),
    }
    eprintln!(
        "xdv: node {} removed by the log; waiting for leadership elsewhere",
        a.node
    );
    let gone = a.node;
    follow(&st, &keys, gone, end, |place, leader| {
        place.is_none() && leader.is_some_and(|l| l.0 != gone)
    })?;
    cluster::stop_node(&mut st, a.node, false)?;
    st.nodes.retain(|n| n.id != a.node);
    st.save()?;
    // A removed machine that PXE-boots again finds no entry: it is an unknown MAC.
    if let Some(pxe) = &st.machine.pxe {
        xdv::pxe::remove_node(&pxe.tftp, a.node, &xdv::qemu::mgmt_mac(a.node as u16))?;
    }
    println!(
        "xdv: node {} removed and stopped; its RAM file and log stay in {}",
        a.node,
        dir.display()
    );
    Ok(())
}
