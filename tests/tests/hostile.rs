//! The adversarial suite (hardening issue 13, node issue 12): what a hostile tenant,
//! an unauthenticated flood, slow clients and long console commands can do to a live
//! node. Each test states in a comment what the code before the node refactor and the
//! hardening did, and so why the test failed there.
//!
//! - [`one_node_keeps_serving_through_garbage_floods_and_slow_clients`] (1 node):
//!   case 3 — thousands of malformed management frames in a burst are all refused,
//!   the node keeps serving and its audit log grows by a bounded number of records;
//!   case 4 — sixteen slow clients (eight trickling one byte a second, eight silent)
//!   cannot keep a legitimate client out.
//! - [`three_nodes_keep_consensus_through_a_loop_task_and_long_console_commands`]
//!   (3 nodes): case 1 — a budget over the default ceiling is refused with its
//!   reason; an infinite loop with the ceiling's budget runs on a follower while
//!   that follower keeps answering, another tenant's task completes and nobody is
//!   declared down or re-elected; node issue — `audit stress 20000`, `task run loop`
//!   and `task bench 5000` on the leader's console while the cluster keeps
//!   committing, the leader keeps answering (also while a command runs) and stays
//!   leader in the same term. The loop runs to the end of the test and is never
//!   re-placed (still attempt 1 on its node).
//!
//! The tests boot QEMU nodes and run one at a time (a lock), so that two clusters
//! never share the machine's two cores.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use xdv::mgmt::{self, Client, Keys};
use xdv::qemu::Vm;
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_audit::RecordBody;
use xdv_cluster::mgmt::{ClusterView, Principal, Request, Response, SignedRequest, Submit};
use xdv_cluster::{DEFAULT_TASK_BUDGET_CEILING_TICKS, Outcome, Refusal, TaskStatus, Work};
use xdv_net::wire::{self, ClusterMessage, FrameDecoder, FrameHeader};
use xdv_types::{NodeId, TaskId, TenantId};

const T: Duration = Duration::from_secs(180);

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The operator's status of the node behind `port` and how long it took.
fn status(port: u16, keys: &Keys) -> anyhow::Result<(ClusterView, Duration)> {
    let t0 = Instant::now();
    let v = mgmt::cluster_view(port, keys)?;
    Ok((v, t0.elapsed()))
}

/// Retries a status request until one is answered; panics after `limit`.
fn answered_within(port: u16, keys: &Keys, limit: Duration) -> (ClusterView, Duration) {
    let t0 = Instant::now();
    loop {
        let last = match status(port, keys) {
            Ok((v, _)) => return (v, t0.elapsed()),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            t0.elapsed() < limit,
            "no status answer within {limit:?} (last: {last})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number after the last `key` in the output of console command `cmd`.
fn console_number(vm: &mut Vm, cmd: &str, key: &str) -> u64 {
    let out = vm.command(cmd, key, T).unwrap();
    out.rsplit(key)
        .next()
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{key}` in `{cmd}`: {out}"))
}

/// Audit records of the node's chain in its RAM file, from the start of the region
/// up to the last one that verifies (the node may be writing the next).
fn audit_records(ram: &std::path::Path, node: usize) -> Vec<RecordBody> {
    let bytes = std::fs::read(ram).unwrap();
    let off = xdv_audit::find_region(&bytes).expect("no audit region in the RAM file");
    let region = &bytes[off..off + xdv_audit::DEFAULT_REGION_SIZE as usize];
    xdv_audit::format::Records::new(region, NodeId(node as u32))
        .map_while(Result::ok)
        .map(|r| r.body)
        .collect()
}

fn frame(msg: &ClusterMessage, id: u64) -> Vec<u8> {
    let hdr = FrameHeader {
        source: wire::HOST_NODE,
        target: NodeId(0),
        timestamp: xdv_types::Timestamp(id),
        message_id: id,
    };
    wire::encode_frame(&hdr, msg).unwrap()
}

/// Connects to the node's management port.
///
/// The port is QEMU's user-network forward, whose host socket listens with a backlog of
/// one (libslirp's `tcp_listen`) and is accepted only when QEMU's main loop runs: when
/// several connections arrive at once the host kernel drops the extra SYNs and retries
/// them after 1, 3, 7, 15 s. On loaded CI machines one of the flood's five connections
/// once went unaccepted for 2 s and once for 10 s (the node never saw it: nothing of
/// the node is tested by that wait). So try for up to a minute, and say how long it
/// took when it was more than a second, so a stall is visible in the test's output.
fn connect(port: u16) -> std::io::Result<TcpStream> {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match connect_once(port) {
            Ok(s) => {
                if start.elapsed() > Duration::from_secs(1) {
                    eprintln!(
                        "connect to :{port} took {:?} ({attempts} attempts)",
                        start.elapsed()
                    );
                }
                return Ok(s);
            }
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                eprintln!("connect to :{port}: {e} after {:?}; again", start.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Shrinks `s`'s receive buffer (the kernel doubles it and keeps a minimum).
fn small_receive_buffer(s: &TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: `s` owns a valid socket descriptor for this call; SO_RCVBUF takes an
    // int, passed by pointer with its exact size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt SO_RCVBUF: {}",
        std::io::Error::last_os_error()
    );
}

/// One connection attempt of up to 10 s (three SYNs).
fn connect_once(port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(10))
}

/// Reads management responses from `s` until `n` arrived or `limit` passed.
fn read_responses(s: &mut TcpStream, n: usize, limit: Duration) -> Vec<Response> {
    read_responses_ended(s, n, limit).0
}

/// [`read_responses`], also saying how the reading ended (for a failure's message).
fn read_responses_ended(s: &mut TcpStream, n: usize, limit: Duration) -> (Vec<Response>, String) {
    let start = Instant::now();
    let end = start + limit;
    let mut ended = String::from("all read");
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while got.len() < n && Instant::now() < end {
        while let Ok(Some(f)) = dec.pop() {
            if let ClusterMessage::MgmtResponse(b) = f.message {
                got.push(xdv_cluster::mgmt::decode(&b).unwrap());
            }
        }
        match s.read(&mut buf) {
            Ok(0) => {
                ended = format!("closed by the other end after {:?}", start.elapsed());
                break;
            }
            Ok(k) => {
                let mut rest = &buf[..k];
                while !rest.is_empty() {
                    let used = dec.push(rest);
                    rest = &rest[used..];
                    if used == 0 {
                        while let Ok(Some(f)) = dec.pop() {
                            if let ClusterMessage::MgmtResponse(b) = f.message {
                                got.push(xdv_cluster::mgmt::decode(&b).unwrap());
                            }
                        }
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                ended = format!("{e} after {:?}", start.elapsed());
                break;
            }
        }
    }
    while let Ok(Some(f)) = dec.pop() {
        if let ClusterMessage::MgmtResponse(b) = f.message {
            got.push(xdv_cluster::mgmt::decode(&b).unwrap());
        }
    }
    if got.len() < n && Instant::now() >= end {
        ended = format!("nothing more within {limit:?}");
    }
    (got, ended)
}

/// A slow client until `stop`: connects, then either sends one byte of a valid-looking
/// frame per second (`trickle`) or nothing, and reconnects 200 ms after the node
/// closes it. Returns how many connections it made.
fn slow_client(port: u16, trickle: bool, bytes: Vec<u8>, stop: Arc<AtomicBool>) -> u64 {
    let mut connections = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = connect_once(port) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        connections += 1;
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut at = 0;
        let mut one = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            if trickle {
                if s.write_all(&bytes[at % bytes.len()..][..1]).is_err() {
                    break;
                }
                at += 1;
            }
            match s.read(&mut one) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    connections
}

/// The `peers` command's management line (`mgmt: N frames …, slots busy …`).
fn mgmt_line(vm: &mut Vm) -> String {
    let out = vm.command("peers", "evicted ", T).unwrap();
    out.lines()
        .rfind(|l| l.starts_with("mgmt: "))
        .unwrap_or_else(|| panic!("no mgmt line: {out}"))
        .to_string()
}

/// The management frames the node received so far (the number opening `mgmt_line`).
fn mgmt_frames_received(vm: &mut Vm) -> u64 {
    let line = mgmt_line(vm);
    line["mgmt: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no mgmt frame count in {line}"))
}

/// `peers`' management line: (busy slots, closes by reason in the printed order:
/// handshake, read-deadline, idle, reply-wait, source-share, evicted).
fn mgmt_slots(vm: &mut Vm) -> (u64, [u64; 6]) {
    let line = mgmt_line(vm);
    let after = |key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no `{key}` in {line}"))
    };
    (
        after("slots busy "),
        [
            after("handshake "),
            after("read-deadline "),
            after("idle "),
            after("reply-wait "),
            after("source-share "),
            after("evicted "),
        ],
    )
}

#[test]
fn one_node_keeps_serving_through_garbage_floods_and_slow_clients() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let mut cl = Testbed::launch("hostile-1", 1, Faults::default(), 21).unwrap();
    let port = cl.port(1);
    cl.leader(&[1], T).unwrap();
    let ram = cl.dir.join("node1.ram");

    // ---- Case 3: a burst of malformed management frames (no key needed). ----
    // Before the hardening every refusal was one audit record: 5000 frames were 5000
    // records (40 000 filled the 4 MiB region and silenced the node). Now the first
    // refusal of each 1 s window is recorded in full and the rest as one summary.
    const CONNS: usize = 5;
    const PER_CONN: usize = 1000;
    let records_before = audit_records(&ram, 1).len();
    let refused_before = console_number(cl.vm(1), "cluster", "refused-requests ");
    // The flood's five connections come from one source: start it once the node has
    // let go of the earlier status connections, or slots look scarce and the source's
    // fifth connection is closed by the per-source share (policy, not a fault).
    let settle = Instant::now() + Duration::from_secs(15);
    while mgmt_slots(cl.vm(1)).0 > 0 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
    }
    let garbage: Vec<u8> = (0..PER_CONN)
        .flat_map(|k| frame(&ClusterMessage::MgmtRequest(vec![0xEE; 64]), k as u64 + 1))
        .collect();
    let frames_before = mgmt_frames_received(cl.vm(1));
    let burst = Instant::now();
    let senders: Vec<_> = (0..CONNS)
        .map(|_| {
            let bytes = garbage.clone();
            std::thread::spawn(move || {
                let mut tries = Vec::new();
                loop {
                    let mut s = connect(port).unwrap();
                    let local = s.local_addr().unwrap();
                    let wrote = s.write_all(&bytes);
                    let (got, ended) =
                        read_responses_ended(&mut s, PER_CONN, Duration::from_secs(60));
                    tries.push(format!(
                        "{local}: wrote {wrote:?}, {} answers, {ended}",
                        got.len()
                    ));
                    // QEMU's forward sometimes accepts a host connection and resets it
                    // without ever opening it to the guest (captured with XDV_PCAP_DIR:
                    // no SYN reached the node). Such a connection is sent again; that
                    // the node saw no frame of it is checked below from its own count.
                    if got.is_empty() && ended.starts_with("Connection reset") && tries.len() < 3 {
                        continue;
                    }
                    return (got, tries);
                }
            })
        })
        .collect();
    let mut replies: Vec<Response> = Vec::new();
    let mut per_conn = Vec::new();
    for h in senders {
        let (got, tries) = h.join().unwrap();
        if tries.len() > 1 {
            eprintln!("flood connection sent again: {tries:#?}");
        }
        per_conn.extend(tries);
        replies.extend(got);
    }
    let burst_s = burst.elapsed().as_secs_f64();
    let frames_seen = mgmt_frames_received(cl.vm(1)) - frames_before;
    if replies.len() != CONNS * PER_CONN || frames_seen != replies.len() as u64 {
        eprintln!("the node received {frames_seen} flood frames");
        eprintln!("per connection: {per_conn:#?}");
        eprintln!(
            "management slots and closes by reason: {:?}",
            mgmt_slots(cl.vm(1))
        );
        let out = cl.vm(1).output();
        let tail: Vec<&str> = out.lines().rev().take(60).collect();
        eprintln!("node console, last lines:");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    assert_eq!(replies.len(), CONNS * PER_CONN, "some frames got no answer");
    // Every frame the node received was answered once: a connection sent again had
    // reached the node with nothing.
    assert_eq!(
        frames_seen,
        replies.len() as u64,
        "frames received vs answered"
    );
    assert!(
        replies.iter().all(|r| matches!(
            r,
            Response::Refused(xdv_cluster::mgmt::Denied::Malformed(_))
        )),
        "a malformed frame was not refused as malformed"
    );
    // The node kept serving, counted every refusal, and the last window is closed.
    answered_within(port, &cl.keys, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    answered_within(port, &cl.keys, Duration::from_secs(5));
    let refused = console_number(cl.vm(1), "cluster", "refused-requests ") - refused_before;
    assert!(refused >= (CONNS * PER_CONN) as u64, "refused {refused}");
    let records = audit_records(&ram, 1);
    let new = &records[records_before..];
    let refusal_records = new
        .iter()
        .filter(|b| matches!(b, RecordBody::RequestRefused { .. }))
        .count();
    // One full record and one summary per 1 s window the burst touched.
    let windows = burst_s.ceil() as usize + 2;
    assert!(
        refusal_records <= 2 * windows,
        "{refusal_records} refusal records for {refused} refusals in {burst_s:.1} s"
    );
    assert!(
        new.len() < 100,
        "the audit log grew by {} records during the burst",
        new.len()
    );
    let summary = new.iter().any(|b| {
        matches!(b, RecordBody::RefusalSummary { refused, .. } if *refused > 0)
            || matches!(b, RecordBody::RequestRefused { reason } if reason.contains("more refusals"))
    });
    assert!(summary, "no summary record: {new:?}");
    eprintln!(
        "case 3: {refused} refusals in {burst_s:.1} s -> {refusal_records} refusal records, {} records in all",
        new.len()
    );

    // ---- Case 3b: a client that reads its answers late. ----
    // It pipelines 4000 requests and reads nothing for 3 s, through a 4 KiB receive
    // buffer: the answers (about 0.5 MB) overflow the host socket, QEMU's forward and
    // the node's 256 KiB send buffer. Before the reply queue (`MGMT_OUTQ_BYTES`) a reply
    // that did not fit the send buffer was dropped without a word, and the client
    // waited for it forever (`bench cluster` sweeps ended "no task finished for 20 s").
    const LATE: usize = 4000;
    let mut s = connect(port).unwrap();
    small_receive_buffer(&s, 4096);
    let late: Vec<u8> = (0..LATE)
        .flat_map(|k| frame(&ClusterMessage::MgmtRequest(vec![0xEE; 64]), k as u64 + 1))
        .collect();
    s.write_all(&late).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let got = read_responses(&mut s, LATE, Duration::from_secs(60));
    assert_eq!(got.len(), LATE, "answers lost for a client that read late");
    eprintln!("case 3b: {LATE} pipelined requests read 3 s late: every answer arrived");
    drop(s);

    // ---- Case 4: slow clients. ----
    // Before the hardening the 8 management slots had no deadline of any kind: the
    // first 8 of these clients held every slot for as long as they liked and the
    // legitimate client's connection was reset by the node (no listening socket) on
    // every try, so no status request was ever answered.
    let stop = Arc::new(AtomicBool::new(false));
    let status_req = mgmt::signed(&cl.keys, Principal::Operator, Request::ClusterStatus).unwrap();
    let start_of_frame = frame(
        &ClusterMessage::MgmtRequest(xdv_cluster::mgmt::encode(&status_req)),
        1,
    );
    let attackers: Vec<_> = (0..16)
        .map(|k| {
            let (stop, bytes) = (stop.clone(), start_of_frame.clone());
            std::thread::spawn(move || slow_client(port, k % 2 == 0, bytes, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let mut waits = Vec::new();
    for _ in 0..5 {
        let (v, took) = answered_within(port, &cl.keys, Duration::from_secs(5));
        assert_eq!(v.node, NodeId(1));
        waits.push(took);
        std::thread::sleep(Duration::from_millis(700));
    }
    let (busy, closed) = mgmt_slots(cl.vm(1));
    stop.store(true, Ordering::Relaxed);
    let connections: u64 = attackers.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!(
        "case 4: status answered after {waits:?} with 16 slow clients ({connections} connections); slots busy {busy}, closed [handshake, read-deadline, idle, reply-wait, source-share, evicted] = {closed:?}"
    );
    assert!(busy <= 8);
    assert!(
        closed.iter().sum::<u64>() >= 16,
        "slow clients were not closed: {closed:?}"
    );
    // Once they are gone the port is all the legitimate client's again.
    answered_within(port, &cl.keys, Duration::from_secs(5));
    eprintln!("wall time {:.1} s", started.elapsed().as_secs_f64());
}

/// A tenant-signed submission of `work` with `budget`, optionally pinned.
fn submission(
    keys: &Keys,
    tenant: u32,
    work: Work,
    budget_ticks: u64,
    pin: Option<usize>,
) -> SignedRequest {
    mgmt::signed(
        keys,
        Principal::Tenant(TenantId(tenant)),
        Request::Submit(Submit {
            pin: pin.map(|n| NodeId(n as u32)),
            ..Submit::new(work, Vec::new(), budget_ticks)
        }),
    )
    .unwrap()
}

fn task_status(port: u16, keys: &Keys, tenant: u32, task: TaskId) -> TaskStatus {
    let req = mgmt::signed(
        keys,
        Principal::Tenant(TenantId(tenant)),
        Request::TaskStatus { task },
    )
    .unwrap();
    match Client::connect(port, Duration::from_secs(2))
        .unwrap()
        .call(&req, Duration::from_secs(5))
        .unwrap()
    {
        Response::Task { status, .. } => status,
        other => panic!("task status: {other:?}"),
    }
}

/// The last `the node was served at least every N us` of a command's output.
fn served_every(out: &str) -> u64 {
    out.rsplit("served at least every ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no `served at least every` in {}",
                &out[out.len().saturating_sub(3000)..]
            )
        })
}

/// One status answer from the leader during the console phase.
struct Answer {
    at: Instant,
    took: Duration,
    role: String,
    term: u64,
}

#[test]
fn three_nodes_keep_consensus_through_a_loop_task_and_long_console_commands() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let mut cl = Testbed::launch("hostile-3", 3, Faults::default(), 23).unwrap();
    let all = [1usize, 2, 3];
    let leader = cl.leader(&all, T).unwrap();
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let (busy, via) = (others[0], others[1]);
    let end = || Instant::now() + T;

    // ---- Case 1: a budget over the default ceiling is refused, with the reason. ----
    let over = submission(
        &cl.keys,
        1,
        Work::Builtin("loop".into()),
        DEFAULT_TASK_BUDGET_CEILING_TICKS + 1,
        None,
    );
    let task = mgmt::submit_until_placed(cl.port(via), &over, end()).unwrap();
    let who = Principal::Tenant(TenantId(1));
    assert_eq!(
        mgmt::wait_task(cl.port(via), &cl.keys, who, task, end()).unwrap(),
        TaskStatus::Rejected(Refusal::BudgetOverCeiling {
            budget_ticks: DEFAULT_TASK_BUDGET_CEILING_TICKS + 1,
            ceiling_ticks: DEFAULT_TASK_BUDGET_CEILING_TICKS,
        })
    );

    // ---- Case 1: an infinite loop with the largest budget a tenant without a quota
    // may ask for (2^28 ticks: hours under TCG), pinned on a follower. ----
    // Before the node refactor the task ran inside the node's network poll: the
    // follower stopped answering (the status requests below time out), the leader
    // declared it down and re-placed the loop (attempt 2) on the next node, which
    // froze too, and quorum was lost (the term changes, the leader is gone).
    let lp = submission(
        &cl.keys,
        1,
        Work::Builtin("loop".into()),
        DEFAULT_TASK_BUDGET_CEILING_TICKS,
        Some(busy),
    );
    let looping = mgmt::submit_until_placed(cl.port(busy), &lp, end()).unwrap();
    assert_eq!(
        task_status(cl.port(busy), &cl.keys, 1, looping),
        TaskStatus::Assigned {
            node: NodeId(busy as u32),
            attempt: 1
        }
    );
    let term = cl.view(leader).unwrap().term;
    let assigned_at = Instant::now();
    // Tenant 2's trivial task, submitted through the busy node itself.
    let hash = submission(&cl.keys, 2, Work::Builtin("hash".into()), 100, None);
    let other = mgmt::submit_until_placed(cl.port(busy), &hash, end()).unwrap();
    let mut worst = Duration::ZERO;
    while assigned_at.elapsed() < Duration::from_secs(8) {
        let (v, took) = status(cl.port(busy), &cl.keys)
            .unwrap_or_else(|e| panic!("the busy node did not answer: {e:#}\n{}", cl.logs()));
        worst = worst.max(took);
        assert_eq!((v.term, v.leader), (term, Some(NodeId(leader as u32))));
        let lv = cl.view(leader).unwrap();
        assert_eq!(lv.term, term, "a new election while the loop runs");
        assert!(
            lv.members.iter().all(|m| m.up),
            "a node was declared down: {:?}",
            lv.members
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        worst < Duration::from_secs(3),
        "the busy node took {worst:?} to answer"
    );
    let who2 = Principal::Tenant(TenantId(2));
    match mgmt::wait_task(cl.port(busy), &cl.keys, who2, other, end()).unwrap() {
        TaskStatus::Completed {
            outcome: Outcome::Executed,
            ..
        } => {}
        other => panic!("tenant 2's task: {other:?}"),
    }
    eprintln!(
        "case 1: loop on node {busy}; its status answered in at most {worst:?}; tenant 2's task done after {:.1} s",
        assigned_at.elapsed().as_secs_f64()
    );

    // ---- Node issue: long console commands on the leader. ----
    // Before the node refactor the console was the node's loop (the network was
    // polled only between input bytes): while a command ran, nothing was received,
    // committed, applied or answered. So no status answer could arrive while a
    // command ran (`inside` below stays 0) and no committed entry could be applied
    // between the first and the last record of `audit stress` (the audit check).
    // After the refactor, and before this suite's fixes, three things still stopped
    // the leader for longer than the 150 ms election timeout, and this phase failed
    // with a new term: `task bench 5000` ran a whole 5000-task step on the boot CPU
    // (0.3-0.8 s) and spun while the AP finished its share; `task run loop` ran on
    // the boot CPU when its id fell on core 0 (seconds); and the first audit-root
    // publication after `audit stress 20000` folded 20 000 records into the Merkle
    // accumulator in one loop iteration (about 200 ms).
    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicU64::new(0));
    // Back to back while `audit stress` runs (it takes well under a second), so
    // entries are committed during it.
    let hurry = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let pinger = {
        let (stop, answers, keys, port) = (
            stop.clone(),
            answers.clone(),
            cl.keys.clone(),
            cl.port(leader),
        );
        std::thread::spawn(move || {
            let mut c = Client::connect(port, Duration::from_secs(2)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let req = mgmt::signed(&keys, Principal::Operator, Request::ClusterStatus).unwrap();
                let t0 = Instant::now();
                let r = c.call(&req, Duration::from_secs(5));
                match r {
                    Ok(Response::Cluster(v)) => answers.lock().unwrap().push(Answer {
                        at: Instant::now(),
                        took: t0.elapsed(),
                        role: v.role,
                        term: v.term,
                    }),
                    other => panic!("leader status: {other:?}"),
                }
                // Each signed request costs the node an Ed25519 verification (tens of
                // ms under TCG on a busy host): a few a second, not a flood.
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    // The tasks are pinned to the two nodes the loop does not hold: a task placed on
    // the loop's node waits behind it (one AP, one batch at a time; the placement
    // counts the loop as one task of several the node may hold), which is a
    // placement matter, not what this phase is about.
    let submitter = {
        let (stop, placed, hurry) = (stop.clone(), placed.clone(), hurry.clone());
        let (keys, port) = (cl.keys.clone(), cl.port(via));
        let targets = [leader, via];
        std::thread::spawn(move || {
            let mut tasks = Vec::new();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) || k < 10 {
                let req = mgmt::signed(
                    &keys,
                    Principal::Tenant(TenantId(2)),
                    Request::Submit(Submit {
                        pin: Some(NodeId(targets[k as usize % 2] as u32)),
                        ..Submit::new(
                            Work::Builtin("hash".into()),
                            format!("during {k}").into_bytes(),
                            100,
                        )
                    }),
                )
                .unwrap();
                let t0 = Instant::now();
                let t = mgmt::submit_until_placed(port, &req, Instant::now() + T).unwrap();
                tasks.push((t, t0, t0.elapsed()));
                placed.fetch_add(1, Ordering::Relaxed);
                k += 1;
                // A steady stream (each submission is verified by two nodes), not a
                // flood that would load the leader more than the console does.
                if !hurry.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            tasks
        })
    };
    while placed.load(Ordering::Relaxed) < 1 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let vm = cl.vms[leader - 1].as_mut().unwrap();
    let mut windows: Vec<(&str, Instant, Instant)> = Vec::new();
    let console_start = Instant::now();
    let t0 = Instant::now();
    hurry.store(true, Ordering::Relaxed);
    let out = vm.command("audit stress 20000", "xdv> ", T).unwrap();
    hurry.store(false, Ordering::Relaxed);
    windows.push(("audit stress", t0, Instant::now()));
    let mut gaps = vec![served_every(&out)];
    assert!(
        out.contains("audit: durable seq=") && !out.contains("append refused"),
        "{}",
        &out[out.len().saturating_sub(2000)..]
    );
    // A long sandbox run from the console (50 000 ticks of the loop: seconds under TCG).
    let t0 = Instant::now();
    let out = vm.command("task run loop 50000", "xdv> ", T).unwrap();
    windows.push(("task run loop", t0, Instant::now()));
    assert!(
        out.contains("loop: core=") && out.contains("budget-exceeded ticks=50000"),
        "task run loop failed: {}",
        &out[out.len().saturating_sub(1500)..]
    );
    let console = Instant::now();
    while console.elapsed() < Duration::from_secs(8) || placed.load(Ordering::Relaxed) < 10 {
        let t0 = Instant::now();
        let out = vm.command("task bench 5000", "xdv> ", T).unwrap();
        windows.push(("task bench", t0, Instant::now()));
        gaps.push(served_every(&out));
        assert!(
            out.contains("\"bench\":\"tasks-kernel\""),
            "task bench failed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    pinger.join().unwrap();
    let during = submitter.join().unwrap();
    let slow: Vec<String> = during
        .iter()
        .filter(|(_, _, took)| *took > Duration::from_secs(5))
        .map(|(t, at, took)| format!("task {} at +{:?} took {took:?}", t.0, *at - console_start))
        .collect();
    let answers = answers.lock().unwrap();
    let changed: Vec<String> = answers
        .iter()
        .filter(|a| a.role != "Leader" || a.term != term)
        .map(|a| format!("{} term {} at +{:?}", a.role, a.term, a.at - console_start))
        .collect();
    assert!(
        changed.is_empty(),
        "the leader lost its role or the term changed ({term} before): {changed:?}; gaps {gaps:?} us; commands: {:?}\n{}",
        windows
            .iter()
            .map(|(c, s, e)| format!("{c} +{:?}..+{:?}", *s - console_start, *e - console_start))
            .collect::<Vec<_>>(),
        cl.logs()
    );
    let worst = answers.iter().map(|a| a.took).max().unwrap();
    let margin = Duration::from_millis(150);
    let inside = answers
        .iter()
        .filter(|a| {
            windows
                .iter()
                .any(|(_, s, e)| a.at > *s + margin && a.at + margin < *e)
        })
        .count();
    let in_commands: Duration = windows.iter().map(|(_, s, e)| *e - *s).sum();
    eprintln!(
        "node issue: {} console commands for {:.1} s (longest gap between node loop iterations in each, us: {gaps:?}); {} tasks placed; {} leader answers (worst {worst:?}), {inside} of them while a command ran",
        windows.len(),
        in_commands.as_secs_f64(),
        during.len(),
        answers.len()
    );
    assert!(
        slow.is_empty(),
        "submissions were slow to be placed: {slow:?}; commands: {:?}\n{}",
        windows
            .iter()
            .map(|(c, s, e)| format!("{c} +{:?}..+{:?}", *s - console_start, *e - console_start))
            .collect::<Vec<_>>(),
        cl.logs()
    );
    assert!(
        inside >= 2,
        "the leader did not answer while its console ran a command"
    );
    assert!(worst < Duration::from_secs(3), "worst answer {worst:?}");
    // Committed entries were applied (and audited) while `audit stress` appended.
    let leader_ram = cl.dir.join(format!("node{leader}.ram"));
    let records = audit_records(&leader_ram, leader);
    let is_stress = |b: &RecordBody| matches!(b, RecordBody::Custom { tag: 0x5354, .. });
    let first = records.iter().position(is_stress).unwrap();
    let last = records.iter().rposition(is_stress).unwrap();
    let applied_inside = records[first..last]
        .iter()
        .filter(
            |b| matches!(b, RecordBody::Custom { tag, .. } if *tag == xdv_node::AUDIT_TAG_APPLIED),
        )
        .count();
    eprintln!(
        "audit stress: {} records, {applied_inside} applied entries recorded in between",
        last - first + 1
    );
    assert!(
        applied_inside > 0,
        "no committed entry was applied while `audit stress` ran"
    );

    // Everything placed completes, every node agrees, the loop still runs where it
    // was placed, and nobody was declared down or re-elected.
    let vs = cl.converged(&all, 1 + during.len() as u64, T).unwrap();
    assert_eq!(vs[0].tasks, 3 + during.len() as u64);
    assert!(
        vs.iter()
            .all(|v| v.term == term && v.members.iter().all(|m| m.up))
    );
    assert_eq!(cl.leader(&all, T).unwrap(), leader);
    assert_eq!(
        task_status(cl.port(leader), &cl.keys, 1, looping),
        TaskStatus::Assigned {
            node: NodeId(busy as u32),
            attempt: 1
        }
    );
    eprintln!("wall time {:.1} s", started.elapsed().as_secs_f64());
}
