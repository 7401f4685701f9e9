//! `infomax status`: the latest row of every run with its progress and last evaluation, then
//! the planned runs not started yet. Read without parsing configurations, so a database that
//! a report refuses can still be inspected.

use rusqlite::params;

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
    /// (epoch, metric, top-1 %) of the latest evaluation.
    pub last_eval: Vec<(usize, String, f64)>,
}

impl Store {
    /// The latest row of every run (of one experiment, or all), then the planned runs that have
    /// none yet (status `pending`), with each run's last evaluation.
    pub fn run_rows(&self, experiment: Option<&str>) -> Result<Vec<RunRow>> {
        let mut rows = self
            .conn
            .prepare(
                "SELECT r.id, r.experiment, r.profile, r.grid_json, r.seed, r.status, r.status_detail, r.epochs,
                        (SELECT count(*) FROM epochs e WHERE e.run_id = r.id), r.config_hash, r.method, r.dataset
                 FROM runs r
                 WHERE r.id = (SELECT max(id) FROM runs WHERE config_hash = r.config_hash)
                   AND (?1 IS NULL OR r.experiment = ?1)
                 ORDER BY r.experiment, r.profile, r.id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![experiment], |r| {
                    let grid = serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default();
                    let seed = r.get::<_, i64>(4)? as u64;
                    Ok(RunRow {
                        id: Some(r.get(0)?),
                        experiment: r.get(1)?,
                        profile: r.get(2)?,
                        label: label(&grid, &r.get::<_, String>(10)?, &r.get::<_, String>(11)?, seed),
                        status: r.get(5)?,
                        detail: r.get(6)?,
                        epochs: r.get::<_, i64>(7)? as usize,
                        epochs_done: r.get::<_, i64>(8)? as usize,
                        config_hash: r.get(9)?,
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
        let planned = self
            .conn
            .prepare(
                "SELECT experiment, profile, label, config_hash, config_json FROM planned_runs p
                 WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.config_hash = p.config_hash)
                   AND (?1 IS NULL OR p.experiment = ?1)
                 ORDER BY experiment, profile, rowid",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![experiment], |r| {
                    let config: String = r.get(4)?;
                    let epochs = serde_json::from_str::<RunConfig>(&config).map_or(0, |s| s.train.epochs);
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
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.err())?;
        rows.extend(planned);
        Ok(rows)
    }
}
