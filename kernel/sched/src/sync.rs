//! Atomics and cells used by the lock-free queues, switched to `loom`'s models
//! under `--cfg loom` so the same queue code is model-checked.
//!
//! Outside loom, [`UnsafeCell`] is a thin wrapper over `core::cell::UnsafeCell`
//! exposing loom's closure-based `with`/`with_mut` API, so the queue code does not
//! change between the two builds.

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `core::cell::UnsafeCell` with loom's access API.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(data: T) -> UnsafeCell<T> {
        UnsafeCell(core::cell::UnsafeCell::new(data))
    }

    /// Calls `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a mutable raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Pads and aligns a value to its own pair of cache lines.
///
/// 128 bytes rather than 64: x86 cores' spatial prefetcher fetches cache lines in
/// aligned pairs, so two hot atomics 64 bytes apart still ping-pong between cores
/// (crossbeam's `CachePadded` and `rtrb` use 128 on x86_64 for the same reason).
/// 128 is a multiple of 64, so every value is also 64-byte (one line) aligned.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

const _: () = assert!(core::mem::align_of::<CachePadded<u8>>().is_multiple_of(64));
