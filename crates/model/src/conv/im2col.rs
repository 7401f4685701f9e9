//! Convolution as GEMM over channels-last activations `(N, H, W, C)`, for any shape: a chunk of
//! whole images is lowered to one GEMM over their im2col matrix, `Y = cols(X) · W'ᵀ` with `M =
//! images × output positions` rows, and its backward to two more, `dW' = dYᵀ · cols(X)` and
//! `dX = col2im(dY · W')`, where `W'` is the weight reordered to `(C_out, k, k, C_in)` (taps) so
//! that every im2col row is `k` runs of whole pixels (`C_in` contiguous floats: a copy, never a
//! gather). Chunking whole images keeps the GEMMs tall where the planes are small (4×4 in
//! ResNet-18's last stage, where a per-image GEMM had 16 rows) and keeps col2im's scatter
//! inside one thread's images. The im2col matrix of a chunk is rebuilt in a per-thread buffer
//! and never stored, so memory stays that of the activations.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::conv::shared::{bf16, with_scratch, Geometry};
use crate::cpu::{add_into, matmul, matmul_raw, ordered_zip_fold};

/// GEMM rows a chunk aims for: tall enough for the micro-kernels to run near their peak.
const CHUNK_ROWS: usize = 512;
/// The weight gradient's: each chunk is a task that sums into its own `(C_out, k·k·C_in)`
/// buffer, zeroed first and added up after, so fewer and taller ones (256 channels on 4×4,
/// batch 128, GFLOP/s median of 12 alternated calls, 512 → 1024 rows: 88 → 153 and 145 → 174
/// in two runs; 512 channels 136 → 143, 102 → 116; 256 on 8×8 the same).
const WEIGHT_GRAD_CHUNK_ROWS: usize = 1024;
/// The most floats one chunk's im2col buffer holds (16 MB), unless one image alone needs more.
const CHUNK_FLOATS: usize = 4 << 20;

/// The im2col lowering of a convolution.
impl Geometry {
    /// A 1×1, stride-1, unpadded convolution: the activations already are the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }

    /// Whole images per GEMM: about `rows` rows, within [`CHUNK_FLOATS`], at least one.
    fn images_per_chunk(&self, images: usize, rows: usize) -> usize {
        let pos = self.positions().max(1);
        let by_rows = rows.div_ceil(pos);
        let by_memory = CHUNK_FLOATS / (pos * self.rows()).max(1);
        by_rows.min(by_memory).clamp(1, images.max(1))
    }

    /// For output row `oy`, the kernel rows inside the image and their input rows.
    fn valid_taps(&self, out: usize, size: usize) -> (usize, usize) {
        // Tap t reads input out·stride + t − padding; keep 0 ≤ that < size.
        let start = out * self.stride;
        let first = self.padding.saturating_sub(start);
        let last = (size + self.padding).saturating_sub(start).min(self.kernel);
        (first, last.max(first))
    }

    /// Images `(g, H, W, C)` into their `(g·positions, k·k·C)` matrix; zero where padding is
    /// covered. Each (row, kernel row) is one copy of the taps inside the image.
    fn im2col(&self, images: &[f32], cols: &mut [f32]) {
        let (c, k, rows) = (self.channels, self.kernel, self.rows());
        let (oh, ow) = (self.out_h(), self.out_w());
        for (img, out) in images.chunks_exact(self.image_len()).zip(cols.chunks_exact_mut(self.positions() * rows)) {
            for oy in 0..oh {
                let (ky0, ky1) = self.valid_taps(oy, self.height);
                for ox in 0..ow {
                    let (kx0, kx1) = self.valid_taps(ox, self.width);
                    let row = &mut out[(oy * ow + ox) * rows..][..rows];
                    for ky in 0..k {
                        let dst = &mut row[ky * k * c..][..k * c];
                        if ky < ky0 || ky >= ky1 || kx0 == kx1 {
                            dst.fill(0.0);
                            continue;
                        }
                        let iy = oy * self.stride + ky - self.padding;
                        let ix = ox * self.stride + kx0 - self.padding;
                        dst[..kx0 * c].fill(0.0);
                        dst[kx0 * c..kx1 * c].copy_from_slice(&img[(iy * self.width + ix) * c..][..(kx1 - kx0) * c]);
                        dst[kx1 * c..].fill(0.0);
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: add each matrix entry back onto its input pixel, onto
    /// what `images` holds when `accumulate`, onto zeros otherwise.
    fn col2im(&self, cols: &[f32], images: &mut [f32], accumulate: bool) {
        if !accumulate {
            images.fill(0.0);
        }
        let (c, k, rows) = (self.channels, self.kernel, self.rows());
        let (oh, ow) = (self.out_h(), self.out_w());
        for (img, out) in images.chunks_exact_mut(self.image_len()).zip(cols.chunks_exact(self.positions() * rows)) {
            for oy in 0..oh {
                let (ky0, ky1) = self.valid_taps(oy, self.height);
                for ox in 0..ow {
                    let (kx0, kx1) = self.valid_taps(ox, self.width);
                    let row = &out[(oy * ow + ox) * rows..][..rows];
                    for ky in ky0..ky1 {
                        let iy = oy * self.stride + ky - self.padding;
                        let ix = ox * self.stride + kx0 - self.padding;
                        let src = &row[(ky * k + kx0) * c..(ky * k + kx1) * c];
                        let dst = &mut img[(iy * self.width + ix) * c..][..src.len()];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    }
                }
            }
        }
    }
}

/// Whether this module computes every pass of `g` with bf16 products (`Geometry::bf16` on a
/// CPU with them): the stride-2 convolutions and their 1×1 shortcuts from 32 input channels,
/// where they beat the direct and tap-major kernels' f32 (width 1.0, bf16, GFLOP/s forward /
/// backward: 194-206 / 189-205 → 278-346 / 277-323); at 16 channels, and for the stride-1
/// convolutions Winograd leaves, those stay faster. See bench/README.md.
pub(crate) fn takes_bf16(g: &Geometry) -> bool {
    g.bf16
        && crate::conv::shared::bf16_products()
        && g.stride == 2
        && g.channels >= 32
        && g.rows().is_multiple_of(16)
        && g.out_channels.is_multiple_of(16)
}

/// [`forward`] on bf16 products: each chunk's im2col matrix rounded into channel pairs and
/// multiplied with the taps' transpose in row pairs. (Only strided convolutions come here, so
/// there is always an im2col matrix to build.)
fn forward_bf16(g: &Geometry, x: &[f32], taps: &[f32]) -> Vec<f32> {
    let n = x.len() / g.image_len();
    let (rows, pos, co) = (g.rows(), g.positions(), g.out_channels);
    let chunk = g.images_per_chunk(n, CHUNK_ROWS);
    let t = crate::cpu::transposed(taps, co, rows);
    let mut b16 = vec![0u32; rows / 2 * co];
    bf16::row_pairs_into(&t, co, &mut b16);
    let mut y = vec![0f32; n * pos * co];
    y.par_chunks_mut(chunk * pos * co).zip(x.par_chunks(chunk * g.image_len())).for_each(|(yc, xc)| {
        let m = yc.len() / co;
        let mut scratch = vec![0u32; m * rows / 2];
        with_scratch(m * rows, |cols| {
            g.im2col(xc, cols);
            bf16::product(cols, rows, &b16, co, yc, &mut scratch);
        });
    });
    y
}

/// `y = conv(x)` over channels-last images `x` (`n · image_len` floats) with the weight as
/// taps (`weight_to_taps`); `y` is `(n, out_h, out_w, C_out)`.
pub(crate) fn forward(g: &Geometry, x: &[f32], taps: &[f32]) -> Vec<f32> {
    if takes_bf16(g) {
        return forward_bf16(g, x, taps);
    }
    let n = x.len() / g.image_len();
    let (rows, pos, co) = (g.rows(), g.positions(), g.out_channels);
    let chunk = g.images_per_chunk(n, CHUNK_ROWS);
    let len = n * pos * co;
    let mut y: Vec<f32> = Vec::with_capacity(len);
    y.spare_capacity_mut()[..len].par_chunks_mut(chunk * pos * co).zip(x.par_chunks(chunk * g.image_len())).for_each(
        |(yc, xc)| {
            let m = yc.len() / co;
            let mut gemm_into = |lhs: &[f32]| {
                // W'ᵀ: (rows × co) with row stride 1 and column stride rows. SAFETY: `yc` is
                // `m·co` floats of spare capacity, all written (not read) by this GEMM.
                unsafe {
                    matmul_raw(
                        (m, co, rows),
                        yc.as_mut_ptr().cast(),
                        yc.len(),
                        false,
                        lhs,
                        (rows, 1),
                        taps,
                        (1, rows),
                        Parallelism::None,
                    )
                }
            };
            if g.is_pointwise() {
                gemm_into(xc);
            } else {
                with_scratch(m * rows, |cols| {
                    g.im2col(xc, cols);
                    gemm_into(cols);
                });
            }
        },
    );
    // SAFETY: the chunks above cover `len` floats and each was written in full by its GEMM.
    unsafe { y.set_len(len) };
    y
}

/// The input gradient of [`forward`] from the output gradient `dy`, into `dx` `(n, H, W, C_in)`:
/// added onto what it holds when `accumulate`, else written.
pub(crate) fn input_grad_into(g: &Geometry, dy: &[f32], taps: &[f32], dx: &mut [f32], accumulate: bool) {
    let n = dx.len() / g.image_len();
    let (rows, pos, co) = (g.rows(), g.positions(), g.out_channels);
    let chunk = g.images_per_chunk(n, CHUNK_ROWS);
    if takes_bf16(g) {
        // dcols = dY · W' on bf16 products, then scattered back as in f32.
        let mut b16 = vec![0u32; co.div_ceil(2) * rows];
        bf16::row_pairs_into(taps, rows, &mut b16);
        dx.par_chunks_mut(chunk * g.image_len()).zip(dy.par_chunks(chunk * pos * co)).for_each(|(dxc, dyc)| {
            let m = dyc.len() / co;
            let mut scratch = vec![0u32; m * co / 2];
            with_scratch(m * rows, |dcols| {
                bf16::product(dyc, co, &b16, rows, dcols, &mut scratch);
                g.col2im(dcols, dxc, accumulate);
            });
        });
        return;
    }
    dx.par_chunks_mut(chunk * g.image_len()).zip(dy.par_chunks(chunk * pos * co)).for_each(|(dxc, dyc)| {
        let m = dyc.len() / co;
        if g.is_pointwise() {
            matmul((m, rows, co), dxc, accumulate, dyc, (co, 1), taps, (rows, 1), Parallelism::None);
        } else {
            with_scratch(m * rows, |dcols| {
                matmul((m, rows, co), dcols, false, dyc, (co, 1), taps, (rows, 1), Parallelism::None);
                g.col2im(dcols, dxc, accumulate);
            });
        }
    });
}

/// The weight gradient of [`forward`] as taps `(C_out, k, k, C_in)` from the input `x` and the
/// output gradient `dy`, summed over the images.
pub(crate) fn weight_grad_taps(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let n = x.len() / g.image_len();
    let (rows, pos, co) = (g.rows(), g.positions(), g.out_channels);
    let chunk = g.images_per_chunk(n, WEIGHT_GRAD_CHUNK_ROWS);
    ordered_zip_fold(
        (x, chunk * g.image_len()),
        (dy, chunk * pos * co),
        || vec![0f32; co * rows],
        |mut acc, _, xc, dyc| {
            let m = dyc.len() / co;
            if takes_bf16(g) {
                // acc += dYᵀ · cols on bf16 products.
                with_scratch(m * rows, |cols| {
                    g.im2col(xc, cols);
                    bf16::transposed_product_add(dyc, co, cols, rows, &mut acc, &mut Vec::new());
                });
                return acc;
            }
            // acc += dYᵀ · cols: dYᵀ is (co × m) with row stride 1 and column stride co.
            let accumulate = |acc: &mut [f32], rhs: &[f32]| {
                matmul((co, rows, m), acc, true, dyc, (1, co), rhs, (rows, 1), Parallelism::None);
            };
            if g.is_pointwise() {
                accumulate(&mut acc, xc);
            } else {
                with_scratch(m * rows, |cols| {
                    g.im2col(xc, cols);
                    accumulate(&mut acc, cols);
                });
            }
            acc
        },
        add_into,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        use rand::{Rng, SeedableRng};
        let g = Geometry {
            channels: 2,
            height: 5,
            width: 6,
            kernel: 3,
            stride: 2,
            padding: 1,
            out_channels: 1,
            bf16: false,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let x: Vec<f32> = (0..g.image_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y: Vec<f32> = (0..g.rows() * g.positions()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut cols = vec![0.0; y.len()];
        g.im2col(&x, &mut cols);
        let mut back = vec![0.0; x.len()];
        g.col2im(&y, &mut back, false);
        let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-5 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }
}
