//! Merkle trees over audit records with RFC 6962 / RFC 9162 hashing, and the
//! federated audit root of a cluster.
//!
//! An entry is a record hash; `leaf = SHA-256(0x00 || entry)`,
//! `node = SHA-256(0x01 || left || right)`; a tree of `n > 1` leaves splits at the
//! largest power of two `k < n`; the root of the empty tree is `SHA-256("")`.
//! Proof generation and verification follow RFC 9162 §2.1.3 and §2.1.4.

use alloc::vec::Vec;
use core::fmt;
use sha2::{Digest, Sha256};
use xdv_types::{Hash32, NodeId};

/// Most leaves a tree may have (a proof has at most 64 hashes).
pub const MAX_TREE_SIZE: u64 = 1 << 48;
/// Most node roots in one federated root.
pub const MAX_FEDERATED_NODES: usize = 4096;

const FEDERATION_DOMAIN: &[u8] = b"xdv-federated-root-v1";

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &Hash32) -> Hash32 {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry.0);
    Hash32(h.finalize().into())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash32(h.finalize().into())
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

    /// The RFC 6962 root of the leaves pushed so far.
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
