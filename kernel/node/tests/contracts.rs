//! Three real nodes wired to each other by hand (messages delivered on the next
//! millisecond, node 2 cut off when asked): the contract audit records each party
//! writes — `proposed` on the requesting node alone, then accepted, rejected,
//! released, expired and suspended on both the requesting and the target node — and
//! how a task naming an ended contract is refused.

use std::collections::VecDeque;
use xdv_audit::RecordBody;
use xdv_cluster::mgmt::{
    self, ContractAnswer, Principal, Request, Reserve, Response, SignedRequest, Submit,
};
use xdv_cluster::{Completion, ContractEnd, Domain, Outcome, Refusal, TaskStatus, Work};
use xdv_node::{
    AUDIT_TAG_CONTRACT, ClientConn, ContractRecordBody, EVENT_PROPOSED, Identity, Node, NodeConfig,
};
use xdv_types::{CapabilityId, NodeId, TenantId};

const CLUSTER: u32 = 5;
const T1: [u8; 32] = [11; 32];
const T2: [u8; 32] = [12; 32];

fn node_seed(n: u32) -> [u8; 32] {
    [n as u8 + 100; 32]
}

struct Net {
    nodes: Vec<Node<Vec<u8>>>,
    now_ms: u64,
    /// (from, to, is_forward, bytes) to deliver next millisecond.
    wire: VecDeque<(u32, u32, bool, Vec<u8>)>,
    /// Node 2 hears nothing and is heard by nobody.
    cut_2: bool,
    records: Vec<Vec<ContractRecordBody>>,
    /// Tasks each node was told to run.
    runs: Vec<Vec<xdv_node::RunTask>>,
    replies: Vec<(u32, ClientConn, Vec<u8>)>,
    seqs: [u64; 3],
}

impl Net {
    fn new() -> Net {
        let peers: Vec<(u32, [u8; 32])> = (1..=3)
            .map(|n| (n, xdv_cluster::public_key(&node_seed(n))))
            .collect();
        let nodes = (1..=3)
            .map(|n| {
                let mut c = NodeConfig::new(
                    Identity {
                        node: n,
                        cluster: CLUSTER,
                        seed: Some(node_seed(n)),
                        peers: peers.clone(),
                        tenants: vec![
                            (TenantId(1), xdv_cluster::public_key(&T1)),
                            (TenantId(2), xdv_cluster::public_key(&T2)),
                        ],
                        operator_key: xdv_cluster::public_key(&[9; 32]),
                    },
                    2,
                );
                c.capabilities = vec![CapabilityId(1)];
                Node::new(c, vec![0u8; 512 * 1024], 0)
            })
            .collect();
        let mut net = Net {
            nodes,
            now_ms: 0,
            wire: VecDeque::new(),
            cut_2: false,
            records: vec![Vec::new(); 3],
            runs: vec![Vec::new(); 3],
            replies: Vec::new(),
            seqs: [0; 3],
        };
        // Node 2 has a Q device with two containers.
        net.nodes[1].set_accel_offer(2, 0);
        net.run(3_000);
        assert!(net.leader().is_some(), "a leader within 3 s");
        net
    }

    fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.view().role == "Leader")
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        self.cut_2 && (a == 2 || b == 2)
    }

    fn step(&mut self) {
        self.now_ms += 1;
        let wire: Vec<_> = self.wire.drain(..).collect();
        for (from, to, fwd, bytes) in wire {
            if self.cut(from, to) {
                continue;
            }
            let n = &mut self.nodes[to as usize - 1];
            n.on_peer_heard(NodeId(from));
            if fwd {
                n.on_peer_forward(NodeId(from), &bytes);
            } else {
                n.on_peer_raft(NodeId(from), &bytes);
            }
        }
        for i in 0..3 {
            let me = i as u32 + 1;
            self.nodes[i].tick(self.now_ms);
            let o = self.nodes[i].drain();
            for (to, b) in o.raft {
                self.wire.push_back((me, to.0, false, b));
            }
            for (to, b) in o.forwards {
                self.wire.push_back((me, to.0, true, b));
            }
            self.runs[i].extend(o.run);
            for (c, b) in o.replies {
                self.replies.push((me, c, b));
            }
            for r in o.audit {
                if let RecordBody::Custom { tag, bytes } = r
                    && tag == AUDIT_TAG_CONTRACT
                {
                    self.records[i].push(mgmt::decode(&bytes).unwrap());
                }
            }
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Sends a signed request to node `via` and waits (up to 10 s) for its answer.
    fn call(&mut self, via: u32, who: Principal, request: Request) -> Response {
        let (k, seed) = match who {
            Principal::Tenant(TenantId(1)) => (0, T1),
            Principal::Tenant(_) => (1, T2),
            Principal::Operator => (2, [9; 32]),
        };
        self.seqs[k] += 1;
        let req = SignedRequest::sign(CLUSTER, who, self.seqs[k], request, &seed);
        let conn = ClientConn {
            slot: 7,
            generation: self.now_ms,
        };
        self.nodes[via as usize - 1].on_client(conn, &mgmt::encode(&req));
        for _ in 0..10_000 {
            self.step();
            if let Some(p) = self
                .replies
                .iter()
                .position(|(n, c, _)| *n == via && *c == conn)
            {
                let (_, _, b) = self.replies.remove(p);
                return mgmt::decode(&b).unwrap();
            }
        }
        panic!("no answer from node {via}");
    }

    fn reserve(&mut self, via: u32, tenant: u32, unit: u16, duration_ms: u64) -> ContractAnswer {
        let r = Request::Reserve(Reserve {
            domain: Domain::Q,
            target: NodeId(2),
            resources: vec![unit],
            duration_ms,
            capability: CapabilityId(1),
        });
        match self.call(via, Principal::Tenant(TenantId(tenant)), r) {
            Response::Contract(a) => a,
            other => panic!("reserve: {other:?}"),
        }
    }

    /// Node `n`'s contract records of contract `id`: their events in order.
    fn events(&self, n: u32, id: u64) -> Vec<String> {
        self.records[n as usize - 1]
            .iter()
            .filter(|r| r.contract == id)
            .map(|r| r.event.clone())
            .collect()
    }
}

fn accepted(a: ContractAnswer) -> u64 {
    match a {
        ContractAnswer::Accepted { id } => id,
        other => panic!("{other:?}"),
    }
}

fn bell() -> Work {
    use xdv_accel::job::Circuit;
    Work::Job(Circuit::bell(10).encode())
}

#[test]
fn both_parties_record_every_contract_event_and_the_requester_its_proposal() {
    let mut net = Net::new();
    // Accepted, requested at node 1 for node 2: node 1 proposed it.
    let a = accepted(net.reserve(1, 1, 0, 60_000));
    net.run(50);
    assert_eq!(net.events(1, a), vec![EVENT_PROPOSED, "accepted"]);
    assert_eq!(
        net.events(2, a),
        vec!["accepted"],
        "only the requester proposes"
    );
    assert!(net.events(3, a).is_empty(), "node 3 is no party");
    let (p, acc) = (&net.records[0][0], &net.records[0][1]);
    assert_eq!(
        p.hash, acc.hash,
        "proposed and accepted name the same contract"
    );
    assert_eq!((p.requester, p.target), (NodeId(1), NodeId(2)));
    assert!(p.detail.contains("units [0]"), "{}", p.detail);
    assert!(p.index < acc.index);

    // Rejected: tenant 2 at node 3 wants the same container, equal policy.
    let r = match net.reserve(3, 2, 0, 60_000) {
        ContractAnswer::Rejected { id, reason } => {
            assert_eq!(reason, Refusal::Conflict { holder: a });
            id
        }
        other => panic!("{other:?}"),
    };
    net.run(50);
    assert_eq!(net.events(3, r), vec![EVENT_PROPOSED, "rejected"]);
    assert_eq!(net.events(2, r), vec!["rejected"]);
    assert!(net.events(1, r).is_empty());
    let rej = net.records[1].iter().find(|x| x.contract == r).unwrap();
    assert!(
        rej.detail.contains(&format!("held by contract {a}")),
        "{}",
        rej.detail
    );

    // Released by its tenant.
    match net.call(
        1,
        Principal::Tenant(TenantId(1)),
        Request::Release { contract: a },
    ) {
        Response::Contract(ContractAnswer::Released { id }) => assert_eq!(id, a),
        other => panic!("{other:?}"),
    }
    net.run(50);
    for n in [1, 2] {
        assert_eq!(net.events(n, a).last().unwrap(), "released", "node {n}");
    }

    // Expired: 2 s of cluster time (the leader's clock ticks once a second).
    let x = accepted(net.reserve(1, 1, 1, 2_000));
    net.run(4_000);
    for n in [1, 2] {
        assert_eq!(net.events(n, x).last().unwrap(), "expired", "node {n}");
    }
    // A new task naming the expired contract: refused, saying it expired.
    let sub = bell_under(x);
    let task = match net.call(1, Principal::Tenant(TenantId(1)), sub) {
        Response::Submitted { task } => task,
        other => panic!("{other:?}"),
    };
    let why = match net.call(
        1,
        Principal::Tenant(TenantId(1)),
        Request::TaskStatus { task },
    ) {
        Response::Task {
            status: TaskStatus::Rejected(why),
            ..
        } => why,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        why,
        Refusal::ContractEnded {
            contract: x,
            end: ContractEnd::Expired
        }
    );

    // Suspended: node 2 (the target) is cut off and declared down; node 1 records it
    // at once, node 2 when it hears the log again (then both record the resumption).
    let s = accepted(net.reserve(1, 1, 1, 600_000));
    net.run(50);
    net.cut_2 = true;
    net.run(12_000);
    assert!(
        net.events(1, s).contains(&"suspended".to_string()),
        "{:?}",
        net.events(1, s)
    );
    assert!(!net.events(2, s).contains(&"suspended".to_string()));
    net.cut_2 = false;
    net.run(12_000);
    for n in [1, 2] {
        let ev = net.events(n, s);
        let i = ev
            .iter()
            .position(|e| e == "suspended")
            .unwrap_or_else(|| panic!("node {n}: {ev:?}"));
        assert!(ev[i..].contains(&"resumed".to_string()), "node {n}: {ev:?}");
    }
    // Both parties' records of each event name the same contract hash and index.
    for id in [a, r, x, s] {
        let key = |n: u32| -> Vec<(String, u64, xdv_types::Hash32)> {
            net.records[n as usize - 1]
                .iter()
                .filter(|b| b.contract == id && b.event != EVENT_PROPOSED)
                .map(|b| (b.event.clone(), b.index, b.hash))
                .collect()
        };
        let (one, two, three) = (key(1), key(2), key(3));
        let requester = if id == r { three } else { one };
        assert_eq!(requester, two, "contract {id}");
    }
}

/// A Q job under a contract that its device aborts over the container's decoherence
/// budget, end to end through the nodes: the target reports `BudgetExceeded` (what
/// `xdv_node::accel::outcome_of` makes of the device's status), the task ends so on
/// every node, both parties record the job's end, and the contract stays in force (a
/// job over budget is the job's fault, not the device's: nothing is aborted).
#[test]
fn a_job_over_budget_under_a_contract_ends_budget_exceeded_and_keeps_the_contract() {
    let mut net = Net::new();
    let a = accepted(net.reserve(1, 1, 0, 600_000));
    let sub = bell_under(a);
    let task = match net.call(1, Principal::Tenant(TenantId(1)), sub) {
        Response::Submitted { task } => task,
        other => panic!("{other:?}"),
    };
    net.run(50);
    let run = net.runs[1]
        .iter()
        .find(|r| r.task == task)
        .cloned()
        .expect("the contract's target runs it");
    assert!(net.runs[0].is_empty() && net.runs[2].is_empty());
    assert_eq!(run.slots, vec![0], "in the contract's container");
    let outcome = xdv_node::accel::outcome_of(xdv_accel::ring::CqStatus::BudgetExceeded, 9);
    assert_eq!(outcome, Outcome::BudgetExceeded);
    net.nodes[1].on_task_done(Completion {
        task,
        node: NodeId(2),
        attempt: run.attempt,
        outcome,
        ticks: 0,
        output_hash: xdv_node::accel::output_hash(&[]),
        output: vec![],
        log: vec![],
    });
    net.run(100);
    for n in &net.nodes {
        assert!(
            matches!(
                n.state().task(task).map(|t| &t.status),
                Some(TaskStatus::Completed {
                    outcome: Outcome::BudgetExceeded,
                    ..
                })
            ),
            "{:?}",
            n.state().task(task)
        );
        assert!(n.state().data().contracts.contains_key(&a), "contract kept");
    }
    for n in [1, 2] {
        let end = net.records[n as usize - 1]
            .iter()
            .find(|r| r.contract == a && r.event == "job-ended")
            .unwrap_or_else(|| panic!("node {n} has no job-ended record"));
        assert_eq!(end.detail, "budget-exceeded");
        assert_eq!(end.job, Some((task, xdv_node::accel::output_hash(&[]))));
        assert!(!net.events(n, a).contains(&"aborted".to_string()));
    }
}

/// A Bell job (budget 100 ticks) under contract `c`.
fn bell_under(c: u64) -> Request {
    Request::Submit(Submit {
        domain: Domain::Q,
        contract: Some(c),
        ..Submit::new(bell(), vec![], 100)
    })
}

/// Submissions a leader accepts in one held iteration share one entry at the
/// release, and both are answered once it commits; if the leader loses its
/// leadership before the release, every request waiting on the held entry gets the
/// log's refusal at once instead of waiting out the reply timeout.
#[test]
fn held_submissions_share_an_entry_or_are_refused_together() {
    let mut net = Net::new();
    let l = net.leader().expect("a leader");
    let leader = l as u32 + 1;
    let submit = |seq: u64| {
        mgmt::encode(&SignedRequest::sign(
            CLUSTER,
            Principal::Tenant(TenantId(1)),
            seq,
            Request::Submit(Submit::new(Work::Builtin("hash".into()), vec![1], 100)),
            &T1,
        ))
    };
    let conn = |slot: u32| ClientConn {
        slot,
        generation: 1,
    };
    let n = &mut net.nodes[l];
    n.hold();
    n.on_client(conn(1), &submit(101));
    n.on_client(conn(2), &submit(102));
    n.release();
    assert_eq!(n.counters().submission_groups_proposed, 1);
    let out = n.drain();
    // What the followers are sent: one new entry, holding both requests' specs.
    let mut sent = std::collections::BTreeMap::new();
    for (_, b) in &out.raft {
        let m: xdv_raft::Message = postcard::from_bytes(b).unwrap();
        if let xdv_raft::MessageBody::Append { entries, .. } = m.body {
            for e in entries {
                sent.insert(e.index, e.kind);
            }
        }
    }
    let submissions: Vec<Vec<u64>> = sent
        .into_values()
        .filter_map(|k| match k {
            xdv_raft::EntryKind::Normal(b) => Some(xdv_cluster::Proposal::decode(&b).unwrap()),
            _ => None,
        })
        .filter_map(|p| match p.command {
            xdv_cluster::Command::AssignTask(s) => Some(vec![s.request_seq]),
            xdv_cluster::Command::AssignTasks(specs) => {
                Some(specs.iter().map(|s| s.request_seq).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(submissions, [vec![101, 102]], "one entry for both requests");
    for (to, b) in out.raft {
        net.wire.push_back((leader, to.0, false, b));
    }
    net.run(200);
    for c in [conn(1), conn(2)] {
        let got: Vec<Response> = net
            .replies
            .iter()
            .filter(|(n, rc, _)| *n == leader && *rc == c)
            .map(|(_, _, b)| mgmt::decode(b).unwrap())
            .collect();
        assert!(
            matches!(got.as_slice(), [Response::Submitted { .. }]),
            "{c:?}: {got:?}"
        );
    }
    // Held again; a peer's higher term arrives before the release: the leader steps
    // down, and the held entry is refused to both requests in that same release.
    let n = &mut net.nodes[l];
    let follower = (leader % 3) + 1;
    let newer = xdv_raft::Message {
        from: NodeId(follower),
        to: NodeId(leader),
        term: n.view().term + 1,
        body: xdv_raft::MessageBody::VoteResp { granted: false },
    };
    n.hold();
    n.on_client(conn(3), &submit(103));
    n.on_client(conn(4), &submit(104));
    n.on_peer_raft(NodeId(follower), &postcard::to_allocvec(&newer).unwrap());
    n.release();
    assert_ne!(n.view().role, "Leader");
    let out = n.drain();
    for c in [conn(3), conn(4)] {
        let got: Vec<Response> = out
            .replies
            .iter()
            .filter(|(rc, _)| *rc == c)
            .map(|(_, b)| mgmt::decode(b).unwrap())
            .collect();
        assert!(
            matches!(got.as_slice(), [Response::Refused(mgmt::Denied::NotReady(m))] if m.contains("NotLeader")),
            "{c:?}: {got:?}"
        );
    }
    assert_eq!(n.counters().submission_groups_proposed, 1, "none proposed");
}

/// A `RunBatch` the log could not place before the reply timeout (sent to a node cut
/// off from the others) is refused `NotReady`, to be retried with the same seq; once
/// the node is back, the retry under that seq runs the batch once and answers it.
#[test]
fn a_run_batch_not_placed_in_time_is_refused_not_ready_then_retried() {
    let mut net = Net::new();
    net.cut_2 = true;
    let items = vec![Submit::new(Work::Builtin("hash".into()), vec![2], 100); 3];
    let req = mgmt::encode(&SignedRequest::sign(
        CLUSTER,
        Principal::Tenant(TenantId(1)),
        500,
        Request::RunBatch(items),
        &T1,
    ));
    let conn = ClientConn {
        slot: 9,
        generation: 1,
    };
    let answer = |net: &mut Net, ms: u64| {
        for _ in 0..ms {
            net.step();
            if let Some(p) = net
                .replies
                .iter()
                .position(|(n, c, _)| *n == 2 && *c == conn)
            {
                let (_, _, b) = net.replies.remove(p);
                return Some((net.now_ms, mgmt::decode::<Response>(&b).unwrap()));
            }
        }
        None
    };
    let sent_ms = net.now_ms;
    net.nodes[1].on_client(conn, &req);
    let (at, got) = answer(&mut net, 20_000).expect("an answer by the reply timeout");
    assert!(
        matches!(&got, Response::Refused(mgmt::Denied::NotReady(m)) if m.contains("retry with the same seq")),
        "{got:?}"
    );
    assert!(
        at - sent_ms >= 10_000,
        "not before the reply timeout ({} ms)",
        at - sent_ms
    );
    // Healed: the same request again places the batch and answers with its reports.
    net.cut_2 = false;
    net.run(3_000);
    net.nodes[1].on_client(conn, &req);
    let mut reports = None;
    let mut ran = 0;
    for _ in 0..20_000 {
        net.step();
        // The tasks run where they were placed: report each as done.
        for i in 0..3 {
            for r in std::mem::take(&mut net.runs[i]) {
                ran += usize::from((500..503).contains(&r.spec.request_seq));
                net.nodes[i].on_task_done(Completion {
                    task: r.task,
                    node: NodeId(i as u32 + 1),
                    attempt: r.attempt,
                    outcome: Outcome::Executed,
                    ticks: 5,
                    output_hash: xdv_types::Hash32([1; 32]),
                    output: vec![],
                    log: vec![],
                });
            }
        }
        if let Some(p) = net
            .replies
            .iter()
            .position(|(n, c, _)| *n == 2 && *c == conn)
        {
            let (_, _, b) = net.replies.remove(p);
            reports = Some(mgmt::decode::<Response>(&b).unwrap());
            break;
        }
    }
    match reports {
        Some(Response::BatchRan { seq: 500, reports }) => {
            assert_eq!(reports.len(), 3);
            assert_eq!(ran, 3, "each of the batch's tasks ran once");
            assert!(
                reports
                    .iter()
                    .all(|r| matches!(r.status, TaskStatus::Completed { .. })),
                "{reports:?}"
            );
        }
        other => panic!("retry answer: {other:?}"),
    }
}

/// Raft's voters and learners and the log's members, as node `n` sees them.
fn membership_of(net: &Net, n: usize) -> (Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
    let node = &net.nodes[n];
    let conf = node.raft().expect("a running node").status().conf;
    let members = node.state().data().nodes.keys().copied().collect();
    (members, conf.voters, conf.learners)
}

/// `QuorumWouldBeLost` from the node's own count of up voters: node 2 is cut off
/// until the log marks it down. Removing node 1 or node 3 would leave two voters, one
/// of them up, under a quorum of two: refused by the leader and by the follower alike,
/// carrying those numbers, and nothing changes. Removing the down node 2 leaves two
/// voters, both up: accepted, and the configuration follows.
#[test]
fn removing_a_voter_is_refused_when_too_few_voters_would_be_up() {
    use mgmt::{Denied, MembershipDenied};
    let mut net = Net::new();
    net.cut_2 = true;
    let down = |net: &Net| {
        [0, 2]
            .iter()
            .all(|&i| !net.nodes[i].state().data().nodes[&NodeId(2)].up)
    };
    for _ in 0..30 {
        if down(&net) {
            break;
        }
        net.run(1_000);
    }
    assert!(down(&net), "node 2 is down in nodes 1 and 3's state");
    let l = net.leader().expect("a leader without node 2");
    assert_ne!(l as u32 + 1, 2, "node 2 is cut off");
    let (leader, follower) = (l as u32 + 1, 4 - (l as u32 + 1));
    let all = vec![NodeId(1), NodeId(2), NodeId(3)];
    let before = (all.clone(), all.clone(), vec![]);
    for i in [0, 2] {
        assert_eq!(membership_of(&net, i), before, "node {}", i + 1);
    }
    for via in [leader, follower] {
        for node in [1, 3] {
            let r = net.call(
                via,
                Principal::Operator,
                Request::RemoveWorker { node: NodeId(node) },
            );
            let lost = MembershipDenied::QuorumWouldBeLost {
                node: NodeId(node),
                up: 1,
                quorum: 2,
            };
            assert_eq!(
                r,
                Response::Refused(Denied::Membership(lost)),
                "removing {node} via {via}"
            );
        }
    }
    net.run(2_000);
    for i in [0, 2] {
        assert_eq!(membership_of(&net, i), before, "node {}", i + 1);
    }
    // The down voter itself may leave: the two left are both up.
    let r = net.call(
        leader,
        Principal::Operator,
        Request::RemoveWorker { node: NodeId(2) },
    );
    assert_eq!(
        r,
        Response::Member {
            node: NodeId(2),
            member: false
        }
    );
    net.run(2_000);
    let after = (
        vec![NodeId(1), NodeId(3)],
        vec![NodeId(1), NodeId(3)],
        vec![],
    );
    for i in [0, 2] {
        assert_eq!(membership_of(&net, i), after, "node {}", i + 1);
    }
}
