//! `xdv task check` accepts a valid module and refuses bad ones with a specific error.

use std::process::Command;

fn check(dir: &std::path::Path, name: &str, text: &str) -> (bool, String) {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xdv"))
        .args(["task", "check"])
        .arg(&f)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn task_check_accepts_and_refuses() {
    let dir = std::env::temp_dir().join(format!("xdv-task-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, out) = check(&dir, "good.wat", r#"(module (func (export "run")))"#);
    assert!(ok && out.contains(": OK ("), "{out}");
    let (ok, out) = check(
        &dir,
        "clock.wat",
        r#"(module (import "env" "clock" (func)) (func (export "run")))"#,
    );
    assert!(
        !ok && out.contains("import `env.clock` is not offered"),
        "{out}"
    );
    let (ok, out) = check(&dir, "noentry.wat", r#"(module (func (export "main")))"#);
    assert!(!ok && out.contains("no exported function `run`"), "{out}");
    let (ok, out) = check(&dir, "junk.wasm", "\0asm garbage");
    assert!(!ok && out.contains("refused"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
