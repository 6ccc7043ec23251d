//! Identifiers, logical time and hash types shared by every XDV crate.
//!
//! Invariants owned here:
//! - Logical time never comes from a clock: a [`LamportClock`] only advances by
//!   [`LamportClock::tick`] and [`LamportClock::recv`].
//! - Randomness comes only from the seeded [`rng::SplitMix64`], the project's one PRNG.
//! - Event order is total and environment-independent: [`CoreStamp`] orders by
//!   (timestamp, core id) and [`GlobalStamp`] by (timestamp, node id, core id).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod limits;
pub mod rng;

use core::fmt;
use serde::{Deserialize, Serialize};

/// A node of the cluster. Node ids are small, dense and assigned at provisioning.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

/// A core (CPU) of one node, numbered 0.. in boot order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CoreId(pub u16);

/// A task, unique within a cluster.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u64);

/// A tenant of the cluster.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantId(pub u32);

/// A capability id a task's guards name and a core or node grants.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CapabilityId(pub u32);

macro_rules! display_id {
    ($t:ty, $prefix:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}
display_id!(NodeId, "n");
display_id!(CoreId, "c");
display_id!(TaskId, "t");
display_id!(TenantId, "tenant");
display_id!(CapabilityId, "cap");

/// Task priority. Lower discriminant runs first: `High < Normal < Low` in `Ord`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    High = 0,
    Normal = 1,
    Low = 2,
}

impl Priority {
    /// Parses `high`, `normal` or `low` (case-sensitive, as typed on the console).
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "high" => Some(Priority::High),
            "normal" => Some(Priority::Normal),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }

    /// `high`, `normal` or `low`.
    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// A Lamport timestamp. Only meaningful relative to other timestamps.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

/// A Lamport clock: `tick` for a local event, `recv` for a message carrying a
/// remote timestamp (`max(local, remote) + 1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LamportClock {
    now: Timestamp,
}

impl LamportClock {
    pub const fn new() -> Self {
        LamportClock { now: Timestamp(0) }
    }

    /// Starts from a known value (e.g. recovered from a log).
    pub const fn starting_at(t: Timestamp) -> Self {
        LamportClock { now: t }
    }

    /// The current value without advancing.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Advances for a local event and returns the new timestamp.
    ///
    /// Panics if the clock would wrap: 2^64 events cannot happen in a real run, and a
    /// wrapped clock would silently break ordering.
    pub fn tick(&mut self) -> Timestamp {
        self.now = Timestamp(self.now.0.checked_add(1).expect("lamport clock overflow"));
        self.now
    }

    /// Merges a remote timestamp: `max(local, remote) + 1`.
    pub fn recv(&mut self, remote: Timestamp) -> Timestamp {
        let base = self.now.0.max(remote.0);
        self.now = Timestamp(base.checked_add(1).expect("lamport clock overflow"));
        debug_assert!(self.now > remote);
        self.now
    }
}

/// An event position within one node: ordered by timestamp, then core id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CoreStamp {
    pub time: Timestamp,
    pub core: CoreId,
}

/// An event position across the cluster: ordered by timestamp, node id, core id.
/// This is `L_global = (lamport, node_id)` of the design, extended by core id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GlobalStamp {
    pub time: Timestamp,
    pub node: NodeId,
    pub core: CoreId,
}

/// A SHA-256 digest.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// The first 8 bytes as lowercase hex, for one-line displays.
    pub fn short(&self) -> ShortHash<'_> {
        ShortHash(self)
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({self})")
    }
}

/// Display adapter printing the first 8 bytes of a hash.
pub struct ShortHash<'a>(&'a Hash32);

impl fmt::Display for ShortHash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character
/// boundary: how every bounded text field (trap reasons, log lines, audit fields) is cut.
pub fn prefix_within(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_within_cuts_at_a_character_boundary() {
        assert_eq!(prefix_within("abc", 10), "abc");
        assert_eq!(prefix_within("abc", 2), "ab");
        // "é" is 2 bytes: a cut inside it backs off to before it.
        assert_eq!(prefix_within("aé", 2), "a");
        assert_eq!(prefix_within("\u{fffd}\u{fffd}", 5), "\u{fffd}");
        assert_eq!(prefix_within("", 0), "");
    }

    #[test]
    fn lamport_tick_and_recv() {
        let mut c = LamportClock::new();
        assert_eq!(c.tick(), Timestamp(1));
        assert_eq!(c.recv(Timestamp(10)), Timestamp(11));
        assert_eq!(c.recv(Timestamp(3)), Timestamp(12));
        assert_eq!(c.now(), Timestamp(12));
    }

    #[test]
    fn stamps_order_by_time_then_ids() {
        let a = GlobalStamp {
            time: Timestamp(5),
            node: NodeId(2),
            core: CoreId(0),
        };
        let b = GlobalStamp {
            time: Timestamp(5),
            node: NodeId(1),
            core: CoreId(3),
        };
        let c = GlobalStamp {
            time: Timestamp(4),
            node: NodeId(9),
            core: CoreId(9),
        };
        let mut v = [a, b, c];
        v.sort();
        assert_eq!(v, [c, b, a]);
        let x = CoreStamp {
            time: Timestamp(1),
            core: CoreId(1),
        };
        let y = CoreStamp {
            time: Timestamp(1),
            core: CoreId(0),
        };
        assert!(y < x);
    }

    #[test]
    fn priority_order_and_parse() {
        assert!(Priority::High < Priority::Normal && Priority::Normal < Priority::Low);
        assert_eq!(Priority::parse("low"), Some(Priority::Low));
        assert_eq!(Priority::parse("urgent"), None);
    }

    #[test]
    fn hash_display() {
        let mut h = Hash32::ZERO;
        h.0[0] = 0xab;
        assert!(h.to_string().starts_with("ab00"));
        assert_eq!(h.short().to_string(), "ab00000000000000");
    }
}
