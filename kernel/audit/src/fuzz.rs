//! The body of the region-parsing fuzz target, kept in the crate so the cargo-fuzz
//! target (`fuzz/fuzz_targets/audit_region.rs`) and the stable fuzz smoke test run
//! exactly the same checks.
//!
//! Each input is used twice: as a region as it is (which rarely gets past the
//! superblock checksum), and as a recipe for a region written by [`AuditLog`] —
//! records of every kind chosen by the input — that the rest of the input then
//! damages (byte XORs at chosen offsets, a cut), so the parsers see valid chains with
//! a few wrong bytes anywhere, torn tails and torn superblocks.

use alloc::string::String;
use alloc::vec;
use xdv_types::{CapabilityId, CoreId, Hash32, NodeId, TaskId, Timestamp};

use crate::body::RecordBody;
use crate::format::{MIN_REGION_BYTES, Superblock, find_region, verify_region};
use crate::log::AuditLog;

/// Largest region the check builds from fuzz input (bounds memory and time).
pub const FUZZ_MAX_REGION_BYTES: usize = 4 * MIN_REGION_BYTES;

/// Feeds `data` to every region parser, twice: as it is, and as the recipe for a
/// written and then damaged region (see the module documentation). Each time:
/// `verify_region` and `find_region` on the bytes, then `AuditLog::open` on a copy
/// (padded with zeroes to at least [`MIN_REGION_BYTES`], cut at
/// [`FUZZ_MAX_REGION_BYTES`]) for the node its superblock names. Panics only if a
/// parser panics or breaks an invariant: a region `AuditLog` wrote verifies with
/// exactly the records it appended, and a region `open` accepts must verify, in
/// place and with `verify_region`, after one more append.
pub fn fuzz_check(data: &[u8]) {
    check_bytes(data);
    check_written(data);
}

/// Records a written region holds at most (the region is [`MIN_REGION_BYTES`]).
pub const FUZZ_MAX_RECORDS: u8 = 48;

/// A body of kind `sel % 14`, its fields from `i` and `sel`.
fn body_for(i: u64, sel: u8) -> RecordBody {
    let t = TaskId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (sel % 64));
    let h = Hash32([sel; 32]);
    let text = |n: u8| String::from("x").repeat(usize::from(n));
    match sel % 14 {
        0 => RecordBody::Boot { count: i },
        1 => RecordBody::Recovered {
            dropped_bytes: u64::from(sel) << 20,
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
            term: u64::from(sel),
            entry_hash: h,
        },
        10 => RecordBody::MerkleRootPublished { size: i, root: h },
        11 => RecordBody::RequestRefused { reason: text(sel) },
        12 => RecordBody::Custom {
            tag: u16::from(sel),
            bytes: vec![sel; usize::from(sel) * 4],
        },
        // RegionFull is written by the log itself when the region fills.
        _ => RecordBody::Boot {
            count: u64::MAX - i,
        },
    }
}

/// Writes a region from the first bytes of `data` (record count, node, bodies),
/// checks that it verifies with exactly the records written, damages it as the rest
/// of `data` says and feeds the result to [`check_bytes`]. Returns the number of
/// records written.
fn check_written(data: &[u8]) -> u64 {
    let Some((&first, rest)) = data.split_first() else {
        return 0;
    };
    let records = first % FUZZ_MAX_RECORDS;
    let node = NodeId(u32::from(first >> 6));
    let (sels, damage) = rest.split_at(usize::from(records).min(rest.len()));
    let mut region = vec![0u8; MIN_REGION_BYTES];
    let written = {
        let (mut log, report) = match AuditLog::open(&mut region, node) {
            Ok(opened) => opened,
            Err(e) => panic!("a blank region of the minimum size is refused: {e}"),
        };
        assert!(report.formatted, "a blank region is formatted");
        for i in 0..u64::from(records) {
            let sel = sels.get(i as usize).copied().unwrap_or(i as u8);
            match log.append(Timestamp(i), CoreId(u16::from(sel)), &body_for(i, sel)) {
                Ok(seq) => assert_eq!(seq, i, "sequence numbers are dense"),
                Err(crate::AuditError::Full { .. }) => break,
                Err(e) => panic!("append of a valid body failed: {e}"),
            }
        }
        log.len()
    };
    match verify_region(&region) {
        Ok(report) => assert_eq!(report.records, written, "records written vs verified"),
        Err(e) => panic!("a region written by AuditLog fails to verify: {e}"),
    }
    // Damage: (offset u16 LE, xor) triples; a trailing single byte cuts the region.
    let mut cut = region.len();
    for m in damage.chunks(3) {
        match m {
            [lo, hi, x] => {
                let at = usize::from(u16::from_le_bytes([*lo, *hi])) % region.len();
                region[at] ^= *x;
            }
            [c] => cut = region.len() - usize::from(*c) * 16,
            _ => {}
        }
    }
    check_bytes(&region[..cut]);
    written
}

/// Feeds `data` as it is to every region parser (see [`fuzz_check`]).
fn check_bytes(data: &[u8]) {
    let _ = verify_region(data);
    let _ = find_region(data);
    let len = data.len().clamp(MIN_REGION_BYTES, FUZZ_MAX_REGION_BYTES);
    let mut region = vec![0u8; len];
    let n = data.len().min(len);
    region[..n].copy_from_slice(&data[..n]);
    let node = Superblock::current(&Superblock::read_both(&region))
        .map(|(_, sb)| sb.node)
        .unwrap_or(NodeId(0));
    if let Ok((mut log, _report)) = AuditLog::open(&mut region, node) {
        let _ = log.append(Timestamp(1), CoreId(0), &RecordBody::Boot { count: 1 });
        let in_place = log.verify_in_place();
        assert!(
            in_place.is_ok(),
            "opened region fails verify_in_place: {in_place:?}"
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
        assert_eq!(check_written(&[10, 0, 1, 2, 3, 4, 5, 8, 9, 10, 11]), 10);
        // 47 records of 1 KiB Custom bodies cannot fit in 8 KiB: the log seals.
        let big: alloc::vec::Vec<u8> = [47u8].into_iter().chain([12 + 14 * 17; 47]).collect();
        let n = check_written(&big);
        assert!(n > 0 && n < 47, "{n} records");
        // Damage and a cut are applied without panicking.
        check_written(&[20, 3, 3, 3, 0x10, 0x10, 0xff, 0x20, 0x00, 0x01, 9]);
        assert_eq!(check_written(&[]), 0);
    }
}
