//! `cargo xdv verify <cluster dir> | <node.ram>...`: one verification view of the
//! cluster (`xdv::operate::verify`): each node's audit chain, its published Merkle
//! roots against its own region with consistency proofs between published sizes, its
//! log replayed, the applied-entry state hashes compared across nodes, and the
//! federated root recomputed. One table, exit 0 when all is well, 1 otherwise.

use super::operate_args::{Place, ram_files};
use super::replay::verdict_json;
use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;
use xdv::operate::image::load_node;
use xdv::operate::{Verdict, verify_nodes};

#[derive(clap::Args)]
pub struct Args {
    /// A cluster directory (every node<N>.ram in it) and/or node RAM files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    place: Place,
}

pub fn run(a: Args) -> Result<i32> {
    let opts = a.place.options()?;
    let files = ram_files(&a.inputs)?;
    let images = files
        .iter()
        .map(|f| load_node(f, &opts))
        .collect::<Result<Vec<_>>>()?;
    let report = verify_nodes(&images);
    if a.json {
        let nodes: Vec<_> = report
            .nodes
            .iter()
            .map(|c| {
                json!({
                    "file": c.path, "node": c.node, "chain": c.chain, "chain_ok": c.chain_ok,
                    "records": c.records, "roots_checked": c.roots_checked,
                    "consistency_checked": c.consistency_checked,
                    "applied_compared": c.applied_compared,
                    "contracts_compared": c.contracts_compared,
                    "replay": c.replay.as_ref().map(verdict_json),
                    "problems": c.problems, "ok": c.ok(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "ok": report.ok(),
                "nodes": nodes,
                "latest_roots": report.latest_roots.iter().map(|(n, (r, h))| json!({"node": n.0, "records": r, "root": h.to_string()})).collect::<Vec<_>>(),
                "federated_root": report.federated.as_ref().map(|f| f.global_root.to_string()),
                "cluster_problems": report.cluster_problems,
            })
        );
    } else {
        print_table(&report);
    }
    Ok(if report.ok() { xdv::exit::OK } else { 1 })
}

fn print_table(r: &xdv::operate::VerifyReport) {
    println!(
        "{:<5} {:<28} {:>8} {:>14} {:>9} {:>9} {:>9}  verdict",
        "node", "chain", "records", "roots(consist)", "applied", "contracts", "replay"
    );
    for c in &r.nodes {
        let replay = match &c.replay {
            Some(Verdict::ExactMatch { checked }) => format!("={checked}"),
            Some(Verdict::Diverged { index, .. }) => format!("!{index}"),
            Some(Verdict::NothingChecked) => "none".into(),
            Some(Verdict::AuditDamaged { .. }) => "chain".into(),
            None => "-".into(),
        };
        println!(
            "{:<5} {:<28} {:>8} {:>14} {:>9} {:>9} {:>9}  {}",
            c.node.map_or("?".into(), |n| n.to_string()),
            c.chain,
            c.records,
            format!("{}({})", c.roots_checked, c.consistency_checked),
            c.applied_compared,
            c.contracts_compared,
            replay,
            if c.ok() { "OK" } else { "PROBLEM" }
        );
        for p in &c.problems {
            println!(
                "      node {}: {p}",
                c.node.map_or("?".into(), |n| n.to_string())
            );
        }
    }
    for p in &r.cluster_problems {
        println!("cluster: {p}");
    }
    match &r.federated {
        Some(f) => {
            let parts: Vec<String> = r
                .latest_roots
                .iter()
                .map(|(n, (records, root))| format!("{}:{}@{records}", n.0, root.short()))
                .collect();
            println!("federated root: {} over {}", f.global_root, parts.join(" "));
        }
        None => println!("federated root: none (no node has published a root yet)"),
    }
    println!(
        "{}",
        if r.ok() {
            "OK: every chain verifies, every published root matches its region, every replay matches, nodes agree"
        } else {
            "FAILED: see the problems above"
        }
    );
}
