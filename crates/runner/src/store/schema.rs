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
    /// (index, indexed columns).
    pub indexes: &'static [(&'static str, &'static str)],
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
        format!("CREATE TABLE {name} (\n    {}\n);\n", parts.join(",\n    "))
    }

    fn create_indexes(&self) -> String {
        self.indexes.iter().map(|(index, cols)| format!("CREATE INDEX {index} ON {} ({cols});\n", self.name)).collect()
    }

    /// Rebuild this table, holding `old`'s rows, with this definition.
    fn rebuild_from(&self, old: &Table) -> String {
        let next = format!("{}_next", self.name);
        let common: Vec<&str> = self.column_names().filter(|c| old.column_names().any(|o| o == *c)).collect();
        let common = common.join(", ");
        format!(
            "{}INSERT INTO {next} ({common}) SELECT {common} FROM {name};\nDROP TABLE {name};\n\
             ALTER TABLE {next} RENAME TO {name};\n{}",
            self.create(&next),
            self.create_indexes(),
            name = self.name,
        )
    }
}

/// Every run started, skipped or finished, latest attempt last.
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
    ],
    constraints: &[],
    indexes: &[("runs_by_hash", "config_hash")],
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
};

/// Frozen-feature evaluations; epoch 0 is the randomly initialised encoder.
const EVALUATIONS: Table = Table {
    name: "evaluations",
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
};

const PROFILES: Table = Table {
    name: "profiles",
    columns: &[("experiment", "TEXT NOT NULL"), ("profile", "TEXT NOT NULL"), ("about", "TEXT NOT NULL")],
    constraints: &["PRIMARY KEY (experiment, profile)"],
    indexes: &[],
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
};

/// The tables of each schema version, oldest first: version `i + 1` is `VERSIONS[i]`. Per-run
/// tables come after what they reference (`runs`, then `epochs`, then `epoch_terms`).
///
/// 1. runs, their epochs with loss terms, evaluations.
/// 2. `runs` gains the `skipped` status and grid coordinates; the experiments, their profiles,
///    plans and papers' numbers appear, so that a report needs nothing but the database.
pub const VERSIONS: &[&[Table]] = &[
    &[RUNS_V1, EPOCHS, EPOCH_TERMS, EVALUATIONS],
    &[RUNS, EPOCHS, EPOCH_TERMS, EVALUATIONS, EXPERIMENTS, PROFILES, PLANNED_RUNS, REFERENCE_VALUES],
];

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

/// SQL creating every table of `version` in an empty database.
pub fn create_sql(version: i64) -> String {
    tables(version).iter().map(|t| t.create(t.name) + &t.create_indexes()).collect()
}

/// SQL taking a database at `from` to `from + 1`; run it with foreign keys off (rebuilt tables
/// are referenced by name).
pub fn migration_sql(from: i64) -> String {
    let (old, new) = (tables(from), tables(from + 1));
    let mut sql = String::new();
    for t in new {
        match old.iter().find(|o| o.name == t.name) {
            None => sql += &(t.create(t.name) + &t.create_indexes()),
            Some(o) if o == t => {}
            Some(o) => sql += &t.rebuild_from(o),
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|t| t.name == o.name)) {
        sql += &format!("DROP TABLE {};\n", o.name);
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
