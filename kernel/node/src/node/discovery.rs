//! Discovered machines on the node side (`xdv_cluster::discovery` has the protocol and
//! the replicated table). The kernel hands every datagram that arrives on the peer
//! network's report port to [`Node::on_discovery_report`]:
//! - a datagram that does not decode is counted and dropped (unauthenticated input;
//!   no line per datagram, so a flood cannot fill the console or the audit log);
//! - a MAC the log admitted is answered "admitted as node N" (any member answers: the
//!   table is replicated), so the machine resets into its per-MAC configuration;
//! - the leader proposes a `Discovered` command for a report the table wants (new,
//!   changed, or not logged for `REFRESH_MS` of cluster time), at most once per MAC
//!   per [`REPROPOSE_MS`] of local time while the proposal is on its way;
//! - a new machine in the log is a console line and an audit record
//!   ([`AUDIT_TAG_DISCOVERED`]) on every node.

use super::Node;
use crate::durable::Region;
use alloc::collections::BTreeMap;
use xdv_audit::RecordBody;
use xdv_cluster::Command;
use xdv_cluster::discovery::{self, Answer, Mac, Report, Reported, WIRE_BYTES};
use xdv_cluster::mgmt;

/// Audit `Custom` tag of a discovery record: postcard (MAC, hardware) for a new
/// machine, (MAC, node) for an admission.
pub const AUDIT_TAG_DISCOVERED: u16 = 0xC7;
/// The leader proposes one MAC's report at most this often (local ms).
pub const REPROPOSE_MS: u64 = 5_000;

/// The node's own (not replicated) discovery bookkeeping.
#[derive(Default)]
pub struct DiscoveryLocal {
    /// When this node last proposed each MAC's report (at most `MAX_DISCOVERED`).
    proposed_ms: BTreeMap<Mac, u64>,
    /// Datagrams on the report port that were not valid reports.
    pub bad_reports: u64,
    /// Valid reports heard.
    pub reports: u64,
}

impl<R: Region> Node<R> {
    /// A datagram from the report port: the answer to broadcast back, if any.
    pub fn on_discovery_report(&mut self, bytes: &[u8]) -> Option<[u8; WIRE_BYTES]> {
        let report = match Report::decode(bytes) {
            Ok(r) => r,
            Err(_) => {
                self.discovery.bad_reports += 1;
                return None;
            }
        };
        self.discovery.reports += 1;
        let table = &self.state.data().discovery;
        if let Some(node) = table.admitted_as(&report.mac) {
            return Some(
                Answer::Admitted {
                    mac: report.mac,
                    node,
                }
                .encode(),
            );
        }
        if !self.is_leader() || !table.wants(&report, self.state.data().clock_ms) {
            return None;
        }
        let now = self.now_ms;
        let local = &mut self.discovery.proposed_ms;
        if local
            .get(&report.mac)
            .is_some_and(|&at| now.saturating_sub(at) < REPROPOSE_MS)
        {
            return None;
        }
        if local.len() >= discovery::MAX_DISCOVERED {
            local.retain(|_, at| now.saturating_sub(*at) < REPROPOSE_MS);
        }
        if local.len() < discovery::MAX_DISCOVERED {
            local.insert(report.mac, now);
            let _ = self.propose(Command::Discovered {
                mac: report.mac,
                hardware: report.hardware,
            });
            self.process();
        }
        None
    }

    /// Lines and audit records for what the log did with discovered machines.
    pub(super) fn discovery_events(&mut self, events: &[xdv_cluster::Event], audit: bool) {
        for ev in events {
            match ev {
                xdv_cluster::Event::Discovered {
                    mac,
                    outcome: Reported::New,
                } => {
                    let hw = self
                        .state
                        .data()
                        .discovery
                        .machines
                        .get(mac)
                        .map(|m| m.hardware);
                    let Some(hw) = hw else { continue };
                    self.note(alloc::format!(
                        "discovery: unprovisioned machine {} ({hw}); admit it with `cargo xdv join --mac {}`",
                        discovery::mac_string(mac),
                        discovery::mac_string(mac)
                    ));
                    if audit {
                        self.out.audit.push(RecordBody::Custom {
                            tag: AUDIT_TAG_DISCOVERED,
                            bytes: mgmt::encode(&(*mac, hw)),
                        });
                    }
                }
                xdv_cluster::Event::Discovered {
                    mac,
                    outcome: Reported::TableFull,
                } => self.note(alloc::format!(
                    "discovery: table full ({} machines); {} refused",
                    discovery::MAX_DISCOVERED,
                    discovery::mac_string(mac)
                )),
                xdv_cluster::Event::DiscoveredAdmitted {
                    mac,
                    node,
                    refused: None,
                } => {
                    self.note(alloc::format!(
                        "discovery: {} admitted as node {}",
                        discovery::mac_string(mac),
                        node.0
                    ));
                    if audit {
                        self.out.audit.push(RecordBody::Custom {
                            tag: AUDIT_TAG_DISCOVERED,
                            bytes: mgmt::encode(&(*mac, *node)),
                        });
                    }
                }
                _ => {}
            }
        }
    }
}
