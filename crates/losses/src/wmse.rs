//! W-MSE: Whitening for Self-Supervised Representation Learning (Ermolov, Siarohin, Sangineto &
//! Sebe, ICML 2021).
//!
//! For d ≥ 2 views' embeddings `V_1 … V_d` of shape `(N, emb)` and `w_iter` random permutations
//! of the N images, each cut into sub-batches of `w_size` rows:
//!
//! - every view's rows of a sub-batch are whitened with that view's own statistics:
//!   `μ = mean`, `Σ = (V − μ)ᵀ(V − μ) / (w_size − 1)`, `Σ' = (1 − ε) Σ + ε I` (ε = 0 by default),
//!   `L = cholesky(Σ')`, `z = L⁻¹ (v − μ)`; gradients flow through μ, Σ, L and the solve;
//! - `L = mean over the d(d−1)/2 view pairs and the w_iter repeats of
//!   mean_n [2 − 2 cos(z_i,n, z_j,n)]`.
//!
//! This is the authors' `Whitening2d` (training mode, no running statistics) and `WMSE.forward`
//! (`htdt/self-supervised`). No stop-gradient (solo-learn's variant detaches one view). The
//! permutations are the caller's, so the loss itself is deterministic.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::distance::normalised_mse;
use crate::linalg::{cholesky, solve_lower_triangular};
use crate::{Error, Result};

/// W-MSE's whitening parameters: a W-MSE run's `[wmse]` table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WmseConfig {
    /// Rows per whitened sub-batch; must divide N and (with ε = 0) exceed the embedding size.
    pub w_size: usize,
    /// Independent permutations per step.
    pub w_iter: usize,
    /// Shrinkage ε of the covariance towards the identity.
    pub eps: f64,
}

impl Default for WmseConfig {
    /// The authors' CIFAR setting: sub-batches of 128 rows, one partition per step, no shrinkage.
    fn default() -> Self {
        Self { w_size: 128, w_iter: 1, eps: 0.0 }
    }
}

/// Whiten `(n, D)` rows by the Cholesky factor of their shrunk covariance, `z = L⁻¹ (v − μ)`
/// row-wise: with ε = 0 the rows' sample covariance becomes the identity. A covariance that is not
/// positive definite is [`Error::NotPositiveDefinite`].
pub fn whiten_cholesky(v: &Tensor, eps: f64) -> Result<Tensor> {
    let (n, d) = v.dims2()?;
    let vc = v.broadcast_sub(&v.mean_keepdim(0)?)?;
    let cov = (vc.t()?.matmul(&vc)? / (n as f64 - 1.0))?;
    let shrunk = if eps > 0.0 {
        (cov.affine(1.0 - eps, 0.0)? + Tensor::eye(d, v.dtype(), v.device())?.affine(eps, 0.0)?)?
    } else {
        cov
    };
    let l = cholesky(&shrunk)?.ok_or(Error::NotPositiveDefinite { w_size: n, emb: d, eps })?;
    Ok(solve_lower_triangular(&l, &vc.t()?)?.t()?)
}

/// Whether `cfg` can whiten batches of `n` rows of `emb` dimensions: an [`Error::Parameter`]
/// naming the field, or [`Error::NotPositiveDefinite`] for sub-batches too small to whiten.
/// `batch` names the batch size in the caller's terms (`train.batch_size`, "the batch size").
pub fn check_config(cfg: &WmseConfig, n: usize, emb: usize, batch: &str) -> Result<()> {
    let bad = |field, what: String| Err(Error::Parameter { loss: "w-mse", field, what });
    let w = cfg.w_size;
    if w < 2 {
        return bad("w_size", format!("at least 2 and a divisor of {batch} ({n}) expected, got {w}"));
    }
    if !n.is_multiple_of(w) {
        return bad(
            "w_size",
            format!("at least 2 and a divisor of {batch} ({n}) expected, got {w}, which does not divide it"),
        );
    }
    if cfg.w_iter == 0 {
        return bad("w_iter", "at least 1 expected, got 0".into());
    }
    if !(0.0..1.0).contains(&cfg.eps) {
        return bad("eps", format!("a shrinkage in [0, 1) expected, got {}", cfg.eps));
    }
    // w_size rows have a covariance of rank ≤ w_size − 1: singular unless it exceeds emb.
    if cfg.eps == 0.0 && cfg.w_size <= emb {
        return Err(Error::NotPositiveDefinite { w_size: cfg.w_size, emb, eps: cfg.eps });
    }
    Ok(())
}

/// Check the views and the configuration against each other.
pub fn check(views: &[Tensor], cfg: &WmseConfig) -> Result<()> {
    crate::check_views("w-mse", views)?;
    let (n, d) = views[0].dims2()?;
    check_config(cfg, n, d, "the batch size")
}

/// The W-MSE loss. `permutations` holds `w_iter` permutations of `0..N`.
pub fn wmse(views: &[Tensor], cfg: &WmseConfig, permutations: &[Vec<usize>]) -> Result<Tensor> {
    check(views, cfg)?;
    let n = views[0].dim(0)?;
    if permutations.len() != cfg.w_iter || permutations.iter().any(|p| !is_permutation(p, n)) {
        return Err(Error::Config { loss: "w-mse", what: format!("expected {} permutations of 0..{n}", cfg.w_iter) });
    }
    let device = views[0].device();
    let mut repeats = Vec::with_capacity(permutations.len());
    for perm in permutations {
        // Each view's rows, regrouped by sub-batch and whitened there. Rows stay aligned across
        // views (the same permutation), and the loss is a mean over rows, so the order is free.
        let mut whitened = Vec::with_capacity(views.len());
        for v in views {
            let mut chunks = Vec::with_capacity(n / cfg.w_size);
            for idx in perm.chunks(cfg.w_size) {
                let idx = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), device)?;
                chunks.push(whiten_cholesky(&v.index_select(&idx, 0)?, cfg.eps)?);
            }
            whitened.push(Tensor::cat(&chunks, 0)?);
        }
        repeats.push(crate::mean_over_pairs(views.len(), |i, j| normalised_mse(&whitened[i], &whitened[j]))?);
    }
    // Every repeat has the same pairs, so the mean of the repeats' means is the mean over all.
    Ok(Tensor::stack(&repeats, 0)?.mean_all()?)
}

fn is_permutation(p: &[usize], n: usize) -> bool {
    let mut seen = vec![false; n];
    p.len() == n && p.iter().all(|&i| i < n && !std::mem::replace(&mut seen[i], true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_gradients_match, random_views, scalar};
    use candle_core::{DType, Device};

    fn covariance_of(z: &Tensor) -> Tensor {
        crate::stats::covariance_unbiased(&z.to_dtype(DType::F64).unwrap()).unwrap()
    }

    fn views(n: usize, d: usize, k: usize) -> Vec<Tensor> {
        random_views(n, d, k, 3).into_iter().map(|v| Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()).collect()
    }

    #[test]
    fn whitened_rows_have_identity_covariance_and_zero_mean() {
        let v = &views(12, 4, 1)[0];
        let z = whiten_cholesky(v, 0.0).unwrap();
        let cov: Vec<Vec<f64>> = covariance_of(&z).to_vec2().unwrap();
        for (i, row) in cov.iter().enumerate() {
            for (j, &c) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 1e-10, "cov[{i}][{j}] = {c}");
            }
        }
        let mean: Vec<f64> = z.mean(0).unwrap().to_vec1().unwrap();
        assert!(mean.iter().all(|m| m.abs() < 1e-12), "{mean:?}");
    }

    /// z = L⁻¹(v − μ) is the Cholesky whitening, not ZCA: it is lower-triangular in the input
    /// dimensions, so the first whitened coordinate depends on the first input coordinate only.
    #[test]
    fn whitening_is_the_cholesky_transform() {
        let v = &views(10, 3, 1)[0];
        let z: Vec<Vec<f64>> = whiten_cholesky(v, 0.0).unwrap().to_vec2().unwrap();
        let x: Vec<Vec<f64>> = v.to_vec2().unwrap();
        let mean0 = x.iter().map(|r| r[0]).sum::<f64>() / 10.0;
        let var0 = x.iter().map(|r| (r[0] - mean0).powi(2)).sum::<f64>() / 9.0;
        for (zr, xr) in z.iter().zip(&x) {
            assert!((zr[0] - (xr[0] - mean0) / var0.sqrt()).abs() < 1e-12);
        }
    }

    /// Two points in one dimension: μ = 1, Σ = 2 (unbiased), L = √2, z = ±1/√2; the second view
    /// is the first negated, so every cosine is −1 and the loss 4.
    #[test]
    fn matches_hand_computed_case() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[0.0f64], [2.0]], &dev).unwrap();
        let z: Vec<Vec<f64>> = whiten_cholesky(&a, 0.0).unwrap().to_vec2().unwrap();
        assert!((z[0][0] + 0.5f64.sqrt()).abs() < 1e-12 && (z[1][0] - 0.5f64.sqrt()).abs() < 1e-12);
        let b = a.neg().unwrap();
        let cfg = WmseConfig { w_size: 2, w_iter: 1, eps: 0.0 };
        let loss = wmse(&[a.clone(), b], &cfg, &[vec![1, 0]]).unwrap();
        assert!((scalar(&loss) - 4.0).abs() < 1e-12);
        assert!(scalar(&wmse(&[a.clone(), a], &cfg, &[vec![0, 1]]).unwrap()).abs() < 1e-12);
    }

    #[test]
    fn gradient_matches_finite_differences_for_two_and_four_views() {
        let cfg = WmseConfig { w_size: 6, w_iter: 2, eps: 0.0 };
        let perms = vec![vec![3, 1, 10, 0, 7, 5, 2, 11, 4, 9, 8, 6], (0..12).rev().collect::<Vec<_>>()];
        assert_gradients_match(12, 3, 2, |v| wmse(v, &cfg, &perms).unwrap());
        let shrunk = WmseConfig { w_size: 4, w_iter: 1, eps: 0.1 };
        assert_gradients_match(8, 3, 4, |v| wmse(v, &shrunk, &[vec![7, 6, 5, 4, 3, 2, 1, 0]]).unwrap());
    }

    #[test]
    fn too_small_sub_batches_are_a_clear_error() {
        let v = views(8, 4, 2);
        let cfg = WmseConfig { w_size: 4, w_iter: 1, eps: 0.0 };
        let err = wmse(&v, &cfg, &[(0..8).collect()]).unwrap_err().to_string();
        assert!(err.contains("w_size 4") && err.contains("emb 4") && err.contains("2 × emb"), "{err}");
        let err = whiten_cholesky(&v[0].narrow(0, 0, 3).unwrap(), 0.0).unwrap_err().to_string();
        assert!(err.contains("not positive definite"), "{err}");
        let cfg = WmseConfig { w_size: 3, w_iter: 1, eps: 0.0 };
        assert!(wmse(&v, &cfg, &[(0..8).collect()]).unwrap_err().to_string().contains("divide"));
    }
}
