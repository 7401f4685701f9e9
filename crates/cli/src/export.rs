//! `infomax export`: every run and evaluation as one flat table, CSV or Parquet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::paths::Paths;

#[derive(Args)]
pub struct ExportArgs {
    /// csv or parquet.
    #[arg(long, default_value = "csv")]
    format: infomax_report::export::Format,
    /// File to write (default: CSV to stdout; Parquet needs a file).
    #[arg(long, alias = "file", value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: ExportArgs, paths: &Paths) -> Result<ExitCode> {
    let ExportArgs { format, out } = args;
    let mut stdout = std::io::stdout().lock();
    let rows = infomax_report::export::export(&paths.db, format, out.as_deref(), &mut stdout)?;
    if let Some(f) = out {
        println!("{}: {rows} rows", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
