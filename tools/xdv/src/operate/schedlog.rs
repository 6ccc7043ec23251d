//! A node's scheduler replay log, rebuilt from its audit region: the task events the
//! kernel records there (enqueued on a core, executed, over budget, guard denied,
//! trapped; state changes and external inputs, `Custom` tags 1 and 2), in region
//! order, with each record's timestamp and core — the node's `xdv_sched::ReplayLog`.
//! The audit record of an enqueue does not keep the submission's own timestamp: the
//! rebuilt event carries the record's (the enqueue's) instead, the same way in every
//! log rebuilt here, so two rebuilt logs compare exactly. `cargo xdv replay export` writes it (`ReplayLog::to_bytes`);
//! `cargo xdv replay compare A B` compares two of them (`compare_replays`: ExactMatch,
//! MinorDifference or Diverged), from RAM files or exported logs.

use anyhow::{Context, Result, bail};
use std::path::Path;
use xdv_audit::RecordBody;
use xdv_sched::{CoreEvent, CoreStamp, ReplayEvent, ReplayLog, TrapReason};

/// Magic of an exported scheduler log file (then `ReplayLog::to_bytes`).
pub const EXPORT_MAGIC: &[u8; 8] = b"XDVSLOG1";

/// The scheduler event an audit record (stamped `stamp`) stands for, if it is one.
fn event_of(stamp: xdv_types::Timestamp, body: &RecordBody) -> Option<ReplayEvent> {
    let hash_of = |b: &[u8]| <[u8; 32]>::try_from(b).ok().map(xdv_types::Hash32);
    Some(match body {
        RecordBody::TaskEnqueued { task, core } => ReplayEvent::TaskEnqueued {
            task: *task,
            core: *core,
            stamp,
        },
        RecordBody::TaskExecuted {
            task,
            ticks,
            output_hash,
        } => ReplayEvent::TaskExecuted {
            task: *task,
            ticks: *ticks,
            output_hash: *output_hash,
        },
        RecordBody::BudgetExceeded { task, ticks } => ReplayEvent::BudgetExceeded {
            task: *task,
            ticks: *ticks,
        },
        RecordBody::GuardDenied { task, capability } => ReplayEvent::GuardDenied {
            task: *task,
            missing: *capability,
        },
        RecordBody::Trapped {
            task,
            ticks,
            reason,
        } => ReplayEvent::Trapped {
            task: *task,
            ticks: *ticks,
            reason: TrapReason::new(reason),
        },
        RecordBody::Custom { tag: 1, bytes } => ReplayEvent::StateChange {
            state_hash: hash_of(bytes)?,
        },
        RecordBody::Custom { tag: 2, bytes } => ReplayEvent::ExternalInput {
            input_hash: hash_of(bytes)?,
        },
        _ => return None,
    })
}

/// The scheduler log in an audit region (records that do not verify are skipped:
/// `cargo xdv audit verify` reports those).
pub fn from_audit(audit: &[u8]) -> Result<ReplayLog> {
    let mut log = ReplayLog::new();
    let mut err = None;
    xdv_audit::inspect_region_with(audit, &mut |r| {
        if err.is_some() {
            return;
        }
        if let Some(event) = event_of(r.header.stamp, &r.body) {
            let e = CoreEvent {
                stamp: CoreStamp {
                    time: r.header.stamp,
                    core: r.header.core,
                },
                event,
            };
            if let Err(e) = log.append(e) {
                err = Some(format!("{e:?}"));
            }
        }
    });
    if let Some(e) = err {
        bail!("the region's task events do not form a scheduler log: {e}");
    }
    Ok(log)
}

/// A scheduler log from `path`: an exported log (`EXPORT_MAGIC`) or a node's RAM file.
pub fn load(path: &Path, opts: &super::image::LoadOptions) -> Result<ReplayLog> {
    let head = {
        use std::io::Read;
        let mut b = [0u8; 8];
        let mut f =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.read_exact(&mut b).map(|_| b).unwrap_or([0; 8])
    };
    if &head == EXPORT_MAGIC {
        let bytes = std::fs::read(path)?;
        let log = ReplayLog::from_bytes(&bytes[8..])
            .map_err(|e| anyhow::anyhow!("{}: not a scheduler log: {e:?}", path.display()))?;
        log.verify().map_err(|e| {
            anyhow::anyhow!("{}: scheduler log does not verify: {e:?}", path.display())
        })?;
        return Ok(log);
    }
    let img = super::image::load_node(path, opts)?;
    from_audit(&img.audit)
}

/// The bytes of an exported log.
pub fn export_bytes(log: &ReplayLog) -> Vec<u8> {
    let mut out = EXPORT_MAGIC.to_vec();
    out.extend_from_slice(&log.to_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_audit::AuditLog;
    use xdv_sched::{ReplayComparison, compare_replays};
    use xdv_types::{CoreId, Hash32, NodeId, TaskId, Timestamp};

    /// An audit region holding `events` (stamp, core, body), with the node's own
    /// records (boot, a custom tag) in between.
    fn region(events: &[(u64, u16, RecordBody)]) -> Vec<u8> {
        let mut bytes = vec![0u8; xdv_audit::format::MIN_REGION_BYTES];
        let (mut log, _) = AuditLog::open(&mut bytes, NodeId(1)).unwrap();
        log.append(Timestamp(0), CoreId(0), &RecordBody::Boot { count: 1 })
            .unwrap();
        for (t, c, body) in events {
            log.append(Timestamp(*t), CoreId(*c), body).unwrap();
            log.append(
                Timestamp(*t),
                CoreId(0),
                &RecordBody::Custom {
                    tag: 0xC1,
                    bytes: vec![1, 2],
                },
            )
            .unwrap();
        }
        bytes
    }

    fn run(task: u64, core: u16, t: u64, ticks: u64) -> [(u64, u16, RecordBody); 2] {
        [
            (
                t,
                core,
                RecordBody::TaskEnqueued {
                    task: TaskId(task),
                    core: CoreId(core),
                },
            ),
            (
                t + 1,
                core,
                RecordBody::TaskExecuted {
                    task: TaskId(task),
                    ticks,
                    output_hash: Hash32([task as u8; 32]),
                },
            ),
        ]
    }

    #[test]
    fn task_records_become_the_scheduler_log_and_compare() {
        let a: Vec<_> = run(1, 1, 10, 5)
            .into_iter()
            .chain(run(2, 2, 12, 7))
            .collect();
        let la = from_audit(&region(&a)).unwrap();
        assert_eq!(la.len(), 4, "only the task events, not the node's records");
        assert!(la.verify().is_ok());
        // The same run again: exact; through an export too.
        let again = from_audit(&region(&a)).unwrap();
        assert_eq!(compare_replays(&la, &again), ReplayComparison::ExactMatch);
        let bytes = export_bytes(&la);
        assert_eq!(&bytes[..8], EXPORT_MAGIC);
        let back = ReplayLog::from_bytes(&bytes[8..]).unwrap();
        assert_eq!(compare_replays(&la, &back), ReplayComparison::ExactMatch);
        // The same tasks in the other order: a minor difference.
        let swapped: Vec<_> = run(2, 2, 10, 7)
            .into_iter()
            .chain(run(1, 1, 12, 5))
            .collect();
        let ls = from_audit(&region(&swapped)).unwrap();
        assert_eq!(compare_replays(&la, &ls), ReplayComparison::MinorDifference);
        // Another outcome: diverged, at the first differing event.
        let other: Vec<_> = run(1, 1, 10, 5)
            .into_iter()
            .chain(run(2, 2, 12, 8))
            .collect();
        let lo = from_audit(&region(&other)).unwrap();
        assert!(matches!(
            compare_replays(&la, &lo),
            ReplayComparison::Diverged { first_index: 3, .. }
        ));
    }

    #[test]
    fn an_exported_log_loads_back_and_a_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("xdv-schedlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = from_audit(&region(&run(1, 1, 10, 5))).unwrap();
        let good = dir.join("good.slog");
        std::fs::write(&good, export_bytes(&log)).unwrap();
        let opts = super::super::image::LoadOptions::default();
        let back = load(&good, &opts).unwrap();
        assert_eq!(compare_replays(&log, &back), ReplayComparison::ExactMatch);
        let mut bytes = export_bytes(&log);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        let bad = dir.join("bad.slog");
        std::fs::write(&bad, &bytes).unwrap();
        let e = load(&bad, &opts).unwrap_err().to_string();
        assert!(e.contains("bad.slog"), "{e}");
        let e = load(&dir.join("missing.slog"), &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("opening"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
