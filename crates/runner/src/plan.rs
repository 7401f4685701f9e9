//! A sweep's plan: the runs an experiment file expands to under a profile, narrowed by
//! `--only`, widened by `--seeds`, sliced by `--shard`, and what differs between them. How long
//! they should take is `estimate`'s business.

use std::collections::BTreeMap;

use crate::config::RunConfig;
use crate::experiment::{Axis, ExperimentFile, Override};
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
    pub config: RunConfig,
    /// The source its profile says the cell follows (`[[profiles.P.recipe]]`), if any.
    pub recipe: Option<String>,
}

impl PlannedRun {
    /// `method=w-mse-4 dataset=cifar10 seed=0`.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = self.coords.iter().map(|(a, v)| format!("{a}={v}")).collect();
        if self.coords.iter().all(|(a, _)| a == "seed") {
            parts.insert(0, format!("method={} dataset={}", self.config.method.name(), self.config.dataset.name()));
        }
        if !self.coords.iter().any(|(a, _)| a == "seed") {
            parts.push(format!("seed={}", self.config.seed));
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
                crate::experiment::did_you_mean(axis, names.iter().copied()),
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ))
        })?;
        let values: Vec<&str> = axes[a].values.iter().map(|v| v.name.as_str()).collect();
        let v = values.iter().position(|v| *v == value).ok_or_else(|| {
            bad(format!(
                "axis `{axis}` has no value `{value}`{}; its values: {}",
                crate::experiment::did_you_mean(value, values.iter().copied()),
                values.join(", ")
            ))
        })?;
        wanted.entry(a).or_default().push(v);
    }
    let mut runs = Vec::new();
    for cell in ExperimentFile::cells(&axes) {
        if wanted.iter().any(|(a, vs)| !vs.contains(&cell[*a]))
            || file.exclusions.iter().any(|e| e.applies(profile, &axes, &cell))
        {
            continue;
        }
        let config = file.resolve_cell(profile, &axes, &cell, overrides)?;
        let recipe = file.recipe_of(profile, &axes, &cell)?.map(|r| r.source.clone());
        let coords = axes.iter().zip(&cell).map(|(a, &i)| (a.name.clone(), a.values[i].name.clone())).collect();
        runs.push(PlannedRun { coords, config, recipe });
    }
    file.check_deviation_fields(profile, runs.iter().map(|r| &r.config))?;
    if let Some(Shard { index, count }) = opts.shard {
        runs = runs.into_iter().enumerate().filter(|(i, _)| i % count == index - 1).map(|(_, r)| r).collect();
    }
    Ok(runs)
}

/// For each run, the configuration fields whose values are not the same in every run of the plan
/// (`key=value`, sorted by key); the grid coordinates and the fields of sections the run does
/// not have (another method's parameters) are left out.
pub fn differences(runs: &[PlannedRun]) -> Vec<Vec<(String, String)>> {
    let flat: Vec<BTreeMap<String, String>> = runs
        .iter()
        .map(|r| {
            let mut out = r.config.fields();
            out.retain(|k, _| !k.starts_with("grid."));
            out
        })
        .collect();
    let all_keys: std::collections::BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    let varying: Vec<&String> =
        all_keys.into_iter().filter(|k| flat.iter().any(|m| m.get(*k) != flat[0].get(*k))).collect();
    flat.iter().map(|m| varying.iter().filter_map(|k| m.get(*k).map(|v| ((*k).clone(), v.clone()))).collect()).collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Method;
    use std::path::Path;

    const GRID: &str = r#"
[experiment]
name = "g"
title = "grid"
paper = "W-MSE"
reproduces = "Table 1"

[base]
projector = { widths = [64, 8] }
train = { epochs = 3, batch_size = 32, train_images = 64 }
optimizer = { warmup_epochs = 1 }

[grid.method]
simclr = { method = "simclr" }
w-mse-2 = { method = "w-mse", wmse = { w_size = 16 } }
w-mse-4 = { method = "w-mse", wmse = { w_size = 16 }, train = { views = 4 } }

[grid]
dataset = ["cifar10", "stl10"]

[[when]]
match = { method = ["w-mse-2", "w-mse-4"], dataset = "stl10" }
set = { projector = { widths = [64, 4] }, wmse = { w_size = 8 } }

[profiles.smoke]
about = "tiny"
encoder = { width = 0.25 }

[[profiles.smoke.when]]
match = { method = "w-mse-4" }
set = { train = { batch_size = 16 } }

[profiles.other]
about = "other"
train = { epochs = 9 }

[[profiles.other.exclude]]
match = { dataset = "stl10" }
why = "STL-10 is too big for this profile"

[[reference]]
at = { method = "simclr", dataset = "cifar10" }
linear = 91.80
knn5 = 88.42
source = "W-MSE, Table 1"
"#;

    fn file() -> ExperimentFile {
        ExperimentFile::parse(Path::new("experiments/g.toml"), GRID).unwrap()
    }

    #[test]
    fn grid_expands_in_file_order_with_value_when_and_profile_layers() {
        let f = file();
        let runs = plan(&f, "smoke", &[], &PlanOptions::default()).unwrap();
        let labels: Vec<String> = runs.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "method=simclr dataset=cifar10 seed=0",
                "method=simclr dataset=stl10 seed=0",
                "method=w-mse-2 dataset=cifar10 seed=0",
                "method=w-mse-2 dataset=stl10 seed=0",
                "method=w-mse-4 dataset=cifar10 seed=0",
                "method=w-mse-4 dataset=stl10 seed=0",
            ]
        );
        let at = |m: &str, d: &str| {
            runs.iter().find(|r| r.config.grid["method"] == m && r.config.grid["dataset"] == d).unwrap()
        };
        assert_eq!(at("simclr", "stl10").config.projector.widths, vec![64, 8], "`when` only where it matches");
        assert_eq!(at("w-mse-2", "stl10").config.projector.widths, vec![64, 4]);
        assert_eq!(at("w-mse-2", "stl10").config.method_params.wmse.as_ref().unwrap().w_size, 8);
        assert_eq!(at("w-mse-2", "cifar10").config.method_params.wmse.as_ref().unwrap().w_size, 16);
        assert_eq!(at("w-mse-4", "cifar10").config.train.views, 4);
        assert_eq!(at("w-mse-4", "cifar10").config.train.batch_size, 16, "the profile's own when");
        assert_eq!(at("w-mse-2", "cifar10").config.train.batch_size, 32);
        assert!(runs.iter().all(|r| r.config.encoder.width == 0.25));
        assert_eq!(at("simclr", "cifar10").config.method, Method::Simclr);
        assert!(at("w-mse-2", "stl10").config.encoder.max_pool, "dataset defaults follow the cell's dataset");
        assert_eq!(f.references[0].values["linear"], 91.80);
        assert_eq!(f.references[0].at["method"], "simclr");
    }

    /// A profile's `exclude` leaves cells out of that profile only.
    #[test]
    fn a_profiles_exclusion_holds_for_it_alone() {
        let f = file();
        let datasets = |profile| -> Vec<String> {
            plan(&f, profile, &[], &PlanOptions::default())
                .unwrap()
                .iter()
                .map(|r| r.config.dataset.name().to_string())
                .collect()
        };
        assert_eq!(datasets("other"), ["cifar10"; 3]);
        assert_eq!(datasets("smoke").iter().filter(|d| *d == "stl10").count(), 3);
    }

    #[test]
    fn only_seeds_and_shards_narrow_and_widen_the_plan() {
        let f = file();
        let opts = |only: &[&str], seeds, shard: Option<&str>| PlanOptions {
            only: only.iter().map(|s| s.to_string()).collect(),
            seeds,
            shard: shard.map(|s| s.parse().unwrap()),
        };
        let runs =
            plan(&f, "smoke", &[], &opts(&["dataset=cifar10", "method=simclr", "method=w-mse-4"], None, None)).unwrap();
        assert_eq!(runs.len(), 2);
        let seeded = plan(&f, "smoke", &[], &opts(&["dataset=cifar10"], Some(3), None)).unwrap();
        assert_eq!(seeded.len(), 9);
        assert_eq!(seeded.iter().map(|r| r.config.seed).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        // Adding seeds keeps seed 0's runs the same runs.
        let unseeded = plan(&f, "smoke", &[], &opts(&["dataset=cifar10"], None, None)).unwrap();
        assert_eq!(seeded[0].config.hash(), unseeded[0].config.hash());
        // Shards partition the plan.
        let all = plan(&f, "smoke", &[], &opts(&[], Some(2), None)).unwrap();
        let mut union: Vec<String> = (1..=5)
            .flat_map(|i| plan(&f, "smoke", &[], &opts(&[], Some(2), Some(&format!("{i}/5")))).unwrap())
            .map(|r| r.config.hash())
            .collect();
        union.sort();
        let mut expect: Vec<String> = all.iter().map(|r| r.config.hash()).collect();
        expect.sort();
        assert_eq!(union, expect);
        let err = plan(&f, "smoke", &[], &opts(&["method=wmse-2"], None, None)).unwrap_err().to_string();
        assert!(err.contains("--only method=wmse-2") && err.contains("did you mean `w-mse-2`"), "{err}");
        let err = plan(&f, "smoke", &[], &opts(&["datset=cifar10"], None, None)).unwrap_err().to_string();
        assert!(err.contains("no axis `datset`") && err.contains("did you mean `dataset`"), "{err}");
        assert!("0/3".parse::<crate::plan::Shard>().is_err() && "4/3".parse::<crate::plan::Shard>().is_err());
    }

    #[test]
    fn differences_name_what_varies() {
        let f = file();
        let runs = plan(&f, "smoke", &[], &PlanOptions { only: vec!["dataset=cifar10".into()], ..Default::default() })
            .unwrap();
        let diffs = crate::plan::differences(&runs);
        let keys: Vec<&str> = diffs[0].iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"method") && keys.contains(&"train.views"), "{keys:?}");
        assert!(!keys.contains(&"encoder.width") && !keys.iter().any(|k| k.starts_with("grid")), "{keys:?}");
    }

    #[test]
    fn a_second_branch_inherits_the_encoder_and_rejects_predictor_methods() {
        let text = GRID.replace(
            "[grid]\ndataset",
            "[grid.branches]\nshared = {}\ndifferent-weights = { branch_b = { encoder = {} } }\n\
             deeper = { branch_b = { encoder = { arch = \"resnet34\" } } }\n\n[grid]\ndataset",
        );
        let f = ExperimentFile::parse(Path::new("experiments/g.toml"), &text).unwrap();
        let opts = PlanOptions { only: vec!["method=simclr".into(), "dataset=cifar10".into()], ..Default::default() };
        let runs = plan(&f, "smoke", &[], &opts).unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs[0].config.branch_b.is_none());
        let dw = runs[1].config.branch_b.as_ref().unwrap();
        assert_eq!(dw.encoder, runs[1].config.encoder, "different weights: the same architecture");
        let da = runs[2].config.branch_b.as_ref().unwrap();
        assert_eq!(
            (da.encoder.arch.as_str(), da.encoder.width),
            ("resnet34", 0.25),
            "the profile's width carries over"
        );
        let byol = text.replace(
            "simclr = { method = \"simclr\" }",
            "simclr = { method = \"byol\", predictor = { widths = [64, 8] } }",
        );
        let f = ExperimentFile::parse(Path::new("experiments/g.toml"), &byol).unwrap();
        let err = plan(&f, "smoke", &[], &opts).unwrap_err().to_string();
        assert!(err.contains("branch_b") && err.contains("shared weights only"), "{err}");
    }

    #[test]
    fn errors_carry_line_and_column() {
        let bad = GRID.replace("train = { epochs = 9 }", "train = { epochs = 9, epohcs = 2 }");
        let f = ExperimentFile::parse(Path::new("experiments/g.toml"), &bad).unwrap();
        let err = plan(&f, "other", &[], &PlanOptions::default()).unwrap_err().to_string();
        let line = bad.lines().position(|l| l.contains("epohcs")).unwrap() + 1;
        assert!(err.contains(&format!("experiments/g.toml:{line}:")), "{err}");
        assert!(err.contains("did you mean `epochs`"), "{err}");
    }
}
