//! Device results in words and JSON for the CLI: counts of a Q job, the envelope
//! summary of a Φ job. A task's output that is neither is left to the caller.

use serde_json::{Value, json};
use xdv_accel::job::{PhiResult, QResult};

/// Bitstring of `bits` classical bits, bit 0 rightmost (as Qiskit prints them).
fn bitstring(v: u64, bits: usize) -> String {
    (0..bits)
        .rev()
        .map(|i| if v >> i & 1 == 1 { '1' } else { '0' })
        .collect()
}

fn width(q: &QResult) -> usize {
    let max = q.counts.iter().map(|c| c.0).max().unwrap_or(0);
    (64 - max.leading_zeros() as usize).max(1)
}

/// One line for a Q or Φ result, or `None` if `output` is neither.
pub fn describe(output: &[u8]) -> Option<String> {
    if let Ok(q) = QResult::decode(output) {
        let w = width(&q);
        let counts: Vec<String> = q
            .counts
            .iter()
            .map(|(b, n)| format!("{}: {n}", bitstring(*b, w)))
            .collect();
        return Some(format!(
            "counts {{{}}} of {} shots (entangling ops {}, teleportations {}, depth {})",
            counts.join(", "),
            q.shots,
            q.entangling_ops,
            q.teleportations,
            q.depth
        ));
    }
    if let Ok(p) = PhiResult::decode(output) {
        let r: Vec<String> = p
            .windows
            .iter()
            .map(|w| format!("{:.3}", f64::from(w.r_mean_milli) / 1000.0))
            .collect();
        let min = p.windows.iter().map(|w| w.r_min_milli).min().unwrap_or(0);
        let state = match p.unstable_window {
            Some(w) => format!("UNSTABLE in window {w}"),
            None => "stable".into(),
        };
        return Some(format!(
            "envelope {state}: {} windows, mean envelope per window [{}], minimum {:.3}",
            p.windows.len(),
            r.join(", "),
            f64::from(min) / 1000.0
        ));
    }
    None
}

/// JSON fields for a Q or Φ result (`counts` or `envelope`), or `None`.
pub fn json(output: &[u8]) -> Option<(&'static str, Value)> {
    if let Ok(q) = QResult::decode(output) {
        let w = width(&q);
        let mut m = serde_json::Map::new();
        for (b, n) in &q.counts {
            m.insert(bitstring(*b, w), json!(n));
        }
        return Some((
            "counts",
            json!({"shots": q.shots, "counts": m, "entangling_ops": q.entangling_ops,
                   "teleportations": q.teleportations, "depth": q.depth}),
        ));
    }
    if let Ok(p) = PhiResult::decode(output) {
        let windows: Vec<Value> = p
            .windows
            .iter()
            .map(|w| {
                json!({"r_mean_milli": w.r_mean_milli, "r_min_milli": w.r_min_milli,
                            "mean_phase_milli": w.mean_phase_milli})
            })
            .collect();
        return Some((
            "envelope",
            json!({"stable": p.stable, "unstable_window": p.unstable_window, "windows": windows}),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_like_qiskit() {
        let q = QResult {
            counts: vec![(0, 498), (3, 502)],
            shots: 1000,
            entangling_ops: 1,
            teleportations: 0,
            depth: 3,
        };
        let line = describe(&q.encode()).unwrap();
        assert!(
            line.starts_with("counts {00: 498, 11: 502} of 1000 shots"),
            "{line}"
        );
        let (k, v) = json(&q.encode()).unwrap();
        assert_eq!(k, "counts");
        assert_eq!(v["counts"]["11"], 502);
        assert!(describe(b"hello").is_none());
    }
}
