//! Job forms: what a Q or Φ job is on the wire, and what comes back.
//!
//! Owns the compact, validated binary forms of the four messages between the kernel
//! and an accelerator: [`Circuit`] (a Q job) and [`QResult`], [`Envelope`] (a Φ job)
//! and [`PhiResult`]. Invariants:
//! - No floating point anywhere: angles are exact ([`Angle`]), envelope parameters
//!   are fixed-point integers (milli-units, micro-seconds).
//! - Hand-written little-endian encoding, one magic and one version byte per
//!   message. Every `decode` checks the whole input (no trailing bytes), never
//!   panics, never allocates more than the input can fill, and returns a value that
//!   passes `validate`, so `decode(encode(x)) == x` for every valid `x` and an
//!   accepted byte string has exactly one meaning.
//! - Every limit is a named constant below.

mod angle;
mod circuit;
mod envelope;
mod wire;

pub use angle::Angle;
pub use circuit::{Circuit, Gate, QResult, QubitList};
pub use envelope::{Envelope, PhiResult, WindowSummary};

/// Most qubits a circuit may declare (a 2^24-amplitude state vector is 256 MiB).
pub const MAX_QUBITS: u8 = 24;
/// Most classical bits (a measured bitstring is a `u64`).
pub const MAX_CLBITS: u8 = 64;
/// Most shots per circuit.
pub const MAX_SHOTS: u32 = 1_000_000;
/// Most gates per circuit (barriers included).
pub const MAX_GATES: usize = 4096;
/// Fewest and most oscillators in an envelope.
pub const MIN_OSCILLATORS: u16 = 2;
/// Most oscillators in an envelope.
pub const MAX_OSCILLATORS: u16 = 64;
/// Most integration steps per envelope.
pub const MAX_STEPS: u32 = 200_000;
/// Most windows an envelope run is cut into.
pub const MAX_WINDOWS: u16 = 64;
/// Largest integration step: 0.1 s.
pub const MAX_DT_MICROS: u32 = 100_000;
/// Largest natural frequency magnitude: 1000 rad/s.
pub const MAX_FREQUENCY_MILLI: i32 = 1_000_000;
/// Largest coupling constant K: 1000.
pub const MAX_COUPLING_MILLI: u32 = 1_000_000;
/// Initial phases lie in `0..TWO_PI_MILLI` milli-radians (2π ≈ 6283.19).
pub const TWO_PI_MILLI: i32 = 6284;
/// Mean phases lie in `-PI_MILLI..=PI_MILLI` milli-radians (π ≈ 3141.59).
pub const PI_MILLI: i32 = 3142;
/// One, in milli-units (order parameter, amplitude, stability threshold).
pub const ONE_MILLI: u16 = 1000;

const _: () = assert!(MAX_QUBITS as u32 <= u32::BITS); // barrier masks are u32
const _: () = assert!(MAX_CLBITS as u32 <= u64::BITS); // bitstrings are u64
const _: () = assert!(MAX_GATES <= u16::MAX as usize); // gate count is a u16
const _: () = assert!(MIN_OSCILLATORS >= 2 && MAX_OSCILLATORS >= MIN_OSCILLATORS);

/// Why a job or result was refused. Each variant names the exact fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// The input ends before `what`, which starts at byte `offset`.
    Truncated { what: &'static str, offset: usize },
    /// Bytes left over after a complete message.
    TrailingBytes { count: usize },
    /// The message does not start with the expected magic.
    BadMagic { expected: [u8; 2], got: [u8; 2] },
    /// An encoding version this build does not speak.
    UnsupportedVersion { version: u8 },
    /// A gate opcode that names no gate.
    UnknownOpcode { opcode: u8, gate: usize },
    /// An angle computation does not fit in `i64`/`u64`.
    AngleOverflow,
    /// An angle expression has no exact form (e.g. `pi*pi`).
    AngleNotExact,
    /// An angle with a zero denominator.
    AngleZeroDenominator,
    /// A division by a zero angle.
    AngleDivisionByZero,
    /// An encoded angle that is not in lowest terms.
    AngleNotReduced,
    /// A circuit with zero qubits.
    NoQubits,
    /// More qubits than allowed.
    TooManyQubits { qubits: u8, max: u8 },
    /// More classical bits than [`MAX_CLBITS`].
    TooManyClbits { clbits: u8, max: u8 },
    /// A gate operand beyond the declared qubits.
    QubitOutOfRange { gate: usize, qubit: u8, qubits: u8 },
    /// A measurement into a classical bit beyond the declared ones.
    ClbitOutOfRange { gate: usize, clbit: u8, clbits: u8 },
    /// A multi-qubit gate naming the same qubit twice.
    DuplicateOperand { gate: usize, qubit: u8 },
    /// A barrier over no qubit.
    EmptyBarrier { gate: usize },
    /// Shots outside `1..=MAX_SHOTS`.
    ShotsOutOfRange { shots: u32 },
    /// More gates than [`MAX_GATES`].
    TooManyGates { gates: usize, max: usize },
    /// Result counts not strictly increasing by bitstring at `index`.
    CountsNotSorted { index: usize },
    /// A result entry with a zero count.
    ZeroCount { index: usize },
    /// Result counts that do not add up to the shots.
    CountsSumMismatch { sum: u64, shots: u32 },
    /// More result entries than shots.
    TooManyCounts { entries: usize, shots: u32 },
    /// A measured bitstring with bits set beyond the circuit's classical bits.
    BitstringOutOfRange { bitstring: u64, clbits: u8 },
    /// A result field that disagrees with the job it answers.
    ResultMismatch {
        field: &'static str,
        expected: u64,
        got: u64,
    },
    /// Oscillator count outside `MIN_OSCILLATORS..=MAX_OSCILLATORS`.
    OscillatorsOutOfRange { oscillators: u16 },
    /// Natural frequencies not one per oscillator.
    FrequencyCountMismatch { expected: u16, got: usize },
    /// Initial phases not one per oscillator.
    PhaseCountMismatch { expected: u16, got: usize },
    /// A natural frequency beyond `±MAX_FREQUENCY_MILLI`.
    FrequencyOutOfRange { index: usize, milli_rad_per_s: i32 },
    /// An initial phase outside `0..TWO_PI_MILLI`.
    PhaseOutOfRange { index: usize, milli_rad: i32 },
    /// Coupling beyond `MAX_COUPLING_MILLI`.
    CouplingOutOfRange { coupling_milli: u32 },
    /// Amplitude outside `1..=1000` milli.
    AmplitudeOutOfRange { amplitude_milli: u32 },
    /// A zero integration step (`dt_micros == 0`).
    ZeroStep,
    /// Integration step beyond `MAX_DT_MICROS`.
    StepTooLong { dt_micros: u32 },
    /// Step count outside `1..=MAX_STEPS`.
    StepsOutOfRange { steps: u32 },
    /// Window count outside `1..=MAX_WINDOWS`.
    WindowsOutOfRange { windows: u16 },
    /// Steps that do not split into equal windows.
    StepsNotDivisible { steps: u32, windows: u16 },
    /// Stability threshold above 1000 milli.
    StabilityOutOfRange { min_stability_milli: u16 },
    /// A Φ result with no windows.
    NoWindows,
    /// A Φ result with more windows than allowed.
    TooManyWindows { windows: usize, max: usize },
    /// A window summary out of range (`r_min > r_mean`, `r > 1000` or a phase
    /// outside `±PI_MILLI`).
    WindowOutOfRange { window: usize },
    /// `stable` disagrees with `unstable_window`, or with the windows' minima.
    StabilityMismatch,
    /// The unstable window is not the last one reported (the run ends there).
    UnstableWindowNotLast { window: u16, windows: usize },
}

impl core::fmt::Display for JobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use JobError::*;
        match self {
            Truncated { what, offset } => {
                write!(f, "truncated input: {what} expected at byte {offset}")
            }
            TrailingBytes { count } => write!(f, "{count} trailing bytes after the message"),
            BadMagic { expected, got } => {
                write!(f, "bad magic {got:02x?} (expected {expected:02x?})")
            }
            UnsupportedVersion { version } => write!(f, "unsupported encoding version {version}"),
            UnknownOpcode { opcode, gate } => {
                write!(f, "unknown gate opcode {opcode} at gate {gate}")
            }
            AngleOverflow => write!(f, "angle overflow"),
            AngleNotExact => write!(f, "angle expression has no exact form (π² term)"),
            AngleZeroDenominator => write!(f, "angle with a zero denominator"),
            AngleDivisionByZero => write!(f, "angle division by zero"),
            AngleNotReduced => write!(f, "encoded angle not in lowest terms"),
            NoQubits => write!(f, "circuit declares no qubits"),
            TooManyQubits { qubits, max } => write!(f, "{qubits} qubits, at most {max} allowed"),
            TooManyClbits { clbits, max } => {
                write!(f, "{clbits} classical bits, at most {max} allowed")
            }
            QubitOutOfRange {
                gate,
                qubit,
                qubits,
            } => write!(
                f,
                "gate {gate}: qubit {qubit} out of range (circuit declares {qubits})"
            ),
            ClbitOutOfRange {
                gate,
                clbit,
                clbits,
            } => write!(
                f,
                "gate {gate}: classical bit {clbit} out of range (circuit declares {clbits})"
            ),
            DuplicateOperand { gate, qubit } => {
                write!(f, "gate {gate}: qubit {qubit} used twice")
            }
            EmptyBarrier { gate } => write!(f, "gate {gate}: barrier over no qubit"),
            ShotsOutOfRange { shots } => {
                write!(f, "{shots} shots, expected 1..={MAX_SHOTS}")
            }
            TooManyGates { gates, max } => write!(f, "{gates} gates, at most {max} allowed"),
            CountsNotSorted { index } => {
                write!(f, "result entry {index} not in increasing bitstring order")
            }
            ZeroCount { index } => write!(f, "result entry {index} has a zero count"),
            CountsSumMismatch { sum, shots } => {
                write!(f, "counts add up to {sum}, expected {shots} shots")
            }
            TooManyCounts { entries, shots } => {
                write!(f, "{entries} result entries for {shots} shots")
            }
            BitstringOutOfRange { bitstring, clbits } => write!(
                f,
                "bitstring {bitstring:#x} has bits beyond the {clbits} classical bits"
            ),
            ResultMismatch {
                field,
                expected,
                got,
            } => {
                write!(f, "result {field} is {got}, the job gives {expected}")
            }
            OscillatorsOutOfRange { oscillators } => write!(
                f,
                "{oscillators} oscillators, expected {MIN_OSCILLATORS}..={MAX_OSCILLATORS}"
            ),
            FrequencyCountMismatch { expected, got } => {
                write!(f, "{got} natural frequencies for {expected} oscillators")
            }
            PhaseCountMismatch { expected, got } => {
                write!(f, "{got} initial phases for {expected} oscillators")
            }
            FrequencyOutOfRange {
                index,
                milli_rad_per_s,
            } => write!(
                f,
                "oscillator {index}: frequency {milli_rad_per_s} mrad/s beyond ±{MAX_FREQUENCY_MILLI}"
            ),
            PhaseOutOfRange { index, milli_rad } => write!(
                f,
                "oscillator {index}: initial phase {milli_rad} mrad outside 0..{TWO_PI_MILLI}"
            ),
            CouplingOutOfRange { coupling_milli } => write!(
                f,
                "coupling {coupling_milli} milli beyond {MAX_COUPLING_MILLI}"
            ),
            AmplitudeOutOfRange { amplitude_milli } => {
                write!(f, "amplitude {amplitude_milli} milli outside 1..=1000")
            }
            ZeroStep => write!(f, "integration step dt is zero"),
            StepTooLong { dt_micros } => {
                write!(f, "integration step {dt_micros} µs beyond {MAX_DT_MICROS}")
            }
            StepsOutOfRange { steps } => write!(f, "{steps} steps, expected 1..={MAX_STEPS}"),
            WindowsOutOfRange { windows } => {
                write!(f, "{windows} windows, expected 1..={MAX_WINDOWS}")
            }
            StepsNotDivisible { steps, windows } => {
                write!(f, "{steps} steps do not split into {windows} equal windows")
            }
            StabilityOutOfRange {
                min_stability_milli,
            } => write!(
                f,
                "stability threshold {min_stability_milli} milli above 1000"
            ),
            NoWindows => write!(f, "Φ result with no windows"),
            TooManyWindows { windows, max } => {
                write!(f, "Φ result with {windows} windows, at most {max}")
            }
            WindowOutOfRange { window } => write!(f, "window {window}: summary out of range"),
            StabilityMismatch => write!(f, "stability flag disagrees with the windows"),
            UnstableWindowNotLast { window, windows } => write!(
                f,
                "unstable window {window} is not the last of {windows} reported"
            ),
        }
    }
}

/// The fuzz body: runs every decoder on `bytes`. Never panics; whatever a decoder
/// accepts must re-encode to the same bytes and pass its own validation.
pub fn fuzz_decode(bytes: &[u8]) {
    if let Ok(c) = Circuit::decode(bytes) {
        assert_eq!(c.encode(), bytes);
        assert!(c.validate(MAX_QUBITS).is_ok());
        let _ = (c.depth(), c.entangling_ops(), c.teleportations());
    }
    if let Ok(r) = QResult::decode(bytes) {
        assert_eq!(r.encode(), bytes);
        assert!(r.validate().is_ok());
    }
    if let Ok(e) = Envelope::decode(bytes) {
        assert_eq!(e.encode(), bytes);
        assert!(e.validate().is_ok());
    }
    if let Ok(p) = PhiResult::decode(bytes) {
        assert_eq!(p.encode(), bytes);
        assert!(p.validate().is_ok());
    }
}

#[cfg(test)]
mod tests;
