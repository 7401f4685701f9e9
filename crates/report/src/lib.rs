//! HTML reports rendered from the results database alone (a database made on another machine
//! renders the same). Templates are tera with autoescaping on; pages are self-contained: no
//! scripts, fonts or styles from the network.

pub mod aggregate;
pub mod compare;
pub mod compare_runs;
pub mod db;
pub mod experiment;
pub mod export;
pub mod findings;
pub mod markdown;
pub mod run;
pub mod svg;

use std::path::{Path, PathBuf};

use infomax_runner::human::human_duration;
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// Reading the results database (a missing file, another schema version, a configuration
    /// that does not parse): the store's error, which names the file.
    #[error(transparent)]
    Store(#[from] infomax_runner::Error),
    #[error("template {name}: {source}")]
    Template { name: &'static str, source: tera::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("export of {path}: {what}")]
    Export { path: PathBuf, what: String },
    #[error("aggregation: {0}")]
    Aggregate(String),
    /// A document whose generated block cannot be found (`report --markdown --into FILE`).
    #[error("{path}: {what}")]
    Markdown { path: PathBuf, what: String },
    #[error("{db}: no run with id {id}; `infomax status` lists them")]
    NoRun { id: i64, db: PathBuf },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One row of the index: a run (every attempt) and its headline numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IndexRow {
    pub id: i64,
    pub experiment: String,
    pub profile: String,
    /// The grid's name for the method (`w-mse-4`) when the grid has a method axis.
    pub method: String,
    pub dataset: String,
    pub seed: u64,
    /// How the run differs from its cell's plan (`train.epochs=3`); empty when it is the plan.
    pub variant: String,
    pub status: String,
    pub status_detail: Option<String>,
    pub epochs_planned: usize,
    pub epochs_done: usize,
    /// 200-NN (cosine) top-1 of the randomly initialised encoder, percent.
    pub knn200_init: Option<f64>,
    /// 200-NN top-1 at the last evaluated epoch after training, percent.
    pub knn200_trained: Option<f64>,
    /// Trained minus init, percentage points.
    pub knn200_gain: Option<f64>,
    pub knn5_init: Option<f64>,
    pub knn5_trained: Option<f64>,
    /// Linear probe top-1 (W-MSE protocol) with the random encoder and after training.
    pub linear_init: Option<f64>,
    pub linear_trained: Option<f64>,
    pub bank_size: Option<usize>,
    pub test_size: Option<usize>,
    /// Seconds spent in training epochs.
    pub train_seconds: f64,
    /// Seconds from start to end of the run (training and every evaluation); none while running.
    pub total_seconds: Option<f64>,
    pub images_per_second: Option<f64>,
    pub started_at: String,
    pub code_version: String,
    pub machine: String,
}

/// Every run (every row of `runs`) with its headline numbers, newest first.
pub fn index_rows(db: &db::Database) -> Vec<IndexRow> {
    use db::Metric;
    db.records
        .iter()
        .rev()
        .map(|r| {
            let id = Some(r.id);
            let epochs = db.epochs_by_id(id);
            let evaluations = db.evaluations_by_id(id);
            let trained = |m| db.latest_by_id(id, m).map(|(_, v)| v);
            let knn200 = (db.initial_by_id(id, Metric::Knn200), trained(Metric::Knn200));
            let config = &r.config;
            IndexRow {
                id: r.id,
                experiment: config.experiment.clone(),
                profile: config.profile.clone(),
                method: db::method_label(config),
                dataset: config.dataset.name().to_string(),
                seed: config.seed,
                variant: db
                    .runs
                    .iter()
                    .find(|x| x.config_hash == r.config_hash)
                    .map_or_else(String::new, |x| x.variant.clone()),
                status: r.status.as_str().to_string(),
                status_detail: r.detail.clone(),
                epochs_planned: config.train.epochs,
                epochs_done: epochs.iter().map(|e| e.epoch).max().unwrap_or(0),
                knn200_init: knn200.0,
                knn200_trained: knn200.1,
                knn200_gain: knn200.1.zip(knn200.0).map(|(t, i)| t - i),
                knn5_init: db.initial_by_id(id, Metric::Knn5),
                knn5_trained: trained(Metric::Knn5),
                linear_init: db.initial_by_id(id, Metric::Linear),
                linear_trained: trained(Metric::Linear),
                bank_size: evaluations.last().map(|e| e.bank_size),
                test_size: evaluations.last().map(|e| e.test_size),
                train_seconds: epochs.iter().map(|e| e.wall_seconds).sum(),
                total_seconds: r.elapsed_seconds,
                images_per_second: (!epochs.is_empty())
                    .then(|| epochs.iter().map(|e| e.images_per_second).sum::<f64>() / epochs.len() as f64),
                started_at: r.started_at.clone(),
                code_version: r.code_version.clone(),
                machine: r.machine.clone(),
            }
        })
        .collect()
}

fn number(v: &tera::Value, filter: &str) -> tera::Result<f64> {
    v.as_f64().ok_or_else(|| tera::Error::msg(format!("{filter}: a number expected, got {v}")))
}

/// `{{ x | fmt2 }}`: two decimals.
fn fmt2(v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(format!("{:.2}", number(v, "fmt2")?)))
}

/// `{{ x | fmt1 }}`: one decimal.
fn fmt1(v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(format!("{:.1}", number(v, "fmt1")?)))
}

fn duration(v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(human_duration(number(v, "duration")?)))
}

/// `{{ x | signed2 }}`: two decimals with a sign.
fn signed2(v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(format!("{:+.2}", number(v, "signed2")?)))
}

/// `{{ x | general }}`: a number as short as it reads (loss terms and learning rates span
/// many magnitudes).
fn general(v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    let x = number(v, "general")?;
    let s = if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e5) { format!("{x:.3e}") } else { format!("{x:.4}") };
    Ok(tera::Value::String(s))
}

const TEMPLATES: [(&str, &str); 6] = [
    ("style.html", include_str!("../templates/style.html")),
    ("index.html", include_str!("../templates/index.html")),
    ("experiment.html", include_str!("../templates/experiment.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("compare.html", include_str!("../templates/compare.html")),
    ("compare_runs.html", include_str!("../templates/compare_runs.html")),
];

/// A tera instance with infomax's templates and filters.
fn templates() -> Result<tera::Tera> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![".html"]);
    tera.register_filter("fmt2", fmt2);
    tera.register_filter("fmt1", fmt1);
    tera.register_filter("signed2", signed2);
    tera.register_filter("general", general);
    tera.register_filter("duration", duration);
    tera.add_raw_templates(TEMPLATES).map_err(|source| Error::Template { name: "templates", source })?;
    Ok(tera)
}

fn render_page(tera: &tera::Tera, name: &'static str, ctx: &tera::Context, out: &Path) -> Result<PathBuf> {
    let html = tera.render(name, ctx).map_err(|source| Error::Template { name, source })?;
    write_atomically(out, html.as_bytes())
}

fn base_context(db: &Path) -> tera::Context {
    let mut ctx = tera::Context::new();
    ctx.insert("database", &db.display().to_string());
    ctx.insert("version", env!("CARGO_PKG_VERSION"));
    ctx
}

/// What `render` wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    pub index: PathBuf,
    pub experiments: Vec<PathBuf>,
    pub runs: Vec<PathBuf>,
    /// Every method across datasets on 200-NN (`infomax compare` writes other metrics here).
    pub compare: PathBuf,
}

/// Render the whole report from the database at `db` into `out_dir`: `index.html` (experiments
/// with their status and compute, the findings of docs/methods.md#findings, every run), one page per experiment and
/// one per started run. Every page is written atomically.
pub fn render(db: &Path, out_dir: &Path) -> Result<Rendered> {
    render_pages(db, out_dir, None)
}

/// Render the report again while run `changed` trains: every page but the other runs' pages that
/// exist already (their runs did not change), so a sweep's re-render stays quick however many
/// steps its finished runs recorded.
pub fn render_while_training(db: &Path, out_dir: &Path, changed: i64) -> Result<Rendered> {
    render_pages(db, out_dir, Some(changed))
}

fn render_pages(db: &Path, out_dir: &Path, changed: Option<i64>) -> Result<Rendered> {
    let data = db::Database::load(db)?;
    let runs = index_rows(&data);
    let tera = templates()?;
    let experiments = experiment::pages(&data)?;
    let findings = findings::evaluate(&data);
    let mut rendered = Rendered::default();
    for page in &experiments {
        let mut ctx = base_context(db);
        ctx.insert("e", page);
        rendered.experiments.push(render_page(&tera, "experiment.html", &ctx, &out_dir.join(&page.file_name))?);
    }
    for r in &data.runs {
        let Some(id) = r.id else { continue };
        let existing = out_dir.join(run::page_file(id));
        if changed.is_some_and(|c| c != id) && existing.is_file() {
            rendered.runs.push(existing);
            continue;
        }
        let page = run::page(&data, r, id, &data.steps_of(id)?);
        let mut ctx = base_context(db);
        ctx.insert("r", &page);
        rendered.runs.push(render_page(&tera, "run.html", &ctx, &out_dir.join(&page.file_name))?);
    }
    let comparison = compare::compare(&data, &[], &[], db::Metric::Knn200, None)?;
    rendered.compare = render_compare(db, &comparison, &out_dir.join("compare.html"))?;
    let mut ctx = base_context(db);
    ctx.insert("runs", &runs);
    ctx.insert("experiments", &experiments);
    ctx.insert("findings", &findings);
    ctx.insert("total_train_seconds", &experiments.iter().map(|e| e.train_seconds).sum::<f64>());
    rendered.index = render_page(&tera, "index.html", &ctx, &out_dir.join("index.html"))?;
    Ok(rendered)
}

/// Render a comparison as `out` (an HTML page beside the index).
pub fn render_compare(db: &Path, comparison: &compare::Comparison, out: &Path) -> Result<PathBuf> {
    let tera = templates()?;
    let mut ctx = base_context(db);
    ctx.insert("c", comparison);
    render_page(&tera, "compare.html", &ctx, out)
}

/// Render a comparison of chosen runs into `out_dir` (beside the index, whose run pages it links).
pub fn render_compare_runs(db: &Path, comparison: &compare_runs::RunComparison, out_dir: &Path) -> Result<PathBuf> {
    let tera = templates()?;
    let mut ctx = base_context(db);
    ctx.insert("c", comparison);
    render_page(&tera, "compare_runs.html", &ctx, &out_dir.join(&comparison.file_name))
}

/// Write `bytes` to `path` through a file of this process's own beside it and a rename, so a
/// reader sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A name of this process's own: processes sharing a database render into one folder.
    let ext = path.extension().map_or_else(String::new, |e| format!("{}.", e.to_string_lossy()));
    let tmp = path.with_extension(format!("{ext}tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use infomax_runner::config::{Dataset, Method, RunConfig};
    use infomax_runner::experiment::ExperimentFile;
    use infomax_runner::plan::PlannedRun;
    use infomax_runner::store::{EpochRecord, EvalRecord, RunStatus, Store};
    use rusqlite::Connection;

    /// The `mini` experiment: method × dataset, BYOL on STL-10 excluded, the paper's numbers for
    /// SimCLR.
    const MINI: &str = r#"
[experiment]
name = "mini"
title = "A mini table"
paper = "Someone, 2021"
reproduces = "Table 1"

[base]

[grid.method]
simclr = { method = "simclr" }
byol = { method = "byol" }
w-mse-2 = { method = "w-mse" }
w-mse-4 = { method = "w-mse", train = { views = 4 } }

[grid]
dataset = ["cifar10", "stl10"]

[[exclude]]
match = { method = "byol", dataset = "stl10" }
why = "the <paper> leaves it empty"

[profiles.smoke]
about = "Smoke: two epochs, not a reproduction."
train = { epochs = 2 }

[[profiles.smoke.exclude]]
match = { method = "w-mse-4" }
why = "four views are the paper profile's"

[[profiles.smoke.recipe]]
match = { method = "w-mse-2" }
source = "the <code> at 123abc, README.md"

[[profiles.smoke.deviation]]
match = { method = "w-mse-2" }
field = "train.epochs"
source = "1,000 epochs (the <code>'s README)"
ours = "2"
why = "a smoke run"

[profiles.paper]
about = "The paper's protocol."

[[reference]]
at = { method = "simclr", dataset = "cifar10" }
linear = 91.8
knn5 = 88.42
source = "Table 1"

[[reference]]
at = { method = "simclr", dataset = "stl10" }
linear = 90.51
source = "Table 1"
"#;

    /// A run of `mini` under `smoke`: the cell (`method` as the grid names it), seed, two epochs.
    fn mini(method: Method, grid_method: &str, dataset: Dataset, seed: u64) -> RunConfig {
        let mut s = RunConfig::defaults(method, dataset);
        s.experiment = "mini".into();
        s.profile = "smoke".into();
        s.grid =
            [("dataset".to_string(), dataset.name().to_string()), ("method".to_string(), grid_method.into())].into();
        s.seed = seed;
        s.train.epochs = 2;
        s
    }

    /// A database written by the runner's store: a small paper table (`mini`) whose cells are
    /// finished over two seeds, diverged, skipped, still running and pending; and a run of an
    /// unrecorded experiment whose name is markup. Times are pinned; run 1 has no end time.
    pub(crate) fn fixture(dir: &Path) -> PathBuf {
        let path = dir.join("r.sqlite");
        let store = Store::open(&path).unwrap();
        let mut simclr = mini(Method::Simclr, "simclr", Dataset::Cifar10, 0);
        simclr.projector.widths = vec![64, 16];
        let mut markup = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        (markup.experiment, markup.profile, markup.seed, markup.train.epochs) =
            ("<script>x</script>".into(), "cpu".into(), 1, 5);
        let start = |config: &RunConfig| store.start_run(config, "v", "m").unwrap();
        let (finished, diverged) = (RunStatus::Finished, RunStatus::Diverged);
        store.finish_run(start(&simclr), finished, None).unwrap();
        store.finish_run(start(&markup), diverged, Some("loss not finite at epoch 1, step 3")).unwrap();
        store.finish_run(start(&RunConfig { seed: 1, ..simclr.clone() }), finished, None).unwrap();
        let wmse = mini(Method::WMse, "w-mse-2", Dataset::Cifar10, 0);
        store.finish_run(start(&wmse), diverged, Some("loss is NaN at epoch 1, step 7")).unwrap();
        let why = "dataset not found: stl10_binary is not under /data; get it with `infomax datasets fetch stl10`";
        store.skip_run(&mini(Method::Simclr, "simclr", Dataset::Stl10, 0), why, "v", "m").unwrap();
        assert_eq!(start(&mini(Method::Byol, "byol", Dataset::Cifar10, 0)), 6);
        store
            .connection()
            .execute_batch(
                "UPDATE runs SET started_at = '2026-01-01T00:00:00Z',
                                 finished_at = CASE id WHEN 3 THEN '2026-01-01T00:01:00Z' END",
            )
            .unwrap();

        let file = ExperimentFile::parse(Path::new("mini.toml"), MINI).unwrap();
        let planned = |config: RunConfig| PlannedRun {
            coords: vec![
                ("method".into(), config.grid["method"].clone()),
                ("dataset".into(), config.dataset.name().into()),
                ("seed".into(), config.seed.to_string()),
            ],
            config,
            recipe: None,
        };
        let plan = [planned(mini(Method::WMse, "w-mse-2", Dataset::Stl10, 0)), planned(simclr)];
        store.record_experiment(&file, &plan).unwrap();

        let epoch = |epoch, loss, ips, wall, terms: &[(&str, f64)]| EpochRecord {
            epoch,
            loss,
            lr: 0.1,
            images_per_second: ips,
            wall_seconds: wall,
            terms: terms.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        };
        let terms = [("diag.embedding_std", 0.2), ("diag.effective_rank", 9.0), ("loss.nt_xent", 2.0)];
        store.record_epoch(1, &epoch(1, 3.0, 50.0, 10.0, &[])).unwrap();
        store.record_epoch(1, &epoch(2, 2.0, 70.0, 12.0, &terms)).unwrap();
        store.record_epoch(3, &epoch(1, 3.1, 50.0, 10.0, &[])).unwrap();
        let collapsed = [("diag.embedding_std", 0.01), ("diag.effective_rank", 1.2)];
        store.record_epoch(3, &epoch(2, 2.1, 70.0, 12.0, &collapsed)).unwrap();
        store.record_epoch(6, &epoch(1, 4.0, 40.0, 11.0, &[])).unwrap();
        for (run, epoch, protocol, k, top1, top5) in [
            (1, 0, "knn-cosine", Some(200), 28.5, 70.0),
            (1, 2, "knn-cosine", Some(200), 36.25, 80.0),
            (1, 0, "knn-euclidean", Some(5), 25.0, 60.0),
            (1, 2, "linear", None, 40.0, 85.0),
            (3, 0, "knn-cosine", Some(200), 27.5, 70.0),
            (3, 2, "knn-cosine", Some(200), 38.25, 80.0),
            (3, 2, "linear", None, 42.0, 86.0),
        ] {
            let e = EvalRecord { epoch, protocol: protocol.into(), k, top1, top5, bank_size: 1000, test_size: 200 };
            store.record_eval(run, &e).unwrap();
        }
        path
    }

    /// A run of a planned cell trained with `--set train.epochs=3` is a variant: the table, the
    /// comparison and the run's label keep it apart from the cell's seeds as planned.
    #[test]
    fn runs_that_differ_beyond_the_seed_are_never_pooled() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(dir.path());
        let store = Store::open(&path).unwrap();
        let mut longer = mini(Method::Simclr, "simclr", Dataset::Cifar10, 0);
        (longer.projector.widths, longer.train.epochs) = (vec![64, 16], 3);
        let id = store.start_run(&longer, "v", "m").unwrap();
        store.finish_run(id, RunStatus::Finished, None).unwrap();
        let e = EvalRecord {
            epoch: 3,
            protocol: "linear".into(),
            k: None,
            top1: 60.0,
            top5: 90.0,
            bank_size: 1000,
            test_size: 200,
        };
        store.record_eval(id, &e).unwrap();
        drop(store);
        let db = db::Database::load(&path).unwrap();
        let page = experiment::pages(&db).unwrap().into_iter().find(|p| p.name == "mini").unwrap();
        let linear = &page.sections[0].tables[0];
        let planned = linear.rows.iter().find(|r| r.label == "simclr").unwrap();
        let variant = linear.rows.iter().find(|r| r.variant == "train.epochs=3").unwrap();
        assert_eq!(variant.label, "simclr · train.epochs=3");
        let (a, b) = (planned.cells[0].ours.unwrap(), variant.cells[0].ours.unwrap());
        assert_eq!((a.mean, a.n, b.mean, b.n), (41.0, 2, 60.0, 1), "seeds pooled, the variant apart");
        assert_eq!(variant.cells[1].note.as_deref(), Some("no run of this variant"));
        let c = compare::compare(&db, &["simclr".into()], &[], db::Metric::Linear, None).unwrap();
        let sources: Vec<(&str, usize)> =
            c.rows.iter().map(|r| (r.source.as_str(), r.cells[0].stat.map_or(0, |s| s.n))).collect();
        assert_eq!(sources, [("mini/smoke", 2), ("mini/smoke · train.epochs=3", 1)]);
        let run = db.runs.iter().find(|r| r.id == Some(id)).unwrap();
        assert_eq!(run.label(), "dataset=cifar10 method=simclr seed=0 (train.epochs=3)");
        let rows = index_rows(&db);
        let variants: Vec<&str> = rows.iter().filter(|r| r.id == id || r.id == 1).map(|r| r.variant.as_str()).collect();
        assert_eq!(variants, ["train.epochs=3", ""], "the index's runs table names the variant");
    }

    #[test]
    fn rows_carry_baseline_trained_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let runs = index_rows(&db::Database::load(&fixture(dir.path())).unwrap());
        assert_eq!(runs.len(), 6);
        let r = runs.iter().find(|r| r.id == 1).unwrap();
        assert_eq!((r.knn200_init, r.knn200_trained), (Some(28.5), Some(36.25)));
        assert_eq!(r.knn5_trained, None);
        assert_eq!(r.epochs_done, 2);
        assert_eq!(r.train_seconds, 22.0);
        assert_eq!(r.total_seconds, None, "the fixture run has no end time");
    }

    #[test]
    fn index_escapes_and_shows_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let out = render(&fixture(dir.path()), &dir.path().join("out")).unwrap();
        let html = std::fs::read_to_string(&out.index).unwrap();
        assert!(html.contains("28.50") && html.contains("36.25"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;&#x2F;script&gt;"), "user strings are escaped");
        assert!(!html.contains("<script>"));
        assert!(html.contains("loss not finite at epoch 1, step 3"));
        assert!(html.contains(r#"<a href="experiment-mini.html">mini</a>"#), "{html}");
        assert!(html.contains(r#"<a href="compare.html">"#) && out.compare.is_file(), "the index links the comparison");
        assert!(
            html.contains(r#"<h2 id="findings">Findings</h2>"#)
                && html.contains("<code>docs/methods.md#findings</code>")
                && html.contains("<code>docs/methods.md#finding-a-every-method-beats-a-random-encoder</code>"),
            "the findings point to their descriptions: {html}"
        );
        for page in out.experiments.iter().chain(&out.runs).chain([&out.index]) {
            let html = std::fs::read_to_string(page).unwrap();
            assert!(!html.contains("http://") && !html.contains("https://"), "{} is self-contained", page.display());
            assert!(
                !html.contains("<script") && !html.contains("<link"),
                "{}: no scripts or linked styles",
                page.display()
            );
        }
        assert_eq!(out.runs.len(), 6, "a page per started run");
        assert_eq!(out.experiments.len(), 1);
        // The profile's recipes and deviations stand beside its numbers, escaped.
        let page = std::fs::read_to_string(&out.experiments[0]).unwrap();
        assert!(page.contains(r#"id="recipes-smoke""#), "{page}");
        assert!(page.contains("<td>method=w-mse-2</td><td>the &lt;code&gt; at 123abc, README.md</td>"), "{page}");
        assert!(page.contains(r#"id="deviations-smoke""#), "{page}");
        assert!(page.contains("<td>method=w-mse-2</td><td><code>train.epochs</code></td>"), "{page}");
        assert!(page.contains("1,000 epochs (the &lt;code&gt;&#x27;s README)"), "{page}");
    }

    /// Every state a cell can be in, each with its reason, and the finished cell's mean over
    /// seeds beside the paper's number.
    #[test]
    fn experiment_page_says_why_cells_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::Database::load(&fixture(dir.path())).unwrap();
        let pages = experiment::pages(&db).unwrap();
        let page = &pages[0];
        assert_eq!(page.profiles, vec!["smoke"], "the paper profile has no run: no section");
        assert_eq!(
            page.counts,
            experiment::StatusCounts {
                finished: 2,
                diverged: 1,
                running: 1,
                pending: 1,
                skipped: 1,
                total: 6,
                ..Default::default()
            }
        );
        let s = &page.sections[0];
        let metrics: Vec<&str> = s.tables.iter().map(|t| t.metric).collect();
        assert_eq!(metrics, vec!["linear", "knn5", "knn200"], "the paper's metrics first");
        let linear = &s.tables[0];
        assert_eq!(linear.columns, vec!["cifar10", "stl10"]);
        let cell = |row: usize, col: usize| &linear.rows[row].cells[col];
        let ours = cell(0, 0).ours.unwrap();
        assert_eq!((ours.mean, ours.n), (41.0, 2));
        assert!((ours.std.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(cell(0, 0).paper, Some(91.8));
        assert!((cell(0, 0).diff.unwrap() + 50.8).abs() < 1e-9);
        assert_eq!(cell(0, 0).closeness, Some("far"));
        let state = |row, col| (cell(row, col).state, cell(row, col).note.clone().unwrap_or_default());
        assert_eq!(state(0, 1).0, "skipped");
        assert_eq!(state(0, 1).1, "not run: dataset not found (infomax datasets fetch stl10)");
        let full = cell(0, 1).note_full.clone().unwrap();
        assert!(full.contains("stl10_binary is not under /data"), "the stored reason in full: {full}");
        assert_eq!(cell(0, 1).paper, Some(90.51), "the paper's number stands beside a cell not run");
        assert_eq!(state(1, 0), ("partial", "running: 1 of 2 epochs so far".into()));
        assert_eq!(state(1, 1), ("excluded", "not run: the <paper> leaves it empty".into()));
        assert_eq!(state(2, 0), ("diverged", "diverged: loss is NaN at epoch 1, step 7".into()));
        assert_eq!(state(2, 1), ("pending", "pending: planned, not started".into()));
        // The row this profile leaves out whole is not shown; the paper profile would train it.
        assert_eq!(linear.rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(), ["simclr", "byol", "w-mse-2"]);
        let wmse4 = std::collections::BTreeMap::from([
            ("method".to_string(), "w-mse-4".to_string()),
            ("dataset".into(), "cifar10".into()),
        ]);
        let mini = db.experiments.iter().find(|e| e.name == "mini").unwrap();
        assert!(mini.excluding("smoke", &wmse4).is_some() && mini.excluding("paper", &wmse4).is_none());
        let knn200 = &s.tables[2];
        assert_eq!(knn200.rows[0].cells[0].ours.unwrap().init, Some(28.0));
        let html =
            std::fs::read_to_string(render(&db.path, &dir.path().join("out")).unwrap().experiments[0].clone()).unwrap();
        assert!(html.contains("41.00 ± 1.41") && html.contains("paper 91.80") && html.contains("-50.80"), "{html}");
        assert!(html.contains("the &lt;paper&gt; leaves it empty"), "escaped");
        assert!(html.contains("Smoke: two epochs, not a reproduction."), "the profile stands beside the numbers");
    }

    #[test]
    fn run_page_has_epochs_evaluations_config_and_charts() {
        let dir = tempfile::tempdir().unwrap();
        let out = render(&fixture(dir.path()), &dir.path().join("out")).unwrap();
        let html = std::fs::read_to_string(dir.path().join("out/run-1.html")).unwrap();
        assert!(out.runs.contains(&dir.path().join("out/run-1.html")));
        assert!(html.contains("loss.nt_xent") && html.contains("diag.effective_rank"), "{html}");
        assert!(html.contains("&quot;widths&quot;") || html.contains("\"widths\""), "the resolved config");
        assert!(html.matches("<svg").count() >= 4, "loss, terms, lr, accuracy, diagnostics");
        assert!(html.contains("36.25"));
    }

    #[test]
    fn findings_judge_from_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db = db::Database::load(&fixture(dir.path())).unwrap();
        let f = findings::evaluate(&db);
        assert_eq!(f.iter().map(|f| f.id).collect::<Vec<_>>(), vec!["a", "b", "c", "d", "e"]);
        // SimCLR gains 7.75 and 10.75 points over its random encoders: a wide margin.
        assert_eq!(f[0].verdict, findings::Verdict::Holds, "{:?}", f[0]);
        assert!(f[0].evidence[0].text.contains("+9.25"), "{:?}", f[0].evidence);
        for finding in &f[1..4] {
            assert_eq!(finding.verdict, findings::Verdict::NotEnoughData, "{finding:?}");
        }
        // Run 3's embeddings collapsed: std × √16 = 0.04, effective rank 1.2 of 16.
        assert_eq!(f[4].verdict, findings::Verdict::DoesNotHold, "{:?}", f[4]);
        assert!(f[4].evidence[0].text.contains("(run 3)"), "{:?}", f[4].evidence);
    }

    #[test]
    fn compare_methods_across_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(dir.path());
        let db = db::Database::load(&path).unwrap();
        let c = compare::compare(&db, &["simclr".into(), "byol".into()], &[], db::Metric::Linear, None).unwrap();
        assert_eq!(c.datasets, vec!["cifar10"]);
        assert_eq!(c.rows[0].cells[0].stat.unwrap().mean, 41.0);
        assert!(c.rows[1].cells[0].stat.is_none(), "BYOL has no finished run");
        let text = c.to_text();
        assert!(text.contains("41.00 ± 1.41 (2)") && text.contains("mini/smoke"), "{text}");
        let page = render_compare(&path, &c, &dir.path().join("out/compare.html")).unwrap();
        let html = std::fs::read_to_string(page).unwrap();
        assert!(html.contains("41.00 ± 1.41") && html.contains("no finished run"), "{html}");
    }

    /// One row per evaluation, a run without any as one row with empty evaluation columns; the
    /// CSV and the Parquet file hold the same table.
    #[test]
    fn export_flattens_runs_and_evaluations() {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture(dir.path());
        let df = export::flat_table(&db).unwrap();
        assert_eq!(df.height(), 11, "4 + 3 evaluations of runs 1 and 3, runs 2, 4, 5 and 6 without any");
        assert_eq!(df.width(), 22);
        let mut csv = Vec::new();
        assert_eq!(export::export(&db, export::Format::Csv, None, &mut csv).unwrap(), 11);
        let csv = String::from_utf8(csv).unwrap();
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().starts_with("run_id,experiment,profile,method,dataset,seed,grid,status"));
        assert!(csv.contains("knn-cosine,200,36.25,80.0,1000,200"), "{csv}");
        assert!(csv.contains("2,<script>x</script>,cpu"), "{csv}");
        let pq = dir.path().join("out/all.parquet");
        export::export(&db, export::Format::Parquet, Some(&pq), &mut Vec::new()).unwrap();
        use polars::prelude::SerReader;
        let back = polars::prelude::ParquetReader::new(std::fs::File::open(&pq).unwrap()).finish().unwrap();
        assert!(back.equals_missing(&df), "{back}");
        let err = export::export(&db, export::Format::Parquet, None, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("--out"), "{err}");
    }

    #[test]
    fn missing_or_foreign_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = render(&dir.path().join("none.sqlite"), dir.path()).unwrap_err().to_string();
        assert!(err.contains("none.sqlite") && err.contains("no such file"), "{err}");
        let p = dir.path().join("other.sqlite");
        Connection::open(&p).unwrap().execute_batch("CREATE TABLE t (x); PRAGMA user_version = 7;").unwrap();
        let err = render(&p, dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema version 7"), "{err}");
    }

    /// A stored configuration this infomax cannot read stops the report with the database, the
    /// run and what serde found, rather than showing the run without it.
    #[test]
    fn a_configuration_that_does_not_parse_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(dir.path());
        let store = Store::open(&path).unwrap();
        store.connection().execute("UPDATE runs SET config_json = '{\"seed\": 0}' WHERE id = 4", []).unwrap();
        let err = render(&path, &dir.path().join("out")).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("run 4"), "{err}");
        assert!(err.contains("missing field"), "serde's message: {err}");
    }
}
