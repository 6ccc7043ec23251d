//! `cargo xdv sim`: the deterministic simulator of real nodes (`xdv_node::sim`): the
//! same `Node` the kernel runs, over a simulated packet network, with crashes, torn
//! durable writes, partitions, clogging, slow nodes and skew.
//!
//! `--seed S` runs one seed and prints its trace and a summary. `--seeds A..B` sweeps
//! seeds A (inclusive) to B (exclusive) with a progress line, prints the simulator's
//! speed (simulated node-seconds per wall second) and, for a failing seed, its trace
//! and the command to replay it. Exit code 1 when any seed fails.

use anyhow::{Context, bail};
use std::io::{IsTerminal, Write};
use std::time::Instant;
use xdv_node::sim::{Sim, SimOptions, SimReport};

/// Most nodes the simulator accepts.
const MAX_NODES: u32 = 9;

#[derive(clap::Args)]
pub struct Args {
    /// Run one seed and print its trace.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep a range of seeds, `A..B` (B exclusive).
    #[arg(long)]
    seeds: Option<String>,
    /// Nodes in the simulated cluster (1..=9).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Fault level: 0 none, 1 network (loss, duplication, delay, partitions, clogging),
    /// 2 network + crashes, torn durable writes, slow nodes, clock skew.
    #[arg(long, default_value_t = 2)]
    faults: u8,
    /// Client requests per seed.
    #[arg(long, default_value_t = 24)]
    requests: u64,
    /// Simulated milliseconds with faults on (then healing until converged).
    #[arg(long, default_value_t = 8_000)]
    fault_ms: u64,
    /// Trace lines printed for `--seed` (the last ones).
    #[arg(long, default_value_t = 200)]
    trace: usize,
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = s.split_once("..").context("expected A..B")?;
    let a: u64 = a.trim().parse().context("bad range start")?;
    let b: u64 = b.trim().parse().context("bad range end")?;
    if b <= a {
        bail!("empty seed range {a}..{b}");
    }
    Ok((a, b))
}

fn options(args: &Args, seed: u64) -> anyhow::Result<SimOptions> {
    if !(1..=MAX_NODES).contains(&args.nodes) {
        bail!("--nodes must be in 1..={MAX_NODES}");
    }
    if args.faults > 2 {
        bail!("--faults must be 0, 1 or 2");
    }
    if args.requests > 10_000 || args.fault_ms > 3_600_000 {
        bail!("--requests at most 10000, --fault-ms at most 3600000");
    }
    let mut o = SimOptions::new(seed);
    o.nodes = args.nodes;
    o.faults = args.faults;
    o.requests = args.requests;
    o.fault_ms = args.fault_ms;
    o.trace_lines = args.trace.max(1);
    Ok(o)
}

fn summary(seed: u64, r: &SimReport) -> String {
    format!(
        "seed {seed}: converged at {} ms; {} requests accepted, {} tasks completed once; crashes {} (torn writes {}), restarts {}, partitions {}, leaders {}, snapshot installs {}, state {}",
        r.simulated_ms,
        r.accepted,
        r.completed,
        r.crashes,
        r.torn_writes,
        r.restarts,
        r.partitions,
        r.elections,
        r.snapshots_restored,
        r.final_hash
            .map_or_else(|| "-".to_string(), |h| h.short().to_string())
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(seed) = args.seed {
        let opts = options(&args, seed)?;
        return match Sim::new(opts).run() {
            Ok(r) => {
                for l in &r.trace {
                    println!("{l}");
                }
                println!("{}", summary(seed, &r));
                Ok(())
            }
            Err(trace) => {
                println!("{trace}");
                bail!("seed {seed} failed")
            }
        };
    }
    let (a, b) = parse_range(args.seeds.as_deref().unwrap_or("0..100"))?;
    let start = Instant::now();
    let (mut simulated_ms, mut failed) = (0u64, Vec::new());
    let total = b - a;
    let tty = std::io::stdout().is_terminal();
    for (k, seed) in (a..b).enumerate() {
        match Sim::new(options(&args, seed)?).run() {
            Ok(r) => simulated_ms += r.simulated_ms,
            Err(trace) => {
                eprintln!("\n{trace}");
                failed.push(seed);
            }
        }
        let k = k as u64 + 1;
        // On a terminal one line updated in place; piped, a line per 100 seeds.
        if tty && (k.is_multiple_of(10) || k == total) {
            print!("\rsim: {k}/{total} seeds, {} failed", failed.len());
            std::io::stdout().flush().ok();
        } else if !tty && (k.is_multiple_of(100) || k == total) {
            println!("sim: {k}/{total} seeds, {} failed", failed.len());
        }
    }
    if tty {
        println!();
    }
    let wall = start.elapsed().as_secs_f64().max(1e-9);
    let node_s = simulated_ms as f64 / 1000.0 * f64::from(args.nodes);
    println!(
        "sim: {total} seeds in {wall:.1} s: {node_s:.0} simulated node-seconds, {:.0} node-s per wall second",
        node_s / wall
    );
    if failed.is_empty() {
        println!("sim: all seeds passed (safety after every step, liveness after healing)");
        return Ok(());
    }
    for s in &failed {
        println!("failed: seed {s} — replay: cargo xdv sim --seed {s}");
    }
    bail!("{} of {total} seeds failed", failed.len())
}
