//! The switch's I/O shell: one unix datagram socket per port, a control socket, and
//! threads that move bytes between them and the pure [`SwitchCore`].
//!
//! Threads: one receiver per port (blocking `recv`, 100 ms timeout to notice
//! shutdown) and one sender per port (a bounded queue, so a node that stops reading
//! stalls only its own port; a full queue counts a `tx_errors`), one control-socket
//! acceptor, and the main loop, which owns the core and is the only place decisions
//! are made. Frames reach the core in the order the main loop receives them.

use super::core::{Command, Delivery, Faults, MAX_ETH_FRAME_BYTES, Port, SwitchCore};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames waiting for the main loop (receivers block beyond it: back-pressure).
pub const RX_QUEUE_FRAMES: usize = 4096;
/// Frames waiting to be sent out of one port; beyond it frames are dropped and counted.
pub const TX_QUEUE_FRAMES: usize = 1024;
/// Longest control command line.
pub const MAX_CONTROL_LINE_BYTES: usize = 1024;
/// How long a control client waits for the switch's reply.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest unix socket path (sun_path is 108 bytes including the NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Socket the switch binds for port `port`: QEMU's `remote.path`.
pub fn port_socket_path(dir: &Path, port: Port) -> PathBuf {
    dir.join(format!("sw-{port}.sock"))
}

/// Socket node `port`'s QEMU binds (`local.path`); the switch sends there.
pub fn node_socket_path(dir: &Path, port: Port) -> PathBuf {
    dir.join(format!("node-{port}.sock"))
}

/// Stream socket the switch listens on for port `port` (QEMU `-netdev stream` client;
/// frames carry a 4-byte big-endian length prefix). Optional alternative to the dgram pair.
pub fn stream_socket_path(dir: &Path, port: Port) -> PathBuf {
    dir.join(format!("sw-{port}.stream"))
}

/// The `-netdev` argument that attaches node `port`'s QEMU through the stream socket.
pub fn qemu_stream_netdev_arg(dir: &Path, port: Port, id: &str) -> String {
    format!(
        "stream,id={id},server=off,addr.type=unix,addr.path={}",
        stream_socket_path(dir, port).display()
    )
}

/// The control socket (unix stream, one command per connection).
pub fn control_socket_path(dir: &Path) -> PathBuf {
    dir.join("ctl.sock")
}

/// The `-netdev` argument that attaches node `port`'s QEMU to this switch.
pub fn qemu_netdev_arg(dir: &Path, port: Port, id: &str) -> String {
    format!(
        "dgram,id={id},local.type=unix,local.path={},remote.type=unix,remote.path={}",
        node_socket_path(dir, port).display(),
        port_socket_path(dir, port).display()
    )
}

/// How to start a switch.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    pub dir: PathBuf,
    pub ports: u16,
    pub seed: u64,
    pub faults: Faults,
}

enum Event {
    Frame(Port, Vec<u8>),
    Control(String, mpsc::Sender<String>),
}

/// A running switch (threads inside this process).
pub struct SwitchHandle {
    dir: PathBuf,
    ports: u16,
    stop: Arc<AtomicBool>,
    main: Option<JoinHandle<Result<()>>>,
}

impl SwitchHandle {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends one control command and returns the reply (see [`control`]).
    pub fn control(&self, command: &str) -> Result<String> {
        control(&self.dir, command)
    }

    /// Stops every thread, removes the sockets and returns the main loop's result.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Waits until the switch stops (after a `shutdown` control command).
    pub fn join(&mut self) -> Result<()> {
        let r = match self.main.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("switch thread panicked"))),
            None => Ok(()),
        };
        remove_sockets(&self.dir, self.ports);
        r
    }
}

impl Drop for SwitchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.join();
    }
}

fn remove_sockets(dir: &Path, ports: u16) {
    for p in 1..=ports {
        let _ = std::fs::remove_file(port_socket_path(dir, p));
        let _ = std::fs::remove_file(stream_socket_path(dir, p));
    }
    let _ = std::fs::remove_file(control_socket_path(dir));
}

fn check_path(p: &Path) -> Result<()> {
    let n = p.as_os_str().len();
    if n > MAX_SOCKET_PATH_BYTES {
        bail!(
            "socket path {} is {n} bytes, over the unix limit of {MAX_SOCKET_PATH_BYTES}",
            p.display()
        );
    }
    Ok(())
}

/// Binds every socket under `config.dir` and starts the switch threads.
pub fn spawn(config: SwitchConfig) -> Result<SwitchHandle> {
    let mut core = SwitchCore::new(config.ports, config.seed)?;
    core.set_faults(config.faults)?;
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let ctl_path = control_socket_path(&config.dir);
    check_path(&ctl_path)?;
    check_path(&node_socket_path(&config.dir, config.ports))?;
    if UnixStream::connect(&ctl_path).is_ok() {
        bail!(
            "a switch is already running with control socket {}",
            ctl_path.display()
        );
    }
    remove_sockets(&config.dir, config.ports);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Event>(RX_QUEUE_FRAMES);
    let tx_errors: Arc<Vec<AtomicU64>> =
        Arc::new((0..=config.ports).map(|_| AtomicU64::new(0)).collect());
    let mut senders = vec![None];
    let mut threads = Vec::new();
    for port in 1..=config.ports {
        let path = port_socket_path(&config.dir, port);
        let sock =
            UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        sock.set_read_timeout(Some(POLL_INTERVAL))?;
        let rx_sock = sock.try_clone()?;
        threads.push(spawn_receiver(port, rx_sock, tx.clone(), stop.clone())?);
        let stream: StreamSlot = Arc::new(Mutex::new(None));
        let spath = stream_socket_path(&config.dir, port);
        let listener =
            UnixListener::bind(&spath).with_context(|| format!("binding {}", spath.display()))?;
        listener.set_nonblocking(true)?;
        threads.push(spawn_stream_port(
            port,
            listener,
            stream.clone(),
            tx.clone(),
            stop.clone(),
        )?);
        let (ptx, prx) = mpsc::sync_channel::<Vec<u8>>(TX_QUEUE_FRAMES);
        let dest = node_socket_path(&config.dir, port);
        threads.push(spawn_sender(
            port,
            sock,
            stream,
            dest,
            prx,
            tx_errors.clone(),
        )?);
        senders.push(Some(ptx));
    }
    let listener =
        UnixListener::bind(&ctl_path).with_context(|| format!("binding {}", ctl_path.display()))?;
    listener.set_nonblocking(true)?;
    threads.push(spawn_control(listener, tx, stop.clone())?);
    let stop2 = stop.clone();
    let main = std::thread::Builder::new()
        .name("xdv-switch".into())
        .spawn(move || {
            let r = main_loop(core, rx, senders, tx_errors, &stop2);
            stop2.store(true, Ordering::SeqCst);
            for t in threads {
                let _ = t.join();
            }
            r
        })?;
    Ok(SwitchHandle {
        dir: config.dir,
        ports: config.ports,
        stop,
        main: Some(main),
    })
}

/// Runs a switch in the foreground until a `shutdown` control command.
pub fn run(config: SwitchConfig) -> Result<()> {
    let mut h = spawn(config)?;
    h.join()
}

fn spawn_receiver(
    port: Port,
    sock: UnixDatagram,
    tx: SyncSender<Event>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name(format!("sw-rx-{port}"))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_ETH_FRAME_BYTES + 1];
            while !stop.load(Ordering::Relaxed) {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if tx.send(Event::Frame(port, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => {
                        eprintln!("xdv switch: port {port}: receive failed: {e}; port stopped");
                        return;
                    }
                }
            }
        })?)
}

/// The stream connection of one port, if a QEMU `stream` client is attached.
type StreamSlot = Arc<Mutex<Option<UnixStream>>>;

/// Bytes of the length prefix of the stream framing (QEMU `-netdev stream`).
const STREAM_PREFIX_LEN: usize = 4;

/// Accepts one stream client at a time on a port; reads its length-prefixed frames into
/// the main loop until it disconnects, then accepts the next (a restarted QEMU).
fn spawn_stream_port(
    port: Port,
    listener: UnixListener,
    slot: StreamSlot,
    tx: SyncSender<Event>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name(format!("sw-st-{port}"))
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Err(e) => {
                        eprintln!("xdv switch: port {port}: stream accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                if let Err(e) = serve_stream(port, conn, &slot, &tx, &stop) {
                    eprintln!("xdv switch: port {port}: stream client: {e:#}");
                }
                if let Ok(mut g) = slot.lock() {
                    *g = None;
                }
            }
        })?)
}

/// Reads QEMU stream framing (`[u32 BE length][frame]`) from one client.
fn serve_stream(
    port: Port,
    conn: UnixStream,
    slot: &StreamSlot,
    tx: &SyncSender<Event>,
    stop: &AtomicBool,
) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(POLL_INTERVAL))?;
    conn.set_write_timeout(Some(CONTROL_TIMEOUT))?;
    if let Ok(mut g) = slot.lock() {
        *g = Some(conn.try_clone()?);
    }
    let mut reader = conn;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() - at >= STREAM_PREFIX_LEN {
            let mut len_be = [0u8; STREAM_PREFIX_LEN];
            len_be.copy_from_slice(&buf[at..at + STREAM_PREFIX_LEN]);
            let len = u32::from_be_bytes(len_be) as usize;
            if len > MAX_ETH_FRAME_BYTES {
                bail!("frame length {len} over {MAX_ETH_FRAME_BYTES}; connection closed");
            }
            if buf.len() - at < STREAM_PREFIX_LEN + len {
                break;
            }
            let frame = buf[at + STREAM_PREFIX_LEN..at + STREAM_PREFIX_LEN + len].to_vec();
            at += STREAM_PREFIX_LEN + len;
            if tx.send(Event::Frame(port, frame)).is_err() {
                return Ok(());
            }
        }
        buf.drain(..at);
    }
    Ok(())
}

fn spawn_sender(
    port: Port,
    sock: UnixDatagram,
    stream: StreamSlot,
    dest: PathBuf,
    rx: Receiver<Vec<u8>>,
    errors: Arc<Vec<AtomicU64>>,
) -> Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name(format!("sw-tx-{port}"))
        .spawn(move || {
            // Ends when the main loop drops the queue's sender.
            while let Ok(frame) = rx.recv() {
                // A stream client, when attached, takes the port's traffic.
                let mut guard = stream.lock().ok();
                let sent = match guard.as_deref_mut().and_then(Option::as_mut) {
                    Some(conn) => {
                        let len = (frame.len() as u32).to_be_bytes();
                        conn.write_all(&len)
                            .and_then(|_| conn.write_all(&frame))
                            .is_ok()
                    }
                    // ENOENT / ECONNREFUSED: the node is not attached (yet); counted.
                    None => sock.send_to(&frame, &dest).is_ok(),
                };
                drop(guard);
                if !sent {
                    errors[port as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
        })?)
}

fn spawn_control(
    listener: UnixListener,
    tx: SyncSender<Event>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name("sw-ctl".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = serve_control(stream, &tx) {
                            eprintln!("xdv switch: control connection: {e:#}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        eprintln!("xdv switch: control socket accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        })?)
}

fn serve_control(mut stream: UnixStream, tx: &SyncSender<Event>) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    let mut line = Vec::new();
    (&mut stream)
        .take(MAX_CONTROL_LINE_BYTES as u64 + 1)
        .read_to_end(&mut line)?;
    let reply = if line.len() > MAX_CONTROL_LINE_BYTES {
        format!("error: command over {MAX_CONTROL_LINE_BYTES} bytes")
    } else {
        let text = String::from_utf8_lossy(&line).trim().to_string();
        let (rtx, rrx) = mpsc::channel();
        tx.send(Event::Control(text, rtx))
            .map_err(|_| anyhow::anyhow!("switch stopped"))?;
        rrx.recv_timeout(CONTROL_TIMEOUT)
            .unwrap_or_else(|_| "error: switch did not answer".into())
    };
    stream.write_all(reply.as_bytes())?;
    stream.write_all(b"\n")?;
    Ok(())
}

fn main_loop(
    mut core: SwitchCore,
    rx: Receiver<Event>,
    mut senders: Vec<Option<SyncSender<Vec<u8>>>>,
    tx_errors: Arc<Vec<AtomicU64>>,
    stop: &AtomicBool,
) -> Result<()> {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut seen_errors = vec![0u64; tx_errors.len()];
    while !stop.load(Ordering::Relaxed) {
        let timeout = match core.next_deadline_ms() {
            Some(t) => Duration::from_millis(t.saturating_sub(now_ms())).min(POLL_INTERVAL),
            None => POLL_INTERVAL,
        };
        let out = match rx.recv_timeout(timeout) {
            Ok(Event::Frame(port, frame)) => core.ingress(now_ms(), port, &frame),
            Ok(Event::Control(line, reply)) => {
                sync_tx_errors(&mut core, &tx_errors, &mut seen_errors);
                let (text, shutdown) = match Command::parse(&line) {
                    Ok(cmd) => match core.apply(&cmd) {
                        Ok(t) => (t, cmd == Command::Shutdown),
                        Err(e) => (format!("error: {e}"), false),
                    },
                    Err(e) => (format!("error: {e}"), false),
                };
                let _ = reply.send(text);
                if shutdown {
                    break;
                }
                Vec::new()
            }
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        send_all(&mut core, &senders, out);
        let due = core.poll(now_ms());
        send_all(&mut core, &senders, due);
    }
    senders.clear(); // ends the sender threads
    Ok(())
}

fn sync_tx_errors(core: &mut SwitchCore, errors: &[AtomicU64], seen: &mut [u64]) {
    for (port, counter) in errors.iter().enumerate().skip(1) {
        let now = counter.load(Ordering::Relaxed);
        for _ in seen[port]..now {
            core.record_tx_error(port as Port);
        }
        seen[port] = now;
    }
}

fn send_all(core: &mut SwitchCore, senders: &[Option<SyncSender<Vec<u8>>>], out: Vec<Delivery>) {
    for d in out {
        let Some(Some(s)) = senders.get(d.port as usize) else {
            continue;
        };
        match s.try_send(d.frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                core.record_tx_error(d.port)
            }
        }
    }
}

/// Waits until a switch answers on `dir`'s control socket (e.g. after starting
/// `xdv switch` as a child process), polling every 20 ms up to `timeout`.
pub fn wait_ready(dir: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match control(dir, "faults") {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "switch in {} not ready after {timeout:?}",
                    dir.display()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends one command line to the switch whose sockets are in `dir` and returns its
/// reply. A reply starting with `error:` becomes an `Err`.
pub fn control(dir: &Path, command: &str) -> Result<String> {
    let path = control_socket_path(dir);
    let mut s = UnixStream::connect(&path)
        .with_context(|| format!("connecting to switch control socket {}", path.display()))?;
    s.set_read_timeout(Some(CONTROL_TIMEOUT + Duration::from_secs(1)))?;
    s.write_all(command.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let reply = reply.trim_end().to_string();
    if let Some(e) = reply.strip_prefix("error: ") {
        bail!("switch: {e}");
    }
    Ok(reply)
}
