//! A fake peer for tests: a smoltcp stack on the host attached to a spare switch port
//! through the same unix datagram sockets QEMU uses, so a test can open TCP connections
//! to a node's peer port and send it anything — garbage, oversized frames, a `Hello`
//! claiming to be a member, Raft frames without authentication.

use anyhow::{Context, Result, bail};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdv_net::phy::{Nic, NicDevice};

struct DgramNic {
    mac: [u8; 6],
    sock: UnixDatagram,
    remote: PathBuf,
}

impl Nic for DgramNic {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.sock.recv(buf).ok()
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        self.sock.send_to(frame, &self.remote).is_ok()
    }
}

pub struct FakePeer {
    dev: NicDevice<DgramNic>,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
    start: Instant,
    next_local_port: u16,
}

impl FakePeer {
    /// Attaches to switch port `port` (sockets in `switch_dir`) as `ip`/24.
    pub fn attach(switch_dir: &Path, port: u16, ip: [u8; 4]) -> Result<FakePeer> {
        let local = crate::switch::node_socket_path(switch_dir, port);
        let _ = std::fs::remove_file(&local);
        let sock =
            UnixDatagram::bind(&local).with_context(|| format!("binding {}", local.display()))?;
        sock.set_nonblocking(true)?;
        let mac = [0x02, 0x66, 0, 0, 0, port as u8];
        let mut dev = NicDevice::new(DgramNic {
            mac,
            sock,
            remote: crate::switch::port_socket_path(switch_dir, port),
        });
        let start = Instant::now();
        let cfg = Config::new(EthernetAddress(mac).into());
        let mut iface = Interface::new(cfg, &mut dev, SmolInstant::from_millis(0));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24));
        });
        let mut sockets = SocketSet::new(vec![]);
        let tcp = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        ));
        Ok(FakePeer {
            dev,
            iface,
            sockets,
            tcp,
            start,
            next_local_port: 50000,
        })
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_millis(self.start.elapsed().as_millis() as i64)
    }

    /// Drives the stack for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            let now = self.now();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp)
    }

    /// Opens a TCP connection to `ip:port` (closing any previous one).
    pub fn connect(&mut self, ip: [u8; 4], port: u16, timeout: Duration) -> Result<()> {
        self.socket().abort();
        self.run_for(Duration::from_millis(20));
        self.next_local_port += 1;
        let local = self.next_local_port;
        let cx = self.iface.context();
        let remote = (
            IpAddress::Ipv4(Ipv4Address::new(ip[0], ip[1], ip[2], ip[3])),
            port,
        );
        self.sockets
            .get_mut::<tcp::Socket>(self.tcp)
            .connect(cx, remote, local)
            .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
        let end = Instant::now() + timeout;
        while self.socket().state() != tcp::State::Established {
            if Instant::now() > end {
                bail!("no connection to {ip:?}:{port} ({})", self.socket().state());
            }
            self.run_for(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Sends all of `bytes` on the connection.
    pub fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        let mut sent = 0;
        while sent < bytes.len() {
            if Instant::now() > end {
                bail!("sent only {sent} of {} bytes", bytes.len());
            }
            let s = self.socket();
            if !s.may_send() {
                bail!("connection closed after {sent} of {} bytes", bytes.len());
            }
            if s.can_send() {
                sent += s.send_slice(&bytes[sent..]).unwrap_or(0);
            }
            self.run_for(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Waits up to `timeout` for the peer to close or reset the connection.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let s = self.socket();
            if s.can_recv() {
                let _ = s.recv(|b| (b.len(), ()));
            }
            if !s.may_recv() || !s.is_open() {
                return true;
            }
            self.run_for(Duration::from_millis(5));
        }
        false
    }
}
