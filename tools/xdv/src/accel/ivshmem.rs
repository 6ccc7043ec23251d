//! The server side of QEMU's ivshmem protocol (QEMU `docs/specs/ivshmem-spec.rst`)
//! for ONE accelerator device, and the device's view of the shared memory.
//!
//! The device is a peer that never connects: it has the fixed peer id
//! [`DEVICE_PEER`] (0) and owns one eventfd per vector (its doorbells). A client —
//! QEMU's `ivshmem-doorbell` of the node the device belongs to — gets, on connect,
//! exactly what the spec lists, each message one 8-byte little-endian signed number
//! with at most one fd (SCM_RIGHTS):
//!
//! 1. the protocol version, [`PROTOCOL_VERSION`] (0);
//! 2. the client's id (1, 2, …: a new id per connection, never 0);
//! 3. -1 with the shared-memory fd;
//! 4. the device's peer id 0, [`VECTORS`] times, with the device's eventfds (the
//!    guest rings vector `v` by writing `(0 << 16) | v` to the Doorbell register);
//! 5. the client's own id, [`VECTORS`] times, with fresh eventfds of its own (the
//!    device interrupts the guest with vector `v` by signalling the `v`-th).
//!
//! One client at a time: a node has one QEMU. A connection while a client is
//! connected is closed unanswered (QEMU then fails to realise the device, loudly);
//! the end of the old connection is checked first, so a restarted node (whose old
//! QEMU has exited) is admitted. With no other client there is nobody to send
//! disconnect notifications to. The shared memory lives as long as the server; it is
//! re-initialised by the caller's `prepare` before each new client sees it.
//!
//! Invariants: the mapping is exactly [`STD_WINDOW_BYTES`] (a power of two, as QEMU
//! requires of a BAR); every access through [`ShmMap`] is bounds-checked and
//! volatile; the socket file is removed when the server is dropped.

use anyhow::{Context, Result, bail};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};
use xdv_accel::regs::{DeviceMemory, STD_WINDOW_BYTES, VECTORS};

/// The protocol version this server speaks (the spec's current one).
pub const PROTOCOL_VERSION: i64 = 0;
/// The device's own peer id (its register block says so: `off::PEER`).
pub const DEVICE_PEER: u16 = 0;
/// Bytes of one protocol message.
pub const MSG_BYTES: usize = 8;

const _: () = assert!(STD_WINDOW_BYTES.is_power_of_two());

fn errno(what: &str) -> anyhow::Error {
    anyhow::Error::new(io::Error::last_os_error()).context(what.to_string())
}

/// An eventfd (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative return is a fresh fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(errno("eventfd"));
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wraps an eventfd received from the server (test clients).
    pub fn from_owned(fd: OwnedFd) -> EventFd {
        EventFd(fd)
    }

    /// Adds 1 to the counter (the peer's side sees the fd readable).
    pub fn signal(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to an fd we own.
        let n = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        match n {
            8 => Ok(()),
            // The counter is at its maximum: the peer has a wake-up pending anyway.
            _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Reads the counter to zero; true if it was signalled.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from an fd we own.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        n == 8 && u64::from_ne_bytes(buf) > 0
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passed; returns the readable
/// ones' indices (hang-up and error count as readable: the reader finds out).
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<usize>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live, exclusively borrowed array of `p.len()` pollfd structs.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    Ok(p.iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

/// A shared mapping of a device window: the device's (and a test client's) view.
pub struct ShmMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, valid until `Drop` unmaps it; nothing
// in it is tied to the thread that created it, and every access is volatile.
unsafe impl Send for ShmMap {}

impl ShmMap {
    /// Maps `len` bytes of `fd` shared, read-write.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> Result<ShmMap> {
        assert!(len > 0);
        // SAFETY: a fresh mapping at an address the kernel picks; no existing memory
        // is affected. The fd is valid for the duration of the call.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(errno("mmap of the shared memory"));
        }
        Ok(ShmMap {
            ptr: ptr.cast(),
            len,
        })
    }

    fn check(&self, off: usize, n: usize) {
        assert!(
            off.checked_add(n).is_some_and(|end| end <= self.len),
            "device window access {off:#x}+{n} outside {:#x} bytes",
            self.len
        );
    }
}

impl Drop for ShmMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl DeviceMemory for ShmMap {
    fn window_bytes(&self) -> usize {
        self.len
    }
    fn read32(&self, off: usize) -> u32 {
        self.check(off, 4);
        assert!(off.is_multiple_of(4), "unaligned register read at {off:#x}");
        // SAFETY: in bounds (checked) and 4-byte aligned (page-aligned base, checked
        // offset); the memory is mapped for the life of `self`.
        u32::from_le(unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u32>()) })
    }
    fn write32(&self, off: usize, value: u32) {
        self.check(off, 4);
        assert!(
            off.is_multiple_of(4),
            "unaligned register write at {off:#x}"
        );
        // SAFETY: as in `read32`.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u32>(), value.to_le()) }
    }
    fn read_bytes(&self, off: usize, out: &mut [u8]) {
        self.check(off, out.len());
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `off + i < off + out.len() <= len` (checked above).
            *b = unsafe { std::ptr::read_volatile(self.ptr.add(off + i)) };
        }
    }
    fn write_bytes(&self, off: usize, data: &[u8]) {
        self.check(off, data.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `off + i < off + data.len() <= len` (checked above).
            unsafe { std::ptr::write_volatile(self.ptr.add(off + i), *b) };
        }
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// The shared memory: a memfd of [`STD_WINDOW_BYTES`] and the device's mapping of it.
pub struct Shm {
    fd: OwnedFd,
    map: ShmMap,
}

impl Shm {
    pub fn new() -> Result<Shm> {
        // SAFETY: the name is a NUL-terminated literal; a non-negative return is a
        // fresh fd we own.
        let fd = unsafe { libc::memfd_create(c"xdv-accel".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(errno("memfd_create"));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on an fd we own, with a size that fits off_t.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), STD_WINDOW_BYTES as libc::off_t) } != 0 {
            return Err(errno("sizing the shared memory"));
        }
        let map = ShmMap::map(fd.as_fd(), STD_WINDOW_BYTES)?;
        Ok(Shm { fd, map })
    }

    pub fn memory(&self) -> &ShmMap {
        &self.map
    }
}

/// Sends one protocol message: `value` (8 bytes LE) and, optionally, one fd.
pub fn send_msg(stream: &UnixStream, value: i64, fd: Option<RawFd>) -> io::Result<()> {
    let mut data = value.to_le_bytes();
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // u64-aligned room for one cmsghdr carrying one int (CMSG_SPACE(4) = 24 on LP64).
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid empty header; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
        assert!(space <= size_of_val(&cbuf));
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed, aligned bytes we own, so the
        // first header is inside it and has room for one int of data.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: `msg` points at live buffers (`data`, `cbuf`) for the whole call.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match n {
        n if n == MSG_BYTES as isize => Ok(()),
        n if n < 0 => Err(io::Error::last_os_error()),
        n => Err(io::Error::other(format!(
            "short ivshmem message: {n} of {MSG_BYTES} bytes sent"
        ))),
    }
}

/// Receives one protocol message (the client side: tests and tools). `None` at
/// end of stream.
pub fn recv_msg(stream: &UnixStream) -> io::Result<Option<(i64, Option<OwnedFd>)>> {
    let mut data = [0u8; MSG_BYTES];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid empty header; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&cbuf) as _;
    // SAFETY: `msg` points at live buffers we own for the whole call.
    let n = unsafe {
        libc::recvmsg(
            stream.as_raw_fd(),
            &mut msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_WAITALL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: the kernel filled `msg_control`/`msg_controllen`; the CMSG macros walk
    // only inside that buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                // The kernel installed this fd for us: we own it now.
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    match n as usize {
        0 => Ok(None),
        MSG_BYTES => Ok(Some((i64::from_le_bytes(data), fd))),
        n => Err(io::Error::other(format!(
            "short ivshmem message: {n} of {MSG_BYTES} bytes"
        ))),
    }
}

/// The connected client (a node's QEMU).
struct Client {
    stream: UnixStream,
    id: u16,
    /// Signalled by the device to interrupt the guest, one per vector.
    fds: Vec<EventFd>,
}

/// What happened on the server socket.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Connected(u16),
    Disconnected(u16),
    /// A connection while a client was connected: closed unanswered.
    Refused,
}

/// The ivshmem server for one device.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    shm: Shm,
    doorbells: Vec<EventFd>,
    client: Option<Client>,
    next_id: u16,
}

/// Binds `path`, refusing one a live server answers on; a stale socket file (its
/// server gone) is replaced.
///
/// The liveness probe is a connection to `probe` (the socket itself unless given):
/// the ivshmem socket is probed through its device's control socket, because a
/// connection to it is a client the server admits.
pub fn bind_unix(path: &Path, probe: Option<&Path>) -> Result<UnixListener> {
    if path.exists() || probe.is_some_and(Path::exists) {
        if UnixStream::connect(probe.unwrap_or(path)).is_ok() {
            bail!(
                "socket {} is in use (another device is serving it; stop it first)",
                path.display()
            );
        }
        if path.exists() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
    }
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

impl Server {
    /// Creates the shared memory and the device's doorbells and listens on `path`
    /// (`probe`: see [`bind_unix`]).
    pub fn bind(path: &Path, probe: Option<&Path>) -> Result<Server> {
        let listener = bind_unix(path, probe)?;
        listener.set_nonblocking(true)?;
        let doorbells = (0..VECTORS)
            .map(|_| EventFd::new())
            .collect::<Result<Vec<_>>>()?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            shm: Shm::new()?,
            doorbells,
            client: None,
            next_id: 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn memory(&self) -> &ShmMap {
        self.shm.memory()
    }

    /// The device's doorbells, by vector.
    pub fn doorbells(&self) -> &[EventFd] {
        &self.doorbells
    }

    /// The connected client's id.
    pub fn client(&self) -> Option<u16> {
        self.client.as_ref().map(|c| c.id)
    }

    /// The fds worth waiting on: the listener and the client's connection.
    pub fn socket_fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.listener.as_raw_fd()];
        v.extend(self.client.as_ref().map(|c| c.stream.as_raw_fd()));
        v
    }

    /// Handles a closed client connection and a new one; returns what happened.
    /// `prepare` runs before a new client is sent anything, so the memory it maps
    /// is already in the state the client must first see.
    pub fn service(&mut self, prepare: &mut dyn FnMut(&ShmMap)) -> Result<Vec<Event>> {
        let mut ev = Vec::new();
        if let Some(c) = &self.client
            && client_gone(&c.stream)
        {
            ev.push(Event::Disconnected(c.id));
            self.client = None;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(c) = &self.client {
                        eprintln!(
                            "xdv accel: refused a second client while client {} is connected",
                            c.id
                        );
                        ev.push(Event::Refused);
                        drop(stream);
                        continue;
                    }
                    prepare(self.shm.memory());
                    match self.admit(stream) {
                        Ok(id) => ev.push(Event::Connected(id)),
                        Err(e) => eprintln!("xdv accel: a client failed during setup: {e:#}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("accepting an ivshmem client"),
            }
        }
        Ok(ev)
    }

    fn fresh_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        assert_ne!(id, DEVICE_PEER);
        id
    }

    /// Sends a new client the spec's setup sequence and registers it.
    fn admit(&mut self, stream: UnixStream) -> Result<u16> {
        stream.set_nonblocking(false)?;
        let id = self.fresh_id();
        let fds = (0..VECTORS)
            .map(|_| EventFd::new())
            .collect::<Result<Vec<_>>>()?;
        send_msg(&stream, PROTOCOL_VERSION, None)?;
        send_msg(&stream, i64::from(id), None)?;
        send_msg(&stream, -1, Some(self.shm.fd.as_raw_fd()))?;
        for d in &self.doorbells {
            send_msg(&stream, i64::from(DEVICE_PEER), Some(d.raw()))?;
        }
        for f in &fds {
            send_msg(&stream, i64::from(id), Some(f.raw()))?;
        }
        stream.set_nonblocking(true)?;
        self.client = Some(Client { stream, id, fds });
        Ok(id)
    }

    /// Interrupts the guest with `vector`; false if no client is connected.
    pub fn interrupt(&self, vector: u16) -> bool {
        let Some(c) = &self.client else {
            return false;
        };
        match c.fds.get(vector as usize) {
            Some(f) => f.signal().is_ok(),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A client never sends: a readable connection is at its end (or broken).
fn client_gone(s: &UnixStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reads at most `buf.len()` bytes into a live local buffer.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return true,
            n if n > 0 => continue, // unexpected bytes: ignored
            _ => return io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock,
        }
    }
}

/// What a client (QEMU, or a test) receives on connect, checked against the spec.
pub struct ClientSetup {
    pub id: u16,
    pub shm: OwnedFd,
    /// The device's doorbells (peer 0), by vector: signal to ring the device.
    pub device: Vec<EventFd>,
    /// The client's own eventfds, by vector: the device signals them.
    pub own: Vec<EventFd>,
}

/// Connects to a server like QEMU's `ivshmem-doorbell` with [`VECTORS`] vectors
/// does, and checks every message of the setup sequence.
pub fn connect_client(path: &Path) -> Result<(UnixStream, ClientSetup)> {
    let s = UnixStream::connect(path).with_context(|| format!("connecting {}", path.display()))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let next = |what: &str| -> Result<(i64, Option<OwnedFd>)> {
        recv_msg(&s)?.with_context(|| format!("server closed before sending {what}"))
    };
    let (v, fd) = next("the version")?;
    if v != PROTOCOL_VERSION || fd.is_some() {
        bail!("bad version message: {v} (fd: {})", fd.is_some());
    }
    let (id, fd) = next("the client id")?;
    if !(0..=65535).contains(&id) || fd.is_some() {
        bail!("bad client id message: {id}");
    }
    let (m, shm) = next("the shared memory")?;
    let shm = match (m, shm) {
        (-1, Some(fd)) => fd,
        _ => bail!("bad shared-memory message: {m}"),
    };
    let vectors = |who: i64, what: &str| -> Result<Vec<EventFd>> {
        (0..VECTORS)
            .map(|v| match next(what)? {
                (p, Some(fd)) if p == who => Ok(EventFd::from_owned(fd)),
                (p, fd) => bail!(
                    "{what} vector {v}: peer {p} (want {who}), fd: {}",
                    fd.is_some()
                ),
            })
            .collect()
    };
    let device = vectors(i64::from(DEVICE_PEER), "device peer")?;
    let own = vectors(id, "interrupt setup")?;
    Ok((
        s,
        ClientSetup {
            id: id as u16,
            shm,
            device,
            own,
        },
    ))
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGTERM and SIGINT set the returned flag (the device loop checks it every
/// tick and exits cleanly, removing its sockets).
pub fn stop_on_signals() -> &'static std::sync::atomic::AtomicBool {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only performs an atomic store, which is
        // async-signal-safe; `signal` has no other preconditions.
        unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
    }
    &STOP
}

/// Makes `cmd`'s process get SIGTERM when this process dies (a device started by
/// `xdv run` must not outlive it even if `xdv` itself is killed).
pub fn term_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
