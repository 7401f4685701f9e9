//! The direct kernels' AVX-512 bodies: a forward tile of `P` output pixels along a row × `16·V`
//! output channels in registers over every (tap, input channel), and the weight gradient's tiles
//! of `R` input channels × `16·V` output channels of one tap over every output pixel (all nine
//! taps at once for the stem). [`Job`] and [`WeightJob`] check every offset before these run.

use std::arch::x86_64::*;

use super::{Job, WeightJob};
use crate::conv::shared::simd::{add_sums_onto, outer_product_add};

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
