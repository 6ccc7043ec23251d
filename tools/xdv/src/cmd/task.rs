//! `cargo xdv task …`: tasks offline and by id.
//!
//! `task check <file.wasm|file.wat>` validates a module offline with the checks
//! `submit` applies before sending (`xdv::submission::check`): the cluster's limits
//! (`xdv_cluster::MAX_MODULE_BYTES`, `MAX_INPUT_BYTES`), then the same
//! `xdv_sandbox::validate` the placed node runs before it queues a task.
//!
//! `task get <id>` and `task list` ask a running node through the signed management
//! API, as a tenant (its own tasks only) or as the operator (all tasks). `task get`
//! says what `submit` says about a finished task and exits with the same codes.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::ClusterState;
use xdv::mgmt::{self, Client, Keys, quoted_output, response_kind};
use xdv::submission::{Report, check, outcome_word, read_module};
use xdv_cluster::mgmt::{MAX_LIST_TASKS, Principal, Request, Response, TaskState, TaskSummary};
use xdv_cluster::{TaskStatus, Work};
use xdv_sched::WorkOutcome;
use xdv_types::{TaskId, TenantId};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Validate a module (.wasm, or .wat text) as `submit` and the cluster do: the
    /// cluster's size limits (module 64 KiB, input 16 KiB), then the sandbox's checks.
    Check {
        /// The module file (.wasm binary or .wat text).
        file: PathBuf,
        /// Tick budget to validate with (1 ..= 2^40).
        #[arg(long, default_value_t = 1000)]
        budget: u64,
        /// Input file to validate with (its size is checked) and to run the module once
        /// with after validating (prints outcome, ticks and output).
        #[arg(long)]
        run_input: Option<PathBuf>,
    },
    /// A task by id: state, node, attempt, outcome and output, as `submit` reports it;
    /// exit code as `submit` (0 succeeded or still running, 3 refused, 4 failed).
    #[command(after_help = xdv::exit::HELP)]
    Get(GetArgs),
    /// The newest tasks (at most 256), newest first: a tenant's own, or with no
    /// --tenant every tenant's (as the operator).
    List(ListArgs),
}

/// Who asks and through which node.
#[derive(clap::Args)]
struct Asker {
    /// Ask as this tenant (sees only its own tasks) [default: the operator, who sees all].
    #[arg(long)]
    tenant: Option<u32>,
    /// Member node whose management port to use.
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Print JSON instead of words: `get` one object (submit --json's fields plus
    /// tenant and state), `list` an array of {task, tenant, domain, state, node,
    /// attempt, outcome, reason, ticks, output_bytes}.
    #[arg(long)]
    json: bool,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GetArgs {
    /// Task id (as `submit` printed it).
    id: u64,
    #[command(flatten)]
    asker: Asker,
    /// Wait until the task has finished (ran, or was refused).
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Save the task's raw output bytes to this file.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    asker: Asker,
    /// Only tasks in this state.
    #[arg(long, value_parser = ["pending", "running", "done", "refused"])]
    state: Option<String>,
    /// Most tasks to list (1-256).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_TASKS as i64))]
    limit: u32,
}

pub fn run(args: Args) -> Result<i32> {
    match args.cmd {
        Sub::Check {
            file,
            budget,
            run_input,
        } => check_file(file, budget, run_input).map(|()| xdv::exit::OK),
        Sub::Get(a) => get(a),
        Sub::List(a) => list(a).map(|()| xdv::exit::OK),
    }
}

fn check_file(file: PathBuf, budget: u64, run_input: Option<PathBuf>) -> Result<()> {
    let bytes = match read_module(&file) {
        Ok(b) => b,
        Err(e) if file.is_file() => bail!("{}: refused: {e:#}", file.display()),
        Err(e) => return Err(e),
    };
    let input = match &run_input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let v = match check(&Work::Wasm(bytes), &input, budget) {
        Ok(v) => v,
        Err(e) => bail!("{}: refused: {e}", file.display()),
    };
    println!(
        "{}: OK ({} bytes, sha256 {}, budget {budget} ticks)",
        file.display(),
        v.module_bytes,
        v.module_hash
    );
    if run_input.is_some() {
        let r = xdv_sandbox::run(&v, budget, 0);
        let outcome = match &r.outcome {
            WorkOutcome::Completed { .. } => "executed".to_string(),
            WorkOutcome::BudgetExceeded => "budget exceeded".to_string(),
            WorkOutcome::Trapped { reason } => format!("trapped: {reason}"),
        };
        println!(
            "run: {outcome}, {} ticks, output {} bytes: {}",
            r.ticks_used,
            r.output.len(),
            quoted_output(&r.output)
        );
        for l in &r.log {
            println!("log: {l}");
        }
    }
    Ok(())
}

impl Asker {
    /// The principal, the keys and the port of the node to ask.
    fn connect(&self) -> Result<(Principal, Keys, u16)> {
        let dir = super::cluster::dir(self.dir.clone());
        let st = ClusterState::load(&dir)?;
        let keys = Keys::load(&dir)?;
        let who = match self.tenant {
            Some(t) => {
                keys.tenant_seed(t)?;
                Principal::Tenant(TenantId(t))
            }
            None => Principal::Operator,
        };
        let port = st.running_node_port(self.node)?;
        Ok((who, keys, port))
    }
}

/// One query to the node behind `port`.
fn ask(port: u16, keys: &Keys, who: Principal, request: Request) -> Result<Response> {
    let req = mgmt::signed(keys, who, request)?;
    Client::connect(port, Duration::from_secs(2))?.call(&req, Duration::from_secs(10))
}

fn is_final(s: &TaskStatus) -> bool {
    matches!(s, TaskStatus::Completed { .. } | TaskStatus::Rejected(_))
}

fn get(a: GetArgs) -> Result<i32> {
    let (who, keys, port) = a.asker.connect()?;
    let task = TaskId(a.id);
    let (tenant, mut status, mut log) = match ask(port, &keys, who, Request::TaskStatus { task })? {
        Response::Task {
            tenant,
            status,
            log,
            ..
        } => (tenant, status, log),
        Response::Refused(d) => bail!("{d}"),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    };
    if a.wait && !is_final(&status) {
        if !a.asker.json {
            eprintln!("xdv: task {} {}; waiting...", a.id, mgmt::describe(&status));
        }
        let end = Instant::now() + Duration::from_secs(a.timeout);
        (status, log) = mgmt::wait_task_log(port, &keys, who, task, end)?;
    }
    match (&a.output, &status) {
        (Some(path), TaskStatus::Completed { output, .. }) => {
            std::fs::write(path, output).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "xdv: {} output bytes saved to {}",
                output.len(),
                path.display()
            );
        }
        (Some(path), _) => eprintln!(
            "xdv: task {} has no output (it has not run to an outcome); {} not written",
            a.id,
            path.display()
        ),
        (None, _) => {}
    }
    let state = TaskState::of(&status);
    let report = Report::finished(task, status).with_log(log);
    if a.asker.json {
        let mut v = report.json();
        v["tenant"] = json!(tenant.0);
        v["state"] = json!(state.word());
        println!("{v}");
    } else {
        println!("{}", report.text());
    }
    Ok(report.exit_code())
}

/// `cargo xdv logs --task ID`: the task's `log()` lines, one per line (nothing when
/// it wrote none or has not run yet; a note on stderr says which).
pub fn print_task_log(dir: Option<PathBuf>, tenant: Option<u32>, via: u32, id: u64) -> Result<i32> {
    let asker = Asker {
        tenant,
        node: via,
        json: false,
        dir,
    };
    let (who, keys, port) = asker.connect()?;
    let task = TaskId(id);
    let (status, log) = match ask(port, &keys, who, Request::TaskStatus { task })? {
        Response::Task { status, log, .. } => (status, log),
        Response::Refused(d) => bail!("{d}"),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    };
    if log.is_empty() {
        let why = if is_final(&status) {
            "wrote no log lines"
        } else {
            "has not finished (its log lines arrive with its outcome)"
        };
        eprintln!("xdv: task {id} {why}");
    }
    for l in &log {
        println!("{l}");
    }
    Ok(xdv::exit::OK)
}

fn list(a: ListArgs) -> Result<()> {
    let (who, keys, port) = a.asker.connect()?;
    let state = a.state.as_deref().and_then(TaskState::parse);
    let request = Request::ListTasks {
        state,
        limit: a.limit,
    };
    let tasks = match ask(port, &keys, who, request)? {
        Response::Tasks(t) => t,
        Response::Refused(d) => bail!("refused: {d}"),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    };
    if a.asker.json {
        let all: Vec<Value> = tasks.iter().map(summary_json).collect();
        println!("{}", Value::Array(all));
        return Ok(());
    }
    if tasks.is_empty() {
        let which = a.state.map_or(String::new(), |s| format!(" {s}"));
        println!("no{which} tasks");
        return Ok(());
    }
    println!("task    tenant  domain  state    node  attempt  ticks     output  outcome");
    for t in &tasks {
        let opt = |v: Option<u32>| v.map_or("-".to_string(), |n| n.to_string());
        println!(
            "{:<7} {:<7} {:<7} {:<8} {:<5} {:<8} {:<9} {:<7} {}",
            t.task.0,
            t.tenant.0,
            t.domain.to_string(),
            t.state.word(),
            opt(t.node.map(|n| n.0)),
            opt(t.attempt),
            t.ticks,
            t.output_bytes,
            outcome_text(t)
        );
    }
    Ok(())
}

/// The outcome column: `executed`, `trapped: <reason>`, the cluster's refusal, or `-`.
fn outcome_text(t: &TaskSummary) -> String {
    match (&t.outcome, &t.rejected) {
        (Some(o), _) => match outcome_word(o) {
            (w, Some(r)) => format!("{w}: {r}"),
            (w, None) => w.to_string(),
        },
        (None, Some(r)) => format!("refused by the cluster: {r}"),
        (None, None) => "-".to_string(),
    }
}

/// `task list --json`: one object per task with stable fields: task, tenant, domain,
/// state, node, attempt, outcome, reason, ticks, output_bytes.
fn summary_json(t: &TaskSummary) -> Value {
    let (outcome, reason) = match (&t.outcome, &t.rejected) {
        (Some(o), _) => {
            let (w, r) = outcome_word(o);
            (Some(w), r)
        }
        (None, Some(r)) => (None, Some(r.to_string())),
        (None, None) => (None, None),
    };
    json!({
        "task": t.task.0,
        "tenant": t.tenant.0,
        "domain": t.domain.to_string(),
        "state": t.state.word(),
        "node": t.node.map(|n| n.0),
        "attempt": t.attempt,
        "outcome": outcome,
        "reason": reason,
        "ticks": t.ticks,
        "output_bytes": t.output_bytes,
    })
}
