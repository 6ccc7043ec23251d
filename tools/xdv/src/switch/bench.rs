//! The switch's own forwarding limit, measured with host-side generators (no VMs):
//! a fake node 1 sends 1500-byte unicast frames to a fake node 2 through an
//! in-process switch with no faults, and node 2 counts what arrives.

use super::core::{Faults, Port};
use super::shell::{SwitchConfig, node_socket_path, port_socket_path, spawn};
use anyhow::{Context, Result};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Frame size the benchmark sends (a full Ethernet MTU payload frame).
pub const BENCH_FRAME_BYTES: usize = 1500;
/// Longest run accepted.
pub const MAX_BENCH_DURATION: Duration = Duration::from_secs(60);

const MAC_1: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x01];
const MAC_2: [u8; 6] = [0x52, 0x54, 0x00, 0xbe, 0x00, 0x02];

/// An Ethernet frame of `len` bytes from `src` to `dst` (ethertype 0x88B5, local
/// experimental), with `seq` in the first payload bytes.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(22)];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..22].copy_from_slice(&seq.to_le_bytes());
    f
}

/// Forwards 1500-byte frames node 1 → node 2 for `duration` through a fresh switch
/// and returns (frames per second, MB per second) delivered (MB = 10^6 bytes).
pub fn bench_forwarding(duration: Duration) -> Result<(f64, f64)> {
    let duration = duration.min(MAX_BENCH_DURATION);
    let dir = std::env::temp_dir().join(format!("xdv-swbench-{}", std::process::id()));
    let sw = spawn(SwitchConfig {
        dir: dir.clone(),
        ports: 2,
        seed: 0,
        faults: Faults::default(),
    })?;
    let node = |p: Port| -> Result<UnixDatagram> {
        let path = node_socket_path(&dir, p);
        let _ = std::fs::remove_file(&path);
        UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))
    };
    let (n1, n2) = (node(1)?, node(2)?);
    n2.set_read_timeout(Some(Duration::from_millis(50)))?;
    // Node 2 announces itself so the switch learns MAC_2 on port 2.
    let sw1 = port_socket_path(&dir, 1);
    let sw2 = port_socket_path(&dir, 2);
    n2.send_to(&test_frame([0xff; 6], MAC_2, 0, 64), &sw2)?;
    let mut scratch = vec![0u8; 2048];
    let _ = n1.set_read_timeout(Some(Duration::from_secs(2)));
    n1.recv(&mut scratch)
        .context("switch did not flood the announce frame")?;

    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sink = {
        let (received, done) = (received.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = n2.recv(&mut buf)
                    && n == BENCH_FRAME_BYTES
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let start = Instant::now();
    let mut seq = 1u64;
    let mut frame = test_frame(MAC_2, MAC_1, 0, BENCH_FRAME_BYTES);
    let at_start = received.load(Ordering::Relaxed);
    while start.elapsed() < duration {
        frame[14..22].copy_from_slice(&seq.to_le_bytes());
        // Blocking send: when the switch falls behind, the generator waits.
        n1.send_to(&frame, &sw1)?;
        seq += 1;
    }
    let delivered = received.load(Ordering::Relaxed) - at_start;
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sink.join();
    sw.shutdown()?;
    let _ = std::fs::remove_dir_all(&dir);
    let fps = delivered as f64 / secs;
    Ok((fps, fps * BENCH_FRAME_BYTES as f64 / 1e6))
}
