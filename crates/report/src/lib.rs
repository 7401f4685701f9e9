//! HTML reports rendered from the results database alone (a database made on another machine
//! renders the same). Templates are tera with autoescaping on; pages are self-contained: no
//! scripts, fonts or styles from the network.

pub mod export;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use thiserror::Error;

/// The schema version this report reads (the runner's `store::SCHEMA_VERSION`).
pub const SCHEMA_VERSION: i64 = 2;

#[derive(Debug, Error)]
pub enum Error {
    #[error("results database {path}: {source}")]
    Db { path: PathBuf, source: rusqlite::Error },
    #[error("results database {path}: {what}")]
    Schema { path: PathBuf, what: String },
    #[error("template {name}: {source}")]
    Template { name: &'static str, source: tera::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("export of {path}: {what}")]
    Export { path: PathBuf, what: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One row of the index: a run and its headline numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub experiment: String,
    pub profile: String,
    pub method: String,
    pub dataset: String,
    pub seed: i64,
    pub status: String,
    pub status_detail: Option<String>,
    pub epochs_planned: i64,
    pub epochs_done: i64,
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
    pub bank_size: Option<i64>,
    pub test_size: Option<i64>,
    /// Seconds spent in training epochs.
    pub train_seconds: f64,
    /// Seconds from start to end of the run (training and every evaluation); none while running.
    pub total_seconds: Option<f64>,
    pub images_per_second: Option<f64>,
    pub started_at: String,
    pub code_version: String,
    pub machine: String,
}

fn open(path: &Path) -> Result<Connection> {
    let err = |source| Error::Db { path: path.to_path_buf(), source };
    if !path.is_file() {
        return Err(Error::Schema {
            path: path.to_path_buf(),
            what: "no such file; run `infomax reproduce` first or pass --db".into(),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
    if v != SCHEMA_VERSION {
        return Err(Error::Schema {
            path: path.to_path_buf(),
            what: format!("schema version {v}, this report reads version {SCHEMA_VERSION}"),
        });
    }
    Ok(conn)
}

/// Every run with its headline numbers, newest first.
pub fn load_runs(db: &Path) -> Result<Vec<RunRow>> {
    let conn = open(db)?;
    let err = |source| Error::Db { path: db.to_path_buf(), source };
    let sql = r#"
        SELECT r.id, r.experiment, r.profile, r.method, r.dataset, r.seed, r.status, r.status_detail, r.epochs,
               (SELECT COALESCE(MAX(epoch), 0) FROM epochs e WHERE e.run_id = r.id),
               (SELECT top1 FROM evaluations v WHERE v.run_id = r.id AND v.protocol = 'knn-cosine' AND v.k = 200 AND v.epoch = 0),
               (SELECT top1 FROM evaluations v WHERE v.run_id = r.id AND v.protocol = 'knn-cosine' AND v.k = 200 AND v.epoch > 0
                  ORDER BY v.epoch DESC LIMIT 1),
               (SELECT top1 FROM evaluations v WHERE v.run_id = r.id AND v.protocol = 'knn-euclidean' AND v.k = 5 AND v.epoch = 0),
               (SELECT top1 FROM evaluations v WHERE v.run_id = r.id AND v.protocol = 'knn-euclidean' AND v.k = 5 AND v.epoch > 0
                  ORDER BY v.epoch DESC LIMIT 1),
               (SELECT bank_size FROM evaluations v WHERE v.run_id = r.id ORDER BY v.epoch DESC LIMIT 1),
               (SELECT test_size FROM evaluations v WHERE v.run_id = r.id ORDER BY v.epoch DESC LIMIT 1),
               (SELECT COALESCE(SUM(wall_seconds), 0.0) FROM epochs e WHERE e.run_id = r.id),
               (SELECT AVG(images_per_second) FROM epochs e WHERE e.run_id = r.id),
               r.started_at, r.code_version, r.machine,
               (julianday(r.finished_at) - julianday(r.started_at)) * 86400.0,
               (SELECT top1 FROM evaluations v WHERE v.run_id = r.id AND v.protocol = 'linear' AND v.epoch = 0),
               (SELECT top1 FROM evaluations v WHERE v.run_id = r.id AND v.protocol = 'linear' AND v.epoch > 0
                  ORDER BY v.epoch DESC LIMIT 1)
        FROM runs r ORDER BY r.id DESC"#;
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                experiment: r.get(1)?,
                profile: r.get(2)?,
                method: r.get(3)?,
                dataset: r.get(4)?,
                seed: r.get(5)?,
                status: r.get(6)?,
                status_detail: r.get(7)?,
                epochs_planned: r.get(8)?,
                epochs_done: r.get(9)?,
                knn200_init: r.get(10)?,
                knn200_trained: r.get(11)?,
                knn200_gain: None,
                knn5_init: r.get(12)?,
                knn5_trained: r.get(13)?,
                bank_size: r.get(14)?,
                test_size: r.get(15)?,
                train_seconds: r.get(16)?,
                total_seconds: r.get(21)?,
                images_per_second: r.get(17)?,
                started_at: r.get(18)?,
                code_version: r.get(19)?,
                machine: r.get(20)?,
                linear_init: r.get(22)?,
                linear_trained: r.get(23)?,
            })
        })
        .map_err(err)?;
    let mut runs = rows.collect::<std::result::Result<Vec<_>, _>>().map_err(err)?;
    for r in &mut runs {
        r.knn200_gain = r.knn200_trained.zip(r.knn200_init).map(|(t, i)| t - i);
    }
    Ok(runs)
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

/// Seconds as `1 h 02 min`, `3 min 05 s` or `12.3 s`.
pub fn human_duration(s: f64) -> String {
    let total = s.round() as u64;
    if s < 60.0 {
        format!("{s:.1} s")
    } else if total < 3600 {
        format!("{} min {:02} s", total / 60, total % 60)
    } else {
        format!("{} h {:02} min", total / 3600, (total % 3600) / 60)
    }
}

fn duration(v: &tera::Value, _: &std::collections::HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    Ok(tera::Value::String(human_duration(number(v, "duration")?)))
}

/// A tera instance with infomax's templates and filters.
fn templates() -> Result<tera::Tera> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![".html"]);
    tera.register_filter("fmt2", fmt2);
    tera.register_filter("fmt1", fmt1);
    tera.register_filter("duration", duration);
    tera.add_raw_template("index.html", INDEX).map_err(|source| Error::Template { name: "index.html", source })?;
    Ok(tera)
}

const INDEX: &str = include_str!("../templates/index.html");

/// Render `index.html` from the database at `db` into `out_dir` (written atomically).
pub fn render_index(db: &Path, out_dir: &Path) -> Result<PathBuf> {
    let runs = load_runs(db)?;
    let tera = templates()?;
    let mut ctx = tera::Context::new();
    ctx.insert("runs", &runs);
    ctx.insert("database", &db.display().to_string());
    ctx.insert("version", env!("CARGO_PKG_VERSION"));
    let html = tera.render("index.html", &ctx).map_err(|source| Error::Template { name: "index.html", source })?;
    write_atomically(&out_dir.join("index.html"), html.as_bytes())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("html.tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with the runner's schema, written by hand so this crate stays independent.
    fn fixture(dir: &Path) -> PathBuf {
        let path = dir.join("r.sqlite");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            r#"
            CREATE TABLE runs (id INTEGER PRIMARY KEY, experiment TEXT, profile TEXT, method TEXT, dataset TEXT,
              seed INTEGER, epochs INTEGER, config_json TEXT, config_hash TEXT, status TEXT, status_detail TEXT,
              started_at TEXT, finished_at TEXT, code_version TEXT, machine TEXT, grid_json TEXT DEFAULT '{}');
            CREATE TABLE epochs (run_id INTEGER, epoch INTEGER, loss REAL, lr REAL, images_per_second REAL, wall_seconds REAL);
            CREATE TABLE evaluations (run_id INTEGER, epoch INTEGER, protocol TEXT, k INTEGER, top1 REAL, top5 REAL,
              bank_size INTEGER, test_size INTEGER);
            INSERT INTO runs VALUES (1, 'smoke', 'smoke', 'vicreg', 'cifar10', 0, 2, '{}', 'h', 'finished', NULL,
              '2026-01-01T00:00:00Z', NULL, 'v', 'm', '{}');
            INSERT INTO runs VALUES (2, '<script>x</script>', 'cpu', 'vicreg', 'cifar10', 1, 5, '{}', 'g', 'diverged',
              'loss not finite at epoch 1, step 3', '2026-01-01T00:00:00Z', NULL, 'v', 'm', '{}');
            INSERT INTO epochs VALUES (1, 1, 3.0, 0.1, 50.0, 10.0), (1, 2, 2.0, 0.1, 70.0, 12.0);
            INSERT INTO evaluations VALUES (1, 0, 'knn-cosine', 200, 28.5, 70.0, 1000, 200),
              (1, 2, 'knn-cosine', 200, 36.25, 80.0, 1000, 200), (1, 0, 'knn-euclidean', 5, 25.0, 60.0, 1000, 200);
            PRAGMA user_version = 2;
            "#,
        )
        .unwrap();
        path
    }

    #[test]
    fn rows_carry_baseline_trained_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let runs = load_runs(&fixture(dir.path())).unwrap();
        assert_eq!(runs.len(), 2);
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
        let out = render_index(&fixture(dir.path()), &dir.path().join("out")).unwrap();
        let html = std::fs::read_to_string(out).unwrap();
        assert!(html.contains("28.50") && html.contains("36.25"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;&#x2F;script&gt;"), "user strings are escaped");
        assert!(!html.contains("<script>"));
        assert!(html.contains("loss not finite at epoch 1, step 3"));
        assert!(!html.contains("http://") && !html.contains("https://"), "self-contained");
    }

    /// One row per evaluation, a run without any as one row with empty evaluation columns; the
    /// CSV and the Parquet file hold the same table.
    #[test]
    fn export_flattens_runs_and_evaluations() {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture(dir.path());
        let df = export::flat_table(&db).unwrap();
        assert_eq!(df.height(), 4, "3 evaluations of run 1, run 2 without any");
        assert_eq!(df.width(), 22);
        let mut csv = Vec::new();
        assert_eq!(export::export(&db, export::Format::Csv, None, &mut csv).unwrap(), 4);
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
    fn durations_read_naturally() {
        assert_eq!(human_duration(12.34), "12.3 s");
        assert_eq!(human_duration(185.0), "3 min 05 s");
        assert_eq!(human_duration(3720.0), "1 h 02 min");
    }

    #[test]
    fn missing_or_foreign_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = render_index(&dir.path().join("none.sqlite"), dir.path()).unwrap_err().to_string();
        assert!(err.contains("none.sqlite") && err.contains("no such file"), "{err}");
        let p = dir.path().join("other.sqlite");
        Connection::open(&p).unwrap().execute_batch("CREATE TABLE t (x); PRAGMA user_version = 7;").unwrap();
        let err = render_index(&p, dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema version 7"), "{err}");
    }
}
