//! Durable Raft storage over a byte region: what survives a crash of the node.
//!
//! The region (the reserved Raft memory of the kernel, a byte vector in the simulator)
//! is reached only through [`Region`], so the same code runs on both and the simulator
//! can tear a write in half. Layout (`docs/consensus.md`):
//!
//! ```text
//! [header slot 0 | header slot 1 | snapshot slot 0 | snapshot slot 1 | log area ...]
//! ```
//!
//! - **Header slots** (4 KiB each) hold the hard state, the compaction point, the
//!   snapshot reference and where the live log starts; written alternately with a
//!   generation number and a SHA-256 over the slot, so a torn header write leaves the
//!   previous one intact. The newest valid slot wins.
//! - **Snapshot slots** hold a whole snapshot each, with its length and hash; a new
//!   snapshot goes to the slot the durable header does not reference, then the header
//!   flips to it.
//! - **Log area**: entries are appended as self-checking records, each carrying its
//!   index, term and a hash chained to the previous record. Appending writes only the
//!   new records (cost independent of the log's length); the header is not touched.
//!   The end of the log is found at open by following the chain: a torn record, a
//!   flipped byte, or a stale record left behind by a truncation breaks the chain.
//!   Records never straddle the end of the area: logical positions grow forever and
//!   map to `position % area`; the live log is `[head, tail)` and never exceeds the area.
//!
//! Invariants: the header never references a snapshot slot that is being written; the
//! space of the live log is never overwritten; a write method returns only when its
//! effect is in the region (the Raft core sends nothing that depends on it before).
//!
//! Refusals at open ([`OpenError`]): a region that is not blank but has no valid
//! header, a header of another cluster or node, a referenced snapshot that fails its
//! hash, or a log that ends before the committed index. The node then does not take
//! part in consensus (it would otherwise forget votes and committed entries).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xdv_raft::{
    ConfState, Entry, HardState, LogIndex, MemStorage, NodeId, Snapshot, Storage, StorageError,
    Term,
};

/// Bytes the durable storage lives in. Reads and writes are in bounds by contract
/// (the storage checks its layout against `len()` once, at open).
pub trait Region {
    fn len(&self) -> usize;
    fn read(&self, offset: usize, buf: &mut [u8]);
    fn write(&mut self, offset: usize, bytes: &[u8]);
    /// Orders every earlier write before every later one (a store fence on hardware;
    /// the simulator may crash here).
    fn barrier(&mut self);
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Region for &mut [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self[offset..offset + buf.len()]);
    }
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        self[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn barrier(&mut self) {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
}

impl Region for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self[offset..offset + buf.len()]);
    }
    fn write(&mut self, offset: usize, bytes: &[u8]) {
        self[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn barrier(&mut self) {}
}

/// A region in memory whose writes can be torn: after [`TearRegion::arm`]`(k, keep)`,
/// the `k`-th next write lands only its first `keep` bytes and every write after it is
/// lost — a crash in the middle of a durable write. The simulator's and the tests'
/// region.
pub struct TearRegion {
    pub bytes: Vec<u8>,
    tear_after: Option<u64>,
    keep: usize,
    crashed: bool,
    writes: u64,
}

impl TearRegion {
    pub fn new(bytes: Vec<u8>) -> TearRegion {
        TearRegion {
            bytes,
            tear_after: None,
            keep: 0,
            crashed: false,
            writes: 0,
        }
    }

    /// Tears the write after `k` more writes, keeping `keep` bytes of it.
    pub fn arm(&mut self, k: u64, keep: usize) {
        self.tear_after = Some(k);
        self.keep = keep;
    }

    /// Back to a healthy region (the restart after the crash).
    pub fn disarm(&mut self) {
        self.tear_after = None;
        self.crashed = false;
    }

    /// Whether a torn write happened (the node must be considered crashed).
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// Writes made so far (torn and lost ones included).
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl Region for TearRegion {
    fn len(&self) -> usize {
        self.bytes.len()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.copy_from_slice(&self.bytes[offset..offset + buf.len()]);
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.writes += 1;
        if self.crashed {
            return;
        }
        let n = match self.tear_after.as_mut() {
            Some(0) => {
                self.crashed = true;
                self.keep.min(data.len())
            }
            Some(k) => {
                *k -= 1;
                data.len()
            }
            None => data.len(),
        };
        self.bytes[offset..offset + n].copy_from_slice(&data[..n]);
    }
    fn barrier(&mut self) {}
}

const HEADER_MAGIC: &[u8; 8] = b"XDVRAFT2";
const OLD_MAGIC: &[u8; 8] = b"XDVRAFT1";
const SNAP_MAGIC: &[u8; 8] = b"XDVSNAP2";
const HEADER_SLOT_BYTES: usize = 4096;
/// magic, generation, payload length, SHA-256.
const SLOT_PREFIX_BYTES: usize = 8 + 8 + 4 + 32;
const RECORD_MAGIC: u32 = 0x5844_4c52; // "XDLR"
const WRAP_MAGIC: u32 = 0x5844_5752; // "XDWR"
/// magic, length, index, term, previous hash, own hash.
const RECORD_HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 16 + 16;
/// Smallest region the layout accepts.
pub const MIN_REGION_BYTES: usize = 64 * 1024;
/// Largest encoded entry a record holds.
pub const MAX_RECORD_PAYLOAD_BYTES: usize = 1 << 20;

type Link = [u8; 16];

/// Where a region is known to be, or why it is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The region is smaller than [`MIN_REGION_BYTES`].
    TooSmall(usize),
    /// Neither header copy verifies, and the region is not blank.
    Damaged(String),
    /// A valid header of another cluster or node.
    Foreign { cluster: u32, node: u32 },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::TooSmall(n) => write!(
                f,
                "region of {n} bytes is smaller than the {MIN_REGION_BYTES} the layout needs"
            ),
            OpenError::Damaged(why) => write!(f, "durable Raft state is damaged: {why}"),
            OpenError::Foreign { cluster, node } => write!(
                f,
                "the region holds the Raft state of node {node} of cluster {cluster}"
            ),
        }
    }
}

/// How `open` found the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Blank: bootstrapped with the given voters.
    Fresh,
    /// Restored from the headers and the record chain; `entries` log records were read.
    Restored { entries: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct SnapRef {
    slot: u8,
    len: u32,
    hash: [u8; 32],
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Header {
    cluster: u32,
    node: u32,
    hs: HardState,
    snap: SnapRef,
    prev_index: LogIndex,
    prev_term: Term,
    /// Logical position of the first live record.
    head: u64,
    /// The link the first live record chains to.
    base: Link,
    /// Bumped whenever the log restarts after a snapshot install.
    epoch: u64,
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    snap_at: [usize; 2],
    snap_bytes: usize,
    log_at: usize,
    log_bytes: u64,
}

impl Layout {
    fn of(len: usize) -> Result<Layout, OpenError> {
        if len < MIN_REGION_BYTES {
            return Err(OpenError::TooSmall(len));
        }
        let rest = len - 2 * HEADER_SLOT_BYTES;
        let snap_bytes = (rest / 4) & !7;
        let log_at = 2 * HEADER_SLOT_BYTES + 2 * snap_bytes;
        Ok(Layout {
            snap_at: [2 * HEADER_SLOT_BYTES, 2 * HEADER_SLOT_BYTES + snap_bytes],
            snap_bytes,
            log_at,
            log_bytes: ((len - log_at) & !7) as u64,
        })
    }
}

/// Counters for the console and the benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurableStats {
    pub header_writes: u64,
    pub snapshot_writes: u64,
    pub records_written: u64,
    pub record_bytes_written: u64,
    /// Writes that could not be made durable (the log area or a snapshot slot is full).
    pub failed_writes: u64,
}

/// `xdv_raft::Storage` kept in a [`Region`]: reads come from memory, every write goes
/// through to the region before it returns.
pub struct DurableStorage<R: Region> {
    mem: MemStorage,
    region: R,
    layout: Layout,
    header: Header,
    generation: u64,
    /// Logical position of each held entry's record, and its link.
    positions: VecDeque<(u64, Link)>,
    tail: u64,
    stats: DurableStats,
    /// Set when a write could not be made durable: the node must stop.
    failed: Option<String>,
}

fn link(prev: &Link, index: LogIndex, term: Term, payload: &[u8]) -> Link {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(index.to_le_bytes());
    h.update(term.to_le_bytes());
    h.update((payload.len() as u32).to_le_bytes());
    h.update(payload);
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

fn base_link(epoch: u64, index: LogIndex, term: Term) -> Link {
    link(&[0xb5; 16], index, term, &epoch.to_le_bytes())
}

fn slot_hash(generation: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    h.update((payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads one header slot: `Some((generation, header))` if it verifies.
fn read_header<R: Region>(region: &R, slot: usize) -> Option<(u64, Header)> {
    let mut b = vec![0u8; HEADER_SLOT_BYTES];
    region.read(slot * HEADER_SLOT_BYTES, &mut b);
    if &b[..8] != HEADER_MAGIC {
        return None;
    }
    let generation = u64_at(&b, 8);
    let len = u32_at(&b, 16) as usize;
    let payload = b.get(SLOT_PREFIX_BYTES..SLOT_PREFIX_BYTES.checked_add(len)?)?;
    if slot_hash(generation, payload) != b[20..52] {
        return None;
    }
    Some((generation, postcard::from_bytes(payload).ok()?))
}

impl<R: Region> DurableStorage<R> {
    /// Opens the region of node `node` of cluster `cluster`: restores it, or on a blank
    /// region bootstraps `voters` (an empty list joins later with no configuration).
    pub fn open(
        region: R,
        cluster: u32,
        node: u32,
        voters: &[NodeId],
    ) -> Result<(DurableStorage<R>, Opened), OpenError> {
        let layout = Layout::of(region.len())?;
        let a = read_header(&region, 0);
        let b = read_header(&region, 1);
        let newest = match (a, b) {
            (Some(x), Some(y)) => Some(if x.0 >= y.0 { x } else { y }),
            (x, y) => x.or(y),
        };
        let Some((generation, header)) = newest else {
            let mut head = vec![0u8; 2 * HEADER_SLOT_BYTES];
            region.read(0, &mut head);
            if head.iter().any(|&x| x != 0) {
                let why = if &head[..8] == OLD_MAGIC || &head[HEADER_SLOT_BYTES..][..8] == OLD_MAGIC
                {
                    "the region holds the older whole-image format XDVRAFT1"
                } else {
                    "neither header copy passes its checksum"
                };
                return Err(OpenError::Damaged(why.into()));
            }
            let s = Self::format(region, layout, cluster, node, voters);
            return Ok((s, Opened::Fresh));
        };
        if header.cluster != cluster || header.node != node {
            return Err(OpenError::Foreign {
                cluster: header.cluster,
                node: header.node,
            });
        }
        let snap = Self::read_snapshot(&region, &layout, &header.snap)?;
        let mut s = DurableStorage {
            mem: MemStorage::default(),
            region,
            layout,
            header,
            generation,
            positions: VecDeque::new(),
            tail: 0,
            stats: DurableStats::default(),
            failed: None,
        };
        if s.header.prev_index > snap.meta.index {
            return Err(OpenError::Damaged(alloc::format!(
                "the compaction point {} is past the snapshot at {}",
                s.header.prev_index,
                snap.meta.index
            )));
        }
        // The log may still hold entries the snapshot covers (compaction lags): start
        // from the compaction point, append the records, then put the snapshot back.
        s.mem.install_snapshot(Snapshot {
            meta: xdv_raft::SnapshotMeta {
                index: s.header.prev_index,
                term: s.header.prev_term,
                conf: snap.meta.conf.clone(),
            },
            data: Vec::new(),
        });
        let entries = s.scan()?;
        if snap.meta.index > s.mem.last_index() {
            s.mem.install_snapshot(snap);
        } else {
            s.mem.save_snapshot(snap);
        }
        s.mem.set_hard_state(s.header.hs);
        if s.header.hs.commit > s.mem.last_index() {
            return Err(OpenError::Damaged(alloc::format!(
                "the log ends at index {} but index {} was committed (a record is damaged)",
                s.mem.last_index(),
                s.header.hs.commit
            )));
        }
        s.mem.take_dirty_from();
        Ok((s, Opened::Restored { entries }))
    }

    fn format(region: R, layout: Layout, cluster: u32, node: u32, voters: &[NodeId]) -> Self {
        let mem = MemStorage::new_with_voters(voters);
        let header = Header {
            cluster,
            node,
            hs: HardState::default(),
            snap: SnapRef {
                slot: 1,
                len: 0,
                hash: [0; 32],
            },
            prev_index: mem.first_index() - 1,
            prev_term: mem.term(mem.first_index() - 1).unwrap_or(0),
            head: 0,
            base: base_link(0, 0, 0),
            epoch: 0,
        };
        let mut s = DurableStorage {
            mem,
            region,
            layout,
            header,
            generation: 0,
            positions: VecDeque::new(),
            tail: 0,
            stats: DurableStats::default(),
            failed: None,
        };
        let snap = s.mem.snapshot().clone();
        s.restart_log(&snap);
        s.write_snapshot(&snap);
        s
    }

    fn read_snapshot(region: &R, layout: &Layout, r: &SnapRef) -> Result<Snapshot, OpenError> {
        let at = *layout
            .snap_at
            .get(usize::from(r.slot))
            .ok_or_else(|| OpenError::Damaged("the header names a snapshot slot past 1".into()))?;
        let len = r.len as usize;
        if len + SLOT_PREFIX_BYTES > layout.snap_bytes {
            return Err(OpenError::Damaged(
                "the snapshot length exceeds its slot".into(),
            ));
        }
        let mut b = vec![0u8; SLOT_PREFIX_BYTES + len];
        region.read(at, &mut b);
        let payload = &b[SLOT_PREFIX_BYTES..];
        if &b[..8] != SNAP_MAGIC || slot_hash(0, payload) != r.hash {
            return Err(OpenError::Damaged(alloc::format!(
                "snapshot slot {} does not match its hash",
                r.slot
            )));
        }
        postcard::from_bytes(payload)
            .map_err(|_| OpenError::Damaged("the snapshot does not decode".into()))
    }

    /// Follows the record chain from the header's head; returns entries restored.
    fn scan(&mut self) -> Result<u64, OpenError> {
        let mut pos = self.header.head;
        let mut prev = self.header.base;
        let mut index = self.header.prev_index + 1;
        let mut entries = Vec::new();
        let mut n = 0u64;
        loop {
            match self.read_record(pos, &prev, index) {
                Some(Step::Record { entry, link, next }) => {
                    self.positions.push_back((pos, link));
                    entries.push(entry);
                    prev = link;
                    pos = next;
                    index += 1;
                    n += 1;
                }
                Some(Step::Wrap { next }) => pos = next,
                None => break,
            }
            if pos - self.header.head > self.layout.log_bytes {
                break;
            }
        }
        // The snapshot may cover part of what the log still holds (compaction lags).
        self.mem.append(&entries);
        self.tail = pos;
        Ok(n)
    }

    fn read_record(&self, pos: u64, prev: &Link, index: LogIndex) -> Option<Step> {
        let area = self.layout.log_bytes;
        let off = (pos % area) as usize;
        let room = (area as usize) - off;
        if room < 4 {
            return Some(Step::Wrap {
                next: pos + room as u64,
            });
        }
        let mut magic = [0u8; 4];
        self.region.read(self.layout.log_at + off, &mut magic);
        match u32::from_le_bytes(magic) {
            WRAP_MAGIC => {
                return Some(Step::Wrap {
                    next: pos + room as u64,
                });
            }
            RECORD_MAGIC if room >= RECORD_HEADER_BYTES => {}
            _ => return None,
        }
        let mut h = [0u8; RECORD_HEADER_BYTES];
        self.region.read(self.layout.log_at + off, &mut h);
        let len = u32_at(&h, 4) as usize;
        let (rec_index, term) = (u64_at(&h, 8), u64_at(&h, 16));
        if rec_index != index || len > MAX_RECORD_PAYLOAD_BYTES || RECORD_HEADER_BYTES + len > room
        {
            return None;
        }
        if h[24..40] != prev[..] {
            return None;
        }
        let mut payload = vec![0u8; len];
        self.region
            .read(self.layout.log_at + off + RECORD_HEADER_BYTES, &mut payload);
        let own = link(prev, index, term, &payload);
        if h[40..56] != own[..] {
            return None;
        }
        let entry: Entry = postcard::from_bytes(&payload).ok()?;
        if entry.index != index || entry.term != term {
            return None;
        }
        Some(Step::Record {
            entry,
            link: own,
            next: pos + record_bytes(len) as u64,
        })
    }

    fn write_header(&mut self) {
        self.generation += 1;
        let Ok(payload) = postcard::to_allocvec(&self.header) else {
            self.fail("the header does not encode");
            return;
        };
        if payload.len() + SLOT_PREFIX_BYTES > HEADER_SLOT_BYTES {
            self.fail("the header outgrew its slot");
            return;
        }
        let slot = (self.generation % 2) as usize * HEADER_SLOT_BYTES;
        let mut b = Vec::with_capacity(SLOT_PREFIX_BYTES + payload.len());
        b.extend_from_slice(HEADER_MAGIC);
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&slot_hash(self.generation, &payload));
        b.extend_from_slice(&payload);
        // Invalidate first: a torn write of this slot then reads as invalid, and the
        // other slot (the previous generation) is used.
        self.region.write(slot, &[0u8; 8]);
        self.region.barrier();
        self.region.write(slot + 8, &b[8..]);
        self.region.barrier();
        self.region.write(slot, HEADER_MAGIC);
        self.region.barrier();
        self.stats.header_writes += 1;
    }

    /// Writes `snap` to the slot the durable header does not reference, then flips the
    /// header to it.
    fn write_snapshot(&mut self, snap: &Snapshot) {
        let Ok(payload) = postcard::to_allocvec(snap) else {
            self.fail("a snapshot does not encode");
            return;
        };
        if payload.len() + SLOT_PREFIX_BYTES > self.layout.snap_bytes {
            self.fail("a snapshot is larger than its slot");
            return;
        }
        let slot = 1 - self.header.snap.slot.min(1);
        let at = self.layout.snap_at[usize::from(slot)];
        let hash = slot_hash(0, &payload);
        let mut b = Vec::with_capacity(SLOT_PREFIX_BYTES + payload.len());
        b.extend_from_slice(SNAP_MAGIC);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&hash);
        b.extend_from_slice(&payload);
        self.region.write(at, &b);
        self.region.barrier();
        self.stats.snapshot_writes += 1;
        self.header.snap = SnapRef {
            slot,
            len: payload.len() as u32,
            hash,
        };
        self.write_header();
    }

    /// The log restarts empty after `snap` (install, bootstrap).
    fn restart_log(&mut self, snap: &Snapshot) {
        self.header.epoch += 1;
        self.header.prev_index = snap.meta.index;
        self.header.prev_term = snap.meta.term;
        self.header.head = self.tail;
        self.header.base = base_link(self.header.epoch, snap.meta.index, snap.meta.term);
        self.positions.clear();
    }

    fn fail(&mut self, why: &str) {
        self.stats.failed_writes += 1;
        if self.failed.is_none() {
            self.failed = Some(String::from(why));
        }
    }

    /// Writes the records of `entries` at the tail (after truncating to the first).
    fn write_records(&mut self, entries: &[Entry]) {
        let area = self.layout.log_bytes;
        for e in entries {
            let Ok(payload) = postcard::to_allocvec(e) else {
                self.fail("an entry does not encode");
                return;
            };
            if payload.len() > MAX_RECORD_PAYLOAD_BYTES {
                self.fail("an entry is larger than a log record may be");
                return;
            }
            let need = record_bytes(payload.len()) as u64;
            let off = self.tail % area;
            let mut pos = self.tail;
            if off + need > area {
                if area - off >= 4 {
                    self.region
                        .write(self.layout.log_at + off as usize, &WRAP_MAGIC.to_le_bytes());
                }
                pos += area - off;
            }
            if pos + need - self.header.head > area {
                self.fail("the log area is full (the node compacts too late)");
                return;
            }
            let prev = self.positions.back().map_or(self.header.base, |&(_, l)| l);
            let own = link(&prev, e.index, e.term, &payload);
            let mut b = Vec::with_capacity(need as usize);
            b.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
            b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            b.extend_from_slice(&e.index.to_le_bytes());
            b.extend_from_slice(&e.term.to_le_bytes());
            b.extend_from_slice(&prev);
            b.extend_from_slice(&own);
            b.extend_from_slice(&payload);
            b.resize(need as usize, 0);
            self.region
                .write(self.layout.log_at + (pos % area) as usize, &b);
            self.positions.push_back((pos, own));
            self.tail = pos + need;
            self.stats.records_written += 1;
            self.stats.record_bytes_written += need;
        }
        self.region.barrier();
    }

    /// Why the storage stopped being durable, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn stats(&self) -> DurableStats {
        self.stats
    }

    /// Bytes of the live log.
    pub fn log_bytes_used(&self) -> u64 {
        self.tail - self.header.head
    }

    /// Capacity of the log area and of one snapshot slot.
    pub fn capacity(&self) -> (u64, usize) {
        (
            self.layout.log_bytes,
            self.layout.snap_bytes - SLOT_PREFIX_BYTES,
        )
    }

    /// True once the live log fills half its area: snapshot and compact now.
    pub fn nearly_full(&self) -> bool {
        self.log_bytes_used() > self.layout.log_bytes / 2
    }

    /// The region (the simulator reads its bytes after a crash).
    pub fn region(&self) -> &R {
        &self.region
    }

    pub fn region_mut(&mut self) -> &mut R {
        &mut self.region
    }

    pub fn into_region(self) -> R {
        self.region
    }
}

enum Step {
    Record { entry: Entry, link: Link, next: u64 },
    Wrap { next: u64 },
}

fn record_bytes(payload: usize) -> usize {
    (RECORD_HEADER_BYTES + payload + 7) & !7
}

impl<R: Region> Storage for DurableStorage<R> {
    fn hard_state(&self) -> HardState {
        self.mem.hard_state()
    }
    fn set_hard_state(&mut self, hs: HardState) {
        self.mem.set_hard_state(hs);
        if self.header.hs != hs {
            self.header.hs = hs;
            self.write_header();
        }
    }
    fn first_index(&self) -> LogIndex {
        self.mem.first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.mem.last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.mem.term(index)
    }
    fn entries(&self, lo: LogIndex, hi: LogIndex, max: usize) -> Result<Vec<Entry>, StorageError> {
        self.mem.entries(lo, hi, max)
    }
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.mem.append(entries);
        // Records held for entries at or past the first one are superseded.
        let keep = first.index.saturating_sub(self.mem.first_index()) as usize;
        if keep < self.positions.len() {
            self.tail = self.positions[keep].0;
            self.positions.truncate(keep);
        }
        self.write_records(entries);
    }
    fn snapshot(&self) -> &Snapshot {
        self.mem.snapshot()
    }
    fn install_snapshot(&mut self, snap: Snapshot) {
        self.mem.install_snapshot(snap.clone());
        self.restart_log(&snap);
        self.write_snapshot(&snap);
    }
    fn save_snapshot(&mut self, snap: Snapshot) {
        self.mem.save_snapshot(snap.clone());
        self.write_snapshot(&snap);
    }
    fn compact(&mut self, index: LogIndex) {
        let before = self.mem.first_index();
        self.mem.compact(index);
        let dropped = (self.mem.first_index() - before) as usize;
        if dropped == 0 {
            return;
        }
        let dropped = dropped.min(self.positions.len());
        let base = self.positions[dropped - 1].1;
        self.positions.drain(..dropped);
        self.header.prev_index = self.mem.first_index() - 1;
        self.header.prev_term = self.mem.term(self.header.prev_index).unwrap_or(0);
        self.header.head = self.positions.front().map_or(self.tail, |p| p.0);
        self.header.base = base;
        self.write_header();
    }
    fn initial_conf(&self) -> ConfState {
        self.mem.initial_conf()
    }
}
