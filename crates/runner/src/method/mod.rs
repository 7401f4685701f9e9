//! A method = which heads exist + how views are formed + which loss. Everything shared (the
//! encoder, the projector, forwarding each view) lives here once; each method's file holds only
//! what differs.

mod vicreg;

use candle_core::{DType, Device, Tensor};
use candle_nn::ModuleT;
use infomax_model::{ConvImpl, Mlp, MlpConfig, ResNet, ResNetConfig, SeededVarMap};

use crate::optim::{is_running_statistic, Param};
use crate::spec::{ConvKernels, Method, RunSpec};
use crate::Result;

/// The loss to differentiate and its named, unweighted terms (scalars), for the records.
pub struct LossOutput {
    pub loss: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
}

/// What differs between methods: how the views' embeddings become a loss.
pub trait SslLoss {
    fn loss(&self, embeddings: &[Tensor]) -> Result<LossOutput>;
}

/// Encoder and projector with their variables.
pub struct Network {
    pub vars: SeededVarMap,
    pub encoder: ResNet,
    pub projector: Mlp,
}

impl Network {
    /// Build the encoder (`encoder.*`) and projector (`projector.*`), initialised from `spec.seed`.
    pub fn new(spec: &RunSpec, device: &Device) -> Result<Self> {
        let vars = SeededVarMap::new(spec.seed);
        let vb = vars.builder(DType::F32, device);
        let enc = ResNetConfig {
            depth: 18,
            width: spec.encoder.width,
            small_stem: spec.encoder.small_stem,
            zero_init_residual: spec.encoder.zero_init_residual,
            conv: match spec.encoder.conv {
                ConvKernels::Im2col => ConvImpl::Im2col,
                ConvKernels::Candle => ConvImpl::Candle,
            },
        };
        let encoder = ResNet::new(&enc, vb.pp("encoder"))?;
        let proj = MlpConfig { input: encoder.output_dim(), widths: spec.projector.clone(), last_bias: false };
        let projector = Mlp::new(&proj, vb.pp("projector"))?;
        Ok(Self { vars, encoder, projector })
    }

    /// Trainable parameters in a stable order (running statistics excluded).
    pub fn params(&self) -> Vec<Param> {
        self.vars
            .named_vars()
            .into_iter()
            .filter(|(name, _)| !is_running_statistic(name))
            .map(|(name, var)| Param { name, var })
            .collect()
    }

    /// Training-mode embeddings of each view, each view through BatchNorm on its own statistics
    /// (as the authors forward the two branches separately).
    pub fn embed_views(&self, views: &[Tensor]) -> Result<Vec<Tensor>> {
        views
            .iter()
            .map(|x| {
                let h = self.encoder.forward_t(x, true)?;
                Ok(self.projector.forward_t(&h, true)?)
            })
            .collect()
    }

    /// Evaluation-mode encoder features (running BN statistics, no projector).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.encoder.forward_t(x, false)?.detach())
    }
}

/// The loss of a run's method.
pub fn loss_for(spec: &RunSpec) -> Box<dyn SslLoss> {
    match spec.method {
        Method::Vicreg => Box::new(vicreg::Vicreg::from_spec(spec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Lars, Optimizer};
    use crate::spec::Dataset;

    /// A few LARS steps on one fixed batch lower the VICReg loss: gradients reach every
    /// parameter with the right sign.
    #[test]
    fn training_steps_lower_the_loss_on_a_fixed_batch() {
        let mut spec = RunSpec::defaults(Method::Vicreg, Dataset::Cifar10);
        spec.encoder.width = 0.125;
        spec.projector = vec![64, 64];
        let dev = Device::Cpu;
        let net = Network::new(&spec, &dev).unwrap();
        let loss_fn = loss_for(&spec);
        let mut opt = Lars::new(net.params(), 1e-6, 0.9, 0.001);
        let a = Tensor::randn(0f32, 1.0, (32, 3, 16, 16), &dev).unwrap();
        let b = (&a + Tensor::randn(0f32, 0.3, (32, 3, 16, 16), &dev).unwrap()).unwrap();
        let mut losses = Vec::new();
        for _ in 0..6 {
            let z = net.embed_views(&[a.clone(), b.clone()]).unwrap();
            let out = loss_fn.loss(&z).unwrap();
            losses.push(out.loss.to_scalar::<f32>().unwrap());
            let grads = out.loss.backward().unwrap();
            for p in net.params() {
                assert!(grads.get(p.var.as_tensor()).is_some(), "{} gets no gradient", p.name);
            }
            opt.step(&grads, 0.3).unwrap();
        }
        assert!(losses[5] < losses[0] * 0.9, "{losses:?}");
    }
}
