//! [`RunConfig`]: the fully resolved configuration of one run. Nothing in it is left to resolve
//! later; its canonical JSON, hashed, is the run's identity (the same config is the same run on
//! every machine).

use std::collections::BTreeMap;

use infomax_data::augment::{Augment, Preset};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::method::{Method, MethodParams};
pub use infomax_data::{Dataset, DatasetSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// `resnet18`, `resnet34` or `resnet50` (`infomax_model::ARCHS`).
    pub arch: String,
    /// Channel multiplier (1.0 = 64-128-256-512).
    pub width: f64,
    /// 3×3 stride-1 conv1 (CIFAR, and the W-MSE code on STL-10 and Tiny-ImageNet).
    pub small_stem: bool,
    /// conv1's zero padding (default half its kernel; solo-learn's CIFAR stem pads by 2); left
    /// out of the stored configuration when unset.
    #[serde(default, skip_serializing_if = "is_unset")]
    pub stem_padding: Option<usize>,
    /// Max-pool after the stem (default: on for STL-10 and Tiny-ImageNet, as the W-MSE code).
    pub max_pool: bool,
    pub zero_init_residual: bool,
    /// Convolution kernels: `im2col` (GEMM-lowered, fast on CPU) or `candle` (the reference).
    pub conv: ConvKernels,
}

impl EncoderConfig {
    /// The model crate's configuration of this encoder.
    pub fn resnet(&self) -> infomax_model::ResNetConfig {
        infomax_model::ResNetConfig {
            depth: infomax_model::ResNetConfig::depth_of(&self.arch).unwrap_or(0),
            width: self.width,
            small_stem: self.small_stem,
            stem_padding: self.stem_padding,
            max_pool: self.max_pool,
            zero_init_residual: self.zero_init_residual,
            conv: self.conv,
            precision: Precision::F32,
        }
    }
}

pub use crate::optim::LarsVariant;
pub use infomax_model::ConvKernels;

/// Where a run trains. `cuda` is the GPU that `--device cuda:N` names (0 unless given): the index
/// is the machine's business, not the run's, so it is not part of the run's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

/// The arithmetic of convolutions and matrix products (`f32`, or autocast-style `bf16`); BatchNorm,
/// the losses' statistics, W-MSE's whitening, the optimiser and the weights stay f32.
pub use infomax_model::Precision;

/// A JSON object's leaves as dotted paths and their JSON text.
fn flattened(json: &serde_json::Value) -> BTreeMap<String, String> {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    flatten("", json, &mut out);
    out
}

thread_local! {
    /// Set while [`RunConfig::fields`] serialises: the fields below are then written at their
    /// defaults too.
    static WRITING_EVERY_FIELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a field at its default is left out of the serialised configuration. Fields added
/// after runs were stored are left out at their defaults, so the canonical JSON — the run's
/// identity — of a run that does not use them is what it was before they existed; what a user
/// reads ([`RunConfig::fields`]) still shows them.
pub(crate) fn left_out(at_default: bool) -> bool {
    at_default && !WRITING_EVERY_FIELD.get()
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    left_out(*v == T::default())
}

fn is_unset<T>(v: &Option<T>) -> bool {
    left_out(v.is_none())
}

/// Writes `[50.0, 25.0]` as `[50,25]`, as the field was stored when it held whole epochs only.
fn whole_numbers_as_integers<S: serde::Serializer>(v: &[f64], s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            seq.serialize_element(&(*x as i64))?;
        } else {
            seq.serialize_element(x)?;
        }
    }
    seq.end()
}

fn is_empty<T>(v: &[T]) -> bool {
    left_out(v.is_empty())
}

/// Branch B: a second branch with its own weights, for the odd-numbered views (VICReg's Table 5): the same
/// architecture with different weights, or a different architecture. In a file, its `encoder`
/// table is merged over the run's `encoder`, so `branch_b = { encoder = {} }` is "different
/// weights" and `branch_b = { encoder = { arch = "resnet34" } }` "different architectures". The
/// branch has its own projector of the same shape; evaluation reads the first branch's encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchBConfig {
    pub encoder: EncoderConfig,
}

/// An MLP head (projector or predictor): `Linear → BN → ReLU` per hidden width, then a last
/// `Linear`, optionally followed by a BatchNorm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Layer widths; the last is the head's output size.
    pub widths: Vec<usize>,
    /// Bias in the hidden Linears (Barlow Twins' and SimSiam's have none).
    pub hidden_bias: bool,
    /// Bias in the last Linear (the FAIR projectors have none; the W-MSE code's heads do).
    pub last_bias: bool,
    /// A BatchNorm after the last Linear (the W-MSE code's SimCLR `bn_last`; SimSiam's projector).
    pub output_bn: bool,
    /// Whether that BatchNorm learns a scale and shift (SimCLR's `bn_last` does; SimSiam's does not).
    pub output_bn_affine: bool,
    /// Forward all views through the head as one batch, so its BatchNorms see every view's rows
    /// together (the W-MSE code's W-MSE and SimCLR); otherwise view by view (FAIR code, BYOL).
    pub joint_views: bool,
}

impl HeadConfig {
    /// `Linear → BN → ReLU` hidden layers with biases and a biased last Linear, views forwarded
    /// one by one.
    pub fn mlp(widths: &[usize]) -> Self {
        HeadConfig {
            widths: widths.to_vec(),
            hidden_bias: true,
            last_bias: true,
            output_bn: false,
            output_bn_affine: true,
            joint_views: false,
        }
    }

    /// The FAIR projector of VICReg and Barlow Twins: 2048-2048-2048, a bias-free last Linear,
    /// biases in the hidden Linears when `hidden_bias` (VICReg's; Barlow Twins' have none).
    pub fn fair_projector(hidden_bias: bool) -> Self {
        HeadConfig { widths: vec![2048, 2048, 2048], hidden_bias, last_bias: false, ..HeadConfig::mlp(&[]) }
    }

    /// The W-MSE code's head: 1024 → 64 with biases, all views forwarded as one batch.
    pub fn wmse_head() -> Self {
        HeadConfig { joint_views: true, ..HeadConfig::mlp(&[1024, 64]) }
    }
}

/// VICReg's variance hinge added to any method's loss, on each view's projector output:
/// `coeff · mean_views mean_j max(0, γ − sqrt(Var(z^j) + ε))` (the VICReg paper's Fig. 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarianceRegConfig {
    pub coeff: f64,
    pub gamma: f64,
    pub eps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Lars,
    Adam,
    Sgd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// Base learning rate; multiplied by batch/256 when `lr_batch_scaling` (FAIR convention).
    pub lr: f64,
    pub lr_batch_scaling: bool,
    pub weight_decay: f64,
    /// Learning-rate multiplier for biases and BatchNorm parameters (Barlow Twins: 0.0048 / 0.2).
    pub bias_and_norm_lr_factor: f64,
    /// LARS and SGD momentum.
    pub momentum: f64,
    /// LARS trust coefficient η.
    pub eta: f64,
    /// LARS's trust ratio: `fair` (the FAIR code's) or `solo-learn` (its clipped ratio); left out
    /// of the stored configuration when `fair`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub lars_variant: LarsVariant,
    /// Adam β₁, β₂, ε.
    pub betas: (f64, f64),
    pub adam_eps: f64,
    /// Linear warm-up length in epochs (fractions allowed), then the decay.
    pub warmup_epochs: f64,
    /// The cosine ends at `end_lr_factor × peak`.
    pub end_lr_factor: f64,
    /// The decay after the warm-up: `cosine` (the FAIR code's), or `step` (the W-MSE code's: the
    /// rate held, then multiplied by `drop_factor` at each of `drop_epochs_before_end`). Left out
    /// of the stored configuration when `cosine`, as are the fields below when unset, so runs
    /// from before they existed keep their identity.
    #[serde(default, skip_serializing_if = "is_default")]
    pub schedule: Schedule,
    /// Warm-up in optimiser steps (the W-MSE code's 500 iterations), in place of
    /// `warmup_epochs`, which must then be 0.
    #[serde(default, skip_serializing_if = "is_unset")]
    pub warmup_steps: Option<usize>,
    /// `step`: the epochs before the end at which the rate drops (W-MSE: 50 and 25). Fractions
    /// place a drop inside an epoch, so a small budget can keep the schedule's shape (0.1 and
    /// 0.05 of a 2-epoch run are 50 and 25 of 1,000); whole numbers are stored as integers.
    #[serde(default, skip_serializing_if = "is_empty", serialize_with = "whole_numbers_as_integers")]
    pub drop_epochs_before_end: Vec<f64>,
    /// `step`: the factor of each drop (W-MSE: 0.2).
    #[serde(default, skip_serializing_if = "is_unset")]
    pub drop_factor: Option<f64>,
}

/// The learning-rate decay after the warm-up (see [`crate::optim::LrSchedule`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    #[default]
    Cosine,
    Step,
}

impl OptimizerConfig {
    /// The FAIR recipe: LARS, lr 0.3 × batch/256, weight decay 1e-6, 10 warm-up epochs, then a
    /// cosine to 0.001 × peak.
    pub fn lars() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Lars,
            lr: 0.3,
            lr_batch_scaling: true,
            weight_decay: 1e-6,
            bias_and_norm_lr_factor: 1.0,
            momentum: 0.9,
            eta: 0.001,
            lars_variant: LarsVariant::Fair,
            betas: (0.9, 0.999),
            adam_eps: 1e-8,
            warmup_epochs: 10.0,
            end_lr_factor: 0.001,
            schedule: Schedule::Cosine,
            warmup_steps: None,
            drop_epochs_before_end: Vec::new(),
            drop_factor: None,
        }
    }

    /// The W-MSE code's Adam (its W-MSE, SimCLR and BYOL): lr 3e-3, L2 1e-6, 500 warm-up
    /// iterations (≈ 5 epochs of batch 512), a cosine to 0.
    pub fn wmse_adam() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 3e-3,
            lr_batch_scaling: false,
            warmup_epochs: 5.0,
            end_lr_factor: 0.0,
            ..OptimizerConfig::lars()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Augmented views per image (d).
    pub views: usize,
    /// Train on the first N training images (0 = all); where the images are stored class after
    /// class (ImageNet, Tiny-ImageNet, a folder), N spread over them.
    pub train_images: usize,
    /// `cpu` or `cuda`; left out of the canonical JSON when `cpu`, so CPU runs keep their hashes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub device: DeviceKind,
    /// `f32` or `bf16` (autocast-style convolutions and matrix products); left out when `f32`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub precision: Precision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// k-NN bank: the first N training images, un-augmented (0 = all); spread over the classes
    /// as `train.train_images` is.
    pub bank_images: usize,
    /// k-NN queries: the first N test images (0 = all; spread likewise).
    pub test_images: usize,
    /// Also evaluate k-NN every this many epochs (0 = only before and after training).
    pub every_epochs: usize,
    /// Images per forward pass when extracting features.
    pub batch_size: usize,
    /// Linear probe (W-MSE protocol) on the bank's features: epochs (0 = no probe) and
    /// mini-batch size; Adam lr 1e-2 decaying exponentially to 1e-6, weight decay 5e-6.
    pub linear_epochs: usize,
    pub linear_batch_size: usize,
}

/// One run, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub experiment: String,
    pub profile: String,
    /// The run's coordinates in its experiment's grid (axis → value name; the seed is `seed`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grid: BTreeMap<String, String>,
    pub method: Method,
    pub dataset: DatasetSpec,
    pub seed: u64,
    pub encoder: EncoderConfig,
    /// The projector; its output is the embedding the loss sees.
    pub projector: HeadConfig,
    /// Branch B, with its own weights (absent: both views share one network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_b: Option<BranchBConfig>,
    /// BYOL's and SimSiam's predictor, on the projector's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor: Option<HeadConfig>,
    /// Each method's parameters, a table under the method's key (`[vicreg]`, `[wmse]`, …):
    /// present exactly when it is the run's method.
    #[serde(flatten)]
    pub method_params: MethodParams,
    /// VICReg's variance term added to any method (absent: not added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variance_reg: Option<VarianceRegConfig>,
    pub optimizer: OptimizerConfig,
    pub train: TrainConfig,
    pub augment: Augment,
    pub eval: EvalConfig,
}

impl RunConfig {
    /// Canonical JSON: keys sorted at every level (serde_json's map is ordered), no whitespace,
    /// each number as written (see [`RunConfig::to_json`]).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.to_json()).expect("JSON values always serialise")
    }

    /// The configuration as a JSON value whose numbers are the shortest decimals that read back
    /// as the stored values: an `f32` field set to `0.4` is `0.4`, not the `0.4000000059604645`
    /// that widening it to `f64` would give, so the stored JSON, its hash and SQL comparisons
    /// (`json_extract(config_json, '$.augment.view_a.flip_p') = 0.5`) all see what was written.
    /// (serde_json prints an `f32` in its shortest form; parsing that text gives the `f64` of
    /// the same decimal.)
    pub fn to_json(&self) -> serde_json::Value {
        let text = serde_json::to_string(self).expect("a RunConfig always serialises");
        serde_json::from_str(&text).expect("serde_json reads what it wrote")
    }

    /// A run configuration from a complete TOML table, strictly: an unknown or mistyped field is
    /// `(its path, what was expected)`.
    pub fn from_toml(table: toml::Table) -> std::result::Result<RunConfig, (String, String)> {
        // The method tables are flattened into the configuration, where serde loses the path of
        // a bad field: each is read on its own first.
        for key in MethodParams::KEYS {
            let Some(value) = table.get(*key) else { continue };
            if let Some(Err(e)) = MethodParams::parse_table(key, value.clone()) {
                let path = e.path().to_string();
                let field = if path == "." { key.to_string() } else { format!("{key}.{path}") };
                return Err((field, e.inner().to_string()));
            }
        }
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let what = e.inner().to_string();
            let what = match what.strip_prefix("unknown field `").and_then(|r| r.strip_suffix('`')) {
                // At the top level, flattening also loses serde's list of the valid keys.
                Some(unknown) if !unknown.contains('`') => format!(
                    "unknown field `{unknown}`, expected one of {}",
                    Self::keys().iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ),
                _ => what,
            };
            (e.path().to_string(), what)
        })
    }

    /// Every top-level key a run configuration can have.
    fn keys() -> Vec<String> {
        let mut full = RunConfig::defaults(Method::ALL[0], Dataset::Cifar10);
        full.grid.insert("axis".into(), "value".into());
        full.branch_b = Some(BranchBConfig { encoder: full.encoder.clone() });
        full.predictor = Some(full.projector.clone());
        full.variance_reg = Some(VarianceRegConfig { coeff: 1.0, gamma: 1.0, eps: 1e-4 });
        let serde_json::Value::Object(map) = full.to_json() else { unreachable!("a struct serialises to an object") };
        let mut keys: Vec<String> = map.into_iter().map(|(k, _)| k).collect();
        for key in MethodParams::KEYS {
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_string());
            }
        }
        keys
    }

    /// Every field as a dotted path and its value's JSON text (`optimizer.lr` → `0.3`), those
    /// the canonical JSON leaves out at their defaults included (`optimizer.schedule` →
    /// `"cosine"`, an unset `encoder.stem_padding` → `null`).
    pub fn fields(&self) -> BTreeMap<String, String> {
        struct EveryField;
        impl Drop for EveryField {
            fn drop(&mut self) {
                WRITING_EVERY_FIELD.set(false);
            }
        }
        let json = {
            WRITING_EVERY_FIELD.set(true);
            let _reset = EveryField;
            self.to_json()
        };
        flattened(&json)
    }

    /// The fields of the canonical JSON (the stored configuration) as [`RunConfig::fields`]
    /// writes them: a `null` among them is a number that is not finite.
    pub(crate) fn stored_fields(&self) -> BTreeMap<String, String> {
        flattened(&self.to_json())
    }

    /// The fields in which this configuration differs from `other`, seed aside, as `key=value`
    /// pairs sorted by key (a field `other` lacks shows this one's value, one this lacks `none`).
    pub fn differences_from(&self, other: &RunConfig) -> Vec<(String, String)> {
        let (mine, theirs) = (self.fields(), other.fields());
        let keys: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
        keys.into_iter()
            .filter(|k| *k != "seed" && mine.get(*k) != theirs.get(*k))
            .map(|k| (k.clone(), mine.get(k).cloned().unwrap_or_else(|| "none".into())))
            .collect()
    }

    /// The hash of the configuration without its seed: runs that share it are one configuration
    /// trained from different seeds, and only such runs are pooled into a mean ± std over seeds.
    pub fn seedless_hash(&self) -> String {
        let mut value = self.to_json();
        value.as_object_mut().expect("a struct serialises to an object").remove("seed");
        let digest = Sha256::digest(serde_json::to_string(&value).expect("JSON values always serialise").as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
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

    /// Built-in defaults for a method and dataset: the values a file may leave out. Shared
    /// defaults (ResNet-18, the FAIR projector, LARS, 1,000 epochs of batch 256, the dataset's
    /// augmentations and the W-MSE evaluation), then the method's own table and recipe from its file.
    pub fn defaults(method: Method, dataset: impl Into<DatasetSpec>) -> RunConfig {
        let dataset = dataset.into();
        let augment = Self::augment_defaults(dataset.default_preset(), &dataset);
        let (small_stem, max_pool) = (dataset.small_stem(), dataset.max_pool());
        let mut config = RunConfig {
            experiment: String::new(),
            profile: String::new(),
            grid: BTreeMap::new(),
            method,
            dataset,
            seed: 0,
            encoder: EncoderConfig {
                arch: "resnet18".into(),
                width: 1.0,
                small_stem,
                stem_padding: None,
                max_pool,
                zero_init_residual: false,
                conv: ConvKernels::Im2col,
            },
            projector: HeadConfig::fair_projector(true),
            branch_b: None,
            predictor: None,
            method_params: MethodParams::default(),
            variance_reg: None,
            optimizer: OptimizerConfig::lars(),
            train: TrainConfig {
                epochs: 1000,
                batch_size: 256,
                views: 2,
                train_images: 0,
                device: DeviceKind::Cpu,
                precision: Precision::F32,
            },
            augment,
            eval: EvalConfig {
                bank_images: 0,
                test_images: 0,
                every_epochs: 0,
                batch_size: 500,
                linear_epochs: 500,
                linear_batch_size: 1000,
            },
        };
        method.recipe(&mut config);
        config
    }

    /// A preset's augmentations at the dataset's crop size, normalisation and evaluation transform.
    ///
    /// A folder dataset without its `mean` and `std` gets the identity normalisation here, and
    /// validation rejects the run: its statistics are never guessed.
    pub fn augment_defaults(preset: Preset, dataset: &DatasetSpec) -> Augment {
        let (mean, std) = dataset.mean_std().unwrap_or(([0.0; 3], [1.0; 3]));
        let mut a = Augment::preset(preset, dataset.crop_size(), mean, std);
        if let Some((resize, crop)) = dataset.eval_resize_crop() {
            (a.eval_resize, a.eval_crop) = (resize, crop);
        }
        a
    }

    /// The embedding size the loss sees.
    pub fn embedding_dim(&self) -> usize {
        self.projector.widths.last().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 64);
        b.seed = 1;
        assert_ne!(a.hash(), b.hash());
        let json = a.canonical_json();
        let back: RunConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn differences_and_the_seedless_hash_set_seeds_apart_from_everything_else() {
        let a = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        let mut seed = a.clone();
        seed.seed = 7;
        assert_eq!(seed.seedless_hash(), a.seedless_hash());
        assert!(seed.differences_from(&a).is_empty());
        let mut budget = seed.clone();
        budget.train.epochs = 3;
        budget.optimizer.lr = 0.5;
        assert_ne!(budget.seedless_hash(), a.seedless_hash());
        assert_eq!(
            budget.differences_from(&a),
            [("optimizer.lr".to_string(), "0.5".to_string()), ("train.epochs".into(), "3".into())]
        );
        let other = RunConfig::defaults(Method::BarlowTwins, Dataset::Cifar10);
        let d = other.differences_from(&a);
        assert!(
            d.contains(&("vicreg.sim_coeff".into(), "none".into()))
                && d.contains(&("method".into(), "\"barlow-twins\"".into())),
            "{d:?}"
        );
    }

    #[test]
    fn peak_lr_scales_with_batch() {
        let mut s = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
        s.train.batch_size = 512;
        assert!((s.peak_lr() - 0.6).abs() < 1e-12);
        s.optimizer.lr_batch_scaling = false;
        assert!((s.peak_lr() - 0.3).abs() < 1e-12);
    }

    #[test]
    fn every_method_has_its_parameters_and_a_name_that_parses_back() {
        for m in Method::ALL {
            let s = RunConfig::defaults(m, Dataset::Cifar10);
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            let tables = serde_json::to_value(&s.method_params).unwrap();
            assert_eq!(tables.as_object().unwrap().len(), usize::from(m != Method::Simsiam), "{m:?}: {tables}");
            assert_eq!(s.predictor.is_some(), matches!(m, Method::Byol | Method::Simsiam));
            assert!(crate::validate::validate(&s).is_ok(), "{m:?}: {:?}", crate::validate::validate(&s));
        }
        assert!("vicrag".parse::<Method>().unwrap_err().contains("barlow-twins"));
    }
}
