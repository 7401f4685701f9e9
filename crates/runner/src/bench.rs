//! `infomax bench train-step`: the full training step of a method (every view forward, loss,
//! backward, optimiser update, BYOL's EMA) on synthetic images, timed after warm-up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use infomax_data::views::augmented_views;
use infomax_data::{DatasetSpec, ImageFiles, ImageSet, Images, Label, Split, Unreadable};

use crate::config::{ConvKernels, Dataset, DeviceKind, Method, Precision, RunConfig};
use crate::method::{Network, StepContext};
use crate::train::optimizer_for;
use crate::{Error, Result};

mod conv;

#[derive(Debug, Clone)]
pub struct TrainStepBench {
    pub method: Method,
    pub width: f64,
    pub batch: usize,
    pub views: usize,
    pub steps: usize,
    pub warmup: usize,
    /// Projector widths; `None` keeps the method's default head.
    pub projector: Option<Vec<usize>>,
    pub conv: ConvKernels,
    pub precision: Precision,
    /// Write what another framework needs to replay the same steps here (see [`trace_start`]).
    pub trace: Option<PathBuf>,
    /// Fields of the run configuration set over the above (`wmse.w_size=64`).
    pub set: Vec<crate::Override>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainStepResult {
    /// Images (not views) per second.
    pub images_per_second: f64,
    pub seconds_per_step: f64,
    pub peak_rss_bytes: u64,
    /// The encoder's architecture (`resnet18`, or what `--set encoder.arch` chose).
    pub arch: String,
    pub width: f64,
    pub batch: usize,
}

pub fn train_step(cfg: &TrainStepBench, device: &Device) -> Result<TrainStepResult> {
    let mut config = RunConfig::defaults(cfg.method, Dataset::Cifar10);
    config.encoder.width = cfg.width;
    if let Some(widths) = &cfg.projector {
        config.projector.widths = widths.clone();
        if let Some(p) = &mut config.predictor {
            *p.widths.last_mut().expect("validated head") = *widths.last().unwrap_or(&1);
        }
    }
    config.encoder.conv = cfg.conv;
    config.train.precision = cfg.precision;
    config.train.device = if device.is_cpu() { DeviceKind::Cpu } else { DeviceKind::Cuda };
    config.train.batch_size = cfg.batch;
    config.train.views = cfg.views;
    config.train.epochs = 1;
    config.optimizer.warmup_epochs = 0.0;
    let config = crate::Override::apply_all(&cfg.set, &config)?;
    if cfg.steps == 0 {
        return Err(Error::Run { run: "bench".into(), what: "--steps: at least 1 expected".into() });
    }
    crate::validate::validate(&config)
        .map_err(|(field, what)| Error::Run { run: "bench".into(), what: format!("{field}: {what}") })?;
    // The synthetic views alone (f32), before any activation.
    let view_bytes = (cfg.batch as u128) * (cfg.views as u128) * 3 * 32 * 32 * 4;
    crate::environment::check_fits(&format!("--batch {} --views {}", cfg.batch, cfg.views), view_bytes)?;
    let net = Network::new(&config, device)?;
    let mut opt = optimizer_for(&config, &net);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let views = (0..cfg.views)
        .map(|_| {
            let v: Vec<f32> = (0..cfg.batch * 3 * 32 * 32).map(|_| StandardNormal.sample(&mut rng)).collect();
            Tensor::from_vec(v, (cfg.batch, 3, 32, 32), device)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let lr = config.peak_lr();
    let ctx = StepContext { seed: 0, epoch: 1, step: 0, progress: 0.0 };
    if let Some(dir) = &cfg.trace {
        trace_start(dir, &net, &views)?;
    }
    let mut losses = Vec::with_capacity(cfg.warmup + cfg.steps);
    let mut one_step = || -> Result<()> {
        let out = config.method.step_loss(&config, &net, &views, &ctx)?;
        let grads = out.loss.backward()?;
        if let (Some(dir), true) = (&cfg.trace, losses.is_empty()) {
            let named: HashMap<String, Tensor> = net
                .params()
                .into_iter()
                .filter_map(|p| grads.get(p.var.as_tensor()).map(|g| (p.name, g.clone())))
                .collect();
            candle_core::safetensors::save(&named, dir.join("gradients0.safetensors"))?;
        }
        opt.step(&grads, lr)?;
        config.method.after_step(&config, &net, &ctx)?;
        // Wait for the device so the timing covers the work.
        losses.push(out.loss.to_scalar::<f32>()?);
        Ok(())
    };
    for _ in 0..cfg.warmup {
        one_step()?;
    }
    let started = Instant::now();
    for _ in 0..cfg.steps {
        one_step()?;
    }
    let seconds_per_step = started.elapsed().as_secs_f64() / cfg.steps as f64;
    if let Some(dir) = &cfg.trace {
        trace_finish(dir, &config, &net, lr, &ctx, &losses)?;
    }
    Ok(TrainStepResult {
        images_per_second: cfg.batch as f64 / seconds_per_step,
        seconds_per_step,
        peak_rss_bytes: crate::environment::peak_rss_bytes().unwrap_or(0),
        arch: config.encoder.arch.clone(),
        width: cfg.width,
        batch: cfg.batch,
    })
}

/// `--trace DIR` of `bench train-step`: the steps it ran, written so that another framework can
/// replay them from the same weights on the same views and compare (`tools/step_reference_torch.py`
/// does so in PyTorch). Files: `initial.safetensors` (every variable of the online network,
/// BatchNorm running statistics included, before the first step; BYOL's target starts equal to
/// it), `views.safetensors` (`view0`, `view1`, … as the step sees them), `gradients0.safetensors`
/// (the loss's gradient of every trainable variable at the first step), `final.safetensors` and,
/// for BYOL, `final_target.safetensors` after the last step, and `trace.json`: the resolved run
/// configuration, the learning rate, the target's EMA rate (BYOL) and the loss of every step (warm-up steps
/// included). Every step uses the same views, the peak learning rate and progress 0.
fn trace_start(dir: &Path, net: &Network, views: &[Tensor]) -> Result<()> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    net.vars.var_map().save(dir.join("initial.safetensors"))?;
    let named: HashMap<String, Tensor> =
        views.iter().enumerate().map(|(i, v)| (format!("view{i}"), v.clone())).collect();
    candle_core::safetensors::save(&named, dir.join("views.safetensors"))?;
    Ok(())
}

fn trace_finish(
    dir: &Path,
    config: &RunConfig,
    net: &Network,
    lr: f64,
    ctx: &StepContext,
    losses: &[f32],
) -> Result<()> {
    net.vars.var_map().save(dir.join("final.safetensors"))?;
    if let Some(target) = &net.target {
        target.vars.var_map().save(dir.join("final_target.safetensors"))?;
    }
    let tau = config.method.target_ema_rate(config, ctx.progress);
    let json = serde_json::json!({ "config": config, "lr": lr, "target_ema_rate": tau, "losses": losses });
    let path = dir.join("trace.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("plain JSON values"))
        .map_err(|source| Error::Io { path, source })?;
    Ok(())
}

/// `infomax bench eval`: a full evaluation's cost — frozen features of a bank and a test set,
/// then the 5-NN and 200-NN classifiers — on synthetic images of a dataset's size (pixel values
/// do not change the cost), with a randomly initialised encoder.
#[derive(Debug, Clone)]
pub struct EvalBench {
    pub dataset: Dataset,
    pub width: f64,
    /// Bank and test images (0: the dataset's labelled training and test splits).
    pub bank: usize,
    pub test: usize,
    /// Images per feature batch (`eval.batch_size`).
    pub batch: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub dataset: String,
    pub width: f64,
    pub bank: usize,
    pub test: usize,
    /// Feature extraction of bank and test images.
    pub feature_seconds: f64,
    pub images_per_second: f64,
    /// Both k-NN classifiers.
    pub knn_seconds: f64,
    pub peak_rss_bytes: u64,
}

pub fn eval(cfg: &EvalBench) -> Result<EvalResult> {
    use rand::Rng;
    let d = cfg.dataset;
    let count = |asked: usize, split: infomax_data::Split| {
        let has = d.splits().iter().find(|(s, _)| *s == split).map_or(0, |(_, n)| *n);
        if asked == 0 {
            has
        } else {
            asked
        }
    };
    let (bank_n, test_n) = (count(cfg.bank, infomax_data::Split::Train), count(cfg.test, infomax_data::Split::Test));
    if bank_n < 200 || test_n == 0 || cfg.batch == 0 {
        return Err(Error::Run {
            run: "bench".into(),
            what: "--bank at least 200 (200-NN), --test and --batch at least 1 expected".into(),
        });
    }
    let mut config = RunConfig::defaults(Method::Vicreg, d);
    config.encoder.width = cfg.width;
    crate::validate::validate(&config)
        .map_err(|(field, what)| Error::Run { run: "bench".into(), what: format!("{field}: {what}") })?;
    let side = d.side();
    // The synthetic images (u8), before anything else is allocated.
    let image_bytes = ((bank_n + test_n) as u128) * 3 * (side * side) as u128;
    crate::environment::check_fits(&format!("--bank {bank_n} --test {test_n}"), image_bytes)?;
    let device = Device::Cpu;
    let net = Network::new(&config, &device)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut synthetic = |n: usize| {
        let pixels: Vec<u8> = (0..n * 3 * side * side).map(|_| rng.random()).collect();
        let labels: Vec<Label> = (0..n).map(|_| rng.random_range(0..d.classes() as Label)).collect();
        Images::from(ImageSet::new("synthetic", Split::Train, (side, side), pixels, labels, Vec::new()))
    };
    let (bank_set, test_set) = (synthetic(bank_n), synthetic(test_n));
    let (bank_idx, test_idx): (Vec<usize>, Vec<usize>) = ((0..bank_n).collect(), (0..test_n).collect());
    let started = Instant::now();
    let bank = crate::eval::extract_features(&net, &bank_set, &bank_idx, &config.augment, cfg.batch, &device, |_| {})?;
    let test = crate::eval::extract_features(&net, &test_set, &test_idx, &config.augment, cfg.batch, &device, |_| {})?;
    let feature_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    std::hint::black_box(crate::eval::knn_euclidean_majority(&bank, &test, 5, d.classes())?);
    std::hint::black_box(crate::eval::knn_cosine_weighted(&bank, &test, 200, 0.1, d.classes())?);
    let knn_seconds = started.elapsed().as_secs_f64();
    Ok(EvalResult {
        dataset: d.name().into(),
        width: cfg.width,
        bank: bank_n,
        test: test_n,
        feature_seconds,
        images_per_second: (bank_n + test_n) as f64 / feature_seconds,
        knn_seconds,
        peak_rss_bytes: crate::environment::peak_rss_bytes().unwrap_or(0),
    })
}

/// `infomax bench augment`: how many augmented views per second the data pipeline makes.
#[derive(Debug, Clone)]
pub struct AugmentBench {
    /// A built-in dataset (synthetic images of its stored size), or an image folder whose
    /// training files are decoded batch after batch (views at its `image_size`).
    pub dataset: infomax_data::DatasetSpec,
    pub data_root: std::path::PathBuf,
    pub preset: infomax_data::augment::Preset,
    /// Images per batch (each gets `views` views), as the trainer asks for them.
    pub batch: usize,
    pub views: usize,
    /// Timed batches.
    pub batches: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AugmentResult {
    pub dataset: String,
    pub preset: String,
    /// Where the pixels come from: `synthetic` (in memory, as a built-in dataset is) or
    /// `decoded files` (each image decoded from its file for its views, as a stream is).
    pub source: String,
    /// Stored side of the synthetic images (0 for files, decoded at their own sizes).
    pub stored_side: usize,
    pub view_side: usize,
    pub views_per_second: f64,
    pub threads: usize,
    pub views_per_second_per_thread: f64,
    /// Decoding every file of the same batches whole to planar `[0, 1]` pixels (as evaluation
    /// does), timed alone, as a share of the time the views took: the views decode only their
    /// windows (`views::Source::views`), so this says what a whole decode would cost them.
    /// `None` for synthetic images.
    pub decode_share: Option<f64>,
}

/// Augment a batch with the preset at the dataset's crop size, batch after batch, as the training
/// loop does: for a built-in dataset synthetic images of its stored size (pixel values do not
/// change the cost), for an image folder its first training files, decoded for every batch.
pub fn augment_throughput(cfg: &AugmentBench) -> Result<AugmentResult> {
    use rand::Rng;
    if cfg.batch == 0 || cfg.views == 0 || cfg.batches == 0 {
        return Err(Error::Run {
            run: "bench".into(),
            what: "--batch, --views and --batches: at least 1 expected".into(),
        });
    }
    let augment = RunConfig::augment_defaults(cfg.preset, &cfg.dataset);
    let idx: Vec<usize> = (0..cfg.batch).collect();
    let threads = rayon::current_num_threads();
    // A folder's or ImageNet's training files, decoded for every batch as training does.
    let files = match &cfg.dataset {
        DatasetSpec::Folder(f) => {
            let listing = f.listing(&cfg.data_root, Split::Train)?;
            let files = listing.images.into_iter().map(|(p, _)| p).collect();
            Some(ImageFiles {
                name: f.name(),
                split: Split::Train,
                files,
                labels: Vec::new(),
                class_names: listing.classes,
                unreadable: Unreadable::default(),
            })
        }
        // The in-memory datasets are timed on synthetic images: no data needed.
        DatasetSpec::Builtin(d) if d.imagenet_classes().is_none() => None,
        DatasetSpec::Builtin(d) => match d.open(&cfg.data_root, Split::Train, Unreadable::default())? {
            Images::Files(files) => Some(files),
            Images::Decoded(_) => None,
        },
    };
    let (source, stored_side, set): (&str, usize, Images) = match files {
        Some(mut files) => {
            // The batch's files, spread over the classes, repeated when there are fewer.
            let spread = files.spread(cfg.batch).files;
            files.files = spread.into_iter().cycle().take(cfg.batch).collect();
            ("decoded files", 0, Images::Files(files))
        }
        None => {
            let side = cfg.dataset.side();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let pixels: Vec<u8> = (0..cfg.batch * 3 * side * side).map(|_| rng.random()).collect();
            let set = ImageSet::new("synthetic", Split::Train, (side, side), pixels, Vec::<Label>::new(), Vec::new());
            ("synthetic", side, Images::from(set))
        }
    };
    // One untimed batch warms the thread pool and the allocator.
    augmented_views(&set, &idx, cfg.views, &augment, 0, 0)?;
    let started = Instant::now();
    for epoch in 1..=cfg.batches {
        std::hint::black_box(augmented_views(&set, &idx, cfg.views, &augment, 0, epoch as u64)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let views_per_second = (cfg.batches * cfg.batch * cfg.views) as f64 / seconds;
    let decode_share = match &set {
        Images::Files(files) => {
            use rayon::prelude::*;
            let started = Instant::now();
            for _ in 0..cfg.batches {
                let decoded = idx.par_iter().map(|&i| files.rgb(i)).collect::<infomax_data::Result<Vec<_>>>()?;
                std::hint::black_box(decoded);
            }
            Some(started.elapsed().as_secs_f64() / seconds)
        }
        Images::Decoded(_) => None,
    };
    Ok(AugmentResult {
        dataset: cfg.dataset.name().into(),
        preset: cfg.preset.name().into(),
        source: source.into(),
        stored_side,
        view_side: augment.size(),
        views_per_second,
        threads,
        views_per_second_per_thread: views_per_second / threads as f64,
        decode_share,
    })
}

/// `infomax bench conv`: GFLOP/s of each convolution pass at the shapes ResNet-18 uses.
#[derive(Debug, Clone)]
pub struct ConvBench {
    pub width: f64,
    pub batch: usize,
    pub conv: ConvKernels,
    /// Timed calls per pass (the best counts).
    pub repetitions: usize,
    pub precision: Precision,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConvPassRow {
    pub channels: usize,
    pub out_channels: usize,
    pub side: usize,
    pub kernel: usize,
    pub stride: usize,
    /// With the 1×1 stride-2 projection shortcut of the same input timed beside it (its FLOPs
    /// counted in), as training runs a downsampling block's first convolution.
    pub shortcut: bool,
    /// How many convolutions of this shape the network has.
    pub count: usize,
    pub forward_gflops: f64,
    /// The gradients a training step computes here together: input and weight, or the weight's
    /// alone for the stem (the images need none).
    pub backward_gflops: f64,
    /// `None` for the stem, and for candle's kernels (their autograd makes both in one call).
    pub input_grad_gflops: Option<f64>,
    pub weight_grad_gflops: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConvBenchResult {
    pub width: f64,
    pub batch: usize,
    pub rows: Vec<ConvPassRow>,
    /// Over the whole network (every shape times its count): FLOPs over seconds, per pass.
    pub network_forward_gflops: f64,
    pub network_backward_gflops: f64,
    /// `f32 products`, or `bf16 products (AVX512-BF16)` where they ran on the CPU's own.
    pub products: String,
}

pub fn conv_passes(cfg: &ConvBench) -> Result<ConvBenchResult> {
    use conv::{time_passes, ConvShape};
    if cfg.batch == 0 || cfg.repetitions == 0 {
        return Err(Error::Run { run: "bench".into(), what: "--batch and --repetitions: at least 1 expected".into() });
    }
    let resnet = infomax_model::ResNetConfig::resnet18(cfg.width);
    resnet.validate().map_err(|e| Error::Run { run: "bench".into(), what: e.to_string() })?;
    let imp = cfg.conv;
    let bf16 = cfg.precision == Precision::Bf16 && infomax_model::conv::bf16_products() && imp == ConvKernels::Im2col;
    let gflops = |flops: f64, seconds: f64| flops / seconds / 1e9;
    let (mut rows, mut flops, mut bwd_flops, mut fwd_s, mut bwd_s) = (Vec::new(), 0.0, 0.0, 0.0, 0.0);
    for (shape, count) in ConvShape::resnet18(resnet.stage_widths(), cfg.batch, 32) {
        let t = time_passes(shape, imp, cfg.repetitions, bf16)?;
        let f = shape.flops();
        flops += f * count as f64;
        bwd_flops += t.backward_passes as f64 * f * count as f64;
        fwd_s += t.forward * count as f64;
        bwd_s += t.backward * count as f64;
        rows.push(ConvPassRow {
            channels: shape.channels,
            out_channels: shape.out_channels,
            side: shape.side,
            kernel: shape.kernel,
            stride: shape.stride,
            shortcut: shape.shortcut,
            count,
            forward_gflops: gflops(f, t.forward),
            backward_gflops: gflops(t.backward_passes as f64 * f, t.backward),
            input_grad_gflops: t.input_grad.map(|s| gflops(f, s)),
            weight_grad_gflops: t.weight_grad.map(|s| gflops(f, s)),
        });
    }
    Ok(ConvBenchResult {
        width: cfg.width,
        batch: cfg.batch,
        rows,
        network_forward_gflops: gflops(flops, fwd_s),
        network_backward_gflops: gflops(bwd_flops, bwd_s),
        products: if bf16 { "bf16 products (AVX512-BF16)" } else { "f32 products" }.into(),
    })
}
