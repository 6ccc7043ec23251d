//! `accel`: the node's Q and Φ devices — state, capacity, counters, last fault,
//! interrupts — and `accel test [N]`: N round trips guest → device → completion
//! interrupt of three kinds on the first ready device, timed with the TSC, p50/p99:
//! a raw doorbell ping-pong (the floor), a no-op command through the rings, and a
//! small job (a 2-qubit Bell circuit of 100 shots, or a 2-oscillator envelope).

use super::{CmdError, usage};
use crate::service::Services;
use crate::{arch, println, time};
use alloc::vec::Vec;
use xdv_accel::job::{Circuit, Envelope};
use xdv_accel::regs::Kind;

/// Most round trips of each kind one `accel test` makes.
const MAX_ROUND_TRIPS: usize = 100_000;
/// How long one round trip may take before the test gives up.
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
                .ok_or_else(|| {
                    CmdError::Failed(alloc::format!("round trips must be 1..={MAX_ROUND_TRIPS}"))
                })?;
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

fn small_job(kind: Kind) -> Vec<u8> {
    match kind {
        Kind::Q => Circuit::bell(100).encode(),
        Kind::Phi => Envelope {
            oscillators: 2,
            frequencies_milli: alloc::vec![1000, 1000],
            coupling_milli: 1000,
            amplitude_milli: 1000,
            phases_milli: alloc::vec![0, 10],
            steps: 10,
            dt_micros: 1000,
            windows: 1,
            min_stability_milli: 100,
        }
        .encode(),
    }
}

fn summary(what: &str, us: &mut [u64]) {
    us.sort_unstable();
    let pct = |p: usize| us[(us.len() * p / 100).min(us.len() - 1)];
    println!(
        "accel test: {what}: {} round trips: p50 {} us, p99 {} us, max {} us",
        us.len(),
        pct(50),
        pct(99),
        us[us.len() - 1]
    );
}

fn fail(what: &str) -> CmdError {
    CmdError::Failed(alloc::format!(
        "accel test: {what}: no answer after {} ms",
        ROUND_TRIP_TIMEOUT_US / 1000
    ))
}

fn round_trips(s: &mut Services, n: usize) -> Result<(), CmdError> {
    let Some(kind) = s.accel.first_ready_kind() else {
        return Err(CmdError::Failed("accel test: no ready device".into()));
    };
    let dev = s
        .accel
        .devices()
        .iter()
        .position(|d| d.driver.as_ref().is_ok_and(|d| d.is_ready()))
        .expect("a ready device");
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        let port = &s.accel.devices()[dev].port;
        let before = crate::accel::interrupts(port);
        let t0 = time::uptime_us();
        port.raw_ping();
        while crate::accel::interrupts(&s.accel.devices()[dev].port) == before {
            if time::uptime_us() - t0 > ROUND_TRIP_TIMEOUT_US {
                return Err(fail("raw doorbell"));
            }
            arch::wait_for_interrupt();
        }
        raw.push(time::uptime_us() - t0);
    }
    summary("raw doorbell ping-pong", &mut raw);
    let job = small_job(kind);
    for (what, job) in [("no-op command", None), ("small job", Some(&job[..]))] {
        let mut us = Vec::with_capacity(n);
        for _ in 0..n {
            us.push(one_command(s, job).ok_or_else(|| fail(what))?);
        }
        summary(what, &mut us);
    }
    Ok(())
}

/// One command's round trip in µs, `None` on timeout or device failure.
fn one_command(s: &mut Services, job: Option<&[u8]>) -> Option<u64> {
    let t0 = time::uptime_us();
    let tag = s.accel.ping(t0 / 1000, job).ok()?;
    loop {
        s.poll(false);
        if let Some((ms, _)) = s.accel.ping_result(tag) {
            return (ms != u64::MAX).then(|| time::uptime_us() - t0);
        }
        if time::uptime_us() - t0 > ROUND_TRIP_TIMEOUT_US {
            return None;
        }
        arch::wait_for_interrupt();
    }
}
