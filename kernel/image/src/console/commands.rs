//! The console's command table. Add a command here: one entry, one function.

use super::{CmdError, Command, usage};
use crate::service::Services;
use crate::{arch, mem, println, serial, smp, time};
use alloc::format;

pub static COMMANDS: &[Command] = &[
    Command {
        name: "help",
        args: "",
        summary: "list commands",
        run: help,
    },
    Command {
        name: "version",
        args: "",
        summary: "kernel version and build",
        run: version,
    },
    Command {
        name: "mem",
        args: "",
        summary: "memory map, reserved audit and Raft regions, frames and heap usage",
        run: mem_cmd,
    },
    Command {
        name: "cpus",
        args: "",
        summary: "CPUs and their state",
        run: cpus,
    },
    Command {
        name: "log",
        args: "<error|warn|info|debug|trace>",
        summary: "set the log level",
        run: log_cmd,
    },
    Command {
        name: "uptime",
        args: "",
        summary: "time since boot",
        run: uptime,
    },
    Command {
        name: "reboot",
        args: "",
        summary: "warm reboot (reserved regions survive)",
        run: reboot,
    },
    Command {
        name: "halt",
        args: "",
        summary: "stop the node",
        run: halt,
    },
    Command {
        name: "accel",
        args: "[test [N]]",
        summary: "Q/Φ accelerators: state, capacity, counters; `test` times N no-op round trips",
        run: super::accel::accel_cmd,
    },
    Command {
        name: "pci",
        args: "",
        summary: "PCI functions: ids, class, BARs, capabilities",
        run: pci_cmd,
    },
    Command {
        name: "net",
        args: "",
        summary: "NICs: MAC, IP, link, counters",
        run: net_cmd,
    },
    Command {
        name: "ping",
        args: "<ip> [count]",
        summary: "ICMP echo over the peer NIC with round-trip times",
        run: ping_cmd,
    },
    Command {
        name: "peers",
        args: "",
        summary: "peer connections, their state, bad-frame counters",
        run: peers_cmd,
    },
    Command {
        name: "health",
        args: "",
        summary: "Vivaldi coordinate and error; each member's state, role, RTT (measured, estimated, upper bound), suspicion timeout",
        run: health_cmd,
    },
    Command {
        name: "bulk",
        args: "<node> <bytes>",
        summary: "send a TCP stream to a peer's sink and print its hash",
        run: bulk_cmd,
    },
    Command {
        name: "audit",
        args: "[tail [n] | verify | stress <n> | bench]",
        summary: "audit chain: records, bytes, head hash, Merkle root; verify in place",
        run: super::audit::audit,
    },
    Command {
        name: "raft",
        args: "[propose <text>]",
        summary: "consensus: role, term, leader, commit; propose an entry",
        run: raft_cmd,
    },
    Command {
        name: "cluster",
        args: "[tasks [n] | cost]",
        summary: "cluster state: role, state hash, federated root, members; recent tasks; cost of a signature check and a state hash here",
        run: cluster_cmd,
    },
    Command {
        name: "fault",
        args: "late-completion <ms>",
        summary: "test hook: hold this node's next task completion <ms> ms, then propose it as it was (the log refuses it if the task moved on)",
        run: fault_cmd,
    },
    Command {
        name: "contracts",
        args: "",
        summary: "remote allocation contracts in force",
        run: |s, a| {
            no_args("contracts", a)?;
            super::cluster::print_contracts(s);
            Ok(())
        },
    },
    Command {
        name: "shards",
        args: "",
        summary: "tenant shards: primary and secondary node of each",
        run: |s, a| {
            no_args("shards", a)?;
            super::cluster::print_shards(s);
            Ok(())
        },
    },
    Command {
        name: "task",
        args: "run <loop|grow|hash|sort> [budget] | bench [n]",
        summary: "run a bundled WebAssembly task: outcome, ticks, output hash",
        run: super::task::task,
    },
    Command {
        name: "tasks",
        args: "",
        summary: "recent task outcomes",
        run: super::task::tasks,
    },
    Command {
        name: "runq",
        args: "",
        summary: "per-core run queues: depth, tasks run, ticks",
        run: super::sched::runq,
    },
    Command {
        name: "replay",
        args: "",
        summary: "replay log: events and head hash",
        run: super::sched::replay,
    },
    Command {
        name: "sched",
        args: "demo <n> | bench",
        summary: "run n demo tasks on all cores / run-queue benchmark",
        run: super::sched::sched,
    },
];

pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn no_args(name: &str, args: &[&str]) -> Result<(), CmdError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(usage(name))
    }
}

fn help(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("help", args)?;
    for c in COMMANDS {
        if c.args.is_empty() {
            println!("  {} — {}", c.name, c.summary);
        } else {
            println!("  {} {} — {}", c.name, c.args, c.summary);
        }
    }
    Ok(())
}

fn version(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("version", args)?;
    println!(
        "xdv {} (kernel, {} build, commit {}, built {})",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        env!("XDV_GIT_COMMIT"),
        env!("XDV_BUILD_DATE"),
    );
    Ok(())
}

fn mem_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("mem", args)?;
    let info = crate::boot_info();
    println!("memory map ({}):", info.protocol);
    for r in info.regions() {
        println!(
            "  {:#014x}-{:#014x} {:<12} {} KiB",
            r.base,
            r.end(),
            format!("{}", r.kind),
            r.len / 1024
        );
    }
    let o = crate::options();
    let fill = crate::audit::fill_state();
    let audit_state = match fill {
        Some(f) => format!(
            "{} of {} KiB used",
            f.used_bytes / 1024,
            f.region_bytes / 1024
        ),
        None => "not open: audit disabled".into(),
    };
    let raft_state = match s.node.halted() {
        Some(h) => format!("{h}"),
        None => "in use".into(),
    };
    println!("reserved (kept out of the frame allocator; survive a warm reboot):");
    for (name, (base, len), state) in [
        ("audit", o.audit, audit_state),
        ("raft", o.raft, raft_state),
    ] {
        println!(
            "  {:#014x}-{:#014x} {name:<12} {} KiB ({state})",
            base,
            base + len,
            len / 1024
        );
    }
    let (free, total) = mem::frames::stats();
    println!("frames: free={free} total={total} (4 KiB each)");
    let (used, hfree, size) = mem::heap::usage();
    println!(
        "heap: used={used} free={hfree} bytes (size {size}, failed allocations {})",
        mem::heap::failures()
    );
    Ok(())
}

fn cpus(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("cpus", args)?;
    smp::print_cpus();
    Ok(())
}

fn log_cmd(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    let [level] = args else {
        return Err(usage("log"));
    };
    let l = xdv_boot::LogLevel::parse(level).ok_or_else(|| {
        CmdError::Usage(format!("log <error|warn|info|debug|trace> (got `{level}`)"))
    })?;
    serial::set_level(l);
    println!("log level: {}", l.name());
    Ok(())
}

fn uptime(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("uptime", args)?;
    let us = time::uptime_us();
    println!(
        "up {}.{:06} s (tsc {} MHz)",
        us / 1_000_000,
        us % 1_000_000,
        time::tsc_hz() / 1_000_000
    );
    Ok(())
}

fn reboot(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("reboot", args)?;
    println!("xdv: rebooting");
    arch::reboot()
}

fn halt(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("halt", args)?;
    println!("xdv: halted");
    smp::stop_others();
    arch::exit_qemu(arch::exit_code::HALT)
}

fn pci_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("pci", args)?;
    s.devices.print();
    Ok(())
}

fn net_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("net", args)?;
    s.net.print();
    if let Some(line) = s.transport.as_ref().and_then(|t| t.bulk_status(&s.net)) {
        println!("{line}");
    }
    Ok(())
}

fn ping_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    let (ip, count) = match args {
        [ip] => (ip, "4"),
        [ip, n] => (ip, *n),
        _ => return Err(usage("ping")),
    };
    let addr: core::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| CmdError::Usage(format!("ping <ip> [count] (bad address `{ip}`)")))?;
    let count: u32 = count
        .parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| CmdError::Usage(format!("ping <ip> [1..=1000] (got `{count}`)")))?;
    super::net::ping(s, addr, count).map_err(CmdError::Failed)
}

fn peers_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("peers", args)?;
    match s.transport.as_ref() {
        Some(t) => t.print_peers(),
        None => println!("peers: transport off (no peer NIC or no peers= list)"),
    }
    Ok(())
}

fn health_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    no_args("health", args)?;
    let h = s.node.peer_health();
    println!(
        "coordinate {:?} us, height {} us, error {}.{:03} ({} samples, {}), updates {}, refused {}",
        h.position_us,
        h.height_us,
        h.error_ppm / 1_000_000,
        h.error_ppm % 1_000_000 / 1000,
        h.samples,
        if h.converged {
            "converged"
        } else {
            "not converged"
        },
        h.coordinate_updates,
        h.samples_rejected
    );
    println!(
        "members: {} unconfirmed, {} alive, {} suspect, {} dead; confirmed {}, removed {}, suspected {}, refuted {}, dead {}; load x{}.{:03}",
        h.counts.0,
        h.counts.1,
        h.counts.2,
        h.counts.3,
        h.confirmed,
        h.removed_unconfirmed,
        h.suspected,
        h.refuted,
        h.dead,
        h.load_ppm / 1_000_000,
        h.load_ppm % 1_000_000 / 1000
    );
    for p in &h.peers {
        let silent = p
            .silent_ms
            .map_or("never heard".into(), |ms| format!("heard {ms} ms ago"));
        println!(
            "  {:<4} {:<8} {:<11} rtt {} us, estimate {} us, ucb {} us, quality {}.{:03}, suspicion timeout {} ms, {silent}",
            p.node,
            p.role,
            p.state,
            p.rtt_last_us,
            p.rtt_estimate_us,
            p.rtt_ucb_us,
            p.quality_ppm / 1_000_000,
            p.quality_ppm % 1_000_000 / 1000,
            p.suspicion_timeout_ms
        );
    }
    Ok(())
}

fn bulk_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    let [node, bytes] = args else {
        return Err(usage("bulk"));
    };
    let node: u32 = node
        .parse()
        .ok()
        .filter(|n| (1..=254).contains(n))
        .ok_or_else(|| usage("bulk"))?;
    let bytes: u64 = bytes
        .parse()
        .ok()
        .filter(|b| (1..=(256u64 << 20)).contains(b))
        .ok_or_else(|| usage("bulk"))?;
    super::net::bulk_send(s, node, bytes).map_err(CmdError::Failed)
}

fn raft_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    match args {
        [] => {
            super::cluster::print_raft(s);
            Ok(())
        }
        ["propose", rest @ ..] if !rest.is_empty() => {
            let text = rest.join(" ");
            let index = s
                .node
                .propose_raw(text.into_bytes())
                .map_err(CmdError::Failed)?;
            println!("raft: proposed at index {index}");
            Ok(())
        }
        _ => Err(usage("raft")),
    }
}

/// `fault late-completion <ms>`: the late-completion test hook (a completion delayed
/// as a slow network would; the task's timeout and fence token are what it tests).
fn fault_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    let ["late-completion", ms] = args else {
        return Err(usage("fault"));
    };
    let ms: u64 = ms
        .parse()
        .ok()
        .filter(|ms| (1..=600_000).contains(ms))
        .ok_or_else(|| {
            CmdError::Usage(format!("fault late-completion <1..600000 ms> (got `{ms}`)"))
        })?;
    late_completion_hook(s, ms)
}

#[cfg(feature = "fault-hooks")]
fn late_completion_hook(s: &mut Services, ms: u64) -> Result<(), CmdError> {
    s.node.delay_next_completion_for_test(ms);
    println!("fault: test hook armed: this node's next task completion is held {ms} ms");
    Ok(())
}

/// The image users run has no test hooks: the command is refused, nothing is armed.
#[cfg(not(feature = "fault-hooks"))]
fn late_completion_hook(_: &mut Services, _: u64) -> Result<(), CmdError> {
    Err(CmdError::Failed(
        "fault: this kernel has no test hooks (built without the `fault-hooks` feature)".into(),
    ))
}

fn cluster_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    match args {
        [] => super::cluster::print_cluster(s),
        ["tasks"] => super::cluster::print_tasks(s, 20),
        ["tasks", n] => {
            let n = n
                .parse()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    CmdError::Usage(alloc::format!("cluster tasks [1..10000] (got `{n}`)"))
                })?;
            super::cluster::print_tasks(s, n)
        }
        ["cost"] => super::cluster::print_cost(s),
        _ => return Err(usage("cluster")),
    }
    Ok(())
}
