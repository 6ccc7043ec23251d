//! XDV networking: the peer wire protocol and the smoltcp glue.
//!
//! Modules:
//! - [`admission`]: who may hold a listener's connection slots and for how long
//!   (read deadline, idle timeout, per-source share, eviction of the incomplete).
//! - [`wire`]: length-prefixed, versioned, checksummed frames carrying a postcard
//!   [`wire::ClusterMessage`]; a streaming [`wire::FrameDecoder`] that never panics.
//! - [`phy`]: a smoltcp `phy::Device` over any [`phy::Nic`] (virtio-net in the kernel,
//!   an in-memory pair in tests).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod admission;
pub mod bulk;
pub mod phy;
pub mod wire;
