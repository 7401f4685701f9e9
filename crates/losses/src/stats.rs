//! Batch statistics shared by several losses (and by the collapse diagnostics).

use candle_core::{Result, Tensor, D};

/// Columns centred on their batch mean: `Z − Z̄` for an `(N, D)` matrix.
pub fn centre(z: &Tensor) -> Result<Tensor> {
    z.broadcast_sub(&z.mean_keepdim(0)?)
}

/// Unbiased per-dimension variance of an `(N, D)` matrix: `Σ_n (z − z̄)² / (N − 1)`, shape `(D,)`.
pub fn variance_unbiased(z: &Tensor) -> Result<Tensor> {
    let n = z.dim(0)? as f64;
    centre(z)?.sqr()?.sum(0)? / (n - 1.0)
}

/// Unbiased covariance `(Z − Z̄)ᵀ(Z − Z̄) / (N − 1)`, shape `(D, D)`.
pub fn covariance_unbiased(z: &Tensor) -> Result<Tensor> {
    let n = z.dim(0)? as f64;
    let zc = centre(z)?;
    zc.t()?.matmul(&zc)? / (n - 1.0)
}

/// Sum of the squared off-diagonal entries of a square matrix.
pub fn off_diagonal_square_sum(m: &Tensor) -> Result<Tensor> {
    let all = m.sqr()?.sum_all()?;
    let n = m.dim(0)?;
    let eye = Tensor::eye(n, m.dtype(), m.device())?;
    let diagonal = (m * eye)?.sum(D::Minus1)?;
    all - diagonal.sqr()?.sum_all()?
}
