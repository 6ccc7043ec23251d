//! `cargo xdv task check <file.wasm|file.wat>`: validates a module offline with the
//! checks `submit` applies before sending (`xdv::submission::check`): the cluster's
//! limits (`xdv_cluster::MAX_MODULE_BYTES`, `MAX_INPUT_BYTES`), then the same
//! `xdv_sandbox::validate` the placed node runs before it queues a task.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use xdv::mgmt::quoted_output;
use xdv::submission::{check, read_module};
use xdv_cluster::Work;
use xdv_sched::WorkOutcome;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Validate a module (.wasm, or .wat text) as `submit` and the cluster do: the
    /// cluster's size limits (module 64 KiB, input 16 KiB), then the sandbox's checks.
    Check {
        /// The module file (.wasm binary or .wat text).
        file: PathBuf,
        /// Tick budget to validate with (1 ..= 2^40).
        #[arg(long, default_value_t = 1000)]
        budget: u64,
        /// Input file to validate with (its size is checked) and to run the module once
        /// with after validating (prints outcome, ticks and output).
        #[arg(long)]
        run_input: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> Result<()> {
    let Sub::Check {
        file,
        budget,
        run_input,
    } = args.cmd;
    let bytes = match read_module(&file) {
        Ok(b) => b,
        Err(e) if file.is_file() => bail!("{}: refused: {e:#}", file.display()),
        Err(e) => return Err(e),
    };
    let input = match &run_input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let v = match check(&Work::Wasm(bytes), &input, budget) {
        Ok(v) => v,
        Err(e) => bail!("{}: refused: {e}", file.display()),
    };
    println!(
        "{}: OK ({} bytes, sha256 {}, budget {budget} ticks)",
        file.display(),
        v.module_bytes,
        v.module_hash
    );
    if run_input.is_some() {
        let r = xdv_sandbox::run(&v, budget, 0);
        let outcome = match &r.outcome {
            WorkOutcome::Completed { .. } => "executed".to_string(),
            WorkOutcome::BudgetExceeded => "budget exceeded".to_string(),
            WorkOutcome::Trapped { reason } => format!("trapped: {reason}"),
        };
        println!(
            "run: {outcome}, {} ticks, output {} bytes: {}",
            r.ticks_used,
            r.output.len(),
            quoted_output(&r.output)
        );
        for l in &r.log {
            println!("log: {l}");
        }
    }
    Ok(())
}
