//! Property and fuzz-smoke tests of the wire protocol: round trip, truncation,
//! corruption, chunking, limits, poisoning.

use proptest::prelude::*;
use xdv_net::wire::*;
use xdv_types::rng::SplitMix64;
use xdv_types::{NodeId, Timestamp};

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn arb_message() -> impl Strategy<Value = ClusterMessage> {
    prop_oneof![
        (any::<u32>(), any::<[u8; 32]>()).prop_map(|(n, nonce)| ClusterMessage::Hello(Hello {
            node: NodeId(n),
            nonce
        })),
        (
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), SIGNATURE_BYTES)
        )
            .prop_map(|(n, signature)| ClusterMessage::Auth(Auth {
                node: NodeId(n),
                signature
            })),
        arb_bytes(600).prop_map(ClusterMessage::Raft),
        (any::<u64>(), arb_bytes(100))
            .prop_map(|(seq, payload)| ClusterMessage::Ping(Ping { seq, payload })),
        (any::<u64>(), arb_bytes(100))
            .prop_map(|(seq, payload)| ClusterMessage::Pong(Ping { seq, payload })),
        arb_bytes(300).prop_map(ClusterMessage::MgmtRequest),
        arb_bytes(300).prop_map(ClusterMessage::MgmtResponse),
        (any::<u16>(), "[a-zA-Z0-9 äö€]{0,60}")
            .prop_map(|(code, text)| ClusterMessage::Error(ErrorReport { code, text })),
        any::<u64>().prop_map(|seq| ClusterMessage::Heartbeat(Heartbeat { seq })),
    ]
}

fn arb_repr() -> impl Strategy<Value = FrameRepr> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        arb_message(),
    )
        .prop_map(|(s, t, ts, id, message)| FrameRepr {
            header: FrameHeader {
                source: NodeId(s),
                target: NodeId(t),
                timestamp: Timestamp(ts),
                message_id: id,
            },
            message,
        })
}

fn encode(r: &FrameRepr) -> Vec<u8> {
    encode_frame(&r.header, &r.message).expect("valid message encodes")
}

/// Decodes a whole stream and declares its end.
fn decode_stream(bytes: &[u8]) -> Result<Vec<FrameRepr>, WireError> {
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    dec.feed(bytes, &mut out)?;
    dec.finish()?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip(reprs in proptest::collection::vec(arb_repr(), 1..6)) {
        let mut stream = Vec::new();
        for r in &reprs {
            let bytes = encode(r);
            // Raw view and validated view agree with each other and with the encoder.
            let frame = Frame::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(frame.total_len(), bytes.len());
            prop_assert_eq!(frame.version(), PROTOCOL_VERSION);
            prop_assert_eq!(frame.msg_type(), r.message.msg_type() as u16);
            prop_assert_eq!(frame.source(), r.header.source);
            prop_assert_eq!(frame.message_id(), r.header.message_id);
            prop_assert_eq!(&FrameRepr::parse(&frame).unwrap(), r);
            prop_assert_eq!(r.buffer_len().unwrap(), bytes.len());
            let mut buf = vec![0u8; bytes.len()];
            prop_assert_eq!(r.emit(&mut Frame::new_unchecked(&mut buf[..])).unwrap(), bytes.len());
            prop_assert_eq!(&buf, &bytes);
            stream.extend_from_slice(&bytes);
        }
        prop_assert_eq!(decode_stream(&stream).unwrap(), reprs);
    }

    #[test]
    fn any_truncation_rejected(r in arb_repr(), cut_seed in any::<usize>()) {
        let bytes = encode(&r);
        let cut = cut_seed % bytes.len(); // strictly shorter, may be 0
        let res = decode_stream(&bytes[..cut]);
        if cut == 0 {
            prop_assert_eq!(res, Ok(vec![]));
        } else {
            prop_assert!(matches!(res, Err(WireError::Truncated { .. })), "cut {cut}: {res:?}");
        }
        prop_assert!(Frame::new_checked(&bytes[..cut]).is_err());
    }

    #[test]
    fn every_truncation_of_one_frame_rejected(r in arb_repr()) {
        let bytes = encode(&r);
        for cut in 1..bytes.len() {
            let truncated = matches!(decode_stream(&bytes[..cut]), Err(WireError::Truncated { .. }));
            prop_assert!(truncated, "cut {}", cut);
        }
    }

    #[test]
    fn single_byte_corruption_detected(r in arb_repr(), pos_seed in any::<usize>(), flip in 1u8..=255) {
        let mut bytes = encode(&r);
        let pos = pos_seed % bytes.len();
        bytes[pos] ^= flip;
        // Decoding the corrupted frame as a whole stream must fail (never yield a frame).
        let res = decode_stream(&bytes);
        prop_assert!(res.is_err(), "corruption at {pos} accepted: {res:?}");
        if let Ok(frame) = Frame::new_checked(&bytes[..]) {
            prop_assert!(FrameRepr::parse(&frame).is_err());
        }
    }

    #[test]
    fn corruption_in_a_stream_never_yields_a_wrong_frame(
        reprs in proptest::collection::vec(arb_repr(), 2..5),
        pos_seed in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for r in &reprs {
            stream.extend_from_slice(&encode(r));
            ends.push(stream.len());
        }
        let pos = pos_seed % stream.len();
        stream[pos] ^= flip;
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        let res = dec.feed(&stream, &mut out).and_then(|_| dec.finish());
        prop_assert!(res.is_err());
        // Every frame returned before the error is an intact one before the corruption.
        for (i, f) in out.iter().enumerate() {
            prop_assert!(ends[i] <= pos);
            prop_assert_eq!(f, &reprs[i]);
        }
    }

    #[test]
    fn chunked_equals_whole(reprs in proptest::collection::vec(arb_repr(), 1..6), chunks in proptest::collection::vec(1usize..200, 1..40)) {
        let mut stream = Vec::new();
        for r in &reprs {
            stream.extend_from_slice(&encode(r));
        }
        let whole = decode_stream(&stream).unwrap();
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].min(rest.len());
            // Push/pop by hand (not `feed`) to exercise the partial-accept path.
            let mut piece = &rest[..n];
            while !piece.is_empty() {
                let took = dec.push(piece);
                piece = &piece[took..];
                while let Some(f) = dec.pop().unwrap() {
                    out.push(f);
                }
            }
            rest = &rest[n..];
            i += 1;
        }
        dec.finish().unwrap();
        prop_assert_eq!(out, whole);
    }

    #[test]
    fn garbage_never_panics(data in arb_bytes(400)) {
        fuzz_check(&data);
    }
}

fn header() -> FrameHeader {
    FrameHeader {
        source: NodeId(1),
        target: NodeId(2),
        timestamp: Timestamp(7),
        message_id: 9,
    }
}

fn ping() -> Vec<u8> {
    encode_frame(
        &header(),
        &ClusterMessage::Ping(Ping {
            seq: 3,
            payload: vec![1, 2, 3],
        }),
    )
    .unwrap()
}

fn first_error(bytes: &[u8]) -> WireError {
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    dec.feed(bytes, &mut out)
        .and_then(|_| dec.finish())
        .unwrap_err()
}

/// Rewrites the checksum so only the targeted check can fail.
fn refill(bytes: &mut [u8]) {
    Frame::new_unchecked(bytes).fill_checksum();
}

#[test]
fn each_error_variant_is_reachable_and_distinct() {
    let mut over = ping();
    over[0..4].copy_from_slice(&((MAX_FRAME_BYTES as u32) + 1).to_le_bytes());
    assert!(matches!(
        first_error(&over),
        WireError::LengthOverLimit { .. }
    ));

    let mut magic = ping();
    magic[4] = b'Y';
    assert_eq!(first_error(&magic), WireError::BadMagic(*b"YDVW"));

    let mut version = ping();
    Frame::new_unchecked(&mut version[..]).set_version(2);
    refill(&mut version);
    assert_eq!(first_error(&version), WireError::UnknownVersion(2));

    let mut ty = ping();
    Frame::new_unchecked(&mut ty[..]).set_msg_type(77);
    refill(&mut ty);
    assert_eq!(first_error(&ty), WireError::UnknownType(77));

    let p = ping();
    assert!(matches!(
        first_error(&p[..p.len() - 1]),
        WireError::Truncated { .. }
    ));

    let mut sum = ping();
    let last = sum.len() - 1;
    sum[last] ^= 0x40;
    assert!(matches!(first_error(&sum), WireError::BadChecksum { .. }));

    // A well-checksummed frame whose body is a Ping payload but whose type says Hello.
    let mut body = ping();
    Frame::new_unchecked(&mut body[..]).set_msg_type(MessageType::Hello as u16);
    refill(&mut body);
    assert!(matches!(
        first_error(&body),
        WireError::BadBody { msg_type: 1, .. }
    ));

    let mut mismatch = ping();
    Frame::new_unchecked(&mut mismatch[..]).set_body_len(1);
    assert!(matches!(
        first_error(&mismatch),
        WireError::LengthMismatch { .. }
    ));

    let mut short = ping();
    short[0..4].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(
        first_error(&short),
        WireError::LengthMismatch { length: 3, .. }
    ));

    // Eight kinds, each with its own counter slot and Display text.
    let errs = [
        first_error(&over),
        first_error(&magic),
        first_error(&version),
        first_error(&ty),
        first_error(&sum),
        first_error(&body),
        first_error(&mismatch),
        first_error(&p[..p.len() - 1]),
    ];
    let texts: std::collections::BTreeSet<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(texts.len(), errs.len());
    let kinds: std::collections::BTreeSet<usize> = errs.iter().map(|e| e.kind_index()).collect();
    assert_eq!(kinds.len(), errs.len());
}

#[test]
fn trailing_bytes_in_body_are_bad_body() {
    let mut f = ping();
    f.push(0);
    let len = f.len() - PREFIX_LEN;
    let mut frame = Frame::new_unchecked(&mut f[..]);
    frame.set_length(len as u32);
    frame.set_body_len((len - HEADER_LEN) as u32);
    frame.fill_checksum();
    assert!(matches!(
        first_error(&f),
        WireError::BadBody {
            reason: "trailing bytes after payload",
            ..
        }
    ));
}

#[test]
fn field_limits_enforced_on_encode_and_decode() {
    let bad_sig = ClusterMessage::Auth(Auth {
        node: NodeId(1),
        signature: vec![0; 63],
    });
    assert!(matches!(
        encode_frame(&header(), &bad_sig),
        Err(WireError::BadBody { msg_type: 2, .. })
    ));
    let long_text = ClusterMessage::Error(ErrorReport {
        code: 1,
        text: "x".repeat(MAX_ERROR_TEXT_BYTES + 1),
    });
    assert!(encode_frame(&header(), &long_text).is_err());
    let too_big = ClusterMessage::Raft(vec![0; MAX_BODY_BYTES]);
    assert!(matches!(
        encode_frame(&header(), &too_big),
        Err(WireError::LengthOverLimit { .. })
    ));
    // The largest Raft payload that fits encodes and decodes.
    let fits = ClusterMessage::Raft(vec![7; MAX_BODY_BYTES - 3]);
    let bytes = encode_frame(&header(), &fits).unwrap();
    assert_eq!(bytes.len(), PREFIX_LEN + MAX_FRAME_BYTES);
    assert_eq!(decode_stream(&bytes).unwrap()[0].message, fits);
}

#[test]
fn decoder_limit_and_early_header_rejection() {
    // A small-limit decoder rejects a larger frame from its prefix alone.
    let mut dec = FrameDecoder::with_limit(64);
    let big = encode_frame(&header(), &ClusterMessage::Raft(vec![1; 100])).unwrap();
    assert_eq!(dec.push(&big[..4]), 4);
    assert!(matches!(
        dec.pop(),
        Err(WireError::LengthOverLimit { limit: 64, .. })
    ));
    // Bad magic is reported once the header arrives, before the (absent) body.
    let mut dec = FrameDecoder::new();
    let mut bad = big.clone();
    bad[5] = 0;
    dec.push(&bad[..FRAME_OVERHEAD_BYTES]);
    assert!(matches!(dec.pop(), Err(WireError::BadMagic(_))));
}

#[test]
fn poisoned_decoder_stays_poisoned() {
    let mut dec = FrameDecoder::new();
    let mut bytes = ping();
    bytes[4] = 0;
    bytes.extend_from_slice(&ping());
    dec.push(&bytes);
    let e = dec.pop().unwrap_err();
    assert!(dec.is_poisoned());
    assert_eq!(dec.push(&ping()), 0);
    assert_eq!(dec.pop(), Err(e.clone()));
    assert_eq!(dec.finish(), Err(e.clone()));
    assert_eq!(dec.buffered_len(), 0);
    let mut counters = WireErrorCounters::default();
    counters.record(&e);
    assert_eq!(counters.get(e.kind_index()), 1);
    assert_eq!(counters.total(), 1);
}

#[test]
fn push_accepts_only_what_fits_and_full_buffer_pops() {
    let mut dec = FrameDecoder::with_limit(HEADER_LEN + 16);
    let f = encode_frame(&header(), &ClusterMessage::Heartbeat(Heartbeat { seq: 1 })).unwrap();
    let stream: Vec<u8> = f.iter().copied().cycle().take(f.len() * 10).collect();
    let took = dec.push(&stream);
    assert_eq!(took, dec.capacity());
    assert!(dec.pop().unwrap().is_some());
    let mut out = Vec::new();
    dec.feed(&stream[took..], &mut out).unwrap();
    dec.finish().unwrap();
    assert_eq!(out.len() + 1, 10);
    assert_eq!(dec.frames_decoded(), 10);
}

#[test]
fn crc32_check_value() {
    assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    assert_eq!(crc32(&[b""]), 0);
    // The 8-byte path agrees with a bit-at-a-time reference at every length and split.
    let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
    let reference = |d: &[u8]| {
        let mut c = !0u32;
        for &b in d {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    };
    for len in 0..data.len() {
        let d = &data[..len];
        assert_eq!(crc32(&[d]), reference(d), "len {len}");
        let split = len / 3;
        assert_eq!(crc32(&[&d[..split], &d[split..]]), reference(d));
    }
}

#[test]
fn message_types_are_stable() {
    let nums: Vec<u16> = MessageType::ALL.iter().map(|t| *t as u16).collect();
    assert_eq!(nums, (1..=9).collect::<Vec<u16>>());
    assert_eq!(MessageType::from_u16(0), None);
    assert_eq!(MessageType::from_u16(10), None);
}

#[test]
fn golden_frame_layout() {
    // Pins the byte layout documented in docs/wire.md.
    let bytes = encode_frame(&header(), &ClusterMessage::Heartbeat(Heartbeat { seq: 5 })).unwrap();
    assert_eq!(bytes.len(), FRAME_OVERHEAD_BYTES + 1);
    assert_eq!(&bytes[0..4], &41u32.to_le_bytes());
    assert_eq!(&bytes[4..8], b"XDVW");
    assert_eq!(&bytes[8..10], &[1, 0]);
    assert_eq!(&bytes[10..12], &[9, 0]);
    assert_eq!(&bytes[12..16], &[1, 0, 0, 0]);
    assert_eq!(&bytes[16..20], &[2, 0, 0, 0]);
    assert_eq!(&bytes[20..28], &7u64.to_le_bytes());
    assert_eq!(&bytes[28..36], &9u64.to_le_bytes());
    assert_eq!(&bytes[36..40], &1u32.to_le_bytes());
    assert_eq!(
        &bytes[40..44],
        &crc32(&[&bytes[4..40], &bytes[44..]]).to_le_bytes()
    );
    assert_eq!(bytes[44], 5);
}

/// A stable, bounded stand-in for the libFuzzer target: the same `fuzz_check` body over
/// seeded random inputs (pure garbage, valid streams, and mutated valid streams).
#[test]
fn fuzz_smoke() {
    const ITERATIONS: usize = 30_000;
    let mut rng = SplitMix64(0x5eed_0006);
    let samples = [
        ping(),
        encode_frame(
            &header(),
            &ClusterMessage::Error(ErrorReport {
                code: 1,
                text: "no".into(),
            }),
        )
        .unwrap(),
        encode_frame(
            &header(),
            &ClusterMessage::Auth(Auth {
                node: NodeId(3),
                signature: vec![9; 64],
            }),
        )
        .unwrap(),
        encode_frame(
            &header(),
            &ClusterMessage::Hello(Hello {
                node: NodeId(3),
                nonce: [4; 32],
            }),
        )
        .unwrap(),
    ];
    let start = std::time::Instant::now();
    for i in 0..ITERATIONS {
        let mut data: Vec<u8> = Vec::new();
        match i % 3 {
            0 => {
                let n = (rng.next_u64() % 300) as usize;
                data.extend((0..n).map(|_| rng.next_u64() as u8));
            }
            _ => {
                for _ in 0..1 + rng.next_u64() % 4 {
                    data.extend_from_slice(
                        &samples[(rng.next_u64() % samples.len() as u64) as usize],
                    );
                }
                if i % 3 == 2 {
                    for _ in 0..1 + rng.next_u64() % 3 {
                        let pos = (rng.next_u64() % data.len() as u64) as usize;
                        data[pos] = rng.next_u64() as u8;
                    }
                }
            }
        }
        fuzz_check(&data);
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn read_frame_from_a_reader() {
    let mut stream = ping();
    stream.extend_from_slice(
        &encode_frame(&header(), &ClusterMessage::Heartbeat(Heartbeat { seq: 2 })).unwrap(),
    );
    stream.extend_from_slice(&ping()[..10]);
    let mut r = std::io::Cursor::new(stream);
    let mut dec = FrameDecoder::new();
    assert!(matches!(
        read_frame(&mut r, &mut dec).unwrap().message,
        ClusterMessage::Ping(_)
    ));
    assert!(matches!(
        read_frame(&mut r, &mut dec).unwrap().message,
        ClusterMessage::Heartbeat(_)
    ));
    let e = read_frame(&mut r, &mut dec).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("truncated"));
    let mut garbage = std::io::Cursor::new(vec![0xffu8; 100]);
    let e = read_frame(&mut garbage, &mut FrameDecoder::new()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn byte_fields_encode_like_plain_postcard_vecs() {
    // Opaque payloads are written as serde bytes for speed; in postcard that is the same
    // encoding as a Vec<u8> sequence, so any postcard peer can produce or read them.
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let f = encode_frame(&header(), &ClusterMessage::Raft(payload.clone())).unwrap();
    assert_eq!(
        Frame::new_checked(&f[..]).unwrap().body(),
        &postcard::to_allocvec(&payload).unwrap()[..]
    );
    #[derive(serde::Serialize)]
    struct PlainPing {
        seq: u64,
        payload: Vec<u8>,
    }
    let plain = postcard::to_allocvec(&PlainPing {
        seq: 300,
        payload: payload.clone(),
    })
    .unwrap();
    let f = encode_frame(&header(), &ClusterMessage::Ping(Ping { seq: 300, payload })).unwrap();
    assert_eq!(Frame::new_checked(&f[..]).unwrap().body(), &plain[..]);
}

#[test]
fn bad_frame_samples_produce_their_error() {
    let samples = bad_frame_samples();
    assert_eq!(samples.len(), 10);
    let mut kinds = std::collections::BTreeSet::new();
    for s in &samples {
        let e = first_error(&s.bytes);
        assert_eq!(e.kind_index(), s.kind_index, "{}: got {e}", s.name);
        kinds.insert(s.kind_index);
    }
    // Every receive-side kind is covered (all but BufferTooSmall).
    assert_eq!(kinds.len(), WireError::KINDS - 1);
}
