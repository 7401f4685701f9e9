//! `infomax bench train-step`: the full training step of a method (every view forward, loss,
//! backward, optimiser update, BYOL's EMA) on synthetic images, timed after warm-up.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::method::{Network, Objective, StepContext};
use crate::spec::{ConvKernels, Dataset, Method, RunSpec};
use crate::train::optimizer_for;
use crate::{Error, Result};

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
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainStepResult {
    /// Images (not views) per second.
    pub images_per_second: f64,
    pub seconds_per_step: f64,
    pub peak_rss_bytes: u64,
    pub width: f64,
    pub batch: usize,
}

pub fn train_step(cfg: &TrainStepBench, device: &Device) -> Result<TrainStepResult> {
    let mut spec = RunSpec::defaults(cfg.method, Dataset::Cifar10);
    spec.encoder.width = cfg.width;
    if let Some(widths) = &cfg.projector {
        spec.projector.widths = widths.clone();
        if let Some(p) = &mut spec.predictor {
            *p.widths.last_mut().expect("validated head") = *widths.last().unwrap_or(&1);
        }
    }
    if let Some(w) = &mut spec.wmse {
        // The authors' 128 where it divides the batch, else the whole batch (their default).
        if cfg.batch % w.w_size != 0 {
            w.w_size = cfg.batch;
        }
    }
    spec.encoder.conv = cfg.conv;
    spec.train.batch_size = cfg.batch;
    spec.train.views = cfg.views;
    spec.train.epochs = 1;
    spec.optimizer.warmup_epochs = 0.0;
    crate::validate::validate(&spec)
        .map_err(|(field, what)| Error::Run { run: "bench".into(), what: format!("{field}: {what}") })?;
    if cfg.steps == 0 {
        return Err(Error::Run { run: "bench".into(), what: "--steps: at least 1 expected".into() });
    }
    let net = Network::new(&spec, device)?;
    let objective = Objective::for_spec(&spec);
    let mut opt = optimizer_for(&spec, &net);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let views = (0..cfg.views)
        .map(|_| {
            let v: Vec<f32> = (0..cfg.batch * 3 * 32 * 32).map(|_| StandardNormal.sample(&mut rng)).collect();
            Tensor::from_vec(v, (cfg.batch, 3, 32, 32), device)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let lr = spec.peak_lr();
    let ctx = StepContext { seed: 0, epoch: 1, step: 0, progress: 0.0 };
    let mut one_step = || -> Result<()> {
        let out = objective.step_loss(&net, &views, &ctx)?;
        let grads = out.loss.backward()?;
        opt.step(&grads, lr)?;
        objective.after_step(&net, &ctx)?;
        // Wait for the device so the timing covers the work.
        out.loss.to_scalar::<f32>()?;
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
    Ok(TrainStepResult {
        images_per_second: cfg.batch as f64 / seconds_per_step,
        seconds_per_step,
        peak_rss_bytes: crate::machine::peak_rss_bytes().unwrap_or(0),
        width: cfg.width,
        batch: cfg.batch,
    })
}

/// `infomax bench augment`: how many augmented views per second the data pipeline makes.
#[derive(Debug, Clone)]
pub struct AugmentBench {
    pub dataset: infomax_data::Dataset,
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
    /// Stored and produced image sides.
    pub stored_side: usize,
    pub view_side: usize,
    pub views_per_second: f64,
}

/// Augment synthetic images of the dataset's stored size (pixel values do not change the cost)
/// with the preset at the dataset's crop size, batch after batch, as the training loop does.
pub fn augment_throughput(cfg: &AugmentBench) -> Result<AugmentResult> {
    use rand::Rng;
    if cfg.batch == 0 || cfg.views == 0 || cfg.batches == 0 {
        return Err(Error::Run {
            run: "bench".into(),
            what: "--batch, --views and --batches: at least 1 expected".into(),
        });
    }
    let side = cfg.dataset.side();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let pixels: Vec<u8> = (0..cfg.batch * 3 * side * side).map(|_| rng.random()).collect();
    let set = infomax_data::ImageSet::new(
        "synthetic",
        infomax_data::Split::Train,
        (side, side),
        pixels,
        Vec::new(),
        Vec::new(),
    );
    let augment = RunSpec::augment_defaults(cfg.preset, cfg.dataset);
    let idx: Vec<usize> = (0..cfg.batch).collect();
    // One untimed batch warms the thread pool and the allocator.
    infomax_data::views::augmented_views(&set, &idx, cfg.views, &augment, 0, 0);
    let started = Instant::now();
    for epoch in 1..=cfg.batches {
        let v = infomax_data::views::augmented_views(&set, &idx, cfg.views, &augment, 0, epoch as u64);
        std::hint::black_box(v);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(AugmentResult {
        dataset: cfg.dataset.name().into(),
        preset: cfg.preset.name().into(),
        stored_side: side,
        view_side: augment.size(),
        views_per_second: (cfg.batches * cfg.batch * cfg.views) as f64 / seconds,
    })
}
