use std::path::PathBuf;
use thiserror::Error;

/// Everything that can be wrong with a dataset on disk or a request for its pixels.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{dataset}: missing {path}\n  expected: {expected}\n  get it: {hint}")]
    Missing { dataset: &'static str, path: PathBuf, expected: String, hint: String },
    #[error(
        "{dataset}: {path} has {actual} bytes, expected {expected} bytes ({records} records of \
         {record_len} bytes); the file is truncated or not the official binary version\n  get it: {hint}"
    )]
    Size {
        dataset: &'static str,
        path: PathBuf,
        actual: u64,
        expected: u64,
        records: usize,
        record_len: usize,
        hint: String,
    },
    #[error("{dataset}: {path}: record {record} has label {label}, expected 0..{classes}")]
    Label { dataset: &'static str, path: PathBuf, record: usize, label: u8, classes: usize },
    /// A pickled file of CIFAR's python version that is not what torchvision downloads.
    #[error("{dataset}: {path}: {what}\n  get it: {hint}")]
    Pickle { dataset: &'static str, path: PathBuf, what: String, hint: String },
    #[error("{dataset}: {path}: {what}")]
    Format { dataset: &'static str, path: PathBuf, what: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{dataset} has no split `{split}`: expected one of {expected}")]
    Split { dataset: &'static str, split: String, expected: String },
    #[error("unknown dataset `{name}`: expected one of {known}", name = .0, known = crate::Dataset::names())]
    UnknownDataset(String),
    #[error("cannot download {url}: {what}")]
    Network { url: String, what: String },
    #[error(
        "cannot download {url}: {what}\n  without network: download it on another machine and put it at {archive} \
         (fetch then verifies and extracts it), or extract it yourself so that {dest} exists"
    )]
    Offline { url: String, what: String, archive: PathBuf, dest: PathBuf },
    #[error("{path}: MD5 {got}, expected the published {expected}; the file was not the official archive (a partial download was deleted: run the command again)")]
    Checksum { path: PathBuf, got: String, expected: String },
    /// A request that cannot be met (an index out of range, a missing argument).
    #[error("{0}")]
    Request(String),
    #[error("augmentation: {0}")]
    Augment(String),
}

pub type Result<T> = std::result::Result<T, Error>;
