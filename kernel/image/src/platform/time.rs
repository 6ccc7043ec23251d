//! Wall time for humans (`uptime`, benchmarks): the TSC, calibrated once at boot
//! against PIT channel 2. Never used to order anything: logical time does that.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// Shortest calibration window: 2 ms of PIT ticks. The end is read within about a
/// microsecond (one latch and two port reads), so the frequency is within about
/// 0.05 %; under emulation the PIT and the TSC both follow the host's clock, so a
/// descheduled vCPU does not skew it. (It was 10 ms: a fifth of the kernel's boot time
/// under TCG.)
const CALIBRATION_TICKS: u16 = 2_386;
/// The PIT's count when [`begin_calibration`] starts it: 55 ms before it runs out.
const FULL_COUNT: u16 = u16::MAX;

/// TSC when channel 2 started counting (0: not started).
static CAL_START_TSC: AtomicU64 = AtomicU64::new(0);
/// PIT ticks the calibration measured over (for the boot log).
static CAL_TICKS: AtomicU64 = AtomicU64::new(0);

/// PIT channel 2 and its gate (port 0x61).
struct Pit2 {
    gate: Port<u8>,
    cmd: Port<u8>,
    ch2: Port<u8>,
}

impl Pit2 {
    fn new() -> Pit2 {
        Pit2 {
            gate: Port::new(0x61),
            cmd: Port::new(0x43),
            ch2: Port::new(0x42),
        }
    }

    /// Loads `count` in mode 0 (counting down, output high at zero) and starts it;
    /// the TSC at the start.
    fn start(&mut self, count: u16) -> u64 {
        // SAFETY: ports 0x42/0x43/0x61 are the PIT channel 2 data/command and the
        // speaker gate; nothing else in XDV uses them. Speaker output stays disabled.
        unsafe {
            let g = self.gate.read();
            self.gate.write((g & !0x02) | 0x01);
            self.cmd.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
            self.ch2.write(count as u8);
            self.ch2.write((count >> 8) as u8);
            let g = self.gate.read() & !0x01;
            self.gate.write(g);
            self.gate.write(g | 0x01);
        }
        crate::arch::rdtsc()
    }

    /// (ticks counted since `start` from `FULL_COUNT`, TSC when latched), or `None`
    /// once the count ran out (the output is high: 55 ms or more ago).
    fn elapsed(&mut self) -> Option<(u16, u64)> {
        // SAFETY: as in `start`; the latch command freezes channel 2's count for
        // the two reads without stopping it.
        unsafe {
            let tsc = crate::arch::rdtsc();
            self.cmd.write(0b1000_0000); // latch channel 2
            let lo = self.ch2.read();
            let hi = self.ch2.read();
            if self.gate.read() & 0x20 != 0 {
                return None;
            }
            Some((FULL_COUNT - u16::from_le_bytes([lo, hi]), tsc))
        }
    }
}

/// Starts the calibration window as early as possible (first thing at kernel entry):
/// PIT channel 2 counts down while the boot goes on, and [`init`] reads how far it
/// got, so the window costs boot time only when the boot before [`init`] took less
/// than [`CALIBRATION_TICKS`]. Uptime counts from here.
pub fn begin_calibration() {
    let t0 = Pit2::new().start(FULL_COUNT);
    BOOT_TSC.store(t0, Ordering::Relaxed);
    CAL_START_TSC.store(t0, Ordering::Relaxed);
}

/// Measures the TSC frequency over the window [`begin_calibration`] opened (at least
/// [`CALIBRATION_TICKS`]; if it was never opened or ran out, over a fresh window).
/// Called once on the BSP with interrupts off.
pub fn init() {
    let mut pit = Pit2::new();
    let mut t0 = CAL_START_TSC.load(Ordering::Relaxed);
    if t0 == 0 || pit.elapsed().is_none() {
        t0 = pit.start(FULL_COUNT);
        if BOOT_TSC.load(Ordering::Relaxed) == 0 {
            BOOT_TSC.store(t0, Ordering::Relaxed);
        }
    }
    // A PIT that never counts (no such hardware seen) ends the wait after this many
    // reads, as the fixed window did: the frequency is then wrong, not the boot hung.
    const MAX_READS: u64 = 100_000_000;
    let mut reads = 0u64;
    let (ticks, t1) = loop {
        reads += 1;
        match pit.elapsed() {
            Some((ticks, t1)) if ticks >= CALIBRATION_TICKS => break (ticks, t1),
            _ if reads >= MAX_READS => break (CALIBRATION_TICKS, crate::arch::rdtsc()),
            // Ran out while we waited (a vCPU descheduled for 55 ms): start over.
            None => t0 = pit.start(FULL_COUNT),
            Some(_) => core::hint::spin_loop(),
        }
    };
    let hz = (t1 - t0) * PIT_HZ / u64::from(ticks);
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    CAL_TICKS.store(u64::from(ticks), Ordering::Relaxed);
}

/// How long the TSC calibration window was, in microseconds.
pub fn calibration_window_us() -> u64 {
    CAL_TICKS.load(Ordering::Relaxed) * 1_000_000 / PIT_HZ
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
