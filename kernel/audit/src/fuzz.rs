//! The body of the region-parsing fuzz target, kept in the crate so the cargo-fuzz
//! target (`fuzz/fuzz_targets/audit_region.rs`) and the stable fuzz smoke test run
//! exactly the same checks.

use alloc::vec;
use xdv_types::{CoreId, NodeId, Timestamp};

use crate::body::RecordBody;
use crate::format::{MIN_REGION_BYTES, Superblock, find_region, verify_region};
use crate::log::AuditLog;

/// Largest region the check builds from fuzz input (bounds memory and time).
pub const FUZZ_MAX_REGION_BYTES: usize = 4 * MIN_REGION_BYTES;

/// Feeds `data` to every region parser: `verify_region` and `find_region` on the raw
/// bytes, then `AuditLog::open` on a copy (padded with zeroes to at least
/// [`MIN_REGION_BYTES`], cut at [`FUZZ_MAX_REGION_BYTES`]) for the node its superblock
/// names. Panics only if a parser panics or breaks an invariant: a region `open`
/// accepts must verify, in place and with `verify_region`, after one more append.
pub fn fuzz_check(data: &[u8]) {
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
