//! Application-processor bring-up and CPU bookkeeping.
//!
//! The BSP copies `boot/trampoline.s` to 0x8000 and starts each AP listed in the
//! ACPI MADT with INIT-SIPI-SIPI, one at a time: it writes the AP's stack and index
//! into the trampoline's data words, waits for the AP to report online, then moves
//! on. Each AP loads its own GDT/TSS/IST stacks, the IDT, enables its LAPIC and
//! enters its executor loop. The CPU index lives in IA32_GS_BASE (0 = BSP).

use crate::arch::{gdt, idt, lapic};
use crate::mem::frames;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use x86_64::registers::model_specific::Msr;

/// Most CPUs XDV drives; more in the MADT are reported and left parked.
pub const MAX_CPUS: usize = 16;
const TRAMPOLINE_PHYS: u64 = 0x8000;
const AP_STACK_PAGES: usize = 16;
const IA32_GS_BASE: u32 = 0xc000_0101;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum CpuState {
    Absent = 0,
    Starting = 1,
    Online = 2,
    Failed = 3,
}

static STATE: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
static APIC_ID: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static ONLINE: AtomicUsize = AtomicUsize::new(1);
static STOPPING: AtomicBool = AtomicBool::new(false);
/// What an AP runs once online, handed over by `start_aps` (no import of the executor).
static AP_MAIN: spin::Once<fn(usize) -> !> = spin::Once::new();
/// Per-CPU description for `cpus`, given by the executor.
static DESCRIBE: spin::Once<fn(usize) -> alloc::string::String> = spin::Once::new();

fn idle_forever(_cpu: usize) -> ! {
    loop {
        crate::arch::wait_for_interrupt();
    }
}

/// Sets what `cpus` prints after each CPU's state.
pub fn set_describe(f: fn(usize) -> alloc::string::String) {
    DESCRIBE.call_once(|| f);
}

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_data: u8;
}

/// Index (0 = BSP) of the calling CPU.
pub fn cpu_index() -> usize {
    // SAFETY: reading GS_BASE has no side effects; XDV stores the CPU index there
    // (0 on the BSP, which never writes it).
    (unsafe { Msr::new(IA32_GS_BASE).read() }) as usize
}

/// CPUs running.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

pub fn state(cpu: usize) -> CpuState {
    match STATE[cpu].load(Ordering::Acquire) {
        1 => CpuState::Starting,
        2 => CpuState::Online,
        3 => CpuState::Failed,
        _ => CpuState::Absent,
    }
}

pub fn apic_id(cpu: usize) -> u32 {
    APIC_ID[cpu].load(Ordering::Relaxed)
}

/// Wake-up IPI handler: nothing to do beyond ending `hlt` (the EOI is required).
pub fn on_ipi() {
    lapic::eoi();
}

/// Non-maskable interrupt: during a fatal stop, park this CPU silently.
pub fn on_nmi() -> bool {
    if STOPPING.load(Ordering::Acquire) {
        crate::arch::halt_forever();
    }
    false
}

/// Stops every other CPU (fatal paths).
pub fn stop_others() {
    STOPPING.store(true, Ordering::Release);
    if online() > 1 {
        lapic::send_nmi_all_but_self();
    }
}

/// Wakes `cpu` from `hlt` (work was queued for it).
pub fn wake(cpu: usize) {
    if cpu != cpu_index() && state(cpu) == CpuState::Online {
        lapic::send_ipi(apic_id(cpu), idt::VECTOR_IPI_WAKE);
    }
}

/// Whether the boot processor is older than those that start APs without the
/// INIT-to-SIPI delay (vendor and family from CPUID leaves 0 and 1).
fn needs_init_delay() -> bool {
    let (vendor, sig) = (
        core::arch::x86_64::__cpuid(0),
        core::arch::x86_64::__cpuid(1).eax,
    );
    let base = (sig >> 8) & 0xf;
    let family = if base == 0xf {
        base + ((sig >> 20) & 0xff)
    } else {
        base
    };
    // "GenuineIntel" / "AuthenticAMD": ebx holds the first four letters.
    let modern = match vendor.ebx.to_le_bytes() {
        [b'G', b'e', b'n', b'u'] => family >= 6,
        [b'A', b'u', b't', b'h'] => family >= 0xf,
        _ => false,
    };
    !modern
}

fn delay_us(us: u64) {
    let end = crate::arch::rdtsc() + crate::time::tsc_hz() / 1_000_000 * us;
    while crate::arch::rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Enables the boot CPU's LAPIC at `lapic_base` and starts measuring its timer, which
/// [`start_aps`] finishes: the boot's work in between is the calibration window.
pub fn prepare(lapic_base: u64) {
    lapic::init(lapic_base);
    lapic::begin_calibration();
}

/// Starts every AP in `apic_ids` (the MADT's enabled processors, BSP included), after
/// [`prepare`]; each runs `entry(cpu)` once online.
pub fn start_aps(apic_ids: &[u32], entry: fn(usize) -> !) {
    AP_MAIN.call_once(|| entry);
    lapic::finish_calibration();
    lapic::start_timer();
    let bsp = lapic::id();
    APIC_ID[0].store(bsp, Ordering::Relaxed);
    STATE[0].store(CpuState::Online as u8, Ordering::Release);
    let len = &raw const ap_trampoline_end as usize - &raw const ap_trampoline_start as usize;
    // SAFETY: 0x8000..0x8000+len lies in the first MiB, which the frame allocator never
    // hands out, is identity-mapped and writable, and no other CPU runs yet.
    unsafe {
        core::ptr::copy_nonoverlapping(
            &raw const ap_trampoline_start,
            TRAMPOLINE_PHYS as *mut u8,
            len,
        );
    }
    let data_off = &raw const ap_trampoline_data as u64 - &raw const ap_trampoline_start as u64;
    let data = (TRAMPOLINE_PHYS + data_off) as *mut u64;
    for (next, &id) in (1..).zip(apic_ids.iter().filter(|&&id| id != bsp)) {
        if next == MAX_CPUS {
            log::warn!("smp: more than {MAX_CPUS} CPUs; apic {id} and later left parked");
            break;
        }
        start_one(next, id, data);
    }
    log::info!("smp: {} of {} CPUs online", online(), apic_ids.len().max(1));
}

fn start_one(cpu: usize, id: u32, data: *mut u64) {
    let Some(stack) = frames::alloc(AP_STACK_PAGES) else {
        log::error!("smp: no memory for cpu{cpu}'s stack; not started");
        return;
    };
    let top = stack + (AP_STACK_PAGES as u64) * frames::FRAME_BYTES;
    APIC_ID[cpu].store(id, Ordering::Relaxed);
    STATE[cpu].store(CpuState::Starting as u8, Ordering::Release);
    let cr3 = x86_64::registers::control::Cr3::read()
        .0
        .start_address()
        .as_u64();
    // SAFETY: `data` points at the trampoline's four data words (cr3, stack, entry,
    // cpu) in the copy at 0x8000; no AP is running the trampoline while we write.
    unsafe {
        data.write_volatile(cr3);
        data.add(1).write_volatile(top);
        data.add(2).write_volatile(ap_entry as *const () as u64);
        data.add(3).write_volatile(cpu as u64);
    }
    core::sync::atomic::fence(Ordering::SeqCst);
    lapic::send_init(id);
    // The MP specification's 10 ms between INIT and SIPI is for the 486-era
    // external APIC; processors since (Intel family 6 and later, AMD family 0Fh and
    // later) do not need it, and Linux skips it on them (`init_udelay = 0`).
    if needs_init_delay() {
        delay_us(10_000);
    }
    for _attempt in 0..2 {
        lapic::send_sipi(id, (TRAMPOLINE_PHYS >> 12) as u8);
        // TCG can be slow to schedule a new vCPU: wait up to 1 s.
        for _ in 0..10_000 {
            if state(cpu) == CpuState::Online {
                return;
            }
            delay_us(100);
        }
    }
    STATE[cpu].store(CpuState::Failed as u8, Ordering::Release);
    log::error!("smp: cpu{cpu} (apic {id}) did not come online");
}

extern "C" fn ap_entry(cpu: u64) -> ! {
    // SAFETY: GS_BASE is otherwise unused in XDV; it holds this CPU's index.
    unsafe { Msr::new(IA32_GS_BASE).write(cpu) };
    gdt::init_ap();
    idt::load();
    lapic::enable();
    lapic::start_timer();
    let cpu = cpu as usize;
    ONLINE.fetch_add(1, Ordering::AcqRel);
    STATE[cpu].store(CpuState::Online as u8, Ordering::Release);
    let entry = AP_MAIN.get().copied().unwrap_or(idle_forever);
    entry(cpu)
}

/// Prints one line per CPU for the `cpus` command.
pub fn print_cpus() {
    crate::println!("cpus: {} online", online());
    for cpu in 0..MAX_CPUS {
        let s = state(cpu);
        if s == CpuState::Absent {
            continue;
        }
        let role = if cpu == 0 { "bsp" } else { "ap " };
        crate::println!(
            "  cpu{cpu} apic={} {role} {:?} {}",
            apic_id(cpu),
            s,
            DESCRIBE
                .get()
                .map_or_else(alloc::string::String::new, |d| d(cpu))
        );
    }
}
