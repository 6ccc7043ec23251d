//! `cargo xdv switch`: run the host L2 switch, or talk to a running one (`ctl`).
//!
//! ```text
//! cargo xdv switch --ports 3 --dir /tmp/xdv-net --seed 7 [--drop 10 ...]
//! cargo xdv switch ctl partition 1,2/3          # the switch of `cargo xdv up`'s cluster
//! cargo xdv switch ctl --dir /tmp/xdv-net stats  # a switch started by hand
//! ```
//! Socket layout and commands: `docs/wire.md`.

use anyhow::Context;
use std::path::PathBuf;
use xdv::switch::{self, Faults, SwitchConfig};

/// Directory for the switch's sockets when `--dir` is not given.
pub const DEFAULT_DIR: &str = "/tmp/xdv-net";

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// Number of ports; port N is node N (1..=N).
    #[arg(long, default_value_t = 3)]
    ports: u16,
    /// Directory for the sockets (sw-N.sock, sw-N.stream, node-N.sock, ctl.sock).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Seed of the fault generator (same seed, same faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Initial drop percentage.
    #[arg(long, default_value_t = 0)]
    drop: u8,
    /// Initial duplicate percentage.
    #[arg(long, default_value_t = 0)]
    dup: u8,
    /// Initial delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay: u64,
    /// Initial reorder percentage.
    #[arg(long, default_value_t = 0)]
    reorder: u8,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Send a command to a running switch: partition 1,2/3 | cut 1>3 | heal | drop PCT |
    /// dup PCT | delay MS [PORTS] | reorder PCT | faults | stats [json] | macs | shutdown
    Ctl(CtlArgs),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The running switch's socket directory [default: the switch of the cluster in
    /// --cluster-dir, else /tmp/xdv-net].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Cluster whose switch to talk to when --dir is not given [default:
    /// target/xdv/cluster].
    #[arg(long)]
    cluster_dir: Option<PathBuf>,
    /// The command and its argument.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The switch directory `ctl` talks to: `--dir`, else the cluster's switch (running or
/// not: a stopped one gets a clear error), else [`DEFAULT_DIR`].
fn ctl_dir(dir: Option<PathBuf>, cluster_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d);
    }
    let cdir = super::cluster::dir(cluster_dir.clone());
    match xdv::cluster::ClusterState::load(&cdir) {
        Ok(st) if st.switch_running() => Ok(st.switch_dir),
        Ok(_) => anyhow::bail!(
            "the switch of the cluster in {} is not running (start the cluster with `cargo xdv up --resume`)",
            cdir.display()
        ),
        Err(e) if cluster_dir.is_some() => Err(e),
        Err(_) => Ok(PathBuf::from(DEFAULT_DIR)),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Sub::Ctl(c)) = args.sub {
        let dir = ctl_dir(c.dir, c.cluster_dir)?;
        let out = switch::control(&dir, &c.command.join(" "))
            .with_context(|| format!("the switch in {}", dir.display()))?;
        println!("{out}");
        return Ok(());
    }
    let faults = Faults {
        drop_pct: args.drop,
        dup_pct: args.dup,
        delay_ms: args.delay,
        reorder_pct: args.reorder,
    };
    let config = SwitchConfig {
        dir: args.dir.clone(),
        ports: args.ports,
        seed: args.seed,
        faults,
    };
    let handle = switch::spawn(config)?;
    eprintln!(
        "xdv switch: {} ports, seed {}, sockets in {} (control: {})",
        args.ports,
        args.seed,
        args.dir.display(),
        switch::control_socket_path(&args.dir).display()
    );
    for port in 1..=args.ports {
        eprintln!(
            "  node {port}: -netdev {}",
            switch::qemu_netdev_arg(&args.dir, port, "n0")
        );
    }
    eprintln!(
        "stop with: cargo xdv switch ctl --dir {} shutdown",
        args.dir.display()
    );
    let mut handle = handle;
    handle.join()
}
