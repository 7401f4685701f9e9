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

/// Effective rank (Roy & Vetterli 2007; RankMe, Garrido et al. 2023) of an `(N, D)` embedding
/// matrix: `exp(−Σ_k p_k log p_k)` with `p_k = σ_k / Σ σ` over its singular values σ. Between 1
/// (collapsed onto a line) and min(N, D) (all directions used equally). A diagnostic: f64, no
/// gradient. The singular values come from the eigenvalues of the smaller Gram matrix.
pub fn effective_rank(z: &Tensor) -> Result<f64> {
    let (n, d) = z.dims2()?;
    let z = z.detach().to_dtype(candle_core::DType::F64)?;
    let gram = if n <= d { z.matmul(&z.t()?)? } else { z.t()?.matmul(&z)? };
    let k = n.min(d);
    let values: Vec<f64> = gram.flatten_all()?.to_vec1()?;
    let eig = nalgebra::SymmetricEigen::new(nalgebra::DMatrix::from_row_slice(k, k, &values));
    let sigma: Vec<f64> = eig.eigenvalues.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let total: f64 = sigma.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return Ok(if total == 0.0 { 0.0 } else { f64::NAN });
    }
    let entropy: f64 = sigma.iter().map(|s| s / total).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
    Ok(entropy.exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn effective_rank_by_hand() {
        let dev = Device::Cpu;
        // Two orthogonal directions with equal singular values: rank 2.
        let equal = Tensor::new(&[[2.0f64, 0.0, 0.0], [0.0, 2.0, 0.0]], &dev).unwrap();
        assert!((effective_rank(&equal).unwrap() - 2.0).abs() < 1e-9);
        // Every row on one line: rank 1.
        let line = Tensor::new(&[[1.0f64, 2.0], [2.0, 4.0], [-1.0, -2.0]], &dev).unwrap();
        assert!((effective_rank(&line).unwrap() - 1.0).abs() < 1e-6);
        // Singular values 3 and 1: p = (¾, ¼), exp(H) = exp(−¾ ln ¾ − ¼ ln ¼) ≈ 1.7548.
        let skew = Tensor::new(&[[3.0f64, 0.0], [0.0, 1.0], [0.0, 0.0]], &dev).unwrap();
        let want = (-(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln())).exp();
        assert!((effective_rank(&skew).unwrap() - want).abs() < 1e-9);
    }
}
