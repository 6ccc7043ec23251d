//! `cargo xdv bench audit`: appending 128-byte payloads to an audit region, against
//! raw SHA-256 over the same record bytes in the same run (the limit: every append
//! must hash its record once; encoding the payload into the region, the header and
//! the superblock update are our overhead, see `docs/audit.md` § Performance). The Merkle accumulator is folded lazily
//! (`merkle_root`), so its cost is reported on a separate line.
//!
//! Usage: `cargo xdv bench audit [runs]` (default 7; median of the runs).

use crate::report::{median, print_json};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::time::{Duration, Instant};
use xdv_audit::{AuditLog, DEFAULT_REGION_SIZE, RecordBody};
use xdv_types::{CoreId, NodeId, Timestamp};

const PAYLOAD_BYTES: usize = 128;
const DEFAULT_RUNS: usize = 7;
const MAX_RUNS: usize = 1000;
const NODE: NodeId = NodeId(1);

pub fn run(args: &[String]) -> Result<()> {
    let runs = match args.first() {
        Some(s) => s.parse::<usize>().context("runs must be a number")?,
        None => DEFAULT_RUNS,
    };
    if runs == 0 || runs > MAX_RUNS {
        bail!("runs must be 1..={MAX_RUNS}");
    }
    let sha_ni = std::is_x86_feature_detected!("sha");
    let body = RecordBody::Custom {
        tag: 1,
        bytes: vec![0xa5; PAYLOAD_BYTES],
    };
    let size = DEFAULT_REGION_SIZE as usize;

    // One region filled once, to learn n and the exact bytes each append hashes.
    let mut region = vec![0u8; size];
    let n = fill(&mut region, &body)?;
    let spans = record_spans(&mut region)?;
    let hashed_bytes: usize = spans.iter().map(|&(o, l)| l - o).sum();

    // Ours and the baseline alternate within each run, so load changes on a shared
    // machine hit both alike.
    let mut fresh = vec![0u8; size];
    let mut append_times = Vec::with_capacity(runs);
    let mut merkle_times = Vec::with_capacity(runs);
    let mut base_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        fresh.fill(0);
        let (mut log, _) = AuditLog::open(&mut fresh, NODE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        for i in 0..n {
            log.append(Timestamp(i), CoreId(0), &body)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        append_times.push(t.elapsed());
        let t = Instant::now();
        black_box(log.merkle_root());
        merkle_times.push(t.elapsed());
        let t = Instant::now();
        for &(o, end) in &spans {
            black_box(Sha256::digest(&region[o..end]));
        }
        base_times.push(t.elapsed());
    }
    append_times.sort();
    merkle_times.sort();
    base_times.sort();

    let per_s = |d: Duration| n as f64 / d.as_secs_f64();
    let (ours, base) = (per_s(median(&append_times)), per_s(median(&base_times)));
    let merkle = per_s(median(&merkle_times));
    let mb = |rps: f64| rps * PAYLOAD_BYTES as f64 / 1e6;
    println!(
        "audit append: {n} records of {PAYLOAD_BYTES}-byte payload into a {size}-byte region, {runs} runs (median)"
    );
    println!(
        "SHA-NI: {}",
        if sha_ni {
            "yes (sha2 uses it via cpufeatures)"
        } else {
            "no"
        }
    );
    println!(
        "ours  (append, durable):   {ours:>12.0} records/s  {:>8.1} MB/s payload",
        mb(ours)
    );
    println!(
        "limit (SHA-256 same bytes): {base:>12.0} records/s  {:>8.1} MB/s payload ({} bytes hashed per record)",
        mb(base),
        hashed_bytes / n as usize
    );
    println!("ratio: {:.3} (goal >= 0.8)", ours / base);
    println!("merkle_root catch-up over {n} records: {merkle:.0} records/s");
    print_json(
        "audit",
        "records/s",
        ours,
        base,
        serde_json::json!({
            "sha_ni": sha_ni,
            "records": n,
            "payload_bytes": PAYLOAD_BYTES,
            "ours_mb_s": mb(ours),
            "baseline_mb_s": mb(base),
            "merkle_records_s": merkle,
        }),
    );
    Ok(())
}

/// Appends until the next record would hit the RegionFull reserve; returns the count.
fn fill(region: &mut [u8], body: &RecordBody) -> Result<u64> {
    let (mut log, _) = AuditLog::open(region, NODE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut n = 0;
    // A record never exceeds 29 + 2048 + 64 bytes.
    while log.bytes_free() > 29 + 2 * PAYLOAD_BYTES as u64 + 64 {
        log.append(Timestamp(n), CoreId(0), body)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        n += 1;
    }
    Ok(n)
}

/// (start, end) of the bytes each record's hash covers.
fn record_spans(region: &mut [u8]) -> Result<Vec<(usize, usize)>> {
    let (log, _) = AuditLog::open(region, NODE).map_err(|e| anyhow::anyhow!("{e}"))?;
    log.records()
        .map(|r| {
            let r = r.map_err(|e| anyhow::anyhow!("{e}"))?;
            let o = r.offset as usize;
            Ok((o, o + r.header.record_bytes() - 32))
        })
        .collect()
}
