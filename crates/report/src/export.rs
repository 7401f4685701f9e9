//! `infomax export`: every run and every evaluation as one flat table (a row per evaluation; a
//! run without any — skipped, pending, failed early — as one row with empty evaluation columns),
//! built as a polars `DataFrame` and written as CSV or Parquet.

use std::path::Path;

use polars::prelude::*;

use crate::db::Database;
use crate::{Error, Result};

/// Output formats of `infomax export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!("`csv` or `parquet` expected, got `{other}`")),
        }
    }
}

fn polars_err(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |e| Error::Export { path: path.to_path_buf(), what: e.to_string() }
}

/// An evaluation's columns (all empty for a run without any).
type EvalColumns = (Option<i64>, Option<String>, Option<i64>, Option<f64>, Option<f64>, Option<i64>, Option<i64>);

/// One joined row: the run's columns, then its evaluation's.
type Row = (
    (i64, String, String, String, String, i64, String, String, Option<String>),
    (i64, String, String, Option<String>, String, String),
    EvalColumns,
);

/// The flat table of the database at `db`: every row of `runs` (every attempt) by id, each
/// joined with its evaluations by epoch, protocol and k.
pub fn flat_table(db: &Path) -> Result<DataFrame> {
    let data = Database::load(db)?;
    let mut rows: Vec<Row> = Vec::new();
    for r in &data.records {
        let s = &r.config;
        let run = (
            (
                r.id,
                s.experiment.clone(),
                s.profile.clone(),
                s.method.name().to_string(),
                s.dataset.name().to_string(),
                s.seed as i64,
                serde_json::to_string(&s.grid).expect("a map of strings serialises"),
                r.status.as_str().to_string(),
                r.detail.clone(),
            ),
            (
                s.train.epochs as i64,
                r.config_hash.clone(),
                r.started_at.clone(),
                r.finished_at.clone(),
                r.code_version.clone(),
                r.machine.clone(),
            ),
        );
        let evaluations = data.evaluations.get(&r.id).map_or(&[][..], Vec::as_slice);
        let mut evals: Vec<EvalColumns> = evaluations
            .iter()
            .map(|v| {
                (
                    Some(v.epoch as i64),
                    Some(v.protocol.clone()),
                    v.k.map(|k| k as i64),
                    Some(v.top1),
                    Some(v.top5),
                    Some(v.bank_size as i64),
                    Some(v.test_size as i64),
                )
            })
            .collect();
        if evals.is_empty() {
            evals.push((None, None, None, None, None, None, None));
        }
        rows.extend(evals.into_iter().map(|eval| (run.0.clone(), run.1.clone(), eval)));
    }
    fn col<T, F>(name: &str, rows: &[Row], f: F) -> Column
    where
        F: Fn(&Row) -> T,
        Series: NamedFrom<Vec<T>, [T]>,
    {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<T>>())
    }
    let r = rows.as_slice();
    DataFrame::new(vec![
        col("run_id", r, |x| x.0 .0),
        col("experiment", r, |x| x.0 .1.clone()),
        col("profile", r, |x| x.0 .2.clone()),
        col("method", r, |x| x.0 .3.clone()),
        col("dataset", r, |x| x.0 .4.clone()),
        col("seed", r, |x| x.0 .5),
        col("grid", r, |x| x.0 .6.clone()),
        col("status", r, |x| x.0 .7.clone()),
        col("status_detail", r, |x| x.0 .8.clone()),
        col("epochs", r, |x| x.1 .0),
        col("config_hash", r, |x| x.1 .1.clone()),
        col("started_at", r, |x| x.1 .2.clone()),
        col("finished_at", r, |x| x.1 .3.clone()),
        col("code_version", r, |x| x.1 .4.clone()),
        col("machine", r, |x| x.1 .5.clone()),
        col("eval_epoch", r, |x| x.2 .0),
        col("protocol", r, |x| x.2 .1.clone()),
        col("k", r, |x| x.2 .2),
        col("top1", r, |x| x.2 .3),
        col("top5", r, |x| x.2 .4),
        col("bank_size", r, |x| x.2 .5),
        col("test_size", r, |x| x.2 .6),
    ])
    .map_err(polars_err(db))
}

/// Write the flat table of `db` to `out` (atomically), or as CSV to `stdout` when `out` is none.
pub fn export(db: &Path, format: Format, out: Option<&Path>, stdout: &mut dyn std::io::Write) -> Result<usize> {
    let mut df = flat_table(db)?;
    let rows = df.height();
    let Some(out) = out else {
        if format == Format::Parquet {
            return Err(Error::Export {
                path: db.to_path_buf(),
                what: "Parquet is binary: give --out FILE.parquet".into(),
            });
        }
        CsvWriter::new(stdout).finish(&mut df).map_err(polars_err(db))?;
        return Ok(rows);
    };
    let io = |source| Error::Io { path: out.to_path_buf(), source };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|source| Error::Io { path: tmp.clone(), source })?;
    match format {
        Format::Csv => CsvWriter::new(file).finish(&mut df).map_err(polars_err(out))?,
        Format::Parquet => {
            ParquetWriter::new(file).finish(&mut df).map_err(polars_err(out))?;
        }
    }
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok(rows)
}
