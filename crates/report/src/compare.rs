//! `infomax compare`: methods down, datasets across, one metric, from every finished run in the
//! database whatever its experiment — mean ± std over runs, with the profiles and experiments
//! each cell draws on, so runs of different budgets are never averaged unnoticed.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Serialize;

use crate::aggregate::{summarise, Sample, Stat};
use crate::db::{Database, Metric};
use crate::Result;

#[derive(Debug, Clone, Serialize)]
pub struct CompareCell {
    pub stat: Option<Stat>,
    /// `profile` or `experiment/profile` pairs the cell's runs come from.
    pub sources: Vec<String>,
    /// The cell mixes profiles: its runs had different budgets.
    pub mixed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub method: String,
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

/// Compare `methods` (the grid's method names, e.g. `w-mse-4`, or the loss's, e.g. `w-mse`) on
/// `datasets`; an empty list means all present. `profile` restricts to one profile.
pub fn compare(
    db: &Database,
    methods: &[String],
    datasets: &[String],
    metric: Metric,
    profile: Option<&str>,
) -> Result<Comparison> {
    let finished: Vec<_> = db
        .runs
        .iter()
        .filter(|r| r.status == "finished" && profile.is_none_or(|p| r.config.profile == p))
        .filter(|r| db.result(r, metric).is_some())
        .collect();
    let matches = |want: &String, r: &crate::db::Run| &r.method_label == want || r.config.method.name() == want;
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
    let key = |m: &str, d: &str| format!("{m}\u{1f}{d}");
    let mut samples = Vec::new();
    for m in &methods {
        for r in finished.iter().filter(|r| matches(m, r)) {
            samples.push(Sample {
                group: key(m, r.config.dataset.name()),
                value: db.result(r, metric).expect("filtered on it"),
                init: db.initial(r, metric),
            });
        }
    }
    let stats = summarise(&samples)?;
    let rows = methods
        .iter()
        .map(|m| CompareRow {
            method: m.clone(),
            cells: datasets
                .iter()
                .map(|d| {
                    let runs: Vec<_> =
                        finished.iter().filter(|r| matches(m, r) && r.config.dataset.name() == d).collect();
                    let sources: BTreeSet<String> =
                        runs.iter().map(|r| format!("{}/{}", r.config.experiment, r.config.profile)).collect();
                    let profiles: BTreeSet<&str> = runs.iter().map(|r| r.config.profile.as_str()).collect();
                    CompareCell {
                        stat: stats.get(&key(m, d)).copied(),
                        sources: sources.into_iter().collect(),
                        mixed: profiles.len() > 1,
                    }
                })
                .collect(),
        })
        .collect();
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
    /// A plain-text table for the terminal, with the sources of each cell below it.
    pub fn to_text(&self) -> String {
        let mut header = vec!["method".to_string()];
        header.extend(self.datasets.iter().cloned());
        let mut lines: Vec<Vec<String>> = vec![header];
        for r in &self.rows {
            let mut line = vec![r.method.clone()];
            line.extend(
                r.cells.iter().map(|c| format!("{}{}", format_stat(c.stat.as_ref()), if c.mixed { " *" } else { "" })),
            );
            lines.push(line);
        }
        let widths: Vec<usize> =
            (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} — mean ± std (runs){}",
            self.metric_title,
            self.profile.as_deref().map(|p| format!(", profile {p}")).unwrap_or_default()
        );
        for (i, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(j, (c, w))| if j == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            if i == 0 {
                let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            }
        }
        let mut sources: BTreeSet<&str> = BTreeSet::new();
        self.rows.iter().flat_map(|r| &r.cells).flat_map(|c| &c.sources).for_each(|s| {
            sources.insert(s);
        });
        if !sources.is_empty() {
            let _ = writeln!(out, "from experiment/profile: {}", sources.into_iter().collect::<Vec<_>>().join(", "));
        }
        if self.rows.iter().flat_map(|r| &r.cells).any(|c| c.mixed) {
            let _ = writeln!(
                out,
                "* the cell averages runs of different profiles (budgets); pass --profile to separate them"
            );
        }
        out
    }
}
