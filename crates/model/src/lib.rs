//! Encoders and heads, built through candle's `VarBuilder` (`vb.pp("layer1")`), as plain structs
//! implementing `ModuleT` (training flag for BatchNorm).

pub mod batch_norm;
pub mod conv;
mod cpu;
mod error;
pub mod init;
pub mod linear;
pub mod max_pool;
pub mod mlp;
pub mod resnet;

pub use conv::{ActLayout, Conv2d, ConvKernels};
pub use error::{Error, Result};
pub use init::SeededVarMap;
pub use mlp::{Mlp, MlpConfig};
pub use resnet::{ResNet, ResNetConfig, ARCHS};

use candle_core::{DType, Tensor};

/// The arithmetic of convolutions and matrix products: f32, or bf16 as PyTorch's autocast does
/// it — operands cast to bfloat16, the product cast back to the input's type. Weights, BatchNorm
/// and everything after the heads stay f32. On a CPU with AVX512-BF16 the convolutions run
/// channels-last and the kernels that have bf16 products (Winograd's, and the im2col GEMMs that
/// take the downsampling convolutions) multiply bf16 operands into f32 sums on `vdpbf16ps`, as do
/// the heads' linear layers (`linear::takes_bf16`); the other convolutions run in f32.
/// candle's CPU kernels have no bf16 products, so on a CPU without them the operands and the
/// product are rounded to bf16 and the product runs in f32: the numbers of a GPU's bf16 product
/// (bf16 operands, f32 accumulation, a bf16 result). A run's `train.precision`: `f32` or `bf16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("`f32` or `bf16` expected, got `{other}`")),
        }
    }
}

impl Precision {
    /// `op` on `a` and `b` in this precision, its result in `a`'s type.
    pub fn apply(
        self,
        a: &Tensor,
        b: &Tensor,
        op: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        match self {
            Precision::F32 => op(a, b),
            // Rounding f32 products would cost more than the bf16 kernels save.
            Precision::Bf16 if a.device().is_cpu() && conv::bf16_products() => op(a, b),
            Precision::Bf16 if a.device().is_cpu() => {
                let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(a.dtype());
                round(&op(&round(a)?, &round(b)?)?)
            }
            Precision::Bf16 => op(&a.to_dtype(DType::BF16)?, &b.to_dtype(DType::BF16)?)?.to_dtype(a.dtype()),
        }
    }
}
