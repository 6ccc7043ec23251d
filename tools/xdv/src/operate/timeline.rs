//! A picture of a run (`cargo xdv timeline`): one self-contained HTML page with an
//! inline SVG, one lane per node over a range of log indices, drawn from the replayed
//! logs and each node's audit records. No scripts, no fonts, no network fetches.
//!
//! On a node's lane: its terms (band colour per term, from its `RaftApplied` records),
//! the terms it led (a dark bar: the entries it stamped as leader), the entries it
//! applied (ticks; red where the replay disagreed with its record), task placements
//! (▲) and completions (●) on the node that ran them, re-placements, node down
//! (shaded from down to up), published audit roots, and its audit marks (boots,
//! audit-region alarms, damage, a full region, a halt) at the last index it had
//! applied then. Contract events go on a "cluster" lane. Every mark carries a
//! `<title>` (hover).
//!
//! Alarms and faults, each from what the run's files hold (nothing records a
//! partition durably — the switch keeps its state in memory — so partitions are
//! derived from the log and the node's own audit region):
//! - hash-vote alarm: the node's audit records with tag [`AUDIT_TAG_HASH_ALARM`] (on
//!   that node's lane, naming the node that diverged), and the log's
//!   `Event::HashMismatch` (on the cluster lane);
//! - kill: a `Boot` record after the first one in a node's audit region: the node
//!   stopped after the last entry it had applied and started again (the span until it
//!   applied again is shaded);
//! - partition: a `NodeDown` in the log for a node whose audit region holds no boot
//!   before it applied again: it was cut off while running (its own peer-health
//!   records, tag [`AUDIT_TAG_PEER`], say whom it lost) or paused;
//! - device failure: a completion with `Outcome::DeviceFailed`, a contract aborted
//!   because a device failed, and the node's accelerator records (tag
//!   [`AUDIT_TAG_ACCEL`]) of a failed device.

use super::replay::Replay;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use xdv_audit::{RecordBody, RecordView, inspect_region_with};
use xdv_cluster::{Event, Outcome, mgmt};
use xdv_node::accel::AUDIT_TAG_ACCEL;
use xdv_node::{AUDIT_TAG_HASH_ALARM, AUDIT_TAG_PEER, PeerRecordBody};
use xdv_types::{Hash32, NodeId};

const LANE_PX: u64 = 72;
/// The legend of the alarm and fault marks (the same shapes as [`mark_svg`]'s).
const LEGEND_FAULTS: &str = concat!(
    r##"<p class="legend">"##,
    r##"<span><svg width="14" height="14"><circle cx="7" cy="7" r="6" fill="#d22"/><text x="7" y="11" fill="#fff" font-size="10" font-weight="bold" text-anchor="middle">!</text></svg> hash-vote alarm (on the lane of the node that recorded it; the cluster lane: the log's decision)</span>"##,
    r##"<span><svg width="14" height="14"><path d="M2 2 l10 10 m0 -10 l-10 10" stroke="#d22" stroke-width="3"/></svg> kill: stopped, then a new boot (grey: until it applied again)</span>"##,
    r##"<span><svg width="14" height="14"><circle cx="7" cy="7" r="5" fill="#fff" stroke="#e80" stroke-width="2"/><path d="M3 11 l8 -8" stroke="#e80" stroke-width="2"/></svg> partition: declared down with no restart (derived from the log and the node's own records: cut off or paused)</span>"##,
    r##"<span><svg width="14" height="14"><rect x="2" y="2" width="10" height="10" fill="#fff" stroke="#70c" stroke-width="2"/><path d="M2 12 l10 -10" stroke="#70c" stroke-width="2"/></svg> device failure</span></p>"##,
);
const LEFT_PX: u64 = 110;
const TOP_PX: u64 = 40;
const MAX_WIDTH_PX: u64 = 16_000;
/// Records of each kind [`read_faults`] keeps per audit region (peer-health records
/// grow with the run; a picture needs no more).
const MAX_FAULT_RECORDS: usize = 1 << 16;

/// One drawn mark (kept for the JSON summary and tests).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    /// Lane: a node id, or 0 for the cluster lane.
    pub lane: u32,
    pub index: u64,
    /// CSS class: `applied`, `diverged`, `placed`, `completed`, `replaced`, `down`,
    /// `up`, `root`, `contract`, `boot`, `alarm`, `damage`, `full`, `halt`, and
    /// `alarm hash` (hash vote), `fault kill`, `fault partition`, `fault device`.
    pub class: &'static str,
    pub title: String,
}

/// A shaded interval on a lane (besides the down spans, which come from the marks).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub lane: u32,
    pub from: u64,
    pub to: u64,
    /// CSS class: `kill-span` (stopped until it applied again).
    pub class: &'static str,
    pub title: String,
}

/// The page and what is on it.
pub struct Timeline {
    pub html: String,
    pub marks: Vec<Mark>,
    pub spans: Vec<Span>,
    pub lanes: Vec<u32>,
    pub from: u64,
    pub to: u64,
}

/// A hash-vote alarm record: the vote's index, the node whose hash differed, its
/// hash and the majority's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashAlarm {
    pub index: u64,
    pub node: NodeId,
    pub theirs: Hash32,
    pub majority: Hash32,
}

/// What the timeline reads from a node's audit region besides the replay's
/// `AuditRead`: its hash-vote alarms, peer-health records and device failures, each
/// with its audit sequence number (region order).
#[derive(Clone, Debug, Default)]
pub struct AuditFaults {
    pub node: Option<u32>,
    /// `None`: the record's bytes do not decode.
    pub hash_alarms: Vec<(u64, Option<HashAlarm>)>,
    pub peers: Vec<(u64, PeerRecordBody)>,
    /// Accelerator records of a failed device (their text).
    pub devices: Vec<(u64, String)>,
}

/// Reads an audit region (the bytes at its place in the RAM file) for
/// [`AuditFaults`]; never panics on any bytes.
pub fn read_faults(audit: &[u8]) -> AuditFaults {
    let mut f = AuditFaults::default();
    let insp = inspect_region_with(audit, &mut |v: &RecordView| {
        let RecordBody::Custom { tag, bytes } = &v.body else {
            return;
        };
        let seq = v.header.seq;
        match *tag {
            AUDIT_TAG_HASH_ALARM if f.hash_alarms.len() < MAX_FAULT_RECORDS => {
                let a = mgmt::decode::<(u64, NodeId, Hash32, Hash32)>(bytes).ok();
                let a = a.map(|(index, node, theirs, majority)| HashAlarm {
                    index,
                    node,
                    theirs,
                    majority,
                });
                f.hash_alarms.push((seq, a));
            }
            AUDIT_TAG_PEER if f.peers.len() < MAX_FAULT_RECORDS => {
                if let Ok(p) = mgmt::decode::<PeerRecordBody>(bytes) {
                    f.peers.push((seq, p));
                }
            }
            AUDIT_TAG_ACCEL if f.devices.len() < MAX_FAULT_RECORDS => {
                let text = String::from_utf8_lossy(bytes);
                if text.contains("device failed") {
                    f.devices.push((seq, text.into_owned()));
                }
            }
            _ => {}
        }
    });
    f.node = insp.scan.map(|s| s.node.0);
    f
}

/// A node's applied-entry records in audit order, to place any other record of its
/// region on the log-index axis.
struct AppliedBySeq(Vec<(u64, u64)>);

impl AppliedBySeq {
    fn of(r: &Replay) -> AppliedBySeq {
        let v: Vec<(u64, u64)> = r.audit.applied.iter().map(|a| (a.seq, a.index)).collect();
        debug_assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "region order");
        AppliedBySeq(v)
    }

    /// The last index the node had applied when it wrote record `seq`.
    fn at(&self, seq: u64) -> Option<u64> {
        let p = self.0.partition_point(|(s, _)| *s < seq);
        p.checked_sub(1).map(|p| self.0[p].1)
    }

    /// The first index the node applied after record `seq`.
    fn next(&self, seq: u64) -> Option<u64> {
        let p = self.0.partition_point(|(s, _)| *s <= seq);
        self.0.get(p).map(|a| a.1)
    }

    /// Where the node applied nothing for a while: for each applied record, (its
    /// index, its seq, the next applied record's seq or `u64::MAX`). A node applies
    /// the log in order, so what it wrote in such a gap it wrote after applying that
    /// index and before the next one.
    fn gaps(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.0.iter().enumerate().map(|(k, &(seq, index))| {
            let next = self.0.get(k + 1).map_or(u64::MAX, |a| a.0);
            (index, seq, next)
        })
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn event_marks(index: u64, ev: &Event, out: &mut Vec<Mark>) {
    let mut m = |lane: NodeId, class, title: String| {
        out.push(Mark {
            lane: lane.0,
            index,
            class,
            title,
        })
    };
    let cluster = NodeId(0);
    match ev {
        Event::TaskAssigned {
            task,
            node,
            attempt,
            ..
        } => m(
            *node,
            "placed",
            format!("{task} placed on node {} (attempt {attempt})", node.0),
        ),
        Event::TaskCompleted {
            task,
            node,
            outcome,
            ..
        } => {
            if let Outcome::DeviceFailed(why) = outcome {
                m(
                    *node,
                    "fault device",
                    format!("device failure on node {}: {task} ended: {why}", node.0),
                );
            }
            m(
                *node,
                "completed",
                format!("{task} completed on node {}: {outcome}", node.0),
            )
        }
        Event::HashMismatch {
            index: at,
            node,
            theirs,
            majority,
        } => m(
            cluster,
            "alarm hash",
            format!(
                "hash vote at index {at}: node {}'s state hash {} differs from the majority's {}: node {} quarantined",
                node.0,
                theirs.short(),
                majority.short(),
                node.0
            ),
        ),
        Event::TaskReplaced { task, from, to, .. } => m(
            *from,
            "replaced",
            format!(
                "{task} taken from node {} to {}",
                from.0,
                to.map_or("pending".into(), |t| t.0.to_string())
            ),
        ),
        Event::NodeDown { node } => m(*node, "down", format!("node {} declared down", node.0)),
        Event::NodeUp { node } => m(*node, "up", format!("node {} up again", node.0)),
        Event::RootPublished { node, records } => m(
            *node,
            "root",
            format!(
                "node {} published its audit root over {records} records",
                node.0
            ),
        ),
        Event::Contract(c) => {
            use xdv_cluster::ContractChange as C;
            let what = match &c.change {
                C::Rejected(r) => format!("rejected: {r}"),
                C::Preempted { by } => format!("preempted by {by}"),
                C::Reallocated { from, to } => {
                    format!("moved from node {} to node {}", from.0, to.0)
                }
                C::Aborted(w) => format!("aborted: {w}"),
                C::Terminated(w) => format!("terminated: {w}"),
                other => other.name().to_string(),
            };
            if matches!(&c.change, C::Aborted(w) if w.contains("device failed")) {
                m(
                    c.target,
                    "fault device",
                    format!(
                        "device failure on node {}: contract {} {what}",
                        c.target.0, c.id
                    ),
                );
            }
            m(
                cluster,
                "contract",
                format!(
                    "contract {} ({} {}, node {} on node {}): {what}",
                    c.id, c.tenant, c.domain, c.requester.0, c.target.0
                ),
            )
        }
        _ => {}
    }
}

/// Builds the page for `replays` over log indices `from..=to` (`None`: all);
/// `faults` (any order, [`read_faults`] of each node's audit region) adds the
/// alarms and faults only the audit regions hold.
pub fn render(
    replays: &[Replay],
    faults: &[AuditFaults],
    from: Option<u64>,
    to: Option<u64>,
) -> Timeline {
    // Cluster-wide decisions: every replayed entry once, by index.
    let mut by_index: BTreeMap<u64, &super::replay::Step> = BTreeMap::new();
    for r in replays {
        for s in &r.steps {
            by_index.entry(s.index).or_insert(s);
        }
    }
    let last = replays
        .iter()
        .flat_map(|r| {
            r.audit
                .applied
                .iter()
                .map(|a| a.index)
                .chain(r.steps.iter().map(|s| s.index))
        })
        .max()
        .unwrap_or(1);
    let from = from.unwrap_or(1).max(1);
    let to = to.unwrap_or(last).max(from);
    let mut marks = Vec::new();
    let mut spans = Vec::new();
    // Leaders: the node that stamped entries in a term.
    let mut led: BTreeMap<(u32, u64), (u64, u64)> = BTreeMap::new();
    for (&i, s) in by_index.range(from..=to) {
        for ev in &s.events {
            event_marks(i, ev, &mut marks);
        }
        let e = led.entry((s.time.node.0, s.term)).or_insert((i, i));
        e.0 = e.0.min(i);
        e.1 = e.1.max(i);
    }
    let mut lanes: BTreeSet<u32> = replays.iter().map(|r| r.node).collect();
    let no_faults = AuditFaults::default();
    for r in replays {
        let f = faults
            .iter()
            .find(|f| f.node == Some(r.node))
            .unwrap_or(&no_faults);
        node_marks(r, from, to, &mut marks, &mut spans);
        fault_marks(r, f, from, to, &mut marks);
    }
    partition_marks(&by_index, replays, faults, from, to, &mut marks);
    lanes.extend(marks.iter().map(|m| m.lane).filter(|&l| l != 0));
    let lanes: Vec<u32> = lanes.into_iter().collect();
    marks.sort();
    spans.sort();
    let html = page(replays, &lanes, &marks, &spans, &led, from, to);
    Timeline {
        html,
        marks,
        spans,
        lanes,
        from,
        to,
    }
}

/// A node's own marks: applied entries, its audit marks, and its restarts (a boot
/// record after the first: killed, crashed or shut down before it).
fn node_marks(r: &Replay, from: u64, to: u64, out: &mut Vec<Mark>, spans: &mut Vec<Span>) {
    let host: BTreeMap<u64, _> = r.steps.iter().map(|s| (s.index, s.hash)).collect();
    let by_seq = AppliedBySeq::of(r);
    for a in &r.audit.applied {
        if !(from..=to).contains(&a.index) {
            continue;
        }
        let diverged = host.get(&a.index).is_some_and(|h| *h != a.hash);
        out.push(Mark {
            lane: r.node,
            index: a.index,
            class: if diverged { "diverged" } else { "applied" },
            title: format!(
                "node {} applied {} {} → state {}{}",
                r.node,
                a.index,
                a.command,
                a.hash.short(),
                if diverged { " (replay disagrees)" } else { "" }
            ),
        });
    }
    for m in &r.audit.marks {
        if m.kind == "root" {
            continue; // drawn from the log's RootPublished events
        }
        // At the last index the node had applied when it wrote the record.
        let at = by_seq.at(m.seq).unwrap_or(from);
        if (from..=to).contains(&at) {
            out.push(Mark {
                lane: r.node,
                index: at,
                class: m.kind,
                title: format!("node {}: {} (audit seq {})", r.node, m.text, m.seq),
            });
        }
    }
    restart_marks(r, &by_seq, from, to, out, spans);
}

/// Kills: every boot record after the region's first says the node stopped (killed,
/// crashed or shut down) after the last entry it had applied; shaded until it applied
/// again.
fn restart_marks(
    r: &Replay,
    by_seq: &AppliedBySeq,
    from: u64,
    to: u64,
    out: &mut Vec<Mark>,
    spans: &mut Vec<Span>,
) {
    let boots = r.audit.marks.iter().filter(|m| m.kind == "boot");
    for m in boots.skip(1) {
        let Some(at) = by_seq.at(m.seq) else {
            continue; // restarted before it applied anything: nothing to place it by
        };
        let again = by_seq.next(m.seq);
        let title = format!(
            "node {} stopped after applying index {at} (killed, crashed or shut down) and \
             started again ({}, audit seq {}); {}",
            r.node,
            m.text,
            m.seq,
            again.map_or("it applied nothing since".into(), |b| format!(
                "it applied again from index {b}"
            ))
        );
        if (from..=to).contains(&at) {
            out.push(Mark {
                lane: r.node,
                index: at,
                class: "fault kill",
                title: title.clone(),
            });
        }
        let end = again.unwrap_or(to).min(to);
        if at <= to && end >= from {
            spans.push(Span {
                lane: r.node,
                from: at.max(from),
                to: end,
                class: "kill-span",
                title,
            });
        }
    }
}

/// The alarms and device failures only a node's audit region holds, on its lane at
/// the last index it had applied when it wrote them.
fn fault_marks(r: &Replay, f: &AuditFaults, from: u64, to: u64, out: &mut Vec<Mark>) {
    let by_seq = AppliedBySeq::of(r);
    let mut push = |seq: u64, class, title: String| {
        let at = by_seq.at(seq).unwrap_or(from);
        if (from..=to).contains(&at) {
            out.push(Mark {
                lane: r.node,
                index: at,
                class,
                title: format!("{title} (audit seq {seq})"),
            });
        }
    };
    for (seq, a) in &f.hash_alarms {
        let what = match a {
            Some(a) => {
                format!(
                    "node {} diverged: its state hash at index {} is {}, the majority's {}; quarantined",
                    a.node.0,
                    a.index,
                    a.theirs.short(),
                    a.majority.short()
                ) + if a.node.0 == r.node {
                    " (this node)"
                } else {
                    ""
                }
            }
            None => "a record that does not decode".into(),
        };
        push(
            *seq,
            "alarm hash",
            format!("node {}: hash-vote alarm: {what}", r.node),
        );
    }
    for (seq, text) in &f.devices {
        push(
            *seq,
            "fault device",
            format!("node {}: device failure: {text}", r.node),
        );
    }
}

/// The `NodeDown` … `NodeUp` intervals of the whole log, per node (an open one ends
/// at `u64::MAX`).
fn down_intervals(by_index: &BTreeMap<u64, &super::replay::Step>) -> Vec<(u32, u64, u64)> {
    let mut open: BTreeMap<u32, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (&i, s) in by_index {
        for ev in &s.events {
            match ev {
                Event::NodeDown { node } => {
                    open.entry(node.0).or_insert(i);
                }
                Event::NodeUp { node } => {
                    if let Some(a) = open.remove(&node.0) {
                        out.push((node.0, a, i));
                    }
                }
                _ => {}
            }
        }
    }
    out.extend(open.into_iter().map(|(n, a)| (n, a, u64::MAX)));
    out
}

/// Partitions, derived (nothing records them durably): a node the log declared down
/// was cut off while it ran, or paused, unless it restarted. Its own audit region
/// says which: the last gap in its applied records before the `NodeDown` (since it
/// was last up) that holds a boot record (then it was a kill, drawn as such) or its
/// peer-health records of losing peers (then it was running, cut off).
fn partition_marks(
    by_index: &BTreeMap<u64, &super::replay::Step>,
    replays: &[Replay],
    faults: &[AuditFaults],
    from: u64,
    to: u64,
    out: &mut Vec<Mark>,
) {
    let mut up_before: BTreeMap<u32, u64> = BTreeMap::new();
    for (node, a, b) in down_intervals(by_index) {
        let since = up_before.insert(node, b).unwrap_or(0);
        let Some(r) = replays.iter().find(|r| r.node == node) else {
            continue; // no audit region: a kill and a partition look the same
        };
        if !(from..=to).contains(&a) {
            continue;
        }
        let boots: Vec<u64> = r
            .audit
            .marks
            .iter()
            .filter(|m| m.kind == "boot")
            .map(|m| m.seq)
            .collect();
        let peers = faults
            .iter()
            .filter(|f| f.node == Some(node))
            .flat_map(|f| &f.peers);
        let lost = |lo: u64, hi: u64| -> BTreeSet<String> {
            peers
                .clone()
                .filter(|(seq, p)| {
                    lo < *seq && *seq < hi && matches!(p.event.as_str(), "suspected" | "dead")
                })
                .map(|(_, p)| format!("node {} {}", p.peer.0, p.event))
                .collect()
        };
        let by_seq = AppliedBySeq::of(r);
        let gap = by_seq
            .gaps()
            .filter(|&(i, _, _)| since <= i && i < a)
            .filter(|&(_, lo, hi)| {
                boots.iter().any(|&b| lo < b && b < hi) || !lost(lo, hi).is_empty()
            })
            .last();
        let how = match gap {
            Some((_, lo, hi)) if boots.iter().any(|&b| lo < b && b < hi) => continue,
            Some((i, lo, hi)) => format!(
                "cut off while running: after applying index {i} its own audit records {}",
                lost(lo, hi).into_iter().collect::<Vec<_>>().join(", ")
            ),
            None => "cut off or paused: its audit region records no restart and no lost peer"
                .to_string(),
        };
        let until = if b == u64::MAX {
            "the end of the log".to_string()
        } else {
            format!("index {b}")
        };
        out.push(Mark {
            lane: node,
            index: a,
            class: "fault partition",
            title: format!(
                "node {node} declared down at index {a} until {until} without a restart: {how}"
            ),
        });
    }
}

fn term_bands(r: &Replay, from: u64, to: u64) -> Vec<(u64, u64, u64)> {
    let mut bands: Vec<(u64, u64, u64)> = Vec::new(); // (term, first, last)
    for &(_, index, term) in &r.audit.raft_applied {
        if !(from..=to).contains(&index) {
            continue;
        }
        match bands.last_mut() {
            Some(b) if b.0 == term => b.2 = b.2.max(index),
            _ => bands.push((term, index, index)),
        }
    }
    bands
}

fn page(
    replays: &[Replay],
    lanes: &[u32],
    marks: &[Mark],
    spans: &[Span],
    led: &BTreeMap<(u32, u64), (u64, u64)>,
    from: u64,
    to: u64,
) -> String {
    let span = to - from + 1;
    let px = (MAX_WIDTH_PX / span).clamp(2, 14);
    let width = LEFT_PX + span * px + 40;
    let all_lanes: Vec<u32> = std::iter::once(0).chain(lanes.iter().copied()).collect();
    let height = TOP_PX + all_lanes.len() as u64 * LANE_PX + 60;
    let x = |i: u64| LEFT_PX + (i.saturating_sub(from)) * px + px / 2;
    let y = |lane: u32| {
        TOP_PX + all_lanes.iter().position(|&l| l == lane).unwrap_or(0) as u64 * LANE_PX
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    let _ = write!(
        svg,
        r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#fbfbf8"/>"##
    );
    // Index axis.
    let step = (span / 20).max(1);
    let mut i = from;
    while i <= to {
        let _ = write!(
            svg,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" class="axis">{i}</text>"##,
            x(i),
            TOP_PX - 6,
            height - 40,
            TOP_PX - 10
        );
        i += step;
    }
    for &lane in &all_lanes {
        let top = y(lane);
        let name = if lane == 0 {
            "cluster".to_string()
        } else {
            format!("node {lane}")
        };
        let _ = write!(
            svg,
            r##"<g class="lane" id="lane-{}" data-node="{lane}"><rect x="{LEFT_PX}" y="{}" width="{}" height="{}" fill="#f1f1ec" stroke="#ccc"/><text x="8" y="{}" class="lane-name">{name}</text>"##,
            if lane == 0 {
                "cluster".to_string()
            } else {
                format!("node-{lane}")
            },
            top + 4,
            span * px,
            LANE_PX - 8,
            top + LANE_PX / 2 + 4
        );
        if let Some(r) = replays.iter().find(|r| r.node == lane) {
            for (term, a, b) in term_bands(r, from, to) {
                let hue = (term * 67) % 360;
                let _ = write!(
                    svg,
                    r#"<rect class="term" x="{}" y="{}" width="{}" height="8" fill="hsl({hue},55%,70%)"><title>node {lane}: term {term}, entries {a}..={b}</title></rect>"#,
                    x(a) - px / 2,
                    top + 6,
                    (b - a + 1) * px
                );
            }
        }
        for (&(node, term), &(a, b)) in led {
            if node == lane && lane != 0 {
                let _ = write!(
                    svg,
                    r##"<rect class="leader" x="{}" y="{}" width="{}" height="5" fill="#333"><title>node {lane} led term {term} (stamped entries {a}..={b})</title></rect>"##,
                    x(a) - px / 2,
                    top + 15,
                    (b - a + 1) * px
                );
            }
        }
        down_spans(&mut svg, marks, lane, top, to, &x);
        for sp in spans.iter().filter(|sp| sp.lane == lane) {
            let _ = write!(
                svg,
                r##"<rect class="{}" x="{}" y="{}" width="{}" height="{}" fill="#555" fill-opacity="0.18"><title>{}</title></rect>"##,
                sp.class,
                x(sp.from),
                top + 4,
                x(sp.to).saturating_sub(x(sp.from)).max(2),
                LANE_PX - 8,
                esc(&sp.title)
            );
        }
        svg.push_str("</g>");
    }
    for m in marks {
        svg.push_str(&mark_svg(m, x(m.index), y(m.lane)));
    }
    svg.push_str("</svg>");
    let summary: Vec<String> = replays
        .iter()
        .map(|r| {
            format!(
                "node {}: {} entries replayed, {}",
                r.node,
                r.steps.len(),
                r.verdict
            )
        })
        .collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>XDV run: log {from}..={to}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #fff; color: #222; }}
.axis {{ font-size: 10px; fill: #777; text-anchor: middle; }}
.lane-name {{ font-size: 13px; font-weight: bold; fill: #222; }}
.legend span {{ margin-right: 14px; }}
</style></head>
<body>
<h1>XDV run timeline</h1>
<p>Log indices {from}..={to}; {lanes} node lanes; {marks} marks. {summary}</p>
<p class="legend"><span>▲ placed</span><span>● completed</span><span>✕ re-placed</span><span>▼ down / ▲ up (shaded: down)</span><span>◆ contract</span><span>■ root published</span><span>| applied (red: replay disagrees)</span><span>B boot · ! audit region alarm · D damage · F full · H halt · R audit-root alarm</span><span>bands: term (colour), leader (dark bar)</span></p>
{LEGEND_FAULTS}
{svg}
</body></html>
"#,
        lanes = lanes.len(),
        marks = marks.len(),
        summary = esc(&summary.join("; "))
    )
}

fn down_spans(
    svg: &mut String,
    marks: &[Mark],
    lane: u32,
    top: u64,
    to: u64,
    x: &dyn Fn(u64) -> u64,
) {
    let mut down_at: Option<u64> = None;
    let mut spans = Vec::new();
    for m in marks.iter().filter(|m| m.lane == lane) {
        match m.class {
            "down" => down_at = down_at.or(Some(m.index)),
            "up" => {
                if let Some(a) = down_at.take() {
                    spans.push((a, m.index));
                }
            }
            _ => {}
        }
    }
    if let Some(a) = down_at {
        spans.push((a, to));
    }
    for (a, b) in spans {
        let _ = write!(
            svg,
            r##"<rect class="down-span" x="{}" y="{}" width="{}" height="{}" fill="#e53" fill-opacity="0.15"><title>node {lane} down from index {a} to {b}</title></rect>"##,
            x(a),
            top + 4,
            x(b).saturating_sub(x(a)).max(2),
            LANE_PX - 8
        );
    }
}

fn mark_svg(m: &Mark, cx: u64, top: u64) -> String {
    let t = esc(&m.title);
    let c = m.class;
    let mid = top + LANE_PX / 2;
    match c {
        "applied" | "diverged" => {
            let colour = if c == "applied" { "#4a7" } else { "#d22" };
            format!(
                r#"<line class="mark {c}" x1="{cx}" y1="{}" x2="{cx}" y2="{}" stroke="{colour}" stroke-width="2"><title>{t}</title></line>"#,
                top + 22,
                top + 30
            )
        }
        "placed" => format!(
            r##"<path class="mark placed" d="M{cx} {} l5 9 h-10 z" fill="#26c"><title>{t}</title></path>"##,
            mid - 2
        ),
        "completed" => format!(
            r##"<circle class="mark completed" cx="{cx}" cy="{}" r="4" fill="#2a5"><title>{t}</title></circle>"##,
            mid + 14
        ),
        "replaced" => format!(
            r##"<text class="mark replaced" x="{cx}" y="{}" fill="#c60" text-anchor="middle">✕<title>{t}</title></text>"##,
            mid + 6
        ),
        "down" | "up" => format!(
            r##"<text class="mark {c}" x="{cx}" y="{}" fill="{}" text-anchor="middle" font-size="14">{}<title>{t}</title></text>"##,
            mid + 4,
            if c == "down" { "#d22" } else { "#2a5" },
            if c == "down" { "▼" } else { "▲" }
        ),
        "root" => format!(
            r##"<rect class="mark root" x="{}" y="{}" width="6" height="6" fill="#849"><title>{t}</title></rect>"##,
            cx - 3,
            top + LANE_PX - 20
        ),
        "contract" => format!(
            r##"<path class="mark contract" d="M{cx} {} l5 5 l-5 5 l-5 -5 z" fill="#a50"><title>{t}</title></path>"##,
            mid - 5
        ),
        "alarm hash" => format!(
            r##"<g class="mark alarm hash"><circle cx="{cx}" cy="{}" r="7" fill="#d22" stroke="#fff"/><text x="{cx}" y="{}" fill="#fff" font-size="11" font-weight="bold" text-anchor="middle">!</text><title>{t}</title></g>"##,
            top + 17,
            top + 21
        ),
        "fault kill" => format!(
            r##"<path class="mark fault kill" d="M{} {} l12 12 m0 -12 l-12 12" stroke="#d22" stroke-width="3"><title>{t}</title></path>"##,
            cx - 6,
            top + 11
        ),
        "fault partition" => format!(
            r##"<g class="mark fault partition"><circle cx="{cx}" cy="{}" r="6" fill="#fff" stroke="#e80" stroke-width="2"/><path d="M{} {} l9 -9" stroke="#e80" stroke-width="2"/><title>{t}</title></g>"##,
            top + 17,
            cx - 4,
            top + 21
        ),
        "fault device" => format!(
            r##"<g class="mark fault device"><rect x="{}" y="{}" width="11" height="11" fill="#fff" stroke="#70c" stroke-width="2"/><path d="M{} {} l11 -11" stroke="#70c" stroke-width="2"/><title>{t}</title></g>"##,
            cx - 5,
            top + 11,
            cx - 5,
            top + 22
        ),
        other => {
            let letter = match other {
                "boot" => "B",
                "alarm" => "!",
                "damage" => "D",
                "full" => "F",
                "root-alarm" => "R",
                _ => "H",
            };
            format!(
                r##"<text class="mark {other}" x="{cx}" y="{}" fill="#b00" font-weight="bold" text-anchor="middle" font-size="12">{letter}<title>{t}</title></text>"##,
                top + LANE_PX - 10
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_audit::AuditLog;
    use xdv_types::{CoreId, TaskId, Timestamp};

    #[test]
    fn audit_faults_are_read_and_bad_bytes_do_not_stop_the_read() {
        let mut region = vec![0u8; 1 << 16];
        let (mut log, _) = AuditLog::open(&mut region, NodeId(3)).unwrap();
        let alarm = (32u64, NodeId(2), Hash32([1; 32]), Hash32([2; 32]));
        let peer = PeerRecordBody {
            peer: NodeId(1),
            event: "dead".into(),
            at_ms: 9_500,
            timeout: None,
        };
        let records = [
            (AUDIT_TAG_HASH_ALARM, mgmt::encode(&alarm)),
            (AUDIT_TAG_HASH_ALARM, vec![0xff; 3]),
            (AUDIT_TAG_PEER, mgmt::encode(&peer)),
            (AUDIT_TAG_PEER, vec![0xff]),
            (AUDIT_TAG_ACCEL, b"q0: device failed: no heartbeat".to_vec()),
            (AUDIT_TAG_ACCEL, b"t1 attempt 1: executed".to_vec()),
        ];
        for (tag, bytes) in records {
            let body = RecordBody::Custom { tag, bytes };
            log.append(Timestamp(1), CoreId(0), &body).unwrap();
        }
        drop(log);
        let f = read_faults(&region);
        assert_eq!(f.node, Some(3));
        let want = HashAlarm {
            index: 32,
            node: NodeId(2),
            theirs: Hash32([1; 32]),
            majority: Hash32([2; 32]),
        };
        assert_eq!(f.hash_alarms, vec![(0, Some(want)), (1, None)]);
        assert_eq!(f.peers, vec![(2, peer)]);
        assert_eq!(
            f.devices,
            vec![(4, "q0: device failed: no heartbeat".to_string())]
        );
        // Any bytes: no panic, nothing read.
        let f = read_faults(&[0x5a; 4096]);
        assert!(f.node.is_none() && f.hash_alarms.is_empty() && f.devices.is_empty());
    }

    #[test]
    fn device_failures_and_hash_mismatches_in_the_log_are_marks() {
        let mut out = Vec::new();
        let failed = Event::TaskCompleted {
            task: TaskId(7),
            node: NodeId(2),
            outcome: Outcome::DeviceFailed("q0: reset".into()),
            ticks: 0,
            output_hash: Hash32([0; 32]),
        };
        event_marks(40, &failed, &mut out);
        let mismatch = Event::HashMismatch {
            index: 32,
            node: NodeId(3),
            theirs: Hash32([1; 32]),
            majority: Hash32([2; 32]),
        };
        event_marks(41, &mismatch, &mut out);
        let got: Vec<(u32, u64, &str)> = out.iter().map(|m| (m.lane, m.index, m.class)).collect();
        assert_eq!(
            got,
            vec![
                (2, 40, "fault device"),
                (2, 40, "completed"),
                (0, 41, "alarm hash")
            ]
        );
        assert!(out[0].title.contains("q0: reset"), "{}", out[0].title);
        assert!(
            out[2].title.contains("node 3 quarantined"),
            "{}",
            out[2].title
        );
        let svg = mark_svg(&out[0], 50, 40);
        assert!(svg.starts_with(r#"<g class="mark fault device">"#), "{svg}");
    }
}
