//! `infomax merge`: fold another results database (a shard's, another machine's) into this one,
//! run by run. Which columns travel comes from the schema's definition, so a column added there
//! is merged without a change here.

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::{schema, Store};
use crate::{Error, Result};

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

/// `?{from}, ?{from + 1}, …`: `n` placeholders.
fn marks(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// Copy one run and everything recorded for it into `dst` under a new id.
fn copy_run(src: &Connection, dst: &Connection, src_id: i64) -> rusqlite::Result<()> {
    let run_cols: Vec<&str> = schema::table("runs").column_names().filter(|c| *c != "id").collect();
    let (n, cols) = (run_cols.len(), run_cols.join(", "));
    let row: Vec<Value> = src.query_row(&format!("SELECT {cols} FROM runs WHERE id = ?1"), params![src_id], |r| {
        (0..n).map(|i| r.get(i)).collect()
    })?;
    dst.execute(&format!("INSERT INTO runs ({cols}) VALUES ({})", marks(1, n)), rusqlite::params_from_iter(row))?;
    let new_id = dst.last_insert_rowid();
    for table in schema::per_run_tables() {
        let cols: Vec<&str> = table.column_names().filter(|c| *c != "run_id").collect();
        let (n, cols) = (cols.len(), cols.join(", "));
        let mut stmt = src.prepare(&format!("SELECT {cols} FROM {} WHERE run_id = ?1", table.name))?;
        let rows: Vec<Vec<Value>> = stmt
            .query_map(params![src_id], |r| (0..n).map(|i| r.get(i)).collect())?
            .collect::<rusqlite::Result<_>>()?;
        let insert = format!("INSERT INTO {} (run_id, {cols}) VALUES (?1, {})", table.name, marks(2, n));
        for row in rows {
            let mut values = vec![Value::Integer(new_id)];
            values.extend(row);
            dst.execute(&insert, rusqlite::params_from_iter(values))?;
        }
    }
    Ok(())
}

/// How far along a run is, for choosing between two databases' rows: complete beats started
/// beats skipped, then more epochs.
fn rank(status: &str, epochs: i64) -> (i64, i64) {
    match status {
        "finished" | "diverged" => (3, epochs),
        "skipped" => (0, 0),
        _ => (1, epochs),
    }
}

impl Store {
    /// Copy into this database what `other` holds that this one lacks, run by run (by config
    /// hash): a run complete here (finished or diverged) is kept; otherwise the other's row
    /// replaces this one's when it is further along (complete, or more epochs), with its epochs,
    /// terms and evaluations. Experiments, profiles, references and plans are united. Merging
    /// the same file twice changes nothing.
    pub fn merge_from(&self, other: &Path) -> Result<MergeStats> {
        Ok(self.merge_all(&[other])?.remove(0))
    }

    /// Merge every one of `others` ([`Store::merge_from`]), all or nothing: each is opened and
    /// read before anything is written, and the whole merge is one transaction, so a source
    /// that cannot be taken leaves this database as it was.
    pub fn merge_all(&self, others: &[&Path]) -> Result<Vec<MergeStats>> {
        let mut sources = Vec::with_capacity(others.len());
        for other in others {
            if !other.is_file() {
                return Err(Error::File { path: other.to_path_buf(), what: "no such results database".into() });
            }
            // Opening checks (and migrates) the other file's schema; reading its runs checks
            // that every configuration parses.
            let src = Store::open(other)?;
            src.runs()?;
            sources.push(src);
        }
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let stats = sources.iter().map(|src| self.merge_one(&tx, src)).collect::<Result<Vec<_>>>()?;
        tx.commit().map_err(self.err())?;
        Ok(stats)
    }

    /// Merge `src` inside the transaction `tx` on this database.
    fn merge_one(&self, tx: &rusqlite::Transaction, src: &Store) -> Result<MergeStats> {
        let mut stats = MergeStats::default();
        let src_err = |source| Error::Store { path: src.path.clone(), source };
        let runs: Vec<(i64, String, String, i64)> = src.rows(
            "SELECT r.id, r.config_hash, r.status, (SELECT count(*) FROM epochs e WHERE e.run_id = r.id)
             FROM runs r WHERE r.id = (SELECT max(id) FROM runs WHERE config_hash = r.config_hash) ORDER BY r.id",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
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
                    for table in schema::per_run_tables().rev() {
                        tx.execute(&format!("DELETE FROM {} WHERE run_id = ?1", table.name), params![id])
                            .map_err(self.err())?;
                    }
                    tx.execute("DELETE FROM runs WHERE id = ?1", params![id]).map_err(self.err())?;
                }
                stats.replaced += 1;
            } else {
                stats.copied += 1;
            }
            copy_run(&src.conn, tx, src_id).map_err(src_err)?;
        }
        for table in schema::experiment_tables() {
            let cols: Vec<&str> = table.column_names().collect();
            let (n, cols) = (cols.len(), cols.join(", "));
            let rows: Vec<Vec<Value>> = src.rows(&format!("SELECT {cols} FROM {}", table.name), |r| {
                (0..n).map(|i| r.get::<_, Value>(i)).collect()
            })?;
            let insert = format!("INSERT OR IGNORE INTO {} ({cols}) VALUES ({})", table.name, marks(1, n));
            for row in rows {
                tx.execute(&insert, rusqlite::params_from_iter(row)).map_err(self.err())?;
            }
        }
        Ok(stats)
    }
}
