//! What a simulated device does with one command: the Q device runs a circuit in a
//! container of `slot_units` qubits under its decoherence budget; the Φ device
//! integrates an envelope in a window of `slot_units` oscillators. The device
//! validates every job again (the driver and the node may be wrong) and answers with
//! a completion status, a result in its wire form and a detail word.
//!
//! Detail words: `BadJob` → the container's or window's size when the job is too
//! large for it, 0 when the job does not decode; `BudgetExceeded` → the depth (Q) or
//! steps (Φ) the job needed; `Unstable` → the window that fell below its constraint.

use xdv_accel::job::{Circuit, Envelope};
use xdv_accel::regs::Kind;
use xdv_accel::ring::{CqStatus, Opcode, Submission};

/// A device's fixed properties.
#[derive(Copy, Clone, Debug)]
pub struct DeviceConfig {
    pub kind: Kind,
    /// Qubits per container / oscillators per window.
    pub slot_units: u32,
    /// Decoherence budget of a container: most circuit depth (Q) or integration
    /// steps (Φ) a job may use, whatever the job asks.
    pub coherence: u32,
}

/// The answer to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: CqStatus,
    pub result: Vec<u8>,
    pub detail: u32,
}

fn answer(status: CqStatus, result: Vec<u8>, detail: u32) -> Answer {
    Answer {
        status,
        result,
        detail,
    }
}

/// The budget a job runs under: the device's, lowered by the job's own if it asks
/// for less (0 asks for nothing).
fn budget(cfg: &DeviceConfig, sub: &Submission) -> u32 {
    match sub.budget {
        0 => cfg.coherence,
        b => b.min(cfg.coherence),
    }
}

/// Runs one command. Pure: the same command gives the same answer.
pub fn run(cfg: &DeviceConfig, sub: &Submission, job: &[u8]) -> Answer {
    if sub.opcode == Opcode::Nop {
        return answer(CqStatus::Ok, Vec::new(), 0);
    }
    match cfg.kind {
        Kind::Q => run_circuit(cfg, sub, job),
        Kind::Phi => run_envelope(cfg, sub, job),
    }
}

fn run_circuit(cfg: &DeviceConfig, sub: &Submission, job: &[u8]) -> Answer {
    let Ok(c) = Circuit::decode(job) else {
        return answer(CqStatus::BadJob, Vec::new(), 0);
    };
    if u32::from(c.qubits) > cfg.slot_units {
        return answer(CqStatus::BadJob, Vec::new(), cfg.slot_units);
    }
    match crate::qsim::run(&c, sub.seed, budget(cfg, sub)) {
        Ok(r) => answer(CqStatus::Ok, r.encode(), 0),
        Err(crate::qsim::SimError::BudgetExceeded { depth, .. }) => {
            answer(CqStatus::BudgetExceeded, Vec::new(), depth)
        }
        Err(_) => answer(CqStatus::BadJob, Vec::new(), 0),
    }
}

fn run_envelope(cfg: &DeviceConfig, sub: &Submission, job: &[u8]) -> Answer {
    let Ok(e) = Envelope::decode(job) else {
        return answer(CqStatus::BadJob, Vec::new(), 0);
    };
    if u32::from(e.oscillators) > cfg.slot_units {
        return answer(CqStatus::BadJob, Vec::new(), cfg.slot_units);
    }
    if e.steps > budget(cfg, sub) {
        return answer(CqStatus::BudgetExceeded, Vec::new(), e.steps);
    }
    match crate::phisim::run(&e) {
        Ok(r) if r.stable => answer(CqStatus::Ok, r.encode(), 0),
        Ok(r) => {
            let w = u32::from(r.unstable_window.unwrap_or(0));
            answer(CqStatus::Unstable, r.encode(), w)
        }
        Err(_) => answer(CqStatus::BadJob, Vec::new(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_accel::job::Gate;

    fn sub(opcode: Opcode, budget: u32) -> Submission {
        Submission {
            cmd: 1,
            opcode,
            slot: 0,
            job_len: 0,
            result_cap: 65536,
            seed: 9,
            budget,
            chunk: 0,
            tag: 0,
        }
    }

    const Q: DeviceConfig = DeviceConfig {
        kind: Kind::Q,
        slot_units: 4,
        coherence: 10,
    };

    fn bell(qubits: u8, depth_pad: usize) -> Vec<u8> {
        let mut gates = vec![Gate::H(0), Gate::Cx(0, 1)];
        gates.extend((0..depth_pad).map(|_| Gate::X(0)));
        gates.push(Gate::Measure { qubit: 0, clbit: 0 });
        gates.push(Gate::Measure { qubit: 1, clbit: 1 });
        Circuit {
            qubits,
            clbits: 2,
            shots: 100,
            gates,
        }
        .encode()
    }

    #[test]
    fn a_circuit_runs_and_the_same_seed_gives_the_same_counts() {
        let a = run(&Q, &sub(Opcode::Run, 0), &bell(2, 0));
        assert_eq!(a.status, CqStatus::Ok);
        assert_eq!(a, run(&Q, &sub(Opcode::Run, 0), &bell(2, 0)));
        let r = xdv_accel::job::QResult::decode(&a.result).unwrap();
        assert_eq!(r.shots, 100);
        assert_eq!(r.entangling_ops, 1);
    }

    #[test]
    fn too_large_too_deep_and_garbage_are_refused_specifically() {
        assert_eq!(run(&Q, &sub(Opcode::Run, 0), &bell(5, 0)).detail, 4);
        assert_eq!(
            run(&Q, &sub(Opcode::Run, 0), &bell(5, 0)).status,
            CqStatus::BadJob
        );
        let deep = run(&Q, &sub(Opcode::Run, 0), &bell(2, 20));
        assert_eq!((deep.status, deep.detail), (CqStatus::BudgetExceeded, 23));
        // The job asks for less than the device allows.
        let tight = run(&Q, &sub(Opcode::Run, 2), &bell(2, 0));
        assert_eq!(tight.status, CqStatus::BudgetExceeded);
        assert_eq!(
            run(&Q, &sub(Opcode::Run, 0), b"junk").status,
            CqStatus::BadJob
        );
        assert_eq!(run(&Q, &sub(Opcode::Nop, 0), b"").status, CqStatus::Ok);
    }

    #[test]
    fn an_unstable_envelope_says_which_window() {
        let cfg = DeviceConfig {
            kind: Kind::Phi,
            slot_units: 16,
            coherence: 100_000,
        };
        let e = Envelope {
            oscillators: 4,
            frequencies_milli: vec![500, 1500, 2500, 3500],
            coupling_milli: 0,
            amplitude_milli: 1000,
            phases_milli: vec![0, 0, 0, 0],
            steps: 4000,
            dt_micros: 1000,
            windows: 4,
            min_stability_milli: 900,
        };
        let a = run(&cfg, &sub(Opcode::Run, 0), &e.encode());
        assert_eq!(a.status, CqStatus::Unstable);
        let r = xdv_accel::job::PhiResult::decode(&a.result).unwrap();
        assert_eq!(r.unstable_window.map(u32::from), Some(a.detail));
    }
}
