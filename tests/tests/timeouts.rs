//! Task timeouts and cancellation on a real node (AD-34 local authority): one QEMU node
//! (a cluster of one) with its timeouts scaled by `timeouts=100` (checked every 3 s,
//! stuck after 12 s). `examples/spin.wat` with a huge budget is cancelled by its tenant
//! while it runs: the answer says where it ran, and the core is free again at once (a
//! hash task runs right after it). Then a spin with a 2 s timeout is timed out, re-placed
//! with a new attempt twice, and ends `Timeout` at attempt 3; the core is free again.

use std::time::{Duration, Instant};
use xdv::mgmt::{self, Client};
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_cluster::mgmt::{Principal, Request, Response, SignedRequest, Submit};
use xdv_cluster::{Outcome, TaskStatus, Work};
use xdv_types::{NodeId, TaskId, TenantId};

const T: Duration = Duration::from_secs(120);

fn call(port: u16, req: &SignedRequest) -> Response {
    Client::connect(port, Duration::from_secs(5))
        .unwrap()
        .call(req, Duration::from_secs(15))
        .unwrap()
}

fn spin(tb: &Testbed, timeout_ms: Option<u64>) -> SignedRequest {
    let wat = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/spin.wat"))
        .unwrap();
    mgmt::signed(
        &tb.keys,
        Principal::Tenant(TenantId(1)),
        Request::Submit(Submit {
            timeout_ms,
            // 2^28 ticks: hours under QEMU — it never ends on its own here.
            ..Submit::new(Work::Wasm(wat::parse_str(&wat).unwrap()), vec![], 1 << 28)
        }),
    )
    .unwrap()
}

fn status(tb: &Testbed, task: TaskId) -> TaskStatus {
    let req = mgmt::signed(
        &tb.keys,
        Principal::Tenant(TenantId(1)),
        Request::TaskStatus { task },
    )
    .unwrap();
    match call(tb.port(1), &req) {
        Response::Task { status, .. } => status,
        other => panic!("status of {task}: {other:?}\n{}", tb.logs()),
    }
}

/// Waits until `task`'s status satisfies `done`.
fn wait(tb: &Testbed, task: TaskId, what: &str, done: impl Fn(&TaskStatus) -> bool) -> TaskStatus {
    let end = Instant::now() + T;
    loop {
        let s = status(tb, task);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "{task} never {what}: {s:?}\n{}",
            tb.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A hash task runs to `Executed`: the task core is free.
fn core_is_free(tb: &Testbed, tag: &str) {
    let t = tb.submit(1, 1, tag, T).unwrap()[0];
    let s = wait(tb, t, "finished", |s| {
        matches!(s, TaskStatus::Completed { .. })
    });
    assert!(
        matches!(
            s,
            TaskStatus::Completed {
                outcome: Outcome::Executed,
                ..
            }
        ),
        "{s:?}"
    );
}

#[test]
fn cancel_stops_a_long_task_and_a_late_task_ends_timeout() {
    let mut tb =
        Testbed::launch_with("timeouts", 1, Faults::default(), 31, "timeouts=100").unwrap();
    let out = tb.vm(1).output();
    assert!(
        out.contains("task timeouts scaled by 100/1000: check every 3000 ms, stuck after 12000 ms"),
        "{out}"
    );
    tb.leader(&[1], T).unwrap();

    // A spin task, cancelled by its tenant while it runs.
    let spinning =
        mgmt::submit_until_placed(tb.port(1), &spin(&tb, None), Instant::now() + T).unwrap();
    wait(&tb, spinning, "ran", |s| {
        matches!(s, TaskStatus::Assigned { .. })
    });
    std::thread::sleep(Duration::from_secs(2));
    let cancel = |task| {
        mgmt::signed(
            &tb.keys,
            Principal::Tenant(TenantId(1)),
            Request::Cancel { task },
        )
        .unwrap()
    };
    match call(tb.port(1), &cancel(spinning)) {
        Response::Cancelled {
            task,
            node,
            attempt,
        } => assert_eq!((task, node, attempt), (spinning, Some(NodeId(1)), 1)),
        other => panic!("cancel: {other:?}\n{}", tb.logs()),
    }
    assert!(matches!(
        status(&tb, spinning),
        TaskStatus::Completed {
            outcome: Outcome::Cancelled,
            ..
        }
    ));
    // The run queue's core left the endless loop: the next task runs.
    core_is_free(&tb, "after cancel");
    // A second cancel is refused: already finished.
    match call(tb.port(1), &cancel(spinning)) {
        Response::Refused(d) => assert!(d.to_string().contains("already finished"), "{d}"),
        other => panic!("second cancel: {other:?}"),
    }

    // A spin task with a 2 s timeout: timed out, re-placed (attempts are fence
    // tokens), and after three attempts it ends `Timeout`.
    let late =
        mgmt::submit_until_placed(tb.port(1), &spin(&tb, Some(2_000)), Instant::now() + T).unwrap();
    let s = wait(&tb, late, "ended", |s| {
        matches!(s, TaskStatus::Completed { .. })
    });
    match s {
        TaskStatus::Completed {
            outcome: Outcome::Timeout(why),
            attempt,
            node,
            ..
        } => {
            assert_eq!((attempt, node), (3, NodeId(1)));
            assert!(why.contains("over its timeout of 2000 ms"), "{why}");
        }
        other => panic!("{other:?}\n{}", tb.logs()),
    }
    core_is_free(&tb, "after timeout");
}
