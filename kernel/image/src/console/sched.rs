//! Console commands for the run queues: `runq`, `replay`, `sched demo|bench`.

use super::{CmdError, usage};
use crate::executor::{self, DISPATCHER, TaskWork};
use crate::service::Services;
use crate::{println, smp, time};
use alloc::format;
use alloc::vec::Vec;
use xdv_sched::demo::{MAX_DEMO_TASKS, demo_tasks, outcome_digest};
use xdv_sched::{BuiltinWork, Guards, TaskSpec};
use xdv_types::{Priority, TaskId, TenantId};

fn no_args(name: &str, args: &[&str]) -> Result<(), CmdError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(usage(name))
    }
}

pub fn runq(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("runq", args)?;
    executor::print_runq();
    Ok(())
}

pub fn replay(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("replay", args)?;
    let guard = DISPATCHER.lock();
    let d = guard
        .as_ref()
        .ok_or_else(|| CmdError::Failed("run queues not started".into()))?;
    let verified = match d.log.verify() {
        Ok(()) => "verified",
        Err(_) => "BROKEN",
    };
    println!(
        "replay: events={} head={} outcomes={} ({verified})",
        d.log.len(),
        d.log.head_hash(),
        outcome_digest(&d.log)
    );
    Ok(())
}

/// Runs the demo set of `n` tasks as one batch; returns (head, outcome digest).
pub fn run_demo(n: u64) -> Result<(xdv_types::Hash32, xdv_types::Hash32, u64, usize), CmdError> {
    let tasks: Vec<TaskSpec<TaskWork>> = demo_tasks(n)
        .into_iter()
        .map(|t| TaskSpec {
            id: t.id,
            tenant: t.tenant,
            priority: t.priority,
            guards: t.guards,
            budget_ticks: t.budget_ticks,
            work: TaskWork::Builtin(t.work),
        })
        .collect();
    let mut guard = DISPATCHER.lock();
    let d = guard
        .as_mut()
        .ok_or_else(|| CmdError::Failed("run queues not started".into()))?;
    let r = d.run_batch(tasks).map_err(CmdError::Failed)?;
    Ok((r.head, outcome_digest(&d.log), r.cycles, r.events))
}

pub fn sched(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    match args {
        ["demo", n] => {
            let n: u64 = n
                .parse()
                .ok()
                .filter(|n| (1..=MAX_DEMO_TASKS).contains(n))
                .ok_or_else(|| {
                    CmdError::Usage(format!("sched demo <1..={MAX_DEMO_TASKS}> (got `{n}`)"))
                })?;
            super::wait_for_aps(_s);
            let (head, outcomes, cycles, events) = run_demo(n)?;
            println!(
                "sched demo: {n} tasks, {events} events on {} cores in {} us; head={head} outcomes={outcomes}",
                smp::online(),
                time::cycles_to_ns(cycles) / 1000
            );
            Ok(())
        }
        ["bench"] => bench(_s),
        _ => Err(usage("sched")),
    }
}

fn empty_task(id: u64) -> TaskSpec<TaskWork> {
    TaskSpec {
        id: TaskId(id),
        tenant: TenantId(0),
        priority: Priority::Normal,
        guards: Guards::none(),
        budget_ticks: 1,
        work: TaskWork::Builtin(BuiltinWork::Empty),
    }
}

/// Cycles per enqueue + run_cycle on one core, and tasks/s across all cores.
fn bench(s: &mut Services) -> Result<(), CmdError> {
    const N: u64 = 2000;
    // One core, no rings: the cost of the run queue itself.
    let mut r = xdv_sched::CoreRunner::<TaskWork>::new(xdv_types::CoreId(0));
    let t0 = crate::arch::rdtsc();
    for i in 0..N {
        let stamp = xdv_types::Timestamp(i + 1);
        r.enqueue(empty_task(i), stamp)
            .map_err(|_| CmdError::Failed("enqueue refused".into()))?;
        r.run_cycle();
        if i % 256 == 255 {
            s.poll(false);
        }
    }
    let per_task = (crate::arch::rdtsc() - t0) / N;
    println!("sched bench: enqueue+run_cycle of an empty task: {per_task} cycles");
    // Through the rings (the batch protocol) on 1, 2, 4, ... cores: how throughput
    // scales. Task ids start high so they never collide with demo tasks.
    let cores = DISPATCHER
        .lock()
        .as_ref()
        .map(|d| d.cores())
        .ok_or_else(|| CmdError::Failed("run queues not started".into()))?;
    let mut json = alloc::string::String::new();
    let mut k = 1;
    let mut base = 1u64 << 40;
    while k <= cores {
        let tasks = (0..N).map(|i| empty_task(base + i)).collect();
        base += N;
        // The dispatcher is taken per step and the node served in between.
        super::wait_for_aps(s);
        let cycles = DISPATCHER
            .lock()
            .as_mut()
            .ok_or_else(|| CmdError::Failed("run queues not started".into()))?
            .run_unlogged(k, tasks, &mut || s.poll(false))
            .map_err(CmdError::Failed)?;
        s.poll(false);
        let ns = time::cycles_to_ns(cycles).max(1);
        let tps = N * 1_000_000_000 / ns;
        println!(
            "sched bench: {N} empty tasks on {k} cores in {} us = {tps} tasks/s",
            ns / 1000
        );
        json.push_str(&format!(
            "{}\"{k}\":{tps}",
            if json.is_empty() { "" } else { "," }
        ));
        k = if k * 2 > cores && k < cores {
            cores
        } else {
            k * 2
        };
    }
    println!(
        "{{\"bench\":\"sched-kernel\",\"cycles_per_task\":{per_task},\"tasks_per_s_by_cores\":{{{json}}}}}"
    );
    Ok(())
}
