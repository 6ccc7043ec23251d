//! The host verifier's fast reader of a clean audit region: the node's checks, on
//! several threads, with four SHA-256 streams per core ([`super::lanes`]).
//!
//! 1. Record boundaries: one walk over the record headers from `DATA_START` (each
//!    header gives its record's length; no hashing). The walk stops at the first
//!    blank header, as the node's scanner does.
//! 2. Records: the boundaries split into one contiguous run per thread; each thread
//!    hashes its records four at a time and checks every record with the node's own
//!    [`check_record_using`] (version, node, sequence number = its index, length,
//!    own hash, previous hash = the stored hash of the record before it, payload,
//!    kind, field limits). A record's stored hash is checked by the thread holding
//!    it, so the chain holds exactly when every record checks.
//! 3. Merkle: every aligned subtree of [`MerkleIndex::BASE_HEIGHT`]-high, four at
//!    a time per core on the threads, then the levels above; the accumulator of the
//!    node's scan is made of the same subtree roots.
//! 4. The verdict: the kernel's [`ScanPlan::finish`] with the [`CleanChain`] scan.
//!
//! Only a region that is one clean chain (every record checks, only zero bytes
//! after the last one) is read here; for anything else — damage, a torn tail, no
//! record, a record that does not check — `read_clean` returns `None` and the
//! caller reads the region with the node's scanner ([`super::replay::read_audit_simple`]),
//! so damaged regions get the same ranges, errors and verdicts as before.

use super::lanes;
use super::replay::{AuditRead, Collected};
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use xdv_audit::format::{DATA_START, HEADER_BYTES, MAX_PAYLOAD_BYTES, TRAILER_BYTES};
use xdv_audit::merkle::{MerkleAccumulator, merkle_root, node_hash};
use xdv_audit::{
    CleanChain, RecordBody, ScanPlan, check_record_using, genesis_hash, header_is_blank,
    nonzero_end,
};
use xdv_types::Hash32;

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

/// What one thread found in its run of records.
#[derive(Default)]
struct Part {
    ok: bool,
    collected: Collected,
    last_kind: Option<u16>,
    max_stamp: u64,
    last_boot_count: Option<u64>,
    alarm_recorded: bool,
    probe_hit: Option<(u64, Hash32)>,
}

/// Reads `bytes` if it is one clean chain (see the module doc), on `threads` threads.
pub fn read_clean(bytes: &[u8], threads: usize) -> Option<AuditRead> {
    let plan = ScanPlan::new(bytes);
    let node = plan.node?;
    let region = &bytes[..plan.region_len];
    // 1. Boundaries: `bounds[i]..bounds[i + 1]` is record i.
    let mut bounds = Vec::with_capacity(region.len() / 128);
    let mut at = DATA_START;
    while !header_is_blank(region, at) {
        let hb = region.get(at..at + HEADER_BYTES)?;
        let payload = u32::from_le_bytes(hb[25..29].try_into().expect("4 bytes")) as usize;
        if payload > MAX_PAYLOAD_BYTES || at + HEADER_BYTES + payload + TRAILER_BYTES > region.len()
        {
            return None;
        }
        bounds.push(at);
        at += HEADER_BYTES + payload + TRAILER_BYTES;
    }
    if nonzero_end(region) > at {
        return None;
    }
    let n = bounds.len();
    bounds.push(at);
    let genesis = genesis_hash(node);
    let probe = plan.probe;

    // 2. Records.
    let mut hashes = vec![Hash32([0; 32]); n];
    let threads = threads.max(1);
    let parts = par_chunks(&mut hashes, n.div_ceil(threads), |first, out| {
        let mut p = Part::default();
        if out.is_empty() {
            p.ok = true;
            return p;
        }
        let last = first + out.len() - 1;
        let stored = |i: usize| -> Hash32 {
            Hash32(
                region[bounds[i + 1] - 32..bounds[i + 1]]
                    .try_into()
                    .expect("32 bytes"),
            )
        };
        for (g, outs) in out.chunks_mut(4).enumerate() {
            let base = first + g * 4;
            let msgs: [&[u8]; 4] = [0, 1, 2, 3].map(|k| {
                let i = (base + k).min(last);
                &region[bounds[i]..bounds[i + 1] - 32]
            });
            let digests = lanes::digest4(msgs);
            for (k, slot) in outs.iter_mut().enumerate() {
                let i = base + k;
                let prev = if i == 0 { genesis } else { stored(i - 1) };
                let mine = msgs[k];
                let mut sha = |b: &[u8]| {
                    if core::ptr::eq(b, mine) {
                        digests[k]
                    } else {
                        Hash32(Sha256::digest(b).into())
                    }
                };
                let Ok(v) = check_record_using(
                    region,
                    bounds[i],
                    Some(node),
                    Some((i as u64, prev)),
                    &mut sha,
                ) else {
                    return p;
                };
                *slot = v.hash;
                p.collected.visit(&v);
                p.last_kind = Some(v.header.kind);
                p.max_stamp = p.max_stamp.max(v.header.stamp.0);
                match v.body {
                    RecordBody::Boot { count } => p.last_boot_count = Some(count),
                    RecordBody::AuditAlarm { .. } => p.alarm_recorded = true,
                    _ => {}
                }
                if probe == Some(bounds[i + 1] as u64) {
                    p.probe_hit = Some((v.header.seq, v.hash));
                }
            }
        }
        p.ok = true;
        p
    });
    if parts.iter().any(|p| !p.ok) {
        return None;
    }

    // 3. Merkle.
    let merkle = MerkleIndex::build(&hashes, threads);
    let accumulator = merkle.accumulator(&hashes, n as u64)?;

    // 4. The verdict, by the kernel's judge.
    let mut collected = Vec::with_capacity(parts.len());
    let mut chain = CleanChain {
        node,
        records: n as u64,
        end: at as u64,
        head: hashes.last().copied().unwrap_or(genesis),
        last_kind: None,
        max_stamp: 0,
        last_boot_count: None,
        alarm_recorded: false,
        probe_hit: None,
        merkle: accumulator,
    };
    for p in parts {
        chain.last_kind = p.last_kind.or(chain.last_kind);
        chain.max_stamp = chain.max_stamp.max(p.max_stamp);
        chain.last_boot_count = p.last_boot_count.or(chain.last_boot_count);
        chain.alarm_recorded |= p.alarm_recorded;
        chain.probe_hit = p.probe_hit.or(chain.probe_hit);
        collected.push(p.collected);
    }
    let insp = plan.finish(bytes, Some(chain.scan()));
    let mut all = Collected::default();
    for c in collected {
        all.append(c);
    }
    Some(all.into_read(Some(node), insp.verdict, hashes, merkle))
}

/// The Merkle tree over a region's record hashes (RFC 6962, as
/// [`xdv_audit::merkle`]): the roots of every aligned perfect subtree of at least
/// `2^BASE_HEIGHT` leaves, so the root of any prefix takes a few hashes.
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

    /// RFC 6962 root of the first `size` leaves (`None` past the end).
    pub fn root(&self, hashes: &[Hash32], size: u64) -> Option<Hash32> {
        Some(self.accumulator(hashes, size)?.root())
    }
}

/// Roots of four perfect subtrees of `2^BASE_HEIGHT` leaves each, hashed in lanes
/// (leaves and nodes as fixed-shape blocks, [`lanes::leaves4`], [`lanes::nodes4`]).
fn subtree_roots4(leaves: [&[Hash32]; 4]) -> [Hash32; 4] {
    const W: usize = 1 << MerkleIndex::BASE_HEIGHT;
    let mut cur = [[Hash32([0; 32]); W]; 4];
    for i in 0..W {
        let d = lanes::leaves4(leaves.map(|l| &l[i]));
        for (c, h) in cur.iter_mut().zip(d) {
            c[i] = h;
        }
    }
    let mut width = W;
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
        // Few records (fewer than threads, fewer than one Merkle subtree).
        let small = region(1);
        let fast = read_clean(&small, 4).expect("clean");
        assert_same(&fast, &read_audit_simple(&small), "small");
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
