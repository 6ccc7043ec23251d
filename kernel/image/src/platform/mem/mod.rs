//! Physical memory: the frame allocator and the kernel heap.
pub mod frames;
pub mod heap;
pub mod regions;
