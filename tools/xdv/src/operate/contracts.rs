//! The contract records in a node's audit region (tag `xdv_node::AUDIT_TAG_CONTRACT`):
//! both the requesting and the target node write one per contract event, with the
//! contract's hash, so either side's region proves what happened to it.

use xdv_audit::RecordBody;
use xdv_node::ContractRecordBody;

/// Every readable contract record of an audit region, in region order, with the
/// record's sequence number.
pub fn contract_records(audit: &[u8]) -> Vec<(u64, ContractRecordBody)> {
    let mut out = Vec::new();
    xdv_audit::inspect_region_with(audit, &mut |r| {
        if let RecordBody::Custom { tag, bytes } = &r.body
            && *tag == xdv_node::AUDIT_TAG_CONTRACT
            && let Ok(b) = xdv_cluster::mgmt::decode::<ContractRecordBody>(bytes)
        {
            out.push((r.header.seq, b));
        }
    });
    out
}
