//! `cargo xdv bench sched`: the scheduler's queues on the host.
//!
//! 1. SPSC enqueue+dequeue per item, ours (`xdv_sched::SpscRing`) against
//!    `crossbeam_queue::ArrayQueue` and `rtrb::RingBuffer`, same capacity, same run:
//!    two threads (producer / consumer) and one thread (push a batch, pop it).
//! 2. `OrderedQueue` push+pop per item at 1k and 100k entries, for random and for
//!    increasing (Lamport-like) stamps, and the growth normalised by log2 n
//!    (<= 1.0 means no worse than O(log n); above 1 at 100k is cache misses, the
//!    heap then being larger than the L2 cache).
//!
//! 3. In the kernel: builds it, boots it under QEMU (TCG, `-smp 4`) and runs the
//!    console's `sched bench`: cycles (rdtsc) per enqueue + run_cycle of an empty task
//!    on one core, and empty tasks/s through the run queues on 1, 2 and 4 cores.
//!    Under TCG these are emulated-CPU numbers, and 4 vCPUs share the host's cores.
//!
//! Options: `--items N` (items per SPSC run, default 2,000,000), `--runs R`
//! (timed runs per case, median reported, default 7), `--smp N` (guest cores,
//! default 4), `--no-qemu` (skip part 3).
//! Last line: JSON with `ours`/`baseline`/`ratio` = two-thread SPSC ns/item, ours vs
//! the best baseline; the kernel's numbers under `kernel`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xdv_sched::{OrderedQueue, SplitMix64, SpscRing};
use xdv_types::{CoreId, CoreStamp, Timestamp};

use crate::report::{median, print_json, time_runs};

/// Slots in every SPSC queue compared.
const CAPACITY: usize = 1024;
/// Items pushed then popped per round in the single-thread case.
const BATCH: usize = 256;
/// Push+pop pairs timed per ordered-queue size.
const ORDERED_OPS: usize = 1_000_000;
const ORDERED_SIZES: [usize; 2] = [1_000, 100_000];

struct Opts {
    items: usize,
    runs: usize,
    /// Cores of the QEMU guest for the in-kernel part; `None` with `--no-qemu`.
    qemu_smp: Option<u32>,
}

const USAGE: &str = "use --items N>=256, --runs 1..=101, --smp 1..=8, --no-qemu";

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        items: 2_000_000,
        runs: 7,
        qemu_smp: Some(4),
    };
    let mut no_qemu = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--no-qemu" {
            no_qemu = true;
            continue;
        }
        let v = it
            .next()
            .with_context(|| format!("{a} needs a value ({USAGE})"))?;
        let n: usize = v
            .parse()
            .with_context(|| format!("{a}: not a number: {v}"))?;
        match a.as_str() {
            "--items" if n >= BATCH => o.items = n,
            "--runs" if (1..=101).contains(&n) => o.runs = n,
            "--smp" if (1..=8).contains(&n) => o.qemu_smp = Some(n as u32),
            _ => bail!("bad option {a} {v} ({USAGE})"),
        }
    }
    if no_qemu {
        o.qemu_smp = None;
    }
    Ok(o)
}

/// Console output of one benchmark command run in a QEMU guest.
pub struct KernelBench {
    /// The lines the command printed that start with its prefix.
    pub lines: Vec<String>,
    /// The command's closing JSON object (`{"bench":"<name>",...}`).
    pub json: serde_json::Value,
}

/// Builds the kernel, boots it under QEMU (TCG) with `smp` cores, types `cmd` on its
/// console and waits for the JSON line `{"bench":"<name>",...}` that ends the
/// command's output; then halts the guest.
pub fn kernel_bench(smp: u32, cmd: &str, prefix: &str, name: &str) -> anyhow::Result<KernelBench> {
    const T: Duration = Duration::from_secs(300);
    let cfg = xdv::qemu::Config::kernel("")?.smp(smp);
    let mut vm = xdv::qemu::Vm::spawn(&cfg)?;
    vm.wait_for("xdv> ", T)?;
    let needle = format!("{{\"bench\":\"{name}\"");
    let start = vm.output().len();
    vm.command(cmd, &needle, T)?;
    // The needle may arrive before the rest of its line: wait for the line's end.
    let end = Instant::now() + T;
    let out = loop {
        let out = vm.output();
        let complete = out
            .rfind(&needle)
            .is_some_and(|at| out[at..].contains('\n'));
        if complete {
            break out;
        }
        if Instant::now() > end {
            return Err(vm.error(&format!("`{cmd}`: JSON line never ended")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Only what this command printed.
    let printed = out.get(start..).unwrap_or(out.as_str());
    let lines = printed
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    let json_line = printed
        .lines()
        .find(|l| l.starts_with(&needle))
        .with_context(|| format!("`{cmd}` printed no JSON line"))?;
    let json = serde_json::from_str(json_line.trim())
        .with_context(|| format!("`{cmd}`: bad JSON line {json_line:?}"))?;
    vm.send_line("halt")?;
    vm.expect_exit(xdv::qemu::Exit::Halted, T)?;
    Ok(KernelBench { lines, json })
}

/// A queue's two ends as closures, so each case runs the same harness.
trait Spsc: Send {
    fn push(&mut self, v: u64) -> bool;
}
trait SpscRx {
    fn pop(&mut self) -> Option<u64>;
}

impl<const N: usize> Spsc for xdv_sched::Producer<'_, u64, N> {
    #[inline]
    fn push(&mut self, v: u64) -> bool {
        xdv_sched::Producer::push(self, v).is_ok()
    }
}
impl<const N: usize> SpscRx for xdv_sched::Consumer<'_, u64, N> {
    #[inline]
    fn pop(&mut self) -> Option<u64> {
        xdv_sched::Consumer::pop(self)
    }
}
impl Spsc for rtrb::Producer<u64> {
    #[inline]
    fn push(&mut self, v: u64) -> bool {
        rtrb::Producer::push(self, v).is_ok()
    }
}
impl SpscRx for rtrb::Consumer<u64> {
    #[inline]
    fn pop(&mut self) -> Option<u64> {
        rtrb::Consumer::pop(self).ok()
    }
}
impl Spsc for &crossbeam_queue::ArrayQueue<u64> {
    #[inline]
    fn push(&mut self, v: u64) -> bool {
        crossbeam_queue::ArrayQueue::push(self, v).is_ok()
    }
}
impl SpscRx for &crossbeam_queue::ArrayQueue<u64> {
    #[inline]
    fn pop(&mut self) -> Option<u64> {
        crossbeam_queue::ArrayQueue::pop(self)
    }
}

/// Spins before yielding when a queue is full or empty: the machines running this
/// are small and shared, and a waiter that never yields can burn the time slice the
/// other side needs. Same policy for every queue compared.
const SPINS_BEFORE_YIELD: u32 = 128;

#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        *spins = 0;
        std::thread::yield_now();
    }
}

/// Pins the calling thread to CPU `i` when the machine has more than one CPU; every
/// queue gets the same placement (producer on CPU 1, consumer on CPU 0), so the OS
/// cannot put both ends on one core for one queue and not for another.
fn pin(i: usize) -> bool {
    match core_affinity::get_core_ids() {
        Some(ids) if ids.len() > 1 => core_affinity::set_for_current(ids[i % ids.len()]),
        _ => false,
    }
}

/// Producer thread pushes 0..items, this thread pops them; checks the sum.
fn two_threads(items: usize, mut tx: impl Spsc, mut rx: impl SpscRx) -> Duration {
    pin(0);
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        s.spawn(move || {
            pin(1);
            let mut spins = 0;
            for i in 0..items as u64 {
                while !tx.push(i) {
                    backoff(&mut spins);
                }
            }
        });
        let (mut sum, mut got, mut spins) = (0u64, 0, 0);
        while got < items {
            if let Some(v) = rx.pop() {
                sum = sum.wrapping_add(v);
                got += 1;
            } else {
                backoff(&mut spins);
            }
        }
        sum
    });
    let t = start.elapsed();
    let n = items as u64;
    assert_eq!(sum, n * (n - 1) / 2, "items lost or duplicated");
    t
}

/// Push BATCH, pop BATCH, repeated; one thread.
fn one_thread(items: usize, tx: &mut impl Spsc, rx: &mut impl SpscRx) -> Duration {
    let start = Instant::now();
    let mut sum = 0u64;
    for round in 0..items / BATCH {
        let base = (round * BATCH) as u64;
        for i in 0..BATCH as u64 {
            assert!(
                tx.push(black_box(base + i)),
                "queue full in one-thread case"
            );
        }
        for _ in 0..BATCH {
            sum = sum.wrapping_add(rx.pop().expect("value pushed above"));
        }
    }
    black_box(sum);
    start.elapsed()
}

fn ns_per_item(d: Duration, items: usize) -> f64 {
    d.as_nanos() as f64 / items as f64
}

#[derive(Clone, Copy)]
enum Kind {
    Ours,
    Rtrb,
    Crossbeam,
}
const KINDS: [Kind; 3] = [Kind::Ours, Kind::Rtrb, Kind::Crossbeam];
const NAMES: [&str; 3] = ["xdv SpscRing", "rtrb", "crossbeam ArrayQueue"];
/// The six orders of the three queues, cycled through run by run.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
    [1, 0, 2],
    [0, 2, 1],
];

fn run_two(kind: Kind, items: usize) -> Duration {
    match kind {
        Kind::Ours => {
            let ring: Box<SpscRing<u64, CAPACITY>> = Box::new(SpscRing::new());
            let (tx, rx) = ring.split().expect("fresh ring");
            two_threads(items, tx, rx)
        }
        Kind::Rtrb => {
            let (tx, rx) = rtrb::RingBuffer::new(CAPACITY);
            two_threads(items, tx, rx)
        }
        Kind::Crossbeam => {
            let q = crossbeam_queue::ArrayQueue::new(CAPACITY);
            two_threads(items, &q, &q)
        }
    }
}

fn run_one(kind: Kind, items: usize) -> Duration {
    match kind {
        Kind::Ours => {
            let ring: Box<SpscRing<u64, CAPACITY>> = Box::new(SpscRing::new());
            let (mut tx, mut rx) = ring.split().expect("fresh ring");
            one_thread(items, &mut tx, &mut rx)
        }
        Kind::Rtrb => {
            let (mut tx, mut rx) = rtrb::RingBuffer::new(CAPACITY);
            one_thread(items, &mut tx, &mut rx)
        }
        Kind::Crossbeam => {
            let q = crossbeam_queue::ArrayQueue::new(CAPACITY);
            one_thread(items, &mut &q, &mut &q)
        }
    }
}

/// (median, fastest) ns/item per kind; runs are interleaved across kinds so that
/// machine noise hits all of them alike.
fn measure(o: &Opts, f: fn(Kind, usize) -> Duration) -> ([f64; 3], [f64; 3]) {
    let mut samples: [Vec<Duration>; 3] = Default::default();
    for k in KINDS {
        f(k, o.items / 4); // warm-up
    }
    for run in 0..o.runs {
        // Every permutation in turn, so each queue runs first, middle and last (and
        // after each other queue) equally often.
        for i in ORDERS[run % ORDERS.len()] {
            samples[i].push(f(KINDS[i], o.items));
        }
    }
    for s in samples.iter_mut() {
        s.sort();
    }
    (
        samples.each_ref().map(|s| ns_per_item(median(s), o.items)),
        samples.each_ref().map(|s| ns_per_item(s[0], o.items)),
    )
}

/// Stamps for the ordered-queue benchmark.
#[derive(Clone, Copy)]
enum StampPattern {
    /// Uniformly random times: pushes sift up through much of the heap.
    Random,
    /// Lamport-like: each stamp a little after the previous (the merge use case).
    Increasing,
}

/// The baseline for the ordered queue: std's `BinaryHeap` of (stamp, seq) pairs, the
/// textbook O(log n) structure, fed the same stamps. Its growth shows what the memory
/// hierarchy adds at 100k entries.
struct StdHeap(std::collections::BinaryHeap<std::cmp::Reverse<(CoreStamp, u64)>>);

/// The operations both queues are measured with.
trait Ordered {
    fn push(&mut self, stamp: CoreStamp, v: u64);
    fn pop(&mut self) -> Option<u64>;
    fn len(&self) -> usize;
}

impl Ordered for OrderedQueue<u64> {
    fn push(&mut self, stamp: CoreStamp, v: u64) {
        OrderedQueue::push(self, stamp, v).expect("under limit");
    }
    fn pop(&mut self) -> Option<u64> {
        OrderedQueue::pop(self).map(|(_, v)| v)
    }
    fn len(&self) -> usize {
        OrderedQueue::len(self)
    }
}

impl Ordered for StdHeap {
    fn push(&mut self, stamp: CoreStamp, v: u64) {
        self.0.push(std::cmp::Reverse((stamp, v)));
    }
    fn pop(&mut self) -> Option<u64> {
        self.0.pop().map(|std::cmp::Reverse((_, v))| v)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// ns per push+pop pair with the queue holding `size` entries.
fn ordered_ns(size: usize, runs: usize, pattern: StampPattern) -> f64 {
    ordered_ns_of(OrderedQueue::new(), size, runs, pattern)
}

fn ordered_ns_of(mut q: impl Ordered, size: usize, runs: usize, pattern: StampPattern) -> f64 {
    let mut rng = SplitMix64(0x5eed);
    let mut now = 0u64;
    let mut stamp = move || {
        let time = match pattern {
            StampPattern::Random => rng.next_u64() >> 16,
            StampPattern::Increasing => {
                now += rng.next_u64() & 63;
                now
            }
        };
        CoreStamp {
            time: Timestamp(time),
            core: CoreId((rng.next_u64() & 7) as u16),
        }
    };
    for i in 0..size {
        q.push(stamp(), i as u64);
    }
    let d = median(&time_runs(runs, || {
        for i in 0..ORDERED_OPS {
            q.push(stamp(), i as u64);
            black_box(q.pop());
        }
    }));
    assert_eq!(q.len(), size);
    ns_per_item(d, ORDERED_OPS)
}

/// Prints one ordered-queue workload; returns (ns at each size, normalised growth, the
/// std `BinaryHeap` baseline's normalised growth).
fn ordered_case(pattern: StampPattern, name: &str, runs: usize) -> (Vec<f64>, f64, f64) {
    let ns: Vec<f64> = ORDERED_SIZES
        .iter()
        .map(|&n| ordered_ns(n, runs, pattern))
        .collect();
    println!("OrderedQueue push+pop per item, {name} stamps ({ORDERED_OPS} pairs):");
    for (n, v) in ORDERED_SIZES.iter().zip(&ns) {
        println!(
            "  {n:>7} entries: {v:>8.2} ns  ({:.2} ns per log2 n)",
            v / (*n as f64).log2()
        );
    }
    let growth = ns[1] / ns[0];
    let log_growth = (ORDERED_SIZES[1] as f64).log2() / (ORDERED_SIZES[0] as f64).log2();
    let normalised = growth / log_growth;
    println!(
        "  growth 1k -> 100k: {growth:.2}x; log2 n grows {log_growth:.2}x; normalised {normalised:.2} (<= 1: O(log n) or better)"
    );
    let base: Vec<f64> = ORDERED_SIZES
        .iter()
        .map(|&n| {
            let heap = StdHeap(std::collections::BinaryHeap::new());
            ordered_ns_of(heap, n, runs, pattern)
        })
        .collect();
    let base_norm = base[1] / base[0] / log_growth;
    println!(
        "  baseline std BinaryHeap: {:.2} / {:.2} ns, normalised {base_norm:.2}; ours/baseline growth {:.2}",
        base[0],
        base[1],
        normalised / base_norm
    );
    (ns, normalised, base_norm)
}

/// Prints medians (and fastest runs); returns (ours, best baseline) medians.
fn print_case(title: &str, (ns, fastest): &([f64; 3], [f64; 3])) -> (f64, f64) {
    println!("{title}");
    for ((name, v), f) in NAMES.iter().zip(ns).zip(fastest) {
        println!("  {name:<22} {v:>8.2} ns/item median  {f:>8.2} fastest run");
    }
    let best = ns[1].min(ns[2]);
    let best_fastest = fastest[1].min(fastest[2]);
    println!(
        "  ratio ours / best baseline: {:.3} (medians), {:.3} (fastest runs)",
        ns[0] / best,
        fastest[0] / best_fastest
    );
    (ns[0], best)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    println!(
        "sched bench: SPSC capacity {CAPACITY}, {} items per run, {} runs (median)",
        o.items, o.runs
    );
    let two = measure(&o, run_two);
    let (two_ours, two_best) = print_case("SPSC enqueue+dequeue, two threads:", &two);
    let one = measure(&o, run_one);
    let (one_ours, one_best) = print_case(
        &format!("SPSC enqueue+dequeue, one thread (batches of {BATCH}):"),
        &one,
    );

    let runs = o.runs.min(5);
    let (random, random_norm, random_base) = ordered_case(StampPattern::Random, "random", runs);
    let (increasing, increasing_norm, increasing_base) =
        ordered_case(StampPattern::Increasing, "increasing", runs);

    let kernel = match o.qemu_smp {
        None => serde_json::Value::Null,
        Some(smp) => {
            println!("kernel under QEMU (TCG, -smp {smp}): `sched bench` on the console");
            let k = kernel_bench(smp, "sched bench", "sched bench:", "sched-kernel")?;
            for l in &k.lines {
                println!("  {l}");
            }
            let cycles = k.json.get("cycles_per_task").and_then(|v| v.as_u64());
            let by_cores = k
                .json
                .get("tasks_per_s_by_cores")
                .and_then(|v| v.as_object());
            let (Some(cycles), Some(by_cores)) = (cycles, by_cores) else {
                bail!("`sched bench` JSON lacks its fields: {}", k.json);
            };
            let one = by_cores.get("1").and_then(|v| v.as_f64()).unwrap_or(0.0);
            for (cores, tps) in by_cores {
                if let Some(tps) = tps.as_f64().filter(|_| one > 0.0) {
                    println!("  {cores} cores: {:.2}x the tasks/s of 1 core", tps / one);
                }
            }
            serde_json::json!({
                "smp": smp,
                "accel": "tcg",
                "cycles_per_enqueue_run_cycle": cycles,
                "tasks_per_s_by_cores": by_cores,
            })
        }
    };

    print_json(
        "sched",
        "ns/item",
        two_ours,
        two_best,
        serde_json::json!({
            "case": "spsc_two_threads",
            "capacity": CAPACITY,
            "items": o.items,
            "two_threads_ns": {"ours": two.0[0], "rtrb": two.0[1], "crossbeam": two.0[2]},
            "two_threads_fastest_ns": {"ours": two.1[0], "rtrb": two.1[1], "crossbeam": two.1[2]},
            "one_thread_ns": {"ours": one.0[0], "rtrb": one.0[1], "crossbeam": one.0[2]},
            "one_thread_ratio": one_ours / one_best,
            "ordered_random_ns": {"1000": random[0], "100000": random[1]},
            "ordered_random_growth_per_log2n": random_norm,
            "ordered_random_std_binaryheap_growth_per_log2n": random_base,
            "ordered_increasing_std_binaryheap_growth_per_log2n": increasing_base,
            "ordered_increasing_ns": {"1000": increasing[0], "100000": increasing[1]},
            "ordered_increasing_growth_per_log2n": increasing_norm,
            "kernel": kernel,
        }),
    );
    Ok(())
}
