//! The projector (and predictor) MLP: `Linear → BN → ReLU` per hidden layer, then a last
//! `Linear`, optionally followed by a BatchNorm. Biases are configurable because the authors
//! differ: VICReg's last Linear has none, Barlow Twins' and SimSiam's Linears have none at all,
//! the W-MSE code's heads have them everywhere.

use candle_core::{Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Init, Linear, ModuleT, VarBuilder};

use crate::Error;

/// Widths of an MLP: `input`, then every layer's output (`widths.last()` is the embedding size).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    pub input: usize,
    pub widths: Vec<usize>,
    /// Whether the hidden Linears have biases.
    pub hidden_bias: bool,
    /// Whether the last Linear has a bias (the FAIR projectors have none).
    pub last_bias: bool,
    /// A BatchNorm (PyTorch defaults) after the last Linear.
    pub output_bn: bool,
    /// Whether that BatchNorm has a learnable scale and shift. SimSiam's has none (a learnable
    /// scale could shrink dimensions away); the W-MSE code's SimCLR `bn_last` has them.
    pub output_bn_affine: bool,
    /// Arithmetic of the Linears' products.
    pub precision: crate::Precision,
}

impl MlpConfig {
    pub fn validate(&self) -> crate::Result<()> {
        if self.widths.is_empty() {
            return Err(Error::Config { field: "projector", what: "at least one layer width expected".into() });
        }
        if let Some(w) = std::iter::once(&self.input).chain(&self.widths).find(|w| **w == 0) {
            return Err(Error::Config { field: "projector", what: format!("widths must be positive, got {w}") });
        }
        Ok(())
    }

    pub fn output_dim(&self) -> usize {
        *self.widths.last().unwrap_or(&self.input)
    }
}

/// PyTorch's `nn.Linear` initialisation: weight and bias uniform in ±1/sqrt(fan_in).
pub fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let init = Init::Uniform { lo: -bound, up: bound };
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = if bias { Some(vb.get_with_hints(out_dim, "bias", init)?) } else { None };
    Ok(Linear::new(w, b))
}

/// BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1, affine).
pub fn batch_norm(features: usize, vb: VarBuilder) -> Result<BatchNorm> {
    batch_norm_with(features, true, vb)
}

/// BatchNorm with PyTorch's defaults, with or without the learnable scale and shift.
pub fn batch_norm_with(features: usize, affine: bool, vb: VarBuilder) -> Result<BatchNorm> {
    candle_nn::batch_norm(features, BatchNormConfig { eps: 1e-5, remove_mean: true, affine, momentum: 0.1 }, vb)
}

#[derive(Debug, Clone)]
pub struct Mlp {
    hidden: Vec<(Linear, BatchNorm)>,
    last: Linear,
    output_bn: Option<BatchNorm>,
    precision: crate::Precision,
}

/// `x Wᵀ + b` with the product in `precision` (the bias added in f32).
fn linear_in(l: &Linear, x: &Tensor, precision: crate::Precision) -> Result<Tensor> {
    if precision == crate::Precision::F32 {
        return crate::linear::linear_forward(x, l.weight(), l.bias());
    }
    let y = precision.apply(x, l.weight(), |x, w| x.matmul(&w.t()?))?;
    match l.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

impl Mlp {
    /// Layers at `vb.pp("layers.{i}")`: hidden `i` has `linear` and `bn`, the last has `linear`
    /// (and `bn` with `output_bn`).
    pub fn new(cfg: &MlpConfig, vb: VarBuilder) -> crate::Result<Self> {
        cfg.validate()?;
        let mut hidden = Vec::new();
        let mut in_dim = cfg.input;
        let n = cfg.widths.len();
        for (i, &w) in cfg.widths[..n - 1].iter().enumerate() {
            let l = vb.pp(format!("layers.{i}"));
            hidden.push((linear(in_dim, w, cfg.hidden_bias, l.pp("linear"))?, batch_norm(w, l.pp("bn"))?));
            in_dim = w;
        }
        let l = vb.pp(format!("layers.{}", n - 1));
        let last = linear(in_dim, cfg.widths[n - 1], cfg.last_bias, l.pp("linear"))?;
        let output_bn = if cfg.output_bn {
            Some(batch_norm_with(cfg.widths[n - 1], cfg.output_bn_affine, l.pp("bn"))?)
        } else {
            None
        };
        Ok(Self { hidden, last, output_bn, precision: cfg.precision })
    }
}

use crate::batch_norm::batch_norm_rows;

impl ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (lin, bn) in &self.hidden {
            x = batch_norm_rows(bn, &linear_in(lin, &x, self.precision)?, true, train)?;
        }
        let x = linear_in(&self.last, &x, self.precision)?;
        match &self.output_bn {
            Some(bn) => batch_norm_rows(bn, &x, false, train),
            None => Ok(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededVarMap;
    use candle_core::{DType, Device};

    #[test]
    fn shapes_and_bias_layout() {
        let map = SeededVarMap::new(0);
        let vb = map.builder(DType::F32, &Device::Cpu);
        let cfg = MlpConfig {
            input: 8,
            widths: vec![16, 16, 4],
            hidden_bias: true,
            last_bias: false,
            output_bn: true,
            output_bn_affine: true,
            precision: crate::Precision::F32,
        };
        let mlp = Mlp::new(&cfg, vb).unwrap();
        let x = Tensor::ones((5, 8), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(mlp.forward_t(&x, true).unwrap().dims(), &[5, 4]);
        let names: Vec<String> = map.named_vars().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"layers.0.bn.running_var".to_string()));
        assert!(names.contains(&"layers.2.linear.weight".to_string()));
        assert!(!names.contains(&"layers.2.linear.bias".to_string()));
        assert!(names.contains(&"layers.1.linear.bias".to_string()));
        assert!(names.contains(&"layers.2.bn.weight".to_string()));
    }

    /// Without affine, the output BatchNorm has running statistics but nothing to learn.
    #[test]
    fn output_bn_without_affine_has_no_scale_or_shift() {
        let map = SeededVarMap::new(0);
        let vb = map.builder(DType::F32, &Device::Cpu);
        let cfg = MlpConfig {
            input: 8,
            widths: vec![16, 4],
            hidden_bias: false,
            last_bias: false,
            output_bn: true,
            output_bn_affine: false,
            precision: crate::Precision::F32,
        };
        let mlp = Mlp::new(&cfg, vb).unwrap();
        let names: Vec<String> = map.named_vars().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"layers.1.bn.running_var".to_string()));
        assert!(!names.iter().any(|n| n == "layers.1.bn.weight" || n == "layers.0.linear.bias"), "{names:?}");
        let x = crate::cpu::test_randn(0f32, 1.0, (6, 8), &Device::Cpu).unwrap();
        let y = mlp.forward_t(&x, true).unwrap();
        // Standardised per dimension: zero mean, unit (biased) variance up to eps.
        let var: Vec<f32> = y.sqr().unwrap().mean(0).unwrap().to_vec1().unwrap();
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3), "{var:?}");
    }

    #[test]
    fn rejects_empty_widths() {
        let cfg = MlpConfig {
            input: 8,
            widths: vec![],
            hidden_bias: true,
            last_bias: false,
            output_bn: false,
            output_bn_affine: true,
            precision: crate::Precision::F32,
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("projector"));
    }
}
