//! Region format: damage detection and location, crash recovery, the full-region
//! policy, and a fuzz smoke test that region parsing never panics.

mod common;

use common::*;
use proptest::prelude::*;
use xdv_audit::format::{DATA_START, MIN_REGION_BYTES, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSETS};
use xdv_audit::{AuditError, AuditLog, Damage, RecordBody, find_region, fuzz_check, verify_region};
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

const RECORDS: u64 = 24;

fn record_containing(ext: &[(usize, usize)], byte: usize) -> (u64, usize) {
    let i = ext
        .iter()
        .position(|&(o, l)| byte >= o && byte < o + l)
        .unwrap();
    (i as u64, ext[i].0)
}

#[test]
fn clean_region_verifies_and_reopens() {
    let mut region = small_region(RECORDS);
    let rep = verify_region(&region).unwrap();
    assert_eq!(rep.records, RECORDS);
    assert_eq!(rep.boot_count, 1);
    assert_eq!(rep.superblock_copies_valid, 2);
    assert_eq!(rep.torn_tail_bytes, 0);
    let (mut log, open) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(!open.formatted);
    assert_eq!(open.boot_count, 2);
    assert_eq!(open.records, RECORDS);
    assert_eq!(open.dropped_bytes, 0);
    assert_eq!(log.head_hash(), rep.head_hash);
    assert_eq!(log.merkle_root(), rep.merkle_root);
    log.append(Timestamp(100), CoreId(1), &RecordBody::Boot { count: 2 })
        .unwrap();
    let rep2 = verify_region(log.region()).unwrap();
    assert_eq!(rep2.records, RECORDS + 1);
    assert_eq!(rep2.boot_count, 2);
    assert_eq!(log.merkle_root(), rep2.merkle_root);
    assert_eq!(log.tail(2).len(), 2);
    assert_eq!(log.tail(2)[1].body, RecordBody::Boot { count: 2 });
    assert_eq!(log.verify_in_place().unwrap(), rep2);
}

/// `region` as a build of format version `version` would have written its
/// superblocks: the version word changed, the checksum (written out here from its
/// definition in `format.rs`) computed again.
fn with_superblock_version(region: &[u8], version: u16) -> Vec<u8> {
    let mut r = region.to_vec();
    for at in SUPERBLOCK_OFFSETS {
        let sb = &mut r[at..at + SUPERBLOCK_BYTES];
        sb[8..10].copy_from_slice(&version.to_le_bytes());
        let h = sb[..88]
            .chunks_exact(8)
            .fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
                (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0000_0100_0000_01b3)
            });
        sb[88..96].copy_from_slice(&(h ^ (h >> 32)).to_le_bytes());
    }
    r
}

#[test]
fn a_region_of_another_format_version_is_refused_untouched() {
    let region = small_region(RECORDS);
    assert_eq!(xdv_audit::format::FORMAT_VERSION, 2);
    // The rewrite itself is right: version 2 again gives back the same bytes.
    assert_eq!(with_superblock_version(&region, 2), region);
    for version in [1u16, 3, 0xFFFF] {
        let mut old = with_superblock_version(&region, version);
        let before = old.clone();
        let want = Damage::OtherVersion { found: version };
        assert_eq!(verify_region(&old).unwrap_err().what, want);
        assert_eq!(
            xdv_audit::inspect_region(&old).verdict.unwrap_err().what,
            want
        );
        assert!(matches!(
            AuditLog::open(&mut old, NODE),
            Err(xdv_audit::RegionError::OtherVersion { found }) if found == version
        ));
        assert_eq!(old, before, "a refused region is left untouched");
        let said = xdv_audit::RegionError::OtherVersion { found: version }.to_string();
        assert_eq!(
            said,
            format!(
                "audit region in format version {version}, this build writes version 2; \
                 refusing to overwrite"
            )
        );
        assert!(
            verify_region(&old)
                .unwrap_err()
                .to_string()
                .contains(&format!(
                    "audit format version {version}: this build reads version 2 only"
                ))
        );
        // One copy of this version in force: read as usual (the other copy is
        // damaged, not of another version).
        let mut mixed = old.clone();
        mixed[SUPERBLOCK_OFFSETS[1]..SUPERBLOCK_OFFSETS[1] + SUPERBLOCK_BYTES].copy_from_slice(
            &region[SUPERBLOCK_OFFSETS[1]..SUPERBLOCK_OFFSETS[1] + SUPERBLOCK_BYTES],
        );
        assert!(AuditLog::open(&mut mixed, NODE).is_ok());
    }
    // A damaged superblock of another version is just damage: no valid copy.
    let mut torn = with_superblock_version(&region, 1);
    for at in SUPERBLOCK_OFFSETS {
        torn[at + 40] ^= 1;
    }
    assert_eq!(verify_region(&torn).unwrap_err().what, Damage::NoSuperblock);
}

#[test]
fn foreign_node_is_refused_and_find_region_works() {
    let mut region = small_region(3);
    let before = region.clone();
    assert!(matches!(
        AuditLog::open(&mut region, NodeId(8)),
        Err(xdv_audit::RegionError::ForeignNode { found: NODE })
    ));
    assert_eq!(region, before, "a refused region is left untouched");
    {
        let mut other = region.clone();
        let (log, rep) = AuditLog::format(&mut other, NodeId(8)).unwrap();
        assert!(rep.formatted && log.is_empty() && log.boot_count() == 1);
    }
    let mut shorter = region[..region.len() - 4096].to_vec();
    assert!(matches!(
        AuditLog::open(&mut shorter, NODE),
        Err(xdv_audit::RegionError::SizeMismatch { .. })
    ));
    let mut ram = vec![0u8; 5 * 4096];
    ram.extend_from_slice(&region);
    ram.extend_from_slice(&[0u8; 4096]);
    assert_eq!(find_region(&ram), Some(5 * 4096));
    assert_eq!(find_region(&[0u8; 65536]), None);
}

#[test]
fn body_limits_are_enforced() {
    let mut region = vec![0u8; MIN_REGION_BYTES];
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    let long = RecordBody::ConsoleCommand {
        line: "x".repeat(257),
    };
    assert!(matches!(
        log.append(Timestamp(1), CoreId(0), &long),
        Err(AuditError::FieldTooLong(_))
    ));
    assert_eq!(log.len(), 0);
}

#[test]
fn full_region_stops_with_a_final_record() {
    let mut region = vec![0u8; MIN_REGION_BYTES];
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    let mut i = 0;
    let sealed = loop {
        match log.append(Timestamp(i), CoreId(0), &body(i)) {
            Ok(_) | Err(AuditError::AboveHighWater { .. }) => i += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(sealed, AuditError::Full { sealed_now: true });
    assert!(log.is_full());
    let n = log.len();
    assert_eq!(
        log.append(Timestamp(i), CoreId(0), &body(0)),
        Err(AuditError::Full { sealed_now: false })
    );
    assert_eq!(log.len(), n);
    assert!(
        matches!(log.tail(1)[0].body, RecordBody::RegionFull { records, .. } if records == n - 1)
    );
    let rep = verify_region(log.region()).unwrap();
    assert_eq!(rep.records, n);
    drop(log);
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(log.is_full());
    assert_eq!(
        log.append(Timestamp(0), CoreId(0), &body(1)),
        Err(AuditError::Full { sealed_now: false })
    );
}

#[test]
fn torn_append_keeps_every_earlier_record() {
    let size = 2 * MIN_REGION_BYTES;
    let mut rng = SplitMix64(11);
    for k in 0..RECORDS {
        let before = region_with(k, size);
        let after = region_with(k + 1, size);
        let ext = extents(&after);
        let (off, len) = ext[k as usize];
        // Every possible prefix length of the new record's bytes (record written
        // in order), plus random byte subsets; the superblock is not yet updated.
        for cut in (0..=len).step_by(7).chain([len]) {
            let mut torn = before.clone();
            torn[off..off + cut].copy_from_slice(&after[off..off + cut]);
            check_recovery(&mut torn, k, cut == len);
        }
        for _ in 0..4 {
            let mut torn = before.clone();
            for b in off..off + len {
                if rng.below(2) == 0 {
                    torn[b] = after[b];
                }
            }
            let complete = torn[off..off + len] == after[off..off + len];
            check_recovery(&mut torn, k, complete);
        }
    }
}

fn check_recovery(torn: &mut [u8], k: u64, complete: bool) {
    let expect = if complete { k + 1 } else { k };
    let (mut log, rep) = AuditLog::open(torn, NODE).unwrap();
    assert_eq!(rep.records, expect);
    assert_eq!(rep.lost_durable_records, 0);
    if rep.dropped_bytes > 0 {
        log.append(
            Timestamp(1),
            CoreId(0),
            &RecordBody::Recovered {
                dropped_bytes: rep.dropped_bytes,
            },
        )
        .unwrap();
    }
    log.append(
        Timestamp(2),
        CoreId(0),
        &RecordBody::Boot {
            count: rep.boot_count,
        },
    )
    .unwrap();
    let v = verify_region(log.region()).unwrap();
    assert_eq!(v.torn_tail_bytes, 0);
    let kept: Vec<_> = log.records().map(|r| r.unwrap().body).collect();
    for i in 0..expect {
        assert_eq!(kept[i as usize], body(i));
    }
}

#[test]
fn torn_superblock_write_is_survivable() {
    let mut rng = SplitMix64(5);
    for n in 1..RECORDS {
        let prev = small_region(n - 1);
        let cur = small_region(n);
        // The newest copy is the one that differs between the two states.
        let newest = SUPERBLOCK_OFFSETS
            .into_iter()
            .find(|&at| prev[at..at + SUPERBLOCK_BYTES] != cur[at..at + SUPERBLOCK_BYTES])
            .unwrap();
        let mut torn = cur.clone();
        for b in newest..newest + SUPERBLOCK_BYTES {
            if rng.below(2) == 0 {
                torn[b] = prev[b];
            }
        }
        torn[newest + rng.below(SUPERBLOCK_BYTES as u64) as usize] ^= 0x40;
        let v = verify_region(&torn).unwrap();
        assert_eq!(v.records, n);
        let (_, rep) = AuditLog::open(&mut torn, NODE).unwrap();
        assert_eq!(rep.records, n);
        assert!(!rep.formatted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_byte_flip_is_located(pos in 0usize..1_000_000, xor in 1u8..=255) {
        let region = small_region(RECORDS);
        let ext = extents(&region);
        let used = ext.last().map(|&(o, l)| o + l).unwrap();
        let byte = DATA_START + pos % (used - DATA_START);
        let mut bad = region.clone();
        bad[byte] ^= xor;
        let e = verify_region(&bad).unwrap_err();
        let (seq, off) = record_containing(&ext, byte);
        prop_assert_eq!((e.seq, e.offset as usize), (seq, off), "{}", e);
        // Reopened: only the damaged record is lost; the damage is recorded and
        // the region verifies again.
        let (log, rep) = AuditLog::open(&mut bad, NODE).unwrap();
        prop_assert_eq!(rep.records, RECORDS - 1);
        prop_assert_eq!(rep.lost_durable_records, 1);
        prop_assert_eq!(rep.damaged.len(), 1);
        prop_assert_eq!(rep.damaged[0].offset as usize, off);
        prop_assert!(rep.damaged[0].recorded_by.is_some());
        prop_assert!(log.verify_in_place().is_ok());
    }

    #[test]
    fn any_truncation_is_detected(cut in 0usize..(2 * MIN_REGION_BYTES)) {
        let region = small_region(RECORDS);
        let ext = extents(&region);
        let e = verify_region(&region[..cut]).unwrap_err();
        if cut >= DATA_START {
            match ext.iter().position(|&(o, l)| o + l > cut) {
                Some(i) => prop_assert_eq!((e.seq, e.offset as usize), (i as u64, ext[i].0)),
                None => prop_assert_eq!((e.seq, e.what), (RECORDS, Damage::Truncated)),
            }
        }
    }

    #[test]
    fn any_swap_or_deletion_is_located(i in 0usize..RECORDS as usize, j in 0usize..RECORDS as usize, delete in any::<bool>()) {
        let region = small_region(RECORDS);
        let ext = extents(&region);
        let used = ext.last().map(|&(o, l)| o + l).unwrap();
        let recs: Vec<&[u8]> = ext.iter().map(|&(o, l)| &region[o..o + l]).collect();
        let mut order: Vec<usize> = (0..recs.len()).collect();
        let first = if delete {
            order.remove(i);
            i
        } else {
            prop_assume!(i != j);
            order.swap(i, j);
            i.min(j)
        };
        let mut bad = region[..DATA_START].to_vec();
        for k in order {
            bad.extend_from_slice(recs[k]);
        }
        bad.resize(region.len(), 0);
        prop_assert!(bad.len() == region.len() && used <= region.len());
        let e = verify_region(&bad).unwrap_err();
        prop_assert_eq!((e.seq, e.offset as usize), (first as u64, ext[first].0), "{}", e);
    }
}

/// 20k random and mutated regions through `open` and `verify_region`: no panics,
/// and whatever `open` accepts then verifies.
#[test]
fn fuzz_smoke_never_panics() {
    let mut rng = SplitMix64(0xa0d1);
    let base = region_with(12, MIN_REGION_BYTES);
    let ext = extents(&base);
    for round in 0..20_000u32 {
        let mut r = if round % 4 == 0 {
            (0..MIN_REGION_BYTES)
                .map(|_| rng.next_u64() as u8)
                .collect()
        } else {
            base.clone()
        };
        if round % 4 == 1 {
            // Valid superblocks over garbage records: exercises the record walk.
            let from = DATA_START + rng.below((r.len() - DATA_START) as u64) as usize;
            let upto = (from + 1 + rng.below(600) as usize).min(r.len());
            for b in &mut r[from..upto] {
                *b = rng.next_u64() as u8;
            }
        }
        let flips = 1 + rng.below(6);
        for _ in 0..flips {
            let at = match rng.below(3) {
                0 => rng.below(SUPERBLOCK_BYTES as u64) as usize,
                1 => {
                    let (o, _) = ext[rng.below(ext.len() as u64) as usize];
                    o + rng.below(29) as usize
                }
                _ => rng.below(r.len() as u64) as usize,
            };
            r[at] = rng.next_u64() as u8;
        }
        let cut = if rng.below(8) == 0 {
            rng.below(r.len() as u64) as usize
        } else {
            r.len()
        };
        let _ = verify_region(&r[..cut]);
        let _ = find_region(&r[..cut]);
        if round % 16 == 3 {
            // The cargo-fuzz target's body (pads, opens for the recorded node).
            fuzz_check(&r[..cut]);
        }
        if let Ok((mut log, rep)) = AuditLog::open(&mut r, NODE) {
            let _ = log.append(Timestamp(1), CoreId(0), &RecordBody::Boot { count: 1 });
            // Damage `open` could not record (no room) keeps the region failing.
            if rep.damage_unrecorded == 0 {
                assert!(log.verify_in_place().is_ok(), "round {round}: {rep:?}");
            }
        }
    }
}

proptest! {
    /// The word-wise `nonzero_end` is the byte-wise definition: one past the last
    /// non-zero byte, for any length (not only multiples of its block) and any
    /// placement of the non-zero bytes.
    #[test]
    fn nonzero_end_is_one_past_the_last_nonzero_byte(
        len in 0usize..600,
        marks in proptest::collection::vec((0usize..600, 1u8..=255), 0..4),
    ) {
        let mut b = vec![0u8; len];
        for (at, v) in marks {
            if at < len {
                b[at] = v;
            }
        }
        let naive = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
        prop_assert_eq!(xdv_audit::nonzero_end(&b), naive);
    }
}

/// Opening a blank region formats it without a `Formatted` record (nothing was
/// discarded); a region with stray bytes only is formatted with one that counts them
/// exactly, and the stray bytes are cleared.
#[test]
fn open_formats_blank_and_counts_stray_bytes() {
    let mut blank = vec![0u8; MIN_REGION_BYTES];
    let (log, rep) = AuditLog::open(&mut blank, NODE).unwrap();
    assert!(rep.formatted);
    assert_eq!(rep.discarded_bytes, 0);
    assert_eq!(log.len(), 0);
    drop(log);
    let mut stray = vec![0u8; MIN_REGION_BYTES];
    for at in [DATA_START + 3, DATA_START + 4_000, MIN_REGION_BYTES - 1] {
        stray[at] = 0x5a;
    }
    let (log, rep) = AuditLog::open(&mut stray, NODE).unwrap();
    assert!(rep.formatted);
    assert_eq!(rep.discarded_bytes, 3);
    assert_eq!(log.len(), 1);
    drop(log);
    assert_eq!(stray[MIN_REGION_BYTES - 1], 0);
    assert_eq!(stray[DATA_START + 4_000], 0);
}

/// A log proves each root it publishes extends its earlier ones: while open from the
/// size it published last (kept), and after a reopen from any earlier size (a walk
/// over the region from the checkpoint the scan at open kept before it); the proofs
/// verify against the two roots, and a root of another history does not.
#[test]
fn the_log_proves_its_new_roots_extend_its_earlier_ones() {
    use xdv_audit::merkle::verify_consistency;
    let mut region = small_region(0);
    let mut roots: Vec<(u64, Hash32)> = Vec::new();
    {
        let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
        for i in 0..40u64 {
            log.append(Timestamp(i + 1), CoreId(0), &body(i)).unwrap();
            if i % 7 == 3 {
                let held = roots.last().copied();
                let (records, root, from, proof) = log.root_for_publication(held.map(|h| h.0));
                assert_eq!((records, root), (log.len(), log.merkle_root()));
                match held {
                    Some((m, old)) => {
                        assert_eq!(from, m);
                        verify_consistency(m, records, &old, &root, &proof).unwrap();
                    }
                    None => assert_eq!((from, proof.len()), (0, 0)),
                }
                roots.push((records, root));
            }
        }
    }
    // Reopened (a restart): the kept sizes are gone, the proof comes from the region.
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    log.append(Timestamp(99), CoreId(0), &body(99)).unwrap();
    let (n, root) = (log.len(), log.merkle_root());
    for &(m, old) in &roots {
        let (records, new_root, from, p) = log.root_for_publication(Some(m));
        assert_eq!((records, new_root, from), (n, root, m));
        verify_consistency(m, n, &old, &root, &p).unwrap();
        // Another history of the first `m` records is not extended by this root.
        let mut other = old;
        other.0[0] ^= 1;
        assert!(verify_consistency(m, n, &other, &root, &p).is_err());
    }
}

/// A node's publications: the first root has no proof; each later one extends the
/// last by at most `MAX_PUBLISH_STEP` records, with a proof that verifies, so a burst
/// of records is published over several roots; a proof from a size the log never
/// reached gives no proof (the cluster then refuses the root).
#[test]
fn publications_step_through_a_burst_with_proofs() {
    use xdv_audit::log::MAX_PUBLISH_STEP;
    use xdv_audit::merkle::verify_consistency;
    let mut region = region_with(0, 8 << 20);
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    for i in 0..10u64 {
        log.append(Timestamp(i + 1), CoreId(0), &body(i)).unwrap();
    }
    let (mut held, mut held_root, from, proof) = log.root_for_publication(None);
    assert_eq!((held, from, proof.len()), (log.len(), 0, 0));
    let burst = 2 * MAX_PUBLISH_STEP + 100;
    for i in 0..burst {
        log.append(Timestamp(100 + i), CoreId(0), &body(i)).unwrap();
    }
    let total = log.len();
    let mut steps = 0;
    while held < total {
        let (records, root, from, proof) = log.root_for_publication(Some(held));
        assert_eq!(from, held);
        assert_eq!(records, (held + MAX_PUBLISH_STEP).min(total));
        verify_consistency(held, records, &held_root, &root, &proof).unwrap();
        (held, held_root) = (records, root);
        steps += 1;
    }
    assert_eq!(steps, 3);
    assert_eq!(held_root, log.merkle_root());
    let (_, _, from, proof) = log.root_for_publication(Some(total + 5));
    assert_eq!((from, proof.len()), (total + 5, 0));
}

/// What `root_for_publication(Some(m))` gives over readable records `hashes` (RFC
/// 9162, from the whole list): at most `MAX_PUBLISH_STEP` records past `m`, and no
/// proof from a size the log does not have.
fn expected_publication(hashes: &[Hash32], m: u64) -> (u64, Hash32, u64, Vec<Hash32>) {
    use xdv_audit::log::MAX_PUBLISH_STEP;
    use xdv_audit::merkle::{consistency_proof, merkle_root};
    let n = hashes.len() as u64;
    if m == 0 || m > n {
        let root = merkle_root(hashes, n as usize).unwrap();
        return (n, root, m, Vec::new());
    }
    let records = (m + MAX_PUBLISH_STEP).min(n);
    let root = merkle_root(hashes, records as usize).unwrap();
    let proof = consistency_proof(hashes, m as usize, records as usize).unwrap();
    (records, root, m, proof)
}

/// The sizes a proof after a reopen is asked from: around every checkpoint, the
/// first and last records, beyond the end, and some in between.
fn sizes_to_prove(n: u64, interval: u64, seed: u64) -> Vec<u64> {
    let mut sizes = vec![0, 1, 2, n - 1, n, n + 1, n + 1000];
    for k in 0..=n / interval {
        for d in [-1i64, 0, 1] {
            sizes.push((k * interval).saturating_add_signed(d));
        }
    }
    let mut rng = SplitMix64(seed);
    sizes.extend((0..16).map(|_| rng.range(1..n + 1)));
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The first proof after a reopen (no published size kept) starts at the last
/// checkpoint the scan at open kept at or before the size the cluster holds: for
/// every size — on and off checkpoint boundaries, the first and last record, beyond
/// the end — it gives exactly the records, root, from and proof computed from the
/// whole list of record hashes, the proof verifies, and it read fewer records than
/// one checkpoint interval of a region holding ten.
#[test]
fn the_first_proof_after_a_reopen_reads_one_checkpoint_interval() {
    use xdv_audit::merkle::{merkle_root, verify_consistency};
    use xdv_audit::scan::CHECKPOINT_INTERVAL;
    let n = 10 * CHECKPOINT_INTERVAL + 123;
    let region = region_with(n, 8 << 20);
    let hashes: Vec<Hash32> = {
        let mut copy = region.clone();
        let (log, _) = AuditLog::open(&mut copy, NODE).unwrap();
        log.records().map(|r| r.unwrap().hash).collect()
    };
    assert_eq!(hashes.len() as u64, n);
    for m in sizes_to_prove(n, CHECKPOINT_INTERVAL, 0x5eed) {
        let mut copy = region.clone();
        let (mut log, rep) = AuditLog::open(&mut copy, NODE).unwrap();
        assert_eq!((rep.records, rep.recovery_records), (n, 0));
        let got = log.root_for_publication(Some(m));
        let want = expected_publication(&hashes, m);
        assert_eq!(got, want, "size {m}");
        let walked = log.proof_records_walked();
        assert!(walked < CHECKPOINT_INTERVAL, "size {m}: walked {walked}");
        let (records, root, from, proof) = got;
        if (1..=n).contains(&m) {
            let old = merkle_root(&hashes, m as usize).unwrap();
            verify_consistency(from, records, &old, &root, &proof).unwrap();
        }
    }
}
