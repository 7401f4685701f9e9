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
