//! `infomax merge DB…`: combine results databases (e.g. one per shard) into `--db`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use infomax_runner::Store;

use crate::paths::Paths;

#[derive(Args)]
pub struct MergeArgs {
    /// Databases to read.
    #[arg(required = true, value_name = "DB")]
    sources: Vec<PathBuf>,
}

pub fn run(args: MergeArgs, paths: &Paths) -> Result<ExitCode> {
    let MergeArgs { sources } = args;
    let store = Store::open(&paths.db)?;
    let refs: Vec<&std::path::Path> = sources.iter().map(PathBuf::as_path).collect();
    // All or nothing: a source that cannot be taken leaves the database as it was.
    let stats = store.merge_all(&refs).with_context(|| format!("nothing merged into {}", paths.db.display()))?;
    for (src, s) in sources.iter().zip(stats) {
        println!(
            "{}: {} runs copied, {} replaced (further along there), {} kept",
            src.display(),
            s.copied,
            s.replaced,
            s.kept
        );
    }
    println!("merged into {}", paths.db.display());
    Ok(ExitCode::SUCCESS)
}
