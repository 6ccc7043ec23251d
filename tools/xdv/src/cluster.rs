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
//!
//! Ports: node `n`'s management port is `127.0.0.1:(MGMT_HOST_PORT_BASE + n)` (17200+n),
//! forwarded by QEMU user networking (restrict=on) to 10.0.2.15:7200 in the guest
//! (second NIC). Peer NICs are on the switch (`cargo xdv switch`, started by `up`) with
//! address 10.0.0.n/24; peers talk TCP on port 7100.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Read, Write};
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub nodes: Vec<NodeSpec>,
    pub switch_pid: Option<u32>,
    pub switch_dir: PathBuf,
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

    pub fn node(&self, id: u32) -> Result<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let ids: Vec<String> = self.nodes.iter().map(|n| n.id.to_string()).collect();
            anyhow!("no node {id} in this cluster (nodes: {})", ids.join(", "))
        })
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

fn qemu_binary() -> Result<&'static str> {
    let bin = "qemu-system-x86_64";
    match Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(bin),
        Err(_) => {
            bail!("`{bin}` not found: install it with `sudo apt-get install -y qemu-system-x86`")
        }
    }
}

/// QEMU arguments for one node.
pub fn qemu_args(st: &ClusterState, n: &NodeSpec) -> Vec<String> {
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
        "-kernel".into(),
        st.kernel.display().to_string(),
        "-append".into(),
        n.cmdline.clone(),
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
    a.extend([
        "-netdev".into(),
        crate::switch::qemu_netdev_arg(&st.switch_dir, id as u16, "peer"),
    ]);
    a.extend([
        "-device".into(),
        format!("virtio-net-pci,netdev=peer,mac=52:54:00:00:00:{id:02x},disable-legacy=on"),
        "-netdev".into(),
        format!(
            "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{}-10.0.2.15:{GUEST_MGMT_PORT}",
            MGMT_HOST_PORT_BASE + id as u16
        ),
        "-device".into(),
        format!("virtio-net-pci,netdev=mgmt,mac=52:54:00:00:01:{id:02x},disable-legacy=on"),
    ]);
    if let Some(p) = &n.provision {
        a.extend(["-initrd".into(), p.display().to_string()]);
    }
    a
}

/// Starts node `id` (detached, own process group) on its existing RAM file.
pub fn start_node(st: &mut ClusterState, id: u32) -> Result<u32> {
    let qemu = qemu_binary()?;
    let n = st.node(id)?.clone();
    if let Some(pid) = n.pid.filter(|&p| alive(p)) {
        bail!("node {id} is already running (pid {pid})");
    }
    for ext in ["sock", "qmp"] {
        let _ = std::fs::remove_file(st.path(id, ext));
    }
    let args = qemu_args(st, &n);
    let err = std::fs::File::create(st.path(id, "qemu.err"))?;
    let child = Command::new(qemu)
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
    st.node_mut(id)?.pid = Some(pid);
    st.save()?;
    Ok(pid)
}

/// Stops node `id`: `quit` over QMP, SIGKILL after `grace`. With `hard`, SIGKILL at once.
pub fn stop_node(st: &mut ClusterState, id: u32, hard: bool, grace: Duration) -> Result<bool> {
    let Some(pid) = st.node(id)?.pid else {
        return Ok(false);
    };
    if !alive(pid) {
        st.node_mut(id)?.pid = None;
        st.save()?;
        return Ok(false);
    }
    if !hard {
        let _ = qmp_quit(&st.path(id, "qmp"));
        let end = Instant::now() + grace;
        while alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if alive(pid) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    st.node_mut(id)?.pid = None;
    st.save()?;
    Ok(true)
}

fn qmp_quit(sock: &Path) -> Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut greeting = [0u8; 4096];
    let _ = s.read(&mut greeting)?;
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n")?;
    let _ = s.read(&mut greeting);
    Ok(())
}

/// The last line of node `id`'s serial log that starts with `prefix`.
pub fn last_line_with(st: &ClusterState, id: u32, prefix: &str) -> Option<String> {
    let f = std::fs::File::open(st.path(id, "log")).ok()?;
    std::io::BufReader::new(f)
        .lines()
        .map_while(|l| l.ok())
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| l.starts_with(prefix))
        .last()
}

/// Attaches this terminal to node `id`'s serial console until Ctrl-] is typed.
pub fn attach_console(st: &ClusterState, id: u32) -> Result<()> {
    let sock = st.path(id, "sock");
    let stream = std::os::unix::net::UnixStream::connect(&sock).with_context(|| {
        format!(
            "node {id} console {} (is the node running?)",
            sock.display()
        )
    })?;
    eprintln!("[attached to node {id}; type Ctrl-] to detach]");
    let mut rd = stream.try_clone()?;
    let out = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        while let Ok(n) = rd.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut wr = stream;
    let mut stdin = std::io::stdin();
    let mut byte = [0u8; 1];
    while stdin.read(&mut byte)? == 1 {
        if byte[0] == 0x1d {
            break;
        }
        let b = if byte[0] == b'\n' { b'\r' } else { byte[0] };
        wr.write_all(&[b])?;
    }
    let _ = wr.shutdown(std::net::Shutdown::Both);
    let _ = out.join();
    eprintln!("\n[detached from node {id}]");
    Ok(())
}

/// Starts the switch for `ports` nodes as a detached `xdv switch` process.
pub fn start_switch(st: &mut ClusterState, ports: u32, seed: u64) -> Result<u32> {
    std::fs::create_dir_all(&st.switch_dir)?;
    let exe = std::env::current_exe().context("locating the xdv binary")?;
    let log = std::fs::File::create(st.dir.join("switch.log"))?;
    let child = Command::new(exe)
        .args([
            "switch",
            "--ports",
            &ports.to_string(),
            "--seed",
            &seed.to_string(),
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

/// Stops the switch process.
pub fn stop_switch(st: &mut ClusterState) {
    if let Some(pid) = st.switch_pid.take() {
        let _ = crate::switch::control(&st.switch_dir, "shutdown");
        let end = Instant::now() + Duration::from_secs(3);
        while alive(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    let _ = st.save();
}

/// One status line for node `id`: process state and its ready line.
pub fn node_line(st: &ClusterState, n: &NodeSpec) -> String {
    let running = n.pid.is_some_and(alive);
    let ready = last_line_with(st, n.id, "xdv: ready");
    let state = match (running, &ready) {
        (false, _) => "stopped".to_string(),
        (true, None) => "booting".to_string(),
        (true, Some(l)) => format!("ready ({})", l.trim_start_matches("xdv: ready ")),
    };
    format!(
        "node {:<2} {:<44} peer 10.0.0.{:<3} mgmt 127.0.0.1:{} log {}",
        n.id,
        state,
        n.id,
        MGMT_HOST_PORT_BASE + n.id as u16,
        st.path(n.id, "log").display()
    )
}
