//! A queue that pops in (timestamp, core id) order: the node-wide total order of
//! events. Not shared between cores (it takes `&mut self`); a core that owns it
//! fills it from per-core SPSC rings. Replaces the seed's spin-locked `Vec` "heap"
//! with a binary heap: push and pop are O(log n).
//!
//! Invariant: among entries with equal [`CoreStamp`] (a core reused a timestamp,
//! which a Lamport clock never does), pops follow push order, so the result is still
//! a deterministic function of the push sequence.

use alloc::collections::BinaryHeap;
use core::cmp::{Ordering, Reverse};
use xdv_types::{CoreId, CoreStamp, Timestamp};

use crate::spsc::Full;

/// Default bound on entries, a limit on memory.
pub const MAX_ORDERED_ENTRIES: usize = 1 << 20;

/// Bits of the push sequence number kept in an entry's tie-break word.
const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const _: () = assert!(SEQ_BITS + u16::BITS == u64::BITS);

/// Key packed into two words (entries are 8 bytes smaller than with a
/// `(CoreStamp, u64)` key, which matters once the heap outgrows the caches):
/// `time`, then `core << 48 | seq` — the same order as (time, core id, seq).
struct Entry<T> {
    time: u64,
    tie: u64,
    value: T,
}

impl<T> Entry<T> {
    fn key(&self) -> (u64, u64) {
        (self.time, self.tie)
    }

    fn stamp(&self) -> CoreStamp {
        CoreStamp {
            time: Timestamp(self.time),
            core: CoreId((self.tie >> SEQ_BITS) as u16),
        }
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Min-queue on (timestamp, core id, push order).
pub struct OrderedQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    next_seq: u64,
    limit: usize,
}

impl<T> Default for OrderedQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> OrderedQueue<T> {
    /// An empty queue bounded by [`MAX_ORDERED_ENTRIES`].
    pub fn new() -> Self {
        Self::with_limit(MAX_ORDERED_ENTRIES)
    }

    /// An empty queue holding at most `limit` entries.
    pub fn with_limit(limit: usize) -> Self {
        OrderedQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            limit,
        }
    }

    /// Inserts `value` at `stamp`; O(log n). Returns it in [`Full`] at the limit.
    pub fn push(&mut self, stamp: CoreStamp, value: T) -> Result<(), Full<T>> {
        if self.heap.len() >= self.limit {
            return Err(Full(value));
        }
        // The sequence number only orders entries with equal stamps, which a
        // Lamport clock never produces; wrapping after 2^48 pushes is harmless.
        let seq = self.next_seq & SEQ_MASK;
        self.next_seq = self.next_seq.wrapping_add(1);
        let tie = (u64::from(stamp.core.0) << SEQ_BITS) | seq;
        self.heap.push(Reverse(Entry {
            time: stamp.time.0,
            tie,
            value,
        }));
        Ok(())
    }

    /// Removes the entry with the smallest (timestamp, core id); O(log n).
    pub fn pop(&mut self) -> Option<(CoreStamp, T)> {
        self.heap.pop().map(|Reverse(e)| (e.stamp(), e.value))
    }

    /// The smallest stamp, without removing it.
    pub fn peek_stamp(&self) -> Option<CoreStamp> {
        self.heap.peek().map(|Reverse(e)| e.stamp())
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn st(t: u64, c: u16) -> CoreStamp {
        CoreStamp {
            time: Timestamp(t),
            core: CoreId(c),
        }
    }

    #[test]
    fn pops_by_time_then_core_then_push_order() {
        let mut q = OrderedQueue::new();
        q.push(st(5, 1), "d").expect("room");
        q.push(st(5, 0), "c").expect("room");
        q.push(st(2, 3), "a").expect("room");
        q.push(st(5, 1), "e").expect("room");
        q.push(st(3, 0), "b").expect("room");
        assert_eq!(q.peek_stamp(), Some(st(2, 3)));
        assert_eq!(q.pop(), Some((st(2, 3), "a")));
        let order: Vec<&str> = core::iter::from_fn(|| q.pop().map(|(_, v)| v)).collect();
        assert_eq!(order, ["b", "c", "d", "e"]);
        q.push(st(u64::MAX, u16::MAX), "max").expect("room");
        q.push(st(u64::MAX, 0), "max0").expect("room");
        assert_eq!(q.pop(), Some((st(u64::MAX, 0), "max0")));
        assert_eq!(q.pop(), Some((st(u64::MAX, u16::MAX), "max")));
    }

    /// Against a model (linear search for the minimum), with pops interleaved.
    #[test]
    fn matches_model_under_random_use() {
        let mut rng = crate::task::SplitMix64(3);
        let mut q = OrderedQueue::new();
        let mut model: Vec<(CoreStamp, u64)> = Vec::new();
        for i in 0..5000u64 {
            let s = st(rng.next_u64() % 64, (rng.next_u64() % 4) as u16);
            q.push(s, i).expect("room");
            model.push((s, i));
            if rng.next_u64().is_multiple_of(3) {
                // Smallest stamp; among equal stamps the earliest push.
                let at = (0..model.len())
                    .min_by_key(|&k| model[k])
                    .expect("non-empty");
                assert_eq!(q.pop(), Some(model.remove(at)));
            }
        }
        model.sort();
        let rest: Vec<(CoreStamp, u64)> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, model);
    }

    #[test]
    fn limit_is_enforced() {
        let mut q = OrderedQueue::with_limit(2);
        q.push(st(1, 0), 1).expect("room");
        q.push(st(2, 0), 2).expect("room");
        assert_eq!(q.push(st(0, 0), 3), Err(Full(3)));
        assert_eq!(q.len(), 2);
    }
}
