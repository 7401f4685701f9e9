//! Everything the pages show, read from the results database in one pass through the runner's
//! store: experiments with their grids, exclusions, profiles and the papers' numbers; every row
//! of `runs` with its configuration parsed; the latest row of every run (and the planned runs
//! not started yet, as `pending`); every epoch with its terms; every evaluation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use infomax_runner::config::RunConfig;
pub use infomax_runner::store::Metric;
use infomax_runner::store::{self, EpochRecord, EvalRecord, Experiment, PlannedRecord, RunRecord, StepRecord, Store};
use serde::Serialize;

use crate::Result;

/// The latest row of one run (by config hash), or a planned run not started (`id` none).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: Option<i64>,
    /// The run's configuration: experiment, profile, grid coordinates (the seed left out),
    /// method, dataset, seed, epochs.
    pub config: RunConfig,
    /// The grid's name for the method (`w-mse-4`) when the grid has a method axis, else the
    /// method's own (`w-mse`).
    pub method_label: String,
    pub config_hash: String,
    /// How the configuration differs from its cell's recorded plan (`train.epochs=3`), empty for
    /// the cell as planned: runs are pooled over seeds only within one variant.
    pub variant: String,
    pub status: String,
    pub detail: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub code_version: Option<String>,
    pub machine: Option<String>,
}

impl Run {
    fn started(r: &RunRecord, planned: &[PlannedRecord], records: &[RunRecord]) -> Run {
        Run {
            id: Some(r.id),
            variant: store::variant_label(&store::variant_of(&r.config, planned, records.iter().map(|r| &r.config))),
            method_label: method_label(&r.config),
            config: r.config.clone(),
            config_hash: r.config_hash.clone(),
            status: r.status.as_str().to_string(),
            detail: r.detail.clone(),
            started_at: Some(r.started_at.clone()),
            finished_at: r.finished_at.clone(),
            code_version: Some(r.code_version.clone()),
            machine: Some(r.machine.clone()),
        }
    }

    fn pending(p: PlannedRecord, planned: &[PlannedRecord]) -> Run {
        Run {
            id: None,
            method_label: method_label(&p.config),
            variant: store::variant_label(&store::variant_of(&p.config, planned, [])),
            config: p.config,
            config_hash: p.config_hash,
            status: "pending".into(),
            detail: None,
            started_at: None,
            finished_at: None,
            code_version: None,
            machine: None,
        }
    }

    /// `method=w-mse-4 dataset=cifar10 seed=0`, and the variant when there is one.
    pub fn label(&self) -> String {
        match self.variant.as_str() {
            "" => store::run_label(&self.config),
            v => format!("{} ({v})", store::run_label(&self.config)),
        }
    }
}

/// The grid's name for a run's method (`w-mse-4`), else the method's own (`w-mse`).
pub(crate) fn method_label(config: &RunConfig) -> String {
    config.grid.get("method").cloned().unwrap_or_else(|| config.method.name().to_string())
}

/// The whole database, as the pages need it.
#[derive(Debug, Clone, Default)]
pub struct Database {
    pub path: PathBuf,
    pub experiments: Vec<Experiment>,
    /// Every row of `runs` (every attempt of every run), by id.
    pub records: Vec<RunRecord>,
    /// Latest row per config hash, then planned runs without a row; ordered by experiment,
    /// profile, then id (pending last).
    pub runs: Vec<Run>,
    pub epochs: HashMap<i64, Vec<EpochRecord>>,
    pub evaluations: HashMap<i64, Vec<EvalRecord>>,
}

impl Database {
    /// Read the database at `path` (it must exist and be at this infomax's schema version).
    pub fn load(path: &Path) -> Result<Database> {
        let store = Store::open_read_only(path)?;
        let experiments = store.experiments()?;
        let records = store.runs()?;
        let runs = latest_then_pending(&records, store.planned_runs()?);
        let epochs = store.epochs()?;
        let evaluations = store.evaluations()?;
        Ok(Database { path: path.to_path_buf(), experiments, records, runs, epochs, evaluations })
    }

    pub fn experiment(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.name == name)
    }

    pub(crate) fn epochs_by_id(&self, id: Option<i64>) -> &[EpochRecord] {
        id.and_then(|id| self.epochs.get(&id)).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn evaluations_by_id(&self, id: Option<i64>) -> &[EvalRecord] {
        id.and_then(|id| self.evaluations.get(&id)).map_or(&[], Vec::as_slice)
    }

    /// The recorded steps of run `id`, read when its page is drawn (they are many).
    pub fn steps_of(&self, id: i64) -> Result<Vec<StepRecord>> {
        Ok(Store::open_read_only(&self.path)?.steps_of(id)?)
    }

    pub fn epochs_of(&self, run: &Run) -> &[EpochRecord] {
        self.epochs_by_id(run.id)
    }

    pub fn evaluations_of(&self, run: &Run) -> &[EvalRecord] {
        self.evaluations_by_id(run.id)
    }

    /// `metric` of run `id`'s randomly initialised encoder (epoch 0).
    pub(crate) fn initial_by_id(&self, id: Option<i64>, metric: Metric) -> Option<f64> {
        self.evaluations_by_id(id).iter().filter(|e| e.epoch == 0).find_map(|e| metric.of(e))
    }

    /// `metric` of run `id` at the latest evaluated epoch after training began, with that epoch.
    pub(crate) fn latest_by_id(&self, id: Option<i64>, metric: Metric) -> Option<(usize, f64)> {
        self.evaluations_by_id(id)
            .iter()
            .filter(|e| e.epoch > 0)
            .filter_map(|e| Some((e.epoch, metric.of(e)?)))
            .next_back()
    }

    /// `metric` of the randomly initialised encoder (epoch 0).
    pub fn initial(&self, run: &Run, metric: Metric) -> Option<f64> {
        self.initial_by_id(run.id, metric)
    }

    /// `metric` at the latest evaluated epoch after training began, with that epoch.
    pub fn latest(&self, run: &Run, metric: Metric) -> Option<(usize, f64)> {
        self.latest_by_id(run.id, metric)
    }

    /// `metric` of a finished run's trained encoder: its final evaluation.
    pub fn result(&self, run: &Run, metric: Metric) -> Option<f64> {
        (run.status == "finished").then(|| self.latest(run, metric).map(|(_, v)| v)).flatten()
    }

    /// Seconds of training recorded for a run.
    pub fn train_seconds(&self, run: &Run) -> f64 {
        self.epochs_of(run).iter().map(|e| e.wall_seconds).sum()
    }
}

/// The latest row of every configuration (by hash), ordered by experiment, profile and id; then
/// the planned runs that have no row, in the order planned.
fn latest_then_pending(records: &[RunRecord], planned: Vec<PlannedRecord>) -> Vec<Run> {
    let mut latest: HashMap<&str, i64> = HashMap::new();
    for r in records {
        let id = latest.entry(r.config_hash.as_str()).or_insert(r.id);
        *id = (*id).max(r.id);
    }
    let mut runs: Vec<Run> = records
        .iter()
        .filter(|r| latest.get(r.config_hash.as_str()) == Some(&r.id))
        .map(|r| Run::started(r, &planned, records))
        .collect();
    runs.sort_by(|a, b| {
        (&a.config.experiment, &a.config.profile, a.id).cmp(&(&b.config.experiment, &b.config.profile, b.id))
    });
    let pending: Vec<PlannedRecord> =
        planned.iter().filter(|p| !latest.contains_key(p.config_hash.as_str())).cloned().collect();
    runs.extend(pending.into_iter().map(|p| Run::pending(p, &planned)));
    runs
}
