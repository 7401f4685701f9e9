//! SimCLR's NT-Xent loss (Chen, Kornblith, Norouzi & Hinton, ICML 2020), as the W-MSE authors'
//! `contrastive_loss` computes it (their SimCLR baseline, `htdt/self-supervised`).
//!
//! For two views A, B with rows L2-normalised:
//! `logits_AB = z_A z_Bᵀ / τ`, `logits_AA = z_A z_Aᵀ / τ` with its diagonal masked out (−1e9, as
//! the authors do), and
//! `L = ½ [CE([logits_AB | logits_AA], n) + CE([logits_BA | logits_BB], n)]`, τ = 0.5
//! (solo-learn uses 0.2). With d > 2 views: the mean over the d(d−1)/2 pairs.
//! For perfectly aligned views it equals `mean_n log(1 + Σ_negatives e^{(cos − 1)/τ})`, which
//! tends to 0 as the rows separate or τ falls.

use candle_core::{Tensor, D};

use crate::distance::l2_normalise;
use crate::Result;

/// The W-MSE authors' temperature.
pub const DEFAULT_TAU: f64 = 0.5;
/// What the authors subtract from the self-similarity diagonal.
const MASK: f64 = 1e9;

/// Row-wise `logsumexp`, stable (the row maximum is subtracted, without gradient).
fn logsumexp_rows(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    Ok((x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(D::Minus1)?)
}

/// `CE([a bᵀ/τ | a aᵀ/τ − mask], n)` averaged over rows, for L2-normalised `a`, `b`.
fn cross_entropy_one_way(a: &Tensor, b: &Tensor, tau: f64) -> Result<Tensor> {
    let n = a.dim(0)?;
    let eye = Tensor::eye(n, a.dtype(), a.device())?;
    let ab = (a.matmul(&b.t()?)? / tau)?;
    let aa = ((a.matmul(&a.t()?)? / tau)? - (eye * MASK)?)?;
    let positive = ((a * b)?.sum(D::Minus1)? / tau)?;
    Ok((logsumexp_rows(&Tensor::cat(&[&ab, &aa], 1)?)? - positive)?.mean_all()?)
}

/// NT-Xent of two views.
pub fn nt_xent(za: &Tensor, zb: &Tensor, tau: f64) -> Result<Tensor> {
    crate::vicreg::check_pair("simclr", za, zb)?;
    let a = l2_normalise(za)?;
    let b = l2_normalise(zb)?;
    Ok(((cross_entropy_one_way(&a, &b, tau)? + cross_entropy_one_way(&b, &a, tau)?)? * 0.5)?)
}

/// NT-Xent averaged over all view pairs.
pub fn simclr(views: &[Tensor], tau: f64) -> Result<Tensor> {
    crate::check_views("simclr", views)?;
    crate::mean_over_pairs(views.len(), |i, j| nt_xent(&views[i], &views[j], tau))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_gradients_match, mat, scalar};

    /// Two rows, views identical and orthogonal rows: for row 0 the logits are
    /// [1/τ, 0 | −mask, 0] → CE = log(e^{1/τ} + 2) − 1/τ (the masked entry contributes nothing).
    #[test]
    fn matches_hand_computed_case() {
        let a = mat(&[&[1.0, 0.0], &[0.0, 2.0]]);
        let tau = 0.5;
        let want = ((1.0f64 / tau).exp() + 2.0).ln() - 1.0 / tau;
        assert!((scalar(&nt_xent(&a, &a, tau).unwrap()) - want).abs() < 1e-12);
    }

    /// Perfectly aligned views of N rows spread as ±e_k: the loss approaches its analytic value
    /// log(1 + Σ_negatives e^{(cos − 1)/τ}), and falls towards 0 as τ → 0.
    #[test]
    fn aligned_separated_views_reach_the_analytic_minimum() {
        let rows: Vec<Vec<f64>> = (0..6)
            .map(|k| {
                let mut r = vec![0.0; 3];
                r[k % 3] = if k < 3 { 1.0 } else { -1.0 };
                r
            })
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
        let z = mat(&refs);
        for tau in [0.5f64, 0.1] {
            // Per row, among the 2N − 2 = 10 negatives (5 other rows in each view):
            // 2 antipodal (cos −1) and 8 orthogonal (cos 0).
            let want = (1.0 + 2.0 * (-2.0 / tau).exp() + 8.0 * (-1.0 / tau).exp()).ln();
            assert!((scalar(&nt_xent(&z, &z, tau).unwrap()) - want).abs() < 1e-12);
        }
        assert!(scalar(&nt_xent(&z, &z, 0.05).unwrap()) < 1e-6);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        assert_gradients_match(5, 3, 2, |v| nt_xent(&v[0], &v[1], DEFAULT_TAU).unwrap());
        assert_gradients_match(4, 3, 3, |v| simclr(v, 0.2).unwrap());
    }
}
