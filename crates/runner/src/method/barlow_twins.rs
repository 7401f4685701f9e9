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

/// The run's `[barlow_twins]` table: the redundancy-reduction weight λ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarlowTwinsParams {
    pub lambda: f64,
}

impl Default for BarlowTwinsParams {
    fn default() -> Self {
        Self { lambda: DEFAULT_LAMBDA }
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
        let l = Self::params(config).lambda;
        if !(l >= 0.0 && l.is_finite()) {
            return Err(("barlow_twins.lambda".into(), format!("a non-negative weight expected, got {l}")));
        }
        Ok(())
    }

    fn step_loss(config: &RunConfig, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let LossValue { loss, terms } = named(infomax_losses::barlow_twins(&z[0], &z[1], Self::params(config).lambda)?);
        Ok(StepOutput { loss, terms, embeddings: z })
    }

    fn loss(views: &[Tensor], p: BarlowTwinsParams) -> Result<LossValue> {
        Ok(named(infomax_losses::barlow_twins(&views[0], &views[1], p.lambda)?))
    }
}
