//! `cargo xdv submit`: check a task locally, send it signed by its tenant, wait for its
//! outcome, and say what happened in one line (or one JSON object) and in the exit code
//! (`xdv::exit`: 0 succeeded, 3 refused, 4 failed, 1 error).

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::ClusterState;
use xdv::mgmt::{self, Keys, Placement};
use xdv::submission::{self, Report};
use xdv_cluster::gate::JobStatus;
use xdv_cluster::mgmt::{Principal, Request, Submit};
use xdv_cluster::{Domain, Work};

#[derive(clap::Args)]
#[command(after_help = xdv::exit::HELP)]
pub struct SubmitArgs {
    /// A bundled module (loop, grow, hash, sort), a .wasm / .wat file
    /// (e.g. examples/hello.wat), an OpenQASM 2 circuit (.qasm, Q domain) or a TOML
    /// phase envelope (.toml, Φ domain; e.g. examples/bell.qasm, examples/stable.toml).
    module: String,
    /// Execution domain: k (WebAssembly on cores), q (circuit on a Q device), phi
    /// (envelope on a Φ device) [default: from the file's extension].
    #[arg(long, value_parser = ["k", "q", "phi"])]
    domain: Option<String>,
    /// Run under this contract (see `cargo xdv reserve`): on its target node, in its
    /// reserved containers or windows.
    #[arg(long)]
    contract: Option<u64>,
    /// Measurement shots of a Q circuit (1 ..= 1000000).
    #[arg(long, default_value_t = 1000)]
    shots: u32,
    /// Tenant id; the request is signed with its key from the cluster's keys.json.
    #[arg(long)]
    tenant: u32,
    /// Tick budget (1 ..= 2^40; one tick is 1000 units of WebAssembly fuel).
    #[arg(long, default_value_t = 1000)]
    budget: u64,
    /// File whose bytes are the task's input (at most xdv_cluster::MAX_INPUT_BYTES,
    /// 16 KiB); bundled modules default to their own input.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Priority on the placed node's run queue.
    #[arg(long, default_value = "normal", value_parser = ["high", "normal", "low"])]
    priority: String,
    /// Member node whose management port to use (any member: followers forward to the
    /// leader) [default: 1; with --via-gate: the first gate node].
    #[arg(long)]
    node: Option<u32>,
    /// In a federation (`up --clusters C --gates G`): send the submission to a gate
    /// node, which routes it to a cluster; prints the job id and the chosen cluster,
    /// then waits for the job's outcome (polling the gate) unless --no-wait.
    #[arg(long, conflicts_with_all = ["count", "contract"])]
    via_gate: bool,
    /// With --via-gate: member clusters (1-based, as `up` numbers them) the gate should
    /// prefer; comma-separated or repeated, at most 8. A preferred cluster's score is
    /// multiplied by the router's preference factor inside the best health bucket
    /// (docs/federation.md); it never lifts a cluster out of a worse bucket.
    #[arg(long, requires = "via_gate", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=64))]
    prefer: Vec<u32>,
    /// Return once the cluster accepted the task (prints its id) without waiting for
    /// its outcome.
    #[arg(long)]
    no_wait: bool,
    /// Submit this many copies, pipelined over one connection in signed batches
    /// (`RunBatch`, up to 64 a request, one signature each, answered once its tasks
    /// finished): one line per task, then a summary with tasks/s. The exit code
    /// is the worst task's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    count: u64,
    /// Seconds to wait for acceptance and then for the outcome.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The task's own timeout, in seconds of cluster time, per attempt: past it (plus
    /// any extensions) the cluster times the attempt out and retries it, then ends it
    /// `timeout` [default: the cluster's, 600 s unscaled].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    task_timeout: Option<u64>,
    /// Print one JSON object (fields: task, result, exit_code, refused_by, outcome,
    /// reason, node, attempt, ticks, output_hash, output_text, output_hex, line).
    #[arg(long)]
    json: bool,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Prints `r` (a line, or JSON) and returns its exit code.
fn report(r: &Report, json: bool) -> i32 {
    if json {
        println!("{}", r.json());
    } else {
        println!("{}", r.text());
    }
    r.exit_code()
}

pub fn submit(a: SubmitArgs) -> Result<i32> {
    let dir = super::cluster::dir(a.dir.clone());
    let st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    let domain = submission::domain_of(&a.module, a.domain.as_deref().and_then(Domain::parse));
    let work = if domain == Domain::K {
        match submission::work_from_arg(&a.module) {
            Ok(w) => w,
            // A file that is not WebAssembly text is an invalid module: refused, code 3.
            Err(e) if std::path::Path::new(&a.module).is_file() => {
                return Ok(report(&Report::local_refusal(format!("{e:#}")), a.json));
            }
            Err(e) => return Err(e),
        }
    } else {
        if !std::path::Path::new(&a.module).is_file() {
            anyhow::bail!(
                "`{}` is not a file (a {domain} task needs a circuit or an envelope file)",
                a.module
            );
        }
        match submission::device_job(std::path::Path::new(&a.module), domain, a.shots) {
            Ok(w) => w,
            Err(why) => return Ok(report(&Report::local_refusal(why), a.json)),
        }
    };
    let input = match &a.input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let check_input = match (&work, a.input.is_some()) {
        (Work::Builtin(n), false) => xdv_sandbox::builtin(n).map_or(&[][..], |b| b.default_input),
        _ => &input[..],
    };
    if domain == Domain::K
        && let Err(why) = submission::check(&work, check_input, a.budget)
    {
        return Ok(report(&Report::local_refusal(why), a.json));
    }
    keys.tenant_seed(a.tenant)?;
    let priority = xdv_types::Priority::parse(&a.priority).context("--priority")?;
    let tenant = Principal::Tenant(xdv_types::TenantId(a.tenant));
    let submit = Submit {
        priority,
        domain,
        contract: a.contract,
        timeout_ms: a.task_timeout.map(|s| s.saturating_mul(1000)),
        ..Submit::new(work, input, a.budget)
    };
    if a.via_gate {
        // (clap refuses --contract with --via-gate: a reservation is on one node.)
        return via_gate(&a, &st, &keys, tenant, submit);
    }
    let node = a.node.unwrap_or(1);
    // In a federation each cluster signs with its own id.
    let keys = keys.for_node(node);
    let port = st.running_node_port(node)?;
    let end = Instant::now() + Duration::from_secs(a.timeout);
    if a.count > 1 {
        return submit_many(&a, port, &keys, &submit, end);
    }
    let req = mgmt::signed(&keys, tenant, Request::Submit(submit))?;
    let placed = mgmt::submit_placed(port, &req, end, true, &mut |why| {
        eprintln!("xdv: node {node} not taking it yet ({why}); retrying...")
    })?;
    let task = match placed {
        Placement::Task(t) => t,
        Placement::Refused(d) => return Ok(report(&Report::denied(&d), a.json)),
    };
    if a.no_wait {
        return Ok(report(&Report::accepted(task), a.json));
    }
    if !a.json {
        eprintln!("xdv: task {} accepted; waiting for its outcome...", task.0);
    }
    let (status, log) = mgmt::wait_task_log(port, &keys, tenant, task, end)?;
    Ok(report(
        &Report::finished(task, status).with_log(log),
        a.json,
    ))
}

/// `--count N`: N copies through pipelined `RunBatch`es; a line per task and a
/// summary; the worst exit code.
fn submit_many(
    a: &SubmitArgs,
    port: u16,
    keys: &Keys,
    submit: &Submit,
    end: Instant,
) -> Result<i32> {
    let count = a.count as usize;
    let start = Instant::now();
    let mut last_shown = Instant::now();
    let json = a.json;
    let mut show = |accepted: usize, finished: usize| {
        if !json && last_shown.elapsed() >= Duration::from_secs(1) {
            last_shown = Instant::now();
            eprintln!("xdv: {accepted}/{count} accepted, {finished} finished...");
        }
    };
    let tenant = xdv_types::TenantId(a.tenant);
    let done = mgmt::submit_many(port, keys, tenant, submit, count, end, &mut show)?;
    let secs = start.elapsed().as_secs_f64();
    let mut worst = 0;
    let mut by_word: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for (task, status) in done {
        let r = Report::finished(task, status);
        *by_word.entry(r.verdict.word()).or_default() += 1;
        worst = worst.max(report(&r, json));
    }
    if !json {
        let words: Vec<String> = by_word.iter().map(|(w, n)| format!("{n} {w}")).collect();
        println!(
            "{count} tasks in {secs:.2} s ({:.1} tasks/s, {} batches of at most {}): {}",
            count as f64 / secs.max(1e-9),
            count.div_ceil(xdv_cluster::mgmt::MAX_BATCH_SUBMISSIONS),
            xdv_cluster::mgmt::MAX_BATCH_SUBMISSIONS,
            words.join(", ")
        );
    }
    Ok(worst)
}

/// `--via-gate`: the submission, signed for the gate group, to a gate node; the job id
/// and chosen cluster; then (unless `--no-wait`) the job's outcome from the gate and
/// the task's report from the cluster that ran it.
/// `--prefer` numbers as the federation's cluster ids.
fn preferred(keys: &Keys, numbers: &[u32]) -> Result<Vec<xdv_federation::ClusterId>> {
    if numbers.len() > xdv_cluster::mgmt::MAX_PREFERRED {
        anyhow::bail!(
            "--prefer names {} clusters; at most {}",
            numbers.len(),
            xdv_cluster::mgmt::MAX_PREFERRED
        );
    }
    let Some(f) = keys.federation.as_ref() else {
        anyhow::bail!("--prefer needs a federation (`cargo xdv up --clusters C --gates G`)");
    };
    let clusters: Vec<(usize, u32)> = f.clusters().map(|(n, g)| (n, g.cluster)).collect();
    numbers
        .iter()
        .map(|&n| {
            clusters
                .iter()
                .find(|(k, _)| *k == n as usize)
                .map(|(_, id)| xdv_federation::ClusterId(*id))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--prefer {n}: the federation has clusters 1..={}",
                        clusters.len()
                    )
                })
        })
        .collect()
}

fn via_gate(
    a: &SubmitArgs,
    st: &ClusterState,
    keys: &Keys,
    tenant: Principal,
    submit: Submit,
) -> Result<i32> {
    let (node, gate_keys) = super::route::gate_node(keys, a.node)?;
    let mut submit = submit;
    submit.prefer = preferred(keys, &a.prefer)?;
    let port = st.running_node_port(node)?;
    let start = Instant::now();
    let end = start + Duration::from_secs(a.timeout);
    // Right after `up` the gate may not have heard any cluster's heartbeat yet: its
    // decision is "no eligible cluster" (that job failed). Within the first
    // `GATE_WARMUP` such a job is submitted again, as a new one.
    const GATE_WARMUP: Duration = Duration::from_secs(20);
    let (job, cluster) = loop {
        let req = mgmt::signed(&gate_keys, tenant, Request::Submit(submit.clone()))?;
        match super::route::submit_to_gate(port, &req, end)? {
            super::route::Routed::Job { job, cluster: None }
                if start.elapsed() < GATE_WARMUP && Instant::now() < end =>
            {
                eprintln!(
                    "xdv: job {job}: no eligible cluster yet (the gate has not heard from the clusters); submitting again"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            super::route::Routed::Job { job, cluster } => break (job, cluster),
            super::route::Routed::Refused(d) => {
                return Ok(report(&Report::denied(&d), a.json));
            }
        }
    };
    let fed = keys.federation.as_ref();
    let number = |c: xdv_federation::ClusterId| {
        fed.and_then(|f| f.clusters().find(|(_, g)| g.cluster == c.0))
            .map(|(n, g)| (n, g.nodes.clone()))
    };
    let Some(cluster) = cluster else {
        println!("job {job} routed: no eligible cluster; failed (`cargo xdv route explain {job}`)");
        return Ok(xdv::exit::FAILED);
    };
    let (n, nodes) = number(cluster).unwrap_or((0, Vec::new()));
    println!("job {job} routed to cluster {n} (id {})", cluster.0);
    if a.no_wait {
        return Ok(xdv::exit::OK);
    }
    if !a.json {
        eprintln!("xdv: job {job}: waiting for its outcome...");
    }
    let (status, _) = super::route::wait_job(port, &gate_keys, tenant, job, end)?;
    // The task's full report from a running node of the cluster that ran it.
    if let JobStatus::Finished { cluster, task, .. } = &status {
        let (n, ran) = number(*cluster).unwrap_or((0, nodes));
        if let Some(&m) = ran.iter().find(|m| st.running_node_port(**m).is_ok()) {
            let mport = st.running_node_port(m)?;
            let (s, log) = mgmt::wait_task_log(mport, &keys.for_node(m), tenant, *task, end)?;
            let r = Report::finished(*task, s).with_log(log);
            if !a.json {
                println!("job {job}: finished on cluster {n} as its task {}", task.0);
            }
            return Ok(report(&r, a.json));
        }
    }
    println!("job {job}: {status}");
    Ok(if matches!(status, JobStatus::Failed { .. }) {
        xdv::exit::FAILED
    } else {
        xdv::exit::OK
    })
}
