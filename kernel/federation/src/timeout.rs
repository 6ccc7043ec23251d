//! Adaptive job timeouts (AD-34, seed §11): one [`TimeoutTracker`] per cluster (the
//! manager side) and one [`GateTracker`] per gate.
//!
//! Shape: inputs in, decisions out. Every input carries `now_ms`, the cluster's logical
//! milliseconds taken from the log entry that delivers it, so every replica applying the
//! same entries holds the same state and computes the same [`Decision`]s; only the leader
//! performs them (sends the reports, cancels the job).
//!
//! Invariants:
//! - A job is tracked from [`TimeoutTracker::start`] to [`TimeoutTracker::stop`]; nothing
//!   about it survives `stop` (no orphaned state, §Notes "memory cleanup").
//! - A job times out at most once: `locally_timed_out` latches the local verdict and the
//!   `Decision::TimeOut` for it is emitted exactly once, whoever decided it.
//! - A gate-coordinated cluster never cancels a job on its own verdict while its gate is
//!   reachable: it reports and waits for the gate's global timeout. After
//!   [`TimeoutConfig::gate_fallback_ms`] without any message from the gate the cluster
//!   becomes the job's authority for good (authorities never alternate).
//! - The fence token only grows (one step per leader change); a gate message carrying an
//!   older token is refused with [`TimeoutError::StaleFence`] and counted.
//! - Extension time already granted is never revoked: a failed worker leaves the set of
//!   workers with extensions, but the job keeps the time (shortening a deadline
//!   retroactively could time a job out the instant its worker failed).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::{ClusterId, JobId, NodeId};

/// Most jobs one tracker follows at once.
pub const MAX_TRACKED_JOBS: usize = 65_536;
/// Most workers with extensions recorded per job.
pub const MAX_WORKERS_WITH_EXTENSIONS: usize = 4_096;
/// Longest single extension a worker may be granted (one day).
pub const MAX_EXTENSION_MS: u64 = 86_400_000;
/// Longest job timeout accepted (thirty days).
pub const MAX_TIMEOUT_MS: u64 = 30 * 86_400_000;
/// Most target clusters of one job at a gate.
pub const MAX_TARGET_CLUSTERS: usize = 256;

/// Timing of the timeout machinery (seed §11.7), all in logical milliseconds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutConfig {
    /// How often the leader checks its jobs (`JOB_TIMEOUT_CHECK_INTERVAL`, 30 s).
    pub check_interval_ms: u64,
    /// No progress for this long is a stuck job (`JOB_STUCK_THRESHOLD`, 120 s).
    pub stuck_threshold_ms: u64,
    /// How often a gate-coordinated cluster reports progress, and resends an
    /// unacknowledged timeout report (§11.3.3, 10 s).
    pub progress_report_interval_ms: u64,
    /// How often the gate checks for global timeouts (`GATE_TIMEOUT_CHECK_INTERVAL`, 15 s).
    pub gate_check_interval_ms: u64,
    /// Silence from the gate after which the cluster takes authority
    /// (`GATE_TIMEOUT_FALLBACK`, 300 s).
    pub gate_fallback_ms: u64,
    /// The gate declares a global timeout when every running target cluster has made no
    /// progress for this long (`GATE_ALL_DC_STUCK_THRESHOLD`, 180 s).
    pub all_clusters_stuck_threshold_ms: u64,
}

impl TimeoutConfig {
    /// The seed's defaults (§11.7).
    pub const DEFAULT: TimeoutConfig = TimeoutConfig {
        check_interval_ms: 30_000,
        stuck_threshold_ms: 120_000,
        progress_report_interval_ms: 10_000,
        gate_check_interval_ms: 15_000,
        gate_fallback_ms: 300_000,
        all_clusters_stuck_threshold_ms: 180_000,
    };

    /// Every duration multiplied by `per_mille / 1000` (at least 1 ms each), so tests and
    /// the simulator can run the same protocol faster: `DEFAULT.scaled(10)` checks every
    /// 300 ms and falls back after 3 s. The ratios between the durations are kept (up to
    /// the 1 ms floor), so the protocol's ordering of events is the same as at full scale.
    pub fn scaled(self, per_mille: u64) -> TimeoutConfig {
        let s = |ms: u64| {
            (u128::from(ms) * u128::from(per_mille) / 1000).clamp(1, u128::from(u64::MAX)) as u64
        };
        TimeoutConfig {
            check_interval_ms: s(self.check_interval_ms),
            stuck_threshold_ms: s(self.stuck_threshold_ms),
            progress_report_interval_ms: s(self.progress_report_interval_ms),
            gate_check_interval_ms: s(self.gate_check_interval_ms),
            gate_fallback_ms: s(self.gate_fallback_ms),
            all_clusters_stuck_threshold_ms: s(self.all_clusters_stuck_threshold_ms),
        }
    }

    /// Refuses a zero interval or a fallback no longer than the report interval (the gate
    /// would be declared lost between two reports).
    pub fn validate(&self) -> Result<(), TimeoutError> {
        let intervals = [
            self.check_interval_ms,
            self.stuck_threshold_ms,
            self.progress_report_interval_ms,
            self.gate_check_interval_ms,
            self.gate_fallback_ms,
            self.all_clusters_stuck_threshold_ms,
        ];
        if intervals.contains(&0) {
            return Err(TimeoutError::BadConfig(
                "every interval must be at least 1 ms",
            ));
        }
        if self.gate_fallback_ms <= self.progress_report_interval_ms {
            return Err(TimeoutError::BadConfig(
                "gate_fallback_ms must exceed progress_report_interval_ms",
            ));
        }
        Ok(())
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig::DEFAULT
    }
}

/// Who decides that a job has timed out (§11.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Single cluster: the cluster's leader decides alone.
    LocalAuthority,
    /// Multi-cluster: the cluster reports to the gate, and the gate declares the timeout.
    GateCoordinated,
}

/// Why a job timed out.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeoutReason {
    /// Elapsed time passed the timeout plus the extensions granted.
    Elapsed,
    /// No progress for the stuck threshold.
    Stuck,
    /// (Gate) this target cluster reported a local timeout.
    ClusterReported(ClusterId),
    /// (Gate) no running target cluster made progress for the all-clusters threshold.
    AllClustersStuck,
}

/// How a job's tracking ended (§11.4.10).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEnd {
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

/// Who took the timeout decision carried by [`Decision::TimeOut`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Authority {
    /// The cluster, under [`Strategy::LocalAuthority`].
    Local,
    /// The gate's global timeout.
    Gate,
    /// The cluster, after the gate was silent for the fallback period.
    Fallback,
}

/// What the leader must do. Produced in job-id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// End the job as timed out (cancel its work), then call
    /// [`TimeoutTracker::stop`] with [`JobEnd::TimedOut`].
    TimeOut {
        job: JobId,
        reason: TimeoutReason,
        elapsed_ms: u64,
        fence_token: u64,
        authority: Authority,
    },
    /// Send `JobTimeoutReport` to the gate; repeated every report interval until
    /// [`TimeoutTracker::on_gate_ack`] acknowledges this fence token.
    ReportTimeout {
        job: JobId,
        gate: NodeId,
        reason: TimeoutReason,
        elapsed_ms: u64,
        fence_token: u64,
    },
    /// Send `JobProgressReport` to the gate.
    ReportProgress {
        job: JobId,
        gate: NodeId,
        fence_token: u64,
        has_recent_progress: bool,
        total_extensions_ms: u64,
        max_worker_extension_ms: u64,
        workers_with_extensions: u32,
    },
    /// Send `JobLeaderTransfer` to the gate.
    ReportLeaderTransfer {
        job: JobId,
        gate: NodeId,
        fence_token: u64,
    },
    /// Send `JobFinalStatus` to the gate.
    ReportFinalStatus {
        job: JobId,
        gate: NodeId,
        status: JobEnd,
        fence_token: u64,
    },
    /// The gate was silent for `silent_ms`: this cluster is the job's authority from now on.
    FellBackToLocal {
        job: JobId,
        gate: NodeId,
        silent_ms: u64,
    },
}

/// A refused input. Every refusal leaves the tracker unchanged (counters aside).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TimeoutError {
    BadConfig(&'static str),
    /// The job is not tracked (never started, or already stopped).
    UnknownJob(JobId),
    AlreadyTracked(JobId),
    /// A table is at its named capacity.
    Full {
        what: &'static str,
        max: usize,
    },
    /// `timeout_ms` is zero or above [`MAX_TIMEOUT_MS`].
    BadTimeout(u64),
    /// An extension of zero or above [`MAX_EXTENSION_MS`].
    BadExtension(u64),
    /// A message from before the latest leader change.
    StaleFence {
        got: u64,
        current: u64,
    },
    /// A cluster that is not one of the job's targets (gate side).
    NotATarget {
        job: JobId,
        cluster: ClusterId,
    },
    /// `now_ms` went backwards relative to the job's start.
    TimeWentBack {
        now_ms: u64,
        started_at_ms: u64,
    },
}

/// How a job is to be tracked, from its submission.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct JobTimeoutSpec {
    pub timeout_ms: u64,
    /// The gate that submitted the job; `Some` selects [`Strategy::GateCoordinated`]
    /// (§11.4.2).
    pub gate: Option<NodeId>,
}

/// A timeout report waiting for the gate's acknowledgement.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReport {
    pub reason: TimeoutReason,
    pub elapsed_ms: u64,
    pub fence_token: u64,
}

/// Per-job timeout tracking state (§11.1.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutState {
    pub strategy: Strategy,
    pub gate: Option<NodeId>,
    pub started_at_ms: u64,
    pub last_progress_at_ms: u64,
    pub last_report_at_ms: u64,
    pub last_gate_contact_ms: u64,
    pub timeout_ms: u64,
    pub stuck_threshold_ms: u64,
    pub total_extensions_granted_ms: u64,
    pub max_worker_extension_ms: u64,
    pub last_extension_at_ms: u64,
    /// Workers currently holding an extension, with the time granted to each.
    pub active_workers_with_extensions: BTreeMap<NodeId, u64>,
    pub locally_timed_out: bool,
    pub globally_timed_out: bool,
    /// True once the gate was silent for the fallback period (strategy is then local).
    pub fell_back: bool,
    pub timeout_reason: Option<TimeoutReason>,
    pub timeout_fence_token: u64,
    pub pending_report: Option<PendingReport>,
}

impl TimeoutState {
    fn new(spec: JobTimeoutSpec, stuck_threshold_ms: u64, now_ms: u64) -> TimeoutState {
        TimeoutState {
            strategy: if spec.gate.is_some() {
                Strategy::GateCoordinated
            } else {
                Strategy::LocalAuthority
            },
            gate: spec.gate,
            started_at_ms: now_ms,
            last_progress_at_ms: now_ms,
            last_report_at_ms: now_ms,
            last_gate_contact_ms: now_ms,
            timeout_ms: spec.timeout_ms,
            stuck_threshold_ms,
            total_extensions_granted_ms: 0,
            max_worker_extension_ms: 0,
            last_extension_at_ms: 0,
            active_workers_with_extensions: BTreeMap::new(),
            locally_timed_out: false,
            globally_timed_out: false,
            fell_back: false,
            timeout_reason: None,
            timeout_fence_token: 0,
            pending_report: None,
        }
    }

    /// The local verdict (§11.3.2): elapsed beyond timeout plus extensions, or no progress
    /// for the stuck threshold. Pure: the caller latches it.
    pub fn check(&self, now_ms: u64) -> Option<TimeoutReason> {
        let elapsed = now_ms.saturating_sub(self.started_at_ms);
        if elapsed
            > self
                .timeout_ms
                .saturating_add(self.total_extensions_granted_ms)
        {
            return Some(TimeoutReason::Elapsed);
        }
        if now_ms.saturating_sub(self.last_progress_at_ms) > self.stuck_threshold_ms {
            return Some(TimeoutReason::Stuck);
        }
        None
    }

    /// The job's deadline as it stands: start + timeout + extensions.
    pub fn deadline_ms(&self) -> u64 {
        self.started_at_ms
            .saturating_add(self.timeout_ms)
            .saturating_add(self.total_extensions_granted_ms)
    }

    fn reports_to_gate(&self) -> Option<NodeId> {
        match self.strategy {
            Strategy::GateCoordinated => self.gate,
            Strategy::LocalAuthority => None,
        }
    }
}

/// Counters of §11.8.1 (manager side).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutMetrics {
    pub checks_local: u64,
    pub checks_gate: u64,
    pub detected_elapsed: u64,
    pub detected_stuck: u64,
    pub reports_sent: u64,
    pub reports_resent: u64,
    pub fence_rejections: u64,
    pub leader_transfers: u64,
    pub gate_fallbacks: u64,
    pub global_timeouts_accepted: u64,
}

/// The manager side: every job of this cluster under timeout tracking. Serializable so a
/// cluster can keep it in its replicated (hashed, snapshotted) state: every field is a
/// plain value or a `BTreeMap`, so the encoding is canonical.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutTracker {
    cfg: TimeoutConfig,
    jobs: BTreeMap<JobId, TimeoutState>,
    next_check_ms: u64,
    /// The counters of §11.8.1.
    pub metrics: TimeoutMetrics,
}

impl TimeoutTracker {
    pub fn new(cfg: TimeoutConfig) -> Result<TimeoutTracker, TimeoutError> {
        cfg.validate()?;
        Ok(TimeoutTracker {
            cfg,
            jobs: BTreeMap::new(),
            next_check_ms: 0,
            metrics: TimeoutMetrics::default(),
        })
    }

    pub fn config(&self) -> &TimeoutConfig {
        &self.cfg
    }

    /// When the next periodic check is due (logical ms; the cluster hashes it).
    pub fn next_check_ms(&self) -> u64 {
        self.next_check_ms
    }

    pub fn get(&self, job: JobId) -> Option<&TimeoutState> {
        self.jobs.get(&job)
    }

    /// Every tracked job, in job-id order.
    pub fn jobs(&self) -> impl Iterator<Item = (&JobId, &TimeoutState)> {
        self.jobs.iter()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Starts tracking a submitted job (§11.4.4).
    pub fn start(
        &mut self,
        job: JobId,
        spec: JobTimeoutSpec,
        now_ms: u64,
    ) -> Result<(), TimeoutError> {
        self.start_at_fence(job, spec, 0, now_ms)
    }

    /// [`TimeoutTracker::start`] with the fence token the job's previous tracking ended
    /// with: a job tracked again (a re-placed attempt) keeps its token, so a gate that
    /// heard the old token never sees it go back.
    pub fn start_at_fence(
        &mut self,
        job: JobId,
        spec: JobTimeoutSpec,
        fence_token: u64,
        now_ms: u64,
    ) -> Result<(), TimeoutError> {
        if spec.timeout_ms == 0 || spec.timeout_ms > MAX_TIMEOUT_MS {
            return Err(TimeoutError::BadTimeout(spec.timeout_ms));
        }
        if self.jobs.contains_key(&job) {
            return Err(TimeoutError::AlreadyTracked(job));
        }
        if self.jobs.len() >= MAX_TRACKED_JOBS {
            return Err(TimeoutError::Full {
                what: "tracked jobs",
                max: MAX_TRACKED_JOBS,
            });
        }
        let mut st = TimeoutState::new(spec, self.cfg.stuck_threshold_ms, now_ms);
        st.timeout_fence_token = fence_token;
        self.jobs.insert(job, st);
        Ok(())
    }

    /// A workflow of the job made progress (§11.4.12).
    pub fn on_progress(&mut self, job: JobId, now_ms: u64) -> Result<(), TimeoutError> {
        let st = job_in(&mut self.jobs, job, now_ms)?;
        st.last_progress_at_ms = st.last_progress_at_ms.max(now_ms);
        Ok(())
    }

    /// A worker running the job was granted an extension (§11.4.9). A grant is evidence
    /// of progress (AD-26 grants only to workers that show progress), so it also counts
    /// as progress for stuck detection.
    pub fn on_extension(
        &mut self,
        job: JobId,
        worker: NodeId,
        extension_ms: u64,
        now_ms: u64,
    ) -> Result<(), TimeoutError> {
        if extension_ms == 0 || extension_ms > MAX_EXTENSION_MS {
            return Err(TimeoutError::BadExtension(extension_ms));
        }
        let st = job_in(&mut self.jobs, job, now_ms)?;
        if !st.active_workers_with_extensions.contains_key(&worker)
            && st.active_workers_with_extensions.len() >= MAX_WORKERS_WITH_EXTENSIONS
        {
            return Err(TimeoutError::Full {
                what: "workers with extensions",
                max: MAX_WORKERS_WITH_EXTENSIONS,
            });
        }
        let granted = st.active_workers_with_extensions.entry(worker).or_insert(0);
        *granted = granted.saturating_add(extension_ms);
        let granted = *granted;
        st.total_extensions_granted_ms =
            st.total_extensions_granted_ms.saturating_add(extension_ms);
        st.max_worker_extension_ms = st.max_worker_extension_ms.max(granted);
        st.last_extension_at_ms = now_ms;
        st.last_progress_at_ms = st.last_progress_at_ms.max(now_ms);
        Ok(())
    }

    /// A worker failed: it no longer holds an extension on any job (§11.4.10). Returns
    /// how many jobs it held one on.
    pub fn on_worker_failed(&mut self, worker: NodeId) -> usize {
        let mut n = 0;
        for st in self.jobs.values_mut() {
            if st.active_workers_with_extensions.remove(&worker).is_some() {
                n += 1;
            }
        }
        n
    }

    /// Any message from `gate` proves it reachable for every job it coordinates.
    pub fn on_gate_contact(&mut self, gate: NodeId, now_ms: u64) {
        for st in self.jobs.values_mut().filter(|st| st.gate == Some(gate)) {
            st.last_gate_contact_ms = st.last_gate_contact_ms.max(now_ms);
        }
    }

    /// The gate acknowledged the job's timeout report carrying `fence_token`.
    pub fn on_gate_ack(
        &mut self,
        job: JobId,
        fence_token: u64,
        now_ms: u64,
    ) -> Result<(), TimeoutError> {
        let st = job_in(&mut self.jobs, job, now_ms)?;
        st.last_gate_contact_ms = st.last_gate_contact_ms.max(now_ms);
        if fence_token < st.timeout_fence_token {
            let current = st.timeout_fence_token;
            self.metrics.fence_rejections += 1;
            return Err(TimeoutError::StaleFence {
                got: fence_token,
                current,
            });
        }
        if st
            .pending_report
            .is_some_and(|p| p.fence_token == fence_token)
        {
            st.pending_report = None;
        }
        Ok(())
    }

    /// The gate declared a global timeout (§11.4.11). `Ok(Some(TimeOut))` when accepted;
    /// `Ok(None)` when the job has no gate (local authority ignores gates) or was already
    /// timed out globally. A token older than the job's is refused and counted.
    pub fn on_global_timeout(
        &mut self,
        job: JobId,
        reason: TimeoutReason,
        fence_token: u64,
        now_ms: u64,
    ) -> Result<Option<Decision>, TimeoutError> {
        let st = job_in(&mut self.jobs, job, now_ms)?;
        if st.gate.is_none() {
            return Ok(None);
        }
        st.last_gate_contact_ms = st.last_gate_contact_ms.max(now_ms);
        if fence_token < st.timeout_fence_token {
            let current = st.timeout_fence_token;
            self.metrics.fence_rejections += 1;
            return Err(TimeoutError::StaleFence {
                got: fence_token,
                current,
            });
        }
        if st.globally_timed_out {
            return Ok(None);
        }
        st.globally_timed_out = true;
        st.timeout_reason = Some(reason);
        st.pending_report = None;
        let d = Decision::TimeOut {
            job,
            reason,
            elapsed_ms: now_ms - st.started_at_ms,
            fence_token: st.timeout_fence_token,
            authority: Authority::Gate,
        };
        self.metrics.global_timeouts_accepted += 1;
        Ok(Some(d))
    }

    /// This cluster's leader changed (§11.4.5): every job's fence token steps, its
    /// progress clock restarts (the new leader gives the job a full stuck threshold) and
    /// a pending timeout report is re-stamped with the new token. Gate-coordinated jobs
    /// tell their gate.
    pub fn on_leader_change(&mut self, now_ms: u64) -> Vec<Decision> {
        let mut out = Vec::new();
        for (&job, st) in self.jobs.iter_mut() {
            st.timeout_fence_token += 1;
            st.last_progress_at_ms = st.last_progress_at_ms.max(now_ms);
            if let Some(p) = st.pending_report.as_mut() {
                p.fence_token = st.timeout_fence_token;
            }
            if let Some(gate) = st.reports_to_gate() {
                out.push(Decision::ReportLeaderTransfer {
                    job,
                    gate,
                    fence_token: st.timeout_fence_token,
                });
            }
        }
        self.metrics.leader_transfers += 1;
        out
    }

    /// The job ended (§11.4.10: completed, failed, cancelled, or timed out after a
    /// `TimeOut` decision): its tracking is removed. A job with a gate reports its final
    /// status. Unknown jobs are an error, so a double stop is visible.
    pub fn stop(&mut self, job: JobId, end: JobEnd) -> Result<Option<Decision>, TimeoutError> {
        let st = self
            .jobs
            .remove(&job)
            .ok_or(TimeoutError::UnknownJob(job))?;
        Ok(st.gate.map(|gate| Decision::ReportFinalStatus {
            job,
            gate,
            status: end,
            fence_token: st.timeout_fence_token,
        }))
    }

    /// Time passed to `now_ms`: timeout checks (every check interval), gate fallback,
    /// progress reports and resends of unacknowledged timeout reports.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Decision> {
        let check_due = now_ms >= self.next_check_ms;
        if check_due {
            self.next_check_ms = now_ms.saturating_add(self.cfg.check_interval_ms);
        }
        let cfg = self.cfg;
        let mut out = Vec::new();
        for (&job, st) in self.jobs.iter_mut() {
            if now_ms < st.started_at_ms {
                continue;
            }
            Self::tick_fallback(&cfg, &mut self.metrics, job, st, now_ms, &mut out);
            if check_due && !st.locally_timed_out && !st.globally_timed_out {
                Self::tick_check(&mut self.metrics, job, st, now_ms, &mut out);
            }
            Self::tick_reports(&cfg, &mut self.metrics, job, st, now_ms, &mut out);
        }
        out
    }

    fn tick_fallback(
        cfg: &TimeoutConfig,
        m: &mut TimeoutMetrics,
        job: JobId,
        st: &mut TimeoutState,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        let Some(gate) = st.reports_to_gate() else {
            return;
        };
        let silent_ms = now_ms.saturating_sub(st.last_gate_contact_ms);
        if silent_ms < cfg.gate_fallback_ms {
            return;
        }
        st.strategy = Strategy::LocalAuthority;
        st.fell_back = true;
        m.gate_fallbacks += 1;
        out.push(Decision::FellBackToLocal {
            job,
            gate,
            silent_ms,
        });
        if st.locally_timed_out && !st.globally_timed_out {
            let p = st.pending_report.take();
            let reason = p.map_or(TimeoutReason::Elapsed, |p| p.reason);
            out.push(Decision::TimeOut {
                job,
                reason,
                elapsed_ms: now_ms - st.started_at_ms,
                fence_token: st.timeout_fence_token,
                authority: Authority::Fallback,
            });
        }
    }

    fn tick_check(
        m: &mut TimeoutMetrics,
        job: JobId,
        st: &mut TimeoutState,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        match st.strategy {
            Strategy::LocalAuthority => m.checks_local += 1,
            Strategy::GateCoordinated => m.checks_gate += 1,
        }
        let Some(reason) = st.check(now_ms) else {
            return;
        };
        match reason {
            TimeoutReason::Stuck => m.detected_stuck += 1,
            _ => m.detected_elapsed += 1,
        }
        st.locally_timed_out = true;
        st.timeout_reason = Some(reason);
        let elapsed_ms = now_ms - st.started_at_ms;
        let fence_token = st.timeout_fence_token;
        match st.reports_to_gate() {
            None => {
                let authority = if st.fell_back {
                    Authority::Fallback
                } else {
                    Authority::Local
                };
                out.push(Decision::TimeOut {
                    job,
                    reason,
                    elapsed_ms,
                    fence_token,
                    authority,
                });
            }
            Some(gate) => {
                st.pending_report = Some(PendingReport {
                    reason,
                    elapsed_ms,
                    fence_token,
                });
                st.last_report_at_ms = now_ms;
                m.reports_sent += 1;
                out.push(Decision::ReportTimeout {
                    job,
                    gate,
                    reason,
                    elapsed_ms,
                    fence_token,
                });
            }
        }
    }

    fn tick_reports(
        cfg: &TimeoutConfig,
        m: &mut TimeoutMetrics,
        job: JobId,
        st: &mut TimeoutState,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        let Some(gate) = st.reports_to_gate() else {
            return;
        };
        if now_ms.saturating_sub(st.last_report_at_ms) < cfg.progress_report_interval_ms {
            return;
        }
        let fence_token = st.timeout_fence_token;
        if let Some(p) = st.pending_report {
            m.reports_resent += 1;
            out.push(Decision::ReportTimeout {
                job,
                gate,
                reason: p.reason,
                elapsed_ms: p.elapsed_ms,
                fence_token,
            });
        } else if !st.locally_timed_out && !st.globally_timed_out {
            out.push(Decision::ReportProgress {
                job,
                gate,
                fence_token,
                has_recent_progress: st.last_progress_at_ms > st.last_report_at_ms,
                total_extensions_ms: st.total_extensions_granted_ms,
                max_worker_extension_ms: st.max_worker_extension_ms,
                workers_with_extensions: st.active_workers_with_extensions.len() as u32,
            });
        } else {
            return;
        }
        st.last_report_at_ms = now_ms;
    }
}

/// The tracked job `job`, refusing a `now_ms` before its start.
fn job_in(
    jobs: &mut BTreeMap<JobId, TimeoutState>,
    job: JobId,
    now_ms: u64,
) -> Result<&mut TimeoutState, TimeoutError> {
    let st = jobs.get_mut(&job).ok_or(TimeoutError::UnknownJob(job))?;
    if now_ms < st.started_at_ms {
        return Err(TimeoutError::TimeWentBack {
            now_ms,
            started_at_ms: st.started_at_ms,
        });
    }
    Ok(st)
}

/// Where one target cluster stands with a job, as the gate sees it (§11.5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterProgress {
    pub timed_out: bool,
    pub final_status: Option<JobEnd>,
    pub last_progress_ms: u64,
    pub manager: Option<NodeId>,
    pub total_extensions_ms: u64,
    pub max_extension_ms: u64,
    pub workers_with_extensions: u32,
    /// The highest fence token heard from this cluster.
    pub fence_token: u64,
}

/// A job the gate tracks (§11.5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateJob {
    pub submitted_at_ms: u64,
    pub timeout_ms: u64,
    pub clusters: BTreeMap<ClusterId, ClusterProgress>,
    pub globally_timed_out: bool,
    pub timeout_reason: Option<TimeoutReason>,
}

/// A progress report from a cluster's leader (§11.2.1), as the gate receives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProgressReport {
    pub job: JobId,
    pub cluster: ClusterId,
    pub manager: NodeId,
    pub fence_token: u64,
    pub has_recent_progress: bool,
    pub total_extensions_ms: u64,
    pub max_worker_extension_ms: u64,
    pub workers_with_extensions: u32,
}

/// The gate's declaration (§11.2.3), to send to each target cluster with the fence
/// token last heard from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalTimeout {
    pub job: JobId,
    pub reason: TimeoutReason,
    pub timed_out_at_ms: u64,
    pub targets: Vec<(ClusterId, u64)>,
}

/// Counters of §11.8.1 (gate side).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateMetrics {
    pub progress_reports: u64,
    pub timeout_reports: u64,
    pub global_timeouts_declared: u64,
    pub fence_rejections: u64,
}

/// The gate side (§11.5.2): every job the gate submitted to several clusters.
/// Serializable like [`TimeoutTracker`], so a gate group keeps it in its replicated
/// state (every field a plain value or a `BTreeMap`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateTracker {
    cfg: TimeoutConfig,
    jobs: BTreeMap<JobId, GateJob>,
    next_check_ms: u64,
    pub metrics: GateMetrics,
}

impl GateTracker {
    pub fn new(cfg: TimeoutConfig) -> Result<GateTracker, TimeoutError> {
        cfg.validate()?;
        Ok(GateTracker {
            cfg,
            jobs: BTreeMap::new(),
            next_check_ms: 0,
            metrics: GateMetrics::default(),
        })
    }

    pub fn get(&self, job: JobId) -> Option<&GateJob> {
        self.jobs.get(&job)
    }

    pub fn config(&self) -> &TimeoutConfig {
        &self.cfg
    }

    /// Every tracked job, in job-id order.
    pub fn jobs(&self) -> impl Iterator<Item = (&JobId, &GateJob)> {
        self.jobs.iter()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Forgets a job whose end the gate learnt otherwise (its cluster answered with
    /// the outcome); returns whether it was tracked.
    pub fn stop(&mut self, job: JobId) -> bool {
        self.jobs.remove(&job).is_some()
    }

    /// Starts tracking a job submitted to `targets` (§11.5.11).
    pub fn start(
        &mut self,
        job: JobId,
        timeout_ms: u64,
        targets: &[ClusterId],
        now_ms: u64,
    ) -> Result<(), TimeoutError> {
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(TimeoutError::BadTimeout(timeout_ms));
        }
        if targets.is_empty() || targets.len() > MAX_TARGET_CLUSTERS {
            return Err(TimeoutError::Full {
                what: "target clusters (1..)",
                max: MAX_TARGET_CLUSTERS,
            });
        }
        if self.jobs.contains_key(&job) {
            return Err(TimeoutError::AlreadyTracked(job));
        }
        if self.jobs.len() >= MAX_TRACKED_JOBS {
            return Err(TimeoutError::Full {
                what: "tracked jobs",
                max: MAX_TRACKED_JOBS,
            });
        }
        let fresh = ClusterProgress {
            timed_out: false,
            final_status: None,
            last_progress_ms: now_ms,
            manager: None,
            total_extensions_ms: 0,
            max_extension_ms: 0,
            workers_with_extensions: 0,
            fence_token: 0,
        };
        let clusters = targets.iter().map(|&c| (c, fresh.clone())).collect();
        let gj = GateJob {
            submitted_at_ms: now_ms,
            timeout_ms,
            clusters,
            globally_timed_out: false,
            timeout_reason: None,
        };
        self.jobs.insert(job, gj);
        Ok(())
    }

    fn target(
        &mut self,
        job: JobId,
        cluster: ClusterId,
        fence_token: u64,
    ) -> Result<&mut ClusterProgress, TimeoutError> {
        let gj = self
            .jobs
            .get_mut(&job)
            .ok_or(TimeoutError::UnknownJob(job))?;
        let cp = gj
            .clusters
            .get_mut(&cluster)
            .ok_or(TimeoutError::NotATarget { job, cluster })?;
        if fence_token < cp.fence_token {
            self.metrics.fence_rejections += 1;
            return Err(TimeoutError::StaleFence {
                got: fence_token,
                current: cp.fence_token,
            });
        }
        cp.fence_token = fence_token;
        Ok(cp)
    }

    /// A cluster's progress report (§11.5.6).
    pub fn on_progress(&mut self, r: ProgressReport, now_ms: u64) -> Result<(), TimeoutError> {
        let cp = self.target(r.job, r.cluster, r.fence_token)?;
        if r.has_recent_progress {
            cp.last_progress_ms = cp.last_progress_ms.max(now_ms);
        }
        cp.manager = Some(r.manager);
        cp.total_extensions_ms = r.total_extensions_ms;
        cp.max_extension_ms = r.max_worker_extension_ms;
        cp.workers_with_extensions = r.workers_with_extensions;
        self.metrics.progress_reports += 1;
        Ok(())
    }

    /// A cluster's timeout report (§11.5.7). On success the caller acknowledges it to the
    /// cluster with the same fence token.
    pub fn on_timeout_report(
        &mut self,
        job: JobId,
        cluster: ClusterId,
        fence_token: u64,
    ) -> Result<(), TimeoutError> {
        let cp = self.target(job, cluster, fence_token)?;
        cp.timed_out = true;
        self.metrics.timeout_reports += 1;
        Ok(())
    }

    /// A cluster changed leader for the job (§11.5.9).
    pub fn on_leader_transfer(
        &mut self,
        job: JobId,
        cluster: ClusterId,
        new_leader: NodeId,
        fence_token: u64,
    ) -> Result<(), TimeoutError> {
        let cp = self.target(job, cluster, fence_token)?;
        cp.manager = Some(new_leader);
        Ok(())
    }

    /// A cluster's final status (§11.5.8). The job is forgotten once every target has
    /// reported one; returns whether it was.
    pub fn on_final_status(
        &mut self,
        job: JobId,
        cluster: ClusterId,
        status: JobEnd,
        fence_token: u64,
    ) -> Result<bool, TimeoutError> {
        let cp = self.target(job, cluster, fence_token)?;
        cp.final_status = Some(status);
        let done = self
            .jobs
            .get(&job)
            .is_some_and(|gj| gj.clusters.values().all(|c| c.final_status.is_some()));
        if done {
            self.jobs.remove(&job);
        }
        Ok(done)
    }

    /// The gate's periodic check (§11.5.4), every gate check interval.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<GlobalTimeout> {
        if now_ms < self.next_check_ms {
            return Vec::new();
        }
        self.next_check_ms = now_ms.saturating_add(self.cfg.gate_check_interval_ms);
        let stuck_ms = self.cfg.all_clusters_stuck_threshold_ms;
        let mut out = Vec::new();
        for (&job, gj) in self.jobs.iter_mut() {
            if gj.globally_timed_out || now_ms < gj.submitted_at_ms {
                continue;
            }
            let Some(reason) = Self::global_verdict(gj, now_ms, stuck_ms) else {
                continue;
            };
            gj.globally_timed_out = true;
            gj.timeout_reason = Some(reason);
            let targets = gj
                .clusters
                .iter()
                .map(|(&c, cp)| (c, cp.fence_token))
                .collect();
            out.push(GlobalTimeout {
                job,
                reason,
                timed_out_at_ms: now_ms,
                targets,
            });
        }
        self.metrics.global_timeouts_declared += out.len() as u64;
        out
    }

    fn global_verdict(gj: &GateJob, now_ms: u64, stuck_ms: u64) -> Option<TimeoutReason> {
        let max_ext = gj
            .clusters
            .values()
            .map(|c| c.total_extensions_ms)
            .max()
            .unwrap_or(0);
        if now_ms - gj.submitted_at_ms > gj.timeout_ms.saturating_add(max_ext) {
            return Some(TimeoutReason::Elapsed);
        }
        if let Some((&c, _)) = gj
            .clusters
            .iter()
            .find(|(_, cp)| cp.timed_out && cp.final_status.is_none())
        {
            return Some(TimeoutReason::ClusterReported(c));
        }
        let mut running = gj
            .clusters
            .values()
            .filter(|c| c.final_status.is_none())
            .peekable();
        running.peek()?;
        if running.all(|c| now_ms.saturating_sub(c.last_progress_ms) >= stuck_ms) {
            return Some(TimeoutReason::AllClustersStuck);
        }
        None
    }
}
