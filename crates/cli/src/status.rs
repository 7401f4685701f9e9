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

/// `infomax status`: runs grouped by state, each line naming the run (`#id`, none while pending,
/// and the first 8 hex digits of its configuration hash, either of which `export-encoder`
/// takes), its cell, how its configuration differs from the cell's plan, its progress and last
/// evaluation.
fn status_text(rows: &[infomax_runner::store::RunRow]) -> String {
    use std::fmt::Write;
    const ORDER: [&str; 7] = ["running", "interrupted", "failed", "diverged", "finished", "skipped", "pending"];
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no runs recorded\n");
    }
    let id = |r: &infomax_runner::store::RunRow| r.id.map_or(String::new(), |id| format!("#{id}"));
    let id_width = rows.iter().map(|r| id(r).len()).max().unwrap_or(0);
    for state in ORDER {
        let group: Vec<_> = rows.iter().filter(|r| r.status == state).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{state} ({})", group.len());
        for r in group {
            let hash: String = r.config_hash.chars().take(8).collect();
            let _ = write!(out, "  {:<id_width$} {hash}  {}/{} {}", id(r), r.experiment, r.profile, r.label);
            let from_plan = r.from_plan.to_string();
            if !from_plan.is_empty() {
                let _ = write!(out, "  {from_plan}");
            }
            let _ = write!(out, "  epochs {}/{}", r.epochs_done, r.epochs);
            let evals: Vec<String> = r.last_eval.iter().map(|(_, name, top1)| format!("{name} {top1:.2} %")).collect();
            if !evals.is_empty() {
                let at = r.last_eval.first().map_or(String::new(), |(e, _, _)| format!(" at epoch {e}"));
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
