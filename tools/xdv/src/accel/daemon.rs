//! The device process: [`DeviceSide`] over the ivshmem server's shared memory, the
//! jobs run by a pluggable [`Runner`] on a worker thread, fault injection through a
//! control socket.
//!
//! The main loop owns the device state and the memory; nothing else touches them.
//! It waits (at most [`TICK_MS`]) on the device's doorbells, the server sockets and a
//! wake-up eventfd the worker and the control thread signal, then: handles client
//! connects/disconnects, answers control commands, and — unless hung — calls
//! [`DeviceSide::take`] (so a reset or an acknowledgement that came without a
//! doorbell is still seen within a tick), hands jobs to the worker and posts the
//! worker's results. A long job therefore never blocks a reset or a control command.
//!
//! Invariants: a result is posted only for a command of the same device incarnation
//! and generation it was taken in (a reset or a new client drops older results, so a
//! reused command id never gets a stale answer); while hung nothing is taken and
//! nothing completed; interrupts go only to the connected client.
//!
//! One client at a time (`ivshmem`): a second is refused while one is connected.
//! A new client (a node restarted) gets a freshly initialised register block (status
//! Off, generation 0): the new kernel's driver starts from scratch. Injected faults
//! (`fail`, `hang`) are the hardware's and survive a reconnect.

use super::ivshmem::{self, EventFd, Server};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};
use xdv_accel::device::{DeviceSide, Raise};
use xdv_accel::regs::{
    DOORBELL_PING, Kind, MAX_SLOTS, MAX_UNITS, Status, VECTOR_COMPLETION, VECTOR_FAULT,
};
use xdv_accel::ring::{CqStatus, Opcode, Submission};

/// Longest wait of the main loop between re-scans of the register block.
pub const TICK_MS: i32 = 5;
/// Longest control line accepted.
pub const MAX_CTL_LINE_BYTES: usize = 256;

/// How a job ended, as a runner reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: CqStatus,
    pub result: Vec<u8>,
    pub detail: u32,
}

/// What computes a job: the Q state-vector and Φ Kuramoto simulators
/// (`xdv-accel-sim`), or [`EchoRunner`] in tests.
pub trait Runner: Send {
    fn run(&mut self, kind: Kind, sub: &Submission, job: &[u8], slot_units: u32) -> RunOutcome;
}

/// Returns the job's bytes reversed; a `Nop` ends Ok with no result.
pub struct EchoRunner;

impl Runner for EchoRunner {
    fn run(&mut self, _: Kind, sub: &Submission, job: &[u8], _: u32) -> RunOutcome {
        let result = match sub.opcode {
            Opcode::Nop => Vec::new(),
            Opcode::Run => job.iter().rev().copied().collect(),
        };
        RunOutcome {
            status: CqStatus::Ok,
            result,
            detail: 0,
        }
    }
}

/// The simulated hardware: the Q state-vector simulator and the Φ Kuramoto
/// integrator of `xdv-accel-sim`, behind the device's own checks (container size,
/// decoherence budget, instability).
pub struct SimRunner {
    /// Decoherence budget of a container (depth) or window (steps).
    pub coherence: u32,
}

/// Default decoherence budgets: circuit depth for Q, integration steps for Φ.
pub const Q_COHERENCE_DEPTH: u32 = 500;
pub const PHI_COHERENCE_STEPS: u32 = xdv_accel::job::MAX_STEPS;

impl Runner for SimRunner {
    fn run(&mut self, kind: Kind, sub: &Submission, job: &[u8], slot_units: u32) -> RunOutcome {
        let cfg = xdv_accel_sim::device::DeviceConfig {
            kind,
            slot_units,
            coherence: self.coherence,
        };
        let a = xdv_accel_sim::device::run(&cfg, sub, job);
        RunOutcome {
            status: a.status,
            result: a.result,
            detail: a.detail,
        }
    }
}

/// The one place a kind gets its runner.
pub fn runner_for(kind: Kind) -> Box<dyn Runner> {
    Box::new(SimRunner {
        coherence: match kind {
            Kind::Q => Q_COHERENCE_DEPTH,
            Kind::Phi => PHI_COHERENCE_STEPS,
        },
    })
}

/// Parses `q` or `phi` (case-insensitive; `Φ` too).
pub fn parse_kind(s: &str) -> Result<Kind> {
    match s.to_ascii_lowercase().as_str() {
        "q" => Ok(Kind::Q),
        "phi" | "Φ" | "φ" => Ok(Kind::Phi),
        _ => bail!("unknown accelerator kind `{s}` (want q or phi)"),
    }
}

/// The CLI name of a kind (`q`, `phi`).
pub fn kind_arg(k: Kind) -> &'static str {
    match k {
        Kind::Q => "q",
        Kind::Phi => "phi",
    }
}

/// A device's shape: kind and capacity, checked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub units: u32,
    pub slots: u32,
    pub slot_units: u32,
}

impl Spec {
    /// `units` split evenly into `slots` (qubits into containers, oscillators into
    /// windows).
    pub fn new(kind: Kind, units: u32, slots: u32) -> Result<Spec> {
        let (u, s) = kind.unit_names();
        if !(1..=MAX_UNITS).contains(&units) {
            bail!("{units} {u}: must be 1..={MAX_UNITS}");
        }
        if !(1..=MAX_SLOTS).contains(&slots) {
            bail!("{slots} {s}: must be 1..={MAX_SLOTS}");
        }
        if !units.is_multiple_of(slots) {
            bail!("{units} {u} do not split evenly into {slots} {s}");
        }
        Ok(Spec {
            kind,
            units,
            slots,
            slot_units: units / slots,
        })
    }

    /// The default shape: 16 qubits in 2 containers, 64 oscillators in 4 windows.
    pub fn default_for(kind: Kind) -> Spec {
        match kind {
            Kind::Q => Spec::new(kind, 16, 2),
            Kind::Phi => Spec::new(kind, 64, 4),
        }
        .expect("the defaults are valid")
    }
}

/// A fault-injection command on the control socket.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CtlCmd {
    Fail,
    Hang,
    Unstable,
    Recover,
    Status,
}

impl std::str::FromStr for CtlCmd {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<CtlCmd> {
        Ok(match s.trim() {
            "fail" => CtlCmd::Fail,
            "hang" => CtlCmd::Hang,
            "unstable" => CtlCmd::Unstable,
            "recover" => CtlCmd::Recover,
            "status" => CtlCmd::Status,
            other => {
                bail!("unknown command `{other}` (want fail, hang, unstable, recover or status)")
            }
        })
    }
}

/// The control socket of the device serving `socket`.
pub fn ctl_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".ctl");
    PathBuf::from(p)
}

/// Sends one control line and returns the answer (`ok …`; `error: …` is an Err).
pub fn ctl(ctl_socket: &Path, cmd: &str) -> Result<String> {
    let mut s = UnixStream::connect(ctl_socket).with_context(|| {
        format!(
            "no device answers on {} (is it running?)",
            ctl_socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    writeln!(s, "{cmd}")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let line = line.trim_end().to_string();
    match line.strip_prefix("error: ") {
        Some(e) => bail!("{e}"),
        None if line.starts_with("ok") => Ok(line),
        None => bail!("unexpected answer from the device: {line:?}"),
    }
}

struct Work {
    sub: Submission,
    job: Vec<u8>,
    force: Option<CqStatus>,
    incarnation: u64,
    generation: u32,
}

struct Finished {
    sub: Submission,
    outcome: RunOutcome,
    device_time_us: u64,
    incarnation: u64,
    generation: u32,
}

type CtlRequest = (String, Sender<String>);

/// A register block published afresh (status Off, generation 0); a broken
/// device's reports Failed at once (no interrupt: no client has it yet).
fn fresh_device(mem: &ivshmem::ShmMap, spec: Spec, broken: bool) -> DeviceSide {
    let mut dev = DeviceSide::new(
        mem,
        spec.kind,
        spec.units,
        spec.slots,
        spec.slot_units,
        u32::from(ivshmem::DEVICE_PEER),
    );
    if broken {
        let _ = dev.break_hardware(mem);
    }
    dev
}

/// One device: server, protocol state, worker, fault state.
pub struct Daemon {
    spec: Spec,
    server: Server,
    dev: DeviceSide,
    /// Bumped whenever the register block is initialised again (a new client).
    incarnation: u64,
    broken: bool,
    hung: bool,
    unstable_next: bool,
    jobs_done: u64,
    wake: Arc<EventFd>,
    work_tx: Option<Sender<Work>>,
    done_rx: Receiver<Finished>,
    held: Vec<Finished>,
    ctl_rx: Receiver<CtlRequest>,
    ctl_path: PathBuf,
    threads: Vec<std::thread::JoinHandle<()>>,
    ctl_stop: Arc<AtomicBool>,
}

impl Daemon {
    /// Binds `socket` (ivshmem) and `<socket>.ctl`, publishes the register block.
    pub fn new(spec: Spec, socket: &Path) -> Result<Daemon> {
        Daemon::with_runner(spec, socket, runner_for(spec.kind))
    }

    /// As [`new`](Self::new), with the jobs run by `runner` instead of the kind's.
    pub fn with_runner(spec: Spec, socket: &Path, mut runner: Box<dyn Runner>) -> Result<Daemon> {
        let ctl_path = ctl_path(socket);
        let server = Server::bind(socket, Some(&ctl_path))?;
        let ctl_listener = ivshmem::bind_unix(&ctl_path, None)?;
        let dev = fresh_device(server.memory(), spec, false);
        let wake = Arc::new(EventFd::new()?);
        let (work_tx, work_rx) = mpsc::channel::<Work>();
        let (done_tx, done_rx) = mpsc::channel::<Finished>();
        let (ctl_tx, ctl_rx) = mpsc::channel::<CtlRequest>();
        let ctl_stop = Arc::new(AtomicBool::new(false));
        let w = wake.clone();
        let worker = std::thread::Builder::new()
            .name("accel-worker".into())
            .spawn(move || {
                for job in work_rx {
                    let t0 = Instant::now();
                    let mut outcome = runner.run(spec.kind, &job.sub, &job.job, spec.slot_units);
                    if let Some(st) = job.force {
                        outcome = RunOutcome {
                            status: st,
                            result: Vec::new(),
                            detail: 0,
                        };
                    }
                    let done = Finished {
                        sub: job.sub,
                        outcome,
                        device_time_us: t0.elapsed().as_micros() as u64,
                        incarnation: job.incarnation,
                        generation: job.generation,
                    };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                    let _ = w.signal();
                }
            })?;
        let (w, stop) = (wake.clone(), ctl_stop.clone());
        let ctl_thread = std::thread::Builder::new()
            .name("accel-ctl".into())
            .spawn(move || ctl_accept(ctl_listener, ctl_tx, w, stop))?;
        Ok(Daemon {
            spec,
            server,
            dev,
            incarnation: 0,
            broken: false,
            hung: false,
            unstable_next: false,
            jobs_done: 0,
            wake,
            work_tx: Some(work_tx),
            done_rx,
            held: Vec::new(),
            ctl_rx,
            ctl_path,
            threads: vec![worker, ctl_thread],
            ctl_stop,
        })
    }

    pub fn socket(&self) -> &Path {
        self.server.path()
    }

    pub fn ctl_socket(&self) -> &Path {
        &self.ctl_path
    }

    /// Serves until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let mut fds = self.server.socket_fds();
            fds.extend(self.server.doorbells().iter().map(EventFd::raw));
            fds.push(self.wake.raw());
            ivshmem::wait_readable(&fds, TICK_MS).context("waiting for the device's events")?;
            self.step()?;
        }
        Ok(())
    }

    /// One pass: connections, control commands, doorbells, results.
    pub fn step(&mut self) -> Result<()> {
        self.wake.drain();
        let (spec, broken) = (self.spec, self.broken);
        let (dev, incarnation) = (&mut self.dev, &mut self.incarnation);
        let events = self.server.service(&mut |mem| {
            *incarnation += 1;
            *dev = fresh_device(mem, spec, broken);
        })?;
        for ev in events {
            match ev {
                ivshmem::Event::Connected(id) => {
                    eprintln!("xdv accel: client {id} connected; register block initialised")
                }
                ivshmem::Event::Disconnected(id) => {
                    eprintln!("xdv accel: client {id} disconnected")
                }
                ivshmem::Event::Refused => {}
            }
        }
        while let Ok((line, reply)) = self.ctl_rx.try_recv() {
            let answer = match line.parse::<CtlCmd>() {
                Ok(cmd) => self.control(cmd),
                Err(e) => format!("error: {e}"),
            };
            let _ = reply.send(answer);
        }
        let mut pinged = false;
        for (v, d) in self.server.doorbells().iter().enumerate() {
            pinged |= d.drain() && v == usize::from(DOORBELL_PING);
        }
        // The raw ping: a completion interrupt at once, no ring read (the floor of a
        // round trip). A hung device does not answer.
        if pinged && !self.hung {
            self.server.interrupt(VECTOR_COMPLETION);
        }
        self.held.extend(self.done_rx.try_iter());
        if !self.hung {
            self.serve();
        }
        Ok(())
    }

    fn raise(&self, r: Raise) {
        if r.completion {
            self.server.interrupt(VECTOR_COMPLETION);
        }
        if r.fault {
            self.server.interrupt(VECTOR_FAULT);
        }
    }

    fn serve(&mut self) {
        let mem = self.server.memory();
        let mut raise = Raise::default();
        for f in std::mem::take(&mut self.held) {
            let current = f.incarnation == self.incarnation
                && f.generation == self.dev.generation()
                && self.dev.running().iter().any(|r| r.cmd == f.sub.cmd);
            if current {
                let o = &f.outcome;
                let r =
                    self.dev
                        .complete(mem, &f.sub, o.status, &o.result, o.detail, f.device_time_us);
                self.jobs_done += 1;
                raise.completion |= r.completion;
                raise.fault |= r.fault;
            }
        }
        let (taken, r) = self.dev.take(mem);
        raise.completion |= r.completion;
        raise.fault |= r.fault;
        for t in taken {
            if t.sub.opcode == Opcode::Nop {
                // No work: answered at once, never queued behind a long job.
                let r = self.dev.complete(mem, &t.sub, CqStatus::Ok, &[], 0, 0);
                self.jobs_done += 1;
                raise.completion |= r.completion;
                continue;
            }
            let force = std::mem::take(&mut self.unstable_next).then_some(match self.spec.kind {
                Kind::Phi => CqStatus::Unstable,
                Kind::Q => CqStatus::DeviceFault,
            });
            let work = Work {
                sub: t.sub,
                job: t.job,
                force,
                incarnation: self.incarnation,
                generation: self.dev.generation(),
            };
            if let Some(tx) = &self.work_tx {
                let _ = tx.send(work);
            }
        }
        self.raise(raise);
    }

    fn control(&mut self, cmd: CtlCmd) -> String {
        match cmd {
            CtlCmd::Fail => {
                self.broken = true;
                let r = self.dev.break_hardware(self.server.memory());
                self.raise(r);
                "ok hardware failed: running jobs ended device-fault, device reports failed".into()
            }
            CtlCmd::Hang => {
                self.hung = true;
                "ok device hung: no completions and no resets until `recover`".into()
            }
            CtlCmd::Unstable => {
                self.unstable_next = true;
                match self.spec.kind {
                    Kind::Phi => "ok the next Φ job ends unstable".into(),
                    Kind::Q => "ok the next Q job ends device-fault".into(),
                }
            }
            CtlCmd::Recover => {
                self.broken = false;
                self.hung = false;
                self.dev.recover();
                "ok hardware healthy; the device comes back at the driver's next reset".into()
            }
            CtlCmd::Status => format!("ok {}", self.status_line()),
        }
    }

    /// `kind=Q status=ready generation=0 jobs=12 clients=1 hardware=healthy serving=yes`.
    pub fn status_line(&self) -> String {
        let status = match self.dev.status() {
            Status::Off => "off",
            Status::Ready => "ready",
            Status::Failed => "failed",
            Status::Resetting => "resetting",
        };
        format!(
            "kind={} status={status} generation={} jobs={} clients={} hardware={} serving={}",
            self.spec.kind.name(),
            self.dev.generation(),
            self.jobs_done,
            usize::from(self.server.client().is_some()),
            if self.broken { "broken" } else { "healthy" },
            if self.hung { "hung" } else { "yes" },
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.work_tx = None; // the worker ends after its current job
        self.ctl_stop.store(true, Ordering::Relaxed);
        let _ = UnixStream::connect(&self.ctl_path); // wakes the blocked accept
        let _ = std::fs::remove_file(&self.ctl_path);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts control connections; each gets its own thread reading lines.
fn ctl_accept(l: UnixListener, tx: Sender<CtlRequest>, wake: Arc<EventFd>, stop: Arc<AtomicBool>) {
    for conn in l.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let (tx, wake) = (tx.clone(), wake.clone());
        let _ = std::thread::Builder::new()
            .name("accel-ctl-conn".into())
            .spawn(move || ctl_conn(conn, tx, wake));
    }
}

fn ctl_conn(conn: UnixStream, tx: Sender<CtlRequest>, wake: Arc<EventFd>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut rd = BufReader::new(std::io::Read::take(conn, 64 * 1024));
    let mut line = String::new();
    loop {
        line.clear();
        match rd.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = if line.len() > MAX_CTL_LINE_BYTES {
            format!("error: control line longer than {MAX_CTL_LINE_BYTES} bytes")
        } else {
            let (rtx, rrx) = mpsc::channel();
            if tx.send((line.trim().to_string(), rtx)).is_err() {
                return;
            }
            let _ = wake.signal();
            match rrx.recv_timeout(Duration::from_secs(5)) {
                Ok(a) => a,
                Err(_) => "error: the device did not answer".into(),
            }
        };
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// A device served by a thread of this process (tests, the QEMU harness); stopped
/// and its sockets removed when dropped.
pub struct DeviceGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    pub socket: PathBuf,
    pub ctl: PathBuf,
}

/// Starts a device on `socket` in a thread; it is listening when this returns.
pub fn spawn(spec: Spec, socket: &Path) -> Result<DeviceGuard> {
    spawn_with(spec, socket, runner_for(spec.kind))
}

/// As [`spawn`], with the jobs run by `runner`.
pub fn spawn_with(spec: Spec, socket: &Path, runner: Box<dyn Runner>) -> Result<DeviceGuard> {
    let mut d = Daemon::with_runner(spec, socket, runner)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let (socket, ctl) = (d.socket().to_path_buf(), d.ctl_socket().to_path_buf());
    let thread = std::thread::Builder::new()
        .name("accel-device".into())
        .spawn(move || d.run(&s))?;
    Ok(DeviceGuard {
        stop,
        thread: Some(thread),
        socket,
        ctl,
    })
}

impl DeviceGuard {
    /// One control command (see [`ctl`]).
    pub fn ctl(&self, cmd: &str) -> Result<String> {
        ctl(&self.ctl, cmd)
    }

    /// Stops the device and returns how its loop ended.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the device thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for DeviceGuard {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_specs_and_commands_parse_with_clear_errors() {
        assert_eq!(parse_kind("q").unwrap(), Kind::Q);
        assert_eq!(parse_kind("PHI").unwrap(), Kind::Phi);
        let e = parse_kind("x").unwrap_err().to_string();
        assert_eq!(e, "unknown accelerator kind `x` (want q or phi)");
        let s = Spec::new(Kind::Q, 16, 2).unwrap();
        assert_eq!(s.slot_units, 8);
        let e = Spec::new(Kind::Phi, 64, 5).unwrap_err().to_string();
        assert_eq!(e, "64 oscillators do not split evenly into 5 windows");
        assert!(Spec::new(Kind::Q, 0, 1).is_err());
        assert!(Spec::new(Kind::Q, 128, 65).is_err());
        assert_eq!("hang".parse::<CtlCmd>().unwrap(), CtlCmd::Hang);
        let e = "explode".parse::<CtlCmd>().unwrap_err().to_string();
        assert!(e.contains("unknown command `explode`"), "{e}");
        assert_eq!(
            ctl_path(Path::new("/tmp/a.sock")),
            PathBuf::from("/tmp/a.sock.ctl")
        );
    }

    #[test]
    fn echo_reverses_runs_and_empties_nops() {
        let sub = |opcode| Submission {
            cmd: 1,
            opcode,
            slot: 0,
            job_len: 3,
            result_cap: 100,
            seed: 0,
            budget: 0,
            chunk: 0,
            tag: 0,
        };
        let mut r = EchoRunner;
        assert_eq!(r.run(Kind::Q, &sub(Opcode::Run), b"abc", 8).result, b"cba");
        let nop = r.run(Kind::Q, &sub(Opcode::Nop), b"abc", 8);
        assert_eq!((nop.status, nop.result.len()), (CqStatus::Ok, 0));
    }
}
