//! The schema, defined once: [`VERSIONS`] lists every table of every schema version, and the SQL
//! that creates a fresh database or migrates an older one is generated from that list.
//!
//! A fresh file gets the current version's tables. An older file steps forward one version at a
//! time (`PRAGMA user_version` counts them): a table new in the next version is created; a table
//! whose definition changed is rebuilt — created anew under a temporary name, the columns both
//! versions have copied (ids kept, new columns take their defaults), the old table dropped and
//! the new one renamed — because SQLite cannot alter a CHECK or drop a column; a table the next
//! version lacks is dropped. Tables name their neighbours in foreign keys by name, so a rebuilt
//! `runs` is still what `epochs` points at.
//!
//! Conventions the readers and writers rely on: a table with a `run_id` column holds rows of one
//! run (copied with it by a merge, dropped with it); the other tables describe experiments and
//! are united by a merge.

/// One table: its columns as `CREATE TABLE` declares them, its table constraints and indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    /// (column, type and column constraints), in order.
    pub columns: &'static [(&'static str, &'static str)],
    /// Table constraints: `PRIMARY KEY (…)`, `FOREIGN KEY (…) REFERENCES …`.
    pub constraints: &'static [&'static str],
    /// (index, indexed columns); `UNIQUE col, …` makes a unique index.
    pub indexes: &'static [(&'static str, &'static str)],
    /// Stored in its primary key's b-tree alone (`WITHOUT ROWID`): the large per-step tables,
    /// where a second copy of the key would double the file.
    pub without_rowid: bool,
}

impl Table {
    /// Its column names, in order.
    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|(name, _)| *name)
    }

    /// Whether it holds rows of one run (it has a `run_id` column).
    pub fn is_per_run(&self) -> bool {
        self.column_names().any(|c| c == "run_id")
    }

    /// `CREATE TABLE` under `name` (the table's own, or a temporary one while rebuilding).
    fn create(&self, name: &str) -> String {
        let mut parts: Vec<String> = self.columns.iter().map(|(c, decl)| format!("{c} {decl}")).collect();
        parts.extend(self.constraints.iter().map(|c| c.to_string()));
        let rowid = if self.without_rowid { " WITHOUT ROWID" } else { "" };
        format!("CREATE TABLE {name} (\n    {}\n){rowid};\n", parts.join(",\n    "))
    }

    fn create_indexes(&self) -> String {
        let create = |index: &str, cols: &str| match cols.strip_prefix("UNIQUE ") {
            Some(cols) => format!("CREATE UNIQUE INDEX {index} ON {} ({cols});\n", self.name),
            None => format!("CREATE INDEX {index} ON {} ({cols});\n", self.name),
        };
        self.indexes.iter().map(|(index, cols)| create(index, cols)).collect()
    }

    /// Rebuild this table, holding `old`'s rows, with this definition (at `version`: a column
    /// with a conversion is filled by it).
    fn rebuild_from(&self, old: &Table, version: i64) -> String {
        let next = format!("{}_next", self.name);
        let common: Vec<&str> = self.column_names().filter(|c| old.column_names().any(|o| o == *c)).collect();
        let sources: Vec<&str> = common
            .iter()
            .map(|c| {
                CONVERSIONS
                    .iter()
                    .find(|(v, t, col, _)| *v == version && *t == self.name && col == c)
                    .map_or(*c, |(.., expr)| *expr)
            })
            .collect();
        let (common, sources) = (common.join(", "), sources.join(", "));
        format!(
            "{}INSERT INTO {next} ({common}) SELECT {sources} FROM {name};\nDROP TABLE {name};\n\
             ALTER TABLE {next} RENAME TO {name};\n{}",
            self.create(&next),
            self.create_indexes(),
            name = self.name,
        )
    }
}

/// Every run started, skipped or finished, latest attempt last. A run in training has an `owner`
/// (`host:pid`, the process that claimed it) whose lease `heartbeat_at` renews (`lease.rs`).
const RUNS: Table = Table {
    name: "runs",
    columns: &[
        ("id", "INTEGER PRIMARY KEY"),
        ("experiment", "TEXT NOT NULL"),
        ("profile", "TEXT NOT NULL"),
        ("method", "TEXT NOT NULL"),
        ("dataset", "TEXT NOT NULL"),
        ("seed", "INTEGER NOT NULL"),
        ("epochs", "INTEGER NOT NULL"),
        ("config_json", "TEXT NOT NULL"),
        ("config_hash", "TEXT NOT NULL"),
        (
            "status",
            "TEXT NOT NULL CHECK (status IN ('running', 'finished', 'diverged', 'failed', 'interrupted', 'skipped'))",
        ),
        ("status_detail", "TEXT"),
        ("started_at", "TEXT NOT NULL"),
        ("finished_at", "TEXT"),
        ("code_version", "TEXT NOT NULL"),
        ("machine", "TEXT NOT NULL"),
        ("grid_json", "TEXT NOT NULL DEFAULT '{}'"),
        ("owner", "TEXT"),
        ("heartbeat_at", "TEXT"),
    ],
    constraints: &[],
    indexes: &[("runs_by_hash", "config_hash")],
    without_rowid: false,
};

/// Versions 2 and 3's `runs`: no lease.
const RUNS_V2: Table = Table {
    columns: &[
        ("id", "INTEGER PRIMARY KEY"),
        ("experiment", "TEXT NOT NULL"),
        ("profile", "TEXT NOT NULL"),
        ("method", "TEXT NOT NULL"),
        ("dataset", "TEXT NOT NULL"),
        ("seed", "INTEGER NOT NULL"),
        ("epochs", "INTEGER NOT NULL"),
        ("config_json", "TEXT NOT NULL"),
        ("config_hash", "TEXT NOT NULL"),
        (
            "status",
            "TEXT NOT NULL CHECK (status IN ('running', 'finished', 'diverged', 'failed', 'interrupted', 'skipped'))",
        ),
        ("status_detail", "TEXT"),
        ("started_at", "TEXT NOT NULL"),
        ("finished_at", "TEXT"),
        ("code_version", "TEXT NOT NULL"),
        ("machine", "TEXT NOT NULL"),
        ("grid_json", "TEXT NOT NULL DEFAULT '{}'"),
    ],
    ..RUNS
};

/// Version 1's `runs`: no `skipped` status, no grid coordinates.
const RUNS_V1: Table = Table {
    columns: &[
        ("id", "INTEGER PRIMARY KEY"),
        ("experiment", "TEXT NOT NULL"),
        ("profile", "TEXT NOT NULL"),
        ("method", "TEXT NOT NULL"),
        ("dataset", "TEXT NOT NULL"),
        ("seed", "INTEGER NOT NULL"),
        ("epochs", "INTEGER NOT NULL"),
        ("config_json", "TEXT NOT NULL"),
        ("config_hash", "TEXT NOT NULL"),
        ("status", "TEXT NOT NULL CHECK (status IN ('running', 'finished', 'diverged', 'failed', 'interrupted'))"),
        ("status_detail", "TEXT"),
        ("started_at", "TEXT NOT NULL"),
        ("finished_at", "TEXT"),
        ("code_version", "TEXT NOT NULL"),
        ("machine", "TEXT NOT NULL"),
    ],
    ..RUNS
};

/// One row per finished training epoch.
const EPOCHS: Table = Table {
    name: "epochs",
    columns: &[
        ("run_id", "INTEGER NOT NULL REFERENCES runs (id)"),
        ("epoch", "INTEGER NOT NULL"),
        ("loss", "REAL NOT NULL"),
        ("lr", "REAL NOT NULL"),
        ("images_per_second", "REAL NOT NULL"),
        ("wall_seconds", "REAL NOT NULL"),
    ],
    constraints: &["PRIMARY KEY (run_id, epoch)"],
    indexes: &[],
    without_rowid: false,
};

/// Each loss term and diagnostic of an epoch, averaged over its steps.
const EPOCH_TERMS: Table = Table {
    name: "epoch_terms",
    columns: &[
        ("run_id", "INTEGER NOT NULL"),
        ("epoch", "INTEGER NOT NULL"),
        ("name", "TEXT NOT NULL"),
        ("value", "REAL NOT NULL"),
    ],
    constraints: &[
        "PRIMARY KEY (run_id, epoch, name)",
        "FOREIGN KEY (run_id, epoch) REFERENCES epochs (run_id, epoch)",
    ],
    indexes: &[],
    without_rowid: false,
};

/// Frozen-feature evaluations; epoch 0 is the randomly initialised encoder. `k` is the k-NN's
/// neighbour count, NULL for the linear probe.
const EVALUATIONS: Table = Table {
    name: "evaluations",
    columns: &[
        ("run_id", "INTEGER NOT NULL REFERENCES runs (id)"),
        ("epoch", "INTEGER NOT NULL"),
        ("protocol", "TEXT NOT NULL"),
        ("k", "INTEGER CHECK ((k IS NULL) = (protocol = 'linear'))"),
        ("top1", "REAL NOT NULL"),
        ("top5", "REAL NOT NULL"),
        ("bank_size", "INTEGER NOT NULL"),
        ("test_size", "INTEGER NOT NULL"),
    ],
    constraints: &[],
    indexes: &[("evaluations_once", "UNIQUE run_id, epoch, protocol, ifnull(k, -1)")],
    without_rowid: false,
};

/// Versions 1 and 2's evaluations: the linear probe's `k` was 0.
const EVALUATIONS_V2: Table = Table {
    columns: &[
        ("run_id", "INTEGER NOT NULL REFERENCES runs (id)"),
        ("epoch", "INTEGER NOT NULL"),
        ("protocol", "TEXT NOT NULL"),
        ("k", "INTEGER NOT NULL"),
        ("top1", "REAL NOT NULL"),
        ("top5", "REAL NOT NULL"),
        ("bank_size", "INTEGER NOT NULL"),
        ("test_size", "INTEGER NOT NULL"),
    ],
    constraints: &["PRIMARY KEY (run_id, epoch, protocol, k)"],
    indexes: &[],
    ..EVALUATIONS
};

/// The optimiser steps a run recorded (every step, or every n-th in a run longer than
/// [`crate::train::RECORDED_STEPS_MAX`] steps): `step` counts the steps taken, from 1.
const STEPS: Table = Table {
    name: "steps",
    columns: &[
        ("run_id", "INTEGER NOT NULL REFERENCES runs (id)"),
        ("step", "INTEGER NOT NULL"),
        ("epoch", "INTEGER NOT NULL"),
        ("loss", "REAL NOT NULL"),
        ("lr", "REAL NOT NULL"),
        ("images_per_second", "REAL NOT NULL"),
    ],
    constraints: &["PRIMARY KEY (run_id, step)"],
    indexes: &[],
    without_rowid: true,
};

/// Each loss term and diagnostic of a recorded step.
const STEP_TERMS: Table = Table {
    name: "step_terms",
    columns: &[
        ("run_id", "INTEGER NOT NULL"),
        ("step", "INTEGER NOT NULL"),
        ("name", "TEXT NOT NULL"),
        ("value", "REAL NOT NULL"),
    ],
    constraints: &["PRIMARY KEY (run_id, step, name)", "FOREIGN KEY (run_id, step) REFERENCES steps (run_id, step)"],
    indexes: &[],
    without_rowid: true,
};

/// What an experiment is; `axes_json` holds its grid (see `rows::Experiment`).
const EXPERIMENTS: Table = Table {
    name: "experiments",
    columns: &[
        ("name", "TEXT PRIMARY KEY"),
        ("title", "TEXT NOT NULL"),
        ("paper", "TEXT NOT NULL"),
        ("reproduces", "TEXT NOT NULL"),
        ("axes_json", "TEXT NOT NULL"),
        ("updated_at", "TEXT NOT NULL"),
    ],
    constraints: &[],
    indexes: &[],
    without_rowid: false,
};

/// Each experiment's profiles: what each costs and is for, the sources its cells follow
/// (`recipes_json`: a JSON array of `experiment::Recipe`) and where it departs from them
/// (`deviations_json`: a JSON array of `experiment::Deviation`).
const PROFILES: Table = Table {
    name: "profiles",
    columns: &[
        ("experiment", "TEXT NOT NULL"),
        ("profile", "TEXT NOT NULL"),
        ("about", "TEXT NOT NULL"),
        ("deviations_json", "TEXT NOT NULL DEFAULT '[]'"),
        ("recipes_json", "TEXT NOT NULL DEFAULT '[]'"),
    ],
    constraints: &["PRIMARY KEY (experiment, profile)"],
    indexes: &[],
    without_rowid: false,
};

/// Every run a `reproduce` planned (the slice of a shard), trained yet or not.
const PLANNED_RUNS: Table = Table {
    name: "planned_runs",
    columns: &[
        ("config_hash", "TEXT PRIMARY KEY"),
        ("experiment", "TEXT NOT NULL"),
        ("profile", "TEXT NOT NULL"),
        ("label", "TEXT NOT NULL"),
        ("grid_json", "TEXT NOT NULL"),
        ("config_json", "TEXT NOT NULL"),
    ],
    constraints: &[],
    indexes: &[],
    without_rowid: false,
};

/// Version 5's `profiles`: no recipes.
const PROFILES_V5: Table = Table {
    columns: &[
        ("experiment", "TEXT NOT NULL"),
        ("profile", "TEXT NOT NULL"),
        ("about", "TEXT NOT NULL"),
        ("deviations_json", "TEXT NOT NULL DEFAULT '[]'"),
    ],
    ..PROFILES
};

/// Versions 2 to 4's `profiles`: no deviations.
const PROFILES_V4: Table = Table {
    columns: &[("experiment", "TEXT NOT NULL"), ("profile", "TEXT NOT NULL"), ("about", "TEXT NOT NULL")],
    ..PROFILES
};

/// The paper's numbers for the grid cells matching `at_json`.
const REFERENCE_VALUES: Table = Table {
    name: "reference_values",
    columns: &[
        ("experiment", "TEXT NOT NULL"),
        ("at_json", "TEXT NOT NULL"),
        ("metric", "TEXT NOT NULL"),
        ("value", "REAL NOT NULL"),
        ("source", "TEXT NOT NULL"),
    ],
    constraints: &["PRIMARY KEY (experiment, at_json, metric)"],
    indexes: &[],
    without_rowid: false,
};

/// The tables of each schema version, oldest first: version `i + 1` is `VERSIONS[i]`. Per-run
/// tables come after what they reference (`runs`, then `epochs`, then `epoch_terms`).
///
/// 1. runs, their epochs with loss terms, evaluations.
/// 2. `runs` gains the `skipped` status and grid coordinates; the experiments, their profiles,
///    plans and papers' numbers appear, so that a report needs nothing but the database.
/// 3. Every step recorded (`steps`, `step_terms`); the linear probe's `k` is NULL, not 0; the
///    configurations' numbers read as written (`0.4`, not `0.4000000059604645`) and
///    `optimizer.one_d_lr_factor` is `optimizer.bias_and_norm_lr_factor`, so every run gets
///    its new hash (see `migrate.rs`).
/// 4. A run in training is leased to its process (`runs.owner`, `runs.heartbeat_at`), so that
///    processes sharing a database never train one run twice.
/// 5. Each profile records where its recipe departs from its source (`profiles.deviations_json`).
/// 6. Each profile records the sources its cells follow (`profiles.recipes_json`).
pub const VERSIONS: &[&[Table]] = &[
    &[RUNS_V1, EPOCHS, EPOCH_TERMS, EVALUATIONS_V2],
    &[RUNS_V2, EPOCHS, EPOCH_TERMS, EVALUATIONS_V2, EXPERIMENTS, PROFILES_V4, PLANNED_RUNS, REFERENCE_VALUES],
    &[
        RUNS_V2,
        STEPS,
        STEP_TERMS,
        EPOCHS,
        EPOCH_TERMS,
        EVALUATIONS,
        EXPERIMENTS,
        PROFILES_V4,
        PLANNED_RUNS,
        REFERENCE_VALUES,
    ],
    &[
        RUNS,
        STEPS,
        STEP_TERMS,
        EPOCHS,
        EPOCH_TERMS,
        EVALUATIONS,
        EXPERIMENTS,
        PROFILES_V4,
        PLANNED_RUNS,
        REFERENCE_VALUES,
    ],
    &[
        RUNS,
        STEPS,
        STEP_TERMS,
        EPOCHS,
        EPOCH_TERMS,
        EVALUATIONS,
        EXPERIMENTS,
        PROFILES_V5,
        PLANNED_RUNS,
        REFERENCE_VALUES,
    ],
    &[RUNS, STEPS, STEP_TERMS, EPOCHS, EPOCH_TERMS, EVALUATIONS, EXPERIMENTS, PROFILES, PLANNED_RUNS, REFERENCE_VALUES],
];

/// How a rebuilt table's column is filled from the previous version's rows where it is not a
/// plain copy: `(version, table, column, SQL expression over the old row)`.
const CONVERSIONS: &[(i64, &str, &str, &str)] = &[(3, "evaluations", "k", "NULLIF(k, 0)")];

/// The version this infomax reads and writes.
pub const SCHEMA_VERSION: i64 = VERSIONS.len() as i64;

/// The tables of `version` (1 ≤ version ≤ [`SCHEMA_VERSION`]).
pub fn tables(version: i64) -> &'static [Table] {
    VERSIONS[(version - 1) as usize]
}

/// The current version's table `name`.
pub fn table(name: &str) -> &'static Table {
    tables(SCHEMA_VERSION).iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no table `{name}`"))
}

/// The current tables holding rows of one run, in the order they reference each other (insert
/// in this order, delete in reverse).
pub fn per_run_tables() -> impl DoubleEndedIterator<Item = &'static Table> {
    tables(SCHEMA_VERSION).iter().filter(|t| t.is_per_run())
}

/// The current tables describing experiments (united by a merge).
pub fn experiment_tables() -> impl Iterator<Item = &'static Table> {
    tables(SCHEMA_VERSION).iter().filter(|t| t.name != "runs" && !t.is_per_run())
}

/// SQL creating every table of `version` in an empty database (and, at the current version,
/// its views).
pub fn create_sql(version: i64) -> String {
    let tables: String = tables(version).iter().map(|t| t.create(t.name) + &t.create_indexes()).collect();
    if version == SCHEMA_VERSION {
        tables + &create_views()
    } else {
        tables
    }
}

/// The views, named for what they answer; they are dropped before a migration and made anew
/// after it.
pub const VIEWS: &[&str] = &["final_results"];

/// `final_results`: one row per finished run and metric, the metric named as the CLI names it
/// (`knn200`, `knn5`, `linear`, `linear-top5`), its accuracy at initialisation (epoch 0) and
/// after training (the last evaluated epoch), and the paper's number for the run's grid cell
/// where the experiment gives one (the most specific `at` that the cell matches).
fn create_views() -> String {
    use super::rows::Metric;
    let metric_values: Vec<String> = Metric::ALL
        .iter()
        .map(|m| {
            let k = m.k().map_or("k IS NULL".to_string(), |k| format!("k = {k}"));
            let column = if m.is_top5() { "top5" } else { "top1" };
            format!(
                "SELECT run_id, epoch, '{}' AS metric, {column} AS value FROM evaluations WHERE protocol = '{}' AND {k}",
                m.key(),
                m.protocol()
            )
        })
        .collect();
    format!(
        "CREATE VIEW final_results AS
WITH metric_values AS (
    {}
),
last AS (SELECT run_id, metric, max(epoch) AS epoch FROM metric_values GROUP BY run_id, metric)
SELECT r.id AS run_id, r.experiment, r.profile, r.grid_json AS cell, r.method, r.dataset, r.config_hash, r.seed,
       l.metric, i.value AS at_init, f.value AS trained, l.epoch AS epoch,
       (SELECT p.value FROM reference_values p
         WHERE p.experiment = r.experiment AND p.metric = l.metric
           AND NOT EXISTS (SELECT 1 FROM json_each(p.at_json) a
                            WHERE json_extract(r.grid_json, '$.\"' || a.key || '\"') IS NOT a.value)
         ORDER BY (SELECT count(*) FROM json_each(p.at_json)) DESC LIMIT 1) AS paper
FROM runs r
JOIN last l ON l.run_id = r.id
JOIN metric_values f ON f.run_id = l.run_id AND f.metric = l.metric AND f.epoch = l.epoch
LEFT JOIN metric_values i ON i.run_id = l.run_id AND i.metric = l.metric AND i.epoch = 0
WHERE r.status = 'finished';
",
        metric_values.join("\n    UNION ALL\n    ")
    )
}

/// SQL taking a database at `from` to `from + 1`; run it with foreign keys off (rebuilt tables
/// are referenced by name).
pub fn migration_sql(from: i64) -> String {
    let (old, new) = (tables(from), tables(from + 1));
    let mut sql: String = VIEWS.iter().map(|v| format!("DROP VIEW IF EXISTS {v};\n")).collect();
    for t in new {
        match old.iter().find(|o| o.name == t.name) {
            None => sql += &(t.create(t.name) + &t.create_indexes()),
            Some(o) if o == t => {}
            Some(o) => sql += &t.rebuild_from(o, from + 1),
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|t| t.name == o.name)) {
        sql += &format!("DROP TABLE {};\n", o.name);
    }
    if from + 1 == SCHEMA_VERSION {
        sql += &create_views();
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rebuilt table's new columns are filled by their defaults, so each must have one (or
    /// be nullable); a column cannot become a key of existing rows.
    #[test]
    fn every_column_added_to_a_table_can_be_filled() {
        for v in 1..SCHEMA_VERSION {
            for t in tables(v + 1) {
                let Some(old) = tables(v).iter().find(|o| o.name == t.name) else { continue };
                for (c, decl) in t.columns.iter().filter(|(c, _)| !old.column_names().any(|o| o == *c)) {
                    assert!(
                        decl.contains("DEFAULT") || !decl.contains("NOT NULL"),
                        "{}.{c} (version {}) needs a default to fill existing rows",
                        t.name,
                        v + 1
                    );
                    assert!(!decl.contains("PRIMARY KEY"), "{}.{c}", t.name);
                }
            }
        }
    }

    #[test]
    fn migrations_step_through_every_version() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(&create_sql(1)).unwrap();
        for from in 1..SCHEMA_VERSION {
            c.execute_batch(&migration_sql(from)).unwrap();
        }
        // The result has exactly the current tables, column for column.
        let fresh = rusqlite::Connection::open_in_memory().unwrap();
        fresh.execute_batch(&create_sql(SCHEMA_VERSION)).unwrap();
        let columns = |c: &rusqlite::Connection| -> Vec<(String, String, String, bool, Option<String>)> {
            let mut out = Vec::new();
            for t in tables(SCHEMA_VERSION) {
                let mut s = c.prepare(&format!("PRAGMA table_info({})", t.name)).unwrap();
                let rows = s.query_map([], |r| Ok((t.name.to_string(), r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)));
                out.extend(rows.unwrap().map(Result::unwrap));
            }
            out
        };
        assert_eq!(columns(&c), columns(&fresh));
        assert!(migration_sql(1).contains("ALTER TABLE runs_next RENAME TO runs"));
        assert!(!migration_sql(1).contains("epochs_next"), "unchanged tables are left alone");
    }
}
