//! Networking glue: the NICs that `devices` claimed (virtio-net, e1000e), as smoltcp
//! interfaces, polled by the kernel's main loop.
//!
//! NIC roles by MAC (set by `cargo xdv up`): `52:54:00:00:00:NN` is the peer NIC
//! (switch, `ip=` or DHCP), `52:54:00:00:01:NN` the management NIC (QEMU user
//! networking, 10.0.2.15/24). With one NIC of unknown MAC it is the peer NIC.

#![deny(unsafe_code)]

use crate::{println, time};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use xdv_drivers::e1000e::E1000e;
use xdv_drivers::virtio::{Counters, VirtioNet};
use xdv_net::phy::{Nic, NicDevice};

/// The NIC models the kernel drives, chosen by PCI id in `devices`, behind one
/// smoltcp device.
#[expect(
    clippy::large_enum_variant,
    reason = "at most two NICs per node, each built once at boot: 216 bytes of slack beats a heap hop per frame"
)]
pub enum KernelNic {
    Virtio(VirtioNet),
    E1000e(E1000e),
}

impl KernelNic {
    pub fn model(&self) -> &'static str {
        match self {
            KernelNic::Virtio(_) => "virtio-net",
            KernelNic::E1000e(_) => "e1000e",
        }
    }
    pub fn counters(&self) -> Counters {
        match self {
            KernelNic::Virtio(n) => n.counters,
            KernelNic::E1000e(n) => n.counters,
        }
    }
    pub fn link_up(&self) -> bool {
        match self {
            KernelNic::Virtio(n) => n.link_up(),
            KernelNic::E1000e(n) => n.link_up(),
        }
    }
    /// Whether received frames interrupt (else they wait for the next timer wake-up).
    pub fn rx_interrupts(&self) -> bool {
        match self {
            KernelNic::Virtio(n) => n.rx_interrupts(),
            KernelNic::E1000e(n) => n.rx_interrupts(),
        }
    }
    /// `(rx posted, rx size, tx in flight, tx size)`.
    pub fn rings(&mut self) -> (usize, u16, usize, u16) {
        match self {
            KernelNic::Virtio(n) => n.rings(),
            KernelNic::E1000e(n) => n.rings(),
        }
    }
}

impl Nic for KernelNic {
    fn mac(&self) -> [u8; 6] {
        match self {
            KernelNic::Virtio(n) => n.mac(),
            KernelNic::E1000e(n) => n.mac(),
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let copy = |f: &[u8]| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        };
        match self {
            KernelNic::Virtio(n) => n.receive(copy),
            KernelNic::E1000e(n) => n.receive(copy),
        }
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        let fill = |b: &mut [u8]| b.copy_from_slice(frame);
        match self {
            KernelNic::Virtio(n) => n.transmit(frame.len(), fill),
            KernelNic::E1000e(n) => n.transmit(frame.len(), fill),
        }
    }
}

/// One smoltcp interface over one NIC.
pub struct Iface {
    pub name: &'static str,
    pub dev: NicDevice<KernelNic>,
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

pub fn now() -> Instant {
    Instant::from_micros(time::uptime_us() as i64)
}

fn make_iface(
    name: &'static str,
    nic: KernelNic,
    ip: Option<(Ipv4Address, u8)>,
    gw: Option<Ipv4Address>,
) -> Iface {
    let mac = nic.mac();
    let mut dev = NicDevice::new(nic);
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

impl Net {
    /// Interfaces over the claimed NICs: MAC `..:01:NN` is the management NIC (QEMU
    /// user networking), the first other one the peer NIC (`ip=` or DHCP).
    pub fn new(nics: Vec<KernelNic>, peer_ip: Option<(Ipv4Address, u8)>) -> Net {
        let (mut peer, mut mgmt) = (None, None);
        for nic in nics {
            let mac = nic.mac();
            if mac[4] == 0x01 && mgmt.is_none() {
                let ip = Some((Ipv4Address::new(10, 0, 2, 15), 24));
                mgmt = Some(make_iface(
                    "mgmt",
                    nic,
                    ip,
                    Some(Ipv4Address::new(10, 0, 2, 2)),
                ));
            } else if peer.is_none() {
                peer = Some(make_iface("peer", nic, peer_ip, None));
            }
        }
        Net { peer, mgmt }
    }

    /// Polls every interface (network timers, receive, transmit).
    pub fn poll(&mut self) {
        for i in [self.peer.as_mut(), self.mgmt.as_mut()]
            .into_iter()
            .flatten()
        {
            i.poll();
        }
    }

    /// Time until smoltcp's next timer on any interface (retransmit, delayed ACK,
    /// keep-alive, DHCP), in µs; `None` if none is pending.
    pub fn poll_delay_us(&mut self) -> Option<u64> {
        let now = now();
        [self.peer.as_mut(), self.mgmt.as_mut()]
            .into_iter()
            .flatten()
            .filter_map(|i| i.iface.poll_delay(now, &i.sockets))
            .map(|d| d.total_micros())
            .min()
    }

    pub fn print(&mut self) {
        let net = self;
        for i in [net.peer.as_mut(), net.mgmt.as_mut()].into_iter().flatten() {
            let c = i.dev.nic.counters();
            let ip = i
                .ipv4()
                .map(|a| alloc::format!("{a}"))
                .unwrap_or_else(|| String::from("(dhcp pending)"));
            println!(
                "{}: {} mac {} ip {ip} link {}",
                i.name,
                i.dev.nic.model(),
                EthernetAddress(i.dev.nic.mac()),
                if i.dev.nic.link_up() { "up" } else { "down" }
            );
            println!(
                "  rx {} frames {} bytes, tx {} frames {} bytes, drops rx {} tx {}, errors {}",
                c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, c.rx_drops, c.tx_drops, c.errors
            );
            let (rx_posted, rx_size, tx_posted, tx_size) = i.dev.nic.rings();
            println!(
                "  rings: rx {rx_posted}/{rx_size} posted, tx {tx_posted}/{tx_size} in flight"
            );
            println!(
                "  receive: {}",
                if i.dev.nic.rx_interrupts() {
                    "interrupt-driven (MSI-X, armed while the ring is empty)"
                } else {
                    "polled on the timer"
                }
            );
        }
        let irqs = crate::arch::idt::NIC_IRQS
            .iter()
            .map(|c| c.load(core::sync::atomic::Ordering::Relaxed));
        println!(
            "net: receive interrupts taken per NIC vector: {:?}",
            irqs.collect::<Vec<_>>()
        );
        if net.peer.is_none() && net.mgmt.is_none() {
            println!("net: no NIC (virtio-net or e1000e)");
        }
    }
}

impl Iface {
    pub fn dev_caps(&self) -> smoltcp::phy::DeviceCapabilities {
        use smoltcp::phy::Device;
        self.dev.capabilities()
    }
}
