//! Tenant shards (seed 001 §5): `shard(tenant) = u32(hex(sha256(tenant))[..8], 16) %
//! shard_count`, where the tenant id is hashed as its decimal string (`"7"` for
//! tenant 7), exactly the seed's formula. Each shard has a primary and a secondary node;
//! placement prefers the shard's primary on ties, and when a primary goes down its
//! secondary takes over (migration) and the next live member becomes the secondary.
//! Shards do not move back when a node returns (hysteresis: no flapping).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xdv_types::{NodeId, TenantId};

/// Most shards a cluster may be configured with.
pub const MAX_SHARDS: u32 = 1024;

/// The shard of a tenant: the first four bytes of SHA-256 of its decimal id, read big
/// endian (the same number as the first 8 hex digits), modulo `shard_count`.
pub fn shard_of(tenant: TenantId, shard_count: u32) -> u32 {
    assert!(shard_count > 0, "shard_count is validated at construction");
    let mut digits = [0u8; 10];
    let text = decimal(tenant.0, &mut digits);
    let d = Sha256::digest(text);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % shard_count
}

fn decimal(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// Primary and secondary node of one shard (`None` while the cluster has no members).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAssignment {
    pub primary: Option<NodeId>,
    pub secondary: Option<NodeId>,
}

/// The shard table; part of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    pub shards: Vec<ShardAssignment>,
}

/// One shard that changed primary.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub shard: u32,
    pub from: Option<NodeId>,
    pub to: Option<NodeId>,
}

impl ShardMap {
    pub fn new(shard_count: u32) -> ShardMap {
        ShardMap {
            shards: alloc::vec![ShardAssignment::default(); shard_count as usize],
        }
    }

    pub fn count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Lays shards round-robin over `up` (sorted node ids): shard s gets primary
    /// `up[s % n]` and secondary `up[(s + 1) % n]`. Used when membership changes.
    pub fn rebalance(&mut self, up: &[NodeId]) {
        debug_assert!(up.windows(2).all(|w| w[0] < w[1]));
        let n = up.len();
        for (s, a) in self.shards.iter_mut().enumerate() {
            *a = if n == 0 {
                ShardAssignment::default()
            } else {
                ShardAssignment {
                    primary: Some(up[s % n]),
                    secondary: (n > 1).then(|| up[(s + 1) % n]),
                }
            };
        }
    }

    /// Repairs the table after a liveness change (`up`: live members, sorted): a shard
    /// whose primary is not live is taken over by its secondary if that is live, else by
    /// the first live member (a migration); a missing, dead or duplicate secondary is
    /// replaced by the next live member after the primary in id order. Returns the
    /// migrations in shard order. Live primaries never move (hysteresis).
    pub fn repair(&mut self, up: &[NodeId]) -> Vec<Migration> {
        debug_assert!(up.windows(2).all(|w| w[0] < w[1]));
        let live = |n: Option<NodeId>| n.filter(|n| up.contains(n));
        let mut moved = Vec::new();
        for (s, a) in self.shards.iter_mut().enumerate() {
            if live(a.primary).is_none() {
                let to = live(a.secondary).or_else(|| up.first().copied());
                if to != a.primary {
                    moved.push(Migration {
                        shard: s as u32,
                        from: a.primary,
                        to,
                    });
                }
                a.primary = to;
            }
            if live(a.secondary).is_none() || a.secondary == a.primary {
                a.secondary = next_after(a.primary, up);
            }
            debug_assert!(a.primary.is_none() || a.primary != a.secondary);
        }
        moved
    }

    /// Rank of `node` for shard `s`: 0 primary, 1 secondary, 2 other.
    pub fn rank(&self, s: u32, node: NodeId) -> u32 {
        match self.shards.get(s as usize) {
            Some(a) if a.primary == Some(node) => 0,
            Some(a) if a.secondary == Some(node) => 1,
            _ => 2,
        }
    }
}

/// The first member of `up` after `primary` in id order (wrapping), other than it.
fn next_after(primary: Option<NodeId>, up: &[NodeId]) -> Option<NodeId> {
    let p = primary?;
    up.iter()
        .copied()
        .find(|&n| n > p)
        .or_else(|| up.iter().copied().find(|&n| n != p))
}
