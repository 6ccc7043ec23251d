//! QEMU's inter-VM shared memory device (`ivshmem-doorbell`, 1af4:1110) as the
//! transport of an XDV accelerator (`docs/accel.md`): BAR0 holds ivshmem's own
//! registers (interrupt mask and status, this VM's peer id, the doorbell), BAR1 the
//! MSI-X table, BAR2 the shared memory whose first page is the accelerator's register
//! block, followed by its rings and data area.
//!
//! This module is the register layer: it maps the BARs, programs MSI-X and gives the
//! shared memory as an [`xdv_accel::regs::DeviceMemory`] through the `volatile`
//! crate. Everything the device writes there is validated by `xdv_accel::driver`.

use crate::pci::{self, ConfigSpace, PciDevice};
use crate::platform::Platform;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};
use volatile::VolatilePtr;
use xdv_accel::regs::DeviceMemory;

pub const VENDOR: u16 = 0x1af4;
pub const DEVICE: u16 = 0x1110;

/// ivshmem BAR0 registers.
const REG_INTR_MASK: usize = 0x00;
const REG_IV_POSITION: usize = 0x08;
const REG_DOORBELL: usize = 0x0C;

/// Why an ivshmem function cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IvshmemError {
    MissingBar(u8),
    MapFailed(u64),
    NoMsix,
    TooFewVectors(u16),
    BadMsixTable,
}

impl From<pci::MsixError> for IvshmemError {
    fn from(e: pci::MsixError) -> Self {
        match e {
            pci::MsixError::NoMsix => IvshmemError::NoMsix,
            pci::MsixError::TooFewVectors(n) => IvshmemError::TooFewVectors(n),
            pci::MsixError::MissingBar(b) => IvshmemError::MissingBar(b),
            pci::MsixError::BadTable => IvshmemError::BadMsixTable,
            pci::MsixError::MapFailed(a) => IvshmemError::MapFailed(a),
        }
    }
}

impl fmt::Display for IvshmemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvshmemError::MissingBar(b) => write!(f, "BAR{b} missing"),
            IvshmemError::MapFailed(a) => write!(f, "cannot map {a:#x}"),
            IvshmemError::NoMsix => write!(
                f,
                "no MSI-X capability (start QEMU with ivshmem-doorbell, not ivshmem-plain)"
            ),
            IvshmemError::TooFewVectors(n) => write!(f, "{n} MSI-X vectors, need 2"),
            IvshmemError::BadMsixTable => write!(f, "MSI-X table outside its BAR"),
        }
    }
}

/// The shared memory window, accessed with volatile reads and writes.
pub struct Shm {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: `Shm` is a handle to device memory; the kernel uses it from its main loop
// only (one CPU at a time), and every access is volatile.
unsafe impl Send for Shm {}

impl Shm {
    /// # Safety
    /// `[base, base+len)` must be mapped device memory that stays mapped for the
    /// kernel's lifetime and is referenced by nothing else in Rust.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Shm {
        Shm { base, len }
    }

    fn at<T>(&self, off: usize) -> VolatilePtr<'_, T> {
        assert!(
            off.checked_add(core::mem::size_of::<T>())
                .is_some_and(|e| e <= self.len),
            "shared memory access {off:#x} outside the {:#x}-byte window",
            self.len
        );
        // SAFETY: inside the window (checked); `new`'s contract makes it valid memory.
        unsafe { VolatilePtr::new(self.base.add(off).cast::<T>()) }
    }
}

impl DeviceMemory for Shm {
    fn window_bytes(&self) -> usize {
        self.len
    }
    fn read32(&self, off: usize) -> u32 {
        self.at::<u32>(off).read()
    }
    fn write32(&self, off: usize, value: u32) {
        self.at::<u32>(off).write(value)
    }
    fn read_bytes(&self, off: usize, out: &mut [u8]) {
        let mut i = 0;
        while i + 4 <= out.len() && (off + i).is_multiple_of(4) {
            out[i..i + 4].copy_from_slice(&self.read32(off + i).to_le_bytes());
            i += 4;
        }
        for (k, b) in out[i..].iter_mut().enumerate() {
            *b = self.at::<u8>(off + i + k).read();
        }
    }
    fn write_bytes(&self, off: usize, data: &[u8]) {
        let mut i = 0;
        while i + 4 <= data.len() && (off + i).is_multiple_of(4) {
            let w = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            self.write32(off + i, w);
            i += 4;
        }
        for (k, b) in data[i..].iter().enumerate() {
            self.at::<u8>(off + i + k).write(*b);
        }
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// One ivshmem-doorbell function, mapped, with MSI-X programmed.
pub struct Ivshmem {
    /// BAR0: ivshmem's own registers (volatile, like the shared memory).
    regs: Shm,
    pub shm: Shm,
    /// This VM's peer id (IVPosition).
    pub own_peer: u32,
}

impl Ivshmem {
    /// Maps BAR0 and BAR2 and points MSI-X entries `0..vectors.len()` at
    /// `vectors[i]` on the local APIC `apic_id`.
    pub fn new(
        cfg: &dyn ConfigSpace,
        dev: &PciDevice,
        platform: &dyn Platform,
        apic_id: u32,
        vectors: &[u8],
    ) -> Result<Ivshmem, IvshmemError> {
        let map = |i: u8| -> Result<(usize, u64), IvshmemError> {
            let b = dev.bar(i).ok_or(IvshmemError::MissingBar(i))?;
            let size = b.size.ok_or(IvshmemError::MissingBar(i))?;
            let v = platform
                .map_mmio(b.addr, size)
                .ok_or(IvshmemError::MapFailed(b.addr))?;
            Ok((v, size))
        };
        let (r0, r0_len) = map(0)?;
        let (shm, shm_len) = map(2)?;
        let r0 = NonNull::new(r0 as *mut u8).ok_or(IvshmemError::MapFailed(0))?;
        // SAFETY: BAR0 was just mapped uncached for the kernel's lifetime; this handle is
        // the only Rust reference to it.
        let regs = unsafe { Shm::new(r0, (r0_len as usize).min(256)) };
        let base = NonNull::new(shm as *mut u8).ok_or(IvshmemError::MapFailed(0))?;
        // SAFETY: BAR2 was just mapped for the kernel's lifetime; this handle is the
        // only Rust reference to it.
        let shm = unsafe { Shm::new(base, shm_len as usize) };
        pci::program_msix(cfg, dev, platform, apic_id, vectors)?;
        regs.write32(REG_INTR_MASK, 0);
        let own_peer = regs.read32(REG_IV_POSITION);
        Ok(Ivshmem {
            regs,
            shm,
            own_peer,
        })
    }

    /// Rings `vector` of peer `peer` (the device's doorbell eventfd).
    pub fn ring(&self, peer: u32, vector: u16) {
        self.regs
            .write32(REG_DOORBELL, ((peer & 0xffff) << 16) | u32::from(vector));
    }
}
