//! CPU bookkeeping. Until the application processors are started only the BSP runs.

use core::sync::atomic::{AtomicUsize, Ordering};

static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Index (0 = BSP) of the calling CPU.
pub fn cpu_index() -> usize {
    0
}

/// CPUs running.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Wake-up IPI handler.
pub fn on_ipi() {}

/// Stops every other CPU (fatal paths). Nothing to do on one CPU.
pub fn stop_others() {}

/// Prints one line per CPU for the `cpus` command.
pub fn print_cpus() {
    crate::println!("cpus: {} online", online());
    crate::println!("  cpu0 apic=0 bsp running");
}
