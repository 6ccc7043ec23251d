//! Compiles the bundled example modules (WAT) to WebAssembly at build time, so the
//! no_std runtime crate carries them as bytes without a WAT parser.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in ["loop", "grow", "hash", "sort"] {
        let src = format!("examples/{name}.wat");
        println!("cargo:rerun-if-changed={src}");
        let wasm = wat::parse_file(&src).unwrap_or_else(|e| panic!("{src}: {e}"));
        std::fs::write(out.join(format!("{name}.wasm")), wasm).expect("write wasm");
    }
}
