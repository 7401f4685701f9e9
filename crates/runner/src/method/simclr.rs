//! SimCLR as the W-MSE authors' baseline (Chen et al., ICML 2020): the W-MSE code's 1024 → emb
//! head over all views at once followed by a BatchNorm (`bn_last`), its Adam, and NT-Xent averaged
//! over view pairs (`infomax_losses::simclr`).

use candle_core::Tensor;
use infomax_losses::simclr::DEFAULT_TAU;
use serde::{Deserialize, Serialize};

use super::{Check, LossValue, MethodImpl, Network, StepContext, StepOutput};
use crate::config::{HeadConfig, OptimizerConfig, RunConfig};
use crate::Result;

pub struct Simclr;

/// The run's `[simclr]` table: the NT-Xent temperature τ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimclrParams {
    pub tau: f64,
}

impl Default for SimclrParams {
    fn default() -> Self {
        Self { tau: DEFAULT_TAU }
    }
}

impl MethodImpl for Simclr {
    const NAME: &'static str = "simclr";
    const TITLE: &'static str = "SimCLR";
    type Params = SimclrParams;
    type LossSettings = SimclrParams;

    fn recipe(config: &mut RunConfig) {
        config.projector = HeadConfig { output_bn: true, ..HeadConfig::wmse_head() };
        config.optimizer = OptimizerConfig::wmse_adam();
        config.train.batch_size = 512;
    }

    fn check(config: &RunConfig) -> Check {
        let tau = Self::params(config).tau;
        if !(tau > 0.0 && tau.is_finite()) {
            return Err(("simclr.tau".into(), format!("a positive temperature expected, got {tau}")));
        }
        Ok(())
    }

    fn step_loss(config: &RunConfig, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let loss = infomax_losses::simclr(&z, Self::params(config).tau)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }

    fn loss(views: &[Tensor], p: SimclrParams) -> Result<LossValue> {
        Ok(LossValue { loss: infomax_losses::simclr(views, p.tau)?, terms: Vec::new() })
    }
}
