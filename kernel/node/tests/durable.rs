//! Durable Raft storage: round trips, truncation, wrap-around, torn writes at every
//! write of a workload, flipped bytes, both header copies damaged, foreign regions.

use xdv_node::{DurableStorage, OpenError, Opened, TearRegion};
use xdv_raft::{Entry, EntryKind, HardState, NodeId, Snapshot, SnapshotMeta, Storage};

const REGION: usize = 256 * 1024;

/// Entry `n` of the log after the bootstrap snapshot (which holds index 1).
fn entry(n: u64, term: u64, size: usize) -> Entry {
    let index = n + 1;
    Entry {
        index,
        term,
        kind: EntryKind::Normal(vec![(index % 251) as u8; size]),
    }
}

fn voters() -> Vec<NodeId> {
    vec![NodeId(1), NodeId(2), NodeId(3)]
}

fn fresh() -> DurableStorage<Vec<u8>> {
    let (s, o) = DurableStorage::open(vec![0u8; REGION], 7, 1, &voters()).unwrap();
    assert_eq!(o, Opened::Fresh);
    s
}

fn reopen(s: DurableStorage<Vec<u8>>) -> DurableStorage<Vec<u8>> {
    DurableStorage::open(s.into_region(), 7, 1, &voters())
        .unwrap()
        .0
}

fn all(s: &impl Storage) -> Vec<Entry> {
    if s.last_index() < s.first_index() {
        return vec![];
    }
    s.entries(s.first_index(), s.last_index() + 1, usize::MAX)
        .unwrap()
}

#[test]
fn round_trip_restores_log_hard_state_and_conf() {
    let mut s = fresh();
    s.append(&(1..=20).map(|i| entry(i, 1, 100)).collect::<Vec<_>>());
    let hs = HardState {
        term: 3,
        vote: Some(NodeId(2)),
        commit: 15,
    };
    s.set_hard_state(hs);
    let before = all(&s);
    let s = reopen(s);
    assert_eq!(s.hard_state(), hs);
    assert_eq!(all(&s), before);
    assert_eq!(s.initial_conf().voters, voters());
}

#[test]
fn truncation_leaves_no_stale_tail() {
    let mut s = fresh();
    s.append(&(1..=10).map(|i| entry(i, 1, 40)).collect::<Vec<_>>());
    s.append(&[entry(6, 2, 40)]);
    let s = reopen(s);
    assert_eq!(s.last_index(), 7);
    assert_eq!(s.term(7).unwrap(), 2);
    assert_eq!(s.term(6).unwrap(), 1);
}

#[test]
fn wraps_around_with_compaction_and_reopens_each_time() {
    let mut s = fresh();
    let mut next = 1;
    let mut term = 1;
    for round in 0..60u64 {
        let batch: Vec<Entry> = (next..next + 7).map(|i| entry(i, term, 900)).collect();
        s.append(&batch);
        next += 7;
        if s.nearly_full() || round % 5 == 4 {
            let at = next - 3 + 1;
            s.save_snapshot(Snapshot {
                meta: SnapshotMeta {
                    index: at,
                    term,
                    conf: s.initial_conf(),
                },
                data: vec![round as u8; 300],
            });
            s.compact(at);
        }
        if round % 9 == 8 {
            term += 1;
            // Overwrite the last two entries with a new term.
            s.append(&[entry(next - 2, term, 500), entry(next - 1, term, 500)]);
        }
        let before = all(&s);
        let (first, last) = (s.first_index(), s.last_index());
        s = reopen(s);
        assert_eq!(
            (s.first_index(), s.last_index()),
            (first, last),
            "round {round}"
        );
        assert_eq!(all(&s), before, "round {round}");
    }
    assert!(s.stats().records_written == 0, "reopen resets counters");
}

#[test]
fn install_snapshot_discards_the_log() {
    let mut s = fresh();
    s.append(&(1..=10).map(|i| entry(i, 1, 40)).collect::<Vec<_>>());
    s.install_snapshot(Snapshot {
        meta: SnapshotMeta {
            index: 50,
            term: 4,
            conf: s.initial_conf(),
        },
        data: vec![9; 1000],
    });
    s.append(&[entry(50, 4, 10)]);
    let s = reopen(s);
    assert_eq!(s.first_index(), 51);
    assert_eq!(s.last_index(), 51);
    assert_eq!(s.snapshot().data, vec![9; 1000]);
}

#[test]
fn append_writes_only_the_new_records() {
    let mut s = fresh();
    for i in 1..=200 {
        let before = s.stats().record_bytes_written;
        s.append(&[entry(i, 1, 64)]);
        let cost = s.stats().record_bytes_written - before;
        assert_eq!(cost, 56 + 64 + 8, "entry {i}");
    }
    assert_eq!(s.stats().header_writes, 1, "only the format wrote a header");
}

/// A workload whose every durable write is torn in turn: the reopened storage must
/// hold at least what was durable before the torn write and at most what the torn
/// operation would have made durable.
#[test]
fn a_torn_write_anywhere_loses_nothing_that_was_durable() {
    fn workload(s: &mut DurableStorage<TearRegion>, steps: &mut Vec<(HardState, Vec<Entry>)>) {
        let mut term = 1;
        for i in 1..=24u64 {
            s.append(&[entry(i, term, 30 + (i as usize % 5) * 50)]);
            steps.push((s.hard_state(), all(s)));
            if i % 4 == 0 {
                s.set_hard_state(HardState {
                    term,
                    vote: Some(NodeId(1)),
                    commit: i - 1,
                });
                steps.push((s.hard_state(), all(s)));
            }
            if i % 10 == 0 {
                s.save_snapshot(Snapshot {
                    meta: SnapshotMeta {
                        index: i - 2,
                        term,
                        conf: s.initial_conf(),
                    },
                    data: vec![i as u8; 200],
                });
                s.compact(i - 2);
                steps.push((s.hard_state(), all(s)));
            }
            if i % 7 == 0 {
                term += 1;
                s.append(&[entry(i, term, 70)]);
                steps.push((s.hard_state(), all(s)));
            }
        }
    }
    let base = {
        let (s, _) =
            DurableStorage::open(TearRegion::new(vec![0; REGION]), 7, 1, &voters()).unwrap();
        s.into_region().bytes
    };
    let mut total = TearRegion::new(base.clone());
    let (mut s, _) = DurableStorage::open(
        std::mem::replace(&mut total, TearRegion::new(vec![])),
        7,
        1,
        &voters(),
    )
    .unwrap();
    let mut steps = Vec::new();
    workload(&mut s, &mut steps);
    let writes = s.into_region().writes();
    assert!(writes > 40, "the workload writes {writes} times");
    for tear in 1..=writes {
        for keep in [0usize, 5, 60] {
            let mut r = TearRegion::new(base.clone());
            r.arm(tear - 1, keep);
            let (mut s, _) = DurableStorage::open(r, 7, 1, &voters()).unwrap();
            let mut seen = Vec::new();
            workload(&mut s, &mut seen);
            let bytes = s.into_region().bytes;
            let (back, _) = DurableStorage::open(bytes, 7, 1, &voters())
                .unwrap_or_else(|e| panic!("tear {tear} keep {keep}: {e}"));
            let hs = back.hard_state();
            // Everything committed by the recovered hard state is present, and the
            // log is one the workload really had at some point.
            let log = all(&back);
            assert!(
                back.last_index() >= hs.commit,
                "tear {tear}: commit past the log"
            );
            let first = back.first_index();
            let matches_a_step = seen.iter().any(|(h, l)| {
                let held: Vec<&Entry> = l.iter().filter(|e| e.index >= first).collect();
                *h == hs && log.len() <= held.len() && held.iter().zip(&log).all(|(a, b)| *a == b)
            }) || (log.is_empty() && hs == HardState::default());
            assert!(
                matches_a_step,
                "tear {tear} keep {keep}: log is no prefix of any step"
            );
        }
    }
}

#[test]
fn one_damaged_header_copy_falls_back_to_the_other() {
    let mut s = fresh();
    s.append(&(1..=5).map(|i| entry(i, 1, 10)).collect::<Vec<_>>());
    s.set_hard_state(HardState {
        term: 1,
        vote: None,
        commit: 5,
    });
    let mut bytes = s.into_region();
    // The newest header is in slot generation%2; damage both in turn.
    for slot in [0usize, 1] {
        let mut b = bytes.clone();
        b[slot * 4096 + 60] ^= 0x40;
        let (s, _) = DurableStorage::open(b, 7, 1, &voters()).unwrap();
        assert_eq!(s.last_index(), 6, "slot {slot} damaged");
    }
    bytes[60] ^= 1;
    bytes[4096 + 60] ^= 1;
    match DurableStorage::open(bytes, 7, 1, &voters()) {
        Err(OpenError::Damaged(why)) => assert!(why.contains("header"), "{why}"),
        other => panic!(
            "both copies damaged must be refused, got {:?}",
            other.map(|x| x.1)
        ),
    }
}

#[test]
fn a_damaged_committed_record_is_refused_not_forgotten() {
    let mut s = fresh();
    s.append(&(1..=10).map(|i| entry(i, 1, 100)).collect::<Vec<_>>());
    s.set_hard_state(HardState {
        term: 1,
        vote: None,
        commit: 10,
    });
    let (log_bytes, _) = s.capacity();
    let mut bytes = s.into_region();
    let log_at = REGION - log_bytes as usize;
    bytes[log_at + 5 * (56 + 104) + 70] ^= 0xff;
    match DurableStorage::open(bytes, 7, 1, &voters()) {
        Err(OpenError::Damaged(why)) => assert!(why.contains("committed"), "{why}"),
        other => panic!("expected Damaged, got {:?}", other.map(|x| x.1)),
    }
}

#[test]
fn foreign_and_old_regions_are_refused() {
    let s = fresh();
    let bytes = s.into_region();
    assert_eq!(
        DurableStorage::open(bytes.clone(), 8, 1, &voters()).err(),
        Some(OpenError::Foreign {
            cluster: 7,
            node: 1
        })
    );
    let mut old = vec![0u8; REGION];
    old[..8].copy_from_slice(b"XDVRAFT1");
    match DurableStorage::open(old, 7, 1, &voters()) {
        Err(OpenError::Damaged(why)) => assert!(why.contains("XDVRAFT1")),
        other => panic!("{:?}", other.map(|x| x.1)),
    }
    assert!(matches!(
        DurableStorage::open(vec![0u8; 1000], 7, 1, &voters()),
        Err(OpenError::TooSmall(1000))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Random bytes anywhere in a region never panic `open`.
    #[test]
    fn open_never_panics_on_damage(flips in proptest::collection::vec((0usize..REGION, 0u8..=255), 1..20)) {
        let mut s = fresh();
        s.append(&(1..=30).map(|i| entry(i, 1 + i / 10, 120)).collect::<Vec<_>>());
        s.set_hard_state(HardState { term: 3, vote: None, commit: 12 });
        let mut bytes = s.into_region();
        for (at, x) in flips {
            bytes[at] ^= x;
        }
        let _ = DurableStorage::open(bytes, 7, 1, &voters());
    }
}

/// The error path of a log area that fills (the node compacts too late): the write
/// is refused and reported, nothing half-written is left, and what was durable before
/// reopens intact.
#[test]
fn a_full_log_area_is_reported_and_keeps_what_was_durable() {
    let (mut s, _) = DurableStorage::open(vec![0u8; 64 * 1024], 7, 1, &voters()).unwrap();
    let mut n = 1;
    while s.failure().is_none() {
        s.append(&[entry(n, 1, 500)]);
        n += 1;
        assert!(n < 1000, "a 64 KiB region never filled");
    }
    assert!(s.failure().unwrap().contains("full"), "{:?}", s.failure());
    assert!(s.stats().failed_writes >= 1);
    let durable = s.stats().records_written;
    let back = reopen(s);
    assert_eq!(
        back.last_index() - 1,
        durable,
        "every written record and only those"
    );
}
