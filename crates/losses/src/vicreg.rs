//! VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, ICLR 2022).
//!
//! For two views' embeddings `Z_A`, `Z_B` of shape `(N, D)`:
//!
//! - invariance `s = mean over N·D of (z_A − z_B)²`;
//! - variance `v(Z) = mean_j max(0, γ − sqrt(Var(z^j) + ε))`, unbiased variance, γ = 1, ε = 1e-4;
//! - covariance `c(Z) = (1/D) Σ_{i≠j} C(Z)_ij²`, `C(Z) = (Z − Z̄)ᵀ(Z − Z̄)/(N − 1)`;
//! - `L = λ s + μ [v(Z_A) + v(Z_B)] / 2 + ν [c(Z_A) + c(Z_B)]`, λ = μ = 25, ν = 1.
//!
//! The variance term is halved per branch and the covariance term is not: that is what the
//! authors' released code computes (`facebookresearch/vicreg`, `main_vicreg.py`), and it is what
//! this module computes. Each branch is regularised on its own statistics, which is why VICReg
//! also works when the branches do not share weights.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::stats::{centre, off_diagonal_cross_square_sum, variance_unbiased};
use crate::{Error, Result};

/// The coefficients of the three terms and the constants inside the variance hinge: a VICReg
/// run's `[vicreg]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicregWeights {
    /// λ, weight of the invariance term (25).
    pub sim_coeff: f64,
    /// μ, weight of the variance term (25).
    pub std_coeff: f64,
    /// ν, weight of the covariance term (1).
    pub cov_coeff: f64,
    /// γ, the target standard deviation of each dimension (1).
    pub gamma: f64,
    /// ε, added to the variance before the square root (1e-4).
    pub eps: f64,
}

impl Default for VicregWeights {
    fn default() -> Self {
        Self { sim_coeff: 25.0, std_coeff: 25.0, cov_coeff: 1.0, gamma: 1.0, eps: 1e-4 }
    }
}

/// The weighted loss and its unweighted terms, each a scalar tensor.
#[derive(Debug, Clone)]
pub struct VicregTerms {
    /// `λ s + μ v + ν c`; the value to differentiate.
    pub loss: Tensor,
    /// `s`, before weighting.
    pub invariance: Tensor,
    /// `[v(Z_A) + v(Z_B)] / 2`, before weighting.
    pub variance: Tensor,
    /// `c(Z_A) + c(Z_B)`, before weighting.
    pub covariance: Tensor,
}

/// Mean squared difference between the two views' embeddings, over all N·D entries.
pub fn invariance(za: &Tensor, zb: &Tensor) -> Result<Tensor> {
    Ok((za - zb)?.sqr()?.mean_all()?)
}

/// `mean_j max(0, γ − sqrt(Var(z^j) + ε))` with the unbiased per-dimension variance.
pub fn variance(z: &Tensor, gamma: f64, eps: f64) -> Result<Tensor> {
    let std = (variance_unbiased(z)? + eps)?.sqrt()?;
    Ok(std.affine(-1.0, gamma)?.relu()?.mean_all()?)
}

/// `(1/D) Σ_{i≠j} C_ij²` of the unbiased covariance matrix `C = Z_cᵀZ_c / (N − 1)`, computed
/// without forming C when N < D (see [`off_diagonal_cross_square_sum`]).
pub fn covariance(z: &Tensor) -> Result<Tensor> {
    let (n, d) = z.dims2()?;
    let zc = centre(z)?;
    let scale = ((n - 1) * (n - 1) * d) as f64;
    Ok((off_diagonal_cross_square_sum(&zc, &zc)? / scale)?)
}

/// The VICReg loss of two views, as the authors compute it.
pub fn vicreg(za: &Tensor, zb: &Tensor, w: &VicregWeights) -> Result<VicregTerms> {
    check_pair("vicreg", za, zb)?;
    let invariance = invariance(za, zb)?;
    let variance = ((variance(za, w.gamma, w.eps)? + variance(zb, w.gamma, w.eps)?)? * 0.5)?;
    let covariance = (covariance(za)? + covariance(zb)?)?;
    let loss = ((invariance.affine(w.sim_coeff, 0.0)? + variance.affine(w.std_coeff, 0.0)?)?
        + covariance.affine(w.cov_coeff, 0.0)?)?;
    Ok(VicregTerms { loss, invariance, variance, covariance })
}

/// Two `(N, D)` matrices of the same shape with N ≥ 2 (an unbiased variance needs two rows).
pub(crate) fn check_pair(loss: &'static str, za: &Tensor, zb: &Tensor) -> Result<()> {
    if za.rank() != 2 || za.dims() != zb.dims() {
        return Err(Error::Shape {
            loss,
            what: format!("expected two (N, D) matrices of the same shape, got {:?} and {:?}", za.dims(), zb.dims()),
        });
    }
    if za.dim(0)? < 2 {
        return Err(Error::Shape {
            loss,
            what: format!("needs at least 2 rows per view (unbiased variance), got {}", za.dim(0)?),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use rand::{Rng, SeedableRng};

    fn mat(rows: &[&[f64]]) -> Tensor {
        let n = rows.len();
        let d = rows[0].len();
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (n, d), &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Hand-computed: A = [[0,0],[2,2]], B = [[1,0],[1,2]].
    /// s = ((1 + 0) + (1 + 0)) / 4 = 0.5.
    /// Var(A) = (2, 2) (unbiased, N=2), std = sqrt(2.0001) > 1, so v(A) = 0;
    /// Var(B) = (0, 2): dim 0 gives max(0, 1 − sqrt(1e-4)) = 0.99, dim 1 gives 0: v(B) = 0.495.
    /// C(A) = [[2,2],[2,2]]: off-diagonal squares 8, /D = 4. C(B) = [[0,0],[0,2]]: 0.
    #[test]
    fn matches_hand_computed_case() {
        let a = mat(&[&[0.0, 0.0], &[2.0, 2.0]]);
        let b = mat(&[&[1.0, 0.0], &[1.0, 2.0]]);
        let t = vicreg(&a, &b, &VicregWeights::default()).unwrap();
        assert!((scalar(&t.invariance) - 0.5).abs() < 1e-12);
        assert!((scalar(&t.variance) - 0.495 / 2.0).abs() < 1e-12);
        assert!((scalar(&t.covariance) - 4.0).abs() < 1e-12);
        let expected = 25.0 * 0.5 + 25.0 * 0.2475 + 4.0;
        assert!((scalar(&t.loss) - expected).abs() < 1e-9, "{}", scalar(&t.loss));
    }

    #[test]
    fn covariance_is_zero_for_decorrelated_dimensions() {
        // Columns with zero sample covariance.
        let z = mat(&[&[1.0, 1.0], &[-1.0, 1.0], &[1.0, -1.0], &[-1.0, -1.0]]);
        assert!(scalar(&covariance(&z).unwrap()).abs() < 1e-12);
    }

    /// The covariance term equals the explicit `(D, D)` computation when N < D.
    #[test]
    fn covariance_equals_the_explicit_matrix_when_wider_than_the_batch() {
        let z = Tensor::randn(0f64, 1.0, (5, 9), &Device::Cpu).unwrap();
        let explicit = crate::stats::off_diagonal_square_sum(&crate::stats::covariance_unbiased(&z).unwrap()).unwrap();
        let want = scalar(&explicit) / 9.0;
        let got = scalar(&covariance(&z).unwrap());
        assert!((got - want).abs() < 1e-10 * want, "{got} vs {want}");
    }

    #[test]
    fn rejects_mismatched_or_single_row_views() {
        let a = mat(&[&[0.0, 0.0], &[2.0, 2.0]]);
        let b = mat(&[&[1.0, 0.0, 3.0], &[1.0, 2.0, 3.0]]);
        assert!(vicreg(&a, &b, &VicregWeights::default()).is_err());
        let one = mat(&[&[1.0, 2.0]]);
        let err = vicreg(&one, &one, &VicregWeights::default()).unwrap_err();
        assert!(err.to_string().contains("at least 2 rows"), "{err}");
    }

    /// The autograd gradient of the full loss equals central finite differences (f64).
    #[test]
    fn gradient_matches_finite_differences() {
        for (n, d) in [(6, 4), (4, 7)] {
            gradient_matches_finite_differences_at(n, d);
        }
    }

    /// N ≥ D forms the covariance matrix; N < D goes through the Gram matrices.
    fn gradient_matches_finite_differences_at(n: usize, d: usize) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut draw = || -> Vec<f64> { (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let a0 = draw();
        let b0 = draw();
        let w = VicregWeights::default();
        let dev = Device::Cpu;
        let loss_of = |a: &[f64], b: &[f64]| -> f64 {
            let ta = Tensor::from_slice(a, (n, d), &dev).unwrap();
            let tb = Tensor::from_slice(b, (n, d), &dev).unwrap();
            scalar(&vicreg(&ta, &tb, &w).unwrap().loss)
        };
        let va = Var::from_slice(&a0, (n, d), &dev).unwrap();
        let vb = Var::from_slice(&b0, (n, d), &dev).unwrap();
        let loss = vicreg(va.as_tensor(), vb.as_tensor(), &w).unwrap().loss;
        let grads = loss.backward().unwrap();
        let ga: Vec<f64> = grads.get(&va).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let gb: Vec<f64> = grads.get(&vb).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for i in 0..n * d {
            let mut ap = a0.clone();
            let mut am = a0.clone();
            ap[i] += h;
            am[i] -= h;
            let fd = (loss_of(&ap, &b0) - loss_of(&am, &b0)) / (2.0 * h);
            assert!((fd - ga[i]).abs() < 1e-5 * (1.0 + fd.abs()), "dA[{i}]: {fd} vs {}", ga[i]);
            let mut bp = b0.clone();
            let mut bm = b0.clone();
            bp[i] += h;
            bm[i] -= h;
            let fd = (loss_of(&a0, &bp) - loss_of(&a0, &bm)) / (2.0 * h);
            assert!((fd - gb[i]).abs() < 1e-5 * (1.0 + fd.abs()), "dB[{i}]: {fd} vs {}", gb[i]);
        }
    }
}
