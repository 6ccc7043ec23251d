//! Fuzz target: the cluster's decoders and state machine (`xdv_cluster`).
//!
//! The input goes to the management decoders (requests, responses, peer forwards), is
//! split into log entries applied to two replicas (which must agree), and is offered
//! as a snapshot image (a refused image must leave the state untouched). Run:
//! `cargo +nightly fuzz run cluster_decode` from `fuzz/`; the same body runs on stable
//! as the `fuzz::tests::fuzz_check_smoke` test of `xdv-cluster`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_cluster::fuzz::fuzz_check(data);
});
