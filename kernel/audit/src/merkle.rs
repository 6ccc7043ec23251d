//! Merkle trees over audit records (audit format 2), with RFC 9162 proofs, and the
//! federated audit root of a cluster.
//!
//! An entry is a record hash. The tree is RFC 6962's (a tree of `n > 1` leaves
//! splits at the largest power of two `k < n`; the root of the empty tree is
//! `SHA-256("")`) with two hashes made cheaper, each by one SHA-256 block:
//!
//! - **leaf = the entry itself** (no `SHA-256(0x00 || entry)`);
//! - **node = one SHA-256 compression of `left || right`** (64 bytes: exactly one
//!   block, no padding, no length) **from [`NODE_IV`]** = `SHA-256("xdv-merkle-node-v2")`
//!   read as eight big-endian words, instead of `SHA-256(0x01 || left || right)`
//!   (65 bytes: two blocks).
//!
//! A record then costs its own hash (about two blocks) and one node block, not five.
//!
//! Why leaves and nodes stay apart (the job of RFC 6962's 0x00/0x01 prefixes): a
//! leaf is a full SHA-256 digest, a Merkle–Damgård chain of compressions that starts
//! at the standard IV with a first block that starts with the record's version
//! byte (`FORMAT_VERSION` = 2), ends with a padded block, and covers at least
//! `MIN_RECORD_BYTES - 32` = 62 bytes. A node is one compression from `NODE_IV` —
//! the chain of the message `pad("xdv-merkle-node-v2") || left || right`, whose
//! first block starts with `x` (0x78). Tracing two equal outputs back call by call,
//! they are equal only if (a) two different compression calls collide, (b) a chain
//! of compressions reaches the standard IV (a preimage), or (c) the two chains are
//! the same calls, which needs a record whose first block is the domain's padded
//! block — impossible, its first byte is the version. So a leaf equals a node only
//! through a collision or preimage of the SHA-256 compression function, the
//! assumption SHA-256's own collision resistance rests on; likewise two different
//! trees of one size have one root only through such a collision, and proofs bind
//! (index, size) to the path length as RFC 9162 does. The empty root `SHA-256("")`
//! is a one-block chain from the standard IV, apart from both (a record is never
//! empty). The entries must therefore be digests of messages that do not start
//! with `pad("xdv-merkle-node-v2")`: record hashes are.
//!
//! Proof generation and verification follow RFC 9162 §2.1.3 and §2.1.4 (those
//! algorithms do not depend on the hash of a leaf or a node).

use alloc::vec::Vec;
use core::fmt;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use xdv_types::{Hash32, NodeId};

/// Most leaves a tree may have (a proof has at most 64 hashes).
pub const MAX_TREE_SIZE: u64 = 1 << 48;
/// Most node roots in one federated root.
pub const MAX_FEDERATED_NODES: usize = 4096;

const FEDERATION_DOMAIN: &[u8] = b"xdv-federated-root-v1";

/// The string whose SHA-256 is [`NODE_IV`].
pub const NODE_DOMAIN: &[u8] = b"xdv-merkle-node-v2";

/// The chaining value a node's compression starts from: `SHA-256("xdv-merkle-node-v2")`
/// as eight big-endian words (a test recomputes it).
pub const NODE_IV: [u32; 8] = [
    0xda2f_1c43,
    0x65b8_338e,
    0x09c6_df59,
    0xbcfe_2042,
    0x5e6b_5191,
    0xafad_dfb9,
    0x1c3e_348d,
    0xdee9_8cbc,
];

/// The leaf of an entry: the entry (a record hash) itself (see the module doc).
#[inline]
pub fn leaf_hash(entry: &Hash32) -> Hash32 {
    *entry
}

/// One SHA-256 compression of the block `left || right` from [`NODE_IV`]; the
/// state as 32 big-endian bytes.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut block = GenericArray::default();
    block[..32].copy_from_slice(&left.0);
    block[32..].copy_from_slice(&right.0);
    let mut state = NODE_IV;
    sha2::compress256(&mut state, core::slice::from_ref(&block));
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    Hash32(out)
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash32 {
    Hash32(Sha256::digest([]).into())
}

/// Why a proof could not be made or did not verify.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProofError {
    /// Index or sizes out of range (`index < size <= entries`, `0 < old <= new`).
    OutOfRange,
    /// The proof has the wrong number of hashes.
    BadLength,
    /// The proof does not lead to the given root(s).
    RootMismatch,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProofError::OutOfRange => "index or tree size out of range",
            ProofError::BadLength => "proof has the wrong number of hashes",
            ProofError::RootMismatch => "proof does not match the root",
        })
    }
}

fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    debug_assert!(k < n && k * 2 >= n);
    k
}

fn root_of(entries: &[Hash32]) -> Hash32 {
    match entries.len() {
        0 => empty_root(),
        1 => leaf_hash(&entries[0]),
        n => {
            let k = split(n);
            node_hash(&root_of(&entries[..k]), &root_of(&entries[k..]))
        }
    }
}

/// Root of the tree over the first `size` entries.
pub fn merkle_root(entries: &[Hash32], size: usize) -> Result<Hash32, ProofError> {
    let prefix = entries.get(..size).ok_or(ProofError::OutOfRange)?;
    Ok(root_of(prefix))
}

fn path(m: usize, d: &[Hash32], out: &mut Vec<Hash32>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(root_of(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root_of(&d[..k]));
    }
}

/// Inclusion proof of entry `index` in the tree of the first `size` entries
/// (RFC 9162 §2.1.3.1), leaf-side first.
pub fn inclusion_proof(
    entries: &[Hash32],
    index: usize,
    size: usize,
) -> Result<Vec<Hash32>, ProofError> {
    if index >= size || size > entries.len() {
        return Err(ProofError::OutOfRange);
    }
    let mut out = Vec::new();
    path(index, &entries[..size], &mut out);
    Ok(out)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    entry: &Hash32,
    index: u64,
    size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<(), ProofError> {
    if index >= size || size > MAX_TREE_SIZE {
        return Err(ProofError::OutOfRange);
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf_hash(entry);
    for p in proof {
        if sn == 0 {
            return Err(ProofError::BadLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::BadLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

fn subproof(m: usize, d: &[Hash32], complete: bool, out: &mut Vec<Hash32>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root_of(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root_of(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root_of(&d[..k]));
    }
}

/// [`subproof`] over entries `lo..lo + n` of a tree whose first `m` (local) entries
/// are known only by the roots `root(lo, hi)` gives (`None`: a range it cannot
/// give, which a consistency proof never asks for).
fn frontier_subproof(
    m: u64,
    lo: u64,
    n: u64,
    complete: bool,
    root: &impl Fn(u64, u64) -> Option<Hash32>,
    out: &mut Vec<Hash32>,
) -> Option<()> {
    if m == n {
        if !complete {
            out.push(root(lo, lo + n)?);
        }
        return Some(());
    }
    let k = split(n as usize) as u64;
    if m <= k {
        frontier_subproof(m, lo, k, complete, root, out)?;
        out.push(root(lo + k, lo + n)?);
    } else {
        frontier_subproof(m - k, lo + k, n - k, false, root, out)?;
        out.push(root(lo, lo + k)?);
    }
    Some(())
}

/// Consistency proof between the trees of the first `old` and first `new` entries
/// (RFC 9162 §2.1.4.1). Empty when `old == new`.
pub fn consistency_proof(
    entries: &[Hash32],
    old: usize,
    new: usize,
) -> Result<Vec<Hash32>, ProofError> {
    if old == 0 || old > new || new > entries.len() {
        return Err(ProofError::OutOfRange);
    }
    let mut out = Vec::new();
    if old < new {
        subproof(old, &entries[..new], true, &mut out);
    }
    Ok(out)
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<(), ProofError> {
    if old == 0 || old > new || new > MAX_TREE_SIZE {
        return Err(ProofError::OutOfRange);
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::BadLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // If old is a power of two, the old root is the first proof element.
    let mut path: Vec<Hash32> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (first, rest) = path.split_first().ok_or(ProofError::BadLength)?;
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::BadLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::BadLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Incremental root of an append-only tree: the roots of the perfect subtrees of
/// the binary decomposition of `len` (at most 64), largest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleAccumulator {
    /// (height, root): a subtree of 2^height leaves.
    stack: Vec<(u32, Hash32)>,
    len: u64,
}

impl MerkleAccumulator {
    pub const fn new() -> MerkleAccumulator {
        MerkleAccumulator {
            stack: Vec::new(),
            len: 0,
        }
    }

    /// Leaves pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one entry (a record hash).
    pub fn push(&mut self, entry: &Hash32) {
        let mut cur = (0u32, leaf_hash(entry));
        while let Some(&(h, top)) = self.stack.last() {
            if h != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (h + 1, node_hash(&top, &cur.1));
        }
        self.stack.push(cur);
        self.len += 1;
        debug_assert_eq!(self.stack.len(), self.len.count_ones() as usize);
    }

    /// The accumulator of `len` leaves from the roots of the perfect subtrees of the
    /// binary decomposition of `len`, largest first (`(height, root)`: a subtree of
    /// `2^height` leaves) — what [`MerkleAccumulator::push`] would have built, when
    /// the subtrees were computed elsewhere (in parallel by a host verifier).
    /// `None` when the heights do not match `len`.
    pub fn from_subtrees(len: u64, stack: Vec<(u32, Hash32)>) -> Option<MerkleAccumulator> {
        let mut bits = (0..64u32).rev().filter(|b| len >> b & 1 == 1);
        let matches = stack.len() == len.count_ones() as usize
            && stack.iter().all(|&(h, _)| bits.next() == Some(h));
        matches.then_some(MerkleAccumulator { stack, len })
    }

    /// The `(height, root)` subtrees, largest first (see [`Self::from_subtrees`]).
    pub fn subtrees(&self) -> &[(u32, Hash32)] {
        &self.stack
    }

    /// The consistency proof ([`consistency_proof`], RFC 9162 §2.1.4.1) from the tree
    /// of the leaves pushed so far (`m` = [`Self::len`]) to the tree of those and
    /// `new` after them — the same hashes `consistency_proof(all, m, m + new.len())`
    /// gives, from this accumulator and the new entries alone: every hash of such a
    /// proof is either one of the old tree's perfect subtrees kept here or a root over
    /// new entries only. So a node that keeps the accumulator of the size it last
    /// published, and the record hashes since, proves its new root extends that one.
    pub fn consistency_proof_to(&self, new: &[Hash32]) -> Result<Vec<Hash32>, ProofError> {
        let m = self.len;
        let n = m + new.len() as u64;
        if m == 0 || n > MAX_TREE_SIZE {
            return Err(ProofError::OutOfRange);
        }
        let mut out = Vec::new();
        if m < n {
            // The old tree's perfect subtrees as [start, end) ranges.
            let mut pieces = Vec::with_capacity(self.stack.len());
            let mut start = 0u64;
            for &(h, r) in &self.stack {
                let end = start + (1u64 << h);
                pieces.push((start, end, r));
                start = end;
            }
            let root = |lo: u64, hi: u64| -> Option<Hash32> {
                if hi <= m {
                    pieces.iter().find(|p| p.0 == lo && p.1 == hi).map(|p| p.2)
                } else if lo >= m {
                    Some(root_of(&new[(lo - m) as usize..(hi - m) as usize]))
                } else {
                    None
                }
            };
            frontier_subproof(m, 0, n, true, &root, &mut out).ok_or(ProofError::OutOfRange)?;
        }
        Ok(out)
    }

    /// The root of the leaves pushed so far.
    pub fn root(&self) -> Hash32 {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut r)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            r = node_hash(left, &r);
        }
        r
    }
}

/// Why a federated root could not be built or did not verify.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FederationError {
    DuplicateNode(NodeId),
    TooManyNodes(usize),
    /// `global_root` is not the hash of `node_roots`.
    RootMismatch,
    /// `node_roots` is not sorted by node id.
    NotSorted,
}

impl fmt::Display for FederationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FederationError::DuplicateNode(n) => write!(f, "node {n} appears twice"),
            FederationError::TooManyNodes(c) => {
                write!(f, "{c} node roots, limit {MAX_FEDERATED_NODES}")
            }
            FederationError::RootMismatch => write!(f, "global root does not match node roots"),
            FederationError::NotSorted => write!(f, "node roots not in node-id order"),
        }
    }
}

/// The cluster's combined audit root: every node's Merkle root, in node-id order,
/// and `global_root = SHA-256("xdv-federated-root-v1" || for each: node LE u32 || root)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FederatedAuditRoot {
    pub node_roots: Vec<(NodeId, Hash32)>,
    pub global_root: Hash32,
}

fn federated_hash(node_roots: &[(NodeId, Hash32)]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(FEDERATION_DOMAIN);
    for (node, root) in node_roots {
        h.update(node.0.to_le_bytes());
        h.update(root.0);
    }
    Hash32(h.finalize().into())
}

impl FederatedAuditRoot {
    /// Sorts by node id and computes the global root; rejects duplicate node ids.
    pub fn new(mut node_roots: Vec<(NodeId, Hash32)>) -> Result<Self, FederationError> {
        if node_roots.len() > MAX_FEDERATED_NODES {
            return Err(FederationError::TooManyNodes(node_roots.len()));
        }
        node_roots.sort_by_key(|(n, _)| *n);
        if let Some(w) = node_roots.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(FederationError::DuplicateNode(w[0].0));
        }
        let global_root = federated_hash(&node_roots);
        Ok(FederatedAuditRoot {
            node_roots,
            global_root,
        })
    }

    /// Checks order, uniqueness, the size limit and the global root.
    pub fn verify(&self) -> Result<(), FederationError> {
        if self.node_roots.len() > MAX_FEDERATED_NODES {
            return Err(FederationError::TooManyNodes(self.node_roots.len()));
        }
        for w in self.node_roots.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(FederationError::DuplicateNode(w[0].0));
            }
            if w[0].0 > w[1].0 {
                return Err(FederationError::NotSorted);
            }
        }
        if federated_hash(&self.node_roots) != self.global_root {
            return Err(FederationError::RootMismatch);
        }
        Ok(())
    }
}
