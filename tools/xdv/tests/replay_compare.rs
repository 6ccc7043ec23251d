//! `cargo xdv replay export` and `replay compare A B` end to end, on the RAM files of
//! the in-process cluster (`xdv::operate::fixture`), run as the `xdv` binary.
//!
//! The fixture runs `xdv_node::Node`, not the kernel image's executor, so its audit
//! regions hold none of the scheduler records (`TaskEnqueued`, `TaskExecuted`, …) that
//! `kernel/image/src/audit.rs::scheduler_batch` writes: a fixture RAM file exports an
//! empty scheduler log. Real nodes' logs are exported and compared in the QEMU
//! membership test (`tests/membership.rs`). Here, to exercise the command's verdicts,
//! exit codes and errors, [`add_scheduler_records`] appends to a node's audit region the
//! records a kernel node writes for the tasks this node ran, as the node's own replayed
//! log says it ran them (a `TaskAssigned` to it → `TaskEnqueued`, a `TaskCompleted` by it
//! → `TaskExecuted`), through the kernel's audit writer (`xdv_audit::AuditLog`).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::{Out, xdv};
use xdv::operate::fixture::{self, FixtureOptions};
use xdv::operate::image::{LoadOptions, load_node};
use xdv::operate::replay;
use xdv_audit::{AuditLog, RecordBody};
use xdv_boot::cmdline::DEFAULT_AUDIT_REGION;
use xdv_cluster::{Event, Outcome};
use xdv_types::{CoreId, Hash32, NodeId, TaskId, Timestamp};

fn tmp(tag: &str) -> PathBuf {
    common::tmp_dir("xdv-rcompare", tag)
}

/// A fixture run with `opts` in its own directory.
fn build(tag: &str, opts: &FixtureOptions) -> PathBuf {
    let dir = tmp(tag);
    fixture::build(&dir, opts).unwrap();
    dir
}

fn text(o: &Out) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

fn ram(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("node{n}.ram"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn compare(a: &Path, b: &Path) -> Out {
    xdv(&["replay", "compare", s(a), s(b)])
}

fn audit_region(path: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(DEFAULT_AUDIT_REGION.0)).unwrap();
    let mut b = vec![0u8; DEFAULT_AUDIT_REGION.1 as usize];
    f.read_exact(&mut b).unwrap();
    b
}

/// The scheduler records (stamp, core, body) a kernel node writes for the tasks it ran.
type SchedRecords = Vec<(u64, CoreId, RecordBody)>;

fn task_of(b: &RecordBody) -> &TaskId {
    match b {
        RecordBody::TaskEnqueued { task, .. } | RecordBody::TaskExecuted { task, .. } => task,
        other => panic!("not a task record: {other:?}"),
    }
}

/// Appends to the audit region of the node in `path` the scheduler records of the tasks
/// its replayed log assigned to it and it completed, stamped with the Lamport time of
/// the entry that decided them, task `t` on core `1 + t % cores`; returns them.
fn add_scheduler_records(path: &Path, cores: u64) -> SchedRecords {
    let img = load_node(path, &LoadOptions::default()).unwrap();
    let r = replay(&img).unwrap();
    let me = NodeId(r.node);
    let core = |t: &TaskId| CoreId(1 + (t.0 % cores) as u16);
    let mut out = Vec::new();
    for step in &r.steps {
        for e in &step.events {
            let body = match e {
                Event::TaskAssigned { task, node, .. } if *node == me => RecordBody::TaskEnqueued {
                    task: *task,
                    core: core(task),
                },
                Event::TaskCompleted {
                    task,
                    node,
                    outcome: Outcome::Executed,
                    ticks,
                    output_hash,
                } if *node == me => RecordBody::TaskExecuted {
                    task: *task,
                    ticks: *ticks,
                    output_hash: *output_hash,
                },
                _ => continue,
            };
            out.push((step.time.lamport, core(task_of(&body)), body));
        }
    }
    let mut region = audit_region(path);
    {
        let (mut log, _) = AuditLog::open(&mut region, me).unwrap();
        for (stamp, core, body) in &out {
            log.append(Timestamp(*stamp), *core, body).unwrap();
        }
    }
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(DEFAULT_AUDIT_REGION.0)).unwrap();
    f.write_all(&region).unwrap();
    out
}

/// Per task, its execution records (ticks, output hash), sorted.
fn outcomes(recs: &SchedRecords) -> BTreeMap<TaskId, Vec<(u64, Hash32)>> {
    let mut m: BTreeMap<TaskId, Vec<(u64, Hash32)>> = BTreeMap::new();
    for (_, _, b) in recs {
        if let RecordBody::TaskExecuted {
            task,
            ticks,
            output_hash,
        } = b
        {
            m.entry(*task).or_default().push((*ticks, *output_hash));
        }
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// The `Diverged` line `compare` must print for two record lists whose executions
/// differ: the first differing event and the lowest task whose outcome differs.
fn expected_outcome_divergence(a: &SchedRecords, b: &SchedRecords) -> String {
    let first = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let (oa, ob) = (outcomes(a), outcomes(b));
    let task = oa
        .keys()
        .chain(ob.keys())
        .filter(|t| oa.get(t) != ob.get(t))
        .min()
        .expect("the executions differ");
    format!(
        "Diverged ({} and {} events): first differing event #{first}; {task}'s outcome differs",
        a.len(),
        b.len()
    )
}

/// The default fixture (3 nodes, node 3 silent 9–15 s, node 1 crashed at 17 s), built
/// once per process with the kernel's scheduler records added to every node.
fn base() -> &'static (PathBuf, Vec<SchedRecords>) {
    static RUN: OnceLock<(PathBuf, Vec<SchedRecords>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = build("base", &FixtureOptions::default());
        let recs = (1..=3)
            .map(|n| add_scheduler_records(&ram(&dir, n), 1))
            .collect();
        (dir, recs)
    })
}

/// (a) The same node of two runs with the same options: the runs are deterministic (the
/// audit regions are byte for byte the same) and `compare` says `ExactMatch`, exit 0.
#[test]
fn the_same_node_of_two_identical_runs_is_an_exact_match() {
    let second = build("again", &FixtureOptions::default());
    let (first, recs) = base();
    // As written (no scheduler records yet): identical regions, an empty exact match.
    let raw = build("again-raw", &FixtureOptions::default());
    for n in 1..=3 {
        assert!(
            audit_region(&ram(&raw, n)) == audit_region(&ram(&second, n)),
            "node {n}'s audit region differs between two runs"
        );
    }
    let o = compare(&ram(&raw, 1), &ram(&second, 1));
    assert_eq!(Some(o.code), Some(0), "{}", text(&o));
    assert_eq!(text(&o).trim(), "ExactMatch (0 and 0 events)");

    for n in 1..=3 {
        let again = add_scheduler_records(&ram(&second, n), 1);
        assert_eq!(&again, &recs[n as usize - 1], "node {n}");
        assert!(!again.is_empty(), "node {n} ran tasks");
        let o = compare(&ram(first, n), &ram(&second, n));
        assert_eq!(Some(o.code), Some(0), "node {n}: {}", text(&o));
        let k = again.len();
        assert_eq!(
            text(&o).trim(),
            format!("ExactMatch ({k} and {k} events)"),
            "node {n}"
        );
        let o = xdv(&[
            "replay",
            "compare",
            s(&ram(first, n)),
            s(&ram(&second, n)),
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["result"], "ExactMatch", "{v}");
        assert_eq!(v["detail"], "", "{v}");
        assert_eq!(v["events"], serde_json::json!([k, k]), "{v}");
    }
}

/// (b) A node's exported log against its RAM file: `ExactMatch`, exit 0; the export
/// reports the events it wrote; an export of an export compares the same.
#[test]
fn an_exported_log_matches_its_ram_file() {
    let (dir, recs) = base();
    let out = tmp("export").join("node2.slog");
    let o = xdv(&["replay", "export", s(&ram(dir, 2)), "-o", s(&out)]);
    assert_eq!(Some(o.code), Some(0), "{}", text(&o));
    let k = recs[1].len();
    assert!(
        text(&o).starts_with(&format!("{k} scheduler events of ")),
        "{}",
        text(&o)
    );
    assert_eq!(&std::fs::read(&out).unwrap()[..8], b"XDVSLOG1");
    for (a, b) in [(&out, &ram(dir, 2)), (&ram(dir, 2), &out), (&out, &out)] {
        let o = compare(a, b);
        assert_eq!(Some(o.code), Some(0), "{}", text(&o));
        assert_eq!(text(&o).trim(), format!("ExactMatch ({k} and {k} events)"));
    }
}

/// The same run with every node's tasks spread over two cores instead of one: the same
/// outcomes and enqueues in another interleaving — `MinorDifference`, exit 0.
#[test]
fn the_same_tasks_on_other_cores_are_a_minor_difference() {
    let (first, recs) = base();
    let two = build("cores", &FixtureOptions::default());
    for n in 1..=3 {
        let mine = add_scheduler_records(&ram(&two, n), 2);
        let k = recs[n as usize - 1].len();
        assert_eq!(mine.len(), k);
        assert!(mine.iter().any(|r| r.1 == CoreId(2)), "node {n}");
        let o = compare(&ram(first, n), &ram(&two, n));
        assert_eq!(Some(o.code), Some(0), "node {n}: {}", text(&o));
        assert_eq!(
            text(&o).trim(),
            format!(
                "MinorDifference ({k} and {k} events): the same outcomes and enqueues in \
                 another interleaving"
            ),
            "node {n}"
        );
    }
}

/// (c) Two nodes of one run: each ran its own tasks, so the outcome sets differ —
/// `Diverged` (exit 1) at the first event, naming the lowest task only one of them ran.
#[test]
fn two_nodes_of_one_run_diverge_on_their_own_tasks() {
    let (dir, recs) = base();
    for (a, b) in [(1u32, 2u32), (2, 3), (1, 3)] {
        let (ra, rb) = (&recs[a as usize - 1], &recs[b as usize - 1]);
        let want = expected_outcome_divergence(ra, rb);
        assert!(want.contains("first differing event #0;"), "{want}");
        let o = compare(&ram(dir, a), &ram(dir, b));
        assert_eq!(Some(o.code), Some(1), "{a} vs {b}: {}", text(&o));
        assert_eq!(text(&o).trim(), want, "{a} vs {b}");
        let o = xdv(&[
            "replay",
            "compare",
            s(&ram(dir, a)),
            s(&ram(dir, b)),
            "--json",
        ]);
        assert_eq!(Some(o.code), Some(1));
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["result"], "Diverged", "{v}");
        assert_eq!(v["events"], serde_json::json!([ra.len(), rb.len()]), "{v}");
    }
}

/// (d) A damaged exported log: a specific error naming the file, exit 1.
#[test]
fn a_damaged_export_is_refused_with_its_damage() {
    let (dir, recs) = base();
    let d = tmp("damaged");
    let good = d.join("good.slog");
    let o = xdv(&["replay", "export", s(&ram(dir, 1)), "-o", s(&good)]);
    assert_eq!(Some(o.code), Some(0), "{}", text(&o));
    let bytes = std::fs::read(&good).unwrap();
    let k = recs[0].len();
    assert!(k >= 2);
    let count = format!("BadCount {{ count: {k} }}");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        // Cut inside the last entry: it no longer fits.
        ("cut.slog", bytes[..bytes.len() - 10].to_vec(), "BadLength"),
        // Cut after the first entry: the bytes cannot hold the count.
        (
            "short.slog",
            {
                let one = 4 + 32 + u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
                bytes[..20 + one].to_vec()
            },
            &count,
        ),
        // One byte of the last stored hash flipped.
        (
            "flipped.slog",
            {
                let mut b = bytes.clone();
                *b.last_mut().unwrap() ^= 0x01;
                b
            },
            "HashMismatch",
        ),
        // Only the file magic.
        ("magic.slog", bytes[..8].to_vec(), "BadMagic"),
    ];
    for (name, b, kind) in cases {
        let p = d.join(name);
        std::fs::write(&p, b).unwrap();
        let o = compare(&p, &ram(dir, 1));
        let t = text(&o);
        assert_eq!(Some(o.code), Some(1), "{name}: {t}");
        assert!(
            t.contains(&format!("{}: not a scheduler log: ", p.display())) && t.contains(kind),
            "{name}: {t}"
        );
        assert!(!t.contains("ExactMatch") && !t.contains("Diverged"), "{t}");
    }
    // Cut inside the file magic: not taken for an export, so read as a RAM file.
    let p = d.join("tiny.slog");
    std::fs::write(&p, &bytes[..5]).unwrap();
    let o = compare(&p, &ram(dir, 1));
    assert_eq!(Some(o.code), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is 5 bytes and ends before the Raft region"),
        "{}",
        text(&o)
    );
}

/// (e) A run with other options (8 tasks instead of 12) against the default run, node
/// by node: the nodes ran other tasks — `Diverged`, exit 1.
#[test]
fn a_run_with_other_options_diverges() {
    let (first, recs) = base();
    let other = build(
        "fewer",
        &FixtureOptions {
            tasks: 8,
            ..FixtureOptions::default()
        },
    );
    for n in 1..=3 {
        let mine = add_scheduler_records(&ram(&other, n), 1);
        let theirs = &recs[n as usize - 1];
        assert!(outcomes(&mine) != outcomes(theirs), "node {n}");
        let want = expected_outcome_divergence(theirs, &mine);
        let o = compare(&ram(first, n), &ram(&other, n));
        assert_eq!(Some(o.code), Some(1), "node {n}: {}", text(&o));
        assert_eq!(text(&o).trim(), want, "node {n}");
    }
}

/// The command's help states the verdicts and exit codes.
#[test]
fn compare_help_states_the_exit_codes() {
    let o = xdv(&["replay", "compare", "--help"]);
    assert_eq!(Some(o.code), Some(0));
    let t = text(&o).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        t.contains(
            "ExactMatch, MinorDifference or Diverged; exit 0 for ExactMatch and \
             MinorDifference, 1 for Diverged or a log that cannot be read"
        ),
        "{t}"
    );
}
