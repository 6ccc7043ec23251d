//! COM1 serial port (`uart_16550`) and the kernel's `log` facade backend.
//!
//! All normal output takes the [`COM1`] lock. The panic and exception paths use
//! [`emergency_write`], which bypasses the lock: the lock may be held by the code that
//! faulted, and a report must still get out.
//!
//! **Boot output follows the ready line.** Under QEMU every byte written to COM1 is
//! one write by the emulator: the dozen lines (about 1 KiB) a boot prints before its
//! ready line delayed it; holding them made the boot 0.5–1 ms shorter in the kernel
//! (about 16.6 of 17.1 ms, docs/boot.md). So from [`hold_boot_output`] (at the
//! default log level; `log=debug` or `trace` keeps every line live for debugging a
//! boot) what the boot prints is kept in [`HELD_BYTES`] of memory, in order, and
//! written out right after the ready line ([`ready_line`]). A warning or an
//! error writes out what is held and then itself at once (a problem is never late);
//! a full buffer is written out and holding stops; a panic or an exception report
//! writes out what is held first ([`write_held_for_report`]).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use spin::Mutex;
use uart_16550::SerialPort;

const COM1_PORT: u16 = 0x3f8;

pub static COM1: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Initialises COM1 (115200 8N1, FIFO on). Called once, first thing at boot.
pub fn init() {
    // SAFETY: 0x3f8 is the standard COM1 I/O base on PC-compatible machines and
    // nothing else in the kernel drives it.
    let mut port = unsafe { SerialPort::new(COM1_PORT) };
    port.init();
    *COM1.lock() = Some(port);
}

/// Writer that translates `\n` into `\r\n` (a raw terminal needs both).
struct CrLf<'a>(&'a mut SerialPort);

impl Write for CrLf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.send(b'\r');
            }
            self.0.send(b);
        }
        Ok(())
    }
}

/// Bytes of boot output held back until the ready line (a boot prints about 1 KiB).
pub const HELD_BYTES: usize = 8192;

/// Boot output not yet written ([`hold_boot_output`]).
struct Held {
    on: bool,
    len: usize,
    buf: [u8; HELD_BYTES],
}

/// Appends to the held bytes; fails (leaving a partial line) when they are full.
impl Write for Held {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > HELD_BYTES {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Lock order: [`HELD`], then [`COM1`].
static HELD: Mutex<Held> = Mutex::new(Held {
    on: false,
    len: 0,
    buf: [0; HELD_BYTES],
});

/// Writes out and forgets the held bytes.
fn write_held(held: &mut Held) {
    if held.len == 0 {
        return;
    }
    if let Some(port) = COM1.lock().as_mut() {
        LIVE.store(true, Ordering::Relaxed);
        // The buffer holds whole `write_str` pieces of UTF-8 text.
        let text = core::str::from_utf8(&held.buf[..held.len]).unwrap_or("");
        let _ = CrLf(port).write_str(text);
    }
    held.len = 0;
}

/// From now on, what is printed is held until [`ready_line`] or [`release_boot_output`] (module doc).
pub fn hold_boot_output() {
    x86_64::instructions::interrupts::without_interrupts(|| HELD.lock().on = true);
}

/// Writes out what the boot held and prints live from now on (a boot that has no
/// ready line: discovery mode).
pub fn release_boot_output() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut held = HELD.lock();
        held.on = false;
        write_held(&mut held);
    });
}

/// Held boot output for a panic or exception report, written without waiting for a
/// lock that the faulting code may hold (nothing is written then).
pub fn write_held_for_report() {
    if let Some(mut held) = HELD.try_lock() {
        held.on = false;
        let text = core::str::from_utf8(&held.buf[..held.len]).unwrap_or("");
        let _ = Emergency.write_str(text);
        held.len = 0;
    }
}

/// Something was written to COM1 (not only held).
static LIVE: AtomicBool = AtomicBool::new(false);

fn print_live(args: fmt::Arguments) {
    if let Some(port) = COM1.lock().as_mut() {
        LIVE.store(true, Ordering::Relaxed);
        let _ = CrLf(port).write_fmt(args);
    }
}

pub fn _print(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut held = HELD.lock();
        if held.on {
            let before = held.len;
            if held.write_fmt(args).is_ok() {
                return;
            }
            // Full: what fitted goes out with the rest; the boot prints live from now.
            held.len = before;
            held.on = false;
            write_held(&mut held);
        }
        drop(held);
        print_live(args);
    });
}

/// Prints now, after anything held (a warning, an error, the ready line); holding
/// goes on for what comes after.
pub fn _print_now(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        write_held(&mut HELD.lock());
        print_live(args);
    });
}

/// Prints the ready line, then what the boot held (module doc), and prints live from
/// now on. The line is on a line of its own: when it is the kernel's first output, the
/// firmware's or GRUB's last line may still be open (`Booting from ROM..`), and tools
/// look for lines that start with `xdv: ready`.
pub fn ready_line(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut held = HELD.lock();
        if !LIVE.load(Ordering::Relaxed) {
            print_live(format_args!("\n"));
        }
        print_live(args);
        held.on = false;
        write_held(&mut held);
    });
}

/// Reads one byte if one is waiting (non-blocking).
pub fn try_read() -> Option<u8> {
    let mut guard = COM1.lock();
    let port = guard.as_mut()?;
    // SAFETY: reading the line status register (base + 5) of the UART we own has no
    // side effects beyond reporting data-ready (bit 0).
    let ready = unsafe { x86_64::instructions::port::Port::<u8>::new(COM1_PORT + 5).read() } & 1;
    (ready != 0).then(|| port.receive())
}

/// Raw, lock-free writer for panic and exception reports.
pub struct Emergency;

impl Write for Emergency {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                emergency_byte(b'\r');
            }
            emergency_byte(b);
        }
        Ok(())
    }
}

fn emergency_byte(b: u8) {
    use x86_64::instructions::port::Port;
    // SAFETY: polled writes to COM1's LSR/THR; at worst they interleave with a
    // concurrent locked writer, which only garbles text.
    unsafe {
        let mut lsr = Port::<u8>::new(COM1_PORT + 5);
        for _ in 0..100_000 {
            if lsr.read() & 0x20 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        Port::<u8>::new(COM1_PORT).write(b);
    }
}

pub fn emergency_write(args: fmt::Arguments) {
    let _ = Emergency.write_fmt(args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `log` backend: `[LEVEL] message` lines on COM1, filtered by a runtime level.
struct SerialLogger;

static LEVEL: AtomicU8 = AtomicU8::new(3);

fn level_to_u8(l: xdv_boot::LogLevel) -> u8 {
    match l {
        xdv_boot::LogLevel::Error => 1,
        xdv_boot::LogLevel::Warn => 2,
        xdv_boot::LogLevel::Info => 3,
        xdv_boot::LogLevel::Debug => 4,
        xdv_boot::LogLevel::Trace => 5,
    }
}

impl log::Log for SerialLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        (m.level() as u8) <= LEVEL.load(Ordering::Relaxed)
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format_args!("[{:<5}] {}\n", r.level(), r.args());
        if r.level() <= log::Level::Warn {
            _print_now(line);
        } else {
            _print(line);
        }
    }

    fn flush(&self) {}
}

static LOGGER: SerialLogger = SerialLogger;

pub fn init_logger(level: xdv_boot::LogLevel) {
    // set_logger fails only if called twice; the kernel calls it once at boot.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
    set_level(level);
}

pub fn set_level(level: xdv_boot::LogLevel) {
    LEVEL.store(level_to_u8(level), Ordering::Relaxed);
}
