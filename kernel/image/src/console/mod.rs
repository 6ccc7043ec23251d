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
/// Longest line accepted; further characters ring the bell once, and Enter then
/// refuses the whole line instead of running a cut one.
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

/// Commands that change node state. Each is recorded in the audit chain when it
/// succeeded — a refused or failed command changed nothing and is not recorded —
/// except `reboot` and `halt`, which never return: they are recorded just before they
/// act (docs/audit.md § Console commands).
const STATE_CHANGING: &[&str] = &[
    "log ",
    "sched ",
    "reboot",
    "halt",
    "bulk ",
    "task ",
    "raft propose",
    "audit stress",
    "audit bench",
    "fault ",
];

/// Commands that do not return once they ran.
const FINAL: &[&str] = &["reboot", "halt"];

fn state_changing(line: &str) -> bool {
    let line = line.trim_start();
    STATE_CHANGING.iter().any(|p| line.starts_with(p))
}

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
    let Some(c) = commands::find(words[0]) else {
        crate::println!("error: unknown command `{}`; try `help`", words[0]);
        return;
    };
    let audited = state_changing(line);
    if audited && n == 1 && FINAL.contains(&words[0]) {
        crate::audit::console_command(line.trim());
    }
    match (c.run)(s, &words[1..n]) {
        Ok(()) if audited && !FINAL.contains(&words[0]) => {
            crate::audit::console_command(line.trim())
        }
        Ok(()) => {}
        Err(e) => crate::println!("error: {e}"),
    }
}

/// Lines kept for the up/down arrow keys.
const HISTORY: usize = 16;

/// Where the editor is in an escape sequence (`ESC [ ... final`, `ESC O x`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    /// ESC seen.
    Start,
    /// `ESC [` seen: parameters until a final byte 0x40..=0x7e.
    Csi,
    /// `ESC O` seen: one more byte.
    Ss3,
}

/// What one input byte came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed<'a> {
    /// Nothing to run yet.
    Nothing,
    /// Enter on a line: run it.
    Line(&'a str),
    /// Enter on a line longer than [`MAX_LINE_BYTES`]: refused, not run.
    TooLong,
}

/// Line editor state: the line, a small history for the arrow keys, escape
/// sequences (recognised and never put into the line).
pub struct LineEditor {
    buf: [u8; MAX_LINE_BYTES],
    len: usize,
    /// The line went past [`MAX_LINE_BYTES`]: Enter refuses it.
    overflow: bool,
    last_was_cr: bool,
    esc: Esc,
    /// Earlier lines, oldest first, and which one the arrows show (`None`: the new line).
    history: alloc::collections::VecDeque<String>,
    shown: Option<usize>,
}

impl LineEditor {
    pub const fn new() -> Self {
        LineEditor {
            buf: [0; MAX_LINE_BYTES],
            len: 0,
            overflow: false,
            last_was_cr: false,
            esc: Esc::None,
            history: alloc::collections::VecDeque::new(),
            shown: None,
        }
    }

    /// Replaces the line on screen and in the buffer with `text`.
    fn show(&mut self, text: &str) {
        for _ in 0..self.len {
            crate::print!("\x08 \x08");
        }
        let n = text.len().min(MAX_LINE_BYTES);
        self.buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        self.len = n;
        self.overflow = false;
        crate::print!("{}", &text[..n]);
    }

    /// Up (`older`) or down through the history.
    fn recall(&mut self, older: bool) {
        let next = match (self.shown, older) {
            (None, true) => self.history.len().checked_sub(1),
            (Some(i), true) => Some(i.saturating_sub(1)),
            (Some(i), false) if i + 1 < self.history.len() => Some(i + 1),
            (_, false) => None,
        };
        if next == self.shown && older {
            return;
        }
        self.shown = next;
        let text = next.map(|i| self.history[i].clone()).unwrap_or_default();
        self.show(&text);
    }

    /// The final byte of an escape sequence: arrows up/down walk the history; every
    /// other key (left/right, home, function keys) is ignored.
    fn escape_done(&mut self, b: u8) {
        match b {
            b'A' => self.recall(true),
            b'B' => self.recall(false),
            _ => {}
        }
    }

    /// Feeds one input byte.
    pub fn feed(&mut self, b: u8) -> Fed<'_> {
        match self.esc {
            Esc::Start => {
                self.esc = match b {
                    b'[' => Esc::Csi,
                    b'O' => Esc::Ss3,
                    _ => Esc::None,
                };
                return Fed::Nothing;
            }
            Esc::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.esc = Esc::None;
                    self.escape_done(b);
                } else if !(0x20..=0x3f).contains(&b) {
                    self.esc = Esc::None; // not a sequence after all: drop it
                }
                return Fed::Nothing;
            }
            Esc::Ss3 => {
                self.esc = Esc::None;
                self.escape_done(b);
                return Fed::Nothing;
            }
            Esc::None => {}
        }
        let after_cr = core::mem::replace(&mut self.last_was_cr, b == b'\r');
        match b {
            b'\n' if after_cr => Fed::Nothing, // CR LF counts as one Enter
            b'\r' | b'\n' => {
                crate::print!("\n");
                let n = core::mem::replace(&mut self.len, 0);
                self.shown = None;
                if core::mem::replace(&mut self.overflow, false) {
                    return Fed::TooLong;
                }
                // Only printable ASCII is stored, so this is valid UTF-8.
                let line = core::str::from_utf8(&self.buf[..n]).unwrap_or("");
                if !line.trim().is_empty() && self.history.back().map(String::as_str) != Some(line)
                {
                    if self.history.len() == HISTORY {
                        self.history.pop_front();
                    }
                    self.history.push_back(String::from(line));
                }
                Fed::Line(core::str::from_utf8(&self.buf[..n]).unwrap_or(""))
            }
            0x1b => {
                self.esc = Esc::Start;
                Fed::Nothing
            }
            0x08 | 0x7f => {
                if self.len > 0 && !self.overflow {
                    self.len -= 1;
                    crate::print!("\x08 \x08");
                }
                Fed::Nothing
            }
            0x03 | 0x15 => {
                // Ctrl-C / Ctrl-U: drop the line (`cargo xdv console` sends Ctrl-U
                // when it detaches from a half-typed line).
                self.len = 0;
                self.overflow = false;
                self.shown = None;
                crate::print!("^C\n{PROMPT}");
                Fed::Nothing
            }
            0x20..=0x7e => {
                if self.len < MAX_LINE_BYTES && !self.overflow {
                    self.buf[self.len] = b;
                    self.len += 1;
                    crate::print!("{}", b as char);
                } else {
                    if !self.overflow {
                        crate::print!("\x07");
                    }
                    self.overflow = true;
                }
                Fed::Nothing
            }
            _ => Fed::Nothing,
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
            match self.ed.feed(b) {
                Fed::Nothing => {}
                Fed::TooLong => {
                    crate::println!(
                        "error: line longer than {MAX_LINE_BYTES} bytes; not run (type it again, shorter)"
                    );
                    crate::print!("{PROMPT}");
                    return;
                }
                Fed::Line(line) => {
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
}
