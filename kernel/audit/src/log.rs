//! [`AuditLog`]: appends records to a region the kernel owns, crash-consistently.
//!
//! Append protocol: (1) write the whole record (header, payload, previous hash,
//! own hash) into free space after the chain; (2) `fence(Release)`; (3) write the
//! *older* superblock copy with the new end offset, count, head hash and
//! generation + 1. The protocol needs only store→store order (every record byte
//! before any byte of the superblock that covers it): a release fence gives that
//! on every target (no instruction on x86's TSO, `dmb ish` on AArch64, `fence rw,w`
//! on RISC-V) and keeps the compiler from sinking record stores below it; a
//! `SeqCst` fence (`mfence`) would add store→load order, which nothing here reads.
//! A crash before (3) leaves a valid prefix (the record is either
//! complete, and found by the walk at the next open, or torn, and cut); a crash
//! during (3) tears at most the older copy, and the newer copy is still valid.
//! The record is durable when `append` returns.
//!
//! Full-region policy: STOP. [`REGIONFULL_RESERVE_BYTES`] at the end of the region
//! are kept for one final `RegionFull` record; when a record does not fit before
//! the reserve, `RegionFull` is written instead and every later append fails with
//! [`AuditError::Full`]. Nothing is ever overwritten.

use core::fmt;
use core::sync::atomic::{Ordering, fence};
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

use crate::body::{FieldTooLong, RecordBody};
use crate::format::{
    DATA_START, FORMAT_VERSION, HEADER_BYTES, MAX_PAYLOAD_BYTES, MAX_REGION_BYTES,
    MIN_REGION_BYTES, RecordHeader, RecordView, Records, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSETS,
    Superblock, SuperblockPrefix, TRAILER_BYTES, VerifyError, VerifyReport, genesis_hash,
    nonzero_tail, walk,
};
use crate::merkle::MerkleAccumulator;

/// Bytes kept free for the final `RegionFull` record (its postcard payload is at
/// most 1 + 10 + 10 bytes).
pub const REGIONFULL_RESERVE_BYTES: usize = HEADER_BYTES + 21 + TRAILER_BYTES;

const REGION_FULL_KIND: u16 = 2;

/// The region cannot be used at all.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// Size outside `MIN_REGION_BYTES..=MAX_REGION_BYTES`.
    BadSize { bytes: usize },
    /// The region holds a valid chain of another node; it is not overwritten.
    ForeignNode { found: NodeId },
    /// The superblock records a different region size; not overwritten.
    SizeMismatch { recorded: u64, actual: u64 },
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
        }
    }
}

/// An append failed; nothing was written (except the final `RegionFull` record).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuditError {
    /// The region is full. `sealed_now`: this call wrote the `RegionFull` record
    /// (say so on the console); `false`: it was already full.
    Full {
        sealed_now: bool,
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
            AuditError::FieldTooLong(e) => write!(f, "audit record: {e}"),
            AuditError::Encode => write!(f, "audit record body does not encode"),
        }
    }
}

/// What `open` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The region was blank or foreign and has been formatted.
    pub formatted: bool,
    /// The boot count after this open (1 on the first boot).
    pub boot_count: u64,
    /// Records kept.
    pub records: u64,
    /// Bytes after the valid prefix that were cut (zeroed). If non-zero, append
    /// `Recovered { dropped_bytes }`.
    pub dropped_bytes: u64,
    /// Records the superblock said were durable but did not verify (damage, not a
    /// torn append; 0 normally).
    pub lost_durable_records: u64,
    /// The first bad record found after the valid prefix, if any.
    pub first_error: Option<VerifyError>,
    /// Valid superblock copies found (2 normally, 1 after a torn superblock write).
    pub superblock_copies_valid: u8,
}

/// An open audit log over a region.
pub struct AuditLog<'a> {
    region: &'a mut [u8],
    node: NodeId,
    boot_count: u64,
    end: usize,
    records: u64,
    head: Hash32,
    generation: u64,
    /// The copy holding the newest superblock; the next write goes to the other.
    newest_copy: usize,
    full: bool,
    /// Merkle accumulator, folded forward lazily by `merkle_root`.
    merkle: MerkleAccumulator,
    merkle_end: usize,
    /// The superblock words fixed while the log is open, and their checksum state.
    sb_prefix: SuperblockPrefix,
}

impl<'a> AuditLog<'a> {
    /// Opens `region` for `node`: formats it if blank/foreign, else keeps the
    /// longest valid prefix of its chain, zeroes what follows, and bumps the boot
    /// count. The caller then appends `Recovered` (if `dropped_bytes > 0`) and `Boot`.
    pub fn open(
        region: &'a mut [u8],
        node: NodeId,
    ) -> Result<(AuditLog<'a>, OpenReport), RegionError> {
        let len = region.len();
        if !(MIN_REGION_BYTES..=MAX_REGION_BYTES).contains(&len) {
            return Err(RegionError::BadSize { bytes: len });
        }
        let copies = Superblock::read_both(region);
        let valid = copies.iter().filter(|c| c.is_some()).count() as u8;
        let Some((newest, sb)) = Superblock::current(&copies) else {
            return Ok(Self::format_checked(region, node));
        };
        if sb.node != node {
            return Err(RegionError::ForeignNode { found: sb.node });
        }
        if sb.region_bytes != len as u64 {
            return Err(RegionError::SizeMismatch {
                recorded: sb.region_bytes,
                actual: len as u64,
            });
        }
        let w = walk(region, node);
        let dropped = nonzero_tail(region, w.end);
        region[w.end..w.end + dropped].fill(0);
        let boot_count = sb.boot_count.saturating_add(1);
        let mut log = AuditLog {
            node,
            boot_count,
            end: w.end,
            records: w.records,
            head: w.head,
            generation: sb.generation,
            newest_copy: newest,
            full: w.last_kind == Some(REGION_FULL_KIND),
            merkle: w.merkle,
            merkle_end: w.end,
            sb_prefix: SuperblockPrefix::new(node, len as u64, boot_count),
            region,
        };
        let head = log.head;
        log.write_superblock(&head);
        let report = OpenReport {
            formatted: false,
            boot_count: log.boot_count,
            records: log.records,
            dropped_bytes: dropped as u64,
            lost_durable_records: sb.record_count.saturating_sub(w.records),
            first_error: w.first_error,
            superblock_copies_valid: valid,
        };
        Ok((log, report))
    }

    /// Formats `region` for `node` unconditionally (zeroes it, boot count 1): for an
    /// operator who decided to discard a region `open` refused (`ForeignNode`,
    /// `SizeMismatch`). `open` calls this itself for blank or non-XDV regions.
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

    fn format_checked(region: &'a mut [u8], node: NodeId) -> (AuditLog<'a>, OpenReport) {
        region.fill(0);
        let mut log = AuditLog {
            node,
            boot_count: 1,
            end: DATA_START,
            records: 0,
            head: genesis_hash(node),
            generation: 0,
            newest_copy: 1,
            full: false,
            merkle: MerkleAccumulator::new(),
            merkle_end: DATA_START,
            sb_prefix: SuperblockPrefix::new(node, region.len() as u64, 1),
            region,
        };
        // Write both copies so either alone describes the empty chain.
        let head = log.head;
        log.write_superblock(&head);
        log.write_superblock(&head);
        let report = OpenReport {
            formatted: true,
            boot_count: 1,
            records: 0,
            dropped_bytes: 0,
            lost_durable_records: 0,
            first_error: None,
            superblock_copies_valid: 0,
        };
        (log, report)
    }

    /// Writes the older copy; `head` is `self.head`, passed by value so that the
    /// append path encodes the words of the hash it just computed (in registers)
    /// instead of reloading them from `self.head` right after storing them.
    fn write_superblock(&mut self, head: &Hash32) {
        debug_assert_eq!(*head, self.head);
        self.generation += 1;
        let target = 1 - self.newest_copy;
        let at = SUPERBLOCK_OFFSETS[target];
        // No fence after this store: the next record's bytes may become visible
        // before it, which is harmless (the walk at open accepts complete records
        // past the superblock's end); the fence in `write_record` orders each
        // record before the superblock that covers it, and this store before the
        // next superblock store.
        let mut sb = [0u8; SUPERBLOCK_BYTES];
        self.sb_prefix.encode_into(
            &mut sb,
            self.end as u64,
            self.records,
            head,
            self.generation,
        );
        self.region[at..at + SUPERBLOCK_BYTES].copy_from_slice(&sb);
        self.newest_copy = target;
    }

    /// Appends one record and returns its sequence number. The record is durable
    /// (in the region, superblock updated) when this returns `Ok`.
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
        let limit = self.region.len() - REGIONFULL_RESERVE_BYTES;
        match self.write_record(stamp, core, body, limit) {
            Some(seq) => Ok(seq),
            None => {
                // Does not fit before the reserve: seal with RegionFull.
                let seal = RecordBody::RegionFull {
                    records: self.records,
                    bytes: (self.end - DATA_START) as u64,
                };
                let len = self.region.len();
                self.region[self.end..len].fill(0);
                // Always fits for regions we wrote (the reserve); a crafted region
                // whose chain already reaches into the reserve just stops.
                let sealed = self.write_record(stamp, core, &seal, len).is_some();
                self.full = true;
                Err(AuditError::Full { sealed_now: sealed })
            }
        }
    }

    /// Writes a record ending at or before `limit`; `None` if it does not fit.
    fn write_record(
        &mut self,
        stamp: Timestamp,
        core: CoreId,
        body: &RecordBody,
        limit: usize,
    ) -> Option<u64> {
        let off = self.end;
        let payload_start = off + HEADER_BYTES;
        let payload_limit = limit
            .checked_sub(TRAILER_BYTES)?
            .min(payload_start + MAX_PAYLOAD_BYTES);
        let slot = self.region.get_mut(payload_start..payload_limit)?;
        let payload_bytes = body.encode_into(slot)?;
        let header = RecordHeader {
            version: FORMAT_VERSION,
            seq: self.records,
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
        let seq = self.records;
        self.end += total;
        self.records += 1;
        let hash = Hash32(hash);
        self.head = hash;
        self.write_superblock(&hash);
        Some(seq)
    }

    pub fn node(&self) -> NodeId {
        self.node
    }
    /// Hash of the last record (the genesis hash if there is none).
    pub fn head_hash(&self) -> Hash32 {
        self.head
    }
    /// Number of records.
    pub fn len(&self) -> u64 {
        self.records
    }
    pub fn is_empty(&self) -> bool {
        self.records == 0
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

    /// RFC 6962 root over all record hashes. Folds in records appended since the
    /// last call (O(new records)); state is O(log n).
    pub fn merkle_root(&mut self) -> Hash32 {
        let mut off = self.merkle_end;
        while off < self.end {
            // Records before `end` were written by us or verified at open.
            let Some(h) = read_record_extent(self.region, off) else {
                break;
            };
            self.merkle.push(&h.1);
            off += h.0;
        }
        self.merkle_end = off;
        self.merkle.root()
    }

    /// The records, verified as they are read.
    pub fn records(&self) -> Records<'_> {
        Records::new(&self.region[..self.end], self.node)
    }

    /// The last `n` records (oldest first).
    pub fn tail(&self, n: usize) -> alloc::vec::Vec<RecordView> {
        let skip = self.records.saturating_sub(n as u64);
        self.records()
            .skip(skip as usize)
            .filter_map(Result::ok)
            .collect()
    }

    /// Verifies the whole region in place (as the host verifier would).
    pub fn verify_in_place(&self) -> Result<VerifyReport, VerifyError> {
        crate::format::verify_region(self.region)
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
    use super::record_hash;
    use sha2::{Digest, Sha256};

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
}
