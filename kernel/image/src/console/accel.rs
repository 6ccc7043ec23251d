//! `accel`: the node's Q and Φ devices — state, capacity, counters, last fault,
//! interrupts — and `accel test [N]`: N no-op round trips guest → device →
//! completion interrupt, timed with the TSC, with p50/p99.

use super::{CmdError, usage};
use crate::service::Services;
use crate::{arch, println, time};
use alloc::vec::Vec;

/// Most round trips one `accel test` makes.
const MAX_ROUND_TRIPS: usize = 100_000;
/// How long one round trip may take before the test gives up on it.
const ROUND_TRIP_TIMEOUT_US: u64 = 3_000_000;

pub fn accel_cmd(s: &mut Services, args: &[&str]) -> Result<(), CmdError> {
    match args {
        [] => {
            show(s);
            Ok(())
        }
        ["test"] => round_trips(s, 20),
        ["test", n] => {
            let n: usize = n
                .parse()
                .ok()
                .filter(|n| (1..=MAX_ROUND_TRIPS).contains(n))
                .ok_or_else(|| CmdError::Failed(alloc::format!("round trips must be 1..={MAX_ROUND_TRIPS}")))?;
            round_trips(s, n)
        }
        _ => Err(usage("accel")),
    }
}

fn show(s: &Services) {
    let (q, phi) = s.accel.offer();
    let devices = s.accel.devices();
    println!(
        "accel: {} device(s); offering {q} Q containers, {phi} Φ windows; {} device task(s) running or waiting",
        devices.len(),
        s.accel.load()
    );
    for (line, d) in s.accel.describe().iter().zip(devices) {
        println!("  {line}; interrupts {}", crate::accel::interrupts(&d.port));
    }
}

fn round_trips(s: &mut Services, n: usize) -> Result<(), CmdError> {
    let mut us: Vec<u64> = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = time::uptime_us();
        let tag = s
            .accel
            .ping(t0 / 1000)
            .map_err(|e| CmdError::Failed(alloc::format!("accel test: {e:?}")))?;
        loop {
            s.poll(false);
            if let Some((ms, _device_us)) = s.accel.ping_result(tag) {
                if ms == u64::MAX {
                    return Err(CmdError::Failed("accel test: the device failed during the test".into()));
                }
                us.push(time::uptime_us() - t0);
                break;
            }
            if time::uptime_us() - t0 > ROUND_TRIP_TIMEOUT_US {
                return Err(CmdError::Failed(alloc::format!(
                    "accel test: no completion after {} ms",
                    ROUND_TRIP_TIMEOUT_US / 1000
                )));
            }
            arch::wait_for_interrupt();
        }
    }
    us.sort_unstable();
    let pct = |p: usize| us[(us.len() * p / 100).min(us.len() - 1)];
    println!(
        "accel test: {n} no-op round trips ok: p50 {} us, p99 {} us, max {} us",
        pct(50),
        pct(99),
        us[us.len() - 1]
    );
    Ok(())
}
