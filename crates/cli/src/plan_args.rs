//! What names a plan, as `reproduce`, `show` and `submit` take it: the experiment, its profile,
//! `--seeds`, `--only` and `--set`.

use anyhow::Result;
use clap::Args;
use infomax_runner::experiment::Entry;
use infomax_runner::plan::{PlanOptions, Shard};
use infomax_runner::Override;

use crate::paths::Paths;

#[derive(Args)]
pub struct PlanArgs {
    /// Experiment: a name (NAME.toml in the experiments directory, else the built-in one; see
    /// --experiments and `infomax experiments list`), builtin:NAME, or a path to a TOML file
    /// (an argument with an extension or a `/`).
    pub experiment: String,
    /// Profile of the experiment file (e.g. smoke, cpu, paper).
    #[arg(long, default_value = "smoke")]
    pub profile: String,
    /// Seeds 0..N for every cell (replaces the file's `seed` axis).
    #[arg(long, value_name = "N")]
    pub seeds: Option<usize>,
    /// Keep only the cells with AXIS=VALUE (repeat: values of one axis are alternatives,
    /// different axes must all match), e.g. --only dataset=cifar10 --only method=w-mse-2.
    #[arg(long, value_name = "AXIS=VALUE")]
    pub only: Vec<String>,
    /// Override any field of every run, e.g. --set train.epochs=2 --set optimizer.lr=0.5.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl PlanArgs {
    /// The experiment file the name or path means.
    pub fn entry(&self, paths: &Paths) -> Result<Entry> {
        paths.experiment(&self.experiment)
    }

    /// The `--set` overrides, parsed.
    pub fn overrides(&self) -> Result<Vec<Override>> {
        Ok(self.set.iter().map(|s| s.parse::<Override>()).collect::<Result<Vec<_>, _>>()?)
    }

    /// `--seeds` and `--only` as the planner takes them, with a shard.
    pub fn options(&self, shard: Option<Shard>) -> PlanOptions {
        PlanOptions { seeds: self.seeds, only: self.only.clone(), shard }
    }
}
