//! A sweep's plan: the runs an experiment file expands to under a profile, narrowed by
//! `--only`, widened by `--seeds`, sliced by `--shard`, and what differs between them. How long
//! they should take is `estimate`'s business.

use std::collections::BTreeMap;

use crate::config::{Axis, ExperimentFile, Override};
use crate::spec::RunSpec;
use crate::{Error, Result};

/// `--shard I/N`: the I-th of N deterministic slices of a plan (1 ≤ I ≤ N), for N processes
/// (e.g. the tasks of a cluster job array) that each run one slice into their own database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |what: String| Error::Option { option: format!("--shard {s}"), what };
        let (i, n) = s.split_once('/').ok_or_else(|| bad("I/N expected, e.g. 1/4".into()))?;
        let parse = |x: &str| x.trim().parse::<usize>().map_err(|_| bad(format!("`{x}` is not a whole number")));
        let (index, count) = (parse(i)?, parse(n)?);
        if count == 0 || index == 0 || index > count {
            return Err(bad(format!("1 ≤ I ≤ N expected (slices are numbered from 1), got {index}/{count}")));
        }
        Ok(Shard { index, count })
    }
}

/// What narrows or widens the file's grid.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--seeds N`: seeds 0..N (replacing a `seed` axis of the file).
    pub seeds: Option<usize>,
    /// `--only AXIS=VALUE`: keep cells with that value (several values of one axis: any of them).
    pub only: Vec<String>,
    pub shard: Option<Shard>,
}

/// One run of the plan: its grid coordinates (the seed included) and its resolved configuration.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub coords: Vec<(String, String)>,
    pub spec: RunSpec,
}

impl PlannedRun {
    /// `method=w-mse-4 dataset=cifar10 seed=0`.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = self.coords.iter().map(|(a, v)| format!("{a}={v}")).collect();
        if self.coords.iter().all(|(a, _)| a == "seed") {
            parts.insert(0, format!("method={} dataset={}", self.spec.method.name(), self.spec.dataset.name()));
        }
        if !self.coords.iter().any(|(a, _)| a == "seed") {
            parts.push(format!("seed={}", self.spec.seed));
        }
        parts.join(" ")
    }
}

/// Expand `file` under `profile` into its runs, in grid order (first axis outermost).
pub fn plan(
    file: &ExperimentFile,
    profile: &str,
    overrides: &[Override],
    opts: &PlanOptions,
) -> Result<Vec<PlannedRun>> {
    let mut axes: Vec<Axis> = file.axes.clone();
    if let Some(n) = opts.seeds {
        if n == 0 {
            return Err(Error::Option { option: "--seeds 0".into(), what: "at least one seed expected".into() });
        }
        match axes.iter_mut().find(|a| a.is_seed()) {
            Some(a) => *a = Axis::seeds(n),
            None => axes.push(Axis::seeds(n)),
        }
    }
    let mut wanted: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for only in &opts.only {
        let bad = |what: String| Error::Option { option: format!("--only {only}"), what };
        let (axis, value) =
            only.split_once('=').ok_or_else(|| bad("AXIS=VALUE expected, e.g. dataset=cifar10".into()))?;
        let (axis, value) = (axis.trim(), value.trim());
        let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
        let a = axes.iter().position(|a| a.name == axis).ok_or_else(|| {
            bad(format!(
                "no axis `{axis}`{}; the grid's axes: {}",
                crate::config::did_you_mean(axis, names.iter().copied()),
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ))
        })?;
        let values: Vec<&str> = axes[a].values.iter().map(|v| v.name.as_str()).collect();
        let v = values.iter().position(|v| *v == value).ok_or_else(|| {
            bad(format!(
                "axis `{axis}` has no value `{value}`{}; its values: {}",
                crate::config::did_you_mean(value, values.iter().copied()),
                values.join(", ")
            ))
        })?;
        wanted.entry(a).or_default().push(v);
    }
    let mut runs = Vec::new();
    for cell in ExperimentFile::cells(&axes) {
        if wanted.iter().any(|(a, vs)| !vs.contains(&cell[*a]))
            || file.exclusions.iter().any(|e| e.applies(&axes, &cell))
        {
            continue;
        }
        let spec = file.resolve_cell(profile, &axes, &cell, overrides)?;
        let coords = axes.iter().zip(&cell).map(|(a, &i)| (a.name.clone(), a.values[i].name.clone())).collect();
        runs.push(PlannedRun { coords, spec });
    }
    if let Some(Shard { index, count }) = opts.shard {
        runs = runs.into_iter().enumerate().filter(|(i, _)| i % count == index - 1).map(|(_, r)| r).collect();
    }
    Ok(runs)
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// For each run, the configuration fields whose values are not the same in every run of the plan
/// (`key=value`, sorted by key); the grid coordinates and the fields of sections the run does
/// not have (another method's parameters) are left out.
pub fn differences(runs: &[PlannedRun]) -> Vec<Vec<(String, String)>> {
    let flat: Vec<BTreeMap<String, String>> = runs
        .iter()
        .map(|r| {
            let mut out = BTreeMap::new();
            flatten("", &serde_json::to_value(&r.spec).expect("a RunSpec serialises"), &mut out);
            out.retain(|k, _| !k.starts_with("grid."));
            out
        })
        .collect();
    let all_keys: std::collections::BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    let varying: Vec<&String> =
        all_keys.into_iter().filter(|k| flat.iter().any(|m| m.get(*k) != flat[0].get(*k))).collect();
    flat.iter().map(|m| varying.iter().filter_map(|k| m.get(*k).map(|v| ((*k).clone(), v.clone()))).collect()).collect()
}
