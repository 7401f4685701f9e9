//! Writers: a run's life (started, resumed, epoch by epoch, evaluated, ended or skipped) and what
//! an experiment is and plans. Each call is one transaction, so a crash leaves whole epochs and
//! whole evaluations, never half of one.

use rusqlite::params;

use super::rows::{grid_json, EpochRecord, EvalRecord, Experiment, PlannedRecord, RunStatus, StepRecord};
use super::{schema, Store};
use crate::checkpoint::Position;
use crate::config::RunConfig;
use crate::experiment::ExperimentFile;
use crate::plan::PlannedRun;
use crate::Result;

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl Store {
    /// Insert a run in status `running`; returns its id.
    pub fn start_run(&self, config: &RunConfig, code_version: &str, machine: &str) -> Result<i64> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        self.insert_run(&tx, config, RunStatus::Running, None, code_version, machine)?;
        let id = tx.last_insert_rowid();
        // A run that starts replaces the record of its earlier skip.
        tx.execute("DELETE FROM runs WHERE config_hash = ?1 AND status = 'skipped'", params![config.hash()])
            .map_err(self.err())?;
        tx.commit().map_err(self.err())?;
        Ok(id)
    }

    /// Record that a run could not start for a reason outside it (its dataset is not on disk):
    /// one `skipped` row per configuration, its reason updated, removed once the run starts.
    pub fn skip_run(&self, config: &RunConfig, reason: &str, code_version: &str, machine: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        tx.execute("DELETE FROM runs WHERE config_hash = ?1 AND status = 'skipped'", params![config.hash()])
            .map_err(self.err())?;
        self.insert_run(&tx, config, RunStatus::Skipped, Some(reason), code_version, machine)?;
        tx.commit().map_err(self.err())
    }

    /// A row of `runs` for `config`, started now (and ended now unless it is running).
    pub(super) fn insert_run(
        &self,
        tx: &rusqlite::Transaction,
        config: &RunConfig,
        status: RunStatus,
        detail: Option<&str>,
        code_version: &str,
        machine: &str,
    ) -> Result<()> {
        let finished_at = if status == RunStatus::Running { "NULL" } else { NOW };
        // A running row is leased to this process (see `lease.rs`).
        let owner = (status == RunStatus::Running).then(super::lease::this_process);
        tx.execute(
            &format!(
                "INSERT INTO runs (experiment, profile, method, dataset, seed, epochs, config_json, config_hash,
                                   status, status_detail, started_at, finished_at, code_version, machine, grid_json,
                                   owner, heartbeat_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, {NOW}, {finished_at}, ?11, ?12, ?13, ?14, {NOW})"
            ),
            params![
                config.experiment,
                config.profile,
                config.method.name(),
                config.dataset.name(),
                config.seed as i64,
                config.train.epochs as i64,
                config.canonical_json(),
                config.hash(),
                status.as_str(),
                detail,
                code_version,
                machine,
                grid_json(config),
                owner
            ],
        )
        .map(|_| ())
        .map_err(self.err())
    }

    /// Take up an unfinished run again from its checkpoint at `position`, or from the start when
    /// there is none: drop what was recorded after that point (work the checkpoint does not
    /// hold: later epochs, their evaluations, steps past the checkpoint's) and mark it `running`
    /// again, in one transaction. A run stays one row however often it is interrupted.
    pub fn resume_run(&self, run_id: i64, position: Option<Position>) -> Result<()> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let (epochs_kept, steps_kept) = position.map_or((-1, -1), |p| (p.epoch as i64, p.step as i64));
        // Referencing tables first: terms reference their epoch's or step's row.
        for table in schema::per_run_tables().rev() {
            let (column, kept) =
                if table.column_names().any(|c| c == "step") { ("step", steps_kept) } else { ("epoch", epochs_kept) };
            tx.execute(
                &format!("DELETE FROM {} WHERE run_id = ?1 AND {column} > ?2", table.name),
                params![run_id, kept],
            )
            .map_err(self.err())?;
        }
        let detail = match position {
            Some(p) => match p.in_epoch {
                Some(s) => format!("resumed in epoch {} at step {s}", p.epoch + 1),
                None => format!("resumed after epoch {}", p.epoch),
            },
            None => "restarted: the interrupted attempt left no checkpoint".to_string(),
        };
        tx.execute("UPDATE runs SET status = 'running', status_detail = ?2 WHERE id = ?1", params![run_id, detail])
            .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Record an experiment file's description, its profiles, the paper's numbers and the runs
    /// a `reproduce` planned (see [`Store::write_experiment`]).
    pub fn record_experiment(&self, file: &ExperimentFile, plan: &[PlannedRun]) -> Result<()> {
        let planned: Vec<PlannedRecord> = plan.iter().map(PlannedRecord::from).collect();
        self.write_experiment(&Experiment::from_file(file), &planned)
    }

    /// Write an experiment, replacing what was recorded for it before (the plan's rows are
    /// added to, so shards and profiles accumulate; a configuration planned again keeps its place,
    /// so the first plan recorded for a grid cell stays first: `infomax status` compares with it).
    pub fn write_experiment(&self, e: &Experiment, planned: &[PlannedRecord]) -> Result<()> {
        let name = &e.name;
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        tx.execute(
            &format!(
                "INSERT INTO experiments (name, title, paper, reproduces, axes_json, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, {NOW})
                 ON CONFLICT (name) DO UPDATE SET title = ?2, paper = ?3, reproduces = ?4, axes_json = ?5,
                                                  updated_at = excluded.updated_at"
            ),
            params![name, e.title, e.paper, e.reproduces, e.grid_json()],
        )
        .map_err(self.err())?;
        tx.execute("DELETE FROM profiles WHERE experiment = ?1", params![name]).map_err(self.err())?;
        for (profile, about) in &e.profiles {
            let deviations: Vec<&super::rows::Deviation> =
                e.deviations.iter().filter(|(p, _)| p == profile).map(|(_, d)| d).collect();
            let json = serde_json::to_string(&deviations).expect("deviations serialise");
            let recipes: Vec<&super::rows::Recipe> =
                e.recipes.iter().filter(|(p, _)| p == profile).map(|(_, r)| r).collect();
            let recipes = serde_json::to_string(&recipes).expect("recipes serialise");
            tx.execute(
                "INSERT INTO profiles (experiment, profile, about, deviations_json, recipes_json)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, profile, about, json, recipes],
            )
            .map_err(self.err())?;
        }
        tx.execute("DELETE FROM reference_values WHERE experiment = ?1", params![name]).map_err(self.err())?;
        for r in &e.references {
            let at = serde_json::to_string(&r.at).expect("a map of strings serialises");
            tx.execute(
                "INSERT OR REPLACE INTO reference_values (experiment, at_json, metric, value, source)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, at, r.metric, r.value, r.source],
            )
            .map_err(self.err())?;
        }
        for p in planned {
            tx.execute(
                "INSERT INTO planned_runs (config_hash, experiment, profile, label, grid_json, config_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (config_hash) DO UPDATE SET experiment = ?2, profile = ?3, label = ?4, grid_json = ?5,
                                                         config_json = ?6",
                params![
                    p.config_hash,
                    p.config.experiment,
                    p.config.profile,
                    p.label,
                    grid_json(&p.config),
                    p.config.canonical_json()
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

    /// Record steps of a run, in one transaction.
    pub fn record_steps(&self, run_id: i64, steps: &[StepRecord]) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        {
            let mut step = tx
                .prepare_cached(
                    "INSERT INTO steps (run_id, step, epoch, loss, lr, images_per_second) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(self.err())?;
            let mut term = tx
                .prepare_cached("INSERT INTO step_terms (run_id, step, name, value) VALUES (?1, ?2, ?3, ?4)")
                .map_err(self.err())?;
            for s in steps {
                step.execute(params![run_id, s.step as i64, s.epoch as i64, s.loss, s.lr, s.images_per_second])
                    .map_err(self.err())?;
                for (name, value) in &s.terms {
                    term.execute(params![run_id, s.step as i64, name, value]).map_err(self.err())?;
                }
            }
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
                    e.k.map(|k| k as i64),
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
                &format!("UPDATE runs SET status = ?2, status_detail = ?3, finished_at = {NOW} WHERE id = ?1"),
                params![run_id, status.as_str(), detail],
            )
            .map(|_| ())
            .map_err(self.err())
    }
}
