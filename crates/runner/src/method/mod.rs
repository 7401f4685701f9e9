//! A method = which heads exist + how views are formed + which loss. Everything shared (the
//! encoder, the projector and predictor, forwarding the views, the BYOL target network, the
//! optional variance term) lives here once; each method's file holds only what differs.

mod barlow_twins;
mod byol;
mod simclr;
mod simsiam;
mod vicreg;
pub(crate) mod wmse;

pub use byol::byol_tau;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::ModuleT;
use infomax_model::{Mlp, MlpConfig, ResNet, SeededVarMap};

use crate::optim::{is_running_statistic, Param};
use crate::spec::{HeadSpec, Method, RunSpec, VarianceRegSpec};
use crate::{Error, Result};

/// Where a training step is: for the methods that draw randomness (W-MSE's sub-batches) or
/// follow a schedule (BYOL's EMA rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepContext {
    pub seed: u64,
    pub epoch: u64,
    pub step: u64,
    /// Fraction of training done, in [0, 1].
    pub progress: f64,
}

/// The loss to differentiate, its named unweighted terms (scalars) for the records, and the
/// projector outputs of every view for the collapse diagnostics.
pub struct StepOutput {
    pub loss: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
    pub embeddings: Vec<Tensor>,
}

/// What differs between methods: how the views are forwarded and become a loss.
pub trait SslMethod {
    fn step_loss(&self, net: &Network, views: &[Tensor], ctx: &StepContext) -> Result<StepOutput>;

    /// Runs after each optimiser step (BYOL moves its target network here).
    fn after_step(&self, _net: &Network, _ctx: &StepContext) -> Result<()> {
        Ok(())
    }
}

/// An encoder and its projector: the online branch, or BYOL's target.
pub struct Branch {
    pub encoder: ResNet,
    pub projector: Mlp,
    joint_views: bool,
}

fn head(spec: &HeadSpec, input: usize, precision: crate::spec::Precision) -> MlpConfig {
    MlpConfig {
        input,
        widths: spec.widths.clone(),
        hidden_bias: spec.hidden_bias,
        last_bias: spec.last_bias,
        output_bn: spec.output_bn,
        output_bn_affine: spec.output_bn_affine,
        precision: precision.model(),
    }
}

impl Branch {
    /// The run's encoder and projector, or (`second`) the second branch's under `branch_b.`.
    fn new(spec: &RunSpec, second: bool, vars: &SeededVarMap, device: &Device) -> Result<Self> {
        let mut vb = vars.builder(DType::F32, device);
        let mut enc = spec.encoder.resnet();
        if second {
            vb = vb.pp("branch_b");
            let b = spec.branch_b.as_ref().expect("a second branch is built only when the spec has one");
            enc = b.encoder.resnet();
        }
        enc.precision = spec.train.precision.model();
        let encoder = ResNet::new(&enc, vb.pp("encoder"))?;
        let projector =
            Mlp::new(&head(&spec.projector, encoder.output_dim(), spec.train.precision), vb.pp("projector"))?;
        Ok(Self { encoder, projector, joint_views: spec.projector.joint_views })
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
    /// The second branch of a run with separate weights: it embeds the odd-numbered views.
    pub branch_b: Option<Branch>,
    pub predictor: Option<Mlp>,
    pub target: Option<Target>,
}

impl Network {
    /// Build the encoder (`encoder.*`), projector (`projector.*`) and predictor (`predictor.*`),
    /// initialised from `spec.seed`; for BYOL also the target, initialised identically.
    pub fn new(spec: &RunSpec, device: &Device) -> Result<Self> {
        let vars = SeededVarMap::new(spec.seed);
        let online = Branch::new(spec, false, &vars, device)?;
        let branch_b = match &spec.branch_b {
            Some(_) => Some(Branch::new(spec, true, &vars, device)?),
            None => None,
        };
        let predictor = match &spec.predictor {
            Some(p) => {
                let vb = vars.builder(DType::F32, device);
                Some(Mlp::new(&head(p, spec.embedding_dim(), spec.train.precision), vb.pp("predictor"))?)
            }
            None => None,
        };
        let target = if spec.method == Method::Byol {
            // The same seed and names give the same initial values: the target starts as a copy.
            let vars = SeededVarMap::new(spec.seed);
            let branch = Branch::new(spec, false, &vars, device)?;
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
    /// the even-numbered views through the first and the odd-numbered through the second.
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
        Ok(self.online.encoder.forward_t(x, false)?.detach())
    }
}

/// A run's training objective: its method's loss, plus VICReg's variance term when asked.
pub struct Objective {
    method: Box<dyn SslMethod>,
    variance_reg: Option<VarianceRegSpec>,
}

impl Objective {
    pub fn for_spec(spec: &RunSpec) -> Self {
        let method: Box<dyn SslMethod> = match spec.method {
            Method::Vicreg => Box::new(vicreg::Vicreg::from_spec(spec)),
            Method::BarlowTwins => Box::new(barlow_twins::BarlowTwins::from_spec(spec)),
            Method::WMse => Box::new(wmse::Wmse::from_spec(spec)),
            Method::Simclr => Box::new(simclr::Simclr::from_spec(spec)),
            Method::Byol => Box::new(byol::Byol::from_spec(spec)),
            Method::Simsiam => Box::new(simsiam::Simsiam),
        };
        Self { method, variance_reg: spec.variance_reg.clone() }
    }

    pub fn step_loss(&self, net: &Network, views: &[Tensor], ctx: &StepContext) -> Result<StepOutput> {
        let mut out = self.method.step_loss(net, views, ctx)?;
        if let Some(v) = &self.variance_reg {
            let mut total: Option<Tensor> = None;
            for z in &out.embeddings {
                let t = infomax_losses::vicreg::variance(z, v.gamma, v.eps)?;
                total = Some(match total {
                    Some(acc) => (acc + t)?,
                    None => t,
                });
            }
            let mean = (total.expect("at least two views") / out.embeddings.len() as f64)?;
            out.loss = (&out.loss + mean.affine(v.coeff, 0.0)?)?;
            out.terms.push(("variance_reg", mean));
        }
        Ok(out)
    }

    pub fn after_step(&self, net: &Network, ctx: &StepContext) -> Result<()> {
        self.method.after_step(net, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, Lars, Optimizer};
    use crate::spec::{Dataset, VarianceRegSpec};

    fn tiny(method: Method) -> RunSpec {
        let mut spec = RunSpec::defaults(method, Dataset::Cifar10);
        spec.encoder.width = 0.125;
        let emb = if method == Method::WMse { 8 } else { 32 };
        spec.projector.widths = vec![32, emb];
        if let Some(p) = &mut spec.predictor {
            p.widths = vec![32, emb];
        }
        if let Some(w) = &mut spec.wmse {
            w.w_size = 16;
        }
        spec
    }

    /// A few optimiser steps on one fixed batch lower each method's loss: gradients reach every
    /// online parameter with the right sign, and never BYOL's target.
    #[test]
    fn every_method_lowers_its_loss_on_a_fixed_batch() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (32, 3, 16, 16), &dev).unwrap();
        let noisy = |s: f32| (&a + Tensor::randn(0f32, s, (32, 3, 16, 16), &dev).unwrap()).unwrap();
        for method in Method::ALL {
            let mut spec = tiny(method);
            if method == Method::Simsiam {
                spec.variance_reg = Some(VarianceRegSpec { coeff: 1.0, gamma: 1.0, eps: 1e-4 });
            }
            let views: Vec<Tensor> = (0..spec.train.views).map(|i| noisy(0.2 + 0.1 * i as f32)).collect();
            let net = Network::new(&spec, &dev).unwrap();
            let objective = Objective::for_spec(&spec);
            let mut opt: Box<dyn Optimizer> = match method {
                Method::Vicreg | Method::BarlowTwins => Box::new(Lars::new(net.params(), 1e-6, 0.9, 0.001)),
                _ => Box::new(Adam::new(net.params(), (0.9, 0.999), 1e-8, 0.0)),
            };
            let lr = if matches!(method, Method::Vicreg | Method::BarlowTwins) { 0.3 } else { 1e-3 };
            let mut losses = Vec::new();
            for step in 0..8 {
                let ctx = StepContext { seed: 0, epoch: 1, step, progress: step as f64 / 8.0 };
                let out = objective.step_loss(&net, &views, &ctx).unwrap();
                losses.push(out.loss.to_scalar::<f32>().unwrap());
                if method == Method::Simsiam {
                    assert!(out.terms.iter().any(|(n, _)| *n == "variance_reg"));
                }
                let grads = out.loss.backward().unwrap();
                for p in net.params() {
                    assert!(grads.get(p.var.as_tensor()).is_some(), "{method:?}: {} gets no gradient", p.name);
                }
                if let Some(t) = &net.target {
                    for (name, v) in t.vars.named_vars() {
                        assert!(grads.get(v.as_tensor()).is_none(), "BYOL's target {name} got a gradient");
                    }
                }
                opt.step(&grads, lr).unwrap();
                objective.after_step(&net, &ctx).unwrap();
            }
            assert!(losses[7] < losses[0], "{method:?}: {losses:?}");
        }
    }

    /// With a second branch, each view goes through its own network: gradients reach both, the
    /// second's names sit under `branch_b.`, and the features come from the first.
    #[test]
    fn a_second_branch_embeds_the_odd_views_with_its_own_weights() {
        let dev = Device::Cpu;
        let mut spec = tiny(Method::Vicreg);
        let mut other = spec.encoder.clone();
        other.arch = "resnet34".into();
        other.width = 0.25;
        spec.branch_b = Some(crate::spec::BranchBSpec { encoder: other });
        let net = Network::new(&spec, &dev).unwrap();
        let names: Vec<String> = net.vars.named_vars().into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n == "branch_b.encoder.layer3.5.conv2.weight"), "ResNet-34 under branch_b");
        assert!(names.iter().any(|n| n == "branch_b.projector.layers.0.linear.weight"));
        let x = Tensor::randn(0f32, 1.0, (8, 3, 16, 16), &dev).unwrap();
        let z = net.embed_views(&[x.clone(), x.clone()]).unwrap();
        let diff = (&z[0] - &z[1]).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff > 1e-3, "the same image gives different embeddings in different branches");
        let loss = Objective::for_spec(&spec).step_loss(
            &net,
            &[x.clone(), x.clone()],
            &StepContext { seed: 0, epoch: 1, step: 0, progress: 0.0 },
        );
        let grads = loss.unwrap().loss.backward().unwrap();
        for p in net.params() {
            assert!(grads.get(p.var.as_tensor()).is_some(), "{} gets no gradient", p.name);
        }
        assert_eq!(net.features(&x).unwrap().dims(), &[8, 64], "features of the first branch (width 0.125)");
    }

    /// BYOL's target starts as an exact copy of the online branch and then follows it by EMA.
    #[test]
    fn byol_target_starts_as_a_copy_and_moves_by_ema() {
        let spec = tiny(Method::Byol);
        let net = Network::new(&spec, &Device::Cpu).unwrap();
        let target = net.target.as_ref().unwrap();
        let online: HashMap<String, candle_core::Var> = net.vars.named_vars().into_iter().collect();
        let name = "projector.layers.1.linear.weight";
        let values = |v: &candle_core::Var| -> Vec<f32> { v.as_tensor().flatten_all().unwrap().to_vec1().unwrap() };
        let tv = target.vars.named_vars().into_iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(values(&tv), values(&online[name]));
        assert_eq!(target.vars.named_vars().len(), net.vars.named_vars().len() - 8, "predictor excluded");
        let before = values(&tv);
        online[name].set(&online[name].as_tensor().zeros_like().unwrap()).unwrap();
        net.update_target(0.75).unwrap();
        for (after, b) in values(&tv).iter().zip(&before) {
            assert!((after - 0.75 * b).abs() < 1e-7);
        }
    }
}
