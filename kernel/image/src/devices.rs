//! Device discovery and claims, in one place: PCI enumeration at boot, then each
//! driver claims the functions it recognises (virtio-net and e1000e NICs, accelerators).
//! What was found and what claimed it is kept for the `pci` console command.
#![deny(unsafe_code)]

use crate::net::KernelNic;
use crate::platform::pci::{Cfg, KernelPlatform};
use crate::println;
use alloc::string::String;
use alloc::vec::Vec;
use smoltcp::wire::EthernetAddress;
use xdv_drivers::e1000e;
use xdv_drivers::ivshmem::{self, Ivshmem};
use xdv_drivers::pci::{self, PciDevice};
use xdv_drivers::virtio::{self, VirtioNet};

/// Accelerators (ivshmem-doorbell functions) the kernel drives, at most this many
/// (two MSI-X vectors each).
pub const MAX_ACCELS: usize = crate::arch::idt::DEVICE_VECTORS / 2;

/// An accelerator transport found at boot: its PCI address, the mapped function and
/// its first MSI-X vector.
pub struct AccelFn {
    pub name: String,
    pub dev: Ivshmem,
    pub vector_base: u8,
}

/// What the boot found on the buses.
pub struct Devices {
    pub functions: Vec<(PciDevice, Option<String>)>,
    pub mode: &'static str,
}

/// Enumerates PCI and claims every virtio-net NIC and every ivshmem-doorbell function
/// (accelerators); returns the list, the NICs and the accelerator transports.
pub fn discover(ecam: Option<(u64, u16, u8, u8)>) -> (Devices, Vec<KernelNic>, Vec<AccelFn>) {
    let cfg = Cfg::new(ecam);
    let (first, last, mode) = cfg.buses();
    let found = pci::enumerate(cfg.space(), first, last);
    log::info!("pci: {} functions via {mode}", found.len());
    let mut nics = Vec::new();
    let mut accels = Vec::new();
    let mut functions = Vec::new();
    let apic = crate::arch::lapic::id();
    for mut d in found {
        let mut claim = None;
        let is_virtio_net =
            d.vendor == virtio::VIRTIO_VENDOR && virtio::NET_DEVICE_IDS.contains(&d.device);
        let is_e1000e = d.vendor == e1000e::VENDOR && e1000e::DEVICE_IDS.contains(&d.device);
        let is_accel = d.vendor == ivshmem::VENDOR && d.device == ivshmem::DEVICE;
        // Only what a driver claims is sized (sizing rewrites the BARs, and under
        // emulation each change of a function's decoding rebuilds the memory map).
        // A NIC's decoding and bus mastering go on in the write that ends the sizing.
        if is_virtio_net || is_e1000e {
            pci::size_bars_then_enable(cfg.space(), &mut d, true);
        } else if is_accel {
            pci::size_bars(cfg.space(), &mut d);
        }
        if is_virtio_net {
            let msix = nic_msix(&cfg, &d, apic, nics.len());
            match VirtioNet::new(cfg.space(), &d, &KernelPlatform, msix.is_some()) {
                Ok(nic) => {
                    let mac = nic.mac();
                    let wake = match (msix, nic.rx_interrupts()) {
                        (Some(v), true) => alloc::format!("receive interrupt {v:#x}"),
                        _ => String::from("polled on the timer"),
                    };
                    log::info!(
                        "net: virtio-net {} mac {} ({wake})",
                        d.bdf,
                        EthernetAddress(mac)
                    );
                    claim = Some(alloc::format!(
                        "virtio-net {}, {wake}",
                        EthernetAddress(mac)
                    ));
                    nics.push(KernelNic::Virtio(nic));
                }
                Err(e) => log::error!("net: virtio-net {} refused: {e}", d.bdf),
            }
        }
        if is_e1000e {
            claim = Some(claim_e1000e(&cfg, &d, apic, &mut nics));
        }
        if is_accel {
            claim = Some(claim_accel(&cfg, &d, apic, &mut accels));
        }
        functions.push((d, claim));
    }
    (Devices { functions, mode }, nics, accels)
}

/// Programs MSI-X entry 0 of NIC number `index` to its receive vector; `None` (the NIC
/// is then polled on the timer) if there is no vector left or no usable MSI-X table.
fn nic_msix(cfg: &Cfg, d: &PciDevice, apic: u32, index: usize) -> Option<u8> {
    use crate::arch::idt::{NIC_VECTORS, VECTOR_NIC_BASE};
    if index >= NIC_VECTORS {
        log::warn!(
            "net: {} polled: at most {NIC_VECTORS} NICs interrupt",
            d.bdf
        );
        return None;
    }
    let vector = VECTOR_NIC_BASE + index as u8;
    match pci::program_msix(cfg.space(), d, &KernelPlatform, apic, &[vector]) {
        Ok(()) => Some(vector),
        Err(e) => {
            log::warn!("net: {} polled on the timer: {e}", d.bdf);
            None
        }
    }
}

fn claim_e1000e(cfg: &Cfg, d: &PciDevice, apic: u32, nics: &mut Vec<KernelNic>) -> String {
    match e1000e::probe(d, cfg.space(), &KernelPlatform) {
        Ok(mut nic) => {
            let mac = EthernetAddress(nic.mac());
            // Receive queue 0 on MSI-X entry 0, as virtio-net's receive queue.
            let wake = match nic_msix(cfg, d, apic, nics.len()) {
                Some(v) => {
                    nic.enable_rx_interrupts();
                    alloc::format!("receive interrupt {v:#x}")
                }
                None => String::from("polled on the timer"),
            };
            log::info!("net: e1000e {} mac {mac} ({wake})", d.bdf);
            nics.push(KernelNic::E1000e(nic));
            alloc::format!("e1000e {mac}, {wake}")
        }
        Err(e) => {
            log::error!("net: e1000e {} refused: {e}", d.bdf);
            alloc::format!("e1000e, refused: {e}")
        }
    }
}

fn claim_accel(cfg: &Cfg, d: &PciDevice, apic: u32, accels: &mut Vec<AccelFn>) -> String {
    if accels.len() >= MAX_ACCELS {
        log::warn!(
            "accel: {} ignored: at most {MAX_ACCELS} accelerators",
            d.bdf
        );
        return alloc::format!("ivshmem, ignored (over {MAX_ACCELS} accelerators)");
    }
    let base = crate::arch::idt::VECTOR_DEVICE_BASE + 2 * accels.len() as u8;
    let vectors = [
        base + xdv_accel::regs::VECTOR_COMPLETION as u8,
        base + xdv_accel::regs::VECTOR_FAULT as u8,
    ];
    match Ivshmem::new(cfg.space(), d, &KernelPlatform, apic, &vectors) {
        Ok(dev) => {
            let name = alloc::format!("{}", d.bdf);
            log::info!(
                "accel: ivshmem {} peer {} vectors {:#x}+2",
                d.bdf,
                dev.own_peer,
                base
            );
            accels.push(AccelFn {
                name,
                dev,
                vector_base: base,
            });
            alloc::format!(
                "accelerator transport (ivshmem), vectors {base:#x}-{:#x}",
                base + 1
            )
        }
        Err(e) => {
            log::error!("accel: ivshmem {} refused: {e}", d.bdf);
            alloc::format!("ivshmem, refused: {e}")
        }
    }
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
