//! Network boot, end to end in QEMU: a `cargo xdv pxe`-style tree served by QEMU's
//! user network (its TFTP server), the NIC's iPXE option ROM (BIOS) or OVMF's network
//! stack (UEFI) loading GRUB, GRUB picking the node's configuration by the MAC it
//! booted from and loading the kernel by Multiboot2 with the node's command line and
//! provisioning module, up to the kernel's ready line with its NICs claimed. A MAC
//! the tree does not know gets a clear message and boots the kernel in discovery
//! mode: it reports itself and never becomes a node.

use std::path::Path;
use std::time::Duration;
use xdv::mgmt::Keys;
use xdv::pxe::{self, Firmware, PxeBoot, PxeNode};
use xdv::qemu::{self, Config, NicModel, Vm, temp_dir};
use xdv::testbed::free_port;

const T: Duration = Duration::from_secs(240);

/// A tree for node 1 (booting from the management MAC of node 1), provisioned.
fn tree(dir: &Path, uefi: bool) -> (Keys, pxe::Tree) {
    let keys = Keys::generate(1, 1).unwrap();
    let node = PxeNode {
        id: 1,
        mac: qemu::mgmt_mac(1),
        cmdline: "node=1 ip=10.0.0.1/24".into(),
        module: Some(keys.module(1).unwrap()),
    };
    let kernel = qemu::kernel_image().unwrap();
    let t = pxe::write_tree(&dir.join("tftp"), &kernel, &[node], uefi).unwrap();
    (keys, t)
}

/// Boots node `id` by PXE from `dir/tftp` with `firmware` and NICs of `nic`.
fn boot(dir: &Path, firmware: Firmware, nic: NicModel, id: u16) -> Vm {
    let boot = PxeBoot {
        tftp: dir.join("tftp"),
        firmware,
    };
    let vars = dir.join(format!("node{id}.vars"));
    let cfg = Config::pxe(&boot, nic, id, free_port(), &vars)
        .unwrap()
        .smp(1);
    Vm::spawn(&cfg).unwrap()
}

fn assert_booted(vm: &mut Vm, nic: &str) {
    vm.wait_for("xdv: ready node=1", T).unwrap();
    // The boot's own lines follow the ready line; the prompt follows them.
    vm.wait_for("xdv> ", T).unwrap();
    let out = vm.output();
    for want in [
        "xdv: pxe: GRUB booted from MAC 52:54:00:00:01:01",
        "xdv: pxe: booting node 1",
        "booted via Multiboot2, cmdline \"node=1 ip=10.0.0.1/24\"",
        "xdv: provision: node 1 of cluster",
        &format!("net: {nic} "),
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
    assert!(!out.contains("refused"), "a device was refused:\n{out}");
}

#[test]
fn bios_pxe_boots_a_provisioned_node_and_an_unknown_mac_only_reports_itself() {
    let dir = temp_dir("pxe-bios").unwrap();
    tree(&dir, false);
    let mut vm = boot(&dir, Firmware::Bios, NicModel::Virtio, 1);
    assert_booted(&mut vm, "virtio-net");
    vm.kill();

    // Node 9 is not in the tree: a message naming its MAC, then the kernel in
    // discovery mode (no module, no keys): it reports itself and never joins.
    let mut stranger = boot(&dir, Firmware::Bios, NicModel::Virtio, 9);
    stranger
        .wait_for(
            "xdv: discovery: unprovisioned, reporting as MAC 52:54:00:00:01:09",
            T,
        )
        .unwrap();
    let out = stranger.output();
    assert!(
        out.contains("xdv: pxe: unknown MAC 52:54:00:00:01:09") && out.contains("does not join"),
        "{out}"
    );
    assert!(
        out.contains("virtio-net, bios"),
        "no hardware summary:\n{out}"
    );
    assert!(
        !out.contains("xdv: ready") && !out.contains("xdv: provision:"),
        "an unknown MAC booted XDV as a node:\n{out}"
    );
    stranger.kill();
}

#[test]
fn bios_pxe_boots_through_an_e1000e() {
    let dir = temp_dir("pxe-e1000e").unwrap();
    tree(&dir, false);
    let mut vm = boot(&dir, Firmware::Bios, NicModel::E1000e, 1);
    assert_booted(&mut vm, "e1000e");
}

#[test]
fn uefi_pxe_boots_a_provisioned_node() {
    let dir = temp_dir("pxe-uefi").unwrap();
    let (_, t) = tree(&dir, true);
    assert!(t.firmwares.contains(&Firmware::Uefi), "no UEFI images made");
    // virtio-net's modern BAR is 64-bit: OVMF places it above 512 GiB, which the
    // kernel must map (a BIOS boot never exercises that).
    let mut vm = boot(&dir, Firmware::Uefi, NicModel::Virtio, 1);
    assert_booted(&mut vm, "virtio-net");
}
