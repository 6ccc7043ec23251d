//! Cluster commands: `up`, `down`, `status`, `console`, `kill`, `start`.

use anyhow::{Result, bail};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::{self, ClusterState, MAX_NODES, NodeSpec};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Number of nodes (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// CPUs per node.
    #[arg(long, default_value_t = 1)]
    smp: u32,
    /// RAM per node, MiB.
    #[arg(long, default_value_t = 256)]
    mem_mib: u32,
    /// Seed of the switch's fault generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cluster directory (RAM files, logs, sockets).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds to wait for every node's ready line.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Extra kernel command-line words for every node, after `--`.
    #[arg(last = true)]
    cmdline: Vec<String>,
}

#[derive(clap::Args)]
pub struct DirArgs {
    /// Cluster directory (default target/xdv/cluster).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct NodeArgs {
    /// Node id.
    node: u32,
    /// Cluster directory (default target/xdv/cluster).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn dir(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(cluster::default_dir)
}

pub fn up(a: UpArgs) -> Result<()> {
    if a.nodes == 0 || a.nodes > MAX_NODES {
        bail!(
            "--nodes must be 1..={MAX_NODES} (each node is a TCG-emulated VM on a 2-core machine)"
        );
    }
    let dir = dir(a.dir);
    if let Ok(old) = ClusterState::load(&dir)
        && old.nodes.iter().any(|n| n.pid.is_some_and(cluster::alive))
    {
        bail!(
            "a cluster is already running in {} (stop it with `cargo xdv down`)",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("xdv: building the kernel...");
    let kernel = xdv::qemu::build_kernel(true)?;
    let peers: Vec<String> = (1..=a.nodes).map(|i| i.to_string()).collect();
    let extra = a.cmdline.join(" ");
    let nodes = (1..=a.nodes)
        .map(|id| NodeSpec {
            id,
            smp: a.smp,
            mem_mib: a.mem_mib,
            cmdline: format!(
                "node={id} ip=10.0.0.{id}/24 peers={} {extra}",
                peers.join(",")
            )
            .trim()
            .to_string(),
            provision: None,
            pid: None,
        })
        .collect();
    let mut st = ClusterState {
        switch_dir: dir.join("net"),
        dir: dir.clone(),
        kernel,
        nodes,
        switch_pid: None,
    };
    for n in 1..=a.nodes {
        let _ = std::fs::remove_file(st.path(n, "log"));
    }
    st.save()?;
    cluster::start_switch(&mut st, a.nodes, a.seed)?;
    for id in 1..=a.nodes {
        let pid = cluster::start_node(&mut st, id)?;
        eprintln!("xdv: node {id} started (pid {pid})");
    }
    // Live status until every node is ready.
    let end = Instant::now() + Duration::from_secs(a.timeout);
    let mut shown = 0;
    loop {
        let lines: Vec<String> = st
            .nodes
            .iter()
            .map(|n| cluster::node_line(&st, n))
            .collect();
        let mut err = std::io::stderr();
        if shown > 0 {
            let _ = write!(err, "\x1b[{shown}A");
        }
        for l in &lines {
            let _ = writeln!(err, "\x1b[2K{l}");
        }
        shown = lines.len();
        let ready = lines.iter().filter(|l| l.contains(" ready (")).count();
        if ready == lines.len() {
            println!(
                "xdv: {ready} nodes ready; consoles: `cargo xdv console <n>`; stop with `cargo xdv down`"
            );
            return Ok(());
        }
        if lines.iter().any(|l| l.contains(" stopped ")) {
            bail!(
                "a node exited during boot; see its log (and node<N>.qemu.err) in {}",
                dir.display()
            );
        }
        if Instant::now() > end {
            bail!(
                "not every node was ready after {} s; see the logs in {}",
                a.timeout,
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn down(a: DirArgs) -> Result<()> {
    let mut st = ClusterState::load(&dir(a.dir))?;
    let ids: Vec<u32> = st.nodes.iter().map(|n| n.id).collect();
    for id in ids {
        if cluster::stop_node(&mut st, id, false, Duration::from_secs(5))? {
            eprintln!(
                "xdv: node {id} stopped (RAM file kept: {})",
                st.path(id, "ram").display()
            );
        }
    }
    cluster::stop_switch(&mut st);
    eprintln!("xdv: cluster down");
    Ok(())
}

pub fn status(a: DirArgs) -> Result<()> {
    let st = ClusterState::load(&dir(a.dir))?;
    let sw = if st.switch_pid.is_some_and(cluster::alive) {
        "running"
    } else {
        "stopped"
    };
    println!("cluster {} (switch {sw})", st.dir.display());
    for n in &st.nodes {
        println!("{}", cluster::node_line(&st, n));
    }
    Ok(())
}

pub fn console(a: NodeArgs) -> Result<()> {
    let st = ClusterState::load(&dir(a.dir))?;
    st.node(a.node)?;
    cluster::attach_console(&st, a.node)
}

pub fn kill(a: NodeArgs) -> Result<()> {
    let mut st = ClusterState::load(&dir(a.dir))?;
    if cluster::stop_node(&mut st, a.node, true, Duration::ZERO)? {
        eprintln!(
            "xdv: node {} killed (SIGKILL); restart it with `cargo xdv start {}`",
            a.node, a.node
        );
    } else {
        eprintln!("xdv: node {} was not running", a.node);
    }
    Ok(())
}

pub fn start(a: NodeArgs) -> Result<()> {
    let mut st = ClusterState::load(&dir(a.dir))?;
    let pid = cluster::start_node(&mut st, a.node)?;
    eprintln!("xdv: node {} started on its RAM file (pid {pid})", a.node);
    Ok(())
}
