//! WebAssembly tasks in QEMU: every bundled module runs on each of 4 cores with the
//! same ticks and output hash as on the host, and a node that ran the memory-grow bomb
//! and the infinite loop still answers its console.

use std::time::{Duration, Instant};
use xdv::qemu::{Config, Exit, Vm, run_test};
use xdv_sched::WorkOutcome;

const T: Duration = Duration::from_secs(120);

fn expected(outcome: &WorkOutcome, ticks: u64) -> String {
    match outcome {
        WorkOutcome::Completed { output_hash } => {
            format!("executed ticks={ticks} output_hash={output_hash}")
        }
        WorkOutcome::BudgetExceeded => format!("budget-exceeded ticks={ticks}"),
        WorkOutcome::Trapped { reason } => format!("trapped ticks={ticks} reason=\"{reason}\""),
    }
}

#[test]
fn bundled_modules_match_the_host_on_every_core() {
    let log = run_test("tasks", 4, Exit::Pass).unwrap();
    for (name, ticks, outcome) in xdv_sandbox::reference_results() {
        let want = expected(&outcome, ticks);
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("task-test:") && l.contains(&format!(" {name}: ")))
            .collect();
        assert_eq!(lines.len(), 4, "{name}: expected one run per core:\n{log}");
        for core in 0..4 {
            let line = lines
                .iter()
                .find(|l| l.contains(&format!(" core={core} ")))
                .unwrap_or_else(|| panic!("{name} not on core {core}:\n{log}"));
            assert!(
                line.contains(&want),
                "{name} on core {core}: kernel `{line}` vs host `{want}`"
            );
        }
    }
}

#[test]
fn node_survives_the_grow_bomb_and_the_infinite_loop() {
    let mut vm = Vm::spawn(&Config::kernel("").unwrap().smp(2)).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    for (cmd, needle) in [
        ("task run grow", " grow: "),
        ("task run loop 20000", " loop: "),
        ("version", "xdv 0.1.0"),
    ] {
        let before = vm.count(needle);
        vm.send_line(cmd).unwrap();
        let end = Instant::now() + T;
        while vm.count(needle) <= before {
            assert!(Instant::now() < end, "`{cmd}` unanswered:\n{}", vm.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let out = vm.output();
    assert!(
        out.contains("loop: core=") && out.contains("budget-exceeded ticks=20000"),
        "{out}"
    );
    assert!(
        out.contains("grow: core=") && out.contains("executed ticks="),
        "{out}"
    );
    vm.send_line("task run nosuch").unwrap();
    vm.wait_for("error: usage: task run <loop|grow|hash|sort>", T)
        .unwrap();
    vm.send_line("halt").unwrap();
    vm.expect_exit(Exit::Halted, T).unwrap();
}

#[test]
fn task_bench_runs_n_trivial_tasks_on_every_core_with_the_same_outcome() {
    let mut vm = Vm::spawn(&Config::kernel("").unwrap().smp(2)).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    let out = vm
        .command("task bench 30", "{\"bench\":\"tasks-kernel\"", T)
        .unwrap();
    vm.wait_for("\"tasks_per_s_per_core_by_cores\":{\"1\":", T)
        .unwrap();
    // The one reference run completed in one tick with an empty output.
    assert!(
        out.contains("executed ticks=1 output_hash=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        "{out}"
    );
    // Every core ran exactly its 30 queued copies (the kernel checks its per-core
    // counters and fails the command otherwise).
    assert!(out.contains("30 trivial tasks on each of 1 cores"), "{out}");
    assert!(out.contains("(ran cpu0=30)"), "{out}");
    assert!(out.contains("(ran cpu0=30 cpu1=30)"), "{out}");
    vm.send_line("task bench 0").unwrap();
    vm.wait_for("error: usage: task bench [n 1..=5000] (got `0`)", T)
        .unwrap();
    vm.send_line("halt").unwrap();
    vm.expect_exit(Exit::Halted, T).unwrap();
}
