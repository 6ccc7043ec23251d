//! Host side of the Q and Φ accelerators on QEMU (`docs/accel.md`): the ivshmem
//! server a node's `ivshmem-doorbell` device connects to ([`ivshmem`]), and the
//! device process serving the ring protocol over its shared memory ([`daemon`]).
//! The unsafe code (memfd, mmap, eventfd, SCM_RIGHTS) is all in [`ivshmem`].

pub mod daemon;
pub mod ivshmem;

pub use daemon::{DeviceGuard, Spec, ctl, ctl_path, parse_kind, spawn};

/// QEMU arguments attaching the device served on `socket` as an `ivshmem-doorbell`
/// with one vector per interrupt cause.
pub fn qemu_args(socket: &std::path::Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,path={},id=accel0", socket.display()),
        "-device".into(),
        format!(
            "ivshmem-doorbell,chardev=accel0,vectors={}",
            xdv_accel::regs::VECTORS
        ),
    ]
}
