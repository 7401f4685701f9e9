//! SimCLR as the W-MSE authors' baseline (SPEC §1): the 1024 → emb head over all views at once
//! followed by a BatchNorm (`bn_last`), NT-Xent averaged over view pairs.

use candle_core::Tensor;

use super::{Network, SslMethod, StepContext, StepOutput};
use crate::spec::RunSpec;
use crate::Result;

pub struct Simclr {
    tau: f64,
}

impl Simclr {
    pub fn from_spec(spec: &RunSpec) -> Self {
        Self { tau: spec.simclr.as_ref().expect("validated: simclr runs carry [simclr]").tau }
    }
}

impl SslMethod for Simclr {
    fn step_loss(&self, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let loss = infomax_losses::simclr(&z, self.tau)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }
}
