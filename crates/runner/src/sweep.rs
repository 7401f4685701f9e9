//! Running a plan: every run in order, each trained at most once. A run whose dataset is not
//! on disk is recorded as `skipped` (with the fetch command), one that diverges or fails is
//! recorded and the sweep goes on; SIGINT/SIGTERM stops the sweep after the step in flight.

use crate::plan::PlannedRun;
use crate::train::{execute, RunContext, RunOutcome};
use crate::watch::SweepPosition;
use crate::Error;

/// How a sweep went, run by run.
#[derive(Debug, Default)]
pub struct SweepSummary {
    /// Trained to the end by this sweep.
    pub finished: Vec<String>,
    /// Already finished (or diverged) in the database: not trained again.
    pub already_done: Vec<String>,
    /// (run, where its loss stopped being finite).
    pub diverged: Vec<(String, String)>,
    /// (run, error).
    pub failed: Vec<(String, String)>,
    /// (run, why).
    pub skipped: Vec<(String, String)>,
    /// Why the sweep stopped early (a signal), if it did.
    pub interrupted: Option<String>,
}

impl SweepSummary {
    /// `3 finished (1 already), 1 diverged, 0 failed, 2 skipped`.
    pub fn line(&self) -> String {
        format!(
            "{} finished ({} of them already before), {} diverged, {} failed, {} skipped",
            self.finished.len() + self.already_done.len(),
            self.already_done.len(),
            self.diverged.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }

    /// 130 when interrupted, 1 when a run failed, 2 when one diverged, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted.is_some() {
            130
        } else if !self.failed.is_empty() {
            1
        } else if !self.diverged.is_empty() {
            2
        } else {
            0
        }
    }
}

/// Why `dataset` cannot be trained on from `root`, if it cannot.
pub fn missing_dataset(dataset: infomax_data::Dataset, root: &std::path::Path) -> Option<String> {
    (!dataset.is_present(root)).then(|| {
        format!(
            "dataset not found: {} is not under {}; get it with `infomax datasets fetch {}`",
            dataset.dir(),
            root.display(),
            dataset.name()
        )
    })
}

/// Train and evaluate each run of `plan` that is not done yet.
pub fn run_plan(plan: &[PlannedRun], ctx: &RunContext) -> crate::Result<SweepSummary> {
    let mut summary = SweepSummary::default();
    // The training work of each run still to train, for the sweep's ETA.
    let mut work: Vec<f64> = Vec::with_capacity(plan.len());
    for run in plan {
        let to_train = ctx.store.completed_run(&run.config.hash())?.is_none()
            && missing_dataset(run.config.dataset, &ctx.data_root).is_none();
        work.push(if to_train { crate::estimate::run_flops(&run.config).0 } else { 0.0 });
    }
    for (i, run) in plan.iter().enumerate() {
        let sweep = SweepPosition { index: i + 1, count: plan.len(), flops_after: work[i + 1..].iter().sum() };
        let label = run.label();
        let hash = run.config.hash();
        tracing::info!("[{}/{}] {label} (run {})", i + 1, plan.len(), &hash[..12]);
        if let Some((_, status)) = ctx.store.completed_run(&hash)? {
            tracing::info!("already {status}; not trained again");
            if status == "diverged" {
                summary.diverged.push((label, "diverged in an earlier call; not trained again".into()));
            } else {
                summary.already_done.push(label);
            }
            continue;
        }
        if let Some(why) = missing_dataset(run.config.dataset, &ctx.data_root) {
            tracing::warn!("skipped: {why}");
            ctx.store.skip_run(&run.config, &why, &ctx.code_version, &ctx.machine)?;
            summary.skipped.push((label, why));
            continue;
        }
        match execute(&run.config, ctx, sweep) {
            Ok(RunOutcome::AlreadyDone { status, .. }) if status == "diverged" => {
                summary.diverged.push((label, "diverged in an earlier call; not trained again".into()))
            }
            Ok(RunOutcome::AlreadyDone { .. }) => summary.already_done.push(label),
            Ok(RunOutcome::Finished { .. }) => summary.finished.push(label),
            Ok(RunOutcome::Diverged { epoch, step, .. }) => {
                summary.diverged.push((label, format!("loss not finite at epoch {epoch}, step {step}")))
            }
            Err(e @ Error::Interrupted { .. }) => {
                summary.interrupted = Some(format!("{label}: {e}"));
                break;
            }
            Err(e) => {
                tracing::error!("{label}: {e}");
                summary.failed.push((label, e.to_string()));
            }
        }
    }
    Ok(summary)
}
