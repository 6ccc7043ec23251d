//! `xdv-raft`: a sans-IO, deterministic Raft for the XDV kernel (`no_std` + `alloc`).
//!
//! # Calling contract
//!
//! ```text
//! let mut node = RaftNode::new(id, Config::default(), storage)?;   // storage holds the bootstrap voters
//! loop {
//!     node.tick();                       // every 10 ms of kernel time (one logical tick)
//!     node.step(msg);                    // for every message received
//!     node.propose(bytes)?;              // leader only: Err(NotLeader { leader_hint })
//!     node.read_index(ctx)?;             // linearizable read point, answered as a ReadState
//!     if node.has_ready() {
//!         let rd = node.ready();         // durable writes are already done (see below)
//!         restore(rd.snapshot);          // 1. state machine image, if any
//!         send(rd.messages);             // 2. messages (each names its `to`)
//!         apply(rd.committed);           // 3. committed entries in index order
//!         serve(rd.read_states);         // 4. once applied >= index
//!         node.advance();
//!         if node.snapshot_due() { node.create_snapshot(sm.serialize()); }
//!     }
//! }
//! ```
//!
//! Persistence: every write goes through [`Storage`], whose write methods return
//! only when durable; the node performs them before it queues any message that
//! depends on them, so by the time `ready()` hands out messages everything they
//! acknowledge is durable. `Ready::persisted` reports what was written.
//!
//! Elections are deterministic: no randomness. A node's election timeout is
//! `election_timeout_ticks + ((rank + term) mod n) * election_spacing_ticks`
//! ([`RaftNode::election_timeout_ticks`]), with pre-vote and a leader lease so a
//! partitioned node cannot disrupt a healthy leader. See `docs/consensus.md`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod config;
pub mod node;
pub mod storage;
pub mod types;

#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use config::{Config, ConfigError, TICK_MS};
pub use node::{Persisted, ProposeError, RaftNode, Ready, Role, Status};
pub use storage::{MemStorage, Storage, StorageError};
pub use types::*;

/// An application state machine driven by committed entries (used by the
/// simulator and host harnesses; the kernel's cluster state machine implements it).
pub trait StateMachine {
    /// Applies one committed command at `index`.
    fn apply(&mut self, index: LogIndex, data: &[u8]);
    /// Serializes the state for a snapshot.
    fn snapshot(&self) -> alloc::vec::Vec<u8>;
    /// Replaces the state from a snapshot image.
    fn restore(&mut self, data: &[u8]);
}

#[cfg(test)]
mod tests;
