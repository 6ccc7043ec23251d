//! Kernel heap: `linked_list_allocator` over a contiguous run of frames, behind a
//! `GlobalAlloc` that counts usage and reports every failed allocation on the console
//! (out-of-memory is never silent; the caller then gets null, and `alloc`'s default
//! handler panics with the size, which the panic handler reports).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::Heap;
use spin::Mutex;

pub struct KernelHeap {
    heap: Mutex<Heap>,
    failures: AtomicU64,
}

#[global_allocator]
pub static HEAP: KernelHeap = KernelHeap {
    heap: Mutex::new(Heap::empty()),
    failures: AtomicU64::new(0),
};

/// Heap size: a quarter of usable RAM, between 4 MiB and 256 MiB.
pub fn size_for(usable_bytes: u64) -> u64 {
    (usable_bytes / 4).clamp(4 << 20, 256 << 20) & !0xfff
}

/// Gives the heap its memory. Called once at boot.
pub fn init(size: u64) -> Result<u64, &'static str> {
    let frames = (size / super::frames::FRAME_BYTES) as usize;
    let base = super::frames::alloc(frames).ok_or("no contiguous physical range for the heap")?;
    // SAFETY: [base, base+size) was just taken from the frame allocator, is identity-
    // mapped RAM, and is handed to the heap exclusively, once.
    unsafe { HEAP.heap.lock().init(base as *mut u8, size as usize) };
    Ok(base)
}

/// `(used, free, size)` in bytes.
pub fn usage() -> (usize, usize, usize) {
    let h = HEAP.heap.lock();
    (h.used(), h.free(), h.size())
}

pub fn failures() -> u64 {
    HEAP.failures.load(Ordering::Relaxed)
}

// SAFETY: all heap state is behind a spin lock; allocate/deallocate uphold
// GlobalAlloc's contract by delegating to linked_list_allocator with the same layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let result = self.heap.lock().allocate_first_fit(layout);
        match result {
            Ok(p) => p.as_ptr(),
            Err(()) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let (used, free, size) = usage();
                log::error!(
                    "heap: out of memory: request of {} bytes (align {}) failed; used {used} free {free} of {size} bytes",
                    layout.size(),
                    layout.align()
                );
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller passes a pointer this allocator returned for `layout`.
            unsafe { self.heap.lock().deallocate(p, layout) };
        }
    }
}
