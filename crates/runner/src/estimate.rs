//! How long runs should take: the floating-point work of a run, the training GFLOP/s this
//! machine reached in the epochs the store recorded, and their quotient.

use crate::config::RunConfig;
use crate::store::Store;
use crate::Result;

/// Floating-point work of one training image: every view forward and backward (≈ 3 forwards)
/// through the encoder and heads, plus BYOL's target forward.
pub fn train_flops_per_image(config: &RunConfig) -> f64 {
    let enc = config.encoder.resnet();
    let mut widths = vec![enc.output_dim()];
    widths.extend(&config.projector.widths);
    let mut head_macs: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    if let Some(p) = &config.predictor {
        let mut pw = vec![config.embedding_dim()];
        pw.extend(&p.widths);
        head_macs += pw.windows(2).map(|w| w[0] * w[1]).sum::<usize>();
    }
    let side = config.augment.size();
    // With a second branch, half the views go through its encoder.
    let encoder_macs = match &config.branch_b {
        Some(b) => (enc.forward_macs(side) + b.encoder.resnet().forward_macs(side)) as f64 / 2.0,
        None => enc.forward_macs(side) as f64,
    };
    let forward = 2.0 * (encoder_macs + head_macs as f64);
    // BYOL's target forwards every view once more, without a backward.
    let target = if config.method.has_target() { 1.0 } else { 0.0 };
    (3.0 + target) * forward * config.train.views as f64
}

/// Floating-point work of one run: (training, evaluations). Training counts every image of
/// every epoch; each evaluation one encoder forward of each bank and test image.
pub fn run_flops(config: &RunConfig, data_root: &std::path::Path) -> (f64, f64) {
    let d = &config.dataset;
    let sizes = d.split_sizes(data_root);
    let count = |want: usize, splits: &[infomax_data::Split]| {
        let n: usize = sizes.iter().filter(|(s, _)| splits.contains(s)).map(|(_, n)| n).sum();
        if want > 0 {
            want.min(n)
        } else {
            n
        }
    };
    let images = count(config.train.train_images, d.pretrain_splits());
    let seen = images / config.train.batch_size * config.train.batch_size * config.train.epochs;
    let evals = 2 + config.train.epochs.checked_div(config.eval.every_epochs).unwrap_or(0);
    let eval_images = count(config.eval.bank_images, &[infomax_data::Split::Train])
        + count(config.eval.test_images, &[infomax_data::Split::Test]);
    let forward = 2.0 * config.encoder.resnet().forward_macs(config.augment.size()) as f64;
    (train_flops_per_image(config) * seen as f64, forward * (eval_images * evals) as f64)
}

/// Training GFLOP/s this machine reached in recorded epochs (median of the latest 20 whose
/// machine description is `machine`): the rate time estimates divide by.
pub fn measured_gflops(store: &Store, machine: &str) -> Result<Option<f64>> {
    let mut rates: Vec<f64> = store
        .recent_throughput(machine, 20)?
        .into_iter()
        .map(|(config, ips)| train_flops_per_image(&config) * ips / 1e9)
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    if rates.is_empty() {
        return Ok(None);
    }
    rates.sort_by(f64::total_cmp);
    Ok(Some(rates[rates.len() / 2]))
}

/// Seconds a run should take at `gflops` (training at the measured rate; forward-only
/// evaluation at the same rate).
pub fn estimate_seconds(config: &RunConfig, data_root: &std::path::Path, gflops: f64) -> f64 {
    let (train, eval) = run_flops(config, data_root);
    (train + eval) / (gflops * 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dataset, Method};

    #[test]
    fn flops_follow_views_images_epochs_and_byols_target() {
        let mut s = RunConfig::defaults(Method::Simclr, Dataset::Cifar10);
        s.train.train_images = 10_240;
        s.train.batch_size = 128;
        s.train.epochs = 2;
        let per_image = train_flops_per_image(&s);
        // ResNet-18 at 32 px: 0.556 GMACs forward, ×2 FLOPs, ×3 with the backward, ×2 views.
        assert!((6.6e9..6.8e9).contains(&per_image), "{per_image}");
        let (train, eval) = run_flops(&s, std::path::Path::new("/nonexistent"));
        assert_eq!(train, per_image * 20_480.0);
        assert!(eval > 0.0);
        let mut byol = s.clone();
        byol.method = Method::Byol;
        assert!((train_flops_per_image(&byol) / per_image - 4.0 / 3.0).abs() < 1e-12);
        let mut four = s.clone();
        four.train.views = 4;
        assert_eq!(train_flops_per_image(&four), 2.0 * per_image);
        assert!(
            (estimate_seconds(&s, std::path::Path::new("/nonexistent"), 10.0) - (train + eval) / 1e10).abs() < 1e-6
        );
    }
}
