//! Issue 16: load heartbeats in the replicated state, the operator's placement policy
//! through the log, and the `Routed` policy (health bucket, then RTT × load × quality).

use crate::placement::{ROUTED_OVERLOAD_QUEUE, ROUTED_STALE_MS};
use crate::tests::{Log, assigned, spec, worker};
use crate::*;
use alloc::vec::Vec;
use xdv_federation::vivaldi::Coordinate;
use xdv_types::{NodeId, TenantId};

fn coord(x_us: i64, samples: u32) -> Coordinate {
    Coordinate {
        position_us: [x_us, 0, 0, 0],
        height_us: 100,
        error_ppm: 100_000,
        sample_count: samples,
        updated_at_ms: 0,
    }
}

fn load(node: u32, queue: u32, util: u32, c: Option<Coordinate>) -> Command {
    Command::LoadHeartbeat(LoadReport {
        node: NodeId(node),
        queue_depth: queue,
        utilisation_ppm: util,
        coordinate: c,
    })
}

fn three() -> ClusterState {
    let workers = [worker(1, 2, &[]), worker(2, 2, &[]), worker(3, 2, &[])];
    ClusterState::genesis(Config::default(), &workers, &[(TenantId(10), [1; 32])]).unwrap()
}

fn cand(node: u32, load: u32, queue: u32, c: Option<Coordinate>, age: Option<u64>) -> Candidate {
    Candidate {
        node: NodeId(node),
        load,
        capacity: 8,
        lifetime: 0,
        shard_rank: 2,
        queue_depth: queue,
        utilisation_ppm: 0,
        coordinate: c,
        report_age_ms: age,
        route: None,
    }
}

#[test]
fn load_heartbeats_enter_the_state_and_bad_ones_are_refused() {
    let mut s = three();
    let mut log = Log::new();
    log.push(&mut s, Command::ClockTick);
    let before = s.hash();
    let a = log.push(&mut s, load(2, 3, 250_000, Some(coord(5_000, 7))));
    assert!(matches!(
        a.events[0],
        Event::LoadReported {
            node: NodeId(2),
            queue_depth: 3,
            utilisation_ppm: 250_000
        }
    ));
    assert_ne!(s.hash(), before, "the report is part of the hashed state");
    let (r, at) = s.data().nodes[&NodeId(2)].load.unwrap();
    assert_eq!((r.queue_depth, r.coordinate.unwrap().sample_count), (3, 7));
    assert_eq!(at, s.data().clock_ms, "stamped with cluster time");
    let mut bad_coord = coord(0, 1);
    bad_coord.height_us = 0;
    for (c, why) in [
        (load(9, 0, 0, None), IgnoredReason::UnknownNode),
        (load(2, 0, 1_000_001, None), IgnoredReason::BadLoadReport),
        (load(2, 0, 0, Some(bad_coord)), IgnoredReason::BadLoadReport),
    ] {
        let nodes = s.data().nodes.clone();
        let a = log.push(&mut s, c);
        assert_eq!(a.events, alloc::vec![Event::Ignored(why)]);
        assert!(s.data().nodes == nodes, "a refused report changes nothing");
    }
    assert_eq!(s.data().nodes[&NodeId(2)].load.unwrap().0.queue_depth, 3);
    // A node may forward only its own load heartbeat.
    assert!(mgmt::PeerForward::own_is_allowed(
        NodeId(2),
        &load(2, 0, 0, None)
    ));
    assert!(!mgmt::PeerForward::own_is_allowed(
        NodeId(3),
        &load(2, 0, 0, None)
    ));
}

#[test]
fn the_placement_policy_is_set_through_the_log_once_per_operator_sequence() {
    let mut s = three();
    let mut log = Log::new();
    assert_eq!(s.policy_name(), "least-loaded", "the default");
    let set = |policy, seq| Command::SetPlacementPolicy { policy, seq };
    let a = log.push(&mut s, set(PlacementKind::Routed, 1));
    assert_eq!(
        a.events,
        alloc::vec![Event::PlacementPolicySet {
            policy: PlacementKind::Routed
        }]
    );
    assert_eq!(s.policy_name(), "routed");
    let a = log.push(&mut s, set(PlacementKind::FirstFit, 1));
    assert_eq!(
        a.events,
        alloc::vec![Event::Ignored(IgnoredReason::Replayed)]
    );
    assert_eq!(
        s.policy_name(),
        "routed",
        "a replayed request changes nothing"
    );
    // The choice is replicated state: it survives a snapshot and is in the hash.
    let mut other = three();
    other.restore_image(&s.snapshot_image()).unwrap();
    assert_eq!(other.policy_name(), "routed");
    let h = s.hash();
    log.push(&mut s, set(PlacementKind::FirstFit, 2));
    assert_ne!(s.hash(), h);
    assert_eq!(s.policy_name(), "first-fit");
    for k in PlacementKind::ALL {
        assert_eq!(PlacementKind::parse(k.name()), Some(k));
    }
    assert_eq!(PlacementKind::parse("fastest"), None);
}

#[test]
fn new_commands_are_appended_so_older_entries_decode_unchanged() {
    // postcard tags enum variants by position: the old variants keep theirs.
    let tag = |c: Command| postcard::to_allocvec(&c).unwrap()[0];
    assert_eq!(tag(Command::ClockTick), 10);
    assert_eq!(tag(Command::AssignTasks(Vec::new())), 23);
    assert_eq!(tag(load(1, 0, 0, None)), 24);
    let p = Proposal {
        time: GlobalTime::default(),
        command: load(1, 2, 3, Some(coord(1_000, 5))),
    };
    assert_eq!(Proposal::decode(&p.encode().unwrap()).unwrap(), p);
}

#[test]
fn routed_puts_a_node_whose_run_queue_is_deep_last_and_least_loaded_does_not() {
    // The node least-loaded picks for the task when nobody reports load.
    let natural = {
        let mut s = three();
        let a = Log::new().push(&mut s, Command::AssignTask(spec(10, 1)));
        assigned(&a)[0].1
    };
    for policy in [PlacementKind::LeastLoaded, PlacementKind::Routed] {
        let mut s = three();
        let mut log = Log::new();
        log.push(&mut s, Command::SetPlacementPolicy { policy, seq: 1 });
        log.push(&mut s, Command::ClockTick);
        for n in 1..=3 {
            let deep = NodeId(n) == natural;
            let (queue, util) = if deep {
                (ROUTED_OVERLOAD_QUEUE, 1_000_000)
            } else {
                (0, 0)
            };
            log.push(&mut s, load(n, queue, util, None));
        }
        let a = log.push(&mut s, Command::AssignTask(spec(10, 1)));
        let got = assigned(&a)[0].1;
        match policy {
            PlacementKind::Routed => assert_ne!(got, natural, "routed avoids the deep queue"),
            _ => assert_eq!(got, natural, "least-loaded does not see it"),
        }
    }
}

#[test]
fn routed_treats_a_node_with_a_stale_heartbeat_as_degraded() {
    let mut s = three();
    let mut log = Log::new();
    log.push(
        &mut s,
        Command::SetPlacementPolicy {
            policy: PlacementKind::Routed,
            seq: 1,
        },
    );
    log.push(&mut s, load(1, 0, 0, None));
    log.push(&mut s, load(2, 0, 0, None));
    for _ in 0..=ROUTED_STALE_MS / CLOCK_TICK_MS {
        log.push(&mut s, Command::ClockTick);
    }
    // Only node 3 reported within the stale window.
    log.push(&mut s, load(3, 2, 500_000, None));
    for seq in 1..=3 {
        let a = log.push(&mut s, Command::AssignTask(spec(10, seq)));
        assert_eq!(assigned(&a)[0].1, NodeId(3), "task {seq}");
    }
}

#[test]
fn routed_scores_by_distance_from_the_leader_then_load_with_buckets_first() {
    let r = Routed::default();
    let t = spec(10, 1);
    let origin = coord(0, 10);
    let ctx = PlacementContext {
        origin: Some(origin),
    };
    let near = coord(2_000, 10);
    let far = coord(80_000, 10);
    // Same load: the nearer one.
    let c = [
        cand(2, 1, 0, Some(far), Some(0)),
        cand(3, 1, 0, Some(near), Some(0)),
    ];
    assert_eq!(r.place(&t, &ctx, &c), Some(NodeId(3)));
    // The near one is busy (tasks wait): the far healthy one wins, whatever the RTT.
    let c = [
        cand(2, 1, 0, Some(far), Some(0)),
        cand(3, 1, 1, Some(near), Some(0)),
    ];
    assert_eq!(r.place(&t, &ctx, &c), Some(NodeId(2)));
    let (b_far, s_far) = r.rank(&c[0], Some(&origin));
    let (b_near, s_near) = r.rank(&c[1], Some(&origin));
    assert!(b_far < b_near && s_near < s_far, "bucket beats score");
    // Without a usable leader coordinate (bootstrap): load only.
    let boot = PlacementContext {
        origin: Some(coord(0, 1)),
    };
    let c = [
        cand(2, 1, 0, Some(far), Some(0)),
        cand(3, 4, 0, Some(near), Some(0)),
    ];
    assert_eq!(r.place(&t, &boot, &c), Some(NodeId(2)));
    assert_eq!(
        r.place(&t, &PlacementContext::default(), &c),
        Some(NodeId(2))
    );
    // A full tie: the lowest node id.
    let c = [
        cand(5, 1, 0, Some(near), Some(0)),
        cand(4, 1, 0, Some(near), Some(0)),
    ];
    assert_eq!(r.place(&t, &ctx, &c), Some(NodeId(4)));
    // No coordinate for a candidate: the default RTT and the worst quality, so it
    // goes behind a known near one of the same load.
    let c = [
        cand(2, 1, 0, None, Some(0)),
        cand(3, 1, 0, Some(near), Some(0)),
    ];
    assert_eq!(r.place(&t, &ctx, &c), Some(NodeId(3)));
}
