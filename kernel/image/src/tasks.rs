//! Cluster tasks on this node's run queues: a task the log placed here is validated by
//! the sandbox (the same check `cargo xdv task check` runs), run as one batch across
//! the cores with every other task placed here, and turned into the `Completion` the
//! node reports through the log. A module that fails validation is reported as
//! `Refused` with the validation error, so the submitter learns why.

use crate::cluster;
use crate::executor::{self, DISPATCHER, TaskWork};
use alloc::boxed::Box;
use alloc::vec::Vec;
use xdv_cluster::{Completion, Outcome, TaskRecord, Work};
use xdv_sandbox::{Limits, SandboxWork, TaskModule, builtin, validate_with};
use xdv_sched::{Guards, ReplayEvent, TaskSpec};
use xdv_types::{Hash32, NodeId, TaskId};

/// A task the log placed on this node, with its tenant's sandbox limits.
pub struct Placed {
    pub task: TaskId,
    pub attempt: u32,
    pub record: TaskRecord,
    pub limits: Limits,
}

// The cluster's idea of the sandbox maxima is the sandbox's.
const _: () = assert!(xdv_cluster::MAX_TASK_MEMORY_PAGES as usize == xdv_sandbox::MAX_MEMORY_PAGES);
const _: () =
    assert!(xdv_cluster::MAX_TASK_TABLE_ELEMENTS as usize == xdv_sandbox::MAX_TABLE_ELEMENTS);

fn module_of(rec: &TaskRecord) -> Result<TaskModule, alloc::string::String> {
    let (module, input) = match &rec.spec.work {
        Work::Builtin(name) => {
            let b = builtin(name).ok_or_else(|| alloc::format!("no builtin `{name}`"))?;
            let input = if rec.spec.input.is_empty() {
                b.default_input.to_vec()
            } else {
                rec.spec.input.clone()
            };
            (b.wasm.to_vec(), input)
        }
        Work::Wasm(m) => (m.clone(), rec.spec.input.clone()),
        Work::Dropped(_) => return Err("module no longer held".into()),
    };
    Ok(TaskModule {
        tenant: rec.spec.tenant,
        module,
        input,
        budget_ticks: rec.spec.budget_ticks,
        priority: rec.spec.priority,
        guards: rec.spec.guards.clone(),
    })
}

/// Runs `batch` and returns one completion per task.
pub fn run_cluster_tasks(batch: &[Placed]) -> Vec<Completion> {
    let me = NodeId(cluster::IDENTITY.get().map_or(0, |i| i.node));
    let mut done = Vec::new();
    let mut specs = Vec::new();
    let mut ran = Vec::new();
    for p in batch {
        let (task, attempt, rec) = (&p.task, &p.attempt, &p.record);
        let checked = module_of(rec)
            .and_then(|m| validate_with(&m, p.limits).map_err(|e| alloc::format!("{e}")));
        let guards = Guards::new(&rec.spec.guards);
        match (checked, guards) {
            (Ok(v), Ok(guards)) => {
                let id = cluster::local_id(*task, *attempt);
                specs.push(TaskSpec {
                    id,
                    tenant: rec.spec.tenant,
                    priority: rec.spec.priority,
                    guards,
                    budget_ticks: v.budget_ticks,
                    work: TaskWork::Wasm {
                        task: id,
                        work: Box::new(SandboxWork {
                            task: v,
                            logical_time: rec.submitted.lamport as i64,
                            output: Vec::new(),
                        }),
                    },
                });
                ran.push((*task, *attempt, id));
            }
            (Err(e), _) => done.push(refused(*task, me, *attempt, e)),
            (_, Err(e)) => done.push(refused(*task, me, *attempt, alloc::format!("{e:?}"))),
        }
    }
    if specs.is_empty() {
        return done;
    }
    let mut guard = DISPATCHER.lock();
    let Some(d) = guard.as_mut() else {
        for (task, attempt, _) in ran {
            done.push(refused(task, me, attempt, "run queues not started".into()));
        }
        return done;
    };
    if let Err(e) = d.run_batch(specs) {
        log::error!("cluster: batch failed: {e}");
    }
    for (task, attempt, id) in ran {
        let events = executor::events_of(&d.log, id);
        let outcome = events.iter().rev().find(|e| e.event.is_outcome());
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
        let output = executor::output_of(id).unwrap_or_default();
        done.push(cluster::completion(
            task, me, attempt, outcome, ticks, hash, output,
        ));
    }
    done
}

fn refused(task: TaskId, me: NodeId, attempt: u32, why: alloc::string::String) -> Completion {
    let why = cluster::clip(why, xdv_cluster::MAX_REASON_BYTES);
    cluster::completion(
        task,
        me,
        attempt,
        Outcome::Refused(why),
        0,
        Hash32::ZERO,
        Vec::new(),
    )
}
