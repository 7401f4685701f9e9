//! `infomax show NAME`: the resolved configuration of each run an experiment plans, field by
//! field, with the layer each value comes from — a recipe checked before any training.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use infomax_runner::plan::PlanOptions;
use infomax_runner::{ExperimentFile, Override};

#[derive(Args)]
pub struct ShowArgs {
    /// Experiment name (experiments/NAME.toml) or path to a TOML file.
    experiment: String,
    /// Profile of the experiment file (e.g. smoke, cpu, paper).
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// Seeds 0..N for every cell (replaces the file's `seed` axis).
    #[arg(long, value_name = "N")]
    seeds: Option<usize>,
    /// Keep only the cells with AXIS=VALUE (as `reproduce --only`).
    #[arg(long, value_name = "AXIS=VALUE")]
    only: Vec<String>,
    /// Override any field of every run (as `reproduce --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Folder where experiment names are looked up.
    #[arg(long, value_name = "DIR", default_value = "experiments")]
    experiments_dir: PathBuf,
}

pub fn run(args: ShowArgs) -> Result<ExitCode> {
    let ShowArgs { experiment, profile, seeds, only, set, experiments_dir } = args;
    let path = infomax_runner::experiment::locate(&experiment, &experiments_dir)?;
    let file = ExperimentFile::load(&path)?;
    let overrides = set.iter().map(|s| s.parse::<Override>()).collect::<Result<Vec<_>, _>>()?;
    let plan = infomax_runner::plan::plan(&file, &profile, &overrides, &PlanOptions { seeds, only, shard: None })?;
    println!(
        "# {} — {} / profile {profile}: {} runs, from {}",
        file.meta.name,
        file.meta.title,
        plan.len(),
        path.display()
    );
    println!("# Each field: its value as the run stores it, then where it comes from (a layer of the file");
    println!("# with its line, --set, the plan, or the built-in default for the method and dataset).");
    for (i, run) in plan.iter().enumerate() {
        let sources = file.field_sources(&profile, &run.coords, &overrides, &run.config)?;
        println!("\n# [{}/{}] {}  (run {})", i + 1, plan.len(), run.label(), &run.config.hash()[..12]);
        for clamp in infomax_runner::validate::clamps(&run.config) {
            println!("# note: {clamp}");
        }
        let fields = run.config.fields();
        let width = fields.iter().map(|(k, v)| k.len() + v.len() + 3).max().unwrap_or(0);
        for (field, value) in &fields {
            let line = format!("{field} = {value}");
            println!("{line:width$}  # {}", sources.get(field).map_or("default", String::as_str));
        }
    }
    Ok(ExitCode::SUCCESS)
}
