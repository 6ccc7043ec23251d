//! Remote allocation contracts (seed 000 §4.2, R-DRC): a node asks for resources of a
//! domain on another node. The requester signs the canonical encoding with its Ed25519
//! key; the state machine verifies the signature against the key the requester joined
//! with before it looks at anything else, so an unsigned or forged contract changes
//! nothing but the refusal counter.

use crate::types::{Domain, GlobalTime};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use xdv_types::{CapabilityId, NodeId, Priority};

/// Domain separation for contract signatures.
pub const SIGNING_DOMAIN: &[u8] = b"XDV-R-DRC-v1\0";
/// Most resources one contract may name.
pub const MAX_RESOURCES: usize = 64;

/// R-DRC = (Contract_ID, Requesting_Node, Target_Node, Domain, Resource_Set, Duration,
/// Capability_ID, Logical_Timestamp), plus the policy priority used to resolve conflicts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub contract_id: u64,
    pub requesting_node: NodeId,
    pub target_node: NodeId,
    pub domain: Domain,
    /// Resource indices on the target within its capacity for `domain`, sorted, unique
    /// (K: core slots, Q: device units, Φ: coherence windows).
    pub resource_set: Vec<u16>,
    /// Lifetime in Lamport ticks from `logical_timestamp`.
    pub duration_ticks: u64,
    pub capability: CapabilityId,
    pub logical_timestamp: u64,
    pub priority: Priority,
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

    /// Logical time after which the contract is no longer in force.
    pub fn expires_at(&self) -> u64 {
        self.logical_timestamp.saturating_add(self.duration_ticks)
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
}

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
