//! The node's accelerator pool over plain memory, with the device side of the ring
//! protocol answering by hand: what a device job leaves in the audit log (its
//! entanglement and teleportation use, and the output hash the requesting node's
//! `job-ended` contract record names) and the outcome each device status gives.

use std::rc::Rc;
use xdv_accel::device::DeviceSide;
use xdv_accel::job::{Circuit, Gate, QResult};
use xdv_accel::regs::{self, DeviceMemory, Kind, MemWindow};
use xdv_accel::ring::CqStatus;
use xdv_audit::RecordBody;
use xdv_cluster::{Completion, Domain, Outcome, TaskSpec, Work};
use xdv_node::RunTask;
use xdv_node::accel::{AUDIT_TAG_ACCEL, AccelPool, Port};
use xdv_types::{NodeId, Priority, TaskId, TenantId};

struct MemPort(Rc<MemWindow>);

impl Port for MemPort {
    fn mem(&self) -> &dyn DeviceMemory {
        &*self.0
    }
    fn ring(&self) {}
}

/// A Q device (16 qubits in 2 containers) and node 2's pool over it, enabled.
fn q_pool() -> (Rc<MemWindow>, DeviceSide, AccelPool<MemPort>) {
    let mem = Rc::new(MemWindow::new(regs::STD_WINDOW_BYTES));
    let mut side = DeviceSide::new(&*mem, Kind::Q, 16, 2, 8, 0);
    let mut pool = AccelPool::new(NodeId(2));
    pool.add("q0".into(), MemPort(mem.clone()), 0);
    for t in 0..10 {
        let _ = side.take(&*mem);
        assert!(pool.poll(t).is_empty());
    }
    assert_eq!(pool.offer(), (2, 0), "the device is ready");
    (mem, side, pool)
}

/// Teleportation's shape: entangle, measure qubit 0, then act on qubit 1 again.
fn circuit() -> Circuit {
    Circuit {
        qubits: 2,
        clbits: 2,
        shots: 100,
        gates: vec![
            Gate::H(0),
            Gate::Cx(0, 1),
            Gate::Cz(0, 1),
            Gate::Measure { qubit: 0, clbit: 0 },
            Gate::H(1),
            Gate::Measure { qubit: 1, clbit: 1 },
        ],
    }
}

fn q_task(job: Vec<u8>) -> RunTask {
    RunTask {
        task: TaskId(41),
        attempt: 1,
        spec: TaskSpec {
            tenant: TenantId(1),
            request_seq: 1,
            work: Work::Job(job),
            input: vec![],
            budget_ticks: 100,
            priority: Priority::Normal,
            guards: vec![],
            needs: vec![],
            domain: Domain::Q,
            pin: None,
            contract: Some(7),
            timeout_ms: None,
        },
        submitted_lamport: 1,
        memory_pages: 0,
        table_elements: 0,
        slots: vec![0],
    }
}

/// Runs one task: the device answers `status` with `result`; returns the completion
/// and the pool's audit lines.
fn run_one(status: CqStatus, result: &[u8], detail: u32) -> (Completion, Vec<String>) {
    let (mem, mut side, mut pool) = q_pool();
    assert!(pool.run(q_task(circuit().encode())).is_none());
    assert!(pool.poll(20).is_empty());
    let (taken, _) = side.take(&*mem);
    assert_eq!(taken.len(), 1, "the job reached the device");
    side.complete(&*mem, &taken[0].sub, status, result, detail, 1234);
    let done = pool.poll(21);
    assert_eq!(done.len(), 1);
    pool.invariants().unwrap();
    let (audit, _) = pool.drain();
    let lines = audit
        .into_iter()
        .filter_map(|b| match b {
            RecordBody::Custom { tag, bytes } if tag == AUDIT_TAG_ACCEL => {
                Some(String::from_utf8(bytes).unwrap())
            }
            _ => None,
        })
        .collect();
    (done.into_iter().next().unwrap(), lines)
}

/// The target's device record of a Q job holds the job's entangling-op and
/// teleportation counts and the output hash its completion carries — the hash the
/// requesting node's `job-ended` contract record names beside the task id.
#[test]
fn a_q_job_record_carries_entanglement_teleportations_and_output_hash() {
    let c = circuit();
    assert_eq!((c.entangling_ops(), c.teleportations()), (2, 1));
    let result = QResult {
        counts: vec![(0, 50), (3, 50)],
        shots: 100,
        entangling_ops: c.entangling_ops(),
        teleportations: c.teleportations(),
        depth: c.depth(),
    }
    .encode();
    let (done, lines) = run_one(CqStatus::Ok, &result, 0);
    assert_eq!(done.outcome, Outcome::Executed);
    assert_eq!(done.output, result);
    assert_eq!(done.output_hash, xdv_node::accel::output_hash(&result));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert!(
        l.starts_with(&format!("{} attempt 1 on q0 slot 0: ok", TaskId(41))),
        "{l}"
    );
    assert!(l.contains("entangling ops 2, teleportations 1"), "{l}");
    assert!(l.contains(&format!("output {}", done.output_hash)), "{l}");
    assert!(l.contains("device 1234 µs"), "{l}");
}

/// A result that is not a Q result is named as such in the record, not counted.
#[test]
fn an_unreadable_q_result_is_recorded_as_such() {
    let (_, lines) = run_one(CqStatus::Ok, b"garbage", 0);
    assert!(lines[0].contains("result unreadable"), "{lines:?}");
    assert!(!lines[0].contains("entangling ops"), "{lines:?}");
}

/// Over its container's decoherence budget: the device aborts the job, the task ends
/// `BudgetExceeded` (not failed, not refused), and the record says so.
#[test]
fn a_job_over_budget_ends_budget_exceeded_and_is_recorded() {
    let (done, lines) = run_one(CqStatus::BudgetExceeded, &[], 57);
    assert_eq!(done.outcome, Outcome::BudgetExceeded);
    assert_eq!(done.task, TaskId(41));
    assert!(done.output.is_empty());
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("budget-exceeded (detail 57"), "{lines:?}");
    assert!(!lines[0].contains("entangling ops"), "{lines:?}");
}
