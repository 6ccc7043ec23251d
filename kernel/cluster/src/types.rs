//! The values the replicated log carries: global logical time, task specifications,
//! outcomes, worker descriptions, quotas. Every limit a value must respect is a named
//! constant here and is checked where the value enters the state machine.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};
use xdv_types::{CapabilityId, Hash32, NodeId, Priority, TenantId};

/// Most guards a task may carry (the run queue checks them against the core's set).
pub use xdv_types::limits::MAX_GUARDS;
/// Most capabilities a task may require of the node it is placed on.
pub const MAX_NEEDS: usize = 8;
/// Largest task input carried in the log.
pub use xdv_types::limits::MAX_INPUT_BYTES;
/// Largest task output kept in the replicated state for the submitter.
pub use xdv_types::limits::MAX_KEPT_OUTPUT_BYTES as MAX_OUTPUT_BYTES;
/// Largest WebAssembly module carried in the log (the sandbox's own limit is lower or equal).
pub use xdv_types::limits::MAX_MODULE_BYTES;
/// Longest built-in task name.
pub const MAX_BUILTIN_NAME_BYTES: usize = 32;
/// Longest reason text in an outcome.
pub const MAX_REASON_BYTES: usize = 128;
/// Most capabilities a worker may advertise.
pub const MAX_WORKER_CAPS: usize = 32;
/// Most cores a worker may advertise.
pub const MAX_WORKER_CORES: u16 = 256;
/// Largest tick budget a task may ask for.
pub use xdv_types::limits::MAX_BUDGET_TICKS;
/// Largest budget of one task of a tenant without a quota (a tenant with a quota is
/// bounded by its quota's total instead): a default tenant cannot occupy a core for
/// hours with one request.
pub const DEFAULT_TASK_BUDGET_CEILING_TICKS: u64 = 1 << 28;
/// Attempts a task gets: when the node of its last attempt goes down it ends
/// `Failed` instead of being re-placed again.
pub const MAX_ATTEMPTS: u32 = 3;

/// `L_global = (lamport, node_id)` (seed 000 §3.2): the merge function orders by the
/// Lamport time first and breaks ties by node id, so two events are never equal unless
/// they are the same event. Every applied entry carries one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GlobalTime {
    pub lamport: u64,
    pub node: NodeId,
}

impl Default for GlobalTime {
    fn default() -> Self {
        GlobalTime {
            lamport: 0,
            node: NodeId(0),
        }
    }
}

impl fmt::Display for GlobalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.lamport, self.node)
    }
}

/// The execution domains (brief: K classical, Q quantum, Φ phase coherence).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Domain {
    K,
    Q,
    Phi,
}

impl Domain {
    pub const ALL: [Domain; 3] = [Domain::K, Domain::Q, Domain::Phi];

    pub fn index(self) -> usize {
        match self {
            Domain::K => 0,
            Domain::Q => 1,
            Domain::Phi => 2,
        }
    }

    pub fn parse(s: &str) -> Option<Domain> {
        match s {
            "k" | "K" => Some(Domain::K),
            "q" | "Q" => Some(Domain::Q),
            "phi" | "Phi" | "PHI" | "Φ" => Some(Domain::Phi),
            _ => None,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Domain::K => "K",
            Domain::Q => "Q",
            Domain::Phi => "Φ",
        })
    }
}

/// What a task runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Work {
    /// One of the kernel's bundled modules, by name (`loop`, `grow`, `hash`, `sort`, …).
    Builtin(String),
    /// WebAssembly module bytes (binary format), validated by the node that runs it.
    Wasm(Vec<u8>),
    /// A Q circuit or a Φ envelope in its wire form (`xdv_accel::job`), run by a
    /// device of the task's domain.
    Job(Vec<u8>),
    /// The module or job was dropped from the state after the task finished; its
    /// SHA-256 stays.
    Dropped(Hash32),
}

/// A task as a tenant submitted it. `(tenant, request_seq)` identifies the request:
/// the state machine assigns the task id and answers a repeated request with the
/// same task, so a client may retry through a failover without running twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub tenant: TenantId,
    pub request_seq: u64,
    pub work: Work,
    pub input: Vec<u8>,
    pub budget_ticks: u64,
    pub priority: Priority,
    /// Checked by the run queue against the core's granted set before the task runs.
    pub guards: Vec<CapabilityId>,
    /// Capabilities the node must offer for the task to be placed there.
    pub needs: Vec<CapabilityId>,
    pub domain: Domain,
    /// Run on this node only (operator placement); still subject to eligibility.
    pub pin: Option<NodeId>,
    /// Run under this contract: on its target, in its reserved containers or windows.
    pub contract: Option<u64>,
    /// Cluster-time limit of one attempt, ms (`None`: the cluster's default,
    /// [`TaskTimeouts::default_timeout_ms`]); at most [`TaskTimeouts::max_timeout_ms`].
    pub timeout_ms: Option<u64>,
}

/// Why a task, a contract or an entry was refused. Recorded in the state and the log's
/// events so every node gives the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    ZeroBudget,
    BudgetOverLimit {
        budget_ticks: u64,
    },
    BudgetOverCeiling {
        budget_ticks: u64,
        ceiling_ticks: u64,
    },
    TooManyGuards(usize),
    TooManyNeeds(usize),
    ModuleTooLarge(usize),
    InputTooLarge(usize),
    BadBuiltinName,
    UnknownTenant(TenantId),
    /// No member offers the task's domain and capabilities (it could never run).
    NoMemberCanRun {
        domain: Domain,
    },
    /// The sequence number is past the accepted range (see `ReplayWindow::check_range`).
    SeqOutOfRange {
        seq: u64,
        highest: u64,
    },
    StaleRequest {
        seq: u64,
        last: u64,
    },
    QuotaInFlight {
        limit: u32,
    },
    QuotaBudget {
        limit_ticks: u64,
        used_ticks: u64,
    },
    NoEligibleNode,
    PinnedNodeIneligible(NodeId),
    UnknownNode(NodeId),
    BadSignature,
    CapabilityNotHeld(CapabilityId),
    DomainNotOffered {
        node: NodeId,
        domain: Domain,
    },
    ResourceOutOfRange {
        resource: u16,
        capacity: u16,
    },
    EmptyResourceSet,
    ResourcesNotSorted,
    ZeroDuration,
    Conflict {
        holder: u64,
    },
    DuplicateContract(u64),
    TooManyContracts,
    NodeNotUp(NodeId),
    TooManyNodes,
    BadWorker(WorkerProblem),
    /// The work does not fit the domain (a device job for K, a module for Q or Φ).
    WorkNotForDomain {
        domain: Domain,
    },
    /// The device job does not decode or validate.
    BadJob(String),
    /// A contract id not derived from its tenant and request.
    BadContractId(u64),
    /// Over the tenant's quota of Q containers or Φ windows held at once.
    QuotaUnits {
        domain: Domain,
        limit: u32,
        wanted: u32,
    },
    /// A task names a contract that is not in force.
    UnknownContract(u64),
    /// A task names another tenant's contract.
    NotYourContract(u64),
    /// A task names a suspended contract (an end is down).
    ContractSuspended(u64),
    /// A task's domain differs from its contract's.
    ContractDomainMismatch {
        contract: u64,
        domain: Domain,
    },
    /// `AddMember` for a node that is already a member.
    AlreadyMember(NodeId),
    /// A timeout of zero or above the cluster's maximum.
    BadTimeout {
        timeout_ms: u64,
        max_ms: u64,
    },
    /// A task names a contract that was in force and ended (the recently ended ones
    /// the state remembers): how it ended.
    ContractEnded {
        contract: u64,
        end: crate::contract::ContractEnd,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ZeroBudget => write!(f, "tick budget is zero"),
            Refusal::BudgetOverCeiling {
                budget_ticks,
                ceiling_ticks,
            } => write!(
                f,
                "budget {budget_ticks} ticks over the default per-task ceiling {ceiling_ticks} (tenants without a quota)"
            ),
            Refusal::BudgetOverLimit { budget_ticks } => {
                write!(
                    f,
                    "budget {budget_ticks} ticks over limit {MAX_BUDGET_TICKS}"
                )
            }
            Refusal::TooManyGuards(n) => write!(f, "{n} guards (limit {MAX_GUARDS})"),
            Refusal::TooManyNeeds(n) => write!(f, "{n} required capabilities (limit {MAX_NEEDS})"),
            Refusal::ModuleTooLarge(n) => {
                write!(f, "module of {n} bytes (limit {MAX_MODULE_BYTES})")
            }
            Refusal::InputTooLarge(n) => write!(f, "input of {n} bytes (limit {MAX_INPUT_BYTES})"),
            Refusal::BadBuiltinName => write!(f, "built-in name empty or too long"),
            Refusal::UnknownTenant(t) => write!(f, "{t} is not registered"),
            Refusal::NoMemberCanRun { domain } => write!(
                f,
                "no member offers the {domain} domain with the capabilities the task needs"
            ),
            Refusal::SeqOutOfRange { seq, highest } => write!(
                f,
                "sequence number {seq} out of range (highest accepted {highest}; at most {MAX_SEQ_JUMP} ahead, below {MAX_SEQ})"
            ),
            Refusal::StaleRequest { seq, last } => {
                write!(
                    f,
                    "request seq {seq} is older than the last accepted ({last})"
                )
            }
            Refusal::QuotaInFlight { limit } => write!(f, "over quota: {limit} tasks in flight"),
            Refusal::QuotaBudget {
                limit_ticks,
                used_ticks,
            } => write!(
                f,
                "over quota: budget {used_ticks} of {limit_ticks} ticks used"
            ),
            Refusal::NoEligibleNode => write!(
                f,
                "no node is up with the capabilities, domain and capacity"
            ),
            Refusal::PinnedNodeIneligible(n) => write!(f, "pinned node {n} is not eligible"),
            Refusal::UnknownNode(n) => write!(f, "{n} is not a member"),
            Refusal::BadSignature => {
                write!(f, "signature does not verify with the requester's key")
            }
            Refusal::CapabilityNotHeld(c) => write!(f, "requester does not hold {c}"),
            Refusal::DomainNotOffered { node, domain } => {
                write!(f, "{node} offers no {domain} resources")
            }
            Refusal::ResourceOutOfRange { resource, capacity } => {
                write!(f, "resource {resource} out of range (capacity {capacity})")
            }
            Refusal::EmptyResourceSet => write!(f, "empty resource set"),
            Refusal::ResourcesNotSorted => write!(f, "resource set not sorted and unique"),
            Refusal::ZeroDuration => write!(f, "duration is zero"),
            Refusal::Conflict { holder } => {
                write!(
                    f,
                    "resources held by contract {holder} of equal or higher priority"
                )
            }
            Refusal::DuplicateContract(id) => write!(f, "contract {id} already exists"),
            Refusal::TooManyContracts => write!(
                f,
                "{} contracts already in force",
                crate::state::MAX_CONTRACTS
            ),
            Refusal::NodeNotUp(n) => write!(f, "{n} is not up"),
            Refusal::TooManyNodes => write!(f, "cluster is at its member limit"),
            Refusal::BadWorker(why) => write!(f, "bad worker description: {why:?}"),
            Refusal::WorkNotForDomain { domain: Domain::K } => {
                write!(
                    f,
                    "a device job (circuit or envelope) needs the Q or Φ domain"
                )
            }
            Refusal::WorkNotForDomain { domain } => write!(
                f,
                "the {domain} domain runs device jobs (a circuit or an envelope), not modules"
            ),
            Refusal::BadJob(why) => write!(f, "bad device job: {why}"),
            Refusal::BadContractId(id) => {
                write!(f, "contract id {id} is not the one of its tenant's request")
            }
            Refusal::QuotaUnits {
                domain,
                limit,
                wanted,
            } => write!(
                f,
                "over quota: {wanted} {domain} units reserved at once (limit {limit})"
            ),
            Refusal::UnknownContract(id) => {
                write!(
                    f,
                    "contract {id} is not in force (never accepted, expired or released)"
                )
            }
            Refusal::NotYourContract(id) => write!(f, "contract {id} belongs to another tenant"),
            Refusal::ContractSuspended(id) => {
                write!(f, "contract {id} is suspended (one of its nodes is down)")
            }
            Refusal::ContractEnded { contract, end } => {
                write!(f, "contract {contract} has ended ({end})")
            }
            Refusal::ContractDomainMismatch { contract, domain } => {
                write!(
                    f,
                    "contract {contract} reserves {domain} resources, not this task's domain"
                )
            }
            Refusal::AlreadyMember(n) => write!(f, "{n} is already a member"),
            Refusal::BadTimeout { timeout_ms, max_ms } => write!(
                f,
                "timeout of {timeout_ms} ms (must be 1..={max_ms} ms of cluster time)"
            ),
        }
    }
}

/// What is wrong with a [`WorkerInfo`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerProblem {
    TooManyCapabilities,
    CapabilitiesNotSortedUnique,
    CoreCountOutOfRange,
    HostNodeId,
}

/// How a task ended on the node that ran it (mirrors the run queue's outcomes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Executed,
    BudgetExceeded,
    GuardDenied,
    Trapped(String),
    /// The node could not run it at all (module invalid, built-in unknown, …).
    Refused(String),
    /// The cluster gave up on it (every node that ran it went down).
    Failed(String),
    /// The accelerator failed during the job (or was failed when it arrived); the
    /// job's container or window was aborted.
    DeviceFailed(String),
    /// A Φ window's stability fell below its constraint; the envelope is invalid.
    Unstable(String),
    /// The cluster timed its last attempt out (elapsed past its timeout plus
    /// extensions, or no progress for the stuck threshold); the reason says which.
    Timeout(String),
    /// Its tenant cancelled it (`cargo xdv cancel`).
    Cancelled,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Executed => f.write_str("executed"),
            Outcome::BudgetExceeded => f.write_str("budget-exceeded"),
            Outcome::GuardDenied => f.write_str("guard-denied"),
            Outcome::Trapped(r) => write!(f, "trapped: {r}"),
            Outcome::Refused(r) => write!(f, "refused: {r}"),
            Outcome::Failed(r) => write!(f, "failed: {r}"),
            Outcome::DeviceFailed(r) => write!(f, "device-failed: {r}"),
            Outcome::Unstable(r) => write!(f, "unstable: {r}"),
            Outcome::Timeout(r) => write!(f, "timeout: {r}"),
            Outcome::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// Task timeouts inside one cluster (AD-34 local authority, seed 003 §11), in cluster
/// logical milliseconds (`clock_ms`, advanced by the leader's `ClockTick`s). Part of
/// the replicated [`crate::Config`]: every node decides the same timeouts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTimeouts {
    /// Check interval and stuck threshold (§11.7; the gate fields are unused inside
    /// one cluster).
    pub tracker: xdv_federation::timeout::TimeoutConfig,
    /// An attempt's timeout when the submission names none.
    pub default_timeout_ms: u64,
    /// Longest timeout a submission may ask for.
    pub max_timeout_ms: u64,
    /// Most extension time one attempt may be granted in total.
    pub max_extension_ms: u64,
}

impl TaskTimeouts {
    /// The seed's §11.7 defaults (check every 30 s, stuck after 120 s without
    /// progress), a default timeout of 10 minutes, at most 1 day, extensions of at
    /// most 1 hour in total per attempt.
    pub const DEFAULT: TaskTimeouts = TaskTimeouts {
        tracker: xdv_federation::timeout::TimeoutConfig::DEFAULT,
        default_timeout_ms: 600_000,
        max_timeout_ms: 86_400_000,
        max_extension_ms: 3_600_000,
    };

    /// Every duration multiplied by `per_mille / 1000` (at least 1 ms each): the one
    /// factor tests, the simulator and `timeouts=` on the kernel command line use.
    /// `scaled(1000)` is the identity; `scaled(25)` checks every 750 ms and calls a
    /// task stuck after 3 s.
    pub fn scaled(self, per_mille: u64) -> TaskTimeouts {
        let s = |ms: u64| {
            (u128::from(ms) * u128::from(per_mille) / 1000).clamp(1, u128::from(u64::MAX)) as u64
        };
        TaskTimeouts {
            tracker: self.tracker.scaled(per_mille),
            default_timeout_ms: s(self.default_timeout_ms),
            max_timeout_ms: s(self.max_timeout_ms),
            max_extension_ms: s(self.max_extension_ms),
        }
    }

    /// Refuses an impossible configuration.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.tracker
            .validate()
            .map_err(|_| "bad tracker intervals")?;
        let max = xdv_federation::timeout::MAX_TIMEOUT_MS;
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.max_timeout_ms {
            return Err("default_timeout_ms must be 1..=max_timeout_ms");
        }
        if self.max_timeout_ms > max || self.max_extension_ms > max {
            return Err("timeouts above 30 days");
        }
        Ok(())
    }

    /// The timeout of an attempt of a task that asked for `asked` (`None`: default).
    pub fn effective(&self, asked: Option<u64>) -> Result<u64, Refusal> {
        match asked {
            None => Ok(self.default_timeout_ms),
            Some(t) if t == 0 || t > self.max_timeout_ms => Err(Refusal::BadTimeout {
                timeout_ms: t,
                max_ms: self.max_timeout_ms,
            }),
            Some(t) => Ok(t),
        }
    }
}

impl Default for TaskTimeouts {
    fn default() -> Self {
        TaskTimeouts::DEFAULT
    }
}

/// The report of the node that ran a task (`TaskCompleted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub task: xdv_types::TaskId,
    pub node: NodeId,
    /// The assignment this report answers; a report for an older attempt is stale.
    pub attempt: u32,
    pub outcome: Outcome,
    pub ticks: u64,
    pub output_hash: Hash32,
    pub output: Vec<u8>,
    /// The lines the module wrote with `log()`, as [`keep_log`] bounds them.
    pub log: Vec<String>,
}

/// Most `log()` lines and bytes kept per task (`xdv_types::limits`).
pub use xdv_types::limits::{MAX_KEPT_LOG_BYTES, MAX_KEPT_LOG_LINES};

/// A task's `log()` lines as the cluster keeps them: the first
/// [`MAX_KEPT_LOG_LINES`], at most [`MAX_KEPT_LOG_BYTES`] together (the line crossing
/// the limit is cut at a character boundary, later ones dropped). Pure: the node bounds
/// its report with it and the state machine applies it again to what it commits.
pub fn keep_log(lines: Vec<String>) -> Vec<String> {
    let mut left = MAX_KEPT_LOG_BYTES;
    let mut kept = Vec::new();
    for line in lines.into_iter().take(MAX_KEPT_LOG_LINES) {
        if left == 0 {
            break;
        }
        let cut = xdv_types::prefix_within(&line, left);
        left -= cut.len();
        if cut.len() == line.len() {
            kept.push(line);
        } else {
            kept.push(String::from(cut));
            break;
        }
    }
    kept
}

/// Resources a worker offers per domain: K cores for cluster work, Q devices, Φ windows.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub k_cores: u16,
    pub q_units: u16,
    pub phi_windows: u16,
}

impl Resources {
    pub fn capacity(&self, d: Domain) -> u16 {
        match d {
            Domain::K => self.k_cores,
            Domain::Q => self.q_units,
            Domain::Phi => self.phi_windows,
        }
    }
}

/// A worker node as it joins (`AddWorker`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub node: NodeId,
    /// Ed25519 public key: contracts this node requests must verify with it.
    pub public_key: [u8; 32],
    pub resources: Resources,
    /// Capabilities the node offers to tasks and holds for contracts, sorted, unique.
    pub capabilities: Vec<CapabilityId>,
    /// An observer follows the log and verifies (audit roots, state hashes) but never
    /// votes nor runs tasks (seed 001 roles): it stays a Raft learner, offers no cores.
    pub observer: bool,
}

impl WorkerInfo {
    pub fn validate(&self) -> Result<(), Refusal> {
        if self.capabilities.len() > MAX_WORKER_CAPS {
            return Err(Refusal::BadWorker(WorkerProblem::TooManyCapabilities));
        }
        if !self.capabilities.windows(2).all(|w| w[0] < w[1]) {
            return Err(Refusal::BadWorker(
                WorkerProblem::CapabilitiesNotSortedUnique,
            ));
        }
        // An observer offers no cores; a worker at least one.
        let cores_ok = if self.observer {
            self.resources.k_cores == 0
        } else {
            (1..=MAX_WORKER_CORES).contains(&self.resources.k_cores)
        };
        if !cores_ok {
            return Err(Refusal::BadWorker(WorkerProblem::CoreCountOutOfRange));
        }
        if self.node.0 == 0 {
            return Err(Refusal::BadWorker(WorkerProblem::HostNodeId));
        }
        Ok(())
    }
}

/// A worker's periodic report, replicated so placement sees the same resources everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatInfo {
    pub node: NodeId,
    /// K cores the node currently grants to cluster work (≤ its advertised cores).
    pub available_cores: u16,
    /// Tasks the node is running that the log does not know of (local work).
    pub local_load: u32,
    /// Q containers and Φ windows its devices offer now (0 while a device is failed).
    pub q_units: u16,
    pub phi_windows: u16,
}

/// A member's measured load and network position (`Command::LoadHeartbeat`): what it
/// measured enters the replicated state only through the log, so every node's `Routed`
/// placement sees the same figures.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    pub node: NodeId,
    /// Cluster tasks dispatched to it and waiting for a core (its run queues).
    pub queue_depth: u32,
    /// Its cores' busy share, ppm (≤ [`xdv_federation::PPM`]).
    pub utilisation_ppm: u32,
    /// Its own Vivaldi coordinate (with its error and sample count), once it has one.
    pub coordinate: Option<xdv_federation::vivaldi::Coordinate>,
}

/// Per-tenant limits enforced at placement (seed 001 §7.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Most tasks assigned and not completed at once.
    pub max_in_flight: u32,
    /// Most tick budget accepted in total.
    pub max_budget_ticks: u64,
    /// Memory one of its tasks may grow to, in 64 KiB pages (≤ [`MAX_TASK_MEMORY_PAGES`]).
    pub memory_pages: u32,
    /// Table elements one of its tasks may grow to (≤ [`MAX_TASK_TABLE_ELEMENTS`]).
    pub table_elements: u32,
    /// Most Q containers and Φ windows it may hold in contracts at once.
    pub max_q_units: u32,
    pub max_phi_windows: u32,
}

/// The sandbox's own maxima (`xdv_sandbox::MAX_MEMORY_PAGES`, `MAX_TABLE_ELEMENTS`;
/// the kernel asserts they agree): what a tenant without a quota gets.
pub const MAX_TASK_MEMORY_PAGES: u32 = 16;
pub const MAX_TASK_TABLE_ELEMENTS: u32 = 1000;

impl Quota {
    /// Growth limits for a tenant with `quota` (the maxima without one).
    pub fn task_limits(quota: Option<&Quota>) -> (u32, u32) {
        quota.map_or((MAX_TASK_MEMORY_PAGES, MAX_TASK_TABLE_ELEMENTS), |q| {
            (q.memory_pages, q.table_elements)
        })
    }
}

/// Sequence numbers a window of which may arrive out of order (concurrent clients of one
/// principal), each accepted at most once (IPsec-style anti-replay): a sequence number is
/// fresh if it is above the floor and not seen. The floor trails the highest accepted by
/// [`SEQ_WINDOW`] and rises further if more than [`MAX_WINDOW_SEQS`] are remembered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    pub highest: u64,
    pub floor: u64,
    /// Hashed incrementally: a tenant's window can hold thousands of sequence numbers,
    /// and hashing them all after every submission would dominate the state hash.
    seen: crate::hashed::HashedSet<u64>,
}

/// Width of the anti-replay window in sequence units (the CLI uses microseconds since
/// the epoch, so about 67 s).
pub const SEQ_WINDOW: u64 = 1 << 26;
/// Most sequence numbers a window remembers.
pub const MAX_WINDOW_SEQS: usize = 4096;
/// Largest sequence number accepted at all (µs since the epoch reach it in the year
/// 148 000).
pub const MAX_SEQ: u64 = 1 << 62;
/// Farthest a sequence number may jump past the highest accepted (about 12.7 days in
/// the CLI's µs): one request with a huge number cannot lock its principal out.
pub const MAX_SEQ_JUMP: u64 = 1 << 40;

impl ReplayWindow {
    /// `Err(floor)` if `seq` is at or below the floor or was already taken.
    pub fn check(&self, seq: u64) -> Result<(), u64> {
        if seq <= self.floor || self.seen.contains_key(&seq) {
            Err(self.floor)
        } else {
            Ok(())
        }
    }

    /// `Err(highest)` if `seq` is past [`MAX_SEQ`] or jumps more than
    /// [`MAX_SEQ_JUMP`] past the highest accepted: such a request would raise the
    /// floor so far that every later request of the principal is refused.
    pub fn check_range(&self, seq: u64) -> Result<(), u64> {
        let too_far = self.highest > 0 && seq > self.highest.saturating_add(MAX_SEQ_JUMP);
        if seq > MAX_SEQ || too_far {
            Err(self.highest)
        } else {
            Ok(())
        }
    }

    /// Records `seq` (which [`check`](Self::check) accepted).
    pub fn accept(&mut self, seq: u64) {
        debug_assert!(self.check(seq).is_ok());
        self.seen.insert(seq, ());
        self.highest = self.highest.max(seq);
        self.floor = self.floor.max(self.highest.saturating_sub(SEQ_WINDOW));
        while self.seen.len() > MAX_WINDOW_SEQS {
            if let Some((old, ())) = self.seen.pop_first() {
                self.floor = self.floor.max(old);
            }
        }
        // Forget what the floor now covers (the smallest first: no full walk).
        while let Some((&s, _)) = self.seen.first_key_value()
            && s <= self.floor
        {
            self.seen.pop_first();
        }
    }

    /// The window's part of an item hash: highest, floor and the root of the seen
    /// set (not its encoding).
    pub fn feed_hash(&self, h: &mut sha2::Sha256, scratch: bool) {
        use sha2::Digest;
        h.update(self.highest.to_le_bytes());
        h.update(self.floor.to_le_bytes());
        let root = if scratch {
            self.seen.root_from_scratch()
        } else {
            self.seen.root()
        };
        h.update(root.0);
    }
}
