//! Merkle hashing against a straightforward reference and known answers computed
//! outside Rust (`merkle_kat.py`), proofs for every (i, n) and (m, n) with n <= 40,
//! tampering, and the federated root.

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use xdv_audit::merkle::{
    MerkleAccumulator, NODE_DOMAIN, NODE_IV, ProofError, consistency_proof, inclusion_proof,
    leaf_hash, merkle_root, node_hash, verify_consistency, verify_inclusion,
};
use xdv_audit::{FederatedAuditRoot, FederationError};
use xdv_types::{Hash32, NodeId};

const N_MAX: usize = 40;

fn sha(parts: &[&[u8]]) -> Hash32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash32(h.finalize().into())
}

/// Format 2's node, written independently of the crate: the IV from the domain's
/// SHA-256 digest, one `compress256` over `left || right`.
fn reference_node(l: &Hash32, r: &Hash32) -> Hash32 {
    let iv = Sha256::digest(b"xdv-merkle-node-v2");
    let mut state = [0u32; 8];
    for (s, w) in state.iter_mut().zip(iv.chunks_exact(4)) {
        *s = u32::from_be_bytes(w.try_into().unwrap());
    }
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&l.0);
    block[32..].copy_from_slice(&r.0);
    sha2::compress256(&mut state, &[GenericArray::from(block)]);
    let bytes: Vec<u8> = state.iter().flat_map(|w| w.to_be_bytes()).collect();
    Hash32(bytes.try_into().unwrap())
}

/// RFC 6962 §2.1 MTH with format 2's leaf (the entry) and node, written
/// independently of the crate.
fn reference_root(d: &[Hash32]) -> Hash32 {
    if d.is_empty() {
        return sha(&[]);
    }
    if d.len() == 1 {
        return d[0];
    }
    let mut k = 1;
    while k * 2 < d.len() {
        k *= 2;
    }
    reference_node(&reference_root(&d[..k]), &reference_root(&d[k..]))
}

fn hex(h: &Hash32) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn node_hash_is_one_compression_from_the_domain_iv() {
    let iv: Vec<u8> = NODE_IV.iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(iv[..], Sha256::digest(NODE_DOMAIN)[..]);
    assert_eq!(NODE_DOMAIN, b"xdv-merkle-node-v2");
    let d = entries(64);
    for w in d.windows(2) {
        assert_eq!(node_hash(&w[0], &w[1]), reference_node(&w[0], &w[1]));
        // Not RFC 6962's node, nor a plain SHA-256 of the 64 bytes; order matters.
        assert_ne!(node_hash(&w[0], &w[1]), sha(&[&[1], &w[0].0, &w[1].0]));
        assert_ne!(node_hash(&w[0], &w[1]), sha(&[&w[0].0, &w[1].0]));
        assert_ne!(node_hash(&w[0], &w[1]), node_hash(&w[1], &w[0]));
        assert_eq!(leaf_hash(&w[0]), w[0]);
    }
}

/// Known answers from `merkle_kat.py` (Python: hashlib and the compression function
/// written out from FIPS 180-4), for `entries(n)`.
#[test]
fn roots_match_known_answers_computed_in_python() {
    let d = entries(70);
    assert_eq!(
        hex(&node_hash(&d[0], &d[1])),
        "c91097f7292b0eb89ab29013f9e19c2974496a16d5f2f407c7259a0a75f33fcb"
    );
    let known = [
        (
            0,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            1,
            "21207f16497f909e049151a57fb6bdd961759a2a031ee883c3d9a3aad45207c6",
        ),
        (
            2,
            "c91097f7292b0eb89ab29013f9e19c2974496a16d5f2f407c7259a0a75f33fcb",
        ),
        (
            3,
            "d08546793bcaa6898e3d6900e7b0603f34735298a0e09354aad296b7f5b40aab",
        ),
        (
            5,
            "d7b73c0bfb88f73fc7e7c8798dff9498803d00d2d1a42844443c1bc50934de20",
        ),
        (
            8,
            "7c30ebf1a8dc0a686499ab7213f40c4209225cb2a579ddeff3822e97cc114f0a",
        ),
        (
            13,
            "663b24ba41d01d8e1df1f0ccde668257ec97503c790e28c2e6d7b8824aec2527",
        ),
        (
            40,
            "0387bfb781bd3b6e946556dce2ac427b80ad893054313b7167286176603abb44",
        ),
        (
            70,
            "fc1895a43c999db58db09cd5b29b2115e909af32478bad3682e9b46b7b12e23d",
        ),
    ];
    for (n, want) in known {
        assert_eq!(hex(&merkle_root(&d, n).unwrap()), want, "n={n}");
        let mut acc = MerkleAccumulator::new();
        d[..n].iter().for_each(|e| acc.push(e));
        assert_eq!(hex(&acc.root()), want, "accumulator n={n}");
    }
}

fn entries(n: usize) -> Vec<Hash32> {
    (0..n)
        .map(|i| sha(&[b"entry", &(i as u64).to_le_bytes()]))
        .collect()
}

fn flip(h: &Hash32) -> Hash32 {
    let mut x = *h;
    x.0[5] ^= 1;
    x
}

#[test]
fn roots_match_reference_and_accumulator() {
    let d = entries(N_MAX + 30);
    let mut acc = MerkleAccumulator::new();
    assert_eq!(acc.root(), reference_root(&[]));
    for n in 0..=d.len() {
        assert_eq!(
            merkle_root(&d, n).unwrap(),
            reference_root(&d[..n]),
            "n={n}"
        );
        assert_eq!(acc.root(), reference_root(&d[..n]), "acc n={n}");
        if n < d.len() {
            acc.push(&d[n]);
        }
    }
    assert_eq!(merkle_root(&d, d.len() + 1), Err(ProofError::OutOfRange));
}

#[test]
fn inclusion_proofs_verify_and_tampering_fails() {
    let d = entries(N_MAX);
    for n in 1..=N_MAX {
        let root = reference_root(&d[..n]);
        for i in 0..n {
            let p = inclusion_proof(&d, i, n).unwrap();
            verify_inclusion(&d[i], i as u64, n as u64, &p, &root).unwrap();
            assert!(verify_inclusion(&flip(&d[i]), i as u64, n as u64, &p, &root).is_err());
            assert!(verify_inclusion(&d[i], i as u64, n as u64, &p, &flip(&root)).is_err());
            for k in 0..p.len() {
                let mut t = p.clone();
                t[k] = flip(&t[k]);
                assert!(verify_inclusion(&d[i], i as u64, n as u64, &t, &root).is_err());
            }
            let mut longer = p.clone();
            longer.push(root);
            assert!(verify_inclusion(&d[i], i as u64, n as u64, &longer, &root).is_err());
            if !p.is_empty() {
                assert!(verify_inclusion(&d[i], i as u64, n as u64, &p[1..], &root).is_err());
            }
            if n > 1 {
                let other = (i + 1) % n;
                assert!(verify_inclusion(&d[i], other as u64, n as u64, &p, &root).is_err());
            }
        }
        assert_eq!(inclusion_proof(&d, n, n), Err(ProofError::OutOfRange));
    }
}

#[test]
fn consistency_proofs_verify_and_tampering_fails() {
    let d = entries(N_MAX);
    for n in 1..=N_MAX {
        let new_root = reference_root(&d[..n]);
        for m in 1..=n {
            let old_root = reference_root(&d[..m]);
            let p = consistency_proof(&d, m, n).unwrap();
            verify_consistency(m as u64, n as u64, &old_root, &new_root, &p)
                .unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
            if m < n {
                assert!(
                    verify_consistency(m as u64, n as u64, &flip(&old_root), &new_root, &p)
                        .is_err()
                );
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &flip(&new_root), &p)
                        .is_err()
                );
                for k in 0..p.len() {
                    let mut t = p.clone();
                    t[k] = flip(&t[k]);
                    assert!(
                        verify_consistency(m as u64, n as u64, &old_root, &new_root, &t).is_err(),
                        "m={m} n={n} k={k}"
                    );
                }
                assert!(verify_consistency(m as u64, n as u64, &old_root, &new_root, &[]).is_err());
            } else {
                assert!(p.is_empty());
            }
        }
    }
    assert_eq!(consistency_proof(&d, 0, 3), Err(ProofError::OutOfRange));
    assert_eq!(consistency_proof(&d, 4, 3), Err(ProofError::OutOfRange));
}

#[test]
fn federated_root_is_ordered_and_checked() {
    let r = |i: u8| Hash32([i; 32]);
    let f = FederatedAuditRoot::new(vec![(NodeId(3), r(3)), (NodeId(1), r(1))]).unwrap();
    assert_eq!(f.node_roots[0].0, NodeId(1));
    let want = sha(&[
        b"xdv-federated-root-v1",
        &1u32.to_le_bytes(),
        &r(1).0,
        &3u32.to_le_bytes(),
        &r(3).0,
    ]);
    assert_eq!(f.global_root, want);
    f.verify().unwrap();
    let mut bad = f.clone();
    bad.node_roots[1].1 = r(9);
    assert_eq!(bad.verify(), Err(FederationError::RootMismatch));
    let mut unsorted = f.clone();
    unsorted.node_roots.swap(0, 1);
    assert_eq!(unsorted.verify(), Err(FederationError::NotSorted));
    assert_eq!(
        FederatedAuditRoot::new(vec![(NodeId(2), r(1)), (NodeId(2), r(2))]),
        Err(FederationError::DuplicateNode(NodeId(2)))
    );
}

/// The proof from an accumulator and the new entries alone is the proof from all the
/// entries, for every pair of sizes up to 70, and it verifies.
#[test]
fn consistency_proofs_from_an_accumulator_equal_the_full_ones() {
    let d: Vec<Hash32> = (0..70u8)
        .map(|i| Hash32([i.wrapping_mul(37); 32]))
        .collect();
    for m in 1..=d.len() {
        let mut acc = MerkleAccumulator::new();
        for e in &d[..m] {
            acc.push(e);
        }
        let old_root = acc.root();
        for n in m..=d.len() {
            let p = acc.consistency_proof_to(&d[m..n]).unwrap();
            assert_eq!(p, consistency_proof(&d, m, n).unwrap(), "{m} -> {n}");
            let new_root = merkle_root(&d, n).unwrap();
            verify_consistency(m as u64, n as u64, &old_root, &new_root, &p).unwrap();
        }
    }
    assert_eq!(
        MerkleAccumulator::new().consistency_proof_to(&d[..3]),
        Err(ProofError::OutOfRange)
    );
}
