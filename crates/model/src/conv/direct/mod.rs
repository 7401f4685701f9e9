//! Convolutions computed directly with AVX-512, no im2col: 3×3 stride 1 and 2 (padding 1) and
//! 1×1 stride 2 (the shortcuts), up to 128 input channels, each image's output in tiles of
//! pixels along one output row ([`Job`]). The small planes of many channels are `tap_major`'s.
//!
//! At the narrow widths (3-64 channels) the im2col GEMM is starved: each im2col float feeds
//! only `C_out` multiply-adds, and the matrix is written, packed by the GEMM and read again
//! (measured at width 0.25: the 16→16 layers ran at 20-25 GFLOP/s per core where the 64- and
//! 128-channel ones reached 50-60; the 1×1 stride-2 shortcuts, GEMMs with 16-64-long inner
//! products over a strided copy, at 35-65 on two cores). Here each thread reads one image — a
//! zero-bordered copy where the kernel is padded — and slides the kernel over it: a tile of `P`
//! output pixels × `16·V` output channels lives in `P·V` AVX-512 accumulators, and each step
//! over (tap, input channel) is `V` weight loads, `P` broadcasts and `P·V` fused multiply-adds,
//! all from L1. At 64-128 channels the GEMM is fed, but the direct kernel still wins: no
//! im2col matrix to write and pack, and 24 accumulators against the `gemm` crate's 256-bit tiles.
//!
//! The input gradient of a 3×3 stride-1 convolution is the same kernel run on the output
//! gradient with the kernel flipped and its channels swapped; that of a 3×3 stride-2 one is four
//! small stride-1 convolutions of it (one per parity of the input pixel's row and column); that
//! of a 1×1 stride-2 one is a 1×1 convolution of it whose outputs land on every other pixel.
//! The weight gradient keeps `R` input channels × `16·V` output channels of one tap in
//! accumulators while it runs over every output pixel, or every tap at once where the input has
//! at most 3 channels (the stem).
//!
//! Applies where the CPU has AVX-512F, `C_out` is a multiple of 16 and the channel counts are
//! those measured to beat im2col ([`handles_forward`]); elsewhere another kernel runs. The
//! numbers equal im2col's up to the order of the sums (tests). `conv` hands the 3×3 stride-1
//! convolutions of 16 channels and more on even planes to `winograd` first (fewer
//! multiply-adds), and those of 128 channels and more on small planes to `tap_major`; these
//! kernels keep the rest: the stem, the stride-2 and 1×1 convolutions, odd planes, and the
//! 16-channel weight gradient.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::{add_into, ordered_zip_fold};

use crate::conv::shared::{avx512, direct_to_taps, with_buffer, with_input, with_inputs, Geometry, RowAffine};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Whether [`forward_into_then`] computes this convolution on this CPU (and [`weight_grad_taps`]
/// its weight gradient: [`handles_weight_grad`]): where they beat im2col. Measured for 3×3
/// stride 1 on one core, batch 128 (GFLOP/s, im2col → direct, the best of three): 16→16 at 32×32 forward 20 → 37, input gradient 25 → 45, weight
/// gradient 22 → 47; 32→32 at 16×16 42 → 50, 40 → 61, 37 → 67; at 64 channels mixed within the
/// noise; at 128 (4×4 planes) slower, the GEMM's larger tiles winning. On two cores, batch 128
/// (`infomax bench conv`, two alternated runs, forward / input gradient / weight gradient): the
/// stem 3→16 163-169 / – / 69-72 → 180-185 / – / 191-193 and 3→64 92-95 / – / 72-75 → 105-120 /
/// – / 134-144; 3×3 stride 2 16→32 109-111 / 99-121 / 105-107 → 153-162 / 173-189 / 161-180
/// (the input gradient 125-159 → 173-189 in its own alternated pair), 32→64 at 32×32 input
/// gradient 149-160 → 177-178; 1×1 stride 2 16→32 50-61 / 55-71 / 59-71 → 171-187 / 178-196 /
/// 134-188, 32→64 at 32×32 84-91 / 68-69 / 68-84 → 134-155 / 125-154 / 100-124. Once the
/// forward had 64-channel tiles, at width 1.0 (three alternated runs): 3×3 stride 1 64→64 at
/// 32×32 198-202 / 190-191 / 164-184 → 215-218 / 194-218 / 193-221, 128→128 at 16×16 199-205 /
/// 200-207 / 188-193 → 199-223 / 219-221 / 215-219; 3×3 stride 2 64→128 176-189 / 169-189 /
/// 167-180 → 205-210 / 207-211 / 200-209; 1×1 stride 2 128→256 137-150 / 148-155 / 139-144 →
/// 138-161 / 156-183 / 130-161. Not taken, measured no better or worse: 3×3 stride 1 at 256 (8×8)
/// and 512 (4×4) channels (512's weight gradient 57-70 against 160-175), 3×3 stride 2 128→256.
pub(crate) fn handles_forward(g: &Geometry) -> bool {
    let (c, co) = (g.channels, g.out_channels);
    co.is_multiple_of(16)
        && match (g.kernel, g.stride, g.padding) {
            (3, 1, 1) => c <= 128 && co <= 128,
            (3, 2, 1) => c <= 64 && co <= 128,
            (1, 2, 0) => c <= 128 && co <= 256,
            _ => false,
        }
        && avx512()
}

/// Whether [`weight_grad_taps`] computes this convolution's weight gradient on this CPU: the
/// shapes of the forward ([`handles_forward`]), measured together.
pub(crate) fn handles_weight_grad(g: &Geometry) -> bool {
    handles_forward(g)
}

/// Whether the input gradient of the strided convolution `g` has a direct kernel: the 3×3
/// stride-2 one through [`input_grad_stride2_into`], the 1×1 stride-2 one through
/// [`input_grad_add`], where the forward has one and the input's channels are a multiple of 16.
/// (The 3×3 stride-1 input gradient is a forward: that of the flipped kernel.)
pub(crate) fn handles_strided_input_grad(g: &Geometry) -> bool {
    matches!((g.kernel, g.stride, g.padding), (3, 2, 1) | (1, 2, 0))
        && handles_forward(g)
        && g.channels.is_multiple_of(16)
}

/// Whether the 3×3 stride-2 convolution `g` and the 1×1 stride-2 projection shortcut `gs` of the
/// same input run as one pass per image ([`forward_pair_into`], [`input_grad_stride2_into`] with
/// a shortcut, [`weight_grad_taps_pair`]): both have direct kernels for every pass
/// ([`handles_strided_input_grad`]). The shortcut's pixel (oy, ox) is the centre of the 3×3
/// window of (oy, ox), so it reads the zero-bordered copy the 3×3 kernel just wrote, from
/// cache, instead of the image from memory.
pub(crate) fn handles_downsampling_pair(g: &Geometry, gs: &Geometry) -> bool {
    (g.kernel, g.stride, g.padding, gs.kernel, gs.stride, gs.padding) == (3, 2, 1, 1, 2, 0)
        && (g.channels, g.height, g.width) == (gs.channels, gs.height, gs.width)
        && handles_strided_input_grad(g)
        && handles_strided_input_grad(gs)
}

/// A [`ForwardKernel`](crate::conv::shared::ForwardKernel): each image's output in tiles of
/// pixels along its rows, from the image or its zero-bordered copy. Only where
/// [`handles_forward`].
pub(crate) fn forward_into_then<T: Send>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [MaybeUninit<f32>],
    then: &(dyn Fn(&[f32]) -> T + Sync),
) -> Vec<T> {
    assert!(handles_forward(g), "direct convolution called where it does not apply");
    let co = g.out_channels;
    let out_len = g.positions() * co;
    assert_eq!(y.len(), x.len() / g.image_len() * out_len, "direct convolution: output size");
    assert_eq!(weights.len(), g.rows() * co, "direct convolution: weight size");
    y.par_chunks_mut(out_len)
        .zip(x.par_chunks(g.image_len()))
        .map(|(yi, xi)| {
            with_input(g, xi, input, |plane, x_row| forward_job(g, plane, x_row, weights, yi).run());
            // SAFETY: the job wrote every element of the image's output.
            then(unsafe { std::slice::from_raw_parts(yi.as_ptr().cast::<f32>(), yi.len()) })
        })
        .collect()
}

/// One image's forward: `plane` as [`with_input`] hands it, `y` its `(out_h, out_w, C_out)`.
fn forward_job<'a>(
    g: &Geometry,
    plane: &'a [f32],
    x_row: usize,
    weights: &'a [f32],
    y: &mut [MaybeUninit<f32>],
) -> Job<'a> {
    let (co, ow) = (g.out_channels, g.out_w());
    Job {
        x: plane,
        x_row,
        c: g.channels,
        kernel: (g.kernel, g.kernel),
        stride: g.stride,
        weights,
        co,
        oh: g.out_h(),
        ow,
        y: y.as_mut_ptr().cast(),
        y_len: y.len(),
        y_pixel: co,
        y_row: ow * co,
        accumulate: false,
    }
}

/// [`forward_into_then`] for the 3×3 stride-2 convolution `g` and, image by image, its 1×1
/// stride-2 shortcut `gs` (weights from `taps_to_direct`) into `ys`. Only where
/// [`handles_downsampling_pair`].
pub(crate) fn forward_pair_into(
    (g, x, weights, y): (&Geometry, &[f32], &[f32], &mut [MaybeUninit<f32>]),
    (gs, weights_s, ys): (&Geometry, &[f32], &mut [MaybeUninit<f32>]),
) {
    assert!(handles_downsampling_pair(g, gs), "direct convolution pair called where it does not apply");
    let (out_len, out_len_s) = (g.positions() * g.out_channels, gs.positions() * gs.out_channels);
    let n = x.len() / g.image_len();
    assert!(y.len() == n * out_len && ys.len() == n * out_len_s, "direct convolution pair: output sizes");
    assert!(weights.len() == g.rows() * g.out_channels && weights_s.len() == gs.rows() * gs.out_channels);
    let outputs = y.par_chunks_mut(out_len).zip(ys.par_chunks_mut(out_len_s));
    outputs.zip(x.par_chunks(g.image_len())).for_each(|((yi, ysi), xi)| {
        with_input(g, xi, None, |plane, x_row| {
            forward_job(g, plane, x_row, weights, yi).run();
            // The 1×1 kernel reads the bordered copy from its first interior pixel.
            forward_job(gs, &plane[x_row + g.channels..], x_row, weights_s, ysi).run();
        })
    });
}

/// Adds the input gradient of the 1×1 stride-2 convolution `g` onto `dx` `(n, H, W, C_in)`:
/// each output pixel's gradient `dy` times the weight (taps `(C_out, C_in)`) onto the input
/// pixel it read; the others get nothing. Only where [`handles_strided_input_grad`].
pub(crate) fn input_grad_add(g: &Geometry, dy: &[f32], taps: &[f32], dx: &mut [f32]) {
    assert!(g.kernel == 1 && handles_strided_input_grad(g), "direct input gradient called where it does not apply");
    let (c, co, oh, ow) = (g.channels, g.out_channels, g.out_h(), g.out_w());
    assert_eq!(dy.len(), dx.len() / g.image_len() * oh * ow * co, "direct input gradient: sizes");
    assert_eq!(taps.len(), co * c, "direct input gradient: weight size");
    dx.par_chunks_mut(g.image_len())
        .zip(dy.par_chunks(oh * ow * co))
        .for_each(|(dxi, dyi)| shortcut_input_grad_job(g, dyi, taps, dxi).run());
}

/// One image's input gradient of the 1×1 stride-2 convolution `g`, added onto `dx`: a 1×1
/// convolution of `dy` (C_out → C_in channels, weights `(C_out, C_in)`: the taps as they are)
/// whose pixel (oy, ox) lands on (stride·oy, stride·ox).
fn shortcut_input_grad_job<'a>(g: &Geometry, dy: &'a [f32], taps: &'a [f32], dx: &mut [f32]) -> Job<'a> {
    let (c, co, ow) = (g.channels, g.out_channels, g.out_w());
    Job {
        x: dy,
        x_row: ow * co,
        c: co,
        kernel: (1, 1),
        stride: 1,
        weights: taps,
        co: c,
        oh: g.out_h(),
        ow,
        y: dx.as_mut_ptr(),
        y_len: dx.len(),
        y_pixel: g.stride * c,
        y_row: g.stride * g.width * c,
        accumulate: true,
    }
}

/// The input gradient of the 3×3 stride-2 convolution `g` (padding 1) from the output gradient
/// `dy`, written into `dx` `(n, H, W, C_in)`, every element of it. Input row `iy` is read by
/// kernel row 1 of output row `iy/2` when even, by kernel rows 2 and 0 of output rows
/// `(iy − 1)/2` and `(iy + 1)/2` when odd, and likewise along a row; so the input pixels fall
/// into four parity classes, each a stride-1 convolution of `dy` with a 1×1, 1×2, 2×1 or 2×2
/// part of the kernel whose outputs land on every other pixel of every other row. `dy` gets a
/// zero row below and a zero column right for the odd classes' second tap at the edge. With a
/// `shortcut` (its geometry, output gradient and taps `(C_out, C_in)`), its input gradient is
/// added onto each image's while that is in cache. Only where [`handles_strided_input_grad`]
/// (and [`handles_downsampling_pair`] with a shortcut).
pub(crate) fn input_grad_stride2_into(
    g: &Geometry,
    dy: &[f32],
    taps: &[f32],
    dx: &mut [MaybeUninit<f32>],
    shortcut: Option<(&Geometry, &[f32], &[f32])>,
) {
    assert!(
        g.kernel == 3 && g.stride == 2 && handles_strided_input_grad(g),
        "direct input gradient where it does not apply"
    );
    let (c, co, h, w, oh, ow, rows) = (g.channels, g.out_channels, g.height, g.width, g.out_h(), g.out_w(), g.rows());
    let n = dx.len() / g.image_len();
    assert_eq!(dy.len(), n * oh * ow * co, "direct input gradient: sizes");
    assert_eq!(taps.len(), co * rows, "direct input gradient: weight size");
    if let Some((gs, dys, taps_s)) = shortcut {
        assert!(handles_downsampling_pair(g, gs), "direct input gradient pair where it does not apply");
        assert_eq!(dys.len(), n * gs.positions() * gs.out_channels, "direct input gradient: shortcut sizes");
        assert_eq!(taps_s.len(), gs.out_channels * c, "direct input gradient: shortcut weight size");
    }
    // Window offset `a` of a class of parity `p` is kernel row (or column) 1 when p is 0, else 2 − 2a.
    let tap = |p: usize, a: usize| if p == 0 { 1 } else { 2 - 2 * a };
    let classes: Vec<((usize, usize), Vec<f32>)> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .into_iter()
        .map(|(py, px)| {
            let (kh, kw) = (1 + py, 1 + px);
            // (kh, kw, C_out, C_in): for each tap and output channel, the input channels.
            let mut weights = vec![0f32; kh * kw * co * c];
            for a in 0..kh {
                for b in 0..kw {
                    let t = tap(py, a) * 3 + tap(px, b);
                    for o in 0..co {
                        weights[((a * kw + b) * co + o) * c..][..c].copy_from_slice(&taps[o * rows + t * c..][..c]);
                    }
                }
            }
            ((py, px), weights)
        })
        .collect();
    let x_row = (ow + 1) * co;
    dx.par_chunks_mut(g.image_len()).zip(dy.par_chunks(oh * ow * co)).enumerate().for_each(|(i, (dxi, dyi))| {
        let fill = |buf: &mut [f32]| {
            for (src, dst) in dyi.chunks_exact(ow * co).zip(buf.chunks_exact_mut(x_row)) {
                dst[..ow * co].copy_from_slice(src);
                dst[ow * co..].fill(0.0);
            }
            buf[oh * x_row..].fill(0.0);
        };
        with_buffer((oh + 1) * x_row, fill, |bordered| {
            for ((py, px), weights) in &classes {
                let (mh, mw) = ((h - py).div_ceil(2), (w - px).div_ceil(2));
                if mh == 0 || mw == 0 {
                    continue;
                }
                let first = (py * w + px) * c;
                let job = Job {
                    x: bordered,
                    x_row,
                    c: co,
                    kernel: (1 + py, 1 + px),
                    stride: 1,
                    weights,
                    co: c,
                    oh: mh,
                    ow: mw,
                    y: dxi[first..].as_mut_ptr().cast(),
                    y_len: dxi.len() - first,
                    y_pixel: 2 * c,
                    y_row: 2 * w * c,
                    accumulate: false,
                };
                job.run();
            }
        });
        if let Some((gs, dys, taps_s)) = shortcut {
            // SAFETY: the four classes wrote every element of `dxi`.
            let dxi = unsafe { std::slice::from_raw_parts_mut(dxi.as_mut_ptr().cast::<f32>(), dxi.len()) };
            let len = gs.positions() * gs.out_channels;
            shortcut_input_grad_job(gs, &dys[i * len..][..len], taps_s, dxi).run();
        }
    });
}

/// A [`WeightGradKernel`](crate::conv::shared::WeightGradKernel): the weight gradient of
/// [`forward_into_then`] as taps `(C_out, k, k, C_in)` from the input `x` and the output
/// gradient `dy`, summed over the images. Only where [`handles_weight_grad`]. With `input` the
/// images are `relu(x · scale + shift)` of those `x`, as in [`forward_into_then`].
pub(crate) fn weight_grad_taps(g: &Geometry, x: &[f32], input: Option<&RowAffine>, dy: &[f32]) -> Vec<f32> {
    assert!(handles_weight_grad(g), "direct convolution called where it does not apply");
    weight_grads(g, x, input, dy, None).0
}

/// [`weight_grad_taps`] of the 3×3 stride-2 convolution `g` (output gradient `dy`) and of its
/// 1×1 stride-2 shortcut `gs` (`dys`), image by image from one bordered copy of `x`. Only
/// where [`handles_downsampling_pair`].
pub(crate) fn weight_grad_taps_pair(
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    gs: &Geometry,
    dys: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    assert!(handles_downsampling_pair(g, gs), "direct convolution pair called where it does not apply");
    let (taps, taps_s) = weight_grads(g, x, None, dy, Some((gs, dys)));
    (taps, taps_s.expect("a shortcut's sums"))
}

fn weight_grads(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    dy: &[f32],
    shortcut: Option<(&Geometry, &[f32])>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    fn images_job<'a>(
        g: &Geometry,
        planes: &'a [f32],
        (x_row, x_image): (usize, usize),
        dy: &'a [f32],
    ) -> WeightJob<'a> {
        let dy_image = g.positions() * g.out_channels;
        WeightJob {
            x: planes,
            x_row,
            c: g.channels,
            kernel: g.kernel,
            stride: g.stride,
            dy,
            co: g.out_channels,
            oh: g.out_h(),
            ow: g.out_w(),
            images: dy.len() / dy_image,
            x_image,
            dy_image,
        }
    }
    let out_len = g.positions() * g.out_channels;
    let n = x.len() / g.image_len();
    assert_eq!(dy.len(), n * out_len, "direct weight gradient: sizes");
    let len_s = shortcut.map_or(0, |(gs, _)| gs.rows() * gs.out_channels);
    if let Some((gs, dys)) = shortcut {
        assert_eq!(dys.len(), n * gs.positions() * gs.out_channels, "direct weight gradient: shortcut sizes");
    }
    // Small planes a few images at a time, each tile's sums kept in registers over all of
    // them: over one 4×4 plane a tile's 16 pixels hardly paid for loading and storing its sums
    // (width 0.25, GFLOP/s: 128→128 at 4×4 140-163, 3×3 stride-2 64→128 with its shortcut on
    // 8×8 126-153).
    let chunk = 64usize.div_ceil(g.positions()).min(n.max(1));
    let zero = || (vec![0f32; g.rows() * g.out_channels], vec![0f32; len_s]);
    let (per_tap, per_tap_s) = ordered_zip_fold(
        (x, chunk * g.image_len()),
        (dy, chunk * out_len),
        zero,
        |(mut acc, mut acc_s), i, xc, dyc| {
            with_inputs(g, xc, input, |planes, x_row, plane| {
                images_job(g, planes, (x_row, plane), dyc).run(&mut acc);
                if let Some((gs, dys)) = shortcut {
                    let len = chunk * gs.positions() * gs.out_channels;
                    let dysc = &dys[i * len..dys.len().min((i + 1) * len)];
                    // The 1×1 kernel reads the bordered copies from their first interior pixel.
                    let interior = &planes[x_row + g.channels..];
                    images_job(gs, interior, (x_row, plane), dysc).run(&mut acc_s);
                }
            });
            (acc, acc_s)
        },
        |(a, a_s), (b, b_s)| (add_into(a, b), add_into(a_s, b_s)),
    );
    (direct_to_taps(&per_tap, g), shortcut.map(|(gs, _)| direct_to_taps(&per_tap_s, gs)))
}

/// One image's convolution for the kernels: output pixel (oy, ox) reads the `kernel.0 ×
/// kernel.1` window of `x` whose corner is pixel (stride·oy, stride·ox) (rows of `x_row` floats,
/// pixels of `c`), and writes (or adds) its `co` channels at `y + oy·y_row + ox·y_pixel`.
struct Job<'a> {
    x: &'a [f32],
    x_row: usize,
    c: usize,
    /// Kernel rows and columns.
    kernel: (usize, usize),
    stride: usize,
    /// `(kernel.0, kernel.1, c, co)`.
    weights: &'a [f32],
    co: usize,
    oh: usize,
    ow: usize,
    y: *mut f32,
    y_len: usize,
    y_pixel: usize,
    y_row: usize,
    /// Add onto what `y` holds (initialised) instead of writing (`y` may be uninitialised).
    accumulate: bool,
}

impl Job<'_> {
    /// Checks that every read and write stays inside the buffers, then runs the kernel.
    fn run(&self) {
        let ((kh, kw), s) = (self.kernel, self.stride);
        assert!(self.co.is_multiple_of(16) && self.c > 0 && self.oh > 0 && self.ow > 0);
        assert!(self.x.len() >= ((self.oh - 1) * s + kh - 1) * self.x_row + ((self.ow - 1) * s + kw) * self.c);
        assert!(self.x_row >= ((self.ow - 1) * s + kw) * self.c, "direct convolution: rows overlap");
        assert!(self.weights.len() >= kh * kw * self.c * self.co);
        assert!(self.y_pixel >= self.co && self.y_row >= self.ow * self.y_pixel);
        assert!(self.y_len >= (self.oh - 1) * self.y_row + (self.ow - 1) * self.y_pixel + self.co);
        assert!(avx512(), "direct convolution without AVX-512");
        // SAFETY: the asserts above bound every offset the kernel forms; the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match (kh, kw, s) {
                (3, 3, 1) => avx512::image_any::<3, 3, 1>(self),
                (3, 3, 2) => avx512::image_any::<3, 3, 2>(self),
                (1, 1, 2) => avx512::image_any::<1, 1, 2>(self),
                (1, 1, 1) => avx512::image_any::<1, 1, 1>(self),
                (1, 2, 1) => avx512::image_any::<1, 2, 1>(self),
                (2, 1, 1) => avx512::image_any::<2, 1, 1>(self),
                (2, 2, 1) => avx512::image_any::<2, 2, 1>(self),
                _ => unreachable!("direct convolution: kernel {kh}×{kw}, stride {s}"),
            }
        }
    }
}

/// Some images' weight gradient: as [`Job`], with the output gradient `dy` `(oh, ow, co)`
/// dense, summed into `(kernel, kernel, c, co)`; image `i`'s input starts at `i·x_image`, its
/// gradient at `i·dy_image`.
struct WeightJob<'a> {
    x: &'a [f32],
    x_row: usize,
    c: usize,
    kernel: usize,
    stride: usize,
    dy: &'a [f32],
    co: usize,
    oh: usize,
    ow: usize,
    images: usize,
    x_image: usize,
    dy_image: usize,
}

impl WeightJob<'_> {
    fn run(&self, acc: &mut [f32]) {
        let (k, s) = (self.kernel, self.stride);
        assert!(self.co.is_multiple_of(16) && self.c > 0 && self.oh > 0 && self.ow > 0 && self.images > 0);
        let last = self.images - 1;
        let x_end = ((self.oh - 1) * s + k - 1) * self.x_row + ((self.ow - 1) * s + k) * self.c;
        assert!(self.x.len() >= last * self.x_image + x_end);
        assert!(self.dy.len() >= last * self.dy_image + self.oh * self.ow * self.co);
        assert!(acc.len() >= k * k * self.c * self.co);
        assert!(avx512(), "direct convolution without AVX-512");
        // SAFETY: the asserts above bound every offset the kernel forms; the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match (k, s) {
                (3, 1) => avx512::image_weight_grad::<3, 1>(self, acc),
                (3, 2) => avx512::image_weight_grad::<3, 2>(self, acc),
                (1, 2) => avx512::image_weight_grad::<1, 2>(self, acc),
                _ => unreachable!("direct weight gradient: kernel {k}, stride {s}"),
            }
        }
    }
}
