//! The driver's logic for one accelerator, over any [`DeviceMemory`] and with time
//! passed in: the kernel runs it over a mapped BAR, the tests over a fake device
//! that can lie.
//!
//! Invariants:
//! - every command in flight has a distinct id, one data chunk of its own and (for
//!   `Run`) one slot of its own; chunks and slots free exactly when the command ends;
//! - a completion is believed only if its id names a command in flight, its
//!   generation is the current one, its result fits the room given, and the ring's
//!   indices are in range — anything else fails the device (never the kernel) and
//!   every command in flight ends as [`Event::Lost`];
//! - a command past its deadline fails the device (the watchdog);
//! - a failed device is reset every [`RESET_INTERVAL_MS`] until it comes back ready
//!   in a new generation; until then it offers no slots.

use crate::regs::{
    self, CQE_BYTES, Control, DeviceError, DeviceInfo, DeviceMemory, MAX_JOB_BYTES,
    MAX_RESULT_BYTES, ProbeError, SQE_BYTES, Status, off,
};
use crate::ring::{Completion, CqStatus, EntryError, Opcode, Submission};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// How often a failed device is asked to reset.
pub const RESET_INTERVAL_MS: u64 = 1_000;
/// How long a device may take to come up after enable or reset.
pub const START_TIMEOUT_MS: u64 = 5_000;

/// The driver's view of its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Enabled (or reset), waiting for the device to say ready; after a reset only
    /// a generation other than `old_generation` counts.
    Starting {
        since_ms: u64,
        old_generation: Option<u32>,
    },
    Ready,
    /// Failed; a reset is requested every [`RESET_INTERVAL_MS`].
    Failed {
        fault: Fault,
        since_ms: u64,
        last_reset_ms: Option<u64>,
    },
}

/// Why the driver failed a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The device reported a failure itself.
    Reported(DeviceError),
    /// STATUS held no known code.
    BadStatus(u32),
    /// A command passed its deadline.
    Hung { cmd: u32, waited_ms: u64 },
    /// The device did not come up in time.
    NoStart,
    /// The completion ring's tail is out of range.
    IndexOutOfRange { head: u32, tail: u32 },
    /// A completion entry did not parse.
    BadEntry(EntryError),
    /// A completion for a command not in flight.
    UnknownCommand(u32),
    /// A completion stamped with another generation.
    WrongGeneration { got: u16, want: u16 },
    /// A result longer than the room given.
    ResultOverflow { len: u32, cap: u32 },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Reported(e) => write!(f, "device reported: {e}"),
            Fault::BadStatus(s) => write!(f, "device status {s} is not a known state"),
            Fault::Hung { cmd, waited_ms } => {
                write!(
                    f,
                    "command {cmd} not completed after {waited_ms} ms (watchdog)"
                )
            }
            Fault::NoStart => write!(f, "device did not become ready in {START_TIMEOUT_MS} ms"),
            Fault::IndexOutOfRange { head, tail } => {
                write!(
                    f,
                    "completion index out of range (head {head}, tail {tail})"
                )
            }
            Fault::BadEntry(e) => write!(f, "garbage completion: {e}"),
            Fault::UnknownCommand(c) => write!(f, "completion for command {c}, never sent"),
            Fault::WrongGeneration { got, want } => {
                write!(f, "completion of generation {got}, device is in {want}")
            }
            Fault::ResultOverflow { len, cap } => {
                write!(f, "result of {len} bytes in a room of {cap}")
            }
        }
    }
}

/// What a caller asks the device to do.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub opcode: Opcode,
    /// Slots a `Run` may use (the lowest free one is taken); empty: any.
    pub slots: &'a [u16],
    pub job: &'a [u8],
    pub seed: u64,
    pub budget: u32,
    /// The caller's reference, returned in the command's event.
    pub tag: u64,
    /// How long the command may take before the watchdog fails the device.
    pub timeout_ms: u64,
}

/// Why a request was not posted (nothing was written to the device).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    NotReady,
    NoFreeSlot,
    RingFull,
    JobTooLarge(usize),
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::NotReady => f.write_str("device is not ready"),
            SubmitError::NoFreeSlot => f.write_str("every slot is busy"),
            SubmitError::RingFull => f.write_str("submission ring is full"),
            SubmitError::JobTooLarge(n) => write!(f, "job of {n} bytes (limit {MAX_JOB_BYTES})"),
        }
    }
}

/// What happened since the last poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A command ended with a status from the device.
    Done {
        tag: u64,
        cmd: u32,
        slot: u16,
        status: CqStatus,
        detail: u32,
        result: Vec<u8>,
        device_time_us: u64,
        /// Driver-side time from submission to the completion being read.
        elapsed_ms: u64,
    },
    /// A command was in flight when the device failed: it will never complete.
    Lost {
        tag: u64,
        cmd: u32,
        fault: Fault,
    },
    Failed(Fault),
    Recovered {
        generation: u32,
    },
}

#[derive(Clone, Debug)]
struct InFlight {
    tag: u64,
    opcode: Opcode,
    slot: u16,
    chunk: u32,
    submitted_ms: u64,
    deadline_ms: u64,
}

/// Counters for `accel` on the console.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub submitted: u64,
    pub completed: u64,
    pub errors: u64,
    pub lost: u64,
    pub faults: u64,
    pub resets: u64,
    pub recoveries: u64,
    pub interrupts_acked: u64,
}

pub struct Driver {
    pub info: DeviceInfo,
    state: State,
    generation: u32,
    sq_tail: u32,
    cq_head: u32,
    ack_seq: u32,
    control_seq: u32,
    inflight: BTreeMap<u32, InFlight>,
    busy_slots: Vec<bool>,
    next_cmd: u32,
    pub counters: Counters,
    /// The last fault, kept after recovery for the console.
    pub last_fault: Option<(u64, Fault)>,
}

impl Driver {
    /// Probes the window and enables the device (it answers asynchronously: see
    /// [`state`](Self::state)).
    pub fn start(mem: &dyn DeviceMemory, now_ms: u64) -> Result<Driver, ProbeError> {
        let info = regs::probe(mem)?;
        let mut d = Driver {
            busy_slots: alloc::vec![false; info.slots as usize],
            info,
            state: State::Starting {
                since_ms: now_ms,
                old_generation: None,
            },
            generation: mem.read32(off::GENERATION),
            sq_tail: 0,
            cq_head: 0,
            ack_seq: mem.read32(off::INTR_ACK),
            control_seq: mem.read32(off::CONTROL_SEQ),
            inflight: BTreeMap::new(),
            next_cmd: 1,
            counters: Counters::default(),
            last_fault: None,
        };
        mem.write32(off::SQ_TAIL, d.sq_tail);
        mem.write32(off::CQ_HEAD, d.cq_head);
        mem.write32(off::INTR_MASK, 0);
        mem.write32(off::DRIVER_VERSION, regs::VERSION);
        // A device already running (a driver before us) is reset into a clean generation.
        let status = Status::from_code(mem.read32(off::STATUS));
        if status == Some(Status::Off) {
            d.request(mem, Control::Enable);
        } else {
            d.state = State::Starting {
                since_ms: now_ms,
                old_generation: Some(d.generation),
            };
            d.request(mem, Control::Reset);
        }
        Ok(d)
    }

    fn request(&mut self, mem: &dyn DeviceMemory, c: Control) {
        mem.write32(off::CONTROL, c.code());
        mem.fence();
        self.control_seq = self.control_seq.wrapping_add(1);
        mem.write32(off::CONTROL_SEQ, self.control_seq);
        mem.fence();
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Slots the node may advertise: all of them while ready, none otherwise.
    pub fn offered_slots(&self) -> u16 {
        if self.is_ready() {
            self.info.slots as u16
        } else {
            0
        }
    }

    /// Is one of `slots` (any slot if empty) free?
    pub fn has_free(&self, slots: &[u16]) -> bool {
        self.is_ready()
            && self
                .busy_slots
                .iter()
                .enumerate()
                .any(|(i, b)| !*b && (slots.is_empty() || slots.contains(&(i as u16))))
    }

    pub fn free_slots(&self) -> u16 {
        if !self.is_ready() {
            return 0;
        }
        self.busy_slots.iter().filter(|b| !**b).count() as u16
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Posts a command and rings the doorbell (`ring` is called once the entry is
    /// published). Returns its id.
    pub fn submit(
        &mut self,
        mem: &dyn DeviceMemory,
        req: &Request<'_>,
        now_ms: u64,
        ring: &mut dyn FnMut(),
    ) -> Result<u32, SubmitError> {
        if !self.is_ready() {
            return Err(SubmitError::NotReady);
        }
        if req.job.len() > MAX_JOB_BYTES {
            return Err(SubmitError::JobTooLarge(req.job.len()));
        }
        let entries = self.info.layout.sq_entries;
        if self.inflight.len() >= entries as usize {
            return Err(SubmitError::RingFull);
        }
        let slot =
            match req.opcode {
                Opcode::Nop => 0,
                Opcode::Run => match self.busy_slots.iter().enumerate().position(|(i, b)| {
                    !*b && (req.slots.is_empty() || req.slots.contains(&(i as u16)))
                }) {
                    Some(s) => s as u16,
                    None => return Err(SubmitError::NoFreeSlot),
                },
            };
        let used: Vec<u32> = self.inflight.values().map(|f| f.chunk).collect();
        let chunk = (0..entries)
            .find(|c| !used.contains(c))
            .ok_or(SubmitError::RingFull)?;
        let cmd = self.fresh_cmd();
        let sub = Submission {
            cmd,
            opcode: req.opcode,
            slot,
            job_len: req.job.len() as u32,
            result_cap: MAX_RESULT_BYTES as u32,
            seed: req.seed,
            budget: req.budget,
            chunk,
            tag: req.tag,
        };
        let layout = &self.info.layout;
        mem.write_bytes(layout.chunk(chunk), req.job);
        let at = layout.sq_off as usize + (self.sq_tail % entries) as usize * SQE_BYTES;
        mem.write_bytes(at, &sub.emit());
        // Descriptor and job before the tail that publishes them.
        mem.fence();
        self.sq_tail = self.sq_tail.wrapping_add(1);
        mem.write32(off::SQ_TAIL, self.sq_tail);
        mem.fence();
        if req.opcode == Opcode::Run {
            self.busy_slots[slot as usize] = true;
        }
        self.inflight.insert(
            cmd,
            InFlight {
                tag: req.tag,
                opcode: req.opcode,
                slot,
                chunk,
                submitted_ms: now_ms,
                deadline_ms: now_ms.saturating_add(req.timeout_ms),
            },
        );
        self.counters.submitted += 1;
        ring();
        Ok(cmd)
    }

    fn fresh_cmd(&mut self) -> u32 {
        loop {
            let c = self.next_cmd;
            self.next_cmd = self.next_cmd.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&c) {
                return c;
            }
        }
    }

    /// Reads completions, checks the device's status and the watchdog, resets a
    /// failed device when due. Call on every interrupt and periodically.
    pub fn poll(&mut self, mem: &dyn DeviceMemory, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        mem.fence();
        if mem.read32(off::INTR_CAUSE) != 0 {
            self.ack_seq = self.ack_seq.wrapping_add(1);
            mem.write32(off::INTR_ACK, self.ack_seq);
            self.counters.interrupts_acked += 1;
        }
        let raw = mem.read32(off::STATUS);
        let status = Status::from_code(raw);
        match self.state.clone() {
            State::Starting {
                since_ms,
                old_generation,
            } => match status {
                Some(Status::Ready)
                    if old_generation.is_none_or(|g| g != mem.read32(off::GENERATION)) =>
                {
                    self.generation = mem.read32(off::GENERATION);
                    self.state = State::Ready;
                    if self.last_fault.is_some() {
                        self.counters.recoveries += 1;
                        events.push(Event::Recovered {
                            generation: self.generation,
                        });
                    }
                }
                Some(Status::Failed) => {
                    let e = DeviceError::from_code(mem.read32(off::ERROR));
                    self.fail(Fault::Reported(e), now_ms, &mut events);
                }
                _ if now_ms.saturating_sub(since_ms) > START_TIMEOUT_MS => {
                    self.fail(Fault::NoStart, now_ms, &mut events);
                }
                _ => {}
            },
            State::Ready => {
                self.read_completions(mem, now_ms, &mut events);
                if self.is_ready() {
                    match status {
                        Some(Status::Ready) => {}
                        Some(Status::Failed) => {
                            let e = DeviceError::from_code(mem.read32(off::ERROR));
                            self.fail(Fault::Reported(e), now_ms, &mut events);
                        }
                        Some(_) | None => self.fail(Fault::BadStatus(raw), now_ms, &mut events),
                    }
                }
                self.watchdog(now_ms, &mut events);
            }
            State::Failed { last_reset_ms, .. } => {
                let due =
                    last_reset_ms.is_none_or(|t| now_ms.saturating_sub(t) >= RESET_INTERVAL_MS);
                let new_gen = mem.read32(off::GENERATION);
                if status == Some(Status::Ready)
                    && last_reset_ms.is_some()
                    && new_gen != self.generation
                {
                    self.generation = new_gen;
                    self.sq_tail = mem.read32(off::SQ_HEAD);
                    self.cq_head = mem.read32(off::CQ_TAIL);
                    if self.sq_tail != 0 || self.cq_head != 0 {
                        // A reset leaves both rings empty at zero; anything else is a lie.
                        self.sq_tail = 0;
                        self.cq_head = 0;
                    }
                    self.state = State::Ready;
                    self.counters.recoveries += 1;
                    events.push(Event::Recovered {
                        generation: new_gen,
                    });
                } else if due {
                    self.reset(mem, now_ms);
                }
            }
        }
        events
    }

    fn reset(&mut self, mem: &dyn DeviceMemory, now_ms: u64) {
        self.sq_tail = 0;
        self.cq_head = 0;
        mem.write32(off::SQ_TAIL, 0);
        mem.write32(off::CQ_HEAD, 0);
        self.request(mem, Control::Reset);
        self.counters.resets += 1;
        if let State::Failed { last_reset_ms, .. } = &mut self.state {
            *last_reset_ms = Some(now_ms);
        }
    }

    fn watchdog(&mut self, now_ms: u64, events: &mut Vec<Event>) {
        if !self.is_ready() {
            return;
        }
        let late = self
            .inflight
            .iter()
            .find(|(_, f)| now_ms > f.deadline_ms)
            .map(|(c, f)| (*c, now_ms - f.submitted_ms));
        if let Some((cmd, waited_ms)) = late {
            self.fail(Fault::Hung { cmd, waited_ms }, now_ms, events);
        }
    }

    fn read_completions(&mut self, mem: &dyn DeviceMemory, now_ms: u64, events: &mut Vec<Event>) {
        let layout = self.info.layout;
        let tail = mem.read32(off::CQ_TAIL);
        let queued = tail.wrapping_sub(self.cq_head);
        if queued > layout.cq_entries {
            let f = Fault::IndexOutOfRange {
                head: self.cq_head,
                tail,
            };
            return self.fail(f, now_ms, events);
        }
        mem.fence();
        for _ in 0..queued {
            let at =
                layout.cq_off as usize + (self.cq_head % layout.cq_entries) as usize * CQE_BYTES;
            let mut b = [0u8; CQE_BYTES];
            mem.read_bytes(at, &mut b);
            self.cq_head = self.cq_head.wrapping_add(1);
            if let Err(f) = self.accept(mem, &b, now_ms, events) {
                return self.fail(f, now_ms, events);
            }
        }
        mem.write32(off::CQ_HEAD, self.cq_head);
        mem.fence();
    }

    fn accept(
        &mut self,
        mem: &dyn DeviceMemory,
        b: &[u8],
        now_ms: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), Fault> {
        let c = Completion::parse(b).map_err(Fault::BadEntry)?;
        let want = self.generation as u16;
        if c.generation != want {
            return Err(Fault::WrongGeneration {
                got: c.generation,
                want,
            });
        }
        let f = self
            .inflight
            .get(&c.cmd)
            .ok_or(Fault::UnknownCommand(c.cmd))?;
        if c.result_len > MAX_RESULT_BYTES as u32 {
            return Err(Fault::ResultOverflow {
                len: c.result_len,
                cap: MAX_RESULT_BYTES as u32,
            });
        }
        let mut result = alloc::vec![0u8; c.result_len as usize];
        mem.read_bytes(self.info.layout.chunk(f.chunk) + MAX_JOB_BYTES, &mut result);
        let f = self.inflight.remove(&c.cmd).expect("looked up above");
        if f.opcode == Opcode::Run {
            self.busy_slots[f.slot as usize] = false;
        }
        self.counters.completed += 1;
        if c.status != CqStatus::Ok {
            self.counters.errors += 1;
        }
        events.push(Event::Done {
            tag: f.tag,
            cmd: c.cmd,
            slot: f.slot,
            status: c.status,
            detail: c.detail,
            result,
            device_time_us: c.device_time_us,
            elapsed_ms: now_ms.saturating_sub(f.submitted_ms),
        });
        Ok(())
    }

    /// Fails the device: every command in flight is lost, no slot is offered until a
    /// reset brings it back.
    fn fail(&mut self, fault: Fault, now_ms: u64, events: &mut Vec<Event>) {
        self.counters.faults += 1;
        for (cmd, f) in core::mem::take(&mut self.inflight) {
            self.counters.lost += 1;
            events.push(Event::Lost {
                tag: f.tag,
                cmd,
                fault: fault.clone(),
            });
        }
        self.busy_slots.iter_mut().for_each(|b| *b = false);
        self.last_fault = Some((now_ms, fault.clone()));
        self.state = State::Failed {
            fault: fault.clone(),
            since_ms: now_ms,
            last_reset_ms: None,
        };
        events.push(Event::Failed(fault));
    }

    /// Marks the device failed from outside (an operator's `accel fail`, or the
    /// kernel's interrupt path seeing the device vanish).
    pub fn fail_now(&mut self, fault: Fault, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        self.fail(fault, now_ms, &mut events);
        events
    }

    /// One line for the console: kind, state, capacity, counters, last fault.
    pub fn describe(&self) -> String {
        let (u, s) = self.info.kind.unit_names();
        let state = match &self.state {
            State::Starting { .. } => String::from("starting"),
            State::Ready => String::from("ready"),
            State::Failed { fault, .. } => alloc::format!("FAILED ({fault})"),
        };
        let c = &self.counters;
        let mut line = alloc::format!(
            "{} v{}.{} {state}: {} {u} in {} {s} ({} free), gen {}, submitted {} completed {} errors {} lost {} faults {} resets {} recoveries {}",
            self.info.kind.name(),
            self.info.version >> 16,
            self.info.version & 0xffff,
            self.info.units,
            self.info.slots,
            self.free_slots(),
            self.generation,
            c.submitted,
            c.completed,
            c.errors,
            c.lost,
            c.faults,
            c.resets,
            c.recoveries,
        );
        if let Some((at, f)) = &self.last_fault {
            line.push_str(&alloc::format!("; last fault at {at} ms: {f}"));
        }
        line
    }
}
