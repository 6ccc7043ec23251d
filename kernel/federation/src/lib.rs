//! `xdv-federation`: the pure, deterministic core of a federation of XDV clusters
//! (`no_std` + `alloc`, sans-IO).
//!
//! The model (see `docs/federation.md`): a **gate** accepts a job and routes it to a
//! **cluster** (a datacenter in the seed's vocabulary); the cluster's Raft **leader** is its
//! manager and its **nodes** are the workers. This crate owns four pieces of logic:
//!
//! - [`timeout`]: adaptive per-job timeouts (AD-34), local authority or gate-coordinated,
//!   with fence tokens across leader changes;
//! - [`vivaldi`]: Vivaldi network coordinates in fixed point (AD-35 §12.1);
//! - [`confirm`]: the role-aware peer lifecycle UNCONFIRMED → ALIVE → SUSPECT → DEAD with
//!   adaptive suspicion timeouts (AD-35 §12.2–§12.9);
//! - [`route`]: cross-cluster routing by health bucket, then RTT upper bound × load ×
//!   coordinate quality, with hysteresis (AD-36).
//!
//! Invariants shared by every module:
//! - Time comes in as an argument (`now_ms`, the cluster's logical milliseconds); nothing
//!   here reads a clock or draws a random number.
//! - Every collection is a `BTreeMap`/`Vec` walked in key order, so the outputs depend
//!   only on the inputs, never on hashing or allocation order.
//! - Arithmetic is integer fixed point ([`PPM`] for ratios, microseconds for latencies,
//!   milliseconds for timeouts) with truncating division and a correctly rounded integer
//!   square root ([`isqrt_round`]): identical on every platform and in every build mode.
//!   Floating point is not used at all.
//! - Every table has a named capacity and a full table refuses input with an error.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod confirm;
pub mod route;
pub mod timeout;
pub mod vivaldi;

#[cfg(test)]
mod tests;

pub use xdv_types::{NodeId, TaskId};

/// A job of the federation. Inside its cluster a job is a task, so it shares the id space.
pub type JobId = TaskId;

/// One ratio unit: `PPM` parts per million is 1.0.
pub const PPM: u64 = 1_000_000;

/// A cluster of the federation (a "datacenter" in the seed).
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ClusterId(pub u32);

impl core::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// `value × ratio_ppm / PPM`, truncating, saturating at `u64::MAX`.
#[inline]
pub fn mul_ppm(value: u64, ratio_ppm: u64) -> u64 {
    // The product fits 64 bits in every routing case: divide by the constant there
    // (a multiply and a shift), in 128 bits (a library call) only when it does not.
    // Both give the same truncated quotient.
    match value.checked_mul(ratio_ppm) {
        Some(p) => p / PPM,
        None => {
            let wide = u128::from(value) * u128::from(ratio_ppm) / u128::from(PPM);
            u64::try_from(wide).unwrap_or(u64::MAX)
        }
    }
}

/// `num × PPM / den` (a ratio in parts per million), truncating, saturating; `den == 0`
/// gives `u64::MAX` (an infinite ratio), never a panic.
pub fn ratio_ppm(num: u64, den: u64) -> u64 {
    if den == 0 {
        return u64::MAX;
    }
    match num.checked_mul(PPM) {
        Some(p) => p / den,
        None => {
            let wide = u128::from(num) * u128::from(PPM) / u128::from(den);
            u64::try_from(wide).unwrap_or(u64::MAX)
        }
    }
}

/// The square root of `n` rounded to the nearest integer (ties cannot occur: `n` is an
/// integer, so `√n` is never exactly `k + ½`). Exact on every platform: `isqrt` is the
/// exact floor, and `n > r² + r` is exactly `√n > r + ½`.
#[inline]
pub fn isqrt_round(n: u64) -> u64 {
    let r = n.isqrt();
    if n - r * r > r { r + 1 } else { r }
}
