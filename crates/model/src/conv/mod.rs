//! 2-D convolution with a selectable implementation.
//!
//! candle's CPU convolution backward computes the input gradient with an unblocked
//! `conv_transpose2d` (a loop of dot products) and the weight gradient through an im2col of the
//! whole gradient, which together make it 5-10× slower than PyTorch (measured: ~85 % of a
//! training step). [`ConvImpl::Im2col`] works on channels-last activations `(N, H, W, C)` and
//! lowers a chunk of whole images to one GEMM over their im2col matrix,
//! `Y = cols(X) · W'ᵀ` with `M = images × output positions` rows, and its backward to two more,
//! `dW' = dYᵀ · cols(X)` and `dX = col2im(dY · W')`, where `W'` is the weight reordered to
//! `(C_out, k, k, C_in)` so that every im2col row is `k` runs of whole pixels (`C_in` contiguous
//! floats: a copy, never a gather). Chunking whole images keeps the GEMMs tall where the planes
//! are small (4×4 in ResNet-18's last stage, where a per-image GEMM had 16 rows) and keeps
//! col2im's scatter inside one thread's images. The im2col matrix of a chunk is rebuilt in a
//! per-thread buffer and never stored, so memory stays that of the activations.
//! [`ConvImpl::Candle`] keeps candle's own kernels on `(N, C, H, W)` selectable: the reference,
//! and the path on GPUs, where `Im2col` has no kernel yet.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::batch_norm::{mean_and_variance, Moments};
use crate::cpu::{f32_slice, matmul, matmul_raw, new_filled, zeros};
use shared::{flipped, taps_to_direct, taps_to_direct_input_grad, with_scratch};
pub(crate) use shared::{taps_to_weight, weight_to_taps, Geometry, RowAffine};

mod direct;
pub(crate) mod shared;
mod winograd;

/// The name the ops' errors carry.
const OP: &str = "im2col convolution";

/// Which convolution kernels a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvImpl {
    /// Channels-last im2col + GEMM forward and backward (CPU, f32), the layers of up to 128
    /// channels, and the forward, stride-1 input gradient and (up to 256 channels) weight
    /// gradient of wider ones on planes of at most 8×8, by the direct kernels of `direct_conv`
    /// where the CPU has AVX-512 (see `direct::applies`, `direct::forward_applies`,
    /// `direct::weight_grad_tap_major_applies`) — of them the 3×3 stride-1 convolutions of
    /// 16-512 channels (the weight gradient from 32) by Winograd's F(2×2, 3×3)
    /// (`winograd::applies`, `winograd::weight_grad_applies`); falls back to `Candle` elsewhere.
    #[default]
    Im2col,
    /// candle's `conv2d` and its autograd (`conv_transpose2d` backward), channels first.
    Candle,
}

/// How a network lays out its activations between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActLayout {
    /// `(N, C, H, W)`, candle's and PyTorch's default.
    ChannelsFirst,
    /// `(N, H, W, C)`: what [`ConvImpl::Im2col`] reads and writes.
    ChannelsLast,
}

impl ConvImpl {
    /// The layout a network with these kernels keeps for input `x`: channels last where the
    /// im2col kernels run (CPU, f32), channels first elsewhere.
    pub fn layout_for(self, x: &Tensor) -> ActLayout {
        if self == ConvImpl::Im2col && x.device().is_cpu() && x.dtype() == DType::F32 {
            ActLayout::ChannelsLast
        } else {
            ActLayout::ChannelsFirst
        }
    }
}

impl ActLayout {
    /// `(N, C, H, W)` input into this layout.
    pub fn from_nchw(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ActLayout::ChannelsFirst => Ok(x.clone()),
            ActLayout::ChannelsLast => x.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// This layout back into `(N, C, H, W)`.
    pub fn to_nchw(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ActLayout::ChannelsFirst => Ok(x.clone()),
            ActLayout::ChannelsLast => x.permute((0, 3, 1, 2))?.contiguous(),
        }
    }

    /// The mean over the spatial positions: `(N, C)`.
    pub fn global_average_pool(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ActLayout::ChannelsFirst => x.mean(3)?.mean(2),
            ActLayout::ChannelsLast => {
                let (n, h, w, c) = x.dims4()?;
                x.reshape((n, h * w, c))?.mean(1)
            }
        }
    }
}

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

/// `y = conv(x)` over channels-last images `x` (`n · image_len` floats) with the weight as
/// taps ([`weight_to_taps`]); `y` is `(n, out_h, out_w, C_out)`.
pub(crate) fn conv_forward(g: &Geometry, x: &[f32], taps: &[f32]) -> Vec<f32> {
    if forward_has_kernel(g) {
        let weights = taps_to_direct(taps, g);
        // SAFETY: the direct kernel writes every output.
        return unsafe {
            new_filled(x.len() / g.image_len() * g.positions() * g.out_channels, |y| {
                direct_forward_into_then(g, x, None, &weights, y, |_| ());
            })
        };
    }
    conv_forward_im2col(g, x, taps)
}

/// Whether [`direct_forward_into_then`] takes this forward: Winograd, or a direct kernel (the
/// wide layers on planes above 8×8, 96-pixel images, have Winograd and no direct kernel).
pub(crate) fn forward_has_kernel(g: &Geometry) -> bool {
    winograd::applies(g) || direct::forward_applies(g)
}

/// Whether the stride-1 input gradient of `g` (the forward of its flipped kernel) has a
/// Winograd or direct kernel.
pub(crate) fn input_grad_has_kernel(g: &Geometry) -> bool {
    g.stride == 1 && (direct::input_grad_applies(g) || winograd::applies(&flipped(g)))
}

/// `direct::forward_into_then`, by Winograd's F(2×2, 3×3) where it applies
/// ([`winograd::applies`]): the direct kernels' forward and stride-1 input gradient (the weight
/// gradient's dispatch is in [`conv_weight_grad_taps`] and [`conv_weight_grad_taps_bn_relu`]).
fn direct_forward_into_then<T: Send>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [MaybeUninit<f32>],
    then: impl Fn(&[f32]) -> T + Sync,
) -> Vec<T> {
    if winograd::applies(g) {
        winograd::forward_into_then(g, x, input, weights, y, then)
    } else {
        direct::forward_into_then(g, x, input, weights, y, then)
    }
}

/// [`conv_forward`] of `x`, or of `relu(BN(x))` with `input` the BatchNorm's affine map, and the
/// per-channel mean and biased variance of the output (for the BatchNorm after it). Where the
/// direct kernels apply, `relu(BN(x))` is made image by image as the input is copied into its
/// bordered buffer (the copy is made anyway; the activation is never stored: a write and a read
/// of it fewer, and its memory), and the statistics are taken from each image's output right
/// after the kernel writes it, in cache, instead of in another pass over memory.
pub(crate) fn conv_forward_with_statistics(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    taps: &[f32],
) -> (Vec<f32>, (Vec<f64>, Vec<f64>)) {
    let co = g.out_channels;
    if forward_has_kernel(g) && (g.padding == 1 || input.is_none()) {
        let weights = taps_to_direct(taps, g);
        let mut parts = Vec::new();
        // SAFETY: the direct kernel writes every output.
        let y = unsafe {
            new_filled(x.len() / g.image_len() * g.positions() * co, |y| {
                parts = direct_forward_into_then(g, x, input, &weights, y, |yi| Moments::of_rows(yi, co));
            })
        };
        return (y, Moments::merge(parts, co));
    }
    let y = match input {
        Some(bn) => conv_forward_im2col(g, &bn.apply_new(x, true), taps),
        None => conv_forward_im2col(g, x, taps),
    };
    let statistics = mean_and_variance(&y, co);
    (y, statistics)
}

/// [`conv_forward`] of a block's first convolution `g` and of its projection shortcut `gs`, both
/// reading `x`: one pass per image where the direct kernels take both (the shortcut reads the
/// copy of the image the other just made, from cache), else one after the other.
pub(crate) fn conv_forward_with_shortcut(
    g: &Geometry,
    x: &[f32],
    taps: &[f32],
    gs: &Geometry,
    taps_s: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    if !direct::pair_applies(g, gs) {
        return (conv_forward(g, x, taps), conv_forward(gs, x, taps_s));
    }
    let n = x.len() / g.image_len();
    let (weights, weights_s) = (taps_to_direct(taps, g), taps_to_direct(taps_s, gs));
    let mut ys = Vec::new();
    // SAFETY: the direct kernels write every output of both.
    let y = unsafe {
        new_filled(n * g.positions() * g.out_channels, |y| {
            ys = new_filled(n * gs.positions() * gs.out_channels, |ys| {
                direct::forward_pair_into((g, x, &weights, y), (gs, &weights_s, ys))
            });
        })
    };
    (y, ys)
}

/// [`conv_forward`] through im2col + GEMM, whatever the shape.
pub(crate) fn conv_forward_im2col(g: &Geometry, x: &[f32], taps: &[f32]) -> Vec<f32> {
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

/// The input gradient (`n · image_len` floats, a new buffer) of [`conv_forward`] from the output
/// gradient `dy`. To add it onto an existing gradient (a residual block's two branches), call
/// [`conv_input_grad_add`].
pub(crate) fn conv_input_grad(g: &Geometry, dy: &[f32], taps: &[f32]) -> Vec<f32> {
    let len = dy.len() / (g.positions() * g.out_channels) * g.image_len();
    if input_grad_has_kernel(g) {
        // A 3×3 stride-1 convolution's input gradient is the same convolution of `dy` with the
        // kernel flipped and its channels swapped.
        let weights = taps_to_direct_input_grad(taps, g);
        // SAFETY: the direct kernel writes every output.
        return unsafe {
            new_filled(len, |dx| {
                direct_forward_into_then(&flipped(g), dy, None, &weights, dx, |_| ());
            })
        };
    }
    if g.kernel == 3 && g.stride == 2 && direct::input_grad_applies(g) {
        // SAFETY: the direct kernel writes every output.
        return unsafe { new_filled(len, |dx| direct::input_grad_stride2_into(g, dy, taps, dx, None)) };
    }
    // Both paths below add onto what is there: zeros, and no second zeroing inside.
    let mut dx = zeros(len);
    conv_input_grad_add(g, dy, taps, &mut dx);
    dx
}

/// The input gradient of a block's input through its first convolution `g` (output gradient
/// `dy`) and its projection shortcut `gs` (`dys`), summed: see [`conv_forward_with_shortcut`].
pub(crate) fn conv_input_grad_with_shortcut(
    (g, dy, taps): (&Geometry, &[f32], &[f32]),
    (gs, dys, taps_s): (&Geometry, &[f32], &[f32]),
) -> Vec<f32> {
    if !direct::pair_applies(g, gs) {
        let mut dx = conv_input_grad(g, dy, taps);
        conv_input_grad_add(gs, dys, taps_s, &mut dx);
        return dx;
    }
    let len = dy.len() / (g.positions() * g.out_channels) * g.image_len();
    // SAFETY: the direct kernel writes every output, then adds the shortcut's onto it.
    unsafe { new_filled(len, |dx| direct::input_grad_stride2_into(g, dy, taps, dx, Some((gs, dys, taps_s)))) }
}

/// Adds the input gradient of [`conv_forward`] onto `dx`.
pub(crate) fn conv_input_grad_add(g: &Geometry, dy: &[f32], taps: &[f32], dx: &mut [f32]) {
    if g.kernel == 1 && g.stride != 1 && direct::input_grad_applies(g) {
        return direct::input_grad_add(g, dy, taps, dx);
    }
    conv_input_grad_im2col(g, dy, taps, dx, true);
}

/// [`conv_input_grad`] through GEMM + col2im, whatever the shape.
pub(crate) fn conv_input_grad_im2col(g: &Geometry, dy: &[f32], taps: &[f32], dx: &mut [f32], accumulate: bool) {
    let n = dx.len() / g.image_len();
    let (rows, pos, co) = (g.rows(), g.positions(), g.out_channels);
    let chunk = g.images_per_chunk(n, CHUNK_ROWS);
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

/// The weight gradient of [`conv_forward`] as taps `(C_out, k, k, C_in)`.
pub(crate) fn conv_weight_grad_taps(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if winograd::weight_grad_applies(g) {
        return winograd::weight_grad_taps(g, x, None, dy);
    }
    if direct::weight_grad_tap_major_applies(g) {
        return direct::weight_grad_tap_major(g, x, None, dy);
    }
    if direct::applies(g) {
        return direct::weight_grad_taps(g, x, None, dy);
    }
    conv_weight_grad_taps_im2col(g, x, dy)
}

/// [`conv_weight_grad_taps`] with the input `relu(BN(a))`, made as [`conv_forward_with_statistics`]
/// makes it.
pub(crate) fn conv_weight_grad_taps_bn_relu(g: &Geometry, a: &[f32], bn: &RowAffine, dy: &[f32]) -> Vec<f32> {
    if winograd::weight_grad_applies(g) {
        return winograd::weight_grad_taps(g, a, Some(bn), dy);
    }
    if direct::weight_grad_tap_major_applies(g) {
        return direct::weight_grad_tap_major(g, a, Some(bn), dy);
    }
    if direct::applies(g) && g.padding == 1 {
        return direct::weight_grad_taps(g, a, Some(bn), dy);
    }
    conv_weight_grad_taps_im2col(g, &bn.apply_new(a, true), dy)
}

/// [`conv_weight_grad_taps`] of a block's first convolution `g` (output gradient `dy`) and of
/// its projection shortcut `gs` (`dys`), both reading `x`: see [`conv_forward_with_shortcut`].
pub(crate) fn conv_weight_grad_taps_with_shortcut(
    (g, dy): (&Geometry, &[f32]),
    (gs, dys): (&Geometry, &[f32]),
    x: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    if !direct::pair_applies(g, gs) {
        return (conv_weight_grad_taps(g, x, dy), conv_weight_grad_taps(gs, x, dys));
    }
    direct::weight_grad_taps_pair(g, x, dy, gs, dys)
}

/// [`conv_weight_grad_taps`] through im2col + GEMM, whatever the shape.
pub(crate) fn conv_weight_grad_taps_im2col(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let n = x.len() / g.image_len();
    let (rows, pos, co) = (g.rows(), g.positions(), g.out_channels);
    let chunk = g.images_per_chunk(n, WEIGHT_GRAD_CHUNK_ROWS);
    x.par_chunks(chunk * g.image_len())
        .zip(dy.par_chunks(chunk * pos * co))
        .fold(
            || vec![0f32; co * rows],
            |mut acc, (xc, dyc)| {
                let m = dyc.len() / co;
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
        )
        .reduce(
            || vec![0f32; co * rows],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// The forward convolution, `(x, w) → y` on channels-last `x`, with its backward built from the
/// two ops below.
#[derive(Debug, Clone, Copy)]
struct ConvForward(Geometry);

/// `(dy, w) → dx`.
#[derive(Debug, Clone, Copy)]
struct ConvInputGrad(Geometry);

/// `(x, dy) → dw`.
#[derive(Debug, Clone, Copy)]
struct ConvWeightGrad(Geometry);

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, w) = (f32_slice(OP, xs, xl, "input")?, f32_slice(OP, ws, wl, "weight")?);
        let n = xl.dims()[0];
        let y = conv_forward(&g, x, &weight_to_taps(w, &g));
        Ok((CpuStorage::F32(y), Shape::from((n, g.out_h(), g.out_w(), g.out_channels))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &ConvInputGrad(self.0))?;
        let dw = x.apply_op2_no_bwd(&dy, &ConvWeightGrad(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-input-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (dy, w) = (f32_slice(OP, ds, dl, "output gradient")?, f32_slice(OP, ws, wl, "weight")?);
        let n = dl.dims()[0];
        let dx = conv_input_grad(&g, dy, &weight_to_taps(w, &g));
        Ok((CpuStorage::F32(dx), Shape::from((n, g.height, g.width, g.channels))))
    }
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-weight-grad"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ds: &CpuStorage, dl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (x, dy) = (f32_slice(OP, xs, xl, "input")?, f32_slice(OP, ds, dl, "output gradient")?);
        let dw = taps_to_weight(&conv_weight_grad_taps(&g, x, dy), &g);
        Ok((CpuStorage::F32(dw), Shape::from((g.out_channels, g.channels, g.kernel, g.kernel))))
    }
}

/// A square-kernel convolution without bias (ResNets put BatchNorm after every conv).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
    imp: ConvImpl,
    precision: crate::Precision,
}

impl Conv2d {
    /// `weight` is `(C_out, C_in, k, k)` in either layout.
    pub fn new(weight: Tensor, stride: usize, padding: usize, imp: ConvImpl) -> Self {
        Self { weight, stride, padding, imp, precision: crate::Precision::F32 }
    }

    /// The same convolution in `precision` (bf16 runs channels first, on candle's kernels).
    pub fn with_precision(self, precision: crate::Precision) -> Self {
        Self { precision, ..self }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The geometry of this convolution on channels-last images of `height × width` (the
    /// channel counts from the weight).
    pub(crate) fn geometry(&self, height: usize, width: usize) -> Result<Geometry> {
        let (co, ci, k, k2) = self.weight.dims4()?;
        if k != k2 {
            candle_core::bail!("conv2d: the kernel must be square, the weight is {:?}", self.weight.dims());
        }
        Ok(Geometry {
            channels: ci,
            height,
            width,
            kernel: k,
            stride: self.stride,
            padding: self.padding,
            out_channels: co,
        })
    }

    /// The convolution of `x` laid out as `layout` (what [`ConvImpl::layout_for`] chose), in the
    /// same layout.
    pub fn forward_in(&self, x: &Tensor, layout: ActLayout) -> Result<Tensor> {
        match layout {
            ActLayout::ChannelsFirst => {
                self.precision.apply(x, &self.weight, |x, w| x.conv2d(w, self.padding, self.stride, 1, 1))
            }
            ActLayout::ChannelsLast => {
                if self.precision != crate::Precision::F32 {
                    candle_core::bail!("conv2d: channels-last activations are f32 only");
                }
                if !(x.device().is_cpu() && x.dtype() == DType::F32) {
                    candle_core::bail!("conv2d: channels-last activations need the CPU and f32");
                }
                let (_, h, w, c) = x.dims4()?;
                let (co, ci, k, k2) = self.weight.dims4()?;
                if ci != c || k != k2 {
                    candle_core::bail!("conv2d: input has {c} channels, the weight is {:?}", self.weight.dims());
                }
                let g = Geometry {
                    channels: c,
                    height: h,
                    width: w,
                    kernel: k,
                    stride: self.stride,
                    padding: self.padding,
                    out_channels: co,
                };
                x.contiguous()?.apply_op2(&self.weight.contiguous()?, ConvForward(g))
            }
        }
    }
}

impl Module for Conv2d {
    /// `(N, C, H, W)` in and out, whichever kernels run.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let layout =
            if self.precision == crate::Precision::F32 { self.imp.layout_for(x) } else { ActLayout::ChannelsFirst };
        layout.to_nchw(&self.forward_in(&layout.from_nchw(x)?, layout)?)
    }
}

/// One convolution's shape for [`time_passes`]: `batch` images of `channels × side × side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub channels: usize,
    pub side: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Whether training needs the input gradient here (not for the stem: the images need none).
    pub input_grad: bool,
    /// With the 1×1 stride-2 projection shortcut (same input, `out_channels`) beside it: a
    /// downsampling block's first convolution, timed as training runs the two, together
    /// where the direct kernels take both (`conv_forward_with_shortcut`).
    pub shortcut: bool,
}

impl ConvShape {
    fn geometry(&self) -> Geometry {
        Geometry {
            channels: self.channels,
            height: self.side,
            width: self.side,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.kernel / 2,
            out_channels: self.out_channels,
        }
    }

    /// The shortcut's geometry.
    fn shortcut_geometry(&self) -> Geometry {
        Geometry { kernel: 1, padding: 0, ..self.geometry() }
    }

    /// Floating-point operations of one pass (each pass is one multiply-add per weight tap and
    /// output position: 2 FLOPs), the shortcut's included.
    pub fn flops(&self) -> f64 {
        let g = self.geometry();
        let taps = g.rows() + if self.shortcut { g.channels } else { 0 };
        2.0 * (self.batch * g.positions() * taps * self.out_channels) as f64
    }

    /// The distinct convolutions of the small-stem ResNet-18 on `side`-pixel images, each with
    /// how many times it occurs; each stage's first with its shortcut.
    pub fn resnet18(widths: [usize; 4], batch: usize, side: usize) -> Vec<(ConvShape, usize)> {
        let shape = |channels, side, out_channels, kernel, stride| ConvShape {
            batch,
            channels,
            side,
            out_channels,
            kernel,
            stride,
            input_grad: true,
            shortcut: false,
        };
        let stem = ConvShape { input_grad: false, ..shape(3, side, widths[0], 3, 1) };
        let mut out = vec![(stem, 1), (shape(widths[0], side, widths[0], 3, 1), 4)];
        let mut s = side;
        for pair in widths.windows(2) {
            let (cin, c) = (pair[0], pair[1]);
            out.push((ConvShape { shortcut: true, ..shape(cin, s, c, 3, 2) }, 1));
            s = s.div_ceil(2);
            out.push((shape(c, s, c, 3, 1), 3));
        }
        out
    }
}

/// Seconds per call of each pass of a convolution, best of the repetitions.
#[derive(Debug, Clone, Copy)]
pub struct PassSeconds {
    pub forward: f64,
    /// The gradients training computes here (candle's autograd: both).
    pub backward: f64,
    /// How many passes `backward` is: 2, or 1 where training needs no input gradient.
    pub backward_passes: usize,
    /// The input and weight gradients apart, where the kernels compute them apart (not candle's
    /// autograd, which makes both in one call) and training needs them.
    pub input_grad: Option<f64>,
    pub weight_grad: Option<f64>,
}

/// Times the forward and backward passes of `imp` on random data, each as a training step runs
/// it (the input gradient where [`ConvShape::input_grad`], the shortcut beside it where
/// [`ConvShape::shortcut`]).
pub fn time_passes(shape: ConvShape, imp: ConvImpl, repetitions: usize) -> Result<PassSeconds> {
    use std::time::Instant;
    let dev = candle_core::Device::Cpu;
    let (g, gs) = (shape.geometry(), shape.shortcut_geometry());
    let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?; // warm-up: thread pool, allocator, caches
        let mut best = f64::INFINITY;
        for _ in 0..repetitions.max(1) {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let w = Tensor::randn(0f32, 1.0, (g.out_channels, g.channels, g.kernel, g.kernel), &dev)?;
    let ws = Tensor::randn(0f32, 1.0, (g.out_channels, g.channels, 1, 1), &dev)?;
    match imp {
        ConvImpl::Im2col if shape.shortcut => {
            let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            let x = values(&Tensor::randn(0f32, 1.0, shape.batch * g.image_len(), &dev)?)?;
            let dy = values(&Tensor::randn(0f32, 1.0, shape.batch * g.positions() * g.out_channels, &dev)?)?;
            let dys = values(&Tensor::randn(0f32, 1.0, dy.len(), &dev)?)?;
            let (w, ws) = (values(&w)?, values(&ws)?);
            // The weights' reordering is part of each pass, as in training.
            let forward = best(&mut || {
                conv_forward_with_shortcut(&g, &x, &weight_to_taps(&w, &g), &gs, &weight_to_taps(&ws, &gs));
                Ok(())
            })?;
            let input_grad = best(&mut || {
                let (taps, taps_s) = (weight_to_taps(&w, &g), weight_to_taps(&ws, &gs));
                conv_input_grad_with_shortcut((&g, &dy, &taps), (&gs, &dys, &taps_s));
                Ok(())
            })?;
            let weight_grad = best(&mut || {
                let (dw, dws) = conv_weight_grad_taps_with_shortcut((&g, &dy), (&gs, &dys), &x);
                std::hint::black_box((taps_to_weight(&dw, &g), taps_to_weight(&dws, &gs)));
                Ok(())
            })?;
            Ok(PassSeconds {
                forward,
                backward: input_grad + weight_grad,
                backward_passes: 2,
                input_grad: Some(input_grad),
                weight_grad: Some(weight_grad),
            })
        }
        ConvImpl::Im2col => {
            let x = Tensor::randn(0f32, 1.0, (shape.batch, g.height, g.width, g.channels), &dev)?;
            let dy = Tensor::randn(0f32, 1.0, (shape.batch, g.out_h(), g.out_w(), g.out_channels), &dev)?;
            let forward = best(&mut || x.apply_op2_no_bwd(&w, &ConvForward(g)).map(drop))?;
            let input_grad = if shape.input_grad {
                Some(best(&mut || dy.apply_op2_no_bwd(&w, &ConvInputGrad(g)).map(drop))?)
            } else {
                None
            };
            let weight_grad = best(&mut || x.apply_op2_no_bwd(&dy, &ConvWeightGrad(g)).map(drop))?;
            Ok(PassSeconds {
                forward,
                backward: input_grad.unwrap_or(0.0) + weight_grad,
                backward_passes: 1 + usize::from(input_grad.is_some()),
                input_grad,
                weight_grad: Some(weight_grad),
            })
        }
        ConvImpl::Candle => {
            let x = candle_core::Var::from_tensor(&Tensor::randn(
                0f32,
                1.0,
                (shape.batch, g.channels, g.height, g.width),
                &dev,
            )?)?;
            let (wv, wsv) = (candle_core::Var::from_tensor(&w)?, candle_core::Var::from_tensor(&ws)?);
            // Both convolutions where there is a shortcut, each its own call.
            let outputs = || -> Result<Vec<Tensor>> {
                let y = x.conv2d(&wv, g.padding, g.stride, 1, 1)?;
                Ok(if shape.shortcut { vec![y, x.conv2d(&wsv, 0, gs.stride, 1, 1)?] } else { vec![y] })
            };
            let forward = best(&mut || outputs().map(drop))?;
            let ys = outputs()?;
            let dys = ys.iter().map(|y| Tensor::randn(0f32, 1.0, y.shape(), &dev)).collect::<Result<Vec<_>>>()?;
            let backward = best(&mut || {
                let mut total = (&ys[0] * &dys[0])?.sum_all()?;
                for (y, dy) in ys.iter().zip(&dys).skip(1) {
                    total = (total + (y * dy)?.sum_all()?)?;
                }
                total.backward().map(drop)
            })?;
            Ok(PassSeconds { forward, backward, backward_passes: 2, input_grad: None, weight_grad: None })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::cpu::max_rel;

    /// Output, input gradient and weight gradient equal candle's reference implementation.
    #[test]
    fn im2col_matches_candle_forward_and_gradients() {
        let dev = Device::Cpu;
        for &(n, c, h, co, k, s, p) in &[
            (3, 4, 9, 5, 3, 1, 1),
            (2, 3, 8, 6, 3, 2, 1),
            (2, 4, 8, 3, 1, 2, 0),
            (2, 4, 5, 3, 1, 1, 0),
            (2, 3, 12, 4, 7, 2, 3),
            // Several images per GEMM chunk, the last chunk shorter.
            (40, 3, 4, 5, 3, 1, 1),
            (40, 4, 8, 3, 1, 2, 0),
            (70, 6, 4, 5, 3, 2, 1),
        ] {
            // candle's own backward mishandles odd sizes at stride 2, so the reference only sees even ones there.
            let wd = if s == 1 { h + 1 } else { h };
            let x = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (n, c, h, wd), &dev).unwrap()).unwrap();
            let wt = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (co, c, k, k), &dev).unwrap()).unwrap();
            let upstream = {
                let probe = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1).unwrap();
                crate::cpu::test_randn(0f32, 1.0, probe.shape(), &dev).unwrap()
            };
            let run = |imp: ConvImpl| {
                let conv = Conv2d::new(wt.as_tensor().clone(), s, p, imp);
                let y = conv.forward(x.as_tensor()).unwrap();
                let grads = (&y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
                (y, grads.get(x.as_tensor()).unwrap().clone(), grads.get(wt.as_tensor()).unwrap().clone())
            };
            let (y0, gx0, gw0) = run(ConvImpl::Candle);
            let (y1, gx1, gw1) = run(ConvImpl::Im2col);
            let case = format!("n{n} c{c} h{h} co{co} k{k} s{s} p{p}");
            assert!(max_rel(&y1, &y0) < 1e-5, "output {case}: {}", max_rel(&y1, &y0));
            assert!(max_rel(&gx1, &gx0) < 1e-5, "input grad {case}: {}", max_rel(&gx1, &gx0));
            assert!(max_rel(&gw1, &gw0) < 1e-5, "weight grad {case}: {}", max_rel(&gw1, &gw0));
        }
    }

    /// A convolution of `relu(BN(a))` made as its bordered copy is filled equals, bit for bit,
    /// the convolution of the stored activation, forward and weight gradient, and the output's
    /// statistics taken image by image equal those of the whole output: on the direct kernels
    /// (3×3 at stride 1 and 2, one-row tiles and tap-major over 9 images, a short last chunk)
    /// and where they do not apply (24 output channels: made in full).
    #[test]
    fn convolving_bn_relu_of_the_input_equals_convolving_the_activation() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        for &(n, c, side, co, stride) in &[
            (3, 16, 9, 16, 1),
            (2, 32, 6, 64, 1),
            (2, 16, 7, 32, 2),
            (9, 256, 4, 256, 1),
            (3, 128, 7, 64, 2),
            (2, 32, 5, 24, 1),
        ] {
            let g =
                Geometry { channels: c, height: side, width: side, kernel: 3, stride, padding: 1, out_channels: co };
            let a: Vec<f32> = (0..n * g.image_len()).map(|_| rng.random_range(-2.0..2.0)).collect();
            let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..1.5)).collect();
            let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
            let bn = RowAffine::of_batch(&a, &gamma, &beta, 1e-5);
            let b = bn.apply_new(&a, true);
            assert!(b.iter().filter(|v| **v == 0.0).count() > b.len() / 5, "the ReLU should cut");
            let taps: Vec<f32> = (0..co * g.rows()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
            let case = format!("{c}→{co} on {side}×{side}, stride {stride}");
            let (y, (mean, var)) = conv_forward_with_statistics(&g, &a, Some(&bn), &taps);
            assert_eq!(y, conv_forward(&g, &b, &taps), "forward {case}");
            let (want_mean, want_var) = mean_and_variance(&y, co);
            // Each against its own scale: a mean near zero against the spread of the values.
            let std: Vec<f64> = want_var.iter().map(|v| v.sqrt().max(1e-3)).collect();
            let var_scale: Vec<f64> = want_var.iter().map(|v| v.max(1e-3)).collect();
            for (what, got, want, scale) in
                [("mean", &mean, &want_mean, &std), ("variance", &var, &want_var, &var_scale)]
            {
                let e = (0..co).map(|o| (got[o] - want[o]).abs() / scale[o]).fold(0f64, f64::max);
                assert!(e < 1e-6, "{what} of the output {case}: {e}");
            }
            assert_eq!(
                conv_weight_grad_taps_bn_relu(&g, &a, &bn, &dy),
                conv_weight_grad_taps(&g, &b, &dy),
                "weight gradient {case}"
            );
        }
    }

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        use rand::{Rng, SeedableRng};
        let g = Geometry { channels: 2, height: 5, width: 6, kernel: 3, stride: 2, padding: 1, out_channels: 1 };
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
