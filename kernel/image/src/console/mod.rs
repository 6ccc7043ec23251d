//! Serial debug console: a line editor on COM1 and a table of commands; one input
//! of the kernel's main loop, not its owner.
#![deny(unsafe_code)]
//!
//! Adding a command is one entry in [`commands::COMMANDS`]. Every command gets its
//! arguments split on whitespace and returns `Ok` or a [`CmdError`], which becomes one
//! `error: ...` line; the prompt always comes back.

pub mod accel;
pub mod audit;
pub mod cluster;
pub mod commands;
pub mod net;
pub mod sched;
pub mod task;

use crate::service::Services;
use alloc::string::String;
use core::fmt;

pub const PROMPT: &str = "xdv> ";

/// Waits, serving the node, until no cluster batch runs on the APs and its results
/// went to the node: the foreground batches of `task run`, `task bench` and `sched`
/// would otherwise spin for it (a long cluster task would freeze the node for its
/// whole run). Starts no new cluster batch.
pub fn wait_for_aps(s: &mut Services) {
    let idle = || {
        crate::executor::DISPATCHER
            .lock()
            .as_ref()
            .is_none_or(|d| d.idle())
    };
    let start = crate::time::uptime_us();
    let mut said = false;
    while !idle() {
        if !said && crate::time::uptime_us() - start > 1_000_000 {
            crate::println!("waiting for the cluster tasks on the application processors");
            said = true;
        }
        s.collect_tasks();
        s.poll(false);
        crate::arch::wait_for_interrupt();
    }
}
/// Longest line accepted; further characters are refused with a bell.
pub const MAX_LINE_BYTES: usize = 256;

/// One console command.
pub struct Command {
    pub name: &'static str,
    /// Argument synopsis shown by `help`, e.g. `<level>`.
    pub args: &'static str,
    pub summary: &'static str,
    pub run: fn(&mut Services, &[&str]) -> Result<(), CmdError>,
}

/// Why a command did not run.
pub enum CmdError {
    /// Wrong arguments: the message says what was expected.
    Usage(String),
    /// The command ran and failed.
    Failed(String),
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Usage(m) => write!(f, "usage: {m}"),
            CmdError::Failed(m) => f.write_str(m),
        }
    }
}

/// Commands that change node state; each is recorded in the audit chain before it
/// runs (so `reboot` and `halt` are recorded too).
const STATE_CHANGING: &[&str] = &[
    "log ",
    "sched ",
    "reboot",
    "halt",
    "bulk ",
    "task ",
    "audit stress",
    "audit bench",
];

/// Builds a usage error naming the command's synopsis.
pub fn usage(cmd: &str) -> CmdError {
    match commands::find(cmd) {
        Some(c) => CmdError::Usage(alloc::format!("{} {}", c.name, c.args)),
        None => CmdError::Usage(String::from(cmd)),
    }
}

/// Runs one input line.
pub fn execute(s: &mut Services, line: &str) {
    let mut words = [""; 16];
    let mut n = 0;
    for w in line.split_ascii_whitespace() {
        if n == words.len() {
            crate::println!("error: too many arguments (at most {})", words.len() - 1);
            return;
        }
        words[n] = w;
        n += 1;
    }
    if n == 0 {
        return;
    }
    if STATE_CHANGING
        .iter()
        .any(|p| line.trim_start().starts_with(p))
    {
        crate::audit::console_command(line.trim());
    }
    match commands::find(words[0]) {
        None => crate::println!("error: unknown command `{}`; try `help`", words[0]),
        Some(c) => {
            if let Err(e) = (c.run)(s, &words[1..n]) {
                crate::println!("error: {e}");
            }
        }
    }
}

/// Line editor state.
pub struct LineEditor {
    buf: [u8; MAX_LINE_BYTES],
    len: usize,
    last_was_cr: bool,
}

impl LineEditor {
    pub const fn new() -> Self {
        LineEditor {
            buf: [0; MAX_LINE_BYTES],
            len: 0,
            last_was_cr: false,
        }
    }

    /// Feeds one input byte; returns a complete line when Enter is pressed.
    pub fn feed(&mut self, b: u8) -> Option<&str> {
        let after_cr = core::mem::replace(&mut self.last_was_cr, b == b'\r');
        match b {
            b'\n' if after_cr => None, // CR LF counts as one Enter
            b'\r' | b'\n' => {
                crate::print!("\n");
                let n = core::mem::replace(&mut self.len, 0);
                // Only printable ASCII is stored, so this is valid UTF-8.
                Some(core::str::from_utf8(&self.buf[..n]).unwrap_or(""))
            }
            0x08 | 0x7f => {
                if self.len > 0 {
                    self.len -= 1;
                    crate::print!("\x08 \x08");
                }
                None
            }
            0x03 | 0x15 => {
                // Ctrl-C / Ctrl-U: drop the line.
                self.len = 0;
                crate::print!("^C\n{PROMPT}");
                None
            }
            0x20..=0x7e => {
                if self.len < MAX_LINE_BYTES {
                    self.buf[self.len] = b;
                    self.len += 1;
                    crate::print!("{}", b as char);
                } else {
                    crate::print!("\x07");
                }
                None
            }
            _ => None,
        }
    }
}

/// The console as one input of the node's loop: it reads what COM1 has (never
/// waits) and runs a command when a line is complete. Long commands keep the node
/// serving by calling `Services::poll` between their slices.
pub struct Console {
    ed: LineEditor,
}

impl Console {
    pub fn new() -> Console {
        crate::print!("{PROMPT}");
        Console {
            ed: LineEditor::new(),
        }
    }

    /// Handles every byte that has arrived; runs at most one command.
    pub fn poll(&mut self, s: &mut Services) {
        while let Some(b) = crate::serial::try_read() {
            if let Some(line) = self.ed.feed(b) {
                let mut copy = [0u8; MAX_LINE_BYTES];
                let n = line.len();
                copy[..n].copy_from_slice(line.as_bytes());
                execute(s, core::str::from_utf8(&copy[..n]).unwrap_or(""));
                crate::print!("{PROMPT}");
                return;
            }
        }
    }
}
