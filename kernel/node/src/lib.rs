//! One XDV node as a pure state machine (`docs/architecture.md`).
//!
//! [`Node`] owns the Raft node over its durable region ([`durable`]), the replicated
//! cluster state, the management gate, the Lamport clock, parked client requests,
//! unconfirmed completions, the failure detector and the node's timers. It has no
//! globals, no clocks, no I/O and no `unsafe`: inputs are method calls with explicit
//! time, outputs one drained [`Outbox`]. The kernel's main loop drives it over smoltcp
//! and the reserved memory region; the simulator ([`sim`], feature `sim`) drives the
//! same type over a packet simulator and byte vectors that can be torn.
#![cfg_attr(not(any(test, feature = "sim")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod accel;
pub mod config;
pub mod durable;
#[cfg(feature = "sim")]
pub mod fedsim;
pub mod fuzz;
pub mod metrics;
pub mod node;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::{GENESIS_CORES, Identity, NodeConfig, RAFT_APPEND_BYTES, Timing};
pub use durable::{DurableStats, DurableStorage, OpenError, Opened, Region, TearRegion};
pub use metrics::{LocalMetrics, NicMetrics, check_exposition};
pub use node::{
    AUDIT_TAG_APPLIED, AUDIT_TAG_CONTRACT, AUDIT_TAG_HASH_ALARM, AUDIT_TAG_NODE, AUDIT_TAG_PEER,
    AUDIT_TAG_RTT, ClientConn, ContractRecordBody, EVENT_PROPOSED, Halt, MAX_SPECS_PER_ENTRY, Node,
    NodeCounters, Outbox, PeerRecordBody, RttRecordBody, RunTask, genesis, replay_coordinate,
    replay_coordinate_with,
};
