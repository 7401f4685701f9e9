//! What a schema step does to the data beyond its tables: version 3 gives every stored
//! configuration its new identity.
//!
//! Up to version 2 a configuration's `f32` fields were stored widened to `f64`
//! (`0.4000000059604645`) and the optimiser's learning-rate factor for biases and BatchNorm
//! parameters was `one_d_lr_factor`. Version 3 stores numbers as written and names the field
//! `bias_and_norm_lr_factor`, so each configuration is read in the old form, written in the new
//! one and hashed again: `runs` and `planned_runs` get the new JSON and hash, and the run's
//! checkpoint folder moves to the new hash (before the step commits; a move is skipped when done,
//! so a step that failed after moving folders is simply taken again).

use std::path::Path;

use rusqlite::{params, Transaction};

use crate::checkpoint;
use crate::config::RunConfig;
use crate::{Error, Result};

/// Re-identify every configuration in `runs` and `planned_runs` (see the module's text).
pub(super) fn to_version_3(tx: &Transaction, db: &Path, checkpoints: &Path) -> Result<()> {
    let err = |source| Error::Store { path: db.to_path_buf(), source };
    let mut stored: Vec<(String, String)> = Vec::new();
    for table in ["runs", "planned_runs"] {
        let mut s = tx.prepare(&format!("SELECT DISTINCT config_json, config_hash FROM {table}")).map_err(err)?;
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
        for row in rows {
            let row = row.map_err(err)?;
            if !stored.contains(&row) {
                stored.push(row);
            }
        }
    }
    for (json, old_hash) in stored {
        let config = read_version_2(&json).map_err(|what| Error::StoreSchema {
            path: db.to_path_buf(),
            what: format!("the configuration of run {old_hash} cannot be migrated: {what}"),
        })?;
        let (new_json, new_hash) = (config.canonical_json(), config.hash());
        for table in ["runs", "planned_runs"] {
            tx.execute(
                &format!("UPDATE {table} SET config_json = ?1, config_hash = ?2 WHERE config_hash = ?3"),
                params![new_json, new_hash, old_hash],
            )
            .map_err(err)?;
        }
        checkpoint::rename_run(checkpoints, &old_hash, &new_hash)?;
    }
    Ok(())
}

/// A configuration as version 2 stored it.
fn read_version_2(json: &str) -> std::result::Result<RunConfig, String> {
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if let Some(optimizer) = value.get_mut("optimizer").and_then(|o| o.as_object_mut()) {
        if let Some(factor) = optimizer.remove("one_d_lr_factor") {
            optimizer.insert("bias_and_norm_lr_factor".into(), factor);
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}
