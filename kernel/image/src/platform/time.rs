//! Wall time for humans (`uptime`, benchmarks): the TSC, calibrated once at boot
//! against PIT channel 2. Never used to order anything: logical time does that.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 2 ms of PIT ticks. The end is seen within about a microsecond
/// (one port read), so the frequency is within about 0.05 %; under emulation the PIT
/// and the TSC both follow the host's clock, so a descheduled vCPU does not skew it.
/// (It was 10 ms: a fifth of the kernel's boot time under TCG.)
const CALIBRATION_TICKS: u16 = 2_386;

/// Measures the TSC frequency. Called once on the BSP with interrupts off.
pub fn init() {
    BOOT_TSC.store(crate::arch::rdtsc(), Ordering::Relaxed);
    // SAFETY: ports 0x42/0x43/0x61 are the PIT channel 2 data/command and the
    // speaker gate; nothing else in XDV uses them. Speaker output stays disabled.
    let (t0, t1) = unsafe {
        let mut gate = Port::<u8>::new(0x61);
        let mut cmd = Port::<u8>::new(0x43);
        let mut ch2 = Port::<u8>::new(0x42);
        let g = gate.read();
        gate.write((g & !0x02) | 0x01);
        cmd.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(CALIBRATION_TICKS as u8);
        ch2.write((CALIBRATION_TICKS >> 8) as u8);
        let g = gate.read() & !0x01;
        gate.write(g);
        gate.write(g | 0x01);
        let t0 = crate::arch::rdtsc();
        let mut spins = 0u64;
        while gate.read() & 0x20 == 0 && spins < 100_000_000 {
            spins += 1;
        }
        (t0, crate::arch::rdtsc())
    };
    let hz = (t1 - t0) * PIT_HZ / u64::from(CALIBRATION_TICKS);
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed).max(1)
}

/// Microseconds since boot.
pub fn uptime_us() -> u64 {
    let d = crate::arch::rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed));
    (u128::from(d) * 1_000_000 / u128::from(tsc_hz())) as u64
}

/// Converts a TSC delta to nanoseconds.
pub fn cycles_to_ns(cycles: u64) -> u64 {
    (u128::from(cycles) * 1_000_000_000 / u128::from(tsc_hz())) as u64
}
