//! Encoders and heads, built through candle's `VarBuilder` (`vb.pp("layer1")`), as plain structs
//! implementing `ModuleT` (training flag for BatchNorm).

pub mod batch_norm;
pub mod conv;
mod cpu;
mod error;
pub mod init;
pub mod max_pool;
pub mod mlp;
pub mod resnet;

pub use conv::{ActLayout, Conv2d, ConvImpl};
pub use error::{Error, Result};
pub use init::SeededVarMap;
pub use mlp::{Mlp, MlpConfig};
pub use resnet::{ResNet, ResNetConfig};
