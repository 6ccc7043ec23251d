//! Peer health in the node (AD-35, seed 003 §12): three real nodes over a hand-made
//! network with a one-way latency per link (node 1 – node 2 near, node 3 far), pinging
//! each other every 500 ms as the kernel transport does, the pong carrying the answering
//! node's coordinate. Checks: the RTT samples move every node's Vivaldi coordinate and
//! its estimates approach the links' RTTs; members are confirmed on first contact; a
//! silent member is suspected and then declared down after the adaptive timeout, which
//! is longer for a far member than for a near one (latency multiplier); it comes back
//! up when heard; a member never heard is never suspected nor declared dead, only
//! taken out of placement after its role's confirmation timeout.

use std::collections::BTreeMap;
use xdv_audit::RecordBody;
use xdv_node::{
    AUDIT_TAG_PEER, AUDIT_TAG_RTT, Identity, Node, NodeConfig, PeerRecordBody, RttRecordBody,
};
use xdv_types::NodeId;

const CLUSTER: u32 = 6;

fn node_seed(n: u32) -> [u8; 32] {
    [n as u8 + 40; 32]
}

enum Frame {
    Raft(Vec<u8>),
    Forward(Vec<u8>),
    Ping { sent_ms: u64 },
    Pong { sent_ms: u64, coordinate: Vec<u8> },
}

struct Net {
    nodes: Vec<Node<Vec<u8>>>,
    cfgs: Vec<NodeConfig>,
    /// How many of the configured members really run (the others never answer).
    running: usize,
    now_ms: u64,
    /// deliver at → (from, to, frame), in send order.
    wire: BTreeMap<(u64, u64), (u32, u32, Frame)>,
    sent: u64,
    /// Nodes that hear nothing and are heard by nobody.
    cut: Vec<u32>,
    /// Peer records each node wrote: (at, peer, event, timeout).
    records: Vec<Vec<PeerRecordBody>>,
    /// RTT-sample records each node wrote (its Vivaldi input log).
    rtts: Vec<Vec<RttRecordBody>>,
}

/// One-way latency of a link, ms: 1–2 near, anything with node 3 far.
fn latency_ms(a: u32, b: u32) -> u64 {
    if a == 3 || b == 3 { 20 } else { 2 }
}

impl Net {
    fn new(members: u32, running: usize) -> Net {
        let peers: Vec<(u32, [u8; 32])> = (1..=members)
            .map(|n| (n, xdv_cluster::public_key(&node_seed(n))))
            .collect();
        let nodes = (1..=running as u32)
            .map(|n| {
                let c = NodeConfig::new(
                    Identity {
                        node: n,
                        cluster: CLUSTER,
                        seed: Some(node_seed(n)),
                        peers: peers.clone(),
                        tenants: vec![],
                        operator_key: [0; 32],
                    },
                    2,
                );
                (c.clone(), Node::new(c, vec![0u8; 256 * 1024], 0))
            })
            .collect::<Vec<_>>();
        let (cfgs, nodes) = nodes.into_iter().unzip();
        Net {
            nodes,
            cfgs,
            running,
            now_ms: 0,
            wire: BTreeMap::new(),
            sent: 0,
            cut: Vec::new(),
            records: (0..running).map(|_| Vec::new()).collect(),
            rtts: (0..running).map(|_| Vec::new()).collect(),
        }
    }

    fn send(&mut self, from: u32, to: u32, f: Frame) {
        if to as usize > self.running {
            return;
        }
        self.sent += 1;
        let at = self.now_ms + latency_ms(from, to);
        self.wire.insert((at, self.sent), (from, to, f));
    }

    fn step(&mut self) {
        self.now_ms += 1;
        let now = self.now_ms;
        let due: Vec<(u64, u64)> = self.wire.range(..(now + 1, 0)).map(|(k, _)| *k).collect();
        for k in due {
            let (from, to, f) = self.wire.remove(&k).expect("listed");
            if self.cut.contains(&from) || self.cut.contains(&to) {
                continue;
            }
            let n = &mut self.nodes[to as usize - 1];
            n.tick(now);
            match f {
                Frame::Raft(b) => {
                    n.on_peer_heard(NodeId(from));
                    n.on_peer_raft(NodeId(from), &b);
                }
                Frame::Forward(b) => {
                    n.on_peer_heard(NodeId(from));
                    n.on_peer_forward(NodeId(from), &b);
                }
                Frame::Ping { sent_ms } => {
                    n.on_peer_heard(NodeId(from));
                    let coordinate = n.coordinate_payload();
                    self.send(
                        to,
                        from,
                        Frame::Pong {
                            sent_ms,
                            coordinate,
                        },
                    );
                }
                Frame::Pong {
                    sent_ms,
                    coordinate,
                } => n.on_peer_rtt(NodeId(from), (now - sent_ms) * 1000, &coordinate),
            }
        }
        for i in 0..self.running {
            let me = i as u32 + 1;
            self.nodes[i].tick(now);
            if (now + u64::from(me) * 37).is_multiple_of(500) {
                for to in 1..=3 {
                    if to != me {
                        self.send(me, to, Frame::Ping { sent_ms: now });
                    }
                }
            }
            let o = self.nodes[i].drain();
            for (to, b) in o.raft {
                self.send(me, to.0, Frame::Raft(b));
            }
            for (to, b) in o.forwards {
                self.send(me, to.0, Frame::Forward(b));
            }
            for r in o.audit {
                match r {
                    RecordBody::Custom { tag, bytes } if tag == AUDIT_TAG_PEER => {
                        self.records[i].push(xdv_cluster::mgmt::decode(&bytes).unwrap());
                    }
                    RecordBody::Custom { tag, bytes } if tag == AUDIT_TAG_RTT => {
                        self.rtts[i].push(xdv_cluster::mgmt::decode(&bytes).unwrap());
                    }
                    _ => {}
                }
            }
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn leader(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| n.view().role == "Leader")
            .expect("a leader")
    }

    /// Whether member `node` is up in node `i`'s applied state.
    fn up(&self, i: usize, node: u32) -> bool {
        self.nodes[i].state().data().nodes[&NodeId(node)].up
    }

    /// When node `i` recorded `event` about `peer` (the first time at or after `from`).
    fn when(&self, i: usize, peer: u32, event: &str, from: u64) -> Option<&PeerRecordBody> {
        self.records[i]
            .iter()
            .find(|r| r.peer == NodeId(peer) && r.event == event && r.at_ms >= from)
    }
}

#[test]
fn rtt_samples_move_the_coordinates_towards_the_links_rtts() {
    let mut net = Net::new(3, 3);
    net.run(60_000);
    for (i, n) in net.nodes.iter().enumerate() {
        let h = n.peer_health();
        assert!(h.samples >= 100, "node {}: {} samples", i + 1, h.samples);
        assert_eq!(h.counts, (0, 2, 0, 0), "node {}: all alive", i + 1);
        assert!(
            h.error_ppm < 500_000,
            "node {}: error {}",
            i + 1,
            h.error_ppm
        );
        for p in &h.peers {
            let rtt = 2 * latency_ms(i as u32 + 1, p.node.0) * 1000;
            assert_eq!(p.rtt_last_us, rtt, "the last sample is the link's RTT");
            let off = p.rtt_estimate_us.abs_diff(rtt) * 100 / rtt;
            assert!(
                off <= 35,
                "node {} → {}: estimate {} µs vs {} µs",
                i + 1,
                p.node,
                p.rtt_estimate_us,
                rtt
            );
            assert!(p.rtt_ucb_us >= p.rtt_estimate_us);
            assert_eq!(p.state, "alive");
        }
        // Every member was confirmed on first contact, and recorded.
        for peer in (1..=3).filter(|&p| p != i as u32 + 1) {
            assert!(net.when(i, peer, "confirmed", 0).is_some());
        }
        // Every sample is in the node's audit log (its input log), and replaying them
        // gives the node's coordinate bit for bit.
        let me = NodeId(i as u32 + 1);
        let rtts = &net.rtts[i];
        assert_eq!(rtts.len(), h.samples as usize, "node {me}");
        let replayed = xdv_node::replay_coordinate(me, &net.cfgs[i], rtts).unwrap();
        assert_eq!(replayed, n.coordinate_payload(), "node {me}");
        // A changed input gives another coordinate.
        let mut changed = rtts.clone();
        changed[rtts.len() / 2].rtt_us += 7_000;
        let other = xdv_node::replay_coordinate(me, &net.cfgs[i], &changed).unwrap();
        assert_ne!(other, replayed, "node {me}");
        // A sample the node took but the replay refuses is a divergence.
        let mut bad = rtts.clone();
        bad[3].coordinate.truncate(2);
        let e = xdv_node::replay_coordinate(me, &net.cfgs[i], &bad).unwrap_err();
        assert!(e.starts_with("sample 3 "), "{e}");
    }
}

#[test]
fn a_silent_member_is_suspected_then_declared_down_later_when_far_and_up_again() {
    let mut net = Net::new(3, 3);
    net.run(60_000);
    let l = net.leader();
    assert_eq!(l, 0, "node 1 leads (lowest id)");
    // The near member (node 2, RTT 4 ms) and the far one (node 3, RTT 40 ms) fall
    // silent together.
    let cut_at = net.now_ms;
    net.cut = vec![2, 3];
    net.run(30_000);
    let near = net
        .when(l, 2, "suspected", cut_at)
        .expect("node 2 suspected")
        .clone();
    let far = net
        .when(l, 3, "suspected", cut_at)
        .expect("node 3 suspected")
        .clone();
    let (near_t, near_lat, _, _) = near.timeout.unwrap();
    let (far_t, far_lat, _, _) = far.timeout.unwrap();
    assert_eq!(near_lat, 1_000_000, "RTT under the 10 ms reference: ×1");
    assert!(
        (3_000_000..=5_000_000).contains(&far_lat),
        "RTT about 40 ms: ×4, got {far_lat}"
    );
    assert!(far_t > 3 * near_t, "far {far_t} ms vs near {near_t} ms");
    // Suspected only after the silence threshold, dead at the adaptive deadline.
    assert!(near.at_ms >= cut_at + 1_500 && near.at_ms <= cut_at + 2_500);
    let near_dead = net.when(l, 2, "dead", cut_at).expect("node 2 dead").at_ms;
    let far_dead = net.when(l, 3, "dead", cut_at).expect("node 3 dead").at_ms;
    assert!(near_dead >= near.at_ms + near_t && near_dead <= near.at_ms + near_t + 600);
    assert!(far_dead >= far.at_ms + far_t && far_dead <= far.at_ms + far_t + 600);
    assert!(far_dead > near_dead + 5_000);
    // ... but with two of three silent, the leader has no quorum to log the NodeDown.
    // Heal node 2 only: the log then takes node 3 down, and node 2 stays up.
    net.cut = vec![3];
    net.run(5_000);
    assert!(net.up(0, 2) && !net.up(0, 3), "node 3 is down in the log");
    assert!(net.up(1, 2) && !net.up(1, 3), "node 2 applied the same");
    // Node 3 is heard again: ALIVE (rediscovered after DEAD), and up in the log.
    let back = net.now_ms;
    net.cut.clear();
    net.run(5_000);
    assert!(net.when(l, 3, "confirmed", back).is_some());
    assert!(net.up(0, 3) && net.up(2, 3), "node 3 is up again");
    let h = net.nodes[0].peer_health();
    assert_eq!(h.counts, (0, 2, 0, 0));
    assert!(h.suspected >= 2 && h.dead >= 2);
}

#[test]
fn a_member_never_heard_is_never_suspected_only_removed_after_its_role_timeout() {
    // Three members configured, two running: node 3 never answers.
    let mut net = Net::new(3, 2);
    net.run(8_000);
    let l = net.leader();
    let h = net.nodes[l].peer_health();
    let p3 = h.peers.iter().find(|p| p.node == NodeId(3)).unwrap();
    assert_eq!(
        (p3.state.as_str(), p3.role.as_str()),
        ("unconfirmed", "manager")
    );
    assert!(net.up(l, 3), "not taken out before its role's timeout");
    net.run(5_000);
    for event in ["suspected", "dead"] {
        assert!(net.when(l, 3, event, 0).is_none(), "never {event}");
    }
    let removed = net.when(l, 3, "removed", 0).expect("removed").at_ms;
    // Manager role, scaled ×0.1: 9 s passive, then 3 probes 0.5 s apart.
    assert!((10_000..=11_500).contains(&removed), "removed at {removed}");
    assert!(!net.up(l, 3), "out of placement (NodeDown in the log)");
    let downs = net.nodes[l]
        .state()
        .data()
        .nodes
        .values()
        .filter(|r| !r.up)
        .count();
    assert_eq!(downs, 1);
}

/// A Vivaldi configuration the federation crate refuses halts the node with the reason,
/// instead of running with other parameters than configured.
#[test]
fn an_invalid_vivaldi_configuration_halts_the_node_with_the_reason() {
    let peers: Vec<(u32, [u8; 32])> = (1..=3)
        .map(|n| (n, xdv_cluster::public_key(&node_seed(n))))
        .collect();
    let mut c = NodeConfig::new(
        Identity {
            node: 1,
            cluster: CLUSTER,
            seed: Some(node_seed(1)),
            peers,
            tenants: vec![],
            operator_key: [0; 32],
        },
        2,
    );
    c.vivaldi.min_error_ppm = 0;
    let n = Node::new(c, vec![0u8; 256 * 1024], 0);
    let why = n.halted().expect("halted").to_string();
    assert!(why.contains("Vivaldi configuration refused"), "{why}");
    assert!(n.raft().is_none(), "a halted node takes no part in Raft");
}
