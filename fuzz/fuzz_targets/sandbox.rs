//! Fuzz target: the WebAssembly sandbox (`xdv_sandbox`).
//!
//! Random bytes and mutated bundled modules (overwrites, truncation, insertion,
//! splicing) go through `validate`; a module that validates runs twice with a budget
//! of at most 64 ticks. Nothing may panic, a run never uses more than its budget,
//! output and log stay within their limits, and both runs are identical. Run:
//! `cargo +nightly fuzz run sandbox` from `fuzz/` (needs cargo-fuzz and nightly); the
//! same body runs on stable as the `fuzz::tests::fuzz_check_smoke` test of
//! `xdv-sandbox`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_sandbox::fuzz::fuzz_check(data);
});
