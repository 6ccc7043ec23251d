//! Cluster commands: `up`, `down`, `status`, `console`, `kill`, `start`, `submit`.

use anyhow::{Result, bail};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::{self, ClusterState, MAX_NODES, NodeSpec};
use xdv::mgmt::{self, Keys};
use xdv_cluster::Work;
use xdv_cluster::mgmt::{ClusterView, Principal, Request, Submit};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Number of nodes (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// CPUs per node (1..=16): the boot CPU serves the network and consensus, the
    /// others run cluster tasks, so a node with 1 CPU takes no tasks.
    #[arg(long, default_value_t = 2)]
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
    /// Tenants to register (ids 1..=N), each with its own key.
    #[arg(long, default_value_t = 2)]
    tenants: u32,
    /// Return once every node is ready instead of showing the live table.
    #[arg(long)]
    detach: bool,
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
    let extra = a.cmdline.join(" ");
    let keys = Keys::generate(a.nodes, a.tenants)?;
    keys.save(&dir)?;
    let mut nodes = Vec::new();
    for id in 1..=a.nodes {
        let prov = dir.join(format!("node{id}.prov"));
        std::fs::write(&prov, keys.module(id)?)?;
        nodes.push(NodeSpec {
            id,
            smp: a.smp,
            mem_mib: a.mem_mib,
            cmdline: format!("node={id} ip=10.0.0.{id}/24 {extra}")
                .trim()
                .to_string(),
            provision: Some(prov),
            pid: None,
        });
    }
    eprintln!(
        "xdv: cluster {} with {} nodes and tenants 1..={}; keys in {}",
        keys.cluster,
        a.nodes,
        a.tenants,
        Keys::file(&dir).display()
    );
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
            if a.detach || !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Ok(());
            }
            eprintln!("xdv: live cluster table (Ctrl-C leaves the cluster running)");
            return watch(&st);
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
    match Keys::load(&st.dir) {
        Ok(keys) => print!("{}", table(&st, &keys)),
        Err(e) => println!("(no cluster table: {e:#})"),
    }
    Ok(())
}

/// One operator-signed `ClusterStatus` to every running node.
pub fn views(st: &ClusterState, keys: &Keys) -> Vec<(u32, Result<ClusterView>)> {
    st.nodes
        .iter()
        .filter(|n| n.pid.is_some_and(cluster::alive))
        .map(|n| {
            let port = cluster::MGMT_HOST_PORT_BASE + n.id as u16;
            (n.id, mgmt::cluster_view(port, keys))
        })
        .collect()
}

/// The cluster table: node, role, term, commit, applied, tasks, audit head, state hash.
pub fn table(st: &ClusterState, keys: &Keys) -> String {
    let mut out = String::from(
        "node  role       term  commit  applied  tasks  done  audit-recs  audit-head        state-hash\n",
    );
    let mut fed = Vec::new();
    for (id, v) in views(st, keys) {
        match v {
            Ok(v) => {
                out += &format!(
                    "{id:<5} {:<10} {:<5} {:<7} {:<8} {:<6} {:<5} {:<11} {}  {}\n",
                    v.role,
                    v.term,
                    v.commit,
                    v.applied,
                    v.tasks,
                    v.completed,
                    v.audit_records,
                    v.audit_head.short(),
                    v.state_hash.short()
                );
                fed.push(
                    v.federated_root
                        .map_or("none".into(), |r| r.short().to_string()),
                );
            }
            Err(e) => out += &format!("{id:<5} unreachable: {e:#}\n"),
        }
    }
    fed.dedup();
    out += &format!("federated audit root: {}\n", fed.join(" / "));
    out
}

fn watch(st: &ClusterState) -> Result<()> {
    let keys = Keys::load(&st.dir)?;
    let mut shown = 0;
    loop {
        let t = table(st, &keys);
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

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// A bundled module (loop, grow, hash, sort) or a .wasm / .wat file.
    module: String,
    /// Tenant id (its key is in the cluster's keys.json).
    #[arg(long)]
    tenant: u32,
    /// Tick budget.
    #[arg(long, default_value_t = 1000)]
    budget: u64,
    /// Input bytes from a file (builtins default to their bundled input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// high, normal or low.
    #[arg(long, default_value = "normal")]
    priority: String,
    /// Node whose management port to use (any node; followers forward to the leader).
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Print the task id and return without waiting for the outcome.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the outcome.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Cluster directory (default target/xdv/cluster).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn submit(a: SubmitArgs) -> Result<()> {
    let dir = dir(a.dir);
    let keys = Keys::load(&dir)?;
    let work = if xdv_sandbox::builtin(&a.module).is_some() {
        Work::Builtin(a.module.clone())
    } else {
        let bytes = std::fs::read(&a.module).map_err(|e| {
            let names: Vec<&str> = xdv_sandbox::BUILTINS.iter().map(|b| b.name).collect();
            anyhow::anyhow!(
                "`{}` is neither a builtin ({}) nor a readable file: {e}",
                a.module,
                names.join(", ")
            )
        })?;
        Work::Wasm(wat::parse_bytes(&bytes)?.into_owned())
    };
    let input = match &a.input {
        Some(p) => std::fs::read(p)?,
        None => Vec::new(),
    };
    let priority = xdv_types::Priority::parse(&a.priority)
        .ok_or_else(|| anyhow::anyhow!("--priority must be high, normal or low"))?;
    let port = cluster::MGMT_HOST_PORT_BASE + a.node as u16;
    let tenant = Principal::Tenant(xdv_types::TenantId(a.tenant));
    let req = mgmt::signed(
        &keys,
        tenant,
        Request::Submit(Submit {
            work,
            input,
            budget_ticks: a.budget,
            priority,
            guards: vec![],
            needs: vec![],
            domain: xdv_cluster::Domain::K,
            pin: None,
        }),
    )?;
    let end = Instant::now() + Duration::from_secs(a.timeout);
    let task = mgmt::submit_until_placed(port, &req, end)?;
    println!("task {}", task.0);
    if a.no_wait {
        return Ok(());
    }
    let status = mgmt::wait_task(port, &keys, tenant, task, end)?;
    println!("{}", mgmt::describe(&status));
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

#[derive(clap::Args)]
pub struct QuotaArgs {
    /// Tenant id.
    tenant: u32,
    /// Most tasks pending or running at once.
    #[arg(long, default_value_t = u32::MAX)]
    max_in_flight: u32,
    /// Most tick budget accepted in total.
    #[arg(long, default_value_t = u64::MAX)]
    max_budget: u64,
    /// Memory one task may grow to, in 64 KiB pages (at most 16).
    #[arg(long, default_value_t = xdv_cluster::MAX_TASK_MEMORY_PAGES)]
    memory_pages: u32,
    /// Table elements one task may grow to (at most 1000).
    #[arg(long, default_value_t = xdv_cluster::MAX_TASK_TABLE_ELEMENTS)]
    table_elements: u32,
    /// Remove the tenant's quota instead.
    #[arg(long)]
    clear: bool,
    /// Node whose management port to use.
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Cluster directory (default target/xdv/cluster).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// `cargo xdv quota`: the operator sets or clears a tenant's quota.
pub fn quota(a: QuotaArgs) -> Result<()> {
    let keys = Keys::load(&dir(a.dir))?;
    let quota = (!a.clear).then_some(xdv_cluster::Quota {
        max_in_flight: a.max_in_flight,
        max_budget_ticks: a.max_budget,
        memory_pages: a.memory_pages,
        table_elements: a.table_elements,
    });
    let port = cluster::MGMT_HOST_PORT_BASE + a.node as u16;
    mgmt::set_quota(port, &keys, a.tenant, quota)?;
    match quota {
        Some(q) => println!("tenant {}: quota {q:?}", a.tenant),
        None => println!("tenant {}: quota cleared", a.tenant),
    }
    Ok(())
}
