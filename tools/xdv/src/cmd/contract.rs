//! `cargo xdv reserve | release | contracts | policy`: remote allocation contracts
//! (seed 000 §4–§7, `docs/accel.md`). A tenant reserves Q containers, Φ windows or
//! K core slots on a target node through any member (that member is the requesting
//! node: it signs the contract and proposes it); the log decides — accepted, or
//! rejected with the reason — and both nodes record it. Priority in conflicts is the
//! operator's per-tenant policy (`policy`), never the requester's choice.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv::cluster::ClusterState;
use xdv::mgmt::{self, Keys};
use xdv_cluster::mgmt::{ContractAnswer, ContractView, Principal, Request, Reserve, Response};
use xdv_cluster::{Domain, PlacementKind};
use xdv_types::{CapabilityId, NodeId, Priority, TenantId};

/// The capability every provisioned node holds (what contracts are signed under).
pub const DEFAULT_CAPABILITY: u32 = xdv_sandbox::CAP_ECHO_LEN.0;

#[derive(clap::Args)]
pub struct ReserveArgs {
    /// Tenant that will hold the contract (signs the request).
    #[arg(long)]
    tenant: u32,
    /// Domain: q (containers), phi (windows) or k (core slots).
    #[arg(long, value_parser = ["q", "phi", "k"])]
    domain: String,
    /// Node whose resources to reserve.
    #[arg(long)]
    target: u32,
    /// Resource indices, comma-separated (e.g. `0` or `0,1`): containers, windows or
    /// core slots on the target.
    #[arg(long, value_delimiter = ',', required = true)]
    resources: Vec<u16>,
    /// How long it lasts in cluster time, seconds (the leader's clock: one tick a
    /// second however busy the log is).
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Capability the requesting node signs under.
    #[arg(long, default_value_t = DEFAULT_CAPABILITY)]
    capability: u32,
    /// Member node the request goes to (the requesting node).
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Print one JSON object instead of words.
    #[arg(long)]
    json: bool,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReleaseArgs {
    /// Contract id (from `reserve` or `contracts`).
    contract: u64,
    /// Tenant that holds it.
    #[arg(long)]
    tenant: u32,
    /// Member node whose management port to use.
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ContractsArgs {
    /// Show only this tenant's contracts (signed as the tenant); all otherwise (as the
    /// operator).
    #[arg(long)]
    tenant: Option<u32>,
    /// Member node whose management port to use.
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Print one JSON object instead of words.
    #[arg(long)]
    json: bool,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// `show` (the placement policy in force), `set` (choose it), or the tenant whose
    /// contract-conflict priority to set (with --priority).
    target: String,
    /// With `set`: routed, least-loaded or first-fit.
    policy: Option<String>,
    /// The tenant's priority in contract conflicts: high, normal or low.
    #[arg(long, value_parser = ["high", "normal", "low"])]
    priority: Option<String>,
    /// Member node whose management port to use.
    #[arg(long, default_value_t = 1)]
    node: u32,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn setup(dir: Option<PathBuf>, node: u32) -> Result<(Keys, u16)> {
    let dir = super::cluster::dir(dir);
    let st = ClusterState::load(&dir)?;
    let keys = Keys::load(&dir)?;
    let port = st.running_node_port(node)?;
    Ok((keys, port))
}

fn check_tenant(keys: &Keys, tenant: u32) -> Result<()> {
    if keys.tenants.iter().any(|(t, _)| *t == tenant) {
        return Ok(());
    }
    let known: Vec<String> = keys.tenants.iter().map(|t| t.0.to_string()).collect();
    bail!(
        "tenant {tenant} is not registered in this cluster (tenants: {})",
        known.join(", ")
    )
}

/// Exit codes: 0 accepted, 3 rejected, 1 error.
pub fn reserve(a: ReserveArgs) -> Result<i32> {
    let (keys, port) = setup(a.dir, a.node)?;
    check_tenant(&keys, a.tenant)?;
    let domain = Domain::parse(&a.domain).context("--domain")?;
    let mut resources = a.resources.clone();
    resources.sort_unstable();
    resources.dedup();
    if a.duration == 0 {
        bail!("--duration must be at least 1 second");
    }
    let r = Reserve {
        domain,
        target: NodeId(a.target),
        resources,
        duration_ms: a.duration.saturating_mul(1000),
        capability: CapabilityId(a.capability),
    };
    let end = Instant::now() + Duration::from_secs(30);
    let answer = mgmt::reserve(port, &keys, a.tenant, r, end)?;
    let (code, line) = match &answer {
        Ok(id) => (
            xdv::exit::OK,
            format!(
                "contract {id} accepted: tenant {} holds {domain} {:?} on node {} for {} s",
                a.tenant, a.resources, a.target, a.duration
            ),
        ),
        Err(why) => (xdv::exit::REFUSED, format!("reservation rejected: {why}")),
    };
    if a.json {
        let v = serde_json::json!({
            "accepted": answer.is_ok(),
            "contract": answer.as_ref().ok(),
            "reason": answer.as_ref().err(),
            "exit_code": code,
            "line": line,
        });
        println!("{v}");
    } else {
        println!("{line}");
    }
    Ok(code)
}

pub fn release(a: ReleaseArgs) -> Result<i32> {
    let (keys, port) = setup(a.dir, a.node)?;
    check_tenant(&keys, a.tenant)?;
    let req = mgmt::signed(
        &keys,
        Principal::Tenant(TenantId(a.tenant)),
        Request::Release {
            contract: a.contract,
        },
    )?;
    match mgmt::call_until_decided(port, &req, Instant::now() + Duration::from_secs(30))? {
        Response::Contract(ContractAnswer::Released { id }) => {
            println!("contract {id} released");
            Ok(xdv::exit::OK)
        }
        Response::Refused(d) => {
            println!("release refused: {d}");
            Ok(xdv::exit::REFUSED)
        }
        other => bail!("unexpected answer: {}", mgmt::response_kind(&other)),
    }
}

pub fn contracts(a: ContractsArgs) -> Result<()> {
    let (keys, port) = setup(a.dir, a.node)?;
    let who = match a.tenant {
        Some(t) => {
            check_tenant(&keys, t)?;
            Principal::Tenant(TenantId(t))
        }
        None => Principal::Operator,
    };
    let l = mgmt::contract_list(port, &keys, who)?;
    if a.json {
        println!("{}", contracts_json(&l));
        return Ok(());
    }
    print!("{}", contracts_table(&l));
    Ok(())
}

/// `contracts --json`: every contract in force, then the recently ended ones, each
/// with its `state` (active, suspended, or how it ended).
pub fn contracts_json(l: &mgmt::ContractList) -> serde_json::Value {
    let item = |c: &ContractView| {
        let mut v = serde_json::json!({
            "id": c.id, "hash": c.hash.to_string(), "tenant": c.tenant.0,
            "requester": c.requester.0, "target": c.target.0,
            "domain": c.domain.to_string(), "resources": c.resources,
            "state": c.state(),
            "priority": c.priority.name(),
        });
        match &c.ended {
            None => v["expires_in_ms"] = c.expires_ms.saturating_sub(l.clock_ms).into(),
            Some((end, at)) => {
                v["ended"] = end.to_string().into();
                v["ended_ago_ms"] = l.clock_ms.saturating_sub(*at).into();
            }
        }
        v
    };
    let items: Vec<serde_json::Value> = l.in_force.iter().chain(&l.ended).map(item).collect();
    serde_json::json!({"cluster_time_ms": l.clock_ms, "contracts": items})
}

/// The `contracts` table: in force first, then recently ended, with a state column.
pub fn contracts_table(l: &mgmt::ContractList) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "cluster time {} s; {} contract(s) in force, {} recently ended\n",
        l.clock_ms / 1000,
        l.in_force.len(),
        l.ended.len()
    );
    if l.in_force.is_empty() && l.ended.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:>17}  {:>6}  {:>9}  {:>6}  {:>6}  {:9}  {:>8}  {:9}  when",
        "contract", "tenant", "requester", "target", "domain", "resources", "priority", "state"
    );
    for c in l.in_force.iter().chain(&l.ended) {
        let when = match &c.ended {
            None => format!(
                "expires in {} s",
                c.expires_ms.saturating_sub(l.clock_ms) / 1000
            ),
            Some((end, at)) => format!("{} s ago ({end})", l.clock_ms.saturating_sub(*at) / 1000),
        };
        let _ = writeln!(
            out,
            "{:>17}  {:>6}  {:>9}  {:>6}  {:>6}  {:9}  {:>8}  {:9}  {when}",
            c.id,
            c.tenant.0,
            c.requester.0,
            c.target.0,
            c.domain,
            format!("{:?}", c.resources),
            c.priority.name(),
            c.state(),
        );
    }
    out
}

/// A usage error (exit 2), as clap reports its own.
fn usage(msg: String) -> ! {
    clap::Error::raw(clap::error::ErrorKind::InvalidValue, msg + "\n").exit()
}

/// `policy show` / `policy set <policy>` (the cluster's placement policy, through the
/// log) or `policy <tenant> --priority <p>` (a tenant's contract-conflict priority).
pub fn policy(a: PolicyArgs) -> Result<()> {
    match (a.target.as_str(), &a.policy, &a.priority) {
        ("show", None, None) => placement_show(a.dir, a.node),
        ("set", Some(p), None) => {
            let Some(kind) = PlacementKind::parse(p) else {
                usage(format!(
                    "error: unknown placement policy '{p}' (routed, least-loaded or first-fit)"
                ))
            };
            placement_set(a.dir, a.node, kind)
        }
        ("set", None, _) => usage("error: `policy set` needs a policy: routed, least-loaded or first-fit".into()),
        (t, None, Some(p)) => match t.parse::<u32>() {
            Ok(tenant) => tenant_policy(a.dir, a.node, tenant, p),
            Err(_) => usage(format!("error: '{t}' is not `show`, `set` or a tenant id")),
        },
        (t, _, None) if t.parse::<u32>().is_ok() => {
            usage("error: a tenant's policy needs --priority high|normal|low".into())
        }
        _ => usage(
            "error: usage: policy show | policy set <routed|least-loaded|first-fit> | policy <tenant> --priority <high|normal|low>".into(),
        ),
    }
}

fn placement_show(dir: Option<PathBuf>, node: u32) -> Result<()> {
    let (keys, port) = setup(dir, node)?;
    let v = mgmt::cluster_view(port, &keys)?;
    println!("placement policy: {}", v.placement_policy);
    Ok(())
}

fn placement_set(dir: Option<PathBuf>, node: u32, policy: PlacementKind) -> Result<()> {
    let (keys, port) = setup(dir, node)?;
    let req = mgmt::signed(
        &keys,
        Principal::Operator,
        Request::SetPlacementPolicy { policy },
    )?;
    match mgmt::call_until_decided(port, &req, Instant::now() + Duration::from_secs(30))? {
        Response::PlacementPolicySet { policy } => {
            println!("placement policy: {}", policy.name());
            Ok(())
        }
        Response::Refused(d) => bail!("refused: {d}"),
        other => bail!("unexpected answer: {}", mgmt::response_kind(&other)),
    }
}

fn tenant_policy(dir: Option<PathBuf>, node: u32, tenant: u32, priority: &str) -> Result<()> {
    let (keys, port) = setup(dir, node)?;
    check_tenant(&keys, tenant)?;
    let priority = Priority::parse(priority).context("--priority")?;
    let req = mgmt::signed(
        &keys,
        Principal::Operator,
        Request::SetPolicy {
            tenant: TenantId(tenant),
            priority,
        },
    )?;
    match mgmt::call_until_decided(port, &req, Instant::now() + Duration::from_secs(30))? {
        Response::PolicySet { tenant } => {
            println!("tenant {}: contract priority {}", tenant.0, priority.name());
            Ok(())
        }
        Response::Refused(d) => bail!("refused: {d}"),
        other => bail!("unexpected answer: {}", mgmt::response_kind(&other)),
    }
}
