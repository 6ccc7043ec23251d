//! virtio-net over the virtio 1.x modern PCI transport, split virtqueues, receive by
//! MSI-X interrupt armed only while the receive ring is empty (or polled without MSI-X).
//!
//! Layers: [`Platform`] (the kernel's DMA allocator and MMIO mapper), [`Mmio`] (the
//! only code that touches device registers), [`Queue`] (split-ring bookkeeping over
//! DMA memory, host-testable with an emulated device side), [`VirtioNet`] (feature
//! negotiation, receive/transmit, counters).
//!
//! Ownership: every descriptor is in exactly one state, `Free` (driver) or
//! `Posted` (device). Posting a posted descriptor or reclaiming a free one is a bug
//! and is asserted, so buffers cannot leak or be freed twice. Descriptor fields are
//! written first, then the avail index is published with a release fence, then the
//! device is notified.

use crate::pci::{ConfigSpace, PciDevice};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{Ordering, fence};

pub use crate::platform::{Mmio, Platform};

pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern virtio-net device id (0x1040 + 1); 0x1000 is the transitional id.
pub const NET_DEVICE_IDS: [u16; 2] = [0x1041, 0x1000];
/// Descriptors per queue (rx and tx).
pub const QUEUE_SIZE: u16 = 128;
/// Bytes per buffer: virtio_net_hdr (12) + a 1514-byte Ethernet frame, rounded.
pub const BUFFER_BYTES: usize = 2048;
/// The virtio-net header with VIRTIO_F_VERSION_1 (num_buffers included).
pub const NET_HDR_BYTES: usize = 12;
pub const MAX_FRAME_BYTES: usize = 1514;

const F_MAC: u64 = 1 << 5;
const F_VERSION_1: u64 = 1 << 32;

const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_FAILED: u8 = 128;

const DESC_F_WRITE: u16 = 2;

/// "No MSI-X vector" in the common configuration's vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// Why a virtio-net device was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioError {
    NotVirtioNet,
    MissingCapability(&'static str),
    BadBar(u8),
    MapFailed(u64),
    /// The device lacks a feature XDV requires.
    MissingFeature(&'static str),
    FeaturesRejected,
    QueueUnavailable(u16),
    QueueTooSmall {
        queue: u16,
        size: u16,
    },
    OutOfMemory,
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioError::NotVirtioNet => f.write_str("not a virtio-net device"),
            VirtioError::MissingCapability(c) => {
                write!(f, "no virtio {c} capability (not a modern device?)")
            }
            VirtioError::BadBar(b) => write!(f, "capability points at missing BAR {b}"),
            VirtioError::MapFailed(a) => write!(f, "cannot map BAR at {a:#x}"),
            VirtioError::MissingFeature(n) => write!(f, "device lacks required feature {n}"),
            VirtioError::FeaturesRejected => f.write_str("device rejected the negotiated features"),
            VirtioError::QueueUnavailable(q) => write!(f, "queue {q} is not available"),
            VirtioError::QueueTooSmall { queue, size } => {
                write!(f, "queue {queue} has only {size} entries")
            }
            VirtioError::OutOfMemory => f.write_str("no DMA memory for the rings"),
        }
    }
}

/// Driver counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub rx_drops: u64,
    pub tx_drops: u64,
    pub errors: u64,
}

/// Offsets in the common configuration structure (virtio 1.x §4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const MSIX_CONFIG: usize = 0x10;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_ENABLE: usize = 0x1c;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
    pub const BYTES: usize = 0x38;
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Slot {
    Free,
    Posted,
}

/// One split virtqueue in DMA memory, each descriptor owning one buffer.
pub struct Queue {
    size: u16,
    desc: *mut u8,
    avail: *mut u8,
    used: *mut u8,
    pub desc_phys: u64,
    pub avail_phys: u64,
    pub used_phys: u64,
    bufs: *mut u8,
    bufs_phys: u64,
    state: Vec<Slot>,
    free: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
}

// SAFETY: the raw pointers are into DMA memory owned by this queue alone.
unsafe impl Send for Queue {}

impl Queue {
    /// Allocates rings and buffers for `size` descriptors.
    pub fn new(platform: &dyn Platform, size: u16) -> Result<Queue, VirtioError> {
        let n = usize::from(size);
        let desc_bytes = 16 * n;
        let avail_bytes = 6 + 2 * n;
        let used_bytes = 6 + 8 * n;
        let (dp, d) = platform
            .dma_alloc(desc_bytes)
            .ok_or(VirtioError::OutOfMemory)?;
        let (ap, a) = platform
            .dma_alloc(avail_bytes)
            .ok_or(VirtioError::OutOfMemory)?;
        let (up, u) = platform
            .dma_alloc(used_bytes)
            .ok_or(VirtioError::OutOfMemory)?;
        let (bp, b) = platform
            .dma_alloc(n * BUFFER_BYTES)
            .ok_or(VirtioError::OutOfMemory)?;
        Ok(Queue {
            size,
            desc: d,
            avail: a,
            used: u,
            desc_phys: dp,
            avail_phys: ap,
            used_phys: up,
            bufs: b,
            bufs_phys: bp,
            state: alloc::vec![Slot::Free; n],
            free: (0..size).rev().collect(),
            avail_idx: 0,
            last_used: 0,
        })
    }

    fn buf(&self, id: u16) -> *mut u8 {
        // SAFETY-relevant arithmetic only; `id < size` is asserted by callers.
        self.bufs.wrapping_add(usize::from(id) * BUFFER_BYTES)
    }

    /// Free descriptors.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Descriptors currently owned by the device.
    pub fn posted_count(&self) -> usize {
        self.state.iter().filter(|s| **s == Slot::Posted).count()
    }

    /// Descriptors in the queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Posts descriptor `id` with `len` bytes (device-writable if `write`).
    fn post(&mut self, id: u16, len: u32, write: bool) {
        let i = usize::from(id);
        assert!(
            id < self.size && self.state[i] == Slot::Free,
            "descriptor {id} posted twice"
        );
        self.state[i] = Slot::Posted;
        let addr = self.bufs_phys + (i * BUFFER_BYTES) as u64;
        // SAFETY: `desc` holds `size` 16-byte descriptors and `avail` 6 + 2*size bytes
        // (allocated in `new`); `i` and the ring slot are < size.
        unsafe {
            let d = self.desc.add(i * 16);
            core::ptr::write_volatile(d as *mut u64, addr);
            core::ptr::write_volatile(d.add(8) as *mut u32, len);
            core::ptr::write_volatile(d.add(12) as *mut u16, if write { DESC_F_WRITE } else { 0 });
            core::ptr::write_volatile(d.add(14) as *mut u16, 0);
            let slot = usize::from(self.avail_idx % self.size);
            core::ptr::write_volatile(self.avail.add(4 + 2 * slot) as *mut u16, id);
        }
        // Descriptor and ring entry must be visible before the index that publishes them.
        fence(Ordering::Release);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // SAFETY: avail.idx lives at offset 2 of the avail ring.
        unsafe { core::ptr::write_volatile(self.avail.add(2) as *mut u16, self.avail_idx) };
    }

    /// Asks the device to interrupt (or not) when it returns a buffer: the avail
    /// ring's `VIRTQ_AVAIL_F_NO_INTERRUPT` flag (a hint; the device may still interrupt).
    fn set_interrupt(&mut self, on: bool) {
        // SAFETY: avail.flags lives at offset 0 of the avail ring.
        unsafe { core::ptr::write_volatile(self.avail as *mut u16, u16::from(!on)) };
    }

    /// Whether the device has returned a buffer not yet taken.
    fn has_used(&self) -> bool {
        // SAFETY: used.idx at offset 2 of the used ring.
        let used_idx = unsafe { core::ptr::read_volatile(self.used.add(2) as *const u16) };
        used_idx != self.last_used
    }

    /// Takes the next used element: `(descriptor id, bytes written)`.
    fn take_used(&mut self) -> Option<(u16, u32)> {
        // SAFETY: used.idx at offset 2 of the used ring.
        let used_idx = unsafe { core::ptr::read_volatile(self.used.add(2) as *const u16) };
        if used_idx == self.last_used {
            return None;
        }
        // The element must be read after the index that published it.
        fence(Ordering::Acquire);
        let slot = usize::from(self.last_used % self.size);
        // SAFETY: used ring elements are 8 bytes at offset 4; slot < size.
        let (id, len) = unsafe {
            let e = self.used.add(4 + 8 * slot);
            (
                core::ptr::read_volatile(e as *const u32),
                core::ptr::read_volatile(e.add(4) as *const u32),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        let id = u16::try_from(id).ok().filter(|&i| i < self.size)?;
        let i = usize::from(id);
        assert!(
            self.state[i] == Slot::Posted,
            "device returned descriptor {id} that was not posted"
        );
        self.state[i] = Slot::Free;
        Some((id, len))
    }
}

/// A negotiated, running virtio-net device.
pub struct VirtioNet {
    common: Mmio,
    device: Mmio,
    notify: Mmio,
    notify_mult: u32,
    rx: Queue,
    tx: Queue,
    rx_notify_off: u16,
    tx_notify_off: u16,
    mac: [u8; 6],
    /// The receive queue signals MSI-X (its table entry 0); see [`VirtioNet::receive`].
    rx_interrupts: bool,
    /// Receive interrupts are armed (the driver last saw an empty ring).
    rx_armed: bool,
    pub counters: Counters,
}

/// A virtio capability's target: (bar, offset, length, extra dword).
fn virtio_cap(cfg: &dyn ConfigSpace, dev: &PciDevice, cfg_type: u8) -> Option<(u8, u32, u32, u32)> {
    dev.caps_with_id(0x09).find_map(|c| {
        let off = u16::from(c.offset);
        (cfg.read8(dev.bdf, off + 3) == cfg_type).then(|| {
            (
                cfg.read8(dev.bdf, off + 4),
                cfg.read32(dev.bdf, off + 8),
                cfg.read32(dev.bdf, off + 12),
                cfg.read32(dev.bdf, off + 16),
            )
        })
    })
}

fn map_cap(
    cfg: &dyn ConfigSpace,
    dev: &PciDevice,
    platform: &dyn Platform,
    cfg_type: u8,
    name: &'static str,
) -> Result<(Mmio, u32), VirtioError> {
    let (bar, off, len, extra) =
        virtio_cap(cfg, dev, cfg_type).ok_or(VirtioError::MissingCapability(name))?;
    let b = dev.bar(bar).ok_or(VirtioError::BadBar(bar))?;
    let size = b.size.ok_or(VirtioError::BadBar(bar))?;
    if u64::from(off) + u64::from(len) > size {
        return Err(VirtioError::BadBar(bar));
    }
    let base = platform
        .map_mmio(b.addr, size)
        .ok_or(VirtioError::MapFailed(b.addr))?;
    // SAFETY: the window lies inside BAR `bar` (checked against its size) which the
    // platform just mapped uncached for the kernel's lifetime.
    Ok((
        unsafe { Mmio::new(base + off as usize, len as usize) },
        extra,
    ))
}

impl VirtioNet {
    /// Negotiates with `dev` (bus mastering must be enabled) and starts both queues.
    /// With `msix` (the caller has programmed and enabled the function's MSI-X table),
    /// the receive queue signals through table entry 0; transmit completions and
    /// configuration changes never interrupt (they are reclaimed when sending).
    pub fn new(
        cfg: &dyn ConfigSpace,
        dev: &PciDevice,
        platform: &dyn Platform,
        msix: bool,
    ) -> Result<VirtioNet, VirtioError> {
        if dev.vendor != VIRTIO_VENDOR || !NET_DEVICE_IDS.contains(&dev.device) {
            return Err(VirtioError::NotVirtioNet);
        }
        let (common, _) = map_cap(cfg, dev, platform, 1, "common")?;
        let (notify, notify_mult) = map_cap(cfg, dev, platform, 2, "notify")?;
        let (device, _) = map_cap(cfg, dev, platform, 4, "device")?;
        if common.len() < common::BYTES {
            return Err(VirtioError::MissingCapability("common (too short)"));
        }
        common.write8(common::DEVICE_STATUS, 0);
        while common.read8(common::DEVICE_STATUS) != 0 {
            core::hint::spin_loop();
        }
        common.write8(common::DEVICE_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let features = read_features(&common);
        let refuse = |e| {
            common.write8(common::DEVICE_STATUS, STATUS_FAILED);
            e
        };
        if features & F_VERSION_1 == 0 {
            return Err(refuse(VirtioError::MissingFeature("VIRTIO_F_VERSION_1")));
        }
        if features & F_MAC == 0 {
            return Err(refuse(VirtioError::MissingFeature("VIRTIO_NET_F_MAC")));
        }
        let wanted = F_VERSION_1 | F_MAC;
        for (sel, half) in [(0u32, wanted as u32), (1, (wanted >> 32) as u32)] {
            common.write32(common::DRIVER_FEATURE_SELECT, sel);
            common.write32(common::DRIVER_FEATURE, half);
        }
        common.write8(
            common::DEVICE_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        if common.read8(common::DEVICE_STATUS) & STATUS_FEATURES_OK == 0 {
            return Err(refuse(VirtioError::FeaturesRejected));
        }
        common.write16(common::MSIX_CONFIG, NO_VECTOR);
        let rx_entry = if msix { 0 } else { NO_VECTOR };
        let (rx, rx_notify_off, rx_vector) =
            setup_queue(&common, platform, 0, rx_entry).map_err(refuse)?;
        let (tx, tx_notify_off, _) =
            setup_queue(&common, platform, 1, NO_VECTOR).map_err(refuse)?;
        let mut mac = [0u8; 6];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = device.read8(i);
        }
        let mut net = VirtioNet {
            common,
            device,
            notify,
            notify_mult,
            rx,
            tx,
            rx_notify_off,
            tx_notify_off,
            mac,
            rx_interrupts: rx_vector != NO_VECTOR,
            rx_armed: false,
            counters: Counters::default(),
        };
        // Receive interrupts start disarmed; the first `receive` that finds the ring
        // empty arms them.
        net.rx.set_interrupt(false);
        net.tx.set_interrupt(false);
        while let Some(id) = net.rx.free.pop() {
            net.rx.post(id, BUFFER_BYTES as u32, true);
        }
        net.common.write8(
            common::DEVICE_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        net.kick(0);
        Ok(net)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Link status (VIRTIO_NET_F_STATUS not negotiated: reported as up).
    pub fn link_up(&self) -> bool {
        let _ = self.device;
        true
    }

    fn kick(&self, queue: u16) {
        let off = if queue == 0 {
            self.rx_notify_off
        } else {
            self.tx_notify_off
        };
        fence(Ordering::SeqCst);
        self.notify
            .write16(usize::from(off) * self.notify_mult as usize, queue);
    }

    /// Whether received frames raise an interrupt (MSI-X bound); otherwise the node
    /// finds them on its next timer wake-up.
    pub fn rx_interrupts(&self) -> bool {
        self.rx_interrupts
    }

    /// The next received frame, with receive interrupts armed exactly while the ring is
    /// seen empty (as Linux's NAPI): a frame that arrives while the node is busy costs
    /// no interrupt, and one that arrives after the driver found the ring empty wakes
    /// the sleeping loop. Arming re-checks the ring, so no frame is left waiting.
    fn next_rx(&mut self) -> Option<(u16, u32)> {
        if let Some(u) = self.rx.take_used() {
            if self.rx_armed {
                self.rx.set_interrupt(false);
                self.rx_armed = false;
            }
            return Some(u);
        }
        if self.rx_interrupts && !self.rx_armed {
            self.rx.set_interrupt(true);
            self.rx_armed = true;
            // The flag must be visible before the re-check (a frame completed between
            // the two reads would otherwise neither be taken nor interrupt).
            fence(Ordering::SeqCst);
            if self.rx.has_used() {
                self.rx.set_interrupt(false);
                self.rx_armed = false;
                return self.rx.take_used();
            }
        }
        None
    }

    /// Receives one frame into `f`; returns what `f` returned, or `None` if no frame.
    pub fn receive<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let (id, len) = self.next_rx()?;
        let len = len as usize;
        let result = if (NET_HDR_BYTES..=BUFFER_BYTES).contains(&len) {
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += (len - NET_HDR_BYTES) as u64;
            // SAFETY: the device wrote `len` ≤ BUFFER_BYTES bytes into this buffer and
            // returned it; it is ours until we post it again below.
            let frame = unsafe {
                core::slice::from_raw_parts(self.rx.buf(id).add(NET_HDR_BYTES), len - NET_HDR_BYTES)
            };
            Some(f(frame))
        } else {
            self.counters.errors += 1;
            None
        };
        self.rx.post(id, BUFFER_BYTES as u32, true);
        self.kick(0);
        result
    }

    /// Reclaims finished transmit buffers.
    fn reclaim_tx(&mut self) {
        while let Some((id, _)) = self.tx.take_used() {
            self.tx.free.push(id);
        }
    }

    /// Sends a `len`-byte frame filled by `fill`. Returns false (and counts a drop)
    /// if the frame is too long or the ring is full.
    pub fn transmit(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        self.reclaim_tx();
        if len > MAX_FRAME_BYTES {
            self.counters.errors += 1;
            return false;
        }
        let Some(id) = self.tx.free.pop() else {
            self.counters.tx_drops += 1;
            return false;
        };
        // SAFETY: descriptor `id` is Free (owned by the driver), so its buffer is ours.
        let buf = unsafe { core::slice::from_raw_parts_mut(self.tx.buf(id), NET_HDR_BYTES + len) };
        buf[..NET_HDR_BYTES].fill(0);
        fill(&mut buf[NET_HDR_BYTES..]);
        self.tx.post(id, (NET_HDR_BYTES + len) as u32, false);
        self.kick(1);
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        true
    }

    /// Free transmit descriptors (after reclaiming).
    pub fn tx_free(&mut self) -> usize {
        self.reclaim_tx();
        self.tx.free_count()
    }

    /// Ring occupancy for the console: `(rx posted, rx size, tx posted, tx size)`. The
    /// receive ring is kept full, so anything below its size is a leaked buffer.
    pub fn rings(&self) -> (usize, u16, usize, u16) {
        (
            self.rx.posted_count(),
            self.rx.size(),
            self.tx.posted_count(),
            self.tx.size(),
        )
    }
}

fn read_features(common: &Mmio) -> u64 {
    let mut f = 0u64;
    for sel in 0..2u32 {
        common.write32(common::DEVICE_FEATURE_SELECT, sel);
        f |= u64::from(common.read32(common::DEVICE_FEATURE)) << (32 * sel);
    }
    f
}

/// Sets up queue `index`, bound to MSI-X table entry `vector` (or [`NO_VECTOR`]).
/// Returns the queue, its notify offset and the vector the device accepted (a device
/// that cannot bind it answers [`NO_VECTOR`]).
fn setup_queue(
    common: &Mmio,
    platform: &dyn Platform,
    index: u16,
    vector: u16,
) -> Result<(Queue, u16, u16), VirtioError> {
    common.write16(common::QUEUE_SELECT, index);
    let max = common.read16(common::QUEUE_SIZE);
    if max == 0 {
        return Err(VirtioError::QueueUnavailable(index));
    }
    let size = max.min(QUEUE_SIZE);
    if !size.is_power_of_two() || size < 8 {
        return Err(VirtioError::QueueTooSmall { queue: index, size });
    }
    let q = Queue::new(platform, size)?;
    common.write16(common::QUEUE_SIZE, size);
    common.write16(common::QUEUE_MSIX_VECTOR, vector);
    let vector = common.read16(common::QUEUE_MSIX_VECTOR);
    common.write64(common::QUEUE_DESC, q.desc_phys);
    common.write64(common::QUEUE_DRIVER, q.avail_phys);
    common.write64(common::QUEUE_DEVICE, q.used_phys);
    let notify_off = common.read16(common::QUEUE_NOTIFY_OFF);
    common.write16(common::QUEUE_ENABLE, 1);
    Ok((q, notify_off, vector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Host "DMA": leaked, zeroed, 4 KiB-aligned allocations; phys == virt.
    struct HostDma(RefCell<usize>);

    impl Platform for HostDma {
        fn dma_alloc(&self, bytes: usize) -> Option<(u64, *mut u8)> {
            let layout = std::alloc::Layout::from_size_align(bytes.max(1), 4096).ok()?;
            // SAFETY: non-zero size layout; leaked on purpose (test lifetime).
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            *self.0.borrow_mut() += bytes;
            Some((p as u64, p))
        }
        fn map_mmio(&self, _: u64, _: u64) -> Option<usize> {
            None
        }
    }

    /// The device side: consumes avail entries in order and completes them.
    struct FakeDevice {
        seen_avail: u16,
        used_idx: u16,
    }

    impl FakeDevice {
        fn pending(&self, q: &Queue) -> u16 {
            // SAFETY: test reads of the ring this test owns.
            let avail = unsafe { core::ptr::read_volatile(q.avail.add(2) as *const u16) };
            avail.wrapping_sub(self.seen_avail)
        }
        fn complete_one(&mut self, q: &Queue, written: u32) -> bool {
            if self.pending(q) == 0 {
                return false;
            }
            let slot = usize::from(self.seen_avail % q.size);
            // SAFETY: test access to rings it owns; indices < size.
            unsafe {
                let id = core::ptr::read_volatile(q.avail.add(4 + 2 * slot) as *const u16);
                let uslot = usize::from(self.used_idx % q.size);
                let e = q.used.add(4 + 8 * uslot);
                core::ptr::write_volatile(e as *mut u32, u32::from(id));
                core::ptr::write_volatile(e.add(4) as *mut u32, written);
                self.used_idx = self.used_idx.wrapping_add(1);
                core::ptr::write_volatile(q.used.add(2) as *mut u16, self.used_idx);
            }
            self.seen_avail = self.seen_avail.wrapping_add(1);
            true
        }
    }

    #[test]
    fn descriptors_cycle_without_leak_or_double_free() {
        let dma = HostDma(RefCell::new(0));
        let mut q = Queue::new(&dma, 16).unwrap();
        let mut dev = FakeDevice {
            seen_avail: 0,
            used_idx: 0,
        };
        let mut rng = 0x1234_5678_u64;
        let mut in_flight = 0usize;
        for _ in 0..5000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match rng % 3 {
                0 => {
                    if let Some(id) = q.free.pop() {
                        q.post(id, 100, false);
                        in_flight += 1;
                    }
                }
                1 => {
                    dev.complete_one(&q, 100);
                }
                _ => {
                    while let Some((id, len)) = q.take_used() {
                        assert_eq!(len, 100);
                        q.free.push(id);
                        in_flight -= 1;
                    }
                }
            }
            assert_eq!(q.free.len() + in_flight, 16, "descriptor leaked");
            let mut ids = q.free.clone();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), q.free.len(), "descriptor freed twice");
        }
    }

    #[test]
    fn receive_interrupts_are_armed_only_while_the_ring_is_empty() {
        let dma = HostDma(RefCell::new(0));
        let window = |len: usize| {
            let (_, p) = dma.dma_alloc(len).unwrap();
            // SAFETY: a leaked, zeroed host allocation of `len` bytes standing in for a
            // register window; it lives for the rest of the test process.
            unsafe { Mmio::new(p as usize, len) }
        };
        let mut net = VirtioNet {
            common: window(64),
            device: window(64),
            notify: window(64),
            notify_mult: 0,
            rx: Queue::new(&dma, 8).unwrap(),
            tx: Queue::new(&dma, 8).unwrap(),
            rx_notify_off: 0,
            tx_notify_off: 0,
            mac: [0; 6],
            rx_interrupts: true,
            rx_armed: false,
            counters: Counters::default(),
        };
        net.rx.set_interrupt(false);
        while let Some(id) = net.rx.free.pop() {
            net.rx.post(id, BUFFER_BYTES as u32, true);
        }
        // SAFETY: test read of avail.flags of a ring this test owns.
        let flags = |q: &Queue| unsafe { core::ptr::read_volatile(q.avail as *const u16) };
        let mut dev = FakeDevice {
            seen_avail: 0,
            used_idx: 0,
        };
        let frame = (NET_HDR_BYTES + 60) as u32;
        assert_eq!(flags(&net.rx), 1, "disarmed before the first look");
        assert_eq!(net.receive(|f| f.len()), None);
        assert_eq!(flags(&net.rx), 0, "an empty ring arms the interrupt");
        assert!(dev.complete_one(&net.rx, frame) && dev.complete_one(&net.rx, frame));
        assert_eq!(net.receive(|f| f.len()), Some(60));
        assert_eq!(flags(&net.rx), 1, "busy draining: no interrupts");
        assert_eq!(net.receive(|f| f.len()), Some(60));
        assert_eq!(flags(&net.rx), 1);
        assert_eq!(net.receive(|f| f.len()), None);
        assert_eq!(flags(&net.rx), 0, "drained: armed again");
        assert_eq!(net.counters.rx_frames, 2);
        // A NIC without a vector is polled and never asks for interrupts.
        net.rx_interrupts = false;
        net.rx.set_interrupt(false);
        net.rx_armed = false;
        assert_eq!(net.receive(|f| f.len()), None);
        assert_eq!(flags(&net.rx), 1);
    }

    #[test]
    #[should_panic(expected = "posted twice")]
    fn double_post_is_caught() {
        let dma = HostDma(RefCell::new(0));
        let mut q = Queue::new(&dma, 8).unwrap();
        q.post(3, 10, false);
        q.post(3, 10, false);
    }
}
