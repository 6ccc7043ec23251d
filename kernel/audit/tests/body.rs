//! The append path's hand-written payload encoder (`RecordBody::encode_into`) must
//! produce exactly postcard's bytes for every variant and field value, and the
//! superblock encoder exactly the documented layout and checksum.

use proptest::prelude::*;
use xdv_audit::RecordBody;
use xdv_audit::body::{
    MAX_CONSOLE_LINE_BYTES, MAX_CUSTOM_BYTES, MAX_REFUSAL_REASON_BYTES, MAX_TRAP_REASON_BYTES,
};
use xdv_audit::format::{SUPERBLOCK_BYTES, Superblock};
use xdv_types::{CapabilityId, CoreId, Hash32, NodeId, TaskId};

/// Integers biased towards varint length boundaries (1..10 bytes).
fn int() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u32..64).prop_map(|s| 1u64 << s),
        (1u32..64).prop_map(|s| (1u64 << s) - 1),
        0u64..300,
        Just(u64::MAX),
    ]
}

fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

fn text(max: usize) -> impl Strategy<Value = String> {
    // Multi-byte characters too: the length prefix counts bytes.
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('é'), Just('漢'), any::<char>()],
        0..max,
    )
    .prop_map(|cs| cs.into_iter().collect::<String>())
    .prop_map(move |s| {
        let mut cut = s.len().min(max);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s[..cut].to_string()
    })
}

fn body() -> impl Strategy<Value = RecordBody> {
    prop_oneof![
        int().prop_map(|count| RecordBody::Boot { count }),
        int().prop_map(|dropped_bytes| RecordBody::Recovered { dropped_bytes }),
        (int(), int()).prop_map(|(records, bytes)| RecordBody::RegionFull { records, bytes }),
        (int(), any::<u16>()).prop_map(|(t, c)| RecordBody::TaskEnqueued {
            task: TaskId(t),
            core: CoreId(c)
        }),
        (int(), int(), hash()).prop_map(|(t, ticks, output_hash)| RecordBody::TaskExecuted {
            task: TaskId(t),
            ticks,
            output_hash
        }),
        (int(), int()).prop_map(|(t, ticks)| RecordBody::BudgetExceeded {
            task: TaskId(t),
            ticks
        }),
        (int(), any::<u32>()).prop_map(|(t, c)| RecordBody::GuardDenied {
            task: TaskId(t),
            capability: CapabilityId(c)
        }),
        (int(), int(), text(MAX_TRAP_REASON_BYTES)).prop_map(|(t, ticks, reason)| {
            RecordBody::Trapped {
                task: TaskId(t),
                ticks,
                reason,
            }
        }),
        text(MAX_CONSOLE_LINE_BYTES).prop_map(|line| RecordBody::ConsoleCommand { line }),
        (int(), hash()).prop_map(|(len, head_hash)| RecordBody::ReplayHead { len, head_hash }),
        (int(), int(), hash()).prop_map(|(index, term, entry_hash)| RecordBody::RaftApplied {
            index,
            term,
            entry_hash
        }),
        (int(), hash()).prop_map(|(size, root)| RecordBody::MerkleRootPublished { size, root }),
        text(MAX_REFUSAL_REASON_BYTES).prop_map(|reason| RecordBody::RequestRefused { reason }),
        (
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_CUSTOM_BYTES)
        )
            .prop_map(|(tag, bytes)| RecordBody::Custom { tag, bytes }),
        (
            int(),
            int(),
            proptest::option::of(int()),
            hash(),
            proptest::option::of(int())
        )
            .prop_map(
                |(offset, bytes, last_good_seq, last_good_hash, resumed_seq)| {
                    RecordBody::Damaged {
                        offset,
                        bytes,
                        last_good_seq,
                        last_good_hash,
                        resumed_seq,
                    }
                }
            ),
        (int(), int()).prop_map(|(records, end_offset)| RecordBody::SuperblocksRebuilt {
            records,
            end_offset
        }),
        int().prop_map(|discarded_bytes| RecordBody::Formatted { discarded_bytes }),
        (int(), int(), int()).prop_map(|(used_bytes, high_water_bytes, region_bytes)| {
            RecordBody::AuditAlarm {
                used_bytes,
                high_water_bytes,
                region_bytes,
            }
        }),
        (int(), text(MAX_REFUSAL_REASON_BYTES), int()).prop_map(
            |(refused, first_reason, unrecorded)| RecordBody::RefusalSummary {
                refused,
                first_reason,
                unrecorded,
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_into_is_postcard(b in body()) {
        let expected = postcard::to_allocvec(&b).unwrap();
        let mut buf = vec![0xeeu8; expected.len() + 8];
        let n = b.encode_into(&mut buf).unwrap();
        prop_assert_eq!(&buf[..n], &expected[..]);
        // Nothing written past the encoding.
        prop_assert!(buf[n..].iter().all(|&x| x == 0xee));
        // The payload decodes back to the body.
        let (back, rest) = postcard::take_from_bytes::<RecordBody>(&buf[..n]).unwrap();
        prop_assert_eq!(back, b.clone());
        prop_assert!(rest.is_empty());
        // Any shorter buffer is refused, never panics, and never writes past its end.
        for short in [0, 1, n / 2, n.saturating_sub(1)] {
            if short < n {
                let mut small = vec![0u8; short];
                prop_assert_eq!(b.encode_into(&mut small), None);
            }
        }
    }
}

#[test]
fn encode_into_every_kind_matches_postcard_at_limits() {
    let h = Hash32([0xab; 32]);
    let bodies = [
        RecordBody::Boot { count: u64::MAX },
        RecordBody::Recovered { dropped_bytes: 0 },
        RecordBody::RegionFull {
            records: 127,
            bytes: 128,
        },
        RecordBody::TaskEnqueued {
            task: TaskId(u64::MAX),
            core: CoreId(u16::MAX),
        },
        RecordBody::TaskExecuted {
            task: TaskId(1),
            ticks: 16383,
            output_hash: h,
        },
        RecordBody::BudgetExceeded {
            task: TaskId(16384),
            ticks: 1,
        },
        RecordBody::GuardDenied {
            task: TaskId(2),
            capability: CapabilityId(u32::MAX),
        },
        RecordBody::Trapped {
            task: TaskId(3),
            ticks: 4,
            reason: "r".repeat(MAX_TRAP_REASON_BYTES),
        },
        RecordBody::ConsoleCommand {
            line: "c".repeat(MAX_CONSOLE_LINE_BYTES),
        },
        RecordBody::ReplayHead {
            len: 5,
            head_hash: h,
        },
        RecordBody::RaftApplied {
            index: 6,
            term: 7,
            entry_hash: h,
        },
        RecordBody::MerkleRootPublished { size: 8, root: h },
        RecordBody::RequestRefused {
            reason: "q".repeat(MAX_REFUSAL_REASON_BYTES),
        },
        RecordBody::Custom {
            tag: u16::MAX,
            bytes: vec![0x5a; MAX_CUSTOM_BYTES],
        },
        RecordBody::Damaged {
            offset: u64::MAX,
            bytes: 0,
            last_good_seq: None,
            last_good_hash: h,
            resumed_seq: Some(u64::MAX),
        },
        RecordBody::SuperblocksRebuilt {
            records: 1 << 40,
            end_offset: 4096,
        },
        RecordBody::Formatted {
            discarded_bytes: u64::MAX,
        },
        RecordBody::AuditAlarm {
            used_bytes: 3_000_000,
            high_water_bytes: 3_145_728,
            region_bytes: 4 << 20,
        },
        RecordBody::RefusalSummary {
            refused: u64::MAX,
            first_reason: "z".repeat(MAX_REFUSAL_REASON_BYTES),
            unrecorded: 0,
        },
    ];
    let mut kinds = Vec::new();
    for b in &bodies {
        let expected = postcard::to_allocvec(b).unwrap();
        let mut buf = [0u8; 2048];
        let n = b.encode_into(&mut buf).unwrap();
        assert_eq!(&buf[..n], &expected[..], "{b:?}");
        kinds.push(b.kind());
    }
    assert_eq!(
        kinds,
        (0..RecordBody::KIND_COUNT).collect::<Vec<_>>(),
        "every kind covered"
    );
}

#[test]
fn superblock_encoding_is_the_documented_layout() {
    let sb = Superblock {
        node: NodeId(0x0102_0304),
        region_bytes: 0x0040_0000,
        boot_count: 3,
        end_offset: 0x1234,
        record_count: 17,
        head_hash: Hash32(core::array::from_fn(|i| i as u8)),
        generation: 99,
    };
    let b = sb.encode();
    assert_eq!(b.len(), SUPERBLOCK_BYTES);
    assert_eq!(&b[0..8], b"XDVAUDIT");
    assert_eq!(u16::from_le_bytes([b[8], b[9]]), 2);
    assert_eq!(&b[10..12], &[0, 0]);
    assert_eq!(&b[12..16], &0x0102_0304u32.to_le_bytes());
    assert_eq!(&b[16..24], &0x0040_0000u64.to_le_bytes());
    assert_eq!(&b[24..32], &3u64.to_le_bytes());
    assert_eq!(&b[32..40], &0x1234u64.to_le_bytes());
    assert_eq!(&b[40..48], &17u64.to_le_bytes());
    assert_eq!(&b[48..80], &sb.head_hash.0);
    assert_eq!(&b[80..88], &99u64.to_le_bytes());
    // The checksum as docs/audit.md defines it, computed independently here.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in b[..88].chunks_exact(8) {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(&b[88..96], &(h ^ (h >> 32)).to_le_bytes());
    let mut region = vec![0u8; 4096];
    region[..SUPERBLOCK_BYTES].copy_from_slice(&b);
    assert_eq!(Superblock::decode(&region, 0), Some(sb));
    // Any single flipped byte makes the copy invalid.
    for i in 0..SUPERBLOCK_BYTES {
        let mut bad = region.clone();
        bad[i] ^= 0x40;
        assert_eq!(Superblock::decode(&bad, 0), None, "byte {i}");
    }
}
