//! smoltcp `phy::Device` over a [`Nic`]: the kernel implements `Nic` for its
//! virtio-net driver, tests implement it with in-memory wires. Received frames are
//! copied out of the driver's ring into the token, so the ring buffer is reposted at
//! once and a slow socket cannot starve the device of receive buffers.

use alloc::vec;
use alloc::vec::Vec;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Largest Ethernet frame handled (no jumbo frames).
pub const MAX_FRAME_BYTES: usize = 1514;

/// A network interface card as the glue needs it.
pub trait Nic {
    fn mac(&self) -> [u8; 6];
    /// Copies one received frame into `buf` (≥ [`MAX_FRAME_BYTES`]); its length.
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Queues one frame for transmission; false if it was dropped.
    fn send(&mut self, frame: &[u8]) -> bool;
}

/// The smoltcp device.
pub struct NicDevice<N: Nic> {
    pub nic: N,
    rx_buf: Vec<u8>,
}

impl<N: Nic> NicDevice<N> {
    pub fn new(nic: N) -> Self {
        NicDevice {
            nic,
            rx_buf: vec![0; MAX_FRAME_BYTES],
        }
    }
}

pub struct RxToken<'a>(&'a [u8]);

pub struct TxToken<'a, N: Nic>(&'a mut N);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl<N: Nic> phy::TxToken for TxToken<'_, N> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        // A full ring drops the frame; TCP retransmits, the driver counts the drop.
        let _ = self.0.send(&frame);
        r
    }
}

impl<N: Nic> phy::Device for NicDevice<N> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, N>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_, N>)> {
        let n = self.nic.recv(&mut self.rx_buf)?;
        Some((RxToken(&self.rx_buf[..n]), TxToken(&mut self.nic)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_, N>> {
        Some(TxToken(&mut self.nic))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME_BYTES;
        caps.max_burst_size = Some(32);
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::rc::Rc;
    use core::cell::RefCell;
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::socket::tcp;
    use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

    type Wire = Rc<RefCell<VecDeque<Vec<u8>>>>;

    /// One end of an in-memory Ethernet cable.
    struct Cable {
        mac: [u8; 6],
        rx: Wire,
        tx: Wire,
    }

    impl Nic for Cable {
        fn mac(&self) -> [u8; 6] {
            self.mac
        }
        fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
            let f = self.rx.borrow_mut().pop_front()?;
            buf[..f.len()].copy_from_slice(&f);
            Some(f.len())
        }
        fn send(&mut self, frame: &[u8]) -> bool {
            self.tx.borrow_mut().push_back(frame.to_vec());
            true
        }
    }

    fn node(mac: [u8; 6], ip: [u8; 4], rx: Wire, tx: Wire) -> (NicDevice<Cable>, Interface) {
        let mut dev = NicDevice::new(Cable { mac, rx, tx });
        let cfg = Config::new(EthernetAddress(mac).into());
        let mut iface = Interface::new(cfg, &mut dev, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
                .unwrap();
        });
        (dev, iface)
    }

    /// Two smoltcp stacks over two `NicDevice`s resolve ARP and move 200 KB over TCP
    /// intact; time is a test counter, not a clock.
    #[test]
    fn tcp_over_two_devices() {
        let (ab, ba): (Wire, Wire) = Default::default();
        let (mut da, mut ia) = node([2, 0, 0, 0, 0, 1], [10, 0, 0, 1], ba.clone(), ab.clone());
        let (mut db, mut ib) = node([2, 0, 0, 0, 0, 2], [10, 0, 0, 2], ab, ba);
        let mk = || {
            tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 65536]),
                tcp::SocketBuffer::new(vec![0; 65536]),
            )
        };
        let (mut sa, mut sb) = (SocketSet::new(vec![]), SocketSet::new(vec![]));
        let ha = sa.add(mk());
        let hb = sb.add(mk());
        sb.get_mut::<tcp::Socket>(hb).listen(7100).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut sent, mut got) = (0usize, Vec::new());
        for t in 0..20_000u64 {
            let now = Instant::from_millis(t as i64);
            ia.poll(now, &mut da, &mut sa);
            ib.poll(now, &mut db, &mut sb);
            let a = sa.get_mut::<tcp::Socket>(ha);
            if !a.is_open() {
                a.connect(ia.context(), (IpAddress::v4(10, 0, 0, 2), 7100), 49152)
                    .unwrap();
            }
            if a.can_send() && sent < data.len() {
                sent += a.send_slice(&data[sent..]).unwrap();
            }
            let b = sb.get_mut::<tcp::Socket>(hb);
            if b.can_recv() {
                b.recv(|buf| {
                    got.extend_from_slice(buf);
                    (buf.len(), ())
                })
                .unwrap();
            }
            if got.len() == data.len() {
                break;
            }
        }
        assert_eq!(
            got.len(),
            data.len(),
            "only {} of {} bytes arrived",
            got.len(),
            data.len()
        );
        assert!(got == data, "stream corrupted");
    }
}
