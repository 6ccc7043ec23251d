//! Discovered machines (issue 20, as Warewulf's discoverable nodes): a machine that
//! PXE-boots with a MAC the TFTP tree does not know runs the kernel in discovery mode
//! (no keys, no Raft) and broadcasts a [`Report`] on the peer network every
//! [`REPORT_EVERY_MS`]. Members answer an admitted MAC with [`Answer::Admitted`]; the
//! leader turns a report that is new or changed (or not seen for [`REFRESH_MS`] of
//! cluster time) into a `Discovered` log command, so the table is replicated state and
//! every node lists the same machines. The operator admits one with `cargo xdv join
//! --mac`: the membership change (`AddMember`) and then `AdmitDiscovered`, which moves
//! the MAC from the table to [`Discovery::admitted`]; the machine's next report is
//! answered "admitted as node N" and it resets into its new per-MAC configuration.
//!
//! Reports are unauthenticated input: the wire form is fixed-size, every field is
//! checked ([`ReportError`] names the first bad one), decoding never panics, the table
//! holds at most [`MAX_DISCOVERED`] machines (reports beyond are refused and counted)
//! and [`MAX_ADMITTED`] admitted MACs (the oldest is forgotten first). Nothing here
//! reads a clock: cluster time comes in with each command.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use xdv_types::NodeId;

/// UDP port members listen on for reports (peer network, broadcast).
pub const REPORT_PORT: u16 = 7405;
/// UDP port discovery-mode machines listen on for answers (broadcast).
pub const ANSWER_PORT: u16 = 7406;
/// How often a discovery-mode machine reports itself.
pub const REPORT_EVERY_MS: u64 = 2_000;
/// A repeated report with unchanged hardware is logged again only after this much
/// cluster time (it refreshes "last seen"); repeats in between change nothing.
pub const REFRESH_MS: u64 = 30_000;
/// Most machines in the discovered table.
pub const MAX_DISCOVERED: usize = 64;
/// Most admitted MACs remembered (so their next report can be answered).
pub const MAX_ADMITTED: usize = 64;
/// Most cores a report may claim.
pub const MAX_CORES: u16 = 4096;
/// Most memory a report may claim (16 TiB).
pub const MAX_MEM_MIB: u32 = 1 << 24;
/// Size of every datagram of the discovery protocol.
pub const WIRE_BYTES: usize = 20;
const MAGIC: [u8; 4] = *b"XDVD";
const WIRE_VERSION: u8 = 1;
const KIND_REPORT: u8 = 1;
const KIND_ADMITTED: u8 = 2;

/// A MAC address, six octets.
pub type Mac = [u8; 6];

/// `52:54:00:00:01:09`.
pub fn mac_string(mac: &Mac) -> alloc::string::String {
    alloc::format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    )
}

/// Parses six hex octets separated by `:` or `-` (any case).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for octet in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *octet = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The NIC model a machine's kernel drives on its peer NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NicModel {
    VirtioNet,
    E1000e,
}

/// How the machine booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// A machine's hardware summary, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    pub cores: u16,
    pub mem_mib: u32,
    pub nic: NicModel,
    pub firmware: Firmware,
}

impl NicModel {
    pub fn name(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net",
            NicModel::E1000e => "e1000e",
        }
    }
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

impl core::fmt::Display for Hardware {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} cores, {} MiB, {}, {}",
            self.cores,
            self.mem_mib,
            self.nic.name(),
            self.firmware.name()
        )
    }
}

/// A discovery-mode machine's report: the MAC it PXE-booted from and its hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub mac: Mac,
    pub hardware: Hardware,
}

/// The cluster's answer to a report: the MAC was admitted as `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Admitted { mac: Mac, node: NodeId },
}

/// Why a datagram is not a valid report or answer (the first bad field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportError {
    Length(usize),
    Magic,
    Version(u8),
    Kind(u8),
    /// All zero, broadcast or multicast.
    Mac,
    Cores(u16),
    Memory(u32),
    Nic(u8),
    Firmware(u8),
    Node(u32),
    /// Bytes that must be zero are not.
    Padding,
}

impl core::fmt::Display for ReportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReportError::Length(n) => write!(f, "{n} bytes (a discovery datagram is {WIRE_BYTES})"),
            ReportError::Magic => write!(f, "not a discovery datagram (magic)"),
            ReportError::Version(v) => write!(f, "unknown discovery version {v}"),
            ReportError::Kind(k) => write!(f, "unknown discovery kind {k}"),
            ReportError::Mac => write!(f, "MAC is zero, broadcast or multicast"),
            ReportError::Cores(c) => write!(f, "{c} cores (want 1..={MAX_CORES})"),
            ReportError::Memory(m) => write!(f, "{m} MiB of memory (want 1..={MAX_MEM_MIB})"),
            ReportError::Nic(n) => write!(f, "unknown NIC model {n}"),
            ReportError::Firmware(x) => write!(f, "unknown firmware {x}"),
            ReportError::Node(n) => write!(f, "node id {n} (want 1..=254)"),
            ReportError::Padding => write!(f, "reserved bytes are not zero"),
        }
    }
}

fn check_mac(mac: &Mac) -> Result<(), ReportError> {
    // Bit 0 of the first octet: group (multicast/broadcast) address.
    if *mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(ReportError::Mac);
    }
    Ok(())
}

fn header(kind: u8, mac: &Mac) -> [u8; WIRE_BYTES] {
    let mut b = [0u8; WIRE_BYTES];
    b[..4].copy_from_slice(&MAGIC);
    b[4] = WIRE_VERSION;
    b[5] = kind;
    b[6..12].copy_from_slice(mac);
    b
}

/// Splits a datagram into (kind, MAC, body) after checking length, magic and version.
fn open(bytes: &[u8]) -> Result<(u8, Mac, &[u8]), ReportError> {
    if bytes.len() != WIRE_BYTES {
        return Err(ReportError::Length(bytes.len()));
    }
    if bytes[..4] != MAGIC {
        return Err(ReportError::Magic);
    }
    if bytes[4] != WIRE_VERSION {
        return Err(ReportError::Version(bytes[4]));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[6..12]);
    check_mac(&mac)?;
    Ok((bytes[5], mac, &bytes[12..]))
}

impl Report {
    /// Checks every field; an `Ok` report is safe to put into the log.
    pub fn validate(&self) -> Result<(), ReportError> {
        check_mac(&self.mac)?;
        let h = &self.hardware;
        if !(1..=MAX_CORES).contains(&h.cores) {
            return Err(ReportError::Cores(h.cores));
        }
        if !(1..=MAX_MEM_MIB).contains(&h.mem_mib) {
            return Err(ReportError::Memory(h.mem_mib));
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; WIRE_BYTES] {
        let mut b = header(KIND_REPORT, &self.mac);
        let h = &self.hardware;
        b[12..14].copy_from_slice(&h.cores.to_le_bytes());
        b[14..18].copy_from_slice(&h.mem_mib.to_le_bytes());
        b[18] = match h.nic {
            NicModel::VirtioNet => 1,
            NicModel::E1000e => 2,
        };
        b[19] = match h.firmware {
            Firmware::Bios => 1,
            Firmware::Uefi => 2,
        };
        b
    }

    /// Decodes and validates a report datagram. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Report, ReportError> {
        let (kind, mac, body) = open(bytes)?;
        if kind != KIND_REPORT {
            return Err(ReportError::Kind(kind));
        }
        let cores = u16::from_le_bytes([body[0], body[1]]);
        let mem_mib = u32::from_le_bytes([body[2], body[3], body[4], body[5]]);
        let nic = match body[6] {
            1 => NicModel::VirtioNet,
            2 => NicModel::E1000e,
            n => return Err(ReportError::Nic(n)),
        };
        let firmware = match body[7] {
            1 => Firmware::Bios,
            2 => Firmware::Uefi,
            x => return Err(ReportError::Firmware(x)),
        };
        let r = Report {
            mac,
            hardware: Hardware {
                cores,
                mem_mib,
                nic,
                firmware,
            },
        };
        r.validate()?;
        Ok(r)
    }
}

impl Answer {
    pub fn encode(&self) -> [u8; WIRE_BYTES] {
        let Answer::Admitted { mac, node } = self;
        let mut b = header(KIND_ADMITTED, mac);
        b[12..16].copy_from_slice(&node.0.to_le_bytes());
        b
    }

    /// Decodes and validates an answer datagram. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Answer, ReportError> {
        let (kind, mac, body) = open(bytes)?;
        if kind != KIND_ADMITTED {
            return Err(ReportError::Kind(kind));
        }
        let node = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        if !(1..=254).contains(&node) {
            return Err(ReportError::Node(node));
        }
        if body[4..].iter().any(|&b| b != 0) {
            return Err(ReportError::Padding);
        }
        Ok(Answer::Admitted {
            mac,
            node: NodeId(node),
        })
    }
}

/// One machine in the discovered table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredMachine {
    pub hardware: Hardware,
    /// Cluster time (ms) of the first and the latest logged report.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// What applying a `Discovered` command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reported {
    /// A machine the table did not have.
    New,
    /// A known machine: hardware and "last seen" updated.
    Refreshed,
    /// The MAC was admitted already: nothing changes.
    AlreadyAdmitted(NodeId),
    /// The table is full ([`MAX_DISCOVERED`]): refused and counted.
    TableFull,
    /// The report does not validate (a faulty proposer): refused and counted.
    Invalid,
}

/// Why `AdmitDiscovered` did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmitRefused {
    /// The MAC is not in the discovered table.
    UnknownMac,
}

/// The replicated discovery state (part of `StateData`, hashed with it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    pub machines: BTreeMap<Mac, DiscoveredMachine>,
    /// Admitted MACs and their node ids, oldest admission first.
    pub admitted: Vec<(Mac, NodeId)>,
    /// Reports refused because the table was full.
    pub refused_full: u64,
    /// Reports refused as invalid.
    pub refused_invalid: u64,
}

impl Discovery {
    /// The node a MAC was admitted as, if it was.
    pub fn admitted_as(&self, mac: &Mac) -> Option<NodeId> {
        self.admitted
            .iter()
            .find(|(m, _)| m == mac)
            .map(|(_, n)| *n)
    }

    /// Should the leader log this report at cluster time `now_ms`? Only a new or
    /// changed machine, or one whose last logged report is [`REFRESH_MS`] old, and
    /// never an admitted one or one the full table would refuse.
    pub fn wants(&self, r: &Report, now_ms: u64) -> bool {
        if r.validate().is_err() || self.admitted_as(&r.mac).is_some() {
            return false;
        }
        match self.machines.get(&r.mac) {
            Some(m) => {
                m.hardware != r.hardware || now_ms.saturating_sub(m.last_seen_ms) >= REFRESH_MS
            }
            None => self.machines.len() < MAX_DISCOVERED,
        }
    }

    /// Applies a logged report at cluster time `now_ms`.
    pub fn report(&mut self, r: &Report, now_ms: u64) -> Reported {
        if r.validate().is_err() {
            self.refused_invalid += 1;
            return Reported::Invalid;
        }
        if let Some(node) = self.admitted_as(&r.mac) {
            return Reported::AlreadyAdmitted(node);
        }
        if let Some(m) = self.machines.get_mut(&r.mac) {
            m.hardware = r.hardware;
            m.last_seen_ms = m.last_seen_ms.max(now_ms);
            return Reported::Refreshed;
        }
        if self.machines.len() >= MAX_DISCOVERED {
            self.refused_full += 1;
            return Reported::TableFull;
        }
        self.machines.insert(
            r.mac,
            DiscoveredMachine {
                hardware: r.hardware,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
            },
        );
        assert!(self.machines.len() <= MAX_DISCOVERED);
        Reported::New
    }

    /// The MAC was admitted as `node`: it leaves the table and is remembered as
    /// admitted (forgetting the oldest admission beyond [`MAX_ADMITTED`]).
    pub fn admit(&mut self, mac: &Mac, node: NodeId) -> Result<(), AdmitRefused> {
        if self.machines.remove(mac).is_none() {
            return Err(AdmitRefused::UnknownMac);
        }
        self.admitted.retain(|(m, _)| m != mac);
        if self.admitted.len() >= MAX_ADMITTED {
            self.admitted.remove(0);
        }
        self.admitted.push((*mac, node));
        assert!(self.admitted.len() <= MAX_ADMITTED && !self.machines.contains_key(mac));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdv_types::rng::SplitMix64;

    fn report(last: u8) -> Report {
        Report {
            mac: [0x52, 0x54, 0, 0, 1, last],
            hardware: Hardware {
                cores: 2,
                mem_mib: 512,
                nic: NicModel::E1000e,
                firmware: Firmware::Bios,
            },
        }
    }

    #[test]
    fn report_and_answer_round_trip() {
        let r = report(9);
        assert_eq!(Report::decode(&r.encode()), Ok(r));
        let a = Answer::Admitted {
            mac: r.mac,
            node: NodeId(4),
        };
        assert_eq!(Answer::decode(&a.encode()), Ok(a));
        // A report is not an answer and the other way round.
        assert_eq!(Answer::decode(&r.encode()), Err(ReportError::Kind(1)));
        assert_eq!(Report::decode(&a.encode()), Err(ReportError::Kind(2)));
    }

    #[test]
    fn every_bad_field_is_named() {
        let good = report(9).encode();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            Report::decode(&b)
        };
        assert_eq!(Report::decode(&good[..19]), Err(ReportError::Length(19)));
        assert_eq!(with(0, b'Y'), Err(ReportError::Magic));
        assert_eq!(with(4, 2), Err(ReportError::Version(2)));
        assert_eq!(with(5, 7), Err(ReportError::Kind(7)));
        assert_eq!(with(6, 0x01), Err(ReportError::Mac)); // multicast
        let mut zero = good;
        zero[6..12].fill(0);
        assert_eq!(Report::decode(&zero), Err(ReportError::Mac));
        let mut b = good;
        b[12..14].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(Report::decode(&b), Err(ReportError::Cores(0)));
        b[12..14].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(Report::decode(&b), Err(ReportError::Cores(5000)));
        let mut b = good;
        b[14..18].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Report::decode(&b), Err(ReportError::Memory(0)));
        assert_eq!(with(18, 9), Err(ReportError::Nic(9)));
        assert_eq!(with(19, 0), Err(ReportError::Firmware(0)));
        let a = Answer::Admitted {
            mac: [2, 0, 0, 0, 0, 1],
            node: NodeId(4),
        }
        .encode();
        let mut b = a;
        b[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Answer::decode(&b), Err(ReportError::Node(0)));
        let mut b = a;
        b[19] = 1;
        assert_eq!(Answer::decode(&b), Err(ReportError::Padding));
    }

    /// Arbitrary bytes (any length, and mutations of a valid datagram) never panic;
    /// whatever decodes re-encodes to the same bytes and validates.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = SplitMix64::new(0xd15c_0000);
        let good = report(3).encode();
        for i in 0..20_000u32 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                let len = (rng.next_u64() % 40) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                let mut b = good.to_vec();
                let k = (rng.next_u64() % WIRE_BYTES as u64) as usize;
                b[k] = rng.next_u64() as u8;
                b
            };
            if let Ok(r) = Report::decode(&bytes) {
                assert_eq!(r.encode().as_slice(), bytes.as_slice());
                assert!(r.validate().is_ok());
            }
            if let Ok(a) = Answer::decode(&bytes) {
                assert_eq!(a.encode().as_slice(), bytes.as_slice());
            }
        }
    }

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(
            parse_mac("52:54:00:00:01:0A"),
            Some([0x52, 0x54, 0, 0, 1, 10])
        );
        assert_eq!(
            parse_mac("52-54-00-00-01-0a"),
            Some([0x52, 0x54, 0, 0, 1, 10])
        );
        for bad in [
            "",
            "52:54:00:00:01",
            "52:54:00:00:01:0a:00",
            "52:54:00:00:01:g0",
            "5:54:00:00:01:0a0",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(mac_string(&[0x52, 0x54, 0, 0, 1, 10]), "52:54:00:00:01:0a");
    }

    #[test]
    fn the_table_is_capped_repeats_refresh_and_admission_removes() {
        let mut d = Discovery::default();
        let r = report(1);
        assert!(d.wants(&r, 0));
        assert_eq!(d.report(&r, 100), Reported::New);
        // A repeat with the same hardware is not logged again before REFRESH_MS.
        assert!(!d.wants(&r, 100 + REFRESH_MS - 1));
        assert!(d.wants(&r, 100 + REFRESH_MS));
        let mut changed = r;
        changed.hardware.cores = 8;
        assert!(d.wants(&changed, 200), "changed hardware is logged at once");
        assert_eq!(d.report(&changed, 200), Reported::Refreshed);
        let m = &d.machines[&r.mac];
        assert_eq!(
            (m.first_seen_ms, m.last_seen_ms, m.hardware.cores),
            (100, 200, 8)
        );

        for k in 2..=MAX_DISCOVERED as u8 {
            assert_eq!(d.report(&report(k), 300), Reported::New);
        }
        assert_eq!(d.machines.len(), MAX_DISCOVERED);
        let extra = report(200);
        assert!(!d.wants(&extra, 300));
        assert_eq!(d.report(&extra, 300), Reported::TableFull);
        assert_eq!(d.refused_full, 1);
        assert_eq!(d.machines.len(), MAX_DISCOVERED);

        assert_eq!(
            d.admit(&extra.mac, NodeId(4)),
            Err(AdmitRefused::UnknownMac)
        );
        assert_eq!(d.admit(&r.mac, NodeId(4)), Ok(()));
        assert!(!d.machines.contains_key(&r.mac));
        assert_eq!(d.admitted_as(&r.mac), Some(NodeId(4)));
        assert!(
            !d.wants(&r, 10 * REFRESH_MS),
            "an admitted MAC is not logged"
        );
        assert_eq!(d.report(&r, 400), Reported::AlreadyAdmitted(NodeId(4)));
        assert!(!d.machines.contains_key(&r.mac));
        // Room again for the refused machine.
        assert_eq!(d.report(&extra, 500), Reported::New);

        let mut bad = report(5);
        bad.hardware.mem_mib = 0;
        assert_eq!(d.report(&bad, 600), Reported::Invalid);
        assert_eq!(d.refused_invalid, 1);
    }

    #[test]
    fn admitted_macs_are_capped_oldest_first() {
        let mut d = Discovery::default();
        for k in 0..=MAX_ADMITTED as u8 {
            let r = report(k + 1);
            d.report(&r, 0);
            d.admit(&r.mac, NodeId(u32::from(k) + 1)).unwrap();
        }
        assert_eq!(d.admitted.len(), MAX_ADMITTED);
        assert_eq!(d.admitted_as(&report(1).mac), None);
        assert_eq!(d.admitted_as(&report(2).mac), Some(NodeId(2)));
    }
}
