//! `cargo xdv accel serve|ctl`: run a Q or Φ device for a QEMU node, and inject
//! faults into one (`docs/accel.md`).

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;
use xdv::accel::daemon::{CtlCmd, Daemon};
use xdv::accel::{self, Spec};
use xdv::cluster::ClusterState;
use xdv_accel::regs::Kind;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Run a device in the foreground: the ivshmem server on --socket (QEMU's
    /// `ivshmem-doorbell` connects to it) and its control socket `<socket>.ctl`.
    Serve(ServeArgs),
    /// Send a fault-injection or status command to a device: `ctl <node> <command>`
    /// for a node of the local cluster, `ctl --socket PATH <command>` for one
    /// started by hand. Commands: fail, hang, unstable, recover, status.
    Ctl(CtlArgs),
}

/// Parses `q` / `phi` for clap.
pub fn kind_value(s: &str) -> std::result::Result<Kind, String> {
    accel::parse_kind(s).map_err(|e| e.to_string())
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Accelerator kind: q (quantum) or phi (phase coherence).
    #[arg(long, value_parser = kind_value)]
    kind: Kind,
    /// Unix socket QEMU connects to (`-chardev socket,path=...`).
    #[arg(long)]
    socket: PathBuf,
    /// Qubits of a Q device [default: 16].
    #[arg(long)]
    qubits: Option<u32>,
    /// Containers of a Q device (the qubits split evenly) [default: 2].
    #[arg(long)]
    containers: Option<u32>,
    /// Oscillators of a Φ device [default: 64].
    #[arg(long)]
    oscillators: Option<u32>,
    /// Coherence windows of a Φ device (the oscillators split evenly) [default: 4].
    #[arg(long)]
    windows: Option<u32>,
}

#[derive(clap::Args)]
pub struct CtlArgs {
    /// `<node> <command>`, or `<command>` with --socket.
    #[arg(num_args = 1..=2, required = true, value_name = "[NODE] COMMAND")]
    words: Vec<String>,
    /// The device's ivshmem socket (its control socket is `<socket>.ctl`), for a
    /// device started with `accel serve`.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long, conflicts_with = "socket")]
    dir: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Sub::Serve(s) => serve(s),
        Sub::Ctl(c) => ctl(c),
    }
}

fn spec(a: &ServeArgs) -> Result<Spec> {
    let (units, slots, wrong) = match a.kind {
        Kind::Q => (
            a.qubits.unwrap_or(16),
            a.containers.unwrap_or(2),
            a.oscillators.is_some() || a.windows.is_some(),
        ),
        Kind::Phi => (
            a.oscillators.unwrap_or(64),
            a.windows.unwrap_or(4),
            a.qubits.is_some() || a.containers.is_some(),
        ),
    };
    if wrong {
        bail!("a Q device takes --qubits and --containers, a Φ device --oscillators and --windows");
    }
    Spec::new(a.kind, units, slots)
}

fn serve(a: ServeArgs) -> Result<()> {
    let spec = spec(&a)?;
    let stop = accel::ivshmem::stop_on_signals();
    let mut d = Daemon::new(spec, &a.socket)?;
    let (u, s) = spec.kind.unit_names();
    println!(
        "xdv: accel {} device ({} {u} in {} {s}) ready on {} (ctl {})",
        spec.kind.name(),
        spec.units,
        spec.slots,
        d.socket().display(),
        d.ctl_socket().display()
    );
    std::io::stdout().flush()?;
    let r = d.run(stop);
    drop(d); // removes both sockets
    eprintln!("xdv: accel device on {} stopped", a.socket.display());
    r
}

fn ctl(a: CtlArgs) -> Result<()> {
    let (socket, what, cmd) = match (&a.socket, a.words.as_slice()) {
        (Some(s), [cmd]) => (s.clone(), format!("device {}", s.display()), cmd),
        (Some(_), _) => bail!("with --socket give only the command, e.g. `ctl --socket P status`"),
        (None, [node, cmd]) => {
            let id: u32 = node.parse().with_context(|| {
                format!("bad node `{node}` (want a node id, e.g. `ctl 2 fail`)")
            })?;
            let st = ClusterState::load(&super::cluster::dir(a.dir.clone()))?;
            (node_socket(&st, id)?, format!("node {id}'s device"), cmd)
        }
        (None, _) => {
            bail!("give a node and a command (`ctl 2 fail`) or --socket PATH and a command")
        }
    };
    cmd.parse::<CtlCmd>()?;
    let ctl_socket = accel::ctl_path(&socket);
    let answer = accel::ctl(&ctl_socket, cmd).context(what)?;
    println!("{answer}");
    Ok(())
}

/// Node `id`'s device socket, or why it has none.
fn node_socket(st: &ClusterState, id: u32) -> Result<PathBuf> {
    let n = st.node(id)?;
    if n.accel.is_none() {
        bail!(
            "node {id} has no accelerator (start the cluster with e.g. `cargo xdv up --accel {id}=q`)"
        );
    }
    let socket = st.path(id, "accel.sock");
    if !n.accel_pid.is_some_and(xdv::cluster::alive) {
        bail!(
            "node {id}'s device process is not running (its log: {}; `cargo xdv kill {id}` then `cargo xdv start {id}` starts it again)",
            st.path(id, "accel.log").display()
        );
    }
    Ok(socket)
}
