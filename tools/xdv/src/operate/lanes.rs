//! SHA-256 of four messages at once: four independent streams interleaved through
//! the SHA-NI instructions of one core.
//!
//! One SHA-256 stream is bound by the latency of `sha256rnds2` (each round pair
//! needs the previous one's result); four independent streams keep the unit busy,
//! so a core hashes ~1.5× more short messages (record bytes, Merkle leaves and
//! nodes) per second than through `sha2` one message at a time. Plain SHA-256,
//! FIPS 180-4 padding: every digest equals `Sha256::digest` of the same bytes (the
//! tests check it over many lengths). Without SHA-NI (or off x86-64) each message
//! is hashed by `sha2`.

use sha2::{Digest, Sha256};
use xdv_audit::merkle::{leaf_hash, node_hash};
use xdv_types::Hash32;

/// SHA-256 of each of the four messages.
pub fn digest4(msgs: [&[u8]; 4]) -> [Hash32; 4] {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        return shani::digest4(msgs);
    }
    msgs.map(|m| Hash32(Sha256::digest(m).into()))
}

/// RFC 6962 leaf hashes `SHA-256(0x00 || entry)` of four entries (one block each,
/// built in place: no general padding per message).
pub fn leaves4(entries: [&Hash32; 4]) -> [Hash32; 4] {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        return shani::leaves4(entries);
    }
    entries.map(leaf_hash)
}

/// RFC 6962 node hashes `SHA-256(0x01 || left || right)` of four pairs (two blocks
/// each, built in place).
pub fn nodes4(pairs: [(&Hash32, &Hash32); 4]) -> [Hash32; 4] {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        return shani::nodes4(pairs);
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

    /// One message's blocks: its whole 64-byte blocks, then one or two padded
    /// tail blocks.
    struct Blocks<'m> {
        msg: &'m [u8],
        full: usize,
        tail: [u8; 128],
        total: usize,
    }

    impl<'m> Blocks<'m> {
        fn new(msg: &'m [u8]) -> Blocks<'m> {
            let full = msg.len() / 64;
            let rest = &msg[full * 64..];
            let mut tail = [0u8; 128];
            tail[..rest.len()].copy_from_slice(rest);
            tail[rest.len()] = 0x80;
            let tail_blocks = if rest.len() + 9 <= 64 { 1 } else { 2 };
            let bits = (msg.len() as u64).wrapping_mul(8);
            tail[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits.to_be_bytes());
            Blocks {
                msg,
                full,
                tail,
                total: full + tail_blocks,
            }
        }

        fn block(&self, i: usize) -> &[u8; 64] {
            let b = if i < self.full {
                &self.msg[i * 64..i * 64 + 64]
            } else {
                let t = i - self.full;
                &self.tail[t * 64..t * 64 + 64]
            };
            b.try_into().expect("64 bytes")
        }
    }

    pub fn digest4(msgs: [&[u8]; 4]) -> [Hash32; 4] {
        let blocks = msgs.map(Blocks::new);
        let most = blocks.iter().map(|b| b.total).max().unwrap_or(0);
        let mut states = [H0; 4];
        if blocks.iter().all(|b| b.total == most) {
            // The common case (records of one size class, Merkle leaves, nodes).
            for i in 0..most {
                let ins = [
                    blocks[0].block(i),
                    blocks[1].block(i),
                    blocks[2].block(i),
                    blocks[3].block(i),
                ];
                // SAFETY: as below.
                unsafe { compress4(&mut states, ins) };
            }
            return states.map(to_hash);
        }
        let zero = [0u8; 64];
        for i in 0..most {
            let mut scratch = [[0u32; 8]; 4];
            let ins = [0, 1, 2, 3].map(|j| {
                if i < blocks[j].total {
                    blocks[j].block(i)
                } else {
                    &zero
                }
            });
            // Lanes already done work on a scratch state (their result is dropped).
            for (j, s) in scratch.iter_mut().enumerate() {
                if i < blocks[j].total {
                    *s = states[j];
                }
            }
            // SAFETY: `available()` (checked by the only caller, `super::digest4`)
            // found the CPU features `compress4` is compiled for.
            unsafe { compress4(&mut scratch, ins) };
            for (j, s) in scratch.iter().enumerate() {
                if i < blocks[j].total {
                    states[j] = *s;
                }
            }
        }
        states.map(to_hash)
    }

    /// Four one-block leaves: `0x00 || entry`, `0x80`, zeros, the length (264 bits).
    pub fn leaves4(entries: [&Hash32; 4]) -> [Hash32; 4] {
        let mut blocks = [[0u8; 64]; 4];
        for (b, e) in blocks.iter_mut().zip(entries) {
            b[1..33].copy_from_slice(&e.0);
            b[33] = 0x80;
            b[56..].copy_from_slice(&(33u64 * 8).to_be_bytes());
        }
        let mut states = [H0; 4];
        let [b0, b1, b2, b3] = &blocks;
        // SAFETY: `available()` (checked by the only caller, `super::leaves4`) found
        // the CPU features `compress4` is compiled for.
        unsafe { compress4(&mut states, [b0, b1, b2, b3]) };
        states.map(to_hash)
    }

    /// Four two-block nodes: `0x01 || left || right[..31]`, then `right[31]`,
    /// `0x80`, zeros, the length (520 bits).
    pub fn nodes4(pairs: [(&Hash32, &Hash32); 4]) -> [Hash32; 4] {
        let mut first = [[0u8; 64]; 4];
        let mut second = [[0u8; 64]; 4];
        for ((a, b), (l, r)) in first.iter_mut().zip(second.iter_mut()).zip(pairs) {
            a[0] = 1;
            a[1..33].copy_from_slice(&l.0);
            a[33..64].copy_from_slice(&r.0[..31]);
            b[0] = r.0[31];
            b[1] = 0x80;
            b[56..].copy_from_slice(&(65u64 * 8).to_be_bytes());
        }
        let mut states = [H0; 4];
        let [a0, a1, a2, a3] = &first;
        let [b0, b1, b2, b3] = &second;
        // SAFETY: `available()` (checked by the only caller, `super::nodes4`) found
        // the CPU features `compress4` is compiled for.
        unsafe {
            compress4(&mut states, [a0, a1, a2, a3]);
            compress4(&mut states, [b0, b1, b2, b3]);
        }
        states.map(to_hash)
    }

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

    /// One block of each of four streams (the state layout of FIPS 180-4, the
    /// instruction sequence of Intel's SHA extensions reference, as in `sha2`).
    ///
    /// # Safety
    /// The CPU must have SHA-NI, SSE2, SSSE3 and SSE4.1.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress4(states: &mut [[u32; 8]; 4], blocks: [&[u8; 64]; 4]) {
        let mask = _mm_set_epi64x(
            0x0C0D_0E0F_0809_0A0Bu64 as i64,
            0x0405_0607_0001_0203u64 as i64,
        );
        let mut abef = [_mm_setzero_si128(); 4];
        let mut cdgh = [_mm_setzero_si128(); 4];
        let mut w = [[_mm_setzero_si128(); 4]; 4];
        for j in 0..4 {
            // SAFETY: unaligned loads of 16 bytes from a [u32; 8] (32 bytes) and
            // from a [u8; 64] block, all in bounds.
            let (dcba, efgh) = unsafe {
                let p = states[j].as_ptr() as *const __m128i;
                (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)))
            };
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(efgh, 0x1B);
            abef[j] = _mm_alignr_epi8(cdab, efgh, 8);
            cdgh[j] = _mm_blend_epi16(efgh, cdab, 0xF0);
            for (q, wq) in w[j].iter_mut().enumerate() {
                // SAFETY: as above (q < 4: bytes 16q..16q+16 of 64).
                let v = unsafe { _mm_loadu_si128((blocks[j].as_ptr() as *const __m128i).add(q)) };
                *wq = _mm_shuffle_epi8(v, mask);
            }
        }
        let (abef_save, cdgh_save) = (abef, cdgh);
        for i in 0..16 {
            // SAFETY: 4i + 4 <= 64 words of K.
            let kv = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * i) as *const __m128i) };
            let mut t = [_mm_setzero_si128(); 4];
            for j in 0..4 {
                if i >= 4 {
                    let wj = &mut w[j];
                    wj[i % 4] =
                        schedule!(wj[i % 4], wj[(i + 1) % 4], wj[(i + 2) % 4], wj[(i + 3) % 4]);
                }
                t[j] = _mm_add_epi32(w[j][i % 4], kv);
            }
            for j in 0..4 {
                cdgh[j] = _mm_sha256rnds2_epu32(cdgh[j], abef[j], t[j]);
            }
            for j in 0..4 {
                abef[j] = _mm_sha256rnds2_epu32(abef[j], cdgh[j], _mm_shuffle_epi32(t[j], 0x0E));
            }
        }
        for j in 0..4 {
            let abef = _mm_add_epi32(abef[j], abef_save[j]);
            let cdgh = _mm_add_epi32(cdgh[j], cdgh_save[j]);
            let feba = _mm_shuffle_epi32(abef, 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgef = _mm_alignr_epi8(dchg, feba, 8);
            // SAFETY: unaligned 16-byte stores into a [u32; 8], in bounds.
            unsafe {
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
        }
        // The Merkle shapes: leaves and nodes built in place.
        let h = |i: usize| Hash32(Sha256::digest(&data[i..i + 7]).into());
        for round in 0..64 {
            let e = [0, 1, 2, 3].map(|k| h(round * 4 + k));
            let l = e.each_ref();
            assert_eq!(leaves4(l), e.map(|x| leaf_hash(&x)), "leaves {round}");
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
