//! [`RunSpec`]: the fully resolved configuration of one run. Nothing in it is left to resolve
//! later; its canonical JSON, hashed, is the run's identity (the same spec is the same run on
//! every machine).

use infomax_data::augment::Pipeline;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The self-supervised method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Vicreg,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Vicreg => "vicreg",
        }
    }
}

/// Datasets with a loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    Cifar10,
}

impl Dataset {
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
        }
    }

    /// The W-MSE code's per-channel normalisation for this dataset.
    pub fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Dataset::Cifar10 => (infomax_data::cifar10::MEAN, infomax_data::cifar10::STD),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    /// `resnet18`.
    pub arch: String,
    /// Channel multiplier (1.0 = 64-128-256-512).
    pub width: f64,
    /// 3×3 stride-1 conv1 and no max-pool (CIFAR).
    pub small_stem: bool,
    pub zero_init_residual: bool,
    /// Convolution kernels: `im2col` (GEMM-lowered, fast on CPU) or `candle` (the reference).
    pub conv: ConvKernels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvKernels {
    Im2col,
    Candle,
}

impl std::str::FromStr for ConvKernels {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "im2col" => Ok(ConvKernels::Im2col),
            "candle" => Ok(ConvKernels::Candle),
            other => Err(format!("`im2col` or `candle` expected, got `{other}`")),
        }
    }
}

/// VICReg's coefficients (SPEC §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicregSpec {
    pub sim_coeff: f64,
    pub std_coeff: f64,
    pub cov_coeff: f64,
    pub gamma: f64,
    pub eps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Lars,
    Adam,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    pub kind: OptimizerKind,
    /// Base learning rate; multiplied by batch/256 when `lr_batch_scaling` (FAIR convention).
    pub lr: f64,
    pub lr_batch_scaling: bool,
    pub weight_decay: f64,
    /// LARS momentum.
    pub momentum: f64,
    /// LARS trust coefficient η.
    pub eta: f64,
    /// Adam β₁, β₂, ε.
    pub betas: (f64, f64),
    pub adam_eps: f64,
    /// Linear warm-up length in epochs (fractions allowed), then cosine decay.
    pub warmup_epochs: f64,
    /// The cosine ends at `end_lr_factor × peak`.
    pub end_lr_factor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub epochs: usize,
    pub batch_size: usize,
    /// Augmented views per image (d).
    pub views: usize,
    /// Train on the first N training images (0 = all).
    pub train_images: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// k-NN bank: the first N training images, un-augmented (0 = all).
    pub bank_images: usize,
    /// k-NN queries: the first N test images (0 = all).
    pub test_images: usize,
    /// Also evaluate k-NN every this many epochs (0 = only before and after training).
    pub every_epochs: usize,
    /// Images per forward pass when extracting features.
    pub batch_size: usize,
}

/// One run, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub experiment: String,
    pub profile: String,
    pub method: Method,
    pub dataset: Dataset,
    pub seed: u64,
    pub encoder: EncoderSpec,
    /// Projector layer widths; the last is the embedding size.
    pub projector: Vec<usize>,
    /// Present exactly when `method = "vicreg"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vicreg: Option<VicregSpec>,
    pub optimizer: OptimizerSpec,
    pub train: TrainSpec,
    pub augment: Pipeline,
    pub eval: EvalSpec,
}

impl RunSpec {
    /// Canonical JSON: keys sorted at every level (serde_json's map is ordered), no whitespace.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a RunSpec always serialises");
        serde_json::to_string(&value).expect("JSON values always serialise")
    }

    /// SHA-256 of the canonical JSON, hex: the run's identity.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.canonical_json().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The learning rate at the top of the schedule.
    pub fn peak_lr(&self) -> f64 {
        let o = &self.optimizer;
        if o.lr_batch_scaling {
            o.lr * self.train.batch_size as f64 / 256.0
        } else {
            o.lr
        }
    }

    /// Built-in defaults for a method and dataset: the values a file may leave out.
    pub fn defaults(method: Method, dataset: Dataset) -> RunSpec {
        let (mean, std) = dataset.mean_std();
        RunSpec {
            experiment: String::new(),
            profile: String::new(),
            method,
            dataset,
            seed: 0,
            encoder: EncoderSpec {
                arch: "resnet18".into(),
                width: 1.0,
                small_stem: true,
                zero_init_residual: false,
                conv: ConvKernels::Im2col,
            },
            projector: vec![2048, 2048, 2048],
            vicreg: (method == Method::Vicreg).then_some(VicregSpec {
                sim_coeff: 25.0,
                std_coeff: 25.0,
                cov_coeff: 1.0,
                gamma: 1.0,
                eps: 1e-4,
            }),
            optimizer: OptimizerSpec {
                kind: OptimizerKind::Lars,
                lr: 0.3,
                lr_batch_scaling: true,
                weight_decay: 1e-6,
                momentum: 0.9,
                eta: 0.001,
                betas: (0.9, 0.999),
                adam_eps: 1e-8,
                warmup_epochs: 10.0,
                end_lr_factor: 0.001,
            },
            train: TrainSpec { epochs: 1000, batch_size: 256, views: 2, train_images: 0 },
            augment: Pipeline::wmse_cifar(mean, std),
            eval: EvalSpec { bank_images: 0, test_images: 0, every_epochs: 0, batch_size: 500 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = RunSpec::defaults(Method::Vicreg, Dataset::Cifar10);
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 64);
        b.seed = 1;
        assert_ne!(a.hash(), b.hash());
        let json = a.canonical_json();
        let back: RunSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn peak_lr_scales_with_batch() {
        let mut s = RunSpec::defaults(Method::Vicreg, Dataset::Cifar10);
        s.train.batch_size = 512;
        assert!((s.peak_lr() - 0.6).abs() < 1e-12);
        s.optimizer.lr_batch_scaling = false;
        assert!((s.peak_lr() - 0.3).abs() < 1e-12);
    }
}
