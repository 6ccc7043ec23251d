//! The device process against a fake ivshmem client that speaks to it exactly as
//! QEMU's `ivshmem-doorbell` would: the setup sequence with SCM_RIGHTS, the shared
//! memory mapped, the kernel's driver logic (`xdv_accel::driver`) over it, doorbells
//! and interrupts through the eventfds, faults through the control socket.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdv::accel::Spec;
use xdv::accel::daemon::{self, Daemon};
use xdv::accel::ivshmem::{self, ClientSetup, ShmMap};
use xdv_accel::driver::{Driver, Event, Fault, Request};
use xdv_accel::regs::{
    self, DeviceError, DeviceMemory, Kind, STD_WINDOW_BYTES, Status, VECTOR_COMPLETION,
    VECTOR_FAULT, off,
};
use xdv_accel::ring::{CqStatus, Opcode};

fn socket(tag: &str) -> PathBuf {
    xdv::qemu::temp_dir(tag).unwrap().join("dev.sock")
}

/// The guest's side: the setup it received, its mapping and the driver.
struct Guest {
    _stream: UnixStream,
    setup: ClientSetup,
    mem: ShmMap,
    drv: Driver,
    t0: Instant,
}

impl Guest {
    fn connect(sock: &Path) -> Guest {
        let (stream, setup) = ivshmem::connect_client(sock).unwrap();
        let mem = ShmMap::map(setup.shm.as_fd(), STD_WINDOW_BYTES).unwrap();
        let info = regs::probe(&mem).unwrap();
        assert_eq!(info.peer, 0, "the device is peer 0");
        let t0 = Instant::now();
        let drv = Driver::start(&mem, 0).unwrap();
        let mut g = Guest {
            _stream: stream,
            setup,
            mem,
            drv,
            t0,
        };
        g.until("ready", Duration::from_secs(3), |d, _| d.is_ready());
        g
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Polls (on every interrupt and every 10 ms) until `done` says so; returns
    /// every event seen.
    fn until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Driver, &[Event]) -> bool,
    ) -> Vec<Event> {
        let end = Instant::now() + limit;
        let mut all = Vec::new();
        let fds: Vec<_> = self.setup.own.iter().map(|e| e.raw()).collect();
        loop {
            let ev = self.drv.poll(&self.mem, self.now());
            all.extend(ev);
            if done(&self.drv, &all) {
                return all;
            }
            assert!(
                Instant::now() < end,
                "no {what} within {limit:?}; events {all:?}; driver {}",
                self.drv.describe()
            );
            ivshmem::wait_readable(&fds, 10).unwrap();
            self.setup.own.iter().for_each(|e| {
                e.drain();
            });
        }
    }

    fn submit(&mut self, opcode: Opcode, job: &[u8], timeout_ms: u64) -> u32 {
        let bell = &self.setup.device[VECTOR_COMPLETION as usize];
        let now = self.now();
        let req = Request {
            opcode,
            slots: &[],
            job,
            seed: 1,
            budget: 0,
            tag: 7,
            timeout_ms,
        };
        self.drv
            .submit(&self.mem, &req, now, &mut || bell.signal().unwrap())
            .unwrap()
    }

    fn run(&mut self, job: &[u8]) -> (CqStatus, Vec<u8>) {
        let cmd = self.submit(Opcode::Run, job, 2_000);
        let ev = self.until("completion", Duration::from_secs(3), |_, ev| {
            ev.iter()
                .any(|e| matches!(e, Event::Done { cmd: c, .. } if *c == cmd))
        });
        ev.into_iter()
            .find_map(|e| match e {
                Event::Done {
                    cmd: c,
                    status,
                    result,
                    ..
                } if c == cmd => Some((status, result)),
                _ => None,
            })
            .unwrap()
    }
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn a_client_gets_the_spec_setup_and_jobs_round_trip_by_interrupt() {
    let sock = socket("accel-rt");
    let dev = daemon::spawn_with(
        Spec::default_for(Kind::Q),
        &sock,
        Box::new(daemon::EchoRunner),
    )
    .unwrap();
    let mut g = Guest::connect(&sock);
    assert_eq!(g.setup.id, 1, "the first client is id 1 (0 is the device)");
    assert_eq!(g.setup.device.len(), 2);
    assert_eq!(g.setup.own.len(), 2);
    let info = regs::probe(&g.mem).unwrap();
    assert_eq!((info.kind, info.units, info.slots), (Kind::Q, 16, 2));

    assert_eq!(g.run(b"hello"), (CqStatus::Ok, b"olleh".to_vec()));

    // Round trip: submit + doorbell -> completion interrupt -> completion read.
    let fds = [g.setup.own[VECTOR_COMPLETION as usize].raw()];
    let mut rtt = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let cmd = g.submit(Opcode::Nop, &[], 2_000);
        loop {
            let ready = ivshmem::wait_readable(&fds, 2_000).unwrap();
            assert!(!ready.is_empty(), "no completion interrupt within 2 s");
            g.setup.own[VECTOR_COMPLETION as usize].drain();
            let now = g.now();
            let ev = g.drv.poll(&g.mem, now);
            if ev
                .iter()
                .any(|e| matches!(e, Event::Done { cmd: c, status: CqStatus::Ok, .. } if *c == cmd))
            {
                break;
            }
            assert!(ev.is_empty(), "{ev:?}");
        }
        rtt.push(t.elapsed());
    }
    rtt.sort();
    let (p50, p99) = (pct(&rtt, 50), pct(&rtt, 99));
    println!(
        "accel round trip (Nop, submit -> interrupt -> completion) over 1000: p50 {} us, p99 {} us, max {} us",
        p50.as_micros(),
        p99.as_micros(),
        rtt[rtt.len() - 1].as_micros()
    );
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?}");
    // Run jobs go through the worker thread.
    let job = [0x5au8; 64];
    let mut run_rtt = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(g.run(&job), (CqStatus::Ok, job.to_vec()));
        run_rtt.push(t.elapsed());
    }
    run_rtt.sort();
    println!(
        "accel round trip (Run, 64-byte echo via the worker) over 200: p50 {} us, p99 {} us",
        pct(&run_rtt, 50).as_micros(),
        pct(&run_rtt, 99).as_micros()
    );
    let status = dev.ctl("status").unwrap();
    assert!(
        status.starts_with("ok kind=Q status=ready generation=0 jobs=1201 clients=1"),
        "{status}"
    );
    assert_eq!(g.drv.counters.faults, 0);
}

#[test]
fn fail_unstable_hang_and_recover_through_the_control_socket() {
    let sock = socket("accel-faults");
    let dev = daemon::spawn_with(
        Spec::default_for(Kind::Phi),
        &sock,
        Box::new(daemon::EchoRunner),
    )
    .unwrap();
    let mut g = Guest::connect(&sock);

    // unstable: the next Φ job only.
    assert_eq!(
        dev.ctl("unstable").unwrap(),
        "ok the next Φ job ends unstable"
    );
    assert_eq!(g.run(b"env").0, CqStatus::Unstable);
    assert_eq!(g.run(b"env"), (CqStatus::Ok, b"vne".to_vec()));
    assert!(g.drv.is_ready());

    // fail: fault interrupt, device reports a hardware fault, resets keep failing.
    let fault = [g.setup.own[VECTOR_FAULT as usize].raw()];
    g.setup.own[VECTOR_FAULT as usize].drain();
    assert!(dev.ctl("fail").unwrap().starts_with("ok hardware failed"));
    assert_eq!(ivshmem::wait_readable(&fault, 2_000).unwrap(), vec![0]);
    let ev = g.until("failure", Duration::from_secs(2), |d, _| !d.is_ready());
    assert!(
        ev.contains(&Event::Failed(Fault::Reported(DeviceError::Hardware))),
        "{ev:?}"
    );
    g.until("two resets", Duration::from_secs(4), |d, _| {
        d.counters.resets >= 2
    });
    assert!(
        !g.drv.is_ready(),
        "no recovery while the hardware is broken"
    );
    let st = dev.ctl("status").unwrap();
    assert!(
        st.contains("status=failed") && st.contains("hardware=broken"),
        "{st}"
    );
    assert!(
        dev.ctl("recover")
            .unwrap()
            .starts_with("ok hardware healthy")
    );
    let ev = g.until("recovery", Duration::from_secs(3), |d, _| d.is_ready());
    assert!(
        ev.iter().any(|e| matches!(e, Event::Recovered { .. })),
        "{ev:?}"
    );
    assert_eq!(g.run(b"ab"), (CqStatus::Ok, b"ba".to_vec()));

    // hang: the watchdog fails the device, resets go unanswered until recover.
    assert!(dev.ctl("hang").unwrap().starts_with("ok device hung"));
    let cmd = g.submit(Opcode::Run, b"x", 200);
    let ev = g.until("watchdog", Duration::from_secs(3), |d, _| !d.is_ready());
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::Lost { cmd: c, fault: Fault::Hung { .. }, .. } if *c == cmd)
        ),
        "{ev:?}"
    );
    let gen_before = g.mem.read32(off::GENERATION);
    g.until("a reset", Duration::from_secs(3), |d, _| {
        d.counters.resets >= 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        g.mem.read32(off::GENERATION),
        gen_before,
        "a hung device processes no reset"
    );
    assert!(dev.ctl("status").unwrap().contains("serving=hung"));
    dev.ctl("recover").unwrap();
    g.until("recovery", Duration::from_secs(3), |d, _| d.is_ready());
    assert_eq!(g.run(b"yz"), (CqStatus::Ok, b"zy".to_vec()));

    // A bad command is named.
    let e = dev.ctl("explode").unwrap_err().to_string();
    assert!(e.contains("unknown command `explode`"), "{e}");
}

/// Waits until the device process has noticed that its client went away.
fn until_disconnected(dev: &daemon::DeviceGuard) {
    let end = Instant::now() + Duration::from_secs(2);
    while !dev.ctl("status").unwrap().contains("clients=0") {
        assert!(Instant::now() < end, "disconnect not noticed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_restarted_node_gets_a_new_id_and_a_fresh_device() {
    let sock = socket("accel-reconnect");
    let dev = daemon::spawn_with(
        Spec::default_for(Kind::Q),
        &sock,
        Box::new(daemon::EchoRunner),
    )
    .unwrap();
    let mut g = Guest::connect(&sock);
    assert_eq!(g.run(b"12"), (CqStatus::Ok, b"21".to_vec()));
    // A second QEMU on the same device is turned away; the first is undisturbed.
    let e = ivshmem::connect_client(&sock).err().unwrap().to_string();
    assert!(
        e.contains("server closed before sending the version"),
        "{e}"
    );
    assert_eq!(g.run(b"ab"), (CqStatus::Ok, b"ba".to_vec()));
    let first = g.setup.id;
    drop(g);
    until_disconnected(&dev);
    let (stream, setup) = ivshmem::connect_client(&sock).unwrap();
    assert_ne!(setup.id, first, "a new client gets a new id");
    let mem = ShmMap::map(setup.shm.as_fd(), STD_WINDOW_BYTES).unwrap();
    assert_eq!(
        mem.read32(off::STATUS),
        Status::Off.code(),
        "the register block starts again for the new kernel"
    );
    drop((stream, mem));
    // The device serves one client at a time: wait until it has seen this one go.
    until_disconnected(&dev);
    let mut g = Guest::connect(&sock);
    assert_eq!(g.run(b"345"), (CqStatus::Ok, b"543".to_vec()));
    assert!(dev.ctl("status").unwrap().contains("clients=1"));
}

#[test]
fn a_socket_in_use_is_refused_and_a_stale_one_replaced() {
    let sock = socket("accel-inuse");
    let dev = daemon::spawn_with(
        Spec::default_for(Kind::Q),
        &sock,
        Box::new(daemon::EchoRunner),
    )
    .unwrap();
    let e = Daemon::new(Spec::default_for(Kind::Q), &sock)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is in use"), "{e}");
    dev.stop().unwrap();
    assert!(!sock.exists(), "sockets removed on stop");
    assert!(!daemon::ctl_path(&sock).exists());
    // A stale socket file (its server gone) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let dev = daemon::spawn_with(
        Spec::default_for(Kind::Q),
        &sock,
        Box::new(daemon::EchoRunner),
    )
    .unwrap();
    assert!(dev.ctl("status").unwrap().starts_with("ok kind=Q"));
}

/// Takes 1.5 s per job: the device must stay responsive meanwhile.
struct SlowRunner;

impl daemon::Runner for SlowRunner {
    fn run(
        &mut self,
        _: Kind,
        _: &xdv_accel::ring::Submission,
        job: &[u8],
        _: u32,
    ) -> daemon::RunOutcome {
        std::thread::sleep(Duration::from_millis(1_500));
        daemon::RunOutcome {
            status: CqStatus::Ok,
            result: job.to_vec(),
            detail: 0,
        }
    }
}

#[test]
fn a_long_job_neither_blocks_control_nor_survives_a_failure() {
    let sock = socket("accel-slow");
    let dev =
        daemon::spawn_with(Spec::default_for(Kind::Phi), &sock, Box::new(SlowRunner)).unwrap();
    let mut g = Guest::connect(&sock);
    let cmd = g.submit(Opcode::Run, b"long", 10_000);
    // Taken (the ring's head moved) and running on the worker.
    let end = Instant::now() + Duration::from_secs(1);
    while g.mem.read32(off::SQ_HEAD) != 1 {
        assert!(Instant::now() < end, "job not taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    assert!(dev.ctl("status").unwrap().contains("status=ready"));
    assert!(dev.ctl("fail").unwrap().starts_with("ok"));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "control waited for the job: {:?}",
        t.elapsed()
    );
    let ev = g.until("failure", Duration::from_secs(1), |d, _| !d.is_ready());
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::Done { cmd: c, status: CqStatus::DeviceFault, .. } if *c == cmd)
        ),
        "the running job ends device-fault: {ev:?}"
    );
    // The job's late result is dropped, not posted into the failed device.
    std::thread::sleep(Duration::from_millis(1_700));
    assert!(
        g.drv
            .poll(&g.mem, g.now())
            .iter()
            .all(|e| !matches!(e, Event::Done { .. }))
    );
    dev.ctl("recover").unwrap();
    g.until("recovery", Duration::from_secs(3), |d, _| d.is_ready());
    assert_eq!(g.drv.counters.faults, 1, "{}", g.drv.describe());
}
