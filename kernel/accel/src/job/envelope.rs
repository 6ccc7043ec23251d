//! Φ jobs: [`Envelope`] (a bank of coupled phase oscillators, Kuramoto model, all
//! parameters fixed-point) and [`PhiResult`] (one summary per window).
//!
//! The device integrates `dθ_i/dt = ω_i + (K/N) Σ_j sin(θ_j − θ_i)` for `steps`
//! steps of `dt_micros`, cut into `windows` equal windows. The envelope it reports
//! is `A · r`, where `r = |(1/N) Σ_j e^{iθ_j}|` is the order parameter and `A =
//! amplitude_milli / 1000 ∈ (0, 1]`; a window whose minimum envelope falls below
//! `min_stability_milli` ends the run (`stable = false`, that window last).
//!
//! Wire forms: `"Pe" version oscillators:u16 coupling_milli:u32 amplitude_milli:u32
//! steps:u32 dt_micros:u32 windows:u16 min_stability_milli:u16` then the
//! frequencies and the phases as `i32` each; `"Pr" version flags:u8
//! unstable_window:u16 count:u16` then `r_mean:u16 r_min:u16 mean_phase:i32` per
//! window (flag bit 0: stable; bit 1: `unstable_window` present, else it is 0).

use super::wire::{self, Reader};
use super::{
    JobError, MAX_COUPLING_MILLI, MAX_DT_MICROS, MAX_FREQUENCY_MILLI, MAX_OSCILLATORS, MAX_STEPS,
    MAX_WINDOWS, MIN_OSCILLATORS, ONE_MILLI, PI_MILLI, TWO_PI_MILLI,
};
use alloc::vec::Vec;

/// A Φ job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Number of oscillators `N`, `MIN_OSCILLATORS..=MAX_OSCILLATORS`.
    pub oscillators: u16,
    /// Natural frequencies `ω_i` in milli-rad/s, one per oscillator.
    pub frequencies_milli: Vec<i32>,
    /// Coupling `K × 1000`.
    pub coupling_milli: u32,
    /// Envelope amplitude `A × 1000`, `1..=1000`.
    pub amplitude_milli: u32,
    /// Initial phases `θ_i(0)` in milli-rad, `0..TWO_PI_MILLI`, one per oscillator.
    pub phases_milli: Vec<i32>,
    /// Integration steps, `1..=MAX_STEPS`, a multiple of `windows`.
    pub steps: u32,
    /// Step length in µs, `1..=MAX_DT_MICROS`.
    pub dt_micros: u32,
    /// Equal windows the run is cut into, `1..=MAX_WINDOWS`.
    pub windows: u16,
    /// Stability threshold on the envelope, `0..=1000` milli.
    pub min_stability_milli: u16,
}

const ENVELOPE_MAGIC: [u8; 2] = *b"Pe";
const PHI_RESULT_MAGIC: [u8; 2] = *b"Pr";

impl Envelope {
    /// Checks every count and range.
    pub fn validate(&self) -> Result<(), JobError> {
        let n = self.oscillators;
        if !(MIN_OSCILLATORS..=MAX_OSCILLATORS).contains(&n) {
            return Err(JobError::OscillatorsOutOfRange { oscillators: n });
        }
        if self.frequencies_milli.len() != usize::from(n) {
            return Err(JobError::FrequencyCountMismatch {
                expected: n,
                got: self.frequencies_milli.len(),
            });
        }
        if self.phases_milli.len() != usize::from(n) {
            return Err(JobError::PhaseCountMismatch {
                expected: n,
                got: self.phases_milli.len(),
            });
        }
        for (index, &w) in self.frequencies_milli.iter().enumerate() {
            if !(-MAX_FREQUENCY_MILLI..=MAX_FREQUENCY_MILLI).contains(&w) {
                return Err(JobError::FrequencyOutOfRange {
                    index,
                    milli_rad_per_s: w,
                });
            }
        }
        for (index, &p) in self.phases_milli.iter().enumerate() {
            if !(0..TWO_PI_MILLI).contains(&p) {
                return Err(JobError::PhaseOutOfRange {
                    index,
                    milli_rad: p,
                });
            }
        }
        self.validate_scalars()
    }

    fn validate_scalars(&self) -> Result<(), JobError> {
        if self.coupling_milli > MAX_COUPLING_MILLI {
            return Err(JobError::CouplingOutOfRange {
                coupling_milli: self.coupling_milli,
            });
        }
        if !(1..=u32::from(ONE_MILLI)).contains(&self.amplitude_milli) {
            return Err(JobError::AmplitudeOutOfRange {
                amplitude_milli: self.amplitude_milli,
            });
        }
        if self.dt_micros == 0 {
            return Err(JobError::ZeroStep);
        }
        if self.dt_micros > MAX_DT_MICROS {
            return Err(JobError::StepTooLong {
                dt_micros: self.dt_micros,
            });
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(JobError::StepsOutOfRange { steps: self.steps });
        }
        if !(1..=MAX_WINDOWS).contains(&self.windows) {
            return Err(JobError::WindowsOutOfRange {
                windows: self.windows,
            });
        }
        if !self.steps.is_multiple_of(u32::from(self.windows)) {
            return Err(JobError::StepsNotDivisible {
                steps: self.steps,
                windows: self.windows,
            });
        }
        if self.min_stability_milli > ONE_MILLI {
            return Err(JobError::StabilityOutOfRange {
                min_stability_milli: self.min_stability_milli,
            });
        }
        Ok(())
    }

    /// Steps per window (`steps / windows`).
    pub fn steps_per_window(&self) -> u32 {
        self.steps / u32::from(self.windows.max(1))
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.frequencies_milli.len() + self.phases_milli.len();
        let mut out = Vec::with_capacity(25 + 4 * n);
        wire::header(&mut out, ENVELOPE_MAGIC);
        out.extend_from_slice(&self.oscillators.to_le_bytes());
        for v in [
            self.coupling_milli,
            self.amplitude_milli,
            self.steps,
            self.dt_micros,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.windows.to_le_bytes());
        out.extend_from_slice(&self.min_stability_milli.to_le_bytes());
        for v in self.frequencies_milli.iter().chain(&self.phases_milli) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses and validates a wire-form envelope.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, JobError> {
        let mut r = Reader::new(bytes);
        r.header(ENVELOPE_MAGIC)?;
        let oscillators = r.u16("oscillator count")?;
        if !(MIN_OSCILLATORS..=MAX_OSCILLATORS).contains(&oscillators) {
            return Err(JobError::OscillatorsOutOfRange { oscillators });
        }
        let coupling_milli = r.u32("coupling")?;
        let amplitude_milli = r.u32("amplitude")?;
        let steps = r.u32("steps")?;
        let dt_micros = r.u32("dt")?;
        let windows = r.u16("windows")?;
        let min_stability_milli = r.u16("stability threshold")?;
        let n = usize::from(oscillators);
        let mut read = |what| (0..n).map(|_| r.i32(what)).collect::<Result<Vec<_>, _>>();
        let frequencies_milli = read("frequencies")?;
        let phases_milli = read("phases")?;
        r.finish()?;
        let e = Envelope {
            oscillators,
            frequencies_milli,
            coupling_milli,
            amplitude_milli,
            phases_milli,
            steps,
            dt_micros,
            windows,
            min_stability_milli,
        };
        e.validate()?;
        Ok(e)
    }
}

/// One window of a Φ run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSummary {
    /// Mean envelope `A·r` over the window's steps, milli.
    pub r_mean_milli: u16,
    /// Minimum envelope over the window's steps, milli.
    pub r_min_milli: u16,
    /// Mean phase `arg Σ e^{iθ_j}` at the window's end, milli-rad in `±PI_MILLI`.
    pub mean_phase_milli: i32,
}

/// What a Φ device returns for an [`Envelope`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhiResult {
    /// The windows run, in order; the last is the unstable one if there is one.
    pub windows: Vec<WindowSummary>,
    /// True when every window stayed at or above the threshold.
    pub stable: bool,
    /// The window that ended the run below the threshold.
    pub unstable_window: Option<u16>,
}

impl PhiResult {
    /// Checks the result on its own.
    pub fn validate(&self) -> Result<(), JobError> {
        let len = self.windows.len();
        if len == 0 {
            return Err(JobError::NoWindows);
        }
        if len > usize::from(MAX_WINDOWS) {
            return Err(JobError::TooManyWindows {
                windows: len,
                max: usize::from(MAX_WINDOWS),
            });
        }
        for (window, w) in self.windows.iter().enumerate() {
            if w.r_min_milli > w.r_mean_milli
                || w.r_mean_milli > ONE_MILLI
                || !(-PI_MILLI..=PI_MILLI).contains(&w.mean_phase_milli)
            {
                return Err(JobError::WindowOutOfRange { window });
            }
        }
        match (self.stable, self.unstable_window) {
            (true, None) => Ok(()),
            (false, Some(window)) if usize::from(window) + 1 == len => Ok(()),
            (false, Some(window)) => Err(JobError::UnstableWindowNotLast {
                window,
                windows: len,
            }),
            _ => Err(JobError::StabilityMismatch),
        }
    }

    /// Checks the result against its job: window count and every window's minimum
    /// on the right side of the threshold.
    pub fn check_against(&self, e: &Envelope) -> Result<(), JobError> {
        self.validate()?;
        let len = self.windows.len();
        if len > usize::from(e.windows) || (self.stable && len != usize::from(e.windows)) {
            return Err(JobError::ResultMismatch {
                field: "windows",
                expected: u64::from(e.windows),
                got: len as u64,
            });
        }
        let last = len - 1;
        for (i, w) in self.windows.iter().enumerate() {
            let below = w.r_min_milli < e.min_stability_milli;
            if below != (!self.stable && i == last) {
                return Err(JobError::StabilityMismatch);
            }
        }
        Ok(())
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.windows.len() * 8);
        wire::header(&mut out, PHI_RESULT_MAGIC);
        let flags = u8::from(self.stable) | (u8::from(self.unstable_window.is_some()) << 1);
        out.push(flags);
        out.extend_from_slice(&self.unstable_window.unwrap_or(0).to_le_bytes());
        let n = u16::try_from(self.windows.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for w in &self.windows {
            out.extend_from_slice(&w.r_mean_milli.to_le_bytes());
            out.extend_from_slice(&w.r_min_milli.to_le_bytes());
            out.extend_from_slice(&w.mean_phase_milli.to_le_bytes());
        }
        out
    }

    /// Parses and validates a wire-form Φ result.
    pub fn decode(bytes: &[u8]) -> Result<PhiResult, JobError> {
        let mut r = Reader::new(bytes);
        r.header(PHI_RESULT_MAGIC)?;
        let flags = r.u8("flags")?;
        let unstable = r.u16("unstable window")?;
        // Unknown flag bits, or a window number without its flag, have no meaning.
        if flags & !0b11 != 0 || (flags & 0b10 == 0 && unstable != 0) {
            return Err(JobError::StabilityMismatch);
        }
        let n = usize::from(r.u16("window count")?);
        if n > usize::from(MAX_WINDOWS) {
            return Err(JobError::TooManyWindows {
                windows: n,
                max: usize::from(MAX_WINDOWS),
            });
        }
        r.expect_items(n, 8, "window summaries")?;
        let mut windows = Vec::with_capacity(n);
        for _ in 0..n {
            windows.push(WindowSummary {
                r_mean_milli: r.u16("r mean")?,
                r_min_milli: r.u16("r min")?,
                mean_phase_milli: r.i32("mean phase")?,
            });
        }
        r.finish()?;
        let p = PhiResult {
            windows,
            stable: flags & 1 != 0,
            unstable_window: (flags & 0b10 != 0).then_some(unstable),
        };
        p.validate()?;
        Ok(p)
    }
}
