//! The per-channel affine map of a training-mode BatchNorm, `y = x · scale + shift`, and its
//! application: by BatchNorm's forward, and by the convolution kernels to their input as they
//! read it, so that a block's conv2 convolves `relu(BN₁(a))` without storing it. Its batch
//! statistics and its backward are BatchNorm's (`batch_norm`: `RowAffine::of_batch`,
//! `RowAffine::backward`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::{new_filled, rows_per_task, with_channels};

/// `x · scale + shift`, the one place it is computed: the forward's ReLU, a convolution's
/// bordered copy ([`RowAffine::apply_relu_pixels`]) and the backward's recomputed cut
/// (`batch_norm::ReluCut::Own`) must see the same f32 value, bit for bit (Rust never contracts
/// it into an FMA on its own).
#[inline(always)]
pub(crate) fn normalised(x: f32, scale: f32, shift: f32) -> f32 {
    x * scale + shift
}

/// Training-mode BatchNorm of `(M, C)` rows as a per-channel affine map: `y = x · scale + shift`.
pub(crate) struct RowAffine {
    pub(crate) scale: Vec<f32>,
    pub(crate) shift: Vec<f32>,
    /// The batch statistics behind it (biased variance), for the backward and the running ones.
    pub(crate) mean: Vec<f64>,
    pub(crate) var: Vec<f64>,
    pub(crate) inv_std: Vec<f64>,
}

impl RowAffine {
    /// Per channel, the scale `γ/σ` and the shift `β − μγ/σ` from the batch's per-channel mean
    /// and biased variance (`of_batch`, in `batch_norm`, takes them from the batch).
    pub(crate) fn of_statistics((mean, var): (Vec<f64>, Vec<f64>), gamma: &[f32], beta: &[f32], eps: f64) -> Self {
        let c = gamma.len();
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let scale: Vec<f32> = (0..c).map(|i| (gamma[i] as f64 * inv_std[i]) as f32).collect();
        let shift = (0..c).map(|i| (beta[i] as f64 - mean[i] * gamma[i] as f64 * inv_std[i]) as f32).collect();
        Self { scale, shift, mean, var, inv_std }
    }

    /// `[relu](x · scale + shift)` as a new buffer.
    pub(crate) fn apply_new(&self, x: &[f32], relu: bool) -> Vec<f32> {
        // SAFETY: `apply` writes every element.
        unsafe { new_filled(x.len(), |y| self.apply(x, y, relu)) }
    }

    /// `y = [relu](x · scale + shift)`, row by row, every element of `y` written.
    pub(crate) fn apply(&self, x: &[f32], y: &mut [MaybeUninit<f32>], relu: bool) {
        let c = self.scale.len();
        let (scale, shift) = (&self.scale, &self.shift);
        y.par_chunks_mut(rows_per_task(c) * c).zip(x.par_chunks(rows_per_task(c) * c)).for_each(|(yc, xc)| {
            with_channels!(c, C => {
                let (scale, shift) = (&scale[..C], &shift[..C]);
                for (yr, xr) in yc.chunks_exact_mut(C).zip(xc.chunks_exact(C)) {
                    // Zipped, not indexed: the loop then has no bounds checks and vectorises.
                    for (((y, &x), &scale), &shift) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                        let v = normalised(x, scale, shift);
                        y.write(if relu { v.max(0.0) } else { v });
                    }
                }
            })
        });
    }

    /// `y = relu(x · scale + shift)` over whole pixels on this thread, the same f32 operations
    /// as [`Self::apply`]: a convolution's bordered copy of one image row made from the
    /// BatchNorm's input instead of its stored output.
    pub(crate) fn apply_relu_pixels(&self, x: &[f32], y: &mut [f32]) {
        let c = self.scale.len();
        let (scale, shift) = (&self.scale, &self.shift);
        with_channels!(c, C => {
            let (scale, shift) = (&scale[..C], &shift[..C]);
            for (yr, xr) in y.chunks_exact_mut(C).zip(x.chunks_exact(C)) {
                for (((y, &x), &scale), &shift) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                    *y = normalised(x, scale, shift).max(0.0);
                }
            }
        })
    }
}
