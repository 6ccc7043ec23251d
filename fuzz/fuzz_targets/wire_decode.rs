//! Fuzz target: the peer wire decoder (`xdv_net::wire`).
//!
//! Any byte stream, fed to `FrameDecoder` in chunks chosen by the data, must never
//! panic; errors must poison the decoder; every decoded frame must re-encode and
//! decode to itself, and agree with the raw `Frame`/`FrameRepr::parse` path.
//! Run: `cargo +nightly fuzz run wire_decode` (needs cargo-fuzz and nightly; the same
//! body runs in CI as the bounded `fuzz_smoke` test of `xdv-net`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_net::wire::fuzz_check(data);
});
