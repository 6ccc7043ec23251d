//! `cargo xdv bench cluster`: the whole request path under load, on a 1-node and a
//! 3-node cluster (and 5 with `--five`) in the same run.
//!
//! A task is a trivial WebAssembly module, tenant-signed. By default (`--batch 32`) a
//! connection sends `RunBatch`es of up to 32 submissions under one signature: one
//! request per batch, placed as one `AssignTasks` entry and answered `BatchRan` once
//! all of them completed. `--split` sends each batch as a `SubmitBatch` (answered
//! `SubmittedBatch` once placed) and then an `AwaitTasks` for its tasks — two
//! signatures and two round trips a batch; `--batch 0` sends the single `Submit` +
//! `AwaitTask` per task instead, for the comparison. Requests are pipelined: a connection keeps many tasks in flight and
//! matches the answers (submissions in order, reports by task id). The nodes boot
//! with `mgmt=24,20`: every host connection arrives from 10.0.2.2 (QEMU user
//! networking), and the default per-source share (4 of 8 slots, at most 6) would cap
//! the sweep at 6 connections a node. Measured per cluster size:
//! - **moderate load**: open loop at a fixed rate (`--rate`, default 40 tasks/s over 2
//!   connections through a follower where there is one; the tasks due at once share a
//!   batch, usually one): submit->completed p50/p99 from the scheduled send time, and
//!   the node-recorded stage breakdown (`ClusterView::stages`: each stage measured on
//!   the node that saw both ends);
//! - **saturation**: closed loop over every node's management port (up to 20
//!   connections a node), doubling the tasks in flight from 8 until throughput stops
//!   rising (< 5 % gain, and at least 256 in flight) or `--max-inflight` (1024).
//!
//! Printed side by side: tasks/s at saturation, latency, the loop's µs per task by
//! phase, the ratios the pipeline issue names (3-node / 1-node throughput; 1-node p50
//! against its 5 ms goal), and the cost of one Ed25519 request verification (measured
//! on the host, labelled so).

use crate::report::print_json;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use xdv::mgmt;
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_cluster::mgmt::{
    ClusterView, Denied, MAX_AWAIT_TASKS, Principal, Request, Response, SignedRequest, StageStat,
    Submit, TaskReport,
};
use xdv_cluster::{TaskStatus, Work};
use xdv_net::wire::{self, ClusterMessage, FrameDecoder};
use xdv_types::{NodeId, TaskId, TenantId};

const BOOT: Duration = Duration::from_secs(180);
pub(crate) const TRIVIAL_WAT: &str = r#"(module (func (export "run")))"#;
/// The management port the benchmark's nodes are provisioned with: 24 slots, one
/// source holding 20 while slots are scarce (every host client is 10.0.2.2 through
/// QEMU user networking; the default 8,4 protects a port from one hostile source).
const MGMT_CMDLINE: &str = "mgmt=24,20";
/// Connections the sweep opens to one node's management port (within that share).
const CONNS_PER_NODE: usize = 20;
/// Submissions per `SubmitBatch` by default (`--batch`).
const DEFAULT_BATCH: usize = 32;
/// A level of the saturation sweep runs this long (after its first answers).
const LEVEL: Duration = Duration::from_secs(4);
/// How long a connection is tried again when QEMU's forward does not accept it.
const CONNECT_PATIENCE: Duration = Duration::from_secs(20);
/// No answer on a connection for this long fails the benchmark.
const STALL: Duration = Duration::from_secs(20);

struct Opts {
    rate: f64,
    moderate: Duration,
    max_inflight: usize,
    five: bool,
    /// Submissions per request (0: single `Submit`/`AwaitTask` requests), and how.
    batch: Batching,
    /// Cluster sizes to run (`--nodes 1`: the 1-node cluster only, no ratios).
    sizes: Vec<usize>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        rate: 40.0,
        moderate: Duration::from_secs(5),
        max_inflight: 1024,
        five: false,
        batch: Batching {
            size: DEFAULT_BATCH,
            split: false,
        },
        sizes: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<f64> {
            it.next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|&v| v > 0.0)
                .ok_or_else(|| anyhow!("{name} needs a positive number"))
        };
        match a.as_str() {
            "--rate" => o.rate = num("--rate")?,
            "--seconds" => o.moderate = Duration::from_secs_f64(num("--seconds")?),
            "--max-inflight" => o.max_inflight = num("--max-inflight")? as usize,
            "--five" => o.five = true,
            "--nodes" => {
                let n = it
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|n| matches!(n, 1 | 3 | 5))
                    .ok_or_else(|| anyhow!("--nodes needs 1, 3 or 5"))?;
                o.sizes.push(n);
            }
            "--split" => o.batch.split = true,
            "--batch" => {
                o.batch.size = it
                    .next()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&v| v <= xdv_cluster::mgmt::MAX_BATCH_SUBMISSIONS)
                    .ok_or_else(|| {
                        anyhow!(
                            "--batch needs 0 (single requests) to {}",
                            xdv_cluster::mgmt::MAX_BATCH_SUBMISSIONS
                        )
                    })?
            }
            other => bail!(
                "unknown argument `{other}` (have --rate TASKS_PER_S, --seconds S, --max-inflight N, --batch N, --split, --five, --nodes N (repeatable: only these cluster sizes, no ratios))"
            ),
        }
    }
    Ok(o)
}

/// How a connection sends its tasks.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Batching {
    /// Submissions per request: 0 sends single `Submit`/`AwaitTask` requests.
    pub(crate) size: usize,
    /// A batch as `SubmitBatch` + `AwaitTasks` (two requests) instead of one
    /// `RunBatch`.
    pub(crate) split: bool,
}

impl Batching {
    /// One `Submit` and one `AwaitTask` per task.
    pub(crate) const SINGLE: Batching = Batching {
        size: 0,
        split: false,
    };

    fn describe(self) -> String {
        match (self.size, self.split) {
            (0, _) => "two per task (Submit, AwaitTask)".into(),
            (n, true) => format!("two per batch of up to {n} tasks (SubmitBatch, AwaitTasks)"),
            (n, false) => format!("one per batch of up to {n} tasks (RunBatch)"),
        }
    }
}

/// One pipelined management connection.
struct Pipe {
    stream: TcpStream,
    decoder: FrameDecoder,
    msg_id: u64,
    batch: Batching,
    /// Submit requests sent and not yet answered: when each of their tasks was due.
    submits: VecDeque<Vec<Instant>>,
    /// `RunBatch`es sent and not yet answered, by first sequence number: when each
    /// of their tasks was due.
    runs: BTreeMap<u64, Vec<Instant>>,
    /// Submit answered: (task's start, when the submit was answered).
    waiting: HashMap<TaskId, (Instant, Instant)>,
    /// Answers received on this connection.
    answers: u64,
    /// Since when requests have been out on this connection with no answer yet
    /// (`None` until one is sent).
    first_unanswered: Option<Instant>,
}

/// What one connection measured.
#[derive(Default)]
pub(crate) struct Tally {
    /// Submit-to-completed, ms.
    total_ms: Vec<f64>,
    /// Submit sent to `Submitted` received, ms (host view of client->node->log->reply).
    submit_ms: Vec<f64>,
    /// When each task completed.
    pub(crate) done_at: Vec<Instant>,
    /// When the paces started (every connection open).
    pub(crate) start: Option<Instant>,
}

impl Pipe {
    fn connect(port: u16, batch: Batching) -> Result<Pipe> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // QEMU's user-network forward sometimes accepts nothing for seconds on a busy
        // host (the node never sees the SYN): try again before calling it a failure.
        let first = Instant::now();
        let stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) if first.elapsed() < CONNECT_PATIENCE => {
                    eprintln!("  connecting to 127.0.0.1:{port}: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("connecting to 127.0.0.1:{port}"));
                }
            }
        };
        stream.set_nodelay(true)?;
        let mut p = Pipe {
            stream,
            decoder: FrameDecoder::new(),
            msg_id: 0,
            batch,
            submits: VecDeque::new(),
            runs: BTreeMap::new(),
            waiting: HashMap::new(),
            answers: 0,
            first_unanswered: None,
        };
        p.ping(port)?;
        Ok(p)
    }

    /// Round trips of `n` `Ping`s, one at a time, sorted (ms).
    fn rtts(&mut self, port: u16, n: usize) -> Result<Vec<f64>> {
        let mut v = (0..n)
            .map(|_| self.ping(port).map(ms))
            .collect::<Result<Vec<f64>>>()?;
        v.sort_by(f64::total_cmp);
        Ok(v)
    }

    /// One `Ping` answered: the guest has the connection. QEMU's user network
    /// listens on the host with a backlog of one and passes a connection on only
    /// when its loop gets to it, so a client that opens the next connection before
    /// the node has this one loses that SYN to a full backlog and waits out the
    /// host's retransmission (1 s, then 3 s).
    fn ping(&mut self, port: u16) -> Result<Duration> {
        let sent = Instant::now();
        self.msg_id += 1;
        let ping = wire::Ping {
            seq: self.msg_id,
            payload: Vec::new(),
        };
        let frame = mgmt::host_frame(self.msg_id, &ClusterMessage::Ping(ping))?;
        self.stream.write_all(&frame)?;
        let until = Instant::now() + CONNECT_PATIENCE;
        let mut ponged = false;
        while !ponged && Instant::now() < until {
            self.read_frames(Duration::from_millis(200), |f| {
                ponged |= matches!(f.message, ClusterMessage::Pong(_));
                Ok(())
            })
            .with_context(|| format!("127.0.0.1:{port} before its first pong"))?;
        }
        if ponged {
            return Ok(sent.elapsed());
        }
        bail!(
            "127.0.0.1:{port}: no pong within {} s of connecting",
            CONNECT_PATIENCE.as_secs()
        )
    }

    fn in_flight(&self) -> usize {
        self.submits.iter().map(Vec::len).sum::<usize>()
            + self.runs.values().map(Vec::len).sum::<usize>()
            + self.waiting.len()
    }

    /// Requests sent and not answered (submissions and runs).
    fn unanswered(&self) -> usize {
        self.submits.len() + self.runs.len()
    }

    /// The same connection opened again, with what was sent and not answered sent
    /// again: `RunBatch`es under their own sequence numbers (a batch the node had
    /// already taken is answered, not run twice), other submissions as new ones.
    /// Only for a connection that had no answer yet (nothing is awaited on it).
    fn reopen(mut self, port: u16, keys: &mgmt::Keys, module: &[u8]) -> Result<Pipe> {
        debug_assert!(self.waiting.is_empty());
        let runs = std::mem::take(&mut self.runs);
        let due: Vec<Instant> = self.submits.drain(..).flatten().collect();
        let mut p = Pipe::connect(port, self.batch)?;
        for (first, due) in runs {
            p.send_run(keys, module, first, due)?;
        }
        for chunk in due.chunks(self.batch.size.max(1)) {
            p.submit(keys, module, chunk.to_vec())?;
        }
        Ok(p)
    }

    fn send_run(
        &mut self,
        keys: &mgmt::Keys,
        module: &[u8],
        first: u64,
        due: Vec<Instant>,
    ) -> Result<()> {
        let one = Submit::new(Work::Wasm(module.to_vec()), Vec::new(), 10);
        let items = vec![one; due.len()];
        let tenant = Principal::Tenant(TenantId(1));
        self.send(&mgmt::signed_at(
            keys,
            tenant,
            first,
            Request::RunBatch(items),
        )?)?;
        self.runs.insert(first, due);
        Ok(())
    }

    fn send(&mut self, req: &SignedRequest) -> Result<()> {
        self.msg_id += 1;
        let frame = mgmt::host_frame(
            self.msg_id,
            &ClusterMessage::MgmtRequest(xdv_cluster::mgmt::encode(req)),
        )?;
        self.stream.write_all(&frame)?;
        if self.answers == 0 && self.first_unanswered.is_none() {
            self.first_unanswered = Some(Instant::now());
        }
        Ok(())
    }

    /// Submits tasks due at `due` (one request: a `Submit`, or a `RunBatch` or
    /// `SubmitBatch` of `due.len()` under one signature).
    fn submit(&mut self, keys: &mgmt::Keys, module: &[u8], due: Vec<Instant>) -> Result<()> {
        let one = Submit::new(Work::Wasm(module.to_vec()), Vec::new(), 10);
        let tenant = Principal::Tenant(TenantId(1));
        if self.batch.size == 0 {
            assert_eq!(due.len(), 1, "single requests carry one task");
            self.send(&mgmt::signed(keys, tenant, Request::Submit(one))?)?;
            self.submits.push_back(due);
            return Ok(());
        }
        let n = due.len();
        let first = mgmt::next_seqs(n as u64);
        if !self.batch.split {
            return self.send_run(keys, module, first, due);
        }
        let items = vec![one; n];
        self.send(&mgmt::signed_at(
            keys,
            tenant,
            first,
            Request::SubmitBatch(items),
        )?)?;
        self.submits.push_back(due);
        Ok(())
    }

    fn await_tasks(&mut self, keys: &mgmt::Keys, tasks: Vec<TaskId>) -> Result<()> {
        let tenant = Principal::Tenant(TenantId(1));
        for chunk in tasks.chunks(MAX_AWAIT_TASKS) {
            let req = match chunk {
                [task] if self.batch.size == 0 => Request::AwaitTask { task: *task },
                _ => Request::AwaitTasks {
                    tasks: chunk.to_vec(),
                },
            };
            self.send(&mgmt::signed(keys, tenant, req)?)?;
        }
        Ok(())
    }

    /// Reads what arrived within `wait` and hands every whole frame in it to
    /// `frame`, in order.
    fn read_frames(
        &mut self,
        wait: Duration,
        mut frame: impl FnMut(wire::FrameRepr) -> Result<()>,
    ) -> Result<()> {
        let mut buf = [0u8; 16 * 1024];
        if !readable_within(&self.stream, wait.max(Duration::from_micros(50)))? {
            return Ok(());
        }
        match self.stream.read(&mut buf) {
            Ok(0) => bail!("the node closed the connection"),
            Ok(n) => {
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let used = self.decoder.push(rest);
                    if used == 0 {
                        bail!("answer larger than a frame");
                    }
                    rest = &rest[used..];
                    while let Some(f) = self.decoder.pop().map_err(|e| anyhow!("bad frame: {e}"))? {
                        frame(f)?;
                    }
                }
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what arrived within `wait` and handles every answer in it.
    fn receive(&mut self, keys: &mgmt::Keys, wait: Duration, t: &mut Tally) -> Result<usize> {
        let mut answers = Vec::new();
        self.read_frames(wait, |f| {
            match f.message {
                ClusterMessage::MgmtResponse(b) => answers.push(b),
                ClusterMessage::Error(e) => bail!("node error {}: {}", e.code, e.text),
                _ => {}
            }
            Ok(())
        })?;
        for bytes in answers {
            let r: Response =
                xdv_cluster::mgmt::decode(&bytes).map_err(|e| anyhow!("bad answer: {e}"))?;
            self.answer(keys, r, t)?;
        }
        Ok(t.done_at.len())
    }

    /// The tasks of the oldest submit request were placed.
    fn placed(&mut self, keys: &mgmt::Keys, tasks: Vec<TaskId>, t: &mut Tally) -> Result<()> {
        let now = Instant::now();
        let due = self
            .submits
            .pop_front()
            .ok_or_else(|| anyhow!("an answer to no submission"))?;
        if due.len() != tasks.len() {
            bail!("{} tasks placed for {} submissions", tasks.len(), due.len());
        }
        for (&task, d) in tasks.iter().zip(due) {
            t.submit_ms.push(ms(now - d));
            self.waiting.insert(task, (d, now));
        }
        self.await_tasks(keys, tasks)
    }

    /// `task` ended as `status` (`None`: finished and no longer retained).
    fn report(&mut self, task: TaskId, status: Option<&TaskStatus>, t: &mut Tally) -> Result<bool> {
        let now = Instant::now();
        let Some(&(due, _)) = self.waiting.get(&task) else {
            bail!("an answer about task {} nobody waits for", task.0)
        };
        match status {
            Some(TaskStatus::Completed { .. }) | None => {
                self.waiting.remove(&task);
                t.total_ms.push(ms(now - due));
                t.done_at.push(now);
                Ok(true)
            }
            Some(TaskStatus::Rejected(r)) => bail!("task {} refused: {r}", task.0),
            // The node's reply timeout passed first: wait again.
            Some(_) => Ok(false),
        }
    }

    /// Reports on awaited tasks: the finished ones counted, the others awaited again
    /// (the node's reply timeout passed first).
    fn reports(&mut self, keys: &mgmt::Keys, reports: &[TaskReport], t: &mut Tally) -> Result<()> {
        let mut again = Vec::new();
        for r in reports {
            if !self.report(r.task, Some(&r.status), t)? {
                again.push(r.task);
            }
        }
        if !again.is_empty() {
            self.await_tasks(keys, again)?;
        }
        Ok(())
    }

    fn answer(&mut self, keys: &mgmt::Keys, r: Response, t: &mut Tally) -> Result<()> {
        self.answers += 1;
        match r {
            Response::Submitted { task } | Response::Refused(Denied::Duplicate { task }) => {
                self.placed(keys, vec![task], t)
            }
            Response::SubmittedBatch { tasks } => self.placed(keys, tasks, t),
            Response::Task { task, status, .. } => {
                if !self.report(task, Some(&status), t)? {
                    self.await_tasks(keys, vec![task])?;
                }
                Ok(())
            }
            Response::TaskReports(reports) => self.reports(keys, &reports, t),
            Response::BatchRan { seq, reports } => {
                let now = Instant::now();
                let due = self
                    .runs
                    .remove(&seq)
                    .ok_or_else(|| anyhow!("an answer to no RunBatch (seq {seq})"))?;
                if due.len() != reports.len() {
                    bail!("{} reports for {} submissions", reports.len(), due.len());
                }
                for (r, d) in reports.iter().zip(due) {
                    self.waiting.insert(r.task, (d, now));
                }
                self.reports(keys, &reports, t)
            }
            other => bail!(
                "unexpected answer {other:?} ({} submit requests in flight)",
                self.unanswered()
            ),
        }
    }
}

/// Waits until `stream` has something to read (or was closed) or `wait` passed.
/// `ppoll` sleeps on a high-resolution timer; a socket read timeout
/// (`SO_RCVTIMEO`) counts in kernel ticks instead — on this host (HZ=250) a 0.5 ms
/// timeout slept 8 ms, which made open-loop clients send late and counted the
/// lateness as latency.
fn readable_within(stream: &TcpStream, wait: Duration) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fd` is one valid pollfd and `ts` a valid timespec, both live for the
    // call; a null signal mask leaves the thread's mask unchanged; the descriptor
    // belongs to `stream`, borrowed for the call.
    let n = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e.into());
    }
    Ok(n > 0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// How a connection paces its submissions, from the load's start (once every
/// connection of the load is open).
#[derive(Copy, Clone)]
pub(crate) enum Pace {
    /// Keep `window` tasks in flight for `run`.
    Closed { window: usize, run: Duration },
    /// One task every `every`, from `offset`, `count` in all.
    Open {
        every: Duration,
        offset: Duration,
        count: usize,
    },
}

/// A connection that has had no answer this long, with requests out, is opened
/// again and its `RunBatch`es sent again with the same sequence numbers (the node
/// answers a retried batch without running anything twice). Seen on a busy host:
/// QEMU's user network accepted a connection on the host side and never passed it
/// to the guest.
const SILENT: Duration = Duration::from_secs(5);

/// Drives one connection (`p`, open) from `start`; returns what it measured.
fn drive(
    mut p: Pipe,
    port: u16,
    keys: &mgmt::Keys,
    module: &[u8],
    pace: Pace,
    start: Instant,
) -> Result<Tally> {
    let batch = p.batch;
    let most = batch.size.max(1);
    let mut reopened = 0;
    let mut t = Tally::default();
    let mut sent = 0usize;
    let mut last_progress = Instant::now();
    let mut done_before = 0;
    loop {
        let now = Instant::now();
        let wait = match pace {
            Pace::Closed { window, run } => {
                let until = start + run;
                while now < until && p.in_flight() < window {
                    let n = (window - p.in_flight()).min(most);
                    p.submit(keys, module, vec![Instant::now(); n])?;
                    sent += n;
                }
                if now >= until && p.in_flight() == 0 {
                    return Ok(t);
                }
                Duration::from_millis(5)
            }
            Pace::Open {
                every,
                offset,
                count,
            } => {
                let start = start + offset;
                let mut due = Vec::new();
                while sent < count && start + every * sent as u32 <= now {
                    due.push(start + every * sent as u32);
                    sent += 1;
                    if due.len() == most {
                        p.submit(keys, module, std::mem::take(&mut due))?;
                    }
                }
                if !due.is_empty() {
                    p.submit(keys, module, due)?;
                }
                if sent == count && p.in_flight() == 0 {
                    return Ok(t);
                }
                let next = start + every * sent as u32;
                if sent < count {
                    next.saturating_duration_since(now)
                } else {
                    Duration::from_millis(5)
                }
            }
        };
        let done = match p.receive(keys, wait, &mut t) {
            Ok(done) => done,
            // The node refused the connection at once (a slot of the previous level
            // not free yet): open it again and send what was in flight on it.
            Err(e) if p.answers == 0 && reopened < MAX_REOPEN && refused(&e) => {
                reopened += 1;
                std::thread::sleep(Duration::from_millis(300));
                p = p.reopen(port, keys, module)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if p.answers == 0
            && p.first_unanswered.is_some_and(|t| t.elapsed() > SILENT)
            && reopened < MAX_REOPEN
        {
            reopened += 1;
            eprintln!(
                "  127.0.0.1:{port}: no answer on a new connection for {} s; opening it again",
                SILENT.as_secs()
            );
            p = p.reopen(port, keys, module)?;
            continue;
        }
        if done != done_before || p.in_flight() == 0 {
            done_before = done;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL {
            let mut tasks: Vec<TaskId> = p.waiting.keys().copied().collect();
            tasks.sort();
            return Err(Stall {
                port,
                in_flight: p.in_flight(),
                submits: p.unanswered(),
                tasks,
            }
            .into());
        }
    }
}

/// No task finished on a connection for [`STALL`]: what it still waited for.
#[derive(Debug)]
struct Stall {
    port: u16,
    in_flight: usize,
    /// Submit requests not answered.
    submits: usize,
    /// Placed tasks not reported finished.
    tasks: Vec<TaskId>,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no task finished for {} s ({} in flight: {} submit requests unanswered, tasks {:?})",
            STALL.as_secs(),
            self.in_flight,
            self.submits,
            self.tasks.iter().map(|t| t.0).collect::<Vec<_>>()
        )
    }
}

impl std::error::Error for Stall {}

/// After a stall: what the node says about the tasks the connection waited for.
fn explain_stall(tb: &Testbed, all: &[usize], s: &Stall) {
    for &i in all {
        if let Ok(v) = tb.view(i) {
            eprintln!(
                "  node {}: {} tasks, {} completed, {} pending, applied {}",
                v.node, v.tasks, v.completed, v.pending, v.applied
            );
        }
    }
    for &task in s.tasks.iter().take(8) {
        let answer = mgmt::signed(
            &tb.keys,
            Principal::Tenant(TenantId(1)),
            Request::TaskStatus { task },
        )
        .and_then(|req| {
            mgmt::call_until_decided(s.port, &req, Instant::now() + Duration::from_secs(15))
        });
        match answer {
            Ok(Response::Task { status, .. }) => eprintln!("  task {}: {status:?}", task.0),
            Ok(other) => eprintln!("  task {}: {}", task.0, mgmt::response_kind(&other)),
            Err(e) => eprintln!("  task {}: no answer: {e:#}", task.0),
        }
    }
}

/// Times a connection the node refused before any answer is opened again.
const MAX_REOPEN: u32 = 5;

/// Whether `e` is the node refusing or resetting a connection.
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
        )
    }) || e.to_string().contains("closed the connection")
}

/// Runs `paces` (port, pace) on one thread each; merges their tallies.
///
/// The connections are opened one after another first, and the paces start together
/// once all are open (`Tally::start`): QEMU's user network listens with a backlog of
/// one, so connections opened all at once lose SYNs and wait out the host's
/// retransmission (1 s, then 3 s) — time that would count as the load's.
pub(crate) fn load(
    keys: &mgmt::Keys,
    module: &[u8],
    paces: &[(u16, Pace)],
    batch: Batching,
) -> Result<Tally> {
    let pipes = paces
        .iter()
        .map(|&(port, _)| Pipe::connect(port, batch))
        .collect::<Result<Vec<Pipe>>>()?;
    let start = Instant::now();
    let results: Vec<Result<Tally>> = std::thread::scope(|sc| {
        let hs: Vec<_> = pipes
            .into_iter()
            .zip(paces)
            .map(|(p, &(port, pace))| sc.spawn(move || drive(p, port, keys, module, pace, start)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a client thread panicked"))?)
            .collect()
    });
    let mut all = Tally {
        start: Some(start),
        ..Tally::default()
    };
    for r in results {
        let r = r?;
        all.total_ms.extend(r.total_ms);
        all.submit_ms.extend(r.submit_ms);
        all.done_at.extend(r.done_at);
    }
    all.total_ms.sort_by(f64::total_cmp);
    all.submit_ms.sort_by(f64::total_cmp);
    all.done_at.sort();
    Ok(all)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[derive(Clone)]
struct Level {
    inflight: usize,
    conns: usize,
    tasks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Boot-CPU loop time worked per completed task, summed over the nodes, µs.
    busy_us_per_task: f64,
    /// The busiest node's loop: fraction of the level's time it worked.
    busiest_fraction: f64,
    /// The loop's work per completed task by phase, summed over the nodes, µs.
    phases_us_per_task: Vec<(String, f64)>,
    /// Loop iterations per completed task, summed over the nodes.
    iterations_per_task: f64,
    /// Log entries applied per completed task (submissions, completions, timers).
    entries_per_task: f64,
}

/// Loop phase names and µs.
type Phases = Vec<(String, u64)>;

/// The loop's µs per task by phase between two [`busy_us`] readings, `done` tasks apart.
fn per_task(before: &Phases, after: &Phases, done: f64) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(n, us)| {
            let b = before.iter().find(|(m, _)| m == n).map_or(0, |p| p.1);
            (n.clone(), us.saturating_sub(b) as f64 / done)
        })
        .collect()
}

/// Each node's `loop_busy_us` now, its loop phases (summed over the nodes), the
/// nodes' loop iterations (summed) and the most log entries a node has applied.
fn busy_us(tb: &Testbed, all: &[usize]) -> Result<(Vec<u64>, Phases, u64, u64)> {
    let mut busy = Vec::new();
    let mut phases: Phases = Vec::new();
    let mut iterations = 0;
    let mut applied = 0;
    for &i in all {
        let v = tb.view(i)?;
        busy.push(v.loop_busy_us);
        iterations += v.loop_iterations;
        applied = applied.max(v.applied);
        for (name, us) in v.loop_phases_us {
            match phases.iter_mut().find(|(n, _)| *n == name) {
                Some(p) => p.1 += us,
                None => phases.push((name, us)),
            }
        }
    }
    Ok((busy, phases, iterations, applied))
}

struct Run {
    nodes: usize,
    /// The leader's `cluster cost` line before the load.
    cost: String,
    moderate_rate: f64,
    moderate_tasks: usize,
    p50_ms: f64,
    p99_ms: f64,
    submit_p50_ms: f64,
    /// `Ping` round trips host -> node -> host on a management connection, p50/p99
    /// (ms): the client-to-node part of the latency, QEMU's user network included.
    mgmt_rtt_ms: (f64, f64),
    /// (node, its stages) after the moderate phase.
    stages: Vec<(NodeId, String, Vec<StageStat>)>,
    /// The loop's work per task at moderate load, summed over the nodes: in all (µs)
    /// and by phase.
    moderate_busy_us: f64,
    moderate_phases: Vec<(String, f64)>,
    levels: Vec<Level>,
    commit_p50_us: u64,
}

impl Run {
    fn saturation(&self) -> Level {
        self.levels
            .iter()
            .max_by(|a, b| a.tasks_per_s.total_cmp(&b.tasks_per_s))
            .map_or(
                Level {
                    inflight: 0,
                    conns: 0,
                    tasks_per_s: 0.0,
                    p50_ms: f64::NAN,
                    p99_ms: f64::NAN,
                    busy_us_per_task: f64::NAN,
                    busiest_fraction: f64::NAN,
                    phases_us_per_task: Vec::new(),
                    iterations_per_task: f64::NAN,
                    entries_per_task: f64::NAN,
                },
                |l| l.clone(),
            )
    }
}

fn one(nodes: usize, o: &Opts) -> Result<Run> {
    eprintln!("bench cluster: booting {nodes} node(s)...");
    let mut tb = Testbed::launch_with("bench-cluster", nodes, Faults::default(), 1, MGMT_CMDLINE)?;
    let all: Vec<usize> = (1..=nodes).collect();
    let leader = tb.leader(&all, BOOT)?;
    let cost = guest_cost(&mut tb, leader);
    eprintln!("bench cluster: {nodes} node(s): {cost}");
    let via = all.iter().copied().find(|&i| i != leader).unwrap_or(leader);
    let module = wat::parse_str(TRIVIAL_WAT)?;
    // Warm-up: caches, first heartbeats, the leader's first entry of its term.
    let warm = Pace::Closed {
        window: 1,
        run: Duration::from_secs(1),
    };
    load(&tb.keys, &module, &[(tb.port(via), warm)], o.batch)?;
    // The client-to-node part of a request's latency: Ping round trips on a
    // management connection to `via`, one at a time.
    let rtt = Pipe::connect(tb.port(via), o.batch)?.rtts(tb.port(via), 100)?;
    let mgmt_rtt_ms = (pct(&rtt, 0.5), pct(&rtt, 0.99));

    // Moderate load: open loop, 2 connections through `via`.
    let count = (o.rate * o.moderate.as_secs_f64()).ceil() as usize;
    let per = count.div_ceil(2);
    let every = Duration::from_secs_f64(2.0 / o.rate);
    let open = |offset: Duration| Pace::Open {
        every,
        offset,
        count: per,
    };
    eprintln!(
        "bench cluster: {nodes} node(s): moderate load {} tasks/s...",
        o.rate
    );
    let (busy0, phases0, _, _) = busy_us(&tb, &all)?;
    let m = load(
        &tb.keys,
        &module,
        &[
            (tb.port(via), open(Duration::ZERO)),
            (tb.port(via), open(every / 2)),
        ],
        o.batch,
    )?;
    let (busy1, phases1, _, _) = busy_us(&tb, &all)?;
    let done = m.total_ms.len().max(1) as f64;
    let moderate_phases = per_task(&phases0, &phases1, done);
    let moderate_busy_us = busy1
        .iter()
        .sum::<u64>()
        .saturating_sub(busy0.iter().sum::<u64>()) as f64
        / done;
    let mut stages = Vec::new();
    let mut commit_p50_us = 0;
    for &i in &all {
        let v: ClusterView = tb.view(i)?;
        let role = if i == leader {
            "leader"
        } else if i == via {
            "entry"
        } else {
            "follower"
        };
        if i == leader {
            commit_p50_us = v.commit_latency_us.0;
        }
        stages.push((v.node, role.to_string(), v.stages));
    }

    // Saturation: closed loop over every node's port, doubling what is in flight.
    let mut levels: Vec<Level> = Vec::new();
    let mut inflight = 8usize;
    let max_conns = CONNS_PER_NODE * nodes;
    while inflight <= o.max_inflight {
        let conns = inflight.clamp(1, max_conns);
        let window = inflight.div_ceil(conns);
        eprintln!(
            "bench cluster: {nodes} node(s): {inflight} in flight over {conns} connections..."
        );
        // The last level's connections close on the node first.
        std::thread::sleep(Duration::from_secs(1));
        let paces: Vec<(u16, Pace)> = (0..conns)
            .map(|k| {
                let run = LEVEL;
                (tb.port(all[k % nodes]), Pace::Closed { window, run })
            })
            .collect();
        let (busy0, phases0, iter0, applied0) = busy_us(&tb, &all)?;
        let t0 = Instant::now();
        let t = match load(&tb.keys, &module, &paces, o.batch) {
            Ok(t) => t,
            Err(e) => {
                // Past what the cluster can answer in its reply timeout: the sweep ends.
                eprintln!("  overloaded at {inflight} in flight: {e:#}; sweep ends");
                if let Some(stall) = e.downcast_ref::<Stall>() {
                    explain_stall(&tb, &all, stall);
                }
                break;
            }
        };
        let level_s = t0.elapsed().as_secs_f64();
        let start = t.start.unwrap_or(t0);
        let until = start + LEVEL;
        let (busy1, phases1, iter1, applied1) = busy_us(&tb, &all)?;
        let busy: Vec<u64> = busy1
            .iter()
            .zip(&busy0)
            .map(|(b, a)| b.saturating_sub(*a))
            .collect();
        let done = t.done_at.len().max(1) as f64;
        let phases_us_per_task = per_task(&phases0, &phases1, done);
        // Throughput over the middle of the level: after the first second (ramp-up),
        // up to the load's end (the drain after it is not saturation).
        let from = start + Duration::from_secs(1);
        let counted = t
            .done_at
            .iter()
            .filter(|&&d| d >= from && d <= until)
            .count();
        let secs = until.saturating_duration_since(from).as_secs_f64();
        let level = Level {
            inflight: window * conns,
            conns,
            tasks_per_s: counted as f64 / secs,
            p50_ms: pct(&t.total_ms, 0.5),
            p99_ms: pct(&t.total_ms, 0.99),
            busy_us_per_task: busy.iter().sum::<u64>() as f64 / done,
            busiest_fraction: busy.iter().copied().max().unwrap_or(0) as f64 / (level_s * 1e6),
            phases_us_per_task,
            iterations_per_task: iter1.saturating_sub(iter0) as f64 / done,
            entries_per_task: applied1.saturating_sub(applied0) as f64 / done,
        };
        eprintln!(
            "  {:.1} tasks/s, p50 {:.1} ms p99 {:.1} ms",
            level.tasks_per_s, level.p50_ms, level.p99_ms
        );
        let best = levels.iter().map(|l| l.tasks_per_s).fold(0.0, f64::max);
        let gain = level.tasks_per_s / best.max(1e-9);
        levels.push(level);
        if best > 0.0 && gain < 1.05 && inflight >= 256 {
            break;
        }
        inflight *= 2;
    }
    Ok(Run {
        nodes,
        cost,
        moderate_rate: o.rate,
        moderate_tasks: m.total_ms.len(),
        p50_ms: pct(&m.total_ms, 0.5),
        p99_ms: pct(&m.total_ms, 0.99),
        submit_p50_ms: pct(&m.submit_ms, 0.5),
        mgmt_rtt_ms,
        stages,
        moderate_busy_us,
        moderate_phases,
        levels,
        commit_p50_us,
    })
}

/// The node's own `cluster cost` line (Ed25519 check, state hash, SHA-256 per block,
/// measured in the guest while the cluster is idle), or why there is none.
fn guest_cost(tb: &mut Testbed, node: usize) -> String {
    const NEEDLE: &str = "cluster cost:";
    match tb
        .vm(node)
        .command("cluster cost", NEEDLE, Duration::from_secs(30))
    {
        Ok(out) => out
            .rfind(NEEDLE)
            .and_then(|at| out[at..].lines().next())
            .map_or_else(
                || "no cost line".to_string(),
                |l| format!("in the guest: {l}"),
            ),
        Err(e) => format!("no cost line: {e:#}"),
    }
}

/// Host cost of checking one signed request (Ed25519 over its signing bytes), µs.
fn verify_cost_us() -> Result<f64> {
    let keys = mgmt::Keys::generate(1, 1)?;
    let seed = keys.tenant_seed(1)?;
    let pk = xdv_cluster::public_key(&seed);
    let req = mgmt::signed(
        &keys,
        Principal::Tenant(TenantId(1)),
        Request::AwaitTask { task: TaskId(1) },
    )?;
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        if !std::hint::black_box(&req).verify(&pk) {
            bail!("a fresh signature did not verify");
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

/// "name µs, name µs, …".
fn phase_list(phases: &[(String, f64)]) -> String {
    let parts: Vec<String> = phases
        .iter()
        .map(|(n, us)| format!("{n} {us:.0}"))
        .collect();
    parts.join(", ")
}

/// {"name": µs, …} for the JSON line.
fn phase_json(phases: &[(String, f64)]) -> serde_json::Map<String, serde_json::Value> {
    phases
        .iter()
        .map(|(n, us)| (n.clone(), serde_json::json!(us)))
        .collect()
}

fn print_run(r: &Run) {
    let s = r.saturation();
    // A `RunBatch` has no separate placement answer.
    let placed = if r.submit_p50_ms.is_nan() {
        String::new()
    } else {
        format!(" (submit->Submitted p50 {:.1} ms)", r.submit_p50_ms)
    };
    println!(
        "{} node(s): moderate load {:.0} tasks/s ({} tasks, open loop): submit->completed p50 {:.1} ms p99 {:.1} ms{placed}; leader propose->apply p50 {} us; management Ping round trip (host -> node -> host, QEMU user network) p50 {:.2} ms p99 {:.2} ms",
        r.nodes,
        r.moderate_rate,
        r.moderate_tasks,
        r.p50_ms,
        r.p99_ms,
        r.commit_p50_us,
        r.mgmt_rtt_ms.0,
        r.mgmt_rtt_ms.1
    );
    println!("  {}", r.cost);
    println!(
        "  moderate load: node loop busy {:.0} us/task (all nodes); by phase: {}",
        r.moderate_busy_us,
        phase_list(&r.moderate_phases)
    );
    for l in &r.levels {
        println!(
            "  saturation sweep: {:>4} in flight over {:>2} connections: {:>7.1} tasks/s, p50 {:.1} ms p99 {:.1} ms; node loop busy {:.0} us/task (all nodes), busiest node {:.0}% busy",
            l.inflight,
            l.conns,
            l.tasks_per_s,
            l.p50_ms,
            l.p99_ms,
            l.busy_us_per_task,
            l.busiest_fraction * 100.0
        );
        if !l.phases_us_per_task.is_empty() {
            println!(
                "    loop us/task by phase: {}; {:.1} loop iterations/task ({:.0} us each); {:.3} log entries/task",
                phase_list(&l.phases_us_per_task),
                l.iterations_per_task,
                l.busy_us_per_task / l.iterations_per_task.max(1e-9),
                l.entries_per_task
            );
        }
    }
    println!(
        "  saturation: {:.1} tasks/s ({} in flight)",
        s.tasks_per_s, s.inflight
    );
    println!("  stages at moderate load (node-recorded, us p50/p99 (samples)):");
    for (node, role, st) in &r.stages {
        let cells: Vec<String> = st
            .iter()
            .map(|x| format!("{} {}/{} ({})", x.name, x.p50_us, x.p99_us, x.samples))
            .collect();
        println!("    {node} ({role}): {}", cells.join("; "));
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let verify_us = verify_cost_us()?;
    if !o.sizes.is_empty() {
        // Only the sizes asked for: each printed as it ends, no ratios, no JSON line.
        for &n in &o.sizes {
            let r = one(n, &o)?;
            print_run(&r);
            if r.levels.is_empty() {
                bail!("the {n}-node cluster answered no saturation level");
            }
        }
        println!("one Ed25519 request verification: {verify_us:.1} us on the host (not under TCG)");
        println!("(QEMU under TCG; the emulated nodes share the host's cores)");
        return Ok(());
    }
    let runs_1 = one(1, &o)?;
    print_run(&runs_1);
    let mut runs = vec![runs_1, one(3, &o)?];
    if o.five {
        runs.push(one(5, &o)?);
    }
    for r in &runs[1..] {
        print_run(r);
    }
    if runs.iter().any(|r| r.levels.is_empty()) {
        bail!("a cluster answered no saturation level");
    }
    let (one_node, three) = (&runs[0], &runs[1]);
    let ratio = three.saturation().tasks_per_s / one_node.saturation().tasks_per_s;
    println!(
        "ratios: 3-node / 1-node saturation throughput {ratio:.3} (goal >= 0.5); 1-node moderate-load p50 {:.1} ms (goal <= 5 ms); 1-node saturation {:.0} tasks/s (goal >= 2000)",
        one_node.p50_ms,
        one_node.saturation().tasks_per_s
    );
    println!(
        "one Ed25519 request verification: {verify_us:.1} us on the host (not under TCG); {}",
        o.batch.describe()
    );
    println!("(QEMU under TCG; the emulated nodes share the host's cores)");
    let detail = |r: &Run| {
        let s = r.saturation();
        serde_json::json!({
            "saturation_tasks_per_s": s.tasks_per_s, "saturation_inflight": s.inflight,
            "moderate_rate": r.moderate_rate, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "commit_p50_us": r.commit_p50_us,
            "mgmt_rtt_p50_ms": r.mgmt_rtt_ms.0, "mgmt_rtt_p99_ms": r.mgmt_rtt_ms.1,
            "moderate_busy_us_per_task": r.moderate_busy_us,
            "moderate_phases_us_per_task": phase_json(&r.moderate_phases),
            "levels": r.levels.iter().map(|l| serde_json::json!({
                "inflight": l.inflight, "conns": l.conns, "tasks_per_s": l.tasks_per_s,
                "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "busy_us_per_task": l.busy_us_per_task,
                "busiest_fraction": l.busiest_fraction,
                "iterations_per_task": l.iterations_per_task,
                "entries_per_task": l.entries_per_task,
                "phases_us_per_task": phase_json(&l.phases_us_per_task)})).collect::<Vec<_>>(),
            "stages": r.stages.iter().map(|(n, role, st)| serde_json::json!({
                "node": n.0, "role": role,
                "stages": st.iter().map(|x| serde_json::json!({
                    "name": x.name, "p50_us": x.p50_us, "p99_us": x.p99_us,
                    "samples": x.samples})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        })
    };
    let mut extra = serde_json::json!({
        "baseline_is": "the same benchmark on a 1-node cluster (saturation tasks/s)",
        "one_node": detail(one_node), "three_nodes": detail(three),
        "verify_us_host": verify_us, "batch": o.batch.size, "split": o.batch.split,
    });
    if let Some(five) = runs.get(2) {
        extra["five_nodes"] = detail(five);
    }
    print_json(
        "cluster",
        "tasks/s",
        three.saturation().tasks_per_s,
        one_node.saturation().tasks_per_s,
        extra,
    );
    Ok(())
}
