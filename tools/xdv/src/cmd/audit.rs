//! `cargo xdv audit ...`: verify, show and prove a node's audit region from outside.
//!
//! The input is a node's RAM file (QEMU `memory-backend-file`) or a raw region file.
//! Without `--offset` the region is looked for at the kernel default
//! (`0x0400_0000`, where the RAM file offset equals the physical address), then at
//! every 4 KiB-aligned offset of the file. Only the region's bytes are read.

use anyhow::{Context, Result, anyhow, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use xdv_audit::format::{DATA_START, MAX_REGION_BYTES, Superblock};
use xdv_audit::merkle::{
    consistency_proof, inclusion_proof, merkle_root, verify_consistency, verify_inclusion,
};
use xdv_audit::{DEFAULT_REGION_PHYS, RecordBody, RecordView, Records, find_region, verify_region};
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
    /// Verify the whole chain; print record count, head hash, Merkle root. Exits
    /// non-zero naming the first bad record (sequence, offset, what failed).
    Verify {
        /// A node's RAM file (e.g. target/xdv/cluster/node1.ram) or a raw region file.
        file: PathBuf,
        #[command(flatten)]
        at: At,
    },
    /// Print the records (one line each, or one JSON object per line).
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
        Sub::Verify { file, at } => verify(&file, at.offset),
        Sub::Show {
            file,
            at,
            from,
            json,
        } => show(&file, at.offset, from, json),
        Sub::Prove { file, seq, at } => prove(&file, at.offset, seq),
        Sub::Consistency {
            file,
            old_size,
            new_size,
            at,
        } => consistency(&file, at.offset, old_size, new_size),
    }
}

/// A region read from a file, and where it was.
struct Loaded {
    offset: u64,
    bytes: Vec<u8>,
}

fn read_at(f: &mut File, at: u64, len: usize) -> Result<Vec<u8>> {
    f.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Region size claimed by a superblock at `at`, if there is a valid one.
fn region_size_at(f: &mut File, at: u64) -> Result<Option<u64>> {
    let head = read_at(f, at, DATA_START)?;
    let copies = Superblock::read_both(&head);
    Ok(Superblock::current(&copies).map(|(_, sb)| sb.region_bytes))
}

fn load(path: &Path, offset: Option<u64>) -> Result<Loaded> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_len = f.metadata()?.len();
    let offset = match offset {
        Some(o) => o,
        None if region_size_at(&mut f, DEFAULT_REGION_PHYS)?.is_some() => DEFAULT_REGION_PHYS,
        None if region_size_at(&mut f, 0)?.is_some() => 0,
        None => {
            if file_len > MAX_SCAN_FILE_BYTES {
                bail!("{} is {file_len} bytes; pass --offset", path.display());
            }
            let all = read_at(&mut f, 0, file_len as usize)?;
            find_region(&all).ok_or_else(|| {
                anyhow!("no audit region (superblock) found in {}", path.display())
            })? as u64
        }
    };
    // An unreadable superblock still gets a region-sized read so the verifier
    // reports it precisely.
    let size = region_size_at(&mut f, offset)?
        .filter(|&s| s <= MAX_REGION_BYTES as u64)
        .unwrap_or(DATA_START as u64);
    let bytes = read_at(&mut f, offset, size as usize)?;
    Ok(Loaded { offset, bytes })
}

fn verify(path: &Path, offset: Option<u64>) -> Result<()> {
    let l = load(path, offset)?;
    println!("region: {} at offset {:#x}", path.display(), l.offset);
    match verify_region(&l.bytes) {
        Ok(r) => {
            println!("node:        {}", r.node);
            println!("records:     {}", r.records);
            println!("bytes used:  {} of {}", r.bytes_used, r.region_bytes);
            println!("boot count:  {}", r.boot_count);
            println!("head hash:   {}", r.head_hash);
            println!("merkle root: {}", r.merkle_root);
            if r.superblock_copies_valid < 2 {
                println!("note: one superblock copy is invalid (torn write); the other is used");
            }
            if r.torn_tail_bytes > 0 {
                println!(
                    "note: {} bytes of a torn/in-progress append follow the chain",
                    r.torn_tail_bytes
                );
            }
            println!("OK: chain verifies");
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
                "audit chain damaged at record seq {} (offset {:#x}): {}",
                e.seq,
                e.offset,
                e.what
            )
        }
    }
}

/// All records of a verified region (fails on damage).
fn verified_records(l: &Loaded) -> Result<Vec<RecordView>> {
    let r = verify_region(&l.bytes).map_err(|e| anyhow!("audit chain damaged: {e}"))?;
    let region = &l.bytes[..r.bytes_used as usize];
    Records::new(region, r.node)
        .map(|v| v.map_err(|e| anyhow!("{e}")))
        .collect()
}

fn show(path: &Path, offset: Option<u64>, from: u64, json: bool) -> Result<()> {
    let l = load(path, offset)?;
    let copies = Superblock::read_both(&l.bytes);
    let (_, sb) = Superblock::current(&copies).ok_or_else(|| anyhow!("no valid superblock"))?;
    let region = &l.bytes[..l.bytes.len().min(sb.region_bytes as usize)];
    for item in Records::new(region, sb.node) {
        let v = item.map_err(|e| anyhow!("audit chain damaged: {e}"))?;
        if v.header.seq < from {
            continue;
        }
        if json {
            println!("{}", record_json(&v));
        } else {
            println!(
                "#{:<6} @{:#08x} t={:<8} {} {:<14} {} hash={}",
                v.header.seq,
                v.offset,
                v.header.stamp.0,
                v.header.core,
                RecordBody::kind_name(v.header.kind),
                body_text(&v.body),
                v.hash.short()
            );
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

fn prove(path: &Path, offset: Option<u64>, seq: u64) -> Result<()> {
    let recs = verified_records(&load(path, offset)?)?;
    let entries: Vec<Hash32> = recs.iter().map(|r| r.hash).collect();
    let size = entries.len();
    let index = usize::try_from(seq)?;
    if index >= size {
        bail!("record {seq} does not exist: the log has {size} records");
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
    verify_inclusion(&entries[index], seq, size as u64, &proof, &root)
        .map_err(|e| anyhow!("inclusion proof does not verify: {e}"))?;
    println!("OK: inclusion proof verifies");
    Ok(())
}

fn consistency(path: &Path, offset: Option<u64>, old: u64, new: u64) -> Result<()> {
    let recs = verified_records(&load(path, offset)?)?;
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
