//! The linear probe of the W-MSE protocol (docs/methods.md#linear-probe): a
//! `Linear(features, classes)` trained on frozen, precomputed features with cross-entropy, Adam
//! (lr 1e-2 decaying exponentially to 1e-6 over the epochs, L2 weight decay 5e-6), shuffled
//! mini-batches of 1,000; top-1 and top-5 on the test features. Initialised as `nn.Linear`
//! (uniform ±1/√features for weight and bias).

use candle_core::{DType, Device, Tensor, Var};
use infomax_data::seed::{rng_for, Purpose};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::eval::{Accuracy, Features};
use crate::optim::{Adam, Optimizer, Param};
use crate::Result;

pub const LR_START: f64 = 1e-2;
pub const LR_END: f64 = 1e-6;
pub const WEIGHT_DECAY: f64 = 5e-6;

/// How a probe trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Seeds the initialisation and the batch order (with `stream`, e.g. the evaluated epoch).
    pub seed: u64,
    pub stream: u64,
}

/// Train a probe on `train` and report its accuracy on `test`.
pub fn linear_probe(train: &Features, test: &Features, classes: usize, cfg: &ProbeConfig) -> Result<Accuracy> {
    let dev = Device::Cpu;
    let d = train.dim;
    let n = train.rows();
    let mut init = rng_for(cfg.seed, Purpose::Probe, 0, cfg.stream, 0);
    let bound = 1.0 / (d as f32).sqrt();
    let mut uniform = |len: usize| -> Vec<f32> { (0..len).map(|_| init.random_range(-bound..bound)).collect() };
    let w = Var::from_vec(uniform(classes * d), (classes, d), &dev)?;
    let b = Var::from_vec(uniform(classes), classes, &dev)?;
    let mut opt = Adam::new(
        vec![Param { name: "weight".into(), var: w.clone() }, Param { name: "bias".into(), var: b.clone() }],
        (0.9, 0.999),
        1e-8,
        WEIGHT_DECAY,
    );
    let x = Tensor::from_slice(&train.data, (n, d), &dev)?;
    let y = Tensor::from_vec(train.labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), n, &dev)?;
    let gamma = (LR_END / LR_START).powf(1.0 / cfg.epochs.max(1) as f64);
    let mut lr = LR_START;
    for epoch in 0..cfg.epochs {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rng_for(cfg.seed, Purpose::Probe, epoch as u64 + 1, cfg.stream, 0));
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let logits = x.index_select(&idx, 0)?.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y.index_select(&idx, 0)?)?;
            opt.step(&loss.backward()?, lr)?;
        }
        lr *= gamma;
    }
    let xt = Tensor::from_slice(&test.data, (test.rows(), d), &dev)?;
    let logits = xt.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?.to_dtype(DType::F32)?;
    let scores: Vec<Vec<f32>> = logits.to_vec2()?;
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &label) in scores.iter().zip(&test.labels) {
        let mut ranked: Vec<usize> = (0..classes).collect();
        ranked.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
        top1 += (ranked[0] == label as usize) as usize;
        top5 += ranked.iter().take(5).any(|&c| c == label as usize) as usize;
    }
    let m = test.rows().max(1) as f64;
    Ok(Accuracy { top1: 100.0 * top1 as f64 / m, top5: 100.0 * top5 as f64 / m })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    /// Gaussian clusters around random class centres: linearly separable up to their overlap.
    fn clusters(per_class: usize, classes: usize, dim: usize, spread: f32, seed: u64) -> Features {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let centres: Vec<Vec<f32>> =
            (0..classes).map(|_| (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect()).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for i in 0..per_class * classes {
            let c = i % classes;
            data.extend(
                centres[c]
                    .iter()
                    .map(|v| v + spread * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng)),
            );
            labels.push(c as infomax_data::Label);
        }
        Features { dim, data, labels }
    }

    #[test]
    fn separable_features_are_classified_and_noise_is_at_chance() {
        let cfg = ProbeConfig { epochs: 30, batch_size: 100, seed: 0, stream: 0 };
        let (train, test) = (clusters(100, 10, 16, 0.3, 1), clusters(30, 10, 16, 0.3, 2));
        let acc = linear_probe(&train, &test, 10, &cfg).unwrap();
        assert!(acc.top1 > 97.0 && acc.top5 == 100.0, "{acc:?}");
        // Labels unrelated to the features: test accuracy near 10 %.
        let mut noise = clusters(100, 10, 16, 0.3, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        noise.labels.shuffle(&mut rng);
        let acc = linear_probe(&noise, &test, 10, &cfg).unwrap();
        assert!(acc.top1 < 25.0, "{acc:?}");
        // Same seed, same result.
        assert_eq!(linear_probe(&train, &test, 10, &cfg).unwrap(), linear_probe(&train, &test, 10, &cfg).unwrap());
    }

    #[test]
    fn the_learning_rate_decays_from_1e_2_to_1e_6() {
        let epochs = 500;
        let gamma = (LR_END / LR_START).powf(1.0 / epochs as f64);
        assert!((LR_START * gamma.powi(epochs) - LR_END).abs() < 1e-12);
    }
}
