//! Where datasets live: `--data-dir`, else `$INFOMAX_DATA`, else `./datasets`.

use std::path::PathBuf;

/// The environment variable that names the data root when no flag does.
pub const DATA_ENV: &str = "INFOMAX_DATA";

/// Resolve the data root from an explicit flag, the environment, or the default `./datasets`.
pub fn data_root(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("datasets"))
}
