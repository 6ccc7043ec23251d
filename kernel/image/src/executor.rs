//! Per-core executors (filled in with the run queues).
use alloc::string::String;

/// An AP's main loop: sleep until woken.
pub fn ap_main(_cpu: usize) -> ! {
    loop {
        crate::arch::wait_for_interrupt();
    }
}

pub fn describe(_cpu: usize) -> String {
    String::new()
}
