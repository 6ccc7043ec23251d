//! PCI configuration access (ECAM from the ACPI MCFG, or legacy port I/O) and the DMA
//! and MMIO services the drivers in `xdv_drivers` are given.

use super::{arch, mem::frames};
use xdv_drivers::pci::{ConfigSpace, Ecam, PortIo};
use xdv_drivers::virtio::Platform;

/// The kernel's DMA and MMIO services for drivers.
pub struct KernelPlatform;

impl Platform for KernelPlatform {
    fn dma_alloc(&self, bytes: usize) -> Option<(u64, *mut u8)> {
        let pages = bytes.div_ceil(frames::FRAME_BYTES as usize).max(1);
        let phys = frames::alloc_zeroed(pages)?;
        Some((phys, phys as *mut u8))
    }

    fn map_mmio(&self, phys: u64, len: u64) -> Option<usize> {
        arch::paging::map_mmio(phys, len).map(|a| a as usize)
    }
}

/// How configuration space is reached.
pub enum Cfg {
    Ecam(Ecam),
    Port(PortIo),
}

impl Cfg {
    /// ECAM for segment 0 when the MCFG gives one (mapped uncached), else port I/O.
    pub fn new(ecam: Option<(u64, u16, u8, u8)>) -> Cfg {
        match ecam {
            Some((base, 0, first, last)) => {
                let len = (u64::from(last - first) + 1) << 20;
                match arch::paging::map_mmio(base, len) {
                    // SAFETY: the MCFG window for buses first..=last, just mapped uncached.
                    Some(v) => Cfg::Ecam(unsafe { Ecam::new(v as usize, first, last) }),
                    None => Cfg::Port(PortIo),
                }
            }
            _ => Cfg::Port(PortIo),
        }
    }

    pub fn space(&self) -> &dyn ConfigSpace {
        match self {
            Cfg::Ecam(e) => e,
            Cfg::Port(p) => p,
        }
    }

    /// (first bus, last bus scanned, mode name).
    pub fn buses(&self) -> (u8, u8, &'static str) {
        match self {
            Cfg::Ecam(e) => (e.start_bus, e.end_bus.min(15), "ECAM"),
            Cfg::Port(_) => (0, 15, "port I/O"),
        }
    }
}
