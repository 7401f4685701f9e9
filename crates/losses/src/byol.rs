//! BYOL (Grill et al., NeurIPS 2020) and SimSiam (Chen & He, CVPR 2021): an online branch
//! predicts a stop-gradient target.
//!
//! - BYOL, as the W-MSE authors' baseline computes it (`htdt/self-supervised`, `methods/byol.py`):
//!   `L = Σ_{i<j} [ℓ(p_i, sg z'_j) + ℓ(p_j, sg z'_i)] / (d(d−1)/2)` with
//!   `ℓ(p, z) = mean_n (2 − 2 cos(p_n, z_n))`. With two views this is the paper's symmetrised
//!   sum `ℓ(p_1, z'_2) + ℓ(p_2, z'_1)`, in `[0, 8]`. (A mean over ordered pairs would be half
//!   this value; the paper and the authors' code sum, and so does this module: see
//!   docs/methods.md#byol.) `z'` comes from the EMA target, which is the runner's business.
//! - SimSiam: `D(p, z) = −cos(p, sg z)` averaged over rows, and `L = mean over ordered pairs
//!   i≠j of D(p_i, z_j)` — with two views the paper's `½ D(p_1, z_2) + ½ D(p_2, z_1)`.

use candle_core::Tensor;

use crate::distance::{cosine_rows, normalised_mse};
use crate::Result;

/// The BYOL loss of the online predictions and the target projections (one per view); the
/// targets receive no gradient.
pub fn byol(predictions: &[Tensor], targets: &[Tensor]) -> Result<Tensor> {
    crate::check_views("byol", predictions)?;
    crate::check_views("byol", targets)?;
    let targets: Vec<Tensor> = targets.iter().map(Tensor::detach).collect();
    let pairs = crate::mean_over_pairs(predictions.len(), |i, j| {
        Ok((normalised_mse(&predictions[i], &targets[j])? + normalised_mse(&predictions[j], &targets[i])?)?)
    })?;
    Ok(pairs)
}

/// The SimSiam loss of the predictions and the projections of the same views; the projections
/// receive no gradient through this loss.
pub fn simsiam(predictions: &[Tensor], projections: &[Tensor]) -> Result<Tensor> {
    crate::check_views("simsiam", predictions)?;
    crate::check_views("simsiam", projections)?;
    let z: Vec<Tensor> = projections.iter().map(Tensor::detach).collect();
    let both = crate::mean_over_pairs(predictions.len(), |i, j| {
        Ok((cosine_rows(&predictions[i], &z[j])?.mean_all()? + cosine_rows(&predictions[j], &z[i])?.mean_all()?)?)
    })?;
    Ok((both * -0.5)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_gradients_match, autograd_gradients, mat, scalar};

    /// p_1 = z'_2 direction (cos 1, ℓ = 0); p_2 ⟂ z'_1 (cos 0, ℓ = 2): L = 2.
    #[test]
    fn matches_hand_computed_case() {
        // Two rows per view (every loss needs N ≥ 2), the same in each.
        let p1 = mat(&[&[1.0, 0.0], &[1.0, 0.0]]);
        let p2 = mat(&[&[0.0, 1.0], &[0.0, 1.0]]);
        let z1 = mat(&[&[3.0, 0.0], &[3.0, 0.0]]);
        let z2 = mat(&[&[2.0, 0.0], &[2.0, 0.0]]);
        let l = byol(&[p1.clone(), p2.clone()], &[z1.clone(), z2.clone()]).unwrap();
        assert!((scalar(&l) - 2.0).abs() < 1e-12);
        // SimSiam: ½(−1) + ½(0) = −0.5.
        assert!((scalar(&simsiam(&[p1, p2], &[z1, z2]).unwrap()) + 0.5).abs() < 1e-12);
    }

    /// Gradients reach the predictions (checked against finite differences) and never the
    /// targets.
    #[test]
    fn predictions_get_exact_gradients_and_targets_none() {
        let targets = crate::testing::random_views(4, 3, 2, 11);
        let dev = candle_core::Device::Cpu;
        let t: Vec<Tensor> = targets.iter().map(|v| Tensor::from_slice(v, (4, 3), &dev).unwrap()).collect();
        assert_gradients_match(4, 3, 2, |p| byol(p, &t).unwrap());
        assert_gradients_match(4, 3, 2, |p| simsiam(p, &t).unwrap());
        let both = [targets[0].clone(), targets[1].clone()];
        for loss in [byol, simsiam] {
            let g = autograd_gradients(4, 3, &both, |v| {
                loss(&[v[0].clone(), v[0].clone()], &[v[1].clone(), v[1].clone()]).unwrap()
            });
            assert!(g[0].iter().any(|&x| x != 0.0));
            assert!(g[1].iter().all(|&x| x == 0.0), "the target got a gradient: {:?}", g[1]);
        }
    }
}
