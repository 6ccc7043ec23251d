//! What a node is told at construction: who it is, whom it trusts, what it offers and
//! its timing. Nothing is read from globals; the kernel builds this from the
//! provisioning module and the command line, the simulator from its seed.

use alloc::string::String;
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

    /// The identity a provisioning module gives (the kernel's and the host tools'
    /// single recipe). Refuses a module whose secret key does not belong to the node's
    /// own public key in its peer list.
    pub fn from_provision(bytes: &[u8]) -> Result<Identity, String> {
        let p = xdv_boot::provision::Provision::parse(bytes).map_err(|e| alloc::format!("{e}"))?;
        if xdv_cluster::public_key(&p.secret_seed) != p.me().public_key {
            return Err(alloc::format!(
                "the secret key does not match node {}'s public key in the peer list",
                p.node
            ));
        }
        Ok(Identity {
            node: p.node,
            cluster: p.cluster,
            seed: Some(p.secret_seed),
            peers: p.peers().iter().map(|x| (x.node, x.public_key)).collect(),
            tenants: p
                .tenants()
                .iter()
                .map(|t| (TenantId(t.tenant), t.public_key))
                .collect(),
            operator_key: p.operator_key,
        })
    }

    /// The identity of a node booted without a module: members from its command line
    /// (`peers=`), itself included, no keys.
    pub fn from_cmdline(node: u32, peers: &[u32]) -> Identity {
        let mut all: Vec<(u32, [u8; 32])> = peers.iter().map(|&p| (p, [0; 32])).collect();
        if !all.iter().any(|p| p.0 == node) {
            all.push((node, [0; 32]));
        }
        all.sort();
        Identity {
            node,
            cluster: 0,
            seed: None,
            peers: all,
            tenants: Vec::new(),
            operator_key: [0; 32],
        }
    }

    /// The genesis members among the peers: all of them, or those `genesis` names.
    pub fn genesis_peers(&self, genesis: Option<&[u32]>) -> Vec<(u32, [u8; 32])> {
        self.peers
            .iter()
            .filter(|p| genesis.is_none_or(|g| g.contains(&p.0)))
            .copied()
            .collect()
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
    /// An ALIVE member unheard this long is SUSPECT; it is DEAD (and the leader
    /// declares it down) after the adaptive suspicion timeout of
    /// [`NodeConfig::confirm`] (`base × latency × load × confidence`).
    pub suspect_after_ms: u64,
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
    /// A running task's progress goes to the log at most this often (`TaskProgress`):
    /// well under the stuck threshold, so a task that reports is never stuck.
    pub progress_report_ms: u64,
    /// A member's load heartbeat (`LoadHeartbeat`: run-queue depth, utilisation, its
    /// coordinate) goes to the log at least this often, so `Routed` placement can tell
    /// a silent node from an idle one (at most a third of
    /// `xdv_cluster::placement::ROUTED_STALE_MS`); 0: never.
    pub load_report_ms: u64,
    /// ... and at most this often when what it measures changed materially.
    pub load_change_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            reply_timeout_ms: 10_000,
            suspect_after_ms: 1_500,
            peer_up_ms: 3_000,
            detect_every_ms: 500,
            resend_ms: 1_500,
            publish_ms: 5_000,
            refusal_window_ms: 1_000,
            max_catch_up_ticks: 5,
            progress_report_ms: 2_000,
            load_report_ms: 5_000,
            load_change_ms: 1_000,
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
    /// The cluster's members at genesis, for a node that joins later (`genesis=` on
    /// its command line): its genesis state and bootstrap Raft configuration are the
    /// cluster's, and the log (or a snapshot) brings it to the present. `None`: the
    /// identity's peers are the genesis members.
    pub genesis_members: Option<Vec<u32>>,
    /// Vivaldi coordinates from the transport's RTT samples (seed 003 §12.1).
    pub vivaldi: xdv_federation::vivaldi::VivaldiConfig,
    /// Role-aware confirmation and adaptive suspicion of members (§12.2–§12.9).
    pub confirm: xdv_federation::confirm::ConfirmConfig,
    /// This node's part in a federation of clusters (issue 16): a gate, a member
    /// cluster's node reporting to a gate group, or (`None`) neither — a plain cluster
    /// that behaves exactly as before federations existed.
    pub federation: Option<FederationConfig>,
}

/// A node's part in a federation (`crate::node::federation`). Identical on every node
/// of a cluster (the gate variant decides the gate group's genesis state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FederationConfig {
    /// The node belongs to a gate group: its cluster's replicated state is the router.
    Gate {
        /// The member clusters and their nodes, as this node's transport knows them.
        clusters: Vec<(xdv_federation::ClusterId, Vec<NodeId>)>,
        /// The router's constants (hold-down, cooldown, …).
        route: alloc::boxed::Box<xdv_federation::route::RouteConfig>,
        /// The gate leader (re)sends every open job's dispatch this often; the cluster's
        /// answer to a resend is also how the gate learns the job's outcome.
        dispatch_every_ms: u64,
    },
    /// The node belongs to a member cluster of a gate group.
    Member {
        /// The gate group's cluster id: tenants sign their submissions to the gate for
        /// it, and they are forwarded here unchanged.
        gate_cluster: u32,
        /// The gate group's nodes.
        gates: Vec<NodeId>,
        /// The cluster's leader reports to every gate node this often.
        heartbeat_every_ms: u64,
    },
}

/// Confirmation timing inside one cluster: the seed's (datacenter-scale) role
/// timeouts and probe intervals scaled by [`CONFIRM_PER_MILLE`], and a suspicion base
/// such that an unloaded, converged member on a LAN is declared down
/// `Timing::suspect_after_ms` + [`SUSPICION_BASE_MS`] = 4 s after it went silent (the
/// fixed figure this replaces); a far (RTT > 10 ms), loaded or poorly placed one later.
pub fn cluster_confirm_config() -> xdv_federation::confirm::ConfirmConfig {
    xdv_federation::confirm::ConfirmConfig {
        suspicion_base_ms: SUSPICION_BASE_MS,
        ..xdv_federation::confirm::ConfirmConfig::DEFAULT.scaled(CONFIRM_PER_MILLE)
    }
}

/// The one scale factor of the seed's confirmation durations inside a cluster (‰):
/// a voter never heard is taken out of placement after 9 s + 3 probes of 0.5 s.
pub const CONFIRM_PER_MILLE: u64 = 100;
/// The base SUSPECT → DEAD timeout inside a cluster.
pub const SUSPICION_BASE_MS: u64 = 2_500;

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
            genesis_members: None,
            vivaldi: xdv_federation::vivaldi::VivaldiConfig::DEFAULT,
            confirm: cluster_confirm_config(),
            federation: None,
        }
    }
}

/// K cores every member is registered with at genesis; heartbeats then report how
/// many the node really grants.
pub const GENESIS_CORES: u16 = 4;
/// Most entry bytes in one Raft append: with its framing it fits a peer socket's send
/// buffer (`xdv_net`'s `PEER_TX_BYTES`, checked in the kernel).
pub const RAFT_APPEND_BYTES: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_boot::provision::{Peer, Provision, Tenant};

    fn module(seed: [u8; 32], listed_key: [u8; 32]) -> Vec<u8> {
        let mut p = Provision::new(2, 7, seed, [9; 32]);
        for (node, key) in [(1, [1; 32]), (2, listed_key)] {
            assert!(p.add_peer(Peer {
                node,
                ipv4: [10, 0, 0, node as u8],
                public_key: key,
            }));
        }
        assert!(p.add_tenant(Tenant {
            tenant: 5,
            public_key: [5; 32],
        }));
        let mut out = alloc::vec![0u8; 4096];
        let n = p.encode(&mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn a_module_gives_its_identity_and_a_foreign_key_is_refused() {
        let seed = [3; 32];
        let id = Identity::from_provision(&module(seed, xdv_cluster::public_key(&seed))).unwrap();
        assert_eq!((id.node, id.cluster, id.seed), (2, 7, Some(seed)));
        assert_eq!(id.peer_ids(), [1, 2]);
        assert_eq!(id.tenants, [(TenantId(5), [5; 32])]);
        assert_eq!(id.operator_key, [9; 32]);
        let e = Identity::from_provision(&module(seed, [4; 32])).unwrap_err();
        assert!(e.contains("does not match node 2's public key"), "{e}");
        assert!(Identity::from_provision(b"garbage").is_err());
    }

    #[test]
    fn a_command_line_identity_includes_the_node_and_has_no_keys() {
        let id = Identity::from_cmdline(3, &[2, 1]);
        assert_eq!(id.peer_ids(), [1, 2, 3]);
        assert_eq!(id.seed, None);
        assert_eq!(id.key_of(NodeId(1)), None);
    }
}
