//! Library half of the `xdv` host tool: everything the CLI does, reusable from the
//! QEMU integration tests (`tests/`) and the benchmarks (`tools/bench`).

pub mod accel;
pub mod bridge;
pub mod cluster;
pub mod console;
pub mod elf;
pub mod exit;
pub mod fakepeer;
pub mod harness;
pub mod mgmt;
pub mod operate;
pub mod prereq;
pub mod pxe;
pub mod qemu;
pub mod submission;
pub mod switch;
pub mod testbed;
