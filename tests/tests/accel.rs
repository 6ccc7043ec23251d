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

mod jobs {
    //! Device tasks on a booted node with a Q and a Φ device: Bell and GHZ counts,
    //! identical counts for the same job, stable and unstable envelopes, the round-trip
    //! measurement, a device failed mid-job (the task ends `device-failed`, the node
    //! keeps serving and refuses Q tasks while no Q device is ready), and recovery.
    //! One boot for all of it.

    use std::time::{Duration, Instant};
    use xdv::accel::daemon::DeviceGuard;
    use xdv::mgmt;
    use xdv::qemu::{start_accel, temp_dir};
    use xdv::switch::Faults;
    use xdv::testbed::Testbed;
    use xdv_accel::job::{PhiResult, QResult};
    use xdv_accel::regs::Kind;
    use xdv_cluster::mgmt::Principal;
    use xdv_cluster::{Domain, Outcome, Refusal, TaskStatus, Work};
    use xdv_types::TenantId;

    const BELL: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";
    const GHZ: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[4];\ncreg c[4];\nh q[0];\ncx q[0],q[1];\ncx q[1],q[2];\ncx q[2],q[3];\nmeasure q -> c;\n";

    fn examples(name: &str) -> String {
        std::fs::read_to_string(format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    }

    fn circuit(src: &str) -> Work {
        Work::Job(xdv_accel_sim::qasm::parse(src, 1000).unwrap().encode())
    }

    fn envelope(file: &str) -> Work {
        Work::Job(
            xdv_accel_sim::envelope::parse(&examples(file))
                .unwrap()
                .encode(),
        )
    }

    /// Submits as tenant 1 and waits for the task's end.
    fn run(tb: &Testbed, domain: Domain, work: Work) -> TaskStatus {
        let end = Instant::now() + Duration::from_secs(40);
        let req = tb
            .request_in(1, domain, work, Vec::new(), 1000, None)
            .unwrap();
        let task = mgmt::submit_until_placed(tb.port(1), &req, end)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", tb.logs()));
        mgmt::wait_task(
            tb.port(1),
            &tb.keys,
            Principal::Tenant(TenantId(1)),
            task,
            end,
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", tb.logs()))
    }

    fn executed(st: &TaskStatus) -> &[u8] {
        match st {
            TaskStatus::Completed {
                outcome: Outcome::Executed,
                output,
                ..
            } => output,
            other => panic!("not executed: {other:?}"),
        }
    }

    fn counts(st: &TaskStatus) -> Vec<(u64, u32)> {
        QResult::decode(executed(st)).unwrap().counts
    }

    #[test]
    fn a_node_runs_circuits_and_envelopes_on_its_devices_and_survives_a_device_failure() {
        let t0 = Instant::now();
        let dir = temp_dir("accel-jobs").unwrap();
        let (qs, ps) = (dir.join("q.sock"), dir.join("phi.sock"));
        let q: DeviceGuard = start_accel(Kind::Q, &qs).unwrap();
        let _phi: DeviceGuard = start_accel(Kind::Phi, &ps).unwrap();
        let mut tb = Testbed::prepare("accel-jobs", 1, Faults::default(), 1, "").unwrap();
        tb.accels.insert(1, vec![qs.clone(), ps.clone()]);
        tb.vms[0] = Some(tb.boot(1, "node1.prov").unwrap());
        tb.leader(&[1], Duration::from_secs(20)).unwrap();

        // The devices' offer reaches the log in the node's first heartbeats; until then
        // Q tasks are refused (no member offers Q).
        let mut bell = run(&tb, Domain::Q, circuit(BELL));
        let end = Instant::now() + Duration::from_secs(30);
        while matches!(bell, TaskStatus::Rejected(Refusal::NoMemberCanRun { .. }))
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(200));
            bell = run(&tb, Domain::Q, circuit(BELL));
        }
        // Bell: only 00 and 11, about half each; the same job again: the same counts.
        let c = counts(&bell);
        assert_eq!(
            c.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![0, 3],
            "{c:?}"
        );
        assert!(c.iter().all(|x| (400..=600).contains(&x.1)), "{c:?}");
        assert_eq!(
            counts(&run(&tb, Domain::Q, circuit(BELL))),
            c,
            "same job, same counts"
        );
        let r = QResult::decode(executed(&bell)).unwrap();
        assert_eq!((r.shots, r.entangling_ops), (1000, 1));
        // GHZ on 4 qubits: only 0000 and 1111, about half each; again: the same counts.
        let g = counts(&run(&tb, Domain::Q, circuit(GHZ)));
        assert_eq!(
            g.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![0, 15],
            "{g:?}"
        );
        assert!(g.iter().all(|x| (400..=600).contains(&x.1)), "{g:?}");
        assert_eq!(
            counts(&run(&tb, Domain::Q, circuit(GHZ))),
            g,
            "same job, same counts"
        );

        // Φ: the stable envelope holds; the unstable one ends `unstable`.
        let s = run(&tb, Domain::Phi, envelope("stable.toml"));
        assert!(PhiResult::decode(executed(&s)).unwrap().stable);
        match run(&tb, Domain::Phi, envelope("unstable.toml")) {
            TaskStatus::Completed {
                outcome: Outcome::Unstable(why),
                ..
            } => assert!(why.contains("window"), "{why}"),
            other => panic!("unstable envelope: {other:?}"),
        }

        // The console: both devices ready, interrupts taken, round trips measured.
        let vm = tb.vm(1);
        let out = vm
            .command("accel", "xdv> ", Duration::from_secs(10))
            .unwrap();
        eprintln!("{out}");
        assert_eq!(out.matches(" ready: ").count(), 2, "{out}");
        assert!(
            out.contains("offering 2 Q containers, 4 Φ windows"),
            "{out}"
        );
        let out = vm
            .command("accel test 50", "xdv> ", Duration::from_secs(60))
            .unwrap();
        for what in ["raw doorbell ping-pong", "no-op command", "small job"] {
            assert!(
                out.contains(&format!("accel test: {what}: 50 round trips")),
                "{out}"
            );
        }
        eprintln!("{out}");

        // The Q device fails with a job on it: the job ends `device-failed`.
        q.ctl("hang").unwrap();
        let end = Instant::now() + Duration::from_secs(40);
        let req = tb
            .request_in(1, Domain::Q, circuit(GHZ), b"mid-job".to_vec(), 1000, None)
            .unwrap();
        let task = mgmt::submit_until_placed(tb.port(1), &req, end).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        q.ctl("fail").unwrap();
        let st = mgmt::wait_task(
            tb.port(1),
            &tb.keys,
            Principal::Tenant(TenantId(1)),
            task,
            end,
        )
        .unwrap();
        assert!(
            matches!(
                &st,
                TaskStatus::Completed {
                    outcome: Outcome::DeviceFailed(_),
                    ..
                }
            ),
            "{st:?}\n{}",
            tb.logs()
        );
        // The node keeps serving: K tasks run; a Q task is refused at submission now
        // that no Q device is ready (once the node's heartbeat says so).
        let k = run(&tb, Domain::K, Work::Builtin("hash".into()));
        assert!(
            matches!(
                k,
                TaskStatus::Completed {
                    outcome: Outcome::Executed,
                    ..
                }
            ),
            "{k:?}"
        );
        let refused = (0..40).any(|_| {
            let st = run(&tb, Domain::Q, circuit(BELL));
            if let TaskStatus::Rejected(Refusal::NoMemberCanRun { domain: Domain::Q }) = st {
                return true;
            }
            std::thread::sleep(Duration::from_millis(250));
            false
        });
        assert!(
            refused,
            "Q tasks not refused while the Q device is failed\n{}",
            tb.logs()
        );
        // Recovery: the driver resets it, the node offers it again, circuits run.
        q.ctl("recover").unwrap();
        let back = (0..60).any(|_| {
            std::thread::sleep(Duration::from_millis(250));
            matches!(
                run(&tb, Domain::Q, circuit(BELL)),
                TaskStatus::Completed {
                    outcome: Outcome::Executed,
                    ..
                }
            )
        });
        assert!(back, "the Q device did not come back\n{}", tb.logs());
        let out = tb
            .vm(1)
            .command("accel", "xdv> ", Duration::from_secs(10))
            .unwrap();
        assert!(out.contains("recoveries 1"), "{out}");
        eprintln!("accel jobs QEMU test took {:?}", t0.elapsed());
    }
}
