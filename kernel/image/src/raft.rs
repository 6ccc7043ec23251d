//! Consensus on the node: the sans-IO `xdv_raft::RaftNode` driven by the network
//! poll, its messages carried as `ClusterMessage::Raft` frames over the peer
//! transport, its durable state in the reserved Raft region.
//!
//! Durable state: after every write through `Storage` the whole state (hard state,
//! snapshot, log) is encoded with postcard into the older of two slots of the region,
//! each `[magic "XDVRAFT1"][generation u64][length u32][SHA-256 of payload][payload]`;
//! the valid slot with the higher generation is loaded at boot. A torn write leaves
//! the other slot intact, so a node killed at any point restarts with its last
//! durable state. The write returns only when the slot is complete, and the Raft core
//! sends nothing that depends on a write before the write returns.

use crate::{audit, println, time};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use spin::Mutex;
use xdv_audit::RecordBody;
use xdv_raft::{
    ConfState, Config, Entry, EntryKind, HardState, LogIndex, MemStorage, Message, RaftNode,
    Snapshot, Storage, StorageError, Term,
};
use xdv_types::{CoreId, Hash32, NodeId};

const MAGIC: &[u8; 8] = b"XDVRAFT1";
const SLOT_HEADER_BYTES: usize = 8 + 8 + 4 + 32;
/// Most queued inbound Raft messages (beyond: dropped, Raft retries).
const MAX_INBOX: usize = 1024;

#[derive(serde::Serialize, serde::Deserialize)]
struct Image {
    hs: HardState,
    snap: Snapshot,
    log: Vec<Entry>,
}

/// `MemStorage` mirrored into the region after every write.
pub struct RegionStorage {
    mem: MemStorage,
    region: &'static mut [u8],
    generation: u64,
    pub writes: u64,
    pub failed_writes: u64,
    /// Bytes of the last durable image (header included).
    pub image_bytes: usize,
}

impl RegionStorage {
    /// True once the durable image fills half a slot: compact before it stops fitting
    /// (large modules in the log fill a slot long before the entry-count threshold).
    pub fn nearly_full(&self) -> bool {
        self.image_bytes > self.region.len() / 4
    }
}

impl RegionStorage {
    fn slot(&self, i: usize) -> core::ops::Range<usize> {
        let half = self.region.len() / 2;
        i * half..(i + 1) * half
    }

    fn read_slot(region: &[u8]) -> Option<(u64, Image)> {
        if region.len() < SLOT_HEADER_BYTES || &region[..8] != MAGIC {
            return None;
        }
        let generation = u64::from_le_bytes(region[8..16].try_into().ok()?);
        let len = u32::from_le_bytes(region[16..20].try_into().ok()?) as usize;
        let payload = region.get(SLOT_HEADER_BYTES..SLOT_HEADER_BYTES.checked_add(len)?)?;
        if Sha256::digest(payload).as_slice() != &region[20..52] {
            return None;
        }
        Some((generation, postcard::from_bytes(payload).ok()?))
    }

    /// Loads the newest valid slot, or bootstraps `voters` on a blank region.
    pub fn open(region: &'static mut [u8], voters: &[NodeId]) -> (RegionStorage, bool) {
        let half = region.len() / 2;
        let a = Self::read_slot(&region[..half]);
        let b = Self::read_slot(&region[half..]);
        let newest = match (a, b) {
            (Some(x), Some(y)) => Some(if x.0 >= y.0 { x } else { y }),
            (x, y) => x.or(y),
        };
        match newest {
            Some((generation, img)) => {
                let mut mem = MemStorage::default();
                mem.install_snapshot(img.snap);
                mem.append(&img.log);
                mem.set_hard_state(img.hs);
                (
                    RegionStorage {
                        mem,
                        region,
                        generation,
                        writes: 0,
                        failed_writes: 0,
                        image_bytes: 0,
                    },
                    true,
                )
            }
            None => {
                let mut s = RegionStorage {
                    mem: MemStorage::new_with_voters(voters),
                    region,
                    generation: 0,
                    writes: 0,
                    failed_writes: 0,
                    image_bytes: 0,
                };
                s.persist();
                (s, false)
            }
        }
    }

    fn persist(&mut self) {
        let first = self.mem.first_index();
        let last = self.mem.last_index();
        let log = if last >= first {
            self.mem
                .entries(first, last + 1, usize::MAX)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let img = Image {
            hs: self.mem.hard_state(),
            snap: self.mem.snapshot().clone(),
            log,
        };
        let Ok(payload) = postcard::to_allocvec(&img) else {
            self.failed_writes += 1;
            return;
        };
        self.generation += 1;
        let slot = self.slot((self.generation % 2) as usize);
        let dst = &mut self.region[slot];
        if payload.len() + SLOT_HEADER_BYTES > dst.len() {
            self.failed_writes += 1;
            log::error!(
                "raft: state of {} bytes does not fit its region slot; not durable",
                payload.len()
            );
            return;
        }
        // Invalidate the slot first, write the body, then the header: a crash in
        // between leaves this slot invalid and the other one intact.
        dst[..8].fill(0);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        dst[SLOT_HEADER_BYTES..SLOT_HEADER_BYTES + payload.len()].copy_from_slice(&payload);
        dst[8..16].copy_from_slice(&self.generation.to_le_bytes());
        dst[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        dst[20..52].copy_from_slice(&Sha256::digest(&payload));
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        dst[..8].copy_from_slice(MAGIC);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.writes += 1;
        self.image_bytes = payload.len() + SLOT_HEADER_BYTES;
    }
}

impl Storage for RegionStorage {
    fn hard_state(&self) -> HardState {
        self.mem.hard_state()
    }
    fn set_hard_state(&mut self, hs: HardState) {
        self.mem.set_hard_state(hs);
        self.persist();
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
        self.mem.append(entries);
        self.persist();
    }
    fn snapshot(&self) -> &Snapshot {
        self.mem.snapshot()
    }
    fn install_snapshot(&mut self, snap: Snapshot) {
        self.mem.install_snapshot(snap);
        self.persist();
    }
    fn save_snapshot(&mut self, snap: Snapshot) {
        self.mem.save_snapshot(snap);
        self.persist();
    }
    fn compact(&mut self, index: LogIndex) {
        self.mem.compact(index);
        self.persist();
    }
    fn initial_conf(&self) -> ConfState {
        self.mem.initial_conf()
    }
}

pub struct Consensus {
    pub node: RaftNode<RegionStorage>,
    inbox: VecDeque<Message>,
    last_tick_us: u64,
    pub applied: u64,
    pub dropped_in: u64,
    pub undeliverable: u64,
    pub bad_messages: u64,
    /// (index, term, uptime µs) of this node's proposals not yet applied (bounded).
    proposed: VecDeque<(u64, Term, u64)>,
    /// Propose-to-apply latencies of the most recent own proposals, µs (bounded).
    latencies_us: VecDeque<u64>,
}

/// Most entry bytes in one append: with its framing it fits a peer socket's send buffer.
pub const RAFT_APPEND_BYTES: usize = 128 * 1024;
// An append holds entries up to this budget, or one entry (at most MAX_ENTRY_BYTES)
// alone; either, with Raft and frame headers, must fit a peer socket's send buffer.
const _: () = assert!(
    (if RAFT_APPEND_BYTES > xdv_cluster::MAX_ENTRY_BYTES {
        RAFT_APPEND_BYTES
    } else {
        xdv_cluster::MAX_ENTRY_BYTES
    }) + 4096
        <= crate::transport::PEER_TX_BYTES
);

/// Own proposals tracked for commit latency.
const MAX_TRACKED: usize = 512;

pub static RAFT: Mutex<Option<Consensus>> = Mutex::new(None);

/// Starts consensus among `voters` (this node included).
pub fn init(node: u32, voters: &[u32]) {
    // A provisioned node runs consensus even alone (a one-node cluster); without a
    // module it needs peers on the command line.
    let provisioned = crate::cluster::IDENTITY
        .get()
        .is_some_and(|i| i.seed.is_some());
    if voters.is_empty() || (voters.len() < 2 && !provisioned) {
        return;
    }
    let region = match crate::mem::regions::raft() {
        Ok(r) => r,
        Err(e) => {
            println!("raft: region unusable: {e}; consensus disabled");
            return;
        }
    };
    let ids: Vec<NodeId> = voters.iter().map(|&v| NodeId(v)).collect();
    let (storage, restored) = RegionStorage::open(region, &ids);
    let cfg = Config {
        max_append_bytes: RAFT_APPEND_BYTES,
        ..Config::default()
    };
    match RaftNode::new(NodeId(node), cfg, storage) {
        Ok(r) => {
            let st = r.status();
            println!(
                "raft: node {node} {} term {} last index {} (voters {:?})",
                if restored {
                    "restored from its region at"
                } else {
                    "bootstrapped at"
                },
                st.term,
                st.last_index,
                voters
            );
            *RAFT.lock() = Some(Consensus {
                node: r,
                inbox: VecDeque::new(),
                last_tick_us: time::uptime_us(),
                applied: 0,
                proposed: VecDeque::new(),
                latencies_us: VecDeque::new(),
                dropped_in: 0,
                undeliverable: 0,
                bad_messages: 0,
            });
        }
        Err(e) => println!("raft: cannot start: {e:?}"),
    }
}

/// A `Raft` frame arrived from a peer.
pub fn deliver(from: NodeId, bytes: &[u8]) {
    let mut guard = RAFT.lock();
    let Some(c) = guard.as_mut() else { return };
    match postcard::from_bytes::<Message>(bytes) {
        Ok(m) if m.from == from => {
            if c.inbox.len() < MAX_INBOX {
                c.inbox.push_back(m);
            } else {
                c.dropped_in += 1;
            }
        }
        Ok(_) | Err(_) => c.bad_messages += 1,
    }
}

/// Ticks (one per `TICK_MS` of uptime), steps queued messages, sends, and hands
/// committed entries to the cluster state machine (after releasing the Raft lock, so
/// the cluster service may propose while it applies).
pub fn poll() {
    let mut out: Vec<(NodeId, Vec<u8>)> = Vec::new();
    let mut committed: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut restore: Option<Vec<u8>> = None;
    let mut snapshot_due = false;
    let mut compact = false;
    {
        let mut guard = RAFT.lock();
        let Some(c) = guard.as_mut() else { return };
        let now = time::uptime_us();
        let tick_us = xdv_raft::TICK_MS * 1000;
        // Bounded catch-up so a long pause does not fire a burst of elections.
        let mut ticks = 0;
        while now - c.last_tick_us >= tick_us && ticks < 5 {
            c.last_tick_us += tick_us;
            c.node.tick();
            ticks += 1;
        }
        if now - c.last_tick_us >= tick_us {
            c.last_tick_us = now;
        }
        while let Some(m) = c.inbox.pop_front() {
            c.node.step(m);
        }
        if c.node.has_ready() {
            let rd = c.node.ready();
            if let Some(snap) = rd.snapshot {
                restore = Some(snap.data);
            }
            for m in rd.messages {
                if let Ok(b) = postcard::to_allocvec(&m) {
                    out.push((m.to, b));
                }
            }
            let now_us = time::uptime_us();
            for e in rd.committed {
                c.applied = e.index;
                while c.proposed.front().is_some_and(|&(i, _, _)| i <= e.index) {
                    let (i, term, at) = c.proposed.pop_front().expect("checked");
                    // Only our own entry: a later leader may have put another there.
                    if i == e.index && term == e.term {
                        if c.latencies_us.len() == MAX_TRACKED {
                            c.latencies_us.pop_front();
                        }
                        c.latencies_us.push_back(now_us.saturating_sub(at));
                    }
                }
                let bytes = postcard::to_allocvec(&e).unwrap_or_default();
                let entry_hash = Hash32(Sha256::digest(&bytes).into());
                audit::record(
                    CoreId(0),
                    &RecordBody::RaftApplied {
                        index: e.index,
                        term: e.term,
                        entry_hash,
                    },
                );
                if let EntryKind::Normal(data) = e.kind {
                    committed.push((e.index, data));
                }
            }
            c.node.advance();
            compact = c.node.storage().nearly_full();
            snapshot_due = c.node.snapshot_due() || compact;
        }
    }
    if let Some(image) = restore {
        crate::cluster::restore(&image);
    }
    if !committed.is_empty() {
        crate::cluster::apply_committed(committed);
    }
    if snapshot_due
        && let Some(image) = crate::cluster::snapshot_image()
        && let Some(c) = RAFT.lock().as_mut()
    {
        if compact {
            c.node.create_snapshot_and_compact(image);
        } else {
            c.node.create_snapshot(image);
        }
    }
    for (to, bytes) in out {
        if !crate::transport::send_raft(to, bytes)
            && let Some(c) = RAFT.lock().as_mut()
        {
            c.undeliverable += 1;
        }
    }
    crate::cluster::poll();
}

/// (leader as this node knows it, whether this node is the leader).
pub fn leader() -> (Option<NodeId>, bool) {
    match RAFT.lock().as_ref() {
        Some(c) => {
            let s = c.node.status();
            (s.leader, s.role == xdv_raft::Role::Leader)
        }
        None => (None, false),
    }
}

/// The consensus status, if consensus runs.
pub fn status() -> Option<xdv_raft::Status> {
    RAFT.lock().as_ref().map(|c| c.node.status())
}

/// Proposes an opaque entry (leader only).
pub fn propose(data: Vec<u8>) -> Result<u64, alloc::string::String> {
    let mut guard = RAFT.lock();
    let c = guard
        .as_mut()
        .ok_or("consensus is not running (no peers= list)")?;
    let index = c.node.propose(data).map_err(|e| alloc::format!("{e:?}"))?;
    if c.proposed.len() == MAX_TRACKED {
        c.proposed.pop_front();
    }
    let term = c.node.term();
    c.proposed.push_back((index, term, time::uptime_us()));
    Ok(index)
}

/// (p50, p99, samples) of propose-to-apply latency of this node's proposals, µs.
pub fn commit_latency_us() -> (u64, u64, u64) {
    let guard = RAFT.lock();
    let Some(c) = guard.as_ref() else {
        return (0, 0, 0);
    };
    let mut v: Vec<u64> = c.latencies_us.iter().copied().collect();
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let at = |p: usize| v[(v.len() - 1) * p / 100];
    (at(50), at(99), v.len() as u64)
}

/// `raft` console command.
pub fn print() {
    let guard = RAFT.lock();
    let Some(c) = guard.as_ref() else {
        println!("raft: not running (no peers= list)");
        return;
    };
    let s = c.node.status();
    println!(
        "raft: node {} role {:?} term {} leader {} commit {} applied {} last {} voters {:?}",
        s.id,
        s.role,
        s.term,
        s.leader
            .map(|l| alloc::format!("{l}"))
            .unwrap_or_else(|| "none".into()),
        s.commit,
        c.applied,
        s.last_index,
        s.conf.voters
    );
    let st = c.node.storage();
    println!(
        "raft: durable writes {} (failed {}), image {} bytes, snapshot at {}, log from {}, inbound dropped {}, bad messages {}, undeliverable {}",
        st.writes,
        st.failed_writes,
        st.image_bytes,
        st.snapshot().meta.index,
        st.first_index(),
        c.dropped_in,
        c.bad_messages,
        c.undeliverable
    );
}
