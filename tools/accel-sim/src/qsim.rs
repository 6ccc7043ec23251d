//! The Q device simulator: a state vector over `2^n` amplitudes.
//!
//! Layout: qubit `q` is bit `q` of the amplitude index (qiskit's order); real and
//! imaginary parts live in two arrays so the inner loops run over contiguous `f64`
//! slices and vectorize. The circuit is first compiled to [`Op`]s: consecutive
//! single-qubit gates on one qubit are fused into one 2×2 matrix (diagonal
//! products stay diagonal and cost one pass over half the state).
//!
//! Invariants:
//! - No public function returns amplitudes (no-cloning by construction): [`run`]
//!   returns counts; `probabilities` exists only under `cfg(test)` or the
//!   `reference` feature.
//! - Results depend only on `(circuit, seed)`: one SplitMix64 stream drives every
//!   measurement in a fixed order.
//! - Circuits whose measurements are all terminal are simulated once and sampled
//!   `shots` times from the probability vector; otherwise the unitary prefix is
//!   simulated once and the rest of the circuit runs per shot, collapsing the state
//!   at each measure and reset.

use std::collections::BTreeMap;
use std::f64::consts::{FRAC_1_SQRT_2, PI};
use xdv_accel::job::{Angle, Circuit, Gate, JobError, MAX_QUBITS, QResult};
use xdv_types::rng::SplitMix64;

/// Why a simulation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The circuit fails validation.
    Invalid(JobError),
    /// The circuit is deeper than the device's decoherence budget.
    BudgetExceeded { depth: u32, budget: u32 },
    /// A whole-state reference asked for a circuit that measures or resets before
    /// its end (its outcome would be random, not a state).
    NotTerminal,
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Invalid(e) => write!(f, "invalid circuit: {e}"),
            SimError::BudgetExceeded { depth, budget } => write!(
                f,
                "circuit depth {depth} exceeds the decoherence budget {budget}"
            ),
            SimError::NotTerminal => write!(f, "circuit measures or resets before its end"),
        }
    }
}

impl std::error::Error for SimError {}

/// A complex number as `(re, im)`.
type C = (f64, f64);

fn cmul(a: C, b: C) -> C {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

fn cadd(a: C, b: C) -> C {
    (a.0 + b.0, a.1 + b.1)
}

fn cis(t: f64) -> C {
    (t.cos(), t.sin())
}

/// A 2×2 matrix, row-major: `[m00, m01, m10, m11]`.
type M2 = [C; 4];

fn m2mul(a: &M2, b: &M2) -> M2 {
    [
        cadd(cmul(a[0], b[0]), cmul(a[1], b[2])),
        cadd(cmul(a[0], b[1]), cmul(a[1], b[3])),
        cadd(cmul(a[2], b[0]), cmul(a[3], b[2])),
        cadd(cmul(a[2], b[1]), cmul(a[3], b[3])),
    ]
}

/// The exact angle as `f64` radians (the one place angles become floats).
pub fn angle_f64(a: &Angle) -> f64 {
    PI * (a.pi_num() as f64 / a.pi_den() as f64) + a.rad_num() as f64 / a.rad_den() as f64
}

fn u3(theta: f64, phi: f64, lambda: f64) -> M2 {
    let (c, s) = ((theta / 2.0).cos(), (theta / 2.0).sin());
    let el = cis(lambda);
    let ep = cis(phi);
    let epl = cis(phi + lambda);
    [
        (c, 0.0),
        (-s * el.0, -s * el.1),
        (s * ep.0, s * ep.1),
        (c * epl.0, c * epl.1),
    ]
}

fn diag(d0: C, d1: C) -> M2 {
    [d0, (0.0, 0.0), (0.0, 0.0), d1]
}

/// The matrix of a single-qubit gate (qiskit's conventions), `None` otherwise.
fn matrix(g: &Gate) -> Option<(u8, M2)> {
    let one = (1.0, 0.0);
    let h = FRAC_1_SQRT_2;
    Some(match g {
        Gate::H(q) => (*q, [(h, 0.0), (h, 0.0), (h, 0.0), (-h, 0.0)]),
        Gate::X(q) => (*q, [(0.0, 0.0), one, one, (0.0, 0.0)]),
        Gate::Y(q) => (*q, [(0.0, 0.0), (0.0, -1.0), (0.0, 1.0), (0.0, 0.0)]),
        Gate::Z(q) => (*q, diag(one, (-1.0, 0.0))),
        Gate::S(q) => (*q, diag(one, (0.0, 1.0))),
        Gate::Sdg(q) => (*q, diag(one, (0.0, -1.0))),
        Gate::T(q) => (*q, diag(one, cis(PI / 4.0))),
        Gate::Tdg(q) => (*q, diag(one, cis(-PI / 4.0))),
        Gate::Rx(q, a) => {
            let t = angle_f64(a) / 2.0;
            let (c, s) = (t.cos(), t.sin());
            (*q, [(c, 0.0), (0.0, -s), (0.0, -s), (c, 0.0)])
        }
        Gate::Ry(q, a) => {
            let t = angle_f64(a) / 2.0;
            let (c, s) = (t.cos(), t.sin());
            (*q, [(c, 0.0), (-s, 0.0), (s, 0.0), (c, 0.0)])
        }
        Gate::Rz(q, a) => {
            let t = angle_f64(a) / 2.0;
            (*q, diag(cis(-t), cis(t)))
        }
        Gate::U1(q, a) => (*q, diag(one, cis(angle_f64(a)))),
        Gate::U2(q, p, l) => (*q, u3(PI / 2.0, angle_f64(p), angle_f64(l))),
        Gate::U3(q, t, p, l) => (*q, u3(angle_f64(t), angle_f64(p), angle_f64(l))),
        _ => return None,
    })
}

/// A compiled operation.
#[derive(Clone, Debug)]
enum Op {
    /// A fused single-qubit unitary.
    U(u8, M2),
    /// A fused diagonal single-qubit unitary `diag(d0, d1)`.
    Diag(u8, C, C),
    Cx(u8, u8),
    Cz(u8, u8),
    Swap(u8, u8),
    Ccx(u8, u8, u8),
    Measure(u8, u8),
    Reset(u8),
}

fn is_diag(m: &M2) -> bool {
    m[1] == (0.0, 0.0) && m[2] == (0.0, 0.0)
}

/// Compiles gates to ops, fusing runs of single-qubit gates per qubit. A pending
/// fused gate on `q` is emitted just before the next op touching `q`; moving it past
/// ops on other qubits is exact because they commute.
fn compile(c: &Circuit) -> Vec<Op> {
    let mut pending: Vec<Option<M2>> = vec![None; usize::from(c.qubits)];
    let mut ops = Vec::with_capacity(c.gates.len());
    let flush = |q: u8, pending: &mut Vec<Option<M2>>, ops: &mut Vec<Op>| {
        if let Some(m) = pending[usize::from(q)].take() {
            ops.push(if is_diag(&m) {
                Op::Diag(q, m[0], m[3])
            } else {
                Op::U(q, m)
            });
        }
    };
    for g in &c.gates {
        if let Some((q, m)) = matrix(g) {
            let slot = &mut pending[usize::from(q)];
            *slot = Some(match slot {
                Some(prev) => m2mul(&m, prev),
                None => m,
            });
            continue;
        }
        if let Gate::Barrier { .. } = g {
            continue; // no operation; fusion may cross it (it only marks depth)
        }
        for &q in g.qubits().as_slice() {
            flush(q, &mut pending, &mut ops);
        }
        ops.push(match *g {
            Gate::Cx(a, b) => Op::Cx(a, b),
            Gate::Cz(a, b) => Op::Cz(a, b),
            Gate::Swap(a, b) => Op::Swap(a, b),
            Gate::Ccx(a, b, t) => Op::Ccx(a, b, t),
            Gate::Measure { qubit, clbit } => Op::Measure(qubit, clbit),
            Gate::Reset(q) => Op::Reset(q),
            _ => unreachable!("single-qubit gates and barriers are handled above"),
        });
    }
    for q in 0..c.qubits {
        flush(q, &mut pending, &mut ops);
    }
    ops
}

/// The state vector. Never leaves this module except as probabilities in tests.
#[derive(Clone)]
struct State {
    re: Vec<f64>,
    im: Vec<f64>,
}

/// Calls `f(i)` for every index `i` whose bits `lo < hi` are both zero, in order of
/// contiguous runs: `f(start, len)` covers `start..start + len`.
fn for_runs2(n: usize, lo: usize, hi: usize, mut f: impl FnMut(usize, usize)) {
    debug_assert!(lo < hi);
    let (sl, sh) = (1usize << lo, 1usize << hi);
    for outer in (0..n).step_by(2 * sh) {
        for mid in (outer..outer + sh).step_by(2 * sl) {
            f(mid, sl);
        }
    }
}

impl State {
    fn zero(qubits: u8) -> State {
        let n = 1usize << qubits;
        let mut re = vec![0.0; n];
        re[0] = 1.0;
        State {
            re,
            im: vec![0.0; n],
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::U(q, ref m) => self.apply_u(q, m),
            Op::Diag(q, d0, d1) => self.apply_diag(q, d0, d1),
            Op::Cx(c, t) => self.apply_cx(c, t),
            Op::Cz(a, b) => self.apply_cz(a, b),
            Op::Swap(a, b) => self.apply_swap(a, b),
            Op::Ccx(a, b, t) => self.apply_ccx(a, b, t),
            Op::Measure(..) | Op::Reset(_) => unreachable!("non-unitary ops go through step"),
        }
    }

    fn apply_u(&mut self, q: u8, m: &M2) {
        let s = 1usize << q;
        let [(a0, a1), (b0, b1), (c0, c1), (d0, d1)] = *m;
        for (re, im) in self
            .re
            .chunks_exact_mut(2 * s)
            .zip(self.im.chunks_exact_mut(2 * s))
        {
            let (r0, r1) = re.split_at_mut(s);
            let (i0, i1) = im.split_at_mut(s);
            for (((x0, x1), y0), y1) in r0
                .iter_mut()
                .zip(r1.iter_mut())
                .zip(i0.iter_mut())
                .zip(i1.iter_mut())
            {
                let (ur, ui, vr, vi) = (*x0, *y0, *x1, *y1);
                *x0 = a0 * ur - a1 * ui + b0 * vr - b1 * vi;
                *y0 = a0 * ui + a1 * ur + b0 * vi + b1 * vr;
                *x1 = c0 * ur - c1 * ui + d0 * vr - d1 * vi;
                *y1 = c0 * ui + c1 * ur + d0 * vi + d1 * vr;
            }
        }
    }

    fn scale(re: &mut [f64], im: &mut [f64], (dr, di): C) {
        if (dr, di) == (1.0, 0.0) {
            return;
        }
        for (x, y) in re.iter_mut().zip(im.iter_mut()) {
            let (a, b) = (*x, *y);
            *x = dr * a - di * b;
            *y = dr * b + di * a;
        }
    }

    fn apply_diag(&mut self, q: u8, d0: C, d1: C) {
        let s = 1usize << q;
        for (re, im) in self
            .re
            .chunks_exact_mut(2 * s)
            .zip(self.im.chunks_exact_mut(2 * s))
        {
            let (r0, r1) = re.split_at_mut(s);
            let (i0, i1) = im.split_at_mut(s);
            Self::scale(r0, i0, d0);
            Self::scale(r1, i1, d1);
        }
    }

    fn apply_cx(&mut self, c: u8, t: u8) {
        let (cs, ts) = (1usize << c, 1usize << t);
        let (re, im) = (&mut self.re, &mut self.im);
        for_runs2(
            re.len(),
            usize::from(c.min(t)),
            usize::from(c.max(t)),
            |i, len| {
                let (a, b) = (i + cs, i + cs + ts);
                for k in 0..len {
                    re.swap(a + k, b + k);
                    im.swap(a + k, b + k);
                }
            },
        );
    }

    fn apply_cz(&mut self, x: u8, y: u8) {
        let off = (1usize << x) + (1usize << y);
        let (re, im) = (&mut self.re, &mut self.im);
        for_runs2(
            re.len(),
            usize::from(x.min(y)),
            usize::from(x.max(y)),
            |i, len| {
                let s = i + off;
                re[s..s + len].iter_mut().for_each(|v| *v = -*v);
                im[s..s + len].iter_mut().for_each(|v| *v = -*v);
            },
        );
    }

    fn apply_swap(&mut self, x: u8, y: u8) {
        let (xs, ys) = (1usize << x, 1usize << y);
        let (re, im) = (&mut self.re, &mut self.im);
        for_runs2(
            re.len(),
            usize::from(x.min(y)),
            usize::from(x.max(y)),
            |i, len| {
                for k in 0..len {
                    re.swap(i + xs + k, i + ys + k);
                    im.swap(i + xs + k, i + ys + k);
                }
            },
        );
    }

    fn apply_ccx(&mut self, a: u8, b: u8, t: u8) {
        let ctrl = (1usize << a) | (1usize << b);
        let ts = 1usize << t;
        for i in 0..self.re.len() {
            // Visit each pair once, from its t=0 member with both controls set.
            if i & ctrl == ctrl && i & ts == 0 {
                self.re.swap(i, i | ts);
                self.im.swap(i, i | ts);
            }
        }
    }

    /// Probability that qubit `q` reads 1.
    fn prob_one(&self, q: u8) -> f64 {
        let s = 1usize << q;
        let mut p = 0.0;
        for (re, im) in self.re.chunks_exact(2 * s).zip(self.im.chunks_exact(2 * s)) {
            p += re[s..]
                .iter()
                .zip(&im[s..])
                .map(|(x, y)| x * x + y * y)
                .sum::<f64>();
        }
        p
    }

    /// Measures qubit `q`, collapses and renormalizes; returns the outcome.
    fn measure(&mut self, q: u8, rng: &mut SplitMix64) -> bool {
        let p1 = self.prob_one(q);
        let one = uniform(rng) < p1;
        let keep_p = if one { p1 } else { 1.0 - p1 };
        let norm = 1.0 / keep_p.max(f64::MIN_POSITIVE).sqrt();
        let s = 1usize << q;
        for (re, im) in self
            .re
            .chunks_exact_mut(2 * s)
            .zip(self.im.chunks_exact_mut(2 * s))
        {
            let (r0, r1) = re.split_at_mut(s);
            let (i0, i1) = im.split_at_mut(s);
            let (kr, ki, zr, zi) = if one {
                (r1, i1, r0, i0)
            } else {
                (r0, i0, r1, i1)
            };
            kr.iter_mut().chain(ki.iter_mut()).for_each(|v| *v *= norm);
            zr.iter_mut().chain(zi.iter_mut()).for_each(|v| *v = 0.0);
        }
        one
    }

    fn probabilities(&self) -> Vec<f64> {
        self.re
            .iter()
            .zip(&self.im)
            .map(|(x, y)| x * x + y * y)
            .collect()
    }
}

/// Uniform in `[0, 1)` from the top 53 bits of one draw.
fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn check(circuit: &Circuit, budget_depth: u32) -> Result<(), SimError> {
    circuit.validate(MAX_QUBITS).map_err(SimError::Invalid)?;
    let depth = circuit.depth();
    if depth > budget_depth {
        return Err(SimError::BudgetExceeded {
            depth,
            budget: budget_depth,
        });
    }
    Ok(())
}

/// Runs `circuit.shots` shots and returns the counts and the circuit's statistics.
/// The same `(circuit, seed)` gives the same result on every run.
pub fn run(circuit: &Circuit, seed: u64, budget_depth: u32) -> Result<QResult, SimError> {
    check(circuit, budget_depth)?;
    let ops = compile(circuit);
    let mut rng = SplitMix64::new(seed);
    let first_nonunitary = ops
        .iter()
        .position(|o| matches!(o, Op::Measure(..) | Op::Reset(_)))
        .unwrap_or(ops.len());
    let (prefix, rest) = ops.split_at(first_nonunitary);
    let mut state = State::zero(circuit.qubits);
    prefix.iter().for_each(|o| state.apply(o));
    let terminal = rest.iter().all(|o| matches!(o, Op::Measure(..)));
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    if terminal {
        sample_terminal(&state, rest, circuit.shots, &mut rng, &mut counts);
    } else {
        for _ in 0..circuit.shots {
            let mut s = state.clone();
            let mut bits = 0u64;
            for o in rest {
                match *o {
                    Op::Measure(q, c) => {
                        let one = s.measure(q, &mut rng);
                        bits = (bits & !(1 << c)) | (u64::from(one) << c);
                    }
                    Op::Reset(q) => {
                        if s.measure(q, &mut rng) {
                            s.apply_u(q, &[(0.0, 0.0), (1.0, 0.0), (1.0, 0.0), (0.0, 0.0)]);
                        }
                    }
                    ref u => s.apply(u),
                }
            }
            *counts.entry(bits).or_insert(0) += 1;
        }
    }
    let result = QResult {
        counts: counts.into_iter().collect(),
        shots: circuit.shots,
        entangling_ops: circuit.entangling_ops(),
        teleportations: circuit.teleportations(),
        depth: circuit.depth(),
    };
    debug_assert!(result.check_against(circuit).is_ok());
    Ok(result)
}

/// Samples every shot from one probability vector (all measurements terminal).
fn sample_terminal(
    state: &State,
    measures: &[Op],
    shots: u32,
    rng: &mut SplitMix64,
    counts: &mut BTreeMap<u64, u32>,
) {
    let map: Vec<(u8, u8)> = measures
        .iter()
        .filter_map(|o| match *o {
            Op::Measure(q, c) => Some((q, c)),
            _ => None,
        })
        .collect();
    if map.is_empty() {
        counts.insert(0, shots);
        return;
    }
    let mut cdf = state.probabilities();
    let mut acc = 0.0;
    for p in cdf.iter_mut() {
        acc += *p;
        *p = acc;
    }
    let total = acc;
    let mut per_index: BTreeMap<usize, u32> = BTreeMap::new();
    for _ in 0..shots {
        let u = uniform(rng) * total;
        let i = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1);
        *per_index.entry(i).or_insert(0) += 1;
    }
    for (i, n) in per_index {
        let mut bits = 0u64;
        for &(q, c) in &map {
            let one = (i >> q) & 1 == 1;
            bits = (bits & !(1 << c)) | (u64::from(one) << c);
        }
        *counts.entry(bits).or_insert(0) += n;
    }
}

/// The exact probability vector of a circuit with no measure or reset (index bit
/// `q` = qubit `q`). Reference checks only: not part of the device's interface.
/// The final state of the unitary part of a circuit whose measurements are all
/// terminal (and which has no reset).
fn final_unitary_state(circuit: &Circuit) -> Result<State, SimError> {
    check(circuit, u32::MAX)?;
    let ops = compile(circuit);
    let first = ops
        .iter()
        .position(|o| matches!(o, Op::Measure(..) | Op::Reset(_)))
        .unwrap_or(ops.len());
    if !ops[first..].iter().all(|o| matches!(o, Op::Measure(..))) {
        return Err(SimError::NotTerminal);
    }
    let mut state = State::zero(circuit.qubits);
    ops[..first].iter().for_each(|o| state.apply(o));
    Ok(state)
}

/// The exact probability vector (index bit `q` = qubit `q`) before the terminal
/// measurements. Reference checks only: not part of the device's interface.
#[cfg(any(test, feature = "reference"))]
pub fn probabilities(circuit: &Circuit) -> Result<Vec<f64>, SimError> {
    Ok(final_unitary_state(circuit)?.probabilities())
}

/// Simulates the unitary part once and returns only a checksum (`Σ |amp_i|² · i`),
/// so benchmarks time the simulation without exporting the state.
pub fn unitary_checksum(circuit: &Circuit) -> Result<f64, SimError> {
    let state = final_unitary_state(circuit)?;
    Ok(state
        .re
        .iter()
        .zip(&state.im)
        .enumerate()
        .map(|(i, (x, y))| (x * x + y * y) * i as f64)
        .sum())
}

#[cfg(test)]
mod tests;
