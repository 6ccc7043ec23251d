//! XDV networking: the peer wire protocol and the smoltcp glue.
//!
//! Modules:
//! - [`wire`]: length-prefixed, versioned, checksummed frames carrying a postcard
//!   [`wire::ClusterMessage`]; a streaming [`wire::FrameDecoder`] that never panics.
//! - [`phy`]: a smoltcp `phy::Device` over any [`phy::Nic`] (virtio-net in the kernel,
//!   an in-memory pair in tests).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod phy;
pub mod wire;
