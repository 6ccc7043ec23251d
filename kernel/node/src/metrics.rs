//! The node's metrics in the Prometheus text exposition format (version 0.0.4), the
//! answer to the operator's `Request::Metrics` (`cargo xdv metrics <node>`).
//!
//! Pure: the text is a function of the node's own state — Raft, the replicated cluster
//! state (tasks, tenants, members, contracts, published audit roots), the node's
//! counters — and of [`LocalMetrics`], the numbers only the driver knows (the audit
//! region's fill, the NICs, the run queues), which the kernel hands in every loop
//! iteration. Families come in a fixed order and label values in B-tree order, so
//! the same state gives the same bytes. Names and the family list: `docs/cluster.md`
//! § Metrics.

use crate::durable::Region;
use crate::node::Node;
use alloc::string::String;
use core::fmt::Write;
use xdv_cluster::mgmt::TaskState;
use xdv_raft::Role;

/// What the driver (the kernel's main loop) knows and the node does not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalMetrics {
    /// The audit region is open (false: audit disabled on this node).
    pub audit_enabled: bool,
    /// Bytes of the audit region in use and in total.
    pub audit_used_bytes: u64,
    pub audit_region_bytes: u64,
    /// Bulk records the full region refused since boot.
    pub audit_bulk_refused: u64,
    /// The region is past its high-water mark or full.
    pub audit_alarm: bool,
    /// The NICs' counters: the peer NIC (`nic="peer"`) and the management NIC
    /// (`nic="mgmt"`); `None` where the node has no such NIC.
    pub nics: [Option<NicMetrics>; 2],
    /// Authenticated peer connections now, and frames over all peer connections.
    pub peers_up: u64,
    pub peer_frames_in: u64,
    pub peer_frames_out: u64,
    /// Cluster tasks waiting for and running on the application processors.
    pub tasks_queued: u64,
    pub tasks_running: u64,
    /// Cluster task batches' tasks started and finished on this node since boot.
    pub tasks_started: u64,
    pub tasks_finished: u64,
    /// Task modules compiled, and validations that reused a compiled module (the
    /// sandbox's module cache).
    pub modules_compiled: u64,
    pub modules_reused: u64,
    /// Heap bytes in use and in total.
    pub heap_used_bytes: u64,
    pub heap_bytes: u64,
}

/// One NIC's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicMetrics {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_drops: u64,
    pub tx_drops: u64,
    pub errors: u64,
}

/// (name, help, the counter) of one per-NIC family.
type NicFamily = (&'static str, &'static str, fn(&NicMetrics) -> u64);

/// The `nic` label of [`LocalMetrics::nics`]' entries.
const NIC_NAMES: [&str; 2] = ["peer", "mgmt"];

/// A Prometheus text exposition being written: one `# HELP` and `# TYPE` line per
/// family, then its samples.
struct Exposition {
    text: String,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"");
                escape_into(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A gauge in seconds from milliseconds, written exactly (`12.345`).
    fn seconds(&mut self, name: &str, help: &str, ms: u64) {
        self.family(name, Kind::Gauge, help);
        let _ = writeln!(self.text, "{name} {}.{:03}", ms / 1000, ms % 1000);
    }
}

/// A label value as the exposition format escapes it: `\`, `"` and newline.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

const ROLES: [(&str, Option<Role>); 5] = [
    ("follower", Some(Role::Follower)),
    ("pre-candidate", Some(Role::PreCandidate)),
    ("candidate", Some(Role::Candidate)),
    ("leader", Some(Role::Leader)),
    ("none", None),
];

const TASK_STATES: [(&str, TaskState); 4] = [
    ("pending", TaskState::Pending),
    ("running", TaskState::Running),
    ("done", TaskState::Done),
    ("refused", TaskState::Refused),
];

fn num(n: u64) -> String {
    alloc::format!("{n}")
}

/// The exposition of `node` with the driver's `local` numbers.
pub fn render<R: Region>(node: &Node<R>, local: &LocalMetrics) -> String {
    use Kind::{Counter, Gauge};
    let mut e = Exposition {
        text: String::new(),
    };
    let me = num(u64::from(node.id().0));
    let status = node.raft().map(|r| r.status());
    let d = node.state().data();
    let c = node.counters();

    // ---- Raft ----
    e.family(
        "xdv_raft_role",
        Gauge,
        "1 for this node's Raft role (none: halted or no cluster), 0 for the others.",
    );
    let role = status.as_ref().map(|s| s.role);
    for (name, r) in ROLES {
        e.sample("xdv_raft_role", &[("role", name)], u64::from(role == r));
    }
    e.one(
        "xdv_raft_halted",
        Gauge,
        "1 when the node halted (its durable Raft state could not be trusted).",
        u64::from(node.halted().is_some()),
    );
    let s = |f: fn(&xdv_raft::Status) -> u64| status.as_ref().map_or(0, f);
    e.one("xdv_raft_term", Gauge, "Current Raft term.", s(|s| s.term));
    e.one(
        "xdv_raft_leader",
        Gauge,
        "Node id of the leader this node knows (0: none).",
        s(|s| s.leader.map_or(0, |l| u64::from(l.0))),
    );
    e.one(
        "xdv_raft_commit_index",
        Gauge,
        "Highest committed log index.",
        s(|s| s.commit),
    );
    e.one(
        "xdv_raft_last_index",
        Gauge,
        "Last index in this node's log.",
        s(|s| s.last_index),
    );
    e.one(
        "xdv_raft_applied_index",
        Gauge,
        "Last log index applied to the cluster state.",
        d.applied_index,
    );
    let (p50, p99, n) = node.commit_latency_ms();
    e.seconds(
        "xdv_raft_commit_latency_p50_seconds",
        "Median propose-to-apply latency of this node's recent own proposals.",
        p50,
    );
    e.seconds(
        "xdv_raft_commit_latency_p99_seconds",
        "99th percentile propose-to-apply latency of this node's recent own proposals.",
        p99,
    );
    e.one(
        "xdv_raft_commit_latency_samples",
        Gauge,
        "Proposals the commit latency quantiles are computed over.",
        n,
    );
    e.one(
        "xdv_node_applied_entries_total",
        Counter,
        "Committed entries this node applied since boot.",
        c.applied_entries,
    );
    e.one(
        "xdv_raft_bad_messages_total",
        Counter,
        "Raft messages from peers that did not decode.",
        c.raft_bad_messages,
    );
    e.one(
        "xdv_node_outbox_dropped_total",
        Counter,
        "Outputs dropped because the node's outbox was full.",
        c.outbox_dropped,
    );
    e.one(
        "xdv_node_snapshots_restored_total",
        Counter,
        "Snapshots this node installed since boot.",
        c.snapshots_restored,
    );

    // ---- management ----
    e.one(
        "xdv_mgmt_refused_requests_total",
        Counter,
        "Management requests this node refused since boot.",
        c.refused_requests,
    );
    e.one(
        "xdv_mgmt_forwarded_in_total",
        Counter,
        "Requests and reports peers forwarded to this node since boot.",
        c.forwarded_in,
    );
    e.one(
        "xdv_mgmt_forwards_dropped_total",
        Counter,
        "Forwarded requests this node dropped since boot.",
        c.forwards_dropped,
    );
    e.one(
        "xdv_mgmt_parked_requests",
        Gauge,
        "Client requests waiting for their entry to be applied.",
        node.parked() as u64,
    );

    // ---- cluster state (the same on every node at the same applied index) ----
    let sc = &d.counters;
    e.one(
        "xdv_cluster_entries_total",
        Counter,
        "Entries the cluster state applied (replicated).",
        sc.entries,
    );
    e.one(
        "xdv_cluster_invalid_entries_total",
        Counter,
        "Entries the cluster state ignored as invalid (replicated).",
        sc.invalid_entries,
    );
    e.one(
        "xdv_cluster_tasks_refused_total",
        Counter,
        "Tasks the cluster refused at submission (replicated).",
        sc.tasks_refused,
    );
    e.one(
        "xdv_cluster_tasks_failed_total",
        Counter,
        "Tasks ended Failed after every node running them went down (replicated).",
        sc.tasks_failed,
    );
    e.one(
        "xdv_cluster_stale_completions_total",
        Counter,
        "Completions that answered an older attempt (replicated).",
        sc.stale_completions,
    );
    e.one(
        "xdv_cluster_contracts_refused_total",
        Counter,
        "Contracts the cluster refused (replicated).",
        sc.contracts_refused,
    );
    e.one(
        "xdv_cluster_contracts",
        Gauge,
        "Contracts in the cluster state.",
        d.contracts.len() as u64,
    );
    e.family(
        "xdv_cluster_tasks",
        Gauge,
        "Tasks the cluster state holds (recent finished ones are retained), by state.",
    );
    let mut by_state = [0u64; 4];
    for t in d.tasks.values() {
        let st = TaskState::of(&t.status);
        if let Some(i) = TASK_STATES.iter().position(|(_, s)| *s == st) {
            by_state[i] += 1;
        }
    }
    for (i, (name, _)) in TASK_STATES.iter().enumerate() {
        e.sample("xdv_cluster_tasks", &[("state", name)], by_state[i]);
    }
    e.family(
        "xdv_cluster_member_up",
        Gauge,
        "1 when the cluster considers the member up.",
    );
    for (n, r) in &d.nodes {
        e.sample(
            "xdv_cluster_member_up",
            &[("node", &num(u64::from(n.0)))],
            u64::from(r.up),
        );
    }
    e.family(
        "xdv_cluster_member_quarantined",
        Gauge,
        "1 when the member's state hash disagreed with the majority.",
    );
    for (n, r) in &d.nodes {
        e.sample(
            "xdv_cluster_member_quarantined",
            &[("node", &num(u64::from(n.0)))],
            u64::from(r.quarantined),
        );
    }
    e.family(
        "xdv_cluster_member_tasks_assigned",
        Gauge,
        "Tasks assigned to the member and not completed.",
    );
    for (n, r) in &d.nodes {
        e.sample(
            "xdv_cluster_member_tasks_assigned",
            &[("node", &num(u64::from(n.0)))],
            u64::from(r.assigned),
        );
    }
    e.family(
        "xdv_cluster_member_tasks_completed_total",
        Counter,
        "Tasks the member completed (replicated).",
    );
    for (n, r) in &d.nodes {
        e.sample(
            "xdv_cluster_member_tasks_completed_total",
            &[("node", &num(u64::from(n.0)))],
            r.completed,
        );
    }

    // ---- per tenant ----
    e.family(
        "xdv_tenant_tasks_in_flight",
        Gauge,
        "The tenant's tasks pending or running.",
    );
    for (t, r) in &d.tenants {
        e.sample(
            "xdv_tenant_tasks_in_flight",
            &[("tenant", &num(u64::from(t.0)))],
            u64::from(r.in_flight),
        );
    }
    e.family(
        "xdv_tenant_tasks_submitted_total",
        Counter,
        "Tasks the tenant submitted (accepted into the log).",
    );
    for (t, r) in &d.tenants {
        e.sample(
            "xdv_tenant_tasks_submitted_total",
            &[("tenant", &num(u64::from(t.0)))],
            r.submitted,
        );
    }
    e.family(
        "xdv_tenant_budget_ticks_total",
        Counter,
        "Tick budget the tenant's accepted tasks asked for.",
    );
    for (t, r) in &d.tenants {
        e.sample(
            "xdv_tenant_budget_ticks_total",
            &[("tenant", &num(u64::from(t.0)))],
            r.budget_used_ticks,
        );
    }
    e.family(
        "xdv_tenant_tasks",
        Gauge,
        "The tenant's tasks the cluster state holds, by state.",
    );
    for t in d.tenants.keys() {
        let mut counts = [0u64; 4];
        for r in d.tasks.values().filter(|r| r.spec.tenant == *t) {
            let st = TaskState::of(&r.status);
            if let Some(i) = TASK_STATES.iter().position(|(_, s)| *s == st) {
                counts[i] += 1;
            }
        }
        let id = num(u64::from(t.0));
        for (i, (name, _)) in TASK_STATES.iter().enumerate() {
            e.sample(
                "xdv_tenant_tasks",
                &[("tenant", &id), ("state", name)],
                counts[i],
            );
        }
    }

    // ---- this node's tasks ----
    e.one(
        "xdv_node_tasks_dispatched_total",
        Counter,
        "Tasks the cluster placed on this node and it started since boot.",
        c.tasks_dispatched,
    );
    e.one(
        "xdv_node_completions_proposed_total",
        Counter,
        "Task completions this node reported since boot.",
        c.completions_proposed,
    );
    e.one(
        "xdv_node_completion_groups_proposed_total",
        Counter,
        "Entries that carried more than one of this node's completions since boot.",
        c.completion_groups_proposed,
    );
    e.one(
        "xdv_node_submission_groups_proposed_total",
        Counter,
        "Entries this node proposed as leader that carried more than one request's submissions since boot.",
        c.submission_groups_proposed,
    );
    e.one(
        "xdv_node_tasks_unconfirmed",
        Gauge,
        "Completions reported and not yet applied.",
        node.unconfirmed() as u64,
    );
    e.one(
        "xdv_node_tasks_queued",
        Gauge,
        "Cluster tasks waiting for the application processors.",
        local.tasks_queued,
    );
    e.one(
        "xdv_node_tasks_running",
        Gauge,
        "Cluster tasks running on the application processors.",
        local.tasks_running,
    );
    e.one(
        "xdv_node_tasks_started_total",
        Counter,
        "Cluster tasks started on the run queues since boot.",
        local.tasks_started,
    );
    e.one(
        "xdv_node_tasks_finished_total",
        Counter,
        "Cluster tasks finished on the run queues since boot.",
        local.tasks_finished,
    );
    e.one(
        "xdv_node_task_modules_compiled_total",
        Counter,
        "Task modules compiled since boot (a module the cache holds is not compiled again).",
        local.modules_compiled,
    );
    e.one(
        "xdv_node_task_modules_reused_total",
        Counter,
        "Task validations that reused a module compiled for an earlier task.",
        local.modules_reused,
    );

    // ---- audit ----
    let v = node.view();
    e.one(
        "xdv_audit_enabled",
        Gauge,
        "1 when this node's audit region is open.",
        u64::from(local.audit_enabled),
    );
    e.one(
        "xdv_audit_records",
        Gauge,
        "Records in this node's audit chain.",
        v.audit_records,
    );
    e.one(
        "xdv_audit_used_bytes",
        Gauge,
        "Bytes of the audit region in use.",
        local.audit_used_bytes,
    );
    e.one(
        "xdv_audit_region_bytes",
        Gauge,
        "Size of the audit region.",
        local.audit_region_bytes,
    );
    e.one(
        "xdv_audit_alarm",
        Gauge,
        "1 when the audit region is past its high-water mark or full.",
        u64::from(local.audit_alarm),
    );
    e.one(
        "xdv_audit_bulk_refused_total",
        Counter,
        "Bulk audit records the region refused since boot.",
        local.audit_bulk_refused,
    );
    e.family(
        "xdv_audit_published_records",
        Gauge,
        "Records covered by the member's latest published Merkle root (replicated).",
    );
    for (n, r) in &d.nodes {
        e.sample(
            "xdv_audit_published_records",
            &[("node", &num(u64::from(n.0)))],
            r.audit.map_or(0, |a| a.0),
        );
    }

    // ---- network ----
    let nic_families: [NicFamily; 7] = [
        ("xdv_net_rx_frames_total", "Frames the NIC received.", |n| {
            n.rx_frames
        }),
        ("xdv_net_tx_frames_total", "Frames the NIC sent.", |n| {
            n.tx_frames
        }),
        ("xdv_net_rx_bytes_total", "Bytes the NIC received.", |n| {
            n.rx_bytes
        }),
        ("xdv_net_tx_bytes_total", "Bytes the NIC sent.", |n| {
            n.tx_bytes
        }),
        (
            "xdv_net_rx_drops_total",
            "Frames the NIC dropped on receive.",
            |n| n.rx_drops,
        ),
        (
            "xdv_net_tx_drops_total",
            "Frames the NIC dropped on send.",
            |n| n.tx_drops,
        ),
        ("xdv_net_errors_total", "NIC errors.", |n| n.errors),
    ];
    for (name, help, value) in nic_families {
        e.family(name, Counter, help);
        for (nic, m) in NIC_NAMES.iter().zip(&local.nics) {
            if let Some(m) = m {
                e.sample(name, &[("nic", nic)], value(m));
            }
        }
    }
    for (name, help, value) in [
        (
            "xdv_peer_frames_in_total",
            "Frames received on peer connections.",
            local.peer_frames_in,
        ),
        (
            "xdv_peer_frames_out_total",
            "Frames sent on peer connections.",
            local.peer_frames_out,
        ),
    ] {
        e.one(name, Counter, help, value);
    }
    e.one(
        "xdv_peers_up",
        Gauge,
        "Authenticated peer connections heard from recently.",
        local.peers_up,
    );

    // ---- the node ----
    e.family(
        "xdv_node_info",
        Gauge,
        "Always 1; labels name the node and the state hash at its applied index.",
    );
    let hash = alloc::format!("{}", v.state_hash);
    e.sample("xdv_node_info", &[("node", &me), ("state_hash", &hash)], 1);
    e.one(
        "xdv_heap_used_bytes",
        Gauge,
        "Heap bytes in use.",
        local.heap_used_bytes,
    );
    e.one("xdv_heap_bytes", Gauge, "Heap size.", local.heap_bytes);
    e.text
}

/// Checks `text` against the text exposition format as [`render`] writes it (a
/// subset of format 0.0.4): every family has `# HELP` then `# TYPE` (counter or gauge)
/// before its samples and appears once; names are `[a-zA-Z_:][a-zA-Z0-9_:]*` and a
/// counter's end in `_total`; a sample is `name[{label="value",...}] value` with a
/// name of the current family, escaped label values and a number; no series repeats.
/// Returns the number of families. (`promtool check metrics` is the reference; this
/// runs where it is not installed.)
pub fn check_exposition(text: &str) -> Result<usize, String> {
    use alloc::collections::BTreeSet;
    use alloc::format;
    let name_ok = |n: &str| {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    };
    let mut families = BTreeSet::new();
    let mut series = BTreeSet::new();
    let mut current: Option<(String, bool)> = None; // (name, typed)
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line}", i + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text"))?;
            if !name_ok(name) || help.trim().is_empty() {
                return Err(at("bad HELP"));
            }
            if !families.insert(String::from(name)) {
                return Err(at("family repeated"));
            }
            current = Some((String::from(name), false));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without kind"))?;
            match &mut current {
                Some((n, typed)) if n == name && !*typed => *typed = true,
                _ => return Err(at("TYPE not right after its HELP")),
            }
            match kind {
                "counter" if !name.ends_with("_total") => {
                    return Err(at("a counter's name must end in _total"));
                }
                "counter" | "gauge" => {}
                _ => return Err(at("unknown type")),
            }
        } else if line.starts_with('#') || line.is_empty() {
            return Err(at("unexpected comment or blank line"));
        } else {
            let Some((family, true)) = &current else {
                return Err(at("sample before its HELP and TYPE"));
            };
            let (key, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
            let name = key.split('{').next().unwrap_or("");
            if name != family {
                return Err(at("sample of another family"));
            }
            if let Some(labels) = key.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .ok_or_else(|| at("bad label braces"))?;
                let mut rest = inner;
                while !rest.is_empty() {
                    let (k, v) = rest.split_once("=\"").ok_or_else(|| at("bad label"))?;
                    if !name_ok(k) || k.starts_with("__") {
                        return Err(at("bad label name"));
                    }
                    // The value runs to the first unescaped quote.
                    let mut end = None;
                    let mut escaped = false;
                    for (j, c) in v.char_indices() {
                        match (escaped, c) {
                            (true, '\\' | '"' | 'n') => escaped = false,
                            (true, _) => return Err(at("bad escape in a label value")),
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = Some(j);
                                break;
                            }
                            (false, _) => {}
                        }
                    }
                    let end = end.ok_or_else(|| at("unterminated label value"))?;
                    rest = &v[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
            }
            let number = value.parse::<f64>().is_ok() || matches!(value, "NaN" | "+Inf" | "-Inf");
            if !number {
                return Err(at("value is not a number"));
            }
            if !series.insert(String::from(key)) {
                return Err(at("series repeated"));
            }
        }
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    Ok(families.len())
}

#[cfg(test)]
mod tests {
    use super::{check_exposition, escape_into};

    #[test]
    fn the_checker_refuses_what_promtool_refuses() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 3\n";
        assert_eq!(check_exposition(good), Ok(1));
        for bad in [
            "# HELP a A.\n# TYPE a counter\na 1\n", // counter without _total
            "a 1\n",                                // no HELP/TYPE
            "# HELP a A.\n# TYPE a gauge\na one\n", // not a number
            "# HELP a A.\n# TYPE a gauge\na 1\na 2\n", // repeated series
            "# HELP a A.\n# TYPE a gauge\nb 1\n",   // another family
            "# HELP a A.\n# TYPE a gauge\na{x=\"1} 1\n", // unterminated
            "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\n", // family twice
            "# HELP a A.\n# TYPE a gauge\na 1",     // no final newline
        ] {
            assert!(check_exposition(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = alloc::string::String::new();
        escape_into(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }
}
