use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("model config: {field}: {what}")]
    Config { field: &'static str, what: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
