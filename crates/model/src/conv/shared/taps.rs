//! The weight layouts the kernels read, and the conversions between them: the convolution's
//! own `(C_out, C_in, k, k)`; taps `(C_out, k, k, C_in)`, each output channel's taps pixel-major
//! as the channels-last im2col matrix has them (what `conv` hands every kernel); and the direct
//! layout `(k, k, C_in, C_out)`, the output channels contiguous for every tap and input channel,
//! as the direct, tap-major and Winograd kernels load them.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::Geometry;
use crate::cpu::{new_filled, transposed};

/// `(C_out, C_in, k, k)` into `(C_out, k, k, C_in)`: each output channel's taps pixel-major, as
/// the channels-last im2col matrix has them.
pub(crate) fn weight_to_taps(w: &[f32], g: &Geometry) -> Vec<f32> {
    let (c, kk) = (g.channels, g.kernel * g.kernel);
    reorder_per_output_channel(w, (c, kk))
}

/// The inverse of [`weight_to_taps`].
pub(crate) fn taps_to_weight(taps: &[f32], g: &Geometry) -> Vec<f32> {
    let (c, kk) = (g.channels, g.kernel * g.kernel);
    reorder_per_output_channel(taps, (kk, c))
}

/// Each output channel's `rows × cols` block of `w` transposed, the blocks on the pool. The
/// encoder converts every convolution's weight each forward and backward (and its gradient
/// back), six passes over the weights per two-view step, on the op's own thread while the
/// pool waited (perf, width 0.5: 5 ms of each view's 190 ms forward). One pass over six layers
/// of 32-512 channels (3.7 M floats), warm allocator: 3.1-3.3 ms on one thread, zeroed first;
/// 1.2-1.8 ms this way.
fn reorder_per_output_channel(w: &[f32], (rows, cols): (usize, usize)) -> Vec<f32> {
    let block = rows * cols;
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(block.max(1)).zip(w.par_chunks(block.max(1))).with_min_len(8).for_each(|(dst, src)| {
            // Writes in order (the block is in L1, the strided reads cheap).
            for (col, dst) in dst.chunks_exact_mut(rows).enumerate() {
                for (d, s) in dst.iter_mut().zip(src[col..].iter().step_by(cols)) {
                    d.write(*s);
                }
            }
        })
    };
    // SAFETY: each block's `cols` runs of `rows` elements cover it, every element written once.
    unsafe { new_filled(w.len(), fill) }
}

/// Taps `(C_out, k, k, C_in)` (the im2col weight) into `(k, k, C_in, C_out)`: for every tap and
/// input channel, the output channels contiguous, as the kernel loads them.
pub(crate) fn taps_to_direct(taps: &[f32], g: &Geometry) -> Vec<f32> {
    transposed(taps, g.out_channels, g.rows())
}

/// The weights of the input gradient's convolution (see `conv::conv_input_grad`) from the
/// forward's taps `(C_out, 3, 3, C_in)`: `(3, 3, C_out, C_in)` with the kernel flipped.
pub(crate) fn taps_to_direct_input_grad(taps: &[f32], g: &Geometry) -> Vec<f32> {
    let (ci, co, rows) = (g.channels, g.out_channels, g.rows());
    let mut out = vec![0f32; taps.len()];
    for t in 0..9 {
        for o in 0..co {
            let src = &taps[o * rows + (8 - t) * ci..][..ci];
            out[(t * co + o) * ci..][..ci].copy_from_slice(src);
        }
    }
    out
}

/// `(k, k, C_in, C_out)` sums into taps `(C_out, k, k, C_in)`: [`taps_to_direct`] undone.
pub(crate) fn direct_to_taps(per_tap: &[f32], g: &Geometry) -> Vec<f32> {
    transposed(per_tap, g.rows(), g.out_channels)
}

/// The convolution whose output is the input gradient of the 3×3 stride-1 convolution `g`:
/// the same geometry with the channel counts swapped (its weights: [`taps_to_direct_input_grad`]).
pub(crate) fn flipped(g: &Geometry) -> Geometry {
    Geometry { channels: g.out_channels, out_channels: g.channels, ..*g }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The taps layout by its index definition, and back, with more output channels than one
    /// task of the pool takes.
    #[test]
    fn weight_to_taps_is_pixel_major_and_taps_to_weight_inverts_it() {
        let (co, c, k) = (37, 5, 3);
        let g = Geometry {
            channels: c,
            height: 6,
            width: 6,
            kernel: k,
            stride: 1,
            padding: 1,
            out_channels: co,
            bf16: false,
        };
        let w: Vec<f32> = (0..co * c * k * k).map(|i| i as f32).collect();
        let taps = weight_to_taps(&w, &g);
        for o in 0..co {
            for ci in 0..c {
                for t in 0..k * k {
                    assert_eq!(taps[(o * k * k + t) * c + ci], w[(o * c + ci) * k * k + t], "({o}, {ci}, {t})");
                }
            }
        }
        assert_eq!(taps_to_weight(&taps, &g), w);
    }
}
