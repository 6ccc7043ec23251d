//! `cargo xdv up --config cluster.toml`: the cluster `up` boots, as a file instead of
//! flags.
//!
//! ```toml
//! nodes = 3
//! smp = 2
//! mem_mib = 256
//! tenants = 2
//! seed = 1
//! mgmt_port_base = 17200
//! accel = { 2 = "q", 3 = "phi" }
//!
//! [quotas.1]                # tenant 1; limits not given are unlimited / the maxima
//! max_in_flight = 4
//! max_budget = "unlimited"
//! memory_pages = 4
//! ```
//!
//! Keys are the `up` and `quota` flag names with `_` for `-`. Every key is checked
//! here, with the same ranges as the flags; an unknown key is refused by name (a typo
//! must not silently boot a different cluster). Flags given on the command line
//! override the file (see `cluster::merge_config`); quotas are set once every node is
//! ready.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::Path;
use xdv::cluster::MAX_NODES;
use xdv_cluster::{MAX_TASK_MEMORY_PAGES, MAX_TASK_TABLE_ELEMENTS, Quota};

/// Largest configuration file read (it is a handful of lines).
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

const TOP_KEYS: [&str; 8] = [
    "nodes",
    "smp",
    "mem_mib",
    "tenants",
    "seed",
    "mgmt_port_base",
    "accel",
    "quotas",
];
const QUOTA_KEYS: [&str; 6] = [
    "max_in_flight",
    "max_budget",
    "memory_pages",
    "table_elements",
    "max_q_units",
    "max_phi_windows",
];

/// What a configuration file asks for; `None` where it says nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpConfig {
    pub nodes: Option<u32>,
    pub smp: Option<u32>,
    pub mem_mib: Option<u32>,
    pub tenants: Option<u32>,
    pub seed: Option<u64>,
    pub mgmt_port_base: Option<u16>,
    /// `NODE=KIND` pairs, as `--accel` takes them.
    pub accel: Vec<String>,
    /// Tenant id -> its quota.
    pub quotas: BTreeMap<u32, Quota>,
}

impl UpConfig {
    pub fn load(path: &Path) -> Result<UpConfig> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            bail!(
                "{}: {} bytes is too large for a cluster configuration (limit {MAX_CONFIG_BYTES})",
                path.display(),
                meta.len()
            );
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        UpConfig::parse(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// Parses the TOML text of a configuration file.
    pub fn parse(text: &str) -> Result<UpConfig> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow!("not valid TOML: {}", e.message()))?;
        let mut c = UpConfig::default();
        for (key, value) in &table {
            match key.as_str() {
                "nodes" => c.nodes = Some(int(key, value, 1, u64::from(MAX_NODES))?),
                "smp" => c.smp = Some(int(key, value, 1, 16)?),
                "mem_mib" => c.mem_mib = Some(int(key, value, 128, 16384)?),
                "tenants" => {
                    let max = xdv_boot::provision::MAX_TENANTS as u64;
                    c.tenants = Some(int(key, value, 0, max)?)
                }
                "seed" => c.seed = Some(int(key, value, 0, i64::MAX as u64)?),
                "mgmt_port_base" => c.mgmt_port_base = Some(int(key, value, 1, 65534)?),
                "accel" => c.accel = accel(value)?,
                "quotas" => c.quotas = quotas(value)?,
                _ => bail!("unknown key `{key}` (known: {})", TOP_KEYS.join(", ")),
            }
        }
        Ok(c)
    }
}

/// An integer in `min..=max` under `key`.
fn int<T: TryFrom<u64>>(key: &str, v: &toml::Value, min: u64, max: u64) -> Result<T> {
    let n = v
        .as_integer()
        .ok_or_else(|| anyhow!("`{key}` must be a number, not {}", v.type_str()))?;
    match u64::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => {
            T::try_from(n).map_err(|_| anyhow!("`{key}` = {n} is out of range"))
        }
        _ => bail!("`{key}` = {n} is out of range ({min}-{max})"),
    }
}

/// A limit: a number, or `"unlimited"` (the type's maximum).
fn limit(key: &str, v: &toml::Value, max: u64) -> Result<u64> {
    match v.as_str() {
        Some("unlimited") => Ok(max),
        Some(s) => bail!("`{key}` = \"{s}\" is not a number or \"unlimited\""),
        None => int(key, v, 0, max),
    }
}

/// `accel = { 2 = "q", 3 = "phi" }` as `["2=q", "3=phi"]` (checked by `parse_accel`).
fn accel(v: &toml::Value) -> Result<Vec<String>> {
    let t = v.as_table().ok_or_else(|| {
        anyhow!("`accel` must be a table of NODE = \"KIND\", e.g. {{ 2 = \"q\" }}")
    })?;
    t.iter()
        .map(|(node, kind)| match kind.as_str() {
            Some(k) => Ok(format!("{node}={k}")),
            None => bail!("`accel.{node}` must be a string (\"q\" or \"phi\")"),
        })
        .collect()
}

/// `[quotas.N]` tables: each tenant's limits over [`super::quota::NO_QUOTA`].
fn quotas(v: &toml::Value) -> Result<BTreeMap<u32, Quota>> {
    let t = v
        .as_table()
        .ok_or_else(|| anyhow!("`quotas` must hold one table per tenant, e.g. [quotas.1]"))?;
    let mut out = BTreeMap::new();
    for (tenant, limits) in t {
        let id: u32 = tenant
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow!("`quotas.{tenant}`: `{tenant}` is not a tenant id"))?;
        let limits = limits
            .as_table()
            .ok_or_else(|| anyhow!("`quotas.{tenant}` must be a table of limits"))?;
        let mut q = super::quota::NO_QUOTA;
        for (key, value) in limits {
            let name = format!("quotas.{tenant}.{key}");
            let u32max = u64::from(u32::MAX);
            match key.as_str() {
                "max_in_flight" => q.max_in_flight = limit(&name, value, u32max)? as u32,
                "max_budget" => q.max_budget_ticks = limit(&name, value, u64::MAX)?,
                "memory_pages" => {
                    q.memory_pages = int(&name, value, 0, MAX_TASK_MEMORY_PAGES.into())?
                }
                "table_elements" => {
                    q.table_elements = int(&name, value, 0, MAX_TASK_TABLE_ELEMENTS.into())?
                }
                "max_q_units" => q.max_q_units = limit(&name, value, u32max)? as u32,
                "max_phi_windows" => q.max_phi_windows = limit(&name, value, u32max)? as u32,
                _ => bail!("unknown key `{name}` (known: {})", QUOTA_KEYS.join(", ")),
            }
        }
        out.insert(id, q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::UpConfig;

    #[test]
    fn a_full_file_parses() {
        let c = UpConfig::parse(
            r#"
nodes = 4
smp = 3
mem_mib = 512
tenants = 3
seed = 9
accel = { 2 = "q", 3 = "phi" }
[quotas.1]
max_in_flight = 4
max_budget = "unlimited"
memory_pages = 2
[quotas.3]
max_q_units = 1
"#,
        )
        .unwrap();
        assert_eq!(c.nodes, Some(4));
        assert_eq!(c.smp, Some(3));
        assert_eq!(c.mem_mib, Some(512));
        assert_eq!(c.tenants, Some(3));
        assert_eq!(c.seed, Some(9));
        assert_eq!(c.mgmt_port_base, None);
        assert_eq!(c.accel, vec!["2=q".to_string(), "3=phi".to_string()]);
        let q1 = c.quotas[&1];
        assert_eq!(q1.max_in_flight, 4);
        assert_eq!(q1.max_budget_ticks, u64::MAX);
        assert_eq!(q1.memory_pages, 2);
        assert_eq!(q1.max_q_units, u32::MAX, "not given: unlimited");
        assert_eq!(c.quotas[&3].max_q_units, 1);
        assert_eq!(c.quotas.len(), 2);
        assert_eq!(UpConfig::parse("").unwrap(), UpConfig::default());
    }

    /// The example the README points to parses as documented.
    #[test]
    fn the_shipped_example_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster.toml");
        let c = UpConfig::load(&path).unwrap();
        assert_eq!(c.nodes, Some(3));
        assert_eq!(c.accel, vec!["2=q".to_string(), "3=phi".to_string()]);
        assert_eq!(c.quotas[&1].max_in_flight, 4);
        assert_eq!(c.quotas[&2].max_q_units, 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = |t: &str| format!("{:#}", UpConfig::parse(t).unwrap_err());
        assert!(err("node = 3").starts_with("unknown key `node` (known: nodes, smp"));
        assert!(
            err("[quotas.1]\nmax_inflight = 3").starts_with("unknown key `quotas.1.max_inflight`")
        );
        assert_eq!(err("nodes = 10"), "`nodes` = 10 is out of range (1-9)");
        assert_eq!(err("smp = 0"), "`smp` = 0 is out of range (1-16)");
        assert_eq!(
            err("mem_mib = \"1G\""),
            "`mem_mib` must be a number, not string"
        );
        assert_eq!(
            err("[quotas.1]\nmax_budget = \"lots\""),
            "`quotas.1.max_budget` = \"lots\" is not a number or \"unlimited\""
        );
        assert_eq!(
            err("[quotas.1]\nmemory_pages = 17"),
            "`quotas.1.memory_pages` = 17 is out of range (0-16)"
        );
        assert_eq!(err("[quotas.x]"), "`quotas.x`: `x` is not a tenant id");
        assert_eq!(
            err("accel = { 2 = 1 }"),
            "`accel.2` must be a string (\"q\" or \"phi\")"
        );
        assert!(
            err("nodes = ").starts_with("not valid TOML"),
            "{}",
            err("nodes = ")
        );
    }
}
