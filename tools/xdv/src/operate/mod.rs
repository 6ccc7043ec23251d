//! Operating a cluster from the host: replay a node's log off-line, verify every
//! node's audit region against what it published, and draw a run
//! (`docs/operate.md`).
//!
//! Everything here reads a node's RAM file (QEMU memory-backend file: file offset =
//! physical address) and re-runs the pure crates the node ran: `xdv_node::durable`
//! opens the Raft region, `xdv_cluster::ClusterState` applies the entries,
//! `xdv_audit` reads and verifies the audit chain. Nothing is re-implemented, so a
//! replay that matches the node's own audit records is the node's run reproduced.

pub mod contracts;
pub mod fastread;
pub mod fixture;
pub mod image;
pub mod lanes;
pub mod replay;
pub mod schedlog;
pub mod timeline;
pub mod verify;

pub use image::{NodeImage, RegionPlace, load_node};
pub use replay::{Replay, ReplayError, Verdict, replay};
pub use verify::{NodeCheck, VerifyReport, verify_nodes};
