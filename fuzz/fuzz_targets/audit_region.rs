//! Fuzz target: audit region parsing (`xdv_audit`).
//!
//! Any bytes, taken as a region (or a RAM image to scan), must never make
//! `verify_region`, `find_region` or `AuditLog::open` panic, and a region `open`
//! accepts must verify after one more append. Run: `cargo +nightly fuzz run
//! audit_region` from `fuzz/` (needs cargo-fuzz and nightly); the same body runs on
//! stable as part of the bounded `fuzz_smoke_never_panics` test of `xdv-audit`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_audit::fuzz_check(data);
});
