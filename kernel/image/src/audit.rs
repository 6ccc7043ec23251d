//! The node's audit chain in its reserved region (`audit=` on the command line).
//!
//! Mapping from the run queue's replay log (docs/audit.md): every replay event
//! becomes the audit record of the same name, stamped with the event's Lamport time
//! and core, in replay-log order; after each batch a `ReplayHead { len, head_hash }`
//! record pins the replay log's head into the chain. Console commands that change
//! state are recorded as `ConsoleCommand`. Boot and recovery are recorded at open.

use crate::println;
use alloc::format;
use alloc::string::String;
use spin::Mutex;
use xdv_audit::{AuditLog, RecordBody};
use xdv_sched::{CoreEvent, ReplayEvent};
use xdv_types::{CoreId, Hash32, NodeId, Timestamp};

pub static AUDIT: Mutex<Option<AuditLog<'static>>> = Mutex::new(None);
/// Logical time for records not stamped by the scheduler (boot, console).
static CLOCK: Mutex<u64> = Mutex::new(0);
static FULL_REPORTED: Mutex<bool> = Mutex::new(false);

/// Opens the region at boot and appends `Recovered` (if a torn tail was cut) and `Boot`.
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
    if report.formatted {
        log::info!("audit: formatted a new region for node {node}");
    }
    if report.dropped_bytes > 0 {
        println!(
            "audit: recovered: cut a torn tail of {} bytes ({} durable records lost){}",
            report.dropped_bytes,
            report.lost_durable_records,
            report
                .first_error
                .map(|e| format!("; first bad record: {e}"))
                .unwrap_or_default()
        );
        record(
            CoreId(0),
            &RecordBody::Recovered {
                dropped_bytes: report.dropped_bytes,
            },
        );
    }
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
}

fn tick() -> Timestamp {
    let mut c = CLOCK.lock();
    *c += 1;
    Timestamp(*c)
}

/// Records between two Merkle folds on append (see [`append`]).
const MERKLE_FOLD_EVERY: u64 = 256;

fn append(stamp: Timestamp, core: CoreId, body: &RecordBody) -> Option<u64> {
    let mut guard = AUDIT.lock();
    let log = guard.as_mut()?;
    match log.append(stamp, core, body) {
        Ok(seq) => {
            // Keep the Merkle accumulator within MERKLE_FOLD_EVERY records of the
            // head: the node's next audit-root publication then folds at most that
            // many, not (after `audit stress 20000`) tens of thousands in one
            // iteration of its loop, which stalled heartbeats past the election
            // timeout.
            if (seq + 1) % MERKLE_FOLD_EVERY == 0 {
                log.merkle_root();
            }
            Some(seq)
        }
        Err(e) => {
            let mut reported = FULL_REPORTED.lock();
            if !*reported {
                *reported = true;
                println!(
                    "audit: cannot append: {e} (the chain stays verifiable; further records are refused)"
                );
            }
            None
        }
    }
}

/// Appends a record stamped by the node's audit clock.
pub fn record(core: CoreId, body: &RecordBody) -> Option<u64> {
    let t = tick();
    append(t, core, body)
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

/// (records, Merkle root over them), for publication through the log.
pub fn merkle() -> (u64, Hash32) {
    AUDIT
        .lock()
        .as_mut()
        .map_or((0, Hash32::ZERO), |l| (l.len(), l.merkle_root()))
}
