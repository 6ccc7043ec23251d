//! An accelerator attached to a booted node: QEMU's `ivshmem-doorbell` connects to
//! the host device (`xdv::accel`), gets its shared memory and eventfds, and the
//! kernel finds the PCI function.

use std::time::{Duration, Instant};
use xdv::qemu::{Config, Vm, start_accel, temp_dir};
use xdv_accel::regs::Kind;

const T: Duration = Duration::from_secs(15);

#[test]
fn qemu_attaches_the_ivshmem_device_and_the_kernel_lists_it() {
    let t0 = Instant::now();
    let sock = temp_dir("accel-qemu").unwrap().join("q.sock");
    let dev = start_accel(Kind::Q, &sock).unwrap();
    let cfg = Config::kernel("").unwrap().with_accel(&sock);
    let mut vm = Vm::spawn(&cfg).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    let out = vm.command("pci", "xdv> ", T).unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("1af4:1110"))
        .unwrap_or_else(|| panic!("no ivshmem function (1af4:1110) in `pci`:\n{out}"));
    eprintln!("kernel `pci`: {line}");
    // BAR2 is the 4 MiB shared memory.
    assert!(line.contains("bar2=mem64"), "{line}");
    // QEMU took the setup: it is the device's one client.
    let status = dev.ctl("status").unwrap();
    assert!(status.contains("clients=1"), "{status}");
    vm.kill();
    let end = Instant::now() + Duration::from_secs(2);
    while !dev.ctl("status").unwrap().contains("clients=0") {
        assert!(Instant::now() < end, "QEMU's exit not noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("accel QEMU smoke test took {:?}", t0.elapsed());
}
