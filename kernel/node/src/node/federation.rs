//! The node's part in a federation of clusters (issue 16, AD-36): gate groups and the
//! member clusters that feed them. Idle unless [`NodeConfig::federation`] says so.
//!
//! - **Member cluster.** Its leader sends a [`FedMsg::Heartbeat`] (health bucket,
//!   cores, queue depth, load multiplier, circuit, its own coordinate) to every gate
//!   node every `heartbeat_every_ms`. A [`FedMsg::Dispatch`] (the tenant's submission,
//!   signed for the gate group's cluster id and forwarded unchanged) is checked as a
//!   submission to that id against this cluster's tenants; the leader proposes it (a
//!   follower forwards the dispatch to its leader), and any node answers from its
//!   applied state: accepted (the task), refused (why) or finished (the outcome). The
//!   gate resends each open job's dispatch, so a resend is also the gate's poll for
//!   the outcome, and nothing here is remembered outside the replicated state.
//! - **Gate group.** A tenant's `Submit` becomes a `RouteJob` entry (with the
//!   proposer's coordinate); the applied decision is an audit record
//!   ([`AUDIT_TAG_ROUTE`]) on every gate replica and the client is answered with the
//!   job and the chosen cluster. The gate leader proposes every heartbeat it hears
//!   (`ClusterHeartbeat`), dispatches each open job to the chosen cluster's leader (as
//!   the latest heartbeat names it) every `dispatch_every_ms` — after
//!   [`UNANSWERED_ROUNDS`] unanswered rounds to the next of the cluster's live managers
//!   by score and its other nodes (manager selection, §13.8) — and logs the answers
//!   (`DispatchOutcome`, `JobFinished`). A refusal cools the cluster down and the job
//!   goes to its next fallback (applied in the state, identically everywhere).
//!
//! Gate-coordinated timeouts (AD-34 §11.2–11.5): a dispatched submission enters the
//! member's log as `AssignRoutedTask`, so its task's tracking reports to the gate. The
//! member leader sends every report the applied state produces
//! ([`xdv_cluster::Event::GateReport`]) as [`FedMsg::Report`] to the gate nodes; the
//! gate leader logs it (`JobReport`) and acknowledges it ([`FedMsg::ReportAck`], which
//! the member leader logs as `GateAck`). The gate's `ClockTick`s run its tracker; a
//! global timeout is sent as [`FedMsg::Verdict`] with every dispatch round until the
//! job ends, and the member leader logs it (`GateVerdict`), fence token checked there.
//!
//! Vivaldi across the federation: [`Node::on_fed_rtt`] takes RTT samples to the other
//! side's nodes ([`Node::federation_peers`]) into the node's coordinate (not into the
//! membership's confirmation: they are not members).
//!
//! [`NodeConfig::federation`]: crate::config::NodeConfig::federation

use super::{Node, Wait};
use crate::config::FederationConfig;
use crate::durable::Region;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use xdv_audit::RecordBody;
use xdv_cluster::gate::{DispatchAnswer, DispatchResult, FedMsg, GateEvent, JobStatus};
use xdv_cluster::mgmt::{self, Denied, PeerForward, Principal, Response, SignedRequest};
use xdv_cluster::{ClusterState, Command, TaskStatus};
use xdv_federation::ClusterId;
use xdv_federation::route::{Circuit, Health, Heartbeat};
use xdv_types::{NodeId, TaskId, TenantId};

/// Audit `Custom` tag of a gate's routing record: postcard ([`RouteRecordBody`]).
/// Every gate replica writes one per applied decision, acceptance, refusal and completion.
pub const AUDIT_TAG_ROUTE: u16 = 0xC8;
/// Most open jobs the gate leader dispatches (or polls) per round.
pub const MAX_DISPATCH_PER_ROUND: usize = 64;
/// Dispatch rounds without an answer after which the gate leader sends a job to the
/// next candidate node of its cluster (manager selection, seed §13.8).
pub const UNANSWERED_ROUNDS: u32 = 2;

/// What a routing audit record holds ([`AUDIT_TAG_ROUTE`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteRecordBody {
    pub index: u64,
    pub job: u64,
    /// `routed` (cluster `None`: no eligible cluster, the job failed), `accepted`,
    /// `refused` (the detail names the next cluster, or none: the job failed), `finished`.
    pub event: String,
    pub cluster: Option<ClusterId>,
    /// For `routed`: the encoded `RouteDecision` (primary, fallbacks, scores, reason);
    /// `cargo xdv route explain` decodes it. Else empty.
    pub decision: Vec<u8>,
    pub detail: String,
}

/// The node's own (not replicated) federation bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FedLocal {
    last_heartbeat_ms: Option<u64>,
    last_dispatch_ms: Option<u64>,
    /// Gate leader, per open job: which of its cluster's candidate nodes it is sent to
    /// (an index into [`Node::dispatch_candidates`]) and how many rounds went
    /// unanswered there. Only where to send; nothing decided from it is replicated.
    via: BTreeMap<u64, (usize, u32)>,
    pub counters: FedCounters,
}

/// Federation counters of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FedCounters {
    pub heartbeats_sent: u64,
    pub heartbeats_proposed: u64,
    pub dispatches_sent: u64,
    pub dispatches_handled: u64,
    pub answers_sent: u64,
    pub answers_proposed: u64,
    /// Dispatches moved to the next candidate node after unanswered rounds.
    pub dispatch_redirects: u64,
    pub reports_sent: u64,
    pub reports_proposed: u64,
    pub acks_sent: u64,
    pub acks_proposed: u64,
    pub verdicts_sent: u64,
    pub verdicts_proposed: u64,
    /// Federation messages from a node not configured for them, or not applicable.
    pub dropped: u64,
    pub rtt_samples: u64,
}

impl<R: Region> Node<R> {
    /// Whether this node belongs to a gate group.
    pub fn is_gate_node(&self) -> bool {
        matches!(self.cfg.federation, Some(FederationConfig::Gate { .. }))
    }

    pub fn federation_counters(&self) -> FedCounters {
        self.fed.counters
    }

    /// The other side's nodes: a gate's member-cluster nodes, a member's gates. The
    /// driver pings them like members; their answers go to [`Node::on_fed_rtt`].
    pub fn federation_peers(&self) -> Vec<NodeId> {
        match &self.cfg.federation {
            Some(FederationConfig::Gate { clusters, .. }) => clusters
                .iter()
                .flat_map(|(_, n)| n.iter().copied())
                .collect(),
            Some(FederationConfig::Member { gates, .. }) => gates.clone(),
            None => Vec::new(),
        }
    }

    /// An RTT sample to a federation peer (see [`Node::on_peer_rtt`]): moves this
    /// node's coordinate; never touches the membership.
    pub fn on_fed_rtt(&mut self, peer: NodeId, rtt_us: u64, coordinate: &[u8]) {
        if peer == self.me || !self.federation_peers().contains(&peer) {
            return;
        }
        if self
            .health
            .rtt_sample(peer, rtt_us, coordinate, self.now_ms)
            .is_ok()
        {
            self.fed.counters.rtt_samples += 1;
        }
    }

    /// The cluster a gate's configured node belongs to.
    fn cluster_of(&self, node: NodeId) -> Option<ClusterId> {
        match &self.cfg.federation {
            Some(FederationConfig::Gate { clusters, .. }) => clusters
                .iter()
                .find(|(_, n)| n.contains(&node))
                .map(|(c, _)| *c),
            _ => None,
        }
    }

    fn send_fed(&mut self, to: NodeId, m: &FedMsg) {
        if self.out.forwards.len() < super::MAX_OUTBOX {
            let f = PeerForward::Federation(m.clone());
            self.out.forwards.push((to, mgmt::encode(&f)));
        } else {
            self.counters.outbox_dropped += 1;
        }
    }

    /// The leader's report of its cluster (see the module doc for the rules).
    pub fn cluster_heartbeat(&self) -> Heartbeat {
        let d = self.state.data();
        let workers = || {
            d.nodes
                .values()
                .filter(|r| r.up && !r.quarantined && !r.info.observer)
        };
        let total: u32 = workers().map(|r| u32::from(r.available_cores)).sum();
        let busy: u32 = workers()
            .map(|r| r.assigned.min(u32::from(r.available_cores)))
            .sum();
        let queue = u32::try_from(d.pending.len()).unwrap_or(u32::MAX);
        let health = if workers().next().is_none() {
            Health::Unhealthy
        } else if queue > total {
            Health::Degraded
        } else if queue > 0 || busy >= total {
            Health::Busy
        } else {
            Health::Healthy
        };
        let c = *self.health.vivaldi.local_coordinate();
        Heartbeat {
            cluster: ClusterId(self.cfg.identity.cluster),
            manager: self.me,
            is_leader: true,
            health,
            available_cores: total - busy,
            total_cores: total,
            queue_depth: queue,
            load_multiplier_ppm: self.load_ppm(),
            circuit: Circuit::Closed,
            coordinate: (c.sample_count > 0).then_some(c),
        }
    }

    /// Timers: a member leader's heartbeats, a gate leader's dispatch rounds.
    pub(super) fn federation_timers(&mut self) {
        let now = self.now_ms;
        if !self.is_leader() {
            return;
        }
        match self.cfg.federation.clone() {
            Some(FederationConfig::Member {
                gates,
                heartbeat_every_ms,
                ..
            }) => {
                if self
                    .fed
                    .last_heartbeat_ms
                    .is_some_and(|at| now.saturating_sub(at) < heartbeat_every_ms)
                {
                    return;
                }
                self.fed.last_heartbeat_ms = Some(now);
                let m = FedMsg::Heartbeat(self.cluster_heartbeat());
                for g in gates {
                    self.fed.counters.heartbeats_sent += 1;
                    self.send_fed(g, &m);
                }
            }
            Some(FederationConfig::Gate {
                dispatch_every_ms, ..
            }) => {
                if self
                    .fed
                    .last_dispatch_ms
                    .is_some_and(|at| now.saturating_sub(at) < dispatch_every_ms)
                {
                    return;
                }
                self.fed.last_dispatch_ms = Some(now);
                self.dispatch_round();
            }
            None => {}
        }
    }

    /// The nodes of `cluster` (configured as `nodes`) a gate sends its jobs to, in the
    /// order it tries them (seed §13.8): the leader its latest heartbeat names, then the
    /// router's live managers by score ([`Router::rank_managers`]), then the cluster's
    /// other nodes — a follower forwards a dispatch to its leader and answers itself.
    ///
    /// [`Router::rank_managers`]: xdv_federation::route::Router::rank_managers
    pub fn dispatch_candidates(&self, cluster: ClusterId, nodes: &[NodeId]) -> Vec<NodeId> {
        let Some(g) = self.state.gate() else {
            return Vec::new();
        };
        let mut v: Vec<NodeId> = Vec::new();
        let leader = g.router.cluster(cluster).and_then(|c| c.leader);
        let local = *self.health.vivaldi.local_coordinate();
        let ranked = g
            .router
            .rank_managers(cluster, &local, self.state.data().clock_ms);
        for n in leader
            .into_iter()
            .chain(ranked)
            .chain(nodes.iter().copied())
        {
            if nodes.contains(&n) && !v.contains(&n) {
                v.push(n);
            }
        }
        v
    }

    /// The gate leader sends every open job's submission to a node of its cluster: the
    /// first of [`Node::dispatch_candidates`], the next one after
    /// [`UNANSWERED_ROUNDS`] rounds without an answer (and so on, round robin).
    fn dispatch_round(&mut self) {
        let Some(FederationConfig::Gate { clusters, .. }) = self.cfg.federation.clone() else {
            return;
        };
        let Some(g) = self.state.gate() else { return };
        let mut open = Vec::new();
        for (job, j) in g.open_jobs().take(MAX_DISPATCH_PER_ROUND) {
            let Some(cluster) = j.status.cluster() else {
                continue;
            };
            let Ok(submission) = mgmt::decode::<SignedRequest>(&j.submission) else {
                continue;
            };
            open.push((job, cluster, submission));
        }
        let verdicts = g.verdicts();
        let mut sends = Vec::new();
        for (job, cluster, submission) in open {
            let Some((_, nodes)) = clusters.iter().find(|(c, _)| *c == cluster) else {
                continue;
            };
            let cands = self.dispatch_candidates(cluster, nodes);
            if cands.is_empty() {
                continue;
            }
            let e = self.fed.via.entry(job).or_insert((0, 0));
            if e.1 >= UNANSWERED_ROUNDS {
                e.0 = (e.0 + 1) % cands.len();
                e.1 = 0;
                self.fed.counters.dispatch_redirects += 1;
            }
            e.1 += 1;
            sends.push((
                cands[e.0 % cands.len()],
                FedMsg::Dispatch {
                    job,
                    gate_cluster: self.cfg.identity.cluster,
                    submission,
                },
            ));
        }
        let sent: Vec<u64> = sends
            .iter()
            .filter_map(|(_, m)| match m {
                FedMsg::Dispatch { job, .. } => Some(*job),
                _ => None,
            })
            .collect();
        self.fed.via.retain(|job, _| sent.contains(job));
        let mut verdict_sends = Vec::new();
        for (job, cluster, task, reason, fence_token) in
            verdicts.into_iter().take(MAX_DISPATCH_PER_ROUND)
        {
            let Some((_, nodes)) = clusters.iter().find(|(c, _)| *c == cluster) else {
                continue;
            };
            let cands = self.dispatch_candidates(cluster, nodes);
            let at = self.fed.via.get(&job).map_or(0, |e| e.0);
            if let Some(&to) = cands.get(at % cands.len().max(1)) {
                verdict_sends.push((
                    to,
                    FedMsg::Verdict {
                        job,
                        task,
                        reason,
                        fence_token,
                    },
                ));
            }
        }
        for (to, m) in sends {
            self.fed.counters.dispatches_sent += 1;
            self.send_fed(to, &m);
        }
        for (to, m) in verdict_sends {
            self.fed.counters.verdicts_sent += 1;
            self.send_fed(to, &m);
        }
    }

    /// A federation message from authenticated peer `from`.
    pub(super) fn on_federation(&mut self, from: NodeId, m: FedMsg) {
        match (self.cfg.federation.clone(), m) {
            (Some(FederationConfig::Gate { .. }), FedMsg::Heartbeat(hb)) => {
                // Only a configured node of that cluster speaks for itself.
                if self.cluster_of(from) != Some(hb.cluster) || hb.manager != from {
                    self.fed.counters.dropped += 1;
                    return;
                }
                if self.is_leader() && self.propose(Command::ClusterHeartbeat(hb)).is_ok() {
                    self.fed.counters.heartbeats_proposed += 1;
                }
            }
            (
                Some(FederationConfig::Gate { .. }),
                FedMsg::Answer {
                    job,
                    cluster,
                    answer,
                },
            ) => {
                if self.cluster_of(from) != Some(cluster) {
                    self.fed.counters.dropped += 1;
                    return;
                }
                // The node the job is sent to answers: keep sending there.
                if let Some(e) = self.fed.via.get_mut(&job) {
                    e.1 = 0;
                }
                if !self.is_leader() {
                    return;
                }
                if let Some(c) = self.answer_command(job, cluster, answer)
                    && self.propose(c).is_ok()
                {
                    self.fed.counters.answers_proposed += 1;
                }
            }
            (
                Some(FederationConfig::Member {
                    gate_cluster,
                    gates,
                    ..
                }),
                FedMsg::Dispatch {
                    job,
                    gate_cluster: gc,
                    submission,
                },
            ) => {
                // From a gate, or from a member of this cluster forwarding it here.
                let from_member = from != self.me && self.knows(from);
                if gc != gate_cluster || !(gates.contains(&from) || from_member) {
                    self.fed.counters.dropped += 1;
                    return;
                }
                self.fed.counters.dispatches_handled += 1;
                if let Some(answer) = self.dispatched(job, gate_cluster, submission) {
                    let m = FedMsg::Answer {
                        job,
                        cluster: ClusterId(self.cfg.identity.cluster),
                        answer,
                    };
                    for g in gates {
                        self.fed.counters.answers_sent += 1;
                        self.send_fed(g, &m);
                    }
                }
            }
            (
                Some(FederationConfig::Gate { .. }),
                FedMsg::Report {
                    job,
                    cluster,
                    task,
                    report,
                },
            ) => {
                if self.cluster_of(from) != Some(cluster) {
                    self.fed.counters.dropped += 1;
                    return;
                }
                // Only the leader logs; the state refuses a stale fence token.
                if self.is_leader()
                    && self
                        .propose(Command::JobReport {
                            job,
                            cluster,
                            task,
                            manager: from,
                            report,
                        })
                        .is_ok()
                {
                    self.fed.counters.reports_proposed += 1;
                }
            }
            (
                Some(FederationConfig::Member { gates, .. }),
                FedMsg::ReportAck {
                    job,
                    task,
                    fence_token,
                },
            ) => {
                if !gates.contains(&from) {
                    self.fed.counters.dropped += 1;
                    return;
                }
                if self.is_leader()
                    && self.routed_task(task, job)
                    && self
                        .propose(Command::GateAck {
                            task,
                            job,
                            fence_token,
                        })
                        .is_ok()
                {
                    self.fed.counters.acks_proposed += 1;
                }
            }
            (
                Some(FederationConfig::Member { gates, .. }),
                FedMsg::Verdict {
                    job,
                    task,
                    reason,
                    fence_token,
                },
            ) => {
                let from_member = from != self.me && self.knows(from);
                if !(gates.contains(&from) || from_member) {
                    self.fed.counters.dropped += 1;
                    return;
                }
                // A follower the gate reached forwards the verdict to its leader.
                if !self.is_leader() {
                    if gates.contains(&from)
                        && let Some(l) = self.leader().filter(|&l| l != self.me)
                    {
                        let m = FedMsg::Verdict {
                            job,
                            task,
                            reason,
                            fence_token,
                        };
                        self.send_fed(l, &m);
                    }
                    return;
                }
                // A stale verdict is logged too: the state refuses and counts it.
                if self.is_leader()
                    && self.routed_task(task, job)
                    && self
                        .propose(Command::GateVerdict {
                            task,
                            job,
                            reason,
                            fence_token,
                        })
                        .is_ok()
                {
                    self.fed.counters.verdicts_proposed += 1;
                }
            }
            _ => self.fed.counters.dropped += 1,
        }
    }

    /// Whether `task` is the running routed task of gate job `job` (else a gate
    /// message about it is not worth a log entry).
    fn routed_task(&self, task: TaskId, job: u64) -> bool {
        self.state
            .data()
            .routed
            .get(&task)
            .is_some_and(|r| r.job == job)
            && self.state.data().timeouts.get(task).is_some()
    }

    /// A member cluster's part of gate-coordinated timeouts for an applied entry: the
    /// leader sends the tracker's reports to every gate node; fallbacks, verdicts and
    /// refusals become notes.
    fn member_timeout_events(&mut self, events: &[xdv_cluster::Event]) {
        let Some(FederationConfig::Member { gates, .. }) = self.cfg.federation.clone() else {
            return;
        };
        for ev in events {
            match ev {
                xdv_cluster::Event::GateReport {
                    task, job, report, ..
                } => {
                    if !self.is_leader() {
                        continue;
                    }
                    let m = FedMsg::Report {
                        job: *job,
                        cluster: ClusterId(self.cfg.identity.cluster),
                        task: *task,
                        report: report.clone(),
                    };
                    for &g in &gates {
                        self.fed.counters.reports_sent += 1;
                        self.send_fed(g, &m);
                    }
                }
                xdv_cluster::Event::GateFellBack {
                    task,
                    job,
                    silent_ms,
                } => self.note(alloc::format!(
                    "timeouts: gate silent {silent_ms} ms, {task} (job {job}) falls back to local authority"
                )),
                xdv_cluster::Event::GateTimedOut {
                    task,
                    job,
                    reason,
                    fence_token,
                } => self.note(alloc::format!(
                    "timeouts: gate verdict {reason:?} for {task} (job {job}), fence {fence_token}"
                )),
                xdv_cluster::Event::GateMessageRefused { task, reason } => {
                    self.note(alloc::format!("timeouts: gate message for {task} refused: {reason}"))
                }
                _ => {}
            }
        }
    }

    /// A member cluster's node handles a dispatch: the answer from the applied state,
    /// or `None` while the submission is on its way into the log.
    fn dispatched(
        &mut self,
        job: u64,
        gate_cluster: u32,
        req: SignedRequest,
    ) -> Option<DispatchAnswer> {
        match self.gate.authorize_routed(&self.state, &req, gate_cluster) {
            Ok(Some(Command::AssignTask(spec))) => {
                let command = Command::AssignRoutedTask {
                    spec,
                    gate_cluster,
                    job,
                };
                if self.is_leader() {
                    let _ = self.propose(command);
                } else if let Some(l) = self.leader().filter(|&l| l != self.me) {
                    let m = FedMsg::Dispatch {
                        job,
                        gate_cluster,
                        submission: req,
                    };
                    self.send_fed(l, &m);
                }
                None
            }
            Ok(_) => Some(DispatchAnswer::Refused {
                reason: "not a submission".into(),
            }),
            Err(Denied::Duplicate { task }) => Some(task_answer(&self.state, task)),
            Err(d) => Some(DispatchAnswer::Refused {
                reason: alloc::format!("{d}"),
            }),
        }
    }

    /// The command a gate leader proposes for a cluster's answer, if the job's
    /// replicated status still waits for it.
    fn answer_command(
        &self,
        job: u64,
        cluster: ClusterId,
        answer: DispatchAnswer,
    ) -> Option<Command> {
        let status = &self.state.gate()?.jobs.get(&job)?.status;
        let dispatching = *status == JobStatus::Dispatching { cluster };
        let open_here = !status.is_final() && status.cluster() == Some(cluster);
        match answer {
            DispatchAnswer::Accepted { task } if dispatching => Some(Command::DispatchOutcome {
                job,
                cluster,
                result: DispatchResult::Accepted { task },
            }),
            DispatchAnswer::Refused { reason } if dispatching => Some(Command::DispatchOutcome {
                job,
                cluster,
                result: DispatchResult::Refused { reason },
            }),
            DispatchAnswer::Finished { task, outcome } if open_here => Some(Command::JobFinished {
                job,
                cluster,
                task,
                outcome,
            }),
            _ => None,
        }
    }

    /// A gate's `RouteJob` for a tenant's signed submission, after the usual checks
    /// against the gate group's state (tenant key, signature, cluster id).
    pub(super) fn route_command(&mut self, req: &SignedRequest) -> Result<Command, Denied> {
        let Principal::Tenant(tenant) = req.principal else {
            return Err(Denied::OperatorCannotSubmit);
        };
        self.gate.authorize(&self.state, req)?;
        let c = *self.health.vivaldi.local_coordinate();
        Ok(Command::RouteJob {
            tenant,
            seq: req.seq,
            submission: mgmt::encode(req),
            local: Some(c),
        })
    }

    /// A gate's answer to a routed submission, once `RouteJob` applied.
    pub(super) fn routed_answer(&self, tenant: TenantId, seq: u64) -> Option<Response> {
        let g = self.state.gate()?;
        let job = g.job_for(tenant, seq)?;
        let j = g.jobs.get(&job)?;
        let cluster = j.decision().and_then(|d| d.primary).or(j.status.cluster());
        Some(Response::Routed { job, cluster })
    }

    /// `Submit` to a gate node: answered at once for a known submission, else the
    /// `RouteJob` goes to the log and the answer is parked.
    pub(super) fn gate_submit(
        &mut self,
        conn: super::ClientConn,
        req: SignedRequest,
    ) -> Option<Response> {
        let principal = req.principal;
        if let Principal::Tenant(t) = principal
            && let Some(r) = self.routed_answer(t, req.seq)
        {
            return Some(r);
        }
        let command = match self.route_command(&req) {
            Ok(c) => c,
            Err(d) => return Some(self.refuse(Some(principal), d)),
        };
        if self.parked.len() >= super::MAX_PARKED {
            let d = Denied::NotReady("too many requests waiting".into());
            return Some(self.refuse(Some(principal), d));
        }
        let Principal::Tenant(tenant) = principal else {
            return None;
        };
        let seq = req.seq;
        if let Err(d) = self.propose_or_forward(command, |_| PeerForward::Client(req)) {
            return Some(self.refuse(Some(principal), d));
        }
        self.push_parked(conn, Wait::Routed { tenant, seq });
        None
    }

    /// `RouteExplain`: the decision's text (authorized before).
    pub(super) fn route_explain(&self, job: u64) -> Response {
        let g = self.state.gate();
        let text = g.and_then(|g| g.jobs.get(&job)).map(|j| {
            let mut t = j
                .decision()
                .map_or_else(|| String::from("(no decision)"), |d| d.explain());
            for (c, why) in &j.refused {
                t.push_str(&alloc::format!("\nrefused by {c}: {why}"));
            }
            t.push_str(&alloc::format!("\nstatus: {}", j.status));
            // Gate-coordinated timeouts while the job runs.
            if let Some(gj) = g.and_then(|g| g.timeouts.get(TaskId(job))) {
                for (c, cp) in &gj.clusters {
                    t.push_str(&alloc::format!(
                        "\ntimeouts: {c} fence {}, last progress at {} ms, reported timeout {}",
                        cp.fence_token,
                        cp.last_progress_ms,
                        if cp.timed_out { "yes" } else { "no" }
                    ));
                }
                if let Some(r) = gj.timeout_reason.filter(|_| gj.globally_timed_out) {
                    t.push_str(&alloc::format!("\ntimeouts: declared timed out ({r:?})"));
                }
            }
            (t, j.status.clone())
        });
        match text {
            Some((text, status)) => Response::RouteExplained { job, text, status },
            None => Response::Refused(Denied::UnknownTask(TaskId(job))),
        }
    }

    /// Gate events of an applied entry: audit records (every gate replica) and a
    /// dispatch right away after a new decision (the leader).
    pub(super) fn gate_events(&mut self, index: u64, events: &[xdv_cluster::Event], audit: bool) {
        self.member_timeout_events(events);
        for ev in events {
            let xdv_cluster::Event::Gate(g) = ev else {
                continue;
            };
            let body = match g {
                GateEvent::Routed {
                    job,
                    cluster,
                    decision,
                    tenant,
                    seq,
                } => {
                    // Dispatch at the next timer, not a round later.
                    self.fed.last_dispatch_ms = None;
                    RouteRecordBody {
                        index,
                        job: *job,
                        event: "routed".into(),
                        cluster: *cluster,
                        decision: decision.clone(),
                        detail: alloc::format!("{tenant} seq {seq}"),
                    }
                }
                GateEvent::Accepted { job, cluster, task } => RouteRecordBody {
                    index,
                    job: *job,
                    event: "accepted".into(),
                    cluster: Some(*cluster),
                    decision: Vec::new(),
                    detail: alloc::format!("{task}"),
                },
                GateEvent::Refused {
                    job,
                    cluster,
                    reason,
                    next,
                } => {
                    self.fed.last_dispatch_ms = None;
                    RouteRecordBody {
                        index,
                        job: *job,
                        event: "refused".into(),
                        cluster: Some(*cluster),
                        decision: Vec::new(),
                        detail: alloc::format!(
                            "{reason}; next: {}",
                            next.map_or_else(|| String::from("none"), |c| alloc::format!("{c}"))
                        ),
                    }
                }
                GateEvent::Finished {
                    job,
                    cluster,
                    task,
                    outcome,
                } => RouteRecordBody {
                    index,
                    job: *job,
                    event: "finished".into(),
                    cluster: Some(*cluster),
                    decision: Vec::new(),
                    detail: alloc::format!("{task}: {outcome:?}"),
                },
                GateEvent::ReportLogged {
                    job,
                    cluster,
                    task,
                    manager,
                    kind,
                    fence_token,
                } => {
                    if self.is_leader() {
                        let m = FedMsg::ReportAck {
                            job: *job,
                            task: *task,
                            fence_token: *fence_token,
                        };
                        self.fed.counters.acks_sent += 1;
                        self.send_fed(*manager, &m);
                    }
                    RouteRecordBody {
                        index,
                        job: *job,
                        event: alloc::format!("report-{kind}"),
                        cluster: Some(*cluster),
                        decision: Vec::new(),
                        detail: alloc::format!("{task} from {manager}, fence {fence_token}"),
                    }
                }
                GateEvent::ReportRefused {
                    job,
                    cluster,
                    fence_token,
                    reason,
                } => RouteRecordBody {
                    index,
                    job: *job,
                    event: "report-refused".into(),
                    cluster: Some(*cluster),
                    decision: Vec::new(),
                    detail: alloc::format!("fence {fence_token}: {reason}"),
                },
                GateEvent::GlobalTimeout {
                    job,
                    cluster,
                    task,
                    reason,
                    fence_token,
                } => {
                    // The verdict goes out at the next timer, not a round later.
                    self.fed.last_dispatch_ms = None;
                    RouteRecordBody {
                        index,
                        job: *job,
                        event: "global-timeout".into(),
                        cluster: Some(*cluster),
                        decision: Vec::new(),
                        detail: alloc::format!("{task}: {reason:?}, fence {fence_token}"),
                    }
                }
                _ => continue,
            };
            if audit {
                self.out.audit.push(RecordBody::Custom {
                    tag: AUDIT_TAG_ROUTE,
                    bytes: mgmt::encode(&body),
                });
            }
        }
    }
}

/// A member cluster's answer for the task a dispatched submission became.
fn task_answer(state: &ClusterState, task: TaskId) -> DispatchAnswer {
    match state.task(task).map(|t| &t.status) {
        Some(TaskStatus::Completed { outcome, .. }) => DispatchAnswer::Finished {
            task,
            outcome: outcome.clone(),
        },
        Some(TaskStatus::Rejected(r)) => DispatchAnswer::Refused {
            reason: alloc::format!("{r:?}"),
        },
        _ => DispatchAnswer::Accepted { task },
    }
}
