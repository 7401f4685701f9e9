use thiserror::Error;

/// What can go wrong when a loss is evaluated.
#[derive(Debug, Error)]
pub enum Error {
    /// The embeddings handed to a loss do not have the shape it needs.
    #[error("{loss}: {what}")]
    Shape { loss: &'static str, what: String },
    /// A loss parameter that cannot work with these embeddings.
    #[error("{loss}: {what}")]
    Config { loss: &'static str, what: String },
    /// A loss parameter outside what the loss accepts, or that cannot work with this batch.
    #[error("{loss}: {field}: {what}")]
    Parameter { loss: &'static str, field: &'static str, what: String },
    /// W-MSE whitening met a covariance matrix that has no Cholesky factor.
    #[error(
        "w-mse: the covariance of a whitening sub-batch is not positive definite (w_size {w_size}, emb {emb}, \
         eps {eps}): {w_size} rows span at most {} dimensions; use w_size ≈ 2 × emb (w_size > emb is required) \
         or a shrinkage eps > 0",
        w_size.saturating_sub(1)
    )]
    NotPositiveDefinite { w_size: usize, emb: usize, eps: f64 },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// The loss parameter the error is about, where it is about one.
    pub fn parameter(&self) -> Option<&'static str> {
        match self {
            Error::Parameter { field, .. } => Some(field),
            Error::NotPositiveDefinite { .. } => Some("w_size"),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
