//! Intel 82574 (e1000e, PCI 8086:10d3; QEMU `-device e1000e`), one receive and one
//! transmit queue with legacy descriptors. Polled, or with
//! [`E1000e::enable_rx_interrupts`] (after the platform programmed MSI-X entry 0) the
//! receive queue interrupts through MSI-X vector 0, armed exactly while the ring is
//! seen empty (as the virtio-net driver and Linux's NAPI do).
//!
//! Layers: [`Registers`] is the only way to the device's BAR0 ([`RegWindow`] does it
//! through the `volatile` crate; host tests use a fake); [`DescMem`] is a ring's DMA
//! memory (descriptors then buffers), also accessed through `volatile`; [`RxRing`] and
//! [`TxRing`] are the ring bookkeeping, which knows nothing of registers; [`E1000e`]
//! is reset, configuration and the receive/transmit paths over both.
//!
//! Everything the device writes is input and is validated before use: a receive
//! descriptor is used only if it is the next one the driver posted, has DD and EOP set,
//! no error bits and a length within `MIN_FRAME_BYTES..=MAX_RX_BYTES`; anything else is
//! counted (`Counters::errors`) and the buffer reposted. The head registers (RDH/TDH)
//! are never read: ownership comes back only through the DD bit of the descriptor the
//! driver expects next. Descriptor fields are written first, then a release fence, then
//! the tail register that hands them to the device.

use crate::pci::{BarKind, ConfigSpace, PciDevice};
use crate::platform::Platform;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};
use volatile::VolatilePtr;

pub use crate::virtio::Counters;

pub const VENDOR: u16 = 0x8086;
/// 82574L, the part QEMU's `e1000e` emulates.
pub const DEVICE_IDS: [u16; 1] = [0x10d3];
/// Descriptors per ring: a multiple of 8 (the ring length must be a multiple of 128
/// bytes), at most 65536 / 16.
pub const RING_SIZE: u16 = 128;
const _: () = assert!(RING_SIZE.is_multiple_of(8) && RING_SIZE >= 8);
/// Bytes per buffer (RCTL.BSIZE = 2048 with BSEX clear).
pub const BUFFER_BYTES: usize = 2048;
/// Largest frame the driver sends: an untagged Ethernet frame without its FCS.
pub const MAX_FRAME_BYTES: usize = 1514;
/// Received lengths accepted: an Ethernet header at least, and at most a VLAN-tagged
/// frame with its FCS (when the device does not strip it).
pub const MIN_FRAME_BYTES: usize = 14;
pub const MAX_RX_BYTES: usize = 1522;
const _: () = assert!(MAX_RX_BYTES <= BUFFER_BYTES && MAX_FRAME_BYTES <= MAX_RX_BYTES);
/// Descriptors occupy the first page of a ring's DMA memory, buffers follow.
const DESC_BYTES: usize = 16;
const BUFFERS_OFFSET: usize = 4096;
const _: () = assert!(RING_SIZE as usize * DESC_BYTES <= BUFFERS_OFFSET);
/// How many register reads a reset may take before the device is declared dead.
const RESET_POLLS: u32 = 1_000_000;

/// Register offsets in BAR0 (82574 datasheet, section 10).
pub mod reg {
    pub const CTRL: usize = 0x0000;
    pub const STATUS: usize = 0x0008;
    pub const IMS: usize = 0x00D0;
    pub const IMC: usize = 0x00D8;
    /// Extended interrupt auto-clear: causes cleared from ICR when their MSI-X message
    /// is sent.
    pub const EIAC: usize = 0x00DC;
    /// Interrupt vector allocation (MSI-X): which vector each cause raises.
    pub const IVAR: usize = 0x00E4;
    pub const RCTL: usize = 0x0100;
    pub const TCTL: usize = 0x0400;
    pub const TIPG: usize = 0x0410;
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    pub const TDBAL: usize = 0x3800;
    pub const TDBAH: usize = 0x3804;
    pub const TDLEN: usize = 0x3808;
    pub const TDH: usize = 0x3810;
    pub const TDT: usize = 0x3818;
    pub const MTA: usize = 0x5200;
    pub const MTA_ENTRIES: usize = 128;
    pub const RAL0: usize = 0x5400;
    pub const RAH0: usize = 0x5404;
    /// Bytes the driver touches (the BAR is 128 KiB).
    pub const WINDOW_BYTES: usize = 0x2_0000;
}

const CTRL_SLU: u32 = 1 << 6;
const CTRL_RST: u32 = 1 << 26;
const CTRL_PHY_RST: u32 = 1 << 31;
const STATUS_LU: u32 = 1 << 1;
const RCTL_EN: u32 = 1 << 1;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const TCTL_CT: u32 = 0x0f << 4;
const TCTL_COLD: u32 = 0x3f << 12;
/// IPGT 10, IPGR1 8, IPGR2 6 (the datasheet's values for 802.3).
const TIPG_DEFAULT: u32 = 10 | (8 << 10) | (6 << 20);
const RAH_AV: u32 = 1 << 31;
/// Receive queue 0's cause in ICR/IMS/IMC/EIAC when MSI-X is on.
pub const ICR_RXQ0: u32 = 1 << 20;
/// IVAR: receive queue 0 → MSI-X vector 0, entry valid (bit 3); every other cause
/// (transmit, link) left invalid, so it raises nothing.
const IVAR_RXQ0_VECTOR0: u32 = 1 << 3;

/// Descriptor status bits (receive and transmit).
const DD: u8 = 1 << 0;
const RX_EOP: u8 = 1 << 1;
const TX_CMD_EOP: u8 = 1 << 0;
const TX_CMD_IFCS: u8 = 1 << 1;
const TX_CMD_RS: u8 = 1 << 3;

/// Why an e1000e function was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum E1000eError {
    NotE1000e,
    /// BAR0 is missing, not memory, or smaller than the register window.
    BadBar,
    MapFailed(u64),
    /// CTRL.RST did not clear.
    ResetTimeout,
    /// Receive address 0 is not valid and holds no MAC.
    NoMac,
    OutOfMemory,
}

impl fmt::Display for E1000eError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            E1000eError::NotE1000e => f.write_str("not an Intel 82574 (e1000e)"),
            E1000eError::BadBar => f.write_str("BAR0 is not a 128 KiB memory window"),
            E1000eError::MapFailed(a) => write!(f, "cannot map BAR0 at {a:#x}"),
            E1000eError::ResetTimeout => f.write_str("device did not finish its reset"),
            E1000eError::NoMac => f.write_str("no valid MAC address in RAL0/RAH0"),
            E1000eError::OutOfMemory => f.write_str("no DMA memory for the rings"),
        }
    }
}

/// 32-bit access to the device's register window.
pub trait Registers {
    fn read(&self, off: usize) -> u32;
    fn write(&self, off: usize, value: u32);
}

/// BAR0, mapped uncached, through `volatile`.
pub struct RegWindow {
    base: NonNull<u32>,
}

// SAFETY: a handle to device registers used from the kernel's main loop only (one CPU
// at a time); every access is volatile.
unsafe impl Send for RegWindow {}

impl RegWindow {
    /// # Safety
    /// `base` must be a mapped, uncached window of at least `reg::WINDOW_BYTES` bytes of
    /// an 82574's BAR0 that stays mapped for the driver's lifetime and that nothing else
    /// in Rust refers to.
    pub unsafe fn new(base: NonNull<u8>) -> RegWindow {
        RegWindow { base: base.cast() }
    }

    fn at(&self, off: usize) -> VolatilePtr<'_, u32> {
        assert!(
            off.is_multiple_of(4) && off + 4 <= reg::WINDOW_BYTES,
            "e1000e register {off:#x} outside its window"
        );
        // SAFETY: aligned and inside the window (checked); `new`'s contract makes the
        // window valid device memory for the driver's lifetime.
        unsafe { VolatilePtr::new(self.base.add(off / 4)) }
    }
}

impl Registers for RegWindow {
    fn read(&self, off: usize) -> u32 {
        self.at(off).read()
    }
    fn write(&self, off: usize, value: u32) {
        self.at(off).write(value)
    }
}

/// One ring's DMA memory: `RING_SIZE` descriptors at offset 0, then one buffer of
/// `BUFFER_BYTES` per descriptor from `BUFFERS_OFFSET`. Physically contiguous.
pub struct DescMem {
    phys: u64,
    virt: NonNull<u8>,
}

// SAFETY: the memory is owned by this ring alone (shared only with the device).
unsafe impl Send for DescMem {}

impl DescMem {
    pub const BYTES: usize = BUFFERS_OFFSET + RING_SIZE as usize * BUFFER_BYTES;

    pub fn alloc(platform: &dyn Platform) -> Result<DescMem, E1000eError> {
        let (phys, virt) = platform
            .dma_alloc(Self::BYTES)
            .ok_or(E1000eError::OutOfMemory)?;
        let virt = NonNull::new(virt).ok_or(E1000eError::OutOfMemory)?;
        Ok(DescMem { phys, virt })
    }

    fn at<T>(&self, off: usize) -> VolatilePtr<'_, T> {
        assert!(
            off + core::mem::size_of::<T>() <= Self::BYTES,
            "ring access {off:#x} outside its DMA memory"
        );
        // SAFETY: inside the allocation (checked); `Platform::dma_alloc` returned it
        // zeroed, identity-mapped and owned by this ring. Descriptor fields are
        // naturally aligned (offsets 0, 8, 10, 11, 12, 14 of 16-byte descriptors).
        unsafe { VolatilePtr::new(self.virt.add(off).cast::<T>()) }
    }

    fn desc(i: u16) -> usize {
        assert!(i < RING_SIZE, "descriptor {i} outside the ring");
        usize::from(i) * DESC_BYTES
    }

    fn buffer_phys(&self, i: u16) -> u64 {
        self.phys + (BUFFERS_OFFSET + usize::from(i) * BUFFER_BYTES) as u64
    }

    /// Descriptor `i`'s buffer. The caller must own descriptor `i` (not posted).
    fn buffer(&self, i: u16, len: usize) -> &[u8] {
        assert!(i < RING_SIZE && len <= BUFFER_BYTES);
        // SAFETY: in bounds (asserted); the descriptor is not posted, so the device
        // does not write this buffer while the slice lives (it borrows the ring).
        unsafe {
            core::slice::from_raw_parts(
                self.virt
                    .as_ptr()
                    .add(BUFFERS_OFFSET + usize::from(i) * BUFFER_BYTES),
                len,
            )
        }
    }

    /// Descriptor `i`'s buffer, writable. The caller must own descriptor `i`.
    fn buffer_mut(&mut self, i: u16, len: usize) -> &mut [u8] {
        assert!(i < RING_SIZE && len <= BUFFER_BYTES);
        // SAFETY: as in `buffer`; `&mut self` makes the slice the only reference.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.virt
                    .as_ptr()
                    .add(BUFFERS_OFFSET + usize::from(i) * BUFFER_BYTES),
                len,
            )
        }
    }
}

/// Why a completed receive descriptor was not delivered.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RxReject {
    /// EOP clear: a frame over several buffers, which 2 KiB buffers never need.
    NotEndOfPacket,
    /// The device reported a receive error (CRC, symbol, sequence, ...).
    Errors(u8),
    BadLength(usize),
}

/// The receive ring. Every descriptor but one is posted (owned by the device); the
/// one not posted is the tail (RDT), the last one the driver handed back.
pub struct RxRing {
    mem: DescMem,
    /// The next descriptor the device completes (in order).
    next: u16,
}

impl RxRing {
    /// Posts every descriptor; returns the ring and the initial tail (RDT).
    pub fn new(mem: DescMem) -> (RxRing, u16) {
        let ring = RxRing { mem, next: 0 };
        for i in 0..RING_SIZE {
            ring.reset_desc(i);
        }
        fence(Ordering::Release);
        (ring, RING_SIZE - 1)
    }

    pub fn phys(&self) -> u64 {
        self.mem.phys
    }

    fn reset_desc(&self, i: u16) {
        let d = DescMem::desc(i);
        self.mem.at::<u64>(d).write(self.mem.buffer_phys(i));
        self.mem.at::<u16>(d + 8).write(0);
        self.mem.at::<u8>(d + 12).write(0);
        self.mem.at::<u8>(d + 13).write(0);
    }

    /// Takes the next completed descriptor, if the device completed it: its index and
    /// the validated frame length, or why it is rejected. The caller reads the frame
    /// with [`frame`](Self::frame), then returns the descriptor with
    /// [`repost`](Self::repost).
    pub fn take(&mut self) -> Option<(u16, Result<usize, RxReject>)> {
        let i = self.next;
        let d = DescMem::desc(i);
        let status = self.mem.at::<u8>(d + 12).read();
        if status & DD == 0 {
            return None;
        }
        // The length and the buffer must be read after the status that published them.
        fence(Ordering::Acquire);
        let len = usize::from(self.mem.at::<u16>(d + 8).read());
        let errors = self.mem.at::<u8>(d + 13).read();
        self.next = (i + 1) % RING_SIZE;
        let verdict = if status & RX_EOP == 0 {
            Err(RxReject::NotEndOfPacket)
        } else if errors != 0 {
            Err(RxReject::Errors(errors))
        } else if !(MIN_FRAME_BYTES..=MAX_RX_BYTES).contains(&len) {
            Err(RxReject::BadLength(len))
        } else {
            Ok(len)
        };
        Some((i, verdict))
    }

    /// The frame in descriptor `i` (just taken, with its validated length).
    pub fn frame(&self, i: u16, len: usize) -> &[u8] {
        assert!(len <= MAX_RX_BYTES);
        self.mem.buffer(i, len)
    }

    /// Hands descriptor `i` (the one just taken) back; returns the new tail (RDT).
    pub fn repost(&mut self, i: u16) -> u16 {
        assert_eq!(
            (i + 1) % RING_SIZE,
            self.next,
            "receive descriptors are reposted in order"
        );
        self.reset_desc(i);
        // The cleared descriptor must be visible before the tail that gives it back.
        fence(Ordering::Release);
        i
    }
}

/// The transmit ring: descriptors `clean .. clean + in_flight` (mod size) are posted;
/// at most `RING_SIZE - 1` are, so the tail never catches the head.
pub struct TxRing {
    mem: DescMem,
    clean: u16,
    in_flight: u16,
}

impl TxRing {
    pub fn new(mem: DescMem) -> TxRing {
        TxRing {
            mem,
            clean: 0,
            in_flight: 0,
        }
    }

    pub fn phys(&self) -> u64 {
        self.mem.phys
    }

    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Reclaims descriptors the device finished, in order; returns how many.
    pub fn reclaim(&mut self) -> u16 {
        let mut n = 0;
        while self.in_flight > 0 {
            let d = DescMem::desc(self.clean);
            if self.mem.at::<u8>(d + 12).read() & DD == 0 {
                break;
            }
            self.clean = (self.clean + 1) % RING_SIZE;
            self.in_flight -= 1;
            n += 1;
        }
        n
    }

    /// Fills the next free descriptor's buffer with `len` bytes from `fill` and posts
    /// it; returns the new tail (TDT), or `None` if the ring is full.
    pub fn post(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Option<u16> {
        assert!((1..=MAX_FRAME_BYTES).contains(&len), "frame of {len} bytes");
        if self.in_flight >= RING_SIZE - 1 {
            return None;
        }
        let i = (self.clean + self.in_flight) % RING_SIZE;
        fill(self.mem.buffer_mut(i, len));
        let d = DescMem::desc(i);
        self.mem.at::<u64>(d).write(self.mem.buffer_phys(i));
        self.mem.at::<u16>(d + 8).write(len as u16);
        self.mem.at::<u8>(d + 10).write(0);
        self.mem
            .at::<u8>(d + 11)
            .write(TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS);
        self.mem.at::<u8>(d + 12).write(0);
        self.mem.at::<u16>(d + 14).write(0);
        self.in_flight += 1;
        // The descriptor and buffer must be visible before the tail that posts them.
        fence(Ordering::Release);
        Some((i + 1) % RING_SIZE)
    }
}

/// A reset, configured, running 82574.
pub struct E1000e<R: Registers = RegWindow> {
    regs: R,
    rx: RxRing,
    tx: TxRing,
    mac: [u8; 6],
    pub counters: Counters,
    /// Receive descriptors rejected, by reason (also counted in `counters.errors`).
    pub rejected: [u64; 3],
    rx_interrupts: bool,
    rx_armed: bool,
}

/// Maps `dev`'s BAR0 and starts the device (bus mastering must be enabled).
pub fn probe(
    dev: &PciDevice,
    _cfg: &dyn ConfigSpace,
    platform: &dyn Platform,
) -> Result<E1000e<RegWindow>, E1000eError> {
    if dev.vendor != VENDOR || !DEVICE_IDS.contains(&dev.device) {
        return Err(E1000eError::NotE1000e);
    }
    let bar = dev.bar(0).ok_or(E1000eError::BadBar)?;
    let size = bar.size.ok_or(E1000eError::BadBar)?;
    if bar.kind == BarKind::Io || size < reg::WINDOW_BYTES as u64 {
        return Err(E1000eError::BadBar);
    }
    let base = platform
        .map_mmio(bar.addr, size)
        .ok_or(E1000eError::MapFailed(bar.addr))?;
    let base = NonNull::new(base as *mut u8).ok_or(E1000eError::MapFailed(bar.addr))?;
    // SAFETY: BAR0 is a memory BAR of at least the register window (checked) that the
    // platform just mapped uncached for the kernel's lifetime; this is its only handle.
    let regs = unsafe { RegWindow::new(base) };
    E1000e::start(regs, platform)
}

impl<R: Registers> E1000e<R> {
    /// Resets the device, reads its MAC, sets up both rings and enables receive and
    /// transmit with every interrupt masked.
    pub fn start(regs: R, platform: &dyn Platform) -> Result<E1000e<R>, E1000eError> {
        regs.write(reg::IMC, u32::MAX);
        regs.write(reg::CTRL, regs.read(reg::CTRL) | CTRL_RST);
        let mut polls = 0;
        while regs.read(reg::CTRL) & CTRL_RST != 0 {
            polls += 1;
            if polls >= RESET_POLLS {
                return Err(E1000eError::ResetTimeout);
            }
            core::hint::spin_loop();
        }
        regs.write(reg::IMC, u32::MAX);
        regs.write(reg::CTRL, (regs.read(reg::CTRL) | CTRL_SLU) & !CTRL_PHY_RST);
        let (ral, rah) = (regs.read(reg::RAL0), regs.read(reg::RAH0));
        if rah & RAH_AV == 0 {
            return Err(E1000eError::NoMac);
        }
        let mac = [
            ral as u8,
            (ral >> 8) as u8,
            (ral >> 16) as u8,
            (ral >> 24) as u8,
            rah as u8,
            (rah >> 8) as u8,
        ];
        for i in 0..reg::MTA_ENTRIES {
            regs.write(reg::MTA + 4 * i, 0);
        }
        let (rx, rx_tail) = RxRing::new(DescMem::alloc(platform)?);
        let tx = TxRing::new(DescMem::alloc(platform)?);
        let ring_bytes = u32::from(RING_SIZE) * DESC_BYTES as u32;
        regs.write(reg::RDBAL, rx.phys() as u32);
        regs.write(reg::RDBAH, (rx.phys() >> 32) as u32);
        regs.write(reg::RDLEN, ring_bytes);
        regs.write(reg::RDH, 0);
        regs.write(reg::RDT, u32::from(rx_tail));
        regs.write(reg::TDBAL, tx.phys() as u32);
        regs.write(reg::TDBAH, (tx.phys() >> 32) as u32);
        regs.write(reg::TDLEN, ring_bytes);
        regs.write(reg::TDH, 0);
        regs.write(reg::TDT, 0);
        regs.write(reg::TIPG, TIPG_DEFAULT);
        // Unicast to our address and broadcast (ARP); 2 KiB buffers; strip the FCS.
        regs.write(reg::RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        regs.write(reg::TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);
        Ok(E1000e {
            regs,
            rx,
            tx,
            mac,
            counters: Counters::default(),
            rejected: [0; 3],
            rx_interrupts: false,
            rx_armed: false,
        })
    }

    /// Routes receive queue 0 to MSI-X vector 0 (the caller has programmed and enabled
    /// the MSI-X table), with its cause auto-cleared on each message. Interrupts stay
    /// masked until [`E1000e::receive`] finds the ring empty.
    pub fn enable_rx_interrupts(&mut self) {
        self.regs.write(reg::IMC, u32::MAX);
        self.regs.write(reg::IVAR, IVAR_RXQ0_VECTOR0);
        self.regs.write(reg::EIAC, ICR_RXQ0);
        self.rx_interrupts = true;
        self.rx_armed = false;
    }

    /// Whether received frames interrupt (else the node polls on a timer).
    pub fn rx_interrupts(&self) -> bool {
        self.rx_interrupts
    }

    /// The next completed receive descriptor, with the receive interrupt armed exactly
    /// while the ring is seen empty: unmasked (IMS) when nothing is waiting, then the
    /// ring re-checked so a frame that completed in between is taken now rather than
    /// left for an interrupt already past; masked again (IMC) when frames flow.
    fn next_rx(&mut self) -> Option<(u16, Result<usize, RxReject>)> {
        if let Some(d) = self.rx.take() {
            if self.rx_armed {
                self.regs.write(reg::IMC, ICR_RXQ0);
                self.rx_armed = false;
            }
            return Some(d);
        }
        if self.rx_interrupts && !self.rx_armed {
            self.regs.write(reg::IMS, ICR_RXQ0);
            self.rx_armed = true;
            fence(Ordering::SeqCst);
            if let Some(d) = self.rx.take() {
                self.regs.write(reg::IMC, ICR_RXQ0);
                self.rx_armed = false;
                return Some(d);
            }
        }
        None
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn link_up(&self) -> bool {
        self.regs.read(reg::STATUS) & STATUS_LU != 0
    }

    /// Receives one frame into `f`; returns what `f` returned, or `None` if no valid
    /// frame was waiting (a rejected descriptor is counted and reposted).
    pub fn receive<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let (i, verdict) = self.next_rx()?;
        let out = match verdict {
            Ok(len) => {
                self.counters.rx_frames += 1;
                self.counters.rx_bytes += len as u64;
                Some(f(self.rx.frame(i, len)))
            }
            Err(why) => {
                self.counters.errors += 1;
                self.rejected[match why {
                    RxReject::NotEndOfPacket => 0,
                    RxReject::Errors(_) => 1,
                    RxReject::BadLength(_) => 2,
                }] += 1;
                None
            }
        };
        let tail = self.rx.repost(i);
        self.regs.write(reg::RDT, u32::from(tail));
        out
    }

    /// Sends a `len`-byte frame filled by `fill`. Returns false (and counts it) if the
    /// frame is empty or too long, or the ring is full.
    pub fn transmit(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        self.tx.reclaim();
        if len == 0 || len > MAX_FRAME_BYTES {
            self.counters.errors += 1;
            return false;
        }
        let Some(tail) = self.tx.post(len, fill) else {
            self.counters.tx_drops += 1;
            return false;
        };
        fence(Ordering::SeqCst);
        self.regs.write(reg::TDT, u32::from(tail));
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        true
    }

    /// Ring occupancy for the console: `(rx posted, rx size, tx in flight, tx size)`.
    /// The receive ring keeps all but its tail descriptor posted.
    pub fn rings(&mut self) -> (usize, u16, usize, u16) {
        self.tx.reclaim();
        (
            usize::from(RING_SIZE - 1),
            RING_SIZE,
            usize::from(self.tx.in_flight()),
            RING_SIZE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Host "DMA": leaked, zeroed, 4 KiB-aligned allocations; phys == virt.
    struct HostDma;

    impl Platform for HostDma {
        fn dma_alloc(&self, bytes: usize) -> Option<(u64, *mut u8)> {
            let layout = std::alloc::Layout::from_size_align(bytes.max(1), 4096).ok()?;
            // SAFETY: non-zero size layout; leaked on purpose (test lifetime).
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            Some((p as u64, p))
        }
        fn map_mmio(&self, _: u64, _: u64) -> Option<usize> {
            None
        }
    }

    /// The device side of an 82574, enough to run the driver against: registers in a
    /// map, reset that self-clears, and DMA into the rings the driver programmed
    /// (phys == virt on the host), with hooks to write arbitrary descriptors.
    #[derive(Default)]
    struct FakeDevice {
        regs: RefCell<BTreeMap<usize, u32>>,
        rdh: RefCell<u32>,
        tdh: RefCell<u32>,
        sent: RefCell<Vec<Vec<u8>>>,
        /// The interrupt mask as IMS/IMC leave it.
        mask: RefCell<u32>,
        writes: RefCell<u64>,
        /// A frame the device completes the moment the driver unmasks (IMS): the race
        /// the driver's re-check must catch.
        on_unmask: RefCell<Option<Vec<u8>>>,
    }

    impl Registers for &FakeDevice {
        fn read(&self, off: usize) -> u32 {
            match off {
                reg::STATUS => STATUS_LU,
                _ => *self.regs.borrow().get(&off).unwrap_or(&0),
            }
        }
        fn write(&self, off: usize, value: u32) {
            let value = if off == reg::CTRL && value & CTRL_RST != 0 {
                let mut r = self.regs.borrow_mut();
                r.clear();
                r.insert(reg::RAL0, 0x0000_5452);
                r.insert(reg::RAH0, RAH_AV | 0x0700);
                value & !CTRL_RST
            } else {
                value
            };
            self.regs.borrow_mut().insert(off, value);
            *self.writes.borrow_mut() += 1;
            match off {
                reg::IMS => {
                    *self.mask.borrow_mut() |= value;
                    if let Some(f) = self.on_unmask.borrow_mut().take() {
                        assert!(self.deliver(&f));
                    }
                }
                reg::IMC => *self.mask.borrow_mut() &= !value,
                _ => {}
            }
        }
    }

    impl FakeDevice {
        fn reg(&self, off: usize) -> u32 {
            *self.regs.borrow().get(&off).unwrap_or(&0)
        }
        fn ring(&self, lo: usize, hi: usize) -> *mut u8 {
            (u64::from(self.reg(lo)) | (u64::from(self.reg(hi)) << 32)) as *mut u8
        }
        /// Writes a receive completion into the descriptor at RDH, as the device
        /// would: `frame` into its buffer (truncated to the buffer), then length,
        /// errors and status. Returns false if the driver posted no buffer.
        fn deliver_raw(&self, frame: &[u8], len: u16, status: u8, errors: u8) -> bool {
            let size = self.reg(reg::RDLEN) / 16;
            let mut rdh = self.rdh.borrow_mut();
            if *rdh == self.reg(reg::RDT) {
                return false;
            }
            let ring = self.ring(reg::RDBAL, reg::RDBAH);
            // SAFETY: the ring and buffers are this test's leaked DMA allocations;
            // RDH < size and every field is inside its 16-byte descriptor.
            unsafe {
                let d = ring.add(*rdh as usize * 16);
                let buf = core::ptr::read_unaligned(d as *const u64) as *mut u8;
                let n = frame.len().min(BUFFER_BYTES);
                core::ptr::copy_nonoverlapping(frame.as_ptr(), buf, n);
                core::ptr::write_volatile(d.add(8) as *mut u16, len);
                core::ptr::write_volatile(d.add(13), errors);
                core::ptr::write_volatile(d.add(12), status);
            }
            *rdh = (*rdh + 1) % size;
            true
        }
        fn deliver(&self, frame: &[u8]) -> bool {
            self.deliver_raw(frame, frame.len() as u16, DD | RX_EOP, 0)
        }
        /// Sends every descriptor between TDH and TDT, setting DD.
        fn process_tx(&self) {
            let size = self.reg(reg::TDLEN) / 16;
            let ring = self.ring(reg::TDBAL, reg::TDBAH);
            let mut tdh = self.tdh.borrow_mut();
            while *tdh != self.reg(reg::TDT) {
                // SAFETY: as in `deliver_raw`.
                unsafe {
                    let d = ring.add(*tdh as usize * 16);
                    let buf = core::ptr::read_unaligned(d as *const u64) as *const u8;
                    let len = core::ptr::read_volatile(d.add(8) as *const u16);
                    let cmd = core::ptr::read_volatile(d.add(11));
                    assert_eq!(cmd & TX_CMD_EOP, TX_CMD_EOP);
                    let frame = std::slice::from_raw_parts(buf, usize::from(len)).to_vec();
                    self.sent.borrow_mut().push(frame);
                    core::ptr::write_volatile(d.add(12), DD);
                }
                *tdh = (*tdh + 1) % size;
            }
        }
    }

    fn frame(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn start_programs_the_device() {
        let dev = FakeDevice::default();
        let nic = E1000e::start(&dev, &HostDma).unwrap();
        assert_eq!(nic.mac(), [0x52, 0x54, 0, 0, 0, 7]);
        assert_eq!(dev.reg(reg::RDLEN), u32::from(RING_SIZE) * 16);
        assert_eq!(dev.reg(reg::RDT), u32::from(RING_SIZE - 1));
        assert_eq!(dev.reg(reg::TDT), 0);
        assert_eq!(dev.reg(reg::IMC), u32::MAX, "interrupts masked");
        assert_ne!(dev.reg(reg::RCTL) & RCTL_EN, 0);
        assert_ne!(dev.reg(reg::TCTL) & TCTL_EN, 0);
        assert!(nic.link_up());
    }

    #[test]
    fn receive_interrupt_is_armed_only_while_the_ring_is_empty() {
        let dev = FakeDevice::default();
        let mut nic = E1000e::start(&dev, &HostDma).unwrap();
        assert!(!nic.rx_interrupts());
        // Polled: an empty ring unmasks nothing.
        assert!(nic.receive(|_| ()).is_none());
        assert_eq!(*dev.mask.borrow(), 0);
        nic.enable_rx_interrupts();
        assert!(nic.rx_interrupts());
        assert_eq!(dev.reg(reg::IVAR), IVAR_RXQ0_VECTOR0);
        assert_eq!(dev.reg(reg::EIAC), ICR_RXQ0);
        assert_eq!(*dev.mask.borrow(), 0, "masked until the ring is seen empty");
        assert!(nic.receive(|_| ()).is_none());
        assert_eq!(*dev.mask.borrow(), ICR_RXQ0, "armed on an empty ring");
        let writes = *dev.writes.borrow();
        assert!(nic.receive(|_| ()).is_none());
        assert_eq!(
            *dev.writes.borrow(),
            writes,
            "staying armed costs no register write"
        );
        assert!(dev.deliver(&frame(60, 1)) && dev.deliver(&frame(60, 2)));
        assert_eq!(nic.receive(|f| f.to_vec()), Some(frame(60, 1)));
        assert_eq!(*dev.mask.borrow(), 0, "masked while frames flow");
        assert_eq!(nic.receive(|f| f.to_vec()), Some(frame(60, 2)));
        assert_eq!(*dev.mask.borrow(), 0);
        // A frame completed just as the driver unmasks is taken by the re-check.
        assert!(nic.receive(|_| ()).is_none());
        assert_eq!(*dev.mask.borrow(), ICR_RXQ0);
        assert!(dev.deliver(&frame(70, 3)));
        assert_eq!(nic.receive(|f| f.to_vec()), Some(frame(70, 3)));
        *dev.on_unmask.borrow_mut() = Some(frame(80, 4));
        assert_eq!(nic.receive(|f| f.to_vec()), Some(frame(80, 4)));
        assert_eq!(
            *dev.mask.borrow(),
            0,
            "masked again after the re-check found it"
        );
        assert!(nic.receive(|_| ()).is_none());
        assert_eq!(*dev.mask.borrow(), ICR_RXQ0);
        assert_eq!(nic.counters.rx_frames, 4);
    }

    #[test]
    fn refuses_a_device_without_a_mac() {
        struct NoMac;
        impl Registers for NoMac {
            fn read(&self, _: usize) -> u32 {
                0
            }
            fn write(&self, _: usize, _: u32) {}
        }
        assert_eq!(
            E1000e::start(NoMac, &HostDma).err(),
            Some(E1000eError::NoMac)
        );
    }

    #[test]
    fn frames_cross_both_rings_many_times_round() {
        let dev = FakeDevice::default();
        let mut nic = E1000e::start(&dev, &HostDma).unwrap();
        let mut rng = 0x9e37_79b9_u64;
        let (mut delivered, mut received, mut sent) = (0u64, 0u64, 0u64);
        for step in 0..20_000u32 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = MIN_FRAME_BYTES + (rng as usize % (MAX_FRAME_BYTES - MIN_FRAME_BYTES));
            match rng % 4 {
                0 => delivered += u64::from(dev.deliver(&frame(len, step as u8))),
                1 => {
                    if let Some(n) = nic.receive(|f| f.len()) {
                        assert!((MIN_FRAME_BYTES..=MAX_RX_BYTES).contains(&n));
                        received += 1;
                    }
                }
                2 => sent += u64::from(nic.transmit(len, |b| b.copy_from_slice(&frame(len, 3)))),
                _ => dev.process_tx(),
            }
            let (_, _, in_flight, size) = nic.rings();
            assert!(in_flight < usize::from(size), "transmit ring overfilled");
        }
        while nic.receive(|_| ()).is_some() {
            received += 1;
        }
        dev.process_tx();
        assert_eq!(received, delivered, "a received frame was lost");
        assert_eq!(
            dev.sent.borrow().len() as u64,
            sent,
            "a sent frame was lost"
        );
        assert_eq!(nic.counters.rx_frames, received);
        assert_eq!(nic.counters.errors, 0);
        assert!(
            sent > 1000 && received > 1000,
            "sent {sent} received {received}"
        );
        assert_eq!(nic.rings().2, 0, "every transmit descriptor reclaimed");
    }

    #[test]
    fn received_frames_arrive_intact_and_in_order() {
        let dev = FakeDevice::default();
        let mut nic = E1000e::start(&dev, &HostDma).unwrap();
        for round in 0..3u8 {
            let frames: Vec<Vec<u8>> = (0..RING_SIZE as usize - 1)
                .map(|k| frame(60 + k, round.wrapping_mul(31).wrapping_add(k as u8)))
                .collect();
            for f in &frames {
                assert!(dev.deliver(f));
            }
            assert!(
                !dev.deliver(&frames[0]),
                "the device overran the driver's tail"
            );
            for f in &frames {
                assert_eq!(nic.receive(|g| g.to_vec()).as_ref(), Some(f));
            }
            assert_eq!(nic.receive(|_| ()), None);
        }
    }

    #[test]
    fn bad_descriptors_are_counted_dropped_and_the_ring_goes_on() {
        let dev = FakeDevice::default();
        let mut nic = E1000e::start(&dev, &HostDma).unwrap();
        let good = frame(100, 1);
        let bad = [
            (4000u16, DD | RX_EOP, 0u8), // longer than the buffer
            (0, DD | RX_EOP, 0),         // empty
            (13, DD | RX_EOP, 0),        // shorter than a header
            (MAX_RX_BYTES as u16 + 1, DD | RX_EOP, 0),
            (100, DD, 0),             // not end of packet
            (100, DD | RX_EOP, 0x01), // CRC error
        ];
        for (len, status, errors) in bad {
            assert!(dev.deliver_raw(&good, len, status, errors));
            assert!(dev.deliver(&good));
        }
        let mut got = 0;
        for _ in 0..2 * bad.len() {
            if let Some(f) = nic.receive(|f| f.to_vec()) {
                assert_eq!(f, good);
                got += 1;
            }
        }
        assert_eq!(got, bad.len());
        assert_eq!(nic.counters.errors, bad.len() as u64);
        assert_eq!(nic.rejected, [1, 1, 4]);
        // Every rejected buffer was reposted: the ring still takes a full load.
        for _ in 0..RING_SIZE - 1 {
            assert!(dev.deliver(&good));
        }
        assert_eq!(
            std::iter::from_fn(|| nic.receive(|_| ())).count(),
            usize::from(RING_SIZE) - 1
        );
    }

    #[test]
    fn a_full_transmit_ring_drops_and_counts() {
        let dev = FakeDevice::default();
        let mut nic = E1000e::start(&dev, &HostDma).unwrap();
        for _ in 0..RING_SIZE - 1 {
            assert!(nic.transmit(64, |b| b.fill(7)));
        }
        assert!(!nic.transmit(64, |b| b.fill(7)), "ring full");
        assert_eq!(nic.counters.tx_drops, 1);
        assert!(!nic.transmit(MAX_FRAME_BYTES + 1, |_| ()));
        assert_eq!(nic.counters.errors, 1);
        dev.process_tx();
        assert!(nic.transmit(64, |b| b.fill(8)));
        assert_eq!(nic.rings().2, 1);
        dev.process_tx();
        assert_eq!(dev.sent.borrow().len(), usize::from(RING_SIZE));
        assert!(dev.sent.borrow().iter().all(|f| f.len() == 64));
    }

    #[test]
    fn a_completion_on_a_descriptor_not_expected_is_not_taken() {
        // The device marks a descriptor other than the next one done: the driver waits
        // for the next one and never reads the stray.
        let dev = FakeDevice::default();
        let mut nic = E1000e::start(&dev, &HostDma).unwrap();
        let ring = dev.ring(reg::RDBAL, reg::RDBAH);
        // SAFETY: descriptor 5 of the test's leaked ring.
        unsafe { core::ptr::write_volatile(ring.add(5 * 16 + 12), DD | RX_EOP) };
        assert_eq!(nic.receive(|_| ()), None);
        assert_eq!(nic.counters.rx_frames, 0);
    }
}
