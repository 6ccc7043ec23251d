//! SHA-256 of four messages at once: four independent streams interleaved through
//! the SHA-NI instructions of one core.
//!
//! One SHA-256 stream is bound by the latency of `sha256rnds2` (each round pair
//! needs the previous one's result); four independent streams keep the unit busy,
//! so a core hashes ~1.5× more short messages (record bytes, Merkle nodes) per
//! second than through `sha2` one message at a time. Plain SHA-256, FIPS 180-4
//! padding: every digest equals `Sha256::digest` of the same bytes (the tests check
//! it over many lengths); a Merkle node is audit format 2's one compression from
//! `NODE_IV` ([`xdv_audit::merkle::node_hash`]). Without SHA-NI (or off x86-64)
//! each message is hashed by `sha2`.

use sha2::{Digest, Sha256};
use xdv_audit::merkle::node_hash;
use xdv_types::Hash32;

/// SHA-256 of each of the four messages.
pub fn digest4(msgs: [&[u8]; 4]) -> [Hash32; 4] {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: `available()` found the CPU features `shani` is compiled for.
        return unsafe { shani::digest4(msgs) };
    }
    msgs.map(|m| Hash32(Sha256::digest(m).into()))
}

/// SHA-256 of `buf[ranges[k]]` for each k. Same digests as [`digest4`]; reads the
/// bytes of `buf` after each message too (up to 64), so the last block of a
/// message is taken straight from `buf` instead of copied out.
pub fn digest4_in(buf: &[u8], ranges: [(usize, usize); 4]) -> [Hash32; 4] {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: `available()` found the CPU features `shani` is compiled for.
        return unsafe { shani::digest4_in(buf, ranges) };
    }
    ranges.map(|(a, b)| Hash32(Sha256::digest(&buf[a..b]).into()))
}

/// Merkle node hashes ([`node_hash`]: one compression of `left || right` from
/// `NODE_IV`, no padding) of four pairs.
pub fn nodes4(pairs: [(&Hash32, &Hash32); 4]) -> [Hash32; 4] {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: `available()` found the CPU features `shani` is compiled for.
        return unsafe { shani::nodes4(pairs) };
    }
    pairs.map(|(l, r)| node_hash(l, r))
}

/// SHA-256 of every message of `msgs`, four at a time, into `out` (same length).
pub fn digest_all(msgs: &[&[u8]], out: &mut [Hash32]) {
    assert_eq!(msgs.len(), out.len());
    let mut m = msgs.chunks_exact(4);
    let mut o = out.chunks_exact_mut(4);
    for (m, o) in (&mut m).zip(&mut o) {
        o.copy_from_slice(&digest4([m[0], m[1], m[2], m[3]]));
    }
    for (m, o) in m.remainder().iter().zip(o.into_remainder()) {
        *o = Hash32(Sha256::digest(m).into());
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use core::arch::x86_64::*;
    use std::sync::OnceLock;
    use xdv_audit::merkle::NODE_IV;
    use xdv_types::Hash32;

    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub fn available() -> bool {
        static SHANI: OnceLock<bool> = OnceLock::new();
        *SHANI.get_or_init(|| {
            std::arch::is_x86_feature_detected!("sha")
                && std::arch::is_x86_feature_detected!("sse2")
                && std::arch::is_x86_feature_detected!("ssse3")
                && std::arch::is_x86_feature_detected!("sse4.1")
        })
    }

    // Everything below the four entry points is `#[inline(always)]` without target
    // features of its own: inlined into an entry point (which has them), the
    // intrinsics compile with that entry point's features, and the message words
    // stay in registers (no closures: a closure would not inherit the features).

    /// Byte order of the message words: each 32-bit word big-endian.
    #[inline(always)]
    fn swap_mask() -> __m128i {
        // SAFETY: SSE2 is part of every x86-64 CPU.
        unsafe {
            _mm_set_epi64x(
                0x0C0D_0E0F_0809_0A0Bu64 as i64,
                0x0405_0607_0001_0203u64 as i64,
            )
        }
    }

    /// For each length `r` of a message's last partial block: 64 bytes that keep
    /// bytes `0..r`, then 64 bytes with the padding byte 0x80 at `r`.
    #[repr(C, align(64))]
    struct TailTable([[u8; 128]; 64]);

    static TAIL: TailTable = {
        let mut t = [[0u8; 128]; 64];
        let mut r = 0;
        while r < 64 {
            let mut k = 0;
            while k < r {
                t[r][k] = 0xFF;
                k += 1;
            }
            t[r][64 + r] = 0x80;
            r += 1;
        }
        TailTable(t)
    };

    /// One message's blocks as words: its whole 64-byte blocks, then one or two
    /// padded tail blocks. `after`: the message's last partial block and whatever
    /// bytes follow it (64 bytes), when the caller has them; the tail is then
    /// masked in registers instead of copied.
    struct Lane<'m> {
        msg: &'m [u8],
        full: usize,
        rest: usize,
        total: usize,
        after: Option<&'m [u8; 64]>,
    }

    impl<'m> Lane<'m> {
        #[inline(always)]
        fn new(msg: &'m [u8], after: Option<&'m [u8; 64]>) -> Lane<'m> {
            let full = msg.len() / 64;
            let rest = msg.len() % 64;
            Lane {
                msg,
                full,
                rest,
                total: full + if rest + 9 <= 64 { 1 } else { 2 },
                after,
            }
        }

        /// Message words of block `i` (`i < total`).
        ///
        /// # Safety
        /// As [`digest4`].
        #[inline(always)]
        unsafe fn words(&self, i: usize) -> [__m128i; 4] {
            if i < self.full {
                let b: &[u8; 64] = self.msg[i * 64..i * 64 + 64].try_into().expect("64 bytes");
                // SAFETY: as this function.
                return unsafe { load_words(b) };
            }
            let bits = (self.msg.len() as u64).wrapping_mul(8);
            // SAFETY: as this function.
            unsafe {
                let length = _mm_set_epi32(bits as i32, (bits >> 32) as i32, 0, 0);
                if i > self.full {
                    let z = _mm_setzero_si128();
                    return [z, z, z, length];
                }
                let mut copy = [0u8; 64];
                let raw: &[u8; 64] = match self.after {
                    Some(a) => a,
                    None => {
                        copy[..self.rest].copy_from_slice(&self.msg[self.full * 64..]);
                        &copy
                    }
                };
                let mask = swap_mask();
                let p = raw.as_ptr() as *const __m128i;
                let t = TAIL.0[self.rest].as_ptr() as *const __m128i;
                let mut w = [_mm_setzero_si128(); 4];
                for (q, wq) in w.iter_mut().enumerate() {
                    // Bytes 16q..16q + 16 of 64, in bounds; the table's rows are
                    // 128 bytes: the mask, then the padding byte.
                    let v = _mm_loadu_si128(p.add(q));
                    let keep = _mm_load_si128(t.add(q));
                    let pad = _mm_load_si128(t.add(4 + q));
                    *wq = _mm_shuffle_epi8(_mm_or_si128(_mm_and_si128(v, keep), pad), mask);
                }
                if self.total == self.full + 1 {
                    w[3] = _mm_or_si128(w[3], length);
                }
                w
            }
        }
    }

    /// The words of a 64-byte block.
    ///
    /// # Safety
    /// As [`digest4`].
    #[inline(always)]
    unsafe fn load_words(b: &[u8; 64]) -> [__m128i; 4] {
        let p = b.as_ptr() as *const __m128i;
        // SAFETY: four 16-byte loads inside the 64 bytes; features as this function.
        unsafe {
            let mask = swap_mask();
            [
                _mm_shuffle_epi8(_mm_loadu_si128(p), mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), mask),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), mask),
            ]
        }
    }

    /// SHA-256 of four messages given as lanes.
    ///
    /// # Safety
    /// As [`digest4`].
    #[inline(always)]
    unsafe fn digest_lanes(lanes: [Lane<'_>; 4]) -> [Hash32; 4] {
        let most = lanes.iter().map(|l| l.total).max().unwrap_or(0);
        let mut states = [H0; 4];
        let same = lanes.iter().all(|l| l.total == most);
        for i in 0..most {
            // SAFETY: as this function.
            unsafe {
                let z = [_mm_setzero_si128(); 4];
                let mut w = [z; 4];
                for j in 0..4 {
                    if i < lanes[j].total {
                        w[j] = lanes[j].words(i);
                    }
                }
                if same {
                    // The common case (records of one size class).
                    compress4w(&mut states, w);
                    continue;
                }
                // Lanes already done work on a scratch state (their result is dropped).
                let mut scratch = [[0u32; 8]; 4];
                for j in 0..4 {
                    if i < lanes[j].total {
                        scratch[j] = states[j];
                    }
                }
                compress4w(&mut scratch, w);
                for j in 0..4 {
                    if i < lanes[j].total {
                        states[j] = scratch[j];
                    }
                }
            }
        }
        let mut out = [Hash32([0; 32]); 4];
        for j in 0..4 {
            out[j] = to_hash(states[j]);
        }
        out
    }

    /// # Safety
    /// The CPU must have SHA-NI, SSE2, SSSE3 and SSE4.1 ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn digest4(msgs: [&[u8]; 4]) -> [Hash32; 4] {
        let [a, b, c, d] = msgs;
        // SAFETY: as this function.
        unsafe {
            digest_lanes([
                Lane::new(a, None),
                Lane::new(b, None),
                Lane::new(c, None),
                Lane::new(d, None),
            ])
        }
    }

    /// # Safety
    /// As [`digest4`].
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn digest4_in(buf: &[u8], ranges: [(usize, usize); 4]) -> [Hash32; 4] {
        #[inline(always)]
        fn lane(buf: &[u8], (a, b): (usize, usize)) -> Lane<'_> {
            let msg = &buf[a..b];
            let tail = a + msg.len() / 64 * 64;
            let after = buf
                .get(tail..tail + 64)
                .map(|t| t.try_into().expect("64 bytes"));
            Lane::new(msg, after)
        }
        let [a, b, c, d] = ranges;
        // SAFETY: as this function.
        unsafe { digest_lanes([lane(buf, a), lane(buf, b), lane(buf, c), lane(buf, d)]) }
    }

    /// A 32-byte hash as two vectors (bytes 0..16, 16..32).
    ///
    /// # Safety
    /// As [`digest4`].
    #[inline(always)]
    unsafe fn halves(h: &Hash32) -> (__m128i, __m128i) {
        let p = h.0.as_ptr() as *const __m128i;
        // SAFETY: two 16-byte loads inside the 32 bytes.
        unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) }
    }

    /// Four nodes: the block `left || right` (each 32-bit word big-endian), one
    /// compression from `NODE_IV`, built in registers.
    ///
    /// # Safety
    /// As [`digest4`].
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn nodes4(pairs: [(&Hash32, &Hash32); 4]) -> [Hash32; 4] {
        let mask = swap_mask();
        let mut w = [[_mm_setzero_si128(); 4]; 4];
        for k in 0..4 {
            // SAFETY: as this function.
            let ((l_lo, l_hi), (r_lo, r_hi)) = unsafe { (halves(pairs[k].0), halves(pairs[k].1)) };
            w[k] = [
                _mm_shuffle_epi8(l_lo, mask),
                _mm_shuffle_epi8(l_hi, mask),
                _mm_shuffle_epi8(r_lo, mask),
                _mm_shuffle_epi8(r_hi, mask),
            ];
        }
        let mut states = [NODE_IV; 4];
        // SAFETY: as this function.
        unsafe { compress4w(&mut states, w) };
        let mut out = [Hash32([0; 32]); 4];
        for k in 0..4 {
            out[k] = to_hash(states[k]);
        }
        out
    }

    #[inline(always)]
    fn to_hash(s: [u32; 8]) -> Hash32 {
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(s) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        Hash32(out)
    }

    /// The message schedule: the next four words from the last sixteen.
    macro_rules! schedule {
        ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {{
            let t1 = _mm_sha256msg1_epu32($v0, $v1);
            let t2 = _mm_alignr_epi8($v3, $v2, 4);
            _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), $v3)
        }};
    }

    /// One block of each of four streams, given as message words (`w[j]`: the
    /// block of stream j, each word big-endian; the state layout of FIPS 180-4,
    /// the instruction sequence of Intel's SHA extensions reference, as in `sha2`).
    ///
    /// # Safety
    /// As [`digest4`].
    #[inline(always)]
    unsafe fn compress4w(states: &mut [[u32; 8]; 4], mut w: [[__m128i; 4]; 4]) {
        // SAFETY: the CPU features, as this function; the loads and stores are
        // inside `states` and `K`, as commented at each.
        unsafe {
            let mut abef = [_mm_setzero_si128(); 4];
            let mut cdgh = [_mm_setzero_si128(); 4];
            for j in 0..4 {
                // Unaligned loads of 16 bytes from a [u32; 8] (32 bytes).
                let p = states[j].as_ptr() as *const __m128i;
                let (dcba, efgh) = (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)));
                let cdab = _mm_shuffle_epi32(dcba, 0xB1);
                let efgh = _mm_shuffle_epi32(efgh, 0x1B);
                abef[j] = _mm_alignr_epi8(cdab, efgh, 8);
                cdgh[j] = _mm_blend_epi16(efgh, cdab, 0xF0);
            }
            let (abef_save, cdgh_save) = (abef, cdgh);
            // Four rounds of each stream; written out sixteen times (constant
            // indices keep the message words in registers, not an indexed array).
            macro_rules! rounds {
                ($i:literal) => {{
                    // 4i + 4 <= 64 words of K.
                    let kv = _mm_loadu_si128(K.as_ptr().add(4 * $i) as *const __m128i);
                    let mut t = [_mm_setzero_si128(); 4];
                    for j in 0..4 {
                        if $i >= 4 {
                            let wj = &mut w[j];
                            wj[$i % 4] = schedule!(
                                wj[$i % 4],
                                wj[($i + 1) % 4],
                                wj[($i + 2) % 4],
                                wj[($i + 3) % 4]
                            );
                        }
                        t[j] = _mm_add_epi32(w[j][$i % 4], kv);
                    }
                    for j in 0..4 {
                        cdgh[j] = _mm_sha256rnds2_epu32(cdgh[j], abef[j], t[j]);
                    }
                    for j in 0..4 {
                        abef[j] =
                            _mm_sha256rnds2_epu32(abef[j], cdgh[j], _mm_shuffle_epi32(t[j], 0x0E));
                    }
                }};
            }
            rounds!(0);
            rounds!(1);
            rounds!(2);
            rounds!(3);
            rounds!(4);
            rounds!(5);
            rounds!(6);
            rounds!(7);
            rounds!(8);
            rounds!(9);
            rounds!(10);
            rounds!(11);
            rounds!(12);
            rounds!(13);
            rounds!(14);
            rounds!(15);
            for j in 0..4 {
                let abef = _mm_add_epi32(abef[j], abef_save[j]);
                let cdgh = _mm_add_epi32(cdgh[j], cdgh_save[j]);
                let feba = _mm_shuffle_epi32(abef, 0x1B);
                let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
                let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
                let hgef = _mm_alignr_epi8(dchg, feba, 8);
                // Unaligned 16-byte stores into a [u32; 8], in bounds.
                let p = states[j].as_mut_ptr() as *mut __m128i;
                _mm_storeu_si128(p, dcba);
                _mm_storeu_si128(p.add(1), hgef);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest4_is_sha256_for_every_length() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in (0..300).chain([511, 512, 513, 1000, 2177, 3000]) {
            let msgs = [
                &data[..len],
                &data[1..1 + len / 2],
                &data[5..5 + (len * 3 / 4)],
                &data[len / 3..len],
            ];
            let got = digest4(msgs);
            for (m, g) in msgs.iter().zip(got) {
                assert_eq!(g, Hash32(Sha256::digest(m).into()), "len {}", m.len());
            }
            // The same messages inside a buffer, the bytes after them read: with
            // room after each message, and with a message at the very end.
            let ranges = [
                (0, len),
                (1, 1 + len / 2),
                (5, 5 + (len * 3 / 4)),
                (len / 3, len),
            ];
            for buf in [&data[..], &data[..len.max(5 + len * 3 / 4)]] {
                let got = digest4_in(buf, ranges);
                for (&(a, b), g) in ranges.iter().zip(got) {
                    let want = Hash32(Sha256::digest(&buf[a..b]).into());
                    assert_eq!(g, want, "in buffer: {a}..{b} of {}", buf.len());
                }
            }
        }
        // The Merkle node built in place.
        let h = |i: usize| Hash32(Sha256::digest(&data[i..i + 7]).into());
        for round in 0..64 {
            let e = [0, 1, 2, 3].map(|k| h(round * 4 + k));
            let f = [0, 1, 2, 3].map(|k| h(round * 4 + k + 1000));
            let pairs = [0, 1, 2, 3].map(|k| (&e[k], &f[k]));
            assert_eq!(
                nodes4(pairs),
                [0, 1, 2, 3].map(|k| node_hash(&e[k], &f[k])),
                "nodes {round}"
            );
        }
        let msgs: Vec<&[u8]> = (0..23).map(|i| &data[i..i * 50]).collect();
        let mut out = vec![Hash32([0; 32]); msgs.len()];
        digest_all(&msgs, &mut out);
        for (m, g) in msgs.iter().zip(out) {
            assert_eq!(g, Hash32(Sha256::digest(m).into()));
        }
    }
}
