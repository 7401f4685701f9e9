//! `infomax bench eval | augment | train-step | conv`: benchmarks of a full evaluation, the
//! augmentation pipeline, the full training step and the convolution passes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use infomax_runner::bench::{train_step, TrainStepBench};
use infomax_runner::config::{ConvKernels, Method};
#[derive(Subcommand)]
pub enum BenchCommand {
    /// A full evaluation: frozen features of the bank and test images (synthetic images of the
    /// dataset's size, a random encoder), then the 5-NN and 200-NN classifiers; prints images/s
    /// of the features, the k-NN's time and peak memory.
    Eval {
        /// cifar10, cifar100, stl10, tiny-imagenet, imagenet or imagenet100 (its split sizes and
        /// the side of its evaluation images).
        #[arg(long, default_value = "cifar10")]
        dataset: infomax_data::Dataset,
        /// ResNet-18 width multiplier.
        #[arg(long, default_value_t = 0.25)]
        width: f64,
        /// Bank images [default: the dataset's labelled training split].
        #[arg(long, default_value_t = 0)]
        bank: usize,
        /// Test images [default: the dataset's test split].
        #[arg(long, default_value_t = 0)]
        test: usize,
        /// Images per feature batch (`eval.batch_size`).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Augmented views per second of a dataset's pipeline, rayon over the batch as the trainer's
    /// prefetch thread makes them: synthetic images of a decoded dataset's stored size, or the
    /// training files of imagenet, imagenet100 or an image folder decoded for every batch at
    /// their own sizes, as training reads ImageNet (a folder's views at its --image-size).
    Augment {
        /// cifar10, cifar100, stl10, tiny-imagenet, imagenet, imagenet100, or the path of an
        /// image folder.
        #[arg(long, default_value = "cifar10")]
        dataset: infomax_data::DatasetSpec,
        #[command(flatten)]
        size: crate::datasets::ImageSize,
        /// wmse or fair [default: fair on imagenet and imagenet100, else wmse].
        #[arg(long)]
        preset: Option<String>,
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
        /// The method whose step to time.
        #[arg(long, default_value_t = Method::Vicreg, value_parser = crate::loss::method_value())]
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
        precision: infomax_runner::config::Precision,
        /// Also write the initial weights, the views, every step's loss and the final weights to
        /// DIR, for replaying the same steps in another framework
        /// (`tools/step_reference_torch.py DIR` does it in PyTorch and compares).
        #[arg(long, value_name = "DIR")]
        trace: Option<PathBuf>,
        /// A field of the step's run configuration, as in experiment files (`wmse.w_size=64`);
        /// repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
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
        /// f32, or bf16: the products of the kernels that have bf16 ones run on the CPU's
        /// AVX512-BF16 where it has it (elsewhere the passes stay f32).
        #[arg(long, default_value = "f32")]
        precision: infomax_runner::config::Precision,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand, data_root: &std::path::Path) -> Result<ExitCode> {
    let device = infomax_runner::default_device();
    match cmd {
        BenchCommand::Augment { dataset, size, preset, batch, views, batches, json } => {
            let preset = self::preset(preset, &dataset)?;
            let r = infomax_runner::bench::augment_throughput(&infomax_runner::bench::AugmentBench {
                dataset: size.apply(dataset)?,
                data_root: data_root.to_path_buf(),
                preset,
                batch,
                views,
                batches,
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let from = match r.stored_side {
                    0 => "files decoded per batch".to_string(),
                    side => format!("{side} px stored"),
                };
                println!(
                    "augment, {} preset on {} ({from} → {} px views), batch {batch} × {views} views: {:.0} views/s, \
                     {:.1} per thread on {} threads ({})",
                    r.preset,
                    r.dataset,
                    r.view_side,
                    r.views_per_second,
                    r.views_per_second_per_thread,
                    r.threads,
                    infomax_runner::environment::describe_machine_for_bench(&device)
                );
                if let Some(share) = r.decode_share {
                    println!(
                        "  decoding the files whole, alone: {:.0} % of that time (the views decode only their windows)",
                        100.0 * share
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Eval { dataset, width, bank, test, batch, json } => {
            let r =
                infomax_runner::bench::eval(&infomax_runner::bench::EvalBench { dataset, width, bank, test, batch })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "evaluation, {} bank {} + test {}, ResNet-18 width {width}, batches of {batch}: features {:.1} \
                     images/s ({:.1} s), k-NN {:.1} s, peak RSS {:.2} GB ({})",
                    r.dataset,
                    r.bank,
                    r.test,
                    r.images_per_second,
                    r.feature_seconds,
                    r.knn_seconds,
                    r.peak_rss_bytes as f64 / 1e9,
                    infomax_runner::environment::describe_machine_for_bench(&device)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Conv { width, batch, conv, repetitions, precision, json } => {
            let r = infomax_runner::bench::conv_passes(&infomax_runner::bench::ConvBench {
                width,
                batch,
                conv,
                repetitions,
                precision,
            })?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "convolution passes, ResNet-18 width {width}, batch {batch}, {conv:?} kernels, {}, GFLOP/s ({})",
                r.products,
                infomax_runner::environment::describe_machine_for_bench(&device)
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
        BenchCommand::TrainStep {
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
            set,
            json,
        } => {
            let set = set.iter().map(|s| s.parse()).collect::<Result<Vec<_>, _>>()?;
            let cfg =
                TrainStepBench { method, width, batch, views, steps, warmup, projector, conv, precision, trace, set };
            let device = infomax_runner::device::open(choice.kind, choice.ordinal)?;
            let r = train_step(&cfg, &device)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "train step, {} on {} width {width}, batch {batch}, {views} views, projector {}, {conv:?} \
                     convolutions, {precision:?}: {:.1} images/s, {:.3} s/step, peak RSS {:.2} GB ({})",
                    method.name(),
                    r.arch,
                    cfg.projector.as_ref().map_or("default".to_string(), |p| format!("{p:?}")),
                    r.images_per_second,
                    r.seconds_per_step,
                    r.peak_rss_bytes as f64 / 1e9,
                    infomax_runner::environment::describe_machine_for_bench(&device)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--preset`, or the dataset's default (`DatasetSpec::default_preset`).
pub fn preset(given: Option<String>, dataset: &infomax_data::DatasetSpec) -> Result<infomax_data::augment::Preset> {
    let Some(name) = given else { return Ok(dataset.default_preset()) };
    serde_json::from_value(serde_json::Value::String(name.clone()))
        .with_context(|| format!("--preset {name}: expected wmse or fair"))
}
