//! x86_64 architecture support: descriptor tables, exception entry, paging, and
//! small CPU helpers. Everything that touches CPU state lives under `arch/`.

pub mod gdt;
pub mod idt;
pub mod ioapic;
pub mod lapic;
pub mod paging;

use x86_64::instructions::port::Port;

/// isa-debug-exit codes (port 0xf4). QEMU exits with status `(code << 1) | 1`.
pub mod exit_code {
    /// In-kernel test passed (QEMU status 33).
    pub const PASS: u32 = 0x10;
    /// In-kernel test failed or the kernel panicked (QEMU status 35).
    pub const FAIL: u32 = 0x11;
    /// An exception was reported (QEMU status 37).
    pub const FAULT: u32 = 0x12;
    /// `halt` from the console (QEMU status 1).
    pub const HALT: u32 = 0x00;
}

/// Asks QEMU's isa-debug-exit device to end the VM with `code`; if the device is not
/// present (real hardware, GRUB ISO without it) the CPU halts instead.
pub fn exit_qemu(code: u32) -> ! {
    // Boot output held for after the ready line is written out first.
    crate::serial::write_held_for_report();
    // SAFETY: port 0xf4 is the isa-debug-exit device in our QEMU configuration; on a
    // machine without it the write is ignored by the chipset.
    unsafe { Port::<u32>::new(0xf4).write(code) };
    halt_forever()
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Remaps the legacy 8259 PICs to vectors 0x20..0x2f (away from the exceptions) and
/// masks every line: XDV uses the LAPIC only. Without this the firmware's mapping
/// delivers the PIT's IRQ0 on vector 8, which looks like a double fault.
pub fn disable_legacy_pic() {
    // SAFETY: ports 0x20/0x21/0xa0/0xa1 are the 8259 command/data ports; the ICW
    // sequence below is the standard initialisation, ending with all lines masked.
    unsafe {
        let (mut c1, mut d1) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
        let (mut c2, mut d2) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
        c1.write(0x11);
        c2.write(0x11);
        d1.write(0x20);
        d2.write(0x28);
        d1.write(4);
        d2.write(2);
        d1.write(1);
        d2.write(1);
        d1.write(0xff);
        d2.write(0xff);
    }
}

/// Sleeps until the next interrupt (a NIC, the serial port, an IPI, a device) or at
/// most [`lapic::max_sleep_us`]. Interrupts are enabled only inside this call, so
/// handlers never interrupt kernel code elsewhere; `sti; hlt` is atomic with respect to
/// a pending interrupt, so a wake-up cannot be lost.
pub fn wait_for_interrupt() {
    wait_at_most_us(u64::MAX);
}

/// [`wait_for_interrupt`], with the timer armed to end the sleep after `us` at the
/// latest (the caller's next deadline).
pub fn wait_at_most_us(us: u64) {
    lapic::arm_oneshot(us);
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Resets the machine: ICH9/PIIX reset control register, then the keyboard
/// controller, then a forced triple fault as the last resort.
pub fn reboot() -> ! {
    // SAFETY: 0xcf9 is the reset control register on q35 (ICH9) and i440fx (PIIX);
    // writing 0x06 requests a hard reset. Nothing else owns this port.
    unsafe { Port::<u8>::new(0xcf9).write(0x06) };
    for _ in 0..1_000_000 {
        core::hint::spin_loop();
    }
    // SAFETY: 0xfe on the i8042 command port pulses the CPU reset line.
    unsafe { Port::<u8>::new(0x64).write(0xfe) };
    for _ in 0..1_000_000 {
        core::hint::spin_loop();
    }
    idt::force_triple_fault()
}
