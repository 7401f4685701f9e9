//! `[profiles.NAME]`: overrides for every run, the profile's own `when`s, and what it costs.

use toml::{Table, Value};

use super::grid::{Deviation, When};
use super::position::Seg;
use super::{did_you_mean, ExperimentFile};
use crate::{Error, Result};

/// A profile: overrides for every run, its own cell overrides, and a sentence on what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub about: String,
    pub overrides: Table,
    pub(super) when: Vec<When>,
    /// Where the profile's recipe departs from its source, on the record.
    pub deviations: Vec<Deviation>,
}

impl ExperimentFile {
    pub(super) fn parse_profile(&self, name: &str, mut table: Table, anchor: Vec<Seg>) -> Result<Profile> {
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
        let deviations = match table.remove("deviation") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let mut at = sub("deviation");
                    at.push(Seg::Index(i));
                    match item {
                        Value::Table(t) => self.parse_deviation(t, at, &field("deviation")),
                        _ => Err(self.at(&at, field("deviation"), "a table with field, source, ours and why expected")),
                    }
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(self.at(
                    &sub("deviation"),
                    field("deviation"),
                    "an array of [[profiles.NAME.deviation]] tables expected",
                ))
            }
        };
        self.check_reserved(&table, &anchor)?;
        Ok(Profile { about, overrides: table, when, deviations })
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
