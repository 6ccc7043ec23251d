//! [`AuditLog`]: appends records to a region the kernel owns, crash-consistently,
//! and reopens a damaged region without losing a readable record.
//!
//! Append protocol: (1) write the whole record (header, payload, previous hash,
//! own hash) into free space after the chain; (2) `fence(Release)`; (3) write the
//! *older* superblock copy with the new end offset, next sequence number, head hash
//! and generation + 1. The protocol needs only store→store order (every record byte
//! before any byte of the superblock that covers it): a release fence gives that
//! on every target (no instruction on x86's TSO, `dmb ish` on AArch64, `fence rw,w`
//! on RISC-V) and keeps the compiler from sinking record stores below it; a
//! `SeqCst` fence (`mfence`) would add store→load order, which nothing here reads.
//! A crash before (3) leaves a valid prefix (the record is either
//! complete, and found by the scan at the next open, or torn, and cut); a crash
//! during (3) tears at most the older copy, and the newer copy is still valid.
//! The record is durable when `append` returns.
//!
//! Recovery at open (docs/audit.md § Recovery): the region is scanned with
//! [`crate::scan::Scanner`], which reads every record that verifies, across damaged
//! ranges. Only a torn tail — bytes the superblock proves lie beyond the last
//! durable write ([`crate::scan::torn_tail`]) — is cut. Every other damaged range
//! is kept as it is and recorded by a `Damaged` record; appends continue after the
//! last readable record or damaged byte, never over either. Unreadable superblocks
//! are rebuilt from the scan; only a region with no superblock and no recognisable
//! record is formatted, and a `Formatted` record says what that discarded. A region
//! whose intact superblock names another format version is refused
//! ([`RegionError::OtherVersion`]), never formatted: its history stays readable by
//! the build that wrote it.
//!
//! Space policy: bulk records ([`RecordBody::is_bulk`], what an unauthenticated
//! sender can cause) may fill the region only up to its high-water mark
//! ([`BULK_HIGH_WATER_PERCENT`]); past it they are refused with
//! [`AuditError::AboveHighWater`] and counted, and one `AuditAlarm` record is
//! written. The node's own records may use the rest; [`REGIONFULL_RESERVE_BYTES`]
//! at the end are kept for one final `RegionFull` record, after which every append
//! fails with [`AuditError::Full`]. Nothing is ever overwritten.
//!
//! Proofs ([`AuditLog::root_for_publication`]): a published root comes with the
//! consistency proof from the size the cluster holds, built from the Merkle
//! accumulator at that size. The log keeps the accumulators of the sizes it
//! published since open; after a restart, the scan at open keeps checkpoints of
//! the accumulator every [`CHECKPOINT_INTERVAL`] readable records (at most
//! [`MAX_CHECKPOINTS`], about 92 KiB at most, see `scan::Checkpoints`), so the
//! first proof after a restart walks and verifies fewer than one interval of
//! records from the checkpoint before the held size, not every record from the
//! first. Checkpoints are taken across damaged ranges (see `scan::Checkpoints`).
//! The records a root adds past the held size are exactly the readable records:
//! those the region held at open are found by the same verifying scan, resumed
//! after the held size and stepping over damaged ranges as at open (damage found at
//! open may lie after a size published before it); those the log appended since are
//! read as written, as [`AuditLog::merkle_root`] reads them.
//!
//! Every walk of the log ([`AuditLog::records`], the proof walks) scans its bytes up
//! to its end, not the whole region (whose last non-zero byte would have to be found
//! again), with the whole region's bound on sequence numbers (`max_seq` of the
//! region size, as the scan at open and the host verifier use): it finds exactly the
//! records they find, also after a damaged range.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{Ordering, fence};
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

use crate::body::{FieldTooLong, MAX_REFUSAL_REASON_BYTES, RecordBody};
use crate::format::{
    DATA_START, Damage, FORMAT_VERSION, HEADER_BYTES, MAX_PAYLOAD_BYTES, MAX_RECORD_BYTES,
    MAX_REGION_BYTES, MIN_REGION_BYTES, RecordHeader, RecordView, SUPERBLOCK_BYTES,
    SUPERBLOCK_OFFSETS, Superblock, SuperblockPrefix, TRAILER_BYTES, VerifyError, find_record,
    genesis_hash, max_seq, nonzero_end,
};
use crate::merkle::MerkleAccumulator;
use crate::scan::{
    CHECKPOINT_INTERVAL, Checkpoints, DamagedRange, Inspection, MAX_CHECKPOINTS, RegionScan,
    Scanned, Scanner, VerifyReport, inspect_region, scan_checkpointed, torn_tail,
};

/// Bytes kept free for the final `RegionFull` record (its postcard payload is at
/// most 1 + 10 + 10 bytes).
pub const REGIONFULL_RESERVE_BYTES: usize = HEADER_BYTES + 21 + TRAILER_BYTES;

/// Bulk records may use the record area up to this percentage; the rest is
/// reserved for the node's own records.
pub const BULK_HIGH_WATER_PERCENT: usize = 75;

/// `Damaged` records one open writes at most (a region damaged in many places is
/// recorded over several boots rather than filled with damage reports at once).
pub const MAX_DAMAGE_RECORDS_PER_OPEN: usize = 32;

const REGION_FULL_KIND: u16 = 2;

/// The region offset bulk records may not pass in a region of `region_bytes`.
pub fn high_water_mark(region_bytes: usize) -> usize {
    let area = region_bytes.saturating_sub(REGIONFULL_RESERVE_BYTES + DATA_START);
    DATA_START + area / 100 * BULK_HIGH_WATER_PERCENT + area % 100 * BULK_HIGH_WATER_PERCENT / 100
}

/// The region cannot be used at all.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// Size outside `MIN_REGION_BYTES..=MAX_REGION_BYTES`.
    BadSize { bytes: usize },
    /// The region holds a chain of another node (named by a valid superblock, or
    /// with none, by its records); it is not overwritten.
    ForeignNode { found: NodeId },
    /// The superblock records a different region size; not overwritten.
    SizeMismatch { recorded: u64, actual: u64 },
    /// The region was written in another audit format version (an intact
    /// superblock copy says `found`, none says this build's); not overwritten.
    OtherVersion { found: u16 },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::BadSize { bytes } => write!(
                f,
                "audit region of {bytes} bytes (must be {MIN_REGION_BYTES}..={MAX_REGION_BYTES})"
            ),
            RegionError::ForeignNode { found } => {
                write!(
                    f,
                    "audit region belongs to node {found}; refusing to overwrite"
                )
            }
            RegionError::SizeMismatch { recorded, actual } => write!(
                f,
                "audit region recorded as {recorded} bytes but is {actual}; refusing to overwrite"
            ),
            RegionError::OtherVersion { found } => write!(
                f,
                "audit region in format version {found}, this build writes version \
                 {FORMAT_VERSION}; refusing to overwrite"
            ),
        }
    }
}

/// An append failed; nothing was written (except, once each, the final
/// `RegionFull` record and the `AuditAlarm` record).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuditError {
    /// The region is full. `sealed_now`: this call wrote the `RegionFull` record
    /// (say so on the console); `false`: it was already full.
    Full {
        sealed_now: bool,
    },
    /// A bulk record does not fit below the high-water mark: refused and counted
    /// (`refused`: bulk records refused since open).
    AboveHighWater {
        refused: u64,
    },
    FieldTooLong(FieldTooLong),
    /// The body did not encode (cannot happen for valid bodies; kept specific).
    Encode,
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Full { sealed_now: true } => {
                write!(
                    f,
                    "audit region full: sealed with a RegionFull record, appends stop"
                )
            }
            AuditError::Full { sealed_now: false } => write!(f, "audit region full"),
            AuditError::AboveHighWater { refused } => write!(
                f,
                "audit region past its {BULK_HIGH_WATER_PERCENT}% high-water mark: bulk record \
                 refused ({refused} refused since boot); the node's own records continue"
            ),
            AuditError::FieldTooLong(e) => write!(f, "audit record: {e}"),
            AuditError::Encode => write!(f, "audit record body does not encode"),
        }
    }
}

/// How full the region is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FillLevel {
    Normal,
    /// Past the high-water mark (or a bulk record no longer fits below it): bulk
    /// records are refused and counted; an `AuditAlarm` record says so.
    AboveHighWater,
    /// Sealed (or no room even for the seal): every append fails.
    Full,
}

/// The region's fill state, for the kernel's alarm and the console.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FillState {
    pub level: FillLevel,
    /// Offset just past the last record.
    pub used_bytes: u64,
    pub high_water_bytes: u64,
    pub region_bytes: u64,
    /// Bulk records refused since open.
    pub bulk_refused: u64,
    /// The `AuditAlarm` record is in the chain (or was attempted).
    pub alarm_recorded: bool,
}

/// What `open` found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The region was formatted: blank, or no valid superblock and no recognisable
    /// record anywhere.
    pub formatted: bool,
    /// Non-zero bytes that formatting discarded (0 for a blank region; otherwise
    /// the first record is `Formatted { discarded_bytes }`).
    pub discarded_bytes: u64,
    /// The boot count after this open (1 on the first boot).
    pub boot_count: u64,
    /// Readable records found.
    pub records: u64,
    /// Chain segments found (1 normally; more after damage).
    pub segments: u64,
    /// Bytes of a torn tail cut (zeroed) at `dropped_at`; `open` then appended
    /// `Recovered { dropped_bytes }`.
    pub dropped_bytes: u64,
    pub dropped_at: u64,
    /// Sequence numbers in the damaged ranges found by this open: records that were
    /// durable and are no longer readable (0 normally).
    pub lost_durable_records: u64,
    /// The first damaged range found by this open, as an error.
    pub first_error: Option<VerifyError>,
    /// Valid superblock copies found (2 normally, 1 after a torn superblock write).
    pub superblock_copies_valid: u8,
    /// Neither copy was valid: both were rebuilt from the scan and
    /// `SuperblocksRebuilt` appended.
    pub superblocks_rebuilt: bool,
    /// Damaged ranges found by this open (not recorded before), in region order;
    /// `recorded_by` is the `Damaged` record that now covers each.
    pub damaged: Vec<DamagedRange>,
    /// Damaged ranges that could not be recorded (region full, or more than
    /// [`MAX_DAMAGE_RECORDS_PER_OPEN`] / the scan's list): a later open records them.
    pub damage_unrecorded: u64,
    /// Records `open` appended (`SuperblocksRebuilt`, `Damaged`, `Recovered`,
    /// `Formatted`).
    pub recovery_records: u64,
}

impl OpenReport {
    fn formatted(discarded_bytes: u64) -> OpenReport {
        OpenReport {
            formatted: true,
            discarded_bytes,
            boot_count: 1,
            records: 0,
            segments: 0,
            dropped_bytes: 0,
            dropped_at: 0,
            lost_durable_records: 0,
            first_error: None,
            superblock_copies_valid: 0,
            superblocks_rebuilt: false,
            damaged: Vec::new(),
            damage_unrecorded: 0,
            recovery_records: 0,
        }
    }
}

/// What `open` does about the damage a scan found.
struct Plan {
    /// Where appends continue: past the last readable record, the last kept
    /// damaged byte and the superblock's committed end.
    append_at: usize,
    next_seq: u64,
    /// Damaged ranges to record, in region order.
    pending: Vec<DamagedRange>,
    lost: u64,
}

impl Plan {
    fn new(scan: &RegionScan, sb: Option<&Superblock>, torn_at: Option<u64>, len: usize) -> Plan {
        let sb_end = sb
            .map(|s| s.end_offset)
            .filter(|&e| e >= DATA_START as u64 && e <= len as u64);
        let sb_count = sb
            .map(|s| s.record_count)
            .filter(|&c| c <= max_seq(len))
            .unwrap_or(0);
        let next_seq = scan.next_seq.max(sb_count);
        let mut pending: Vec<DamagedRange> = scan
            .damaged
            .iter()
            .filter(|d| d.recorded_by.is_none() && Some(d.offset) != torn_at)
            .cloned()
            .collect();
        let mut append_at = scan.end;
        if let Some(t) = scan.trailing.as_ref().filter(|t| Some(t.offset) != torn_at) {
            append_at = t.offset + t.bytes;
        }
        if let Some(e) = sb_end.filter(|&e| e > append_at) {
            // Durable up to `e` by the superblock's word: that space stays used.
            match pending.last_mut() {
                Some(d) if d.resumed_seq.is_none() && d.offset + d.bytes == append_at => {
                    d.bytes = e - d.offset;
                }
                _ => pending.push(DamagedRange {
                    offset: append_at,
                    bytes: e - append_at,
                    what: Damage::MissingRecords { expected: sb_count },
                    last_good: (scan.records > 0).then(|| (scan.next_seq - 1, scan.head)),
                    resumed_seq: None,
                    recorded_by: None,
                }),
            }
            append_at = e;
        }
        let lost = pending
            .iter()
            .map(|d| {
                let from = d.last_good.map_or(0, |(s, _)| s + 1);
                d.resumed_seq.unwrap_or(next_seq).saturating_sub(from)
            })
            .fold(0u64, u64::saturating_add);
        Plan {
            append_at: append_at as usize,
            next_seq,
            pending,
            lost,
        }
    }
}

/// Sizes whose Merkle accumulators an [`AuditLog`] keeps for consistency proofs.
const PROOF_SNAPSHOTS: usize = 8;

/// The Merkle accumulator over the first readable records, where they end, and where
/// a verifying scan of the records after them resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Frontier {
    /// The accumulator over those records (its length is their number).
    acc: MerkleAccumulator,
    /// Region offset just past the last of them (`DATA_START` for none).
    end: usize,
    /// The last one's (seq, hash), where a verifying scan resumes
    /// ([`Scanner::resume`]). `None` when there is none, or when it was read as
    /// written: at or after `own_start`, where no scan is needed.
    last: Option<(u64, Hash32)>,
}

/// Most records one published root goes past the last one
/// ([`AuditLog::root_for_publication`]): about 2 × this many SHA-256 compressions;
/// records the region held at open (the first publications after a restart) are
/// also verified as they are read (one more SHA-256 over each, its payload decoded).
pub const MAX_PUBLISH_STEP: u64 = 4096;

/// An open audit log over a region.
pub struct AuditLog<'a> {
    region: &'a mut [u8],
    node: NodeId,
    boot_count: u64,
    /// Offset just past the last record: appends go here.
    end: usize,
    /// Readable records (the Merkle tree's size).
    records: u64,
    /// Sequence number of the next record.
    next_seq: u64,
    head: Hash32,
    generation: u64,
    /// The copy holding the newest superblock; the next write goes to the other.
    newest_copy: usize,
    full: bool,
    /// Bulk records must end at or before this offset.
    high_water: usize,
    alarm_recorded: bool,
    /// The highest `index` of a readable `RaftApplied` record (0 if none).
    max_raft_applied: u64,
    /// Bulk records refused since open, and since the last refusal summary.
    bulk_refused: u64,
    bulk_unsummarised: u64,
    /// Merkle accumulator, folded forward lazily by `merkle_root`: at open the scan's
    /// (every readable record before `own_start`), then this log's own records.
    merkle: MerkleAccumulator,
    merkle_end: usize,
    /// Where this log's own appends began: the end `open` chose, past every readable
    /// record and kept damaged byte of the region it found (`DATA_START` for a
    /// formatted region). Everything from here to `end` is records this log wrote,
    /// back to back, read as written; before it, the readable records are those a
    /// verifying scan finds.
    own_start: usize,
    /// The frontiers at the last [`PROOF_SNAPSHOTS`] sizes
    /// [`AuditLog::root_for_publication`] published a root over, newest last: kept to
    /// prove the node's next root extends the last one the cluster holds.
    snaps: Vec<Frontier>,
    /// Checkpoints of the accumulator taken by the scan at open (every
    /// [`CHECKPOINT_INTERVAL`] readable records, at most [`MAX_CHECKPOINTS`]): where
    /// `frontier_at` starts after a restart. Nothing invalidates them while the log
    /// is open: appends write only after `end`, and a region is formatted or reopened
    /// only by building a new log (whose checkpoints come from its own scan).
    checkpoints: Checkpoints,
    /// Records `frontier_at` read walking the region (not from `snaps`) since open.
    frontier_walked: u64,
    /// The superblock words fixed while the log is open, and their checksum state.
    sb_prefix: SuperblockPrefix,
}

impl<'a> AuditLog<'a> {
    /// Opens `region` for `node` and recovers it (see the module documentation):
    /// formats it only if it holds neither a valid superblock nor a recognisable
    /// record; otherwise keeps every readable record and every damaged byte except
    /// a torn tail, records what it found (`SuperblocksRebuilt`, `Damaged`,
    /// `Recovered`, `Formatted`), and bumps the boot count. The caller then appends
    /// `Boot`.
    pub fn open(
        region: &'a mut [u8],
        node: NodeId,
    ) -> Result<(AuditLog<'a>, OpenReport), RegionError> {
        let checkpoints = Checkpoints::new(CHECKPOINT_INTERVAL, MAX_CHECKPOINTS);
        Self::open_checkpointed(region, node, checkpoints)
    }

    /// [`Self::open`], its scan keeping `checkpoints` (tests choose small intervals).
    fn open_checkpointed(
        region: &'a mut [u8],
        node: NodeId,
        checkpoints: Checkpoints,
    ) -> Result<(AuditLog<'a>, OpenReport), RegionError> {
        let len = region.len();
        if !(MIN_REGION_BYTES..=MAX_REGION_BYTES).contains(&len) {
            return Err(RegionError::BadSize { bytes: len });
        }
        let copies = Superblock::read_both(region);
        match Superblock::current(&copies) {
            Some((_, sb)) if sb.node != node => {
                return Err(RegionError::ForeignNode { found: sb.node });
            }
            Some((_, sb)) if sb.region_bytes != len as u64 => {
                return Err(RegionError::SizeMismatch {
                    recorded: sb.region_bytes,
                    actual: len as u64,
                });
            }
            Some(_) => {}
            None => {
                if let Some(found) = Superblock::other_version(region) {
                    return Err(RegionError::OtherVersion { found });
                }
                let dirty = nonzero_end(region);
                match find_record(region, DATA_START, dirty, None, 0) {
                    None => return Ok(Self::format_discarding(region, node, dirty)),
                    Some(v) if v.header.node != node => {
                        return Err(RegionError::ForeignNode {
                            found: v.header.node,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        let probe = Superblock::current(&copies).map(|(_, sb)| sb.end_offset);
        // The bound of the region size (a valid superblock names this size).
        let bound = max_seq(len);
        let scan = scan_checkpointed(region, node, bound, probe, &mut |_| {}, checkpoints);
        Ok(Self::recover(region, node, &copies, scan))
    }

    /// Cuts a torn tail, rebuilds the superblocks and records the damage `scan`
    /// found; appends continue after everything kept.
    fn recover(
        region: &'a mut [u8],
        node: NodeId,
        copies: &[Option<Superblock>; 2],
        mut scan: RegionScan,
    ) -> (AuditLog<'a>, OpenReport) {
        let len = region.len();
        let current = Superblock::current(copies);
        let sb = current.as_ref().map(|(_, sb)| sb);
        let valid = copies.iter().flatten().count() as u8;
        let torn = torn_tail(copies, &scan).map(|t| (t.offset, t.bytes));
        if let Some((at, n)) = torn {
            region[at as usize..(at + n) as usize].fill(0);
        }
        let plan = Plan::new(&scan, sb, torn.map(|t| t.0), len);
        let boot_count = match sb {
            Some(sb) => sb.boot_count.saturating_add(1),
            None => scan.last_boot_count.map_or(1, |c| c.saturating_add(1)),
        };
        let mut log = AuditLog {
            node,
            boot_count,
            end: plan.append_at,
            records: scan.records,
            next_seq: plan.next_seq,
            head: scan.head,
            generation: sb.map_or(0, |s| s.generation),
            newest_copy: current.as_ref().map_or(1, |(i, _)| *i),
            full: scan.last_kind == Some(REGION_FULL_KIND),
            high_water: high_water_mark(len),
            alarm_recorded: scan.alarm_recorded,
            max_raft_applied: scan.max_raft_applied,
            bulk_refused: 0,
            bulk_unsummarised: 0,
            merkle: scan.merkle.clone(),
            merkle_end: plan.append_at,
            own_start: plan.append_at,
            snaps: Vec::new(),
            // Taken from the scan of the bytes this log keeps: the torn tail zeroed
            // above lies after every readable record, so after every checkpoint.
            checkpoints: core::mem::take(&mut scan.checkpoints),
            frontier_walked: 0,
            sb_prefix: SuperblockPrefix::new(node, len as u64, boot_count),
            region,
        };
        let head = log.head;
        log.write_superblock(&head);
        if valid == 0 {
            log.write_superblock(&head);
        }
        let mut report = OpenReport {
            formatted: false,
            discarded_bytes: 0,
            boot_count,
            records: scan.records,
            segments: scan.segments_total,
            dropped_bytes: torn.map_or(0, |t| t.1),
            dropped_at: torn.map_or(0, |t| t.0),
            lost_durable_records: plan.lost,
            first_error: plan.pending.first().map(DamagedRange::error),
            superblock_copies_valid: valid,
            superblocks_rebuilt: valid == 0,
            damaged: Vec::new(),
            damage_unrecorded: scan.damaged_total.saturating_sub(scan.damaged.len() as u64),
            recovery_records: 0,
        };
        log.record_recovery(&scan, plan, &mut report);
        (log, report)
    }

    /// Appends the records that say what `open` found (see [`OpenReport`]),
    /// stamped with the highest timestamp in the region.
    fn record_recovery(&mut self, scan: &RegionScan, plan: Plan, report: &mut OpenReport) {
        let stamp = Timestamp(scan.max_stamp);
        let core = CoreId(0);
        if report.superblocks_rebuilt {
            let body = RecordBody::SuperblocksRebuilt {
                records: scan.records,
                end_offset: self.end as u64,
            };
            if self.append_own(stamp, core, &body).is_ok() {
                report.recovery_records += 1;
            }
        }
        for (i, mut d) in plan.pending.into_iter().enumerate() {
            if i < MAX_DAMAGE_RECORDS_PER_OPEN {
                d.recorded_by = self.append_own(stamp, core, &d.body(self.node)).ok();
            }
            match d.recorded_by {
                Some(_) => report.recovery_records += 1,
                None => report.damage_unrecorded += 1,
            }
            report.damaged.push(d);
        }
        if report.dropped_bytes > 0 {
            let body = RecordBody::Recovered {
                dropped_bytes: report.dropped_bytes,
            };
            if self.append_own(stamp, core, &body).is_ok() {
                report.recovery_records += 1;
            }
        }
    }

    /// Formats `region` for `node` unconditionally (zeroes it, boot count 1): for an
    /// operator who decided to discard a region `open` refused (`ForeignNode`,
    /// `SizeMismatch`, `OtherVersion`) or could not use. `open` formats by itself only a region
    /// without a valid superblock and without any recognisable record.
    pub fn format(
        region: &'a mut [u8],
        node: NodeId,
    ) -> Result<(AuditLog<'a>, OpenReport), RegionError> {
        let len = region.len();
        if !(MIN_REGION_BYTES..=MAX_REGION_BYTES).contains(&len) {
            return Err(RegionError::BadSize { bytes: len });
        }
        Ok(Self::format_checked(region, node))
    }

    /// `open`'s format: counts what it discards and, if that is not nothing, makes
    /// `Formatted { discarded_bytes }` the first record.
    /// `dirty` is [`nonzero_end`] of the region: nothing past it needs counting or
    /// clearing (a blank region is neither read again nor written).
    fn format_discarding(
        region: &'a mut [u8],
        node: NodeId,
        dirty: usize,
    ) -> (AuditLog<'a>, OpenReport) {
        debug_assert!(region[dirty..].iter().all(|&b| b == 0));
        let discarded = region[..dirty].iter().filter(|&&b| b != 0).count() as u64;
        region[..dirty].fill(0);
        let (mut log, mut report) = Self::format_zeroed(region, node);
        report.discarded_bytes = discarded;
        if discarded > 0 {
            let body = RecordBody::Formatted {
                discarded_bytes: discarded,
            };
            if log.append_own(Timestamp(0), CoreId(0), &body).is_ok() {
                report.recovery_records = 1;
            }
        }
        (log, report)
    }

    fn format_checked(region: &'a mut [u8], node: NodeId) -> (AuditLog<'a>, OpenReport) {
        region.fill(0);
        Self::format_zeroed(region, node)
    }

    /// Formats a region that is all zero bytes.
    fn format_zeroed(region: &'a mut [u8], node: NodeId) -> (AuditLog<'a>, OpenReport) {
        let len = region.len();
        let mut log = AuditLog {
            node,
            boot_count: 1,
            end: DATA_START,
            records: 0,
            next_seq: 0,
            head: genesis_hash(node),
            generation: 0,
            newest_copy: 1,
            full: false,
            high_water: high_water_mark(len),
            alarm_recorded: false,
            max_raft_applied: 0,
            bulk_refused: 0,
            bulk_unsummarised: 0,
            merkle: MerkleAccumulator::new(),
            merkle_end: DATA_START,
            own_start: DATA_START,
            snaps: Vec::new(),
            // Empty: every record of this log is appended by it, and the sizes it
            // publishes are kept in `snaps`; a walk starts at `DATA_START`.
            checkpoints: Checkpoints::disabled(),
            frontier_walked: 0,
            sb_prefix: SuperblockPrefix::new(node, len as u64, 1),
            region,
        };
        // Write both copies so either alone describes the empty chain.
        let head = log.head;
        log.write_superblock(&head);
        log.write_superblock(&head);
        (log, OpenReport::formatted(0))
    }

    /// Writes the older copy; `head` is `self.head`, passed by value so that the
    /// append path encodes the words of the hash it just computed (in registers)
    /// instead of reloading them from `self.head` right after storing them.
    fn write_superblock(&mut self, head: &Hash32) {
        debug_assert_eq!(*head, self.head);
        // Saturating: a crafted superblock may carry u64::MAX.
        self.generation = self.generation.saturating_add(1);
        let target = 1 - self.newest_copy;
        let at = SUPERBLOCK_OFFSETS[target];
        // No fence after this store: the next record's bytes may become visible
        // before it, which is harmless (the scan at open accepts complete records
        // past the superblock's end); the fence in `write_record` orders each
        // record before the superblock that covers it, and this store before the
        // next superblock store.
        let mut sb = [0u8; SUPERBLOCK_BYTES];
        self.sb_prefix.encode_into(
            &mut sb,
            self.end as u64,
            self.next_seq,
            head,
            self.generation,
        );
        self.region[at..at + SUPERBLOCK_BYTES].copy_from_slice(&sb);
        self.newest_copy = target;
    }

    /// Appends one record and returns its sequence number. The record is durable
    /// (in the region, superblock updated) when this returns `Ok`. A bulk record
    /// that does not fit below the high-water mark is refused
    /// ([`AuditError::AboveHighWater`]); the node's own record that first passes
    /// the mark is preceded by the one `AuditAlarm` record.
    pub fn append(
        &mut self,
        stamp: Timestamp,
        core: CoreId,
        body: &RecordBody,
    ) -> Result<u64, AuditError> {
        if self.full {
            return Err(AuditError::Full { sealed_now: false });
        }
        body.check_limits().map_err(AuditError::FieldTooLong)?;
        if body.is_bulk() {
            if self.fits(body, self.high_water) {
                return self
                    .write_record(stamp, core, body)
                    .ok_or(AuditError::Encode);
            }
            self.bulk_refused += 1;
            self.bulk_unsummarised += 1;
            self.raise_alarm(stamp, core)?;
            return Err(AuditError::AboveHighWater {
                refused: self.bulk_refused,
            });
        }
        if !self.alarm_recorded && !self.fits(body, self.high_water) {
            self.raise_alarm(stamp, core)?;
        }
        self.append_own(stamp, core, body)
    }

    /// Appends `RefusalSummary { refused, first_reason, unrecorded }`, where
    /// `unrecorded` is the number of bulk records the region refused since the last
    /// summary (then reset). `first_reason` is cut to its limit at a character
    /// boundary. A node's own record: it may use the region past the mark.
    pub fn append_refusal_summary(
        &mut self,
        stamp: Timestamp,
        core: CoreId,
        refused: u64,
        first_reason: &str,
    ) -> Result<u64, AuditError> {
        let reason = xdv_types::prefix_within(first_reason, MAX_REFUSAL_REASON_BYTES);
        let body = RecordBody::RefusalSummary {
            refused,
            first_reason: String::from(reason),
            unrecorded: self.bulk_unsummarised,
        };
        let seq = self.append(stamp, core, &body)?;
        self.bulk_unsummarised = 0;
        Ok(seq)
    }

    /// Writes the `AuditAlarm` record, once per region.
    fn raise_alarm(&mut self, stamp: Timestamp, core: CoreId) -> Result<(), AuditError> {
        if self.alarm_recorded {
            return Ok(());
        }
        self.alarm_recorded = true;
        let alarm = RecordBody::AuditAlarm {
            used_bytes: self.end as u64,
            high_water_bytes: self.high_water as u64,
            region_bytes: self.region.len() as u64,
        };
        self.append_own(stamp, core, &alarm).map(|_| ())
    }

    /// Appends a record of the node's own (no high-water limit); seals the region
    /// with `RegionFull` when the record does not fit before the reserve.
    fn append_own(
        &mut self,
        stamp: Timestamp,
        core: CoreId,
        body: &RecordBody,
    ) -> Result<u64, AuditError> {
        if self.full {
            return Err(AuditError::Full { sealed_now: false });
        }
        let limit = self.region.len() - REGIONFULL_RESERVE_BYTES;
        if self.fits(body, limit) {
            return self
                .write_record(stamp, core, body)
                .ok_or(AuditError::Encode);
        }
        let seal = RecordBody::RegionFull {
            records: self.records,
            bytes: (self.end - DATA_START) as u64,
        };
        // Always fits for regions we wrote (the reserve); a region whose kept
        // damage reaches into the reserve just stops.
        let sealed =
            self.fits(&seal, self.region.len()) && self.write_record(stamp, core, &seal).is_some();
        self.full = true;
        Err(AuditError::Full { sealed_now: sealed })
    }

    /// The record for `body` would end at or before `limit`. Costs a compare,
    /// except within one largest record of `limit`, where the payload is encoded
    /// into a scratch buffer to learn its size (never into the region: free space
    /// stays zero).
    fn fits(&self, body: &RecordBody, limit: usize) -> bool {
        if self.end + MAX_RECORD_BYTES <= limit {
            return true;
        }
        let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
        body.encode_into(&mut scratch)
            .is_some_and(|n| self.end + HEADER_BYTES + n + TRAILER_BYTES <= limit)
    }

    /// Writes a record at the end of the chain; the caller checked that it fits
    /// ([`Self::fits`]). `None` only if it does not (nothing useful written).
    fn write_record(&mut self, stamp: Timestamp, core: CoreId, body: &RecordBody) -> Option<u64> {
        let off = self.end;
        let payload_start = off + HEADER_BYTES;
        let payload_limit = self
            .region
            .len()
            .checked_sub(TRAILER_BYTES)?
            .min(payload_start + MAX_PAYLOAD_BYTES);
        let slot = self.region.get_mut(payload_start..payload_limit)?;
        let payload_bytes = body.encode_into(slot)?;
        let header = RecordHeader {
            version: FORMAT_VERSION,
            seq: self.next_seq,
            kind: body.kind(),
            stamp,
            node: self.node,
            core,
            payload_bytes: payload_bytes as u32,
        };
        let total = header.record_bytes();
        let rec = &mut self.region[off..off + total];
        rec[..HEADER_BYTES].copy_from_slice(&header.encode());
        let hashed = total - 32;
        rec[hashed - 32..hashed].copy_from_slice(&self.head.0);
        let hash = record_hash(&rec[..hashed]);
        rec[hashed..].copy_from_slice(&hash);
        fence(Ordering::Release);
        let seq = self.next_seq;
        self.end += total;
        self.records += 1;
        self.next_seq += 1;
        let hash = Hash32(hash);
        self.head = hash;
        self.write_superblock(&hash);
        if let RecordBody::RaftApplied { index, .. } = body {
            self.max_raft_applied = self.max_raft_applied.max(*index);
        }
        Some(seq)
    }

    /// The highest `index` of a readable `RaftApplied` record (0 if none): what a walk
    /// of [`Self::records`] finds, kept by `open`'s scan and by every append.
    pub fn max_raft_applied(&self) -> u64 {
        self.max_raft_applied
    }

    pub fn node(&self) -> NodeId {
        self.node
    }
    /// Hash of the last record (the genesis hash if there is none).
    pub fn head_hash(&self) -> Hash32 {
        self.head
    }
    /// Number of readable records (the Merkle tree's size; equal to the next
    /// sequence number unless damage destroyed records).
    pub fn len(&self) -> u64 {
        self.records
    }
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
    /// Sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    /// Offset just past the last record (superblocks included).
    pub fn bytes_used(&self) -> u64 {
        self.end as u64
    }
    /// Bytes left for ordinary records (the `RegionFull` reserve excluded).
    pub fn bytes_free(&self) -> u64 {
        (self.region.len() - REGIONFULL_RESERVE_BYTES).saturating_sub(self.end) as u64
    }
    pub fn region_bytes(&self) -> u64 {
        self.region.len() as u64
    }
    pub fn boot_count(&self) -> u64 {
        self.boot_count
    }
    /// The region was sealed with `RegionFull`; appends fail.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// How full the region is, and whether the alarm was raised.
    pub fn fill_state(&self) -> FillState {
        let level = if self.full {
            FillLevel::Full
        } else if self.alarm_recorded || self.end > self.high_water {
            FillLevel::AboveHighWater
        } else {
            FillLevel::Normal
        };
        FillState {
            level,
            used_bytes: self.end as u64,
            high_water_bytes: self.high_water as u64,
            region_bytes: self.region.len() as u64,
            bulk_refused: self.bulk_refused,
            alarm_recorded: self.alarm_recorded,
        }
    }

    /// Merkle root ([`crate::merkle`]) over all readable record hashes, in region order. Folds in
    /// records appended since the last call (O(new records)); state is O(log n).
    pub fn merkle_root(&mut self) -> Hash32 {
        let mut off = self.merkle_end;
        while off < self.end {
            // Records after `merkle_end` were all written by us, contiguously.
            let Some(h) = read_record_extent(self.region, off) else {
                break;
            };
            self.merkle.push(&h.1);
            off += h.0;
        }
        self.merkle_end = off;
        self.merkle.root()
    }

    /// Keeps `f` (a size just published) for later proofs.
    fn snapshot(&mut self, f: Frontier) {
        if self
            .snaps
            .last()
            .is_some_and(|s| s.acc.len() >= f.acc.len())
        {
            return;
        }
        if self.snaps.len() == PROOF_SNAPSHOTS {
            self.snaps.remove(0);
        }
        self.snaps.push(f);
    }

    /// The frontier after the first `m` readable records (`None` when there are
    /// fewer): from a size published since this log was opened (older sizes are
    /// dropped: the cluster holds the root over `m` now), else — after a restart — by
    /// a walk over the readable records, verified as [`Self::records`] reads them,
    /// that starts at the last checkpoint the scan at open kept at or before `m` (see
    /// `Checkpoints`) instead of at the first record: it reads fewer than the
    /// checkpoint interval ([`CHECKPOINT_INTERVAL`] up to a 64 MiB region) records
    /// when `m` is at most the readable records at open, and yields exactly what the
    /// walk from the first record would.
    fn frontier_at(&mut self, m: u64) -> Option<Frontier> {
        if let Some(i) = self.snaps.iter().position(|s| s.acc.len() == m) {
            self.snaps.drain(..i);
            return Some(self.snaps[0].clone());
        }
        let bound = self.seq_bound();
        let region = &self.region[..self.end];
        let (mut f, mut scan) = match self.checkpoints.at_or_before(m) {
            Some(c) => (
                Frontier {
                    acc: c.acc.clone(),
                    end: c.end,
                    last: Some(c.last),
                },
                Scanner::resume(region, self.node, bound, c.end, c.last),
            ),
            None => (
                Frontier {
                    acc: MerkleAccumulator::new(),
                    end: DATA_START,
                    last: None,
                },
                Scanner::within(region, self.node, bound),
            ),
        };
        let mut walked = 0u64;
        while f.acc.len() < m {
            match scan.next() {
                Some(Scanned::Record { view, .. }) => {
                    walked += 1;
                    f.acc.push(&view.hash);
                    f.end = view.offset as usize + view.header.record_bytes();
                    f.last = Some((view.header.seq, view.hash));
                }
                Some(Scanned::Damaged(_)) => {}
                None => break,
            }
        }
        self.frontier_walked += walked;
        (f.acc.len() == m).then_some(f)
    }

    /// Records the proof walks after a restart read (`frontier_at`; not the records
    /// a publication adds): for tests of the checkpoints' bound.
    #[doc(hidden)]
    pub fn proof_records_walked(&self) -> u64 {
        self.frontier_walked
    }

    /// What a node publishes ([`crate::merkle`]): `(records, root, from, proof)`, a
    /// root and the proof that it extends the root over `published` records the
    /// cluster holds for this node (`from` 0 and no proof when it holds none). The
    /// root covers at most [`MAX_PUBLISH_STEP`] records more than `published` (all of
    /// them when fewer): its cost in one loop iteration stays bounded after a burst
    /// of records, and the next publications catch up. When no proof can be made
    /// from there (the region was reset or rewritten) the proof is empty: the log
    /// does not take the root.
    ///
    /// The records past `published` are exactly the readable records (those
    /// [`Self::records`] yields and [`Self::merkle_root`] covers), in order, so a
    /// root over all of them is `merkle_root()`, the root the host verifier computes
    /// from the region. Those the region held at open are found by the verifying
    /// scan resumed after record `published`, across damaged ranges as at open (one
    /// more SHA-256 over each record), with the region's bound on sequence numbers;
    /// those this log appended since are read as written, as `merkle_root` reads
    /// them.
    pub fn root_for_publication(
        &mut self,
        published: Option<u64>,
    ) -> (u64, Hash32, u64, Vec<Hash32>) {
        let root = self.merkle_root();
        let n = self.merkle.len();
        let m = match published {
            Some(m) if m > 0 => m,
            _ => {
                let f = Frontier {
                    acc: self.merkle.clone(),
                    end: self.merkle_end,
                    last: None,
                };
                self.snapshot(f);
                return (n, root, 0, Vec::new());
            }
        };
        let Some(Frontier {
            acc,
            end: mut off,
            mut last,
        }) = (m <= n).then(|| self.frontier_at(m)).flatten()
        else {
            return (n, root, m, Vec::new());
        };
        let mut new = Vec::new();
        let mut scanned_out = false;
        if off < self.own_start {
            // Resumed by `frontier_at` or a snapshot before `own_start`: always known.
            let Some(after) = last else {
                return (n, root, m, Vec::new());
            };
            let bound = self.seq_bound();
            let mut scan = Scanner::resume(&self.region[..self.end], self.node, bound, off, after);
            while off < self.own_start && (new.len() as u64) < MAX_PUBLISH_STEP {
                match scan.next() {
                    Some(Scanned::Record { view, .. }) => {
                        new.push(view.hash);
                        off = view.offset as usize + view.header.record_bytes();
                        last = Some((view.header.seq, view.hash));
                    }
                    Some(Scanned::Damaged(_)) => {}
                    None => {
                        scanned_out = true;
                        break;
                    }
                }
            }
        }
        while !scanned_out && off < self.merkle_end && (new.len() as u64) < MAX_PUBLISH_STEP {
            // At or after `own_start`: records this log wrote, back to back.
            let Some((len, h)) = read_record_extent(self.region, off) else {
                return (n, root, m, Vec::new());
            };
            new.push(h);
            off += len;
            last = None;
        }
        let Ok(proof) = acc.consistency_proof_to(&new) else {
            return (n, root, m, Vec::new());
        };
        let mut to = acc;
        for h in &new {
            to.push(h);
        }
        let records = to.len();
        let root = to.root();
        self.snapshot(Frontier {
            acc: to,
            end: off,
            last,
        });
        (records, root, m, proof)
    }

    /// The readable records in region order (across damaged ranges), verified as
    /// they are read: exactly those the scan at open found, then those appended
    /// since (the host verifier's).
    pub fn records(&self) -> impl Iterator<Item = Result<RecordView, VerifyError>> + '_ {
        let bound = self.seq_bound();
        Scanner::within(&self.region[..self.end], self.node, bound).filter_map(|item| match item {
            Scanned::Record { view, .. } => Some(Ok(view)),
            Scanned::Damaged(_) => None,
        })
    }

    /// The region's bound on sequence numbers (`max_seq` of its size), which every
    /// walk over the log's bytes uses, as the scan at open and the host verifier do
    /// ([`crate::format::region_max_seq`] of the region).
    fn seq_bound(&self) -> u64 {
        max_seq(self.region.len())
    }

    /// The last `n` records (oldest first).
    pub fn tail(&self, n: usize) -> Vec<RecordView> {
        let skip = self.records.saturating_sub(n as u64);
        self.records()
            .skip(skip as usize)
            .filter_map(Result::ok)
            .collect()
    }

    /// Verifies the whole region in place (as the host verifier would).
    pub fn verify_in_place(&self) -> Result<VerifyReport, VerifyError> {
        crate::scan::verify_region(self.region)
    }

    /// Segments, damaged ranges and verdict of the whole region (as the host
    /// verifier reports them).
    pub fn inspect(&self) -> Inspection {
        inspect_region(self.region)
    }

    /// The whole region's bytes (for the host tools and tests).
    pub fn region(&self) -> &[u8] {
        self.region
    }
}

/// SHA-256 of `msg` (the same value as `Sha256::digest`), arranged for the append
/// path, whose message was written by narrow stores just before:
///
/// - The padded final block(s) are built in a local buffer *before* the message
///   blocks are copied next to them, so their stores are retired and in the cache
///   when the compression reads them. (`Sha256::digest` copies the tail into the
///   hasher's buffer after compressing the full blocks; the 16-byte loads of the
///   last compression then wait for those narrow stores to commit — a bubble on
///   the append path's serial chain.)
/// - Up to [`HASH_GROUP`] blocks go to one `compress256` call: each call boundary
///   (state stored, reloaded and reshuffled) adds latency to that chain. For the
///   common record sizes (up to 3 full blocks before the tail) it is one call.
///
/// The full blocks are copied into the group buffer with 64-byte moves; that copy
/// costs a few cycles and is what lets them share a call with the tail (a slice of
/// blocks cannot be borrowed from the region without `unsafe`).
fn record_hash(msg: &[u8]) -> [u8; 32] {
    const H0: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    type Block = GenericArray<u8, U64>;
    let full = msg.len() / 64;
    let (blocks, rest) = msg.split_at(full * 64);
    let tail_blocks = if rest.len() < 56 { 1 } else { 2 };
    // The last call takes the last `last` full blocks and the tail.
    let last = full.min(HASH_GROUP - tail_blocks);
    let (lead, final_blocks) = blocks.split_at((full - last) * 64);
    let mut state = H0;
    let mut group: [Block; HASH_GROUP] = Default::default();
    for chunk in lead.chunks(HASH_GROUP * 64) {
        let mut n = 0;
        for (dst, src) in group.iter_mut().zip(chunk.chunks_exact(64)) {
            dst.copy_from_slice(src);
            n += 1;
        }
        sha2::compress256(&mut state, &group[..n]);
    }
    // Tail first: 0x80 after the message, zeroes, the bit length at the end.
    let mut padded = [0u8; 128];
    padded[..rest.len()].copy_from_slice(rest);
    padded[rest.len()] = 0x80;
    let bits = (msg.len() as u64).wrapping_mul(8);
    padded[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits.to_be_bytes());
    for (dst, src) in group[last..]
        .iter_mut()
        .zip(padded.chunks_exact(64))
        .take(tail_blocks)
    {
        dst.copy_from_slice(src);
    }
    for (dst, src) in group.iter_mut().zip(final_blocks.chunks_exact(64)) {
        dst.copy_from_slice(src);
    }
    sha2::compress256(&mut state, &group[..last + tail_blocks]);
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Blocks per `compress256` call in [`record_hash`].
const HASH_GROUP: usize = 4;

/// (record length, stored hash) of the record at `off`, without verifying it.
fn read_record_extent(region: &[u8], off: usize) -> Option<(usize, Hash32)> {
    let b = region.get(off + 25..off + 29)?;
    let len = HEADER_BYTES + u32::from_le_bytes(b.try_into().ok()?) as usize + TRAILER_BYTES;
    let h = region.get(off + len - 32..off + len)?;
    Some((len, Hash32(h.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;
    use crate::scan::Checkpoint;
    use alloc::vec;
    use sha2::{Digest, Sha256};
    use xdv_types::rng::SplitMix64;

    #[test]
    fn record_hash_is_sha256() {
        // Every tail length (0..64, both sides of the 55/56 padding split), one and
        // two call groups, and the largest record.
        let msg: alloc::vec::Vec<u8> = (0..2200u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in (0..=700).chain([1000, 2048 + 29 + 32, 2200]) {
            let want: [u8; 32] = Sha256::digest(&msg[..len]).into();
            assert_eq!(record_hash(&msg[..len]), want, "length {len}");
        }
    }

    const NODE: NodeId = NodeId(7);

    /// Records of varying sizes (none bulk).
    fn body(i: u64) -> RecordBody {
        match i % 3 {
            0 => RecordBody::Boot { count: i },
            1 => RecordBody::ConsoleCommand {
                line: "x".repeat((i % 70) as usize),
            },
            _ => RecordBody::Custom {
                tag: 3,
                bytes: vec![i as u8; (i * 7 % 90) as usize],
            },
        }
    }

    fn region_with(n: u64, size: usize) -> Vec<u8> {
        let mut region = vec![0u8; size];
        let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
        for i in 0..n {
            log.append(Timestamp(i + 1), CoreId(0), &body(i)).unwrap();
        }
        drop(log);
        region
    }

    /// (offset, length) of every record of a clean region.
    fn extents(region: &[u8]) -> Vec<(usize, usize)> {
        Scanner::new(region, NODE)
            .map(|item| match item {
                Scanned::Record { view, .. } => (view.offset as usize, view.header.record_bytes()),
                Scanned::Damaged(d) => panic!("damaged: {d:?}"),
            })
            .collect()
    }

    /// `frontier_at`'s walk before checkpoints: every readable record from the
    /// first (the reference the checkpointed walk must equal).
    fn full_walk(log: &AuditLog<'_>, m: u64) -> Option<Frontier> {
        let mut f = Frontier {
            acc: MerkleAccumulator::new(),
            end: DATA_START,
            last: None,
        };
        for r in log.records() {
            if f.acc.len() == m {
                break;
            }
            let r = r.ok()?;
            f.acc.push(&r.hash);
            f.end = r.offset as usize + read_record_extent(log.region, r.offset as usize)?.0;
            f.last = Some((r.header.seq, r.hash));
        }
        (f.acc.len() == m).then_some(f)
    }

    /// Opens copies of `region` with checkpoints every `interval` records (at most
    /// `max`) and without any, and checks for sizes up to past the end (around every
    /// possible checkpoint and more), before and after appends: the log's walk reads
    /// as many records as the scan at open found, `frontier_at` equals the full walk
    /// and reads only the records after its checkpoint (fewer than the interval),
    /// and `root_for_publication` gives what the log without checkpoints gives and
    /// the root and proof RFC 9162 gives over the readable records' hashes. Returns
    /// (checkpoints kept, interval).
    fn check_region(region: &[u8], interval: u64, max: usize) -> (usize, u64) {
        let (mut a_bytes, mut b_bytes) = (region.to_vec(), region.to_vec());
        let cps = Checkpoints::new(interval, max);
        let (mut a, rep) = AuditLog::open_checkpointed(&mut a_bytes, NODE, cps).unwrap();
        let (mut b, _) =
            AuditLog::open_checkpointed(&mut b_bytes, NODE, Checkpoints::disabled()).unwrap();
        let kept = (a.checkpoints.len(), a.checkpoints.interval());
        assert!(!a.checkpoints.is_closed());
        for round in 0..2 {
            let n = a.len();
            let hashes: Vec<Hash32> = a.records().map(|v| v.unwrap().hash).collect();
            assert_eq!(hashes.len() as u64, n, "round {round}");
            // The first sizes, those around every checkpoint, some between, the last.
            let sizes = (0..=n + 2).filter(|&m| {
                m < 40
                    || matches!(m % interval, 0 | 1)
                    || m % interval == interval - 1
                    || m % 37 == 0
                    || m + 3 >= n
            });
            for m in sizes {
                a.snaps.clear();
                let before = a.frontier_walked;
                let got = a.frontier_at(m);
                assert_eq!(got, full_walk(&a, m), "size {m} of {n}, round {round}");
                let walked = a.frontier_walked - before;
                let from = a.checkpoints.at_or_before(m).map_or(0, |c| c.acc.len());
                if m <= n {
                    assert_eq!(walked, m - from, "size {m}");
                    if m <= rep.records {
                        assert!(walked < a.checkpoints.interval(), "size {m}");
                    }
                }
                a.snaps.clear();
                b.snaps.clear();
                let published = a.root_for_publication(Some(m));
                assert_eq!(
                    published,
                    b.root_for_publication(Some(m)),
                    "size {m} of {n}, round {round}"
                );
                if (1..=n).contains(&m) {
                    let records = (m + MAX_PUBLISH_STEP).min(n);
                    let want = (
                        records,
                        merkle::merkle_root(&hashes, records as usize).unwrap(),
                        m,
                        merkle::consistency_proof(&hashes, m as usize, records as usize).unwrap(),
                    );
                    assert_eq!(published, want, "size {m} of {n}, round {round}");
                }
            }
            // Appends after open are not checkpointed and change none kept.
            for i in 0..40 {
                a.append(Timestamp(9000 + i), CoreId(1), &body(i)).unwrap();
                b.append(Timestamp(9000 + i), CoreId(1), &body(i)).unwrap();
            }
            assert_eq!((a.checkpoints.len(), a.checkpoints.interval()), kept);
        }
        kept
    }

    /// The checkpointed walk equals the full one on a clean region and on regions
    /// damaged in every way `open` keeps (a flipped byte, wiped records, damage
    /// across a checkpoint and before the first record, lost last records, a torn
    /// tail, random damage), with the list thinned several times; records of higher
    /// numbers copied to an earlier place are checkpointed like any other.
    #[test]
    fn checkpointed_walks_equal_the_full_walk_on_damaged_regions() {
        const N: u64 = 1000;
        const SIZE: usize = 512 << 10;
        let clean = region_with(N, SIZE);
        let ext = extents(&clean);
        let used = ext[ext.len() - 1].0 + ext[ext.len() - 1].1;
        let mut cases: Vec<(&str, Vec<u8>)> = vec![("clean", clean.clone())];
        let mut r = clean.clone();
        r[ext[100].0 + 40] ^= 0x04;
        cases.push(("flipped byte", r));
        let mut r = clean.clone();
        r[ext[300].0..ext[340].0].fill(0);
        cases.push(("wiped records", r));
        let mut r = clean.clone();
        r[ext[127].0 + 50..ext[129].0 + 50].fill(0x5a);
        cases.push(("across a checkpoint", r));
        let mut r = clean.clone();
        r[DATA_START] ^= 0xff;
        cases.push(("before the first record", r));
        let mut r = clean.clone();
        r[ext[990].0..used].fill(0);
        cases.push(("last records lost", r));
        let mut r = clean.clone();
        r[used + 10..used + 300].fill(0x33);
        cases.push(("torn tail", r));
        let mut rng = SplitMix64(0xc4ec);
        for _ in 0..6 {
            let mut r = clean.clone();
            for _ in 0..3 {
                let at = rng.range(DATA_START as u64..used as u64) as usize;
                match rng.below(3) {
                    0 => r[at] ^= 1 << rng.below(8),
                    1 => r[at..(at + rng.below(600) as usize).min(used)].fill(0),
                    _ => {
                        // A record copied elsewhere (a lower or higher number).
                        let (o, l) = ext[rng.below(N) as usize];
                        let rec = r[o..o + l].to_vec();
                        r[at..at + l].copy_from_slice(&rec);
                    }
                }
            }
            cases.push(("random", r));
        }
        for (name, region) in &cases {
            let (kept, interval) = check_region(region, 16, 8);
            if *name != "random" {
                assert!(kept >= 5 && interval >= 128, "{name}");
            }
        }
        // Records 1700..=1760 of a longer chain pasted just after record 20's start:
        // the scan at open reads them after the damage (their numbers are within
        // `max_seq` of the region), and so do the log's walks over its bytes, whose
        // bound is the region's too: the scan at open checkpoints at 16, 32, 48, 64
        // and 80 of its 83 readable records, and the walks from there are exact.
        let r = pasted_records_region();
        assert_eq!(check_region(&r, 16, 8), (5, 16));
        let seq_21 = |s: Scanner<'_>| {
            s.filter_map(|i| match i {
                Scanned::Record { view, .. } => Some(view.header.seq),
                Scanned::Damaged(_) => None,
            })
            .nth(20)
        };
        assert_eq!(seq_21(Scanner::new(&r, NODE)), Some(1700));
        let mut bytes = r.clone();
        let (log, _) = AuditLog::open(&mut bytes, NODE).unwrap();
        let bound = log.seq_bound();
        assert_eq!(bound, crate::format::region_max_seq(&log.region[..log.end]));
        let own = Scanner::within(&log.region[..log.end], NODE, bound);
        assert_eq!(seq_21(own), Some(1700));
        // `Scanner::new` over the log's bytes takes the region's bound from its
        // superblock: the same records.
        assert_eq!(
            seq_21(Scanner::new(&log.region[..log.end], NODE)),
            Some(1700)
        );
        // A region formatted again: its new log has no checkpoint of the old one.
        let mut r = clean.clone();
        let (mut log, _) = AuditLog::format(&mut r, NODE).unwrap();
        for i in 0..50 {
            log.append(Timestamp(i + 1), CoreId(0), &body(i)).unwrap();
        }
        assert_eq!(log.checkpoints.len(), 0);
        for m in 0..=52 {
            assert_eq!(log.frontier_at(m), full_walk(&log, m), "size {m}");
        }
    }

    /// A 512 KiB region of 300 records with records 1700..=1760 of a longer chain of
    /// the same node pasted just after record 20's start: after the damage, the
    /// scan finds records whose numbers are far above the region's own (yet within
    /// `max_seq` of the region), then the region's records after them.
    /// The highest `RaftApplied` index of a walk of the log's readable records.
    fn walked_max_applied(log: &AuditLog<'_>) -> u64 {
        log.records()
            .filter_map(|r| match r.unwrap().body {
                RecordBody::RaftApplied { index, .. } => Some(index),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_highest_applied_index_is_kept_without_a_walk() {
        let mut region = vec![0u8; 64 * 1024];
        let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
        assert_eq!(log.max_raft_applied(), 0);
        // Indices out of order (a restart re-records from a lower index), other
        // records between them.
        let indices = [3u64, 9, 4, 12, 7, 11];
        for (i, &index) in indices.iter().enumerate() {
            let applied = RecordBody::RaftApplied {
                index,
                term: 1,
                entry_hash: Hash32([index as u8; 32]),
            };
            log.append(Timestamp(2 * i as u64 + 1), CoreId(0), &applied)
                .unwrap();
            log.append(Timestamp(2 * i as u64 + 2), CoreId(0), &body(i as u64))
                .unwrap();
            assert_eq!(log.max_raft_applied(), walked_max_applied(&log));
        }
        assert_eq!(log.max_raft_applied(), 12);
        drop(log);
        let (log, _) = AuditLog::open(&mut region, NODE).unwrap();
        assert_eq!(log.max_raft_applied(), 12, "after a reopen");
        // The record holding 12 damaged: open finds the highest readable one.
        let at = log
            .records()
            .map(|r| r.unwrap())
            .find(|v| matches!(v.body, RecordBody::RaftApplied { index: 12, .. }))
            .unwrap()
            .offset as usize;
        drop(log);
        region[at + HEADER_BYTES + 1] ^= 0xff;
        let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
        assert_eq!(rep.damaged.len(), 1, "{rep:?}");
        assert_eq!(log.max_raft_applied(), 11);
        assert_eq!(walked_max_applied(&log), 11);
    }

    fn pasted_records_region() -> Vec<u8> {
        const SIZE: usize = 512 << 10;
        let long = region_with(1800, SIZE);
        let ext_long = extents(&long);
        let (o, _) = ext_long[1700];
        let (o_end, l_end) = ext_long[1760];
        let run = &long[o..o_end + l_end];
        let mut r = region_with(300, SIZE);
        let at = extents(&r)[20].0 + 1;
        r[at..at + run.len()].copy_from_slice(run);
        r
    }

    /// (seq, hash) of every readable record the host verifier's scan reads, and its
    /// verdict.
    fn host_records(region: &[u8]) -> (Vec<(u64, Hash32)>, Result<VerifyReport, VerifyError>) {
        let mut seen = Vec::new();
        let insp = crate::scan::inspect_region_with(region, &mut |v| {
            seen.push((v.header.seq, v.hash));
        });
        (seen, insp.verdict)
    }

    /// Every walk of a log reads exactly the records the scan at open and the host
    /// verifier read, also where records of higher numbers were pasted into the
    /// region: `records()` yields them (same numbers and hashes, in order), `tail`
    /// their last ones, `frontier_at` their prefixes, and a root published from any
    /// held size up to the end is `merkle_root()` and the host verifier's root
    /// (with the RFC 9162 proof from the held size); before appends and after, and
    /// after a reopen.
    #[test]
    fn every_walk_reads_the_records_open_and_the_host_verifier_read() {
        let mut bytes = pasted_records_region();
        for reopen in 0..2 {
            let (mut log, rep) = AuditLog::open(&mut bytes, NODE).unwrap();
            assert_eq!(rep.damaged.is_empty(), reopen == 1, "reopen {reopen}");
            for round in 0..2 {
                let what = alloc::format!("reopen {reopen}, round {round}");
                let (host, verdict) = host_records(log.region());
                let report = verdict.unwrap();
                let n = log.len();
                assert_eq!(host.len() as u64, n, "{what}");
                let walked: Vec<(u64, Hash32)> = log
                    .records()
                    .map(|r| r.unwrap())
                    .map(|v| (v.header.seq, v.hash))
                    .collect();
                let seqs = |v: &[(u64, Hash32)]| v.iter().map(|r| r.0).collect::<Vec<u64>>();
                assert_eq!(seqs(&walked), seqs(&host), "{what}");
                assert_eq!(walked, host, "{what}");
                // A host tool's `Scanner::new` over the bytes up to the verdict's last
                // record (`xdv audit prove`) reads them too.
                let used = &log.region()[..report.bytes_used as usize];
                let prefix: Vec<(u64, Hash32)> = Scanner::new(used, NODE)
                    .filter_map(|i| match i {
                        Scanned::Record { view, .. } => Some((view.header.seq, view.hash)),
                        Scanned::Damaged(_) => None,
                    })
                    .collect();
                assert_eq!(prefix, host, "{what}");
                // The pasted records are among them (read by open after the damage).
                assert!(host.iter().any(|&(s, _)| s == 1700), "{what}");
                let tail: Vec<(u64, Hash32)> =
                    log.tail(5).iter().map(|v| (v.header.seq, v.hash)).collect();
                assert_eq!(tail, host[host.len() - 5..], "{what}");
                let hashes: Vec<Hash32> = host.iter().map(|&(_, h)| h).collect();
                let root = log.merkle_root();
                assert_eq!(root, merkle::merkle_root(&hashes, n as usize).unwrap());
                assert_eq!((report.records, report.merkle_root), (n, root), "{what}");
                for m in [1, 19, 20, 21, 22, 50, 81, 82, 83, 100, 200, n - 1, n] {
                    if m > n {
                        continue;
                    }
                    log.snaps.clear();
                    let f = log.frontier_at(m).unwrap();
                    assert_eq!(f.acc.len(), m, "{what}: size {m}");
                    assert_eq!(
                        f.acc.root(),
                        merkle::merkle_root(&hashes, m as usize).unwrap()
                    );
                    log.snaps.clear();
                    let got = log.root_for_publication(Some(m));
                    let proof = merkle::consistency_proof(&hashes, m as usize, n as usize);
                    assert_eq!(got, (n, root, m, proof.unwrap()), "{what}: from {m}");
                }
                for i in 0..30 {
                    log.append(Timestamp(5000 + i), CoreId(1), &body(i))
                        .unwrap();
                }
            }
        }
    }

    /// The accumulator of `len` leaves (dummy subtree roots: only the shape matters).
    fn acc_of_len(len: u64) -> MerkleAccumulator {
        let stack = (0..64u32)
            .rev()
            .filter(|b| len >> b & 1 == 1)
            .map(|h| (h, Hash32([h as u8; 32])))
            .collect();
        MerkleAccumulator::from_subtrees(len, stack).unwrap()
    }

    /// The documented memory bound: at most `MAX_CHECKPOINTS` checkpoints of 80 bytes
    /// and at most 8 subtrees each (92 KiB), up to the largest region's records,
    /// with one checkpoint interval at most 4096 records up to a 64 MiB region; after
    /// each thinning the kept sizes are consecutive multiples of the interval.
    #[test]
    fn checkpoints_stay_within_their_memory_bound() {
        assert_eq!(core::mem::size_of::<Checkpoint>(), 80);
        assert_eq!(core::mem::size_of::<(u32, Hash32)>(), 36);
        let mut c = Checkpoints::new(CHECKPOINT_INTERVAL, MAX_CHECKPOINTS);
        let most = max_seq(MAX_REGION_BYTES) + 1;
        let mut n = 0;
        while n < most {
            n += 1;
            // Only sizes at multiples of the interval do anything.
            if n % CHECKPOINT_INTERVAL != 0 {
                continue;
            }
            c.offer(&acc_of_len(n), n as usize, (n - 1, Hash32([0; 32])));
            assert!(c.len() <= MAX_CHECKPOINTS);
            let sizes: Vec<u64> = c.list().iter().map(|k| k.acc.len()).collect();
            let want: Vec<u64> = (1..=sizes.len() as u64).map(|k| k * c.interval()).collect();
            assert_eq!(sizes, want);
            let bytes: usize = c
                .list()
                .iter()
                .map(|k| 80 + 36 * k.acc.subtrees().len())
                .sum();
            assert!(c.list().iter().all(|k| k.acc.subtrees().len() <= 8));
            assert!(bytes <= MAX_CHECKPOINTS * (80 + 8 * 36));
            if n <= max_seq(64 << 20) + 1 {
                assert_eq!(c.interval(), CHECKPOINT_INTERVAL, "{n} records");
            }
        }
        assert!(c.interval() > CHECKPOINT_INTERVAL);
        assert!(max_seq(64 << 20) < (MAX_CHECKPOINTS as u64) * CHECKPOINT_INTERVAL);
    }
}
