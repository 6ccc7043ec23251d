//! Q and Φ accelerators, the pure parts (`docs/accel.md`).
//!
//! - [`regs`] and [`ring`]: the device interface — the register block and the
//!   submission/completion rings in the device's shared memory.
//! - [`driver`]: the driver's logic over any [`regs::DeviceMemory`]: discovery checks,
//!   command submission, completion validation, the watchdog and reset.
//! - [`job`]: what a Q or Φ job is on the wire (circuits with exact angles, phase
//!   envelopes) and what comes back (counts, envelope summaries).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod device;
pub mod driver;
pub mod fuzz;
pub mod job;
pub mod regs;
pub mod ring;
