//! Switch tests: the pure core (learning, flooding, partitions, seeded faults, delay,
//! reorder, commands) and the socket shell with real unix datagram sockets.

use super::bench::test_frame;
use super::core::*;
use super::shell::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];
const C: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xc];
const BCAST: [u8; 6] = [0xff; 6];

fn ports_of(out: &[Delivery]) -> Vec<Port> {
    out.iter().map(|d| d.port).collect()
}

#[test]
fn learns_and_forwards_unicast() {
    let mut sw = SwitchCore::new(3, 1).unwrap();
    // Unknown destination: flooded to every other port.
    let out = sw.ingress(0, 1, &test_frame(B, A, 1, 60));
    assert_eq!(ports_of(&out), vec![2, 3]);
    // B answers A from port 2: A was learned on port 1, so only port 1 gets it.
    let out = sw.ingress(0, 2, &test_frame(A, B, 2, 60));
    assert_eq!(ports_of(&out), vec![1]);
    // Now B is known too.
    let out = sw.ingress(0, 1, &test_frame(B, A, 3, 60));
    assert_eq!(ports_of(&out), vec![2]);
    assert_eq!(out[0].frame, test_frame(B, A, 3, 60));
    assert_eq!(sw.mac_table().collect::<Vec<_>>(), vec![(A, 1), (B, 2)]);
    // A moves to port 3: the table follows.
    sw.ingress(0, 3, &test_frame(BCAST, A, 4, 60));
    let out = sw.ingress(0, 2, &test_frame(A, B, 5, 60));
    assert_eq!(ports_of(&out), vec![3]);
    // A frame to a MAC learned on the ingress port is not sent back.
    let out = sw.ingress(0, 3, &test_frame(A, C, 6, 60));
    assert!(out.is_empty());
    assert_eq!(sw.filtered, 1);
    let s1 = sw.stats(1).unwrap();
    // In: two frames from A. Out: B's reply and the flood from port 3.
    assert_eq!((s1.frames_in, s1.frames_out), (2, 2));
}

#[test]
fn floods_broadcast_and_multicast_and_never_learns_them() {
    let mut sw = SwitchCore::new(4, 1).unwrap();
    let out = sw.ingress(0, 2, &test_frame(BCAST, A, 1, 60));
    assert_eq!(ports_of(&out), vec![1, 3, 4]);
    let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
    let out = sw.ingress(0, 1, &test_frame(mcast, B, 2, 60));
    assert_eq!(ports_of(&out), vec![2, 3, 4]);
    // A multicast source is never learned.
    sw.ingress(0, 1, &test_frame(BCAST, mcast, 3, 60));
    assert_eq!(sw.mac_table().count(), 2);
    // Runts and giants are counted as malformed and not forwarded.
    assert!(sw.ingress(0, 1, &[0u8; 13]).is_empty());
    assert!(
        sw.ingress(0, 1, &vec![0u8; MAX_ETH_FRAME_BYTES + 1])
            .is_empty()
    );
    assert_eq!(sw.stats(1).unwrap().malformed, 2);
    // A frame from a port that does not exist is ignored.
    assert!(sw.ingress(0, 9, &test_frame(BCAST, C, 4, 60)).is_empty());
}

#[test]
fn partition_matrix() {
    let mut sw = SwitchCore::new(4, 1).unwrap();
    sw.partition(&parse_groups("1,2/3").unwrap()).unwrap();
    assert!(sw.can_reach(1, 2) && sw.can_reach(2, 1));
    assert!(!sw.can_reach(1, 3) && !sw.can_reach(3, 1));
    assert!(!sw.can_reach(2, 3) && !sw.can_reach(3, 2));
    // Port 4 was named in no group: it reaches everyone.
    for p in 1..=3 {
        assert!(sw.can_reach(4, p) && sw.can_reach(p, 4));
    }
    // A broadcast from 1 reaches 2 and 4 but not 3.
    let out = sw.ingress(0, 1, &test_frame(BCAST, A, 1, 60));
    assert_eq!(ports_of(&out), vec![2, 4]);
    assert_eq!(sw.stats(3).unwrap().partitioned, 1);
    // Asymmetric cut on top: 4 can no longer send to 1, but 1 still reaches 4.
    sw.cut(4, 1).unwrap();
    assert!(!sw.can_reach(4, 1) && sw.can_reach(1, 4));
    // A new partition replaces the old one (and the cut).
    sw.partition(&parse_groups("1/2/3,4").unwrap()).unwrap();
    assert!(!sw.can_reach(4, 1) && sw.can_reach(3, 4) && !sw.can_reach(1, 2));
    sw.heal();
    for a in 1..=4 {
        for b in 1..=4 {
            assert!(sw.can_reach(a, b));
        }
    }
    assert!(matches!(
        sw.partition(&[vec![1], vec![5]]),
        Err(SwitchError::BadPort { port: 5, .. })
    ));
    assert!(parse_groups("1,2").is_err());
    assert!(parse_groups("1,2/2").is_err());
    assert!(parse_groups("1,x/2").is_err());
}

/// Runs a fixed traffic pattern through a faulty switch and returns everything it sent
/// (with the time), so runs can be compared.
fn faulty_run(seed: u64, faults: Faults) -> Vec<(u64, Port, Vec<u8>)> {
    let mut sw = SwitchCore::new(3, seed).unwrap();
    sw.set_faults(faults).unwrap();
    let mut log = Vec::new();
    let macs = [A, B, C];
    for i in 0..600u64 {
        let now = i;
        let from = (i % 3) as usize;
        let to = ((i + 1) % 3) as usize;
        for d in sw.ingress(
            now,
            from as Port + 1,
            &test_frame(macs[to], macs[from], i, 64),
        ) {
            log.push((now, d.port, d.frame));
        }
        for d in sw.poll(now) {
            log.push((now, d.port, d.frame));
        }
    }
    for d in sw.poll(u64::MAX / 2) {
        log.push((u64::MAX, d.port, d.frame));
    }
    log
}

#[test]
fn seeded_faults_repeat_exactly_and_differ_by_seed() {
    let f = Faults {
        drop_pct: 20,
        dup_pct: 10,
        delay_ms: 3,
        reorder_pct: 15,
    };
    let a = faulty_run(42, f);
    let b = faulty_run(42, f);
    let c = faulty_run(43, f);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The faults really happened: fewer than 600 distinct frames, some duplicates.
    let distinct: std::collections::BTreeSet<_> = a.iter().map(|(_, _, fr)| fr.clone()).collect();
    assert!(
        distinct.len() < 600 && distinct.len() > 400,
        "{}",
        distinct.len()
    );
    assert!(a.len() > distinct.len());
    let mut sw = SwitchCore::new(3, 42).unwrap();
    sw.set_faults(f).unwrap();
    assert!(sw.set_faults(Faults { drop_pct: 101, ..f }).is_err());
    assert!(
        sw.set_faults(Faults {
            delay_ms: MAX_DELAY_MS + 1,
            ..f
        })
        .is_err()
    );
}

#[test]
fn drop_rate_is_close_to_setting() {
    let mut sw = SwitchCore::new(2, 7).unwrap();
    sw.set_faults(Faults {
        drop_pct: 10,
        ..Faults::default()
    })
    .unwrap();
    sw.ingress(0, 2, &test_frame(BCAST, B, 0, 60));
    let mut delivered = 0;
    for i in 0..10_000 {
        delivered += sw.ingress(0, 1, &test_frame(B, A, i, 60)).len();
    }
    assert!((8800..=9200).contains(&delivered), "{delivered}");
    assert_eq!(sw.stats(2).unwrap().dropped as usize, 10_000 - delivered);
}

#[test]
fn delay_releases_at_deadline() {
    let mut sw = SwitchCore::new(2, 1).unwrap();
    sw.set_faults(Faults {
        delay_ms: 20,
        ..Faults::default()
    })
    .unwrap();
    assert!(sw.ingress(100, 1, &test_frame(BCAST, A, 1, 60)).is_empty());
    assert_eq!(sw.next_deadline_ms(), Some(120));
    assert!(sw.poll(119).is_empty());
    let out = sw.poll(120);
    assert_eq!(ports_of(&out), vec![2]);
    assert_eq!(sw.pending(), 0);
    assert_eq!(sw.stats(2).unwrap().delayed, 1);
}

#[test]
fn port_delay_slows_only_that_ports_links() {
    let mut sw = SwitchCore::new(3, 1).unwrap();
    let cmd = Command::parse("delay 30 3").unwrap();
    assert_eq!(cmd, Command::PortDelay(30, vec![3]));
    assert!(sw.apply(&cmd).unwrap().contains("port3+30ms"));
    assert!(sw.apply(&Command::parse("delay 30 4").unwrap()).is_err());
    // A floods from 1: port 2 gets it now, port 3 after 30 ms.
    let out = sw.ingress(100, 1, &test_frame(BCAST, A, 1, 60));
    assert_eq!(ports_of(&out), vec![2]);
    assert_eq!(sw.next_deadline_ms(), Some(130));
    assert!(sw.poll(129).is_empty());
    assert_eq!(ports_of(&sw.poll(130)), vec![3]);
    // From port 3 the delay applies too; cleared with `delay 0 3`.
    assert!(sw.ingress(200, 3, &test_frame(BCAST, C, 2, 60)).is_empty());
    assert_eq!(ports_of(&sw.poll(230)), vec![1, 2]);
    sw.apply(&Command::parse("delay 0 3").unwrap()).unwrap();
    assert_eq!(sw.ingress(300, 3, &test_frame(BCAST, C, 3, 60)).len(), 2);
}

#[test]
fn reorder_swaps_with_next_frame_or_times_out() {
    let mut sw = SwitchCore::new(2, 1).unwrap();
    sw.set_faults(Faults {
        reorder_pct: 100,
        ..Faults::default()
    })
    .unwrap();
    // First frame is held; the second (cannot be held too) goes out, then the first.
    assert!(sw.ingress(0, 1, &test_frame(BCAST, A, 1, 60)).is_empty());
    let out = sw.ingress(1, 1, &test_frame(BCAST, A, 2, 60));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].frame, test_frame(BCAST, A, 2, 60));
    assert_eq!(out[1].frame, test_frame(BCAST, A, 1, 60));
    // A held frame with no follower is released after REORDER_HOLD_MAX_MS.
    assert!(sw.ingress(10, 1, &test_frame(BCAST, A, 3, 60)).is_empty());
    assert_eq!(sw.next_deadline_ms(), Some(10 + REORDER_HOLD_MAX_MS));
    assert!(sw.poll(10 + REORDER_HOLD_MAX_MS - 1).is_empty());
    assert_eq!(sw.poll(10 + REORDER_HOLD_MAX_MS).len(), 1);
}

#[test]
fn commands_parse_and_apply() {
    let mut sw = SwitchCore::new(3, 1).unwrap();
    let mut run = |s: &str| Command::parse(s).and_then(|c| sw.apply(&c));
    assert_eq!(run("partition 1,2/3").unwrap(), "ok: partition 1,2/3");
    assert!(run("stats").unwrap().contains("blocked: 1>3 2>3 3>1 3>2"));
    assert_eq!(run("heal").unwrap(), "ok: healed");
    assert!(run("cut 2>1").unwrap().starts_with("ok"));
    assert!(run("drop 10").unwrap().contains("drop 10%"));
    assert!(run("dup 5").unwrap().contains("dup 5%"));
    assert!(run("delay 20").unwrap().contains("delay 20 ms"));
    assert!(run("reorder 7").unwrap().contains("reorder 7%"));
    assert_eq!(
        run("faults").unwrap(),
        "drop 10% dup 5% delay 20 ms reorder 7%"
    );
    let json: serde_json::Value = serde_json::from_str(&run("stats json").unwrap()).unwrap();
    assert_eq!(json["faults"]["drop_pct"], 10);
    assert_eq!(json["blocked"], serde_json::json!([[2, 1]]));
    assert_eq!(json["ports"].as_array().unwrap().len(), 3);
    assert!(run("macs").unwrap().ends_with("0 entries"));
    for bad in [
        "",
        "drop",
        "drop 101",
        "drop x",
        "delay 99999",
        "partition 1",
        "cut 1-2",
        "cut 1>9",
        "heal now",
        "fly",
    ] {
        assert!(run(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(Command::parse("shutdown").unwrap(), Command::Shutdown);
    assert!(SwitchCore::new(0, 1).is_err());
    assert!(SwitchCore::new(MAX_PORTS + 1, 1).is_err());
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("xdv-sw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn recv_frame(sock: &UnixDatagram) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// Two fake nodes exchange frames through a switch on real unix datagram sockets;
/// partitions and faults are changed through the control socket while it runs.
#[test]
fn sockets_end_to_end() {
    let started = Instant::now();
    let dir = temp_dir("e2e");
    assert!(wait_ready(&dir, Duration::from_millis(50)).is_err());
    let sw = spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 2,
        seed: 9,
        faults: Faults::default(),
    })
    .unwrap();
    // A second switch on the same directory is refused.
    assert!(
        spawn(SwitchConfig {
            dir: dir.clone(),
            ports: 2,
            seed: 9,
            faults: Faults::default()
        })
        .is_err()
    );
    wait_ready(&dir, Duration::from_secs(5)).unwrap();
    let n1 = UnixDatagram::bind(node_socket_path(&dir, 1)).unwrap();
    let n2 = UnixDatagram::bind(node_socket_path(&dir, 2)).unwrap();
    for n in [&n1, &n2] {
        n.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let (sw1, sw2) = (port_socket_path(&dir, 1), port_socket_path(&dir, 2));

    n1.send_to(&test_frame(BCAST, A, 1, 60), &sw1).unwrap();
    assert_eq!(recv_frame(&n2).unwrap(), test_frame(BCAST, A, 1, 60));
    n2.send_to(&test_frame(A, B, 2, 1500), &sw2).unwrap();
    assert_eq!(recv_frame(&n1).unwrap(), test_frame(A, B, 2, 1500));
    for i in 0..50 {
        n1.send_to(&test_frame(B, A, 10 + i, 200), &sw1).unwrap();
        assert_eq!(recv_frame(&n2).unwrap(), test_frame(B, A, 10 + i, 200));
    }

    // Partition: nothing gets through; heal: traffic flows again.
    assert_eq!(sw.control("partition 1/2").unwrap(), "ok: partition 1/2");
    n1.send_to(&test_frame(B, A, 100, 60), &sw1).unwrap();
    n2.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(recv_frame(&n2).is_none());
    assert_eq!(control(&dir, "heal").unwrap(), "ok: healed");
    n2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    n1.send_to(&test_frame(B, A, 101, 60), &sw1).unwrap();
    assert_eq!(recv_frame(&n2).unwrap(), test_frame(B, A, 101, 60));

    // Delay: the frame arrives, but not before the delay.
    control(&dir, "delay 150").unwrap();
    let t = Instant::now();
    n1.send_to(&test_frame(B, A, 102, 60), &sw1).unwrap();
    assert_eq!(recv_frame(&n2).unwrap(), test_frame(B, A, 102, 60));
    assert!(
        t.elapsed() >= Duration::from_millis(140),
        "{:?}",
        t.elapsed()
    );
    control(&dir, "delay 0").unwrap();

    let stats: serde_json::Value =
        serde_json::from_str(&control(&dir, "stats json").unwrap()).unwrap();
    assert_eq!(stats["ports"][0][1]["frames_in"], 54);
    assert_eq!(stats["ports"][1][1]["partitioned"], 1);
    assert_eq!(stats["ports"][1][1]["delayed"], 1);
    assert_eq!(stats["macs"], 2);
    assert!(
        control(&dir, "bogus")
            .unwrap_err()
            .to_string()
            .contains("unknown command")
    );

    assert_eq!(control(&dir, "shutdown").unwrap(), "ok: shutting down");
    let mut sw = sw;
    sw.join().unwrap();
    assert!(!control_socket_path(&dir).exists());
    assert!(!port_socket_path(&dir, 1).exists());
    drop(sw);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A port whose node never attached counts tx errors instead of failing.
#[test]
fn missing_node_counts_tx_errors() {
    let dir = temp_dir("missing");
    let sw = spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 2,
        seed: 1,
        faults: Faults::default(),
    })
    .unwrap();
    let n1 = UnixDatagram::bind(node_socket_path(&dir, 1)).unwrap();
    for i in 0..5 {
        n1.send_to(&test_frame(BCAST, A, i, 60), port_socket_path(&dir, 1))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&sw.control("stats json").unwrap()).unwrap();
        if s["ports"][1][1]["tx_errors"] == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "tx errors not counted: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    sw.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_forwarding_delivers_frames() {
    let (fps, mbps) = super::bench_forwarding(Duration::from_millis(300)).unwrap();
    assert!(fps > 1000.0, "{fps}");
    assert!((mbps - fps * 1500.0 / 1e6).abs() < 1e-6);
}

/// Prints the forwarding limit (run: `cargo test -p xdv --release --lib
/// switch::tests::bench_forwarding_report -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_forwarding_report() {
    let (fps, mbps) = super::bench_forwarding(Duration::from_secs(2)).unwrap();
    println!("switch forwarding: {fps:.0} frames/s, {mbps:.1} MB/s (1500-byte frames)");
}

/// A QEMU-style stream client (`[u32 BE length][frame]`) on port 2 talks to a datagram
/// node on port 1; after it disconnects, the port falls back to the datagram socket.
#[test]
fn stream_client_and_datagram_node() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let dir = temp_dir("stream");
    let sw = spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 2,
        seed: 1,
        faults: Faults::default(),
    })
    .unwrap();
    let n1 = UnixDatagram::bind(node_socket_path(&dir, 1)).unwrap();
    n1.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut s2 = UnixStream::connect(stream_socket_path(&dir, 2)).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let f = test_frame(BCAST, B, 1, 300);
    // Two frames in one write, split oddly: the reader must reassemble them.
    let mut bytes = Vec::new();
    for _ in 0..2 {
        bytes.extend_from_slice(&(f.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&f);
    }
    s2.write_all(&bytes[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s2.write_all(&bytes[7..]).unwrap();
    assert_eq!(recv_frame(&n1).unwrap(), f);
    assert_eq!(recv_frame(&n1).unwrap(), f);
    // The connection was registered before its first frame was read, so the reply
    // goes out on the stream, not to the (absent) datagram node socket.
    let reply = test_frame(B, A, 2, 80);
    n1.send_to(&reply, port_socket_path(&dir, 1)).unwrap();
    let mut len = [0u8; 4];
    s2.read_exact(&mut len).unwrap();
    assert_eq!(u32::from_be_bytes(len) as usize, reply.len());
    let mut got = vec![0u8; reply.len()];
    s2.read_exact(&mut got).unwrap();
    assert_eq!(got, reply);
    // An oversized length closes the stream connection.
    s2.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let mut one = [0u8; 1];
    assert_eq!(s2.read(&mut one).unwrap_or(0), 0);
    sw.shutdown().unwrap();
    assert!(!stream_socket_path(&dir, 2).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
