//! Console views of the node: `raft`, `cluster [tasks [n]]`, `contracts`, `shards`.
#![deny(unsafe_code)]

use crate::println;
use crate::service::Services;
use alloc::string::String;
use xdv_cluster::{TaskStatus, Work};
use xdv_raft::Storage;
use xdv_types::NodeId;

/// A short name of what a task runs (for `cluster tasks`).
fn work_name(w: &Work) -> String {
    match w {
        Work::Builtin(n) => n.clone(),
        Work::Wasm(m) => alloc::format!("wasm({} bytes)", m.len()),
        Work::Job(j) => alloc::format!("device job({} bytes)", j.len()),
        Work::Dropped(h) => alloc::format!("dropped {}", h.short()),
    }
}

/// Bytes `cluster cost` hashes to time SHA-256.
const SHA_BYTES: usize = 16 * 1024;

/// `cluster cost`: what one management request's Ed25519 check and one state hash
/// cost on this node, as its loop pays them (median of a few, µs; the node is served
/// between runs).
pub fn print_cost(svc: &mut Services) {
    use xdv_cluster::mgmt::{Principal, Request, SignedRequest};
    const RUNS: usize = 9;
    let seed = [7u8; 32];
    let pk = xdv_cluster::public_key(&seed);
    let req = SignedRequest::sign(1, Principal::Operator, 1, Request::ClusterStatus, &seed);
    let median = |svc: &mut Services, f: &mut dyn FnMut(&Services) -> bool| {
        let mut us = alloc::vec::Vec::new();
        let mut ok = true;
        for _ in 0..RUNS {
            let t0 = crate::time::uptime_us();
            ok &= f(svc);
            us.push(crate::time::uptime_us() - t0);
            svc.poll(true);
        }
        us.sort_unstable();
        (us[RUNS / 2], ok)
    };
    let (verify_us, ok) = median(svc, &mut |_| req.verify(&pk));
    let (hash_us, _) = median(svc, &mut |s| {
        core::hint::black_box(s.node.state().hash_from_scratch());
        true
    });
    let (inc_us, _) = median(svc, &mut |s| {
        core::hint::black_box(s.node.state().hash());
        true
    });
    // Software SHA-256 (no SHA-NI under TCG): 16 KiB, reported per 64-byte block.
    let data = alloc::vec![0x5au8; SHA_BYTES];
    let (sha_us, _) = median(svc, &mut |_| {
        use sha2::Digest;
        core::hint::black_box(sha2::Sha256::digest(core::hint::black_box(&data)));
        true
    });
    println!(
        "cluster cost: Ed25519 request check {verify_us} us ({}); state hash from scratch {hash_us} us, cached {inc_us} us ({} tasks retained); SHA-256 {} ns per 64-byte block",
        if ok { "verified" } else { "FAILED" },
        svc.node.state().data().tasks.len(),
        sha_us * 1000 / (SHA_BYTES as u64 / 64)
    );
}

/// `cluster` console command.
pub fn print_cluster(svc: &Services) {
    let node = &svc.node;
    let v = node.view();
    let c = node.counters();
    println!(
        "cluster: node {} role {} term {} leader {} commit {} applied {} state {}",
        v.node,
        v.role,
        v.term,
        v.leader.map_or("none".into(), |l| alloc::format!("{l}")),
        v.commit,
        v.applied,
        v.state_hash
    );
    println!(
        "cluster: tasks {} completed {} pending {} refused-requests {} forwarded-in {} dropped {} policy {}",
        v.tasks,
        v.completed,
        v.pending,
        c.refused_requests,
        c.forwarded_in,
        c.forwards_dropped,
        node.state().policy_name()
    );
    if let Some(h) = node.halted() {
        println!("cluster: halted: {h}");
    }
    match node.state().federated_root() {
        Some(f) => println!(
            "cluster: federated root {} over {} nodes",
            f.global_root,
            f.node_roots.len()
        ),
        None => println!("cluster: federated root none (no roots published yet)"),
    }
    for m in &v.members {
        println!(
            "  {:<5} {:<4} assigned {} completed {} audit records {}{}",
            alloc::format!("{}", m.node),
            if m.up { "up" } else { "down" },
            m.assigned,
            m.completed,
            m.audit_records,
            if m.quarantined {
                "  QUARANTINED (state hash disagreed with the majority)"
            } else {
                ""
            }
        );
    }
}

/// `tasks` console command, cluster part: the most recent cluster tasks.
pub fn print_tasks(svc: &Services, limit: usize) {
    let tasks = &svc.node.state().data().tasks;
    println!("cluster tasks: {} known", tasks.len());
    for t in tasks.values().rev().take(limit) {
        let status = match &t.status {
            TaskStatus::Pending => String::from("pending"),
            TaskStatus::Assigned { node, attempt } => alloc::format!("assigned {node} #{attempt}"),
            TaskStatus::Completed {
                node,
                outcome,
                ticks,
                output_hash,
                ..
            } => alloc::format!(
                "{outcome} on {node} ticks={ticks} output={}",
                output_hash.short()
            ),
            TaskStatus::Rejected(r) => alloc::format!("refused: {r}"),
        };
        println!(
            "  {} {} {} {}",
            t.id,
            t.spec.tenant,
            work_name(&t.spec.work),
            status
        );
    }
}

/// `contracts` console command.
pub fn print_contracts(svc: &Services) {
    let d = svc.node.state().data();
    println!(
        "contracts: {} in force, {} refused; cluster time {} ms",
        d.contracts.len(),
        d.counters.contracts_refused,
        d.clock_ms
    );
    for (id, r) in &d.contracts {
        let c = &r.contract;
        let state = match r.state {
            xdv_cluster::ContractState::Active => "active",
            xdv_cluster::ContractState::Suspended => "suspended",
        };
        println!(
            "  #{id} {} {}->{} {} units {:?} until {} ms, policy {}, {state}, hash {}",
            c.tenant,
            c.requesting_node,
            c.target_node,
            c.domain,
            c.resource_set,
            r.expires_ms,
            svc.node.state().policy(c.tenant).name(),
            c.hash().short()
        );
    }
}

/// `shards` console command.
pub fn print_shards(svc: &Services) {
    let sh = &svc.node.state().data().shards;
    println!("shards: {}", sh.count());
    for (i, a) in sh.shards.iter().enumerate() {
        let f = |n: Option<NodeId>| n.map_or("-".into(), |n| alloc::format!("{n}"));
        println!(
            "  {i:>3} primary {:<4} secondary {}",
            f(a.primary),
            f(a.secondary)
        );
    }
}

/// `raft` console command.
pub fn print_raft(svc: &Services) {
    let node = &svc.node;
    let Some(r) = node.raft() else {
        match node.halted() {
            Some(h) => println!("raft: not running: {h}"),
            None => println!("raft: not running (no peers= list)"),
        }
        return;
    };
    let s = r.status();
    println!(
        "raft: node {} role {:?} term {} leader {} commit {} applied {} last {} voters {:?}",
        s.id,
        s.role,
        s.term,
        s.leader
            .map(|l| alloc::format!("{l}"))
            .unwrap_or_else(|| "none".into()),
        s.commit,
        node.state().data().applied_index,
        s.last_index,
        s.conf.voters
    );
    let st = r.storage();
    let d = st.stats();
    let (log_bytes, _) = st.capacity();
    let c = node.counters();
    println!(
        "raft: durable header writes {} records {} ({} bytes), snapshots {} (failed {}), log {} of {} bytes, snapshot at {}, log from {}, bad messages {}, outbox dropped {}",
        d.header_writes,
        d.records_written,
        d.record_bytes_written,
        d.snapshot_writes,
        d.failed_writes,
        st.log_bytes_used(),
        log_bytes,
        st.snapshot().meta.index,
        st.first_index(),
        c.raft_bad_messages,
        c.outbox_dropped,
    );
    println!(
        "node: tasks dispatched {} running {} (queued {}, on the APs {}), completions proposed {} unconfirmed {}, parked requests {}, snapshots restored {}",
        c.tasks_dispatched,
        node.running(),
        svc.tasks.queued(),
        svc.tasks.running(),
        c.completions_proposed,
        node.unconfirmed(),
        node.parked(),
        c.snapshots_restored
    );
}
