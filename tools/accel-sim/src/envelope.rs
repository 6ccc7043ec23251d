//! TOML envelope descriptions → [`Envelope`].
//!
//! Host-side floats are converted here, once, to the job's fixed-point fields, with
//! a range check and a clear error for each. Example:
//!
//! ```toml
//! # Eight oscillators near 1 rad/s, strongly coupled.
//! frequencies = [1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.0]  # rad/s
//! coupling = 4.0          # K
//! amplitude = 1.0         # envelope scale, (0, 1]
//! phases = [0.0, 0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 0.1]             # rad; or phase_seed = 7
//! steps = 20000
//! dt = 0.001              # seconds per step
//! windows = 10
//! min_stability = 0.8     # envelope threshold, [0, 1]
//! ```
//!
//! `oscillators` may be given; it must then equal the number of frequencies.
//! Instead of `phases`, `phase_seed` draws the initial phases from SplitMix64.

use serde::Deserialize;
use xdv_accel::job::{Envelope, JobError, TWO_PI_MILLI};
use xdv_types::rng::SplitMix64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    oscillators: Option<u16>,
    frequencies: Vec<f64>,
    coupling: f64,
    amplitude: f64,
    phases: Option<Vec<f64>>,
    phase_seed: Option<u64>,
    steps: u32,
    dt: f64,
    windows: u16,
    min_stability: f64,
}

/// Why an envelope description was refused.
#[derive(Debug)]
pub enum EnvelopeError {
    /// Not TOML, or missing/unknown/mistyped fields (with toml's position).
    Toml(String),
    /// A float that does not convert into its fixed-point field.
    OutOfRange {
        field: String,
        value: f64,
        range: &'static str,
    },
    /// Neither or both of `phases` and `phase_seed`.
    Phases,
    /// The converted envelope fails validation.
    Invalid(JobError),
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::Toml(m) => write!(f, "envelope TOML: {m}"),
            EnvelopeError::OutOfRange {
                field,
                value,
                range,
            } => {
                write!(f, "envelope field {field} = {value} outside {range}")
            }
            EnvelopeError::Phases => write!(f, "give exactly one of `phases` and `phase_seed`"),
            EnvelopeError::Invalid(e) => write!(f, "invalid envelope: {e}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// `value × scale`, rounded, checked against `lo..=hi`.
fn fixed(
    field: &str,
    value: f64,
    scale: f64,
    lo: i64,
    hi: i64,
    range: &'static str,
) -> Result<i64, EnvelopeError> {
    let v = (value * scale).round();
    if !v.is_finite() || v < lo as f64 || v > hi as f64 {
        return Err(EnvelopeError::OutOfRange {
            field: field.into(),
            value,
            range,
        });
    }
    Ok(v as i64)
}

/// Parses a TOML description (see the module doc) into a validated envelope.
pub fn parse(src: &str) -> Result<Envelope, EnvelopeError> {
    let raw: Raw = toml::from_str(src).map_err(|e| EnvelopeError::Toml(e.to_string()))?;
    let n = raw
        .oscillators
        .unwrap_or(raw.frequencies.len().min(usize::from(u16::MAX)) as u16);
    let frequencies_milli = raw
        .frequencies
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            fixed(
                &format!("frequencies[{i}]"),
                w,
                1e3,
                -1_000_000,
                1_000_000,
                "±1000 rad/s",
            )
            .map(|v| v as i32)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let two_pi = std::f64::consts::TAU;
    let phases_milli = match (&raw.phases, raw.phase_seed) {
        (Some(ps), None) => ps
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let field = format!("phases[{i}]");
                if !p.is_finite() {
                    return Err(EnvelopeError::OutOfRange {
                        field,
                        value: p,
                        range: "finite radians",
                    });
                }
                // Wrapped into [0, 2π): rounds to at most 6283 milli.
                fixed(
                    &field,
                    p.rem_euclid(two_pi),
                    1e3,
                    0,
                    i64::from(TWO_PI_MILLI) - 1,
                    "[0, 2π)",
                )
                .map(|v| v as i32)
            })
            .collect::<Result<Vec<_>, _>>()?,
        (None, Some(seed)) => {
            let mut rng = SplitMix64::new(seed);
            (0..n)
                .map(|_| rng.below(TWO_PI_MILLI as u64) as i32)
                .collect()
        }
        _ => return Err(EnvelopeError::Phases),
    };
    let e = Envelope {
        oscillators: n,
        frequencies_milli,
        coupling_milli: fixed("coupling", raw.coupling, 1e3, 0, 1_000_000, "[0, 1000]")? as u32,
        amplitude_milli: fixed("amplitude", raw.amplitude, 1e3, 1, 1000, "(0, 1]")? as u32,
        phases_milli,
        steps: raw.steps,
        dt_micros: fixed("dt", raw.dt, 1e6, 1, 100_000, "[1 µs, 0.1 s]")? as u32,
        windows: raw.windows,
        min_stability_milli: fixed("min_stability", raw.min_stability, 1e3, 0, 1000, "[0, 1]")?
            as u16,
    };
    e.validate().map_err(EnvelopeError::Invalid)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
frequencies = [1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.0]
coupling = 4.0
amplitude = 1.0
phases = [0.0, 0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 7.0]
steps = 20000
dt = 0.001
windows = 10
min_stability = 0.8
"#;

    #[test]
    fn example_converts_to_fixed_point() {
        let e = parse(EXAMPLE).unwrap();
        assert_eq!(e.oscillators, 8);
        assert_eq!(e.frequencies_milli[1], 1020);
        assert_eq!(e.coupling_milli, 4000);
        assert_eq!(e.dt_micros, 1000);
        assert_eq!(e.min_stability_milli, 800);
        assert_eq!(e.phases_milli[7], 717); // 7 rad wraps to 7 − 2π ≈ 0.717
    }

    #[test]
    fn errors_are_specific() {
        let bad = EXAMPLE.replace("coupling = 4.0", "coupling = -1.0");
        assert!(
            matches!(parse(&bad), Err(EnvelopeError::OutOfRange { ref field, .. }) if field == "coupling")
        );
        let bad = EXAMPLE.replace("dt = 0.001", "dt = 0.0");
        assert!(
            matches!(parse(&bad), Err(EnvelopeError::OutOfRange { ref field, .. }) if field == "dt")
        );
        let bad = format!("oscillators = 9\n{EXAMPLE}");
        assert!(matches!(
            parse(&bad),
            Err(EnvelopeError::Invalid(JobError::FrequencyCountMismatch {
                expected: 9,
                got: 8
            }))
        ));
        let bad = EXAMPLE.replace("steps = 20000", "steps = 20001");
        assert!(matches!(
            parse(&bad),
            Err(EnvelopeError::Invalid(JobError::StepsNotDivisible { .. }))
        ));
        let bad = format!("phase_seed = 3\n{EXAMPLE}");
        assert!(matches!(parse(&bad), Err(EnvelopeError::Phases)));
        let bad = EXAMPLE.replace("windows = 10", "windowz = 10");
        let e = parse(&bad).unwrap_err();
        assert!(matches!(e, EnvelopeError::Toml(_)), "{e}");
    }

    #[test]
    fn phase_seed_is_deterministic() {
        let src = EXAMPLE.replace(
            "phases = [0.0, 0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 7.0]",
            "phase_seed = 42",
        );
        let a = parse(&src).unwrap();
        assert_eq!(a, parse(&src).unwrap());
        assert!(
            a.phases_milli
                .iter()
                .all(|&p| (0..TWO_PI_MILLI).contains(&p))
        );
        let other = parse(&src.replace("42", "43")).unwrap();
        assert_ne!(a.phases_milli, other.phases_milli);
    }
}
