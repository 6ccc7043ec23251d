//! What every driver stands on: the kernel's DMA and MMIO services ([`Platform`]) and
//! bounds-checked volatile access to a mapped register window ([`Mmio`]). Device
//! modules (`virtio`, and the accelerators next) build on these; enumeration and
//! configuration space are in `pci`.

/// What the kernel provides to drivers.
pub trait Platform {
    /// Zeroed, physically contiguous, identity-mapped memory: `(phys, virt)`.
    fn dma_alloc(&self, bytes: usize) -> Option<(u64, *mut u8)>;
    /// Maps `[phys, phys+len)` uncached; returns the virtual address.
    fn map_mmio(&self, phys: u64, len: u64) -> Option<usize>;
}

/// Volatile access to a mapped register window.
#[derive(Clone, Copy)]
pub struct Mmio {
    base: usize,
    len: usize,
}

impl Mmio {
    /// # Safety
    /// `[base, base+len)` must be a mapped, uncached device register window that
    /// stays mapped for the driver's lifetime.
    pub unsafe fn new(base: usize, len: usize) -> Mmio {
        Mmio { base, len }
    }

    /// Bytes in the window.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: usize, size: usize) -> usize {
        assert!(
            off + size <= self.len,
            "register {off:#x}+{size} outside window of {:#x}",
            self.len
        );
        self.base + off
    }

    pub fn read8(&self, off: usize) -> u8 {
        // SAFETY: inside the window (checked) that `new`'s contract makes valid.
        unsafe { core::ptr::read_volatile(self.check(off, 1) as *const u8) }
    }
    pub fn read16(&self, off: usize) -> u16 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(self.check(off, 2) as *const u16) }
    }
    pub fn read32(&self, off: usize) -> u32 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(self.check(off, 4) as *const u32) }
    }
    pub fn write8(&self, off: usize, v: u8) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.check(off, 1) as *mut u8, v) }
    }
    pub fn write16(&self, off: usize, v: u16) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.check(off, 2) as *mut u16, v) }
    }
    pub fn write32(&self, off: usize, v: u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.check(off, 4) as *mut u32, v) }
    }
    pub fn write64(&self, off: usize, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }
}
