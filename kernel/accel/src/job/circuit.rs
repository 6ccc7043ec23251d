//! Q jobs: [`Circuit`] (gates over `u8` qubit indices, exact angles) and
//! [`QResult`] (measured counts plus the circuit's static statistics).
//!
//! Wire form of a circuit: `"Qc" version qubits:u8 clbits:u8 shots:u32
//! gate_count:u16` then per gate an opcode byte and its operands: qubit bytes,
//! angles as 32 bytes (`pi_num:i64 pi_den:u64 rad_num:i64 rad_den:u64`), a measure's
//! classical bit byte, a barrier's `u32` qubit mask.
//!
//! Definitions the device and the kernel must share, so they live here:
//! - **depth**: the usual layer count over qubit and classical-bit wires. Each gate
//!   sits one layer above the highest of its wires (a measure uses its qubit and its
//!   classical bit). A barrier adds no layer; it lifts its qubits to their common
//!   height, so nothing moves across it.
//! - **entangling ops**: the number of `cx`, `cz`, `swap` and `ccx` gates.
//! - **teleportations**: the number of measurements whose qubit was *entangled* when
//!   measured — it has been an operand of a multi-qubit gate since the start or its
//!   last `reset`/`measure` — and which are followed later in the circuit by at least
//!   one gate other than `measure` and `barrier` (on any qubit). This is the static
//!   shape of measurement-based teleportation; it is a usage count for accounting,
//!   not a claim that a state was teleported.

use super::wire::{self, Reader};
use super::{Angle, JobError, MAX_CLBITS, MAX_GATES, MAX_QUBITS, MAX_SHOTS};
use alloc::vec;
use alloc::vec::Vec;

/// One operation of OpenQASM 2's `qelib1.inc` (plus the `U`/`CX` builtins, which
/// the parser maps to [`Gate::U3`] and [`Gate::Cx`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    H(u8),
    X(u8),
    Y(u8),
    Z(u8),
    S(u8),
    Sdg(u8),
    T(u8),
    Tdg(u8),
    Rx(u8, Angle),
    Ry(u8, Angle),
    Rz(u8, Angle),
    /// `u1(λ)`.
    U1(u8, Angle),
    /// `u2(φ, λ)`.
    U2(u8, Angle, Angle),
    /// `u3(θ, φ, λ)` (also `U`).
    U3(u8, Angle, Angle, Angle),
    /// `cx control, target`.
    Cx(u8, u8),
    Cz(u8, u8),
    Swap(u8, u8),
    /// `ccx control, control, target`.
    Ccx(u8, u8, u8),
    /// Measure `qubit` into classical bit `clbit` (collapses the qubit).
    Measure {
        qubit: u8,
        clbit: u8,
    },
    /// Reset a qubit to |0⟩.
    Reset(u8),
    /// A barrier over the qubits whose bits are set (no operation; a depth marker).
    Barrier {
        mask: u32,
    },
}

/// Up to [`MAX_QUBITS`] qubit operands of one gate, in operand order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QubitList {
    buf: [u8; MAX_QUBITS as usize],
    len: usize,
}

impl QubitList {
    fn of(qs: &[u8]) -> QubitList {
        let mut buf = [0u8; MAX_QUBITS as usize];
        buf[..qs.len()].copy_from_slice(qs);
        QubitList { buf, len: qs.len() }
    }

    /// The operands.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

const OP_H: u8 = 0;
const OP_X: u8 = 1;
const OP_Y: u8 = 2;
const OP_Z: u8 = 3;
const OP_S: u8 = 4;
const OP_SDG: u8 = 5;
const OP_T: u8 = 6;
const OP_TDG: u8 = 7;
const OP_RX: u8 = 8;
const OP_RY: u8 = 9;
const OP_RZ: u8 = 10;
const OP_U1: u8 = 11;
const OP_U2: u8 = 12;
const OP_U3: u8 = 13;
const OP_CX: u8 = 14;
const OP_CZ: u8 = 15;
const OP_SWAP: u8 = 16;
const OP_CCX: u8 = 17;
const OP_MEASURE: u8 = 18;
const OP_RESET: u8 = 19;
const OP_BARRIER: u8 = 20;

impl Gate {
    /// The OpenQASM name (`qelib1.inc` spelling).
    pub fn name(&self) -> &'static str {
        match self {
            Gate::H(_) => "h",
            Gate::X(_) => "x",
            Gate::Y(_) => "y",
            Gate::Z(_) => "z",
            Gate::S(_) => "s",
            Gate::Sdg(_) => "sdg",
            Gate::T(_) => "t",
            Gate::Tdg(_) => "tdg",
            Gate::Rx(..) => "rx",
            Gate::Ry(..) => "ry",
            Gate::Rz(..) => "rz",
            Gate::U1(..) => "u1",
            Gate::U2(..) => "u2",
            Gate::U3(..) => "u3",
            Gate::Cx(..) => "cx",
            Gate::Cz(..) => "cz",
            Gate::Swap(..) => "swap",
            Gate::Ccx(..) => "ccx",
            Gate::Measure { .. } => "measure",
            Gate::Reset(_) => "reset",
            Gate::Barrier { .. } => "barrier",
        }
    }

    fn opcode(&self) -> u8 {
        match self {
            Gate::H(_) => OP_H,
            Gate::X(_) => OP_X,
            Gate::Y(_) => OP_Y,
            Gate::Z(_) => OP_Z,
            Gate::S(_) => OP_S,
            Gate::Sdg(_) => OP_SDG,
            Gate::T(_) => OP_T,
            Gate::Tdg(_) => OP_TDG,
            Gate::Rx(..) => OP_RX,
            Gate::Ry(..) => OP_RY,
            Gate::Rz(..) => OP_RZ,
            Gate::U1(..) => OP_U1,
            Gate::U2(..) => OP_U2,
            Gate::U3(..) => OP_U3,
            Gate::Cx(..) => OP_CX,
            Gate::Cz(..) => OP_CZ,
            Gate::Swap(..) => OP_SWAP,
            Gate::Ccx(..) => OP_CCX,
            Gate::Measure { .. } => OP_MEASURE,
            Gate::Reset(_) => OP_RESET,
            Gate::Barrier { .. } => OP_BARRIER,
        }
    }

    /// The qubits the gate acts on, in operand order (a barrier's in index order).
    pub fn qubits(&self) -> QubitList {
        match *self {
            Gate::H(q)
            | Gate::X(q)
            | Gate::Y(q)
            | Gate::Z(q)
            | Gate::S(q)
            | Gate::Sdg(q)
            | Gate::T(q)
            | Gate::Tdg(q)
            | Gate::Rx(q, _)
            | Gate::Ry(q, _)
            | Gate::Rz(q, _)
            | Gate::U1(q, _)
            | Gate::U2(q, ..)
            | Gate::U3(q, ..)
            | Gate::Reset(q)
            | Gate::Measure { qubit: q, .. } => QubitList::of(&[q]),
            Gate::Cx(a, b) | Gate::Cz(a, b) | Gate::Swap(a, b) => QubitList::of(&[a, b]),
            Gate::Ccx(a, b, c) => QubitList::of(&[a, b, c]),
            Gate::Barrier { mask } => {
                let mut l = QubitList::of(&[]);
                for q in 0..MAX_QUBITS {
                    if mask & (1 << q) != 0 {
                        l.buf[l.len] = q;
                        l.len += 1;
                    }
                }
                l
            }
        }
    }

    /// True for the 2- and 3-qubit gates.
    pub fn is_entangling(&self) -> bool {
        matches!(
            self,
            Gate::Cx(..) | Gate::Cz(..) | Gate::Swap(..) | Gate::Ccx(..)
        )
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.opcode());
        match self {
            Gate::Measure { qubit, clbit } => out.extend_from_slice(&[*qubit, *clbit]),
            Gate::Barrier { mask } => out.extend_from_slice(&mask.to_le_bytes()),
            _ => out.extend_from_slice(self.qubits().as_slice()),
        }
        match self {
            Gate::Rx(_, a) | Gate::Ry(_, a) | Gate::Rz(_, a) | Gate::U1(_, a) => {
                wire::angle(out, a)
            }
            Gate::U2(_, a, b) => [a, b].iter().for_each(|a| wire::angle(out, a)),
            Gate::U3(_, a, b, c) => [a, b, c].iter().for_each(|a| wire::angle(out, a)),
            _ => {}
        }
    }

    fn decode(r: &mut Reader<'_>, index: usize) -> Result<Gate, JobError> {
        let op = r.u8("gate opcode")?;
        let q = |r: &mut Reader<'_>| r.u8("qubit operand");
        Ok(match op {
            OP_H => Gate::H(q(r)?),
            OP_X => Gate::X(q(r)?),
            OP_Y => Gate::Y(q(r)?),
            OP_Z => Gate::Z(q(r)?),
            OP_S => Gate::S(q(r)?),
            OP_SDG => Gate::Sdg(q(r)?),
            OP_T => Gate::T(q(r)?),
            OP_TDG => Gate::Tdg(q(r)?),
            OP_RX => Gate::Rx(q(r)?, r.angle()?),
            OP_RY => Gate::Ry(q(r)?, r.angle()?),
            OP_RZ => Gate::Rz(q(r)?, r.angle()?),
            OP_U1 => Gate::U1(q(r)?, r.angle()?),
            OP_U2 => Gate::U2(q(r)?, r.angle()?, r.angle()?),
            OP_U3 => Gate::U3(q(r)?, r.angle()?, r.angle()?, r.angle()?),
            OP_CX => Gate::Cx(q(r)?, q(r)?),
            OP_CZ => Gate::Cz(q(r)?, q(r)?),
            OP_SWAP => Gate::Swap(q(r)?, q(r)?),
            OP_CCX => Gate::Ccx(q(r)?, q(r)?, q(r)?),
            OP_MEASURE => Gate::Measure {
                qubit: q(r)?,
                clbit: r.u8("classical bit operand")?,
            },
            OP_RESET => Gate::Reset(q(r)?),
            OP_BARRIER => Gate::Barrier {
                mask: r.u32("barrier mask")?,
            },
            opcode => {
                return Err(JobError::UnknownOpcode {
                    opcode,
                    gate: index,
                });
            }
        })
    }
}

/// A Q job: a circuit and how many times to run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Circuit {
    /// Qubits `0..qubits`.
    pub qubits: u8,
    /// Classical bits `0..clbits`; bit `i` of a result bitstring is clbit `i`.
    pub clbits: u8,
    /// Times the circuit is run and measured.
    pub shots: u32,
    /// The operations, in order.
    pub gates: Vec<Gate>,
}

const CIRCUIT_MAGIC: [u8; 2] = *b"Qc";
const RESULT_MAGIC: [u8; 2] = *b"Qr";

impl Circuit {
    /// The Bell pair: H on qubit 0, CNOT 0→1, both measured (`00` and `11`, about
    /// half each). The circuit the simulator, the console and the tests run.
    pub fn bell(shots: u32) -> Circuit {
        Circuit {
            qubits: 2,
            clbits: 2,
            shots,
            gates: vec![
                Gate::H(0),
                Gate::Cx(0, 1),
                Gate::Measure { qubit: 0, clbit: 0 },
                Gate::Measure { qubit: 1, clbit: 1 },
            ],
        }
    }

    /// Checks every limit and operand; `max_qubits` is the device's (≤ [`MAX_QUBITS`]).
    pub fn validate(&self, max_qubits: u8) -> Result<(), JobError> {
        let max = max_qubits.min(MAX_QUBITS);
        if self.qubits == 0 {
            return Err(JobError::NoQubits);
        }
        if self.qubits > max {
            return Err(JobError::TooManyQubits {
                qubits: self.qubits,
                max,
            });
        }
        if self.clbits > MAX_CLBITS {
            return Err(JobError::TooManyClbits {
                clbits: self.clbits,
                max: MAX_CLBITS,
            });
        }
        if self.shots == 0 || self.shots > MAX_SHOTS {
            return Err(JobError::ShotsOutOfRange { shots: self.shots });
        }
        if self.gates.len() > MAX_GATES {
            return Err(JobError::TooManyGates {
                gates: self.gates.len(),
                max: MAX_GATES,
            });
        }
        self.gates
            .iter()
            .enumerate()
            .try_for_each(|(i, g)| self.validate_gate(i, g))
    }

    fn validate_gate(&self, gate: usize, g: &Gate) -> Result<(), JobError> {
        if let Gate::Barrier { mask } = *g {
            if mask == 0 {
                return Err(JobError::EmptyBarrier { gate });
            }
            // The highest set bit names the first out-of-range qubit.
            let top = (u32::BITS - 1 - mask.leading_zeros()) as u8;
            if top >= self.qubits {
                return Err(JobError::QubitOutOfRange {
                    gate,
                    qubit: top,
                    qubits: self.qubits,
                });
            }
            return Ok(());
        }
        let qs = g.qubits();
        let qs = qs.as_slice();
        for (k, &qubit) in qs.iter().enumerate() {
            if qubit >= self.qubits {
                return Err(JobError::QubitOutOfRange {
                    gate,
                    qubit,
                    qubits: self.qubits,
                });
            }
            if qs[..k].contains(&qubit) {
                return Err(JobError::DuplicateOperand { gate, qubit });
            }
        }
        if let Gate::Measure { clbit, .. } = *g
            && clbit >= self.clbits
        {
            return Err(JobError::ClbitOutOfRange {
                gate,
                clbit,
                clbits: self.clbits,
            });
        }
        Ok(())
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11 + self.gates.len() * 4);
        wire::header(&mut out, CIRCUIT_MAGIC);
        out.push(self.qubits);
        out.push(self.clbits);
        out.extend_from_slice(&self.shots.to_le_bytes());
        // validate() bounds the count by MAX_GATES, which fits a u16; an invalid
        // circuit still encodes a count its decoder will refuse.
        let n = u16::try_from(self.gates.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        self.gates.iter().for_each(|g| g.encode(&mut out));
        out
    }

    /// Parses and validates (against [`MAX_QUBITS`]) a wire-form circuit.
    pub fn decode(bytes: &[u8]) -> Result<Circuit, JobError> {
        let mut r = Reader::new(bytes);
        r.header(CIRCUIT_MAGIC)?;
        let qubits = r.u8("qubit count")?;
        let clbits = r.u8("classical bit count")?;
        let shots = r.u32("shots")?;
        let n = usize::from(r.u16("gate count")?);
        if n > MAX_GATES {
            return Err(JobError::TooManyGates {
                gates: n,
                max: MAX_GATES,
            });
        }
        r.expect_items(n, 2, "gates")?; // every gate is at least 2 bytes
        let mut gates = Vec::with_capacity(n);
        for i in 0..n {
            gates.push(Gate::decode(&mut r, i)?);
        }
        r.finish()?;
        let c = Circuit {
            qubits,
            clbits,
            shots,
            gates,
        };
        c.validate(MAX_QUBITS)?;
        Ok(c)
    }

    /// Circuit depth in layers (see the module doc).
    pub fn depth(&self) -> u32 {
        let nq = usize::from(self.qubits);
        let mut level = vec![0u32; nq + usize::from(self.clbits)];
        let mut depth = 0;
        for g in &self.gates {
            let qs = g.qubits();
            let mut wires: Vec<usize> = qs.as_slice().iter().map(|&q| usize::from(q)).collect();
            if let Gate::Measure { clbit, .. } = *g {
                wires.push(nq + usize::from(clbit));
            }
            let wires: Vec<usize> = wires.into_iter().filter(|&w| w < level.len()).collect();
            let top = wires.iter().map(|&w| level[w]).max().unwrap_or(0);
            let new = if matches!(g, Gate::Barrier { .. }) {
                top
            } else {
                top + 1
            };
            wires.iter().for_each(|&w| level[w] = new);
            depth = depth.max(new);
        }
        depth
    }

    /// The number of 2- and 3-qubit gates.
    pub fn entangling_ops(&self) -> u32 {
        self.gates.iter().filter(|g| g.is_entangling()).count() as u32
    }

    /// Measurements of entangled qubits followed by further gates (see the module doc).
    pub fn teleportations(&self) -> u32 {
        // Index of the last gate that is neither a measure nor a barrier.
        let last_op = self
            .gates
            .iter()
            .rposition(|g| !matches!(g, Gate::Measure { .. } | Gate::Barrier { .. }));
        let mut entangled = 0u32; // bit q: qubit q entangled since its last reset/measure
        let mut count = 0;
        for (i, g) in self.gates.iter().enumerate() {
            match *g {
                Gate::Measure { qubit, .. } | Gate::Reset(qubit) if qubit < 32 => {
                    let bit = 1u32 << qubit;
                    let is_measure = matches!(g, Gate::Measure { .. });
                    if is_measure && entangled & bit != 0 && last_op.is_some_and(|l| l > i) {
                        count += 1;
                    }
                    entangled &= !bit;
                }
                _ if g.is_entangling() => {
                    for &q in g.qubits().as_slice() {
                        entangled |= 1u32.checked_shl(u32::from(q)).unwrap_or(0);
                    }
                }
                _ => {}
            }
        }
        count
    }
}

/// What a Q device returns for a [`Circuit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QResult {
    /// `(bitstring, count)` with bit `i` = classical bit `i`, strictly increasing
    /// by bitstring, every count nonzero, counts adding up to `shots`.
    pub counts: Vec<(u64, u32)>,
    pub shots: u32,
    pub entangling_ops: u32,
    pub teleportations: u32,
    pub depth: u32,
}

impl QResult {
    /// Checks the result on its own: sorted unique entries, nonzero counts that add
    /// up to the shots, shots in range.
    pub fn validate(&self) -> Result<(), JobError> {
        if self.shots == 0 || self.shots > MAX_SHOTS {
            return Err(JobError::ShotsOutOfRange { shots: self.shots });
        }
        if self.counts.len() > self.shots as usize {
            return Err(JobError::TooManyCounts {
                entries: self.counts.len(),
                shots: self.shots,
            });
        }
        let mut sum = 0u64;
        for (i, &(bits, n)) in self.counts.iter().enumerate() {
            if n == 0 {
                return Err(JobError::ZeroCount { index: i });
            }
            if i > 0 && self.counts[i - 1].0 >= bits {
                return Err(JobError::CountsNotSorted { index: i });
            }
            sum += u64::from(n);
        }
        if sum != u64::from(self.shots) {
            return Err(JobError::CountsSumMismatch {
                sum,
                shots: self.shots,
            });
        }
        Ok(())
    }

    /// Checks the result against the job it answers: [`validate`](Self::validate),
    /// then the bitstrings fit the classical bits and the statistics match.
    pub fn check_against(&self, c: &Circuit) -> Result<(), JobError> {
        self.validate()?;
        for &(bitstring, _) in &self.counts {
            if c.clbits < 64 && bitstring >> c.clbits != 0 {
                return Err(JobError::BitstringOutOfRange {
                    bitstring,
                    clbits: c.clbits,
                });
            }
        }
        let fields = [
            ("shots", c.shots, self.shots),
            ("depth", c.depth(), self.depth),
            ("entangling_ops", c.entangling_ops(), self.entangling_ops),
            ("teleportations", c.teleportations(), self.teleportations),
        ];
        for (field, expected, got) in fields {
            if expected != got {
                return Err(JobError::ResultMismatch {
                    field,
                    expected: u64::from(expected),
                    got: u64::from(got),
                });
            }
        }
        Ok(())
    }

    /// The wire form: header, the four statistics, an entry count and the entries.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(23 + self.counts.len() * 12);
        wire::header(&mut out, RESULT_MAGIC);
        for v in [
            self.shots,
            self.entangling_ops,
            self.teleportations,
            self.depth,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let n = u32::try_from(self.counts.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for &(bits, count) in &self.counts {
            out.extend_from_slice(&bits.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }

    /// Parses and validates a wire-form result.
    pub fn decode(bytes: &[u8]) -> Result<QResult, JobError> {
        let mut r = Reader::new(bytes);
        r.header(RESULT_MAGIC)?;
        let shots = r.u32("shots")?;
        let entangling_ops = r.u32("entangling ops")?;
        let teleportations = r.u32("teleportations")?;
        let depth = r.u32("depth")?;
        let n = r.u32("entry count")? as usize;
        r.expect_items(n, 12, "count entries")?;
        let mut counts = Vec::with_capacity(n);
        for _ in 0..n {
            counts.push((r.u64("bitstring")?, r.u32("count")?));
        }
        r.finish()?;
        let q = QResult {
            counts,
            shots,
            entangling_ops,
            teleportations,
            depth,
        };
        q.validate()?;
        Ok(q)
    }
}
