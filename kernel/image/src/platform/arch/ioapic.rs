//! I/O APIC: routes one ISA interrupt, the serial port's, to the boot CPU, so console
//! input wakes the main loop from `hlt` instead of waiting for a timer.
//!
//! The MADT gives each I/O APIC's MMIO base and first GSI and the ISA overrides (an
//! ISA IRQ wired to another GSI, or with other polarity/trigger than ISA's
//! active-high edge). The register window is two 32-bit registers: IOREGSEL (+0x00)
//! selects, IOWIN (+0x10) reads or writes; redirection entry `n` is registers
//! `0x10 + 2n` (low: vector, polarity bit 13, trigger bit 15, mask bit 16) and
//! `0x11 + 2n` (high: destination APIC id in bits 24..32).

use crate::platform::acpi::AcpiInfo;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VERSION: u32 = 0x01;

fn write_reg(base: u64, reg: u32, v: u32) {
    // SAFETY: `base` is an I/O APIC register window from the MADT, mapped uncached by
    // `route_isa`; IOREGSEL/IOWIN are its two architectural 32-bit registers, and
    // only the boot CPU programs it, before interrupts are enabled.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, v);
    }
}

fn read_reg(base: u64, reg: u32) -> u32 {
    // SAFETY: as in `write_reg`.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

/// Why an ISA interrupt could not be routed.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    NoIoApic,
    /// No I/O APIC serves this GSI.
    NoPin(u32),
    MapFailed(u64),
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RouteError::NoIoApic => f.write_str("no I/O APIC in the MADT"),
            RouteError::NoPin(g) => write!(f, "no I/O APIC pin for GSI {g}"),
            RouteError::MapFailed(a) => write!(f, "cannot map the I/O APIC at {a:#x}"),
        }
    }
}

/// Routes ISA `irq` to `vector` on the local APIC `apic_id` (fixed delivery,
/// unmasked), honouring the MADT's override. Returns the GSI it was wired to.
pub fn route_isa(acpi: &AcpiInfo, irq: u8, vector: u8, apic_id: u32) -> Result<u32, RouteError> {
    // ISA default: GSI = IRQ, active high, edge triggered.
    let (gsi, flags) = acpi
        .isa_overrides
        .iter()
        .find(|o| o.0 == irq)
        .map_or((u32::from(irq), 0), |o| (o.1, o.2));
    if acpi.ioapics.is_empty() {
        return Err(RouteError::NoIoApic);
    }
    for &(base, gsi_base) in &acpi.ioapics {
        if crate::arch::paging::map_mmio(base, 4096).is_none() {
            return Err(RouteError::MapFailed(base));
        }
        let pins = ((read_reg(base, REG_VERSION) >> 16) & 0xff) + 1;
        let Some(pin) = gsi.checked_sub(gsi_base).filter(|p| *p < pins) else {
            continue;
        };
        // MPS INTI flags: polarity bits 0..2 (3 = active low), trigger bits 2..4
        // (3 = level); 0 means "conforms to the bus" (ISA: high, edge).
        let active_low = flags & 0b11 == 0b11;
        let level = (flags >> 2) & 0b11 == 0b11;
        let low = u32::from(vector) | (u32::from(active_low) << 13) | (u32::from(level) << 15);
        write_reg(base, 0x11 + 2 * pin, (apic_id & 0xff) << 24);
        write_reg(base, 0x10 + 2 * pin, low);
        return Ok(gsi);
    }
    Err(RouteError::NoPin(gsi))
}
