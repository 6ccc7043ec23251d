//! XDV device drivers. Hardware access is confined to the register layers
//! (`pci::Ecam`, `pci::PortIo`, `virtio::Mmio`); the logic above them (enumeration,
//! BAR sizing, capability walks, feature negotiation, ring bookkeeping) is generic
//! over traits and tested on the host with fake devices.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod pci;
pub mod virtio;
