//! `infomax export`: every run and every evaluation as one flat table (a row per evaluation; a
//! run without any — skipped, pending, failed early — as one row with empty evaluation columns),
//! built as a polars `DataFrame` and written as CSV or Parquet.

use std::path::Path;

use polars::prelude::*;

use crate::{open, Error, Result};

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

/// One joined row: the run's columns, then its evaluation's (empty when it has none).
type Row = (
    (i64, String, String, String, String, i64, String, String, Option<String>),
    (i64, String, String, Option<String>, String, String),
    (Option<i64>, Option<String>, Option<i64>, Option<f64>, Option<f64>, Option<i64>, Option<i64>),
);

/// The flat table of the database at `db`.
pub fn flat_table(db: &Path) -> Result<DataFrame> {
    let conn = open(db)?;
    let err = |source| Error::Db { path: db.to_path_buf(), source };
    let sql = r#"
        SELECT r.id, r.experiment, r.profile, r.method, r.dataset, r.seed, r.grid_json, r.status, r.status_detail,
               r.epochs, r.config_hash, r.started_at, r.finished_at, r.code_version, r.machine,
               v.epoch, v.protocol, v.k, v.top1, v.top5, v.bank_size, v.test_size
        FROM runs r LEFT JOIN evaluations v ON v.run_id = r.id
        ORDER BY r.id, v.epoch, v.protocol, v.k"#;
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?),
                (r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?),
                (r.get(15)?, r.get(16)?, r.get(17)?, r.get(18)?, r.get(19)?, r.get(20)?, r.get(21)?),
            ))
        })
        .and_then(|rows| rows.collect())
        .map_err(err)?;
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
