//! The runner ties the lower crates together: experiment files → [`RunSpec`]s → training and
//! evaluation → the SQLite results store.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
mod error;
pub mod estimate;
pub mod eval;
pub mod export;
pub mod human;
pub mod inspect;
pub mod machine;
pub mod method;
pub mod optim;
pub mod plan;
pub mod probe;
pub mod slurm;
pub mod spec;
pub mod store;
pub mod sweep;
pub mod train;
mod validate;

pub use config::{ExperimentFile, Override};
pub use error::{Error, Result};
pub use spec::RunSpec;
pub use store::Store;
pub use train::{execute, RunContext, RunOutcome};

pub use candle_core::Device;

/// The CPU: runs train there unless their `train.device` (or `--device`) says `cuda`.
pub fn default_device() -> Device {
    Device::Cpu
}
