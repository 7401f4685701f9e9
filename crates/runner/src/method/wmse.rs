//! W-MSE (SPEC §1): the 1024 → emb head over all views at once (the authors' `head(cat(h))`),
//! then whitening of random sub-batches and the normalised MSE of `infomax_losses::wmse`. The
//! sub-batch permutations are drawn from the run's seed, epoch and step, so a run repeats exactly.

use candle_core::Tensor;
use infomax_data::seed::{rng_for, Purpose};
use infomax_losses::WmseConfig;
use rand::seq::SliceRandom;

use super::{Network, SslMethod, StepContext, StepOutput};
use crate::spec::RunSpec;
use crate::Result;

/// `w_iter` orderings of `0..n` whose consecutive `w_size` chunks are the whitened sub-batches:
/// shuffled by `rng`, or in row order without one.
pub fn sub_batch_permutations(n: usize, w_iter: usize, mut rng: Option<&mut impl rand::Rng>) -> Vec<Vec<usize>> {
    (0..w_iter)
        .map(|_| {
            let mut p: Vec<usize> = (0..n).collect();
            if let Some(rng) = rng.as_deref_mut() {
                p.shuffle(rng);
            }
            p
        })
        .collect()
}

pub struct Wmse {
    cfg: WmseConfig,
}

impl Wmse {
    pub fn from_spec(spec: &RunSpec) -> Self {
        let w = spec.wmse.as_ref().expect("validated: w-mse runs carry [wmse]");
        Self { cfg: WmseConfig { w_size: w.w_size, w_iter: w.w_iter, eps: w.eps } }
    }
}

impl SslMethod for Wmse {
    fn step_loss(&self, net: &Network, views: &[Tensor], ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let n = z[0].dim(0)?;
        let mut rng = rng_for(ctx.seed, Purpose::Whiten, ctx.epoch, ctx.step, 0);
        let permutations = sub_batch_permutations(n, self.cfg.w_iter, Some(&mut rng));
        let loss = infomax_losses::wmse(&z, &self.cfg, &permutations)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }
}
