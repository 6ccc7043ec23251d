//! `cargo xdv bench tasks`: the cost of fuel metering and of validation.
//! - A compute-bound module (FNV-1a over 32 KiB, 200 rounds) with fuel metering on vs
//!   off, same wasmi engine otherwise, runs alternating (goal: ratio <= 1.25).
//! - Trivial-task throughput including instantiation: a cached, pre-validated module
//!   vs validating the module for every task.
//! - In QEMU (TCG, `-smp 2` unless `--smp N`; `--no-qemu` skips it): the console's
//!   `task bench`, the same trivial module queued through the run queues, n tasks on
//!   each core: tasks/s per core next to the host's one-thread cached rate. The kernel
//!   must report the module hash the host computes for its copy of the module.

use crate::report::{median, print_json, time_runs};
use anyhow::{Context, Result, bail};
use wasmi::{CompilationMode, Config, Engine, Linker, Module, Store};
use xdv_sandbox::{TaskModule, validate};
use xdv_types::{Priority, TenantId};

const COMPUTE_WAT: &str = r#"(module
  (memory 1)
  (func (export "run")
    (local $round i32) (local $i i32) (local $h i64)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (block $done (loop $rounds
      (br_if $done (i32.ge_u (local.get $round) (i32.const 200)))
      (local.set $i (i32.const 0))
      (block $end (loop $bytes
        (br_if $end (i32.ge_u (local.get $i) (i32.const 32768)))
        (local.set $h (i64.mul (i64.xor (local.get $h) (i64.load8_u (local.get $i))) (i64.const 0x100000001b3)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $bytes)))
      (local.set $round (i32.add (local.get $round) (i32.const 1)))
      (br $rounds)))
    (i64.store (i32.const 0) (local.get $h))))"#;

fn run_plain(bytes: &[u8], fuel: bool) -> Result<()> {
    let mut config = Config::default();
    config.consume_fuel(fuel);
    config.compilation_mode(CompilationMode::Eager);
    let engine = Engine::new(&config);
    let module = Module::new(&engine, bytes)?;
    let mut store = Store::new(&engine, ());
    if fuel {
        store.set_fuel(u64::MAX / 2)?;
    }
    let instance = Linker::<()>::new(&engine).instantiate_and_start(&mut store, &module)?;
    instance
        .get_typed_func::<(), ()>(&store, "run")?
        .call(&mut store, ())?;
    Ok(())
}

const USAGE: &str = "usage: bench tasks [--smp 1..=8] [--tasks 1..=5000] [--no-qemu]";

pub fn run(args: &[String]) -> Result<()> {
    let (mut smp, mut per_core) = (Some(2u32), 500u64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-qemu" => smp = None,
            "--smp" | "--tasks" => {
                let n: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{a} needs a number; {USAGE}"))?;
                match a.as_str() {
                    "--smp" if (1..=8).contains(&n) && smp.is_some() => smp = Some(n as u32),
                    "--tasks" if (1..=5000).contains(&n) => per_core = n,
                    _ => bail!("{a} {n} out of range or after --no-qemu; {USAGE}"),
                }
            }
            _ => bail!("{USAGE}"),
        }
    }
    let bytes = wat::parse_str(COMPUTE_WAT)?;
    // On and off alternate (the order swapped each round), so a change in the shared
    // host's load hits both alike; 15 rounds, medians.
    let mut times: [Vec<std::time::Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..15 {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for fuel in order {
            let t = std::time::Instant::now();
            run_plain(&bytes, fuel)?;
            times[usize::from(!fuel)].push(t.elapsed());
        }
    }
    let on_off: Vec<std::time::Duration> = times
        .iter_mut()
        .map(|v| {
            v.sort();
            median(v)
        })
        .collect();
    let (on, off) = (on_off[0].as_secs_f64() * 1e3, on_off[1].as_secs_f64() * 1e3);
    println!(
        "compute-bound module (FNV-1a, 200 x 32 KiB): fuel on {on:.2} ms, fuel off {off:.2} ms, ratio {:.3} (goal <= 1.25)",
        on / off
    );

    let trivial = TaskModule {
        tenant: TenantId(0),
        module: wat::parse_str(r#"(module (func (export "run")))"#)?,
        input: Vec::new(),
        budget_ticks: 10,
        priority: Priority::Normal,
        guards: Vec::new(),
    };
    let cached = validate(&trivial).map_err(|e| anyhow::anyhow!("{e}"))?;
    const N: usize = 2000;
    let t_cached = median(&time_runs(5, || {
        for _ in 0..N {
            std::hint::black_box(xdv_sandbox::run(&cached, 10, 0));
        }
    }));
    let t_validate = median(&time_runs(5, || {
        for _ in 0..N {
            if let Ok(v) = validate(&trivial) {
                std::hint::black_box(xdv_sandbox::run(&v, 10, 0));
            }
        }
    }));
    let (cached_tps, validate_tps) = (
        N as f64 / t_cached.as_secs_f64(),
        N as f64 / t_validate.as_secs_f64(),
    );
    println!(
        "trivial task incl. instantiation: cached module {cached_tps:.0} tasks/s, validate every time {validate_tps:.0} tasks/s (cached is {:.2}x)",
        cached_tps / validate_tps
    );
    let kernel = match smp {
        None => serde_json::Value::Null,
        Some(smp) => kernel_tasks(smp, per_core, &cached, cached_tps)?,
    };
    print_json(
        "tasks",
        "ms",
        on,
        off,
        serde_json::json!({
            "goal": 1.25,
            "trivial_cached_tasks_per_s": cached_tps,
            "trivial_validate_each_tasks_per_s": validate_tps,
            "kernel": kernel,
        }),
    );
    Ok(())
}

/// Boots the kernel, runs `task bench <per_core>`, prints its per-core rates next to
/// the host's and returns them for the JSON line.
fn kernel_tasks(
    smp: u32,
    per_core: u64,
    host: &xdv_sandbox::ValidatedTask,
    host_tps: f64,
) -> Result<serde_json::Value> {
    println!(
        "kernel under QEMU (TCG, -smp {smp}): `task bench {per_core}` (trivial module, {per_core} tasks per core)"
    );
    let k = crate::sched::kernel_bench(
        smp,
        &format!("task bench {per_core}"),
        "task bench:",
        "tasks-kernel",
    )?;
    for l in &k.lines {
        println!("  {l}");
    }
    let hash = k.json.get("module_hash").and_then(|v| v.as_str());
    if hash != Some(host.module_hash.to_string().as_str()) {
        bail!(
            "the kernel ran a different trivial module: hash {hash:?}, host {}",
            host.module_hash
        );
    }
    let Some(by_cores) = k
        .json
        .get("tasks_per_s_per_core_by_cores")
        .and_then(|v| v.as_object())
    else {
        bail!("`task bench` JSON lacks its per-core rates: {}", k.json);
    };
    for (cores, tps) in by_cores {
        if let Some(tps) = tps.as_f64() {
            println!(
                "  {cores} cores: {tps:.0} tasks/s per core in QEMU vs {host_tps:.0} on the host (one thread): host/QEMU {:.1}x",
                host_tps / tps.max(1.0)
            );
        }
    }
    Ok(serde_json::json!({
        "smp": smp,
        "accel": "tcg",
        "tasks_per_core": per_core,
        "tasks_per_s_per_core_by_cores": by_cores,
        "tasks_per_s_by_cores": k.json.get("tasks_per_s_by_cores"),
        "ticks_per_task": k.json.get("ticks_per_task"),
    }))
}
