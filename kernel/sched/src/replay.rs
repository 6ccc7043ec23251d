//! The hash-linked replay log.
//!
//! Owns: the sequence of [`CoreEvent`]s a node's scheduler produced, each with its
//! entry hash, and the byte format the log is stored and shipped in.
//!
//! Chain: `entry_hash[i] = SHA-256(prev || postcard(event[i]))` with
//! `prev = entry_hash[i-1]`, and for `i = 0`, `prev = GENESIS =
//! SHA-256("xdv/sched/replay-log/v1/genesis")`. The head hash of an empty log is
//! GENESIS. Any edit, insertion, deletion or reordering of entries breaks the link
//! at the first touched entry, which [`ReplayLog::verify`] reports by index.
//! Removing entries from the tail leaves a shorter valid chain; that is caught by
//! [`ReplayLog::verify_anchored`] against a published (head hash, length).
//!
//! Byte format (all integers little-endian):
//!
//! ```text
//! magic   8 bytes  "XDVRLOG1"
//! count   u32      number of entries (<= MAX_LOG_ENTRIES)
//! entry*  count times:
//!   len     u32      payload length (1..=MAX_EVENT_BYTES)
//!   payload len      postcard(CoreEvent)
//!   hash    32 bytes entry hash, over the payload bytes exactly as stored
//! ```
//!
//! Every single-byte corruption is rejected by [`ReplayLog::from_bytes`]: magic and
//! count are checked directly, a changed payload or stored hash breaks the entry's
//! hash, and a changed length shifts the framing so that the hash read from the new
//! position cannot match (short of a SHA-256 collision) or the bytes run out / are
//! left over. The error carries the byte offset of the damaged field or entry.
//!
//! Comparison ([`compare_replays`]):
//! - `ExactMatch`: the same events with the same stamps in the same order (hence the
//!   same head hash).
//! - `MinorDifference`: not an exact match, but (1) the same multiset of per-task
//!   outcome records — for every task id the same list of (outcome kind, ticks,
//!   output hash / missing capability / trap reason) — (2) the same multiset of
//!   enqueued task ids, and (3) the same `StateChange`/`ExternalInput` events in the
//!   same relative order. Only core assignment, Lamport stamps and the interleaving
//!   of task events between cores differ. This is what two runs of one task set on
//!   different core counts produce.
//! - `Diverged { first_index, reason }`: anything else. `first_index` is the first
//!   entry index at which the logs differ; `reason` names what makes the difference
//!   more than minor.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use xdv_types::{CapabilityId, CoreId, CoreStamp, Hash32, TaskId, Timestamp};

use crate::task::{TrapReason, sha256_parts};

/// Most entries one log holds (a limit on memory and on decoded counts).
pub const MAX_LOG_ENTRIES: usize = 1 << 24;
/// Largest encoded event, in bytes.
pub const MAX_EVENT_BYTES: usize = 256;
/// Magic at the start of a serialised log.
pub const LOG_MAGIC: [u8; 8] = *b"XDVRLOG1";
/// Domain-separation text hashed to make the genesis link.
pub const GENESIS_DOMAIN: &[u8] = b"xdv/sched/replay-log/v1/genesis";

const HEADER_BYTES: usize = LOG_MAGIC.len() + 4;
const MIN_ENTRY_BYTES: usize = 4 + 1 + 32;

/// One decision or input of the scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayEvent {
    /// `task` was assigned to `core` with submit timestamp `stamp`.
    TaskEnqueued {
        task: TaskId,
        core: CoreId,
        stamp: Timestamp,
    },
    TaskExecuted {
        task: TaskId,
        ticks: u64,
        output_hash: Hash32,
    },
    /// The core lacked `missing` (the first guard, in guard order, not granted).
    GuardDenied {
        task: TaskId,
        missing: CapabilityId,
    },
    /// The task was stopped after `ticks` (= its budget).
    BudgetExceeded {
        task: TaskId,
        ticks: u64,
    },
    Trapped {
        task: TaskId,
        ticks: u64,
        reason: TrapReason,
    },
    StateChange {
        state_hash: Hash32,
    },
    /// Something non-deterministic entered the system; its content is hashed.
    ExternalInput {
        input_hash: Hash32,
    },
}

impl ReplayEvent {
    /// The task this event is about, if any.
    pub fn task(&self) -> Option<TaskId> {
        match self {
            ReplayEvent::TaskEnqueued { task, .. }
            | ReplayEvent::TaskExecuted { task, .. }
            | ReplayEvent::GuardDenied { task, .. }
            | ReplayEvent::BudgetExceeded { task, .. }
            | ReplayEvent::Trapped { task, .. } => Some(*task),
            ReplayEvent::StateChange { .. } | ReplayEvent::ExternalInput { .. } => None,
        }
    }

    /// True for the events that end a task (its outcome).
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            ReplayEvent::TaskExecuted { .. }
                | ReplayEvent::GuardDenied { .. }
                | ReplayEvent::BudgetExceeded { .. }
                | ReplayEvent::Trapped { .. }
        )
    }
}

/// An event with its position in the node's total order: (Lamport time, core id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreEvent {
    pub stamp: CoreStamp,
    pub event: ReplayEvent,
}

/// One log entry: the event and its chained hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub event: CoreEvent,
    pub hash: Hash32,
}

/// The chain's first `prev` link (and the head of an empty log).
pub fn genesis_hash() -> Hash32 {
    sha256_parts(&[GENESIS_DOMAIN])
}

/// The hash linking `payload` (an encoded event) after `prev`.
pub fn link_hash(prev: &Hash32, payload: &[u8]) -> Hash32 {
    sha256_parts(&[&prev.0, payload])
}

/// Why `append` refused an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The log holds [`MAX_LOG_ENTRIES`].
    LogFull,
    /// The event encodes to more than [`MAX_EVENT_BYTES`] (cannot happen for
    /// events built from bounded fields; checked anyway).
    EventTooLarge,
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::LogFull => write!(f, "replay log full ({MAX_LOG_ENTRIES} entries)"),
            AppendError::EventTooLarge => write!(f, "event over {MAX_EVENT_BYTES} bytes"),
        }
    }
}

/// What [`ReplayLog::verify`] found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogErrorKind {
    /// The stored hash is not the link of this event after the previous entry.
    HashMismatch { stored: Hash32, computed: Hash32 },
    /// The event cannot be encoded within [`MAX_EVENT_BYTES`].
    Unencodable,
    /// `verify_anchored`: the log has a different length than published.
    LengthMismatch { expected: usize, found: usize },
    /// `verify_anchored`: the chain is valid but ends at another head.
    HeadMismatch { expected: Hash32, found: Hash32 },
}

/// A log failed verification at entry `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogError {
    pub index: usize,
    pub kind: LogErrorKind,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            LogErrorKind::HashMismatch { stored, computed } => write!(
                f,
                "entry {}: stored hash {} != computed {}",
                self.index,
                stored.short(),
                computed.short()
            ),
            LogErrorKind::Unencodable => write!(f, "entry {}: event not encodable", self.index),
            LogErrorKind::LengthMismatch { expected, found } => {
                write!(f, "log has {found} entries, {expected} were published")
            }
            LogErrorKind::HeadMismatch { expected, found } => {
                write!(
                    f,
                    "head {} != published {}",
                    found.short(),
                    expected.short()
                )
            }
        }
    }
}

/// What [`ReplayLog::from_bytes`] rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    BadMagic,
    /// The entry count exceeds [`MAX_LOG_ENTRIES`] or what the bytes can hold.
    BadCount {
        count: u32,
    },
    /// The bytes end inside a field.
    Truncated,
    /// A payload length is 0 or over [`MAX_EVENT_BYTES`] or past the end.
    BadLength {
        len: u32,
    },
    /// The payload is not a valid encoded event.
    BadEvent,
    /// The entry's stored hash does not match its chain link.
    HashMismatch,
    /// The bytes hold a whole number of valid entries, but not `count` of them:
    /// either the count field or the end of the log is damaged (reported at the
    /// count field, offset 8).
    CountMismatch {
        count: u32,
    },
}

/// A serialised log is damaged at byte `offset` (entry `index`, if inside one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub index: Option<usize>,
    pub kind: DecodeErrorKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replay log damaged at byte {}", self.offset)?;
        if let Some(i) = self.index {
            write!(f, " (entry {i})")?;
        }
        match self.kind {
            DecodeErrorKind::BadMagic => write!(f, ": bad magic"),
            DecodeErrorKind::BadCount { count } => write!(f, ": impossible entry count {count}"),
            DecodeErrorKind::Truncated => write!(f, ": truncated"),
            DecodeErrorKind::BadLength { len } => write!(f, ": bad entry length {len}"),
            DecodeErrorKind::BadEvent => write!(f, ": undecodable event"),
            DecodeErrorKind::HashMismatch => write!(f, ": entry hash does not match chain"),
            DecodeErrorKind::CountMismatch { count } => {
                write!(
                    f,
                    ": count says {count} entries, the bytes hold another number"
                )
            }
        }
    }
}

/// An append-only, hash-linked sequence of [`CoreEvent`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayLog {
    entries: Vec<LogEntry>,
}

impl ReplayLog {
    pub fn new() -> Self {
        ReplayLog {
            entries: Vec::new(),
        }
    }

    /// A log from entries read back from storage, not yet checked: call
    /// [`verify`](Self::verify) (or `verify_anchored`) before trusting it.
    pub fn from_entries_unverified(entries: Vec<LogEntry>) -> Self {
        ReplayLog { entries }
    }

    /// Appends `event`, returning its entry hash (the new head).
    pub fn append(&mut self, event: CoreEvent) -> Result<Hash32, AppendError> {
        if self.entries.len() >= MAX_LOG_ENTRIES {
            return Err(AppendError::LogFull);
        }
        let payload = encode_event(&event).ok_or(AppendError::EventTooLarge)?;
        let hash = link_hash(&self.head_hash(), &payload);
        self.entries.push(LogEntry { event, hash });
        Ok(hash)
    }

    /// The last entry's hash, or [`genesis_hash`] when empty.
    pub fn head_hash(&self) -> Hash32 {
        self.entries.last().map_or_else(genesis_hash, |e| e.hash)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[LogEntry] {
        &self.entries
    }

    /// The events, in log order.
    pub fn events(&self) -> impl Iterator<Item = &CoreEvent> {
        self.entries.iter().map(|e| &e.event)
    }

    /// Recomputes the chain from genesis; the first broken link is the error.
    pub fn verify(&self) -> Result<(), LogError> {
        let mut prev = genesis_hash();
        for (index, e) in self.entries.iter().enumerate() {
            let payload = encode_event(&e.event).ok_or(LogError {
                index,
                kind: LogErrorKind::Unencodable,
            })?;
            let computed = link_hash(&prev, &payload);
            if computed != e.hash {
                return Err(LogError {
                    index,
                    kind: LogErrorKind::HashMismatch {
                        stored: e.hash,
                        computed,
                    },
                });
            }
            prev = computed;
        }
        Ok(())
    }

    /// [`verify`](Self::verify), then checks length and head against published values
    /// (this also catches entries cut off the tail).
    pub fn verify_anchored(
        &self,
        expected_len: usize,
        expected_head: Hash32,
    ) -> Result<(), LogError> {
        self.verify()?;
        if self.len() != expected_len {
            let kind = LogErrorKind::LengthMismatch {
                expected: expected_len,
                found: self.len(),
            };
            return Err(LogError {
                index: self.len().min(expected_len),
                kind,
            });
        }
        if self.head_hash() != expected_head {
            let kind = LogErrorKind::HeadMismatch {
                expected: expected_head,
                found: self.head_hash(),
            };
            return Err(LogError {
                index: self.len().saturating_sub(1),
                kind,
            });
        }
        Ok(())
    }

    /// Serialises the log in the format of the module docs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.entries.len() * 64);
        out.extend_from_slice(&LOG_MAGIC);
        // len() <= MAX_LOG_ENTRIES < u32::MAX, enforced by append.
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            // Every appended event encoded once already; a log built with
            // `from_entries_unverified` may hold an unencodable one: write it empty,
            // so from_bytes rejects it.
            let payload = encode_event(&e.event).unwrap_or_default();
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(&e.hash.0);
        }
        out
    }

    /// Parses and verifies a serialised log; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<ReplayLog, DecodeError> {
        let err = |offset, index, kind| DecodeError {
            offset,
            index,
            kind,
        };
        if bytes.len() < LOG_MAGIC.len() || bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
            return Err(err(0, None, DecodeErrorKind::BadMagic));
        }
        let count = read_u32(bytes, LOG_MAGIC.len()).ok_or(err(
            LOG_MAGIC.len(),
            None,
            DecodeErrorKind::Truncated,
        ))?;
        let room = bytes.len().saturating_sub(HEADER_BYTES) / MIN_ENTRY_BYTES;
        if count as usize > MAX_LOG_ENTRIES || count as usize > room {
            return Err(err(
                LOG_MAGIC.len(),
                None,
                DecodeErrorKind::BadCount { count },
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut prev = genesis_hash();
        let mut pos = HEADER_BYTES;
        for index in 0..count as usize {
            let start = pos;
            if pos == bytes.len() {
                let kind = DecodeErrorKind::CountMismatch { count };
                return Err(err(LOG_MAGIC.len(), None, kind));
            }
            let len =
                read_u32(bytes, pos).ok_or(err(pos, Some(index), DecodeErrorKind::Truncated))?;
            let body = pos + 4;
            let len_ok = (1..=MAX_EVENT_BYTES).contains(&(len as usize));
            if !len_ok || bytes.len() - body < len as usize + 32 {
                return Err(err(pos, Some(index), DecodeErrorKind::BadLength { len }));
            }
            let payload = &bytes[body..body + len as usize];
            let mut stored = [0u8; 32];
            stored.copy_from_slice(&bytes[body + len as usize..body + len as usize + 32]);
            let computed = link_hash(&prev, payload);
            if computed.0 != stored {
                return Err(err(start, Some(index), DecodeErrorKind::HashMismatch));
            }
            let event = match postcard::take_from_bytes::<CoreEvent>(payload) {
                Ok((event, [])) => event,
                _ => return Err(err(body, Some(index), DecodeErrorKind::BadEvent)),
            };
            entries.push(LogEntry {
                event,
                hash: computed,
            });
            prev = computed;
            pos = body + len as usize + 32;
        }
        if pos != bytes.len() {
            // More bytes than `count` entries: the count or the tail is damaged.
            let kind = DecodeErrorKind::CountMismatch { count };
            return Err(err(LOG_MAGIC.len(), None, kind));
        }
        Ok(ReplayLog { entries })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn encode_event(event: &CoreEvent) -> Option<Vec<u8>> {
    let payload = postcard::to_allocvec(event).ok()?;
    (payload.len() <= MAX_EVENT_BYTES).then_some(payload)
}

/// Result of [`compare_replays`]; see the module docs for the exact definitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayComparison {
    ExactMatch,
    MinorDifference,
    Diverged {
        first_index: usize,
        reason: DivergenceReason,
    },
}

/// Why two logs are more than minorly different.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DivergenceReason {
    /// The lowest task id whose outcome records differ (or exist in one log only).
    TaskOutcome { task: TaskId },
    /// The lowest task id enqueued a different number of times.
    TaskEnqueued { task: TaskId },
    /// The `StateChange`/`ExternalInput` sequences differ.
    StateOrInput,
}

/// An outcome record, without where and when it happened.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OutcomeRecord {
    Executed { ticks: u64, output_hash: Hash32 },
    Denied { missing: CapabilityId },
    Exceeded { ticks: u64 },
    Trapped { ticks: u64, reason: TrapReason },
}

#[derive(Default)]
struct Summary {
    outcomes: BTreeMap<TaskId, Vec<OutcomeRecord>>,
    enqueued: BTreeMap<TaskId, usize>,
    others: Vec<ReplayEvent>,
}

fn summarise(log: &ReplayLog) -> Summary {
    let mut s = Summary::default();
    for e in log.events() {
        let rec = match &e.event {
            ReplayEvent::TaskEnqueued { task, .. } => {
                *s.enqueued.entry(*task).or_insert(0) += 1;
                continue;
            }
            ReplayEvent::TaskExecuted {
                task,
                ticks,
                output_hash,
            } => (
                *task,
                OutcomeRecord::Executed {
                    ticks: *ticks,
                    output_hash: *output_hash,
                },
            ),
            ReplayEvent::GuardDenied { task, missing } => {
                (*task, OutcomeRecord::Denied { missing: *missing })
            }
            ReplayEvent::BudgetExceeded { task, ticks } => {
                (*task, OutcomeRecord::Exceeded { ticks: *ticks })
            }
            ReplayEvent::Trapped {
                task,
                ticks,
                reason,
            } => (
                *task,
                OutcomeRecord::Trapped {
                    ticks: *ticks,
                    reason: reason.clone(),
                },
            ),
            other => {
                s.others.push(other.clone());
                continue;
            }
        };
        s.outcomes.entry(rec.0).or_default().push(rec.1);
    }
    for v in s.outcomes.values_mut() {
        v.sort();
    }
    s
}

/// The lowest key whose values differ between the two maps (or is in one only).
fn first_differing_key<V: PartialEq>(
    a: &BTreeMap<TaskId, V>,
    b: &BTreeMap<TaskId, V>,
) -> Option<TaskId> {
    let in_a = a.iter().find(|(k, v)| b.get(k) != Some(v)).map(|(k, _)| *k);
    let in_b = b.iter().find(|(k, v)| a.get(k) != Some(v)).map(|(k, _)| *k);
    match (in_a, in_b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Compares two logs (assumed verified); see the module docs for the definitions.
pub fn compare_replays(a: &ReplayLog, b: &ReplayLog) -> ReplayComparison {
    let first = a.events().zip(b.events()).position(|(x, y)| x != y);
    let first_index = match first {
        Some(i) => i,
        None if a.len() == b.len() => return ReplayComparison::ExactMatch,
        None => a.len().min(b.len()),
    };
    let (sa, sb) = (summarise(a), summarise(b));
    let reason = if let Some(task) = first_differing_key(&sa.outcomes, &sb.outcomes) {
        DivergenceReason::TaskOutcome { task }
    } else if let Some(task) = first_differing_key(&sa.enqueued, &sb.enqueued) {
        DivergenceReason::TaskEnqueued { task }
    } else if sa.others != sb.others {
        DivergenceReason::StateOrInput
    } else {
        return ReplayComparison::MinorDifference;
    };
    ReplayComparison::Diverged {
        first_index,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn ev(t: u64, core: u16, event: ReplayEvent) -> CoreEvent {
        CoreEvent {
            stamp: CoreStamp {
                time: Timestamp(t),
                core: CoreId(core),
            },
            event,
        }
    }

    fn exec(task: u64, ticks: u64, h: u8) -> ReplayEvent {
        ReplayEvent::TaskExecuted {
            task: TaskId(task),
            ticks,
            output_hash: Hash32([h; 32]),
        }
    }

    fn sample() -> ReplayLog {
        let mut log = ReplayLog::new();
        let events = vec![
            ev(
                1,
                0,
                ReplayEvent::TaskEnqueued {
                    task: TaskId(1),
                    core: CoreId(0),
                    stamp: Timestamp(1),
                },
            ),
            ev(
                2,
                1,
                ReplayEvent::TaskEnqueued {
                    task: TaskId(2),
                    core: CoreId(1),
                    stamp: Timestamp(2),
                },
            ),
            ev(3, 0, exec(1, 10, 0xaa)),
            ev(
                3,
                1,
                ReplayEvent::GuardDenied {
                    task: TaskId(2),
                    missing: CapabilityId(9),
                },
            ),
            ev(
                4,
                0,
                ReplayEvent::BudgetExceeded {
                    task: TaskId(3),
                    ticks: 5,
                },
            ),
            ev(
                5,
                1,
                ReplayEvent::Trapped {
                    task: TaskId(4),
                    ticks: 1,
                    reason: TrapReason::new("trap 1"),
                },
            ),
            ev(
                6,
                0,
                ReplayEvent::StateChange {
                    state_hash: Hash32([1; 32]),
                },
            ),
            ev(
                7,
                0,
                ReplayEvent::ExternalInput {
                    input_hash: Hash32([2; 32]),
                },
            ),
        ];
        for e in events {
            log.append(e).expect("room");
        }
        log
    }

    #[test]
    fn genesis_and_chain() {
        let mut log = ReplayLog::new();
        assert_eq!(log.head_hash(), genesis_hash());
        let e = ev(1, 0, exec(1, 1, 1));
        let h = log.append(e.clone()).expect("room");
        let payload = postcard::to_allocvec(&e).expect("encode");
        assert_eq!(h, link_hash(&genesis_hash(), &payload));
        assert_eq!(log.head_hash(), h);
        assert_eq!(log.len(), 1);
        log.verify().expect("valid");
    }

    #[test]
    fn verify_detects_edit_insert_delete_reorder() {
        let log = sample();
        log.verify().expect("valid");
        let base = log.entries().to_vec();

        let mut edited = base.clone();
        edited[2].event.event = exec(1, 11, 0xaa);
        let e = ReplayLog::from_entries_unverified(edited)
            .verify()
            .expect_err("edit");
        assert_eq!(e.index, 2);

        let mut inserted = base.clone();
        inserted.insert(3, base[3].clone());
        assert_eq!(
            ReplayLog::from_entries_unverified(inserted)
                .verify()
                .expect_err("insert")
                .index,
            4
        );

        let mut deleted = base.clone();
        deleted.remove(1);
        assert_eq!(
            ReplayLog::from_entries_unverified(deleted)
                .verify()
                .expect_err("delete")
                .index,
            1
        );

        let mut reordered = base.clone();
        reordered.swap(4, 5);
        assert_eq!(
            ReplayLog::from_entries_unverified(reordered)
                .verify()
                .expect_err("swap")
                .index,
            4
        );

        let mut cut = base.clone();
        cut.pop();
        let cut = ReplayLog::from_entries_unverified(cut);
        cut.verify().expect("a prefix is a valid chain");
        let err = cut
            .verify_anchored(log.len(), log.head_hash())
            .expect_err("anchored");
        assert!(matches!(err.kind, LogErrorKind::LengthMismatch { .. }));
        log.verify_anchored(log.len(), log.head_hash())
            .expect("anchored ok");
    }

    #[test]
    fn bytes_round_trip() {
        let log = sample();
        let bytes = log.to_bytes();
        let back = ReplayLog::from_bytes(&bytes).expect("decode");
        assert_eq!(back, log);
        assert_eq!(back.head_hash(), log.head_hash());
        let empty = ReplayLog::from_bytes(&ReplayLog::new().to_bytes()).expect("empty");
        assert!(empty.is_empty());
    }

    #[test]
    fn every_single_byte_corruption_is_rejected() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            for x in 1..=255u8 {
                let mut bad = bytes.clone();
                bad[i] ^= x;
                let err = ReplayLog::from_bytes(&bad).expect_err("corruption must be caught");
                assert!(
                    err.offset <= i,
                    "byte {i}: error offset {} after the damage",
                    err.offset
                );
            }
        }
    }

    #[test]
    fn truncation_and_extension_are_rejected() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                ReplayLog::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = ReplayLog::from_bytes(&longer).expect_err("trailing");
        assert_eq!(err.offset, LOG_MAGIC.len());
        assert!(matches!(
            err.kind,
            DecodeErrorKind::CountMismatch { count: 8 }
        ));
    }

    #[test]
    fn decode_error_points_at_damaged_entry() {
        let log = sample();
        let bytes = log.to_bytes();
        // Offset of entry 3: header, then three entries.
        let mut off = HEADER_BYTES;
        for _ in 0..3 {
            let len = read_u32(&bytes, off).expect("len") as usize;
            off += 4 + len + 32;
        }
        let mut bad = bytes.clone();
        bad[off + 5] ^= 0x10;
        let err = ReplayLog::from_bytes(&bad).expect_err("damaged");
        assert_eq!(err.index, Some(3));
        assert_eq!(err.offset, off);
    }

    #[test]
    fn comparison_kinds() {
        let a = sample();
        assert_eq!(
            compare_replays(&a, &a.clone()),
            ReplayComparison::ExactMatch
        );

        // Same outcomes, other interleaving and cores.
        let mut b = ReplayLog::new();
        let mut evs: Vec<CoreEvent> = a.events().cloned().collect();
        evs.swap(2, 3);
        evs[2].stamp.core = CoreId(3);
        for e in evs {
            b.append(e).expect("room");
        }
        assert_eq!(compare_replays(&a, &b), ReplayComparison::MinorDifference);

        // A different output hash diverges, at the first differing index.
        let mut c = ReplayLog::new();
        for (i, e) in a.events().enumerate() {
            let mut e = e.clone();
            if i == 2 {
                e.event = exec(1, 10, 0xbb);
            }
            c.append(e).expect("room");
        }
        assert_eq!(
            compare_replays(&a, &c),
            ReplayComparison::Diverged {
                first_index: 2,
                reason: DivergenceReason::TaskOutcome { task: TaskId(1) }
            }
        );

        // A missing trailing input diverges.
        let mut d = ReplayLog::new();
        for e in a.events().take(a.len() - 1) {
            d.append(e.clone()).expect("room");
        }
        assert_eq!(
            compare_replays(&a, &d),
            ReplayComparison::Diverged {
                first_index: a.len() - 1,
                reason: DivergenceReason::StateOrInput
            }
        );
    }
}
