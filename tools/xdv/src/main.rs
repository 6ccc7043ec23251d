//! `xdv` — the XDV host CLI (`cargo xdv <command>`).
//!
//! Each command lives in its own module under `cmd/`; adding a command is one enum
//! variant here plus its module.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xdv",
    version,
    about = "XDV deterministic cluster kernel: host tool"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel image (release by default) and print its path.
    Build(cmd::build::Args),
    /// Build and boot one node in QEMU with COM1 on this terminal.
    Run(cmd::run::Args),
    /// Write a GRUB (Multiboot2) BIOS-bootable ISO of the kernel.
    Iso(cmd::iso::Args),
    /// Run a benchmark and print its comparison (last line is JSON).
    Bench(cmd::bench::Args),
    /// Verify, show and prove audit regions (from a node's RAM file).
    Audit(cmd::audit::Args),
    /// Simulate real nodes (crashes, torn writes, partitions): one seed or a sweep.
    Sim(cmd::sim::Args),
    /// Sandboxed tasks: validate a module offline.
    Task(cmd::task::Args),
    /// Host L2 switch connecting QEMU nodes, with fault injection.
    Switch(cmd::switch::Args),
    /// Boot N nodes and the switch between them; live status until all are ready.
    Up(cmd::cluster::UpArgs),
    /// Stop every node (RAM files kept) and the switch.
    Down(cmd::cluster::DirArgs),
    /// One line per node: state, addresses, log file.
    Status(cmd::cluster::DirArgs),
    /// Attach this terminal to a node's serial console (Ctrl-] detaches).
    Console(cmd::cluster::NodeArgs),
    /// SIGKILL one node (crash); its RAM file stays.
    Kill(cmd::cluster::NodeArgs),
    /// Start a stopped node again on its RAM file.
    Start(cmd::cluster::NodeArgs),
    /// Submit a task to the cluster (signed with the tenant's key) and wait for its outcome.
    Submit(cmd::cluster::SubmitArgs),
    /// Set or clear a tenant's quota (operator-signed).
    Quota(cmd::cluster::QuotaArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Build(a) => cmd::build::run(a),
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Iso(a) => cmd::iso::run(a),
        Cmd::Bench(a) => cmd::bench::run(a),
        Cmd::Audit(a) => cmd::audit::run(a),
        Cmd::Sim(a) => cmd::sim::run(a),
        Cmd::Task(a) => cmd::task::run(a),
        Cmd::Switch(a) => cmd::switch::run(a),
        Cmd::Up(a) => cmd::cluster::up(a),
        Cmd::Down(a) => cmd::cluster::down(a),
        Cmd::Status(a) => cmd::cluster::status(a),
        Cmd::Console(a) => cmd::cluster::console(a),
        Cmd::Kill(a) => cmd::cluster::kill(a),
        Cmd::Start(a) => cmd::cluster::start(a),
        Cmd::Submit(a) => cmd::cluster::submit(a),
        Cmd::Quota(a) => cmd::cluster::quota(a),
    };
    if let Err(e) = result {
        eprintln!("xdv: error: {e:#}");
        std::process::exit(1);
    }
}
