//! Who may hold a listener's connection slots, and for how long: the slow-client
//! policy of the management port (hardening issue, case 4), as a pure value.
//!
//! A listener has a fixed number of slots (one TCP socket each). Without limits, a
//! client that connects and sends nothing — or sends one byte a second of a frame —
//! holds a slot for as long as it likes, and eight of them close the port. The
//! driver (the kernel's transport) reports what happens on each slot — opened from a
//! source address, established, bytes received, a request handed on, a reply sent,
//! closed — with the time, and closes whatever [`Admission`] names. Nothing here reads
//! a clock: the same calls give the same verdicts.
//!
//! The rules ([`Limits`], [`MGMT_LIMITS`] for the management port):
//! - **Handshake deadline.** A connection must be established within
//!   `handshake_ms` of its SYN.
//! - **Read deadline.** A started frame must complete within `read_deadline_ms` of its
//!   first byte, extended by one second for every `read_bytes_per_s` bytes of it
//!   received so far: a large frame over a slow link still arrives, a trickle
//!   (one byte a second) is closed after about `read_deadline_ms`.
//! - **Idle timeout.** A connection with no frame in progress and no request waiting
//!   for its reply is closed `idle_ms` after its last progress (established, a
//!   complete frame, a reply sent).
//! - **Reply wait.** A request the node has not answered within `reply_wait_ms` (the
//!   node answers every request within its own reply timeout; this bounds a reply
//!   lost to a full outbox) closes the connection.
//! - **Per-source share.** A source address that already holds `per_source` slots
//!   may take another only while at least `reserve` slots stay free for sources that
//!   hold fewer; otherwise its own oldest evictable connection is closed to make
//!   room, and if it has none the new connection is refused. One source can so hold
//!   at most `slots - reserve` slots and never lock other sources out. The share
//!   never locks everyone out where all clients appear from one address (QEMU user
//!   networking: every host connection comes from 10.0.2.2): that address still gets
//!   `slots - reserve` slots, and a new connection from it replaces its oldest
//!   evictable one instead of being refused.
//! - **Slots are never all held by the incomplete.** When the last free slot is
//!   taken (someone was waiting for it), the policy frees one at once: it closes an
//!   evictable connection — one not waiting for a reply, i.e. a handshake, an idle
//!   connection or an incomplete frame — of the source holding the most slots,
//!   oldest progress first. So a newcomer always finds a listening slot, and
//!   connections whose requests are complete and being answered are never evicted.
//!
//! Every close is counted by its reason ([`Counters`]).

use alloc::vec;
use alloc::vec::Vec;

/// A source address (an IPv4 address as a big-endian `u32`).
pub type Source = u32;

/// The limits of one listener.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// SYN to established.
    pub handshake_ms: u64,
    /// First byte of a frame to its last, before the extension for its size.
    pub read_deadline_ms: u64,
    /// Each this many bytes of a frame received extend its read deadline by 1 s.
    pub read_bytes_per_s: u64,
    /// No frame in progress and no reply owed, for this long: closed.
    pub idle_ms: u64,
    /// A request unanswered for this long: closed.
    pub reply_wait_ms: u64,
    /// Slots one source may hold while slots are scarce.
    pub per_source: usize,
    /// Slots kept free for sources holding fewer than `per_source`.
    pub reserve: usize,
}

/// The management port's limits (8 slots: one source holds at most 6).
pub const MGMT_LIMITS: Limits = Limits {
    handshake_ms: 2_000,
    read_deadline_ms: 2_000,
    read_bytes_per_s: 32 * 1024,
    idle_ms: 10_000,
    reply_wait_ms: 30_000,
    per_source: 4,
    reserve: 2,
};

/// Why a connection was closed (or refused).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not established within the handshake deadline.
    Handshake,
    /// A frame did not complete within its read deadline.
    ReadDeadline,
    /// Idle too long.
    Idle,
    /// A request was not answered in time.
    ReplyWait,
    /// Its source holds its share and slots are scarce.
    SourceShare,
    /// Evicted so a waiting client finds a free slot.
    Evicted,
}

/// Closes by reason.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub handshake: u64,
    pub read_deadline: u64,
    pub idle: u64,
    pub reply_wait: u64,
    pub source_share: u64,
    pub evicted: u64,
}

impl Counters {
    fn count(&mut self, r: Reason) {
        let c = match r {
            Reason::Handshake => &mut self.handshake,
            Reason::ReadDeadline => &mut self.read_deadline,
            Reason::Idle => &mut self.idle,
            Reason::ReplyWait => &mut self.reply_wait,
            Reason::SourceShare => &mut self.source_share,
            Reason::Evicted => &mut self.evicted,
        };
        *c += 1;
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Open {
    source: Source,
    opened_ms: u64,
    established: bool,
    /// Last progress: opened, established, a complete frame, a reply sent.
    since_ms: u64,
    /// The frame in progress: (first byte at, bytes of it received).
    frame: Option<(u64, u64)>,
    /// Requests handed on and not answered yet.
    owed: u32,
    /// When the oldest unanswered request was handed on.
    owed_since_ms: u64,
}

impl Open {
    fn evictable(&self) -> bool {
        self.owed == 0
    }

    /// The time eviction orders by: the start of what it is waiting for.
    fn age_from(&self) -> u64 {
        match self.frame {
            Some((started, _)) => started.min(self.since_ms),
            None => self.since_ms,
        }
    }
}

/// The slots of one listener.
#[derive(Clone, Debug)]
pub struct Admission {
    limits: Limits,
    slots: Vec<Option<Open>>,
    pub counters: Counters,
}

impl Admission {
    /// `slots` free slots under `limits`.
    pub fn new(slots: usize, limits: Limits) -> Admission {
        Admission {
            limits,
            slots: vec![None; slots],
            counters: Counters::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Slots in all.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Slots held by a connection.
    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn free(&self) -> usize {
        self.slots.len() - self.busy()
    }

    /// Whether slot `k` holds a connection.
    pub fn is_open(&self, k: usize) -> bool {
        self.slots.get(k).is_some_and(|s| s.is_some())
    }

    fn held_by(&self, source: Source) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|o| o.source == source)
            .count()
    }

    fn close(&mut self, k: usize, r: Reason, out: &mut Vec<(usize, Reason)>) {
        if let Some(s) = self.slots.get_mut(k)
            && s.take().is_some()
        {
            self.counters.count(r);
            out.push((k, r));
        }
    }

    /// A connection from `source` arrived on slot `k` (it left the listening state).
    /// Returns the slots to close: `k` itself when it is refused, or another
    /// connection of the same source that makes room for it.
    pub fn opened(&mut self, k: usize, source: Source, now_ms: u64) -> Vec<(usize, Reason)> {
        let mut out = Vec::new();
        if k >= self.slots.len() {
            return out;
        }
        self.slots[k] = Some(Open {
            source,
            opened_ms: now_ms,
            established: false,
            since_ms: now_ms,
            frame: None,
            owed: 0,
            owed_since_ms: now_ms,
        });
        let l = self.limits;
        if self.held_by(source) > l.per_source && self.free() < l.reserve {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(j, s)| s.as_ref().map(|o| (j, o)))
                .filter(|(j, o)| *j != k && o.source == source && o.evictable())
                .min_by_key(|(j, o)| (o.age_from(), *j))
                .map(|(j, _)| j);
            self.close(victim.unwrap_or(k), Reason::SourceShare, &mut out);
        }
        out
    }

    /// Slot `k`'s handshake completed.
    pub fn established(&mut self, k: usize, now_ms: u64) {
        if let Some(Some(o)) = self.slots.get_mut(k)
            && !o.established
        {
            o.established = true;
            o.since_ms = now_ms;
        }
    }

    /// Slot `k` received `bytes`, which completed `frames` frames and leave
    /// `buffered` bytes of an incomplete one.
    pub fn received(&mut self, k: usize, bytes: usize, frames: u64, buffered: usize, now_ms: u64) {
        let Some(Some(o)) = self.slots.get_mut(k) else {
            return;
        };
        if frames > 0 {
            o.since_ms = now_ms;
        }
        o.frame = match o.frame {
            _ if buffered == 0 => None,
            Some((started, got)) if frames == 0 => Some((started, got + bytes as u64)),
            // A new frame began in these bytes.
            _ => Some((now_ms, buffered as u64)),
        };
    }

    /// Slot `k` handed a request on; a reply is owed.
    pub fn request(&mut self, k: usize, now_ms: u64) {
        if let Some(Some(o)) = self.slots.get_mut(k) {
            if o.owed == 0 {
                o.owed_since_ms = now_ms;
            }
            o.owed = o.owed.saturating_add(1);
        }
    }

    /// A reply went out on slot `k` (or was given up).
    pub fn replied(&mut self, k: usize, now_ms: u64) {
        if let Some(Some(o)) = self.slots.get_mut(k) {
            o.owed = o.owed.saturating_sub(1);
            o.owed_since_ms = now_ms;
            o.since_ms = now_ms;
        }
    }

    /// Slot `k` closed (for any reason) and listens again.
    pub fn closed(&mut self, k: usize) {
        if let Some(s) = self.slots.get_mut(k) {
            *s = None;
        }
    }

    /// Deadlines at `now_ms`, then the free-slot rule. Returns the slots to close.
    pub fn check(&mut self, now_ms: u64) -> Vec<(usize, Reason)> {
        let l = self.limits;
        let mut out = Vec::new();
        for k in 0..self.slots.len() {
            let Some(o) = self.slots[k] else { continue };
            let after = |t: u64| now_ms.saturating_sub(t);
            let why = if !o.established {
                (after(o.opened_ms) > l.handshake_ms).then_some(Reason::Handshake)
            } else if let Some((started, got)) = o.frame
                && after(started) > l.read_deadline_ms + got * 1000 / l.read_bytes_per_s.max(1)
            {
                Some(Reason::ReadDeadline)
            } else if o.owed > 0 {
                (after(o.owed_since_ms) > l.reply_wait_ms).then_some(Reason::ReplyWait)
            } else if o.frame.is_none() {
                (after(o.since_ms) > l.idle_ms).then_some(Reason::Idle)
            } else {
                None
            };
            if let Some(r) = why {
                self.close(k, r, &mut out);
            }
        }
        if self.free() == 0 {
            let held: Vec<usize> = self
                .slots
                .iter()
                .map(|s| s.map_or(0, |o| self.held_by(o.source)))
                .collect();
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(j, s)| s.as_ref().map(|o| (j, o)))
                .filter(|(_, o)| o.evictable())
                .min_by_key(|(j, o)| (core::cmp::Reverse(held[*j]), o.age_from(), *j))
                .map(|(j, _)| j);
            if let Some(j) = victim {
                self.close(j, Reason::Evicted, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Source = 0x0a00_0202;
    const B: Source = 0x0a00_0203;
    const C: Source = 0x0a00_0204;

    fn open(a: &mut Admission, k: usize, s: Source, t: u64) -> Vec<(usize, Reason)> {
        let r = a.opened(k, s, t);
        if a.is_open(k) {
            a.established(k, t);
        }
        r
    }

    #[test]
    fn a_trickle_is_closed_at_the_read_deadline_and_a_large_frame_gets_time() {
        let mut a = Admission::new(8, MGMT_LIMITS);
        open(&mut a, 0, A, 0);
        open(&mut a, 1, A, 0);
        // Slot 0: one byte a second. Slot 1: 64 KiB at once, then the rest later.
        for t in 0..=2 {
            a.received(0, 1, 0, t as usize + 1, t * 1000);
        }
        a.received(1, 65_536, 0, 65_536, 0);
        assert!(a.check(2_000).is_empty());
        assert_eq!(a.check(2_001), vec![(0, Reason::ReadDeadline)]);
        // 64 KiB bought slot 1 two more seconds.
        assert!(a.check(4_000).is_empty());
        a.received(1, 100, 1, 0, 3_999);
        assert!(a.check(6_000).is_empty());
        assert_eq!(a.counters.read_deadline, 1);
    }

    #[test]
    fn idle_handshake_and_reply_deadlines() {
        let mut a = Admission::new(8, MGMT_LIMITS);
        a.opened(0, A, 0); // never established
        open(&mut a, 1, A, 0); // sends nothing
        open(&mut a, 2, A, 0); // asks and is never answered
        a.received(2, 50, 1, 0, 10);
        a.request(2, 10);
        open(&mut a, 3, A, 0); // asks and is answered, then idles
        a.received(3, 50, 1, 0, 10);
        a.request(3, 10);
        a.replied(3, 5_000);
        assert_eq!(a.check(2_001), vec![(0, Reason::Handshake)]);
        assert_eq!(a.check(10_001), vec![(1, Reason::Idle)]);
        assert_eq!(a.check(15_001), vec![(3, Reason::Idle)]);
        assert_eq!(a.check(30_011), vec![(2, Reason::ReplyWait)]);
        assert_eq!(a.busy(), 0);
    }

    #[test]
    fn one_source_holds_at_most_slots_minus_reserve_and_replaces_its_oldest() {
        let mut a = Admission::new(8, MGMT_LIMITS);
        for k in 0..6 {
            assert!(open(&mut a, k, A, k as u64).is_empty());
        }
        // The 7th from the same source replaces its oldest idle connection.
        assert_eq!(open(&mut a, 6, A, 10), vec![(0, Reason::SourceShare)]);
        assert_eq!(a.busy(), 6);
        // When all of its connections owe a reply, a newcomer of that source is refused.
        for k in 1..=6 {
            a.received(k, 10, 1, 0, 20);
            a.request(k, 20);
        }
        assert_eq!(open(&mut a, 0, A, 30), vec![(0, Reason::SourceShare)]);
        // Another source still gets the two reserved slots.
        assert!(open(&mut a, 0, B, 40).is_empty());
        assert!(open(&mut a, 7, C, 40).is_empty());
        assert_eq!(a.busy(), 8);
        assert_eq!(a.counters.source_share, 2);
    }

    /// A provisioned larger port (`mgmt=24,20` on the kernel command line, for a load
    /// generator whose clients all share one address) still keeps the reserve for
    /// other sources.
    #[test]
    fn a_larger_share_still_keeps_the_reserve_for_others() {
        let limits = Limits {
            per_source: 20,
            ..MGMT_LIMITS
        };
        let mut a = Admission::new(24, limits);
        assert_eq!(a.slots(), 24);
        for k in 0..22 {
            assert!(open(&mut a, k, A, k as u64).is_empty(), "slot {k}");
            a.received(k, 10, 1, 0, 30);
            a.request(k, 30);
        }
        // Every one of A's 22 owes a reply: a 23rd from A is refused...
        assert_eq!(open(&mut a, 22, A, 40), vec![(22, Reason::SourceShare)]);
        // ...and other sources still get the two reserved slots.
        assert!(open(&mut a, 22, B, 50).is_empty());
        assert!(open(&mut a, 23, C, 50).is_empty());
        assert_eq!(a.busy(), 24);
    }

    #[test]
    fn the_last_free_slot_is_remade_from_the_biggest_holder_oldest_first() {
        let mut a = Admission::new(8, MGMT_LIMITS);
        // Source A: 4 slow connections (incomplete frames); source B: 3.
        for k in 0..4 {
            open(&mut a, k, A, 100 + k as u64);
            a.received(k, 3, 0, 3, 200 + k as u64);
        }
        for k in 4..7 {
            open(&mut a, k, B, 50);
        }
        assert!(a.check(300).is_empty());
        // C takes the last free slot: A (the biggest holder) loses its oldest.
        open(&mut a, 7, C, 400);
        assert_eq!(a.check(400), vec![(0, Reason::Evicted)]);
        assert_eq!(a.free(), 1);
    }

    #[test]
    fn connections_owed_a_reply_are_never_evicted() {
        let mut a = Admission::new(2, MGMT_LIMITS);
        open(&mut a, 0, A, 0);
        a.received(0, 10, 1, 0, 0);
        a.request(0, 0);
        open(&mut a, 1, B, 10);
        assert_eq!(a.check(20), vec![(1, Reason::Evicted)]);
        a.request(0, 20);
        open(&mut a, 1, B, 30);
        a.received(1, 10, 1, 0, 30);
        a.request(1, 30);
        assert!(a.check(40).is_empty(), "both owe replies: nothing to evict");
    }

    #[test]
    fn eight_slow_clients_from_one_address_never_keep_a_ninth_out() {
        // QEMU user networking: everyone is 10.0.2.2. Eight attackers reconnect as soon
        // as they are closed; a legitimate client arrives and completes its frame.
        let mut a = Admission::new(8, MGMT_LIMITS);
        let mut t = 0;
        for round in 0..20 {
            for k in 0..8 {
                if !a.is_open(k) {
                    open(&mut a, k, A, t);
                    a.received(k, 1, 0, 1 + round, t);
                }
                for (j, _) in a.check(t) {
                    assert!(!a.is_open(j));
                }
                t += 1;
            }
            assert!(a.free() >= 1, "round {round}: no slot for a newcomer");
        }
        let k = (0..8).find(|&k| !a.is_open(k)).unwrap();
        open(&mut a, k, A, t);
        a.received(k, 200, 1, 0, t);
        a.request(k, t);
        assert!(a.is_open(k), "the legitimate client was refused");
        for _ in 0..50 {
            t += 1;
            for j in 0..8 {
                if !a.is_open(j) {
                    open(&mut a, j, A, t);
                }
            }
            a.check(t);
            assert!(a.is_open(k), "the legitimate client was evicted");
        }
    }
}
