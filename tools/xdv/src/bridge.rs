//! Peer NICs on a Linux bridge instead of the host switch (`--net bridge=NAME`), the
//! way QEMU nodes on several hosts are joined in practice: each host has a bridge,
//! and the bridges are connected by a physical LAN or a VXLAN tunnel (docs/pxe.md).
//!
//! Each such node's peer NIC is a TAP device `xdvp<mgmt port>` (unique on the host:
//! the management port is bound on the host's loopback) that `xdv` creates with
//! `ip tuntap`, puts on the bridge and brings up before QEMU starts; QEMU attaches
//! with `-netdev tap,ifname=…,script=no`. With `netns=NS` the bridge is in network
//! namespace NS (`ip netns`): the TAP is created here, QEMU attaches to it, then it
//! moves into NS and joins the bridge there, while QEMU, its management port and the
//! CLI stay in this namespace. A stopped node's TAP is deleted. Needs root (or
//! CAP_NET_ADMIN) and iproute2's `ip`.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_BYTES: usize = 15;
/// Longest network namespace name `xdv` accepts (a file name in /run/netns).
pub const MAX_NETNS_BYTES: usize = 64;
/// How long QEMU gets to attach to its TAP before it moves into the bridge's namespace.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

/// A Linux bridge (in network namespace `netns`, or this one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    pub name: String,
    #[serde(default)]
    pub netns: Option<String>,
}

/// Where a node's peer NIC is: the cluster's host switch or a bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerNet {
    Switch,
    Bridge(Bridge),
}

fn check_name(what: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty()
        || s.len() > max
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        bail!("bad {what} `{s}` (1-{max} characters of A-Z a-z 0-9 _ - .)");
    }
    Ok(())
}

impl std::str::FromStr for PeerNet {
    type Err = anyhow::Error;

    /// `switch`, `bridge=NAME` or `bridge=NAME,netns=NS`.
    fn from_str(s: &str) -> Result<PeerNet> {
        if s == "switch" {
            return Ok(PeerNet::Switch);
        }
        let mut name = None;
        let mut netns = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("bridge", v)) if name.is_none() => name = Some(v.to_string()),
                Some(("netns", v)) if netns.is_none() => netns = Some(v.to_string()),
                _ => bail!(
                    "bad --net `{s}` (want `switch`, `bridge=NAME` or `bridge=NAME,netns=NS`)"
                ),
            }
        }
        let Some(name) = name else {
            bail!("bad --net `{s}`: no bridge=NAME");
        };
        check_name("bridge name", &name, MAX_IFNAME_BYTES)?;
        if let Some(ns) = &netns {
            check_name("network namespace", ns, MAX_NETNS_BYTES)?;
        }
        Ok(PeerNet::Bridge(Bridge { name, netns }))
    }
}

impl PeerNet {
    /// The bridge, if any (what a node's state keeps).
    pub fn bridge(self) -> Option<Bridge> {
        match self {
            PeerNet::Switch => None,
            PeerNet::Bridge(b) => Some(b),
        }
    }
}

impl std::fmt::Display for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.netns {
            Some(ns) => write!(f, "bridge {} in netns {ns}", self.name),
            None => write!(f, "bridge {}", self.name),
        }
    }
}

/// The TAP device of the node whose management port is `mgmt_port`.
pub fn tap_name(mgmt_port: u16) -> String {
    format!("xdvp{mgmt_port}")
}

/// QEMU's `-netdev` value for a peer NIC on `tap`.
pub fn qemu_netdev_arg(tap: &str, id: &str) -> String {
    format!("tap,id={id},ifname={tap},script=no,downscript=no")
}

/// Runs `ip [-n netns] args…`; the error names the command and what `ip` said.
fn ip(netns: Option<&str>, args: &[&str]) -> Result<()> {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    let out = c
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (Debian iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}{}` failed: {}",
            netns.map(|n| format!("-n {n} ")).unwrap_or_default(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Refuses a bridge that does not exist (or is not a bridge), with what to run.
pub fn check(bridge: &Bridge) -> Result<()> {
    ip(
        bridge.netns.as_deref(),
        &["link", "show", "dev", &bridge.name, "type", "bridge"],
    )
    .with_context(|| {
        format!(
            "no {bridge}: create it first (`ip{} link add {} type bridge && ip{} link set {} up`)",
            bridge
                .netns
                .as_ref()
                .map(|n| format!(" -n {n}"))
                .unwrap_or_default(),
            bridge.name,
            bridge
                .netns
                .as_ref()
                .map(|n| format!(" -n {n}"))
                .unwrap_or_default(),
            bridge.name
        )
    })
}

/// Deletes `tap` here and in the bridge's namespace, if it exists (a stopped node's).
pub fn remove_tap(bridge: &Bridge, tap: &str) {
    let _ = ip(None, &["link", "del", "dev", tap]);
    if let Some(ns) = &bridge.netns {
        let _ = ip(Some(ns), &["link", "del", "dev", tap]);
    }
}

/// Before QEMU starts: a fresh `tap`, up, on the bridge when the bridge is here.
pub fn prepare_tap(bridge: &Bridge, tap: &str) -> Result<()> {
    check(bridge)?;
    remove_tap(bridge, tap);
    ip(None, &["tuntap", "add", "dev", tap, "mode", "tap"])?;
    ip(None, &["link", "set", "dev", tap, "up"])?;
    if bridge.netns.is_none() {
        ip(None, &["link", "set", "dev", tap, "master", &bridge.name])?;
    }
    Ok(())
}

/// After QEMU started (`pid`): with a bridge in another namespace, waits until QEMU
/// has attached to `tap` (its carrier comes up), then moves it there onto the bridge.
pub fn attach(bridge: &Bridge, tap: &str, pid: u32) -> Result<()> {
    let Some(ns) = &bridge.netns else {
        return Ok(());
    };
    let carrier = Path::new("/sys/class/net").join(tap).join("carrier");
    let end = Instant::now() + ATTACH_TIMEOUT;
    let attached = || std::fs::read_to_string(&carrier).is_ok_and(|s| s.trim() == "1");
    while !attached() {
        if !crate::cluster::alive(pid) {
            bail!("QEMU (pid {pid}) exited before it attached to {tap}");
        }
        if Instant::now() > end {
            bail!(
                "QEMU (pid {pid}) did not attach to {tap} within {} s",
                ATTACH_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ip(None, &["link", "set", "dev", tap, "netns", ns])?;
    ip(
        Some(ns),
        &["link", "set", "dev", tap, "master", &bridge.name, "up"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_values_parse_and_bad_ones_are_named() {
        assert_eq!("switch".parse::<PeerNet>().unwrap(), PeerNet::Switch);
        assert_eq!(
            "bridge=br0".parse::<PeerNet>().unwrap(),
            PeerNet::Bridge(Bridge {
                name: "br0".into(),
                netns: None
            })
        );
        assert_eq!(
            "bridge=br-x,netns=host.a".parse::<PeerNet>().unwrap(),
            PeerNet::Bridge(Bridge {
                name: "br-x".into(),
                netns: Some("host.a".into())
            })
        );
        for bad in [
            "",
            "bridge",
            "bridge=",
            "netns=a",
            "bridge=a,bridge=b",
            "bridge=a;b",
            "bridge=sixteen-chars-br",
            "tap=x",
        ] {
            assert!(bad.parse::<PeerNet>().is_err(), "`{bad}` accepted");
        }
        let e = "bridge=sixteen-chars-br"
            .parse::<PeerNet>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("1-15 characters"), "{e}");
    }

    #[test]
    fn taps_are_named_by_port_and_fit_an_interface_name() {
        let t = tap_name(65535);
        assert_eq!(t, "xdvp65535");
        assert!(t.len() <= MAX_IFNAME_BYTES);
        assert_eq!(
            qemu_netdev_arg(&t, "peer"),
            "tap,id=peer,ifname=xdvp65535,script=no,downscript=no"
        );
    }
}
