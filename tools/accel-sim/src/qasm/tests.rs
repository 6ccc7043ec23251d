use super::*;

fn err(src: &str) -> QasmError {
    parse(src, 1).unwrap_err()
}

const HEAD: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\n";

#[test]
fn registers_flatten_and_broadcast() {
    let c = parse(&format!("{HEAD}qreg a[2];\nqreg b[2];\ncreg c[4];\nh a;\ncx a, b;\ncx a[0], b;\nmeasure b -> c[0];\nbarrier a, b[1];\n// done\n"), 5).unwrap();
    assert_eq!((c.qubits, c.clbits, c.shots), (4, 4, 5));
    assert_eq!(
        c.gates,
        vec![
            Gate::H(0),
            Gate::H(1),
            Gate::Cx(0, 2),
            Gate::Cx(1, 3),
            Gate::Cx(0, 2),
            Gate::Cx(0, 3),
            Gate::Measure { qubit: 2, clbit: 0 },
            Gate::Measure { qubit: 3, clbit: 0 },
            Gate::Barrier { mask: 0b1011 },
        ]
    );
}

#[test]
fn angles_are_exact() {
    let c = parse(&format!("{HEAD}qreg q[1];\nrz(-pi/4 + 0.25*2) q[0];\nu3(pi*3/2, 1e-3, (pi)/(2+2)) q[0];\nU(0,0,.5) q[0];\n"), 1).unwrap();
    assert_eq!(c.gates[0], Gate::Rz(0, Angle::new(-1, 4, 1, 2).unwrap()));
    assert_eq!(
        c.gates[1],
        Gate::U3(
            0,
            Angle::pi_frac(3, 2).unwrap(),
            Angle::rational(1, 1000).unwrap(),
            Angle::pi_frac(1, 4).unwrap()
        )
    );
    assert_eq!(
        c.gates[2],
        Gate::U3(0, Angle::ZERO, Angle::ZERO, Angle::rational(1, 2).unwrap())
    );
}

#[test]
fn inexact_expressions_are_refused() {
    let e = err(&format!("{HEAD}qreg q[1];\nrz(sin(0.1)) q[0];\n"));
    assert_eq!((e.line, e.col), (4, 4));
    assert!(e.message.contains("no exact form"), "{e}");
    assert!(
        err(&format!("{HEAD}qreg q[1];\nrz(pi^2) q[0];\n"))
            .message
            .contains("'^'")
    );
    assert!(
        err(&format!("{HEAD}qreg q[1];\nrz(pi*pi) q[0];\n"))
            .message
            .contains("π²")
    );
    assert!(
        err(&format!("{HEAD}qreg q[1];\nrz(pi/0) q[0];\n"))
            .message
            .contains("division by zero")
    );
    assert!(
        err(&format!("{HEAD}qreg q[1];\nrz(1e30) q[0];\n"))
            .message
            .contains("overflow")
    );
}

#[test]
fn errors_carry_position_and_cause() {
    let e = err(&format!("{HEAD}qreg q[2];\nfoo q[0];\n"));
    assert_eq!(
        (e.line, e.col, e.message.as_str()),
        (4, 1, "unknown gate 'foo'")
    );
    assert_eq!(e.to_string(), "line 4, column 1: unknown gate 'foo'");
    let e = err(&format!("{HEAD}qreg q[2];\nh q[2];\n"));
    assert_eq!((e.line, e.col), (4, 5));
    assert!(e.message.contains("index 2 out of range"), "{e}");
    assert!(
        err(&format!("{HEAD}qreg q[2];\ncx q[0];\n"))
            .message
            .contains("takes 2 qubits")
    );
    assert!(
        err(&format!("{HEAD}qreg q[2];\nrz q[0];\n"))
            .message
            .contains("takes 1 parameters")
    );
    assert!(
        err(&format!("{HEAD}qreg q[2];\nh r[0];\n"))
            .message
            .contains("undeclared quantum register 'r'")
    );
    assert!(
        err(&format!("{HEAD}qreg q[2];\nmeasure q[0] -> c[0];\n"))
            .message
            .contains("undeclared classical register")
    );
    assert!(
        err(&format!("{HEAD}qreg q[20];\nqreg r[5];\n"))
            .message
            .contains("too many qubits")
    );
    assert!(
        err(&format!("{HEAD}qreg q[2];\ncx q[0], q[0];\n"))
            .message
            .contains("twice")
    );
    assert!(
        err(&format!("{HEAD}qreg q[2];\nqreg r[3];\ncx q, r;\n"))
            .message
            .contains("sizes 2 and 3")
    );
    assert!(
        err(&format!("{HEAD}qreg q[2];\nh q[0]\n"))
            .message
            .contains("expected ';'")
    );
    assert!(
        err(&format!("{HEAD}gate g a {{ h a; }}\n"))
            .message
            .contains("user-defined gate")
    );
    assert!(
        err(&format!("{HEAD}opaque g a;\n"))
            .message
            .contains("opaque")
    );
    assert!(
        err(&format!(
            "{HEAD}qreg q[1];\ncreg c[1];\nif (c==1) x q[0];\n"
        ))
        .message
        .contains("'if'")
    );
    assert!(
        err("OPENQASM 3.0;\n")
            .message
            .contains("unsupported OpenQASM version")
    );
    assert!(
        err("OPENQASM 2.0;\ninclude \"stdgates.inc\";\n")
            .message
            .contains("cannot include")
    );
    assert!(
        err(&format!("{HEAD}qreg q[1];\nh q[0]; $\n"))
            .message
            .contains("unexpected character")
    );
    let e = parse(&format!("{HEAD}qreg q[1];\n"), 0).unwrap_err();
    assert!(
        e.message.contains("invalid circuit"),
        "shots 0 is refused by validation: {e}"
    );
}

#[test]
fn to_qasm_round_trips() {
    for seed in 0..10 {
        let c = crate::bench::random_circuit(5, 6, seed, true);
        let back = parse(&to_qasm(&c), c.shots).unwrap();
        assert_eq!(back, c);
    }
}
