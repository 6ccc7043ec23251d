//! `cargo xdv console <node>`: this terminal attached to a node's serial console.
//!
//! - The terminal is in raw mode while attached (the node echoes; no double echo,
//!   no line buffering), restored on every way out.
//! - Ctrl-] detaches at once. A line typed but not entered is cleared on the node
//!   first (Ctrl-U), so it cannot prefix the next user's command.
//! - One client per node: a second `console` is refused with the holder's pid (QEMU's
//!   socket serves one connection and would leave a second one hanging silently).
//! - When the node halts or QEMU exits, the socket closes: the session ends and says so.
//!
//! The only `unsafe` here is the `termios`/`flock`/`poll` calls, each with its SAFETY.

use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The detach key, Ctrl-].
pub const DETACH: u8 = 0x1d;
/// What the node's line editor takes as "drop the line" (Ctrl-U).
pub const CLEAR_LINE: u8 = 0x15;

/// Raw mode on a terminal, restored when dropped.
struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    /// Puts `fd` in raw mode; `None` if it is not a terminal.
    fn enable(fd: i32) -> Option<RawMode> {
        // SAFETY: `termios` is plain old data; an all-zero value is a valid buffer for
        // `tcgetattr` to fill.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is an open descriptor of this process (stdin) and `saved` is a
        // valid, writable `termios`.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid `termios` (a copy of the one just read).
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so "\n" from this program still returns the
        // carriage (the node sends "\r\n" itself; both render the same).
        raw.c_oflag |= libc::OPOST;
        // SAFETY: `fd` is open and `raw` is a valid `termios`.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `fd` is still open (stdin lives as long as the process) and `saved`
        // is the `termios` `tcgetattr` returned for it.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The exclusive claim on one node's console: an `flock` on `node<N>.console.lock`,
/// released when the process ends (however it ends).
pub struct ConsoleLock {
    _file: std::fs::File,
}

impl ConsoleLock {
    /// Takes the lock or says who holds it.
    pub fn take(path: &Path, node: u32) -> Result<ConsoleLock> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: `file` is an open descriptor owned by this function; `flock` only
        // takes a lock on it.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            bail!(
                "node {node}'s console is in use by another `cargo xdv console`{who}; \
                 one client at a time (detach it with Ctrl-], or read its output with \
                 `cargo xdv logs {node} --follow`)"
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(ConsoleLock { _file: file })
    }
}

/// Waits up to `ms` for `fd` to be readable; true if it is (or on a poll error, so
/// the caller's read reports it).
fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid `pollfd` and the count is 1.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n != 0
}

/// How an attached session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The user typed Ctrl-].
    Detached,
    /// Stdin closed.
    InputClosed,
    /// The node closed the console: it halted, rebooted out of QEMU or was killed.
    NodeGone,
}

/// Copies `input` to the node (LF → CR) and the node to `output` until Ctrl-], the end
/// of `input`, or the node closing its side. A half-typed line is cleared on the node
/// before detaching.
pub fn session(
    stream: UnixStream,
    mut input: impl Read + AsRawFd,
    output: impl Write + Send + 'static,
) -> Result<Ended> {
    let gone = Arc::new(AtomicBool::new(false));
    let mut rd = stream.try_clone()?;
    let out = {
        let gone = gone.clone();
        let mut output = output;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match rd.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if output
                            .write_all(&buf[..n])
                            .and_then(|_| output.flush())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            gone.store(true, Ordering::SeqCst);
        })
    };
    let mut wr = stream;
    let fd = input.as_raw_fd();
    let mut pending_line = false;
    let mut byte = [0u8; 1];
    let ended = loop {
        if gone.load(Ordering::SeqCst) {
            break Ended::NodeGone;
        }
        if !readable(fd, 100) {
            continue;
        }
        if input.read(&mut byte)? == 0 {
            break Ended::InputClosed;
        }
        let b = match byte[0] {
            DETACH => break Ended::Detached,
            b'\n' => b'\r',
            b => b,
        };
        pending_line = !matches!(b, b'\r' | 0x03 | CLEAR_LINE);
        if wr.write_all(&[b]).is_err() {
            break Ended::NodeGone;
        }
    };
    if pending_line && ended != Ended::NodeGone {
        let _ = wr.write_all(&[CLEAR_LINE]);
        // Let the node's echo of the cleared line reach the terminal.
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = wr.shutdown(std::net::Shutdown::Both);
    let _ = out.join();
    Ok(ended)
}

/// Attaches this terminal to the console socket `sock` of node `id`; `lock` is the
/// path of its console lock file.
pub fn attach(sock: &Path, lock: &Path, id: u32) -> Result<()> {
    let _lock = ConsoleLock::take(lock, id)?;
    let stream = UnixStream::connect(sock).with_context(|| {
        format!(
            "node {id} console {} (is the node running?)",
            sock.display()
        )
    })?;
    eprintln!("[attached to node {id}; type Ctrl-] to detach]\r");
    let stdin = std::io::stdin();
    let raw = if stdin.is_terminal() {
        RawMode::enable(stdin.as_raw_fd())
    } else {
        None
    };
    let ended = session(stream, stdin, std::io::stdout());
    drop(raw);
    match ended? {
        Ended::Detached | Ended::InputClosed => eprintln!("\n[detached from node {id}]"),
        Ended::NodeGone => eprintln!(
            "\n[node {id} closed its console: it halted or its QEMU exited; `cargo xdv status` shows it, `cargo xdv start {id}` boots it again]"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A byte source with a descriptor (one end of a socket pair).
    fn input(bytes: &[u8]) -> UnixStream {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(bytes).unwrap();
        drop(b);
        a
    }

    fn node_side() -> (UnixStream, UnixStream) {
        UnixStream::pair().unwrap()
    }

    fn read_all(mut s: UnixStream) -> Vec<u8> {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v);
        v
    }

    #[test]
    fn detach_clears_a_half_typed_line_and_stops_at_once() {
        let (ours, node) = node_side();
        let ended = session(ours, input(b"help\nrebo\x1dnever sent"), std::io::sink()).unwrap();
        assert_eq!(ended, Ended::Detached);
        assert_eq!(
            read_all(node),
            b"help\rrebo\x15",
            "LF as CR, then Ctrl-U, nothing after Ctrl-]"
        );
    }

    #[test]
    fn a_complete_line_is_not_cleared() {
        let (ours, node) = node_side();
        let ended = session(ours, input(b"uptime\n\x1d"), std::io::sink()).unwrap();
        assert_eq!(ended, Ended::Detached);
        assert_eq!(read_all(node), b"uptime\r");
    }

    #[test]
    fn the_session_ends_when_the_node_goes() {
        let (ours, node) = node_side();
        // Input that never ends: the other end stays open for the whole test.
        let (stdin, _keep) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || session(ours, stdin, std::io::sink()).unwrap());
        std::thread::sleep(Duration::from_millis(150));
        drop(node);
        assert_eq!(t.join().unwrap(), Ended::NodeGone);
    }

    #[test]
    fn a_second_client_is_refused_with_the_holder() {
        let dir = std::env::temp_dir().join(format!("xdv-conlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node2.console.lock");
        let first = ConsoleLock::take(&path, 2).unwrap();
        let e = ConsoleLock::take(&path, 2).err().expect("second refused");
        let msg = format!("{e:#}");
        assert!(msg.contains("node 2's console is in use"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        ConsoleLock::take(&path, 2).expect("free again once the first lets go");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
