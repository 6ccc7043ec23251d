//! Opening a damaged region (issue 13, item 7): no readable record and no damaged
//! byte is destroyed; only a torn tail the superblock proves was never durable is
//! cut; damage is recorded in the chain and appends continue after it; unreadable
//! superblocks are rebuilt by scanning. And the region's space policy (item 3):
//! bulk records stop at the high-water mark, the alarm is recorded once, a full
//! region is sealed and says so.

mod common;

use common::*;
use xdv_audit::format::{
    DATA_START, MIN_REGION_BYTES, SUPERBLOCK_OFFSETS, Superblock, nonzero_end,
};
use xdv_audit::log::high_water_mark;
use xdv_audit::{
    AuditError, AuditLog, Damage, FillLevel, RecordBody, RecordView, RegionError, fuzz_check,
    genesis_hash, inspect_region, verify_region,
};
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

/// Every readable record of an open log.
fn readable(log: &AuditLog<'_>) -> Vec<RecordView> {
    log.records().map(Result::unwrap).collect()
}

/// (offset, hash) of every record of a clean region.
fn chain(region: &[u8]) -> Vec<(u64, Hash32)> {
    let mut copy = region.to_vec();
    let (log, _) = AuditLog::open(&mut copy, NODE).unwrap();
    readable(&log).iter().map(|v| (v.offset, v.hash)).collect()
}

/// Flips one byte in each superblock copy.
fn break_both_superblocks(region: &mut [u8]) {
    region[SUPERBLOCK_OFFSETS[0] + 40] ^= 0x01;
    region[SUPERBLOCK_OFFSETS[1] + 17] ^= 0x80;
    assert!(Superblock::read_both(region).iter().all(Option::is_none));
}

/// A region whose chain carries `Boot` records with counts 1..=boots, between
/// other records (so boot counts can be recovered without a superblock).
fn region_with_boots(boots: u64) -> Vec<u8> {
    let mut region = vec![0u8; 2 * MIN_REGION_BYTES];
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    for b in 1..=boots {
        log.append(Timestamp(b * 10), CoreId(0), &RecordBody::Boot { count: b })
            .unwrap();
        for i in 0..4 {
            log.append(Timestamp(b * 10 + i), CoreId(1), &body(2 + i))
                .unwrap();
        }
    }
    region
}

#[test]
fn flipped_byte_in_the_middle_keeps_every_later_record() {
    const N: u64 = 40;
    let mut region = region_with(N, 4 * MIN_REGION_BYTES);
    let before = chain(&region);
    let old_end = nonzero_end(&region) as u64;
    let (off20, len20) = {
        let ext = extents(&region);
        ext[20]
    };
    region[off20 + 40] ^= 0x04;
    let (mut log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(!rep.formatted && !rep.superblocks_rebuilt);
    assert_eq!(rep.boot_count, 2);
    assert_eq!(rep.records, N - 1, "only the damaged record is lost");
    assert_eq!(rep.lost_durable_records, 1);
    assert_eq!(rep.segments, 2);
    assert_eq!(rep.dropped_bytes, 0, "nothing is cut");
    assert_eq!(rep.damaged.len(), 1);
    let d = &rep.damaged[0];
    assert_eq!((d.offset, d.bytes), (off20 as u64, len20 as u64));
    assert_eq!(d.what, Damage::HashMismatch);
    assert_eq!(d.last_good, Some((19, before[19].1)));
    assert_eq!(d.resumed_seq, Some(21));
    assert_eq!(d.recorded_by, Some(N), "recorded by the first new record");
    assert_eq!(rep.first_error.unwrap().offset, off20 as u64);
    // Every other record is still there, where it was, with its hash.
    let after = readable(&log);
    let kept: Vec<(u64, Hash32)> = after
        .iter()
        .take(N as usize - 1)
        .map(|v| (v.offset, v.hash))
        .collect();
    let mut expected = before.clone();
    expected.remove(20);
    assert_eq!(kept, expected);
    // The new segment's first record says where the damage is; it goes after the
    // last old record and continues its chain.
    let rec = &after[N as usize - 1];
    assert_eq!(rec.offset, old_end);
    assert_eq!(rec.header.seq, N);
    assert_eq!(rec.prev_hash, before[N as usize - 1].1);
    assert_eq!(
        rec.body,
        RecordBody::Damaged {
            offset: off20 as u64,
            bytes: len20 as u64,
            last_good_seq: Some(19),
            last_good_hash: before[19].1,
            resumed_seq: Some(21),
        }
    );
    log.append(Timestamp(99), CoreId(0), &RecordBody::Boot { count: 2 })
        .unwrap();
    let v = verify_region(log.region()).unwrap();
    assert_eq!(v.records, N + 1);
    assert_eq!(v.segments.len(), 2);
    assert!(v.segments[0].linked && !v.segments[1].linked);
    assert_eq!((v.segments[0].first_seq, v.segments[0].last_seq), (0, 19));
    assert_eq!(
        (v.segments[1].first_seq, v.segments[1].last_seq),
        (21, N + 1)
    );
    assert_eq!(v.damaged.len(), 1);
    assert_eq!(v.damaged[0].recorded_by, Some(N));
    assert_eq!(log.merkle_root(), v.merkle_root);
    drop(log);
    // A second boot finds nothing new.
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(rep.damaged.is_empty() && rep.recovery_records == 0);
    assert_eq!((rep.boot_count, log.len()), (3, N + 1));
}

#[test]
fn both_superblocks_damaged_recover_by_scanning() {
    let mut region = region_with_boots(3);
    let before = chain(&region);
    let end = nonzero_end(&region) as u64;
    break_both_superblocks(&mut region);
    // The verifier still reads every record, and says why it fails.
    let insp = inspect_region(&region);
    let scan = insp.scan.as_ref().unwrap();
    assert_eq!(
        (scan.records, scan.segments_total, scan.damaged_total),
        (15, 1, 0)
    );
    assert_eq!(insp.verdict.unwrap_err().what, Damage::NoSuperblock);
    let (mut log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(!rep.formatted, "a region with records is never formatted");
    assert!(rep.superblocks_rebuilt && rep.superblock_copies_valid == 0);
    assert_eq!(rep.records, 15);
    assert_eq!(rep.boot_count, 4, "boot count from the last Boot record");
    assert!(rep.damaged.is_empty());
    let after = readable(&log);
    let kept: Vec<(u64, Hash32)> = after.iter().take(15).map(|v| (v.offset, v.hash)).collect();
    assert_eq!(kept, before);
    assert_eq!(
        after[15].body,
        RecordBody::SuperblocksRebuilt {
            records: 15,
            end_offset: end,
        }
    );
    log.append(Timestamp(1), CoreId(0), &RecordBody::Boot { count: 4 })
        .unwrap();
    let v = verify_region(log.region()).unwrap();
    assert_eq!(
        (v.records, v.boot_count, v.superblock_copies_valid),
        (17, 4, 2)
    );
}

#[test]
fn both_superblocks_and_records_damaged() {
    let mut region = region_with_boots(4);
    let before = chain(&region);
    let ext = extents(&region);
    break_both_superblocks(&mut region);
    // One record in the middle and the last record.
    region[ext[7].0 + 3] ^= 0x20;
    let last = ext.len() - 1;
    region[ext[last].0 + ext[last].1 - 1] ^= 0x01;
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(!rep.formatted && rep.superblocks_rebuilt);
    assert_eq!(rep.records, before.len() as u64 - 2);
    assert_eq!(rep.damaged.len(), 2);
    assert_eq!(rep.damaged[0].offset, ext[7].0 as u64);
    // Without a superblock nothing proves the damaged last record torn: kept, and
    // appends go after it.
    let tail = &rep.damaged[1];
    assert_eq!(
        (tail.offset, tail.bytes),
        (ext[last].0 as u64, ext[last].1 as u64)
    );
    assert_eq!(tail.resumed_seq, None);
    assert_eq!(rep.dropped_bytes, 0);
    let after = readable(&log);
    for (i, &(o, h)) in before.iter().enumerate() {
        if i != 7 && i != last {
            assert!(
                after.iter().any(|v| v.offset == o && v.hash == h),
                "record {i}"
            );
        }
    }
    assert!(log.bytes_used() > (ext[last].0 + ext[last].1) as u64);
    assert_eq!(rep.damage_unrecorded, 0);
    log.verify_in_place().unwrap();
}

#[test]
fn region_without_a_recognisable_record_is_formatted_and_says_so() {
    let mut rng = SplitMix64(3);
    let mut region: Vec<u8> = (0..MIN_REGION_BYTES)
        .map(|_| rng.next_u64() as u8)
        .collect();
    let nonzero = region.iter().filter(|&&b| b != 0).count() as u64;
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert!(rep.formatted);
    assert_eq!(rep.discarded_bytes, nonzero);
    assert_eq!(
        readable(&log)[0].body,
        RecordBody::Formatted {
            discarded_bytes: nonzero
        }
    );
    // A blank region is simply formatted: the first boot.
    let mut blank = vec![0u8; MIN_REGION_BYTES];
    let (log, rep) = AuditLog::open(&mut blank, NODE).unwrap();
    assert!(rep.formatted && rep.discarded_bytes == 0 && log.is_empty());
}

#[test]
fn foreign_records_without_a_superblock_are_refused() {
    let mut region = region_with(5, MIN_REGION_BYTES);
    break_both_superblocks(&mut region);
    let before = region.clone();
    assert!(matches!(
        AuditLog::open(&mut region, NodeId(8)),
        Err(RegionError::ForeignNode { found: NODE })
    ));
    assert_eq!(region, before, "left untouched");
}

#[test]
fn torn_tail_is_cut_only_with_the_superblocks_proof() {
    let clean = region_with(10, 2 * MIN_REGION_BYTES);
    let end = nonzero_end(&clean);
    let torn = |region: &mut Vec<u8>| region[end + 5..end + 45].fill(0x5a);
    // Both copies valid and confirmed: beyond the committed end, never durable.
    let mut region = clean.clone();
    torn(&mut region);
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!((rep.dropped_at, rep.dropped_bytes), (end as u64, 45));
    assert!(rep.damaged.is_empty());
    assert_eq!(
        readable(&log)[10].body,
        RecordBody::Recovered { dropped_bytes: 45 }
    );
    assert_eq!(
        readable(&log)[10].offset,
        end as u64,
        "appends reuse the torn space"
    );
    // The older copy unreadable: it might have been the newer one, covering a
    // record the tail could be. Kept as damage; appends go after it.
    let mut region = clean.clone();
    torn(&mut region);
    let copies = Superblock::read_both(&region);
    let older = if copies[0].as_ref().unwrap().generation < copies[1].as_ref().unwrap().generation {
        0
    } else {
        1
    };
    region[SUPERBLOCK_OFFSETS[older] + 50] ^= 0x10;
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!(rep.dropped_bytes, 0);
    assert_eq!(rep.damaged.len(), 1);
    assert_eq!(
        (rep.damaged[0].offset, rep.damaged[0].bytes),
        (end as u64, 45)
    );
    assert_eq!(log.region()[end + 5..end + 45], [0x5a; 40], "kept");
    assert_eq!(readable(&log)[10].offset, end as u64 + 45);
    log.verify_in_place().unwrap();
    // The last durable record damaged as well: the superblock's head is not
    // confirmed, so nothing is proven torn.
    let mut region = clean.clone();
    torn(&mut region);
    region[end - 1] ^= 0x01;
    let (_, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!(rep.dropped_bytes, 0);
    assert_eq!(rep.damaged.len(), 1);
    assert_eq!(rep.damaged[0].resumed_seq, None);
    assert_eq!(
        rep.damaged[0].offset + rep.damaged[0].bytes,
        end as u64 + 45
    );
}

#[test]
fn stray_bytes_in_free_space_are_beyond_the_committed_end() {
    let clean = region_with(6, 2 * MIN_REGION_BYTES);
    let end = nonzero_end(&clean);
    let mut region = clean.clone();
    region[end + 3000] = 0x77;
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!((rep.dropped_at, rep.dropped_bytes), (end as u64, 3001));
    assert!(rep.damaged.is_empty());
    assert_eq!(log.len(), 7, "six records and Recovered");
}

#[test]
fn wiped_records_are_recorded_and_their_numbers_never_reused() {
    let clean = region_with(20, 2 * MIN_REGION_BYTES);
    let ext = extents(&clean);
    let before = chain(&clean);
    // Records 5..=8 wiped: one range, the rest kept.
    let mut region = clean.clone();
    region[ext[5].0..ext[9].0].fill(0);
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!(rep.damaged.len(), 1);
    let d = &rep.damaged[0];
    assert_eq!(
        (d.offset, d.bytes),
        (ext[5].0 as u64, (ext[9].0 - ext[5].0) as u64)
    );
    assert_eq!((d.what, d.resumed_seq), (Damage::StrayBytes, Some(9)));
    assert_eq!(rep.lost_durable_records, 4);
    assert_eq!(log.len(), 17);
    log.verify_in_place().unwrap();
    // The last three records lost (zeroed): the superblock says they were
    // durable, so their space and sequence numbers stay used.
    let mut region = clean.clone();
    let committed = nonzero_end(&clean);
    region[ext[17].0..].fill(0);
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!(rep.damaged.len(), 1);
    let d = &rep.damaged[0];
    assert_eq!(
        (d.offset, d.bytes),
        (ext[17].0 as u64, (committed - ext[17].0) as u64)
    );
    assert_eq!(d.what, Damage::MissingRecords { expected: 20 });
    assert_eq!(d.last_good, Some((16, before[16].1)));
    assert_eq!(rep.lost_durable_records, 3);
    let rec = readable(&log).pop().unwrap();
    assert_eq!((rec.offset, rec.header.seq), (committed as u64, 20));
    assert_eq!(
        rec.prev_hash, before[16].1,
        "the new segment links to the last good record"
    );
    let v = log.verify_in_place().unwrap();
    assert!(v.segments[1].linked);
}

#[test]
fn damage_before_the_first_record_keeps_the_rest() {
    let mut region = region_with(8, MIN_REGION_BYTES);
    let before = chain(&region);
    region[DATA_START] ^= 0xff;
    let (log, rep) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!(rep.damaged[0].last_good, None);
    assert_eq!(rep.damaged[0].resumed_seq, Some(1));
    match &readable(&log)[7].body {
        RecordBody::Damaged {
            last_good_seq: None,
            last_good_hash,
            ..
        } => assert_eq!(*last_good_hash, genesis_hash(NODE)),
        b => panic!("{b:?}"),
    }
    assert_eq!(readable(&log)[0].hash, before[1].1);
}

#[test]
fn bulk_records_stop_at_the_high_water_mark_with_one_alarm() {
    let mut region = vec![0u8; 16 * MIN_REGION_BYTES];
    let mark = high_water_mark(region.len()) as u64;
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    let refusal = RecordBody::RequestRefused {
        reason: "mgmt unknown: bad frame".into(),
    };
    let mut n = 0;
    let err = loop {
        match log.append(Timestamp(n), CoreId(0), &refusal) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, AuditError::AboveHighWater { refused: 1 });
    let fill = log.fill_state();
    assert_eq!(fill.level, FillLevel::AboveHighWater);
    assert!(fill.alarm_recorded && fill.high_water_bytes == mark);
    let alarm = readable(&log).pop().unwrap();
    assert!(matches!(alarm.body, RecordBody::AuditAlarm { used_bytes, .. } if used_bytes <= mark));
    assert!(alarm.offset <= mark, "bulk records stayed below the mark");
    for k in 2..=5 {
        assert_eq!(
            log.append(Timestamp(0), CoreId(0), &refusal),
            Err(AuditError::AboveHighWater { refused: k })
        );
    }
    // The node's own records use the rest; a summary carries the count.
    let seq = log
        .append_refusal_summary(Timestamp(1), CoreId(0), 40_000, "mgmt unknown: bad frame")
        .unwrap();
    let summary = readable(&log).pop().unwrap();
    assert_eq!(summary.header.seq, seq);
    assert_eq!(
        summary.body,
        RecordBody::RefusalSummary {
            refused: 40_000,
            first_reason: "mgmt unknown: bad frame".into(),
            unrecorded: 5,
        }
    );
    let sealed = loop {
        match log.append(Timestamp(2), CoreId(0), &body(3)) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(sealed, AuditError::Full { sealed_now: true });
    assert_eq!(log.fill_state().level, FillLevel::Full);
    let alarms = readable(&log)
        .iter()
        .filter(|v| matches!(v.body, RecordBody::AuditAlarm { .. }))
        .count();
    assert_eq!(alarms, 1, "the alarm is written once");
    assert!(matches!(
        readable(&log).pop().unwrap().body,
        RecordBody::RegionFull { .. }
    ));
    drop(log);
    let (log, _) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!(log.fill_state().level, FillLevel::Full);
    verify_region(log.region()).unwrap();
}

#[test]
fn own_record_crossing_the_mark_is_preceded_by_the_alarm() {
    let mut region = vec![0u8; 16 * MIN_REGION_BYTES];
    let mark = high_water_mark(region.len()) as u64;
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    let mut i = 0;
    while log.fill_state().level == FillLevel::Normal {
        log.append(Timestamp(i), CoreId(0), &body(3)).unwrap();
        i += 1;
    }
    let recs = readable(&log);
    let (crossing, alarm) = (&recs[recs.len() - 1], &recs[recs.len() - 2]);
    assert!(crossing.offset + crossing.header.record_bytes() as u64 > mark);
    assert!(
        matches!(alarm.body, RecordBody::AuditAlarm { high_water_bytes, .. } if high_water_bytes == mark)
    );
    assert!(alarm.offset <= mark);
    drop(log);
    // After a reboot the alarm stands and is not written again.
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    assert_eq!(log.fill_state().level, FillLevel::AboveHighWater);
    let n = log.len();
    log.append(Timestamp(0), CoreId(0), &body(3)).unwrap();
    assert_eq!(log.len(), n + 1);
    assert!(matches!(
        log.append(
            Timestamp(0),
            CoreId(0),
            &RecordBody::RequestRefused { reason: "x".into() }
        ),
        Err(AuditError::AboveHighWater { refused: 1 })
    ));
    assert_eq!(log.len(), n + 1);
}

/// The recovery fuzz body (`fuzz_check`) on 3000 random recipes: a written region,
/// then flips, damaged superblocks, lost tails, wiped spans and cuts, reopened
/// with its invariants (see `xdv_audit::fuzz`).
#[test]
fn recovery_fuzz_smoke() {
    let mut rng = SplitMix64(0x7ec0);
    for _ in 0..3000 {
        let records = rng.below(48) as u8;
        let node_bits = (rng.below(4) as u8) << 6;
        let mut input = vec![records | node_bits];
        input.extend((0..records).map(|_| rng.next_u64() as u8));
        for _ in 0..rng.below(6) {
            let op = rng.below(5) as u8;
            // Aim half the flips at record bytes (offsets 4096..8192).
            let at = if rng.below(2) == 0 {
                4096 + rng.below(4096)
            } else {
                rng.below(65536)
            } as u16;
            let [lo, hi] = at.to_le_bytes();
            input.extend([op, lo, hi, 1 + rng.below(255) as u8]);
        }
        if rng.below(8) == 0 {
            input.push(rng.below(200) as u8);
        }
        fuzz_check(&input);
    }
}

/// A damaged record between checkpoints (recorded at open by a `Damaged` record) does
/// not cost the checkpoints after it: the first proof after a reopen from a size past
/// the damage still reads less than one checkpoint interval, and gives the root and
/// proof computed from the readable records' hashes.
#[test]
fn proofs_after_a_reopen_past_damage_start_at_a_checkpoint() {
    use xdv_audit::log::MAX_PUBLISH_STEP;
    use xdv_audit::merkle::{consistency_proof, merkle_root, verify_consistency};
    use xdv_audit::scan::CHECKPOINT_INTERVAL;
    let n = 6 * CHECKPOINT_INTERVAL;
    let mut damaged = region_with(n, 8 << 20);
    let (off, _) = extents(&damaged)[(2 * CHECKPOINT_INTERVAL + 77) as usize];
    damaged[off + 40] ^= 0x10;
    // First open: finds and records the damage; then the reopen under test.
    let (log, rep) = AuditLog::open(&mut damaged, NODE).unwrap();
    assert_eq!((rep.records, rep.damaged.len()), (n - 1, 1));
    let hashes: Vec<Hash32> = readable(&log).iter().map(|v| v.hash).collect();
    drop(log);
    let total = hashes.len() as u64;
    for m in [
        3 * CHECKPOINT_INTERVAL - 1,
        3 * CHECKPOINT_INTERVAL,
        4 * CHECKPOINT_INTERVAL + 1000,
        total - 1,
    ] {
        let mut copy = damaged.clone();
        let (mut log, rep) = AuditLog::open(&mut copy, NODE).unwrap();
        assert!(rep.damaged.is_empty(), "recorded by the first open");
        let (records, root, from, proof) = log.root_for_publication(Some(m));
        let want = (m + MAX_PUBLISH_STEP).min(total);
        assert_eq!((records, from), (want, m));
        assert_eq!(root, merkle_root(&hashes, want as usize).unwrap());
        assert_eq!(
            proof,
            consistency_proof(&hashes, m as usize, want as usize).unwrap()
        );
        let old = merkle_root(&hashes, m as usize).unwrap();
        verify_consistency(m, records, &old, &root, &proof).unwrap();
        assert!(log.proof_records_walked() < CHECKPOINT_INTERVAL, "size {m}");
    }
}

/// A region of `size` bytes whose log published a root over its first `m` records
/// and then appended `k` more: (region, root over `m`).
fn published_then_appended(m: u64, k: u64, size: usize) -> (Vec<u8>, Hash32) {
    let mut region = vec![0u8; size];
    let (mut log, _) = AuditLog::open(&mut region, NODE).unwrap();
    for i in 0..m {
        log.append(Timestamp(i + 1), CoreId(0), &body(i)).unwrap();
    }
    let (records, root, from, proof) = log.root_for_publication(None);
    assert_eq!((records, from, proof.len()), (m, 0, 0));
    for i in m..m + k {
        log.append(Timestamp(i + 1), CoreId(0), &body(i)).unwrap();
    }
    drop(log);
    (region, root)
}

/// Reopens `region` (whose log published `root_m` over its first `m` records, and
/// which was damaged after them), appends a few records, and publishes from `m` until
/// the end: every root is the RFC 9162 root over exactly the readable records'
/// hashes up to its size (at most `MAX_PUBLISH_STEP` past the last), every proof is
/// the RFC 9162 proof between them and verifies from the held root, the last root is
/// `merkle_root()` and the host verifier's. Returns (readable records, roots, the
/// open found damage or a torn tail).
fn publish_past_damage(
    name: &str,
    mut region: Vec<u8>,
    m: u64,
    root_m: Hash32,
) -> (u64, u64, bool) {
    use xdv_audit::log::MAX_PUBLISH_STEP;
    use xdv_audit::merkle::{consistency_proof, merkle_root, verify_consistency};
    let (mut log, open) = AuditLog::open(&mut region, NODE).unwrap();
    let found = !open.damaged.is_empty() || open.dropped_bytes > 0;
    for i in 0..3 {
        log.append(Timestamp(90_000 + i), CoreId(1), &body(i))
            .unwrap();
    }
    let hashes: Vec<Hash32> = readable(&log).iter().map(|v| v.hash).collect();
    let n = hashes.len() as u64;
    assert_eq!(log.len(), n, "{name}");
    assert_eq!(merkle_root(&hashes, m as usize).unwrap(), root_m, "{name}");
    let (mut held, mut held_root, mut roots) = (m, root_m, 0);
    while held < n {
        let (records, root, from, proof) = log.root_for_publication(Some(held));
        let want = (held + MAX_PUBLISH_STEP).min(n);
        assert_eq!((records, from), (want, held), "{name}: from {held}");
        assert_eq!(
            root,
            merkle_root(&hashes, want as usize).unwrap(),
            "{name}: root over {want} from {held}"
        );
        assert_eq!(
            proof,
            consistency_proof(&hashes, held as usize, want as usize).unwrap(),
            "{name}: proof {held} -> {want}"
        );
        verify_consistency(held, records, &held_root, &root, &proof).unwrap();
        (held, held_root) = (records, root);
        roots += 1;
    }
    assert_eq!(held_root, log.merkle_root(), "{name}");
    let rep = log.verify_in_place().unwrap();
    assert_eq!((rep.records, rep.merkle_root), (n, held_root), "{name}");
    (n, roots, found)
}

/// The records a root published after a reopen adds past the size the cluster holds
/// are exactly the readable records, whatever damage lies after that size: a flipped
/// byte a few records after it, damage at the very first record after it, wiped
/// records, the last records lost, a torn tail (cut) and a tail kept as damage (one
/// superblock copy unreadable), and damage past the first publication step (the
/// next publication continues from the size the log kept).
#[test]
fn roots_published_past_damage_cover_exactly_the_readable_records() {
    use xdv_audit::log::MAX_PUBLISH_STEP;
    const M: u64 = 300;
    const K: u64 = 200;
    let (clean, root_m) = published_then_appended(M, K, 1 << 20);
    let ext = extents(&clean);
    let end = nonzero_end(&clean);
    let at = |i: u64| ext[i as usize].0;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("clean", clean.clone()));
    let mut r = clean.clone();
    r[at(M + 5) + 40] ^= 0x04;
    cases.push(("flipped byte after the held size", r));
    let mut r = clean.clone();
    r[at(M) + 40] ^= 0x04;
    cases.push(("the first record after the held size", r));
    let mut r = clean.clone();
    r[at(M)] ^= 0xff;
    cases.push(("the version byte of the first record after it", r));
    let mut r = clean.clone();
    r[at(M + 20)..at(M + 60)].fill(0);
    cases.push(("wiped records", r));
    let mut r = clean.clone();
    r[at(M + 50) + 10..at(M + 52) + 10].fill(0x5a);
    cases.push(("garbage across records", r));
    let mut r = clean.clone();
    r[at(M + K - 10)..end].fill(0);
    cases.push(("last records lost", r));
    let mut r = clean.clone();
    r[end + 5..end + 45].fill(0x5a);
    cases.push(("torn tail", r));
    let mut r = clean.clone();
    r[end + 5..end + 45].fill(0x5a);
    let copies = Superblock::read_both(&r);
    let older = usize::from(
        copies[0].as_ref().unwrap().generation > copies[1].as_ref().unwrap().generation,
    );
    r[SUPERBLOCK_OFFSETS[older] + 50] ^= 0x10;
    cases.push(("tail kept as damage", r));
    for (name, region) in cases {
        let (_, _, found) = publish_past_damage(name, region, M, root_m);
        assert_eq!(found, name != "clean", "{name}");
    }
    // More than one step past the held size: damage in the first and second steps.
    let k = 2 * MAX_PUBLISH_STEP + 100;
    let (clean, root_m) = published_then_appended(M, k, 8 << 20);
    let ext = extents(&clean);
    let mut r = clean.clone();
    r[ext[(M + 7) as usize].0 + 40] ^= 0x01;
    let second = ext[(M + MAX_PUBLISH_STEP + 9) as usize].0;
    r[second..second + 500].fill(0);
    let (n, roots, found) = publish_past_damage("damage in two steps", r, M, root_m);
    assert!(n > M + 2 * MAX_PUBLISH_STEP && roots == 3 && found);
}
