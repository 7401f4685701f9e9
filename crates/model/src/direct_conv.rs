//! The 3×3, stride-1, padding-1 convolution computed directly with AVX-512, no im2col.
//!
//! At the narrow widths (16-32 channels) the im2col GEMM is starved: each im2col float feeds
//! only `C_out` multiply-adds, and the matrix is written, packed by the GEMM and read again
//! (measured at width 0.25: the 16→16 layers ran at 20-25 GFLOP/s per core where the 64- and
//! 128-channel ones reached 50-60). Here each thread copies one image into a zero-bordered
//! buffer and slides the kernel over it: a tile of `P` output pixels × `16·V` output channels
//! lives in `P·V` AVX-512 accumulators, and each step over (tap, input channel) is `V` weight
//! loads, `P` broadcasts and `P·V` fused multiply-adds, all from L1.
//!
//! The input gradient is the same kernel run on the output gradient with the kernel flipped and
//! its channels swapped; the weight gradient keeps `R` input channels × `16·V` output channels
//! of one tap in accumulators while it runs over every output pixel.
//!
//! Applies where the CPU has AVX-512F, `C_out` is a multiple of 16 and both channel counts are
//! at most 32 ([`applies`]); elsewhere the im2col path runs. The numbers equal im2col's up to the order of the sums (tests).

use rayon::prelude::*;

use crate::conv::Geometry;

/// Whether [`forward`] computes this convolution on this CPU.
/// Where it beats im2col. Measured on one core, batch 128 (GFLOP/s, im2col → direct, the best of
/// three): 16→16 at 32×32 forward 20 → 37, input gradient 25 → 45, weight gradient 22 → 47;
/// 32→32 at 16×16 42 → 50, 40 → 61, 37 → 67; at 64 channels mixed within the noise; at 128
/// (4×4 planes) slower, the GEMM's larger tiles winning.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.kernel == 3
        && g.stride == 1
        && g.padding == 1
        && g.out_channels.is_multiple_of(16)
        && g.out_channels <= 32
        && g.channels <= 32
        && avx512()
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Taps `(C_out, 3, 3, C_in)` (the im2col weight) into `(3, 3, C_in, C_out)`: for every tap and
/// input channel, the output channels contiguous, as the kernel loads them.
pub(crate) fn taps_to_direct(taps: &[f32], g: &Geometry) -> Vec<f32> {
    let (rows, co) = (g.rows(), g.out_channels);
    let mut out = vec![0f32; taps.len()];
    for (o, row) in taps.chunks_exact(rows).enumerate() {
        for (r, v) in row.iter().enumerate() {
            out[r * co + o] = *v;
        }
    }
    out
}

thread_local! {
    /// Each thread's zero-bordered image, kept between calls.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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

/// `y = conv(x)` for channels-last `x` `(n, H, W, C_in)` and weights from [`taps_to_direct`],
/// written into `y` `(n, H, W, C_out)`, every element of it. Only where [`applies`].
pub(crate) fn forward_into(g: &Geometry, x: &[f32], weights: &[f32], y: &mut [std::mem::MaybeUninit<f32>]) {
    assert!(applies(g), "direct convolution called where it does not apply");
    let (h, w, c, co) = (g.height, g.width, g.channels, g.out_channels);
    assert_eq!(y.len(), x.len() / c * co, "direct convolution: output size");
    y.par_chunks_mut(h * w * co).zip(x.par_chunks(h * w * c)).for_each(|(yi, xi)| {
        with_padded(xi, h, w, c, |padded| {
            // SAFETY: `applies` checked AVX-512F; the slices have the sizes the kernel walks.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                match c {
                    16 => avx512::image::<16>(padded, weights, yi, h, w, c, co),
                    32 => avx512::image::<32>(padded, weights, yi, h, w, c, co),
                    _ => avx512::image::<0>(padded, weights, yi, h, w, c, co),
                }
            }
        })
    });
}

/// Runs `f` on image `x` `(h, w, c)` copied into the middle of this thread's zero-bordered
/// `(h + 2, w + 2, c)` buffer, kept between calls (a re-entrant call gets a fresh one).
fn with_padded<R>(x: &[f32], h: usize, w: usize, c: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    let len = (h + 2) * (w + 2) * c;
    PADDED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            pad(x, &mut buf[..len], h, w, c);
            f(&buf[..len])
        }
        Err(_) => {
            let mut buf = vec![0.0; len];
            pad(x, &mut buf, h, w, c);
            f(&buf)
        }
    })
}

/// The weight gradient of [`forward_into`] as taps `(C_out, 3, 3, C_in)` from the input `x`
/// and the output gradient `dy`, summed over the images. Only where [`applies`].
pub(crate) fn weight_grad_taps(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert!(applies(g), "direct convolution called where it does not apply");
    let (h, w, c, co) = (g.height, g.width, g.channels, g.out_channels);
    let per_tap = x
        .par_chunks(h * w * c)
        .zip(dy.par_chunks(h * w * co))
        .fold(
            || vec![0f32; 9 * c * co],
            |mut acc, (xi, dyi)| {
                with_padded(xi, h, w, c, |padded| {
                    // SAFETY: `applies` checked AVX-512F; the slices have the sizes walked.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        avx512::image_weight_grad(padded, dyi, &mut acc, h, w, c, co)
                    }
                });
                acc
            },
        )
        .reduce(
            || vec![0f32; 9 * c * co],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    // (3, 3, C_in, C_out) into taps (C_out, 3, 3, C_in).
    let rows = g.rows();
    let mut taps = vec![0f32; co * rows];
    for (r, row) in per_tap.chunks_exact(co).enumerate() {
        for (o, v) in row.iter().enumerate() {
            taps[o * rows + r] = *v;
        }
    }
    taps
}

/// One image `(h, w, c)` into the middle of `(h + 2, w + 2, c)`, the border zero.
fn pad(x: &[f32], padded: &mut [f32], h: usize, w: usize, c: usize) {
    let row = (w + 2) * c;
    padded[..row].fill(0.0);
    padded[(h + 1) * row..].fill(0.0);
    for (src, dst) in x.chunks_exact(w * c).zip(padded[row..(h + 1) * row].chunks_exact_mut(row)) {
        dst[..c].fill(0.0);
        dst[c..(w + 1) * c].copy_from_slice(src);
        dst[(w + 1) * c..].fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The whole image: every output row, in tiles of `P` pixels × `16·V` channels, for `C`
    /// input channels, or any number when `C` is 0: a compile-time count makes every pixel's
    /// offset in the tile an immediate instead of a chain of adds (width 0.25, batch 128, 2
    /// threads, GFLOP/s forward / input gradient, three alternated runs: 16→16 55-58 / 54-57 →
    /// 71-78 / 65-75, 32→32 82-88 / 70-84 → 92-101 / 86-98).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `padded` is `(h + 2)(w + 2)c`, `weights` `9·c·co`, `y` `h·w·co`
    /// floats, `co` a multiple of 16, `C` 0 or `c`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image<const C: usize>(
        padded: &[f32],
        weights: &[f32],
        y: &mut [std::mem::MaybeUninit<f32>],
        h: usize,
        w: usize,
        c: usize,
        co: usize,
    ) {
        assert!(C == 0 || C == c, "direct convolution: compiled for {C} channels, called with {c}");
        assert!(padded.len() >= (h + 2) * (w + 2) * c && weights.len() >= 9 * c * co && y.len() >= h * w * co);
        assert!(co.is_multiple_of(16));
        let row_stride = (w + 2) * c;
        let (xp, wp, yp) = (padded.as_ptr(), weights.as_ptr(), y.as_mut_ptr().cast::<f32>());
        for oy in 0..h {
            let mut o = 0;
            while o < co {
                let v2 = co - o >= 32;
                let mut ox = 0;
                while ox < w {
                    let left = w - ox;
                    // SAFETY: pixel (oy, ox) of the padded image and its 3×3 window stay inside
                    // `padded`; the output tile inside `y`; channels o.. inside `co`.
                    unsafe {
                        let x0 = xp.add(oy * row_stride + ox * c);
                        let w0 = wp.add(o);
                        let y0 = yp.add((oy * w + ox) * co + o);
                        let args = (x0, row_stride, c, w0, co, y0);
                        let step = if v2 {
                            match left {
                                12.. => tile::<12, 2, C>(args),
                                8..=11 => tile::<8, 2, C>(args),
                                4..=7 => tile::<4, 2, C>(args),
                                2..=3 => tile::<2, 2, C>(args),
                                _ => tile::<1, 2, C>(args),
                            }
                        } else {
                            match left {
                                16.. => tile::<16, 1, C>(args),
                                8..=15 => tile::<8, 1, C>(args),
                                4..=7 => tile::<4, 1, C>(args),
                                2..=3 => tile::<2, 1, C>(args),
                                _ => tile::<1, 1, C>(args),
                            }
                        };
                        ox += step;
                    }
                }
                o += if v2 { 32 } else { 16 };
            }
        }
    }

    /// Adds one image's weight gradient into `acc` `(3, 3, c, co)`: for each tap and group of
    /// `R` input channels, `R × 16·V` accumulators run over every output pixel.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `padded` is `(h + 2)(w + 2)c`, `dy` `h·w·co`, `acc` `9·c·co`
    /// floats, `co` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image_weight_grad(
        padded: &[f32],
        dy: &[f32],
        acc: &mut [f32],
        h: usize,
        w: usize,
        c: usize,
        co: usize,
    ) {
        assert!(padded.len() >= (h + 2) * (w + 2) * c && dy.len() >= h * w * co && acc.len() >= 9 * c * co);
        assert!(co.is_multiple_of(16));
        let (xp, dp, ap) = (padded.as_ptr(), dy.as_ptr(), acc.as_mut_ptr());
        for t in 0..9 {
            let (ky, kx) = (t / 3, t % 3);
            let mut o = 0;
            while o < co {
                let v2 = co - o >= 32;
                let mut i = 0;
                while i < c {
                    let left = c - i;
                    // SAFETY: every pixel the tile reads is inside `padded` (the window of an
                    // output pixel), every gradient inside `dy`, every sum inside `acc`.
                    unsafe {
                        let args = WeightTileArgs {
                            x0: xp.add((ky * (w + 2) + kx) * c + i),
                            dy0: dp.add(o),
                            acc0: ap.add((t * c + i) * co + o),
                            h,
                            w,
                            c,
                            co,
                        };
                        i += if v2 {
                            match left {
                                8.. => weight_tile::<8, 2>(args),
                                4..=7 => weight_tile::<4, 2>(args),
                                2..=3 => weight_tile::<2, 2>(args),
                                _ => weight_tile::<1, 2>(args),
                            }
                        } else {
                            match left {
                                16.. => weight_tile::<16, 1>(args),
                                8..=15 => weight_tile::<8, 1>(args),
                                4..=7 => weight_tile::<4, 1>(args),
                                2..=3 => weight_tile::<2, 1>(args),
                                _ => weight_tile::<1, 1>(args),
                            }
                        };
                    }
                }
                o += if v2 { 32 } else { 16 };
            }
        }
    }

    /// Where one weight-gradient tile reads and adds: the padded input at (ky, kx) and its
    /// first channel, the output gradient at its first channel, the sums at (tap, i, o).
    #[derive(Clone, Copy)]
    struct WeightTileArgs {
        x0: *const f32,
        dy0: *const f32,
        acc0: *mut f32,
        h: usize,
        w: usize,
        c: usize,
        co: usize,
    }

    /// `R` input channels × `16·V` output channels of one tap, over all output pixels;
    /// returns `R`.
    ///
    /// # Safety
    /// As [`image_weight_grad`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn weight_tile<const R: usize, const V: usize>(a: WeightTileArgs) -> usize {
        let mut sums = [[_mm512_setzero_ps(); V]; R];
        for oy in 0..a.h {
            for ox in 0..a.w {
                // SAFETY: inside the padded image and `dy`, as the caller guarantees.
                unsafe {
                    let xr = a.x0.add((oy * (a.w + 2) + ox) * a.c);
                    let dr = a.dy0.add((oy * a.w + ox) * a.co);
                    let mut dv = [_mm512_setzero_ps(); V];
                    for (v, slot) in dv.iter_mut().enumerate() {
                        *slot = _mm512_loadu_ps(dr.add(v * 16));
                    }
                    for (r, row) in sums.iter_mut().enumerate() {
                        let xv = _mm512_set1_ps(*xr.add(r));
                        for (s, d) in row.iter_mut().zip(&dv) {
                            *s = _mm512_fmadd_ps(xv, *d, *s);
                        }
                    }
                }
            }
        }
        for (r, row) in sums.iter().enumerate() {
            for (v, s) in row.iter().enumerate() {
                // SAFETY: the tile's sums are inside `acc`.
                unsafe {
                    let at = a.acc0.add(r * a.co + v * 16);
                    _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *s));
                }
            }
        }
        R
    }

    type TileArgs = (*const f32, usize, usize, *const f32, usize, *mut f32);

    /// `P` output pixels of one row × `16·V` output channels; returns `P`.
    ///
    /// # Safety
    /// As [`image`], with the pointers at the tile's first input pixel, weight and output.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const P: usize, const V: usize, const C: usize>((x0, row_stride, c, w0, co, y0): TileArgs) -> usize {
        let c = if C == 0 { c } else { C };
        let mut acc = [[_mm512_setzero_ps(); V]; P];
        for ky in 0..3 {
            for kx in 0..3 {
                // SAFETY: inside the padded image and the weights, as the caller guarantees.
                unsafe {
                    let xr = x0.add(ky * row_stride + kx * c);
                    let wr = w0.add((ky * 3 + kx) * c * co);
                    for ci in 0..c {
                        let mut wv = [_mm512_setzero_ps(); V];
                        for (v, slot) in wv.iter_mut().enumerate() {
                            *slot = _mm512_loadu_ps(wr.add(ci * co + v * 16));
                        }
                        for (p, row) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*xr.add(p * c + ci));
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
                // SAFETY: the tile's outputs are inside `y`.
                unsafe { _mm512_storeu_ps(y0.add(p * co + v * 16), *a) };
            }
        }
        P
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{
        conv_forward_im2col, conv_input_grad, conv_input_grad_im2col, conv_weight_grad_taps_im2col, weight_to_taps,
    };
    use rand::{Rng, SeedableRng};

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The forward and both gradients equal the im2col path on random inputs, for 16- and
    /// 32-wide channel blocks, odd channel counts, and row widths that leave every tile size.
    #[test]
    fn direct_forward_and_input_grad_equal_im2col() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &(n, c, h, w, co) in &[
            (2, 16, 32, 32, 16),
            (3, 5, 7, 13, 32),
            (2, 32, 4, 4, 32),
            (1, 3, 9, 31, 16),
            (2, 32, 5, 27, 32),
            (1, 16, 3, 13, 32),
        ] {
            let g = Geometry { channels: c, height: h, width: w, kernel: 3, stride: 1, padding: 1, out_channels: co };
            if !applies(&g) {
                eprintln!("no AVX-512 on this CPU: the direct convolution is not used here");
                return;
            }
            let x: Vec<f32> = (0..n * h * w * c).map(|_| rng.random_range(-1.0..1.0)).collect();
            let dy: Vec<f32> = (0..n * h * w * co).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..co * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let taps = weight_to_taps(&wt, &g);
            let reference = conv_forward_im2col(&g, &x, &taps);
            // NaN in every slot first: an output the kernel left unwritten stays NaN (callers
            // hand it uninitialised memory, relying on it writing every element).
            let mut slots = vec![std::mem::MaybeUninit::new(f32::NAN); reference.len()];
            forward_into(&g, &x, &taps_to_direct(&taps, &g), &mut slots);
            // SAFETY: every slot was initialised before the kernel wrote into it.
            let direct: Vec<f32> = slots.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert!(direct.iter().all(|v| v.is_finite()), "forward n{n} c{c} {h}×{w} co{co}: an output left unwritten");
            let e = max_rel(&direct, &reference);
            assert!(e < 1e-5, "forward n{n} c{c} {h}×{w} co{co}: {e}");
            let mut dx_ref = vec![0f32; x.len()];
            conv_input_grad_im2col(&g, &dy, &taps, &mut dx_ref, false);
            let dx = conv_input_grad(&g, &dy, &taps);
            let e = max_rel(&dx, &dx_ref);
            assert!(e < 1e-5, "input gradient n{n} c{c} {h}×{w} co{co}: {e}");
            let dw_ref = conv_weight_grad_taps_im2col(&g, &x, &dy);
            let dw = weight_grad_taps(&g, &x, &dy);
            let e = max_rel(&dw, &dw_ref);
            assert!(e < 1e-5, "weight gradient n{n} c{c} {h}×{w} co{co}: {e}");
        }
    }
}
