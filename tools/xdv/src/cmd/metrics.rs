//! `cargo xdv metrics <node>`: the node's metrics in the Prometheus text exposition
//! format, as the node computed them (`Request::Metrics`, operator-signed; the
//! families are listed in `docs/cluster.md` § Metrics).

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Duration;
use xdv::cluster::ClusterState;
use xdv::mgmt::{self, Client, Keys, response_kind};
use xdv_cluster::mgmt::{Principal, Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// Node id whose metrics to print (a running member: 1..=N).
    node: u32,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The exposition text node `port` answers with.
pub fn fetch(port: u16, keys: &Keys) -> Result<String> {
    let req = mgmt::signed(keys, Principal::Operator, Request::Metrics)?;
    match Client::connect(port, Duration::from_secs(2))?.call(&req, Duration::from_secs(10))? {
        Response::Metrics(text) => Ok(text),
        Response::Refused(d) => bail!("refused: {d}"),
        other => bail!("unexpected answer: {}", response_kind(&other)),
    }
}

pub fn run(a: Args) -> Result<()> {
    let dir = super::cluster::dir(a.dir);
    let st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    let port = st.running_node_port(a.node)?;
    print!("{}", fetch(port, &keys)?);
    Ok(())
}
