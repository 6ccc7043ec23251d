//! Remote allocation contracts (seed 000 §4.2, R-DRC): a node asks for resources of a
//! domain on another node. The requester signs the canonical encoding with its Ed25519
//! key; the state machine verifies the signature against the key the requester joined
//! with before it looks at anything else, so an unsigned or forged contract changes
//! nothing but the refusal counter.

use crate::types::{Domain, GlobalTime};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xdv_types::{CapabilityId, Hash32, NodeId, TenantId};

/// Domain separation for contract signatures.
pub const SIGNING_DOMAIN: &[u8] = b"XDV-R-DRC-v1\0";
/// Most resources one contract may name.
pub const MAX_RESOURCES: usize = 64;

/// Longest contract: one day of cluster time.
pub const MAX_CONTRACT_MS: u64 = 24 * 3600 * 1000;

/// R-DRC = (Contract_ID, Requesting_Node, Target_Node, Domain, Resource_Set, Duration,
/// Capability_ID, Logical_Timestamp), plus the tenant that holds it and the request
/// that asked for it. The priority that resolves conflicts is not here: it is the
/// tenant's policy, set by the operator through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub contract_id: u64,
    pub requesting_node: NodeId,
    pub target_node: NodeId,
    /// The tenant that holds it (its tasks may name it).
    pub tenant: TenantId,
    /// The tenant's request sequence number (anti-replay, like a submission's).
    pub request_seq: u64,
    pub domain: Domain,
    /// Resource indices on the target within what it offers for `domain`, sorted,
    /// unique (K: core slots, Q: device containers, Φ: coherence windows).
    pub resource_set: Vec<u16>,
    /// Lifetime in cluster time (ms, see `StateData::clock_ms`) from acceptance.
    pub duration_ms: u64,
    pub capability: CapabilityId,
    pub logical_timestamp: u64,
}

/// The contract id of a tenant's request: the same request always names the same
/// contract (a retried reservation is a duplicate, not a second contract). Below 2^53
/// so JSON readers keep it exact; never 0.
pub fn contract_id_for(tenant: TenantId, request_seq: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(b"xdv-contract-id\0");
    h.update(tenant.0.to_le_bytes());
    h.update(request_seq.to_le_bytes());
    let d = h.finalize();
    let v = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (v & ((1 << 53) - 1)).max(1)
}

impl Contract {
    /// The bytes the requester signs: domain tag + postcard encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::from(SIGNING_DOMAIN);
        // Encoding a plain struct of integers and a Vec into a Vec cannot fail.
        let body = postcard::to_allocvec(self).unwrap_or_default();
        out.extend_from_slice(&body);
        out
    }

    /// SHA-256 of the signed bytes: how audit records on both nodes name it.
    pub fn hash(&self) -> Hash32 {
        Hash32(Sha256::digest(self.signing_bytes()).into())
    }

    /// Signs with a 32-byte Ed25519 seed (host tools and the kernel's node key).
    pub fn sign(self, seed: &[u8; 32]) -> SignedContract {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed));
        let sig = kp.sk.sign(self.signing_bytes(), None);
        SignedContract {
            contract: self,
            signature: *sig,
        }
    }
}

/// A contract and the requester's signature over [`Contract::signing_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedContract {
    pub contract: Contract,
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

impl SignedContract {
    /// True when the signature verifies with `public_key`.
    pub fn verify(&self, public_key: &[u8; 32]) -> bool {
        let pk = ed25519_compact::PublicKey::new(*public_key);
        let sig = ed25519_compact::Signature::new(self.signature);
        pk.verify(self.contract.signing_bytes(), &sig).is_ok()
    }
}

/// Where a contract stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractState {
    Active,
    /// An end is down (seed 000 §6.3); resumes on `NodeUp` if still in force.
    Suspended,
}

/// A contract in force, as the state machine keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractRecord {
    pub contract: Contract,
    pub state: ContractState,
    /// When it was accepted (the applying entry's time).
    pub accepted_at: GlobalTime,
    /// Cluster time (ms) at which it ends.
    pub expires_ms: u64,
}

/// How a contract that was in force ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractEnd {
    /// Displaced by contract `by`, whose tenant has a higher policy priority.
    Preempted { by: u64 },
    /// Released by a party, or because one of its nodes left the cluster.
    Released,
    /// Its duration of cluster time ran out.
    Expired,
    /// The target's device failed (seed 000 §6.1).
    Aborted(String),
    /// A Φ window went unstable (seed 000 §6.2).
    Terminated(String),
}

impl ContractEnd {
    pub fn name(&self) -> &'static str {
        match self {
            ContractEnd::Preempted { .. } => "preempted",
            ContractEnd::Released => "released",
            ContractEnd::Expired => "expired",
            ContractEnd::Aborted(_) => "aborted",
            ContractEnd::Terminated(_) => "terminated",
        }
    }
}

impl core::fmt::Display for ContractEnd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ContractEnd::Preempted { by } => write!(f, "preempted by contract {by}"),
            ContractEnd::Aborted(why) | ContractEnd::Terminated(why) => {
                write!(f, "{}: {why}", self.name())
            }
            other => f.write_str(other.name()),
        }
    }
}

/// A contract that ended, kept (the most recent [`MAX_ENDED_CONTRACTS`]) so its holder
/// can still see how: a preempted holder is told through `contracts`, and a task that
/// names it is refused with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedContract {
    pub contract: Contract,
    pub end: ContractEnd,
    /// Cluster time (ms) and log index at which it ended.
    pub ended_ms: u64,
    pub index: u64,
}

/// Ended contracts the replicated state remembers (the oldest is forgotten first).
pub const MAX_ENDED_CONTRACTS: usize = 256;

/// Serde for a 64-byte array (serde derives only go to 32).
mod sig_bytes {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = Deserialize::deserialize(d)?;
        v.try_into()
            .map_err(|_| D::Error::invalid_length(v.len(), &"64 signature bytes"))
    }
}

/// The Ed25519 public key of a 32-byte seed.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    *ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed)).pk
}
