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
    for src in &sources {
        let s = store.merge_from(src).with_context(|| format!("merging {}", src.display()))?;
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
