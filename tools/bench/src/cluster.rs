//! `cargo xdv bench cluster`: trivial WebAssembly tasks submitted through the management
//! API (tenant-signed, through a follower where there is one) until completed, on a
//! 1-node and a 3-node cluster in the same run: throughput (tasks/s), submit-to-completed
//! latency p50/p99, and the Raft propose-to-apply latency the nodes measure themselves.
//! The ratio is 3-node throughput over 1-node throughput (replication's cost).

use crate::report::print_json;
use anyhow::{Result, bail};
use std::time::{Duration, Instant};
use xdv::mgmt::{self, Client};
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_cluster::mgmt::{Denied, Principal, Request, Response, SignedRequest};
use xdv_cluster::{TaskStatus, Work};
use xdv_types::TenantId;

const T: Duration = Duration::from_secs(180);
const TRIVIAL_WAT: &str = r#"(module (func (export "run")))"#;

struct Run {
    nodes: usize,
    tasks: usize,
    tasks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    commit_p50_us: u64,
    commit_p99_us: u64,
    commit_samples: u64,
}

fn parse(args: &[String]) -> Result<(usize, usize)> {
    let (mut tasks, mut clients) = (120usize, 4usize);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| anyhow::anyhow!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--tasks" => tasks = num("--tasks")?,
            "--clients" => clients = num("--clients")?,
            other => bail!("unknown argument `{other}` (have --tasks N, --clients N)"),
        }
    }
    Ok((tasks, clients))
}

/// Submits on `c` (resending the same request until the cluster names its task), then
/// polls the task every 5 ms until it finished.
fn submit_and_wait(c: &mut Client, keys: &mgmt::Keys, req: &SignedRequest) -> Result<()> {
    let end = Instant::now() + T;
    let task = loop {
        match c.call(req, Duration::from_secs(15))? {
            Response::Submitted { task } | Response::Refused(Denied::Duplicate { task }) => {
                break task;
            }
            Response::Refused(d @ (Denied::NoLeader | Denied::NotReady(_))) => {
                if Instant::now() > end {
                    bail!("not accepted: {d}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            other => bail!("unexpected {other:?}"),
        }
    };
    let who = Principal::Tenant(TenantId(1));
    while Instant::now() < end {
        let q = mgmt::signed(keys, who, Request::TaskStatus { task })?;
        if let Response::Task { status, .. } = c.call(&q, Duration::from_secs(5))? {
            match status {
                TaskStatus::Completed { .. } => return Ok(()),
                TaskStatus::Rejected(r) => bail!("task {} refused: {r}", task.0),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("task {} did not finish", task.0)
}

fn one(nodes: usize, tasks: usize, clients: usize) -> Result<Run> {
    eprintln!("bench cluster: booting {nodes} node(s)...");
    let tb = Testbed::launch("bench-cluster", nodes, Faults::default(), 1)?;
    let all: Vec<usize> = (1..=nodes).collect();
    let leader = tb.leader(&all, T)?;
    let via = all.iter().copied().find(|&i| i != leader).unwrap_or(leader);
    let module = wat::parse_str(TRIVIAL_WAT)?;
    let submit_one = |tb: &Testbed, c: &mut Client| -> Result<Duration> {
        let t0 = Instant::now();
        let req = tb.request(1, Work::Wasm(module.clone()), Vec::new(), 10)?;
        submit_and_wait(c, &tb.keys, &req)?;
        Ok(t0.elapsed())
    };
    let connect = || Client::connect(tb.port(via), Duration::from_secs(2));
    let mut warm = connect()?;
    for _ in 0..5 {
        submit_one(&tb, &mut warm)?; // warm-up: caches, first heartbeats
    }
    drop(warm);
    let per = tasks.div_ceil(clients);
    // Every client connects first; the clock starts when all are connected.
    let barrier = std::sync::Barrier::new(clients + 1);
    let mut lat: Vec<f64> = Vec::new();
    let mut start = Instant::now();
    let results: Vec<Result<Vec<Duration>>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|_| {
                sc.spawn(|| {
                    let c = connect();
                    barrier.wait();
                    let mut c = c?;
                    (0..per).map(|_| submit_one(&tb, &mut c)).collect()
                })
            })
            .collect();
        barrier.wait();
        start = Instant::now();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            })
            .collect()
    });
    for r in results {
        lat.extend(r?.iter().map(|d| d.as_secs_f64() * 1e3));
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let v = tb.view(leader)?;
    let done = lat.len();
    Ok(Run {
        nodes,
        tasks: done,
        tasks_per_s: done as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat[lat.len() - 1],
        commit_p50_us: v.commit_latency_us.0,
        commit_p99_us: v.commit_latency_us.1,
        commit_samples: v.commit_latency_us.2,
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let (tasks, clients) = parse(args)?;
    let runs = [one(1, tasks, clients)?, one(3, tasks, clients)?];
    for r in &runs {
        println!(
            "{} node(s): {} trivial tasks by {clients} clients: {:.1} tasks/s, submit->completed p50 {:.1} ms p99 {:.1} ms max {:.1} ms; raft propose->apply on the leader p50 {} us p99 {} us ({} samples)",
            r.nodes,
            r.tasks,
            r.tasks_per_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.commit_p50_us,
            r.commit_p99_us,
            r.commit_samples
        );
    }
    let (one_node, three) = (&runs[0], &runs[1]);
    println!(
        "3-node / 1-node throughput: {:.3} (QEMU under TCG: 3 emulated nodes share 2 host cores)",
        three.tasks_per_s / one_node.tasks_per_s
    );
    let detail = |r: &Run| {
        serde_json::json!({
            "tasks_per_s": r.tasks_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "commit_p50_us": r.commit_p50_us, "commit_p99_us": r.commit_p99_us,
        })
    };
    print_json(
        "cluster",
        "tasks/s",
        three.tasks_per_s,
        one_node.tasks_per_s,
        serde_json::json!({
            "baseline_is": "the same benchmark on a 1-node cluster",
            "one_node": detail(one_node), "three_nodes": detail(three),
            "tasks": tasks, "clients": clients,
        }),
    );
    Ok(())
}
