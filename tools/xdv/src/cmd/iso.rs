//! `cargo xdv iso`: write a GRUB (Multiboot2) ISO of the kernel, bootable by BIOS and —
//! when GRUB's x86_64-efi images are installed (`grub-efi-amd64-bin`) — by UEFI.

use std::path::PathBuf;
use xdv::qemu;

#[derive(clap::Args)]
pub struct Args {
    /// Output file (default target/xdv/xdv.iso).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Kernel command line baked into grub.cfg, after `--`.
    #[arg(last = true)]
    cmdline: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let image = qemu::build_kernel(true)?;
    let out = args
        .output
        .unwrap_or_else(|| qemu::repo_root().join("target/xdv/xdv.iso"));
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    qemu::make_iso(&image, &args.cmdline.join(" "), &out)?;
    println!("{}", out.display());
    eprintln!(
        "boot it with: qemu-system-x86_64 -machine q35 -cdrom {} -serial stdio -display none",
        out.display()
    );
    Ok(())
}
