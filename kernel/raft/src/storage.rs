//! Durable state behind a trait: hard state, log, snapshot.
//!
//! Contract: every write method returns only once its effect is durable (the kernel
//! writes a persistent memory region synchronously; `MemStorage` is the durable
//! medium of the simulator, which keeps it across simulated crashes). The node
//! performs all writes a batch of outgoing messages depends on *before* it hands
//! those messages out, so nothing is acknowledged before it is durable.
//!
//! Log layout: entries `first_index()..=last_index()` are held; the entry before the
//! first (`first_index() - 1`, the compaction point) has a known term. The snapshot
//! covers a prefix through `snapshot().meta.index >= first_index() - 1`.

use crate::types::{ConfState, Entry, HardState, LogIndex, Snapshot, Term};
use alloc::vec::Vec;
use core::fmt;

/// A failed read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The index is below the compaction point.
    Compacted,
    /// The index is above the last entry.
    Unavailable,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Compacted => write!(f, "log index compacted into a snapshot"),
            StorageError::Unavailable => write!(f, "log index beyond the last entry"),
        }
    }
}

pub trait Storage {
    fn hard_state(&self) -> HardState;
    fn set_hard_state(&mut self, hs: HardState);
    /// Index of the first held entry (compaction point + 1).
    fn first_index(&self) -> LogIndex;
    /// Index of the last entry (the compaction point if the log is empty).
    fn last_index(&self) -> LogIndex;
    /// Term of the entry at `index`, for `first_index()-1 ..= last_index()`.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    /// Entries `lo..hi`, at most `max` of them.
    fn entries(&self, lo: LogIndex, hi: LogIndex, max: usize) -> Result<Vec<Entry>, StorageError>;
    /// Appends `entries` (consecutive, `entries[0].index` in `first_index()..=last_index()+1`),
    /// discarding every held entry at or after `entries[0].index` first.
    fn append(&mut self, entries: &[Entry]);
    fn snapshot(&self) -> &Snapshot;
    /// Stores a snapshot received from the leader and discards the whole log; the
    /// compaction point becomes the snapshot's (index, term).
    fn install_snapshot(&mut self, snap: Snapshot);
    /// Stores a snapshot taken locally from the applied state; the log is untouched.
    fn save_snapshot(&mut self, snap: Snapshot);
    /// Discards entries through `index` (≤ the snapshot index).
    fn compact(&mut self, index: LogIndex);
    /// The membership a fresh node starts with, from its bootstrap record.
    fn initial_conf(&self) -> ConfState {
        self.snapshot().meta.conf.clone()
    }
}

/// Bounded in-memory storage for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hs: HardState,
    snap: Snapshot,
    /// (index, term) of the entry before `log[0]`.
    prev_index: LogIndex,
    prev_term: Term,
    log: Vec<Entry>,
    /// Lowest index written since the last `take_dirty_from` (simulator checks).
    dirty_from: Option<LogIndex>,
}

impl MemStorage {
    /// Storage of a node that bootstraps the cluster with `voters` (or joins later
    /// with an empty configuration when `voters` is empty).
    pub fn new_with_voters(voters: &[crate::NodeId]) -> Self {
        let mut s = MemStorage::default();
        if !voters.is_empty() {
            s.install_snapshot(Snapshot::bootstrap(voters));
            s.dirty_from = None;
        }
        s
    }
    /// Lowest log index rewritten since the last call (for incremental checks).
    pub fn take_dirty_from(&mut self) -> Option<LogIndex> {
        self.dirty_from.take()
    }
    fn mark_dirty(&mut self, i: LogIndex) {
        self.dirty_from = Some(self.dirty_from.map_or(i, |d| d.min(i)));
    }
    /// Number of held entries.
    pub fn len(&self) -> usize {
        self.log.len()
    }
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
    /// The held entry at `index`, if any.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.prev_index {
            return None;
        }
        self.log.get((index - self.prev_index - 1) as usize)
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hs
    }
    fn set_hard_state(&mut self, hs: HardState) {
        self.hs = hs;
    }
    fn first_index(&self) -> LogIndex {
        self.prev_index + 1
    }
    fn last_index(&self) -> LogIndex {
        self.prev_index + self.log.len() as u64
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index < self.prev_index {
            return Err(StorageError::Compacted);
        }
        if index == self.prev_index {
            return Ok(self.prev_term);
        }
        match self.entry(index) {
            Some(e) => Ok(e.term),
            None => Err(StorageError::Unavailable),
        }
    }
    fn entries(&self, lo: LogIndex, hi: LogIndex, max: usize) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.prev_index {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let a = (lo - self.prev_index - 1) as usize;
        let b = ((hi - self.prev_index - 1) as usize).min(a.saturating_add(max));
        Ok(self.log[a..b.max(a)].to_vec())
    }
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.prev_index,
            "append below the compaction point"
        );
        assert!(first.index <= self.last_index() + 1, "append leaves a gap");
        let keep = (first.index - self.prev_index - 1) as usize;
        self.log.truncate(keep);
        self.log.extend_from_slice(entries);
        self.mark_dirty(first.index);
    }
    fn snapshot(&self) -> &Snapshot {
        &self.snap
    }
    fn install_snapshot(&mut self, snap: Snapshot) {
        self.prev_index = snap.meta.index;
        self.prev_term = snap.meta.term;
        self.log.clear();
        self.mark_dirty(snap.meta.index);
        self.snap = snap;
    }
    fn save_snapshot(&mut self, snap: Snapshot) {
        assert!(
            snap.meta.index <= self.last_index(),
            "snapshot beyond the log"
        );
        self.snap = snap;
    }
    fn compact(&mut self, index: LogIndex) {
        assert!(
            index <= self.snap.meta.index,
            "compaction past the snapshot"
        );
        if index <= self.prev_index {
            return;
        }
        let term = self.term(index).unwrap_or(self.snap.meta.term);
        let n = ((index - self.prev_index) as usize).min(self.log.len());
        self.log.drain(..n);
        self.prev_index = index;
        self.prev_term = term;
    }
}
