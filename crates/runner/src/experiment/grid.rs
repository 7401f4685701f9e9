//! The grid: its axes and their named values, the cells they span, and the `[[when]]` and
//! `[[exclude]]` entries that match cells by their coordinates.

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::layering::set_path;
use super::position::{keys, Seg};
use super::{did_you_mean, ExperimentFile, RESERVED};
use crate::Result;

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
    pub(super) anchor: Vec<Seg>,
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
pub(super) struct When {
    /// (axis name, accepted value names).
    matches: Vec<(String, Vec<String>)>,
    pub(super) set: Table,
    pub(super) anchor: Vec<Seg>,
}

/// Whether a cell has, on every matched axis, one of the accepted values.
fn cell_matches(matches: &[(String, Vec<String>)], axes: &[Axis], cell: &[usize]) -> bool {
    matches.iter().all(|(axis, names)| {
        axes.iter().position(|a| &a.name == axis).is_some_and(|i| names.contains(&axes[i].values[cell[i]].name))
    })
}

impl When {
    pub(super) fn applies(&self, axes: &[Axis], cell: &[usize]) -> bool {
        cell_matches(&self.matches, axes, cell)
    }
}

/// Cells of the grid that are not runs (e.g. BYOL with different weights, which the paper's
/// table leaves empty), and why: `[[exclude]]` for every profile, `[[profiles.P.exclude]]` for
/// one (a CPU profile leaving out a 16,384-wide projector the paper's profile trains).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exclusion {
    /// (axis name, value names).
    #[serde(rename = "match")]
    pub matches: Vec<(String, Vec<String>)>,
    pub why: String,
    /// The profiles it holds for; empty: every profile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

impl Exclusion {
    /// Whether it leaves out `cell` of `profile`.
    pub fn applies(&self, profile: &str, axes: &[Axis], cell: &[usize]) -> bool {
        self.holds_for(profile) && cell_matches(&self.matches, axes, cell)
    }

    /// Whether it holds for `profile`.
    pub fn holds_for(&self, profile: &str) -> bool {
        self.profiles.is_empty() || self.profiles.iter().any(|p| p == profile)
    }
}

/// Where a profile's recipe departs from its source on purpose (`[[profiles.P.deviation]]`): the
/// field, the source's value and ours, and why; for the cells `matches` picks (all when empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deviation {
    /// (axis name, value names); empty: every cell of the profile.
    #[serde(rename = "match")]
    pub matches: Vec<(String, Vec<String>)>,
    /// The configuration field (`train.precision`).
    pub field: String,
    /// What the source does, and where (`fp16 autocast, main.py line 130`).
    pub source: String,
    /// What the profile does instead.
    pub ours: String,
    pub why: String,
}

/// The source a profile's cells follow (`[[profiles.P.recipe]]`): a repository at a commit and its
/// files, or a paper's section; for the cells `matches` picks (all when empty). A cell follows at
/// most one recipe; where it departs from it, a [`Deviation`] says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// (axis name, value names); empty: every cell of the profile.
    #[serde(rename = "match")]
    pub matches: Vec<(String, Vec<String>)>,
    /// `facebookresearch/barlowtwins 8e8d284 main.py`.
    pub source: String,
}

impl Recipe {
    pub fn applies(&self, axes: &[Axis], cell: &[usize]) -> bool {
        cell_matches(&self.matches, axes, cell)
    }
}

impl Deviation {
    /// Whether it covers the cell at `coords` (axis name, value name).
    pub fn covers(&self, coords: &[(String, String)]) -> bool {
        self.matches.iter().all(|(axis, values)| coords.iter().any(|(a, v)| a == axis && values.contains(v)))
    }
}

/// A readable name for a scalar axis value (`cifar10`, `4`, `0.5`, `[8, 4]`).
pub(super) fn value_name(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl ExperimentFile {
    pub(super) fn parse_axes(&self, grid: &Table) -> Result<Vec<Axis>> {
        let mut axes = Vec::new();
        for (name, config) in grid {
            let anchor = keys(&["grid", name]);
            let field = format!("grid.{name}");
            let values: Vec<AxisValue> = match config {
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

    pub(super) fn axis_names(&self) -> String {
        if self.axes.is_empty() {
            "none: this file has no [grid]".into()
        } else {
            self.axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
        }
    }

    /// Check `axis = value` against the grid; `anchor` locates it for the message.
    pub(super) fn check_coordinate(&self, axis: &str, value: &str, anchor: &[Seg], field: &str) -> Result<()> {
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

    pub(super) fn parse_when(&self, t: &Table, anchor: Vec<Seg>, field: &str) -> Result<When> {
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

    /// Every key of `t` is one of `keys`; else the error names the unknown key, the closest
    /// known one, and what `has` (`a deviation has match, field, …`).
    fn check_keys(&self, t: &Table, anchor: &[Seg], field: &str, keys: &[&str], has: &str) -> Result<()> {
        match t.keys().find(|k| !keys.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => {
                let mut at = anchor.to_vec();
                at.push(Seg::Key(k.clone()));
                Err(self.at(
                    &at,
                    format!("{field}.{k}"),
                    format!("unknown key{}; {has} {}", did_you_mean(k, keys.iter().copied()), keys.join(", ")),
                ))
            }
        }
    }

    /// A `[[profiles.P.deviation]]` table: `field`, `source`, `ours` and `why`, each a non-empty
    /// string, and an optional `match` of cells.
    pub(super) fn parse_deviation(&self, t: &Table, anchor: Vec<Seg>, field: &str) -> Result<Deviation> {
        self.check_keys(t, &anchor, field, &["match", "field", "source", "ours", "why"], "a deviation has")?;
        let text = |k: &str| -> Result<String> {
            match t.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                _ => Err(self.at(&anchor, format!("{field}.{k}"), "a non-empty string expected")),
            }
        };
        let matches = if t.contains_key("match") { self.parse_match(t, &anchor, field)? } else { Vec::new() };
        Ok(Deviation {
            matches,
            field: text("field")?,
            source: text("source")?,
            ours: text("ours")?,
            why: text("why")?,
        })
    }

    pub(super) fn parse_recipe(&self, t: &Table, anchor: Vec<Seg>, field: &str) -> Result<Recipe> {
        self.check_keys(t, &anchor, field, &["match", "source"], "a recipe has")?;
        let source = match t.get("source") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(self.at(
                &anchor,
                format!("{field}.source"),
                "a non-empty string naming the source expected (repository, commit and files, or a paper's section)",
            )),
        };
        let matches = if t.contains_key("match") { self.parse_match(t, &anchor, field)? } else { Vec::new() };
        Ok(Recipe { matches, source })
    }

    /// An `[[exclude]]` table (`field` "exclude"), or a profile's (`profiles.P.exclude`, holding
    /// for `profile` only).
    pub(super) fn parse_exclusion(
        &self,
        t: &Table,
        anchor: Vec<Seg>,
        field: &str,
        profile: Option<&str>,
    ) -> Result<Exclusion> {
        self.check_keys(t, &anchor, field, &["match", "why"], "an `exclude` has")?;
        let why = match t.get("why") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                return Err(self.at(
                    &anchor,
                    format!("{field}.why"),
                    "a sentence saying why these cells are not run expected",
                ))
            }
        };
        Ok(Exclusion {
            matches: self.parse_match(t, &anchor, field)?,
            why,
            profiles: profile.into_iter().map(str::to_string).collect(),
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
}
