//! Devices and networking glue: PCI enumeration at boot, virtio-net NICs as smoltcp
//! interfaces, and the network poll that the console's idle loop drives.
//!
//! NIC roles by MAC (set by `cargo xdv up`): `52:54:00:00:00:NN` is the peer NIC
//! (switch, `ip=` or DHCP), `52:54:00:00:01:NN` the management NIC (QEMU user
//! networking, 10.0.2.15/24). With one NIC of unknown MAC it is the peer NIC.

use crate::mem::frames;
use crate::{arch, println, time};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, icmp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address};
use spin::Mutex;
use xdv_drivers::pci::{self, ConfigSpace, Ecam, PciDevice, PortIo};
use xdv_drivers::virtio::{self, Platform, VirtioNet};
use xdv_net::phy::{Nic, NicDevice};

/// The kernel's DMA and MMIO services for drivers.
pub struct KernelPlatform;

impl Platform for KernelPlatform {
    fn dma_alloc(&self, bytes: usize) -> Option<(u64, *mut u8)> {
        let pages = bytes.div_ceil(frames::FRAME_BYTES as usize).max(1);
        let phys = frames::alloc_zeroed(pages)?;
        Some((phys, phys as *mut u8))
    }

    fn map_mmio(&self, phys: u64, len: u64) -> Option<usize> {
        arch::paging::map_mmio(phys, len).map(|a| a as usize)
    }
}

enum Cfg {
    Ecam(Ecam),
    Port(PortIo),
}

impl Cfg {
    fn space(&self) -> &dyn ConfigSpace {
        match self {
            Cfg::Ecam(e) => e,
            Cfg::Port(p) => p,
        }
    }
}

static PCI: Mutex<Vec<PciDevice>> = Mutex::new(Vec::new());
static PCI_MODE: Mutex<&'static str> = Mutex::new("none");

pub struct VirtioNic(pub VirtioNet);

impl Nic for VirtioNic {
    fn mac(&self) -> [u8; 6] {
        self.0.mac()
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.0.receive(|f| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        })
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        self.0.transmit(frame.len(), |b| b.copy_from_slice(frame))
    }
}

/// One smoltcp interface over one NIC.
pub struct Iface {
    pub name: &'static str,
    pub dev: NicDevice<VirtioNic>,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
}

impl Iface {
    pub fn poll(&mut self) {
        let now = now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        if let Some(h) = self.dhcp {
            let event = self.sockets.get_mut::<dhcpv4::Socket>(h).poll();
            match event {
                Some(dhcpv4::Event::Configured(c)) => {
                    self.iface.update_ip_addrs(|a| {
                        a.clear();
                        let _ = a.push(IpCidr::Ipv4(c.address));
                    });
                    if let Some(r) = c.router {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    log::info!("net: {} got {} by DHCP", self.name, c.address);
                }
                Some(dhcpv4::Event::Deconfigured) => {
                    self.iface.update_ip_addrs(|a| a.clear());
                    log::warn!("net: {} lost its DHCP lease", self.name);
                }
                None => {}
            }
        }
    }

    pub fn ipv4(&self) -> Option<Ipv4Address> {
        self.iface
            .ip_addrs()
            .iter()
            .map(|c| match c.address() {
                IpAddress::Ipv4(a) => a,
            })
            .next()
    }
}

pub struct Net {
    pub peer: Option<Iface>,
    pub mgmt: Option<Iface>,
}

pub static NET: Mutex<Option<Net>> = Mutex::new(None);

pub fn now() -> Instant {
    Instant::from_micros(time::uptime_us() as i64)
}

fn make_iface(
    name: &'static str,
    nic: VirtioNet,
    ip: Option<(Ipv4Address, u8)>,
    gw: Option<Ipv4Address>,
) -> Iface {
    let mac = nic.mac();
    let mut dev = NicDevice::new(VirtioNic(nic));
    let mut cfg = Config::new(EthernetAddress(mac).into());
    cfg.random_seed =
        u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x58, 0x44]);
    let mut iface = Interface::new(cfg, &mut dev, now());
    let mut sockets = SocketSet::new(vec![]);
    let mut dhcp = None;
    match ip {
        Some((addr, prefix)) => {
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), prefix));
            });
            if let Some(g) = gw {
                let _ = iface.routes_mut().add_default_ipv4_route(g);
            }
        }
        None => dhcp = Some(sockets.add(dhcpv4::Socket::new())),
    }
    Iface {
        name,
        dev,
        iface,
        sockets,
        dhcp,
    }
}

/// Enumerates PCI and brings up every virtio-net NIC.
pub fn init(ecam: Option<(u64, u16, u8, u8)>) {
    let cfg = match ecam {
        Some((base, 0, first, last)) => {
            let len = (u64::from(last - first) + 1) << 20;
            match arch::paging::map_mmio(base, len) {
                // SAFETY: the MCFG window for buses first..=last, just mapped uncached.
                Some(v) => Cfg::Ecam(unsafe { Ecam::new(v as usize, first, last) }),
                None => Cfg::Port(PortIo),
            }
        }
        _ => Cfg::Port(PortIo),
    };
    let (first, last, mode) = match &cfg {
        Cfg::Ecam(e) => (e.start_bus, e.end_bus.min(15), "ECAM"),
        Cfg::Port(_) => (0, 15, "port I/O"),
    };
    let devices = pci::enumerate(cfg.space(), first, last);
    log::info!("pci: {} functions via {mode}", devices.len());
    let (mut peer, mut mgmt) = (None, None);
    for d in devices
        .iter()
        .filter(|d| d.vendor == virtio::VIRTIO_VENDOR && virtio::NET_DEVICE_IDS.contains(&d.device))
    {
        pci::enable(cfg.space(), d, true);
        match VirtioNet::new(cfg.space(), d, &KernelPlatform) {
            Ok(nic) => {
                let mac = nic.mac();
                log::info!("net: virtio-net {} mac {}", d.bdf, EthernetAddress(mac));
                if mac[4] == 0x01 && mgmt.is_none() {
                    let ip = Some((Ipv4Address::new(10, 0, 2, 15), 24));
                    mgmt = Some(make_iface(
                        "mgmt",
                        nic,
                        ip,
                        Some(Ipv4Address::new(10, 0, 2, 2)),
                    ));
                } else if peer.is_none() {
                    let ip = crate::options()
                        .ip
                        .map(|c| (Ipv4Address::from(c.addr), c.prefix));
                    peer = Some(make_iface("peer", nic, ip, None));
                }
            }
            Err(e) => log::error!("net: virtio-net {} refused: {e}", d.bdf),
        }
    }
    *PCI.lock() = devices;
    *PCI_MODE.lock() = mode;
    *NET.lock() = Some(Net { peer, mgmt });
}

/// Polls every interface (network timers, receive, transmit).
pub fn poll() {
    if let Some(net) = NET.lock().as_mut() {
        for i in [net.peer.as_mut(), net.mgmt.as_mut()].into_iter().flatten() {
            i.poll();
        }
    }
    crate::transport::poll();
    crate::raft::poll();
}

pub fn print_pci() {
    let devs = PCI.lock();
    println!("pci: {} functions ({})", devs.len(), *PCI_MODE.lock());
    for d in devs.iter() {
        println!("  {d}");
    }
}

pub fn print_net() {
    let guard = NET.lock();
    let Some(net) = guard.as_ref() else {
        println!("net: not initialised");
        return;
    };
    for i in [net.peer.as_ref(), net.mgmt.as_ref()].into_iter().flatten() {
        let c = i.dev.nic.0.counters;
        let ip = i
            .ipv4()
            .map(|a| alloc::format!("{a}"))
            .unwrap_or_else(|| String::from("(dhcp pending)"));
        println!(
            "{}: mac {} ip {ip} link {}",
            i.name,
            EthernetAddress(i.dev.nic.mac()),
            if i.dev.nic.0.link_up() { "up" } else { "down" }
        );
        println!(
            "  rx {} frames {} bytes, tx {} frames {} bytes, drops rx {} tx {}, errors {}",
            c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, c.rx_drops, c.tx_drops, c.errors
        );
        let (rx_posted, rx_size, tx_posted, tx_size) = i.dev.nic.0.rings();
        println!("  rings: rx {rx_posted}/{rx_size} posted, tx {tx_posted}/{tx_size} in flight");
    }
    if net.peer.is_none() && net.mgmt.is_none() {
        println!("net: no virtio-net device");
    }
    drop(guard);
    if let Some(line) = crate::transport::bulk_status() {
        println!("{line}");
    }
}

/// Sends `count` ICMP echo requests to `dst` on the peer interface and prints RTTs.
pub fn ping(dst: Ipv4Address, count: u32) -> Result<(), String> {
    const IDENT: u16 = 0x5844;
    let handle = {
        let mut guard = NET.lock();
        let i = guard
            .as_mut()
            .and_then(|n| n.peer.as_mut())
            .ok_or("no peer interface")?;
        let mut s = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]),
        );
        s.bind(icmp::Endpoint::Ident(IDENT))
            .map_err(|e| alloc::format!("{e}"))?;
        i.sockets.add(s)
    };
    let mut received = 0;
    for seq in 0..count as u16 {
        let sent_us = time::uptime_us();
        let mut replied = None;
        while time::uptime_us() - sent_us < 1_000_000 && replied.is_none() {
            let mut guard = NET.lock();
            let Some(i) = guard.as_mut().and_then(|n| n.peer.as_mut()) else {
                break;
            };
            i.poll();
            let caps = i.dev_caps();
            let s = i.sockets.get_mut::<icmp::Socket>(handle);
            if seq_not_sent(s, seq) && s.can_send() {
                let repr = Icmpv4Repr::EchoRequest {
                    ident: IDENT,
                    seq_no: seq,
                    data: b"xdv-ping",
                };
                if let Ok(buf) = s.send(repr.buffer_len(), IpAddress::Ipv4(dst)) {
                    repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps.checksum);
                    mark_sent(seq);
                }
            }
            while let Ok((payload, _)) = s.recv() {
                let pkt = Icmpv4Packet::new_checked(payload).ok();
                if let Some(Ok(Icmpv4Repr::EchoReply { seq_no, .. })) =
                    pkt.map(|p| Icmpv4Repr::parse(&p, &caps.checksum))
                    && seq_no == seq
                {
                    replied = Some(time::uptime_us() - sent_us);
                }
            }
            drop(guard);
            if replied.is_none() {
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
    if let Some(i) = NET.lock().as_mut().and_then(|n| n.peer.as_mut()) {
        i.sockets.remove(handle);
    }
    println!("ping {dst}: {count} sent, {received} received");
    Ok(())
}

static LAST_SENT: Mutex<Option<u16>> = Mutex::new(None);

fn seq_not_sent(_s: &icmp::Socket, seq: u16) -> bool {
    *LAST_SENT.lock() != Some(seq)
}

fn mark_sent(seq: u16) {
    *LAST_SENT.lock() = Some(seq);
}

impl Iface {
    fn dev_caps(&self) -> smoltcp::phy::DeviceCapabilities {
        use smoltcp::phy::Device;
        self.dev.capabilities()
    }
}
