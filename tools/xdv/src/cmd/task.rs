//! `cargo xdv task check <file.wasm|file.wat>`: validates a module against the host
//! interface offline, with the same `xdv_sandbox::validate` the kernel runs before it
//! queues a task.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use xdv_sandbox::{TaskModule, validate};
use xdv_types::{Priority, TenantId};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Validate a module (.wasm, or .wat text) against the XDV host interface.
    Check {
        file: PathBuf,
        /// Tick budget to validate with.
        #[arg(long, default_value_t = 1000)]
        budget: u64,
        /// Run it once with this input file after validating (prints outcome and ticks).
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
    let raw = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let bytes = if file.extension().is_some_and(|e| e == "wat") || raw.starts_with(b"(") {
        wat::parse_bytes(&raw)
            .map_err(|e| anyhow::anyhow!("{}: not valid WAT: {e}", file.display()))?
            .into_owned()
    } else {
        raw
    };
    let input = match &run_input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let task = TaskModule {
        tenant: TenantId(0),
        module: bytes,
        input,
        budget_ticks: budget,
        priority: Priority::Normal,
        guards: Vec::new(),
    };
    let v = match validate(&task) {
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
        println!(
            "run: {:?}, ticks {}, output {} bytes",
            r.outcome,
            r.ticks_used,
            r.output.len()
        );
    }
    Ok(())
}
