//! The device interface's register block and memory layout (`docs/accel.md`).
//!
//! An accelerator is one PCI function with a window of device memory the driver
//! reaches by MMIO. The window starts with the register block (one 4 KiB page), then
//! the submission ring, the completion ring and the data area that holds each
//! command's job and result. On QEMU the window is an `ivshmem-doorbell` device's
//! shared memory (BAR2) and the notifications go through its BAR0 doorbell and MSI-X
//! vectors; a device with its own silicon would put the same block in BAR0.
//!
//! Every field has one writer: the device writes the read-only fields, the driver the
//! others. Latched state that both sides touch (the interrupt cause) is split into a
//! device-written cause and a driver-written acknowledgement, so neither side needs
//! an atomic read-modify-write on the other's memory.
//!
//! Ring indices are free-running `u32` counters (as virtio's): an entry lives at
//! `index % entries`, and `tail - head` (wrapping) is the number of entries queued,
//! never more than `entries` — the driver checks that on every read.

/// `XDVA` little-endian: the first word of a device's window.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XDVA");
/// Interface version this crate speaks: major in the high half, minor in the low.
/// A different major refuses; a higher minor on either side is compatible.
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 0;
pub const VERSION: u32 = ((VERSION_MAJOR as u32) << 16) | VERSION_MINOR as u32;

/// Byte offsets of the register block's 32-bit fields.
pub mod off {
    /// RO: [`super::MAGIC`].
    pub const MAGIC: usize = 0x00;
    /// RO: the device's interface version.
    pub const VERSION: usize = 0x04;
    /// RO: [`super::Kind`] code.
    pub const KIND: usize = 0x08;
    /// RO: qubits (Q) or oscillators (Φ) in the whole device.
    pub const UNITS: usize = 0x0C;
    /// RO: containers (Q) or coherence windows (Φ).
    pub const SLOTS: usize = 0x10;
    /// RO: qubits per container / oscillators per window.
    pub const SLOT_UNITS: usize = 0x14;
    /// RO: [`super::Status`] code.
    pub const STATUS: usize = 0x18;
    /// RO: [`super::DeviceError`] code of the last fault (0 = none).
    pub const ERROR: usize = 0x1C;
    /// RO: interrupt causes latched by the device ([`super::CAUSE_COMPLETION`], …).
    pub const INTR_CAUSE: usize = 0x20;
    /// RW (driver): causes that must not raise an interrupt.
    pub const INTR_MASK: usize = 0x24;
    /// WO (driver): running count of acknowledgements; the device clears the causes
    /// it had latched when it sees the count move.
    pub const INTR_ACK: usize = 0x28;
    /// WO (driver): the driver's interface version, written before `CONTROL`.
    pub const DRIVER_VERSION: usize = 0x2C;
    /// WO (driver): [`super::Control`] request.
    pub const CONTROL: usize = 0x30;
    /// WO (driver): running count of control requests (the device acts on a change).
    pub const CONTROL_SEQ: usize = 0x34;
    /// RO: generation, advanced by every completed reset.
    pub const GENERATION: usize = 0x38;
    /// RO: byte offset and entry count of the submission ring.
    pub const SQ_OFF: usize = 0x3C;
    pub const SQ_ENTRIES: usize = 0x40;
    /// RO: byte offset and entry count of the completion ring.
    pub const CQ_OFF: usize = 0x44;
    pub const CQ_ENTRIES: usize = 0x48;
    /// RO: byte offset and size of the data area (one chunk per submission entry).
    pub const DATA_OFF: usize = 0x4C;
    pub const DATA_BYTES: usize = 0x50;
    /// Driver: submissions published (the doorbell value).
    pub const SQ_TAIL: usize = 0x54;
    /// Device: submissions consumed.
    pub const SQ_HEAD: usize = 0x58;
    /// Device: completions published.
    pub const CQ_TAIL: usize = 0x5C;
    /// Driver: completions consumed.
    pub const CQ_HEAD: usize = 0x60;
    /// RO: the device's notification peer (ivshmem peer id the doorbell names).
    pub const PEER: usize = 0x64;
    /// RO: commands the device has completed since it started (low, high words).
    pub const DONE_LO: usize = 0x68;
    pub const DONE_HI: usize = 0x6C;
    /// End of the defined fields.
    pub const END: usize = 0x70;
}

/// Bytes of the register block (the rings start after it).
pub const REGS_BYTES: usize = 4096;
/// Bytes of one submission entry.
pub const SQE_BYTES: usize = 64;
/// Bytes of one completion entry.
pub const CQE_BYTES: usize = 32;
/// Entries of each ring in the standard layout (power of two).
pub const RING_ENTRIES: u32 = 16;
/// Largest job a command carries (a circuit or an envelope in its wire form).
pub const MAX_JOB_BYTES: usize = 64 * 1024;
/// Largest result a command returns.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// One data chunk: the job, then the result.
pub const CHUNK_BYTES: usize = MAX_JOB_BYTES + MAX_RESULT_BYTES;
/// The standard layout: regs, SQ, CQ, data; a device may publish another that
/// passes [`Layout::check`].
pub const STD_SQ_OFF: u32 = REGS_BYTES as u32;
pub const STD_CQ_OFF: u32 = STD_SQ_OFF + RING_ENTRIES * SQE_BYTES as u32;
pub const STD_DATA_OFF: u32 = 16 * 1024;
pub const STD_DATA_BYTES: u32 = RING_ENTRIES * CHUNK_BYTES as u32;
/// Smallest window that holds the standard layout (ivshmem sizes are powers of two).
pub const STD_WINDOW_BYTES: usize = 4 * 1024 * 1024;

const _: () = assert!(off::END <= REGS_BYTES);
const _: () =
    assert!(STD_CQ_OFF as usize + RING_ENTRIES as usize * CQE_BYTES <= STD_DATA_OFF as usize);
const _: () = assert!(STD_DATA_OFF as usize + STD_DATA_BYTES as usize <= STD_WINDOW_BYTES);
const _: () = assert!(RING_ENTRIES.is_power_of_two());

/// Interrupt cause bits (also the MSI-X vector numbers: bit `1 << v`).
pub const CAUSE_COMPLETION: u32 = 1 << 0;
pub const CAUSE_FAULT: u32 = 1 << 1;
/// Doorbell vectors the driver rings on the device: new submissions, or a raw ping
/// the device answers at once with a completion interrupt without reading its rings
/// (the floor of any command's round trip, for measurements).
pub const DOORBELL_SUBMIT: u16 = 0;
pub const DOORBELL_PING: u16 = 1;
/// MSI-X vectors the device raises.
pub const VECTOR_COMPLETION: u16 = 0;
pub const VECTOR_FAULT: u16 = 1;
pub const VECTORS: u16 = 2;

/// What kind of accelerator a device is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Quantum: qubits split into containers.
    Q,
    /// Phase coherence: oscillators split into coherence windows.
    Phi,
}

impl Kind {
    pub fn code(self) -> u32 {
        match self {
            Kind::Q => 1,
            Kind::Phi => 2,
        }
    }

    pub fn from_code(c: u32) -> Option<Kind> {
        match c {
            1 => Some(Kind::Q),
            2 => Some(Kind::Phi),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Q => "Q",
            Kind::Phi => "Φ",
        }
    }

    /// What the units and slots are called, for status lines.
    pub fn unit_names(self) -> (&'static str, &'static str) {
        match self {
            Kind::Q => ("qubits", "containers"),
            Kind::Phi => ("oscillators", "windows"),
        }
    }
}

/// The device's state as its STATUS register says.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Off,
    Ready,
    Failed,
    Resetting,
}

impl Status {
    pub fn code(self) -> u32 {
        match self {
            Status::Off => 0,
            Status::Ready => 1,
            Status::Failed => 2,
            Status::Resetting => 3,
        }
    }

    pub fn from_code(c: u32) -> Option<Status> {
        match c {
            0 => Some(Status::Off),
            1 => Some(Status::Ready),
            2 => Some(Status::Failed),
            3 => Some(Status::Resetting),
            _ => None,
        }
    }
}

/// A driver request in CONTROL.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Start taking submissions (after checking the driver's version).
    Enable,
    /// Drop every command in flight, clear the rings, advance the generation and
    /// come back ready if the hardware is healthy.
    Reset,
}

impl Control {
    pub fn code(self) -> u32 {
        match self {
            Control::Enable => 1,
            Control::Reset => 2,
        }
    }

    pub fn from_code(c: u32) -> Option<Control> {
        match c {
            1 => Some(Control::Enable),
            2 => Some(Control::Reset),
            _ => None,
        }
    }
}

/// Why a device says it failed (the ERROR register).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    None,
    /// The driver's major version differs from the device's.
    DriverVersion,
    /// The hardware failed (qubits lost, oscillator bank out of lock, …).
    Hardware,
    /// The driver broke the ring protocol (index out of range, bad descriptor).
    Protocol,
    /// A code this driver does not know.
    Other(u32),
}

impl DeviceError {
    pub fn code(self) -> u32 {
        match self {
            DeviceError::None => 0,
            DeviceError::DriverVersion => 1,
            DeviceError::Hardware => 2,
            DeviceError::Protocol => 3,
            DeviceError::Other(c) => c,
        }
    }

    pub fn from_code(c: u32) -> DeviceError {
        match c {
            0 => DeviceError::None,
            1 => DeviceError::DriverVersion,
            2 => DeviceError::Hardware,
            3 => DeviceError::Protocol,
            c => DeviceError::Other(c),
        }
    }
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceError::None => f.write_str("none"),
            DeviceError::DriverVersion => f.write_str("device refused the driver's version"),
            DeviceError::Hardware => f.write_str("hardware fault"),
            DeviceError::Protocol => f.write_str("ring protocol violation"),
            DeviceError::Other(c) => write!(f, "device error code {c}"),
        }
    }
}

/// Access to a device's memory window. The kernel implements it over a mapped BAR
/// with volatile accesses; tests and the simulator over a byte vector; the host
/// device simulator over its shared-memory mapping. Out-of-window offsets panic in
/// the implementations: every offset the driver computes from device-supplied values
/// is checked against the window first ([`Layout::check`]).
pub trait DeviceMemory {
    /// Bytes in the window.
    fn window_bytes(&self) -> usize;
    fn read32(&self, off: usize) -> u32;
    fn write32(&self, off: usize, value: u32);
    fn read_bytes(&self, off: usize, out: &mut [u8]);
    fn write_bytes(&self, off: usize, data: &[u8]);
    /// Orders the accesses before it against those after it (a full fence on real
    /// memory shared with another agent).
    fn fence(&self);
}

/// Where the rings and the data area are, as the device published them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub sq_off: u32,
    pub sq_entries: u32,
    pub cq_off: u32,
    pub cq_entries: u32,
    pub data_off: u32,
    pub data_bytes: u32,
}

/// Why a published layout is unusable.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    EntriesNotPowerOfTwo,
    TooFewEntries,
    OutsideWindow,
    Overlap,
    DataTooSmall,
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LayoutError::EntriesNotPowerOfTwo => "ring entries not a power of two",
            LayoutError::TooFewEntries => "ring with fewer than 2 or more than 1024 entries",
            LayoutError::OutsideWindow => "ring or data area outside the device window",
            LayoutError::Overlap => "register block, rings and data area overlap",
            LayoutError::DataTooSmall => "data area smaller than one chunk per submission entry",
        })
    }
}

impl Layout {
    pub const STANDARD: Layout = Layout {
        sq_off: STD_SQ_OFF,
        sq_entries: RING_ENTRIES,
        cq_off: STD_CQ_OFF,
        cq_entries: RING_ENTRIES,
        data_off: STD_DATA_OFF,
        data_bytes: STD_DATA_BYTES,
    };

    pub fn read(mem: &dyn DeviceMemory) -> Layout {
        Layout {
            sq_off: mem.read32(off::SQ_OFF),
            sq_entries: mem.read32(off::SQ_ENTRIES),
            cq_off: mem.read32(off::CQ_OFF),
            cq_entries: mem.read32(off::CQ_ENTRIES),
            data_off: mem.read32(off::DATA_OFF),
            data_bytes: mem.read32(off::DATA_BYTES),
        }
    }

    pub fn write(&self, mem: &dyn DeviceMemory) {
        mem.write32(off::SQ_OFF, self.sq_off);
        mem.write32(off::SQ_ENTRIES, self.sq_entries);
        mem.write32(off::CQ_OFF, self.cq_off);
        mem.write32(off::CQ_ENTRIES, self.cq_entries);
        mem.write32(off::DATA_OFF, self.data_off);
        mem.write32(off::DATA_BYTES, self.data_bytes);
    }

    /// Checks the layout against a window of `window` bytes: every region inside it,
    /// none overlapping another or the register block, one chunk per SQ entry.
    pub fn check(&self, window: usize) -> Result<(), LayoutError> {
        for n in [self.sq_entries, self.cq_entries] {
            if !(2..=1024).contains(&n) {
                return Err(LayoutError::TooFewEntries);
            }
            if !n.is_power_of_two() {
                return Err(LayoutError::EntriesNotPowerOfTwo);
            }
        }
        let span = |o: u32, n: u64| (u64::from(o), u64::from(o) + n);
        let regions = [
            (0, REGS_BYTES as u64),
            span(self.sq_off, u64::from(self.sq_entries) * SQE_BYTES as u64),
            span(self.cq_off, u64::from(self.cq_entries) * CQE_BYTES as u64),
            span(self.data_off, u64::from(self.data_bytes)),
        ];
        if regions.iter().any(|&(_, end)| end > window as u64) {
            return Err(LayoutError::OutsideWindow);
        }
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                if a.0 < b.1 && b.0 < a.1 {
                    return Err(LayoutError::Overlap);
                }
            }
        }
        if u64::from(self.data_bytes) < u64::from(self.sq_entries) * CHUNK_BYTES as u64 {
            return Err(LayoutError::DataTooSmall);
        }
        Ok(())
    }

    /// Offset of data chunk `i` (`i < sq_entries`).
    pub fn chunk(&self, i: u32) -> usize {
        debug_assert!(i < self.sq_entries);
        self.data_off as usize + i as usize * CHUNK_BYTES
    }
}

/// A device's identity as its register block gives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub kind: Kind,
    pub version: u32,
    pub units: u32,
    pub slots: u32,
    pub slot_units: u32,
    pub peer: u32,
    pub layout: Layout,
}

/// Why a window is not a device this driver can run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    WindowTooSmall(usize),
    BadMagic(u32),
    /// The device speaks another major version: `(device, driver)`.
    Version {
        device: u32,
        driver: u32,
    },
    UnknownKind(u32),
    BadCapacity {
        units: u32,
        slots: u32,
        slot_units: u32,
    },
    Layout(LayoutError),
}

/// Most slots (containers or windows) a device may offer.
pub const MAX_SLOTS: u32 = 64;
/// Most units (qubits or oscillators) a device may have.
pub const MAX_UNITS: u32 = 4096;

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::WindowTooSmall(n) => write!(f, "device window of {n} bytes is too small"),
            ProbeError::BadMagic(m) => write!(f, "no XDV accelerator here (magic {m:#010x})"),
            ProbeError::Version { device, driver } => write!(
                f,
                "device speaks interface {}.{}, this driver {}.{}: refusing",
                device >> 16,
                device & 0xffff,
                driver >> 16,
                driver & 0xffff
            ),
            ProbeError::UnknownKind(k) => write!(f, "unknown accelerator kind {k}"),
            ProbeError::BadCapacity {
                units,
                slots,
                slot_units,
            } => write!(
                f,
                "capacity {units} units in {slots} slots of {slot_units} is inconsistent"
            ),
            ProbeError::Layout(e) => write!(f, "bad layout: {e}"),
        }
    }
}

/// Reads and checks a device's register block: magic, version, kind, capacity and
/// layout. Nothing is written.
pub fn probe(mem: &dyn DeviceMemory) -> Result<DeviceInfo, ProbeError> {
    let window = mem.window_bytes();
    if window < REGS_BYTES {
        return Err(ProbeError::WindowTooSmall(window));
    }
    let magic = mem.read32(off::MAGIC);
    if magic != MAGIC {
        return Err(ProbeError::BadMagic(magic));
    }
    let version = mem.read32(off::VERSION);
    if version >> 16 != u32::from(VERSION_MAJOR) {
        return Err(ProbeError::Version {
            device: version,
            driver: VERSION,
        });
    }
    let kind_code = mem.read32(off::KIND);
    let kind = Kind::from_code(kind_code).ok_or(ProbeError::UnknownKind(kind_code))?;
    let (units, slots, slot_units) = (
        mem.read32(off::UNITS),
        mem.read32(off::SLOTS),
        mem.read32(off::SLOT_UNITS),
    );
    let consistent = (1..=MAX_SLOTS).contains(&slots)
        && (1..=MAX_UNITS).contains(&units)
        && slot_units >= 1
        && u64::from(slots) * u64::from(slot_units) <= u64::from(units);
    if !consistent {
        return Err(ProbeError::BadCapacity {
            units,
            slots,
            slot_units,
        });
    }
    let layout = Layout::read(mem);
    layout.check(window).map_err(ProbeError::Layout)?;
    Ok(DeviceInfo {
        kind,
        version,
        units,
        slots,
        slot_units,
        peer: mem.read32(off::PEER),
        layout,
    })
}

/// A window of plain memory, for tests, the node simulator and fuzzing.
pub struct MemWindow {
    bytes: core::cell::RefCell<alloc::vec::Vec<u8>>,
}

impl MemWindow {
    pub fn new(bytes: usize) -> MemWindow {
        MemWindow {
            bytes: core::cell::RefCell::new(alloc::vec![0; bytes]),
        }
    }
}

impl DeviceMemory for MemWindow {
    fn window_bytes(&self) -> usize {
        self.bytes.borrow().len()
    }
    fn read32(&self, off: usize) -> u32 {
        let b = self.bytes.borrow();
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }
    fn write32(&self, off: usize, value: u32) {
        self.bytes.borrow_mut()[off..off + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn read_bytes(&self, off: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.bytes.borrow()[off..off + out.len()]);
    }
    fn write_bytes(&self, off: usize, data: &[u8]) {
        self.bytes.borrow_mut()[off..off + data.len()].copy_from_slice(data);
    }
    fn fence(&self) {}
}
