//! The byte layout of an audit region and the code that reads it.
//!
//! ```text
//! region:     [superblock copy A @ 0][copy B @ 2048][records from 4096 ...][zero]
//! superblock: magic "XDVAUDIT" 8 | version u16 | reserved u16 | node u32 |
//!             region size u64 | boot count u64 | end offset u64 | record count u64 |
//!             head hash 32 | generation u64 | checksum u64 (over the 11 LE u64 words of bytes 0..88)
//! record:     version u8 | seq u64 | kind u16 | timestamp u64 | node u32 | core u16 |
//!             payload len u32 | payload | prev hash 32 | hash 32
//!             hash = SHA-256(every byte of the record before `hash`)
//! ```
//! All integers little-endian; records are packed (no padding). The end of the chain
//! is the first offset whose 29 header bytes are all zero and after which the region
//! is all zero. A damaged region also holds damaged ranges between records; reading
//! across them is `scan.rs`'s job ([`check_record`] and [`find_record`] here are the
//! two checks it is built from). The superblock's "record count" word is the next
//! sequence number (the record count unless damage destroyed records).
//!
//! Readers never panic: every offset is checked against the slice before use.

use core::fmt;
use sha2::{Digest, Sha256};
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

use crate::body::RecordBody;

/// Default physical address of the region (RAM file offset on QEMU q35, ≤ 2 GiB RAM).
pub const DEFAULT_REGION_PHYS: u64 = 0x0400_0000;
/// Default region size in bytes (4 MiB).
pub const DEFAULT_REGION_SIZE: u64 = 0x0040_0000;

/// Superblock magic.
pub const MAGIC: [u8; 8] = *b"XDVAUDIT";
/// Format version of superblock and records. 2: the Merkle tree's leaf is the
/// record hash and its node one compression from a distinct IV (`merkle`); the
/// record and superblock layouts are version 1's. A version-1 region is refused,
/// not read (`docs/audit.md`, "Merkle tree").
pub const FORMAT_VERSION: u8 = 2;
/// Offsets of the two superblock copies.
pub const SUPERBLOCK_OFFSETS: [usize; 2] = [0, 2048];
/// Bytes of one superblock copy.
pub const SUPERBLOCK_BYTES: usize = 96;
/// Offset of the first record.
pub const DATA_START: usize = 4096;
/// Bytes of a record header (before the payload).
pub const HEADER_BYTES: usize = 29;
/// Bytes after the payload: previous hash and own hash.
pub const TRAILER_BYTES: usize = 64;
/// Largest payload accepted (the largest body, `Custom` with 1024 bytes, is < 1040).
pub const MAX_PAYLOAD_BYTES: usize = 2048;
/// Largest record: header, the largest payload accepted, trailer.
pub const MAX_RECORD_BYTES: usize = HEADER_BYTES + MAX_PAYLOAD_BYTES + TRAILER_BYTES;
/// Smallest record (a payload is at least its one-byte kind tag).
pub const MIN_RECORD_BYTES: usize = HEADER_BYTES + 1 + TRAILER_BYTES;
/// Smallest region accepted: superblocks, room for some records and the reserve.
pub const MIN_REGION_BYTES: usize = 2 * DATA_START;
/// Largest region accepted (1 GiB).
pub const MAX_REGION_BYTES: usize = 1 << 30;
/// Alignment at which [`find_region`] looks for a superblock.
pub const FIND_ALIGN: usize = 4096;

const GENESIS_DOMAIN: &[u8] = b"xdv-audit-genesis-v1";
const SB_CHECKSUM_AT: usize = 88;

const _: () = assert!(SUPERBLOCK_OFFSETS[1] + SUPERBLOCK_BYTES <= DATA_START);
const _: () = assert!(SB_CHECKSUM_AT + 8 == SUPERBLOCK_BYTES);
const _: () = assert!(DEFAULT_REGION_SIZE as usize >= MIN_REGION_BYTES);
const _: () = assert!(MIN_REGION_BYTES - DATA_START > MAX_RECORD_BYTES);

/// Highest sequence number a record in a region of `region_bytes` can carry.
/// Sequence numbers are issued densely, one per record written, and a region is
/// never wrapped, so every number ever issued belongs to a record written into the
/// region; a record whose number is above this bound was never written by an
/// `AuditLog` (this also keeps `seq + 1` from overflowing).
///
/// The bound is the region's, not that of the bytes a reader happens to scan: a
/// reader of a prefix of a region (the log's walks read its bytes up to its end)
/// must accept exactly the records a reader of the whole region accepts, or the
/// two would find different records after a damaged range ([`find_record`]) and
/// compute different Merkle roots. [`region_max_seq`] gives it for a region's bytes.
pub fn max_seq(region_bytes: usize) -> u64 {
    (region_bytes.saturating_sub(DATA_START) / MIN_RECORD_BYTES) as u64
}

/// [`max_seq`] of the region whose first bytes (at least its superblocks, or all of
/// it) are `bytes`: of the region size its superblock in force names when that size
/// is usable (`MIN_REGION_BYTES..=MAX_REGION_BYTES`), else of `bytes.len()`. The
/// scan at open (of the whole region, whose valid superblock must name its size),
/// the log's walks over its bytes up to its end, and the host verifier (which cuts
/// the bytes it reads to the superblock's region size) all get the same bound.
pub fn region_max_seq(bytes: &[u8]) -> u64 {
    let claimed = Superblock::current(&Superblock::read_both(bytes))
        .map(|(_, sb)| sb.region_bytes)
        .filter(|c| (MIN_REGION_BYTES as u64..=MAX_REGION_BYTES as u64).contains(c));
    max_seq(claimed.map_or(bytes.len(), |c| c as usize))
}

/// The first `prev` hash of node `node`'s chain: SHA-256("xdv-audit-genesis-v1" || node LE).
pub fn genesis_hash(node: NodeId) -> Hash32 {
    let mut h = Sha256::new();
    h.update(GENESIS_DOMAIN);
    h.update(node.0.to_le_bytes());
    Hash32(h.finalize().into())
}

/// One decoded superblock copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub node: NodeId,
    pub region_bytes: u64,
    pub boot_count: u64,
    /// Offset just past the last record covered by this copy.
    pub end_offset: u64,
    /// The next sequence number: the record count, unless damage destroyed records.
    pub record_count: u64,
    pub head_hash: Hash32,
    pub generation: u64,
}

/// Superblock checksum: FNV-1a-style over the little-endian u64 words of
/// `bytes` (length a multiple of 8). Each step `h = (h ^ w) * P` is a bijection in
/// `h` and in `w`, so any change confined to one word always changes the result;
/// a torn write (a mix of two versions) is caught with probability 1 - 2^-64.
fn checksum64(bytes: &[u8]) -> u64 {
    debug_assert!(bytes.len().is_multiple_of(8));
    let h = bytes.chunks_exact(8).fold(CHECKSUM_SEED, |h, w| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        checksum_step(h, u64::from_le_bytes(word))
    });
    checksum_finish(h)
}

const CHECKSUM_SEED: u64 = 0xcbf2_9ce4_8422_2325;

#[inline(always)]
fn checksum_step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
}

#[inline(always)]
fn checksum_finish(h: u64) -> u64 {
    h ^ (h >> 32)
}

/// Words 0..4 of a superblock (magic, version + node, region size, boot count)
/// do not change while a log is open; the checksum is a left fold over the words,
/// so its state after them is computed once and every append only folds in the
/// last seven words (end offset, record count, head hash, generation).
#[derive(Clone, Debug)]
pub(crate) struct SuperblockPrefix {
    bytes: [u8; 32],
    state: u64,
}

impl SuperblockPrefix {
    pub(crate) fn new(node: NodeId, region_bytes: u64, boot_count: u64) -> SuperblockPrefix {
        let words = [
            u64::from_le_bytes(MAGIC),
            u64::from(FORMAT_VERSION) | (u64::from(node.0) << 32),
            region_bytes,
            boot_count,
        ];
        let mut bytes = [0u8; 32];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let state = words.into_iter().fold(CHECKSUM_SEED, checksum_step);
        SuperblockPrefix { bytes, state }
    }

    /// Encodes a whole copy into `out`, checksum included.
    #[inline]
    pub(crate) fn encode_into(
        &self,
        out: &mut [u8; SUPERBLOCK_BYTES],
        end_offset: u64,
        record_count: u64,
        head_hash: &Hash32,
        generation: u64,
    ) {
        let h = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&head_hash.0[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let words: [u64; 7] = [end_offset, record_count, h(0), h(1), h(2), h(3), generation];
        out[..32].copy_from_slice(&self.bytes);
        let mut state = self.state;
        for (chunk, w) in out[32..SB_CHECKSUM_AT].chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
            state = checksum_step(state, w);
        }
        out[SB_CHECKSUM_AT..].copy_from_slice(&checksum_finish(state).to_le_bytes());
        debug_assert_eq!(checksum_finish(state), checksum64(&out[..SB_CHECKSUM_AT]));
    }
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn hash_at(b: &[u8], at: usize) -> Option<Hash32> {
    Some(Hash32(b.get(at..at + 32)?.try_into().ok()?))
}

impl Superblock {
    /// Encodes this copy, checksum included.
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut b = [0u8; SUPERBLOCK_BYTES];
        SuperblockPrefix::new(self.node, self.region_bytes, self.boot_count).encode_into(
            &mut b,
            self.end_offset,
            self.record_count,
            &self.head_hash,
            self.generation,
        );
        b
    }

    /// Decodes one copy at `at`; `None` if magic, version or checksum are wrong.
    pub fn decode(region: &[u8], at: usize) -> Option<Superblock> {
        let b = region.get(at..at.checked_add(SUPERBLOCK_BYTES)?)?;
        if b[0..8] != MAGIC || le_u16(b, 8)? != u16::from(FORMAT_VERSION) {
            return None;
        }
        if le_u64(b, SB_CHECKSUM_AT)? != checksum64(&b[..SB_CHECKSUM_AT]) {
            return None;
        }
        Some(Superblock {
            node: NodeId(le_u32(b, 12)?),
            region_bytes: le_u64(b, 16)?,
            boot_count: le_u64(b, 24)?,
            end_offset: le_u64(b, 32)?,
            record_count: le_u64(b, 40)?,
            head_hash: hash_at(b, 48)?,
            generation: le_u64(b, 80)?,
        })
    }

    /// The format version of an intact copy (magic, checksum) of another format
    /// version, when no copy of this version is valid: the region was written by
    /// another build and must be refused, not formatted or judged damaged.
    pub fn other_version(region: &[u8]) -> Option<u16> {
        if Superblock::current(&Superblock::read_both(region)).is_some() {
            return None;
        }
        SUPERBLOCK_OFFSETS.into_iter().find_map(|at| {
            let b = region.get(at..at.checked_add(SUPERBLOCK_BYTES)?)?;
            let version = le_u16(b, 8)?;
            let intact =
                b[0..8] == MAGIC && le_u64(b, SB_CHECKSUM_AT)? == checksum64(&b[..SB_CHECKSUM_AT]);
            (intact && version != u16::from(FORMAT_VERSION)).then_some(version)
        })
    }

    /// Both copies, decoded (`None` where invalid).
    pub fn read_both(region: &[u8]) -> [Option<Superblock>; 2] {
        SUPERBLOCK_OFFSETS.map(|at| Superblock::decode(region, at))
    }

    /// The copy in force: the valid one with the higher generation, and its index.
    pub fn current(copies: &[Option<Superblock>; 2]) -> Option<(usize, Superblock)> {
        match copies {
            [Some(a), Some(b)] if b.generation > a.generation => Some((1, b.clone())),
            [Some(a), _] => Some((0, a.clone())),
            [None, Some(b)] => Some((1, b.clone())),
            [None, None] => None,
        }
    }
}

/// The fixed-size header of a record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub version: u8,
    pub seq: u64,
    pub kind: u16,
    pub stamp: Timestamp,
    pub node: NodeId,
    pub core: CoreId,
    pub payload_bytes: u32,
}

impl RecordHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0] = self.version;
        b[1..9].copy_from_slice(&self.seq.to_le_bytes());
        b[9..11].copy_from_slice(&self.kind.to_le_bytes());
        b[11..19].copy_from_slice(&self.stamp.0.to_le_bytes());
        b[19..23].copy_from_slice(&self.node.0.to_le_bytes());
        b[23..25].copy_from_slice(&self.core.0.to_le_bytes());
        b[25..29].copy_from_slice(&self.payload_bytes.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<RecordHeader> {
        Some(RecordHeader {
            version: *b.first()?,
            seq: le_u64(b, 1)?,
            kind: le_u16(b, 9)?,
            stamp: Timestamp(le_u64(b, 11)?),
            node: NodeId(le_u32(b, 19)?),
            core: CoreId(le_u16(b, 23)?),
            payload_bytes: le_u32(b, 25)?,
        })
    }

    /// Total bytes of the record this header starts.
    pub fn record_bytes(&self) -> usize {
        HEADER_BYTES + self.payload_bytes as usize + TRAILER_BYTES
    }
}

/// One verified record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    /// Offset of the record in the region.
    pub offset: u64,
    pub header: RecordHeader,
    pub body: RecordBody,
    pub prev_hash: Hash32,
    pub hash: Hash32,
}

/// What is wrong with a record or region.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Neither superblock copy is valid (magic, version, checksum).
    NoSuperblock,
    /// No superblock copy of this format version, but one of another (`found`),
    /// intact (magic and checksum): a region written by another build.
    OtherVersion {
        found: u16,
    },
    /// The superblock's region size is not usable with these bytes.
    BadRegionSize {
        claimed: u64,
        available: u64,
    },
    /// The record's bytes run past the end of the region (or of a truncated file).
    Truncated,
    BadVersion {
        found: u8,
    },
    SeqMismatch {
        found: u64,
    },
    NodeMismatch {
        found: NodeId,
    },
    PayloadTooLong {
        len: u32,
    },
    HashMismatch,
    PrevHashMismatch,
    /// The payload does not decode as a `RecordBody` (or has trailing bytes).
    BadPayload,
    KindMismatch {
        found: u16,
        payload: u16,
    },
    /// A variable-size field is over its limit.
    FieldTooLong,
    /// The chain ends here but the superblock says `expected` records are durable.
    MissingRecords {
        expected: u64,
    },
    /// The last durable record's hash differs from the superblock's head hash.
    HeadMismatch,
    /// Non-zero bytes where no record starts (the chain had ended, or a header was
    /// wiped).
    StrayBytes,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::NoSuperblock => write!(f, "no valid superblock copy"),
            Damage::OtherVersion { found } => write!(
                f,
                "audit format version {found}: this build reads version {FORMAT_VERSION} only"
            ),
            Damage::BadRegionSize { claimed, available } => {
                write!(
                    f,
                    "superblock region size {claimed} unusable ({available} bytes available)"
                )
            }
            Damage::Truncated => write!(f, "record runs past the end of the region"),
            Damage::BadVersion { found } => write!(f, "bad record version {found}"),
            Damage::SeqMismatch { found } => write!(f, "sequence number {found} out of order"),
            Damage::NodeMismatch { found } => write!(f, "record names node {found}"),
            Damage::PayloadTooLong { len } => write!(f, "payload length {len} over limit"),
            Damage::HashMismatch => write!(f, "record hash does not match its bytes"),
            Damage::PrevHashMismatch => write!(f, "previous-hash link broken"),
            Damage::BadPayload => write!(f, "payload does not decode"),
            Damage::KindMismatch { found, payload } => {
                write!(f, "kind {found} but payload is kind {payload}")
            }
            Damage::FieldTooLong => write!(f, "payload field over its limit"),
            Damage::MissingRecords { expected } => {
                write!(f, "chain ends early: superblock says {expected} records")
            }
            Damage::HeadMismatch => write!(f, "last record hash differs from superblock head"),
            Damage::StrayBytes => write!(f, "non-zero bytes where no record starts"),
        }
    }
}

/// The first bad record: its expected sequence number, its offset and what failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub seq: u64,
    pub offset: u64,
    pub what: Damage,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record seq {} at offset {:#x}: {}",
            self.seq, self.offset, self.what
        )
    }
}

/// Iterates over the records of a region from [`DATA_START`], verifying each as one
/// unbroken chain from the genesis hash: yields `Err` once at the first bad record,
/// then stops. Stops with `None` at the first all-zero header or when no header fits
/// any more. (A region with damaged ranges is read with [`crate::scan::Scanner`],
/// which continues past them.)
pub struct Records<'r> {
    region: &'r [u8],
    node: NodeId,
    offset: usize,
    seq: u64,
    prev: Hash32,
    done: bool,
}

impl<'r> Records<'r> {
    /// Records of `region` (already cut to the region size) for chain of `node`.
    pub fn new(region: &'r [u8], node: NodeId) -> Records<'r> {
        Records {
            region,
            node,
            offset: DATA_START,
            seq: 0,
            prev: genesis_hash(node),
            done: false,
        }
    }

    /// Offset just past the last record yielded.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Records yielded so far.
    pub fn records_seen(&self) -> u64 {
        self.seq
    }
    /// Hash of the last record yielded (genesis if none).
    pub fn head(&self) -> Hash32 {
        self.prev
    }
}

impl Iterator for Records<'_> {
    type Item = Result<RecordView, VerifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || header_is_blank(self.region, self.offset) {
            self.done = true;
            return None;
        }
        let expect = Some((self.seq, self.prev));
        match check_record(self.region, self.offset, Some(self.node), expect) {
            Ok(view) => {
                self.offset += view.header.record_bytes();
                self.seq += 1;
                self.prev = view.hash;
                Some(Ok(view))
            }
            Err(what) => {
                self.done = true;
                Some(Err(VerifyError {
                    seq: self.seq,
                    offset: self.offset as u64,
                    what,
                }))
            }
        }
    }
}

/// True when no record starts at `at`: its 29 header bytes are all zero (or fewer
/// than 29 bytes are left and they are all zero).
pub fn header_is_blank(region: &[u8], at: usize) -> bool {
    let end = at.saturating_add(HEADER_BYTES).min(region.len());
    region
        .get(at..end)
        .is_none_or(|h| h.iter().all(|&b| b == 0))
}

/// Checks the record at `off` on its own — version, `node` (any node if `None`),
/// payload length and bounds, own hash, payload, kind and field limits — and, with
/// `expect = Some((seq, prev))`, that it continues a chain: sequence number `seq`
/// and previous hash `prev`. Without `expect` the sequence number must be
/// plausible: at most [`max_seq`] of `region`'s length (a reader of part of a region
/// uses [`check_record_alone`] with the region's bound). Never panics, whatever the
/// bytes.
pub(crate) fn check_record(
    region: &[u8],
    off: usize,
    node: Option<NodeId>,
    expect: Option<(u64, Hash32)>,
) -> Result<RecordView, Damage> {
    check_record_using(region, off, node, expect, &mut sha256)
}

/// [`check_record`] without a chain, the sequence number at most `seq_bound` (the
/// region's [`max_seq`], whatever part of the region `region` is).
pub(crate) fn check_record_alone(
    region: &[u8],
    off: usize,
    node: Option<NodeId>,
    seq_bound: u64,
) -> Result<RecordView, Damage> {
    verify_record(region, off, node, None, seq_bound, &mut sha256)
}

fn sha256(b: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(b).into())
}

/// [`check_record`] with the SHA-256 of the record's hashed bytes supplied by
/// `sha256` (called at most once, with exactly the bytes before the stored hash):
/// a host verifier that hashes many records at once (several SHA-256 streams
/// interleaved, on several threads) checks each record with the same code as the
/// node. `sha256` must return SHA-256 of its argument.
pub fn check_record_using(
    region: &[u8],
    off: usize,
    node: Option<NodeId>,
    expect: Option<(u64, Hash32)>,
    sha256: &mut dyn FnMut(&[u8]) -> Hash32,
) -> Result<RecordView, Damage> {
    verify_record(region, off, node, expect, max_seq(region.len()), sha256)
}

/// [`check_record_using`]; without `expect`, the sequence number at most `seq_bound`.
fn verify_record(
    region: &[u8],
    off: usize,
    node: Option<NodeId>,
    expect: Option<(u64, Hash32)>,
    seq_bound: u64,
    sha256: &mut dyn FnMut(&[u8]) -> Hash32,
) -> Result<RecordView, Damage> {
    let r = region;
    let hb = r
        .get(off..off.saturating_add(HEADER_BYTES))
        .ok_or(Damage::Truncated)?;
    let header = RecordHeader::decode(hb).ok_or(Damage::Truncated)?;
    if header.version != FORMAT_VERSION {
        return Err(Damage::BadVersion {
            found: header.version,
        });
    }
    match expect {
        Some((seq, _)) if header.seq != seq => {
            return Err(Damage::SeqMismatch { found: header.seq });
        }
        None if header.seq > seq_bound => {
            return Err(Damage::SeqMismatch { found: header.seq });
        }
        _ => {}
    }
    if node.is_some_and(|n| header.node != n) {
        return Err(Damage::NodeMismatch { found: header.node });
    }
    if header.payload_bytes as usize > MAX_PAYLOAD_BYTES {
        return Err(Damage::PayloadTooLong {
            len: header.payload_bytes,
        });
    }
    let total = header.record_bytes();
    let rec = r
        .get(off..off.saturating_add(total))
        .ok_or(Damage::Truncated)?;
    let hashed = total - 32;
    let stored = hash_at(rec, hashed).ok_or(Damage::Truncated)?;
    if sha256(&rec[..hashed]) != stored {
        return Err(Damage::HashMismatch);
    }
    let prev = hash_at(rec, hashed - 32).ok_or(Damage::Truncated)?;
    if expect.is_some_and(|(_, p)| p != prev) {
        return Err(Damage::PrevHashMismatch);
    }
    let payload = &rec[HEADER_BYTES..HEADER_BYTES + header.payload_bytes as usize];
    let body = RecordBody::decode(payload).ok_or(Damage::BadPayload)?;
    if body.kind() != header.kind {
        return Err(Damage::KindMismatch {
            found: header.kind,
            payload: body.kind(),
        });
    }
    body.check_limits().map_err(|_| Damage::FieldTooLong)?;
    Ok(RecordView {
        offset: off as u64,
        header,
        body,
        prev_hash: prev,
        hash: stored,
    })
}

/// A cheap test (no hashing) that a record of `node` (any if `None`) with a
/// sequence number in `min_seq..=seq_bound` could start at `off`.
fn plausible_start(
    region: &[u8],
    off: usize,
    node: Option<NodeId>,
    min_seq: u64,
    seq_bound: u64,
) -> bool {
    if region.get(off) != Some(&FORMAT_VERSION) {
        return false;
    }
    let Some(h) = region
        .get(off..off.saturating_add(HEADER_BYTES))
        .and_then(RecordHeader::decode)
    else {
        return false;
    };
    (h.payload_bytes as usize) <= MAX_PAYLOAD_BYTES
        && h.kind < RecordBody::KIND_COUNT
        && node.is_none_or(|n| h.node == n)
        && h.seq >= min_seq
        && h.seq <= seq_bound
        && off.saturating_add(h.record_bytes()) <= region.len()
}

/// The first record at an offset in `from..to` that verifies on its own
/// ([`check_record`] without a chain) for `node` (any node if `None`) and has a
/// sequence number of at least `min_seq` (and at most [`max_seq`] of
/// `region.len()`). This is how a reader finds its way back into a region after a
/// damaged range: records are self-delimiting and carry their own hash.
pub fn find_record(
    region: &[u8],
    from: usize,
    to: usize,
    node: Option<NodeId>,
    min_seq: u64,
) -> Option<RecordView> {
    find_record_within(region, from, to, node, min_seq, max_seq(region.len()))
}

/// [`find_record`] with sequence numbers up to `seq_bound`: the bound of the whole
/// region when `region` is only its first bytes ([`region_max_seq`]), so that the
/// record found does not depend on how much of the region is read.
pub(crate) fn find_record_within(
    region: &[u8],
    from: usize,
    to: usize,
    node: Option<NodeId>,
    min_seq: u64,
    seq_bound: u64,
) -> Option<RecordView> {
    let to = to.min(region.len());
    (from..to)
        .filter(|&off| plausible_start(region, off, node, min_seq, seq_bound))
        .find_map(|off| check_record_alone(region, off, node, seq_bound).ok())
}

/// Offset just past the last non-zero byte of `region` (0 if all zero).
pub fn nonzero_end(region: &[u8]) -> usize {
    // Word-wise from the end, then the byte inside the last non-zero block. Opening
    // a blank or mostly empty region reads all of it; under emulation (QEMU TCG) a
    // byte loop over 64 MiB was most of the kernel's boot time.
    const BLOCK: usize = 64;
    let (body, rest) = region.split_at(region.len() - region.len() % BLOCK);
    if let Some(i) = rest.iter().rposition(|&b| b != 0) {
        return body.len() + i + 1;
    }
    for (k, block) in body.chunks_exact(BLOCK).enumerate().rev() {
        let any = block.chunks_exact(8).fold(0u64, |acc, w| {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            acc | u64::from_ne_bytes(word)
        });
        if any != 0 {
            let i = block.iter().rposition(|&b| b != 0).unwrap_or(0);
            return k * BLOCK + i + 1;
        }
    }
    0
}

/// Finds an audit region in a RAM image: the first [`FIND_ALIGN`]-aligned offset with
/// a valid superblock copy whose region fits inside `ram`.
pub fn find_region(ram: &[u8]) -> Option<usize> {
    (0..ram.len()).step_by(FIND_ALIGN).find(|&at| {
        let region = &ram[at..];
        let copies = Superblock::read_both(region);
        Superblock::current(&copies).is_some_and(|(_, sb)| {
            sb.region_bytes >= MIN_REGION_BYTES as u64 && sb.region_bytes <= region.len() as u64
        })
    })
}
