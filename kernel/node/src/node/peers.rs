//! The node's view of its peers' health (AD-35, seed 003 §12): a Vivaldi coordinate
//! fed by the transport's ping/ack RTT samples, and role-aware confirmation with
//! adaptive suspicion, which is what the leader's `NodeDown` / `NodeUp` decisions use.
//!
//! Inputs, all with the node's time (`Node::tick`'s ms): an authenticated frame from a
//! peer ([`super::Node::on_peer_heard`]: bidirectional contact, since the peer
//! authenticated this node's nonce), an RTT sample with the peer's coordinate
//! ([`super::Node::on_peer_rtt`]) and the detector's periodic look. Nothing is read from
//! a clock here, so the simulator reproduces every transition from its seed.
//!
//! Lifecycle of a member (`xdv_federation::confirm::Membership`):
//! - UNCONFIRMED until first heard → ALIVE. Never heard within its role's timeout
//!   (`Removed`, never SUSPECT or DEAD: AD-29) → the leader takes it out of placement
//!   (`NodeDown`); it is rediscovered when heard.
//! - ALIVE, silent for `Timing::suspect_after_ms` → SUSPECT with the adaptive timeout
//!   `base × latency × load × confidence`; heard again → ALIVE (refuted); deadline
//!   passed → DEAD → the leader proposes `NodeDown`. Heard after DEAD → forgotten,
//!   rediscovered, ALIVE → `NodeUp`.
//!
//! Roles inside a cluster: a member that votes can become the cluster's manager (its
//! Raft leader), so members are `Manager`s (proactive, latency-aware); observers are
//! `Worker`s (passive, never probed). A role is fixed when the peer is discovered.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use xdv_cluster::mgmt::{PeerHealth as PeerLine, PeerHealthView};
use xdv_federation::PPM;
use xdv_federation::confirm::{Action, ConfirmConfig, Membership, PeerState, Role};
use xdv_federation::vivaldi::{Coordinate, VivaldiConfig, VivaldiSystem};
use xdv_types::NodeId;

/// What the leader should do about a member.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// DEAD, or never confirmed within its role's timeout.
    Down,
    /// ALIVE.
    Up,
    /// UNCONFIRMED or SUSPECT: not decided yet.
    Undecided,
}

/// Transition counters (§12.8) beyond the crate's own metrics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCounters {
    pub rtt_samples: u64,
    /// RTT samples refused: undecodable coordinate, RTT out of range.
    pub rtt_refused: u64,
    pub confirmed: u64,
    pub removed: u64,
    pub suspected: u64,
    pub refuted: u64,
    pub dead: u64,
    pub probes: u64,
}

/// The node's peer-health state (not replicated: every node keeps its own).
pub(super) struct PeerHealth {
    pub(super) vivaldi: VivaldiSystem,
    pub(super) membership: Membership,
    /// Unconfirmed members removed for silence: not rediscovered until heard.
    removed: BTreeSet<NodeId>,
    /// Last RTT sample per peer, µs.
    last_rtt_us: alloc::collections::BTreeMap<NodeId, u64>,
    pub(super) counters: HealthCounters,
}

impl PeerHealth {
    /// The health tracker, or why its Vivaldi configuration is refused (the node then
    /// halts and says so instead of running with other parameters than configured).
    pub(super) fn new(
        me: NodeId,
        viv: VivaldiConfig,
        confirm: ConfirmConfig,
    ) -> Result<PeerHealth, String> {
        let vivaldi = VivaldiSystem::new(me, viv)
            .map_err(|e| alloc::format!("Vivaldi configuration refused: {e:?}"))?;
        Ok(PeerHealth {
            vivaldi,
            membership: Membership::new(confirm),
            removed: BTreeSet::new(),
            last_rtt_us: alloc::collections::BTreeMap::new(),
            counters: HealthCounters::default(),
        })
    }

    /// The local coordinate's wire form, for the transport's pings and acks.
    pub(super) fn coordinate_bytes(&self) -> Vec<u8> {
        self.vivaldi.local_coordinate().encode().to_vec()
    }

    /// Contact with `peer` (an authenticated frame): ALIVE, whatever it was.
    pub(super) fn heard(&mut self, peer: NodeId, role: Role, now_ms: u64) -> Option<Action> {
        let m = &mut self.membership;
        let rediscover =
            self.removed.remove(&peer) || m.peer(peer).is_none_or(|p| p.state == PeerState::Dead);
        if rediscover {
            m.forget(peer);
            if m.on_discovered(peer, role, now_ms).is_err() {
                return None;
            }
        }
        let a = m.on_ack(peer, now_ms).ok().flatten();
        match a {
            Some(Action::Confirmed { .. }) => self.counters.confirmed += 1,
            Some(Action::Refuted { .. }) => self.counters.refuted += 1,
            _ => {}
        }
        a
    }

    /// An RTT sample: our ping to `peer` was answered after `rtt_us` with the peer's
    /// coordinate. `Err` says why the sample was refused.
    pub(super) fn rtt_sample(
        &mut self,
        peer: NodeId,
        rtt_us: u64,
        coordinate: &[u8],
        now_ms: u64,
    ) -> Result<u64, String> {
        let cfg = *self.vivaldi.config();
        let r = Coordinate::decode(coordinate, &cfg)
            .and_then(|c| self.vivaldi.update(peer, c, rtt_us, now_ms));
        match r {
            Ok(err) => {
                self.counters.rtt_samples += 1;
                self.last_rtt_us.insert(peer, rtt_us);
                Ok(err)
            }
            Err(e) => {
                self.counters.rtt_refused += 1;
                Err(alloc::format!("{e:?}"))
            }
        }
    }

    /// The detector's look at `now_ms` over the cluster's members (id, role, silence):
    /// new members are discovered, gone ones forgotten, ALIVE members silent for
    /// `suspect_after_ms` suspected, deadlines and role timeouts applied.
    pub(super) fn detect(
        &mut self,
        now_ms: u64,
        members: &[(NodeId, Role, Option<u64>)],
        suspect_after_ms: u64,
        load_ppm: u64,
    ) -> Vec<Action> {
        let m = &mut self.membership;
        let known: Vec<NodeId> = [
            PeerState::Unconfirmed,
            PeerState::Alive,
            PeerState::Suspect,
            PeerState::Dead,
        ]
        .iter()
        .flat_map(|s| m.in_state(*s))
        .collect();
        for id in known {
            if !members.iter().any(|x| x.0 == id) {
                m.forget(id);
                self.vivaldi.forget(id);
                self.last_rtt_us.remove(&id);
            }
        }
        self.removed.retain(|id| members.iter().any(|x| x.0 == *id));
        let mut out = Vec::new();
        for &(id, role, silent) in members {
            if self.removed.contains(&id) {
                continue;
            }
            if m.peer(id).is_none() {
                let _ = m.on_discovered(id, role, now_ms);
            }
            let alive = m.peer(id).is_some_and(|p| p.state == PeerState::Alive);
            if alive
                && silent.is_some_and(|s| s >= suspect_after_ms)
                && let Ok(Some(a)) = m.on_probe_failed(id, now_ms, &self.vivaldi, load_ppm)
            {
                out.push(a);
            }
        }
        out.extend(m.on_tick(now_ms, &self.vivaldi, load_ppm));
        for a in &out {
            match a {
                Action::Removed { peer, .. } => {
                    self.removed.insert(*peer);
                    self.counters.removed += 1;
                }
                Action::Suspected { .. } => self.counters.suspected += 1,
                Action::Dead { .. } => self.counters.dead += 1,
                Action::Probe { .. } => self.counters.probes += 1,
                _ => {}
            }
        }
        out
    }

    pub(super) fn verdict(&self, peer: NodeId) -> Verdict {
        if self.removed.contains(&peer) {
            return Verdict::Down;
        }
        match self.membership.peer(peer).map(|p| p.state) {
            Some(PeerState::Dead) => Verdict::Down,
            Some(PeerState::Alive) => Verdict::Up,
            _ => Verdict::Undecided,
        }
    }

    /// The §12.8 view: coordinate, counters and one line per member.
    pub(super) fn view(
        &self,
        now_ms: u64,
        members: &[(NodeId, Role, Option<u64>)],
        load_ppm: u64,
    ) -> PeerHealthView {
        let c = self.vivaldi.local_coordinate();
        let counts = self.membership.counts();
        let mm = &self.vivaldi.metrics;
        let peers = members
            .iter()
            .map(|&(id, role, silent)| {
                let p = self.membership.peer(id);
                let state = match (self.removed.contains(&id), p.map(|p| p.state)) {
                    (true, _) => "removed",
                    (_, Some(PeerState::Unconfirmed)) | (_, None) => "unconfirmed",
                    (_, Some(PeerState::Alive)) => "alive",
                    (_, Some(PeerState::Suspect)) => "suspect",
                    (_, Some(PeerState::Dead)) => "dead",
                };
                let role = p.map_or(role, |p| p.role);
                let base = self.membership.config().suspicion_base_ms;
                let t =
                    self.membership
                        .adaptive_timeout_for(id, role, base, &self.vivaldi, load_ppm);
                PeerLine {
                    node: id,
                    role: String::from(role_word(role)),
                    state: String::from(state),
                    rtt_last_us: self.last_rtt_us.get(&id).copied().unwrap_or(0),
                    rtt_estimate_us: self.vivaldi.estimate_rtt_us(id),
                    rtt_ucb_us: self.vivaldi.estimate_rtt_ucb_us(id),
                    quality_ppm: self.vivaldi.peer_quality(id, now_ms),
                    silent_ms: silent,
                    suspicion_timeout_ms: t.timeout_ms,
                }
            })
            .collect();
        PeerHealthView {
            position_us: c.position_us,
            height_us: c.height_us,
            error_ppm: c.error_ppm,
            samples: c.sample_count,
            converged: self.vivaldi.is_converged(),
            coordinate_updates: mm.coordinate_updates,
            // Refused by the decoder or by the coordinate system (both counted here).
            samples_rejected: self.counters.rtt_refused,
            last_prediction_error_ppm: mm.last_prediction_error_ppm,
            counts: (
                counts.unconfirmed as u32,
                counts.alive as u32,
                counts.suspect as u32,
                counts.dead as u32,
            ),
            confirmed: self.counters.confirmed,
            removed_unconfirmed: self.counters.removed,
            suspected: self.counters.suspected,
            refuted: self.counters.refuted,
            dead: self.counters.dead,
            load_ppm,
            peers,
        }
    }
}

pub fn role_word(r: Role) -> &'static str {
    match r {
        Role::Gate => "gate",
        Role::Manager => "manager",
        Role::Worker => "worker",
    }
}

/// The node's load multiplier: 1 + running tasks per granted core (a busy node waits
/// longer before it accuses a peer; the crate caps it per role).
pub(super) fn load_multiplier_ppm(running: usize, cores: u16) -> u64 {
    PPM + (running as u64).saturating_mul(PPM) / u64::from(cores.max(1))
}
