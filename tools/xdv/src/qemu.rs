//! QEMU harness: build the kernel image once, boot it with a test command line,
//! capture COM1, enforce timeouts, and map the `isa-debug-exit` status to a result.
//! Every error carries the captured serial log, so a failing `cargo test` shows what
//! the node printed.

use anyhow::{Context, Result, anyhow, bail};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Debian package that provides `qemu-system-x86_64`.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";
pub const QEMU: &str = "qemu-system-x86_64";

/// How the VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// In-kernel test passed (isa-debug-exit 0x10 → status 33).
    Pass,
    /// Test failed, panic, or bad boot data (0x11 → 35).
    Fail,
    /// An exception was reported (0x12 → 37).
    Fault,
    /// `halt` from the console (0x00 → 1).
    Halted,
    /// Any other status (or killed by a signal: `None`).
    Other(Option<i32>),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Pass => f.write_str("test passed (isa-debug-exit 0x10)"),
            Exit::Fail => f.write_str("test failed or panic (isa-debug-exit 0x11)"),
            Exit::Fault => f.write_str("CPU exception (isa-debug-exit 0x12)"),
            Exit::Halted => f.write_str("halted"),
            Exit::Other(Some(0)) => f.write_str("quit (status 0)"),
            Exit::Other(Some(c)) => write!(f, "exit status {c}"),
            Exit::Other(None) => f.write_str("killed by a signal"),
        }
    }
}

impl Exit {
    pub fn from_status(code: Option<i32>) -> Exit {
        match code {
            Some(33) => Exit::Pass,
            Some(35) => Exit::Fail,
            Some(37) => Exit::Fault,
            Some(1) => Exit::Halted,
            other => Exit::Other(other),
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or(here)
}

/// Builds the kernel (release) once per process and returns the boot image's path.
pub fn kernel_image() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    release_once(&BUILT, false)
}

/// The release kernel built with its test hooks (feature `fault-hooks`: the
/// `fault=corrupt-state@MS` boot option and the `fault late-completion` console
/// command), once per process: for the tests of hash voting and of late completions.
/// The image users run ([`kernel_image`]) has no hooks and refuses both.
pub fn kernel_image_with_test_hooks() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    release_once(&BUILT, true)
}

/// The release build of one variant, made the first time `built` is asked.
fn release_once(
    built: &OnceLock<std::result::Result<PathBuf, String>>,
    hooks: bool,
) -> Result<PathBuf> {
    built
        .get_or_init(|| build_kernel_variant(true, false, hooks).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Runs cargo on the kernel workspace; returns the image path. Cargo's output is
/// captured and shown only on failure (tests, benchmarks).
pub fn build_kernel(release: bool) -> Result<PathBuf> {
    build_kernel_with(release, false)
}

/// As [`build_kernel`]; with `progress`, says so first and lets cargo's progress
/// through to stderr (interactive commands: the first build takes minutes).
pub fn build_kernel_with(release: bool, progress: bool) -> Result<PathBuf> {
    build_kernel_variant(release, progress, false)
}

/// Builds the kernel without (`hooks` false: what users run) or with its test hooks
/// and writes its boot image; returns the image's path ([`boot_image_path`] or
/// [`hooks_image_path`]). Both variants share `target/kernel` (only the kernel crate
/// and `xdv-node` differ), so the cargo run and the copy of its output are one step
/// under a lock file: another process building the other variant cannot swap the ELF
/// between them. After a hooks build the plain kernel is linked again (no compile),
/// so [`kernel_path`] is always the image users run (the profiler reads it).
fn build_kernel_variant(release: bool, progress: bool, hooks: bool) -> Result<PathBuf> {
    let root = repo_root();
    let target = root.join("target/kernel");
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let lock_path = target.join(".xdv-build.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let (elf, boot) = (kernel_path(release), boot_image_path(release));
    if hooks {
        run_cargo_build(&target, release, progress, true)?;
        let (hooks_elf, hooks_boot) = (
            elf.with_file_name("xdv-kernel-hooks"),
            hooks_image_path(release),
        );
        std::fs::copy(&elf, &hooks_elf)
            .with_context(|| format!("copying {} to {}", elf.display(), hooks_elf.display()))?;
        write_boot_image(&hooks_elf, &hooks_boot)?;
        run_cargo_build(&target, release, false, false)?;
        // Cargo links its output again even when nothing is compiled; if it ever did
        // not, the plain image would be made from the hooks kernel: refuse that.
        if std::fs::read(&elf)? == std::fs::read(&hooks_elf)? {
            bail!(
                "{} is still the test-hooks kernel after building the plain one",
                elf.display()
            );
        }
        write_boot_image(&elf, &boot)?;
        return Ok(hooks_boot);
    }
    run_cargo_build(&target, release, progress, false)?;
    write_boot_image(&elf, &boot)?;
    Ok(boot)
}

/// One `cargo build` of the kernel workspace into `target` (with `--features
/// fault-hooks` when `hooks`).
fn run_cargo_build(target: &Path, release: bool, progress: bool, hooks: bool) -> Result<()> {
    let root = repo_root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "build",
            "--manifest-path",
            "kernel/image/Cargo.toml",
            "--target-dir",
        ])
        .arg(target)
        // The kernel has its own feature resolution; host RUSTFLAGS (coverage, loom
        // cfgs) must not leak into it.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if release {
        cmd.arg("--release");
    }
    if hooks {
        cmd.args(["--features", "fault-hooks"]);
    }
    if progress {
        eprintln!(
            "xdv: building the kernel ({}{}; the first build takes a few minutes)...",
            if release { "release" } else { "debug" },
            if hooks { ", with test hooks" } else { "" }
        );
        let status = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .context("running cargo to build the kernel")?;
        if !status.success() {
            bail!("kernel build failed ({status}); cargo's errors are above");
        }
    } else {
        let out = cmd.output().context("running cargo to build the kernel")?;
        if !out.status.success() {
            bail!(
                "kernel build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// Where the kernel build puts the ELF (with debug information: for `addr2line`
/// and `tools/profile-guest.py`).
pub fn kernel_path(release: bool) -> PathBuf {
    repo_root()
        .join("target/kernel")
        .join(if release { "release" } else { "debug" })
        .join("xdv-kernel")
}

/// The image every boot uses (QEMU `-kernel`, ISO, PXE): the ELF at [`kernel_path`]
/// without the sections no loader reads ([`crate::elf::boot_image`]), written next
/// to it by [`build_kernel`].
pub fn boot_image_path(release: bool) -> PathBuf {
    kernel_path(release).with_extension("boot")
}

/// The boot image of the kernel with its test hooks ([`kernel_image_with_test_hooks`]).
pub fn hooks_image_path(release: bool) -> PathBuf {
    kernel_path(release).with_file_name("xdv-kernel-hooks.boot")
}

/// Writes `boot` from `elf` unless it is already newer (atomically: a concurrent
/// test process never boots half a file).
fn write_boot_image(elf: &Path, boot: &Path) -> Result<()> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(e), Some(b)) = (modified(elf), modified(boot))
        && b >= e
    {
        return Ok(());
    }
    let bytes =
        std::fs::read(elf).with_context(|| format!("reading the kernel {}", elf.display()))?;
    let image = crate::elf::boot_image(&bytes)
        .with_context(|| format!("making the boot image of {}", elf.display()))?;
    let tmp = boot.with_extension(format!("boot.{}", std::process::id()));
    std::fs::write(&tmp, &image).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, boot).with_context(|| format!("writing {}", boot.display()))?;
    Ok(())
}

/// Checks that QEMU is installed: installs it as root (once per process), otherwise
/// fails at once with the `apt-get` line (`crate::prereq`).
pub fn check_qemu() -> Result<()> {
    static CHECKED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            crate::prereq::ensure(&[crate::prereq::Need::Qemu]).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The NIC model a node gets (both its peer and its management NIC); the kernel
/// drives either, chosen by PCI id (docs/devices.md).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// virtio-net (modern, `disable-legacy=on`).
    #[default]
    Virtio,
    /// Intel 82574 (`e1000e`, PCI 8086:10d3), a NIC real servers have.
    E1000e,
}

impl NicModel {
    /// The `-device` value for a NIC on `netdev` with `mac`; `extra` is appended
    /// (e.g. `romfile=`, `bootindex=1`).
    pub fn device_arg(self, netdev: &str, mac: &str, extra: &str) -> String {
        let base = match self {
            NicModel::Virtio => {
                format!("virtio-net-pci,netdev={netdev},mac={mac},disable-legacy=on")
            }
            NicModel::E1000e => format!("e1000e,netdev={netdev},mac={mac}"),
        };
        if extra.is_empty() {
            base
        } else {
            format!("{base},{extra}")
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000e => "e1000e",
        }
    }
}

/// The peer NIC's MAC for node `id` (role rule in docs/devices.md).
pub fn peer_mac(id: u16) -> String {
    format!("52:54:00:00:00:{id:02x}")
}

/// The management NIC's MAC for node `id`: the one a PXE-booted node boots from.
pub fn mgmt_mac(id: u16) -> String {
    format!("52:54:00:00:01:{id:02x}")
}

/// What to boot.
#[derive(Clone, Debug)]
pub enum Boot {
    /// PVH direct boot of the ELF (`-kernel`).
    Kernel(PathBuf),
    /// BIOS boot of a GRUB ISO (`-cdrom`).
    Cdrom(PathBuf),
    /// Whatever the firmware boots from the devices in `extra` (a NIC with
    /// `bootindex=1` and a TFTP tree for PXE: [`Config::pxe`]).
    Firmware,
}

/// One VM's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub boot: Boot,
    pub smp: u32,
    pub mem_mib: u32,
    pub cmdline: String,
    /// Guest RAM backed by this shared file (the host can read the audit region).
    pub ram_file: Option<PathBuf>,
    /// Exit instead of resetting on a reboot/triple fault.
    pub no_reboot: bool,
    pub extra: Vec<String>,
}

impl Config {
    pub fn kernel(cmdline: &str) -> Result<Config> {
        Ok(Config::kernel_at(kernel_image()?, cmdline))
    }

    /// [`Config::kernel`] booting the kernel with its test hooks
    /// ([`kernel_image_with_test_hooks`]).
    pub fn kernel_with_test_hooks(cmdline: &str) -> Result<Config> {
        Ok(Config::kernel_at(kernel_image_with_test_hooks()?, cmdline))
    }

    /// A configuration booting `image` (already built) with `cmdline`.
    pub fn kernel_at(image: PathBuf, cmdline: &str) -> Config {
        Config {
            boot: Boot::Kernel(image),
            smp: 1,
            mem_mib: 256,
            cmdline: cmdline.into(),
            ram_file: None,
            no_reboot: true,
            extra: Vec::new(),
        }
    }

    /// A node that boots by PXE from `pxe`'s tree through its management NIC
    /// (`model`, MAC [`mgmt_mac`]`(id)`, QEMU user network, port `mgmt_port` forwarded
    /// to the guest's management listener). UEFI keeps its variable store in `vars`.
    pub fn pxe(
        pxe: &crate::pxe::PxeBoot,
        model: NicModel,
        id: u16,
        mgmt_port: u16,
        vars: &Path,
    ) -> Result<Config> {
        let mut cfg = Config::kernel_at(PathBuf::new(), "");
        cfg.boot = Boot::Firmware;
        cfg.extra = pxe.firmware_args(vars)?;
        cfg.extra.extend([
            "-netdev".into(),
            format!(
                "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{mgmt_port}-10.0.2.15:7200,{}",
                pxe.netdev_options()
            ),
            "-device".into(),
            model.device_arg("mgmt", &mgmt_mac(id), "bootindex=1"),
        ]);
        Ok(cfg)
    }

    pub fn smp(mut self, n: u32) -> Config {
        self.smp = n;
        self
    }

    pub fn ram_file(mut self, p: impl Into<PathBuf>) -> Config {
        self.ram_file = Some(p.into());
        self
    }

    /// Adds the peer NIC on switch port `id` (switch sockets in `switch_dir`) and, with
    /// `mgmt_port`, the management NIC forwarded from 127.0.0.1:`mgmt_port` to the
    /// guest's management listener. MACs follow the role rule in docs/devices.md.
    pub fn with_nics(self, switch_dir: &Path, id: u16, mgmt_port: Option<u16>) -> Config {
        self.with_nics_of(NicModel::Virtio, switch_dir, id, mgmt_port)
    }

    /// As [`with_nics`](Self::with_nics), with NICs of `model`.
    pub fn with_nics_of(
        mut self,
        model: NicModel,
        switch_dir: &Path,
        id: u16,
        mgmt_port: Option<u16>,
    ) -> Config {
        self.extra.extend([
            "-netdev".into(),
            crate::switch::qemu_netdev_arg(switch_dir, id, "peer"),
            "-device".into(),
            model.device_arg("peer", &peer_mac(id), ""),
        ]);
        if let Some(port) = mgmt_port {
            self.extra.extend([
                "-netdev".into(),
                format!("user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:7200"),
                "-device".into(),
                model.device_arg("mgmt", &mgmt_mac(id), ""),
            ]);
            if let Ok(dir) = std::env::var("XDV_PCAP_DIR") {
                self.extra.extend([
                    "-object".into(),
                    format!("filter-dump,id=dump,netdev=mgmt,file={dir}/mgmt-{id}-{port}.pcap"),
                ]);
            }
        }
        self
    }

    /// Attaches an accelerator: an `ivshmem-doorbell` connected to the device served
    /// on `socket` (start it first, e.g. with [`start_accel`]).
    pub fn with_accel(mut self, socket: &Path) -> Config {
        let index = self
            .extra
            .iter()
            .filter(|a| a.starts_with("ivshmem-doorbell"))
            .count();
        self.extra.extend(crate::accel::qemu_args(socket, index));
        self
    }

    /// QEMU arguments (serial on stdio).
    pub fn args(&self) -> Vec<String> {
        let mem = format!("{}M", self.mem_mib);
        let mut a: Vec<String> = Vec::new();
        match &self.ram_file {
            Some(f) => {
                a.extend([
                    "-machine".into(),
                    "q35,memory-backend=ram".into(),
                    "-object".into(),
                ]);
                a.push(format!(
                    "memory-backend-file,id=ram,size={mem},mem-path={},share=on",
                    f.display()
                ));
            }
            None => a.extend(["-machine".into(), "q35".into()]),
        }
        a.extend(
            [
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-m",
                &mem,
                "-smp",
                &self.smp.to_string(),
            ]
            .map(String::from),
        );
        match &self.boot {
            Boot::Kernel(k) => a.extend([
                "-kernel".into(),
                k.display().to_string(),
                "-append".into(),
                self.cmdline.clone(),
            ]),
            Boot::Cdrom(iso) => a.extend([
                "-cdrom".into(),
                iso.display().to_string(),
                "-boot".into(),
                "d".into(),
            ]),
            Boot::Firmware => {}
        }
        a.extend(["-display", "none", "-monitor"].map(String::from));
        a.push(monitor_arg());
        a.extend(["-serial", "stdio"].map(String::from));
        a.extend(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"].map(String::from));
        if self.no_reboot {
            a.push("-no-reboot".into());
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// QEMU's monitor: none, or with `XDV_QEMU_MONITOR=DIR` (a debugging aid, e.g. for
/// sampling the vCPUs' instruction pointers with `info registers -a` while a benchmark
/// runs: `tools/profile-guest.py`) a unix socket `DIR/vmN.sock`, N counting the VMs this
/// process started from 1.
fn monitor_arg() -> String {
    static VMS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    match std::env::var_os("XDV_QEMU_MONITOR") {
        Some(dir) => {
            let n = VMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let sock = std::path::Path::new(&dir).join(format!("vm{n}.sock"));
            format!("unix:{},server,nowait", sock.display())
        }
        None => "none".into(),
    }
}

/// A running VM with its serial output captured.
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    serial: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    exit: Option<Exit>,
}

impl Vm {
    pub fn spawn(cfg: &Config) -> Result<Vm> {
        check_qemu()?;
        let mut child = Command::new(QEMU)
            .args(cfg.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting QEMU")?;
        let mut out = child.stdout.take().context("QEMU stdout")?;
        let serial = Arc::new(Mutex::new(Vec::new()));
        let sink = serial.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        let stdin = child.stdin.take();
        Ok(Vm {
            child,
            stdin,
            serial,
            reader: Some(reader),
            exit: None,
        })
    }

    /// Everything printed so far, `\r` removed.
    pub fn output(&self) -> String {
        let raw = self
            .serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        String::from_utf8_lossy(&raw).replace('\r', "")
    }

    fn fail(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "{what}\n----- serial log -----\n{}\n----- end of serial log -----",
            self.output()
        )
    }

    /// Waits until the serial output contains `needle` (after `from` bytes).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                self.exit = Some(Exit::from_status(status.code()));
                return Err(self.fail(&format!(
                    "QEMU exited ({status}) before printing {needle:?}"
                )));
            }
            if Instant::now() > end {
                return Err(self.fail(&format!(
                    "timed out after {timeout:?} waiting for {needle:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Number of times `needle` occurs in the output so far.
    pub fn count(&self, needle: &str) -> usize {
        self.output().matches(needle).count()
    }

    /// Types `cmd` and waits until `needle` appears after the console's echo of the
    /// line (so a prompt still being printed for the previous command never counts);
    /// returns the whole output so far.
    pub fn command(&mut self, cmd: &str, needle: &str, timeout: Duration) -> Result<String> {
        let start = self.output().len();
        self.send_line(cmd)?;
        let end = Instant::now() + timeout;
        let echo = format!("{cmd}\n");
        let seen = |out: &str| -> bool {
            let tail = out.get(start..).unwrap_or("");
            tail.find(&echo)
                .is_some_and(|at| tail[at + echo.len()..].contains(needle))
        };
        while !seen(&self.output()) {
            if Instant::now() > end {
                return Err(self.fail(&format!("`{cmd}`: no {needle:?} within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self.output())
    }

    /// Types a line on the console (CR, as a terminal sends).
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\r")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Exit> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                let e = Exit::from_status(status.code());
                self.exit = Some(e);
                return Ok(e);
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                return Err(self.fail(&format!(
                    "timed out after {timeout:?} waiting for QEMU to exit"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for an exit and checks it is `want`.
    pub fn expect_exit(&mut self, want: Exit, timeout: Duration) -> Result<String> {
        let got = self.wait_exit(timeout)?;
        if got != want {
            return Err(self.fail(&format!("expected exit {want:?}, got {got:?}")));
        }
        Ok(self.output())
    }

    /// SIGKILLs the VM (crash simulation).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exit = Some(Exit::Other(None));
    }

    /// Returns a descriptive error with the serial log.
    pub fn error(&self, what: &str) -> anyhow::Error {
        self.fail(what)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Boots `cmdline` with `test=<name>`, waits for the exit, checks it. Returns the log.
pub fn run_test(name: &str, smp: u32, want: Exit) -> Result<String> {
    let cfg = Config::kernel(&format!("test={name}"))?.smp(smp);
    let mut vm = Vm::spawn(&cfg)?;
    vm.expect_exit(want, Duration::from_secs(120))
}

/// Starts a `kind` device (default shape) in this process on `socket` for a VM
/// built with [`Config::with_accel`]; it stops and removes its sockets when the
/// guard is dropped.
pub fn start_accel(
    kind: xdv_accel::regs::Kind,
    socket: &Path,
) -> Result<crate::accel::DeviceGuard> {
    crate::accel::spawn(crate::accel::Spec::default_for(kind), socket)
}

/// A unique temporary directory for one test.
pub fn temp_dir(tag: &str) -> Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = repo_root()
        .join("target/xdv/tmp")
        .join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Writes a GRUB (Multiboot2) BIOS ISO booting `kernel` with `cmdline`.
pub fn make_iso(kernel: &Path, cmdline: &str, out: &Path) -> Result<()> {
    crate::prereq::ensure(&[crate::prereq::Need::Grub])?;
    let staging = out.with_extension("isodir");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("boot/grub"))?;
    std::fs::copy(kernel, staging.join("boot/xdv-kernel"))?;
    std::fs::write(
        staging.join("boot/grub/grub.cfg"),
        format!(
            "set timeout=0\nset default=0\nmenuentry \"xdv\" {{\n  multiboot2 /boot/xdv-kernel {cmdline}\n  boot\n}}\n"
        ),
    )?;
    let status = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(&staging)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let _ = std::fs::remove_dir_all(&staging);
    match status {
        Err(_) => bail!(
            "`grub-mkrescue` not found: install with `{}`",
            crate::prereq::apt_line(&["grub-pc-bin", "grub-common", "xorriso", "mtools"])
        ),
        Ok(o) if !o.status.success() => bail!(
            "grub-mkrescue failed (needs grub-pc-bin, xorriso, mtools):\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => Ok(()),
    }
}
