//! Fuzz bodies (run by `fuzz/` with libFuzzer and by the proptests here): a hostile
//! device writes arbitrary bytes into its completion ring, its indices and its
//! status, and the driver must fail the device, never panic, and keep its own
//! invariants.

use crate::device::DeviceSide;
use crate::driver::{Driver, Event, Request, State};
use crate::regs::{self, DeviceMemory, Kind, Layout, MemWindow, off};
use crate::ring::Opcode;

/// `bytes`: the first 12 bytes are the CQ tail, the STATUS word and the GENERATION
/// word the device claims; the rest overwrite the completion ring and the start of
/// the result area of the chunks in use.
pub fn completion_ring(bytes: &[u8]) {
    let mem = MemWindow::new(regs::STD_WINDOW_BYTES);
    let mut dev = DeviceSide::new(&mem, Kind::Q, 16, 4, 4, 0);
    let mut drv = Driver::start(&mem, 0).expect("a fresh device probes");
    let _ = dev.take(&mem);
    assert!(drv.poll(&mem, 1).is_empty());
    assert!(drv.is_ready());
    for tag in 0..3u64 {
        let req = Request {
            opcode: Opcode::Run,
            slots: &[],
            job: &[1, 2, 3],
            seed: tag,
            budget: 0,
            tag,
            timeout_ms: 100,
        };
        drv.submit(&mem, &req, 1, &mut || {})
            .expect("room for three");
    }
    let (taken, _) = dev.take(&mem);
    assert_eq!(taken.len(), 3);
    let word = |i: usize| {
        let mut w = [0u8; 4];
        for (k, b) in w.iter_mut().enumerate() {
            *b = bytes.get(i * 4 + k).copied().unwrap_or(0);
        }
        u32::from_le_bytes(w)
    };
    let rest = bytes.get(12..).unwrap_or(&[]);
    let l = Layout::STANDARD;
    let cq_bytes = l.cq_entries as usize * regs::CQE_BYTES;
    mem.write_bytes(l.cq_off as usize, &rest[..rest.len().min(cq_bytes)]);
    if rest.len() > cq_bytes {
        let more = &rest[cq_bytes..];
        mem.write_bytes(
            l.chunk(0) + regs::MAX_JOB_BYTES,
            &more[..more.len().min(4096)],
        );
    }
    mem.write32(off::CQ_TAIL, word(0));
    mem.write32(off::STATUS, word(1) % 8);
    mem.write32(off::GENERATION, word(2) % 4);
    let mut ended = 0;
    for t in [2u64, 50, 200, 1500, 3000] {
        for e in drv.poll(&mem, t) {
            match e {
                Event::Done { .. } | Event::Lost { .. } => ended += 1,
                Event::Failed(_) | Event::Recovered { .. } => {}
            }
        }
        assert!(drv.in_flight() <= 3);
        assert!(drv.free_slots() <= 4);
        if let State::Failed { .. } = drv.state() {
            assert_eq!(drv.in_flight(), 0, "a failed device holds no commands");
            assert_eq!(drv.offered_slots(), 0);
        }
    }
    // Every command ended exactly once, one way or another (the watchdog at 100 ms
    // guarantees it).
    assert_eq!(ended + drv.in_flight(), 3);
    assert_eq!(drv.in_flight(), 0);
}
