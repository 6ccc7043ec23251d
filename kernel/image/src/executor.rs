//! Per-core executors (filled in with the run queues).
use alloc::string::String;

/// An AP's main loop: sleep until woken.
pub fn ap_main(_cpu: usize) -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

pub fn describe(_cpu: usize) -> String {
    String::new()
}
