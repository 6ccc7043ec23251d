//! The bulk stream's content and its check (console `bulk N BYTES` → peer N's sink,
//! `cargo xdv bench net`, `tests/tests/network.rs`).
//!
//! Byte `i` of every bulk stream is `i * 31 mod 251` ([`byte`]): 251 is prime, so
//! the pattern has period 251 and no power-of-two alignment, and a dropped,
//! duplicated or reordered segment shifts it detectably. The sender sends slices of a
//! precomputed [`Pattern`] (no per-byte work); the sink compares what arrives with
//! the same slices ([`Check`]: one word-wise comparison per piece, a byte walk only
//! on a mismatch) and reports the first differing offset. Both used to run SHA-256
//! over every byte and compare digests: under QEMU's TCG that was about 35 ms per MiB
//! on each side, more than the TCP path itself.

use alloc::vec::Vec;

/// The pattern's period (prime).
pub const PERIOD: usize = 251;

/// Byte `i` of a bulk stream.
pub fn byte(i: u64) -> u8 {
    (i % PERIOD as u64 * 31 % PERIOD as u64) as u8
}

/// The pattern for offsets `0..PERIOD + span`: any `span` bytes of the stream are one
/// slice of it.
pub struct Pattern {
    bytes: Vec<u8>,
    span: usize,
}

impl Pattern {
    pub fn new(span: usize) -> Pattern {
        Pattern {
            bytes: (0..(PERIOD + span) as u64).map(byte).collect(),
            span,
        }
    }

    /// Bytes `offset..offset + len` of the stream (`len` at most the span).
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % PERIOD as u64) as usize;
        &self.bytes[start..start + len.min(self.span)]
    }

    pub fn span(&self) -> usize {
        self.span
    }
}

/// What a sink saw of one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Bytes received.
    pub bytes: u64,
    /// Bytes that differ from the pattern.
    pub bad: u64,
    /// Offset of the first differing byte.
    pub first_bad: Option<u64>,
}

impl core::fmt::Display for Verdict {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.first_bad {
            None => write!(f, "{} bytes, pattern intact", self.bytes),
            Some(at) => write!(
                f,
                "{} bytes, {} differ from the pattern (first at offset {at})",
                self.bytes, self.bad
            ),
        }
    }
}

/// Checks a stream against the pattern as it arrives, in pieces of any size.
pub struct Check {
    pattern: Pattern,
    verdict: Verdict,
}

impl Default for Check {
    fn default() -> Check {
        Check::new()
    }
}

impl Check {
    pub fn new() -> Check {
        Check {
            pattern: Pattern::new(4096),
            verdict: Verdict::default(),
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = data.len().min(self.pattern.span());
            let (piece, rest) = data.split_at(n);
            let want = self.pattern.at(self.verdict.bytes, n);
            if piece != want {
                for (k, (a, b)) in piece.iter().zip(want).enumerate() {
                    if a != b {
                        self.verdict.bad += 1;
                        self.verdict
                            .first_bad
                            .get_or_insert(self.verdict.bytes + k as u64);
                    }
                }
            }
            self.verdict.bytes += n as u64;
            data = rest;
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// The verdict so far, and a fresh check for the next stream.
    pub fn finish(&mut self) -> Verdict {
        core::mem::take(&mut self.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_types::rng::SplitMix64;

    fn stream(len: u64) -> Vec<u8> {
        (0..len).map(byte).collect()
    }

    #[test]
    fn the_pattern_is_the_documented_formula_and_slices_agree_with_it() {
        for i in [0u64, 1, 250, 251, 252, 10_000, u64::MAX - 3] {
            assert_eq!(u64::from(byte(i)), (i % 251) * 31 % 251);
        }
        let p = Pattern::new(1000);
        for off in [0u64, 7, 250, 251, 4_000_000_003] {
            let s = p.at(off, 1000);
            assert_eq!(s.len(), 1000);
            for (k, b) in s.iter().enumerate() {
                assert_eq!(*b, byte(off + k as u64), "offset {off} + {k}");
            }
        }
        assert_eq!(p.at(3, 5000).len(), 1000, "at most the span");
    }

    #[test]
    fn an_intact_stream_in_random_pieces_is_intact() {
        let data = stream(100_000);
        let mut rng = SplitMix64::new(5);
        let mut c = Check::new();
        let mut at = 0;
        while at < data.len() {
            let n = ((rng.next_u64() % 9000) as usize + 1).min(data.len() - at);
            c.feed(&data[at..at + n]);
            at += n;
        }
        let v = c.finish();
        assert_eq!(
            v,
            Verdict {
                bytes: 100_000,
                bad: 0,
                first_bad: None
            }
        );
        assert_eq!(v.to_string(), "100000 bytes, pattern intact");
        assert_eq!(c.verdict(), Verdict::default(), "finish starts afresh");
    }

    #[test]
    fn a_flipped_dropped_or_reordered_piece_is_found_where_it_is() {
        let data = stream(50_000);
        // One flipped byte.
        let mut bad = data.clone();
        bad[12_345] ^= 0x40;
        let mut c = Check::new();
        c.feed(&bad);
        let v = c.finish();
        assert_eq!((v.bad, v.first_bad), (1, Some(12_345)));
        assert!(
            v.to_string()
                .contains("1 differ from the pattern (first at offset 12345)")
        );
        // A dropped 1460-byte segment: everything after it is shifted.
        let mut dropped = data[..20_000].to_vec();
        dropped.extend_from_slice(&data[21_460..]);
        c.feed(&dropped);
        let v = c.finish();
        assert_eq!(v.first_bad, Some(20_000));
        assert_eq!(v.bytes, 50_000 - 1460);
        // Two segments swapped.
        let mut swapped = data[..30_000].to_vec();
        swapped.extend_from_slice(&data[31_460..32_920]);
        swapped.extend_from_slice(&data[30_000..31_460]);
        swapped.extend_from_slice(&data[32_920..]);
        c.feed(&swapped);
        let v = c.finish();
        assert_eq!(v.first_bad, Some(30_000));
        assert_eq!(v.bytes, 50_000);
    }
}
