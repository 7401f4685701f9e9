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

pub const SCHEMA_VERSION: i64 = 1;

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
    status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'diverged', 'failed', 'interrupted')),
    status_detail TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    code_version  TEXT NOT NULL,
    machine       TEXT NOT NULL
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

/// Status values of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Finished,
    Diverged,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
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
                tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err)?;
                tx.commit().map_err(err)?;
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
        for table in ["epochs", "epoch_terms", "evaluations"] {
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

    /// Insert a run in status `running`; returns its id.
    pub fn start_run(&self, spec: &RunSpec, code_version: &str, machine: &str) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (experiment, profile, method, dataset, seed, epochs, config_json, config_hash,
                                   status, started_at, code_version, machine)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?9, ?10)",
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
                    machine
                ],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
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
