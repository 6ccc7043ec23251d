#!/usr/bin/env python3
"""Known-answer values for `tests/merkle.rs`, computed independently of the crate.

Audit format 2's Merkle tree (docs/audit.md, "Merkle tree"): a leaf is the entry
(a record hash) itself; a node is ONE SHA-256 compression of `left || right` (64
bytes, one block, no padding) from the IV `SHA-256("xdv-merkle-node-v2")` read as
eight big-endian words; the empty tree's root is SHA-256(""). The compression
function is written out here from FIPS 180-4 and checked against hashlib first.

Run: python3 kernel/audit/tests/merkle_kat.py
"""
import hashlib
import struct

K = [
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
]
H0 = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
M = 0xFFFFFFFF


def rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & M


def compress(state, block):
    assert len(block) == 64
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & M)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t]) & M
        t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & M
        a, b, c, d, e, f, g, h = (t1 + t2) & M, a, b, c, (d + t1) & M, e, f, g
    return [(x + y) & M for x, y in zip(state, [a, b, c, d, e, f, g, h])]


def words_to_bytes(s):
    return struct.pack(">8I", *s)


# The compression function above is SHA-256's: check it on one- and two-block messages.
for msg in [b"", b"abc", bytes(range(55)), bytes(range(56)), bytes(range(100))]:
    padded = msg + b"\x80" + b"\x00" * ((55 - len(msg)) % 64) + struct.pack(">Q", 8 * len(msg))
    s = H0
    for i in range(0, len(padded), 64):
        s = compress(s, padded[i : i + 64])
    assert words_to_bytes(s) == hashlib.sha256(msg).digest(), msg

NODE_IV = list(struct.unpack(">8I", hashlib.sha256(b"xdv-merkle-node-v2").digest()))


def node(l, r):
    return words_to_bytes(compress(NODE_IV, l + r))


def root(d):
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return node(root(d[:k]), root(d[k:]))


def entry(i):
    return hashlib.sha256(b"entry" + struct.pack("<Q", i)).digest()


print("NODE_IV:", ", ".join(f"0x{w:08x}" for w in NODE_IV))
print("node(entry 0, entry 1):", node(entry(0), entry(1)).hex())
for n in [0, 1, 2, 3, 5, 8, 13, 40, 70]:
    print(f"root of entries(..{n}):", root([entry(i) for i in range(n)]).hex())
