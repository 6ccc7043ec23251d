//! `cargo run --release -p xdv-accel-sim --example bench_sv`: our state-vector
//! time against qiskit-aer's (single thread) on the fixed 16-qubit depth-40 circuit.

use xdv_accel_sim::{bench, qasm};

fn main() -> anyhow::Result<()> {
    let c = bench::bench_circuit();
    println!(
        "circuit: {} qubits, {} gates, depth {}, {} entangling",
        c.qubits,
        c.gates.len(),
        c.depth(),
        c.entangling_ops()
    );
    let ours = bench::our_time(&c, bench::BENCH_RUNS)?;
    let (aer_wall, aer_inner) = bench::aer_times(&qasm::to_qasm(&c), bench::BENCH_RUNS)?;
    println!("ours: {ours:.3} ms (median of {})", bench::BENCH_RUNS);
    println!("aer:  {aer_wall:.3} ms wall run().result(), {aer_inner:.3} ms aer time_taken");
    println!(
        "ratio ours/aer: {:.2} (wall), {:.2} (aer time_taken)",
        ours / aer_wall,
        ours / aer_inner
    );
    Ok(())
}
