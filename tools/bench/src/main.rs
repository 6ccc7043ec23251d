//! `xdv-bench <name>`: benchmarks, run through `cargo xdv bench <name>`.
//!
//! Convention: human-readable lines, then as the last line one JSON object with at
//! least `bench`, `unit`, `ours`, `baseline`, `ratio`.

mod accel;
mod audit;
mod boot;
mod cluster;
mod linux_guest;
mod net;
mod node;
mod raft;
mod replay;
mod report;
mod route;
mod sched;
mod tasks;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprintln!("usage: xdv-bench <name> [args...]");
        std::process::exit(2);
    };
    let rest = &args[1..];
    let result: anyhow::Result<()> = match name.as_str() {
        "boot" => boot::run(rest),
        "sched" => sched::run(rest),
        "audit" => audit::run(rest),
        "raft" => raft::run(rest),
        "tasks" => tasks::run(rest),
        "net" => net::run(rest),
        "cluster" => cluster::run(rest),
        "node" => node::run(rest),
        "accel" => accel::run(rest),
        "replay" => replay::run(rest),
        "route" => route::run(rest),
        other => Err(anyhow::anyhow!("unknown benchmark `{other}`")),
    };
    if let Err(e) = result {
        eprintln!("xdv-bench: error: {e:#}");
        std::process::exit(1);
    }
}
