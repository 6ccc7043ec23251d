//! The node's accelerators: the Q and Φ devices a node drives, between the node's
//! [`RunTask`]s for those domains and its completions. The kernel runs it over mapped
//! device windows, the simulator over plain memory with a device simulator on the
//! other side; both use this code unchanged.
//!
//! Invariants:
//! - every Q or Φ task handed to [`AccelPool::run`] ends in exactly one
//!   [`Completion`]: `Executed`/`BudgetExceeded`/`Unstable`/`Refused` from its device,
//!   or `DeviceFailed` when its device failed or none of its kind is ready;
//! - a task is on one device at a time, and only while that device is ready;
//! - what the node offers ([`AccelPool::offer`]) counts only ready devices.

use crate::node::RunTask;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use xdv_accel::driver::{Driver, Event, Request};
use xdv_accel::regs::{DeviceMemory, Kind, ProbeError};
use xdv_accel::ring::{CqStatus, Opcode};
use xdv_audit::RecordBody;
use xdv_cluster::{Completion, Domain, Outcome};
use xdv_types::{Hash32, NodeId, TaskId};

/// Audit tag of accelerator records, as text: one per device job (task, attempt,
/// device and slot, status, device time, result size, the output hash its completion
/// carries and, for Q, the job's entangling-op and teleportation counts), and per
/// abort, device failure and recovery. The requesting node's `job-ended` contract
/// record names the same task and output hash.
pub const AUDIT_TAG_ACCEL: u16 = 0xC3;
/// How long a device job may run before the watchdog fails its device.
pub const JOB_TIMEOUT_MS: u64 = 30_000;
/// How long a no-op command may take.
pub const NOP_TIMEOUT_MS: u64 = 2_000;
/// Most device tasks waiting for a slot on one node.
pub const MAX_WAITING: usize = 1024;

/// One device as the pool sees it: its window and its doorbell.
pub trait Port {
    fn mem(&self) -> &dyn DeviceMemory;
    /// Tells the device new submissions are queued.
    fn ring(&self);
}

/// A device the node found, with its driver (or why it has none).
pub struct Device<P: Port> {
    /// Where it is (the PCI address on hardware, a name in the simulator).
    pub name: String,
    pub port: P,
    pub driver: Result<Driver, ProbeError>,
}

/// Why a request for a round trip could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PingError {
    NoDevice,
    Submit(String),
}

struct Running {
    task: TaskId,
    attempt: u32,
    device: usize,
}

/// Tag space: tasks use their own counter; pings are tagged from the top.
const PING_TAG: u64 = 1 << 63;

pub struct AccelPool<P: Port> {
    node: NodeId,
    devices: Vec<Device<P>>,
    waiting: VecDeque<RunTask>,
    running: BTreeMap<u64, Running>,
    next_tag: u64,
    /// Ping replies: tag → (round trip ms, device µs).
    pings: BTreeMap<u64, Option<(u64, u64)>>,
    audit: Vec<RecordBody>,
    notes: Vec<String>,
}

fn kind_of(d: Domain) -> Option<Kind> {
    match d {
        Domain::K => None,
        Domain::Q => Some(Kind::Q),
        Domain::Phi => Some(Kind::Phi),
    }
}

/// The sampling seed of a job: from its identity (tenant, job, input), so the same job
/// gives the same counts on every run and replay takes results from the log instead.
pub fn job_seed(run: &RunTask, job: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"xdv-accel-seed\0");
    h.update(run.spec.tenant.0.to_le_bytes());
    h.update((job.len() as u64).to_le_bytes());
    h.update(job);
    h.update(&run.spec.input);
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl<P: Port> AccelPool<P> {
    pub fn new(node: NodeId) -> AccelPool<P> {
        AccelPool {
            node,
            devices: Vec::new(),
            waiting: VecDeque::new(),
            running: BTreeMap::new(),
            next_tag: 1,
            pings: BTreeMap::new(),
            audit: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Probes a device and starts its driver; a device that refuses (wrong magic or
    /// version, bad layout) is kept with its reason for the console.
    pub fn add(&mut self, name: String, port: P, now_ms: u64) {
        let driver = Driver::start(port.mem(), now_ms);
        let line = match &driver {
            Ok(d) => alloc::format!(
                "accel: {name}: {} device, interface {}.{}, {} units in {} slots",
                d.info.kind.name(),
                d.info.version >> 16,
                d.info.version & 0xffff,
                d.info.units,
                d.info.slots
            ),
            Err(e) => alloc::format!("accel: {name}: refused: {e}"),
        };
        self.note(line);
        self.devices.push(Device { name, port, driver });
    }

    pub fn devices(&self) -> &[Device<P>] {
        &self.devices
    }

    /// (Q containers, Φ windows) offered by ready devices.
    pub fn offer(&self) -> (u16, u16) {
        let sum = |k: Kind| -> u16 {
            self.drivers()
                .filter(|(_, d)| d.info.kind == k)
                .map(|(_, d)| d.offered_slots())
                .fold(0u16, u16::saturating_add)
        };
        (sum(Kind::Q), sum(Kind::Phi))
    }

    fn drivers(&self) -> impl Iterator<Item = (usize, &Driver)> {
        self.devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.driver.as_ref().ok().map(|drv| (i, drv)))
    }

    /// Tasks on devices plus tasks waiting for a slot.
    pub fn load(&self) -> usize {
        self.running.len() + self.waiting.len()
    }

    /// Takes a Q or Φ task the log assigned to this node. Returns its completion at
    /// once when no device of its kind can take it now or later.
    pub fn run(&mut self, task: RunTask) -> Option<Completion> {
        let Some(kind) = kind_of(task.spec.domain) else {
            return Some(self.ended(&task, Outcome::Refused("not a device task".into()), &[]));
        };
        if !self
            .drivers()
            .any(|(_, d)| d.info.kind == kind && d.is_ready())
        {
            let why = alloc::format!("no ready {} device on {}", kind.name(), self.node);
            return Some(self.ended(&task, Outcome::DeviceFailed(why), &[]));
        }
        if self.waiting.len() >= MAX_WAITING {
            let why = alloc::format!("{MAX_WAITING} device jobs already waiting on {}", self.node);
            return Some(self.ended(&task, Outcome::Refused(why), &[]));
        }
        self.waiting.push_back(task);
        None
    }

    /// Sends a round trip to the first ready device — a no-op, or with `job` a run
    /// of that job in a free slot (its result is dropped); its time shows in
    /// [`ping_result`](Self::ping_result).
    pub fn ping(&mut self, now_ms: u64, job: Option<&[u8]>) -> Result<u64, PingError> {
        let i = self
            .drivers()
            .find(|(_, d)| d.is_ready())
            .map(|(i, _)| i)
            .ok_or(PingError::NoDevice)?;
        let tag = PING_TAG | self.next_tag;
        self.next_tag += 1;
        let dev = &mut self.devices[i];
        let req = Request {
            opcode: if job.is_some() {
                Opcode::Run
            } else {
                Opcode::Nop
            },
            slots: &[],
            job: job.unwrap_or(&[]),
            seed: 0,
            budget: 0,
            tag,
            timeout_ms: if job.is_some() {
                JOB_TIMEOUT_MS
            } else {
                NOP_TIMEOUT_MS
            },
        };
        let drv = dev.driver.as_mut().expect("found ready above");
        let port = &dev.port;
        drv.submit(port.mem(), &req, now_ms, &mut || port.ring())
            .map_err(|e| PingError::Submit(alloc::format!("{e}")))?;
        self.pings.insert(tag, None);
        Ok(tag)
    }

    /// `Some((round trip ms, device µs))` once ping `tag` came back; the entry is
    /// removed when read.
    pub fn ping_result(&mut self, tag: u64) -> Option<(u64, u64)> {
        let r = (*self.pings.get(&tag)?)?;
        self.pings.remove(&tag);
        Some(r)
    }

    /// The first ready device's kind, if any.
    pub fn first_ready_kind(&self) -> Option<Kind> {
        self.drivers()
            .find(|(_, d)| d.is_ready())
            .map(|(_, d)| d.info.kind)
    }

    /// Polls every device, turns their events into completions and hands waiting
    /// tasks to free slots. Call on every device interrupt and on every loop pass.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Completion> {
        let mut done = Vec::new();
        for i in 0..self.devices.len() {
            let dev = &mut self.devices[i];
            let Ok(drv) = dev.driver.as_mut() else {
                continue;
            };
            let events = drv.poll(dev.port.mem(), now_ms);
            for e in events {
                self.event(i, e, &mut done);
            }
        }
        self.dispatch(now_ms, &mut done);
        done
    }

    fn event(&mut self, i: usize, e: Event, done: &mut Vec<Completion>) {
        let name = self.devices[i].name.clone();
        match e {
            Event::Done { tag, .. } | Event::Lost { tag, .. } if tag & PING_TAG != 0 => {
                if let Some(slot) = self.pings.get_mut(&tag) {
                    *slot = match e {
                        Event::Done {
                            elapsed_ms,
                            device_time_us,
                            ..
                        } => Some((elapsed_ms, device_time_us)),
                        _ => Some((u64::MAX, 0)),
                    };
                }
            }
            Event::Done {
                tag,
                status,
                detail,
                result,
                device_time_us,
                slot,
                ..
            } => {
                let Some(r) = self.running.remove(&tag) else {
                    return;
                };
                let outcome = outcome_of(status, detail);
                let kind = self.devices[i].driver.as_ref().map(|d| d.info.kind).ok();
                self.record(alloc::format!(
                    "{} attempt {} on {name} slot {slot}: {} (detail {detail}, device {device_time_us} µs, result {} bytes, output {}{})",
                    r.task,
                    r.attempt,
                    status.name(),
                    result.len(),
                    output_hash(&result),
                    usage(kind, &result)
                ));
                done.push(self.completion(r.task, r.attempt, outcome, &result));
            }
            Event::Lost { tag, fault, .. } => {
                let Some(r) = self.running.remove(&tag) else {
                    return;
                };
                self.record(alloc::format!(
                    "{} attempt {} on {name}: aborted, device failed: {fault}",
                    r.task,
                    r.attempt
                ));
                let o = Outcome::DeviceFailed(alloc::format!("{name}: {fault}"));
                done.push(self.completion(r.task, r.attempt, o, &[]));
            }
            Event::Failed(fault) => {
                self.record(alloc::format!("{name}: device failed: {fault}"));
                self.note(alloc::format!("accel: {name}: FAILED: {fault}"));
            }
            Event::Recovered { generation } => {
                self.record(alloc::format!(
                    "{name}: device recovered (generation {generation})"
                ));
                self.note(alloc::format!(
                    "accel: {name}: recovered, generation {generation}"
                ));
            }
        }
    }

    /// Hands waiting tasks to ready devices of their kind with a free slot; a task
    /// whose kind has no ready device left ends `DeviceFailed`.
    fn dispatch(&mut self, now_ms: u64, done: &mut Vec<Completion>) {
        let mut keep = VecDeque::new();
        while let Some(task) = self.waiting.pop_front() {
            let kind = kind_of(task.spec.domain).expect("only device tasks wait");
            if !self
                .drivers()
                .any(|(_, d)| d.info.kind == kind && d.is_ready())
            {
                let why = alloc::format!("no ready {} device on {}", kind.name(), self.node);
                done.push(self.ended(&task, Outcome::DeviceFailed(why), &[]));
                continue;
            }
            let free = self
                .drivers()
                .find(|(_, d)| d.info.kind == kind && d.has_free(&task.slots))
                .map(|(i, _)| i);
            match free {
                Some(i) => {
                    if let Err(c) = self.start(i, &task, now_ms) {
                        done.push(c);
                    }
                }
                None => keep.push_back(task),
            }
        }
        self.waiting = keep;
    }

    // The error is the completion reported at once (rare: a start that failed); a
    // `Completion` grew by its log lines, and boxing it here buys nothing.
    #[allow(clippy::result_large_err)]
    fn start(&mut self, i: usize, task: &RunTask, now_ms: u64) -> Result<(), Completion> {
        let xdv_cluster::Work::Job(job) = &task.spec.work else {
            return Err(self.ended(task, Outcome::Refused("no device job".into()), &[]));
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        let req = Request {
            opcode: Opcode::Run,
            slots: &task.slots,
            job,
            seed: job_seed(task, job),
            // The container's or window's own decoherence budget bounds the job.
            budget: 0,
            tag,
            timeout_ms: JOB_TIMEOUT_MS,
        };
        let dev = &mut self.devices[i];
        let drv = dev.driver.as_mut().expect("a ready driver");
        let port = &dev.port;
        match drv.submit(port.mem(), &req, now_ms, &mut || port.ring()) {
            Ok(_) => {
                let r = Running {
                    task: task.task,
                    attempt: task.attempt,
                    device: i,
                };
                self.running.insert(tag, r);
                Ok(())
            }
            Err(e) => {
                let why = alloc::format!("{}: {e}", dev.name);
                Err(self.ended(task, Outcome::DeviceFailed(why), &[]))
            }
        }
    }

    fn ended(&mut self, task: &RunTask, outcome: Outcome, output: &[u8]) -> Completion {
        self.record(alloc::format!(
            "{} attempt {}: {outcome}",
            task.task,
            task.attempt
        ));
        self.completion(task.task, task.attempt, outcome, output)
    }

    fn completion(
        &self,
        task: TaskId,
        attempt: u32,
        outcome: Outcome,
        output: &[u8],
    ) -> Completion {
        let mut kept = output.to_vec();
        kept.truncate(xdv_cluster::MAX_OUTPUT_BYTES);
        Completion {
            task,
            node: self.node,
            attempt,
            outcome,
            ticks: 0,
            output_hash: output_hash(output),
            output: kept,
            log: Vec::new(),
        }
    }

    fn record(&mut self, line: String) {
        self.audit.push(RecordBody::Custom {
            tag: AUDIT_TAG_ACCEL,
            bytes: line.into_bytes(),
        });
    }

    fn note(&mut self, line: String) {
        self.notes.push(line);
    }

    /// Audit records to append (in order) and lines for the operator.
    pub fn drain(&mut self) -> (Vec<RecordBody>, Vec<String>) {
        (
            core::mem::take(&mut self.audit),
            core::mem::take(&mut self.notes),
        )
    }

    /// One line per device for the console's `accel`.
    pub fn describe(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| match &d.driver {
                Ok(drv) => alloc::format!("{}: {}", d.name, drv.describe()),
                Err(e) => alloc::format!("{}: refused: {e}", d.name),
            })
            .collect()
    }

    /// Checks the pool's invariants (the simulator calls it after every step).
    pub fn invariants(&self) -> Result<(), String> {
        for (tag, r) in &self.running {
            let dev = self
                .devices
                .get(r.device)
                .ok_or("running on a device that does not exist")?;
            let drv = dev
                .driver
                .as_ref()
                .map_err(|_| String::from("running on a refused device"))?;
            if !drv.is_ready() {
                return Err(alloc::format!(
                    "{} (tag {tag}) still running on a failed device",
                    r.task
                ));
            }
        }
        let in_flight: usize = self.drivers().map(|(_, d)| d.in_flight()).sum();
        let pings = self.pings.values().filter(|p| p.is_none()).count();
        if in_flight != self.running.len() + pings {
            return Err(alloc::format!(
                "drivers hold {in_flight} commands, the pool {} tasks and {pings} pings",
                self.running.len()
            ));
        }
        Ok(())
    }
}

/// The hash of a device job's result, as its task's completion carries it (and the
/// requesting node's `job-ended` contract record names it): what ties the target's
/// device record to the requester's reference.
pub fn output_hash(result: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(result).into())
}

/// The entanglement and teleportation use a Q result reports, for the device record
/// (`, entangling ops N, teleportations M`); empty for Φ and for results that carry
/// none (a failed job); the reason when a Q result does not decode.
fn usage(kind: Option<Kind>, result: &[u8]) -> String {
    if kind != Some(Kind::Q) || result.is_empty() {
        return String::new();
    }
    match xdv_accel::job::QResult::decode(result) {
        Ok(q) => alloc::format!(
            ", entangling ops {}, teleportations {}",
            q.entangling_ops,
            q.teleportations
        ),
        Err(e) => alloc::format!(", result unreadable: {e}"),
    }
}

/// The task outcome a device status means.
pub fn outcome_of(status: CqStatus, detail: u32) -> Outcome {
    match status {
        CqStatus::Ok => Outcome::Executed,
        CqStatus::BudgetExceeded => Outcome::BudgetExceeded,
        CqStatus::Unstable => Outcome::Unstable(alloc::format!(
            "window {detail} fell below its stability constraint; envelope invalidated"
        )),
        CqStatus::DeviceFault => {
            Outcome::DeviceFailed(String::from("hardware fault during the job"))
        }
        CqStatus::Aborted => Outcome::DeviceFailed(String::from("aborted by a device reset")),
        CqStatus::BadSlot => Outcome::DeviceFailed(String::from("device refused the slot")),
        CqStatus::BadJob if detail > 0 => Outcome::Refused(alloc::format!(
            "job larger than the device's container or window ({detail} qubits or oscillators)"
        )),
        CqStatus::BadJob => Outcome::Refused(String::from("device refused the job's form")),
        CqStatus::ResultTooLarge => {
            Outcome::Refused(String::from("result larger than the device's result room"))
        }
    }
}
