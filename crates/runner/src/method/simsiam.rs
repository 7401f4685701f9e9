//! SimSiam (Chen & He, CVPR 2021): a projector ending in BatchNorm, a bottleneck predictor, SGD,
//! and the symmetric negative cosine against the stop-gradient projections of the other view. No
//! target network and no parameters: the stop-gradient alone prevents collapse.

use candle_core::Tensor;

use super::byol::{split_predictions_and_targets, NoSettings};
use super::{LossValue, MethodImpl, Network, StepContext, StepOutput};
use crate::config::{HeadConfig, OptimizerKind, OptimizerConfig, RunConfig};
use crate::Result;

pub struct Simsiam;

impl MethodImpl for Simsiam {
    const NAME: &'static str = "simsiam";
    const TITLE: &'static str = "SimSiam";
    const PREDICTOR: bool = true;
    type Params = ();
    type LossSettings = NoSettings;

    /// The CIFAR recipe: a 2-layer 2048 projector ending in an affine-free BN, a 512-wide
    /// predictor, SGD lr 0.03 × batch/256, momentum 0.9, weight decay 5e-4, cosine, no warm-up.
    fn recipe(config: &mut RunConfig) {
        config.projector = HeadConfig {
            widths: vec![2048, 2048],
            hidden_bias: false,
            last_bias: false,
            output_bn: true,
            output_bn_affine: false,
            joint_views: false,
        };
        config.predictor = Some(HeadConfig { hidden_bias: false, ..HeadConfig::mlp(&[512, 2048]) });
        config.optimizer = OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.03,
            weight_decay: 5e-4,
            warmup_epochs: 0.0,
            end_lr_factor: 0.0,
            ..OptimizerConfig::lars()
        };
    }

    fn step_loss(_config: &RunConfig, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let p = net.predict(&z)?;
        let loss = infomax_losses::simsiam(&p, &z)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }

    fn loss(views: &[Tensor], _: NoSettings) -> Result<LossValue> {
        let (p, z) = split_predictions_and_targets(Self::NAME, views)?;
        let loss = match p.len() {
            1 => infomax_losses::distance::cosine_rows(&p[0], &z[0].detach())?.mean_all()?.neg()?,
            _ => infomax_losses::simsiam(p, z)?,
        };
        Ok(LossValue { loss, terms: Vec::new() })
    }
}
