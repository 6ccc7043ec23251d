//! `replay`, `verify` and `timeline` on a real cluster run in this process
//! (`xdv::operate::fixture`: the nodes the kernel runs, with their Raft regions and
//! audit regions written by the kernel's own writers into RAM files at the kernel's
//! addresses), then tampered with.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;
use xdv::operate::fixture::{self, FixtureOptions, FixtureRun};
use xdv::operate::image::{LoadOptions, load_node};
use xdv::operate::replay::ReplayError;
use xdv::operate::{Verdict, replay, verify_nodes};
use xdv_audit::{AuditLog, RecordBody, RecordView, inspect_region_with};
use xdv_boot::cmdline::{DEFAULT_AUDIT_REGION, DEFAULT_RAFT_REGION};
use xdv_cluster::{Event, mgmt};
use xdv_types::{Hash32, NodeId};

fn tmp(tag: &str) -> PathBuf {
    common::tmp_dir("xdv-operate", tag)
}

/// The default fixture (3 nodes; node 3 silent for 6 s and declared down; node 1, the
/// first leader, crashed and restarted), built once per test process. Tests copy it
/// before changing anything.
fn cluster() -> &'static FixtureRun {
    static RUN: OnceLock<FixtureRun> = OnceLock::new();
    RUN.get_or_init(|| fixture::build(&tmp("base"), &FixtureOptions::default()).unwrap())
}

fn copy_cluster(tag: &str) -> PathBuf {
    let dst = tmp(tag);
    for e in std::fs::read_dir(&cluster().dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

fn xdv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdv"))
        .args(args)
        .output()
        .expect("running xdv")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ram(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("node{n}.ram"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_region(path: &Path, (at, len): (u64, u64)) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = vec![0u8; len as usize];
    f.read_exact(&mut b).unwrap();
    b
}

fn write_region(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

fn records(region: &[u8]) -> Vec<RecordView> {
    let mut out = Vec::new();
    inspect_region_with(region, &mut |v: &RecordView| out.push(v.clone()));
    out
}

/// The applied-entry record of log index `index`.
fn applied_record(views: &[RecordView], index: u64) -> (usize, (u64, String, Hash32)) {
    views
        .iter()
        .enumerate()
        .find_map(|(i, v)| match &v.body {
            RecordBody::Custom { tag, bytes } if *tag == xdv_node::AUDIT_TAG_APPLIED => {
                let r: (u64, String, Hash32) = mgmt::decode(bytes).unwrap();
                (r.0 == index).then_some((i, r))
            }
            _ => None,
        })
        .expect("a record of that index")
}

#[test]
fn every_fixture_node_replays_to_an_exact_match() {
    let run = cluster();
    assert!(run.submitted >= 10, "{run:?}");
    let mut terms = std::collections::BTreeSet::new();
    let mut leaders = std::collections::BTreeSet::new();
    for n in 1..=3 {
        let img = load_node(&ram(&run.dir, n), &LoadOptions::default()).unwrap();
        let r = replay(&img).unwrap();
        assert_eq!(r.node, n);
        match r.verdict {
            Verdict::ExactMatch { checked } => assert!(checked >= 20, "node {n}: {checked}"),
            ref other => panic!("node {n}: {other:?}"),
        }
        // The RTT samples (two peers every 500 ms) replay through the node's code to
        // the coordinates its load heartbeats reported; node 1 crashed, so two boots.
        let rtt = &r.rtt;
        assert!(rtt.ok(), "node {n}: {rtt:?}");
        assert!(rtt.samples >= 60 && rtt.taken >= 60, "node {n}: {rtt:?}");
        assert!(rtt.heartbeats >= 2, "node {n}: {rtt:?}");
        assert_eq!(rtt.matched, rtt.heartbeats, "node {n}");
        assert_eq!(rtt.boots, if n == 1 { 2 } else { 1 }, "node {n}");
        // Another Vivaldi configuration gives other coordinates: the heartbeats no
        // longer match (the check can fail).
        let mut other = load_node(&ram(&run.dir, n), &LoadOptions::default()).unwrap();
        other
            .config
            .as_mut()
            .unwrap()
            .vivaldi
            .coordinate_adjustment_ppm += 50_000;
        let bad = replay(&other).unwrap();
        let p = bad.rtt.problem.clone().unwrap_or_default();
        assert!(
            p.contains("load heartbeat at index") && p.contains("never reach"),
            "node {n}: {p}"
        );
        // A configuration that refuses the samples the node took (RTTs above 0.9 ms):
        // the first sample's verdict differs.
        let mut other = load_node(&ram(&run.dir, n), &LoadOptions::default()).unwrap();
        let v = &mut other.config.as_mut().unwrap().vivaldi;
        (v.rtt_min_us, v.rtt_default_us, v.rtt_max_us) = (500, 900, 900);
        let p = replay(&other).unwrap().rtt.problem.unwrap_or_default();
        assert!(
            p.starts_with("boot 1: sample 0 (from ")
                && p.contains("the node took it, the replay refused"),
            "node {n}: {p}"
        );

        let assigned = r.steps.iter().filter(|s| s.command == "AssignTask").count();
        assert!(assigned >= 10, "node {n} replayed {assigned} placements");
        let events: Vec<&Event> = r.steps.iter().flat_map(|s| &s.events).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::NodeDown { node } if node.0 == 3))
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::NodeUp { node } if node.0 == 3))
        );
        for st in &r.steps {
            terms.insert(st.term);
            leaders.insert(st.time.node);
        }
    }
    assert!(
        terms.len() >= 2,
        "the leader's crash made a new term: {terms:?}"
    );
    assert!(
        leaders.len() >= 2,
        "another node led after the crash: {leaders:?}"
    );
}

#[test]
fn replay_from_a_snapshot_image_matches_and_checks_the_snapshot() {
    let dir = tmp("snap");
    let opts = FixtureOptions {
        snapshot_threshold: Some(8),
        ..FixtureOptions::default()
    };
    fixture::build(&dir, &opts).unwrap();
    let img = load_node(&ram(&dir, 2), &LoadOptions::default()).unwrap();
    let r = replay(&img).unwrap();
    assert!(r.snapshot_image, "the log was compacted into a snapshot");
    assert!(r.snapshot_index > 8);
    let (host, node) = r.snapshot_check.unwrap();
    assert_eq!(
        Some(host),
        node,
        "the snapshot's state is the one the node recorded"
    );
    assert!(
        matches!(r.verdict, Verdict::ExactMatch { .. }),
        "{:?}",
        r.verdict
    );
    assert!(r.before_snapshot > 0);
    assert!(r.rtt.ok() && r.rtt.taken > 0, "{:?}", r.rtt);
    // Without the node's configuration a snapshot still replays, but the RTT samples
    // cannot: said, not guessed.
    let mut bare = load_node(&ram(&dir, 2), &LoadOptions::default()).unwrap();
    bare.config = None;
    let p = replay(&bare).unwrap().rtt.problem.unwrap_or_default();
    assert!(
        p.starts_with("no node configuration (") && p.ends_with("to replay the RTT samples with"),
        "{p}"
    );

    // An audit region that holds only a boot record: the snapshot is newer than it.
    let mut fresh = vec![0u8; DEFAULT_AUDIT_REGION.1 as usize];
    {
        let (mut log, _) = AuditLog::open(&mut fresh, NodeId(2)).unwrap();
        log.append(
            xdv_types::Timestamp(1),
            xdv_types::CoreId(0),
            &RecordBody::Boot { count: 1 },
        )
        .unwrap();
    }
    write_region(&ram(&dir, 2), DEFAULT_AUDIT_REGION.0, &fresh);
    let img = load_node(&ram(&dir, 2), &LoadOptions::default()).unwrap();
    let e = replay(&img).err().expect("refused");
    assert!(
        matches!(e, ReplayError::SnapshotNewerThanAudit { .. }),
        "{e}"
    );
    let o = xdv(&["replay", s(&ram(&dir, 2))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("nothing to compare"), "{}", text(&o));
}

#[test]
fn replay_cli_prints_exact_match_trace_and_json() {
    let dir = &cluster().dir;
    let o = xdv(&["replay", s(&ram(dir, 1)), "--trace"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("ExactMatch: "), "{out}");
    assert!(
        out.contains("rtt samples: ") && out.contains("coordinate replayed: ("),
        "{out}"
    );
    assert!(out.contains("TaskAssigned"), "{out}");
    assert!(out.contains("NodeDown"), "{out}");
    let o = xdv(&["replay", s(&ram(dir, 3)), "--json", "--trace"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"]["result"], "ExactMatch");
    assert!(v["verdict"]["checked"].as_u64().unwrap() >= 20);
    assert_eq!(v["rtt"]["ok"], true, "{v}");
    assert_eq!(v["rtt"]["matched"], v["rtt"]["heartbeats"], "{v}");
    assert_eq!(v["node"], 3);
    let trace = v["trace"].as_array().unwrap();
    assert!(trace.iter().any(|s| s["command"] == "PublishAuditRoot"));
}

/// A forger rewrites node 2's audit chain with one state hash changed and every record
/// after it re-chained: the chain verifies, but replay names the index, and verify
/// catches the published roots and the other nodes' hashes.
#[test]
fn rechained_state_hash_is_reported_at_its_index() {
    let dir = copy_cluster("rechain");
    let path = ram(&dir, 2);
    let region = read_region(&path, DEFAULT_AUDIT_REGION);
    let views = records(&region);
    let target = 20;
    let (at, (index, command, hash)) = applied_record(&views, target);
    let mut forged_hash = hash;
    forged_hash.0[5] ^= 0x40;
    let mut forged = vec![0u8; region.len()];
    {
        let (mut log, _) = AuditLog::open(&mut forged, NodeId(2)).unwrap();
        for (i, v) in views.iter().enumerate() {
            let body = if i == at {
                RecordBody::Custom {
                    tag: xdv_node::AUDIT_TAG_APPLIED,
                    bytes: mgmt::encode(&(index, command.clone(), forged_hash)),
                }
            } else {
                v.body.clone()
            };
            log.append(v.header.stamp, v.header.core, &body).unwrap();
        }
    }
    assert!(
        xdv_audit::verify_region(&forged).is_ok(),
        "a re-chained region verifies"
    );
    write_region(&path, DEFAULT_AUDIT_REGION.0, &forged);

    let img = load_node(&path, &LoadOptions::default()).unwrap();
    match replay(&img).unwrap().verdict {
        Verdict::Diverged {
            index, host, node, ..
        } => {
            assert_eq!(index, target);
            assert_eq!(host, hash);
            assert_eq!(node, forged_hash);
        }
        other => panic!("{other:?}"),
    }
    let o = xdv(&["replay", s(&path)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains(&format!("Diverged at index {target}")),
        "{}",
        text(&o)
    );

    let o = xdv(&["verify", s(&dir)]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("index {target}: state hashes differ")),
        "{out}"
    );
    assert!(out.contains("node 2: published root over"), "{out}");
    assert!(out.contains("node 2: replay diverges at index 20"), "{out}");
    assert!(!out.contains("node 1: "), "node 1 is not blamed: {out}");
}

/// One byte of a state hash flipped in place (not re-chained): the chain breaks there;
/// replay and verify say where.
#[test]
fn flipped_state_hash_breaks_the_chain_and_is_located() {
    let dir = copy_cluster("flip");
    let path = ram(&dir, 3);
    let region = read_region(&path, DEFAULT_AUDIT_REGION);
    let views = records(&region);
    let target = 25;
    let (at, _) = applied_record(&views, target);
    let v = &views[at];
    // The state hash is the payload's last 32 bytes.
    let last = v.offset + 29 + u64::from(v.header.payload_bytes) - 1;
    let mut byte = read_region(&path, (DEFAULT_AUDIT_REGION.0 + last, 1));
    byte[0] ^= 0x01;
    write_region(&path, DEFAULT_AUDIT_REGION.0 + last, &byte);

    let img = load_node(&path, &LoadOptions::default()).unwrap();
    match replay(&img).unwrap().verdict {
        Verdict::AuditDamaged {
            seq,
            first_unchecked,
            ..
        } => {
            assert_eq!(seq, v.header.seq);
            assert_eq!(first_unchecked, Some(target));
        }
        other => panic!("{other:?}"),
    }
    let o = xdv(&["replay", s(&path)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains(&format!("first index without a readable record: {target}")));
    let o = xdv(&["verify", s(&dir), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    let bad: Vec<&serde_json::Value> = j["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["ok"] == false)
        .collect();
    assert_eq!(bad.len(), 1, "{j}");
    assert_eq!(bad[0]["node"], 3);
    let problems = bad[0]["problems"].to_string();
    assert!(
        problems.contains(&format!("first bad record seq {}", v.header.seq)),
        "{problems}"
    );
}

#[test]
fn verify_passes_on_the_good_cluster() {
    let dir = &cluster().dir;
    let images: Vec<_> = (1..=3)
        .map(|n| load_node(&ram(dir, n), &LoadOptions::default()).unwrap())
        .collect();
    let r = verify_nodes(&images);
    assert!(
        r.ok(),
        "{:?} {:?}",
        r.cluster_problems,
        r.nodes.iter().map(|c| &c.problems).collect::<Vec<_>>()
    );
    for c in &r.nodes {
        assert!(
            c.roots_checked >= 2,
            "node {:?}: {}",
            c.node,
            c.roots_checked
        );
        assert!(c.consistency_checked >= 1);
        assert!(c.applied_compared >= 20);
    }
    assert_eq!(r.latest_roots.len(), 3);
    let fed = r.federated.as_ref().unwrap();
    assert_eq!(fed.node_roots.len(), 3);
    let o = xdv(&["verify", s(dir)]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("federated root: {}", fed.global_root)),
        "{out}"
    );
    // The files listed one by one give the same verdict.
    let o = xdv(&[
        "verify",
        s(&ram(dir, 1)),
        s(&ram(dir, 2)),
        s(&ram(dir, 3)),
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["federated_root"], fed.global_root.to_string());
}

#[test]
fn bad_inputs_get_specific_errors() {
    let dir = copy_cluster("bad");
    // A blank Raft region.
    write_region(&ram(&dir, 1), DEFAULT_RAFT_REGION.0, &vec![0u8; 8192]);
    let o = xdv(&["replay", s(&ram(&dir, 1))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no Raft region"), "{}", text(&o));
    // Both Raft header slots damaged.
    write_region(&ram(&dir, 2), DEFAULT_RAFT_REGION.0 + 100, &[0xAA]);
    write_region(&ram(&dir, 2), DEFAULT_RAFT_REGION.0 + 4096 + 100, &[0xAA]);
    let o = xdv(&["replay", s(&ram(&dir, 2))]);
    assert!(
        text(&o).contains("the Raft region does not open"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("header"), "{}", text(&o));
    // Another size than cluster.json says.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(ram(&dir, 3))
        .unwrap();
    f.set_len(100 << 20).unwrap();
    let o = xdv(&["replay", s(&ram(&dir, 3))]);
    assert!(
        text(&o).contains("not this node's RAM file"),
        "{}",
        text(&o)
    );
    // Node 1's file under node 2's name.
    let other = tmp("renamed");
    for f in ["cluster.json", "keys.json", "node2.prov"] {
        std::fs::copy(cluster().dir.join(f), other.join(f)).unwrap();
    }
    std::fs::copy(ram(&cluster().dir, 1), ram(&other, 2)).unwrap();
    let o = xdv(&["replay", s(&ram(&other, 2))]);
    assert!(
        text(&o).contains("holds the Raft region of node 1, not of node 2"),
        "{}",
        text(&o)
    );
    // Not a RAM file at all.
    let small = other.join("node5.ram");
    std::fs::write(&small, b"hello").unwrap();
    let o = xdv(&["replay", s(&small)]);
    assert!(
        text(&o).contains("ends before the Raft region"),
        "{}",
        text(&o)
    );
    // No audit region.
    let noaudit = copy_cluster("noaudit");
    write_region(
        &ram(&noaudit, 1),
        DEFAULT_AUDIT_REGION.0,
        &vec![0u8; DEFAULT_AUDIT_REGION.1 as usize],
    );
    let o = xdv(&["replay", s(&ram(&noaudit, 1))]);
    assert!(text(&o).contains("no audit region"), "{}", text(&o));
    let o = xdv(&["verify", s(&noaudit)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("node 1: replay: no audit region"),
        "{}",
        text(&o)
    );
    // No provisioning for the genesis state.
    let noprov = tmp("noprov");
    std::fs::copy(ram(&cluster().dir, 1), noprov.join("node1.ram")).unwrap();
    let o = xdv(&["replay", s(&noprov.join("node1.ram"))]);
    assert!(text(&o).contains("pass --prov"), "{}", text(&o));
    let o = xdv(&[
        "replay",
        s(&noprov.join("node1.ram")),
        "--prov",
        s(&cluster().dir.join("node1.prov")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn headless(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(args)
        .output()
        .expect("running chromium")
}

/// The timeline's fixture: the default run, but node 3 partitioned from the others
/// (still running) instead of silent, and node 2's replica corrupted early so that
/// hash voting raises an alarm; node 1 still crashes and restarts.
fn faulty_cluster() -> PathBuf {
    let dir = tmp("timeline-run");
    let opts = FixtureOptions {
        silent: None,
        partition: Some((3, 9_000, 15_000)),
        corrupt: Some((2, 3_000)),
        ..FixtureOptions::default()
    };
    fixture::build(&dir, &opts).unwrap();
    dir
}

/// Chromium, which the timeline test needs (CI installs it); only with
/// `XDV_SKIP_CHROMIUM=1` may the test do without (structural checks only).
fn chromium_or_skip() -> Option<&'static str> {
    let bin = chromium();
    if bin.is_none() {
        assert_eq!(
            std::env::var("XDV_SKIP_CHROMIUM").as_deref(),
            Ok("1"),
            "chromium (Debian `chromium`) is not installed: the timeline test renders the \
             page in it (XDV_SKIP_CHROMIUM=1 to check the page structurally only)"
        );
        eprintln!(
            "chromium not installed, XDV_SKIP_CHROMIUM=1: checked the page structurally only"
        );
    }
    bin
}

/// The HTML fetches nothing and runs nothing.
fn assert_self_contained(html: &str) {
    for bad in [
        "http://", "https://", "url(", "<link", "<script", "@import", "<iframe", "<img",
    ] {
        assert!(!html.contains(bad), "the page holds {bad:?}");
    }
}

#[test]
fn timeline_draws_lanes_and_marks() {
    let dir = &faulty_cluster();
    let out = tmp("timeline").join("run.html");
    let o = xdv(&["timeline", s(dir), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert_self_contained(&html);
    for lane in ["lane-cluster", "lane-node-1", "lane-node-2", "lane-node-3"] {
        assert!(html.contains(&format!("id=\"{lane}\"")), "{lane}");
    }
    for class in [
        "mark placed",
        "mark completed",
        "mark down",
        "mark up",
        "mark applied",
        "mark boot",
        "mark alarm hash",
        "mark fault kill",
        "mark fault partition",
        "class=\"leader\"",
        "class=\"term\"",
        "down-span",
        "kill-span",
    ] {
        assert!(html.contains(class), "no {class}");
    }
    assert!(html.matches("mark placed").count() >= 10);
    // The hash-vote alarm: in every node's audit region (each on its own lane, naming
    // node 2), and the log's decision on the cluster lane.
    for n in 1..=3 {
        let alarm = format!("node {n}: hash-vote alarm: node 2 diverged");
        assert!(html.contains(&alarm), "no {alarm:?}");
    }
    assert!(html.contains("diverged: its state hash at index"));
    assert!(
        html.contains("quarantined (this node)"),
        "node 2's own alarm"
    );
    assert!(html.contains("differs from the majority's"));
    assert!(
        html.contains(": node 2 quarantined"),
        "the log's HashMismatch"
    );
    // The kill: node 1's second boot; the partition: node 3 declared down while it ran
    // (its own peer-health records say it lost the others).
    assert!(
        html.contains("node 1 stopped after applying index") && html.contains("boot 2"),
        "node 1's restart"
    );
    assert_eq!(html.matches("mark fault kill").count(), 1);
    assert!(
        html.contains("node 3 declared down at index")
            && html.contains("cut off while running: after applying index")
            && html.contains("its own audit records node 1 dead"),
        "node 3's partition"
    );
    assert!(
        !html.contains("node 1 declared down"),
        "a kill is not a partition"
    );
    // Nothing in the fixture has a device.
    assert!(!html.contains("mark fault device"));
    // A range: only entries 10..=20 are drawn.
    let o = xdv(&[
        "timeline",
        s(dir),
        "-o",
        s(&out),
        "--from",
        "10",
        "--to",
        "20",
    ]);
    assert!(text(&o).contains("log 10..=20"), "{}", text(&o));
    let ranged = std::fs::read_to_string(&out).unwrap();
    assert!(ranged.matches("mark applied").count() <= 3 * 11);
    assert!(ranged.matches("mark applied").count() >= 3 * 8);

    let Some(bin) = chromium_or_skip() else {
        return;
    };
    std::fs::write(&out, &html).unwrap();
    let url = format!("file://{}", out.display());
    let dom = headless(bin, &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for want in [
        "lane-node-3",
        "mark completed",
        "mark alarm hash",
        "mark fault kill",
        "mark fault partition",
    ] {
        assert!(
            dom.contains(want),
            "{want} not in the rendered DOM: {dom:.400}"
        );
    }
    // Not blank: the screenshot of the page is far richer than one of an empty page.
    let shot = |page: &Path, png: &Path| {
        let o = headless(
            bin,
            &[
                &format!("--screenshot={}", png.display()),
                "--window-size=1400,500",
                &format!("file://{}", page.display()),
            ],
        );
        assert!(png.exists(), "no screenshot: {}", text(&o));
        std::fs::metadata(png).unwrap().len()
    };
    let empty = out.with_file_name("empty.html");
    std::fs::write(&empty, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank = shot(&empty, &out.with_file_name("empty.png"));
    let ours = shot(&out, &out.with_file_name("run.png"));
    assert!(
        ours > 4 * blank,
        "screenshot {ours} bytes vs blank page {blank}"
    );
}
