//! Barlow Twins (SPEC §1): a projector without biases, two views forwarded one by one, the
//! cross-correlation loss of `infomax_losses::barlow_twins`. The authors' separate learning rate
//! for biases and BatchNorm parameters is the optimiser's `one_d_lr_factor`.

use candle_core::Tensor;

use super::{Network, SslMethod, StepContext, StepOutput};
use crate::spec::RunSpec;
use crate::Result;

pub struct BarlowTwins {
    lambda: f64,
}

impl BarlowTwins {
    pub fn from_spec(spec: &RunSpec) -> Self {
        Self { lambda: spec.barlow_twins.as_ref().expect("validated: barlow-twins runs carry [barlow_twins]").lambda }
    }
}

impl SslMethod for BarlowTwins {
    fn step_loss(&self, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let t = infomax_losses::barlow_twins(&z[0], &z[1], self.lambda)?;
        Ok(StepOutput {
            loss: t.loss,
            terms: vec![("on_diagonal", t.on_diagonal), ("off_diagonal", t.off_diagonal)],
            embeddings: z,
        })
    }
}
