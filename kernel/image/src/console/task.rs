//! `task run <builtin> [budget]`, `task bench [n]` and `tasks`: WebAssembly tasks
//! through the run queues.

use super::{CmdError, usage};
use crate::executor::{self, DISPATCHER, TaskWork};
use crate::println;
use crate::service::Services;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use xdv_sandbox::{BUILTINS, CAP_ECHO_LEN, SandboxWork, TaskModule, builtin, builtin_task};
use xdv_sched::{Guards, ReplayEvent, TaskSpec, WorkOutcome};
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
/// With `serve` (the console's `task run`) and application processors, the batch
/// runs on the APs only while this CPU serves the node, so `task run loop <budget>`
/// never stops the node; without (the self-test), on every core including this one.
pub fn run_builtin(
    name: &str,
    budget: Option<u64>,
    copies: u64,
    serve: Option<&mut Services>,
) -> Result<Vec<String>, CmdError> {
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
                    log: Vec::new(),
                    control: Default::default(),
                }),
            },
        })
        .collect();
    let aps = DISPATCHER.lock().as_ref().is_some_and(|d| d.cores() > 1);
    let mut tasks = Some(tasks);
    if let (Some(s), true) = (serve, aps) {
        super::wait_for_aps(s);
        let started = DISPATCHER
            .lock()
            .as_mut()
            .map(|d| d.start_async(tasks.take().unwrap_or_default()));
        match started {
            Some(Ok(())) => loop {
                // Nothing else collects the batch: with `poll(false)` the node's
                // tasks module does not touch the run queues.
                s.poll(false);
                if DISPATCHER
                    .lock()
                    .as_mut()
                    .is_some_and(|d| d.poll_async().is_some())
                {
                    break;
                }
                crate::arch::wait_for_interrupt();
            },
            Some(Err(back)) => tasks = Some(back),
            None => return Err(CmdError::Failed("run queues not started".into())),
        }
    }
    let mut guard = DISPATCHER.lock();
    let d = guard
        .as_mut()
        .ok_or_else(|| CmdError::Failed("run queues not started".into()))?;
    if let Some(tasks) = tasks {
        d.run_batch(tasks).map_err(CmdError::Failed)?;
    }
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

pub fn task(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
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
        ["bench"] => return bench(_s, BENCH_DEFAULT_TASKS),
        ["bench", n] => {
            let n = n
                .parse()
                .ok()
                .filter(|n| (1..=BENCH_MAX_TASKS).contains(n))
                .ok_or_else(|| {
                    CmdError::Usage(format!("task bench [n 1..={BENCH_MAX_TASKS}] (got `{n}`)"))
                })?;
            return bench(_s, n);
        }
        _ => return Err(usage("task")),
    };
    for l in run_builtin(name, budget, 1, Some(_s))? {
        println!("{l}");
    }
    Ok(())
}

pub fn tasks(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
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

/// `(module (func (export "run")))`, the trivial module of `cargo xdv bench tasks`
/// (which checks that the kernel reports the same module hash as the host's copy).
const TRIVIAL_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one type, () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x07, 0x07, 0x01, 0x03, b'r', b'u', b'n', 0x00, 0x00, // export "run" = func 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: one empty body
];
/// Tick budget of each trivial task (the host benchmark uses the same).
const TRIVIAL_BUDGET: u64 = 10;
const BENCH_DEFAULT_TASKS: u64 = 500;
/// Per core; bounds the batch held in memory (`n` x cores tasks).
const BENCH_MAX_TASKS: u64 = 5000;
/// Per core and batch: `task bench` serves the node between batches of this many.
const BENCH_SLICE_TASKS: u64 = 64;

/// `task bench [n]`: `n` trivial WebAssembly tasks on each of 1, 2, 4, .. cores (all
/// online cores last) through the run queues (the batch protocol, outside the replay
/// log, like `sched bench`). Prints tasks/s in total and per core, and checks from the
/// per-core counters that every core ran exactly `n`.
fn bench(s: &mut Services, n: u64) -> Result<(), CmdError> {
    let v = xdv_sandbox::validate(&TaskModule {
        tenant: TenantId(0),
        module: TRIVIAL_WASM.to_vec(),
        input: Vec::new(),
        budget_ticks: TRIVIAL_BUDGET,
        priority: Priority::Normal,
        guards: Vec::new(),
    })
    .map_err(|e| CmdError::Failed(format!("trivial module: {e}")))?;
    // One direct run: the outcome every queued copy must have.
    let reference = xdv_sandbox::run(&v, TRIVIAL_BUDGET, 0);
    let output_hash = match &reference.outcome {
        WorkOutcome::Completed { output_hash } => *output_hash,
        other => {
            return Err(CmdError::Failed(format!(
                "trivial module did not complete: {other:?}"
            )));
        }
    };
    println!(
        "task bench: trivial module {} executed ticks={} output_hash={output_hash}",
        v.module_hash, reference.ticks_used
    );
    let cores = DISPATCHER
        .lock()
        .as_ref()
        .map(|d| d.cores())
        .ok_or_else(|| CmdError::Failed("run queues not started".into()))?;
    // Consecutive ids: placement is id modulo the core count, so with `count = n x k`
    // each of the k cores gets exactly n.
    let batch = |count: u64| -> Vec<TaskSpec<TaskWork>> {
        let first = NEXT_ID.fetch_add(count, Ordering::Relaxed);
        (first..first + count)
            .map(|id| {
                let id = TaskId(id);
                TaskSpec {
                    id,
                    tenant: TenantId(0),
                    priority: Priority::Normal,
                    guards: Guards::none(),
                    budget_ticks: TRIVIAL_BUDGET,
                    work: TaskWork::Wasm {
                        task: id,
                        work: Box::new(SandboxWork {
                            task: v.clone(),
                            logical_time: 0,
                            output: Vec::new(),
                            log: Vec::new(),
                            control: Default::default(),
                        }),
                    },
                }
            })
            .collect()
    };
    // The dispatcher is taken per step and the node served in between, so the
    // benchmark never stops the node answering peers and clients.
    let run = |s: &mut Services, k: usize, tasks: Vec<TaskSpec<TaskWork>>| {
        super::wait_for_aps(s);
        let mut guard = DISPATCHER.lock();
        let d = guard
            .as_mut()
            .ok_or_else(|| CmdError::Failed("run queues not started".into()))?;
        let cycles = d
            .run_unlogged(k, tasks, &mut || s.poll(false))
            .map_err(CmdError::Failed)?;
        drop(guard);
        s.poll(false);
        Ok::<u64, CmdError>(cycles)
    };
    // Warm-up on every core (heap growth, first instantiation), not timed.
    s.poll(false);
    s.take_longest_gap_us();
    run(s, cores, batch(cores as u64 * n.min(50)))?;
    let (mut total_json, mut per_core_json) = (String::new(), String::new());
    let mut k = 1;
    loop {
        let count = n * k as u64;
        let before: Vec<u64> = (0..k).map(executor::tasks_run).collect();
        // In batches of at most BENCH_SLICE_TASKS per core (a few ms each), the node
        // served between them: core 0 is this CPU, and a whole step (up to 5000
        // tasks per core, most of a second) would stop heartbeats for longer than
        // the election timeout. Only the batches are timed.
        let mut cycles = 0;
        let mut done = 0;
        while done < n {
            let slice = (n - done).min(BENCH_SLICE_TASKS);
            cycles += run(s, k, batch(slice * k as u64))?;
            done += slice;
        }
        // Each core publishes its counters before handing its batch back, and the
        // dispatcher has received every batch: the counters are final here.
        let ran: Vec<u64> = (0..k).map(|c| executor::tasks_run(c) - before[c]).collect();
        if let Some(c) = ran.iter().position(|&r| r != n) {
            return Err(CmdError::Failed(format!(
                "core {c} ran {} of its {n} tasks",
                ran[c]
            )));
        }
        let ns = crate::time::cycles_to_ns(cycles).max(1);
        let total = count * 1_000_000_000 / ns;
        let per_core = n * 1_000_000_000 / ns;
        let ran: Vec<String> = ran
            .iter()
            .enumerate()
            .map(|(c, r)| format!("cpu{c}={r}"))
            .collect();
        println!(
            "task bench: {n} trivial tasks on each of {k} cores in {} us = {total} tasks/s, {per_core} tasks/s per core (ran {})",
            ns / 1000,
            ran.join(" ")
        );
        let sep = if total_json.is_empty() { "" } else { "," };
        total_json.push_str(&format!("{sep}\"{k}\":{total}"));
        per_core_json.push_str(&format!("{sep}\"{k}\":{per_core}"));
        if k == cores {
            break;
        }
        k = (k * 2).min(cores);
    }
    println!(
        "task bench: the node was served at least every {} us",
        s.take_longest_gap_us()
    );
    println!(
        "{{\"bench\":\"tasks-kernel\",\"tasks_per_core\":{n},\"module_hash\":\"{}\",\"ticks_per_task\":{},\"output_hash\":\"{output_hash}\",\"tasks_per_s_by_cores\":{{{total_json}}},\"tasks_per_s_per_core_by_cores\":{{{per_core_json}}}}}",
        v.module_hash, reference.ticks_used
    );
    Ok(())
}
