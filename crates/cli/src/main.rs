//! `infomax`: reproduce self-supervised learning papers' tables from experiment files.

mod datasets;
mod submit;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use infomax_runner::bench::{train_step, TrainStepBench};
use infomax_runner::plan::PlanOptions;
use infomax_runner::spec::{ConvKernels, DeviceKind, Method};
use infomax_runner::{ExperimentFile, Override, RunContext, Store};

#[derive(Parser)]
#[command(
    name = "infomax",
    version,
    about = "Train, evaluate and compare information-maximization self-supervised learners \
(Barlow Twins, W-MSE, VICReg) and their baselines, and reproduce the papers' tables."
)]
struct Cli {
    #[command(flatten)]
    paths: Paths,
    /// Log level filter (error, warn, info, debug, trace) or a tracing directive.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

fn parse_metric(s: &str) -> Result<infomax_report::db::Metric, String> {
    infomax_report::db::Metric::parse(s).ok_or_else(|| {
        let valid: Vec<&str> = infomax_report::db::Metric::ALL.iter().map(|m| m.key()).collect();
        format!("unknown metric `{s}`; one of {}", valid.join(", "))
    })
}

#[derive(Args)]
struct Paths {
    /// Dataset root [default: $INFOMAX_DATA, else ./datasets].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Results database (SQLite).
    #[arg(long, global = true, value_name = "FILE", default_value = "reports/results.sqlite")]
    db: PathBuf,
}

/// Where the HTML pages go: an option of the commands that render (not global, so that
/// `export --out FILE` and `datasets preview --out FILE.png` mean their own file).
#[derive(Args)]
struct HtmlDir {
    /// Folder the HTML report is written to [default: the database's folder, so
    /// reports/results.sqlite renders into reports/].
    #[arg(long = "out", value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl HtmlDir {
    /// The pages go beside the database they show unless `--out` says otherwise: a second
    /// database (`--db other/results.sqlite`) never overwrites the report of the first.
    fn for_db(&self, db: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train and evaluate an experiment's runs (its grid under a profile), store the results,
    /// then render the report.
    ///
    /// A run whose resolved configuration already finished in the database is not trained again;
    /// an interrupted one resumes from its last checkpoint; one whose dataset is missing is
    /// recorded as skipped. Exit status: 0 all finished or skipped, 1 a run failed, 2 a run
    /// diverged, 130 interrupted.
    Reproduce {
        /// Experiment name (experiments/NAME.toml) or path to a TOML file.
        experiment: String,
        /// Profile of the experiment file to run (e.g. smoke, cpu, paper).
        #[arg(long, default_value = "smoke")]
        profile: String,
        /// Seeds 0..N for every cell (replaces the file's `seed` axis).
        #[arg(long, value_name = "N")]
        seeds: Option<usize>,
        /// Keep only the cells with AXIS=VALUE (repeat: values of one axis are alternatives,
        /// different axes must all match), e.g. --only dataset=cifar10 --only method=w-mse-2.
        #[arg(long, value_name = "AXIS=VALUE")]
        only: Vec<String>,
        /// Run the I-th of N deterministic slices of the plan (1 ≤ I ≤ N), for N processes that
        /// each write their own database (combine them with `infomax merge`).
        #[arg(long, value_name = "I/N")]
        shard: Option<infomax_runner::plan::Shard>,
        /// Print the plan (runs, what differs between them, their state, estimated time) and stop.
        #[arg(long)]
        dry_run: bool,
        /// Override any field of every run, e.g. --set train.epochs=2 --set optimizer.lr=0.5.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Folder where experiment names are looked up.
        #[arg(long, value_name = "DIR", default_value = "experiments")]
        experiments_dir: PathBuf,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
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
        #[command(flatten)]
        html: HtmlDir,
    },
    /// Submit an experiment's plan to a cluster: a Slurm job array (task i runs `reproduce
    /// --shard i/N` into its own database in the job folder) and a job after it that merges the
    /// databases and renders the report.
    ///
    /// Tasks checkpoint and requeue themselves when warned of their time limit, and resume where
    /// they stopped. Submitting the same thing into the same folder again continues the sweep.
    Submit(submit::SubmitArgs),
    /// Runs by state (finished, diverged, failed, interrupted, running, skipped, pending) with
    /// their last evaluation.
    Status {
        /// Only this experiment.
        experiment: Option<String>,
    },
    /// Combine results databases (e.g. one per shard) into --db without duplicating a run: a
    /// run kept once, the furthest-along copy winning.
    Merge {
        /// Databases to read.
        #[arg(required = true, value_name = "DB")]
        sources: Vec<PathBuf>,
    },
    /// Write a run's trained encoder (its latest checkpoint) as safetensors with torchvision's
    /// ResNet names (conv1.weight, bn1.running_mean, layer1.0.conv1.weight, …), loadable into
    /// torchvision.models.resnet18 with the run's stem (3×3 conv1; no max-pool unless the run had
    /// one) and fc = Identity.
    ExportEncoder {
        /// Run id (see `infomax status`) or 6+ hex digits of its configuration hash.
        run: String,
        /// The .safetensors file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Every run and evaluation as one flat table (a row per evaluation), CSV or Parquet.
    Export {
        /// csv or parquet.
        #[arg(long, default_value = "csv")]
        format: infomax_report::export::Format,
        /// File to write (default: CSV to stdout; Parquet needs a file).
        #[arg(long, alias = "file", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Render the report from the results database: index.html (experiments, SPEC §7 findings,
    /// runs), a page per experiment shaped like the paper's table, a page per run.
    Report {
        #[command(flatten)]
        html: HtmlDir,
    },
    /// Compare methods across datasets on one metric, from every finished run in the database:
    /// a table here and compare.html in the report folder.
    Compare {
        /// Methods, comma-separated: the grid's names (`w-mse-4`) or the loss's (`w-mse`)
        /// [default: every method with a finished run].
        #[arg(long, value_delimiter = ',')]
        methods: Vec<String>,
        /// Datasets, comma-separated [default: every dataset with a finished run].
        #[arg(long, value_delimiter = ',')]
        datasets: Vec<String>,
        /// knn200, knn5, linear or linear-top5.
        #[arg(long, default_value = "knn200", value_parser = parse_metric)]
        metric: infomax_report::db::Metric,
        /// Only runs of this profile (otherwise a cell may average runs of different budgets,
        /// and says so).
        #[arg(long)]
        profile: Option<String>,
        #[command(flatten)]
        html: HtmlDir,
    },
    /// Evaluate a method's loss and its gradient on embeddings from .npy files, to check infomax
    /// against another framework on the same numbers.
    ///
    /// Views are (N, D) float32 or float64 arrays, all the same shape, N ≥ 2. byol and simsiam
    /// take [online prediction, target projection] (or k predictions then k targets).
    Loss {
        /// barlow-twins, vicreg, w-mse, simclr, byol or simsiam.
        #[arg(long)]
        method: Method,
        /// The views' .npy files.
        #[arg(long, num_args = 2.., required = true, value_name = "FILE")]
        views: Vec<PathBuf>,
        /// A loss parameter: barlow-twins lambda; vicreg sim_coeff, std_coeff, cov_coeff, gamma, eps;
        /// w-mse w_size (default N), w_iter, eps, seed, permute (0: consecutive sub-batches); simclr tau.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Write ∂loss/∂view_i as DIR/grad_i.npy (float32).
        #[arg(long, value_name = "DIR")]
        grad_out: Option<PathBuf>,
        /// Print one JSON object: {"method", "loss", "terms"}.
        #[arg(long)]
        json: bool,
    },
    /// Datasets under the data root: list, verify, fetch, preview.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Micro-benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Augmented views per second of a dataset's pipeline (synthetic images of its stored size,
    /// rayon over the batch, as the trainer's prefetch thread makes them).
    Augment {
        /// cifar10, cifar100, stl10 or tiny-imagenet.
        #[arg(long, default_value = "cifar10")]
        dataset: infomax_data::Dataset,
        /// wmse or fair.
        #[arg(long, default_value = "wmse")]
        preset: String,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, default_value_t = 2)]
        views: usize,
        /// Timed batches.
        #[arg(long, default_value_t = 5)]
        batches: usize,
        #[arg(long)]
        json: bool,
    },
    /// Time the full training step (every view forward, the method's loss, backward, optimiser
    /// update) on synthetic 32×32 images, after warm-up; prints images/s (images, not views) and
    /// peak RSS.
    TrainStep {
        /// vicreg, barlow-twins, w-mse, simclr, byol or simsiam.
        #[arg(long, default_value = "vicreg")]
        method: Method,
        /// ResNet-18 width multiplier (1.0 = 64-128-256-512).
        #[arg(long, default_value_t = 1.0)]
        width: f64,
        /// Images per step.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Augmented views per image.
        #[arg(long, default_value_t = 2)]
        views: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Projector widths, comma-separated (default: the method's own head).
        #[arg(long, value_delimiter = ',')]
        projector: Option<Vec<usize>>,
        /// Convolution kernels: im2col (GEMM-lowered) or candle (candle's reference kernels).
        #[arg(long, default_value = "im2col")]
        conv: ConvKernels,
        /// cpu or cuda[:N] (a CUDA build: `just build-cuda`).
        #[arg(long, default_value = "cpu", value_name = "DEVICE")]
        device: infomax_runner::device::DeviceChoice,
        /// f32, or bf16 (autocast-style convolutions and head products).
        #[arg(long, default_value = "f32")]
        precision: infomax_runner::spec::Precision,
        /// Also write the initial weights, the views, every step's loss and the final weights to
        /// DIR, for replaying the same steps in another framework
        /// (`tools/step_reference_torch.py DIR` does it in PyTorch and compares).
        #[arg(long, value_name = "DIR")]
        trace: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// GFLOP/s of each convolution pass (forward, input gradient, weight gradient) at every
    /// shape of the small-stem ResNet-18 on 32×32 images, and over the whole network.
    Conv {
        /// ResNet-18 width multiplier (1.0 = 64-128-256-512).
        #[arg(long, default_value_t = 1.0)]
        width: f64,
        /// Images per call.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Convolution kernels: im2col (GEMM-lowered) or candle (candle's reference kernels).
        #[arg(long, default_value = "im2col")]
        conv: ConvKernels,
        /// Timed calls per pass; the fastest counts.
        #[arg(long, default_value_t = 10)]
        repetitions: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Keep freed memory in the process instead of returning it to the kernel: a training step
/// allocates and frees the same large buffers every step, and re-faulting fresh zeroed pages
/// cost about 30 % of a step at width 0.25 (measured with perf: `clear_page_erms`,
/// `exc_page_fault`). Memory stays bounded by the step's peak. glibc caps the mmap threshold at
/// 32 MB, so blocks above it (width 1.0's first-stage activations: 33.5 MB at batch 128) were
/// still fresh mappings every step — 5 % of the step in page faults — until mmap was switched
/// off for the heap's blocks altogether: width 1.0 batch 128 20.2-23.3 → 23.8-24.0 images/s,
/// batch 256 21.9-22.7 → 24.6, the same peak memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// candle runs its element-wise CPU ops on a pool of its own (`CANDLE_NUM_THREADS`, by default a
/// thread per core), whose idle workers spin (25 000 rounds) after every op before they sleep;
/// infomax's heavy work — the encoder, the heads' products, the optimiser — runs on rayon's
/// pool, and what is left to candle's (the loss, the projector's element-wise steps, autograd's
/// gradient sums) is small tensors, where those spinning workers took cores from rayon's
/// threads. One thread for candle's pool unless the user sets it: `bench train-step`, alternated
/// runs, width 0.25 batch 128 305.4 → 330.1 images/s (medians of four), width 0.5 103.4 → 106.6
/// and 106.1 → 107.8 (five and four).
fn candle_elementwise_on_one_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any candle op (its pool reads the variable once, when first used) and before
        // any other thread exists.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Leave quietly when stdout's reader goes away (`infomax compare | head`), as Unix tools do:
/// Rust ignores SIGPIPE, so every later `print!` would panic on the broken pipe instead.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

fn main() -> ExitCode {
    keep_freed_memory();
    candle_elementwise_on_one_thread();
    default_sigpipe();
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let device = candle_core_device();
    match cli.command {
        Command::Reproduce {
            experiment,
            profile,
            seeds,
            only,
            shard,
            dry_run,
            set,
            experiments_dir,
            no_progress,
            device: device_choice,
            slurm_requeue,
            html,
        } => {
            let path = infomax_runner::config::locate(&experiment, &experiments_dir)?;
            let file = ExperimentFile::load(&path)?;
            let mut overrides = set.iter().map(|s| s.parse::<Override>()).collect::<Result<Vec<_>, _>>()?;
            if let Some(choice) = device_choice {
                overrides.push(choice.override_text().parse::<Override>()?);
            }
            let cuda_ordinal = device_choice.map_or(0, |c| c.ordinal);
            let opts = PlanOptions { seeds, only, shard };
            let plan = infomax_runner::plan::plan(&file, &profile, &overrides, &opts)?;
            let data_root = infomax_data::root::data_root(cli.paths.data_dir.clone());
            let uses_cuda = plan.iter().any(|r| r.spec.train.device == DeviceKind::Cuda);
            let run_device = if uses_cuda {
                infomax_runner::device::open(DeviceKind::Cuda, cuda_ordinal).unwrap_or_else(|_| device.clone())
            } else {
                device.clone()
            };
            let machine = infomax_runner::machine::describe(&run_device);
            if dry_run {
                // A dry run reads the database if there is one and never creates it.
                let store = if cli.paths.db.is_file() { Some(Store::open(&cli.paths.db)?) } else { None };
                print!("{}", dry_run_text(&file, &profile, &plan, store.as_ref(), &data_root, &machine)?);
                return Ok(ExitCode::SUCCESS);
            }
            let store = Store::open(&cli.paths.db)?;
            store.record_experiment(&file, &plan)?;
            if let Some(p) = file.profiles.get(&profile) {
                tracing::info!("{} / profile {profile}: {}", file.meta.name, p.about);
            }
            tracing::info!("{} runs planned; data from {}", plan.len(), data_root.display());
            let stop = StopOnSignal::install();
            let ctx = RunContext {
                data_root,
                store: &store,
                cuda_ordinal,
                progress: !no_progress,
                code_version: infomax_runner::machine::code_version(),
                machine,
                checkpoints: cli.paths.db.with_extension("checkpoints"),
                stop: stop.flag.clone(),
            };
            let summary = infomax_runner::sweep::run_plan(&plan, &ctx)?;
            for (run, why) in &summary.skipped {
                println!("skipped  {run}: {why}");
            }
            for (run, why) in &summary.diverged {
                println!("diverged {run}: {why}");
            }
            for (run, why) in &summary.failed {
                println!("failed   {run}: {why}");
            }
            if let Some(why) = &summary.interrupted {
                println!("stopped: {why}");
            }
            println!("{} / {profile}: {} runs: {}", file.meta.name, plan.len(), summary.line());
            let report = infomax_report::render(&cli.paths.db, &html.for_db(&cli.paths.db))?;
            println!("report: {}", report.index.display());
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
        Command::Submit(args) => {
            submit::submit(args, cli.paths.data_dir.clone())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { experiment } => {
            if !cli.paths.db.is_file() {
                anyhow::bail!("{}: no results database yet (run `infomax reproduce` first)", cli.paths.db.display());
            }
            let store = Store::open(&cli.paths.db)?;
            print!("{}", status_text(&store.run_rows(experiment.as_deref())?));
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportEncoder { run, out } => {
            if !cli.paths.db.is_file() {
                anyhow::bail!("{}: no results database", cli.paths.db.display());
            }
            let store = Store::open(&cli.paths.db)?;
            let e = infomax_runner::export::export_encoder(
                &store,
                &cli.paths.db.with_extension("checkpoints"),
                &run,
                &out,
            )?;
            let enc = &e.spec.encoder;
            println!(
                "{}: run {} ({}, {} on {}), epoch {}/{}: {} tensors of a {} at width {} ({} stem{})",
                out.display(),
                e.run_id,
                e.status,
                e.spec.method.name(),
                e.spec.dataset.name(),
                e.epoch,
                e.epochs,
                e.tensors,
                enc.arch,
                enc.width,
                if enc.small_stem { "3×3 stride-1" } else { "7×7 stride-2" },
                if enc.max_pool { ", max-pool" } else { ", no max-pool" }
            );
            if enc.width != 1.0 {
                println!(
                    "note: width {} has {} channels in its first stage; torchvision's {} has 64 (width 1.0)",
                    enc.width,
                    enc.resnet().stage_widths()[0],
                    enc.arch
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { format, out } => {
            let mut stdout = std::io::stdout().lock();
            let rows = infomax_report::export::export(&cli.paths.db, format, out.as_deref(), &mut stdout)?;
            if let Some(f) = out {
                println!("{}: {rows} rows", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge { sources } => {
            let store = Store::open(&cli.paths.db)?;
            for src in &sources {
                let s = store.merge_from(src).with_context(|| format!("merging {}", src.display()))?;
                println!(
                    "{}: {} runs copied, {} replaced (further along there), {} kept",
                    src.display(),
                    s.copied,
                    s.replaced,
                    s.kept
                );
            }
            println!("merged into {}", cli.paths.db.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Datasets(cmd) => datasets::run(cmd, &infomax_data::root::data_root(cli.paths.data_dir.clone())),
        Command::Report { html } => {
            let r = infomax_report::render(&cli.paths.db, &html.for_db(&cli.paths.db))?;
            println!(
                "report: {} ({} experiment pages, {} run pages)",
                r.index.display(),
                r.experiments.len(),
                r.runs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { methods, datasets, metric, profile, html } => {
            let db = infomax_report::db::Database::load(&cli.paths.db)?;
            let c = infomax_report::compare::compare(&db, &methods, &datasets, metric, profile.as_deref())?;
            print!("{}", c.to_text());
            let page =
                infomax_report::render_compare(&cli.paths.db, &c, &html.for_db(&cli.paths.db).join("compare.html"))?;
            println!("page: {}", page.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Loss { method, views, set, grad_out, json } => {
            let set = set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .with_context(|| format!("--set {kv}: KEY=VALUE expected"))
                })
                .collect::<Result<Vec<_>>>()?;
            let r = infomax_runner::inspect::inspect(method, &views, &set)?;
            if json {
                println!("{}", r.to_json());
            } else {
                println!("{} loss: {}", method.name(), r.loss);
                for (name, v) in &r.terms {
                    println!("  {name}: {v}");
                }
            }
            if let Some(dir) = grad_out {
                let written = r.write_gradients(&dir)?;
                if !json {
                    println!("gradients: {} files in {}", written.len(), dir.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Augment { dataset, preset, batch, views, batches, json }) => {
            let preset: infomax_data::augment::Preset =
                serde_json::from_value(serde_json::Value::String(preset.clone()))
                    .with_context(|| format!("--preset {preset}: expected wmse or fair"))?;
            let r = infomax_runner::bench::augment_throughput(&infomax_runner::bench::AugmentBench {
                dataset,
                preset,
                batch,
                views,
                batches,
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "augment, {} preset on {} ({} px stored → {} px views), batch {batch} × {views} views: {:.0} views/s ({})",
                    r.preset,
                    r.dataset,
                    r.stored_side,
                    r.view_side,
                    r.views_per_second,
                    infomax_runner::machine::describe(&device)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Conv { width, batch, conv, repetitions, json }) => {
            let r = infomax_runner::bench::conv_passes(&infomax_runner::bench::ConvBench {
                width,
                batch,
                conv,
                repetitions,
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "convolution passes, ResNet-18 width {width}, batch {batch}, {conv:?} kernels, GFLOP/s ({})",
                infomax_runner::machine::describe(&device)
            );
            println!(
                "{:>16} {:>6} {:>5}  {:>8} {:>10} {:>11} {:>9}",
                "in→out", "side", "k/s", "forward", "input grad", "weight grad", "backward"
            );
            // A downsampling block's first convolution runs with its 1×1 shortcut ("3/2+1").
            let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
            for row in &r.rows {
                println!(
                    "{:>16} {:>6} {:>5}  {:>8.1} {:>10} {:>11} {:>9.1}",
                    format!("{}×{}→{}", row.count, row.channels, row.out_channels),
                    row.side,
                    format!("{}/{}{}", row.kernel, row.stride, if row.shortcut { "+1" } else { "" }),
                    row.forward_gflops,
                    opt(row.input_grad_gflops),
                    opt(row.weight_grad_gflops),
                    row.backward_gflops
                );
            }
            println!(
                "whole network: forward {:.1} GFLOP/s, backward {:.1} GFLOP/s",
                r.network_forward_gflops, r.network_backward_gflops
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::TrainStep {
            method,
            width,
            batch,
            views,
            steps,
            warmup,
            projector,
            conv,
            device: choice,
            precision,
            trace,
            json,
        }) => {
            let cfg = TrainStepBench { method, width, batch, views, steps, warmup, projector, conv, precision, trace };
            let device = infomax_runner::device::open(choice.kind, choice.ordinal)?;
            let r = train_step(&cfg, &device)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "train step, {} on ResNet-18 width {width}, batch {batch}, {views} views, projector {}, {conv:?} \
                     convolutions, {precision:?}: {:.1} images/s, {:.3} s/step, peak RSS {:.2} GB ({})",
                    method.name(),
                    cfg.projector.as_ref().map_or("default".to_string(), |p| format!("{p:?}")),
                    r.images_per_second,
                    r.seconds_per_step,
                    r.peak_rss_bytes as f64 / 1e9,
                    infomax_runner::machine::describe(&device)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A flag raised by SIGINT, SIGTERM (a scheduler's stop) or SIGUSR1 (Slurm's time-limit
/// warning): the trainer finishes its step, checkpoints, marks the run `interrupted` and the
/// process exits with 130 (or requeues itself under `--slurm-requeue`); a second signal ends it
/// at once.
struct StopOnSignal {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    which: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl StopOnSignal {
    fn install() -> Self {
        use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
        use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
        let flag = std::sync::Arc::new(AtomicBool::new(false));
        let which = std::sync::Arc::new(AtomicI32::new(0));
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1]) {
            Ok(mut signals) => {
                let (seen, last) = (flag.clone(), which.clone());
                std::thread::spawn(move || {
                    for sig in signals.forever() {
                        if seen.swap(true, Ordering::SeqCst) {
                            std::process::exit(130);
                        }
                        last.store(sig, Ordering::SeqCst);
                        let name = match sig {
                            SIGUSR1 => "SIGUSR1",
                            SIGTERM => "SIGTERM",
                            _ => "SIGINT",
                        };
                        eprintln!("{name} received: stopping after the current step (again to stop at once)");
                    }
                });
            }
            Err(e) => tracing::warn!(
                "cannot catch SIGINT/SIGTERM/SIGUSR1 ({e}); an interrupted run resumes from its last checkpoint"
            ),
        }
        StopOnSignal { flag, which }
    }

    /// The signal that raised the flag, if one did.
    fn signal(&self) -> Option<infomax_runner::slurm::StopSignal> {
        use infomax_runner::slurm::StopSignal;
        match self.which.load(std::sync::atomic::Ordering::SeqCst) {
            signal_hook::consts::SIGUSR1 => Some(StopSignal::User1),
            signal_hook::consts::SIGTERM => Some(StopSignal::Terminate),
            signal_hook::consts::SIGINT => Some(StopSignal::Interrupt),
            _ => None,
        }
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
    if let Some(p) = file.profiles.get(profile) {
        writeln!(out, "profile {profile}: {}", p.about)?;
    }
    let mut total = 0.0;
    let mut pending = 0;
    for (i, (run, diff)) in plan.iter().zip(&diffs).enumerate() {
        let hash = run.spec.hash();
        let row = rows.iter().find(|r| r.config_hash == hash && r.status != "pending");
        let state = match (row, infomax_runner::sweep::missing_dataset(run.spec.dataset, data_root)) {
            (Some(r), _) if r.status == "finished" || r.status == "diverged" => r.status.clone(),
            (_, Some(_)) => "skip: dataset not found".to_string(),
            (Some(r), None) if r.epochs_done > 0 => format!("resumes after epoch {}/{}", r.epochs_done, r.epochs),
            _ => "to train".to_string(),
        };
        let estimate = match gflops {
            Some(g) if state.starts_with("to train") || state.starts_with("resumes") => {
                let s = estimate_seconds(&run.spec, g);
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

/// `infomax status`: runs grouped by state, each with its progress and last evaluation.
fn status_text(rows: &[infomax_runner::store::RunRow]) -> String {
    use std::fmt::Write;
    const ORDER: [&str; 7] = ["running", "interrupted", "failed", "diverged", "finished", "skipped", "pending"];
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no runs recorded\n");
    }
    for state in ORDER {
        let group: Vec<_> = rows.iter().filter(|r| r.status == state).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{state} ({})", group.len());
        for r in group {
            let evals: Vec<String> = r.last_eval.iter().map(|(_, name, top1)| format!("{name} {top1:.2} %")).collect();
            let at = r.last_eval.first().map_or(String::new(), |(e, _, _)| format!(" at epoch {e}"));
            let _ = write!(out, "  {}/{} {}  epochs {}/{}", r.experiment, r.profile, r.label, r.epochs_done, r.epochs);
            if !evals.is_empty() {
                let _ = write!(out, "  {}{at}", evals.join(", "));
            }
            if let Some(d) = &r.detail {
                let _ = write!(out, "  — {d}");
            }
            out.push('\n');
        }
    }
    out
}

/// The compute device: CPU unless built with `cuda` and a GPU is present.
fn candle_core_device() -> infomax_runner::Device {
    infomax_runner::default_device()
}
