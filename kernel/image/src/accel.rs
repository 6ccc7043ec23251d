//! The node's accelerators in the kernel: each ivshmem-doorbell function found at boot
//! becomes a [`Port`] of the node's [`AccelPool`] (the same pool the simulator runs).
//! The device rings the BSP through MSI-X; the handler only counts and acknowledges,
//! and the main loop, woken from `hlt`, polls the pool.
#![deny(unsafe_code)]

use crate::devices::AccelFn;
use xdv_accel::regs::{DOORBELL_PING, DOORBELL_SUBMIT, DeviceMemory, off};
use xdv_drivers::ivshmem::Ivshmem;
use xdv_node::accel::{AccelPool, Port};

/// One accelerator as the pool drives it.
pub struct KernelPort {
    dev: Ivshmem,
    pub vector_base: u8,
}

impl Port for KernelPort {
    fn mem(&self) -> &dyn DeviceMemory {
        &self.dev.shm
    }

    fn ring(&self) {
        // The device names its own peer in its register block (the driver validated
        // the block when it probed it).
        let peer = self.dev.shm.read32(off::PEER);
        self.dev.ring(peer, DOORBELL_SUBMIT);
    }
}

impl KernelPort {
    /// Rings the device's ping doorbell: it answers with a completion interrupt at
    /// once, touching no ring.
    pub fn raw_ping(&self) {
        let peer = self.dev.shm.read32(off::PEER);
        self.dev.ring(peer, DOORBELL_PING);
    }
}

/// Builds the pool over the transports found at boot.
pub fn pool(
    node: xdv_types::NodeId,
    found: alloc::vec::Vec<AccelFn>,
    now_ms: u64,
) -> AccelPool<KernelPort> {
    let mut pool = AccelPool::new(node);
    for f in found {
        let port = KernelPort {
            dev: f.dev,
            vector_base: f.vector_base,
        };
        pool.add(f.name, port, now_ms);
    }
    pool
}

/// Interrupts taken on a device's two vectors.
pub fn interrupts(port: &KernelPort) -> u64 {
    let base = usize::from(port.vector_base - crate::arch::idt::VECTOR_DEVICE_BASE);
    (base..base + 2)
        .map(|i| crate::arch::idt::DEVICE_IRQS[i].load(core::sync::atomic::Ordering::Relaxed))
        .sum()
}
