//! Hostile frames into a leading node's management and peer inputs
//! (`xdv_node::fuzz::fuzz_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_node::fuzz::fuzz_check(data);
});
