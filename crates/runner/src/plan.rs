//! A sweep's plan: the runs an experiment file expands to under a profile, narrowed by
//! `--only`, widened by `--seeds`, sliced by `--shard`; what differs between them; and how long
//! they should take, estimated from throughput this machine has already measured.

use std::collections::BTreeMap;

use crate::config::{Axis, ExperimentFile, Override};
use crate::spec::RunSpec;
use crate::store::Store;
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

/// Floating-point work of one training image: every view forward and backward (≈ 3 forwards)
/// through the encoder and heads, plus BYOL's target forward.
pub fn train_flops_per_image(spec: &RunSpec) -> f64 {
    let enc = spec.encoder.resnet();
    let mut widths = vec![enc.output_dim()];
    widths.extend(&spec.projector.widths);
    let mut head_macs: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    if let Some(p) = &spec.predictor {
        let mut pw = vec![spec.embedding_dim()];
        pw.extend(&p.widths);
        head_macs += pw.windows(2).map(|w| w[0] * w[1]).sum::<usize>();
    }
    let side = spec.augment.size();
    // With a second branch, half the views go through its encoder.
    let encoder_macs = match &spec.branch_b {
        Some(b) => (enc.forward_macs(side) + b.encoder.resnet().forward_macs(side)) as f64 / 2.0,
        None => enc.forward_macs(side) as f64,
    };
    let forward = 2.0 * (encoder_macs + head_macs as f64);
    // BYOL's target forwards every view once more, without a backward.
    let target = if spec.method == crate::spec::Method::Byol { 1.0 } else { 0.0 };
    (3.0 + target) * forward * spec.train.views as f64
}

/// Floating-point work of one run: (training, evaluations). Training counts every image of
/// every epoch; each evaluation one encoder forward of each bank and test image.
pub fn run_flops(spec: &RunSpec) -> (f64, f64) {
    let d = spec.dataset;
    let count = |want: usize, splits: &[infomax_data::Split]| {
        let n: usize = d.splits().iter().filter(|(s, _)| splits.contains(s)).map(|(_, n)| n).sum();
        if want > 0 {
            want.min(n)
        } else {
            n
        }
    };
    let images = count(spec.train.train_images, d.pretrain_splits());
    let seen = images / spec.train.batch_size * spec.train.batch_size * spec.train.epochs;
    let evals = 2 + spec.train.epochs.checked_div(spec.eval.every_epochs).unwrap_or(0);
    let eval_images = count(spec.eval.bank_images, &[infomax_data::Split::Train])
        + count(spec.eval.test_images, &[infomax_data::Split::Test]);
    let forward = 2.0 * spec.encoder.resnet().forward_macs(spec.augment.size()) as f64;
    (train_flops_per_image(spec) * seen as f64, forward * (eval_images * evals) as f64)
}

/// Training GFLOP/s this machine reached in recorded epochs (median of the latest 20 whose
/// machine description is `machine`): the rate time estimates divide by.
pub fn measured_gflops(store: &Store, machine: &str) -> Result<Option<f64>> {
    let mut rates: Vec<f64> = store
        .recent_throughput(machine, 20)?
        .into_iter()
        .map(|(spec, ips)| train_flops_per_image(&spec) * ips / 1e9)
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    if rates.is_empty() {
        return Ok(None);
    }
    rates.sort_by(f64::total_cmp);
    Ok(Some(rates[rates.len() / 2]))
}

/// Seconds a run should take at `gflops` (training at the measured rate; forward-only
/// evaluation at the same rate).
pub fn estimate_seconds(spec: &RunSpec, gflops: f64) -> f64 {
    let (train, eval) = run_flops(spec);
    (train + eval) / (gflops * 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Dataset, Method};

    #[test]
    fn flops_follow_views_images_epochs_and_byols_target() {
        let mut s = RunSpec::defaults(Method::Simclr, Dataset::Cifar10);
        s.train.train_images = 10_240;
        s.train.batch_size = 128;
        s.train.epochs = 2;
        let per_image = train_flops_per_image(&s);
        // ResNet-18 at 32 px: 0.556 GMACs forward, ×2 FLOPs, ×3 with the backward, ×2 views.
        assert!((6.6e9..6.8e9).contains(&per_image), "{per_image}");
        let (train, eval) = run_flops(&s);
        assert_eq!(train, per_image * 20_480.0);
        assert!(eval > 0.0);
        let mut byol = s.clone();
        byol.method = Method::Byol;
        assert!((train_flops_per_image(&byol) / per_image - 4.0 / 3.0).abs() < 1e-12);
        let mut four = s.clone();
        four.train.views = 4;
        assert_eq!(train_flops_per_image(&four), 2.0 * per_image);
        assert!((estimate_seconds(&s, 10.0) - (train + eval) / 1e10).abs() < 1e-6);
    }
}
