//! `cargo xdv audit ...`: verify, show and prove a node's audit region from outside.
//!
//! The input is a node's RAM file (QEMU `memory-backend-file`) or a raw region file.
//! Without `--offset` the region is looked for at the kernel default
//! (`0x0400_0000`, where the RAM file offset equals the physical address), then at
//! every 4 KiB-aligned offset of the file; when no superblock copy is valid
//! anywhere, at the default offset and at 0 by its records. Only the region's bytes
//! are read. A damaged region is still read record by record: every readable
//! record is checked and every segment and damaged range is listed.

use anyhow::{Context, Result, anyhow, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use xdv_audit::format::{
    DATA_START, FIND_ALIGN, FORMAT_VERSION, MAGIC, MAX_REGION_BYTES, MIN_REGION_BYTES,
    SUPERBLOCK_OFFSETS, Superblock, find_record,
};
use xdv_audit::merkle::{
    consistency_proof, inclusion_proof, merkle_root, verify_consistency, verify_inclusion,
};
use xdv_audit::{
    DEFAULT_REGION_PHYS, DEFAULT_REGION_SIZE, DamagedRange, Inspection, RecordBody, RecordView,
    RegionScan, Scanned, Scanner, find_region, inspect_region, region_node,
};
use xdv_types::Hash32;

/// Largest file read whole when searching for a region (bigger files: pass --offset).
const MAX_SCAN_FILE_BYTES: u64 = 8 << 30;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Verify the region: list its superblocks, chain segments and damaged ranges,
    /// check every readable record; print record count, head hash, Merkle root.
    /// Exits non-zero naming the first damage the node has not recorded (sequence,
    /// offset, what failed), or when no superblock copy is valid.
    Verify {
        /// A node's RAM file (e.g. target/xdv/cluster/node1.ram) or a raw region file.
        file: PathBuf,
        #[command(flatten)]
        at: At,
    },
    /// Print the records (one line each, or one JSON object per line), and the
    /// damaged ranges between them.
    Show {
        /// A node's RAM file (e.g. target/xdv/cluster/node1.ram) or a raw region file.
        file: PathBuf,
        #[command(flatten)]
        at: At,
        /// First sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// One JSON object per record (seq, offset, kind, stamp, node, core, hash, ...).
        #[arg(long)]
        json: bool,
    },
    /// Print and verify an RFC 9162 inclusion proof of record <seq> in the whole log.
    Prove {
        /// A node's RAM file (e.g. target/xdv/cluster/node1.ram) or a raw region file.
        file: PathBuf,
        /// Sequence number of the record to prove (0-based).
        seq: u64,
        #[command(flatten)]
        at: At,
    },
    /// Print and verify an RFC 9162 consistency proof between two tree sizes.
    Consistency {
        /// A node's RAM file (e.g. target/xdv/cluster/node1.ram) or a raw region file.
        file: PathBuf,
        /// Size (record count) of the older log.
        old_size: u64,
        /// Size (record count) of the newer log; at most the records in the region.
        new_size: u64,
        #[command(flatten)]
        at: At,
    },
}

#[derive(clap::Args)]
struct At {
    /// Byte offset of the region in the file (decimal or 0x hex).
    #[arg(long, value_parser = parse_offset)]
    offset: Option<u64>,
    /// Region size in bytes, when no superblock copy says it (default: the kernel's
    /// 4 MiB, or the whole file for a region file at offset 0).
    #[arg(long, value_parser = parse_offset)]
    size: Option<u64>,
}

fn parse_offset(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|e| format!("bad offset `{s}`: {e}"))
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Sub::Verify { file, at } => verify(&file, &at),
        Sub::Show {
            file,
            at,
            from,
            json,
        } => show(&file, &at, from, json),
        Sub::Prove { file, seq, at } => prove(&file, &at, seq),
        Sub::Consistency {
            file,
            old_size,
            new_size,
            at,
        } => consistency(&file, &at, old_size, new_size),
    }
}

/// A region read from a file, and where it was.
struct Loaded {
    offset: u64,
    bytes: Vec<u8>,
    /// The size was not read from a superblock.
    size_assumed: bool,
}

fn read_at(f: &mut File, at: u64, len: usize) -> Result<Vec<u8>> {
    f.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Region size claimed by a superblock at `at`, if there is a valid, sane one.
fn region_size_at(f: &mut File, at: u64) -> Result<Option<u64>> {
    let head = read_at(f, at, DATA_START)?;
    let copies = Superblock::read_both(&head);
    Ok(Superblock::current(&copies)
        .map(|(_, sb)| sb.region_bytes)
        .filter(|&s| (MIN_REGION_BYTES as u64..=MAX_REGION_BYTES as u64).contains(&s)))
}

/// The size to read at `offset` without a superblock.
fn assumed_size(file_len: u64, offset: u64, size: Option<u64>) -> u64 {
    let size = size.unwrap_or(if offset == 0 {
        file_len.min(MAX_REGION_BYTES as u64)
    } else {
        DEFAULT_REGION_SIZE
    });
    size.min(MAX_REGION_BYTES as u64)
}

/// Where the region is: `--offset`; a valid superblock copy at the default offset,
/// at 0, or at any 4 KiB-aligned offset; with none valid anywhere, a record that
/// verifies at `DATA_START` of a 4 KiB-aligned offset, or records in the region at
/// the default offset.
fn locate(f: &mut File, path: &Path, file_len: u64, at: &At) -> Result<u64> {
    if let Some(o) = at.offset {
        return Ok(o);
    }
    for o in [DEFAULT_REGION_PHYS, 0] {
        if region_size_at(f, o)?.is_some() {
            return Ok(o);
        }
    }
    if file_len > MAX_SCAN_FILE_BYTES {
        bail!("{} is {file_len} bytes; pass --offset", path.display());
    }
    let all = read_at(f, 0, file_len as usize)?;
    if let Some(o) = find_region(&all) {
        return Ok(o as u64);
    }
    let by_first_record = (0..all.len())
        .step_by(FIND_ALIGN)
        .find(|&o| find_record(&all, o + DATA_START, o + DATA_START + 1, None, 0).is_some());
    if let Some(o) = by_first_record {
        return Ok(o as u64);
    }
    let o = DEFAULT_REGION_PHYS as usize;
    let end = o
        .saturating_add(assumed_size(file_len, DEFAULT_REGION_PHYS, at.size) as usize)
        .min(all.len());
    if o < end && region_node(&all[o..end]).is_some() {
        return Ok(DEFAULT_REGION_PHYS);
    }
    bail!(
        "no audit region (no valid superblock, no record) found in {}",
        path.display()
    )
}

fn load(path: &Path, at: &At) -> Result<Loaded> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_len = f.metadata()?.len();
    let offset = locate(&mut f, path, file_len, at)?;
    let (size, size_assumed) = match region_size_at(&mut f, offset)? {
        Some(s) => (s, false),
        None => (assumed_size(file_len, offset, at.size), true),
    };
    let bytes = read_at(&mut f, offset, size as usize)?;
    Ok(Loaded {
        offset,
        bytes,
        size_assumed,
    })
}

/// What is wrong with a superblock copy that does not decode.
fn superblock_problem(bytes: &[u8], at: usize) -> String {
    let Some(b) = bytes.get(at..at + 10) else {
        return "missing (file too short)".into();
    };
    if b[..8] != MAGIC {
        return "INVALID (no magic)".into();
    }
    let version = u16::from_le_bytes([b[8], b[9]]);
    if version != u16::from(FORMAT_VERSION) {
        return format!(
            "format version {version}: this verifier reads version {FORMAT_VERSION} only"
        );
    }
    "INVALID (checksum: damaged or torn)".into()
}

fn print_superblocks(insp: &Inspection, bytes: &[u8]) {
    for (i, (copy, at)) in insp.superblocks.iter().zip(SUPERBLOCK_OFFSETS).enumerate() {
        let name = ["A", "B"][i];
        match copy {
            Some(sb) => println!(
                "superblock {name}: valid, generation {}, end {:#x}, next seq {}, boot {}",
                sb.generation, sb.end_offset, sb.record_count, sb.boot_count
            ),
            None => println!("superblock {name}: {}", superblock_problem(bytes, at)),
        }
    }
}

fn damage_line(d: &DamagedRange, torn_at: Option<u64>) -> String {
    let last = d.last_good.map_or_else(
        || "none".to_string(),
        |(s, h)| format!("seq {s} hash {}", h.short()),
    );
    let after = d.resumed_seq.map_or_else(
        || "no record after it".to_string(),
        |s| format!("resumes at seq {s}"),
    );
    let status = match d.recorded_by {
        Some(s) => format!("recorded by Damaged record seq {s}"),
        None if torn_at == Some(d.offset) => {
            "torn append beyond the committed end (cut at the next boot)".into()
        }
        None => "NOT RECORDED by the node".into(),
    };
    format!(
        "damaged:   {:#x}..{:#x} ({} bytes): {}; last good record {last}; {after}; {status}",
        d.offset,
        d.offset + d.bytes,
        d.bytes,
        d.what
    )
}

fn print_scan(scan: &RegionScan, torn_at: Option<u64>) {
    println!("node:        {}", scan.node);
    for (i, s) in scan.segments.iter().enumerate() {
        println!(
            "segment {i}: seq {}..={} ({} records) at {:#x}..{:#x}, {}",
            s.first_seq,
            s.last_seq,
            s.records,
            s.offset,
            s.end,
            if s.linked {
                "continues the chain"
            } else {
                "its first record's predecessor is lost"
            }
        );
    }
    if scan.segments_total > scan.segments.len() as u64 {
        println!(
            "... and {} more segments",
            scan.segments_total - scan.segments.len() as u64
        );
    }
    for d in &scan.damaged {
        println!("{}", damage_line(d, torn_at));
    }
    if scan.damaged_total > scan.damaged.len() as u64 {
        println!(
            "... and {} more damaged ranges",
            scan.damaged_total - scan.damaged.len() as u64
        );
    }
    println!("records:     {}", scan.records);
    println!("head hash:   {}", scan.head);
    println!("merkle root: {}", scan.merkle_root());
}

fn verify(path: &Path, at: &At) -> Result<()> {
    let l = load(path, at)?;
    println!("region: {} at offset {:#x}", path.display(), l.offset);
    if l.size_assumed {
        println!(
            "note: no valid superblock: region size assumed to be {} bytes (--size)",
            l.bytes.len()
        );
    }
    let insp = inspect_region(&l.bytes);
    print_superblocks(&insp, &l.bytes);
    let torn_at = insp
        .scan
        .as_ref()
        .and_then(|s| s.trailing.as_ref())
        .filter(|_| insp.torn_tail_bytes > 0)
        .map(|t| t.offset);
    match &insp.scan {
        Some(scan) => print_scan(scan, torn_at),
        None => println!("no readable record of any node"),
    }
    match insp.verdict {
        Ok(r) => {
            println!("bytes used:  {} of {}", r.bytes_used, r.region_bytes);
            println!("boot count:  {}", r.boot_count);
            if r.superblock_copies_valid < 2 {
                println!("note: one superblock copy is invalid (torn write); the other is used");
            }
            if r.torn_tail_bytes > 0 {
                println!(
                    "note: {} bytes of a torn/in-progress append follow the chain",
                    r.torn_tail_bytes
                );
            }
            if r.damaged.is_empty() {
                println!("OK: chain verifies");
            } else {
                println!(
                    "OK: every readable record verifies; {} damaged ranges, each recorded by the node",
                    r.damaged.len()
                );
            }
            Ok(())
        }
        Err(e) => {
            println!(
                "FAILED: first bad record: seq {} at region offset {:#x} (file offset {:#x}): {}",
                e.seq,
                e.offset,
                l.offset + e.offset,
                e.what
            );
            bail!(
                "audit region damaged at record seq {} (offset {:#x}): {}",
                e.seq,
                e.offset,
                e.what
            )
        }
    }
}

/// The readable records of a region that verifies (damage the node recorded is
/// allowed: its records are then the readable ones, in region order).
fn verified_records(l: &Loaded) -> Result<Vec<RecordView>> {
    let insp = inspect_region(&l.bytes);
    let r = insp
        .verdict
        .map_err(|e| anyhow!("audit region damaged: {e}"))?;
    let region = &l.bytes[..r.bytes_used as usize];
    Ok(Scanner::new(region, r.node)
        .filter_map(|item| match item {
            Scanned::Record { view, .. } => Some(view),
            Scanned::Damaged(_) => None,
        })
        .collect())
}

fn show(path: &Path, at: &At, from: u64, json: bool) -> Result<()> {
    let l = load(path, at)?;
    let node = region_node(&l.bytes).ok_or_else(|| anyhow!("no superblock and no record"))?;
    let region = match Superblock::current(&Superblock::read_both(&l.bytes)) {
        Some((_, sb)) => &l.bytes[..l.bytes.len().min(sb.region_bytes as usize)],
        None => &l.bytes[..],
    };
    for item in Scanner::new(region, node) {
        match item {
            Scanned::Record { view: v, .. } if v.header.seq < from => {}
            Scanned::Record { view: v, .. } if json => println!("{}", record_json(&v)),
            Scanned::Record { view: v, .. } => println!(
                "#{:<6} @{:#08x} t={:<8} {} {:<14} {} hash={}",
                v.header.seq,
                v.offset,
                v.header.stamp.0,
                v.header.core,
                RecordBody::kind_name(v.header.kind),
                body_text(&v.body),
                v.hash.short()
            ),
            Scanned::Damaged(d) if json => println!(
                "{}",
                serde_json::json!({
                    "damaged": {"offset": d.offset, "bytes": d.bytes, "what": d.what.to_string(),
                        "last_good_seq": d.last_good.map(|(s, _)| s), "resumed_seq": d.resumed_seq},
                })
            ),
            Scanned::Damaged(d) => println!("!! {}", damage_line(&d, None)),
        }
    }
    Ok(())
}

/// A record body's fields as (name, value) pairs, in declaration order.
fn body_fields(b: &RecordBody) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    match b {
        RecordBody::Boot { count } => vec![("count", json!(count))],
        RecordBody::Recovered { dropped_bytes } => vec![("dropped_bytes", json!(dropped_bytes))],
        RecordBody::RegionFull { records, bytes } => {
            vec![("records", json!(records)), ("bytes", json!(bytes))]
        }
        RecordBody::TaskEnqueued { task, core } => {
            vec![("task", json!(task.0)), ("core", json!(core.0))]
        }
        RecordBody::TaskExecuted {
            task,
            ticks,
            output_hash,
        } => vec![
            ("task", json!(task.0)),
            ("ticks", json!(ticks)),
            ("output_hash", json!(output_hash.to_string())),
        ],
        RecordBody::BudgetExceeded { task, ticks } => {
            vec![("task", json!(task.0)), ("ticks", json!(ticks))]
        }
        RecordBody::GuardDenied { task, capability } => {
            vec![("task", json!(task.0)), ("capability", json!(capability.0))]
        }
        RecordBody::Trapped {
            task,
            ticks,
            reason,
        } => vec![
            ("task", json!(task.0)),
            ("ticks", json!(ticks)),
            ("reason", json!(reason)),
        ],
        RecordBody::ConsoleCommand { line } => vec![("line", json!(line))],
        RecordBody::ReplayHead { len, head_hash } => vec![
            ("len", json!(len)),
            ("head_hash", json!(head_hash.to_string())),
        ],
        RecordBody::RaftApplied {
            index,
            term,
            entry_hash,
        } => vec![
            ("index", json!(index)),
            ("term", json!(term)),
            ("entry_hash", json!(entry_hash.to_string())),
        ],
        RecordBody::MerkleRootPublished { size, root } => {
            vec![("size", json!(size)), ("root", json!(root.to_string()))]
        }
        RecordBody::RequestRefused { reason } => vec![("reason", json!(reason))],
        RecordBody::Custom { tag, bytes } => {
            vec![("tag", json!(tag)), ("bytes", json!(hex::encode(bytes)))]
        }
        RecordBody::Damaged {
            offset,
            bytes,
            last_good_seq,
            last_good_hash,
            resumed_seq,
        } => vec![
            ("offset", json!(offset)),
            ("bytes", json!(bytes)),
            ("last_good_seq", json!(last_good_seq)),
            ("last_good_hash", json!(last_good_hash.to_string())),
            ("resumed_seq", json!(resumed_seq)),
        ],
        RecordBody::SuperblocksRebuilt {
            records,
            end_offset,
        } => vec![
            ("records", json!(records)),
            ("end_offset", json!(end_offset)),
        ],
        RecordBody::Formatted { discarded_bytes } => {
            vec![("discarded_bytes", json!(discarded_bytes))]
        }
        RecordBody::AuditAlarm {
            used_bytes,
            high_water_bytes,
            region_bytes,
        } => vec![
            ("used_bytes", json!(used_bytes)),
            ("high_water_bytes", json!(high_water_bytes)),
            ("region_bytes", json!(region_bytes)),
        ],
        RecordBody::RefusalSummary {
            refused,
            first_reason,
            unrecorded,
        } => vec![
            ("refused", json!(refused)),
            ("first_reason", json!(first_reason)),
            ("unrecorded", json!(unrecorded)),
        ],
    }
}

/// The body as one JSON object of its fields (hashes and bytes in hex).
fn body_json(b: &RecordBody) -> serde_json::Value {
    serde_json::Value::Object(
        body_fields(b)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The body as `name=value` words (hashes shortened, text quoted).
fn body_text(b: &RecordBody) -> String {
    let words: Vec<String> = body_fields(b)
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(t) if k.ends_with("hash") || k == "root" => {
                format!("{k}={}", &t[..t.len().min(16)])
            }
            serde_json::Value::String(t) => format!("{k}=\"{}\"", t.escape_debug()),
            other => format!("{k}={other}"),
        })
        .collect();
    words.join(" ")
}

fn record_json(v: &RecordView) -> serde_json::Value {
    serde_json::json!({
        "seq": v.header.seq,
        "offset": v.offset,
        "kind": RecordBody::kind_name(v.header.kind),
        "stamp": v.header.stamp.0,
        "node": v.header.node.0,
        "core": v.header.core.0,
        "payload_bytes": v.header.payload_bytes,
        "body": body_json(&v.body),
        "text": body_text(&v.body),
        "prev_hash": v.prev_hash.to_string(),
        "hash": v.hash.to_string(),
    })
}

fn prove(path: &Path, at: &At, seq: u64) -> Result<()> {
    let recs = verified_records(&load(path, at)?)?;
    let entries: Vec<Hash32> = recs.iter().map(|r| r.hash).collect();
    let size = entries.len();
    // Tree index = position among readable records (= seq unless damage removed
    // earlier records).
    let Some(index) = recs.iter().position(|r| r.header.seq == seq) else {
        bail!(
            "record {seq} does not exist or is not readable: the log has {size} readable records"
        );
    };
    if index as u64 != seq {
        println!("note: record {seq} is leaf {index} (damaged records are not in the tree)");
    }
    let root = merkle_root(&entries, size).map_err(|e| anyhow!("{e}"))?;
    let proof = inclusion_proof(&entries, index, size).map_err(|e| anyhow!("{e}"))?;
    println!(
        "record:      {seq} ({})",
        RecordBody::kind_name(recs[index].header.kind)
    );
    println!("record hash: {}", entries[index]);
    println!("tree size:   {size}");
    println!("merkle root: {root}");
    println!("proof ({} hashes):", proof.len());
    for h in &proof {
        println!("  {h}");
    }
    verify_inclusion(&entries[index], index as u64, size as u64, &proof, &root)
        .map_err(|e| anyhow!("inclusion proof does not verify: {e}"))?;
    println!("OK: inclusion proof verifies");
    Ok(())
}

fn consistency(path: &Path, at: &At, old: u64, new: u64) -> Result<()> {
    let recs = verified_records(&load(path, at)?)?;
    let entries: Vec<Hash32> = recs.iter().map(|r| r.hash).collect();
    let (o, n) = (usize::try_from(old)?, usize::try_from(new)?);
    if o == 0 || o > n || n > entries.len() {
        bail!(
            "need 0 < old-size <= new-size <= {} (records in the log)",
            entries.len()
        );
    }
    let old_root = merkle_root(&entries, o).map_err(|e| anyhow!("{e}"))?;
    let new_root = merkle_root(&entries, n).map_err(|e| anyhow!("{e}"))?;
    let proof = consistency_proof(&entries, o, n).map_err(|e| anyhow!("{e}"))?;
    println!("old size {old}: root {old_root}");
    println!("new size {new}: root {new_root}");
    println!("proof ({} hashes):", proof.len());
    for h in &proof {
        println!("  {h}");
    }
    verify_consistency(old, new, &old_root, &new_root, &proof)
        .map_err(|e| anyhow!("consistency proof does not verify: {e}"))?;
    println!("OK: consistency proof verifies");
    Ok(())
}
