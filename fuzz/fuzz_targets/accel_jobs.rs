//! Random bytes into every device-job decoder: circuits, envelopes and their results
//! (`xdv_accel::job::fuzz_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xdv_accel::job::fuzz_decode(data);
});
