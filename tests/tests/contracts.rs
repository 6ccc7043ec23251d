//! Remote allocation end to end (seed 000 §4–§7) on three booted nodes: node 2 has a
//! Q device, node 3 a Φ device. A tenant entering at node 1 reserves a container on
//! node 2 and runs Bell circuits under the contract (identical counts for the same
//! job); two tenants race for one container (equal policy: earlier in the log wins;
//! the operator's higher policy preempts) and every node agrees; a Φ window that goes
//! unstable terminates its contract; the Q device failing mid-job aborts its
//! contract; node 2 killed suspends the contracts on it; bad input is refused with a
//! reason; the contract records are in both nodes' audit regions and every chain
//! verifies. One boot for all of it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use xdv::mgmt;
use xdv::operate::contracts::contract_records;
use xdv::operate::image::LoadOptions;
use xdv::operate::load_node;
use xdv::qemu::{start_accel, temp_dir};
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_accel::job::QResult;
use xdv_accel::regs::Kind;
use xdv_cluster::mgmt::{ContractView, Principal, Request, Reserve, Response};
use xdv_cluster::{ContractChange, Domain, Event, Outcome, Refusal, TaskStatus, Work};
use xdv_types::{CapabilityId, NodeId, Priority, TenantId};

const BELL: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";

fn bell() -> Work {
    Work::Job(xdv_accel_sim::qasm::parse(BELL, 1000).unwrap().encode())
}

fn envelope(file: &str) -> Work {
    let src = std::fs::read_to_string(format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    Work::Job(xdv_accel_sim::envelope::parse(&src).unwrap().encode())
}

fn reserve(
    tb: &Testbed,
    via: usize,
    tenant: u32,
    domain: Domain,
    target: u32,
    units: &[u16],
) -> Result<u64, String> {
    let r = Reserve {
        domain,
        target: NodeId(target),
        resources: units.to_vec(),
        duration_ms: 600_000,
        capability: CapabilityId(1),
    };
    let end = Instant::now() + Duration::from_secs(30);
    mgmt::reserve(tb.port(via), &tb.keys, tenant, r, end)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", tb.logs()))
}

/// Reserves until the target's device offer has reached the log.
fn reserve_when_offered(
    tb: &Testbed,
    tenant: u32,
    domain: Domain,
    target: u32,
    units: &[u16],
) -> u64 {
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        match reserve(tb, 1, tenant, domain, target, units) {
            Ok(id) => return id,
            Err(why) if why.contains("offers no") && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(300))
            }
            Err(why) => panic!("reservation rejected: {why}\n{}", tb.logs()),
        }
    }
}

fn run(
    tb: &Testbed,
    via: usize,
    tenant: u32,
    domain: Domain,
    work: Work,
    contract: Option<u64>,
) -> TaskStatus {
    let end = Instant::now() + Duration::from_secs(40);
    let req = tb
        .request_in(tenant, domain, work, Vec::new(), 1000, contract)
        .unwrap();
    let task = mgmt::submit_until_placed(tb.port(via), &req, end)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", tb.logs()));
    mgmt::wait_task(
        tb.port(via),
        &tb.keys,
        Principal::Tenant(TenantId(tenant)),
        task,
        end,
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", tb.logs()))
}

fn contracts(tb: &Testbed, via: usize) -> Vec<ContractView> {
    mgmt::contracts(tb.port(via), &tb.keys, Principal::Operator)
        .unwrap()
        .1
}

/// Waits until every node in `among` lists the same contracts, and returns them.
fn agreed(tb: &Testbed, among: &[usize]) -> Vec<ContractView> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Vec<ContractView>> = among.iter().map(|&n| contracts(tb, n)).collect();
        if views.windows(2).all(|w| w[0] == w[1]) {
            return views.into_iter().next().unwrap_or_default();
        }
        assert!(
            Instant::now() < end,
            "nodes disagree on contracts: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn contracts_reserve_run_conflict_contain_faults_and_are_recorded_on_both_nodes() {
    let t0 = Instant::now();
    let dir = temp_dir("contracts").unwrap();
    let (qs, ps) = (dir.join("q.sock"), dir.join("phi.sock"));
    let q = start_accel(Kind::Q, &qs).unwrap();
    let _phi = start_accel(Kind::Phi, &ps).unwrap();
    let mut tb = Testbed::prepare("contracts", 3, Faults::default(), 3, "").unwrap();
    tb.accels.insert(2, vec![qs.clone()]);
    tb.accels.insert(3, vec![ps.clone()]);
    for id in 1..=3 {
        tb.vms[id - 1] = Some(tb.boot(id, &format!("node{id}.prov")).unwrap());
    }
    tb.leader(&[1, 2, 3], Duration::from_secs(30)).unwrap();

    // Tenant 1 at node 1 reserves container 0 on node 2 and runs Bell under it.
    let a = reserve_when_offered(&tb, 1, Domain::Q, 2, &[0]);
    let st = run(&tb, 1, 1, Domain::Q, bell(), Some(a));
    let (node, counts) = match &st {
        TaskStatus::Completed {
            node,
            outcome: Outcome::Executed,
            output,
            ..
        } => (*node, QResult::decode(output).unwrap().counts),
        other => panic!("Bell under contract: {other:?}\n{}", tb.logs()),
    };
    assert_eq!(node, NodeId(2), "ran on the contract's target");
    assert_eq!(
        counts.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![0, 3],
        "{counts:?}"
    );
    assert!(
        counts.iter().all(|c| (400..=600).contains(&c.1)),
        "{counts:?}"
    );
    match run(&tb, 1, 1, Domain::Q, bell(), Some(a)) {
        TaskStatus::Completed { output, .. } => {
            assert_eq!(
                QResult::decode(&output).unwrap().counts,
                counts,
                "same job, same counts"
            )
        }
        other => panic!("{other:?}"),
    }

    // Bad input: another tenant's contract, a domain the target lacks, out of range.
    match run(&tb, 1, 2, Domain::Q, bell(), Some(a)) {
        TaskStatus::Rejected(Refusal::NotYourContract(id)) => assert_eq!(id, a),
        other => panic!("tenant 2 used tenant 1's contract: {other:?}"),
    }
    let why = reserve(&tb, 1, 2, Domain::Phi, 2, &[0]).unwrap_err();
    assert!(why.contains("offers no Φ"), "{why}");
    let why = reserve(&tb, 1, 2, Domain::Q, 2, &[7]).unwrap_err();
    assert!(why.contains("out of range"), "{why}");

    // The race for container 0: equal policy, the earlier contract holds.
    let why = reserve(&tb, 3, 2, Domain::Q, 2, &[0]).unwrap_err();
    assert!(why.contains(&format!("held by contract {a}")), "{why}");
    // The operator raises tenant 2: its next request preempts, on every node alike.
    let req = mgmt::signed(
        &tb.keys,
        Principal::Operator,
        Request::SetPolicy {
            tenant: TenantId(2),
            priority: Priority::High,
        },
    )
    .unwrap();
    let r = mgmt::call_until_decided(tb.port(1), &req, Instant::now() + Duration::from_secs(20))
        .unwrap();
    assert!(matches!(r, Response::PolicySet { .. }), "{r:?}");
    let b = reserve(&tb, 1, 2, Domain::Q, 2, &[0]).unwrap_or_else(|w| panic!("{w}"));
    let list = agreed(&tb, &[1, 2, 3]);
    let ids: BTreeSet<u64> = list.iter().map(|c| c.id).collect();
    assert!(
        ids.contains(&b) && !ids.contains(&a),
        "preemption: {list:?}"
    );

    // A Φ window goes unstable: its contract ends; nothing else does.
    let p = reserve_when_offered(&tb, 1, Domain::Phi, 3, &[0]);
    let keep = reserve(&tb, 1, 1, Domain::Phi, 3, &[1]).unwrap();
    match run(&tb, 1, 1, Domain::Phi, envelope("unstable.toml"), Some(p)) {
        TaskStatus::Completed {
            node,
            outcome: Outcome::Unstable(_),
            ..
        } => assert_eq!(node, NodeId(3)),
        other => panic!("unstable window: {other:?}"),
    }
    let ids: BTreeSet<u64> = agreed(&tb, &[1, 2, 3]).iter().map(|c| c.id).collect();
    assert!(
        !ids.contains(&p) && ids.contains(&keep) && ids.contains(&b),
        "{ids:?}"
    );

    // The Q device fails with tenant 2's job on it: the job ends device-failed and
    // the contract is aborted on every node.
    q.ctl("hang").unwrap();
    let end = Instant::now() + Duration::from_secs(40);
    let req = tb
        .request_in(2, Domain::Q, bell(), b"mid-job".to_vec(), 1000, Some(b))
        .unwrap();
    let task = mgmt::submit_until_placed(tb.port(1), &req, end).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    q.ctl("fail").unwrap();
    let st = mgmt::wait_task(
        tb.port(1),
        &tb.keys,
        Principal::Tenant(TenantId(2)),
        task,
        end,
    )
    .unwrap();
    assert!(
        matches!(
            st,
            TaskStatus::Completed {
                outcome: Outcome::DeviceFailed(_),
                ..
            }
        ),
        "{st:?}"
    );
    let ids: BTreeSet<u64> = agreed(&tb, &[1, 2, 3]).iter().map(|c| c.id).collect();
    assert!(!ids.contains(&b) && ids.contains(&keep), "{ids:?}");

    // The device recovers; a new contract on node 2; node 2 is killed: suspended.
    q.ctl("recover").unwrap();
    let c = reserve_when_offered(&tb, 1, Domain::Q, 2, &[1]);
    tb.kill(2);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let list = agreed(&tb, &[1, 3]);
        if list.iter().any(|x| x.id == c && x.suspended) {
            break;
        }
        assert!(
            Instant::now() < end,
            "contract on a dead node not suspended: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The records: on the requesting node (1) and on the target (2) alike.
    tb.kill(1);
    tb.kill(3);
    let recs = |n: u32| {
        let img = load_node(
            &tb.dir.join(format!("node{n}.ram")),
            &LoadOptions {
                prov: Some(tb.dir.join(format!("node{n}.prov"))),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        contract_records(&img.audit)
    };
    let (r1, r2, r3) = (recs(1), recs(2), recs(3));
    for (n, r) in [(1, &r1), (2, &r2), (3, &r3)] {
        // Shown on failure (and with --nocapture).
        let evs: Vec<String> = r
            .iter()
            .map(|(_, b)| format!("{}:{}", b.contract % 1000, b.event))
            .collect();
        eprintln!("node {n} contract records: {evs:?}");
    }
    let has = |r: &[(u64, xdv_node::ContractRecordBody)], id: u64, ev: &str| {
        r.iter().any(|(_, b)| b.contract == id && b.event == ev)
    };
    for (id, ev) in [(a, "accepted"), (a, "preempted")] {
        assert!(has(&r1, id, ev), "node 1 lacks {ev} of {id}");
        assert!(has(&r2, id, ev), "node 2 lacks {ev} of {id}");
    }
    // Tenant 2's contract, aborted when the Q device failed: on nodes 1 and 2, not 3.
    for ev in ["accepted", "aborted"] {
        assert!(has(&r1, b, ev) && has(&r2, b, ev), "{ev} of {b}");
        assert!(!has(&r3, b, ev), "node 3 is no party to {b}");
    }
    // The Φ contract's records are on nodes 1 and 3, not on node 2 (no party).
    assert!(has(&r1, p, "terminated") && has(&r3, p, "terminated"));
    assert!(!has(&r2, p, "accepted"));
    // The requesting node alone recorded proposing it.
    assert!(has(&r1, a, "proposed") && !has(&r2, a, "proposed"));
    // The requesting node references the job the target ran under the contract; the
    // target's device record of that job holds the same output hash and the Bell
    // circuit's use: one entangling op, no teleportation.
    let (job, out) = r1
        .iter()
        .find_map(|(_, b)| (b.contract == a && b.event == "job-ended").then_some(b.job))
        .flatten()
        .expect("job-ended of the first contract on node 1");
    let img2 = load_node(&tb.dir.join("node2.ram"), &LoadOptions::default()).unwrap();
    let mut device = Vec::new();
    xdv_audit::inspect_region_with(&img2.audit, &mut |r| {
        if let xdv_audit::RecordBody::Custom { tag, bytes } = &r.body
            && *tag == xdv_node::accel::AUDIT_TAG_ACCEL
        {
            device.push(String::from_utf8_lossy(bytes).into_owned());
        }
    });
    let line = device
        .iter()
        .find(|l| l.starts_with(&format!("{job} ")) && l.contains(&format!("output {out}")))
        .unwrap_or_else(|| panic!("no device record of {job} with output {out}: {device:?}"));
    assert!(
        line.contains("entangling ops 1, teleportations 0"),
        "{line}"
    );
    // And the records carry the contract's hash, the same on both nodes.
    let h1 = r1
        .iter()
        .find(|(_, x)| x.contract == a)
        .map(|(_, x)| x.hash);
    let h2 = r2
        .iter()
        .find(|(_, x)| x.contract == a)
        .map(|(_, x)| x.hash);
    assert_eq!(h1, h2);
    // One verification view: chains, published roots, replays, state hashes across
    // nodes, and every contract record present on both of its nodes.
    let images = tb.node_images(&[1, 2, 3]).unwrap();
    let report = xdv::operate::verify_nodes(&images);
    for c in &report.nodes {
        assert!(c.ok(), "node {:?}: {:?}", c.node, c.problems);
    }
    assert!(
        report.nodes[0].contracts_compared >= 4,
        "{}",
        report.nodes[0].contracts_compared
    );
    // The host replay of node 1 (what `cargo xdv replay --trace` prints) matches the
    // node and holds each decision of this run in log order: the conflict refused,
    // every contract's outcome, and the failover when node 2 went down.
    let r = xdv::operate::replay(&images[0]).unwrap();
    assert!(r.verdict.ok(), "{:?}", r.verdict);
    let mut decisions: Vec<String> = Vec::new();
    for s in &r.steps {
        for e in &s.events {
            match e {
                Event::Contract(c) => {
                    decisions.push(format!("{} {}", c.id, c.change.name()));
                    if let ContractChange::Rejected(why) = &c.change {
                        decisions.push(format!("{} rejected because {why:?}", c.id));
                    }
                }
                Event::NodeDown { node } => decisions.push(format!("{node} down")),
                _ => {}
            }
        }
    }
    let at = |what: &str| {
        decisions
            .iter()
            .position(|d| d == what)
            .unwrap_or_else(|| panic!("no {what:?} in the replay: {decisions:?}"))
    };
    assert!(at(&format!("{a} accepted")) < at(&format!("{a} preempted")));
    assert!(at(&format!("{a} preempted")) <= at(&format!("{b} accepted")));
    assert!(at(&format!("{b} accepted")) < at(&format!("{b} aborted")));
    assert!(at(&format!("{p} accepted")) < at(&format!("{p} terminated")));
    // Node 2's failure and the suspension of the contract on it come with one
    // entry (the failure detector's), after the contract was accepted.
    assert!(at(&format!("{c} accepted")) < at(&format!("{c} suspended")));
    assert!(at(&format!("{c} accepted")) < at("n2 down"));
    assert_eq!(
        r.steps
            .iter()
            .position(|s| s.events.iter().any(|e| matches!(e, Event::NodeDown { node } if *node == NodeId(2)))),
        r.steps.iter().position(|s| s.events.iter().any(
            |e| matches!(e, Event::Contract(x) if x.id == c && x.change == ContractChange::Suspended)
        )),
        "{decisions:?}"
    );
    // Every node's audit chain verifies on the host.
    for n in 1..=3u32 {
        let img = load_node(
            &tb.dir.join(format!("node{n}.ram")),
            &LoadOptions::default(),
        )
        .unwrap();
        let verdict = xdv_audit::verify_region(&img.audit);
        assert!(verdict.is_ok(), "node {n}: {verdict:?}");
    }
    eprintln!("contracts QEMU test took {:?}", t0.elapsed());
}
