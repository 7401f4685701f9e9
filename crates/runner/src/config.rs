//! Experiment files (TOML in `experiments/`) and their resolution into [`RunSpec`]s.
//!
//! ```toml
//! [experiment]            # name, title, paper, reproduces
//! [base]                  # what every run shares: method, dataset, encoder, projector, optimizer, …
//! [grid]                  # axes: `dataset = ["cifar10", "stl10"]`, or named values with overrides:
//! [grid.method]           #   w-mse-4 = { method = "w-mse", train = { views = 4 } }
//! [[when]]                # overrides for some cells: match = { method = "w-mse-2", dataset = "stl10" }
//!                         #   set = { projector = { widths = [1024, 128] } }
//! [profiles.smoke]        # overrides for every run; `about` says what the profile costs;
//! [[profiles.smoke.when]] #   a profile's own cell overrides
//! [[reference]]           # the paper's numbers: at = { method = "simclr", dataset = "cifar10" },
//!                         #   linear = 91.80, knn5 = 88.42, source = "W-MSE, Table 1"
//! ```
//! A run's configuration, lowest layer first: built-in defaults for its method and dataset ←
//! `[base]` ← its grid values (axes in file order) ← matching `[[when]]` ← the profile ← the
//! profile's matching `when` ← `--set key=value`; then a strict deserialisation (unknown keys are
//! errors naming the file, line, column and the closest valid key) and `validate`.
//!
//! The axis `seed` is special: its values set `seed` and are not part of a run's grid
//! coordinates (the seed is already in the configuration), so `--seeds N` adds seeds to a sweep
//! without renaming the runs it already has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::spec::{Dataset, Method, RunSpec};
use crate::{Error, Result};
use infomax_data::augment::Preset;

/// Keys infomax sets itself; a file that sets them would be silently overwritten.
const RESERVED: [&str; 3] = ["experiment", "profile", "grid"];

/// The metrics a `[[reference]]` entry may carry (top-1 % unless named otherwise).
pub const REFERENCE_METRICS: [&str; 4] = ["linear", "linear-top5", "knn5", "knn200"];

/// `[experiment]`: what the file reproduces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentMeta {
    pub name: String,
    pub title: String,
    /// The paper the experiment follows.
    pub paper: String,
    /// Which table or figure, or what the experiment checks.
    pub reproduces: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    experiment: ExperimentMeta,
    base: Table,
    #[serde(default)]
    grid: Table,
    #[serde(default)]
    when: Vec<Table>,
    #[serde(default)]
    exclude: Vec<Table>,
    #[serde(default)]
    reference: Vec<Table>,
    #[serde(default)]
    profiles: Table,
}

/// One step of a path into the TOML document, for finding where something is written.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn keys(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key(k.to_string())).collect()
}

/// A grid axis: its values in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<AxisValue>,
}

/// A named value of an axis and the overrides it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisValue {
    pub name: String,
    pub overrides: Table,
    anchor: Vec<Seg>,
}

impl Axis {
    pub fn is_seed(&self) -> bool {
        self.name == "seed"
    }

    fn value_index(&self, name: &str) -> Option<usize> {
        self.values.iter().position(|v| v.name == name)
    }

    /// The axis of seeds `0..n` (`--seeds N`).
    pub fn seeds(n: usize) -> Axis {
        let values = (0..n)
            .map(|s| AxisValue {
                name: s.to_string(),
                overrides: Table::from_iter([("seed".to_string(), Value::Integer(s as i64))]),
                anchor: Vec::new(),
            })
            .collect();
        Axis { name: "seed".into(), values }
    }
}

/// Overrides applied to the cells whose coordinates match.
#[derive(Debug, Clone, PartialEq)]
struct When {
    /// (axis name, accepted value names).
    matches: Vec<(String, Vec<String>)>,
    set: Table,
    anchor: Vec<Seg>,
}

/// Whether a cell has, on every matched axis, one of the accepted values.
fn cell_matches(matches: &[(String, Vec<String>)], axes: &[Axis], cell: &[usize]) -> bool {
    matches.iter().all(|(axis, names)| {
        axes.iter().position(|a| &a.name == axis).is_some_and(|i| names.contains(&axes[i].values[cell[i]].name))
    })
}

impl When {
    fn applies(&self, axes: &[Axis], cell: &[usize]) -> bool {
        cell_matches(&self.matches, axes, cell)
    }
}

/// Cells of the grid that are not runs (e.g. BYOL with different weights, which the paper's
/// table leaves empty), and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exclusion {
    /// (axis name, value names).
    #[serde(rename = "match")]
    pub matches: Vec<(String, Vec<String>)>,
    pub why: String,
}

impl Exclusion {
    pub fn applies(&self, axes: &[Axis], cell: &[usize]) -> bool {
        cell_matches(&self.matches, axes, cell)
    }
}

/// A profile: overrides for every run, its own cell overrides, and a sentence on what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub about: String,
    pub overrides: Table,
    when: Vec<When>,
}

/// The paper's numbers for the cells matching `at` (grid coordinates).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    pub at: BTreeMap<String, String>,
    /// Metric (one of [`REFERENCE_METRICS`]) → value in percent.
    pub values: BTreeMap<String, f64>,
    pub source: String,
}

/// A parsed experiment file.
#[derive(Debug, Clone)]
pub struct ExperimentFile {
    pub path: PathBuf,
    pub meta: ExperimentMeta,
    base: Table,
    /// The grid's axes in file order (none: the file is one run).
    pub axes: Vec<Axis>,
    when: Vec<When>,
    pub exclusions: Vec<Exclusion>,
    pub references: Vec<Reference>,
    pub profiles: BTreeMap<String, Profile>,
    text: String,
}

/// One `--set key.path=value` override; the value is TOML (bare words are strings).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: Vec<String>,
    pub value: Value,
    pub raw: String,
}

impl std::str::FromStr for Override {
    type Err = Error;

    fn from_str(arg: &str) -> Result<Self> {
        let bad = |what: &str| Error::Override { arg: arg.to_string(), what: what.to_string() };
        let (key, value) = arg.split_once('=').ok_or_else(|| bad("expected KEY=VALUE, e.g. train.epochs=2"))?;
        let key: Vec<String> = key.trim().split('.').map(|s| s.trim().to_string()).collect();
        if key.iter().any(String::is_empty) {
            return Err(bad("the key has an empty part; expected a dotted path such as optimizer.lr"));
        }
        if RESERVED.contains(&key[0].as_str()) {
            return Err(bad(&format!("`{}` is set by infomax, not by overrides", key[0])));
        }
        let value = value.trim();
        let value = match toml::from_str::<Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").expect("parsed table has v"),
            Err(_) => Value::String(value.to_string()),
        };
        Ok(Override { key, value, raw: arg.to_string() })
    }
}

/// Find an experiment by name (`experiments/NAME.toml`) or path.
pub fn locate(name_or_path: &str, experiments_dir: &Path) -> Result<PathBuf> {
    let as_path = PathBuf::from(name_or_path);
    if as_path.extension().is_some() || name_or_path.contains('/') {
        if as_path.is_file() {
            return Ok(as_path);
        }
        return Err(Error::Experiment { path: as_path, what: "no such experiment file".into() });
    }
    let candidate = experiments_dir.join(format!("{name_or_path}.toml"));
    if candidate.is_file() {
        return Ok(candidate);
    }
    let known = known_experiments(experiments_dir);
    Err(Error::Experiment {
        path: candidate,
        what: format!(
            "no experiment named `{name_or_path}`{}; known in {}: {}",
            did_you_mean(name_or_path, known.iter().map(String::as_str)),
            experiments_dir.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ),
    })
}

/// The experiment names (file stems) in a folder, sorted.
pub fn known_experiments(experiments_dir: &Path) -> Vec<String> {
    let mut known: Vec<String> = std::fs::read_dir(experiments_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    known
}

/// `; did you mean `x`?` when a candidate is close to `word`, else nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(word, c), c))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// Merge `over` into `base`, table by table; any other value replaces.
pub fn deep_merge(base: &mut Table, over: &Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn set_path(table: &mut Table, key: &[String], value: Value) -> std::result::Result<(), String> {
    let (last, parents) = key.split_last().expect("keys are non-empty");
    let mut t = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = t.entry(part.clone()).or_insert_with(|| Value::Table(Table::new()));
        t = match entry {
            Value::Table(inner) => inner,
            _ => return Err(format!("`{}` is a value, not a table", parents[..=i].join("."))),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// Whether `table` sets the dotted `path` (or a table on the way to it).
fn sets_path(table: &Table, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    match (table.get(first), rest.is_empty()) {
        (Some(_), true) => true,
        (Some(Value::Table(t)), false) => sets_path(t, rest),
        (Some(_), false) => true,
        (None, _) => false,
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where a path is written in the document: the key (or array element) of its deepest part
/// that exists.
fn position_of(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut span: Option<std::ops::Range<usize>> = None;
    let mut node: Option<&DeValue> = None;
    let root = doc.get_ref();
    for seg in path {
        let table = match node {
            None => Some(root),
            Some(DeValue::Table(t)) => Some(t),
            _ => None,
        };
        match (seg, table, node) {
            (Seg::Key(k), Some(t), _) => {
                let Some((key, value)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k.as_str()) else {
                    break;
                };
                span = Some(key.span());
                node = Some(value.get_ref());
            }
            (Seg::Index(i), _, Some(DeValue::Array(a))) => {
                let Some(v) = a.get(*i) else { break };
                span = Some(v.span());
                node = Some(v.get_ref());
            }
            _ => break,
        }
    }
    span.map(|s| line_col(text, s.start))
}

/// A readable name for a scalar axis value (`cifar10`, `4`, `0.5`, `[8, 4]`).
fn value_name(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl ExperimentFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// An error at a place in the file.
    fn at(&self, anchor: &[Seg], field: impl Into<String>, what: impl Into<String>) -> Error {
        Error::Field {
            path: self.path.clone(),
            at: position_of(&self.text, anchor),
            field: field.into(),
            what: what.into(),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| Error::Experiment { path: path.to_path_buf(), what: e.to_string().trim_end().to_string() })?;
        let mut file = Self {
            path: path.to_path_buf(),
            meta: raw.experiment,
            base: raw.base,
            axes: Vec::new(),
            when: Vec::new(),
            exclusions: Vec::new(),
            references: Vec::new(),
            profiles: BTreeMap::new(),
            text: text.to_string(),
        };
        file.check_reserved(&file.base, &keys(&["base"]))?;
        file.axes = file.parse_axes(&raw.grid)?;
        file.when = raw
            .when
            .iter()
            .enumerate()
            .map(|(i, t)| file.parse_when(t, vec![Seg::Key("when".into()), Seg::Index(i)], "when"))
            .collect::<Result<_>>()?;
        file.exclusions = raw
            .exclude
            .iter()
            .enumerate()
            .map(|(i, t)| file.parse_exclusion(t, vec![Seg::Key("exclude".into()), Seg::Index(i)]))
            .collect::<Result<_>>()?;
        for (name, value) in &raw.profiles {
            let anchor = keys(&["profiles", name]);
            let Value::Table(table) = value else {
                return Err(file.at(&anchor, format!("profiles.{name}"), "a table of overrides expected"));
            };
            let profile = file.parse_profile(name, table.clone(), anchor)?;
            file.profiles.insert(name.clone(), profile);
        }
        file.references = raw
            .reference
            .iter()
            .enumerate()
            .map(|(i, t)| file.parse_reference(t, vec![Seg::Key("reference".into()), Seg::Index(i)]))
            .collect::<Result<_>>()?;
        Ok(file)
    }

    fn check_reserved(&self, table: &Table, anchor: &[Seg]) -> Result<()> {
        for key in RESERVED {
            if table.contains_key(key) {
                let mut at = anchor.to_vec();
                at.push(Seg::Key(key.into()));
                return Err(self.at(
                    &at,
                    key,
                    "is set by infomax (the file's name, the profile, the grid coordinates); remove it",
                ));
            }
        }
        Ok(())
    }

    fn parse_axes(&self, grid: &Table) -> Result<Vec<Axis>> {
        let mut axes = Vec::new();
        for (name, spec) in grid {
            let anchor = keys(&["grid", name]);
            let field = format!("grid.{name}");
            let values: Vec<AxisValue> = match spec {
                // `dataset = ["cifar10", "stl10"]`: each value sets the (dotted) key of the axis.
                Value::Array(items) => {
                    let key: Vec<String> = name.split('.').map(str::to_string).collect();
                    if RESERVED.contains(&key[0].as_str()) || key.iter().any(String::is_empty) {
                        return Err(self.at(
                            &anchor,
                            field,
                            "an axis must name a field of the run, e.g. `dataset` or `train.views`",
                        ));
                    }
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let mut overrides = Table::new();
                            set_path(&mut overrides, &key, v.clone()).expect("a fresh table takes any path");
                            let mut at = anchor.clone();
                            at.push(Seg::Index(i));
                            AxisValue { name: value_name(v), overrides, anchor: at }
                        })
                        .collect()
                }
                // `[grid.method]` with `w-mse-4 = { method = "w-mse", train = { views = 4 } }`.
                Value::Table(named) => named
                    .iter()
                    .map(|(vname, v)| {
                        let mut at = anchor.clone();
                        at.push(Seg::Key(vname.clone()));
                        match v {
                            Value::Table(t) => {
                                self.check_reserved(t, &at)?;
                                Ok(AxisValue { name: vname.clone(), overrides: t.clone(), anchor: at })
                            }
                            other => Err(self.at(
                                &at,
                                format!("{field}.{vname}"),
                                format!(
                                    "a table of overrides expected (e.g. {{ method = \"w-mse\" }}), got {}",
                                    other.type_str()
                                ),
                            )),
                        }
                    })
                    .collect::<Result<_>>()?,
                other => {
                    return Err(self.at(
                        &anchor,
                        field,
                        format!("an array of values or a table of named values expected, got {}", other.type_str()),
                    ))
                }
            };
            if values.is_empty() {
                return Err(self.at(&anchor, field, "an axis needs at least one value"));
            }
            let mut seen = std::collections::BTreeSet::new();
            for v in &values {
                if !seen.insert(v.name.as_str()) {
                    return Err(self.at(&v.anchor, field.clone(), format!("value `{}` appears twice", v.name)));
                }
            }
            axes.push(Axis { name: name.clone(), values });
        }
        Ok(axes)
    }

    fn axis_names(&self) -> String {
        if self.axes.is_empty() {
            "none: this file has no [grid]".into()
        } else {
            self.axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
        }
    }

    /// Check `axis = value` against the grid; `anchor` locates it for the message.
    fn check_coordinate(&self, axis: &str, value: &str, anchor: &[Seg], field: &str) -> Result<()> {
        let Some(a) = self.axes.iter().find(|a| a.name == axis) else {
            return Err(self.at(
                anchor,
                field,
                format!(
                    "no axis `{axis}`{}; the grid's axes: {}",
                    did_you_mean(axis, self.axes.iter().map(|a| a.name.as_str())),
                    self.axis_names()
                ),
            ));
        };
        if a.value_index(value).is_none() {
            let names: Vec<&str> = a.values.iter().map(|v| v.name.as_str()).collect();
            return Err(self.at(
                anchor,
                field,
                format!(
                    "axis `{axis}` has no value `{value}`{}; its values: {}",
                    did_you_mean(value, names.iter().copied()),
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn parse_when(&self, t: &Table, anchor: Vec<Seg>, field: &str) -> Result<When> {
        let sub = |k: &str| {
            let mut a = anchor.clone();
            a.push(Seg::Key(k.into()));
            a
        };
        for k in t.keys() {
            if k != "match" && k != "set" {
                return Err(self.at(
                    &sub(k),
                    format!("{field}.{k}"),
                    format!("unknown key{}; a `when` has `match` and `set`", did_you_mean(k, ["match", "set"])),
                ));
            }
        }
        let Some(Value::Table(set)) = t.get("set") else {
            return Err(self.at(
                &anchor,
                format!("{field}.set"),
                "a table of overrides expected, e.g. set = { train = { epochs = 2 } }",
            ));
        };
        self.check_reserved(set, &sub("set"))?;
        let matches = self.parse_match(t, &anchor, field)?;
        Ok(When { matches, set: set.clone(), anchor: sub("set") })
    }

    /// A `match = { axis = value or [values] }` table, every axis and value checked.
    fn parse_match(&self, t: &Table, anchor: &[Seg], field: &str) -> Result<Vec<(String, Vec<String>)>> {
        let Some(Value::Table(m)) = t.get("match") else {
            return Err(self.at(
                anchor,
                format!("{field}.match"),
                "a table of axis = value(s) expected, e.g. match = { dataset = \"stl10\" }",
            ));
        };
        let mut matches = Vec::new();
        for (axis, v) in m {
            let mut at = anchor.to_vec();
            at.extend([Seg::Key("match".into()), Seg::Key(axis.clone())]);
            let names: Vec<String> = match v {
                Value::Array(items) => items.iter().map(value_name).collect(),
                other => vec![value_name(other)],
            };
            for n in &names {
                self.check_coordinate(axis, n, &at, &format!("{field}.match.{axis}"))?;
            }
            matches.push((axis.clone(), names));
        }
        Ok(matches)
    }

    fn parse_exclusion(&self, t: &Table, anchor: Vec<Seg>) -> Result<Exclusion> {
        for k in t.keys() {
            if k != "match" && k != "why" {
                let mut at = anchor.clone();
                at.push(Seg::Key(k.clone()));
                return Err(self.at(
                    &at,
                    format!("exclude.{k}"),
                    format!("unknown key{}; an `exclude` has `match` and `why`", did_you_mean(k, ["match", "why"])),
                ));
            }
        }
        let why = match t.get("why") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(self.at(&anchor, "exclude.why", "a sentence saying why these cells are not run expected")),
        };
        Ok(Exclusion { matches: self.parse_match(t, &anchor, "exclude")?, why })
    }

    fn parse_profile(&self, name: &str, mut table: Table, anchor: Vec<Seg>) -> Result<Profile> {
        let field = |k: &str| format!("profiles.{name}.{k}");
        let sub = |k: &str| {
            let mut a = anchor.clone();
            a.push(Seg::Key(k.into()));
            a
        };
        let about = match table.remove("about") {
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(self.at(
                    &sub("about"),
                    field("about"),
                    format!("a string expected, got {}", other.type_str()),
                ))
            }
            None => {
                return Err(self.at(&anchor, field("about"), "missing: say what the profile costs and what it is for"))
            }
        };
        let when = match table.remove("when") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let mut at = sub("when");
                    at.push(Seg::Index(i));
                    match item {
                        Value::Table(t) => self.parse_when(t, at, &field("when")),
                        _ => Err(self.at(&at, field("when"), "a table with `match` and `set` expected")),
                    }
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(self.at(&sub("when"), field("when"), "an array of [[profiles.NAME.when]] tables expected"))
            }
        };
        self.check_reserved(&table, &anchor)?;
        Ok(Profile { about, overrides: table, when })
    }

    fn parse_reference(&self, t: &Table, anchor: Vec<Seg>) -> Result<Reference> {
        let sub = |k: &str| {
            let mut a = anchor.clone();
            a.push(Seg::Key(k.into()));
            a
        };
        let mut at = BTreeMap::new();
        match t.get("at") {
            Some(Value::Table(coords)) => {
                for (axis, v) in coords {
                    let mut a = sub("at");
                    a.push(Seg::Key(axis.clone()));
                    let name = value_name(v);
                    if axis == "seed" {
                        return Err(self.at(
                            &a,
                            format!("reference.at.{axis}"),
                            "a reference is per cell, over all seeds",
                        ));
                    }
                    self.check_coordinate(axis, &name, &a, &format!("reference.at.{axis}"))?;
                    at.insert(axis.clone(), name);
                }
            }
            _ => {
                return Err(self.at(
                    &anchor,
                    "reference.at",
                    "a table of grid coordinates expected, e.g. at = { method = \"simclr\", dataset = \"cifar10\" }",
                ))
            }
        }
        let source = match t.get("source") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(self.at(
                    &anchor,
                    "reference.source",
                    "a string naming where the numbers come from expected (paper, table)",
                ))
            }
        };
        let mut values = BTreeMap::new();
        for (k, v) in t {
            if k == "at" || k == "source" {
                continue;
            }
            if !REFERENCE_METRICS.contains(&k.as_str()) {
                return Err(self.at(
                    &sub(k),
                    format!("reference.{k}"),
                    format!(
                        "unknown metric{}; expected at, source and one or more of {}",
                        did_you_mean(k, REFERENCE_METRICS),
                        REFERENCE_METRICS.join(", ")
                    ),
                ));
            }
            let x = match v {
                Value::Float(x) => *x,
                Value::Integer(i) => *i as f64,
                other => {
                    return Err(self.at(
                        &sub(k),
                        format!("reference.{k}"),
                        format!("a number (percent) expected, got {}", other.type_str()),
                    ))
                }
            };
            if !(0.0..=100.0).contains(&x) {
                return Err(self.at(
                    &sub(k),
                    format!("reference.{k}"),
                    format!("a percentage in [0, 100] expected, got {x}"),
                ));
            }
            values.insert(k.clone(), x);
        }
        if values.is_empty() {
            return Err(self.at(
                &anchor,
                "reference",
                format!("no metric: give one or more of {}", REFERENCE_METRICS.join(", ")),
            ));
        }
        Ok(Reference { at, values, source })
    }

    fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| Error::Experiment {
            path: self.path.clone(),
            what: format!(
                "no profile `{name}`{}; this file has: {}",
                did_you_mean(name, self.profiles.keys().map(String::as_str)),
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// Every cell of the grid over `axes` (value index per axis), the last axis varying fastest.
    pub fn cells(axes: &[Axis]) -> Vec<Vec<usize>> {
        let mut cells = vec![Vec::new()];
        for axis in axes {
            cells = cells
                .into_iter()
                .flat_map(|c| {
                    (0..axis.values.len()).map(move |i| {
                        let mut c = c.clone();
                        c.push(i);
                        c
                    })
                })
                .collect();
        }
        cells
    }

    /// The single run of a file without a grid.
    pub fn resolve(&self, profile: &str, overrides: &[Override]) -> Result<RunSpec> {
        if !self.axes.is_empty() {
            return Err(Error::Experiment {
                path: self.path.clone(),
                what: format!("this file is a grid over {}; plan it instead of resolving one run", self.axis_names()),
            });
        }
        self.resolve_cell(profile, &[], &[], overrides)
    }

    /// Resolve the run at `cell` of the grid over `axes` (the file's, or with `--seeds` applied)
    /// under `profile` and command-line overrides into a complete [`RunSpec`].
    pub fn resolve_cell(
        &self,
        profile: &str,
        axes: &[Axis],
        cell: &[usize],
        overrides: &[Override],
    ) -> Result<RunSpec> {
        let p = self.profile(profile)?;
        let mut layers: Vec<(Vec<Seg>, &Table)> = vec![(keys(&["base"]), &self.base)];
        for (axis, &i) in axes.iter().zip(cell) {
            layers.push((axis.values[i].anchor.clone(), &axis.values[i].overrides));
        }
        for w in self.when.iter().chain(&p.when) {
            if w.applies(axes, cell) {
                layers.push((w.anchor.clone(), &w.set));
            }
        }
        // The profile's own overrides come before its `when`s, after the file's.
        let profile_at = layers.len() - p.when.iter().filter(|w| w.applies(axes, cell)).count();
        layers.insert(profile_at, (keys(&["profiles", profile]), &p.overrides));

        let mut merged = Table::new();
        for (_, table) in &layers {
            deep_merge(&mut merged, table);
        }
        for o in overrides {
            set_path(&mut merged, &o.key, o.value.clone())
                .map_err(|what| Error::Override { arg: o.raw.clone(), what })?;
        }
        let fail = |field: &str, what: String| self.resolution_error(&layers, overrides, field, what);
        let pick = |key: &str, default: &str| -> Result<Value> {
            Ok(merged.get(key).cloned().unwrap_or_else(|| Value::String(default.into())))
        };
        let method = Method::deserialize(pick("method", "vicreg")?).map_err(|e| fail("method", e.to_string()))?;
        let dataset = Dataset::deserialize(pick("dataset", "cifar10")?).map_err(|e| fail("dataset", e.to_string()))?;
        let mut defaults = RunSpec::defaults(method, dataset);
        if let Some(preset) = merged.get("augment").and_then(|a| a.get("preset")) {
            let preset = Preset::deserialize(preset.clone()).map_err(|e| fail("augment.preset", e.to_string()))?;
            defaults.augment = RunSpec::augment_defaults(preset, dataset);
        }
        let mut full = match Value::try_from(&defaults).expect("defaults serialise to TOML") {
            Value::Table(t) => t,
            _ => unreachable!("a struct serialises to a table"),
        };
        deep_merge(&mut full, &merged);
        // The second branch's encoder is the run's, changed only where the file says.
        if let (Some(Value::Table(encoder)), Some(Value::Table(branch))) =
            (full.get("encoder").cloned(), full.get_mut("branch_b"))
        {
            let mut resolved = encoder;
            if let Some(Value::Table(own)) = branch.get("encoder") {
                deep_merge(&mut resolved, own);
            }
            branch.insert("encoder".into(), Value::Table(resolved));
        }
        full.insert("experiment".into(), Value::String(self.meta.name.clone()));
        full.insert("profile".into(), Value::String(profile.to_string()));
        let grid: Table = axes
            .iter()
            .zip(cell)
            .filter(|(a, _)| !a.is_seed())
            .map(|(a, &i)| (a.name.clone(), Value::String(a.values[i].name.clone())))
            .collect();
        full.insert("grid".into(), Value::Table(grid));
        let spec: RunSpec = serde_path_to_error::deserialize(Value::Table(full))
            .map_err(|e| fail(&e.path().to_string(), e.inner().to_string()))?;
        crate::validate::validate(&spec).map_err(|(field, what)| fail(field, what))?;
        Ok(spec)
    }

    /// Name where a bad field was set: the last layer that sets it (its line and column), or the
    /// `--set` that did; unknown keys get the closest valid one.
    fn resolution_error(
        &self,
        layers: &[(Vec<Seg>, &Table)],
        overrides: &[Override],
        field: &str,
        what: String,
    ) -> Error {
        let mut path: Vec<String> = field.split('.').filter(|s| !s.is_empty() && *s != "?").map(String::from).collect();
        // The deserializer appends `\nin `field`` lines: the field is named already.
        let mut what = what.lines().next().unwrap_or_default().trim_end().to_string();
        if let Some(unknown) = what.strip_prefix("unknown field `").and_then(|r| r.split('`').next()).map(String::from)
        {
            if path.last() != Some(&unknown) {
                path.push(unknown.clone());
            }
            let expected: Vec<&str> = what.split('`').skip(3).step_by(2).collect();
            let hint = did_you_mean(&unknown, expected.iter().copied());
            what.push_str(&hint);
        }
        let field = path.join(".");
        if let Some(o) = overrides.iter().rev().find(|o| path.starts_with(&o.key) || o.key.starts_with(&path)) {
            return Error::Override {
                arg: o.raw.clone(),
                what: format!("field `{field}` of the runs of {}: {what}", self.path.display()),
            };
        }
        let Some((anchor, _)) = layers.iter().rev().find(|(_, t)| sets_path(t, &path)) else {
            let what = format!("{what} (the built-in default for this method and dataset: set `{field}` in the file)");
            return Error::Field { path: self.path.clone(), at: None, field, what };
        };
        let mut full = anchor.clone();
        full.extend(path.iter().map(|k| Seg::Key(k.clone())));
        Error::Field { path: self.path.clone(), at: position_of(&self.text, &full), field, what }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[experiment]
name = "t"
title = "test"
paper = "VICReg"
reproduces = "nothing"

[base]
method = "vicreg"
dataset = "cifar10"
projector = { widths = [64, 32] }
optimizer = { warmup_epochs = 1 }

[base.train]
epochs = 3
batch_size = 16
train_images = 64

[profiles.smoke]
about = "tiny"
encoder = { width = 0.25 }

[profiles.other]
about = "other"
train = { epochs = 9 }
"#;

    fn parse(text: &str) -> Result<ExperimentFile> {
        ExperimentFile::parse(Path::new("experiments/t.toml"), text)
    }

    #[test]
    fn profile_and_overrides_layer_over_defaults() {
        let f = parse(FILE).unwrap();
        let s = f.resolve("smoke", &[]).unwrap();
        assert_eq!(s.encoder.width, 0.25);
        assert_eq!(s.train.epochs, 3);
        assert_eq!(s.projector.widths, vec![64, 32]);
        assert_eq!(s.optimizer.momentum, 0.9, "default kept");
        assert_eq!(s.profile, "smoke");
        let o: Override = "train.epochs=5".parse().unwrap();
        let m: Override = "optimizer.kind=adam".parse().unwrap();
        let s2 = f.resolve("smoke", &[o, m]).unwrap();
        assert_eq!(s2.train.epochs, 5);
        assert_eq!(s2.optimizer.kind, crate::spec::OptimizerKind::Adam);
        assert_ne!(s.hash(), s2.hash());
        assert_eq!(f.resolve("other", &[]).unwrap().train.epochs, 9);
    }

    #[test]
    fn unknown_key_names_file_and_field() {
        let text = FILE.replace("epochs = 3", "epochs = 3\nepohcs = 4");
        let err = parse(&text).unwrap().resolve("smoke", &[]).unwrap_err().to_string();
        assert!(err.contains("experiments/t.toml") && err.contains("train") && err.contains("epohcs"), "{err}");
    }

    #[test]
    fn wrong_type_and_bad_values_are_named() {
        let text = FILE.replace("epochs = 3", "epochs = \"three\"");
        let err = parse(&text).unwrap().resolve("smoke", &[]).unwrap_err().to_string();
        assert!(err.contains("train.epochs"), "{err}");
        let err = parse(FILE).unwrap().resolve("smoke", &["train.batch_size=1".parse().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("train.batch_size"), "{err}");
        let err = parse(FILE).unwrap().resolve("nope", &[]).unwrap_err().to_string();
        assert!(err.contains("no profile `nope`") && err.contains("smoke"), "{err}");
        let err = parse(&FILE.replace("method = \"vicreg\"", "method = \"vicrag\"")).unwrap();
        let err = err.resolve("smoke", &[]).unwrap_err().to_string();
        assert!(err.contains("method") && err.contains("vicrag"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_line_numbers_and_profiles_need_about() {
        let err = parse("[experiment\nname=1").unwrap_err().to_string();
        assert!(err.contains("experiments/t.toml") && err.contains("line 1"), "{err}");
        let err = parse(&FILE.replace("about = \"tiny\"\n", "")).unwrap_err().to_string();
        assert!(err.contains("profiles.smoke.about"), "{err}");
    }

    #[test]
    fn override_values_parse_as_toml_or_words() {
        let o: Override = "projector=[8, 4]".parse().unwrap();
        assert_eq!(o.value, Value::Array(vec![Value::Integer(8), Value::Integer(4)]));
        let o: Override = "method=vicreg".parse().unwrap();
        assert_eq!(o.value, Value::String("vicreg".into()));
        assert!("nokey".parse::<Override>().is_err());
    }

    #[test]
    fn augment_preset_dataset_defaults_and_per_view_overrides() {
        let f = parse(FILE).unwrap();
        let s = f.resolve("smoke", &[]).unwrap();
        assert_eq!(s.augment.preset, Preset::Wmse);
        assert_eq!((s.augment.size(), s.augment.eval_resize, s.encoder.max_pool), (32, 0, false));
        let set = |a: &str| a.parse::<Override>().unwrap();
        let s = f
            .resolve("smoke", &[set("dataset=stl10"), set("augment.preset=fair"), set("augment.view_b.solarize_p=0.5")])
            .unwrap();
        assert_eq!(s.augment.preset, Preset::Fair);
        assert_eq!((s.augment.view_a.blur_p, s.augment.view_b.solarize_p), (1.0, 0.5));
        assert_eq!((s.augment.size(), s.augment.eval_resize, s.augment.eval_crop), (64, 70, 64));
        assert_eq!(s.augment.mean, [0.43, 0.42, 0.39]);
        assert!(s.encoder.max_pool, "the W-MSE code keeps the max-pool on STL-10");
        let err = f.resolve("smoke", &[set("augment.preset=simclr")]).unwrap_err().to_string();
        assert!(err.contains("augment.preset") && err.contains("wmse") && err.contains("fair"), "{err}");
        let err = f.resolve("smoke", &[set("augment.view_a.blur_p=2")]).unwrap_err().to_string();
        assert!(err.contains("view_a.blur_p") && err.contains("[0, 1]"), "{err}");
        let err = f.resolve("smoke", &[set("dataset=imagenet")]).unwrap_err().to_string();
        assert!(err.contains("dataset") && err.contains("tiny-imagenet"), "{err}");
    }
}

#[cfg(test)]
mod shipped_files {
    use super::*;

    /// Every profile of every experiment file in `experiments/` resolves to a valid run.
    #[test]
    fn every_shipped_profile_resolves() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let file = ExperimentFile::load(&path).unwrap();
            assert!(!file.profiles.is_empty(), "{}: no profiles", path.display());
            for name in file.profiles.keys() {
                let plan = crate::plan::plan(&file, name, &[], &Default::default()).unwrap_or_else(|e| panic!("{e}"));
                assert!(!plan.is_empty());
                let mut hashes: Vec<String> = plan.iter().map(|r| r.spec.hash()).collect();
                hashes.sort();
                hashes.dedup();
                assert_eq!(hashes.len(), plan.len(), "{}: two cells resolve to the same run", path.display());
                assert!(plan.iter().all(|r| &r.spec.profile == name));
                seen += 1;
            }
        }
        assert!(seen >= 3, "smoke.toml alone has three profiles");
    }
}
