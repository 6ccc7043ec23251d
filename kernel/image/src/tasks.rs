//! Cluster tasks on this node's run queues. The node ([`xdv_node::Node`]) says which
//! (task, attempt) to run; this module validates the module with the sandbox (the same
//! check `cargo xdv task check` runs), starts batches on the application processors
//! only — never on the boot CPU, which serves the network and consensus — and turns
//! each outcome into the `Completion` the node reports through the log. A module that
//! fails validation is reported as `Refused` with the validation error.
//!
//! Each run carries a [`RunControl`]: the node's `Outbox::stop` (a cancelled, timed-out
//! or re-placed attempt) sets its cancel flag, which the sandbox checks between fuel
//! slices, so even an endless loop leaves its core within one slice; the `progress`
//! calls it counts go to the node ([`Tasks::progress`]), which reports them to the log.
#![deny(unsafe_code)]

use crate::executor::{self, DISPATCHER, MAX_ASYNC_BATCH, TaskWork};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use xdv_cluster::{Completion, Outcome, Work};
use xdv_node::RunTask;
use xdv_sandbox::{
    Limits, ModuleCache, RunControl, SandboxWork, TaskModule, builtin, validate_cached,
};
use xdv_sched::{CoreEvent, Guards, ReplayEvent, TaskSpec};
use xdv_types::{Hash32, NodeId, TaskId};

// The cluster's idea of the sandbox maxima is the sandbox's.
const _: () = assert!(xdv_cluster::MAX_TASK_MEMORY_PAGES as usize == xdv_sandbox::MAX_MEMORY_PAGES);
const _: () =
    assert!(xdv_cluster::MAX_TASK_TABLE_ELEMENTS as usize == xdv_sandbox::MAX_TABLE_ELEMENTS);

/// Cluster tasks waiting for the APs and running on them.
pub struct Tasks {
    me: NodeId,
    queued: VecDeque<RunTask>,
    /// The batch on the APs: (task, attempt, local id, its control, progress calls
    /// already reported).
    running: Vec<(TaskId, u32, TaskId, RunControl, u64)>,
    pub started: u64,
    pub finished: u64,
    /// (task, attempt) of the batch started since [`Tasks::take_started`].
    just_started: Vec<(TaskId, u32)>,
    /// Modules compiled for earlier tasks: a module submitted again is not compiled
    /// again (under TCG, compiling even a trivial module took about 1 ms).
    pub modules: ModuleCache,
}

fn module_of(run: &RunTask) -> Result<TaskModule, String> {
    let spec = &run.spec;
    let (module, input) = match &spec.work {
        Work::Builtin(name) => {
            let b = builtin(name).ok_or_else(|| alloc::format!("no builtin `{name}`"))?;
            let input = if spec.input.is_empty() {
                b.default_input.to_vec()
            } else {
                spec.input.clone()
            };
            (b.wasm.to_vec(), input)
        }
        Work::Wasm(m) => (m.clone(), spec.input.clone()),
        Work::Dropped(_) => return Err("module no longer held".into()),
        Work::Job(_) => return Err("a device job runs on an accelerator, not a core".into()),
    };
    Ok(TaskModule {
        tenant: spec.tenant,
        module,
        input,
        budget_ticks: spec.budget_ticks,
        priority: spec.priority,
        guards: spec.guards.clone(),
    })
}

impl Tasks {
    pub fn new(me: NodeId) -> Tasks {
        Tasks {
            me,
            queued: VecDeque::new(),
            running: Vec::new(),
            started: 0,
            finished: 0,
            just_started: Vec::new(),
            modules: ModuleCache::new(ModuleCache::DEFAULT_CAPACITY),
        }
    }

    /// Queues a task the node dispatched.
    pub fn start(&mut self, run: RunTask) {
        self.queued.push_back(run);
    }

    /// The tasks that left the queue for the APs since the last call.
    pub fn take_started(&mut self) -> Vec<(TaskId, u32)> {
        core::mem::take(&mut self.just_started)
    }

    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// The node took `(task, attempt)` away: a queued one is dropped (and reported
    /// stopped, which the node drops), a running one is cancelled — its run ends within
    /// one fuel slice and its batch then reports it as usual.
    pub fn stop(&mut self, task: TaskId, attempt: u32) -> Option<Completion> {
        if let Some(i) = self
            .queued
            .iter()
            .position(|r| r.task == task && r.attempt == attempt)
        {
            let run = self.queued.remove(i)?;
            return Some(refused(&run, self.me, "stopped before it ran".into()));
        }
        if let Some(r) = self.running.iter().find(|r| r.0 == task && r.1 == attempt) {
            r.3.cancel();
        }
        None
    }

    /// Running tasks that called `progress` since the last look.
    pub fn progress(&mut self) -> Vec<(TaskId, u32)> {
        let mut out = Vec::new();
        for r in self.running.iter_mut() {
            let now = r.3.progress();
            if now > r.4 {
                r.4 = now;
                out.push((r.0, r.1));
            }
        }
        out
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Collects the batch on the APs if it finished (starts nothing); returns the
    /// completions to report.
    pub fn collect(&mut self) -> Vec<Completion> {
        let mut done = Vec::new();
        let mut guard = DISPATCHER.lock();
        if let Some(d) = guard.as_mut()
            && let Some(events) = d.poll_async()
        {
            for (task, attempt, id, _, _) in core::mem::take(&mut self.running) {
                done.push(self.completion_of(task, attempt, id, &events));
            }
        }
        done
    }

    /// Collects a finished batch and starts the next; returns completions to report.
    pub fn poll(&mut self) -> Vec<Completion> {
        let mut done = Vec::new();
        let mut guard = DISPATCHER.lock();
        let Some(d) = guard.as_mut() else {
            for run in self.queued.drain(..) {
                done.push(refused(&run, self.me, "run queues not started".into()));
            }
            return done;
        };
        if let Some(events) = d.poll_async() {
            for (task, attempt, id, _, _) in core::mem::take(&mut self.running) {
                done.push(self.completion_of(task, attempt, id, &events));
            }
        }
        if d.busy() || self.queued.is_empty() {
            return done;
        }
        if d.cores() < 2 {
            for run in self.queued.drain(..) {
                let why = "this node has no application processor for cluster tasks".into();
                done.push(refused(&run, self.me, why));
            }
            return done;
        }
        let mut specs = Vec::new();
        while specs.len() < MAX_ASYNC_BATCH
            && let Some(run) = self.queued.pop_front()
        {
            let control = RunControl::default();
            match spec_of(&mut self.modules, &run, control.clone()) {
                Ok(spec) => {
                    self.running
                        .push((run.task, run.attempt, spec.id, control, 0));
                    specs.push(spec);
                }
                Err(why) => done.push(refused(&run, self.me, why)),
            }
        }
        if specs.is_empty() {
            return done;
        }
        self.started += specs.len() as u64;
        self.just_started
            .extend(self.running.iter().map(|r| (r.0, r.1)));
        if let Err(back) = d.start_async(specs) {
            // Cannot happen (checked not busy, batch bounded): report, never lose.
            for s in back {
                if let Some(i) = self.running.iter().position(|r| r.2 == s.id) {
                    let (task, attempt, _, _, _) = self.running.remove(i);
                    done.push(completion(
                        task,
                        self.me,
                        attempt,
                        Outcome::Refused("the run queues refused the batch".into()),
                        0,
                        Hash32::ZERO,
                    ));
                }
            }
        }
        done
    }

    fn completion_of(
        &mut self,
        task: TaskId,
        attempt: u32,
        id: TaskId,
        events: &[CoreEvent],
    ) -> Completion {
        self.finished += 1;
        let outcome = events
            .iter()
            .rev()
            .find(|e| e.event.task() == Some(id) && e.event.is_outcome());
        let (outcome, ticks, hash) = match outcome.map(|e| &e.event) {
            Some(ReplayEvent::TaskExecuted {
                ticks, output_hash, ..
            }) => (Outcome::Executed, *ticks, *output_hash),
            Some(ReplayEvent::BudgetExceeded { ticks, .. }) => {
                (Outcome::BudgetExceeded, *ticks, Hash32::ZERO)
            }
            Some(ReplayEvent::Trapped { ticks, reason, .. }) => (
                Outcome::Trapped(alloc::format!("{reason}")),
                *ticks,
                Hash32::ZERO,
            ),
            Some(ReplayEvent::GuardDenied { .. }) => (Outcome::GuardDenied, 0, Hash32::ZERO),
            _ => (
                Outcome::Refused("no outcome in the replay log".into()),
                0,
                Hash32::ZERO,
            ),
        };
        let mut c = completion(task, self.me, attempt, outcome, ticks, hash);
        c.output = executor::output_of(id).unwrap_or_default();
        c.output.truncate(xdv_cluster::MAX_OUTPUT_BYTES);
        c.log = xdv_cluster::keep_log(executor::log_of(id).unwrap_or_default());
        c
    }
}

fn spec_of(
    modules: &mut ModuleCache,
    run: &RunTask,
    control: RunControl,
) -> Result<TaskSpec<TaskWork>, String> {
    let limits = Limits {
        memory_pages: run.memory_pages as usize,
        table_elements: run.table_elements as usize,
    };
    let v = module_of(run)
        .and_then(|m| validate_cached(modules, &m, limits).map_err(|e| alloc::format!("{e}")))?;
    let guards = Guards::new(&run.spec.guards).map_err(|e| alloc::format!("{e:?}"))?;
    let id = xdv_node::local_run_id(run.task, run.attempt);
    Ok(TaskSpec {
        id,
        tenant: run.spec.tenant,
        priority: run.spec.priority,
        guards,
        budget_ticks: v.budget_ticks,
        work: TaskWork::Wasm {
            task: id,
            work: Box::new(SandboxWork {
                task: v,
                logical_time: run.submitted_lamport as i64,
                output: Vec::new(),
                log: Vec::new(),
                control,
            }),
        },
    })
}

fn completion(
    task: TaskId,
    node: NodeId,
    attempt: u32,
    outcome: Outcome,
    ticks: u64,
    output_hash: Hash32,
) -> Completion {
    Completion {
        task,
        node,
        attempt,
        outcome,
        ticks,
        output_hash,
        output: Vec::new(),
        log: Vec::new(),
    }
}

fn refused(run: &RunTask, me: NodeId, why: String) -> Completion {
    let why = String::from(xdv_types::prefix_within(
        &why,
        xdv_cluster::MAX_REASON_BYTES,
    ));
    completion(
        run.task,
        me,
        run.attempt,
        Outcome::Refused(why),
        0,
        Hash32::ZERO,
    )
}
