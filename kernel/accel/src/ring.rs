//! Submission and completion entries: fixed-size little-endian descriptors, parsed
//! without panicking and checked field by field (the device on the other side may be
//! buggy or hostile, and so may a driver seen from the device).
//!
//! Submission entry (64 bytes):
//! `cmd u32 | opcode u16 | slot u16 | job_len u32 | result_cap u32 | seed u64 |
//!  budget u32 | chunk u32 | tag u64 | reserved[24]`.
//! The job sits at the start of data chunk `chunk`; the result goes
//! [`MAX_JOB_BYTES`](crate::regs::MAX_JOB_BYTES) into it.
//!
//! Completion entry (32 bytes):
//! `cmd u32 | status u16 | generation u16 | result_len u32 | detail u32 |
//!  device_time_us u64 | reserved[8]`.

use crate::regs::{CQE_BYTES, MAX_JOB_BYTES, MAX_RESULT_BYTES, SQE_BYTES};

/// What a command asks of the device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// Complete at once with no work (round-trip measurements, liveness).
    Nop,
    /// Run a job (a circuit on a Q device, an envelope on a Φ device) in a slot.
    Run,
}

impl Opcode {
    pub fn code(self) -> u16 {
        match self {
            Opcode::Nop => 0,
            Opcode::Run => 1,
        }
    }
    pub fn from_code(c: u16) -> Option<Opcode> {
        match c {
            0 => Some(Opcode::Nop),
            1 => Some(Opcode::Run),
            _ => None,
        }
    }
}

/// A command as the driver posts it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub cmd: u32,
    pub opcode: Opcode,
    /// Container (Q) or window (Φ) the job runs in.
    pub slot: u16,
    pub job_len: u32,
    pub result_cap: u32,
    /// Seeds measurement sampling (Q) so the same job gives the same counts.
    pub seed: u64,
    /// Decoherence budget: circuit depth (Q) or integration steps (Φ); 0 = none.
    pub budget: u32,
    /// Data chunk holding the job and the result.
    pub chunk: u32,
    /// The driver's own reference, echoed nowhere (the device ignores it).
    pub tag: u64,
}

/// Why an entry does not parse.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EntryError {
    Short,
    UnknownOpcode(u16),
    JobTooLarge(u32),
    ResultCapTooLarge(u32),
    UnknownStatus(u16),
    ResultTooLarge(u32),
}

impl core::fmt::Display for EntryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EntryError::Short => f.write_str("entry shorter than its fixed size"),
            EntryError::UnknownOpcode(c) => write!(f, "unknown opcode {c}"),
            EntryError::JobTooLarge(n) => write!(f, "job of {n} bytes (limit {MAX_JOB_BYTES})"),
            EntryError::ResultCapTooLarge(n) => {
                write!(f, "result room of {n} bytes (limit {MAX_RESULT_BYTES})")
            }
            EntryError::UnknownStatus(c) => write!(f, "unknown completion status {c}"),
            EntryError::ResultTooLarge(n) => {
                write!(f, "result of {n} bytes (limit {MAX_RESULT_BYTES})")
            }
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32)
}

impl Submission {
    pub fn emit(&self) -> [u8; SQE_BYTES] {
        let mut b = [0u8; SQE_BYTES];
        b[0..4].copy_from_slice(&self.cmd.to_le_bytes());
        b[4..6].copy_from_slice(&self.opcode.code().to_le_bytes());
        b[6..8].copy_from_slice(&self.slot.to_le_bytes());
        b[8..12].copy_from_slice(&self.job_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.result_cap.to_le_bytes());
        b[16..24].copy_from_slice(&self.seed.to_le_bytes());
        b[24..28].copy_from_slice(&self.budget.to_le_bytes());
        b[28..32].copy_from_slice(&self.chunk.to_le_bytes());
        b[32..40].copy_from_slice(&self.tag.to_le_bytes());
        b
    }

    pub fn parse(b: &[u8]) -> Result<Submission, EntryError> {
        if b.len() < SQE_BYTES {
            return Err(EntryError::Short);
        }
        let op = u16_at(b, 4);
        let s = Submission {
            cmd: u32_at(b, 0),
            opcode: Opcode::from_code(op).ok_or(EntryError::UnknownOpcode(op))?,
            slot: u16_at(b, 6),
            job_len: u32_at(b, 8),
            result_cap: u32_at(b, 12),
            seed: u64_at(b, 16),
            budget: u32_at(b, 24),
            chunk: u32_at(b, 28),
            tag: u64_at(b, 32),
        };
        if s.job_len as usize > MAX_JOB_BYTES {
            return Err(EntryError::JobTooLarge(s.job_len));
        }
        if s.result_cap as usize > MAX_RESULT_BYTES {
            return Err(EntryError::ResultCapTooLarge(s.result_cap));
        }
        Ok(s)
    }
}

/// How a command ended on the device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CqStatus {
    Ok,
    /// The device rejected the job's form (it validates again).
    BadJob,
    /// The job exceeded its decoherence budget and was aborted.
    BudgetExceeded,
    /// A Φ window's stability fell below its constraint.
    Unstable,
    /// The hardware failed during the job; the slot was aborted.
    DeviceFault,
    /// The slot does not exist or is busy.
    BadSlot,
    /// Dropped by a reset.
    Aborted,
    /// The result does not fit the room given.
    ResultTooLarge,
}

impl CqStatus {
    pub fn code(self) -> u16 {
        match self {
            CqStatus::Ok => 0,
            CqStatus::BadJob => 1,
            CqStatus::BudgetExceeded => 2,
            CqStatus::Unstable => 3,
            CqStatus::DeviceFault => 4,
            CqStatus::BadSlot => 5,
            CqStatus::Aborted => 6,
            CqStatus::ResultTooLarge => 7,
        }
    }
    pub fn from_code(c: u16) -> Option<CqStatus> {
        Some(match c {
            0 => CqStatus::Ok,
            1 => CqStatus::BadJob,
            2 => CqStatus::BudgetExceeded,
            3 => CqStatus::Unstable,
            4 => CqStatus::DeviceFault,
            5 => CqStatus::BadSlot,
            6 => CqStatus::Aborted,
            7 => CqStatus::ResultTooLarge,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            CqStatus::Ok => "ok",
            CqStatus::BadJob => "bad-job",
            CqStatus::BudgetExceeded => "budget-exceeded",
            CqStatus::Unstable => "unstable",
            CqStatus::DeviceFault => "device-fault",
            CqStatus::BadSlot => "bad-slot",
            CqStatus::Aborted => "aborted",
            CqStatus::ResultTooLarge => "result-too-large",
        }
    }
}

/// A completion as the device posts it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub cmd: u32,
    pub status: CqStatus,
    /// Low 16 bits of the generation the command was taken in.
    pub generation: u16,
    /// Result bytes written into the command's chunk (Ok, Unstable, BudgetExceeded may carry one).
    pub result_len: u32,
    /// Status detail: depth reached, window that went unstable, device error code.
    pub detail: u32,
    pub device_time_us: u64,
}

impl Completion {
    pub fn emit(&self) -> [u8; CQE_BYTES] {
        let mut b = [0u8; CQE_BYTES];
        b[0..4].copy_from_slice(&self.cmd.to_le_bytes());
        b[4..6].copy_from_slice(&self.status.code().to_le_bytes());
        b[6..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..12].copy_from_slice(&self.result_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.detail.to_le_bytes());
        b[16..24].copy_from_slice(&self.device_time_us.to_le_bytes());
        b
    }

    pub fn parse(b: &[u8]) -> Result<Completion, EntryError> {
        if b.len() < CQE_BYTES {
            return Err(EntryError::Short);
        }
        let st = u16_at(b, 4);
        let c = Completion {
            cmd: u32_at(b, 0),
            status: CqStatus::from_code(st).ok_or(EntryError::UnknownStatus(st))?,
            generation: u16_at(b, 6),
            result_len: u32_at(b, 8),
            detail: u32_at(b, 12),
            device_time_us: u64_at(b, 16),
        };
        if c.result_len as usize > MAX_RESULT_BYTES {
            return Err(EntryError::ResultTooLarge(c.result_len));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_round_trip() {
        let s = Submission {
            cmd: 7,
            opcode: Opcode::Run,
            slot: 3,
            job_len: 100,
            result_cap: 4096,
            seed: 0xdead_beef_0123_4567,
            budget: 40,
            chunk: 5,
            tag: 99,
        };
        assert_eq!(Submission::parse(&s.emit()), Ok(s));
        let c = Completion {
            cmd: 7,
            status: CqStatus::Unstable,
            generation: 2,
            result_len: 12,
            detail: 4,
            device_time_us: 1234,
        };
        assert_eq!(Completion::parse(&c.emit()), Ok(c));
    }

    #[test]
    fn bad_entries_are_named() {
        let mut b = [0u8; CQE_BYTES];
        b[4] = 200;
        assert_eq!(Completion::parse(&b), Err(EntryError::UnknownStatus(200)));
        b[4] = 0;
        b[8..12].copy_from_slice(&(MAX_RESULT_BYTES as u32 + 1).to_le_bytes());
        assert!(matches!(
            Completion::parse(&b),
            Err(EntryError::ResultTooLarge(_))
        ));
        assert_eq!(Completion::parse(&b[..10]), Err(EntryError::Short));
        let mut s = [0u8; SQE_BYTES];
        s[4] = 9;
        assert_eq!(Submission::parse(&s), Err(EntryError::UnknownOpcode(9)));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Submission::parse(&bytes);
            let _ = Completion::parse(&bytes);
        }
    }
}
