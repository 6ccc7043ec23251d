//! The README's cluster commands on a real one-node cluster in QEMU: `up`, `submit`
//! (exit codes 0 and 4; the module's log line), `task get`, `logs --task`, `logs`,
//! `metrics` (checked by promtool), `status --json`, `down`, `start` (the switch comes back too),
//! then `up` refusing the directory,
//! `up --resume` keeping keys and history, `up --fresh` starting a new cluster, and
//! `submit --count` pipelining 70 tasks in signed batches. On the way, `policy set
//! routed` switches placement through the log (`status` shows it, it survives the
//! restart, and the next task is placed by `Routed`); `--fresh` is `least-loaded` again.
//! Boots QEMU (and builds the kernel on first use): run it on its own,
//! `cargo test -p xdv --test cli_cluster`.

use std::path::Path;
use std::process::Command;
use xdv::mgmt::Keys;

mod common;
use common::{Down, xdv};

fn status(dir: &str) -> serde_json::Value {
    let o = xdv(&["status", "--json", "--dir", dir]);
    assert_eq!(o.code, 0, "{o:?}");
    serde_json::from_str(o.stdout.trim()).unwrap()
}

/// `promtool check metrics` on `text` when promtool is installed (Debian package
/// `prometheus`; CI installs it and sets `XDV_REQUIRE_PROMTOOL=1`, which makes its
/// absence a failure).
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("XDV_REQUIRE_PROMTOOL").is_none(),
                "promtool required: {e}"
            );
            eprintln!("promtool not installed ({e}); checked with xdv_node::check_exposition only");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn up_submit_down_resume_fresh() {
    let dir = xdv::qemu::temp_dir("cli-cluster").unwrap();
    let _down = Down(dir.clone());
    let d = dir.to_str().unwrap();
    let base = common::mgmt_port_base();
    let ex = xdv::qemu::repo_root().join("examples");
    let hello = ex.join("hello.wat");
    let spin = ex.join("spin.wat");
    let (hello, spin) = (hello.to_str().unwrap(), spin.to_str().unwrap());
    let up = |extra: &[&str]| {
        let mut a = vec!["up", "--dir", d, "--detach", "--timeout", "180"];
        a.extend(extra);
        xdv(&a)
    };

    // A management port held by another program: a specific refusal before anything
    // starts (QEMU alone would exit with a bare host-forwarding error).
    {
        let busy_dir = xdv::qemu::temp_dir("cli-cluster-busy").unwrap();
        let _down = Down(busy_dir.clone());
        let port = base.parse::<u16>().unwrap() + 1;
        let _held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let o = xdv(&[
            "up",
            "--dir",
            busy_dir.to_str().unwrap(),
            "--detach",
            "--nodes",
            "1",
            "--mgmt-port-base",
            &base,
        ]);
        assert_eq!(o.code, 1, "{o:?}");
        assert!(
            o.stderr.contains(&format!(
                "node 1's management port 127.0.0.1:{port} is in use"
            )),
            "{o:?}"
        );
        assert!(!o.stderr.contains("started"), "nothing started: {o:?}");
    }

    let o = up(&["--nodes", "1", "--tenants", "1", "--mgmt-port-base", &base]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("1 nodes ready"), "{o:?}");
    assert!(
        !o.stderr.contains('\x1b'),
        "no terminal codes into a pipe: {o:?}"
    );
    let cluster = Keys::load(Path::new(d)).unwrap().cluster;

    let o = xdv(&["submit", hello, "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("executed on node 1") && o.stdout.contains("hello from xdv"),
        "{o:?}"
    );
    // The module's `log()` line came back through the log with its completion.
    assert!(o.stdout.contains("\nlog: said hello\n"), "{o:?}");
    let o = xdv(&["task", "get", "1", "--tenant", "1", "--dir", d]);
    assert!(o.stdout.contains("\nlog: said hello\n"), "{o:?}");
    let o = xdv(&["logs", "--task", "1", "--dir", d]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "said hello\n"), "{o:?}");
    // The node's serial log, this boot.
    let o = xdv(&["logs", "1", "--tail", "200", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("cluster: node 1 of cluster"), "{o:?}");
    // Metrics from the node: valid exposition (promtool when installed), the numbers
    // of this run.
    let o = xdv(&["metrics", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    xdv_node::check_exposition(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", o.stdout));
    promtool_check(&o.stdout);
    for line in [
        "xdv_raft_role{role=\"leader\"} 1",
        "xdv_tenant_tasks_submitted_total{tenant=\"1\"} 1",
        "xdv_tenant_tasks{tenant=\"1\",state=\"done\"} 1",
        "xdv_audit_enabled 1",
        "xdv_node_tasks_finished_total 1",
        "xdv_node_task_modules_compiled_total 1",
        "xdv_node_task_modules_reused_total 0",
    ] {
        assert!(
            o.stdout.lines().any(|l| l == line),
            "no `{line}`:\n{}",
            o.stdout
        );
    }
    let rx = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("xdv_net_rx_frames_total{nic=\"mgmt\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        rx > 0,
        "the management NIC counted our requests:\n{}",
        o.stdout
    );
    let o = xdv(&[
        "submit", spin, "--tenant", "1", "--budget", "50", "--dir", d,
    ]);
    assert_eq!(o.code, xdv::exit::FAILED, "{o:?}");
    assert!(
        o.stdout.contains("tick budget exceeded after 50 ticks"),
        "{o:?}"
    );
    let v = status(d);
    assert_eq!(v["nodes"][0]["view"]["tasks"], 2, "{v}");
    assert_eq!(v["health"]["leader"], 1, "{v}");
    assert_eq!(v["health"]["placement_policy"], "least-loaded", "{v}");

    // The operator switches placement to `Routed` through the log.
    let o = xdv(&["policy", "set", "routed", "--dir", d]);
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "placement policy: routed"),
        "{o:?}"
    );
    let o = xdv(&["status", "--dir", d]);
    assert!(o.stdout.contains("\nplacement: routed\n"), "{o:?}");

    let o = xdv(&["down", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("node 1 stopped (QMP quit)"), "{o:?}");

    // `start` after `down` brings the switch back too; the node rejoins on its RAM file.
    let o = xdv(&["start", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains("the switch was not running; started it"),
        "{o:?}"
    );
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while status(d)["nodes"][0]["state"] != "ready" {
        assert!(std::time::Instant::now() < end, "not ready again");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // The policy is replicated state: back after the restart, and it places task 3.
    let o = xdv(&["policy", "show", "--dir", d]);
    assert_eq!(o.stdout.trim(), "placement policy: routed", "{o:?}");
    let o = xdv(&["submit", hello, "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.starts_with("task 3 executed on node 1"),
        "ids continue: {o:?}"
    );
    assert_eq!(status(d)["nodes"][0]["view"]["placement_policy"], "routed");
    let o = xdv(&["down", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");

    let o = up(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("--resume") && o.stderr.contains("--fresh"),
        "{o:?}"
    );
    let o = up(&["--resume", "--nodes", "2"]);
    assert_eq!(o.code, 1, "{o:?}");

    // Resume: same keys, the three tasks are still there, new ones continue after them.
    let o = up(&["--resume"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(Keys::load(Path::new(d)).unwrap().cluster, cluster);
    let o = xdv(&["submit", hello, "--tenant", "1", "--json", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["output_text"], "hello from xdv", "{v}");
    assert_eq!(v["task"], 4, "{v}");
    let v = status(d);
    assert_eq!(v["nodes"][0]["view"]["tasks"], 4, "history kept: {v}");
    let o = xdv(&["down", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");

    // Fresh: new keys, empty history.
    let o = up(&["--fresh"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("--fresh: removed"), "{o:?}");
    assert_ne!(Keys::load(Path::new(d)).unwrap().cluster, cluster);
    let v = status(d);
    assert_eq!(v["nodes"][0]["view"]["tasks"], 0, "{v}");
    assert_eq!(v["health"]["placement_policy"], "least-loaded", "{v}");

    // `--count`: 70 copies in two signed batches (64 + 6), awaited together.
    let o = xdv(&[
        "submit", hello, "--tenant", "1", "--count", "70", "--dir", d,
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let ran: std::collections::BTreeSet<u64> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with("task ") && l.contains(" executed on node "))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ran, (1..=70).collect(), "{o:?}");
    assert!(
        o.stdout.contains("70 tasks in") && o.stdout.contains("2 batches of at most 64"),
        "{o:?}"
    );
    assert!(o.stdout.contains(": 70 succeeded"), "{o:?}");
    assert!(o.stdout.contains("hello from xdv"), "{o:?}");
    let v = status(d);
    assert_eq!(v["nodes"][0]["view"]["tasks"], 70, "each ran once: {v}");
    // One module, compiled once on this fresh boot: node 1's other tasks reused it.
    let o = xdv(&["metrics", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    let value = |name: &str| -> u64 {
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{}", o.stdout))
    };
    let started = value("xdv_node_tasks_started_total");
    assert!(started > 1, "node 1 ran several of the 70:\n{}", o.stdout);
    assert_eq!(value("xdv_node_task_modules_compiled_total"), 1);
    assert_eq!(value("xdv_node_task_modules_reused_total"), started - 1);
}
