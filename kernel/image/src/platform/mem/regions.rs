//! Reserved persistent regions (audit log, Raft state): physical ranges named on the
//! command line, taken out of the frame allocator at boot, and handed out once as
//! `&'static mut [u8]`. Under QEMU guest RAM is a shared file, so what is written here
//! survives a warm reboot and a killed VM and can be read by the host.

use core::sync::atomic::{AtomicBool, Ordering};
use xdv_boot::{BootInfo, MemKind};

/// Why a region cannot be used.
#[derive(Debug)]
pub enum RegionError {
    NotInUsableRam {
        base: u64,
        len: u64,
    },
    Overlap {
        what: &'static str,
        other: &'static str,
    },
    AlreadyTaken(&'static str),
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegionError::NotInUsableRam { base, len } => {
                write!(
                    f,
                    "{base:#x}+{len:#x} does not lie inside one usable RAM range of the memory map"
                )
            }
            RegionError::Overlap { what, other } => {
                write!(f, "the {what} region overlaps the {other} region")
            }
            RegionError::AlreadyTaken(w) => write!(f, "the {w} region was already handed out"),
        }
    }
}

/// Checks that `[base, base+len)` lies inside one usable memory-map range.
pub fn validate(info: &BootInfo, base: u64, len: u64) -> Result<(), RegionError> {
    let end = base
        .checked_add(len)
        .ok_or(RegionError::NotInUsableRam { base, len })?;
    let inside = info
        .regions()
        .iter()
        .any(|r| r.kind == MemKind::Usable && r.base <= base && end <= r.end());
    if inside && base >= (1 << 20) {
        Ok(())
    } else {
        Err(RegionError::NotInUsableRam { base, len })
    }
}

/// Checks two regions do not overlap.
pub fn disjoint(
    a: (u64, u64),
    an: &'static str,
    b: (u64, u64),
    bn: &'static str,
) -> Result<(), RegionError> {
    if a.0 < b.0 + b.1 && b.0 < a.0 + a.1 {
        Err(RegionError::Overlap {
            what: an,
            other: bn,
        })
    } else {
        Ok(())
    }
}

static AUDIT_TAKEN: AtomicBool = AtomicBool::new(false);
static RAFT_TAKEN: AtomicBool = AtomicBool::new(false);

/// Hands out a validated region exactly once.
// The returned `&mut` comes from a physical range, not from `flag`; the flag only
// guarantees it is created once.
#[allow(clippy::mut_from_ref)]
///
/// # Safety
/// `(base, len)` must have been validated with [`validate`] and reserved in the frame
/// allocator at boot, so no other code can reach that memory.
unsafe fn take(
    flag: &AtomicBool,
    what: &'static str,
    base: u64,
    len: u64,
) -> Result<&'static mut [u8], RegionError> {
    if flag.swap(true, Ordering::AcqRel) {
        return Err(RegionError::AlreadyTaken(what));
    }
    // SAFETY: per the contract the range is identity-mapped RAM reserved for this use,
    // and the flag makes this the only reference ever created.
    Ok(unsafe { core::slice::from_raw_parts_mut(base as *mut u8, len as usize) })
}

/// The audit region (once).
pub fn audit() -> Result<&'static mut [u8], RegionError> {
    let (base, len) = crate::options().audit;
    validate(crate::boot_info(), base, len)?;
    // SAFETY: validated just above and reserved by `init_memory` before any allocation.
    unsafe { take(&AUDIT_TAKEN, "audit", base, len) }
}

/// The Raft state region (once).
pub fn raft() -> Result<&'static mut [u8], RegionError> {
    let (base, len) = crate::options().raft;
    validate(crate::boot_info(), base, len)?;
    // SAFETY: validated just above and reserved by `init_memory` before any allocation.
    unsafe { take(&RAFT_TAKEN, "raft", base, len) }
}
