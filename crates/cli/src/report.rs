//! `infomax report`: render the HTML report from the results database.

use std::process::ExitCode;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::paths::{HtmlDir, Paths};

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    html: HtmlDir,
    /// Print the finished runs as Markdown tables (a row per run: accuracies before and after
    /// training, training time, code version) instead of rendering HTML
    #[arg(long)]
    markdown: bool,
    /// With --markdown: write the tables into FILE, between its `<!-- results:begin -->` and
    /// `<!-- results:end -->` lines (the README's results section: `just results`)
    #[arg(long, value_name = "FILE", requires = "markdown")]
    into: Option<PathBuf>,
}

pub fn run(args: ReportArgs, paths: &Paths) -> Result<ExitCode> {
    let ReportArgs { html, markdown, into } = args;
    if markdown {
        let block = infomax_report::markdown::results(&paths.db)?;
        match into {
            None => print!("{block}"),
            Some(file) => {
                let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                let new = infomax_report::markdown::replace_block(&file, &text, &block)?;
                if new != text {
                    infomax_report::write_atomically(&file, new.as_bytes())?;
                }
                println!("results: {} ({})", file.display(), if new == text { "unchanged" } else { "updated" });
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = infomax_report::render(&paths.db, &html.for_db(&paths.db))?;
    println!("report: {} ({} experiment pages, {} run pages)", r.index.display(), r.experiments.len(), r.runs.len());
    Ok(ExitCode::SUCCESS)
}
