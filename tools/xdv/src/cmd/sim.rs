//! `cargo xdv sim`: the deterministic Raft simulator (`xdv_raft::sim`).
//!
//! `--seed S` replays one seed and prints its trace (one line per notable event:
//! elections, crashes, restarts, partitions, membership, snapshots, violations)
//! and a summary. `--seeds A..B` sweeps seeds A (inclusive) to B (exclusive) with
//! a progress line and lists every failing seed with the command to replay it.

use anyhow::{Context, bail};
use std::io::Write;
use xdv_raft::sim::{SimConfig, SimReport, run_seed};

/// Most node slots the simulator accepts.
const MAX_NODES: usize = 9;
/// Most steps per seed.
const MAX_STEPS: u64 = 10_000_000;

#[derive(clap::Args)]
pub struct Args {
    /// Replay one seed and print its trace.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep a range of seeds, `A..B` (B exclusive).
    #[arg(long)]
    seeds: Option<String>,
    /// Node slots (bootstrap voters plus spares for membership changes). Default:
    /// 3 + seed mod 3 in a sweep, 5 for one seed.
    #[arg(long)]
    nodes: Option<usize>,
    /// Steps (ticks) per seed.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Disable fault injection (loss, duplication, delay, partitions, crashes).
    #[arg(long)]
    no_faults: bool,
    /// Disable membership changes and leadership transfers.
    #[arg(long)]
    no_membership: bool,
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

fn config(args: &Args, seed: u64, default_nodes: usize) -> anyhow::Result<SimConfig> {
    let nodes = args.nodes.unwrap_or(default_nodes);
    if !(1..=MAX_NODES).contains(&nodes) {
        bail!("--nodes must be in 1..={MAX_NODES}");
    }
    if args.steps == 0 || args.steps > MAX_STEPS {
        bail!("--steps must be in 1..={MAX_STEPS}");
    }
    let mut c = SimConfig::new(seed, nodes, args.steps);
    c.faults = !args.no_faults;
    c.membership = !args.no_membership;
    Ok(c)
}

fn summary(r: &SimReport) -> String {
    format!(
        "seed {} steps {} elections {} max_term {} committed {} ops {} crashes {} snapshots_installed {} conf_changes {} transfers {} messages {} snapshot_chunks {} (lost {}) lin_inconclusive {}",
        r.seed,
        r.steps,
        r.elections,
        r.max_term,
        r.committed,
        r.ops_completed,
        r.crashes,
        r.snapshots_installed,
        r.conf_changes,
        r.transfers,
        r.messages,
        r.snapshot_chunks,
        r.snapshot_chunks_lost,
        r.lin_inconclusive
    )
}

fn run_one(cfg: SimConfig) -> (SimReport, Vec<String>) {
    let seed = cfg.seed;
    match std::panic::catch_unwind(move || run_seed(cfg)) {
        Ok(r) => r,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            let r = SimReport {
                seed,
                violation: Some(format!("panic: {msg}")),
                ..SimReport::default()
            };
            (r, Vec::new())
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(seed) = args.seed {
        let mut cfg = config(&args, seed, 5)?;
        cfg.trace = true;
        let (r, trace) = run_one(cfg);
        for line in &trace {
            println!("{line}");
        }
        println!("{}", summary(&r));
        if let Some(v) = r.violation {
            bail!("seed {seed} violates safety: {v}");
        }
        return Ok(());
    }
    let Some(range) = args.seeds.as_deref() else {
        bail!("give --seed S or --seeds A..B")
    };
    let (a, b) = parse_range(range)?;
    let total = b - a;
    let mut failures = Vec::new();
    let mut committed = 0u64;
    let mut ops = 0u64;
    let started = std::time::Instant::now();
    for seed in a..b {
        let cfg = config(&args, seed, 3 + (seed % 3) as usize)?;
        let nodes = cfg.nodes;
        let (r, _) = run_one(cfg);
        committed += r.committed;
        ops += r.ops_completed;
        if let Some(v) = &r.violation {
            failures.push((seed, nodes, v.clone()));
        }
        let done = seed - a + 1;
        if done % 50 == 0 || done == total {
            eprint!("\r{done}/{total} seeds, {} failing", failures.len());
            let _ = std::io::stderr().flush();
        }
    }
    eprintln!();
    println!(
        "{total} seeds x {} steps in {:.1} s: {} failing, {committed} entries committed, {ops} client ops checked",
        args.steps,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for (seed, nodes, v) in &failures {
        println!(
            "FAIL seed {seed}: {v}\n  replay: cargo xdv sim --seed {seed} --nodes {nodes} --steps {}",
            args.steps
        );
    }
    if !failures.is_empty() {
        bail!("{} of {total} seeds failed", failures.len());
    }
    Ok(())
}
