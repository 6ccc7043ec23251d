//! The node's audit chain in its reserved region (`audit=` on the command line).
//!
//! Mapping from the run queue's replay log (docs/audit.md): every replay event
//! becomes the audit record of the same name, stamped with the event's Lamport time
//! and core, in replay-log order; after each batch a `ReplayHead { len, head_hash }`
//! record pins the replay log's head into the chain. Console commands that change
//! state are recorded as `ConsoleCommand`. Recovery (damage, rebuilt superblocks,
//! a cut torn tail, a format) is recorded by `AuditLog::open` itself and reported
//! here on the console; then `Boot` is appended. Space: refused requests
//! (`RequestRefused`) stop at the region's high-water mark; crossing it, and a
//! full region, are alarms (`alarm()`, a console line, an `AuditAlarm` record).
#![deny(unsafe_code)]

use crate::println;
use alloc::format;
use alloc::string::String;
use spin::Mutex;
use xdv_audit::{AuditError, AuditLog, FillLevel, FillState, OpenReport, RecordBody};
use xdv_sched::{CoreEvent, ReplayEvent};
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

pub static AUDIT: Mutex<Option<AuditLog<'static>>> = Mutex::new(None);
/// Logical time for records not stamped by the scheduler (boot, console).
static CLOCK: Mutex<u64> = Mutex::new(0);
/// The fill level last announced on the console: an alarm line prints when it changes.
static ANNOUNCED: Mutex<FillLevel> = Mutex::new(FillLevel::Normal);
/// An append failed for a reason other than space (printed once).
static OTHER_ERROR_REPORTED: Mutex<bool> = Mutex::new(false);
/// What this boot's open found: (damaged ranges, of which unrecorded, superblocks
/// rebuilt, formatted with non-zero bytes discarded).
static BOOT_FINDINGS: Mutex<(usize, u64, bool, u64)> = Mutex::new((0, 0, false, 0));

/// Opens the region at boot (which recovers it and records what it found: see
/// `xdv_audit::log`), reports that on the console, and appends `Boot`.
pub fn init(node: u32) {
    let region = match crate::mem::regions::audit() {
        Ok(r) => r,
        Err(e) => {
            println!("audit: region unusable: {e}; audit disabled");
            return;
        }
    };
    let (log, report) = match AuditLog::open(region, NodeId(node)) {
        Ok(x) => x,
        Err(e) => {
            // Never overwrite a region we cannot vouch for: keep it and run without.
            println!("audit: refusing the region: {e}; it is left untouched and audit is disabled");
            return;
        }
    };
    *CLOCK.lock() = report.records;
    *AUDIT.lock() = Some(log);
    report_open(node, &report);
    *BOOT_FINDINGS.lock() = (
        report.damaged.len(),
        report.damage_unrecorded,
        report.superblocks_rebuilt,
        report.discarded_bytes,
    );
    record(
        CoreId(0),
        &RecordBody::Boot {
            count: report.boot_count,
        },
    );
    if let Some(a) = AUDIT.lock().as_ref() {
        println!(
            "audit: boot {} records={} head={}",
            a.boot_count(),
            a.len(),
            a.head_hash()
        );
    }
    if let Some(fill) = fill_state() {
        announce(&fill);
    }
    let found_damage = report.damaged.len() as u64 + report.damage_unrecorded > 0;
    if (alarm().is_some() || found_damage)
        && let Some(line) = status_line()
    {
        println!("{line}");
    }
}

/// One console line per thing `open` found and recorded.
fn report_open(node: u32, r: &OpenReport) {
    if r.formatted && r.discarded_bytes > 0 {
        println!(
            "audit: no superblock and no recognisable record in the region: formatted it \
             ({} non-zero bytes discarded; recorded as Formatted)",
            r.discarded_bytes
        );
    } else if r.formatted {
        log::info!("audit: formatted a new region for node {node}");
    }
    if r.superblocks_rebuilt {
        println!(
            "audit: both superblock copies unreadable: rebuilt from a scan of the records \
             ({} readable, boot count {}; recorded as SuperblocksRebuilt)",
            r.records, r.boot_count
        );
    }
    for d in &r.damaged {
        let last = d.last_good.map_or_else(
            || String::from("none"),
            |(s, h)| format!("seq {s} hash {}", h.short()),
        );
        let resumed = d.resumed_seq.map_or_else(
            || String::from("no record after it"),
            |s| format!("seq {s}"),
        );
        let recorded = d.recorded_by.map_or_else(
            || String::from("NOT recorded (no room)"),
            |s| format!("recorded as seq {s}"),
        );
        println!(
            "audit: DAMAGE at region offset {:#x} ({} bytes, {}): last good record {last}; \
             resumed at {resumed}; kept as it is, {recorded}",
            d.offset, d.bytes, d.what
        );
    }
    if r.damage_unrecorded > 0 {
        println!(
            "audit: {} damaged ranges are not recorded yet (region full or too many); \
             `cargo xdv audit verify` on the RAM file lists every range",
            r.damage_unrecorded
        );
    }
    if r.dropped_bytes > 0 {
        println!(
            "audit: recovered: cut a torn append of {} bytes at {:#x}, beyond the last \
             durable record (recorded as Recovered)",
            r.dropped_bytes, r.dropped_at
        );
    }
}

/// Prints an alarm line when the fill level changes.
fn announce(fill: &FillState) {
    let mut last = ANNOUNCED.lock();
    if fill.level == *last {
        return;
    }
    *last = fill.level;
    match fill.level {
        FillLevel::Normal => {}
        FillLevel::AboveHighWater => println!(
            "audit: ALARM: region past its {}% high-water mark ({} of {} bytes used): \
             refused requests are now only counted ({} so far); the node's own records continue",
            xdv_audit::BULK_HIGH_WATER_PERCENT,
            fill.used_bytes,
            fill.region_bytes,
            fill.bulk_refused
        ),
        FillLevel::Full => println!(
            "audit: ALARM: region FULL ({} of {} bytes): sealed, nothing more is recorded; \
             copy it out (`cargo xdv audit verify`/`show` on the RAM file) and reformat it",
            fill.used_bytes, fill.region_bytes
        ),
    }
}

fn tick() -> Timestamp {
    let mut c = CLOCK.lock();
    *c += 1;
    Timestamp(*c)
}

/// Records between two Merkle folds on append (see [`with_log`]).
const MERKLE_FOLD_EVERY: u64 = 256;

/// Runs `f` on the open log, then announces a changed fill level; `None` when
/// audit is disabled or the append failed (space failures are announced as
/// alarms, any other failure is printed once).
fn with_log(f: impl FnOnce(&mut AuditLog<'static>) -> Result<u64, AuditError>) -> Option<u64> {
    let (result, fill) = {
        let mut guard = AUDIT.lock();
        let log = guard.as_mut()?;
        let result = f(log);
        // Keep the Merkle accumulator within MERKLE_FOLD_EVERY records of the head:
        // the node's next audit-root publication then folds at most that many, not
        // (after `audit stress 20000`) tens of thousands in one iteration of its
        // loop, which stalled heartbeats past the election timeout.
        if let Ok(seq) = result
            && (seq + 1).is_multiple_of(MERKLE_FOLD_EVERY)
        {
            log.merkle_root();
        }
        (result, log.fill_state())
    };
    announce(&fill);
    match result {
        Ok(seq) => Some(seq),
        Err(AuditError::AboveHighWater { .. } | AuditError::Full { .. }) => None,
        Err(e) => {
            let mut reported = OTHER_ERROR_REPORTED.lock();
            if !*reported {
                *reported = true;
                println!("audit: cannot append: {e}");
            }
            None
        }
    }
}

fn append(stamp: Timestamp, core: CoreId, body: &RecordBody) -> Option<u64> {
    with_log(|log| log.append(stamp, core, body))
}

/// Appends a record stamped by the node's audit clock. Bulk records
/// (`RequestRefused`) are refused once the region passes its high-water mark.
pub fn record(core: CoreId, body: &RecordBody) -> Option<u64> {
    let t = tick();
    append(t, core, body)
}

/// Records a summary of `count` refused requests that were not recorded one by one
/// (the node's rate limiter calls this once per interval), with the first one's
/// reason. It is the node's own record: it is written past the high-water mark
/// too, and it carries how many refusal records the region itself refused since
/// the last summary.
pub fn record_refusal_summary(count: u64, first_reason: &str) -> Option<u64> {
    let t = tick();
    with_log(|log| log.append_refusal_summary(t, CoreId(0), count, first_reason))
}

/// The region's fill state (`None` when audit is disabled).
pub fn fill_state() -> Option<FillState> {
    AUDIT.lock().as_ref().map(AuditLog::fill_state)
}

/// The audit alarm: `Some(level)` when the region is past its high-water mark or
/// full (bulk records are being refused, or nothing more is recorded).
pub fn alarm() -> Option<FillLevel> {
    fill_state()
        .map(|f| f.level)
        .filter(|l| *l != FillLevel::Normal)
}

/// One line on the region's health, for the console's `audit` command: fill,
/// alarm, and what this boot's recovery found.
pub fn status_line() -> Option<String> {
    let fill = fill_state()?;
    let (damaged, unrecorded, rebuilt, discarded) = *BOOT_FINDINGS.lock();
    let level = match fill.level {
        FillLevel::Normal => "ok",
        FillLevel::AboveHighWater => "ALARM past high-water mark",
        FillLevel::Full => "ALARM FULL",
    };
    Some(format!(
        "audit: fill {}/{} bytes (mark {}) {level}; bulk refused {}; at boot: {damaged} \
         damaged ranges ({unrecorded} unrecorded), superblocks rebuilt: {}, formatted \
         discarding {discarded} bytes",
        fill.used_bytes,
        fill.region_bytes,
        fill.high_water_bytes,
        fill.bulk_refused,
        if rebuilt { "yes" } else { "no" },
    ))
}

/// Records a state-changing console command.
pub fn console_command(line: &str) {
    let line = xdv_types::prefix_within(line, xdv_audit::body::MAX_CONSOLE_LINE_BYTES);
    record(
        CoreId(0),
        &RecordBody::ConsoleCommand {
            line: String::from(line),
        },
    );
}

fn body_of(e: &ReplayEvent) -> RecordBody {
    match e {
        ReplayEvent::TaskEnqueued { task, core, .. } => RecordBody::TaskEnqueued {
            task: *task,
            core: *core,
        },
        ReplayEvent::TaskExecuted {
            task,
            ticks,
            output_hash,
        } => RecordBody::TaskExecuted {
            task: *task,
            ticks: *ticks,
            output_hash: *output_hash,
        },
        ReplayEvent::GuardDenied { task, missing } => RecordBody::GuardDenied {
            task: *task,
            capability: *missing,
        },
        ReplayEvent::BudgetExceeded { task, ticks } => RecordBody::BudgetExceeded {
            task: *task,
            ticks: *ticks,
        },
        ReplayEvent::Trapped {
            task,
            ticks,
            reason,
        } => RecordBody::Trapped {
            task: *task,
            ticks: *ticks,
            reason: String::from(reason.as_str()),
        },
        ReplayEvent::StateChange { state_hash } => RecordBody::Custom {
            tag: 1,
            bytes: state_hash.0.to_vec(),
        },
        ReplayEvent::ExternalInput { input_hash } => RecordBody::Custom {
            tag: 2,
            bytes: input_hash.0.to_vec(),
        },
    }
}

/// Records one sealed batch of scheduler events and the replay log's new head.
pub fn scheduler_batch<'a>(
    events: impl Iterator<Item = &'a CoreEvent>,
    len: u64,
    head: xdv_types::Hash32,
) {
    let mut last = 0;
    for e in events {
        last = last.max(e.stamp.time.0);
        append(e.stamp.time, e.stamp.core, &body_of(&e.event));
    }
    {
        let mut c = CLOCK.lock();
        *c = (*c).max(last);
    }
    record(
        CoreId(0),
        &RecordBody::ReplayHead {
            len,
            head_hash: head,
        },
    );
}

/// (records, head hash) of the chain, or zeros when the region is unusable.
pub fn head() -> (u64, Hash32) {
    AUDIT
        .lock()
        .as_ref()
        .map_or((0, Hash32::ZERO), |l| (l.len(), l.head_hash()))
}

/// The root to publish and its proof from the size the cluster holds
/// ([`xdv_audit::AuditLog::root_for_publication`]); `None` when the region is unusable.
pub fn root_for_publication(
    published: Option<u64>,
) -> Option<(u64, Hash32, u64, alloc::vec::Vec<Hash32>)> {
    AUDIT
        .lock()
        .as_mut()
        .map(|l| l.root_for_publication(published))
}

/// The highest log index a `RaftApplied` record in this node's audit log covers (0 when
/// none): after a restart the node does not record those entries again. Kept by the
/// log (open's scan, then every append): no walk of the region.
pub fn last_raft_applied() -> u64 {
    AUDIT.lock().as_ref().map_or(0, |l| l.max_raft_applied())
}
