//! Everything that touches the hardware: CPU setup (`arch`), memory, SMP bring-up,
//! ACPI, the timer, the serial port, the runtime symbols, PCI configuration access and
//! DMA/MMIO services for drivers, and the platform's own self-tests. This folder is
//! the only place in the image with `unsafe`; every module above it carries
//! `#![deny(unsafe_code)]`.

pub mod acpi;
pub mod arch;
pub mod ktest;
pub mod mem;
pub mod pci;
pub mod rt;
pub mod serial;
pub mod smp;
pub mod time;
