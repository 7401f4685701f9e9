//! The networks a method trains: the online branch (encoder and projector), an optional
//! branch B for the odd-numbered views, the predictor, and BYOL's EMA target.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use infomax_model::{Mlp, MlpConfig, ResNet, SeededVarMap};

use crate::config::{EncoderConfig, HeadConfig, RunConfig};
use crate::optim::{is_running_statistic, Param};
use crate::{Error, Result};

/// An encoder and its projector: the online branch, or BYOL's target.
pub struct Branch {
    pub encoder: ResNet,
    pub projector: Mlp,
    joint_views: bool,
}

fn head(config: &HeadConfig, input: usize, precision: infomax_model::Precision) -> MlpConfig {
    MlpConfig {
        input,
        widths: config.widths.clone(),
        hidden_bias: config.hidden_bias,
        last_bias: config.last_bias,
        output_bn: config.output_bn,
        output_bn_affine: config.output_bn_affine,
        precision,
    }
}

impl Branch {
    /// An encoder of `encoder`'s shape and the run's projector, their variables under `vb`: the
    /// run's own branch (and BYOL's target) at the root, branch B under `branch_b.`.
    fn new(config: &RunConfig, encoder: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let mut enc = encoder.resnet();
        enc.precision = config.train.precision;
        let encoder = ResNet::new(&enc, vb.pp("encoder"))?;
        let projector =
            Mlp::new(&head(&config.projector, encoder.output_dim(), config.train.precision), vb.pp("projector"))?;
        Ok(Self { encoder, projector, joint_views: config.projector.joint_views })
    }

    /// Training-mode projector outputs of each view. The encoder sees each view on its own (its
    /// BatchNorms use that view's statistics, as every author's code forwards it); the projector
    /// too (its Linears as one product over all views' rows, `Mlp::forward_views`), unless
    /// `joint_views`, where it sees all views as one batch (the W-MSE code).
    pub fn embed_views(&self, views: &[Tensor]) -> Result<Vec<Tensor>> {
        let h = self.encoder.forward_views_t(views, true)?;
        if self.joint_views {
            let n = h[0].dim(0)?;
            let z = self.projector.forward_t(&Tensor::cat(&h, 0)?, true)?;
            return Ok((0..views.len()).map(|i| z.narrow(0, i * n, n)).collect::<candle_core::Result<Vec<_>>>()?);
        }
        Ok(self.projector.forward_views(&h, true)?)
    }
}

/// BYOL's target: a copy of the online branch, moved towards it by EMA, never by gradients.
pub struct Target {
    pub vars: SeededVarMap,
    pub branch: Branch,
}

/// The online network (encoder, projector, predictor) with its variables, and BYOL's target.
pub struct Network {
    pub vars: SeededVarMap,
    pub online: Branch,
    /// Branch B of a run with separate weights (`branch_b`): it embeds the odd-numbered views.
    pub branch_b: Option<Branch>,
    pub predictor: Option<Mlp>,
    pub target: Option<Target>,
}

impl Network {
    /// Build the encoder (`encoder.*`), projector (`projector.*`) and predictor (`predictor.*`),
    /// initialised from `config.seed`; for BYOL also the target, initialised identically.
    pub fn new(config: &RunConfig, device: &Device) -> Result<Self> {
        let vars = SeededVarMap::new(config.seed);
        let root = vars.builder(DType::F32, device);
        let online = Branch::new(config, &config.encoder, root.clone())?;
        let branch_b = match &config.branch_b {
            Some(b) => Some(Branch::new(config, &b.encoder, root.pp("branch_b"))?),
            None => None,
        };
        let predictor = match &config.predictor {
            Some(p) => {
                let vb = vars.builder(DType::F32, device);
                Some(Mlp::new(&head(p, config.embedding_dim(), config.train.precision), vb.pp("predictor"))?)
            }
            None => None,
        };
        let target = if config.method.has_target() {
            // The same seed and names give the same initial values: the target starts as a copy.
            let vars = SeededVarMap::new(config.seed);
            let branch = Branch::new(config, &config.encoder, vars.builder(DType::F32, device))?;
            Some(Target { vars, branch })
        } else {
            None
        };
        Ok(Self { vars, online, branch_b, predictor, target })
    }

    /// Trainable parameters of the online network in a stable order (running statistics and
    /// the target excluded).
    pub fn params(&self) -> Vec<Param> {
        self.vars
            .named_vars()
            .into_iter()
            .filter(|(name, _)| !is_running_statistic(name))
            .map(|(name, var)| Param { name, var })
            .collect()
    }

    /// Training-mode embeddings of each view: all through the one network, or with two branches
    /// the even-numbered views through the run's own branch and the odd-numbered through branch B.
    pub fn embed_views(&self, views: &[Tensor]) -> Result<Vec<Tensor>> {
        let Some(b) = &self.branch_b else { return self.online.embed_views(views) };
        let even: Vec<Tensor> = views.iter().step_by(2).cloned().collect();
        let odd: Vec<Tensor> = views.iter().skip(1).step_by(2).cloned().collect();
        let (mut za, mut zb) = (self.online.embed_views(&even)?.into_iter(), b.embed_views(&odd)?.into_iter());
        Ok((0..views.len()).filter_map(|i| if i % 2 == 0 { za.next() } else { zb.next() }).collect())
    }

    /// The predictor applied to each view's embedding (BYOL, SimSiam).
    pub fn predict(&self, z: &[Tensor]) -> Result<Vec<Tensor>> {
        let p = self.predictor.as_ref().ok_or_else(|| Error::Run {
            run: String::new(),
            what: "this method needs a [predictor] and the run has none".into(),
        })?;
        Ok(z.iter().map(|z| p.forward_t(z, true)).collect::<candle_core::Result<Vec<_>>>()?)
    }

    /// The target's projections of each view, without gradient (BYOL).
    pub fn target_embed(&self, views: &[Tensor]) -> Result<Vec<Tensor>> {
        let t = self.target.as_ref().ok_or_else(|| Error::Run {
            run: String::new(),
            what: "this method needs a target network and the run has none".into(),
        })?;
        Ok(t.branch.embed_views(views)?.iter().map(Tensor::detach).collect())
    }

    /// `θ_target ← τ θ_target + (1 − τ) θ_online` for every parameter; the target's BatchNorm
    /// running statistics are its own (the W-MSE code averages `parameters()` only).
    pub fn update_target(&self, tau: f64) -> Result<()> {
        let Some(t) = &self.target else { return Ok(()) };
        let online: HashMap<String, candle_core::Var> = self.vars.named_vars().into_iter().collect();
        for (name, tv) in t.vars.named_vars() {
            if is_running_statistic(&name) {
                continue;
            }
            let ov = online.get(&name).ok_or_else(|| Error::Run {
                run: String::new(),
                what: format!("target variable {name} has no online counterpart"),
            })?;
            let mixed = (tv.as_tensor().affine(tau, 0.0)? + ov.as_tensor().detach().affine(1.0 - tau, 0.0)?)?;
            tv.set(&mixed)?;
        }
        Ok(())
    }

    /// Evaluation-mode encoder features (running BN statistics, no projector).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.online.encoder.features(x)?.detach())
    }
}
