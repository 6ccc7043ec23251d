//! Bounded lock-free single-producer single-consumer ring (one per core).
//!
//! Owns: a fixed array of `N` slots (no allocation, usable in a `static`), a head
//! index written only by the consumer and a tail index written only by the producer,
//! each on its own cache-line pair.
//!
//! Invariants:
//! - `N` is a power of two and `1 <= N <= MAX_SPSC_CAPACITY` (checked at compile time).
//! - Indices are free-running `usize` counters; slot = index & (N - 1).
//!   `0 <= tail - head <= N` (wrapping arithmetic) at every instant.
//! - Slots in `[head, tail)` are initialised; all others are uninitialised.
//! - The ring is split at most once ([`SpscRing::split`], guarded by an `AtomicBool`),
//!   so there is exactly one [`Producer`] and one [`Consumer`] for its lifetime.
//!
//! Memory ordering: the producer writes a slot, then publishes it with a `Release`
//! store of `tail`; the consumer's `Acquire` load of `tail` makes the slot contents
//! visible before it reads them. Symmetrically the consumer moves a value out, then
//! frees the slot with a `Release` store of `head`; the producer's `Acquire` load of
//! `head` orders that read before the producer overwrites the slot.
//!
//! Performance: each side keeps its own index in its handle and a cached copy of the
//! other side's index, and reloads the shared atomic only when the cached copy says
//! full (producer) or empty (consumer). In steady state a push touches only the
//! slot and one `Release` store, like `rtrb`. Two more things, measured with the
//! producer and consumer on two cores (`cargo xdv bench sched`), none of which changes
//! what any call returns:
//! - The producer asks for write ownership of the slot line a few lines ahead of it
//!   (`prefetchw`, x86_64 only, rings of at least [`PREFETCH_MIN_BYTES`]), so the
//!   transfer of a line the consumer last read overlaps the writes before it.
//! - A consumer that has just used up its cached items waits one `spin_loop` hint
//!   before reloading `tail`. A consumer right behind the producer otherwise reloads
//!   after every item or two, pulling `tail` and the slot line being filled away from
//!   the producer each time; the short wait lets the producer finish more of the line.
//!   Repeated polls of an empty ring do not wait (the caller's back-off applies).
#![allow(unsafe_code)]

use core::fmt;
use core::mem::MaybeUninit;

use crate::sync::{AtomicBool, AtomicUsize, CachePadded, Ordering, UnsafeCell};

/// Largest capacity accepted (slots), a limit on static memory per ring.
pub const MAX_SPSC_CAPACITY: usize = 1 << 20;

/// The value that could not be pushed because the ring was full.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue full")
    }
}

/// [`SpscRing::split`] was called a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadySplit;

impl fmt::Display for AlreadySplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("spsc ring already split into producer and consumer")
    }
}

/// Rings smaller than this (bytes of slots) do not prefetch: the line ahead of a small
/// ring's producer is likely the one its consumer is reading.
pub const PREFETCH_MIN_BYTES: usize = 4096;
/// How far ahead of its tail the producer prefetches, in bytes.
#[cfg(all(target_arch = "x86_64", not(loom)))]
const PREFETCH_AHEAD_BYTES: usize = 256;

/// A bounded SPSC ring of `N` slots. See the module docs for its invariants.
///
/// `repr(C)`: `head` and `tail` each fill their own 128-byte block, then `split`, then
/// the slots, which start on a 128-byte boundary of their own.
#[repr(C)]
pub struct SpscRing<T, const N: usize> {
    /// Next index to read. Written only by the consumer (`Release`), read by the
    /// producer (`Acquire`) when its cached copy says the ring is full.
    head: CachePadded<AtomicUsize>,
    /// Next index to write. Written only by the producer (`Release`), read by the
    /// consumer (`Acquire`) when its cached copy says the ring is empty.
    tail: CachePadded<AtomicUsize>,
    /// Set once by the first successful `split` (`AcqRel` swap).
    split: AtomicBool,
    slots: CachePadded<[UnsafeCell<MaybeUninit<T>>; N]>,
}

// SAFETY: the ring hands each slot to exactly one side at a time (module invariants):
// the producer only writes slots outside [head, tail), the consumer only reads slots
// inside it, and the Release/Acquire pairs on head/tail order those accesses. Values
// cross threads, so `T: Send` is required; `T: Sync` is not, since no `&T` is shared.
unsafe impl<T: Send, const N: usize> Sync for SpscRing<T, N> {}
// SAFETY: moving the ring moves the owned `T`s with it; `T: Send` suffices.
unsafe impl<T: Send, const N: usize> Send for SpscRing<T, N> {}

impl<T, const N: usize> SpscRing<T, N> {
    const CAPACITY_OK: () = assert!(
        N.is_power_of_two() && N <= MAX_SPSC_CAPACITY,
        "SpscRing capacity must be a power of two <= MAX_SPSC_CAPACITY"
    );

    /// An empty ring. `const`, so a ring can live in a `static` (one per core).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        SpscRing {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            split: AtomicBool::new(false),
            slots: CachePadded([const { UnsafeCell::new(MaybeUninit::uninit()) }; N]),
        }
    }

    /// An empty ring (loom build: loom's atomics are not `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        SpscRing {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            split: AtomicBool::new(false),
            slots: CachePadded(core::array::from_fn(|_| {
                UnsafeCell::new(MaybeUninit::uninit())
            })),
        }
    }

    /// Number of slots.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Splits the ring into its producer and consumer halves. Succeeds exactly once
    /// per ring; later calls (from any core) return [`AlreadySplit`]. With a
    /// `&'static` ring (a `static`) the halves are `'static` and can be handed to
    /// the cores that own them.
    pub fn split(&self) -> Result<(Producer<'_, T, N>, Consumer<'_, T, N>), AlreadySplit> {
        // AcqRel: exactly one caller observes `false`; Acquire also orders our reads
        // of head/tail after any earlier Release by a previous owner (none exists,
        // but the ring could have been initialised on another core).
        if self.split.swap(true, Ordering::AcqRel) {
            return Err(AlreadySplit);
        }
        // Acquire: pairs with nothing today (fresh ring), kept for symmetry.
        let head = self.head.0.load(Ordering::Acquire);
        let tail = self.tail.0.load(Ordering::Acquire);
        debug_assert!(tail.wrapping_sub(head) <= N);
        Ok((
            Producer {
                ring: self,
                tail,
                cached_head: head,
            },
            Consumer {
                ring: self,
                head,
                cached_tail: tail,
                idle: true,
            },
        ))
    }

    /// Approximate number of queued items (exact when neither side is active), for
    /// diagnostics such as the console's `runq`.
    pub fn len(&self) -> usize {
        // Acquire both; head first so that head <= tail holds for the two readings
        // (tail only grows after head's snapshot). Clamp: the producer may have run
        // ahead between the loads.
        let head = self.head.0.load(Ordering::Acquire);
        let tail = self.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(N)
    }

    /// `len() == 0`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T, const N: usize> Default for SpscRing<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Drop for SpscRing<T, N> {
    fn drop(&mut self) {
        // `&mut self`: no handle borrows the ring any more, so plain loads suffice.
        let mut head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        while head != tail {
            self.slots.0[head & (N - 1)].with_mut(|p| {
                // SAFETY: slots in [head, tail) are initialised (module invariant) and
                // each is dropped once here, as head advances past it.
                unsafe { (*p).assume_init_drop() }
            });
            head = head.wrapping_add(1);
        }
    }
}

impl<T, const N: usize> fmt::Debug for SpscRing<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscRing")
            .field("capacity", &N)
            .field("len", &self.len())
            .finish()
    }
}

/// `size_of::<T>()`, or 1 for zero-sized `T` (divisor in the prefetch constants).
#[cfg(all(target_arch = "x86_64", not(loom)))]
const fn size_of_nonzero<T>() -> usize {
    let s = core::mem::size_of::<T>();
    if s == 0 { 1 } else { s }
}

#[cfg(all(target_arch = "x86_64", not(loom)))]
const fn at_least_one(n: usize) -> usize {
    if n == 0 { 1 } else { n }
}

/// The producing half. `Send` (when `T: Send`), not `Clone`: there is one producer.
pub struct Producer<'a, T, const N: usize> {
    ring: &'a SpscRing<T, N>,
    /// Our own tail: only we write `ring.tail`, so this copy is always current.
    tail: usize,
    /// Last head we loaded; the true head is >= this (the consumer only advances it).
    cached_head: usize,
}

impl<T, const N: usize> Producer<'_, T, N> {
    /// Appends `value`, or returns it in [`Full`] if all `N` slots are taken. Never blocks.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), Full<T>> {
        if self.tail.wrapping_sub(self.cached_head) == N {
            // Acquire: pairs with the consumer's Release store of head, so its read
            // of the slot we are about to reuse happens before our write.
            self.cached_head = self.ring.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) == N {
                return Err(Full(value));
            }
        }
        debug_assert!(self.tail.wrapping_sub(self.cached_head) < N);
        self.prefetch_ahead();
        self.ring.slots.0[self.tail & (N - 1)].with_mut(|p| {
            // SAFETY: tail - head < N, so slot `tail` is outside [head, tail): it is
            // uninitialised (or moved out) and the consumer does not touch it until we
            // publish the new tail below.
            unsafe { p.write(MaybeUninit::new(value)) }
        });
        self.tail = self.tail.wrapping_add(1);
        // Release: publishes the slot write to the consumer's Acquire load of tail.
        self.ring.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Slots per 64-byte line (at least 1), a power of two.
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    const SLOTS_PER_LINE: usize = at_least_one(64 / size_of_nonzero::<T>()).next_power_of_two();
    /// Slots between the tail and the prefetched slot.
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    const AHEAD: usize = at_least_one(PREFETCH_AHEAD_BYTES / size_of_nonzero::<T>());
    /// Whether this ring prefetches (large enough, and the target slot not too close).
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    const PREFETCH: bool = N * core::mem::size_of::<T>() >= PREFETCH_MIN_BYTES && Self::AHEAD < N;

    /// Once per slot line, asks for write ownership of the line `AHEAD` slots on.
    #[inline(always)]
    fn prefetch_ahead(&self) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        if Self::PREFETCH && self.tail & (Self::SLOTS_PER_LINE - 1) == 0 {
            let slot = &self.ring.slots.0[self.tail.wrapping_add(Self::AHEAD) & (N - 1)];
            let p = slot.with(|p| p.cast::<i8>());
            // SAFETY: a prefetch is only a hint: it never faults and does not access
            // the slot's value (which the consumer may be reading), and `p` points
            // into this ring's slot array, which outlives the call.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p);
            }
        }
    }

    /// Free slots as seen now (a lower bound: the consumer may free more).
    pub fn free_slots(&mut self) -> usize {
        // Acquire: same pairing as in `push`.
        self.cached_head = self.ring.head.0.load(Ordering::Acquire);
        N - self.tail.wrapping_sub(self.cached_head)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        N
    }
}

/// The consuming half. `Send` (when `T: Send`), not `Clone`: there is one consumer.
pub struct Consumer<'a, T, const N: usize> {
    ring: &'a SpscRing<T, N>,
    /// Our own head: only we write `ring.head`, so this copy is always current.
    head: usize,
    /// Last tail we loaded; the true tail is >= this (the producer only advances it).
    cached_tail: usize,
    /// The last `pop` found the ring empty (so the next one does not wait).
    idle: bool,
}

impl<T, const N: usize> Consumer<'_, T, N> {
    /// Removes the oldest value, or `None` if the ring is empty. Never blocks.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            if !self.idle {
                // Just used up the cached items: give the producer a moment to fill
                // more of its line before we pull `tail` (module docs).
                core::hint::spin_loop();
            }
            // Acquire: pairs with the producer's Release store of tail, making the
            // slot contents written before it visible to the read below.
            self.cached_tail = self.ring.tail.0.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                self.idle = true;
                return None;
            }
            self.idle = false;
        }
        debug_assert!(self.cached_tail.wrapping_sub(self.head) <= N);
        let value = self.ring.slots.0[self.head & (N - 1)].with(|p| {
            // SAFETY: head < tail, so slot `head` is initialised and published (the
            // Acquire load above); the producer does not overwrite it until we
            // publish the new head below, and we move the value out exactly once.
            unsafe { (*p).assume_init_read() }
        });
        self.head = self.head.wrapping_add(1);
        // Release: orders our read of the slot before the producer may reuse it.
        self.ring.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Values available now (a lower bound: the producer may add more).
    pub fn available(&mut self) -> usize {
        // Acquire: same pairing as in `pop`.
        self.cached_tail = self.ring.tail.0.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        N
    }
}

impl<T, const N: usize> fmt::Debug for Producer<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .finish()
    }
}

impl<T, const N: usize> fmt::Debug for Consumer<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    #[test]
    fn fifo_full_and_empty() {
        let ring: SpscRing<u32, 4> = SpscRing::new();
        let (mut p, mut c) = ring.split().expect("first split");
        assert_eq!(c.pop(), None);
        for i in 0..4 {
            p.push(i).expect("room");
        }
        assert_eq!(p.push(99), Err(Full(99)));
        assert_eq!(ring.len(), 4);
        assert_eq!(c.pop(), Some(0));
        p.push(4).expect("one slot freed");
        let got: Vec<u32> = core::iter::from_fn(|| c.pop()).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        assert!(ring.is_empty());
    }

    #[test]
    fn split_only_once() {
        static RING: SpscRing<u64, 8> = SpscRing::new();
        let (mut p, mut c) = RING.split().expect("first split");
        assert_eq!(RING.split().err(), Some(AlreadySplit));
        p.push(7).expect("room");
        assert_eq!(c.pop(), Some(7));
    }

    #[test]
    fn wraps_many_times() {
        let ring: SpscRing<usize, 2> = SpscRing::new();
        let (mut p, mut c) = ring.split().expect("split");
        for i in 0..1000 {
            p.push(i).expect("room");
            assert_eq!(c.pop(), Some(i));
        }
        assert_eq!(p.free_slots(), 2);
        assert_eq!(c.available(), 0);
    }

    #[test]
    fn drop_releases_queued_values() {
        let tracker = Rc::new(());
        {
            let ring: SpscRing<Rc<()>, 4> = SpscRing::new();
            let (mut p, mut c) = ring.split().expect("split");
            for _ in 0..3 {
                p.push(tracker.clone()).expect("room");
            }
            drop(c.pop());
            assert_eq!(Rc::strong_count(&tracker), 3);
        }
        assert_eq!(Rc::strong_count(&tracker), 1);
    }

    #[test]
    fn two_threads_keep_fifo() {
        const ITEMS: u64 = 200_000;
        let ring: Arc<SpscRing<u64, 64>> = Arc::new(SpscRing::new());
        let (p, mut c) = ring.split().expect("split");
        stream_in_order(p, &mut c, ITEMS);
        assert!(ring.is_empty());
    }

    /// A producer thread pushes 0..items (spinning while full); this thread pops and
    /// checks every value arrives once, in order.
    fn stream_in_order<const N: usize>(
        mut p: Producer<'_, u64, N>,
        c: &mut Consumer<'_, u64, N>,
        items: u64,
    ) {
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..items {
                    let mut v = i;
                    while let Err(Full(back)) = p.push(v) {
                        v = back;
                        std::hint::spin_loop();
                    }
                }
            });
            let mut expect = 0;
            while expect < items {
                if let Some(v) = c.pop() {
                    assert_eq!(v, expect);
                    expect += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
    }

    #[test]
    fn prefetching_ring_keeps_fifo_across_threads_and_laps() {
        // 1024 x 8 bytes: large enough that the producer prefetches (wrapping onto
        // slots of the previous lap); 300 laps.
        const ITEMS: u64 = 300 * 1024;
        assert!(SpscRing::<u64, 1024>::new().capacity() * 8 >= PREFETCH_MIN_BYTES);
        let ring: Box<SpscRing<u64, 1024>> = Box::default();
        let (p, mut c) = ring.split().expect("split");
        stream_in_order(p, &mut c, ITEMS);
        // The drained ring answers None (the consumer's idle path after a prefetch lap).
        assert_eq!(c.pop(), None);
        assert!(ring.is_empty());
    }

    #[test]
    fn pop_after_empty_polls_sees_new_values() {
        let ring: SpscRing<u32, 2> = SpscRing::new();
        let (mut p, mut c) = ring.split().expect("split");
        for round in 0..10 {
            assert_eq!(c.pop(), None);
            assert_eq!(c.pop(), None);
            p.push(round).expect("room");
            p.push(round + 100).expect("room");
            assert_eq!(c.pop(), Some(round));
            assert_eq!(c.pop(), Some(round + 100));
        }
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn halves_are_send() {
        assert_send::<Producer<'static, u64, 8>>();
        assert_send::<Consumer<'static, u64, 8>>();
    }
}
