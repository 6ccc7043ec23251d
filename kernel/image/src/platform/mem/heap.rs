//! Kernel heap: `linked_list_allocator` over a contiguous run of frames, with
//! power-of-two size classes (16 B to 2 KiB) in front of it, behind a `GlobalAlloc` that
//! counts usage and reports every failed allocation on the console (out-of-memory is
//! never silent; the caller then gets null, and `alloc`'s default handler panics with
//! the size, which the panic handler reports).
//!
//! Why the classes: a first-fit list walks its holes on every allocation, and the
//! node's loop and the task cores allocate small objects all the time; sampling the
//! boot CPU under `bench cluster` found about a fifth of its time in the list's
//! allocate/deallocate and an eighth spinning on this heap's lock while an AP walked it.
//! A class allocation pops a free list (O(1) under the lock); an empty list is refilled
//! with one chunk carved into blocks. Freed small blocks stay in their class (a class's
//! memory is not given back to the list: bounded by the peak of that class).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::Heap;
use spin::Mutex;

/// Smallest class, bytes (a free block holds the next pointer).
const MIN_CLASS: usize = 16;
/// Number of classes: 16, 32, .., 2048 bytes.
const CLASSES: usize = 8;
/// A refill carves at least this many bytes (and at least 8 blocks).
const CHUNK_BYTES: usize = 4096;

/// The backing list and the classes' free lists, under one lock.
struct Inner {
    heap: Heap,
    /// Head of each class's free list (0: empty); a free block's first word is the next.
    free: [usize; CLASSES],
    /// Bytes sitting in the free lists (allocated from `heap`, free for the kernel).
    cached: usize,
}

/// The class serving `layout`, if it is small enough.
fn class_of(layout: Layout) -> Option<usize> {
    let need = layout
        .size()
        .max(layout.align())
        .max(MIN_CLASS)
        .checked_next_power_of_two()?;
    let c = (need.trailing_zeros() - MIN_CLASS.trailing_zeros()) as usize;
    (c < CLASSES).then_some(c)
}

fn class_bytes(c: usize) -> usize {
    MIN_CLASS << c
}

impl Inner {
    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let Some(c) = class_of(layout) else {
            return self.heap.allocate_first_fit(layout).ok();
        };
        if self.free[c] == 0 {
            self.refill(c);
        }
        let head = self.free[c];
        if head == 0 {
            return None;
        }
        // SAFETY: `head` is a free block of class `c` that this allocator carved from
        // memory it owns; its first word was written by `push` (the next free block).
        self.free[c] = unsafe { (head as *const usize).read() };
        self.cached -= class_bytes(c);
        NonNull::new(head as *mut u8)
    }

    /// Puts one chunk's blocks (or, when no chunk fits, one block) on class `c`'s list.
    fn refill(&mut self, c: usize) {
        let size = class_bytes(c);
        let chunk = CHUNK_BYTES.max(8 * size);
        let (base, bytes) = match Layout::from_size_align(chunk, size)
            .ok()
            .and_then(|l| self.heap.allocate_first_fit(l).ok())
        {
            Some(p) => (p.as_ptr() as usize, chunk),
            None => match Layout::from_size_align(size, size)
                .ok()
                .and_then(|l| self.heap.allocate_first_fit(l).ok())
            {
                Some(p) => (p.as_ptr() as usize, size),
                None => return,
            },
        };
        let mut at = base + bytes;
        while at > base {
            at -= size;
            self.push(c, at);
        }
    }

    fn push(&mut self, c: usize, block: usize) {
        // SAFETY: `block` is a class-`c` block (at least 16 bytes, aligned to its size)
        // that nothing else uses any more; its first word becomes the list link.
        unsafe { (block as *mut usize).write(self.free[c]) };
        self.free[c] = block;
        self.cached += class_bytes(c);
    }

    fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        match class_of(layout) {
            Some(c) => self.push(c, ptr.as_ptr() as usize),
            // SAFETY: the caller passes a pointer this allocator returned for `layout`,
            // and a layout without a class was allocated from the list directly.
            None => unsafe { self.heap.deallocate(ptr, layout) },
        }
    }
}

pub struct KernelHeap {
    inner: Mutex<Inner>,
    failures: AtomicU64,
}

#[global_allocator]
pub static HEAP: KernelHeap = KernelHeap {
    inner: Mutex::new(Inner {
        heap: Heap::empty(),
        free: [0; CLASSES],
        cached: 0,
    }),
    failures: AtomicU64::new(0),
};

/// Heap size: a quarter of usable RAM, between 4 MiB and 256 MiB.
pub fn size_for(usable_bytes: u64) -> u64 {
    (usable_bytes / 4).clamp(4 << 20, 256 << 20) & !0xfff
}

/// Gives the heap its memory. Called once at boot.
pub fn init(size: u64) -> Result<u64, &'static str> {
    let frames = (size / super::frames::FRAME_BYTES) as usize;
    let base =
        super::frames::alloc_apart(frames).ok_or("no contiguous physical range for the heap")?;
    // SAFETY: [base, base+size) was just taken from the frame allocator, is identity-
    // mapped RAM, and is handed to the heap exclusively, once.
    unsafe { HEAP.inner.lock().heap.init(base as *mut u8, size as usize) };
    Ok(base)
}

/// `(used, free, size)` in bytes (blocks waiting in the classes' free lists count as
/// free).
pub fn usage() -> (usize, usize, usize) {
    let i = HEAP.inner.lock();
    (
        i.heap.used() - i.cached,
        i.heap.free() + i.cached,
        i.heap.size(),
    )
}

pub fn failures() -> u64 {
    HEAP.failures.load(Ordering::Relaxed)
}

// SAFETY: all heap state is behind a spin lock; a small layout gets a block of its
// power-of-two class (size and alignment at least the layout's) that no one else holds,
// a larger one goes to linked_list_allocator with the same layout, and dealloc puts each
// pointer back where the same layout sent its allocation.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let result = self.inner.lock().alloc(layout);
        match result {
            Some(p) => p.as_ptr(),
            None => {
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
            self.inner.lock().dealloc(p, layout);
        }
    }
}
