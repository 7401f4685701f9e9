//! `infomax reproduce NAME`: plan an experiment's runs, train and evaluate them into the
//! database, and render the report; `--dry-run` prints the plan instead.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use infomax_runner::config::DeviceKind;
use infomax_runner::{ExperimentFile, Override, RunContext, Store};

use crate::paths::{HtmlDir, Paths};
use crate::plan_args::PlanArgs;
use crate::stop::StopOnSignal;

#[derive(Args)]
pub struct ReproduceArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Run the I-th of N deterministic slices of the plan (1 ≤ I ≤ N), for N processes that
    /// each write their own database (combine them with `infomax merge`).
    #[arg(long, value_name = "I/N")]
    shard: Option<infomax_runner::plan::Shard>,
    /// Print the plan (runs, what differs between them, their state, estimated time) and stop.
    #[arg(long)]
    dry_run: bool,
    /// Do not draw progress bars (log a progress line every --log-every seconds instead, as
    /// when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Seconds between progress lines when no bar is drawn (a Slurm log, --no-progress), and
    /// between writes of the recorded steps to the database and TensorBoard within an epoch.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = positive_seconds)]
    log_every: f64,
    /// Do not write TensorBoard event files (by default each run writes them under
    /// DB.tensorboard/, e.g. reports/results.tensorboard/; `tensorboard --logdir reports/`).
    #[arg(long)]
    no_tensorboard: bool,
    /// Train on `cpu` or `cuda[:N]` (GPU N, default 0; needs a CUDA build: `just build-cuda`):
    /// sets every run's `train.device`, as `--set train.device=…` would [default: the
    /// experiment's, else cpu].
    #[arg(long, value_name = "DEVICE")]
    device: Option<infomax_runner::device::DeviceChoice>,
    /// Inside a Slurm job (`infomax submit` sets it): when SIGUSR1 (the time-limit warning)
    /// or a SIGTERM at the time limit stops the sweep, requeue this job after the checkpoint,
    /// so that it resumes there.
    #[arg(long)]
    slurm_requeue: bool,
    /// Fetch every dataset the plan needs and the data directory lacks (the official archive,
    /// MD5-checked, resumable: `infomax datasets fetch`) before training; without it such runs
    /// are recorded as skipped.
    #[arg(long)]
    fetch: bool,
    /// An image that stops decoding mid-run (ImageNet is read from its files as batches need
    /// them) is skipped, logged and counted on the run's record, its place taken by the next
    /// image that decodes (in evaluation the next of its class); without it the run fails
    /// naming the file.
    #[arg(long)]
    skip_unreadable: bool,
    #[command(flatten)]
    html: HtmlDir,
}

pub fn run(args: ReproduceArgs, paths: &Paths) -> Result<ExitCode> {
    let ReproduceArgs {
        plan: plan_args,
        shard,
        dry_run,
        no_progress,
        log_every,
        no_tensorboard,
        device: device_choice,
        slurm_requeue,
        fetch,
        skip_unreadable,
        html,
    } = args;
    let device = infomax_runner::default_device();
    let file = plan_args.entry(paths)?.load()?.with_data_root(&paths.data_root());
    let mut overrides = plan_args.overrides()?;
    if let Some(choice) = device_choice {
        overrides.push(choice.override_text().parse::<Override>()?);
    }
    let cuda_ordinal = device_choice.map_or(0, |c| c.ordinal);
    let profile = plan_args.profile.clone();
    let plan = infomax_runner::plan::plan(&file, &profile, &overrides, &plan_args.options(shard))?;
    let data_root = paths.data_root();
    let uses_cuda = plan.iter().any(|r| r.config.train.device == DeviceKind::Cuda);
    let run_device = if uses_cuda {
        infomax_runner::device::open(DeviceKind::Cuda, cuda_ordinal).unwrap_or_else(|_| device.clone())
    } else {
        device.clone()
    };
    let machine = infomax_runner::environment::describe_machine(&run_device);
    if dry_run {
        // A dry run reads the database if there is one and never creates it.
        let store = if paths.db.is_file() { Some(Store::open(&paths.db)?) } else { None };
        print!("{}", dry_run_text(&file, &profile, &plan, store.as_ref(), &data_root, &machine)?);
        return Ok(ExitCode::SUCCESS);
    }
    if fetch {
        let mut needed: Vec<infomax_data::Dataset> = plan.iter().filter_map(|r| r.config.dataset.builtin()).collect();
        needed.sort_by_key(|d| d.name());
        needed.dedup();
        for dataset in needed {
            if !dataset.is_present(&data_root) {
                crate::datasets::fetch(dataset, &data_root, None, false)?;
            }
        }
    }
    // Where the results go is checked before any training: the database opens (or is
    // created) and the report's folder takes a file.
    let html_dir = html.for_db(&paths.db);
    crate::paths::ensure_writable(&html_dir, "--out")?;
    let store = Store::open(&paths.db)?;
    store.record_experiment(&file, &plan)?;
    if let Some(p) = file.profiles.get(&profile) {
        tracing::info!("{} / profile {profile}: {} (from {})", file.meta.name, p.about, file.path.display());
    }
    tracing::info!("{} runs planned; data from {}", plan.len(), data_root.display());
    let stop = StopOnSignal::install();
    // The report follows the sweep: re-rendered (atomically) after every epoch and evaluation.
    let rerender = |run_id: i64| {
        if let Err(e) = infomax_report::render_while_training(&paths.db, &html_dir, run_id) {
            tracing::warn!("the report could not be re-rendered: {e}");
        }
    };
    let ctx = RunContext {
        data_root,
        store: &store,
        cuda_ordinal,
        progress: !no_progress,
        log_every: std::time::Duration::from_secs_f64(log_every),
        tensorboard: (!no_tensorboard).then(|| infomax_runner::store::tensorboard_of(&paths.db)),
        on_record: Some(&rerender),
        code_version: infomax_runner::environment::code_version(),
        machine,
        checkpoints: paths.checkpoints(),
        stop: stop.flag.clone(),
        skip_unreadable,
    };
    let summary = infomax_runner::sweep::run_plan(&plan, &ctx)?;
    let report = infomax_report::render(&paths.db, &html_dir)?;
    println!("report: {}", report.index.display());
    println!("{} / {profile}: {} runs: {}", file.meta.name, plan.len(), summary.line());
    // What did not finish comes last, so the output ends with what and why.
    for (run, why) in &summary.failed {
        println!("failed   {run}: {why}");
    }
    for (run, why) in &summary.diverged {
        println!("diverged {run}: {why}");
    }
    for (run, why) in &summary.skipped {
        println!("skipped  {run}: {why}");
    }
    if let Some(why) = &summary.interrupted {
        println!("stopped: {why}");
    }
    if let (true, Some(_), Some(signal)) = (slurm_requeue, &summary.interrupted, stop.signal()) {
        if let Some(job) = infomax_runner::slurm::job_to_requeue(signal)? {
            // Slurm ends this process once the requeue is accepted: say so first.
            println!("requeueing Slurm job {job}: it resumes from its checkpoint when it starts again");
            infomax_runner::slurm::requeue(&job)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(ExitCode::from(summary.exit_code()))
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("a number of seconds > 0 expected, got `{s}`")),
    }
}

/// The plan as `--dry-run` prints it: each run with its state in the database, the fields that
/// differ between runs, and the time it should take at the throughput this machine measured.
fn dry_run_text(
    file: &ExperimentFile,
    profile: &str,
    plan: &[infomax_runner::plan::PlannedRun],
    store: Option<&Store>,
    data_root: &std::path::Path,
    machine: &str,
) -> Result<String> {
    use infomax_runner::estimate::{estimate_seconds, measured_gflops};
    use infomax_runner::human::human_duration;
    use infomax_runner::plan::differences;
    use std::fmt::Write;
    let gflops = match store {
        Some(s) => measured_gflops(s, machine)?,
        None => None,
    };
    let rows = match store {
        Some(s) => s.run_rows(Some(&file.meta.name))?,
        None => Vec::new(),
    };
    let diffs = differences(plan);
    let mut out = String::new();
    let axes: Vec<&str> = file.axes.iter().map(|a| a.name.as_str()).collect();
    writeln!(
        out,
        "{} — {} / profile {profile}: {} runs{}",
        file.meta.name,
        file.meta.title,
        plan.len(),
        if axes.is_empty() { String::new() } else { format!(" over {}", axes.join(" × ")) }
    )?;
    writeln!(out, "file: {}", file.path.display())?;
    if let Some(p) = file.profiles.get(profile) {
        writeln!(out, "profile {profile}: {}", p.about)?;
    }
    let mut total = 0.0;
    let mut pending = 0;
    for (i, (run, diff)) in plan.iter().zip(&diffs).enumerate() {
        let hash = run.config.hash();
        let row = rows.iter().find(|r| r.config_hash == hash && r.status != "pending");
        let state = match (row, infomax_runner::sweep::missing_dataset(&run.config.dataset, data_root)) {
            (Some(r), _) if r.status == "finished" || r.status == "diverged" => r.status.clone(),
            (_, Some(_)) => "skip: dataset not found".to_string(),
            (Some(r), None) if r.epochs_done > 0 => format!("resumes after epoch {}/{}", r.epochs_done, r.epochs),
            _ => "to train".to_string(),
        };
        let estimate = match gflops {
            Some(g) if state.starts_with("to train") || state.starts_with("resumes") => {
                let s = estimate_seconds(&run.config, data_root, g);
                total += s;
                pending += 1;
                human_duration(s)
            }
            _ => "—".to_string(),
        };
        writeln!(out, "{:>3}. {}  [{}]  {state}  est. {estimate}", i + 1, run.label(), &hash[..12])?;
        if !diff.is_empty() {
            let shown: Vec<String> = diff.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(out, "     {}", shown.join("  "))?;
        }
        for clamp in infomax_runner::validate::clamps(&run.config, data_root) {
            writeln!(out, "     note: {clamp}")?;
        }
    }
    match gflops {
        Some(g) => writeln!(
            out,
            "estimated: {} for {pending} runs to train, at {g:.1} GFLOP/s (the median of this machine's latest recorded epochs)",
            human_duration(total)
        )?,
        None => writeln!(
            out,
            "estimated: unknown — no epoch recorded on this machine yet ({machine}); any run's first epoch calibrates it"
        )?,
    }
    Ok(out)
}
