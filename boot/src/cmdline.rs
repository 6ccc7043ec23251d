//! The kernel command line: `key=value` words separated by spaces, parsed into typed
//! [`KernelOptions`]. An unknown key or a bad value never stops boot: it is reported
//! by name (a [`CmdlineDiag`]) and the default is used.

use core::fmt;

/// Most diagnostics kept for one command line; more are counted, not stored.
pub const MAX_DIAGS: usize = 8;
/// Longest test name accepted.
pub const MAX_TEST_NAME: usize = 32;

/// Log verbosity, as on the `log=` option and the `log` console command.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const NAMES: &'static str = "error|warn|info|debug|trace";

    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// An IPv4 address with prefix length, e.g. `ip=10.0.0.2/24`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: [u8; 4],
    pub prefix: u8,
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.addr;
        write!(f, "{}.{}.{}.{}/{}", a[0], a[1], a[2], a[3], self.prefix)
    }
}

/// Default audit region: 4 MiB at physical 64 MiB (documented in docs/audit.md).
pub const DEFAULT_AUDIT_REGION: (u64, u64) = (0x0400_0000, 0x0040_0000);

/// Default Raft state region: 8 MiB at physical 80 MiB (docs/cluster.md).
pub const DEFAULT_RAFT_REGION: (u64, u64) = (0x0500_0000, 0x0080_0000);

/// Typed kernel options with their defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelOptions {
    /// `node=<u32>`: this node's id. Default 0.
    pub node: u32,
    /// `log=<level>`. Default info.
    pub log: LogLevel,
    /// `test=<name>`: run an in-kernel test and exit instead of the console.
    test: Option<([u8; MAX_TEST_NAME], usize)>,
    /// `audit=<addr>,<size>`: the reserved audit region. Default [`DEFAULT_AUDIT_REGION`].
    pub audit: (u64, u64),
    /// `raft=<addr>,<size>`: the reserved Raft state region. Default [`DEFAULT_RAFT_REGION`].
    pub raft: (u64, u64),
    /// `ip=a.b.c.d/n`: static address of the peer NIC; DHCP when absent.
    pub ip: Option<Ipv4Cidr>,
    /// `console=off`: skip the interactive console (for benchmarks).
    pub console: bool,
    /// `peers=2,3`: node ids of the peers (peer k is at 10.0.0.k). At most [`MAX_PEERS`].
    peers: [u32; MAX_PEERS],
    peer_count: usize,
    /// `genesis=1,2,3`: a node joining a running cluster starts from the cluster's
    /// genesis members (their keys are in its provisioning module); empty: the
    /// module's peers are the genesis members.
    genesis: [u32; MAX_PEERS],
    genesis_count: usize,
    /// `fault=corrupt-state@MS`: the test-only fault hook of hash voting — at MS ms of
    /// uptime the node corrupts its own replica of the cluster state (only its hash
    /// changes), so the cluster must find and quarantine it (docs/operate.md). Only a
    /// kernel built with the `fault-hooks` feature acts on it; the image users run
    /// refuses it.
    pub fault_corrupt_at_ms: Option<u64>,
    /// `timeouts=<per_mille>`: the cluster's task timeouts (docs/tasks.md) scaled by
    /// per_mille / 1000 (1..=1000000). Default 1000: the seed's values. Every node of a
    /// cluster must be given the same (it is part of the replicated state).
    pub timeouts_per_mille: u64,
    /// `mgmt=<slots>,<per-source>`: the management port's connection slots
    /// ([`DEFAULT_MGMT_SLOTS`]..=[`MAX_MGMT_SLOTS`]) and the share one source address
    /// holds while slots are scarce (1..=slots - [`MGMT_RESERVE_SLOTS`]; the reserve
    /// always stays for other sources). Default 8,4. A provisioning setting for hosts
    /// whose many clients all arrive from one address (QEMU user networking, a load
    /// generator behind NAT); the default protects against one hostile source.
    pub mgmt_slots: usize,
    pub mgmt_per_source: usize,
    /// `discover=<mac>/<pc|efi>`: this machine PXE-booted from NIC `mac` (GRUB's
    /// `$net_default_mac`) under BIOS (`pc`) or UEFI (`efi`) (`$grub_platform`) and
    /// has no XDV configuration: the kernel runs in discovery mode (docs/pxe.md).
    pub discover: Option<Discover>,
}

/// The `discover=` option: the MAC GRUB booted from, and whether the firmware is UEFI.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Discover {
    pub mac: [u8; 6],
    pub uefi: bool,
}

fn parse_discover(value: &str) -> Option<Discover> {
    let (mac_s, platform) = value.split_once('/')?;
    let uefi = match platform {
        "pc" => false,
        "efi" => true,
        _ => return None,
    };
    let mut mac = [0u8; 6];
    let mut parts = mac_s.split(':');
    for octet in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *octet = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(Discover { mac, uefi })
}

/// Management slots by default (`mgmt=`), and at most.
pub const DEFAULT_MGMT_SLOTS: usize = 8;
pub const MAX_MGMT_SLOTS: usize = 32;
/// The per-source share of the management port by default.
pub const DEFAULT_MGMT_PER_SOURCE: usize = 4;
/// Management slots that always stay for sources holding fewer than their share
/// (`xdv_net::admission::MGMT_LIMITS.reserve`).
pub const MGMT_RESERVE_SLOTS: usize = 2;

/// Most peers on the command line.
pub const MAX_PEERS: usize = 15;

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            node: 0,
            log: LogLevel::Info,
            test: None,
            audit: DEFAULT_AUDIT_REGION,
            raft: DEFAULT_RAFT_REGION,
            ip: None,
            console: true,
            peers: [0; MAX_PEERS],
            peer_count: 0,
            genesis: [0; MAX_PEERS],
            genesis_count: 0,
            fault_corrupt_at_ms: None,
            timeouts_per_mille: 1000,
            mgmt_slots: DEFAULT_MGMT_SLOTS,
            mgmt_per_source: DEFAULT_MGMT_PER_SOURCE,
            discover: None,
        }
    }
}

impl KernelOptions {
    pub fn peers(&self) -> &[u32] {
        &self.peers[..self.peer_count]
    }

    /// The genesis members of the cluster this node joins (`genesis=`), if given.
    pub fn genesis(&self) -> Option<&[u32]> {
        (self.genesis_count > 0).then(|| &self.genesis[..self.genesis_count])
    }

    pub fn test(&self) -> Option<&str> {
        self.test
            .as_ref()
            .map(|(b, n)| core::str::from_utf8(&b[..*n]).unwrap_or(""))
    }
}

/// What was wrong with one word of the command line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CmdlineDiag<'a> {
    UnknownKey {
        key: &'a str,
    },
    BadValue {
        key: &'a str,
        value: &'a str,
        expected: &'static str,
    },
    MissingValue {
        key: &'a str,
    },
}

impl fmt::Display for CmdlineDiag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineDiag::UnknownKey { key } => write!(f, "unknown key `{key}`; ignored"),
            CmdlineDiag::BadValue {
                key,
                value,
                expected,
            } => {
                write!(
                    f,
                    "bad value for `{key}`: \"{value}\" (expected {expected}); using default"
                )
            }
            CmdlineDiag::MissingValue { key } => {
                write!(f, "`{key}` needs a value (`{key}=...`); using default")
            }
        }
    }
}

/// The parse result: options plus every diagnostic, in command-line order.
pub struct Parsed<'a> {
    pub options: KernelOptions,
    diags: [Option<CmdlineDiag<'a>>; MAX_DIAGS],
    /// Diagnostics beyond [`MAX_DIAGS`] that were counted but not kept.
    pub dropped_diags: usize,
}

impl<'a> Parsed<'a> {
    pub fn diags(&self) -> impl Iterator<Item = &CmdlineDiag<'a>> {
        self.diags.iter().flatten()
    }

    fn push(&mut self, d: CmdlineDiag<'a>) {
        match self.diags.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(d),
            None => self.dropped_diags += 1,
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    parse_u64(num)?.checked_mul(mult)
}

fn parse_audit(v: &str) -> Option<(u64, u64)> {
    let (a, s) = v.split_once(',')?;
    let (addr, size) = (parse_u64(a)?, parse_size(s)?);
    let page_aligned = addr % 4096 == 0 && size % 4096 == 0;
    (page_aligned && size >= 64 * 1024 && addr.checked_add(size).is_some()).then_some((addr, size))
}

fn parse_cidr(v: &str) -> Option<Ipv4Cidr> {
    let (ip, prefix) = v.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mut addr = [0u8; 4];
    let mut parts = ip.split('.');
    for b in &mut addr {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Cidr { addr, prefix })
}

/// `mgmt=<slots>,<per-source>`: slots in 8..=32, the share in 1..=slots - reserve.
fn parse_mgmt(v: &str) -> Option<(usize, usize)> {
    let (a, b) = v.split_once(',')?;
    let slots: usize = a.parse().ok()?;
    let share: usize = b.parse().ok()?;
    let ok = (DEFAULT_MGMT_SLOTS..=MAX_MGMT_SLOTS).contains(&slots)
        && (1..=slots - MGMT_RESERVE_SLOTS).contains(&share);
    ok.then_some((slots, share))
}

fn parse_peers(v: &str) -> Option<([u32; MAX_PEERS], usize)> {
    let mut out = [0u32; MAX_PEERS];
    let mut n = 0;
    for part in v.split(',') {
        let id: u32 = part.parse().ok().filter(|id| (1..=254).contains(id))?;
        if n == MAX_PEERS || out[..n].contains(&id) {
            return None;
        }
        out[n] = id;
        n += 1;
    }
    Some((out, n))
}

/// Parses a command line. Never fails: problems become diagnostics.
pub fn parse(line: &str) -> Parsed<'_> {
    let mut p = Parsed {
        options: KernelOptions::default(),
        diags: [None; MAX_DIAGS],
        dropped_diags: 0,
    };
    for word in line.split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let known = matches!(
            key,
            "node"
                | "log"
                | "test"
                | "audit"
                | "raft"
                | "ip"
                | "console"
                | "peers"
                | "genesis"
                | "fault"
                | "timeouts"
                | "mgmt"
                | "discover"
        );
        if !known {
            p.push(CmdlineDiag::UnknownKey { key });
            continue;
        }
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            p.push(CmdlineDiag::MissingValue { key });
            continue;
        };
        let bad = |expected| CmdlineDiag::BadValue {
            key,
            value,
            expected,
        };
        let o = &mut p.options;
        let diag = match key {
            "node" => value
                .parse()
                .map(|n| o.node = n)
                .err()
                .map(|_| bad("an integer 0..=4294967295")),
            "log" => LogLevel::parse(value)
                .map(|l| o.log = l)
                .ok_or(())
                .err()
                .map(|_| bad(LogLevel::NAMES)),
            "test" => {
                let ok = value.len() <= MAX_TEST_NAME
                    && value
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
                if ok {
                    let mut b = [0u8; MAX_TEST_NAME];
                    b[..value.len()].copy_from_slice(value.as_bytes());
                    o.test = Some((b, value.len()));
                    None
                } else {
                    Some(bad("a test name of at most 32 [A-Za-z0-9_-]"))
                }
            }
            "audit" => parse_audit(value)
                .map(|r| o.audit = r)
                .ok_or(())
                .err()
                .map(|_| bad("<addr>,<size>, page-aligned, size >= 64K, e.g. 0x4000000,4M")),
            "raft" => parse_audit(value)
                .map(|r| o.raft = r)
                .ok_or(())
                .err()
                .map(|_| bad("<addr>,<size>, page-aligned, size >= 64K, e.g. 0x5000000,8M")),
            "ip" => parse_cidr(value)
                .map(|c| o.ip = Some(c))
                .ok_or(())
                .err()
                .map(|_| bad("a.b.c.d/prefix")),
            "peers" => parse_peers(value)
                .map(|(p, n)| {
                    o.peers = p;
                    o.peer_count = n;
                })
                .ok_or(())
                .err()
                .map(|_| bad("a comma-separated list of up to 15 node ids 1..=254")),
            "fault" => value
                .strip_prefix("corrupt-state@")
                .and_then(|ms| ms.parse().ok())
                .map(|ms| o.fault_corrupt_at_ms = Some(ms))
                .ok_or(())
                .err()
                .map(|_| bad("corrupt-state@<uptime ms> (a test-only fault hook)")),
            "genesis" => parse_peers(value)
                .map(|(p, n)| {
                    o.genesis = p;
                    o.genesis_count = n;
                })
                .ok_or(())
                .err()
                .map(|_| bad("a comma-separated list of up to 15 node ids 1..=254")),
            "timeouts" => parse_u64(value)
                .filter(|v| (1..=1_000_000).contains(v))
                .map(|v| o.timeouts_per_mille = v)
                .ok_or(())
                .err()
                .map(|_| bad("a scale in per mille, 1..=1000000 (1000: the default timeouts)")),
            "mgmt" => parse_mgmt(value)
                .map(|(slots, share)| {
                    o.mgmt_slots = slots;
                    o.mgmt_per_source = share;
                })
                .ok_or(())
                .err()
                .map(|_| bad("<slots 8..=32>,<per-source share 1..=slots-2>, e.g. 24,20")),
            "discover" => parse_discover(value)
                .map(|d| o.discover = Some(d))
                .ok_or(())
                .err()
                .map(|_| bad("<mac>/<pc|efi>, e.g. 52:54:00:00:01:09/pc")),
            "console" => match value {
                "on" => {
                    o.console = true;
                    None
                }
                "off" => {
                    o.console = false;
                    None
                }
                _ => Some(bad("on|off")),
            },
            _ => None,
        };
        if let Some(d) = diag {
            p.push(d);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = parse("");
        assert_eq!(p.options, KernelOptions::default());
        assert_eq!(p.diags().count(), 0);
    }

    #[test]
    fn typed_values() {
        let p = parse(
            "node=7 log=debug test=heap audit=0x8000000,8M raft=0x9000000,1M ip=10.0.0.3/24 console=off peers=1,2,3",
        );
        let o = &p.options;
        assert_eq!(
            (o.node, o.log, o.test()),
            (7, LogLevel::Debug, Some("heap"))
        );
        assert_eq!(o.audit, (0x800_0000, 8 << 20));
        assert_eq!(o.raft, (0x900_0000, 1 << 20));
        assert_eq!(o.ip.unwrap().to_string(), "10.0.0.3/24");
        assert!(!o.console);
        assert_eq!(o.peers(), [1, 2, 3]);
        assert_eq!(o.genesis(), None);
        let t = parse("timeouts=25").options;
        assert_eq!(t.timeouts_per_mille, 25);
        assert_eq!(KernelOptions::default().timeouts_per_mille, 1000);
        assert_eq!(parse("timeouts=0").diags().count(), 1);
        assert_eq!(parse("timeouts=x").options.timeouts_per_mille, 1000);
        let m = parse("mgmt=24,20").options;
        assert_eq!((m.mgmt_slots, m.mgmt_per_source), (24, 20));
        assert_eq!(
            (t.mgmt_slots, t.mgmt_per_source),
            (DEFAULT_MGMT_SLOTS, DEFAULT_MGMT_PER_SOURCE)
        );
        for bad in [
            "mgmt=24",
            "mgmt=7,4",
            "mgmt=33,4",
            "mgmt=24,23",
            "mgmt=24,0",
            "mgmt=a,b",
        ] {
            let p = parse(bad);
            assert_eq!(p.diags().count(), 1, "{bad} accepted");
            assert_eq!(p.options.mgmt_slots, DEFAULT_MGMT_SLOTS, "{bad}");
        }
        let j = parse("node=4 genesis=1,2,3").options;
        assert_eq!(j.genesis(), Some(&[1, 2, 3][..]));
        assert!(
            parse("genesis=1,x").diags().count() == 1,
            "bad genesis list accepted"
        );
        assert_eq!(
            parse("fault=corrupt-state@8000")
                .options
                .fault_corrupt_at_ms,
            Some(8000)
        );
        assert!(
            parse("fault=explode").diags().count() == 1,
            "unknown fault accepted"
        );
        assert!(
            parse("peers=1,1").diags().count() == 1,
            "duplicate peer accepted"
        );
        assert!(parse("peers=0").diags().count() == 1, "peer 0 accepted");
        assert_eq!(p.diags().count(), 0);
    }

    #[test]
    fn bad_values_reported_by_name_and_default_kept() {
        let p = parse("log=loud bogus=1 node=abc audit=1,2 ip=300.1.1.1/8 test");
        let msgs: Vec<String> = p.diags().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 6, "{msgs:?}");
        assert!(
            msgs[0].starts_with("bad value for `log`: \"loud\""),
            "{}",
            msgs[0]
        );
        assert_eq!(msgs[1], "unknown key `bogus`; ignored");
        assert!(msgs[2].contains("`node`"));
        assert!(msgs[3].contains("`audit`"));
        assert!(msgs[4].contains("`ip`"));
        assert!(msgs[5].contains("`test` needs a value"));
        assert_eq!(p.options, KernelOptions::default());
    }

    #[test]
    fn discover_takes_the_boot_mac_and_platform() {
        let p = parse("discover=52:54:00:00:01:0A/efi");
        assert_eq!(
            p.options.discover,
            Some(Discover {
                mac: [0x52, 0x54, 0, 0, 1, 10],
                uefi: true
            })
        );
        assert!(
            !parse("discover=52:54:00:00:01:0a/pc")
                .options
                .discover
                .unwrap()
                .uefi
        );
        for bad in [
            "discover=52:54:00:00:01/pc",
            "discover=52:54:00:00:01:0a",
            "discover=52:54:00:00:01:0a/arm",
            "discover=52:54:00:00:01:0a:01/pc",
            "discover=/pc",
        ] {
            let p = parse(bad);
            assert_eq!(p.options.discover, None, "{bad}");
            assert!(
                p.diags().any(|d| d.to_string().contains("`discover`")),
                "{bad}"
            );
        }
    }

    #[test]
    fn diag_overflow_is_counted() {
        let p = parse("a b c d e f g h i j");
        assert_eq!(p.diags().count(), MAX_DIAGS);
        assert_eq!(p.dropped_diags, 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }
    }
}
