//! `infomax status`: the latest row of every run with its progress, last evaluation and how its
//! configuration differs from the plan recorded for its grid cell, then the planned runs not
//! started yet. A configuration that does not parse spoils its own line, not the command, so a
//! database that a report refuses can still be inspected.

use std::collections::HashMap;
use std::fmt;

use rusqlite::params;

use super::lease::{shown_status, HEARTBEAT_AGE};
use super::rows::label;
use super::Store;
use crate::config::RunConfig;
use crate::Result;

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
    /// How its configuration differs from its grid cell's plan.
    pub from_plan: FromPlan,
    /// (epoch, metric, top-1 %) of the latest evaluation.
    pub last_eval: Vec<(usize, String, f64)>,
}

/// How a run's configuration differs from the plan recorded for its grid cell: the configuration
/// first planned under the same experiment, profile and grid coordinates (any seed), so every
/// run of a cell is compared with the same one.
#[derive(Debug, Clone, PartialEq)]
pub enum FromPlan {
    /// The fields in which it differs, seed aside, as (dotted key, value) sorted by key; values
    /// are JSON text but for strings, unquoted. Empty when the run is its cell's plan.
    Fields(Vec<(String, String)>),
    /// Nothing was planned for its cell.
    Unplanned,
    /// Its configuration, or its cell's plan, does not parse as this infomax's: serde's message.
    Unreadable(String),
}

impl fmt::Display for FromPlan {
    /// `train.epochs=3 train.train_images=1024`, `(not in the recorded plan)` or
    /// `(configuration unreadable: …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FromPlan::Fields(fields) => {
                let shown: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                f.write_str(&shown.join(" "))
            }
            FromPlan::Unplanned => f.write_str("(not in the recorded plan)"),
            FromPlan::Unreadable(why) => write!(f, "(configuration unreadable: {why})"),
        }
    }
}

impl FromPlan {
    /// `config` (stored JSON) against its cell's plan (`None`: nothing planned for the cell).
    fn of(config: &str, plan: Option<&std::result::Result<RunConfig, String>>) -> FromPlan {
        let config = match serde_json::from_str::<RunConfig>(config) {
            Ok(c) => c,
            Err(e) => return FromPlan::Unreadable(e.to_string()),
        };
        match plan {
            None => FromPlan::Unplanned,
            Some(Err(e)) => FromPlan::Unreadable(format!("the plan of its cell: {e}")),
            Some(Ok(plan)) => FromPlan::Fields(
                config.differences_from(plan).into_iter().map(|(k, v)| (k, super::rows::shown_value(&v))).collect(),
            ),
        }
    }
}

/// A grid cell of one experiment and profile: (experiment, profile, `grid_json`). Runs and plans
/// write `grid_json` the same way (a sorted map), so equal cells have equal text.
type Cell = (String, String, String);

impl Store {
    /// The latest row of every run (of one experiment, or all), then the planned runs that have
    /// none yet (status `pending`), with each run's last evaluation and its differences from its
    /// cell's plan.
    pub fn run_rows(&self, experiment: Option<&str>) -> Result<Vec<RunRow>> {
        struct Planned {
            cell: Cell,
            label: String,
            config_hash: String,
            config: String,
            started: bool,
        }
        let planned: Vec<Planned> = self
            .conn
            .prepare(
                "SELECT experiment, profile, grid_json, label, config_hash, config_json,
                        EXISTS (SELECT 1 FROM runs r WHERE r.config_hash = p.config_hash)
                 FROM planned_runs p
                 WHERE (?1 IS NULL OR p.experiment = ?1)
                 ORDER BY experiment, profile, rowid",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![experiment], |r| {
                    Ok(Planned {
                        cell: (r.get(0)?, r.get(1)?, r.get(2)?),
                        label: r.get(3)?,
                        config_hash: r.get(4)?,
                        config: r.get(5)?,
                        started: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.err())?;
        // Each cell's first plan, parsed once.
        let mut plans: HashMap<&Cell, std::result::Result<RunConfig, String>> = HashMap::new();
        for p in &planned {
            plans.entry(&p.cell).or_insert_with(|| serde_json::from_str(&p.config).map_err(|e| e.to_string()));
        }
        let mut rows = self
            .conn
            .prepare(&format!(
                "SELECT r.id, r.experiment, r.profile, r.grid_json, r.seed, r.status, r.status_detail, r.epochs,
                        (SELECT count(*) FROM epochs e WHERE e.run_id = r.id), r.config_hash, r.method, r.dataset,
                        r.config_json, r.owner, {HEARTBEAT_AGE}
                 FROM runs r
                 WHERE r.id = (SELECT max(id) FROM runs WHERE config_hash = r.config_hash)
                   AND (?1 IS NULL OR r.experiment = ?1)
                 ORDER BY r.experiment, r.profile, r.id"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![experiment], |r| {
                    let grid_json: String = r.get(3)?;
                    let grid = serde_json::from_str(&grid_json).unwrap_or_default();
                    let seed = r.get::<_, i64>(4)? as u64;
                    let cell: Cell = (r.get(1)?, r.get(2)?, grid_json);
                    let from_plan = FromPlan::of(&r.get::<_, String>(12)?, plans.get(&cell));
                    let (experiment, profile, _) = cell;
                    let (status, detail) =
                        shown_status(r.get(5)?, r.get(6)?, r.get::<_, Option<String>>(13)?.as_deref(), r.get(14)?);
                    Ok(RunRow {
                        id: Some(r.get(0)?),
                        experiment,
                        profile,
                        label: label(&grid, &r.get::<_, String>(10)?, &r.get::<_, String>(11)?, seed),
                        status,
                        detail,
                        epochs: r.get::<_, i64>(7)? as usize,
                        epochs_done: r.get::<_, i64>(8)? as usize,
                        config_hash: r.get(9)?,
                        from_plan,
                        last_eval: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
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
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(self.err())?;
        }
        rows.extend(planned.iter().filter(|p| !p.started).map(|p| {
            let epochs = serde_json::from_str::<RunConfig>(&p.config).map_or(0, |s| s.train.epochs);
            RunRow {
                id: None,
                experiment: p.cell.0.clone(),
                profile: p.cell.1.clone(),
                label: p.label.clone(),
                status: "pending".into(),
                detail: None,
                epochs,
                epochs_done: 0,
                config_hash: p.config_hash.clone(),
                from_plan: FromPlan::of(&p.config, plans.get(&p.cell)),
                last_eval: Vec::new(),
            }
        }));
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Dataset, Method};
    use crate::store::{Experiment, PlannedRecord};

    fn smoke(seed: u64) -> RunConfig {
        let mut c = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        (c.experiment, c.profile, c.seed) = ("smoke".into(), "smoke".into(), seed);
        c.grid = BTreeMap::from([("method".to_string(), "vicreg".to_string())]);
        c.train.epochs = 2;
        c
    }

    fn plan(store: &Store, configs: &[&RunConfig]) {
        let e = Experiment {
            name: "smoke".into(),
            title: String::new(),
            paper: String::new(),
            reproduces: String::new(),
            axes: vec![],
            exclusions: vec![],
            profiles: vec![("smoke".into(), String::new())],
            recipes: vec![],
            deviations: vec![],
            references: vec![],
        };
        let planned: Vec<PlannedRecord> = configs
            .iter()
            .map(|c| PlannedRecord { config_hash: c.hash(), label: crate::store::run_label(c), config: (*c).clone() })
            .collect();
        store.write_experiment(&e, &planned).unwrap();
    }

    /// Three runs of one cell — its plan, and two that differ from it by `train.epochs` — are
    /// three rows with their own ids, hashes and differences; the later plans of those two do
    /// not displace the first as the cell's reference, even when the first is planned again.
    /// A run of another cell, a pending plan, and a configuration that no longer parses each
    /// say so on their own row.
    #[test]
    fn runs_of_one_cell_differ_by_id_hash_and_their_differences_from_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.sqlite")).unwrap();
        let planned = smoke(0);
        let (mut three, mut five) = (smoke(0), smoke(0));
        three.train.epochs = 3;
        (five.train.epochs, five.encoder.arch) = (5, "resnet34".into());
        plan(&store, &[&planned]);
        plan(&store, &[&three]);
        plan(&store, &[&five, &planned]);
        let mut seed_one = smoke(1);
        seed_one.train.epochs = 3;
        plan(&store, &[&seed_one]);
        let ids: Vec<i64> = [&planned, &three, &five].iter().map(|c| store.start_run(c, "v", "m").unwrap()).collect();
        let mut other_cell = smoke(0);
        other_cell.grid.insert("method".into(), "vicreg-b".into());
        let unplanned = store.start_run(&other_cell, "v", "m").unwrap();
        let mut broken = smoke(0);
        broken.train.epochs = 7;
        let unreadable = store.start_run(&broken, "v", "m").unwrap();
        let sql = "UPDATE runs SET config_json = '{\"seed\": 0}' WHERE id = ?1";
        store.connection().execute(sql, [unreadable]).unwrap();

        let rows = store.run_rows(Some("smoke")).unwrap();
        let seen: Vec<(Option<i64>, &str, String)> =
            rows.iter().map(|r| (r.id, &r.config_hash[..8], r.from_plan.to_string())).collect();
        let fields = |pairs: &[(&str, &str)]| {
            FromPlan::Fields(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        assert_eq!(
            rows.iter().map(|r| (r.id, r.config_hash.clone(), r.from_plan.clone())).collect::<Vec<_>>(),
            [
                (Some(ids[0]), planned.hash(), fields(&[])),
                (Some(ids[1]), three.hash(), fields(&[("train.epochs", "3")])),
                (Some(ids[2]), five.hash(), fields(&[("encoder.arch", "resnet34"), ("train.epochs", "5")])),
                (Some(unplanned), other_cell.hash(), FromPlan::Unplanned),
                (
                    Some(unreadable),
                    broken.hash(),
                    FromPlan::Unreadable("missing field `experiment` at line 1 column 11".into())
                ),
                (None, seed_one.hash(), fields(&[("train.epochs", "3")])),
            ],
            "{seen:#?}"
        );
        let lines: Vec<String> = rows
            .iter()
            .map(|r| format!("{:?} {} {} {} {}", r.id, &r.config_hash[..8], r.status, r.label, r.from_plan))
            .collect();
        assert_eq!(lines.iter().collect::<std::collections::BTreeSet<_>>().len(), lines.len(), "{lines:#?}");
        assert_eq!(rows[2].from_plan.to_string(), "encoder.arch=resnet34 train.epochs=5");
        assert_eq!(rows[3].from_plan.to_string(), "(not in the recorded plan)");
        assert!(rows[4].from_plan.to_string().starts_with("(configuration unreadable: missing field"), "{seen:?}");
        assert_eq!((rows[5].status.as_str(), rows[5].epochs), ("pending", 3));
        assert_eq!(rows.iter().filter(|r| r.label == "method=vicreg seed=0").count(), 4);
    }
}
