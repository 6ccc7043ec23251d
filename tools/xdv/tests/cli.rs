//! The `xdv` command as a user meets it: exit codes and messages, without QEMU.
//!
//! Cluster commands run against a cluster directory written here (`cluster.json`,
//! `keys.json`) whose "nodes" are this process (alive pids), fake management servers
//! on free ports that answer like a node, fake QMP sockets, or `sleep` processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xdv::cluster::{ClusterState, NodeSpec};
use xdv::mgmt::Keys;
use xdv_cluster::mgmt::{ClusterView, Denied, Principal, Request, Response, SignedRequest};
use xdv_cluster::{Outcome, Refusal, TaskStatus};
use xdv_net::wire::{self, ClusterMessage, FrameDecoder, FrameHeader, HOST_NODE};
use xdv_types::{Hash32, NodeId, TaskId, TenantId, Timestamp};

const REFUSED: i32 = xdv::exit::REFUSED;
const FAILED: i32 = xdv::exit::FAILED;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    secs: f64,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:.1} s\n--- stdout\n{}--- stderr\n{}",
            self.code, self.secs, self.stdout, self.stderr
        )
    }
}

fn xdv_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let t0 = Instant::now();
    let mut c = Command::new(env!("CARGO_BIN_EXE_xdv"));
    c.args(args).env("XDV_INSTALL", "never");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run xdv");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
        secs: t0.elapsed().as_secs_f64(),
    }
}

fn xdv(args: &[&str]) -> Out {
    xdv_env(args, &[])
}

/// Rust `Debug` text and terminal codes that must never reach a user.
fn assert_clean(o: &Out) {
    for bad in [
        "NodeId(",
        "TaskId(",
        "Some(",
        "PreCandidate",
        "18446744073709551615",
        "4294967295",
        "\x1b[",
        "ticks=0",
        "output_hash=",
    ] {
        assert!(!o.all().contains(bad), "output contains {bad:?}: {o:?}");
    }
}

fn temp(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("xdv-cli-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo() -> PathBuf {
    xdv::qemu::repo_root()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A cluster directory with `nodes` (id, pid, management port) and two tenants.
fn fake_cluster(dir: &Path, nodes: &[(u32, Option<u32>, u16)]) -> Keys {
    let keys = Keys::generate(nodes.len() as u32, 2).unwrap();
    keys.save(dir).unwrap();
    let st = ClusterState {
        dir: dir.to_path_buf(),
        kernel: PathBuf::from("/nonexistent/xdv-kernel"),
        nodes: nodes
            .iter()
            .map(|&(id, pid, port)| NodeSpec {
                id,
                smp: 1,
                mem_mib: 256,
                cmdline: format!("node={id} ip=10.0.0.{id}/24"),
                provision: None,
                pid,
                mgmt_port: port,
                log_offset: 0,
                accel: None,
                accel_pid: None,
                bridge: None,
                discovering: false,
            })
            .collect(),
        switch_pid: None,
        switch_dir: dir.join("net"),
        seed: 1,
        extra_cmdline: String::new(),
        genesis: nodes.iter().map(|n| n.0).collect(),
        machine: Default::default(),
    };
    st.save().unwrap();
    keys
}

/// A fake node's management port: answers each request with `answer`, records them.
struct FakeNode {
    port: u16,
    seen: Arc<Mutex<Vec<SignedRequest>>>,
}

impl FakeNode {
    fn start(answer: impl Fn(&Request) -> Response + Send + Sync + 'static) -> FakeNode {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for s in l.incoming().map_while(Result::ok) {
                let (seen, answer) = (seen2.clone(), answer.clone());
                std::thread::spawn(move || serve(s, &*answer, &seen));
            }
        });
        FakeNode { port, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.request.clone())
            .collect()
    }
}

fn serve(
    mut s: TcpStream,
    answer: &dyn Fn(&Request) -> Response,
    seen: &Mutex<Vec<SignedRequest>>,
) {
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let used = dec.push(rest);
            if used == 0 {
                return;
            }
            rest = &rest[used..];
        }
        while let Ok(Some(f)) = dec.pop() {
            let ClusterMessage::MgmtRequest(b) = f.message else {
                continue;
            };
            let req: SignedRequest = xdv_cluster::mgmt::decode(&b).unwrap();
            let resp = answer(&req.request);
            seen.lock().unwrap().push(req);
            let hdr = FrameHeader {
                source: NodeId(1),
                target: HOST_NODE,
                timestamp: Timestamp(1),
                message_id: f.header.message_id,
            };
            let body = xdv_cluster::mgmt::encode(&resp);
            let frame = wire::encode_frame(&hdr, &ClusterMessage::MgmtResponse(body)).unwrap();
            if s.write_all(&frame).is_err() {
                return;
            }
        }
    }
}

/// A fake node that accepts every submission as task 7 and reports `status` for it.
fn node_reporting(status: TaskStatus) -> FakeNode {
    node_reporting_log(status, vec![])
}

/// As [`node_reporting`], the task having written `log` with `log()`.
fn node_reporting_log(status: TaskStatus, log: Vec<String>) -> FakeNode {
    FakeNode::start(move |r| match r {
        Request::Submit(_) => Response::Submitted { task: TaskId(7) },
        Request::TaskStatus { task } => Response::Task {
            task: *task,
            tenant: TenantId(1),
            status: status.clone(),
            log: log.clone(),
        },
        _ => Response::Refused(Denied::OperatorOnly),
    })
}

fn completed(outcome: Outcome, ticks: u64, output: &[u8]) -> TaskStatus {
    TaskStatus::Completed {
        node: NodeId(1),
        attempt: 1,
        outcome,
        ticks,
        output_hash: Hash32([0xab; 32]),
        output: output.to_vec(),
    }
}

fn me() -> Option<u32> {
    Some(std::process::id())
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ----- up: --fresh / --resume -----

#[test]
fn up_refuses_an_existing_cluster_without_fresh_or_resume() {
    let dir = temp("up");
    let keys = fake_cluster(&dir, &[(1, None, 0), (2, None, 0), (3, None, 0)]);
    let d = s(&dir);

    let o = xdv(&["up", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("--resume") && o.stderr.contains("--fresh"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains(&format!("cluster {}", keys.cluster)),
        "{o:?}"
    );
    assert!(
        !o.stderr.contains("building the kernel"),
        "refused before building: {o:?}"
    );

    let o = xdv(&["up", "--dir", d, "--resume", "--nodes", "2"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("asked for --nodes 2 (the directory's: 3)"),
        "{o:?}"
    );
    assert!(o.stderr.contains("--fresh"), "{o:?}");

    let o = xdv(&["up", "--dir", d, "--resume", "--tenants", "5", "--smp", "2"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("--tenants 5 (the directory's: 2)"),
        "{o:?}"
    );
    assert!(o.stderr.contains("--smp 2 (the directory's: 1)"), "{o:?}");

    let o = xdv(&["up", "--dir", d, "--resume", "--", "log=debug"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("kernel command line `log=debug`"),
        "{o:?}"
    );

    let o = xdv(&["up", "--dir", d, "--fresh", "--resume"]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");

    let empty = temp("up-empty");
    let o = xdv(&["up", "--dir", s(&empty), "--resume"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("nothing to resume"), "{o:?}");

    // Only a RAM file left: still refused, and it cannot be resumed.
    let ram_only = temp("up-ram");
    std::fs::write(ram_only.join("node1.ram"), b"old").unwrap();
    let o = xdv(&["up", "--dir", s(&ram_only)]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("files of an earlier cluster") && o.stderr.contains("--fresh"),
        "{o:?}"
    );
    let o = xdv(&["up", "--dir", s(&ram_only), "--resume"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("cannot resume"), "{o:?}");

    // A running cluster is never touched.
    let running = temp("up-running");
    fake_cluster(&running, &[(1, me(), 0)]);
    let o = xdv(&["up", "--dir", s(&running), "--fresh"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("already running"), "{o:?}");
    for d in [dir, empty, ram_only, running] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn fresh_wipes_only_the_cluster_files() {
    let dir = temp("wipe");
    for f in [
        "cluster.json",
        "keys.json",
        "quotas.json",
        "node1.ram",
        "node12.log",
        "node3.qemu.err",
        "switch.log",
        "notes.txt",
        "node.ram",
        "nodeX.ram",
        "node1.ram.bak",
    ] {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::write(dir.join("net/ctl.sock"), b"").unwrap();
    let listed: Vec<String> = xdv::cluster::cluster_files(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed,
        [
            "cluster.json",
            "keys.json",
            "net",
            "node1.ram",
            "node12.log",
            "node3.qemu.err",
            "quotas.json",
            "switch.log"
        ]
    );
    assert_eq!(xdv::cluster::wipe(&dir).unwrap(), 8);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["node.ram", "node1.ram.bak", "nodeX.ram", "notes.txt"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn status_ignores_ready_lines_of_an_earlier_boot() {
    let dir = temp("log-offset");
    fake_cluster(&dir, &[(1, me(), closed_port())]);
    let mut st = ClusterState::load(&dir).unwrap();
    let log = st.path(1, "log");
    std::fs::write(&log, "xdv: ready node=1 cores=1 mem=200MiB\r\n").unwrap();
    let n = st.nodes[0].clone();
    assert!(matches!(
        xdv::cluster::NodeState::of(&st, &n),
        xdv::cluster::NodeState::Ready(_)
    ));
    // A new boot starts at the current end of the log.
    st.nodes[0].log_offset = std::fs::metadata(&log).unwrap().len();
    let n = st.nodes[0].clone();
    assert_eq!(
        xdv::cluster::NodeState::of(&st, &n),
        xdv::cluster::NodeState::Booting
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"xdv: ready node=1 cores=2 mem=200MiB\r\n")
        .unwrap();
    assert_eq!(
        xdv::cluster::NodeState::of(&st, &n),
        xdv::cluster::NodeState::Ready("node=1 cores=2 mem=200MiB".into())
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ----- run: a RAM file per node id -----

#[test]
fn run_gives_each_node_id_its_own_ram_file() {
    let o = xdv(&["run", "--dry-run", "--", "node=3", "log=debug"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("target/xdv/run/node-3.ram"), "{o:?}");
    assert!(o.stdout.contains("node=3 log=debug"), "{o:?}");
    let o = xdv(&["run", "--dry-run"]);
    assert!(o.stdout.contains("target/xdv/run/node-0.ram"), "{o:?}");
    let o = xdv(&[
        "run",
        "--dry-run",
        "--ram-file",
        "/tmp/x.ram",
        "--",
        "node=2",
    ]);
    assert!(o.stdout.contains("mem-path=/tmp/x.ram"), "{o:?}");
    let o = xdv(&["run", "--dry-run", "--", "node=abc"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("bad `node=abc`"), "{o:?}");
    let o = xdv(&["run", "--smp", "17"]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
}

// ----- submit: exit codes, one line, JSON -----

#[test]
fn submit_exit_codes_and_one_line_outcomes() {
    let cases: Vec<(TaskStatus, i32, &str)> = vec![
        (
            completed(Outcome::Executed, 12, b"hello"),
            0,
            "task 7 executed on node 1 (attempt 1): 12 ticks, output \"hello\" (sha256 abababab",
        ),
        (
            completed(Outcome::Trapped("unreachable executed".into()), 5, b""),
            FAILED,
            "task 7 failed on node 1 (attempt 1): trapped after 5 ticks: unreachable executed",
        ),
        (
            completed(Outcome::BudgetExceeded, 100, b""),
            FAILED,
            "task 7 failed on node 1 (attempt 1): tick budget exceeded after 100 ticks",
        ),
        (
            completed(Outcome::GuardDenied, 0, b""),
            FAILED,
            "task 7 failed on node 1 (attempt 1): guard denied",
        ),
        (
            completed(
                Outcome::Refused("no exported function `run`".into()),
                0,
                b"",
            ),
            REFUSED,
            "task 7 refused by node 1: no exported function `run`",
        ),
        (
            TaskStatus::Rejected(Refusal::QuotaInFlight { limit: 1 }),
            REFUSED,
            "task 7 refused by the cluster: ",
        ),
    ];
    for (status, code, line) in cases {
        let fake = node_reporting(status);
        let dir = temp("submit");
        fake_cluster(&dir, &[(1, me(), fake.port)]);
        let o = xdv(&["submit", "hash", "--tenant", "1", "--dir", s(&dir)]);
        assert_eq!(o.code, code, "{o:?}");
        assert_eq!(o.stdout.lines().count(), 1, "one line: {o:?}");
        assert!(o.stdout.starts_with(line), "want {line:?}: {o:?}");
        assert_clean(&o);
        let _ = std::fs::remove_dir_all(dir);
    }

    // Refused by the management API: no task id.
    let fake = FakeNode::start(|_| Response::Refused(Denied::BadSignature));
    let dir = temp("submit-denied");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&["submit", "hash", "--tenant", "1", "--dir", s(&dir)]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert_eq!(
        o.stdout.trim(),
        "task refused by the cluster: signature does not verify"
    );

    // --no-wait: accepted is success.
    let fake = node_reporting(TaskStatus::Pending);
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&[
        "submit",
        "hash",
        "--tenant",
        "1",
        "--no-wait",
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.starts_with("task 7 accepted"), "{o:?}");
    assert_eq!(fake.requests().len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn submit_json_has_stable_fields() {
    let fake = node_reporting(completed(Outcome::Executed, 12, b"hello"));
    let dir = temp("submit-json");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&[
        "submit",
        "hash",
        "--tenant",
        "1",
        "--json",
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).expect("one JSON object");
    assert_eq!(v["task"], 7);
    assert_eq!(v["result"], "succeeded");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["outcome"], "executed");
    assert_eq!(v["node"], 1);
    assert_eq!(v["attempt"], 1);
    assert_eq!(v["ticks"], 12);
    assert_eq!(v["output_text"], "hello");
    assert_eq!(v["output_hex"], "68656c6c6f");
    assert_eq!(v["output_hash"], "ab".repeat(32));
    assert!(v["refused_by"].is_null() && v["reason"].is_null());

    let wat = dir.join("clock.wat");
    std::fs::write(
        &wat,
        r#"(module (import "env" "clock" (func)) (func (export "run")))"#,
    )
    .unwrap();
    let o = xdv(&[
        "submit",
        s(&wat),
        "--tenant",
        "1",
        "--json",
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["result"], "refused");
    assert_eq!(v["refused_by"], "local");
    assert!(v["task"].is_null() && v["ticks"].is_null() && v["output_hash"].is_null());
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    for k in [
        "task",
        "result",
        "exit_code",
        "refused_by",
        "outcome",
        "reason",
        "node",
        "attempt",
        "ticks",
        "output_hash",
        "output_text",
        "output_hex",
        "line",
    ] {
        assert!(v.get(k).is_some(), "field {k} missing: {keys:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn submit_checks_the_task_locally_before_sending() {
    let fake = node_reporting(completed(Outcome::Executed, 1, b"55"));
    let dir = temp("submit-local");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let sum = repo().join("examples/sum.wat");

    let wat = dir.join("clock.wat");
    std::fs::write(
        &wat,
        r#"(module (import "env" "clock" (func)) (func (export "run")))"#,
    )
    .unwrap();
    let o = xdv(&["submit", s(&wat), "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(
        o.stdout.starts_with(
            "task refused (checked locally, nothing sent): import `env.clock` is not offered"
        ),
        "{o:?}"
    );

    let big = dir.join("big.txt");
    std::fs::write(&big, vec![b'1'; xdv_cluster::MAX_INPUT_BYTES + 1]).unwrap();
    let o = xdv(&[
        "submit",
        s(&sum),
        "--tenant",
        "1",
        "--input",
        s(&big),
        "--dir",
        d,
    ]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(
        o.stdout.contains("input of 16385 bytes (limit 16384)"),
        "{o:?}"
    );

    let o = xdv(&[
        "submit",
        s(&sum),
        "--tenant",
        "1",
        "--budget",
        "0",
        "--dir",
        d,
    ]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(o.stdout.contains("tick budget is zero"), "{o:?}");

    let broken = dir.join("broken.wat");
    std::fs::write(&broken, "(module (func (export \"run\")").unwrap();
    let o = xdv(&["submit", s(&broken), "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(o.stdout.contains("not valid WebAssembly text"), "{o:?}");

    assert!(fake.requests().is_empty(), "nothing sent for refused tasks");

    // At the limit it goes out.
    std::fs::write(&big, vec![b'1'; xdv_cluster::MAX_INPUT_BYTES]).unwrap();
    let o = xdv(&[
        "submit",
        s(&sum),
        "--tenant",
        "1",
        "--input",
        s(&big),
        "--dir",
        d,
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(fake.requests().len(), 2, "submit + status");

    let o = xdv(&["submit", "nosuch.wat", "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("neither a bundled module"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn submit_to_an_unknown_or_stopped_node_fails_at_once() {
    let dir = temp("submit-node");
    fake_cluster(&dir, &[(1, me(), closed_port()), (2, None, 0)]);
    let d = s(&dir);
    let o = xdv(&["submit", "hash", "--tenant", "1", "--node", "9", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("node 9 is not a member of this cluster (members: 1, 2)"),
        "{o:?}"
    );
    let o = xdv(&["submit", "hash", "--tenant", "1", "--node", "2", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("node 2 is not running (start it with `cargo xdv start 2`"),
        "{o:?}"
    );
    let o = xdv(&["submit", "hash", "--tenant", "1", "--node", "1", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("the node is not running"), "{o:?}");
    assert!(o.secs < 10.0, "not retried: {o:?}");
    let o = xdv(&["submit", "hash", "--tenant", "9", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("tenant 9 is not registered"), "{o:?}");
    let o = xdv(&[
        "submit",
        "hash",
        "--tenant",
        "1",
        "--dir",
        s(&dir.join("none")),
    ]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("no cluster at"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn submit_help_documents_the_exit_codes() {
    let o = xdv(&["submit", "--help"]);
    assert_eq!(o.code, 0);
    for want in [
        "Exit codes:",
        "3 refused",
        "4 ran and failed",
        "--json",
        "--no-wait",
    ] {
        assert!(o.stdout.contains(want), "{want}: {o:?}");
    }
}

// ----- status -----

fn view(node: u32, role: &str) -> ClusterView {
    ClusterView {
        node: NodeId(node),
        role: role.into(),
        term: 4,
        leader: None,
        commit: 10,
        applied: 10,
        state_hash: Hash32([1; 32]),
        federated_root: None,
        audit_head: Hash32([2; 32]),
        audit_records: 33,
        tasks: 2,
        completed: 1,
        pending: 1,
        members: vec![],
        commit_latency_us: (0, 0, 0),
        stages: Vec::new(),
        loop_busy_us: 0,
        loop_phases_us: Vec::new(),
        loop_iterations: 0,
        peer_health: Default::default(),
        placement_policy: "least-loaded".into(),
    }
}

#[test]
fn status_speaks_words_and_json() {
    let a = FakeNode::start(|_| Response::Cluster(view(1, "PreCandidate")));
    let b = FakeNode::start(|_| Response::Cluster(view(2, "Leader")));
    let dir = temp("status");
    fake_cluster(&dir, &[(1, me(), a.port), (2, me(), b.port), (3, None, 0)]);
    let o = xdv(&["status", "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("pre-candidate"), "{o:?}");
    assert!(
        o.stdout.starts_with(
            "health: leader node 2 (term 4); quorum, 2 of 3 members up; 2 of 3 nodes running, 2 answering; state hashes agree\n"
        ),
        "health line first: {o:?}"
    );
    assert_clean(&o);

    let o = xdv(&["status", "--json", "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["switch"], "stopped");
    assert_eq!(v["nodes"][0]["id"], 1);
    assert_eq!(v["nodes"][0]["view"]["role"], "pre-candidate");
    assert_eq!(v["nodes"][1]["view"]["audit_records"], 33);
    assert_eq!(v["nodes"][2]["state"], "stopped");
    assert!(v["nodes"][2]["view"].is_null());
    assert_eq!(v["health"]["leader"], 2);
    assert_eq!(v["health"]["answering"], 2);
    assert_eq!(v["health"]["hashes_agree"], true);
    assert_eq!(v["health"]["quorum"], true);
    assert_eq!(v["health"]["members_up"], 2);
    assert_eq!(v["health"]["members"], 3);
    let _ = std::fs::remove_dir_all(dir);
}

/// The health line tells a lost quorum (the leader hears from 1 of 3 members) and
/// state hashes that differ at the same applied index.
#[test]
fn status_health_says_no_quorum_and_differing_hashes() {
    use xdv_cluster::mgmt::MemberView;
    let member = |n: u32, up: bool| MemberView {
        node: NodeId(n),
        up,
        quarantined: false,
        assigned: 0,
        completed: 0,
        audit_records: 0,
        observer: false,
        raft: "voter".into(),
    };
    let mut lead = view(1, "Leader");
    lead.members = vec![member(1, true), member(2, false), member(3, false)];
    lead.members[2].quarantined = true;
    let a = FakeNode::start(move |_| Response::Cluster(lead.clone()));
    let mut other = view(2, "Follower");
    other.state_hash = Hash32([9; 32]);
    let b = FakeNode::start(move |_| Response::Cluster(other.clone()));
    let dir = temp("status-health");
    fake_cluster(&dir, &[(1, me(), a.port), (2, me(), b.port), (3, None, 0)]);
    let o = xdv(&["status", "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    let first = o.stdout.lines().next().unwrap_or("");
    assert_eq!(
        first,
        "health: leader node 1 (term 4); NO QUORUM, 1 of 3 members up; 2 of 3 nodes running, 2 answering; STATE HASHES DIFFER at the same applied index; QUARANTINED node 3 (state hash disagreed with the majority)",
        "{o:?}"
    );
    let o = xdv(&["status", "--json", "--dir", s(&dir)]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["health"]["quorum"], false);
    assert_eq!(v["health"]["members_up"], 1);
    assert_eq!(v["health"]["hashes_agree"], false);
    assert_eq!(v["health"]["quarantined"], serde_json::json!([3]));
    let _ = std::fs::remove_dir_all(dir);
}

// ----- quota -----

#[test]
fn quota_keeps_the_limits_not_given() {
    let fake = FakeNode::start(|r| match r {
        Request::SetQuota { tenant, .. } => Response::QuotaSet { tenant: *tenant },
        _ => Response::Refused(Denied::OperatorOnly),
    });
    let dir = temp("quota");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let o = xdv(&["quota", "2", "--dir", d]);
    assert!(o.stdout.contains("tenant 2: no quota"), "{o:?}");
    let o = xdv(&["quota", "2", "--max-in-flight", "10", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(
            "quota set: max-in-flight 10, max-budget unlimited, memory-pages 16 (1024 KiB), table-elements 1000"
        ),
        "{o:?}"
    );
    assert_clean(&o);
    let o = xdv(&["quota", "2", "--memory-pages", "4", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout
            .contains("max-in-flight 10, max-budget unlimited, memory-pages 4"),
        "{o:?}"
    );
    assert!(
        o.stdout
            .contains("kept from the previous quota: max-in-flight, max-budget, table-elements"),
        "{o:?}"
    );
    let sent: Vec<_> = fake
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Request::SetQuota { quota, .. } => Some(quota),
            _ => None,
        })
        .collect();
    let last = sent.last().unwrap().unwrap();
    assert_eq!((last.max_in_flight, last.memory_pages), (10, 4));
    assert_eq!(last.max_budget_ticks, u64::MAX);
    let o = xdv(&["quota", "2", "--dir", d]);
    assert!(
        o.stdout.contains("tenant 2: quota max-in-flight 10"),
        "{o:?}"
    );
    let o = xdv(&["quota", "2", "--max-in-flight", "unlimited", "--dir", d]);
    assert!(o.stdout.contains("max-in-flight unlimited"), "{o:?}");
    let o = xdv(&["quota", "9", "--max-in-flight", "1", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("tenant 9 is not registered"), "{o:?}");
    let o = xdv(&["quota", "2", "--memory-pages", "17", "--dir", d]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
    let o = xdv(&["quota", "2", "--clear", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("tenant 2: quota cleared"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ----- down -----

/// Serves one QMP session on `sock`: greeting, capabilities, then on `quit` kills
/// `pid` (as QEMU exits) and answers.
fn fake_qmp(sock: PathBuf, pid: u32) {
    let l = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        w.write_all(b"{\"QMP\": {\"version\": {}}}\n").unwrap();
        r.read_line(&mut line).unwrap();
        w.write_all(b"{\"return\": {}}\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("quit"), "{line}");
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let _ = w.write_all(b"{\"return\": {}}\n");
    });
}

/// A stand-in for node `id`'s QEMU: a process with the node's RAM file among its
/// arguments (`down` signals nothing else).
fn sleeper(dir: &Path, id: u32) -> Child {
    Command::new("bash")
        .args(["-c", "while :; do sleep 0.2; done"])
        .arg(dir.join(format!("node{id}.ram")))
        .spawn()
        .unwrap()
}

#[test]
fn down_stops_nodes_quickly_with_progress() {
    let dir = temp("down");
    let (mut a, mut b) = (sleeper(&dir, 1), sleeper(&dir, 2));
    // Node 3's pid is another program's (this test's): it is never signalled.
    fake_cluster(
        &dir,
        &[(1, Some(a.id()), 0), (2, Some(b.id()), 0), (3, me(), 0)],
    );
    fake_qmp(dir.join("node1.qmp"), a.id());
    // Node 2 has no QMP socket: it gets SIGTERM after the grace period.
    let o = xdv(&["down", "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("stopping 2 nodes"), "{o:?}");
    assert!(
        o.stderr.contains("node 1 stopped (QMP quit) after 0."),
        "{o:?}"
    );
    assert!(o.stderr.contains("node 2 stopped (SIGTERM"), "{o:?}");
    assert!(o.stderr.contains("cluster down in"), "{o:?}");
    let reused = format!("pid {} is no longer node 3's QEMU", std::process::id());
    assert!(o.stderr.contains(&reused), "{o:?}");
    assert!(o.stderr.contains("is no longer node 3's QEMU"), "{o:?}");
    assert!(o.secs < 8.0, "{o:?}");
    let _ = (a.wait(), b.wait());
    let st = ClusterState::load(&dir).unwrap();
    assert!(st.nodes.iter().all(|n| n.pid.is_none()));
    let o = xdv(&["down", "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("no node is running"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ----- switch ctl -----

#[test]
fn switch_ctl_defaults_to_the_cluster_switch() {
    let dir = temp("switch");
    fake_cluster(&dir, &[(1, None, 0), (2, None, 0)]);
    let o = xdv(&["switch", "ctl", "--cluster-dir", s(&dir), "stats"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("is not running"), "{o:?}");
    let net = dir.join("net");
    let mut sw = Command::new(env!("CARGO_BIN_EXE_xdv"))
        .args(["switch", "--ports", "2", "--dir", s(&net)])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ctl = xdv::switch::control_socket_path(&net);
    let end = Instant::now() + Duration::from_secs(10);
    while !ctl.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut st = ClusterState::load(&dir).unwrap();
    st.switch_pid = Some(sw.id());
    st.save().unwrap();
    let o = xdv(&["switch", "ctl", "--cluster-dir", s(&dir), "stats"]);
    let _ = sw.kill();
    let _ = sw.wait();
    assert_eq!(o.code, 0, "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ----- task check, examples, limits -----

#[test]
fn examples_pass_task_check() {
    let ex = repo().join("examples");
    let mut wats: Vec<PathBuf> = std::fs::read_dir(&ex)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wat"))
        .collect();
    wats.sort();
    assert!(wats.len() >= 3, "{wats:?}");
    for w in &wats {
        let o = xdv(&["task", "check", s(w)]);
        assert_eq!(o.code, 0, "{}: {o:?}", w.display());
        assert!(o.stdout.contains(": OK ("), "{o:?}");
    }
    let o = xdv(&[
        "task",
        "check",
        s(&ex.join("hello.wat")),
        "--run-input",
        "/dev/null",
    ]);
    assert!(
        o.stdout.contains("run: executed") && o.stdout.contains("\"hello from xdv\""),
        "{o:?}"
    );
    assert!(o.stdout.contains("log: said hello"), "{o:?}");
    let o = xdv(&[
        "task",
        "check",
        s(&ex.join("sum.wat")),
        "--run-input",
        s(&ex.join("numbers.txt")),
    ]);
    assert!(
        o.stdout.contains("run: executed") && o.stdout.contains("\"55\""),
        "{o:?}"
    );
    let o = xdv(&[
        "task",
        "check",
        s(&ex.join("spin.wat")),
        "--budget",
        "100",
        "--run-input",
        "/dev/null",
    ]);
    assert!(
        o.stdout.contains("run: budget exceeded, 100 ticks"),
        "{o:?}"
    );
    assert_clean(&o);
}

#[test]
fn task_check_uses_the_cluster_limits() {
    let dir = temp("limits");
    let sum = repo().join("examples/sum.wat");
    let input = dir.join("in.txt");
    std::fs::write(&input, vec![b'1'; xdv_cluster::MAX_INPUT_BYTES + 1]).unwrap();
    let o = xdv(&["task", "check", s(&sum), "--run-input", s(&input)]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("refused: input of 16385 bytes (limit 16384)"),
        "{o:?}"
    );
    std::fs::write(&input, vec![b'1'; xdv_cluster::MAX_INPUT_BYTES]).unwrap();
    let o = xdv(&["task", "check", s(&sum), "--run-input", s(&input)]);
    assert_eq!(o.code, 0, "{o:?}");

    let big = dir.join("big.wat");
    let data = "a".repeat(xdv_cluster::MAX_MODULE_BYTES);
    std::fs::write(
        &big,
        format!("(module (memory 2) (data (i32.const 0) \"{data}\") (func (export \"run\")))"),
    )
    .unwrap();
    let o = xdv(&["task", "check", s(&big)]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("(limit 65536)"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ----- prerequisites -----

#[test]
fn doctor_lists_prerequisites_and_the_apt_line() {
    let o = xdv(&["doctor"]);
    for name in [
        "qemu-system-x86_64",
        "grub-mkrescue",
        "xorriso",
        "mformat",
        "/usr/share/OVMF",
    ] {
        assert!(o.stdout.contains(name), "{name}: {o:?}");
    }
    let empty = temp("doctor-path");
    let path = s(&empty);
    let o = xdv_env(&["doctor"], &[("PATH", path)]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stdout.contains("qemu-system-x86_64       MISSING"),
        "{o:?}"
    );
    assert!(
        o.stdout
            .contains("sudo apt-get install -y qemu-system-x86 grub-common"),
        "{o:?}"
    );

    // `run` stops at once with the line when it may not install (not root, or
    // XDV_INSTALL=never): before building anything.
    let o = xdv_env(&["run"], &[("PATH", path)]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("sudo apt-get install -y qemu-system-x86"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("building the kernel"), "{o:?}");
    assert!(o.secs < 5.0, "{o:?}");

    // .ci/run: the same stop with the line, before any cargo step.
    let bin = temp("ci-path");
    for tool in ["id", "dirname", "date", "bash"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    let ci = Command::new("/bin/bash")
        .arg(repo().join(".ci/run"))
        .env("PATH", &bin)
        .env("XDV_INSTALL", "never")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&ci.stderr);
    assert_eq!(ci.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sudo apt-get install -y qemu-system-x86 grub-common"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&ci.stdout).contains("cargo fmt"));
    let _ = std::fs::remove_dir_all(empty);
    let _ = std::fs::remove_dir_all(bin);
}

// ----- device jobs and contracts -----

#[test]
fn device_jobs_are_checked_locally_and_their_results_read_as_counts() {
    let q = xdv_accel::job::QResult {
        counts: vec![(0, 2), (3, 1)],
        shots: 3,
        entangling_ops: 1,
        teleportations: 0,
        depth: 3,
    };
    let fake = node_reporting(completed(Outcome::Executed, 0, &q.encode()));
    let dir = temp("submit-device");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let bad = dir.join("bad.qasm");
    std::fs::write(
        &bad,
        "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\nfoo q[0];\n",
    )
    .unwrap();
    let o = xdv(&["submit", s(&bad), "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(
        o.stdout
            .contains("bad.qasm: line 4, column 1: unknown gate 'foo'"),
        "{o:?}"
    );
    let wide = dir.join("wide.qasm");
    std::fs::write(
        &wide,
        "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[30];\n",
    )
    .unwrap();
    let o = xdv(&["submit", s(&wide), "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    let env = dir.join("bad.toml");
    std::fs::write(&env, "frequencies = [1.0]\ncoupling = 1.0\n").unwrap();
    let o = xdv(&["submit", s(&env), "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(fake.requests().is_empty(), "nothing sent for refused jobs");

    let bell = repo().join("examples/bell.qasm");
    let o = xdv(&[
        "submit",
        s(&bell),
        "--tenant",
        "1",
        "--shots",
        "3",
        "--dir",
        d,
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("counts {00: 2, 11: 1} of 3 shots"),
        "{o:?}"
    );
    match &fake.requests()[0] {
        Request::Submit(s) => {
            assert_eq!(s.domain, xdv_cluster::Domain::Q);
            let xdv_cluster::Work::Job(j) = &s.work else {
                panic!("{:?}", s.work)
            };
            assert_eq!(xdv_accel::job::Circuit::decode(j).unwrap().shots, 3);
        }
        other => panic!("{other:?}"),
    }
    let o = xdv(&["submit", s(&bell), "--tenant", "1", "--json", "--dir", d]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["counts"]["counts"]["11"], 1, "{v}");
}

#[test]
fn reserve_says_accepted_or_rejected_with_the_reason() {
    use xdv_cluster::mgmt::ContractAnswer;
    let fake = FakeNode::start(|r| match r {
        Request::Reserve(res) if res.resources == vec![0] => {
            Response::Contract(ContractAnswer::Accepted { id: 42 })
        }
        Request::Reserve(_) => Response::Contract(ContractAnswer::Rejected {
            id: 43,
            reason: Refusal::ResourceOutOfRange {
                resource: 9,
                capacity: 2,
            },
        }),
        _ => Response::Refused(Denied::OperatorOnly),
    });
    let dir = temp("reserve");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let args = |r: &'static str| {
        vec![
            "reserve",
            "--tenant",
            "1",
            "--domain",
            "q",
            "--target",
            "2",
            "--resources",
            r,
            "--dir",
            d,
        ]
    };
    let o = xdv(&args("0"));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.starts_with("contract 42 accepted"), "{o:?}");
    let o = xdv(&args("9"));
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(
        o.stdout.contains("resource 9 out of range (capacity 2)"),
        "{o:?}"
    );
    let o = xdv(&[
        "reserve",
        "--tenant",
        "9",
        "--domain",
        "q",
        "--target",
        "2",
        "--resources",
        "0",
        "--dir",
        d,
    ]);
    assert!(
        o.code != 0 && o.all().contains("tenant 9 is not registered"),
        "{o:?}"
    );
    let o = xdv(&[
        "reserve",
        "--tenant",
        "1",
        "--domain",
        "x",
        "--target",
        "2",
        "--resources",
        "0",
        "--dir",
        d,
    ]);
    assert_eq!(o.code, 2, "usage error: {o:?}");
}

#[test]
fn release_says_released_or_refused_and_checks_its_arguments() {
    use xdv_cluster::mgmt::ContractAnswer;
    let fake = FakeNode::start(|r| match r {
        Request::Release { contract: 42 } => {
            Response::Contract(ContractAnswer::Released { id: 42 })
        }
        Request::Release { contract } => Response::Refused(Denied::NotYourContract(*contract)),
        _ => Response::Refused(Denied::OperatorOnly),
    });
    let dir = temp("release");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let o = xdv(&["release", "42", "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.trim(), "contract 42 released", "{o:?}");
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].principal,
        Principal::Tenant(TenantId(1)),
        "signed as the holder"
    );
    assert_eq!(seen[0].request, Request::Release { contract: 42 });
    let o = xdv(&["release", "43", "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(o.stdout.starts_with("release refused:"), "{o:?}");
    assert!(o.stdout.contains("43"), "{o:?}");
    // Usage errors and an unknown tenant: nothing sent.
    assert_usage_errors(&[
        vec!["release", "abc", "--tenant", "1", "--dir", d],
        vec!["release", "42", "--dir", d],
        vec!["release", "--tenant", "1", "--dir", d],
    ]);
    let o = xdv(&["release", "42", "--tenant", "9", "--dir", d]);
    assert!(
        o.code != 0 && o.all().contains("tenant 9 is not registered"),
        "{o:?}"
    );
    assert_eq!(fake.requests().len(), 2);
}

fn contract_view(
    id: u64,
    suspended: bool,
    ended: Option<(xdv_cluster::ContractEnd, u64)>,
) -> xdv_cluster::mgmt::ContractView {
    xdv_cluster::mgmt::ContractView {
        id,
        hash: Hash32([id as u8; 32]),
        tenant: TenantId(1),
        requester: NodeId(1),
        target: NodeId(2),
        domain: xdv_cluster::Domain::Q,
        resources: vec![0, 1],
        suspended,
        priority: xdv_types::Priority::High,
        expires_ms: 70_000,
        ended,
    }
}

#[test]
fn contracts_lists_in_force_and_ended_with_their_state_in_words_and_json() {
    use xdv_cluster::ContractEnd;
    let fake = FakeNode::start(|r| match r {
        Request::Contracts => Response::Contracts {
            clock_ms: 10_000,
            contracts: vec![
                contract_view(42, false, None),
                contract_view(43, true, None),
            ],
            ended: vec![
                contract_view(41, false, Some((ContractEnd::Preempted { by: 77 }, 4_000))),
                contract_view(
                    40,
                    false,
                    Some((ContractEnd::Aborted("Q device failed".into()), 9_000)),
                ),
            ],
        },
        _ => Response::Refused(Denied::OperatorOnly),
    });
    let dir = temp("contracts");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let o = xdv(&["contracts", "--dir", d]);
    assert_clean(&o);
    assert!(
        o.stdout
            .starts_with("cluster time 10 s; 2 contract(s) in force, 2 recently ended"),
        "{o:?}"
    );
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{o:?}");
    assert!(
        lines[1].contains("state") && lines[1].contains("priority"),
        "{o:?}"
    );
    let row = |id: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row {id}: {o:?}"))
    };
    assert!(
        row("42").contains("active") && row("42").contains("expires in 60 s"),
        "{o:?}"
    );
    assert!(row("43").contains("suspended"), "{o:?}");
    assert!(
        row("41").contains("preempted") && row("41").contains("6 s ago (preempted by contract 77)"),
        "{o:?}"
    );
    assert!(row("40").contains("aborted: Q device failed"), "{o:?}");
    assert_eq!(
        fake.seen.lock().unwrap()[0].principal,
        Principal::Operator,
        "without --tenant: all, as the operator"
    );

    let o = xdv(&["contracts", "--json", "--tenant", "1", "--dir", d]);
    assert_clean(&o);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["cluster_time_ms"], 10_000, "{v}");
    let items = v["contracts"].as_array().unwrap();
    let states: Vec<&str> = items.iter().map(|c| c["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        ["active", "suspended", "preempted", "aborted"],
        "{v}"
    );
    assert_eq!(items[0]["id"], 42);
    assert_eq!(items[0]["expires_in_ms"], 60_000);
    assert_eq!(items[0]["resources"], serde_json::json!([0, 1]));
    assert_eq!(items[0]["priority"], "high");
    assert_eq!(items[2]["ended"], "preempted by contract 77");
    assert_eq!(items[2]["ended_ago_ms"], 6_000);
    assert!(items[2].get("expires_in_ms").is_none(), "{v}");
    assert_eq!(
        fake.seen.lock().unwrap()[1].principal,
        Principal::Tenant(TenantId(1)),
        "with --tenant: signed as that tenant"
    );
    let o = xdv(&["contracts", "--tenant", "9", "--dir", d]);
    assert!(
        o.code != 0 && o.all().contains("tenant 9 is not registered"),
        "{o:?}"
    );
}

#[test]
fn contracts_with_none_says_so() {
    let fake = FakeNode::start(|_| Response::Contracts {
        clock_ms: 3_000,
        contracts: vec![],
        ended: vec![],
    });
    let dir = temp("contracts-none");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&["contracts", "--dir", s(&dir)]);
    assert_clean(&o);
    assert_eq!(
        o.stdout.trim(),
        "cluster time 3 s; 0 contract(s) in force, 0 recently ended"
    );
}

/// Issue 16: `policy set` sends an operator-signed `SetPlacementPolicy` and reports
/// what the log applied; `policy show` and `status` (text and JSON) show the policy in
/// force; bad arguments are usage errors.
#[test]
fn placement_policy_is_set_through_the_log_and_shown_in_status() {
    use xdv_cluster::PlacementKind;
    let a = FakeNode::start(|r| match r {
        Request::SetPlacementPolicy { policy } => Response::PlacementPolicySet { policy: *policy },
        _ => {
            let mut v = view(1, "Leader");
            v.placement_policy = "routed".into();
            Response::Cluster(v)
        }
    });
    let dir = temp("placement");
    fake_cluster(&dir, &[(1, me(), a.port)]);
    let d = s(&dir);
    let o = xdv(&["policy", "set", "routed", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.trim(), "placement policy: routed", "{o:?}");
    let seen = a.seen.lock().unwrap().clone();
    assert_eq!(seen[0].principal, Principal::Operator);
    assert_eq!(
        seen[0].request,
        Request::SetPlacementPolicy {
            policy: PlacementKind::Routed
        }
    );
    let o = xdv(&["policy", "show", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.trim(), "placement policy: routed", "{o:?}");
    let o = xdv(&["status", "--dir", d]);
    assert!(o.stdout.contains("\nplacement: routed\n"), "{o:?}");
    let o = xdv(&["status", "--json", "--dir", d]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["health"]["placement_policy"], "routed", "{o:?}");
    assert_eq!(v["nodes"][0]["view"]["placement_policy"], "routed");
    assert_usage_errors(&[
        vec!["policy", "set", "fastest", "--dir", d],
        vec!["policy", "set", "--dir", d],
        vec!["policy", "show", "routed", "--dir", d],
        vec!["policy", "everything", "--dir", d],
    ]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn policy_is_set_by_the_operator_and_checks_its_arguments() {
    let fake = FakeNode::start(|r| match r {
        Request::SetPolicy { tenant, .. } if tenant.0 == 2 => {
            Response::PolicySet { tenant: *tenant }
        }
        _ => Response::Refused(Denied::UnknownPrincipal(Principal::Tenant(TenantId(1)))),
    });
    let dir = temp("policy");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let o = xdv(&["policy", "2", "--priority", "high", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.trim(), "tenant 2: contract priority high", "{o:?}");
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen[0].principal, Principal::Operator);
    assert_eq!(
        seen[0].request,
        Request::SetPolicy {
            tenant: TenantId(2),
            priority: xdv_types::Priority::High
        }
    );
    let o = xdv(&["policy", "1", "--priority", "low", "--dir", d]);
    assert!(o.code != 0 && o.code != 2, "{o:?}");
    assert!(o.all().contains("refused:"), "{o:?}");
    assert_usage_errors(&[
        vec!["policy", "2", "--priority", "urgent", "--dir", d],
        vec!["policy", "2", "--dir", d],
        vec!["policy", "--priority", "high", "--dir", d],
    ]);
    let o = xdv(&["policy", "9", "--priority", "high", "--dir", d]);
    assert!(
        o.code != 0 && o.all().contains("tenant 9 is not registered"),
        "{o:?}"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[test]
fn submit_under_a_contract_names_it_and_reports_an_ended_one() {
    let fake = node_reporting(TaskStatus::Rejected(Refusal::ContractEnded {
        contract: 42,
        end: xdv_cluster::ContractEnd::Preempted { by: 77 },
    }));
    let dir = temp("submit-contract");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let bell = repo().join("examples/bell.qasm");
    let o = xdv(&[
        "submit",
        s(&bell),
        "--tenant",
        "1",
        "--contract",
        "42",
        "--dir",
        d,
    ]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    assert!(
        o.stdout
            .contains("contract 42 has ended (preempted by contract 77)"),
        "{o:?}"
    );
    match &fake.requests()[0] {
        Request::Submit(sub) => {
            assert_eq!(sub.contract, Some(42));
            assert_eq!(sub.domain, xdv_cluster::Domain::Q);
        }
        other => panic!("{other:?}"),
    }
    let o = xdv(&[
        "submit",
        s(&bell),
        "--tenant",
        "1",
        "--contract",
        "42",
        "--json",
        "--dir",
        d,
    ]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["exit_code"], REFUSED, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("has ended (preempted by contract 77)"),
        "{v}"
    );
    // Without --contract the submission names none; a malformed id is a usage error.
    let o = xdv(&["submit", s(&bell), "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, REFUSED, "{o:?}");
    let last = fake
        .requests()
        .into_iter()
        .rev()
        .find_map(|r| match r {
            Request::Submit(sub) => Some(sub),
            _ => None,
        })
        .unwrap();
    assert_eq!(last.contract, None);
    let before = fake.requests().len();
    let o = xdv(&[
        "submit",
        s(&bell),
        "--tenant",
        "1",
        "--contract",
        "x",
        "--dir",
        d,
    ]);
    assert_eq!(o.code, 2, "{o:?}");
    let o = xdv(&[
        "submit",
        s(&bell),
        "--tenant",
        "1",
        "--contract",
        "-1",
        "--dir",
        d,
    ]);
    assert_eq!(o.code, 2, "{o:?}");
    assert_eq!(
        fake.requests().len(),
        before,
        "nothing sent for usage errors"
    );
}

// ----- task get / task list -----

#[test]
fn task_get_reports_like_submit_with_exit_codes() {
    let cases: Vec<(TaskStatus, i32, &str)> = vec![
        (
            completed(Outcome::Executed, 12, b"hello"),
            0,
            "task 7 executed on node 1 (attempt 1): 12 ticks, output \"hello\"",
        ),
        (
            completed(Outcome::Executed, 3, &[0xff, 0x00]),
            0,
            "task 7 executed on node 1 (attempt 1): 3 ticks, output 0xff00",
        ),
        (
            completed(Outcome::Trapped("unreachable executed".into()), 5, b""),
            FAILED,
            "task 7 failed on node 1 (attempt 1): trapped after 5 ticks: unreachable executed",
        ),
        (
            TaskStatus::Rejected(Refusal::QuotaInFlight { limit: 1 }),
            REFUSED,
            "task 7 refused by the cluster: ",
        ),
        (
            TaskStatus::Assigned {
                node: NodeId(2),
                attempt: 2,
            },
            0,
            "task 7 running on node 2 (attempt 2)",
        ),
        (TaskStatus::Pending, 0, "task 7 pending"),
    ];
    let dir = temp("task-get");
    for (status, code, line) in cases {
        let fake = node_reporting(status);
        fake_cluster(&dir, &[(1, me(), fake.port)]);
        let o = xdv(&["task", "get", "7", "--dir", s(&dir)]);
        assert_eq!(o.code, code, "{o:?}");
        assert_eq!(o.stdout.lines().count(), 1, "one line: {o:?}");
        assert!(o.stdout.starts_with(line), "want {line:?}: {o:?}");
        assert_clean(&o);
        // Without --tenant the operator asks.
        let req = fake.seen.lock().unwrap()[0].clone();
        assert_eq!(req.principal, xdv_cluster::mgmt::Principal::Operator);
        assert_eq!(req.request, Request::TaskStatus { task: TaskId(7) });
    }

    // As a tenant, JSON with the state and tenant, output saved raw.
    let fake = node_reporting(completed(Outcome::Executed, 3, &[0xff, 0x00, 0x41]));
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let out = dir.join("out.bin");
    let o = xdv(&[
        "task",
        "get",
        "7",
        "--tenant",
        "2",
        "--json",
        "--output",
        s(&out),
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["task"], 7);
    assert_eq!(v["state"], "done");
    assert_eq!(v["tenant"], 1);
    assert_eq!(v["outcome"], "executed");
    assert_eq!(v["output_hex"], "ff0041");
    assert_eq!(std::fs::read(&out).unwrap(), vec![0xff, 0x00, 0x41]);
    let req = fake.seen.lock().unwrap()[0].clone();
    assert_eq!(
        req.principal,
        xdv_cluster::mgmt::Principal::Tenant(TenantId(2))
    );

    // No outcome yet: the file is not written, and the user is told why.
    let fake = node_reporting(TaskStatus::Pending);
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let pending_out = dir.join("pending.bin");
    let o = xdv(&[
        "task",
        "get",
        "7",
        "--output",
        s(&pending_out),
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stderr
            .contains("has no output (it has not run to an outcome)"),
        "{o:?}"
    );
    assert!(!pending_out.exists());

    // A task the asker may not see: an error naming the reason, exit 1.
    let fake = FakeNode::start(|r| match r {
        Request::TaskStatus { task } => Response::Refused(Denied::OutOfScope { task: *task }),
        _ => Response::Refused(Denied::OperatorOnly),
    });
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&["task", "get", "7", "--tenant", "1", "--dir", s(&dir)]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("xdv: error: t7 belongs to another tenant"),
        "{o:?}"
    );
    assert_clean(&o);
    let _ = std::fs::remove_dir_all(dir);
}

/// A device job's result reads as counts, as `submit` shows it; `--output` keeps the
/// raw encoded result.
#[test]
fn task_get_shows_device_results_as_counts() {
    let q = xdv_accel::job::QResult {
        counts: vec![(0, 2), (3, 1)],
        shots: 3,
        entangling_ops: 1,
        teleportations: 0,
        depth: 3,
    };
    let fake = node_reporting(completed(Outcome::Executed, 0, &q.encode()));
    let dir = temp("task-get-device");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let raw = dir.join("result.bin");
    let o = xdv(&["task", "get", "7", "--output", s(&raw), "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("counts {00: 2, 11: 1} of 3 shots"),
        "{o:?}"
    );
    assert_eq!(std::fs::read(&raw).unwrap(), q.encode());
    let o = xdv(&["task", "get", "7", "--json", "--dir", s(&dir)]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["counts"]["counts"]["11"], 1, "{v}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn task_get_wait_polls_until_the_task_ends() {
    let calls = Arc::new(Mutex::new(0u32));
    let c2 = calls.clone();
    let fake = FakeNode::start(move |r| {
        let Request::TaskStatus { task } = r else {
            return Response::Refused(Denied::OperatorOnly);
        };
        let mut n = c2.lock().unwrap();
        *n += 1;
        let status = if *n < 3 {
            TaskStatus::Assigned {
                node: NodeId(1),
                attempt: 1,
            }
        } else {
            completed(Outcome::BudgetExceeded, 100, b"")
        };
        Response::Task {
            task: *task,
            tenant: TenantId(1),
            status,
            log: vec![],
        }
    });
    let dir = temp("task-wait");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&["task", "get", "7", "--wait", "--dir", s(&dir)]);
    assert_eq!(o.code, FAILED, "{o:?}");
    assert!(
        o.stdout
            .starts_with("task 7 failed on node 1 (attempt 1): tick budget exceeded"),
        "{o:?}"
    );
    assert!(*calls.lock().unwrap() >= 3, "polled until done");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn task_list_filters_and_prints_a_table_or_json() {
    use xdv_cluster::mgmt::{TaskState, TaskSummary};
    let summary = |id: u64, state: TaskState| TaskSummary {
        task: TaskId(id),
        tenant: TenantId(1),
        state,
        domain: xdv_cluster::Domain::K,
        node: (state != TaskState::Pending).then_some(NodeId(2)),
        attempt: (state != TaskState::Pending).then_some(1),
        outcome: (state == TaskState::Done).then(|| Outcome::Trapped("unreachable".into())),
        rejected: None,
        ticks: 40,
        output_bytes: 0,
    };
    let fake = FakeNode::start(move |r| match r {
        Request::ListTasks { state: None, .. } => Response::Tasks(vec![
            summary(9, TaskState::Pending),
            summary(8, TaskState::Done),
        ]),
        Request::ListTasks { state: Some(_), .. } => Response::Tasks(vec![]),
        _ => Response::Refused(Denied::OperatorOnly),
    });
    let dir = temp("task-list");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&["task", "list", "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{o:?}");
    assert!(lines[0].starts_with("task    tenant"), "{o:?}");
    assert!(
        lines[1].starts_with("9       1       K       pending  -"),
        "{o:?}"
    );
    assert!(lines[2].contains("done     2     1"), "{o:?}");
    assert!(lines[2].ends_with("trapped: unreachable"), "{o:?}");
    assert_clean(&o);

    let o = xdv(&[
        "task",
        "list",
        "--tenant",
        "1",
        "--state",
        "running",
        "--limit",
        "5",
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.trim(), "no running tasks");
    let reqs = fake.requests();
    assert_eq!(
        reqs[1],
        Request::ListTasks {
            state: Some(TaskState::Running),
            limit: 5
        }
    );

    let o = xdv(&["task", "list", "--json", "--dir", s(&dir)]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v[0]["task"], 9);
    assert_eq!(v[0]["state"], "pending");
    assert!(v[0]["node"].is_null());
    assert_eq!(v[1]["outcome"], "trapped");
    assert_eq!(v[1]["reason"], "unreachable");
    assert_eq!(v[1]["domain"], "K");

    let o = xdv(&["task", "list", "--state", "finished", "--dir", s(&dir)]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
    let o = xdv(&["task", "list", "--limit", "257", "--dir", s(&dir)]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

// ----- completions, up --config -----

#[test]
fn completions_name_the_subcommands() {
    let o = xdv(&["completions", "bash"]);
    assert_eq!(o.code, 0, "{o:?}");
    for want in ["_xdv()", "submit", "status", "task", "completions"] {
        assert!(o.stdout.contains(want), "{want}: {o:?}");
    }
    assert!(
        o.stdout.contains("get") && o.stdout.contains("list"),
        "{o:?}"
    );
    let o = xdv(&["completions", "zsh"]);
    assert!(o.code == 0 && o.stdout.contains("#compdef xdv"), "{o:?}");
    let o = xdv(&["completions", "fish"]);
    assert!(o.code == 0 && o.stdout.contains("complete -c xdv"), "{o:?}");
    let o = xdv(&["completions", "tcsh"]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
}

#[test]
fn up_config_is_checked_before_anything_boots() {
    let dir = temp("up-config");
    let cfg = dir.join("cluster.toml");
    let up = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        xdv(&["up", "--config", s(&cfg), "--dir", s(&dir.join("c"))])
    };
    let o = up("nodes = 3\nmemory = 512\n");
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("cluster.toml: unknown key `memory` (known: nodes, smp, mem_mib"),
        "{o:?}"
    );
    let o = up("nodes = 2\naccel = { 3 = \"q\" }\n");
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("node 3 is not in the cluster (nodes 1..=2)"),
        "{o:?}"
    );
    // The command line overrides the file: --nodes 3 makes node 3 a member, and the
    // refusal is now the quota for a tenant the cluster does not have.
    std::fs::write(
        &cfg,
        "nodes = 2\naccel = { 3 = \"q\" }\n[quotas.5]\nmax_in_flight = 1\n",
    )
    .unwrap();
    let o = xdv(&[
        "up",
        "--config",
        s(&cfg),
        "--nodes",
        "3",
        "--tenants",
        "2",
        "--dir",
        s(&dir.join("c")),
    ]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains(
            "the configuration sets a quota for tenant 5, but the cluster has tenants 1..=2"
        ),
        "{o:?}"
    );
    assert!(!dir.join("c").join("keys.json").exists(), "nothing written");
    let o = xdv(&[
        "up",
        "--config",
        s(&dir.join("missing.toml")),
        "--dir",
        s(&dir.join("c")),
    ]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("missing.toml"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Membership commands: a node that is not a member is named at once; the cluster's
/// refusal (quorum would be lost) is printed as it is and the node keeps running;
/// the request is operator-signed `RemoveWorker`.
#[test]
fn remove_names_non_members_and_prints_the_clusters_refusal() {
    use xdv_cluster::mgmt::MembershipDenied;
    let dir = temp("member-remove");
    let a = FakeNode::start(|_| {
        Response::Refused(Denied::Membership(MembershipDenied::QuorumWouldBeLost {
            node: NodeId(2),
            up: 1,
            quorum: 2,
        }))
    });
    fake_cluster(&dir, &[(1, me(), a.port), (2, me(), 0), (3, None, 0)]);
    let o = xdv(&["remove", "9", "--dir", s(&dir)]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(
        o.stderr
            .contains("node 9 is not a member (members: 1, 2, 3)"),
        "{o:?}"
    );
    let o = xdv(&["remove", "2", "--dir", s(&dir), "--timeout", "5"]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains("node 2 was not removed: membership change refused: removing n2 would lose quorum: 1 voters would be up, 2 needed"),
        "{o:?}"
    );
    let seen = a.seen.lock().unwrap();
    assert!(
        matches!(
            seen.last().map(|r| (&r.principal, &r.request)),
            Some((
                Principal::Operator,
                Request::RemoveWorker { node: NodeId(2) }
            ))
        ),
        "{seen:?}"
    );
    let st = ClusterState::load(&dir).unwrap();
    assert_eq!(st.nodes.len(), 3, "a refused removal changes nothing");
}

/// `join` refuses at once when no member runs, and an id already in use.
#[test]
fn join_refuses_without_a_running_member_or_with_a_used_id() {
    let dir = temp("member-join");
    fake_cluster(&dir, &[(1, None, 0), (2, None, 0)]);
    let o = xdv(&["join", "--dir", s(&dir)]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(
        o.stderr
            .contains("is running; start it with `cargo xdv up --resume`"),
        "{o:?}"
    );
    let a = FakeNode::start(|_| Response::Refused(Denied::NoLeader));
    fake_cluster(&dir, &[(1, me(), a.port), (2, None, 0)]);
    let o = xdv(&["join", "--node", "2", "--dir", s(&dir)]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("node 2 is already a member"), "{o:?}");
    let o = xdv(&["join", "--node", "0", "--dir", s(&dir)]);
    assert_ne!(o.code, 0, "{o:?}");
    let o = xdv(&["join", "--node", "20", "--dir", s(&dir)]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(
        o.stderr
            .contains("node id 20 is above the local switch's 16 ports"),
        "{o:?}"
    );
    let st = ClusterState::load(&dir).unwrap();
    assert_eq!(st.nodes.len(), 2, "a refused join adds nothing");
}

/// `join` and `remove` on a federation refuse before asking anything: its groups'
/// members are fixed at `up`; the directory is left as it was.
#[test]
fn join_and_remove_refuse_a_federation() {
    let dir = temp("member-fed");
    let a = FakeNode::start(|_| Response::Refused(Denied::NoLeader));
    fake_cluster(&dir, &[(1, me(), a.port), (2, None, 0), (3, None, 0)]);
    let keys = Keys::generate_federation(1, 2, 1, 2, (500, 1000, 100)).unwrap();
    keys.save(&dir).unwrap();
    let before = std::fs::read(dir.join("cluster.json")).unwrap();
    for args in [vec!["join"], vec!["remove", "2"]] {
        let mut v = args.clone();
        v.extend(["--dir", s(&dir)]);
        let o = xdv(&v);
        assert_ne!(o.code, 0, "{o:?}");
        assert!(
            o.stderr.contains(&format!(
                "`{}` does not work on a federation yet: its 3 groups' members are fixed",
                args[0]
            )),
            "{o:?}"
        );
    }
    assert!(a.seen.lock().unwrap().is_empty(), "nothing was asked");
    assert_eq!(std::fs::read(dir.join("cluster.json")).unwrap(), before);
    let _ = std::fs::remove_dir_all(dir);
}

/// `submit --prefer` needs `--via-gate`, and names clusters the federation has.
#[test]
fn submit_prefer_refusals_are_specific() {
    let dir = temp("prefer");
    fake_cluster(&dir, &[(1, None, 0), (2, None, 0), (3, None, 0)]);
    let o = xdv(&[
        "submit",
        "hash",
        "--tenant",
        "1",
        "--prefer",
        "1",
        "--dir",
        s(&dir),
    ]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("--via-gate"), "{o:?}");
    let keys = Keys::generate_federation(1, 2, 1, 2, (500, 1000, 100)).unwrap();
    keys.save(&dir).unwrap();
    // Through the gate: the refusal names what is wrong with the list.
    let refused = |prefer: &str, why: &str| {
        let o = xdv(&[
            "submit",
            "hash",
            "--tenant",
            "1",
            "--via-gate",
            "--prefer",
            prefer,
            "--dir",
            s(&dir),
        ]);
        assert_ne!(o.code, 0, "{o:?}");
        assert!(o.stderr.contains(why), "{o:?}");
    };
    refused("2,5", "--prefer 5: the federation has clusters 1..=2");
    refused("1,2,1,2,1,2,1,2,1", "--prefer names 9 clusters; at most 8");
    let _ = std::fs::remove_dir_all(dir);
}

/// Discovered machines through the CLI against a fake member: `nodes --discovered`
/// prints the table (and JSON), `join --mac` refuses a malformed MAC, a cluster that
/// does not boot by PXE, a member's MAC and a MAC that never reported itself, and
/// `join --unprovisioned` needs a PXE cluster; none of them changes the cluster.
#[test]
fn discovered_machines_are_listed_and_join_mac_refusals_are_specific() {
    use xdv_cluster::discovery::{DiscoveredMachine, Firmware, Hardware, NicModel};
    let dir = temp("discovered");
    let a = FakeNode::start(|r| match r {
        Request::Discovered => Response::Discovered {
            clock_ms: 9000,
            machines: vec![(
                [0x52, 0x54, 0, 0, 1, 9],
                DiscoveredMachine {
                    hardware: Hardware {
                        cores: 4,
                        mem_mib: 2048,
                        nic: NicModel::E1000e,
                        firmware: Firmware::Uefi,
                    },
                    first_seen_ms: 1000,
                    last_seen_ms: 7000,
                },
            )],
            refused_full: 0,
            refused_invalid: 2,
        },
        _ => Response::Refused(Denied::NoLeader),
    });
    fake_cluster(&dir, &[(1, me(), a.port)]);
    let o = xdv(&["nodes", "--discovered", "--dir", s(&dir)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(
            "52:54:00:00:01:09  4      2048     e1000e      uefi      1000           7000"
        ),
        "{o:?}"
    );
    assert!(
        o.stdout
            .contains("1 discovered (cluster time 9000 ms); refused: 0 (table full), 2 (invalid)"),
        "{o:?}"
    );
    let o = xdv(&["nodes", "--discovered", "--json", "--dir", s(&dir)]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let m = &v["discovered"][0];
    assert_eq!(
        (&m["mac"], &m["nic"], &m["firmware"], &m["cores"]),
        (
            &"52:54:00:00:01:09".into(),
            &"e1000e".into(),
            &"uefi".into(),
            &4.into()
        ),
        "{v}"
    );

    let o = xdv(&["join", "--mac", "52:54:00:00:01", "--dir", s(&dir)]);
    assert!(
        o.code != 0 && o.stderr.contains("bad MAC `52:54:00:00:01`"),
        "{o:?}"
    );
    let o = xdv(&["join", "--mac", "52:54:00:00:01:09", "--dir", s(&dir)]);
    assert!(
        o.code != 0 && o.stderr.contains("needs a cluster that boots by PXE"),
        "{o:?}"
    );
    let o = xdv(&["join", "--unprovisioned", "--dir", s(&dir)]);
    assert!(
        o.code != 0 && o.stderr.contains("needs a cluster that boots by PXE"),
        "{o:?}"
    );

    let mut st = ClusterState::load(&dir).unwrap();
    st.machine.pxe = Some(xdv::pxe::PxeBoot {
        tftp: dir.join("tftp"),
        firmware: xdv::pxe::Firmware::Bios,
    });
    st.save().unwrap();
    let o = xdv(&["join", "--mac", "52:54:00:00:01:01", "--dir", s(&dir)]);
    assert!(
        o.code != 0
            && o.stderr
                .contains("MAC 52:54:00:00:01:01 is node 1's, already a member"),
        "{o:?}"
    );
    let o = xdv(&["join", "--mac", "52-54-00-00-01-0A", "--dir", s(&dir)]);
    assert!(
        o.code != 0
            && o.stderr.contains(
                "no machine with MAC 52:54:00:00:01:0a has reported itself as discovered"
            ),
        "{o:?}"
    );
    let st = ClusterState::load(&dir).unwrap();
    assert_eq!(st.nodes.len(), 1, "a refused join adds nothing");
    assert!(
        !dir.join("tftp/xdv").exists(),
        "a refused join writes no TFTP entry"
    );
}

// ----- task log lines, logs, metrics, console -----

/// The lines a module wrote with `log()` come with `submit`, `task get` (words and
/// JSON) and `logs --task`.
#[test]
fn task_log_lines_are_shown_everywhere() {
    let log = vec!["said hello".to_string(), "and more".to_string()];
    let fake = node_reporting_log(completed(Outcome::Executed, 3, b"hi"), log);
    let dir = temp("task-log");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let hello = repo().join("examples/hello.wat");
    let o = xdv(&["submit", s(&hello), "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("\nlog: said hello\nlog: and more\n"),
        "{o:?}"
    );
    let o = xdv(&["task", "get", "7", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[1..], ["log: said hello", "log: and more"], "{o:?}");
    let o = xdv(&["task", "get", "7", "--json", "--dir", d]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(
        v["log"],
        serde_json::json!(["said hello", "and more"]),
        "{v}"
    );
    let o = xdv(&["logs", "--task", "7", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "said hello\nand more\n", "{o:?}");

    let quiet = node_reporting(completed(Outcome::Executed, 3, b""));
    fake_cluster(&dir, &[(1, me(), quiet.port)]);
    let o = xdv(&["logs", "--task", "7", "--dir", d]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{o:?}");
    assert!(o.stderr.contains("task 7 wrote no log lines"), "{o:?}");
    let o = xdv(&["logs", "--dir", d]);
    assert_eq!(o.code, xdv::exit::USAGE, "a node or --task: {o:?}");
    let o = xdv(&["logs", "1", "--task", "7", "--dir", d]);
    assert_eq!(o.code, xdv::exit::USAGE, "not both: {o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `logs <node>`: this boot's lines (from the offset the boot started at), `--all`
/// every boot, `--tail N`; an unknown node is named.
#[test]
fn logs_prints_a_nodes_serial_log() {
    let dir = temp("logs");
    fake_cluster(&dir, &[(1, None, closed_port()), (2, None, closed_port())]);
    let d = s(&dir);
    let old = "xdv: boot 1\r\nxdv: ready\r\n";
    std::fs::write(
        dir.join("node1.log"),
        format!("{old}xdv: boot 2\r\nxdv> uptime\r\n"),
    )
    .unwrap();
    let mut st = ClusterState::load(&dir).unwrap();
    st.nodes[0].log_offset = old.len() as u64;
    st.save().unwrap();
    let o = xdv(&["logs", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "xdv: boot 2\nxdv> uptime\n", "{o:?}");
    let o = xdv(&["logs", "1", "--all", "--tail", "3", "--dir", d]);
    assert_eq!(o.stdout, "xdv: ready\nxdv: boot 2\nxdv> uptime\n", "{o:?}");
    let o = xdv(&["logs", "2", "--dir", d]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "never ran: {o:?}");
    let o = xdv(&["logs", "9", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("node 9 is not a member"), "{o:?}");

    // --follow keeps printing what the node appends.
    let mut child = Command::new(env!("CARGO_BIN_EXE_xdv"))
        .args(["logs", "1", "--follow", "--dir", d])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("node1.log"))
        .unwrap();
    f.write_all(b"xdv: later line\r\n").unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        seen.push(l);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        ["xdv: boot 2\n", "xdv> uptime\n", "xdv: later line\n"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `metrics <node>` prints what the node answers, signed as the operator; a refusal
/// and a stopped node are errors.
#[test]
fn metrics_prints_the_nodes_exposition() {
    let text =
        "# HELP xdv_raft_term Current Raft term.\n# TYPE xdv_raft_term gauge\nxdv_raft_term 3\n";
    let fake = FakeNode::start(move |r| match r {
        Request::Metrics => Response::Metrics(text.to_string()),
        _ => Response::Refused(Denied::OperatorOnly),
    });
    let dir = temp("metrics");
    fake_cluster(&dir, &[(1, me(), fake.port), (2, None, closed_port())]);
    let d = s(&dir);
    let o = xdv(&["metrics", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, text, "{o:?}");
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen[0].principal, xdv_cluster::mgmt::Principal::Operator);
    drop(seen);
    let o = xdv(&["metrics", "2", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("node 2 is not running"), "{o:?}");
    let refusing = FakeNode::start(|_| Response::Refused(Denied::OperatorOnly));
    fake_cluster(&dir, &[(1, me(), refusing.port)]);
    let o = xdv(&["metrics", "1", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("refused"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A second `console` on the same node is refused at once, naming the first.
#[test]
fn a_second_console_client_is_refused() {
    let dir = temp("console2");
    fake_cluster(&dir, &[(1, me(), closed_port())]);
    let d = s(&dir);
    // The node's console socket: accepts and keeps the connection open.
    let l = std::os::unix::net::UnixListener::bind(dir.join("node1.sock")).unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = l.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let mut first = Command::new(env!("CARGO_BIN_EXE_xdv"))
        .args(["console", "1", "--dir", d])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(first.stderr.take().unwrap());
    let mut l = String::new();
    err.read_line(&mut l).unwrap();
    assert!(l.contains("attached to node 1"), "{l}");
    let o = xdv(&["console", "1", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("node 1's console is in use")
            && o.stderr.contains(&format!("pid {}", first.id())),
        "{o:?}"
    );
    // Ctrl-] detaches the first at once.
    first.stdin.as_mut().unwrap().write_all(&[0x1d]).unwrap();
    let status = first.wait().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("[detached from node 1]"), "{rest}");
    let _ = std::fs::remove_dir_all(dir);
}

// ----- cancel, task timeouts -----

#[test]
fn cancel_exit_codes_and_messages() {
    let fake = FakeNode::start(|r| match r {
        Request::Cancel { task } => match task.0 {
            7 => Response::Cancelled {
                task: *task,
                node: Some(NodeId(2)),
                attempt: 1,
            },
            8 => Response::Cancelled {
                task: *task,
                node: None,
                attempt: 0,
            },
            10 => Response::Refused(Denied::OutOfScope { task: *task }),
            11 => Response::Refused(Denied::TaskFinished {
                task: *task,
                outcome: "executed".into(),
            }),
            _ => Response::Refused(Denied::UnknownTask(*task)),
        },
        _ => Response::Refused(Denied::OperatorOnly),
    });
    let dir = temp("cancel");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let d = s(&dir);
    let cancel = |task: &str, tenant: &str| xdv(&["cancel", task, "--tenant", tenant, "--dir", d]);
    let cases: Vec<(&str, i32, &str)> = vec![
        (
            "7",
            0,
            "task 7 cancelled (was running on node 2, attempt 1; it stops there); its quota is free",
        ),
        ("8", 0, "task 8 cancelled before it ran; its quota is free"),
        (
            "9",
            REFUSED,
            "cancel refused: no task t9 (never submitted or expired)",
        ),
        (
            "10",
            REFUSED,
            "cancel refused: t10 belongs to another tenant",
        ),
        (
            "11",
            REFUSED,
            "cancel refused: t11 already finished (executed); nothing to cancel",
        ),
    ];
    for (task, code, line) in cases {
        let o = cancel(task, "1");
        assert_eq!(o.code, code, "{o:?}");
        assert_eq!(o.stdout.trim_end(), line, "{o:?}");
        assert_clean(&o);
    }
    // Signed by the tenant, one request per cancel.
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter()
            .all(|r| r.principal == Principal::Tenant(TenantId(1)))
    );
    // A tenant without a key, a bad task id, a stopped node: errors, not refusals.
    let o = cancel("7", "9");
    assert!(o.code == 1 && o.all().contains("tenant 9"), "{o:?}");
    let o = cancel("x", "1");
    assert_eq!(o.code, 2, "usage error: {o:?}");
    let dir2 = temp("cancel-stopped");
    fake_cluster(&dir2, &[(1, me(), closed_port())]);
    let o = xdv(&["cancel", "7", "--tenant", "1", "--dir", s(&dir2)]);
    assert!(o.code == 1 && o.all().contains("not running"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[test]
fn submit_sends_the_task_timeout_and_reports_timeouts_and_cancels() {
    let fake = node_reporting(completed(
        Outcome::Timeout("3000 ms elapsed, over its timeout of 2000 ms + 0 ms extensions".into()),
        0,
        b"",
    ));
    let dir = temp("submit-timeout");
    fake_cluster(&dir, &[(1, me(), fake.port)]);
    let o = xdv(&[
        "submit",
        "hash",
        "--tenant",
        "1",
        "--task-timeout",
        "2",
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, FAILED, "{o:?}");
    assert!(
        o.stdout.starts_with(
            "task 7 timed out on node 1 (attempt 1): 3000 ms elapsed, over its timeout of 2000 ms"
        ),
        "{o:?}"
    );
    let sent = fake.requests();
    assert!(
        matches!(&sent[0], Request::Submit(s) if s.timeout_ms == Some(2_000)),
        "{sent:?}"
    );
    let o = xdv(&[
        "submit",
        "hash",
        "--tenant",
        "1",
        "--task-timeout",
        "0",
        "--dir",
        s(&dir),
    ]);
    assert_eq!(o.code, 2, "a zero timeout is a usage error: {o:?}");
    let fake = node_reporting(completed(Outcome::Cancelled, 0, b""));
    let dir2 = temp("submit-cancelled");
    fake_cluster(&dir2, &[(1, me(), fake.port)]);
    let o = xdv(&[
        "submit",
        "hash",
        "--tenant",
        "1",
        "--json",
        "--dir",
        s(&dir2),
    ]);
    assert_eq!(o.code, FAILED, "{o:?}");
    assert!(o.stdout.contains("\"outcome\":\"cancelled\""), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

/// Every argument list is a usage error (exit code 2).
fn assert_usage_errors(cases: &[Vec<&str>]) {
    for args in cases {
        let o = xdv(args);
        assert_eq!(o.code, 2, "usage error: {args:?} {o:?}");
    }
}

#[test]
fn up_refuses_bad_federations_before_building_anything() {
    let dir = temp("fed-refuse");
    let d = s(&dir);
    // 1 gate + 3 clusters of 3 nodes: 10 machines.
    let o = xdv(&["up", "--dir", d, "--clusters", "3", "--nodes", "3"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("10 machines") && o.stderr.contains("at most 9"),
        "{o:?}"
    );
    let o = xdv(&["up", "--dir", d, "--clusters", "2", "--accel", "2=q"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("not supported with --clusters"), "{o:?}");
    // --gates and --route-scale only with --clusters; at most 3 gates.
    let o = xdv(&["up", "--dir", d, "--gates", "1"]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
    let o = xdv(&["up", "--dir", d, "--route-scale", "100"]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
    let o = xdv(&["up", "--dir", d, "--clusters", "2", "--gates", "4"]);
    assert_eq!(o.code, xdv::exit::USAGE, "{o:?}");
    // Nothing was written.
    assert!(xdv::cluster::cluster_files(&dir).is_empty());
    // A plain cluster has no gate.
    fake_cluster(&dir, &[(1, me(), 0)]);
    let o = xdv(&["route", "explain", "1", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("not a federation"), "{o:?}");
    let o = xdv(&["submit", "hash", "--tenant", "1", "--via-gate", "--dir", d]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("not a federation"), "{o:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn federation_modules_carry_each_group_and_the_other_side() {
    use xdv_boot::federation::{FedRole, FedSection};
    use xdv_boot::provision::Provision;
    let k = Keys::generate_federation(1, 2, 2, 2, (500, 1000, 100)).unwrap();
    let f = k.federation.clone().unwrap();
    let ids: Vec<Vec<u32>> = f.groups.iter().map(|g| g.nodes.clone()).collect();
    assert_eq!(ids, vec![vec![1], vec![2, 3], vec![4, 5]]);
    let clusters: Vec<u32> = f.groups.iter().map(|g| g.cluster).collect();
    assert_eq!(clusters, vec![k.cluster, k.cluster + 1, k.cluster + 2]);
    let split = |node: u32| {
        let m = k.module(node).unwrap();
        let n = Provision::record_len(&m).unwrap();
        (
            Provision::parse(&m[..n]).unwrap(),
            FedSection::parse(&m[n..]).unwrap(),
        )
    };
    // The gate: its own group; every member node across, with its cluster id.
    let (p, s) = split(1);
    assert_eq!((p.node, p.cluster, p.peers().len()), (1, k.cluster, 1));
    assert_eq!(s.role, FedRole::Gate);
    assert_eq!((s.period_ms, s.route_per_mille), (500, 100));
    let across: Vec<(u32, u32)> = s.peers().iter().map(|x| (x.node, x.cluster)).collect();
    assert_eq!(
        across,
        vec![
            (2, k.cluster + 1),
            (3, k.cluster + 1),
            (4, k.cluster + 2),
            (5, k.cluster + 2)
        ]
    );
    // A member: its cluster's two nodes; the gate across.
    let (p, s) = split(5);
    assert_eq!(p.cluster, k.cluster + 2);
    let peers: Vec<u32> = p.peers().iter().map(|x| x.node).collect();
    assert_eq!(peers, vec![4, 5]);
    assert_eq!(s.role, FedRole::Member);
    assert_eq!((s.gate_cluster, s.period_ms), (k.cluster, 1000));
    assert_eq!(s.peers().len(), 1);
    assert_eq!(s.peers()[0].node, 1);
    // Signing: the gate's id for tenants by default, each member's own on request.
    assert_eq!(k.for_node(4).cluster, k.cluster + 2);
    assert_eq!(k.for_node(1).cluster, k.cluster);
    // A plain cluster's module has no federation section.
    let plain = Keys::generate(2, 1).unwrap();
    let m = plain.module(1).unwrap();
    assert_eq!(Provision::record_len(&m), Some(m.len()));
}
