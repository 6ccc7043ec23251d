//! `cargo xdv bench accel`: the accelerator issue's numbers, side by side in one run.
//!
//! (a) State-vector simulation of one fixed random 16-qubit, depth-40 circuit: ours
//!     (`xdv-accel-sim`) vs qiskit-aer's statevector method, both single-threaded,
//!     median of 7 runs each (goal: ratio ours/aer ≤ 1.0). Needs `python3` with
//!     `qiskit-aer` (`pip install qiskit-aer`).
//! (b) Command round trip guest → device → completion interrupt on a booted node with
//!     a Q device (`accel test N` on its console): a small job and a no-op command
//!     through the rings, against a raw doorbell ping-pong on the same device (the
//!     floor: no ring is read), p50/p99.

use crate::report::print_json;
use std::time::Duration;
use xdv::qemu::{Config, Vm, start_accel, temp_dir};
use xdv_accel::regs::Kind;

const ROUND_TRIPS: usize = 1000;

/// (p50 µs, p99 µs) from an `accel test` line.
fn parse(out: &str, what: &str) -> anyhow::Result<(f64, f64)> {
    let line = out
        .lines()
        .find(|l| l.contains(&format!("accel test: {what}:")))
        .ok_or_else(|| anyhow::anyhow!("no `{what}` line in:\n{out}"))?;
    let num = |key: &str| -> anyhow::Result<f64> {
        let rest = line
            .split(key)
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("no {key} in `{line}`"))?;
        Ok(rest.trim_start().split(' ').next().unwrap_or("").parse()?)
    };
    Ok((num("p50")?, num("p99")?))
}

fn round_trips() -> anyhow::Result<[(f64, f64); 3]> {
    let sock = temp_dir("bench-accel")?.join("q.sock");
    let _dev = start_accel(Kind::Q, &sock)?;
    let cfg = Config::kernel("")?.with_accel(&sock);
    let mut vm = Vm::spawn(&cfg)?;
    vm.wait_for("xdv> ", Duration::from_secs(30))?;
    let out = vm.command(
        &format!("accel test {ROUND_TRIPS}"),
        "xdv> ",
        Duration::from_secs(300),
    )?;
    vm.kill();
    Ok([
        parse(&out, "raw doorbell ping-pong")?,
        parse(&out, "no-op command")?,
        parse(&out, "small job")?,
    ])
}

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    println!("accel (a): state vector, 16 qubits, depth 40, single thread, median of 7");
    let (ours, aer) = xdv_accel_sim::bench::statevector_vs_aer()?;
    println!(
        "accel (a): ours {ours:.2} ms, qiskit-aer {aer:.2} ms, ratio ours/aer {:.2} (goal <= 1.0)",
        ours / aer
    );
    println!(
        "accel (b): {ROUND_TRIPS} round trips guest -> device -> completion interrupt (QEMU TCG)"
    );
    let [raw, nop, job] = round_trips()?;
    for (what, (p50, p99)) in [
        ("raw doorbell ping-pong", raw),
        ("no-op command", nop),
        ("small job (Bell, 100 shots)", job),
    ] {
        println!(
            "accel (b): {what:28} p50 {p50:>6.0} us  p99 {p99:>6.0} us  p50/raw {:.2}",
            p50 / raw.0
        );
    }
    print_json(
        "accel",
        "ms",
        ours,
        aer,
        serde_json::json!({
            "round_trip_us": {
                "raw": {"p50": raw.0, "p99": raw.1},
                "nop": {"p50": nop.0, "p99": nop.1},
                "job": {"p50": job.0, "p99": job.1},
            }
        }),
    );
    Ok(())
}
