//! VICReg (Bardes, Ponce & LeCun, ICLR 2022): the FAIR projector (`Linear → BN → ReLU` per hidden
//! layer, a bias-free last Linear), LARS, two views forwarded one by one, and the loss of
//! `infomax_losses::vicreg`, whose `VicregWeights` are the run's `[vicreg]` table.

use candle_core::Tensor;
use infomax_losses::{VicregTerms, VicregWeights};

use super::{Check, LossValue, MethodImpl, Network, StepContext, StepOutput};
use crate::config::{HeadConfig, OptimizerConfig, RunConfig};
use crate::Result;

pub struct Vicreg;

/// The loss's terms under the names recorded per step and printed by `infomax loss`.
fn named(t: VicregTerms) -> LossValue {
    LossValue {
        loss: t.loss,
        terms: vec![("invariance", t.invariance), ("variance", t.variance), ("covariance", t.covariance)],
    }
}

impl MethodImpl for Vicreg {
    const NAME: &'static str = "vicreg";
    const TITLE: &'static str = "VICReg";
    const TWO_VIEWS: bool = true;
    const TERMS: &'static [&'static str] = &["invariance", "variance", "covariance"];
    type Params = VicregWeights;
    type LossSettings = VicregWeights;

    fn recipe(config: &mut RunConfig) {
        config.projector = HeadConfig::fair_projector(true);
        config.optimizer = OptimizerConfig::lars();
    }

    fn check(config: &RunConfig) -> Check {
        let v = Self::params(config);
        for (name, c) in [("sim_coeff", v.sim_coeff), ("std_coeff", v.std_coeff), ("cov_coeff", v.cov_coeff)] {
            if !(c >= 0.0 && c.is_finite()) {
                return Err((format!("vicreg.{name}"), format!("a weight ≥ 0 expected, got {c}")));
            }
        }
        if v.eps < 0.0 || v.gamma <= 0.0 {
            return Err(("vicreg".into(), format!("eps ≥ 0 and gamma > 0 expected, got eps {} gamma {}", v.eps, v.gamma)));
        }
        Ok(())
    }

    fn step_loss(config: &RunConfig, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let LossValue { loss, terms } = named(infomax_losses::vicreg(&z[0], &z[1], Self::params(config))?);
        Ok(StepOutput { loss, terms, embeddings: z })
    }

    fn loss(views: &[Tensor], weights: VicregWeights) -> Result<LossValue> {
        Ok(named(infomax_losses::vicreg(&views[0], &views[1], &weights)?))
    }
}
