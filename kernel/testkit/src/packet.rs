//! The simulated packet network (after TigerBeetle's `packet_simulator.zig`): the
//! one lossy-network model for every simulator and test in the tree.
//!
//! Owns the packets in flight between nodes (plain `u32` ids), the fault settings
//! ([`NetFaults`]: loss, duplication, uniformly drawn one-way delay — which reorders
//! packets naturally — and a bound per directed link), the set of cut directed links
//! (partitions, symmetric or one-way), clogged links, and the counters.
//!
//! Invariants:
//! - Time is a parameter (`now_ms`, abstract milliseconds) and never goes backwards.
//! - Deliveries come out by (due time, send sequence): the order depends only on the
//!   seed and the calls, never on a clock or hash order (`BTreeMap`/`Vec` only).
//! - Every send that passes the cut check draws exactly four numbers (loss,
//!   duplication, delay, duplicate's delay), so changing one probability never
//!   shifts the stream the other decisions see.
//! - A packet on a cut link is dropped when sent and, if the link was cut while it
//!   was in flight, when it falls due.
//! - Conservation: `sent + duplicated == delivered + dropped_* + in_flight`,
//!   checked by [`PacketSim::invariants`].

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use xdv_types::rng::{PPM, SplitMix64};

/// A node of the simulated network.
pub type Node = u32;

/// Longest one-way delay (and clog) that can be configured: one simulated hour.
pub const MAX_DELAY_MS: u64 = 3_600_000;
/// Largest per-link bound [`NetFaults::max_in_flight`] may take.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1 << 20;
/// Default per-link bound.
const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// Fault settings; changeable at any time with [`PacketSim::set_faults`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetFaults {
    /// Probability (parts per million) that a packet is lost.
    pub loss_ppm: u64,
    /// Probability (parts per million) that a packet is delivered twice.
    pub dup_ppm: u64,
    /// One-way delay, drawn uniformly in `min_delay_ms..=max_delay_ms` for every
    /// copy of every packet; a spread above zero reorders packets.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Most packets in flight on one directed link; sends beyond it are dropped
    /// (a full queue) and counted in [`NetStats::dropped_full`].
    pub max_in_flight: usize,
}

impl NetFaults {
    /// A perfect network: no loss, no duplication, a fixed 1 ms delay.
    pub const fn none() -> NetFaults {
        NetFaults {
            loss_ppm: 0,
            dup_ppm: 0,
            min_delay_ms: 1,
            max_delay_ms: 1,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Random settings for swarm testing: loss up to 20 %, duplication up to 5 %,
    /// delays between 1 and 50 ms. Five draws.
    pub fn random(rng: &mut SplitMix64) -> NetFaults {
        let min_delay_ms = rng.range(1..11);
        NetFaults {
            loss_ppm: rng.below(200_001),
            dup_ppm: rng.below(50_001),
            min_delay_ms,
            max_delay_ms: min_delay_ms + rng.below(41),
            max_in_flight: 64 + rng.below(DEFAULT_MAX_IN_FLIGHT as u64) as usize,
        }
    }

    /// Checks every limit; [`PacketSim`] accepts only settings that pass.
    pub fn check(&self) -> Result<(), FaultsError> {
        if self.loss_ppm > PPM {
            return Err(FaultsError::LossOver(self.loss_ppm));
        }
        if self.dup_ppm > PPM {
            return Err(FaultsError::DupOver(self.dup_ppm));
        }
        if self.min_delay_ms > self.max_delay_ms {
            return Err(FaultsError::DelayOrder {
                min_ms: self.min_delay_ms,
                max_ms: self.max_delay_ms,
            });
        }
        if self.max_delay_ms > MAX_DELAY_MS {
            return Err(FaultsError::DelayOver(self.max_delay_ms));
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            return Err(FaultsError::InFlight(self.max_in_flight));
        }
        Ok(())
    }
}

impl Default for NetFaults {
    fn default() -> NetFaults {
        NetFaults::none()
    }
}

/// Why a [`NetFaults`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultsError {
    LossOver(u64),
    DupOver(u64),
    DelayOrder { min_ms: u64, max_ms: u64 },
    DelayOver(u64),
    InFlight(usize),
}

impl fmt::Display for FaultsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultsError::LossOver(p) => write!(f, "loss {p} ppm over {PPM}"),
            FaultsError::DupOver(p) => write!(f, "duplication {p} ppm over {PPM}"),
            FaultsError::DelayOrder { min_ms, max_ms } => {
                write!(f, "min delay {min_ms} ms over max delay {max_ms} ms")
            }
            FaultsError::DelayOver(d) => write!(f, "delay {d} ms over {MAX_DELAY_MS}"),
            FaultsError::InFlight(n) => {
                write!(f, "max_in_flight {n} not in 1..={MAX_IN_FLIGHT_LIMIT}")
            }
        }
    }
}

/// Counters since the network was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Calls to [`PacketSim::send`].
    pub sent: u64,
    /// Packets handed out by [`PacketSim::deliver`].
    pub delivered: u64,
    pub dropped_loss: u64,
    /// Dropped on a cut link, when sent or when due.
    pub dropped_cut: u64,
    /// Dropped because their link already held `max_in_flight` packets.
    pub dropped_full: u64,
    /// Dropped by [`PacketSim::drop_all_to`] (the receiver crashed).
    pub dropped_crash: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
}

/// What [`PacketSim::send`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// In flight (one copy).
    Queued,
    /// In flight, and a second copy was made (which may itself have found the
    /// link full).
    Duplicated,
    DroppedCut,
    DroppedLoss,
    DroppedFull,
}

impl SendOutcome {
    pub fn is_dropped(self) -> bool {
        matches!(
            self,
            SendOutcome::DroppedCut | SendOutcome::DroppedLoss | SendOutcome::DroppedFull
        )
    }
}

/// A packet handed to its receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<M> {
    pub from: Node,
    pub to: Node,
    pub sent_ms: u64,
    pub due_ms: u64,
    pub msg: M,
}

#[derive(Clone, Debug)]
struct Packet<M> {
    from: Node,
    to: Node,
    sent_ms: u64,
    msg: M,
}

/// A clogged link: packets sent on it before `until_ms` take `extra_delay_ms` more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Clog {
    until_ms: u64,
    extra_delay_ms: u64,
}

/// The simulated network. See the module documentation for its invariants.
#[derive(Clone, Debug)]
pub struct PacketSim<M> {
    rng: SplitMix64,
    faults: NetFaults,
    /// The latest time any call passed in.
    now_ms: u64,
    seq: u64,
    /// Packets in flight by (due time, send sequence).
    queue: BTreeMap<(u64, u64), Packet<M>>,
    /// Packets in flight per directed link (no zero entries).
    per_link: BTreeMap<(Node, Node), usize>,
    cut: BTreeSet<(Node, Node)>,
    clogs: BTreeMap<(Node, Node), Clog>,
    stats: NetStats,
}

impl<M> PacketSim<M> {
    /// A network with no packets and no cuts. Panics if `faults` fails
    /// [`NetFaults::check`] (settings are the test author's, not input).
    pub fn new(seed: u64, faults: NetFaults) -> PacketSim<M> {
        if let Err(e) = faults.check() {
            panic!("PacketSim::new: {e}");
        }
        PacketSim {
            rng: SplitMix64::new(seed),
            faults,
            now_ms: 0,
            seq: 0,
            queue: BTreeMap::new(),
            per_link: BTreeMap::new(),
            cut: BTreeSet::new(),
            clogs: BTreeMap::new(),
            stats: NetStats::default(),
        }
    }

    pub fn faults(&self) -> NetFaults {
        self.faults
    }

    /// New settings for packets sent from now on (packets in flight keep their due
    /// time). Panics if `faults` fails [`NetFaults::check`].
    pub fn set_faults(&mut self, faults: NetFaults) {
        if let Err(e) = faults.check() {
            panic!("PacketSim::set_faults: {e}");
        }
        self.faults = faults;
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Packets in flight on all links.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Packets in flight on the directed link `from -> to`.
    pub fn in_flight_on(&self, from: Node, to: Node) -> usize {
        self.per_link.get(&(from, to)).copied().unwrap_or(0)
    }

    /// When the next packet falls due, if any: event-driven callers can jump there.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.queue.keys().next().map(|&(due, _)| due)
    }

    fn advance(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms,
            "PacketSim: time went backwards ({now_ms} < {})",
            self.now_ms
        );
        self.now_ms = now_ms;
    }

    /// Every packet due at or before `now_ms`, by (due time, send order). Packets
    /// whose link is cut now are dropped instead.
    pub fn deliver(&mut self, now_ms: u64) -> Vec<Delivery<M>> {
        self.advance(now_ms);
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            let due_ms = entry.key().0;
            if due_ms > now_ms {
                break;
            }
            let p = entry.remove();
            self.unlink(p.from, p.to);
            if self.cut.contains(&(p.from, p.to)) {
                self.stats.dropped_cut += 1;
                continue;
            }
            self.stats.delivered += 1;
            out.push(Delivery {
                from: p.from,
                to: p.to,
                sent_ms: p.sent_ms,
                due_ms,
                msg: p.msg,
            });
        }
        self.clogs.retain(|_, c| c.until_ms > now_ms);
        debug_assert!(self.conserved());
        out
    }

    /// Drops every packet in flight to `node` (it crashed: its receive queues are
    /// gone). Returns how many.
    pub fn drop_all_to(&mut self, node: Node) -> usize {
        let before = self.queue.len();
        self.queue.retain(|_, p| p.to != node);
        self.per_link.retain(|&(_, to), _| to != node);
        let dropped = before - self.queue.len();
        self.stats.dropped_crash += dropped as u64;
        debug_assert!(self.conserved());
        dropped
    }

    /// Cuts the directed link `from -> to` (one way).
    pub fn cut(&mut self, from: Node, to: Node) {
        self.cut.insert((from, to));
    }

    /// Heals the directed link `from -> to`.
    pub fn heal(&mut self, from: Node, to: Node) {
        self.cut.remove(&(from, to));
    }

    pub fn is_cut(&self, from: Node, to: Node) -> bool {
        self.cut.contains(&(from, to))
    }

    /// The cut directed links, in order.
    pub fn cuts(&self) -> impl Iterator<Item = (Node, Node)> + '_ {
        self.cut.iter().copied()
    }

    /// Cuts every link between different groups, both ways. Adds to the cuts
    /// already present; nodes in no group keep every link. Panics if a node is in
    /// two groups.
    pub fn partition(&mut self, groups: &[&[Node]]) {
        let mut seen = BTreeSet::new();
        for &n in groups.iter().flat_map(|g| g.iter()) {
            assert!(
                seen.insert(n),
                "PacketSim::partition: node {n} in two groups"
            );
        }
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                self.partition_one_way(a, b);
                self.partition_one_way(b, a);
            }
        }
    }

    /// Cuts every link from a node of `from` to a different node of `to` (one way:
    /// `to` still reaches `from`). Adds to the cuts already present.
    pub fn partition_one_way(&mut self, from: &[Node], to: &[Node]) {
        for &a in from {
            for &b in to {
                if a != b {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// A random symmetric split of `nodes` into two non-empty sides (when there
    /// are at least two nodes), cut both ways; returns the side of each node in
    /// order (`false` / `true`). One draw per node, plus one if all landed on one
    /// side.
    pub fn partition_random(&mut self, rng: &mut SplitMix64, nodes: &[Node]) -> Vec<bool> {
        let mut side: Vec<bool> = nodes.iter().map(|_| rng.chance_pct(50)).collect();
        if nodes.len() >= 2 && side.iter().all(|&s| s == side[0]) {
            let i = rng.below(nodes.len() as u64) as usize;
            side[i] = !side[i];
        }
        let a: Vec<Node> = nodes
            .iter()
            .zip(&side)
            .filter(|p| !*p.1)
            .map(|p| *p.0)
            .collect();
        let b: Vec<Node> = nodes
            .iter()
            .zip(&side)
            .filter(|p| *p.1)
            .map(|p| *p.0)
            .collect();
        self.partition(&[&a, &b]);
        side
    }

    /// Heals every cut and removes every clog.
    pub fn heal_all(&mut self) {
        self.cut.clear();
        self.clogs.clear();
    }

    /// Clogs `from -> to`: packets sent on it before `until_ms` take
    /// `extra_delay_ms` more (on top of the drawn delay). Replaces an earlier clog
    /// of the link; packets already in flight are not affected.
    pub fn clog(&mut self, from: Node, to: Node, until_ms: u64, extra_delay_ms: u64) {
        assert!(
            extra_delay_ms <= MAX_DELAY_MS,
            "PacketSim::clog: {extra_delay_ms} ms over {MAX_DELAY_MS}"
        );
        self.clogs.insert(
            (from, to),
            Clog {
                until_ms,
                extra_delay_ms,
            },
        );
    }

    pub fn unclog(&mut self, from: Node, to: Node) {
        self.clogs.remove(&(from, to));
    }

    fn clog_extra_ms(&self, now_ms: u64, from: Node, to: Node) -> u64 {
        match self.clogs.get(&(from, to)) {
            Some(c) if now_ms < c.until_ms => c.extra_delay_ms,
            _ => 0,
        }
    }

    fn draw_delay_ms(&mut self) -> u64 {
        let f = self.faults;
        self.rng.range(f.min_delay_ms..f.max_delay_ms + 1)
    }

    /// Puts one copy in flight, unless its link is full.
    fn enqueue(&mut self, due_ms: u64, from: Node, to: Node, msg: M) -> bool {
        let on_link = self.per_link.entry((from, to)).or_insert(0);
        if *on_link >= self.faults.max_in_flight {
            self.stats.dropped_full += 1;
            return false;
        }
        *on_link += 1;
        self.seq += 1;
        let p = Packet {
            from,
            to,
            sent_ms: self.now_ms,
            msg,
        };
        let old = self.queue.insert((due_ms, self.seq), p);
        debug_assert!(old.is_none(), "sequence numbers are unique");
        true
    }

    fn unlink(&mut self, from: Node, to: Node) {
        let n = self
            .per_link
            .get_mut(&(from, to))
            .expect("a packet in flight is counted on its link");
        *n -= 1;
        if *n == 0 {
            self.per_link.remove(&(from, to));
        }
    }

    fn conserved(&self) -> bool {
        let s = self.stats;
        let out = s.delivered + s.dropped_loss + s.dropped_cut + s.dropped_full + s.dropped_crash;
        s.sent + s.duplicated == out + self.queue.len() as u64
    }

    /// Checks every invariant (conservation, per-link counts, bounds); panics on a
    /// violation. Cheap enough for tests to call after every step.
    pub fn invariants(&self) {
        assert!(
            self.conserved(),
            "PacketSim: counters do not add up: {:?}",
            self.stats
        );
        let mut counted: BTreeMap<(Node, Node), usize> = BTreeMap::new();
        for p in self.queue.values() {
            *counted.entry((p.from, p.to)).or_insert(0) += 1;
            assert!(
                p.sent_ms <= self.now_ms,
                "PacketSim: a packet from the future"
            );
        }
        assert_eq!(counted, self.per_link, "PacketSim: per-link counts drifted");
        // Lowering max_in_flight with set_faults may leave a link above the new
        // bound until it drains; it never grows past the largest bound allowed.
        assert!(self.per_link.values().all(|&n| n <= MAX_IN_FLIGHT_LIMIT));
        assert!(self.seq >= self.queue.len() as u64);
    }
}

impl<M: Clone> PacketSim<M> {
    /// Sends `msg` from `from` to `to` at `now_ms`: dropped if the link is cut, lost
    /// with `loss_ppm`, duplicated with `dup_ppm`, otherwise in flight until
    /// `now_ms + delay (+ clog)`.
    pub fn send(&mut self, now_ms: u64, from: Node, to: Node, msg: M) -> SendOutcome {
        self.advance(now_ms);
        self.stats.sent += 1;
        if self.cut.contains(&(from, to)) {
            self.stats.dropped_cut += 1;
            return SendOutcome::DroppedCut;
        }
        let f = self.faults;
        let lost = self.rng.chance_ppm(f.loss_ppm);
        let dup = self.rng.chance_ppm(f.dup_ppm);
        let delay_ms = self.draw_delay_ms();
        let dup_delay_ms = self.draw_delay_ms();
        if lost {
            self.stats.dropped_loss += 1;
            return SendOutcome::DroppedLoss;
        }
        let extra_ms = self.clog_extra_ms(now_ms, from, to);
        let copy = dup.then(|| msg.clone());
        if !self.enqueue(now_ms + delay_ms + extra_ms, from, to, msg) {
            return SendOutcome::DroppedFull;
        }
        let Some(copy) = copy else {
            return SendOutcome::Queued;
        };
        self.stats.duplicated += 1;
        self.enqueue(now_ms + dup_delay_ms + extra_ms, from, to, copy);
        debug_assert!(self.conserved());
        SendOutcome::Duplicated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lossy() -> NetFaults {
        NetFaults {
            loss_ppm: 100_000,
            dup_ppm: 50_000,
            min_delay_ms: 1,
            max_delay_ms: 20,
            max_in_flight: 1 << 16,
        }
    }

    fn delivered(sim: &mut PacketSim<u64>, now: u64) -> Vec<(Node, Node, u64)> {
        sim.deliver(now)
            .into_iter()
            .map(|d| (d.from, d.to, d.msg))
            .collect()
    }

    #[test]
    fn perfect_network_delivers_everything_in_order() {
        let mut sim = PacketSim::new(1, NetFaults::none());
        for i in 0..100 {
            assert_eq!(sim.send(0, 1, 2, i), SendOutcome::Queued);
        }
        assert_eq!(sim.in_flight(), 100);
        assert_eq!(sim.in_flight_on(1, 2), 100);
        assert_eq!(sim.next_due_ms(), Some(1));
        assert!(sim.deliver(0).is_empty(), "a 1 ms delay is not zero");
        let got = sim.deliver(1);
        assert_eq!(got.len(), 100);
        assert!(got.iter().enumerate().all(|(i, d)| d.msg == i as u64));
        assert!(got.iter().all(|d| d.sent_ms == 0 && d.due_ms == 1));
        assert_eq!(sim.in_flight(), 0);
        let s = sim.stats();
        assert_eq!((s.sent, s.delivered), (100, 100));
        sim.invariants();
    }

    #[test]
    fn loss_rate_within_bounds() {
        let mut f = NetFaults::none();
        f.loss_ppm = 200_000;
        f.max_in_flight = 1 << 15;
        let mut sim = PacketSim::new(7, f);
        for i in 0..10_000 {
            sim.send(0, 1, 2, i);
        }
        let got = sim.deliver(10).len() as u64;
        let s = sim.stats();
        assert_eq!(got + s.dropped_loss, 10_000);
        // 20 % of 10k: mean 2000, sd 40; allow 5 sd.
        assert!((1_800..2_200).contains(&s.dropped_loss), "{s:?}");
        sim.invariants();
    }

    #[test]
    fn duplication_rate_and_copies() {
        let mut f = NetFaults::none();
        f.dup_ppm = 100_000;
        f.max_in_flight = 1 << 15;
        let mut sim = PacketSim::new(8, f);
        let mut dups = 0;
        for i in 0..10_000u64 {
            dups += u64::from(sim.send(0, 3, 4, i) == SendOutcome::Duplicated);
        }
        let got = sim.deliver(1);
        assert_eq!(got.len() as u64, 10_000 + dups);
        assert_eq!(sim.stats().duplicated, dups);
        assert!((800..1_200).contains(&dups), "{dups}");
        sim.invariants();
    }

    #[test]
    fn delay_spread_reorders_and_stays_in_bounds() {
        let mut f = NetFaults::none();
        f.min_delay_ms = 5;
        f.max_delay_ms = 9;
        let mut sim = PacketSim::new(9, f);
        let mut out = Vec::new();
        for now in 0..200 {
            for i in 0..10 {
                if now < 100 {
                    sim.send(now, 1, 2, now * 10 + i);
                }
            }
            for d in sim.deliver(now) {
                assert!(d.due_ms <= now);
                let lat = d.due_ms - d.sent_ms;
                assert!((5..=9).contains(&lat), "latency {lat}");
                out.push(d.msg);
            }
        }
        assert_eq!(out.len(), 1000);
        assert!(out.windows(2).any(|w| w[0] > w[1]), "no reordering at all");
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn deliveries_order_by_due_then_send_order() {
        let mut f = NetFaults::none();
        f.max_delay_ms = 4;
        let mut sim = PacketSim::new(10, f);
        for i in 0..500u64 {
            sim.send(0, (i % 3) as u32, 7, i);
        }
        let got = sim.deliver(100);
        assert!(
            got.windows(2)
                .all(|w| (w[0].due_ms, w[0].msg) < (w[1].due_ms, w[1].msg))
        );
    }

    #[test]
    fn one_way_cut_blocks_exactly_that_direction() {
        let mut sim = PacketSim::new(2, NetFaults::none());
        sim.cut(1, 2);
        assert!(sim.is_cut(1, 2) && !sim.is_cut(2, 1));
        assert_eq!(sim.send(0, 1, 2, 10), SendOutcome::DroppedCut);
        assert_eq!(sim.send(0, 2, 1, 11), SendOutcome::Queued);
        assert_eq!(sim.send(0, 1, 3, 12), SendOutcome::Queued);
        assert_eq!(delivered(&mut sim, 1), vec![(2, 1, 11), (1, 3, 12)]);
        sim.heal(1, 2);
        assert_eq!(sim.send(1, 1, 2, 13), SendOutcome::Queued);
        assert_eq!(delivered(&mut sim, 2), vec![(1, 2, 13)]);
        assert_eq!(sim.stats().dropped_cut, 1);
        sim.invariants();
    }

    #[test]
    fn partition_blocks_between_groups_only() {
        let mut sim = PacketSim::new(3, NetFaults::none());
        sim.partition(&[&[1, 2], &[3, 4]]);
        for a in 1..=5u32 {
            for b in 1..=5u32 {
                let across = a != b && a <= 4 && b <= 4 && (a <= 2) != (b <= 2);
                assert_eq!(sim.is_cut(a, b), across, "{a}->{b}");
                let out = sim.send(0, a, b, u64::from(a * 10 + b));
                assert_eq!(out.is_dropped(), across, "{a}->{b}");
            }
        }
        let got = delivered(&mut sim, 1);
        assert_eq!(got.len(), 25 - 8);
        sim.heal_all();
        assert_eq!(sim.cuts().count(), 0);
    }

    #[test]
    fn partition_one_way_is_asymmetric() {
        let mut sim = PacketSim::new(4, NetFaults::none());
        sim.partition_one_way(&[1], &[2, 3]);
        let cuts: Vec<_> = sim.cuts().collect();
        assert_eq!(cuts, vec![(1, 2), (1, 3)]);
        assert!(sim.send(0, 2, 1, 0) == SendOutcome::Queued);
    }

    #[test]
    #[should_panic(expected = "two groups")]
    fn partition_refuses_overlapping_groups() {
        PacketSim::<u8>::new(0, NetFaults::none()).partition(&[&[1, 2], &[2, 3]]);
    }

    #[test]
    fn cut_while_in_flight_drops_at_delivery() {
        let mut sim = PacketSim::new(5, NetFaults::none());
        sim.send(0, 1, 2, 1);
        sim.send(0, 2, 1, 2);
        sim.cut(1, 2);
        assert_eq!(delivered(&mut sim, 5), vec![(2, 1, 2)]);
        let s = sim.stats();
        assert_eq!((s.delivered, s.dropped_cut), (1, 1));
        sim.invariants();
    }

    #[test]
    fn random_partition_splits_in_two_nonempty_sides() {
        let mut rng = SplitMix64::new(6);
        for _ in 0..200 {
            let mut sim = PacketSim::<u8>::new(0, NetFaults::none());
            let nodes = [1, 2, 3, 4, 5];
            let side = sim.partition_random(&mut rng, &nodes);
            assert!(side.iter().any(|&s| s) && side.iter().any(|&s| !s));
            for (i, &a) in nodes.iter().enumerate() {
                for (j, &b) in nodes.iter().enumerate() {
                    assert_eq!(sim.is_cut(a, b), side[i] != side[j]);
                }
            }
        }
    }

    #[test]
    fn clog_adds_delay_until_it_expires() {
        let mut sim = PacketSim::new(6, NetFaults::none());
        sim.clog(1, 2, 10, 50);
        sim.send(0, 1, 2, 1); // clogged: due at 51
        sim.send(0, 2, 1, 2); // other direction: due at 1
        sim.send(10, 1, 2, 3); // clog over: due at 11
        assert_eq!(delivered(&mut sim, 11), vec![(2, 1, 2), (1, 2, 3)]);
        assert_eq!(sim.next_due_ms(), Some(51));
        assert_eq!(delivered(&mut sim, 51), vec![(1, 2, 1)]);
        sim.clog(1, 2, 100, 5);
        sim.unclog(1, 2);
        sim.send(60, 1, 2, 4);
        assert_eq!(sim.next_due_ms(), Some(61));
    }

    #[test]
    fn full_link_drops_and_counts() {
        let mut f = NetFaults::none();
        f.max_in_flight = 3;
        let mut sim = PacketSim::new(11, f);
        let outs: Vec<_> = (0..5).map(|i| sim.send(0, 1, 2, i)).collect();
        assert_eq!(outs[..3], [SendOutcome::Queued; 3]);
        assert_eq!(outs[3..], [SendOutcome::DroppedFull; 2]);
        assert_eq!(sim.send(0, 1, 3, 9), SendOutcome::Queued, "per link");
        assert_eq!(sim.stats().dropped_full, 2);
        assert_eq!(sim.deliver(1).len(), 4);
        assert_eq!(sim.send(1, 1, 2, 5), SendOutcome::Queued, "drained");
        sim.invariants();
    }

    #[test]
    fn drop_all_to_forgets_a_crashed_receiver() {
        let mut sim = PacketSim::new(12, NetFaults::none());
        for i in 0..10 {
            sim.send(0, 1, 2 + (i % 2) as u32, i);
        }
        assert_eq!(sim.drop_all_to(2), 5);
        assert_eq!(sim.in_flight_on(1, 2), 0);
        assert!(delivered(&mut sim, 1).iter().all(|d| d.1 == 3));
        assert_eq!(sim.stats().dropped_crash, 5);
        sim.invariants();
    }

    /// A busy run over a lossy network with changing partitions and clogs.
    fn trace(seed: u64) -> (Vec<(u64, Node, Node, u64)>, NetStats) {
        let mut sim = PacketSim::new(seed, lossy());
        let mut rng = SplitMix64::new(seed ^ 0xabc);
        let mut out = Vec::new();
        for now in 0..2_000u64 {
            for _ in 0..rng.below(5) {
                let (a, b) = (rng.range(1..6) as u32, rng.range(1..6) as u32);
                sim.send(now, a, b, now);
            }
            match rng.below(100) {
                0 => sim.heal_all(),
                1 => {
                    sim.partition_random(&mut rng, &[1, 2, 3, 4, 5]);
                }
                2 => sim.clog(1, 2, now + 30, 40),
                3 => {
                    sim.drop_all_to(rng.range(1..6) as u32);
                }
                _ => {}
            }
            for d in sim.deliver(now) {
                out.push((d.due_ms, d.from, d.to, d.msg));
            }
            sim.invariants();
        }
        (out, sim.stats())
    }

    #[test]
    fn same_seed_same_trace() {
        let (a, sa) = trace(77);
        let (b, sb) = trace(77);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert!(sa.dropped_loss > 0 && sa.duplicated > 0 && sa.dropped_cut > 0);
        let (c, _) = trace(78);
        assert_ne!(a, c);
    }

    #[test]
    fn four_draws_per_send_whatever_the_settings() {
        let mut a = PacketSim::new(13, NetFaults::none());
        let mut b = PacketSim::new(13, lossy());
        a.send(0, 1, 2, 0u8);
        b.send(0, 1, 2, 0u8);
        assert_eq!(a.rng, b.rng);
        a.cut(1, 2);
        a.send(0, 1, 2, 0u8);
        assert_eq!(a.rng, b.rng, "a cut link draws nothing");
    }

    #[test]
    fn faults_checked() {
        let mut f = NetFaults::none();
        assert_eq!(f.check(), Ok(()));
        f.loss_ppm = PPM + 1;
        assert_eq!(f.check(), Err(FaultsError::LossOver(PPM + 1)));
        let mut f = NetFaults::none();
        f.min_delay_ms = 5;
        assert!(matches!(f.check(), Err(FaultsError::DelayOrder { .. })));
        let mut f = NetFaults::none();
        f.max_in_flight = 0;
        assert_eq!(f.check(), Err(FaultsError::InFlight(0)));
        let mut rng = SplitMix64::new(1);
        for _ in 0..100 {
            assert_eq!(NetFaults::random(&mut rng).check(), Ok(()));
        }
    }

    #[test]
    #[should_panic(expected = "backwards")]
    fn time_never_goes_backwards() {
        let mut sim = PacketSim::<u8>::new(0, NetFaults::none());
        sim.deliver(5);
        sim.send(4, 1, 2, 0);
    }
}
