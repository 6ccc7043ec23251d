use super::*;
use crate::bench::random_circuit;
use crate::qasm;
use std::process::{Command, Stdio};

const BUDGET: u32 = 1000;

fn q(src: &str, shots: u32) -> Circuit {
    qasm::parse(src, shots).unwrap()
}

fn count(r: &QResult, bits: u64) -> u32 {
    r.counts.iter().find(|c| c.0 == bits).map_or(0, |c| c.1)
}

/// `n` successes out of `shots` at probability `p` lies within 5 standard deviations.
fn near(n: u32, shots: u32, p: f64) -> bool {
    let sd = (f64::from(shots) * p * (1.0 - p)).sqrt();
    (f64::from(n) - f64::from(shots) * p).abs() <= 5.0 * sd.max(1.0)
}

const BELL: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";

#[test]
fn bell_gives_00_and_11_in_equal_parts() {
    let r = run(&q(BELL, 1000), 7, BUDGET).unwrap();
    assert_eq!(r.counts.len(), 2, "{r:?}");
    assert!(
        near(count(&r, 0b00), 1000, 0.5) && near(count(&r, 0b11), 1000, 0.5),
        "{r:?}"
    );
    assert_eq!((r.depth, r.entangling_ops, r.teleportations), (3, 1, 0));
}

#[test]
fn ghz_3_to_5() {
    for n in 3..=5u32 {
        let mut src = format!(
            "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[{n}];\ncreg c[{n}];\nh q[0];\n"
        );
        for k in 1..n {
            src += &format!("cx q[{}],q[{k}];\n", k - 1);
        }
        src += "measure q -> c;\n";
        let r = run(&q(&src, 2000), u64::from(n), BUDGET).unwrap();
        let all = (1u64 << n) - 1;
        assert_eq!(
            r.counts.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![0, all]
        );
        assert!(near(count(&r, all), 2000, 0.5));
        assert_eq!(r.entangling_ops, n - 1);
    }
}

/// QFT on |x⟩ gives the uniform distribution; QFT then inverse QFT gives |x⟩ back.
#[test]
fn qft_on_a_basis_state() {
    let n = 4;
    let mut qft = String::new();
    for j in (0..n).rev() {
        qft += &format!("h q[{j}];\n");
        for k in (0..j).rev() {
            // controlled phase π/2^(j-k) from u1 and cx
            let d = 1u32 << (j - k);
            qft += &format!(
                "u1(pi/{}) q[{j}];\ncx q[{j}],q[{k}];\nu1(-pi/{}) q[{k}];\ncx q[{j}],q[{k}];\nu1(pi/{}) q[{k}];\n",
                2 * d,
                2 * d,
                2 * d
            );
        }
    }
    let head = format!(
        "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[{n}];\ncreg c[{n}];\nx q[0];\nx q[2];\n"
    );
    let c = q(&format!("{head}{qft}measure q -> c;\n"), 1000);
    let p = probabilities(&c).unwrap();
    assert!(p.iter().all(|&x| (x - 1.0 / 16.0).abs() < 1e-12), "{p:?}");
    let r = run(&c, 3, BUDGET).unwrap();
    assert!(r.counts.len() > 12);
    // Inverse: the same circuit reversed with negated angles.
    let inv: String = qft
        .lines()
        .rev()
        .map(|l| {
            let l = if l.contains("u1(-pi") {
                l.replace("u1(-pi", "u1(pi")
            } else {
                l.replace("u1(pi", "u1(-pi")
            };
            l + "\n"
        })
        .collect();
    let back = q(&format!("{head}{qft}{inv}measure q -> c;\n"), 500);
    let r = run(&back, 3, BUDGET).unwrap();
    assert_eq!(r.counts, vec![(0b0101, 500)]);
}

/// Teleports ry(θ)|0⟩ from q0 to q2 with deferred measurement (controlled
/// corrections instead of `if`); P(q2 = 1) must be sin²(θ/2).
#[test]
fn teleportation_moves_the_state() {
    let src = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[3];\ncreg m[2];\ncreg out[1];\n\
        ry(pi/3) q[0];\nh q[1];\ncx q[1],q[2];\ncx q[0],q[1];\nh q[0];\n\
        measure q[0] -> m[0];\nmeasure q[1] -> m[1];\ncx q[1],q[2];\ncz q[0],q[2];\n\
        measure q[2] -> out[0];\n";
    let c = q(src, 4000);
    let r = run(&c, 11, BUDGET).unwrap();
    let ones: u32 = r
        .counts
        .iter()
        .filter(|c| c.0 & 0b100 != 0)
        .map(|c| c.1)
        .sum();
    assert!(near(ones, 4000, 0.25), "{r:?}"); // sin²(π/6) = 1/4
    assert_eq!(r.teleportations, 2);
    // All four measurement outcomes of m appear.
    for m in 0..4u64 {
        assert!(r.counts.iter().any(|c| c.0 & 0b11 == m));
    }
}

#[test]
fn reset_and_mid_circuit_measure_collapse() {
    let src = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\n\
        h q[0];\nmeasure q[0] -> c[0];\ncx q[0],q[1];\nreset q[0];\nmeasure q[0] -> c[1];\nmeasure q[1] -> c[1];\n";
    let r = run(&q(src, 1000), 5, BUDGET).unwrap();
    // q1 copies the measured q0; c1 is overwritten by q1, so c = 00 or 11.
    assert_eq!(r.counts.len(), 2);
    assert_eq!((r.counts[0].0, r.counts[1].0), (0b00, 0b11));
    let src = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[1];\ncreg c[1];\nx q[0];\nreset q[0];\nmeasure q[0] -> c[0];\n";
    assert_eq!(run(&q(src, 10), 1, BUDGET).unwrap().counts, vec![(0, 10)]);
}

#[test]
fn same_seed_same_counts_other_seed_differs() {
    let c = Circuit {
        shots: 2000,
        clbits: 6,
        ..random_circuit(6, 8, 99, true)
    };
    let mut c = c;
    for k in 0..6 {
        c.gates.push(Gate::Measure { qubit: k, clbit: k });
    }
    let a = run(&c, 1, BUDGET).unwrap();
    assert_eq!(a, run(&c, 1, BUDGET).unwrap());
    assert_ne!(a.counts, run(&c, 2, BUDGET).unwrap().counts);
    a.check_against(&c).unwrap();
    // The per-shot path is deterministic too.
    c.gates.push(Gate::H(0));
    let b = run(&c, 1, BUDGET).unwrap();
    assert_eq!(b, run(&c, 1, BUDGET).unwrap());
    assert_ne!(b.counts, run(&c, 2, BUDGET).unwrap().counts);
}

#[test]
fn budget_and_validation_are_enforced() {
    let c = q(BELL, 10);
    assert_eq!(
        run(&c, 0, 2),
        Err(SimError::BudgetExceeded {
            depth: 3,
            budget: 2
        })
    );
    assert!(run(&c, 0, 3).is_ok());
    let bad = Circuit {
        shots: 0,
        ..c.clone()
    };
    assert_eq!(
        run(&bad, 0, 3),
        Err(SimError::Invalid(JobError::ShotsOutOfRange { shots: 0 }))
    );
    let mid = q(
        "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[1];\ncreg c[1];\nmeasure q[0] -> c[0];\nh q[0];\n",
        1,
    );
    assert_eq!(probabilities(&mid), Err(SimError::NotTerminal));
}

#[test]
fn fusion_matches_unfused_application() {
    // Fusing is exact up to rounding: compare against applying each gate alone.
    let c = random_circuit(5, 12, 4, true);
    let fused = probabilities(&c).unwrap();
    let mut s = State::zero(5);
    for g in &c.gates {
        let one = Circuit {
            gates: vec![g.clone()],
            ..c.clone()
        };
        for op in compile(&one) {
            s.apply(&op);
        }
    }
    for (a, b) in fused.iter().zip(s.probabilities()) {
        assert!((a - b).abs() < 1e-12);
    }
    assert!(compile(&c).len() < c.gates.len());
}

#[test]
fn sixteen_and_twenty_qubits_run() {
    let c = crate::bench::bench_circuit();
    let sum: f64 = probabilities(&c).unwrap().iter().sum();
    assert!((sum - 1.0).abs() < 1e-9);
    let mut big = random_circuit(20, 3, 5, false);
    big.clbits = 20;
    big.shots = 100;
    for k in 0..20 {
        big.gates.push(Gate::Measure { qubit: k, clbit: k });
    }
    let r = run(&big, 1, BUDGET).unwrap();
    r.check_against(&big).unwrap();
}

const QISKIT_PROBS: &str = r#"
import sys, json
from qiskit import qasm2
from qiskit.quantum_info import Statevector
out = []
for src in sys.stdin.read().split("\n//END\n"):
    if src.strip():
        out.append(list(Statevector(qasm2.loads(src, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)).probabilities()))
print(json.dumps(out))
"#;

/// Exact probability vectors of ~20 random circuits (3–8 qubits, every gate kind)
/// against qiskit's `Statevector`. Fails when python3/qiskit is missing unless
/// `XDV_SKIP_QISKIT=1`.
#[test]
fn probabilities_match_qiskit() {
    let have = Command::new("python3")
        // Only qiskit's own `Statevector` is used here (qiskit-aer is for the bench).
        .args(["-c", "import qiskit"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert_eq!(
            std::env::var("XDV_SKIP_QISKIT").as_deref(),
            Ok("1"),
            "python3 with qiskit is required (pip install qiskit), \
             or set XDV_SKIP_QISKIT=1 to skip the reference check"
        );
        println!("reference: none (XDV_SKIP_QISKIT=1)");
        return;
    }
    let circuits: Vec<Circuit> = (0..20u64)
        .map(|i| random_circuit(3 + (i % 6) as u8, 6 + (i % 5) as u32, 1000 + i, true))
        .collect();
    let src: String = circuits
        .iter()
        .map(|c| qasm::to_qasm(c) + "\n//END\n")
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", QISKIT_PROBS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(src.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let theirs: Vec<Vec<f64>> = text
        .trim()
        .trim_start_matches("[[")
        .trim_end_matches("]]")
        .split("], [")
        .map(|v| v.split(", ").map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(theirs.len(), circuits.len());
    let version = Command::new("python3")
        .args(["-c", "import qiskit; print(qiskit.__version__)"])
        .output()
        .unwrap();
    println!(
        "reference: qiskit {} Statevector",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    for (c, t) in circuits.iter().zip(&theirs) {
        let ours = probabilities(c).unwrap();
        assert_eq!(ours.len(), t.len());
        for (i, (a, b)) in ours.iter().zip(t).enumerate() {
            assert!(
                (a - b).abs() < 1e-9,
                "{}-qubit circuit, index {i}: ours {a}, qiskit {b}",
                c.qubits
            );
        }
    }
}
