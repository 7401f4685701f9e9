//! `infomax compare`: methods across datasets on one metric, as a table and compare.html; with
//! `--runs`, chosen runs side by side (compare-runs-….html).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::paths::{HtmlDir, Paths};

#[derive(Args)]
pub struct CompareArgs {
    /// Compare these runs instead, comma-separated, named as `infomax status` prints them (id
    /// `12` or `#12`, or a hash prefix of 6+ digits): the fields in which their configurations
    /// differ, their final metrics side by side, their per-step and per-epoch curves overlaid.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with_all = ["methods", "datasets", "metric", "profile"])]
    runs: Vec<String>,
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
    let CompareArgs { runs, methods, datasets, metric, profile, html } = args;
    if !runs.is_empty() {
        return compare_runs(&runs, paths, &html);
    }
    let db = infomax_report::db::Database::load(&paths.db)?;
    let c = infomax_report::compare::compare(&db, &methods, &datasets, metric, profile.as_deref())?;
    print!("{}", c.to_text());
    let page = infomax_report::render_compare(&paths.db, &c, &html.for_db(&paths.db).join("compare.html"))?;
    println!("page: {}", page.display());
    Ok(ExitCode::SUCCESS)
}

/// `--runs A,B,…`: the named runs side by side.
fn compare_runs(names: &[String], paths: &Paths, html: &HtmlDir) -> Result<ExitCode> {
    if names.len() < 2 {
        anyhow::bail!("--runs: two or more runs to compare expected, got {}", names.len());
    }
    let store = infomax_runner::Store::open_read_only(&paths.db)?;
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let (id, _, _) = store.find_run(name.trim())?;
        if ids.contains(&id) {
            anyhow::bail!("--runs: `{name}` names run #{id} a second time");
        }
        ids.push(id);
    }
    drop(store);
    let db = infomax_report::db::Database::load(&paths.db)?;
    let c = infomax_report::compare_runs::compare_runs(&db, &ids)?;
    print!("{}", c.to_text());
    let page = infomax_report::render_compare_runs(&paths.db, &c, &html.for_db(&paths.db))?;
    println!("page: {}", page.display());
    Ok(ExitCode::SUCCESS)
}
