//! Host prerequisites: the Debian packages XDV's commands need, whether each is
//! present, and installing the missing ones.
//!
//! One table ([`ALL`]) feeds `cargo xdv doctor`, `cargo xdv run`/`up`/`iso` and the QEMU
//! test harness, so every place names the same packages and prints the same
//! `apt-get` line. Commands install what they lack when run as root (CI runs as root)
//! unless `XDV_INSTALL=never`; otherwise they stop at once with the line to run.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};

/// What a prerequisite is needed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Booting nodes: `run`, `up`, `start`, the QEMU tests.
    Qemu,
    /// Building a GRUB ISO or PXE tree: `iso`, the ISO boot test.
    Grub,
    /// UEFI boot: OVMF and GRUB's x86_64-efi images (`pxe`, `up --boot pxe
    /// --firmware uefi`).
    Uefi,
    /// Reference checks of the test suite: headless Chromium renders the timeline
    /// page; python3 runs qiskit, the state-vector simulator's reference.
    Checks,
}

/// How presence is checked.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// An executable on `PATH`.
    Command(&'static str),
    /// A file or directory that the package installs.
    Path(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct Prereq {
    pub probe: Probe,
    /// The Debian package providing it.
    pub package: &'static str,
    pub need: Need,
    /// Shown by `doctor`: which commands use it.
    pub used_by: &'static str,
}

/// Every prerequisite of every command.
pub const ALL: &[Prereq] = &[
    Prereq {
        probe: Probe::Command("qemu-system-x86_64"),
        package: "qemu-system-x86",
        need: Need::Qemu,
        used_by: "run, up, start, QEMU tests",
    },
    Prereq {
        probe: Probe::Command("grub-mkrescue"),
        package: "grub-common",
        need: Need::Grub,
        used_by: "iso, ISO/PXE boot tests",
    },
    Prereq {
        probe: Probe::Path("/usr/lib/grub/i386-pc"),
        package: "grub-pc-bin",
        need: Need::Grub,
        used_by: "iso, ISO/PXE boot tests (BIOS GRUB modules)",
    },
    Prereq {
        probe: Probe::Command("xorriso"),
        package: "xorriso",
        need: Need::Grub,
        used_by: "iso (grub-mkrescue writes the ISO with it)",
    },
    Prereq {
        probe: Probe::Command("mformat"),
        package: "mtools",
        need: Need::Grub,
        used_by: "iso (grub-mkrescue's EFI image)",
    },
    Prereq {
        probe: Probe::Path("/usr/lib/ipxe/qemu"),
        package: "ipxe-qemu",
        need: Need::Grub,
        used_by: "up --boot pxe, PXE tests (the QEMU NICs' PXE option ROMs)",
    },
    Prereq {
        probe: Probe::Path("/usr/share/OVMF/OVMF_CODE.fd"),
        package: "ovmf",
        need: Need::Uefi,
        used_by: "up --boot pxe --firmware uefi, UEFI PXE test (OVMF firmware)",
    },
    Prereq {
        probe: Probe::Path("/usr/lib/grub/x86_64-efi"),
        package: "grub-efi-amd64-bin",
        need: Need::Uefi,
        used_by: "pxe (UEFI images), up --boot pxe --firmware uefi, UEFI PXE test",
    },
    Prereq {
        probe: Probe::Command("chromium"),
        package: "chromium",
        need: Need::Checks,
        used_by: "the timeline test (renders `cargo xdv timeline` pages headless)",
    },
    Prereq {
        probe: Probe::Command("promtool"),
        package: "prometheus",
        need: Need::Checks,
        used_by: "the cluster CLI test (`promtool check metrics` on `cargo xdv metrics`)",
    },
    Prereq {
        probe: Probe::Command("python3"),
        package: "python3",
        need: Need::Checks,
        used_by: "qiskit reference of the Q simulator (`pip install qiskit`), bench accel (qiskit-aer)",
    },
    Prereq {
        probe: Probe::Command("ip"),
        package: "iproute2",
        need: Need::Checks,
        used_by: "up/start/join --net bridge=… (TAP devices), the bridge test",
    },
];

impl Prereq {
    /// The command or path this entry looks for.
    pub fn name(&self) -> &'static str {
        match self.probe {
            Probe::Command(c) | Probe::Path(c) => c,
        }
    }

    pub fn present(&self) -> bool {
        match self.probe {
            Probe::Command(c) => on_path(c),
            Probe::Path(p) => Path::new(p).exists(),
        }
    }
}

/// Is `cmd` an executable file in one of `PATH`'s directories?
pub fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(cmd))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The missing prerequisites among those needed for `needs`.
pub fn missing(needs: &[Need]) -> Vec<&'static Prereq> {
    ALL.iter()
        .filter(|p| needs.contains(&p.need) && !p.present())
        .collect()
}

/// The one command that installs `packages`.
pub fn apt_line(packages: &[&str]) -> String {
    format!("sudo apt-get install -y {}", packages.join(" "))
}

/// Distinct packages of `items`, in table order.
pub fn packages(items: &[&Prereq]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in items {
        if !out.contains(&p.package) {
            out.push(p.package);
        }
    }
    out
}

/// Is this process running as root (effective uid 0)?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// May missing packages be installed automatically (root, and not `XDV_INSTALL=never`)?
pub fn may_install() -> bool {
    std::env::var("XDV_INSTALL").map_or(true, |v| v != "never") && is_root() && on_path("apt-get")
}

/// Makes sure everything `needs` names is present: installs the missing packages with
/// apt-get when [`may_install`], else stops at once naming them and the line to run.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let miss = missing(needs);
    if miss.is_empty() {
        return Ok(());
    }
    let pkgs = packages(&miss);
    let names: Vec<&str> = miss.iter().map(|p| p.name()).collect();
    if !may_install() {
        bail!(
            "missing {} (Debian packages {}); install them with:\n    {}\n(`cargo xdv doctor` lists every prerequisite)",
            names.join(", "),
            pkgs.join(", "),
            apt_line(&pkgs)
        );
    }
    eprintln!(
        "xdv: missing {}; installing {} with apt-get (running as root; XDV_INSTALL=never to stop this)...",
        names.join(", "),
        pkgs.join(" ")
    );
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&pkgs);
    apt(&args)?;
    let still = missing(needs);
    if !still.is_empty() {
        let names: Vec<&str> = still.iter().map(|p| p.name()).collect();
        bail!(
            "apt-get finished but {} is still missing (is the package broken? try `apt-get install --reinstall {}`)",
            names.join(", "),
            pkgs.join(" ")
        );
    }
    eprintln!("xdv: installed {}", pkgs.join(" "));
    Ok(())
}

fn apt(args: &[&str]) -> Result<()> {
    eprintln!("xdv: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
