//! Peer transport: TCP connections between nodes carrying wire frames
//! (`xdv_net::wire`), plus the management listener and a bulk-transfer sink.
//!
//! - Peer `k` lives at 10.0.0.k on the peer network (`ip=` / provisioning). This node
//!   connects to every listed peer with a higher id and accepts connections from
//!   the others on [`PEER_TCP_PORT`]; the first frame each way is `Hello`.
//! - Every established connection sends `Ping` each [`HEARTBEAT_MS`]; a peer is up
//!   while it answered within [`PEER_TIMEOUT_MS`]. Between peers the ping and its pong
//!   carry the sender's Vivaldi coordinate (the pong answers the ping's `seq` with the
//!   answering node's coordinate instead of echoing the payload); each pong to the
//!   latest ping is an RTT sample for the node ([`Event::Rtt`]). A closed connection is retried
//!   by its connecting side after [`RECONNECT_MS`].
//! - Bad input (length over limit, unknown version or type, truncated or
//!   undecodable body, bad checksum) increments the counter of its kind, logs one
//!   line, and closes that connection. Nothing panics.
//! - Peers authenticate both ends before any Raft traffic: each side's `Hello` carries
//!   a fresh nonce, the other answers with `Auth`, an Ed25519 signature with its node
//!   key over (cluster, signer, verifier, nonce) (`xdv_cluster::mgmt::sign_peer_auth`),
//!   checked against the key in the provisioning module. A peer that is not in the
//!   module, or whose `Auth` does not verify, is counted and disconnected; Raft and
//!   forwarded management frames from a connection that is not authenticated are
//!   dropped and counted. Without a provisioning module there are no keys and peers are
//!   trusted on `Hello` alone (development; the boot log says so).
//! - The management listener ([`MGMT_TCP_PORT`], management NIC) answers `Ping` and
//!   hands `MgmtRequest` frames to its caller as [`Event::Client`]; replies come back
//!   through [`Transport::reply`].
//! - Slow clients cannot close the management port (hardening issue, case 4). Its
//!   [`MGMT_SLOTS`] slots are governed by [`xdv_net::admission`] under
//!   [`MGMT_LIMITS`]: a TCP handshake must finish within 2 s; a started frame must
//!   complete within 2 s of its first byte (plus 1 s per 32 KiB of it received, so a
//!   large module still arrives); a connection with nothing in progress and no reply
//!   owed is closed after 10 s idle; a request unanswered for 30 s closes its
//!   connection. A source address holding 4 slots may take another only while 2 stay
//!   free for sources holding fewer, else its own oldest evictable connection makes
//!   room (or, if it has none, the newcomer is refused): one address holds at most 6
//!   of the 8 and never locks others out. On QEMU user networking every host client
//!   is 10.0.2.2, so that rule only caps the host at 6 connections and makes a new
//!   connection replace the host's oldest idle or incomplete one — it never locks the
//!   host out. And whenever the last free slot is taken, the oldest evictable
//!   connection (a handshake, an idle connection or an incomplete frame, never one
//!   owed a reply) of the source holding the most slots is closed at once, so a
//!   waiting client always finds a listening slot. Every close is counted by reason
//!   and shown by `peers`.
//! - An accepted peer connection that has not authenticated within
//!   [`PEER_HANDSHAKE_MS`] is closed, so a silent client cannot hold the sockets that
//!   wait for lower-numbered peers.
//! - In a federation (the module's federation section, docs/federation.md) the other
//!   side's nodes — a gate's member-cluster nodes, a member's gates — are connected,
//!   pinged and authenticated like members (each node signs for its own cluster id,
//!   checked against the section's key and cluster id). They never carry Raft
//!   (dropped, `fed_dropped`); their forwards are [`Event::FedForward`] and their pongs
//!   [`Event::FedRtt`]. No section: no federation peers, nothing changes.
//! - The transport knows nothing about consensus or the cluster: it turns frames into
//!   [`Event`]s for the node and sends what the node's outbox holds.
//! - The bulk sink ([`BULK_PORT`]) checks what it receives against the bulk pattern
//!   (`xdv_net::bulk`: the TCP integrity test) and reports the first differing offset.

#![deny(unsafe_code)]

use crate::net::{Iface, Net};
use crate::{print, println, time};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, Ipv4Address};
use xdv_boot::federation::FedPeer;
use xdv_net::admission::{self, Admission, Limits};
use xdv_net::wire::{
    self, ClusterMessage, ErrorReport, FrameDecoder, FrameHeader, Hello, MGMT_TCP_PORT,
    PEER_TCP_PORT, Ping, WireErrorCounters,
};
use xdv_node::{ClientConn, Identity};
use xdv_types::{NodeId, Timestamp};

/// What the transport hands the node.
pub enum Event {
    /// A Raft message from an authenticated peer.
    Raft { from: NodeId, bytes: Vec<u8> },
    /// A management frame (`PeerForward`) from an authenticated peer.
    Forward { from: NodeId, bytes: Vec<u8> },
    /// Any frame from an authenticated peer (liveness).
    Heard(NodeId),
    /// An authenticated peer answered this node's latest ping after `rtt_us`; its pong
    /// carries the peer's Vivaldi coordinate (wire form, checked by the node).
    Rtt {
        from: NodeId,
        rtt_us: u64,
        coordinate: Vec<u8>,
    },
    /// A management request from a client connection.
    Client { conn: ClientConn, bytes: Vec<u8> },
    /// A management frame from an authenticated node on the other side of the
    /// federation (a gate, or a member cluster's node): only federation messages may
    /// pass (the caller checks).
    FedForward { from: NodeId, bytes: Vec<u8> },
    /// An RTT sample to a federation peer (see [`Event::Rtt`]).
    FedRtt {
        from: NodeId,
        rtt_us: u64,
        coordinate: Vec<u8>,
    },
}

pub const BULK_PORT: u16 = 7300;
pub const HEARTBEAT_MS: u64 = 500;
pub const PEER_TIMEOUT_MS: u64 = 3000;
pub const RECONNECT_MS: u64 = 1000;
/// Most peers a node keeps connections to.
pub const MAX_PEERS: usize = 15;
/// Management connections served at once by default (more are refused by TCP until
/// one closes); `mgmt=<slots>,<per-source>` on the command line changes it and the
/// per-source share (`xdv_boot::cmdline::KernelOptions::mgmt_slots`).
pub const MGMT_SLOTS: usize = xdv_boot::cmdline::DEFAULT_MGMT_SLOTS;
/// The management port's slow-client limits (see the module doc).
pub const MGMT_LIMITS: Limits = xdv_net::admission::MGMT_LIMITS;
const _: () = assert!(MGMT_LIMITS.reserve == xdv_boot::cmdline::MGMT_RESERVE_SLOTS);
const _: () = assert!(MGMT_LIMITS.per_source == xdv_boot::cmdline::DEFAULT_MGMT_PER_SOURCE);
/// An accepted peer connection must authenticate within this long.
pub const PEER_HANDSHAKE_MS: u64 = 10_000;
/// Receive buffer (= advertised window) of peer and management sockets: small enough
/// that a lossy link does not inflate TCP's retransmit timeout (docs/devices.md).
const PEER_RX_BYTES: usize = 64 * 1024;
/// Send buffer: a whole frame must fit (a Raft append carries at most
/// `RAFT_APPEND_BYTES` of entries; one entry is at most 128 KiB).
pub const PEER_TX_BYTES: usize = 256 * 1024;
/// Management replies a connection may have waiting beyond its socket's send buffer
/// (a client that pipelines many requests and reads slowly). Past it the connection is
/// reset, so the client sees the loss instead of waiting for an answer that was
/// dropped; before this queue a reply that did not fit was dropped silently.
pub const MGMT_OUTQ_BYTES: usize = 512 * 1024;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Role {
    Connect,
    Accept,
    Mgmt,
    /// A connection to a node that left the cluster: closed, never reopened.
    Retired,
}

struct Conn {
    handle: SocketHandle,
    role: Role,
    /// The peer node, once known (configured for Connect, from Hello for Accept).
    peer: Option<NodeId>,
    decoder: FrameDecoder,
    hello_sent: bool,
    hello_seen: bool,
    /// The peer proved its node key (or keys are off).
    authenticated: bool,
    /// The nonce this side sent in its `Hello` (the peer signs it).
    nonce: [u8; wire::NONCE_BYTES],
    /// Bumped whenever the socket is reopened, so a late reply never reaches a new client.
    generation: u64,
    last_heard_ms: u64,
    last_ping_ms: u64,
    ping_sent_us: u64,
    /// The `seq` of the latest ping (a pong answering an older one is no sample).
    ping_seq: u64,
    rtt_us: u64,
    frames_in: u64,
    frames_out: u64,
    retry_at_ms: u64,
    target: Option<(Ipv4Address, u16)>,
    /// When the socket left the listening state (accepted connections).
    opened_ms: Option<u64>,
    /// Management replies encoded but not yet in the socket (its send buffer was
    /// full), in order; flushed before anything newer is sent.
    outq: VecDeque<Vec<u8>>,
    /// Bytes in `outq`.
    outq_bytes: usize,
}

pub struct Transport {
    node: NodeId,
    clock: u64,
    next_msg: u64,
    conns: Vec<Conn>,
    pub errors: WireErrorCounters,
    bulk: SocketHandle,
    bulk_check: xdv_net::bulk::Check,
    bulk_last: Option<xdv_net::bulk::Verdict>,
    /// Times the sink found its receive buffer full (a zero window was advertised).
    bulk_full: u64,
    /// Handshakes refused (unknown node, bad or missing signature).
    pub auth_failures: u64,
    /// Raft or forwarded frames dropped because their connection was not authenticated.
    pub unauthenticated_dropped: u64,
    /// Who this node is and whom it trusts (the provisioning module).
    ident: Identity,
    /// Events for the node, taken by `poll`.
    events: Vec<Event>,
    /// Outbound frames refused by a full socket.
    pub send_failures: u64,
    /// Management connections reset because their unread replies passed
    /// [`MGMT_OUTQ_BYTES`].
    pub outq_resets: u64,
    /// Index of the first management connection in `conns`.
    mgmt_base: usize,
    /// Who holds the management slots (deadlines, per-source share, eviction).
    admission: Admission,
    /// Accepted peer connections closed for not authenticating in time.
    pub peer_handshake_timeouts: u64,
    /// This node's Vivaldi coordinate (wire form), piggy-backed on every peer ping
    /// and pong ([`Transport::set_coordinate`]).
    coordinate: Vec<u8>,
    /// The other side of the federation (a gate's member-cluster nodes, a member's
    /// gates; empty outside a federation): connected and authenticated like members
    /// (with their own cluster ids), never carrying Raft.
    fed: Vec<FedPeer>,
    /// Frames from federation peers that only members may send (Raft), dropped.
    pub fed_dropped: u64,
}

fn now_ms() -> u64 {
    time::uptime_us() / 1000
}

/// Peer and management sockets; window probes so a lost window update cannot stall a
/// connection forever (smoltcp 0.12 has no persist timer; docs/devices.md); no delayed
/// ACK and no Nagle, so neither a request nor an answer waits for a timer.
fn tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; PEER_RX_BYTES]),
        tcp::SocketBuffer::new(vec![0; PEER_TX_BYTES]),
    );
    xdv_net::phy::enable_window_probes(&mut s);
    xdv_net::phy::configure_request_socket(&mut s);
    s
}

fn new_conn(
    handle: SocketHandle,
    role: Role,
    peer: Option<NodeId>,
    target: Option<(Ipv4Address, u16)>,
) -> Conn {
    Conn {
        handle,
        role,
        peer,
        decoder: FrameDecoder::new(),
        hello_sent: false,
        hello_seen: false,
        authenticated: false,
        nonce: [0; wire::NONCE_BYTES],
        generation: 0,
        last_heard_ms: 0,
        last_ping_ms: 0,
        ping_sent_us: 0,
        ping_seq: 0,
        rtt_us: 0,
        frames_in: 0,
        frames_out: 0,
        retry_at_ms: 0,
        target,
        opened_ms: None,
        outq: VecDeque::new(),
        outq_bytes: 0,
    }
}

impl Transport {
    /// Sockets for every member with an address rule (peer `k` at 10.0.0.k) and the
    /// management slots (`mgmt_slots`, one source holding `mgmt_per_source` of them
    /// while slots are scarce). `None` without a peer NIC.
    pub fn new(
        ident: &Identity,
        fed: &[FedPeer],
        net: &mut Net,
        mgmt_slots: usize,
        mgmt_per_source: usize,
    ) -> Option<Transport> {
        assert!(
            (1..=mgmt_slots.saturating_sub(MGMT_LIMITS.reserve)).contains(&mgmt_per_source),
            "the command-line parser checked the management share"
        );
        let node = ident.node;
        let mut conns = Vec::new();
        let Some(peer_if) = net.peer.as_mut() else {
            log::warn!("transport: no peer NIC; peer transport off");
            return None;
        };
        // Members, then the federation's other side: the same address rule (node ids
        // are unique across a federation).
        for p in ident
            .peer_ids()
            .into_iter()
            .chain(fed.iter().map(|f| f.node))
            .filter(|&p| p != node)
            .take(MAX_PEERS)
        {
            let h = peer_if.sockets.add(tcp_socket());
            let (role, target) = if p > node {
                (
                    Role::Connect,
                    Some((Ipv4Address::new(10, 0, 0, p as u8), PEER_TCP_PORT)),
                )
            } else {
                (Role::Accept, None)
            };
            conns.push(new_conn(
                h,
                role,
                (role == Role::Connect).then_some(NodeId(p)),
                target,
            ));
        }
        let bulk = peer_if.sockets.add(xdv_net::phy::bulk_socket());
        let mgmt_base = conns.len();
        if let Some(m) = net.mgmt.as_mut() {
            for _ in 0..mgmt_slots {
                let h = m.sockets.add(tcp_socket());
                conns.push(new_conn(h, Role::Mgmt, None, None));
            }
        }
        Some(Transport {
            node: NodeId(node),
            clock: 0,
            next_msg: 1,
            conns,
            errors: WireErrorCounters::default(),
            bulk,
            bulk_check: xdv_net::bulk::Check::new(),
            bulk_last: None,
            bulk_full: 0,
            auth_failures: 0,
            unauthenticated_dropped: 0,
            ident: ident.clone(),
            events: Vec::new(),
            coordinate: Vec::new(),
            fed: fed.to_vec(),
            fed_dropped: 0,
            send_failures: 0,
            outq_resets: 0,
            mgmt_base,
            admission: Admission::new(
                mgmt_slots,
                Limits {
                    per_source: mgmt_per_source,
                    ..MGMT_LIMITS
                },
            ),
            peer_handshake_timeouts: 0,
        })
    }
}

/// Writes all of `frame` into the socket if its send buffer has room for all of it.
fn put(iface: &mut Iface, handle: SocketHandle, frame: &[u8]) -> bool {
    let s = iface.sockets.get_mut::<tcp::Socket>(handle);
    s.send_capacity() - s.send_queue() >= frame.len()
        && s.send_slice(frame).is_ok_and(|n| n == frame.len())
}

impl Transport {
    /// The federation peer `node`, if it is one.
    fn fed_peer(&self, node: NodeId) -> Option<&FedPeer> {
        self.fed.iter().find(|f| f.node == node.0)
    }

    fn is_fed(&self, node: Option<NodeId>) -> bool {
        node.is_some_and(|n| self.fed_peer(n).is_some())
    }

    fn header(&mut self, target: NodeId) -> FrameHeader {
        self.clock += 1;
        self.next_msg += 1;
        FrameHeader {
            source: self.node,
            target,
            timestamp: Timestamp(self.clock),
            message_id: self.next_msg,
        }
    }

    fn send(&mut self, iface: &mut Iface, i: usize, msg: &ClusterMessage) -> bool {
        let target = self.conns[i].peer.unwrap_or(wire::HOST_NODE);
        let hdr = self.header(target);
        let Ok(bytes) = wire::encode_frame(&hdr, msg) else {
            return false;
        };
        let ok = put(iface, self.conns[i].handle, &bytes);
        if ok {
            self.conns[i].frames_out += 1;
        }
        ok
    }

    /// Drives one connection: (re)open, hello, receive frames, heartbeat.
    fn service(&mut self, iface: &mut Iface, i: usize, now: u64) {
        let handle = self.conns[i].handle;
        let role = self.conns[i].role;
        let state = iface.sockets.get::<tcp::Socket>(handle).state();
        if state == tcp::State::Closed {
            self.reopen(iface, i, now);
            return;
        }
        if state == tcp::State::Listen {
            // Back to listening without passing Closed (a reset during the handshake).
            self.conns[i].opened_ms = None;
            self.conns[i].outq.clear();
            self.conns[i].outq_bytes = 0;
            if role == Role::Mgmt {
                self.admission.closed(i - self.mgmt_base);
            }
            return;
        }
        if self.conns[i].opened_ms.is_none() {
            self.conns[i].opened_ms = Some(now);
            if role == Role::Mgmt && !self.admit(iface, i, now) {
                return;
            }
        }
        if role == Role::Accept
            && !self.conns[i].authenticated
            && self.conns[i]
                .opened_ms
                .is_some_and(|t| now.saturating_sub(t) > PEER_HANDSHAKE_MS)
        {
            self.peer_handshake_timeouts += 1;
            log::warn!("transport: accepted peer connection did not authenticate in time; closing");
            iface.sockets.get_mut::<tcp::Socket>(handle).abort();
            return;
        }
        let remote_closed = matches!(
            state,
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::TimeWait
                | tcp::State::Closing
        );
        if remote_closed {
            iface.sockets.get_mut::<tcp::Socket>(handle).abort();
            return;
        }
        if state != tcp::State::Established {
            return;
        }
        if role == Role::Mgmt {
            self.admission.established(i - self.mgmt_base, now);
            self.flush_outq(iface, i);
        }
        if !self.conns[i].hello_sent && role != Role::Mgmt {
            let nonce = fresh_nonce(self.node, i, self.conns[i].generation);
            self.conns[i].nonce = nonce;
            let hello = ClusterMessage::Hello(Hello {
                node: self.node,
                nonce,
            });
            self.conns[i].hello_sent = self.send(iface, i, &hello);
        }
        let mut buf = [0u8; 4096];
        loop {
            let room = self.conns[i].decoder.room().min(buf.len());
            if room == 0 {
                break;
            }
            let n = iface
                .sockets
                .get_mut::<tcp::Socket>(handle)
                .recv_slice(&mut buf[..room])
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.conns[i].decoder.push(&buf[..n]);
            let before = self.conns[i].decoder.frames_decoded();
            if !self.drain_frames(iface, i, now) {
                return;
            }
            if role == Role::Mgmt {
                let d = &self.conns[i].decoder;
                let frames = d.frames_decoded() - before;
                let buffered = d.buffered_len();
                self.admission
                    .received(i - self.mgmt_base, n, frames, buffered, now);
            }
        }
        if !self.drain_frames(iface, i, now) {
            return;
        }
        let c = &self.conns[i];
        if role != Role::Mgmt && c.hello_seen && now - c.last_ping_ms >= HEARTBEAT_MS {
            self.conns[i].last_ping_ms = now;
            self.conns[i].ping_sent_us = time::uptime_us();
            let seq = now;
            self.conns[i].ping_seq = seq;
            let payload = self.coordinate.clone();
            self.send(iface, i, &ClusterMessage::Ping(Ping { seq, payload }));
        }
    }

    /// Pops and handles decoded frames; false if the connection was closed.
    fn drain_frames(&mut self, iface: &mut Iface, i: usize, now: u64) -> bool {
        loop {
            match self.conns[i].decoder.pop() {
                Ok(None) => return true,
                Ok(Some(frame)) => {
                    self.conns[i].frames_in += 1;
                    self.conns[i].last_heard_ms = now;
                    if let (Some(p), true, false) = (
                        self.conns[i].peer,
                        self.conns[i].authenticated,
                        self.conns[i].role == Role::Mgmt,
                    ) {
                        self.events.push(Event::Heard(p));
                    }
                    self.clock = self.clock.max(frame.header.timestamp.0).saturating_add(1);
                    self.handle(iface, i, frame.header, frame.message, now);
                }
                Err(e) => {
                    self.errors.record(&e);
                    let who = match self.conns[i].peer {
                        Some(p) => alloc::format!("peer {p}"),
                        None => alloc::format!("{:?} connection", self.conns[i].role),
                    };
                    log::warn!("transport: bad frame from {who}: {e}; closing the connection");
                    iface
                        .sockets
                        .get_mut::<tcp::Socket>(self.conns[i].handle)
                        .abort();
                    return false;
                }
            }
        }
    }

    fn handle(
        &mut self,
        iface: &mut Iface,
        i: usize,
        hdr: FrameHeader,
        msg: ClusterMessage,
        now: u64,
    ) {
        match msg {
            ClusterMessage::Hello(h) => {
                let c = &mut self.conns[i];
                if c.role == Role::Connect && c.peer != Some(h.node) {
                    log::warn!(
                        "transport: expected node {:?} but {} answered; closing",
                        c.peer,
                        h.node
                    );
                    iface.sockets.get_mut::<tcp::Socket>(c.handle).abort();
                    return;
                }
                let id = &self.ident;
                let fed = self.fed.iter().any(|f| f.node == h.node.0);
                if c.role == Role::Mgmt || !(id.is_member(h.node) || fed) {
                    log::warn!(
                        "transport: Hello from {} who is not a member; closing",
                        h.node
                    );
                    self.auth_failures += 1;
                    iface.sockets.get_mut::<tcp::Socket>(c.handle).abort();
                    return;
                }
                c.peer = Some(h.node);
                c.hello_seen = true;
                match id.seed {
                    None => {
                        c.authenticated = true;
                        log::info!(
                            "transport: peer {} connected ({:?}, no keys)",
                            h.node,
                            c.role
                        );
                    }
                    Some(seed) => {
                        let signature = xdv_cluster::mgmt::sign_peer_auth(
                            &seed, id.cluster, self.node, h.node, &h.nonce,
                        );
                        let auth = ClusterMessage::Auth(wire::Auth {
                            node: self.node,
                            signature,
                        });
                        self.send(iface, i, &auth);
                    }
                }
            }
            ClusterMessage::Auth(a) => {
                let c = &self.conns[i];
                let id = &self.ident;
                // A member signs for this cluster, a federation peer for its own
                // (every node signs with its own cluster id).
                let key = c
                    .peer
                    .and_then(|p| match self.fed.iter().find(|f| f.node == p.0) {
                        Some(f) => id.seed.map(|_| (f.public_key, f.cluster)),
                        None => id.key_of(p).map(|k| (k, id.cluster)),
                    });
                let ok = match (c.peer, key) {
                    (Some(p), Some((key, cluster))) if p == a.node && c.hello_seen => {
                        xdv_cluster::mgmt::verify_peer_auth(
                            &key,
                            cluster,
                            p,
                            self.node,
                            &c.nonce,
                            &a.signature,
                        )
                    }
                    _ => false,
                };
                if ok {
                    let role = c.role;
                    self.conns[i].authenticated = true;
                    log::info!("transport: peer {} authenticated ({role:?})", a.node);
                } else {
                    self.auth_failures += 1;
                    log::warn!("transport: Auth from {} does not verify; closing", a.node);
                    let e = ErrorReport {
                        code: wire::error_code::AUTH_FAILED,
                        text: String::from("peer authentication failed"),
                    };
                    self.send(iface, i, &ClusterMessage::Error(e));
                    iface
                        .sockets
                        .get_mut::<tcp::Socket>(self.conns[i].handle)
                        .abort();
                }
            }
            // A management client's ping is echoed; a peer's is answered with this
            // node's coordinate (the pinger measures the RTT by the echoed `seq`).
            ClusterMessage::Ping(p) if self.conns[i].role == Role::Mgmt => {
                self.send(iface, i, &ClusterMessage::Pong(p));
            }
            ClusterMessage::Ping(p) => {
                let pong = Ping {
                    seq: p.seq,
                    payload: self.coordinate.clone(),
                };
                self.send(iface, i, &ClusterMessage::Pong(pong));
            }
            ClusterMessage::Pong(p) => {
                let fed = self.is_fed(self.conns[i].peer);
                let c = &mut self.conns[i];
                if p.seq == c.ping_seq && c.ping_sent_us != 0 {
                    c.rtt_us = time::uptime_us().saturating_sub(c.ping_sent_us);
                    c.ping_sent_us = 0;
                    if let (Some(from), true) = (c.peer, c.authenticated) {
                        let rtt_us = c.rtt_us;
                        let coordinate = p.payload;
                        self.events.push(if fed {
                            Event::FedRtt {
                                from,
                                rtt_us,
                                coordinate,
                            }
                        } else {
                            Event::Rtt {
                                from,
                                rtt_us,
                                coordinate,
                            }
                        });
                    }
                }
            }
            ClusterMessage::Raft(_) if self.is_fed(self.conns[i].peer) => {
                self.fed_dropped += 1;
                log::debug!("transport: Raft frame from a federation peer dropped");
            }
            ClusterMessage::Raft(bytes) => match self.conns[i].peer {
                // Raft traffic only from a peer that proved its node key.
                Some(from) if self.conns[i].authenticated && self.conns[i].role != Role::Mgmt => {
                    self.events.push(Event::Raft { from, bytes })
                }
                _ => {
                    self.unauthenticated_dropped += 1;
                    log::debug!("transport: Raft frame from an unauthenticated peer dropped");
                }
            },
            ClusterMessage::MgmtRequest(bytes) => match (self.conns[i].role, self.conns[i].peer) {
                (Role::Mgmt, _) => {
                    let conn = ClientConn {
                        slot: i as u32,
                        generation: self.conns[i].generation,
                    };
                    self.admission.request(i - self.mgmt_base, now);
                    self.events.push(Event::Client { conn, bytes })
                }
                (_, Some(from)) if self.conns[i].authenticated && self.is_fed(Some(from)) => {
                    self.events.push(Event::FedForward { from, bytes })
                }
                (_, Some(from)) if self.conns[i].authenticated => {
                    self.events.push(Event::Forward { from, bytes })
                }
                _ => self.unauthenticated_dropped += 1,
            },
            other => log::debug!(
                "transport: {:?} from {} ignored",
                other.msg_type(),
                hdr.source
            ),
        }
    }

    /// A management slot `i` was just taken: its source's share. False if this
    /// connection itself was refused.
    fn admit(&mut self, iface: &mut Iface, i: usize, now: u64) -> bool {
        let s = iface.sockets.get::<tcp::Socket>(self.conns[i].handle);
        let source = match s.remote_endpoint().map(|e| e.addr) {
            Some(IpAddress::Ipv4(a)) => u32::from(a),
            None => 0,
        };
        let closes = self.admission.opened(i - self.mgmt_base, source, now);
        self.close_mgmt(iface, &closes);
        !closes.iter().any(|&(k, _)| self.mgmt_base + k == i)
    }

    /// Aborts the management slots the admission policy closed.
    fn close_mgmt(&mut self, iface: &mut Iface, closes: &[(usize, admission::Reason)]) {
        for &(k, why) in closes {
            let i = self.mgmt_base + k;
            if let Some(c) = self.conns.get(i) {
                log::debug!("transport: management slot {k} closed: {why:?}");
                iface.sockets.get_mut::<tcp::Socket>(c.handle).abort();
            }
        }
    }

    fn reopen(&mut self, iface: &mut Iface, i: usize, now: u64) {
        let c = &mut self.conns[i];
        if c.hello_seen {
            log::info!("transport: connection to {:?} closed", c.peer);
        }
        c.decoder = FrameDecoder::new();
        c.opened_ms = None;
        c.outq.clear();
        c.outq_bytes = 0;
        c.hello_sent = false;
        c.hello_seen = false;
        c.authenticated = false;
        c.generation += 1;
        if c.role == Role::Mgmt {
            self.admission.closed(i - self.mgmt_base);
        }
        let c = &mut self.conns[i];
        if c.role != Role::Connect {
            if c.role == Role::Accept {
                c.peer = None;
            }
            let port = if c.role == Role::Mgmt {
                MGMT_TCP_PORT
            } else {
                PEER_TCP_PORT
            };
            let _ = iface.sockets.get_mut::<tcp::Socket>(c.handle).listen(port);
            return;
        }
        if now < c.retry_at_ms {
            return;
        }
        c.retry_at_ms = now + RECONNECT_MS;
        let Some((addr, port)) = c.target else { return };
        let local = 49152 + (now % 16000) as u16;
        let s = iface.sockets.get_mut::<tcp::Socket>(c.handle);
        let _ = s.connect(iface.iface.context(), (IpAddress::Ipv4(addr), port), local);
    }

    fn service_bulk(&mut self, iface: &mut Iface) {
        let s = iface.sockets.get_mut::<tcp::Socket>(self.bulk);
        match s.state() {
            tcp::State::Closed => {
                let _ = s.listen(BULK_PORT);
            }
            _ => {
                if s.recv_queue() == s.recv_capacity() {
                    self.bulk_full += 1;
                }
                while let Ok(n) = s.recv(|b| {
                    self.bulk_check.feed(b);
                    (b.len(), b.len())
                }) {
                    if n == 0 {
                        break;
                    }
                }
                // The sender's FIN ends a transfer (not a handshake still in progress).
                let finished = matches!(
                    s.state(),
                    tcp::State::CloseWait
                        | tcp::State::LastAck
                        | tcp::State::TimeWait
                        | tcp::State::Closing
                );
                if finished && !s.may_recv() {
                    let verdict = self.bulk_check.finish();
                    println!("bulk: received {verdict}");
                    self.bulk_last = Some(verdict);
                    s.close();
                    s.abort();
                }
            }
        }
    }
}

impl Transport {
    /// Services every connection; returns what arrived for the node.
    /// This node's coordinate for the next pings and pongs.
    pub fn set_coordinate(&mut self, coordinate: Vec<u8>) {
        self.coordinate = coordinate;
    }

    pub fn poll(&mut self, net: &mut Net) -> Vec<Event> {
        let now = now_ms();
        for i in 0..self.conns.len() {
            if self.conns[i].role == Role::Retired {
                continue;
            }
            let iface = if self.conns[i].role == Role::Mgmt {
                net.mgmt.as_mut()
            } else {
                net.peer.as_mut()
            };
            if let Some(iface) = iface {
                self.service(iface, i, now);
            }
        }
        if let Some(m) = net.mgmt.as_mut() {
            let closes = self.admission.check(now);
            self.close_mgmt(m, &closes);
        }
        if let Some(p) = net.peer.as_mut() {
            self.service_bulk(p);
        }
        core::mem::take(&mut self.events)
    }

    /// The members changed (the log admitted or removed one): keep connections to
    /// exactly these, authenticated with these keys. A new member with a higher id
    /// gets a connecting socket, one with a lower id a listening one; a connection to
    /// a node that left is closed for good, and its `Hello` is refused from now on.
    pub fn set_members(&mut self, net: &mut Net, members: &[(NodeId, [u8; 32])]) {
        let me = self.node;
        let mut peers: Vec<(u32, [u8; 32])> = members.iter().map(|(n, k)| (n.0, *k)).collect();
        if let Some(own) = self.ident.peers.iter().find(|p| p.0 == me.0)
            && !peers.iter().any(|p| p.0 == me.0)
        {
            peers.push(*own);
        }
        peers.sort();
        self.ident.peers = peers;
        let Some(peer_if) = net.peer.as_mut() else {
            return;
        };
        // Nodes that left: close their connections (federation peers stay).
        let fed = &self.fed;
        for c in self.conns.iter_mut() {
            let gone = c
                .peer
                .is_some_and(|p| !self.ident.is_member(p) && !fed.iter().any(|f| f.node == p.0));
            if gone && matches!(c.role, Role::Connect | Role::Accept) {
                log::info!(
                    "transport: {:?} left the cluster; connection closed",
                    c.peer
                );
                peer_if.sockets.get_mut::<tcp::Socket>(c.handle).abort();
                if c.role == Role::Connect {
                    c.role = Role::Retired;
                }
                c.peer = None;
                c.authenticated = false;
            }
        }
        // New members: a connecting socket for higher ids, a listening one for lower.
        let accepting = self.conns.iter().filter(|c| c.role == Role::Accept).count();
        let lower = members.iter().filter(|(n, _)| *n < me).count()
            + self.fed.iter().filter(|f| f.node < me.0).count();
        let mut open = self
            .conns
            .iter()
            .filter(|c| matches!(c.role, Role::Connect | Role::Accept))
            .count();
        for _ in accepting..lower {
            if open >= MAX_PEERS {
                log::warn!("transport: at most {MAX_PEERS} peers; a new member is not served");
                return;
            }
            let h = peer_if.sockets.add(tcp_socket());
            self.conns.push(new_conn(h, Role::Accept, None, None));
            open += 1;
        }
        for (n, _) in members.iter().filter(|(n, _)| *n > me) {
            let known = self
                .conns
                .iter()
                .any(|c| c.role == Role::Connect && c.peer == Some(*n));
            if known {
                continue;
            }
            if open >= MAX_PEERS {
                log::warn!("transport: at most {MAX_PEERS} peers; {n} is not served");
                return;
            }
            let h = peer_if.sockets.add(tcp_socket());
            let target = Some((Ipv4Address::new(10, 0, 0, n.0 as u8), PEER_TCP_PORT));
            self.conns
                .push(new_conn(h, Role::Connect, Some(*n), target));
            open += 1;
            log::info!("transport: {n} joined the cluster; connecting");
        }
    }

    fn peer_conn(&self, to: NodeId) -> Option<usize> {
        self.conns
            .iter()
            .position(|c| c.role != Role::Mgmt && c.authenticated && c.peer == Some(to))
    }

    /// Sends a Raft message to `to`; false if there is no authenticated connection
    /// or no room (Raft retransmits).
    pub fn send_raft(&mut self, net: &mut Net, to: NodeId, bytes: Vec<u8>) -> bool {
        self.send_peer(net, to, ClusterMessage::Raft(bytes))
    }

    /// Sends a `PeerForward` to `to` (the leader).
    pub fn send_forward(&mut self, net: &mut Net, to: NodeId, bytes: Vec<u8>) -> bool {
        self.send_peer(net, to, ClusterMessage::MgmtRequest(bytes))
    }

    fn send_peer(&mut self, net: &mut Net, to: NodeId, msg: ClusterMessage) -> bool {
        let (Some(iface), Some(i)) = (net.peer.as_mut(), self.peer_conn(to)) else {
            return false;
        };
        let ok = self.send(iface, i, &msg);
        if !ok {
            self.send_failures += 1;
        }
        ok
    }

    /// Answers client connection `conn` unless its slot was reused meanwhile.
    pub fn reply(&mut self, net: &mut Net, conn: ClientConn, bytes: Vec<u8>) {
        let i = conn.slot as usize;
        let live = self
            .conns
            .get(i)
            .is_some_and(|c| c.role == Role::Mgmt && c.generation == conn.generation);
        if let (true, Some(m)) = (live, net.mgmt.as_mut()) {
            self.admission.replied(i - self.mgmt_base, now_ms());
            let hdr = self.header(wire::HOST_NODE);
            let Ok(frame) = wire::encode_frame(&hdr, &ClusterMessage::MgmtResponse(bytes)) else {
                self.send_failures += 1;
                return;
            };
            self.flush_outq(m, i);
            let c = &mut self.conns[i];
            if c.outq.is_empty() && put(m, c.handle, &frame) {
                c.frames_out += 1;
            } else if c.outq_bytes + frame.len() <= MGMT_OUTQ_BYTES {
                c.outq_bytes += frame.len();
                c.outq.push_back(frame);
            } else {
                self.send_failures += 1;
                self.outq_resets += 1;
                log::warn!(
                    "transport: management connection {i} has {} bytes of replies unread; resetting it",
                    c.outq_bytes
                );
                m.sockets.get_mut::<tcp::Socket>(c.handle).abort();
            }
        }
    }

    /// Moves queued management replies into connection `i`'s socket while they fit.
    fn flush_outq(&mut self, iface: &mut Iface, i: usize) {
        let c = &mut self.conns[i];
        while let Some(f) = c.outq.front() {
            if !put(iface, c.handle, f) {
                break;
            }
            c.outq_bytes -= f.len();
            c.frames_out += 1;
            c.outq.pop_front();
        }
    }
}

/// A nonce for this side's `Hello`: the TSC (an input from the environment that
/// decides nothing; it only has to differ between handshakes) hashed with who and where.
fn fresh_nonce(node: NodeId, conn: usize, generation: u64) -> [u8; wire::NONCE_BYTES] {
    let mut h = Sha256::new();
    h.update(crate::arch::rdtsc().to_le_bytes());
    h.update(time::uptime_us().to_le_bytes());
    h.update(node.0.to_le_bytes());
    h.update((conn as u64).to_le_bytes());
    h.update(generation.to_le_bytes());
    h.finalize().into()
}

impl Transport {
    /// `peers`.
    /// (authenticated peer connections heard from recently, frames in, frames out)
    /// over the peer connections, for the node's metrics.
    pub fn peer_totals(&self) -> (u64, u64, u64) {
        let now = now_ms();
        let mut up = 0;
        let (mut fin, mut fout) = (0, 0);
        for c in self.conns.iter().filter(|c| c.role != Role::Mgmt) {
            if c.authenticated && now.saturating_sub(c.last_heard_ms) < PEER_TIMEOUT_MS {
                up += 1;
            }
            fin += c.frames_in;
            fout += c.frames_out;
        }
        (up, fin, fout)
    }

    pub fn print_peers(&self) {
        let t = self;
        let now = now_ms();
        println!("node {}: peers (port {PEER_TCP_PORT})", t.node);
        for c in t.conns.iter().filter(|c| c.role != Role::Mgmt) {
            let up = c.authenticated && now.saturating_sub(c.last_heard_ms) < PEER_TIMEOUT_MS;
            let who = c
                .peer
                .map(|p| alloc::format!("{p}"))
                .unwrap_or_else(|| String::from("(any)"));
            println!(
                "  {who:<6} {:<7} {:<4} in {} out {} frames, last heard {} ms ago, rtt {} us",
                if c.role == Role::Connect {
                    "connect"
                } else {
                    "accept"
                },
                if up { "up" } else { "down" },
                c.frames_in,
                c.frames_out,
                if c.hello_seen {
                    now.saturating_sub(c.last_heard_ms)
                } else {
                    0
                },
                c.rtt_us
            );
        }
        let mgmt = t
            .conns
            .iter()
            .filter(|c| c.role == Role::Mgmt)
            .map(|c| c.frames_in)
            .sum::<u64>();
        let a = &t.admission;
        let k = a.counters;
        println!(
            "mgmt: {mgmt} frames received on port {MGMT_TCP_PORT}, slots busy {}/{} (share {}), closed: handshake {} read-deadline {} idle {} reply-wait {} source-share {} evicted {}",
            a.busy(),
            a.slots(),
            a.limits().per_source,
            k.handshake,
            k.read_deadline,
            k.idle,
            k.reply_wait,
            k.source_share,
            k.evicted
        );
        print!("bad frames:");
        for (name, n) in t.errors.iter() {
            print!(" {name}={n}");
        }
        println!(" total={}", t.errors.total());
        println!(
            "auth: {} handshakes refused, {} frames from unauthenticated peers dropped",
            t.auth_failures, t.unauthenticated_dropped
        );
        if t.peer_handshake_timeouts > 0 {
            println!("peer handshakes timed out: {}", t.peer_handshake_timeouts);
        }
    }

    /// The bulk sink's state for `net`: socket state, bytes of the transfer in progress,
    /// bytes waiting in its receive buffer, and how often that buffer was found full.
    pub fn bulk_status(&self, net: &Net) -> Option<String> {
        let t = self;
        let iface = net.peer.as_ref()?;
        let s = iface.sockets.get::<tcp::Socket>(t.bulk);
        Some(alloc::format!(
            "bulk sink: {} received {} bytes, queued {} of {}, buffer full {} times{}",
            s.state(),
            t.bulk_check.verdict().bytes,
            s.recv_queue(),
            s.recv_capacity(),
            t.bulk_full,
            t.bulk_last
                .map_or(String::new(), |v| alloc::format!("; last stream {v}"))
        ))
    }
}
