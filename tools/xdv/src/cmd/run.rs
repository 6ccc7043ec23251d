//! `cargo xdv run`: build and boot one node in QEMU with COM1 on this terminal.

use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;
use xdv::qemu;

#[derive(clap::Args)]
pub struct Args {
    /// CPUs (QEMU -smp).
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Guest RAM, e.g. 256M or 1G.
    #[arg(long, default_value = "256M")]
    mem: String,
    /// RAM backing file (the audit region is readable from it); default
    /// target/xdv/run/node.ram.
    #[arg(long)]
    ram_file: Option<PathBuf>,
    /// Boot the debug build.
    #[arg(long)]
    debug: bool,
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

pub fn run(args: Args) -> anyhow::Result<()> {
    qemu::check_qemu()?;
    let mem_mib = parse_mem_mib(&args.mem)?;
    if args.smp == 0 || args.smp > 16 {
        anyhow::bail!("--smp must be 1..=16 (XDV drives at most 16 CPUs)");
    }
    eprintln!("xdv: building the kernel...");
    let image = qemu::build_kernel(!args.debug)?;
    let ram = args
        .ram_file
        .unwrap_or_else(|| qemu::repo_root().join("target/xdv/run/node.ram"));
    if let Some(d) = ram.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut cfg = qemu::Config::kernel_at(image, &args.cmdline.join(" "));
    cfg.smp = args.smp;
    cfg.mem_mib = mem_mib;
    cfg.ram_file = Some(ram.clone());
    cfg.no_reboot = false;
    let mut qargs = cfg.args();
    // Serial multiplexed with the QEMU monitor on this terminal: Ctrl-A X quits.
    if let Some(i) = qargs.iter().position(|a| a == "stdio") {
        qargs[i] = "mon:stdio".into();
    }
    if let Some(i) = qargs.iter().position(|a| a == "-monitor") {
        qargs.drain(i..i + 2);
    }
    eprintln!(
        "xdv: guest RAM file (audit region readable here): {}",
        ram.display()
    );
    eprintln!(
        "xdv: booting {} ({} CPUs, {} MiB); quit with Ctrl-A X",
        image_name(&cfg),
        args.smp,
        mem_mib
    );
    let status = Command::new(qemu::QEMU)
        .args(&qargs)
        .status()
        .context("starting QEMU")?;
    eprintln!(
        "xdv: QEMU exited: {:?}",
        qemu::Exit::from_status(status.code())
    );
    Ok(())
}

fn image_name(cfg: &qemu::Config) -> String {
    match &cfg.boot {
        qemu::Boot::Kernel(p) | qemu::Boot::Cdrom(p) => p.display().to_string(),
    }
}
