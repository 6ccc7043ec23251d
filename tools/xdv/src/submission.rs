//! What the CLI checks and says about a task, shared by `cargo xdv submit` and
//! `cargo xdv task check`.
//!
//! [`check`] applies, before anything is sent, the limits the cluster applies when a
//! submission enters the log (`xdv_cluster::MAX_INPUT_BYTES`, `MAX_MODULE_BYTES`,
//! `MAX_BUDGET_TICKS`: one source, the cluster crate) and then the sandbox validation the
//! placed node applies (`xdv_sandbox::validate`), so an invalid task is refused without
//! using a task id. [`Report`] turns a task's fate into one line of words, an exit
//! code ([`crate::exit`]) and a JSON object with stable field names.

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use std::path::Path;
use xdv_cluster::mgmt::Denied;
use xdv_cluster::{Domain, TaskStatus, Work};
use xdv_cluster::{MAX_BUDGET_TICKS, MAX_INPUT_BYTES, MAX_MODULE_BYTES, Outcome, Refusal};
use xdv_sandbox::{TaskModule, ValidatedTask};
use xdv_types::{Priority, TaskId, TenantId};

/// Reads a module file: WebAssembly text (`.wat`, or text starting with `(`) is
/// compiled to binary; anything else is taken as binary.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = path.extension().is_some_and(|e| e == "wat")
        || raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'(');
    if !text {
        return Ok(raw);
    }
    wat::parse_bytes(&raw)
        .map(|b| b.into_owned())
        .map_err(|e| anyhow!("{}: not valid WebAssembly text: {e}", path.display()))
}

/// The domain a task file implies when `--domain` is not given: `.qasm` → Q,
/// `.toml` → Φ, anything else K.
pub fn domain_of(arg: &str, given: Option<Domain>) -> Domain {
    given.unwrap_or_else(
        || match Path::new(arg).extension().and_then(|e| e.to_str()) {
            Some("qasm") => Domain::Q,
            Some("toml") => Domain::Phi,
            _ => Domain::K,
        },
    )
}

/// A device job from a file: OpenQASM 2 for Q (with `shots`), a TOML envelope for
/// Φ; parsed here and checked as the cluster will check it. `Err` is the refusal
/// in words (line and column for QASM).
pub fn device_job(path: &Path, domain: Domain, shots: u32) -> Result<Work, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let bytes = match domain {
        Domain::Q => xdv_accel_sim::qasm::parse(&text, shots)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .encode(),
        Domain::Phi => xdv_accel_sim::envelope::parse(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .encode(),
        Domain::K => return Err("K tasks run modules, not device jobs".into()),
    };
    xdv_cluster::jobs::check(domain, &bytes)?;
    Ok(Work::Job(bytes))
}

/// A bundled module by name, or a `.wasm`/`.wat` file.
pub fn work_from_arg(arg: &str) -> Result<Work> {
    if xdv_sandbox::builtin(arg).is_some() {
        return Ok(Work::Builtin(arg.to_string()));
    }
    if !Path::new(arg).exists() {
        let names: Vec<&str> = xdv_sandbox::BUILTINS.iter().map(|b| b.name).collect();
        return Err(anyhow!(
            "`{arg}` is neither a bundled module ({}) nor a file",
            names.join(", ")
        ));
    }
    Ok(Work::Wasm(read_module(Path::new(arg))?))
}

/// The checks a submission meets before it is sent: the cluster's limits, then the
/// sandbox's validation of the module with this input and budget. `Err` is the
/// refusal in words.
pub fn check(work: &Work, input: &[u8], budget_ticks: u64) -> Result<ValidatedTask, String> {
    if budget_ticks == 0 {
        return Err(Refusal::ZeroBudget.to_string());
    }
    if budget_ticks > MAX_BUDGET_TICKS {
        return Err(Refusal::BudgetOverLimit { budget_ticks }.to_string());
    }
    if input.len() > MAX_INPUT_BYTES {
        return Err(Refusal::InputTooLarge(input.len()).to_string());
    }
    let module = match work {
        Work::Wasm(m) if m.len() > MAX_MODULE_BYTES => {
            return Err(Refusal::ModuleTooLarge(m.len()).to_string());
        }
        Work::Wasm(m) => m.clone(),
        Work::Builtin(name) => match xdv_sandbox::builtin(name) {
            Some(b) => b.wasm.to_vec(),
            None => return Err(format!("no bundled module `{name}`")),
        },
        Work::Dropped(_) => return Err("no module".into()),
        Work::Job(_) => {
            return Err("a device job is checked as a circuit or an envelope, not a module".into());
        }
    };
    xdv_sandbox::validate(&TaskModule {
        tenant: TenantId(0),
        module,
        input: input.to_vec(),
        budget_ticks,
        priority: Priority::Normal,
        guards: Vec::new(),
    })
    .map_err(|e| e.to_string())
}

/// An outcome as one stable word (the `outcome` field of `--json`) and its reason.
pub fn outcome_word(outcome: &Outcome) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Executed => ("executed", None),
        Outcome::BudgetExceeded => ("budget-exceeded", None),
        Outcome::GuardDenied => ("guard-denied", None),
        Outcome::Trapped(r) => ("trapped", Some(r.clone())),
        Outcome::Refused(r) => ("refused", Some(r.clone())),
        Outcome::Failed(r) => ("failed", Some(r.clone())),
        Outcome::DeviceFailed(r) => ("device-failed", Some(r.clone())),
        Outcome::Unstable(r) => ("unstable", Some(r.clone())),
        Outcome::Timeout(r) => ("timeout", Some(r.clone())),
        Outcome::Cancelled => ("cancelled", None),
    }
}

/// How a submission ended, for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ran and succeeded.
    Succeeded,
    /// Accepted; not waited for (`--no-wait`).
    Accepted,
    /// Never ran.
    Refused,
    /// Ran and failed.
    Failed,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Succeeded | Verdict::Accepted => crate::exit::OK,
            Verdict::Refused => crate::exit::REFUSED,
            Verdict::Failed => crate::exit::FAILED,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Accepted => "accepted",
            Verdict::Refused => "refused",
            Verdict::Failed => "failed",
        }
    }
}

/// Who refused a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedBy {
    /// This host, before sending (nothing was sent; no task id used).
    Local,
    /// The cluster (management API or the state machine).
    Cluster,
    /// The node it was placed on, before running it.
    Node,
}

/// What one submission came to: a line, an exit code, a JSON object.
#[derive(Clone, Debug)]
pub struct Report {
    pub task: Option<TaskId>,
    pub verdict: Verdict,
    pub refused_by: Option<RefusedBy>,
    pub status: Option<TaskStatus>,
    /// Refusal text when there is no status (local or management-API refusal).
    pub reason: Option<String>,
    /// The lines the task's module wrote with `log()` (as the cluster kept them).
    pub log: Vec<String>,
}

impl Report {
    pub fn local_refusal(reason: String) -> Report {
        Report {
            task: None,
            verdict: Verdict::Refused,
            refused_by: Some(RefusedBy::Local),
            status: None,
            reason: Some(reason),
            log: Vec::new(),
        }
    }

    pub fn denied(d: &Denied) -> Report {
        Report {
            task: None,
            verdict: Verdict::Refused,
            refused_by: Some(RefusedBy::Cluster),
            status: None,
            reason: Some(d.to_string()),
            log: Vec::new(),
        }
    }

    pub fn accepted(task: TaskId) -> Report {
        Report {
            task: Some(task),
            verdict: Verdict::Accepted,
            refused_by: None,
            status: None,
            reason: None,
            log: Vec::new(),
        }
    }

    /// The report of a task's final status.
    pub fn finished(task: TaskId, status: TaskStatus) -> Report {
        let (verdict, refused_by) = match &status {
            TaskStatus::Completed {
                outcome: Outcome::Executed,
                ..
            } => (Verdict::Succeeded, None),
            TaskStatus::Completed {
                outcome: Outcome::Refused(_),
                ..
            } => (Verdict::Refused, Some(RefusedBy::Node)),
            TaskStatus::Completed { .. } => (Verdict::Failed, None),
            TaskStatus::Rejected(_) => (Verdict::Refused, Some(RefusedBy::Cluster)),
            // Not final: callers wait for a final status first.
            TaskStatus::Pending | TaskStatus::Assigned { .. } => (Verdict::Accepted, None),
        };
        Report {
            task: Some(task),
            verdict,
            refused_by,
            status: Some(status),
            reason: None,
            log: Vec::new(),
        }
    }

    /// The same report with the task's log lines.
    pub fn with_log(mut self, log: Vec<String>) -> Report {
        self.log = log;
        self
    }

    /// The one-line summary, then each log line as `log: <line>`.
    pub fn text(&self) -> String {
        let mut t = self.line();
        for l in &self.log {
            t.push_str("\nlog: ");
            t.push_str(l);
        }
        t
    }

    pub fn exit_code(&self) -> i32 {
        self.verdict.exit_code()
    }

    /// One line of words, e.g. `task 7 executed on node 2 (attempt 1): 31 ticks, output
    /// "hello" (sha256 ab12cd34…)` or `refused (checked locally, nothing sent): input of
    /// 20000 bytes (limit 16384)`.
    pub fn line(&self) -> String {
        let who = match self.task {
            Some(t) => format!("task {}", t.0),
            None => "task".to_string(),
        };
        match (&self.status, &self.reason, self.refused_by) {
            (Some(s), _, _) => format!("{who} {}", crate::mgmt::describe(s)),
            (None, Some(r), Some(RefusedBy::Local)) => {
                format!("{who} refused (checked locally, nothing sent): {r}")
            }
            (None, Some(r), _) => format!("{who} refused by the cluster: {r}"),
            (None, None, _) => format!("{who} accepted (not waiting for its outcome)"),
        }
    }

    /// The JSON object printed by `--json`. Every field is always present (null when it
    /// does not apply): `task`, `result` (succeeded | accepted | refused | failed),
    /// `exit_code`, `refused_by` (local | cluster | node), `outcome` (executed |
    /// budget-exceeded | guard-denied | trapped | refused), `reason`, `node`, `attempt`,
    /// `ticks`, `output_hash`, `output_text` (when UTF-8), `output_hex`, `log` (the
    /// module's `log()` lines, an array), `line`.
    pub fn json(&self) -> Value {
        let mut v = json!({
            "task": self.task.map(|t| t.0),
            "result": self.verdict.word(),
            "exit_code": self.exit_code(),
            "refused_by": self.refused_by.map(|r| match r {
                RefusedBy::Local => "local",
                RefusedBy::Cluster => "cluster",
                RefusedBy::Node => "node",
            }),
            "outcome": Value::Null,
            "reason": self.reason,
            "node": Value::Null,
            "attempt": Value::Null,
            "ticks": Value::Null,
            "output_hash": Value::Null,
            "output_text": Value::Null,
            "output_hex": Value::Null,
            "log": self.log,
            "line": self.line(),
        });
        match &self.status {
            Some(TaskStatus::Completed {
                node,
                attempt,
                outcome,
                ticks,
                output_hash,
                output,
            }) => {
                let (word, reason) = outcome_word(outcome);
                v["outcome"] = json!(word);
                v["reason"] = json!(reason);
                v["node"] = json!(node.0);
                v["attempt"] = json!(attempt);
                v["ticks"] = json!(ticks);
                v["output_hash"] = json!(output_hash.to_string());
                v["output_text"] = json!(std::str::from_utf8(output).ok());
                v["output_hex"] = json!(hex::encode(output));
                if let Some((key, value)) = xdv_accel_sim::render::json(output) {
                    v[key] = value;
                }
            }
            Some(TaskStatus::Rejected(r)) => v["reason"] = json!(r.to_string()),
            Some(TaskStatus::Assigned { node, attempt }) => {
                v["node"] = json!(node.0);
                v["attempt"] = json!(attempt);
            }
            Some(TaskStatus::Pending) | None => {}
        }
        v
    }
}
