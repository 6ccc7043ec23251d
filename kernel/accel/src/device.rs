//! The device's side of the ring protocol, written once: the host device simulators
//! (`tools/accel-sim`) run it over their shared memory, the node simulator and the
//! driver's tests over a [`MemWindow`](crate::regs::MemWindow). What a job computes
//! is not here: [`DeviceSide::take`] hands out validated submissions and
//! [`DeviceSide::complete`] posts the answer.
//!
//! The device trusts nothing the driver wrote: a submission that does not parse, or
//! names a chunk or a slot out of range, completes with an error status (or, if even
//! its command id cannot be trusted, fails the device with `Protocol`); the device's
//! own memory is never written outside the window.

use crate::regs::{
    self, CAUSE_COMPLETION, CAUSE_FAULT, CQE_BYTES, Control, DeviceError, DeviceMemory, Kind,
    Layout, MAX_JOB_BYTES, SQE_BYTES, Status, off,
};
use crate::ring::{Completion, CqStatus, Opcode, Submission};
use alloc::vec::Vec;

/// A submission the device accepted, with its job bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub sub: Submission,
    pub job: Vec<u8>,
}

/// What the device must do after a call: which interrupt vectors to raise.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Raise {
    pub completion: bool,
    pub fault: bool,
}

/// The device's protocol state.
pub struct DeviceSide {
    pub kind: Kind,
    pub slots: u32,
    layout: Layout,
    generation: u32,
    sq_head: u32,
    cq_tail: u32,
    control_seq: u32,
    ack_seq: u32,
    cause: u32,
    status: Status,
    /// The hardware is broken (until [`recover`](Self::recover)).
    broken: bool,
    busy: Vec<bool>,
    /// Commands taken and not yet completed, by command id.
    running: Vec<Submission>,
    done: u64,
}

impl DeviceSide {
    /// Publishes a fresh register block (status Off until the driver enables it).
    pub fn new(
        mem: &dyn DeviceMemory,
        kind: Kind,
        units: u32,
        slots: u32,
        slot_units: u32,
        peer: u32,
    ) -> DeviceSide {
        assert!(mem.window_bytes() >= regs::STD_WINDOW_BYTES);
        assert!((1..=regs::MAX_SLOTS).contains(&slots) && slots * slot_units <= units);
        let zero = [0u8; 256];
        mem.write_bytes(0, &zero);
        mem.write32(off::VERSION, regs::VERSION);
        mem.write32(off::KIND, kind.code());
        mem.write32(off::UNITS, units);
        mem.write32(off::SLOTS, slots);
        mem.write32(off::SLOT_UNITS, slot_units);
        mem.write32(off::STATUS, Status::Off.code());
        mem.write32(off::PEER, peer);
        Layout::STANDARD.write(mem);
        mem.fence();
        // The magic last: a driver that sees it sees a complete block.
        mem.write32(off::MAGIC, regs::MAGIC);
        mem.fence();
        DeviceSide {
            kind,
            slots,
            layout: Layout::STANDARD,
            generation: 0,
            sq_head: 0,
            cq_tail: 0,
            control_seq: 0,
            ack_seq: 0,
            cause: 0,
            status: Status::Off,
            broken: false,
            busy: alloc::vec![false; slots as usize],
            running: Vec::new(),
            done: 0,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Commands taken and not completed.
    pub fn running(&self) -> &[Submission] {
        &self.running
    }

    fn set_status(&mut self, mem: &dyn DeviceMemory, s: Status, err: DeviceError) {
        self.status = s;
        mem.write32(off::ERROR, err.code());
        mem.write32(off::STATUS, s.code());
    }

    fn latch(&mut self, mem: &dyn DeviceMemory, cause: u32) -> Raise {
        self.cause |= cause;
        mem.write32(off::INTR_CAUSE, self.cause);
        let mask = mem.read32(off::INTR_MASK);
        Raise {
            completion: cause & CAUSE_COMPLETION & !mask != 0,
            fault: cause & CAUSE_FAULT & !mask != 0,
        }
    }

    /// Handles the driver's acknowledgements and control requests, then takes every
    /// new submission. Returns the accepted ones and the interrupts to raise.
    pub fn take(&mut self, mem: &dyn DeviceMemory) -> (Vec<Taken>, Raise) {
        mem.fence();
        let mut raise = Raise::default();
        let ack = mem.read32(off::INTR_ACK);
        if ack != self.ack_seq {
            self.ack_seq = ack;
            self.cause = 0;
            mem.write32(off::INTR_CAUSE, 0);
        }
        let seq = mem.read32(off::CONTROL_SEQ);
        if seq != self.control_seq {
            self.control_seq = seq;
            let r = self.control(mem);
            raise.fault |= r.fault;
        }
        let mut taken = Vec::new();
        if self.status != Status::Ready {
            return (taken, raise);
        }
        let tail = mem.read32(off::SQ_TAIL);
        let queued = tail.wrapping_sub(self.sq_head);
        if queued > self.layout.sq_entries {
            let r = self.fail(mem, DeviceError::Protocol);
            raise.fault |= r.fault;
            return (taken, raise);
        }
        for _ in 0..queued {
            let at = self.layout.sq_off as usize
                + (self.sq_head % self.layout.sq_entries) as usize * SQE_BYTES;
            let mut b = [0u8; SQE_BYTES];
            mem.read_bytes(at, &mut b);
            self.sq_head = self.sq_head.wrapping_add(1);
            match self.accept(mem, &b) {
                Ok(t) => taken.push(t),
                Err(Some(r)) => {
                    raise.completion |= r.completion;
                    raise.fault |= r.fault;
                }
                Err(None) => {
                    let r = self.fail(mem, DeviceError::Protocol);
                    raise.fault |= r.fault;
                    break;
                }
            }
        }
        mem.write32(off::SQ_HEAD, self.sq_head);
        mem.fence();
        (taken, raise)
    }

    /// Checks one submission: `Ok` to run it, `Err(Some)` when it was answered with an
    /// error status, `Err(None)` when it cannot even be answered.
    fn accept(&mut self, mem: &dyn DeviceMemory, b: &[u8]) -> Result<Taken, Option<Raise>> {
        let sub = Submission::parse(b).map_err(|_| None)?;
        if sub.chunk >= self.layout.sq_entries || self.running.iter().any(|r| r.cmd == sub.cmd) {
            return Err(None);
        }
        let refuse = |s: &mut Self, st: CqStatus| Err(Some(s.post(mem, &sub, st, &[], 0, 0)));
        if sub.opcode == Opcode::Run {
            if sub.slot as u32 >= self.slots || self.busy[sub.slot as usize] {
                return refuse(self, CqStatus::BadSlot);
            }
            self.busy[sub.slot as usize] = true;
        }
        let mut job = alloc::vec![0u8; (sub.job_len as usize).min(MAX_JOB_BYTES)];
        mem.read_bytes(self.layout.chunk(sub.chunk), &mut job);
        self.running.push(sub);
        Ok(Taken { sub, job })
    }

    fn control(&mut self, mem: &dyn DeviceMemory) -> Raise {
        match Control::from_code(mem.read32(off::CONTROL)) {
            Some(Control::Enable) if self.status == Status::Off => {
                let drv = mem.read32(off::DRIVER_VERSION);
                if drv >> 16 != u32::from(regs::VERSION_MAJOR) {
                    return self.fail(mem, DeviceError::DriverVersion);
                }
                self.set_status(mem, Status::Ready, DeviceError::None);
                Raise::default()
            }
            Some(Control::Reset) => {
                self.running.clear();
                self.busy.iter_mut().for_each(|b| *b = false);
                self.sq_head = 0;
                self.cq_tail = 0;
                mem.write32(off::SQ_HEAD, 0);
                mem.write32(off::CQ_TAIL, 0);
                let cq = alloc::vec![0u8; self.layout.cq_entries as usize * CQE_BYTES];
                mem.write_bytes(self.layout.cq_off as usize, &cq);
                self.generation = self.generation.wrapping_add(1);
                mem.write32(off::GENERATION, self.generation);
                if self.broken {
                    self.set_status(mem, Status::Failed, DeviceError::Hardware);
                } else {
                    self.set_status(mem, Status::Ready, DeviceError::None);
                }
                mem.fence();
                Raise::default()
            }
            _ => Raise::default(),
        }
    }

    /// Posts the answer to a command taken earlier; `result` goes into its chunk.
    pub fn complete(
        &mut self,
        mem: &dyn DeviceMemory,
        sub: &Submission,
        status: CqStatus,
        result: &[u8],
        detail: u32,
        device_time_us: u64,
    ) -> Raise {
        let Some(i) = self.running.iter().position(|r| r.cmd == sub.cmd) else {
            return Raise::default(); // dropped by a reset meanwhile
        };
        self.running.swap_remove(i);
        self.free_slot(sub);
        let (status, result) = if result.len() > sub.result_cap as usize {
            (CqStatus::ResultTooLarge, &[][..])
        } else {
            (status, result)
        };
        self.post(mem, sub, status, result, detail, device_time_us)
    }

    /// A finished run gives its slot back.
    fn free_slot(&mut self, sub: &Submission) {
        if sub.opcode == Opcode::Run {
            self.busy[sub.slot as usize] = false;
        }
    }

    fn post(
        &mut self,
        mem: &dyn DeviceMemory,
        sub: &Submission,
        status: CqStatus,
        result: &[u8],
        detail: u32,
        device_time_us: u64,
    ) -> Raise {
        if !result.is_empty() {
            mem.write_bytes(self.layout.chunk(sub.chunk) + MAX_JOB_BYTES, result);
        }
        let c = Completion {
            cmd: sub.cmd,
            status,
            generation: self.generation as u16,
            result_len: result.len() as u32,
            detail,
            device_time_us,
        };
        let at = self.layout.cq_off as usize
            + (self.cq_tail % self.layout.cq_entries) as usize * CQE_BYTES;
        mem.write_bytes(at, &c.emit());
        mem.fence();
        self.cq_tail = self.cq_tail.wrapping_add(1);
        mem.write32(off::CQ_TAIL, self.cq_tail);
        self.done += 1;
        mem.write32(off::DONE_LO, self.done as u32);
        mem.write32(off::DONE_HI, (self.done >> 32) as u32);
        mem.fence();
        self.latch(mem, CAUSE_COMPLETION)
    }

    /// The hardware fails: every running command completes with `DeviceFault`, the
    /// device reports `Failed` and raises the fault vector. It stays failed until
    /// [`recover`](Self::recover) and a driver reset.
    pub fn break_hardware(&mut self, mem: &dyn DeviceMemory) -> Raise {
        self.broken = true;
        let mut raise = Raise::default();
        for sub in core::mem::take(&mut self.running) {
            self.free_slot(&sub);
            let r = self.post(
                mem,
                &sub,
                CqStatus::DeviceFault,
                &[],
                DeviceError::Hardware.code(),
                0,
            );
            raise.completion |= r.completion;
        }
        let r = self.fail(mem, DeviceError::Hardware);
        raise.fault |= r.fault;
        raise
    }

    /// The hardware works again; the device comes back at the driver's next reset.
    pub fn recover(&mut self) {
        self.broken = false;
    }

    fn fail(&mut self, mem: &dyn DeviceMemory, err: DeviceError) -> Raise {
        self.set_status(mem, Status::Failed, err);
        mem.fence();
        self.latch(mem, CAUSE_FAULT)
    }
}
