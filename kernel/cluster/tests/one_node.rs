use xdv_raft::{Config, MemStorage, RaftNode, Role};
use xdv_types::NodeId;
#[test]
fn one_voter_elects_itself_and_commits() {
    let mut n = RaftNode::new(
        NodeId(1),
        Config::default(),
        MemStorage::new_with_voters(&[NodeId(1)]),
    )
    .unwrap();
    let mut ticks = 0;
    while n.status().role != Role::Leader {
        n.tick();
        if n.has_ready() {
            n.ready();
            n.advance();
        }
        ticks += 1;
        assert!(ticks < 1000, "{:?}", n.status());
    }
    let i = loop {
        match n.propose(vec![1, 2]) {
            Ok(i) => break i,
            Err(_) => {
                n.tick();
                if n.has_ready() {
                    n.ready();
                    n.advance();
                }
            }
        }
    };
    let mut committed = 0;
    for _ in 0..10 {
        n.tick();
        if n.has_ready() {
            let rd = n.ready();
            committed += rd.committed.iter().filter(|e| e.index == i).count();
            n.advance();
        }
    }
    assert_eq!(committed, 1, "{:?}", n.status());
}
