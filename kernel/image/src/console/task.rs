//! `task run <builtin> [budget]` and `tasks`: WebAssembly tasks through the run queues.

use super::{CmdError, usage};
use crate::executor::{self, DISPATCHER, TaskWork};
use crate::println;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use xdv_sandbox::{BUILTINS, CAP_ECHO_LEN, SandboxWork, builtin, builtin_task};
use xdv_sched::{Guards, ReplayEvent, TaskSpec};
use xdv_types::{Priority, TaskId, TenantId};

/// Task ids of console-submitted sandbox tasks start here (clear of demo ids).
const FIRST_TASK_ID: u64 = 1 << 32;
static NEXT_ID: AtomicU64 = AtomicU64::new(FIRST_TASK_ID);
const MAX_RECENT: usize = 32;
static RECENT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// One line describing a task's outcome from its replay events.
fn describe(events: &[xdv_sched::CoreEvent]) -> String {
    let core = events.iter().find_map(|e| match e.event {
        ReplayEvent::TaskEnqueued { core, .. } => Some(core.0),
        _ => None,
    });
    let outcome = events
        .iter()
        .rev()
        .find(|e| e.event.is_outcome())
        .map(|e| match &e.event {
            ReplayEvent::TaskExecuted {
                ticks, output_hash, ..
            } => format!("executed ticks={ticks} output_hash={output_hash}"),
            ReplayEvent::BudgetExceeded { ticks, .. } => format!("budget-exceeded ticks={ticks}"),
            ReplayEvent::Trapped { ticks, reason, .. } => {
                format!("trapped ticks={ticks} reason=\"{reason}\"")
            }
            ReplayEvent::GuardDenied { missing, .. } => format!("guard-denied missing={missing}"),
            other => format!("{other:?}"),
        });
    format!(
        "core={} {}",
        core.map(|c| format!("{c}")).unwrap_or_else(|| "?".into()),
        outcome.unwrap_or_else(|| "no outcome".into())
    )
}

/// Runs builtin `name` as `copies` tasks in one batch; returns one line per task.
pub fn run_builtin(name: &str, budget: Option<u64>, copies: u64) -> Result<Vec<String>, CmdError> {
    let b = builtin(name).ok_or_else(|| {
        let names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
        CmdError::Usage(format!(
            "task run <{}> [budget] (no builtin `{name}`)",
            names.join("|")
        ))
    })?;
    let v = builtin_task(b, budget, alloc::vec![CAP_ECHO_LEN])
        .map_err(|e| CmdError::Failed(format!("{e}")))?;
    let first = NEXT_ID.fetch_add(copies, Ordering::Relaxed);
    let ids: Vec<TaskId> = (first..first + copies).map(TaskId).collect();
    let tasks = ids
        .iter()
        .map(|&id| TaskSpec {
            id,
            tenant: TenantId(0),
            priority: Priority::Normal,
            guards: Guards::none(),
            budget_ticks: v.budget_ticks,
            work: TaskWork::Wasm {
                task: id,
                work: Box::new(SandboxWork {
                    task: v.clone(),
                    logical_time: 0,
                    output: Vec::new(),
                }),
            },
        })
        .collect();
    let mut guard = DISPATCHER.lock();
    let d = guard
        .as_mut()
        .ok_or_else(|| CmdError::Failed("run queues not started".into()))?;
    d.run_batch(tasks).map_err(CmdError::Failed)?;
    let lines: Vec<String> = ids
        .iter()
        .map(|&id| {
            let out = executor::output_of(id).map(|o| o.len()).unwrap_or(0);
            format!(
                "task {id} {name}: {} output={out} bytes",
                describe(&executor::events_of(&d.log, id))
            )
        })
        .collect();
    let mut recent = RECENT.lock();
    for l in &lines {
        if recent.len() == MAX_RECENT {
            recent.remove(0);
        }
        recent.push(l.clone());
    }
    Ok(lines)
}

pub fn task(args: &[&str]) -> Result<(), CmdError> {
    let (name, budget) = match args {
        ["run", name] => (*name, None),
        ["run", name, budget] => {
            let b = budget
                .parse()
                .ok()
                .filter(|b| (1..=xdv_sandbox::MAX_BUDGET_TICKS).contains(b))
                .ok_or_else(|| {
                    CmdError::Usage(format!("task run <builtin> [budget 1..] (got `{budget}`)"))
                })?;
            (*name, Some(b))
        }
        _ => return Err(usage("task")),
    };
    for l in run_builtin(name, budget, 1)? {
        println!("{l}");
    }
    Ok(())
}

pub fn tasks(args: &[&str]) -> Result<(), CmdError> {
    if !args.is_empty() {
        return Err(usage("tasks"));
    }
    let recent = RECENT.lock();
    if recent.is_empty() {
        println!("tasks: none run yet (try `task run hash`)");
    }
    for l in recent.iter() {
        println!("{l}");
    }
    let names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
    println!("builtins: {}", names.join(", "));
    Ok(())
}
