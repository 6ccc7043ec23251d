//! The node-level scheduler: assignment of tasks to cores ([`Submitter`]), the
//! deterministic merge of per-core event streams ([`merge_streams`]), and
//! [`DeterministicScheduler`], which drives N [`CoreRunner`]s in one thread (host
//! tests, host replay, and the kernel's single-core fallback).
//!
//! The SMP kernel uses the same pieces on real cores: the boot core owns a
//! `Submitter` and the `ReplayLog`; for each task it calls `assign`, sends
//! `CoreMsg::Task` through the target core's SPSC ring, then sends `CoreMsg::Seal` to
//! every core. Each core `accept`s messages, at `Seal` runs `run_until_idle`, and
//! sends its events back. The boot core hands all streams to `Submitter::seal`.
//! Because each core's call sequence is fixed (whole batch, then run) and the merge
//! orders by (Lamport time, core id), the log is the one `DeterministicScheduler`
//! computes on the host for the same task set and core count, whatever the timing.
//!
//! What depends on the core count: the core of each task (placement), every Lamport
//! stamp, the order of entries in the log, and so the head hash. What does not: each
//! task's outcome kind, ticks and output hash (or missing capability / trap reason),
//! provided every core holds the same grants ([`DeterministicScheduler::grant_all`]).
//! `compare_replays` of two such logs gives `MinorDifference`.

use alloc::vec::Vec;
use core::fmt;

use xdv_types::{CapabilityId, CoreId, CoreStamp, LamportClock, TaskId, Timestamp};

use crate::placement::{MAX_CORES, MaskPlacement, Placement};
use crate::replay::{AppendError, CoreEvent, ReplayEvent, ReplayLog};
use crate::runner::{CoreRunner, EnqueueError};
use crate::task::{TaskSpec, TooManyCaps, Work};

/// Core id stamped on events the submitter records itself (`StateChange`,
/// `ExternalInput`), so they never tie with a real core's stamps.
pub const SUBMITTER_CORE: CoreId = CoreId(u16::MAX);

const _: () = assert!(MAX_CORES < u16::MAX);

/// The core count is outside `1..=MAX_CORES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadCoreCount(pub u16);

impl fmt::Display for BadCoreCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "core count {} not in 1..={MAX_CORES}", self.0)
    }
}

/// Merges per-core event streams into the node's total order: by (Lamport time,
/// core id). Within one core the stamps strictly increase, and two cores never share
/// a core id, so every key is unique and the result does not depend on the order of
/// the streams or on when each was collected.
pub fn merge_streams(per_core: Vec<Vec<CoreEvent>>) -> Vec<CoreEvent> {
    for stream in &per_core {
        debug_assert!(
            stream.windows(2).all(|w| w[0].stamp < w[1].stamp),
            "stream not increasing"
        );
    }
    let mut all: Vec<CoreEvent> = per_core.into_iter().flatten().collect();
    // Stable: should a caller break the uniqueness contract, ties keep input order.
    all.sort_by_key(|e| e.stamp);
    all
}

/// Assigns tasks to cores and timestamps them; merges finished batches into the log.
/// Runs on one core (the boot core in the kernel).
#[derive(Clone, Debug)]
pub struct Submitter<P = MaskPlacement> {
    clock: LamportClock,
    placement: P,
    cores: u16,
    /// Submitter-recorded events awaiting the next `seal`.
    own: Vec<CoreEvent>,
}

impl<P: Placement> Submitter<P> {
    pub fn new(cores: u16, placement: P) -> Result<Self, BadCoreCount> {
        if cores == 0 || cores > MAX_CORES {
            return Err(BadCoreCount(cores));
        }
        Ok(Submitter {
            clock: LamportClock::new(),
            placement,
            cores,
            own: Vec::new(),
        })
    }

    pub fn cores(&self) -> u16 {
        self.cores
    }

    /// The core for `task` and its submit timestamp (ticks the submitter clock).
    pub fn assign(&mut self, task: TaskId) -> (CoreId, Timestamp) {
        let core = self.placement.place(task, self.cores);
        assert!(
            core.0 < self.cores,
            "placement returned core {core} of {}",
            self.cores
        );
        (core, self.clock.tick())
    }

    /// Records a `StateChange` or `ExternalInput` (or any event) in the next batch,
    /// stamped by the submitter clock with [`SUBMITTER_CORE`].
    pub fn record(&mut self, event: ReplayEvent) -> CoreStamp {
        let stamp = CoreStamp {
            time: self.clock.tick(),
            core: SUBMITTER_CORE,
        };
        self.own.push(CoreEvent { stamp, event });
        stamp
    }

    /// Ends a batch: merges the cores' streams with the submitter's own events,
    /// appends them to `log`, and advances the submitter clock past every merged
    /// stamp (so the next batch is stamped after this one). Returns the count appended.
    pub fn seal(
        &mut self,
        mut per_core: Vec<Vec<CoreEvent>>,
        log: &mut ReplayLog,
    ) -> Result<usize, AppendError> {
        per_core.push(core::mem::take(&mut self.own));
        let merged = merge_streams(per_core);
        let n = merged.len();
        if let Some(last) = merged.last() {
            self.clock.recv(last.stamp.time);
        }
        for e in merged {
            log.append(e)?;
        }
        Ok(n)
    }
}

/// N core runners driven from one thread, with the replay log. See the module docs.
#[derive(Debug)]
pub struct DeterministicScheduler<W, P = MaskPlacement> {
    submitter: Submitter<P>,
    runners: Vec<CoreRunner<W>>,
    pending: Vec<Vec<CoreEvent>>,
    log: ReplayLog,
}

impl<W: Work, P: Placement> DeterministicScheduler<W, P> {
    pub fn new(cores: u16, placement: P) -> Result<Self, BadCoreCount> {
        let submitter = Submitter::new(cores, placement)?;
        Ok(DeterministicScheduler {
            submitter,
            runners: (0..cores).map(|c| CoreRunner::new(CoreId(c))).collect(),
            pending: (0..cores).map(|_| Vec::new()).collect(),
            log: ReplayLog::new(),
        })
    }

    pub fn cores(&self) -> u16 {
        self.submitter.cores()
    }

    /// Grants `cap` on every core (node-wide grants keep outcomes core-count independent).
    pub fn grant_all(&mut self, cap: CapabilityId) -> Result<(), TooManyCaps> {
        self.runners
            .iter_mut()
            .try_for_each(|r| r.grant(cap).map(|_| ()))
    }

    pub fn runner(&self, core: CoreId) -> Option<&CoreRunner<W>> {
        self.runners.get(usize::from(core.0))
    }

    pub fn runner_mut(&mut self, core: CoreId) -> Option<&mut CoreRunner<W>> {
        self.runners.get_mut(usize::from(core.0))
    }

    /// Places and enqueues `task`; returns its core.
    pub fn submit(&mut self, task: TaskSpec<W>) -> Result<CoreId, EnqueueError<W>> {
        let (core, stamp) = self.submitter.assign(task.id);
        let i = usize::from(core.0);
        let event = self.runners[i].enqueue(task, stamp)?;
        self.pending[i].push(event);
        Ok(core)
    }

    /// Records a `StateChange`/`ExternalInput` into the current batch.
    pub fn record(&mut self, event: ReplayEvent) -> CoreStamp {
        self.submitter.record(event)
    }

    /// Runs one task on `core`; `None` if it is idle or does not exist.
    pub fn run_cycle(&mut self, core: CoreId) -> Option<CoreEvent> {
        let i = usize::from(core.0);
        let event = self.runners.get_mut(i)?.run_cycle()?;
        self.pending[i].push(event.clone());
        Some(event)
    }

    /// Runs every core until all are idle, then seals the batch into the log.
    pub fn run_until_idle(&mut self) -> Result<&ReplayLog, AppendError> {
        loop {
            let mut ran = false;
            for c in 0..self.cores() {
                ran |= self.run_cycle(CoreId(c)).is_some();
            }
            if !ran {
                break;
            }
        }
        self.seal()?;
        Ok(&self.log)
    }

    /// Merges the events produced since the last seal into the log.
    pub fn seal(&mut self) -> Result<usize, AppendError> {
        let streams = self.pending.iter_mut().map(core::mem::take).collect();
        self.submitter.seal(streams, &mut self.log)
    }

    pub fn replay_log(&self) -> &ReplayLog {
        &self.log
    }

    pub fn into_replay_log(self) -> ReplayLog {
        self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{ReplayComparison, compare_replays};
    use crate::task::{BuiltinWork, Guards};
    use xdv_types::{Hash32, Priority, TenantId};

    fn tasks(n: u64) -> Vec<TaskSpec<BuiltinWork>> {
        (0..n)
            .map(|i| TaskSpec {
                id: TaskId(i),
                tenant: TenantId(0),
                priority: [Priority::High, Priority::Normal, Priority::Low][(i % 3) as usize],
                guards: Guards::none(),
                budget_ticks: 40,
                work: BuiltinWork::HashChain { steps: i * 3 },
            })
            .collect()
    }

    fn run(cores: u16, n: u64) -> ReplayLog {
        let mut s = DeterministicScheduler::new(cores, MaskPlacement).expect("cores");
        for t in tasks(n) {
            s.submit(t).expect("room");
        }
        s.run_until_idle().expect("room");
        s.into_replay_log()
    }

    #[test]
    fn rejects_bad_core_counts() {
        assert_eq!(
            DeterministicScheduler::<BuiltinWork, _>::new(0, MaskPlacement).err(),
            Some(BadCoreCount(0))
        );
        assert!(
            DeterministicScheduler::<BuiltinWork, _>::new(MAX_CORES + 1, MaskPlacement).is_err()
        );
    }

    #[test]
    fn same_input_same_log_and_core_counts_differ_only_minorly() {
        let a = run(4, 20);
        assert_eq!(a.len(), 40);
        a.verify().expect("valid");
        assert_eq!(
            compare_replays(&a, &run(4, 20)),
            ReplayComparison::ExactMatch
        );
        let one = run(1, 20);
        assert_ne!(one.head_hash(), a.head_hash());
        assert_eq!(compare_replays(&a, &one), ReplayComparison::MinorDifference);
        assert_eq!(
            compare_replays(&run(3, 20), &one),
            ReplayComparison::MinorDifference
        );
    }

    #[test]
    fn merge_is_independent_of_stream_order() {
        let e = |t, c| CoreEvent {
            stamp: CoreStamp {
                time: Timestamp(t),
                core: CoreId(c),
            },
            event: ReplayEvent::StateChange {
                state_hash: Hash32::ZERO,
            },
        };
        let s0 = vec![e(1, 0), e(4, 0)];
        let s1 = vec![e(1, 1), e(2, 1), e(9, 1)];
        let a = merge_streams(vec![s0.clone(), s1.clone()]);
        let b = merge_streams(vec![s1, s0]);
        assert_eq!(a, b);
        let keys: Vec<(u64, u16)> = a.iter().map(|x| (x.stamp.time.0, x.stamp.core.0)).collect();
        assert_eq!(keys, [(1, 0), (1, 1), (2, 1), (4, 0), (9, 1)]);
    }

    /// Simulates the kernel: cores run in threads, stream back in arbitrary order.
    #[test]
    fn threaded_cores_give_the_host_log() {
        let cores = 4u16;
        let host = run(cores, 30);
        for round in 0..5 {
            let mut sub = Submitter::new(cores, MaskPlacement).expect("cores");
            let mut inboxes: Vec<Vec<(TaskSpec<BuiltinWork>, Timestamp)>> =
                (0..cores).map(|_| Vec::new()).collect();
            for t in tasks(30) {
                let (core, stamp) = sub.assign(t.id);
                inboxes[usize::from(core.0)].push((t, stamp));
            }
            let mut streams: Vec<Vec<CoreEvent>> = std::thread::scope(|s| {
                let handles: Vec<_> = inboxes
                    .into_iter()
                    .enumerate()
                    .map(|(c, inbox)| {
                        s.spawn(move || {
                            let mut r = CoreRunner::new(CoreId(c as u16));
                            let mut out: Vec<CoreEvent> = inbox
                                .into_iter()
                                .map(|(t, st)| r.enqueue(t, st).expect("room"))
                                .collect();
                            out.extend(r.run_until_idle());
                            out
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("core"))
                    .collect()
            });
            streams.rotate_left(round % 4);
            let mut log = ReplayLog::new();
            sub.seal(streams, &mut log).expect("room");
            assert_eq!(log.head_hash(), host.head_hash(), "round {round}");
        }
    }

    #[test]
    fn recorded_inputs_are_ordered_and_logged() {
        let mut s = DeterministicScheduler::<BuiltinWork, _>::new(2, MaskPlacement).expect("cores");
        s.record(ReplayEvent::ExternalInput {
            input_hash: Hash32([7; 32]),
        });
        for t in tasks(4) {
            s.submit(t).expect("room");
        }
        let log = s.run_until_idle().expect("room");
        assert_eq!(log.len(), 9);
        let first = log.entries()[0].event.clone();
        assert_eq!(first.stamp.core, SUBMITTER_CORE);
        assert_eq!(first.stamp.time, Timestamp(1));
        // A second batch is stamped after the first.
        let last_time = log.entries().last().expect("entries").event.stamp.time;
        s.submit(tasks(5).pop().expect("task")).expect("room");
        s.run_until_idle().expect("room");
        let later = s.replay_log().entries()[9].event.stamp.time;
        assert!(later > last_time);
    }
}
