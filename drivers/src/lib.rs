//! XDV device drivers: `platform` (DMA/MMIO services and the register window), `pci`
//! (enumeration, configuration space), then one module per device (`virtio`, `e1000e`, `ivshmem`).
//! Hardware access is confined to the register layers (`pci::Ecam`, `pci::PortIo`,
//! `platform::Mmio`); the logic above them (enumeration,
//! BAR sizing, capability walks, feature negotiation, ring bookkeeping) is generic
//! over traits and tested on the host with fake devices.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod e1000e;
pub mod ivshmem;
pub mod pci;
pub mod platform;
pub mod virtio;
