//! XDV's one testing kit (TigerBeetle `src/testing/` style): the pieces every
//! simulator and randomized test shares, so there is one of each.
//!
//! - [`SplitMix64`] — the one PRNG (it lives in `xdv-types` so `no_std` production
//!   code such as built-in task inputs can use it too; re-exported here).
//! - [`PacketSim`] — the one simulated network: loss, duplication, delay and
//!   reordering, partitions (symmetric and one-way), clogging and bounded links,
//!   all driven by explicit time and a seed.
//!
//! Invariants: nothing here reads a clock, iterates a hash map or allocates in an
//! order that depends on anything but its inputs; the same seed and the same calls
//! give the same results on every machine.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod packet;

pub use packet::{
    Delivery, FaultsError, MAX_DELAY_MS, MAX_IN_FLIGHT_LIMIT, NetFaults, NetStats, Node, PacketSim,
    SendOutcome,
};
pub use xdv_types::rng::{PPM, SplitMix64};
