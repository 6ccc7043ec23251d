//! Linearizability checker for a per-key register history (WGL search).
//!
//! The KV store is P-compositional, so each key is checked on its own. Each key's
//! history is a set of operations with invocation and (optional) return times;
//! the search (Wing & Gong with Lowe's memoization) tries to order them so that
//! every operation takes effect between its invocation and return and every read
//! returns the latest write. A write whose outcome is unknown (its node crashed or
//! lost leadership) has no return time: it may take effect at any point after its
//! invocation, or never.

use std::collections::BTreeSet;

/// Most operations checked per key; the simulator keeps histories below this.
pub const MAX_OPS_PER_KEY: usize = 1024;
/// Search budget (states visited) before the check is declared inconclusive.
pub const MAX_SEARCH_STATES: usize = 2_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Write a unique non-zero value.
    Put(u64),
    /// Read; 0 means absent.
    Get(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinOp {
    pub kind: OpKind,
    pub invoke: u64,
    /// None: outcome unknown (may or may not have taken effect).
    pub ret: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinResult {
    Ok,
    Violation,
    Inconclusive,
}

/// Checks one key's history, starting from value 0.
pub fn check(ops: &[LinOp]) -> LinResult {
    if ops.len() > MAX_OPS_PER_KEY {
        return LinResult::Inconclusive;
    }
    let words = ops.len().div_ceil(64).max(1);
    let mut done = vec![0u64; words];
    let mut seen: BTreeSet<(Vec<u64>, u64)> = BTreeSet::new();
    let mut budget = MAX_SEARCH_STATES;
    let must = ops.iter().filter(|o| o.ret.is_some()).count();
    match search(ops, &mut done, 0, 0, must, &mut seen, &mut budget) {
        Some(true) => LinResult::Ok,
        Some(false) => LinResult::Violation,
        None => LinResult::Inconclusive,
    }
}

fn is_done(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

fn search(
    ops: &[LinOp],
    done: &mut Vec<u64>,
    value: u64,
    finished: usize,
    must: usize,
    seen: &mut BTreeSet<(Vec<u64>, u64)>,
    budget: &mut usize,
) -> Option<bool> {
    if finished == must {
        return Some(true);
    }
    if *budget == 0 {
        return None;
    }
    *budget -= 1;
    if !seen.insert((done.clone(), value)) {
        return Some(false);
    }
    // An op may go next only if no pending op returned before it was invoked.
    let min_ret = (0..ops.len())
        .filter(|&i| !is_done(done, i))
        .filter_map(|i| ops[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..ops.len() {
        if is_done(done, i) || ops[i].invoke > min_ret {
            continue;
        }
        let next = match ops[i].kind {
            OpKind::Put(v) => v,
            OpKind::Get(v) if v == value => value,
            OpKind::Get(_) => continue,
        };
        done[i / 64] |= 1 << (i % 64);
        let add = usize::from(ops[i].ret.is_some());
        let r = search(ops, done, next, finished + add, must, seen, budget);
        done[i / 64] &= !(1 << (i % 64));
        match r {
            Some(true) => return Some(true),
            None => return None,
            Some(false) => {}
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn op(kind: OpKind, invoke: u64, ret: Option<u64>) -> LinOp {
        LinOp { kind, invoke, ret }
    }
    #[test]
    fn sequential_ok() {
        let h = [
            op(OpKind::Put(1), 0, Some(1)),
            op(OpKind::Get(1), 2, Some(3)),
        ];
        assert_eq!(check(&h), LinResult::Ok);
    }
    #[test]
    fn stale_read_is_violation() {
        let h = [
            op(OpKind::Put(1), 0, Some(1)),
            op(OpKind::Put(2), 2, Some(3)),
            op(OpKind::Get(1), 4, Some(5)),
        ];
        assert_eq!(check(&h), LinResult::Violation);
    }
    #[test]
    fn concurrent_read_may_see_either() {
        let h = [
            op(OpKind::Put(1), 0, Some(10)),
            op(OpKind::Get(0), 1, Some(2)),
            op(OpKind::Get(1), 3, Some(4)),
        ];
        assert_eq!(check(&h), LinResult::Ok);
        let bad = [
            op(OpKind::Put(1), 0, Some(10)),
            op(OpKind::Get(1), 1, Some(2)),
            op(OpKind::Get(0), 3, Some(4)),
        ];
        assert_eq!(check(&bad), LinResult::Violation);
    }
    #[test]
    fn unknown_write_may_or_may_not_apply() {
        let h = [
            op(OpKind::Put(1), 0, None),
            op(OpKind::Get(0), 5, Some(6)),
            op(OpKind::Get(1), 7, Some(8)),
        ];
        assert_eq!(check(&h), LinResult::Ok);
        let never = [op(OpKind::Put(1), 0, None), op(OpKind::Get(0), 5, Some(6))];
        assert_eq!(check(&never), LinResult::Ok);
        let bad = [
            op(OpKind::Put(1), 0, None),
            op(OpKind::Get(1), 5, Some(6)),
            op(OpKind::Get(0), 7, Some(8)),
        ];
        assert_eq!(check(&bad), LinResult::Violation);
    }
}
