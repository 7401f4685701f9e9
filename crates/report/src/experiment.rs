//! One experiment's page, shaped like the paper's table: the grid's first axis down, its second
//! across (further axes join the rows), one table per metric, each cell our mean ± std over
//! seeds beside the paper's number — or why there is no number. A numeric axis with three or
//! more values (projector dimension, number of positives) is also drawn as a chart.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use infomax_runner::store::{Experiment, GridAxis};

use crate::aggregate::{summarise, Sample, Stat};
use crate::db::{Database, Metric, Run};
use crate::svg::{Chart, Series};
use crate::Result;

/// How far ours is from the paper, for colour: within 1 point, within 3, or further.
pub fn closeness(diff: f64) -> &'static str {
    match diff.abs() {
        d if d <= 1.0 => "close",
        d if d <= 3.0 => "near",
        _ => "far",
    }
}

/// One cell of a metric's table.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Our result over finished runs (seeds).
    pub ours: Option<Stat>,
    pub paper: Option<f64>,
    pub source: Option<String>,
    /// Ours minus the paper's, percentage points, and its `closeness`.
    pub diff: Option<f64>,
    pub closeness: Option<&'static str>,
    /// Why there is no number ("not run: …", "pending", "diverged: …"), or what else is true of
    /// the cell's runs (one seed diverged, another still running).
    pub note: Option<String>,
    /// The stored reason in full when `note` shortens it (shown on hover).
    pub note_full: Option<String>,
    /// `excluded`, `unmeasured`, `skipped`, `pending`, `diverged`, `failed`, `partial`, `unplanned`
    /// or `ok`.
    pub state: &'static str,
    /// The cell's runs (ids of started ones), for links.
    pub run_ids: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The row's grid coordinates, and its variant when it is one.
    pub label: String,
    /// How the row's runs differ from the plan (`train.epochs=3`); empty for the cell as planned.
    pub variant: String,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricTable {
    pub metric: &'static str,
    pub title: &'static str,
    pub has_paper: bool,
    pub row_header: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// The experiment's results under one profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileSection {
    pub profile: String,
    pub about: String,
    pub counts: StatusCounts,
    /// What the section's runs were given to train (from their resolved configs, so `--set`
    /// overrides show): "1 epoch × 10,240 images, batches of 128 × 2 views, resnet18 × 0.25".
    pub budgets: Vec<String>,
    /// The sources the profile's cells follow: which cells, and the source.
    pub recipes: Vec<RecipeRow>,
    /// Where the profile's recipe departs from its source, as the file records it: which cells,
    /// the field, the source's value and ours, and why.
    pub deviations: Vec<DeviationRow>,
    pub tables: Vec<MetricTable>,
    /// Inline SVG markup, escaped by `svg`.
    pub charts: Vec<String>,
    pub runs: Vec<RunLink>,
}

/// One recipe as a page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecipeRow {
    /// As [`DeviationRow::cells`].
    pub cells: String,
    pub source: String,
}

/// The cells a `match` picks, as a page names them: `method=barlow-twins, vicreg; dataset=cifar10`,
/// or `every cell`.
fn cells_named(matches: &[(String, Vec<String>)]) -> String {
    match matches.is_empty() {
        true => "every cell".into(),
        false => matches.iter().map(|(a, vs)| format!("{a}={}", vs.join(", "))).collect::<Vec<_>>().join("; "),
    }
}

/// One deviation as a page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviationRow {
    /// `method=barlow-twins, vicreg`, or `every cell`.
    pub cells: String,
    pub field: String,
    pub source: String,
    pub ours: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunLink {
    pub id: Option<i64>,
    pub label: String,
    pub status: String,
    pub detail: Option<String>,
    pub epochs_done: usize,
    pub epochs: usize,
}

/// How many runs stand in each state.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StatusCounts {
    pub finished: usize,
    pub diverged: usize,
    pub failed: usize,
    pub running: usize,
    pub interrupted: usize,
    pub pending: usize,
    pub skipped: usize,
    pub total: usize,
}

impl StatusCounts {
    pub fn of<'a>(runs: impl IntoIterator<Item = &'a Run>) -> StatusCounts {
        let mut c = StatusCounts::default();
        for r in runs {
            c.total += 1;
            match r.status.as_str() {
                "finished" => c.finished += 1,
                "diverged" => c.diverged += 1,
                "failed" => c.failed += 1,
                "running" => c.running += 1,
                "interrupted" => c.interrupted += 1,
                "pending" => c.pending += 1,
                "skipped" => c.skipped += 1,
                _ => {}
            }
        }
        c
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentPage {
    pub name: String,
    pub file_name: String,
    pub title: String,
    pub paper: String,
    pub reproduces: String,
    pub counts: StatusCounts,
    pub profiles: Vec<String>,
    /// Seconds of training recorded over all the experiment's runs.
    pub train_seconds: f64,
    pub sections: Vec<ProfileSection>,
}

/// A run's training budget in words, from its resolved config.
pub fn budget(run: &Run) -> String {
    let (train, encoder) = (&run.config.train, &run.config.encoder);
    let (epochs, batch, views) = (train.epochs, train.batch_size, train.views);
    let images = match train.train_images {
        0 => "all training images".to_string(),
        n => format!("{} images", thousands(n)),
    };
    format!(
        "{epochs} epoch{} × {images}, batches of {batch} × {views} views, {} × {}",
        if epochs == 1 { "" } else { "s" },
        encoder.arch,
        encoder.width
    )
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A name safe as a file name (experiment names are user strings).
pub fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The page of an experiment, beside `index.html`.
pub fn experiment_file(name: &str) -> String {
    format!("experiment-{}.html", slug(name))
}

/// Every combination of the given axes' values, first axis outermost.
fn combinations(axes: &[&GridAxis]) -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(axis.name.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    out
}

/// The group a run's result is pooled in: its experiment, profile, grid cell and variant, so that
/// only runs whose configurations differ in nothing but the seed share a mean ± std.
fn cell_key(experiment: &str, profile: &str, cell: &BTreeMap<String, String>, variant: &str, metric: Metric) -> String {
    format!(
        "{experiment}\u{1f}{profile}\u{1f}{}\u{1f}{variant}\u{1f}{}",
        serde_json::to_string(cell).unwrap_or_default(),
        metric.key()
    )
}

/// The number in an axis value's name (`4096`, `d4` → 4), if it has one.
fn number_in(value: &str) -> Option<f64> {
    let digits: String =
        value.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    digits.parse().ok()
}

/// Why a cell has no result, from its runs (latest row each) and the exclusions.
fn missing_reason(
    db: &Database,
    experiment: &Experiment,
    profile: &str,
    cell: &BTreeMap<String, String>,
    runs: &[&Run],
) -> (&'static str, String) {
    if let Some(x) = experiment.excluding(profile, cell) {
        return ("excluded", format!("not run: {}", x.why));
    }
    let first = |status: &str| runs.iter().find(|r| r.status == status);
    if first("finished").is_some() {
        return ("unmeasured", "finished without this evaluation".into());
    }
    if let Some(r) = first("skipped") {
        return ("skipped", format!("not run: {}", r.detail.as_deref().unwrap_or("skipped")));
    }
    if let Some(r) = first("diverged") {
        return ("diverged", format!("diverged: {}", r.detail.as_deref().unwrap_or("loss not finite")));
    }
    if let Some(r) = first("failed") {
        return ("failed", format!("failed: {}", r.detail.as_deref().unwrap_or("no reason recorded")));
    }
    if let Some(r) = runs.iter().find(|r| r.status == "running" || r.status == "interrupted") {
        let epochs = r.config.train.epochs;
        return ("partial", format!("{}: {} of {epochs} epochs so far", r.status, db.epochs_of(r).len()));
    }
    if first("pending").is_some() {
        return ("pending", "pending: planned, not started".into());
    }
    ("unplanned", "not run: not planned under this profile".into())
}

/// Every experiment's page model.
pub fn pages(db: &Database) -> Result<Vec<ExperimentPage>> {
    // One sample per finished run and metric, grouped by (experiment, profile, cell, variant, metric).
    let mut samples = Vec::new();
    for r in db.runs.iter().filter(|r| r.status == "finished") {
        for m in Metric::ALL {
            if let Some(value) = db.result(r, m) {
                samples.push(Sample {
                    group: cell_key(&r.config.experiment, &r.config.profile, &r.config.grid, &r.variant, m),
                    value,
                    init: db.initial(r, m),
                });
            }
        }
    }
    let stats = summarise(&samples)?;
    db.experiments.iter().map(|e| page(db, e, &stats)).collect()
}

fn page(db: &Database, e: &Experiment, stats: &HashMap<String, Stat>) -> Result<ExperimentPage> {
    let runs: Vec<&Run> = db.runs.iter().filter(|r| r.config.experiment == e.name).collect();
    let mut profiles: Vec<String> = e.profiles.iter().map(|(p, _)| p.clone()).collect();
    for r in &runs {
        if !profiles.contains(&r.config.profile) {
            profiles.push(r.config.profile.clone());
        }
    }
    profiles.retain(|p| runs.iter().any(|r| &r.config.profile == p));
    let column_axis = e.axes.get(1);
    let row_axes: Vec<&GridAxis> = e.axes.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, a)| a).collect();
    let row_cells = combinations(&row_axes);
    let columns: Vec<Option<&String>> = match column_axis {
        Some(a) => a.values.iter().map(Some).collect(),
        None => vec![None],
    };
    let reference_metrics: Vec<Metric> =
        Metric::ALL.into_iter().filter(|m| e.references.iter().any(|r| r.metric == m.key())).collect();
    let mut sections = Vec::new();
    for profile in &profiles {
        let about = e.profiles.iter().find(|(p, _)| p == profile).map(|(_, a)| a.clone()).unwrap_or_default();
        let profile_runs: Vec<&Run> = runs.iter().copied().filter(|r| &r.config.profile == profile).collect();
        // Metrics with a number in some cell, the papers' first (the table's own), top-5 only if
        // the paper gives it.
        let measured = |m: Metric| {
            profile_runs.iter().any(|r| stats.contains_key(&cell_key(&e.name, profile, &r.config.grid, &r.variant, m)))
                || reference_metrics.contains(&m)
        };
        let mut metrics: Vec<Metric> = reference_metrics.clone();
        for m in [Metric::Linear, Metric::Knn5, Metric::Knn200] {
            if !metrics.contains(&m) && measured(m) {
                metrics.push(m);
            }
        }
        if metrics.is_empty() {
            metrics = vec![Metric::Knn200];
        }
        let mut tables = Vec::new();
        for &m in &metrics {
            let mut rows = Vec::new();
            for rc in &row_cells {
                // The cell as planned first, then each variant its runs were trained as.
                let mut variants: Vec<&str> = vec![""];
                for r in profile_runs.iter().filter(|r| rc.iter().all(|(k, v)| r.config.grid.get(k) == Some(v))) {
                    if !variants.contains(&r.variant.as_str()) {
                        variants.push(&r.variant);
                    }
                }
                let cell_at = |col: &Option<&String>| {
                    let mut cell = rc.clone();
                    if let (Some(axis), Some(v)) = (column_axis, col) {
                        cell.insert(axis.name.clone(), (*v).clone());
                    }
                    cell
                };
                // A row this profile leaves out whole (a length another profile trains) and no
                // run stands in is not shown.
                if variants.len() == 1 && columns.iter().all(|col| e.excluding(profile, &cell_at(col)).is_some()) {
                    continue;
                }
                for variant in variants {
                    let cells = columns
                        .iter()
                        .map(|col| table_cell(db, e, profile, &profile_runs, &cell_at(col), variant, m, stats))
                        .collect();
                    let label =
                        row_axes.iter().filter_map(|a| rc.get(&a.name).cloned()).collect::<Vec<_>>().join(" · ");
                    let label = if label.is_empty() { e.name.clone() } else { label };
                    let label = if variant.is_empty() { label } else { format!("{label} · {variant}") };
                    rows.push(Row { label, variant: variant.to_string(), cells });
                }
            }
            tables.push(MetricTable {
                metric: m.key(),
                title: m.title(),
                has_paper: reference_metrics.contains(&m),
                row_header: row_axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(" · "),
                columns: columns.iter().map(|c| c.cloned().unwrap_or_else(|| "ours".into())).collect(),
                rows,
            });
        }
        let charts = charts(e, profile, &metrics, stats);
        let links = profile_runs
            .iter()
            .map(|r| RunLink {
                id: r.id,
                label: r.label(),
                status: r.status.clone(),
                detail: r.detail.clone(),
                epochs_done: db.epochs_of(r).len(),
                epochs: r.config.train.epochs,
            })
            .collect();
        let mut budgets: Vec<String> = profile_runs.iter().map(|r| budget(r)).collect();
        budgets.sort();
        budgets.dedup();
        let deviations = e
            .deviations
            .iter()
            .filter(|(p, _)| p == profile)
            .map(|(_, d)| DeviationRow {
                cells: cells_named(&d.matches),
                field: d.field.clone(),
                source: d.source.clone(),
                ours: d.ours.clone(),
                why: d.why.clone(),
            })
            .collect();
        let recipes = e
            .recipes
            .iter()
            .filter(|(p, _)| p == profile)
            .map(|(_, r)| RecipeRow { cells: cells_named(&r.matches), source: r.source.clone() })
            .collect();
        sections.push(ProfileSection {
            profile: profile.clone(),
            about,
            recipes,
            deviations,
            counts: StatusCounts::of(profile_runs.iter().copied()),
            budgets,
            tables,
            charts,
            runs: links,
        });
    }
    Ok(ExperimentPage {
        name: e.name.clone(),
        file_name: experiment_file(&e.name),
        title: e.title.clone(),
        paper: e.paper.clone(),
        reproduces: e.reproduces.clone(),
        counts: StatusCounts::of(runs.iter().copied()),
        profiles,
        train_seconds: runs.iter().map(|r| db.train_seconds(r)).sum(),
        sections,
    })
}

/// One table cell: the runs of `cell` trained as `variant` (empty: as planned), their mean over
/// seeds and the paper's number, or why there is none.
#[allow(clippy::too_many_arguments)]
fn table_cell(
    db: &Database,
    e: &Experiment,
    profile: &str,
    profile_runs: &[&Run],
    cell: &BTreeMap<String, String>,
    variant: &str,
    m: Metric,
    stats: &HashMap<String, Stat>,
) -> Cell {
    let cell_runs: Vec<&Run> =
        profile_runs.iter().copied().filter(|r| &r.config.grid == cell && r.variant == variant).collect();
    let reference = e.references.iter().find(|r| r.metric == m.key() && r.applies(cell));
    let ours = stats.get(&cell_key(&e.name, profile, cell, variant, m)).copied();
    let diff = ours.zip(reference).map(|(o, r)| o.mean - r.value);
    let others = StatusCounts::of(cell_runs.iter().copied().filter(|r| r.status != "finished"));
    let (state, note) = match ours {
        Some(_) if others.total == 0 => ("ok", None),
        Some(_) => ("ok", Some(describe_others(&others))),
        None if !variant.is_empty() && cell_runs.is_empty() => {
            ("unplanned", "no run of this variant".to_string().into())
        }
        None => {
            let (s, n) = missing_reason(db, e, profile, cell, &cell_runs);
            (s, Some(n))
        }
    };
    let (note, note_full) = match note {
        Some(n) if state == "skipped" => (Some(shorten(&n)), Some(n)),
        n => (n, None),
    };
    Cell {
        note_full,
        ours,
        paper: reference.map(|r| r.value),
        source: reference.map(|r| r.source.clone()),
        diff,
        closeness: diff.map(closeness),
        note,
        state,
        run_ids: cell_runs.iter().filter_map(|r| r.id).collect(),
    }
}

/// A skip reason in a few words: its first clause and the command that mends it, e.g. "not run:
/// dataset not found (infomax datasets fetch stl10)" — a table of 18 skipped cells stays legible.
fn shorten(note: &str) -> String {
    let mut clauses = note.splitn(3, ": ");
    let head = [clauses.next(), clauses.next()].into_iter().flatten().collect::<Vec<_>>().join(": ");
    let command = note.split('`').nth(1).map(|c| format!(" ({c})")).unwrap_or_default();
    if head == note {
        note.to_string()
    } else {
        format!("{head}{command}")
    }
}

fn describe_others(c: &StatusCounts) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (c.diverged, "diverged"),
        (c.failed, "failed"),
        (c.running, "running"),
        (c.interrupted, "interrupted"),
        (c.pending, "pending"),
        (c.skipped, "skipped"),
    ] {
        if n > 0 {
            parts.push(format!("{n} more seed{} {what}", if n == 1 { "" } else { "s" }));
        }
    }
    parts.join(", ")
}

/// One chart per metric for each numeric axis with three or more values: x the axis, a line per
/// combination of the other axes.
fn charts(e: &Experiment, profile: &str, metrics: &[Metric], stats: &HashMap<String, Stat>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, axis) in e.axes.iter().enumerate() {
        let xs: Vec<Option<f64>> = axis.values.iter().map(|v| number_in(v)).collect();
        if axis.values.len() < 3 || xs.iter().any(Option::is_none) {
            continue;
        }
        let others: Vec<&GridAxis> = e.axes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a).collect();
        let (lo, hi) = xs.iter().flatten().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        for &m in metrics {
            let series: Vec<Series> = combinations(&others)
                .into_iter()
                .map(|base| {
                    let points = axis
                        .values
                        .iter()
                        .zip(&xs)
                        .filter_map(|(v, x)| {
                            let mut cell = base.clone();
                            cell.insert(axis.name.clone(), v.clone());
                            let s = stats.get(&cell_key(&e.name, profile, &cell, "", m))?;
                            Some(((*x)?, s.mean, s.std))
                        })
                        .collect();
                    let name = others.iter().filter_map(|a| base.get(&a.name).cloned()).collect::<Vec<_>>().join(" · ");
                    Series { name: if name.is_empty() { e.name.clone() } else { name }, points }
                })
                .collect();
            let chart = Chart {
                title: format!("{} against {}", m.short(), axis.name),
                x_label: axis.name.clone(),
                y_label: m.title().to_string(),
                log_x: lo > 0.0 && hi / lo >= 8.0,
                series,
                reference: None,
            };
            out.extend(chart.render());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use infomax_runner::config::{Dataset, RunConfig};
    use infomax_runner::store::EvalRecord;

    fn run(id: i64, method: &str, dim: &str, seed: i64) -> Run {
        let mut config = RunConfig::defaults(method.parse().unwrap(), Dataset::Cifar10);
        config.experiment = "sweep".into();
        config.profile = "smoke".into();
        config.seed = seed as u64;
        config.train.epochs = 1;
        config.grid = [("method".to_string(), method.to_string()), ("dim".to_string(), dim.to_string())].into();
        Run {
            id: Some(id),
            config,
            method_label: method.into(),
            config_hash: format!("h{id}"),
            variant: String::new(),
            status: "finished".into(),
            detail: None,
            started_at: None,
            finished_at: None,
            code_version: None,
            machine: None,
        }
    }

    fn knn200(epoch: usize, top1: f64) -> EvalRecord {
        EvalRecord {
            epoch,
            protocol: "knn-cosine".into(),
            k: Some(200),
            top1,
            top5: 90.0,
            bank_size: 10,
            test_size: 10,
        }
    }

    /// A numeric axis with three values becomes a chart: a line per method, a point per
    /// dimension at the mean over seeds, ticks at the dimensions on a log scale.
    #[test]
    fn numeric_axis_is_charted() {
        let mut db = Database::default();
        db.experiments.push(Experiment {
            name: "sweep".into(),
            title: "t".into(),
            paper: "p".into(),
            reproduces: "r".into(),
            axes: vec![
                GridAxis { name: "method".into(), values: vec!["barlow-twins".into(), "simclr".into()] },
                GridAxis { name: "dim".into(), values: vec!["64".into(), "256".into(), "1024".into()] },
            ],
            exclusions: vec![],
            profiles: vec![("smoke".into(), "about".into())],
            recipes: vec![],
            deviations: vec![],
            references: vec![],
        });
        let cells = [("barlow-twins", "64", 30.0), ("barlow-twins", "256", 32.0), ("barlow-twins", "1024", 35.0)];
        for (i, (m, d, v)) in cells.iter().enumerate() {
            for seed in 0..2 {
                let id = (i * 2 + seed) as i64 + 1;
                db.runs.push(run(id, m, d, seed as i64));
                db.evaluations.insert(id, vec![knn200(0, 20.0), knn200(1, v + seed as f64)]);
            }
        }
        db.runs.push(run(99, "simclr", "256", 0));
        db.evaluations.insert(99, vec![knn200(1, 31.0)]);
        let pages = pages(&db).unwrap();
        let s = &pages[0].sections[0];
        assert_eq!(s.tables[0].columns, vec!["64", "256", "1024"], "the second axis across");
        assert_eq!(s.tables[0].rows[0].cells[2].ours.unwrap().mean, 35.5);
        assert_eq!(s.charts.len(), 1, "one metric measured, one numeric axis");
        let svg = &s.charts[0];
        assert_eq!(svg.matches("<polyline").count(), 2, "a line per method");
        assert_eq!(svg.matches("<circle").count(), 4, "3 Barlow Twins dimensions + 1 SimCLR");
        assert!(svg.contains(">1024<") && svg.contains("200-NN against dim"));
        assert!(svg.contains("barlow-twins: 1024 → 35.5"), "the point is the mean over seeds");
    }

    #[test]
    fn skip_reasons_are_shortened_to_their_first_clause_and_command() {
        let full =
            "not run: dataset not found: stl10_binary is not under /d; get it with `infomax datasets fetch stl10`";
        assert_eq!(shorten(full), "not run: dataset not found (infomax datasets fetch stl10)");
        assert_eq!(shorten("not run: skipped"), "not run: skipped");
    }

    #[test]
    fn numbers_in_axis_values() {
        assert_eq!(number_in("4096"), Some(4096.0));
        assert_eq!(number_in("d4"), Some(4.0));
        assert_eq!(number_in("shared"), None);
        assert_eq!(thousands(10240), "10,240");
        assert_eq!(thousands(256), "256");
    }
}
