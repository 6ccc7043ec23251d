//! Best-effort bounded lock-free MPMC queue (Dmitry Vyukov's bounded queue) for work
//! whose order does not matter: log lines, metrics, per-core outcome reports.
//!
//! Owns: a heap array of `capacity` slots, each with a sequence number, and two
//! claim counters (`enqueue_pos`, `dequeue_pos`).
//!
//! Invariants:
//! - `capacity` is a power of two in `2..=MAX_MPMC_CAPACITY`.
//! - Slot `i` starts with `seq = i`. A producer may write slot `pos & mask` only when
//!   `seq == pos` and it won the CAS on `enqueue_pos`; it then stores `seq = pos + 1`.
//!   A consumer may read it only when `seq == pos + 1` and it won the CAS on
//!   `dequeue_pos`; it then stores `seq = pos + capacity` (free for the next lap).
//!
//! "Best effort": FIFO per producer, no total order across producers, and `pop`
//! may report empty while a producer that already claimed a slot is still writing it.
//!
//! Memory ordering: claim counters are `Relaxed` (they only arbitrate between
//! threads of one side); slot data is published by a `Release` store of the slot's
//! `seq` and observed through an `Acquire` load of it, in both directions.
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::mem::MaybeUninit;

use crate::spsc::Full;
use crate::sync::{AtomicUsize, CachePadded, Ordering, UnsafeCell};

/// Largest capacity accepted (slots).
pub const MAX_MPMC_CAPACITY: usize = 1 << 20;

/// The capacity given to [`MpmcQueue::new`] is not a power of two in range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadCapacity(pub usize);

impl fmt::Display for BadCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mpmc capacity {} is not a power of two in 2..={MAX_MPMC_CAPACITY}",
            self.0
        )
    }
}

struct Slot<T> {
    /// Lap/state of the slot; see the module invariants.
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded MPMC queue. Share it by reference (`&MpmcQueue` or `Arc`).
pub struct MpmcQueue<T> {
    slots: Box<[Slot<T>]>,
    mask: usize,
    /// Next position to claim for a push. Relaxed: arbitration only.
    enqueue_pos: CachePadded<AtomicUsize>,
    /// Next position to claim for a pop. Relaxed: arbitration only.
    dequeue_pos: CachePadded<AtomicUsize>,
}

// SAFETY: a slot's value is accessed only by the one thread that won the claim for
// it, and the Release/Acquire pair on the slot's `seq` orders the writer's write
// before the reader's read (module invariants). Values cross threads: `T: Send`.
unsafe impl<T: Send> Sync for MpmcQueue<T> {}
// SAFETY: moving the queue moves owned `T`s; `T: Send` suffices.
unsafe impl<T: Send> Send for MpmcQueue<T> {}

impl<T> MpmcQueue<T> {
    /// An empty queue with `capacity` slots (a power of two in `2..=MAX_MPMC_CAPACITY`).
    pub fn new(capacity: usize) -> Result<Self, BadCapacity> {
        if !capacity.is_power_of_two() || !(2..=MAX_MPMC_CAPACITY).contains(&capacity) {
            return Err(BadCapacity(capacity));
        }
        let slots: Vec<Slot<T>> = (0..capacity)
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ok(MpmcQueue {
            slots: slots.into_boxed_slice(),
            mask: capacity - 1,
            enqueue_pos: CachePadded(AtomicUsize::new(0)),
            dequeue_pos: CachePadded(AtomicUsize::new(0)),
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Appends `value`, or returns it in [`Full`]. Lock-free, never blocks.
    pub fn push(&self, value: T) -> Result<(), Full<T>> {
        let mut pos = self.enqueue_pos.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            // Acquire: pairs with the consumer's Release store that freed this slot,
            // ordering its read of the old value before our write.
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                match self.enqueue_pos.0.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        slot.value.with_mut(|p| {
                            // SAFETY: we won the claim for `pos` and seq == pos, so
                            // the slot is free and no other thread accesses it until
                            // we publish seq = pos + 1.
                            unsafe { p.write(MaybeUninit::new(value)) }
                        });
                        // Release: publishes the value to the consumer's Acquire load.
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                // The slot still holds the value from one lap ago: full.
                return Err(Full(value));
            } else {
                // Another producer claimed `pos`; catch up.
                pos = self.enqueue_pos.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Removes a value, or `None` if none is ready. Lock-free, never blocks.
    pub fn pop(&self) -> Option<T> {
        let mut pos = self.dequeue_pos.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            // Acquire: pairs with the producer's Release store of seq = pos + 1,
            // making the value visible before we read it.
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as isize;
            if diff == 0 {
                match self.dequeue_pos.0.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let value = slot.value.with(|p| {
                            // SAFETY: we won the claim for `pos` and seq == pos + 1,
                            // so the slot holds a published value that only we read,
                            // exactly once, before freeing the slot below.
                            unsafe { (*p).assume_init_read() }
                        });
                        // Release: orders our read before the next lap's write.
                        slot.seq
                            .store(pos.wrapping_add(self.mask + 1), Ordering::Release);
                        return Some(value);
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.dequeue_pos.0.load(Ordering::Relaxed);
            }
        }
    }
}

impl<T> Drop for MpmcQueue<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread holds the queue; drain what is left.
        while self.pop().is_some() {}
    }
}

impl<T> fmt::Debug for MpmcQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcQueue")
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    #[test]
    fn rejects_bad_capacity() {
        assert_eq!(MpmcQueue::<u8>::new(3).err(), Some(BadCapacity(3)));
        assert_eq!(MpmcQueue::<u8>::new(1).err(), Some(BadCapacity(1)));
        assert!(MpmcQueue::<u8>::new(MAX_MPMC_CAPACITY * 2).is_err());
    }

    #[test]
    fn single_thread_fifo_and_full() {
        let q = MpmcQueue::new(4).expect("capacity");
        for i in 0..4 {
            q.push(i).expect("room");
        }
        assert_eq!(q.push(9), Err(Full(9)));
        let got: Vec<i32> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn many_threads_lose_nothing() {
        const PER_PRODUCER: usize = 20_000;
        let q = Arc::new(MpmcQueue::new(64).expect("capacity"));
        let total: usize = std::thread::scope(|s| {
            for t in 0..2usize {
                let q = &q;
                s.spawn(move || {
                    for i in 0..PER_PRODUCER {
                        let mut v = t * PER_PRODUCER + i;
                        while let Err(Full(back)) = q.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                });
            }
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let q = &q;
                    s.spawn(move || {
                        let mut seen = Vec::new();
                        while seen.len() < PER_PRODUCER {
                            match q.pop() {
                                Some(v) => seen.push(v),
                                None => std::thread::yield_now(),
                            }
                        }
                        seen
                    })
                })
                .collect();
            let mut all: Vec<usize> = consumers
                .into_iter()
                .flat_map(|h| h.join().expect("consumer"))
                .collect();
            all.sort_unstable();
            all.dedup();
            all.len()
        });
        assert_eq!(total, 2 * PER_PRODUCER);
    }
}
