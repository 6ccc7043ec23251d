//! The body of the `sandbox` fuzz target (`fuzz/fuzz_targets/sandbox.rs`), kept in
//! the crate so the cargo-fuzz target and the stable smoke test run exactly the
//! same checks.
//!
//! The fuzz input is decoded, never trusted: its first byte picks how the module is
//! made (the raw bytes, or one of the bundled modules with byte overwrites, a
//! splice, a truncation or an insertion driven by the rest of the input), the next
//! bytes choose budget, input and guards. Whatever comes out goes through
//! [`validate`], and a module that validates runs twice with a small budget.

use alloc::vec::Vec;
use xdv_sched::WorkOutcome;
use xdv_types::{CapabilityId, Priority, TenantId};

use crate::{
    BUILTINS, MAX_LOG_LINE_BYTES, MAX_LOG_LINES, MAX_OUTPUT_BYTES, TaskModule, run, validate,
};

/// Largest budget a fuzz run gets, ticks (keeps one execution in milliseconds).
pub const FUZZ_MAX_BUDGET_TICKS: u64 = 64;

/// Reads the fuzz input front to back; past its end every read is 0.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn rest(&self) -> &[u8] {
        self.data.get(self.at..).unwrap_or(&[])
    }
}

/// The module a fuzz input describes (see the module documentation).
pub fn module_from(data: &[u8]) -> Vec<u8> {
    let mut inp = Input { data, at: 0 };
    let mode = inp.byte();
    if mode.is_multiple_of(8) || BUILTINS.is_empty() {
        return inp.rest().to_vec();
    }
    let seed = BUILTINS[usize::from(inp.byte()) % BUILTINS.len()].wasm;
    let mut m = seed.to_vec();
    match mode % 8 {
        // Overwrite up to 8 bytes at chosen offsets.
        1..=3 => {
            for _ in 0..(1 + inp.byte() % 8) {
                let at = usize::from(inp.u16()) % m.len().max(1);
                let v = inp.byte();
                if let Some(b) = m.get_mut(at) {
                    *b = v;
                }
            }
        }
        // Truncate.
        4 => {
            let keep = usize::from(inp.u16()) % (m.len() + 1);
            m.truncate(keep);
        }
        // Insert the rest of the input at an offset.
        5 => {
            let at = usize::from(inp.u16()) % (m.len() + 1);
            let tail = m.split_off(at);
            m.extend_from_slice(inp.rest());
            m.extend_from_slice(&tail);
        }
        // Splice: a prefix of the seed and the rest of the input.
        6 => {
            let keep = usize::from(inp.u16()) % (m.len() + 1);
            m.truncate(keep);
            m.extend_from_slice(inp.rest());
        }
        // Unchanged seed, with fuzzed budget/input/guards below.
        _ => {}
    }
    m
}

/// Feeds `data` to validation and, if the module validates, runs it twice with a
/// budget of at most [`FUZZ_MAX_BUDGET_TICKS`]. Panics only if the sandbox panics or
/// breaks an invariant: the run uses at most its budget (exactly the budget when
/// it is exceeded), output and log stay within their limits (a log line: at most
/// [`MAX_LOG_LINE_BYTES`] bytes), and the two runs are identical (determinism).
pub fn fuzz_check(data: &[u8]) {
    let module = module_from(data);
    // Parameters come from the end of the input, so they vary independently of the
    // bytes the module is made from.
    let n = data.len();
    let tail = |i: usize| if n > i { data[n - 1 - i] } else { 0 };
    let budget = 1 + u64::from(tail(0)) % FUZZ_MAX_BUDGET_TICKS;
    let input: Vec<u8> = (0..usize::from(tail(1) % 16))
        .map(|i| tail(2 + i))
        .collect();
    let guards = if tail(1) & 0x80 != 0 {
        alloc::vec![crate::CAP_ECHO_LEN]
    } else if tail(1) & 0x40 != 0 {
        alloc::vec![CapabilityId(u32::from(tail(2)))]
    } else {
        Vec::new()
    };
    let task = TaskModule {
        tenant: TenantId(1),
        module,
        input,
        budget_ticks: budget,
        priority: Priority::Low,
        guards,
    };
    let Ok(validated) = validate(&task) else {
        return;
    };
    let first = run(&validated, budget, 7);
    assert!(
        first.ticks_used <= budget,
        "ticks {} over budget {budget}",
        first.ticks_used
    );
    if first.outcome == WorkOutcome::BudgetExceeded {
        assert_eq!(first.ticks_used, budget, "budget exceeded early");
    }
    assert!(first.output.len() <= MAX_OUTPUT_BYTES, "output over limit");
    assert!(first.log.len() <= MAX_LOG_LINES, "too many log lines");
    assert!(
        first.log.iter().all(|l| l.len() <= MAX_LOG_LINE_BYTES),
        "log line over limit"
    );
    let second = run(&validated, budget, 7);
    assert_eq!(first, second, "two runs of the same task differ");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's body over deterministic inputs of every mode: must not
    /// panic, and must actually reach execution (not only validation errors).
    #[test]
    fn fuzz_check_smoke() {
        let mut x: u64 = 0x5eed_f022_0000_0001;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut validated = 0;
        for i in 0..1500u64 {
            let len = 3 + (next() % 64) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            data[0] = (i % 8) as u8;
            fuzz_check(&data);
            let m = module_from(&data);
            let task = TaskModule {
                tenant: TenantId(1),
                module: m,
                input: Vec::new(),
                budget_ticks: 5,
                priority: Priority::Low,
                guards: Vec::new(),
            };
            if validate(&task).is_ok() {
                validated += 1;
            }
        }
        assert!(validated > 100, "only {validated} inputs reached execution");
    }

    #[test]
    fn module_from_modes() {
        // Mode 0: the raw bytes after the mode byte.
        assert_eq!(module_from(&[0, 1, 2, 3]), [1, 2, 3]);
        assert_eq!(module_from(&[]), Vec::<u8>::new());
        // Mode 7: a bundled module unchanged.
        assert_eq!(module_from(&[7, 0]), BUILTINS[0].wasm);
        // Mode 4: truncation to a chosen length.
        assert_eq!(module_from(&[4, 1, 10, 0]), &BUILTINS[1].wasm[..10]);
        // Mode 6: a prefix of the seed, then the rest of the input.
        let spliced = module_from(&[6, 0, 8, 0, 0xaa, 0xbb]);
        assert_eq!(&spliced[..8], &BUILTINS[0].wasm[..8]);
        assert_eq!(&spliced[8..], [0xaa, 0xbb]);
    }
}
