//! Off-line replay of one node: its durable Raft region re-applied through the cluster
//! state machine, the state hash after every entry compared with the node's own
//! audit record for that index.
//!
//! Same code as the node: the region is opened by `xdv_node::DurableStorage` (the
//! node's `Storage`), the state starts from the latest snapshot image
//! (`ClusterState::restore_image`) or, for the bootstrap snapshot, from
//! `xdv_node::genesis` of the node's configuration; entries are applied exactly as
//! `Node::applied_entry` does (only `Normal` entries past the state's applied index).
//! The node's record of an applied entry is the audit `Custom` record with tag
//! [`xdv_node::AUDIT_TAG_APPLIED`]: postcard `(index, command name, state hash)`.

use super::fastread::{MerkleIndex, verify_threads};
use super::image::{NodeImage, RegionPlace};
use std::collections::BTreeMap;
use std::sync::Arc;
use xdv_audit::{RecordBody, RecordView, VerifyError, VerifyReport, inspect_region_with};
use xdv_cluster::mgmt;
use xdv_cluster::{ClusterState, Command, Event, GlobalTime, Proposal};
use xdv_federation::vivaldi::Coordinate;
use xdv_node::{
    AUDIT_TAG_APPLIED, AUDIT_TAG_NODE, AUDIT_TAG_RTT, DurableStorage, OpenError, RttRecordBody,
};
use xdv_raft::{EntryKind, Storage};
use xdv_types::{Hash32, NodeId};

/// Bytes at the start of a Raft region that are zero when consensus never ran there
/// (both header slots).
const RAFT_HEADER_BYTES: usize = 8192;

/// The node's record of one applied entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedRecord {
    /// Audit sequence number of the record.
    pub seq: u64,
    pub index: u64,
    /// The command name (shared: a region holds a few distinct names many times).
    pub command: Arc<str>,
    pub hash: Hash32,
}

/// An audit record worth a mark on a timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditMark {
    pub seq: u64,
    pub stamp: u64,
    /// `boot`, `alarm`, `damage`, `full`, `halt`, `root`.
    pub kind: &'static str,
    pub text: String,
}

/// One audit region read in one pass: the verifier's verdict, every readable record's
/// hash (the Merkle leaves, region order), the applied-entry records and the marks.
pub struct AuditRead {
    pub node: Option<NodeId>,
    pub verdict: Result<VerifyReport, VerifyError>,
    pub hashes: Vec<Hash32>,
    /// The Merkle tree over `hashes`, for the root of any prefix
    /// ([`AuditRead::root_at`]).
    pub merkle: MerkleIndex,
    pub applied: Vec<AppliedRecord>,
    /// Applied-entry records whose bytes do not decode.
    pub undecodable: Vec<u64>,
    /// (seq, Raft index, Raft term) of every `RaftApplied` record.
    pub raft_applied: Vec<(u64, u64, u64)>,
    pub marks: Vec<AuditMark>,
    /// (seq, sample) of every RTT-sample record ([`xdv_node::AUDIT_TAG_RTT`]); `None`
    /// when its bytes do not decode.
    pub rtt: Vec<(u64, Option<RttRecordBody>)>,
}

impl AuditRead {
    /// Merkle root ([`xdv_audit::merkle`]) over the first `size` record hashes
    /// (`None` past the end).
    pub fn root_at(&self, size: u64) -> Option<Hash32> {
        self.merkle.root(&self.hashes, size)
    }
}

/// What the readers collect from each readable record, in region order.
#[derive(Default)]
pub(crate) struct Collected {
    applied: Vec<AppliedRecord>,
    undecodable: Vec<u64>,
    raft_applied: Vec<(u64, u64, u64)>,
    marks: Vec<AuditMark>,
    rtt: Vec<(u64, Option<RttRecordBody>)>,
    /// Command names seen so far, each allocated once (at most [`MAX_NAMES`]).
    names: Vec<Arc<str>>,
}

/// Most distinct command names [`Collected`] keeps shared; past that (only a
/// region with many made-up names) each record gets its own copy.
const MAX_NAMES: usize = 64;

/// Decodes an applied-entry record's bytes, postcard `(index, command name, state
/// hash)`, borrowing the name: accepts exactly the bytes that
/// `mgmt::decode::<(u64, String, Hash32)>` accepts (size limit, postcard's varint
/// limits, UTF-8, no trailing bytes; a test compares the two), without allocating
/// and without serde's byte-at-a-time read of the hash.
#[inline]
pub(crate) fn decode_applied(bytes: &[u8]) -> Option<(u64, &str, Hash32)> {
    if bytes.len() > mgmt::MAX_MGMT_BYTES {
        return None;
    }
    let (index, rest) = varint_u64(bytes)?;
    let (len, rest) = varint_u64(rest)?;
    let (name, rest) = rest.split_at_checked(usize::try_from(len).ok()?)?;
    let name = std::str::from_utf8(name).ok()?;
    // Exactly the 32 hash bytes left: nothing trails.
    let hash: [u8; 32] = rest.try_into().ok()?;
    Some((index, name, Hash32(hash)))
}

/// postcard's `u64` (and 64-bit `usize`) varint: at most 10 LEB128 bytes, the
/// tenth at most 1; the value and the bytes after it.
#[inline]
fn varint_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut out = 0u64;
    for i in 0..10 {
        let v = *b.get(i)?;
        out |= u64::from(v & 0x7F) << (7 * i);
        if v & 0x80 == 0 {
            return (i < 9 || v <= 1).then_some((out, &b[i + 1..]));
        }
    }
    None
}

impl Collected {
    pub(crate) fn visit(&mut self, v: &RecordView) {
        let seq = v.header.seq;
        let mark = |kind, text: String| AuditMark {
            seq,
            stamp: v.header.stamp.0,
            kind,
            text,
        };
        match &v.body {
            RecordBody::Custom { tag, bytes } if *tag == AUDIT_TAG_APPLIED => {
                self.applied_bytes(seq, bytes)
            }
            RecordBody::Custom { tag, bytes } if *tag == AUDIT_TAG_NODE => {
                let line = mgmt::decode::<String>(bytes).unwrap_or_else(|_| "node record".into());
                if line.contains("halted") {
                    self.marks.push(mark("halt", line));
                }
            }
            RecordBody::Custom { tag, bytes } if *tag == xdv_node::AUDIT_TAG_ROOT_ALARM => {
                let text = match mgmt::decode::<(NodeId, u64, u64)>(bytes) {
                    Ok((node, held, records)) => format!(
                        "audit-root alarm: {node}'s root over {records} records does not extend its root over {held}"
                    ),
                    Err(_) => "audit-root alarm (undecodable)".into(),
                };
                self.marks.push(mark("root-alarm", text));
            }
            RecordBody::Custom { tag, bytes } if *tag == AUDIT_TAG_RTT => self
                .rtt
                .push((seq, mgmt::decode::<RttRecordBody>(bytes).ok())),
            RecordBody::RaftApplied { index, term, .. } => self.raft_applied(seq, *index, *term),
            RecordBody::Boot { count } => self.marks.push(mark("boot", format!("boot {count}"))),
            RecordBody::AuditAlarm {
                used_bytes,
                region_bytes,
                ..
            } => self.marks.push(mark(
                "alarm",
                format!(
                    "audit region past its high-water mark ({used_bytes} of {region_bytes} bytes)"
                ),
            )),
            RecordBody::Damaged { offset, bytes, .. } => self.marks.push(mark(
                "damage",
                format!("damaged range {offset:#x}+{bytes} recorded"),
            )),
            RecordBody::RegionFull { records, .. } => self.marks.push(mark(
                "full",
                format!("audit region full at {records} records"),
            )),
            RecordBody::MerkleRootPublished { size, root } => self.marks.push(mark(
                "root",
                format!("root over {size} records {}", root.short()),
            )),
            _ => {}
        }
    }

    /// Room for `records` applied-entry and as many `RaftApplied` records (memory
    /// is only touched as they come; `huge`: backed by huge pages where the kernel
    /// can, [`super::fastread::huge_pages`]).
    pub(crate) fn with_capacity(records: usize, huge: bool) -> Collected {
        let mut c = Collected {
            applied: Vec::with_capacity(records),
            raft_applied: Vec::with_capacity(records),
            ..Collected::default()
        };
        if huge {
            super::fastread::huge_pages(&mut c.applied);
            super::fastread::huge_pages(&mut c.raft_applied);
        }
        c
    }

    /// The applied-entry record `seq` with these `Custom` bytes.
    pub(crate) fn applied_bytes(&mut self, seq: u64, bytes: &[u8]) {
        match decode_applied(bytes) {
            Some((index, name, hash)) => {
                let command = self.name(name);
                self.applied.push(AppliedRecord {
                    seq,
                    index,
                    command,
                    hash,
                })
            }
            None => self.undecodable.push(seq),
        }
    }

    /// The `RaftApplied` record `seq`.
    pub(crate) fn raft_applied(&mut self, seq: u64, index: u64, term: u64) {
        self.raft_applied.push((seq, index, term))
    }

    /// `name`, shared with every earlier record of the same name.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.iter().find(|n| ***n == *name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        if self.names.len() < MAX_NAMES {
            self.names.push(n.clone());
        }
        n
    }

    /// Moves everything `later` collected to the end of this, leaving `later` empty
    /// with its capacity (and its command names) kept for reuse.
    pub(crate) fn append_from(&mut self, later: &mut Collected) {
        self.applied.append(&mut later.applied);
        self.undecodable.append(&mut later.undecodable);
        self.raft_applied.append(&mut later.raft_applied);
        self.marks.append(&mut later.marks);
        self.rtt.append(&mut later.rtt);
    }

    pub(crate) fn into_read(
        self,
        node: Option<NodeId>,
        verdict: Result<VerifyReport, VerifyError>,
        hashes: Vec<Hash32>,
        merkle: MerkleIndex,
    ) -> AuditRead {
        AuditRead {
            node,
            verdict,
            hashes,
            merkle,
            applied: self.applied,
            undecodable: self.undecodable,
            raft_applied: self.raft_applied,
            marks: self.marks,
            rtt: self.rtt,
        }
    }
}

/// Reads an audit region (the bytes at its place in the RAM file) in one pass, on
/// [`verify_threads`] threads (see [`super::fastread`]); the result is exactly
/// [`read_audit_simple`]'s.
pub fn read_audit(bytes: &[u8]) -> AuditRead {
    read_audit_threads(bytes, verify_threads())
}

/// [`read_audit`] on `threads` threads.
pub fn read_audit_threads(bytes: &[u8], threads: usize) -> AuditRead {
    super::fastread::read_clean(bytes, threads).unwrap_or_else(|| read_audit_simple(bytes))
}

/// [`read_audit`] the straightforward way: the node's own scanner, one record after
/// the other on one thread. The fast reader falls back to it for any region that
/// is not one clean chain (damage, a torn tail, no superblock), and the tests hold
/// the two equal.
pub fn read_audit_simple(bytes: &[u8]) -> AuditRead {
    let mut hashes = Vec::new();
    let mut c = Collected::default();
    let insp = inspect_region_with(bytes, &mut |v: &RecordView| {
        hashes.push(v.hash);
        c.visit(v);
    });
    let merkle = MerkleIndex::build(&hashes, 1);
    c.into_read(
        insp.scan.as_ref().map(|s| s.node),
        insp.verdict,
        hashes,
        merkle,
    )
}

/// Why a replay could not run.
#[derive(Debug)]
pub enum ReplayError {
    /// The Raft region is blank: consensus never ran on this RAM file.
    NoRaftRegion(RegionPlace),
    /// The Raft region does not open (the node's own refusal).
    RaftDamaged(String),
    /// No audit record of any node in the audit region.
    NoAuditRegion(RegionPlace),
    /// The regions (or the file name, or the provisioning) name different nodes.
    Mismatch(String),
    /// The snapshot is a bootstrap one and the node's configuration is unknown.
    NoGenesis(String),
    /// The snapshot image in the region does not restore.
    BadSnapshot(String),
    /// Every audit record of an applied entry is older than the snapshot: nothing to
    /// compare the replay with.
    SnapshotNewerThanAudit {
        snapshot_index: u64,
        last_recorded: Option<u64>,
    },
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::NoRaftRegion(at) => write!(
                f,
                "no Raft region: the bytes at {at} are blank (this node never ran consensus, \
                 or the file is not a node's RAM file; --raft ADDR,SIZE if it was booted with another raft=)"
            ),
            ReplayError::RaftDamaged(why) => write!(f, "the Raft region does not open: {why}"),
            ReplayError::NoAuditRegion(at) => write!(
                f,
                "no audit region: no superblock and no record at {at} (--audit ADDR,SIZE if the node was booted with another audit=)"
            ),
            ReplayError::Mismatch(why) => f.write_str(why),
            ReplayError::NoGenesis(why) => write!(
                f,
                "the log starts at the bootstrap snapshot and the genesis state needs the node's \
                 provisioning: {why}"
            ),
            ReplayError::BadSnapshot(why) => {
                write!(
                    f,
                    "the snapshot image in the Raft region does not restore: {why}"
                )
            }
            ReplayError::SnapshotNewerThanAudit {
                snapshot_index,
                last_recorded,
            } => write!(
                f,
                "the Raft region's snapshot is at index {snapshot_index} but the audit records of applied \
                 entries end at {}: nothing to compare the replay with (audit region reformatted or from another run?)",
                last_recorded.map_or("none".into(), |i| i.to_string())
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// One re-applied entry.
#[derive(Clone, Debug)]
pub struct Step {
    pub index: u64,
    pub term: u64,
    /// Command name, or `invalid`.
    pub command: &'static str,
    /// The proposer's stamp (Lamport time, proposing node: the leader).
    pub time: GlobalTime,
    pub events: Vec<Event>,
    /// State hash after the entry, on the host.
    pub hash: Hash32,
    /// The node's recorded hash for this index, if it recorded one.
    pub recorded: Option<Hash32>,
    /// An accepted `PublishAuditRoot`: (node, records, root).
    pub published: Option<(NodeId, u64, Hash32)>,
}

/// The outcome of the comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    ExactMatch {
        checked: u64,
    },
    Diverged {
        index: u64,
        host: Hash32,
        node: Hash32,
        host_command: String,
        node_command: String,
    },
    /// Entries were applied but the node recorded none of them.
    NothingChecked,
    /// The readable records agree, but the audit chain is broken at `seq` (a record
    /// changed without re-chaining, damage nobody recorded): what it said is not
    /// trusted. `first_unchecked`: the first replayed index with no readable record
    /// before the last recorded one (the index the broken record most likely held).
    AuditDamaged {
        seq: u64,
        offset: u64,
        what: String,
        first_unchecked: Option<u64>,
        checked: u64,
    },
}

impl Verdict {
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::ExactMatch { .. })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::ExactMatch { checked } => {
                write!(f, "ExactMatch ({checked} state hashes checked)")
            }
            Verdict::Diverged {
                index,
                host,
                node,
                host_command,
                node_command,
            } => write!(
                f,
                "Diverged at index {index}: host {} after {host_command}, node {} after {node_command}",
                host.short(),
                node.short()
            ),
            Verdict::NothingChecked => write!(f, "nothing checked (the node recorded no entry)"),
            Verdict::AuditDamaged {
                seq, what, checked, ..
            } => write!(
                f,
                "audit chain broken at record {seq} ({what}); {checked} hashes agreed before it"
            ),
        }
    }
}

/// What the replay of one node found.
pub struct Replay {
    pub node: u32,
    pub cluster: u32,
    pub snapshot_index: u64,
    pub snapshot_term: u64,
    /// The snapshot carried a state image (else: the bootstrap, genesis state).
    pub snapshot_image: bool,
    /// (host hash of the restored image, the node's record at its applied index).
    pub snapshot_check: Option<(Hash32, Option<Hash32>)>,
    pub commit: u64,
    pub last_index: u64,
    pub steps: Vec<Step>,
    /// Applied entries the node has no record of.
    pub unrecorded: Vec<u64>,
    /// The node's records of entries at or before the snapshot (not replayable).
    pub before_snapshot: u64,
    /// The node's records of entries past the region's commit index.
    pub past_commit: u64,
    pub verdict: Verdict,
    pub final_state: ClusterState,
    pub audit: AuditRead,
    pub genesis_from: String,
    /// The RTT samples' replay ([`check_rtt`]).
    pub rtt: RttCheck,
}

fn raft_identity(img: &NodeImage) -> Result<(u32, u32), ReplayError> {
    let head = &img.raft[..img.raft.len().min(RAFT_HEADER_BYTES)];
    if head.iter().all(|&b| b == 0) {
        return Err(ReplayError::NoRaftRegion(img.raft_at));
    }
    // Opening as cluster 0, node 0 (never a real node: ids start at 1) makes the
    // node's own code name the region's owner without reading further.
    match DurableStorage::open(img.raft.clone(), 0, 0, &[]) {
        Err(OpenError::Foreign { cluster, node }) => Ok((cluster, node)),
        Err(e) => Err(ReplayError::RaftDamaged(e.to_string())),
        Ok(_) => Ok((0, 0)),
    }
}

fn check_identity(img: &NodeImage, cluster: u32, node: u32) -> Result<(), ReplayError> {
    if let Some(f) = img.file_node.filter(|&f| f != node) {
        return Err(ReplayError::Mismatch(format!(
            "{} holds the Raft region of node {node}, not of node {f}",
            img.path.display()
        )));
    }
    if let Some(c) = &img.config {
        let id = &c.identity;
        if id.node != node || id.cluster != cluster {
            return Err(ReplayError::Mismatch(format!(
                "the provisioning ({}) is node {} of cluster {} but the Raft region is node {node} of cluster {cluster}",
                img.config_from, id.node, id.cluster
            )));
        }
    }
    Ok(())
}

/// Replays node `img` (see the module doc).
pub fn replay(img: &NodeImage) -> Result<Replay, ReplayError> {
    let (cluster, node) = raft_identity(img)?;
    check_identity(img, cluster, node)?;
    let (storage, _) = DurableStorage::open(img.raft.clone(), cluster, node, &[])
        .map_err(|e| ReplayError::RaftDamaged(e.to_string()))?;
    let audit = read_audit(&img.audit);
    match audit.node {
        None => return Err(ReplayError::NoAuditRegion(img.audit_at)),
        Some(n) if n.0 != node => {
            return Err(ReplayError::Mismatch(format!(
                "the audit region belongs to node {} but the Raft region to node {node}",
                n.0
            )));
        }
        Some(_) => {}
    }
    let mut recorded: BTreeMap<u64, Vec<&AppliedRecord>> = BTreeMap::new();
    for r in &audit.applied {
        recorded.entry(r.index).or_default().push(r);
    }
    let snap = storage.snapshot().clone();
    let commit = storage.hard_state().commit;
    let (mut state, genesis_from) = start_state(img, &snap.data)?;
    let start = state.data().applied_index;
    let last_recorded = recorded.keys().next_back().copied();
    if !snap.data.is_empty() && last_recorded.is_none_or(|l| l < start) {
        return Err(ReplayError::SnapshotNewerThanAudit {
            snapshot_index: snap.meta.index,
            last_recorded,
        });
    }
    let snapshot_check = (!snap.data.is_empty()).then(|| {
        let at = recorded.get(&start).and_then(|v| v.first()).map(|r| r.hash);
        (state.hash(), at)
    });
    let entries = storage
        .entries(snap.meta.index + 1, commit + 1, usize::MAX)
        .map_err(|e| {
            ReplayError::RaftDamaged(format!(
                "the log does not hold the committed entries {}..={commit}: {e:?}",
                snap.meta.index + 1
            ))
        })?;
    let mut steps = Vec::new();
    let mut unrecorded = Vec::new();
    let mut own_coordinates = Vec::new();
    let mut checked = 0u64;
    let mut verdict = None;
    if let Some((host, Some(node_hash))) = snapshot_check
        && host != node_hash
    {
        verdict = Some(Verdict::Diverged {
            index: start,
            host,
            node: node_hash,
            host_command: "snapshot".into(),
            node_command: recorded[&start][0].command.to_string(),
        });
    }
    for e in &entries {
        let EntryKind::Normal(data) = &e.kind else {
            continue;
        };
        if e.index <= state.data().applied_index || verdict.is_some() {
            continue;
        }
        let proposal = Proposal::decode(data).ok();
        let published = match &proposal {
            Some(Proposal {
                command:
                    Command::PublishAuditRoot {
                        node,
                        records,
                        root,
                        ..
                    },
                ..
            }) => Some((*node, *records, *root)),
            _ => None,
        };
        if let Some(Proposal {
            command: Command::LoadHeartbeat(r),
            ..
        }) = &proposal
            && r.node.0 == node
            && let Some(c) = r.coordinate
        {
            own_coordinates.push((e.index, c));
        }
        let applied = state.apply(e.index, data);
        let hash = state.hash();
        let command = applied.command.unwrap_or("invalid");
        let accepted = applied
            .events
            .iter()
            .any(|ev| matches!(ev, Event::RootPublished { .. }));
        let mine = recorded.get(&e.index);
        if let Some(rs) = mine {
            checked += 1;
            if let Some(bad) = rs.iter().find(|r| r.hash != hash || *r.command != *command) {
                verdict = Some(Verdict::Diverged {
                    index: e.index,
                    host: hash,
                    node: bad.hash,
                    host_command: command.into(),
                    node_command: bad.command.to_string(),
                });
            }
        } else {
            unrecorded.push(e.index);
        }
        steps.push(Step {
            index: e.index,
            term: e.term,
            command,
            time: applied.time,
            events: applied.events,
            hash,
            recorded: mine.and_then(|v| v.first()).map(|r| r.hash),
            published: published.filter(|_| accepted),
        });
    }
    let verdict = match (verdict, &audit.verdict) {
        (Some(d), _) => d,
        (None, Err(e)) => Verdict::AuditDamaged {
            seq: e.seq,
            offset: e.offset,
            what: e.what.to_string(),
            first_unchecked: unrecorded
                .iter()
                .copied()
                .find(|&i| last_recorded.is_some_and(|l| i < l)),
            checked,
        },
        (None, Ok(_)) if checked > 0 || steps.is_empty() => Verdict::ExactMatch { checked },
        (None, Ok(_)) => Verdict::NothingChecked,
    };
    let before_snapshot = recorded.range(..=start).map(|(_, v)| v.len() as u64).sum();
    let past_commit = recorded
        .range(commit + 1..)
        .map(|(_, v)| v.len() as u64)
        .sum();
    let rtt = check_rtt(img, NodeId(node), &audit, &own_coordinates);
    Ok(Replay {
        node,
        cluster,
        snapshot_index: snap.meta.index,
        snapshot_term: snap.meta.term,
        snapshot_image: !snap.data.is_empty(),
        snapshot_check,
        commit,
        last_index: storage.last_index(),
        steps,
        unrecorded,
        before_snapshot,
        past_commit,
        verdict,
        final_state: state,
        audit,
        genesis_from,
        rtt,
    })
}

/// What the replay of the node's RTT samples found (its Vivaldi input log, audit
/// records [`AUDIT_TAG_RTT`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RttCheck {
    /// Samples recorded, and how many of them the node took.
    pub samples: usize,
    pub taken: usize,
    /// Boots whose samples were replayed (each from a fresh coordinate).
    pub boots: usize,
    /// The node's own load heartbeats among the replayed entries that carry its
    /// coordinate, and how many of those coordinates the replay reached.
    pub heartbeats: usize,
    pub matched: usize,
    /// The coordinate after the last sample replayed.
    pub last: Option<Coordinate>,
    /// The first thing that did not replay; `None` when everything did.
    pub problem: Option<String>,
}

impl RttCheck {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Replays the node's RTT samples boot by boot through the node's own code
/// ([`xdv_node::replay_coordinate_with`]): every take/refuse verdict must be the
/// node's, and every coordinate the node reported in a load heartbeat (`own`, log
/// order) must be one the replay reaches (bit for bit).
fn check_rtt(
    img: &NodeImage,
    me: NodeId,
    audit: &AuditRead,
    own: &[(u64, Coordinate)],
) -> RttCheck {
    let mut c = RttCheck {
        samples: audit.rtt.len(),
        heartbeats: own.len(),
        ..RttCheck::default()
    };
    if let Some((seq, _)) = audit.rtt.iter().find(|(_, r)| r.is_none()) {
        c.problem = Some(format!("RTT record {seq} does not decode"));
        return c;
    }
    if audit.rtt.is_empty() {
        if !own.is_empty() {
            c.problem = Some(format!(
                "the node reported a coordinate in {} load heartbeats but its audit region holds no RTT sample",
                own.len()
            ));
        }
        return c;
    }
    let Some(cfg) = img.config.as_ref() else {
        c.problem = Some(format!(
            "no node configuration ({}) to replay the RTT samples with",
            img.config_from
        ));
        return c;
    };
    // Each boot starts from a fresh coordinate: split the samples at the boot records
    // (both lists are in record order).
    let boots: Vec<u64> = audit
        .marks
        .iter()
        .filter(|m| m.kind == "boot")
        .map(|m| m.seq)
        .collect();
    let boot_of = |seq: &u64| boots.partition_point(|b| b < seq);
    let mut reached: Vec<Coordinate> = Vec::new();
    let mut rest = &audit.rtt[..];
    while let Some((first, _)) = rest.first() {
        let boot = boot_of(first);
        let len = rest.partition_point(|(seq, _)| boot_of(seq) == boot);
        let (this, later) = rest.split_at(len);
        rest = later;
        c.boots += 1;
        let samples = this.iter().filter_map(|(_, r)| r.as_ref());
        let r = xdv_node::replay_coordinate_with(me, cfg, samples, |co| reached.push(*co));
        if let Err(e) = r {
            c.problem = Some(format!("boot {boot}: {e}"));
            return c;
        }
    }
    c.taken = reached.len();
    c.last = reached.last().copied();
    for (index, want) in own {
        if !reached.contains(want) {
            c.problem = Some(format!(
                "the node's load heartbeat at index {index} reports coordinate {} that the replayed samples never reach ({} heartbeats before it matched)",
                coordinate_text(want),
                c.matched
            ));
            return c;
        }
        c.matched += 1;
    }
    c
}

/// A coordinate for people: position and height in ms, error, samples.
pub fn coordinate_text(c: &Coordinate) -> String {
    let ms = |us: i64| format!("{:.3}", us as f64 / 1000.0);
    format!(
        "({}; h {} ms; error {:.1} %; {} samples)",
        c.position_us.map(ms).join(", "),
        ms(c.height_us),
        c.error_ppm as f64 / 10_000.0,
        c.sample_count
    )
}

/// The state the node's log starts from: the snapshot image, or the genesis state of
/// the node's configuration for the bootstrap snapshot (which carries no image).
fn start_state(img: &NodeImage, image: &[u8]) -> Result<(ClusterState, String), ReplayError> {
    if image.is_empty() {
        let cfg = img
            .config
            .as_ref()
            .ok_or_else(|| ReplayError::NoGenesis(img.config_from.clone()))?;
        let s = xdv_node::genesis(cfg).map_err(ReplayError::NoGenesis)?;
        return Ok((s, format!("genesis from {}", img.config_from)));
    }
    let config = img
        .config
        .as_ref()
        .map_or_else(xdv_cluster::Config::default, |c| c.state.clone());
    let mut s =
        ClusterState::new(config).map_err(|e| ReplayError::BadSnapshot(format!("{e:?}")))?;
    s.restore_image(image)
        .map_err(|e| ReplayError::BadSnapshot(e.to_string()))?;
    Ok((s, "the snapshot image in the Raft region".into()))
}

#[cfg(test)]
mod rtt_tests {
    use super::*;
    use xdv_audit::AuditLog;
    use xdv_federation::vivaldi::VivaldiConfig;
    use xdv_types::{CoreId, Timestamp};

    /// An audit region holding one boot record, read.
    fn one_boot() -> AuditRead {
        let mut region = vec![0u8; 1 << 16];
        let (mut log, _) = AuditLog::open(&mut region, NodeId(2)).unwrap();
        log.append(Timestamp(1), CoreId(0), &RecordBody::Boot { count: 1 })
            .unwrap();
        drop(log);
        read_audit(&region)
    }

    fn image() -> NodeImage {
        let place = RegionPlace {
            offset: 0,
            bytes: 0,
        };
        NodeImage {
            path: "node2.ram".into(),
            file_node: Some(2),
            raft_at: place,
            raft: Vec::new(),
            audit_at: place,
            audit: Vec::new(),
            config: None,
            config_from: "test".into(),
        }
    }

    #[test]
    fn rtt_records_that_do_not_decode_or_are_missing_are_named() {
        let coord = Coordinate::origin(&VivaldiConfig::default());
        let mut a = one_boot();
        a.rtt = vec![(1, None)];
        let c = check_rtt(&image(), NodeId(2), &a, &[]);
        assert_eq!(c.problem.as_deref(), Some("RTT record 1 does not decode"));
        assert!(!c.ok());

        let a = one_boot();
        let c = check_rtt(&image(), NodeId(2), &a, &[(12, coord), (15, coord)]);
        assert_eq!(
            c.problem.as_deref(),
            Some(
                "the node reported a coordinate in 2 load heartbeats but its audit region \
                 holds no RTT sample"
            )
        );
        // Nothing measured and nothing reported: nothing to check, and no problem.
        let c = check_rtt(&image(), NodeId(2), &a, &[]);
        assert!(c.ok() && c.samples == 0 && c.boots == 0, "{c:?}");
    }
}
