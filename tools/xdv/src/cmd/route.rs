//! A federation's gate (docs/federation.md): `cargo xdv route explain <job>` (why the
//! gate sent a job where it did), and `submit --via-gate` (a tenant's submission to a
//! gate node: routed, dispatched to the chosen cluster, its outcome awaited).

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::ClusterState;
use xdv::mgmt::{self, Client, Keys};
use xdv_cluster::gate::JobStatus;
use xdv_cluster::mgmt::{Denied, Principal, Request, Response, SignedRequest};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Why the gate routed job JOB where it did: health buckets, RTT bounds, scores,
    /// hysteresis reason, fallbacks, refusals and the job's status (operator-signed,
    /// or --tenant for one's own job).
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// The job id `submit --via-gate` printed.
    job: u64,
    /// The gate node to ask [default: the federation's first gate node].
    #[arg(long)]
    node: Option<u32>,
    /// Sign as this tenant instead of the operator.
    #[arg(long)]
    tenant: Option<u32>,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<i32> {
    match a.sub {
        Sub::Explain(e) => explain(e),
    }
}

/// The federation's gate node `node` (or its first one) and the keys that sign for it.
pub fn gate_node(keys: &Keys, node: Option<u32>) -> Result<(u32, Keys)> {
    let f = keys.federation.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "this cluster is not a federation: start one with `cargo xdv up --clusters 2 --gates 1`"
        )
    })?;
    let gate = f
        .gate()
        .ok_or_else(|| anyhow::anyhow!("the federation has no gate group"))?;
    let id = match node {
        Some(n) if gate.nodes.contains(&n) => n,
        Some(n) => bail!(
            "node {n} is not a gate node (the gate group is node(s) {:?})",
            gate.nodes
        ),
        None => gate.nodes[0],
    };
    Ok((id, keys.for_node(id)))
}

fn explain(a: ExplainArgs) -> Result<i32> {
    let dir = super::cluster::dir(a.dir);
    let st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    let (node, keys) = gate_node(&keys, a.node)?;
    let port = st.running_node_port(node)?;
    let who = match a.tenant {
        Some(t) => Principal::Tenant(xdv_types::TenantId(t)),
        None => Principal::Operator,
    };
    match route_explain(port, &keys, who, a.job)? {
        Response::RouteExplained { job, text, .. } => {
            println!("job {job}:\n{text}");
            Ok(xdv::exit::OK)
        }
        Response::Refused(d) => {
            println!("refused: {d}");
            Ok(xdv::exit::REFUSED)
        }
        other => bail!("unexpected answer: {}", mgmt::response_kind(&other)),
    }
}

/// One `RouteExplain` request.
pub fn route_explain(port: u16, keys: &Keys, who: Principal, job: u64) -> Result<Response> {
    let req = mgmt::signed(keys, who, Request::RouteExplain { job })?;
    Client::connect(port, Duration::from_secs(2))?.call(&req, Duration::from_secs(10))
}

/// What a gate answered a submission with.
pub enum Routed {
    Job {
        job: u64,
        cluster: Option<xdv_federation::ClusterId>,
    },
    Refused(Denied),
}

/// Sends the tenant's signed submission to gate port `port` until it is routed (a
/// resend has the same seq: the gate answers with the same job).
pub fn submit_to_gate(port: u16, req: &SignedRequest, end: Instant) -> Result<Routed> {
    let mut last = String::new();
    while Instant::now() < end {
        let r = Client::connect(port, Duration::from_secs(2))
            .and_then(|mut c| c.call(req, Duration::from_secs(12)));
        let why = match r {
            Ok(Response::Routed { job, cluster }) => return Ok(Routed::Job { job, cluster }),
            Ok(Response::Refused(d @ (Denied::NoLeader | Denied::NotReady(_)))) => d.to_string(),
            Ok(Response::Refused(d)) => return Ok(Routed::Refused(d)),
            Ok(other) => bail!("unexpected answer: {}", mgmt::response_kind(&other)),
            Err(e) if mgmt::connection_refused(&e) => {
                bail!("nothing listens on 127.0.0.1:{port}: the gate node is not running")
            }
            Err(e) => format!("{e:#}"),
        };
        if why != last {
            eprintln!("xdv: gate not taking it yet ({why}); retrying...");
            last = why;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("not routed in time (last: {last})")
}

/// Polls the gate's `RouteExplain` of `job` until its status is final (finished or
/// failed); that status and the explanation's text.
pub fn wait_job(
    port: u16,
    keys: &Keys,
    who: Principal,
    job: u64,
    end: Instant,
) -> Result<(JobStatus, String)> {
    let mut last = String::new();
    while Instant::now() < end {
        if let Ok(Response::RouteExplained { text, status, .. }) =
            route_explain(port, keys, who, job)
        {
            if matches!(
                status,
                JobStatus::Finished { .. } | JobStatus::Failed { .. }
            ) {
                return Ok((status, text));
            }
            last = status.to_string();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("job {job} not finished in time (last status: {last})")
}

#[cfg(test)]
mod tests {
    use xdv_cluster::gate::JobStatus;
    use xdv_federation::ClusterId;
    use xdv_types::TaskId;

    #[test]
    fn job_statuses_read_as_words() {
        let c = ClusterId(5);
        let cases = [
            (JobStatus::Dispatching { cluster: c }, "dispatching to c5"),
            (
                JobStatus::Accepted {
                    cluster: c,
                    task: TaskId(7),
                },
                "accepted by c5 as t7",
            ),
            (
                JobStatus::Failed {
                    reason: "no eligible cluster".into(),
                },
                "failed: no eligible cluster",
            ),
        ];
        for (status, words) in cases {
            assert_eq!(status.to_string(), words);
        }
        let done = JobStatus::Finished {
            cluster: c,
            task: TaskId(7),
            outcome: xdv_cluster::Outcome::Executed,
        };
        assert!(
            done.to_string().starts_with("finished on c5 as t7: "),
            "{done}"
        );
    }
}
