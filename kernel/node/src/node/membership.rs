//! Membership while the cluster runs (seed 002 §Membership, seed 001 roles).
//!
//! The operator's `AddWorker` / `RemoveWorker` requests become `AddMember` /
//! `RemoveMember` log entries: the replicated state says who the members are. The
//! leader then brings Raft's configuration to that set, one single-server change at a
//! time, from its timers:
//! - a member the configuration lacks is added as a learner; it catches up from the
//!   log or a snapshot;
//! - a learner that is not an observer is promoted to voter once it is replicating
//!   within one append message of the commit index (Raft refuses earlier:
//!   `LearnerNotCaughtUp`, retried; demanding every committed entry could wait
//!   forever while clients keep committing);
//! - a configured node that is no longer a member is removed; if it is the leader
//!   itself, leadership is handed to an up voter first and the new leader removes it.
//!
//! So a change survives leader failover (the new leader picks up where the state and
//! the configuration differ) and every step is in the log. While they differ, another
//! change is refused (`ChangeInProgress`), as is a removal that would leave fewer
//! voters up than the new quorum.

use super::{Node, Wait};
use crate::durable::Region;
use alloc::vec::Vec;
use xdv_cluster::Command;
use xdv_cluster::mgmt::{Denied, MembershipDenied};
use xdv_raft::{ConfChange, ConfState, Role};
use xdv_types::NodeId;

impl<R: Region> Node<R> {
    /// This node's Raft configuration (empty without Raft).
    fn conf(&self) -> ConfState {
        self.raft
            .as_ref()
            .map(|r| r.status().conf)
            .unwrap_or_default()
    }

    /// The member whose change is not finished: in the state but not configured, a
    /// worker still a learner, or configured but no longer a member.
    pub fn membership_pending(&self) -> Option<NodeId> {
        let conf = self.conf();
        let nodes = &self.state.data().nodes;
        nodes
            .iter()
            .find(|(n, r)| !conf.contains(**n) || (!r.info.observer && conf.is_learner(**n)))
            .map(|(n, _)| *n)
            .or_else(|| {
                conf.voters
                    .iter()
                    .chain(conf.learners.iter())
                    .find(|n| !nodes.contains_key(n))
                    .copied()
            })
    }

    /// The node fills in what an admitted member offers (the operator names only the
    /// node, its key and its role): the cores and capabilities every member has, none
    /// for an observer.
    pub(super) fn complete_member(&self, command: Command) -> Command {
        match command {
            Command::AddMember { mut info, seq } => {
                if !info.observer {
                    info.resources.k_cores = self.cfg.genesis_cores;
                    info.capabilities = self.cfg.capabilities.clone();
                }
                Command::AddMember { info, seq }
            }
            other => other,
        }
    }

    /// Refuses a membership change that cannot be made now.
    pub(super) fn check_membership(&self, command: &Command) -> Result<(), Denied> {
        let refuse = |d| Err(Denied::Membership(d));
        if !matches!(
            command,
            Command::AddMember { .. } | Command::RemoveMember { .. }
        ) {
            return Ok(());
        }
        if let Some(busy) = self.membership_pending() {
            // A join that never finished (its node never booted, or never caught up)
            // can be backed out: removing that very node, while it is still no voter,
            // is the one change allowed meanwhile.
            let backs_out = matches!(command, Command::RemoveMember { node, .. }
                if *node == busy
                    && self.state.data().nodes.contains_key(node)
                    && !self.conf().is_voter(*node));
            if !backs_out {
                return refuse(MembershipDenied::ChangeInProgress { node: busy });
            }
        }
        if let Command::RemoveMember { node, .. } = command {
            let conf = self.conf();
            if conf.is_voter(*node) {
                let rest: Vec<NodeId> = conf.voters.iter().copied().filter(|v| v != node).collect();
                if rest.is_empty() {
                    return refuse(MembershipDenied::LastVoter(*node));
                }
                let nodes = &self.state.data().nodes;
                let up = rest
                    .iter()
                    .filter(|v| nodes.get(v).is_some_and(|r| r.up))
                    .count() as u32;
                let quorum = (rest.len() / 2 + 1) as u32;
                if up < quorum {
                    return refuse(MembershipDenied::QuorumWouldBeLost {
                        node: *node,
                        up,
                        quorum,
                    });
                }
            }
        }
        Ok(())
    }

    /// What a client waits for after a membership request.
    pub(super) fn member_wait(command: &Command) -> Option<Wait> {
        match command {
            Command::AddMember { info, .. } => Some(Wait::Member {
                node: info.node,
                member: true,
            }),
            Command::RemoveMember { node, .. } => Some(Wait::Member {
                node: *node,
                member: false,
            }),
            _ => None,
        }
    }

    /// The leader's step towards the configuration the state asks for (module doc).
    pub(super) fn reconcile_membership(&mut self) {
        let Some(r) = self.raft.as_ref() else { return };
        if r.role() != Role::Leader {
            return;
        }
        let conf = r.status().conf;
        let nodes = &self.state.data().nodes;
        let change = if let Some(n) = nodes.keys().find(|n| !conf.contains(**n)) {
            Some(ConfChange::AddLearner(*n))
        } else if let Some(n) = conf
            .learners
            .iter()
            .find(|n| nodes.get(n).is_some_and(|r| !r.info.observer))
        {
            Some(ConfChange::PromoteLearner(*n))
        } else if let Some(n) = conf
            .voters
            .iter()
            .chain(conf.learners.iter())
            .find(|n| !nodes.contains_key(n))
        {
            if *n == self.me {
                // Hand leadership on first: the next leader removes this node.
                let to = conf
                    .voters
                    .iter()
                    .find(|v| **v != self.me && nodes.get(v).is_some_and(|r| r.up))
                    .copied();
                if let Some(to) = to
                    && let Some(r) = self.raft.as_mut()
                    && r.transfer_leader(to).is_ok()
                {
                    self.note(alloc::format!(
                        "membership: {} leaves; leadership handed to {to}",
                        self.me
                    ));
                }
                return;
            }
            Some(ConfChange::Remove(*n))
        } else {
            None
        };
        let Some(cc) = change else { return };
        let Some(r) = self.raft.as_mut() else { return };
        // Refusals (a change still uncommitted, a learner not caught up, the term's
        // first entry not yet committed) are retried on the next pass.
        if let Ok(index) = r.propose_conf_change(cc.clone()) {
            self.note(alloc::format!(
                "membership: {cc:?} proposed at index {index}"
            ));
        }
    }

    /// The members and their keys when they changed since the driver last heard:
    /// the transport keeps connections to exactly these.
    pub(super) fn publish_members(&mut self) {
        let now: Vec<(NodeId, [u8; 32])> = self
            .state
            .data()
            .nodes
            .iter()
            .map(|(n, r)| (*n, r.info.public_key))
            .collect();
        if now != self.members_sent {
            self.members_sent = now.clone();
            self.out.members = Some(now);
        }
    }

    /// Whether `node` is a member now (the log's word) or by provisioning.
    pub(super) fn knows(&self, node: NodeId) -> bool {
        self.state.data().nodes.contains_key(&node) || self.cfg.identity.is_member(node)
    }

    /// A view of `node`'s place in Raft's configuration.
    pub(super) fn raft_place(conf: &ConfState, node: NodeId) -> &'static str {
        if conf.is_voter(node) {
            "voter"
        } else if conf.is_learner(node) {
            "learner"
        } else {
            "joining"
        }
    }
}
