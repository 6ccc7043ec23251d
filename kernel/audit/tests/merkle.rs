//! Merkle hashing against a straightforward reference, proofs for every (i, n) and
//! (m, n) with n <= 40, tampering, and the federated root.

use sha2::{Digest, Sha256};
use xdv_audit::merkle::{
    MerkleAccumulator, ProofError, consistency_proof, inclusion_proof, merkle_root,
    verify_consistency, verify_inclusion,
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

/// RFC 6962 §2.1 MTH, written independently of the crate.
fn reference_root(d: &[Hash32]) -> Hash32 {
    if d.is_empty() {
        return sha(&[]);
    }
    if d.len() == 1 {
        return sha(&[&[0], &d[0].0]);
    }
    let mut k = 1;
    while k * 2 < d.len() {
        k *= 2;
    }
    sha(&[&[1], &reference_root(&d[..k]).0, &reference_root(&d[k..]).0])
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
