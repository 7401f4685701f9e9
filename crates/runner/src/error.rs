use std::path::PathBuf;
use thiserror::Error;

/// Everything the runner reports: the file, the field and what was expected wherever they are known.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: {what}")]
    Experiment { path: PathBuf, what: String },
    /// A field of an experiment file, with its line and column where the file sets it.
    #[error("{}: field `{field}`: {what}", located(path, *at))]
    Field { path: PathBuf, at: Option<(usize, usize)>, field: String, what: String },
    /// A command-line option that does not fit the experiment (`--only`, `--shard`, `--seeds`).
    #[error("{option}: {what}")]
    Option { option: String, what: String },
    #[error("--set {arg}: {what}")]
    Override { arg: String, what: String },
    #[error("results database {path}: {source}")]
    Store { path: PathBuf, source: rusqlite::Error },
    #[error("results database {path}: {what}")]
    StoreSchema { path: PathBuf, what: String },
    #[error("run {run}: {what}")]
    Run { run: String, what: String },
    #[error(transparent)]
    Data(#[from] infomax_data::Error),
    #[error(transparent)]
    Model(#[from] infomax_model::Error),
    #[error(transparent)]
    Loss(#[from] infomax_losses::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An input file (e.g. a `.npy` view) that cannot be used.
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// SIGINT or SIGTERM arrived: the run stopped after a step and can be resumed.
    #[error("interrupted at epoch {epoch}, step {step}; the same command resumes from the last checkpoint")]
    Interrupted { epoch: usize, step: usize },
}

/// `file:line:column` when the place is known, else the file.
fn located(path: &std::path::Path, at: Option<(usize, usize)>) -> String {
    match at {
        Some((line, column)) => format!("{}:{line}:{column}", path.display()),
        None => path.display().to_string(),
    }
}

pub type Result<T> = std::result::Result<T, Error>;
