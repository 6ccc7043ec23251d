//! The body of the `node_frames` fuzz target (`fuzz/`), shared with a bounded stable
//! test: a one-node cluster that has elected itself gets the input, cut into frames, on
//! every hostile entry point (management client, peer Raft, peer forward). Nothing may
//! panic, every client frame is answered, the node keeps leading and its invariants
//! hold.

use crate::config::{Identity, NodeConfig};
use crate::node::{ClientConn, Node};
use alloc::vec;
use alloc::vec::Vec;
use xdv_raft::NodeId;
use xdv_types::TenantId;

fn leader() -> Node<Vec<u8>> {
    let seed = [3u8; 32];
    let cfg = NodeConfig::new(
        Identity {
            node: 1,
            cluster: 9,
            seed: Some(seed),
            peers: vec![(1, xdv_cluster::public_key(&seed))],
            tenants: vec![(TenantId(1), xdv_cluster::public_key(&[7; 32]))],
            operator_key: [0; 32],
        },
        2,
    );
    let mut n = Node::new(cfg, vec![0u8; 128 * 1024], 0);
    for t in 0..1000 {
        n.tick(t);
    }
    n
}

/// Feeds `data` to a leading node; panics only when a property is broken.
pub fn fuzz_check(data: &[u8]) {
    let mut n = leader();
    assert!(n.view().role == "Leader", "the fixture node must lead");
    let _ = n.drain();
    let conn = ClientConn {
        slot: 1,
        generation: 1,
    };
    // Frames: a length byte, then that many bytes.
    let mut rest = data;
    let mut frames = 0usize;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (frame, tail) = tail.split_at(take);
        n.on_client(conn, frame);
        n.on_peer_raft(NodeId(2), frame);
        n.on_peer_forward(NodeId(2), frame);
        frames += 1;
        rest = tail;
    }
    n.tick(2000);
    let out = n.drain();
    let answered = out.replies.iter().filter(|(c, _)| *c == conn).count();
    assert!(answered <= frames, "more replies than frames");
    assert!(
        n.view().role == "Leader",
        "hostile frames dethroned the leader"
    );
    if let Err(e) = n.invariants() {
        panic!("invariant broken: {e}");
    }
}
