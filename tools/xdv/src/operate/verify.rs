//! One verification view of a cluster (`cargo xdv verify`): for every node its audit
//! chain, the Merkle roots it published through the log checked against its own
//! region (and RFC 9162 consistency proofs between its successive published sizes, so
//! a node cannot rewrite history it already published), the federated root
//! recomputed, its log replayed (`super::replay`), and the applied-entry records
//! compared across nodes: one state hash per log index.
//!
//! Published roots are taken from every replayed log (accepted `PublishAuditRoot`
//! entries) and from each replayed state's `NodeRecord::audit` (publications that a
//! snapshot already folded in). Two logs that disagree about a node's root at the
//! same size are reported too.

use super::image::NodeImage;
use super::replay::{AuditRead, Replay, Verdict, read_audit, replay};
use std::collections::{BTreeMap, BTreeSet};
use xdv_audit::FederatedAuditRoot;
use xdv_audit::merkle::{consistency_proof, verify_consistency};
use xdv_types::{Hash32, NodeId};

/// What was checked on one node, and what is wrong.
pub struct NodeCheck {
    pub path: String,
    pub node: Option<u32>,
    /// `ok`, `ok (N damaged ranges recorded)` or the first bad record.
    pub chain: String,
    pub chain_ok: bool,
    pub records: u64,
    pub roots_checked: u64,
    pub consistency_checked: u64,
    /// Indices whose state hash this node and at least one other node recorded.
    pub applied_compared: u64,
    /// Contract records of this node found on the contract's other node too.
    pub contracts_compared: u64,
    /// The replay's verdict (`None`: the replay could not run; see `problems`).
    pub replay: Option<Verdict>,
    pub problems: Vec<String>,
}

impl NodeCheck {
    /// Nothing checked yet for the node in the file at `path`.
    fn new(path: String, node: Option<u32>) -> NodeCheck {
        NodeCheck {
            path,
            node,
            chain: String::new(),
            chain_ok: false,
            records: 0,
            roots_checked: 0,
            consistency_checked: 0,
            applied_compared: 0,
            contracts_compared: 0,
            replay: None,
            problems: Vec::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The cluster's verification.
pub struct VerifyReport {
    pub nodes: Vec<NodeCheck>,
    /// Each node's latest published (records, root), from the logs.
    pub latest_roots: BTreeMap<NodeId, (u64, Hash32)>,
    /// Recomputed over `latest_roots` (`None`: nobody published).
    pub federated: Option<FederatedAuditRoot>,
    /// Problems that belong to no single node.
    pub cluster_problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.cluster_problems.is_empty() && self.nodes.iter().all(NodeCheck::ok)
    }
}

/// A node's publications as the logs tell them: (records) → (root, where seen).
type Published = BTreeMap<NodeId, BTreeMap<u64, (Hash32, String)>>;

fn collect_published(replays: &[(usize, &Replay)], problems: &mut Vec<String>) -> Published {
    let mut out: Published = BTreeMap::new();
    let mut add = |node: NodeId, records: u64, root: Hash32, seen: String| {
        let slot = out.entry(node).or_default();
        match slot.get(&records) {
            Some((r, first)) if *r != root => problems.push(format!(
                "node {} published two different roots over {records} records: {} ({first}) and {} ({seen})",
                node.0,
                r.short(),
                root.short()
            )),
            Some(_) => {}
            None => {
                slot.insert(records, (root, seen));
            }
        }
    };
    for (_, r) in replays {
        for s in &r.steps {
            if let Some((node, records, root)) = s.published {
                add(node, records, root, format!("log index {}", s.index));
            }
        }
        for (node, rec) in &r.final_state.data().nodes {
            if let Some((records, root)) = rec.audit {
                add(*node, records, root, format!("state of node {}", r.node));
            }
        }
    }
    out
}

/// Checks `pubs` (records → root) against the node's readable record hashes.
fn check_roots(a: &AuditRead, pubs: &BTreeMap<u64, (Hash32, String)>, c: &mut NodeCheck) {
    let hashes = &a.hashes;
    let mut prev: Option<(u64, Hash32)> = None;
    for (&records, (root, seen)) in pubs {
        if records > hashes.len() as u64 {
            c.problems.push(format!(
                "published a root over {records} records ({seen}) but its region holds {} readable records",
                hashes.len()
            ));
            continue;
        }
        let mine = a.root_at(records).expect("records <= hashes.len()");
        c.roots_checked += 1;
        if mine != *root {
            c.problems.push(format!(
                "published root over {records} records ({seen}) is {} but its region gives {}",
                root.short(),
                mine.short()
            ));
            continue;
        }
        if let Some((m, old_root)) = prev {
            let proof = consistency_proof(hashes, m as usize, records as usize);
            let ok =
                proof.is_ok_and(|p| verify_consistency(m, records, &old_root, root, &p).is_ok());
            c.consistency_checked += 1;
            if !ok {
                c.problems.push(format!(
                    "no consistency proof from its published size {m} to {records}"
                ));
            }
        }
        prev = Some((records, *root));
    }
}

fn chain_summary(a: &AuditRead, c: &mut NodeCheck) {
    match &a.verdict {
        Ok(r) => {
            c.records = r.records;
            c.chain_ok = true;
            c.chain = if r.damaged.is_empty() {
                "ok".into()
            } else {
                format!("ok ({} damaged ranges recorded)", r.damaged.len())
            };
        }
        Err(e) => {
            c.records = a.hashes.len() as u64;
            c.chain = format!("FAILED at seq {} offset {:#x}", e.seq, e.offset);
            c.problems.push(format!(
                "audit chain: first bad record seq {} at region offset {:#x}: {}",
                e.seq, e.offset, e.what
            ));
        }
    }
    if !a.undecodable.is_empty() {
        c.problems.push(format!(
            "{} applied-entry records do not decode (first seq {})",
            a.undecodable.len(),
            a.undecodable[0]
        ));
    }
    // The node recorded that a member published a root that does not extend its
    // last one (the log refused it): audit history was rewritten somewhere.
    for m in a.marks.iter().filter(|m| m.kind == "root-alarm") {
        c.problems.push(format!("{} (audit seq {})", m.text, m.seq));
    }
}

/// Verifies the nodes (see the module doc).
pub fn verify_nodes(images: &[NodeImage]) -> VerifyReport {
    let mut checks = Vec::new();
    let mut replays: Vec<Option<Replay>> = Vec::new();
    let mut audits: Vec<Option<AuditRead>> = Vec::new();
    for img in images {
        let mut c = NodeCheck::new(img.path.display().to_string(), img.file_node);
        match replay(img) {
            Ok(r) => {
                c.node = Some(r.node);
                chain_summary(&r.audit, &mut c);
                if let Verdict::Diverged {
                    index, host, node, ..
                } = &r.verdict
                {
                    c.problems.push(format!(
                        "replay diverges at index {index}: host {} node {}",
                        host.short(),
                        node.short()
                    ));
                } else if r.verdict == Verdict::NothingChecked {
                    c.problems
                        .push("replay: the node recorded none of its applied entries".into());
                }
                c.replay = Some(r.verdict.clone());
                replays.push(Some(r));
                audits.push(None);
            }
            Err(e) => {
                let a = read_audit(&img.audit);
                c.node = c.node.or(a.node.map(|n| n.0));
                if a.node.is_none() {
                    c.chain = "no region".into();
                }
                chain_summary(&a, &mut c);
                c.problems.push(format!("replay: {e}"));
                replays.push(None);
                audits.push(Some(a));
            }
        }
        checks.push(c);
    }
    let mut cluster_problems = Vec::new();
    let replayed: Vec<(usize, &Replay)> = replays
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
        .collect();
    let published = collect_published(&replayed, &mut cluster_problems);
    let audit_of = |i: usize| -> &AuditRead {
        replays[i]
            .as_ref()
            .map(|r| &r.audit)
            .or(audits[i].as_ref())
            .expect("every node has one or the other")
    };
    for (i, c) in checks.iter_mut().enumerate() {
        let Some(node) = c.node else { continue };
        if let Some(pubs) = published.get(&NodeId(node)) {
            check_roots(audit_of(i), pubs, c);
        }
    }
    compare_applied(&mut checks, &audit_of, &mut cluster_problems);
    compare_contracts(images, &mut checks, &audit_of);
    let latest_roots: BTreeMap<NodeId, (u64, Hash32)> = published
        .iter()
        .filter_map(|(n, p)| p.iter().next_back().map(|(r, (root, _))| (*n, (*r, *root))))
        .collect();
    let federated = (!latest_roots.is_empty())
        .then(|| {
            FederatedAuditRoot::new(latest_roots.iter().map(|(n, (_, r))| (*n, *r)).collect()).ok()
        })
        .flatten();
    // The most advanced replayed state must hold the same federated root.
    if let Some((_, best)) = replayed
        .iter()
        .max_by_key(|(_, r)| r.final_state.data().applied_index)
    {
        let logged = best.final_state.federated_root().map(|f| f.global_root);
        let recomputed = federated.as_ref().map(|f| f.global_root);
        cluster_problems.extend(federated_root_problem(best.node, logged, recomputed));
    }
    for node in published.keys() {
        if !checks.iter().any(|c| c.node == Some(node.0)) {
            cluster_problems.push(format!(
                "node {} published roots but its RAM file was not given: not checked",
                node.0
            ));
        }
    }
    VerifyReport {
        nodes: checks,
        latest_roots,
        federated,
        cluster_problems,
    }
}

/// The problem when the federated root in `node`'s replayed state is not the one
/// recomputed from every node's latest published root (`None`: no root).
fn federated_root_problem(
    node: u32,
    logged: Option<Hash32>,
    recomputed: Option<Hash32>,
) -> Option<String> {
    let show = |h: Option<Hash32>| h.map_or("none".into(), |h| h.short().to_string());
    (logged != recomputed).then(|| {
        format!(
            "the federated root in node {node}'s replayed state ({}) differs from the one recomputed from the published roots ({})",
            show(logged),
            show(recomputed)
        )
    })
}

/// Both parties of a contract record each of its events (seed 000 §7): for every
/// contract record of one node, the other party — if its file is here and it
/// recorded the applied entry of that index (it did not skip it in a snapshot) — holds
/// the same record with the same contract hash. (`proposed` is the requesting node's
/// alone: the target hears of a contract only when the log decides it.)
fn compare_contracts<'a>(
    images: &[NodeImage],
    checks: &mut [NodeCheck],
    audit_of: &dyn Fn(usize) -> &'a AuditRead,
) {
    type Key = (u64, String, u64);
    let mut recs: Vec<BTreeMap<Key, (Hash32, NodeId, NodeId)>> = Vec::new();
    let mut applied: Vec<BTreeSet<u64>> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let mut m = BTreeMap::new();
        for (_, b) in super::contracts::contract_records(&img.audit) {
            m.insert(
                (b.contract, b.event.clone(), b.index),
                (b.hash, b.requester, b.target),
            );
        }
        recs.push(m);
        applied.push(audit_of(i).applied.iter().map(|r| r.index).collect());
    }
    let slot_of = |node: NodeId| checks.iter().position(|c| c.node == Some(node.0));
    let mut found: Vec<(usize, String)> = Vec::new();
    let mut compared = vec![0u64; checks.len()];
    for (i, m) in recs.iter().enumerate() {
        let Some(me) = checks[i].node.map(NodeId) else {
            continue;
        };
        for ((id, event, index), (hash, requester, target)) in m {
            // The requesting node alone records proposing a contract.
            if event == xdv_node::EVENT_PROPOSED {
                continue;
            }
            let other = if *requester == me {
                *target
            } else {
                *requester
            };
            if other == me {
                continue;
            }
            let Some(j) = slot_of(other) else { continue };
            if !applied[j].contains(index) {
                continue; // the other node never applied that entry itself
            }
            compared[i] += 1;
            match recs[j].get(&(*id, event.clone(), *index)) {
                Some((h, _, _)) if h == hash => {}
                Some(_) => found.push((j, format!(
                    "contract {id}: its {event} record at index {index} names another contract hash than node {}'s",
                    me.0
                ))),
                None => found.push((j, format!(
                    "contract {id}: no {event} record at index {index}, which node {} (the other party) has",
                    me.0
                ))),
            }
        }
    }
    for (i, n) in compared.into_iter().enumerate() {
        checks[i].contracts_compared = n;
    }
    for (j, p) in found {
        checks[j].problems.push(p);
    }
}

/// For every index several nodes recorded: the same state hash (and command).
fn compare_applied<'a>(
    checks: &mut [NodeCheck],
    audit_of: &dyn Fn(usize) -> &'a AuditRead,
    problems: &mut Vec<String>,
) {
    let mut by_index: BTreeMap<u64, BTreeMap<u32, Hash32>> = BTreeMap::new();
    for (i, c) in checks.iter().enumerate() {
        let Some(node) = c.node else { continue };
        for r in &audit_of(i).applied {
            by_index
                .entry(r.index)
                .or_default()
                .entry(node)
                .or_insert(r.hash);
        }
    }
    let mut bad_nodes: BTreeSet<u32> = BTreeSet::new();
    let mut reported = 0;
    for (index, hashes) in &by_index {
        if hashes.len() < 2 {
            continue;
        }
        for c in checks.iter_mut() {
            if c.node.is_some_and(|n| hashes.contains_key(&n)) {
                c.applied_compared += 1;
            }
        }
        let mut votes: BTreeMap<Hash32, Vec<u32>> = BTreeMap::new();
        for (n, h) in hashes {
            votes.entry(*h).or_default().push(*n);
        }
        if votes.len() == 1 {
            continue;
        }
        let majority = votes.values().map(Vec::len).max().unwrap_or(0);
        for nodes in votes.values() {
            if nodes.len() < majority || votes.values().filter(|v| v.len() == majority).count() > 1
            {
                bad_nodes.extend(nodes.iter().copied());
            }
        }
        if reported < 5 {
            let parts: Vec<String> = votes
                .iter()
                .map(|(h, ns)| {
                    let ids: Vec<String> = ns.iter().map(|n| n.to_string()).collect();
                    let which = if ids.len() == 1 { "node" } else { "nodes" };
                    format!("{} on {which} {}", h.short(), ids.join(", "))
                })
                .collect();
            problems.push(format!(
                "index {index}: state hashes differ: {}",
                parts.join(", ")
            ));
        }
        reported += 1;
    }
    if reported > 5 {
        problems.push(format!(
            "... {} more indices with differing state hashes",
            reported - 5
        ));
    }
    for c in checks.iter_mut() {
        if c.node.is_some_and(|n| bad_nodes.contains(&n)) {
            c.problems.push(
                "its recorded state hashes differ from the other nodes' (see the cluster lines)"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_audit::{AuditLog, RecordBody};
    use xdv_types::{CoreId, Timestamp};

    /// The audit region of node `node` with the applied-entry records of indices
    /// 1..=10 and the contract records `contracts` (as the node writes them).
    fn region_with(node: u32, contracts: &[xdv_node::ContractRecordBody]) -> Vec<u8> {
        let mut region = vec![0u8; 1 << 20];
        let (mut log, _) = AuditLog::open(&mut region, NodeId(node)).unwrap();
        for i in 1..=10u64 {
            let applied = RecordBody::Custom {
                tag: xdv_node::AUDIT_TAG_APPLIED,
                bytes: xdv_cluster::mgmt::encode(&(i, "ProposeContract", Hash32([i as u8; 32]))),
            };
            log.append(Timestamp(i), CoreId(0), &applied).unwrap();
            for c in contracts.iter().filter(|c| c.index == i) {
                let rec = RecordBody::Custom {
                    tag: xdv_node::AUDIT_TAG_CONTRACT,
                    bytes: xdv_cluster::mgmt::encode(c),
                };
                log.append(Timestamp(i), CoreId(0), &rec).unwrap();
            }
        }
        drop(log);
        region
    }

    fn image(node: u32, audit: Vec<u8>) -> NodeImage {
        let place = super::super::image::RegionPlace {
            offset: 0,
            bytes: audit.len() as u64,
        };
        NodeImage {
            path: format!("node{node}.ram").into(),
            file_node: Some(node),
            raft_at: place,
            raft: Vec::new(),
            audit_at: place,
            audit,
            config: None,
            config_from: String::new(),
        }
    }

    /// Both parties of a contract record each of its events: a record the other
    /// party lacks, or one naming another contract hash, is a problem of the node
    /// that lacks it; matching records are counted as compared.
    #[test]
    fn contract_records_are_compared_across_their_two_nodes() {
        let rec = |event: &str, index: u64, hash: u8| xdv_node::ContractRecordBody {
            index,
            contract: 77,
            hash: Hash32([hash; 32]),
            event: event.into(),
            tenant: xdv_types::TenantId(1),
            requester: NodeId(1),
            target: NodeId(2),
            job: None,
            detail: String::new(),
        };
        let one = [
            rec("accepted", 3, 9),
            rec("released", 6, 9),
            rec("expired", 8, 9),
        ];
        // Node 2 has the acceptance, lacks the release, and names another hash for
        // the expiry.
        let two = [rec("accepted", 3, 9), rec("expired", 8, 5)];
        let images = [
            image(1, region_with(1, &one)),
            image(2, region_with(2, &two)),
        ];
        let audits: Vec<AuditRead> = images.iter().map(|i| read_audit(&i.audit)).collect();
        let mut checks = vec![
            NodeCheck::new("node1.ram".into(), Some(1)),
            NodeCheck::new("node2.ram".into(), Some(2)),
        ];
        compare_contracts(&images, &mut checks, &|i| &audits[i]);
        assert_eq!(checks[0].contracts_compared, 3);
        assert_eq!(checks[1].contracts_compared, 2);
        assert_eq!(
            checks[1].problems,
            vec![
                "contract 77: its expired record at index 8 names another contract hash than node 1's",
                "contract 77: no released record at index 6, which node 1 (the other party) has",
            ]
        );
        // Node 1 in turn names node 2's expiry hash as another than its own.
        assert_eq!(
            checks[0].problems,
            vec![
                "contract 77: its expired record at index 8 names another contract hash than node 2's"
            ]
        );
    }

    /// A node's record of an audit-root alarm (a member's root refused as not
    /// extending its last one) is a problem of that node in the verification view,
    /// on the fast reader and on the node's own scanner alike.
    #[test]
    fn a_recorded_audit_root_alarm_is_a_problem() {
        let mut region = vec![0u8; 1 << 20];
        {
            let (mut log, _) = AuditLog::open(&mut region, NodeId(1)).unwrap();
            for i in 0..300u64 {
                let body = RecordBody::RaftApplied {
                    index: i + 1,
                    term: 1,
                    entry_hash: Hash32([i as u8; 32]),
                };
                log.append(Timestamp(i + 1), CoreId(0), &body).unwrap();
            }
            let alarm = RecordBody::Custom {
                tag: xdv_node::AUDIT_TAG_ROOT_ALARM,
                bytes: xdv_cluster::mgmt::encode(&(NodeId(2), 40u64, 90u64)),
            };
            log.append(Timestamp(400), CoreId(0), &alarm).unwrap();
        }
        for a in [
            read_audit(&region),
            super::super::replay::read_audit_simple(&region),
        ] {
            let mut c = NodeCheck::new("node1.ram".into(), Some(1));
            chain_summary(&a, &mut c);
            assert!(c.chain_ok, "{}", c.chain);
            assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
            assert!(
                c.problems[0].starts_with(
                    "audit-root alarm: n2's root over 90 records does not extend its root over 40"
                ),
                "{:?}",
                c.problems
            );
        }
    }

    /// The federated root in the most advanced replayed state must be the one the
    /// published roots give: equal is no problem; a different or missing one is named
    /// with both roots.
    #[test]
    fn a_federated_root_differing_from_the_published_roots_is_a_problem() {
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        assert_eq!(federated_root_problem(2, Some(a), Some(a)), None);
        assert_eq!(federated_root_problem(2, None, None), None);
        let p = federated_root_problem(2, Some(a), Some(b)).unwrap();
        assert!(p.contains("node 2's replayed state"), "{p}");
        assert!(
            p.contains(&a.short().to_string()) && p.contains(&b.short().to_string()),
            "{p}"
        );
        let p = federated_root_problem(3, None, Some(b)).unwrap();
        assert!(p.contains("(none)"), "{p}");
    }
}
