//! `infomax show NAME`: the resolved configuration of each run an experiment plans, field by
//! field, with the layer each value comes from — a recipe checked before any training.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::paths::Paths;
use crate::plan_args::PlanArgs;

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    plan: PlanArgs,
}

pub fn run(args: ShowArgs, paths: &Paths) -> Result<ExitCode> {
    let ShowArgs { plan: args } = args;
    let file = args.entry(paths)?.load()?.with_data_root(&paths.data_root());
    let overrides = args.overrides()?;
    let profile = &args.profile;
    let plan = infomax_runner::plan::plan(&file, profile, &overrides, &args.options(None))?;
    println!(
        "# {} — {} / profile {profile}: {} runs, from {}",
        file.meta.name,
        file.meta.title,
        plan.len(),
        file.path.display()
    );
    println!("# Each field: its value as the run stores it, then where it comes from (a layer of the file");
    println!("# with its line, --set, the plan, or the built-in default for the method and dataset).");
    for (i, run) in plan.iter().enumerate() {
        let sources = file.field_sources(profile, &run.coords, &overrides, &run.config)?;
        println!("\n# [{}/{}] {}  (run {})", i + 1, plan.len(), run.label(), &run.config.hash()[..12]);
        if let Some(source) = &run.recipe {
            println!("# recipe: {source}");
        }
        for d in file.profiles[profile.as_str()].deviations.iter().filter(|d| d.covers(&run.coords)) {
            println!("# deviation: {} — the source: {}; ours: {}; why: {}", d.field, d.source, d.ours, d.why);
        }
        for clamp in infomax_runner::validate::clamps(&run.config, &paths.data_root()) {
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
