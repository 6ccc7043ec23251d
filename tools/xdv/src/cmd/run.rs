//! `cargo xdv run`: build and boot one node in QEMU with COM1 on this terminal.

use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;
use xdv::qemu;

#[derive(clap::Args)]
pub struct Args {
    /// CPUs (QEMU -smp), 1-16.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    smp: u32,
    /// Guest RAM, 128M-16G, e.g. 256M or 1G (a number alone is MiB).
    #[arg(long, default_value = "256M")]
    mem: String,
    /// RAM backing file (the audit region is readable from it) [default:
    /// target/xdv/run/node-N.ram for `node=N` on the command line, node-0.ram without].
    #[arg(long)]
    ram_file: Option<PathBuf>,
    /// Boot the debug build.
    #[arg(long)]
    debug: bool,
    /// Print the QEMU command line (with the RAM file) and exit: no build, no boot.
    #[arg(long)]
    dry_run: bool,
    /// Attach an accelerator: q or phi. A device process (`xdv accel serve`, log in
    /// target/xdv/run/node-N.accel.log) serves it and stops when QEMU exits.
    #[arg(long, value_parser = super::accel::kind_value)]
    accel: Option<xdv_accel::regs::Kind>,
    /// Kernel command line, after `--` (e.g. `-- node=3 log=debug`).
    #[arg(last = true)]
    cmdline: Vec<String>,
}

/// Parses `256M` / `1G` / `512` (MiB) into MiB.
pub fn parse_mem_mib(s: &str) -> anyhow::Result<u32> {
    let (num, mult) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    let n: u32 = num
        .parse()
        .with_context(|| format!("bad --mem `{s}` (use e.g. 256M or 1G)"))?;
    let mib = n.checked_mul(mult).filter(|m| (128..=16384).contains(m));
    mib.with_context(|| format!("--mem `{s}` must be between 128M and 16G"))
}

/// The node id a kernel command line gives (`node=N`; the kernel's default is 0).
pub fn node_id(cmdline: &[String]) -> anyhow::Result<u32> {
    // The kernel's parser keeps the last `node=`.
    let words = cmdline.iter().flat_map(|w| w.split_whitespace());
    match words.filter_map(|w| w.strip_prefix("node=")).next_back() {
        None => Ok(0),
        Some(v) => v
            .parse()
            .with_context(|| format!("bad `node={v}` on the kernel command line (want a number)")),
    }
}

/// The default RAM file of node `id`: each node id has its own, so a node never
/// boots on another node's audit region (it would refuse it and run without audit).
pub fn default_ram_file(id: u32) -> PathBuf {
    qemu::repo_root().join(format!("target/xdv/run/node-{id}.ram"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mem_mib = parse_mem_mib(&args.mem)?;
    let node = node_id(&args.cmdline)?;
    let image = if args.dry_run {
        qemu::boot_image_path(!args.debug)
    } else {
        qemu::check_qemu()?;
        qemu::build_kernel_with(!args.debug, true)?
    };
    let ram = args.ram_file.unwrap_or_else(|| default_ram_file(node));
    if let Some(d) = ram.parent().filter(|_| !args.dry_run) {
        std::fs::create_dir_all(d)?;
    }
    let mut cfg = qemu::Config::kernel_at(image, &args.cmdline.join(" "));
    cfg.smp = args.smp;
    cfg.mem_mib = mem_mib;
    cfg.ram_file = Some(ram.clone());
    cfg.no_reboot = false;
    let accel_socket = default_ram_file(node).with_extension("accel.sock");
    if args.accel.is_some() {
        cfg = cfg.with_accel(&accel_socket);
    }
    let mut qargs = cfg.args();
    // Serial multiplexed with the QEMU monitor on this terminal: Ctrl-A X quits.
    if let Some(i) = qargs.iter().position(|a| a == "stdio") {
        qargs[i] = "mon:stdio".into();
    }
    if let Some(i) = qargs.iter().position(|a| a == "-monitor") {
        qargs.drain(i..i + 2);
    }
    if args.dry_run {
        println!("{} {}", qemu::QEMU, qargs.join(" "));
        return Ok(());
    }
    eprintln!(
        "xdv: node {node}'s RAM file (audit region readable here): {}",
        ram.display()
    );
    let device = match args.accel {
        Some(kind) => {
            let log = accel_socket.with_extension("log");
            let child = xdv::accel::start_process(kind, &accel_socket, &log, false)?;
            eprintln!(
                "xdv: {} accelerator on {} (faults: `cargo xdv accel ctl --socket {} fail`; log {})",
                kind.name(),
                accel_socket.display(),
                accel_socket.display(),
                log.display()
            );
            Some(child)
        }
        None => None,
    };
    eprintln!(
        "xdv: booting {} ({} CPUs, {} MiB); quit with Ctrl-A X",
        image_name(&cfg),
        args.smp,
        mem_mib
    );
    let status = Command::new(qemu::QEMU)
        .args(&qargs)
        .status()
        .context("starting QEMU");
    if let Some(mut child) = device {
        match child.try_wait() {
            Ok(Some(st)) => eprintln!(
                "xdv: the accelerator device had exited ({st}); its log: {}",
                accel_socket.with_extension("log").display()
            ),
            _ => {
                xdv::accel::terminate(child.id());
                let _ = child.wait();
            }
        }
    }
    let status = status?;
    eprintln!(
        "xdv: QEMU exited: {}",
        qemu::Exit::from_status(status.code())
    );
    Ok(())
}

fn image_name(cfg: &qemu::Config) -> String {
    match &cfg.boot {
        qemu::Boot::Kernel(p) | qemu::Boot::Cdrom(p) => p.display().to_string(),
        qemu::Boot::Firmware => "the firmware's boot device".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn node_id_from_the_command_line() {
        assert_eq!(node_id(&words("")).unwrap(), 0);
        assert_eq!(node_id(&words("node=3 log=debug")).unwrap(), 3);
        assert_eq!(node_id(&["log=debug node=4".to_string()]).unwrap(), 4);
        assert!(node_id(&words("node=abc")).is_err());
        assert_ne!(default_ram_file(1), default_ram_file(2));
    }
}
