//! SimSiam (Chen & He, CVPR 2021): projector ending in BatchNorm, a bottleneck predictor, and
//! the symmetric negative cosine against the stop-gradient projections of the other view. No
//! target network: the stop-gradient alone prevents collapse.

use candle_core::Tensor;

use super::{Network, SslMethod, StepContext, StepOutput};
use crate::Result;

pub struct Simsiam;

impl SslMethod for Simsiam {
    fn step_loss(&self, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let p = net.predict(&z)?;
        let loss = infomax_losses::simsiam(&p, &z)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }
}
