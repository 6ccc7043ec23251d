//! What a node is told at construction: who it is, whom it trusts, what it offers and
//! its timing. Nothing is read from globals; the kernel builds this from the
//! provisioning module and the command line, the simulator from its seed.

use alloc::vec::Vec;
use xdv_types::{CapabilityId, NodeId, TenantId};

/// Who this node is and whom it trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node: u32,
    pub cluster: u32,
    /// The node's Ed25519 secret seed (`None`: no provisioning module, no keys).
    pub seed: Option<[u8; 32]>,
    /// (node, public key), this node included, sorted by id.
    pub peers: Vec<(u32, [u8; 32])>,
    pub tenants: Vec<(TenantId, [u8; 32])>,
    pub operator_key: [u8; 32],
}

impl Identity {
    pub fn peer_ids(&self) -> Vec<u32> {
        self.peers.iter().map(|p| p.0).collect()
    }

    /// The public key of member `node`, when keys are in use.
    pub fn key_of(&self, node: NodeId) -> Option<[u8; 32]> {
        self.peers
            .iter()
            .find(|p| p.0 == node.0)
            .map(|p| p.1)
            .filter(|_| self.seed.is_some())
    }

    /// Whether `node` is a configured member.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.peers.iter().any(|p| p.0 == node.0)
    }
}

/// The node's timers, in milliseconds of the time passed to [`crate::Node::tick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A parked client request is answered within this long (then: retry, same seq).
    pub reply_timeout_ms: u64,
    /// A member unheard this long is declared down by the leader.
    pub node_down_ms: u64,
    /// A member heard within this long is up again.
    pub peer_up_ms: u64,
    /// How often the leader's failure detector looks.
    pub detect_every_ms: u64,
    /// Unconfirmed own commands (completions, heartbeats) are sent again after this.
    pub resend_ms: u64,
    /// Audit-root publication period.
    pub publish_ms: u64,
    /// One unauthenticated-refusal summary record per this window.
    pub refusal_window_ms: u64,
    /// Most Raft ticks fired by one `tick` after a pause (no election bursts).
    pub max_catch_up_ticks: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            reply_timeout_ms: 10_000,
            node_down_ms: 4_000,
            peer_up_ms: 3_000,
            detect_every_ms: 500,
            resend_ms: 1_500,
            publish_ms: 5_000,
            refusal_window_ms: 1_000,
            max_catch_up_ticks: 5,
        }
    }
}

/// Everything a [`crate::Node`] is built from.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub identity: Identity,
    /// K cores this node grants to cluster tasks now (0: it runs none).
    pub cores: u16,
    /// K cores every member is registered with at genesis (identical on every node).
    pub genesis_cores: u16,
    /// Capabilities every member offers (identical on every node).
    pub capabilities: Vec<CapabilityId>,
    pub raft: xdv_raft::Config,
    pub state: xdv_cluster::Config,
    pub timing: Timing,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Built-in task names this node's runtime has (empty: not checked). A submission
    /// naming another is refused at the edge instead of entering the log.
    pub builtins: Vec<alloc::string::String>,
    /// Log entries through this index were recorded in the audit log before a
    /// restart: re-applying them after the restart records nothing again.
    pub audited_through: u64,
}

impl NodeConfig {
    /// The kernel's defaults for `identity` granting `cores` cores.
    pub fn new(identity: Identity, cores: u16) -> NodeConfig {
        NodeConfig {
            identity,
            cores,
            genesis_cores: GENESIS_CORES,
            capabilities: Vec::new(),
            raft: xdv_raft::Config {
                max_append_bytes: RAFT_APPEND_BYTES,
                ..xdv_raft::Config::default()
            },
            state: xdv_cluster::Config::default(),
            timing: Timing::default(),
            tick_ms: xdv_raft::TICK_MS,
            builtins: Vec::new(),
            audited_through: 0,
        }
    }
}

/// K cores every member is registered with at genesis; heartbeats then report how
/// many the node really grants.
pub const GENESIS_CORES: u16 = 4;
/// Most entry bytes in one Raft append: with its framing it fits a peer socket's send
/// buffer (`xdv_net`'s `PEER_TX_BYTES`, checked in the kernel).
pub const RAFT_APPEND_BYTES: usize = 128 * 1024;
