//! `cargo xdv bench accel`: the accelerator issue's numbers, side by side in one run.
//!
//! (a) State-vector simulation of one fixed random 16-qubit, depth-40 circuit: ours
//!     (`xdv-accel-sim`) vs qiskit-aer's statevector method, both single-threaded,
//!     median of 7 runs each (goal: ratio ours/aer ≤ 1.0). Aer is timed two ways:
//!     wall time of `run().result()` and its own reported `time_taken` (the
//!     simulation alone); both are printed, with both ratios. Needs `python3` with
//!     `qiskit` and `qiskit-aer`; without them (a) says so in one line with the
//!     install command, times ours alone, and (b) and (c) still run.
//! (b) Command round trip guest → device → completion interrupt on a booted node with
//!     a Q device (`accel test N` on its console): a small job and a no-op command
//!     through the rings, against a raw doorbell ping-pong on the same device (the
//!     floor: no ring is read), p50/p99.
//! (c) Remote allocation on three nodes (node 2 has the Q device): reserve → accepted
//!     latency and a Bell job submit → counts under a contract, each for a local target
//!     (requested at node 2 for node 2) and a remote one (requested at node 1 for node
//!     2), p50/p99, same run, local and remote samples interleaved. Every job's result
//!     is checked: executed, 1000 shots, counts only on 00 and 11.

use crate::report::print_json;
use std::time::{Duration, Instant};
use xdv::mgmt;
use xdv::qemu::{Config, Vm, start_accel, temp_dir};
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_accel::job::QResult;
use xdv_accel::regs::Kind;
use xdv_cluster::mgmt::{Principal, Request, Reserve, Response};
use xdv_cluster::{Domain, Outcome, TaskStatus, Work};
use xdv_types::{CapabilityId, NodeId, TenantId};

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

const CONTRACT_SAMPLES: usize = 20;

fn pct(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn reserve_once(tb: &Testbed, via: usize) -> anyhow::Result<(u64, f64)> {
    let r = Reserve {
        domain: Domain::Q,
        target: NodeId(2),
        resources: vec![0],
        duration_ms: 600_000,
        capability: CapabilityId(1),
    };
    let t = Instant::now();
    let id = mgmt::reserve(
        tb.port(via),
        &tb.keys,
        1,
        r,
        Instant::now() + Duration::from_secs(30),
    )?
    .map_err(|w| anyhow::anyhow!("reservation rejected: {w}"))?;
    Ok((id, t.elapsed().as_secs_f64() * 1000.0))
}

fn release(tb: &Testbed, via: usize, id: u64) -> anyhow::Result<()> {
    let req = mgmt::signed(
        &tb.keys,
        Principal::Tenant(TenantId(1)),
        Request::Release { contract: id },
    )?;
    match mgmt::call_until_decided(tb.port(via), &req, Instant::now() + Duration::from_secs(30))? {
        Response::Contract(_) => Ok(()),
        other => anyhow::bail!("release: {}", mgmt::response_kind(&other)),
    }
}

/// Checks a Bell job's result really is counts: executed, `shots` shots, only 00 and
/// 11 (bitstrings 0 and 3), both present.
fn check_bell(status: &TaskStatus, shots: u32) -> anyhow::Result<()> {
    let TaskStatus::Completed {
        outcome, output, ..
    } = status
    else {
        anyhow::bail!("not completed: {status:?}");
    };
    anyhow::ensure!(*outcome == Outcome::Executed, "Bell job ended {outcome}");
    let q = QResult::decode(output).map_err(|e| anyhow::anyhow!("Bell result: {e}"))?;
    let keys: Vec<u64> = q.counts.iter().map(|c| c.0).collect();
    anyhow::ensure!(
        q.shots == shots && keys == [0, 3],
        "Bell counts {:?} of {} shots",
        q.counts,
        q.shots
    );
    Ok(())
}

/// Submit → completed (counts checked) of a Bell job under contract `id` through
/// node `via`, ms.
fn job_ms(tb: &Testbed, via: usize, id: u64, job: &Work) -> anyhow::Result<f64> {
    let req = tb.request_in(1, Domain::Q, job.clone(), Vec::new(), 1000, Some(id))?;
    let t = Instant::now();
    let end = t + Duration::from_secs(30);
    let task = mgmt::submit_until_placed(tb.port(via), &req, end)?;
    loop {
        let q = mgmt::signed(
            &tb.keys,
            Principal::Tenant(TenantId(1)),
            Request::TaskStatus { task },
        )?;
        let r = mgmt::Client::connect(tb.port(via), Duration::from_secs(2))?
            .call(&q, Duration::from_secs(5))?;
        if let Response::Task {
            status: st @ TaskStatus::Completed { .. },
            ..
        } = r
        {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            check_bell(&st, 1000)?;
            return Ok(ms);
        }
        anyhow::ensure!(Instant::now() < end, "task {} did not finish", task.0);
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct ContractNumbers {
    reserve_local: (f64, f64),
    reserve_remote: (f64, f64),
    local: (f64, f64),
    remote: (f64, f64),
}

fn contracts() -> anyhow::Result<ContractNumbers> {
    let sock = temp_dir("bench-contracts")?.join("q.sock");
    let _dev = start_accel(Kind::Q, &sock)?;
    let mut tb = Testbed::prepare("bench-contracts", 3, Faults::default(), 9, "")?;
    tb.accels.insert(2, vec![sock]);
    for id in 1..=3 {
        tb.vms[id - 1] = Some(tb.boot(id, &format!("node{id}.prov"))?);
    }
    tb.leader(&[1, 2, 3], Duration::from_secs(30))?;
    // The device's offer reaches the log in node 2's first heartbeats.
    let end = Instant::now() + Duration::from_secs(40);
    let first = loop {
        match reserve_once(&tb, 1) {
            Ok((id, _)) => break id,
            // Until node 2's heartbeat carries its device, the log refuses with
            // "offers no q resources"; any other error is the bench's answer.
            Err(e) if Instant::now() < end && format!("{e}").contains("offers no") => {
                std::thread::sleep(Duration::from_millis(300))
            }
            Err(e) => return Err(e),
        }
    };
    release(&tb, 1, first)?;
    // Local: requested at node 2 for node 2; remote: at node 1 for node 2.
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for _ in 0..CONTRACT_SAMPLES {
        for (via, into) in [(2usize, &mut local), (1, &mut remote)] {
            let (id, ms) = reserve_once(&tb, via)?;
            into.push(ms);
            release(&tb, via, id)?;
        }
    }
    let src = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";
    let job = Work::Job(xdv_accel_sim::qasm::parse(src, 1000)?.encode());
    let mut out = Vec::new();
    for via in [2usize, 1] {
        let (id, _) = reserve_once(&tb, via)?;
        let mut v = Vec::new();
        for _ in 0..CONTRACT_SAMPLES {
            v.push(job_ms(&tb, via, id, &job)?);
        }
        release(&tb, via, id)?;
        out.push(pct(&mut v));
    }
    Ok(ContractNumbers {
        reserve_local: pct(&mut local),
        reserve_remote: pct(&mut remote),
        local: out[0],
        remote: out[1],
    })
}

/// Part (a): `(ours ms, aer wall ms, aer time_taken ms)`; aer's are 0 when it is
/// missing (said in one line, with the install command).
fn statevector() -> anyhow::Result<(f64, f64, f64)> {
    use xdv_accel_sim::bench;
    println!("accel (a): state vector, 16 qubits, depth 40, single thread, median of 7");
    if let Some(why) = bench::aer_missing() {
        let ours = bench::our_time(&bench::bench_circuit(), bench::BENCH_RUNS)?;
        println!("accel (a): ours {ours:.2} ms; qiskit-aer skipped: {why}");
        return Ok((ours, 0.0, 0.0));
    }
    let t = bench::statevector_vs_aer()?;
    println!(
        "accel (a): ours {:.2} ms, qiskit-aer {:.2} ms wall (run().result()), {:.2} ms its own time_taken",
        t.ours_ms, t.aer_wall_ms, t.aer_inner_ms
    );
    println!(
        "accel (a): ratio ours/aer {:.2} against wall, {:.2} against time_taken (goal <= 1.0)",
        t.ours_ms / t.aer_wall_ms,
        t.ours_ms / t.aer_inner_ms
    );
    Ok((t.ours_ms, t.aer_wall_ms, t.aer_inner_ms))
}

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let (ours, aer, aer_inner) = statevector()?;
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
    println!(
        "accel (c): contracts on 3 nodes (Q device on node 2), {CONTRACT_SAMPLES} samples each"
    );
    let c = contracts()?;
    println!(
        "accel (c): reserve -> accepted, local (at node 2 for 2)   p50 {:>6.1} ms  p99 {:>6.1} ms",
        c.reserve_local.0, c.reserve_local.1
    );
    println!(
        "accel (c): reserve -> accepted, remote (at node 1 for 2)  p50 {:>6.1} ms  p99 {:>6.1} ms",
        c.reserve_remote.0, c.reserve_remote.1
    );
    println!(
        "accel (c): Bell job -> counts, local (via node 2)          p50 {:>6.1} ms  p99 {:>6.1} ms",
        c.local.0, c.local.1
    );
    println!(
        "accel (c): Bell job -> counts, remote (via node 1)         p50 {:>6.1} ms  p99 {:>6.1} ms  remote/local p50 {:.2}",
        c.remote.0,
        c.remote.1,
        c.remote.0 / c.local.0
    );
    print_json(
        "accel",
        "ms",
        ours,
        aer,
        serde_json::json!({
            "aer_time_taken_ms": aer_inner,
            "round_trip_us": {
                "raw": {"p50": raw.0, "p99": raw.1},
                "nop": {"p50": nop.0, "p99": nop.1},
                "job": {"p50": job.0, "p99": job.1},
            },
            "contracts_ms": {
                "reserve_local": {"p50": c.reserve_local.0, "p99": c.reserve_local.1},
                "reserve_remote": {"p50": c.reserve_remote.0, "p99": c.reserve_remote.1},
                "job_local": {"p50": c.local.0, "p99": c.local.1},
                "job_remote": {"p50": c.remote.0, "p99": c.remote.1},
            }
        }),
    );
    Ok(())
}
