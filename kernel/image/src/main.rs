//! The XDV kernel: thin glue that boots the machine, feeds the pure crates inputs
//! from drivers and performs their outputs. Boot order (docs/boot.md):
//! serial → boot info → command line → GDT/TSS/IDT → paging refinement → frames →
//! heap → TSC → ready line → test or console.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
// `&mut *(&raw mut STATIC)` is the edition-2024 way to borrow a `static mut` once,
// under a documented exclusivity argument; clippy's suggestion would not compile.
#![allow(clippy::deref_addrof)]

extern crate alloc;

mod accel;
mod audit;
mod console;
mod devices;
mod discover;
mod executor;
mod net;
mod platform;
mod selftest;
mod service;
mod tasks;
mod transport;

// The platform's modules by their short names (`crate::arch`, `crate::mem`, ...).
pub use platform::{acpi, arch, ktest, mem, rt, serial, smp, time};

use core::fmt::Write;
use spin::Once;
use xdv_boot::{BootError, BootInfo, KernelOptions, PhysRead};

core::arch::global_asm!(include_str!("../../../boot/entry.s"), options(att_syntax));
core::arch::global_asm!(
    include_str!("../../../boot/trampoline.s"),
    options(att_syntax)
);

static BOOT_INFO: Once<BootInfo> = Once::new();
static OPTIONS: Once<KernelOptions> = Once::new();

/// The parsed boot information (set once, before anything else can ask).
pub fn boot_info() -> &'static BootInfo {
    BOOT_INFO
        .get()
        .expect("boot info read before it was parsed")
}

/// The parsed command-line options.
pub fn options() -> &'static KernelOptions {
    OPTIONS.get().expect("options read before they were parsed")
}

/// Boot data lives in low memory, identity-mapped by the entry code (0..4 GiB).
struct IdentityMap;

impl PhysRead for IdentityMap {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootError> {
        let out = BootError::OutOfRange {
            addr,
            len: buf.len(),
        };
        let end = addr.checked_add(buf.len() as u64).ok_or(out)?;
        if addr == 0 || end > (4u64 << 30) {
            return Err(out);
        }
        // SAFETY: [addr, end) lies in the identity-mapped 0..4 GiB window and above the
        // null pointer; boot structures are plain bytes, read without forming references
        // to typed data.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// Who this node is: the provisioning module if there is one (refused modules leave
/// the node out of any cluster, with the reason on the console), else the command line.
fn identity(
    info: &BootInfo,
    opts: &xdv_boot::cmdline::KernelOptions,
) -> (xdv_node::Identity, Option<xdv_boot::federation::FedSection>) {
    let mut module = None;
    for m in info.modules() {
        let len = m.len as usize;
        if !(8..=xdv_boot::provision::MAX_BYTES + xdv_boot::federation::MAX_BYTES).contains(&len) {
            continue;
        }
        let mut bytes = alloc::vec![0u8; len];
        if IdentityMap.read(m.base, &mut bytes).is_ok() && bytes[..8] == xdv_boot::provision::MAGIC
        {
            module = Some(bytes);
            break;
        }
    }
    let given = opts.node != 0;
    // A federation section may follow the provisioning record in the same module.
    let mut fed = None;
    if let Some(bytes) = module.as_mut()
        && let Some(n) = xdv_boot::provision::Provision::record_len(bytes)
        && bytes.len() > n
    {
        match xdv_boot::federation::FedSection::parse(&bytes[n..]) {
            Ok(f) => fed = Some(f),
            Err(e) => {
                println!("xdv: provision: federation section refused: {e}; a plain cluster node")
            }
        }
        bytes.truncate(n);
    }
    let id = match service::identity_from(module.as_deref(), opts.node, given, opts.peers()) {
        Ok(id) => {
            if module.is_some() {
                println!(
                    "xdv: provision: node {} of cluster {}, {} peers, {} tenants",
                    id.node,
                    id.cluster,
                    id.peers.len(),
                    id.tenants.len()
                );
            } else if !id.peers.is_empty() && opts.peers().len() > 1 {
                println!("xdv: provision: no module; peers from the command line, no keys");
            }
            id
        }
        Err(e) => {
            println!("xdv: provision: module refused: {e}; this node joins no cluster");
            xdv_node::Identity {
                node: opts.node,
                cluster: 0,
                seed: None,
                peers: alloc::vec::Vec::new(),
                tenants: alloc::vec::Vec::new(),
                operator_key: [0; 32],
            }
        }
    };
    // Federation peers are authenticated with keys: no module, no federation.
    let fed = fed.filter(|_| id.seed.is_some());
    if let Some(f) = &fed {
        println!(
            "xdv: provision: federation: {} of gate group {}, {} peers across",
            match f.role {
                xdv_boot::federation::FedRole::Gate => "gate",
                xdv_boot::federation::FedRole::Member => "member",
            },
            f.gate_cluster,
            f.peers().len()
        );
    }
    (id, fed)
}

/// Where boot time goes: the time-stamp counter at the end of each step, printed
/// (after calibration) in the line before the ready line.
struct BootPhases {
    start: u64,
    marks: [(&'static str, u64); 16],
    len: usize,
}

impl BootPhases {
    fn start() -> BootPhases {
        BootPhases {
            start: arch::rdtsc(),
            marks: [("", 0); 16],
            len: 0,
        }
    }

    fn mark(&mut self, name: &'static str) {
        if self.len < self.marks.len() {
            self.marks[self.len] = (name, arch::rdtsc());
            self.len += 1;
        }
    }
}

impl core::fmt::Display for BootPhases {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ms = |cycles: u64| time::cycles_to_ns(cycles) as f64 / 1e6;
        let end = self.marks[..self.len].last().map_or(self.start, |m| m.1);
        // The TSC counts from the machine's reset: its value at entry is the firmware's
        // and loader's time.
        write!(
            f,
            "{:.1} ms in the kernel, entered {:.1} ms after reset:",
            ms(end - self.start),
            ms(self.start)
        )?;
        let mut prev = self.start;
        for (name, t) in &self.marks[..self.len] {
            write!(f, " {name} {:.1}", ms(t - prev))?;
            prev = *t;
        }
        Ok(())
    }
}

/// Entered from `boot/entry.s` in long mode on the boot stack.
#[unsafe(no_mangle)]
pub extern "C" fn kernel_entry(proto: u32, info_addr: u32) -> ! {
    time::begin_calibration();
    let mut phases = BootPhases::start();
    serial::init();
    phases.mark("serial");
    let info = match BootInfo::parse(proto, u64::from(info_addr), &IdentityMap) {
        Ok(info) => info,
        Err(e) => {
            serial::emergency_write(format_args!("xdv: boot: bad boot data: {e}; halting\n"));
            arch::exit_qemu(arch::exit_code::FAIL)
        }
    };
    let info = BOOT_INFO.call_once(|| info);
    let parsed = xdv_boot::cmdline::parse(info.cmdline());
    serial::init_logger(parsed.options.log);
    // What the boot prints follows the ready line (serial.rs), unless a debug level
    // asks for every line as it happens.
    if matches!(
        parsed.options.log,
        xdv_boot::LogLevel::Error | xdv_boot::LogLevel::Warn | xdv_boot::LogLevel::Info
    ) {
        serial::hold_boot_output();
    }
    for d in parsed.diags() {
        println!("xdv: cmdline: {d}");
    }
    if parsed.dropped_diags > 0 {
        println!(
            "xdv: cmdline: {} more problems not shown",
            parsed.dropped_diags
        );
    }
    let opts = OPTIONS.call_once(|| parsed.options.clone());
    phases.mark("parse");
    log::info!(
        "xdv: booted via {}, cmdline \"{}\"",
        info.protocol,
        info.cmdline()
    );

    arch::disable_legacy_pic();
    arch::gdt::init_bsp();
    arch::idt::init();
    phases.mark("early");
    arch::paging::refine(info);
    phases.mark("paging");
    init_memory(info, opts, proto, info_addr);
    phases.mark("memory");
    time::init();
    phases.mark("tsc");
    let (ident, fed) = identity(info, opts);
    let node = ident.node;
    phases.mark("identity");
    let acpi = acpi::read();
    phases.mark("acpi");
    let madt = acpi.as_ref().filter(|a| !a.apic_ids.is_empty());
    smp::prepare(madt.map_or(0xfee0_0000, |a| a.lapic_base));
    audit::init(node);
    phases.mark("audit");
    match madt {
        Some(a) => smp::start_aps(&a.apic_ids, executor::ap_main),
        None => {
            log::warn!("acpi: no MADT; running on the boot CPU only");
            smp::start_aps(&[], executor::ap_main);
        }
    }
    phases.mark("smp");
    let serial_irq = route_serial(acpi.as_ref());
    let (devices, nics, accels) = devices::discover(acpi.as_ref().and_then(|a| a.ecam));
    phases.mark("devices");
    // Sleep up to a Raft tick when every input interrupts; else wake every 1 ms to
    // poll what does not (an e1000e NIC, the console without its IRQ).
    let polled = nics.iter().filter(|n| !n.rx_interrupts()).count();
    if polled == 0 && (serial_irq || !opts.console) {
        arch::lapic::set_max_sleep_us(arch::lapic::IDLE_SLEEP_US);
    } else {
        arch::lapic::set_max_sleep_us(arch::lapic::POLLED_SLEEP_US);
    }
    log::info!(
        "loop: sleeps until an interrupt or its next deadline, at most {} us ({polled} polled NIC(s), serial {})",
        arch::lapic::max_sleep_us(),
        if serial_irq { "by interrupt" } else { "polled" }
    );
    // An unknown MAC (GRUB's `discover=`): report to the cluster, join nothing.
    if let Some(d) = opts.discover {
        let _ = (devices, accels);
        serial::release_boot_output();
        let net = net::Net::new(nics, Some(discover::link_local(&d.mac)));
        discover::run(d, net, smp::online(), info.usable_bytes() >> 20);
    }
    let peer_ip = opts
        .ip
        .map(|c| (smoltcp::wire::Ipv4Address::from(c.addr), c.prefix));
    let net = net::Net::new(nics, peer_ip);
    executor::init(smp::online());
    phases.mark("net");
    let mut services =
        service::Services::new(ident, fed, devices, accels, net, smp::online(), opts);
    phases.mark("services");

    let usable_mib = info.usable_bytes() >> 20;
    // The boot's own lines follow the ready line: every serial byte costs the boot
    // under QEMU (one write by the emulator per byte), and they only describe the boot
    // that just ended (serial.rs).
    serial::ready_line(format_args!(
        "xdv: ready node={} cores={} mem={}MiB\n",
        node,
        smp::online(),
        usable_mib
    ));
    println!("{}", services.describe());
    // Measured after the ready line: a byte-wise scan of the 256 KiB stack (about
    // 0.3 ms under TCG) that only feeds this line.
    let (stack_bottom, stack_top) = arch::paging::boot_stack();
    let stack_used = arch::paging::boot_stack_used();
    log::info!(
        "boot stack: {} KiB of {} KiB used so far",
        stack_used / 1024,
        (stack_top - stack_bottom) / 1024
    );
    log::info!("boot: {phases}");
    if let Some(test) = opts.test() {
        ktest::run(test, selftest::TESTS);
    }
    // The node's loop: serve the network and consensus, run the console's input,
    // sleep until the next interrupt (a NIC's receive queue, the serial port, an AP
    // that finished a batch, an accelerator) or smoltcp's next timer, at most
    // `lapic::max_sleep_us` (the Raft tick, or 1 ms while an input is polled).
    // `console=off` (benchmarks): the node runs without reading the serial port.
    let mut console = opts.console.then(console::Console::new);
    loop {
        services.poll(true);
        if let Some(c) = console.as_mut() {
            c.poll(&mut services);
        }
        let before_us = time::uptime_us();
        arch::wait_at_most_us(services.net.poll_delay_us().unwrap_or(u64::MAX));
        services.waited(time::uptime_us() - before_us);
    }
}

/// COM1's receive interrupt (ISA IRQ 4) to the boot CPU, so console input wakes the
/// loop at once; without an I/O APIC the console is read on timer wake-ups (false).
fn route_serial(acpi: Option<&acpi::AcpiInfo>) -> bool {
    let Some(a) = acpi else { return false };
    match arch::ioapic::route_isa(a, 4, arch::idt::VECTOR_SERIAL, arch::lapic::id()) {
        Ok(gsi) => {
            log::info!("serial: COM1 receive interrupt on GSI {gsi}");
            true
        }
        Err(e) => {
            log::warn!("serial: COM1 read on timer wake-ups only: {e}");
            false
        }
    }
}

fn init_memory(info: &BootInfo, opts: &KernelOptions, proto: u32, info_addr: u32) {
    let mut reserved: [mem::frames::Reserved; xdv_boot::info::MAX_MODULES + 3] =
        [(0, 0, ""); xdv_boot::info::MAX_MODULES + 3];
    reserved[0] = (opts.audit.0, opts.audit.1, "audit region");
    reserved[2] = (opts.raft.0, opts.raft.1, "raft region");
    if let Err(e) = mem::regions::disjoint(opts.audit, "audit", opts.raft, "raft") {
        println!("xdv: boot: {e}; halting");
        arch::exit_qemu(arch::exit_code::FAIL)
    }
    if proto == 2 {
        // The Multiboot2 info holds the ACPI RSDP copy we read later.
        let mut size = [0u8; 4];
        let total = IdentityMap
            .read(u64::from(info_addr), &mut size)
            .map(|()| u32::from_le_bytes(size));
        reserved[1] = (
            u64::from(info_addr),
            u64::from(total.unwrap_or(4096)),
            "multiboot2 info",
        );
    }
    for (slot, m) in reserved[3..].iter_mut().zip(info.modules()) {
        *slot = (m.base, m.len, "boot module");
    }
    mem::frames::init(info, &reserved);
    let size = mem::heap::size_for(info.usable_bytes());
    match mem::heap::init(size) {
        Ok(base) => log::info!("heap: {} KiB at {base:#x}", size / 1024),
        Err(e) => {
            println!("xdv: boot: cannot create the kernel heap: {e}; halting");
            arch::exit_qemu(arch::exit_code::FAIL)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    serial::write_held_for_report();
    let mut w = serial::Emergency;
    let _ = writeln!(w, "\nxdv: panic: {} (cpu {})", info, smp::cpu_index());
    smp::stop_others();
    arch::exit_qemu(arch::exit_code::FAIL)
}
