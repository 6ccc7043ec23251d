//! Shared timing and reporting helpers for benchmarks.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Runs `f` `runs` times and returns the sorted durations.
pub fn time_runs(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v
}

/// Median of a sorted slice.
pub fn median<T: Copy>(sorted: &[T]) -> T {
    assert!(!sorted.is_empty(), "median of no samples");
    sorted[sorted.len() / 2]
}

/// Prints the closing JSON line every benchmark ends with.
pub fn print_json(bench: &str, unit: &str, ours: f64, baseline: f64, extra: serde_json::Value) {
    let ratio = if baseline == 0.0 {
        f64::NAN
    } else {
        ours / baseline
    };
    let mut obj = serde_json::json!({
        "bench": bench, "unit": unit, "ours": ours, "baseline": baseline, "ratio": ratio,
    });
    if let (Some(o), serde_json::Value::Object(e)) = (obj.as_object_mut(), extra) {
        o.extend(e);
    }
    println!("{obj}");
}
