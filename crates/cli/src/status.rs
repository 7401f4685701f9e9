//! `infomax status`: the runs in the database by state, with their last evaluation.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use infomax_runner::Store;

use crate::paths::Paths;

#[derive(Args)]
pub struct StatusArgs {
    /// Only this experiment.
    experiment: Option<String>,
}

pub fn run(args: StatusArgs, paths: &Paths) -> Result<ExitCode> {
    if !paths.db.is_file() {
        anyhow::bail!("{}: no results database yet (run `infomax reproduce` first)", paths.db.display());
    }
    let store = Store::open(&paths.db)?;
    print!("{}", status_text(&store.run_rows(args.experiment.as_deref())?));
    Ok(ExitCode::SUCCESS)
}

/// `infomax status`: runs grouped by state, each with its progress and last evaluation.
fn status_text(rows: &[infomax_runner::store::RunRow]) -> String {
    use std::fmt::Write;
    const ORDER: [&str; 7] = ["running", "interrupted", "failed", "diverged", "finished", "skipped", "pending"];
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no runs recorded\n");
    }
    for state in ORDER {
        let group: Vec<_> = rows.iter().filter(|r| r.status == state).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{state} ({})", group.len());
        for r in group {
            let evals: Vec<String> = r.last_eval.iter().map(|(_, name, top1)| format!("{name} {top1:.2} %")).collect();
            let at = r.last_eval.first().map_or(String::new(), |(e, _, _)| format!(" at epoch {e}"));
            let _ = write!(out, "  {}/{} {}  epochs {}/{}", r.experiment, r.profile, r.label, r.epochs_done, r.epochs);
            if !evals.is_empty() {
                let _ = write!(out, "  {}{at}", evals.join(", "));
            }
            if let Some(d) = &r.detail {
                let _ = write!(out, "  — {d}");
            }
            out.push('\n');
        }
    }
    out
}
