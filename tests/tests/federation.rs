//! A federation in QEMU (issue 16): a 1-node gate group and two 1-node clusters on the
//! host switch, provisioned like `cargo xdv up --clusters 2 --nodes 1 --gates 1`
//! (node 1 the gate, nodes 2 and 3 the clusters). A tenant's job submitted to the gate
//! is routed, dispatched, runs on the chosen cluster and finishes; `RouteExplain`
//! shows the decision (bucket, scores, reason). Then the chosen cluster's link gets
//! +150 ms (the switch's `delay MS PORT`, as `cargo xdv switch ctl delay 150 N`): new
//! jobs stay on it until the hold-down after its selection has passed, then move to the
//! other cluster.
//!
//! Then, in the same boot, what AD-34 asks of a routed job: a hung task (a spin with
//! a 2 s timeout) is reported by its cluster to the gate group, the gate declares the
//! global timeout and its verdict ends the task `Timeout` with the gate's reason (no
//! retry: the verdict is global), and a long task the tenant cancels on the cluster
//! that runs it ends `Cancelled`, the gate's job with it. Last, a hung task inside a
//! cluster (local authority): its completion is held past its timeout (the `fault
//! late-completion` console hook), the log re-places it as attempt 2 (a new fence
//! token), which completes, and the held completion of attempt 1 is refused as stale.
//! Every node boots with `timeouts=100` (task timeouts at 1/10: the gate checks every
//! 1.5 s, a cluster every 3 s).
//!
//! Test factor: the router's hold-down, degrade confirmation and cooldown are scaled
//! by `ROUTE_PER_MILLE` / 1000 (the provisioning module's route scale, `up
//! --route-scale`): hold-down 30 s → 12 s. Both links start at +20 ms so the gate's
//! Vivaldi coordinate converges (QEMU's own jitter is a few ms; on a bare LAN-like
//! link the relative error stays near the 0.5 limit for coordinate routing).

use std::time::{Duration, Instant};
use xdv::mgmt::{self, Client};
use xdv::testbed::Testbed;
use xdv_cluster::gate::JobStatus;
use xdv_cluster::mgmt::{Principal, Request, Response, SignedRequest, Submit};
use xdv_cluster::{Outcome, Work};
use xdv_types::TenantId;

const ROUTE_PER_MILLE: u32 = 400;
const HOLD_DOWN_MS: u64 = 30_000 * ROUTE_PER_MILLE as u64 / 1000;
const T: Duration = Duration::from_secs(60);

fn submit(tb: &Testbed) -> (u64, u32) {
    route(
        tb,
        Submit::new(Work::Builtin("hash".into()), b"federation".to_vec(), 100),
    )
}

/// `examples/spin.wat` with a budget it never reaches under QEMU.
fn spin(timeout_ms: Option<u64>) -> Submit {
    let wat = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/spin.wat"))
        .unwrap();
    Submit {
        timeout_ms,
        ..Submit::new(Work::Wasm(wat::parse_str(&wat).unwrap()), vec![], 1 << 28)
    }
}

/// Sends `submit` to the gate (node 1) until it is routed: (job, cluster).
fn route(tb: &Testbed, submit: Submit) -> (u64, u32) {
    let req = mgmt::signed(
        &tb.keys,
        Principal::Tenant(TenantId(1)),
        Request::Submit(submit),
    )
    .unwrap();
    let end = Instant::now() + T;
    loop {
        let r = Client::connect(tb.port(1), Duration::from_secs(2))
            .and_then(|mut c| c.call(&req, Duration::from_secs(10)));
        match r {
            Ok(Response::Routed {
                job,
                cluster: Some(c),
            }) => return (job, c.0),
            other => assert!(Instant::now() < end, "not routed: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn explain(tb: &Testbed, job: u64) -> String {
    explained(tb, job).0
}

/// The gate's explanation of `job` and its status.
fn explained(tb: &Testbed, job: u64) -> (String, JobStatus) {
    let req = mgmt::signed(&tb.keys, Principal::Operator, Request::RouteExplain { job }).unwrap();
    match Client::connect(tb.port(1), Duration::from_secs(2))
        .and_then(|mut c| c.call(&req, Duration::from_secs(10)))
    {
        Ok(Response::RouteExplained { text, status, .. }) => (text, status),
        other => panic!("no explanation of job {job}: {other:?}"),
    }
}

/// Polls the gate until `job`'s status satisfies `done`.
fn wait_status(
    tb: &Testbed,
    job: u64,
    what: &str,
    done: impl Fn(&JobStatus) -> bool,
) -> (String, JobStatus) {
    let end = Instant::now() + T;
    loop {
        let (text, status) = explained(tb, job);
        if done(&status) {
            return (text, status);
        }
        assert!(
            Instant::now() < end,
            "job {job} never {what}:\n{text}\n{}",
            tb.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn call(port: u16, req: &SignedRequest) -> Response {
    Client::connect(port, Duration::from_secs(5))
        .unwrap()
        .call(req, Duration::from_secs(15))
        .unwrap()
}

/// The decision's cluster time (`route decision for context 1 at 47000 ms`).
fn decided_at(text: &str) -> u64 {
    text.split(" at ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no decision time in {text}"))
}

fn reason(text: &str) -> String {
    text.split("reason: ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn gate_routes_jobs_explains_and_moves_new_jobs_after_a_delay_and_the_hold_down() {
    let started = Instant::now();
    let mut tb = Testbed::prepare_federation("federation", (1, 2, 1), ROUTE_PER_MILLE, 5).unwrap();
    tb.cmdline = "timeouts=100".into();
    // The hung task below uses the `fault late-completion` console hook.
    tb.test_hooks = true;
    // The clusters' nodes run tasks on two cores: a 1-node cluster with one task core
    // reports itself `busy` while any task is assigned (busy >= total), and a heartbeat
    // sent while a job of the hold-down phase ran moved the next job at once by bucket
    // change (seen once in CI), which is right for the router but not what this phase
    // measures.
    for id in 1..=3 {
        let smp = if id == 1 { 2 } else { 3 };
        tb.vms[id - 1] = Some(tb.boot_smp(id, &format!("node{id}.prov"), smp).unwrap());
    }
    let fed = tb.keys.federation.clone().unwrap();
    let port_of = |cluster: u32| -> u32 {
        fed.groups
            .iter()
            .find(|g| g.cluster == cluster)
            .map(|g| g.nodes[0])
            .unwrap()
    };
    tb.vm(1)
        .wait_for("federation: gate of 2 clusters", T)
        .unwrap();
    tb.vm(2).wait_for("federation: cluster", T).unwrap();
    xdv::switch::control(&tb.dir, "delay 20 2,3").unwrap();

    // The gate's coordinate converges (error below the router's 0.5).
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let v = tb.view(1).unwrap();
        let h = &v.peer_health;
        if h.samples >= 20 && h.error_ppm < 400_000 {
            break;
        }
        assert!(
            Instant::now() < end,
            "gate coordinate never converged: error {} ppm after {} samples",
            h.error_ppm,
            h.samples
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // One job: routed, dispatched, run and finished on the chosen cluster.
    let (job, chosen) = submit(&tb);
    let end = Instant::now() + T;
    let first = loop {
        let t = explain(&tb, job);
        if t.contains("status: finished") {
            break t;
        }
        assert!(Instant::now() < end, "job {job} never finished:\n{t}");
        std::thread::sleep(Duration::from_millis(300));
    };
    println!("job {job}:\n{first}");
    assert!(
        first.contains(&format!("status: finished on c{chosen} as t")),
        "{first}"
    );
    assert!(first.contains(": executed"), "{first}");
    assert!(first.contains("bucket healthy"), "{first}");
    assert!(first.contains("rtt_ucb_ms"), "{first}");
    assert!(first.contains("PRIMARY"), "{first}");
    assert!(!reason(&first).is_empty(), "{first}");
    let selected_at = decided_at(&first);
    let other = fed
        .clusters()
        .map(|(_, g)| g.cluster)
        .find(|c| *c != chosen)
        .unwrap();
    // The member ran it: its state has the task.
    let member = port_of(chosen) as usize;
    assert!(tb.view(member).unwrap().tasks >= 1);

    // Slow the chosen cluster's link; new jobs move after the hold-down.
    xdv::switch::control(&tb.dir, &format!("delay 150 {}", port_of(chosen))).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let mut stayed = Vec::new();
    let moved = loop {
        let (j, c) = submit(&tb);
        let t = explain(&tb, j);
        if c == other {
            break t;
        }
        stayed.push((decided_at(&t), reason(&t)));
        assert!(
            Instant::now() < end,
            "new jobs never moved to cluster {other}: {stayed:?}"
        );
        std::thread::sleep(Duration::from_millis(1000));
    };
    println!("stayed: {stayed:?}\nmoved:\n{moved}");
    let moved_at = decided_at(&moved);
    assert!(
        moved_at >= selected_at + HOLD_DOWN_MS,
        "moved at {moved_at} ms, before the hold-down ({HOLD_DOWN_MS} ms) after {selected_at} ms"
    );
    assert!(
        ["improvement", "degraded", "best", "initial"].contains(&reason(&moved).as_str()),
        "{moved}"
    );
    // And the next one stays there.
    let (_, c) = submit(&tb);
    assert_eq!(c, other);

    // A hung routed task: its cluster reports the timeout to the gate group, the gate
    // declares it, and the verdict ends the task (no retry: the verdict is global).
    let (hung, on) = route(&tb, spin(Some(2_000)));
    let (text, status) = wait_status(&tb, hung, "timed out", |s| {
        matches!(s, JobStatus::Finished { .. })
    });
    println!("hung job {hung}:\n{text}");
    match &status {
        JobStatus::Finished {
            cluster,
            outcome: Outcome::Timeout(why),
            ..
        } => {
            assert_eq!(cluster.0, on);
            assert!(
                why.contains("gate verdict"),
                "not the gate's verdict: {why}\n{text}"
            );
        }
        other => panic!("hung job {hung} ended {other}\n{text}"),
    }

    // A long routed task cancelled by its tenant on the cluster running it.
    let (long, on) = route(&tb, spin(None));
    let (_, status) = wait_status(&tb, long, "accepted", |s| {
        matches!(s, JobStatus::Accepted { .. })
    });
    let JobStatus::Accepted { cluster, task } = status else {
        unreachable!()
    };
    assert_eq!(cluster.0, on);
    // The tenant signs for the member cluster (each cluster has its own id).
    let member = port_of(on) as usize;
    let cancel = mgmt::signed(
        &tb.keys.for_node(member as u32),
        Principal::Tenant(TenantId(1)),
        Request::Cancel { task },
    )
    .unwrap();
    let end = Instant::now() + T;
    loop {
        match call(tb.port(member), &cancel) {
            Response::Cancelled { .. } => break,
            other => assert!(
                Instant::now() < end,
                "cancel of {task} on node {member}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (text, status) = wait_status(&tb, long, "finished", |s| {
        matches!(s, JobStatus::Finished { .. })
    });
    println!("cancelled job {long}:\n{text}");
    assert!(
        matches!(
            status,
            JobStatus::Finished {
                outcome: Outcome::Cancelled,
                ..
            }
        ),
        "{status}\n{text}"
    );
    // A hung task inside a cluster (local authority: submitted to the cluster, not the
    // gate): its node holds the completion 8 s (the `fault late-completion` test hook,
    // a completion delayed as a slow network would). The log times attempt 1 out and
    // re-places it as attempt 2 (its fence token), which completes; the held
    // completion of attempt 1, proposed afterwards as it was, is refused as stale.
    let member = port_of(other) as usize;
    let armed = tb
        .vm(member)
        .command("fault late-completion 8000", "test hook armed", T)
        .unwrap();
    assert!(armed.contains("held 8000 ms"), "{armed}");
    let keys = tb.keys.for_node(member as u32);
    let signed = |request| mgmt::signed(&keys, Principal::Tenant(TenantId(1)), request).unwrap();
    let mut hash = spin(Some(2_000));
    hash.work = Work::Builtin("hash".into());
    hash.input = b"late".to_vec();
    hash.budget_ticks = 100;
    let late = mgmt::submit_until_placed(
        tb.port(member),
        &signed(Request::Submit(hash)),
        Instant::now() + T,
    )
    .unwrap();
    let stale = format!("{late} attempt 1: completion refused, stale fence token");
    tb.vm(member)
        .wait_for(&stale, T)
        .unwrap_or_else(|e| panic!("{e}\n{}", tb.vm(member).output()));
    let out = tb.vm(member).output();
    assert!(
        out.contains(&format!(
            "fault: {late} attempt 1 finished; its completion is held"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{stale} (it ended at attempt 2)")),
        "{out}"
    );
    match call(tb.port(member), &signed(Request::TaskStatus { task: late })) {
        Response::Task {
            status:
                xdv_cluster::TaskStatus::Completed {
                    attempt,
                    outcome: Outcome::Executed,
                    ..
                },
            ..
        } => assert_eq!(attempt, 2),
        other => panic!("{late}: {other:?}\n{out}"),
    }

    println!("federation test took {:?}", started.elapsed());
    for id in 1..=3 {
        tb.kill(id);
    }
    tb.switch.shutdown().unwrap();
}
