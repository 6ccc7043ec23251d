//! Tasks, the work interface the sandbox plugs into, the built-in deterministic
//! workloads, guards and per-core data.
//!
//! Invariants:
//! - A task's outcome (kind, ticks used, output hash) is a function of its `work`
//!   and `budget_ticks` alone, once its guards pass: no core id, clock or placement
//!   enters [`Work::run`]. This is what makes per-task outcomes independent of the
//!   core count.
//! - `ticks_used <= budget_ticks` for every result a runner records (the runner
//!   enforces it even against a misbehaving `Work`).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xdv_types::{CapabilityId, Hash32, Priority, TaskId, TenantId};

/// Most guards one task may carry.
pub use xdv_types::limits::MAX_GUARDS;
/// Most capabilities one core may hold.
pub const MAX_GRANTED_CAPS: usize = 1024;
/// Largest tick budget a task may ask for (about 10^12).
pub use xdv_types::limits::MAX_BUDGET_TICKS;
/// Longest trap reason, in bytes (UTF-8).
pub use xdv_types::limits::MAX_TRAP_REASON_BYTES;
/// Largest input of [`BuiltinWork::Sort`].
pub const MAX_SORT_LEN: u32 = 1 << 16;

/// More than [`MAX_GUARDS`] guards were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyGuards {
    pub given: usize,
}

impl fmt::Display for TooManyGuards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} guards given, at most {MAX_GUARDS} allowed",
            self.given
        )
    }
}

/// Up to [`MAX_GUARDS`] capability ids a task needs; checked in the order given.
/// Encoded as a sequence; decoding rejects more than [`MAX_GUARDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<CapabilityId>", try_from = "Vec<CapabilityId>")]
pub struct Guards {
    caps: [CapabilityId; MAX_GUARDS],
    len: u8,
}

impl TryFrom<Vec<CapabilityId>> for Guards {
    type Error = TooManyGuards;
    fn try_from(caps: Vec<CapabilityId>) -> Result<Self, Self::Error> {
        Guards::new(&caps)
    }
}

impl From<Guards> for Vec<CapabilityId> {
    fn from(g: Guards) -> Self {
        g.as_slice().to_vec()
    }
}

impl Default for Guards {
    fn default() -> Self {
        Guards::none()
    }
}

impl Guards {
    /// No guards.
    pub const fn none() -> Guards {
        Guards {
            caps: [CapabilityId(0); MAX_GUARDS],
            len: 0,
        }
    }

    /// Guards from a list; rejects more than [`MAX_GUARDS`].
    pub fn new(caps: &[CapabilityId]) -> Result<Guards, TooManyGuards> {
        if caps.len() > MAX_GUARDS {
            return Err(TooManyGuards { given: caps.len() });
        }
        let mut g = Guards::none();
        g.caps[..caps.len()].copy_from_slice(caps);
        g.len = caps.len() as u8;
        Ok(g)
    }

    /// The guards, in check order.
    pub fn as_slice(&self) -> &[CapabilityId] {
        // `len <= MAX_GUARDS` by construction (`new` is the only way in).
        &self.caps[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The capabilities one core holds. Bounded by [`MAX_GRANTED_CAPS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantedCaps {
    caps: BTreeSet<CapabilityId>,
}

/// A core already holds [`MAX_GRANTED_CAPS`] capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyCaps;

impl fmt::Display for TooManyCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a core holds at most {MAX_GRANTED_CAPS} capabilities")
    }
}

impl GrantedCaps {
    pub fn new() -> Self {
        GrantedCaps {
            caps: BTreeSet::new(),
        }
    }

    /// Grants `cap`; `Ok(false)` if it was already held.
    pub fn grant(&mut self, cap: CapabilityId) -> Result<bool, TooManyCaps> {
        if !self.caps.contains(&cap) && self.caps.len() >= MAX_GRANTED_CAPS {
            return Err(TooManyCaps);
        }
        Ok(self.caps.insert(cap))
    }

    /// Revokes `cap`; `false` if it was not held.
    pub fn revoke(&mut self, cap: CapabilityId) -> bool {
        self.caps.remove(&cap)
    }

    pub fn contains(&self, cap: CapabilityId) -> bool {
        self.caps.contains(&cap)
    }

    /// The first guard (in the task's order) this core does not hold.
    pub fn first_missing(&self, guards: &Guards) -> Option<CapabilityId> {
        guards
            .as_slice()
            .iter()
            .copied()
            .find(|c| !self.caps.contains(c))
    }

    pub fn len(&self) -> usize {
        self.caps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.caps.is_empty()
    }
}

/// A task as submitted: who, how urgent, what it needs, how long it may run, what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec<W> {
    pub id: TaskId,
    pub tenant: TenantId,
    pub priority: Priority,
    pub guards: Guards,
    /// At most [`MAX_BUDGET_TICKS`]; a runner rejects larger budgets at enqueue.
    pub budget_ticks: u64,
    pub work: W,
}

/// Why a task trapped: a short UTF-8 text of at most [`MAX_TRAP_REASON_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrapReason(String);

/// A trap reason longer than [`MAX_TRAP_REASON_BYTES`] was decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapReasonTooLong(pub usize);

impl fmt::Display for TrapReasonTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trap reason of {} bytes exceeds {MAX_TRAP_REASON_BYTES}",
            self.0
        )
    }
}

impl TrapReason {
    /// A reason from `text`, truncated at a character boundary to the limit.
    pub fn new(text: &str) -> TrapReason {
        TrapReason(String::from(xdv_types::prefix_within(
            text,
            MAX_TRAP_REASON_BYTES,
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TrapReason {
    type Error = TrapReasonTooLong;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() > MAX_TRAP_REASON_BYTES {
            return Err(TrapReasonTooLong(s.len()));
        }
        Ok(TrapReason(s))
    }
}

impl From<TrapReason> for String {
    fn from(r: TrapReason) -> String {
        r.0
    }
}

impl fmt::Display for TrapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a piece of work ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkOutcome {
    Completed {
        output_hash: Hash32,
    },
    /// The work needed more ticks than its budget; it was stopped at the budget.
    BudgetExceeded,
    Trapped {
        reason: TrapReason,
    },
}

/// What [`Work::run`] reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkResult {
    pub ticks_used: u64,
    pub outcome: WorkOutcome,
}

/// Something a core can run with a tick budget. The sandbox implements it with
/// WebAssembly fuel = ticks. Contract: deterministic (same `self`, same budget ⇒
/// same result), `ticks_used <= budget_ticks`, and `BudgetExceeded` exactly when the
/// work would need more than `budget_ticks`.
pub trait Work {
    fn run(&mut self, budget_ticks: u64) -> WorkResult;
}

/// Built-in deterministic workloads that count their own ticks, used until the
/// sandbox lands (and for benchmarks). `Send`, plain data: fits in any queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinWork {
    /// Does nothing; 1 tick.
    Empty,
    /// `h_0 = SHA-256("xdv/builtin/hash-chain" || steps as u64 LE)`,
    /// `h_{i+1} = SHA-256(h_i)`; 1 tick per step; output `h_steps`.
    HashChain { steps: u64 },
    /// Sorts `n` (<= [`MAX_SORT_LEN`]) SplitMix64(seed) values with a bottom-up
    /// merge sort; 1 tick per comparison; output SHA-256 of the sorted values (LE).
    Sort { n: u32, seed: u64 },
    /// Traps after 1 tick with reason `"trap <code>"` (exercises the trap path).
    Trap { code: u32 },
}

impl Work for BuiltinWork {
    fn run(&mut self, budget_ticks: u64) -> WorkResult {
        match *self {
            BuiltinWork::Empty => one_tick(budget_ticks, || WorkOutcome::Completed {
                output_hash: sha256_parts(&[b"xdv/builtin/empty"]),
            }),
            BuiltinWork::HashChain { steps } => hash_chain(steps, budget_ticks),
            BuiltinWork::Sort { n, seed } => sort_work(n, seed, budget_ticks),
            BuiltinWork::Trap { code } => one_tick(budget_ticks, || WorkOutcome::Trapped {
                reason: TrapReason::new(&alloc::format!("trap {code}")),
            }),
        }
    }
}

fn exceeded(budget_ticks: u64) -> WorkResult {
    WorkResult {
        ticks_used: budget_ticks,
        outcome: WorkOutcome::BudgetExceeded,
    }
}

fn one_tick(budget_ticks: u64, outcome: impl FnOnce() -> WorkOutcome) -> WorkResult {
    if budget_ticks == 0 {
        return exceeded(0);
    }
    WorkResult {
        ticks_used: 1,
        outcome: outcome(),
    }
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256_parts(parts: &[&[u8]]) -> Hash32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash32(h.finalize().into())
}

fn hash_chain(steps: u64, budget_ticks: u64) -> WorkResult {
    if steps > budget_ticks {
        // Stop at the budget without doing the work the budget does not pay for:
        // the outcome is fixed by (steps, budget) alone.
        return exceeded(budget_ticks);
    }
    let mut h = sha256_parts(&[b"xdv/builtin/hash-chain", &steps.to_le_bytes()]);
    for _ in 0..steps {
        h = sha256_parts(&[&h.0]);
    }
    WorkResult {
        ticks_used: steps,
        outcome: WorkOutcome::Completed { output_hash: h },
    }
}

/// The seeded generator for built-in inputs and tests: the project's one PRNG,
/// re-exported under its old path (built-in outputs depend on its exact stream).
pub use xdv_types::rng::SplitMix64;

fn sort_work(n: u32, seed: u64, budget_ticks: u64) -> WorkResult {
    if n > MAX_SORT_LEN {
        return WorkResult {
            ticks_used: 0,
            outcome: WorkOutcome::Trapped {
                reason: TrapReason::new("sort input over MAX_SORT_LEN"),
            },
        };
    }
    let mut rng = SplitMix64(seed);
    let mut v: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
    let Some(comparisons) = counted_merge_sort(&mut v, budget_ticks) else {
        return exceeded(budget_ticks);
    };
    debug_assert!(v.windows(2).all(|w| w[0] <= w[1]));
    let mut h = Sha256::new();
    h.update(b"xdv/builtin/sort");
    for x in &v {
        h.update(x.to_le_bytes());
    }
    WorkResult {
        ticks_used: comparisons,
        outcome: WorkOutcome::Completed {
            output_hash: Hash32(h.finalize().into()),
        },
    }
}

/// Bottom-up merge sort counting comparisons; `None` once a comparison would
/// exceed `budget`. The count depends only on the input, never on the platform.
fn counted_merge_sort(v: &mut [u64], budget: u64) -> Option<u64> {
    let n = v.len();
    let mut buf = alloc::vec![0u64; n];
    let mut comparisons = 0u64;
    let mut width = 1;
    while width < n {
        let mut start = 0;
        while start < n {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut i, mut j, mut k) = (start, mid, start);
            while i < mid && j < end {
                if comparisons == budget {
                    return None;
                }
                comparisons += 1;
                if v[j] < v[i] {
                    buf[k] = v[j];
                    j += 1;
                } else {
                    buf[k] = v[i];
                    i += 1;
                }
                k += 1;
            }
            buf[k..k + (mid - i)].copy_from_slice(&v[i..mid]);
            k += mid - i;
            buf[k..k + (end - j)].copy_from_slice(&v[j..end]);
            start = end;
        }
        v.copy_from_slice(&buf);
        width *= 2;
    }
    Some(comparisons)
}

/// Data owned by one core. `!Send` and `!Sync` by construction (the raw-pointer
/// marker), so the compiler rejects any attempt to hand it to another core:
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// needs_send(xdv_sched::CoreLocal::new(0u32));
/// ```
///
/// ```compile_fail
/// fn needs_sync<T: Sync>(_: &T) {}
/// needs_sync(&xdv_sched::CoreLocal::new(0u32));
/// ```
#[derive(Debug, Default)]
pub struct CoreLocal<T> {
    value: T,
    _not_send_sync: PhantomData<*const ()>,
}

impl<T> CoreLocal<T> {
    pub const fn new(value: T) -> Self {
        CoreLocal {
            value,
            _not_send_sync: PhantomData,
        }
    }

    pub fn get(&self) -> &T {
        &self.value
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    pub fn into_inner(self) -> T {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_limit() {
        let caps: Vec<CapabilityId> = (0..9).map(CapabilityId).collect();
        assert_eq!(Guards::new(&caps), Err(TooManyGuards { given: 9 }));
        let g = Guards::new(&caps[..8]).expect("eight fit");
        assert_eq!(g.len(), 8);
        assert_eq!(g.as_slice()[7], CapabilityId(7));
        assert!(Guards::none().is_empty());
        let bytes = postcard::to_allocvec(&g).expect("encode");
        assert_eq!(postcard::from_bytes::<Guards>(&bytes), Ok(g));
        let nine = postcard::to_allocvec(&caps).expect("encode");
        assert!(postcard::from_bytes::<Guards>(&nine).is_err());
    }

    #[test]
    fn granted_caps_first_missing_in_guard_order() {
        let mut caps = GrantedCaps::new();
        assert_eq!(caps.grant(CapabilityId(1)), Ok(true));
        assert_eq!(caps.grant(CapabilityId(1)), Ok(false));
        let g = Guards::new(&[CapabilityId(1), CapabilityId(5), CapabilityId(3)]).expect("ok");
        assert_eq!(caps.first_missing(&g), Some(CapabilityId(5)));
        caps.grant(CapabilityId(5)).expect("room");
        assert_eq!(caps.first_missing(&g), Some(CapabilityId(3)));
        caps.grant(CapabilityId(3)).expect("room");
        assert_eq!(caps.first_missing(&g), None);
        assert!(caps.revoke(CapabilityId(3)));
        assert!(!caps.revoke(CapabilityId(3)));
    }

    #[test]
    fn granted_caps_bounded() {
        let mut caps = GrantedCaps::new();
        for i in 0..MAX_GRANTED_CAPS as u32 {
            caps.grant(CapabilityId(i)).expect("under limit");
        }
        assert_eq!(caps.grant(CapabilityId(u32::MAX)), Err(TooManyCaps));
        assert_eq!(caps.grant(CapabilityId(0)), Ok(false));
    }

    #[test]
    fn hash_chain_ticks_and_budget() {
        let r = BuiltinWork::HashChain { steps: 3 }.run(3);
        assert_eq!(r.ticks_used, 3);
        let mut h = sha256_parts(&[b"xdv/builtin/hash-chain", &3u64.to_le_bytes()]);
        for _ in 0..3 {
            h = sha256_parts(&[&h.0]);
        }
        assert_eq!(r.outcome, WorkOutcome::Completed { output_hash: h });
        let over = BuiltinWork::HashChain { steps: 4 }.run(3);
        assert_eq!(
            over,
            WorkResult {
                ticks_used: 3,
                outcome: WorkOutcome::BudgetExceeded
            }
        );
    }

    #[test]
    fn sort_counts_comparisons_and_is_budgeted() {
        let full = BuiltinWork::Sort { n: 100, seed: 7 }.run(u64::MAX);
        let WorkOutcome::Completed { output_hash } = full.outcome else {
            panic!("sort must complete with an unlimited budget: {full:?}");
        };
        // Merge sort of 100 elements needs between n/2*log2(n)/... and n*log2(n).
        assert!(
            full.ticks_used > 100 && full.ticks_used < 100 * 7,
            "{}",
            full.ticks_used
        );
        assert_eq!(
            BuiltinWork::Sort { n: 100, seed: 7 }.run(full.ticks_used),
            full
        );
        let short = BuiltinWork::Sort { n: 100, seed: 7 }.run(full.ticks_used - 1);
        assert_eq!(short.outcome, WorkOutcome::BudgetExceeded);
        assert_eq!(short.ticks_used, full.ticks_used - 1);
        let other = BuiltinWork::Sort { n: 100, seed: 8 }.run(u64::MAX);
        assert_ne!(other.outcome, WorkOutcome::Completed { output_hash });
        let big = BuiltinWork::Sort {
            n: MAX_SORT_LEN + 1,
            seed: 0,
        }
        .run(u64::MAX);
        assert!(matches!(big.outcome, WorkOutcome::Trapped { .. }));
    }

    #[test]
    fn counted_sort_sorts() {
        let mut rng = SplitMix64(1);
        let mut v: Vec<u64> = (0..1000).map(|_| rng.next_u64() % 50).collect();
        let mut expect = v.clone();
        expect.sort();
        counted_merge_sort(&mut v, u64::MAX).expect("unbounded");
        assert_eq!(v, expect);
    }

    #[test]
    fn empty_and_trap() {
        let e = BuiltinWork::Empty.run(1);
        assert_eq!(e.ticks_used, 1);
        assert_eq!(
            BuiltinWork::Empty.run(0).outcome,
            WorkOutcome::BudgetExceeded
        );
        let t = BuiltinWork::Trap { code: 7 }.run(5);
        assert_eq!(
            t.outcome,
            WorkOutcome::Trapped {
                reason: TrapReason::new("trap 7")
            }
        );
    }

    #[test]
    fn trap_reason_bounded() {
        let long = "é".repeat(100);
        let r = TrapReason::new(&long);
        assert!(r.as_str().len() <= MAX_TRAP_REASON_BYTES);
        assert!(TrapReason::try_from(long).is_err());
        let bytes = postcard::to_allocvec(&r).expect("encode");
        let back: TrapReason = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, r);
    }

    #[test]
    fn core_local_access() {
        let mut c = CoreLocal::new(5u32);
        *c.get_mut() += 1;
        assert_eq!(*c.get(), 6);
        assert_eq!(c.into_inner(), 6);
    }
}
