//! Per-CPU GDT and TSS with IST stacks.
//!
//! Interrupt stack table use (the host-triple `core` uses the red zone, so an
//! interrupt must never push onto the interrupted stack when that code can resume):
//! - IST1: #DF (double fault) — its own stack so a kernel stack overflow is reported.
//! - IST2: NMI, IST3: #MC — can arrive anywhere.
//! - IST4: every other exception except #PF.
//! - IST5: hardware interrupts and IPIs.
//! - #PF uses no IST on purpose: XDV never resumes after a page fault (it is always
//!   fatal), so clobbering the red zone cannot matter, and a fault on an overflowed
//!   stack then fails to push its frame and escalates to #DF on IST1, where the
//!   double-fault handler reports it. See docs/boot.md.

use alloc::boxed::Box;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;
pub const IST_EXCEPTION: u8 = 4;
pub const IST_INTERRUPT: u8 = 5;
const IST_COUNT: usize = 5;
pub const IST_STACK_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
pub struct IstStacks([[u8; IST_STACK_BYTES]; IST_COUNT]);

/// One CPU's descriptor tables. Lives forever once loaded (the CPU keeps pointers).
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
    stacks: IstStacks,
    code: SegmentSelector,
    data: SegmentSelector,
    tss_sel: SegmentSelector,
}

static mut BSP_TABLES: CpuTables = CpuTables {
    gdt: GlobalDescriptorTable::new(),
    tss: TaskStateSegment::new(),
    stacks: IstStacks([[0; IST_STACK_BYTES]; IST_COUNT]),
    code: SegmentSelector(0),
    data: SegmentSelector(0),
    tss_sel: SegmentSelector(0),
};

fn setup(t: &'static mut CpuTables) {
    for i in 0..IST_COUNT {
        let top = t.stacks.0[i].as_ptr() as u64 + IST_STACK_BYTES as u64;
        t.tss.interrupt_stack_table[i] = VirtAddr::new(top & !0xf);
    }
    // SAFETY: `t` is 'static and never moved again, so the TSS reference the
    // descriptor captures stays valid for as long as the GDT is loaded.
    let tss: &'static TaskStateSegment = unsafe { &*(&raw const t.tss) };
    t.code = t.gdt.append(Descriptor::kernel_code_segment());
    t.data = t.gdt.append(Descriptor::kernel_data_segment());
    t.tss_sel = t.gdt.append(Descriptor::tss_segment(tss));
    let t: &'static CpuTables = t;
    t.gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded: a 64-bit code
    // segment, a data segment, and an available TSS that outlives the CPU's use.
    unsafe {
        CS::set_reg(t.code);
        SS::set_reg(t.data);
        DS::set_reg(t.data);
        ES::set_reg(t.data);
        load_tss(t.tss_sel);
    }
}

/// Loads the bootstrap CPU's tables (static: no heap needed yet).
pub fn init_bsp() {
    // SAFETY: called exactly once on the BSP before any other CPU runs, so this is
    // the only reference ever made to BSP_TABLES.
    let t = unsafe { &mut *(&raw mut BSP_TABLES) };
    setup(t);
}

/// Allocates and loads a fresh set of tables for an application processor.
pub fn init_ap() {
    // Zeroed on the heap: the IST stacks are too large to build on the AP's stack.
    let mut b = Box::<CpuTables>::new_zeroed();
    let p = b.as_mut_ptr();
    // SAFETY: `p` points to a zeroed, properly aligned CpuTables allocation; we write
    // the fields whose valid state is not all-zero (the stacks are fine zeroed, and a
    // SegmentSelector of 0 is valid) before assuming the value initialised.
    let t = unsafe {
        (&raw mut (*p).gdt).write(GlobalDescriptorTable::new());
        (&raw mut (*p).tss).write(TaskStateSegment::new());
        b.assume_init()
    };
    setup(Box::leak(t));
}
