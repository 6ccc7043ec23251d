//! Page tables. The entry code identity-maps 0..4 GiB with 2 MiB pages; this module
//! refines that map once the memory map is known:
//! - the boot stack's guard page is unmapped (its 2 MiB page is split into 4 KiB
//!   pages), so a stack overflow faults instead of corrupting memory;
//! - every 2 MiB page that holds no RAM is marked uncached (PCD|PWT), so device
//!   memory (LAPIC, IOAPIC, ECAM, PCI BARs) is never cached;
//! - [`map_mmio`] extends the identity map above 4 GiB (1 GiB at a time, up to
//!   128 TiB: OVMF places 64-bit BARs at 896 GiB and up) for 64-bit BARs, uncached.
//!
//! Invariant: virtual == physical for everything mapped.

use spin::Mutex;
use xdv_boot::{BootInfo, MemKind};

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const PAGE_2M: u64 = 2 << 20;
const PAGE_1G: u64 = 1 << 30;
const PAGE_512G: u64 = 512 << 30;
const IDENTITY_END: u64 = 4 << 30;

unsafe extern "C" {
    static mut boot_pml4: [u64; 512];
    static mut boot_pdpt: [u64; 512];
    static mut boot_pd: [u64; 2048];
    static boot_stack_guard: u8;
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut GUARD_PT: Table = Table([0; 512]);

/// Serialises page-table edits across CPUs.
static LOCK: Mutex<()> = Mutex::new(());

pub fn guard_page() -> u64 {
    &raw const boot_stack_guard as u64
}

/// The boot stack `[bottom, top)`.
pub fn boot_stack() -> (u64, u64) {
    (
        &raw const boot_stack_bottom as u64,
        &raw const boot_stack_top as u64,
    )
}

/// Bytes of the boot stack ever used so far: the stack starts zeroed (it is in
/// `.bss`), so everything above the lowest non-zero byte has been written. A frame
/// that only wrote zeros below it is missed: a lower bound, good to within a frame.
pub fn boot_stack_used() -> u64 {
    let (bottom, top) = boot_stack();
    let mut at = bottom;
    // SAFETY: `[bottom, top)` is the boot stack in `.bss`, mapped and readable for the
    // kernel's lifetime; volatile byte reads race with nothing (only this CPU writes
    // it, and only below its current stack pointer, which is above what we read).
    while at < top && unsafe { core::ptr::read_volatile(at as *const u8) } == 0 {
        at += 1;
    }
    top - at
}

fn is_ram(info: &BootInfo, base: u64, len: u64) -> bool {
    info.regions().iter().any(|r| {
        let ram = matches!(
            r.kind,
            MemKind::Usable | MemKind::AcpiReclaimable | MemKind::AcpiNvs
        );
        ram && r.base < base + len && base < r.end()
    })
}

fn flush_tlb() {
    let (frame, flags) = x86_64::registers::control::Cr3::read();
    // SAFETY: reloading CR3 with its current value only flushes non-global TLB entries.
    unsafe { x86_64::registers::control::Cr3::write(frame, flags) };
}

/// Splits the guard page's 2 MiB page and marks non-RAM pages uncached.
pub fn refine(info: &BootInfo) {
    let _g = LOCK.lock();
    let guard = guard_page();
    let big = guard & !(PAGE_2M - 1);
    // SAFETY: single-threaded early boot; GUARD_PT and boot_pd are only edited here
    // under LOCK. The 4 KiB entries reproduce the 2 MiB mapping exactly except the
    // guard page, so no live data changes address.
    unsafe {
        let pt = &mut (*(&raw mut GUARD_PT)).0;
        for (i, e) in pt.iter_mut().enumerate() {
            *e = (big + i as u64 * 4096) | PRESENT | WRITABLE;
        }
        pt[((guard - big) / 4096) as usize] = 0;
        let pd = &mut *(&raw mut boot_pd);
        pd[(big / PAGE_2M) as usize] = (&raw const GUARD_PT as u64) | PRESENT | WRITABLE;
        for (i, e) in pd.iter_mut().enumerate() {
            let base = i as u64 * PAGE_2M;
            if *e & HUGE != 0 && !is_ram(info, base, PAGE_2M) {
                *e |= PCD | PWT;
            }
        }
    }
    flush_tlb();
}

/// The PDPT covering the 512 GiB around `addr` (< 128 TiB): the boot PDPT for the
/// first, a fresh zeroed one linked into the PML4 for the others. Call under LOCK.
fn pdpt_for(addr: u64) -> Option<*mut u64> {
    let i = (addr / PAGE_512G) as usize;
    assert!(i < 256, "pdpt_for({addr:#x}) outside the lower half");
    if i == 0 {
        return Some((&raw mut boot_pdpt).cast::<u64>());
    }
    // SAFETY: boot_pml4 is the live PML4 (CR3), edited only here and in the entry code
    // (before Rust runs) under LOCK; a new entry points at a zeroed frame, so it maps
    // nothing until `map_mmio` fills it. Frames are identity-mapped RAM below 4 GiB.
    unsafe {
        let pml4 = &mut *(&raw mut boot_pml4);
        if pml4[i] & PRESENT == 0 {
            let t = crate::mem::frames::alloc_zeroed(1)?;
            pml4[i] = t | PRESENT | WRITABLE;
        }
        Some((pml4[i] & 0x000f_ffff_ffff_f000) as *mut u64)
    }
}

/// Makes `[phys, phys + len)` accessible, uncached, and returns its virtual address
/// (identity). Returns `None` beyond the lower 128 TiB or if no frame is left for a
/// page table.
pub fn map_mmio(phys: u64, len: u64) -> Option<u64> {
    let end = phys.checked_add(len)?;
    let _g = LOCK.lock();
    if end <= IDENTITY_END {
        // SAFETY: boot_pd entries for 0..4 GiB are all 2 MiB leaf entries (or the
        // guard page table, which covers RAM); adding PCD|PWT only changes caching.
        unsafe {
            let pd = &mut *(&raw mut boot_pd);
            let mut a = phys & !(PAGE_2M - 1);
            while a < end {
                let e = &mut pd[(a / PAGE_2M) as usize];
                if *e & HUGE != 0 {
                    *e |= PCD | PWT;
                }
                a += PAGE_2M;
            }
        }
    } else {
        // Lower half only (PML4 entries 0..256): 128 TiB covers every BAR firmware
        // places (OVMF puts 64-bit BARs at 896 GiB and up).
        if end > 256 * PAGE_512G {
            return None;
        }
        let mut a = phys & !(PAGE_1G - 1);
        while a < end {
            let pdpt = pdpt_for(a)?;
            let idx = ((a / PAGE_1G) % 512) as usize;
            // SAFETY: `pdpt` is a live, identity-mapped PDPT (boot_pdpt or one made by
            // `pdpt_for` under LOCK); we only fill entries that are empty (above 4 GiB)
            // with a fresh, fully initialised page directory.
            unsafe {
                if *pdpt.add(idx) & PRESENT == 0 {
                    let pd_phys = crate::mem::frames::alloc_zeroed(1)?;
                    let pd = pd_phys as *mut u64;
                    for i in 0..512u64 {
                        pd.add(i as usize)
                            .write((a + i * PAGE_2M) | PRESENT | WRITABLE | HUGE | PCD | PWT);
                    }
                    *pdpt.add(idx) = pd_phys | PRESENT | WRITABLE;
                }
            }
            a += PAGE_1G;
        }
    }
    flush_tlb();
    Some(phys)
}
