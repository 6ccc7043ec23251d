//! Host side of the Q and Φ accelerators on QEMU (`docs/accel.md`): the ivshmem
//! server a node's `ivshmem-doorbell` device connects to ([`ivshmem`]), and the
//! device process serving the ring protocol over its shared memory ([`daemon`]).
//! The unsafe code (memfd, mmap, eventfd, SCM_RIGHTS) is all in [`ivshmem`].

pub mod daemon;
pub mod ivshmem;

pub use daemon::{DeviceGuard, Spec, ctl, ctl_path, parse_kind, spawn};

/// QEMU arguments attaching the device served on `socket` as an `ivshmem-doorbell`
/// with one vector per interrupt cause.
pub fn qemu_args(socket: &std::path::Path, index: usize) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,path={},id=accel{index}", socket.display()),
        "-device".into(),
        format!(
            "ivshmem-doorbell,chardev=accel{index},vectors={}",
            xdv_accel::regs::VECTORS
        ),
    ]
}

/// Starts `xdv accel serve` (this executable) for a `kind` device on `socket`,
/// its output in `log`, and waits until it answers on its control socket. With
/// `detached` it gets its own process group (it outlives this process: the cluster
/// stops it by pid); otherwise it gets SIGTERM when this process dies.
pub fn start_process(
    kind: xdv_accel::regs::Kind,
    socket: &std::path::Path,
    log: &std::path::Path,
    detached: bool,
) -> anyhow::Result<std::process::Child> {
    use anyhow::Context;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let exe = std::env::current_exe().context("locating the xdv binary")?;
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d)?;
    }
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "accel",
        "serve",
        "--kind",
        daemon::kind_arg(kind),
        "--socket",
    ])
    .arg(socket)
    .stdin(std::process::Stdio::null())
    .stdout(out.try_clone()?)
    .stderr(out);
    if detached {
        cmd.process_group(0);
    } else {
        ivshmem::term_with_parent(&mut cmd);
    }
    let mut child = cmd
        .spawn()
        .context("starting the accelerator device process")?;
    let ctl_socket = ctl_path(socket);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the {} device process exited ({status}) before it was ready; its log: {}",
                kind.name(),
                log.display()
            );
        }
        if ctl(&ctl_socket, "status").is_ok() {
            return Ok(child);
        }
        if Instant::now() > end {
            let _ = child.kill();
            anyhow::bail!(
                "the {} device process did not answer on {} within 10 s; its log: {}",
                kind.name(),
                ctl_socket.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks process `pid` to stop (SIGTERM: the device removes its sockets), waits up
/// to 3 s, then SIGKILLs it.
pub fn terminate(pid: u32) {
    use std::time::{Duration, Instant};
    let sig = |s: &str| {
        let _ = std::process::Command::new("kill")
            .args([s, &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    };
    sig("-TERM");
    let end = Instant::now() + Duration::from_secs(3);
    while crate::cluster::alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    if crate::cluster::alive(pid) {
        sig("-KILL");
    }
}
