//! What a record says: the [`RecordBody`] enum, its kind numbers and field limits.
//!
//! The payload of a record is `postcard(RecordBody)`. The record's `kind` field is
//! the variant's index ([`RecordBody::kind`]); a verifier checks the two agree.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};
use xdv_types::{CapabilityId, CoreId, Hash32, TaskId};

/// Longest `Trapped::reason`, in bytes.
pub use xdv_types::limits::MAX_TRAP_REASON_BYTES;
/// Longest `ConsoleCommand::line`, in bytes.
pub const MAX_CONSOLE_LINE_BYTES: usize = 256;
/// Longest `RequestRefused::reason`, in bytes.
pub const MAX_REFUSAL_REASON_BYTES: usize = 256;
/// Longest `Custom::bytes`.
pub const MAX_CUSTOM_BYTES: usize = 1024;

/// One audited decision or event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordBody {
    /// The node booted; `count` is the boot count stored in the superblock.
    Boot {
        count: u64,
    },
    /// A torn append of `dropped_bytes` beyond the committed end was cut at open
    /// (only bytes the superblock proves were never durable; see docs/audit.md).
    Recovered {
        dropped_bytes: u64,
    },
    /// The region is full: the last record; `records`/`bytes` count what is stored
    /// (before this record).
    RegionFull {
        records: u64,
        bytes: u64,
    },
    TaskEnqueued {
        task: TaskId,
        core: CoreId,
    },
    TaskExecuted {
        task: TaskId,
        ticks: u64,
        output_hash: Hash32,
    },
    BudgetExceeded {
        task: TaskId,
        ticks: u64,
    },
    GuardDenied {
        task: TaskId,
        capability: CapabilityId,
    },
    /// `reason` is at most [`MAX_TRAP_REASON_BYTES`].
    Trapped {
        task: TaskId,
        ticks: u64,
        reason: String,
    },
    /// A state-changing console command; `line` is at most [`MAX_CONSOLE_LINE_BYTES`].
    ConsoleCommand {
        line: String,
    },
    /// Ties the run queue's replay log to the audit chain: the replay log had `len`
    /// entries and head hash `head_hash` at this point.
    ReplayHead {
        len: u64,
        head_hash: Hash32,
    },
    RaftApplied {
        index: u64,
        term: u64,
        entry_hash: Hash32,
    },
    MerkleRootPublished {
        size: u64,
        root: Hash32,
    },
    /// `reason` is at most [`MAX_REFUSAL_REASON_BYTES`].
    RequestRefused {
        reason: String,
    },
    /// Anything else; `bytes` is at most [`MAX_CUSTOM_BYTES`].
    Custom {
        tag: u16,
        #[serde(with = "raw_bytes")]
        bytes: Vec<u8>,
    },
    /// Written at open for each damaged range found: region bytes
    /// `offset .. offset + bytes` hold no readable record. `last_good_seq` /
    /// `last_good_hash`: the last readable record before the range (`None` and the
    /// genesis hash if there is none); `resumed_seq`: the first readable record
    /// after it (`None` if none follows). The range is kept as it is; this record
    /// starts the chain segment that continues from `last_good_hash`.
    Damaged {
        offset: u64,
        bytes: u64,
        last_good_seq: Option<u64>,
        last_good_hash: Hash32,
        resumed_seq: Option<u64>,
    },
    /// Neither superblock copy was valid at open: the chain was found by scanning
    /// (`records` readable records, appends resume at `end_offset`) and both copies
    /// were written again.
    SuperblocksRebuilt {
        records: u64,
        end_offset: u64,
    },
    /// The region held no superblock and no recognisable record, only
    /// `discarded_bytes` non-zero bytes, and was formatted (the first record).
    Formatted {
        discarded_bytes: u64,
    },
    /// Written once, when the region passes its high-water mark: from here on bulk
    /// records ([`RecordBody::is_bulk`]) are refused and only counted.
    AuditAlarm {
        used_bytes: u64,
        high_water_bytes: u64,
        region_bytes: u64,
    },
    /// A summary of `refused` requests that were not recorded one by one (rate
    /// limited); `first_reason` is at most [`MAX_REFUSAL_REASON_BYTES`];
    /// `unrecorded` bulk records the region refused since the previous summary.
    RefusalSummary {
        refused: u64,
        first_reason: String,
        unrecorded: u64,
    },
}

/// A field is longer than its limit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FieldTooLong {
    pub field: &'static str,
    pub len: usize,
    pub max: usize,
}

impl fmt::Display for FieldTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field `{}` is {} bytes, limit {}",
            self.field, self.len, self.max
        )
    }
}

impl RecordBody {
    /// Number of variants; kinds are `0..KIND_COUNT`.
    pub const KIND_COUNT: u16 = 19;

    /// The record kind: the variant's index in declaration order (= its postcard tag).
    pub fn kind(&self) -> u16 {
        match self {
            RecordBody::Boot { .. } => 0,
            RecordBody::Recovered { .. } => 1,
            RecordBody::RegionFull { .. } => 2,
            RecordBody::TaskEnqueued { .. } => 3,
            RecordBody::TaskExecuted { .. } => 4,
            RecordBody::BudgetExceeded { .. } => 5,
            RecordBody::GuardDenied { .. } => 6,
            RecordBody::Trapped { .. } => 7,
            RecordBody::ConsoleCommand { .. } => 8,
            RecordBody::ReplayHead { .. } => 9,
            RecordBody::RaftApplied { .. } => 10,
            RecordBody::MerkleRootPublished { .. } => 11,
            RecordBody::RequestRefused { .. } => 12,
            RecordBody::Custom { .. } => 13,
            RecordBody::Damaged { .. } => 14,
            RecordBody::SuperblocksRebuilt { .. } => 15,
            RecordBody::Formatted { .. } => 16,
            RecordBody::AuditAlarm { .. } => 17,
            RecordBody::RefusalSummary { .. } => 18,
        }
    }

    /// Bulk records may use the region only up to its high-water mark (see
    /// `log::BULK_HIGH_WATER_PERCENT`): what an unauthenticated sender can cause
    /// to be recorded must not crowd out the node's own decisions.
    pub fn is_bulk(&self) -> bool {
        matches!(self, RecordBody::RequestRefused { .. })
    }

    /// A short name of the kind, for displays.
    pub fn kind_name(kind: u16) -> &'static str {
        const NAMES: [&str; RecordBody::KIND_COUNT as usize] = [
            "Boot",
            "Recovered",
            "RegionFull",
            "TaskEnqueued",
            "TaskExecuted",
            "BudgetExceeded",
            "GuardDenied",
            "Trapped",
            "ConsoleCommand",
            "ReplayHead",
            "RaftApplied",
            "MerkleRootPublished",
            "RequestRefused",
            "Custom",
            "Damaged",
            "SuperblocksRebuilt",
            "Formatted",
            "AuditAlarm",
            "RefusalSummary",
        ];
        NAMES.get(usize::from(kind)).copied().unwrap_or("Unknown")
    }

    /// Checks the length limits of variable-size fields.
    pub fn check_limits(&self) -> Result<(), FieldTooLong> {
        let (field, len, max) = match self {
            RecordBody::Trapped { reason, .. } => ("reason", reason.len(), MAX_TRAP_REASON_BYTES),
            RecordBody::ConsoleCommand { line } => ("line", line.len(), MAX_CONSOLE_LINE_BYTES),
            RecordBody::RequestRefused { reason } => {
                ("reason", reason.len(), MAX_REFUSAL_REASON_BYTES)
            }
            RecordBody::Custom { bytes, .. } => ("bytes", bytes.len(), MAX_CUSTOM_BYTES),
            RecordBody::RefusalSummary { first_reason, .. } => {
                ("first_reason", first_reason.len(), MAX_REFUSAL_REASON_BYTES)
            }
            _ => return Ok(()),
        };
        if len > max {
            Err(FieldTooLong { field, len, max })
        } else {
            Ok(())
        }
    }
}

/// Writes [`RecordBody::encode_into`]'s output: postcard's wire format by hand
/// (LEB128 varints for integers and lengths, raw bytes for `u8` arrays).
struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Out<'_> {
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(b.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(b);
        self.pos = end;
        Some(())
    }

    /// Unsigned LEB128, as postcard writes `u16`, `u32`, `u64` and lengths.
    #[inline(always)]
    fn varint(&mut self, mut v: u64) -> Option<()> {
        loop {
            let b = self.buf.get_mut(self.pos)?;
            self.pos += 1;
            if v < 0x80 {
                *b = v as u8;
                return Some(());
            }
            *b = (v as u8) | 0x80;
            v >>= 7;
        }
    }

    #[inline(always)]
    fn hash(&mut self, h: &Hash32) -> Option<()> {
        self.raw(&h.0)
    }

    /// postcard's `Option`: 0 for `None`, 1 and the value for `Some`.
    #[inline(always)]
    fn opt(&mut self, v: Option<u64>) -> Option<()> {
        match v {
            None => self.varint(0),
            Some(v) => {
                self.varint(1)?;
                self.varint(v)
            }
        }
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) -> Option<()> {
        self.varint(b.len() as u64)?;
        self.raw(b)
    }
}

impl RecordBody {
    /// Writes `postcard::to_slice(self)` into `out` without going through serde and
    /// returns its length; `None` if `out` is too small. The bytes are exactly
    /// postcard's (a test compares them for every variant); the append path uses
    /// this because it is several times cheaper than the serde serializer.
    pub fn encode_into(&self, out: &mut [u8]) -> Option<usize> {
        let mut o = Out { buf: out, pos: 0 };
        o.varint(u64::from(self.kind()))?;
        match self {
            RecordBody::Boot { count } => o.varint(*count)?,
            RecordBody::Recovered { dropped_bytes } => o.varint(*dropped_bytes)?,
            RecordBody::RegionFull { records, bytes } => {
                o.varint(*records)?;
                o.varint(*bytes)?;
            }
            RecordBody::TaskEnqueued { task, core } => {
                o.varint(task.0)?;
                o.varint(u64::from(core.0))?;
            }
            RecordBody::TaskExecuted {
                task,
                ticks,
                output_hash,
            } => {
                o.varint(task.0)?;
                o.varint(*ticks)?;
                o.hash(output_hash)?;
            }
            RecordBody::BudgetExceeded { task, ticks } => {
                o.varint(task.0)?;
                o.varint(*ticks)?;
            }
            RecordBody::GuardDenied { task, capability } => {
                o.varint(task.0)?;
                o.varint(u64::from(capability.0))?;
            }
            RecordBody::Trapped {
                task,
                ticks,
                reason,
            } => {
                o.varint(task.0)?;
                o.varint(*ticks)?;
                o.bytes(reason.as_bytes())?;
            }
            RecordBody::ConsoleCommand { line } => o.bytes(line.as_bytes())?,
            RecordBody::ReplayHead { len, head_hash } => {
                o.varint(*len)?;
                o.hash(head_hash)?;
            }
            RecordBody::RaftApplied {
                index,
                term,
                entry_hash,
            } => {
                o.varint(*index)?;
                o.varint(*term)?;
                o.hash(entry_hash)?;
            }
            RecordBody::MerkleRootPublished { size, root } => {
                o.varint(*size)?;
                o.hash(root)?;
            }
            RecordBody::RequestRefused { reason } => o.bytes(reason.as_bytes())?,
            RecordBody::Custom { tag, bytes } => {
                o.varint(u64::from(*tag))?;
                o.bytes(bytes)?;
            }
            RecordBody::Damaged {
                offset,
                bytes,
                last_good_seq,
                last_good_hash,
                resumed_seq,
            } => {
                o.varint(*offset)?;
                o.varint(*bytes)?;
                o.opt(*last_good_seq)?;
                o.hash(last_good_hash)?;
                o.opt(*resumed_seq)?;
            }
            RecordBody::SuperblocksRebuilt {
                records,
                end_offset,
            } => {
                o.varint(*records)?;
                o.varint(*end_offset)?;
            }
            RecordBody::Formatted { discarded_bytes } => o.varint(*discarded_bytes)?,
            RecordBody::AuditAlarm {
                used_bytes,
                high_water_bytes,
                region_bytes,
            } => {
                o.varint(*used_bytes)?;
                o.varint(*high_water_bytes)?;
                o.varint(*region_bytes)?;
            }
            RecordBody::RefusalSummary {
                refused,
                first_reason,
                unrecorded,
            } => {
                o.varint(*refused)?;
                o.bytes(first_reason.as_bytes())?;
                o.varint(*unrecorded)?;
            }
        }
        Some(o.pos)
    }
}

/// Reads postcard's wire format by hand for [`RecordBody::decode`]: LEB128 varints
/// with postcard's limits (at most `ceil(bits / 7)` bytes; the last byte of a
/// full-length varint may carry only the bits that fit), raw bytes for `u8` arrays.
struct In<'a> {
    rest: &'a [u8],
}

impl<'a> In<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// An unsigned varint of a `bits`-bit integer, as postcard's `try_take_varint_*`.
    #[inline(always)]
    fn varint(&mut self, bits: u32) -> Option<u64> {
        let max_bytes = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < max_bytes || b <= last_max).then_some(out);
            }
        }
        None
    }

    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        self.varint(64)
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        self.varint(32).map(|v| v as u32)
    }

    #[inline(always)]
    fn u16(&mut self) -> Option<u16> {
        self.varint(16).map(|v| v as u16)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    /// A length-prefixed byte string (postcard's `usize` length: the varint of the
    /// target's pointer width).
    #[inline(always)]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.varint(usize::BITS)?;
        self.take(usize::try_from(len).ok()?)
    }

    fn string(&mut self) -> Option<String> {
        core::str::from_utf8(self.bytes()?).ok().map(String::from)
    }

    #[inline(always)]
    fn hash(&mut self) -> Option<Hash32> {
        Some(Hash32(self.take(32)?.try_into().ok()?))
    }

    /// postcard's `Option`: 0 for `None`, 1 and the value for `Some`, nothing else.
    #[inline(always)]
    fn opt(&mut self) -> Option<Option<u64>> {
        match self.byte()? {
            0 => Some(None),
            1 => self.u64().map(Some),
            _ => None,
        }
    }
}

impl RecordBody {
    /// The body whose postcard encoding is exactly `payload` (all of it): the same
    /// bodies, and the same refusals, as `postcard::take_from_bytes::<RecordBody>`
    /// with nothing left over (a test compares the two on every variant, every
    /// prefix, every changed byte and arbitrary bytes). Written out by hand, as
    /// [`RecordBody::encode_into`] is, because the serde path reads a hash one byte
    /// at a time and a verifier decodes every record of a region.
    pub fn decode(payload: &[u8]) -> Option<RecordBody> {
        let mut i = In { rest: payload };
        let body = match i.u32()? {
            0 => RecordBody::Boot { count: i.u64()? },
            1 => RecordBody::Recovered {
                dropped_bytes: i.u64()?,
            },
            2 => RecordBody::RegionFull {
                records: i.u64()?,
                bytes: i.u64()?,
            },
            3 => RecordBody::TaskEnqueued {
                task: TaskId(i.u64()?),
                core: CoreId(i.u16()?),
            },
            4 => RecordBody::TaskExecuted {
                task: TaskId(i.u64()?),
                ticks: i.u64()?,
                output_hash: i.hash()?,
            },
            5 => RecordBody::BudgetExceeded {
                task: TaskId(i.u64()?),
                ticks: i.u64()?,
            },
            6 => RecordBody::GuardDenied {
                task: TaskId(i.u64()?),
                capability: CapabilityId(i.u32()?),
            },
            7 => RecordBody::Trapped {
                task: TaskId(i.u64()?),
                ticks: i.u64()?,
                reason: i.string()?,
            },
            8 => RecordBody::ConsoleCommand { line: i.string()? },
            9 => RecordBody::ReplayHead {
                len: i.u64()?,
                head_hash: i.hash()?,
            },
            10 => RecordBody::RaftApplied {
                index: i.u64()?,
                term: i.u64()?,
                entry_hash: i.hash()?,
            },
            11 => RecordBody::MerkleRootPublished {
                size: i.u64()?,
                root: i.hash()?,
            },
            12 => RecordBody::RequestRefused {
                reason: i.string()?,
            },
            13 => {
                let tag = i.u16()?;
                let bytes = i.bytes()?;
                // As `raw_bytes`: longer than the limit does not decode.
                if bytes.len() > MAX_CUSTOM_BYTES {
                    return None;
                }
                RecordBody::Custom {
                    tag,
                    bytes: bytes.to_vec(),
                }
            }
            14 => RecordBody::Damaged {
                offset: i.u64()?,
                bytes: i.u64()?,
                last_good_seq: i.opt()?,
                last_good_hash: i.hash()?,
                resumed_seq: i.opt()?,
            },
            15 => RecordBody::SuperblocksRebuilt {
                records: i.u64()?,
                end_offset: i.u64()?,
            },
            16 => RecordBody::Formatted {
                discarded_bytes: i.u64()?,
            },
            17 => RecordBody::AuditAlarm {
                used_bytes: i.u64()?,
                high_water_bytes: i.u64()?,
                region_bytes: i.u64()?,
            },
            18 => RecordBody::RefusalSummary {
                refused: i.u64()?,
                first_reason: i.string()?,
                unrecorded: i.u64()?,
            },
            _ => return None,
        };
        i.rest.is_empty().then_some(body)
    }
}

/// Serialises a byte vector as serde bytes (one copy instead of one call per byte).
/// The postcard encoding is identical to a sequence of `u8` (varint length, raw bytes).
mod raw_bytes {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string of at most 1024 bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() > super::MAX_CUSTOM_BYTES {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                if out.len() >= super::MAX_CUSTOM_BYTES {
                    return Err(A::Error::invalid_length(out.len() + 1, &self));
                }
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// What the serde path makes of `payload` (the check's rule before
    /// [`RecordBody::decode`]): the body if all of it decodes.
    fn by_serde(payload: &[u8]) -> Option<RecordBody> {
        match postcard::take_from_bytes::<RecordBody>(payload) {
            Ok((body, [])) => Some(body),
            _ => None,
        }
    }

    fn one_of_each() -> Vec<RecordBody> {
        let h = Hash32([0xA7; 32]);
        let long = |n: usize| String::from("é").repeat(n);
        vec![
            RecordBody::Boot { count: u64::MAX },
            RecordBody::Recovered { dropped_bytes: 300 },
            RecordBody::RegionFull {
                records: 1 << 40,
                bytes: 5,
            },
            RecordBody::TaskEnqueued {
                task: TaskId(u64::MAX - 1),
                core: CoreId(u16::MAX),
            },
            RecordBody::TaskExecuted {
                task: TaskId(7),
                ticks: 1 << 63,
                output_hash: h,
            },
            RecordBody::BudgetExceeded {
                task: TaskId(0),
                ticks: 128,
            },
            RecordBody::GuardDenied {
                task: TaskId(9),
                capability: CapabilityId(u32::MAX),
            },
            RecordBody::Trapped {
                task: TaskId(1),
                ticks: 2,
                reason: long(3),
            },
            RecordBody::ConsoleCommand { line: long(70) },
            RecordBody::ReplayHead {
                len: 16_384,
                head_hash: h,
            },
            RecordBody::RaftApplied {
                index: 1 << 21,
                term: 3,
                entry_hash: h,
            },
            RecordBody::MerkleRootPublished { size: 0, root: h },
            RecordBody::RequestRefused {
                reason: String::new(),
            },
            RecordBody::Custom {
                tag: 0x4000,
                bytes: vec![0x80; 200],
            },
            RecordBody::Damaged {
                offset: 4096,
                bytes: 1,
                last_good_seq: None,
                last_good_hash: h,
                resumed_seq: Some(u64::MAX),
            },
            RecordBody::SuperblocksRebuilt {
                records: 1,
                end_offset: 2,
            },
            RecordBody::Formatted { discarded_bytes: 0 },
            RecordBody::AuditAlarm {
                used_bytes: 1,
                high_water_bytes: 2,
                region_bytes: 3,
            },
            RecordBody::RefusalSummary {
                refused: 4,
                first_reason: long(1),
                unrecorded: 5,
            },
        ]
    }

    #[test]
    fn decode_reads_exactly_what_postcard_reads() {
        let bodies = one_of_each();
        assert_eq!(bodies.len(), usize::from(RecordBody::KIND_COUNT));
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for body in &bodies {
            let enc = postcard::to_allocvec(body).expect("encodes");
            assert_eq!(RecordBody::decode(&enc).as_ref(), Some(body));
            // Every prefix, a trailing byte, every byte changed four ways.
            for end in 0..=enc.len() {
                cases.push(enc[..end].to_vec());
            }
            cases.push([enc.clone(), vec![0]].concat());
            for at in 0..enc.len() {
                for v in [0x00, 0x01, 0x7F, 0x80, 0xFF, enc[at] ^ 0x02] {
                    let mut c = enc.clone();
                    c[at] = v;
                    cases.push(c);
                }
            }
        }
        // Varints at and past their limits, made-up kinds, over-long Custom bytes,
        // bad options.
        let over_custom = postcard::to_allocvec(&RecordBody::Custom {
            tag: 1,
            bytes: vec![0; MAX_CUSTOM_BYTES],
        })
        .expect("encodes");
        let mut too_long = over_custom.clone();
        too_long[2] += 1; // length 1025 (LEB128 0x81 0x08 -> 0x82 0x08)
        too_long.push(0);
        cases.push(over_custom);
        cases.push(too_long);
        for tail in [
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            &[
                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x81, 0x00,
            ],
            &[0x80, 0x00],
        ] {
            cases.push([&[0u8][..], tail].concat()); // Boot { count }
            cases.push([&[3u8, 1][..], &tail[..tail.len().min(3)]].concat()); // core: u16
            cases.push([&[3u8, 1][..], &[0xFF, 0xFF, 0x03]].concat());
            cases.push([&[3u8, 1][..], &[0xFF, 0xFF, 0x04]].concat());
            cases.push([&[6u8, 1][..], &tail[..tail.len().min(5)]].concat()); // u32
            cases.push([&[6u8, 1][..], &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]].concat());
            cases.push([&[6u8, 1][..], &[0xFF, 0xFF, 0xFF, 0xFF, 0x10]].concat());
        }
        for kind in [19u8, 20, 127] {
            cases.push(vec![kind, 0]);
        }
        cases.push(vec![0x8A, 0x00, 1, 1, 0]); // kind 10 as an over-long varint
        cases.push(vec![0x80, 0x80, 0x80, 0x80, 0x10, 0]); // kind past u32
        // Arbitrary bytes: a fixed sequence from the one PRNG (the testing kit's).
        let mut rng = xdv_types::rng::SplitMix64::new(0x5EED);
        for _ in 0..20_000 {
            let z = rng.next_u64();
            let len = (z % 48) as usize;
            let mut c: Vec<u8> = (0..len)
                .map(|k| (z >> (k % 8 * 8)) as u8 ^ k as u8)
                .collect();
            if let Some(first) = c.first_mut() {
                *first %= 20;
            }
            cases.push(c);
        }
        let (mut ok, mut refused) = (0, 0);
        for c in &cases {
            let want = by_serde(c);
            assert_eq!(RecordBody::decode(c), want, "payload {c:02x?}");
            if want.is_some() {
                ok += 1;
            } else {
                refused += 1;
            }
        }
        assert!(ok > 500 && refused > 500, "{ok} decoded, {refused} refused");
    }
}
