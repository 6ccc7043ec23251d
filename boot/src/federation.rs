//! The federation section of a provisioning module (issue 16): whether this node is a
//! gate or a member cluster's node, and the other side's nodes with their cluster ids
//! and public keys (the transport authenticates them like members). It follows the
//! provisioning record in the same boot module (`cargo xdv up --clusters/--gates`
//! appends it); a module without it is a plain cluster node, exactly as before.
//!
//! Layout (little-endian, fixed records; total length exact):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `XDVFED\0\0` |
//! | 8 | 2 | format version (1) |
//! | 10 | 1 | role: 1 gate, 2 member |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 4 | gate group's cluster id |
//! | 16 | 4 | period ms: a gate's dispatch round, a member leader's heartbeat |
//! | 20 | 4 | route scale ‰: the router's hold-down, degrade confirmation and cooldown × this / 1000 (1000: the seed's) |
//! | 24 | 2 | peer count P (1..=[`MAX_FED_PEERS`]) |
//! | 26 | 2 | reserved, 0 |
//! | 28 | 40·P | peers: node id (4), cluster id (4), Ed25519 public key (32), sorted by node id |
//! | end−32 | 32 | SHA-256 of every byte before it |
//!
//! A gate's peers are every member cluster's nodes (their own cluster ids); a member's
//! peers are the gate group's nodes (cluster id = the gate group's).

use core::fmt;
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"XDVFED\0\0";
pub const VERSION: u16 = 1;
pub const MAX_FED_PEERS: usize = 16;
const HEADER_BYTES: usize = 28;
const PEER_BYTES: usize = 40;
/// Largest possible section.
pub const MAX_BYTES: usize = HEADER_BYTES + MAX_FED_PEERS * PEER_BYTES + 32;

/// This node's part in the federation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FedRole {
    Gate,
    Member,
}

/// A node on the other side of the federation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct FedPeer {
    pub node: u32,
    pub cluster: u32,
    pub public_key: [u8; 32],
}

/// A validated federation section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FedSection {
    pub role: FedRole,
    pub gate_cluster: u32,
    pub period_ms: u32,
    pub route_per_mille: u32,
    peers: [FedPeer; MAX_FED_PEERS],
    peer_count: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FedError {
    TooShort(usize),
    BadMagic,
    UnsupportedVersion(u16),
    BadRole(u8),
    Reserved,
    BadPeerCount(usize),
    LengthMismatch { expected: usize, got: usize },
    BadChecksum,
    UnsortedOrDuplicate(u32),
    ZeroPeriod,
}

impl fmt::Display for FedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FedError::TooShort(n) => write!(f, "federation section is only {n} bytes"),
            FedError::BadMagic => f.write_str("federation section has the wrong magic"),
            FedError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "federation section version {v} is not supported (need {VERSION})"
                )
            }
            FedError::BadRole(r) => {
                write!(f, "federation role {r} is neither 1 (gate) nor 2 (member)")
            }
            FedError::Reserved => f.write_str("reserved federation field is not zero"),
            FedError::BadPeerCount(n) => {
                write!(f, "{n} federation peers is outside 1..={MAX_FED_PEERS}")
            }
            FedError::LengthMismatch { expected, got } => {
                write!(
                    f,
                    "federation section is {got} bytes but its count says {expected}"
                )
            }
            FedError::BadChecksum => f.write_str("federation section checksum does not match"),
            FedError::UnsortedOrDuplicate(n) => {
                write!(f, "federation peer {n} is duplicated or out of order")
            }
            FedError::ZeroPeriod => f.write_str("federation period or route scale is zero"),
        }
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl FedSection {
    pub fn new(role: FedRole, gate_cluster: u32, period_ms: u32, route_per_mille: u32) -> Self {
        FedSection {
            role,
            gate_cluster,
            period_ms,
            route_per_mille,
            peers: [FedPeer::default(); MAX_FED_PEERS],
            peer_count: 0,
        }
    }

    pub fn peers(&self) -> &[FedPeer] {
        &self.peers[..self.peer_count]
    }

    /// Adds a peer, keeping the list sorted; false if full or already present.
    pub fn add_peer(&mut self, p: FedPeer) -> bool {
        if self.peer_count == MAX_FED_PEERS || self.peers().iter().any(|q| q.node == p.node) {
            return false;
        }
        self.peers[self.peer_count] = p;
        self.peer_count += 1;
        self.peers[..self.peer_count].sort_unstable_by_key(|q| q.node);
        true
    }

    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.peer_count * PEER_BYTES + 32
    }

    /// Serialises into `out`; the length used, or `None` if `out` is too small.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.encoded_len();
        let b = out.get_mut(..len)?;
        b.fill(0);
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10] = match self.role {
            FedRole::Gate => 1,
            FedRole::Member => 2,
        };
        b[12..16].copy_from_slice(&self.gate_cluster.to_le_bytes());
        b[16..20].copy_from_slice(&self.period_ms.to_le_bytes());
        b[20..24].copy_from_slice(&self.route_per_mille.to_le_bytes());
        b[24..26].copy_from_slice(&(self.peer_count as u16).to_le_bytes());
        let mut o = HEADER_BYTES;
        for p in self.peers() {
            b[o..o + 4].copy_from_slice(&p.node.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&p.cluster.to_le_bytes());
            b[o + 8..o + 40].copy_from_slice(&p.public_key);
            o += PEER_BYTES;
        }
        let sum = Sha256::digest(&b[..o]);
        b[o..o + 32].copy_from_slice(&sum);
        Some(len)
    }

    /// Parses and validates a section. Never panics.
    pub fn parse(b: &[u8]) -> Result<FedSection, FedError> {
        if b.len() < HEADER_BYTES + 32 {
            return Err(FedError::TooShort(b.len()));
        }
        if b[0..8] != MAGIC {
            return Err(FedError::BadMagic);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != VERSION {
            return Err(FedError::UnsupportedVersion(version));
        }
        let role = match b[10] {
            1 => FedRole::Gate,
            2 => FedRole::Member,
            r => return Err(FedError::BadRole(r)),
        };
        if b[11] != 0 || b[26] != 0 || b[27] != 0 {
            return Err(FedError::Reserved);
        }
        let n = usize::from(u16::from_le_bytes([b[24], b[25]]));
        if !(1..=MAX_FED_PEERS).contains(&n) {
            return Err(FedError::BadPeerCount(n));
        }
        let expected = HEADER_BYTES + n * PEER_BYTES + 32;
        if b.len() != expected {
            return Err(FedError::LengthMismatch {
                expected,
                got: b.len(),
            });
        }
        let body = expected - 32;
        if Sha256::digest(&b[..body]).as_slice() != &b[body..] {
            return Err(FedError::BadChecksum);
        }
        let mut s = FedSection::new(role, u32_at(b, 12), u32_at(b, 16), u32_at(b, 20));
        if s.period_ms == 0 || s.route_per_mille == 0 {
            return Err(FedError::ZeroPeriod);
        }
        let mut o = HEADER_BYTES;
        for i in 0..n {
            let mut key = [0u8; 32];
            key.copy_from_slice(&b[o + 8..o + 40]);
            let p = FedPeer {
                node: u32_at(b, o),
                cluster: u32_at(b, o + 4),
                public_key: key,
            };
            if i > 0 && p.node <= s.peers[i - 1].node {
                return Err(FedError::UnsortedOrDuplicate(p.node));
            }
            s.peers[i] = p;
            o += PEER_BYTES;
        }
        s.peer_count = n;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FedSection {
        let mut s = FedSection::new(FedRole::Gate, 7, 300, 100);
        assert!(s.add_peer(FedPeer {
            node: 3,
            cluster: 9,
            public_key: [3; 32],
        }));
        assert!(s.add_peer(FedPeer {
            node: 2,
            cluster: 8,
            public_key: [2; 32],
        }));
        assert!(!s.add_peer(FedPeer {
            node: 2,
            cluster: 8,
            public_key: [2; 32],
        }));
        s
    }

    #[test]
    fn round_trip_sorted() {
        let s = sample();
        let mut out = [0u8; MAX_BYTES];
        let n = s.encode(&mut out).unwrap();
        let p = FedSection::parse(&out[..n]).unwrap();
        assert_eq!(p, s);
        assert_eq!(p.peers()[0].node, 2);
        assert_eq!(p.peers()[1].cluster, 9);
    }

    #[test]
    fn corruption_and_truncation_are_refused() {
        let s = sample();
        let mut out = [0u8; MAX_BYTES];
        let n = s.encode(&mut out).unwrap();
        for i in 0..n {
            let mut b = out;
            b[i] ^= 1;
            assert!(FedSection::parse(&b[..n]).is_err(), "flip at {i}");
        }
        for len in 0..n {
            assert!(FedSection::parse(&out[..len]).is_err());
        }
    }
}
