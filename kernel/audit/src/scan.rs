//! Reading a region that may be damaged, and judging it.
//!
//! [`Scanner`] yields every readable record of a region in region order and, in
//! between, every damaged range; [`scan_region`] sums a scan up (segments, damaged
//! ranges and the `Damaged` records that acknowledge them); [`torn_tail`] is the one
//! rule deciding which bytes `open` may cut; [`inspect_region`] and
//! [`verify_region`] judge a region for the host verifier and `audit verify`.
//!
//! Invariants owned here:
//! - A record is *readable* when it verifies on its own (version, node, length,
//!   own hash, payload, limits) and continues the chain of the record before it in
//!   its segment (sequence number + 1, previous hash). The node at open, the host
//!   verifier and `AuditLog::records` find readable records with this one scanner.
//! - Where a record does not verify, the scanner resynchronises at the first later
//!   offset where a record with a higher sequence number verifies on its own
//!   ([`find_record`]); the bytes in between are one damaged range and the record
//!   found starts a new segment. Every byte from `DATA_START` to the last non-zero
//!   byte lies in a readable record or in a damaged range: nothing is skipped
//!   silently.
//! - The records found after a damaged range do not depend on how much of the
//!   region is scanned: the bound on their sequence numbers is the region's
//!   ([`region_max_seq`], from its superblock), not that of the bytes given. A scan
//!   of the log's bytes up to its end (`AuditLog::records`, its proof walks) reads
//!   exactly the records the scan of the whole region at open and the host
//!   verifier read.
//! - Scanning never panics, whatever the bytes; it hashes each record at most twice.
//! - A scan can be resumed right after any readable record (`Scanner::resume`, from
//!   the checkpoints `AuditLog::open` keeps): the scanner's whole state there is that
//!   record's end, sequence number and hash.

use alloc::vec::Vec;
use xdv_types::{Hash32, NodeId};

use crate::body::RecordBody;
use crate::format::{
    DATA_START, Damage, MAX_REGION_BYTES, MIN_REGION_BYTES, RecordView, Superblock, VerifyError,
    check_record, find_record, find_record_within, genesis_hash, header_is_blank, nonzero_end,
    region_max_seq,
};
use crate::merkle::MerkleAccumulator;

/// Segments and damaged ranges a [`RegionScan`] lists one by one; beyond this they
/// are only counted (a bound on memory, whatever the region holds).
pub const MAX_LISTED: usize = 256;

/// Bytes of a region that hold no readable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    /// Region offset of the first damaged byte (where a record should have started).
    pub offset: u64,
    pub bytes: u64,
    /// Why the record expected at `offset` is not readable.
    pub what: Damage,
    /// The last readable record before the range: (seq, hash).
    pub last_good: Option<(u64, Hash32)>,
    /// Sequence number of the readable record right after the range (`None`: no
    /// readable record follows — a tail).
    pub resumed_seq: Option<u64>,
    /// Sequence number of the `Damaged` record that covers this range, if any.
    pub recorded_by: Option<u64>,
}

impl DamagedRange {
    /// The range as a verification error (the sequence number expected there).
    pub fn error(&self) -> VerifyError {
        VerifyError {
            seq: self.last_good.map_or(0, |(s, _)| s.saturating_add(1)),
            offset: self.offset,
            what: self.what,
        }
    }

    /// The `Damaged` record body that acknowledges this range.
    pub fn body(&self, node: NodeId) -> RecordBody {
        RecordBody::Damaged {
            offset: self.offset,
            bytes: self.bytes,
            last_good_seq: self.last_good.map(|(s, _)| s),
            last_good_hash: self
                .last_good
                .map_or_else(|| genesis_hash(node), |(_, h)| h),
            resumed_seq: self.resumed_seq,
        }
    }

    fn end(&self) -> u64 {
        self.offset.saturating_add(self.bytes)
    }
}

/// One item of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// A readable record; `new_segment`: it starts a segment (the first record, or
    /// the first after a damaged range).
    Record {
        view: RecordView,
        new_segment: bool,
    },
    Damaged(DamagedRange),
}

/// Every readable record and every damaged range of a region, in region order
/// (see the module documentation).
pub struct Scanner<'r> {
    region: &'r [u8],
    node: NodeId,
    /// The region's bound on sequence numbers ([`crate::format::max_seq`]): a record
    /// found after a damaged range has at most this number.
    seq_bound: u64,
    offset: usize,
    /// (seq, prev hash) the record at `offset` must have.
    expect: (u64, Hash32),
    /// The last readable record: (seq, hash).
    last: Option<(u64, Hash32)>,
    new_segment: bool,
    nonzero_end: Option<usize>,
    done: bool,
}

impl<'r> Scanner<'r> {
    /// Scans `region` for the chain of `node`: a region from its first byte, cut to
    /// the region size or — when a valid superblock names that size — to any end at
    /// or past its last readable record (the bytes up to a log's end, say). Both
    /// yield the same records: the bound on sequence numbers is the region's either
    /// way ([`region_max_seq`]).
    pub fn new(region: &'r [u8], node: NodeId) -> Scanner<'r> {
        Scanner::within(region, node, region_max_seq(region))
    }

    /// [`Scanner::new`] with the region's bound on sequence numbers given
    /// (`max_seq` of its size).
    pub(crate) fn within(region: &'r [u8], node: NodeId, seq_bound: u64) -> Scanner<'r> {
        Scanner {
            region,
            node,
            seq_bound,
            offset: DATA_START,
            expect: (0, genesis_hash(node)),
            last: None,
            new_segment: true,
            nonzero_end: None,
            done: false,
        }
    }

    /// The scan of `region` for `node` (with the region's bound `seq_bound`) resumed
    /// right after the readable record `last` = (seq, hash) that ends at `offset`.
    /// When [`Scanner::within`] over the same bytes with the same bound yields that
    /// record there, this yields exactly what it yields after it: the state a scan
    /// keeps after a record is that record's end, sequence number and hash (the
    /// cached [`nonzero_end`] is a function of `region`).
    pub(crate) fn resume(
        region: &'r [u8],
        node: NodeId,
        seq_bound: u64,
        offset: usize,
        last: (u64, Hash32),
    ) -> Scanner<'r> {
        Scanner {
            region,
            node,
            seq_bound,
            offset,
            // Bounded by the region's max_seq (a readable record's): cannot overflow.
            expect: (last.0 + 1, last.1),
            last: Some(last),
            new_segment: false,
            nonzero_end: None,
            done: false,
        }
    }

    fn nonzero_end(&mut self) -> usize {
        *self
            .nonzero_end
            .get_or_insert_with(|| nonzero_end(self.region))
    }

    /// The damaged range starting at `w`: up to the next record that verifies on
    /// its own with a higher sequence number, or to the last non-zero byte.
    fn resync(&mut self, w: usize, what: Damage) -> DamagedRange {
        let nz = self.nonzero_end().max(w + 1);
        let min_seq = self.last.map_or(0, |(s, _)| s + 1);
        let found = find_record_within(
            self.region,
            w + 1,
            nz,
            Some(self.node),
            min_seq,
            self.seq_bound,
        );
        let mut range = DamagedRange {
            offset: w as u64,
            bytes: (nz - w) as u64,
            what,
            last_good: self.last,
            resumed_seq: None,
            recorded_by: None,
        };
        match found {
            Some(v) => {
                range.bytes = v.offset - w as u64;
                range.resumed_seq = Some(v.header.seq);
                self.offset = v.offset as usize;
                self.expect = (v.header.seq, v.prev_hash);
                self.new_segment = true;
            }
            None => self.done = true,
        }
        range
    }
}

impl Iterator for Scanner<'_> {
    type Item = Scanned;

    fn next(&mut self) -> Option<Scanned> {
        if self.done {
            return None;
        }
        let w = self.offset;
        let what = if header_is_blank(self.region, w) {
            if self.nonzero_end() <= w {
                self.done = true;
                return None;
            }
            Damage::StrayBytes
        } else {
            match check_record(self.region, w, Some(self.node), Some(self.expect)) {
                Ok(view) => {
                    self.offset += view.header.record_bytes();
                    self.last = Some((view.header.seq, view.hash));
                    // Bounded by the region's max_seq: cannot overflow.
                    self.expect = (view.header.seq + 1, view.hash);
                    let new_segment = core::mem::take(&mut self.new_segment);
                    return Some(Scanned::Record { view, new_segment });
                }
                Err(what) => what,
            }
        };
        Some(Scanned::Damaged(self.resync(w, what)))
    }
}

/// Readable records between two checkpoints [`AuditLog::open`] keeps at first.
///
/// [`AuditLog::open`]: crate::AuditLog::open
pub const CHECKPOINT_INTERVAL: u64 = 4096;

/// Most checkpoints kept; past this the list is thinned (every other one kept) and
/// the interval doubled. 256 × [`CHECKPOINT_INTERVAL`] is 1 Mi records, more than a
/// 64 MiB region holds (`max_seq` of 64 MiB is 713 k), so up to that size the interval
/// stays 4096.
pub const MAX_CHECKPOINTS: usize = 256;

/// A scan's state right after one readable record, with the Merkle accumulator
/// there: where a walk over the readable records can start instead of at
/// `DATA_START` ([`Scanner::resume`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The accumulator over the readable records up to and including this one (its
    /// length is their number).
    pub(crate) acc: MerkleAccumulator,
    /// Region offset just past the record.
    pub(crate) end: usize,
    /// The record's (seq, hash).
    pub(crate) last: (u64, Hash32),
}

/// Checkpoints of a scan every `interval` readable records (the accumulator at
/// `interval`, `2 × interval`, …), so that the accumulator and end offset of any
/// prefix of the readable records can later be found by walking fewer than
/// `interval` records from the last checkpoint at or before it.
///
/// Memory bound: at most `max` checkpoints (when one more would not fit, every
/// other one is dropped and `interval` doubles). Each is 80 bytes plus its
/// accumulator's perfect subtrees, 36 bytes each, one per set bit of its record
/// count; the counts are `k × interval` with `k ≤ max` and `interval` a power of
/// two times [`CHECKPOINT_INTERVAL`], so at most `log2(max)` bits are set (`max` a
/// power of two: 8 for [`MAX_CHECKPOINTS`]). With the defaults: at most 256 × (80 + 8 × 36) bytes =
/// 92 KiB whatever the region size (about 3 KiB for the 4 MiB default region).
///
/// Why checkpoints are exact: a walk later starts at a checkpoint with a
/// [`Scanner`] over `region[..end]` of the open log (shorter than the region the
/// scan at open read, and with a torn tail zeroed after it) and the region's bound
/// on sequence numbers, and must yield what a scan over those bytes from
/// `DATA_START` yields after that record, which is what the scan at open yielded.
/// Bytes up to a checkpoint never change while the log is open (appends go after
/// its end). A record that continues its chain is read the same from both (its
/// bytes lie below the log's end). The first record after a damaged range is
/// found by [`find_record`] with the same sequence-number bound in both (the
/// region's, whatever bytes are scanned): it is the first offset where a record
/// verifies on its own, and every candidate before it that fails in the whole
/// region fails in its prefix. Records an open log appends are not checkpointed
/// (the sizes it publishes are kept by the log).
#[derive(Clone, Debug)]
pub(crate) struct Checkpoints {
    /// Record counts `interval`, `2 × interval`, … in order.
    list: Vec<Checkpoint>,
    interval: u64,
    max: usize,
    /// Disabled: no checkpoint is ever taken.
    closed: bool,
}

impl Default for Checkpoints {
    fn default() -> Checkpoints {
        Checkpoints::disabled()
    }
}

impl Checkpoints {
    /// An empty list taking a checkpoint every `interval` (≥ 1) records, at most
    /// `max` (≥ 2) kept.
    pub(crate) fn new(interval: u64, max: usize) -> Checkpoints {
        Checkpoints {
            list: Vec::new(),
            interval: interval.max(1),
            max: max.max(2),
            closed: false,
        }
    }

    /// A list that stays empty (walks start at `DATA_START`).
    pub(crate) fn disabled() -> Checkpoints {
        Checkpoints {
            closed: true,
            ..Checkpoints::new(CHECKPOINT_INTERVAL, MAX_CHECKPOINTS)
        }
    }

    /// Takes a checkpoint at `acc` (the accumulator after the readable record
    /// `last` = (seq, hash), which ends at `end`) if its size is due.
    pub(crate) fn offer(&mut self, acc: &MerkleAccumulator, end: usize, last: (u64, Hash32)) {
        let n = acc.len();
        if self.closed || !n.is_multiple_of(self.interval) {
            return;
        }
        if self.list.len() >= self.max {
            let wider = self.interval.saturating_mul(2);
            self.list.retain(|c| c.acc.len().is_multiple_of(wider));
            self.interval = wider;
            if !n.is_multiple_of(wider) {
                return;
            }
        }
        self.list.push(Checkpoint {
            acc: acc.clone(),
            end,
            last,
        });
    }

    /// The last checkpoint over at most `m` records.
    pub(crate) fn at_or_before(&self, m: u64) -> Option<&Checkpoint> {
        let i = self.list.partition_point(|c| c.acc.len() <= m);
        i.checked_sub(1).map(|i| &self.list[i])
    }

    /// Records between checkpoints now.
    #[cfg(test)]
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// No checkpoint is taken ([`Checkpoints::disabled`]).
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    #[cfg(test)]
    pub(crate) fn list(&self) -> &[Checkpoint] {
        &self.list
    }
}

/// A run of readable records that chain to each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Region offsets of its first byte and just past its last record.
    pub offset: u64,
    pub end: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// Its first record's previous hash is the hash of the last readable record
    /// before it (the genesis hash for the first): the chain continues across the
    /// damaged range before it. `false` for old records whose predecessor was lost.
    pub linked: bool,
}

/// What a scan of a region found.
#[derive(Clone, Debug)]
pub struct RegionScan {
    pub node: NodeId,
    /// Readable records (the Merkle tree's size).
    pub records: u64,
    /// Offset just past the last readable record (`DATA_START` if none).
    pub end: u64,
    /// The sequence number after the last readable record's.
    pub next_seq: u64,
    /// Hash of the last readable record (the genesis hash if none).
    pub head: Hash32,
    /// The first [`MAX_LISTED`] segments, and how many there are.
    pub segments: Vec<Segment>,
    pub segments_total: u64,
    /// The first [`MAX_LISTED`] damaged ranges, and how many there are.
    pub damaged: Vec<DamagedRange>,
    pub damaged_total: u64,
    /// The first damaged range beyond the list (never counted as recorded).
    pub first_unlisted: Option<DamagedRange>,
    /// The last damaged range when no readable record follows it.
    pub trailing: Option<DamagedRange>,
    pub last_kind: Option<u16>,
    /// Highest timestamp of a readable record.
    pub max_stamp: u64,
    /// `count` of the last readable `Boot` record.
    pub last_boot_count: Option<u64>,
    /// A readable `AuditAlarm` record exists.
    pub alarm_recorded: bool,
    /// The highest `index` of a readable `RaftApplied` record (0 if none).
    pub max_raft_applied: u64,
    /// (seq, hash) of the readable record ending exactly at the probe offset.
    pub probe_hit: Option<(u64, Hash32)>,
    pub(crate) merkle: MerkleAccumulator,
    /// Checkpoints of [`Self::merkle`] (kept by `AuditLog::open` only).
    pub(crate) checkpoints: Checkpoints,
}

impl RegionScan {
    /// Merkle root ([`crate::merkle`]) over the readable records' hashes, in region order.
    pub fn merkle_root(&self) -> Hash32 {
        self.merkle.root()
    }

    /// Damaged ranges no `Damaged` record covers (listed or not).
    pub fn unrecorded(&self) -> u64 {
        let listed = self
            .damaged
            .iter()
            .filter(|d| d.recorded_by.is_none())
            .count() as u64;
        listed + self.damaged_total.saturating_sub(self.damaged.len() as u64)
    }

    /// The first damaged range no `Damaged` record covers, except `skip` (the
    /// offset of a torn tail that is not damage).
    pub fn first_unrecorded(&self, skip: Option<u64>) -> Option<&DamagedRange> {
        self.damaged
            .iter()
            .chain(self.first_unlisted.as_ref())
            .find(|d| d.recorded_by.is_none() && Some(d.offset) != skip)
    }

    fn add_record(&mut self, v: &RecordView, new_segment: bool, probe: Option<u64>) {
        if new_segment {
            self.segments_total += 1;
            if self.segments.len() < MAX_LISTED {
                self.segments.push(Segment {
                    offset: v.offset,
                    end: v.offset,
                    first_seq: v.header.seq,
                    last_seq: v.header.seq,
                    records: 0,
                    linked: v.prev_hash == self.head,
                });
            }
        }
        let end = v.offset + v.header.record_bytes() as u64;
        if self.segments_total == self.segments.len() as u64
            && let Some(s) = self.segments.last_mut()
        {
            s.end = end;
            s.last_seq = v.header.seq;
            s.records += 1;
        }
        self.records += 1;
        self.end = end;
        self.next_seq = v.header.seq + 1;
        self.head = v.hash;
        self.merkle.push(&v.hash);
        self.checkpoints
            .offer(&self.merkle, end as usize, (v.header.seq, v.hash));
        self.last_kind = Some(v.header.kind);
        self.max_stamp = self.max_stamp.max(v.header.stamp.0);
        if probe == Some(end) {
            self.probe_hit = Some((v.header.seq, v.hash));
        }
        match v.body {
            RecordBody::Boot { count } => self.last_boot_count = Some(count),
            RecordBody::AuditAlarm { .. } => self.alarm_recorded = true,
            RecordBody::RaftApplied { index, .. } => {
                self.max_raft_applied = self.max_raft_applied.max(index)
            }
            RecordBody::Damaged { offset, bytes, .. } => {
                let ack_end = offset.saturating_add(bytes);
                for d in &mut self.damaged {
                    if d.recorded_by.is_none() && d.offset >= offset && d.end() <= ack_end {
                        d.recorded_by = Some(v.header.seq);
                    }
                }
            }
            _ => {}
        }
    }

    fn add_damage(&mut self, d: DamagedRange) {
        self.damaged_total += 1;
        if d.resumed_seq.is_none() {
            self.trailing = Some(d.clone());
        }
        if self.damaged.len() < MAX_LISTED {
            self.damaged.push(d);
        } else if self.first_unlisted.is_none() {
            self.first_unlisted = Some(d);
        }
    }
}

/// Scans `region` (cut to the region size) for the chain of `node`; `probe`: an
/// offset (a superblock's end offset) at which to note the record ending there.
pub fn scan_region(region: &[u8], node: NodeId, probe: Option<u64>) -> RegionScan {
    scan_region_with(region, node, probe, &mut |_| {})
}

/// [`scan_region`], showing every readable record to `visit` in region order (one
/// pass: the host verifier collects the record hashes and bodies it needs while the
/// region is judged, instead of hashing every record a second time).
pub fn scan_region_with(
    region: &[u8],
    node: NodeId,
    probe: Option<u64>,
    visit: &mut dyn FnMut(&RecordView),
) -> RegionScan {
    let seq_bound = region_max_seq(region);
    scan_checkpointed(
        region,
        node,
        seq_bound,
        probe,
        visit,
        Checkpoints::disabled(),
    )
}

/// [`scan_region_with`] with the region's bound on sequence numbers given
/// ([`Scanner::within`]), keeping `checkpoints` of the Merkle accumulator.
pub(crate) fn scan_checkpointed(
    region: &[u8],
    node: NodeId,
    seq_bound: u64,
    probe: Option<u64>,
    visit: &mut dyn FnMut(&RecordView),
    checkpoints: Checkpoints,
) -> RegionScan {
    let mut s = RegionScan {
        node,
        records: 0,
        end: DATA_START as u64,
        next_seq: 0,
        head: genesis_hash(node),
        segments: Vec::new(),
        segments_total: 0,
        damaged: Vec::new(),
        damaged_total: 0,
        first_unlisted: None,
        trailing: None,
        last_kind: None,
        max_stamp: 0,
        last_boot_count: None,
        alarm_recorded: false,
        max_raft_applied: 0,
        probe_hit: None,
        merkle: MerkleAccumulator::new(),
        checkpoints,
    };
    for item in Scanner::within(region, node, seq_bound) {
        match item {
            Scanned::Record { view, new_segment } => {
                s.add_record(&view, new_segment, probe);
                visit(&view);
            }
            Scanned::Damaged(d) => s.add_damage(d),
        }
    }
    debug_assert!(s.records <= s.next_seq && s.next_seq <= seq_bound + 1);
    s
}

/// The superblock's committed point is confirmed by the chain: the readable record
/// ending at its end offset has sequence number `record_count - 1` and its head hash
/// (or the superblock describes the empty chain).
pub fn committed_point_confirmed(sb: &Superblock, scan: &RegionScan) -> bool {
    if sb.node != scan.node {
        return false;
    }
    if sb.record_count == 0 {
        return sb.end_offset == DATA_START as u64 && sb.head_hash == genesis_hash(sb.node);
    }
    scan.probe_hit == Some((sb.record_count - 1, sb.head_hash))
}

/// The torn-tail rule: the trailing damaged range of `scan` is a torn append (never
/// durable, may be cut) only when the superblock in force proves it lies beyond
/// the last durable write:
/// 1. its committed point (end offset, record count, head hash) is confirmed by a
///    readable record ending exactly there ([`committed_point_confirmed`]);
/// 2. the range starts at or after that end offset; and
/// 3. both superblock copies are valid, or the chain extends past the end offset.
///    (With one copy invalid, that copy may have been the newer one, covering one
///    more record; if the chain does not reach past the valid copy's end, that
///    record may be exactly what is damaged, so it is kept.)
///
/// Every append returns only after its record is followed by a superblock write
/// covering it, so a record whose `append` returned is never beyond the committed
/// point of the copy in force — except the one record a torn superblock write
/// may leave uncovered, which rule 3 keeps. Everything else is damage: kept.
pub fn torn_tail<'s>(
    copies: &[Option<Superblock>; 2],
    scan: &'s RegionScan,
) -> Option<&'s DamagedRange> {
    let t = scan.trailing.as_ref()?;
    let (_, sb) = Superblock::current(copies)?;
    let valid = copies.iter().flatten().count();
    let proven = committed_point_confirmed(&sb, scan)
        && t.offset >= sb.end_offset
        && (valid == 2 || scan.end > sb.end_offset);
    proven.then_some(t)
}

/// A verified region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Readable records (the Merkle tree's size; the sequence numbers used, unless
    /// damage destroyed records).
    pub records: u64,
    pub head_hash: Hash32,
    pub merkle_root: Hash32,
    /// Offset just past the last record.
    pub bytes_used: u64,
    pub region_bytes: u64,
    pub boot_count: u64,
    pub node: NodeId,
    /// Valid superblock copies (2 normally; 1 after a torn superblock write).
    pub superblock_copies_valid: u8,
    /// Non-zero bytes after the last valid record, beyond the committed end (a
    /// torn append in progress or crashed).
    pub torn_tail_bytes: u64,
    /// The chain segments (one unless the region was damaged and recovered).
    pub segments: Vec<Segment>,
    /// Damaged ranges, each covered by a `Damaged` record (else this is an error).
    pub damaged: Vec<DamagedRange>,
}

/// Everything the host verifier reports about a region, even when it is damaged.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub superblocks: [Option<Superblock>; 2],
    /// The scan (`None`: no valid superblock and no record of any node).
    pub scan: Option<RegionScan>,
    /// The bytes a torn tail takes (not damage).
    pub torn_tail_bytes: u64,
    pub verdict: Result<VerifyReport, VerifyError>,
}

/// The node a region belongs to: its superblock's, or with no valid copy the node
/// of the first record that verifies on its own.
pub fn region_node(bytes: &[u8]) -> Option<NodeId> {
    let copies = Superblock::read_both(bytes);
    match Superblock::current(&copies) {
        Some((_, sb)) => Some(sb.node),
        None => find_record(bytes, DATA_START, nonzero_end(bytes), None, 0).map(|v| v.header.node),
    }
}

/// Scans and judges a region starting at byte 0 of `bytes` (see
/// [`verify_region`]); reports segments and damaged ranges even when the
/// superblocks are unreadable.
pub fn inspect_region(bytes: &[u8]) -> Inspection {
    inspect_region_with(bytes, &mut |_| {})
}

/// [`inspect_region`], showing every readable record of the scan to `visit` in
/// region order (see [`scan_region_with`]).
pub fn inspect_region_with(bytes: &[u8], visit: &mut dyn FnMut(&RecordView)) -> Inspection {
    let plan = ScanPlan::new(bytes);
    let scan = plan
        .node
        .map(|node| scan_region_with(&bytes[..plan.region_len], node, plan.probe, visit));
    plan.finish(bytes, scan)
}

/// What [`inspect_region`] reads before it scans: the superblock copies, the bytes
/// to scan (`..region_len`), whose chain (`node`, see [`region_node`]) and the
/// offset to probe (the end offset of the copy in force). A host verifier that
/// checks the records itself (on several threads) starts from the same plan and
/// ends with [`ScanPlan::finish`], so its verdict is judged by the same code.
#[derive(Clone, Debug)]
pub struct ScanPlan {
    pub superblocks: [Option<Superblock>; 2],
    pub region_len: usize,
    pub node: Option<NodeId>,
    pub probe: Option<u64>,
}

impl ScanPlan {
    pub fn new(bytes: &[u8]) -> ScanPlan {
        let copies = Superblock::read_both(bytes);
        let current = Superblock::current(&copies).map(|(_, sb)| sb);
        let region_len = current
            .as_ref()
            .map(|sb| sb.region_bytes)
            .filter(|&c| (MIN_REGION_BYTES as u64..=MAX_REGION_BYTES as u64).contains(&c))
            .map_or(bytes.len(), |c| bytes.len().min(c as usize));
        ScanPlan {
            node: region_node(bytes),
            probe: current.as_ref().map(|sb| sb.end_offset),
            superblocks: copies,
            region_len,
        }
    }

    /// Judges `bytes` with `scan` (the scan of `bytes[..region_len]` for `node`,
    /// `None` when `node` is `None`).
    pub fn finish(self, bytes: &[u8], scan: Option<RegionScan>) -> Inspection {
        let copies = self.superblocks;
        let torn = scan
            .as_ref()
            .and_then(|s| torn_tail(&copies, s))
            .map(|t| (t.offset, t.bytes));
        let verdict = judge(bytes, &copies, scan.as_ref(), torn);
        Inspection {
            superblocks: copies,
            scan,
            torn_tail_bytes: torn.map_or(0, |t| t.1),
            verdict,
        }
    }
}

/// What a host verifier found in a region whose records it checked itself: every
/// record from `DATA_START` readable ([`crate::format::check_record_using`], each
/// continuing the chain of the one before it from the genesis hash, sequence
/// numbers from 0), and only zero bytes after the last one — no damaged range.
/// [`CleanChain::scan`] is then exactly the [`RegionScan`] that [`scan_region`]
/// would have built.
#[derive(Clone, Debug)]
pub struct CleanChain {
    pub node: NodeId,
    pub records: u64,
    /// Offset just past the last record (`DATA_START` if none).
    pub end: u64,
    /// Hash of the last record (the genesis hash if none).
    pub head: Hash32,
    pub last_kind: Option<u16>,
    pub max_stamp: u64,
    /// `count` of the last `Boot` record.
    pub last_boot_count: Option<u64>,
    pub alarm_recorded: bool,
    /// The highest `index` of a `RaftApplied` record (0 if none).
    pub max_raft_applied: u64,
    /// (seq, hash) of the record ending exactly at the plan's probe offset.
    pub probe_hit: Option<(u64, Hash32)>,
    /// The Merkle accumulator over the record hashes.
    pub merkle: MerkleAccumulator,
}

impl CleanChain {
    /// The scan of the clean region: one segment (none if there is no record).
    pub fn scan(self) -> RegionScan {
        let segments: Vec<Segment> = (self.records > 0)
            .then(|| Segment {
                offset: DATA_START as u64,
                end: self.end,
                first_seq: 0,
                last_seq: self.records - 1,
                records: self.records,
                linked: true,
            })
            .into_iter()
            .collect();
        RegionScan {
            node: self.node,
            records: self.records,
            end: self.end,
            next_seq: self.records,
            head: self.head,
            segments_total: segments.len() as u64,
            segments,
            damaged: Vec::new(),
            damaged_total: 0,
            first_unlisted: None,
            trailing: None,
            last_kind: self.last_kind,
            max_stamp: self.max_stamp,
            last_boot_count: self.last_boot_count,
            alarm_recorded: self.alarm_recorded,
            max_raft_applied: self.max_raft_applied,
            probe_hit: self.probe_hit,
            merkle: self.merkle,
            checkpoints: Checkpoints::disabled(),
        }
    }
}

/// Why a region has no superblock copy in force: one of another format version, or
/// none at all.
fn no_superblock(bytes: &[u8]) -> VerifyError {
    let what = Superblock::other_version(bytes)
        .map_or(Damage::NoSuperblock, |found| Damage::OtherVersion { found });
    VerifyError {
        seq: 0,
        offset: 0,
        what,
    }
}

fn judge(
    bytes: &[u8],
    copies: &[Option<Superblock>; 2],
    scan: Option<&RegionScan>,
    torn: Option<(u64, u64)>,
) -> Result<VerifyReport, VerifyError> {
    let err = |seq, offset, what| VerifyError { seq, offset, what };
    let avail = bytes.len();
    let (_, sb) = Superblock::current(copies).ok_or_else(|| no_superblock(bytes))?;
    let claimed = sb.region_bytes;
    let avail = avail as u64;
    if claimed < MIN_REGION_BYTES as u64 || claimed > MAX_REGION_BYTES as u64 {
        return Err(err(
            0,
            0,
            Damage::BadRegionSize {
                claimed,
                available: avail,
            },
        ));
    }
    let scan = scan.ok_or(err(0, 0, Damage::NoSuperblock))?;
    if let Some(d) = scan.first_unrecorded(torn.map(|t| t.0)) {
        return Err(d.error());
    }
    if !committed_point_confirmed(&sb, scan) {
        let what = if scan.next_seq < sb.record_count || scan.end < sb.end_offset {
            Damage::MissingRecords {
                expected: sb.record_count,
            }
        } else {
            Damage::HeadMismatch
        };
        return Err(err(scan.next_seq, scan.end, what));
    }
    if avail < claimed {
        return Err(err(scan.next_seq, avail, Damage::Truncated));
    }
    Ok(VerifyReport {
        records: scan.records,
        head_hash: scan.head,
        merkle_root: scan.merkle_root(),
        bytes_used: scan.end,
        region_bytes: claimed,
        boot_count: sb.boot_count,
        node: sb.node,
        superblock_copies_valid: copies.iter().flatten().count() as u8,
        torn_tail_bytes: torn.map_or(0, |t| t.1),
        segments: scan.segments.clone(),
        damaged: scan
            .damaged
            .iter()
            .filter(|d| Some(d.offset) != torn.map(|t| t.0))
            .cloned()
            .collect(),
    })
}

/// Verifies a whole region (starting at byte 0 of `bytes`): a valid superblock;
/// every readable record; every damaged range covered by a later `Damaged` record
/// (damage the node found and recorded at open — the records around it stay
/// verifiable, see docs/audit.md); the superblock's committed point (end offset,
/// record count, head hash) confirmed by the chain. Non-zero bytes after the last
/// record that the torn-tail rule ([`torn_tail`]) classes as a torn append are
/// reported in `torn_tail_bytes`, not as an error. On failure, the error names the
/// first damaged range nobody recorded (or the superblock mismatch).
pub fn verify_region(bytes: &[u8]) -> Result<VerifyReport, VerifyError> {
    let copies = Superblock::read_both(bytes);
    if Superblock::current(&copies).is_none() {
        return Err(no_superblock(bytes));
    }
    inspect_region(bytes).verdict
}
