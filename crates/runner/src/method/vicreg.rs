//! VICReg (SPEC §1): projector `Linear → BN → ReLU` per hidden layer and a bias-free last
//! Linear; two views forwarded one by one; the loss of `infomax_losses::vicreg`.

use candle_core::Tensor;
use infomax_losses::VicregWeights;

use super::{Network, SslMethod, StepContext, StepOutput};
use crate::spec::RunSpec;
use crate::Result;

pub struct Vicreg {
    weights: VicregWeights,
}

impl Vicreg {
    pub fn from_spec(spec: &RunSpec) -> Self {
        let v = spec.vicreg.as_ref().expect("validated: vicreg runs carry [vicreg]");
        Self {
            weights: VicregWeights {
                sim_coeff: v.sim_coeff,
                std_coeff: v.std_coeff,
                cov_coeff: v.cov_coeff,
                gamma: v.gamma,
                eps: v.eps,
            },
        }
    }
}

impl SslMethod for Vicreg {
    fn step_loss(&self, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let t = infomax_losses::vicreg(&z[0], &z[1], &self.weights)?;
        Ok(StepOutput {
            loss: t.loss,
            terms: vec![("invariance", t.invariance), ("variance", t.variance), ("covariance", t.covariance)],
            embeddings: z,
        })
    }
}
