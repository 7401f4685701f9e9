//! `infomax compare`: methods across datasets on one metric, as a table and compare.html.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::paths::{HtmlDir, Paths};

#[derive(Args)]
pub struct CompareArgs {
    /// Methods, comma-separated: the grid's names (`w-mse-4`) or the loss's (`w-mse`)
    /// [default: every method with a finished run].
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Datasets, comma-separated [default: every dataset with a finished run].
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// knn200, knn5, linear or linear-top5.
    #[arg(long, default_value = "knn200", value_parser = parse_metric)]
    metric: infomax_report::db::Metric,
    /// Only runs of this profile (otherwise a cell may average runs of different budgets,
    /// and says so).
    #[arg(long)]
    profile: Option<String>,
    #[command(flatten)]
    html: HtmlDir,
}

/// `--metric`: a metric by its key, or an error listing the keys.
fn parse_metric(s: &str) -> Result<infomax_report::db::Metric, String> {
    infomax_report::db::Metric::parse(s).ok_or_else(|| {
        let valid: Vec<&str> = infomax_report::db::Metric::ALL.iter().map(|m| m.key()).collect();
        format!("unknown metric `{s}`; one of {}", valid.join(", "))
    })
}

pub fn run(args: CompareArgs, paths: &Paths) -> Result<ExitCode> {
    let CompareArgs { methods, datasets, metric, profile, html } = args;
    let db = infomax_report::db::Database::load(&paths.db)?;
    let c = infomax_report::compare::compare(&db, &methods, &datasets, metric, profile.as_deref())?;
    print!("{}", c.to_text());
    let page = infomax_report::render_compare(&paths.db, &c, &html.for_db(&paths.db).join("compare.html"))?;
    println!("page: {}", page.display());
    Ok(ExitCode::SUCCESS)
}
