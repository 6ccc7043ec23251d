//! Links the kernel as a freestanding static ELF with the boot linker script.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let boot = std::path::Path::new(&dir).join("../../boot");
    let ld = boot.join("linker.ld");
    for arg in [
        format!("-T{}", ld.display()),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=0x1000".into(),
        "-Wl,-z,norelro".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed={}", ld.display());
    println!("cargo:rerun-if-changed={}", boot.join("entry.s").display());
    println!(
        "cargo:rerun-if-changed={}",
        boot.join("trampoline.s").display()
    );
}
