//! The host L2 switch that connects QEMU nodes (`cargo xdv switch`).
//!
//! Each node's QEMU attaches with a unix datagram netdev
//! (`-netdev dgram,...`, see [`qemu_netdev_arg`]); port N is node N. The switch
//! learns MAC addresses per port, forwards known unicast to its port, floods unknown
//! and broadcast frames, and injects faults (drop, duplicate, delay, reorder,
//! partitions) decided by a seeded generator so a run repeats exactly.
//!
//! [`core`] is the pure state machine (unit-tested without sockets); [`shell`] binds
//! the sockets and runs the threads; [`bench`] measures the forwarding limit.
//! Socket layout and control commands: `docs/wire.md`.

pub mod bench;
pub mod core;
pub mod shell;
#[cfg(test)]
mod tests;

pub use bench::{BENCH_FRAME_BYTES, bench_forwarding};
pub use core::{Command, Delivery, Faults, Port, PortStats, SplitMix64, SwitchCore, SwitchError};
pub use shell::{
    SwitchConfig, SwitchHandle, control, control_socket_path, node_socket_path, port_socket_path,
    qemu_netdev_arg, qemu_stream_netdev_arg, run, spawn, stream_socket_path, wait_ready,
};
