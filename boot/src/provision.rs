//! The provisioning module: who a node is and whom it trusts, delivered as a boot
//! module (PVH module / Multiboot2 module tag; `-initrd` under QEMU), never on the
//! command line. `cargo xdv up` writes one per node.
//!
//! Layout (little-endian, fixed records; total length exact):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `XDVPROV\0` |
//! | 8 | 2 | format version (1) |
//! | 10 | 2 | peer count P (1..=[`MAX_PEERS`], includes this node) |
//! | 12 | 2 | tenant count T (0..=[`MAX_TENANTS`]) |
//! | 14 | 2 | reserved, 0 |
//! | 16 | 4 | this node's id |
//! | 20 | 4 | cluster id |
//! | 24 | 32 | this node's Ed25519 secret seed |
//! | 56 | 32 | operator Ed25519 public key |
//! | 88 | 40·P | peers: node id (4), IPv4 (4), Ed25519 public key (32) |
//! | … | 36·T | tenants: tenant id (4), Ed25519 public key (32) |
//! | end−32 | 32 | SHA-256 of every byte before it |
//!
//! The parser checks magic, version, counts, length, checksum, that peer and tenant
//! ids are unique and sorted, and that this node is in the peer list. Whether the
//! secret seed matches this node's listed public key needs Ed25519 and is checked by
//! the kernel.

use core::fmt;
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"XDVPROV\0";
pub const VERSION: u16 = 1;
pub const MAX_PEERS: usize = 16;
pub const MAX_TENANTS: usize = 32;
const HEADER_BYTES: usize = 88;
const PEER_BYTES: usize = 40;
const TENANT_BYTES: usize = 36;
/// Largest possible module.
pub const MAX_BYTES: usize =
    HEADER_BYTES + MAX_PEERS * PEER_BYTES + MAX_TENANTS * TENANT_BYTES + 32;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Peer {
    pub node: u32,
    pub ipv4: [u8; 4],
    pub public_key: [u8; 32],
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Tenant {
    pub tenant: u32,
    pub public_key: [u8; 32],
}

/// A validated provisioning record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provision {
    pub node: u32,
    pub cluster: u32,
    pub secret_seed: [u8; 32],
    pub operator_key: [u8; 32],
    peers: [Peer; MAX_PEERS],
    peer_count: usize,
    tenants: [Tenant; MAX_TENANTS],
    tenant_count: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProvisionError {
    TooShort(usize),
    BadMagic,
    UnsupportedVersion(u16),
    TooManyPeers(usize),
    NoPeers,
    TooManyTenants(usize),
    LengthMismatch { expected: usize, got: usize },
    BadChecksum,
    UnsortedOrDuplicate { what: &'static str, id: u32 },
    SelfNotInPeers(u32),
    Reserved,
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProvisionError::TooShort(n) => write!(f, "provisioning module is only {n} bytes"),
            ProvisionError::BadMagic => {
                f.write_str("provisioning module has the wrong magic (not XDVPROV)")
            }
            ProvisionError::UnsupportedVersion(v) => write!(
                f,
                "provisioning format version {v} is not supported (need {VERSION})"
            ),
            ProvisionError::TooManyPeers(n) => {
                write!(f, "{n} peers is over the limit of {MAX_PEERS}")
            }
            ProvisionError::NoPeers => f.write_str("the peer list is empty"),
            ProvisionError::TooManyTenants(n) => {
                write!(f, "{n} tenants is over the limit of {MAX_TENANTS}")
            }
            ProvisionError::LengthMismatch { expected, got } => {
                write!(f, "module is {got} bytes but its counts say {expected}")
            }
            ProvisionError::BadChecksum => {
                f.write_str("SHA-256 checksum does not match (corrupt module)")
            }
            ProvisionError::UnsortedOrDuplicate { what, id } => {
                write!(f, "{what} id {id} is duplicated or out of order")
            }
            ProvisionError::SelfNotInPeers(n) => {
                write!(f, "this node ({n}) is not in its own peer list")
            }
            ProvisionError::Reserved => f.write_str("reserved header field is not zero"),
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn key_at(b: &[u8], o: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(&b[o..o + 32]);
    k
}

fn encoded_len(peers: usize, tenants: usize) -> usize {
    HEADER_BYTES + peers * PEER_BYTES + tenants * TENANT_BYTES + 32
}

impl Provision {
    pub fn new(node: u32, cluster: u32, secret_seed: [u8; 32], operator_key: [u8; 32]) -> Self {
        Provision {
            node,
            cluster,
            secret_seed,
            operator_key,
            peers: [Peer::default(); MAX_PEERS],
            peer_count: 0,
            tenants: [Tenant::default(); MAX_TENANTS],
            tenant_count: 0,
        }
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers[..self.peer_count]
    }

    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants[..self.tenant_count]
    }

    /// This node's own peer entry (present by validation).
    pub fn me(&self) -> &Peer {
        self.peers()
            .iter()
            .find(|p| p.node == self.node)
            .unwrap_or(&self.peers[0])
    }

    /// Adds a peer (kept sorted by node id). Returns false when full or duplicate.
    pub fn add_peer(&mut self, p: Peer) -> bool {
        if self.peer_count == MAX_PEERS || self.peers().iter().any(|q| q.node == p.node) {
            return false;
        }
        self.peers[self.peer_count] = p;
        self.peer_count += 1;
        self.peers[..self.peer_count].sort_unstable_by_key(|q| q.node);
        true
    }

    /// Adds a tenant (kept sorted by id). Returns false when full or duplicate.
    pub fn add_tenant(&mut self, t: Tenant) -> bool {
        if self.tenant_count == MAX_TENANTS || self.tenants().iter().any(|u| u.tenant == t.tenant) {
            return false;
        }
        self.tenants[self.tenant_count] = t;
        self.tenant_count += 1;
        self.tenants[..self.tenant_count].sort_unstable_by_key(|u| u.tenant);
        true
    }

    /// Serialises into `out`; returns the length used, or `None` if `out` is too small.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let len = encoded_len(self.peer_count, self.tenant_count);
        let b = out.get_mut(..len)?;
        b.fill(0);
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(self.peer_count as u16).to_le_bytes());
        b[12..14].copy_from_slice(&(self.tenant_count as u16).to_le_bytes());
        b[16..20].copy_from_slice(&self.node.to_le_bytes());
        b[20..24].copy_from_slice(&self.cluster.to_le_bytes());
        b[24..56].copy_from_slice(&self.secret_seed);
        b[56..88].copy_from_slice(&self.operator_key);
        let mut o = HEADER_BYTES;
        for p in self.peers() {
            b[o..o + 4].copy_from_slice(&p.node.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&p.ipv4);
            b[o + 8..o + 40].copy_from_slice(&p.public_key);
            o += PEER_BYTES;
        }
        for t in self.tenants() {
            b[o..o + 4].copy_from_slice(&t.tenant.to_le_bytes());
            b[o + 4..o + 36].copy_from_slice(&t.public_key);
            o += TENANT_BYTES;
        }
        let sum = Sha256::digest(&b[..o]);
        b[o..o + 32].copy_from_slice(&sum);
        Some(len)
    }

    /// The length of the provisioning record at the start of `b`, from its counts
    /// (`None` if the header is too short or not a provisioning record). What follows
    /// it in the same boot module is the federation section
    /// ([`crate::federation::FedSection`]).
    pub fn record_len(b: &[u8]) -> Option<usize> {
        if b.len() < HEADER_BYTES || b[0..8] != MAGIC {
            return None;
        }
        let (np, nt) = (u16_at(b, 10) as usize, u16_at(b, 12) as usize);
        (np <= MAX_PEERS && nt <= MAX_TENANTS).then(|| encoded_len(np, nt))
    }

    /// Parses and validates a module. Never panics.
    pub fn parse(b: &[u8]) -> Result<Provision, ProvisionError> {
        if b.len() < HEADER_BYTES + 32 {
            return Err(ProvisionError::TooShort(b.len()));
        }
        if b[0..8] != MAGIC {
            return Err(ProvisionError::BadMagic);
        }
        let version = u16_at(b, 8);
        if version != VERSION {
            return Err(ProvisionError::UnsupportedVersion(version));
        }
        let (np, nt) = (u16_at(b, 10) as usize, u16_at(b, 12) as usize);
        if np > MAX_PEERS {
            return Err(ProvisionError::TooManyPeers(np));
        }
        if np == 0 {
            return Err(ProvisionError::NoPeers);
        }
        if nt > MAX_TENANTS {
            return Err(ProvisionError::TooManyTenants(nt));
        }
        if u16_at(b, 14) != 0 {
            return Err(ProvisionError::Reserved);
        }
        let expected = encoded_len(np, nt);
        if b.len() != expected {
            return Err(ProvisionError::LengthMismatch {
                expected,
                got: b.len(),
            });
        }
        let body = expected - 32;
        if Sha256::digest(&b[..body]).as_slice() != &b[body..] {
            return Err(ProvisionError::BadChecksum);
        }
        let mut p = Provision::new(u32_at(b, 16), u32_at(b, 20), key_at(b, 24), key_at(b, 56));
        let mut o = HEADER_BYTES;
        for i in 0..np {
            let peer = Peer {
                node: u32_at(b, o),
                ipv4: [b[o + 4], b[o + 5], b[o + 6], b[o + 7]],
                public_key: key_at(b, o + 8),
            };
            if i > 0 && peer.node <= p.peers[i - 1].node {
                return Err(ProvisionError::UnsortedOrDuplicate {
                    what: "peer",
                    id: peer.node,
                });
            }
            p.peers[i] = peer;
            o += PEER_BYTES;
        }
        p.peer_count = np;
        for i in 0..nt {
            let t = Tenant {
                tenant: u32_at(b, o),
                public_key: key_at(b, o + 4),
            };
            if i > 0 && t.tenant <= p.tenants[i - 1].tenant {
                return Err(ProvisionError::UnsortedOrDuplicate {
                    what: "tenant",
                    id: t.tenant,
                });
            }
            p.tenants[i] = t;
            o += TENANT_BYTES;
        }
        p.tenant_count = nt;
        if !p.peers().iter().any(|q| q.node == p.node) {
            return Err(ProvisionError::SelfNotInPeers(p.node));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provision {
        let mut p = Provision::new(2, 77, [7; 32], [9; 32]);
        for n in [3u32, 1, 2] {
            assert!(p.add_peer(Peer {
                node: n,
                ipv4: [10, 0, 0, n as u8],
                public_key: [n as u8; 32]
            }));
        }
        assert!(p.add_tenant(Tenant {
            tenant: 5,
            public_key: [5; 32]
        }));
        assert!(
            !p.add_peer(Peer {
                node: 1,
                ..Peer::default()
            }),
            "duplicate accepted"
        );
        p
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let mut buf = [0u8; MAX_BYTES];
        let n = p.encode(&mut buf).unwrap();
        let q = Provision::parse(&buf[..n]).unwrap();
        assert_eq!(p, q);
        assert_eq!(
            q.peers().iter().map(|p| p.node).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(q.me().ipv4, [10, 0, 0, 2]);
    }

    #[test]
    fn every_single_byte_flip_is_rejected() {
        let p = sample();
        let mut buf = [0u8; MAX_BYTES];
        let n = p.encode(&mut buf).unwrap();
        for i in 0..n {
            let mut b = buf[..n].to_vec();
            b[i] ^= 0x01;
            assert!(Provision::parse(&b).is_err(), "flip at {i} accepted");
        }
        for cut in 0..n {
            assert!(
                Provision::parse(&buf[..cut]).is_err(),
                "truncation to {cut} accepted"
            );
        }
    }

    #[test]
    fn self_must_be_a_peer() {
        let mut p = Provision::new(9, 1, [0; 32], [0; 32]);
        p.add_peer(Peer {
            node: 1,
            ..Peer::default()
        });
        let mut buf = [0u8; MAX_BYTES];
        let n = p.encode(&mut buf).unwrap();
        assert_eq!(
            Provision::parse(&buf[..n]),
            Err(ProvisionError::SelfNotInPeers(9))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700)) {
            let _ = Provision::parse(&bytes);
        }
    }
}
