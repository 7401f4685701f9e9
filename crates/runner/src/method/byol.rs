//! BYOL as the W-MSE authors' baseline (SPEC §1): online encoder → head → predictor, a target
//! encoder → head moved by EMA after every step with τ = 1 − (1 − τ_base)(cos(π·progress) + 1)/2,
//! and the symmetric normalised-MSE loss against the target's (stop-gradient) projections.

use candle_core::Tensor;

use super::{Network, SslMethod, StepContext, StepOutput};
use crate::spec::RunSpec;
use crate::Result;

pub struct Byol {
    tau_base: f64,
}

impl Byol {
    pub fn from_spec(spec: &RunSpec) -> Self {
        Self { tau_base: spec.byol.as_ref().expect("validated: byol runs carry [byol]").tau_base }
    }

    pub fn tau(&self, progress: f64) -> f64 {
        byol_tau(self.tau_base, progress)
    }
}

/// The EMA rate at a point of training (`progress` in [0, 1]): τ_base at the start, 1 at the end.
pub fn byol_tau(tau_base: f64, progress: f64) -> f64 {
    1.0 - (1.0 - tau_base) * ((std::f64::consts::PI * progress).cos() + 1.0) / 2.0
}

impl SslMethod for Byol {
    fn step_loss(&self, net: &Network, views: &[Tensor], _ctx: &StepContext) -> Result<StepOutput> {
        let z = net.embed_views(views)?;
        let p = net.predict(&z)?;
        let targets = net.target_embed(views)?;
        let loss = infomax_losses::byol(&p, &targets)?;
        Ok(StepOutput { loss, terms: Vec::new(), embeddings: z })
    }

    fn after_step(&self, net: &Network, ctx: &StepContext) -> Result<()> {
        net.update_target(self.tau(ctx.progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_rises_on_a_cosine_from_base_to_one() {
        let b = Byol { tau_base: 0.99 };
        assert!((b.tau(0.0) - 0.99).abs() < 1e-12);
        assert!((b.tau(0.5) - 0.995).abs() < 1e-12);
        assert!((b.tau(1.0) - 1.0).abs() < 1e-12);
    }
}
