//! Our state-vector simulator against qiskit-aer's, single thread, on one fixed
//! random circuit (16 qubits, depth 40, gates from h, x, rz, rx, cx, cz, no
//! measurement). Also the random-circuit generator the reference tests share.
//!
//! Host-only: this module reads the clock and runs `python3`; nothing here feeds a
//! simulation result.

use crate::{qasm, qsim};
use anyhow::{Context, bail};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;
use xdv_accel::job::{Angle, Circuit, Gate};
use xdv_types::rng::SplitMix64;

/// Qubits of the benchmark circuit.
pub const BENCH_QUBITS: u8 = 16;
/// Layers of the benchmark circuit.
pub const BENCH_DEPTH: u32 = 40;
/// Seed of the benchmark circuit (fixed forever, so numbers compare across runs).
pub const BENCH_SEED: u64 = 0x5eed_0014;
/// Timed runs per simulator (the median is reported).
pub const BENCH_RUNS: usize = 7;

fn angle(rng: &mut SplitMix64) -> Angle {
    // π·k/16 plus a small rational: exact, and not a multiple of a nice angle.
    let k = rng.below(64) as i64 - 32;
    let m = rng.below(21) as i64 - 10;
    Angle::new(k, 16, m, 7).unwrap_or(Angle::ZERO)
}

/// A random circuit of `depth` layers. Each layer pairs up the qubits in a random
/// order; a pair gets a two-qubit gate with probability 1/3, else each qubit gets a
/// single-qubit gate. `full` draws from every gate kind (reference tests), else
/// from h, x, rz, rx, cx, cz (the benchmark).
pub fn random_circuit(qubits: u8, depth: u32, seed: u64, full: bool) -> Circuit {
    let mut rng = SplitMix64::new(seed);
    let mut gates = Vec::new();
    for _ in 0..depth {
        let mut order: Vec<u8> = (0..qubits).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for pair in order.chunks(2) {
            if pair.len() == 2 && rng.below(3) == 0 {
                let (a, b) = (pair[0], pair[1]);
                let kinds = if full { 4 } else { 2 };
                gates.push(match rng.below(kinds) {
                    0 => Gate::Cx(a, b),
                    1 => Gate::Cz(a, b),
                    2 => Gate::Swap(a, b),
                    _ => {
                        let c = (0..qubits).find(|q| *q != a && *q != b);
                        match c {
                            Some(c) => Gate::Ccx(a, c, b),
                            None => Gate::Cx(b, a),
                        }
                    }
                });
            } else {
                for &q in pair {
                    gates.push(one_qubit(&mut rng, q, full));
                }
            }
        }
    }
    Circuit {
        qubits,
        clbits: 0,
        shots: 1,
        gates,
    }
}

fn one_qubit(rng: &mut SplitMix64, q: u8, full: bool) -> Gate {
    let kinds = if full { 14 } else { 4 };
    match rng.below(kinds) {
        0 => Gate::H(q),
        1 => Gate::X(q),
        2 => Gate::Rz(q, angle(rng)),
        3 => Gate::Rx(q, angle(rng)),
        4 => Gate::Y(q),
        5 => Gate::Z(q),
        6 => Gate::S(q),
        7 => Gate::Sdg(q),
        8 => Gate::T(q),
        9 => Gate::Tdg(q),
        10 => Gate::Ry(q, angle(rng)),
        11 => Gate::U1(q, angle(rng)),
        12 => Gate::U2(q, angle(rng), angle(rng)),
        _ => Gate::U3(q, angle(rng), angle(rng), angle(rng)),
    }
}

/// The benchmark circuit.
pub fn bench_circuit() -> Circuit {
    random_circuit(BENCH_QUBITS, BENCH_DEPTH, BENCH_SEED, false)
}

const AER_SCRIPT: &str = r#"
import sys, time, json, statistics
from qiskit import qasm2
from qiskit_aer import AerSimulator
runs = int(sys.argv[1])
qc = qasm2.loads(sys.stdin.read(), custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
qc.save_statevector()
sim = AerSimulator(method="statevector", max_parallel_threads=1)
sim.run(qc, shots=1).result()  # warm-up
wall, inner = [], []
for _ in range(runs):
    t0 = time.perf_counter()
    r = sim.run(qc, shots=1).result()
    wall.append((time.perf_counter() - t0) * 1e3)
    inner.append(r.results[0].time_taken * 1e3)
print(json.dumps({"wall_ms": statistics.median(wall), "inner_ms": statistics.median(inner)}))
"#;

/// Aer's timings of `src`: the median wall time of `run().result()` and the median
/// of aer's own per-experiment `time_taken`, in ms.
pub fn aer_times(src: &str, runs: usize) -> anyhow::Result<(f64, f64)> {
    let mut child = Command::new("python3")
        .args(["-c", AER_SCRIPT, &runs.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting python3")?;
    child
        .stdin
        .take()
        .context("python3 stdin")?
        .write_all(src.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "qiskit-aer run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let at = text.find(&format!("\"{name}\": ")).context("aer output")? + name.len() + 4;
        let end = text[at..].find([',', '}']).context("aer output")?;
        Ok(text[at..at + end].trim().parse()?)
    };
    Ok((field("wall_ms")?, field("inner_ms")?))
}

/// Median time of our simulator on the circuit, in ms (one warm-up run first).
pub fn our_time(c: &Circuit, runs: usize) -> anyhow::Result<f64> {
    let reference = qsim::unitary_checksum(c)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let sum = qsim::unitary_checksum(c)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(sum == reference, "simulator not deterministic");
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// How to get the reference simulator (one line, for a bench that skips it).
pub const AER_INSTALL: &str = "python3 -m pip install qiskit qiskit-aer";

/// Why qiskit-aer cannot run here (no `python3`, or it cannot import `qiskit` and
/// `qiskit_aer`), in one line with the install command; `None` when it can.
pub fn aer_missing() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import qiskit, qiskit_aer"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Err(e) => Some(format!("no python3 ({e}); then `{AER_INSTALL}`")),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let why = err
                .lines()
                .last()
                .unwrap_or("import failed")
                .trim()
                .to_string();
            Some(format!(
                "qiskit-aer not importable ({why}); install: `{AER_INSTALL}`"
            ))
        }
    }
}

/// Times on the fixed 16-qubit depth-40 circuit, ms, medians of [`BENCH_RUNS`].
#[derive(Clone, Copy, Debug)]
pub struct SvTimes {
    /// Our simulator, wall time of one whole simulation.
    pub ours_ms: f64,
    /// qiskit-aer with one thread: wall time of `run().result()` (includes its
    /// Python and transpile-free submission overhead) …
    pub aer_wall_ms: f64,
    /// … and aer's own `time_taken` for the experiment (the simulation alone).
    pub aer_inner_ms: f64,
}

/// Ours and aer's times on the benchmark circuit (needs qiskit-aer: see
/// [`aer_missing`]).
pub fn statevector_vs_aer() -> anyhow::Result<SvTimes> {
    let c = bench_circuit();
    let ours_ms = our_time(&c, BENCH_RUNS)?;
    let (aer_wall_ms, aer_inner_ms) = aer_times(&qasm::to_qasm(&c), BENCH_RUNS)?;
    Ok(SvTimes {
        ours_ms,
        aer_wall_ms,
        aer_inner_ms,
    })
}
