//! Physical frame allocator: a bitmap over the first 4 GiB (one bit per 4 KiB frame,
//! set = in use). Usable RAM from the boot memory map starts free; the first MiB,
//! the kernel image, boot modules, the boot information and the reserved regions
//! (audit, Raft state) are taken out before anything can allocate.
//!
//! RAM above 4 GiB is not tracked (reported at boot); test nodes have far less.

use spin::Mutex;
use xdv_boot::{BootInfo, MemKind};

pub const FRAME_BYTES: u64 = 4096;
const TRACKED_BYTES: u64 = 4 << 30;
const FRAMES: usize = (TRACKED_BYTES / FRAME_BYTES) as usize;
const WORDS: usize = FRAMES / 64;

struct Bitmap {
    words: [u64; WORDS],
    free: usize,
    total: usize,
    /// Word index where the next search starts (first-fit with a moving hint).
    hint: usize,
}

static FRAMES_MAP: Mutex<Bitmap> = Mutex::new(Bitmap {
    words: [!0; WORDS],
    free: 0,
    total: 0,
    hint: 0,
});

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

impl Bitmap {
    fn set_range(&mut self, first: usize, count: usize, used: bool) {
        let end = first.saturating_add(count).min(FRAMES);
        if first >= end {
            return;
        }
        let (freed, taken) = set_bits(&mut self.words, first, end, used);
        self.free = self.free + freed - taken;
    }

    fn is_free(&self, f: usize) -> bool {
        self.words[f / 64] & (1 << (f % 64)) == 0
    }

    fn find(&self, count: usize) -> Option<usize> {
        let start = self.hint * 64;
        self.find_from(start, count)
            .or_else(|| self.find_from(0, count))
    }

    fn find_from(&self, start: usize, count: usize) -> Option<usize> {
        let mut f = start;
        while f + count <= FRAMES {
            if self.words[f / 64] == !0 {
                f = (f / 64 + 1) * 64;
                continue;
            }
            match (f..f + count).find(|&g| !self.is_free(g)) {
                None => return Some(f),
                Some(used) => f = used + 1,
            }
        }
        None
    }
}

/// Sets bits `first..end` of `words` (`used`) or clears them; returns (bits cleared,
/// bits set) that were not so before. A word at a time: marking the boot memory map
/// (tens of thousands of frames) bit by bit cost about 0.3 ms of the boot under TCG.
pub fn set_bits(words: &mut [u64], first: usize, end: usize, used: bool) -> (usize, usize) {
    let (mut freed, mut taken) = (0, 0);
    let mut f = first;
    while f < end {
        let (w, b) = (f / 64, f % 64);
        let n = (64 - b).min(end - f);
        let mask = if n == 64 { !0 } else { ((1u64 << n) - 1) << b };
        let old = words[w];
        if used {
            taken += (mask & !old).count_ones() as usize;
            words[w] = old | mask;
        } else {
            freed += (mask & old).count_ones() as usize;
            words[w] = old & !mask;
        }
        f += n;
    }
    (freed, taken)
}

/// Reserved ranges besides the memory map's own: `(base, len, what)`.
pub type Reserved = (u64, u64, &'static str);

/// Builds the free map from the boot memory map minus `reserved`.
pub fn init(info: &BootInfo, reserved: &[Reserved]) {
    let mut m = FRAMES_MAP.lock();
    for r in info.regions().iter().filter(|r| r.kind == MemKind::Usable) {
        let first = r.base.div_ceil(FRAME_BYTES);
        let end = r.end().min(TRACKED_BYTES) / FRAME_BYTES;
        if end > first {
            m.set_range(first as usize, (end - first) as usize, false);
        }
        if r.end() > TRACKED_BYTES {
            log::warn!(
                "frames: RAM above 4 GiB ({:#x}..{:#x}) is not used",
                r.base.max(TRACKED_BYTES),
                r.end()
            );
        }
    }
    m.total = m.free;
    let kernel = (
        &raw const __kernel_start as u64,
        &raw const __kernel_end as u64,
    );
    let fixed: [Reserved; 2] = [
        (0, 1 << 20, "low memory"),
        (kernel.0, kernel.1 - kernel.0, "kernel image"),
    ];
    for &(base, len, what) in fixed.iter().chain(reserved) {
        let first = base / FRAME_BYTES;
        let end = base
            .saturating_add(len)
            .div_ceil(FRAME_BYTES)
            .min(FRAMES as u64);
        if end > first {
            m.set_range(first as usize, (end - first) as usize, true);
            log::debug!("frames: reserved {base:#x}..{:#x} ({what})", base + len);
        }
    }
}

/// Allocates `count` physically contiguous frames; returns the physical address.
pub fn alloc(count: usize) -> Option<u64> {
    take(count, true)
}

/// Like [`alloc`], for one large range taken once at boot (the heap): the search hint
/// stays where it was, so later small allocations keep packing the low frames next to
/// the kernel image instead of starting past the range. Under emulation every 2 MiB
/// of guest memory first touched is a host page fault and a 2 MiB clear.
pub fn alloc_apart(count: usize) -> Option<u64> {
    take(count, false)
}

fn take(count: usize, move_hint: bool) -> Option<u64> {
    assert!(count > 0, "frame allocation of zero frames");
    let mut m = FRAMES_MAP.lock();
    let f = m.find(count)?;
    m.set_range(f, count, true);
    if move_hint {
        m.hint = (f + count) / 64;
    }
    Some(f as u64 * FRAME_BYTES)
}

/// Like [`alloc`], with the frames zeroed.
pub fn alloc_zeroed(count: usize) -> Option<u64> {
    let a = alloc(count)?;
    // SAFETY: the frames were just taken from the free map, so nothing else uses them;
    // all RAM below 4 GiB is identity-mapped and writable.
    unsafe { core::ptr::write_bytes(a as *mut u8, 0, count * FRAME_BYTES as usize) };
    Some(a)
}

/// Returns frames to the allocator. Freeing a frame twice is a kernel bug: asserted.
pub fn free(addr: u64, count: usize) {
    assert!(
        addr.is_multiple_of(FRAME_BYTES),
        "free of unaligned frame {addr:#x}"
    );
    let mut m = FRAMES_MAP.lock();
    let first = (addr / FRAME_BYTES) as usize;
    for f in first..first + count {
        assert!(
            !m.is_free(f),
            "double free of frame {:#x}",
            f as u64 * FRAME_BYTES
        );
    }
    m.set_range(first, count, false);
}

/// `(free, total)` frames.
pub fn stats() -> (usize, usize) {
    let m = FRAMES_MAP.lock();
    (m.free, m.total)
}
