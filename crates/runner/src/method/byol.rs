//! BYOL as the W-MSE authors' baseline (Grill et al., NeurIPS 2020): online encoder → head →
//! predictor, a target encoder → head moved by EMA after every step with
//! τ = 1 − (1 − τ_base)(cos(π·progress) + 1)/2, the W-MSE code's Adam, and the symmetric
//! normalised-MSE loss against the target's (stop-gradient) projections.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Check, LossValue, MethodImpl, Network, StepContext, StepOutput};
use crate::config::{HeadConfig, OptimizerConfig, RunConfig};
use crate::Result;

pub struct Byol;

/// The run's `[byol]` table: the target's EMA rate at the start of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByolParams {
    pub tau_base: f64,
}

impl Default for ByolParams {
    /// The W-MSE code's 0.99.
    fn default() -> Self {
        Self { tau_base: 0.99 }
    }
}

/// The EMA rate at a point of training (`progress` in [0, 1]): τ_base at the start, 1 at the end.
pub fn byol_tau(tau_base: f64, progress: f64) -> f64 {
    1.0 - (1.0 - tau_base) * ((std::f64::consts::PI * progress).cos() + 1.0) / 2.0
}

/// `infomax loss` for BYOL and SimSiam: views are [predictions…, targets…]; one pair is the
/// one-directional loss, k pairs the symmetric one. The targets get no gradient.
pub(super) fn split_predictions_and_targets<'a>(
    method: &'static str,
    views: &'a [Tensor],
) -> Result<(&'a [Tensor], &'a [Tensor])> {
    if !views.len().is_multiple_of(2) {
        return Err(infomax_losses::Error::Shape {
            loss: method,
            what: format!("takes [predictions…, targets…]: an even number of views expected, got {}", views.len()),
        }
        .into());
    }
    Ok(views.split_at(views.len() / 2))
}

/// No `--set` keys.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl MethodImpl for Byol {
    const NAME: &'static str = "byol";
    const TITLE: &'static str = "BYOL";
    const PREDICTOR: bool = true;
    const TARGET: bool = true;
    type Params = ByolParams;
    type LossSettings = NoSettings;

    fn recipe(config: &mut RunConfig) {
        config.projector = HeadConfig::mlp(&[1024, 64]);
        config.predictor = Some(HeadConfig::mlp(&[1024, 64]));
        config.optimizer = OptimizerConfig::wmse_adam();
        config.train.batch_size = 512;
    }

    fn check(config: &RunConfig) -> Check {
        let tau = Self::params(config).tau_base;
        if !(0.0..=1.0).contains(&tau) {
            return Err(("byol.tau_base".into(), format!("an EMA rate in [0, 1] expected, got {tau}")));
        }
        Ok(())
    }

    fn step_loss(_config: &RunConfig, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let p = net.predict(&z)?;
        let targets = net.target_embed(views)?;
        let loss = infomax_losses::byol(&p, &targets)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }

    fn target_ema_rate(config: &RunConfig, progress: f64) -> Option<f64> {
        Some(byol_tau(Self::params(config).tau_base, progress))
    }

    fn after_step(config: &RunConfig, net: &Network, ctx: &StepContext) -> Result<()> {
        net.update_target(byol_tau(Self::params(config).tau_base, ctx.progress))
    }

    fn loss(views: &[Tensor], _: NoSettings) -> Result<LossValue> {
        let (p, z) = split_predictions_and_targets(Self::NAME, views)?;
        let loss = match p.len() {
            1 => infomax_losses::distance::normalised_mse(&p[0], &z[0].detach())?,
            _ => infomax_losses::byol(p, z)?,
        };
        Ok(LossValue { loss, terms: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_rises_on_a_cosine_from_base_to_one() {
        assert!((byol_tau(0.99, 0.0) - 0.99).abs() < 1e-12);
        assert!((byol_tau(0.99, 0.5) - 0.995).abs() < 1e-12);
        assert!((byol_tau(0.99, 1.0) - 1.0).abs() < 1e-12);
    }
}
