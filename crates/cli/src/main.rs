//! `infomax`: reproduce self-supervised learning papers' tables from experiment files.

mod bench;
mod compare;
mod datasets;
mod experiments;
mod export;
mod export_encoder;
mod loss;
mod merge;
mod paths;
mod plan_args;
mod process;
mod progress;
mod report;
mod reproduce;
mod show;
mod status;
mod stop;
mod submit;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use paths::Paths;

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

#[derive(Subcommand)]
enum Command {
    /// Train and evaluate an experiment's runs (its grid under a profile), store the results,
    /// then render the report.
    ///
    /// A run whose resolved configuration already finished in the database is not trained again;
    /// an interrupted one resumes from its last checkpoint; one whose dataset is missing is
    /// recorded as skipped. Processes sharing a database never train a run twice. Exit status:
    /// 0 every run finished, else 130 interrupted, 1 a run failed, 2 a run diverged, 3 a run was
    /// skipped (the first that applies).
    Reproduce(reproduce::ReproduceArgs),
    /// Submit an experiment's plan to a cluster: a Slurm job array (task i runs `reproduce
    /// --shard i/N` into its own database in the job folder) and a job after it that merges the
    /// databases and renders the report.
    ///
    /// Tasks checkpoint and requeue themselves when warned of their time limit, and resume where
    /// they stopped. Submitting the same thing into the same folder again continues the sweep.
    Submit(submit::SubmitArgs),
    /// Print the resolved configuration of each run an experiment plans, every field with the
    /// layer it comes from (the file's base, grid value, when, profile with its line; --set; or
    /// the built-in default), to check a recipe before training it.
    Show(show::ShowArgs),
    /// Runs by state (finished, diverged, failed, interrupted, running, skipped, pending), each
    /// with its id and hash prefix, the fields in which it differs from its grid cell's plan,
    /// its epochs and its last evaluation.
    Status(status::StatusArgs),
    /// Combine results databases (e.g. one per shard) into --db without duplicating a run: a
    /// run kept once, the furthest-along copy winning.
    Merge(merge::MergeArgs),
    /// Write a run's trained encoder (its latest checkpoint) as safetensors with torchvision's
    /// ResNet names (conv1.weight, bn1.running_mean, layer1.0.conv1.weight, …), loadable into
    /// torchvision.models.resnet18 with the run's stem (3×3 conv1; no max-pool unless the run had
    /// one) and fc = Identity.
    ExportEncoder(export_encoder::ExportEncoderArgs),
    /// Every run and evaluation as one flat table (a row per evaluation), CSV or Parquet.
    Export(export::ExportArgs),
    /// Render the report from the results database: index.html (experiments, the findings that
    /// docs/methods.md#findings describes, runs), a page per experiment shaped like the paper's
    /// table, a page per run.
    Report(report::ReportArgs),
    /// Compare methods across datasets on one metric, from every finished run in the database:
    /// a table here and compare.html in the report folder.
    Compare(compare::CompareArgs),
    /// Evaluate a method's loss and its gradient on embeddings from .npy files, to check infomax
    /// against another framework on the same numbers.
    ///
    /// Views are (N, D) float32 or float64 arrays, all the same shape, N ≥ 2. Methods with a
    /// predictor take [online prediction, target projection] (or k predictions then k targets).
    Loss(loss::LossArgs),
    /// The experiments a name can mean: `experiments list` shows each name, its title and the
    /// file it resolves to (a path in the experiments directory, or built in).
    #[command(subcommand)]
    Experiments(experiments::ExperimentsCommand),
    /// Datasets under the data root: list, verify, fetch, preview.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Micro-benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    process::keep_freed_memory();
    process::candle_elementwise_on_one_thread();
    process::default_sigpipe();
    let matches = loss::with_keys_in_help(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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

/// Hand the parsed command to its module.
fn run(cli: Cli) -> Result<ExitCode> {
    let Cli { paths, command, .. } = cli;
    match command {
        Command::Reproduce(args) => reproduce::run(args, &paths),
        Command::Submit(args) => submit::run(args, &paths),
        Command::Status(args) => status::run(args, &paths),
        Command::Show(args) => show::run(args, &paths),
        Command::Merge(args) => merge::run(args, &paths),
        Command::ExportEncoder(args) => export_encoder::run(args, &paths),
        Command::Export(args) => export::run(args, &paths),
        Command::Report(args) => report::run(args, &paths),
        Command::Compare(args) => compare::run(args, &paths),
        Command::Loss(args) => loss::run(args),
        Command::Experiments(cmd) => experiments::run(cmd, &paths.catalogue()?),
        Command::Datasets(cmd) => datasets::run(cmd, &paths),
        Command::Bench(cmd) => bench::run(cmd, &paths.data_root()),
    }
}
