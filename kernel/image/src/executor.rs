//! Per-core executors: one run queue pinned per core, fed only through lock-free
//! SPSC rings (xdv-sched's batch protocol, see its crate docs).
//!
//! - `INBOX[c]`: BSP → core c, `CoreMsg::Task` then `CoreMsg::Seal` per batch.
//! - `OUTBOX[c]`: core c → BSP, one `Vec<CoreEvent>` per sealed batch.
//!
//! Core c `accept`s every task of a batch into its own `CoreRunner` (ordered by
//! priority, submit stamp, task id) and runs only at `Seal`, so which task runs next
//! never depends on thread timing. The BSP (core 0) runs its own queue inline, then
//! merges every core's stream by (Lamport time, core id) into the node's replay log.
//! The same task set on the same core count gives the same log as the host's
//! `DeterministicScheduler`.
#![deny(unsafe_code)]

use crate::smp::{self, MAX_CPUS};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use xdv_sched::demo::DEMO_GRANTS;
use xdv_sched::{
    BuiltinWork, Consumer, CoreCounters, CoreEvent, CoreMsg, CoreRunner, MaskPlacement, Placement,
    Producer, ReplayLog, SpscRing, Submitter, TaskSpec, Work, WorkResult,
};
use xdv_types::{CoreId, Hash32};

/// Slots per inbound ring (tasks in flight to one core).
pub const INBOX_SLOTS: usize = 256;
/// Slots per outbound ring (sealed batches in flight from one core).
const OUTBOX_SLOTS: usize = 4;

/// What a K-domain task runs.
#[derive(Clone, Debug)]
pub enum TaskWork {
    Builtin(BuiltinWork),
    /// A validated WebAssembly module; its output bytes and log lines are kept for the
    /// submitter.
    Wasm {
        task: xdv_types::TaskId,
        work: alloc::boxed::Box<xdv_sandbox::SandboxWork>,
    },
}

impl Work for TaskWork {
    fn run(&mut self, budget_ticks: u64) -> WorkResult {
        match self {
            TaskWork::Builtin(w) => w.run(budget_ticks),
            TaskWork::Wasm { task, work } => {
                let r = work.run(budget_ticks);
                keep_output(
                    *task,
                    core::mem::take(&mut work.output),
                    core::mem::take(&mut work.log),
                );
                r
            }
        }
    }
}

/// What a finished sandbox task left for its submitter: its output bytes and the
/// lines its module wrote with `log()`.
type Kept = (xdv_types::TaskId, Vec<u8>, Vec<alloc::string::String>);

/// Outputs and log lines of the most recent sandbox tasks, for the submitter (bounded).
const MAX_KEPT_OUTPUTS: usize = 256;
static OUTPUTS: Mutex<alloc::collections::VecDeque<Kept>> =
    Mutex::new(alloc::collections::VecDeque::new());

fn keep_output(task: xdv_types::TaskId, output: Vec<u8>, log: Vec<alloc::string::String>) {
    let mut o = OUTPUTS.lock();
    if o.len() == MAX_KEPT_OUTPUTS {
        o.pop_front();
    }
    o.push_back((task, output, log));
}

/// The kept output of `task`, if still held.
pub fn output_of(task: xdv_types::TaskId) -> Option<Vec<u8>> {
    OUTPUTS
        .lock()
        .iter()
        .rev()
        .find(|(t, ..)| *t == task)
        .map(|(_, o, _)| o.clone())
}

/// The kept `log()` lines of `task`, if still held.
pub fn log_of(task: xdv_types::TaskId) -> Option<Vec<alloc::string::String>> {
    OUTPUTS
        .lock()
        .iter()
        .rev()
        .find(|(t, ..)| *t == task)
        .map(|(.., l)| l.clone())
}

type Msg = CoreMsg<TaskWork>;
type Batch = Vec<CoreEvent>;

static INBOX: [SpscRing<Msg, INBOX_SLOTS>; MAX_CPUS] = [const { SpscRing::new() }; MAX_CPUS];
static OUTBOX: [SpscRing<Batch, OUTBOX_SLOTS>; MAX_CPUS] = [const { SpscRing::new() }; MAX_CPUS];

/// A core's ends of its rings, parked here by `init` until the core takes them.
type CoreEnds = (
    Consumer<'static, Msg, INBOX_SLOTS>,
    Producer<'static, Batch, OUTBOX_SLOTS>,
);
static CORE_ENDS: [Mutex<Option<CoreEnds>>; MAX_CPUS] = [const { Mutex::new(None) }; MAX_CPUS];

/// Per-core counters published after every batch (for `runq` and `cpus`).
struct Published {
    enqueued: AtomicU64,
    tasks_run: AtomicU64,
    ticks_used: AtomicU64,
    denied: AtomicU64,
    budget_exceeded: AtomicU64,
    trapped: AtomicU64,
    batches: AtomicU64,
}

static COUNTERS: [Published; MAX_CPUS] = [const {
    Published {
        enqueued: AtomicU64::new(0),
        tasks_run: AtomicU64::new(0),
        ticks_used: AtomicU64::new(0),
        denied: AtomicU64::new(0),
        budget_exceeded: AtomicU64::new(0),
        trapped: AtomicU64::new(0),
        batches: AtomicU64::new(0),
    }
}; MAX_CPUS];

fn publish(cpu: usize, c: &CoreCounters) {
    let p = &COUNTERS[cpu];
    // Relaxed: monotonic statistics read by the console; no data depends on them.
    p.enqueued.store(c.enqueued, Ordering::Relaxed);
    p.tasks_run.store(c.tasks_run, Ordering::Relaxed);
    p.ticks_used.store(c.ticks_used, Ordering::Relaxed);
    p.denied.store(c.denied, Ordering::Relaxed);
    p.budget_exceeded
        .store(c.budget_exceeded, Ordering::Relaxed);
    p.trapped.store(c.trapped, Ordering::Relaxed);
    p.batches.fetch_add(1, Ordering::Relaxed);
}

/// Placement of the kernel's submitter: the seed's rule over every core, or — for
/// cluster tasks, which must never run on the core that serves the network and
/// consensus — the same rule over the application processors only.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelPlacement;

/// Set by the BSP around `start_async` only (one thread reads and writes it).
static APS_ONLY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

impl Placement for KernelPlacement {
    fn place(&self, task: xdv_types::TaskId, cores: u16) -> CoreId {
        if APS_ONLY.load(Ordering::Relaxed) && cores > 1 {
            CoreId(1 + (task.0 % u64::from(cores - 1)) as u16)
        } else {
            MaskPlacement.place(task, cores)
        }
    }
}

/// Most tasks in one background batch (each AP's inbox holds `INBOX_SLOTS`).
pub const MAX_ASYNC_BATCH: usize = 128;

/// A batch running on the application processors while the BSP serves the node.
struct InFlight {
    streams: Vec<Option<Batch>>,
}

/// The BSP's side: producers of every inbox, consumers of every outbox, its own
/// runner, the submitter and the node's replay log.
pub struct Dispatcher {
    to_core: Vec<Producer<'static, Msg, INBOX_SLOTS>>,
    from_core: Vec<Consumer<'static, Batch, OUTBOX_SLOTS>>,
    own_inbox: Consumer<'static, Msg, INBOX_SLOTS>,
    runner0: CoreRunner<TaskWork>,
    submitter: Submitter<KernelPlacement>,
    pub log: ReplayLog,
    in_flight: Option<InFlight>,
    /// A background batch finished while a foreground batch waited for it.
    finished: Option<Vec<CoreEvent>>,
}

pub static DISPATCHER: Mutex<Option<Dispatcher>> = Mutex::new(None);

fn new_runner(cpu: usize) -> CoreRunner<TaskWork> {
    let mut r = CoreRunner::new(CoreId(cpu as u16));
    for cap in DEMO_GRANTS {
        // Two grants never exceed the per-core capacity.
        let _ = r.grant(cap);
    }
    r
}

/// The replay-log events of `task` (outcome last), from the node's log.
pub fn events_of(log: &ReplayLog, task: xdv_types::TaskId) -> Vec<CoreEvent> {
    log.entries()
        .iter()
        .filter(|e| e.event.event.task() == Some(task))
        .map(|e| e.event.clone())
        .collect()
}

/// Builds the dispatcher for `cores` online CPUs (after SMP bring-up).
pub fn init(cores: usize) {
    let mut to_core = Vec::with_capacity(cores);
    let mut from_core = Vec::with_capacity(cores);
    let mut own_inbox = None;
    for (cpu, (inbox, outbox)) in INBOX.iter().zip(OUTBOX.iter()).enumerate().take(cores) {
        let (tx, rx) = inbox.split().expect("executor rings split twice");
        let (otx, orx) = outbox.split().expect("executor rings split twice");
        to_core.push(tx);
        from_core.push(orx);
        if cpu == 0 {
            // Core 0 is the dispatcher itself: its outbox producer is not needed.
            let _unused = otx;
            own_inbox = Some(rx);
        } else {
            *CORE_ENDS[cpu].lock() = Some((rx, otx));
            smp::wake(cpu);
        }
    }
    let submitter = Submitter::new(cores as u16, KernelPlacement).expect("1..=MAX_CPUS cores");
    *DISPATCHER.lock() = Some(Dispatcher {
        to_core,
        from_core,
        own_inbox: own_inbox.expect("core 0 exists"),
        runner0: new_runner(0),
        submitter,
        log: ReplayLog::new(),
        in_flight: None,
        finished: None,
    });
    smp::set_describe(describe);
}

/// An AP's main loop: take its ring ends, then serve batches forever.
pub fn ap_main(cpu: usize) -> ! {
    let (mut rx, mut tx) = loop {
        if let Some(ends) = CORE_ENDS[cpu].lock().take() {
            break ends;
        }
        crate::arch::wait_for_interrupt();
    };
    let mut runner = new_runner(cpu);
    let mut batch: Batch = Vec::new();
    loop {
        match rx.pop() {
            Some(msg) => {
                if let Some(events) = step(&mut runner, &mut batch, msg) {
                    publish(cpu, &runner.counters());
                    push_blocking(&mut tx, events);
                    // The boot CPU proposes the completions: wake it now rather than
                    // let them wait for its next timer wake-up.
                    smp::wake(0);
                }
            }
            None => crate::arch::wait_for_interrupt(),
        }
    }
}

/// Applies one message; at `Seal` returns the finished batch's events.
fn step(runner: &mut CoreRunner<TaskWork>, batch: &mut Batch, msg: Msg) -> Option<Batch> {
    match runner.accept(msg) {
        Ok(Some(ev)) => {
            batch.push(ev);
            None
        }
        Ok(None) => {
            batch.extend(runner.run_until_idle());
            Some(core::mem::take(batch))
        }
        Err(e) => {
            // Rejected at enqueue (full, over-budget, duplicate): reported, not queued.
            let t = e.into_task();
            log::warn!("executor: cpu{} refused task {}", runner.core().0, t.id);
            None
        }
    }
}

fn push_blocking<T, const N: usize>(tx: &mut Producer<'static, T, N>, mut v: T) {
    loop {
        match tx.push(v) {
            Ok(()) => return,
            Err(full) => {
                v = full.0;
                core::hint::spin_loop();
            }
        }
    }
}

/// What the boot CPU does while it waits for the APs in a foreground batch: spin,
/// or serve the node (at most every [`SERVE_EVERY_US`]).
struct Waiter<'a> {
    serve: Option<&'a mut dyn FnMut()>,
    last_us: u64,
}

/// How often a waiting foreground batch serves the node.
const SERVE_EVERY_US: u64 = 1000;

impl<'a> Waiter<'a> {
    fn spin() -> Waiter<'a> {
        Waiter {
            serve: None,
            last_us: 0,
        }
    }

    fn serving(serve: &'a mut dyn FnMut()) -> Waiter<'a> {
        Waiter {
            serve: Some(serve),
            last_us: crate::time::uptime_us(),
        }
    }

    fn idle(&mut self) {
        core::hint::spin_loop();
        if let Some(serve) = self.serve.as_mut() {
            let now = crate::time::uptime_us();
            if now.saturating_sub(self.last_us) >= SERVE_EVERY_US {
                serve();
                self.last_us = crate::time::uptime_us();
            }
        }
    }
}

/// The result of one batch.
pub struct BatchReport {
    pub events: usize,
    pub head: Hash32,
    pub cycles: u64,
}

impl Dispatcher {
    pub fn cores(&self) -> usize {
        self.to_core.len()
    }

    /// Starts `tasks` on the application processors and returns at once; the BSP
    /// keeps serving the node. `Err` gives the tasks back: no AP, or a batch is
    /// still running (at most one at a time, at most [`MAX_ASYNC_BATCH`] tasks).
    pub fn start_async(
        &mut self,
        tasks: Vec<TaskSpec<TaskWork>>,
    ) -> Result<(), Vec<TaskSpec<TaskWork>>> {
        let cores = self.cores();
        if cores < 2 || self.in_flight.is_some() || tasks.len() > MAX_ASYNC_BATCH {
            return Err(tasks);
        }
        APS_ONLY.store(true, Ordering::Relaxed);
        for task in tasks {
            let (core, stamp) = self.submitter.assign(task.id);
            let c = usize::from(core.0);
            debug_assert!(c != 0, "background tasks never go to the BSP");
            push_blocking(&mut self.to_core[c], Msg::Task { task, stamp });
            smp::wake(c);
        }
        APS_ONLY.store(false, Ordering::Relaxed);
        for c in 1..cores {
            push_blocking(&mut self.to_core[c], Msg::Seal);
            smp::wake(c);
        }
        let mut streams: Vec<Option<Batch>> = (0..cores).map(|_| None).collect();
        streams[0] = Some(Vec::new());
        self.in_flight = Some(InFlight { streams });
        Ok(())
    }

    /// Whether a background batch is running.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// No background batch runs on the APs and none waits to be collected: a
    /// console command may use the rings (see `console::wait_for_aps`).
    pub fn idle(&self) -> bool {
        self.in_flight.is_none() && self.finished.is_none()
    }

    /// The events of the background batch once every AP has finished it (merged into
    /// the replay log and audited); `None` while it runs.
    pub fn poll_async(&mut self) -> Option<Vec<CoreEvent>> {
        if let Some(done) = self.finished.take() {
            return Some(done);
        }
        let f = self.in_flight.as_mut()?;
        for (c, s) in f.streams.iter_mut().enumerate().skip(1) {
            if s.is_none() {
                *s = self.from_core[c].pop();
            }
        }
        if f.streams.iter().any(Option::is_none) {
            return None;
        }
        let streams: Vec<Batch> = self
            .in_flight
            .take()
            .expect("checked")
            .streams
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let before = self.log.len();
        if let Err(e) = self.submitter.seal(streams, &mut self.log) {
            log::error!("executor: background batch not logged: {e:?}");
        }
        let new: Vec<CoreEvent> = self.log.entries()[before..]
            .iter()
            .map(|e| e.event.clone())
            .collect();
        crate::audit::scheduler_batch(new.iter(), self.log.len() as u64, self.log.head_hash());
        Some(new)
    }

    /// Runs one batch of tasks across all cores and appends it to the replay log.
    pub fn run_batch(&mut self, tasks: Vec<TaskSpec<TaskWork>>) -> Result<BatchReport, String> {
        // The rings carry one batch at a time: let a background batch finish first.
        while self.in_flight.is_some() {
            if let Some(done) = self.poll_async() {
                self.finished = Some(done);
            }
            core::hint::spin_loop();
        }
        let start = crate::arch::rdtsc();
        let cores = self.cores();
        let mut submitter = core::mem::replace(
            &mut self.submitter,
            Submitter::new(1, KernelPlacement).expect("1 core"),
        );
        let streams = self.dispatch(&mut submitter, cores, tasks, &mut Waiter::spin());
        let events = streams.iter().map(Vec::len).sum();
        let before = self.log.len();
        let sealed = submitter.seal(streams, &mut self.log);
        self.submitter = submitter;
        sealed.map_err(|e| format!("replay log: {e:?}"))?;
        let new = self.log.entries()[before..].iter().map(|e| &e.event);
        crate::audit::scheduler_batch(new, self.log.len() as u64, self.log.head_hash());
        Ok(BatchReport {
            events,
            head: self.log.head_hash(),
            cycles: crate::arch::rdtsc() - start,
        })
    }

    /// Runs a batch on the first `cores` cores only, outside the node's replay log
    /// (benchmarks). Returns the cycles it took. While this CPU waits for the APs
    /// (a full ring, their results) it calls `serve` every millisecond or so, so a
    /// benchmark never stops the node for longer than one slice of its own work.
    /// `serve` must not take [`DISPATCHER`].
    pub fn run_unlogged(
        &mut self,
        cores: usize,
        tasks: Vec<TaskSpec<TaskWork>>,
        serve: &mut dyn FnMut(),
    ) -> Result<u64, String> {
        let cores = cores.clamp(1, self.cores());
        let start = crate::arch::rdtsc();
        while self.in_flight.is_some() {
            if let Some(done) = self.poll_async() {
                self.finished = Some(done);
            }
            core::hint::spin_loop();
        }
        let mut submitter =
            Submitter::new(cores as u16, MaskPlacement).map_err(|e| format!("{e:?}"))?;
        let streams = self.dispatch(&mut submitter, cores, tasks, &mut Waiter::serving(serve));
        drop(streams);
        Ok(crate::arch::rdtsc() - start)
    }

    /// Pushes every task to its core's ring, seals cores `0..cores`, and collects
    /// each core's event stream (core 0 runs inline on this CPU).
    fn dispatch<P: Placement>(
        &mut self,
        submitter: &mut Submitter<P>,
        cores: usize,
        tasks: Vec<TaskSpec<TaskWork>>,
        wait: &mut Waiter<'_>,
    ) -> Vec<Batch> {
        let mut own: Batch = Vec::new();
        for task in tasks {
            let (core, stamp) = submitter.assign(task.id);
            let c = usize::from(core.0);
            let mut msg = Msg::Task { task, stamp };
            // A full ring drains as the core accepts; wake it and retry. Core 0 is
            // this CPU, so its ring is drained inline.
            loop {
                match self.to_core[c].push(msg) {
                    Ok(()) => break,
                    Err(full) => {
                        msg = full.0;
                        if c == 0 {
                            self.drain_own(&mut own);
                        } else {
                            smp::wake(c);
                            wait.idle();
                        }
                    }
                }
            }
        }
        for c in 0..cores {
            let mut msg = Msg::Seal;
            while let Err(full) = self.to_core[c].push(msg) {
                msg = full.0;
                if c == 0 {
                    self.drain_own(&mut own);
                } else {
                    smp::wake(c);
                    wait.idle();
                }
            }
            smp::wake(c);
        }
        let mut streams: Vec<Batch> = (0..cores).map(|_| Vec::new()).collect();
        streams[0] = loop {
            if let Some(b) = self.drain_own(&mut own) {
                break b;
            }
        };
        publish(0, &self.runner0.counters());
        for (c, stream) in streams.iter_mut().enumerate().skip(1) {
            *stream = loop {
                if let Some(b) = self.from_core[c].pop() {
                    break b;
                }
                wait.idle();
            };
        }
        streams
    }

    /// Processes core 0's inbox; returns its batch once `Seal` was seen.
    fn drain_own(&mut self, own: &mut Batch) -> Option<Batch> {
        while let Some(msg) = self.own_inbox.pop() {
            if let Some(done) = step(&mut self.runner0, own, msg) {
                return Some(done);
            }
        }
        None
    }
}

/// One line per core for `runq`.
pub fn print_runq() {
    let online = smp::online();
    crate::println!("core  queued  enqueued  run  ticks  denied  over-budget  trapped  batches");
    for (cpu, p) in COUNTERS.iter().enumerate().take(online) {
        crate::println!(
            "{cpu:>4}  {:>6}  {:>8}  {:>3}  {:>5}  {:>6}  {:>11}  {:>7}  {:>7}",
            INBOX[cpu].len(),
            p.enqueued.load(Ordering::Relaxed),
            p.tasks_run.load(Ordering::Relaxed),
            p.ticks_used.load(Ordering::Relaxed),
            p.denied.load(Ordering::Relaxed),
            p.budget_exceeded.load(Ordering::Relaxed),
            p.trapped.load(Ordering::Relaxed),
            p.batches.load(Ordering::Relaxed),
        );
    }
}

/// Tasks run so far on `cpu`.
pub fn tasks_run(cpu: usize) -> u64 {
    COUNTERS[cpu].tasks_run.load(Ordering::Relaxed)
}

pub fn describe(cpu: usize) -> String {
    format!(
        "tasks={} ticks={}",
        tasks_run(cpu),
        COUNTERS[cpu].ticks_used.load(Ordering::Relaxed)
    )
}
