//! Interrupt descriptor table and exception entry.
//!
//! Every vector's entry stub is a naked function: it pushes a dummy error code when
//! the CPU does not push one, then the vector number, and jumps to `trap_common`,
//! which saves all general registers and the SSE state (the host-triple `core` uses
//! SSE), calls [`trap_dispatch`] with a [`TrapFrame`], restores and `iretq`s.
//! Gate → IST assignment is documented in `gdt.rs`.

use super::gdt::{IST_DOUBLE_FAULT, IST_EXCEPTION, IST_INTERRUPT, IST_MACHINE_CHECK, IST_NMI};
use core::arch::naked_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::VirtAddr;
use x86_64::structures::DescriptorTablePointer;

/// Register state saved by `trap_common`, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

#[derive(Copy, Clone)]
#[repr(C)]
struct Gate {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_hi: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

const MISSING: Gate = Gate {
    offset_lo: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_hi: 0,
    reserved: 0,
};

impl Gate {
    /// A present, DPL0, 64-bit interrupt gate (interrupts off on entry).
    fn new(handler: unsafe extern "C" fn(), ist: u8) -> Gate {
        let a = handler as usize as u64;
        Gate {
            offset_lo: a as u16,
            selector: 0x08,
            ist,
            type_attr: 0x8e,
            offset_mid: (a >> 16) as u16,
            offset_hi: (a >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([MISSING; 256]);

/// Vector numbers for interrupts XDV uses beyond the exceptions.
pub const VECTOR_IPI_WAKE: u8 = 0x40;
pub const VECTOR_TIMER: u8 = 0x41;
/// COM1's receive interrupt (ISA IRQ 4 through the I/O APIC).
pub const VECTOR_SERIAL: u8 = 0x42;
/// Serial interrupts taken (console input woke the loop).
pub static SERIAL_IRQS: AtomicU64 = AtomicU64::new(0);
pub const VECTOR_SPURIOUS: u8 = 0xff;

#[unsafe(naked)]
unsafe extern "C" fn trap_common() {
    naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
        "cld",
        "mov rdi, rsp",
        "mov rbp, rsp",
        "and rsp, -16",
        "sub rsp, 512",
        "fxsave64 [rsp]",
        "call {dispatch}",
        "fxrstor64 [rsp]",
        "mov rsp, rbp",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
        "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
        "add rsp, 16",
        "iretq",
        dispatch = sym trap_dispatch,
    );
}

macro_rules! stubs {
    ($( $name:ident = $vec:literal $kind:ident ),* $(,)?) => {
        $( stubs!(@one $name, $vec, $kind); )*
        const STUBS: &[(u8, unsafe extern "C" fn())] = &[ $( ($vec, $name) ),* ];
    };
    (@one $name:ident, $vec:literal, noerr) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push 0", "push {v}", "jmp {c}", v = const $vec, c = sym trap_common);
        }
    };
    (@one $name:ident, $vec:literal, err) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!("push {v}", "jmp {c}", v = const $vec, c = sym trap_common);
        }
    };
}

stubs! {
    v0 = 0 noerr, v1 = 1 noerr, v2 = 2 noerr, v3 = 3 noerr, v4 = 4 noerr, v5 = 5 noerr,
    v6 = 6 noerr, v7 = 7 noerr, v8 = 8 err, v9 = 9 noerr, v10 = 10 err, v11 = 11 err,
    v12 = 12 err, v13 = 13 err, v14 = 14 err, v15 = 15 noerr, v16 = 16 noerr, v17 = 17 err,
    v18 = 18 noerr, v19 = 19 noerr, v20 = 20 noerr, v21 = 21 err, v22 = 22 noerr,
    v23 = 23 noerr, v24 = 24 noerr, v25 = 25 noerr, v26 = 26 noerr, v27 = 27 noerr,
    v28 = 28 noerr, v29 = 29 err, v30 = 30 err, v31 = 31 noerr,
    v_ipi_wake = 0x40 noerr, v_timer = 0x41 noerr, v_serial = 0x42 noerr, v_spurious = 0xff noerr,
    v_dev0 = 0x50 noerr, v_dev1 = 0x51 noerr, v_dev2 = 0x52 noerr, v_dev3 = 0x53 noerr,
    v_dev4 = 0x54 noerr, v_dev5 = 0x55 noerr, v_dev6 = 0x56 noerr, v_dev7 = 0x57 noerr,
    v_nic0 = 0x58 noerr, v_nic1 = 0x59 noerr,
}

fn ist_for(vector: u8) -> u8 {
    match vector {
        8 => IST_DOUBLE_FAULT,
        2 => IST_NMI,
        18 => IST_MACHINE_CHECK,
        14 => 0, // see gdt.rs: #PF is fatal, so it may use the current stack
        0..=31 => IST_EXCEPTION,
        _ => IST_INTERRUPT,
    }
}

/// Fills the IDT (once, on the BSP) and loads it on this CPU.
pub fn init() {
    // SAFETY: runs once on the BSP before interrupts are enabled or other CPUs start;
    // nothing else references IDT yet.
    let idt = unsafe { &mut *(&raw mut IDT) };
    for &(vector, stub) in STUBS {
        idt.0[vector as usize] = Gate::new(stub, ist_for(vector));
    }
    load();
}

/// Loads the shared IDT on the calling CPU (the IST indices refer to each CPU's own
/// TSS, so one table serves every CPU).
pub fn load() {
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(&raw const IDT as u64),
    };
    // SAFETY: IDT is a 'static, fully initialised table of valid gates.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// Loads an empty IDT and raises an exception: the CPU triple-faults and resets.
pub fn force_triple_fault() -> ! {
    let ptr = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::new(0),
    };
    // SAFETY: deliberately invalid IDT to reset the machine; nothing runs after.
    unsafe {
        x86_64::instructions::tables::lidt(&ptr);
        core::arch::asm!("int3");
    }
    super::halt_forever()
}

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "non-maskable interrupt",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection exception",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication exception",
    "security exception",
    "reserved",
];

/// MSI-X vectors for devices (accelerators): `VECTOR_DEVICE_BASE + i`.
pub const VECTOR_DEVICE_BASE: u8 = 0x50;
pub const DEVICE_VECTORS: usize = 8;
/// Interrupts taken per device vector; the main loop wakes from `hlt` on each and
/// polls its devices (the count is for the console).
pub static DEVICE_IRQS: [AtomicU64; DEVICE_VECTORS] = [const { AtomicU64::new(0) }; DEVICE_VECTORS];

/// MSI-X vectors for NICs' receive queues: `VECTOR_NIC_BASE + i` for the i-th NIC.
pub const VECTOR_NIC_BASE: u8 = 0x58;
pub const NIC_VECTORS: usize = 2;
const _: () = assert!(VECTOR_DEVICE_BASE as usize + DEVICE_VECTORS <= VECTOR_NIC_BASE as usize);
/// Receive interrupts taken per NIC vector: each only ends the main loop's `hlt`, and
/// the loop polls the NICs (the count is for the console's `net` command).
pub static NIC_IRQS: [AtomicU64; NIC_VECTORS] = [const { AtomicU64::new(0) }; NIC_VECTORS];

/// Breakpoints taken (the `breakpoint` test checks this moves).
pub static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

extern "C" fn trap_dispatch(f: &mut TrapFrame) {
    match f.vector {
        3 => {
            BREAKPOINTS.fetch_add(1, Ordering::SeqCst);
            log::info!("breakpoint at rip={:#018x}; resuming", f.rip);
        }
        2 if crate::smp::on_nmi() => {}
        v if v == u64::from(VECTOR_IPI_WAKE) => crate::smp::on_ipi(),
        v if v == u64::from(VECTOR_TIMER) => super::lapic::on_timer(),
        v if v == u64::from(VECTOR_SPURIOUS) => {}
        v if v == u64::from(VECTOR_SERIAL) => {
            // Only ends `hlt`: the console reads the byte (which clears the UART's
            // interrupt) in the main loop.
            SERIAL_IRQS.fetch_add(1, Ordering::Relaxed);
            super::lapic::eoi();
        }
        v if (u64::from(VECTOR_DEVICE_BASE)
            ..u64::from(VECTOR_DEVICE_BASE) + DEVICE_VECTORS as u64)
            .contains(&v) =>
        {
            DEVICE_IRQS[(v - u64::from(VECTOR_DEVICE_BASE)) as usize]
                .fetch_add(1, Ordering::Relaxed);
            super::lapic::eoi();
        }
        v if (u64::from(VECTOR_NIC_BASE)..u64::from(VECTOR_NIC_BASE) + NIC_VECTORS as u64)
            .contains(&v) =>
        {
            NIC_IRQS[(v - u64::from(VECTOR_NIC_BASE)) as usize].fetch_add(1, Ordering::Relaxed);
            super::lapic::eoi();
        }
        v if v < 32 => fatal_exception(f),
        v => log::warn!("unexpected interrupt vector {v}"),
    }
}

fn fatal_exception(f: &TrapFrame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let name = NAMES[f.vector as usize];
    crate::serial::write_held_for_report();
    let mut w = crate::serial::Emergency;
    let _ = writeln!(
        w,
        "\nEXCEPTION: {name} (vector={}) error={:#x} rip={:#018x} cr2={:#018x} cpu={}",
        f.vector,
        f.error,
        f.rip,
        cr2,
        crate::smp::cpu_index()
    );
    if f.vector == 14 {
        let _ = writeln!(
            w,
            "  page fault: {} {} address, {} mode{}",
            if f.error & 1 != 0 {
                "protection violation on"
            } else {
                "unmapped"
            },
            if f.error & 2 != 0 {
                "write to"
            } else {
                "read of"
            },
            if f.error & 4 != 0 { "user" } else { "kernel" },
            if f.error & 16 != 0 {
                ", instruction fetch"
            } else {
                ""
            },
        );
    }
    if f.vector == 8 {
        let _ = writeln!(
            w,
            "  double fault: a fault occurred while delivering another (stack overflow into a guard page?)"
        );
    }
    let _ = writeln!(
        w,
        "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        f.rax, f.rbx, f.rcx, f.rdx
    );
    let _ = writeln!(
        w,
        "  rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        f.rsi, f.rdi, f.rbp, f.rsp
    );
    let _ = writeln!(
        w,
        "  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}",
        f.r8, f.r9, f.r10, f.r11
    );
    let _ = writeln!(
        w,
        "  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
        f.r12, f.r13, f.r14, f.r15
    );
    let _ = writeln!(
        w,
        "  rflags={:#010x} cs={:#06x} ss={:#06x}",
        f.rflags, f.cs, f.ss
    );
    crate::smp::stop_others();
    super::exit_qemu(super::exit_code::FAULT)
}
