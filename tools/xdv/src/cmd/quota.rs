//! `cargo xdv quota`: the operator sets, shows or clears a tenant's quota.
//!
//! The management API sets a whole quota at once and has no request to read one, so
//! the CLI keeps what it last set for each tenant in the cluster directory
//! (`quotas.json`; the operator key lives only in that directory, so every change goes
//! through it). Limits not given on the command line keep their current value; a
//! tenant without a quota has no in-flight or budget limit and the sandbox maxima.

use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use xdv::cluster::ClusterState;
use xdv::mgmt::{self, Keys};
use xdv_cluster::{MAX_TASK_MEMORY_PAGES, MAX_TASK_TABLE_ELEMENTS, Quota};

#[derive(clap::Args)]
pub struct QuotaArgs {
    /// Tenant id.
    tenant: u32,
    /// Most tasks pending or running at once: a number or `unlimited`.
    #[arg(long, value_parser = parse_limit_u32)]
    max_in_flight: Option<u32>,
    /// Most tick budget accepted in total: a number or `unlimited`.
    #[arg(long, value_parser = parse_limit_u64)]
    max_budget: Option<u64>,
    /// Memory one task may grow to, in 64 KiB pages (0-16).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=MAX_TASK_MEMORY_PAGES as i64))]
    memory_pages: Option<u32>,
    /// Table elements one task may grow to (0-1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=MAX_TASK_TABLE_ELEMENTS as i64))]
    table_elements: Option<u32>,
    /// Most Q containers the tenant may hold in contracts at once: a number or `unlimited`.
    #[arg(long, value_parser = parse_limit_u32)]
    max_q_units: Option<u32>,
    /// Most Φ windows the tenant may hold in contracts at once: a number or `unlimited`.
    #[arg(long, value_parser = parse_limit_u32)]
    max_phi_windows: Option<u32>,
    /// Remove the tenant's quota (no limits beyond the sandbox maxima).
    #[arg(long, conflicts_with_all = ["max_in_flight", "max_budget", "memory_pages", "table_elements", "max_q_units", "max_phi_windows"])]
    clear: bool,
    /// Member node whose management port to use.
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What a tenant without a quota gets.
pub const NO_QUOTA: Quota = Quota {
    max_in_flight: u32::MAX,
    max_budget_ticks: u64::MAX,
    memory_pages: MAX_TASK_MEMORY_PAGES,
    table_elements: MAX_TASK_TABLE_ELEMENTS,
    max_q_units: u32::MAX,
    max_phi_windows: u32::MAX,
};

fn parse_limit_u64(s: &str) -> Result<u64, String> {
    if s == "unlimited" {
        return Ok(u64::MAX);
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not a number or `unlimited`"))
}

fn parse_limit_u32(s: &str) -> Result<u32, String> {
    match parse_limit_u64(s)? {
        u64::MAX => Ok(u32::MAX),
        n => u32::try_from(n).map_err(|_| format!("`{s}` is over {}", u32::MAX)),
    }
}

fn limit(n: u64, max: u64) -> String {
    if n == max {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

/// `max-in-flight 10, max-budget unlimited, memory-pages 4 (256 KiB), table-elements 1000`.
pub fn describe(q: &Quota) -> String {
    format!(
        "max-in-flight {}, max-budget {}, memory-pages {} ({} KiB), table-elements {}, max-q-units {}, max-phi-windows {}",
        limit(q.max_in_flight.into(), u32::MAX.into()),
        limit(q.max_budget_ticks, u64::MAX),
        q.memory_pages,
        u64::from(q.memory_pages) * 64,
        q.table_elements,
        limit(q.max_q_units.into(), u32::MAX.into()),
        limit(q.max_phi_windows.into(), u32::MAX.into()),
    )
}

fn record_file(dir: &Path) -> PathBuf {
    dir.join("quotas.json")
}

pub fn load_record(dir: &Path) -> Result<BTreeMap<u32, Quota>> {
    match std::fs::read_to_string(record_file(dir)) {
        Ok(t) => Ok(serde_json::from_str(&t)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e.into()),
    }
}

pub fn save_record(dir: &Path, r: &BTreeMap<u32, Quota>) -> Result<()> {
    let tmp = dir.join("quotas.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(r)?)?;
    std::fs::rename(tmp, record_file(dir))?;
    Ok(())
}

pub fn quota(a: QuotaArgs) -> Result<()> {
    let dir = super::cluster::dir(a.dir.clone());
    let st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    if !keys.tenants.iter().any(|(t, _)| *t == a.tenant) {
        let known: Vec<String> = keys.tenants.iter().map(|t| t.0.to_string()).collect();
        bail!(
            "tenant {} is not registered in this cluster (tenants: {})",
            a.tenant,
            known.join(", ")
        );
    }
    let mut record = load_record(&dir)?;
    let current = record.get(&a.tenant).copied();
    let given = [
        a.max_in_flight.is_some(),
        a.max_budget.is_some(),
        a.memory_pages.is_some(),
        a.table_elements.is_some(),
        a.max_q_units.is_some(),
        a.max_phi_windows.is_some(),
    ];
    if !a.clear && !given.contains(&true) {
        match current {
            Some(q) => println!("tenant {}: quota {}", a.tenant, describe(&q)),
            None => println!(
                "tenant {}: no quota (set with --max-in-flight, --max-budget, --memory-pages, --table-elements)",
                a.tenant
            ),
        }
        return Ok(());
    }
    let port = st.running_node_port(a.node)?;
    if a.clear {
        mgmt::set_quota(port, &keys, a.tenant, None)?;
        record.remove(&a.tenant);
        save_record(&dir, &record)?;
        println!("tenant {}: quota cleared", a.tenant);
        return Ok(());
    }
    let base = current.unwrap_or(NO_QUOTA);
    let q = Quota {
        max_in_flight: a.max_in_flight.unwrap_or(base.max_in_flight),
        max_budget_ticks: a.max_budget.unwrap_or(base.max_budget_ticks),
        memory_pages: a.memory_pages.unwrap_or(base.memory_pages),
        table_elements: a.table_elements.unwrap_or(base.table_elements),
        max_q_units: a.max_q_units.unwrap_or(base.max_q_units),
        max_phi_windows: a.max_phi_windows.unwrap_or(base.max_phi_windows),
    };
    mgmt::set_quota(port, &keys, a.tenant, Some(q))?;
    record.insert(a.tenant, q);
    save_record(&dir, &record)?;
    let names = [
        "max-in-flight",
        "max-budget",
        "memory-pages",
        "table-elements",
    ];
    let kept: Vec<&str> = names
        .iter()
        .zip(given)
        .filter(|(_, g)| !g)
        .map(|(n, _)| *n)
        .collect();
    let kept = match (kept.is_empty(), current.is_some()) {
        (true, _) => String::new(),
        (false, true) => format!(" (kept from the previous quota: {})", kept.join(", ")),
        (false, false) => format!(" (no quota before; defaults for {})", kept.join(", ")),
    };
    println!("tenant {}: quota set: {}{kept}", a.tenant, describe(&q));
    Ok(())
}
