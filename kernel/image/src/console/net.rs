//! Console network commands that wait on the network (`ping`, `bulk`): each serves
//! the node between its own polls, so a long transfer never stops consensus.
#![deny(unsafe_code)]

use crate::service::Services;
use crate::transport::BULK_PORT;
use crate::{arch, println, time};
use alloc::string::String;
use alloc::vec;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};

fn now_ms() -> u64 {
    time::uptime_us() / 1000
}

/// Sends `count` ICMP echo requests to `dst` on the peer interface and prints RTTs.
pub fn ping(s: &mut Services, dst: Ipv4Address, count: u32) -> Result<(), String> {
    const IDENT: u16 = 0x5844;
    let handle = {
        let i = s.net.peer.as_mut().ok_or("no peer interface")?;
        let mut sock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
        );
        sock.bind(icmp::Endpoint::Ident(IDENT))
            .map_err(|e| alloc::format!("{e}"))?;
        i.sockets.add(sock)
    };
    let mut received = 0;
    for seq in 0..count as u16 {
        let sent_us = time::uptime_us();
        let mut replied = None;
        let mut sent = false;
        while time::uptime_us() - sent_us < 1_000_000 && replied.is_none() {
            // The node keeps being served while the command waits.
            s.poll(false);
            let Some(i) = s.net.peer.as_mut() else {
                break;
            };
            let caps = i.dev_caps();
            let sock = i.sockets.get_mut::<icmp::Socket>(handle);
            let mut just_sent = false;
            if !sent && sock.can_send() {
                let repr = Icmpv4Repr::EchoRequest {
                    ident: IDENT,
                    seq_no: seq,
                    data: b"xdv-ping",
                };
                if let Ok(buf) = sock.send(repr.buffer_len(), IpAddress::Ipv4(dst)) {
                    repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps.checksum);
                    sent = true;
                    just_sent = true;
                }
            }
            while let Ok((payload, _)) = sock.recv() {
                let pkt = Icmpv4Packet::new_checked(payload).ok();
                if let Some(Ok(Icmpv4Repr::EchoReply { seq_no, .. })) =
                    pkt.map(|p| Icmpv4Repr::parse(&p, &caps.checksum))
                    && seq_no == seq
                {
                    replied = Some(time::uptime_us() - sent_us);
                }
            }
            // The request is only queued in the socket: the next poll sends it, so
            // sleep only once it is on the wire (the reply's interrupt ends the sleep).
            if replied.is_none() && !just_sent {
                arch::wait_for_interrupt();
            }
        }
        match replied {
            Some(us) => {
                received += 1;
                println!(
                    "reply from {dst}: seq={seq} time={}.{:03} ms",
                    us / 1000,
                    us % 1000
                );
            }
            None => println!("no reply from {dst}: seq={seq} (timeout 1 s)"),
        }
    }
    if let Some(i) = s.net.peer.as_mut() {
        i.sockets.remove(handle);
    }
    println!("ping {dst}: {count} sent, {received} received");
    Ok(())
}

/// Sends `bytes` of a deterministic pattern to node `peer`'s bulk sink; prints the hash.
pub fn bulk_send(s: &mut Services, peer: u32, bytes: u64) -> Result<(), String> {
    let handle = {
        let i = s.net.peer.as_mut().ok_or("no peer interface")?;
        let h = i.sockets.add(xdv_net::phy::bulk_socket());
        let dst = (
            IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, peer as u8)),
            BULK_PORT,
        );
        let local = 40000 + (now_ms() % 9000) as u16;
        let ctx = i.iface.context();
        i.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(ctx, dst, local)
            .map_err(|e| alloc::format!("connect: {e}"))?;
        h
    };
    let start = time::uptime_us();
    let mut sent = 0u64;
    // The stream is the bulk pattern (`xdv_net::bulk`), sent as slices of one table.
    let pattern = xdv_net::bulk::Pattern::new(16 * 1024);
    let deadline_ms = now_ms() + 120_000;
    let mut progress_ms = now_ms() + 1000;
    // The whole node loop (consensus, peers, the management port) runs at least every
    // millisecond; in between only the peer interface is polled, so acknowledgements
    // free the window and new segments go out without a full iteration each time.
    let mut full_poll_us = 0;
    loop {
        let now_us = time::uptime_us();
        if now_us >= full_poll_us {
            s.poll(false);
            full_poll_us = now_us + 1000;
        } else if let Some(p) = s.net.peer.as_mut() {
            p.poll();
        }
        let i = s.net.peer.as_mut().ok_or("no peer interface")?;
        let sock = i.sockets.get_mut::<tcp::Socket>(handle);
        if now_ms() >= progress_ms {
            progress_ms += 1000;
            let (state, queued) = (sock.state(), sock.send_queue());
            let c = i.dev.nic.counters();
            println!(
                "bulk: {sent} of {bytes} bytes sent ({state}, {queued} queued; nic tx {} rx {} frames)",
                c.tx_frames, c.rx_frames
            );
        }
        if sent == bytes && sock.send_queue() == 0 {
            sock.close();
            break;
        }
        if !sock.is_open() || now_ms() > deadline_ms {
            i.sockets.remove(handle);
            return Err(alloc::format!("connection lost after {sent} bytes"));
        }
        while sock.can_send() && sent < bytes {
            let n = (bytes - sent).min(pattern.span() as u64) as usize;
            let took = sock.send_slice(pattern.at(sent, n)).unwrap_or(0);
            sent += took as u64;
            if took < n {
                break;
            }
        }
    }
    let us = (time::uptime_us() - start).max(1);
    println!(
        "bulk: sent {sent} bytes (the bulk pattern) in {} ms = {} KB/s",
        us / 1000,
        sent * 1_000_000 / us / 1024
    );
    // Keep the socket until our FIN is acknowledged (it may need retransmitting on
    // a lossy network), at most 30 s, then free it.
    let until = now_ms() + 30_000;
    loop {
        s.poll(false);
        let done = s.net.peer.as_mut().is_none_or(|i| {
            matches!(
                i.sockets.get::<tcp::Socket>(handle).state(),
                tcp::State::Closed | tcp::State::TimeWait | tcp::State::FinWait2
            )
        });
        if done || now_ms() > until {
            break;
        }
        crate::arch::wait_for_interrupt();
    }
    if let Some(i) = s.net.peer.as_mut() {
        i.sockets.remove(handle);
    }
    Ok(())
}
