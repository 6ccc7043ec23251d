//! The host verifier's fast reader of a clean audit region: the node's checks, on
//! several threads, with four SHA-256 streams per core ([`super::lanes`]).
//!
//! 1. Record boundaries: one walk over the record headers from `DATA_START` (each
//!    header gives its record's length; no hashing), on the calling thread. The walk
//!    stops at the first blank header, as the node's scanner does. Every
//!    [`UNIT_RECORDS`] records walked become a unit, handed to the threads at once:
//!    hashing starts while the walk goes on.
//! 2. Records: each thread takes the next unit, hashes its records four at a time
//!    and checks every one as the node's [`check_record_using`] does (version, node,
//!    sequence number = its index, length, own hash, previous hash = the stored hash
//!    of the record before it, payload, kind, field limits): the two kinds a node
//!    writes for every entry (`RaftApplied`, `Custom`) by [`quick_check`], which
//!    reads their payload in place (no owned body; a test holds it to accepting
//!    only what the node's check accepts, and reading the same), every other record
//!    (or one `quick_check` cannot tell) by the node's check itself. A record's
//!    stored hash is checked by the thread holding it, so the chain holds exactly
//!    when every record checks.
//! 3. Merkle: as each group of four aligned subtrees of [`MerkleIndex::BASE_HEIGHT`]
//!    is hashed, its nodes are hashed in lanes while the record hashes (the
//!    leaves, audit format 2) are in cache; then the levels above. The
//!    accumulator of the node's scan is made of the same subtree roots.
//! 4. The units' findings are folded in region order; the verdict is the kernel's
//!    [`ScanPlan::finish`] with the [`CleanChain`] scan.
//!
//! Only a region that is one clean chain (every record checks, only zero bytes
//! after the last one) is read here; for anything else — damage, a torn tail, no
//! record, a record that does not check — `read_clean` returns `None` and the
//! caller reads the region with the node's scanner ([`super::replay::read_audit_simple`]),
//! so damaged regions get the same ranges, errors and verdicts as before.

use super::lanes;
use super::replay::{AuditRead, Collected};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use xdv_audit::body::MAX_CUSTOM_BYTES;
use xdv_audit::format::{
    DATA_START, FORMAT_VERSION, HEADER_BYTES, MAX_PAYLOAD_BYTES, TRAILER_BYTES, max_seq,
};
use xdv_audit::merkle::{MerkleAccumulator, merkle_root, node_hash};
use xdv_audit::{
    CleanChain, RecordBody, ScanPlan, check_record_using, genesis_hash, header_is_blank,
    nonzero_end,
};
use xdv_types::{Hash32, NodeId};

/// Threads the verifier reads a region on: `XDV_VERIFY_THREADS` if set (1..=64),
/// else the machine's available parallelism (at most 16).
pub fn verify_threads() -> usize {
    std::env::var("XDV_VERIFY_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, NonZeroUsize::get)
                .min(16)
        })
}

/// Runs `f(first index, chunk)` over `out` cut in runs of `chunk` items, one thread
/// per run (the first on the calling thread), results in order.
fn par_chunks<T: Send, R: Send>(
    out: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync,
) -> Vec<R> {
    let chunk = chunk.max(1);
    if out.len() <= chunk {
        return vec![f(0, out)];
    }
    let f = &f;
    std::thread::scope(|s| {
        let mut it = out.chunks_mut(chunk).enumerate();
        let (_, first) = it.next().expect("at least two runs");
        let handles: Vec<_> = it.map(|(i, c)| s.spawn(move || f(i * chunk, c))).collect();
        let mut results = vec![f(0, first)];
        results.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("verifier thread panicked")),
        );
        results
    })
}

/// What the threads found in one unit of records (a run of [`UNIT_RECORDS`]).
#[derive(Default)]
struct Part {
    collected: Collected,
    last_kind: Option<u16>,
    max_stamp: u64,
    last_boot_count: Option<u64>,
    alarm_recorded: bool,
    max_raft_applied: u64,
    probe_hit: Option<(u64, Hash32)>,
}

/// Records a thread takes at a time (a multiple of the Merkle index's subtrees, so
/// each unit builds the subtrees over its own records while their hashes are in
/// cache). Threads take the next unit when done, so a thread the machine slows
/// down holds up no other.
const UNIT_RECORDS: usize = 16 << 10;

/// Records hashed, checked and folded into Merkle subtrees in one go (four
/// subtrees of `2^BASE_HEIGHT` leaves).
const GROUP_RECORDS: usize = 4 << MerkleIndex::BASE_HEIGHT;

/// Reads `bytes` if it is one clean chain (see the module doc), on `threads` threads.
pub fn read_clean(bytes: &[u8], threads: usize) -> Option<AuditRead> {
    read_clean_units(bytes, threads, UNIT_RECORDS)
}

/// [`read_clean`] with units of `unit` records (a multiple of [`GROUP_RECORDS`]).
///
/// The calling thread walks the record headers and hands each run of `unit`
/// records to the workers as soon as its boundaries are known (so hashing starts
/// while the walk goes on), then works too; each finished unit is folded into the
/// result in region order by whichever thread finishes the unit it waited for.
fn read_clean_units(bytes: &[u8], threads: usize, unit: usize) -> Option<AuditRead> {
    debug_assert!(unit > 0 && unit.is_multiple_of(GROUP_RECORDS));
    let plan = ScanPlan::new(bytes);
    let node = plan.node?;
    let region = &bytes[..plan.region_len];
    // At most this many records fit in the region (each is at least
    // `MIN_RECORD_BYTES`): room reserved once, pages touched only as filled.
    let room = max_seq(region.len()) as usize + 1;
    let ctx = Ctx {
        region,
        node,
        genesis: genesis_hash(node),
        probe: plan.probe,
    };
    // Each unit writes its records' hashes and its subtrees' roots straight into
    // its own slots of these (handed out by the walk below).
    let mut hashes: Vec<Hash32> = Vec::with_capacity(room);
    let mut level0: Vec<Hash32> = Vec::with_capacity((room >> MerkleIndex::BASE_HEIGHT) + 1);
    huge_pages(&mut hashes);
    let failed = AtomicBool::new(false);
    let fold = Mutex::new(Fold {
        next: 0,
        pending: BTreeMap::new(),
        collected: Collected::with_capacity(room / 2, true),
        part: Part::default(),
        pool: Vec::new(),
    });
    let (ok, at, n) = {
        let mut spare_h = hashes.spare_capacity_mut();
        let mut spare_l = level0.spare_capacity_mut();
        let (tx, rx) = mpsc::channel::<Unit>();
        let rx = Mutex::new(rx);
        let work = || {
            loop {
                let next = rx.lock().expect("unit queue").recv();
                let Ok(mut u) = next else { break };
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let spare = fold.lock().expect("fold").pool.pop();
                let Some(part) = ctx.unit(&mut u, spare) else {
                    failed.store(true, Ordering::Relaxed);
                    break;
                };
                fold.lock()
                    .expect("fold")
                    .add(u.first, u.bounds.len() - 1, part);
            }
        };
        // 1. Boundaries, unit by unit, while the workers check the units walked.
        std::thread::scope(|s| {
            let workers: Vec<_> = (1..threads.max(1)).map(|_| s.spawn(work)).collect();
            let mut at = DATA_START;
            let mut first = 0;
            let mut ok = true;
            'walk: loop {
                let mut bounds = Vec::with_capacity(unit + 1);
                while bounds.len() < unit && !blank(region, at) {
                    let Some(hb) = region.get(at..at + HEADER_BYTES) else {
                        ok = false;
                        break 'walk;
                    };
                    let payload =
                        u32::from_le_bytes(hb[25..29].try_into().expect("4 bytes")) as usize;
                    if payload > MAX_PAYLOAD_BYTES
                        || at + HEADER_BYTES + payload + TRAILER_BYTES > region.len()
                    {
                        ok = false;
                        break 'walk;
                    }
                    bounds.push(at);
                    at += HEADER_BYTES + payload + TRAILER_BYTES;
                }
                let len = bounds.len();
                if len == 0 || failed.load(Ordering::Relaxed) {
                    break;
                }
                let subtrees = len >> MerkleIndex::BASE_HEIGHT;
                if len > spare_h.len() || subtrees > spare_l.len() {
                    ok = false;
                    break;
                }
                bounds.push(at);
                let (uh, rest_h) = std::mem::take(&mut spare_h).split_at_mut(len);
                let (ul, rest_l) = std::mem::take(&mut spare_l).split_at_mut(subtrees);
                (spare_h, spare_l) = (rest_h, rest_l);
                let _ = tx.send(Unit {
                    first,
                    bounds,
                    hashes: uh,
                    level0: ul,
                });
                first += len;
                if len < unit {
                    break;
                }
            }
            drop(tx);
            if !ok {
                failed.store(true, Ordering::Relaxed);
            }
            work();
            for w in workers {
                w.join().expect("verifier thread panicked");
            }
            (ok, at, first)
        })
    };
    let fold = fold.into_inner().expect("fold");
    if !ok || failed.into_inner() || fold.next != n || !fold.pending.is_empty() {
        return None;
    }
    // SAFETY: the walk handed out the first `n` slots of `hashes` and the first
    // `n >> BASE_HEIGHT` of `level0` (capacity checked), one run per unit; every
    // unit was folded in (`fold.next == n`: units tile 0..n), and a unit is folded
    // in only after [`Ctx::unit`] wrote every slot of its runs.
    unsafe {
        hashes.set_len(n);
        level0.set_len(n >> MerkleIndex::BASE_HEIGHT);
    }
    if nonzero_end(region) > at {
        return None;
    }
    let Fold {
        collected, part, ..
    } = fold;

    // 3. Merkle: the levels above the subtrees.
    let merkle = MerkleIndex::from_base(level0);
    let accumulator = merkle.accumulator(&hashes, n as u64)?;

    // 4. The verdict, by the kernel's judge.
    let chain = CleanChain {
        node,
        records: n as u64,
        end: at as u64,
        head: hashes.last().copied().unwrap_or(ctx.genesis),
        last_kind: part.last_kind,
        max_stamp: part.max_stamp,
        last_boot_count: part.last_boot_count,
        alarm_recorded: part.alarm_recorded,
        max_raft_applied: part.max_raft_applied,
        probe_hit: part.probe_hit,
        merkle: accumulator,
    };
    let insp = plan.finish(bytes, Some(chain.scan()));
    Some(collected.into_read(Some(node), insp.verdict, hashes, merkle))
}

/// Asks the kernel to back the unused capacity of `v` with huge pages where it can
/// (a hint: `madvise(MADV_HUGEPAGE)`; Linux's default "madvise" mode honours it).
/// The verifier's outputs are tens of MiB written once: one fault per 2 MiB
/// instead of one per 4 KiB.
pub(crate) fn huge_pages<T>(v: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    let spare = v.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(spare);
    let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    #[cfg(target_os = "linux")]
    if a < b {
        // SAFETY: `a..b` lies inside `v`'s allocation (its spare capacity, aligned
        // inwards); MADV_HUGEPAGE changes how its pages are backed, never their
        // contents or validity, and the result (a hint refused) is ignored.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
        }
    }
    let _ = (a, b);
}

/// The first blank header at `at` (all 29 bytes zero), as [`header_is_blank`]; a
/// record's first byte is its version, never zero, so most calls read one byte.
fn blank(region: &[u8], at: usize) -> bool {
    region.get(at).is_none_or(|&b| b == 0) && header_is_blank(region, at)
}

/// One run of records: `bounds[k]..bounds[k + 1]` is record `first + k`; its
/// records' hashes go to `hashes` (one slot each), the roots of the Merkle subtrees
/// they fill to `level0`.
struct Unit<'a> {
    first: usize,
    bounds: Vec<usize>,
    hashes: &'a mut [MaybeUninit<Hash32>],
    level0: &'a mut [MaybeUninit<Hash32>],
}

/// The result so far: the units `0..next` folded in, in region order.
struct Fold {
    /// First record of the next unit to fold in.
    next: usize,
    /// Units done before the ones ahead of them: first record → (records, part).
    pending: BTreeMap<usize, (usize, Part)>,
    collected: Collected,
    part: Part,
    /// Units' collections, emptied into `collected` with their capacity kept, for
    /// the next units: a fresh one per unit cost a page fault (and the kernel
    /// zeroing the page) every 4 KiB it grew to.
    pool: Vec<Collected>,
}

impl Fold {
    fn add(&mut self, first: usize, records: usize, part: Part) {
        self.pending.insert(first, (records, part));
        while let Some((records, p)) = self.pending.remove(&self.next) {
            self.next += records;
            let me = &mut self.part;
            me.last_kind = p.last_kind.or(me.last_kind);
            me.max_stamp = me.max_stamp.max(p.max_stamp);
            me.last_boot_count = p.last_boot_count.or(me.last_boot_count);
            me.alarm_recorded |= p.alarm_recorded;
            me.max_raft_applied = me.max_raft_applied.max(p.max_raft_applied);
            me.probe_hit = p.probe_hit.or(me.probe_hit);
            let mut emptied = p.collected;
            self.collected.append_from(&mut emptied);
            self.pool.push(emptied);
        }
    }
}

/// What every unit reads.
struct Ctx<'a> {
    region: &'a [u8],
    node: NodeId,
    genesis: Hash32,
    probe: Option<u64>,
}

impl Ctx<'_> {
    /// The stored hash of the record ending at `end`.
    fn stored(&self, end: usize) -> &[u8; 32] {
        self.region[end - 32..end].try_into().expect("32 bytes")
    }

    /// Checks the records of `u`, writes every slot of its `hashes` and `level0`;
    /// what they say, `None` if one record does not check.
    fn unit(&self, u: &mut Unit, spare: Option<Collected>) -> Option<Part> {
        const W: usize = 1 << MerkleIndex::BASE_HEIGHT;
        let n = u.bounds.len() - 1;
        if u.hashes.len() != n || u.level0.len() != n >> MerkleIndex::BASE_HEIGHT {
            return None;
        }
        let mut p = Part {
            collected: spare.unwrap_or_else(|| Collected::with_capacity(n / 2, false)),
            ..Part::default()
        };
        let last = n - 1;
        let mut group = vec![Hash32([0; 32]); GROUP_RECORDS];
        let mut sub = 0;
        for g in 0..n.div_ceil(GROUP_RECORDS) {
            let base = g * GROUP_RECORDS;
            let len = GROUP_RECORDS.min(n - base);
            for q in (0..len).step_by(4) {
                let quad = base + q;
                let ranges = [0, 1, 2, 3].map(|k| {
                    let i = (quad + k).min(last);
                    (u.bounds[i], u.bounds[i + 1] - 32)
                });
                let digests = lanes::digest4_in(self.region, ranges);
                for k in 0..4.min(len - q) {
                    let i = quad + k;
                    let (a, b) = ranges[k];
                    group[q + k] = self.record(
                        u.first + i,
                        &u.bounds[i..i + 2],
                        &self.region[a..b],
                        &digests[k],
                        &mut p,
                    )?;
                }
            }
            for (slot, h) in u.hashes[base..base + len].iter_mut().zip(&group) {
                slot.write(*h);
            }
            // The subtrees this group fills, four at a time.
            let full = len / W;
            if full > 0 {
                let leaves = [0, 1, 2, 3].map(|k| {
                    let j = k.min(full - 1);
                    &group[j * W..(j + 1) * W]
                });
                let roots = subtree_roots4(leaves);
                for (slot, r) in u.level0[sub..sub + full].iter_mut().zip(roots) {
                    slot.write(r);
                }
                sub += full;
            }
        }
        Some(p)
    }

    /// Checks record `i` (at `span[0]..span[1]`; `msg` its bytes before its stored
    /// hash, whose SHA-256 is `digest`), collects what it says into `p`; its hash,
    /// `None` if it does not check.
    fn record(
        &self,
        i: usize,
        span: &[usize],
        msg: &[u8],
        digest: &Hash32,
        p: &mut Part,
    ) -> Option<Hash32> {
        let prev = if i == 0 {
            &self.genesis.0
        } else {
            self.stored(span[0])
        };
        let stamp;
        let kind;
        let hash;
        match quick_check(msg, self.stored(span[1]), self.node, i as u64, prev, digest) {
            Some(q) => {
                let seq = i as u64;
                match q.body {
                    Quick::RaftApplied { index, term } => {
                        p.collected.raft_applied(seq, index, term)
                    }
                    Quick::Applied(bytes) => p.collected.applied_bytes(seq, bytes),
                    Quick::Other => {}
                }
                (stamp, kind, hash) = (q.stamp, q.kind, *digest);
            }
            None => {
                let mine = msg;
                let mut sha = |b: &[u8]| {
                    if core::ptr::eq(b, mine) {
                        *digest
                    } else {
                        Hash32(Sha256::digest(b).into())
                    }
                };
                let v = check_record_using(
                    self.region,
                    span[0],
                    Some(self.node),
                    Some((i as u64, Hash32(*prev))),
                    &mut sha,
                )
                .ok()?;
                p.collected.visit(&v);
                match v.body {
                    RecordBody::Boot { count } => p.last_boot_count = Some(count),
                    RecordBody::AuditAlarm { .. } => p.alarm_recorded = true,
                    RecordBody::RaftApplied { index, .. } => {
                        p.max_raft_applied = p.max_raft_applied.max(index)
                    }
                    _ => {}
                }
                (stamp, kind, hash) = (v.header.stamp.0, v.header.kind, v.hash);
            }
        }
        p.last_kind = Some(kind);
        p.max_stamp = p.max_stamp.max(stamp);
        if self.probe == Some(span[1] as u64) {
            p.probe_hit = Some((i as u64, hash));
        }
        Some(hash)
    }
}

/// What [`quick_check`] read from a record's payload.
enum Quick<'a> {
    RaftApplied {
        index: u64,
        term: u64,
    },
    /// The bytes of a `Custom` record with [`xdv_node::AUDIT_TAG_APPLIED`].
    Applied(&'a [u8]),
    /// A `Custom` record with another tag that [`Collected::visit`] ignores.
    Other,
}

struct QuickRecord<'a> {
    kind: u16,
    stamp: u64,
    body: Quick<'a>,
}

/// The node's check of one record ([`check_record_using`]) for the two kinds a
/// node writes for every entry (`RaftApplied` and `Custom`), without decoding the
/// body into owned values. `msg` is the record up to its stored hash `stored`,
/// `digest` is SHA-256 of `msg`. `Some` only if the node's check accepts the record
/// with sequence number `seq` and previous hash `prev` (a test holds the two to
/// that on every byte changed); `None` when it does not, or when this check cannot
/// tell (another kind, another encoding postcard also accepts): the caller then
/// asks the node's check.
#[inline]
fn quick_check<'a>(
    msg: &'a [u8],
    stored: &[u8; 32],
    node: NodeId,
    seq: u64,
    prev: &[u8; 32],
    digest: &Hash32,
) -> Option<QuickRecord<'a>> {
    let le64 = |at: usize| u64::from_le_bytes(msg[at..at + 8].try_into().expect("8 bytes"));
    if msg.len() < HEADER_BYTES + 32 || digest.0 != *stored {
        return None;
    }
    let payload_len = u32::from_le_bytes(msg[25..29].try_into().expect("4 bytes")) as usize;
    let kind = u16::from_le_bytes([msg[9], msg[10]]);
    let ok = msg[0] == FORMAT_VERSION
        && le64(1) == seq
        && u32::from_le_bytes(msg[19..23].try_into().expect("4 bytes")) == node.0
        && payload_len <= MAX_PAYLOAD_BYTES
        && msg.len() == HEADER_BYTES + payload_len + 32
        && msg[msg.len() - 32..] == prev[..];
    if !ok {
        return None;
    }
    let payload = &msg[HEADER_BYTES..HEADER_BYTES + payload_len];
    // The variant tag as its one-byte varint (= the kind).
    let (&tag, rest) = payload.split_first()?;
    if u16::from(tag) != kind {
        return None;
    }
    let body = match kind {
        10 => {
            let (index, rest) = varint(rest, 64)?;
            let (term, rest) = varint(rest, 64)?;
            // The entry hash, then nothing.
            if rest.len() != 32 {
                return None;
            }
            Quick::RaftApplied { index, term }
        }
        13 => {
            let (tag, rest) = varint(rest, 16)?;
            let (len, rest) = varint(rest, 64)?;
            if len > MAX_CUSTOM_BYTES as u64 || rest.len() as u64 != len {
                return None;
            }
            match tag as u16 {
                xdv_node::AUDIT_TAG_APPLIED => Quick::Applied(rest),
                xdv_node::AUDIT_TAG_NODE
                | xdv_node::AUDIT_TAG_RTT
                | xdv_node::AUDIT_TAG_ROOT_ALARM => return None,
                _ => Quick::Other,
            }
        }
        _ => return None,
    };
    Some(QuickRecord {
        kind,
        stamp: le64(11),
        body,
    })
}

/// postcard's varint of a `bits`-bit unsigned integer (at most `ceil(bits / 7)`
/// bytes, the last carrying only the bits that fit): the value and the rest.
#[inline]
fn varint(b: &[u8], bits: u32) -> Option<(u64, &[u8])> {
    let max_bytes = bits.div_ceil(7) as usize;
    let last_max = (1u8 << (bits % 7)) - 1;
    let mut out = 0u64;
    for i in 0..max_bytes {
        let v = *b.get(i)?;
        out |= u64::from(v & 0x7F) << (7 * i);
        if v & 0x80 == 0 {
            return (i + 1 < max_bytes || v <= last_max).then_some((out, &b[i + 1..]));
        }
    }
    None
}

/// The Merkle tree over a region's record hashes (as [`xdv_audit::merkle`]): the
/// roots of every aligned perfect subtree of at least `2^BASE_HEIGHT` leaves, so the
/// root of any prefix takes a few hashes.
#[derive(Clone, Debug, Default)]
pub struct MerkleIndex {
    /// `levels[k][j]`: root of leaves `j·2^(B+k) .. (j+1)·2^(B+k)`.
    levels: Vec<Vec<Hash32>>,
}

impl MerkleIndex {
    pub const BASE_HEIGHT: u32 = 8;

    /// The index over `hashes`, on `threads` threads.
    pub fn build(hashes: &[Hash32], threads: usize) -> MerkleIndex {
        let base = 1usize << Self::BASE_HEIGHT;
        let mut level = vec![Hash32([0; 32]); hashes.len() / base];
        let groups = level.len().div_ceil(4);
        let per = groups.div_ceil(threads.max(1)) * 4;
        par_chunks(&mut level, per, |first, out| {
            for (g, outs) in out.chunks_mut(4).enumerate() {
                let j0 = first + g * 4;
                let leaves = [0, 1, 2, 3].map(|k| {
                    let j = j0 + k.min(outs.len() - 1);
                    &hashes[j * base..(j + 1) * base]
                });
                let roots = subtree_roots4(leaves);
                outs.copy_from_slice(&roots[..outs.len()]);
            }
        });
        MerkleIndex::from_base(level)
    }

    /// The index whose lowest level is `level` (the roots of the aligned subtrees
    /// of `2^BASE_HEIGHT` leaves, in order).
    pub fn from_base(level: Vec<Hash32>) -> MerkleIndex {
        let mut levels = vec![level];
        while let Some(last) = levels.last().filter(|l| l.len() >= 2) {
            let next = last
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        MerkleIndex { levels }
    }

    /// The accumulator of the first `size` leaves (`None` past the end).
    pub fn accumulator(&self, hashes: &[Hash32], size: u64) -> Option<MerkleAccumulator> {
        if size > hashes.len() as u64 {
            return None;
        }
        let mut stack = Vec::new();
        let mut start = 0usize;
        for h in (0..64u32).rev().filter(|h| size >> h & 1 == 1) {
            let width = 1usize << h;
            let root = match h.checked_sub(Self::BASE_HEIGHT) {
                Some(k) => *self.levels.get(k as usize)?.get(start >> h)?,
                None => merkle_root(&hashes[start..start + width], width).ok()?,
            };
            stack.push((h, root));
            start += width;
        }
        MerkleAccumulator::from_subtrees(size, stack)
    }

    /// Merkle root of the first `size` leaves (`None` past the end).
    pub fn root(&self, hashes: &[Hash32], size: u64) -> Option<Hash32> {
        Some(self.accumulator(hashes, size)?.root())
    }
}

/// Roots of four perfect subtrees of `2^BASE_HEIGHT` leaves each (a leaf is its
/// record hash), their nodes hashed in lanes ([`lanes::nodes4`]: one block each).
fn subtree_roots4(leaves: [&[Hash32]; 4]) -> [Hash32; 4] {
    const W: usize = 1 << MerkleIndex::BASE_HEIGHT;
    // The lowest nodes straight from the leaves, the levels above in `cur`.
    let mut cur = [[Hash32([0; 32]); W / 2]; 4];
    for i in 0..W / 2 {
        let d = lanes::nodes4([0, 1, 2, 3].map(|k| (&leaves[k][2 * i], &leaves[k][2 * i + 1])));
        for (c, h) in cur.iter_mut().zip(d) {
            c[i] = h;
        }
    }
    let mut width = W / 2;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            let d = lanes::nodes4([0, 1, 2, 3].map(|k| (&cur[k][2 * i], &cur[k][2 * i + 1])));
            for (c, h) in cur.iter_mut().zip(d) {
                c[i] = h;
            }
        }
    }
    cur.map(|c| c[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operate::replay::{read_audit_simple, read_audit_threads};
    use xdv_audit::format::SUPERBLOCK_OFFSETS;
    use xdv_audit::{AuditLog, MerkleAccumulator};
    use xdv_types::{CoreId, NodeId, Timestamp};

    /// A region like a node's: boots, Raft applies and their applied-entry records,
    /// a node line, a published root; `records` pairs.
    fn region(records: u64) -> Vec<u8> {
        let mut region = vec![0u8; 1 << 19];
        let (mut log, _) = AuditLog::open(&mut region, NodeId(3)).expect("opens");
        for i in 1..=records {
            let applied = RecordBody::RaftApplied {
                index: i,
                term: 1 + i / 100,
                entry_hash: Hash32([i as u8; 32]),
            };
            let command = if i % 7 == 0 { "Join" } else { "AssignTask" };
            let state = RecordBody::Custom {
                tag: xdv_node::AUDIT_TAG_APPLIED,
                bytes: xdv_cluster::mgmt::encode(&(i, command, Hash32([(i >> 3) as u8; 32]))),
            };
            log.append(Timestamp(2 * i), CoreId(0), &applied).unwrap();
            log.append(Timestamp(2 * i + 1), CoreId(1), &state).unwrap();
            if i % 500 == 0 {
                let line = RecordBody::Custom {
                    tag: xdv_node::AUDIT_TAG_NODE,
                    bytes: xdv_cluster::mgmt::encode(&format!("node halted at {i}")),
                };
                log.append(Timestamp(2 * i + 1), CoreId(0), &line).unwrap();
                let root = RecordBody::MerkleRootPublished {
                    size: i,
                    root: Hash32([7; 32]),
                };
                log.append(Timestamp(2 * i + 1), CoreId(0), &root).unwrap();
            }
        }
        drop(log);
        region
    }

    /// Every field of the two reads is the same (and every prefix root).
    fn assert_same(fast: &AuditRead, simple: &AuditRead, what: &str) {
        assert_eq!(fast.node, simple.node, "{what}: node");
        assert_eq!(fast.verdict, simple.verdict, "{what}: verdict");
        assert_eq!(fast.hashes, simple.hashes, "{what}: hashes");
        assert_eq!(fast.applied, simple.applied, "{what}: applied");
        assert_eq!(fast.undecodable, simple.undecodable, "{what}: undecodable");
        assert_eq!(
            fast.raft_applied, simple.raft_applied,
            "{what}: raft_applied"
        );
        assert_eq!(fast.marks, simple.marks, "{what}: marks");
        assert_eq!(fast.rtt, simple.rtt, "{what}: RTT samples");
        let mut acc = MerkleAccumulator::new();
        for size in 0..=simple.hashes.len() as u64 {
            if size > 0 {
                acc.push(&simple.hashes[size as usize - 1]);
            }
            if size % 97 == 0 || size == simple.hashes.len() as u64 || size < 600 {
                assert_eq!(
                    fast.root_at(size),
                    Some(acc.root()),
                    "{what}: root at {size}"
                );
                assert_eq!(
                    simple.root_at(size),
                    Some(acc.root()),
                    "{what}: root at {size}"
                );
            }
        }
        assert_eq!(fast.root_at(simple.hashes.len() as u64 + 1), None);
    }

    #[test]
    fn clean_region_takes_the_fast_path_and_reads_the_same() {
        let r = region(1200);
        let simple = read_audit_simple(&r);
        let report = simple.verdict.as_ref().expect("clean region verifies");
        assert!(simple.hashes.len() > 2400 && simple.marks.len() >= 3);
        assert_eq!(simple.root_at(report.records), Some(report.merkle_root));
        for threads in [1, 2, 3, 7] {
            let fast = read_clean(&r, threads).expect("a clean region is read fast");
            assert_same(&fast, &simple, &format!("clean, {threads} threads"));
        }
        // Units of one and two groups: several units, taken by several threads,
        // folded in region order.
        for unit in [GROUP_RECORDS, 2 * GROUP_RECORDS] {
            for threads in [1, 2, 3] {
                let fast = read_clean_units(&r, threads, unit).expect("clean");
                assert_same(&fast, &simple, &format!("unit {unit}, {threads} threads"));
            }
        }
        // Few records (fewer than threads, fewer than one Merkle subtree).
        let small = region(1);
        let fast = read_clean(&small, 4).expect("clean");
        assert_same(&fast, &read_audit_simple(&small), "small");
    }

    /// A deterministic pseudo-random stream (xorshift64*), for test data.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// A region of `records` records of every kind a node writes, drawn from `seed`:
    /// applied-entry records with odd names and bytes that do not decode, node
    /// lines, other tags, boots, alarms, published roots, big and small records.
    fn random_region(seed: u64, records: usize) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        let mut region = vec![0u8; 1 << 20];
        let (mut log, _) = AuditLog::open(&mut region, NodeId(5)).expect("opens");
        for i in 0..records as u64 {
            let body = match rng.below(12) {
                0..=3 => RecordBody::RaftApplied {
                    index: rng.next() >> rng.below(64),
                    term: rng.below(1 << 20),
                    entry_hash: Hash32([rng.next() as u8; 32]),
                },
                4..=6 => {
                    let names = ["AssignTask", "Join", "", "ü-name", "x"];
                    let name = names[rng.below(names.len() as u64) as usize];
                    RecordBody::Custom {
                        tag: xdv_node::AUDIT_TAG_APPLIED,
                        bytes: xdv_cluster::mgmt::encode(&(
                            rng.next() >> rng.below(64),
                            name,
                            Hash32([rng.next() as u8; 32]),
                        )),
                    }
                }
                7 => {
                    let n = rng.below(80) as usize;
                    RecordBody::Custom {
                        tag: [xdv_node::AUDIT_TAG_APPLIED, 7, 0xFFFF][rng.below(3) as usize],
                        bytes: rng.bytes(n),
                    }
                }
                8 => RecordBody::Custom {
                    tag: xdv_node::AUDIT_TAG_NODE,
                    bytes: xdv_cluster::mgmt::encode(&format!("node halted at {i}")),
                },
                9 => RecordBody::Boot { count: i },
                10 => RecordBody::AuditAlarm {
                    used_bytes: i,
                    high_water_bytes: 2 * i,
                    region_bytes: 3 * i,
                },
                _ => RecordBody::MerkleRootPublished {
                    size: i,
                    root: Hash32([i as u8; 32]),
                },
            };
            log.append(Timestamp(rng.below(1000)), CoreId(0), &body)
                .expect("room");
        }
        drop(log);
        region
    }

    #[test]
    fn random_regions_read_the_same_on_the_fast_path() {
        for seed in 1..=6u64 {
            let r = random_region(seed * 7919, 2500);
            let simple = read_audit_simple(&r);
            assert!(simple.verdict.is_ok(), "seed {seed}");
            assert!(!simple.applied.is_empty() && !simple.undecodable.is_empty());
            assert!(!simple.raft_applied.is_empty() && !simple.marks.is_empty());
            for (threads, unit) in [(1, GROUP_RECORDS), (2, GROUP_RECORDS), (3, UNIT_RECORDS)] {
                let fast = read_clean_units(&r, threads, unit).expect("a clean region");
                assert_same(&fast, &simple, &format!("seed {seed}, {threads} threads"));
            }
        }
    }

    /// Every record of `region` (seals each changed record again, so the change is
    /// seen past the record's own hash): `quick_check` accepts a record only if the
    /// node's check does, and then reads the same kind, stamp and body.
    fn quick_agrees(region: &[u8], at: usize, seq: u64, prev: Hash32) -> (bool, bool) {
        let node = NodeId(5);
        let Some(len) = region.get(at + 25..at + 29) else {
            return (false, false);
        };
        let payload = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let end = at + HEADER_BYTES + payload + TRAILER_BYTES;
        if payload > MAX_PAYLOAD_BYTES || end > region.len() {
            return (false, false);
        }
        let msg = &region[at..end - 32];
        let stored: &[u8; 32] = region[end - 32..end].try_into().unwrap();
        let digest = Hash32(Sha256::digest(msg).into());
        let quick = quick_check(msg, stored, node, seq, &prev.0, &digest);
        let mut sha = |b: &[u8]| Hash32(Sha256::digest(b).into());
        let full = check_record_using(region, at, Some(node), Some((seq, prev)), &mut sha);
        if let Some(q) = &quick {
            let v = full.as_ref().expect("quick accepted what the node refuses");
            assert_eq!((q.kind, q.stamp), (v.header.kind, v.header.stamp.0));
            match (&q.body, &v.body) {
                (
                    Quick::RaftApplied { index, term },
                    RecordBody::RaftApplied {
                        index: i, term: t, ..
                    },
                ) => {
                    assert_eq!((index, term), (i, t))
                }
                (Quick::Applied(b), RecordBody::Custom { tag, bytes }) => {
                    assert_eq!((*tag, *b), (xdv_node::AUDIT_TAG_APPLIED, &bytes[..]))
                }
                (Quick::Other, RecordBody::Custom { tag, .. }) => {
                    assert!(*tag != xdv_node::AUDIT_TAG_APPLIED && *tag != xdv_node::AUDIT_TAG_NODE)
                }
                (_, b) => panic!("quick read another body than {b:?}"),
            }
        }
        (quick.is_some(), full.is_ok())
    }

    #[test]
    fn quick_check_accepts_only_what_the_node_check_accepts() {
        let clean = random_region(99, 120);
        let simple = read_audit_simple(&clean);
        let hashes = &simple.hashes;
        let genesis = genesis_hash(NodeId(5));
        // Record offsets, from the headers.
        let mut offs = Vec::new();
        let mut at = DATA_START;
        while !header_is_blank(&clean, at) {
            offs.push(at);
            let p = u32::from_le_bytes(clean[at + 25..at + 29].try_into().unwrap()) as usize;
            at += HEADER_BYTES + p + TRAILER_BYTES;
        }
        assert_eq!(offs.len(), hashes.len());
        let (mut both, mut node_only, mut neither) = (0, 0, 0);
        let mut rng = Rng(12345);
        for (i, &at) in offs.iter().enumerate() {
            let prev = if i == 0 { genesis } else { hashes[i - 1] };
            let end = offs.get(i + 1).copied().unwrap_or(at);
            assert!(
                quick_agrees(&clean, at, i as u64, prev).1,
                "record {i} checks"
            );
            // Every byte before the stored hash changed (several ways), the record
            // sealed again with its new length's hash.
            for pos in at..end.saturating_sub(32) {
                for v in [0x00, 0x01, 0x7F, 0x80, 0xFF, rng.next() as u8] {
                    let mut r = clean.clone();
                    if r[pos] == v {
                        continue;
                    }
                    r[pos] = v;
                    let p = u32::from_le_bytes(r[at + 25..at + 29].try_into().unwrap()) as usize;
                    let e = at + HEADER_BYTES + p + TRAILER_BYTES;
                    if p <= MAX_PAYLOAD_BYTES && e <= r.len() {
                        let h: [u8; 32] = Sha256::digest(&r[at..e - 32]).into();
                        r[e - 32..e].copy_from_slice(&h);
                    }
                    match quick_agrees(&r, at, i as u64, prev) {
                        (true, true) => both += 1,
                        (false, true) => node_only += 1,
                        (false, false) => neither += 1,
                        (true, false) => unreachable!("asserted in quick_agrees"),
                    }
                }
            }
            // A wrong sequence number or previous hash.
            assert_eq!(quick_agrees(&clean, at, i as u64 + 1, prev), (false, false));
            assert_eq!(
                quick_agrees(&clean, at, i as u64, Hash32([3; 32])),
                (false, false)
            );
        }
        assert!(
            both > 1000 && neither > 1000,
            "{both} {node_only} {neither}"
        );
    }

    #[test]
    fn applied_records_decode_as_mgmt_decode_does() {
        use crate::operate::replay::decode_applied;
        let good = xdv_cluster::mgmt::encode(&(300u64, "AssignTask", Hash32([9; 32])));
        let mut cases = vec![Vec::new(), [good.clone(), vec![0]].concat()];
        // Over-long varints for the index: ten bytes ending in 1 (read) or 2 (not).
        let name_and_hash = &good[2..];
        for last in [0x01, 0x02] {
            let mut long = vec![0x80; 9];
            long.push(last);
            cases.push([&long[..], name_and_hash].concat());
        }
        cases.push([&[0x80, 0x00][..], name_and_hash].concat());
        // Every prefix, and every byte of the good encoding changed three ways
        // (bad UTF-8, lengths and varints that run over, other names).
        for end in 0..=good.len() {
            cases.push(good[..end].to_vec());
        }
        for at in 0..good.len() {
            for v in [0xFF, 0x80, 0x41] {
                let mut c = good.clone();
                c[at] = v;
                cases.push(c);
            }
        }
        let (mut ok, mut refused) = (0, 0);
        for c in &cases {
            let want = xdv_cluster::mgmt::decode::<(u64, String, Hash32)>(c).ok();
            let got = decode_applied(c).map(|(i, n, h)| (i, n.to_string(), h));
            assert_eq!(got, want, "bytes {c:02x?}");
            if want.is_some() {
                ok += 1;
            } else {
                refused += 1;
            }
        }
        assert!(ok > 10 && refused > 10, "{ok} decoded, {refused} refused");
    }

    #[test]
    fn damaged_regions_read_the_same_as_the_node_scanner() {
        let clean = region(1200);
        let end = read_audit_simple(&clean).verdict.unwrap().bytes_used as usize;
        let first = DATA_START;
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        // A flipped byte in a header, a payload, a previous hash, a stored hash.
        for (name, at) in [
            ("header", first + 200 * 130 + 3),
            ("payload", end / 2),
            ("prev hash", end - 40),
            ("last hash", end - 1),
            ("first record", first + 40),
        ] {
            let mut r = clean.clone();
            r[at] ^= 0x10;
            cases.push((format!("flipped byte in {name} at {at:#x}"), r));
        }
        // A torn tail: non-zero bytes after the last record.
        let mut r = clean.clone();
        r[end..end + 50].fill(0xA5);
        cases.push(("torn tail".into(), r));
        // Stray bytes far after the chain.
        let mut r = clean.clone();
        let last = r.len() - 3;
        r[last] = 1;
        cases.push(("stray byte at the end".into(), r));
        // Damaged superblocks: one copy, both copies.
        let mut r = clean.clone();
        r[SUPERBLOCK_OFFSETS[0] + 40] ^= 1;
        cases.push(("superblock copy A".into(), r.clone()));
        r[SUPERBLOCK_OFFSETS[1] + 40] ^= 1;
        cases.push(("both superblock copies".into(), r));
        // A cut-off region (truncated file).
        cases.push(("truncated".into(), clean[..end - 10].to_vec()));
        // A blank region.
        cases.push(("blank".into(), vec![0u8; 1 << 16]));
        for (what, r) in &cases {
            let simple = read_audit_simple(r);
            for threads in [1, 2, 3] {
                assert_same(&read_audit_threads(r, threads), &simple, what);
            }
        }
        // The damage is seen: only the torn tail, the stray byte past the chain (a
        // torn tail too: both superblock copies are valid) and one bad copy verify.
        let verdicts: Vec<bool> = cases
            .iter()
            .map(|(_, r)| read_audit_simple(r).verdict.is_ok())
            .collect();
        let mut expected = vec![false; cases.len()];
        expected[5..8].fill(true);
        assert_eq!(verdicts, expected);
        // ... and the fast path refuses every region with a damaged record.
        for (what, r) in &cases[..5] {
            assert!(read_clean(r, 2).is_none(), "{what}");
        }
    }
}
