//! Fuzz target: audit region parsing and recovery (`xdv_audit`).
//!
//! Any bytes, taken as a region (or a RAM image to scan), must never make
//! `verify_region`, `inspect_region`, `find_region` or `AuditLog::open` panic. Taken
//! as a recipe, they write a region, damage it (flipped bytes, one or both
//! superblock copies, a lost tail, a wiped span, a cut) and reopen it as the node
//! would at boot: every record the damage left untouched must still be readable
//! where it was, `open` may change no kept byte except a torn tail it reports, and
//! unless it reports damage it could not record, the region, an append after
//! recovery, and a second open must all check out (see `xdv_audit::fuzz`). Run:
//! `cargo +nightly fuzz run audit_region` from `fuzz/` (needs cargo-fuzz and
//! nightly); the same body runs on stable in `recovery_fuzz_smoke` and
//! `fuzz_smoke_never_panics` of `xdv-audit`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_audit::fuzz_check(data);
});
