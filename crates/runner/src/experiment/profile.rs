//! `[profiles.NAME]`: overrides for every run, the profile's own `when`s, and what it costs.

use toml::{Table, Value};

use super::grid::{Axis, Deviation, Exclusion, Recipe, When};
use super::position::Seg;
use super::{did_you_mean, ExperimentFile};
use crate::config::RunConfig;
use crate::{Error, Result};

/// A profile: overrides for every run, its own cell overrides, and a sentence on what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub about: String,
    pub overrides: Table,
    pub(super) when: Vec<When>,
    /// The sources its cells follow.
    pub recipes: Vec<Recipe>,
    /// Where the profile's recipe departs from its source, on the record.
    pub deviations: Vec<Deviation>,
}

impl ExperimentFile {
    /// A profile, and the cells it leaves out (`[[profiles.NAME.exclude]]`).
    pub(super) fn parse_profile(
        &self,
        name: &str,
        mut table: Table,
        anchor: Vec<Seg>,
    ) -> Result<(Profile, Vec<Exclusion>)> {
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
        // `[[profiles.NAME.KEY]]`: its tables, each with its place in the file.
        let tables = |table: &mut Table, key: &str, what: &str| -> Result<Vec<(Table, Vec<Seg>)>> {
            match table.remove(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let mut at = sub(key);
                        at.push(Seg::Index(i));
                        match item {
                            Value::Table(t) => Ok((t, at)),
                            _ => Err(self.at(&at, field(key), format!("a table with {what} expected"))),
                        }
                    })
                    .collect(),
                Some(_) => {
                    Err(self.at(&sub(key), field(key), format!("an array of [[profiles.NAME.{key}]] tables expected")))
                }
            }
        };
        let when = tables(&mut table, "when", "`match` and `set`")?
            .into_iter()
            .map(|(t, at)| self.parse_when(&t, at, &field("when")))
            .collect::<Result<_>>()?;
        let deviations = tables(&mut table, "deviation", "field, source, ours and why")?
            .into_iter()
            .map(|(t, at)| self.parse_deviation(&t, at, &field("deviation")))
            .collect::<Result<_>>()?;
        let recipes = tables(&mut table, "recipe", "`source` (and `match`)")?
            .into_iter()
            .map(|(t, at)| self.parse_recipe(&t, at, &field("recipe")))
            .collect::<Result<_>>()?;
        let exclusions = tables(&mut table, "exclude", "`match` and `why`")?
            .into_iter()
            .map(|(t, at)| self.parse_exclusion(&t, at, &field("exclude"), Some(name)))
            .collect::<Result<_>>()?;
        self.check_reserved(&table, &anchor)?;
        Ok((Profile { about, overrides: table, when, recipes, deviations }, exclusions))
    }

    /// The recipe that the cell of `profile` follows; an error where two claim it.
    pub fn recipe_of(&self, profile: &str, axes: &[Axis], cell: &[usize]) -> Result<Option<&Recipe>> {
        let mut found = self.profile(profile)?.recipes.iter().filter(|r| r.applies(axes, cell));
        match (found.next(), found.next()) {
            (Some(a), Some(b)) => Err(Error::Experiment {
                path: self.path.clone(),
                what: format!(
                    "profiles.{profile}.recipe: the cell {} follows two recipes, `{}` and `{}`; narrow their `match`",
                    axes.iter()
                        .zip(cell)
                        .map(|(a, &i)| format!("{}={}", a.name, a.values[i].name))
                        .collect::<Vec<_>>()
                        .join(" "),
                    a.source,
                    b.source
                ),
            }),
            (one, _) => Ok(one),
        }
    }

    /// Each deviation of `profile` names a field that its runs have (`train.precision`, or a
    /// table such as `augment.view_b`): a misspelt one would stand beside no number.
    pub fn check_deviation_fields<'a>(&self, profile: &str, runs: impl Iterator<Item = &'a RunConfig>) -> Result<()> {
        let mut known: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for config in runs {
            for key in config.fields().into_keys() {
                let parts: Vec<&str> = key.split('.').collect();
                for n in 1..=parts.len() {
                    known.insert(parts[..n].join("."));
                }
            }
        }
        if known.is_empty() {
            return Ok(());
        }
        for (i, d) in self.profile(profile)?.deviations.iter().enumerate() {
            if !known.contains(&d.field) {
                return Err(Error::Experiment {
                    path: self.path.clone(),
                    what: format!(
                        "profiles.{profile}.deviation[{i}].field: `{}` is no field of its runs{}; e.g. `train.precision`",
                        d.field,
                        did_you_mean(&d.field, known.iter().map(String::as_str))
                    ),
                });
            }
        }
        Ok(())
    }

    pub(super) fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| Error::Experiment {
            path: self.path.clone(),
            what: format!(
                "no profile `{name}`{}; this file has: {}",
                did_you_mean(name, self.profiles.keys().map(String::as_str)),
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }
}
