use super::*;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

fn bell() -> Circuit {
    Circuit::bell(1000)
}

fn envelope() -> Envelope {
    Envelope {
        oscillators: 3,
        frequencies_milli: vec![1000, 1100, -900],
        coupling_milli: 5000,
        amplitude_milli: 1000,
        phases_milli: vec![0, 100, 6283],
        steps: 1000,
        dt_micros: 1000,
        windows: 10,
        min_stability_milli: 500,
    }
}

#[test]
fn circuit_round_trips_and_has_statistics() {
    let c = bell();
    let bytes = c.encode();
    assert_eq!(&bytes[..3], b"Qc\x01");
    assert_eq!(Circuit::decode(&bytes).unwrap(), c);
    assert_eq!(c.depth(), 3);
    assert_eq!(c.entangling_ops(), 1);
    assert_eq!(c.teleportations(), 0); // nothing follows the measurements
}

#[test]
fn depth_counts_layers_and_barriers_align() {
    let mut c = Circuit {
        qubits: 3,
        clbits: 0,
        shots: 1,
        gates: vec![Gate::H(0), Gate::H(1), Gate::H(0), Gate::X(2)],
    };
    assert_eq!(c.depth(), 2);
    c.gates.push(Gate::Barrier { mask: 0b111 });
    c.gates.push(Gate::X(2));
    assert_eq!(c.depth(), 3); // x(2) waits for the barrier at height 2
    c.gates.push(Gate::Ccx(0, 1, 2));
    assert_eq!(c.depth(), 4);
    assert_eq!(c.entangling_ops(), 1);
}

#[test]
fn teleportation_pattern_is_counted() {
    let c = Circuit {
        qubits: 3,
        clbits: 2,
        shots: 1,
        gates: vec![
            Gate::H(1),
            Gate::Cx(1, 2),
            Gate::Cx(0, 1),
            Gate::H(0),
            Gate::Measure { qubit: 0, clbit: 0 },
            Gate::Measure { qubit: 1, clbit: 1 },
            Gate::Cx(1, 2),
            Gate::Cz(0, 2),
        ],
    };
    assert_eq!(c.teleportations(), 2);
    // A measured qubit is no longer entangled: measuring it again counts nothing.
    let mut again = c.clone();
    again.gates.insert(6, Gate::Measure { qubit: 0, clbit: 0 });
    assert_eq!(again.teleportations(), 2);
    // A reset clears entanglement before the measurement.
    let mut reset = c.clone();
    reset.gates.insert(4, Gate::Reset(0));
    assert_eq!(reset.teleportations(), 1);
}

#[test]
fn circuit_validation_names_the_fault() {
    let mut c = bell();
    c.gates.push(Gate::X(17));
    let e = c.validate(MAX_QUBITS).unwrap_err();
    assert_eq!(
        e,
        JobError::QubitOutOfRange {
            gate: 4,
            qubit: 17,
            qubits: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "gate 4: qubit 17 out of range (circuit declares 2)"
    );
    let mut c = bell();
    c.gates.push(Gate::Cx(1, 1));
    assert_eq!(
        c.validate(MAX_QUBITS),
        Err(JobError::DuplicateOperand { gate: 4, qubit: 1 })
    );
    let mut c = bell();
    c.gates.push(Gate::Measure { qubit: 0, clbit: 2 });
    assert_eq!(
        c.validate(MAX_QUBITS),
        Err(JobError::ClbitOutOfRange {
            gate: 4,
            clbit: 2,
            clbits: 2
        })
    );
    let mut c = bell();
    c.gates.push(Gate::Barrier { mask: 0b100 });
    assert!(matches!(
        c.validate(MAX_QUBITS),
        Err(JobError::QubitOutOfRange { qubit: 2, .. })
    ));
    c.gates.pop();
    c.gates.push(Gate::Barrier { mask: 0 });
    assert_eq!(
        c.validate(MAX_QUBITS),
        Err(JobError::EmptyBarrier { gate: 4 })
    );
    for (shots, ok) in [
        (0, false),
        (1, true),
        (MAX_SHOTS, true),
        (MAX_SHOTS + 1, false),
    ] {
        let c = Circuit { shots, ..bell() };
        assert_eq!(c.validate(MAX_QUBITS).is_ok(), ok, "shots {shots}");
    }
    let c = Circuit {
        qubits: 0,
        gates: vec![],
        ..bell()
    };
    assert_eq!(c.validate(MAX_QUBITS), Err(JobError::NoQubits));
    let c = Circuit {
        qubits: 25,
        ..bell()
    };
    assert_eq!(
        c.validate(MAX_QUBITS),
        Err(JobError::TooManyQubits {
            qubits: 25,
            max: 24
        })
    );
    assert_eq!(
        bell().validate(1),
        Err(JobError::TooManyQubits { qubits: 2, max: 1 })
    );
    let c = Circuit {
        clbits: 65,
        ..bell()
    };
    assert!(matches!(
        c.validate(24),
        Err(JobError::TooManyClbits { .. })
    ));
    let c = Circuit {
        gates: vec![Gate::H(0); MAX_GATES + 1],
        ..bell()
    };
    assert!(matches!(c.validate(24), Err(JobError::TooManyGates { .. })));
}

#[test]
fn circuit_decoder_rejects_bad_bytes() {
    let bytes = bell().encode();
    assert!(matches!(
        Circuit::decode(&bytes[..bytes.len() - 1]),
        Err(JobError::Truncated { .. })
    ));
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        Circuit::decode(&long),
        Err(JobError::TrailingBytes { count: 1 })
    );
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(matches!(
        Circuit::decode(&magic),
        Err(JobError::BadMagic { .. })
    ));
    let mut version = bytes.clone();
    version[2] = 9;
    assert_eq!(
        Circuit::decode(&version),
        Err(JobError::UnsupportedVersion { version: 9 })
    );
    let mut op = bytes.clone();
    op[11] = 200; // first gate's opcode
    assert_eq!(
        Circuit::decode(&op),
        Err(JobError::UnknownOpcode {
            opcode: 200,
            gate: 0
        })
    );
    // An angle not in lowest terms: rz(π·2/4).
    let c = Circuit {
        gates: vec![Gate::Rz(0, Angle::pi_frac(1, 2).unwrap())],
        ..bell()
    };
    let mut b = c.encode();
    let at = 11 + 2; // opcode, qubit, then pi_num
    b[at..at + 8].copy_from_slice(&2i64.to_le_bytes());
    b[at + 8..at + 16].copy_from_slice(&4u64.to_le_bytes());
    assert_eq!(Circuit::decode(&b), Err(JobError::AngleNotReduced));
    // A huge gate count with no gates behind it is refused before allocating.
    let mut b = bell().encode();
    b.truncate(11);
    b[9..11].copy_from_slice(&4000u16.to_le_bytes());
    assert!(matches!(
        Circuit::decode(&b),
        Err(JobError::Truncated { .. })
    ));
}

#[test]
fn qresult_validation() {
    let c = bell();
    let r = QResult {
        counts: vec![(0, 480), (3, 520)],
        shots: 1000,
        entangling_ops: 1,
        teleportations: 0,
        depth: 3,
    };
    assert_eq!(QResult::decode(&r.encode()).unwrap(), r);
    r.check_against(&c).unwrap();
    let bad = QResult {
        counts: vec![(3, 520), (0, 480)],
        ..r.clone()
    };
    assert_eq!(bad.validate(), Err(JobError::CountsNotSorted { index: 1 }));
    let bad = QResult {
        counts: vec![(0, 480), (0, 520)],
        ..r.clone()
    };
    assert_eq!(bad.validate(), Err(JobError::CountsNotSorted { index: 1 }));
    let bad = QResult {
        counts: vec![(0, 480), (3, 521)],
        ..r.clone()
    };
    assert_eq!(
        bad.validate(),
        Err(JobError::CountsSumMismatch {
            sum: 1001,
            shots: 1000
        })
    );
    let bad = QResult {
        counts: vec![(0, 1000), (3, 0)],
        ..r.clone()
    };
    assert_eq!(bad.validate(), Err(JobError::ZeroCount { index: 1 }));
    let bad = QResult {
        counts: vec![(0, 480), (4, 520)],
        ..r.clone()
    };
    assert_eq!(
        bad.check_against(&c),
        Err(JobError::BitstringOutOfRange {
            bitstring: 4,
            clbits: 2
        })
    );
    let bad = QResult {
        depth: 7,
        ..r.clone()
    };
    assert_eq!(
        bad.check_against(&c),
        Err(JobError::ResultMismatch {
            field: "depth",
            expected: 3,
            got: 7
        })
    );
}

#[test]
fn envelope_validation() {
    let e = envelope();
    assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    assert_eq!(e.steps_per_window(), 100);
    let bad = Envelope {
        frequencies_milli: vec![1, 2],
        ..envelope()
    };
    assert_eq!(
        bad.validate(),
        Err(JobError::FrequencyCountMismatch {
            expected: 3,
            got: 2
        })
    );
    let bad = Envelope {
        phases_milli: vec![1],
        ..envelope()
    };
    assert_eq!(
        bad.validate(),
        Err(JobError::PhaseCountMismatch {
            expected: 3,
            got: 1
        })
    );
    let bad = Envelope {
        dt_micros: 0,
        ..envelope()
    };
    assert_eq!(bad.validate(), Err(JobError::ZeroStep));
    let bad = Envelope {
        steps: 1001,
        ..envelope()
    };
    assert_eq!(
        bad.validate(),
        Err(JobError::StepsNotDivisible {
            steps: 1001,
            windows: 10
        })
    );
    let bad = Envelope {
        phases_milli: vec![0, 0, TWO_PI_MILLI],
        ..envelope()
    };
    assert_eq!(
        bad.validate(),
        Err(JobError::PhaseOutOfRange {
            index: 2,
            milli_rad: TWO_PI_MILLI
        })
    );
    let bad = Envelope {
        amplitude_milli: 0,
        ..envelope()
    };
    assert!(matches!(
        bad.validate(),
        Err(JobError::AmplitudeOutOfRange { .. })
    ));
    let bad = Envelope {
        windows: 0,
        ..envelope()
    };
    assert!(matches!(
        bad.validate(),
        Err(JobError::WindowsOutOfRange { .. })
    ));
    let bad = Envelope {
        steps: MAX_STEPS + 10,
        ..envelope()
    };
    assert!(matches!(
        bad.validate(),
        Err(JobError::StepsOutOfRange { .. })
    ));
    let bad = Envelope {
        min_stability_milli: 1001,
        ..envelope()
    };
    assert!(matches!(
        bad.validate(),
        Err(JobError::StabilityOutOfRange { .. })
    ));
    let bad = Envelope {
        oscillators: 1,
        frequencies_milli: vec![0],
        phases_milli: vec![0],
        ..envelope()
    };
    assert!(matches!(
        bad.validate(),
        Err(JobError::OscillatorsOutOfRange { .. })
    ));
    assert!(matches!(
        Envelope::decode(&bad.encode()),
        Err(JobError::OscillatorsOutOfRange { oscillators: 1 })
    ));
    let mut b = e.encode();
    b.pop();
    assert!(matches!(
        Envelope::decode(&b),
        Err(JobError::Truncated { .. })
    ));
}

#[test]
fn phi_result_validation() {
    let e = envelope();
    let w = |mean, min| WindowSummary {
        r_mean_milli: mean,
        r_min_milli: min,
        mean_phase_milli: 10,
    };
    let ok = PhiResult {
        windows: vec![w(900, 800); 10],
        stable: true,
        unstable_window: None,
    };
    assert_eq!(PhiResult::decode(&ok.encode()).unwrap(), ok);
    ok.check_against(&e).unwrap();
    let unstable = PhiResult {
        windows: vec![w(900, 800), w(600, 400)],
        stable: false,
        unstable_window: Some(1),
    };
    assert_eq!(PhiResult::decode(&unstable.encode()).unwrap(), unstable);
    unstable.check_against(&e).unwrap();
    let bad = PhiResult {
        unstable_window: Some(0),
        ..unstable.clone()
    };
    assert_eq!(
        bad.validate(),
        Err(JobError::UnstableWindowNotLast {
            window: 0,
            windows: 2
        })
    );
    let bad = PhiResult {
        stable: true,
        ..unstable.clone()
    };
    assert_eq!(bad.validate(), Err(JobError::StabilityMismatch));
    let bad = PhiResult {
        windows: vec![w(500, 600)],
        stable: true,
        unstable_window: None,
    };
    assert_eq!(
        bad.validate(),
        Err(JobError::WindowOutOfRange { window: 0 })
    );
    let bad = PhiResult {
        windows: vec![],
        stable: true,
        unstable_window: None,
    };
    assert_eq!(bad.validate(), Err(JobError::NoWindows));
    // Stable but a window below the threshold, or too few windows.
    let bad = PhiResult {
        windows: vec![w(900, 100); 10],
        ..ok.clone()
    };
    assert_eq!(bad.check_against(&e), Err(JobError::StabilityMismatch));
    let bad = PhiResult {
        windows: vec![w(900, 800); 9],
        ..ok.clone()
    };
    assert!(matches!(
        bad.check_against(&e),
        Err(JobError::ResultMismatch { .. })
    ));
}

#[test]
fn fuzz_body_runs_on_valid_and_mutated_messages() {
    let msgs: Vec<Vec<u8>> = vec![
        bell().encode(),
        envelope().encode(),
        QResult {
            counts: vec![(1, 1)],
            shots: 1,
            entangling_ops: 0,
            teleportations: 0,
            depth: 0,
        }
        .encode(),
    ];
    for m in &msgs {
        fuzz_decode(m);
        for i in 0..m.len() {
            let mut x = m.clone();
            x[i] ^= 0x5a;
            fuzz_decode(&x);
            fuzz_decode(&m[..i]);
        }
    }
}

fn arb_angle() -> impl Strategy<Value = Angle> {
    (any::<i32>(), 1u32.., any::<i32>(), 1u32..).prop_map(|(a, b, c, d)| {
        Angle::new(i64::from(a), u64::from(b), i64::from(c), u64::from(d)).unwrap()
    })
}

fn arb_gate(n: u8) -> impl Strategy<Value = Gate> {
    // Three distinct qubits from n >= 3.
    let q3 = proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 3).prop_shuffle();
    (
        0u8..21,
        q3,
        arb_angle(),
        arb_angle(),
        arb_angle(),
        0u8..4,
        1u32..(1 << n),
    )
        .prop_map(|(op, q, a, b, c, cl, mask)| match op {
            0 => Gate::H(q[0]),
            1 => Gate::X(q[0]),
            2 => Gate::Y(q[0]),
            3 => Gate::Z(q[0]),
            4 => Gate::S(q[0]),
            5 => Gate::Sdg(q[0]),
            6 => Gate::T(q[0]),
            7 => Gate::Tdg(q[0]),
            8 => Gate::Rx(q[0], a),
            9 => Gate::Ry(q[0], a),
            10 => Gate::Rz(q[0], a),
            11 => Gate::U1(q[0], a),
            12 => Gate::U2(q[0], a, b),
            13 => Gate::U3(q[0], a, b, c),
            14 => Gate::Cx(q[0], q[1]),
            15 => Gate::Cz(q[0], q[1]),
            16 => Gate::Swap(q[0], q[1]),
            17 => Gate::Ccx(q[0], q[1], q[2]),
            18 => Gate::Measure {
                qubit: q[0],
                clbit: cl,
            },
            19 => Gate::Reset(q[0]),
            _ => Gate::Barrier { mask },
        })
}

fn arb_circuit() -> impl Strategy<Value = Circuit> {
    (3u8..=MAX_QUBITS)
        .prop_flat_map(|n| {
            (
                Just(n),
                1u32..=MAX_SHOTS,
                proptest::collection::vec(arb_gate(n), 0..40),
            )
        })
        .prop_map(|(qubits, shots, gates)| Circuit {
            qubits,
            clbits: 4,
            shots,
            gates,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn circuit_round_trip(c in arb_circuit()) {
        prop_assert!(c.validate(MAX_QUBITS).is_ok());
        prop_assert_eq!(Circuit::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn qresult_round_trip(mut bits in proptest::collection::vec(any::<u64>(), 1..50), seed in any::<u32>()) {
        bits.sort_unstable();
        bits.dedup();
        let counts: Vec<(u64, u32)> =
            bits.iter().enumerate().map(|(i, &b)| (b, 1 + (seed ^ i as u32) % 1000)).collect();
        let shots = counts.iter().map(|c| c.1).sum();
        let r = QResult { counts, shots, entangling_ops: seed, teleportations: seed / 3, depth: seed / 7 };
        prop_assert_eq!(QResult::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn envelope_round_trip(
        n in MIN_OSCILLATORS..=MAX_OSCILLATORS,
        seed in any::<u64>(),
        windows in 1u16..=MAX_WINDOWS,
        spw in 1u32..=100,
    ) {
        let f = |i: u16, m: i64| ((seed.rotate_left(u32::from(i)) % (2 * m as u64 + 1)) as i64 - m) as i32;
        let e = Envelope {
            oscillators: n,
            frequencies_milli: (0..n).map(|i| f(i, i64::from(MAX_FREQUENCY_MILLI))).collect(),
            coupling_milli: (seed % u64::from(MAX_COUPLING_MILLI)) as u32,
            amplitude_milli: 1 + (seed % 1000) as u32,
            phases_milli: (0..n).map(|i| f(i, 3000) + 3000).collect(),
            steps: u32::from(windows) * spw,
            dt_micros: 1 + (seed % u64::from(MAX_DT_MICROS)) as u32,
            windows,
            min_stability_milli: (seed % 1001) as u16,
        };
        prop_assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn phi_result_round_trip(ws in proptest::collection::vec((0u16..=1000, 0u16..=1000, -PI_MILLI..=PI_MILLI), 1..=64), stable in any::<bool>()) {
        let windows: Vec<WindowSummary> = ws.iter().map(|&(a, b, p)| WindowSummary {
            r_mean_milli: a.max(b), r_min_milli: a.min(b), mean_phase_milli: p }).collect();
        let unstable_window = (!stable).then_some(windows.len() as u16 - 1);
        let r = PhiResult { windows, stable, unstable_window };
        prop_assert_eq!(PhiResult::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzz_decode(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_headers(
        magic in 0usize..4,
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // Valid magic and version, arbitrary body: reaches past the header checks.
        let mut b = [*b"Qc", *b"Qr", *b"Pe", *b"Pr"][magic].to_vec();
        b.push(1);
        b.extend_from_slice(&rest);
        fuzz_decode(&b);
    }
}
