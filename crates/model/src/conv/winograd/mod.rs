//! The 3×3 stride-1 convolutions of 16-512 channels (the weight gradient from 32) by Winograd's minimal filtering,
//! F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//! each 2×2 block of outputs ("tile") from the 4×4 input window around it as
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]   Aᵀ = [1 1 1 0; 0 1 -1 -1]
//! ```
//!
//! Summed over input channels the element-wise product becomes 16 independent matrix products
//! (one per entry ξ of the 4×4 transform), `M_ξ = V_ξ · U_ξ` with `V_ξ` (tiles × C_in) the
//! transformed inputs and `U_ξ` (C_in × C_out) the transformed weights: 16 multiply-adds per
//! tile and channel pair where the direct kernel makes 36, 2.25× fewer; the transforms are
//! additions only, O(C) per tile against the products' O(C²). The products run on AVX-512
//! register tiles of 24 accumulators ([`product`]), the transforms over 16 channels at a time.
//! A task takes whole images (several when their planes are small), and its tiles in groups
//! whose `V` and `M` stay in L2 together. The weight gradient is the transpose: `dU_ξ = Σ V_ξᵀ
//! Ŷ_ξ` over the tiles, `Ŷ = A dY Aᵀ` each tile's output gradient, then `Gᵀ dU G`
//! ([`weight_grad_taps`]). The input gradient is the forward of the flipped kernel.
//!
//! Against the direct kernels (`infomax bench conv`, batch 128, GFLOP/s counted as the direct
//! convolution's, forward / input gradient / weight gradient, one run each on a noisy host):
//! width 1.0 64→64 on 32×32 219 / 219 / 213 → 350 / 403 / 332, 128→128 on 16×16
//! 224 / 224 / 221 → 424 / 418 / 360, 256→256 on 8×8 224 / 224 / 207 → 392 / 387 / 273,
//! 512→512 on 4×4 197 / 194 / 168 → 271 / 258 / 196; width 0.5 32→32 on 32×32 211 / 211 / 214
//! → 330 / 325 / 264; width 0.25 16→16 on 32×32 191 / 194 / 171-194 → 207-228 / 203-224.
//!
//! The numbers equal the direct kernel's up to rounding: the transforms add and subtract
//! values of similar size (the 4×4 window's values, or the weights halved), no large
//! coefficients as in the larger F(4×4, 3×3) (tests: ≤ 1e-5 of the largest output).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::conv::shared::{avx512, direct_to_taps, with_scratch, Geometry, RowAffine};

/// Transform entries: a 4×4 window per tile.
const XI: usize = 16;

/// The weights' transform `G`, 4 × 3.
const G: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// Floats of one group's `V` and `M` together (256 KB: a quarter of a Zen 4 core's L2, with
/// room for the `U` streaming through). Against 128 K and 32 K floats (width 0.5 and 0.25, batch
/// 128, forward / input gradient GFLOP/s): 32→32 on 16×16 349 / 340 against 293 / 318 and 304 /
/// 318, 64→64 on 8×8 333 / 333 against 339 / 356 and 320 / 346 (single runs on a noisy host).
const GROUP_FLOATS: usize = 64 << 10;

/// Whether [`forward_into_then`] computes this convolution on this CPU:
/// 3×3, stride 1, padding 1, even planes (whole tiles), channels multiples of 16 (the
/// transforms' vectors) and above 64 output channels of 64 (the products' tiles), from
/// [`MIN_CHANNELS`] to [`MAX_CHANNELS`].
pub(crate) fn applies(g: &Geometry) -> bool {
    (g.kernel, g.stride, g.padding) == (3, 1, 1)
        && g.height.is_multiple_of(2)
        && g.width.is_multiple_of(2)
        && g.channels.is_multiple_of(16)
        && g.out_channels.is_multiple_of(16)
        && (g.out_channels <= 64 || g.out_channels.is_multiple_of(64))
        && (MIN_CHANNELS..=MAX_CHANNELS).contains(&g.channels)
        && g.out_channels <= MAX_CHANNELS
        && avx512()
}

/// Whether [`weight_grad_taps`] computes this convolution's weight gradient: where [`applies`],
/// from 32 channels. At 16 the transforms cost what the products save: width 0.25's 16→16 on
/// 32×32, batch 128, weight gradient 158-165 GFLOP/s in four runs against the direct kernel's
/// 171-198 (32→32 on 16×16: 232-241 against 208-214).
pub(crate) fn weight_grad_applies(g: &Geometry) -> bool {
    applies(g) && g.channels >= 32 && g.out_channels >= 32
}

/// The widest layer taken (ResNet-18's widest).
const MAX_CHANNELS: usize = 512;
/// The narrowest: at 16 channels the products' inner dimension is short, and Winograd still
/// won (above).
const MIN_CHANNELS: usize = 16;

/// The transformed weights `U` `(16, C_in, C_out)` from direct-layout weights `(3, 3, C_in,
/// C_out)`: `U_ξ = (G g Gᵀ)_ξ` for every (input, output) channel pair, on the pool (one task per ξ).
pub(crate) fn transform_weights(weights: &[f32], c: usize, co: usize) -> Vec<f32> {
    assert_eq!(weights.len(), 9 * c * co, "Winograd weights: size");
    let block = c * co;
    let fill = |u: &mut [MaybeUninit<f32>]| {
        u.par_chunks_mut(block).enumerate().for_each(|(xi, ux)| {
            let (a, b) = (xi / 4, xi % 4);
            let terms: Vec<(f32, &[f32])> = (0..9)
                .filter_map(|t| {
                    let coefficient = G[a][t / 3] * G[b][t % 3];
                    (coefficient != 0.0).then(|| (coefficient, &weights[t * block..][..block]))
                })
                .collect();
            for (i, u) in ux.iter_mut().enumerate() {
                u.write(terms.iter().map(|(k, w)| k * w[i]).sum());
            }
        })
    };
    // SAFETY: the 16 blocks cover `u`, every element written once.
    unsafe { crate::cpu::new_filled(XI * block, fill) }
}

/// `y = conv(x)` as `direct::forward_into_then` computes it (weights `(3, 3, C_in, C_out)`,
/// with `input` the images are `relu(x · scale + shift)`), `then` on each image's output while it
/// is in cache. Only where [`applies`].
pub(crate) fn forward_into_then<T: Send>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [MaybeUninit<f32>],
    then: impl Fn(&[f32]) -> T + Sync,
) -> Vec<T> {
    assert!(applies(g), "Winograd convolution called where it does not apply");
    let (c, co) = (g.channels, g.out_channels);
    let out_len = g.positions() * co;
    let n = x.len() / g.image_len();
    assert_eq!(y.len(), n * out_len, "Winograd convolution: output size");
    if let Some(bn) = input {
        assert!(bn.scale.len() == c && bn.shift.len() == c, "Winograd convolution: BatchNorm channels");
    }
    let u = transform_weights(weights, c, co);
    let tiles_per_image = g.height / 2 * (g.width / 2);
    // Tiles per group: V and M in L2, but at least `min_group` (each group reads all of U), a
    // multiple of the products' tile and at least one.
    let rows = product_rows(co);
    let group = ((GROUP_FLOATS / (XI * (c + co))).max(min_group(c, co)) / rows * rows).max(rows);
    let images = group.div_ceil(tiles_per_image).clamp(1, n.max(1));
    let per_task: Vec<Vec<T>> = y
        .par_chunks_mut(images * out_len)
        .zip(x.par_chunks(images * g.image_len()))
        .map(|(yc, xc)| {
            let tiles = xc.len() / g.image_len() * tiles_per_image;
            with_scratch(XI * (plane_stride(group, c) + plane_stride(group, co)), |buf| {
                let (v, m) = buf.split_at_mut(XI * plane_stride(group, c));
                for first in (0..tiles).step_by(group) {
                    let count = group.min(tiles - first);
                    let (vs, ms) = (plane_stride(count, c), plane_stride(count, co));
                    let (v, m) = (&mut v[..XI * vs], &mut m[..XI * ms]);
                    transform_inputs(g, xc, input, first, count, v);
                    for ((vx, ux), mx) in v.chunks_exact(vs).zip(u.chunks_exact(c * co)).zip(m.chunks_exact_mut(ms)) {
                        product(&vx[..count * c], c, ux, co, &mut mx[..count * co]);
                    }
                    transform_outputs(g, m, first, count, yc);
                }
            });
            // SAFETY: the groups' tiles cover every output of the task's images.
            let yc = unsafe { std::slice::from_raw_parts(yc.as_ptr().cast::<f32>(), yc.len()) };
            yc.chunks_exact(out_len).map(&then).collect()
        })
        .collect();
    per_task.into_iter().flatten().collect()
}

/// Tiles a group has at least: each group reads the whole of `U` once. Up to 256 × 256 channels
/// (`U` 4 MB) it comes from L3 and small groups keep `V` and `M` in L2; beyond (16 MB at 512
/// channels) from memory, and larger groups read it less often. `infomax bench conv`, width 1.0,
/// batch 128, forward / input gradient GFLOP/s: 256 channels on 8×8 with groups of at least 12,
/// 24, 48, 96 tiles 421 / 420, 393 / 387, 378 / 380, 371 / 361; 512 on 4×4 214 / 200, 227 / 211,
/// 261 / 262, 286 / 252 (192: 269 / 259; the direct kernel 191-199 / 201-234).
fn min_group(c: usize, co: usize) -> usize {
    if c * co > 256 * 256 {
        96
    } else {
        12
    }
}

/// Rows of one tile of [`product`]: 24 accumulators of `rows × vectors`.
fn product_rows(co: usize) -> usize {
    24 / product_vectors(co)
}

/// 16-channel vectors of one tile of [`product`]: 4 (64 output channels) where they divide
/// `co`, else 2, else 1.
fn product_vectors(co: usize) -> usize {
    if co.is_multiple_of(64) {
        4
    } else if co.is_multiple_of(32) {
        2
    } else {
        1
    }
}

/// `y (m × co) = a (m × c) · b (c × co)`, all row-major, on this thread: tiles of [`product_rows`]
/// rows × [`product_vectors`] · 16 columns in registers over the inner dimension, `b`'s rows
/// for the tile's columns from L1/L2. `co` a multiple of 16.
fn product(a: &[f32], c: usize, b: &[f32], co: usize, y: &mut [f32]) {
    let m = a.len() / c;
    assert!(a.len() == m * c && b.len() == c * co && y.len() == m * co, "Winograd product: sizes");
    assert!(co.is_multiple_of(16), "Winograd product: output channels");
    // SAFETY: the CPU has AVX-512F (`applies`); the asserts bound every offset.
    unsafe { avx512::product(a, c, b, co, y) }
}

/// The weight gradient (taps `(C_out, 3, 3, C_in)`, as `conv::conv_weight_grad_taps`) of the
/// convolution `g` of `x` (with `input`, of `relu(x · scale + shift)`) from the output gradient
/// `dy`. The forward's transpose: with `Ŷ = A dY Aᵀ` the 4×4 image of a tile's 2×2 output
/// gradient, `dU_ξ = Σ_tiles V_ξᵀ Ŷ_ξ` (16 products summed over the tiles), and the weights'
/// gradient `Gᵀ dU G`. Each task sums its images' tiles into its own `dU`; the tasks' are added
/// up after. Only where [`weight_grad_applies`].
pub(crate) fn weight_grad_taps(g: &Geometry, x: &[f32], input: Option<&RowAffine>, dy: &[f32]) -> Vec<f32> {
    assert!(weight_grad_applies(g), "Winograd weight gradient called where it does not apply");
    let (c, co) = (g.channels, g.out_channels);
    let out_len = g.positions() * co;
    let n = x.len() / g.image_len();
    assert_eq!(dy.len(), n * out_len, "Winograd weight gradient: sizes");
    if let Some(bn) = input {
        assert!(bn.scale.len() == c && bn.shift.len() == c, "Winograd weight gradient: BatchNorm channels");
    }
    let tiles_per_image = g.height / 2 * (g.width / 2);
    let group = weight_grad_group(c, co);
    let images = group.div_ceil(tiles_per_image).clamp(1, n.max(1));
    let zero = || vec![0f32; XI * c * co];
    let du = x
        .par_chunks(images * g.image_len())
        .zip(dy.par_chunks(images * out_len))
        .fold(zero, |mut du, (xc, dyc)| {
            let tiles = xc.len() / g.image_len() * tiles_per_image;
            with_scratch(XI * (plane_stride(group, c) + plane_stride(group, co)), |buf| {
                let (v, d) = buf.split_at_mut(XI * plane_stride(group, c));
                for first in (0..tiles).step_by(group) {
                    let count = group.min(tiles - first);
                    let (vs, ds) = (plane_stride(count, c), plane_stride(count, co));
                    let (v, d) = (&mut v[..XI * vs], &mut d[..XI * ds]);
                    transform_inputs(g, xc, input, first, count, v);
                    transform_output_grads(g, dyc, first, count, d);
                    for ((vx, dx), ux) in v.chunks_exact(vs).zip(d.chunks_exact(ds)).zip(du.chunks_exact_mut(c * co)) {
                        transposed_product_add(&vx[..count * c], c, &dx[..count * co], co, ux);
                    }
                }
            });
            du
        })
        .reduce(zero, |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        });
    direct_to_taps(&untransform_weight_grad(&du, c, co), g)
}

/// Tiles per group of the weight gradient: each group adds its products into the task's `dU`
/// (16·C_in·C_out floats, read and written once per group), so groups are longer than the
/// forward's: at least 192 tiles. `infomax bench conv`, batch 128, weight gradient GFLOP/s with
/// groups of at least 48, 96, 192, 384 tiles (single runs on a noisy host): width 1.0 64→64 on
/// 32×32 346, 332, 351, 358; 128→128 on 16×16 397, 360, 391, 375; 512→512 on 4×4 173, 196, 231,
/// 195; width 0.5 32→32 on 32×32 261, 263, 290, 261; 256→256 on 4×4 221, 181, 260, 246.
fn weight_grad_group(c: usize, co: usize) -> usize {
    (2 * GROUP_FLOATS / (XI * (c + co))).max(192)
}

/// `Gᵀ dU G` for every (input, output) channel pair: `(3, 3, C_in, C_out)` from `dU` `(16, C_in,
/// C_out)`, on the pool (one task per tap).
fn untransform_weight_grad(du: &[f32], c: usize, co: usize) -> Vec<f32> {
    let block = c * co;
    let fill = |w: &mut [MaybeUninit<f32>]| {
        w.par_chunks_mut(block).enumerate().for_each(|(t, wt)| {
            let (ky, kx) = (t / 3, t % 3);
            let terms: Vec<(f32, &[f32])> = (0..XI)
                .filter_map(|xi| {
                    let coefficient = G[xi / 4][ky] * G[xi % 4][kx];
                    (coefficient != 0.0).then(|| (coefficient, &du[xi * block..][..block]))
                })
                .collect();
            for (i, w) in wt.iter_mut().enumerate() {
                w.write(terms.iter().map(|(k, u)| k * u[i]).sum());
            }
        })
    };
    // SAFETY: the 9 blocks cover the output, every element written once.
    unsafe { crate::cpu::new_filled(9 * block, fill) }
}

/// `u (c × co) += aᵀ b` for `a` `(m × c)` and `b` `(m × co)`, row-major, on this thread: tiles
/// of input channels × [`product_vectors`] · 16 output channels in registers over the `m` rows.
fn transposed_product_add(a: &[f32], c: usize, b: &[f32], co: usize, u: &mut [f32]) {
    let m = a.len() / c;
    assert!(a.len() == m * c && b.len() == m * co && u.len() == c * co, "Winograd weight product: sizes");
    assert!(co.is_multiple_of(16), "Winograd weight product: output channels");
    // SAFETY: the CPU has AVX-512F (`applies`); the asserts bound every offset.
    unsafe { avx512::transposed_product_add(a, c, b, co, u) }
}

/// Floats from one of the 16 planes of `count` rows of `width` to the next: a cache line more
/// than the rows, so that the 16 values of one tile, at the same row of each plane, fall in
/// different L1 sets (planes a multiple of 4 KB apart all map to the same few).
fn plane_stride(count: usize, width: usize) -> usize {
    count * width + 16
}

/// `Ŷ` (16 planes of `count × C_out`, [`plane_stride`] apart) of tiles `first..first + count` of
/// the output gradient `dy` (the task's images): `A dY Aᵀ` of each tile's 2×2 gradient.
fn transform_output_grads(g: &Geometry, dy: &[f32], first: usize, count: usize, d: &mut [f32]) {
    let co = g.out_channels;
    assert_eq!(d.len(), XI * plane_stride(count, co));
    assert!(dy.len() >= (first + count).div_ceil(g.height / 2 * (g.width / 2)) * g.positions() * co);
    // SAFETY: as `transform_inputs`: every gradient pixel read is inside its image in `dy`.
    unsafe { avx512::transform_output_grads(g, dy, first, count, d) }
}

/// `V` (16 planes of `count × C`, [`plane_stride`] apart) of tiles `first..first + count` (image
/// after image, row after row) of the images `x`: `Bᵀ d B` of each tile's 4×4 window, zero
/// outside the image.
fn transform_inputs(g: &Geometry, x: &[f32], input: Option<&RowAffine>, first: usize, count: usize, v: &mut [f32]) {
    let c = g.channels;
    assert_eq!(v.len(), XI * plane_stride(count, c));
    assert!(x.len() >= (first + count).div_ceil(g.height / 2 * (g.width / 2)) * g.image_len());
    // SAFETY: the CPU has AVX-512F (`applies`); every window pixel read is inside the image
    // (checked against the plane's bounds), every write inside `v`, `c` a multiple of 16.
    unsafe { avx512::transform_inputs(g, x, input, first, count, v) }
}

/// Writes the outputs of tiles `first..first + count` into `y` (the task's images): `Aᵀ M A`
/// of each tile's 16 products `M` (16 planes of `count × C_out`, [`plane_stride`] apart).
fn transform_outputs(g: &Geometry, m: &[f32], first: usize, count: usize, y: &mut [MaybeUninit<f32>]) {
    let co = g.out_channels;
    assert_eq!(m.len(), XI * plane_stride(count, co));
    assert!(y.len() >= (first + count).div_ceil(g.height / 2 * (g.width / 2)) * g.positions() * co);
    // SAFETY: as `transform_inputs`: every output pixel written is inside its image in `y`.
    unsafe { avx512::transform_outputs(g, m, first, count, y) }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use crate::conv::shared::{Geometry, RowAffine};

    /// # Safety
    /// The CPU has AVX-512F; `x` holds every image the tiles lie in, `v` is `16 × count × C`,
    /// `C` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_inputs(
        g: &Geometry,
        x: &[f32],
        input: Option<&RowAffine>,
        first: usize,
        count: usize,
        v: &mut [f32],
    ) {
        let (c, h, w) = (g.channels, g.height, g.width);
        let (th, tw) = (h / 2, w / 2);
        let stride = super::plane_stride(count, c);
        let xp = x.as_ptr();
        let vp = v.as_mut_ptr();
        for t in 0..count {
            let tile = first + t;
            let (image, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
            let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
            let inside = |r: isize, s: isize| r >= 0 && r < h as isize && s >= 0 && s < w as isize;
            for c0 in (0..c).step_by(16) {
                let (scale, shift) = match input {
                    Some(bn) => {
                        (_mm512_loadu_ps(bn.scale.as_ptr().add(c0)), _mm512_loadu_ps(bn.shift.as_ptr().add(c0)))
                    }
                    None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
                };
                let mut d = [[_mm512_setzero_ps(); 4]; 4];
                for (r, row) in d.iter_mut().enumerate() {
                    for (s, value) in row.iter_mut().enumerate() {
                        let (py, px) = (y0 + r as isize, x0 + s as isize);
                        if inside(py, px) {
                            let at = ((image * h + py as usize) * w + px as usize) * c + c0;
                            let raw = _mm512_loadu_ps(xp.add(at));
                            *value = match input {
                                // A product and a sum, as `RowAffine::apply` rounds them (not
                                // fused): the same activation as the stored one, bit for bit.
                                Some(_) => {
                                    _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(raw, scale), shift), _mm512_setzero_ps())
                                }
                                None => raw,
                            };
                        }
                    }
                }
                // Bᵀ d: rows.
                let e = [
                    std::array::from_fn::<_, 4, _>(|s| _mm512_sub_ps(d[0][s], d[2][s])),
                    std::array::from_fn::<_, 4, _>(|s| _mm512_add_ps(d[1][s], d[2][s])),
                    std::array::from_fn::<_, 4, _>(|s| _mm512_sub_ps(d[2][s], d[1][s])),
                    std::array::from_fn::<_, 4, _>(|s| _mm512_sub_ps(d[1][s], d[3][s])),
                ];
                // (Bᵀ d) B: columns.
                for (r, e) in e.iter().enumerate() {
                    let out = [
                        _mm512_sub_ps(e[0], e[2]),
                        _mm512_add_ps(e[1], e[2]),
                        _mm512_sub_ps(e[2], e[1]),
                        _mm512_sub_ps(e[1], e[3]),
                    ];
                    for (s, o) in out.iter().enumerate() {
                        _mm512_storeu_ps(vp.add((r * 4 + s) * stride + t * c + c0), *o);
                    }
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; the sizes as `super::product` checks them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(a: &[f32], c: usize, b: &[f32], co: usize, y: &mut [f32]) {
        match super::product_vectors(co) {
            4 => product_with::<4>(a, c, b, co, y),
            2 => product_with::<2>(a, c, b, co, y),
            _ => product_with::<1>(a, c, b, co, y),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn product_with<const V: usize>(a: &[f32], c: usize, b: &[f32], co: usize, y: &mut [f32]) {
        let m = a.len() / c;
        for o in (0..co).step_by(16 * V) {
            let mut p = 0;
            while p < m {
                let (ap, bp, yp) = (a.as_ptr().add(p * c), b.as_ptr().add(o), y.as_mut_ptr().add(p * co + o));
                p += match (V, m - p) {
                    (4, 6..) => tile::<6, 4>(ap, bp, yp, c, co),
                    (2, 12..) => tile::<12, 2>(ap, bp, yp, c, co),
                    (1, 24..) => tile::<24, 1>(ap, bp, yp, c, co),
                    (_, left) if left >= 4 => tile::<4, V>(ap, bp, yp, c, co),
                    _ => tile::<1, V>(ap, bp, yp, c, co),
                };
            }
        }
    }

    /// `P` rows × `16·V` columns; returns `P`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const P: usize, const V: usize>(
        a: *const f32,
        b: *const f32,
        y: *mut f32,
        c: usize,
        co: usize,
    ) -> usize {
        let mut acc = [[_mm512_setzero_ps(); V]; P];
        for ci in 0..c {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(ci * co + v * 16)));
            for (p, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(p * c + ci));
                for (acc, bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, *bv, *acc);
                }
            }
        }
        for (p, row) in acc.iter().enumerate() {
            for (v, acc) in row.iter().enumerate() {
                _mm512_storeu_ps(y.add(p * co + v * 16), *acc);
            }
        }
        P
    }

    /// # Safety
    /// The CPU has AVX-512F; the sizes as `super::transposed_product_add` checks them.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transposed_product_add(a: &[f32], c: usize, b: &[f32], co: usize, u: &mut [f32]) {
        match super::product_vectors(co) {
            4 => transposed_product_add_with::<4>(a, c, b, co, u),
            2 => transposed_product_add_with::<2>(a, c, b, co, u),
            _ => transposed_product_add_with::<1>(a, c, b, co, u),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn transposed_product_add_with<const V: usize>(a: &[f32], c: usize, b: &[f32], co: usize, u: &mut [f32]) {
        let m = a.len() / c;
        for o in (0..co).step_by(16 * V) {
            let mut i = 0;
            while i < c {
                let (ap, bp, up) = (a.as_ptr().add(i), b.as_ptr().add(o), u.as_mut_ptr().add(i * co + o));
                i += match (V, c - i) {
                    (4, 6..) => weight_tile::<6, 4>(ap, bp, up, (m, c, co)),
                    (2, 12..) => weight_tile::<12, 2>(ap, bp, up, (m, c, co)),
                    (1, 24..) => weight_tile::<24, 1>(ap, bp, up, (m, c, co)),
                    (_, 4..) => weight_tile::<4, V>(ap, bp, up, (m, c, co)),
                    (_, 2..) => weight_tile::<2, V>(ap, bp, up, (m, c, co)),
                    _ => weight_tile::<1, V>(ap, bp, up, (m, c, co)),
                };
            }
        }
    }

    /// `R` input channels × `16·V` output channels summed over the `m` rows, added onto `u`
    /// (rows `co` apart); returns `R`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn weight_tile<const R: usize, const V: usize>(
        a: *const f32,
        b: *const f32,
        u: *mut f32,
        (m, c, co): (usize, usize, usize),
    ) -> usize {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for t in 0..m {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(t * co + v * 16)));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(t * c + r));
                for (acc, bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, *bv, *acc);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, acc) in row.iter().enumerate() {
                let at = u.add(r * co + v * 16);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *acc));
            }
        }
        R
    }

    /// # Safety
    /// The CPU has AVX-512F; `dy` holds every image the tiles lie in, `d` is `16 × count ×
    /// C_out`, `C_out` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_output_grads(g: &Geometry, dy: &[f32], first: usize, count: usize, d: &mut [f32]) {
        let (co, h, w) = (g.out_channels, g.height, g.width);
        let (th, tw) = (h / 2, w / 2);
        let stride = super::plane_stride(count, co);
        let (yp, dp) = (dy.as_ptr(), d.as_mut_ptr());
        for t in 0..count {
            let tile = first + t;
            let (image, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
            for k0 in (0..co).step_by(16) {
                let at =
                    |a: usize, b: usize| _mm512_loadu_ps(yp.add(((image * h + 2 * ty + a) * w + 2 * tx + b) * co + k0));
                let (y00, y01, y10, y11) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                // A dY: four rows from two.
                let rows = [
                    [y00, y01],
                    [_mm512_add_ps(y00, y10), _mm512_add_ps(y01, y11)],
                    [_mm512_sub_ps(y00, y10), _mm512_sub_ps(y01, y11)],
                    [_mm512_sub_ps(_mm512_setzero_ps(), y10), _mm512_sub_ps(_mm512_setzero_ps(), y11)],
                ];
                // (A dY) Aᵀ: four columns from two.
                for (r, [p, q]) in rows.iter().enumerate() {
                    let out =
                        [*p, _mm512_add_ps(*p, *q), _mm512_sub_ps(*p, *q), _mm512_sub_ps(_mm512_setzero_ps(), *q)];
                    for (s, o) in out.iter().enumerate() {
                        _mm512_storeu_ps(dp.add((r * 4 + s) * stride + t * co + k0), *o);
                    }
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; `m` is `16 × count × C_out`, `y` holds every image the tiles lie
    /// in, `C_out` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_outputs(
        g: &Geometry,
        m: &[f32],
        first: usize,
        count: usize,
        y: &mut [MaybeUninit<f32>],
    ) {
        let (co, h, w) = (g.out_channels, g.height, g.width);
        let (th, tw) = (h / 2, w / 2);
        let stride = super::plane_stride(count, co);
        let mp = m.as_ptr();
        let yp = y.as_mut_ptr().cast::<f32>();
        for t in 0..count {
            let tile = first + t;
            let (image, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
            for k0 in (0..co).step_by(16) {
                let at = |xi: usize| _mm512_loadu_ps(mp.add(xi * stride + t * co + k0));
                // Aᵀ M: two rows from four, column by column.
                let columns: [[__m512; 4]; 4] = std::array::from_fn(|s| [at(s), at(4 + s), at(8 + s), at(12 + s)]);
                let r = [
                    columns.map(|[m0, m1, m2, _]| _mm512_add_ps(_mm512_add_ps(m0, m1), m2)),
                    columns.map(|[_, m1, m2, m3]| _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3)),
                ];
                // (Aᵀ M) A: two columns from four.
                for (a, r) in r.iter().enumerate() {
                    let left = _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]);
                    let right = _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]);
                    let row = (image * h + 2 * ty + a) * w + 2 * tx;
                    _mm512_storeu_ps(yp.add(row * co + k0), left);
                    _mm512_storeu_ps(yp.add((row + 1) * co + k0), right);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use std::mem::MaybeUninit;

    use crate::conv::shared::{Geometry, RowAffine};

    pub(super) unsafe fn transform_inputs(
        _: &Geometry,
        _: &[f32],
        _: Option<&RowAffine>,
        _: usize,
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!("Winograd convolution without AVX-512")
    }

    pub(super) unsafe fn transform_outputs(_: &Geometry, _: &[f32], _: usize, _: usize, _: &mut [MaybeUninit<f32>]) {
        unreachable!("Winograd convolution without AVX-512")
    }

    pub(super) unsafe fn product(_: &[f32], _: usize, _: &[f32], _: usize, _: &mut [f32]) {
        unreachable!("Winograd convolution without AVX-512")
    }

    pub(super) unsafe fn transposed_product_add(_: &[f32], _: usize, _: &[f32], _: usize, _: &mut [f32]) {
        unreachable!("Winograd convolution without AVX-512")
    }

    pub(super) unsafe fn transform_output_grads(_: &Geometry, _: &[f32], _: usize, _: usize, _: &mut [f32]) {
        unreachable!("Winograd convolution without AVX-512")
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::conv::{
        conv_forward_im2col, conv_forward_with_statistics, conv_input_grad, conv_input_grad_im2col,
        conv_weight_grad_taps_bn_relu, conv_weight_grad_taps_im2col, weight_to_taps,
    };

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    fn geometry((c, h, w, co): (usize, usize, usize, usize)) -> Geometry {
        Geometry { channels: c, height: h, width: w, kernel: 3, stride: 1, padding: 1, out_channels: co }
    }

    /// The weights' transform by its definition, `G g Gᵀ` as two matrix products.
    #[test]
    fn transformed_weights_are_g_g_gt() {
        let (c, co) = (2, 3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let weights: Vec<f32> = (0..9 * c * co).map(|_| rng.random_range(-1.0..1.0)).collect();
        let u = transform_weights(&weights, c, co);
        let g = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0f64]];
        for (i, o) in (0..c).flat_map(|i| (0..co).map(move |o| (i, o))) {
            let k = |ky: usize, kx: usize| weights[((ky * 3 + kx) * c + i) * co + o] as f64;
            for (a, b) in (0..4).flat_map(|a| (0..4).map(move |b| (a, b))) {
                let expected: f64 = (0..9).map(|t| g[a][t / 3] * k(t / 3, t % 3) * g[b][t % 3]).sum();
                let got = u[((a * 4 + b) * c + i) * co + o] as f64;
                assert!((got - expected).abs() < 1e-6, "U[{a}{b}] channel {i}→{o}: {got} vs {expected}");
            }
        }
    }

    /// Forward (from the images and from `relu(BN(x))` of them, with the statistics after it) and
    /// the stride-1 input gradient through the flipped kernel equal im2col on random inputs, into
    /// NaN-filled outputs (every element written): planes of one tile and of many, groups
    /// that end inside an image and images that share a task, a last task of fewer images, and the
    /// widths the network uses.
    #[test]
    fn winograd_equals_im2col() {
        if !avx512() {
            assert!(!applies(&geometry((64, 8, 8, 64))), "no AVX-512: never");
            eprintln!("no AVX-512 on this CPU: Winograd is not used here");
            return;
        }
        assert!(!applies(&geometry((8, 8, 8, 64))), "input channels off 16: direct");
        assert!(!applies(&geometry((64, 7, 8, 64))), "odd planes: direct");
        assert!(!applies(&geometry((64, 8, 8, 96))), "output channels beyond 64 off 64: direct");
        assert!(!applies(&geometry((64, 8, 8, 24))), "output channels off 16: direct");
        assert!(!applies(&geometry((1024, 4, 4, 64))), "beyond 512 channels: direct");
        assert!(!applies(&Geometry { stride: 2, ..geometry((64, 8, 8, 64)) }), "stride 2: direct");
        assert!(!applies(&Geometry { kernel: 1, padding: 0, ..geometry((64, 8, 8, 64)) }), "1×1: direct");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for &(n, shape) in &[
            (3, (64, 2, 2, 64)),
            (2, (64, 16, 16, 64)),
            (5, (128, 8, 8, 128)),
            (3, (64, 32, 32, 128)),
            (7, (256, 4, 4, 256)),
            (2, (80, 6, 10, 192)),
            (9, (128, 4, 4, 64)),
            (3, (16, 32, 32, 16)),
            (2, (32, 16, 16, 32)),
            (2, (48, 4, 6, 32)),
            (3, (32, 6, 4, 48)),
            (2, (512, 4, 4, 512)),
            // No direct kernel for 256 channels on 12×12 (a 96-pixel image's third stage).
            (2, (256, 12, 12, 256)),
            // A 16-channel output after 512 (the input gradient of 16 → 512): groups shorter
            // than the products' 24-row tile.
            (2, (16, 4, 4, 512)),
            (2, (512, 4, 4, 16)),
        ] {
            let g = geometry(shape);
            let case = format!("n{n} {shape:?}");
            assert!(applies(&g), "{case}: Winograd should take it");
            // `conv` dispatches to it whether or not a direct kernel exists for the shape.
            assert!(crate::conv::forward_has_kernel(&g), "{case}: conv should hand it to Winograd");
            let (c, co) = (g.channels, g.out_channels);
            let x: Vec<f32> = (0..n * g.image_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..co * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let taps = weight_to_taps(&wt, &g);
            let weights = crate::conv::shared::taps_to_direct(&taps, &g);
            let reference = conv_forward_im2col(&g, &x, &taps);
            let mut slots = vec![MaybeUninit::new(f32::NAN); reference.len()];
            let sums = forward_into_then(&g, &x, None, &weights, &mut slots, |yi| yi.iter().sum::<f32>());
            // SAFETY: every slot was initialised before the kernel wrote into it.
            let y: Vec<f32> = slots.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert!(y.iter().all(|v| v.is_finite()), "forward {case}: an output left unwritten");
            let e = max_rel(&y, &reference);
            assert!(e < 1e-5, "forward {case}: {e}");
            let image_sums: Vec<f32> = y.chunks_exact(g.positions() * co).map(|yi| yi.iter().sum()).collect();
            assert_eq!(sums, image_sums, "forward {case}: `then` on each image's output, in order");

            // From relu(BN(x)), with the statistics of the output, as conv2 of a block runs.
            let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5..1.5)).collect();
            let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
            let bn = RowAffine::of_batch(&x, &gamma, &beta, 1e-5);
            let reference = conv_forward_im2col(&g, &bn.apply_new(&x, true), &taps);
            let (y, (mean, var)) = conv_forward_with_statistics(&g, &x, Some(&bn), &taps);
            let e = max_rel(&y, &reference);
            assert!(e < 1e-5, "forward from relu(BN(x)) {case}: {e}");
            let (mean_ref, var_ref) = crate::batch_norm::mean_and_variance(&reference, co);
            let scale = var_ref.iter().fold(0f64, |m, v| m.max(*v)).sqrt();
            let e = mean.iter().zip(&mean_ref).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(e < 1e-5, "means {case}: {e} of the largest standard deviation");
            let e = var.iter().zip(&var_ref).fold(0f64, |m, (a, b)| m.max((a - b).abs() / b));
            assert!(e < 1e-4, "variances {case}: {e}");

            // The input gradient: Winograd on the flipped kernel where the swapped channels apply.
            let flipped_applies = c.is_multiple_of(if c > 64 { 64 } else { 16 }) && co.is_multiple_of(16);
            assert_eq!(applies(&crate::conv::shared::flipped(&g)), flipped_applies, "{case}");
            assert!(
                !flipped_applies || crate::conv::input_grad_has_kernel(&g),
                "{case}: conv should hand it to Winograd"
            );
            let dy: Vec<f32> = (0..n * g.positions() * co).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut dx_ref = vec![0f32; x.len()];
            conv_input_grad_im2col(&g, &dy, &taps, &mut dx_ref, false);
            let e = max_rel(&conv_input_grad(&g, &dy, &taps), &dx_ref);
            assert!(e < 1e-5, "input gradient {case}: {e}");

            // The weight gradient, from the images and from relu(BN(x)) made as it reads them.
            assert_eq!(weight_grad_applies(&g), c >= 32 && co >= 32, "{case}");
            if !weight_grad_applies(&g) {
                continue;
            }
            let dw_ref = conv_weight_grad_taps_im2col(&g, &x, &dy);
            let e = max_rel(&weight_grad_taps(&g, &x, None, &dy), &dw_ref);
            assert!(e < 1e-5, "weight gradient {case}: {e}");
            let dw_ref = conv_weight_grad_taps_im2col(&g, &bn.apply_new(&x, true), &dy);
            let e = max_rel(&conv_weight_grad_taps_bn_relu(&g, &x, &bn, &dy), &dw_ref);
            assert!(e < 1e-5, "weight gradient from relu(BN(x)) {case}: {e}");
        }
    }
}
