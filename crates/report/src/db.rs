//! Everything the pages show, read from the results database in one pass: experiments with
//! their grids, exclusions, profiles and the papers' numbers; the latest row of every run (and
//! the planned runs not started yet, as `pending`); every epoch with its terms; every evaluation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{open, Error, Result};

/// One axis of an experiment's grid, its values in the file's order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
}

/// Cells of the grid that the experiment leaves out on purpose.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Exclusion {
    /// (axis, values): a cell is excluded when every axis named holds one of its values.
    pub matches: Vec<(String, Vec<String>)>,
    pub why: String,
}

impl Exclusion {
    pub fn applies(&self, cell: &BTreeMap<String, String>) -> bool {
        self.matches.iter().all(|(axis, values)| cell.get(axis).is_some_and(|v| values.contains(v)))
    }
}

/// The paper's number for the cells matching `at`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reference {
    pub at: BTreeMap<String, String>,
    pub metric: String,
    pub value: f64,
    pub source: String,
}

impl Reference {
    pub fn applies(&self, cell: &BTreeMap<String, String>) -> bool {
        self.at.iter().all(|(axis, v)| cell.get(axis) == Some(v))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub name: String,
    pub title: String,
    pub paper: String,
    pub reproduces: String,
    pub axes: Vec<Axis>,
    pub exclusions: Vec<Exclusion>,
    /// (profile, about), in the file's order.
    pub profiles: Vec<(String, String)>,
    pub references: Vec<Reference>,
}

/// The latest row of one run (by config hash), or a planned run not started (`id` none).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: Option<i64>,
    pub experiment: String,
    pub profile: String,
    /// The run's method as the loss knows it (`w-mse`); `method_label` is the grid's name for it
    /// (`w-mse-4`) when the grid has a method axis.
    pub method: String,
    pub method_label: String,
    pub dataset: String,
    pub seed: i64,
    pub epochs: i64,
    pub config_hash: String,
    pub config_json: String,
    pub status: String,
    pub detail: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub code_version: Option<String>,
    pub machine: Option<String>,
    /// Grid coordinates, the seed left out.
    pub grid: BTreeMap<String, String>,
}

impl Run {
    /// `method=w-mse-4 dataset=cifar10 seed=0`.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = self.grid.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if parts.is_empty() {
            parts = vec![format!("method={}", self.method), format!("dataset={}", self.dataset)];
        }
        parts.push(format!("seed={}", self.seed));
        parts.join(" ")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Epoch {
    pub epoch: i64,
    pub loss: f64,
    pub lr: f64,
    pub images_per_second: f64,
    pub wall_seconds: f64,
    /// `loss.<term>` and `diag.<diagnostic>`, averaged over the epoch's steps.
    pub terms: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub epoch: i64,
    pub protocol: String,
    pub k: i64,
    pub top1: f64,
    pub top5: f64,
    pub bank_size: i64,
    pub test_size: i64,
}

/// The accuracies a table can show, by the names experiment files use for the papers' numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Metric {
    Linear,
    LinearTop5,
    Knn5,
    Knn200,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Linear, Metric::Knn5, Metric::Knn200, Metric::LinearTop5];

    pub fn key(self) -> &'static str {
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

    /// This metric's value in an evaluation, if the evaluation measures it.
    pub fn of(self, e: &Evaluation) -> Option<f64> {
        match (self, e.protocol.as_str(), e.k) {
            (Metric::Linear, "linear", _) => Some(e.top1),
            (Metric::LinearTop5, "linear", _) => Some(e.top5),
            (Metric::Knn5, "knn-euclidean", 5) => Some(e.top1),
            (Metric::Knn200, "knn-cosine", 200) => Some(e.top1),
            _ => None,
        }
    }
}

/// The whole database, as the pages need it.
#[derive(Debug, Clone, Default)]
pub struct Database {
    pub path: PathBuf,
    pub experiments: Vec<Experiment>,
    /// Latest row per config hash, then planned runs without a row; ordered by experiment,
    /// profile, then id (pending last).
    pub runs: Vec<Run>,
    pub epochs: HashMap<i64, Vec<Epoch>>,
    pub evaluations: HashMap<i64, Vec<Evaluation>>,
}

impl Database {
    pub fn load(path: &Path) -> Result<Database> {
        let conn = open(path)?;
        let err = |source| Error::Db { path: path.to_path_buf(), source };
        let bad = |what: String| Error::Schema { path: path.to_path_buf(), what };

        let mut profiles: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for row in conn
            .prepare("SELECT experiment, profile, about FROM profiles ORDER BY rowid")
            .map_err(err)?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(err)?
        {
            let (e, p, about) = row.map_err(err)?;
            profiles.entry(e).or_default().push((p, about));
        }
        let mut references: HashMap<String, Vec<Reference>> = HashMap::new();
        for row in conn
            .prepare("SELECT experiment, at_json, metric, value, source FROM reference_values ORDER BY rowid")
            .map_err(err)?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(err)?
        {
            let (e, at, metric, value, source) = row.map_err(err)?;
            let at = serde_json::from_str(&at).map_err(|x| bad(format!("reference_values.at_json of {e}: {x}")))?;
            references.entry(e).or_default().push(Reference { at, metric, value, source });
        }
        let mut experiments = Vec::new();
        for row in conn
            .prepare("SELECT name, title, paper, reproduces, axes_json FROM experiments ORDER BY name")
            .map_err(err)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?)))
            .map_err(err)?
        {
            let (name, title, paper, reproduces, axes_json): (String, String, String, String, String) =
                row.map_err(err)?;
            let (axes, exclusions) =
                parse_grid(&axes_json).map_err(|x| bad(format!("experiments.axes_json of {name}: {x}")))?;
            experiments.push(Experiment {
                profiles: profiles.remove(&name).unwrap_or_default(),
                references: references.remove(&name).unwrap_or_default(),
                name,
                title,
                paper,
                reproduces,
                axes,
                exclusions,
            });
        }

        let mut runs = Vec::new();
        for row in conn
            .prepare(
                "SELECT r.id, r.experiment, r.profile, r.method, r.dataset, r.seed, r.epochs, r.config_hash,
                        r.config_json, r.status, r.status_detail, r.started_at, r.finished_at, r.code_version,
                        r.machine, r.grid_json
                 FROM runs r WHERE r.id = (SELECT max(id) FROM runs WHERE config_hash = r.config_hash)
                 ORDER BY r.experiment, r.profile, r.id",
            )
            .map_err(err)?
            .query_map([], |r| {
                Ok(Run {
                    id: Some(r.get(0)?),
                    experiment: r.get(1)?,
                    profile: r.get(2)?,
                    method: r.get(3)?,
                    method_label: String::new(),
                    dataset: r.get(4)?,
                    seed: r.get(5)?,
                    epochs: r.get(6)?,
                    config_hash: r.get(7)?,
                    config_json: r.get(8)?,
                    status: r.get(9)?,
                    detail: r.get(10)?,
                    started_at: r.get(11)?,
                    finished_at: r.get(12)?,
                    code_version: r.get(13)?,
                    machine: r.get(14)?,
                    grid: serde_json::from_str(&r.get::<_, String>(15)?).unwrap_or_default(),
                })
            })
            .map_err(err)?
        {
            runs.push(row.map_err(err)?);
        }
        for row in conn
            .prepare(
                "SELECT experiment, profile, config_hash, grid_json, config_json FROM planned_runs p
                 WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.config_hash = p.config_hash)
                 ORDER BY experiment, profile, rowid",
            )
            .map_err(err)?
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(err)?
        {
            let (experiment, profile, config_hash, grid, config_json) = row.map_err(err)?;
            let config: serde_json::Value = serde_json::from_str(&config_json)
                .map_err(|x| bad(format!("planned_runs.config_json of {config_hash}: {x}")))?;
            let text = |key: &str| config.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            runs.push(Run {
                id: None,
                method: text("method"),
                method_label: String::new(),
                dataset: text("dataset"),
                seed: config.get("seed").and_then(|v| v.as_i64()).unwrap_or(0),
                epochs: config.pointer("/train/epochs").and_then(|v| v.as_i64()).unwrap_or(0),
                experiment,
                profile,
                config_hash,
                config_json,
                status: "pending".into(),
                detail: None,
                started_at: None,
                finished_at: None,
                code_version: None,
                machine: None,
                grid: serde_json::from_str(&grid).unwrap_or_default(),
            });
        }
        for r in &mut runs {
            r.method_label = r.grid.get("method").cloned().unwrap_or_else(|| r.method.clone());
        }

        let mut epochs: HashMap<i64, Vec<Epoch>> = HashMap::new();
        for row in conn
            .prepare(
                "SELECT run_id, epoch, loss, lr, images_per_second, wall_seconds FROM epochs ORDER BY run_id, epoch",
            )
            .map_err(err)?
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Epoch {
                        epoch: r.get(1)?,
                        loss: r.get(2)?,
                        lr: r.get(3)?,
                        images_per_second: r.get(4)?,
                        wall_seconds: r.get(5)?,
                        terms: BTreeMap::new(),
                    },
                ))
            })
            .map_err(err)?
        {
            let (run, e) = row.map_err(err)?;
            epochs.entry(run).or_default().push(e);
        }
        for row in conn
            .prepare("SELECT run_id, epoch, name, value FROM epoch_terms")
            .map_err(err)?
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get(3)?)))
            .map_err(err)?
        {
            let (run, epoch, name, value) = row.map_err(err)?;
            if let Some(e) = epochs.get_mut(&run).and_then(|es| es.iter_mut().find(|e| e.epoch == epoch)) {
                e.terms.insert(name, value);
            }
        }
        let mut evaluations: HashMap<i64, Vec<Evaluation>> = HashMap::new();
        for row in conn
            .prepare(
                "SELECT run_id, epoch, protocol, k, top1, top5, bank_size, test_size FROM evaluations
                 ORDER BY run_id, epoch, protocol, k",
            )
            .map_err(err)?
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Evaluation {
                        epoch: r.get(1)?,
                        protocol: r.get(2)?,
                        k: r.get(3)?,
                        top1: r.get(4)?,
                        top5: r.get(5)?,
                        bank_size: r.get(6)?,
                        test_size: r.get(7)?,
                    },
                ))
            })
            .map_err(err)?
        {
            let (run, e) = row.map_err(err)?;
            evaluations.entry(run).or_default().push(e);
        }
        Ok(Database { path: path.to_path_buf(), experiments, runs, epochs, evaluations })
    }

    pub fn experiment(&self, name: &str) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.name == name)
    }

    pub fn epochs_of(&self, run: &Run) -> &[Epoch] {
        run.id.and_then(|id| self.epochs.get(&id)).map_or(&[], Vec::as_slice)
    }

    pub fn evaluations_of(&self, run: &Run) -> &[Evaluation] {
        run.id.and_then(|id| self.evaluations.get(&id)).map_or(&[], Vec::as_slice)
    }

    /// `metric` of the randomly initialised encoder (epoch 0).
    pub fn initial(&self, run: &Run, metric: Metric) -> Option<f64> {
        self.evaluations_of(run).iter().filter(|e| e.epoch == 0).find_map(|e| metric.of(e))
    }

    /// `metric` at the latest evaluated epoch after training began, with that epoch.
    pub fn latest(&self, run: &Run, metric: Metric) -> Option<(i64, f64)> {
        self.evaluations_of(run)
            .iter()
            .filter(|e| e.epoch > 0)
            .filter_map(|e| Some((e.epoch, metric.of(e)?)))
            .next_back()
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

/// `{"axes": [{"name", "values"}], "exclude": [{"match": [[axis, [values]]], "why"}]}`.
fn parse_grid(json: &str) -> std::result::Result<(Vec<Axis>, Vec<Exclusion>), String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
    };
    let mut axes = Vec::new();
    for a in v.get("axes").and_then(|a| a.as_array()).ok_or("no `axes` list")? {
        let name = a.get("name").and_then(|n| n.as_str()).ok_or("an axis without a `name`")?;
        let values = a.get("values").and_then(strings).ok_or_else(|| format!("axis {name}: no `values` list"))?;
        axes.push(Axis { name: name.to_string(), values });
    }
    let mut exclusions = Vec::new();
    for x in v.get("exclude").and_then(|x| x.as_array()).map_or(&[][..], Vec::as_slice) {
        let why = x.get("why").and_then(|w| w.as_str()).ok_or("an exclusion without `why`")?.to_string();
        let mut matches = Vec::new();
        for m in x.get("match").and_then(|m| m.as_array()).ok_or("an exclusion without `match`")? {
            let axis = m.get(0).and_then(|a| a.as_str()).ok_or("an exclusion's match without an axis")?;
            let values = m.get(1).and_then(strings).ok_or("an exclusion's match without values")?;
            matches.push((axis.to_string(), values));
        }
        exclusions.push(Exclusion { matches, why });
    }
    Ok((axes, exclusions))
}
