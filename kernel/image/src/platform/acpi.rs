//! Just enough ACPI to start the CPUs: RSDP → RSDT/XSDT → MADT (local APIC ids, LAPIC
//! base, I/O APICs and ISA overrides for the serial port's interrupt), and MCFG (PCIe
//! ECAM base) for the PCI driver. Every table's checksum and length are validated; a
//! malformed table is reported and skipped.

use alloc::vec::Vec;

const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
const MAX_TABLES: usize = 64;
const MAX_TABLE_BYTES: u32 = 1 << 20;

/// What XDV uses from ACPI.
#[derive(Debug, Default)]
pub struct AcpiInfo {
    pub lapic_base: u64,
    /// APIC ids of enabled processors, in MADT order (the BSP among them).
    pub apic_ids: Vec<u32>,
    /// PCIe ECAM: (base, segment, first bus, last bus).
    pub ecam: Option<(u64, u16, u8, u8)>,
    /// I/O APICs: (MMIO base, first GSI), in MADT order.
    pub ioapics: Vec<(u64, u32)>,
    /// ISA interrupt source overrides: (ISA IRQ, GSI, MPS INTI flags).
    pub isa_overrides: Vec<(u8, u32, u16)>,
}

fn bytes(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: callers pass ranges inside the identity-mapped 0..4 GiB window that the
    // firmware declared as ACPI tables (or the BIOS area); tables are never written.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32)
}

fn find_rsdp() -> Option<u64> {
    let info = crate::boot_info();
    if let Some(a) = info.rsdp.or(info.rsdp_copy) {
        return Some(a);
    }
    // Legacy BIOS search: the 128 KiB below 1 MiB on 16-byte boundaries.
    let area = bytes(0xe0000, 0x20000);
    (0..area.len() - 20)
        .step_by(16)
        .find(|&o| &area[o..o + 8] == RSDP_SIGNATURE && checksum_ok(&area[o..o + 20]))
        .map(|o| 0xe0000 + o as u64)
}

/// A validated system description table.
fn table(addr: u64) -> Option<(&'static [u8; 4], &'static [u8])> {
    if addr == 0 || addr >= (4 << 30) - 36 {
        return None;
    }
    let hdr = bytes(addr, 36);
    let len = u32_at(hdr, 4);
    if !(36..=MAX_TABLE_BYTES).contains(&len) || addr + u64::from(len) > (4 << 30) {
        log::warn!("acpi: table at {addr:#x} has impossible length {len}");
        return None;
    }
    let t = bytes(addr, len as usize);
    if !checksum_ok(t) {
        log::warn!(
            "acpi: table {} at {addr:#x} fails its checksum; ignored",
            core::str::from_utf8(&t[..4]).unwrap_or("????")
        );
        return None;
    }
    Some((t[..4].try_into().ok()?, t))
}

/// Reads the MADT and MCFG. `None` if there is no usable RSDP.
pub fn read() -> Option<AcpiInfo> {
    let rsdp_addr = find_rsdp()?;
    let rsdp = bytes(rsdp_addr, 36);
    if &rsdp[..8] != RSDP_SIGNATURE || !checksum_ok(&rsdp[..20]) {
        log::warn!("acpi: RSDP at {rsdp_addr:#x} is invalid");
        return None;
    }
    let (root, entry_bytes) = if rsdp[15] >= 2 && u64_at(rsdp, 24) != 0 {
        (u64_at(rsdp, 24), 8)
    } else {
        (u64::from(u32_at(rsdp, 16)), 4)
    };
    let (_, root_table) = table(root)?;
    let mut info = AcpiInfo {
        lapic_base: 0xfee0_0000,
        ..AcpiInfo::default()
    };
    let entries = ((root_table.len() - 36) / entry_bytes).min(MAX_TABLES);
    for i in 0..entries {
        let o = 36 + i * entry_bytes;
        let addr = if entry_bytes == 8 {
            u64_at(root_table, o)
        } else {
            u64::from(u32_at(root_table, o))
        };
        match table(addr) {
            Some((b"APIC", t)) => parse_madt(t, &mut info),
            Some((b"MCFG", t)) if t.len() >= 44 + 16 => {
                let e = &t[44..60];
                info.ecam = Some((u64_at(e, 0), u16::from_le_bytes([e[8], e[9]]), e[10], e[11]));
            }
            _ => {}
        }
    }
    Some(info)
}

fn parse_madt(t: &[u8], info: &mut AcpiInfo) {
    if t.len() < 44 {
        return;
    }
    info.lapic_base = u64::from(u32_at(t, 36));
    let mut o = 44;
    while o + 2 <= t.len() {
        let (kind, len) = (t[o], t[o + 1] as usize);
        if len < 2 || o + len > t.len() {
            log::warn!("acpi: MADT entry at offset {o} has bad length {len}; rest ignored");
            return;
        }
        let e = &t[o..o + len];
        match kind {
            // Processor local APIC: flags bit 0 = enabled, bit 1 = online capable.
            0 if len >= 8 && u32_at(e, 4) & 0b11 != 0 => info.apic_ids.push(u32::from(e[3])),
            // Processor local x2APIC.
            9 if len >= 16 && u32_at(e, 8) & 0b11 != 0 => info.apic_ids.push(u32_at(e, 4)),
            // Local APIC address override.
            5 if len >= 12 => info.lapic_base = u64_at(e, 4),
            // I/O APIC: id, reserved, address, GSI base.
            1 if len >= 12 => info.ioapics.push((u64::from(u32_at(e, 4)), u32_at(e, 8))),
            // Interrupt source override (bus 0 = ISA): source IRQ, GSI, flags.
            2 if len >= 10 && e[2] == 0 => {
                info.isa_overrides
                    .push((e[3], u32_at(e, 4), u16::from_le_bytes([e[8], e[9]])))
            }
            _ => {}
        }
        o += len;
    }
}
