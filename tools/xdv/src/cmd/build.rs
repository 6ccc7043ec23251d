//! `cargo xdv build`: build the kernel image and print its path.

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
