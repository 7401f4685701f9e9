//! `[[reference]]`: the paper's numbers for some cells of the grid.

use std::collections::BTreeMap;

use serde::Serialize;
use toml::{Table, Value};

use super::grid::value_name;
use super::position::Seg;
use super::{did_you_mean, ExperimentFile};
use crate::Result;

/// The metrics a `[[reference]]` entry may carry (top-1 % unless named otherwise).
pub const REFERENCE_METRICS: [&str; 4] = crate::store::Metric::KEYS;

/// The paper's numbers for the cells matching `at` (grid coordinates).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    pub at: BTreeMap<String, String>,
    /// Metric (one of [`REFERENCE_METRICS`]) → value in percent.
    pub values: BTreeMap<String, f64>,
    pub source: String,
}

impl ExperimentFile {
    pub(super) fn parse_reference(&self, t: &Table, anchor: Vec<Seg>) -> Result<Reference> {
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
}
