//! What the CLI tests that boot real clusters share: running `xdv` and stopping a
//! cluster (even when an assertion fails), and a temp directory per test process.
// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One `xdv` run: exit code and both outputs.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the `xdv` binary with `args`.
pub fn xdv(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_xdv"))
        .args(args)
        .output()
        .expect("run xdv");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// Stops the cluster in the directory and removes it, even when an assertion fails.
pub struct Down(pub PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = xdv(&["down", "--dir", self.0.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `--mgmt-port-base` for a cluster in a test: node `n` listens on base + n, and
/// nodes 1..=8 (joins included) find their ports free.
pub fn mgmt_port_base() -> String {
    (xdv::testbed::free_ports(8) - 1).to_string()
}

/// This test process's directory `<prefix>-<tag>-<pid>` in the temp dir, empty. The
/// first call also removes what earlier, finished test processes with this prefix left
/// behind (their RAM files are sparse, but many).
pub fn tmp_dir(prefix: &str, tag: &str) -> PathBuf {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name
                .strip_prefix(&format!("{prefix}-"))
                .and_then(|r| r.rsplit('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| {
                p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
            }) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
    let d = std::env::temp_dir().join(format!("{prefix}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
