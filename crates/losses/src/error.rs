use thiserror::Error;

/// What can go wrong when a loss is evaluated.
#[derive(Debug, Error)]
pub enum Error {
    /// The embeddings handed to a loss do not have the shape it needs.
    #[error("{loss}: {what}")]
    Shape { loss: &'static str, what: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
