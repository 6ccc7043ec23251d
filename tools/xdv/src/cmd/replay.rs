//! `cargo xdv replay <node.ram>`: re-applies a node's committed log on the host with
//! the node's own crates and checks the state hash after every entry against the
//! node's audit records (`xdv::operate::replay`). Exit 0: `ExactMatch`; 1: diverged
//! (first index, both hashes), nothing to compare, or the files cannot be replayed
//! (the error says why).
//!
//! `replay export <node.ram> -o FILE` writes the node's scheduler replay log (rebuilt
//! from its audit region, `xdv::operate::schedlog`); `replay compare A B` compares two
//! (RAM files or exported logs): `ExactMatch` (exit 0), `MinorDifference` (the same
//! outcomes in another interleaving, exit 0) or `Diverged` at an index with the reason
//! (exit 1).

use super::operate_args::Place;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::PathBuf;
use xdv::operate::image::{LoadOptions, load_node};
use xdv::operate::replay::{Replay, Step};
use xdv::operate::{Verdict, replay};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// A node's RAM file (e.g. target/xdv/cluster/node1.ram). Its provisioning
    /// (node<N>.prov or keys.json) and cluster.json are read from the same directory.
    #[arg(required = true)]
    file: Option<PathBuf>,
    /// Print every replayed entry and the decisions it made (placements, completions,
    /// contract events, failovers), in log order.
    #[arg(long)]
    trace: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    place: Place,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Write a node's scheduler replay log (from its audit region) to a file.
    Export {
        /// The node's RAM file.
        file: PathBuf,
        /// Where to write the log.
        #[arg(short, long)]
        out: PathBuf,
        #[command(flatten)]
        place: Place,
    },
    /// Compare two scheduler replay logs (RAM files or exported logs): ExactMatch,
    /// MinorDifference or Diverged; exit 0 for ExactMatch and MinorDifference, 1 for
    /// Diverged or a log that cannot be read.
    Compare {
        /// The first log (a RAM file or an exported log).
        a: PathBuf,
        /// The second.
        b: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        place: Place,
    },
}

fn sub(s: Sub) -> Result<i32> {
    use xdv::operate::schedlog;
    match s {
        Sub::Export { file, out, place } => {
            let log = schedlog::load(&file, &place.options()?)?;
            std::fs::write(&out, schedlog::export_bytes(&log))
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{} scheduler events of {} written to {} (head {})",
                log.len(),
                file.display(),
                out.display(),
                log.head_hash().short()
            );
            Ok(xdv::exit::OK)
        }
        Sub::Compare { a, b, json, place } => {
            let opts = place.options()?;
            let (la, lb) = (schedlog::load(&a, &opts)?, schedlog::load(&b, &opts)?);
            let c = xdv_sched::compare_replays(&la, &lb);
            let (word, detail) = match &c {
                xdv_sched::ReplayComparison::ExactMatch => ("ExactMatch", String::new()),
                xdv_sched::ReplayComparison::MinorDifference => (
                    "MinorDifference",
                    "the same outcomes and enqueues in another interleaving".to_string(),
                ),
                xdv_sched::ReplayComparison::Diverged {
                    first_index,
                    reason,
                } => {
                    use xdv_sched::DivergenceReason as R;
                    let why = match reason {
                        R::TaskOutcome { task } => format!("{}'s outcome differs", run_name(*task)),
                        R::TaskEnqueued { task } => {
                            format!(
                                "{} was enqueued a different number of times",
                                run_name(*task)
                            )
                        }
                        R::StateOrInput => "the state changes or external inputs differ".into(),
                    };
                    (
                        "Diverged",
                        format!("first differing event #{first_index}; {why}"),
                    )
                }
            };
            if json {
                println!(
                    "{}",
                    json!({"result": word, "detail": detail, "events": [la.len(), lb.len()]})
                );
            } else {
                println!(
                    "{word} ({} and {} events){}",
                    la.len(),
                    lb.len(),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                );
            }
            Ok(if word == "Diverged" { 1 } else { xdv::exit::OK })
        }
    }
}

/// A run-queue task as the operator knows it: a cluster task's run as the cluster
/// task and its attempt, any other (a console batch's) by its own id.
fn run_name(t: xdv_types::TaskId) -> String {
    match xdv_node::cluster_run_of(t) {
        Some((task, attempt)) => format!("{task} (attempt {attempt})"),
        None => t.to_string(),
    }
}

pub fn run(a: Args) -> Result<i32> {
    if let Some(s) = a.sub {
        return sub(s);
    }
    let opts: LoadOptions = a.place.options()?;
    let file = a
        .file
        .ok_or_else(|| anyhow::anyhow!("name a node's RAM file (or use `replay compare`)"))?;
    let img = load_node(&file, &opts)?;
    let r = replay(&img)?;
    if a.json {
        println!("{}", replay_json(&r, a.trace));
    } else {
        print_text(&r, a.trace);
    }
    Ok(if r.verdict.ok() && r.rtt.ok() {
        xdv::exit::OK
    } else {
        1
    })
}

/// The RTT samples' replay in one line.
fn rtt_line(r: &Replay) -> String {
    let c = &r.rtt;
    let head = format!(
        "rtt samples: {} recorded ({} taken) in {} boots; {} of the node's {} coordinate heartbeats reached",
        c.samples, c.taken, c.boots, c.matched, c.heartbeats
    );
    match (&c.problem, &c.last) {
        (Some(p), _) => format!("{head}; DIVERGED: {p}"),
        (None, Some(l)) => format!(
            "{head}; coordinate replayed: {}",
            xdv::operate::replay::coordinate_text(l)
        ),
        (None, None) => head,
    }
}

fn step_line(s: &Step) -> String {
    let mut line = format!(
        "#{:<6} term {:<3} {:<16} by {} @{} → {}{}",
        s.index,
        s.term,
        s.command,
        s.time.node.0,
        s.time.lamport,
        s.hash.short(),
        match s.recorded {
            Some(h) if h == s.hash => " (node: same)".to_string(),
            Some(h) => format!(" (node: {} DIFFERENT)", h.short()),
            None => " (node: no record)".to_string(),
        }
    );
    for e in &s.events {
        line.push_str(&format!("\n         {e:?}"));
    }
    line
}

fn print_text(r: &Replay, trace: bool) {
    println!("node {} of cluster {:#x}", r.node, r.cluster);
    println!(
        "raft region: snapshot at index {} (term {}, {}), commit {}, last index {}",
        r.snapshot_index,
        r.snapshot_term,
        if r.snapshot_image {
            "state image"
        } else {
            "bootstrap"
        },
        r.commit,
        r.last_index
    );
    println!("start state: {}", r.genesis_from);
    match &r.audit.verdict {
        Ok(v) => println!("audit region: {} records, chain verifies", v.records),
        Err(e) => println!(
            "audit region: chain does NOT verify (seq {} offset {:#x}: {}); its readable records are used",
            e.seq, e.offset, e.what
        ),
    }
    if let Some((host, node)) = r.snapshot_check {
        println!(
            "snapshot image: state {} ({})",
            host.short(),
            match node {
                Some(n) if n == host => "the node recorded the same".to_string(),
                Some(n) => format!("the node recorded {}", n.short()),
                None => "no record of it".to_string(),
            }
        );
    }
    if trace {
        for s in &r.steps {
            println!("{}", step_line(s));
        }
    }
    println!(
        "replayed {} entries; {} had no audit record{}; {} records before the snapshot, {} past the commit",
        r.steps.len(),
        r.unrecorded.len(),
        r.unrecorded
            .first()
            .map_or(String::new(), |i| format!(" (first {i})")),
        r.before_snapshot,
        r.past_commit
    );
    println!("{}", rtt_line(r));
    match &r.verdict {
        Verdict::ExactMatch { checked } => {
            println!("ExactMatch: {checked} entries checked against the node's state hashes")
        }
        Verdict::Diverged {
            index,
            host,
            node,
            host_command,
            node_command,
        } => println!(
            "Diverged at index {index}: host {host_command} → {host}\n                      node {node_command} → {node}"
        ),
        Verdict::NothingChecked => {
            println!("NothingChecked: entries were replayed but the node recorded none of them")
        }
        Verdict::AuditDamaged {
            seq,
            offset,
            what,
            first_unchecked,
            checked,
        } => println!(
            "AuditDamaged: {checked} entries match, but the audit chain is broken at record seq {seq} \
             (region offset {offset:#x}: {what}); first index without a readable record: {}",
            first_unchecked.map_or("none".into(), |i| i.to_string())
        ),
    }
}

pub fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::ExactMatch { checked } => json!({"result": "ExactMatch", "checked": checked}),
        Verdict::Diverged {
            index,
            host,
            node,
            host_command,
            node_command,
        } => json!({
            "result": "Diverged", "index": index,
            "host_hash": host.to_string(), "node_hash": node.to_string(),
            "host_command": host_command, "node_command": node_command,
        }),
        Verdict::NothingChecked => json!({"result": "NothingChecked"}),
        Verdict::AuditDamaged {
            seq,
            offset,
            what,
            first_unchecked,
            checked,
        } => json!({
            "result": "AuditDamaged", "seq": seq, "offset": offset, "what": what,
            "first_unchecked": first_unchecked, "checked": checked,
        }),
    }
}

fn replay_json(r: &Replay, trace: bool) -> Value {
    let mut v = json!({
        "node": r.node,
        "cluster": r.cluster,
        "snapshot_index": r.snapshot_index,
        "snapshot_image": r.snapshot_image,
        "commit": r.commit,
        "last_index": r.last_index,
        "replayed": r.steps.len(),
        "unrecorded": r.unrecorded.len(),
        "before_snapshot": r.before_snapshot,
        "past_commit": r.past_commit,
        "audit_chain_ok": r.audit.verdict.is_ok(),
        "final_hash": r.final_state.hash().to_string(),
        "verdict": verdict_json(&r.verdict),
        "rtt": {
            "samples": r.rtt.samples, "taken": r.rtt.taken, "boots": r.rtt.boots,
            "heartbeats": r.rtt.heartbeats, "matched": r.rtt.matched,
            "ok": r.rtt.ok(), "problem": r.rtt.problem,
            "last": r.rtt.last.map(|c| json!({
                "position_us": c.position_us, "height_us": c.height_us,
                "error_ppm": c.error_ppm, "sample_count": c.sample_count,
            })),
        },
    });
    if trace {
        v["trace"] = r
            .steps
            .iter()
            .map(|s| {
                json!({
                    "index": s.index, "term": s.term, "command": s.command,
                    "proposer": s.time.node.0, "lamport": s.time.lamport,
                    "hash": s.hash.to_string(),
                    "recorded": s.recorded.map(|h| h.to_string()),
                    "events": s.events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    v
}
