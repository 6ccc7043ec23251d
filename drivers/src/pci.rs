//! PCI / PCIe configuration space: enumeration, BAR decoding and sizing, capability
//! walks, enabling a device. Configuration access is a trait with two register-level
//! implementations: ECAM (PCIe, base from the ACPI MCFG table) and the legacy
//! 0xCF8/0xCFC ports (fallback for the `pc` machine).

use crate::platform::{Mmio, Platform};
use alloc::vec::Vec;
use core::fmt;

/// Most functions enumerated (a limit on work and memory at boot).
pub const MAX_FUNCTIONS: usize = 256;
/// Most capabilities followed per function (the list could loop).
pub const MAX_CAPS: usize = 48;

/// Bus / device / function.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// 32-bit configuration access.
pub trait ConfigSpace {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32;
    fn write32(&self, bdf: Bdf, offset: u16, value: u32);

    fn read16(&self, bdf: Bdf, offset: u16) -> u16 {
        (self.read32(bdf, offset & !3) >> ((offset & 2) * 8)) as u16
    }
    fn read8(&self, bdf: Bdf, offset: u16) -> u8 {
        (self.read32(bdf, offset & !3) >> ((offset & 3) * 8)) as u8
    }
}

/// PCIe enhanced configuration access (memory-mapped).
pub struct Ecam {
    base: usize,
    pub start_bus: u8,
    pub end_bus: u8,
}

impl Ecam {
    /// # Safety
    /// `base` must be the virtual address of the ECAM window for buses
    /// `start_bus..=end_bus`, mapped uncached, valid for the kernel's lifetime.
    pub unsafe fn new(base: usize, start_bus: u8, end_bus: u8) -> Ecam {
        Ecam {
            base,
            start_bus,
            end_bus,
        }
    }

    fn addr(&self, bdf: Bdf, offset: u16) -> Option<usize> {
        if bdf.bus < self.start_bus
            || bdf.bus > self.end_bus
            || bdf.dev > 31
            || bdf.func > 7
            || offset > 0xffc
        {
            return None;
        }
        let rel = (usize::from(bdf.bus - self.start_bus) << 20)
            | (usize::from(bdf.dev) << 15)
            | (usize::from(bdf.func) << 12)
            | usize::from(offset & !3);
        Some(self.base + rel)
    }
}

impl ConfigSpace for Ecam {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        match self.addr(bdf, offset) {
            // SAFETY: `addr` is inside the ECAM window (checked bounds), which `new`'s
            // contract says is mapped uncached; config reads have no side effects.
            Some(a) => unsafe { core::ptr::read_volatile(a as *const u32) },
            None => u32::MAX,
        }
    }

    fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
        if let Some(a) = self.addr(bdf, offset) {
            // SAFETY: as in `read32`; the caller chose the register to write.
            unsafe { core::ptr::write_volatile(a as *mut u32, value) }
        }
    }
}

/// Legacy configuration mechanism #1 (ports 0xCF8/0xCFC), 256 bytes per function.
pub struct PortIo;

impl PortIo {
    fn select(bdf: Bdf, offset: u16) -> Option<u32> {
        (offset < 256 && bdf.dev < 32 && bdf.func < 8).then(|| {
            0x8000_0000
                | (u32::from(bdf.bus) << 16)
                | (u32::from(bdf.dev) << 11)
                | (u32::from(bdf.func) << 8)
                | u32::from(offset & 0xfc)
        })
    }
}

impl ConfigSpace for PortIo {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        let Some(sel) = Self::select(bdf, offset) else {
            return u32::MAX;
        };
        // SAFETY: 0xCF8/0xCFC are the PCI configuration ports; the kernel accesses them
        // only through this type, from one CPU at boot or under the console lock.
        unsafe {
            x86_64::instructions::port::Port::<u32>::new(0xcf8).write(sel);
            x86_64::instructions::port::Port::<u32>::new(0xcfc).read()
        }
    }

    fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
        let Some(sel) = Self::select(bdf, offset) else {
            return;
        };
        // SAFETY: as in `read32`.
        unsafe {
            x86_64::instructions::port::Port::<u32>::new(0xcf8).write(sel);
            x86_64::instructions::port::Port::<u32>::new(0xcfc).write(value);
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BarKind {
    Mem32,
    Mem64,
    Io,
}

/// A decoded base address register.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub kind: BarKind,
    pub addr: u64,
    /// Bytes decoded: `None` until [`size_bars`] measured it (only for a function a
    /// driver claims; sizing writes the BARs).
    pub size: Option<u64>,
    pub prefetchable: bool,
}

/// A capability: its id and where it sits in configuration space.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    pub offset: u8,
}

impl Capability {
    pub fn name(&self) -> &'static str {
        match self.id {
            0x01 => "pm",
            0x05 => "msi",
            0x09 => "vendor",
            0x10 => "pcie",
            0x11 => "msix",
            _ => "other",
        }
    }
}

/// One PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub header_type: u8,
    pub bars: Vec<Bar>,
    pub caps: Vec<Capability>,
}

impl PciDevice {
    pub fn bar(&self, index: u8) -> Option<&Bar> {
        self.bars.iter().find(|b| b.index == index)
    }

    pub fn caps_with_id(&self, id: u8) -> impl Iterator<Item = &Capability> {
        self.caps.iter().filter(move |c| c.id == id)
    }
}

fn size_label(f: &mut fmt::Formatter<'_>, size: u64) -> fmt::Result {
    match size {
        s if s >= 1 << 30 => write!(f, "{}G", s >> 30),
        s if s >= 1 << 20 => write!(f, "{}M", s >> 20),
        s if s >= 1 << 10 => write!(f, "{}K", s >> 10),
        s => write!(f, "{s}"),
    }
}

impl fmt::Display for PciDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x}",
            self.bdf, self.vendor, self.device, self.class, self.subclass, self.prog_if
        )?;
        for b in &self.bars {
            let kind = match b.kind {
                BarKind::Mem32 => "mem32",
                BarKind::Mem64 => "mem64",
                BarKind::Io => "io",
            };
            write!(
                f,
                " bar{}={kind}{}@{:#x}/",
                b.index,
                if b.prefetchable { ",pf" } else { "" },
                b.addr
            )?;
            if let Some(size) = b.size {
                size_label(f, size)?;
            } else {
                f.write_str("?")?;
            }
        }
        if !self.caps.is_empty() {
            f.write_str(" caps=")?;
            for (i, c) in self.caps.iter().enumerate() {
                write!(
                    f,
                    "{}{}@{:#x}",
                    if i > 0 { "," } else { "" },
                    c.name(),
                    c.offset
                )?;
            }
        }
        Ok(())
    }
}

const COMMAND: u16 = 0x04;
const CMD_IO: u32 = 1;
const CMD_MEM: u32 = 1 << 1;
const CMD_BUS_MASTER: u32 = 1 << 2;

/// How many BARs a function with `header_type` has.
fn bar_count(header_type: u8) -> u8 {
    match header_type & 0x7f {
        0 => 6,
        1 => 2,
        _ => 0,
    }
}

/// Decodes the BARs of a function from their values alone: no writes, so nothing the
/// platform maps moves (under emulation every change of a function's decoding is a
/// rebuild of the machine's memory map). A BAR that reads zero is not listed.
fn read_bars(cfg: &dyn ConfigSpace, bdf: Bdf, count: u8) -> Vec<Bar> {
    let mut bars = Vec::new();
    let mut i = 0u8;
    while i < count {
        let off = 0x10 + u16::from(i) * 4;
        let orig = cfg.read32(bdf, off);
        let (kind, addr, step) = if orig & 1 == 1 {
            (BarKind::Io, u64::from(orig & !0x3), 1)
        } else if (orig >> 1) & 0x3 == 0x2 && i + 1 < count {
            let hi = cfg.read32(bdf, off + 4);
            (
                BarKind::Mem64,
                (u64::from(hi) << 32) | u64::from(orig & !0xf),
                2,
            )
        } else {
            (BarKind::Mem32, u64::from(orig & !0xf), 1)
        };
        if addr != 0 {
            bars.push(Bar {
                index: i,
                kind,
                addr,
                size: None,
                prefetchable: kind != BarKind::Io && orig & 0x8 != 0,
            });
        }
        i += step;
    }
    bars
}

/// Sizes `dev`'s BARs (decoding disabled meanwhile): what a driver does before it
/// maps them. [`enumerate`] leaves sizes unknown, so only functions a driver claims
/// pay for the writes.
pub fn size_bars(cfg: &dyn ConfigSpace, dev: &mut PciDevice) {
    size_bars_then(cfg, dev, |cmd| cmd);
}

/// [`size_bars`], then decoding of memory and I/O (and bus mastering) on as
/// [`enable`] turns them on, in the one write that ends the sizing: under emulation
/// each change of a function's decoding rebuilds the machine's memory map, so a driver
/// claiming a function pays for two changes instead of three.
pub fn size_bars_then_enable(cfg: &dyn ConfigSpace, dev: &mut PciDevice, bus_master: bool) {
    size_bars_then(cfg, dev, |cmd| enabled(cmd, bus_master));
}

/// The command word with decoding (and bus mastering) on.
fn enabled(cmd: u32, bus_master: bool) -> u32 {
    cmd | CMD_MEM | CMD_IO | if bus_master { CMD_BUS_MASTER } else { 0 }
}

/// Sizes the BARs with decoding off, then writes `restore(command)` (the status half
/// masked off: its bits clear when written as 1).
fn size_bars_then(cfg: &dyn ConfigSpace, dev: &mut PciDevice, restore: impl FnOnce(u32) -> u32) {
    let bdf = dev.bdf;
    let count = bar_count(dev.header_type);
    let cmd = cfg.read32(bdf, COMMAND) & 0xffff;
    cfg.write32(bdf, COMMAND, cmd & !(CMD_IO | CMD_MEM));
    let mut bars = Vec::new();
    let mut i = 0u8;
    while i < count {
        let off = 0x10 + u16::from(i) * 4;
        let orig = cfg.read32(bdf, off);
        cfg.write32(bdf, off, u32::MAX);
        let probe = cfg.read32(bdf, off);
        cfg.write32(bdf, off, orig);
        if orig & 1 == 1 {
            let mask = probe & !0x3;
            if mask != 0 {
                let size = u64::from((!mask).wrapping_add(1) & 0xffff);
                bars.push(Bar {
                    index: i,
                    kind: BarKind::Io,
                    addr: u64::from(orig & !0x3),
                    size: Some(size),
                    prefetchable: false,
                });
            }
            i += 1;
            continue;
        }
        let prefetchable = orig & 0x8 != 0;
        if (orig >> 1) & 0x3 == 0x2 && i + 1 < count {
            let hi_off = off + 4;
            let orig_hi = cfg.read32(bdf, hi_off);
            cfg.write32(bdf, hi_off, u32::MAX);
            let probe_hi = cfg.read32(bdf, hi_off);
            cfg.write32(bdf, hi_off, orig_hi);
            let mask = (u64::from(probe_hi) << 32) | u64::from(probe & !0xf);
            if mask != 0 {
                let addr = (u64::from(orig_hi) << 32) | u64::from(orig & !0xf);
                bars.push(Bar {
                    index: i,
                    kind: BarKind::Mem64,
                    addr,
                    size: Some((!mask).wrapping_add(1)),
                    prefetchable,
                });
            }
            i += 2;
        } else {
            let mask = probe & !0xf;
            if mask != 0 {
                let size = u64::from((!mask).wrapping_add(1));
                bars.push(Bar {
                    index: i,
                    kind: BarKind::Mem32,
                    addr: u64::from(orig & !0xf),
                    size: Some(size),
                    prefetchable,
                });
            }
            i += 1;
        }
    }
    cfg.write32(bdf, COMMAND, restore(cmd));
    dev.bars = bars;
}

fn read_caps(cfg: &dyn ConfigSpace, bdf: Bdf) -> Vec<Capability> {
    let mut caps = Vec::new();
    let status = cfg.read16(bdf, 0x06);
    if status & (1 << 4) == 0 {
        return caps;
    }
    let mut ptr = cfg.read8(bdf, 0x34) & !3;
    while ptr >= 0x40 && caps.len() < MAX_CAPS {
        let id = cfg.read8(bdf, u16::from(ptr));
        caps.push(Capability { id, offset: ptr });
        ptr = cfg.read8(bdf, u16::from(ptr) + 1) & !3;
    }
    caps
}

fn probe(cfg: &dyn ConfigSpace, bdf: Bdf) -> Option<PciDevice> {
    let id = cfg.read32(bdf, 0);
    let vendor = id as u16;
    if vendor == 0xffff || vendor == 0 {
        return None;
    }
    let class = cfg.read32(bdf, 0x08);
    let header_type = cfg.read8(bdf, 0x0e);
    Some(PciDevice {
        bdf,
        vendor,
        device: (id >> 16) as u16,
        class: (class >> 24) as u8,
        subclass: (class >> 16) as u8,
        prog_if: (class >> 8) as u8,
        header_type,
        bars: read_bars(cfg, bdf, bar_count(header_type)),
        caps: read_caps(cfg, bdf),
    })
}

/// Enumerates every function reachable from bus `first`: each device on a bus, each
/// function of a multi-function device, and the secondary bus of every PCI-to-PCI
/// bridge found (as firmware numbered it), within `first..=last`. Buses nothing leads
/// to are not probed: under emulation every probe of an empty slot is a trapped MMIO
/// read, and a brute-force walk of 16 buses cost several milliseconds of boot. Each
/// bus is scanned once (a bridge loop cannot repeat work); the result is in
/// bus/device/function order.
pub fn enumerate(cfg: &dyn ConfigSpace, first: u8, last: u8) -> Vec<PciDevice> {
    let mut out = Vec::new();
    let mut seen = [false; 256];
    let mut buses = alloc::vec![first];
    seen[usize::from(first)] = true;
    'walk: while let Some(bus) = buses.pop() {
        for dev in 0..32 {
            let Some(f0) = probe(cfg, Bdf { bus, dev, func: 0 }) else {
                continue;
            };
            let funcs = if f0.header_type & 0x80 != 0 { 8 } else { 1 };
            let mut found = alloc::vec![f0];
            for func in 1..funcs {
                if let Some(d) = probe(cfg, Bdf { bus, dev, func }) {
                    found.push(d);
                }
            }
            for d in found {
                if d.header_type & 0x7f == 1 {
                    let secondary = cfg.read8(d.bdf, 0x19);
                    if (first..=last).contains(&secondary) && !seen[usize::from(secondary)] {
                        seen[usize::from(secondary)] = true;
                        buses.push(secondary);
                    }
                }
                out.push(d);
                if out.len() >= MAX_FUNCTIONS {
                    break 'walk;
                }
            }
        }
    }
    out.sort_by_key(|d| (d.bdf.bus, d.bdf.dev, d.bdf.func));
    out
}

/// Where an MSI-X table lives, from the capability.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MsixTable {
    pub cap: u8,
    pub entries: u16,
    pub bar: u8,
    pub offset: u32,
}

/// Reads the MSI-X capability of `dev`.
pub fn msix_table(cfg: &dyn ConfigSpace, dev: &PciDevice) -> Option<MsixTable> {
    let cap = dev.caps_with_id(0x11).next()?.offset;
    let ctl = cfg.read16(dev.bdf, u16::from(cap) + 2);
    let table = cfg.read32(dev.bdf, u16::from(cap) + 4);
    Some(MsixTable {
        cap,
        entries: (ctl & 0x7ff) + 1,
        bar: (table & 7) as u8,
        offset: table & !7,
    })
}

/// Why MSI-X could not be programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MsixError {
    /// The function has no MSI-X capability.
    NoMsix,
    /// It has fewer table entries than vectors asked for.
    TooFewVectors(u16),
    /// The table's BAR is missing.
    MissingBar(u8),
    /// The table does not fit inside its BAR.
    BadTable,
    /// The table's BAR could not be mapped.
    MapFailed(u64),
}

impl fmt::Display for MsixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsixError::NoMsix => f.write_str("no MSI-X capability"),
            MsixError::TooFewVectors(n) => write!(f, "only {n} MSI-X vectors"),
            MsixError::MissingBar(b) => write!(f, "MSI-X table in missing BAR{b}"),
            MsixError::BadTable => f.write_str("MSI-X table outside its BAR"),
            MsixError::MapFailed(a) => write!(f, "cannot map the MSI-X table's BAR at {a:#x}"),
        }
    }
}

/// Points MSI-X table entries `0..vectors.len()` of `dev` at `vectors[i]` on the local
/// APIC `apic_id` (fixed delivery, edge), unmasks them, enables MSI-X and turns INTx
/// off. Memory decoding and bus mastering are enabled first: table writes to a BAR that
/// does not decode are lost, and an MSI is a memory write by the device.
pub fn program_msix(
    cfg: &dyn ConfigSpace,
    dev: &PciDevice,
    platform: &dyn Platform,
    apic_id: u32,
    vectors: &[u8],
) -> Result<(), MsixError> {
    let t = msix_table(cfg, dev).ok_or(MsixError::NoMsix)?;
    enable(cfg, dev, true);
    if usize::from(t.entries) < vectors.len() {
        return Err(MsixError::TooFewVectors(t.entries));
    }
    let bar = dev.bar(t.bar).ok_or(MsixError::MissingBar(t.bar))?;
    let size = bar.size.ok_or(MsixError::MissingBar(t.bar))?;
    let need = u64::from(t.offset) + u64::from(t.entries) * 16;
    if need > size {
        return Err(MsixError::BadTable);
    }
    let base = platform
        .map_mmio(bar.addr, size)
        .ok_or(MsixError::MapFailed(bar.addr))?;
    // SAFETY: the table lies inside the BAR (checked above) that `map_mmio` just mapped
    // uncached for the kernel's lifetime.
    let table = unsafe { Mmio::new(base + t.offset as usize, usize::from(t.entries) * 16) };
    for (i, &v) in vectors.iter().enumerate() {
        let e = i * 16;
        table.write32(e, 0xFEE0_0000 | ((apic_id & 0xff) << 12));
        table.write32(e + 4, 0);
        table.write32(e + 8, u32::from(v));
        table.write32(e + 12, 0); // unmasked
    }
    // Enable MSI-X (bit 15), clear the function mask (bit 14).
    let dword = cfg.read32(dev.bdf, u16::from(t.cap));
    let ctl = ((dword >> 16) as u16 | 0x8000) & !0x4000;
    cfg.write32(
        dev.bdf,
        u16::from(t.cap),
        (dword & 0xffff) | (u32::from(ctl) << 16),
    );
    disable_intx(cfg, dev);
    Ok(())
}

/// Turns legacy INTx off (command register bit 10): the function signals by MSI-X.
pub fn disable_intx(cfg: &dyn ConfigSpace, dev: &PciDevice) {
    let cmd = cfg.read32(dev.bdf, COMMAND) & 0xffff;
    cfg.write32(dev.bdf, COMMAND, cmd | (1 << 10));
}

/// Enables memory decoding and, if asked, bus mastering (DMA).
pub fn enable(cfg: &dyn ConfigSpace, dev: &PciDevice, bus_master: bool) {
    let cmd = cfg.read32(dev.bdf, COMMAND) & 0xffff;
    cfg.write32(dev.bdf, COMMAND, enabled(cmd, bus_master));
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;
    use std::collections::BTreeMap;

    /// A fake configuration space with BAR sizing masks.
    struct Fake {
        regs: RefCell<BTreeMap<(Bdf, u16), u32>>,
        masks: BTreeMap<(Bdf, u16), u32>,
        /// Values written to the command register, in order.
        commands: RefCell<Vec<u32>>,
    }

    impl ConfigSpace for Fake {
        fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
            *self
                .regs
                .borrow()
                .get(&(bdf, offset))
                .unwrap_or(&if offset == 0 { u32::MAX } else { 0 })
        }
        fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
            let v = match self.masks.get(&(bdf, offset)) {
                Some(m) => (value & m) | (self.read32(bdf, offset) & !m & 0xf),
                // The status half is the device's (its error bits clear when written as 1).
                None if offset == COMMAND => {
                    self.commands.borrow_mut().push(value);
                    (value & 0xffff) | (self.read32(bdf, offset) & 0xffff_0000)
                }
                None => value,
            };
            self.regs.borrow_mut().insert((bdf, offset), v);
        }
    }

    fn fake() -> Fake {
        let d = Bdf {
            bus: 0,
            dev: 2,
            func: 0,
        };
        let mut regs = BTreeMap::new();
        regs.insert((d, 0), 0x1041_1af4);
        regs.insert((d, 0x08), 0x0200_0001);
        regs.insert((d, 0x0c), 0);
        regs.insert((d, 0x04), 0x0010_0000); // status: capability list
        regs.insert((d, 0x10), 0xfebd_1000); // BAR0 mem32 4K
        regs.insert((d, 0x20), 0xfe00_000c); // BAR4 mem64 prefetchable 16K
        regs.insert((d, 0x24), 0);
        regs.insert((d, 0x34), 0x40);
        regs.insert((d, 0x40), 0x0000_5011); // msix, next 0x50
        regs.insert((d, 0x50), 0x0000_0009); // vendor, end
        let mut masks = BTreeMap::new();
        masks.insert((d, 0x10), 0xffff_f000);
        masks.insert((d, 0x20), 0xffff_c000);
        masks.insert((d, 0x24), 0xffff_ffff);
        masks.insert((d, 0x14), 0);
        masks.insert((d, 0x18), 0);
        masks.insert((d, 0x1c), 0);
        Fake {
            regs: RefCell::new(regs),
            masks,
            commands: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn enumerates_without_writes_then_sizes_bars_and_walks_caps() {
        let f = fake();
        let before = f.regs.borrow().clone();
        let devs = enumerate(&f, 0, 0);
        // Enumeration only reads: nothing the platform decodes moved.
        assert_eq!(
            *f.regs.borrow(),
            before,
            "enumerate wrote configuration space"
        );
        assert_eq!(devs.len(), 1);
        let mut d = devs[0].clone();
        assert_eq!((d.vendor, d.device, d.class), (0x1af4, 0x1041, 0x02));
        assert_eq!(
            d.bars
                .iter()
                .map(|b| (b.index, b.kind, b.addr, b.size))
                .collect::<Vec<_>>(),
            [
                (0, BarKind::Mem32, 0xfebd_1000, None),
                (4, BarKind::Mem64, 0xfe00_0000, None)
            ]
        );
        assert!(d.to_string().contains("bar0=mem32@0xfebd1000/?"), "{d}");
        size_bars(&f, &mut d);
        assert_eq!(d.bars.len(), 2, "{:?}", d.bars);
        assert_eq!(
            d.bars[0],
            Bar {
                index: 0,
                kind: BarKind::Mem32,
                addr: 0xfebd_1000,
                size: Some(4096),
                prefetchable: false
            }
        );
        assert_eq!(d.bars[1].kind, BarKind::Mem64);
        assert_eq!(
            (d.bars[1].addr, d.bars[1].size, d.bars[1].prefetchable),
            (0xfe00_0000, Some(16 << 10), true)
        );
        assert_eq!(
            d.caps.iter().map(|c| c.name()).collect::<Vec<_>>(),
            ["msix", "vendor"]
        );
        // Sizing restored the original BAR values and the command register.
        assert_eq!(f.read32(d.bdf, 0x10), 0xfebd_1000);
        assert_eq!(f.read32(d.bdf, 0x04), 0x0010_0000);
        let text = d.to_string();
        assert!(
            text.contains("1af4:1041") && text.contains("bar4=mem64,pf@0xfe000000/16K"),
            "{text}"
        );
        // A driver given an unsized function refuses it instead of mapping nothing.
        let unsized_dev = devs[0].clone();
        assert!(matches!(
            program_msix(&f, &unsized_dev, &NoPlatform, 0, &[0x40]),
            Err(MsixError::MissingBar(_))
        ));
        enable(&f, &d, true);
        assert_eq!(f.read32(d.bdf, 0x04) & 0x7, 0x7);
    }

    /// Sizing then enabling writes the command register twice (decoding off, then the
    /// final word), never with a status bit set, and sizes as `size_bars` does.
    #[test]
    fn sizing_for_a_driver_ends_with_decoding_and_bus_mastering_on() {
        let f = fake();
        let mut d = enumerate(&f, 0, 0).remove(0);
        let mut plain = d.clone();
        size_bars_then_enable(&f, &mut d, true);
        let writes = f.commands.borrow().clone();
        assert_eq!(writes.len(), 2, "{writes:x?}");
        assert_eq!(
            writes[0] & (CMD_MEM | CMD_IO),
            0,
            "decoding stays on while sizing"
        );
        assert_eq!(writes[1], CMD_MEM | CMD_IO | CMD_BUS_MASTER);
        assert!(writes.iter().all(|w| w >> 16 == 0), "{writes:x?}");
        assert_eq!(f.read32(d.bdf, 0x04), 0x0010_0007);
        assert_eq!(f.read32(d.bdf, 0x10), 0xfebd_1000, "BAR0 restored");
        let g = fake();
        size_bars(&g, &mut plain);
        assert_eq!(plain.bars, d.bars);
        assert_eq!(
            g.read32(d.bdf, 0x04),
            0x0010_0000,
            "size_bars leaves decoding as it was"
        );
    }

    /// Every driver refuses a function whose BARs were never sized (the caller forgot
    /// [`size_bars`]) with its own error, before mapping anything.
    #[test]
    fn drivers_refuse_unsized_bars() {
        let f = fake();
        let function = |vendor, device| PciDevice {
            bdf: Bdf {
                bus: 0,
                dev: 2,
                func: 0,
            },
            vendor,
            device,
            class: 2,
            subclass: 0,
            prog_if: 0,
            header_type: 0,
            bars: [0u8, 2]
                .map(|index| Bar {
                    index,
                    kind: BarKind::Mem32,
                    addr: 0xfeb0_0000 + u64::from(index) * 0x1_0000,
                    size: None,
                    prefetchable: false,
                })
                .to_vec(),
            caps: Vec::new(),
        };
        let nic = function(crate::e1000e::VENDOR, crate::e1000e::DEVICE_IDS[0]);
        assert!(matches!(
            crate::e1000e::probe(&nic, &f, &NoPlatform),
            Err(crate::e1000e::E1000eError::BadBar)
        ));
        let shm = function(crate::ivshmem::VENDOR, crate::ivshmem::DEVICE);
        assert!(matches!(
            crate::ivshmem::Ivshmem::new(&f, &shm, &NoPlatform, 0, &[0x40, 0x41]),
            Err(crate::ivshmem::IvshmemError::MissingBar(0))
        ));
    }

    /// A platform that maps and allocates nothing.
    struct NoPlatform;

    impl crate::virtio::Platform for NoPlatform {
        fn dma_alloc(&self, _bytes: usize) -> Option<(u64, *mut u8)> {
            None
        }
        fn map_mmio(&self, _phys: u64, _len: u64) -> Option<usize> {
            None
        }
    }

    #[test]
    fn looping_capability_list_is_bounded() {
        let f = fake();
        let d = Bdf {
            bus: 0,
            dev: 2,
            func: 0,
        };
        f.regs.borrow_mut().insert((d, 0x50), 0x0000_4009); // points back to 0x40
        let devs = enumerate(&f, 0, 0);
        assert_eq!(devs[0].caps.len(), MAX_CAPS);
    }

    /// A function with only the registers `enumerate` reads.
    fn put(f: &Fake, d: Bdf, id: u32, header_type: u8, secondary: Option<u8>) {
        let mut r = f.regs.borrow_mut();
        r.insert((d, 0), id);
        r.insert((d, 0x0c), u32::from(header_type) << 16);
        if let Some(s) = secondary {
            r.insert((d, 0x18), u32::from(s) << 8);
        }
    }

    fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
        Bdf { bus, dev, func }
    }

    #[test]
    fn follows_bridges_and_probes_no_bus_nothing_leads_to() {
        let f = fake();
        // Bus 0: the virtio device at 0:2.0 (from `fake`), a multi-function device at
        // 0:3 whose function 1 is a bridge to bus 5; bus 5 holds a bridge back to bus
        // 0 (a loop) and one to bus 200 (outside the window); bus 7 is reachable from
        // nothing.
        put(&f, bdf(0, 3, 0), 0x0001_8086, 0x80, None);
        put(&f, bdf(0, 3, 1), 0x0002_8086, 0x81, Some(5));
        put(&f, bdf(5, 0, 0), 0x0003_8086, 0x01, Some(0));
        put(&f, bdf(5, 1, 0), 0x0004_8086, 0x01, Some(200));
        put(&f, bdf(5, 4, 0), 0x1041_1af4, 0x00, None);
        put(&f, bdf(7, 0, 0), 0x1041_1af4, 0x00, None);
        let reads = Reads {
            inner: &f,
            buses: RefCell::new(std::collections::BTreeSet::new()),
        };
        let devs = enumerate(&reads, 0, 15);
        let got: Vec<Bdf> = devs.iter().map(|d| d.bdf).collect();
        assert_eq!(
            got,
            [
                bdf(0, 2, 0),
                bdf(0, 3, 0),
                bdf(0, 3, 1),
                bdf(5, 0, 0),
                bdf(5, 1, 0),
                bdf(5, 4, 0)
            ]
        );
        // Only the buses something leads to were read: not 7, not 200, not 1..4.
        assert_eq!(
            reads.buses.borrow().iter().copied().collect::<Vec<u8>>(),
            [0, 5]
        );
        // A window of bus 0 alone stops at the bridge.
        assert_eq!(enumerate(&f, 0, 0).len(), 3);
    }

    /// Records which buses were read.
    struct Reads<'a> {
        inner: &'a Fake,
        buses: RefCell<std::collections::BTreeSet<u8>>,
    }

    impl ConfigSpace for Reads<'_> {
        fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
            self.buses.borrow_mut().insert(bdf.bus);
            self.inner.read32(bdf, offset)
        }
        fn write32(&self, bdf: Bdf, offset: u16, value: u32) {
            self.inner.write32(bdf, offset, value)
        }
    }
}
