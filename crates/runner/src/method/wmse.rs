//! W-MSE (Ermolov et al., ICML 2021): the W-MSE code's 1024 → emb head over all views at once
//! (the authors' `head(cat(h))`), its Adam, then whitening of random sub-batches and the
//! normalised MSE of `infomax_losses::wmse`, whose `WmseConfig` is the run's `[wmse]` table. The
//! sub-batch permutations are drawn from the run's seed, epoch and step, so a run repeats exactly.

use candle_core::Tensor;
use infomax_data::seed::{rng_for, Purpose};
use infomax_losses::WmseConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{Check, LossValue, MethodImpl, Network, StepContext, StepOutput};
use crate::config::{HeadConfig, OptimizerConfig, RunConfig};
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

pub struct Wmse;

/// `infomax loss --set` for W-MSE: the whitening parameters (`w_size` 0 = the whole batch), the
/// seed of the sub-batch permutations, and `permute` 0 for consecutive rows (the first `w_size`
/// rows are the first sub-batch), so that another framework can reproduce the grouping.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WmseLossSettings {
    pub w_size: usize,
    pub w_iter: usize,
    pub eps: f64,
    pub seed: u64,
    /// 1: random sub-batches as in training, drawn from `seed`; 0: consecutive rows.
    pub permute: u8,
}

impl Default for WmseLossSettings {
    fn default() -> Self {
        let c = WmseConfig::default();
        Self { w_size: 0, w_iter: c.w_iter, eps: c.eps, seed: 0, permute: 1 }
    }
}

impl MethodImpl for Wmse {
    const NAME: &'static str = "w-mse";
    const TITLE: &'static str = "W-MSE";
    type Params = WmseConfig;
    const LOSS_NOTE: &'static str = "w_size 0 is the whole batch; permute 0 takes consecutive rows as sub-batches";
    type LossSettings = WmseLossSettings;

    fn recipe(config: &mut RunConfig) {
        config.projector = HeadConfig::wmse_head();
        config.optimizer = OptimizerConfig::wmse_adam();
        config.train.batch_size = 512;
    }

    /// The loss's own rules for its sub-batches against the run's batch and embedding sizes.
    fn check(config: &RunConfig) -> Check {
        infomax_losses::wmse::check_config(Self::params(config), config.train.batch_size, config.embedding_dim(), "train.batch_size").map_err(
            |e| {
                let field = format!("wmse.{}", e.parameter().unwrap_or("w_size"));
                match e {
                    infomax_losses::Error::Parameter { what, .. } => (field, what),
                    other => (field, other.to_string()),
                }
            },
        )
    }

    fn step_loss(config: &RunConfig, net: &Network, views: &[Tensor], ctx: &StepContext) -> Result<StepOutput> {
        let cfg = Self::params(config);
        let z = net.embed_views(views)?;
        let n = z[0].dim(0)?;
        let mut rng = rng_for(ctx.seed, Purpose::Whiten, ctx.epoch, ctx.step, 0);
        let permutations = sub_batch_permutations(n, cfg.w_iter, Some(&mut rng));
        let loss = infomax_losses::wmse(&z, cfg, &permutations)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }

    fn loss(views: &[Tensor], s: WmseLossSettings) -> Result<LossValue> {
        let n = views[0].dim(0)?;
        let cfg = WmseConfig { w_size: if s.w_size == 0 { n } else { s.w_size }, w_iter: s.w_iter, eps: s.eps };
        let permute = match s.permute {
            0 => false,
            1 => true,
            _ => {
                return Err(crate::Error::Override { arg: format!("permute={}", s.permute), what: "0 or 1 expected".into() })
            }
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s.seed);
        let permutations = sub_batch_permutations(n, cfg.w_iter, permute.then_some(&mut rng));
        Ok(LossValue { loss: infomax_losses::wmse(views, &cfg, &permutations)?, terms: Vec::new() })
    }
}
