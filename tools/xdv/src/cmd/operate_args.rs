//! Arguments shared by `replay`, `verify` and `timeline`: where a node's regions are
//! and which provisioning module built it, and how a list of inputs becomes RAM files.

use anyhow::{Result, anyhow, bail};
use std::path::PathBuf;
use xdv::operate::image::{LoadOptions, RegionPlace, node_of_file};

#[derive(clap::Args, Clone, Default)]
pub struct Place {
    /// The Raft region as ADDR,SIZE (e.g. 0x5000000,8M) when the node's command line
    /// is not in cluster.json [default: the kernel's raft= default].
    #[arg(long, value_parser = parse_place)]
    raft: Option<RegionPlace>,
    /// The audit region as ADDR,SIZE [default: from cluster.json or the kernel's].
    #[arg(long, value_parser = parse_place)]
    audit: Option<RegionPlace>,
    /// The node's provisioning module [default: node<N>.prov or keys.json beside
    /// the RAM file].
    #[arg(long)]
    prov: Option<PathBuf>,
}

impl Place {
    pub fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            raft: self.raft,
            audit: self.audit,
            prov: self.prov.clone(),
        })
    }
}

fn parse_num(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = match num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => num.parse(),
    }
    .map_err(|e| format!("`{s}`: {e}"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_place(s: &str) -> Result<RegionPlace, String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("`{s}`: expected ADDR,SIZE (e.g. 0x5000000,8M)"))?;
    Ok(RegionPlace {
        offset: parse_num(a)?,
        bytes: parse_num(b)?,
    })
}

/// The RAM files named by `inputs`: a cluster directory gives its `node<N>.ram`
/// files in node order; a file is taken as it is.
pub fn ram_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(p)
                .map_err(|e| anyhow!("reading {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|f| node_of_file(&f).map(|n| (n, f)))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!(
                    "{} holds no node<N>.ram file (is it a cluster directory?)",
                    p.display()
                );
            }
            out.extend(found.into_iter().map(|(_, f)| f));
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}
