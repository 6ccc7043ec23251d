//! `cargo xdv bench replay`: the operating commands' speed, side by side in one run.
//!
//! (a) Host replay vs the node's own apply rate. A 3-node cluster runs in this
//!     process (`xdv::operate::fixture`: the real `Node`s, their Raft regions and
//!     audit logs) with a steady stream of tasks; node 1's apply rate is the entries it
//!     applied divided by the time spent inside its own calls (Raft, durable writes,
//!     the gate's signature checks, applying, hashing, its audit appends, its timers).
//!     Then `cargo xdv replay`'s core (`xdv::operate::replay`) re-applies node 1's
//!     RAM image: entries per second of wall time. Goal: host ≥ 10× the node.
//! (a') The same against a real node: a 1-node cluster in QEMU (TCG) runs trivial
//!     tasks from 6 pipelined clients for a few seconds; its apply rate is the entries
//!     it applied divided by its loop's working time (`loop_busy_us`: everything the
//!     node did, signature checks and networking included, as in (a)); then the host
//!     replays that node's RAM file. Skipped with `--no-qemu`.
//! (b) `verify` throughput on a full 64 MiB audit region (records like a node's:
//!     `RaftApplied` + applied-entry records) — one pass that verifies the chain,
//!     judges the superblock, collects the record hashes and decodes the applied
//!     records, builds the Merkle tree over all records, plus the root over all
//!     records from it (a published root checked, as `verify`'s `check_roots`) —
//!     vs raw SHA-256 over the same bytes. Verify runs on
//!     `xdv::operate::fastread::verify_threads()` threads (the machine's available
//!     parallelism; the printed line names the number) with four interleaved
//!     SHA-NI streams per thread; the baseline is one `Sha256::digest` on one
//!     thread. Goal: ratio ≥ 0.8. Measured (December, 2 cores shared, load 8–13):
//!     0.20–0.25 (main before: 0.13–0.17, side by side); after the unit pipeline
//!     (`fastread.rs`: walk overlapped with hashing, records checked in place,
//!     Merkle subtrees per unit, unrolled lanes, huge-page outputs), load 6–7:
//!     0.26–0.45 (one thread: 0.29–0.32). Audit format 2 (`docs/audit.md`, Merkle
//!     tree: leaf = the record hash, node = one compression from its own IV) cuts a
//!     record from 5 SHA-256 blocks (record 2, Merkle leaf 1, node 2) to 3 (record 2,
//!     node 1) against 2.1 for its raw bytes. Side by side with the format-1 build
//!     (main at 3ed54f5), alternating, 5 runs each, load 5 on the 2 shared cores
//!     (Intel Xeon): one thread 0.23–0.24 → 0.30–0.31 (288–305 → 368–384 MiB/s, 1.28×);
//!     two threads 0.24–0.29 → 0.28–0.31. Load 1.2–1.5, the same way (8 runs each of
//!     the two binaries on 2 threads, 3 on one): two threads 0.36–0.54 → 0.52–0.75
//!     (473–687 → 676–959 MiB/s), one thread 0.28–0.32 → 0.41–0.44. In a
//!     loaded profile of one thread the lanes take about 95 of the read's ~170 ms, at 58–68
//!     ns a block against 49 for raw `sha2` in the same runs, so 3 blocks against 2.1
//!     bound one thread near 0.7 before the walk, the checks and page faults; the
//!     goal needs the second core free (`docs/operate.md`, Performance).
//!
//! Usage: `cargo xdv bench replay [runs] [--verify-only] [--no-qemu]` (default 5 runs; medians;
//! `--verify-only`: part (b) alone; `--no-qemu`: without (a')).

use crate::report::{median, print_json};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::time::{Duration, Instant};
use xdv::operate::fastread::verify_threads;
use xdv::operate::fixture::{self, FixtureOptions};
use xdv::operate::image::{LoadOptions, load_node};
use xdv::operate::replay::read_audit;
use xdv_audit::merkle::MerkleAccumulator;
use xdv_audit::{AuditLog, RecordBody};
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

const VERIFY_REGION_BYTES: usize = 64 << 20;

fn replay_speed(runs: usize) -> Result<(f64, f64, usize)> {
    let dir = std::env::temp_dir().join(format!("xdv-bench-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = FixtureOptions {
        nodes: 3,
        run_ms: 40_000,
        tasks: 1_500,
        silent: None,
        crash: None,
        snapshot_threshold: None,
        partition: None,
        corrupt: None,
    };
    let run = fixture::build(&dir, &opts)?;
    let node_busy = run.busy[0].as_secs_f64();
    let node_rate = run.applied[0] as f64 / node_busy;
    println!(
        "node 1 (in-process cluster of 3, {} tasks): applied {} entries in {:.1} ms of its own time = {:.0} entries/s",
        run.submitted,
        run.applied[0],
        node_busy * 1e3,
        node_rate
    );
    let (host, entries) = time_replay(&dir.join("node1.ram"), runs)?;
    let host_rate = entries as f64 / host;
    println!(
        "host replay of node1.ram (open the Raft region, read the audit region, re-apply, compare): {entries} entries in {:.1} ms = {host_rate:.0} entries/s",
        host * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok((host_rate, node_rate, entries))
}

/// Median wall time of `runs` host replays of the RAM file at `ram` (s), and the
/// entries each replayed; a replay that does not match fails the bench.
fn time_replay(ram: &std::path::Path, runs: usize) -> Result<(f64, usize)> {
    let img = load_node(ram, &LoadOptions::default())?;
    let mut times = Vec::new();
    let mut entries = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = xdv::operate::replay(&img)?;
        times.push(t.elapsed());
        if !r.verdict.ok() {
            bail!(
                "the replay of {} did not match: {:?}",
                ram.display(),
                r.verdict
            );
        }
        entries = r.steps.len();
    }
    times.sort();
    Ok((median(&times).as_secs_f64(), entries))
}

/// (a'): a real node's apply rate vs the host's replay of its RAM file.
fn replay_real(runs: usize) -> Result<(f64, f64, usize)> {
    use crate::cluster::{Batching, Pace, TRIVIAL_WAT, load};
    let mut tb =
        xdv::testbed::Testbed::launch("bench-replay", 1, xdv::switch::Faults::default(), 1)?;
    tb.leader(&[1], Duration::from_secs(180))?;
    let module = wat::parse_str(TRIVIAL_WAT)?;
    let paces: Vec<(u16, Pace)> = (0..6)
        .map(|_| {
            (
                tb.port(1),
                Pace::Closed {
                    window: 3,
                    run: Duration::from_secs(6),
                },
            )
        })
        .collect();
    let tally = load(&tb.keys, &module, &paces, Batching::SINGLE)?;
    let v = tb.view(1)?;
    let node_rate = v.applied as f64 / (v.loop_busy_us.max(1) as f64 / 1e6);
    println!(
        "node 1 (QEMU, TCG; {} tasks from 6 clients): applied {} entries in {:.1} ms of its loop's working time = {node_rate:.0} entries/s",
        tally.done_at.len(),
        v.applied,
        v.loop_busy_us as f64 / 1e3
    );
    tb.kill(1);
    let (host, entries) = time_replay(&tb.dir.join("node1.ram"), runs)?;
    let host_rate = entries as f64 / host;
    println!(
        "host replay of that node's RAM file: {entries} entries in {:.1} ms = {host_rate:.0} entries/s",
        host * 1e3
    );
    Ok((host_rate, node_rate, entries))
}

/// A full 64 MiB region of node-like records; returns (region, bytes used).
fn full_region() -> Result<(Vec<u8>, usize)> {
    let mut region = vec![0u8; VERIFY_REGION_BYTES];
    let used;
    {
        let (mut log, _) =
            AuditLog::open(&mut region, NodeId(1)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut i = 0u64;
        loop {
            i += 1;
            let applied = RecordBody::RaftApplied {
                index: i,
                term: 1,
                entry_hash: Hash32([i as u8; 32]),
            };
            let state = RecordBody::Custom {
                tag: xdv_node::AUDIT_TAG_APPLIED,
                bytes: xdv_cluster::mgmt::encode(&(i, "AssignTask", Hash32([(i >> 8) as u8; 32]))),
            };
            let a = log.append(Timestamp(2 * i), CoreId(0), &applied);
            let b = log.append(Timestamp(2 * i + 1), CoreId(0), &state);
            if a.is_err() || b.is_err() {
                break;
            }
        }
        used = log.bytes_used() as usize;
    }
    Ok((region, used))
}

fn verify_ratio(runs: usize) -> Result<(f64, f64, u64)> {
    let (region, used) = full_region()?;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let mut records = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let a = read_audit(&region);
        // The published-root check of `verify` (`check_roots`): the root over all
        // records, from the tree `read_audit` built.
        let published = a.root_at(a.hashes.len() as u64);
        black_box(published);
        ours.push(t.elapsed());
        let report = a
            .verdict
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the bench region does not verify: {e:?}"))?;
        let mut acc = MerkleAccumulator::new();
        for h in &a.hashes {
            acc.push(h);
        }
        if published != Some(acc.root()) || report.merkle_root != acc.root() {
            bail!("the Merkle roots of the fast path differ from the accumulator's");
        }
        records = a.hashes.len() as u64;
        let t = Instant::now();
        black_box(Sha256::digest(&region[..used]));
        base.push(t.elapsed());
    }
    ours.sort();
    base.sort();
    let threads = verify_threads();
    let mbps = |d: Duration| used as f64 / d.as_secs_f64() / (1 << 20) as f64;
    let (o, b) = (mbps(median(&ours)), mbps(median(&base)));
    println!(
        "verify of a full 64 MiB audit region ({records} records, {used} bytes) on {threads} threads: {o:.0} MiB/s; raw SHA-256 over the same bytes (1 thread): {b:.0} MiB/s; ratio {:.2} (goal >= 0.8)",
        o / b
    );
    Ok((o, b, records))
}

pub fn run(args: &[String]) -> Result<()> {
    let verify_only = args.iter().any(|a| a == "--verify-only");
    let no_qemu = args.iter().any(|a| a == "--no-qemu");
    let runs = match args.iter().find(|a| !a.starts_with("--")) {
        Some(s) => s.parse::<usize>().context("runs must be a number")?,
        None => 5,
    };
    if !(1..=100).contains(&runs) {
        bail!("runs must be 1..=100");
    }
    if let Some(a) = args
        .iter()
        .find(|a| a.starts_with("--") && *a != "--verify-only" && *a != "--no-qemu")
    {
        bail!("unknown option {a} (have --verify-only, --no-qemu)");
    }
    if verify_only {
        let (ours, base, records) = verify_ratio(runs)?;
        print_json(
            "replay-verify",
            "MiB/s (verify of a full audit region vs raw SHA-256 over the same bytes)",
            ours,
            base,
            serde_json::json!({ "verify_records": records, "verify_threads": verify_threads() }),
        );
        return Ok(());
    }
    let (host, node, entries) = replay_speed(runs)?;
    println!(
        "replay: host / node = {:.1}x (goal >= 10x; the node in this process, native)",
        host / node
    );
    let real = if no_qemu {
        None
    } else {
        let (h, n, e) = replay_real(runs)?;
        println!(
            "replay: host / node = {:.1}x (goal >= 10x; the node in QEMU under TCG)",
            h / n
        );
        Some((h, n, e))
    };
    let (ours, base, records) = verify_ratio(runs)?;
    print_json(
        "replay",
        "entries per second (host replay vs the node's own apply rate)",
        host,
        node,
        serde_json::json!({
            "entries": entries,
            "qemu_node": real.map(|(h, n, e)| serde_json::json!({
                "host_entries_per_s": h, "node_entries_per_s": n, "entries": e, "ratio": h / n
            })),
            "verify_mib_per_s": ours,
            "sha256_mib_per_s": base,
            "verify_ratio": ours / base,
            "verify_threads": verify_threads(),
            "verify_records": records,
        }),
    );
    Ok(())
}
