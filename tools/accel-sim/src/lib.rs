//! Host simulators of the Q and Φ accelerators (the device side of `docs/accel.md`).
//!
//! - [`qasm`]: OpenQASM 2.0 text → [`xdv_accel::job::Circuit`], angles exact.
//! - [`envelope`]: a TOML envelope description → [`xdv_accel::job::Envelope`].
//! - [`qsim`]: the state-vector simulator; returns counts only (no amplitudes leave
//!   the crate, except through the test-only `reference` feature).
//! - [`phisim`]: the Kuramoto integrator behind Φ jobs.
//! - [`bench`]: our state-vector time against qiskit-aer's on a fixed circuit.
//!
//! Every result is a function of its inputs and seed alone: no clock, no global state.

pub mod bench;
pub mod device;
pub mod envelope;
pub mod phisim;
pub mod qasm;
pub mod qsim;
pub mod render;
