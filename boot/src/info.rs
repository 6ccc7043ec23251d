//! PVH (`hvm_start_info`) and Multiboot2 (MBI tags) boot information.
//!
//! Layouts follow Xen's `arch-x86/hvm/start_info.h` (version 1, with the memory map)
//! and the Multiboot2 specification §3.6.

use core::fmt;

/// Most memory-map entries kept; firmware maps have a few dozen at most.
pub const MAX_MEM_REGIONS: usize = 64;
/// Most boot modules kept (provisioning, tests).
pub const MAX_MODULES: usize = 8;
/// Longest command line kept, in bytes.
pub const MAX_CMDLINE_BYTES: usize = 1024;
/// Longest module command line (name) kept, in bytes.
pub const MAX_MODULE_NAME_BYTES: usize = 64;
/// Largest Multiboot2 information structure accepted.
pub const MAX_MBI_BYTES: u32 = 64 * 1024;

pub const PVH_MAGIC: u32 = 0x336e_c578;
pub const MB2_BOOT_MAGIC: u32 = 0x36d7_6289;

/// Reads guest-physical memory. The kernel implements it over the identity map with
/// a bounds check; tests implement it over a byte vector.
pub trait PhysRead {
    /// Fills `buf` from physical address `addr`, or fails if any byte is out of range.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootError>;
}

/// Which loader started the kernel.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    Pvh,
    Multiboot2,
}

impl fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootProtocol::Pvh => "PVH",
            BootProtocol::Multiboot2 => "Multiboot2",
        })
    }
}

/// Kind of a memory-map entry (E820 numbering, shared by PVH and Multiboot2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MemKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Bad,
    Other(u32),
}

impl MemKind {
    fn from_e820(t: u32) -> MemKind {
        match t {
            1 => MemKind::Usable,
            2 => MemKind::Reserved,
            3 => MemKind::AcpiReclaimable,
            4 => MemKind::AcpiNvs,
            5 => MemKind::Bad,
            other => MemKind::Other(other),
        }
    }
}

impl fmt::Display for MemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemKind::Usable => f.write_str("usable"),
            MemKind::Reserved => f.write_str("reserved"),
            MemKind::AcpiReclaimable => f.write_str("acpi-reclaim"),
            MemKind::AcpiNvs => f.write_str("acpi-nvs"),
            MemKind::Bad => f.write_str("bad"),
            MemKind::Other(t) => write!(f, "type-{t}"),
        }
    }
}

/// One memory-map entry: `[base, base + len)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub base: u64,
    pub len: u64,
    pub kind: MemKind,
}

impl MemRegion {
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// A boot module (PVH module list entry / Multiboot2 module tag).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub base: u64,
    pub len: u64,
    name: [u8; MAX_MODULE_NAME_BYTES],
    name_len: usize,
}

impl Module {
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("<non-utf8>")
    }
}

/// Why boot data was refused. The kernel prints it on COM1 and halts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BootError {
    UnknownProtocol(u32),
    NullInfoPointer,
    BadPvhMagic(u32),
    PvhVersionTooOld(u32),
    OutOfRange { addr: u64, len: usize },
    MbiTooLarge(u32),
    MbiTooSmall(u32),
    TagOverrun { offset: u32, size: u32 },
    BadTagSize { tag: u32, size: u32 },
    BadMmapEntrySize(u32),
    TooManyRegions,
    TooManyModules,
    CmdlineTooLong,
    CmdlineNotUtf8,
    BadModule { base: u64, end: u64 },
    NoMemoryMap,
    NoUsableMemory,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootError::UnknownProtocol(p) => write!(f, "unknown boot protocol id {p}"),
            BootError::NullInfoPointer => f.write_str("boot information pointer is null"),
            BootError::BadPvhMagic(m) => {
                write!(f, "PVH start_info magic is {m:#x}, expected {PVH_MAGIC:#x}")
            }
            BootError::PvhVersionTooOld(v) => {
                write!(
                    f,
                    "PVH start_info version {v} has no memory map (need >= 1)"
                )
            }
            BootError::OutOfRange { addr, len } => {
                write!(f, "boot data at {addr:#x}+{len} lies outside mapped memory")
            }
            BootError::MbiTooLarge(s) => {
                write!(
                    f,
                    "Multiboot2 info is {s} bytes, over the {MAX_MBI_BYTES}-byte limit"
                )
            }
            BootError::MbiTooSmall(s) => write!(f, "Multiboot2 info is only {s} bytes"),
            BootError::TagOverrun { offset, size } => write!(
                f,
                "Multiboot2 tag at offset {offset} (size {size}) runs past the end of the info"
            ),
            BootError::BadTagSize { tag, size } => {
                write!(f, "Multiboot2 tag type {tag} has impossible size {size}")
            }
            BootError::BadMmapEntrySize(s) => {
                write!(f, "Multiboot2 memory map entry size {s} is below 24")
            }
            BootError::TooManyRegions => {
                write!(f, "memory map has more than {MAX_MEM_REGIONS} entries")
            }
            BootError::TooManyModules => write!(f, "more than {MAX_MODULES} boot modules"),
            BootError::CmdlineTooLong => {
                write!(f, "command line longer than {MAX_CMDLINE_BYTES} bytes")
            }
            BootError::CmdlineNotUtf8 => f.write_str("command line is not UTF-8"),
            BootError::BadModule { base, end } => {
                write!(
                    f,
                    "boot module range {base:#x}..{end:#x} is empty or inverted"
                )
            }
            BootError::NoMemoryMap => f.write_str("the loader passed no memory map"),
            BootError::NoUsableMemory => f.write_str("the memory map has no usable RAM"),
        }
    }
}

/// Everything the kernel needs from its loader, in one protocol-independent form.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub protocol: BootProtocol,
    regions: [MemRegion; MAX_MEM_REGIONS],
    region_count: usize,
    modules: [Module; MAX_MODULES],
    module_count: usize,
    cmdline: [u8; MAX_CMDLINE_BYTES],
    cmdline_len: usize,
    /// Physical address of the ACPI RSDP if the loader gave one.
    pub rsdp: Option<u64>,
    /// Physical address of a copy of the RSDP inside the boot info (Multiboot2 tags).
    pub rsdp_copy: Option<u64>,
}

const EMPTY_REGION: MemRegion = MemRegion {
    base: 0,
    len: 0,
    kind: MemKind::Reserved,
};
const EMPTY_MODULE: Module = Module {
    base: 0,
    len: 0,
    name: [0; MAX_MODULE_NAME_BYTES],
    name_len: 0,
};

impl BootInfo {
    fn new(protocol: BootProtocol) -> BootInfo {
        BootInfo {
            protocol,
            regions: [EMPTY_REGION; MAX_MEM_REGIONS],
            region_count: 0,
            modules: [EMPTY_MODULE; MAX_MODULES],
            module_count: 0,
            cmdline: [0; MAX_CMDLINE_BYTES],
            cmdline_len: 0,
            rsdp: None,
            rsdp_copy: None,
        }
    }

    /// Parses the boot data the entry code handed over: `proto` 1 = PVH, 2 = Multiboot2.
    pub fn parse(proto: u32, info_addr: u64, mem: &dyn PhysRead) -> Result<BootInfo, BootError> {
        if info_addr == 0 {
            return Err(BootError::NullInfoPointer);
        }
        let info = match proto {
            1 => parse_pvh(info_addr, mem)?,
            2 => parse_mb2(info_addr, mem)?,
            other => return Err(BootError::UnknownProtocol(other)),
        };
        if info.region_count == 0 {
            return Err(BootError::NoMemoryMap);
        }
        if !info
            .regions()
            .iter()
            .any(|r| r.kind == MemKind::Usable && r.len > 0)
        {
            return Err(BootError::NoUsableMemory);
        }
        Ok(info)
    }

    pub fn regions(&self) -> &[MemRegion] {
        &self.regions[..self.region_count]
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    pub fn cmdline(&self) -> &str {
        // Validated as UTF-8 when stored.
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Total usable RAM in bytes.
    pub fn usable_bytes(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.kind == MemKind::Usable)
            .map(|r| r.len)
            .fold(0u64, u64::saturating_add)
    }

    fn push_region(&mut self, base: u64, len: u64, kind: u32) -> Result<(), BootError> {
        if len == 0 {
            return Ok(());
        }
        if self.region_count == MAX_MEM_REGIONS {
            return Err(BootError::TooManyRegions);
        }
        self.regions[self.region_count] = MemRegion {
            base,
            len,
            kind: MemKind::from_e820(kind),
        };
        self.region_count += 1;
        Ok(())
    }

    fn push_module(&mut self, base: u64, end: u64, name: &[u8]) -> Result<(), BootError> {
        if end <= base {
            return Err(BootError::BadModule { base, end });
        }
        if self.module_count == MAX_MODULES {
            return Err(BootError::TooManyModules);
        }
        let mut m = Module {
            base,
            len: end - base,
            ..EMPTY_MODULE
        };
        let n = name.len().min(MAX_MODULE_NAME_BYTES);
        m.name[..n].copy_from_slice(&name[..n]);
        m.name_len = if core::str::from_utf8(&m.name[..n]).is_ok() {
            n
        } else {
            0
        };
        self.modules[self.module_count] = m;
        self.module_count += 1;
        Ok(())
    }

    fn set_cmdline(&mut self, bytes: &[u8]) -> Result<(), BootError> {
        if bytes.len() > MAX_CMDLINE_BYTES {
            return Err(BootError::CmdlineTooLong);
        }
        core::str::from_utf8(bytes).map_err(|_| BootError::CmdlineNotUtf8)?;
        self.cmdline[..bytes.len()].copy_from_slice(bytes);
        self.cmdline_len = bytes.len();
        Ok(())
    }
}

fn read_u32(mem: &dyn PhysRead, addr: u64) -> Result<u32, BootError> {
    let mut b = [0u8; 4];
    mem.read(addr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(mem: &dyn PhysRead, addr: u64) -> Result<u64, BootError> {
    let mut b = [0u8; 8];
    mem.read(addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a NUL-terminated string of at most `max` bytes (the NUL excluded) into `buf`.
fn read_cstr<'b>(mem: &dyn PhysRead, addr: u64, buf: &'b mut [u8]) -> Result<&'b [u8], BootError> {
    for i in 0..buf.len() {
        let mut c = [0u8; 1];
        mem.read(addr + i as u64, &mut c)?;
        if c[0] == 0 {
            return Ok(&buf[..i]);
        }
        buf[i] = c[0];
    }
    // One more byte must be the terminator.
    let mut c = [0u8; 1];
    mem.read(addr + buf.len() as u64, &mut c)?;
    if c[0] == 0 {
        Ok(&buf[..])
    } else {
        Err(BootError::CmdlineTooLong)
    }
}

fn parse_pvh(addr: u64, mem: &dyn PhysRead) -> Result<BootInfo, BootError> {
    let magic = read_u32(mem, addr)?;
    if magic != PVH_MAGIC {
        return Err(BootError::BadPvhMagic(magic));
    }
    let version = read_u32(mem, addr + 4)?;
    if version < 1 {
        return Err(BootError::PvhVersionTooOld(version));
    }
    let mut info = BootInfo::new(BootProtocol::Pvh);
    let nr_modules = read_u32(mem, addr + 12)?;
    let modlist = read_u64(mem, addr + 16)?;
    let cmdline = read_u64(mem, addr + 24)?;
    let rsdp = read_u64(mem, addr + 32)?;
    let memmap = read_u64(mem, addr + 40)?;
    let memmap_entries = read_u32(mem, addr + 48)?;

    if cmdline != 0 {
        let mut buf = [0u8; MAX_CMDLINE_BYTES];
        let s = read_cstr(mem, cmdline, &mut buf)?;
        info.set_cmdline(s)?;
    }
    info.rsdp = (rsdp != 0).then_some(rsdp);
    if memmap_entries as usize > MAX_MEM_REGIONS {
        return Err(BootError::TooManyRegions);
    }
    for i in 0..u64::from(memmap_entries) {
        let e = memmap + i * 24;
        let (base, len, kind) = (
            read_u64(mem, e)?,
            read_u64(mem, e + 8)?,
            read_u32(mem, e + 16)?,
        );
        info.push_region(base, len, kind)?;
    }
    if nr_modules as usize > MAX_MODULES {
        return Err(BootError::TooManyModules);
    }
    for i in 0..u64::from(nr_modules) {
        let e = modlist + i * 32;
        let (base, size, name_addr) = (
            read_u64(mem, e)?,
            read_u64(mem, e + 8)?,
            read_u64(mem, e + 16)?,
        );
        let mut buf = [0u8; MAX_MODULE_NAME_BYTES];
        let name = if name_addr != 0 {
            read_cstr(mem, name_addr, &mut buf).unwrap_or(&[])
        } else {
            &[]
        };
        info.push_module(base, base.saturating_add(size), name)?;
    }
    Ok(info)
}

fn parse_mb2(addr: u64, mem: &dyn PhysRead) -> Result<BootInfo, BootError> {
    let total = read_u32(mem, addr)?;
    if total > MAX_MBI_BYTES {
        return Err(BootError::MbiTooLarge(total));
    }
    if total < 16 {
        return Err(BootError::MbiTooSmall(total));
    }
    let mut info = BootInfo::new(BootProtocol::Multiboot2);
    let mut off: u32 = 8;
    while off + 8 <= total {
        let tag_addr = addr + u64::from(off);
        let (ty, size) = (read_u32(mem, tag_addr)?, read_u32(mem, tag_addr + 4)?);
        if ty == 0 {
            return Ok(info);
        }
        if size < 8 {
            return Err(BootError::BadTagSize { tag: ty, size });
        }
        if u64::from(off) + u64::from(size) > u64::from(total) {
            return Err(BootError::TagOverrun { offset: off, size });
        }
        parse_mb2_tag(&mut info, ty, tag_addr, size, mem)?;
        // Tags are padded to 8 bytes.
        off = off.saturating_add(size.saturating_add(7) & !7);
    }
    // No end tag: whatever was parsed is all there is; the caller checks for a map.
    Ok(info)
}

fn parse_mb2_tag(
    info: &mut BootInfo,
    ty: u32,
    tag: u64,
    size: u32,
    mem: &dyn PhysRead,
) -> Result<(), BootError> {
    match ty {
        1 => {
            let max = (size as usize - 8).min(MAX_CMDLINE_BYTES + 1);
            let mut buf = [0u8; MAX_CMDLINE_BYTES + 1];
            mem.read(tag + 8, &mut buf[..max])?;
            let n = buf[..max].iter().position(|&c| c == 0).unwrap_or(max);
            info.set_cmdline(&buf[..n])?;
        }
        3 => {
            if size < 16 {
                return Err(BootError::BadTagSize { tag: ty, size });
            }
            let (start, end) = (read_u32(mem, tag + 8)?, read_u32(mem, tag + 12)?);
            let max = (size as usize - 16).min(MAX_MODULE_NAME_BYTES);
            let mut buf = [0u8; MAX_MODULE_NAME_BYTES];
            mem.read(tag + 16, &mut buf[..max])?;
            let n = buf[..max].iter().position(|&c| c == 0).unwrap_or(max);
            info.push_module(u64::from(start), u64::from(end), &buf[..n])?;
        }
        6 => {
            if size < 16 {
                return Err(BootError::BadTagSize { tag: ty, size });
            }
            let entry_size = read_u32(mem, tag + 8)?;
            if entry_size < 24 {
                return Err(BootError::BadMmapEntrySize(entry_size));
            }
            let mut e = tag + 16;
            while e + u64::from(entry_size) <= tag + u64::from(size) {
                let (base, len, kind) = (
                    read_u64(mem, e)?,
                    read_u64(mem, e + 8)?,
                    read_u32(mem, e + 16)?,
                );
                info.push_region(base, len, kind)?;
                e += u64::from(entry_size);
            }
        }
        // ACPI old (14) / new (15) RSDP: a copy of the RSDP follows the tag header.
        // Prefer the new one when both are present.
        15 => info.rsdp_copy = Some(tag + 8),
        14 if info.rsdp_copy.is_none() => info.rsdp_copy = Some(tag + 8),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory for tests: `bytes` placed at physical address `base`.
    struct Mem {
        base: u64,
        bytes: Vec<u8>,
    }

    impl PhysRead for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootError> {
            let err = BootError::OutOfRange {
                addr,
                len: buf.len(),
            };
            let start = addr.checked_sub(self.base).ok_or(err)? as usize;
            let end = start.checked_add(buf.len()).ok_or(err)?;
            buf.copy_from_slice(self.bytes.get(start..end).ok_or(err)?);
            Ok(())
        }
    }

    const BASE: u64 = 0x1000;

    fn put(b: &mut Vec<u8>, off: usize, v: &[u8]) {
        if b.len() < off + v.len() {
            b.resize(off + v.len(), 0);
        }
        b[off..off + v.len()].copy_from_slice(v);
    }

    /// A PVH start_info at BASE with a cmdline, 2 memory regions and 1 module.
    fn pvh_image(cmdline: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        put(&mut b, 0, &PVH_MAGIC.to_le_bytes());
        put(&mut b, 4, &1u32.to_le_bytes());
        put(&mut b, 12, &1u32.to_le_bytes()); // nr_modules
        put(&mut b, 16, &(BASE + 0x200).to_le_bytes()); // modlist
        put(&mut b, 24, &(BASE + 0x100).to_le_bytes()); // cmdline
        put(&mut b, 32, &0xf5a0u64.to_le_bytes()); // rsdp
        put(&mut b, 40, &(BASE + 0x300).to_le_bytes()); // memmap
        put(&mut b, 48, &2u32.to_le_bytes());
        put(&mut b, 0x100, cmdline);
        put(&mut b, 0x100 + cmdline.len(), &[0]);
        put(&mut b, 0x200, &0x80_0000u64.to_le_bytes());
        put(&mut b, 0x208, &0x1000u64.to_le_bytes());
        put(&mut b, 0x210, &(BASE + 0x280).to_le_bytes());
        put(&mut b, 0x280, b"provision\0");
        put(&mut b, 0x300, &0u64.to_le_bytes());
        put(&mut b, 0x308, &0x9fc00u64.to_le_bytes());
        put(&mut b, 0x310, &1u32.to_le_bytes());
        put(&mut b, 0x318, &0x10_0000u64.to_le_bytes());
        put(&mut b, 0x320, &0x7f0_0000u64.to_le_bytes());
        put(&mut b, 0x328, &1u32.to_le_bytes());
        b
    }

    #[test]
    fn pvh_parses_map_cmdline_modules_rsdp() {
        let mem = Mem {
            base: BASE,
            bytes: pvh_image(b"node=3 log=debug"),
        };
        let info = BootInfo::parse(1, BASE, &mem).unwrap();
        assert_eq!(info.protocol, BootProtocol::Pvh);
        assert_eq!(info.cmdline(), "node=3 log=debug");
        assert_eq!(info.regions().len(), 2);
        assert_eq!(info.regions()[1].base, 0x10_0000);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x7f0_0000);
        assert_eq!(info.modules().len(), 1);
        assert_eq!(info.modules()[0].name(), "provision");
        assert_eq!(info.modules()[0].len, 0x1000);
        assert_eq!(info.rsdp, Some(0xf5a0));
    }

    #[test]
    fn pvh_bad_magic_and_version() {
        let mut b = pvh_image(b"");
        b[0] = 0;
        let e = BootInfo::parse(
            1,
            BASE,
            &Mem {
                base: BASE,
                bytes: b,
            },
        )
        .unwrap_err();
        assert!(matches!(e, BootError::BadPvhMagic(_)));
        let mut b = pvh_image(b"");
        b[4] = 0;
        let e = BootInfo::parse(
            1,
            BASE,
            &Mem {
                base: BASE,
                bytes: b,
            },
        )
        .unwrap_err();
        assert_eq!(e, BootError::PvhVersionTooOld(0));
    }

    #[test]
    fn pvh_out_of_range_pointer_is_an_error() {
        let mut b = pvh_image(b"x");
        put(&mut b, 40, &0xdead_0000u64.to_le_bytes());
        let e = BootInfo::parse(
            1,
            BASE,
            &Mem {
                base: BASE,
                bytes: b,
            },
        )
        .unwrap_err();
        assert!(matches!(e, BootError::OutOfRange { .. }), "{e}");
    }

    fn mb2_image(tags: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        for (ty, body) in tags {
            let size = 8 + body.len() as u32;
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(body);
            while !b.len().is_multiple_of(8) {
                b.push(0);
            }
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        let total = b.len() as u32;
        b[0..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    fn mmap_tag(entries: &[(u64, u64, u32)]) -> (u32, Vec<u8>) {
        let mut body = Vec::new();
        body.extend_from_slice(&24u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for (base, len, kind) in entries {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&kind.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
        }
        (6, body)
    }

    #[test]
    fn mb2_parses_tags() {
        let mut module = Vec::new();
        module.extend_from_slice(&0x20_0000u32.to_le_bytes());
        module.extend_from_slice(&0x20_1000u32.to_le_bytes());
        module.extend_from_slice(b"prov\0");
        let img = mb2_image(&[
            (1, b"test=boot\0".to_vec()),
            (3, module),
            mmap_tag(&[
                (0, 0x9f000, 1),
                (0x10_0000, 0x1000_0000, 1),
                (0xfffc_0000, 0x4_0000, 2),
            ]),
            (14, vec![0u8; 20]),
        ]);
        let info = BootInfo::parse(
            2,
            BASE,
            &Mem {
                base: BASE,
                bytes: img,
            },
        )
        .unwrap();
        assert_eq!(info.protocol, BootProtocol::Multiboot2);
        assert_eq!(info.cmdline(), "test=boot");
        assert_eq!(info.regions().len(), 3);
        assert_eq!(info.regions()[2].kind, MemKind::Reserved);
        assert_eq!(info.modules()[0].name(), "prov");
        assert!(info.rsdp_copy.is_some());
    }

    #[test]
    fn mb2_rejects_overrun_and_missing_map() {
        let mut img = mb2_image(&[(1, b"a\0".to_vec())]);
        // Inflate the cmdline tag size past the total.
        img[12..16].copy_from_slice(&4000u32.to_le_bytes());
        let e = BootInfo::parse(
            2,
            BASE,
            &Mem {
                base: BASE,
                bytes: img,
            },
        )
        .unwrap_err();
        assert!(matches!(e, BootError::TagOverrun { .. }), "{e}");
        let img = mb2_image(&[(1, b"a\0".to_vec())]);
        let e = BootInfo::parse(
            2,
            BASE,
            &Mem {
                base: BASE,
                bytes: img,
            },
        )
        .unwrap_err();
        assert_eq!(e, BootError::NoMemoryMap);
    }

    #[test]
    fn unknown_protocol_and_null() {
        let m = Mem {
            base: BASE,
            bytes: vec![0; 64],
        };
        assert_eq!(
            BootInfo::parse(9, BASE, &m).unwrap_err(),
            BootError::UnknownProtocol(9)
        );
        assert_eq!(
            BootInfo::parse(1, 0, &m).unwrap_err(),
            BootError::NullInfoPointer
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Arbitrary bytes as boot data never panic either parser.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), proto in 1u32..3) {
            let _ = BootInfo::parse(proto, BASE, &Mem { base: BASE, bytes });
        }

        /// Mutating one byte of a valid image never panics.
        #[test]
        fn mutated_images_never_panic(idx in 0usize..0x400, val in proptest::prelude::any::<u8>(), mb2 in proptest::prelude::any::<bool>()) {
            let mut b = if mb2 {
                mb2_image(&[(1, b"node=1\0".to_vec()), mmap_tag(&[(0, 0x9f000, 1)])])
            } else {
                pvh_image(b"node=1")
            };
            let i = idx % b.len();
            b[i] = val;
            let _ = BootInfo::parse(if mb2 { 2 } else { 1 }, BASE, &Mem { base: BASE, bytes: b });
        }
    }
}
