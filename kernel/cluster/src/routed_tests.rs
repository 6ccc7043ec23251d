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
    assert_eq!(tag(Command::TasksCompleted(Vec::new())), 36);
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

/// The entry `c` proposed by `node` (whose `ClockTick`s make it the leader).
fn push_from(log: &mut Log, s: &mut ClusterState, node: u32, c: Command) -> Applied {
    log.index += 1;
    let bytes = Proposal {
        time: GlobalTime {
            lamport: log.index * 10,
            node: NodeId(node),
        },
        command: c,
    }
    .encode()
    .unwrap();
    log.entries.push(bytes.clone());
    s.apply(log.index, &bytes)
}

/// The best candidate by [`Routed::rank`] then `LeastLoaded`'s order: the rule as
/// documented, by brute force over every candidate.
fn brute_force(r: &Routed, ctx: &PlacementContext, c: &[Candidate]) -> Option<NodeId> {
    let origin = r.usable_origin(ctx);
    c.iter()
        .min_by(|a, b| {
            r.rank(a, origin).cmp(&r.rank(b, origin)).then_with(|| {
                let la = u64::from(a.load) * u64::from(b.capacity);
                let lb = u64::from(b.load) * u64::from(a.capacity);
                la.cmp(&lb)
                    .then(a.lifetime.cmp(&b.lifetime))
                    .then(a.shard_rank.cmp(&b.shard_rank))
                    .then(a.node.cmp(&b.node))
            })
        })
        .map(|c| c.node)
}

#[test]
fn routed_decides_the_same_with_cached_inputs_as_without() {
    let mut rng = xdv_types::rng::SplitMix64::new(0x16);
    let r = Routed::default();
    let t = spec(10, 1);
    let origins = [None, Some(coord(0, 1)), Some(coord(-3_000, 12))];
    let mut seen = [0u32; 4];
    for round in 0..400 {
        let ctx = PlacementContext {
            origin: origins[round % origins.len()],
        };
        let n = 1 + rng.below(12) as u32;
        let cands: Vec<Candidate> = (1..=n)
            .map(|i| {
                let capacity = rng.below(40) as u32;
                let mut c = cand(
                    i,
                    rng.below(u64::from(capacity) + 2) as u32,
                    [0, 0, 1, 5, ROUTED_OVERLOAD_QUEUE][rng.below(5) as usize],
                    rng.chance_pct(80)
                        .then(|| coord(rng.below(150_000) as i64, rng.below(12) as u32)),
                    // Fresh, stale (DEGRADED), past the coordinate TTL, or never.
                    [Some(0), Some(9_000), Some(20_000), Some(400_000), None]
                        [rng.below(5) as usize],
                );
                c.capacity = capacity;
                c.utilisation_ppm = [0, 300_000, 950_000, 1_000_000][rng.below(4) as usize];
                c.lifetime = rng.below(3);
                c
            })
            .collect();
        let fresh = r.place(&t, &ctx, &cands);
        let cached: Vec<Candidate> = cands
            .iter()
            .map(|c| Candidate {
                route: Some(r.inputs(ctx.origin.as_ref(), c.coordinate.as_ref(), c.queue_depth)),
                ..*c
            })
            .collect();
        assert_eq!(r.place(&t, &ctx, &cached), fresh, "round {round}");
        assert_eq!(brute_force(&r, &ctx, &cands), fresh, "round {round}");
        let best = fresh.map(|n| r.rank(&cands[n.0 as usize - 1], r.usable_origin(&ctx)).0);
        seen[best.map_or(3, |b| b as usize)] += 1;
    }
    // The rounds cover every bucket winning.
    assert!(seen.iter().take(3).all(|&k| k > 0), "{seen:?}");
}

#[test]
fn the_route_cache_follows_the_leader_and_its_coordinate_and_is_not_state() {
    let mut s = three();
    let mut log = Log::new();
    log.push(
        &mut s,
        Command::SetPlacementPolicy {
            policy: PlacementKind::Routed,
            seq: 1,
        },
    );
    // Node 1 leads, at 0, with a task waiting (BUSY: never chosen while another node
    // is HEALTHY); node 2 sits near it, node 3 far away.
    log.push(&mut s, Command::ClockTick);
    log.push(&mut s, load(1, 1, 0, Some(coord(0, 10))));
    log.push(&mut s, load(2, 0, 0, Some(coord(3_000, 10))));
    log.push(&mut s, load(3, 0, 0, Some(coord(90_000, 10))));
    assert_eq!(s.placement_preview(&spec(10, 1)), Some(NodeId(2)));
    // The leader's own coordinate moves next to node 3: every member's inputs move.
    log.push(&mut s, load(1, 1, 0, Some(coord(88_000, 10))));
    assert_eq!(s.placement_preview(&spec(10, 1)), Some(NodeId(3)));
    // Node 2 takes over the log's clock (a new leader): distances from node 2.
    let before = s.hash();
    let image = s.snapshot_image();
    push_from(&mut log, &mut s, 2, Command::ClockTick);
    assert_eq!(s.data().clock_leader, Some(NodeId(2)));
    assert_eq!(
        s.placement_preview(&spec(10, 1)),
        Some(NodeId(2)),
        "the new leader itself is nearest"
    );
    // A restored state rebuilds the cache from the image alone; the cache is in
    // neither the image nor the hash (the image and hash before the leader change
    // restore to the same placements as the live state had then).
    let mut other = three();
    other.restore_image(&image).unwrap();
    assert_eq!(other.hash(), before);
    assert_eq!(other.snapshot_image(), image);
    assert_eq!(other.placement_preview(&spec(10, 1)), Some(NodeId(3)));
    // The leader change applied to the restored state: the same choice.
    push_from(&mut log, &mut other, 2, Command::ClockTick);
    assert_eq!(other.placement_preview(&spec(10, 1)), Some(NodeId(2)));
    // A member that leaves takes its entry with it; one that joins gets one.
    let a = log.push(&mut s, Command::RemoveWorker { node: NodeId(2) });
    assert!(a.events.contains(&Event::WorkerRemoved { node: NodeId(2) }));
    assert_eq!(
        s.placement_preview(&spec(10, 1)),
        Some(NodeId(3)),
        "no leader coordinate (bootstrap): the healthy one"
    );
    log.push(&mut s, Command::AddWorker(worker(2, 2, &[])));
    log.push(&mut s, load(2, 0, 0, Some(coord(1_000, 10))));
    assert_eq!(s.placement_preview(&spec(10, 1)), Some(NodeId(2)));
}
