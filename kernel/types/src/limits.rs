//! One source for every limit more than one crate enforces. The run queues, the
//! sandbox, the audit format, the cluster state machine and the CLI all take these
//! values from here, so a task the CLI accepts is one the cluster and the node accept.

/// Guards (required capabilities) one task may name.
pub const MAX_GUARDS: usize = 8;
/// Largest tick budget of one task.
pub const MAX_BUDGET_TICKS: u64 = 1 << 40;
/// Longest trap reason kept in a replay event and an audit record (UTF-8, cut at a
/// character boundary).
pub const MAX_TRAP_REASON_BYTES: usize = 128;
/// Largest WebAssembly module: a submission travels in one Raft log entry.
pub const MAX_MODULE_BYTES: usize = 64 * 1024;
/// Largest task input.
pub const MAX_INPUT_BYTES: usize = 16 * 1024;
/// Most output bytes one run may write (the sandbox stops the task beyond it).
pub const MAX_RUN_OUTPUT_BYTES: usize = 64 * 1024;
/// Most output bytes the cluster keeps per task (in the replicated state and its
/// snapshots); a longer output is cut to this, and its hash covers the whole output.
pub const MAX_KEPT_OUTPUT_BYTES: usize = 1024;
/// Most `log()` lines the cluster keeps per task (the sandbox lets a run write 16).
pub const MAX_KEPT_LOG_LINES: usize = 16;
/// Most bytes of `log()` lines the cluster keeps per task, all lines together; the
/// line that crosses it is cut at a character boundary and later lines are dropped.
pub const MAX_KEPT_LOG_BYTES: usize = 1024;

// A module and its input travel together in one log entry of at most 128 KiB.
const _: () = assert!(MAX_MODULE_BYTES + MAX_INPUT_BYTES < 128 * 1024);
const _: () = assert!(MAX_KEPT_OUTPUT_BYTES <= MAX_RUN_OUTPUT_BYTES);
