//! The runner ties the lower crates together: experiment files → [`RunConfig`]s → training and
//! evaluation → the SQLite results store.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod environment;
mod error;
pub mod estimate;
pub mod eval;
pub mod experiment;
pub mod export_encoder;
pub mod human;
pub mod loss;
pub mod method;
pub mod npy;
pub mod optim;
pub mod plan;
pub mod probe;
pub mod slurm;
pub mod store;
pub mod sweep;
pub mod tensorboard;
pub mod train;
pub mod validate;
pub mod watch;

pub use config::RunConfig;
pub use error::{Error, Result};
pub use experiment::{ExperimentFile, Override};
pub use store::Store;
pub use train::{execute, RunContext, RunOutcome};

pub use candle_core::Device;

/// The CPU: runs train there unless their `train.device` (or `--device`) says `cuda`.
pub fn default_device() -> Device {
    Device::Cpu
}
