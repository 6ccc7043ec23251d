//! Where a task's time goes on this node: one small stamp record per task, and the
//! recent durations of each stage of the request path.
//!
//! Every stamp is this node's own time input ([`super::Node::set_time_us`]), so a
//! stage is only measured when both of its ends happen on this node: the node a
//! client submitted through sees `received`, the leader `proposed`, every node
//! `applied` and `completion_applied`, the placed node `queued`, `started` and
//! `finished`, and the node holding the client's `AwaitTask` `replied`. Pure: no
//! clock of its own, bounded everywhere ([`MAX_OPEN`], [`MAX_SAMPLES`]).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use xdv_cluster::mgmt::StageStat;
use xdv_types::{TaskId, TenantId};

/// Most tasks (and not yet applied requests) stamps are kept for; the oldest go first.
pub const MAX_OPEN: usize = 4096;
/// Most recent durations kept per stage.
pub const MAX_SAMPLES: usize = 2048;

/// The moments of one task's life this node saw (µs of node time).
#[derive(Clone, Copy, Default, Debug)]
struct Stamps {
    received: Option<u64>,
    proposed: Option<u64>,
    applied: Option<u64>,
    queued: Option<u64>,
    started: Option<u64>,
    finished: Option<u64>,
    completion_applied: Option<u64>,
}

/// A stage: its name and its two ends.
type Ends = (
    &'static str,
    fn(&Stamps) -> Option<u64>,
    fn(&Stamps) -> Option<u64>,
);

/// The stages reported, in request-path order. `replied` stages are recorded at the
/// reply itself (see [`Stages::replied`]).
const STAGES: [Ends; 7] = [
    ("received->proposed", |s| s.received, |s| s.proposed),
    ("proposed->applied", |s| s.proposed, |s| s.applied),
    ("received->applied", |s| s.received, |s| s.applied),
    ("applied->queued", |s| s.applied, |s| s.queued),
    ("queued->started", |s| s.queued, |s| s.started),
    ("started->finished", |s| s.started, |s| s.finished),
    (
        "finished->completion_applied",
        |s| s.finished,
        |s| s.completion_applied,
    ),
];
/// Stages ending at a reply: (name, start).
const REPLY_STAGES: [Ends; 2] = [
    (
        "completion_applied->replied",
        |s| s.completion_applied,
        |_| None,
    ),
    ("received->replied", |s| s.received, |_| None),
];

/// Stamps per task, durations per stage.
#[derive(Default)]
pub struct Stages {
    /// Submissions seen before the log named their task: (tenant, request seq).
    by_request: BTreeMap<(TenantId, u64), Stamps>,
    by_task: BTreeMap<TaskId, Stamps>,
    samples: BTreeMap<&'static str, VecDeque<u64>>,
}

/// Which moment a stamp marks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Moment {
    Queued,
    Started,
    Finished,
    CompletionApplied,
}

impl Stages {
    /// A client's submission arrived at this node.
    pub fn received(&mut self, tenant: TenantId, seq: u64, now_us: u64) {
        Self::bounded(&mut self.by_request);
        let s = self.by_request.entry((tenant, seq)).or_default();
        s.received.get_or_insert(now_us);
    }

    /// This node (the leader) proposed the submission.
    pub fn proposed(&mut self, tenant: TenantId, seq: u64, now_us: u64) {
        Self::bounded(&mut self.by_request);
        let s = self.by_request.entry((tenant, seq)).or_default();
        s.proposed.get_or_insert(now_us);
    }

    /// The log assigned `task` (from request `(tenant, seq)`): applied here now.
    pub fn applied(&mut self, task: TaskId, tenant: TenantId, seq: u64, now_us: u64) {
        let mut s = self.by_request.remove(&(tenant, seq)).unwrap_or_default();
        if s.applied.is_some() || self.by_task.contains_key(&task) {
            return; // a re-placement: the first assignment is the one measured
        }
        s.applied = Some(now_us);
        Self::bounded(&mut self.by_task);
        self.by_task.insert(task, s);
        self.record(&s, 0..3);
    }

    /// A later moment of `task`'s life on this node.
    pub fn stamp(&mut self, task: TaskId, moment: Moment, now_us: u64) {
        let Some(s) = self.by_task.get_mut(&task) else {
            return;
        };
        let (slot, stage) = match moment {
            Moment::Queued => (&mut s.queued, 3),
            Moment::Started => (&mut s.started, 4),
            Moment::Finished => (&mut s.finished, 5),
            Moment::CompletionApplied => (&mut s.completion_applied, 6),
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(now_us);
        let s = *s;
        self.record(&s, stage..stage + 1);
    }

    /// This node answered a client waiting for `task`'s outcome.
    pub fn replied(&mut self, task: TaskId, now_us: u64) {
        let Some(s) = self.by_task.get(&task).copied() else {
            return;
        };
        for (name, from, _) in REPLY_STAGES {
            if let Some(a) = from(&s) {
                self.push(name, now_us.saturating_sub(a));
            }
        }
    }

    fn record(&mut self, s: &Stamps, stages: core::ops::Range<usize>) {
        for (name, from, to) in &STAGES[stages] {
            if let (Some(a), Some(b)) = (from(s), to(s)) {
                self.push(name, b.saturating_sub(a));
            }
        }
    }

    fn push(&mut self, name: &'static str, us: u64) {
        let v = self.samples.entry(name).or_default();
        if v.len() == MAX_SAMPLES {
            v.pop_front();
        }
        v.push_back(us);
    }

    fn bounded<K: Ord + Clone>(map: &mut BTreeMap<K, Stamps>) {
        while map.len() >= MAX_OPEN {
            map.pop_first();
        }
    }

    /// p50/p99 of each stage measured here, in request-path order.
    pub fn stats(&self) -> Vec<StageStat> {
        STAGES
            .iter()
            .chain(REPLY_STAGES.iter())
            .filter_map(|(name, _, _)| {
                let v = self.samples.get(name).filter(|v| !v.is_empty())?;
                let mut v: Vec<u64> = v.iter().copied().collect();
                v.sort_unstable();
                let at = |p: usize| v[(v.len() - 1) * p / 100];
                Some(StageStat {
                    name: (*name).into(),
                    p50_us: at(50),
                    p99_us: at(99),
                    samples: v.len() as u64,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_of_one_task_on_one_node() {
        let mut s = Stages::default();
        let (t, task) = (TenantId(1), TaskId(7));
        s.received(t, 42, 100);
        s.proposed(t, 42, 150);
        s.applied(task, t, 42, 400);
        s.stamp(task, Moment::Queued, 450);
        s.stamp(task, Moment::Started, 500);
        s.stamp(task, Moment::Finished, 900);
        s.stamp(task, Moment::Finished, 9_999); // a second report changes nothing
        s.stamp(task, Moment::CompletionApplied, 1_000);
        s.replied(task, 1_100);
        let got: Vec<(String, u64)> = s.stats().into_iter().map(|x| (x.name, x.p50_us)).collect();
        let want = [
            ("received->proposed", 50),
            ("proposed->applied", 250),
            ("received->applied", 300),
            ("applied->queued", 50),
            ("queued->started", 50),
            ("started->finished", 400),
            ("finished->completion_applied", 100),
            ("completion_applied->replied", 100),
            ("received->replied", 1_000),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(n, v)| ((*n).into(), *v)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_stage_needs_both_ends_here_and_stamps_stay_bounded() {
        let mut s = Stages::default();
        // Another node received and proposed it: only the local stages count.
        s.applied(TaskId(1), TenantId(1), 1, 10);
        s.stamp(TaskId(1), Moment::Queued, 30);
        let names: Vec<String> = s.stats().into_iter().map(|x| x.name).collect();
        assert_eq!(names, ["applied->queued"]);
        for k in 0..(MAX_OPEN as u64 + 10) {
            s.received(TenantId(2), k, k);
        }
        assert!(s.by_request.len() <= MAX_OPEN);
        // Unknown tasks are ignored.
        s.stamp(TaskId(99), Moment::Finished, 5);
        s.replied(TaskId(99), 5);
        assert_eq!(s.stats().len(), 1);
    }
}
