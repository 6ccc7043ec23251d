//! The kernel's batch protocol, end to end on real threads: tasks travel to each
//! "core" through a static `SpscRing<CoreMsg<_>>`, outcomes come back through an
//! `MpmcQueue`, and the boot thread seals them. After every batch the head hash must
//! equal the one `DeterministicScheduler` computes in one thread for the same batches.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, Ordering};

use xdv_sched::{
    BuiltinWork, CoreEvent, CoreMsg, CoreRunner, DeterministicScheduler, Full, Guards,
    MaskPlacement, MpmcQueue, ReplayLog, SpscRing, Submitter, TaskSpec,
};
use xdv_types::{CapabilityId, CoreId, Priority, TaskId, TenantId};

const CORES: usize = 4;
const RING_SLOTS: usize = 8; // smaller than a batch: producers must wait for consumers
const TASKS: u64 = 40;
const GRANT: CapabilityId = CapabilityId(3);

static RINGS: [SpscRing<CoreMsg<BuiltinWork>, RING_SLOTS>; CORES] =
    [const { SpscRing::new() }; CORES];

fn tasks() -> Vec<TaskSpec<BuiltinWork>> {
    (0..TASKS)
        .map(|i| TaskSpec {
            id: TaskId(i * 7 + 1),
            tenant: TenantId(0),
            priority: [Priority::Low, Priority::High, Priority::Normal][(i % 3) as usize],
            guards: if i % 5 == 0 {
                Guards::new(&[CapabilityId(9)]).expect("one")
            } else {
                Guards::new(&[GRANT]).expect("one")
            },
            budget_ticks: 120,
            work: match i % 4 {
                0 => BuiltinWork::Sort { n: 20, seed: i },
                1 => BuiltinWork::HashChain { steps: i * 5 },
                2 => BuiltinWork::Empty,
                _ => BuiltinWork::Trap { code: i as u32 },
            },
        })
        .collect()
}

const BATCHES: usize = 3;

/// Head hash after each of BATCHES batches of `tasks()`, computed in one thread.
fn host_heads() -> Vec<xdv_types::Hash32> {
    let mut s = DeterministicScheduler::new(CORES as u16, MaskPlacement).expect("cores");
    s.grant_all(GRANT).expect("room");
    (0..BATCHES)
        .map(|_| {
            for t in tasks() {
                s.submit(t).expect("room");
            }
            s.run_until_idle().expect("room").head_hash()
        })
        .collect()
}

#[test]
fn threads_through_rings_reproduce_the_host_log() {
    let expect = host_heads();
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for ring in &RINGS {
        let (p, c) = ring.split().expect("each static ring is split once");
        producers.push(p);
        consumers.push(c);
    }
    let outcomes: MpmcQueue<(u16, Vec<CoreEvent>)> = MpmcQueue::new(8).expect("capacity");
    let done = AtomicBool::new(false);
    let mut heads = Vec::new();
    std::thread::scope(|s| {
        for (core, mut rx) in consumers.into_iter().enumerate() {
            let (outcomes, done) = (&outcomes, &done);
            s.spawn(move || {
                let mut runner = CoreRunner::<BuiltinWork>::new(CoreId(core as u16));
                runner.grant(GRANT).expect("room");
                let mut events = Vec::new();
                loop {
                    match rx.pop() {
                        Some(msg) => match runner.accept(msg).expect("room") {
                            Some(ev) => events.push(ev),
                            None => {
                                events.extend(runner.run_until_idle());
                                let mut batch = (core as u16, std::mem::take(&mut events));
                                while let Err(Full(back)) = outcomes.push(batch) {
                                    batch = back;
                                    std::thread::yield_now();
                                }
                            }
                        },
                        None if done.load(Ordering::Acquire) => return,
                        None => std::thread::yield_now(),
                    }
                }
            });
        }
        // Successive batches on the same cores, as repeated `sched demo` runs.
        let mut sub = Submitter::new(CORES as u16, MaskPlacement).expect("cores");
        let mut log = ReplayLog::new();
        for _ in 0..BATCHES {
            for t in tasks() {
                let (core, stamp) = sub.assign(t.id);
                let mut msg = CoreMsg::Task { task: t, stamp };
                while let Err(Full(back)) = producers[usize::from(core.0)].push(msg) {
                    msg = back;
                    std::thread::yield_now();
                }
            }
            for p in producers.iter_mut() {
                while p.push(CoreMsg::Seal).is_err() {
                    std::thread::yield_now();
                }
            }
            let mut streams = Vec::new();
            while streams.len() < CORES {
                match outcomes.pop() {
                    Some((_core, evs)) => streams.push(evs),
                    None => std::thread::yield_now(),
                }
            }
            sub.seal(streams, &mut log).expect("room");
            log.verify().expect("valid chain");
            heads.push(log.head_hash());
        }
        done.store(true, Ordering::Release);
    });
    assert_eq!(heads, expect);
    assert_eq!(heads.len(), BATCHES);
}
