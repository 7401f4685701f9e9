//! Convolutions computed directly with AVX-512, no im2col: 3×3 stride 1 and 2 (padding 1) and
//! 1×1 stride 2 (the shortcuts), up to 128 input channels; and the forward (with it the stride-1
//! input gradient) of 3×3 convolutions of 128 channels and more on planes of at most 8×8
//! outputs, tap-major over several images at once ([`TapJob`]).
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
//! those measured to beat im2col ([`applies`]); elsewhere the im2col path runs. The numbers
//! equal im2col's up to the order of the sums (tests). `conv` hands the 3×3 stride-1
//! convolutions of 16 channels and more on even planes to `winograd` first (fewer
//! multiply-adds); these kernels keep the rest: the stem, the stride-2 and 1×1 convolutions,
//! odd planes, and the 16-channel weight gradient.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::conv::shared::{avx512, direct_to_taps, flipped, with_buffer, with_input, with_inputs, Geometry, RowAffine};

/// Whether [`forward_into`] and [`weight_grad_taps`] compute this convolution on this CPU:
/// where they beat im2col. Measured for 3×3 stride 1 on one core, batch 128 (GFLOP/s, im2col →
/// direct, the best of three): 16→16 at 32×32 forward 20 → 37, input gradient 25 → 45, weight
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
pub(crate) fn applies(g: &Geometry) -> bool {
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

/// Whether [`forward_into`] computes this convolution on this CPU: where [`applies`], and on
/// the small planes the tap-major kernel takes ([`tap_major`]). The stride-2 input gradient
/// stays where [`applies`]; the weight gradient where [`applies`] or
/// [`weight_grad_tap_major_applies`].
pub(crate) fn forward_applies(g: &Geometry) -> bool {
    applies(g) || (tap_major(g) && avx512())
}

/// Whether the input gradient has a direct kernel: the 3×3 stride-1 convolution through the
/// flipped kernel ([`flipped`]), the 3×3 stride-2 one through [`input_grad_stride2_into`], the
/// 1×1 stride-2 one through [`input_grad_add`].
pub(crate) fn input_grad_applies(g: &Geometry) -> bool {
    match (g.kernel, g.stride, g.padding) {
        (3, 1, 1) => forward_applies(&flipped(g)),
        (3, 2, 1) | (1, 2, 0) => applies(g) && g.channels.is_multiple_of(16),
        _ => false,
    }
}

/// Whether the 3×3 stride-2 convolution `g` and the 1×1 stride-2 projection shortcut `gs` of the
/// same input run as one pass per image ([`forward_pair_into`], [`input_grad_stride2_into`] with
/// a shortcut, [`weight_grad_taps_pair`]): both have direct kernels for every pass. The
/// shortcut's pixel (oy, ox) is the centre of the 3×3 window of (oy, ox), so it reads the
/// zero-bordered copy the 3×3 kernel just wrote, from cache, instead of the image from memory.
pub(crate) fn pair_applies(g: &Geometry, gs: &Geometry) -> bool {
    (g.kernel, g.stride, g.padding, gs.kernel, gs.stride, gs.padding) == (3, 2, 1, 1, 2, 0)
        && (g.channels, g.height, g.width) == (gs.channels, gs.height, gs.width)
        && input_grad_applies(g)
        && input_grad_applies(gs)
}

/// `y = conv(x)` for channels-last `x` `(n, H, W, C_in)` and weights from [`taps_to_direct`],
/// written into `y` `(n, out_h, out_w, C_out)`, every element of it. Only where [`applies`].
///
/// With `input` the images are `relu(x · scale + shift)` of those `x` (a BatchNorm + ReLU,
/// applied as each image is copied into its bordered buffer).
#[cfg(test)]
pub(crate) fn forward_into(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    forward_into_then(g, x, input, weights, y, |_| ());
}

/// [`forward_into`], then `then` on each image's output while it is in cache: what it returns,
/// image by image.
pub(crate) fn forward_into_then<T: Send>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [MaybeUninit<f32>],
    then: impl Fn(&[f32]) -> T + Sync,
) -> Vec<T> {
    assert!(forward_applies(g), "direct convolution called where it does not apply");
    let co = g.out_channels;
    let out_len = g.positions() * co;
    assert_eq!(y.len(), x.len() / g.image_len() * out_len, "direct convolution: output size");
    assert_eq!(weights.len(), g.rows() * co, "direct convolution: weight size");
    if tap_major(g) {
        let chunk = TAP_MAJOR_POSITIONS.div_ceil(g.positions()).min((x.len() / g.image_len()).max(1));
        let per_chunk: Vec<Vec<T>> = y
            .par_chunks_mut(chunk * out_len)
            .zip(x.par_chunks(chunk * g.image_len()))
            .map(|(yc, xc)| {
                with_inputs(g, xc, input, |planes, x_row, plane| {
                    tap_major_job(g, planes, (x_row, plane), weights, yc).run()
                });
                // SAFETY: the job wrote every element of the chunk's outputs.
                let yc = unsafe { std::slice::from_raw_parts(yc.as_ptr().cast::<f32>(), yc.len()) };
                yc.chunks_exact(out_len).map(&then).collect()
            })
            .collect();
        return per_chunk.into_iter().flatten().collect();
    }
    y.par_chunks_mut(out_len)
        .zip(x.par_chunks(g.image_len()))
        .map(|(yi, xi)| {
            with_input(g, xi, input, |plane, x_row| forward_job(g, plane, x_row, weights, yi).run());
            // SAFETY: the job wrote every element of the image's output.
            then(unsafe { std::slice::from_raw_parts(yi.as_ptr().cast::<f32>(), yi.len()) })
        })
        .collect()
}

/// Output positions per task of the tap-major forward (8 images of 4×4, 2 of 8×8): their
/// bordered copies (8 × 37 KB at 256 channels on 4×4), outputs and one tap's weights for 64
/// output channels (64 KB) stay in L2 together. Forward GFLOP/s, medians of 30 alternated calls:
/// 256 channels on 4×4, 8 images per task against 4, 217-219 against 208-217; on 8×8, 2 images
/// against 8, 219 against 212.
const TAP_MAJOR_POSITIONS: usize = 128;

/// Whether [`forward_into`] runs tap-major ([`TapJob`]): 3×3 kernels (stride 1 or 2) on planes
/// of at most 8×8 outputs from at least 128 channels, where the one-row tiles lose twice: a row
/// of 4 or 8 pixels leaves them short tiles, and each tile streams every weight of its output
/// channels (2.4 MB at 256 channels) through the caches again. One forward on two cores, batch
/// 128, GFLOP/s median of 30 alternated calls (im2col → one-row tiles → tap-major): 128→128 on
/// 4×4 175 → 175 → 207, on 8×8 195 → 189 → 216; 256→256 on 4×4 185 → (not taken) → 219, on 8×8
/// 189 → – → 219; 512→512 on 4×4 169 → – → 188; 3×3 stride 2 128→256 to 4×4 184 → – → 211, to 8×8
/// 171 → – → 194; 256→512 to 4×4 176 → – → 185. Not taken, no better than the one-row tiles:
/// 64 channels (on 4×4 204 → 196, 8×8 207 → 206) and planes of 16×16 and more (128→128 198 → 209
/// within the noise, 64→64 216 → 214).
fn tap_major(g: &Geometry) -> bool {
    (g.kernel, g.padding) == (3, 1)
        && g.stride <= 2
        && g.positions() <= 64
        && g.channels >= 128
        && g.out_channels.is_multiple_of(64)
}

/// A chunk's tap-major forward: `planes` as [`with_inputs`] hands them (rows of `x_row` floats,
/// images of `plane` floats), `y` the chunk's outputs.
fn tap_major_job<'a>(
    g: &Geometry,
    planes: &'a [f32],
    (x_row, plane): (usize, usize),
    weights: &'a [f32],
    y: &mut [MaybeUninit<f32>],
) -> TapJob<'a> {
    let images = y.len() / (g.positions() * g.out_channels);
    let (corners, c) = (window_corners(g, images, (x_row, plane)), g.channels);
    TapJob {
        planes,
        corners,
        x_row,
        c,
        kernel: g.kernel,
        weights,
        co: g.out_channels,
        y: y.as_mut_ptr().cast(),
        y_len: y.len(),
    }
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

/// [`forward_into`] for the 3×3 stride-2 convolution `g` and, image by image, its 1×1 stride-2
/// shortcut `gs` (weights from [`taps_to_direct`]) into `ys`. Only where [`pair_applies`].
pub(crate) fn forward_pair_into(
    (g, x, weights, y): (&Geometry, &[f32], &[f32], &mut [MaybeUninit<f32>]),
    (gs, weights_s, ys): (&Geometry, &[f32], &mut [MaybeUninit<f32>]),
) {
    assert!(pair_applies(g, gs), "direct convolution pair called where it does not apply");
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
/// pixel it read; the others get nothing. Only where [`input_grad_applies`].
pub(crate) fn input_grad_add(g: &Geometry, dy: &[f32], taps: &[f32], dx: &mut [f32]) {
    assert!(g.kernel == 1 && input_grad_applies(g), "direct input gradient called where it does not apply");
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
/// added onto each image's while that is in cache. Only where [`input_grad_applies`] (and
/// [`pair_applies`] with a shortcut).
pub(crate) fn input_grad_stride2_into(
    g: &Geometry,
    dy: &[f32],
    taps: &[f32],
    dx: &mut [MaybeUninit<f32>],
    shortcut: Option<(&Geometry, &[f32], &[f32])>,
) {
    assert!(g.kernel == 3 && g.stride == 2 && input_grad_applies(g), "direct input gradient where it does not apply");
    let (c, co, h, w, oh, ow, rows) = (g.channels, g.out_channels, g.height, g.width, g.out_h(), g.out_w(), g.rows());
    let n = dx.len() / g.image_len();
    assert_eq!(dy.len(), n * oh * ow * co, "direct input gradient: sizes");
    assert_eq!(taps.len(), co * rows, "direct input gradient: weight size");
    if let Some((gs, dys, taps_s)) = shortcut {
        assert!(pair_applies(g, gs), "direct input gradient pair where it does not apply");
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

/// The weight gradient of [`forward_into`] as taps `(C_out, k, k, C_in)` from the input `x`
/// and the output gradient `dy`, summed over the images. Only where [`applies`].
/// With `input` the images are `relu(x · scale + shift)` of those `x`, as in [`forward_into`].
pub(crate) fn weight_grad_taps(g: &Geometry, x: &[f32], input: Option<&RowAffine>, dy: &[f32]) -> Vec<f32> {
    assert!(applies(g), "direct convolution called where it does not apply");
    weight_grads(g, x, input, dy, None).0
}

/// [`weight_grad_taps`] of the 3×3 stride-2 convolution `g` (output gradient `dy`) and of its
/// 1×1 stride-2 shortcut `gs` (`dys`), image by image from one bordered copy of `x`. Only
/// where [`pair_applies`].
pub(crate) fn weight_grad_taps_pair(
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    gs: &Geometry,
    dys: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    assert!(pair_applies(g, gs), "direct convolution pair called where it does not apply");
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
    let (per_tap, per_tap_s) = x
        .par_chunks(chunk * g.image_len())
        .zip(dy.par_chunks(chunk * out_len))
        .enumerate()
        .fold(zero, |(mut acc, mut acc_s), (i, (xc, dyc))| {
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
        })
        .reduce(zero, |(mut a, mut a_s), (b, b_s)| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a_s.iter_mut().zip(&b_s).for_each(|(x, y)| *x += y);
            (a, a_s)
        });
    (direct_to_taps(&per_tap, g), shortcut.map(|(gs, _)| direct_to_taps(&per_tap_s, gs)))
}

/// Whether [`weight_grad_tap_major`] computes this convolution's weight gradient: the tap-major
/// shapes ([`tap_major`]) up to 256 channels in and out. Batch 128, two cores, GFLOP/s median of
/// 12 alternated calls (im2col or one-row direct → this): 256→256 on 4×4 126-143 → 138-162, on
/// 8×8 162 → 184; 128→128 on 4×4 148 (direct) → 164, on 8×8 179 (direct) → 187; stride 2
/// 128→256 to 4×4 140 → 152, to 8×8 152 → 173. Not taken, slower: 256→512 to 4×4 161 → 155,
/// 512→512 on 4×4 152 → 121 (its sums, 9.4 MB, stream through memory once per chunk).
pub(crate) fn weight_grad_tap_major_applies(g: &Geometry) -> bool {
    tap_major(g) && g.channels <= 256 && g.out_channels <= 256 && avx512()
}

/// Output positions per task of the tap-major weight gradient: each task adds into every sum
/// once, so more than the forward's (256→256 on 4×4, 128 → 512 positions: 115 → 138 GFLOP/s;
/// 1024 no better).
const TAP_MAJOR_WEIGHT_GRAD_POSITIONS: usize = 512;

/// The weight gradient of a tap-major convolution as taps `(C_out, k, k, C_in)`, chunk by
/// chunk of images: the chunk's output gradient packed into panels of 64 output channels (each
/// position's 64 floats contiguous, not 1 KB apart, where every fourth position fell into the
/// same L1 sets), then for every (64 output channels, tap, 6 input channels) 24 sums over all
/// the chunk's positions, each position's window found through its corner as in [`TapJob`].
/// With `input` the images are `relu(x · scale + shift)` of those `x`, as in [`forward_into`].
/// Only where [`weight_grad_tap_major_applies`].
pub(crate) fn weight_grad_tap_major(g: &Geometry, x: &[f32], input: Option<&RowAffine>, dy: &[f32]) -> Vec<f32> {
    assert!(weight_grad_tap_major_applies(g), "tap-major weight gradient where it does not apply");
    let (co, out_len) = (g.out_channels, g.positions() * g.out_channels);
    let n = x.len() / g.image_len();
    assert_eq!(dy.len(), n * out_len, "tap-major weight gradient: sizes");
    let chunk = TAP_MAJOR_WEIGHT_GRAD_POSITIONS.div_ceil(g.positions()).min(n.max(1));
    let zero = || vec![0f32; g.rows() * co];
    let per_tap = x
        .par_chunks(chunk * g.image_len())
        .zip(dy.par_chunks(chunk * out_len))
        .fold(zero, |mut acc, (xc, dyc)| {
            let m = dyc.len() / co;
            let mut panels = vec![0f32; m * co];
            for (p, row) in dyc.chunks_exact(co).enumerate() {
                for (ob, part) in row.chunks_exact(64).enumerate() {
                    panels[(ob * m + p) * 64..][..64].copy_from_slice(part);
                }
            }
            with_inputs(g, xc, input, |planes, x_row, plane| {
                let c = g.channels;
                let corners = window_corners(g, m / g.positions(), (x_row, plane));
                let window = (g.kernel - 1) * x_row + g.kernel * c;
                let inside = corners.iter().all(|&at| at + window <= planes.len());
                assert!(inside, "tap-major weight gradient: a window outside the input");
                assert!(acc.len() == g.rows() * co && panels.len() == m * co && co.is_multiple_of(64));
                // SAFETY: every window inside `planes` (checked), the panels and sums sized as
                // the kernel reads them; the CPU has AVX-512F (`weight_grad_tap_major_applies`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx512::tap_weight_grad(planes, &corners, (x_row, c, g.kernel), &panels, co, &mut acc)
                };
            });
            acc
        })
        .reduce(zero, |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        });
    direct_to_taps(&per_tap, g)
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

/// Where each output position's window starts in `images` bordered planes (rows of `x_row`
/// floats, planes of `plane`), position by position, image after image.
fn window_corners(g: &Geometry, images: usize, (x_row, plane): (usize, usize)) -> Vec<usize> {
    let (c, s, oh, ow) = (g.channels, g.stride, g.out_h(), g.out_w());
    (0..images)
        .flat_map(|i| (0..oh).flat_map(move |oy| (0..ow).map(move |ox| i * plane + oy * s * x_row + ox * s * c)))
        .collect()
}

/// Several images' convolution one tap at a time (an indirect convolution: each output
/// position its own window pointer, so a tile runs on across rows and images): position `p`,
/// of every image in order, reads the window whose corner is `planes[corners[p]]` and writes
/// its `co` channels at `y + p·co`. Each (tap, 64 output channels) is a `C_in × 64` block of
/// weights that every tile of 6 positions reuses from L2; the outputs take the taps' sums in turn.
struct TapJob<'a> {
    planes: &'a [f32],
    corners: Vec<usize>,
    x_row: usize,
    c: usize,
    kernel: usize,
    /// `(kernel, kernel, c, co)`.
    weights: &'a [f32],
    co: usize,
    y: *mut f32,
    y_len: usize,
}

impl TapJob<'_> {
    /// Checks that every read and write stays inside the buffers, then runs the kernel.
    fn run(&self) {
        let (k, c, co) = (self.kernel, self.c, self.co);
        assert!(co.is_multiple_of(64) && c > 0 && k > 0);
        let window = (k - 1) * self.x_row + k * c;
        let inside = self.corners.iter().all(|&at| at + window <= self.planes.len());
        assert!(inside, "tap-major convolution: a window outside the input");
        assert!(self.weights.len() >= k * k * c * co, "tap-major convolution: weight size");
        assert!(self.y_len >= self.corners.len() * co, "tap-major convolution: output size");
        assert!(avx512(), "direct convolution without AVX-512");
        // SAFETY: the asserts above bound every offset the kernel forms; the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::tap_major(self)
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Job, TapJob, WeightJob};

    /// Every tap in turn, 64 output channels at a time, tiles of 6 positions.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `j`'s offsets were checked by [`TapJob::run`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tap_major(j: &TapJob) {
        let (k, c, co, m) = (j.kernel, j.c, j.co, j.corners.len());
        for t in 0..k * k {
            let tap = (t / k) * j.x_row + (t % k) * c;
            let accumulate = t > 0;
            for o in (0..co).step_by(64) {
                let mut p = 0;
                while p < m {
                    // SAFETY: corners p.. are inside `planes` with their whole window, the
                    // tap's weights for channels o..o + 64 inside `weights`, the tile's outputs
                    // inside `y` (checked by `TapJob::run`).
                    unsafe {
                        let w = j.weights.as_ptr().add(t * c * co + o);
                        let y = j.y.add(p * co + o);
                        let at = |q: usize| j.planes.as_ptr().add(j.corners[p + q] + tap);
                        p += match m - p {
                            6.. => tap_tile::<6>(std::array::from_fn(at), w, (c, co), y, accumulate),
                            5 => tap_tile::<5>(std::array::from_fn(at), w, (c, co), y, accumulate),
                            4 => tap_tile::<4>(std::array::from_fn(at), w, (c, co), y, accumulate),
                            3 => tap_tile::<3>(std::array::from_fn(at), w, (c, co), y, accumulate),
                            2 => tap_tile::<2>(std::array::from_fn(at), w, (c, co), y, accumulate),
                            _ => tap_tile::<1>(std::array::from_fn(at), w, (c, co), y, accumulate),
                        };
                    }
                }
            }
        }
    }

    /// The tap-major weight gradient of one chunk, added into `acc` `(k, k, c, co)`: `panels`
    /// holds the output gradient as `co / 64` panels of `m × 64` (`m` positions).
    ///
    /// # Safety
    /// The CPU has AVX-512F; every window inside `planes`, `panels` `m × co` floats, `acc`
    /// `k·k·c·co`, `co` a multiple of 64.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tap_weight_grad(
        planes: &[f32],
        corners: &[usize],
        (x_row, c, k): (usize, usize, usize),
        panels: &[f32],
        co: usize,
        acc: &mut [f32],
    ) {
        let m = corners.len();
        for ob in 0..co / 64 {
            // SAFETY: panel `ob` is inside `panels`.
            let panel = unsafe { panels.as_ptr().add(ob * m * 64) };
            for t in 0..k * k {
                let tap = (t / k) * x_row + (t % k) * c;
                let mut i = 0;
                while i < c {
                    // SAFETY: as this function's.
                    unsafe {
                        let x = planes.as_ptr().add(tap + i);
                        let sums = acc.as_mut_ptr().add((t * c + i) * co + ob * 64);
                        i += match c - i {
                            6.. => tap_weight_tile::<6>(x, corners, panel, sums, co),
                            4..=5 => tap_weight_tile::<4>(x, corners, panel, sums, co),
                            2..=3 => tap_weight_tile::<2>(x, corners, panel, sums, co),
                            _ => tap_weight_tile::<1>(x, corners, panel, sums, co),
                        };
                    }
                }
            }
        }
    }

    /// `R` input channels × 64 output channels of one tap over every position, added onto
    /// `sums` (rows `co` apart); returns `R`.
    ///
    /// # Safety
    /// As [`tap_weight_grad`], `x` at the tap's first input channel of the tile in plane 0.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tap_weight_tile<const R: usize>(
        x: *const f32,
        corners: &[usize],
        panel: *const f32,
        sums: *mut f32,
        co: usize,
    ) -> usize {
        let mut s = [[_mm512_setzero_ps(); 4]; R];
        for (p, &corner) in corners.iter().enumerate() {
            // SAFETY: the caller's.
            unsafe {
                let d: [__m512; 4] = std::array::from_fn(|v| _mm512_loadu_ps(panel.add(p * 64 + v * 16)));
                outer_product_add(&mut s, x.add(corner), &d);
            }
        }
        // SAFETY: the caller's.
        unsafe { add_sums_onto(&s, sums, co) };
        R
    }

    /// `P` positions (their inputs at `x`) × 64 output channels of one tap, written, or added
    /// onto the earlier taps' sums when `accumulate`; returns `P`.
    ///
    /// # Safety
    /// As [`tap_major`], with the pointers at the tile's inputs, weights and first output.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tap_tile<const P: usize>(
        x: [*const f32; P],
        w: *const f32,
        (c, co): (usize, usize),
        y: *mut f32,
        accumulate: bool,
    ) -> usize {
        let mut acc = [[_mm512_setzero_ps(); 4]; P];
        for ci in 0..c {
            // SAFETY: inside the weights and the windows, as the caller guarantees.
            unsafe {
                let wr = w.add(ci * co);
                let wv: [__m512; 4] = std::array::from_fn(|v| _mm512_loadu_ps(wr.add(v * 16)));
                for (row, xp) in acc.iter_mut().zip(&x) {
                    let xv = _mm512_set1_ps(*xp.add(ci));
                    for (a, wv) in row.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(xv, *wv, *a);
                    }
                }
            }
        }
        for (p, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                // SAFETY: the tile's outputs are inside `y`, written by an earlier tap when
                // accumulating.
                unsafe {
                    let at = y.add(p * co + v * 16);
                    let sum = if accumulate { _mm512_add_ps(_mm512_loadu_ps(at), *a) } else { *a };
                    _mm512_storeu_ps(at, sum);
                }
            }
        }
        P
    }

    /// [`image`] with the input channel count as a compile-time constant where it is one the
    /// network uses: every pixel's offset in the tile becomes an immediate instead of a chain of
    /// adds (3×3 stride 1, width 0.25, batch 128, 2 threads, GFLOP/s forward / input gradient,
    /// three alternated runs: 16→16 55-58 / 54-57 → 71-78 / 65-75, 32→32 82-88 / 70-84 → 92-101 /
    /// 86-98).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `j`'s offsets were checked by [`Job::run`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image_any<const KY: usize, const KX: usize, const S: usize>(j: &Job) {
        // SAFETY: as this function's.
        unsafe {
            match j.c {
                3 if KY == 3 => image::<3, KY, KX, S>(j),
                16 => image::<16, KY, KX, S>(j),
                32 => image::<32, KY, KX, S>(j),
                64 => image::<64, KY, KX, S>(j),
                _ => image::<0, KY, KX, S>(j),
            }
        }
    }

    /// The whole image: every output row, in tiles of `P` pixels × `16·V` channels, for `C`
    /// input channels, or any number when `C` is 0. 64 output channels at once (6 pixels × 4
    /// vectors) where there are that many: each input float is broadcast once for all of them
    /// and read from the image once instead of twice, 10 loads per 24 fused multiply-adds
    /// instead of 14 (width 1.0, batch 128, GFLOP/s forward, three alternated runs: the stem
    /// 3→64 121-138 → 154-202, the 1×1 stride-2 64→128 on 32×32 130-154 → 135-165).
    ///
    /// # Safety
    /// As [`image_any`], `C` 0 or `j.c`.
    #[target_feature(enable = "avx512f")]
    unsafe fn image<const C: usize, const KY: usize, const KX: usize, const S: usize>(j: &Job) {
        assert!(C == 0 || C == j.c, "direct convolution: compiled for {C} channels, called with {}", j.c);
        let c = j.c;
        for oy in 0..j.oh {
            if oy + 1 < j.oh {
                // SAFETY: the rows the next output row reads first are inside `x` (checked).
                unsafe { prefetch_rows::<KY, KX, S>(j, oy + 1, c) };
            }
            let mut o = 0;
            while o < j.co {
                let v4 = j.co - o >= 64;
                let v2 = j.co - o >= 32;
                let mut ox = 0;
                while ox < j.ow {
                    let left = j.ow - ox;
                    // SAFETY: the window of every pixel of the tile is inside `x`, the tile's
                    // outputs inside `y`, channels o.. inside `co` (checked by `Job::run`).
                    unsafe {
                        let t = Tile {
                            x0: j.x.as_ptr().add(oy * S * j.x_row + ox * S * c),
                            x_row: j.x_row,
                            c,
                            w0: j.weights.as_ptr().add(o),
                            co: j.co,
                            y0: j.y.add(oy * j.y_row + ox * j.y_pixel + o),
                            y_pixel: j.y_pixel,
                            accumulate: j.accumulate,
                        };
                        ox += if v4 {
                            match left {
                                6.. => tile::<6, 4, C, KY, KX, S>(&t),
                                4..=5 => tile::<4, 4, C, KY, KX, S>(&t),
                                2..=3 => tile::<2, 4, C, KY, KX, S>(&t),
                                _ => tile::<1, 4, C, KY, KX, S>(&t),
                            }
                        } else if v2 {
                            match left {
                                12.. => tile::<12, 2, C, KY, KX, S>(&t),
                                8..=11 => tile::<8, 2, C, KY, KX, S>(&t),
                                4..=7 => tile::<4, 2, C, KY, KX, S>(&t),
                                2..=3 => tile::<2, 2, C, KY, KX, S>(&t),
                                _ => tile::<1, 2, C, KY, KX, S>(&t),
                            }
                        } else {
                            match left {
                                16.. => tile::<16, 1, C, KY, KX, S>(&t),
                                8..=15 => tile::<8, 1, C, KY, KX, S>(&t),
                                4..=7 => tile::<4, 1, C, KY, KX, S>(&t),
                                2..=3 => tile::<2, 1, C, KY, KX, S>(&t),
                                _ => tile::<1, 1, C, KY, KX, S>(&t),
                            }
                        };
                    }
                }
                o += if v4 {
                    64
                } else if v2 {
                    32
                } else {
                    16
                };
            }
        }
    }

    /// Asks for the input rows output row `oy` reads and the row before did not (the last `S`
    /// of its window; of a 1×1 stride-2 kernel only the pixels it reads), a row ahead: the
    /// hardware prefetcher does not follow a stride-2 walk, and a 1×1 kernel does too little
    /// work per byte to hide the misses (32→64 at 32×32, batch 128: 75 GFLOP/s, 156 at batch 32).
    ///
    /// # Safety
    /// As [`image`], `oy < j.oh`.
    #[target_feature(enable = "avx512f")]
    unsafe fn prefetch_rows<const KY: usize, const KX: usize, const S: usize>(j: &Job, oy: usize, c: usize) {
        let first = oy * S + KY - S.min(KY);
        let used = ((j.ow - 1) * S + KX) * c;
        for row in first..oy * S + KY {
            // SAFETY: the row is one the output row reads, inside `x`.
            let base = unsafe { j.x.as_ptr().add(row * j.x_row) };
            if KX == 1 && S > 1 && c >= 32 {
                for px in 0..j.ow {
                    for line in (0..c).step_by(16) {
                        // SAFETY: a pixel the output row reads.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(px * S * c + line).cast()) };
                    }
                }
            } else {
                for line in (0..used).step_by(16) {
                    // SAFETY: inside the row's used part.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(line).cast()) };
                }
            }
        }
    }

    /// Where one tile reads and writes: the window corner of its first pixel, its first weight
    /// (output channel), its first output.
    struct Tile {
        x0: *const f32,
        x_row: usize,
        c: usize,
        w0: *const f32,
        co: usize,
        y0: *mut f32,
        y_pixel: usize,
        accumulate: bool,
    }

    /// `P` output pixels of one row × `16·V` output channels; returns `P`.
    ///
    /// # Safety
    /// As [`image`], with the pointers at the tile's first input pixel, weight and output.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const P: usize, const V: usize, const C: usize, const KY: usize, const KX: usize, const S: usize>(
        t: &Tile,
    ) -> usize {
        let c = if C == 0 { t.c } else { C };
        let mut acc = [[_mm512_setzero_ps(); V]; P];
        for ky in 0..KY {
            for kx in 0..KX {
                // SAFETY: inside the image and the weights, as the caller guarantees.
                unsafe {
                    let xr = t.x0.add(ky * t.x_row + kx * c);
                    let wr = t.w0.add((ky * KX + kx) * c * t.co);
                    for ci in 0..c {
                        let mut wv = [_mm512_setzero_ps(); V];
                        for (v, slot) in wv.iter_mut().enumerate() {
                            *slot = _mm512_loadu_ps(wr.add(ci * t.co + v * 16));
                        }
                        for (p, row) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*xr.add(p * S * c + ci));
                            for (a, wv) in row.iter_mut().zip(&wv) {
                                *a = _mm512_fmadd_ps(xv, *wv, *a);
                            }
                        }
                    }
                }
            }
        }
        for (p, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                // SAFETY: the tile's outputs are inside `y`, initialised when accumulating.
                unsafe {
                    let at = t.y0.add(p * t.y_pixel + v * 16);
                    let sum = if t.accumulate { _mm512_add_ps(_mm512_loadu_ps(at), *a) } else { *a };
                    _mm512_storeu_ps(at, sum);
                }
            }
        }
        P
    }

    /// Adds one image's weight gradient into `acc` `(K, K, c, co)`: for each tap and group of
    /// `R` input channels, `R × 16·V` accumulators run over every output pixel; for at most 3
    /// input channels (the stem) every tap at once, or the `R·V` chains would leave the FMA
    /// unit waiting on their latency (3→16 at width 0.25: 66 GFLOP/s).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `j`'s and `acc`'s sizes were checked by [`WeightJob::run`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image_weight_grad<const K: usize, const S: usize>(j: &WeightJob, acc: &mut [f32]) {
        let (c, co) = (j.c, j.co);
        let (xp, dp, ap) = (j.x.as_ptr(), j.dy.as_ptr(), acc.as_mut_ptr());
        let args = |t: usize, i: usize, o: usize| {
            let (ky, kx) = (t / K, t % K);
            // SAFETY: tap (ky, kx), channel i, output channel o are inside the buffers.
            unsafe {
                WeightTileArgs {
                    x0: xp.add(ky * j.x_row + kx * c + i),
                    x_row: j.x_row,
                    x_pixel: S * c,
                    dy0: dp.add(o),
                    acc0: ap.add((t * c + i) * co + o),
                    oh: j.oh,
                    ow: j.ow,
                    c,
                    co,
                    images: j.images,
                    x_image: j.x_image,
                    dy_image: j.dy_image,
                }
            }
        };
        if K == 3 && c <= 3 {
            // Bands of about 64 output pixels, every output block over one band before the
            // next: the band's gradient rows stay in L1 instead of streaming the image's from
            // memory once per block (3→64 at width 1.0, batch 128: 67-70 → 111 GFLOP/s; with
            // the first block's prefetch, 130-171).
            let band = (64 / j.ow).max(1);
            let bands = (0..j.images).flat_map(|img| (0..j.oh).step_by(band).map(move |oy| (img, oy)));
            for (img, oy) in bands {
                for o in (0..co).step_by(16) {
                    // SAFETY: as this function's; rows oy.. of the band are inside `x` and `dy`.
                    unsafe {
                        let a = WeightTileArgs {
                            x0: xp.add(img * j.x_image + oy * S * j.x_row),
                            dy0: dp.add(img * j.dy_image + oy * j.ow * co + o),
                            oh: band.min(j.oh - oy),
                            images: 1,
                            ..args(0, 0, o)
                        };
                        match (c, o == 0) {
                            (3, true) => weight_tile_taps::<3, S, true>(a),
                            (3, false) => weight_tile_taps::<3, S, false>(a),
                            (2, _) => weight_tile_taps::<2, S, false>(a),
                            _ => weight_tile_taps::<1, S, false>(a),
                        }
                    }
                }
            }
            return;
        }
        for t in 0..K * K {
            let mut o = 0;
            while o < co {
                let v2 = co - o >= 32;
                let mut i = 0;
                while i < c {
                    let left = c - i;
                    // SAFETY: every pixel the tile reads is inside `x` (the window of an output
                    // pixel), every gradient inside `dy`, every sum inside `acc`.
                    unsafe {
                        let a = args(t, i, o);
                        i += if v2 {
                            match left {
                                8.. => weight_tile::<8, 2, S>(a),
                                4..=7 => weight_tile::<4, 2, S>(a),
                                2..=3 => weight_tile::<2, 2, S>(a),
                                _ => weight_tile::<1, 2, S>(a),
                            }
                        } else {
                            match left {
                                16.. => weight_tile::<16, 1, S>(a),
                                8..=15 => weight_tile::<8, 1, S>(a),
                                4..=7 => weight_tile::<4, 1, S>(a),
                                2..=3 => weight_tile::<2, 1, S>(a),
                                _ => weight_tile::<1, 1, S>(a),
                            }
                        };
                    }
                }
                o += if v2 { 32 } else { 16 };
            }
        }
    }

    /// Where one weight-gradient tile reads and adds: the input at its tap and first channel
    /// for output pixel (0, 0), the output gradient at its first channel, the sums at (tap, i, o).
    #[derive(Clone, Copy)]
    struct WeightTileArgs {
        x0: *const f32,
        x_row: usize,
        x_pixel: usize,
        dy0: *const f32,
        acc0: *mut f32,
        oh: usize,
        ow: usize,
        c: usize,
        co: usize,
        /// How many images, the next one's input `x_image` and gradient `dy_image` floats on.
        images: usize,
        x_image: usize,
        dy_image: usize,
    }

    /// `R` input channels × `16·V` output channels of one tap, over all output pixels of
    /// every image; returns `R`.
    ///
    /// # Safety
    /// As [`image_weight_grad`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn weight_tile<const R: usize, const V: usize, const S: usize>(a: WeightTileArgs) -> usize {
        let mut sums = [[_mm512_setzero_ps(); V]; R];
        for img in 0..a.images {
            for oy in 0..a.oh {
                for ox in 0..a.ow {
                    // SAFETY: inside the input and `dy`, as the caller guarantees.
                    unsafe {
                        let xr = a.x0.add(img * a.x_image + oy * S * a.x_row + ox * a.x_pixel);
                        let dr = a.dy0.add(img * a.dy_image + (oy * a.ow + ox) * a.co);
                        let dv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(dr.add(v * 16)));
                        outer_product_add(&mut sums, xr, &dv);
                    }
                }
            }
        }
        // SAFETY: the tile's sums are inside `acc`.
        unsafe { add_sums_onto(&sums, a.acc0, a.co) };
        R
    }

    /// `sums[r][v] += x[r] · d[v]`: `R` input values broadcast against `V` gradient vectors,
    /// the weight gradients' step for one output pixel.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` readable for `R` floats.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn outer_product_add<const R: usize, const V: usize>(
        sums: &mut [[__m512; V]; R],
        x: *const f32,
        d: &[__m512; V],
    ) {
        for (r, row) in sums.iter_mut().enumerate() {
            // SAFETY: as this function's.
            let xv = unsafe { _mm512_set1_ps(*x.add(r)) };
            for (s, d) in row.iter_mut().zip(d) {
                *s = _mm512_fmadd_ps(xv, *d, *s);
            }
        }
    }

    /// Adds an `R × 16·V` tile of sums onto memory at `at`, its rows `row` floats apart.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the tile lies inside the memory `at` points into.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn add_sums_onto<const R: usize, const V: usize>(sums: &[[__m512; V]; R], at: *mut f32, row: usize) {
        for (r, vectors) in sums.iter().enumerate() {
            for (v, s) in vectors.iter().enumerate() {
                // SAFETY: as this function's.
                unsafe {
                    let p = at.add(r * row + v * 16);
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *s));
                }
            }
        }
    }

    /// All 9 taps × `R` (= every) input channel × 16 output channels of a 3×3 kernel over all
    /// output pixels: `9·R` independent chains, each gradient vector loaded once per pixel.
    ///
    /// # Safety
    /// As [`image_weight_grad`], with `R` equal to the input's channel count.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn weight_tile_taps<const R: usize, const S: usize, const PREFETCH: bool>(a: WeightTileArgs) {
        assert_eq!(a.c, R, "weight gradient over all taps: compiled for {R} channels");
        let mut sums = [[_mm512_setzero_ps(); R]; 9];
        for oy in 0..a.oh {
            for ox in 0..a.ow {
                // SAFETY: inside the input and `dy`, as the caller guarantees.
                unsafe {
                    let xr = a.x0.add(oy * S * a.x_row + ox * S * R);
                    let d = _mm512_loadu_ps(a.dy0.add((oy * a.ow + ox) * a.co));
                    if PREFETCH {
                        // The whole gradient pixel 4 ahead, for the later blocks' passes too:
                        // a walk reading one line in every co/16 defeats the hardware prefetcher.
                        let ahead = a.dy0.wrapping_add((oy * a.ow + ox + 4) * a.co);
                        for line in (0..a.co).step_by(16) {
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
                        }
                    }
                    for (t, tap) in sums.iter_mut().enumerate() {
                        let xt = xr.add((t / 3) * a.x_row + (t % 3) * R);
                        for (r, s) in tap.iter_mut().enumerate() {
                            *s = _mm512_fmadd_ps(_mm512_set1_ps(*xt.add(r)), d, *s);
                        }
                    }
                }
            }
        }
        for (t, tap) in sums.iter().enumerate() {
            for (r, s) in tap.iter().enumerate() {
                // SAFETY: the sums of (tap, channel r, this output block) are inside `acc`.
                unsafe {
                    let at = a.acc0.add((t * R + r) * a.co);
                    _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *s));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::shared::taps_to_direct;
    use crate::conv::{
        conv_forward_im2col, conv_input_grad, conv_input_grad_add, conv_input_grad_im2col,
        conv_weight_grad_taps_im2col, weight_to_taps,
    };
    use rand::{Rng, SeedableRng};

    /// [`forward_into`] writes every output (into NaN slots: callers hand it uninitialised
    /// memory, relying on it writing every element) and equals the im2col path.
    fn assert_forward_equals_im2col(g: &Geometry, x: &[f32], taps: &[f32], case: &str) {
        let reference = conv_forward_im2col(g, x, taps);
        let mut slots = vec![std::mem::MaybeUninit::new(f32::NAN); reference.len()];
        forward_into(g, x, None, &taps_to_direct(taps, g), &mut slots);
        // SAFETY: every slot was initialised before the kernel wrote into it.
        let direct: Vec<f32> = slots.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert!(direct.iter().all(|v| v.is_finite()), "forward {case}: an output left unwritten");
        let e = max_rel(&direct, &reference);
        assert!(e < 1e-5, "forward {case}: {e}");
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The forward and both gradients equal the im2col path on random inputs, for every kernel
    /// and stride the direct kernels take, 16-, 32- and 64-wide channel blocks, odd channel counts and
    /// sizes, row widths that leave every tile size, and planes small enough that the weight
    /// gradient takes several images at once (with a shorter last group).
    #[test]
    fn direct_forward_and_gradients_equal_im2col() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &(n, c, h, w, co, k, s) in &[
            (2, 16, 32, 32, 16, 3, 1),
            (3, 5, 7, 13, 32, 3, 1),
            (2, 32, 4, 4, 32, 3, 1),
            (1, 3, 9, 31, 16, 3, 1),
            (2, 3, 8, 8, 32, 3, 1),
            (2, 2, 5, 6, 16, 3, 1),
            (5, 3, 3, 5, 16, 3, 1),
            (5, 32, 4, 4, 32, 3, 1),
            (1, 3, 5, 11, 64, 3, 1),
            (2, 32, 5, 27, 32, 3, 1),
            (1, 16, 3, 13, 32, 3, 1),
            (2, 64, 6, 7, 64, 3, 1),
            (1, 128, 4, 5, 128, 3, 1),
            (1, 96, 5, 8, 112, 3, 1),
            (2, 16, 32, 32, 32, 3, 2),
            (3, 16, 9, 7, 32, 3, 2),
            (2, 16, 1, 5, 16, 3, 2),
            (2, 32, 7, 13, 64, 3, 2),
            (3, 5, 9, 30, 48, 3, 2),
            (2, 64, 7, 9, 128, 3, 2),
            (2, 16, 32, 32, 32, 1, 2),
            (2, 64, 8, 8, 128, 1, 2),
            (3, 32, 7, 29, 64, 1, 2),
            (2, 48, 6, 5, 16, 1, 2),
            (2, 16, 6, 10, 80, 1, 2),
            (2, 128, 6, 6, 256, 1, 2),
        ] {
            let g =
                Geometry { channels: c, height: h, width: w, kernel: k, stride: s, padding: k / 2, out_channels: co };
            let case = format!("n{n} c{c} {h}×{w} co{co} k{k} s{s}");
            if !avx512() {
                eprintln!("no AVX-512 on this CPU: the direct convolution is not used here");
                return;
            }
            assert!(applies(&g), "{case}: the direct kernel should take it");
            let x: Vec<f32> = (0..n * h * w * c).map(|_| rng.random_range(-1.0..1.0)).collect();
            let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..co * c * k * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let taps = weight_to_taps(&wt, &g);
            assert_forward_equals_im2col(&g, &x, &taps, &case);
            // The input gradient, onto zeros and onto what is there.
            let start: Vec<f32> = (0..x.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut dx_ref = start.clone();
            conv_input_grad_im2col(&g, &dy, &taps, &mut dx_ref, true);
            let mut dx = start.clone();
            conv_input_grad_add(&g, &dy, &taps, &mut dx);
            let e = max_rel(&dx, &dx_ref);
            assert!(e < 1e-5, "input gradient added {case}: {e}");
            let mut dx_ref = vec![0f32; x.len()];
            conv_input_grad_im2col(&g, &dy, &taps, &mut dx_ref, false);
            let e = max_rel(&conv_input_grad(&g, &dy, &taps), &dx_ref);
            assert!(e < 1e-5, "input gradient {case}: {e}");
            let dw_ref = conv_weight_grad_taps_im2col(&g, &x, &dy);
            let dw = weight_grad_taps(&g, &x, None, &dy);
            let e = max_rel(&dw, &dw_ref);
            assert!(e < 1e-5, "weight gradient {case}: {e}");
        }
    }

    /// The tap-major forward, through it the stride-1 input gradient, and the tap-major weight
    /// gradient equal the im2col path on random inputs: 4×4 and 8×8 planes, odd sizes and
    /// channel counts (every tile of input channels), stride 1 and 2, a last chunk of fewer
    /// images and last tiles of every size below 6 positions; and each takes exactly the shapes
    /// it was measured to win (not 64 channels, not 16×16 planes, not output channels off 64,
    /// the weight gradient not beyond 256 channels).
    #[test]
    fn tap_major_forward_and_input_gradient_equal_im2col() {
        let g = |(c, h, w, co, s): (usize, usize, usize, usize, usize)| Geometry {
            channels: c,
            height: h,
            width: w,
            kernel: 3,
            stride: s,
            padding: 1,
            out_channels: co,
        };
        assert!(tap_major(&g((128, 4, 4, 128, 1))) && tap_major(&g((256, 8, 8, 64, 1))));
        assert!(tap_major(&g((128, 16, 16, 256, 2))) && tap_major(&g((512, 4, 4, 512, 1))));
        assert!(!tap_major(&g((64, 4, 4, 64, 1))), "64 channels: the one-row tiles");
        assert!(!tap_major(&g((128, 16, 16, 128, 1))), "16×16 planes: the one-row tiles");
        assert!(!tap_major(&g((128, 4, 4, 96, 1))), "output channels in blocks of 64");
        if avx512() {
            assert!(weight_grad_tap_major_applies(&g((256, 4, 4, 256, 1))));
            assert!(!weight_grad_tap_major_applies(&g((512, 4, 4, 512, 1))));
            assert!(!weight_grad_tap_major_applies(&g((256, 8, 8, 512, 2))));
        }
        if !avx512() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for &(n, shape) in &[
            (9, (128, 4, 4, 128, 1)),
            (3, (256, 4, 4, 64, 1)),
            (2, (128, 8, 8, 128, 1)),
            (5, (160, 3, 5, 64, 1)),
            (4, (128, 2, 7, 192, 1)),
            (2, (129, 4, 4, 64, 1)),
            (1, (128, 1, 1, 64, 1)),
            (1, (128, 1, 5, 64, 1)),
            (3, (128, 8, 8, 64, 2)),
            (2, (144, 7, 9, 128, 2)),
            (1, (128, 16, 16, 64, 2)),
        ] {
            let g = g(shape);
            let case = format!("n{n} {shape:?}");
            assert!(tap_major(&g) && forward_applies(&g), "{case}: tap-major should take it");
            let (c, co) = (g.channels, g.out_channels);
            let x: Vec<f32> = (0..n * g.image_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..co * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let taps = weight_to_taps(&wt, &g);
            assert_forward_equals_im2col(&g, &x, &taps, &case);
            let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
            let e = max_rel(&weight_grad_tap_major(&g, &x, None, &dy), &conv_weight_grad_taps_im2col(&g, &x, &dy));
            assert!(e < 1e-5, "weight gradient {case}: {e}");
            if g.stride == 1 {
                // The input gradient is the flipped convolution: tap-major where C_in is.
                assert_eq!(tap_major(&flipped(&g)), co >= 128 && c.is_multiple_of(64), "{case}");
                let mut dx_ref = vec![0f32; x.len()];
                conv_input_grad_im2col(&g, &dy, &taps, &mut dx_ref, false);
                let e = max_rel(&conv_input_grad(&g, &dy, &taps), &dx_ref);
                assert!(e < 1e-5, "input gradient {case}: {e}");
            }
        }
    }

    /// A 3×3 stride-2 convolution and its 1×1 stride-2 shortcut run as one pass per image equal
    /// the two run apart, in every pass, at odd sizes; the input gradients summed.
    #[test]
    fn shortcut_pair_equals_the_two_convolutions_apart() {
        if !avx512() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for &(n, c, h, w, co, co_s) in &[
            (2, 16, 9, 7, 32, 32),
            (3, 32, 8, 8, 64, 64),
            (1, 64, 5, 11, 128, 128),
            (2, 16, 1, 6, 32, 48),
            (5, 16, 7, 7, 32, 32),
        ] {
            let geometry = |kernel, out_channels| Geometry {
                channels: c,
                height: h,
                width: w,
                kernel,
                stride: 2,
                padding: kernel / 2,
                out_channels,
            };
            let (g, gs) = (geometry(3, co), geometry(1, co_s));
            let case = format!("n{n} c{c} {h}×{w} co{co}+{co_s}");
            assert!(pair_applies(&g, &gs), "{case}: the pair should run together");
            let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
            let x = random(n * h * w * c);
            let (taps, taps_s) = (random(co * 9 * c), random(co_s * c));
            let (dy, dys) = (random(n * g.positions() * co), random(n * gs.positions() * co_s));
            let (y, ys) = crate::conv::conv_forward_with_shortcut(&g, &x, &taps, &gs, &taps_s);
            assert_eq!(y, crate::conv::conv_forward(&g, &x, &taps), "forward {case}");
            assert_eq!(ys, crate::conv::conv_forward(&gs, &x, &taps_s), "shortcut forward {case}");
            let dx = crate::conv::conv_input_grad_with_shortcut((&g, &dy, &taps), (&gs, &dys, &taps_s));
            let mut dx_apart = conv_input_grad(&g, &dy, &taps);
            conv_input_grad_add(&gs, &dys, &taps_s, &mut dx_apart);
            assert_eq!(dx, dx_apart, "input gradient {case}");
            let (dw, dws) = crate::conv::conv_weight_grad_taps_with_shortcut((&g, &dy), (&gs, &dys), &x);
            // Summed over images in the thread pool's order: equal up to rounding.
            let e = max_rel(&dw, &weight_grad_taps(&g, &x, None, &dy));
            assert!(e < 1e-6, "weight gradient {case}: {e}");
            let e = max_rel(&dws, &conv_weight_grad_taps_im2col(&gs, &x, &dys));
            assert!(e < 1e-5, "shortcut weight gradient {case}: {e}");
        }
        let g = |kernel, stride, channels| Geometry {
            channels,
            height: 8,
            width: 8,
            kernel,
            stride,
            padding: kernel / 2,
            out_channels: 32,
        };
        assert!(!pair_applies(&g(3, 2, 24), &g(1, 2, 24)), "no direct input gradient for 24 channels");
        assert!(!pair_applies(&g(3, 1, 16), &g(1, 2, 16)), "a stride-1 convolution has no shortcut to share");
        assert!(!pair_applies(&g(3, 2, 16), &g(1, 2, 32)), "different inputs");
    }

    /// Which input gradients take a direct kernel: those whose input has a multiple of 16
    /// channels (never the stem's), up to 128 channels, and the tap-major ones on small planes.
    #[test]
    fn input_gradient_kernels_apply_where_intended() {
        if !avx512() {
            return;
        }
        let g = |c, co, k, s| Geometry {
            channels: c,
            height: 8,
            width: 8,
            kernel: k,
            stride: s,
            padding: k / 2,
            out_channels: co,
        };
        assert!(input_grad_applies(&g(16, 32, 1, 2)));
        assert!(input_grad_applies(&g(32, 32, 3, 1)));
        assert!(!input_grad_applies(&g(3, 16, 3, 1)));
        assert!(input_grad_applies(&g(16, 32, 3, 2)));
        assert!(!input_grad_applies(&g(24, 32, 3, 2)));
        assert!(!input_grad_applies(&g(24, 32, 1, 2)));
        assert!(input_grad_applies(&g(128, 128, 3, 1)));
        assert!(input_grad_applies(&g(64, 128, 3, 2)));
        assert!(!input_grad_applies(&g(128, 256, 3, 2)));
        assert!(input_grad_applies(&g(256, 256, 3, 1)), "tap-major on 8×8 planes");
        assert!(!input_grad_applies(&Geometry { height: 16, width: 16, ..g(256, 256, 3, 1) }));
        assert!(!input_grad_applies(&g(256, 96, 3, 1)), "the flipped convolution has 96 outputs");
    }
}
