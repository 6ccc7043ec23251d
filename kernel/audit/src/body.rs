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
