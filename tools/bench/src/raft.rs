//! `cargo xdv bench raft`: our Raft (`xdv-raft`) against raft-rs (`raft` 0.7, TiKV)
//! in the same in-memory harness with zero network delay.
//!
//! Harness (identical for both): N voters, node 1 elected first. One *step* = the
//! leader receives `batch` client proposals (one `propose` call each), then every
//! message in flight is delivered once and every node processes its ready state
//! (persist, send, apply). Throughput = committed entries / wall time over the
//! whole run; latency = steps from a batch's proposal until the leader's commit
//! index covers it. Messages are moved in memory (no encoding) on both sides.
//!
//! Usage: `cargo xdv bench raft [--entries N]`. Last line: JSON with `ratio` =
//! ours / raft-rs entries/s at 3 nodes, batch 64.

use crate::report::print_json;
use std::time::Instant;

const PAYLOAD_BYTES: usize = 16;
/// Most steps one run may take (guards against a harness that stalls).
const MAX_STEPS: u64 = 10_000_000;

/// One Raft implementation driven by the shared harness.
trait Harness {
    fn new(nodes: u64) -> Self;
    /// Proposes one entry at the leader.
    fn propose(&mut self, data: Vec<u8>);
    /// Delivers every in-flight message once and processes every node's ready state.
    fn step(&mut self);
    fn leader_commit(&self) -> u64;
    fn leader_last(&self) -> u64;
}

struct Result_ {
    entries_per_s: f64,
    latency_steps: f64,
}

fn measure<H: Harness>(nodes: u64, batch: usize, entries: u64) -> anyhow::Result<Result_> {
    let mut h = H::new(nodes);
    let base = h.leader_commit();
    let target = base + entries;
    let payload = vec![7u8; PAYLOAD_BYTES];
    let mut pending: std::collections::VecDeque<(u64, u64)> = Default::default();
    let (mut lat_sum, mut lat_n) = (0u64, 0u64);
    let mut proposed = 0u64;
    let started = Instant::now();
    let mut step = 0u64;
    while h.leader_commit() < target {
        if proposed < entries {
            let n = (batch as u64).min(entries - proposed);
            for _ in 0..n {
                h.propose(payload.clone());
            }
            proposed += n;
            pending.push_back((h.leader_last(), step));
        }
        h.step();
        step += 1;
        let commit = h.leader_commit();
        while pending.front().is_some_and(|(i, _)| *i <= commit) {
            let (_, s) = pending.pop_front().expect("checked");
            lat_sum += step - s;
            lat_n += 1;
        }
        if step > MAX_STEPS {
            anyhow::bail!("harness stalled at commit {commit} of {target}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Result_ {
        entries_per_s: entries as f64 / secs,
        latency_steps: lat_sum as f64 / lat_n.max(1) as f64,
    })
}

// ----- ours -------------------------------------------------------------------

mod ours {
    use xdv_raft::{Config, MemStorage, Message, NodeId, RaftNode, Role};

    pub struct Ours {
        nodes: Vec<RaftNode<MemStorage>>,
        net: Vec<Message>,
        applied: u64,
    }

    impl Ours {
        fn drain(&mut self) {
            for n in &mut self.nodes {
                if n.has_ready() {
                    let rd = n.ready();
                    self.net.extend(rd.messages);
                    self.applied += rd.committed.len() as u64;
                    n.advance();
                }
            }
        }
    }

    impl super::Harness for Ours {
        fn new(n: u64) -> Self {
            let voters: Vec<NodeId> = (1..=n as u32).map(NodeId).collect();
            let nodes = voters
                .iter()
                .map(|id| {
                    RaftNode::new(*id, Config::default(), MemStorage::new_with_voters(&voters))
                        .expect("default config")
                })
                .collect();
            let mut h = Ours {
                nodes,
                net: Vec::new(),
                applied: 0,
            };
            // Deterministic election: node 1 stands first at term 0.
            while h.nodes[0].role() != Role::Leader {
                for n in &mut h.nodes {
                    n.tick();
                }
                h.step();
            }
            for _ in 0..4 {
                h.step();
            }
            h
        }
        fn propose(&mut self, data: Vec<u8>) {
            self.nodes[0].propose(data).expect("node 1 leads");
        }
        fn step(&mut self) {
            self.drain();
            for m in std::mem::take(&mut self.net) {
                let i = m.to.0 as usize - 1;
                self.nodes[i].step(m);
            }
            self.drain();
        }
        fn leader_commit(&self) -> u64 {
            self.nodes[0].commit_index()
        }
        fn leader_last(&self) -> u64 {
            use xdv_raft::Storage;
            self.nodes[0].storage().last_index()
        }
    }
}

// ----- raft-rs ----------------------------------------------------------------

mod raftrs {
    use raft::prelude::*;
    use raft::storage::MemStorage;
    use slog::o;

    pub struct RaftRs {
        nodes: Vec<RawNode<MemStorage>>,
        net: Vec<Message>,
        applied: u64,
    }

    impl RaftRs {
        fn handle_ready(&mut self, i: usize) {
            let node = &mut self.nodes[i];
            if !node.has_ready() {
                return;
            }
            let mut rd = node.ready();
            self.net.extend(rd.take_messages());
            self.applied += rd.take_committed_entries().len() as u64;
            let store = node.raft.raft_log.store.clone();
            if !rd.entries().is_empty() {
                store.wl().append(rd.entries()).expect("append");
            }
            if let Some(hs) = rd.hs() {
                store.wl().set_hardstate(hs.clone());
            }
            self.net.extend(rd.take_persisted_messages());
            let mut light = node.advance(rd);
            if let Some(c) = light.commit_index() {
                store.wl().mut_hard_state().set_commit(c);
            }
            self.net.extend(light.take_messages());
            self.applied += light.take_committed_entries().len() as u64;
            node.advance_apply();
        }
        fn drain(&mut self) {
            for i in 0..self.nodes.len() {
                self.handle_ready(i);
            }
        }
    }

    impl super::Harness for RaftRs {
        fn new(n: u64) -> Self {
            let logger = slog::Logger::root(slog::Discard, o!());
            let voters: Vec<u64> = (1..=n).collect();
            let nodes = voters
                .iter()
                .map(|id| {
                    let cfg = Config {
                        id: *id,
                        election_tick: 15,
                        heartbeat_tick: 5,
                        max_size_per_msg: 1024 * 1024,
                        max_inflight_msgs: 256,
                        ..Default::default()
                    };
                    let store =
                        MemStorage::new_with_conf_state(ConfState::from((voters.clone(), vec![])));
                    RawNode::new(&cfg, store, &logger).expect("raft-rs node")
                })
                .collect();
            let mut h = RaftRs {
                nodes,
                net: Vec::new(),
                applied: 0,
            };
            h.nodes[0].campaign().expect("campaign");
            while h.nodes[0].raft.state != raft::StateRole::Leader {
                h.step();
            }
            for _ in 0..4 {
                h.step();
            }
            h
        }
        fn propose(&mut self, data: Vec<u8>) {
            self.nodes[0].propose(vec![], data).expect("node 1 leads");
        }
        fn step(&mut self) {
            self.drain();
            for m in std::mem::take(&mut self.net) {
                let i = m.to as usize - 1;
                self.nodes[i].step(m).ok();
            }
            self.drain();
        }
        fn leader_commit(&self) -> u64 {
            self.nodes[0].raft.raft_log.committed
        }
        fn leader_last(&self) -> u64 {
            self.nodes[0].raft.raft_log.last_index()
        }
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut entries: u64 = 200_000;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--entries" => {
                entries = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--entries needs a value"))?
                    .parse()?;
                anyhow::ensure!(
                    (1..=100_000_000).contains(&entries),
                    "--entries must be in 1..=100000000"
                );
            }
            other => anyhow::bail!("unknown argument `{other}` (usage: raft [--entries N])"),
        }
    }
    println!("raft: in-memory harness, zero network delay, {PAYLOAD_BYTES}-byte entries");
    println!(
        "{:>5} {:>5} {:>14} {:>14} {:>7} {:>11} {:>11}",
        "nodes", "batch", "ours e/s", "raft-rs e/s", "ratio", "ours lat", "raft-rs lat"
    );
    let mut headline = (0.0, 0.0);
    for nodes in [3u64, 5] {
        for batch in [1usize, 64] {
            // Batch 1 takes one step per entry: use fewer entries.
            let n = if batch == 1 {
                (entries / 10).max(1)
            } else {
                entries
            };
            let o = measure::<ours::Ours>(nodes, batch, n)?;
            let b = measure::<raftrs::RaftRs>(nodes, batch, n)?;
            let ratio = o.entries_per_s / b.entries_per_s;
            println!(
                "{nodes:>5} {batch:>5} {:>14.0} {:>14.0} {:>7.2} {:>11.2} {:>11.2}",
                o.entries_per_s, b.entries_per_s, ratio, o.latency_steps, b.latency_steps
            );
            if nodes == 3 && batch == 64 {
                headline = (o.entries_per_s, b.entries_per_s);
            }
        }
    }
    println!("latency = steps from proposal until the leader's commit covers it");
    print_json(
        "raft",
        "committed entries/s (3 nodes, batch 64)",
        headline.0,
        headline.1,
        serde_json::json!({ "nodes": 3, "batch": 64, "entries": entries }),
    );
    Ok(())
}
