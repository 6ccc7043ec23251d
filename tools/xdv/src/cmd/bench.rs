//! `cargo xdv bench <name>`: runs a benchmark from `tools/bench` (release build) and
//! passes its output and exit status through. Names: boot, sched, audit, raft, tasks,
//! net, cluster, node, accel, replay, route. Each prints human-readable lines, then one JSON line.

use anyhow::Context;
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Benchmark name: boot | sched | audit | raft | tasks | net | cluster | node | accel | replay | route.
    name: String,
    /// Arguments for the benchmark.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

const NAMES: &[&str] = &[
    "boot", "sched", "audit", "raft", "tasks", "net", "cluster", "node", "accel", "replay", "route",
];

pub fn run(args: Args) -> anyhow::Result<()> {
    if !NAMES.contains(&args.name.as_str()) {
        anyhow::bail!(
            "unknown benchmark `{}` (have: {})",
            args.name,
            NAMES.join(", ")
        );
    }
    let root = xdv::qemu::repo_root();
    eprintln!("xdv: building the benchmarks (release; the first build takes a few minutes)...");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["run", "--release", "-p", "xdv-bench", "--"])
        .arg(&args.name)
        .args(&args.rest)
        .status()
        .context("running cargo for xdv-bench")?;
    if !status.success() {
        anyhow::bail!("benchmark `{}` failed ({status})", args.name);
    }
    Ok(())
}
