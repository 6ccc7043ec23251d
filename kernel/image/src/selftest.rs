//! Service-level self-tests selected with `test=<name>` (the platform's own are in
//! `platform::ktest`): the run queues and the sandbox on every core.
#![deny(unsafe_code)]

use crate::{check, println};
use alloc::string::String;

/// Tests of the services, added to the platform's table.
pub static TESTS: &[(&str, crate::platform::ktest::TestFn)] =
    &[("sched", sched_demo), ("tasks", sandbox_tasks)];

/// Runs the 64-task demo batch on every core and reports the hashes the host test
/// compares with `xdv_sched::demo` computed on the host.
fn sched_demo() -> Result<(), String> {
    let (head, outcomes, _, _) =
        crate::console::sched::run_demo(64).map_err(|e| alloc::format!("{e}"))?;
    let cores = crate::smp::online();
    for cpu in 0..cores {
        let run = crate::executor::tasks_run(cpu);
        println!("sched test: cpu{cpu} ran {run} tasks");
        check!(run > 0, "cpu{cpu} ran no tasks");
    }
    println!("sched test: cores={cores} head={head} outcomes={outcomes}");
    Ok(())
}

/// Runs every bundled WebAssembly module once per core (ids chosen so the placement
/// rule puts one copy on each core) and prints each result for the host to compare.
fn sandbox_tasks() -> Result<(), String> {
    let cores = crate::smp::online() as u64;
    for b in xdv_sandbox::BUILTINS {
        let lines = crate::console::task::run_builtin(b.name, None, cores, None)
            .map_err(|e| alloc::format!("{e}"))?;
        for l in lines {
            println!("task-test: {l}");
        }
    }
    Ok(())
}
