//! A hostile accelerator: random completion rings, indices, status and generation
//! words under the driver (`xdv_accel::fuzz::completion_ring`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_accel::fuzz::completion_ring(data);
});
