//! The XDV audit log: hash-chained records in a reserved memory region, Merkle
//! proofs over them (RFC 6962 trees with format 2's leaf and node hashes, RFC 9162
//! proofs: see `merkle`) and the federated audit root.
//!
//! Invariants owned here:
//! - A record is fully written (and fenced) before a superblock points past it, so
//!   a crash at any point leaves a valid prefix of the chain.
//! - Every record's hash covers its header, payload and the previous record's hash;
//!   the chain starts at a genesis hash bound to the node id.
//! - When the region fills up a final `RegionFull` record always fits (room for it
//!   is reserved); after it, appends fail. History is never overwritten.
//! - Bulk records (what an unauthenticated sender can cause) stop at the
//!   high-water mark; the rest of the region is the node's own, and crossing the
//!   mark is recorded once (`AuditAlarm`).
//! - Opening a damaged region never destroys a readable record or a damaged byte;
//!   only a torn tail the superblock proves was never durable is cut. Damage is
//!   recorded in the chain (`Damaged`), and appends continue after it.
//! - Parsing a region never panics, whatever its bytes are.
//!
//! The byte layout is documented in `docs/audit.md` and in [`format`].
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod body;
pub mod format;
pub mod fuzz;
pub mod log;
pub mod merkle;
pub mod scan;

pub use body::RecordBody;
pub use format::{
    DEFAULT_REGION_PHYS, DEFAULT_REGION_SIZE, Damage, RecordHeader, RecordView, Records,
    VerifyError, check_record_using, find_region, genesis_hash, header_is_blank, nonzero_end,
};
pub use fuzz::fuzz_check;
pub use log::{
    AuditError, AuditLog, BULK_HIGH_WATER_PERCENT, FillLevel, FillState, OpenReport, RegionError,
};
pub use merkle::{FederatedAuditRoot, FederationError, MerkleAccumulator, ProofError};
pub use scan::{
    CleanChain, DamagedRange, Inspection, RegionScan, ScanPlan, Scanned, Scanner, Segment,
    VerifyReport, inspect_region, inspect_region_with, region_node, scan_region, scan_region_with,
    verify_region,
};
