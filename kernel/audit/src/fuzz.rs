//! The body of the region fuzz target, kept in the crate so the cargo-fuzz target
//! (`fuzz/fuzz_targets/audit_region.rs`) and the stable smoke tests run exactly the
//! same checks.
//!
//! Each input is used twice: as a region as it is (which rarely gets past the
//! superblock checksum), and as a recipe for a region written by [`AuditLog`] —
//! records of every kind chosen by the input — that the rest of the input then
//! damages (flipped bytes, a flipped byte in one or both superblock copies, a lost
//! tail, a wiped span, a cut) before the region is reopened as the node would at
//! boot. The recovery invariants checked on every reopen:
//!
//! - nothing panics;
//! - every record the writer wrote whose bytes the damage left untouched is still
//!   readable, at the same offset with the same hash — in particular every record
//!   before the first damaged byte;
//! - no non-zero byte of the damaged region is changed by `open`, except a torn
//!   tail `open` reported cutting (and the superblocks);
//! - unless `open` reported damage it could not record, the region then verifies,
//!   an append after recovery verifies, and a second open finds nothing new;
//! - every walk of the opened log reads exactly the records the scan at open and
//!   the host verifier read: `records()` yields the host scan's records, in order,
//!   as many as `len()`, and a root published from the first record over all of
//!   them is `merkle_root()` and the host's root (after open and after an append).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use xdv_types::{CapabilityId, CoreId, Hash32, NodeId, TaskId, Timestamp};

use crate::body::RecordBody;
use crate::format::{DATA_START, MIN_REGION_BYTES, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSETS};
use crate::format::{find_region, nonzero_end};
use crate::log::{AuditError, AuditLog, MAX_PUBLISH_STEP, OpenReport};
use crate::scan::{inspect_region_with, region_node, verify_region};

/// Largest region the check builds from fuzz input (bounds memory and time).
pub const FUZZ_MAX_REGION_BYTES: usize = 4 * MIN_REGION_BYTES;

/// Feeds `data` to every region parser, twice: as it is, and as the recipe for a
/// written and then damaged region (see the module documentation). Panics only if
/// a parser panics or a recovery invariant breaks.
pub fn fuzz_check(data: &[u8]) {
    check_bytes(data);
    check_written(data);
}

/// Records a written region holds at most (the region is [`MIN_REGION_BYTES`]).
pub const FUZZ_MAX_RECORDS: u8 = 48;

/// A body of kind `sel % 19`, its fields from `i` and `sel`.
fn body_for(i: u64, sel: u8) -> RecordBody {
    let t = TaskId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (sel % 64));
    let h = Hash32([sel; 32]);
    let text = |n: u8| String::from("x").repeat(usize::from(n));
    let n = u64::from(sel);
    match sel % 19 {
        0 => RecordBody::Boot { count: i },
        1 => RecordBody::Recovered {
            dropped_bytes: n << 20,
        },
        2 => RecordBody::TaskEnqueued {
            task: t,
            core: CoreId(u16::from(sel)),
        },
        3 => RecordBody::TaskExecuted {
            task: t,
            ticks: i << 7,
            output_hash: h,
        },
        4 => RecordBody::BudgetExceeded { task: t, ticks: i },
        5 => RecordBody::GuardDenied {
            task: t,
            capability: CapabilityId(u32::from(sel) << 9),
        },
        6 => RecordBody::Trapped {
            task: t,
            ticks: 3,
            reason: text(sel % 128),
        },
        7 => RecordBody::ConsoleCommand { line: text(sel) },
        8 => RecordBody::ReplayHead {
            len: i,
            head_hash: h,
        },
        9 => RecordBody::RaftApplied {
            index: i,
            term: n,
            entry_hash: h,
        },
        10 => RecordBody::MerkleRootPublished { size: i, root: h },
        // Bulk: refused past the high-water mark.
        11 => RecordBody::RequestRefused { reason: text(sel) },
        12 => RecordBody::Custom {
            tag: u16::from(sel),
            bytes: vec![sel; usize::from(sel) * 4],
        },
        // A Damaged record naming a range past anything written, so it never
        // covers real damage by accident.
        13 => RecordBody::Damaged {
            offset: u64::MAX - n,
            bytes: 1,
            last_good_seq: i.checked_sub(1),
            last_good_hash: h,
            resumed_seq: (sel & 1 == 1).then_some(i + 1),
        },
        14 => RecordBody::SuperblocksRebuilt {
            records: i,
            end_offset: n,
        },
        15 => RecordBody::Formatted { discarded_bytes: n },
        16 => RecordBody::AuditAlarm {
            used_bytes: i,
            high_water_bytes: n,
            region_bytes: n << 8,
        },
        17 => RecordBody::RefusalSummary {
            refused: i,
            first_reason: text(sel),
            unrecorded: n,
        },
        // RegionFull is written by the log itself when the region fills.
        _ => RecordBody::Boot {
            count: u64::MAX - i,
        },
    }
}

/// (offset, length, hash) of each record a writer wrote.
type Written = Vec<(u64, usize, Hash32)>;

/// Writes a region from the first bytes of `data` (record count, node, bodies),
/// checks that it verifies with exactly the records written, damages it as the rest
/// of `data` says, and reopens it (see the module documentation). Returns the
/// number of records written.
fn check_written(data: &[u8]) -> u64 {
    let Some((&first, rest)) = data.split_first() else {
        return 0;
    };
    let records = first % FUZZ_MAX_RECORDS;
    let node = NodeId(u32::from(first >> 6));
    let (sels, damage) = rest.split_at(usize::from(records).min(rest.len()));
    let mut region = vec![0u8; MIN_REGION_BYTES];
    let written = write_region(&mut region, node, records, sels);
    match verify_region(&region) {
        Ok(report) => assert_eq!(report.records, written.len() as u64, "records verified"),
        Err(e) => panic!("a region written by AuditLog fails to verify: {e}"),
    }
    let clean = region.clone();
    let cut = apply_damage(&mut region, damage);
    check_bytes(&region[..cut]);
    reopen_damaged(&clean, &mut region, node, &written);
    written.len() as u64
}

/// Appends `records` bodies chosen by `sels`; returns what was written.
fn write_region(region: &mut [u8], node: NodeId, records: u8, sels: &[u8]) -> Written {
    let (mut log, report) = match AuditLog::open(region, node) {
        Ok(opened) => opened,
        Err(e) => panic!("a blank region of the minimum size is refused: {e}"),
    };
    assert!(
        report.formatted && report.discarded_bytes == 0,
        "a blank region is formatted, nothing discarded"
    );
    for i in 0..u64::from(records) {
        let sel = sels.get(i as usize).copied().unwrap_or(i as u8);
        let before = log.len();
        match log.append(Timestamp(i), CoreId(u16::from(sel)), &body_for(i, sel)) {
            Ok(seq) => assert_eq!(seq + 1, log.next_seq(), "sequence numbers are dense"),
            Err(AuditError::AboveHighWater { .. }) => {
                assert!(body_for(i, sel).is_bulk(), "only bulk records are refused");
                assert!(
                    log.len() <= before + 1,
                    "a refusal writes at most the alarm"
                );
            }
            Err(AuditError::Full { .. }) => break,
            Err(e) => panic!("append of a valid body failed: {e}"),
        }
    }
    log.records()
        .map(|r| match r {
            Ok(v) => (v.offset, v.header.record_bytes(), v.hash),
            Err(e) => panic!("a record just written does not read back: {e}"),
        })
        .collect()
}

/// Damages `region` as `damage` says, in 4-byte steps `[op, lo, hi, x]` (`at` =
/// `lo | hi << 8`): flip a byte; flip a byte in superblock copy A; flip one in each
/// copy; lose the tail from `at` (zeroes); wipe a span at `at`. A trailing 1–3 bytes
/// cut the region (a truncated file). Returns the cut length.
fn apply_damage(region: &mut [u8], damage: &[u8]) -> usize {
    let len = region.len();
    let mut cut = len;
    for m in damage.chunks(4) {
        let [op, lo, hi, x] = *m else {
            cut = len - usize::from(m[0]) * 16;
            continue;
        };
        let at = usize::from(u16::from_le_bytes([lo, hi])) % len;
        let sb = usize::from(lo) % SUPERBLOCK_BYTES;
        match op % 5 {
            0 => region[at] ^= x,
            1 => region[SUPERBLOCK_OFFSETS[0] + sb] ^= x | 1,
            2 => {
                region[SUPERBLOCK_OFFSETS[0] + sb] ^= x | 1;
                region[SUPERBLOCK_OFFSETS[1] + usize::from(hi) % SUPERBLOCK_BYTES] ^= x | 1;
            }
            3 => region[at.max(DATA_START)..].fill(0),
            _ => {
                let end = (at + usize::from(x) * 8).min(len);
                region[at..end].fill(0);
            }
        }
    }
    cut
}

/// Opens the damaged `region` as the node `node` would at boot and checks the
/// recovery invariants against the `clean` region and what was `written`.
fn reopen_damaged(clean: &[u8], region: &mut [u8], node: NodeId, written: &Written) {
    let damaged = region.to_vec();
    let (mut log, report) = match AuditLog::open(region, node) {
        Ok(opened) => opened,
        Err(e) => panic!("the node's own damaged region is refused: {e}"),
    };
    // Untouched records are readable, where they were.
    let readable: Vec<(u64, Hash32)> = log
        .records()
        .filter_map(Result::ok)
        .map(|v| (v.offset, v.hash))
        .collect();
    for &(off, n, hash) in written {
        let o = off as usize;
        if clean[o..o + n] == damaged[o..o + n] {
            assert!(
                readable.contains(&(off, hash)),
                "untouched record at {off:#x} lost; {report:?}"
            );
        }
    }
    assert_kept(&damaged, log.region(), &report);
    assert_walks_agree(&mut log, &report);
    if report.damage_unrecorded > 0 {
        return;
    }
    if let Err(e) = log.verify_in_place() {
        panic!("recovered region does not verify: {e}; {report:?}");
    }
    let appended = log.append(
        Timestamp(u64::MAX),
        CoreId(0),
        &RecordBody::Boot { count: 0 },
    );
    if appended.is_ok() && verify_region(log.region()).is_err() {
        panic!("an append after recovery does not verify; {report:?}");
    }
    assert_walks_agree(&mut log, &report);
    let records = log.len();
    drop(log);
    let (again, second) = match AuditLog::open(region, node) {
        Ok(opened) => opened,
        Err(e) => panic!("a recovered region is refused: {e}"),
    };
    assert!(
        second.damaged.is_empty()
            && second.dropped_bytes == 0
            && !second.formatted
            && !second.superblocks_rebuilt
            && again.len() == records,
        "a second open finds something new: {second:?} after {report:?}"
    );
}

/// The log's walks read exactly the records the host verifier's scan of the whole
/// region reads (and the scan at open: `len()`): `records()` yields them in order,
/// and a root published from the first record over all of them (when one step
/// reaches the end) is `merkle_root()` and the host's.
fn assert_walks_agree(log: &mut AuditLog<'_>, report: &OpenReport) {
    let mut host = Vec::new();
    let insp = inspect_region_with(log.region(), &mut |v| host.push((v.offset, v.hash)));
    let walked: Vec<(u64, Hash32)> = log
        .records()
        .map(|r| r.map(|v| (v.offset, v.hash)))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("a walk of the log fails: {e}; {report:?}"));
    assert!(
        walked == host && walked.len() as u64 == log.len(),
        "the log's walk reads {} records, the host {}, open {}; {report:?}",
        walked.len(),
        host.len(),
        log.len()
    );
    let applied = log
        .records()
        .filter_map(|r| match r.ok()?.body {
            RecordBody::RaftApplied { index, .. } => Some(index),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert_eq!(log.max_raft_applied(), applied, "{report:?}");
    let root = log.merkle_root();
    if let Some(scan) = insp.scan.as_ref() {
        assert_eq!(scan.merkle_root(), root, "host root; {report:?}");
    }
    let n = log.len();
    if (1..=MAX_PUBLISH_STEP + 1).contains(&n) {
        let (records, published, _, _) = log.root_for_publication(Some(1));
        assert_eq!(
            (records, published),
            (n, root),
            "published root; {report:?}"
        );
    }
}

/// `open` changed no non-zero byte of the record area except the torn tail it
/// reported cutting (unless it formatted a region with no recognisable record).
fn assert_kept(before: &[u8], after: &[u8], report: &OpenReport) {
    if report.formatted {
        return;
    }
    let torn = report.dropped_at..report.dropped_at + report.dropped_bytes;
    let limit = nonzero_end(before).min(after.len());
    for i in DATA_START..limit {
        if before[i] != 0 && before[i] != after[i] && !torn.contains(&(i as u64)) {
            panic!("open changed a kept byte at {i:#x}; {report:?}");
        }
    }
}

/// Feeds `data` as it is to every region parser (see [`fuzz_check`]): verify and
/// find never panic; `open` (on a copy padded to at least [`MIN_REGION_BYTES`])
/// changes no kept byte and, unless it reports damage it could not record, leaves
/// a region that verifies after one more append.
fn check_bytes(data: &[u8]) {
    let _ = verify_region(data);
    let _ = find_region(data);
    let _ = crate::scan::inspect_region(data);
    let len = data.len().clamp(MIN_REGION_BYTES, FUZZ_MAX_REGION_BYTES);
    let mut region = vec![0u8; len];
    let n = data.len().min(len);
    region[..n].copy_from_slice(&data[..n]);
    let before = region.clone();
    let node = region_node(&region).unwrap_or(NodeId(0));
    if let Ok((mut log, report)) = AuditLog::open(&mut region, node) {
        assert_kept(&before, log.region(), &report);
        assert_walks_agree(&mut log, &report);
        let _ = log.append(Timestamp(1), CoreId(0), &RecordBody::Boot { count: 1 });
        assert_walks_agree(&mut log, &report);
        if report.damage_unrecorded > 0 {
            return;
        }
        let in_place = log.verify_in_place();
        assert!(
            in_place.is_ok(),
            "opened region fails verify_in_place: {in_place:?}; {report:?}"
        );
        let records = log.len();
        drop(log);
        match verify_region(&region) {
            Ok(report) => assert_eq!(report.records, records, "verify_region record count"),
            Err(e) => panic!("opened region fails verify_region: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_regions_hold_the_records_asked_for_and_fill_up() {
        // 10 small records, no damage.
        assert_eq!(check_written(&[10, 0, 1, 2, 3, 4, 5, 8, 9, 10, 12]), 10);
        // 47 records of 1 KiB Custom bodies cannot fit in 8 KiB: the log seals.
        let big: Vec<u8> = [47u8].into_iter().chain([12 + 19 * 12; 47]).collect();
        let n = check_written(&big);
        assert!(n > 0 && n < 47, "{n} records");
        // Flips, both superblocks, a lost tail, a wiped span and a cut.
        check_written(&[
            20, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, //
            0, 0x10, 0x10, 0xff, 2, 7, 9, 0x20, 4, 0x00, 0x11, 9, 3, 0x00, 0x1e, 0, 9,
        ]);
        assert_eq!(check_written(&[]), 0);
    }
}
