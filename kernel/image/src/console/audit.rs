//! `audit`, `audit tail [n]`, `audit verify`, `audit stress <n>`, `audit bench`.

use super::{CmdError, usage};
use crate::audit::{AUDIT, record};
use crate::service::Services;
use crate::{println, time};
use alloc::format;
use xdv_audit::RecordBody;
use xdv_types::CoreId;

const MAX_TAIL: usize = 100;
const MAX_STRESS: u64 = 1_000_000;

pub fn audit(_s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    match args {
        [] => summary(),
        ["tail"] => tail(10),
        ["tail", n] => tail(
            n.parse()
                .ok()
                .filter(|n| (1..=MAX_TAIL).contains(n))
                .ok_or_else(|| {
                    CmdError::Usage(format!("audit tail [1..={MAX_TAIL}] (got `{n}`)"))
                })?,
        ),
        ["verify"] => verify(),
        ["stress", n] => stress(
            _s,
            n.parse()
                .ok()
                .filter(|n| (1..=MAX_STRESS).contains(n))
                .ok_or_else(|| {
                    CmdError::Usage(format!("audit stress <1..={MAX_STRESS}> (got `{n}`)"))
                })?,
        ),
        ["bench"] => bench(_s),
        _ => Err(usage("audit")),
    }
}

fn disabled() -> CmdError {
    CmdError::Failed("audit is disabled on this node (see the boot log)".into())
}

fn summary() -> Result<(), CmdError> {
    let mut guard = AUDIT.lock();
    let a = guard.as_mut().ok_or_else(disabled)?;
    let root = a.merkle_root();
    println!(
        "audit: node {} boot {} records={} used={} free={} bytes head={} merkle={}{}",
        a.node(),
        a.boot_count(),
        a.len(),
        a.bytes_used(),
        a.bytes_free(),
        a.head_hash(),
        root,
        if a.is_full() { " FULL" } else { "" }
    );
    drop(guard);
    if let Some(line) = crate::audit::status_line() {
        println!("{line}");
    }
    Ok(())
}

fn tail(n: usize) -> Result<(), CmdError> {
    let guard = AUDIT.lock();
    let a = guard.as_ref().ok_or_else(disabled)?;
    for r in a.tail(n) {
        println!(
            "  #{} t={} core={} {:?} hash={}",
            r.header.seq,
            r.header.stamp.0,
            r.header.core.0,
            r.body,
            r.hash.short()
        );
    }
    Ok(())
}

fn verify() -> Result<(), CmdError> {
    let guard = AUDIT.lock();
    let a = guard.as_ref().ok_or_else(disabled)?;
    match a.verify_in_place() {
        Ok(r) => {
            println!(
                "audit verify: ok, {} records, head={} merkle={}",
                r.records, r.head_hash, r.merkle_root
            );
            Ok(())
        }
        Err(e) => Err(CmdError::Failed(format!("audit verify: FAILED at {e}"))),
    }
}

/// Appends `n` records as fast as possible, reporting what is durable every 100.
fn stress(s: &mut Services, n: u64) -> Result<(), CmdError> {
    s.poll(false);
    s.take_longest_gap_us();
    for i in 0..n {
        // Serve the node between slices: a long stress never stops consensus.
        if i % 256 == 255 {
            s.poll(false);
        }
        let seq = record(
            CoreId(0),
            &RecordBody::Custom {
                tag: 0x5354,
                bytes: i.to_le_bytes().to_vec(),
            },
        )
        .ok_or_else(|| CmdError::Failed(format!("append refused after {i} records")))?;
        if (i + 1) % 100 == 0 || i + 1 == n {
            let head = AUDIT
                .lock()
                .as_ref()
                .map(|a| a.head_hash())
                .unwrap_or_default();
            println!("audit: durable seq={seq} head={head}");
        }
    }
    s.poll(false);
    println!(
        "audit stress: the node was served at least every {} us",
        s.take_longest_gap_us()
    );
    Ok(())
}

fn bench(s: &mut Services) -> Result<(), CmdError> {
    const N: u64 = 2000;
    s.poll(false);
    let start = crate::arch::rdtsc();
    for i in 0..N {
        let payload = alloc::vec![(i % 251) as u8; 128];
        record(
            CoreId(0),
            &RecordBody::Custom {
                tag: 0x4245,
                bytes: payload,
            },
        )
        .ok_or_else(|| CmdError::Failed("append refused (region full?)".into()))?;
    }
    let ns = time::cycles_to_ns(crate::arch::rdtsc() - start).max(1);
    println!(
        "audit bench: {N} records of 128-byte payload in {} us = {} records/s",
        ns / 1000,
        N * 1_000_000_000 / ns
    );
    Ok(())
}
