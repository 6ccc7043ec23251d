//! Unit tests of the cluster state machine: placement, quotas, exactly-once completion,
//! recovery, contracts, shards, snapshots, and determinism of the state hash.

use crate::contract::contract_id_for;
use crate::state::{CLOCK_TICK_MS, ContractChange, Party};
use crate::*;
use alloc::vec;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use xdv_types::{CapabilityId, Hash32, NodeId, Priority, TaskId, TenantId};

pub(crate) fn seed(n: u32) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..4].copy_from_slice(&n.to_le_bytes());
    s[31] = 0x5a;
    s
}

pub(crate) fn worker(n: u32, cores: u16, caps: &[u32]) -> WorkerInfo {
    WorkerInfo {
        node: NodeId(n),
        public_key: public_key(&seed(n)),
        resources: Resources {
            k_cores: cores,
            q_units: if n == 2 { 2 } else { 0 },
            phi_windows: 0,
        },
        capabilities: caps.iter().map(|&c| CapabilityId(c)).collect(),
        observer: false,
    }
}

pub(crate) fn cluster() -> ClusterState {
    let workers = [
        worker(1, 2, &[1]),
        worker(2, 2, &[1, 7]),
        worker(3, 2, &[1]),
    ];
    let tenants = [(TenantId(10), [1; 32]), (TenantId(11), [2; 32])];
    ClusterState::genesis(Config::default(), &workers, &tenants).unwrap()
}

pub(crate) fn spec(tenant: u32, seq: u64) -> TaskSpec {
    TaskSpec {
        tenant: TenantId(tenant),
        request_seq: seq,
        work: Work::Builtin("hash".into()),
        input: vec![seq as u8],
        budget_ticks: 100,
        priority: Priority::Normal,
        guards: vec![],
        needs: vec![],
        domain: Domain::K,
        pin: None,
        contract: None,
        timeout_ms: None,
    }
}

/// A tiny log driver: entries get increasing indices and Lamport stamps from node 1.
pub(crate) struct Log {
    pub index: u64,
    pub entries: Vec<Vec<u8>>,
}

impl Log {
    pub fn new() -> Log {
        Log {
            index: 0,
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, s: &mut ClusterState, c: Command) -> Applied {
        self.index += 1;
        let bytes = Proposal {
            time: GlobalTime {
                lamport: self.index * 10,
                node: NodeId(1),
            },
            command: c,
        }
        .encode()
        .unwrap();
        self.entries.push(bytes.clone());
        s.apply(self.index, &bytes)
    }
}

pub(crate) fn assigned(a: &Applied) -> Vec<(TaskId, NodeId, u32)> {
    a.events
        .iter()
        .filter_map(|e| match e {
            Event::TaskAssigned {
                task,
                node,
                attempt,
                ..
            } => Some((*task, *node, *attempt)),
            _ => None,
        })
        .collect()
}

fn complete(task: TaskId, node: NodeId, attempt: u32) -> Command {
    Command::TaskCompleted(Completion {
        task,
        node,
        attempt,
        outcome: Outcome::Executed,
        ticks: 42,
        output_hash: Hash32([task.0 as u8; 32]),
        output: vec![1, 2, 3],
        log: vec![],
    })
}

#[test]
fn config_rejects_impossible_values() {
    let bad = Config {
        shard_count: 0,
        ..Config::default()
    };
    assert_eq!(bad.validate(), Err(ConfigError::ShardCount(0)));
    let bad = Config {
        tasks_per_core: 0,
        ..Config::default()
    };
    assert!(ClusterState::new(bad).is_err());
    assert!(Config::default().validate().is_ok());
}

#[test]
fn shard_formula_matches_the_seed() {
    for t in [0u32, 1, 7, 42, 1000, u32::MAX] {
        let text = alloc::format!("{t}");
        let hex: alloc::string::String = Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect();
        let want = u32::from_str_radix(&hex[..8], 16).unwrap() % 16;
        assert_eq!(shard_of(TenantId(t), 16), want, "tenant {t}");
    }
}

#[test]
fn placement_spreads_by_load_then_shard_then_id() {
    let mut s = cluster();
    let mut log = Log::new();
    let mut per_node = [0u32; 4];
    for seq in 1..=30 {
        let a = log.push(&mut s, Command::AssignTask(spec(10, seq)));
        let got = assigned(&a);
        assert_eq!(got.len(), 1, "{:?}", a.events);
        per_node[got[0].1.0 as usize] += 1;
    }
    assert_eq!(
        &per_node[1..],
        &[10, 10, 10],
        "equal capacity => equal share"
    );
    // The first task goes to the tenant's shard primary (all loads equal then).
    let first = s.task(TaskId(1)).unwrap();
    let primary = s.data().shards.shards[first.shard as usize]
        .primary
        .unwrap();
    assert!(
        matches!(first.status, TaskStatus::Assigned { node, .. } if node == primary),
        "first placement ignores the shard primary"
    );
}

#[test]
fn one_at_a_time_submissions_still_spread() {
    let mut s = cluster();
    let mut log = Log::new();
    let mut per_node = [0u32; 4];
    for seq in 1..=9 {
        let (t, n, att) = assigned(&log.push(&mut s, Command::AssignTask(spec(10, seq))))[0];
        per_node[n.0 as usize] += 1;
        log.push(&mut s, complete(t, n, att));
    }
    assert_eq!(&per_node[1..], &[3, 3, 3], "lifetime work breaks load ties");
}

#[test]
fn capabilities_and_pins_restrict_placement() {
    let mut s = cluster();
    let mut log = Log::new();
    let mut t = spec(10, 1);
    t.needs = vec![CapabilityId(7)];
    let a = log.push(&mut s, Command::AssignTask(t));
    assert_eq!(assigned(&a)[0].1, NodeId(2), "only node 2 offers cap 7");
    let mut t = spec(10, 2);
    t.pin = Some(NodeId(3));
    let a = log.push(&mut s, Command::AssignTask(t));
    assert_eq!(assigned(&a)[0].1, NodeId(3));
    // No member offers capability 99: refused now, never queued forever (hardening 5).
    let mut t = spec(10, 3);
    t.needs = vec![CapabilityId(99)];
    let a = log.push(&mut s, Command::AssignTask(t));
    assert!(matches!(
        &a.events[0],
        Event::TaskRejected {
            reason: Refusal::NoMemberCanRun { .. },
            ..
        }
    ));
    let mut t = spec(10, 4);
    t.pin = Some(NodeId(9));
    let a = log.push(&mut s, Command::AssignTask(t));
    assert!(matches!(
        &a.events[0],
        Event::TaskRejected {
            reason: Refusal::PinnedNodeIneligible(NodeId(9)),
            ..
        }
    ));
}

#[test]
fn a_policy_plug_in_changes_placement() {
    let workers = [worker(1, 2, &[]), worker(2, 2, &[]), worker(3, 2, &[])];
    let tenants = [(TenantId(10), [1; 32])];
    let mut s = ClusterState::genesis(Config::default(), &workers, &tenants).unwrap();
    s = ClusterState::with_policy(Config::default(), alloc::boxed::Box::new(FirstFit))
        .map(|mut f| {
            f.restore_image(&s.snapshot_image()).unwrap();
            f
        })
        .unwrap();
    assert_eq!(s.policy_name(), "first-fit");
    let mut log = Log::new();
    for seq in 1..=5 {
        let a = log.push(&mut s, Command::AssignTask(spec(10, seq)));
        assert_eq!(assigned(&a)[0].1, NodeId(1));
    }
}

#[test]
fn bad_specs_are_refused_with_a_reason_and_keep_their_sequence() {
    let mut s = cluster();
    let mut log = Log::new();
    let cases: Vec<(TaskSpec, Refusal)> = vec![
        (
            TaskSpec {
                budget_ticks: 0,
                ..spec(10, 1)
            },
            Refusal::ZeroBudget,
        ),
        (
            TaskSpec {
                guards: (0..9).map(CapabilityId).collect(),
                ..spec(10, 2)
            },
            Refusal::TooManyGuards(9),
        ),
        (
            TaskSpec {
                work: Work::Wasm(vec![0; MAX_MODULE_BYTES + 1]),
                ..spec(10, 3)
            },
            Refusal::ModuleTooLarge(MAX_MODULE_BYTES + 1),
        ),
        (spec(99, 1), Refusal::UnknownTenant(TenantId(99))),
        (
            TaskSpec {
                work: Work::Builtin("".into()),
                ..spec(10, 4)
            },
            Refusal::BadBuiltinName,
        ),
    ];
    for (t, want) in cases {
        let a = log.push(&mut s, Command::AssignTask(t));
        match &a.events[..] {
            [Event::TaskRejected { reason, .. }] => assert_eq!(reason, &want),
            other => panic!("{want:?}: got {other:?}"),
        }
    }
    // A retry of a refused request gets the same task, not a second chance.
    let a = log.push(&mut s, Command::AssignTask(spec(10, 1)));
    assert_eq!(a.events, vec![Event::DuplicateRequest { task: TaskId(1) }]);
    // Concurrent clients: an older sequence inside the window is fine, once.
    let a = log.push(&mut s, Command::AssignTask(spec(10, 5)));
    assert_eq!(assigned(&a).len(), 1);
    let a = log.push(&mut s, Command::AssignTask(spec(11, 3)));
    assert_eq!(assigned(&a).len(), 1);
    let a = log.push(&mut s, Command::AssignTask(spec(11, 2)));
    assert_eq!(assigned(&a).len(), 1, "out of order within the window");
    let far = SEQ_WINDOW + 100;
    let a = log.push(&mut s, Command::AssignTask(spec(11, far)));
    assert_eq!(assigned(&a).len(), 1);
    let a = log.push(&mut s, Command::AssignTask(spec(11, 50)));
    assert!(matches!(
        &a.events[0],
        Event::TaskRejected {
            reason: Refusal::StaleRequest { seq: 50, last: 100 },
            ..
        }
    ));
    assert_eq!(s.data().counters.tasks_refused, 6);
}

#[test]
fn quotas_refuse_over_limit_requests() {
    let mut s = cluster();
    let mut log = Log::new();
    let q = Quota {
        max_in_flight: 2,
        max_budget_ticks: 250,
        memory_pages: 4,
        table_elements: 100,
        max_q_units: 16,
        max_phi_windows: 16,
    };
    log.push(
        &mut s,
        Command::SetQuota {
            tenant: TenantId(10),
            quota: Some(q),
            seq: 1,
        },
    );
    assert_eq!(
        assigned(&log.push(&mut s, Command::AssignTask(spec(10, 1)))).len(),
        1
    );
    let a = log.push(&mut s, Command::AssignTask(spec(10, 2)));
    let (t2, n2, _) = assigned(&a)[0];
    let a = log.push(&mut s, Command::AssignTask(spec(10, 3)));
    assert!(matches!(
        &a.events[0],
        Event::TaskRejected {
            reason: Refusal::QuotaInFlight { limit: 2 },
            ..
        }
    ));
    log.push(&mut s, complete(t2, n2, 1));
    let a = log.push(&mut s, Command::AssignTask(spec(10, 4)));
    assert!(matches!(
        &a.events[0],
        Event::TaskRejected {
            reason: Refusal::QuotaBudget {
                limit_ticks: 250,
                used_ticks: 200
            },
            ..
        }
    ));
    assert_eq!(
        Quota::task_limits(s.data().tenants[&TenantId(10)].quota.as_ref()),
        (4, 100)
    );
    assert_eq!(
        Quota::task_limits(s.data().tenants[&TenantId(11)].quota.as_ref()),
        (MAX_TASK_MEMORY_PAGES, MAX_TASK_TABLE_ELEMENTS)
    );
    let over = Quota {
        memory_pages: MAX_TASK_MEMORY_PAGES + 1,
        ..q
    };
    let a = log.push(
        &mut s,
        Command::SetQuota {
            tenant: TenantId(10),
            quota: Some(over),
            seq: 3,
        },
    );
    assert_eq!(
        a.events,
        vec![Event::Ignored(IgnoredReason::QuotaOverMaximum)]
    );
    // Another tenant is not affected.
    assert_eq!(
        assigned(&log.push(&mut s, Command::AssignTask(spec(11, 1)))).len(),
        1
    );
}

#[test]
fn completion_is_exactly_once_and_only_from_the_assignee() {
    let mut s = cluster();
    let mut log = Log::new();
    let (t, n, att) = assigned(&log.push(&mut s, Command::AssignTask(spec(10, 1))))[0];
    let other = NodeId(if n.0 == 1 { 2 } else { 1 });
    let a = log.push(&mut s, complete(t, other, att));
    assert!(matches!(a.events[0], Event::StaleCompletion { .. }));
    let a = log.push(&mut s, complete(t, n, att));
    assert!(matches!(a.events[0], Event::TaskCompleted { .. }));
    let a = log.push(&mut s, complete(t, n, att));
    assert!(
        matches!(a.events[0], Event::StaleCompletion { .. }),
        "second report"
    );
    assert_eq!(s.data().counters.stale_completions, 2);
    match &s.task(t).unwrap().status {
        TaskStatus::Completed { output, ticks, .. } => {
            assert_eq!(output, &vec![1, 2, 3]);
            assert_eq!(*ticks, 42);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.data().nodes[&n].completed, 1);
    assert_eq!(s.data().tenants[&TenantId(10)].in_flight, 0);
}

#[test]
fn node_down_replaces_tasks_migrates_shards_and_fences_stale_reports() {
    let mut s = cluster();
    let mut log = Log::new();
    let mut on2 = Vec::new();
    for seq in 1..=9 {
        for (t, n, att) in assigned(&log.push(&mut s, Command::AssignTask(spec(10, seq)))) {
            if n == NodeId(2) {
                on2.push((t, att));
            }
        }
    }
    assert_eq!(on2.len(), 3);
    let primaries_on_2: Vec<usize> = (0..16)
        .filter(|&i| s.data().shards.shards[i].primary == Some(NodeId(2)))
        .collect();
    assert!(!primaries_on_2.is_empty());
    let a = log.push(&mut s, Command::NodeDown { node: NodeId(2) });
    let replaced: Vec<_> = a
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TaskReplaced {
                task, to, attempt, ..
            } => Some((*task, *to, *attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(replaced.len(), 3, "{:?}", a.events);
    for (task, to, attempt) in &replaced {
        assert!(on2.iter().any(|(t, _)| t == task));
        assert!(matches!(to, Some(n) if *n != NodeId(2)));
        assert_eq!(*attempt, 2);
    }
    let migrated = a
        .events
        .iter()
        .filter(|e| matches!(e, Event::ShardMigrated(_)))
        .count();
    assert_eq!(migrated, primaries_on_2.len());
    for a in &s.data().shards.shards {
        assert_ne!(a.primary, Some(NodeId(2)));
        assert_ne!(a.secondary, Some(NodeId(2)));
    }
    // The old assignee's late report is fenced off by the attempt number.
    let (t, att) = on2[0];
    let a = log.push(&mut s, complete(t, NodeId(2), att));
    assert!(matches!(a.events[0], Event::StaleCompletion { .. }));
    // Nothing is placed on a down node; it comes back with NodeUp.
    for (_, n, _) in assigned(&log.push(&mut s, Command::AssignTask(spec(10, 20)))) {
        assert_ne!(n, NodeId(2));
    }
    let a = log.push(&mut s, Command::NodeUp { node: NodeId(2) });
    assert!(a.events.contains(&Event::NodeUp { node: NodeId(2) }));
    let a = log.push(&mut s, Command::AssignTask(spec(10, 21)));
    assert_eq!(assigned(&a)[0].1, NodeId(2), "least loaded after recovery");
}

#[test]
fn tasks_wait_when_no_node_is_up_and_run_when_one_returns() {
    let mut s = cluster();
    let mut log = Log::new();
    for n in 1..=3 {
        log.push(&mut s, Command::NodeDown { node: NodeId(n) });
    }
    let a = log.push(&mut s, Command::AssignTask(spec(10, 1)));
    assert_eq!(a.events, vec![Event::TaskQueued { task: TaskId(1) }]);
    let a = log.push(&mut s, Command::NodeUp { node: NodeId(3) });
    assert_eq!(assigned(&a), vec![(TaskId(1), NodeId(3), 1)]);
}

/// Tenant `tenant`'s reservation number `seq`, requested by `from` on `to`.
fn contract(seq: u64, from: u32, to: u32, domain: Domain, set: &[u16], tenant: u32) -> Contract {
    Contract {
        contract_id: contract_id_for(TenantId(tenant), seq),
        requesting_node: NodeId(from),
        target_node: NodeId(to),
        tenant: TenantId(tenant),
        request_seq: seq,
        domain,
        resource_set: set.to_vec(),
        duration_ms: 60_000,
        capability: CapabilityId(1),
        logical_timestamp: 0,
    }
}

fn cid(tenant: u32, seq: u64) -> u64 {
    contract_id_for(TenantId(tenant), seq)
}

/// The contract events of an entry: (id, change).
fn changes(a: &Applied) -> Vec<(u64, ContractChange)> {
    a.events
        .iter()
        .filter_map(|e| match e {
            Event::Contract(c) => Some((c.id, c.change.clone())),
            _ => None,
        })
        .collect()
}

fn rejected(a: &Applied) -> Option<Refusal> {
    changes(a).into_iter().find_map(|(_, c)| match c {
        ContractChange::Rejected(r) => Some(r),
        _ => None,
    })
}

fn policy(seq: u64, tenant: u32, priority: Priority) -> Command {
    Command::SetPolicy {
        tenant: TenantId(tenant),
        priority,
        seq,
    }
}

#[test]
fn contracts_are_verified_then_resolved_by_policy_then_log_order() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 2, 0));
    // Forged: signed with node 3's key but claims node 1.
    let forged = contract(1, 1, 2, Domain::Q, &[0], 10).sign(&seed(3));
    let a = log.push(&mut s, Command::ProposeContract(forged));
    assert_eq!(rejected(&a), Some(Refusal::BadSignature));
    // A tampered field after signing.
    let mut tampered = contract(2, 1, 2, Domain::Q, &[0], 10).sign(&seed(1));
    tampered.contract.resource_set = vec![1];
    let a = log.push(&mut s, Command::ProposeContract(tampered));
    assert_eq!(rejected(&a), Some(Refusal::BadSignature));
    // Capability not held.
    let mut c = contract(3, 1, 2, Domain::Q, &[0], 10);
    c.capability = CapabilityId(7);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(
        rejected(&a),
        Some(Refusal::CapabilityNotHeld(CapabilityId(7)))
    );
    // Domain not offered (node 3 has no Q device), out of range, unknown tenant,
    // an id not derived from the request, a replayed request.
    let c = contract(4, 1, 3, Domain::Q, &[0], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert!(matches!(
        rejected(&a),
        Some(Refusal::DomainNotOffered { .. })
    ));
    let c = contract(5, 1, 2, Domain::Q, &[5], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert!(matches!(
        rejected(&a),
        Some(Refusal::ResourceOutOfRange { .. })
    ));
    let c = contract(1, 1, 2, Domain::Q, &[0], 99);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(rejected(&a), Some(Refusal::UnknownTenant(TenantId(99))));
    let mut c = contract(6, 1, 2, Domain::Q, &[0], 10);
    c.contract_id = 12345;
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(rejected(&a), Some(Refusal::BadContractId(12345)));
    let c = contract(5, 1, 2, Domain::Q, &[0], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert!(
        matches!(rejected(&a), Some(Refusal::StaleRequest { .. })),
        "{a:?}"
    );
    // Valid.
    let c = contract(7, 1, 2, Domain::Q, &[0], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.clone().sign(&seed(1))));
    assert_eq!(changes(&a), vec![(cid(10, 7), ContractChange::Accepted)]);
    let ev = match &a.events[0] {
        Event::Contract(e) => e.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ev.hash, c.hash(), "events name the contract by its hash");
    assert_eq!((ev.requester, ev.target), (NodeId(1), NodeId(2)));
    // Same resource, equal policy: the earlier one holds.
    let c = contract(1, 3, 2, Domain::Q, &[0, 1], 11);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(3))));
    assert_eq!(rejected(&a), Some(Refusal::Conflict { holder: cid(10, 7) }));
    // The requester cannot choose its priority: the operator's policy decides.
    log.push(&mut s, policy(1, 11, Priority::High));
    let c = contract(2, 3, 2, Domain::Q, &[0, 1], 11);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(3))));
    assert_eq!(
        changes(&a),
        vec![
            (cid(10, 7), ContractChange::Preempted { by: cid(11, 2) }),
            (cid(11, 2), ContractChange::Accepted)
        ]
    );
    // Only a party may release: not another node, not another tenant.
    let id = cid(11, 2);
    let release = |by| Command::ReleaseContract {
        contract_id: id,
        by,
    };
    let a = log.push(&mut s, release(Party::Node(NodeId(1))));
    assert_eq!(a.events, vec![Event::Ignored(IgnoredReason::NotAParty)]);
    let a = log.push(&mut s, release(Party::Tenant(TenantId(10))));
    assert_eq!(a.events, vec![Event::Ignored(IgnoredReason::NotAParty)]);
    let a = log.push(&mut s, release(Party::Tenant(TenantId(11))));
    assert_eq!(changes(&a), vec![(id, ContractChange::Released)]);
    assert_eq!(s.data().counters.contracts_refused, 9);
}

#[test]
fn the_number_of_contracts_in_force_is_bounded() {
    let workers: Vec<WorkerInfo> = (1..=5).map(|n| worker(n, 256, &[1])).collect();
    let tenants = [(TenantId(10), [1; 32])];
    let mut s = ClusterState::genesis(Config::default(), &workers, &tenants).unwrap();
    let mut log = Log::new();
    let limit = crate::state::MAX_CONTRACTS as u64;
    for i in 0..=limit {
        let target = if i < limit { 2 + (i / 256) as u32 } else { 2 };
        let c = contract(i + 1, 1, target, Domain::K, &[(i % 256) as u16], 10);
        let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
        if i < limit {
            assert_eq!(
                changes(&a),
                vec![(cid(10, i + 1), ContractChange::Accepted)],
                "{i}"
            );
        } else {
            assert_eq!(rejected(&a), Some(Refusal::TooManyContracts));
        }
    }
    assert_eq!(s.data().contracts.len() as u64, limit);
}

#[test]
fn contracts_expire_by_cluster_time_not_by_log_traffic() {
    let mut s = cluster();
    let mut log = Log::new();
    let mut c = contract(1, 1, 2, Domain::K, &[0], 10);
    c.duration_ms = 2_500;
    log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    // A busy log does not age it.
    for i in 0..50 {
        log.push(&mut s, Command::Snapshot { snapshot_id: i });
    }
    assert!(s.data().contracts.contains_key(&cid(10, 1)));
    for _ in 0..2 {
        let a = log.push(&mut s, Command::ClockTick);
        assert!(changes(&a).is_empty(), "2000 ms < 2500 ms");
    }
    let a = log.push(&mut s, Command::ClockTick);
    assert_eq!(changes(&a), vec![(cid(10, 1), ContractChange::Expired)]);
    assert_eq!(s.data().clock_ms, 3 * CLOCK_TICK_MS);
    assert!(s.data().contracts.is_empty());
}

#[test]
fn node_failure_suspends_contracts_and_moves_k_contracts() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 2, 0));
    let k = contract(1, 1, 2, Domain::K, &[1], 10);
    let q = contract(2, 1, 2, Domain::Q, &[0], 10);
    log.push(&mut s, Command::ProposeContract(k.sign(&seed(1))));
    log.push(&mut s, Command::ProposeContract(q.sign(&seed(1))));
    let a = log.push(&mut s, Command::NodeDown { node: NodeId(2) });
    let ch = changes(&a);
    assert!(ch.contains(&(
        cid(10, 1),
        ContractChange::Reallocated {
            from: NodeId(2),
            to: NodeId(3)
        }
    )));
    assert!(ch.contains(&(cid(10, 2), ContractChange::Suspended)));
    assert_eq!(
        s.data().contracts[&cid(10, 2)].state,
        ContractState::Suspended
    );
    let a = log.push(&mut s, Command::NodeUp { node: NodeId(2) });
    assert!(changes(&a).contains(&(cid(10, 2), ContractChange::Resumed)));
    assert_eq!(
        s.data().contracts[&cid(10, 1)].contract.target_node,
        NodeId(3)
    );
}

fn contract_task(tenant: u32, seq: u64, domain: Domain, contract: u64) -> TaskSpec {
    let mut sp = spec(tenant, seq);
    sp.domain = domain;
    sp.work = Work::Job(if domain == Domain::Q {
        bell_job()
    } else {
        envelope_job()
    });
    sp.contract = Some(contract);
    sp
}

fn completion(task: TaskId, node: u32, outcome: Outcome) -> Command {
    Command::TaskCompleted(Completion {
        task,
        node: NodeId(node),
        attempt: 1,
        outcome,
        ticks: 0,
        output_hash: Hash32::ZERO,
        output: vec![],
        log: vec![],
    })
}

#[test]
fn tasks_run_under_their_contract_in_its_units_only() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 2, 0));
    let c = contract(1, 1, 2, Domain::Q, &[1], 10);
    log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    let id = cid(10, 1);
    assert_eq!(s.reserved_on(NodeId(2), Domain::Q), vec![1]);
    // The contract's task goes to its target.
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 2, Domain::Q, id)),
    );
    assert_eq!(assigned(&a), vec![(TaskId(1), NodeId(2), 1)]);
    // One unit: a second task under it waits for the first.
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 3, Domain::Q, id)),
    );
    assert!(assigned(&a).is_empty());
    // A task without a contract gets the one unreserved container, then waits.
    let mut free = contract_task(11, 1, Domain::Q, id);
    free.contract = None;
    let a = log.push(&mut s, Command::AssignTask(free.clone()));
    assert_eq!(assigned(&a), vec![(TaskId(3), NodeId(2), 1)]);
    free.request_seq = 2;
    let a = log.push(&mut s, Command::AssignTask(free));
    assert!(
        assigned(&a).is_empty(),
        "the reserved container is not for others"
    );
    // Bad input: another tenant's contract, a domain mismatch, an unknown contract.
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(11, 3, Domain::Q, id)),
    );
    assert_eq!(rejection(&a), Some(Refusal::NotYourContract(id)));
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 4, Domain::Phi, id)),
    );
    assert!(matches!(
        rejection(&a),
        Some(Refusal::ContractDomainMismatch { .. })
    ));
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 5, Domain::Q, 777)),
    );
    assert_eq!(rejection(&a), Some(Refusal::UnknownContract(777)));
    // Done: the waiting task under the contract runs next.
    let a = log.push(&mut s, completion(TaskId(1), 2, Outcome::Executed));
    assert_eq!(assigned(&a), vec![(TaskId(2), NodeId(2), 1)]);
    s.invariants().unwrap();
}

#[test]
fn a_device_failure_aborts_only_its_contract_and_instability_terminates_only_its_window() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 2, 0));
    log.push(&mut s, offer(3, 0, 2));
    for (seq, to, d, set) in [
        (1, 2, Domain::Q, 0u16),
        (2, 2, Domain::Q, 1),
        (3, 3, Domain::Phi, 0),
        (4, 3, Domain::Phi, 1),
    ] {
        let c = contract(seq, 1, to, d, &[set], 10);
        let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
        assert_eq!(changes(&a), vec![(cid(10, seq), ContractChange::Accepted)]);
    }
    // A Q job fails on its device: that contract is aborted, the other Q contract stays.
    log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 10, Domain::Q, cid(10, 1))),
    );
    let a = log.push(
        &mut s,
        completion(TaskId(1), 2, Outcome::DeviceFailed("hw".into())),
    );
    assert_eq!(
        changes(&a),
        vec![(cid(10, 1), ContractChange::Aborted("hw".into()))]
    );
    assert!(s.data().contracts.contains_key(&cid(10, 2)));
    // A Φ window goes unstable: its contract ends; the other window is untouched.
    log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 11, Domain::Phi, cid(10, 3))),
    );
    let a = log.push(
        &mut s,
        completion(TaskId(2), 3, Outcome::Unstable("w0".into())),
    );
    assert_eq!(
        changes(&a),
        vec![(cid(10, 3), ContractChange::Terminated("w0".into()))]
    );
    assert!(s.data().contracts.contains_key(&cid(10, 4)));
    // The Q device as a whole fails: every Q contract on node 2 ends, Φ ones stay.
    let a = log.push(
        &mut s,
        Command::AbortContracts {
            node: NodeId(2),
            domain: Domain::Q,
            reason: "device failed".into(),
        },
    );
    assert_eq!(
        changes(&a),
        vec![(cid(10, 2), ContractChange::Aborted("device failed".into()))]
    );
    assert_eq!(s.data().contracts.len(), 1);
    s.invariants().unwrap();
}

#[test]
fn tenant_quotas_bound_reserved_units() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 2, 0));
    let q = Quota {
        max_in_flight: 10,
        max_budget_ticks: 10_000,
        memory_pages: 4,
        table_elements: 100,
        max_q_units: 1,
        max_phi_windows: 0,
    };
    log.push(
        &mut s,
        Command::SetQuota {
            tenant: TenantId(10),
            quota: Some(q),
            seq: 1,
        },
    );
    let c = contract(1, 1, 2, Domain::Q, &[0], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(changes(&a), vec![(cid(10, 1), ContractChange::Accepted)]);
    let c = contract(2, 1, 2, Domain::Q, &[1], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(
        rejected(&a),
        Some(Refusal::QuotaUnits {
            domain: Domain::Q,
            limit: 1,
            wanted: 2
        })
    );
}

/// The Φ-window quota bounds reserved windows the same way, and counts only Φ: a
/// tenant at its Q limit may still reserve windows up to its Φ limit, and no further.
#[test]
fn tenant_quotas_bound_reserved_phi_windows() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 2, 0));
    log.push(&mut s, offer(3, 0, 4));
    let q = Quota {
        max_in_flight: 10,
        max_budget_ticks: 10_000,
        memory_pages: 4,
        table_elements: 100,
        max_q_units: 1,
        max_phi_windows: 2,
    };
    log.push(
        &mut s,
        Command::SetQuota {
            tenant: TenantId(10),
            quota: Some(q),
            seq: 1,
        },
    );
    let c = contract(1, 1, 2, Domain::Q, &[0], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(changes(&a), vec![(cid(10, 1), ContractChange::Accepted)]);
    let c = contract(2, 1, 3, Domain::Phi, &[0, 1], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(changes(&a), vec![(cid(10, 2), ContractChange::Accepted)]);
    let c = contract(3, 1, 3, Domain::Phi, &[2], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(
        rejected(&a),
        Some(Refusal::QuotaUnits {
            domain: Domain::Phi,
            limit: 2,
            wanted: 3
        })
    );
    // Another tenant (no quota set) is not bound by tenant 10's.
    let c = contract(1, 1, 3, Domain::Phi, &[2, 3], 11);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(changes(&a), vec![(cid(11, 1), ContractChange::Accepted)]);
    // Released windows count no more.
    log.push(
        &mut s,
        Command::ReleaseContract {
            contract_id: cid(10, 2),
            by: Party::Tenant(TenantId(10)),
        },
    );
    let c = contract(4, 1, 3, Domain::Phi, &[0], 10);
    let a = log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    assert_eq!(changes(&a), vec![(cid(10, 4), ContractChange::Accepted)]);
}

/// Ended contracts stay visible (the holder of a preempted contract is told through
/// `contracts`): how each ended, in the order they ended, bounded to the most recent
/// `MAX_ENDED_CONTRACTS`, in the state hash; a task naming one gets how it ended.
#[test]
fn ended_contracts_are_remembered_with_how_they_ended() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 2, 0));
    // Preempted: tenant 11's higher policy displaces tenant 10's contract.
    let a0 = contract(1, 1, 2, Domain::Q, &[0], 10);
    log.push(&mut s, Command::ProposeContract(a0.clone().sign(&seed(1))));
    log.push(&mut s, policy(1, 11, Priority::High));
    let before = s.hash();
    let c = contract(1, 3, 2, Domain::Q, &[0], 11);
    log.push(&mut s, Command::ProposeContract(c.sign(&seed(3))));
    assert_ne!(s.hash(), before);
    assert_eq!(s.hash(), s.hash_from_scratch());
    let e = s.ended_contract(cid(10, 1)).expect("remembered");
    assert_eq!(e.contract, a0);
    assert_eq!(e.end, ContractEnd::Preempted { by: cid(11, 1) });
    // Expired: a short contract on the other container.
    let mut x = contract(2, 1, 2, Domain::Q, &[1], 10);
    x.duration_ms = 1_000;
    log.push(&mut s, Command::ProposeContract(x.sign(&seed(1))));
    let a = log.push(&mut s, Command::ClockTick);
    assert_eq!(changes(&a), vec![(cid(10, 2), ContractChange::Expired)]);
    let ends: Vec<(u64, ContractEnd)> = s
        .data()
        .ended_contracts
        .values()
        .map(|e| (e.contract.contract_id, e.end.clone()))
        .collect();
    assert_eq!(
        ends,
        vec![
            (cid(10, 1), ContractEnd::Preempted { by: cid(11, 1) }),
            (cid(10, 2), ContractEnd::Expired)
        ]
    );
    assert_eq!(
        s.data().ended_contracts.values().last().unwrap().ended_ms,
        1_000
    );
    // A new task naming the expired contract: refused with how it ended; another
    // tenant naming it: not yours; a contract never seen: unknown.
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 5, Domain::Q, cid(10, 2))),
    );
    let why = rejection(&a).unwrap();
    assert_eq!(
        why,
        Refusal::ContractEnded {
            contract: cid(10, 2),
            end: ContractEnd::Expired
        }
    );
    assert!(why.to_string().contains("has ended (expired)"), "{why}");
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(11, 5, Domain::Q, cid(10, 2))),
    );
    assert_eq!(rejection(&a), Some(Refusal::NotYourContract(cid(10, 2))));
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 6, Domain::Q, 777)),
    );
    assert_eq!(rejection(&a), Some(Refusal::UnknownContract(777)));
    let a = log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 7, Domain::Q, cid(10, 1))),
    );
    assert!(matches!(
        rejection(&a),
        Some(Refusal::ContractEnded {
            end: ContractEnd::Preempted { .. },
            ..
        })
    ));
    s.invariants().unwrap();
    // Bounded: the oldest are forgotten first.
    let total = MAX_ENDED_CONTRACTS as u64 + 3;
    for i in 0..total {
        let seq = 100 + i;
        let c = contract(seq, 1, 2, Domain::Q, &[1], 10);
        log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
        log.push(
            &mut s,
            Command::ReleaseContract {
                contract_id: cid(10, seq),
                by: Party::Tenant(TenantId(10)),
            },
        );
    }
    let d = s.data();
    assert_eq!(d.ended_contracts.len(), MAX_ENDED_CONTRACTS);
    assert_eq!(d.counters.contracts_ended, total + 2);
    assert!(
        s.ended_contract(cid(10, 1)).is_none(),
        "the oldest forgotten"
    );
    assert!(s.ended_contract(cid(10, 100 + total - 1)).is_some());
    assert_eq!(s.hash(), s.hash_from_scratch());
    s.invariants().unwrap();
    // The snapshot image keeps them.
    let mut r = cluster();
    r.restore_image(&s.snapshot_image()).unwrap();
    assert_eq!(r.hash(), s.hash());
}

#[test]
fn federated_root_covers_published_roots_in_node_order() {
    let mut s = cluster();
    let mut log = Log::new();
    assert!(s.federated_root().is_none());
    for n in [3u32, 1, 2] {
        log.push(
            &mut s,
            Command::PublishAuditRoot {
                node: NodeId(n),
                records: 5,
                root: Hash32([n as u8; 32]),
                from: 0,
                proof: vec![],
            },
        );
    }
    let f = s.federated_root().unwrap();
    let order: Vec<u32> = f.node_roots.iter().map(|(n, _)| n.0).collect();
    assert_eq!(order, vec![1, 2, 3]);
    let a = log.push(
        &mut s,
        Command::PublishAuditRoot {
            node: NodeId(1),
            records: 4,
            root: Hash32([9; 32]),
            from: 5,
            proof: vec![],
        },
    );
    assert_eq!(a.events, vec![Event::Ignored(IgnoredReason::OlderRoot)]);
    assert_eq!(s.federated_root().unwrap().global_root, f.global_root);
}

/// A node's next root is taken only with a proof that it extends the root the
/// cluster holds for it: a proof from another size is stale (ignored), a root of
/// another history (or a bad proof) raises `AuditRootInconsistent` and is not taken.
#[test]
fn a_published_root_must_extend_the_last_one() {
    use xdv_audit::merkle::{MerkleAccumulator, merkle_root};
    let mut s = cluster();
    let mut log = Log::new();
    let hashes: Vec<Hash32> = (0..30u8).map(|i| Hash32([i; 32])).collect();
    let publish =
        |records: usize, root: Hash32, from: u64, proof: Vec<Hash32>| Command::PublishAuditRoot {
            node: NodeId(2),
            records: records as u64,
            root,
            from,
            proof,
        };
    let root = |n: usize| merkle_root(&hashes, n).unwrap();
    let a = log.push(&mut s, publish(10, root(10), 0, vec![]));
    assert_eq!(
        a.events,
        vec![Event::RootPublished {
            node: NodeId(2),
            records: 10
        }]
    );
    let mut acc = MerkleAccumulator::new();
    for h in &hashes[..10] {
        acc.push(h);
    }
    let proof = acc.consistency_proof_to(&hashes[10..25]).unwrap();
    // From a size the cluster does not hold: stale, nothing changes.
    let a = log.push(&mut s, publish(25, root(25), 9, proof.clone()));
    assert_eq!(
        a.events,
        vec![Event::Ignored(IgnoredReason::StaleRootProof)]
    );
    // Another history of the same 25 records: the proof fails, the alarm is raised.
    let mut other = hashes.clone();
    other[3] = Hash32([0xEE; 32]);
    let forged = merkle_root(&other, 25).unwrap();
    let a = log.push(&mut s, publish(25, forged, 10, proof.clone()));
    assert_eq!(
        a.events,
        vec![Event::AuditRootInconsistent {
            node: NodeId(2),
            held: 10,
            records: 25
        }]
    );
    assert_eq!(s.data().nodes[&NodeId(2)].audit, Some((10, root(10))));
    // No proof at all is no better.
    let a = log.push(&mut s, publish(25, root(25), 10, vec![]));
    assert!(matches!(
        a.events[..],
        [Event::AuditRootInconsistent { .. }]
    ));
    // The true extension is taken.
    let a = log.push(&mut s, publish(25, root(25), 10, proof));
    assert_eq!(
        a.events,
        vec![Event::RootPublished {
            node: NodeId(2),
            records: 25
        }]
    );
    assert_eq!(s.data().nodes[&NodeId(2)].audit, Some((25, root(25))));
}

#[test]
fn undecodable_entries_are_recorded_no_ops() {
    let mut a = cluster();
    let mut b = cluster();
    for (i, bytes) in [&[][..], &[9, 1, 2][..], &[1, 0xff, 0xff, 0xff][..]]
        .iter()
        .enumerate()
    {
        let x = a.apply(i as u64 + 1, bytes);
        b.apply(i as u64 + 1, bytes);
        assert!(matches!(x.events[0], Event::Invalid(_)), "{:?}", x.events);
    }
    assert_eq!(a.data().counters.invalid_entries, 3);
    assert_eq!(a.hash(), b.hash());
    // Re-applying an old index changes nothing.
    let h = a.hash();
    let x = a.apply(2, &[1]);
    assert_eq!(
        x.events,
        vec![Event::Ignored(IgnoredReason::AlreadyApplied)]
    );
    assert_eq!(a.hash(), h);
}

#[test]
fn snapshot_restore_round_trips_and_refuses_garbage() {
    let mut s = cluster();
    let mut log = Log::new();
    for seq in 1..=5 {
        log.push(&mut s, Command::AssignTask(spec(10, seq)));
    }
    let img = s.snapshot_image();
    let mut r = cluster();
    r.restore_image(&img).unwrap();
    assert_eq!(r.hash(), s.hash());
    let h = r.hash();
    assert!(r.restore_image(&img[..img.len() / 2]).is_err());
    assert!(r.restore_image(&[2]).is_err());
    assert_eq!(r.hash(), h, "a refused image leaves the state alone");
}

#[test]
fn time_only_grows_even_when_stamps_go_backwards() {
    let mut s = cluster();
    let mk = |l: u64, n: u32| {
        Proposal {
            time: GlobalTime {
                lamport: l,
                node: NodeId(n),
            },
            command: Command::Snapshot { snapshot_id: l },
        }
        .encode()
        .unwrap()
    };
    let t1 = s.apply(1, &mk(50, 2)).time;
    let t2 = s.apply(2, &mk(40, 1)).time;
    let t3 = s.apply(3, &mk(50, 3)).time;
    // A faulty stamp at the maximum saturates instead of wrapping or panicking.
    let t4 = s.apply(4, &mk(u64::MAX, 2)).time;
    let t5 = s.apply(5, &mk(7, 1)).time;
    assert_eq!((t4.lamport, t5.lamport), (u64::MAX, u64::MAX));
    assert_eq!(
        t1,
        GlobalTime {
            lamport: 50,
            node: NodeId(2)
        }
    );
    assert_eq!(
        t2,
        GlobalTime {
            lamport: 51,
            node: NodeId(1)
        }
    );
    assert_eq!(
        t3,
        GlobalTime {
            lamport: 52,
            node: NodeId(3)
        }
    );
}

#[test]
fn management_requests_are_authenticated_scoped_and_never_replayed() {
    use crate::mgmt::*;
    let tenant_seed = [1u8; 32];
    let other_seed = [2u8; 32];
    let op_seed = [3u8; 32];
    let workers = [worker(1, 2, &[]), worker(2, 2, &[])];
    let tenants = [
        (TenantId(10), public_key(&tenant_seed)),
        (TenantId(11), public_key(&other_seed)),
    ];
    let mut s = ClusterState::genesis(Config::default(), &workers, &tenants).unwrap();
    let mut gate = Gate::new(5, public_key(&op_seed));
    let submit = Request::Submit(Submit::new(Work::Builtin("hash".into()), vec![], 10));
    let t10 = Principal::Tenant(TenantId(10));
    let ok = SignedRequest::sign(5, t10, 1, submit.clone(), &tenant_seed);
    let Some(Command::AssignTask(spec)) = gate.authorize(&s, &ok).unwrap() else {
        panic!("a submission becomes AssignTask");
    };
    assert_eq!(spec.tenant, TenantId(10));
    // Wrong key, tampered, unsigned, wrong cluster, unknown tenant.
    let forged = SignedRequest::sign(5, t10, 2, submit.clone(), &other_seed);
    assert_eq!(gate.authorize(&s, &forged), Err(Denied::BadSignature));
    let mut tampered = ok.clone();
    tampered.seq = 9;
    assert_eq!(gate.authorize(&s, &tampered), Err(Denied::BadSignature));
    let mut unsigned = ok.clone();
    unsigned.signature.clear();
    assert_eq!(gate.authorize(&s, &unsigned), Err(Denied::BadSignature));
    let other_cluster = SignedRequest::sign(6, t10, 2, submit.clone(), &tenant_seed);
    assert!(matches!(
        gate.authorize(&s, &other_cluster),
        Err(Denied::WrongCluster { .. })
    ));
    let stranger = SignedRequest::sign(
        5,
        Principal::Tenant(TenantId(99)),
        1,
        submit.clone(),
        &tenant_seed,
    );
    assert!(matches!(
        gate.authorize(&s, &stranger),
        Err(Denied::UnknownPrincipal(_))
    ));
    // Once applied, the same request is a duplicate; an older seq is a replay.
    let mut log = Log::new();
    log.push(&mut s, Command::AssignTask(spec));
    assert_eq!(
        gate.authorize(&s, &ok),
        Err(Denied::Duplicate { task: TaskId(1) })
    );
    let older = SignedRequest::sign(5, t10, 0, submit, &tenant_seed);
    assert!(matches!(
        gate.authorize(&s, &older),
        Err(Denied::Replayed { .. })
    ));
    // Scope: tenant 11 may not read tenant 10's task; the operator may.
    let peek = SignedRequest::sign(
        5,
        Principal::Tenant(TenantId(11)),
        1,
        Request::TaskStatus { task: TaskId(1) },
        &other_seed,
    );
    assert_eq!(
        gate.authorize(&s, &peek),
        Err(Denied::OutOfScope { task: TaskId(1) })
    );
    let op = SignedRequest::sign(
        5,
        Principal::Operator,
        1,
        Request::TaskStatus { task: TaskId(1) },
        &op_seed,
    );
    assert_eq!(gate.authorize(&s, &op), Ok(None));
    assert!(matches!(
        gate.authorize(&s, &op),
        Err(Denied::Replayed { seq: 1, .. })
    ));
    // Quotas: the operator only, for registered tenants, within the sandbox maxima.
    let q = Quota {
        max_in_flight: 3,
        max_budget_ticks: 1000,
        memory_pages: 4,
        table_elements: 10,
        max_q_units: 16,
        max_phi_windows: 16,
    };
    let set = |p, seed: &[u8; 32], seq, tenant, quota| {
        SignedRequest::sign(5, p, seq, Request::SetQuota { tenant, quota }, seed)
    };
    let by_tenant = set(t10, &tenant_seed, 50, TenantId(10), Some(q));
    assert_eq!(gate.authorize(&s, &by_tenant), Err(Denied::OperatorOnly));
    let by_op = set(Principal::Operator, &op_seed, 51, TenantId(10), Some(q));
    assert_eq!(
        gate.authorize(&s, &by_op),
        Ok(Some(Command::SetQuota {
            tenant: TenantId(10),
            quota: Some(q),
            seq: 51,
        }))
    );
    let over = Quota {
        memory_pages: MAX_TASK_MEMORY_PAGES + 1,
        ..q
    };
    let bad = set(Principal::Operator, &op_seed, 52, TenantId(10), Some(over));
    assert!(matches!(
        gate.authorize(&s, &bad),
        Err(Denied::Malformed(_))
    ));
    let nobody = set(Principal::Operator, &op_seed, 53, TenantId(99), None);
    assert!(matches!(
        gate.authorize(&s, &nobody),
        Err(Denied::UnknownPrincipal(_))
    ));
    // The placement policy: the operator only, proposed with the request's number.
    let place = |p, seed: &[u8; 32], seq| {
        let policy = PlacementKind::Routed;
        SignedRequest::sign(5, p, seq, Request::SetPlacementPolicy { policy }, seed)
    };
    let by_tenant = place(t10, &tenant_seed, 60);
    assert_eq!(gate.authorize(&s, &by_tenant), Err(Denied::OperatorOnly));
    assert_eq!(
        gate.authorize(&s, &place(Principal::Operator, &op_seed, 61)),
        Ok(Some(Command::SetPlacementPolicy {
            policy: PlacementKind::Routed,
            seq: 61,
        }))
    );
    // Wire round trip, and garbage decodes to an error.
    let bytes = encode(&ok);
    assert_eq!(decode::<SignedRequest>(&bytes).unwrap(), ok);
    assert!(decode::<SignedRequest>(&bytes[..bytes.len() - 1]).is_err());
    assert!(decode::<SignedRequest>(&[0xff; 7]).is_err());
}

#[test]
fn a_node_may_forward_only_reports_about_itself() {
    use crate::mgmt::PeerForward;
    let mine = complete(TaskId(1), NodeId(2), 1);
    assert!(PeerForward::own_is_allowed(NodeId(2), &mine));
    assert!(
        !PeerForward::own_is_allowed(NodeId(3), &mine),
        "someone else's report"
    );
    let hb = Command::Heartbeat(HeartbeatInfo {
        node: NodeId(3),
        available_cores: 1,
        local_load: 0,
        q_units: 0,
        phi_windows: 0,
    });
    assert!(PeerForward::own_is_allowed(NodeId(3), &hb));
    let root = Command::PublishAuditRoot {
        node: NodeId(1),
        records: 1,
        root: Hash32::ZERO,
        from: 0,
        proof: vec![],
    };
    assert!(!PeerForward::own_is_allowed(NodeId(2), &root));
    // A group of completions: only the sender's own, never empty, never over the limit.
    let group = |nodes: &[u32]| {
        Command::TasksCompleted(
            nodes
                .iter()
                .enumerate()
                .map(
                    |(i, &n)| match complete(TaskId(i as u64 + 1), NodeId(n), 1) {
                        Command::TaskCompleted(c) => c,
                        _ => unreachable!(),
                    },
                )
                .collect(),
        )
    };
    assert!(PeerForward::own_is_allowed(NodeId(2), &group(&[2, 2, 2])));
    assert!(
        !PeerForward::own_is_allowed(NodeId(2), &group(&[2, 3, 2])),
        "a group with someone else's report"
    );
    assert!(!PeerForward::own_is_allowed(NodeId(2), &group(&[])));
    assert!(!PeerForward::own_is_allowed(
        NodeId(2),
        &group(&[2; crate::mgmt::MAX_BATCH_SUBMISSIONS + 1])
    ));
    // Leader-only and client commands are never a node's own to forward.
    for c in [
        Command::NodeDown { node: NodeId(2) },
        Command::AssignTask(spec(10, 1)),
        Command::SetQuota {
            tenant: TenantId(10),
            quota: None,
            seq: 1,
        },
    ] {
        assert!(!PeerForward::own_is_allowed(NodeId(2), &c), "{}", c.name());
    }
}

#[test]
fn peer_auth_binds_cluster_both_nodes_and_the_nonce() {
    use crate::mgmt::{sign_peer_auth, verify_peer_auth};
    let pk = public_key(&seed(2));
    let sig = sign_peer_auth(&seed(2), 7, NodeId(2), NodeId(1), &[9; 32]);
    assert!(verify_peer_auth(
        &pk,
        7,
        NodeId(2),
        NodeId(1),
        &[9; 32],
        &sig
    ));
    assert!(
        !verify_peer_auth(&pk, 8, NodeId(2), NodeId(1), &[9; 32], &sig),
        "cluster"
    );
    assert!(
        !verify_peer_auth(&pk, 7, NodeId(2), NodeId(3), &[9; 32], &sig),
        "verifier"
    );
    assert!(
        !verify_peer_auth(&pk, 7, NodeId(2), NodeId(1), &[8; 32], &sig),
        "nonce"
    );
    let other = public_key(&seed(3));
    assert!(
        !verify_peer_auth(&other, 7, NodeId(2), NodeId(1), &[9; 32], &sig),
        "key"
    );
    assert!(
        !verify_peer_auth(&pk, 7, NodeId(2), NodeId(1), &[9; 32], &sig[..63]),
        "short"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (10u32..13, 1u64..40, 0u64..300, 0u32..3).prop_map(|(t, seq, budget, pin)| {
                Command::AssignTask(TaskSpec {
                    budget_ticks: budget,
                    pin: (pin > 0).then_some(NodeId(pin)),
                    ..spec(t, seq)
                })
            }),
            (1u64..40, 1u32..4, 1u32..3).prop_map(|(t, n, att)| complete(
                TaskId(t),
                NodeId(n),
                att
            )),
            (1u32..4).prop_map(|n| Command::NodeDown { node: NodeId(n) }),
            (1u32..4).prop_map(|n| Command::NodeUp { node: NodeId(n) }),
            (1u32..4, 0u16..3, 0u32..5).prop_map(|(n, c, l)| Command::Heartbeat(HeartbeatInfo {
                node: NodeId(n),
                available_cores: c,
                local_load: l,
                q_units: u16::from(n == 2) * c,
                phi_windows: 0,
            })),
            (1u64..6, 1u32..4, 1u32..4, 0u16..2, 10u32..12).prop_map(|(seq, a, b, r, t)| {
                Command::ProposeContract(contract(seq, a, b, Domain::K, &[r], t).sign(&seed(a)))
            }),
            (1u64..6, 1u32..4).prop_map(|(seq, n)| Command::ReleaseContract {
                contract_id: cid(10, seq),
                by: Party::Node(NodeId(n))
            }),
            (1u64..6, 10u32..12, 0u8..3).prop_map(|(seq, t, p)| {
                policy(
                    seq,
                    t,
                    [Priority::High, Priority::Normal, Priority::Low][p as usize],
                )
            }),
            Just(Command::ClockTick),
            (10u32..12, 0u32..4, 1u64..8).prop_map(|(t, n, seq)| Command::SetQuota {
                seq,
                tenant: TenantId(t),
                quota: (n > 0).then_some(Quota {
                    max_in_flight: n,
                    max_budget_ticks: 1000,
                    memory_pages: n,
                    table_elements: 10,
                    max_q_units: 16,
                    max_phi_windows: 16,
                })
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Two replicas fed the same log agree after every entry; a replica restored
        /// from a snapshot taken anywhere continues to the same hash.
        #[test]
        fn same_log_same_state(cmds in proptest::collection::vec(command(), 1..80), cut in 0usize..80) {
            let mut a = cluster();
            let mut b = cluster();
            let mut log = Log::new();
            let mut snap = None;
            for (i, c) in cmds.into_iter().enumerate() {
                log.push(&mut a, c);
                let idx = log.index;
                b.apply(idx, &log.entries[idx as usize - 1]);
                prop_assert_eq!(a.hash(), b.hash());
                if i == cut {
                    snap = Some((idx, a.snapshot_image()));
                }
            }
            if let Some((idx, img)) = snap {
                let mut c = cluster();
                c.restore_image(&img).unwrap();
                for (i, e) in log.entries.iter().enumerate().skip(idx as usize) {
                    c.apply(i as u64 + 1, e);
                }
                prop_assert_eq!(c.hash(), a.hash());
            }
        }

        /// Management frames: arbitrary bytes never panic the decoders, and a valid
        /// signed request with any one byte changed either fails to decode or fails to
        /// verify — or decodes to exactly the same request.
        #[test]
        fn mgmt_decoders_never_panic_and_tampering_is_caught(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            at in any::<usize>(),
            flip in 1u8..=255,
        ) {
            use crate::mgmt::*;
            let _ = decode::<SignedRequest>(&bytes);
            let _ = decode::<PeerForward>(&bytes);
            let _ = decode::<Response>(&bytes);
            let seed = [4u8; 32];
            let req = SignedRequest::sign(1, Principal::Tenant(TenantId(10)), 7,
                Request::TaskStatus { task: TaskId(3) }, &seed);
            let mut enc = encode(&req);
            let i = at % enc.len();
            enc[i] ^= flip;
            if let Ok(r) = decode::<SignedRequest>(&enc) {
                prop_assert!(r == req || !r.verify(&public_key(&seed)), "tampered request verified");
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut s = cluster();
            let mut e = vec![1u8];
            e.extend_from_slice(&bytes);
            s.apply(1, &bytes);
            s.apply(2, &e);
            let _ = s.restore_image(&e);
        }
    }
}

/// Hardening case 1: a task whose nodes keep going down is not re-placed forever.
#[test]
fn a_task_that_keeps_failing_its_nodes_ends_failed_after_max_attempts() {
    let mut s = cluster();
    let mut log = Log::new();
    let a = log.push(&mut s, Command::AssignTask(spec(10, 1)));
    let (task, mut node, mut attempt) = assigned(&a)[0];
    let mut downs = Vec::new();
    loop {
        let a = log.push(&mut s, Command::NodeDown { node });
        downs.push(node);
        match &s.task(task).unwrap().status {
            TaskStatus::Assigned {
                node: n,
                attempt: at,
            } => {
                assert_eq!(*at, attempt + 1);
                assert!(!downs.contains(n));
                (node, attempt) = (*n, *at);
            }
            TaskStatus::Completed { outcome, .. } => {
                assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
                assert!(
                    a.events
                        .iter()
                        .any(|e| matches!(e, Event::TaskCompleted { .. }))
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(attempt, MAX_ATTEMPTS);
    assert_eq!(s.data().counters.tasks_failed, 1);
    assert_eq!(
        s.data().tenants[&TenantId(10)].in_flight,
        0,
        "quota released"
    );
    s.check();
}

/// Hardening case 1: a tenant without a quota cannot submit a near-endless budget.
#[test]
fn tenants_without_a_quota_get_the_default_budget_ceiling() {
    let mut s = cluster();
    let mut log = Log::new();
    let mut big = spec(10, 1);
    big.budget_ticks = DEFAULT_TASK_BUDGET_CEILING_TICKS + 1;
    let a = log.push(&mut s, Command::AssignTask(big));
    let refusal = a.events.iter().find_map(|e| match e {
        Event::TaskRejected { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        matches!(refusal, Some(Refusal::BudgetOverCeiling { .. })),
        "{:?}",
        a.events
    );
    let mut ok = spec(10, 2);
    ok.budget_ticks = DEFAULT_TASK_BUDGET_CEILING_TICKS;
    assert_eq!(
        assigned(&log.push(&mut s, Command::AssignTask(ok))).len(),
        1
    );
}

/// Hardening case 8: an operator request applied once is refused when replayed, by
/// the replicated state (not only by one node's memory): a new leader's gate refuses
/// it and a replayed entry that reaches the log anyway changes nothing.
#[test]
fn operator_requests_are_applied_at_most_once_by_the_cluster() {
    use crate::mgmt::{Denied, Gate, Principal, Request, SignedRequest};
    let mut s = cluster();
    let mut log = Log::new();
    let q = Quota {
        max_in_flight: 1,
        max_budget_ticks: 1000,
        memory_pages: 4,
        table_elements: 100,
        max_q_units: 16,
        max_phi_windows: 16,
    };
    let set = |seq: u64, quota: Option<Quota>| Command::SetQuota {
        tenant: TenantId(10),
        quota,
        seq,
    };
    let a = log.push(&mut s, set(100, Some(q)));
    assert!(a.events.contains(&Event::QuotaSet {
        tenant: TenantId(10)
    }));
    log.push(&mut s, set(101, None));
    // The captured first request, replayed into the log: ignored, the quota stays cleared.
    let a = log.push(&mut s, set(100, Some(q)));
    assert_eq!(a.events, vec![Event::Ignored(IgnoredReason::Replayed)]);
    assert_eq!(s.data().tenants[&TenantId(10)].quota, None);
    // A fresh gate (a new leader, empty memory) refuses it too.
    let op_seed = [42u8; 32];
    let mut gate = Gate::new(1, crate::public_key(&op_seed));
    let req = SignedRequest::sign(
        1,
        Principal::Operator,
        100,
        Request::SetQuota {
            tenant: TenantId(10),
            quota: Some(q),
        },
        &op_seed,
    );
    assert!(matches!(
        gate.authorize(&s, &req),
        Err(Denied::Replayed { seq: 100, .. })
    ));
}

/// Hardening case 9: one request with a huge sequence number cannot lock its tenant
/// out (it is refused; the tenant's next ordinary request is accepted).
#[test]
fn a_huge_sequence_number_is_refused_and_locks_nobody_out() {
    let mut s = cluster();
    let mut log = Log::new();
    assert_eq!(
        assigned(&log.push(&mut s, Command::AssignTask(spec(10, 1_000)))).len(),
        1
    );
    for seq in [u64::MAX - 1, 1_000 + MAX_SEQ_JUMP + 1, MAX_SEQ + 1] {
        let a = log.push(&mut s, Command::AssignTask(spec(10, seq)));
        let refusal = a.events.iter().find_map(|e| match e {
            Event::TaskRejected { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        assert!(
            matches!(refusal, Some(Refusal::SeqOutOfRange { .. })),
            "{seq}: {:?}",
            a.events
        );
    }
    assert_eq!(
        assigned(&log.push(&mut s, Command::AssignTask(spec(10, 1_001)))).len(),
        1,
        "the tenant is not locked out"
    );
}

/// Hardening case 5: tasks no member can ever run are refused at submission.
#[test]
fn tasks_no_member_can_run_are_refused_at_submission() {
    let mut s = cluster();
    let mut log = Log::new();
    let mut q = spec(10, 1);
    q.domain = Domain::Phi;
    q.work = Work::Job(envelope_job());
    let mut cap = spec(10, 2);
    cap.needs = vec![CapabilityId(999)];
    for sp in [q, cap] {
        let a = log.push(&mut s, Command::AssignTask(sp));
        let refusal = a.events.iter().find_map(|e| match e {
            Event::TaskRejected { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        assert!(
            matches!(refusal, Some(Refusal::NoMemberCanRun { .. })),
            "{:?}",
            a.events
        );
    }
    assert!(s.data().pending.is_empty());
    assert_eq!(s.data().tenants[&TenantId(10)].in_flight, 0);
}

fn bell_job() -> Vec<u8> {
    use xdv_accel::job::{Circuit, Gate};
    Circuit {
        qubits: 2,
        clbits: 2,
        shots: 10,
        gates: vec![Gate::H(0), Gate::Cx(0, 1)],
    }
    .encode()
}

fn envelope_job() -> Vec<u8> {
    xdv_accel::job::Envelope {
        oscillators: 2,
        frequencies_milli: vec![1000, 1000],
        coupling_milli: 1000,
        amplitude_milli: 1000,
        phases_milli: vec![0, 10],
        steps: 10,
        dt_micros: 1000,
        windows: 1,
        min_stability_milli: 100,
    }
    .encode()
}

fn offer(node: u32, q: u16, phi: u16) -> Command {
    Command::Heartbeat(HeartbeatInfo {
        node: NodeId(node),
        available_cores: 2,
        local_load: 0,
        q_units: q,
        phi_windows: phi,
    })
}

fn rejection(a: &Applied) -> Option<Refusal> {
    a.events.iter().find_map(|e| match e {
        Event::TaskRejected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn device_tasks_go_where_a_device_offers_slots_and_are_refused_when_none_does() {
    let mut s = cluster();
    let mut log = Log::new();
    let q = |seq| {
        let mut sp = spec(10, seq);
        sp.domain = Domain::Q;
        sp.work = Work::Job(bell_job());
        sp
    };
    // Node 2 was provisioned with Q resources, but no device has offered any yet.
    let a = log.push(&mut s, Command::AssignTask(q(1)));
    assert_eq!(
        rejection(&a),
        Some(Refusal::NoMemberCanRun { domain: Domain::Q })
    );
    log.push(&mut s, offer(2, 1, 0));
    let a = log.push(&mut s, Command::AssignTask(q(2)));
    assert_eq!(rejection(&a), None);
    let t = s.data().tasks.values().last().unwrap();
    assert!(
        matches!(
            t.status,
            TaskStatus::Assigned {
                node: NodeId(2),
                ..
            }
        ),
        "{:?}",
        t.status
    );
    // One container: a second job waits for it instead of overcommitting the device.
    log.push(&mut s, Command::AssignTask(q(3)));
    let t = s.data().tasks.values().last().unwrap();
    assert_eq!(t.status, TaskStatus::Pending);
    // The device fails: it offers nothing, and a new Q task is refused at once.
    log.push(&mut s, offer(2, 0, 0));
    let a = log.push(&mut s, Command::AssignTask(q(4)));
    assert_eq!(
        rejection(&a),
        Some(Refusal::NoMemberCanRun { domain: Domain::Q })
    );
    // Work and domain must match, and the job must be well formed.
    let mut k_job = q(5);
    k_job.domain = Domain::K;
    let a = log.push(&mut s, Command::AssignTask(k_job));
    assert_eq!(
        rejection(&a),
        Some(Refusal::WorkNotForDomain { domain: Domain::K })
    );
    let mut q_module = spec(10, 6);
    q_module.domain = Domain::Q;
    let a = log.push(&mut s, Command::AssignTask(q_module));
    assert_eq!(
        rejection(&a),
        Some(Refusal::WorkNotForDomain { domain: Domain::Q })
    );
    let mut empty = q(7);
    empty.work = Work::Job(Vec::new());
    let a = log.push(&mut s, Command::AssignTask(empty));
    assert!(matches!(rejection(&a), Some(Refusal::BadJob(_))));
    // A circuit naming a qubit it does not declare is refused with the reason.
    let mut bad = bell_job();
    let n = bad.len();
    bad[n - 1] = 9; // the cx target
    let mut wrong = q(8);
    wrong.work = Work::Job(bad);
    let a = log.push(&mut s, Command::AssignTask(wrong));
    match rejection(&a) {
        Some(Refusal::BadJob(why)) => assert!(why.starts_with("circuit:"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An envelope is not a circuit.
    let mut env_as_q = q(9);
    env_as_q.work = Work::Job(envelope_job());
    let a = log.push(&mut s, Command::AssignTask(env_as_q));
    assert!(matches!(rejection(&a), Some(Refusal::BadJob(_))));
    s.invariants().unwrap();
}

#[test]
fn tasks_waiting_under_a_contract_that_ends_are_refused_and_its_units_freed() {
    let mut s = cluster();
    let mut log = Log::new();
    log.push(&mut s, offer(2, 1, 0));
    let c = contract(1, 1, 2, Domain::Q, &[0], 10);
    log.push(&mut s, Command::ProposeContract(c.sign(&seed(1))));
    let id = cid(10, 1);
    log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 2, Domain::Q, id)),
    );
    log.push(
        &mut s,
        Command::AssignTask(contract_task(10, 3, Domain::Q, id)),
    );
    // A task without a contract waits: the one container is reserved.
    let mut free = contract_task(11, 1, Domain::Q, id);
    free.contract = None;
    let a = log.push(&mut s, Command::AssignTask(free));
    assert!(assigned(&a).is_empty());
    let a = log.push(
        &mut s,
        Command::ReleaseContract {
            contract_id: id,
            by: Party::Tenant(TenantId(10)),
        },
    );
    // The task waiting under it is refused; the running one finishes normally.
    assert!(a.events.contains(&Event::TaskRejected {
        task: TaskId(2),
        reason: Refusal::ContractEnded {
            contract: id,
            end: ContractEnd::Released
        }
    }));
    let a = log.push(&mut s, completion(TaskId(1), 2, Outcome::Executed));
    // The freed container now serves the task without a contract.
    assert_eq!(assigned(&a), vec![(TaskId(3), NodeId(2), 1)]);
    s.invariants().unwrap();
}

fn vote(node: u32, index: u64, h: u8) -> Command {
    Command::StateVote {
        node: NodeId(node),
        index,
        hash: Hash32([h; 32]),
    }
}

#[test]
fn hash_voting_quarantines_the_node_that_disagrees_with_the_majority() {
    let mut s = cluster();
    let mut log = Log::new();
    for i in 0..40 {
        log.push(&mut s, Command::Snapshot { snapshot_id: i });
    }
    // Bad votes: not a vote index, an index not applied yet, a stranger.
    for bad in [vote(1, 33, 1), vote(1, 64, 1), vote(9, 32, 1)] {
        let a = log.push(&mut s, bad);
        assert_eq!(a.events, vec![Event::Ignored(IgnoredReason::BadVote)]);
    }
    // Node 3 disagrees; with only its vote and one other, no majority yet.
    log.push(&mut s, vote(3, 32, 7));
    let a = log.push(&mut s, vote(1, 32, 1));
    assert!(
        !a.events
            .iter()
            .any(|e| matches!(e, Event::HashMismatch { .. }))
    );
    let a = log.push(&mut s, vote(2, 32, 1));
    assert!(a.events.contains(&Event::HashMismatch {
        index: 32,
        node: NodeId(3),
        theirs: Hash32([7; 32]),
        majority: Hash32([1; 32]),
    }));
    assert!(s.data().nodes[&NodeId(3)].quarantined);
    // A vote twice counts once.
    let a = log.push(&mut s, vote(2, 32, 1));
    assert_eq!(
        a.events,
        vec![Event::Ignored(IgnoredReason::AlreadyApplied)]
    );
    // The quarantined node takes no placements.
    for seq in 1..=6 {
        let a = log.push(&mut s, Command::AssignTask(spec(10, seq)));
        assert!(
            assigned(&a).iter().all(|(_, n, _)| *n != NodeId(3)),
            "{a:?}"
        );
    }
    s.invariants().unwrap();
}

/// `SubmitBatch`: one signature for many submissions, each taking `seq + i`; one
/// `AssignTasks` entry; a retried batch gets its tasks and runs nothing twice; limits
/// and replays refused by name. `AwaitTasks`: limits, scope.
#[test]
fn submit_batch_one_signature_many_tasks_never_twice() {
    use crate::mgmt::*;
    let tenant_seed = [1u8; 32];
    let other_seed = [2u8; 32];
    let workers = [worker(1, 2, &[]), worker(2, 2, &[])];
    let tenants = [
        (TenantId(10), public_key(&tenant_seed)),
        (TenantId(11), public_key(&other_seed)),
    ];
    let mut s = ClusterState::genesis(Config::default(), &workers, &tenants).unwrap();
    let mut gate = Gate::new(5, public_key(&[3u8; 32]));
    let one = Submit::new(Work::Builtin("hash".into()), vec![], 10);
    let t10 = Principal::Tenant(TenantId(10));
    let batch = |seq: u64, n: usize| {
        SignedRequest::sign(
            5,
            t10,
            seq,
            Request::SubmitBatch(vec![one.clone(); n]),
            &tenant_seed,
        )
    };
    let req = batch(100, 5);
    let Some(Command::AssignTasks(specs)) = gate.authorize(&s, &req).unwrap() else {
        panic!("a batch becomes AssignTasks");
    };
    let seqs: Vec<u64> = specs.iter().map(|s| s.request_seq).collect();
    assert_eq!(seqs, [100, 101, 102, 103, 104]);
    assert!(specs.iter().all(|s| s.tenant == TenantId(10)));
    // Tampering with one submission breaks the one signature.
    let mut tampered = req.clone();
    if let Request::SubmitBatch(items) = &mut tampered.request {
        items[3].budget_ticks = 11;
    }
    assert_eq!(gate.authorize(&s, &tampered), Err(Denied::BadSignature));
    // Applied as one entry: five tasks, in order.
    let mut log = Log::new();
    let events = log.push(&mut s, Command::AssignTasks(specs.clone()));
    let placed = assigned(&events);
    assert_eq!(placed.len(), 5, "{events:?}");
    for (i, seq) in (100..105).enumerate() {
        assert_eq!(
            s.task_for_request(TenantId(10), seq),
            Some(TaskId(1 + i as u64))
        );
    }
    // Retried whole: nothing to propose (the node answers with the tasks).
    assert_eq!(gate.authorize(&s, &req), Ok(None));
    // Applying the same entry again (a retry raced into the log) runs nothing twice.
    let again = log.push(&mut s, Command::AssignTasks(specs));
    assert!(assigned(&again).is_empty(), "{again:?}");
    assert_eq!(s.data().next_task, 6);
    // A batch overlapping an applied one proposes only the new numbers.
    let Some(Command::AssignTasks(rest)) = gate.authorize(&s, &batch(103, 4)).unwrap() else {
        panic!("the new part of an overlapping batch is proposed");
    };
    assert_eq!(
        rest.iter().map(|s| s.request_seq).collect::<Vec<_>>(),
        [105, 106]
    );
    // A number below the window's floor is a replay of the whole batch.
    let far = SignedRequest::sign(5, t10, 1 << 30, Request::Submit(one.clone()), &tenant_seed);
    let Some(c) = gate.authorize(&s, &far).unwrap() else {
        panic!("a submission is proposed");
    };
    log.push(&mut s, c);
    assert!(matches!(
        gate.authorize(&s, &batch(1, 3)),
        Err(Denied::Replayed { .. })
    ));
    // Limits, by name.
    let empty = batch(200, 0);
    assert!(
        matches!(gate.authorize(&s, &empty), Err(Denied::Malformed(m)) if m.contains("1 to 64")),
    );
    let over = batch(300, MAX_BATCH_SUBMISSIONS + 1);
    assert!(matches!(
        gate.authorize(&s, &over),
        Err(Denied::Malformed(_))
    ));
    assert!(matches!(
        batch_seqs(crate::types::MAX_SEQ, 2),
        Err(Denied::SeqOutOfRange { .. })
    ));
    let big = Submit {
        work: Work::Wasm(vec![0u8; 40 * 1024]),
        ..one.clone()
    };
    let too_big = SignedRequest::sign(
        5,
        t10,
        (1 << 30) + 400,
        Request::SubmitBatch(vec![big; 4]),
        &tenant_seed,
    );
    assert!(
        matches!(gate.authorize(&s, &too_big), Err(Denied::Malformed(m)) if m.contains("log entry")),
    );
    let op = SignedRequest::sign(
        5,
        Principal::Operator,
        500,
        Request::SubmitBatch(vec![one.clone()]),
        &[3u8; 32],
    );
    assert_eq!(gate.authorize(&s, &op), Err(Denied::OperatorCannotSubmit));
    // AwaitTasks: 1..=64 distinct tasks the principal may see.
    let wait = |seq: u64, tasks: Vec<TaskId>, p: Principal, seed: &[u8; 32]| {
        SignedRequest::sign(5, p, seq, Request::AwaitTasks { tasks }, seed)
    };
    let mine: Vec<TaskId> = (1..=5).map(TaskId).collect();
    assert_eq!(
        gate.authorize(&s, &wait(600, mine.clone(), t10, &tenant_seed)),
        Ok(None)
    );
    assert!(matches!(
        gate.authorize(&s, &wait(600, mine.clone(), t10, &tenant_seed)),
        Err(Denied::Replayed { .. })
    ));
    let t11 = Principal::Tenant(TenantId(11));
    assert_eq!(
        gate.authorize(&s, &wait(601, mine, t11, &other_seed)),
        Err(Denied::OutOfScope { task: TaskId(1) })
    );
    for bad in [vec![], vec![TaskId(1), TaskId(1)], vec![TaskId(1); 65]] {
        assert!(matches!(
            gate.authorize(&s, &wait(602, bad, t10, &tenant_seed)),
            Err(Denied::Malformed(_))
        ));
    }
    assert_eq!(
        gate.authorize(
            &s,
            &wait(603, vec![TaskId(1), TaskId(99)], t10, &tenant_seed)
        ),
        Err(Denied::UnknownTask(TaskId(99)))
    );
}

/// A group of completions in one entry decides exactly what the same completions in
/// as many entries decide: the same events in order (a stale attempt refused alone)
/// and the same state, apart from the entry count the state keeps.
#[test]
fn completions_grouped_in_one_entry_apply_as_one_at_a_time() {
    let (mut one, mut grouped) = (cluster(), cluster());
    let (mut log1, mut log2) = (Log::new(), Log::new());
    let mut done = Vec::new();
    for seq in 1..=6 {
        let a = log1.push(&mut one, Command::AssignTask(spec(10, seq)));
        log2.push(&mut grouped, Command::AssignTask(spec(10, seq)));
        done.extend(assigned(&a));
    }
    let mut completions: Vec<Completion> = done
        .iter()
        .map(|&(t, n, att)| match complete(t, n, att) {
            Command::TaskCompleted(c) => c,
            _ => unreachable!(),
        })
        .collect();
    // A stale attempt in the middle: refused, the others applied.
    completions[2].attempt += 7;
    let mut events_one = Vec::new();
    for c in &completions {
        events_one.extend(
            log1.push(&mut one, Command::TaskCompleted(c.clone()))
                .events,
        );
    }
    let a = log2.push(&mut grouped, Command::TasksCompleted(completions.clone()));
    assert_eq!(a.events, events_one);
    for &(t, _, _) in &done {
        assert_eq!(
            one.task(t).map(|x| &x.status),
            grouped.task(t).map(|x| &x.status),
            "{t}"
        );
    }
    assert_eq!(
        done.iter()
            .filter(|(t, ..)| matches!(
                grouped.task(*t).unwrap().status,
                TaskStatus::Completed { .. }
            ))
            .count(),
        5
    );
    assert_eq!(grouped.hash(), grouped.hash_from_scratch());
}
