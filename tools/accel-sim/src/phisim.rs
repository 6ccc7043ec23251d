//! The Φ device simulator: Kuramoto oscillators integrated with classic RK4.
//!
//! `dθ_i/dt = ω_i + (K/N) Σ_j sin(θ_j − θ_i)`, evaluated in O(N) per derivative
//! through the mean field: `Σ_j sin(θ_j − θ_i) = cos θ_i · S − sin θ_i · C` with
//! `C = Σ cos θ_j`, `S = Σ sin θ_j`. The envelope after each step is `A · r`,
//! `r = |(1/N) Σ e^{iθ_j}|`; window summaries and the stability rule are those of
//! [`xdv_accel::job::envelope`](xdv_accel::job::Envelope). Every sum runs in index
//! order, so the same envelope gives the same bits on every run; each call starts
//! from the envelope alone (windows share nothing global).

use xdv_accel::job::{Envelope, JobError, PhiResult, WindowSummary};

fn derivative(theta: &[f64], omega: &[f64], k_over_n: f64, out: &mut [f64]) {
    let (mut c, mut s) = (0.0, 0.0);
    for &t in theta {
        c += t.cos();
        s += t.sin();
    }
    for ((d, &t), &w) in out.iter_mut().zip(theta).zip(omega) {
        *d = w + k_over_n * (t.cos() * s - t.sin() * c);
    }
}

/// Order parameter `r` and mean phase of the phases.
fn order(theta: &[f64]) -> (f64, f64) {
    let (mut c, mut s) = (0.0, 0.0);
    for &t in theta {
        c += t.cos();
        s += t.sin();
    }
    let n = theta.len() as f64;
    ((c / n).hypot(s / n), s.atan2(c))
}

fn milli(x: f64) -> u16 {
    (x * 1000.0).round().clamp(0.0, 1000.0) as u16
}

/// Integrates the envelope and summarizes each window; stops at the first window
/// whose minimum envelope is below the threshold.
pub fn run(e: &Envelope) -> Result<PhiResult, JobError> {
    e.validate()?;
    let n = usize::from(e.oscillators);
    let omega: Vec<f64> = e
        .frequencies_milli
        .iter()
        .map(|&w| f64::from(w) / 1e3)
        .collect();
    let mut theta: Vec<f64> = e.phases_milli.iter().map(|&p| f64::from(p) / 1e3).collect();
    let k_over_n = f64::from(e.coupling_milli) / 1e3 / n as f64;
    let amp = f64::from(e.amplitude_milli) / 1e3;
    let dt = f64::from(e.dt_micros) / 1e6;
    let (mut k1, mut k2, mut k3, mut k4, mut tmp) = (
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
    );
    let mut windows = Vec::with_capacity(usize::from(e.windows));
    for w in 0..e.windows {
        let (mut sum, mut min) = (0.0, f64::INFINITY);
        let mut phase = 0.0;
        for _ in 0..e.steps_per_window() {
            derivative(&theta, &omega, k_over_n, &mut k1);
            tmp.iter_mut()
                .zip(&theta)
                .zip(&k1)
                .for_each(|((t, &x), &k)| *t = x + 0.5 * dt * k);
            derivative(&tmp, &omega, k_over_n, &mut k2);
            tmp.iter_mut()
                .zip(&theta)
                .zip(&k2)
                .for_each(|((t, &x), &k)| *t = x + 0.5 * dt * k);
            derivative(&tmp, &omega, k_over_n, &mut k3);
            tmp.iter_mut()
                .zip(&theta)
                .zip(&k3)
                .for_each(|((t, &x), &k)| *t = x + dt * k);
            derivative(&tmp, &omega, k_over_n, &mut k4);
            for i in 0..n {
                let x = theta[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
                theta[i] = x.rem_euclid(std::f64::consts::TAU); // bounded, for precision
            }
            let (r, ph) = order(&theta);
            sum += amp * r;
            min = min.min(amp * r);
            phase = ph;
        }
        let summary = WindowSummary {
            r_mean_milli: milli(sum / f64::from(e.steps_per_window())),
            r_min_milli: milli(min),
            mean_phase_milli: ((phase * 1000.0).round() as i32).clamp(-3142, 3142),
        };
        windows.push(summary);
        if summary.r_min_milli < e.min_stability_milli {
            let r = PhiResult {
                windows,
                stable: false,
                unstable_window: Some(w),
            };
            debug_assert!(r.check_against(e).is_ok());
            return Ok(r);
        }
    }
    let r = PhiResult {
        windows,
        stable: true,
        unstable_window: None,
    };
    debug_assert!(r.check_against(e).is_ok());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(freqs: Vec<i32>, coupling_milli: u32, phases: Vec<i32>) -> Envelope {
        Envelope {
            oscillators: freqs.len() as u16,
            frequencies_milli: freqs,
            coupling_milli,
            amplitude_milli: 1000,
            phases_milli: phases,
            steps: 20_000,
            dt_micros: 1000,
            windows: 10,
            min_stability_milli: 800,
        }
    }

    #[test]
    fn strong_coupling_close_frequencies_is_stable() {
        let e = env(
            vec![1000, 1020, 980, 1010, 990, 1030, 970, 1000],
            4000,
            vec![0, 100, 200, 300, 400, 300, 200, 100],
        );
        let r = run(&e).unwrap();
        assert!(r.stable, "{r:?}");
        assert_eq!(r.windows.len(), 10);
        assert!(r.windows[9].r_min_milli >= 990, "{:?}", r.windows[9]);
        r.check_against(&e).unwrap();
    }

    #[test]
    fn zero_coupling_spread_frequencies_is_unstable() {
        let freqs = vec![-3000, -2000, -1000, 0, 1000, 2000, 3000, 4000];
        let e = env(freqs, 0, vec![0; 8]);
        let r = run(&e).unwrap();
        assert!(!r.stable);
        let w = r.unstable_window.unwrap();
        assert_eq!(usize::from(w) + 1, r.windows.len());
        assert!(r.windows.last().unwrap().r_min_milli < 800);
        // Starting in phase, the first window begins at r = 1.
        assert!(r.windows[0].r_mean_milli > r.windows[0].r_min_milli);
        r.check_against(&e).unwrap();
    }

    #[test]
    fn same_envelope_same_bits_and_amplitude_scales() {
        let e = env(vec![1000, 1500, 500], 2000, vec![0, 1000, 2000]);
        let e = Envelope {
            min_stability_milli: 0,
            ..e
        };
        let a = run(&e).unwrap();
        assert_eq!(a, run(&e).unwrap());
        let half = run(&Envelope {
            amplitude_milli: 500,
            ..e.clone()
        })
        .unwrap();
        for (x, y) in a.windows.iter().zip(&half.windows) {
            assert!((i32::from(x.r_mean_milli) - 2 * i32::from(y.r_mean_milli)).abs() <= 1);
            assert_eq!(x.mean_phase_milli, y.mean_phase_milli);
        }
    }

    #[test]
    fn invalid_envelope_is_refused() {
        let e = Envelope {
            dt_micros: 0,
            ..env(vec![0, 0], 0, vec![0, 0])
        };
        assert_eq!(run(&e), Err(JobError::ZeroStep));
    }
}
