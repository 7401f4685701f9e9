//! Builds the workspace's `experiments/*.toml` into the binary, so that `infomax` finds the
//! shipped experiments wherever it runs (an `experiments/` directory still shadows them by name).
//!
//! Writes `$OUT_DIR/builtin_experiments.rs`: a slice of `BuiltIn { file_name, text }`, each text
//! an `include_str!` of the file, sorted by file name. `cargo install --path crates/cli` builds
//! from this checkout, where `../../experiments` exists; a copy of the crate without it builds a
//! binary with no built-in experiments, and says so in a warning.

use std::path::Path;

fn main() {
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../experiments");
    // A directory: cargo reruns this script when any file in it changes, appears or goes.
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.expect("listing experiments/").path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) => {
            println!("cargo:warning={}: {e}; this infomax has no built-in experiments", dir.display());
            Vec::new()
        }
    };
    files.sort();
    let mut code = String::from("&[\n");
    for path in &files {
        let path = path.canonicalize().expect("an experiment file that was just listed");
        let file_name = path.file_name().and_then(|n| n.to_str()).expect("experiment file names are UTF-8");
        let full = path.to_str().expect("the experiments directory's path is UTF-8");
        code.push_str(&format!(
            "    infomax_runner::experiment::BuiltIn {{ file_name: {file_name:?}, text: include_str!({full:?}) }},\n"
        ));
    }
    code.push_str("]\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin_experiments.rs");
    std::fs::write(&out, code).expect("writing builtin_experiments.rs");
}
