//! `cargo xdv cancel <task> --tenant T`: a tenant cancels one of its tasks (pending or
//! running). The cluster ends it `Cancelled` through the log, frees its quota, and the
//! node running it stops it. Exit codes: 0 cancelled, 3 refused (no such task, another
//! tenant's, already finished — the answer says which), 1 error (no answer in time,
//! node not running).

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::ClusterState;
use xdv::mgmt::{self, Client, Keys};
use xdv_cluster::mgmt::{Denied, Principal, Request, Response};
use xdv_types::{TaskId, TenantId};

#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: 0 cancelled; 1 error (node not running, no answer in time); \
2 usage error; 3 refused (no such task, another tenant's task, already finished)."
)]
pub struct CancelArgs {
    /// Task id (from `submit` or `task list`).
    task: u64,
    /// Tenant that submitted it; the request is signed with its key.
    #[arg(long)]
    tenant: u32,
    /// Member node whose management port to use (followers forward to the leader).
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Seconds to wait for the cluster's answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn cancel(a: CancelArgs) -> Result<i32> {
    let dir = super::cluster::dir(a.dir);
    let st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    keys.tenant_seed(a.tenant)?;
    let port = st.running_node_port(a.node)?;
    let tenant = Principal::Tenant(TenantId(a.tenant));
    let task = TaskId(a.task);
    let end = Instant::now() + Duration::from_secs(a.timeout);
    let mut last = String::new();
    while Instant::now() < end {
        // A fresh sequence number on every try: a cancellation is idempotent in the
        // log (a second one is refused as finished), and queries' windows are per node.
        let req = mgmt::signed(&keys, tenant, Request::Cancel { task })?;
        let r = Client::connect(port, Duration::from_secs(2))
            .and_then(|mut c| c.call(&req, Duration::from_secs(12)));
        match r {
            Ok(Response::Cancelled {
                task,
                node,
                attempt,
            }) => {
                match node {
                    Some(n) => println!(
                        "task {} cancelled (was running on node {}, attempt {attempt}; it stops there); its quota is free",
                        task.0, n.0
                    ),
                    None => println!("task {} cancelled before it ran; its quota is free", task.0),
                }
                return Ok(xdv::exit::OK);
            }
            Ok(Response::Refused(d @ (Denied::NoLeader | Denied::NotReady(_)))) => {
                last = d.to_string();
            }
            Ok(Response::Refused(d)) => {
                println!("cancel refused: {d}");
                return Ok(xdv::exit::REFUSED);
            }
            Ok(other) => bail!("unexpected answer: {}", mgmt::response_kind(&other)),
            Err(e) if mgmt::connection_refused(&e) => bail!(
                "nothing listens on the management port 127.0.0.1:{port}: node {} is not running",
                a.node
            ),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("task {} not cancelled in time (last: {last})", a.task)
}
