//! Local cluster orchestration: N QEMU nodes and the switch between them, as detached
//! processes described by a state file, so `up`, `down`, `console`, `kill`, `start`
//! and `status` are separate commands.
//!
//! Per node `n` (1-based) in the run directory (default `target/xdv/cluster`):
//! - `node<n>.ram`  guest RAM (shared memory-backend file: audit + Raft regions)
//! - `node<n>.log`  everything the node printed on COM1
//! - `node<n>.sock` COM1 as a unix socket (`cargo xdv console <n>` attaches to it)
//! - `node<n>.qmp`  QMP socket (clean shutdown)
//! - `node<n>.prov` provisioning module (`-initrd`), when the cluster uses one
//! - `node<n>.accel.sock`, `.accel.sock.ctl`, `.accel.log` the node's accelerator
//!   device (`xdv accel serve`), when it has one: started before its QEMU, kept
//!   across `kill`/`start` of the node, stopped by `down`
//!
//! Ports: node `n`'s management port is `127.0.0.1:(MGMT_HOST_PORT_BASE + n)` (17200+n),
//! forwarded by QEMU user networking (restrict=on) to 10.0.2.15:7200 in the guest
//! (second NIC). Peer NICs are on the switch (`cargo xdv switch`, started by `up`) with
//! address 10.0.0.n/24; peers talk TCP on port 7100.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use xdv_net::wire::{MGMT_HOST_PORT_BASE, MGMT_TCP_PORT as GUEST_MGMT_PORT};
/// Most nodes `up` starts (2 cores, 24 GiB machines: TCG nodes are CPU-bound).
pub const MAX_NODES: u32 = 9;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: u32,
    pub smp: u32,
    pub mem_mib: u32,
    pub cmdline: String,
    pub provision: Option<PathBuf>,
    pub pid: Option<u32>,
    /// Host port forwarded to the node's management listener; 0 (older state files)
    /// means `MGMT_HOST_PORT_BASE + id`.
    #[serde(default)]
    pub mgmt_port: u16,
    /// Length of `node<n>.log` when this boot started: status reads only what this boot
    /// printed, never a ready line of the previous boot.
    #[serde(default)]
    pub log_offset: u64,
    /// Accelerator kind (`q`, `phi`) attached as an `ivshmem-doorbell`, if any.
    #[serde(default)]
    pub accel: Option<String>,
    /// Pid of the accelerator's device process (detached, like QEMU).
    #[serde(default)]
    pub accel_pid: Option<u32>,
    /// The Linux bridge the peer NIC is on (a TAP device, [`crate::bridge`]); none:
    /// the cluster's host switch.
    #[serde(default)]
    pub bridge: Option<crate::bridge::Bridge>,
    /// A machine booted with no TFTP entry (`join --unprovisioned`): it runs in
    /// discovery mode and is not a member until `join --mac` admits it.
    #[serde(default)]
    pub discovering: bool,
}

impl NodeSpec {
    /// The host port of this node's management API.
    pub fn mgmt_port(&self) -> u16 {
        if self.mgmt_port != 0 {
            self.mgmt_port
        } else {
            MGMT_HOST_PORT_BASE.saturating_add(self.id as u16)
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub nodes: Vec<NodeSpec>,
    pub switch_pid: Option<u32>,
    pub switch_dir: PathBuf,
    /// Seed of the switch's fault generator (kept so `start` and `up --resume` restart
    /// the same switch).
    #[serde(default = "one")]
    pub seed: u64,
    /// Extra kernel command-line words `up` gave every node.
    #[serde(default)]
    pub extra_cmdline: String,
    /// The members the cluster started with (every node boots with `genesis=` them,
    /// so a node that joins later starts from the same genesis state).
    #[serde(default)]
    pub genesis: Vec<u32>,
    /// Every node's NIC model and how it boots (kept so `start` and `up --resume` boot
    /// the same machines).
    #[serde(default)]
    pub machine: Machine,
}

/// The hardware of every node of a cluster and how it boots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    #[serde(default)]
    pub nic: crate::qemu::NicModel,
    /// Boot over the network from this TFTP root (`up --boot pxe`) instead of
    /// `-kernel`.
    #[serde(default)]
    pub pxe: Option<crate::pxe::PxeBoot>,
}

fn one() -> u64 {
    1
}

pub fn default_dir() -> PathBuf {
    workspace_root().join("target/xdv/cluster")
}

/// The repository root (where the workspace Cargo.toml is).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or(here)
}

/// File-name suffixes of the per-node files in a cluster directory.
const NODE_FILE_EXTS: &[&str] = &[
    "ram",
    "log",
    "sock",
    "qmp",
    "prov",
    "qemu.err",
    "accel.sock",
    "accel.sock.ctl",
    "accel.log",
    "vars",
    "console.lock",
];
/// Other files `up` writes into a cluster directory.
const CLUSTER_FILES: &[&str] = &[
    "cluster.json",
    "cluster.json.tmp",
    "keys.json",
    "quotas.json",
    "quotas.json.tmp",
    "switch.log",
];

/// Every file of a cluster in `dir` (state, keys, RAM files, logs, sockets, the switch
/// directory `net`), sorted. Empty when `dir` holds no cluster. Files XDV did not write
/// are never listed, so [`wipe`] cannot remove them.
pub fn cluster_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            CLUSTER_FILES.contains(&name.as_str())
                || name == "net"
                || name.strip_prefix("node").is_some_and(|rest| {
                    NODE_FILE_EXTS.iter().any(|ext| {
                        rest.strip_suffix(ext)
                            .and_then(|r| r.strip_suffix('.'))
                            .is_some_and(|id| {
                                !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
                            })
                    })
                })
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Removes every file [`cluster_files`] lists; returns how many.
pub fn wipe(dir: &Path) -> Result<usize> {
    let files = cluster_files(dir);
    for f in &files {
        let r = if f.is_dir() {
            std::fs::remove_dir_all(f)
        } else {
            std::fs::remove_file(f)
        };
        r.with_context(|| format!("removing {}", f.display()))?;
    }
    Ok(files.len())
}

impl ClusterState {
    fn file(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    pub fn load(dir: &Path) -> Result<ClusterState> {
        let f = Self::file(dir);
        let text = std::fs::read_to_string(&f).with_context(|| {
            format!(
                "no cluster at {} (start one with `cargo xdv up`)",
                dir.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("corrupt cluster state {}", f.display()))
    }

    pub fn save(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join("cluster.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, Self::file(&self.dir))?;
        Ok(())
    }

    /// Node `id`, or an error naming the members.
    pub fn node(&self, id: u32) -> Result<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            anyhow!(
                "node {id} is not a member of this cluster (members: {})",
                self.member_list()
            )
        })
    }

    /// "1, 2, 3".
    pub fn member_list(&self) -> String {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.to_string()).collect();
        ids.join(", ")
    }

    fn node_mut(&mut self, id: u32) -> Result<&mut NodeSpec> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    pub fn path(&self, id: u32, ext: &str) -> PathBuf {
        self.dir.join(format!("node{id}.{ext}"))
    }

    /// Ids of the nodes whose QEMU is running.
    pub fn running(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|n| n.pid.is_some_and(alive))
            .map(|n| n.id)
            .collect()
    }

    /// Ids of the running nodes whose process is really their QEMU (not a reused pid).
    pub fn own_running(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|n| {
                n.pid
                    .is_some_and(|p| alive(p) && runs_with(p, &self.path(n.id, "ram")))
            })
            .map(|n| n.id)
            .collect()
    }

    pub fn switch_running(&self) -> bool {
        self.switch_pid.is_some_and(alive)
    }

    /// Node `id`'s management port if it is a member and its QEMU runs; otherwise an
    /// error saying which (at once: nothing is retried).
    pub fn running_node_port(&self, id: u32) -> Result<u16> {
        let n = self.node(id)?;
        if !n.pid.is_some_and(alive) {
            let up = self.running();
            let hint = if up.is_empty() {
                "no node is running; start the cluster with `cargo xdv up --resume`".to_string()
            } else {
                let ids: Vec<String> = up.iter().map(u32::to_string).collect();
                format!("running: {}", ids.join(", "))
            };
            bail!("node {id} is not running (start it with `cargo xdv start {id}`; {hint})");
        }
        Ok(n.mgmt_port())
    }
}

/// Is process `pid` alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// QEMU arguments for one node.
pub fn qemu_args(st: &ClusterState, n: &NodeSpec) -> Result<Vec<String>> {
    let id = n.id;
    let ram = st.path(id, "ram");
    let mut a: Vec<String> = vec![
        "-machine".into(),
        "q35,memory-backend=ram".into(),
        "-object".into(),
        format!(
            "memory-backend-file,id=ram,size={}M,mem-path={},share=on",
            n.mem_mib,
            ram.display()
        ),
        "-accel".into(),
        "tcg".into(),
        "-cpu".into(),
        "max".into(),
        "-m".into(),
        format!("{}M", n.mem_mib),
        "-smp".into(),
        n.smp.to_string(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-chardev".into(),
        format!(
            "socket,id=con,path={},server=on,wait=off,logfile={},logappend=on",
            st.path(id, "sock").display(),
            st.path(id, "log").display()
        ),
        "-serial".into(),
        "chardev:con".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", st.path(id, "qmp").display()),
        "-device".into(),
        "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
    ];
    let peer = match &n.bridge {
        Some(_) => crate::bridge::qemu_netdev_arg(&crate::bridge::tap_name(n.mgmt_port()), "peer"),
        None => crate::switch::qemu_netdev_arg(&st.switch_dir, id as u16, "peer"),
    };
    a.extend(["-netdev".into(), peer]);
    let nic = st.machine.nic;
    let pxe = st.machine.pxe.as_ref();
    // PXE: only the management NIC carries an option ROM and is in the boot order.
    let (peer_opts, mgmt_opts) = if pxe.is_some() {
        ("romfile=", "bootindex=1")
    } else {
        ("", "")
    };
    let tftp = pxe
        .map(|p| format!(",{}", p.netdev_options()))
        .unwrap_or_default();
    a.extend([
        "-device".into(),
        nic.device_arg("peer", &crate::qemu::peer_mac(id as u16), peer_opts),
        "-netdev".into(),
        format!(
            "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{}-10.0.2.15:{GUEST_MGMT_PORT}{tftp}",
            n.mgmt_port()
        ),
        "-device".into(),
        nic.device_arg("mgmt", &crate::qemu::mgmt_mac(id as u16), mgmt_opts),
    ]);
    match pxe {
        // GRUB loads the kernel, command line and module from the TFTP tree.
        Some(p) => a.extend(p.firmware_args(&st.path(id, "vars"))?),
        None => {
            a.extend([
                "-kernel".into(),
                st.kernel.display().to_string(),
                "-append".into(),
                n.cmdline.clone(),
            ]);
            if let Some(p) = &n.provision {
                a.extend(["-initrd".into(), p.display().to_string()]);
            }
        }
    }
    if n.accel.is_some() {
        a.extend(crate::accel::qemu_args(&st.path(id, "accel.sock"), 0));
    }
    Ok(a)
}

/// Starts node `id`'s accelerator device unless it runs (QEMU connects to it at
/// start, so it must be listening first); returns its pid if it was started.
pub fn ensure_accel(st: &mut ClusterState, id: u32) -> Result<Option<u32>> {
    let n = st.node(id)?.clone();
    let Some(kind) = &n.accel else {
        return Ok(None);
    };
    let socket = st.path(id, "accel.sock");
    if n.accel_pid
        .is_some_and(|p| alive(p) && runs_with(p, &socket))
    {
        return Ok(None);
    }
    let kind = crate::accel::parse_kind(kind)?;
    let child = crate::accel::start_process(kind, &socket, &st.path(id, "accel.log"), true)
        .with_context(|| format!("node {id}'s accelerator"))?;
    let pid = child.id();
    // Detached on purpose, like QEMU: `down` stops it by pid.
    std::mem::forget(child);
    st.node_mut(id)?.accel_pid = Some(pid);
    st.save()?;
    Ok(Some(pid))
}

/// Stops every node's accelerator device (after the nodes: a device outlives its
/// node's restarts); returns the ids of the nodes whose device was stopped.
pub fn stop_accels(st: &mut ClusterState) -> Result<Vec<u32>> {
    let mut stopped = Vec::new();
    for i in 0..st.nodes.len() {
        let id = st.nodes[i].id;
        let socket = st.path(id, "accel.sock");
        if let Some(pid) = st.nodes[i].accel_pid.take()
            && alive(pid)
            && runs_with(pid, &socket)
        {
            crate::accel::terminate(pid);
            stopped.push(id);
        }
    }
    st.save()?;
    Ok(stopped)
}

/// Whether 127.0.0.1:`port` can be bound now.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Refuses when `n`'s management port cannot be bound on 127.0.0.1 (QEMU would exit
/// at once with a bare "could not set up host forwarding rule").
pub fn check_port(n: &NodeSpec) -> Result<()> {
    let port = n.mgmt_port();
    if !port_free(port) {
        bail!(
            "node {}'s management port 127.0.0.1:{port} is in use by another program \
             (another cluster?); pick other ports with `cargo xdv up --fresh \
             --mgmt-port-base <P>` (node N listens on P + N)",
            n.id
        );
    }
    Ok(())
}

/// Starts node `id` (detached, own process group) on its existing RAM file. The switch
/// must be running ([`ensure_switch`]).
pub fn start_node(st: &mut ClusterState, id: u32) -> Result<u32> {
    crate::prereq::ensure(&[crate::prereq::Need::Qemu])?;
    let n = st.node(id)?.clone();
    if let Some(pid) = n.pid.filter(|&p| alive(p)) {
        bail!("node {id} is already running (pid {pid})");
    }
    for ext in ["sock", "qmp"] {
        let _ = std::fs::remove_file(st.path(id, ext));
    }
    check_port(&n)?;
    ensure_accel(st, id)?;
    let log_offset = std::fs::metadata(st.path(id, "log")).map_or(0, |m| m.len());
    let args = qemu_args(st, &n)?;
    let tap = crate::bridge::tap_name(n.mgmt_port());
    if let Some(b) = &n.bridge {
        crate::bridge::prepare_tap(b, &tap).with_context(|| format!("node {id}'s peer NIC"))?;
    }
    let err = std::fs::File::create(st.path(id, "qemu.err"))?;
    let child = Command::new(crate::qemu::QEMU)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting QEMU for node {id}"))?;
    let pid = child.id();
    // The child is detached on purpose: `down`/`kill` stop it by pid.
    std::mem::forget(child);
    let spec = st.node_mut(id)?;
    spec.pid = Some(pid);
    spec.log_offset = log_offset;
    st.save()?;
    if let Some(b) = &n.bridge {
        crate::bridge::attach(b, &tap, pid).with_context(|| format!("node {id}'s peer NIC"))?;
    }
    Ok(pid)
}

/// Why node `id`'s QEMU exited, from its `qemu.err`: its last non-empty lines
/// (at most 3), or `None` when it wrote nothing.
pub fn exit_reason(st: &ClusterState, id: u32) -> Option<String> {
    let err = std::fs::read_to_string(st.path(id, "qemu.err")).ok()?;
    let lines: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    (!tail.is_empty()).then_some(tail)
}

/// How long `down` waits for QEMU to quit after the QMP `quit` before SIGTERM.
pub const STOP_QUIT_GRACE: Duration = Duration::from_secs(3);
/// How long after SIGTERM before SIGKILL.
pub const STOP_TERM_GRACE: Duration = Duration::from_secs(2);

/// How a node was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// QEMU quit on the QMP `quit` command.
    Quit,
    /// QEMU ignored `quit` (or QMP was unreachable) and exited on SIGTERM.
    Terminated,
    /// It was killed with SIGKILL (`kill`, or it ignored SIGTERM too).
    Killed,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::NotRunning => "was not running",
            Stopped::Quit => "stopped (QMP quit)",
            Stopped::Terminated => "stopped (SIGTERM: QMP quit was not answered)",
            Stopped::Killed => "killed (SIGKILL)",
        })
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Does process `pid` run with `needle` among its arguments? (A pid in a state file can
/// be reused by another program after the node exited or the host rebooted: it is
/// never signalled unless it is ours.)
pub fn runs_with(pid: u32, needle: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = needle.as_os_str().as_encoded_bytes();
    cmdline
        .split(|&b| b == 0)
        .any(|arg| arg.windows(needle.len()).any(|w| w == needle))
}

/// Waits until none of `pids` is alive or `deadline`; calls `done` for each one that
/// exits, in the order they exit.
fn wait_exits(pids: &mut Vec<(u32, u32)>, deadline: Instant, done: &mut dyn FnMut(u32)) {
    loop {
        pids.retain(|&(id, pid)| {
            let gone = !alive(pid);
            if gone {
                done(id);
            }
            !gone
        });
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Stops nodes `ids` together: QMP `quit` to all of them, SIGTERM to those still
/// running after [`STOP_QUIT_GRACE`], SIGKILL after [`STOP_TERM_GRACE`]. Calls
/// `progress(id, how, elapsed)` as each node stops. With `hard`, SIGKILL at once.
pub fn stop_nodes(
    st: &mut ClusterState,
    ids: &[u32],
    hard: bool,
    progress: &mut dyn FnMut(u32, Stopped, Duration),
) -> Result<()> {
    let t0 = Instant::now();
    let mut pids = Vec::new();
    for &id in ids {
        match st.node(id)?.pid.filter(|&p| alive(p)) {
            Some(pid) if runs_with(pid, &st.path(id, "ram")) => pids.push((id, pid)),
            Some(pid) => {
                eprintln!(
                    "xdv: pid {pid} is no longer node {id}'s QEMU (reused by another program); not signalled"
                );
                progress(id, Stopped::NotRunning, Duration::ZERO)
            }
            None => progress(id, Stopped::NotRunning, Duration::ZERO),
        }
    }
    let stages: &[(Stopped, Option<&str>, Duration)] = if hard {
        &[(Stopped::Killed, Some("-KILL"), Duration::from_secs(5))]
    } else {
        &[
            (Stopped::Quit, None, STOP_QUIT_GRACE),
            (Stopped::Terminated, Some("-TERM"), STOP_TERM_GRACE),
            (Stopped::Killed, Some("-KILL"), Duration::from_secs(5)),
        ]
    };
    for &(how, sig, grace) in stages {
        if pids.is_empty() {
            break;
        }
        for &(id, pid) in &pids {
            match sig {
                None => {
                    // A node whose QMP does not answer gets SIGTERM in the next stage.
                    let _ = qmp_quit(&st.path(id, "qmp"));
                }
                Some(sig) => signal(pid, sig),
            }
        }
        wait_exits(&mut pids, Instant::now() + grace, &mut |id| {
            progress(id, how, t0.elapsed())
        });
    }
    for &id in ids {
        let n = st.node_mut(id)?;
        n.pid = None;
        if let Some(b) = &n.bridge {
            crate::bridge::remove_tap(b, &crate::bridge::tap_name(n.mgmt_port()));
        }
    }
    st.save()?;
    if let Some(&(id, pid)) = pids.first() {
        bail!("node {id} (pid {pid}) survived SIGKILL");
    }
    Ok(())
}

/// Stops node `id` (see [`stop_nodes`]); false if it was not running.
pub fn stop_node(st: &mut ClusterState, id: u32, hard: bool) -> Result<bool> {
    let mut was = false;
    stop_nodes(st, &[id], hard, &mut |_, how, _| {
        was = how != Stopped::NotRunning
    })?;
    Ok(was)
}

/// QMP handshake, then `quit`; returns once QEMU answered `quit` or closed the socket.
/// Each step waits at most 1 s: a QEMU that does not answer is left to SIGTERM.
fn qmp_quit(sock: &Path) -> Result<()> {
    let s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut rd = std::io::BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut line = String::new();
    rd.read_line(&mut line)?; // greeting {"QMP": ...}
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    line.clear();
    rd.read_line(&mut line)?; // {"return": {}}
    w.write_all(b"{\"execute\":\"quit\"}\n")?;
    // The answer, a SHUTDOWN event, or EOF as QEMU exits: any of them means it got it.
    line.clear();
    let _ = rd.read_line(&mut line);
    Ok(())
}

/// The last line that node `id` printed in its current boot (after the log offset the
/// boot started at) that starts with `prefix`.
pub fn last_line_with(st: &ClusterState, id: u32, prefix: &str) -> Option<String> {
    use std::io::Seek;
    let offset = st.node(id).map_or(0, |n| n.log_offset);
    let mut f = std::fs::File::open(st.path(id, "log")).ok()?;
    f.seek(std::io::SeekFrom::Start(offset)).ok()?;
    std::io::BufReader::new(f)
        .lines()
        .map_while(|l| l.ok())
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| l.starts_with(prefix))
        .last()
}

/// Attaches this terminal to node `id`'s serial console until Ctrl-] is typed, the
/// node goes, or another client holds it (refused): [`crate::console`].
pub fn attach_console(st: &ClusterState, id: u32) -> Result<()> {
    crate::console::attach(&st.path(id, "sock"), &st.path(id, "console.lock"), id)
}

/// Ports of a local cluster's switch: room for nodes that join later (`cargo xdv join`).
pub const SWITCH_PORTS: u32 = 16;

/// Starts the switch (a port per node id up to [`SWITCH_PORTS`], the cluster's seed)
/// as a detached `xdv switch` process.
pub fn start_switch(st: &mut ClusterState) -> Result<u32> {
    std::fs::create_dir_all(&st.switch_dir)?;
    let ports = st
        .nodes
        .iter()
        .map(|n| n.id)
        .max()
        .unwrap_or(0)
        .max(SWITCH_PORTS);
    let exe = std::env::current_exe().context("locating the xdv binary")?;
    let log = std::fs::File::create(st.dir.join("switch.log"))?;
    let _ = std::fs::remove_file(crate::switch::control_socket_path(&st.switch_dir));
    let child = Command::new(exe)
        .args([
            "switch",
            "--ports",
            &ports.to_string(),
            "--seed",
            &st.seed.to_string(),
            "--dir",
        ])
        .arg(&st.switch_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the switch")?;
    let pid = child.id();
    std::mem::forget(child);
    st.switch_pid = Some(pid);
    st.save()?;
    // Wait for its control socket.
    let ctl = crate::switch::control_socket_path(&st.switch_dir);
    let end = Instant::now() + Duration::from_secs(10);
    while !ctl.exists() {
        if Instant::now() > end || !alive(pid) {
            bail!(
                "the switch did not start; see {}",
                st.dir.join("switch.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pid)
}

/// Starts the switch unless it is running; returns its pid if it was started.
pub fn ensure_switch(st: &mut ClusterState) -> Result<Option<u32>> {
    if st.switch_running() {
        return Ok(None);
    }
    start_switch(st).map(Some)
}

/// Stops the switch process.
pub fn stop_switch(st: &mut ClusterState) {
    if let Some(pid) = st
        .switch_pid
        .take()
        .filter(|&p| runs_with(p, &st.switch_dir))
    {
        let _ = crate::switch::control(&st.switch_dir, "shutdown");
        let end = Instant::now() + Duration::from_secs(3);
        while alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            signal(pid, "-KILL");
        }
    }
    let _ = st.save();
}

/// A node's process state, from its pid and the current boot's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    Stopped,
    Booting,
    /// Ready, with the rest of its ready line.
    Ready(String),
}

impl NodeState {
    pub fn of(st: &ClusterState, n: &NodeSpec) -> NodeState {
        if !n.pid.is_some_and(alive) {
            return NodeState::Stopped;
        }
        match last_line_with(st, n.id, "xdv: ready") {
            None => NodeState::Booting,
            Some(l) => NodeState::Ready(l.trim_start_matches("xdv: ready").trim().to_string()),
        }
    }

    /// `stopped`, `booting` or `ready`.
    pub fn word(&self) -> &'static str {
        match self {
            NodeState::Stopped => "stopped",
            NodeState::Booting => "booting",
            NodeState::Ready(_) => "ready",
        }
    }
}

/// One status line for node `id`: process state and its ready line.
pub fn node_line(st: &ClusterState, n: &NodeSpec) -> String {
    let state = match NodeState::of(st, n) {
        NodeState::Ready(l) => format!("ready ({l})"),
        s => s.word().to_string(),
    };
    format!(
        "node {:<2} {:<44} peer 10.0.0.{:<3} mgmt 127.0.0.1:{} log {}",
        n.id,
        state,
        n.id,
        n.mgmt_port(),
        st.path(n.id, "log").display()
    )
}

/// Hash voting's verdict as any answering node's state has it, for `status`: the
/// quarantined nodes (ascending) and the health line's clause naming them (empty when
/// none is).
pub fn quarantine_summary(views: &[&xdv_cluster::mgmt::ClusterView]) -> (Vec<u32>, String) {
    let quarantined: Vec<u32> = views
        .iter()
        .flat_map(|v| v.members.iter().filter(|m| m.quarantined).map(|m| m.node.0))
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    let line = if quarantined.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = quarantined.iter().map(|n| n.to_string()).collect();
        format!(
            "; QUARANTINED node {} (state hash disagreed with the majority)",
            list.join(", ")
        )
    };
    (quarantined, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_with_an_accelerator_gets_the_ivshmem_doorbell() {
        let spec = |id, accel: Option<&str>| NodeSpec {
            id,
            smp: 1,
            mem_mib: 256,
            cmdline: String::new(),
            provision: None,
            pid: None,
            mgmt_port: 0,
            log_offset: 0,
            accel: accel.map(String::from),
            accel_pid: None,
            bridge: None,
            discovering: false,
        };
        let st = ClusterState {
            dir: PathBuf::from("/c"),
            kernel: PathBuf::from("/k"),
            nodes: vec![spec(1, None), spec(2, Some("q"))],
            switch_pid: None,
            switch_dir: PathBuf::from("/c/net"),
            seed: 1,
            extra_cmdline: String::new(),
            genesis: Vec::new(),
            machine: Machine::default(),
        };
        let a2 = qemu_args(&st, &st.nodes[1]).unwrap().join(" ");
        assert!(
            a2.contains("-chardev socket,path=/c/node2.accel.sock,id=accel0 -device ivshmem-doorbell,chardev=accel0,vectors=2"),
            "{a2}"
        );
        assert!(
            !qemu_args(&st, &st.nodes[0])
                .unwrap()
                .join(" ")
                .contains("ivshmem")
        );
        let dir = crate::qemu::temp_dir("accel-files").unwrap();
        for f in [
            "node2.accel.sock",
            "node2.accel.sock.ctl",
            "node2.accel.log",
            "mine.txt",
        ] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        assert_eq!(
            cluster_files(&dir).len(),
            3,
            "the device's files are the cluster's"
        );
    }
}
