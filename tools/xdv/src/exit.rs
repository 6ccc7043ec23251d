//! Exit codes of the `xdv` command, one table for the CLI, its `--help` and the README.
//!
//! A script tells the outcome of `cargo xdv submit` from the code alone:
//! 0 the task ran and succeeded, 3 it was refused (locally or by the cluster: it never
//! ran), 4 it ran and failed (trapped, over budget, guard denied). 1 is any other error
//! (no cluster, node not running, timeout), 2 a command-line usage error (clap).

/// The command did what was asked (for `submit`: accepted and executed).
pub const OK: i32 = 0;
/// Any error that is not one of the outcomes below: no cluster, node not running or
/// not a member, no answer in time, bad files.
pub const ERROR: i32 = 1;
/// Usage error: unknown flag, missing or malformed argument (clap's own code).
pub const USAGE: i32 = 2;
/// The task was refused and never ran: invalid module or input (checked locally before
/// anything is sent), refused by the cluster (quota, limits, signature), or refused by
/// the placed node.
pub const REFUSED: i32 = 3;
/// The task ran and failed: trapped, exceeded its tick budget, a guard was denied, the
/// cluster timed it out, or its tenant cancelled it.
pub const FAILED: i32 = 4;

/// The table printed under `cargo xdv submit --help` and in the README.
pub const HELP: &str = "Exit codes: 0 accepted and executed (with --no-wait: accepted); \
1 error (no cluster, node not running or not a member, no answer in time); \
2 usage error; 3 refused, never ran (invalid module or input, quota, limits); \
4 ran and failed (trapped, budget exceeded, guard denied, timed out, cancelled).";

/// The exit-code summary under `cargo xdv --help`.
pub const TOP_HELP: &str = "Exit codes: 0 success; 1 error; 2 usage error; `submit` also \
3 refused (never ran) and 4 failed (ran: trapped, budget exceeded, guard denied, timed \
out, cancelled); see `cargo xdv submit --help`; `cancel` 3 refused. `replay` and `verify`: 1 also when the replay diverges or a \
check fails.";
