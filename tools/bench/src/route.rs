//! `cargo xdv bench route [decisions] [nodes]`: the federation router (`xdv-federation`).
//!
//! 1. Routing decision cost at 16 and 256 clusters against a plain least-loaded choice
//!    over the same router state in the same run: the baseline skips UNHEALTHY clusters
//!    and takes the one with the most free cores (a pick), and, like for like with our
//!    decision's fallback chain, also ranks them all (a ranking). Goal: ours ≤ 2× the
//!    ranking. "ours" routes from a fixed gate coordinate (the router remembers each
//!    cluster's distance until the coordinate or a heartbeat changes it); the line also
//!    shows decisions whose gate coordinate moves every time (nothing remembered).
//!    Ours and the ranking are timed in interleaved batches, as in 3.
//! 2. Vivaldi prediction error after convergence on a simulated topology with known RTTs
//!    (nodes on a 200 ms plane plus per-node access heights, ±5 % seeded jitter): the
//!    median relative error over all pairs. Goal: ≤ 15 %.
//!
//! 3. Placement decision cost inside a cluster (issue 16) with 64 and 256 candidate
//!    nodes: the `Routed` policy (health bucket, then RTT upper bound from the leader's
//!    coordinate × load factor × coordinate quality) against `LeastLoaded` over the same
//!    candidates in the same run. The whole decision is what `AssignTask` does
//!    (`ClusterState::placement_preview`: candidates from the state, each with the
//!    `RouteInputs` the state keeps per member, then the policy); the policy call alone
//!    is timed on candidates carrying those inputs (the state's path) and without them
//!    (a distance per candidate). Goal: the whole `Routed` decision ≤ 2× `LeastLoaded`'s.
//!    Each pair is timed in interleaved batches (ours, baseline, ours, …), so a shared
//!    machine's load falls on both alike.
//!
//! The ratio in the JSON line is ours / least-loaded ranking at 256 clusters.

use crate::report::{median, print_json, time_runs};
use anyhow::{Context, Result};
use std::hint::black_box;
use xdv_cluster::{
    Candidate, ClusterState, Command, Config, Domain, GlobalTime, LeastLoaded, LoadReport,
    PlacementContext, PlacementKind, PlacementPolicy, Proposal, Resources, Routed, TaskSpec, Work,
    WorkerInfo,
};
use xdv_federation::route::{Circuit, ClusterRouting, Health, Heartbeat, RouteConfig, Router};
use xdv_federation::vivaldi::{Coordinate, VivaldiConfig, VivaldiSystem, distance_us};
use xdv_federation::{ClusterId, NodeId, PPM, isqrt_round};
use xdv_types::rng::SplitMix64;
use xdv_types::{Priority, TenantId};

const BATCHES: usize = 31;

fn router(n: u32, seed: u64) -> Result<Router> {
    let mut rng = SplitMix64::new(seed);
    let mut r = Router::new(RouteConfig::DEFAULT);
    let healths = [
        Health::Healthy,
        Health::Healthy,
        Health::Busy,
        Health::Degraded,
        Health::Unhealthy,
    ];
    for c in 0..n {
        let total = 16 + rng.below(240) as u32;
        let mut pos = [0i64; 4];
        pos[0] = rng.below(200_000) as i64 - 100_000;
        pos[1] = rng.below(200_000) as i64 - 100_000;
        let hb = Heartbeat {
            cluster: ClusterId(c),
            manager: NodeId(c),
            is_leader: true,
            health: *rng.pick(&healths).context("health")?,
            available_cores: rng.below(u64::from(total) + 1) as u32,
            total_cores: total,
            queue_depth: rng.below(64) as u32,
            load_multiplier_ppm: PPM,
            circuit: Circuit::Closed,
            coordinate: Some(Coordinate {
                position_us: pos,
                height_us: 500,
                error_ppm: 100_000,
                sample_count: 40,
                updated_at_ms: 0,
            }),
        };
        r.on_heartbeat(&hb, 0)
            .map_err(|e| anyhow::anyhow!("heartbeat: {e:?}"))?;
    }
    Ok(r)
}

fn least_loaded_key(c: &ClusterRouting) -> (u64, u32) {
    let busy = u64::from(c.total_cores - c.available_cores) * PPM / u64::from(c.total_cores.max(1));
    (busy, c.queue_depth)
}

fn least_loaded_pick(r: &Router) -> Option<ClusterId> {
    r.clusters()
        .filter(|(_, c)| c.health != Health::Unhealthy)
        .min_by_key(|(id, c)| (least_loaded_key(c), *id))
        .map(|(id, _)| id)
}

fn least_loaded_ranking(r: &Router) -> Vec<ClusterId> {
    let mut v: Vec<((u64, u32), ClusterId)> = r
        .clusters()
        .filter(|(_, c)| c.health != Health::Unhealthy)
        .map(|(id, c)| (least_loaded_key(c), id))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, id)| id).collect()
}

/// Median nanoseconds per call of `f` over `BATCHES` batches of `per_batch` calls.
fn ns_per_call(per_batch: usize, mut f: impl FnMut(usize)) -> f64 {
    let runs = time_runs(BATCHES, || {
        for i in 0..per_batch {
            f(i);
        }
    });
    median(&runs).as_nanos() as f64 / per_batch as f64
}

/// Median nanoseconds per call of `f` and of `g`, their batches interleaved (`f`, `g`,
/// `f`, …) so that both see the same load on a shared machine.
fn paired_ns_per_call(
    per_batch: usize,
    mut f: impl FnMut(usize),
    mut g: impl FnMut(usize),
) -> (f64, f64) {
    let mut fs = Vec::with_capacity(BATCHES);
    let mut gs = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        fs.extend(time_runs(1, || (0..per_batch).for_each(&mut f)));
        gs.extend(time_runs(1, || (0..per_batch).for_each(&mut g)));
    }
    fs.sort();
    gs.sort();
    let per = |v: &[std::time::Duration]| median(v).as_nanos() as f64 / per_batch as f64;
    (per(&fs), per(&gs))
}

struct Cost {
    ours_ns: f64,
    cold_ns: f64,
    pick_ns: f64,
    rank_ns: f64,
}

fn decision_cost(n: u32, per_batch: usize) -> Result<Cost> {
    let mut r = router(n, 0x5EED + u64::from(n))?;
    let local = Coordinate {
        position_us: [0; 4],
        height_us: 500,
        error_ppm: 100_000,
        sample_count: 40,
        updated_at_ms: 0,
    };
    let preferred = [ClusterId(1)];
    // Ours and the least-loaded ranking interleaved batch by batch, so both see the
    // same load on a shared machine.
    // (The ranking reads a copy: the decisions borrow the router mutably.)
    let ranked = r.clone();
    let (ours_ns, rank_ns) = paired_ns_per_call(
        per_batch,
        |i| {
            black_box(r.route((i % 4) as u64, &preferred, black_box(&local), 1_000));
        },
        |_| {
            black_box(least_loaded_ranking(black_box(&ranked)));
        },
    );
    // A gate's coordinate moves with its RTT samples: with a different local
    // coordinate on every decision nothing is remembered between decisions.
    let cold_ns = ns_per_call(per_batch, |i| {
        let mut moved = local;
        moved.position_us[2] = (i % 1000) as i64 + 1;
        black_box(r.route((i % 4) as u64, &preferred, black_box(&moved), 1_000));
    });
    let pick_ns = ns_per_call(per_batch, |_| {
        black_box(least_loaded_pick(black_box(&r)));
    });
    let d = r.route(99, &preferred, &local, 1_000);
    println!(
        "route {n:>3} clusters: ours {ours_ns:>9.0} ns/decision (coordinate moved every decision: {cold_ns:.0} ns, {:.2}x) | least-loaded pick {pick_ns:>8.0} ns ({:.1}x) | least-loaded ranking {rank_ns:>8.0} ns ({:.2}x) | primary {} of {} candidates, {} bytes encoded",
        cold_ns / rank_ns,
        ours_ns / pick_ns,
        ours_ns / rank_ns,
        d.primary.map_or("none".into(), |c| c.to_string()),
        d.scores.len(),
        d.encode().len()
    );
    Ok(Cost {
        ours_ns,
        cold_ns,
        pick_ns,
        rank_ns,
    })
}

/// `n` candidates as the state machine builds them: loads and capacities, shard ranks,
/// and load heartbeats (queue, utilisation, coordinate on a 200 ms plane, age).
fn candidates(n: u32, seed: u64) -> Vec<Candidate> {
    let mut rng = SplitMix64::new(seed);
    (1..=n)
        .map(|i| {
            let capacity = 8 * (1 + rng.below(8) as u32);
            let mut pos = [0i64; 4];
            pos[0] = rng.below(200_000) as i64 - 100_000;
            pos[1] = rng.below(200_000) as i64 - 100_000;
            Candidate {
                node: xdv_types::NodeId(i),
                load: rng.below(u64::from(capacity)) as u32,
                capacity,
                lifetime: rng.below(1_000),
                shard_rank: rng.below(3) as u32,
                queue_depth: if rng.chance_pct(20) {
                    rng.below(8) as u32
                } else {
                    0
                },
                utilisation_ppm: rng.below(PPM + 1) as u32,
                coordinate: Some(Coordinate {
                    position_us: pos,
                    height_us: 500,
                    error_ppm: 100_000,
                    sample_count: 40,
                    updated_at_ms: 0,
                }),
                report_age_ms: Some(rng.below(20_000)),
                route: None,
            }
        })
        .collect()
}

struct PlacementCost {
    /// The policy call on candidates carrying the state's cached inputs.
    routed_ns: f64,
    /// The policy call on candidates without them (a distance each).
    uncached_ns: f64,
    least_ns: f64,
    /// The whole decision in the state machine (candidates, then the policy).
    state_routed_ns: f64,
    state_least_ns: f64,
}

/// A cluster state of `n` members whose load heartbeats carry the candidates' figures
/// (node 1 leads: its `ClockTick` is in the log), under `policy`.
fn state_with(n: u32, cands: &[Candidate], policy: PlacementKind) -> Result<ClusterState> {
    let workers: Vec<WorkerInfo> = (1..=n)
        .map(|i| WorkerInfo {
            node: xdv_types::NodeId(i),
            public_key: [i as u8; 32],
            resources: Resources {
                k_cores: 8,
                q_units: 0,
                phi_windows: 0,
            },
            capabilities: Vec::new(),
            observer: false,
        })
        .collect();
    let cfg = Config {
        max_nodes: 1024,
        ..Config::default()
    };
    let mut s = ClusterState::genesis(cfg, &workers, &[(TenantId(1), [7; 32])])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut cmds = vec![
        Command::ClockTick,
        Command::SetPlacementPolicy { policy, seq: 1 },
    ];
    cmds.extend(cands.iter().map(|c| {
        Command::LoadHeartbeat(LoadReport {
            node: c.node,
            queue_depth: c.queue_depth,
            utilisation_ppm: c.utilisation_ppm,
            coordinate: c.coordinate,
        })
    }));
    for (i, command) in cmds.into_iter().enumerate() {
        let index = i as u64 + 1;
        let p = Proposal {
            time: GlobalTime {
                lamport: index,
                node: xdv_types::NodeId(1),
            },
            command,
        };
        s.apply(index, &p.encode().map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    anyhow::ensure!(s.policy_name() == policy.name(), "policy applied");
    Ok(s)
}

fn placement_cost(n: u32, per_batch: usize) -> Result<PlacementCost> {
    let mut cands = candidates(n, 0xB1A5 + u64::from(n));
    // Node 1 is the leader whose coordinate placements are measured from.
    cands[0].coordinate = Some(Coordinate {
        position_us: [0; 4],
        height_us: 500,
        error_ppm: 100_000,
        sample_count: 40,
        updated_at_ms: 0,
    });
    let task = TaskSpec {
        tenant: TenantId(1),
        request_seq: 1,
        work: Work::Builtin("hash".into()),
        input: Vec::new(),
        budget_ticks: 1_000,
        priority: Priority::Normal,
        guards: Vec::new(),
        needs: Vec::new(),
        domain: Domain::K,
        pin: None,
        contract: None,
        timeout_ms: None,
    };
    let ctx = PlacementContext {
        origin: Some(Coordinate {
            position_us: [0; 4],
            height_us: 500,
            error_ppm: 100_000,
            sample_count: 40,
            updated_at_ms: 0,
        }),
    };
    let routed = Routed::default();
    let uncached_ns = ns_per_call(per_batch, |_| {
        black_box(routed.place(&task, black_box(&ctx), black_box(&cands)));
    });
    let u = routed.place(&task, &ctx, &cands);
    // What the state machine hands the policy: each candidate with its cached inputs.
    let cached: Vec<Candidate> = cands
        .iter()
        .map(|c| Candidate {
            route: Some(routed.inputs(ctx.origin.as_ref(), c.coordinate.as_ref(), c.queue_depth)),
            ..*c
        })
        .collect();
    let (routed_ns, least_ns) = paired_ns_per_call(
        per_batch,
        |_| {
            black_box(routed.place(&task, black_box(&ctx), black_box(&cached)));
        },
        |_| {
            black_box(LeastLoaded.place(&task, black_box(&ctx), black_box(&cands)));
        },
    );
    let r = routed.place(&task, &ctx, &cached);
    anyhow::ensure!(r == u, "cached inputs change the decision: {r:?} vs {u:?}");
    let l = LeastLoaded.place(&task, &ctx, &cands);
    let sr = state_with(n, &cands, PlacementKind::Routed)?;
    let sl = state_with(n, &cands, PlacementKind::LeastLoaded)?;
    let (state_routed_ns, state_least_ns) = paired_ns_per_call(
        per_batch,
        |_| {
            black_box(sr.placement_preview(black_box(&task)));
        },
        |_| {
            black_box(sl.placement_preview(black_box(&task)));
        },
    );
    println!(
        "placement {n:>3} nodes: whole decision (candidates + policy): routed {state_routed_ns:>8.0} ns | least-loaded {state_least_ns:>8.0} ns ({:.2}x) | policy only: routed {routed_ns:>7.0} ns (without cached inputs {uncached_ns:>7.0} ns) | least-loaded {least_ns:>6.0} ns ({:.2}x) | routed picks {} (state {}), least-loaded {} (state {})",
        state_routed_ns / state_least_ns,
        routed_ns / least_ns,
        r.map_or("none".into(), |n| n.to_string()),
        sr.placement_preview(&task)
            .map_or("none".into(), |n| n.to_string()),
        l.map_or("none".into(), |n| n.to_string()),
        sl.placement_preview(&task)
            .map_or("none".into(), |n| n.to_string()),
    );
    Ok(PlacementCost {
        routed_ns,
        uncached_ns,
        least_ns,
        state_routed_ns,
        state_least_ns,
    })
}

struct VivaldiRun {
    median_pct: f64,
    p90_pct: f64,
    update_ns: f64,
}

fn vivaldi_error(nodes: usize, rounds: u64, seed: u64) -> Result<VivaldiRun> {
    let mut rng = SplitMix64::new(seed);
    let xy: Vec<(i64, i64)> = (0..nodes)
        .map(|_| (rng.below(200_000) as i64, rng.below(200_000) as i64))
        .collect();
    let h: Vec<u64> = (0..nodes).map(|_| 500 + rng.below(4_500)).collect();
    let truth = |a: usize, b: usize| {
        let (dx, dy) = (xy[a].0 - xy[b].0, xy[a].1 - xy[b].1);
        isqrt_round((dx * dx + dy * dy) as u64) + h[a] + h[b]
    };
    let mut sys = (0..nodes)
        .map(|i| {
            VivaldiSystem::new(NodeId(i as u32), VivaldiConfig::DEFAULT)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let t = std::time::Instant::now();
    let mut updates = 0u64;
    for round in 0..rounds {
        for i in 0..nodes {
            let j = (i + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
            let jitter = rng.below(11); // ±5 %
            let rtt = truth(i, j) * (95 + jitter) / 100;
            let peer = *sys[j].local_coordinate();
            sys[i]
                .update(NodeId(j as u32), peer, rtt.max(1), round * 1_000)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            updates += 1;
        }
    }
    let update_ns = t.elapsed().as_nanos() as f64 / updates as f64;
    let mut errs: Vec<f64> = Vec::new();
    for a in 0..nodes {
        for b in a + 1..nodes {
            let est = distance_us(sys[a].local_coordinate(), sys[b].local_coordinate());
            let real = truth(a, b);
            errs.push(est.abs_diff(real) as f64 / real as f64 * 100.0);
        }
    }
    errs.sort_by(f64::total_cmp);
    let converged = sys.iter().filter(|s| s.is_converged()).count();
    let run = VivaldiRun {
        median_pct: errs[errs.len() / 2],
        p90_pct: errs[errs.len() * 9 / 10],
        update_ns,
    };
    println!(
        "vivaldi {nodes} nodes, {rounds} rounds, ±5% jitter: median relative error {:.2} % (goal <= 15 %), p90 {:.2} %, {converged}/{nodes} converged, {:.0} ns/update",
        run.median_pct, run.p90_pct, run.update_ns
    );
    Ok(run)
}

pub fn run(args: &[String]) -> Result<()> {
    let per_batch: usize = args
        .first()
        .map(|s| s.parse())
        .transpose()
        .context("decisions per batch")?
        .unwrap_or(200);
    let nodes: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()
        .context("vivaldi nodes")?
        .unwrap_or(64);
    anyhow::ensure!(
        per_batch > 0 && nodes >= 2,
        "need at least 1 decision per batch and 2 nodes"
    );
    let small = decision_cost(16, per_batch)?;
    let large = decision_cost(256, per_batch)?;
    let viv = vivaldi_error(nodes, 300, 0xC0FFEE)?;
    let p64 = placement_cost(64, per_batch)?;
    let p256 = placement_cost(256, per_batch)?;
    let ratio = large.ours_ns / large.rank_ns;
    let small_ratio = small.ours_ns / small.rank_ns;
    let p_ratio =
        (p64.state_routed_ns / p64.state_least_ns).max(p256.state_routed_ns / p256.state_least_ns);
    let policy_ratio = (p64.routed_ns / p64.least_ns).max(p256.routed_ns / p256.least_ns);
    println!(
        "goal: routing <= 2x least-loaded ranking at 16 and 256 clusters: {} ({small_ratio:.2}x at 16, {ratio:.2}x at 256); vivaldi median error <= 15 %: {}",
        if ratio.max(small_ratio) <= 2.0 {
            "met"
        } else {
            "NOT met"
        },
        if viv.median_pct <= 15.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "goal: routed placement decision <= 2x least-loaded at 64 and 256 nodes: {} (worst {p_ratio:.2}x; the policy call alone: {policy_ratio:.2}x)",
        if p_ratio <= 2.0 { "met" } else { "NOT met" }
    );
    print_json(
        "route",
        "ns/decision",
        large.ours_ns,
        large.rank_ns,
        serde_json::json!({
            "clusters": 256,
            "ours_16_ns": small.ours_ns, "pick_16_ns": small.pick_ns, "rank_16_ns": small.rank_ns,
            "pick_256_ns": large.pick_ns,
            "ours_moving_coordinate_16_ns": small.cold_ns,
            "ours_moving_coordinate_256_ns": large.cold_ns,
            "vivaldi_nodes": nodes, "vivaldi_median_error_pct": viv.median_pct,
            "vivaldi_p90_error_pct": viv.p90_pct, "vivaldi_update_ns": viv.update_ns,
            "placement_routed_64_ns": p64.routed_ns, "placement_least_loaded_64_ns": p64.least_ns,
            "placement_routed_256_ns": p256.routed_ns,
            "placement_routed_uncached_64_ns": p64.uncached_ns,
            "placement_routed_uncached_256_ns": p256.uncached_ns,
            "placement_least_loaded_256_ns": p256.least_ns,
            "placement_decision_routed_64_ns": p64.state_routed_ns,
            "placement_decision_least_loaded_64_ns": p64.state_least_ns,
            "placement_decision_routed_256_ns": p256.state_routed_ns,
            "placement_decision_least_loaded_256_ns": p256.state_least_ns,
        }),
    );
    Ok(())
}
