//! One run's page: loss, its terms and the learning rate per step (warm-up visible) and per
//! epoch, evaluations over epochs, collapse diagnostics, throughput, the resolved config, code
//! version and machine.

use infomax_runner::store::{EpochRecord, EvalRecord, StepRecord};
use serde::Serialize;

use crate::db::{Database, Metric, Run};
use crate::svg::{Chart, Series};

#[derive(Debug, Clone, Serialize)]
pub struct RunPage {
    pub id: i64,
    pub file_name: String,
    pub label: String,
    pub experiment: String,
    pub experiment_file: String,
    pub profile: String,
    pub method: String,
    pub dataset: String,
    pub seed: u64,
    pub status: String,
    pub detail: Option<String>,
    pub epochs: usize,
    pub epochs_done: usize,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub code_version: Option<String>,
    pub machine: Option<String>,
    pub config_hash: String,
    /// The resolved config, pretty-printed.
    pub config: String,
    pub train_seconds: f64,
    pub mean_images_per_second: Option<f64>,
    /// Term names (columns of the epoch table).
    pub terms: Vec<String>,
    pub epoch_rows: Vec<EpochRecord>,
    pub evaluations: Vec<EvalRecord>,
    /// Inline SVG markup.
    pub charts: Vec<String>,
}

pub fn page_file(id: i64) -> String {
    format!("run-{id}.html")
}

/// The most points a per-step chart draws: longer runs are shown as the means of equal runs of
/// consecutive steps.
const STEP_POINTS_MAX: usize = 1000;

/// `(step, value)` of each recorded step, or of buckets of consecutive steps (their mean step and
/// mean value) when there are more than [`STEP_POINTS_MAX`].
pub fn step_points(steps: &[StepRecord], f: &dyn Fn(&StepRecord) -> Option<f64>) -> Vec<(f64, f64, Option<f64>)> {
    let points: Vec<(f64, f64)> = steps.iter().filter_map(|s| Some((s.step as f64, f(s)?))).collect();
    let per = points.len().div_ceil(STEP_POINTS_MAX).max(1);
    points
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (c.iter().map(|p| p.0).sum::<f64>() / n, c.iter().map(|p| p.1).sum::<f64>() / n, None)
        })
        .collect()
}

pub fn page(db: &Database, run: &Run, id: i64, steps: &[StepRecord]) -> RunPage {
    let epochs = db.epochs_of(run);
    let evaluations = db.evaluations_of(run).to_vec();
    let mut terms: Vec<String> = epochs.iter().flat_map(|e| e.terms.iter().map(|(name, _)| name.clone())).collect();
    terms.sort();
    terms.dedup();
    let epoch_series = |name: &str, f: &dyn Fn(&EpochRecord) -> Option<f64>| Series {
        name: name.to_string(),
        points: epochs.iter().filter_map(|e| Some((e.epoch as f64, f(e)?, None))).collect(),
    };
    let chart_with = |title: &str, y: &str, series: Vec<Series>, reference: Option<(f64, String)>| {
        Chart { title: title.into(), x_label: "epoch".into(), y_label: y.into(), log_x: false, series, reference }
            .render()
    };
    let chart = |title: &str, y: &str, series: Vec<Series>| chart_with(title, y, series, None);
    let step_chart = |title: &str, y: &str, series: Vec<Series>| {
        Chart { title: title.into(), x_label: "step".into(), y_label: y.into(), log_x: false, series, reference: None }
            .render()
    };
    let step_series = |name: &str, f: &dyn Fn(&StepRecord) -> Option<f64>| Series {
        name: name.to_string(),
        points: step_points(steps, f),
    };
    // A line needs two epochs; a single epoch's numbers are in the table below the charts.
    let mut charts = Vec::new();
    let per_epoch = epochs.len() >= 2;
    let loss_terms: Vec<&String> = terms.iter().filter(|t| t.starts_with("loss.")).collect();
    let mut step_terms: Vec<&String> = steps
        .first()
        .map(|s| s.terms.iter().map(|(n, _)| n).filter(|n| n.starts_with("loss.")).collect())
        .unwrap_or_default();
    step_terms.sort();
    if steps.len() >= 2 {
        charts.extend(step_chart("loss per step", "loss", vec![step_series("loss", &|s| Some(s.loss))]));
        if !step_terms.is_empty() {
            let series =
                step_terms.iter().map(|t| step_series(t.trim_start_matches("loss."), &|s| s.term(t))).collect();
            charts.extend(step_chart("loss terms per step", "term", series));
        }
        charts.extend(step_chart("learning rate per step", "lr", vec![step_series("lr", &|s| Some(s.lr))]));
    }
    if per_epoch {
        charts.extend(chart("loss per epoch", "loss (epoch mean)", vec![epoch_series("loss", &|e| Some(e.loss))]));
    }
    if per_epoch && !loss_terms.is_empty() {
        let series = loss_terms.iter().map(|t| epoch_series(t.trim_start_matches("loss."), &|e| e.term(t))).collect();
        charts.extend(chart("loss terms per epoch", "term (epoch mean)", series));
    }
    if per_epoch && steps.len() < 2 {
        charts.extend(chart("learning rate", "lr (epoch's last step)", vec![epoch_series("lr", &|e| Some(e.lr))]));
    }
    let eval_series: Vec<Series> = [Metric::Knn200, Metric::Knn5, Metric::Linear]
        .into_iter()
        .map(|m| Series {
            name: m.short().to_string(),
            points: evaluations.iter().filter_map(|e| Some((e.epoch as f64, m.of(e)?, None))).collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    charts.extend(chart("accuracy over epochs (epoch 0: random init)", "top-1 %", eval_series));
    for (term, title) in [
        ("diag.embedding_std", "per-dimension std of L2-normalised embeddings"),
        ("diag.effective_rank", "effective rank of the embeddings"),
    ] {
        if per_epoch && terms.iter().any(|t| t == term) {
            // Embeddings spread evenly over the unit sphere have a per-dimension std of 1/√D.
            let d = run.config.embedding_dim();
            let reference =
                (term == "diag.embedding_std" && d > 0).then(|| (1.0 / (d as f64).sqrt(), "1/√D".to_string()));
            let series = vec![epoch_series(title, &|e| e.term(term))];
            charts.extend(chart_with(title, term.trim_start_matches("diag."), series, reference));
        }
    }
    // Keys sorted, as in the canonical JSON the run's identity hashes.
    let config = serde_json::to_string_pretty(&run.config.to_json()).expect("JSON values always serialise");
    let ips: Vec<f64> = epochs.iter().map(|e| e.images_per_second).collect();
    RunPage {
        id,
        file_name: page_file(id),
        label: run.label(),
        experiment: run.config.experiment.clone(),
        experiment_file: crate::experiment::experiment_file(&run.config.experiment),
        profile: run.config.profile.clone(),
        method: run.method_label.clone(),
        dataset: run.config.dataset.name().to_string(),
        seed: run.config.seed,
        status: run.status.clone(),
        detail: run.detail.clone(),
        epochs: run.config.train.epochs,
        epochs_done: epochs.len(),
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        code_version: run.code_version.clone(),
        machine: run.machine.clone(),
        config_hash: run.config_hash.clone(),
        config,
        train_seconds: db.train_seconds(run),
        mean_images_per_second: (!ips.is_empty()).then(|| ips.iter().sum::<f64>() / ips.len() as f64),
        terms,
        epoch_rows: epochs.to_vec(),
        evaluations,
        charts,
    }
}
