//! Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021).
//!
//! For two views' embeddings `Z_A`, `Z_B` of shape `(N, D)`:
//!
//! - each view standardised per dimension on its own batch statistics,
//!   `ẑ = (z − mean) / sqrt(var_biased + 1e-5)` (the authors' `BatchNorm1d(affine=False)`);
//! - cross-correlation `C = ẑ_Aᵀ ẑ_B / N`, `(D, D)`;
//! - `L = Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij²`, λ = 0.0051.
//!
//! The authors' projector has no biases (`Linear(bias=False) → BN → ReLU`, last `Linear(bias=False)`);
//! that is the runner's business. solo-learn's `scale_loss` (0.1 on CIFAR) is not applied: it
//! rescales the loss, which the authors do not.

use candle_core::Tensor;

use crate::stats::{centre, column_sums, cross_product_diagonal, off_diagonal_cross_square_sum, repeat_rows};
use crate::vicreg::check_pair;
use crate::Result;

/// The authors' λ, weight of the redundancy-reduction (off-diagonal) term.
pub const DEFAULT_LAMBDA: f64 = 0.0051;
/// BatchNorm1d's eps in the standardisation.
pub const STANDARDISE_EPS: f64 = 1e-5;

/// The weighted loss and its unweighted terms, each a scalar tensor.
#[derive(Debug, Clone)]
pub struct BarlowTwinsTerms {
    /// `on_diagonal + λ off_diagonal`; the value to differentiate.
    pub loss: Tensor,
    /// `Σ_i (1 − C_ii)²` (invariance).
    pub on_diagonal: Tensor,
    /// `Σ_{i≠j} C_ij²` (redundancy reduction), before λ.
    pub off_diagonal: Tensor,
}

/// Per-dimension standardisation on the batch's own statistics with the biased variance.
pub fn standardise(z: &Tensor, eps: f64) -> Result<Tensor> {
    let n = z.dim(0)?;
    let zc = centre(z)?;
    let var = (column_sums(&zc.sqr()?)? / n as f64)?;
    Ok((zc * repeat_rows(&(var + eps)?.sqrt()?.recip()?, n)?)?)
}

/// `C = ẑ_Aᵀ ẑ_B / N` of two standardised views, as a `(D, D)` matrix. The loss never forms it
/// (see [`on_diagonal`], [`off_diagonal`]); this is the reference they are tested against.
pub fn cross_correlation(za: &Tensor, zb: &Tensor) -> Result<Tensor> {
    let n = za.dim(0)? as f64;
    Ok((za.t()?.matmul(zb)? / n)?)
}

/// `Σ_i (1 − C_ii)²` of two standardised views, from C's diagonal alone.
pub fn on_diagonal(za: &Tensor, zb: &Tensor) -> Result<Tensor> {
    let n = za.dim(0)? as f64;
    let diagonal = (cross_product_diagonal(za, zb)? / n)?;
    Ok(diagonal.affine(-1.0, 1.0)?.sqr()?.sum_all()?)
}

/// `Σ_{i≠j} C_ij²` of two standardised views, through the `(N, N)` Gram matrices when N < D
/// (O(N²D) instead of O(ND²): the authors' D = 8192 projector would otherwise need a 256 MB
/// matrix and its gradient).
pub fn off_diagonal(za: &Tensor, zb: &Tensor) -> Result<Tensor> {
    let n = za.dim(0)? as f64;
    Ok((off_diagonal_cross_square_sum(za, zb)? / (n * n))?)
}

/// The Barlow Twins loss of two views, as the authors compute it.
pub fn barlow_twins(za: &Tensor, zb: &Tensor, lambda: f64) -> Result<BarlowTwinsTerms> {
    check_pair("barlow-twins", za, zb)?;
    let (za, zb) = (standardise(za, STANDARDISE_EPS)?, standardise(zb, STANDARDISE_EPS)?);
    let on_diagonal = on_diagonal(&za, &zb)?;
    let off_diagonal = off_diagonal(&za, &zb)?;
    let loss = (&on_diagonal + off_diagonal.affine(lambda, 0.0)?)?;
    Ok(BarlowTwinsTerms { loss, on_diagonal, off_diagonal })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_gradients_match, mat, scalar};
    use candle_core::Device;

    /// Hand-computed: A = [[1, 0], [−1, 2]], B = [[0, 1], [2, 3]] (N = 2).
    /// Standardised (biased var, eps 1e-5): every column becomes (±s) with s = 1/sqrt(1 + 1e-5)
    /// times the sign of its deviation: Â = [[s, −s], [−s, s]], B̂ = [[−s, −s], [s, s]].
    /// C = ÂᵀB̂ / 2 = s² [[−1, −1], [1, 1]]. On-diagonal (1 + s²)² + (1 − s²)²; off 2 s⁴.
    #[test]
    fn matches_hand_computed_case() {
        let a = mat(&[&[1.0, 0.0], &[-1.0, 2.0]]);
        let b = mat(&[&[0.0, 1.0], &[2.0, 3.0]]);
        let t = barlow_twins(&a, &b, DEFAULT_LAMBDA).unwrap();
        let s2 = 1.0 / (1.0 + 1e-5);
        let on = (1.0 + s2) * (1.0 + s2) + (1.0 - s2) * (1.0 - s2);
        let off = 2.0 * s2 * s2;
        assert!((scalar(&t.on_diagonal) - on).abs() < 1e-12);
        assert!((scalar(&t.off_diagonal) - off).abs() < 1e-12);
        assert!((scalar(&t.loss) - (on + DEFAULT_LAMBDA * off)).abs() < 1e-12);
    }

    /// Identical views: C is the correlation matrix of one view, whose diagonal is
    /// var / (var + eps) ≈ 1, so the on-diagonal term vanishes (to eps).
    #[test]
    fn identical_views_have_no_on_diagonal_loss() {
        let a = mat(&[&[1.0, 4.0, 0.5], &[-2.0, 0.0, 1.5], &[0.5, -1.0, -3.0], &[3.0, 2.0, 0.0]]);
        let t = barlow_twins(&a, &a, DEFAULT_LAMBDA).unwrap();
        assert!(scalar(&t.on_diagonal) < 1e-9, "{}", scalar(&t.on_diagonal));
        assert!(scalar(&t.off_diagonal) > 0.01);
    }

    /// N ≥ D and N < D (the Gram-matrix path).
    #[test]
    fn gradient_matches_finite_differences() {
        assert_gradients_match(6, 4, 2, |v| barlow_twins(&v[0], &v[1], DEFAULT_LAMBDA).unwrap().loss);
        assert_gradients_match(4, 7, 2, |v| barlow_twins(&v[0], &v[1], DEFAULT_LAMBDA).unwrap().loss);
    }

    /// Both terms equal the explicit `(D, D)` cross-correlation's when N < D.
    #[test]
    fn terms_equal_the_explicit_cross_correlation_when_wider_than_the_batch() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f64, 1.0, (5, 9), &dev).unwrap();
        let b = Tensor::randn(0f64, 1.0, (5, 9), &dev).unwrap();
        let t = barlow_twins(&a, &b, DEFAULT_LAMBDA).unwrap();
        let c =
            cross_correlation(&standardise(&a, STANDARDISE_EPS).unwrap(), &standardise(&b, STANDARDISE_EPS).unwrap())
                .unwrap();
        let eye = Tensor::eye(9, c.dtype(), &dev).unwrap();
        let diagonal = (&c * &eye).unwrap().sum(1).unwrap();
        let on = scalar(&diagonal.affine(-1.0, 1.0).unwrap().sqr().unwrap().sum_all().unwrap());
        let off = scalar(&crate::stats::off_diagonal_square_sum(&c).unwrap());
        assert!((scalar(&t.on_diagonal) - on).abs() < 1e-10 * on, "{} vs {on}", scalar(&t.on_diagonal));
        assert!((scalar(&t.off_diagonal) - off).abs() < 1e-10 * off, "{} vs {off}", scalar(&t.off_diagonal));
    }
}
