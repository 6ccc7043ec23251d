//! SplitMix64 (Steele, Lea, Flood 2014): XDV's one seeded pseudo-random generator.
//!
//! Owns every random draw of the project's pure code, tests, simulators and host
//! fault injection; there is no other PRNG in the tree. Invariants:
//! - The generator is seeded explicitly, never from a clock or the environment.
//! - The `next_u64` sequence for a seed is fixed forever: built-in task inputs
//!   (`xdv_sched::BuiltinWork::Sort`) and recorded simulator seeds depend on it, so
//!   the reference values in the tests below must never change.
//! - Every helper except `below`/`range` consumes exactly one `next_u64` per
//!   decision, so callers can reason about stream positions; `below` rejects a draw
//!   only with probability under `n / 2^64` (never, in practice, for small `n`).

use core::ops::Range;

/// The SplitMix64 generator. The field is the raw state (public so a seed can be
/// written as `SplitMix64(seed)`); `SplitMix64::new(seed)` is the same thing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

/// Denominator of [`SplitMix64::chance_ppm`].
pub const PPM: u64 = 1_000_000;

impl SplitMix64 {
    /// A generator whose stream is determined by `seed` alone.
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`. Panics if `n == 0`.
    ///
    /// Unbiased: draws below `2^64 mod n` are rejected (OpenBSD
    /// `arc4random_uniform`), then the draw is reduced modulo `n`. For every `n` up
    /// to billions a rejection has probability below 1e-9, so in practice this is
    /// one draw and `next_u64() % n`, the reduction earlier copies used.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0)");
        let reject_under = n.wrapping_neg() % n; // == 2^64 mod n
        loop {
            let x = self.next_u64();
            if x >= reject_under {
                return x % n;
            }
        }
    }

    /// Uniform in `r` (`r.start < r.end`, else panics).
    pub fn range(&mut self, r: Range<u64>) -> u64 {
        assert!(r.start < r.end, "SplitMix64::range on an empty range");
        r.start + self.below(r.end - r.start)
    }

    /// True with probability `pct / 100` (always true from 100 on). One draw.
    pub fn chance_pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// True with probability `ppm / 1_000_000` (always true from 1_000_000 on).
    /// One draw.
    pub fn chance_ppm(&mut self, ppm: u64) -> bool {
        self.below(PPM) < ppm
    }

    /// A uniformly chosen element, or `None` for an empty slice (which draws
    /// nothing).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let i = self.below(items.len() as u64) as usize;
        items.get(i)
    }

    /// Fisher–Yates: every permutation equally likely; `len - 1` draws.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A child generator seeded from this one's next draw: independent streams for
    /// sub-components (for example, the network of a simulator) from one seed.
    pub fn fork(&mut self) -> SplitMix64 {
        SplitMix64(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_outputs() {
        // Reference outputs of SplitMix64 (the published algorithm; identical to the
        // copies this generator replaced in sched, raft::sim, audit tests, net tests
        // and the host switch).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
        let mut r = SplitMix64(1);
        assert_eq!(r.next_u64(), 0x910a_2dec_8902_5cc1);
        assert_eq!(r.next_u64(), 0xbeeb_8da1_658e_ec67);
        assert_eq!(r.next_u64(), 0xf893_a2ee_fb32_555e);
        // The value the raft simulator's copy was checked against.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn below_matches_modulo_for_small_n_and_stays_in_bounds() {
        let mut a = SplitMix64(42);
        let mut b = SplitMix64(42);
        for n in 1..2000u64 {
            let x = a.below(n);
            assert!(x < n);
            assert_eq!(x, b.next_u64() % n);
        }
        let mut r = SplitMix64(7);
        for _ in 0..1000 {
            assert!(r.below(u64::MAX) < u64::MAX);
            assert!(r.below((1 << 63) + 1) <= 1 << 63);
            assert_eq!(r.below(1), 0);
        }
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = SplitMix64(3);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    #[should_panic(expected = "below(0)")]
    fn below_zero_panics() {
        SplitMix64(0).below(0);
    }

    #[test]
    fn range_and_chances() {
        let mut r = SplitMix64(9);
        for _ in 0..1000 {
            let x = r.range(10..13);
            assert!((10..13).contains(&x));
        }
        assert!((0..100).all(|_| !r.chance_pct(0) && r.chance_pct(100)));
        assert!((0..100).all(|_| !r.chance_ppm(0) && r.chance_ppm(PPM)));
        let hits = (0..100_000).filter(|_| r.chance_ppm(250_000)).count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
        let hits = (0..100_000).filter(|_| r.chance_pct(10)).count();
        assert!((9_500..10_500).contains(&hits), "{hits}");
    }

    #[test]
    fn pick_and_shuffle() {
        let mut r = SplitMix64(5);
        let empty: [u8; 0] = [];
        let before = r.clone();
        assert_eq!(r.pick(&empty), None);
        assert_eq!(r, before, "picking from nothing draws nothing");
        let items = [1, 2, 3];
        let mut seen = [false; 3];
        for _ in 0..100 {
            let x = *r.pick(&items).expect("non-empty");
            seen[x - 1] = true;
        }
        assert_eq!(seen, [true; 3]);

        let mut v: [u32; 64] = core::array::from_fn(|i| i as u32);
        r.shuffle(&mut v);
        assert_ne!(v, core::array::from_fn(|i| i as u32), "64! says it moved");
        let mut sorted = v;
        sorted.sort_unstable();
        assert_eq!(sorted, core::array::from_fn(|i| i as u32), "a permutation");
        let mut one = [7];
        r.shuffle(&mut one);
        assert_eq!(one, [7]);
    }

    #[test]
    fn fork_is_deterministic_and_distinct() {
        let mut a = SplitMix64(11);
        let mut b = SplitMix64(11);
        let (mut fa, mut fb) = (a.fork(), b.fork());
        assert_eq!(fa.next_u64(), fb.next_u64());
        assert_ne!(fa.next_u64(), a.next_u64());
    }
}
