//! `infomax compare --runs A,B[,C…]`: chosen runs side by side — the configuration fields in
//! which they differ, their final metrics, and their per-step and per-epoch curves overlaid.

use std::fmt::Write;

use infomax_runner::store::{self, RunRecord, StepRecord};
use serde::Serialize;

use crate::db::{Database, Metric};
use crate::run::step_points;
use crate::svg::{Chart, Series};
use crate::Result;

/// One compared run.
#[derive(Debug, Clone, Serialize)]
pub struct ComparedRun {
    pub id: i64,
    /// `#12`, as `infomax status` names it.
    pub name: String,
    pub hash: String,
    pub label: String,
    pub status: String,
    /// The run's page in the report.
    pub page: String,
}

/// A configuration field with a value per run (in the runs' order).
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub field: String,
    pub values: Vec<String>,
}

/// A metric with each run's value after training (none: not evaluated).
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub metric: &'static str,
    pub title: &'static str,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunComparison {
    pub runs: Vec<ComparedRun>,
    pub differences: Vec<Difference>,
    pub metrics: Vec<MetricRow>,
    /// Inline SVG markup: per step, then per epoch.
    pub charts: Vec<String>,
    /// The page's file name: `compare-runs-3-7.html`.
    pub file_name: String,
}

/// Compare the runs of the database with ids `ids` (in that order).
pub fn compare_runs(db: &Database, ids: &[i64]) -> Result<RunComparison> {
    let records: Vec<&RunRecord> = ids
        .iter()
        .map(|id| {
            db.records.iter().find(|r| r.id == *id).ok_or_else(|| crate::Error::NoRun { id: *id, db: db.path.clone() })
        })
        .collect::<Result<_>>()?;
    let steps: Vec<Vec<StepRecord>> = ids.iter().map(|id| db.steps_of(*id)).collect::<Result<_>>()?;
    let runs: Vec<ComparedRun> = records
        .iter()
        .map(|r| ComparedRun {
            id: r.id,
            name: format!("#{}", r.id),
            hash: r.config_hash[..8].to_string(),
            label: format!("{}/{} {}", r.config.experiment, r.config.profile, store::run_label(&r.config)),
            status: r.status.as_str().to_string(),
            page: crate::run::page_file(r.id),
        })
        .collect();
    let fields: Vec<_> = records.iter().map(|r| r.config.fields()).collect();
    let keys: std::collections::BTreeSet<&String> = fields.iter().flat_map(|f| f.keys()).collect();
    let differences = keys
        .into_iter()
        .filter_map(|k| {
            let values: Vec<String> =
                fields.iter().map(|f| f.get(k).cloned().unwrap_or_else(|| "none".into())).collect();
            values.iter().any(|v| *v != values[0]).then(|| Difference { field: k.clone(), values })
        })
        .collect();
    let metrics = Metric::ALL
        .into_iter()
        .map(|m| MetricRow {
            metric: m.key(),
            title: m.title(),
            values: ids.iter().map(|id| db.latest_by_id(Some(*id), m).map(|(_, v)| v)).collect(),
        })
        .filter(|row| row.values.iter().any(Option::is_some))
        .collect();
    let name = |i: usize| format!("{} {}", runs[i].name, runs[i].hash);
    let overlay = |title: &str, x: &str, y: &str, series: Vec<Series>| {
        Chart { title: title.into(), x_label: x.into(), y_label: y.into(), log_x: false, series, reference: None }
            .render()
    };
    let per_step = |f: &dyn Fn(&StepRecord) -> Option<f64>| -> Vec<Series> {
        steps.iter().enumerate().map(|(i, s)| Series { name: name(i), points: step_points(s, f) }).collect()
    };
    let per_epoch = |f: &dyn Fn(&infomax_runner::store::EpochRecord) -> Option<f64>| -> Vec<Series> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Series {
                name: name(i),
                points: db.epochs_by_id(Some(*id)).iter().filter_map(|e| Some((e.epoch as f64, f(e)?, None))).collect(),
            })
            .collect()
    };
    let mut charts = Vec::new();
    charts.extend(overlay("loss per step", "step", "loss", per_step(&|s| Some(s.loss))));
    charts.extend(overlay("learning rate per step", "step", "lr", per_step(&|s| Some(s.lr))));
    charts.extend(overlay("loss per epoch", "epoch", "loss (epoch mean)", per_epoch(&|e| Some(e.loss))));
    for (term, title) in [
        ("diag.embedding_std", "per-dimension std of L2-normalised embeddings"),
        ("diag.effective_rank", "effective rank of the embeddings"),
    ] {
        charts.extend(overlay(title, "epoch", term.trim_start_matches("diag."), per_epoch(&|e| e.term(term))));
    }
    for m in [Metric::Knn200, Metric::Linear] {
        let series = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Series {
                name: name(i),
                points: db
                    .evaluations_by_id(Some(*id))
                    .iter()
                    .filter_map(|e| Some((e.epoch as f64, m.of(e)?, None)))
                    .collect(),
            })
            .collect();
        charts.extend(overlay(&format!("{} over epochs (epoch 0: random init)", m.short()), "epoch", "%", series));
    }
    let file_name = format!("compare-runs-{}.html", ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join("-"));
    Ok(RunComparison { runs, differences, metrics, charts, file_name })
}

impl RunComparison {
    /// The comparison as the terminal shows it: the runs, the fields that differ, the metrics.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for r in &self.runs {
            let _ = writeln!(out, "{} {}  {}  {}", r.name, r.hash, r.status, r.label);
        }
        let width = self.differences.iter().map(|d| d.field.len()).chain(self.metrics.iter().map(|m| m.metric.len()));
        let width = width.max().unwrap_or(0).max(6);
        let head: Vec<String> = self.runs.iter().map(|r| format!("{:>12}", r.name)).collect();
        let _ = writeln!(out, "\n{:width$}  {}", "", head.join(""));
        if self.differences.is_empty() {
            let _ = writeln!(out, "(the configurations are equal)");
        }
        for d in &self.differences {
            let values: Vec<String> = d.values.iter().map(|v| format!("{v:>12}")).collect();
            let _ = writeln!(out, "{:width$}  {}", d.field, values.join(""));
        }
        for m in &self.metrics {
            let values: Vec<String> =
                m.values.iter().map(|v| v.map_or(format!("{:>12}", "—"), |v| format!("{v:>12.2}"))).collect();
            let _ = writeln!(out, "{:width$}  {}", m.metric, values.join(""));
        }
        out
    }
}
