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
/// Run-queue ids of cluster tasks on a node: bit 62 set, the attempt in bits 40..62,
/// the cluster task id's low 40 bits below (the kernel's scheduler log and audit
/// records name a cluster task's run by this id).
const LOCAL_RUN_BASE: u64 = 1 << 62;

/// The run-queue id of attempt `attempt` of cluster task `task`.
pub fn local_run_id(task: xdv_types::TaskId, attempt: u32) -> xdv_types::TaskId {
    xdv_types::TaskId(
        LOCAL_RUN_BASE | (u64::from(attempt & 0x3f_ffff) << 40) | (task.0 & 0xff_ffff_ffff),
    )
}

/// The (cluster task, attempt) a run-queue id names, if it is a cluster task's
/// ([`local_run_id`]; the task id's low 40 bits).
pub fn cluster_run_of(local: xdv_types::TaskId) -> Option<(xdv_types::TaskId, u32)> {
    (local.0 >> 62 == 1).then_some((
        xdv_types::TaskId(local.0 & 0xff_ffff_ffff),
        ((local.0 >> 40) & 0x3f_ffff) as u32,
    ))
}

pub use node::{
    AUDIT_TAG_APPLIED, AUDIT_TAG_CONTRACT, AUDIT_TAG_HASH_ALARM, AUDIT_TAG_NODE, AUDIT_TAG_PEER,
    AUDIT_TAG_ROOT_ALARM, AUDIT_TAG_RTT, ClientConn, ContractRecordBody, EVENT_PROPOSED, Halt,
    MAX_SPECS_PER_ENTRY, Node, NodeCounters, Outbox, PeerRecordBody, RttRecordBody, RunTask,
    genesis, replay_coordinate, replay_coordinate_with,
};

#[cfg(test)]
mod run_id_tests {
    use super::*;
    use xdv_types::TaskId;

    #[test]
    fn run_ids_name_their_task_and_attempt() {
        for (t, a) in [(0, 0), (1, 1), (0xff_ffff_ffff, 0x3f_ffff), (123_456, 7)] {
            let id = local_run_id(TaskId(t), a);
            assert_eq!(cluster_run_of(id), Some((TaskId(t), a)));
        }
        assert_eq!(cluster_run_of(TaskId(42)), None);
        assert_eq!(cluster_run_of(TaskId(3 << 62)), None);
    }
}
