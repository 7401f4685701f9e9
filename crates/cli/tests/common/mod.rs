//! Helpers shared by the CLI's integration tests: where the workspace and CIFAR-10 are, and how
//! to call the binary.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The dataset root with CIFAR-10: `INFOMAX_DATA` (CI points it at `../shared/datasets`), else
/// `./datasets`.
pub fn data_root() -> PathBuf {
    let root = workspace_root();
    let dir = std::env::var_os("INFOMAX_DATA").map(PathBuf::from).unwrap_or_else(|| root.join("datasets"));
    let dir = if dir.is_absolute() { dir } else { root.join(dir) };
    assert!(
        dir.join("cifar-10-batches-bin").is_dir(),
        "the end-to-end test needs CIFAR-10: set INFOMAX_DATA (e.g. INFOMAX_DATA=../shared/datasets); looked in {}",
        dir.display()
    );
    dir
}

/// The binary at a fixed thread count ([`THREADS`]), from the workspace root: training is
/// bit-identical run after run at a given thread count, so tests compare runs exactly.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_infomax"));
    c.current_dir(workspace_root()).env("RAYON_NUM_THREADS", THREADS);
    c
}

/// The thread count every test runs the binary at (CI's machines have 2 cores).
pub const THREADS: &str = "2";

/// Run the binary ([`command`]) and wait for it.
pub fn infomax(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

/// stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The first column of the first row `sql` returns from the database `db`, as text.
pub fn scalar(db: &Path, sql: &str) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
        .map(|v| match v {
            rusqlite::types::Value::Text(s) => s,
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Real(x) => x.to_string(),
            other => format!("{other:?}"),
        })
        .unwrap()
}
