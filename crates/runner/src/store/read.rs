//! Readers: whole tables as typed rows (what a report needs, read in a few passes), and the
//! lookups training and the CLI make. A run's configuration that does not parse as a
//! [`RunConfig`] is an error naming the database, the run and serde's complaint.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Row};

use super::lease::{shown_status, HEARTBEAT_AGE};
use super::rows::{
    Deviation, EpochRecord, EvalRecord, Experiment, PlannedRecord, Recipe, ReferenceValue, RunRecord, StepRecord,
};
use super::Store;
use crate::config::RunConfig;
use crate::{Error, Result};

impl Store {
    fn schema_error(&self, what: String) -> Error {
        Error::StoreSchema { path: self.path.clone(), what }
    }

    /// Every experiment with its grid, profiles and the papers' numbers, by name.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        let mut profiles: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut deviations: HashMap<String, Vec<(String, Deviation)>> = HashMap::new();
        let mut recipes: HashMap<String, Vec<(String, Recipe)>> = HashMap::new();
        for (e, profile, about, json, recipes_json) in self.rows(
            "SELECT experiment, profile, about, deviations_json, recipes_json FROM profiles ORDER BY rowid",
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )? {
            let listed: Vec<Deviation> = serde_json::from_str(&json)
                .map_err(|x| self.schema_error(format!("profiles.deviations_json of {e}/{profile}: {x}")))?;
            deviations.entry(e.clone()).or_default().extend(listed.into_iter().map(|d| (profile.clone(), d)));
            let listed: Vec<Recipe> = serde_json::from_str(&recipes_json)
                .map_err(|x| self.schema_error(format!("profiles.recipes_json of {e}/{profile}: {x}")))?;
            recipes.entry(e.clone()).or_default().extend(listed.into_iter().map(|r| (profile.clone(), r)));
            profiles.entry(e).or_default().push((profile, about));
        }
        let mut references: HashMap<String, Vec<ReferenceValue>> = HashMap::new();
        for (e, at, metric, value, source) in self
            .rows("SELECT experiment, at_json, metric, value, source FROM reference_values ORDER BY rowid", |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
        {
            let at = serde_json::from_str(&at)
                .map_err(|x| self.schema_error(format!("reference_values.at_json of {e}: {x}")))?;
            references.entry(e).or_default().push(ReferenceValue { at, metric, value, source });
        }
        let rows = self
            .rows("SELECT name, title, paper, reproduces, axes_json FROM experiments ORDER BY name", |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
            })?;
        rows.into_iter()
            .map(|(name, title, paper, reproduces, axes_json)| {
                let (axes, exclusions) = Experiment::parse_grid(&axes_json)
                    .map_err(|x| self.schema_error(format!("experiments.axes_json of {name}: {x}")))?;
                Ok(Experiment {
                    profiles: profiles.remove(&name).unwrap_or_default(),
                    recipes: recipes.remove(&name).unwrap_or_default(),
                    deviations: deviations.remove(&name).unwrap_or_default(),
                    references: references.remove(&name).unwrap_or_default(),
                    name,
                    title,
                    paper,
                    reproduces,
                    axes,
                    exclusions,
                })
            })
            .collect()
    }

    /// Every row of `runs` (every attempt), by id.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let rows = self.rows(
            &format!(
                "SELECT id, config_json, config_hash, status, status_detail, started_at, finished_at, code_version,
                        machine, (julianday(finished_at) - julianday(started_at)) * 86400.0, owner, {HEARTBEAT_AGE}
                 FROM runs ORDER BY id"
            ),
            |r| {
                let (status, detail) =
                    shown_status(r.get(3)?, r.get(4)?, r.get::<_, Option<String>>(10)?.as_deref(), r.get(11)?);
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    (r.get(2)?, status, detail, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?),
                    r.get(9)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(
                |(
                    id,
                    config,
                    (config_hash, status, detail, started_at, finished_at, code_version, machine),
                    elapsed,
                )| {
                    Ok(RunRecord {
                        id,
                        config: self.parse_config(&config, || format!("run {id}"))?,
                        config_hash,
                        status: status.parse().map_err(|x| self.schema_error(format!("run {id}: {x}")))?,
                        detail,
                        started_at,
                        finished_at,
                        code_version,
                        machine,
                        elapsed_seconds: elapsed,
                    })
                },
            )
            .collect()
    }

    /// Every row of `planned_runs`, by experiment and profile, in the order planned.
    pub fn planned_runs(&self) -> Result<Vec<PlannedRecord>> {
        let rows = self.rows(
            "SELECT config_hash, label, config_json FROM planned_runs ORDER BY experiment, profile, rowid",
            |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?)),
        )?;
        rows.into_iter()
            .map(|(config_hash, label, config)| {
                let config = self.parse_config(&config, || format!("planned run {config_hash}"))?;
                Ok(PlannedRecord { config_hash, label, config })
            })
            .collect()
    }

    /// Every recorded epoch with its terms (sorted by name), by run id, in epoch order.
    pub fn epochs(&self) -> Result<HashMap<i64, Vec<EpochRecord>>> {
        let mut epochs: HashMap<i64, Vec<EpochRecord>> = HashMap::new();
        for (run, e) in self.rows(
            "SELECT run_id, epoch, loss, lr, images_per_second, wall_seconds FROM epochs ORDER BY run_id, epoch",
            |r| {
                let epoch = EpochRecord {
                    epoch: r.get::<_, i64>(1)? as usize,
                    loss: r.get(2)?,
                    lr: r.get(3)?,
                    images_per_second: r.get(4)?,
                    wall_seconds: r.get(5)?,
                    terms: Vec::new(),
                };
                Ok((r.get::<_, i64>(0)?, epoch))
            },
        )? {
            epochs.entry(run).or_default().push(e);
        }
        for (run, epoch, name, value) in self
            .rows("SELECT run_id, epoch, name, value FROM epoch_terms ORDER BY run_id, epoch, name", |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as usize, r.get::<_, String>(2)?, r.get::<_, f64>(3)?))
            })?
        {
            if let Some(e) = epochs.get_mut(&run).and_then(|es| es.iter_mut().find(|e| e.epoch == epoch)) {
                e.terms.push((name, value));
            }
        }
        Ok(epochs)
    }

    /// The recorded steps of run `run_id`, in order, with their terms.
    pub fn steps_of(&self, run_id: i64) -> Result<Vec<StepRecord>> {
        let mut steps: Vec<StepRecord> = self.rows_with(
            "SELECT step, epoch, loss, lr, images_per_second FROM steps WHERE run_id = ?1 ORDER BY step",
            [run_id],
            |r| {
                Ok(StepRecord {
                    step: r.get::<_, i64>(0)? as usize,
                    epoch: r.get::<_, i64>(1)? as usize,
                    loss: r.get(2)?,
                    lr: r.get(3)?,
                    images_per_second: r.get(4)?,
                    terms: Vec::new(),
                })
            },
        )?;
        let terms: Vec<(usize, String, f64)> = self.rows_with(
            "SELECT step, name, value FROM step_terms WHERE run_id = ?1 ORDER BY step, name",
            [run_id],
            |r| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?, r.get(2)?)),
        )?;
        // Both are ordered by step: walk them together.
        let mut at = 0;
        for (step, name, value) in terms {
            while at < steps.len() && steps[at].step < step {
                at += 1;
            }
            if let Some(s) = steps.get_mut(at).filter(|s| s.step == step) {
                s.terms.push((name, value));
            }
        }
        Ok(steps)
    }

    /// Every evaluation, by run id, ordered by epoch, protocol and k.
    pub fn evaluations(&self) -> Result<HashMap<i64, Vec<EvalRecord>>> {
        let mut evaluations: HashMap<i64, Vec<EvalRecord>> = HashMap::new();
        for (run, e) in self.rows(
            "SELECT run_id, epoch, protocol, k, top1, top5, bank_size, test_size FROM evaluations
             ORDER BY run_id, epoch, protocol, k",
            |r| {
                let eval = EvalRecord {
                    epoch: r.get::<_, i64>(1)? as usize,
                    protocol: r.get(2)?,
                    k: r.get::<_, Option<i64>>(3)?.map(|k| k as usize),
                    top1: r.get(4)?,
                    top5: r.get(5)?,
                    bank_size: r.get::<_, i64>(6)? as usize,
                    test_size: r.get::<_, i64>(7)? as usize,
                };
                Ok((r.get::<_, i64>(0)?, eval))
            },
        )? {
            evaluations.entry(run).or_default().push(e);
        }
        Ok(evaluations)
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

    /// The last epoch recorded for a run (0 when none).
    pub fn last_recorded_epoch(&self, run_id: i64) -> Result<usize> {
        self.conn
            .query_row("SELECT COALESCE(MAX(epoch), 0) FROM epochs WHERE run_id = ?1", params![run_id], |r| {
                r.get::<_, i64>(0)
            })
            .map(|e| e as usize)
            .map_err(self.err())
    }

    /// The run `run` names, as `infomax status` prints it: its id (`12` or `#12`), or a prefix
    /// (6 or more hex digits) of its configuration hash (the latest row of that hash); with its
    /// status and configuration. Six or more decimal digits can be either: the one that exists
    /// is meant, and when both do, `#` or more digits must say which.
    pub fn find_run(&self, run: &str) -> Result<(i64, String, RunConfig)> {
        let sql = "SELECT id, status, config_json FROM runs";
        let get = |r: &Row| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?));
        let by_id = |id: i64| {
            self.conn.query_row(&format!("{sql} WHERE id = ?1"), params![id], get).optional().map_err(self.err())
        };
        let by_hash = |prefix: &str| -> Result<Vec<(i64, String, String)>> {
            self.conn
                .prepare(&format!(
                    "{sql} WHERE config_hash LIKE ?1 || '%'
                     AND id = (SELECT max(id) FROM runs r WHERE r.config_hash = runs.config_hash)"
                ))
                .and_then(|mut s| s.query_map(params![prefix.to_ascii_lowercase()], get)?.collect())
                .map_err(self.err())
        };
        let error = |what: String| Error::Run { run: run.into(), what };
        let no_id =
            |id: i64| error(format!("no run with id {id} in {}; `infomax status` lists them", self.path.display()));
        let one_of = |rows: Vec<(i64, String, String)>, prefix: &str| match rows.len() {
            1 => Ok(rows.into_iter().next().expect("one row")),
            0 => Err(error(format!("no run's hash starts with `{prefix}` in {}", self.path.display()))),
            n => Err(error(format!("{n} runs' hashes start with `{prefix}`; give more digits"))),
        };
        let (hash_sign, text) = match run.strip_prefix('#') {
            Some(id) => (true, id),
            None => (false, run),
        };
        let hex = !hash_sign && text.len() >= 6 && text.chars().all(|c| c.is_ascii_hexdigit());
        let (id, status, config) = match (text.parse::<i64>().ok(), hex) {
            (Some(id), false) => by_id(id)?.ok_or_else(|| no_id(id))?,
            (None, true) => one_of(by_hash(text)?, text)?,
            (Some(id), true) => match (by_id(id)?, by_hash(text)?) {
                (Some(row), hashes) if hashes.is_empty() => row,
                (None, hashes) => one_of(hashes, text)?,
                (Some(_), _) => {
                    return Err(error(format!(
                        "both run {id} and a run whose hash starts with `{text}` exist; write `#{id}` for the id, \
                         or more hex digits of the hash"
                    )))
                }
            },
            (None, false) => {
                return Err(error(
                    "a run id (`12` or `#12`) or 6 or more hex digits of its configuration hash expected".into(),
                ))
            }
        };
        let config = serde_json::from_str(&config).map_err(|e| Error::Run {
            run: run.into(),
            what: format!("its stored configuration does not parse: {e}"),
        })?;
        Ok((id, status, config))
    }

    /// The configuration and images per second of the latest `limit` epochs recorded on
    /// `machine` (newest first); epochs of configurations that no longer parse are left out.
    pub fn recent_throughput(&self, machine: &str, limit: usize) -> Result<Vec<(RunConfig, f64)>> {
        let rows = self.rows_with(
            "SELECT r.config_json, e.images_per_second FROM epochs e JOIN runs r ON r.id = e.run_id
             WHERE r.machine = ?1 ORDER BY r.id DESC, e.epoch DESC LIMIT ?2",
            params![machine, limit as i64],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)),
        )?;
        Ok(rows.into_iter().filter_map(|(json, ips)| Some((serde_json::from_str(&json).ok()?, ips))).collect())
    }

    /// A stored configuration, parsed; `which` names its row for the error.
    fn parse_config(&self, json: &str, which: impl Fn() -> String) -> Result<RunConfig> {
        serde_json::from_str(json).map_err(|e| {
            self.schema_error(format!("{}: its configuration does not parse as this infomax's: {e}", which()))
        })
    }

    /// Every row `sql` returns, mapped by `f`.
    pub(super) fn rows<T>(&self, sql: &str, f: impl FnMut(&Row) -> rusqlite::Result<T>) -> Result<Vec<T>> {
        self.rows_with(sql, [], f)
    }

    fn rows_with<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.conn.prepare(sql).and_then(|mut s| s.query_map(params, f)?.collect()).map_err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Dataset, Method};
    use crate::store::{Exclusion, GridAxis, RunStatus};

    fn config(method: Method, seed: u64) -> RunConfig {
        let mut s = RunConfig::defaults(method, Dataset::Cifar10);
        (s.experiment, s.profile, s.seed) = ("e".into(), "p".into(), seed);
        s.grid = BTreeMap::from([("method".to_string(), method.name().to_string())]);
        s
    }

    /// What the writers write, the readers return typed: configurations parsed, terms sorted
    /// by name, experiments with their grids, profiles and references.
    #[test]
    fn readers_return_what_the_writers_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.sqlite")).unwrap();
        let (a, b) = (config(Method::Simclr, 0), config(Method::Byol, 1));
        let id = store.start_run(&a, "v", "m").unwrap();
        let terms = vec![("loss.x".to_string(), 1.5), ("diag.y".to_string(), 2.5)];
        let e = EpochRecord { epoch: 1, loss: 1.0, lr: 0.1, images_per_second: 9.0, wall_seconds: 2.0, terms };
        store.record_epoch(id, &e).unwrap();
        let eval = EvalRecord {
            epoch: 1,
            protocol: "linear".into(),
            k: None,
            top1: 40.0,
            top5: 80.0,
            bank_size: 9,
            test_size: 3,
        };
        store.record_eval(id, &eval).unwrap();
        store.finish_run(id, RunStatus::Finished, None).unwrap();
        store.skip_run(&b, "no data", "v", "m").unwrap();
        let experiment = Experiment {
            name: "e".into(),
            title: "t".into(),
            paper: "p".into(),
            reproduces: "r".into(),
            axes: vec![GridAxis { name: "method".into(), values: vec!["simclr".into(), "byol".into()] }],
            exclusions: vec![Exclusion {
                matches: vec![("method".into(), vec!["byol".into()])],
                why: "w".into(),
                profiles: vec![],
            }],
            profiles: vec![("p".into(), "about".into())],
            recipes: vec![(
                "p".into(),
                Recipe {
                    matches: vec![("method".into(), vec!["simclr".into()])],
                    source: "repo abc123 main.py".into(),
                },
            )],
            deviations: vec![(
                "p".into(),
                Deviation {
                    matches: vec![("method".into(), vec!["simclr".into()])],
                    field: "train.precision".into(),
                    source: "fp16".into(),
                    ours: "bf16".into(),
                    why: "no fp16 here".into(),
                },
            )],
            references: vec![ReferenceValue {
                at: BTreeMap::from([("method".to_string(), "simclr".to_string())]),
                metric: "linear".into(),
                value: 91.8,
                source: "s".into(),
            }],
        };
        let planned = PlannedRecord { config_hash: b.hash(), label: "method=byol seed=1".into(), config: b.clone() };
        store.write_experiment(&experiment, std::slice::from_ref(&planned)).unwrap();

        assert_eq!(store.experiments().unwrap(), vec![experiment]);
        assert_eq!(store.planned_runs().unwrap(), vec![planned]);
        let runs = store.runs().unwrap();
        assert_eq!(
            runs.iter().map(|r| (&r.config, r.status)).collect::<Vec<_>>(),
            [(&a, RunStatus::Finished), (&b, RunStatus::Skipped)]
        );
        assert_eq!((runs[0].id, runs[0].config_hash.as_str(), runs[0].code_version.as_str()), (id, &*a.hash(), "v"));
        assert!(runs[0].elapsed_seconds.is_some_and(|s| (0.0..60.0).contains(&s)), "{:?}", runs[0].elapsed_seconds);
        let epochs = store.epochs().unwrap();
        let sorted = vec![("diag.y".to_string(), 2.5), ("loss.x".to_string(), 1.5)];
        assert_eq!(epochs[&id], vec![EpochRecord { terms: sorted, ..e }]);
        assert_eq!(epochs[&id][0].term("loss.x"), Some(1.5));
        assert_eq!(store.evaluations().unwrap()[&id], vec![eval]);
        let (found, status, found_config) = store.find_run(&a.hash()[..8]).unwrap();
        assert_eq!((found, status.as_str(), found_config), (id, "finished", a.clone()));
        for named in [id.to_string(), format!("#{id}")] {
            assert_eq!(store.find_run(&named).unwrap().0, id, "{named}");
        }
        assert!(store.find_run("#x").unwrap_err().to_string().contains("`#12`"));
        assert_eq!(store.recent_throughput("m", 20).unwrap(), vec![(a, 9.0)]);
        assert!(store.recent_throughput("elsewhere", 20).unwrap().is_empty());
    }

    /// What `infomax status` prints names a run: `#id`, and a hash prefix even when its digits
    /// are all decimal (then an id of the same number makes it ambiguous, and `#` decides).
    #[test]
    fn a_run_is_found_by_its_printed_id_or_a_decimal_looking_hash_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.sqlite")).unwrap();
        let (a, b) = (config(Method::Simclr, 0), config(Method::Simclr, 1));
        let a_id = store.start_run(&a, "v", "m").unwrap();
        let decimal = format!("12345678{}", &a.hash()[8..]);
        store.connection().execute("UPDATE runs SET config_hash = ?1 WHERE id = ?2", (&decimal, a_id)).unwrap();
        assert_eq!(store.find_run("12345678").unwrap().0, a_id);
        let b_id = store.start_run(&b, "v", "m").unwrap();
        store.connection().execute("UPDATE runs SET id = 123456 WHERE id = ?1", [b_id]).unwrap();
        let err = store.find_run("123456").unwrap_err().to_string();
        assert!(err.contains("write `#123456` for the id"), "{err}");
        assert_eq!(store.find_run("#123456").unwrap().2, b);
        assert_eq!(store.find_run("1234567").unwrap().0, a_id);
        let err = store.find_run("#999").unwrap_err().to_string();
        assert!(err.contains("no run with id 999"), "{err}");
    }

    /// A stored configuration this infomax cannot read is an error naming the file, the run and
    /// serde's message, not a run shown with defaults.
    #[test]
    fn a_configuration_that_does_not_parse_names_the_database_and_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let store = Store::open(&path).unwrap();
        let id = store.start_run(&config(Method::Vicreg, 0), "v", "m").unwrap();
        store.connection().execute("UPDATE runs SET config_json = '{\"seed\": 0}' WHERE id = ?1", [id]).unwrap();
        let err = store.runs().unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains(&format!("run {id}:")), "{err}");
        assert!(err.contains("missing field"), "{err}");
    }

    #[test]
    fn opening_to_read_refuses_missing_older_and_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sqlite");
        let err = Store::open_read_only(&missing).err().unwrap().to_string();
        assert!(err.contains("none.sqlite") && err.contains("no such file"), "{err}");
        assert!(!missing.exists(), "reading creates nothing");
        let path = dir.path().join("r.sqlite");
        Store::open(&path).unwrap();
        assert!(Store::open_read_only(&path).unwrap().experiments().unwrap().is_empty());
        for (v, says) in [(1, "upgrades it"), (99, "use the infomax that wrote it")] {
            rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", v).unwrap();
            let err = Store::open_read_only(&path).err().unwrap().to_string();
            assert!(err.contains(&format!("schema version {v}")) && err.contains(says), "{err}");
        }
    }
}
