//! The results store: one SQLite file (default `reports/results.sqlite`), the single source of
//! truth for runs, per-epoch metrics and evaluations. HTML is a view of it.
//!
//! Schema version lives in `PRAGMA user_version`; the schema is created on first use and a file
//! from a newer infomax is refused rather than misread. Every write is its own transaction, so a
//! crash leaves whole epochs and whole evaluations, never half of one.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::spec::RunSpec;
use crate::{Error, Result};

pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = r#"
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    experiment    TEXT NOT NULL,
    profile       TEXT NOT NULL,
    method        TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    seed          INTEGER NOT NULL,
    epochs        INTEGER NOT NULL,
    config_json   TEXT NOT NULL,
    config_hash   TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'diverged', 'failed', 'interrupted', 'skipped')),
    status_detail TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    code_version  TEXT NOT NULL,
    machine       TEXT NOT NULL,
    grid_json     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_by_hash ON runs (config_hash);

-- One row per finished training epoch.
CREATE TABLE epochs (
    run_id            INTEGER NOT NULL REFERENCES runs (id),
    epoch             INTEGER NOT NULL,
    loss              REAL NOT NULL,
    lr                REAL NOT NULL,
    images_per_second REAL NOT NULL,
    wall_seconds      REAL NOT NULL,
    PRIMARY KEY (run_id, epoch)
);

-- Each loss term and diagnostic of an epoch, averaged over its steps.
CREATE TABLE epoch_terms (
    run_id INTEGER NOT NULL,
    epoch  INTEGER NOT NULL,
    name   TEXT NOT NULL,
    value  REAL NOT NULL,
    PRIMARY KEY (run_id, epoch, name),
    FOREIGN KEY (run_id, epoch) REFERENCES epochs (run_id, epoch)
);

-- Frozen-feature evaluations; epoch 0 is the randomly initialised encoder.
CREATE TABLE evaluations (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    epoch       INTEGER NOT NULL,
    protocol    TEXT NOT NULL,
    k           INTEGER NOT NULL,
    top1        REAL NOT NULL,
    top5        REAL NOT NULL,
    bank_size   INTEGER NOT NULL,
    test_size   INTEGER NOT NULL,
    PRIMARY KEY (run_id, epoch, protocol, k)
);
"#;

/// Version 2: what the experiments are and what they plan, and the papers' numbers, so that a
/// report needs nothing but the database.
const SCHEMA_V2: &str = r#"
CREATE TABLE experiments (
    name       TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    paper      TEXT NOT NULL,
    reproduces TEXT NOT NULL,
    -- {"axes": [{"name", "values"}], "exclude": [{"match": [[axis, [values]]], "why"}]}
    axes_json  TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE profiles (
    experiment TEXT NOT NULL,
    profile    TEXT NOT NULL,
    about      TEXT NOT NULL,
    PRIMARY KEY (experiment, profile)
);

-- Every run a `reproduce` planned (the slice of a shard), trained yet or not.
CREATE TABLE planned_runs (
    config_hash TEXT PRIMARY KEY,
    experiment  TEXT NOT NULL,
    profile     TEXT NOT NULL,
    label       TEXT NOT NULL,
    grid_json   TEXT NOT NULL,
    config_json TEXT NOT NULL
);

-- The paper's numbers for the grid cells matching `at_json`.
CREATE TABLE reference_values (
    experiment TEXT NOT NULL,
    at_json    TEXT NOT NULL,
    metric     TEXT NOT NULL,
    value      REAL NOT NULL,
    source     TEXT NOT NULL,
    PRIMARY KEY (experiment, at_json, metric)
);
"#;

/// Version 1 → 2: `runs` gains the `skipped` status and `grid_json` (SQLite cannot alter a CHECK,
/// so the table is rebuilt, ids kept), and the experiment tables appear.
const MIGRATE_V1_TO_V2: &str = r#"
CREATE TABLE runs_v2 (
    id            INTEGER PRIMARY KEY,
    experiment    TEXT NOT NULL,
    profile       TEXT NOT NULL,
    method        TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    seed          INTEGER NOT NULL,
    epochs        INTEGER NOT NULL,
    config_json   TEXT NOT NULL,
    config_hash   TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'diverged', 'failed', 'interrupted', 'skipped')),
    status_detail TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    code_version  TEXT NOT NULL,
    machine       TEXT NOT NULL,
    grid_json     TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO runs_v2 (id, experiment, profile, method, dataset, seed, epochs, config_json, config_hash, status,
                     status_detail, started_at, finished_at, code_version, machine)
    SELECT id, experiment, profile, method, dataset, seed, epochs, config_json, config_hash, status,
           status_detail, started_at, finished_at, code_version, machine FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;
CREATE INDEX runs_by_hash ON runs (config_hash);
"#;

/// One run as `infomax status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// None for a planned run not started yet.
    pub id: Option<i64>,
    pub experiment: String,
    pub profile: String,
    /// Grid coordinates and seed: `method=w-mse-4 dataset=cifar10 seed=0`.
    pub label: String,
    pub status: String,
    pub detail: Option<String>,
    pub epochs: usize,
    pub epochs_done: usize,
    pub config_hash: String,
    /// (epoch, metric, top-1 %) of the latest evaluation.
    pub last_eval: Vec<(usize, String, f64)>,
}

/// What `merge_from` did, run by run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeStats {
    /// Runs this database did not have.
    pub copied: usize,
    /// Runs this database had, less far along than the other's.
    pub replaced: usize,
    /// Runs this database already had as far along.
    pub kept: usize,
}

fn label_of(grid_json: &str, seed: i64, method: &str, dataset: &str) -> String {
    let grid: std::collections::BTreeMap<String, String> = serde_json::from_str(grid_json).unwrap_or_default();
    let mut parts: Vec<String> = grid.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if parts.is_empty() {
        parts = vec![format!("method={method}"), format!("dataset={dataset}")];
    }
    parts.push(format!("seed={seed}"));
    parts.join(" ")
}

/// Copy one run and everything recorded for it into `dst` under a new id.
fn copy_run(src: &Connection, dst: &Connection, src_id: i64) -> rusqlite::Result<()> {
    const RUN_COLS: &str = "experiment, profile, method, dataset, seed, epochs, config_json, config_hash, status, \
                            status_detail, started_at, finished_at, code_version, machine, grid_json";
    let row: Vec<rusqlite::types::Value> =
        src.query_row(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"), params![src_id], |r| {
            (0..15).map(|i| r.get(i)).collect()
        })?;
    let marks = (1..=15).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    dst.execute(&format!("INSERT INTO runs ({RUN_COLS}) VALUES ({marks})"), rusqlite::params_from_iter(row))?;
    let new_id = dst.last_insert_rowid();
    for (table, cols) in [
        ("epochs", "epoch, loss, lr, images_per_second, wall_seconds"),
        ("epoch_terms", "epoch, name, value"),
        ("evaluations", "epoch, protocol, k, top1, top5, bank_size, test_size"),
    ] {
        let n = cols.split(',').count();
        let mut stmt = src.prepare(&format!("SELECT {cols} FROM {table} WHERE run_id = ?1"))?;
        let rows: Vec<Vec<rusqlite::types::Value>> = stmt
            .query_map(params![src_id], |r| (0..n).map(|i| r.get(i)).collect())?
            .collect::<rusqlite::Result<_>>()?;
        let marks = (2..=n + 1).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        for row in rows {
            let mut values = vec![rusqlite::types::Value::Integer(new_id)];
            values.extend(row);
            dst.execute(
                &format!("INSERT INTO {table} (run_id, {cols}) VALUES (?1, {marks})"),
                rusqlite::params_from_iter(values),
            )?;
        }
    }
    Ok(())
}

fn grid_json(spec: &RunSpec) -> String {
    serde_json::to_string(&spec.grid).expect("a map of strings serialises")
}

/// Status values of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Finished,
    Diverged,
    Failed,
    Interrupted,
    /// Not started for a reason outside the run (its dataset is not on disk).
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Skipped => "skipped",
        }
    }
}

/// One epoch's aggregate, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub images_per_second: f64,
    pub wall_seconds: f64,
    pub terms: Vec<(String, f64)>,
}

/// One evaluation, as stored (accuracies in percent).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRecord {
    pub epoch: usize,
    pub protocol: String,
    pub k: usize,
    pub top1: f64,
    pub top5: f64,
    pub bank_size: usize,
    pub test_size: usize,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open (creating the file, its folder and the schema on first use).
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        let err = |source| Error::Store { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        match version {
            0 => {
                let tx = conn.unchecked_transaction().map_err(err)?;
                tx.execute_batch(SCHEMA).map_err(err)?;
                tx.execute_batch(SCHEMA_V2).map_err(err)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err)?;
                tx.commit().map_err(err)?;
            }
            1 => {
                // Foreign keys off while `runs` is rebuilt: the other tables keep pointing at it by name.
                conn.pragma_update(None, "foreign_keys", "OFF").map_err(err)?;
                let tx = conn.unchecked_transaction().map_err(err)?;
                tx.execute_batch(MIGRATE_V1_TO_V2).map_err(err)?;
                tx.execute_batch(SCHEMA_V2).map_err(err)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err)?;
                tx.commit().map_err(err)?;
                conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
            }
            SCHEMA_VERSION => {}
            v => {
                return Err(Error::StoreSchema {
                    path: path.to_path_buf(),
                    what: format!(
                    "schema version {v}, this infomax reads version {SCHEMA_VERSION}; use the infomax that wrote it"
                ),
                })
            }
        }
        Ok(Self { conn, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Store { path: self.path.clone(), source }
    }

    /// A run with this config hash that needs no more training (finished or diverged).
    pub fn completed_run(&self, config_hash: &str) -> Result<Option<(i64, String)>> {
        self.conn
            .query_row(
                "SELECT id, status FROM runs WHERE config_hash = ?1 AND status IN ('finished', 'diverged')
                 ORDER BY id DESC LIMIT 1",
                params![config_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// Mark runs of this hash left `running` by a process that died as `interrupted`.
    pub fn mark_interrupted(&self, config_hash: &str) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE runs SET status = 'interrupted', status_detail = 'the process ended before the run did'
                 WHERE config_hash = ?1 AND status = 'running'",
                params![config_hash],
            )
            .map_err(self.err())
    }

    /// The newest run of this hash that stopped without finishing (`running` when its process
    /// died, or `interrupted`): the one a checkpoint resumes.
    pub fn unfinished_run(&self, config_hash: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT id FROM runs WHERE config_hash = ?1 AND status IN ('running', 'interrupted')
                 ORDER BY id DESC LIMIT 1",
                params![config_hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Take up an unfinished run again from the end of `epoch` (its checkpoint), or from the
    /// start when there is none: drop what was recorded after that point (work the checkpoint
    /// does not hold) and mark it `running` again, in one transaction. A run stays one row
    /// however often it is interrupted.
    pub fn resume_run(&self, run_id: i64, epoch: Option<usize>) -> Result<()> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let keep_through = epoch.map_or(-1, |e| e as i64);
        // Terms first: they reference their epoch's row.
        for table in ["epoch_terms", "evaluations", "epochs"] {
            tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1 AND epoch > ?2"), params![run_id, keep_through])
                .map_err(self.err())?;
        }
        let detail = match epoch {
            Some(e) => format!("resumed after epoch {e}"),
            None => "restarted: the interrupted attempt left no checkpoint".to_string(),
        };
        tx.execute("UPDATE runs SET status = 'running', status_detail = ?2 WHERE id = ?1", params![run_id, detail])
            .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// The last epoch recorded for a run (0 when none).
    pub fn last_recorded_epoch(&self, run_id: i64) -> Result<usize> {
        self.conn
            .query_row("SELECT COALESCE(MAX(epoch), 0) FROM epochs WHERE run_id = ?1", params![run_id], |r| {
                r.get::<_, i64>(0)
            })
            .map(|e| e as usize)
            .map_err(self.err())
    }

    /// Insert a run in status `running`; returns its id.
    pub fn start_run(&self, spec: &RunSpec, code_version: &str, machine: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (experiment, profile, method, dataset, seed, epochs, config_json, config_hash,
                                   status, started_at, code_version, machine, grid_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?9, ?10, ?11)",
                params![
                    spec.experiment,
                    spec.profile,
                    spec.method.name(),
                    spec.dataset.name(),
                    spec.seed as i64,
                    spec.train.epochs as i64,
                    spec.canonical_json(),
                    spec.hash(),
                    code_version,
                    machine,
                    grid_json(spec)
                ],
            )
            .map_err(self.err())?;
        let id = self.conn.last_insert_rowid();
        // A run that starts replaces the record of its earlier skip.
        self.conn
            .execute("DELETE FROM runs WHERE config_hash = ?1 AND status = 'skipped'", params![spec.hash()])
            .map_err(self.err())?;
        Ok(id)
    }

    /// Record that a run could not start for a reason outside it (its dataset is not on disk):
    /// one `skipped` row per configuration, its reason updated, removed once the run starts.
    pub fn skip_run(&self, spec: &RunSpec, reason: &str, code_version: &str, machine: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        tx.execute("DELETE FROM runs WHERE config_hash = ?1 AND status = 'skipped'", params![spec.hash()])
            .map_err(self.err())?;
        tx.execute(
            "INSERT INTO runs (experiment, profile, method, dataset, seed, epochs, config_json, config_hash,
                               status, status_detail, started_at, finished_at, code_version, machine, grid_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'skipped', ?9, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                     strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?10, ?11, ?12)",
            params![
                spec.experiment,
                spec.profile,
                spec.method.name(),
                spec.dataset.name(),
                spec.seed as i64,
                spec.train.epochs as i64,
                spec.canonical_json(),
                spec.hash(),
                reason,
                code_version,
                machine,
                grid_json(spec)
            ],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Record an experiment file's description, its profiles, the paper's numbers and the runs
    /// a `reproduce` planned, replacing what an earlier call recorded for that experiment (the
    /// plan's rows are added to, so shards and profiles accumulate).
    pub fn record_experiment(&self, file: &crate::ExperimentFile, plan: &[crate::plan::PlannedRun]) -> Result<()> {
        let name = &file.meta.name;
        // The grid: its axes and the cells it leaves out on purpose, with why.
        let axes: Vec<serde_json::Value> = file
            .axes
            .iter()
            .map(
                |a| serde_json::json!({"name": a.name, "values": a.values.iter().map(|v| &v.name).collect::<Vec<_>>()}),
            )
            .collect();
        let grid = serde_json::json!({"axes": axes, "exclude": file.exclusions});
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        tx.execute(
            "INSERT INTO experiments (name, title, paper, reproduces, axes_json, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             ON CONFLICT (name) DO UPDATE SET title = ?2, paper = ?3, reproduces = ?4, axes_json = ?5,
                                              updated_at = excluded.updated_at",
            params![name, file.meta.title, file.meta.paper, file.meta.reproduces, grid.to_string()],
        )
        .map_err(self.err())?;
        tx.execute("DELETE FROM profiles WHERE experiment = ?1", params![name]).map_err(self.err())?;
        for (profile, p) in &file.profiles {
            tx.execute(
                "INSERT INTO profiles (experiment, profile, about) VALUES (?1, ?2, ?3)",
                params![name, profile, p.about],
            )
            .map_err(self.err())?;
        }
        tx.execute("DELETE FROM reference_values WHERE experiment = ?1", params![name]).map_err(self.err())?;
        for r in &file.references {
            let at = serde_json::to_string(&r.at).expect("a map of strings serialises");
            for (metric, value) in &r.values {
                tx.execute(
                    "INSERT OR REPLACE INTO reference_values (experiment, at_json, metric, value, source)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![name, at, metric, value, r.source],
                )
                .map_err(self.err())?;
            }
        }
        for run in plan {
            tx.execute(
                "INSERT OR REPLACE INTO planned_runs (config_hash, experiment, profile, label, grid_json, config_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    run.spec.hash(),
                    run.spec.experiment,
                    run.spec.profile,
                    run.label(),
                    grid_json(&run.spec),
                    run.spec.canonical_json()
                ],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    pub fn record_epoch(&self, run_id: i64, e: &EpochRecord) -> Result<()> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        tx.execute(
            "INSERT INTO epochs (run_id, epoch, loss, lr, images_per_second, wall_seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run_id, e.epoch as i64, e.loss, e.lr, e.images_per_second, e.wall_seconds],
        )
        .map_err(self.err())?;
        for (name, value) in &e.terms {
            tx.execute(
                "INSERT INTO epoch_terms (run_id, epoch, name, value) VALUES (?1, ?2, ?3, ?4)",
                params![run_id, e.epoch as i64, name, value],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    pub fn record_eval(&self, run_id: i64, e: &EvalRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO evaluations (run_id, epoch, protocol, k, top1, top5, bank_size, test_size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    run_id,
                    e.epoch as i64,
                    e.protocol,
                    e.k as i64,
                    e.top1,
                    e.top5,
                    e.bank_size as i64,
                    e.test_size as i64
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Close a run with its final status and an optional explanation.
    pub fn finish_run(&self, run_id: i64, status: RunStatus, detail: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, status_detail = ?3, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE id = ?1",
                params![run_id, status.as_str(), detail],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// The latest row of every run (of one experiment, or all), then the planned runs that have
    /// none yet (status `pending`), with each run's last evaluation.
    pub fn run_rows(&self, experiment: Option<&str>) -> Result<Vec<RunRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.id, r.experiment, r.profile, r.grid_json, r.seed, r.status, r.status_detail, r.epochs,
                        (SELECT count(*) FROM epochs e WHERE e.run_id = r.id), r.config_hash, r.method, r.dataset
                 FROM runs r
                 WHERE r.id = (SELECT max(id) FROM runs WHERE config_hash = r.config_hash)
                   AND (?1 IS NULL OR r.experiment = ?1)
                 ORDER BY r.experiment, r.profile, r.id",
            )
            .map_err(self.err())?;
        let mut rows = stmt
            .query_map(params![experiment], |r| {
                let grid: String = r.get(3)?;
                let seed: i64 = r.get(4)?;
                Ok(RunRow {
                    id: Some(r.get(0)?),
                    experiment: r.get(1)?,
                    profile: r.get(2)?,
                    label: label_of(&grid, seed, &r.get::<_, String>(10)?, &r.get::<_, String>(11)?),
                    status: r.get(5)?,
                    detail: r.get(6)?,
                    epochs: r.get::<_, i64>(7)? as usize,
                    epochs_done: r.get::<_, i64>(8)? as usize,
                    config_hash: r.get(9)?,
                    last_eval: Vec::new(),
                })
            })
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(self.err())?;
        let mut evals = self
            .conn
            .prepare(
                "SELECT epoch, protocol, k, top1 FROM evaluations WHERE run_id = ?1
                 AND epoch = (SELECT max(epoch) FROM evaluations WHERE run_id = ?1) ORDER BY protocol, k",
            )
            .map_err(self.err())?;
        for row in &mut rows {
            row.last_eval = evals
                .query_map(params![row.id], |r| {
                    let protocol: String = r.get(1)?;
                    let name = match protocol.as_str() {
                        "knn-euclidean" | "knn-cosine" => format!("{}-NN", r.get::<_, i64>(2)?),
                        other => other.to_string(),
                    };
                    Ok((r.get::<_, i64>(0)? as usize, name, r.get::<_, f64>(3)?))
                })
                .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(self.err())?;
        }
        let mut pending = self
            .conn
            .prepare(
                "SELECT experiment, profile, label, config_hash, config_json FROM planned_runs p
                 WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.config_hash = p.config_hash)
                   AND (?1 IS NULL OR p.experiment = ?1)
                 ORDER BY experiment, profile, rowid",
            )
            .map_err(self.err())?;
        let planned = pending
            .query_map(params![experiment], |r| {
                let config: String = r.get(4)?;
                let epochs = serde_json::from_str::<RunSpec>(&config).map_or(0, |s| s.train.epochs);
                Ok(RunRow {
                    id: None,
                    experiment: r.get(0)?,
                    profile: r.get(1)?,
                    label: r.get(2)?,
                    status: "pending".into(),
                    detail: None,
                    epochs,
                    epochs_done: 0,
                    config_hash: r.get(3)?,
                    last_eval: Vec::new(),
                })
            })
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(self.err())?;
        rows.extend(planned);
        Ok(rows)
    }

    /// Copy into this database what `other` holds that this one lacks, run by run (by config
    /// hash): a run complete here (finished or diverged) is kept; otherwise the other's row
    /// replaces this one's when it is further along (complete, or more epochs), with its epochs,
    /// terms and evaluations. Experiments, profiles, references and plans are united. Merging
    /// the same file twice changes nothing.
    pub fn merge_from(&self, other: &Path) -> Result<MergeStats> {
        if !other.is_file() {
            return Err(Error::File { path: other.to_path_buf(), what: "no such results database".into() });
        }
        // Opening checks (and migrates) the other file's schema before anything is copied.
        let src = Store::open(other)?;
        let mut stats = MergeStats::default();
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let src_err = |source| Error::Store { path: other.to_path_buf(), source };
        let runs: Vec<(i64, String, String, i64)> = src
            .conn
            .prepare(
                "SELECT r.id, r.config_hash, r.status, (SELECT count(*) FROM epochs e WHERE e.run_id = r.id)
                 FROM runs r WHERE r.id = (SELECT max(id) FROM runs WHERE config_hash = r.config_hash) ORDER BY r.id",
            )
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
            .map_err(src_err)?;
        let rank = |status: &str, epochs: i64| -> (i64, i64) {
            match status {
                "finished" | "diverged" => (3, epochs),
                "skipped" => (0, 0),
                _ => (1, epochs),
            }
        };
        for (src_id, hash, status, epochs) in runs {
            let here: Option<(i64, String, i64)> = tx
                .query_row(
                    "SELECT r.id, r.status, (SELECT count(*) FROM epochs e WHERE e.run_id = r.id) FROM runs r
                     WHERE r.config_hash = ?1 ORDER BY r.id DESC LIMIT 1",
                    params![hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(self.err())?;
            if let Some((_, here_status, here_epochs)) = &here {
                if rank(here_status, *here_epochs) >= rank(&status, epochs) {
                    stats.kept += 1;
                    continue;
                }
                let ids: Vec<i64> = tx
                    .prepare("SELECT id FROM runs WHERE config_hash = ?1")
                    .and_then(|mut s| s.query_map(params![hash], |r| r.get(0))?.collect())
                    .map_err(self.err())?;
                for id in ids {
                    for table in ["epoch_terms", "evaluations", "epochs"] {
                        tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), params![id])
                            .map_err(self.err())?;
                    }
                    tx.execute("DELETE FROM runs WHERE id = ?1", params![id]).map_err(self.err())?;
                }
                stats.replaced += 1;
            } else {
                stats.copied += 1;
            }
            copy_run(&src.conn, &tx, src_id).map_err(|source| Error::Store { path: other.to_path_buf(), source })?;
        }
        for (table, cols) in [
            ("experiments", "name, title, paper, reproduces, axes_json, updated_at"),
            ("profiles", "experiment, profile, about"),
            ("planned_runs", "config_hash, experiment, profile, label, grid_json, config_json"),
            ("reference_values", "experiment, at_json, metric, value, source"),
        ] {
            let n = cols.split(',').count();
            let rows: Vec<Vec<rusqlite::types::Value>> = src
                .conn
                .prepare(&format!("SELECT {cols} FROM {table}"))
                .and_then(|mut s| {
                    s.query_map([], |r| (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i)).collect())?.collect()
                })
                .map_err(src_err)?;
            let marks = (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
            for row in rows {
                tx.execute(
                    &format!("INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})"),
                    rusqlite::params_from_iter(row),
                )
                .map_err(self.err())?;
            }
        }
        tx.commit().map_err(self.err())?;
        Ok(stats)
    }

    /// The connection, for read-only queries (tests, the CLI's summaries).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Dataset, Method};

    #[test]
    fn schema_round_trip_and_completion_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.sqlite");
        let store = Store::open(&path).unwrap();
        let spec = RunSpec::defaults(Method::Vicreg, Dataset::Cifar10);
        let id = store.start_run(&spec, "test", "machine").unwrap();
        assert_eq!(store.completed_run(&spec.hash()).unwrap(), None);
        let e = EpochRecord {
            epoch: 1,
            loss: 2.5,
            lr: 0.1,
            images_per_second: 10.0,
            wall_seconds: 3.0,
            terms: vec![("invariance".into(), 0.5)],
        };
        store.record_epoch(id, &e).unwrap();
        assert!(store.record_epoch(id, &e).is_err(), "an epoch is recorded once");
        store
            .record_eval(
                id,
                &EvalRecord {
                    epoch: 1,
                    protocol: "knn-cosine".into(),
                    k: 200,
                    top1: 40.0,
                    top5: 80.0,
                    bank_size: 1000,
                    test_size: 100,
                },
            )
            .unwrap();
        store.finish_run(id, RunStatus::Finished, None).unwrap();
        assert_eq!(store.completed_run(&spec.hash()).unwrap(), Some((id, "finished".into())));
        drop(store);
        // Reopening keeps everything and does not recreate the schema.
        let store = Store::open(&path).unwrap();
        let n: i64 = store.connection().query_row("SELECT count(*) FROM epoch_terms", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }

    /// Resuming drops what came after the checkpoint, terms before their epochs (the foreign
    /// key), and from no checkpoint at all drops everything.
    #[test]
    fn resume_drops_rows_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.sqlite")).unwrap();
        let spec = RunSpec::defaults(Method::Vicreg, Dataset::Cifar10);
        let id = store.start_run(&spec, "v", "m").unwrap();
        for epoch in 1..=3 {
            let terms = vec![("loss.x".to_string(), 1.0)];
            let e = EpochRecord { epoch, loss: 1.0, lr: 0.1, images_per_second: 1.0, wall_seconds: 1.0, terms };
            store.record_epoch(id, &e).unwrap();
        }
        let count = |t: &str| -> i64 {
            store.connection().query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap()
        };
        store.resume_run(id, Some(2)).unwrap();
        assert_eq!((count("epochs"), count("epoch_terms"), store.last_recorded_epoch(id).unwrap()), (2, 2, 2));
        store.resume_run(id, None).unwrap();
        assert_eq!((count("epochs"), count("epoch_terms"), store.last_recorded_epoch(id).unwrap()), (0, 0, 0));
    }

    #[test]
    fn a_version_1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite");
        {
            // The version-1 schema: `runs` without `grid_json` and without the `skipped` status.
            let c = Connection::open(&path).unwrap();
            let v1 = SCHEMA.replace(", 'skipped')", ")").replace(",\n    grid_json     TEXT NOT NULL DEFAULT '{}'", "");
            assert!(!v1.contains("grid_json") && !v1.contains("skipped"));
            c.execute_batch(&v1).unwrap();
            c.execute_batch(
                "INSERT INTO runs (id, experiment, profile, method, dataset, seed, epochs, config_json, config_hash,
                                   status, started_at, code_version, machine)
                 VALUES (7, 'smoke', 'smoke', 'vicreg', 'cifar10', 0, 2, '{}', 'h', 'finished', 'now', 'v', 'm');
                 INSERT INTO epochs VALUES (7, 1, 2.5, 0.1, 10.0, 3.0);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let c = store.connection();
        assert_eq!(c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).unwrap(), SCHEMA_VERSION);
        let (id, grid): (i64, String) = c
            .query_row("SELECT id, grid_json FROM runs WHERE config_hash = 'h'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((id, grid.as_str()), (7, "{}"), "ids and rows kept");
        assert_eq!(store.completed_run("h").unwrap(), Some((7, "finished".into())));
        let spec = RunSpec::defaults(Method::Vicreg, Dataset::Cifar10);
        store.skip_run(&spec, "dataset not found", "v", "m").unwrap();
        // Foreign keys still point at the rebuilt table.
        assert!(c.execute("INSERT INTO epochs VALUES (999, 1, 1.0, 0.1, 1.0, 1.0)", []).is_err());
        store
            .record_epoch(
                7,
                &EpochRecord { epoch: 2, loss: 1.0, lr: 0.1, images_per_second: 1.0, wall_seconds: 1.0, terms: vec![] },
            )
            .unwrap();
        let rows = store.run_rows(None).unwrap();
        let mut statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
        statuses.sort();
        assert_eq!(statuses, ["finished", "skipped"]);
        assert_eq!(rows.iter().find(|r| r.status == "finished").unwrap().epochs_done, 2);
    }

    #[test]
    fn newer_schema_is_refused_and_stale_runs_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let store = Store::open(&path).unwrap();
        let spec = RunSpec::defaults(Method::Vicreg, Dataset::Cifar10);
        store.start_run(&spec, "v", "m").unwrap();
        assert_eq!(store.mark_interrupted(&spec.hash()).unwrap(), 1);
        store.connection().pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}
