//! K-domain tasks: WebAssembly modules run by `wasmi` 1.1 with fuel metering as the
//! tick budget. See `docs/tasks.md` for the ABI and why wasmi 2.0 (which has a
//! `deterministic` feature) is not used yet.
//!
//! Invariants:
//! - A module is validated once ([`validate`]) before it can be queued: size, wasm
//!   validity, imports (only the `xdv` host interface, exact signatures), an exported
//!   `run: [] -> []`, a non-zero budget. Nothing invalid reaches a run queue.
//! - One tick is exactly [`FUEL_PER_TICK`] units of wasmi fuel; a run gets
//!   `budget_ticks * FUEL_PER_TICK` fuel, so a budget is exact on every machine and
//!   the infinite loop stops at exactly its budget.
//! - Every run has its own store, instance and memory, with memory and table growth
//!   limited; a trap ends that run with its reason and touches nothing else.
//! - The host interface offers no clock, no randomness and no data of other tasks.
//! - A run can be stopped from outside ([`RunControl::cancel`]): fuel is handed out in
//!   slices of [`FUEL_SLICE`] and the flag is checked between slices, so a cancelled
//!   run (even `loop { }`) ends within one slice, `Trapped("cancelled")`. Slicing
//!   never changes a run's result: an uncancelled run uses exactly the fuel, ticks and
//!   outcome of one uninterrupted run (tested for every builtin at several slice sizes).
//!   The `progress` host call bumps [`RunControl::progress`], which the node reports
//!   to the log (its stuck timer); it returns 0 and changes nothing in the run.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use sha2::{Digest, Sha256};
use wasmi::{
    Caller, Config, Engine, Extern, Linker, Module, Store, StoreLimits, StoreLimitsBuilder,
    TrapCode, TypedResumableCall,
};
use xdv_sched::{TrapReason, Work, WorkOutcome, WorkResult};
use xdv_types::{CapabilityId, Hash32, Priority, TenantId};

/// Fuel units per tick of budget.
pub const FUEL_PER_TICK: u64 = 1000;
/// Fuel a run gets at a time (1000 ticks): the cancel flag is checked between slices.
pub const FUEL_SLICE: u64 = 1000 * FUEL_PER_TICK;

/// The outside's handle on one run: a cancel flag the run checks between fuel slices,
/// and the count of `progress` host calls the run made. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    cancel: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
}

impl RunControl {
    /// Asks the run to stop at its next fuel slice (`Trapped("cancelled")`).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// How many times the run called `progress` so far.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Acquire)
    }
}
/// Largest input, bytes.
pub use xdv_types::limits::MAX_INPUT_BYTES;
/// Largest module accepted, bytes.
pub use xdv_types::limits::MAX_MODULE_BYTES;
/// Largest output a task may write, bytes.
pub use xdv_types::limits::MAX_RUN_OUTPUT_BYTES as MAX_OUTPUT_BYTES;
/// Most log lines a task may append, and their length.
pub const MAX_LOG_LINES: usize = 16;
pub const MAX_LOG_LINE_BYTES: usize = 256;
/// Linear memory limit per task: 16 pages (1 MiB).
pub const MAX_MEMORY_PAGES: usize = 16;
/// Table size limit per task.
pub const MAX_TABLE_ELEMENTS: usize = 1000;
/// Largest budget, ticks (keeps `budget * FUEL_PER_TICK` far from overflow).
pub use xdv_types::limits::MAX_BUDGET_TICKS;
/// Most guards a task may carry.
pub use xdv_types::limits::MAX_GUARDS;
/// Host module name of every import.
pub const HOST_MODULE: &str = "xdv";
/// The one service capability: returns the length it was given.
pub const CAP_ECHO_LEN: CapabilityId = CapabilityId(1);

/// A task as submitted.
#[derive(Clone, Debug)]
pub struct TaskModule {
    pub tenant: TenantId,
    pub module: Vec<u8>,
    pub input: Vec<u8>,
    pub budget_ticks: u64,
    pub priority: Priority,
    pub guards: Vec<CapabilityId>,
}

/// Why a task was refused before queuing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationError {
    TooLarge {
        bytes: usize,
        limit: usize,
    },
    InputTooLarge {
        bytes: usize,
        limit: usize,
    },
    ZeroBudget,
    BudgetTooLarge {
        ticks: u64,
        limit: u64,
    },
    TooManyGuards {
        count: usize,
        limit: usize,
    },
    Malformed(String),
    ImportNotOffered {
        module: String,
        name: String,
    },
    ImportSignatureMismatch {
        name: String,
    },
    NoEntryPoint,
    /// The module uses a host function that reads or writes its memory but does not
    /// export that memory as `memory`.
    NoMemoryExport,
    /// Per-tenant limits above the sandbox-wide maxima.
    LimitsOverMaximum {
        memory_pages: usize,
        table_elements: usize,
    },
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidationError::TooLarge { bytes, limit } => write!(f, "module is {bytes} bytes, over the {limit}-byte limit"),
            ValidationError::InputTooLarge { bytes, limit } => write!(f, "input is {bytes} bytes, over the {limit}-byte limit"),
            ValidationError::ZeroBudget => f.write_str("tick budget is zero"),
            ValidationError::BudgetTooLarge { ticks, limit } => write!(f, "tick budget {ticks} is over the limit {limit}"),
            ValidationError::TooManyGuards { count, limit } => write!(f, "{count} guards, at most {limit}"),
            ValidationError::Malformed(e) => write!(f, "invalid WebAssembly: {e}"),
            ValidationError::LimitsOverMaximum { memory_pages, table_elements } => write!(
                f,
                "limits of {memory_pages} memory pages / {table_elements} table elements exceed the maxima {MAX_MEMORY_PAGES} / {MAX_TABLE_ELEMENTS}"
            ),
            ValidationError::ImportNotOffered { module, name } => {
                write!(f, "import `{module}.{name}` is not offered by the host (see docs/tasks.md)")
            }
            ValidationError::ImportSignatureMismatch { name } => write!(f, "import `xdv.{name}` has the wrong signature"),
            ValidationError::NoEntryPoint => f.write_str("no exported function `run` of type [] -> []"),
            ValidationError::NoMemoryExport => {
                f.write_str("module imports a host function that uses its memory but exports no memory named `memory`")
            }
        }
    }
}

/// Per-run host state.
struct Host {
    input: Arc<Vec<u8>>,
    output: Vec<u8>,
    log: Vec<String>,
    logical_time: i64,
    guards: Vec<CapabilityId>,
    limits: StoreLimits,
    /// Set when the task broke a host rule; the run ends as a trap with this reason.
    violation: Option<&'static str>,
    control: RunControl,
}

/// The engine every task shares: fuel metering on, **eager** compilation — with
/// wasmi's default lazy translation the first run of a function is charged fuel for
/// translating it, so the same task would use different ticks on its first run — and
/// no floating point: NaN bit patterns are the one place Wasm lets results depend on the
/// CPU, so modules with `f32`/`f64` types or instructions are refused at validation.
fn engine() -> Engine {
    let mut config = Config::default();
    config.consume_fuel(true);
    config.compilation_mode(wasmi::CompilationMode::Eager);
    config.floats(false);
    Engine::new(&config)
}

/// A validated module, ready to instantiate (cheap to clone: shared).
#[derive(Clone)]
pub struct ValidatedTask {
    engine: Engine,
    module: Module,
    pub tenant: TenantId,
    pub input: Arc<Vec<u8>>,
    pub budget_ticks: u64,
    pub priority: Priority,
    pub guards: Vec<CapabilityId>,
    pub module_hash: Hash32,
    pub module_bytes: usize,
    /// Growth limits of this task's store (its tenant's).
    pub limits: Limits,
}

impl fmt::Debug for ValidatedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ValidatedTask({}, {} bytes, budget {})",
            self.module_hash.short(),
            self.module_bytes,
            self.budget_ticks
        )
    }
}

fn linker(engine: &Engine) -> Linker<Host> {
    let mut l = Linker::<Host>::new(engine);
    // Each definition names a unique import; duplicates are impossible here.
    let _ = l.func_wrap(HOST_MODULE, "input_len", |c: Caller<'_, Host>| -> i32 {
        c.data().input.len() as i32
    });
    let _ = l.func_wrap(HOST_MODULE, "input_read", input_read);
    let _ = l.func_wrap(HOST_MODULE, "output_write", output_write);
    let _ = l.func_wrap(HOST_MODULE, "log", log_line);
    let _ = l.func_wrap(HOST_MODULE, "logical_time", |c: Caller<'_, Host>| -> i64 {
        c.data().logical_time
    });
    let _ = l.func_wrap(HOST_MODULE, "call_service", call_service);
    let _ = l.func_wrap(HOST_MODULE, "progress", |c: Caller<'_, Host>| -> i32 {
        c.data().control.progress.fetch_add(1, Ordering::AcqRel);
        0
    });
    l
}

/// Expected signature of each host import: (params, results).
fn host_signature(name: &str) -> Option<(&'static [wasmi::ValType], &'static [wasmi::ValType])> {
    use wasmi::ValType::{I32, I64};
    Some(match name {
        "input_len" => (&[], &[I32]),
        "input_read" => (&[I32, I32, I32], &[I32]),
        "output_write" => (&[I32, I32], &[I32]),
        "log" => (&[I32, I32], &[I32]),
        "logical_time" => (&[], &[I64]),
        "call_service" => (&[I32, I32, I32], &[I32]),
        "progress" => (&[], &[I32]),
        _ => return None,
    })
}

fn memory(c: &Caller<'_, Host>) -> Option<wasmi::Memory> {
    c.get_export("memory").and_then(Extern::into_memory)
}

/// input_read(ptr, len, offset) -> bytes copied, or -1 on a bad range.
fn input_read(mut c: Caller<'_, Host>, ptr: i32, len: i32, offset: i32) -> i32 {
    let input = c.data().input.clone();
    let (Ok(ptr), Ok(len), Ok(offset)) = (
        usize::try_from(ptr),
        usize::try_from(len),
        usize::try_from(offset),
    ) else {
        return -1;
    };
    let Some(src) = input.get(offset.min(input.len())..) else {
        return -1;
    };
    let n = len.min(src.len());
    match memory(&c) {
        Some(m) if m.write(&mut c, ptr, &src[..n]).is_ok() => n as i32,
        _ => -1,
    }
}

/// output_write(ptr, len) -> bytes written; over the output limit the task traps.
fn output_write(mut c: Caller<'_, Host>, ptr: i32, len: i32) -> i32 {
    let (Ok(ptr), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return -1;
    };
    if c.data().output.len() + len > MAX_OUTPUT_BYTES {
        c.data_mut().violation = Some("output limit exceeded");
        return -1;
    }
    let mut buf = alloc::vec![0u8; len];
    match memory(&c) {
        Some(m) if m.read(&c, ptr, &mut buf).is_ok() => {
            c.data_mut().output.extend_from_slice(&buf);
            len as i32
        }
        _ => -1,
    }
}

/// log(ptr, len) -> 0, or -1 when the line budget is used up or the range is bad.
fn log_line(mut c: Caller<'_, Host>, ptr: i32, len: i32) -> i32 {
    let (Ok(ptr), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return -1;
    };
    if c.data().log.len() >= MAX_LOG_LINES {
        return -1;
    }
    let mut buf = alloc::vec![0u8; len.min(MAX_LOG_LINE_BYTES)];
    match memory(&c) {
        Some(m) if m.read(&c, ptr, &mut buf).is_ok() => {
            // Invalid UTF-8 becomes U+FFFD (3 bytes); cut the converted line back to
            // the limit at a character boundary so a kept line never exceeds it.
            let line = String::from_utf8_lossy(&buf);
            let line = String::from(xdv_types::prefix_within(&line, MAX_LOG_LINE_BYTES));
            c.data_mut().log.push(line);
            0
        }
        _ => -1,
    }
}

/// call_service(cap, ptr, len): -1 unless the task's guards include `cap`.
/// Service 1 ([`CAP_ECHO_LEN`]) returns `len`. Unknown services return -2.
fn call_service(c: Caller<'_, Host>, cap: i32, _ptr: i32, len: i32) -> i32 {
    let Ok(cap) = u32::try_from(cap) else {
        return -1;
    };
    if !c.data().guards.contains(&CapabilityId(cap)) {
        return -1;
    }
    match CapabilityId(cap) {
        CAP_ECHO_LEN => len,
        _ => -2,
    }
}

/// Memory and table growth allowed to one task; per tenant (the cluster's quota),
/// never above [`MAX_MEMORY_PAGES`] / [`MAX_TABLE_ELEMENTS`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub memory_pages: usize,
    pub table_elements: usize,
}

impl Limits {
    /// The sandbox-wide maxima (what a tenant without a quota gets).
    pub const MAX: Limits = Limits {
        memory_pages: MAX_MEMORY_PAGES,
        table_elements: MAX_TABLE_ELEMENTS,
    };
}

/// Validates a task before it may be queued, with the sandbox-wide limits.
pub fn validate(task: &TaskModule) -> Result<ValidatedTask, ValidationError> {
    validate_with(task, Limits::MAX)
}

/// Validates a task under a tenant's `limits` (refused if they exceed the maxima).
pub fn validate_with(task: &TaskModule, limits: Limits) -> Result<ValidatedTask, ValidationError> {
    check_task(task, limits)?;
    let (engine, module) = compile(&task.module)?;
    Ok(validated(
        task,
        limits,
        engine,
        module,
        module_hash(&task.module),
    ))
}

/// [`validate_with`], compiling each distinct module once: `cache` keeps the compiled
/// modules of the most recently used module hashes. The result is the one
/// [`validate_with`] gives (same checks in the same order, same errors, and a run of
/// it gives the same result: compiling is a pure function of the module's bytes and
/// the sandbox's fixed engine configuration). Refused modules are not kept.
pub fn validate_cached(
    cache: &mut ModuleCache,
    task: &TaskModule,
    limits: Limits,
) -> Result<ValidatedTask, ValidationError> {
    check_task(task, limits)?;
    let hash = module_hash(&task.module);
    let (engine, module) = cache.get_or_compile(hash, &task.module)?;
    Ok(validated(task, limits, engine, module, hash))
}

/// Compiled modules by the SHA-256 of their bytes, at most `capacity`, the least
/// recently used one dropped first. What it holds never changes a result, only
/// whether a module is compiled again; hits and misses are counted.
pub struct ModuleCache {
    capacity: usize,
    /// hash -> (engine, module, last use).
    entries: BTreeMap<Hash32, (Engine, Module, u64)>,
    uses: u64,
    pub hits: u64,
    pub misses: u64,
}

impl ModuleCache {
    /// Modules a node keeps compiled by default.
    pub const DEFAULT_CAPACITY: usize = 32;

    pub fn new(capacity: usize) -> ModuleCache {
        ModuleCache {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
            uses: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, hash: &Hash32) -> bool {
        self.entries.contains_key(hash)
    }

    fn get_or_compile(
        &mut self,
        hash: Hash32,
        bytes: &[u8],
    ) -> Result<(Engine, Module), ValidationError> {
        self.uses += 1;
        if let Some((engine, module, used)) = self.entries.get_mut(&hash) {
            *used = self.uses;
            self.hits += 1;
            return Ok((engine.clone(), module.clone()));
        }
        self.misses += 1;
        let (engine, module) = compile(bytes)?;
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(h, _)| *h);
            if let Some(h) = oldest {
                self.entries.remove(&h);
            }
        }
        self.entries
            .insert(hash, (engine.clone(), module.clone(), self.uses));
        Ok((engine, module))
    }
}

fn module_hash(bytes: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(bytes).into())
}

/// The checks of a task that do not need its module compiled, in the order
/// [`validate_with`] makes them.
fn check_task(task: &TaskModule, limits: Limits) -> Result<(), ValidationError> {
    if limits.memory_pages > MAX_MEMORY_PAGES || limits.table_elements > MAX_TABLE_ELEMENTS {
        return Err(ValidationError::LimitsOverMaximum {
            memory_pages: limits.memory_pages,
            table_elements: limits.table_elements,
        });
    }
    if task.module.len() > MAX_MODULE_BYTES {
        return Err(ValidationError::TooLarge {
            bytes: task.module.len(),
            limit: MAX_MODULE_BYTES,
        });
    }
    if task.input.len() > MAX_INPUT_BYTES {
        return Err(ValidationError::InputTooLarge {
            bytes: task.input.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    if task.budget_ticks == 0 {
        return Err(ValidationError::ZeroBudget);
    }
    if task.budget_ticks > MAX_BUDGET_TICKS {
        return Err(ValidationError::BudgetTooLarge {
            ticks: task.budget_ticks,
            limit: MAX_BUDGET_TICKS,
        });
    }
    if task.guards.len() > MAX_GUARDS {
        return Err(ValidationError::TooManyGuards {
            count: task.guards.len(),
            limit: MAX_GUARDS,
        });
    }
    Ok(())
}

/// Compiles `bytes` with the sandbox's engine and checks its interface: only the
/// offered host imports with their exact signatures, a memory export if a host call
/// needs one, and an exported `run: [] -> []`.
fn compile(bytes: &[u8]) -> Result<(Engine, Module), ValidationError> {
    let engine = engine();
    let module = Module::new(&engine, bytes)
        .map_err(|e| ValidationError::Malformed(alloc::format!("{e}")))?;
    for import in module.imports() {
        let (m, n) = (import.module(), import.name());
        let sig = (m == HOST_MODULE).then(|| host_signature(n)).flatten();
        let Some((params, results)) = sig else {
            return Err(ValidationError::ImportNotOffered {
                module: m.into(),
                name: n.into(),
            });
        };
        match import.ty() {
            wasmi::ExternType::Func(f) if f.params() == params && f.results() == results => {}
            _ => return Err(ValidationError::ImportSignatureMismatch { name: n.into() }),
        }
    }
    let uses_memory = module.imports().any(|i| {
        matches!(
            i.name(),
            "input_read" | "output_write" | "log" | "call_service"
        )
    });
    let has_memory = module
        .exports()
        .any(|e| e.name() == "memory" && matches!(e.ty(), wasmi::ExternType::Memory(_)));
    if uses_memory && !has_memory {
        return Err(ValidationError::NoMemoryExport);
    }
    let entry = module.exports().find(|e| e.name() == "run");
    match entry.map(|e| e.ty().clone()) {
        Some(wasmi::ExternType::Func(f)) if f.params().is_empty() && f.results().is_empty() => {}
        _ => return Err(ValidationError::NoEntryPoint),
    }
    Ok((engine, module))
}

fn validated(
    task: &TaskModule,
    limits: Limits,
    engine: Engine,
    module: Module,
    module_hash: Hash32,
) -> ValidatedTask {
    ValidatedTask {
        engine,
        module,
        tenant: task.tenant,
        input: Arc::new(task.input.clone()),
        budget_ticks: task.budget_ticks,
        priority: task.priority,
        guards: task.guards.clone(),
        module_hash,
        module_bytes: task.module.len(),
        limits,
    }
}

/// The result of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResult {
    pub ticks_used: u64,
    pub outcome: WorkOutcome,
    pub output: Vec<u8>,
    pub log: Vec<String>,
}

fn trap_text(code: TrapCode) -> &'static str {
    match code {
        TrapCode::UnreachableCodeReached => "unreachable executed",
        TrapCode::MemoryOutOfBounds => "memory access out of bounds",
        TrapCode::TableOutOfBounds => "table access out of bounds",
        TrapCode::IndirectCallToNull => "indirect call to a null table entry",
        TrapCode::IntegerDivisionByZero => "integer division by zero",
        TrapCode::IntegerOverflow => "integer overflow",
        TrapCode::BadConversionToInteger => "invalid conversion to integer",
        TrapCode::StackOverflow => "call stack exhausted",
        TrapCode::BadSignature => "indirect call type mismatch",
        TrapCode::OutOfFuel => "out of fuel",
        TrapCode::GrowthOperationLimited => "growth limited",
    }
}

/// Runs a validated task with `budget_ticks` of fuel. Never panics on task behaviour.
pub fn run(task: &ValidatedTask, budget_ticks: u64, logical_time: i64) -> TaskResult {
    run_with(task, budget_ticks, logical_time, &RunControl::default())
}

/// [`run`] under `control`: stoppable between fuel slices, progress counted there.
pub fn run_with(
    task: &ValidatedTask,
    budget_ticks: u64,
    logical_time: i64,
    control: &RunControl,
) -> TaskResult {
    run_sliced(task, budget_ticks, logical_time, control, FUEL_SLICE)
}

fn run_sliced(
    task: &ValidatedTask,
    budget_ticks: u64,
    logical_time: i64,
    control: &RunControl,
    slice_fuel: u64,
) -> TaskResult {
    let budget_ticks = budget_ticks.min(MAX_BUDGET_TICKS);
    let fuel = budget_ticks * FUEL_PER_TICK;
    let limits = StoreLimitsBuilder::new()
        .memory_size(task.limits.memory_pages * 65536)
        .table_elements(task.limits.table_elements)
        .build();
    let host = Host {
        input: task.input.clone(),
        output: Vec::new(),
        log: Vec::new(),
        logical_time,
        guards: task.guards.clone(),
        limits,
        violation: None,
        control: control.clone(),
    };
    let mut store = Store::new(&task.engine, host);
    store.limiter(|h| &mut h.limits);
    // `granted`: the fuel handed to the store so far (all of it but what is withheld).
    let trapped = |store: &Store<Host>, granted: u64, reason: &str| TaskResult {
        ticks_used: ticks_of(granted - store.get_fuel().unwrap_or(0), budget_ticks),
        outcome: WorkOutcome::Trapped {
            reason: TrapReason::new(reason),
        },
        output: store.data().output.clone(),
        log: store.data().log.clone(),
    };
    if store.set_fuel(fuel).is_err() {
        return trapped(&store, fuel, "fuel metering unavailable");
    }
    let linker = linker(&task.engine);
    let instance = match linker.instantiate_and_start(&mut store, &task.module) {
        Ok(i) => i,
        Err(e) => {
            return classify(&store, &e, fuel, budget_ticks)
                .unwrap_or_else(|| trapped(&store, fuel, "instantiation failed"));
        }
    };
    let Ok(entry) = instance.get_typed_func::<(), ()>(&store, "run") else {
        return trapped(&store, fuel, "no entry point");
    };
    // Fuel left after instantiation; the store holds one slice of it at a time and the
    // rest (`withheld`) is handed out slice by slice, so consumed fuel is always
    // `fuel - store fuel - withheld`, exactly as in one uninterrupted run.
    let left = store.get_fuel().unwrap_or(0);
    let first = left.min(slice_fuel.max(1));
    let mut withheld = left - first;
    if store.set_fuel(first).is_err() {
        return trapped(&store, fuel, "fuel metering unavailable");
    }
    let mut call = entry.call_resumable(&mut store, ());
    let result = loop {
        match call {
            Ok(TypedResumableCall::Finished(())) => break Ok(()),
            Ok(TypedResumableCall::OutOfFuel(inv)) => {
                let in_store = store.get_fuel().unwrap_or(0);
                let needed = inv.required_fuel();
                if control.cancelled() {
                    return trapped(&store, fuel - withheld, "cancelled");
                }
                if in_store.saturating_add(withheld) < needed {
                    // What one run would do: out of fuel, at exactly its budget.
                    break Err(wasmi::Error::from(TrapCode::OutOfFuel));
                }
                let give = withheld.min(slice_fuel.max(needed));
                withheld -= give;
                if store.set_fuel(in_store + give).is_err() {
                    return trapped(&store, fuel - withheld, "fuel metering unavailable");
                }
                call = inv.resume(&mut store);
            }
            Ok(TypedResumableCall::HostTrap(_)) => break Err(wasmi::Error::new("host trap")),
            Err(e) => break Err(e),
        }
    };
    let fuel = fuel - withheld;
    if let Some(v) = store.data().violation {
        return trapped(&store, fuel, v);
    }
    match result {
        Ok(()) => {
            let h = store.data();
            TaskResult {
                ticks_used: ticks_of(fuel - store.get_fuel().unwrap_or(0), budget_ticks),
                outcome: WorkOutcome::Completed {
                    output_hash: Hash32(Sha256::digest(&h.output).into()),
                },
                output: h.output.clone(),
                log: h.log.clone(),
            }
        }
        Err(e) => classify(&store, &e, fuel, budget_ticks)
            .unwrap_or_else(|| trapped(&store, fuel, "host error")),
    }
}

/// Turns a wasmi error into an outcome: out of fuel ⇒ BudgetExceeded at exactly the
/// budget; any other trap ⇒ Trapped with its reason.
fn classify(
    store: &Store<Host>,
    e: &wasmi::Error,
    fuel: u64,
    budget_ticks: u64,
) -> Option<TaskResult> {
    let code = e.as_trap_code()?;
    let data = store.data();
    Some(if code == TrapCode::OutOfFuel {
        TaskResult {
            ticks_used: budget_ticks,
            outcome: WorkOutcome::BudgetExceeded,
            output: data.output.clone(),
            log: data.log.clone(),
        }
    } else {
        TaskResult {
            ticks_used: ticks_of(fuel - store.get_fuel().unwrap_or(0), budget_ticks),
            outcome: WorkOutcome::Trapped {
                reason: TrapReason::new(trap_text(code)),
            },
            output: data.output.clone(),
            log: data.log.clone(),
        }
    })
}

/// Ticks for `consumed` fuel: rounded up, at most the budget.
fn ticks_of(consumed: u64, budget_ticks: u64) -> u64 {
    consumed.div_ceil(FUEL_PER_TICK).min(budget_ticks)
}

/// A queued sandbox task for the run queues (`xdv_sched::Work`).
#[derive(Clone, Debug)]
pub struct SandboxWork {
    pub task: ValidatedTask,
    pub logical_time: i64,
    /// Output bytes of the last run, kept for the submitter.
    pub output: Vec<u8>,
    /// The `log()` lines of the last run, kept for the submitter.
    pub log: Vec<String>,
    /// Cancel flag and progress count, shared with whoever queued it.
    pub control: RunControl,
}

impl Work for SandboxWork {
    fn run(&mut self, budget_ticks: u64) -> WorkResult {
        let r = run_with(&self.task, budget_ticks, self.logical_time, &self.control);
        self.output = r.output;
        self.log = r.log;
        WorkResult {
            ticks_used: r.ticks_used,
            outcome: r.outcome,
        }
    }
}

/// A bundled example module.
pub struct Builtin {
    pub name: &'static str,
    pub wasm: &'static [u8],
    pub default_input: &'static [u8],
    pub default_budget: u64,
    pub summary: &'static str,
}

pub static BUILTINS: &[Builtin] = &[
    Builtin {
        name: "loop",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/loop.wasm")),
        default_input: b"",
        default_budget: 1000,
        summary: "infinite loop; stops at exactly its budget",
    },
    Builtin {
        name: "grow",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/grow.wasm")),
        default_input: b"",
        default_budget: 1000,
        summary: "memory-grow bomb; refused at the limit, outputs the page count reached",
    },
    Builtin {
        name: "hash",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/hash.wasm")),
        default_input:
            b"the quick brown fox jumps over the lazy dog; xdv hashes it deterministically",
        default_budget: 100,
        summary: "FNV-1a 64 over the input",
    },
    Builtin {
        name: "sort",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/sort.wasm")),
        default_input: b"deterministic cluster kernel: sort these bytes, please",
        default_budget: 1000,
        summary: "insertion sort of the input bytes",
    },
];

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// A validated task for builtin `b` with `budget` ticks (default if `None`).
pub fn builtin_task(
    b: &Builtin,
    budget: Option<u64>,
    guards: Vec<CapabilityId>,
) -> Result<ValidatedTask, ValidationError> {
    validate(&TaskModule {
        tenant: TenantId(0),
        module: b.wasm.to_vec(),
        input: b.default_input.to_vec(),
        budget_ticks: budget.unwrap_or(b.default_budget),
        priority: Priority::Normal,
        guards,
    })
}

/// (name, ticks, outcome) of every builtin with its default input and budget: the
/// values the QEMU test compares the kernel's results with.
pub fn reference_results() -> Vec<(&'static str, u64, WorkOutcome)> {
    BUILTINS
        .iter()
        .map(|b| {
            let t = builtin_task(b, None, Vec::new()).map(|t| run(&t, t.budget_ticks, 0));
            match t {
                Ok(r) => (b.name, r.ticks_used, r.outcome),
                Err(e) => (
                    b.name,
                    0,
                    WorkOutcome::Trapped {
                        reason: TrapReason::new(&alloc::format!("{e}")),
                    },
                ),
            }
        })
        .collect()
}

#[cfg(any(test, feature = "std"))]
pub mod fuzz;
#[cfg(test)]
mod tests;
