//! Consensus configuration (seed 002 `ConsensusConfig`), in logical ticks.
//!
//! Mapping from the seed's wall-clock defaults: one tick is [`TICK_MS`] = 10 ms of
//! the kernel's timer, so 150 ms election timeout = 15 ticks and 50 ms heartbeat =
//! 5 ticks. The node itself never sees milliseconds.

use core::fmt;

/// Milliseconds per logical tick in the kernel's timer mapping.
pub const TICK_MS: u64 = 10;
/// Upper bound for `max_entries_per_append`.
pub const MAX_ENTRIES_PER_APPEND_LIMIT: usize = 65_536;
/// Upper bound for `max_inflight_appends`.
pub const MAX_INFLIGHT_LIMIT: usize = 4096;
/// Upper bound for a snapshot chunk.
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// Upper bound for a snapshot a follower will buffer.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;
/// Upper bound for the election timeout (ticks).
pub const MAX_ELECTION_TIMEOUT_TICKS: u32 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Base election timeout; a node's actual timeout adds its rotation slot
    /// (see `RaftNode::election_timeout_ticks`). Seed default 150 ms = 15 ticks.
    pub election_timeout_ticks: u32,
    /// Distance between rotation slots of the deterministic election order.
    pub election_spacing_ticks: u32,
    /// Seed default 50 ms = 5 ticks.
    pub heartbeat_interval_ticks: u32,
    /// Seed `max_payload_entries`, default 300.
    pub max_entries_per_append: usize,
    /// Pipelining window: appends in flight per follower.
    pub max_inflight_appends: usize,
    /// Applied entries past the last snapshot that make a new snapshot due (10 000).
    pub snapshot_threshold: u64,
    /// Log length (entries held) above which the log is truncated through the
    /// latest snapshot (50 000). Must be ≥ `snapshot_threshold`.
    pub log_compaction_threshold: u64,
    /// Snapshot transfer chunk size.
    pub snapshot_chunk_bytes: usize,
    /// Most committed entries handed out by one `ready()`.
    pub max_committed_per_ready: usize,
    /// Most payload bytes in one append (at least one entry is always sent): keeps an
    /// append inside a transport frame when entries are large (task modules).
    pub max_append_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_ticks: (150 / TICK_MS) as u32,
            election_spacing_ticks: (50 / TICK_MS) as u32,
            heartbeat_interval_ticks: (50 / TICK_MS) as u32,
            max_entries_per_append: 300,
            max_inflight_appends: 256,
            snapshot_threshold: 10_000,
            log_compaction_threshold: 50_000,
            snapshot_chunk_bytes: 64 * 1024,
            max_committed_per_ready: 4096,
            max_append_bytes: 256 * 1024,
        }
    }
}

impl Config {
    /// Builds a config from the seed's millisecond values (rounded up to ticks).
    pub fn from_millis(
        election_timeout_ms: u64,
        heartbeat_interval_ms: u64,
        max_payload_entries: u64,
        snapshot_threshold: u64,
        log_compaction_threshold: u64,
    ) -> Result<Config, ConfigError> {
        let to_ticks = |ms: u64| -> u32 { ms.div_ceil(TICK_MS).min(u32::MAX as u64) as u32 };
        let c = Config {
            election_timeout_ticks: to_ticks(election_timeout_ms),
            heartbeat_interval_ticks: to_ticks(heartbeat_interval_ms),
            election_spacing_ticks: to_ticks(heartbeat_interval_ms).max(1),
            max_entries_per_append: max_payload_entries.min(usize::MAX as u64) as usize,
            snapshot_threshold,
            log_compaction_threshold,
            ..Config::default()
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks every relationship the node relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError::*;
        if self.election_timeout_ticks == 0 {
            return Err(ZeroElectionTimeout);
        }
        if self.election_timeout_ticks > MAX_ELECTION_TIMEOUT_TICKS {
            return Err(ElectionTimeoutTooLarge(self.election_timeout_ticks));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ZeroHeartbeat);
        }
        if self.heartbeat_interval_ticks >= self.election_timeout_ticks {
            return Err(HeartbeatNotBelowElection {
                heartbeat_ticks: self.heartbeat_interval_ticks,
                election_ticks: self.election_timeout_ticks,
            });
        }
        if self.election_spacing_ticks == 0
            || self.election_spacing_ticks > self.election_timeout_ticks
        {
            return Err(BadElectionSpacing(self.election_spacing_ticks));
        }
        if self.max_entries_per_append == 0
            || self.max_entries_per_append > MAX_ENTRIES_PER_APPEND_LIMIT
        {
            return Err(BadMaxEntries(self.max_entries_per_append));
        }
        if self.max_inflight_appends == 0 || self.max_inflight_appends > MAX_INFLIGHT_LIMIT {
            return Err(BadInflight(self.max_inflight_appends));
        }
        if self.snapshot_threshold == 0 {
            return Err(ZeroSnapshotThreshold);
        }
        if self.log_compaction_threshold < self.snapshot_threshold {
            return Err(CompactionBelowSnapshot {
                compaction: self.log_compaction_threshold,
                snapshot: self.snapshot_threshold,
            });
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK_BYTES {
            return Err(BadChunkSize(self.snapshot_chunk_bytes));
        }
        if self.max_committed_per_ready == 0 {
            return Err(ZeroApplyBatch);
        }
        if self.max_append_bytes == 0 {
            return Err(ZeroAppendBytes);
        }
        Ok(())
    }
}

/// An impossible configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    ZeroElectionTimeout,
    ElectionTimeoutTooLarge(u32),
    ZeroHeartbeat,
    HeartbeatNotBelowElection {
        heartbeat_ticks: u32,
        election_ticks: u32,
    },
    BadElectionSpacing(u32),
    BadMaxEntries(usize),
    BadInflight(usize),
    ZeroSnapshotThreshold,
    CompactionBelowSnapshot {
        compaction: u64,
        snapshot: u64,
    },
    BadChunkSize(usize),
    ZeroApplyBatch,
    ZeroAppendBytes,
    /// Node id 0 is reserved ("no node").
    ZeroNodeId,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigError::*;
        match self {
            ZeroElectionTimeout => write!(f, "election timeout must be at least 1 tick"),
            ElectionTimeoutTooLarge(t) => {
                write!(
                    f,
                    "election timeout {t} ticks exceeds {MAX_ELECTION_TIMEOUT_TICKS}"
                )
            }
            ZeroHeartbeat => write!(f, "heartbeat interval must be at least 1 tick"),
            HeartbeatNotBelowElection {
                heartbeat_ticks,
                election_ticks,
            } => write!(
                f,
                "heartbeat interval ({heartbeat_ticks} ticks) must be below the election timeout ({election_ticks} ticks)"
            ),
            BadElectionSpacing(s) => {
                write!(
                    f,
                    "election spacing {s} ticks must be in 1..=election timeout"
                )
            }
            BadMaxEntries(n) => {
                write!(
                    f,
                    "max entries per append {n} must be in 1..={MAX_ENTRIES_PER_APPEND_LIMIT}"
                )
            }
            BadInflight(n) => write!(
                f,
                "max inflight appends {n} must be in 1..={MAX_INFLIGHT_LIMIT}"
            ),
            ZeroSnapshotThreshold => write!(f, "snapshot threshold must be at least 1 entry"),
            CompactionBelowSnapshot {
                compaction,
                snapshot,
            } => write!(
                f,
                "log compaction threshold {compaction} must be >= snapshot threshold {snapshot}"
            ),
            BadChunkSize(n) => {
                write!(
                    f,
                    "snapshot chunk size {n} must be in 1..={MAX_SNAPSHOT_CHUNK_BYTES}"
                )
            }
            ZeroApplyBatch => write!(f, "max committed entries per ready must be at least 1"),
            ZeroAppendBytes => write!(f, "max append bytes must be at least 1"),
            ZeroNodeId => write!(f, "node id 0 is reserved"),
        }
    }
}
