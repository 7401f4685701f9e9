//! The rows the store writes and reads, typed. A run's configuration is stored as the canonical
//! JSON of its [`RunConfig`] and read back as one, so what a row says about a run (its experiment,
//! method, dataset, seed, epochs, grid coordinates) is the configuration's own fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::RunConfig;
use crate::experiment::ExperimentFile;
pub use crate::experiment::{Deviation, Exclusion, Recipe};
use crate::plan::PlannedRun;

/// Status values of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Finished,
    Diverged,
    Failed,
    Interrupted,
    /// Not started for a reason outside the run (its dataset is not on disk).
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Running,
        RunStatus::Finished,
        RunStatus::Diverged,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Finished or diverged: the run needs no more training.
    pub fn is_complete(self) -> bool {
        matches!(self, RunStatus::Finished | RunStatus::Diverged)
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        RunStatus::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| format!("unknown run status `{s}`"))
    }
}

/// One row of `runs`: a run's configuration and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    /// The configuration: experiment, profile, grid coordinates, method, dataset, seed, epochs.
    pub config: RunConfig,
    /// SHA-256 of the configuration's canonical JSON when it was written: the run's identity.
    pub config_hash: String,
    pub status: RunStatus,
    pub detail: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub code_version: String,
    pub machine: String,
    /// Seconds from start to end (training and every evaluation); none until the run ends.
    pub elapsed_seconds: Option<f64>,
}

/// One row of `planned_runs`: a run a `reproduce` planned, trained yet or not.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRecord {
    pub config_hash: String,
    /// Grid coordinates and seed: `method=w-mse-4 dataset=cifar10 seed=0`.
    pub label: String,
    pub config: RunConfig,
}

impl From<&PlannedRun> for PlannedRecord {
    fn from(run: &PlannedRun) -> Self {
        PlannedRecord { config_hash: run.config.hash(), label: run.label(), config: run.config.clone() }
    }
}

/// One epoch's aggregate, as stored: a row of `epochs` with its rows of `epoch_terms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub images_per_second: f64,
    pub wall_seconds: f64,
    /// `loss.<term>` and `diag.<diagnostic>`, averaged over the epoch's steps (read back sorted
    /// by name); serialised as a map from name to value.
    #[serde(serialize_with = "terms_as_map")]
    pub terms: Vec<(String, f64)>,
}

/// One recorded optimiser step: a row of `steps` with its rows of `step_terms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// Steps taken when it ended, from 1.
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    /// This step's images (a batch) over its wall time, data waiting included.
    pub images_per_second: f64,
    /// `loss.<term>` and `diag.<diagnostic>` of this step (read back sorted by name).
    #[serde(serialize_with = "terms_as_map")]
    pub terms: Vec<(String, f64)>,
}

impl StepRecord {
    /// The value of term `name`, if the step recorded it.
    pub fn term(&self, name: &str) -> Option<f64> {
        self.terms.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

fn terms_as_map<S: Serializer>(terms: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(terms.iter().map(|(name, value)| (name, value)))
}

impl EpochRecord {
    /// The value of term `name`, if the epoch recorded it.
    pub fn term(&self, name: &str) -> Option<f64> {
        self.terms.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// One evaluation, as stored (accuracies in percent): a row of `evaluations`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRecord {
    pub epoch: usize,
    pub protocol: String,
    /// The k-NN's neighbour count; none for the linear probe.
    pub k: Option<usize>,
    pub top1: f64,
    pub top5: f64,
    pub bank_size: usize,
    pub test_size: usize,
}

/// The accuracies an evaluation measures, by the names the CLI, the experiment files (the
/// papers' numbers) and the `final_results` view use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Metric {
    Linear,
    LinearTop5,
    Knn5,
    Knn200,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Linear, Metric::Knn5, Metric::Knn200, Metric::LinearTop5];

    /// Every metric's name, in [`Metric::ALL`]'s order.
    pub const KEYS: [&'static str; 4] =
        [Metric::ALL[0].key(), Metric::ALL[1].key(), Metric::ALL[2].key(), Metric::ALL[3].key()];

    pub const fn key(self) -> &'static str {
        match self {
            Metric::Linear => "linear",
            Metric::LinearTop5 => "linear-top5",
            Metric::Knn5 => "knn5",
            Metric::Knn200 => "knn200",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Metric::Linear => "linear probe top-1 %",
            Metric::LinearTop5 => "linear probe top-5 %",
            Metric::Knn5 => "5-NN top-1 % (Euclidean, majority)",
            Metric::Knn200 => "200-NN top-1 % (cosine, weighted)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Metric::Linear => "linear",
            Metric::LinearTop5 => "linear top-5",
            Metric::Knn5 => "5-NN",
            Metric::Knn200 => "200-NN",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == s)
    }

    /// The evaluation protocol that measures it, as `evaluations.protocol` names it.
    pub fn protocol(self) -> &'static str {
        match self {
            Metric::Linear | Metric::LinearTop5 => "linear",
            Metric::Knn5 => "knn-euclidean",
            Metric::Knn200 => "knn-cosine",
        }
    }

    /// The k-NN's neighbour count (`evaluations.k`); none for the linear probe.
    pub fn k(self) -> Option<usize> {
        match self {
            Metric::Linear | Metric::LinearTop5 => None,
            Metric::Knn5 => Some(5),
            Metric::Knn200 => Some(200),
        }
    }

    /// Whether it is the evaluation's top-5 accuracy rather than its top-1.
    pub fn is_top5(self) -> bool {
        self == Metric::LinearTop5
    }

    /// This metric's value in an evaluation, if the evaluation measures it.
    pub fn of(self, e: &EvalRecord) -> Option<f64> {
        (e.protocol == self.protocol() && e.k == self.k()).then_some(if self.is_top5() { e.top5 } else { e.top1 })
    }
}

/// One axis of an experiment's grid as stored: its value names in the file's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridAxis {
    pub name: String,
    pub values: Vec<String>,
}

/// The paper's number for the cells matching `at`: a row of `reference_values`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceValue {
    pub at: BTreeMap<String, String>,
    /// One of `config::REFERENCE_METRICS`.
    pub metric: String,
    pub value: f64,
    pub source: String,
}

impl ReferenceValue {
    pub fn applies(&self, cell: &BTreeMap<String, String>) -> bool {
        self.at.iter().all(|(axis, v)| cell.get(axis) == Some(v))
    }
}

/// An experiment as stored: a row of `experiments` (its grid in `axes_json`), with its rows of
/// `profiles` and `reference_values`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub name: String,
    pub title: String,
    pub paper: String,
    pub reproduces: String,
    /// The grid's axes in the file's order.
    pub axes: Vec<GridAxis>,
    /// Cells of the grid left out on purpose, with why.
    pub exclusions: Vec<Exclusion>,
    /// (profile, about), in the order written.
    pub profiles: Vec<(String, String)>,
    /// (profile, a source some of its cells follow), in the order written.
    pub recipes: Vec<(String, Recipe)>,
    /// (profile, a deviation of its recipe from the source), in the order written.
    pub deviations: Vec<(String, Deviation)>,
    pub references: Vec<ReferenceValue>,
}

impl Experiment {
    /// What an experiment file records: its description, grid, profiles and the papers' numbers.
    pub fn from_file(file: &ExperimentFile) -> Experiment {
        let meta = &file.meta;
        Experiment {
            name: meta.name.clone(),
            title: meta.title.clone(),
            paper: meta.paper.clone(),
            reproduces: meta.reproduces.clone(),
            axes: file
                .axes
                .iter()
                .map(|a| GridAxis { name: a.name.clone(), values: a.values.iter().map(|v| v.name.clone()).collect() })
                .collect(),
            exclusions: file.exclusions.clone(),
            profiles: file.profiles.iter().map(|(name, p)| (name.clone(), p.about.clone())).collect(),
            recipes: file
                .profiles
                .iter()
                .flat_map(|(name, p)| p.recipes.iter().map(move |r| (name.clone(), r.clone())))
                .collect(),
            deviations: file
                .profiles
                .iter()
                .flat_map(|(name, p)| p.deviations.iter().map(move |d| (name.clone(), d.clone())))
                .collect(),
            references: file
                .references
                .iter()
                .flat_map(|r| {
                    r.values.iter().map(|(metric, value)| ReferenceValue {
                        at: r.at.clone(),
                        metric: metric.clone(),
                        value: *value,
                        source: r.source.clone(),
                    })
                })
                .collect(),
        }
    }

    /// The exclusion that leaves out `cell` (axis → value name) of `profile`, if one does: it
    /// holds for the profile and every axis it names holds one of its values.
    pub fn excluding(&self, profile: &str, cell: &BTreeMap<String, String>) -> Option<&Exclusion> {
        self.exclusions.iter().find(|x| {
            x.holds_for(profile)
                && x.matches.iter().all(|(axis, values)| cell.get(axis).is_some_and(|v| values.contains(v)))
        })
    }

    /// `axes_json`: `{"axes": [{"name", "values"}], "exclude": [{"match": [[axis, [values]]], "why"}]}`.
    pub(super) fn grid_json(&self) -> String {
        let grid = StoredGridRef { axes: &self.axes, exclude: &self.exclusions };
        serde_json::to_string(&grid).expect("a grid serialises")
    }

    /// The axes and exclusions of an `axes_json`.
    pub(super) fn parse_grid(json: &str) -> serde_json::Result<(Vec<GridAxis>, Vec<Exclusion>)> {
        let grid: StoredGrid = serde_json::from_str(json)?;
        Ok((grid.axes, grid.exclude))
    }
}

#[derive(Serialize)]
struct StoredGridRef<'a> {
    axes: &'a [GridAxis],
    exclude: &'a [Exclusion],
}

#[derive(Deserialize)]
struct StoredGrid {
    axes: Vec<GridAxis>,
    #[serde(default, deserialize_with = "exclusions")]
    exclude: Vec<Exclusion>,
}

/// Reads [`Exclusion`] as it serialises (`config` derives only `Serialize`); a field renamed
/// there fails to compile here.
#[derive(Deserialize)]
#[serde(remote = "Exclusion")]
struct ExclusionDef {
    #[serde(rename = "match")]
    matches: Vec<(String, Vec<String>)>,
    why: String,
    #[serde(default)]
    profiles: Vec<String>,
}

fn exclusions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Exclusion>, D::Error> {
    #[derive(Deserialize)]
    struct One(#[serde(with = "ExclusionDef")] Exclusion);
    Ok(Vec::<One>::deserialize(d)?.into_iter().map(|One(x)| x).collect())
}

/// `method=w-mse-4 dataset=cifar10 seed=0`: a run's grid coordinates (its method and dataset
/// when it has none), then its seed.
pub fn label(grid: &BTreeMap<String, String>, method: &str, dataset: &str, seed: u64) -> String {
    let mut parts: Vec<String> = grid.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if parts.is_empty() {
        parts = vec![format!("method={method}"), format!("dataset={dataset}")];
    }
    parts.push(format!("seed={seed}"));
    parts.join(" ")
}

/// [`label`] of a configuration.
pub fn run_label(config: &RunConfig) -> String {
    label(&config.grid, config.method.name(), config.dataset.name(), config.seed)
}

/// How a run's configuration differs from its grid cell's reference — the configuration the
/// recorded plan gives the cell (any seed), or for a cell the plan lacks the first of `runs` in
/// it: the run's variant, empty for the cell as planned. Only runs of one variant are pooled.
pub fn variant_of<'a>(
    config: &RunConfig,
    planned: &'a [PlannedRecord],
    runs: impl IntoIterator<Item = &'a RunConfig>,
) -> Vec<(String, String)> {
    let same_cell =
        |c: &RunConfig| c.experiment == config.experiment && c.profile == config.profile && c.grid == config.grid;
    let reference =
        planned.iter().map(|p| &p.config).find(|c| same_cell(c)).or_else(|| runs.into_iter().find(|c| same_cell(c)));
    reference.map_or_else(Vec::new, |r| config.differences_from(r))
}

/// A variant's name from [`variant_of`]: `optimizer.lr=0.5 train.epochs=3` (string values
/// unquoted), empty for the cell as planned.
pub fn variant_label(differences: &[(String, String)]) -> String {
    differences.iter().map(|(k, v)| format!("{k}={}", shown_value(v))).collect::<Vec<_>>().join(" ")
}

/// A field's JSON value text as a person reads it: strings unquoted, anything else as it is.
pub fn shown_value(json: &str) -> String {
    serde_json::from_str::<String>(json).unwrap_or_else(|_| json.to_string())
}

/// `grid_json`: a run's grid coordinates.
pub(super) fn grid_json(config: &RunConfig) -> String {
    serde_json::to_string(&config.grid).expect("a map of strings serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_is_named_by_what_differs_from_its_cells_plan() {
        let mut plan = RunConfig::defaults(crate::config::Method::Vicreg, crate::config::Dataset::Cifar10);
        (plan.experiment, plan.profile) = ("e".into(), "p".into());
        plan.grid.insert("method".into(), "vicreg".into());
        let planned = [PlannedRecord { config_hash: plan.hash(), label: run_label(&plan), config: plan.clone() }];
        let variant = |c: &RunConfig, runs: &[RunConfig]| variant_label(&variant_of(c, &planned, runs));
        let mut seed = plan.clone();
        seed.seed = 3;
        assert_eq!(variant(&seed, &[]), "");
        let mut longer = seed.clone();
        longer.train.epochs = 3;
        longer.encoder.arch = "resnet34".into();
        assert_eq!(variant(&longer, &[]), "encoder.arch=resnet34 train.epochs=3");
        // A cell the plan lacks: measured against its first run.
        let mut elsewhere = plan.clone();
        elsewhere.grid.insert("method".into(), "other".into());
        let mut elsewhere_longer = elsewhere.clone();
        elsewhere_longer.train.epochs = 5;
        let runs = [elsewhere.clone(), elsewhere_longer.clone()];
        assert_eq!(variant(&elsewhere, &runs), "");
        assert_eq!(variant(&elsewhere_longer, &runs), "train.epochs=5");
    }

    #[test]
    fn a_grid_reads_back_as_written() {
        let e = Experiment {
            name: "mini".into(),
            title: String::new(),
            paper: String::new(),
            reproduces: String::new(),
            axes: vec![GridAxis { name: "method".into(), values: vec!["simclr".into(), "byol".into()] }],
            exclusions: vec![
                Exclusion {
                    matches: vec![("method".into(), vec!["byol".into()])],
                    why: "empty".into(),
                    profiles: vec![],
                },
                Exclusion {
                    matches: vec![("method".into(), vec!["simclr".into()])],
                    why: "too slow here".into(),
                    profiles: vec!["smoke".into()],
                },
            ],
            profiles: vec![],
            recipes: vec![],
            deviations: vec![],
            references: vec![],
        };
        let json = e.grid_json();
        assert_eq!(
            json,
            r#"{"axes":[{"name":"method","values":["simclr","byol"]}],"exclude":[{"match":[["method",["byol"]]],"why":"empty"},{"match":[["method",["simclr"]]],"why":"too slow here","profiles":["smoke"]}]}"#
        );
        assert_eq!(Experiment::parse_grid(&json).unwrap(), (e.axes.clone(), e.exclusions.clone()));
        let byol = BTreeMap::from([("method".to_string(), "byol".to_string())]);
        assert_eq!(e.excluding("smoke", &byol).map(|x| x.why.as_str()), Some("empty"));
        // A profile's exclusion holds for that profile only.
        let simclr = BTreeMap::from([("method".to_string(), "simclr".to_string())]);
        assert_eq!(e.excluding("smoke", &simclr).map(|x| x.why.as_str()), Some("too slow here"));
        assert!(e.excluding("paper", &simclr).is_none());
        assert!(Experiment::parse_grid(r#"{"axes": []}"#).unwrap().1.is_empty(), "`exclude` may be absent");
        assert!(Experiment::parse_grid(r#"{"exclude": []}"#).is_err(), "`axes` may not");
    }

    #[test]
    fn statuses_parse_back() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
        }
        assert!("pending".parse::<RunStatus>().is_err());
    }
}
