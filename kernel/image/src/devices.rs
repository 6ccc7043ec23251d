//! Device discovery and claims, in one place: PCI enumeration at boot, then each
//! driver claims the functions it recognises (today virtio-net; accelerators next).
//! What was found and what claimed it is kept for the `pci` console command.
#![deny(unsafe_code)]

use crate::platform::pci::{Cfg, KernelPlatform};
use crate::println;
use alloc::string::String;
use alloc::vec::Vec;
use smoltcp::wire::EthernetAddress;
use xdv_drivers::pci::{self, PciDevice};
use xdv_drivers::virtio::{self, VirtioNet};

/// What the boot found on the buses.
pub struct Devices {
    pub functions: Vec<(PciDevice, Option<String>)>,
    pub mode: &'static str,
}

/// Enumerates PCI and claims every virtio-net NIC; returns the list and the NICs.
pub fn discover(ecam: Option<(u64, u16, u8, u8)>) -> (Devices, Vec<VirtioNet>) {
    let cfg = Cfg::new(ecam);
    let (first, last, mode) = cfg.buses();
    let found = pci::enumerate(cfg.space(), first, last);
    log::info!("pci: {} functions via {mode}", found.len());
    let mut nics = Vec::new();
    let mut functions = Vec::new();
    for d in found {
        let mut claim = None;
        if d.vendor == virtio::VIRTIO_VENDOR && virtio::NET_DEVICE_IDS.contains(&d.device) {
            pci::enable(cfg.space(), &d, true);
            match VirtioNet::new(cfg.space(), &d, &KernelPlatform) {
                Ok(nic) => {
                    let mac = nic.mac();
                    log::info!("net: virtio-net {} mac {}", d.bdf, EthernetAddress(mac));
                    claim = Some(alloc::format!("virtio-net {}", EthernetAddress(mac)));
                    nics.push(nic);
                }
                Err(e) => log::error!("net: virtio-net {} refused: {e}", d.bdf),
            }
        }
        functions.push((d, claim));
    }
    (Devices { functions, mode }, nics)
}

impl Devices {
    /// `pci` console command.
    pub fn print(&self) {
        println!("pci: {} functions ({})", self.functions.len(), self.mode);
        for (d, claim) in &self.functions {
            match claim {
                Some(c) => println!("  {d}  [{c}]"),
                None => println!("  {d}"),
            }
        }
    }
}
