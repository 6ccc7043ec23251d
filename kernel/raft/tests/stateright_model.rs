//! Bounded model check of the real `RaftNode` election + replication core with
//! `stateright`: 3 voters, a network that can deliver any in-flight message in any
//! order or lose it, logical ticks, and up to two client proposals. Checked in every
//! reachable state up to the depth bound: election safety (at most one leader per
//! term, over the whole history), log matching, and state-machine safety (applied
//! sequences are prefixes of one another).

use stateright::{Checker, Model, Property};
use std::hash::{Hash, Hasher};
use xdv_raft::{Config, Entry, MemStorage, Message, NodeId, RaftNode, Role, Storage, Term};

const NODES: u32 = 3;
/// Most messages in flight (bounds the state space).
const MAX_NET: usize = 10;
/// Most client proposals per run.
const MAX_PROPOSALS: u8 = 2;
/// Most ticks per run.
const MAX_TICKS: u8 = 12;
/// CI bound (~25-40 s here).
const DEPTH: usize = 11;
/// Deeper bound for a manual run (`--ignored`, ~2.5 min): deep enough to reach two
/// competing candidates in one term (it finds the double-vote counterexample when
/// the "one vote per term" rule is removed from `RaftNode`).
const DEEP_DEPTH: usize = 12;

#[derive(Clone, Debug)]
struct State {
    nodes: Vec<RaftNode<MemStorage>>,
    net: Vec<Message>,
    elected: Vec<(Term, NodeId)>,
    applied: Vec<Vec<Entry>>,
    proposals: u8,
    ticks: u8,
}

impl State {
    fn key(&self) -> String {
        format!(
            "{:?}",
            (
                &self.nodes,
                &self.net,
                &self.elected,
                &self.applied,
                self.proposals,
                self.ticks
            )
        )
    }
}
impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key().hash(h)
    }
}
impl PartialEq for State {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Action {
    Tick(usize),
    Deliver(usize),
    Drop(usize),
    Propose(usize),
}

struct RaftModel;

fn config() -> Config {
    Config {
        election_timeout_ticks: 2,
        election_spacing_ticks: 1,
        heartbeat_interval_ticks: 1,
        ..Config::default()
    }
}

fn drain(s: &mut State, i: usize) {
    let n = &mut s.nodes[i];
    while n.has_ready() {
        let rd = n.ready();
        s.net.extend(rd.messages);
        s.applied[i].extend(rd.committed);
        n.advance();
    }
    s.net.sort_by_cached_key(|m| format!("{m:?}"));
    for n in &s.nodes {
        if n.role() == Role::Leader && !s.elected.contains(&(n.term(), n.id())) {
            s.elected.push((n.term(), n.id()));
            s.elected.sort();
        }
    }
}

impl Model for RaftModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let voters: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let nodes = voters
            .iter()
            .map(|id| {
                RaftNode::new(*id, config(), MemStorage::new_with_voters(&voters))
                    .expect("valid config")
            })
            .collect();
        let mut s = State {
            nodes,
            net: Vec::new(),
            elected: Vec::new(),
            applied: vec![Vec::new(); NODES as usize],
            proposals: 0,
            ticks: 0,
        };
        // Every node starts one tick before its election timeout, so the depth
        // bound is spent on elections and replication, not on idle ticks.
        for i in 0..NODES as usize {
            for _ in 1..s.nodes[i].election_timeout_ticks() {
                s.nodes[i].tick();
            }
            drain(&mut s, i);
        }
        vec![s]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        if s.ticks < MAX_TICKS {
            out.extend((0..s.nodes.len()).map(Action::Tick));
        }
        for k in 0..s.net.len() {
            out.push(Action::Deliver(k));
            out.push(Action::Drop(k));
        }
        if s.proposals < MAX_PROPOSALS {
            for (i, n) in s.nodes.iter().enumerate() {
                if n.role() == Role::Leader {
                    out.push(Action::Propose(i));
                }
            }
        }
    }

    fn next_state(&self, last: &State, a: Action) -> Option<State> {
        let mut s = last.clone();
        match a {
            Action::Tick(i) => {
                s.ticks += 1;
                s.nodes[i].tick();
                drain(&mut s, i);
            }
            Action::Deliver(k) => {
                let m = s.net.remove(k);
                let i = m.to.0 as usize - 1;
                s.nodes[i].step(m);
                drain(&mut s, i);
            }
            Action::Drop(k) => {
                s.net.remove(k);
            }
            Action::Propose(i) => {
                s.proposals += 1;
                s.nodes[i].propose(vec![s.proposals]).ok()?;
                drain(&mut s, i);
            }
        }
        Some(s)
    }

    fn within_boundary(&self, s: &State) -> bool {
        s.net.len() <= MAX_NET
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("election safety", |_, s: &State| {
                s.elected.windows(2).all(|w| w[0].0 != w[1].0)
            }),
            Property::always("log matching", |_, s: &State| {
                for a in &s.nodes {
                    for b in &s.nodes {
                        let (sa, sb) = (a.storage(), b.storage());
                        let hi = sa.last_index().min(sb.last_index());
                        let mut matched = false;
                        for i in (1..=hi).rev() {
                            let (ea, eb) = (sa.entry(i), sb.entry(i));
                            if let (Some(ea), Some(eb)) = (ea, eb) {
                                if matched && ea != eb {
                                    return false;
                                }
                                if ea.term == eb.term {
                                    if ea != eb {
                                        return false;
                                    }
                                    matched = true;
                                }
                            }
                        }
                    }
                }
                true
            }),
            Property::always("state-machine safety", |_, s: &State| {
                s.applied.iter().all(|a| {
                    s.applied
                        .iter()
                        .all(|b| a.iter().zip(b.iter()).all(|(x, y)| x == y))
                })
            }),
            // Sanity: the bound reaches an elected leader's entries being applied.
            Property::sometimes("an entry of a leader commits", |_, s: &State| {
                s.applied.iter().any(|a| a.iter().any(|e| e.term >= 1))
            }),
        ]
    }
}

fn check(depth: usize) {
    let checker = RaftModel
        .checker()
        .target_max_depth(depth)
        .spawn_bfs()
        .join();
    eprintln!(
        "states: {} unique: {}",
        checker.state_count(),
        checker.unique_state_count()
    );
    checker.assert_properties();
}

#[test]
fn model_check_three_nodes() {
    check(DEPTH);
}

#[test]
#[ignore = "about 2.5 minutes; run with --ignored"]
fn model_check_three_nodes_deep() {
    check(DEEP_DEPTH);
}
