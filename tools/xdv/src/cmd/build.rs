//! `cargo xdv build`: build the kernel and print the path of its boot image (the ELF
//! with debug information is next to it, without the `.boot` extension).

use xdv::qemu;

#[derive(clap::Args)]
pub struct Args {
    /// Build without optimisations (slower kernel, faster build).
    #[arg(long)]
    debug: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let image = qemu::build_kernel(!args.debug)?;
    println!("{}", image.display());
    Ok(())
}
