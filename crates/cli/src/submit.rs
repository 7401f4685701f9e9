//! `infomax submit NAME --slurm`: an experiment's plan as a Slurm job array plus a merge job.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use infomax_runner::plan::PlanOptions;
use infomax_runner::slurm::{self, Submission};
use infomax_runner::{ExperimentFile, Override};

use crate::paths::Paths;
use crate::plan_args::PlanArgs;

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Submit to Slurm (sbatch): the scheduler infomax writes jobs for.
    #[arg(long)]
    slurm: bool,
    /// Array tasks: task i runs the i-th of N deterministic slices of the plan (`--shard i/N`).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// GPUs for each task (`--gpus-per-task`).
    #[arg(long, value_name = "G")]
    gpus_per_task: Option<u32>,
    /// CPUs for each task (`--cpus-per-task`).
    #[arg(long, value_name = "C")]
    cpus_per_task: Option<u32>,
    /// Time limit of each task in Slurm's format (minutes, H:M:S, D-H:M:S, …); a task warned
    /// before it checkpoints and requeues itself.
    #[arg(long, value_name = "T")]
    time: Option<String>,
    /// Seconds before the time limit at which Slurm warns a task (SIGUSR1).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    stop_before: u32,
    /// A further sbatch option for both jobs, e.g. --sbatch=--account=lab (repeat).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    sbatch: Vec<String>,
    /// Job folder, on a filesystem every node sees: the experiment file as submitted, the
    /// scripts, logs/, shards/ (a database per task, with checkpoints), results.sqlite and
    /// report/ [default: slurm/NAME-PROFILE].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// cpu or cuda[:N] for every run (as `reproduce --device`); with --gpus-per-task each task
    /// sees its own GPUs from index 0.
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// Every task skips images that stop decoding mid-run (as `reproduce --skip-unreadable`).
    #[arg(long)]
    skip_unreadable: bool,
    /// Print the scripts and the sbatch commands; write and submit nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: SubmitArgs, paths: &Paths) -> Result<ExitCode> {
    if !args.slurm {
        bail!("submit needs a scheduler: --slurm (the one infomax writes jobs for)");
    }
    // The text as read now (a built-in file's, or the file on disk) goes into the job folder,
    // and the tasks run that copy by its path: they plan what was submitted wherever they run.
    let entry = args.plan.entry(paths)?;
    let experiment_text = entry.text()?;
    let file = ExperimentFile::parse(&entry.path(), &experiment_text)?.with_data_root(&paths.data_root());
    // The whole plan, resolved here, so that a bad option fails now rather than in N queued tasks.
    let mut overrides = args.plan.set.iter().map(|s| s.parse::<Override>()).collect::<Result<Vec<_>, _>>()?;
    if let Some(d) = &args.device {
        overrides.push(d.parse::<infomax_runner::device::DeviceChoice>()?.override_text().parse::<Override>()?);
    }
    let opts = PlanOptions { seeds: args.plan.seeds, only: args.plan.only.clone(), shard: None };
    let plan = infomax_runner::plan::plan(&file, &args.plan.profile, &overrides, &opts)?;
    if args.shards > plan.len() {
        bail!(
            "--shards {}: the plan of {} / profile {} has {} runs; at most that many tasks",
            args.shards,
            file.meta.name,
            args.plan.profile,
            plan.len()
        );
    }
    let absolute = |p: PathBuf| std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()));
    let dir = absolute(args.dir.unwrap_or_else(|| slurm::default_dir(&file.meta.name, &args.plan.profile)))?;
    let mut reproduce_args = Vec::new();
    if let Some(n) = args.plan.seeds {
        reproduce_args.extend(["--seeds".to_string(), n.to_string()]);
    }
    for o in &args.plan.only {
        reproduce_args.extend(["--only".to_string(), o.clone()]);
    }
    for s in &args.plan.set {
        reproduce_args.extend(["--set".to_string(), s.clone()]);
    }
    if let Some(d) = &args.device {
        reproduce_args.extend(["--device".to_string(), d.clone()]);
    }
    if args.skip_unreadable {
        reproduce_args.push("--skip-unreadable".to_string());
    }
    let sub = Submission {
        experiment: file.meta.name.clone(),
        profile: args.plan.profile.clone(),
        shards: args.shards,
        partition: args.partition,
        gpus_per_task: args.gpus_per_task,
        cpus_per_task: args.cpus_per_task,
        time: args.time,
        stop_before: args.stop_before,
        sbatch_options: args.sbatch,
        dir: dir.clone(),
        workdir: std::env::current_dir().context("the working directory")?,
        binary: std::env::current_exe().context("locating the infomax binary")?,
        data_root: absolute(paths.data_root())?,
        reproduce_args,
    };
    let scripts = sub.scripts()?;
    let array_path = dir.join(slurm::ARRAY_SCRIPT);
    let merge_path = dir.join(slurm::MERGE_SCRIPT);
    if args.dry_run {
        println!(
            "# {} runs of {} / profile {} in {} tasks; job folder {}",
            plan.len(),
            file.meta.name,
            args.plan.profile,
            sub.shards,
            dir.display()
        );
        println!("# ---- {} ----", array_path.display());
        print!("{}", scripts.array);
        println!("# ---- {} ----", merge_path.display());
        print!("{}", scripts.merge);
        println!("# ---- submitted with ----");
        println!("sbatch --parsable {}", array_path.display());
        println!("sbatch --parsable --dependency=afterany:<array job id> {}", merge_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    slurm::prepare_dir(&sub, &experiment_text, &scripts)?;
    let jobs = slurm::submit(&sub)?;
    println!(
        "submitted {} / profile {}: {} runs in {} tasks (job {}), merge and report after them (job {})",
        file.meta.name,
        args.plan.profile,
        plan.len(),
        sub.shards,
        jobs.array_job,
        jobs.merge_job
    );
    println!("job folder: {}", dir.display());
    println!("watch: squeue -j {},{}; logs in {}", jobs.array_job, jobs.merge_job, dir.join("logs").display());
    println!(
        "results: {} and {} once job {} ends",
        dir.join(slurm::MERGED_DB).display(),
        dir.join("report/index.html").display(),
        jobs.merge_job
    );
    Ok(ExitCode::SUCCESS)
}
