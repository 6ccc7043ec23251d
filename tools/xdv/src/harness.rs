//! QEMU harness: build the kernel image, boot it, capture serial, enforce timeouts.
//! (Being written.)
