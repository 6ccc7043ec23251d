//! OpenQASM 2.0 → [`Circuit`], with exact angles.
//!
//! Accepts `OPENQASM 2.0;`, `include "qelib1.inc";`, `qreg`/`creg` (several
//! registers are flattened in declaration order), the gates of [`GATES`] (the
//! `qelib1.inc` subset the device runs, plus the `U` and `CX` builtins), `measure`,
//! `reset`, `barrier`, `//` comments, and register broadcasting (`h q;`,
//! `cx q, r;`, `measure q -> c;`).
//!
//! Parameters are evaluated exactly into [`Angle`]: `+ - * /`, unary minus,
//! parentheses, `pi`, integer and decimal literals (`0.25`, `1e-3`). `sin`, `cos`,
//! `tan`, `exp`, `ln`, `sqrt` and `^` have no exact form and are refused, as is any
//! product with a π² term.
//!
//! Refused with a clear error: user-defined `gate` definitions (not expanded: the
//! device runs the fixed gate set, and inlining would make a job's gate count depend
//! on definitions it does not carry), `opaque`, `if`, other includes. Every error
//! carries the line and column where it was found.

use xdv_accel::job::{Angle, Circuit, Gate, JobError, MAX_CLBITS, MAX_GATES, MAX_QUBITS};

/// A parse failure at a position in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QasmError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for QasmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.col, self.message
        )
    }
}

impl std::error::Error for QasmError {}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// A numeric literal, kept as text and converted exactly.
    Num(String),
    Str(String),
    Sym(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

const SYMBOLS: [&str; 14] = [
    "->", "==", ";", ",", "(", ")", "[", "]", "{", "}", "+", "-", "*", "/",
];

fn lex(src: &str) -> Result<Vec<Token>, QasmError> {
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0, 1, 1);
    let mut out = Vec::new();
    let err = |line, col, m: String| QasmError {
        line,
        col,
        message: m,
    };
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0) = (line, col);
        let mut advance = |n: usize, i: &mut usize| {
            for _ in 0..n {
                if chars[*i] == '\n' {
                    line += 1;
                    col = 1;
                } else {
                    col += 1;
                }
                *i += 1;
            }
        };
        if c.is_whitespace() {
            advance(1, &mut i);
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            let n = chars[i..].iter().take_while(|&&c| c != '\n').count();
            advance(n, &mut i);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let n = chars[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .count();
            let s: String = chars[i..i + n].iter().collect();
            advance(n, &mut i);
            out.push(Token {
                tok: Tok::Ident(s),
                line: l0,
                col: c0,
            });
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let mut n = chars[i..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == '.')
                .count();
            if matches!(chars.get(i + n), Some('e' | 'E')) {
                let sign = usize::from(matches!(chars.get(i + n + 1), Some('+' | '-')));
                let digits = chars[(i + n + 1 + sign).min(chars.len())..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return Err(err(l0, c0, "malformed exponent in number".into()));
                }
                n += 1 + sign + digits;
            }
            let s: String = chars[i..i + n].iter().collect();
            advance(n, &mut i);
            out.push(Token {
                tok: Tok::Num(s),
                line: l0,
                col: c0,
            });
        } else if c == '"' {
            let n = chars[i + 1..]
                .iter()
                .take_while(|&&c| c != '"' && c != '\n')
                .count();
            if chars.get(i + 1 + n) != Some(&'"') {
                return Err(err(l0, c0, "unterminated string".into()));
            }
            let s: String = chars[i + 1..i + 1 + n].iter().collect();
            advance(n + 2, &mut i);
            out.push(Token {
                tok: Tok::Str(s),
                line: l0,
                col: c0,
            });
        } else if let Some(sym) = SYMBOLS.iter().find(|s| {
            s.chars()
                .enumerate()
                .all(|(k, sc)| chars.get(i + k) == Some(&sc))
        }) {
            advance(sym.len(), &mut i);
            out.push(Token {
                tok: Tok::Sym(sym),
                line: l0,
                col: c0,
            });
        } else if c == '^' {
            return Err(err(
                l0,
                c0,
                "'^' has no exact form (angles are exact)".into(),
            ));
        } else {
            return Err(err(l0, c0, format!("unexpected character '{c}'")));
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

/// Converts a decimal literal to an exact angle (`digits · 10^exp`).
fn number(text: &str) -> Result<Angle, String> {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(k) => (
            &text[..k],
            text[k + 1..]
                .parse::<i32>()
                .map_err(|_| "malformed exponent")?,
        ),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if frac.contains('.') {
        return Err(format!("malformed number '{text}'"));
    }
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    let exp10 = exp - frac.len() as i32 + (digits.len() - trimmed.len()) as i32;
    if trimmed.is_empty() {
        return Ok(Angle::ZERO);
    }
    let value: u64 = trimmed
        .parse()
        .map_err(|_| format!("number '{text}' too long for an exact angle"))?;
    Angle::decimal(value, exp10).map_err(|e| format!("number '{text}': {e}"))
}

type GateCtor = fn(&[u8], &[Angle]) -> Gate;

/// The gate set: name, parameter count, qubit count, constructor.
pub const GATES: [(&str, usize, usize, GateCtor); 21] = [
    ("h", 0, 1, |q, _| Gate::H(q[0])),
    ("x", 0, 1, |q, _| Gate::X(q[0])),
    ("y", 0, 1, |q, _| Gate::Y(q[0])),
    ("z", 0, 1, |q, _| Gate::Z(q[0])),
    ("s", 0, 1, |q, _| Gate::S(q[0])),
    ("sdg", 0, 1, |q, _| Gate::Sdg(q[0])),
    ("t", 0, 1, |q, _| Gate::T(q[0])),
    ("tdg", 0, 1, |q, _| Gate::Tdg(q[0])),
    ("rx", 1, 1, |q, a| Gate::Rx(q[0], a[0])),
    ("ry", 1, 1, |q, a| Gate::Ry(q[0], a[0])),
    ("rz", 1, 1, |q, a| Gate::Rz(q[0], a[0])),
    ("u1", 1, 1, |q, a| Gate::U1(q[0], a[0])),
    ("u2", 2, 1, |q, a| Gate::U2(q[0], a[0], a[1])),
    ("u3", 3, 1, |q, a| Gate::U3(q[0], a[0], a[1], a[2])),
    ("U", 3, 1, |q, a| Gate::U3(q[0], a[0], a[1], a[2])),
    ("cx", 0, 2, |q, _| Gate::Cx(q[0], q[1])),
    ("CX", 0, 2, |q, _| Gate::Cx(q[0], q[1])),
    ("cz", 0, 2, |q, _| Gate::Cz(q[0], q[1])),
    ("swap", 0, 2, |q, _| Gate::Swap(q[0], q[1])),
    ("ccx", 0, 3, |q, _| Gate::Ccx(q[0], q[1], q[2])),
    ("reset", 0, 1, |q, _| Gate::Reset(q[0])),
];

struct Reg {
    name: String,
    offset: u8,
    size: u8,
}

/// An operand: a whole register or one of its bits (flattened indices).
enum Arg {
    Whole(Vec<u8>),
    One(u8),
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    qregs: Vec<Reg>,
    cregs: Vec<Reg>,
    qubits: u8,
    clbits: u8,
    gates: Vec<Gate>,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn err_at<T>(&self, t: &Token, m: impl Into<String>) -> Result<T, QasmError> {
        Err(QasmError {
            line: t.line,
            col: t.col,
            message: m.into(),
        })
    }

    fn err<T>(&self, m: impl Into<String>) -> Result<T, QasmError> {
        self.err_at(self.peek(), m)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn eat(&mut self, sym: &str) -> bool {
        if self.peek().tok == Tok::Sym(SYMBOLS.iter().find(|s| **s == sym).copied().unwrap_or("")) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), QasmError> {
        if self.eat(sym) {
            Ok(())
        } else {
            let found = describe(&self.peek().tok);
            self.err(format!("expected '{sym}', found {found}"))
        }
    }

    fn ident(&mut self) -> Result<String, QasmError> {
        match self.peek().tok.clone() {
            Tok::Ident(s) => {
                self.pos += 1;
                Ok(s)
            }
            t => self.err(format!("expected a name, found {}", describe(&t))),
        }
    }

    fn integer(&mut self) -> Result<u32, QasmError> {
        let t = self.next();
        match &t.tok {
            Tok::Num(s) if s.bytes().all(|b| b.is_ascii_digit()) => match s.parse() {
                Ok(v) => Ok(v),
                Err(_) => self.err_at(&t, format!("integer '{s}' too large")),
            },
            other => self.err_at(
                &t,
                format!("expected an integer, found {}", describe(other)),
            ),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Num(s) => format!("number '{s}'"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::Eof => "end of input".into(),
    }
}

/// Parses OpenQASM 2.0 source into a validated circuit of `shots` shots.
pub fn parse(src: &str, shots: u32) -> Result<Circuit, QasmError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        qregs: Vec::new(),
        cregs: Vec::new(),
        qubits: 0,
        clbits: 0,
        gates: Vec::new(),
    };
    p.header()?;
    while p.peek().tok != Tok::Eof {
        p.statement()?;
    }
    let end = p.peek().clone();
    let gates = std::mem::take(&mut p.gates);
    let c = Circuit {
        qubits: p.qubits,
        clbits: p.clbits,
        shots,
        gates,
    };
    c.validate(MAX_QUBITS)
        .or_else(|e: JobError| p.err_at(&end, format!("invalid circuit: {e}")))?;
    Ok(c)
}

impl Parser {
    fn header(&mut self) -> Result<(), QasmError> {
        if self.peek().tok == Tok::Ident("OPENQASM".into()) {
            self.pos += 1;
            let t = self.next();
            if t.tok != Tok::Num("2.0".into()) && t.tok != Tok::Num("2".into()) {
                return self.err_at(
                    &t,
                    format!("unsupported OpenQASM version {}", describe(&t.tok)),
                );
            }
            self.expect(";")?;
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<(), QasmError> {
        let start = self.peek().clone();
        let name = self.ident()?;
        match name.as_str() {
            "include" => {
                let t = self.next();
                match &t.tok {
                    Tok::Str(f) if f == "qelib1.inc" => {}
                    Tok::Str(f) => {
                        return self
                            .err_at(&t, format!("cannot include \"{f}\" (only \"qelib1.inc\")"));
                    }
                    other => {
                        return self.err_at(
                            &t,
                            format!("expected a file name, found {}", describe(other)),
                        );
                    }
                }
                self.expect(";")
            }
            "qreg" | "creg" => self.declare(name == "qreg", &start),
            "gate" => self.err_at(
                &start,
                "user-defined gate definitions are not supported (use the qelib1.inc gates)",
            ),
            "opaque" => self.err_at(&start, "opaque gates are not supported"),
            "if" => self.err_at(&start, "classically controlled 'if' is not supported"),
            "OPENQASM" => self.err_at(&start, "OPENQASM header must be the first statement"),
            "barrier" => {
                let args = self.args(true)?;
                let mut mask = 0u32;
                for a in args {
                    match a {
                        Arg::Whole(v) => v.iter().for_each(|&q| mask |= 1 << q),
                        Arg::One(q) => mask |= 1 << q,
                    }
                }
                self.expect(";")?;
                self.push(&start, Gate::Barrier { mask })
            }
            "measure" => {
                let q = self.arg(true)?;
                self.expect("->")?;
                let c = self.arg(false)?;
                self.expect(";")?;
                let pairs = self.broadcast(&start, &[q, c])?;
                pairs.into_iter().try_for_each(|v| {
                    self.push(
                        &start,
                        Gate::Measure {
                            qubit: v[0],
                            clbit: v[1],
                        },
                    )
                })
            }
            _ => self.gate(name, &start),
        }
    }

    fn push(&mut self, at: &Token, g: Gate) -> Result<(), QasmError> {
        if self.gates.len() >= MAX_GATES {
            return self.err_at(at, format!("more than {MAX_GATES} gates"));
        }
        self.gates.push(g);
        Ok(())
    }

    fn declare(&mut self, quantum: bool, start: &Token) -> Result<(), QasmError> {
        let name = self.ident()?;
        self.expect("[")?;
        let size_tok = self.peek().clone();
        let size = self.integer()?;
        self.expect("]")?;
        self.expect(";")?;
        if self.qregs.iter().chain(&self.cregs).any(|r| r.name == name) {
            return self.err_at(start, format!("register '{name}' declared twice"));
        }
        let (total, max, kind) = if quantum {
            (u32::from(self.qubits), MAX_QUBITS, "qubits")
        } else {
            (u32::from(self.clbits), MAX_CLBITS, "classical bits")
        };
        if size == 0 {
            return self.err_at(&size_tok, format!("register '{name}' has size 0"));
        }
        if total + size > u32::from(max) {
            return self.err_at(
                &size_tok,
                format!("too many {kind}: {} declared, at most {max}", total + size),
            );
        }
        let reg = Reg {
            name,
            offset: total as u8,
            size: size as u8,
        };
        if quantum {
            self.qubits += reg.size;
            self.qregs.push(reg);
        } else {
            self.clbits += reg.size;
            self.cregs.push(reg);
        }
        Ok(())
    }

    fn arg(&mut self, quantum: bool) -> Result<Arg, QasmError> {
        let t = self.peek().clone();
        let name = self.ident()?;
        let regs = if quantum { &self.qregs } else { &self.cregs };
        let Some(reg) = regs.iter().find(|r| r.name == name) else {
            let kind = if quantum { "quantum" } else { "classical" };
            return self.err_at(&t, format!("undeclared {kind} register '{name}'"));
        };
        let (offset, size) = (reg.offset, reg.size);
        if !self.eat("[") {
            return Ok(Arg::Whole((offset..offset + size).collect()));
        }
        let it = self.peek().clone();
        let index = self.integer()?;
        self.expect("]")?;
        if index >= u32::from(size) {
            return self.err_at(
                &it,
                format!("index {index} out of range for register '{name}' of size {size}"),
            );
        }
        Ok(Arg::One(offset + index as u8))
    }

    fn args(&mut self, quantum: bool) -> Result<Vec<Arg>, QasmError> {
        let mut v = vec![self.arg(quantum)?];
        while self.eat(",") {
            v.push(self.arg(quantum)?);
        }
        Ok(v)
    }

    /// Expands register operands: all whole registers must have one size `n`; the
    /// gate is applied `n` times with single bits repeated.
    fn broadcast(&self, at: &Token, args: &[Arg]) -> Result<Vec<Vec<u8>>, QasmError> {
        let mut n = None;
        for a in args {
            if let Arg::Whole(v) = a {
                match n {
                    None => n = Some(v.len()),
                    Some(m) if m != v.len() => {
                        return self.err_at(
                            at,
                            format!("registers of sizes {m} and {} in one statement", v.len()),
                        );
                    }
                    _ => {}
                }
            }
        }
        Ok((0..n.unwrap_or(1))
            .map(|i| {
                args.iter()
                    .map(|a| match a {
                        Arg::Whole(v) => v[i],
                        Arg::One(q) => *q,
                    })
                    .collect()
            })
            .collect())
    }

    fn gate(&mut self, name: String, start: &Token) -> Result<(), QasmError> {
        let Some(&(_, nparams, nqubits, ctor)) = GATES.iter().find(|g| g.0 == name) else {
            return self.err_at(start, format!("unknown gate '{name}'"));
        };
        let mut params = Vec::new();
        if self.eat("(") && !self.eat(")") {
            params.push(self.expr()?);
            while self.eat(",") {
                params.push(self.expr()?);
            }
            self.expect(")")?;
        }
        if params.len() != nparams {
            return self.err_at(
                start,
                format!(
                    "gate '{name}' takes {nparams} parameters, got {}",
                    params.len()
                ),
            );
        }
        let args = self.args(true)?;
        if args.len() != nqubits {
            return self.err_at(
                start,
                format!("gate '{name}' takes {nqubits} qubits, got {}", args.len()),
            );
        }
        self.expect(";")?;
        for qs in self.broadcast(start, &args)? {
            if let Some(k) = (1..qs.len()).find(|&k| qs[..k].contains(&qs[k])) {
                return self.err_at(start, format!("gate '{name}' uses qubit {} twice", qs[k]));
            }
            self.push(start, ctor(&qs, &params))?;
        }
        Ok(())
    }

    fn angle_err<T>(&self, at: &Token, e: JobError) -> Result<T, QasmError> {
        self.err_at(at, e.to_string())
    }

    /// `expr := term (('+' | '-') term)*`
    fn expr(&mut self) -> Result<Angle, QasmError> {
        let mut v = self.term()?;
        loop {
            let at = self.peek().clone();
            let r = if self.eat("+") {
                let t = self.term()?;
                v.checked_add(t)
            } else if self.eat("-") {
                let t = self.term()?;
                v.checked_sub(t)
            } else {
                return Ok(v);
            };
            v = r.or_else(|e| self.angle_err(&at, e))?;
        }
    }

    /// `term := unary (('*' | '/') unary)*`
    fn term(&mut self) -> Result<Angle, QasmError> {
        let mut v = self.unary()?;
        loop {
            let at = self.peek().clone();
            let r = if self.eat("*") {
                let t = self.unary()?;
                v.checked_mul(t)
            } else if self.eat("/") {
                let t = self.unary()?;
                v.checked_div(t)
            } else {
                return Ok(v);
            };
            v = r.or_else(|e| self.angle_err(&at, e))?;
        }
    }

    fn unary(&mut self) -> Result<Angle, QasmError> {
        let at = self.peek().clone();
        if self.eat("-") {
            let v = self.unary()?;
            return v.checked_neg().or_else(|e| self.angle_err(&at, e));
        }
        if self.eat("+") {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Angle, QasmError> {
        let t = self.next();
        match &t.tok {
            Tok::Num(s) => number(s).or_else(|m| self.err_at(&t, m)),
            Tok::Ident(s) if s == "pi" => Ok(Angle::PI),
            Tok::Ident(s) if ["sin", "cos", "tan", "exp", "ln", "sqrt"].contains(&s.as_str()) => {
                self.err_at(&t, format!("'{s}' has no exact form (angles are exact)"))
            }
            Tok::Ident(s) => self.err_at(&t, format!("unknown identifier '{s}' in expression")),
            Tok::Sym("(") => {
                let v = self.expr()?;
                self.expect(")")?;
                Ok(v)
            }
            other => self.err_at(
                &t,
                format!("expected an expression, found {}", describe(other)),
            ),
        }
    }
}

/// Writes a circuit as OpenQASM 2.0 (one `q` and one `c` register), the inverse of
/// [`parse`] up to register names.
pub fn to_qasm(c: &Circuit) -> String {
    use std::fmt::Write;
    let mut s = String::from("OPENQASM 2.0;\ninclude \"qelib1.inc\";\n");
    let _ = writeln!(s, "qreg q[{}];", c.qubits);
    if c.clbits > 0 {
        let _ = writeln!(s, "creg c[{}];", c.clbits);
    }
    for g in &c.gates {
        let qs: Vec<String> = g
            .qubits()
            .as_slice()
            .iter()
            .map(|q| format!("q[{q}]"))
            .collect();
        let params: Vec<String> = match g {
            Gate::Rx(_, a) | Gate::Ry(_, a) | Gate::Rz(_, a) | Gate::U1(_, a) => {
                vec![a.to_string()]
            }
            Gate::U2(_, a, b) => vec![a.to_string(), b.to_string()],
            Gate::U3(_, a, b, d) => vec![a.to_string(), b.to_string(), d.to_string()],
            _ => vec![],
        };
        let _ = match g {
            Gate::Measure { qubit, clbit } => writeln!(s, "measure q[{qubit}] -> c[{clbit}];"),
            _ if params.is_empty() => writeln!(s, "{} {};", g.name(), qs.join(",")),
            _ => writeln!(s, "{}({}) {};", g.name(), params.join(","), qs.join(",")),
        };
    }
    s
}

#[cfg(test)]
mod tests;
