//! Discovery mode (docs/pxe.md): a machine that PXE-booted with a MAC the TFTP tree
//! does not know gets `discover=<mac>/<pc|efi>` from GRUB and no provisioning module.
//! It has no keys and joins nothing: it brings up its peer NIC with a link-local
//! address (169.254.x.y/16 from its MAC), broadcasts a `Report` (MAC, cores, memory,
//! NIC model, firmware; `xdv_cluster::discovery`) to the members' report port every
//! `REPORT_EVERY_MS`, and listens for their answer. When the cluster answers that
//! this MAC was admitted, it resets the machine, so the firmware PXE-boots again and
//! GRUB now finds the per-MAC configuration `cargo xdv join --mac` wrote.

#![deny(unsafe_code)]

use crate::net::Net;
use crate::{arch, println, time};
use alloc::vec;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use xdv_boot::cmdline::Discover;
use xdv_cluster::discovery::{
    ANSWER_PORT, Answer, Firmware, Hardware, NicModel, REPORT_EVERY_MS, REPORT_PORT, Report,
    mac_string,
};

/// The peer NIC's address in discovery mode: link-local, from the MAC's last two
/// octets (never .0 or .255 in either place).
pub fn link_local(mac: &[u8; 6]) -> (Ipv4Address, u8) {
    let third = mac[4].clamp(1, 254);
    let fourth = mac[5].clamp(1, 254);
    (Ipv4Address::new(169, 254, third, fourth), 16)
}

/// Runs discovery mode until the cluster admits this machine, then resets it.
pub fn run(d: Discover, mut net: Net, cores: usize, mem_mib: u64) -> ! {
    let mac = mac_string(&d.mac);
    // One NIC that looks like a management NIC (QEMU's `..:01:NN`): report on it.
    if net.peer.is_none() {
        net.peer = net.mgmt.take();
    }
    let Some(peer) = net.peer.as_mut() else {
        println!("xdv: discovery: unprovisioned MAC {mac}, but no peer NIC to report on; halting");
        arch::halt_forever()
    };
    let nic = match peer.dev.nic.model() {
        "e1000e" => NicModel::E1000e,
        _ => NicModel::VirtioNet,
    };
    let report = Report {
        mac: d.mac,
        hardware: Hardware {
            cores: u16::try_from(cores).unwrap_or(u16::MAX).clamp(1, 4096),
            mem_mib: u32::try_from(mem_mib).unwrap_or(u32::MAX).clamp(1, 1 << 24),
            nic,
            firmware: if d.uefi {
                Firmware::Uefi
            } else {
                Firmware::Bios
            },
        },
    };
    // Never a report that the cluster would refuse: the fields were clamped above.
    assert!(report.validate().is_ok(), "discovery report out of range");
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8 * 64]);
    let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4 * 64]);
    let handle = peer.sockets.add(udp::Socket::new(rx, tx));
    if peer
        .sockets
        .get_mut::<udp::Socket>(handle)
        .bind(ANSWER_PORT)
        .is_err()
    {
        println!("xdv: discovery: cannot bind UDP port {ANSWER_PORT}; halting");
        arch::halt_forever()
    }
    println!(
        "xdv: discovery: unprovisioned, reporting as MAC {mac} ({}) to the cluster every {} s; this machine joins nothing until `cargo xdv join --mac {mac}` admits it",
        report.hardware,
        REPORT_EVERY_MS / 1000
    );
    let to = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::BROADCAST), REPORT_PORT);
    let bytes = report.encode();
    let mut next_ms = 0u64;
    let mut sent = 0u64;
    loop {
        net.poll();
        let peer = net.peer.as_mut().expect("checked above");
        let sock = peer.sockets.get_mut::<udp::Socket>(handle);
        let now_ms = time::uptime_us() / 1000;
        if now_ms >= next_ms && sock.can_send() {
            if sock.send_slice(&bytes, to).is_ok() {
                sent += 1;
                if sent == 1 {
                    log::info!("discovery: first report sent");
                }
            }
            next_ms = now_ms + REPORT_EVERY_MS;
        }
        while let Ok((data, _)) = sock.recv() {
            if let Ok(Answer::Admitted { mac: m, node }) = Answer::decode(data)
                && m == d.mac
            {
                println!(
                    "xdv: discovery: MAC {mac} admitted as node {}; resetting to boot its configuration",
                    node.0
                );
                arch::reboot()
            }
        }
        // Until the next report, smoltcp's next timer or an interrupt (at most the
        // loop's maximum sleep, so a polled NIC is still read every 1 ms).
        let report_in_us = next_ms.saturating_sub(time::uptime_us() / 1000) * 1000;
        let net_in_us = net.poll_delay_us().unwrap_or(u64::MAX);
        arch::wait_at_most_us(report_in_us.min(net_in_us).max(1));
    }
}
