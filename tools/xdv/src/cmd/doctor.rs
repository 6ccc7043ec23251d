//! `cargo xdv doctor`: every host prerequisite, present or missing, and the one
//! `apt-get` line that installs what is missing (`xdv::prereq`).

use xdv::prereq::{self, ALL, Need};

#[derive(clap::Args)]
pub struct Args {
    /// Install the missing packages now (needs root; same as what `run` and `up` do).
    #[arg(long)]
    install: bool,
}

/// Prints the table; returns 0 when everything commands use is present, 1 otherwise.
pub fn run(a: Args) -> anyhow::Result<i32> {
    if a.install {
        prereq::ensure(&[Need::Qemu, Need::Grub, Need::Uefi, Need::Checks])?;
    }
    println!(
        "{:<24} {:<8} {:<16} used by",
        "prerequisite", "status", "package"
    );
    for p in ALL {
        println!(
            "{:<24} {:<8} {:<16} {}",
            p.name(),
            if p.present() { "ok" } else { "MISSING" },
            p.package,
            p.used_by
        );
    }
    let rust =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    println!(
        "{:<24} {:<8} {:<16} build (pinned by rust-toolchain.toml)",
        "cargo",
        if rust.is_some() { "ok" } else { "MISSING" },
        "rustup"
    );
    let missing = prereq::missing(&[Need::Qemu, Need::Grub, Need::Uefi, Need::Checks]);
    if missing.is_empty() {
        println!("everything is present");
        return Ok(xdv::exit::OK);
    }
    let pkgs = prereq::packages(&missing);
    println!("missing: install with\n    {}", prereq::apt_line(&pkgs));
    if prereq::may_install() {
        println!(
            "(running as root: `cargo xdv run`, `up` and `iso` install what they need themselves; `cargo xdv doctor --install` installs all of it)"
        );
    }
    // Only the UEFI firmware missing is not an error: no command uses it yet.
    let needed = missing
        .iter()
        .any(|p| p.need != Need::Uefi && p.need != Need::Checks);
    Ok(if needed {
        xdv::exit::ERROR
    } else {
        xdv::exit::OK
    })
}
