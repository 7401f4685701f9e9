//! `infomax compare`: methods down, datasets across, one metric, from every finished run in the
//! database whatever its experiment — a row per method and configuration (experiment, profile,
//! grid cell, variant), mean ± std over that configuration's seeds: runs that differ in anything
//! but the seed are never averaged.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Serialize;

use crate::aggregate::{summarise, Sample, Stat};
use crate::db::{Database, Metric, Run};
use crate::Result;

#[derive(Debug, Clone, Serialize)]
pub struct CompareCell {
    pub stat: Option<Stat>,
}

/// One method as one configuration: an experiment, profile, grid cell and variant. Runs are pooled
/// over seeds only within a row, so a row never mixes budgets or any other setting.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub method: String,
    /// `experiment/profile`, the run's other grid coordinates and its variant
    /// (`smoke/smoke · train.epochs=3`); empty for a method without a finished run.
    pub source: String,
    pub cells: Vec<CompareCell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub metric: &'static str,
    pub metric_title: &'static str,
    pub profile: Option<String>,
    pub datasets: Vec<String>,
    pub rows: Vec<CompareRow>,
}

/// Where a run's result belongs in the comparison: its experiment and profile, its grid
/// coordinates other than method and dataset, and its variant.
pub(crate) fn source(r: &Run) -> String {
    let mut parts = vec![format!("{}/{}", r.config.experiment, r.config.profile)];
    parts.extend(
        r.config.grid.iter().filter(|(k, _)| *k != "method" && *k != "dataset").map(|(k, v)| format!("{k}={v}")),
    );
    if !r.variant.is_empty() {
        parts.push(r.variant.clone());
    }
    parts.join(" · ")
}

/// Compare `methods` (the grid's method names, e.g. `w-mse-4`, or the loss's, e.g. `w-mse`) on
/// `datasets`; an empty list means all present. `profile` restricts to one profile.
pub fn compare(
    db: &Database,
    methods: &[String],
    datasets: &[String],
    metric: Metric,
    profile: Option<&str>,
) -> Result<Comparison> {
    let finished: Vec<&Run> = db
        .runs
        .iter()
        .filter(|r| r.status == "finished" && profile.is_none_or(|p| r.config.profile == p))
        .filter(|r| db.result(r, metric).is_some())
        .collect();
    let matches = |want: &String, r: &Run| &r.method_label == want || r.config.method.name() == want;
    let methods: Vec<String> = if methods.is_empty() {
        finished.iter().map(|r| r.method_label.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    } else {
        methods.to_vec()
    };
    let datasets: Vec<String> = if datasets.is_empty() {
        finished.iter().map(|r| r.config.dataset.name().to_string()).collect::<BTreeSet<_>>().into_iter().collect()
    } else {
        datasets.to_vec()
    };
    // A sample's group: the row (method and source), the dataset, and the configuration without
    // its seed, so that only seeds of one configuration are ever averaged.
    let key = |m: &str, r: &Run| {
        format!("{m}\u{1f}{}\u{1f}{}\u{1f}{}", source(r), r.config.dataset.name(), r.config.seedless_hash())
    };
    let mut samples = Vec::new();
    for m in &methods {
        for r in finished.iter().filter(|r| matches(m, r)) {
            samples.push(Sample {
                group: key(m, r),
                value: db.result(r, metric).expect("filtered on it"),
                init: db.initial(r, metric),
            });
        }
    }
    let stats = summarise(&samples)?;
    let mut rows = Vec::new();
    for m in &methods {
        let sources: BTreeSet<String> = finished.iter().filter(|r| matches(m, r)).map(|r| source(r)).collect();
        if sources.is_empty() {
            let cells = datasets.iter().map(|_| CompareCell { stat: None }).collect();
            rows.push(CompareRow { method: m.clone(), source: String::new(), cells });
        }
        for src in sources {
            let cells = datasets
                .iter()
                .map(|d| {
                    let run =
                        finished.iter().find(|r| matches(m, r) && source(r) == src && r.config.dataset.name() == d);
                    CompareCell { stat: run.and_then(|r| stats.get(&key(m, r)).copied()) }
                })
                .collect();
            rows.push(CompareRow { method: m.clone(), source: src, cells });
        }
    }
    Ok(Comparison {
        metric: metric.key(),
        metric_title: metric.title(),
        profile: profile.map(str::to_string),
        datasets,
        rows,
    })
}

/// `30.80 ± 0.41 (3)`, or `—`.
pub fn format_stat(s: Option<&Stat>) -> String {
    match s {
        None => "—".into(),
        Some(s) => match s.std {
            Some(sd) => format!("{:.2} ± {sd:.2} ({})", s.mean, s.n),
            None => format!("{:.2} ({})", s.mean, s.n),
        },
    }
}

impl Comparison {
    /// A plain-text table for the terminal.
    pub fn to_text(&self) -> String {
        let mut header = vec!["method".to_string(), "source".to_string()];
        header.extend(self.datasets.iter().cloned());
        let mut lines: Vec<Vec<String>> = vec![header];
        for r in &self.rows {
            let mut line = vec![r.method.clone(), r.source.clone()];
            line.extend(r.cells.iter().map(|c| format_stat(c.stat.as_ref())));
            lines.push(line);
        }
        let widths: Vec<usize> =
            (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} — mean ± std over seeds (n){}",
            self.metric_title,
            self.profile.as_deref().map(|p| format!(", profile {p}")).unwrap_or_default()
        );
        for (i, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(j, (c, w))| if j < 2 { format!("{c:<w$}") } else { format!("{c:>w$}") })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            if i == 0 {
                let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            }
        }
        out
    }
}
