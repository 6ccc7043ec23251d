//! Role-aware peer confirmation and adaptive suspicion (AD-35 §12.2–§12.5, §12.8, §12.9).
//!
//! [`Membership`] owns the lifecycle of every peer this node knows:
//!
//! ```text
//!  discovered ──▶ UNCONFIRMED ──first ack──▶ ALIVE ──probe failed──▶ SUSPECT ──deadline──▶ DEAD
//!                     │                        ▲                        │
//!                     └─role-aware timeout─▶ removed         ack (refuted)
//! ```
//!
//! Invariants:
//! - A peer that never answered is never SUSPECT or DEAD (AD-29): a failed probe of an
//!   UNCONFIRMED peer is refused and counted, and its only way out is removal, which is
//!   not a death (no DEAD record is gossiped about a node that may never have existed).
//! - Workers are never probed (protects them from load): an unconfirmed worker waits
//!   passively and is removed after its passive timeout.
//! - Every timeout that depends on the network is `base × latency × load × confidence`
//!   ([`adaptive_timeout`]), from logged inputs only: the Vivaldi state (itself built
//!   from logged RTT samples) and the node's load multiplier, passed in by the caller.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::vivaldi::VivaldiSystem;
use crate::{NodeId, PPM};

/// Most peers one node tracks.
pub const MAX_MEMBERS: usize = 4_096;

/// What a peer is (§12.4.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Gate,
    Manager,
    Worker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Gate, Role::Manager, Role::Worker];

    /// The role from a gossip entry's explicit role tag (§12.4.2). XDV gossip always
    /// carries the tag; a missing or unknown tag means a worker, the one role that is
    /// never probed, so a misclassified peer is never put under load.
    pub fn from_gossip(tag: Option<u8>) -> Role {
        match tag {
            Some(0) => Role::Gate,
            Some(1) => Role::Manager,
            _ => Role::Worker,
        }
    }

    /// The role's tag in gossip.
    pub fn tag(self) -> u8 {
        match self {
            Role::Gate => 0,
            Role::Manager => 1,
            Role::Worker => 2,
        }
    }

    fn index(self) -> usize {
        usize::from(self.tag())
    }
}

/// How a role's unconfirmed peers are confirmed (§12.4.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RoleStrategy {
    pub passive_timeout_ms: u64,
    pub proactive: bool,
    pub attempts: u32,
    pub attempt_interval_ms: u64,
    pub latency_aware: bool,
    pub use_vivaldi: bool,
    pub load_multiplier_max_ppm: u64,
}

/// §12.4.4. The attempt interval is not in the seed; 5 s gives a gate 5 probes in 25 s.
pub const GATE_STRATEGY: RoleStrategy = RoleStrategy {
    passive_timeout_ms: 120_000,
    proactive: true,
    attempts: 5,
    attempt_interval_ms: 5_000,
    latency_aware: true,
    use_vivaldi: true,
    load_multiplier_max_ppm: 3 * PPM,
};

/// §12.4.4.
pub const MANAGER_STRATEGY: RoleStrategy = RoleStrategy {
    passive_timeout_ms: 90_000,
    proactive: true,
    attempts: 3,
    attempt_interval_ms: 5_000,
    latency_aware: true,
    use_vivaldi: true,
    load_multiplier_max_ppm: 5 * PPM,
};

/// §12.4.4: passive only, never probed, no coordinates.
pub const WORKER_STRATEGY: RoleStrategy = RoleStrategy {
    passive_timeout_ms: 180_000,
    proactive: false,
    attempts: 0,
    attempt_interval_ms: 0,
    latency_aware: false,
    use_vivaldi: false,
    load_multiplier_max_ppm: 10 * PPM,
};

/// Tuning of confirmation and suspicion (§12.9.2, §12.9.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConfirmConfig {
    pub gate: RoleStrategy,
    pub manager: RoleStrategy,
    pub worker: RoleStrategy,
    /// Base SUSPECT → DEAD timeout before the adaptive multipliers.
    pub suspicion_base_ms: u64,
    /// RTT at which the latency multiplier is 1 (`REFERENCE_RTT_MS`, 10 ms).
    pub reference_rtt_us: u64,
    /// Cap of the latency multiplier (`MAX_LATENCY_MULTIPLIER`, 10).
    pub max_latency_multiplier_ppm: u64,
}

impl ConfirmConfig {
    pub const DEFAULT: ConfirmConfig = ConfirmConfig {
        gate: GATE_STRATEGY,
        manager: MANAGER_STRATEGY,
        worker: WORKER_STRATEGY,
        suspicion_base_ms: 5_000,
        reference_rtt_us: 10_000,
        max_latency_multiplier_ppm: 10 * PPM,
    };

    /// Every duration (passive timeouts, probe intervals, the suspicion base) times
    /// `per_mille` / 1000, floor 1 ms: the one factor a cluster (or a test) uses to run
    /// the seed's datacenter-scale timing faster with the same order of events.
    pub fn scaled(&self, per_mille: u64) -> ConfirmConfig {
        let f = |ms: u64| {
            if ms == 0 {
                0
            } else {
                (u128::from(ms) * u128::from(per_mille) / 1000).clamp(1, u128::from(u64::MAX))
                    as u64
            }
        };
        let role = |r: RoleStrategy| RoleStrategy {
            passive_timeout_ms: f(r.passive_timeout_ms),
            attempt_interval_ms: f(r.attempt_interval_ms),
            ..r
        };
        ConfirmConfig {
            gate: role(self.gate),
            manager: role(self.manager),
            worker: role(self.worker),
            suspicion_base_ms: f(self.suspicion_base_ms),
            ..*self
        }
    }

    /// The strategy for `role` (§12.4.5).
    pub fn strategy(&self, role: Role) -> &RoleStrategy {
        match role {
            Role::Gate => &self.gate,
            Role::Manager => &self.manager,
            Role::Worker => &self.worker,
        }
    }
}

impl Default for ConfirmConfig {
    fn default() -> Self {
        ConfirmConfig::DEFAULT
    }
}

/// An adaptive timeout and its factors, all in ppm (kept for the §12.8.4 metrics).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveTimeout {
    pub timeout_ms: u64,
    pub latency_ppm: u64,
    pub load_ppm: u64,
    pub confidence_ppm: u64,
}

/// `base × latency × load × confidence` (§12.5.8):
/// - latency = RTT estimate / reference RTT, within `[1, max_latency_multiplier]`
///   (1 without Vivaldi, or when the peer's RTT is unknown);
/// - load = the node's load multiplier within `[1, role's load_multiplier_max]`;
/// - confidence = 1 + min(local error, 1) / 2, within `[1, 1.5]`: a poorly converged
///   coordinate waits longer rather than accuse early (1 without Vivaldi).
pub fn adaptive_timeout(
    cfg: &ConfirmConfig,
    strategy: &RoleStrategy,
    base_ms: u64,
    rtt_us: Option<u64>,
    local_error_ppm: u64,
    load_multiplier_ppm: u64,
) -> AdaptiveTimeout {
    let (latency_ppm, confidence_ppm) = match rtt_us {
        Some(rtt) if strategy.use_vivaldi && strategy.latency_aware => (
            crate::ratio_ppm(rtt, cfg.reference_rtt_us)
                .clamp(PPM, cfg.max_latency_multiplier_ppm.max(PPM)),
            PPM + local_error_ppm.min(PPM) / 2,
        ),
        _ => (PPM, PPM),
    };
    let load_ppm = load_multiplier_ppm.clamp(PPM, strategy.load_multiplier_max_ppm.max(PPM));
    let p = u128::from(PPM);
    let t = u128::from(base_ms) * u128::from(latency_ppm) / p * u128::from(load_ppm) / p
        * u128::from(confidence_ppm)
        / p;
    AdaptiveTimeout {
        timeout_ms: u64::try_from(t).unwrap_or(u64::MAX),
        latency_ppm,
        load_ppm,
        confidence_ppm,
    }
}

/// A peer's lifecycle state (§12.3.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PeerState {
    Unconfirmed,
    Alive,
    Suspect,
    Dead,
}

/// What this node knows of one peer (§12.5.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub role: Role,
    pub state: PeerState,
    pub discovered_at_ms: u64,
    pub state_since_ms: u64,
    pub last_heard_ms: Option<u64>,
    /// Proactive confirmation probes sent so far.
    pub attempts: u32,
    pub last_attempt_ms: u64,
    /// SUSPECT → DEAD at this time.
    pub suspect_deadline_ms: u64,
}

/// Why an unconfirmed peer was removed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    /// Passive-only role: nothing heard within the passive timeout.
    PassiveTimeout,
    /// Proactive role: every probe went unanswered.
    AttemptsExhausted,
}

/// What the node must do or record. Produced in peer-id order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a confirmation ping to an unconfirmed peer.
    Probe {
        peer: NodeId,
        role: Role,
        attempt: u32,
    },
    /// UNCONFIRMED → ALIVE.
    Confirmed {
        peer: NodeId,
        role: Role,
        after_ms: u64,
    },
    /// UNCONFIRMED → removed from membership (not DEAD).
    Removed {
        peer: NodeId,
        role: Role,
        reason: RemoveReason,
    },
    /// ALIVE → SUSPECT, dead at `now + timeout_ms` unless it answers.
    Suspected {
        peer: NodeId,
        timeout: AdaptiveTimeout,
    },
    /// SUSPECT → ALIVE.
    Refuted { peer: NodeId },
    /// SUSPECT → DEAD.
    Dead { peer: NodeId },
}

/// A refused input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConfirmError {
    UnknownPeer(NodeId),
    Full {
        max: usize,
    },
    /// AD-29: an unconfirmed peer cannot be suspected.
    NotConfirmed(NodeId),
    /// A dead peer stays dead until it is forgotten and rediscovered.
    Dead(NodeId),
}

/// Gauges and counters of §12.8.2–§12.8.4.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfirmMetrics {
    /// Unconfirmed peers removed, by role (gate, manager, worker).
    pub removed: [u64; 3],
    pub removed_passive: [u64; 3],
    pub removed_exhausted: [u64; 3],
    /// Confirmation probes sent, by role.
    pub confirmation_attempts: [u64; 3],
    /// Peers confirmed after at least one probe.
    pub confirmation_success: u64,
    pub transitions_unconfirmed_to_alive: u64,
    pub transitions_unconfirmed_to_removed: u64,
    pub suspicions_refused_unconfirmed: u64,
    /// The last adaptive suspicion timeout computed, by role.
    pub last_adaptive_timeout: [Option<AdaptiveTimeout>; 3],
}

/// How many peers are in each state (§12.8.3 gauges).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub unconfirmed: usize,
    pub alive: usize,
    pub suspect: usize,
    pub dead: usize,
}

/// The role-aware membership of one node (§12.5.1).
#[derive(Clone, Debug)]
pub struct Membership {
    cfg: ConfirmConfig,
    peers: BTreeMap<NodeId, Peer>,
    pub metrics: ConfirmMetrics,
}

impl Membership {
    pub fn new(cfg: ConfirmConfig) -> Membership {
        Membership {
            cfg,
            peers: BTreeMap::new(),
            metrics: ConfirmMetrics::default(),
        }
    }

    pub fn config(&self) -> &ConfirmConfig {
        &self.cfg
    }

    pub fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// Peers in `state`, in id order (§12.3.3).
    pub fn in_state(&self, state: PeerState) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.state == state)
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn counts(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for p in self.peers.values() {
            match p.state {
                PeerState::Unconfirmed => c.unconfirmed += 1,
                PeerState::Alive => c.alive += 1,
                PeerState::Suspect => c.suspect += 1,
                PeerState::Dead => c.dead += 1,
            }
        }
        c
    }

    /// Gossip named a peer (§12.3.6). A new peer starts UNCONFIRMED; a known one keeps
    /// its state (gossip is not evidence of reachability). Returns whether it was new.
    pub fn on_discovered(
        &mut self,
        id: NodeId,
        role: Role,
        now_ms: u64,
    ) -> Result<bool, ConfirmError> {
        if self.peers.contains_key(&id) {
            return Ok(false);
        }
        if self.peers.len() >= MAX_MEMBERS {
            return Err(ConfirmError::Full { max: MAX_MEMBERS });
        }
        let peer = Peer {
            role,
            state: PeerState::Unconfirmed,
            discovered_at_ms: now_ms,
            state_since_ms: now_ms,
            last_heard_ms: None,
            attempts: 0,
            last_attempt_ms: 0,
            suspect_deadline_ms: 0,
        };
        self.peers.insert(id, peer);
        Ok(true)
    }

    /// Bidirectional contact with the peer (an ack to our ping, §12.3.7).
    pub fn on_ack(&mut self, id: NodeId, now_ms: u64) -> Result<Option<Action>, ConfirmError> {
        let p = self
            .peers
            .get_mut(&id)
            .ok_or(ConfirmError::UnknownPeer(id))?;
        p.last_heard_ms = Some(now_ms);
        let action = match p.state {
            PeerState::Dead => return Err(ConfirmError::Dead(id)),
            PeerState::Alive => None,
            PeerState::Unconfirmed => {
                self.metrics.transitions_unconfirmed_to_alive += 1;
                if p.attempts > 0 {
                    self.metrics.confirmation_success += 1;
                }
                Some(Action::Confirmed {
                    peer: id,
                    role: p.role,
                    after_ms: now_ms.saturating_sub(p.discovered_at_ms),
                })
            }
            PeerState::Suspect => Some(Action::Refuted { peer: id }),
        };
        if p.state != PeerState::Alive {
            p.state = PeerState::Alive;
            p.state_since_ms = now_ms;
        }
        Ok(action)
    }

    /// A probe of the peer went unanswered. ALIVE → SUSPECT with the adaptive suspicion
    /// timeout (§12.6.3); an UNCONFIRMED peer is refused (AD-29); a SUSPECT one keeps its
    /// original deadline.
    pub fn on_probe_failed(
        &mut self,
        id: NodeId,
        now_ms: u64,
        vivaldi: &VivaldiSystem,
        load_multiplier_ppm: u64,
    ) -> Result<Option<Action>, ConfirmError> {
        let cfg = self.cfg;
        let p = self
            .peers
            .get_mut(&id)
            .ok_or(ConfirmError::UnknownPeer(id))?;
        match p.state {
            PeerState::Unconfirmed => {
                self.metrics.suspicions_refused_unconfirmed += 1;
                Err(ConfirmError::NotConfirmed(id))
            }
            PeerState::Dead => Err(ConfirmError::Dead(id)),
            PeerState::Suspect => Ok(None),
            PeerState::Alive => {
                let t = Self::timeout_for(
                    &cfg,
                    p.role,
                    cfg.suspicion_base_ms,
                    id,
                    vivaldi,
                    load_multiplier_ppm,
                );
                p.state = PeerState::Suspect;
                p.state_since_ms = now_ms;
                p.suspect_deadline_ms = now_ms.saturating_add(t.timeout_ms);
                self.metrics.last_adaptive_timeout[p.role.index()] = Some(t);
                Ok(Some(Action::Suspected {
                    peer: id,
                    timeout: t,
                }))
            }
        }
    }

    /// The adaptive timeout of `base_ms` for peer `id` of `role` (§12.6.5).
    pub fn adaptive_timeout_for(
        &self,
        id: NodeId,
        role: Role,
        base_ms: u64,
        vivaldi: &VivaldiSystem,
        load_ppm: u64,
    ) -> AdaptiveTimeout {
        Self::timeout_for(&self.cfg, role, base_ms, id, vivaldi, load_ppm)
    }

    fn timeout_for(
        cfg: &ConfirmConfig,
        role: Role,
        base_ms: u64,
        id: NodeId,
        viv: &VivaldiSystem,
        load_ppm: u64,
    ) -> AdaptiveTimeout {
        let rtt = viv.peer_coordinate(id).map(|_| viv.estimate_rtt_us(id));
        adaptive_timeout(
            cfg,
            cfg.strategy(role),
            base_ms,
            rtt,
            viv.error_ppm(),
            load_ppm,
        )
    }

    /// Removes a peer outright (it left, or a DEAD record was garbage-collected).
    pub fn forget(&mut self, id: NodeId) -> bool {
        self.peers.remove(&id).is_some()
    }

    /// Time passed to `now_ms`: role-aware confirmation of UNCONFIRMED peers (§12.5.5,
    /// §12.5.6) and SUSPECT deadlines.
    pub fn on_tick(
        &mut self,
        now_ms: u64,
        vivaldi: &VivaldiSystem,
        load_multiplier_ppm: u64,
    ) -> Vec<Action> {
        let cfg = self.cfg;
        let mut out = Vec::new();
        let mut removed = Vec::new();
        for (&id, p) in self.peers.iter_mut() {
            match p.state {
                PeerState::Unconfirmed => {
                    let strategy = cfg.strategy(p.role);
                    let role = p.role;
                    let interval = || {
                        Self::timeout_for(
                            &cfg,
                            role,
                            strategy.attempt_interval_ms,
                            id,
                            vivaldi,
                            load_multiplier_ppm,
                        )
                    };
                    let a = Self::confirm_step(id, strategy, p, now_ms, interval);
                    if let Some(a) = a {
                        if let Action::Removed { .. } = a {
                            removed.push(id);
                        }
                        out.push(a);
                    }
                }
                PeerState::Suspect if now_ms >= p.suspect_deadline_ms => {
                    p.state = PeerState::Dead;
                    p.state_since_ms = now_ms;
                    out.push(Action::Dead { peer: id });
                }
                _ => {}
            }
        }
        for a in &out {
            match *a {
                Action::Probe { role, .. } => self.metrics.confirmation_attempts[role.index()] += 1,
                Action::Removed { role, reason, .. } => {
                    self.metrics.removed[role.index()] += 1;
                    self.metrics.transitions_unconfirmed_to_removed += 1;
                    match reason {
                        RemoveReason::PassiveTimeout => {
                            self.metrics.removed_passive[role.index()] += 1
                        }
                        RemoveReason::AttemptsExhausted => {
                            self.metrics.removed_exhausted[role.index()] += 1
                        }
                    }
                }
                _ => {}
            }
        }
        for id in removed {
            self.peers.remove(&id);
        }
        out
    }

    /// One unconfirmed peer: wait out the passive timeout, then probe (proactive roles,
    /// each probe waiting an adaptive attempt interval) or remove (passive roles).
    fn confirm_step(
        id: NodeId,
        strategy: &RoleStrategy,
        p: &mut Peer,
        now_ms: u64,
        interval: impl Fn() -> AdaptiveTimeout,
    ) -> Option<Action> {
        if now_ms.saturating_sub(p.discovered_at_ms) < strategy.passive_timeout_ms {
            return None;
        }
        if !strategy.proactive {
            return Some(Action::Removed {
                peer: id,
                role: p.role,
                reason: RemoveReason::PassiveTimeout,
            });
        }
        if p.attempts > 0 && now_ms.saturating_sub(p.last_attempt_ms) < interval().timeout_ms {
            return None;
        }
        if p.attempts >= strategy.attempts {
            return Some(Action::Removed {
                peer: id,
                role: p.role,
                reason: RemoveReason::AttemptsExhausted,
            });
        }
        p.attempts += 1;
        p.last_attempt_ms = now_ms;
        Some(Action::Probe {
            peer: id,
            role: p.role,
            attempt: p.attempts,
        })
    }
}
