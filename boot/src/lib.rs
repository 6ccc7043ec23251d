//! XDV boot data: the PVH and Multiboot2 boot protocols parsed into one [`BootInfo`],
//! and the kernel command line parsed into typed [`KernelOptions`].
//!
//! The entry assembly (`entry.s`) and the linker script (`linker.ld`) live beside this
//! crate and are linked into the kernel image by `kernel/image`.
//!
//! Invariants:
//! - Parsing never panics and never reads outside what the boot structures declare:
//!   every read goes through [`PhysRead`], which reports out-of-range addresses.
//! - Parsing needs no heap: it runs before the allocator exists, so every list has a
//!   fixed capacity (named constants below) and overflow is reported, not dropped.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod cmdline;
pub mod federation;
pub mod info;
pub mod provision;

pub use cmdline::{CmdlineDiag, KernelOptions, LogLevel};
pub use info::{BootError, BootInfo, BootProtocol, MemKind, MemRegion, Module, PhysRead};
