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
    /// Already finished in the database (by an earlier call or another process): not trained
    /// again.
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

/// How often a sweep looks again at the runs other processes train.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

impl SweepSummary {
    /// Note how run `label` went; `Some(owner)` when another process trains it (nothing noted).
    fn record(&mut self, label: String, outcome: crate::Result<RunOutcome>) -> Option<String> {
        match outcome {
            Ok(RunOutcome::Busy { owner, .. }) => return Some(owner),
            Ok(RunOutcome::AlreadyDone { status, .. }) if status == "diverged" => {
                self.diverged.push((label, "diverged in an earlier call or another process; not trained again".into()))
            }
            Ok(RunOutcome::AlreadyDone { .. }) => self.already_done.push(label),
            Ok(RunOutcome::Finished { .. }) => self.finished.push(label),
            Ok(RunOutcome::Diverged { epoch, step, .. }) => {
                self.diverged.push((label, format!("loss not finite at epoch {epoch}, step {step}")))
            }
            Err(e @ Error::Interrupted { .. }) => self.interrupted = Some(format!("{label}: {e}")),
            Err(e) => {
                tracing::error!("{label}: {e}");
                self.failed.push((label, e.to_string()));
            }
        }
        None
    }

    /// `3 finished (1 already), 1 diverged, 0 failed, 2 skipped`.
    pub fn line(&self) -> String {
        format!(
            "{} finished ({} of them already before or by another process), {} diverged, {} failed, {} skipped",
            self.finished.len() + self.already_done.len(),
            self.already_done.len(),
            self.diverged.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }

    /// The exit status that tells how the sweep went: 130 when interrupted, else 1 when a run
    /// failed, else 2 when one diverged, else 3 when one was skipped (its dataset is not on
    /// disk), else 0: every planned run finished.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted.is_some() {
            130
        } else if !self.failed.is_empty() {
            1
        } else if !self.diverged.is_empty() {
            2
        } else if !self.skipped.is_empty() {
            3
        } else {
            0
        }
    }
}

/// Why `dataset` cannot be trained on from `root`, if it cannot.
pub fn missing_dataset(dataset: &infomax_data::DatasetSpec, root: &std::path::Path) -> Option<String> {
    if dataset.is_present(root) {
        return None;
    }
    Some(match dataset.builtin() {
        Some(d) if d.archive().is_none() => format!("dataset not found: {}", d.how_to_get(root)),
        Some(d) => format!(
            "dataset not found: {} is not under {}; get it with `infomax datasets fetch {}` or run again with --fetch",
            d.dir(),
            root.display(),
            d.name()
        ),
        None => format!("dataset not found: no folder {}", dataset.dir(root).display()),
    })
}

/// Train and evaluate each run of `plan` that is not done yet.
pub fn run_plan(plan: &[PlannedRun], ctx: &RunContext) -> crate::Result<SweepSummary> {
    let mut summary = SweepSummary::default();
    // The training work of each run still to train, for the sweep's ETA.
    let mut work: Vec<f64> = Vec::with_capacity(plan.len());
    for run in plan {
        let to_train = ctx.store.completed_run(&run.config.hash())?.is_none()
            && missing_dataset(&run.config.dataset, &ctx.data_root).is_none();
        work.push(if to_train { crate::estimate::run_flops(&run.config, &ctx.data_root).0 } else { 0.0 });
    }
    let mut busy: Vec<usize> = Vec::new();
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
        if let Some(why) = missing_dataset(&run.config.dataset, &ctx.data_root) {
            tracing::warn!("skipped: {why}");
            ctx.store.skip_run(&run.config, &why, &ctx.code_version, &ctx.machine)?;
            summary.skipped.push((label, why));
            continue;
        }
        let outcome = execute(&run.config, ctx, sweep);
        if let Some(owner) = summary.record(label, outcome) {
            tracing::info!("another process ({owner}) trains it; this one comes back to it at the end");
            busy.push(i);
        }
        if summary.interrupted.is_some() {
            return Ok(summary);
        }
    }
    // Runs other processes were training: wait for each to end, or to be left by its process
    // (its lease dies) and then train it here.
    while !busy.is_empty() {
        let waited = std::time::Instant::now();
        while waited.elapsed() < BUSY_POLL {
            if ctx.stop.load(std::sync::atomic::Ordering::Relaxed) {
                summary.interrupted = Some("stopped while waiting for runs other processes train".into());
                return Ok(summary);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let mut still = Vec::new();
        for i in busy {
            let run = &plan[i];
            let sweep = SweepPosition { index: i + 1, count: plan.len(), flops_after: 0.0 };
            if summary.record(run.label(), execute(&run.config, ctx, sweep)).is_some() {
                still.push(i);
            }
            if summary.interrupted.is_some() {
                return Ok(summary);
            }
        }
        busy = still;
    }
    Ok(summary)
}
