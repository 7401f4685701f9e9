//! `infomax report`: render the HTML report from the results database.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::paths::{HtmlDir, Paths};

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    html: HtmlDir,
}

pub fn run(args: ReportArgs, paths: &Paths) -> Result<ExitCode> {
    let ReportArgs { html } = args;
    let r = infomax_report::render(&paths.db, &html.for_db(&paths.db))?;
    println!("report: {} ({} experiment pages, {} run pages)", r.index.display(), r.experiments.len(), r.runs.len());
    Ok(ExitCode::SUCCESS)
}
