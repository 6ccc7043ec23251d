//! Deterministic simulation of the cluster state machine over real `xdv-raft` nodes: a
//! seeded network that drops, duplicates and reorders messages, nodes that crash and
//! restart from their durable storage (rebuilding the cluster state from the snapshot
//! and the log), a leader-side failure detector proposing `NodeDown` / `NodeUp`, a
//! client workload submitting tasks (retrying through failovers with the same request)
//! and workers reporting completions (resending until the log has them).
//!
//! Checked after every step: two nodes that applied the same index hold the same state
//! hash (state-machine safety for the cluster state). At the end, after healing: every
//! node has the same hash, and every accepted request became exactly one task that
//! completed exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use xdv_cluster::*;
use xdv_raft::{EntryKind, MemStorage, Message, RaftNode, Role};
use xdv_types::{Hash32, NodeId, Priority, TaskId, TenantId};

const NODES: u32 = 3;
/// Seeds swept by the test (each 3000 faulty steps plus healing).
const SEEDS: u64 = 200;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pct(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// The Raft simulator's small thresholds (snapshots every 30 entries, so crashed nodes
/// come back through snapshot installs), with chunks large enough for a cluster image.
fn raft_config() -> xdv_raft::Config {
    xdv_raft::Config {
        snapshot_chunk_bytes: 4096,
        ..xdv_raft::sim::sim_raft_config()
    }
}

fn genesis() -> ClusterState {
    let workers: Vec<WorkerInfo> = (1..=NODES)
        .map(|n| WorkerInfo {
            node: NodeId(n),
            public_key: [n as u8; 32],
            resources: Resources {
                k_cores: 1,
                q_units: 0,
                phi_windows: 0,
            },
            capabilities: vec![],
        })
        .collect();
    ClusterState::genesis(Config::default(), &workers, &[(TenantId(1), [9; 32])]).unwrap()
}

struct Node {
    raft: Option<RaftNode<MemStorage>>,
    parked: Option<MemStorage>,
    state: ClusterState,
    /// Tasks assigned here and not yet reported: (task, attempt, report due at step).
    work: BTreeMap<(TaskId, u32), u64>,
    down_since: Option<u64>,
}

struct Sim {
    rng: Rng,
    step: u64,
    nodes: Vec<Node>,
    net: VecDeque<(u64, Message)>,
    /// index → state hash after applying it, from whichever node applied it first.
    hashes: BTreeMap<u64, Hash32>,
    /// Requests the client has been told were accepted: seq → task.
    accepted: BTreeMap<u64, TaskId>,
    /// The request the client is (re)sending.
    pending: Option<u64>,
    next_seq: u64,
    lamport: u64,
    crashes: u64,
    restores: u64,
    node_downs: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let voters: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let nodes = (1..=NODES)
            .map(|n| Node {
                raft: Some(
                    RaftNode::new(
                        NodeId(n),
                        raft_config(),
                        MemStorage::new_with_voters(&voters),
                    )
                    .unwrap(),
                ),
                parked: None,
                state: genesis(),
                work: BTreeMap::new(),
                down_since: None,
            })
            .collect();
        Sim {
            rng: Rng(seed),
            step: 0,
            nodes,
            net: VecDeque::new(),
            hashes: BTreeMap::new(),
            accepted: BTreeMap::new(),
            pending: None,
            next_seq: 1,
            lamport: 0,
            crashes: 0,
            restores: 0,
            node_downs: 0,
        }
    }

    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.raft.as_ref().map(|r| (i, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(i, _)| i)
    }

    fn propose(&mut self, at: usize, command: Command) {
        self.lamport += 1;
        let p = Proposal {
            time: GlobalTime {
                lamport: self.lamport,
                node: NodeId(at as u32 + 1),
            },
            command,
        };
        if let Some(r) = self.nodes[at].raft.as_mut() {
            let _ = r.propose(p.encode().unwrap());
        }
    }

    fn drain(&mut self, i: usize, faulty: bool) -> Result<(), String> {
        for _ in 0..100 {
            let Some(r) = self.nodes[i].raft.as_mut() else {
                return Ok(());
            };
            if !r.has_ready() {
                return Ok(());
            }
            let rd = r.ready();
            if let Some(snap) = rd.snapshot
                && !snap.data.is_empty()
            {
                self.nodes[i]
                    .state
                    .restore_image(&snap.data)
                    .map_err(|e| format!("n{}: snapshot refused: {e}", i + 1))?;
                self.restores += 1;
            }
            for m in rd.messages {
                if faulty && self.rng.pct(8) {
                    continue;
                }
                let delay = if faulty { self.rng.next() % 4 } else { 0 };
                if faulty && self.rng.pct(3) {
                    self.net.push_back((self.step + delay + 1, m.clone()));
                }
                self.net.push_back((self.step + delay, m));
            }
            for e in rd.committed {
                let EntryKind::Normal(bytes) = &e.kind else {
                    continue;
                };
                let applied = self.nodes[i].state.apply(e.index, bytes);
                let h = self.nodes[i].state.hash();
                if let Some(prev) = self.hashes.insert(e.index, h)
                    && prev != h
                {
                    return Err(format!("n{} diverged at index {}", i + 1, e.index));
                }
                let me = NodeId(i as u32 + 1);
                for ev in applied.events {
                    if let Event::TaskAssigned {
                        task,
                        node,
                        attempt,
                        ..
                    } = ev
                        && node == me
                    {
                        let due = self.step + 1 + self.rng.next() % 20;
                        self.nodes[i].work.insert((task, attempt), due);
                    }
                }
            }
            let r = self.nodes[i].raft.as_mut().expect("running");
            r.advance();
            if r.snapshot_due() {
                let img = self.nodes[i].state.snapshot_image();
                self.nodes[i]
                    .raft
                    .as_mut()
                    .expect("running")
                    .create_snapshot(img);
            }
        }
        Err(format!("n{}: ready loop does not settle", i + 1))
    }

    fn workload(&mut self) {
        let Some(l) = self.leader() else { return };
        // The client: one request at a time, resent with the same seq until accepted.
        if let Some(seq) = self.pending {
            let state = &self.nodes[l].state;
            if let Some(task) = state.task_for_request(TenantId(1), seq) {
                self.accepted.insert(seq, task);
                self.pending = None;
            } else if self.step.is_multiple_of(15) {
                self.propose(l, Command::AssignTask(spec(seq)));
            }
        } else if self.accepted.len() < 40 && self.rng.pct(20) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.pending = Some(seq);
            self.propose(l, Command::AssignTask(spec(seq)));
        }
        // Workers report due work (resent until the task is no longer assigned to them).
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                continue;
            }
            let me = NodeId(i as u32 + 1);
            let due: Vec<(TaskId, u32)> = self.nodes[i]
                .work
                .iter()
                .filter(|(_, at)| **at <= self.step)
                .map(|(k, _)| *k)
                .collect();
            for (task, attempt) in due {
                let still = matches!(self.nodes[i].state.task(task).map(|t| &t.status),
                    Some(TaskStatus::Assigned { node, attempt: a }) if *node == me && *a == attempt);
                if !still {
                    self.nodes[i].work.remove(&(task, attempt));
                    continue;
                }
                self.nodes[i].work.insert((task, attempt), self.step + 10);
                let c = Completion {
                    task,
                    node: me,
                    attempt,
                    outcome: Outcome::Executed,
                    ticks: task.0,
                    output_hash: Hash32([task.0 as u8; 32]),
                    output: vec![],
                };
                self.propose(l, Command::TaskCompleted(c));
            }
        }
        // The leader's failure detector.
        if self.step.is_multiple_of(10) {
            for i in 0..self.nodes.len() {
                let node = NodeId(i as u32 + 1);
                let up = self.nodes[l]
                    .state
                    .data()
                    .nodes
                    .get(&node)
                    .is_some_and(|r| r.up);
                let crashed_long = self.nodes[i].down_since.is_some_and(|t| self.step - t > 30);
                if up && crashed_long {
                    self.node_downs += 1;
                    self.propose(l, Command::NodeDown { node });
                } else if !up && self.nodes[i].raft.is_some() {
                    self.propose(l, Command::NodeUp { node });
                }
            }
        }
    }

    fn faults(&mut self) {
        let down = self.nodes.iter().filter(|n| n.raft.is_none()).count();
        let i = (self.rng.next() % NODES as u64) as usize;
        if down == 0 && self.rng.pct(1) {
            let n = &mut self.nodes[i];
            let r = n.raft.take().expect("running");
            n.parked = Some(r.into_storage());
            n.state = genesis();
            n.work.clear();
            n.down_since = Some(self.step);
            self.crashes += 1;
        } else if down > 0 && self.rng.pct(2) {
            for (k, n) in self.nodes.iter_mut().enumerate() {
                if let Some(st) = n.parked.take() {
                    n.raft = Some(RaftNode::new(NodeId(k as u32 + 1), raft_config(), st).unwrap());
                    n.down_since = None;
                }
            }
        }
    }

    fn tick(&mut self, faulty: bool) -> Result<(), String> {
        self.step += 1;
        let now = self.step;
        let mut later = VecDeque::new();
        while let Some((at, m)) = self.net.pop_front() {
            if at > now {
                later.push_back((at, m));
                continue;
            }
            let to = m.to.0 as usize - 1;
            if let Some(r) = self.nodes[to].raft.as_mut() {
                r.step(m);
            }
        }
        self.net = later;
        for n in self.nodes.iter_mut() {
            if let Some(r) = n.raft.as_mut() {
                r.tick();
            }
        }
        if faulty {
            self.faults();
        }
        self.workload();
        for i in 0..self.nodes.len() {
            self.drain(i, faulty)?;
        }
        Ok(())
    }
}

fn spec(seq: u64) -> TaskSpec {
    TaskSpec {
        tenant: TenantId(1),
        request_seq: seq,
        work: Work::Builtin("hash".into()),
        input: seq.to_le_bytes().to_vec(),
        budget_ticks: 10,
        priority: Priority::Normal,
        guards: vec![],
        needs: vec![],
        domain: Domain::K,
        pin: None,
    }
}

impl Sim {
    /// Every node runs, applied the same index with the same hash, and every one of
    /// the client's requests is accepted and its task completed.
    fn settled(&self) -> bool {
        let states: Vec<&ClusterState> = self.nodes.iter().map(|n| &n.state).collect();
        let same = states.iter().all(|s| {
            s.data().applied_index == states[0].data().applied_index && s.hash() == states[0].hash()
        });
        let all_done = self.accepted.values().all(|t| {
            matches!(
                states[0].task(*t).map(|r| &r.status),
                Some(TaskStatus::Completed { .. })
            )
        });
        self.nodes.iter().all(|n| n.raft.is_some())
            && self.pending.is_none()
            && self.accepted.len() == 40
            && same
            && all_done
    }
}

/// One seed: faults for 3000 steps, then heal and run fault-free until settled.
/// Returns (crashes, snapshot restores, NodeDown proposals).
fn run(seed: u64) -> Result<(u64, u64, u64), String> {
    let mut sim = Sim::new(seed);
    for _ in 0..3000 {
        sim.tick(true)
            .map_err(|e| format!("seed {seed} step {}: {e}", sim.step))?;
    }
    for (k, n) in sim.nodes.iter_mut().enumerate() {
        if let Some(st) = n.parked.take() {
            let cfg = raft_config();
            n.raft = Some(RaftNode::new(NodeId(k as u32 + 1), cfg, st).unwrap());
            n.down_since = None;
        }
    }
    for _ in 0..20_000 {
        sim.tick(false)
            .map_err(|e| format!("seed {seed} step {}: {e}", sim.step))?;
        if sim.settled() {
            let s = &sim.nodes[0].state;
            // Exactly one task per request, each completed once.
            let seqs: BTreeSet<u64> = s
                .data()
                .tasks
                .values()
                .map(|t| t.spec.request_seq)
                .collect();
            if s.data().tasks.len() != 40 || seqs.len() != 40 {
                return Err(format!(
                    "seed {seed}: {} tasks for {} requests",
                    s.data().tasks.len(),
                    seqs.len()
                ));
            }
            return Ok((sim.crashes, sim.restores, sim.node_downs));
        }
    }
    let mut hist: BTreeMap<&'static str, u32> = BTreeMap::new();
    if let Some(r) = sim.nodes[0].raft.as_ref() {
        use xdv_raft::Storage;
        let st = r.storage();
        for e in st
            .entries(st.first_index(), st.last_index() + 1, usize::MAX)
            .unwrap_or_default()
        {
            if let EntryKind::Normal(b) = &e.kind {
                let name = Proposal::decode(b)
                    .map(|p| p.command.name())
                    .unwrap_or("bad");
                *hist.entry(name).or_default() += 1;
            }
        }
    }
    Err(format!(
        "seed {seed}: {hist:?} did not settle (accepted {}, pending {:?}, applied {:?}, raft {:?})",
        sim.accepted.len(),
        sim.pending,
        sim.nodes
            .iter()
            .map(|n| n.state.data().applied_index)
            .collect::<Vec<_>>(),
        sim.nodes
            .iter()
            .map(|n| n.raft.as_ref().map(|r| r.status()))
            .collect::<Vec<_>>()
    ))
}

#[test]
fn cluster_state_agrees_on_every_node_through_loss_crashes_and_failover() {
    let results: Vec<_> = (0..SEEDS).map(run).collect();
    let failures: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(String::as_str))
        .collect();
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The faults happened: crashes, restarts through snapshots, failover proposals.
    let total = results
        .iter()
        .flatten()
        .fold((0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
    eprintln!(
        "{SEEDS} seeds: {} crashes, {} snapshot restores, {} NodeDown",
        total.0, total.1, total.2
    );
    assert!(
        total.0 >= SEEDS && total.1 >= SEEDS && total.2 >= SEEDS / 4,
        "too few faults: {total:?}"
    );
}
