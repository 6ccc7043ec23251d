//! The README's cluster commands on a real one-node cluster in QEMU: `up`, `submit`
//! (exit codes 0 and 4), `status --json`, `down`, `start` (the switch comes back too),
//! then `up` refusing the directory,
//! `up --resume` keeping keys and history, `up --fresh` starting a new cluster.
//! Boots QEMU (and builds the kernel on first use): run it on its own,
//! `cargo test -p xdv --test cli_cluster`.

use std::path::{Path, PathBuf};
use std::process::Command;
use xdv::mgmt::Keys;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
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

fn xdv(args: &[&str]) -> Out {
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

fn status(dir: &str) -> serde_json::Value {
    let o = xdv(&["status", "--json", "--dir", dir]);
    assert_eq!(o.code, 0, "{o:?}");
    serde_json::from_str(o.stdout.trim()).unwrap()
}

/// Stops the cluster even when an assertion fails.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = xdv(&["down", "--dir", self.0.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn up_submit_down_resume_fresh() {
    let dir = xdv::qemu::temp_dir("cli-cluster").unwrap();
    let _down = Down(dir.clone());
    let d = dir.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = (port - 1).to_string();
    let ex = xdv::qemu::repo_root().join("examples");
    let hello = ex.join("hello.wat");
    let spin = ex.join("spin.wat");
    let (hello, spin) = (hello.to_str().unwrap(), spin.to_str().unwrap());
    let up = |extra: &[&str]| {
        let mut a = vec!["up", "--dir", d, "--detach", "--timeout", "180"];
        a.extend(extra);
        xdv(&a)
    };

    let o = up(&["--nodes", "1", "--tenants", "1", "--mgmt-port-base", &base]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("1 nodes ready"), "{o:?}");
    assert!(
        !o.stderr.contains('\x1b'),
        "no terminal codes into a pipe: {o:?}"
    );
    let cluster = Keys::load(Path::new(d)).unwrap().cluster;

    let o = xdv(&["submit", hello, "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("executed on node 1") && o.stdout.contains("hello from xdv"),
        "{o:?}"
    );
    let o = xdv(&[
        "submit", spin, "--tenant", "1", "--budget", "50", "--dir", d,
    ]);
    assert_eq!(o.code, xdv::exit::FAILED, "{o:?}");
    assert!(
        o.stdout.contains("tick budget exceeded after 50 ticks"),
        "{o:?}"
    );
    let v = status(d);
    assert_eq!(v["nodes"][0]["view"]["tasks"], 2, "{v}");
    assert_eq!(v["health"]["leader"], 1, "{v}");

    let o = xdv(&["down", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("node 1 stopped (QMP quit)"), "{o:?}");

    // `start` after `down` brings the switch back too; the node rejoins on its RAM file.
    let o = xdv(&["start", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains("the switch was not running; started it"),
        "{o:?}"
    );
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while status(d)["nodes"][0]["state"] != "ready" {
        assert!(std::time::Instant::now() < end, "not ready again");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let o = xdv(&["submit", hello, "--tenant", "1", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.starts_with("task 3 executed"),
        "ids continue: {o:?}"
    );
    let o = xdv(&["down", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");

    let o = up(&[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("--resume") && o.stderr.contains("--fresh"),
        "{o:?}"
    );
    let o = up(&["--resume", "--nodes", "2"]);
    assert_eq!(o.code, 1, "{o:?}");

    // Resume: same keys, the three tasks are still there, new ones continue after them.
    let o = up(&["--resume"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(Keys::load(Path::new(d)).unwrap().cluster, cluster);
    let o = xdv(&["submit", hello, "--tenant", "1", "--json", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["output_text"], "hello from xdv", "{v}");
    assert_eq!(v["task"], 4, "{v}");
    let v = status(d);
    assert_eq!(v["nodes"][0]["view"]["tasks"], 4, "history kept: {v}");
    let o = xdv(&["down", "--dir", d]);
    assert_eq!(o.code, 0, "{o:?}");

    // Fresh: new keys, empty history.
    let o = up(&["--fresh"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("--fresh: removed"), "{o:?}");
    assert_ne!(Keys::load(Path::new(d)).unwrap().cluster, cluster);
    let v = status(d);
    assert_eq!(v["nodes"][0]["view"]["tasks"], 0, "{v}");
}
