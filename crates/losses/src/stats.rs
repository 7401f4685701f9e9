//! Batch statistics shared by several losses (and by the collapse diagnostics).

use candle_core::{Result, Tensor, D};

/// Column sums of an `(N, D)` matrix as a `(1, D)` row, through a product with a row of ones:
/// candle reduces over dim 0 with a strided scalar loop, which was 27 % of the VICReg and Barlow
/// Twins losses' time (forward and backward, N = 256, D = 2048); the GEMM is not.
pub fn column_sums(z: &Tensor) -> Result<Tensor> {
    Tensor::ones((1, z.dim(0)?), z.dtype(), z.device())?.matmul(z)
}

/// A `(1, D)` row repeated into `n` rows, through a product with a column of ones, so that its
/// gradient (the column sums of the incoming one) is a GEMM too rather than candle's broadcast
/// reduction.
pub fn repeat_rows(row: &Tensor, n: usize) -> Result<Tensor> {
    Tensor::ones((n, 1), row.dtype(), row.device())?.matmul(row)
}

/// Columns centred on their batch mean: `Z − Z̄` for an `(N, D)` matrix.
pub fn centre(z: &Tensor) -> Result<Tensor> {
    let n = z.dim(0)?;
    z - repeat_rows(&(column_sums(z)? / n as f64)?, n)?
}

/// Unbiased per-dimension variance of an `(N, D)` matrix: `Σ_n (z − z̄)² / (N − 1)`, shape `(D,)`.
pub fn variance_unbiased(z: &Tensor) -> Result<Tensor> {
    let (n, d) = z.dims2()?;
    (column_sums(&centre(z)?.sqr()?)? / (n as f64 - 1.0))?.reshape(d)
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

/// `‖AᵀB‖²_F` of two `(N, D)` matrices without forming the `(D, D)` product when N < D:
/// `‖AᵀB‖²_F = tr(BᵀA·AᵀB) = tr(AAᵀ·BBᵀ) = Σ (AAᵀ ⊙ BBᵀ)`, two `(N, N)` Gram matrices.
/// That is O(N²D) multiply-adds instead of O(ND²) and no D² memory: at N = 256, D = 2048 the
/// VICReg loss and its gradient took 818 ms through the `(D, D)` covariance, half of a width-0.25
/// training step. Pass the same tensor twice for `‖AᵀA‖²_F` (one Gram matrix).
pub fn cross_product_square_sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (n, d) = a.dims2()?;
    if n >= d {
        return a.t()?.matmul(b)?.sqr()?.sum_all();
    }
    let gram_a = a.matmul(&a.t()?)?;
    if a.id() == b.id() {
        return gram_a.sqr()?.sum_all();
    }
    (gram_a * b.matmul(&b.t()?)?)?.sum_all()
}

/// The diagonal of `AᵀB` for two `(N, D)` matrices, `Σ_n a_ni b_ni`, shape `(D,)`.
pub fn cross_product_diagonal(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    column_sums(&(a * b)?)?.reshape(a.dim(1)?)
}

/// `Σ_{i≠j} (AᵀB)_ij²` of two `(N, D)` matrices: [`cross_product_square_sum`] less the squared
/// diagonal. Equals [`off_diagonal_square_sum`] of `AᵀB` without forming it.
pub fn off_diagonal_cross_square_sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    cross_product_square_sum(a, b)? - cross_product_diagonal(a, b)?.sqr()?.sum_all()?
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

    /// Through the Gram matrices (N < D) and through the `(D, D)` product (N ≥ D), the
    /// off-diagonal square sum equals the explicit matrix's, for two matrices and for one.
    #[test]
    fn off_diagonal_cross_square_sum_equals_the_explicit_product() {
        let dev = Device::Cpu;
        for (n, d) in [(5, 12), (12, 5), (7, 7)] {
            let a = Tensor::randn(0f64, 1.0, (n, d), &dev).unwrap();
            let b = Tensor::randn(0f64, 1.0, (n, d), &dev).unwrap();
            for (x, y) in [(&a, &b), (&a, &a)] {
                let explicit = off_diagonal_square_sum(&x.t().unwrap().matmul(y).unwrap()).unwrap();
                let fast = off_diagonal_cross_square_sum(x, y).unwrap();
                let (e, f) = (explicit.to_scalar::<f64>().unwrap(), fast.to_scalar::<f64>().unwrap());
                assert!((e - f).abs() < 1e-10 * e.abs(), "N {n} D {d}: {e} vs {f}");
                assert!(e > 1.0, "a random product has off-diagonal mass: {e}");
            }
        }
    }

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
