//! `xdv-cluster`: the replicated cluster state machine (`no_std` + `alloc`, sans-IO).
//!
//! Every node applies the same committed Raft entries to a [`ClusterState`] and so holds
//! the same membership, placements, contracts, shards and quotas, and computes the same
//! [`ClusterState::hash`]. The crate takes no time, randomness or iteration order from
//! the environment: logical time comes in each entry ([`GlobalTime`]), collections are
//! B-trees, and the placement policy is a pure plug-in ([`PlacementPolicy`]).
//!
//! See `docs/cluster.md` for the commands, the placement rule, the contract conflict
//! rule, the recovery policy and the canonical state encoding.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod command;
pub mod contract;
pub mod discovery;
#[cfg(any(test, feature = "std"))]
pub mod fuzz;
pub mod gate;
pub mod hashed;
pub mod jobs;
pub mod mgmt;
pub mod placement;
pub mod shard;
pub mod state;
pub mod types;

pub use command::{Command, DecodeError, MAX_ENTRY_BYTES, Proposal};
pub use contract::{
    Contract, ContractEnd, ContractRecord, ContractState, EndedContract, MAX_ENDED_CONTRACTS,
    SignedContract, public_key,
};
pub use placement::{
    Candidate, FirstFit, LeastLoaded, PlacementContext, PlacementKind, PlacementPolicy,
    RouteInputs, Routed,
};
pub use shard::{ShardAssignment, ShardMap, shard_of};
pub use state::{
    Applied, CLOCK_TICK_MS, ClusterState, Config, ConfigError, ContractChange, ContractEvent,
    Event, IgnoredReason, NodeRecord, Party, StateData, TaskRecord, TaskStatus, TenantRecord,
    VOTE_EVERY,
};
pub use types::*;

#[cfg(test)]
mod gate_tests;
#[cfg(test)]
mod routed_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timeout_tests;
