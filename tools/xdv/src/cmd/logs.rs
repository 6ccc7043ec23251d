//! `cargo xdv logs <node> [--follow] [--all] [--tail N]`: a node's serial log (what its
//! console printed; QEMU writes it to `node<N>.log` in the cluster directory), and
//! `cargo xdv logs --task <id>`: the lines a task's module wrote with `log()`.

use anyhow::{Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use xdv::cluster::ClusterState;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["node", "task"])))]
pub struct Args {
    /// Node id whose serial log to print (1..=N).
    node: Option<u32>,
    /// Print the log lines of task ID (written by its module with `log()`) instead.
    #[arg(long, value_name = "ID", conflicts_with_all = ["follow", "all", "tail"])]
    task: Option<u64>,
    /// With --task: ask as this tenant (its key); default the operator.
    #[arg(long, requires = "task")]
    tenant: Option<u32>,
    /// With --task: the node to ask [default: 1].
    #[arg(
        long = "via",
        value_name = "NODE",
        default_value_t = 1,
        requires = "task"
    )]
    via: u32,
    /// Keep printing what the node writes (also across its restarts) until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Every boot's output, not only the current (or last) boot's.
    #[arg(long)]
    all: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Cluster directory [default: target/xdv/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<i32> {
    if let Some(task) = a.task {
        return super::task::print_task_log(a.dir, a.tenant, a.via, task);
    }
    let node = a.node.expect("clap: node or --task");
    let st = ClusterState::load(&super::cluster::dir(a.dir))?;
    let spec = st.node(node)?;
    let path = st.path(node, "log");
    let start = if a.all { 0 } else { spec.log_offset };
    let (text, end) = read_from(&path, start)?;
    let shown = match a.tail {
        Some(n) => last_lines(&text, n),
        None => &text[..],
    };
    let mut out = std::io::stdout().lock();
    out.write_all(shown.as_bytes())?;
    out.flush()?;
    if a.follow {
        follow(&path, end, &mut out)?;
    }
    Ok(xdv::exit::OK)
}

/// The log from byte `start` (lossy UTF-8, CR LF as LF; empty if the node never ran)
/// and the byte offset it ends at.
fn read_from(path: &Path, start: u64) -> Result<(String, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = f.metadata()?.len();
    // A log shorter than the offset was replaced (a fresh cluster): show all of it.
    let from = if start > len { 0 } else { start };
    f.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
    Ok((text, from + bytes.len() as u64))
}

/// The last `n` lines of `text` (all of it if it has fewer).
pub fn last_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

/// Prints what is appended to `path` after byte `from`, polling every 200 ms, until
/// the process is interrupted. A file that shrinks (a fresh cluster) is read again
/// from its start.
fn follow(path: &Path, mut from: u64, out: &mut impl Write) -> Result<()> {
    let mut pending = Vec::new();
    loop {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < from {
            from = 0;
        }
        if len > from {
            let mut f = std::fs::File::open(path)?;
            f.seek(SeekFrom::Start(from))?;
            let mut chunk = Vec::new();
            Read::by_ref(&mut f)
                .take(len - from)
                .read_to_end(&mut chunk)?;
            from += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            // Print whole lines only: a CR LF split across two reads stays one.
            if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
                let lines: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&lines).replace("\r\n", "\n");
                if out
                    .write_all(text.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return Ok(()); // the reader went away (a closed pipe)
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::{last_lines, read_from};

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\nb\n", 5), "a\nb\n");
        assert_eq!(last_lines("a\nb\n", 0), "");
    }

    #[test]
    fn read_from_starts_at_the_boot_and_normalises_line_ends() {
        let p = std::env::temp_dir().join(format!("xdv-logs-{}.log", std::process::id()));
        std::fs::write(&p, b"old boot\r\nxdv: ready\r\nnew boot\r\n").unwrap();
        let all = "old boot\nxdv: ready\nnew boot\n".to_string();
        assert_eq!(read_from(&p, 22).unwrap(), ("new boot\n".into(), 32));
        assert_eq!(read_from(&p, 0).unwrap(), (all.clone(), 32));
        assert_eq!(read_from(&p, 999).unwrap(), (all, 32));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(
            read_from(&p, 0).unwrap(),
            (String::new(), 0),
            "never ran: no log"
        );
    }
}
