use super::*;
use alloc::vec;

fn task(
    wat: &str,
    budget: u64,
    guards: Vec<CapabilityId>,
) -> Result<ValidatedTask, ValidationError> {
    validate(&TaskModule {
        tenant: TenantId(1),
        module: wat::parse_str(wat).unwrap(),
        input: b"abc".to_vec(),
        budget_ticks: budget,
        priority: Priority::Normal,
        guards,
    })
}

fn trap_of(wat: &str) -> String {
    let t = task(wat, 1000, vec![]).unwrap();
    match run(&t, 1000, 0).outcome {
        WorkOutcome::Trapped { reason } => String::from(reason.as_str()),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn builtins_are_deterministic_over_100_runs() {
    for b in BUILTINS {
        let t = builtin_task(b, None, vec![]).unwrap();
        let first = run(&t, t.budget_ticks, 7);
        for _ in 0..100 {
            assert_eq!(
                run(&t, t.budget_ticks, 7),
                first,
                "{} differs between runs",
                b.name
            );
        }
        std::println!(
            "builtin {}: ticks={} outcome={:?}",
            b.name,
            first.ticks_used,
            first.outcome
        );
    }
}

#[test]
fn builtin_outputs_are_correct() {
    let hash = builtin_task(builtin("hash").unwrap(), None, vec![]).unwrap();
    let r = run(&hash, 100, 0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in builtin("hash").unwrap().default_input {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    assert_eq!(r.output, h.to_le_bytes(), "{r:?}");
    let sort = builtin_task(builtin("sort").unwrap(), None, vec![]).unwrap();
    let r = run(&sort, 1000, 0);
    let mut want = builtin("sort").unwrap().default_input.to_vec();
    want.sort_unstable();
    assert_eq!(r.output, want, "{r:?}");
    assert!(matches!(r.outcome, WorkOutcome::Completed { .. }));
}

#[test]
fn infinite_loop_stops_at_exactly_its_budget() {
    let t = builtin_task(builtin("loop").unwrap(), Some(777), vec![]).unwrap();
    for budget in [1, 2, 777, 5000] {
        let r = run(&t, budget, 0);
        assert_eq!(r.outcome, WorkOutcome::BudgetExceeded);
        assert_eq!(r.ticks_used, budget);
    }
}

#[test]
fn grow_bomb_is_refused_at_the_limit() {
    let t = builtin_task(builtin("grow").unwrap(), None, vec![]).unwrap();
    let r = run(&t, 1000, 0);
    assert!(matches!(r.outcome, WorkOutcome::Completed { .. }), "{r:?}");
    assert_eq!(
        r.output,
        (MAX_MEMORY_PAGES as u32).to_le_bytes(),
        "pages reached"
    );
}

#[test]
fn every_trap_kind_is_reported_with_its_reason() {
    assert_eq!(
        trap_of(r#"(module (func (export "run") unreachable))"#),
        "unreachable executed"
    );
    assert_eq!(
        trap_of(r#"(module (func (export "run") (drop (i32.div_u (i32.const 1) (i32.const 0)))))"#),
        "integer division by zero"
    );
    assert_eq!(
        trap_of(r#"(module (memory 1) (func (export "run") (drop (i32.load (i32.const 70000)))))"#),
        "memory access out of bounds"
    );
    assert_eq!(
        trap_of(r#"(module (func $f (call $f)) (func (export "run") (call $f)))"#),
        "call stack exhausted"
    );
    assert_eq!(
        trap_of(
            r#"(module (type $t (func (result i32))) (table 1 funcref) (elem (i32.const 0) $g)
               (func $g) (func (export "run") (drop (call_indirect (type $t) (i32.const 0)))))"#
        ),
        "indirect call type mismatch"
    );
    assert_eq!(
        trap_of(
            r#"(module (func (export "run") (drop (i32.div_s (i32.const -2147483648) (i32.const -1)))))"#
        ),
        "integer overflow"
    );
}

#[test]
fn a_trap_does_not_disturb_the_next_task() {
    let bad = task(r#"(module (func (export "run") unreachable))"#, 10, vec![]).unwrap();
    let good = builtin_task(builtin("hash").unwrap(), None, vec![]).unwrap();
    let before = run(&good, 100, 0);
    let _ = run(&bad, 10, 0);
    assert_eq!(run(&good, 100, 0), before);
}

#[test]
fn validation_errors_are_specific() {
    let ok = r#"(module (func (export "run")))"#;
    assert_eq!(
        task(ok, 0, vec![]).unwrap_err(),
        ValidationError::ZeroBudget
    );
    assert!(matches!(
        task(ok, MAX_BUDGET_TICKS + 1, vec![]),
        Err(ValidationError::BudgetTooLarge { .. })
    ));
    assert!(matches!(
        task(ok, 1, vec![CapabilityId(1); 9]),
        Err(ValidationError::TooManyGuards { .. })
    ));
    assert!(matches!(
        task(
            r#"(module (import "env" "clock" (func)) (func (export "run")))"#,
            1,
            vec![]
        ),
        Err(ValidationError::ImportNotOffered { .. })
    ));
    assert!(matches!(
        task(
            r#"(module (import "xdv" "input_len" (func (result i64))) (func (export "run")))"#,
            1,
            vec![]
        ),
        Err(ValidationError::ImportSignatureMismatch { .. })
    ));
    assert_eq!(
        task(r#"(module (func (export "go")))"#, 1, vec![]).unwrap_err(),
        ValidationError::NoEntryPoint
    );
    assert_eq!(
        task(r#"(module (import "xdv" "log" (func (param i32 i32) (result i32))) (memory 1) (func (export "run")))"#, 1, vec![])
            .unwrap_err(),
        ValidationError::NoMemoryExport
    );
    let bad = TaskModule {
        tenant: TenantId(1),
        module: vec![0, 1, 2, 3],
        input: vec![],
        budget_ticks: 1,
        priority: Priority::Low,
        guards: vec![],
    };
    assert!(matches!(validate(&bad), Err(ValidationError::Malformed(_))));
    let big = TaskModule {
        module: vec![0; MAX_MODULE_BYTES + 1],
        ..bad.clone()
    };
    assert!(matches!(
        validate(&big),
        Err(ValidationError::TooLarge { .. })
    ));
}

#[test]
fn services_check_the_tasks_guards() {
    let wat = r#"(module (import "xdv" "call_service" (func $s (param i32 i32 i32) (result i32)))
        (import "xdv" "output_write" (func $o (param i32 i32) (result i32))) (memory (export "memory") 1)
        (func (export "run") (i32.store (i32.const 0) (call $s (i32.const 1) (i32.const 0) (i32.const 42)))
          (drop (call $o (i32.const 0) (i32.const 4)))))"#;
    let granted = task(wat, 100, vec![CAP_ECHO_LEN]).unwrap();
    assert_eq!(run(&granted, 100, 0).output, 42i32.to_le_bytes());
    let denied = task(wat, 100, vec![]).unwrap();
    assert_eq!(run(&denied, 100, 0).output, (-1i32).to_le_bytes());
}

#[test]
fn fuzz_smoke_never_panics() {
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds: Vec<&[u8]> = BUILTINS.iter().map(|b| b.wasm).collect();
    for i in 0..3000 {
        let mut bytes = if i % 2 == 0 {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            seeds[i % seeds.len()].to_vec()
        };
        if i % 2 == 1 {
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
        }
        let t = TaskModule {
            tenant: TenantId(1),
            module: bytes,
            input: vec![1, 2, 3],
            budget_ticks: 20,
            priority: Priority::Low,
            guards: vec![],
        };
        if let Ok(v) = validate(&t) {
            let r = run(&v, 20, 0);
            assert!(r.ticks_used <= 20);
        }
    }
}

#[test]
fn a_log_line_of_invalid_utf8_is_kept_within_its_byte_limit() {
    // 300 bytes of 0xff: each becomes U+FFFD (3 bytes) before the cut.
    let wat = r#"(module
        (import "xdv" "log" (func $log (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff\ff")
        (func (export "run")
            (drop (call $log (i32.const 0) (i32.const 300)))))"#;
    let t = task(wat, 100, vec![]).unwrap();
    let r = run(&t, 100, 0);
    assert_eq!(r.log.len(), 1, "{r:?}");
    assert!(
        r.log[0].len() <= MAX_LOG_LINE_BYTES,
        "{} bytes",
        r.log[0].len()
    );
    assert!(r.log[0].starts_with('\u{fffd}'));
}

#[test]
fn a_tenants_limits_stop_the_grow_bomb_earlier_and_cannot_exceed_the_maxima() {
    let b = builtin("grow").unwrap();
    let module = TaskModule {
        tenant: TenantId(7),
        module: b.wasm.to_vec(),
        input: b.default_input.to_vec(),
        budget_ticks: b.default_budget,
        priority: Priority::Normal,
        guards: vec![],
    };
    let small = Limits {
        memory_pages: 4,
        table_elements: 10,
    };
    let t = validate_with(&module, small).unwrap();
    let r = run(&t, 1000, 0);
    assert!(matches!(r.outcome, WorkOutcome::Completed { .. }), "{r:?}");
    assert_eq!(
        r.output,
        4u32.to_le_bytes(),
        "pages reached under the tenant limit"
    );
    let too_big = Limits {
        memory_pages: MAX_MEMORY_PAGES + 1,
        table_elements: 10,
    };
    assert!(matches!(
        validate_with(&module, too_big),
        Err(ValidationError::LimitsOverMaximum { .. })
    ));
}

#[test]
fn floating_point_modules_are_refused_at_validation() {
    let wat = r#"(module (func (export "run") (drop (f64.add (f64.const 1) (f64.const 2)))))"#;
    match task(wat, 10, vec![]) {
        Err(ValidationError::Malformed(e)) => assert!(e.contains("float"), "{e}"),
        other => panic!("a float module validated: {:?}", other.map(|_| ())),
    }
    let wat = r#"(module (func (export "run") (param) (local f32)))"#;
    assert!(matches!(
        task(wat, 10, vec![]),
        Err(ValidationError::Malformed(_))
    ));
    // Integer-only modules are unaffected.
    assert!(task(r#"(module (func (export "run")))"#, 10, vec![]).is_ok());
}

/// Fuel slices (the cancel points) never change a run: every builtin, at several
/// budgets (ending normally and out of fuel), gives the same ticks, outcome and output
/// at every slice size as in one uninterrupted run.
#[test]
fn fuel_slicing_does_not_change_results() {
    let spin = "(module (func (export \"run\") (loop $l (br $l))))";
    let mut tasks: Vec<(String, ValidatedTask)> = BUILTINS
        .iter()
        .map(|b| (String::from(b.name), builtin_task(b, None, vec![]).unwrap()))
        .collect();
    tasks.push(("spin".into(), task(spin, 10, vec![]).unwrap()));
    let ctl = RunControl::default();
    for (name, t) in &tasks {
        for budget in [1, 3, 10, 57, 1000] {
            let whole = run_sliced(t, budget, 5, &ctl, u64::MAX);
            for slice in [1, 7, 999, 1000, 4096, FUEL_SLICE] {
                assert_eq!(
                    run_sliced(t, budget, 5, &ctl, slice),
                    whole,
                    "{name}, budget {budget}, slice {slice}"
                );
            }
        }
    }
}

/// A cancelled run stops within one fuel slice, even an endless loop.
#[test]
fn a_cancelled_run_stops_within_one_slice() {
    let spin = "(module (func (export \"run\") (loop $l (br $l))))";
    let t = task(spin, 1 << 30, vec![]).unwrap();
    let ctl = RunControl::default();
    ctl.cancel();
    let r = run_with(&t, 1 << 30, 0, &ctl);
    assert_eq!(
        r.outcome,
        WorkOutcome::Trapped {
            reason: TrapReason::new("cancelled")
        }
    );
    assert!(
        r.ticks_used <= FUEL_SLICE / FUEL_PER_TICK,
        "{}",
        r.ticks_used
    );
    // Not cancelled: the same module runs to its budget.
    let r = run_with(&t, 3000, 0, &RunControl::default());
    assert_eq!(
        (r.outcome, r.ticks_used),
        (WorkOutcome::BudgetExceeded, 3000)
    );
}

/// `progress` is counted on the run's control and changes nothing else.
#[test]
fn progress_calls_are_counted() {
    let wat = r#"(module
        (import "xdv" "progress" (func $p (result i32)))
        (func (export "run")
            (drop (call $p)) (drop (call $p)) (drop (call $p))))"#;
    let t = task(wat, 100, vec![]).unwrap();
    let ctl = RunControl::default();
    let r = run_with(&t, 100, 0, &ctl);
    assert!(matches!(r.outcome, WorkOutcome::Completed { .. }));
    assert_eq!(ctl.progress(), 3);
    assert_eq!(run(&t, 100, 0), r, "the count does not change the result");
    let bad = r#"(module (import "xdv" "progress" (func $p (param i32) (result i32)))
        (func (export "run")))"#;
    assert!(matches!(
        task(bad, 100, vec![]),
        Err(ValidationError::ImportSignatureMismatch { .. })
    ));
}

fn module_task(module: Vec<u8>, input: Vec<u8>, budget_ticks: u64) -> TaskModule {
    TaskModule {
        tenant: TenantId(1),
        module,
        input,
        budget_ticks,
        priority: Priority::Normal,
        guards: vec![],
    }
}

/// A cached validation is the uncached one: same runs (every builtin, twice: the
/// second from the cache), same errors in the same order, refused modules not kept.
#[test]
fn the_module_cache_compiles_once_and_changes_no_result() {
    let mut cache = ModuleCache::new(ModuleCache::DEFAULT_CAPACITY);
    for round in 0..2 {
        for b in BUILTINS {
            let t = module_task(b.wasm.to_vec(), b.default_input.to_vec(), b.default_budget);
            let cached = validate_cached(&mut cache, &t, Limits::MAX).unwrap();
            let fresh = validate_with(&t, Limits::MAX).unwrap();
            assert_eq!(cached.module_hash, fresh.module_hash);
            assert_eq!(
                run(&cached, t.budget_ticks, 3),
                run(&fresh, t.budget_ticks, 3),
                "{} (round {round})",
                b.name
            );
        }
    }
    let n = BUILTINS.len() as u64;
    assert_eq!((cache.misses, cache.hits), (n, n));
    // A module's per-task checks still apply to a cached module.
    let first = BUILTINS[0].wasm.to_vec();
    assert_eq!(
        validate_cached(
            &mut cache,
            &module_task(first.clone(), vec![], 0),
            Limits::MAX
        )
        .unwrap_err(),
        ValidationError::ZeroBudget
    );
    let over = Limits {
        memory_pages: MAX_MEMORY_PAGES + 1,
        ..Limits::MAX
    };
    assert!(matches!(
        validate_cached(&mut cache, &module_task(first, vec![], 1), over),
        Err(ValidationError::LimitsOverMaximum { .. })
    ));
    // Refused modules: the same error as uncached, and nothing kept.
    let before = cache.len();
    for bad in [
        vec![0, 1, 2, 3],
        wat::parse_str(r#"(module (func (export "go")))"#).unwrap(),
    ] {
        let t = module_task(bad, vec![], 1);
        for _ in 0..2 {
            assert_eq!(
                validate_cached(&mut cache, &t, Limits::MAX).unwrap_err(),
                validate_with(&t, Limits::MAX).unwrap_err()
            );
        }
    }
    assert_eq!(cache.len(), before);
}

/// The cache holds at most its capacity; the least recently used module goes first.
#[test]
fn the_module_cache_drops_the_least_recently_used() {
    let modules: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            wat::parse_str(alloc::format!(
                r#"(module (func (export "run")) (func (export "f{i}")))"#
            ))
            .unwrap()
        })
        .collect();
    let hash = |m: &[u8]| Hash32(Sha256::digest(m).into());
    let mut cache = ModuleCache::new(2);
    let use_module = |cache: &mut ModuleCache, i: usize| {
        validate_cached(
            cache,
            &module_task(modules[i].clone(), vec![], 1),
            Limits::MAX,
        )
        .unwrap();
    };
    use_module(&mut cache, 0);
    use_module(&mut cache, 1);
    use_module(&mut cache, 0); // 1 is now the least recently used
    use_module(&mut cache, 2);
    assert_eq!(cache.len(), 2);
    assert!(cache.contains(&hash(&modules[0])));
    assert!(!cache.contains(&hash(&modules[1])));
    assert!(cache.contains(&hash(&modules[2])));
    assert_eq!((cache.misses, cache.hits), (3, 1));
}
