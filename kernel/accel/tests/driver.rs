//! The driver against the device side of the protocol over plain memory, and against
//! a device that lies.

use proptest::prelude::*;
use xdv_accel::device::DeviceSide;
use xdv_accel::driver::{Driver, Event, Fault, RESET_INTERVAL_MS, Request, SubmitError};
use xdv_accel::regs::{
    self, CQE_BYTES, DeviceError, DeviceMemory, Kind, Layout, MemWindow, ProbeError, off,
};
use xdv_accel::ring::{Completion, CqStatus, Opcode};

fn setup(slots: u32) -> (MemWindow, DeviceSide, Driver) {
    let mem = MemWindow::new(regs::STD_WINDOW_BYTES);
    let mut dev = DeviceSide::new(&mem, Kind::Q, 16, slots, 16 / slots, 7);
    let mut drv = Driver::start(&mem, 0).unwrap();
    assert!(!drv.is_ready(), "ready only once the device says so");
    assert_eq!(drv.offered_slots(), 0);
    let _ = dev.take(&mem);
    assert!(drv.poll(&mem, 1).is_empty());
    assert!(drv.is_ready());
    assert_eq!(drv.info.peer, 7);
    (mem, dev, drv)
}

fn run(tag: u64, job: &[u8]) -> Request<'_> {
    Request {
        opcode: Opcode::Run,
        slots: &[],
        job,
        seed: tag * 11,
        budget: 40,
        tag,
        timeout_ms: 1_000,
    }
}

#[test]
fn a_job_goes_round_and_its_result_comes_back() {
    let (mem, mut dev, mut drv) = setup(2);
    let mut rang = 0;
    let cmd = drv
        .submit(&mem, &run(5, b"circuit"), 10, &mut || rang += 1)
        .unwrap();
    assert_eq!(rang, 1, "the doorbell rings once per submission");
    assert_eq!(drv.free_slots(), 1);
    let (taken, _) = dev.take(&mem);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].job, b"circuit");
    assert_eq!(taken[0].sub.seed, 55);
    assert_eq!(taken[0].sub.budget, 40);
    let raise = dev.complete(&mem, &taken[0].sub, CqStatus::Ok, b"counts", 3, 99);
    assert!(raise.completion && !raise.fault);
    let ev = drv.poll(&mem, 25);
    assert_eq!(
        ev,
        vec![Event::Done {
            tag: 5,
            cmd,
            slot: taken[0].sub.slot,
            status: CqStatus::Ok,
            detail: 3,
            result: b"counts".to_vec(),
            device_time_us: 99,
            elapsed_ms: 15,
        }]
    );
    assert_eq!(drv.free_slots(), 2);
    assert_eq!(drv.in_flight(), 0);
    // The cause was acknowledged; the device clears it on its next pass.
    let _ = dev.take(&mem);
    assert_eq!(mem.read32(off::INTR_CAUSE), 0);
}

#[test]
fn slots_and_ring_are_limited_and_reused() {
    let (mem, mut dev, mut drv) = setup(2);
    drv.submit(&mem, &run(1, b"a"), 0, &mut || {}).unwrap();
    drv.submit(&mem, &run(2, b"b"), 0, &mut || {}).unwrap();
    assert_eq!(
        drv.submit(&mem, &run(3, b"c"), 0, &mut || {}),
        Err(SubmitError::NoFreeSlot)
    );
    let big = vec![0u8; regs::MAX_JOB_BYTES + 1];
    assert_eq!(
        drv.submit(&mem, &run(4, &big), 0, &mut || {}),
        Err(SubmitError::JobTooLarge(big.len()))
    );
    // Nops need no slot; the ring holds 16 commands in all.
    let nop = |tag| Request {
        opcode: Opcode::Nop,
        slots: &[],
        job: &[],
        seed: 0,
        budget: 0,
        tag,
        timeout_ms: 1_000,
    };
    for t in 0..14 {
        drv.submit(&mem, &nop(100 + t), 0, &mut || {}).unwrap();
    }
    assert_eq!(
        drv.submit(&mem, &nop(200), 0, &mut || {}),
        Err(SubmitError::RingFull)
    );
    // Many rounds wrap both rings.
    for round in 0..5 {
        let (taken, _) = dev.take(&mem);
        for t in &taken {
            dev.complete(&mem, &t.sub, CqStatus::Ok, &[round], 0, 0);
        }
        let done = drv.poll(&mem, 1).len();
        assert_eq!(done, taken.len());
        for t in 0..done as u64 {
            drv.submit(&mem, &nop(1000 + t), 1, &mut || {}).unwrap();
        }
    }
    assert!(drv.is_ready());
    assert_eq!(drv.counters.faults, 0);
}

#[test]
fn versions_refuse_each_other_with_a_clear_message() {
    let mem = MemWindow::new(regs::STD_WINDOW_BYTES);
    let _dev = DeviceSide::new(&mem, Kind::Phi, 64, 4, 16, 0);
    mem.write32(off::VERSION, 2 << 16);
    let e = Driver::start(&mem, 0).err().unwrap();
    assert!(matches!(e, ProbeError::Version { .. }));
    assert_eq!(
        e.to_string(),
        "device speaks interface 2.0, this driver 1.0: refusing"
    );
    // A newer minor is fine.
    mem.write32(off::VERSION, (1 << 16) | 9);
    assert!(Driver::start(&mem, 0).is_ok());
    mem.write32(off::MAGIC, 0x1234);
    assert_eq!(
        Driver::start(&mem, 0).err(),
        Some(ProbeError::BadMagic(0x1234))
    );
}

#[test]
fn a_device_refuses_an_older_driver() {
    let mem = MemWindow::new(regs::STD_WINDOW_BYTES);
    let mut dev = DeviceSide::new(&mem, Kind::Q, 16, 2, 8, 0);
    let mut drv = Driver::start(&mem, 0).unwrap();
    mem.write32(off::DRIVER_VERSION, 0); // as a v0 driver would have written
    let _ = dev.take(&mem);
    let ev = drv.poll(&mem, 1);
    assert_eq!(
        ev,
        vec![Event::Failed(Fault::Reported(DeviceError::DriverVersion))]
    );
    assert_eq!(drv.offered_slots(), 0);
}

#[test]
fn a_bad_layout_is_refused() {
    let mem = MemWindow::new(regs::STD_WINDOW_BYTES);
    let _dev = DeviceSide::new(&mem, Kind::Q, 16, 2, 8, 0);
    mem.write32(off::CQ_OFF, regs::STD_SQ_OFF); // rings overlap
    assert!(matches!(Driver::start(&mem, 0), Err(ProbeError::Layout(_))));
    mem.write32(off::CQ_OFF, regs::STD_CQ_OFF);
    mem.write32(off::DATA_BYTES, u32::MAX);
    assert!(matches!(Driver::start(&mem, 0), Err(ProbeError::Layout(_))));
    mem.write32(off::DATA_BYTES, regs::STD_DATA_BYTES);
    mem.write32(off::SLOTS, 5);
    assert!(matches!(
        Driver::start(&mem, 0),
        Err(ProbeError::BadCapacity { .. })
    ));
}

/// A hostile completion fails the device; the commands in flight are lost, once.
fn hostile(write: impl Fn(&MemWindow, u32), expect: impl Fn(&Fault) -> bool) {
    let (mem, mut dev, mut drv) = setup(4);
    let a = drv.submit(&mem, &run(1, b"x"), 0, &mut || {}).unwrap();
    drv.submit(&mem, &run(2, b"y"), 0, &mut || {}).unwrap();
    let _ = dev.take(&mem);
    write(&mem, a);
    let ev = drv.poll(&mem, 5);
    let lost: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Lost { tag, .. } => Some(*tag),
            _ => None,
        })
        .collect();
    let fault = ev
        .iter()
        .find_map(|e| match e {
            Event::Failed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("device failed");
    assert!(expect(&fault), "unexpected fault {fault:?}");
    assert_eq!(
        lost.len()
            + ev.iter()
                .filter(|e| matches!(e, Event::Done { .. }))
                .count(),
        2
    );
    assert_eq!(drv.in_flight(), 0);
    assert_eq!(drv.offered_slots(), 0);
    assert!(drv.describe().contains("FAILED"), "{}", drv.describe());
}

fn post_raw(mem: &MemWindow, c: &[u8]) {
    let l = Layout::STANDARD;
    mem.write_bytes(l.cq_off as usize, c);
    mem.write32(off::CQ_TAIL, 1);
}

fn entry(cmd: u32, generation: u16, result_len: u32) -> [u8; CQE_BYTES] {
    Completion {
        cmd,
        status: CqStatus::Ok,
        generation,
        result_len,
        detail: 0,
        device_time_us: 0,
    }
    .emit()
}

#[test]
fn a_completion_for_a_command_never_sent_fails_the_device() {
    hostile(
        |m, a| post_raw(m, &entry(a + 1000, 0, 0)),
        |f| *f == Fault::UnknownCommand(1001),
    );
}

#[test]
fn a_garbage_completion_fails_the_device() {
    hostile(
        |m, _| post_raw(m, &[0xff; CQE_BYTES]),
        |f| matches!(f, Fault::BadEntry(_)),
    );
}

#[test]
fn an_index_out_of_range_fails_the_device() {
    hostile(
        |m, _| m.write32(off::CQ_TAIL, 17),
        |f| *f == Fault::IndexOutOfRange { head: 0, tail: 17 },
    );
}

#[test]
fn a_completion_of_another_generation_fails_the_device() {
    hostile(
        |m, a| post_raw(m, &entry(a, 3, 0)),
        |f| *f == Fault::WrongGeneration { got: 3, want: 0 },
    );
}

#[test]
fn a_status_word_of_garbage_fails_the_device() {
    hostile(
        |m, _| m.write32(off::STATUS, 77),
        |f| *f == Fault::BadStatus(77),
    );
}

#[test]
fn a_hung_device_is_caught_by_the_watchdog_and_reset_back() {
    let (mem, mut dev, mut drv) = setup(2);
    drv.submit(&mem, &run(9, b"x"), 100, &mut || {}).unwrap();
    let _ = dev.take(&mem); // taken, never completed: the device hangs
    assert!(
        drv.poll(&mem, 1_100).is_empty(),
        "at the deadline, not yet late"
    );
    let ev = drv.poll(&mem, 1_101);
    assert_eq!(
        ev[0],
        Event::Lost {
            tag: 9,
            cmd: 1,
            fault: Fault::Hung {
                cmd: 1,
                waited_ms: 1_001
            }
        }
    );
    assert!(matches!(ev[1], Event::Failed(Fault::Hung { .. })));
    // The next poll asks for a reset; the device (alive again) does it.
    assert!(drv.poll(&mem, 1_102).is_empty());
    assert_eq!(drv.counters.resets, 1);
    assert!(
        drv.poll(&mem, 1_103).is_empty(),
        "no second reset before the interval"
    );
    let _ = dev.take(&mem);
    assert_eq!(dev.generation(), 1);
    assert_eq!(
        drv.poll(&mem, 1_104),
        vec![Event::Recovered { generation: 1 }]
    );
    assert_eq!(drv.offered_slots(), 2);
    // Works again, in the new generation.
    drv.submit(&mem, &run(10, b"y"), 1_200, &mut || {}).unwrap();
    let (taken, _) = dev.take(&mem);
    dev.complete(&mem, &taken[0].sub, CqStatus::Ok, b"ok", 0, 0);
    assert!(matches!(
        &drv.poll(&mem, 1_210)[..],
        [Event::Done { tag: 10, .. }]
    ));
    assert!(
        drv.describe().contains("last fault at 1101 ms"),
        "{}",
        drv.describe()
    );
}

#[test]
fn a_hardware_failure_mid_job_aborts_it_and_recovery_needs_the_hardware_back() {
    let (mem, mut dev, mut drv) = setup(2);
    drv.submit(&mem, &run(1, b"x"), 0, &mut || {}).unwrap();
    let _ = dev.take(&mem);
    let raise = dev.break_hardware(&mem);
    assert!(raise.fault && raise.completion);
    let ev = drv.poll(&mem, 10);
    assert!(
        matches!(
            &ev[0],
            Event::Done {
                tag: 1,
                status: CqStatus::DeviceFault,
                ..
            }
        ),
        "{ev:?}"
    );
    assert_eq!(ev[1], Event::Failed(Fault::Reported(DeviceError::Hardware)));
    // Resets keep failing while the hardware is broken.
    for t in [20, 1_020 + RESET_INTERVAL_MS, 2_050 + 2 * RESET_INTERVAL_MS] {
        assert!(drv.poll(&mem, t).is_empty());
        let _ = dev.take(&mem);
    }
    assert_eq!(drv.offered_slots(), 0);
    assert!(drv.counters.resets >= 2);
    dev.recover();
    let t = 10_000;
    assert!(drv.poll(&mem, t).is_empty());
    let _ = dev.take(&mem);
    assert!(matches!(
        &drv.poll(&mem, t + 1)[..],
        [Event::Recovered { .. }]
    ));
    assert_eq!(drv.offered_slots(), 2);
}

#[test]
fn the_device_answers_a_bad_slot_and_survives_a_lying_driver() {
    let (mem, mut dev, mut drv) = setup(2);
    drv.submit(&mem, &run(1, b"x"), 0, &mut || {}).unwrap();
    // A second driver-side write naming the same slot (as a buggy driver would).
    let l = Layout::STANDARD;
    let mut b = [0u8; regs::SQE_BYTES];
    mem.read_bytes(l.sq_off as usize, &mut b);
    b[0] = 77; // another command id, same slot, chunk 0
    b[28] = 1;
    mem.write_bytes(l.sq_off as usize + regs::SQE_BYTES, &b);
    mem.write32(off::SQ_TAIL, 2);
    let (taken, _) = dev.take(&mem);
    assert_eq!(taken.len(), 1);
    assert_eq!(
        mem.read32(off::CQ_TAIL),
        1,
        "the second one was answered BadSlot"
    );
    // A tail past the ring is a protocol violation: the device fails itself.
    mem.write32(off::SQ_TAIL, 100);
    let (_, raise) = dev.take(&mem);
    assert!(raise.fault);
    assert_eq!(mem.read32(off::ERROR), DeviceError::Protocol.code());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_completion_rings_never_break_the_driver(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        xdv_accel::fuzz::completion_ring(&bytes);
    }
}
