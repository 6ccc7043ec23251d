//! Boots the real kernel in QEMU (TCG) and checks it over its serial port:
//! foundation (boot via PVH and GRUB, faults, heap, console, command line) and the
//! per-core run queues (hashes equal to the host's for 1, 2 and 4 cores).

use std::time::Duration;
use xdv::qemu::{Config, Exit, Vm, make_iso, run_test, temp_dir};
use xdv_sched::demo::{DEMO_GRANTS, demo_tasks, outcome_digest};
use xdv_sched::{DeterministicScheduler, MaskPlacement};

const T: Duration = Duration::from_secs(120);

/// The last `up S.UUUUUU s` the console printed, in microseconds.
fn last_uptime_us(out: &str) -> u64 {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with("up ") && l.contains("(tsc "))
        .unwrap_or_else(|| panic!("no uptime line: {out}"));
    let secs = line.split_whitespace().nth(1).unwrap();
    let (s, us) = secs.split_once('.').unwrap();
    s.parse::<u64>().unwrap() * 1_000_000 + us.parse::<u64>().unwrap()
}

fn ready_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.starts_with("xdv: ready"))
        .collect()
}

#[test]
fn boots_via_pvh_to_exactly_one_ready_line() {
    let log = run_test("boot", 2, Exit::Pass).unwrap();
    let ready = ready_lines(&log);
    assert_eq!(ready.len(), 1, "{log}");
    assert!(
        ready[0].starts_with("xdv: ready node=0 cores=2 mem="),
        "{}",
        ready[0]
    );
    // The boot's own lines follow the ready line (held at the default log level).
    assert!(log.find("xdv: ready") < log.find("booted via PVH"), "{log}");
    assert!(log.contains("xdv-test: pass boot"));
    // Both timers are calibrated over windows that overlap the boot's own work: the
    // windows are at least their minimum, and QEMU's LAPIC timer (a 1 GHz bus divided
    // by 16) comes out at its known rate.
    let timers = log
        .lines()
        .find(|l| l.contains("timers: TSC "))
        .unwrap_or_else(|| panic!("no timer calibration line: {log}"));
    let num_after = |key: &str| -> u64 {
        let rest = &timers[timers
            .find(key)
            .unwrap_or_else(|| panic!("{key}: {timers}"))
            + key.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(num_after("kHz over ") >= 1_999, "{timers}");
    assert!(num_after("ticks/ms over ") >= 2_000, "{timers}");
    let per_ms = num_after("LAPIC timer ");
    assert!((61_250..=63_750).contains(&per_ms), "{timers}");
}

#[test]
fn boots_via_grub_multiboot2_iso() {
    if std::process::Command::new("grub-mkrescue")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "grub-mkrescue missing in CI"
        );
        eprintln!(
            "SKIPPED: grub-mkrescue not installed (apt-get install -y grub-pc-bin grub-common xorriso mtools)"
        );
        return;
    }
    let dir = temp_dir("iso").unwrap();
    let iso = dir.join("xdv.iso");
    make_iso(
        &xdv::qemu::kernel_image().unwrap(),
        "test=boot node=5",
        &iso,
    )
    .unwrap();
    let mut cfg = Config::kernel("").unwrap();
    cfg.boot = xdv::qemu::Boot::Cdrom(iso);
    let mut vm = Vm::spawn(&cfg).unwrap();
    let log = vm.expect_exit(Exit::Pass, T).unwrap();
    let ready = ready_lines(&log);
    assert_eq!(ready.len(), 1, "{log}");
    assert!(ready[0].starts_with("xdv: ready node=5 cores=1"), "{log}");
    assert!(log.contains("booted via Multiboot2"), "{log}");
}

/// The same GRUB ISO boots under UEFI (OVMF): `grub-mkrescue` makes it hybrid when
/// GRUB's x86_64-efi images are installed, and the kernel boots from GRUB EFI through
/// Multiboot2 (EFI memory map, ACPI from the Multiboot2 tags).
#[test]
fn boots_via_grub_efi_iso_under_ovmf() {
    let have = std::path::Path::new("/usr/lib/grub/x86_64-efi").exists()
        && std::path::Path::new(xdv::pxe::OVMF_CODE).exists();
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "grub-efi-amd64-bin or ovmf missing in CI"
        );
        eprintln!("SKIPPED: apt-get install -y grub-efi-amd64-bin ovmf");
        return;
    }
    let dir = temp_dir("efi-iso").unwrap();
    let iso = dir.join("xdv.iso");
    make_iso(
        &xdv::qemu::kernel_image().unwrap(),
        "test=boot node=6",
        &iso,
    )
    .unwrap();
    let vars = dir.join("OVMF_VARS.fd");
    std::fs::copy(xdv::pxe::OVMF_VARS, &vars).unwrap();
    let mut cfg = Config::kernel("").unwrap();
    cfg.boot = xdv::qemu::Boot::Cdrom(iso);
    cfg.extra.extend([
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            xdv::pxe::OVMF_CODE
        ),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ]);
    let mut vm = Vm::spawn(&cfg).unwrap();
    let log = vm
        .expect_exit(Exit::Pass, Duration::from_secs(180))
        .unwrap();
    let ready = ready_lines(&log);
    assert_eq!(ready.len(), 1, "{log}");
    assert!(ready[0].starts_with("xdv: ready node=6"), "{log}");
    assert!(log.contains("booted via Multiboot2"), "{log}");
}

#[test]
fn heap_and_memory_map_stress_reports_exhaustion() {
    let log = run_test("heap", 1, Exit::Pass).unwrap();
    assert!(log.contains("frame allocator ok"), "{log}");
    assert!(log.contains("heap: out of memory: request of"), "{log}");
    assert!(log.contains("heap usable again"), "{log}");
}

#[test]
fn memory_routines_match_byte_at_a_time_references() {
    let log = run_test("mem", 1, Exit::Pass).unwrap();
    assert!(
        log.contains("mem test: 13184 copy/compare cases, memset and memmove ok"),
        "{log}"
    );
    assert!(log.contains("1 MiB memset"), "{log}");
}

#[test]
fn breakpoint_returns() {
    let log = run_test("breakpoint", 1, Exit::Pass).unwrap();
    assert!(
        log.contains("breakpoint at rip=") && log.contains("int3 returned"),
        "{log}"
    );
}

#[test]
fn page_fault_reports_the_faulting_address() {
    let log = run_test("pagefault", 1, Exit::Fault).unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with("EXCEPTION: page fault"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("vector=14") && line.contains("cr2=0x00000deadbeef000"),
        "{line}"
    );
    assert!(line.contains("rip=0x") && line.contains("error="), "{line}");
    assert!(
        log.contains("rax=0x") && log.contains("r15=0x"),
        "no register dump: {log}"
    );
}

#[test]
fn stack_overflow_is_reported_by_the_double_fault_handler() {
    let log = run_test("stackoverflow", 1, Exit::Fault).unwrap();
    assert!(log.contains("EXCEPTION: double fault (vector=8)"), "{log}");
    assert!(!log.contains("EXCEPTION: page fault"), "{log}");
}

#[test]
fn console_round_trip() {
    let mut vm = Vm::spawn(&Config::kernel("").unwrap().smp(2)).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    vm.send_line("help").unwrap();
    vm.wait_for("halt — stop the node", T).unwrap();
    // The help text arrives over the serial line: wait for each line, not only the
    // first one named.
    for cmd in [
        "mem —",
        "cpus —",
        "runq —",
        "log <error|warn|info|debug|trace> —",
        "fault late-completion <ms> —",
    ] {
        vm.wait_for(cmd, T)
            .unwrap_or_else(|e| panic!("help lacks {cmd}: {e}"));
    }
    vm.send_line("mem").unwrap();
    vm.wait_for("heap: used=", T).unwrap();
    assert!(vm.output().contains("memory map (PVH):"));
    // The reserved regions, with their state.
    for region in [" audit ", " raft "] {
        assert!(
            vm.output()
                .lines()
                .any(|l| l.contains(region) && l.contains("KiB (")),
            "mem lacks the{region}region: {}",
            vm.output()
        );
    }
    vm.send_line("cpus").unwrap();
    vm.wait_for("cpu1 apic=1", T).unwrap();
    // Line editing: backspace removes the typo before Enter.
    vm.send_line("versiom\x7fn").unwrap();
    vm.wait_for("xdv 0.1.0 (kernel", T).unwrap();
    vm.send_line("frobnicate").unwrap();
    vm.wait_for("error: unknown command `frobnicate`; try `help`", T)
        .unwrap();
    vm.send_line("log loud").unwrap();
    vm.wait_for(
        "error: usage: log <error|warn|info|debug|trace> (got `loud`)",
        T,
    )
    .unwrap();
    // The test hook refuses what it cannot hold, before arming anything.
    vm.send_line("fault late-completion 0").unwrap();
    vm.wait_for(
        "error: usage: fault late-completion <1..600000 ms> (got `0`)",
        T,
    )
    .unwrap();
    vm.send_line("fault slow-disk 5").unwrap();
    vm.wait_for("error: usage: fault late-completion <ms>", T)
        .unwrap();
    // A valid one is refused too: this image (the one users run) has no test hooks.
    vm.send_line("fault late-completion 5000").unwrap();
    vm.wait_for("error: fault: this kernel has no test hooks", T)
        .unwrap();
    assert!(!vm.output().contains("test hook armed"), "{}", vm.output());
    // The prompt comes back after each of the 9 commands (plus the first one).
    let deadline = std::time::Instant::now() + T;
    while vm.count("xdv> ") < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "prompt not returned: {}",
            vm.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // `version` names the commit and the build date.
    vm.send_line("version").unwrap();
    vm.wait_for(", built 20", T).unwrap();
    assert!(vm.output().contains(", commit "), "{}", vm.output());
    // Escape sequences (arrows left/right, SS3 Home) never reach the line; arrow up
    // recalls the last line.
    vm.send_line("\x1b[D\x1b[1;5Cuptime\x1bOH").unwrap();
    vm.wait_for("(tsc ", T).unwrap();
    let host0 = std::time::Instant::now();
    let guest0 = last_uptime_us(&vm.output());
    std::thread::sleep(Duration::from_secs(1));
    vm.send_line("\x1b[A").unwrap();
    let deadline = std::time::Instant::now() + T;
    while vm.count("(tsc ") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "arrow up did not run uptime again: {}",
            vm.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The calibrated TSC keeps the host's time: the two uptimes are as far apart as
    // the host saw them (within the serial line's latency; the gap includes a wait).
    let (host, guest) = (
        host0.elapsed().as_micros() as f64,
        (last_uptime_us(&vm.output()) - guest0) as f64,
    );
    assert!(
        host > 0.0 && (guest / host - 1.0).abs() < 0.2,
        "guest {guest} us against host {host} us"
    );
    // A line over the limit is refused whole, not cut and run.
    vm.send_line(&"x".repeat(300)).unwrap();
    vm.wait_for("error: line longer than 256 bytes; not run", T)
        .unwrap();
    assert!(
        !vm.output().contains("unknown command `xxx"),
        "{}",
        vm.output()
    );
    // Only a state change that happened is audited: `log info`, not `log loud`.
    vm.send_line("log info").unwrap();
    vm.wait_for("log level: info", T).unwrap();
    vm.send_line("audit tail 20").unwrap();
    vm.wait_for("ConsoleCommand { line: \"log info\" }", T)
        .unwrap();
    assert!(
        !vm.output().contains("line: \"log loud\""),
        "{}",
        vm.output()
    );
    assert!(
        !vm.output().contains("[1;5C"),
        "an escape sequence leaked: {}",
        vm.output()
    );
    vm.send_line("halt").unwrap();
    vm.expect_exit(Exit::Halted, T).unwrap();
}

/// Where `needle` first starts in `log` (panics with the log if it is not there).
fn at(log: &str, needle: &str) -> usize {
    log.find(needle)
        .unwrap_or_else(|| panic!("no `{needle}` in:\n{log}"))
}

/// At the default log level the boot's own lines are held and follow the ready line,
/// in order; a warning during the boot writes out what is held and then itself at
/// once, before the ready line (here: a third NIC, which gets no interrupt vector);
/// with `log=debug` every line comes as it happens, before the ready line; a boot
/// that halts before its ready line writes out what it held.
#[test]
fn boot_lines_follow_the_ready_line_but_warnings_come_at_once() {
    let mut cfg = Config::kernel("test=boot").unwrap();
    for _ in 0..3 {
        cfg.extra
            .extend(["-nic".to_string(), "user,model=e1000e".to_string()]);
    }
    let log = Vm::spawn(&cfg).unwrap().expect_exit(Exit::Pass, T).unwrap();
    let ready = at(&log, "\nxdv: ready node=0");
    let booted = at(&log, "booted via PVH");
    let warning = at(
        &log,
        "[WARN ] net: 00:04.0 polled: at most 2 NICs interrupt",
    );
    assert!(booted < warning && warning < ready, "{log}");
    // Held before the warning (in order), held after it (after the ready line).
    assert!(at(&log, "net: e1000e 00:03.0") < warning, "{log}");
    assert!(ready < at(&log, "net: e1000e 00:04.0"), "{log}");
    assert!(ready < at(&log, "loop: sleeps until"), "{log}");
    assert_eq!(ready_lines(&log).len(), 1, "{log}");

    let log = Vm::spawn(&Config::kernel("test=boot log=debug").unwrap())
        .unwrap()
        .expect_exit(Exit::Pass, T)
        .unwrap();
    let ready = at(&log, "\nxdv: ready node=0");
    assert!(at(&log, "booted via PVH") < ready, "{log}");
    assert!(at(&log, "loop: sleeps until") < ready, "{log}");

    // A boot that stops before its ready line still writes out what it held.
    let log = Vm::spawn(&Config::kernel("raft=0x4000000,0x800000").unwrap())
        .unwrap()
        .expect_exit(Exit::Fail, T)
        .unwrap();
    let halting = at(
        &log,
        "xdv: boot: the audit region overlaps the raft region; halting",
    );
    assert!(at(&log, "booted via PVH") < halting, "{log}");
    assert!(ready_lines(&log).is_empty(), "{log}");
}

#[test]
fn bad_command_line_values_are_reported_and_defaults_used() {
    let mut vm =
        Vm::spawn(&Config::kernel("log=loud bogus=1 node=7 fault=corrupt-state@100").unwrap())
            .unwrap();
    vm.wait_for("xdv: ready", T).unwrap();
    vm.send_line("halt").unwrap();
    let log = vm.expect_exit(Exit::Halted, T).unwrap();
    assert!(
        log.contains("xdv: cmdline: bad value for `log`: \"loud\""),
        "{log}"
    );
    assert!(
        log.contains("xdv: cmdline: unknown key `bogus`; ignored"),
        "{log}"
    );
    assert!(
        ready_lines(&log)[0].starts_with("xdv: ready node=7"),
        "{log}"
    );
    // The image users run has no test hooks: the hash-voting hook is refused aloud.
    assert!(
        log.contains("fault: `fault=corrupt-state@MS` refused: this kernel has no test hooks"),
        "{log}"
    );
    assert!(!log.contains("test hook armed"), "{log}");
    // Default level (info) in force: info lines are printed, debug lines are not.
    assert!(log.contains("[INFO ]") && !log.contains("[DEBUG]"), "{log}");
}

/// The host's replay log for the demo batch of `n` tasks on `cores` cores.
fn host_hashes(cores: u16, n: u64) -> (String, String) {
    let mut s = DeterministicScheduler::new(cores, MaskPlacement).unwrap();
    for cap in DEMO_GRANTS {
        s.grant_all(cap).unwrap();
    }
    for t in demo_tasks(n) {
        s.submit(t).unwrap();
    }
    let log = s.run_until_idle().unwrap();
    (log.head_hash().to_string(), outcome_digest(log).to_string())
}

fn kernel_sched(smp: u32) -> (String, String, String) {
    let log = run_test("sched", smp, Exit::Pass).unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with("sched test: cores="))
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    for cpu in 0..smp {
        assert!(
            log.contains(&format!("sched test: cpu{cpu} ran ")),
            "cpu{cpu} missing: {log}"
        );
    }
    (field("head="), field("outcomes="), log)
}

#[test]
fn run_queues_match_the_host_on_1_2_and_4_cores() {
    let (head4, out4, _) = kernel_sched(4);
    // Three boots of the same node give the same head hash.
    for _ in 0..2 {
        assert_eq!(kernel_sched(4).0, head4, "head hash differs between boots");
    }
    let (host_head4, host_out4) = host_hashes(4, 64);
    assert_eq!(head4, host_head4, "kernel (4 cores) and host disagree");
    assert_eq!(out4, host_out4);
    for smp in [1u32, 2] {
        let (head, out, _) = kernel_sched(smp);
        let (host_head, host_out) = host_hashes(smp as u16, 64);
        assert_eq!(head, host_head, "{smp} cores: kernel and host disagree");
        // Per-task outcomes and output hashes are the same as with 4 cores.
        assert_eq!(out, out4, "{smp} cores: outcomes differ from 4 cores");
        assert_eq!(out, host_out);
    }
}
