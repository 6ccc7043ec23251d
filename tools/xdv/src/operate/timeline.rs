//! A picture of a run (`cargo xdv timeline`): one self-contained HTML page with an
//! inline SVG, one lane per node over a range of log indices, drawn from the replayed
//! logs and each node's audit records. No scripts, no fonts, no network fetches.
//!
//! On a node's lane: its terms (band colour per term, from its `RaftApplied` records),
//! the terms it led (a dark bar: the entries it stamped as leader), the entries it
//! applied (ticks; red where the replay disagreed with its record), task placements
//! (▲) and completions (●) on the node that ran them, re-placements, node down
//! (shaded from down to up), published audit roots, and its audit marks (boots,
//! alarms, damage, a full region, a halt) at the last index it had applied then.
//! Contract events go on a "cluster" lane. Every mark carries a `<title>` (hover).

use super::replay::Replay;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use xdv_cluster::Event;
use xdv_types::NodeId;

const LANE_PX: u64 = 64;
const LEFT_PX: u64 = 110;
const TOP_PX: u64 = 40;
const MAX_WIDTH_PX: u64 = 16_000;

/// One drawn mark (kept for the JSON summary and tests).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    /// Lane: a node id, or 0 for the cluster lane.
    pub lane: u32,
    pub index: u64,
    /// CSS class: `applied`, `diverged`, `placed`, `completed`, `replaced`, `down`,
    /// `up`, `root`, `contract`, `boot`, `alarm`, `damage`, `full`, `halt`.
    pub class: &'static str,
    pub title: String,
}

/// The page and what is on it.
pub struct Timeline {
    pub html: String,
    pub marks: Vec<Mark>,
    pub lanes: Vec<u32>,
    pub from: u64,
    pub to: u64,
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
        } => m(
            *node,
            "completed",
            format!("{task} completed on node {}: {outcome}", node.0),
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

/// Builds the page for `replays` over log indices `from..=to` (`None`: all).
pub fn render(replays: &[Replay], from: Option<u64>, to: Option<u64>) -> Timeline {
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
    for r in replays {
        node_marks(r, from, to, &mut marks);
    }
    lanes.extend(marks.iter().map(|m| m.lane).filter(|&l| l != 0));
    let lanes: Vec<u32> = lanes.into_iter().collect();
    marks.sort();
    let html = page(replays, &lanes, &marks, &led, from, to);
    Timeline {
        html,
        marks,
        lanes,
        from,
        to,
    }
}

/// A node's own marks: applied entries and its audit marks.
fn node_marks(r: &Replay, from: u64, to: u64, out: &mut Vec<Mark>) {
    let host: BTreeMap<u64, _> = r.steps.iter().map(|s| (s.index, s.hash)).collect();
    let mut applied_by_seq: Vec<(u64, u64)> = Vec::new();
    for a in &r.audit.applied {
        applied_by_seq.push((a.seq, a.index));
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
        let at = applied_by_seq
            .iter()
            .take_while(|(seq, _)| *seq < m.seq)
            .map(|(_, i)| *i)
            .last()
            .unwrap_or(from);
        if (from..=to).contains(&at) {
            out.push(Mark {
                lane: r.node,
                index: at,
                class: m.kind,
                title: format!("node {}: {} (audit seq {})", r.node, m.text, m.seq),
            });
        }
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
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
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
<p class="legend"><span>▲ placed</span><span>● completed</span><span>✕ re-placed</span><span>▼ down / ▲ up (shaded: down)</span><span>◆ contract</span><span>■ root published</span><span>| applied (red: replay disagrees)</span><span>B boot · ! alarm · D damage · F full · H halt</span><span>bands: term (colour), leader (dark bar)</span></p>
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
        other => {
            let letter = match other {
                "boot" => "B",
                "alarm" => "!",
                "damage" => "D",
                "full" => "F",
                _ => "H",
            };
            format!(
                r##"<text class="mark {other}" x="{cx}" y="{}" fill="#b00" font-weight="bold" text-anchor="middle" font-size="12">{letter}<title>{t}</title></text>"##,
                top + LANE_PX - 10
            )
        }
    }
}
