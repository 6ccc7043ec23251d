//! The XDV peer wire protocol: length-prefixed, versioned, checksummed frames over TCP.
//!
//! One frame on the wire (all integers little-endian; full layout in `docs/wire.md`):
//!
//! ```text
//! [length u32][magic "XDVW"][version u16][type u16][source u32][target u32]
//! [timestamp u64][message id u64][body length u32][crc32 u32][postcard body ...]
//! ```
//!
//! `length` counts everything after itself (header + body). The CRC-32 (IEEE) covers
//! the header from `magic` through `body length` and the body, so any change of one
//! byte anywhere in a frame is either detected by the checksum or rejected by a
//! structural check (length, magic, version, type, body length).
//!
//! The body is the postcard encoding of the *payload of one variant* of
//! [`ClusterMessage`]; the header's type field says which variant, so the variant is
//! never encoded twice and can never disagree with the header.
//!
//! The code is split as in smoltcp: [`Frame`] gives raw field accessors over any byte
//! buffer, [`FrameRepr`] is the validated, owned form with `parse` and `emit`, and
//! [`FrameDecoder`] turns a byte stream, pushed in arbitrary chunks, into frames.
//!
//! Invariants: nothing here panics on any input (accessors of [`Frame::new_unchecked`]
//! aside, as documented); every error is a distinct [`WireError`] variant; after an
//! error a [`FrameDecoder`] is poisoned and the connection must be closed; no buffer
//! grows beyond [`MAX_FRAME_BYTES`] plus the 4-byte length prefix.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};
use xdv_types::{NodeId, Timestamp};

/// The four bytes every frame header starts with.
pub const MAGIC: [u8; 4] = *b"XDVW";
/// The only protocol version this code speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of the length prefix in front of every frame.
pub const PREFIX_LEN: usize = 4;
/// Bytes of the fixed header (after the length prefix, before the body).
pub const HEADER_LEN: usize = 40;
/// Bytes a frame occupies on the wire before its body.
pub const FRAME_OVERHEAD_BYTES: usize = PREFIX_LEN + HEADER_LEN;
/// Largest value the length prefix may carry (header + body). Larger frames are
/// refused with [`WireError::LengthOverLimit`]; Raft snapshots must be chunked below it.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Largest body a frame can carry.
pub const MAX_BODY_BYTES: usize = MAX_FRAME_BYTES - HEADER_LEN;
/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of an Ed25519 signature; [`Auth::signature`] must be exactly this long.
pub const SIGNATURE_BYTES: usize = 64;
/// Longest text an [`ErrorReport`] may carry, in bytes of UTF-8.
pub const MAX_ERROR_TEXT_BYTES: usize = 256;
/// Node id a host tool uses as `source` (and a node as `target`) on the management port.
pub const HOST_NODE: NodeId = NodeId(0);
/// TCP port every node listens on for peer connections (node-to-node, through the switch).
pub const PEER_TCP_PORT: u16 = 7100;
/// TCP port every node listens on for management connections (second NIC, QEMU user net).
pub const MGMT_TCP_PORT: u16 = 7200;
/// Host port of node N's management port is `MGMT_HOST_PORT_BASE + N` on 127.0.0.1.
pub const MGMT_HOST_PORT_BASE: u16 = 17200;

const _: () = assert!(HEADER_LEN == 40);
const _: () = assert!(MAX_FRAME_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_BODY_BYTES > MAX_ERROR_TEXT_BYTES + SIGNATURE_BYTES + NONCE_BYTES);

/// Byte offsets of the fields, counted from the start of the frame (the length prefix).
mod field {
    use core::ops::Range;
    pub const LENGTH: Range<usize> = 0..4;
    pub const MAGIC: Range<usize> = 4..8;
    pub const VERSION: Range<usize> = 8..10;
    pub const TYPE: Range<usize> = 10..12;
    pub const SOURCE: Range<usize> = 12..16;
    pub const TARGET: Range<usize> = 16..20;
    pub const TIMESTAMP: Range<usize> = 20..28;
    pub const MESSAGE_ID: Range<usize> = 28..36;
    pub const BODY_LEN: Range<usize> = 36..40;
    pub const CHECKSUM: Range<usize> = 40..44;
    pub const BODY: usize = 44;
    /// The header bytes the checksum covers (magic through body length).
    pub const CHECKED_HEADER: Range<usize> = 4..40;
}
const _: () = assert!(field::BODY == FRAME_OVERHEAD_BYTES);

/// Everything that can be wrong with a frame. Each variant is one counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix exceeds the decoder's limit (at most [`MAX_FRAME_BYTES`]).
    LengthOverLimit { length: u32, limit: u32 },
    /// The length prefix disagrees with the header (shorter than a header, or not
    /// header + body length).
    LengthMismatch { length: u32, body_len: u32 },
    /// The header does not start with [`MAGIC`].
    BadMagic([u8; 4]),
    /// The header carries a protocol version other than [`PROTOCOL_VERSION`].
    UnknownVersion(u16),
    /// The header carries a message type this version does not define.
    UnknownType(u16),
    /// The input ended before the frame did.
    Truncated { needed: usize, available: usize },
    /// The CRC-32 over header and body does not match.
    BadChecksum { expected: u32, actual: u32 },
    /// The body is not a valid postcard payload for its type, has trailing bytes, or
    /// breaks a field limit.
    BadBody { msg_type: u16, reason: &'static str },
    /// An output buffer is too small for the frame being emitted.
    BufferTooSmall { needed: usize, available: usize },
}

impl WireError {
    /// Number of distinct error kinds (the size of a counter array).
    pub const KINDS: usize = 9;

    /// Stable index of this error's kind, `0..KINDS`, for counters.
    pub fn kind_index(&self) -> usize {
        match self {
            WireError::LengthOverLimit { .. } => 0,
            WireError::LengthMismatch { .. } => 1,
            WireError::BadMagic(_) => 2,
            WireError::UnknownVersion(_) => 3,
            WireError::UnknownType(_) => 4,
            WireError::Truncated { .. } => 5,
            WireError::BadChecksum { .. } => 6,
            WireError::BadBody { .. } => 7,
            WireError::BufferTooSmall { .. } => 8,
        }
    }

    /// Short stable name of the kind at `index` (as printed by counters).
    pub fn kind_name(index: usize) -> &'static str {
        const NAMES: [&str; WireError::KINDS] = [
            "length_over_limit",
            "length_mismatch",
            "bad_magic",
            "unknown_version",
            "unknown_type",
            "truncated",
            "bad_checksum",
            "bad_body",
            "buffer_too_small",
        ];
        NAMES.get(index).copied().unwrap_or("unknown")
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::LengthOverLimit { length, limit } => {
                write!(
                    f,
                    "frame length {length} exceeds the limit of {limit} bytes"
                )
            }
            WireError::LengthMismatch { length, body_len } => write!(
                f,
                "frame length {length} does not match header ({HEADER_LEN} bytes) + body length {body_len}"
            ),
            WireError::BadMagic(m) => write!(f, "bad frame magic {m:02x?}, expected \"XDVW\""),
            WireError::UnknownVersion(v) => {
                write!(
                    f,
                    "unknown protocol version {v} (this node speaks {PROTOCOL_VERSION})"
                )
            }
            WireError::UnknownType(t) => write!(f, "unknown message type {t}"),
            WireError::Truncated { needed, available } => {
                write!(f, "truncated frame: {available} of {needed} bytes")
            }
            WireError::BadChecksum { expected, actual } => write!(
                f,
                "frame checksum mismatch: header says {expected:#010x}, content gives {actual:#010x}"
            ),
            WireError::BadBody { msg_type, reason } => {
                write!(f, "undecodable body for message type {msg_type}: {reason}")
            }
            WireError::BufferTooSmall { needed, available } => {
                write!(
                    f,
                    "output buffer too small: need {needed} bytes, have {available}"
                )
            }
        }
    }
}

/// One counter per [`WireError`] kind, for the `net`/`peers` console and `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireErrorCounters {
    counts: [u64; WireError::KINDS],
}

impl WireErrorCounters {
    /// Counts one occurrence of `err`.
    pub fn record(&mut self, err: &WireError) {
        let slot = &mut self.counts[err.kind_index()];
        *slot = slot.saturating_add(1);
    }

    /// The count of errors of the kind at `index` (see [`WireError::kind_index`]).
    pub fn get(&self, index: usize) -> u64 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// Sum over all kinds.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// `(name, count)` for every kind, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| (WireError::kind_name(i), *c))
    }
}

/// Message type numbers carried in the header's type field.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u16)]
pub enum MessageType {
    Hello = 1,
    Auth = 2,
    Raft = 3,
    Ping = 4,
    Pong = 5,
    MgmtRequest = 6,
    MgmtResponse = 7,
    Error = 8,
    Heartbeat = 9,
}

impl MessageType {
    /// Every defined type, in numeric order.
    pub const ALL: [MessageType; 9] = [
        MessageType::Hello,
        MessageType::Auth,
        MessageType::Raft,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::MgmtRequest,
        MessageType::MgmtResponse,
        MessageType::Error,
        MessageType::Heartbeat,
    ];

    /// The type with number `raw`, if this protocol version defines it.
    pub fn from_u16(raw: u16) -> Option<MessageType> {
        MessageType::ALL.iter().copied().find(|t| *t as u16 == raw)
    }
}

/// First handshake message, sent by both ends right after connecting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's node id (must match the header's source).
    pub node: NodeId,
    /// A fresh random nonce the peer must sign in its [`Auth`].
    pub nonce: [u8; NONCE_BYTES],
}

/// Second handshake message: proof of the node key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The sender's node id.
    pub node: NodeId,
    /// Ed25519 signature bytes (exactly [`SIGNATURE_BYTES`]) over what the cluster
    /// layer defines (the peer's nonce and both node ids). Carried opaquely here.
    #[serde(with = "bytes")]
    pub signature: Vec<u8>,
}

/// Ping/Pong body: a pong echoes the ping's `seq` and `payload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub seq: u64,
    #[serde(with = "bytes")]
    pub payload: Vec<u8>,
}

/// An error reply. Codes are in [`error_code`]; text is at most [`MAX_ERROR_TEXT_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub code: u16,
    pub text: String,
}

/// Liveness beacon between authenticated peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
}

/// Codes for [`ErrorReport::code`].
pub mod error_code {
    /// The peer sent a frame this node could not decode; the connection closes.
    pub const PROTOCOL: u16 = 1;
    /// The handshake failed (bad or missing signature).
    pub const AUTH_FAILED: u16 = 2;
    /// The peer's node id is not a cluster member.
    pub const UNKNOWN_PEER: u16 = 3;
    /// The node is overloaded; retry later.
    pub const OVERLOADED: u16 = 4;
    /// A management request was refused (reason in the text).
    pub const BAD_REQUEST: u16 = 5;
    /// An internal error; the text says which.
    pub const INTERNAL: u16 = 6;
}

/// Every message two XDV endpoints exchange (seed 001's `ClusterMessage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterMessage {
    Hello(Hello),
    Auth(Auth),
    /// One Raft message, encoded by the consensus layer (opaque here).
    Raft(Vec<u8>),
    Ping(Ping),
    Pong(Ping),
    /// A signed management request (opaque here; the cluster layer verifies it).
    MgmtRequest(Vec<u8>),
    /// A management response (opaque here).
    MgmtResponse(Vec<u8>),
    Error(ErrorReport),
    Heartbeat(Heartbeat),
}

impl ClusterMessage {
    /// The header type of this message.
    pub fn msg_type(&self) -> MessageType {
        match self {
            ClusterMessage::Hello(_) => MessageType::Hello,
            ClusterMessage::Auth(_) => MessageType::Auth,
            ClusterMessage::Raft(_) => MessageType::Raft,
            ClusterMessage::Ping(_) => MessageType::Ping,
            ClusterMessage::Pong(_) => MessageType::Pong,
            ClusterMessage::MgmtRequest(_) => MessageType::MgmtRequest,
            ClusterMessage::MgmtResponse(_) => MessageType::MgmtResponse,
            ClusterMessage::Error(_) => MessageType::Error,
            ClusterMessage::Heartbeat(_) => MessageType::Heartbeat,
        }
    }

    /// Checks the field limits the type system cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        let msg_type = self.msg_type() as u16;
        match self {
            ClusterMessage::Auth(a) if a.signature.len() != SIGNATURE_BYTES => {
                Err(WireError::BadBody {
                    msg_type,
                    reason: "signature is not 64 bytes",
                })
            }
            ClusterMessage::Error(e) if e.text.len() > MAX_ERROR_TEXT_BYTES => {
                Err(WireError::BadBody {
                    msg_type,
                    reason: "error text over 256 bytes",
                })
            }
            _ => Ok(()),
        }
    }

    /// Postcard encoding of the variant's payload (the frame body).
    fn encode_body(&self) -> Result<Vec<u8>, WireError> {
        self.validate()?;
        let encoded = match self {
            ClusterMessage::Hello(m) => postcard::to_allocvec(m),
            ClusterMessage::Auth(m) => postcard::to_allocvec(m),
            ClusterMessage::Raft(b)
            | ClusterMessage::MgmtRequest(b)
            | ClusterMessage::MgmtResponse(b) => postcard::to_allocvec(&bytes::Ref(b)),
            ClusterMessage::Ping(m) | ClusterMessage::Pong(m) => postcard::to_allocvec(m),
            ClusterMessage::Error(m) => postcard::to_allocvec(m),
            ClusterMessage::Heartbeat(m) => postcard::to_allocvec(m),
        };
        encoded.map_err(|_| WireError::BadBody {
            msg_type: self.msg_type() as u16,
            reason: "payload cannot be encoded",
        })
    }

    /// Decodes a frame body of type `msg_type`. The whole body must be consumed.
    fn decode_body(msg_type: MessageType, body: &[u8]) -> Result<ClusterMessage, WireError> {
        let raw = msg_type as u16;
        let msg = match msg_type {
            MessageType::Hello => take_all(raw, body).map(ClusterMessage::Hello),
            MessageType::Auth => take_all(raw, body).map(ClusterMessage::Auth),
            MessageType::Raft => take_all(raw, body).map(|b: bytes::Buf| ClusterMessage::Raft(b.0)),
            MessageType::Ping => take_all(raw, body).map(ClusterMessage::Ping),
            MessageType::Pong => take_all(raw, body).map(ClusterMessage::Pong),
            MessageType::MgmtRequest => {
                take_all(raw, body).map(|b: bytes::Buf| ClusterMessage::MgmtRequest(b.0))
            }
            MessageType::MgmtResponse => {
                take_all(raw, body).map(|b: bytes::Buf| ClusterMessage::MgmtResponse(b.0))
            }
            MessageType::Error => take_all(raw, body).map(ClusterMessage::Error),
            MessageType::Heartbeat => take_all(raw, body).map(ClusterMessage::Heartbeat),
        }?;
        msg.validate()?;
        Ok(msg)
    }
}

/// Byte strings as serde "bytes" rather than a sequence of `u8`. In postcard both are
/// a varint length followed by the raw bytes, so the wire format is the same as a plain
/// `Vec<u8>` (pinned by a test); this only makes encoding and decoding a copy instead of
/// a per-byte loop.
mod bytes {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{self, Deserializer, Visitor};
    use serde::{Deserialize, Serialize, Serializer};

    pub struct Ref<'a>(pub &'a [u8]);

    impl Serialize for Ref<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub struct Buf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Buf, D::Error> {
            d.deserialize_byte_buf(BufVisitor)
        }
    }

    struct BufVisitor;

    impl<'de> Visitor<'de> for BufVisitor {
        type Value = Buf;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Buf, E> {
            Ok(Buf(v.to_vec()))
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Buf, E> {
            Ok(Buf(v))
        }
    }

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        Ref(v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Buf::deserialize(d).map(|b| b.0)
    }
}

/// Postcard-decodes exactly `body` (trailing bytes are an error: one encoding per message).
fn take_all<'a, T: Deserialize<'a>>(msg_type: u16, body: &'a [u8]) -> Result<T, WireError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) => Err(WireError::BadBody {
            msg_type,
            reason: "trailing bytes after payload",
        }),
        Err(_) => Err(WireError::BadBody {
            msg_type,
            reason: "postcard decode failed",
        }),
    }
}

/// The header fields a sender chooses (version and type are implied).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub source: NodeId,
    pub target: NodeId,
    /// The sender's Lamport time when it sent the frame.
    pub timestamp: Timestamp,
    /// Unique per (source, connection); replies may echo a request's id.
    pub message_id: u64,
}

/// A validated frame: header and decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRepr {
    pub header: FrameHeader,
    pub message: ClusterMessage,
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final xor `!0`) over
/// the concatenation of `chunks`. Slicing-by-8: eight bytes per step through eight
/// 256-entry tables built at compile time.
pub fn crc32(chunks: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for chunk in chunks {
        let mut words = chunk.chunks_exact(8);
        for w in &mut words {
            let lo = crc ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            crc = CRC_TABLES[7][(lo & 0xff) as usize]
                ^ CRC_TABLES[6][((lo >> 8) & 0xff) as usize]
                ^ CRC_TABLES[5][((lo >> 16) & 0xff) as usize]
                ^ CRC_TABLES[4][(lo >> 24) as usize]
                ^ CRC_TABLES[3][w[4] as usize]
                ^ CRC_TABLES[2][w[5] as usize]
                ^ CRC_TABLES[1][w[6] as usize]
                ^ CRC_TABLES[0][w[7] as usize];
        }
        for &b in words.remainder() {
            crc = CRC_TABLES[0][((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// `CRC_TABLES[0]` is the classic byte table; `CRC_TABLES[k][i]` is the CRC of byte `i`
/// followed by `k` zero bytes.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
};

fn read_u16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_le_bytes(a)
}
fn read_u32(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_le_bytes(a)
}
fn read_u64(b: &[u8], r: core::ops::Range<usize>) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[r]);
    u64::from_le_bytes(a)
}

/// Checks the fixed part of a frame (`bytes` holds at least the prefix and header)
/// against `limit`, and returns the frame's total size on the wire.
/// Order: length limit, magic, version, type, length/body-length agreement.
fn check_header(bytes: &[u8], limit: usize) -> Result<usize, WireError> {
    debug_assert!(bytes.len() >= FRAME_OVERHEAD_BYTES);
    let length = read_u32(bytes, field::LENGTH);
    check_length_prefix(length, limit)?;
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[field::MAGIC]);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = read_u16(bytes, field::VERSION);
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    let msg_type = read_u16(bytes, field::TYPE);
    if MessageType::from_u16(msg_type).is_none() {
        return Err(WireError::UnknownType(msg_type));
    }
    let body_len = read_u32(bytes, field::BODY_LEN);
    if body_len as u64 + HEADER_LEN as u64 != length as u64 {
        return Err(WireError::LengthMismatch { length, body_len });
    }
    Ok(PREFIX_LEN + length as usize)
}

/// Checks a length prefix alone: at most `limit` and at least one header.
fn check_length_prefix(length: u32, limit: usize) -> Result<(), WireError> {
    if length as usize > limit {
        return Err(WireError::LengthOverLimit {
            length,
            limit: limit as u32,
        });
    }
    if (length as usize) < HEADER_LEN {
        return Err(WireError::LengthMismatch {
            length,
            body_len: 0,
        });
    }
    Ok(())
}

/// Raw field accessors over a byte buffer holding one frame (prefix included).
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buffer` without checks. Accessors panic if the buffer is shorter than
    /// [`FRAME_OVERHEAD_BYTES`] (and `body` if shorter than the body length says);
    /// use [`Frame::new_checked`] on untrusted input.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps `buffer` after [`Frame::check_len`].
    pub fn new_checked(buffer: T) -> Result<Frame<T>, WireError> {
        let frame = Frame::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Ensures every accessor is in bounds: the buffer holds a whole header, the length
    /// prefix is within [`MAX_FRAME_BYTES`] and covers a header, and the buffer holds
    /// the whole frame the prefix announces. Does not check magic, version or type.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < PREFIX_LEN {
            return Err(WireError::Truncated {
                needed: PREFIX_LEN,
                available: b.len(),
            });
        }
        let length = read_u32(b, field::LENGTH);
        check_length_prefix(length, MAX_FRAME_BYTES)?;
        let needed = PREFIX_LEN + length as usize;
        if b.len() < needed {
            return Err(WireError::Truncated {
                needed,
                available: b.len(),
            });
        }
        let body_len = read_u32(b, field::BODY_LEN);
        if body_len as u64 + HEADER_LEN as u64 != length as u64 {
            return Err(WireError::LengthMismatch { length, body_len });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The length prefix: bytes after it (header + body).
    pub fn length(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::LENGTH)
    }
    /// Prefix + length: bytes this frame occupies on the wire.
    pub fn total_len(&self) -> usize {
        PREFIX_LEN + self.length() as usize
    }
    pub fn magic(&self) -> [u8; 4] {
        let mut m = [0u8; 4];
        m.copy_from_slice(&self.buffer.as_ref()[field::MAGIC]);
        m
    }
    pub fn version(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::VERSION)
    }
    pub fn msg_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TYPE)
    }
    pub fn source(&self) -> NodeId {
        NodeId(read_u32(self.buffer.as_ref(), field::SOURCE))
    }
    pub fn target(&self) -> NodeId {
        NodeId(read_u32(self.buffer.as_ref(), field::TARGET))
    }
    pub fn timestamp(&self) -> Timestamp {
        Timestamp(read_u64(self.buffer.as_ref(), field::TIMESTAMP))
    }
    pub fn message_id(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::MESSAGE_ID)
    }
    pub fn body_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::BODY_LEN)
    }
    pub fn checksum(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// The body bytes, as long as the body length field says.
    pub fn body(&self) -> &[u8] {
        let end = field::BODY + self.body_len() as usize;
        &self.buffer.as_ref()[field::BODY..end]
    }
    /// The CRC-32 the checksum field should hold for the current contents.
    pub fn compute_checksum(&self) -> u32 {
        crc32(&[&self.buffer.as_ref()[field::CHECKED_HEADER], self.body()])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    fn put(&mut self, r: core::ops::Range<usize>, bytes: &[u8]) {
        self.buffer.as_mut()[r].copy_from_slice(bytes);
    }
    pub fn set_length(&mut self, v: u32) {
        self.put(field::LENGTH, &v.to_le_bytes());
    }
    pub fn set_magic(&mut self, v: [u8; 4]) {
        self.put(field::MAGIC, &v);
    }
    pub fn set_version(&mut self, v: u16) {
        self.put(field::VERSION, &v.to_le_bytes());
    }
    pub fn set_msg_type(&mut self, v: u16) {
        self.put(field::TYPE, &v.to_le_bytes());
    }
    pub fn set_source(&mut self, v: NodeId) {
        self.put(field::SOURCE, &v.0.to_le_bytes());
    }
    pub fn set_target(&mut self, v: NodeId) {
        self.put(field::TARGET, &v.0.to_le_bytes());
    }
    pub fn set_timestamp(&mut self, v: Timestamp) {
        self.put(field::TIMESTAMP, &v.0.to_le_bytes());
    }
    pub fn set_message_id(&mut self, v: u64) {
        self.put(field::MESSAGE_ID, &v.to_le_bytes());
    }
    pub fn set_body_len(&mut self, v: u32) {
        self.put(field::BODY_LEN, &v.to_le_bytes());
    }
    pub fn set_checksum(&mut self, v: u32) {
        self.put(field::CHECKSUM, &v.to_le_bytes());
    }
    /// The body bytes, as long as the body length field says.
    pub fn body_mut(&mut self) -> &mut [u8] {
        let end = field::BODY + self.body_len() as usize;
        &mut self.buffer.as_mut()[field::BODY..end]
    }
    /// Computes and stores the checksum (call after every other field and the body).
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        self.set_checksum(c);
    }
}

impl FrameRepr {
    /// Validates a frame and decodes its message. Checks, in order: lengths, magic,
    /// version, type, checksum, body.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<FrameRepr, WireError> {
        frame.check_len()?;
        check_header(frame.buffer.as_ref(), MAX_FRAME_BYTES)?;
        let (expected, actual) = (frame.checksum(), frame.compute_checksum());
        if expected != actual {
            return Err(WireError::BadChecksum { expected, actual });
        }
        let raw_type = frame.msg_type();
        let msg_type = MessageType::from_u16(raw_type).ok_or(WireError::UnknownType(raw_type))?;
        let message = ClusterMessage::decode_body(msg_type, frame.body())?;
        let header = FrameHeader {
            source: frame.source(),
            target: frame.target(),
            timestamp: frame.timestamp(),
            message_id: frame.message_id(),
        };
        Ok(FrameRepr { header, message })
    }

    /// Bytes [`FrameRepr::emit`] writes (encodes the body to find out).
    pub fn buffer_len(&self) -> Result<usize, WireError> {
        Ok(FRAME_OVERHEAD_BYTES + self.message.encode_body()?.len())
    }

    /// Writes the whole frame to the front of `frame`'s buffer; returns its length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut Frame<T>,
    ) -> Result<usize, WireError> {
        let body = self.message.encode_body()?;
        emit_with_body(&self.header, self.message.msg_type(), &body, frame)
    }
}

fn emit_with_body<T: AsRef<[u8]> + AsMut<[u8]>>(
    header: &FrameHeader,
    msg_type: MessageType,
    body: &[u8],
    frame: &mut Frame<T>,
) -> Result<usize, WireError> {
    let length = HEADER_LEN + body.len();
    if length > MAX_FRAME_BYTES {
        return Err(WireError::LengthOverLimit {
            length: u32::try_from(length).unwrap_or(u32::MAX),
            limit: MAX_FRAME_BYTES as u32,
        });
    }
    let total = PREFIX_LEN + length;
    let available = frame.buffer.as_ref().len();
    if available < total {
        return Err(WireError::BufferTooSmall {
            needed: total,
            available,
        });
    }
    frame.set_length(length as u32);
    frame.set_magic(MAGIC);
    frame.set_version(PROTOCOL_VERSION);
    frame.set_msg_type(msg_type as u16);
    frame.set_source(header.source);
    frame.set_target(header.target);
    frame.set_timestamp(header.timestamp);
    frame.set_message_id(header.message_id);
    frame.set_body_len(body.len() as u32);
    frame.body_mut().copy_from_slice(body);
    frame.fill_checksum();
    Ok(total)
}

/// Encodes one frame (prefix, header, body) into a new buffer.
/// Fails only if the message breaks a field limit or the frame exceeds [`MAX_FRAME_BYTES`].
pub fn encode_frame(header: &FrameHeader, message: &ClusterMessage) -> Result<Vec<u8>, WireError> {
    let body = message.encode_body()?;
    let mut buf = alloc::vec![0u8; FRAME_OVERHEAD_BYTES + body.len()];
    let written = emit_with_body(
        header,
        message.msg_type(),
        &body,
        &mut Frame::new_unchecked(&mut buf[..]),
    )?;
    debug_assert_eq!(written, buf.len());
    Ok(buf)
}

/// Turns a byte stream into frames. Push bytes in any chunking, pop whole frames.
///
/// Memory is bounded: the decoder buffers at most one maximal frame
/// ([`FrameDecoder::capacity`] bytes); [`FrameDecoder::push`] accepts only what fits,
/// and a full buffer always holds a complete frame (or an error) at its front, so
/// popping always makes room. Header fields are checked as soon as the header has
/// arrived, before the body. The first error poisons the decoder: every later
/// `pop` returns the same error and `push` accepts nothing.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    limit: usize,
    error: Option<WireError>,
    frames: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME_BYTES`].
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_limit(MAX_FRAME_BYTES)
    }

    /// A decoder accepting frames whose length prefix is at most `limit_bytes`
    /// (clamped to `HEADER_LEN..=MAX_FRAME_BYTES`).
    pub fn with_limit(limit_bytes: usize) -> FrameDecoder {
        let limit = limit_bytes.clamp(HEADER_LEN, MAX_FRAME_BYTES);
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            limit,
            error: None,
            frames: 0,
        }
    }

    /// Most bytes the decoder buffers at once.
    pub fn capacity(&self) -> usize {
        PREFIX_LEN + self.limit
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Frames popped so far.
    pub fn frames_decoded(&self) -> u64 {
        self.frames
    }

    /// The error that poisoned this decoder, if any.
    pub fn error(&self) -> Option<&WireError> {
        self.error.as_ref()
    }

    pub fn is_poisoned(&self) -> bool {
        self.error.is_some()
    }

    /// Bytes [`FrameDecoder::push`] would accept now (0 when poisoned).
    pub fn room(&self) -> usize {
        if self.error.is_some() {
            return 0;
        }
        self.capacity() - self.buffered_len()
    }

    /// Appends as many of `bytes` as fit and returns how many were taken (0 when
    /// poisoned or full: pop frames, then push the rest).
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        if self.error.is_some() {
            return 0;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let room = self.capacity() - self.buf.len();
        let take = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        debug_assert!(self.buf.len() <= self.capacity());
        take
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed, or the
    /// error that poisons the decoder.
    pub fn pop(&mut self) -> Result<Option<FrameRepr>, WireError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.try_pop() {
            Ok(r) => Ok(r),
            Err(e) => Err(self.poison(e)),
        }
    }

    fn try_pop(&mut self) -> Result<Option<FrameRepr>, WireError> {
        let pending = &self.buf[self.start..];
        if pending.len() < PREFIX_LEN {
            return Ok(None);
        }
        check_length_prefix(read_u32(pending, field::LENGTH), self.limit)?;
        if pending.len() < FRAME_OVERHEAD_BYTES {
            return Ok(None);
        }
        let total = check_header(pending, self.limit)?;
        if pending.len() < total {
            return Ok(None);
        }
        let repr = FrameRepr::parse(&Frame::new_unchecked(&pending[..total]))?;
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.frames += 1;
        Ok(Some(repr))
    }

    /// Declares the end of the stream: an incomplete frame still buffered is an error
    /// ([`WireError::Truncated`], which poisons the decoder).
    pub fn finish(&mut self) -> Result<(), WireError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let available = self.buffered_len();
        if available == 0 {
            return Ok(());
        }
        let pending = &self.buf[self.start..];
        let needed = if pending.len() >= PREFIX_LEN {
            PREFIX_LEN + read_u32(pending, field::LENGTH) as usize
        } else {
            PREFIX_LEN
        };
        Err(self.poison(WireError::Truncated { needed, available }))
    }

    /// Pushes all of `bytes`, popping frames into `out` as they complete.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<FrameRepr>) -> Result<(), WireError> {
        loop {
            let taken = self.push(bytes);
            bytes = &bytes[taken..];
            while let Some(frame) = self.pop()? {
                out.push(frame);
            }
            if bytes.is_empty() {
                return Ok(());
            }
            if taken == 0 {
                // Unreachable by the capacity invariant (a full buffer pops a frame or
                // fails); kept as a guard so a logic error cannot loop forever.
                let needed = self.capacity() + 1;
                return Err(self.poison(WireError::Truncated {
                    needed,
                    available: self.buffered_len(),
                }));
            }
        }
    }

    fn poison(&mut self, e: WireError) -> WireError {
        self.error = Some(e.clone());
        self.buf = Vec::new();
        self.start = 0;
        e
    }
}

/// Reads from `reader` until `dec` yields one frame (host side, e.g. the management
/// client). Bytes after that frame stay buffered in `dec` for the next call; nothing
/// is read beyond what the decoder can hold. Wire errors come back as
/// `InvalidData` wrapping the [`WireError`] text; end of stream as `UnexpectedEof`.
#[cfg(any(test, feature = "std"))]
pub fn read_frame<R: std::io::Read>(
    reader: &mut R,
    dec: &mut FrameDecoder,
) -> std::io::Result<FrameRepr> {
    use std::io::{Error, ErrorKind};
    const READ_CHUNK_BYTES: usize = 64 * 1024;
    let mut buf = alloc::vec![0u8; READ_CHUNK_BYTES];
    loop {
        match dec.pop() {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(Error::new(ErrorKind::InvalidData, e.to_string())),
        }
        let want = dec.room().min(READ_CHUNK_BYTES);
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            let text = match dec.finish() {
                Err(e) => e.to_string(),
                Ok(()) => String::from("connection closed between frames"),
            };
            return Err(Error::new(ErrorKind::UnexpectedEof, text));
        }
        let taken = dec.push(&buf[..n]);
        debug_assert_eq!(taken, n);
    }
}

/// One malformed input for robustness tests, and the error kind a decoder must report.
#[derive(Clone, Debug)]
pub struct BadSample {
    pub name: &'static str,
    /// Bytes to send on a fresh connection (then close the sending side).
    pub bytes: Vec<u8>,
    /// [`WireError::kind_index`] of the error the receiving decoder reports.
    pub kind_index: usize,
}

/// One sample per receive-side [`WireError`] kind (plus pure garbage), for tests that
/// throw bad input at a node's peer or management port and expect the matching counter
/// to rise while the node keeps serving.
pub fn bad_frame_samples() -> Vec<BadSample> {
    let header = FrameHeader {
        source: HOST_NODE,
        target: NodeId(1),
        timestamp: Timestamp(1),
        message_id: 1,
    };
    let msg = ClusterMessage::Ping(Ping {
        seq: 1,
        payload: alloc::vec![0xAB; 16],
    });
    // `encode_frame` cannot fail for this small, valid message; an empty frame would
    // only make the samples below fail their own test.
    let good = encode_frame(&header, &msg).unwrap_or_default();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        if b.len() >= FRAME_OVERHEAD_BYTES {
            f(&mut b);
        }
        b
    };
    let refill = |b: &mut Vec<u8>| Frame::new_unchecked(&mut b[..]).fill_checksum();
    let sample = |name, bytes, e: WireError| BadSample {
        name,
        bytes,
        kind_index: e.kind_index(),
    };
    let any_len = WireError::LengthMismatch {
        length: 0,
        body_len: 0,
    };
    alloc::vec![
        sample(
            "oversized",
            with(&|b| b[0..4].copy_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_le_bytes())),
            WireError::LengthOverLimit {
                length: 0,
                limit: 0
            },
        ),
        sample(
            "garbage",
            alloc::vec![0x47; 64],
            WireError::LengthOverLimit {
                length: 0,
                limit: 0
            }
        ),
        sample(
            "short_length",
            with(&|b| b[0..4].copy_from_slice(&8u32.to_le_bytes())),
            any_len.clone()
        ),
        sample(
            "body_len_mismatch",
            with(&|b| Frame::new_unchecked(&mut b[..]).set_body_len(3)),
            any_len,
        ),
        sample(
            "bad_magic",
            with(&|b| b[4] = b'Z'),
            WireError::BadMagic([0; 4])
        ),
        sample(
            "unknown_version",
            with(&|b| {
                Frame::new_unchecked(&mut b[..]).set_version(PROTOCOL_VERSION + 1);
                refill(b);
            }),
            WireError::UnknownVersion(0),
        ),
        sample(
            "unknown_type",
            with(&|b| {
                Frame::new_unchecked(&mut b[..]).set_msg_type(0x7777);
                refill(b);
            }),
            WireError::UnknownType(0),
        ),
        sample(
            "truncated",
            good[..good.len().saturating_sub(5)].to_vec(),
            WireError::Truncated {
                needed: 0,
                available: 0
            },
        ),
        sample(
            "bad_checksum",
            with(&|b| {
                let last = b.len() - 1;
                b[last] ^= 1;
            }),
            WireError::BadChecksum {
                expected: 0,
                actual: 0
            },
        ),
        sample(
            "bad_body",
            with(&|b| {
                // A Ping body declared as an Auth: postcard cannot decode it as one.
                Frame::new_unchecked(&mut b[..]).set_msg_type(MessageType::Auth as u16);
                refill(b);
            }),
            WireError::BadBody {
                msg_type: 0,
                reason: ""
            },
        ),
    ]
}

/// The fuzz target's body (also run by a bounded smoke test): decodes `data` as a
/// stream in chunks chosen by the data itself, checks the decoder's contract and that
/// every decoded frame re-encodes to a frame that decodes to the same value. Panics only
/// if a contract is broken.
pub fn fuzz_check(data: &[u8]) {
    let chunk = data.first().map_or(1, |b| (*b as usize % 97) + 1);
    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut result = Ok(());
    for piece in data.chunks(chunk) {
        result = dec.feed(piece, &mut frames);
        if result.is_err() {
            break;
        }
    }
    if let Err(e) = &result {
        assert!(dec.is_poisoned());
        assert_eq!(dec.push(b"x"), 0);
        assert_eq!(dec.pop().as_ref().err(), Some(e));
    }
    // The raw parser must agree with the decoder on the first frame.
    if let Ok(frame) = Frame::new_checked(data)
        && let Ok(repr) = FrameRepr::parse(&frame)
    {
        assert_eq!(frames.first(), Some(&repr));
    }
    for repr in &frames {
        let bytes = match encode_frame(&repr.header, &repr.message) {
            Ok(b) => b,
            Err(e) => panic!("decoded frame does not re-encode: {e}"),
        };
        let mut again = Vec::new();
        let mut d2 = FrameDecoder::new();
        assert_eq!(d2.feed(&bytes, &mut again), Ok(()));
        assert_eq!(again.as_slice(), core::slice::from_ref(repr));
    }
}
