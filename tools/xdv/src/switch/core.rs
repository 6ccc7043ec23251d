//! The switch's pure core: ports, MAC learning, the reachability (partition) matrix,
//! and fault decisions from a seeded SplitMix64 generator.
//!
//! No I/O and no clock: the shell passes the time in (`now_ms`) and performs the
//! [`Delivery`]s this core returns. Given the same seed, configuration, inputs and
//! times, the outputs are identical, so a faulty run can be repeated.
//!
//! Fault order for every (frame, egress port) pair, egress ports in ascending order:
//! partition check, then exactly three generator draws (drop, duplicate, reorder), so
//! changing one percentage never shifts the random stream the others see.
//!
//! Why this is not `xdv_testkit::PacketSim`, the simulators' network: the switch
//! forwards real Ethernet frames between QEMU nodes in wall-clock time, per egress
//! port after MAC learning and flooding, and its fault semantics are the ones the
//! QEMU tests and the operator's control socket speak (percentages, one fixed delay,
//! reorder = hold one frame until the next to that port). PacketSim's model (ppm,
//! per-link uniform delay, addressed node-to-node packets) would change both. What
//! the two share is the generator: the same `SplitMix64` and the same draws.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A switch port. Ports are numbered `1..=ports` and port N is node N.
pub type Port = u16;

/// Most ports a switch may have.
pub const MAX_PORTS: u16 = 64;
/// Most MAC addresses the switch learns; later ones are flooded, never learned.
pub const MAX_MAC_ENTRIES: usize = 4096;
/// Shortest frame forwarded: an Ethernet header (dst, src, ethertype).
pub const MIN_ETH_FRAME_BYTES: usize = 14;
/// Longest frame forwarded (one unix datagram from QEMU).
pub const MAX_ETH_FRAME_BYTES: usize = 65_535;
/// Longest delay that can be configured.
pub const MAX_DELAY_MS: u64 = 10_000;
/// Most frames waiting in the delay queue; beyond it frames are dropped (and counted).
pub const MAX_DELAYED_FRAMES: usize = 65_536;
/// A frame held back for reordering is released after this long even if no other
/// frame for its port arrives.
pub const REORDER_HOLD_MAX_MS: u64 = 100;

/// The project's one PRNG (re-exported for the switch's users).
pub use xdv_types::rng::SplitMix64;

/// Fault settings, all changeable while the switch runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Percentage of frames (per egress port) dropped.
    pub drop_pct: u8,
    /// Percentage of frames (per egress port) sent twice.
    pub dup_pct: u8,
    /// Fixed delay added to every frame, in milliseconds.
    pub delay_ms: u64,
    /// Percentage of frames held back and released right after the next frame to the
    /// same port (or after [`REORDER_HOLD_MAX_MS`]).
    pub reorder_pct: u8,
}

/// Counters of one port. `frames_in`/`bytes_in`/`malformed` count frames arriving on
/// the port; everything else counts frames whose egress port this is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortStats {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub malformed: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub reordered: u64,
    pub partitioned: u64,
    /// Frames the shell could not hand to the node (queue full, socket error).
    pub tx_errors: u64,
}

/// One frame to send out of one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub port: Port,
    pub frame: Vec<u8>,
}

/// Errors of configuration and control commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchError {
    BadPortCount(u16),
    BadPort { port: Port, ports: u16 },
    BadPercent(u64),
    BadDelay(u64),
    BadPartition(String),
    BadCommand(String),
}

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchError::BadPortCount(n) => write!(f, "port count {n} not in 1..={MAX_PORTS}"),
            SwitchError::BadPort { port, ports } => {
                write!(f, "port {port} does not exist (ports are 1..={ports})")
            }
            SwitchError::BadPercent(p) => write!(f, "percentage {p} not in 0..=100"),
            SwitchError::BadDelay(d) => write!(f, "delay {d} ms over the limit of {MAX_DELAY_MS}"),
            SwitchError::BadPartition(s) => write!(f, "bad partition spec: {s}"),
            SwitchError::BadCommand(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for SwitchError {}

/// A control command (the text protocol of the control socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `partition 1,2/3`: groups separated by `/`; ports in different groups cannot
    /// reach each other; ports named in no group stay connected to every port.
    Partition(Vec<Vec<Port>>),
    /// `cut 1>3`: frames from port 1 to port 3 are dropped (one way).
    Cut(Port, Port),
    /// `heal`: every port reaches every port again.
    Heal,
    Drop(u8),
    Dup(u8),
    Delay(u64),
    /// `delay MS PORTS` (ports like `2,3`): extra delay on every frame from or to
    /// one of these ports — one node's links (a federation test slows one cluster's
    /// link to the gate). A frame between two such ports gets the larger delay once.
    /// `delay 0 PORTS` clears it.
    PortDelay(u64, Vec<Port>),
    Reorder(u8),
    /// `faults`: print the fault settings.
    ShowFaults,
    /// `stats` (table) or `stats json` (one JSON object).
    Stats {
        json: bool,
    },
    /// `macs`: print the MAC table.
    Macs,
    /// `shutdown`: stop the switch and remove its sockets (handled by the shell).
    Shutdown,
}

/// Usage text for the control commands.
pub const COMMAND_HELP: &str = "commands: partition G1/G2[/...] (groups like 1,2/3) | cut A>B | heal | \
drop PCT | dup PCT | delay MS [PORTS] | reorder PCT | faults | stats [json] | macs | shutdown";

fn parse_pct(s: &str) -> Result<u8, SwitchError> {
    let v: u64 = s
        .parse()
        .map_err(|_| SwitchError::BadCommand(format!("not a number: {s:?}")))?;
    u8::try_from(v)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or(SwitchError::BadPercent(v))
}

fn parse_port(s: &str) -> Result<Port, SwitchError> {
    s.trim()
        .parse()
        .map_err(|_| SwitchError::BadPartition(format!("not a port number: {s:?}")))
}

impl Command {
    /// Parses one command line. Port numbers are range-checked when applied.
    pub fn parse(line: &str) -> Result<Command, SwitchError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| {
            words
                .get(i)
                .copied()
                .ok_or_else(|| SwitchError::BadCommand(format!("missing argument; {COMMAND_HELP}")))
        };
        let cmd = match words.first().copied().unwrap_or("") {
            "partition" => Command::Partition(parse_groups(arg(1)?)?),
            "cut" => {
                let (a, b) = arg(1)?
                    .split_once('>')
                    .ok_or_else(|| SwitchError::BadPartition("cut wants A>B".into()))?;
                Command::Cut(parse_port(a)?, parse_port(b)?)
            }
            "heal" => Command::Heal,
            "drop" => Command::Drop(parse_pct(arg(1)?)?),
            "dup" => Command::Dup(parse_pct(arg(1)?)?),
            "reorder" => Command::Reorder(parse_pct(arg(1)?)?),
            "delay" => {
                let s = arg(1)?;
                let ms: u64 = s
                    .parse()
                    .map_err(|_| SwitchError::BadCommand(format!("not a number: {s:?}")))?;
                if ms > MAX_DELAY_MS {
                    return Err(SwitchError::BadDelay(ms));
                }
                match words.get(2) {
                    Some(ports) => Command::PortDelay(
                        ms,
                        ports.split(',').map(parse_port).collect::<Result<_, _>>()?,
                    ),
                    None => Command::Delay(ms),
                }
            }
            "faults" => Command::ShowFaults,
            "stats" => Command::Stats {
                json: words.get(1) == Some(&"json"),
            },
            "macs" => Command::Macs,
            "shutdown" => Command::Shutdown,
            other => {
                return Err(SwitchError::BadCommand(format!(
                    "unknown command {other:?}; {COMMAND_HELP}"
                )));
            }
        };
        let max_words = match cmd {
            Command::Heal | Command::ShowFaults | Command::Macs | Command::Shutdown => 1,
            Command::PortDelay(..) => 3,
            _ => 2,
        };
        if words.len() > max_words {
            return Err(SwitchError::BadCommand(format!(
                "too many arguments; {COMMAND_HELP}"
            )));
        }
        Ok(cmd)
    }
}

/// Parses `1,2/3` into groups; a port may appear in one group only.
pub fn parse_groups(spec: &str) -> Result<Vec<Vec<Port>>, SwitchError> {
    let groups: Vec<Vec<Port>> = spec
        .split('/')
        .map(|g| g.split(',').map(parse_port).collect::<Result<Vec<_>, _>>())
        .collect::<Result<_, _>>()?;
    if groups.len() < 2 {
        return Err(SwitchError::BadPartition(format!(
            "{spec:?} has one group; separate groups with '/'"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in groups.iter().flatten() {
        if !seen.insert(*p) {
            return Err(SwitchError::BadPartition(format!(
                "port {p} is in two groups"
            )));
        }
    }
    Ok(groups)
}

/// The L2 switch state machine.
#[derive(Clone, Debug)]
pub struct SwitchCore {
    ports: u16,
    macs: BTreeMap<[u8; 6], Port>,
    /// `blocked[from * (ports + 1) + to]`: frames from `from` to `to` are dropped.
    blocked: Vec<bool>,
    faults: Faults,
    rng: SplitMix64,
    /// Indexed by port; slot 0 unused.
    stats: Vec<PortStats>,
    /// Delayed frames by (release time, arrival sequence), with their reorder flag.
    delayed: BTreeMap<(u64, u64), (Delivery, bool)>,
    /// Per egress port: a frame held back for reordering and when it was held.
    held: Vec<Option<(u64, Vec<u8>)>>,
    /// Extra delay per port (`delay MS PORTS`), indexed by port; slot 0 unused.
    port_delay_ms: Vec<u64>,
    seq: u64,
    /// Unicast frames whose learned port is the ingress port (not sent back).
    pub filtered: u64,
    /// Source MACs not learned because the table was full.
    pub mac_table_full: u64,
}

impl SwitchCore {
    pub fn new(ports: u16, seed: u64) -> Result<SwitchCore, SwitchError> {
        if ports == 0 || ports > MAX_PORTS {
            return Err(SwitchError::BadPortCount(ports));
        }
        let n = ports as usize + 1;
        Ok(SwitchCore {
            ports,
            macs: BTreeMap::new(),
            blocked: vec![false; n * n],
            faults: Faults::default(),
            rng: SplitMix64::new(seed),
            stats: vec![PortStats::default(); n],
            delayed: BTreeMap::new(),
            held: vec![None; n],
            port_delay_ms: vec![0; n],
            seq: 0,
            filtered: 0,
            mac_table_full: 0,
        })
    }

    pub fn ports(&self) -> u16 {
        self.ports
    }

    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Replaces all fault settings (validated).
    pub fn set_faults(&mut self, f: Faults) -> Result<(), SwitchError> {
        for p in [f.drop_pct, f.dup_pct, f.reorder_pct] {
            if p > 100 {
                return Err(SwitchError::BadPercent(p as u64));
            }
        }
        if f.delay_ms > MAX_DELAY_MS {
            return Err(SwitchError::BadDelay(f.delay_ms));
        }
        self.faults = f;
        Ok(())
    }

    fn check_port(&self, port: Port) -> Result<(), SwitchError> {
        if port == 0 || port > self.ports {
            return Err(SwitchError::BadPort {
                port,
                ports: self.ports,
            });
        }
        Ok(())
    }

    fn idx(&self, from: Port, to: Port) -> usize {
        from as usize * (self.ports as usize + 1) + to as usize
    }

    /// Whether a frame entering at `from` may leave at `to`.
    pub fn can_reach(&self, from: Port, to: Port) -> bool {
        !self
            .blocked
            .get(self.idx(from, to))
            .copied()
            .unwrap_or(true)
    }

    /// Replaces the partition: ports in different groups cannot reach each other.
    pub fn partition(&mut self, groups: &[Vec<Port>]) -> Result<(), SwitchError> {
        for p in groups.iter().flatten() {
            self.check_port(*p)?;
        }
        self.heal();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &x in a {
                    for &y in b {
                        let k = self.idx(x, y);
                        self.blocked[k] = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Blocks frames from `from` to `to` only (an asymmetric cut), on top of the
    /// current partition.
    pub fn cut(&mut self, from: Port, to: Port) -> Result<(), SwitchError> {
        self.check_port(from)?;
        self.check_port(to)?;
        let k = self.idx(from, to);
        self.blocked[k] = true;
        Ok(())
    }

    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    pub fn stats(&self, port: Port) -> Option<&PortStats> {
        if port == 0 {
            return None;
        }
        self.stats.get(port as usize)
    }

    /// Counts a frame the shell failed to send out of `port`.
    pub fn record_tx_error(&mut self, port: Port) {
        if let Some(s) = self.stats.get_mut(port as usize) {
            s.tx_errors += 1;
        }
    }

    /// The learned MAC table, in MAC order.
    pub fn mac_table(&self) -> impl Iterator<Item = ([u8; 6], Port)> + '_ {
        self.macs.iter().map(|(m, p)| (*m, *p))
    }

    /// Frames waiting in the delay queue or held for reordering.
    pub fn pending(&self) -> usize {
        self.delayed.len() + self.held.iter().filter(|h| h.is_some()).count()
    }

    /// The earliest time [`SwitchCore::poll`] has something to release.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let delayed = self.delayed.keys().next().map(|(t, _)| *t);
        let held = self
            .held
            .iter()
            .flatten()
            .map(|(t, _)| t + REORDER_HOLD_MAX_MS)
            .min();
        match (delayed, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A frame arrived on `in_port` at `now_ms`; returns what to send right away.
    pub fn ingress(&mut self, now_ms: u64, in_port: Port, frame: &[u8]) -> Vec<Delivery> {
        let mut out = Vec::new();
        if self.check_port(in_port).is_err() {
            return out;
        }
        let st = &mut self.stats[in_port as usize];
        if frame.len() < MIN_ETH_FRAME_BYTES || frame.len() > MAX_ETH_FRAME_BYTES {
            st.malformed += 1;
            return out;
        }
        st.frames_in += 1;
        st.bytes_in += frame.len() as u64;
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        let mut src = [0u8; 6];
        src.copy_from_slice(&frame[6..12]);
        self.learn(src, in_port);
        let egress: Vec<Port> = match self.macs.get(&dst) {
            Some(&p) if dst[0] & 1 == 0 => {
                if p == in_port {
                    self.filtered += 1;
                    vec![]
                } else {
                    vec![p]
                }
            }
            _ => (1..=self.ports).filter(|p| *p != in_port).collect(),
        };
        for port in egress {
            self.forward(now_ms, in_port, port, frame, &mut out);
        }
        out
    }

    fn learn(&mut self, src: [u8; 6], port: Port) {
        if src[0] & 1 != 0 {
            return; // a multicast source address is invalid; never learn it
        }
        if self.macs.len() >= MAX_MAC_ENTRIES && !self.macs.contains_key(&src) {
            self.mac_table_full += 1;
            return;
        }
        self.macs.insert(src, port);
    }

    fn forward(
        &mut self,
        now_ms: u64,
        from: Port,
        to: Port,
        frame: &[u8],
        out: &mut Vec<Delivery>,
    ) {
        if !self.can_reach(from, to) {
            self.stats[to as usize].partitioned += 1;
            return;
        }
        let f = self.faults;
        let (drop, dup, reorder) = (
            self.rng.chance_pct(f.drop_pct.into()),
            self.rng.chance_pct(f.dup_pct.into()),
            self.rng.chance_pct(f.reorder_pct.into()),
        );
        let st = &mut self.stats[to as usize];
        if drop {
            st.dropped += 1;
            return;
        }
        let copies = if dup {
            st.duplicated += 1;
            2
        } else {
            1
        };
        let delay_ms =
            f.delay_ms + self.port_delay_ms[from as usize].max(self.port_delay_ms[to as usize]);
        for copy in 0..copies {
            let reorder_this = reorder && copy == 0;
            if delay_ms == 0 {
                self.emit(now_ms, to, frame.to_vec(), reorder_this, out);
                continue;
            }
            if self.delayed.len() >= MAX_DELAYED_FRAMES {
                self.stats[to as usize].dropped += 1;
                continue;
            }
            self.stats[to as usize].delayed += 1;
            self.seq += 1;
            let d = Delivery {
                port: to,
                frame: frame.to_vec(),
            };
            self.delayed
                .insert((now_ms + delay_ms, self.seq), (d, reorder_this));
        }
    }

    /// Sends `frame` to `port` now, or holds it back if `reorder` and nothing is held;
    /// a frame sent releases the held one right after it.
    fn emit(
        &mut self,
        now_ms: u64,
        port: Port,
        frame: Vec<u8>,
        reorder: bool,
        out: &mut Vec<Delivery>,
    ) {
        let p = port as usize;
        if reorder && self.held[p].is_none() {
            self.stats[p].reordered += 1;
            self.held[p] = Some((now_ms, frame));
            return;
        }
        self.push_out(port, frame, out);
        if let Some((_, held)) = self.held[p].take() {
            self.push_out(port, held, out);
        }
    }

    fn push_out(&mut self, port: Port, frame: Vec<u8>, out: &mut Vec<Delivery>) {
        let st = &mut self.stats[port as usize];
        st.frames_out += 1;
        st.bytes_out += frame.len() as u64;
        out.push(Delivery { port, frame });
    }

    /// Releases delayed frames that are due and reorder-held frames held too long.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let (d, reorder) = entry.remove();
            self.emit(now_ms, d.port, d.frame, reorder, &mut out);
        }
        for port in 1..=self.ports {
            let stale = matches!(&self.held[port as usize], Some((t, _)) if now_ms >= t + REORDER_HOLD_MAX_MS);
            if stale && let Some((_, frame)) = self.held[port as usize].take() {
                self.push_out(port, frame, &mut out);
            }
        }
        out
    }

    /// Applies a control command and returns the reply text. `Shutdown` is the
    /// shell's business; here it only acknowledges.
    pub fn apply(&mut self, cmd: &Command) -> Result<String, SwitchError> {
        let mut f = self.faults;
        match cmd {
            Command::Partition(groups) => {
                self.partition(groups)?;
                let text: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect();
                return Ok(format!("ok: partition {}", text.join("/")));
            }
            Command::Cut(a, b) => {
                self.cut(*a, *b)?;
                return Ok(format!("ok: cut {a}>{b}"));
            }
            Command::Heal => {
                self.heal();
                return Ok("ok: healed".into());
            }
            Command::Drop(p) => f.drop_pct = *p,
            Command::Dup(p) => f.dup_pct = *p,
            Command::Delay(ms) => f.delay_ms = *ms,
            Command::PortDelay(ms, ports) => {
                if let Some(p) = ports.iter().find(|p| **p == 0 || **p > self.ports) {
                    return Err(SwitchError::BadPartition(format!(
                        "port {p} is not a port of this switch (1..={})",
                        self.ports
                    )));
                }
                for p in ports {
                    self.port_delay_ms[*p as usize] = *ms;
                }
                return Ok(format!("ok: {}", self.faults_text()));
            }
            Command::Reorder(p) => f.reorder_pct = *p,
            Command::ShowFaults => return Ok(self.faults_text()),
            Command::Stats { json: false } => return Ok(self.stats_text()),
            Command::Stats { json: true } => return Ok(self.stats_json()),
            Command::Macs => return Ok(self.macs_text()),
            Command::Shutdown => return Ok("ok: shutting down".into()),
        }
        self.set_faults(f)?;
        Ok(format!("ok: {}", self.faults_text()))
    }

    pub fn faults_text(&self) -> String {
        let f = self.faults;
        let mut t = format!(
            "drop {}% dup {}% delay {} ms reorder {}%",
            f.drop_pct, f.dup_pct, f.delay_ms, f.reorder_pct
        );
        for (p, ms) in self.port_delay_ms.iter().enumerate().skip(1) {
            if *ms > 0 {
                let _ = write!(t, " port{p}+{ms}ms");
            }
        }
        t
    }

    /// Human-readable statistics: one line per port, then totals and settings.
    pub fn stats_text(&self) -> String {
        let mut s = String::from(
            "port  frames_in  bytes_in  frames_out  bytes_out  dropped  dup  delayed  reordered  partitioned  malformed  tx_err\n",
        );
        for port in 1..=self.ports {
            let p = &self.stats[port as usize];
            let _ = writeln!(
                s,
                "{port:>4}  {:>9}  {:>8}  {:>10}  {:>9}  {:>7}  {:>3}  {:>7}  {:>9}  {:>11}  {:>9}  {:>6}",
                p.frames_in,
                p.bytes_in,
                p.frames_out,
                p.bytes_out,
                p.dropped,
                p.duplicated,
                p.delayed,
                p.reordered,
                p.partitioned,
                p.malformed,
                p.tx_errors
            );
        }
        let _ = writeln!(
            s,
            "macs {}  filtered {}  pending {}  faults: {}",
            self.macs.len(),
            self.filtered,
            self.pending(),
            self.faults_text()
        );
        let blocked: Vec<String> = (1..=self.ports)
            .flat_map(|a| (1..=self.ports).map(move |b| (a, b)))
            .filter(|(a, b)| a != b && !self.can_reach(*a, *b))
            .map(|(a, b)| format!("{a}>{b}"))
            .collect();
        let _ = write!(
            s,
            "blocked: {}",
            if blocked.is_empty() {
                "none".to_string()
            } else {
                blocked.join(" ")
            }
        );
        s
    }

    /// Statistics as one JSON object (for scripts and tests).
    pub fn stats_json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            ports: Vec<(Port, &'a PortStats)>,
            faults: Faults,
            macs: usize,
            filtered: u64,
            pending: usize,
            blocked: Vec<(Port, Port)>,
        }
        let j = Json {
            ports: (1..=self.ports)
                .map(|p| (p, &self.stats[p as usize]))
                .collect(),
            faults: self.faults,
            macs: self.macs.len(),
            filtered: self.filtered,
            pending: self.pending(),
            blocked: (1..=self.ports)
                .flat_map(|a| (1..=self.ports).map(move |b| (a, b)))
                .filter(|(a, b)| a != b && !self.can_reach(*a, *b))
                .collect(),
        };
        serde_json::to_string(&j).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn macs_text(&self) -> String {
        let mut s = String::new();
        for (m, p) in self.mac_table() {
            let _ = writeln!(
                s,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} port {p}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
        }
        let _ = write!(s, "{} entries", self.macs.len());
        s
    }
}
