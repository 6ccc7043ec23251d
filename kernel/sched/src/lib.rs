//! Deterministic per-core run queues with tick budgets, lock-free queues, and the
//! hash-linked replay log. Pure `no_std` + `alloc`; the kernel links it bare-metal
//! and host tools link it with `std`.
//!
//! # API the kernel calls
//!
//! ```text
//! // Per-core rings, in statics (no allocation):
//! static RING: SpscRing<CoreMsg<BuiltinWork>, 256> = SpscRing::new();      // const fn
//! SpscRing::split(&'static self) -> Result<(Producer<'static,T,N>, Consumer<'static,T,N>), AlreadySplit>
//! Producer::push(&mut self, T) -> Result<(), Full<T>>     Consumer::pop(&mut self) -> Option<T>
//! SpscRing::len(&self) -> usize                            // approximate, for `runq`
//!
//! // Boot core: assignment, timestamps, merge into the log
//! Submitter::new(cores: u16, MaskPlacement) -> Result<Submitter, BadCoreCount>
//! Submitter::assign(&mut self, TaskId) -> (CoreId, Timestamp)
//! Submitter::record(&mut self, ReplayEvent) -> CoreStamp  // StateChange / ExternalInput
//! Submitter::seal(&mut self, Vec<Vec<CoreEvent>>, &mut ReplayLog) -> Result<usize, AppendError>
//! merge_streams(Vec<Vec<CoreEvent>>) -> Vec<CoreEvent>    // (time, core id) order
//!
//! // Each core
//! CoreRunner::<BuiltinWork>::new(CoreId) ; grant(CapabilityId)
//! CoreRunner::enqueue(&mut self, TaskSpec<W>, Timestamp) -> Result<CoreEvent, EnqueueError<W>>
//! CoreRunner::accept(&mut self, CoreMsg<W>) -> Result<Option<CoreEvent>, EnqueueError<W>>
//! CoreRunner::run_cycle(&mut self) -> Option<CoreEvent>
//! CoreRunner::run_until_idle(&mut self) -> Vec<CoreEvent>
//! CoreRunner::counters(&self) -> CoreCounters ; queue_depth(&self) -> usize
//!
//! // Log
//! ReplayLog::new() ; append(&mut self, CoreEvent) -> Result<Hash32, AppendError>
//! ReplayLog::head_hash(&self) -> Hash32 ; len(&self) -> usize ; verify(&self) -> Result<(), LogError>
//! ReplayLog::to_bytes(&self) -> Vec<u8> ; from_bytes(&[u8]) -> Result<ReplayLog, DecodeError>
//! compare_replays(&ReplayLog, &ReplayLog) -> ReplayComparison
//!
//! // Single core fallback / host: DeterministicScheduler::new(cores, MaskPlacement),
//! // submit(task), run_cycle(core), run_until_idle() -> Result<&ReplayLog, _>
//! ```
//!
//! # Determinism
//!
//! A batch protocol makes real parallel cores produce the host's log: the boot core
//! `assign`s every task of a batch and pushes `CoreMsg::Task { task, stamp }` into
//! the target core's ring, then `CoreMsg::Seal` into every ring. A core `accept`s
//! until `Seal`, then `run_until_idle`, and returns its events (e.g. through an
//! `MpmcQueue` or a per-core SPSC back-channel). The boot core `seal`s all streams.
//! Each core's call sequence is then fixed, its Lamport stamps are fixed, and
//! [`merge_streams`] orders by (time, core id), so the log does not depend on timing.
//!
//! - Same task set, same core count ⇒ identical log (`ExactMatch`, same head hash).
//! - Different core count ⇒ placement, Lamport stamps and interleaving differ, so
//!   the head hash differs; every task's outcome (kind, ticks, output hash, missing
//!   capability, trap reason) is the same, provided all cores hold the same grants.
//!   `compare_replays` reports exactly this as `MinorDifference` (see [`replay`]).
//!
//! # Loom
//!
//! The SPSC ring and the MPMC queue are model-checked with loom:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom \
//!     cargo test -p xdv-sched --release --test loom
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod demo;
pub mod mpmc;
pub mod ordered;
pub mod placement;
pub mod replay;
pub mod runner;
pub mod scheduler;
pub mod spsc;
mod sync;
pub mod task;

pub use xdv_types::{CoreStamp, GlobalStamp, LamportClock, Timestamp};

pub use mpmc::{BadCapacity, MAX_MPMC_CAPACITY, MpmcQueue};
pub use ordered::{MAX_ORDERED_ENTRIES, OrderedQueue};
pub use placement::{MAX_CORES, MaskPlacement, Placement};
pub use replay::{
    AppendError, CoreEvent, DecodeError, DecodeErrorKind, DivergenceReason, LogEntry, LogError,
    LogErrorKind, MAX_LOG_ENTRIES, ReplayComparison, ReplayEvent, ReplayLog, compare_replays,
    genesis_hash,
};
pub use runner::{CoreCounters, CoreMsg, CoreRunner, EnqueueError, MAX_READY_TASKS};
pub use scheduler::{
    BadCoreCount, DeterministicScheduler, SUBMITTER_CORE, Submitter, merge_streams,
};
pub use spsc::{AlreadySplit, Consumer, Full, MAX_SPSC_CAPACITY, Producer, SpscRing};
pub use task::{
    BuiltinWork, CoreLocal, GrantedCaps, Guards, MAX_BUDGET_TICKS, MAX_GUARDS, SplitMix64,
    TaskSpec, TooManyGuards, TrapReason, Work, WorkOutcome, WorkResult,
};
