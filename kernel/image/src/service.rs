//! The node's services as one value the main loop owns: the network interfaces, the
//! peer transport, the pure [`xdv_node::Node`] and the cluster tasks on the run queues.
//! One iteration ([`Services::poll`]): poll the NICs → transport events into the node
//! → `node.tick(now)` → finished tasks into the node → perform the outbox (send,
//! reply, audit, dispatch) → poll the NICs again so replies leave at once. Durable Raft
//! writes happen inside the node's storage, in the reserved region, before anything
//! that depends on them is in the outbox. Group commit: the node is held
//! ([`Node::hold`]) from the first event to the outbox, so what one iteration proposes
//! goes to each follower in one append, and what commits is applied, answered and
//! dispatched once, at the release — not once per request or completion (each pass
//! walks every task assigned here, so per input it grew with the tasks in flight).
#![deny(unsafe_code)]

use crate::accel::KernelPort;
use crate::devices::{AccelFn, Devices};
use crate::net::Net;
use crate::tasks::Tasks;
use crate::transport::{Event, Transport};
use crate::{audit, println, time};
use alloc::string::String;
use alloc::vec::Vec;
use xdv_audit::RecordBody;
use xdv_boot::federation::{FedPeer, FedRole, FedSection};
use xdv_federation::ClusterId;
use xdv_federation::route::RouteConfig;
use xdv_node::accel::AccelPool;
use xdv_node::config::FederationConfig;
use xdv_node::{Identity, Node, NodeConfig, Outbox};
use xdv_types::{CoreId, NodeId};

/// The region the node's durable Raft state lives in.
pub type RaftRegion = &'static mut [u8];

pub struct Services {
    pub devices: Devices,
    pub net: Net,
    pub transport: Option<Transport>,
    pub node: Node<RaftRegion>,
    pub tasks: Tasks,
    /// The Q and Φ devices and the device tasks on them.
    pub accel: AccelPool<KernelPort>,
    /// Loop iterations so far (a console test watches it advance).
    pub iterations: u64,
    /// When the last iteration started (µs of uptime).
    last_poll_us: u64,
    /// Longest time between two iterations since [`Services::take_longest_gap_us`].
    longest_gap_us: u64,
    /// When the transport last got this node's coordinate (ms).
    coordinate_ms: u64,
    /// The hash-voting test hook (`fault=corrupt-state@MS`): when to corrupt this
    /// node's replica of the state, until it fired.
    corrupt_at_ms: Option<u64>,
    /// Time the loop waited for an interrupt since boot (µs; [`Services::waited`]).
    idle_us: u64,
    /// Where the loop's working time goes (`loop_phases_us` of the node's view).
    phases: Phases,
    /// The UDP socket on the peer NIC that hears discovery-mode machines' reports
    /// (`xdv_cluster::discovery::REPORT_PORT`), if there is a peer NIC.
    discovery: Option<smoltcp::iface::SocketHandle>,
}

/// Most discovery datagrams handled per loop iteration (the rest wait in the socket's
/// bounded buffer; overflow is dropped by smoltcp).
const DISCOVERY_PER_POLL: usize = 8;

/// Binds the report port on the peer NIC.
fn discovery_socket(net: &mut Net) -> Option<smoltcp::iface::SocketHandle> {
    use smoltcp::socket::udp;
    let peer = net.peer.as_mut()?;
    let rx = udp::PacketBuffer::new(
        alloc::vec![udp::PacketMetadata::EMPTY; 16],
        alloc::vec![0; 16 * 64],
    );
    let tx = udp::PacketBuffer::new(
        alloc::vec![udp::PacketMetadata::EMPTY; 8],
        alloc::vec![0; 8 * 64],
    );
    let h = peer.sockets.add(udp::Socket::new(rx, tx));
    let bound = peer
        .sockets
        .get_mut::<udp::Socket>(h)
        .bind(xdv_cluster::discovery::REPORT_PORT);
    bound.is_ok().then_some(h)
}

/// The loop's phases, in the order [`Phases::NAMES`] gives.
#[derive(Clone, Copy)]
enum Phase {
    /// smoltcp: NIC rings, TCP/IP (both `net.poll` calls).
    Nic,
    /// The transport: connections, framing, peer authentication.
    Transport,
    /// Peer Raft frames into the node: Raft, durable log writes, applying entries,
    /// the state hash, dispatch.
    Raft,
    /// Forwarded requests and liveness from peers.
    Peer,
    /// Client frames into the node: decoding, signature checks, the gate, proposals.
    Client,
    /// The node's timers: elections, heartbeats, clock ticks, timeouts.
    Tick,
    /// Audit: the node's records written to the region, heads and Merkle roots.
    Audit,
    /// Frames out: Raft, forwards, replies.
    Send,
    /// Tasks: dispatch to the run queues, batches, progress; devices.
    Tasks,
}

/// Accumulated µs per [`Phase`].
#[derive(Default)]
struct Phases {
    us: [u64; Phases::NAMES.len()],
}

impl Phases {
    const NAMES: [&'static str; 9] = [
        "nic",
        "transport",
        "raft",
        "peer",
        "client",
        "tick",
        "audit",
        "send",
        "tasks",
    ];

    /// Charges the time since `*mark` to `p` and moves the mark to now.
    fn charge(&mut self, p: Phase, mark: &mut u64) {
        let now = time::uptime_us();
        self.us[p as usize] += now.saturating_sub(*mark);
        *mark = now;
    }

    fn named(&self) -> [(&'static str, u64); Phases::NAMES.len()] {
        core::array::from_fn(|i| (Phases::NAMES[i], self.us[i]))
    }
}

/// Who this node is: from a provisioning module, else the command line (no keys).
/// `Err` is why the module was refused.
pub fn identity_from(
    module: Option<&[u8]>,
    cmd_node: u32,
    cmd_node_given: bool,
    cmd_peers: &[u32],
) -> Result<Identity, String> {
    let Some(bytes) = module else {
        return Ok(Identity::from_cmdline(cmd_node, cmd_peers));
    };
    let ident = Identity::from_provision(bytes)?;
    if cmd_node_given && cmd_node != ident.node {
        return Err(alloc::format!(
            "command line says node={cmd_node} but the module is for node {}",
            ident.node
        ));
    }
    Ok(ident)
}

/// The node's federation configuration from the module's federation section: a gate
/// routes to the clusters of its peers (grouped by their cluster ids, the router's
/// hold-down, degrade confirmation and cooldown scaled by the section's ‰), a member
/// reports to the gate nodes.
fn federation_config(ident: &Identity, f: &FedSection) -> FederationConfig {
    let period = u64::from(f.period_ms);
    match f.role {
        FedRole::Gate => {
            let mut clusters: Vec<(ClusterId, Vec<NodeId>)> = Vec::new();
            for p in f.peers() {
                match clusters.iter_mut().find(|(c, _)| c.0 == p.cluster) {
                    Some((_, nodes)) => nodes.push(NodeId(p.node)),
                    None => clusters.push((ClusterId(p.cluster), alloc::vec![NodeId(p.node)])),
                }
            }
            clusters.sort();
            let d = RouteConfig::DEFAULT;
            let per_mille = u64::from(f.route_per_mille);
            let scale = |ms: u64| (ms.saturating_mul(per_mille) / 1000).max(1);
            let route = RouteConfig {
                hold_down_ms: scale(d.hold_down_ms),
                degrade_confirm_ms: scale(d.degrade_confirm_ms),
                cooldown_ms: scale(d.cooldown_ms),
                ..d
            };
            println!(
                "federation: gate of {} clusters, dispatch every {period} ms, hold-down {} ms, cooldown {} ms (route scale {per_mille}/1000)",
                clusters.len(),
                route.hold_down_ms,
                route.cooldown_ms
            );
            FederationConfig::Gate {
                clusters,
                route: alloc::boxed::Box::new(route),
                dispatch_every_ms: period,
            }
        }
        FedRole::Member => {
            let gates: Vec<NodeId> = f.peers().iter().map(|p| NodeId(p.node)).collect();
            println!(
                "federation: cluster {} reports to gate group {} (nodes {:?}) every {period} ms",
                ident.cluster, f.gate_cluster, gates
            );
            FederationConfig::Member {
                gate_cluster: f.gate_cluster,
                gates,
                heartbeat_every_ms: period,
            }
        }
    }
}

/// The time of the `fault=corrupt-state@MS` hook, if this kernel has its test hooks.
/// Without them (the image users run) the option is refused aloud: nothing on a boot
/// command line can make a production node corrupt its own state.
fn corrupt_hook(at: Option<u64>) -> Option<u64> {
    if at.is_some() && !cfg!(feature = "fault-hooks") {
        println!(
            "fault: `fault=corrupt-state@MS` refused: this kernel has no test hooks (built without the `fault-hooks` feature)"
        );
        return None;
    }
    at
}

impl Services {
    /// The hash-voting test hook fires: this node's replica of the state is corrupted.
    #[cfg(feature = "fault-hooks")]
    fn corrupt_state(&mut self) {
        self.node.corrupt_state_for_test();
        println!("fault: state replica corrupted (test hook); hash voting must find it");
    }

    /// Without test hooks [`corrupt_hook`] never arms the hook.
    #[cfg(not(feature = "fault-hooks"))]
    fn corrupt_state(&mut self) {
        unreachable!("corrupt_hook refuses fault= without the fault-hooks feature");
    }

    /// Builds the services: the node over the Raft region (or an empty one, which
    /// halts it with the reason), the transport over the peer NIC.
    pub fn new(
        ident: Identity,
        fed: Option<FedSection>,
        devices: Devices,
        accels: Vec<AccelFn>,
        mut net: Net,
        cores_online: usize,
        opts: &xdv_boot::KernelOptions,
    ) -> Services {
        let (genesis, corrupt_at_ms) = (opts.genesis(), corrupt_hook(opts.fault_corrupt_at_ms));
        let timeouts_per_mille = opts.timeouts_per_mille;
        let region: RaftRegion = match crate::mem::regions::raft() {
            Ok(r) => r,
            Err(e) => {
                println!("raft: region unusable: {e}; consensus disabled");
                &mut []
            }
        };
        // The boot CPU serves the network and consensus; cluster tasks run on the APs.
        let cores = cores_online
            .saturating_sub(1)
            .min(usize::from(xdv_node::GENESIS_CORES)) as u16;
        let mut cfg = NodeConfig::new(ident.clone(), cores);
        cfg.capabilities = alloc::vec![xdv_sandbox::CAP_ECHO_LEN];
        cfg.builtins = xdv_sandbox::BUILTINS
            .iter()
            .map(|b| String::from(b.name))
            .collect();
        cfg.audited_through = audit::last_raft_applied();
        cfg.genesis_members = genesis.map(|g| g.to_vec());
        // `timeouts=`: the one scale factor of the cluster's task timeouts.
        cfg.state.timeouts = xdv_cluster::TaskTimeouts::DEFAULT.scaled(timeouts_per_mille);
        if timeouts_per_mille != 1000 {
            println!(
                "cluster: task timeouts scaled by {timeouts_per_mille}/1000: check every {} ms, stuck after {} ms, default {} ms",
                cfg.state.timeouts.tracker.check_interval_ms,
                cfg.state.timeouts.tracker.stuck_threshold_ms,
                cfg.state.timeouts.default_timeout_ms
            );
        }
        if let Some(g) = genesis {
            println!(
                "cluster: joining: genesis members {g:?}; the log or a snapshot brings this node up to date"
            );
        }
        cfg.federation = fed.as_ref().map(|f| federation_config(&ident, f));
        let fed_peers: Vec<FedPeer> = fed.as_ref().map_or(Vec::new(), |f| f.peers().to_vec());
        let me = NodeId(ident.node);
        let node = Node::new(cfg, region, time::uptime_us() / 1000);
        if opts.mgmt_slots != crate::transport::MGMT_SLOTS
            || opts.mgmt_per_source != crate::transport::MGMT_LIMITS.per_source
        {
            println!(
                "transport: management port: {} slots, one source holds {} while slots are scarce (mgmt=)",
                opts.mgmt_slots, opts.mgmt_per_source
            );
        }
        let transport = Transport::new(
            &ident,
            &fed_peers,
            &mut net,
            opts.mgmt_slots,
            opts.mgmt_per_source,
        );
        let discovery = discovery_socket(&mut net);
        let mut s = Services {
            devices,
            net,
            transport,
            node,
            tasks: Tasks::new(me),
            accel: crate::accel::pool(me, accels, time::uptime_us() / 1000),
            iterations: 0,
            last_poll_us: time::uptime_us(),
            longest_gap_us: 0,
            coordinate_ms: 0,
            corrupt_at_ms,
            idle_us: 0,
            phases: Phases::default(),
            discovery,
        };
        if let Some(ms) = corrupt_at_ms {
            println!("fault: test hook armed: this node corrupts its state replica at {ms} ms");
        }
        let out = s.node.drain();
        let mut mark = time::uptime_us();
        s.perform_charged(out, true, &mut mark);
        s
    }

    /// Discovery reports into the node; its answers (admitted MACs) broadcast back.
    fn poll_discovery(&mut self) {
        use smoltcp::socket::udp;
        use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
        let (Some(h), Some(peer)) = (self.discovery, self.net.peer.as_mut()) else {
            return;
        };
        let to = IpEndpoint::new(
            IpAddress::Ipv4(Ipv4Address::BROADCAST),
            xdv_cluster::discovery::ANSWER_PORT,
        );
        for _ in 0..DISCOVERY_PER_POLL {
            let sock = peer.sockets.get_mut::<udp::Socket>(h);
            // Any length is handed on (and refused by the decoder if it is not a
            // report); the socket's buffer bounds it.
            let Ok((data, _)) = sock.recv() else {
                break;
            };
            let bytes = data.to_vec();
            if let Some(answer) = self.node.on_discovery_report(&bytes) {
                let sock = peer.sockets.get_mut::<udp::Socket>(h);
                let _ = sock.send_slice(&answer, to);
            }
        }
    }

    /// One iteration of the node's loop. `run_tasks` is false while a console command
    /// uses the run queues itself: dispatched tasks then wait in the queue.
    pub fn poll(&mut self, run_tasks: bool) {
        self.iterations += 1;
        let now_us = time::uptime_us();
        self.longest_gap_us = self
            .longest_gap_us
            .max(now_us.saturating_sub(self.last_poll_us));
        self.last_poll_us = now_us;
        self.node.set_time_us(now_us);
        self.node
            .set_loop_busy_us(now_us.saturating_sub(self.idle_us));
        self.node.set_loop_phases_us(&self.phases.named());
        self.node.set_loop_iterations(self.iterations);
        let mut mark = now_us;
        self.net.poll();
        self.phases.charge(Phase::Nic, &mut mark);
        let local = self.local_metrics();
        self.node.set_local_metrics(local);
        self.node.set_time_us(time::uptime_us());
        // Group commit: what this iteration proposes goes out, commits and is
        // dispatched together at the release below.
        self.node.hold();
        if let Some(t) = self.transport.as_mut() {
            // The coordinate moves at most once per RTT sample: refreshed every 100 ms.
            let now_ms = now_us / 1000;
            if now_ms.saturating_sub(self.coordinate_ms) >= 100 {
                self.coordinate_ms = now_ms;
                t.set_coordinate(self.node.coordinate_payload());
            }
            let events = t.poll(&mut self.net);
            self.phases.charge(Phase::Transport, &mut mark);
            for e in events {
                // The node's stage stamps read this clock: each event at its own time
                // (a request's signature check must not fall outside every stage).
                self.node.set_time_us(time::uptime_us());
                let phase = match e {
                    Event::Raft { from, bytes } => {
                        self.node.on_peer_raft(from, &bytes);
                        Phase::Raft
                    }
                    Event::Forward { from, bytes } => {
                        self.node.on_peer_forward(from, &bytes);
                        Phase::Peer
                    }
                    Event::Heard(from) => {
                        self.node.on_peer_heard(from);
                        Phase::Peer
                    }
                    Event::Rtt {
                        from,
                        rtt_us,
                        coordinate,
                    } => {
                        self.node.on_peer_rtt(from, rtt_us, &coordinate);
                        Phase::Peer
                    }
                    Event::FedForward { from, bytes } => {
                        // Across the federation only federation messages pass.
                        if matches!(
                            xdv_cluster::mgmt::decode::<xdv_cluster::mgmt::PeerForward>(&bytes),
                            Ok(xdv_cluster::mgmt::PeerForward::Federation(_))
                        ) {
                            self.node.on_peer_forward(from, &bytes);
                        }
                        Phase::Peer
                    }
                    Event::FedRtt {
                        from,
                        rtt_us,
                        coordinate,
                    } => {
                        self.node.on_fed_rtt(from, rtt_us, &coordinate);
                        Phase::Peer
                    }
                    Event::Client { conn, bytes } => {
                        self.node.on_client(conn, &bytes);
                        Phase::Client
                    }
                };
                self.phases.charge(phase, &mut mark);
            }
        }
        self.poll_discovery();
        self.phases.charge(Phase::Peer, &mut mark);
        let now_ms = time::uptime_us() / 1000;
        let (records, head) = audit::head();
        self.node.set_audit_head(records, head);
        if self.node.audit_root_due(now_ms)
            && let Some((records, root, from, proof)) =
                audit::root_for_publication(self.node.audit_published())
        {
            self.node.set_audit_root(records, root, from, proof);
        }
        self.phases.charge(Phase::Audit, &mut mark);
        if self.corrupt_at_ms.is_some_and(|at| now_ms >= at) {
            self.corrupt_at_ms = None;
            self.corrupt_state();
        }
        self.node.tick(now_ms);
        self.phases.charge(Phase::Tick, &mut mark);
        self.poll_accel(now_ms);
        if run_tasks {
            self.poll_tasks();
        }
        for (task, attempt) in self.tasks.progress() {
            self.node.on_task_progress(task, attempt);
        }
        self.phases.charge(Phase::Tasks, &mut mark);
        self.node.set_time_us(time::uptime_us());
        self.node.release();
        self.phases.charge(Phase::Raft, &mut mark);
        let out = self.node.drain();
        self.perform_charged(out, run_tasks, &mut mark);
        self.net.poll();
        self.phases.charge(Phase::Nic, &mut mark);
    }

    /// The numbers of the node's metrics only this loop knows: the audit region, the
    /// peer NIC and connections, the run queues, the heap.
    fn local_metrics(&self) -> xdv_node::LocalMetrics {
        let fill = audit::fill_state();
        let nic = |i: Option<&crate::net::Iface>| {
            i.map(|i| {
                let c = i.dev.nic.counters();
                xdv_node::NicMetrics {
                    rx_frames: c.rx_frames,
                    tx_frames: c.tx_frames,
                    rx_bytes: c.rx_bytes,
                    tx_bytes: c.tx_bytes,
                    rx_drops: c.rx_drops,
                    tx_drops: c.tx_drops,
                    errors: c.errors,
                }
            })
        };
        let (peers_up, peer_frames_in, peer_frames_out) = self
            .transport
            .as_ref()
            .map_or((0, 0, 0), Transport::peer_totals);
        let (heap_used, _, heap_size) = crate::mem::heap::usage();
        xdv_node::LocalMetrics {
            audit_enabled: fill.is_some(),
            audit_used_bytes: fill.map_or(0, |f| f.used_bytes),
            audit_region_bytes: fill.map_or(0, |f| f.region_bytes),
            audit_bulk_refused: fill.map_or(0, |f| f.bulk_refused),
            audit_alarm: audit::alarm().is_some(),
            nics: [nic(self.net.peer.as_ref()), nic(self.net.mgmt.as_ref())],
            peers_up,
            peer_frames_in,
            peer_frames_out,
            tasks_queued: self.tasks.queued() as u64,
            tasks_running: self.tasks.running() as u64,
            tasks_started: self.tasks.started,
            tasks_finished: self.tasks.finished,
            modules_compiled: self.tasks.modules.misses,
            modules_reused: self.tasks.modules.hits,
            heap_used_bytes: heap_used as u64,
            heap_bytes: heap_size as u64,
        }
    }

    /// Device completions into the node, the devices' offer into its heartbeats,
    /// the pool's records into the audit log.
    fn poll_accel(&mut self, now_ms: u64) {
        for c in self.accel.poll(now_ms) {
            self.node.on_task_done(c);
        }
        let (q, phi) = self.accel.offer();
        self.node.set_accel_offer(q, phi);
        self.drain_accel();
    }

    fn drain_accel(&mut self) {
        let (records, notes) = self.accel.drain();
        for line in notes {
            println!("{line}");
        }
        for body in &records {
            audit::record(CoreId(0), body);
        }
    }

    /// The node and its genesis (or restored) state, for the boot log: printed after
    /// the ready line, as the state hash's first computation costs about 2 ms of
    /// code translation under TCG and nothing before the ready line needs it.
    pub fn describe(&self) -> String {
        let id = self.node.identity();
        alloc::format!(
            "cluster: node {} of cluster {} with {} members, {} tenants, state {}",
            id.node,
            id.cluster,
            self.node.state().data().nodes.len(),
            id.tenants.len(),
            self.node.state().hash().short()
        )
    }

    /// Reports a finished batch of cluster tasks to the node without starting the
    /// next (a console command is about to use the run queues).
    pub fn collect_tasks(&mut self) {
        for c in self.tasks.collect() {
            self.node.on_task_done(c);
        }
    }

    /// The loop waited `us` for an interrupt (the rest of its time is work).
    pub fn waited(&mut self, us: u64) {
        self.idle_us += us;
    }

    /// The longest time between two iterations of the node's loop since the last
    /// call (long console commands report how often they served the node).
    pub fn take_longest_gap_us(&mut self) -> u64 {
        core::mem::take(&mut self.longest_gap_us)
    }

    /// Carries out the node's outbox, charging each part to its loop phase from
    /// `*mark` on.
    fn perform_charged(&mut self, out: Outbox, run_tasks: bool, mark: &mut u64) {
        let sends = !(out.raft.is_empty() && out.forwards.is_empty() && out.replies.is_empty());
        for line in out.notes {
            println!("{line}");
        }
        if let Some(t) = self.transport.as_mut() {
            if let Some(members) = &out.members {
                t.set_members(&mut self.net, members);
            }
            for (to, bytes) in out.raft {
                t.send_raft(&mut self.net, to, bytes);
            }
            for (to, bytes) in out.forwards {
                t.send_forward(&mut self.net, to, bytes);
            }
            for (conn, bytes) in out.replies {
                t.reply(&mut self.net, conn, bytes);
            }
        }
        // Out on the wire before the audit records are written: the records hash
        // (software SHA-256 under TCG) and nothing sent depends on them. A restart
        // records applied entries again from the first one the audit region does not
        // hold (the node's `audited_through`); the iteration's other records (a
        // refusal, a peer's health) are lost to a crash right here as they were to
        // one just before their write.
        // At construction (no iteration yet) with nothing to send, the loop's first
        // iteration polls: the first smoltcp poll costs about 1.2 ms of translation
        // under TCG, and nothing here needs it before the ready line.
        if sends || self.iterations > 0 {
            self.net.poll();
        }
        self.phases.charge(Phase::Send, mark);
        for body in &out.audit {
            match body {
                // The rate limiter's summary is the node's own record (written past
                // the high-water mark, counting what the region itself refused).
                RecordBody::RefusalSummary {
                    refused,
                    first_reason,
                    ..
                } => audit::record_refusal_summary(*refused, first_reason),
                other => audit::record(CoreId(0), other),
            };
        }
        self.phases.charge(Phase::Audit, mark);
        let now_ms = time::uptime_us() / 1000;
        // What the tasks report now is proposed together (group commit); its outbox
        // leaves with the next iteration's.
        self.node.hold();
        // Attempts the log took away: cancelled on their core (device jobs finish).
        for (task, attempt) in out.stop {
            if let Some(c) = self.tasks.stop(task, attempt) {
                self.node.on_task_done(c);
            }
        }
        for run in out.run {
            if run.spec.domain == xdv_cluster::Domain::K {
                self.tasks.start(run);
            } else if let Some(c) = self.accel.run(run) {
                self.node.on_task_done(c);
            }
        }
        // Device tasks go to their devices in this same iteration.
        for c in self.accel.poll(now_ms) {
            self.node.on_task_done(c);
        }
        self.drain_accel();
        if run_tasks && self.tasks.queued() > 0 {
            self.poll_tasks();
        }
        self.node.set_time_us(time::uptime_us());
        self.node.release();
        self.phases.charge(Phase::Tasks, mark);
    }

    /// Finished cluster tasks into the node, then the batch started next.
    fn poll_tasks(&mut self) {
        let done = self.tasks.poll();
        self.node.set_time_us(time::uptime_us());
        for c in done {
            self.node.on_task_done(c);
        }
        for (task, attempt) in self.tasks.take_started() {
            self.node.on_task_started(task, attempt);
        }
    }
}
