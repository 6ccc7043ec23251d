//! `cargo xdv timeline <cluster dir> -o run.html`: one self-contained HTML page (inline
//! SVG, no network fetches) with a lane per node, drawn from the replayed logs and the
//! audit records (`xdv::operate::timeline`: what each mark is derived from).

use super::operate_args::{Place, ram_files};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use xdv::operate::image::load_node;
use xdv::operate::{replay, timeline};

#[derive(clap::Args)]
pub struct Args {
    /// A cluster directory (every node<N>.ram in it) and/or node RAM files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output HTML file.
    #[arg(short, long)]
    output: PathBuf,
    /// First log index drawn [default: 1].
    #[arg(long)]
    from: Option<u64>,
    /// Last log index drawn [default: the last one any node applied].
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    place: Place,
}

pub fn run(a: Args) -> Result<()> {
    if let (Some(f), Some(t)) = (a.from, a.to)
        && f > t
    {
        bail!("--from {f} is after --to {t}");
    }
    let opts = a.place.options()?;
    let mut replays = Vec::new();
    let mut faults = Vec::new();
    for f in ram_files(&a.inputs)? {
        let img = load_node(&f, &opts)?;
        let r = replay(&img).with_context(|| format!("replaying {}", f.display()))?;
        replays.push(r);
        faults.push(timeline::read_faults(&img.audit));
    }
    let t = timeline::render(&replays, &faults, a.from, a.to);
    std::fs::write(&a.output, &t.html)
        .with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "wrote {}: log {}..={}, {} lanes, {} marks",
        a.output.display(),
        t.from,
        t.to,
        t.lanes.len(),
        t.marks.len()
    );
    Ok(())
}
