//! Model checks of the lock-free queues under every interleaving loom explores.
//!
//! Run (under a minute on 2 cores including the build; the checks take ~3 s):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=/work/target-loom cargo test -p xdv-sched --release --test loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use xdv_sched::{Full, MpmcQueue, SpscRing};

/// Exhaustive search (no preemption bound): the models are small enough that the
/// whole suite explores every interleaving in a few seconds.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = None;
    b.check(f);
}

fn push_spin<T>(mut push: impl FnMut(T) -> Result<(), Full<T>>, mut v: T) {
    loop {
        match push(v) {
            Ok(()) => return,
            Err(Full(back)) => {
                v = back;
                thread::yield_now();
            }
        }
    }
}

#[test]
fn spsc_fifo_across_wraparound() {
    model(|| {
        // Leaked: the halves must be 'static to cross loom::thread::spawn, as in the
        // kernel's statics. One small ring per explored execution.
        let ring: &'static SpscRing<u32, 2> = Box::leak(Box::new(SpscRing::new()));
        let (mut p, mut c) = ring.split().expect("first split");
        let producer = thread::spawn(move || {
            for i in 0..3 {
                push_spin(|v| p.push(v), i);
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match c.pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        producer.join().expect("producer");
        assert_eq!(got, [0, 1, 2]);
        assert!(ring.is_empty());
    });
}

#[test]
fn spsc_split_once_across_threads() {
    model(|| {
        let ring: &'static SpscRing<u8, 2> = Box::leak(Box::new(SpscRing::new()));
        let other = thread::spawn(move || ring.split().is_ok());
        let here = ring.split().is_ok();
        let there = other.join().expect("thread");
        assert!(here ^ there, "exactly one split succeeds");
    });
}

#[test]
fn mpmc_two_producers_one_consumer() {
    model(|| {
        let q = Arc::new(MpmcQueue::new(2).expect("capacity"));
        let producers: Vec<_> = (0..2u32)
            .map(|t| {
                let q = q.clone();
                thread::spawn(move || push_spin(|v| q.push(v), t))
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            match q.pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        for p in producers {
            p.join().expect("producer");
        }
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
        assert_eq!(q.pop(), None);
    });
}

#[test]
fn mpmc_wraps_with_concurrent_consumer() {
    model(|| {
        let q = Arc::new(MpmcQueue::new(2).expect("capacity"));
        let qc = q.clone();
        let consumer = thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 3 {
                match qc.pop() {
                    Some(v) => got.push(v),
                    None => thread::yield_now(),
                }
            }
            got
        });
        for i in 0..3u32 {
            push_spin(|v| q.push(v), i);
        }
        // One producer: its values come out in order.
        assert_eq!(consumer.join().expect("consumer"), [0, 1, 2]);
    });
}
