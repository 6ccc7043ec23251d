//! What the CLI tests that boot real clusters share: running `xdv` and stopping a
//! cluster (even when an assertion fails).

use std::path::PathBuf;
use std::process::Command;

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
