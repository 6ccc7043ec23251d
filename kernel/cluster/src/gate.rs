//! The gate group's replicated state (issue 16, AD-36): a gate group is a small XDV
//! cluster whose state machine is the cross-cluster router. Every gate replica applies
//! the same log entries to a [`GateState`] with the entry's cluster time (`clock_ms`)
//! as `now_ms`, so every replica holds the same [`Router`] and computes the same
//! [`RouteDecision`] bytes for every job.
//!
//! Inputs (log commands, see [`crate::Command`]):
//! - `ClusterHeartbeat`: a member cluster's leader reported its health, cores, queue
//!   depth, load multiplier, circuit and coordinate; the gate leader proposed it.
//! - `RouteJob`: a tenant's signed submission; `Router::route` picks a primary and a
//!   fallback chain, the decision's encoding is stored with the job.
//! - `DispatchOutcome`: the chosen cluster accepted (its task id) or refused the
//!   submission; a refusal puts the cluster in cooldown and moves the job to the next
//!   cluster of its chain not tried yet.
//! - `JobFinished`: the cluster reported the task's outcome.
//! - `JobReport`: a member cluster's leader reported a routed job's progress, local
//!   timeout or leader change (gate-coordinated timeouts, AD-34 §11.2–11.5), fed to the
//!   replicated [`GateTracker`]; a report with a stale fence token is refused and
//!   counted. The gate's `ClockTick`s run the tracker's check (every gate check
//!   interval): a global timeout is a [`GateEvent::GlobalTimeout`] the gate leader
//!   sends to the cluster until the job ends.
//!
//! Only the gate leader acts on this state (dispatches, resends); the state decides.

use crate::hashed::HashedMap;
use crate::types::Outcome;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use xdv_federation::ClusterId;
use xdv_federation::route::{Heartbeat, RouteConfig, RouteDecision, Router};
use xdv_federation::timeout::{
    GateTracker, MAX_TIMEOUT_MS, ProgressReport, TimeoutConfig, TimeoutError, TimeoutReason,
};
use xdv_federation::vivaldi::Coordinate;
use xdv_types::{NodeId, TaskId, TenantId};

/// Most jobs the gate retains (finished ones are dropped oldest first beyond this).
pub const MAX_GATE_JOBS: usize = 4096;
/// Largest signed submission a job may carry (it is forwarded unchanged).
pub const MAX_SUBMISSION_BYTES: usize = 64 * 1024;
/// Longest refusal reason kept per cluster.
const MAX_REASON_BYTES: usize = 200;

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Sent (and resent by the gate leader) to `cluster`, not answered yet.
    Dispatching { cluster: ClusterId },
    /// `cluster` accepted it as its task `task`; it runs there.
    Accepted { cluster: ClusterId, task: TaskId },
    /// `cluster` reported how its task ended.
    Finished {
        cluster: ClusterId,
        task: TaskId,
        outcome: Outcome,
    },
    /// No cluster took it: none was eligible, or every one of its chain refused.
    Failed { reason: String },
}

/// `dispatching to c5`, `accepted by c5 as t7`, `finished on c5 as t7: executed`,
/// `failed: no eligible cluster` — the words `route explain` prints.
impl core::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            JobStatus::Dispatching { cluster } => write!(f, "dispatching to {cluster}"),
            JobStatus::Accepted { cluster, task } => write!(f, "accepted by {cluster} as {task}"),
            JobStatus::Finished {
                cluster,
                task,
                outcome,
            } => write!(f, "finished on {cluster} as {task}: {outcome}"),
            JobStatus::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

impl JobStatus {
    /// The cluster the job is at (dispatching, accepted or finished).
    pub fn cluster(&self) -> Option<ClusterId> {
        match self {
            JobStatus::Dispatching { cluster }
            | JobStatus::Accepted { cluster, .. }
            | JobStatus::Finished { cluster, .. } => Some(*cluster),
            JobStatus::Failed { .. } => None,
        }
    }

    /// Finished or failed: nothing more happens to it.
    pub fn is_final(&self) -> bool {
        matches!(self, JobStatus::Finished { .. } | JobStatus::Failed { .. })
    }
}

/// One routed job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateJob {
    pub tenant: TenantId,
    pub seq: u64,
    /// The tenant's signed submission (a postcard `SignedRequest`), forwarded unchanged.
    pub submission: Vec<u8>,
    /// The routing decision ([`RouteDecision::encode`]): primary, fallbacks, scores.
    pub decision: Vec<u8>,
    /// Clusters that refused it, in order, with their reason.
    pub refused: Vec<(ClusterId, String)>,
    pub status: JobStatus,
    /// Cluster time of the decision.
    pub routed_at_ms: u64,
}

crate::postcard_item_hash!(GateJob);

impl GateJob {
    /// The decoded decision (the state only stores decisions it encoded itself).
    pub fn decision(&self) -> Option<RouteDecision> {
        RouteDecision::decode(&self.decision).ok()
    }
}

/// A cluster's answer to a dispatch, as the gate logs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DispatchResult {
    Accepted { task: TaskId },
    Refused { reason: String },
}

/// What applying a gate command did (inside [`crate::Event::Gate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateEvent {
    HeartbeatApplied {
        cluster: ClusterId,
    },
    HeartbeatRefused {
        cluster: ClusterId,
        reason: String,
    },
    /// A new job and its decision (`decision`: the encoded [`RouteDecision`]).
    Routed {
        job: u64,
        tenant: TenantId,
        seq: u64,
        cluster: Option<ClusterId>,
        decision: Vec<u8>,
    },
    /// The submission was routed before, as `job`.
    Duplicate {
        job: u64,
    },
    /// The gate holds [`MAX_GATE_JOBS`] unfinished jobs: refused.
    Full,
    Accepted {
        job: u64,
        cluster: ClusterId,
        task: TaskId,
    },
    /// `cluster` refused `job`; it goes to `next` (or fails when `None`).
    Refused {
        job: u64,
        cluster: ClusterId,
        reason: String,
        next: Option<ClusterId>,
    },
    Finished {
        job: u64,
        cluster: ClusterId,
        task: TaskId,
        outcome: Outcome,
    },
    /// An outcome for an unknown job, or from a cluster the job is not at (late or
    /// duplicated answers): changes nothing.
    Stale {
        job: u64,
        cluster: ClusterId,
    },
    /// A member cluster's report on `job` (its task `task`) entered the gate's timeout
    /// tracking; the gate leader acknowledges it to `manager` with `fence_token`.
    ReportLogged {
        job: u64,
        cluster: ClusterId,
        task: TaskId,
        manager: NodeId,
        /// `progress`, `timeout` or `leader-transfer`.
        kind: String,
        fence_token: u64,
    },
    /// A report refused: a fence token older than the one heard from that cluster
    /// (`stale fence …`, counted), or a job not running there.
    ReportRefused {
        job: u64,
        cluster: ClusterId,
        fence_token: u64,
        reason: String,
    },
    /// The gate's check declared `job` timed out: the verdict for `cluster`'s task
    /// `task`, with the fence token last heard from that cluster.
    GlobalTimeout {
        job: u64,
        cluster: ClusterId,
        task: TaskId,
        reason: TimeoutReason,
        fence_token: u64,
    },
}

/// A member cluster's timeout report on a routed job (AD-34 §11.2), from its leader's
/// replicated `TimeoutTracker` decisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobReport {
    /// `JobProgressReport` (§11.2.1), every progress report interval.
    Progress {
        fence_token: u64,
        has_recent_progress: bool,
        total_extensions_ms: u64,
        max_worker_extension_ms: u64,
        workers_with_extensions: u32,
    },
    /// `JobTimeoutReport` (§11.2.2): the cluster's local verdict, resent until acknowledged.
    Timeout {
        reason: TimeoutReason,
        elapsed_ms: u64,
        fence_token: u64,
    },
    /// `JobLeaderTransfer` (§11.2.4): the cluster changed leader; a new fence token.
    LeaderTransfer { fence_token: u64 },
}

impl JobReport {
    pub fn fence_token(&self) -> u64 {
        match self {
            JobReport::Progress { fence_token, .. }
            | JobReport::Timeout { fence_token, .. }
            | JobReport::LeaderTransfer { fence_token } => *fence_token,
        }
    }

    /// `progress`, `timeout`, `leader-transfer`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobReport::Progress { .. } => "progress",
            JobReport::Timeout { .. } => "timeout",
            JobReport::LeaderTransfer { .. } => "leader-transfer",
        }
    }
}

/// Counters of the gate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCounters {
    pub heartbeats: u64,
    pub heartbeats_refused: u64,
    pub routed: u64,
    pub duplicates: u64,
    pub refusals: u64,
    pub finished: u64,
    pub failed: u64,
    pub stale_outcomes: u64,
    /// Timeout reports logged, and refused (the fence rejections among them are also
    /// in `timeouts.metrics.fence_rejections`).
    pub reports: u64,
    pub reports_refused: u64,
    pub global_timeouts: u64,
}

/// The replicated state of a gate group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateState {
    pub router: Router,
    pub jobs: HashedMap<u64, GateJob>,
    /// (tenant, submission seq) → job: a resubmission gets the same job.
    pub requests: BTreeMap<(TenantId, u64), u64>,
    pub next_job: u64,
    pub counters: GateCounters,
    /// Gate-coordinated timeouts (AD-34 §11.5) of every accepted job, keyed by
    /// `TaskId(job)` (the gate's job id), in the gate group's cluster time.
    pub timeouts: GateTracker,
}

impl GateState {
    /// `timeouts`: the gate group's `Config::timeouts.tracker` (validated with it).
    pub fn new(cfg: RouteConfig, timeouts: TimeoutConfig) -> GateState {
        let tracker = GateTracker::new(timeouts)
            .or_else(|_| GateTracker::new(TimeoutConfig::DEFAULT))
            .expect("the default timeout config is valid");
        GateState {
            router: Router::new(cfg),
            jobs: HashedMap::new(),
            requests: BTreeMap::new(),
            next_job: 1,
            counters: GateCounters::default(),
            timeouts: tracker,
        }
    }

    /// Feeds the state's content to the cluster state hash (jobs by their map root).
    pub(crate) fn feed_hash(&self, h: &mut Sha256, scratch: bool) {
        let GateState {
            router,
            jobs,
            requests,
            next_job,
            counters,
            timeouts,
        } = self;
        crate::hashed::feed_postcard(h, &(router, requests, next_job, counters, timeouts));
        let root = if scratch {
            jobs.root_from_scratch()
        } else {
            jobs.root()
        };
        sha2::Digest::update(h, root.0);
    }

    /// The job a tenant's submission became.
    pub fn job_for(&self, tenant: TenantId, seq: u64) -> Option<u64> {
        self.requests.get(&(tenant, seq)).copied()
    }

    /// Unfinished jobs in id order (what the gate leader dispatches and polls).
    pub fn open_jobs(&self) -> impl Iterator<Item = (u64, &GateJob)> {
        self.jobs
            .iter()
            .filter(|(_, j)| !j.status.is_final())
            .map(|(id, j)| (*id, j))
    }

    pub(crate) fn heartbeat(&mut self, hb: &Heartbeat, now_ms: u64) -> GateEvent {
        match self.router.on_heartbeat(hb, now_ms) {
            Ok(()) => {
                self.counters.heartbeats += 1;
                GateEvent::HeartbeatApplied {
                    cluster: hb.cluster,
                }
            }
            Err(e) => {
                self.counters.heartbeats_refused += 1;
                GateEvent::HeartbeatRefused {
                    cluster: hb.cluster,
                    reason: alloc::format!("{e:?}"),
                }
            }
        }
    }

    pub(crate) fn route_job(
        &mut self,
        tenant: TenantId,
        seq: u64,
        submission: Vec<u8>,
        local: Option<Coordinate>,
        now_ms: u64,
    ) -> GateEvent {
        if let Some(job) = self.job_for(tenant, seq) {
            self.counters.duplicates += 1;
            return GateEvent::Duplicate { job };
        }
        if submission.len() > MAX_SUBMISSION_BYTES || !self.make_room() {
            return GateEvent::Full;
        }
        let vcfg = self.router.config().vivaldi;
        // The proposer's coordinate is an input of the decision; a bad one counts as
        // none (bootstrap mode), never as a panic.
        let local = local
            .filter(|c| c.validate(&vcfg).is_ok())
            .unwrap_or_else(|| Coordinate::origin(&vcfg));
        // The tenant's preference is part of what it signed: read from the submission
        // itself (undecodable bytes, or anything but a `Submit`, prefer nothing).
        let prefer = match crate::mgmt::decode::<crate::mgmt::SignedRequest>(&submission) {
            Ok(crate::mgmt::SignedRequest {
                request: crate::mgmt::Request::Submit(s),
                ..
            }) => s.prefer,
            _ => Vec::new(),
        };
        let prefer = &prefer[..prefer.len().min(crate::mgmt::MAX_PREFERRED)];
        let d = self
            .router
            .route(u64::from(tenant.0), prefer, &local, now_ms);
        let job = self.next_job;
        self.next_job += 1;
        let status = match d.primary {
            Some(cluster) => JobStatus::Dispatching { cluster },
            None => JobStatus::Failed {
                reason: "no eligible cluster".into(),
            },
        };
        if status.is_final() {
            self.counters.failed += 1;
        }
        let decision = d.encode();
        self.requests.insert((tenant, seq), job);
        self.jobs.insert(
            job,
            GateJob {
                tenant,
                seq,
                submission,
                decision: decision.clone(),
                refused: Vec::new(),
                status,
                routed_at_ms: now_ms,
            },
        );
        self.counters.routed += 1;
        GateEvent::Routed {
            job,
            tenant,
            seq,
            cluster: d.primary,
            decision,
        }
    }

    /// Drops the oldest final job while the table is full; `false` when every
    /// retained job is still open.
    fn make_room(&mut self) -> bool {
        while self.jobs.len() >= MAX_GATE_JOBS {
            let Some(old) = self
                .jobs
                .iter()
                .find(|(_, j)| j.status.is_final())
                .map(|(id, _)| *id)
            else {
                return false;
            };
            if let Some(j) = self.jobs.remove(&old) {
                self.requests.remove(&(j.tenant, j.seq));
            }
        }
        true
    }

    pub(crate) fn dispatch_outcome(
        &mut self,
        job: u64,
        cluster: ClusterId,
        result: DispatchResult,
        now_ms: u64,
    ) -> GateEvent {
        let at = self.jobs.get(&job).map(|j| j.status.clone());
        if at != Some(JobStatus::Dispatching { cluster }) {
            self.counters.stale_outcomes += 1;
            return GateEvent::Stale { job, cluster };
        }
        match result {
            DispatchResult::Accepted { task } => {
                self.router.record_dispatch_success(cluster);
                let mut asked = None;
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.status = JobStatus::Accepted { cluster, task };
                    asked = submission_timeout(&j.submission);
                }
                // The gate's own elapsed check uses the timeout the tenant asked for;
                // without one the cluster's default applies there and its report
                // carries the verdict. A full tracker leaves the job to the cluster's
                // fallback (§11.4.3).
                let timeout_ms = asked.unwrap_or(MAX_TIMEOUT_MS).clamp(1, MAX_TIMEOUT_MS);
                let _ = self
                    .timeouts
                    .start(TaskId(job), timeout_ms, &[cluster], now_ms);
                GateEvent::Accepted { job, cluster, task }
            }
            DispatchResult::Refused { reason } => {
                self.counters.refusals += 1;
                // Known cluster: it was routed to, so it sent a heartbeat.
                let _ = self.router.record_dispatch_failure(cluster, now_ms);
                let reason = String::from(xdv_types::prefix_within(&reason, MAX_REASON_BYTES));
                let Some(j) = self.jobs.get_mut(&job) else {
                    return GateEvent::Stale { job, cluster };
                };
                j.refused.push((cluster, reason.clone()));
                let failed: Vec<ClusterId> = j.refused.iter().map(|(c, _)| *c).collect();
                let next = j
                    .decision()
                    .and_then(|d| d.next_fallback(&failed))
                    .filter(|c| !failed.contains(c));
                j.status = match next {
                    Some(c) => JobStatus::Dispatching { cluster: c },
                    None => JobStatus::Failed {
                        reason: alloc::format!("every cluster of the chain refused ({reason})"),
                    },
                };
                if next.is_none() {
                    self.counters.failed += 1;
                }
                GateEvent::Refused {
                    job,
                    cluster,
                    reason,
                    next,
                }
            }
        }
    }

    pub(crate) fn job_finished(
        &mut self,
        job: u64,
        cluster: ClusterId,
        task: TaskId,
        outcome: Outcome,
    ) -> GateEvent {
        let Some(j) = self.jobs.get_mut(&job) else {
            self.counters.stale_outcomes += 1;
            return GateEvent::Stale { job, cluster };
        };
        let here = match &j.status {
            JobStatus::Dispatching { cluster: c } => *c == cluster,
            JobStatus::Accepted {
                cluster: c,
                task: t,
            } => *c == cluster && *t == task,
            _ => false,
        };
        if !here {
            self.counters.stale_outcomes += 1;
            return GateEvent::Stale { job, cluster };
        }
        j.status = JobStatus::Finished {
            cluster,
            task,
            outcome: outcome.clone(),
        };
        self.timeouts.stop(TaskId(job));
        self.counters.finished += 1;
        self.router.record_dispatch_success(cluster);
        GateEvent::Finished {
            job,
            cluster,
            task,
            outcome,
        }
    }

    /// A member cluster's report on `job` (`JobReport` command): fed to the timeout
    /// tracker when the job runs there as `task`.
    pub(crate) fn job_report(
        &mut self,
        job: u64,
        cluster: ClusterId,
        task: TaskId,
        manager: NodeId,
        report: JobReport,
        now_ms: u64,
    ) -> GateEvent {
        let fence_token = report.fence_token();
        let here =
            self.jobs.get(&job).map(|j| &j.status) == Some(&JobStatus::Accepted { cluster, task });
        let refused = |s: &mut GateState, reason: String| {
            s.counters.reports_refused += 1;
            GateEvent::ReportRefused {
                job,
                cluster,
                fence_token,
                reason,
            }
        };
        if !here {
            return refused(
                self,
                alloc::format!("job {job} does not run on {cluster} as {task}"),
            );
        }
        let id = TaskId(job);
        let kind = String::from(report.kind());
        let r = match report {
            JobReport::Progress {
                fence_token,
                has_recent_progress,
                total_extensions_ms,
                max_worker_extension_ms,
                workers_with_extensions,
            } => self.timeouts.on_progress(
                ProgressReport {
                    job: id,
                    cluster,
                    manager,
                    fence_token,
                    has_recent_progress,
                    total_extensions_ms,
                    max_worker_extension_ms,
                    workers_with_extensions,
                },
                now_ms,
            ),
            JobReport::Timeout { fence_token, .. } => {
                self.timeouts.on_timeout_report(id, cluster, fence_token)
            }
            JobReport::LeaderTransfer { fence_token } => {
                self.timeouts
                    .on_leader_transfer(id, cluster, manager, fence_token)
            }
        };
        match r {
            Ok(()) => {
                self.counters.reports += 1;
                GateEvent::ReportLogged {
                    job,
                    cluster,
                    task,
                    manager,
                    kind,
                    fence_token,
                }
            }
            Err(TimeoutError::StaleFence { got, current }) => {
                refused(self, alloc::format!("stale fence {got} < {current}"))
            }
            Err(e) => refused(self, alloc::format!("{e:?}")),
        }
    }

    /// The gate's periodic timeout check (on each `ClockTick`; the tracker acts every
    /// gate check interval): one [`GateEvent::GlobalTimeout`] per declared job and
    /// target cluster it runs on.
    pub(crate) fn timeout_tick(&mut self, now_ms: u64) -> Vec<GateEvent> {
        let mut out = Vec::new();
        for g in self.timeouts.on_tick(now_ms) {
            for (cluster, fence_token) in g.targets {
                let job = g.job.0;
                if let Some(JobStatus::Accepted { cluster: c, task }) =
                    self.jobs.get(&job).map(|j| &j.status)
                    && *c == cluster
                {
                    self.counters.global_timeouts += 1;
                    out.push(GateEvent::GlobalTimeout {
                        job,
                        cluster,
                        task: *task,
                        reason: g.reason,
                        fence_token,
                    });
                }
            }
        }
        out
    }

    /// The verdicts the gate leader (re)sends: every accepted job declared timed out,
    /// with the fence token last heard from its cluster, in job order.
    pub fn verdicts(&self) -> Vec<(u64, ClusterId, TaskId, TimeoutReason, u64)> {
        let mut out = Vec::new();
        for (id, gj) in self.timeouts.jobs() {
            let Some(reason) = gj.timeout_reason.filter(|_| gj.globally_timed_out) else {
                continue;
            };
            let Some(JobStatus::Accepted { cluster, task }) =
                self.jobs.get(&id.0).map(|j| &j.status)
            else {
                continue;
            };
            if let Some(cp) = gj.clusters.get(cluster) {
                out.push((id.0, *cluster, *task, reason, cp.fence_token));
            }
        }
        out
    }

    /// Invariants: every request names a retained job of that request, and every job
    /// is named by its request; the timeout tracker follows only accepted jobs.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (id, _) in self.timeouts.jobs() {
            if !matches!(
                self.jobs.get(&id.0).map(|j| &j.status),
                Some(JobStatus::Accepted { .. })
            ) {
                return Err(alloc::format!(
                    "gate: tracks job {} that is not accepted",
                    id.0
                ));
            }
        }
        if self.requests.len() != self.jobs.len() {
            return Err("gate: requests and jobs differ in number".into());
        }
        for (&(tenant, seq), job) in &self.requests {
            match self.jobs.get(job) {
                Some(j) if j.tenant == tenant && j.seq == seq && *job < self.next_job => {}
                _ => {
                    return Err(alloc::format!(
                        "gate: request ({tenant}, {seq}) names no job"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What gates and member clusters send each other on the authenticated peer transport
/// (inside `mgmt::PeerForward::Federation`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedMsg {
    /// A member cluster's leader to every gate node: its health and load.
    Heartbeat(Heartbeat),
    /// The gate leader to a node of the chosen cluster (resent until the job ends):
    /// run the tenant's submission, signed for the gate group's cluster id
    /// `gate_cluster`. Also the gate's poll for the job's outcome.
    Dispatch {
        job: u64,
        gate_cluster: u32,
        submission: crate::mgmt::SignedRequest,
    },
    /// A node of `cluster` to every gate node: what became of `job`.
    Answer {
        job: u64,
        cluster: ClusterId,
        answer: DispatchAnswer,
    },
    /// A member cluster's leader to every gate node: a timeout report on `job`, its
    /// task `task` (gate-coordinated timeouts).
    Report {
        job: u64,
        cluster: ClusterId,
        task: TaskId,
        report: JobReport,
    },
    /// The gate leader to the reporting leader: the report with `fence_token` is logged.
    ReportAck {
        job: u64,
        task: TaskId,
        fence_token: u64,
    },
    /// The gate leader to the cluster's leader (resent every dispatch round until the
    /// job ends): the gate declared `job` (the cluster's task `task`) timed out.
    Verdict {
        job: u64,
        task: TaskId,
        reason: TimeoutReason,
        fence_token: u64,
    },
}

/// The timeout a signed submission asks for (`None`: none, or not a submission).
fn submission_timeout(submission: &[u8]) -> Option<u64> {
    match crate::mgmt::decode::<crate::mgmt::SignedRequest>(submission)
        .ok()?
        .request
    {
        crate::mgmt::Request::Submit(s) => s.timeout_ms,
        _ => None,
    }
}

/// A member cluster's answer to a dispatch, from its applied state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DispatchAnswer {
    /// The submission is the cluster's task `task`, not finished.
    Accepted { task: TaskId },
    /// The cluster will not run it (refused at the edge or by its state machine).
    Refused { reason: String },
    /// Its task `task` ended.
    Finished { task: TaskId, outcome: Outcome },
}
