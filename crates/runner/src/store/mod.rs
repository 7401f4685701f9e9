//! The results store: one SQLite file (default `reports/results.sqlite`), the single source of
//! truth for runs, per-epoch metrics and evaluations. HTML is a view of it.
//!
//! This module owns the database: its schema, defined once in [`schema`] with the migrations
//! generated from it; the typed rows ([`rows`]); and every reader and writer (`read.rs`,
//! `write.rs`, `merge.rs`, `status.rs`). Nothing else in infomax writes SQL against the file;
//! the report reads it through [`Store::open_read_only`] and the readers, so a run's
//! configuration comes back as a [`crate::RunConfig`] and a renamed field fails to compile rather
//! than go missing from a page.
//!
//! The schema version lives in `PRAGMA user_version`; an older file is migrated forward on
//! opening, a file from a newer infomax is refused rather than misread.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::{Error, Result};

pub mod lease;
mod merge;
mod migrate;
mod read;
pub mod rows;
pub mod schema;
mod status;
mod write;

pub use merge::MergeStats;
pub use rows::{
    label, run_label, variant_label, variant_of, EpochRecord, EvalRecord, Exclusion, Experiment, GridAxis, Metric,
    PlannedRecord, ReferenceValue, RunRecord, RunStatus, StepRecord,
};
pub use schema::SCHEMA_VERSION;
pub use status::{FromPlan, RunRow};

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open (creating the file, its folder and the schema on first use; migrating an older
    /// schema forward).
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        let err = |source| Error::Store { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        let store = Self { conn, path: path.to_path_buf() };
        let v = store.version()?;
        if v > SCHEMA_VERSION {
            return Err(store.newer(v));
        }
        if v < SCHEMA_VERSION {
            // Foreign keys off while tables are rebuilt (the others keep pointing at them by
            // name); the pragma cannot change inside a transaction.
            store.conn.pragma_update(None, "foreign_keys", "OFF").map_err(err)?;
            store.create_or_migrate()?;
        }
        store.conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        Ok(store)
    }

    /// Create the schema in a new file or migrate an older one, under the database's write lock:
    /// the version is read again inside it, so processes opening one file at once do it once.
    fn create_or_migrate(&self) -> Result<()> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let v: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(self.err())?;
        match v {
            0 => tx.execute_batch(&schema::create_sql(SCHEMA_VERSION)).map_err(self.err())?,
            v if v >= SCHEMA_VERSION => return Ok(()),
            v => {
                for from in v..SCHEMA_VERSION {
                    tx.execute_batch(&schema::migration_sql(from)).map_err(self.err())?;
                    if from + 1 == 3 {
                        migrate::to_version_3(&tx, &self.path, &self.checkpoints())?;
                    }
                }
            }
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Open an existing database to read it (a report): no file is created, nothing migrated,
    /// and a file at another schema version is refused.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::StoreSchema {
                path: path.to_path_buf(),
                what: "no such file; run `infomax reproduce` first or pass --db".into(),
            });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| Error::Store { path: path.to_path_buf(), source })?;
        let store = Self { conn, path: path.to_path_buf() };
        match store.version()? {
            SCHEMA_VERSION => Ok(store),
            v if v > SCHEMA_VERSION => Err(store.newer(v)),
            v => Err(Error::StoreSchema {
                path: path.to_path_buf(),
                what: format!(
                    "schema version {v}, this infomax reads version {SCHEMA_VERSION}; any command that writes to \
                     it (e.g. `infomax status`) upgrades it"
                ),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder of this database's per-run checkpoints (`results.sqlite` →
    /// `results.checkpoints/`, holding `<config hash>/`): each database has its own, so two
    /// databases never read each other's.
    pub fn checkpoints(&self) -> PathBuf {
        checkpoints_of(&self.path)
    }

    /// The connection, for tests that look at or alter a database directly.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |source| Error::Store { path: self.path.clone(), source }
    }

    fn version(&self) -> Result<i64> {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(self.err())
    }

    fn newer(&self, v: i64) -> Error {
        Error::StoreSchema {
            path: self.path.clone(),
            what: format!(
                "schema version {v}, this infomax reads version {SCHEMA_VERSION}; use the infomax that wrote it"
            ),
        }
    }
}

/// The checkpoint folder of the database at `db` (see [`Store::checkpoints`]).
pub fn checkpoints_of(db: &Path) -> PathBuf {
    db.with_extension("checkpoints")
}

/// The TensorBoard folder of the database at `db`, beside its checkpoints (`results.sqlite` →
/// `results.tensorboard/`), so `tensorboard --logdir` on the database's folder shows its runs.
pub fn tensorboard_of(db: &Path) -> PathBuf {
    db.with_extension("tensorboard")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dataset, Method, RunConfig};

    #[test]
    fn schema_round_trip_and_completion_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.sqlite");
        let store = Store::open(&path).unwrap();
        let config = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        let id = store.start_run(&config, "test", "machine").unwrap();
        assert_eq!(store.completed_run(&config.hash()).unwrap(), None);
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
                    k: Some(200),
                    top1: 40.0,
                    top5: 80.0,
                    bank_size: 1000,
                    test_size: 100,
                },
            )
            .unwrap();
        store.finish_run(id, RunStatus::Finished, None).unwrap();
        assert_eq!(store.completed_run(&config.hash()).unwrap(), Some((id, "finished".into())));
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
        let config = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        let id = store.start_run(&config, "v", "m").unwrap();
        for epoch in 1..=3 {
            let terms = vec![("loss.x".to_string(), 1.0)];
            let e = EpochRecord { epoch, loss: 1.0, lr: 0.1, images_per_second: 1.0, wall_seconds: 1.0, terms };
            store.record_epoch(id, &e).unwrap();
        }
        let count = |t: &str| -> i64 {
            store.connection().query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap()
        };
        store.resume_run(id, Some(crate::checkpoint::Position::epoch_end(2, 20))).unwrap();
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
            let v1 = schema::create_sql(1);
            assert!(!v1.contains("grid_json") && !v1.contains("skipped"));
            c.execute_batch(&v1).unwrap();
            c.execute(
                "INSERT INTO runs (id, experiment, profile, method, dataset, seed, epochs, config_json, config_hash,
                                   status, started_at, code_version, machine)
                 VALUES (7, 'smoke', 'smoke', 'vicreg', 'cifar10', 0, 2, ?1, 'h', 'finished', 'now', 'v', 'm')",
                [RunConfig::defaults(Method::Vicreg, Dataset::Cifar10).canonical_json()],
            )
            .unwrap();
            c.execute_batch("INSERT INTO epochs VALUES (7, 1, 2.5, 0.1, 10.0, 3.0); PRAGMA user_version = 1;").unwrap();
        }
        let hash = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10).hash();
        let store = Store::open(&path).unwrap();
        let c = store.connection();
        assert_eq!(c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).unwrap(), SCHEMA_VERSION);
        let (id, grid): (i64, String) = c
            .query_row("SELECT id, grid_json FROM runs WHERE config_hash = ?1", [&hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((id, grid.as_str()), (7, "{}"), "ids and rows kept");
        assert_eq!(store.completed_run(&hash).unwrap(), Some((7, "finished".into())));
        let mut config = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        config.seed = 1;
        store.skip_run(&config, "dataset not found", "v", "m").unwrap();
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
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let store = Store::open(&path).unwrap();
        let config = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        store.start_run(&config, "v", "m").unwrap();
        store.connection().pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    /// SQL as SQLite keeps it, without comments or layout.
    fn normalise(sql: &str) -> String {
        let code: Vec<&str> = sql.lines().map(|l| l.split("--").next().unwrap_or_default()).collect();
        let words = code.join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
        // A rebuilt table keeps the quotes of its rename: `CREATE TABLE "runs"`.
        let words = words.replace("( ", "(").replace(" )", ")").replace(" ,", ",");
        match words.strip_prefix("CREATE TABLE \"").and_then(|rest| rest.split_once('"')) {
            Some((name, rest)) => format!("CREATE TABLE {name}{rest}"),
            None => words,
        }
    }

    /// A database infomax wrote at version 2 (`tests/data/results-v2.sqlite`: `table1` under
    /// `smoke` with SimCLR on CIFAR-10 finished, on STL-10 skipped, W-MSE 2 on CIFAR-10 left
    /// running after an epoch with a checkpoint, on STL-10 planned) is migrated: its tables are
    /// the generated ones to the letter; every configuration gets its numbers as written and its
    /// new hash, its checkpoint folder follows it, and training goes on in it.
    #[test]
    fn a_version_2_database_is_migrated_to_numbers_as_written_and_new_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.sqlite");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/results-v2.sqlite"), &path).unwrap();
        let old: Vec<(i64, String, String)> = {
            let c = Connection::open(&path).unwrap();
            let mut s = c.prepare("SELECT id, config_hash, config_json FROM runs ORDER BY id").unwrap();
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
            rows.map(|r| r.unwrap()).collect()
        };
        assert!(old[0].2.contains("0.4000000059604645") && old[0].2.contains("one_d_lr_factor"));
        // The running run's checkpoint, under its version-2 hash.
        let running_old_hash = old[2].1.clone();
        let ckpt = checkpoints_of(&path).join(&running_old_hash);
        std::fs::create_dir_all(&ckpt).unwrap();
        let meta = format!(r#"{{"format":1,"config_hash":"{running_old_hash}","position":{{"epoch":1,"step":4}}}}"#);
        std::fs::write(ckpt.join("latest.json"), &meta).unwrap();
        std::fs::write(ckpt.join("epoch-1.json"), &meta).unwrap();

        let schema_of = |p: &Path| -> Vec<(String, String)> {
            let c = Connection::open_with_flags(p, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            let mut s = c.prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").unwrap();
            let rows = s.query_map([], |r| Ok((r.get(0)?, normalise(&r.get::<_, String>(1)?))));
            rows.unwrap().map(|r| r.unwrap()).collect()
        };
        let fresh = dir.path().join("fresh.sqlite");
        Store::open(&fresh).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(schema_of(&path), schema_of(&fresh));
        assert_eq!(store.version().unwrap(), SCHEMA_VERSION);

        let runs = store.runs().unwrap();
        let planned = store.planned_runs().unwrap();
        assert_eq!((runs.len(), planned.len()), (3, 4));
        for (hash, config) in
            runs.iter().map(|r| (&r.config_hash, &r.config)).chain(planned.iter().map(|p| (&p.config_hash, &p.config)))
        {
            assert_eq!(&config.hash(), hash, "the run's identity holds");
        }
        for ((id, old_hash, _), run) in old.iter().zip(&runs) {
            assert_eq!(*id, run.id, "ids kept");
            assert_ne!(old_hash, &run.config_hash, "a new identity");
            assert!(planned.iter().any(|p| p.config_hash == run.config_hash), "the plan follows the run");
        }
        // Numbers as written, so SQL compares with what a file says.
        let c = store.connection();
        let json: String =
            c.query_row("SELECT config_json FROM runs WHERE id = ?1", [runs[0].id], |r| r.get(0)).unwrap();
        assert!(!json.contains("0.4000000059604645") && !json.contains("one_d_lr_factor"), "{json}");
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM runs WHERE json_extract(config_json, '$.augment.view_a.color_jitter.brightness') = 0.4",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 3);
        // The linear probe has no k.
        let linear_k: Vec<Option<i64>> = {
            let mut s = c.prepare("SELECT k FROM evaluations WHERE protocol = 'linear'").unwrap();
            s.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        assert!(!linear_k.is_empty() && linear_k.iter().all(Option::is_none), "{linear_k:?}");

        let e = &store.experiments().unwrap()[0];
        assert_eq!((e.name.as_str(), e.axes.len(), e.profiles.is_empty()), ("table1", 2, false));
        let statuses: Vec<String> = store.run_rows(None).unwrap().into_iter().map(|r| r.status).collect();
        // The run left `running` by a process long gone (it holds no lease) reads interrupted.
        assert_eq!(statuses, ["finished", "skipped", "interrupted", "pending"]);
        assert_eq!(store.epochs().unwrap()[&runs[0].id].len(), 2);
        assert_eq!(store.completed_run(&runs[0].config_hash).unwrap(), Some((runs[0].id, "finished".into())));
        let running = &runs[2];
        assert_eq!(store.unfinished_run(&running.config_hash).unwrap(), Some(running.id));
        // Its checkpoint moved with it and names the new hash.
        let moved = crate::checkpoint::dir_for(&store.checkpoints(), &running.config_hash);
        assert!(!ckpt.exists());
        assert_eq!(crate::checkpoint::latest(&moved, &running.config_hash).unwrap().map(|p| p.step), Some(4));
        let e = EpochRecord { epoch: 2, loss: 1.0, lr: 0.1, images_per_second: 1.0, wall_seconds: 1.0, terms: vec![] };
        store.record_epoch(running.id, &e).unwrap();
        store.finish_run(running.id, RunStatus::Finished, None).unwrap();
        assert_eq!(store.last_recorded_epoch(running.id).unwrap(), 2);
    }
}
