//! The body of the `cluster_decode` cargo-fuzz target (`fuzz/`), also run on stable by
//! the smoke test below: everything that decodes bytes from outside — log entries,
//! snapshot images, management requests and responses, peer forwards, discovery
//! reports and answers — must return an
//! error, never panic, and a state fed garbage must stay consistent (its invariants are
//! checked after every entry in debug builds) and agree with a second replica.

use crate::mgmt::{self, Gate, PeerForward, Response, SignedRequest};
use crate::state::{ClusterState, Config};
use crate::types::{Resources, WorkerInfo};
use alloc::vec::Vec;
use xdv_types::{NodeId, TenantId};

fn replica() -> ClusterState {
    replica_with([1; 32])
}

/// A replica whose tenant 1 has `tenant_key`.
fn replica_with(tenant_key: [u8; 32]) -> ClusterState {
    let workers: Vec<WorkerInfo> = (1..=3)
        .map(|n| WorkerInfo {
            node: NodeId(n),
            public_key: [n as u8; 32],
            resources: Resources {
                k_cores: 1,
                q_units: 1,
                phi_windows: 1,
            },
            capabilities: alloc::vec![xdv_types::CapabilityId(1)],
            observer: false,
        })
        .collect();
    // Default config and sorted, valid workers: genesis cannot fail.
    ClusterState::genesis(Config::default(), &workers, &[(TenantId(1), tenant_key)])
        .unwrap_or_else(|e| panic!("fuzz genesis: {e}"))
}

/// Feeds `data` to every decoder and to two replicas; panics only on a real bug.
pub fn fuzz_check(data: &[u8]) {
    let _ = mgmt::decode::<SignedRequest>(data);
    let _ = mgmt::decode::<PeerForward>(data);
    let _ = mgmt::decode::<Response>(data);
    // Discovery datagrams (unauthenticated, from any machine on the peer network).
    if let Ok(r) = crate::discovery::Report::decode(data) {
        assert!(r.encode()[..] == data[..] && r.validate().is_ok());
    }
    if let Ok(a) = crate::discovery::Answer::decode(data) {
        assert!(a.encode()[..] == data[..], "an answer does not re-encode");
    }
    let (mut a, mut b) = (replica(), replica());
    // Each chunk (split at 0xff) is one log entry, with and without the version byte.
    for (i, chunk) in data.split(|&x| x == 0xff).take(64).enumerate() {
        let mut versioned = alloc::vec![crate::command::ENTRY_VERSION];
        versioned.extend_from_slice(chunk);
        for (j, bytes) in [chunk, &versioned[..]].into_iter().enumerate() {
            let index = (i * 2 + j + 1) as u64;
            a.apply(index, bytes);
            b.apply(index, bytes);
        }
    }
    assert!(
        a.hash() == b.hash(),
        "replicas diverged on the same entries"
    );
    let before = a.hash();
    if a.restore_image(data).is_err() {
        assert!(a.hash() == before, "a refused image changed the state");
    }
    if let Ok(req) = mgmt::decode::<SignedRequest>(data) {
        let mut gate = Gate::new(0, [0; 32]);
        let _ = gate.authorize(&b, &req);
    }
}

#[cfg(test)]
mod tests {
    use crate::mgmt::Response;
    /// The first crash cargo-fuzz found: a snapshot image that decodes but whose pending
    /// list disagrees with its tasks (restore asserted instead of refusing it).
    #[test]
    fn regression_inconsistent_snapshot_image_is_refused() {
        super::fuzz_check(&[
            1, 1, 6, 33, 3, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 90, 1, 0, 0, 0,
            0, 1, 1, 0, 1, 1, 52, 235, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 176, 0, 4, 110,
            176,
        ]);
    }

    /// Batch requests (`SubmitBatch`, `AwaitTasks`, `RunBatch`) and their answers, signed and
    /// valid, then every single-byte change and every truncation of them: decoding
    /// and the gate refuse or accept, never panic; a changed request that still
    /// decodes never passes the signature check unless it is the original.
    #[test]
    fn batch_requests_mutated_never_panic() {
        use crate::mgmt::{Request, Submit, TaskReport};
        use crate::types::Work;
        let seed = [7u8; 32];
        let key = crate::public_key(&seed);
        let state = super::replica_with(key);
        let one = Submit {
            timeout_ms: Some(5),
            ..Submit::new(Work::Builtin("hash".into()), alloc::vec![1, 2, 3], 10)
        };
        let who = crate::mgmt::Principal::Tenant(super::TenantId(1));
        let reqs = [
            Request::SubmitBatch(alloc::vec![one.clone(); 3]),
            Request::RunBatch(alloc::vec![one; 2]),
            Request::AwaitTasks {
                tasks: alloc::vec![xdv_types::TaskId(1), xdv_types::TaskId(2)],
            },
        ];
        for r in reqs {
            let signed = super::SignedRequest::sign(0, who, 50, r, &seed);
            let bytes = super::mgmt::encode(&signed);
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut m = bytes.clone();
                    m[i] ^= flip;
                    super::fuzz_check(&m);
                    if let Ok(req) = super::mgmt::decode::<super::SignedRequest>(&m) {
                        let mut gate = super::Gate::new(0, [0; 32]);
                        let verdict = gate.authorize(&state, &req);
                        if req != signed {
                            assert!(
                                verdict.is_err() || !req.verify(&key),
                                "a changed request passed: {req:?}"
                            );
                        }
                    }
                }
                super::fuzz_check(&bytes[..i]);
            }
        }
        let answers = [
            Response::SubmittedBatch {
                tasks: alloc::vec![xdv_types::TaskId(3); 4],
            },
            Response::TaskReports(alloc::vec![TaskReport {
                task: xdv_types::TaskId(3),
                tenant: super::TenantId(1),
                status: crate::state::TaskStatus::Pending,
            }]),
        ];
        for a in answers {
            let bytes = super::mgmt::encode(&a);
            assert_eq!(super::mgmt::decode::<Response>(&bytes), Ok(a));
            for i in 0..bytes.len() {
                let _ = super::mgmt::decode::<Response>(&bytes[..i]);
            }
        }
    }

    /// A bounded, deterministic run of the fuzz body over generated inputs.
    #[test]
    fn fuzz_check_smoke() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for n in 0..3000 {
            let len = n % 400;
            let bytes: alloc::vec::Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            super::fuzz_check(&bytes);
        }
    }
}
