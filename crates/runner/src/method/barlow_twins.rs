//! Barlow Twins (Zbontar et al., ICML 2021): the FAIR projector without biases, LARS with the
//! authors' separate learning rate for biases and BatchNorm parameters (the optimiser's
//! `bias_and_norm_lr_factor`), two views forwarded one by one, and the cross-correlation loss of
//! `infomax_losses::barlow_twins`.

use candle_core::Tensor;
use infomax_losses::barlow_twins::DEFAULT_LAMBDA;
use infomax_losses::BarlowTwinsTerms;
use serde::{Deserialize, Serialize};

use super::{Check, LossValue, MethodImpl, Network, StepContext, StepOutput};
use crate::config::{HeadConfig, OptimizerConfig, RunConfig};
use crate::Result;

pub struct BarlowTwins;

/// The run's `[barlow_twins]` table: the redundancy-reduction weight λ, and a factor on the whole
/// loss (solo-learn's `scale_loss`, 0.1 in its CIFAR recipe; the loss terms are recorded
/// unscaled). The factor is left out of the stored configuration at 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarlowTwinsParams {
    pub lambda: f64,
    #[serde(default = "unscaled", skip_serializing_if = "is_unscaled")]
    pub scale_loss: f64,
}

fn unscaled() -> f64 {
    1.0
}

fn is_unscaled(f: &f64) -> bool {
    crate::config::left_out(*f == 1.0)
}

impl Default for BarlowTwinsParams {
    fn default() -> Self {
        Self { lambda: DEFAULT_LAMBDA, scale_loss: unscaled() }
    }
}

fn named(t: BarlowTwinsTerms) -> LossValue {
    LossValue { loss: t.loss, terms: vec![("on_diagonal", t.on_diagonal), ("off_diagonal", t.off_diagonal)] }
}

impl MethodImpl for BarlowTwins {
    const NAME: &'static str = "barlow-twins";
    const TITLE: &'static str = "Barlow Twins";
    const TWO_VIEWS: bool = true;
    const TERMS: &'static [&'static str] = &["on_diagonal", "off_diagonal"];
    type Params = BarlowTwinsParams;
    type LossSettings = BarlowTwinsParams;

    /// The authors' LARS: lr 0.2 for the weights, 0.0048 for biases and BatchNorm parameters.
    fn recipe(config: &mut RunConfig) {
        config.projector = HeadConfig::fair_projector(false);
        config.optimizer = OptimizerConfig { lr: 0.2, bias_and_norm_lr_factor: 0.0048 / 0.2, ..OptimizerConfig::lars() };
    }

    fn check(config: &RunConfig) -> Check {
        let p = Self::params(config);
        if !(p.lambda >= 0.0 && p.lambda.is_finite()) {
            return Err(("barlow_twins.lambda".into(), format!("a non-negative weight expected, got {}", p.lambda)));
        }
        if !(p.scale_loss > 0.0 && p.scale_loss.is_finite()) {
            return Err(("barlow_twins.scale_loss".into(), format!("a positive factor expected, got {}", p.scale_loss)));
        }
        Ok(())
    }

    fn step_loss(config: &RunConfig, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let LossValue { loss, terms } = Self::loss(&z, Self::params(config).clone())?;
        Ok(StepOutput { loss, terms, embeddings: z })
    }

    fn loss(views: &[Tensor], p: BarlowTwinsParams) -> Result<LossValue> {
        let LossValue { loss, terms } = named(infomax_losses::barlow_twins(&views[0], &views[1], p.lambda)?);
        let loss = if p.scale_loss == 1.0 { loss } else { (loss * p.scale_loss)? };
        Ok(LossValue { loss, terms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `scale_loss` multiplies the loss the optimiser sees and leaves the recorded terms as they
    /// are (solo-learn 9187ea3 solo/losses/barlow.py: `scale_loss * (on_diag + lamb * off_diag)`).
    #[test]
    fn scale_loss_scales_the_loss_not_its_terms() {
        let za = Tensor::randn(0f32, 1.0, (16, 8), &Device::Cpu).unwrap();
        let zb = Tensor::randn(0f32, 1.0, (16, 8), &Device::Cpu).unwrap();
        let views = [za, zb];
        let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
        let plain = BarlowTwins::loss(&views, BarlowTwinsParams::default()).unwrap();
        let scaled = BarlowTwins::loss(&views, BarlowTwinsParams { scale_loss: 0.1, ..Default::default() }).unwrap();
        assert!((scalar(&scaled.loss) - 0.1 * scalar(&plain.loss)).abs() <= 1e-6 * scalar(&plain.loss).abs());
        for ((name, a), (_, b)) in plain.terms.iter().zip(&scaled.terms) {
            assert_eq!(scalar(a), scalar(b), "{name}");
        }
        // The default is left out of the stored table, so existing runs keep their identity.
        assert_eq!(serde_json::to_string(&BarlowTwinsParams::default()).unwrap(), r#"{"lambda":0.0051}"#);
    }
}
