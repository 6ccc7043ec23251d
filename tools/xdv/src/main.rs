//! `xdv` — the XDV host CLI (`cargo xdv <command>`).
//!
//! Each command lives in its own module under `cmd/`; adding a command is one enum
//! variant here plus its module. Exit codes are in `xdv::exit`.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xdv",
    version,
    about = "XDV deterministic cluster kernel: host tool",
    after_help = xdv::exit::TOP_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the host prerequisites (QEMU, GRUB, ...) present or missing, with the apt-get line.
    Doctor(cmd::doctor::Args),
    /// Build the kernel image (release by default) and print its path.
    Build(cmd::build::Args),
    /// Build and boot one node in QEMU with COM1 on this terminal.
    Run(cmd::run::Args),
    /// Write a GRUB (Multiboot2) ISO of the kernel (BIOS; UEFI too with grub-efi-amd64-bin).
    Iso(cmd::iso::Args),
    /// Write a PXE netboot tree (BIOS and UEFI GRUB, per-MAC node configs, --dnsmasq).
    Pxe(cmd::pxe::Args),
    /// Run a benchmark and print its comparison (last line is JSON).
    Bench(cmd::bench::Args),
    /// Verify, show and prove audit regions (from a node's RAM file).
    Audit(cmd::audit::Args),
    /// Simulate real nodes (crashes, torn writes, partitions): one seed or a sweep.
    Sim(cmd::sim::Args),
    /// Sandboxed tasks: validate a module offline, show one by id, list them.
    Task(cmd::task::Args),
    /// Host L2 switch connecting QEMU nodes, with fault injection.
    Switch(cmd::switch::Args),
    /// Boot N nodes and the switch between them (new with --fresh, again with --resume).
    Up(cmd::cluster::UpArgs),
    /// Stop every node (RAM files kept) and the switch.
    Down(cmd::cluster::DirArgs),
    /// One line per node, the cluster table and a health line (--json for scripts).
    Status(cmd::cluster::StatusArgs),
    /// Attach this terminal to a node's serial console (raw mode; Ctrl-] detaches; one
    /// client at a time).
    Console(cmd::cluster::NodeArgs),
    /// A node's serial log (this boot; --all every boot; --follow keeps printing), or
    /// with --task ID the lines a task's module wrote with `log()`.
    Logs(cmd::logs::Args),
    /// A node's metrics in the Prometheus text exposition format (operator-signed).
    Metrics(cmd::metrics::Args),
    /// SIGKILL one node (crash); its RAM file stays.
    Kill(cmd::cluster::NodeArgs),
    /// Start a stopped node again on its RAM file (and the switch if it is stopped).
    Start(cmd::cluster::StartArgs),
    /// Add a node to the running cluster: new key, boot, admission (operator-signed
    /// AddWorker), catch-up, promotion to voter (or observer with --observer).
    Join(cmd::member::JoinArgs),
    /// The members, or with `--discovered` the machines that PXE-booted with an unknown
    /// MAC and reported themselves to the cluster (MAC, hardware, first/last seen).
    Nodes(cmd::member::NodesArgs),
    /// Remove a member from the running cluster (operator-signed RemoveWorker;
    /// leadership moves first if it leads), then stop it.
    Remove(cmd::member::RemoveArgs),
    /// Submit a task (signed with the tenant's key) and wait for its outcome; exit code
    /// 0 succeeded, 3 refused, 4 failed.
    Submit(cmd::submit::SubmitArgs),
    /// Cancel a pending or running task (signed with its tenant's key); exit 0
    /// cancelled, 3 refused (no such task, not yours, already finished).
    Cancel(cmd::cancel::CancelArgs),
    /// A federation's gate: `route explain JOB` shows why the gate routed a job where
    /// it did (buckets, RTT bounds, scores, hysteresis, fallbacks, status).
    Route(cmd::route::Args),
    /// Set, show or clear a tenant's quota (operator-signed).
    Quota(cmd::quota::QuotaArgs),
    /// Reserve Q containers, Φ windows or K core slots on a node (a signed contract);
    /// exit 0 accepted, 3 rejected.
    Reserve(cmd::contract::ReserveArgs),
    /// Give up a contract (its tenant); exit 0 released, 3 refused.
    Release(cmd::contract::ReleaseArgs),
    /// Contracts in force and the cluster time.
    Contracts(cmd::contract::ContractsArgs),
    /// The cluster's placement policy (`policy show`, `policy set routed|least-loaded|
    /// first-fit`, operator-signed, through the log), or a tenant's priority in
    /// contract conflicts (`policy <tenant> --priority high|normal|low`).
    Policy(cmd::contract::PolicyArgs),
    /// Q/Φ accelerator devices for QEMU nodes: serve one, inject faults (ctl).
    Accel(cmd::accel::Args),
    /// Re-apply a node's committed log on the host (from its RAM file) and check every
    /// state hash against its audit records; exit 0 ExactMatch, 1 diverged.
    Replay(cmd::replay::Args),
    /// Verify a cluster: audit chains, published roots, consistency, replays, state
    /// hashes across nodes, federated root; exit 0 all good, 1 a problem.
    Verify(cmd::verify::Args),
    /// Draw a run as one self-contained HTML page (a lane per node).
    Timeline(cmd::timeline::Args),
    /// Print a shell completion script for `xdv` to stdout (e.g. `cargo xdv completions
    /// bash > ~/.local/share/bash-completion/completions/xdv`).
    Completions(CompletionsArgs),
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Writes the completion script of the whole command tree for `shell` to stdout.
fn completions(a: CompletionsArgs) {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "xdv", &mut std::io::stdout());
}

fn main() {
    let cli = Cli::parse();
    let ok = |r: anyhow::Result<()>| r.map(|()| xdv::exit::OK);
    let result = match cli.cmd {
        Cmd::Doctor(a) => cmd::doctor::run(a),
        Cmd::Build(a) => ok(cmd::build::run(a)),
        Cmd::Run(a) => ok(cmd::run::run(a)),
        Cmd::Iso(a) => ok(cmd::iso::run(a)),
        Cmd::Pxe(a) => ok(cmd::pxe::run(a)),
        Cmd::Bench(a) => ok(cmd::bench::run(a)),
        Cmd::Audit(a) => ok(cmd::audit::run(a)),
        Cmd::Sim(a) => ok(cmd::sim::run(a)),
        Cmd::Task(a) => cmd::task::run(a),
        Cmd::Switch(a) => ok(cmd::switch::run(a)),
        Cmd::Up(a) => ok(cmd::cluster::up(a)),
        Cmd::Down(a) => ok(cmd::cluster::down(a)),
        Cmd::Status(a) => ok(cmd::cluster::status(a)),
        Cmd::Console(a) => ok(cmd::cluster::console(a)),
        Cmd::Logs(a) => cmd::logs::run(a),
        Cmd::Metrics(a) => ok(cmd::metrics::run(a)),
        Cmd::Kill(a) => ok(cmd::cluster::kill(a)),
        Cmd::Start(a) => ok(cmd::cluster::start(a)),
        Cmd::Join(a) => ok(cmd::member::join(a)),
        Cmd::Nodes(a) => ok(cmd::member::nodes(a)),
        Cmd::Remove(a) => ok(cmd::member::remove(a)),
        Cmd::Submit(a) => cmd::submit::submit(a),
        Cmd::Cancel(a) => cmd::cancel::cancel(a),
        Cmd::Route(a) => cmd::route::run(a),
        Cmd::Quota(a) => ok(cmd::quota::quota(a)),
        Cmd::Reserve(a) => cmd::contract::reserve(a),
        Cmd::Release(a) => cmd::contract::release(a),
        Cmd::Contracts(a) => ok(cmd::contract::contracts(a)),
        Cmd::Policy(a) => ok(cmd::contract::policy(a)),
        Cmd::Accel(a) => ok(cmd::accel::run(a)),
        Cmd::Replay(a) => cmd::replay::run(a),
        Cmd::Verify(a) => cmd::verify::run(a),
        Cmd::Timeline(a) => ok(cmd::timeline::run(a)),
        Cmd::Completions(a) => {
            completions(a);
            Ok(xdv::exit::OK)
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xdv: error: {e:#}");
            std::process::exit(xdv::exit::ERROR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every argument of every command has a `--help` description.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in cmd.get_subcommands() {
                if s.get_about().is_none() {
                    missing.push(format!("{path} {} (command)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "xdv", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
