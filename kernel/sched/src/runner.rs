//! One core's executor state: its ready set, Lamport clock, granted capabilities
//! and counters. Used by exactly one core; the kernel keeps one per core and feeds it
//! through that core's SPSC ring.
//!
//! Invariants:
//! - The ready set is ordered by (priority, submit timestamp, task id); `run_cycle`
//!   always takes the smallest, so the order depends only on what was enqueued.
//! - Every event this runner emits carries a `CoreStamp` from its own Lamport clock,
//!   strictly increasing: `enqueue` does `recv(submit stamp)`, `run_cycle` does `tick`.
//! - Determinism contract for real parallel cores: given the same sequence of
//!   `enqueue`/`run_cycle` calls, a runner emits the same events. The kernel keeps that
//!   sequence fixed by enqueuing a whole batch before running it (see [`CoreMsg`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use xdv_types::{CapabilityId, CoreId, CoreStamp, LamportClock, Priority, TaskId, Timestamp};

use crate::replay::{CoreEvent, ReplayEvent};
use crate::task::{GrantedCaps, MAX_BUDGET_TICKS, TaskSpec, TooManyCaps, Work, WorkOutcome};

/// Most tasks waiting on one core.
pub const MAX_READY_TASKS: usize = 1 << 16;

/// What a core receives through its ring. A core enqueues every `Task` it receives
/// and starts running only at `Seal` (the end of a batch), so thread timing cannot
/// change which tasks are ready when it picks the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreMsg<W> {
    Task { task: TaskSpec<W>, stamp: Timestamp },
    Seal,
}

/// Per-core counters, for the console's `runq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreCounters {
    pub enqueued: u64,
    /// Tasks whose work ran (completed, over budget or trapped).
    pub tasks_run: u64,
    pub ticks_used: u64,
    pub denied: u64,
    pub budget_exceeded: u64,
    pub trapped: u64,
}

/// Why a task was not enqueued; the task is handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnqueueError<W> {
    /// The core already holds [`MAX_READY_TASKS`].
    Full(TaskSpec<W>),
    /// `budget_ticks` over [`MAX_BUDGET_TICKS`].
    BudgetTooLarge(TaskSpec<W>),
    /// The same (priority, stamp, task id) is already queued.
    Duplicate(TaskSpec<W>),
}

impl<W> EnqueueError<W> {
    pub fn into_task(self) -> TaskSpec<W> {
        match self {
            EnqueueError::Full(t)
            | EnqueueError::BudgetTooLarge(t)
            | EnqueueError::Duplicate(t) => t,
        }
    }
}

impl<W> fmt::Display for EnqueueError<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Full(t) => {
                write!(f, "task {}: core run queue full ({MAX_READY_TASKS})", t.id)
            }
            EnqueueError::BudgetTooLarge(t) => {
                write!(
                    f,
                    "task {}: budget {} over {MAX_BUDGET_TICKS}",
                    t.id, t.budget_ticks
                )
            }
            EnqueueError::Duplicate(t) => write!(f, "task {}: already queued", t.id),
        }
    }
}

type ReadyKey = (Priority, Timestamp, TaskId);

/// One core's scheduler state. See the module docs.
#[derive(Debug)]
pub struct CoreRunner<W> {
    core: CoreId,
    clock: LamportClock,
    ready: BTreeMap<ReadyKey, TaskSpec<W>>,
    caps: GrantedCaps,
    counters: CoreCounters,
}

impl<W: Work> CoreRunner<W> {
    pub fn new(core: CoreId) -> Self {
        CoreRunner {
            core,
            clock: LamportClock::new(),
            ready: BTreeMap::new(),
            caps: GrantedCaps::new(),
            counters: CoreCounters::default(),
        }
    }

    pub fn core(&self) -> CoreId {
        self.core
    }

    /// Grants a capability to this core's tasks.
    pub fn grant(&mut self, cap: CapabilityId) -> Result<bool, TooManyCaps> {
        self.caps.grant(cap)
    }

    pub fn caps(&self) -> &GrantedCaps {
        &self.caps
    }

    pub fn caps_mut(&mut self) -> &mut GrantedCaps {
        &mut self.caps
    }

    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    /// Tasks waiting.
    pub fn queue_depth(&self) -> usize {
        self.ready.len()
    }

    /// This core's Lamport time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Merges a remote timestamp into this core's clock (a message from elsewhere).
    pub fn observe(&mut self, remote: Timestamp) -> Timestamp {
        self.clock.recv(remote)
    }

    /// Adds `task`, submitted at `stamp`, to the ready set; O(log n). Returns the
    /// `TaskEnqueued` event (stamped `recv(stamp)` on this core's clock).
    pub fn enqueue(
        &mut self,
        task: TaskSpec<W>,
        stamp: Timestamp,
    ) -> Result<CoreEvent, EnqueueError<W>> {
        if task.budget_ticks > MAX_BUDGET_TICKS {
            return Err(EnqueueError::BudgetTooLarge(task));
        }
        if self.ready.len() >= MAX_READY_TASKS {
            return Err(EnqueueError::Full(task));
        }
        let key = (task.priority, stamp, task.id);
        if self.ready.contains_key(&key) {
            return Err(EnqueueError::Duplicate(task));
        }
        let id = task.id;
        self.ready.insert(key, task);
        self.counters.enqueued += 1;
        let time = self.clock.recv(stamp);
        Ok(self.stamped(
            time,
            ReplayEvent::TaskEnqueued {
                task: id,
                core: self.core,
                stamp,
            },
        ))
    }

    /// Handles one message from this core's ring: a task is enqueued (its event
    /// returned), `Seal` returns `Ok(None)`.
    pub fn accept(&mut self, msg: CoreMsg<W>) -> Result<Option<CoreEvent>, EnqueueError<W>> {
        match msg {
            CoreMsg::Task { task, stamp } => self.enqueue(task, stamp).map(Some),
            CoreMsg::Seal => Ok(None),
        }
    }

    /// Runs the next task by (priority, submit stamp, task id) to its end or its
    /// budget. `None` when nothing is ready. A missing guard gives `GuardDenied`
    /// (no work runs, no ticks charged) and the core goes on with the next call.
    pub fn run_cycle(&mut self) -> Option<CoreEvent> {
        let (_, mut task) = self.ready.pop_first()?;
        let time = self.clock.tick();
        if let Some(missing) = self.caps.first_missing(&task.guards) {
            self.counters.denied += 1;
            return Some(self.stamped(
                time,
                ReplayEvent::GuardDenied {
                    task: task.id,
                    missing,
                },
            ));
        }
        let budget = task.budget_ticks;
        let result = task.work.run(budget);
        self.counters.tasks_run += 1;
        // Enforce the budget even against a Work that overruns or misreports.
        let (ticks, outcome) = if result.ticks_used > budget {
            (budget, WorkOutcome::BudgetExceeded)
        } else {
            (result.ticks_used, result.outcome)
        };
        debug_assert!(ticks <= budget);
        self.counters.ticks_used += ticks;
        let id = task.id;
        let event = match outcome {
            WorkOutcome::Completed { output_hash } => ReplayEvent::TaskExecuted {
                task: id,
                ticks,
                output_hash,
            },
            WorkOutcome::BudgetExceeded => {
                self.counters.budget_exceeded += 1;
                ReplayEvent::BudgetExceeded {
                    task: id,
                    ticks: budget,
                }
            }
            WorkOutcome::Trapped { reason } => {
                self.counters.trapped += 1;
                ReplayEvent::Trapped {
                    task: id,
                    ticks,
                    reason,
                }
            }
        };
        Some(self.stamped(time, event))
    }

    /// Runs until the ready set is empty; returns the events in emission order.
    pub fn run_until_idle(&mut self) -> Vec<CoreEvent> {
        core::iter::from_fn(|| self.run_cycle()).collect()
    }

    fn stamped(&self, time: Timestamp, event: ReplayEvent) -> CoreEvent {
        CoreEvent {
            stamp: CoreStamp {
                time,
                core: self.core,
            },
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{BuiltinWork, Guards, WorkResult};
    use xdv_types::TenantId;

    fn task(id: u64, priority: Priority, budget: u64, work: BuiltinWork) -> TaskSpec<BuiltinWork> {
        TaskSpec {
            id: TaskId(id),
            tenant: TenantId(1),
            priority,
            guards: Guards::none(),
            budget_ticks: budget,
            work,
        }
    }

    #[test]
    fn runs_by_priority_then_stamp_then_id() {
        let mut r = CoreRunner::new(CoreId(2));
        r.enqueue(task(5, Priority::Low, 10, BuiltinWork::Empty), Timestamp(1))
            .expect("ok");
        r.enqueue(
            task(4, Priority::High, 10, BuiltinWork::Empty),
            Timestamp(3),
        )
        .expect("ok");
        r.enqueue(
            task(3, Priority::High, 10, BuiltinWork::Empty),
            Timestamp(2),
        )
        .expect("ok");
        r.enqueue(
            task(1, Priority::Normal, 10, BuiltinWork::Empty),
            Timestamp(4),
        )
        .expect("ok");
        let order: Vec<TaskId> = r
            .run_until_idle()
            .iter()
            .filter_map(|e| e.event.task())
            .collect();
        assert_eq!(order, [TaskId(3), TaskId(4), TaskId(1), TaskId(5)]);
        assert_eq!(r.counters().tasks_run, 4);
        assert_eq!(r.counters().ticks_used, 4);
        assert_eq!(r.queue_depth(), 0);
    }

    #[test]
    fn stamps_strictly_increase_and_follow_submit_time() {
        let mut r = CoreRunner::new(CoreId(0));
        let e = r
            .enqueue(
                task(1, Priority::Normal, 1, BuiltinWork::Empty),
                Timestamp(10),
            )
            .expect("ok");
        assert_eq!(
            e.stamp,
            CoreStamp {
                time: Timestamp(11),
                core: CoreId(0)
            }
        );
        let run = r.run_cycle().expect("one task");
        assert_eq!(run.stamp.time, Timestamp(12));
        assert_eq!(r.run_cycle(), None);
    }

    #[test]
    fn guard_denied_and_core_goes_on() {
        let mut r = CoreRunner::new(CoreId(0));
        r.grant(CapabilityId(1)).expect("room");
        let mut t = task(1, Priority::High, 10, BuiltinWork::Empty);
        t.guards = Guards::new(&[CapabilityId(1), CapabilityId(2)]).expect("two");
        r.enqueue(t, Timestamp(1)).expect("ok");
        r.enqueue(task(2, Priority::Low, 10, BuiltinWork::Empty), Timestamp(2))
            .expect("ok");
        let denied = r.run_cycle().expect("event");
        assert_eq!(
            denied.event,
            ReplayEvent::GuardDenied {
                task: TaskId(1),
                missing: CapabilityId(2)
            }
        );
        let next = r.run_cycle().expect("event");
        assert!(matches!(
            next.event,
            ReplayEvent::TaskExecuted {
                task: TaskId(2),
                ticks: 1,
                ..
            }
        ));
        assert_eq!(r.counters().denied, 1);
        assert_eq!(r.counters().tasks_run, 1);
    }

    #[test]
    fn budget_exceeded_is_deterministic() {
        let mut r = CoreRunner::new(CoreId(0));
        r.enqueue(
            task(1, Priority::Normal, 5, BuiltinWork::HashChain { steps: 6 }),
            Timestamp(1),
        )
        .expect("ok");
        let e = r.run_cycle().expect("event");
        assert_eq!(
            e.event,
            ReplayEvent::BudgetExceeded {
                task: TaskId(1),
                ticks: 5
            }
        );
        assert_eq!(r.counters().budget_exceeded, 1);
        assert_eq!(r.counters().ticks_used, 5);
    }

    /// A Work that lies about its ticks is still held to its budget.
    struct Overrun;
    impl Work for Overrun {
        fn run(&mut self, budget_ticks: u64) -> WorkResult {
            WorkResult {
                ticks_used: budget_ticks + 100,
                outcome: WorkOutcome::Completed {
                    output_hash: xdv_types::Hash32::ZERO,
                },
            }
        }
    }

    #[test]
    fn misbehaving_work_is_clamped() {
        let mut r = CoreRunner::new(CoreId(0));
        let t = TaskSpec {
            id: TaskId(9),
            tenant: TenantId(0),
            priority: Priority::Normal,
            guards: Guards::none(),
            budget_ticks: 7,
            work: Overrun,
        };
        r.enqueue(t, Timestamp(1)).ok().expect("ok");
        assert_eq!(
            r.run_cycle().expect("event").event,
            ReplayEvent::BudgetExceeded {
                task: TaskId(9),
                ticks: 7
            }
        );
        assert_eq!(r.counters().ticks_used, 7);
    }

    #[test]
    fn enqueue_rejections() {
        let mut r = CoreRunner::new(CoreId(0));
        let big = task(
            1,
            Priority::Normal,
            MAX_BUDGET_TICKS + 1,
            BuiltinWork::Empty,
        );
        assert!(matches!(
            r.enqueue(big, Timestamp(1)),
            Err(EnqueueError::BudgetTooLarge(_))
        ));
        r.enqueue(
            task(2, Priority::Normal, 1, BuiltinWork::Empty),
            Timestamp(1),
        )
        .expect("ok");
        let dup = r.enqueue(
            task(2, Priority::Normal, 1, BuiltinWork::Empty),
            Timestamp(1),
        );
        assert_eq!(dup.expect_err("dup").into_task().id, TaskId(2));
        assert_eq!(r.accept(CoreMsg::Seal), Ok(None));
    }
}
