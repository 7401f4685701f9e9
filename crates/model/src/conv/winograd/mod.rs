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
//! ([`weight_grad_taps`]). The input gradient is the forward of the flipped kernel. The
//! AVX-512 bodies of the products and transforms are in `avx512`.
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

use crate::cpu::{add_into, ordered_zip_fold};

use crate::conv::shared::{
    avx512, bf16, bf16_products, direct_to_taps, product_vectors, with_scratch, Geometry, RowAffine,
};

#[cfg(target_arch = "x86_64")]
mod avx512;

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
pub(crate) fn handles_forward(g: &Geometry) -> bool {
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

/// Whether [`weight_grad_taps`] computes this convolution's weight gradient on this CPU: where
/// [`handles_forward`], from 32 channels. At 16 the transforms cost what the products save: width 0.25's 16→16 on
/// 32×32, batch 128, weight gradient 158-165 GFLOP/s in four runs against the direct kernel's
/// 171-198 (32→32 on 16×16: 232-241 against 208-214).
pub(crate) fn handles_weight_grad(g: &Geometry) -> bool {
    handles_forward(g) && g.channels >= 32 && g.out_channels >= 32
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

/// A [`ForwardKernel`](crate::conv::shared::ForwardKernel): per task of whole images, groups of
/// tiles transformed, multiplied and transformed back. Only where [`handles_forward`].
pub(crate) fn forward_into_then<T: Send>(
    g: &Geometry,
    x: &[f32],
    input: Option<&RowAffine>,
    weights: &[f32],
    y: &mut [MaybeUninit<f32>],
    then: &(dyn Fn(&[f32]) -> T + Sync),
) -> Vec<T> {
    assert!(handles_forward(g), "Winograd convolution called where it does not apply");
    let (c, co) = (g.channels, g.out_channels);
    let out_len = g.positions() * co;
    let n = x.len() / g.image_len();
    assert_eq!(y.len(), n * out_len, "Winograd convolution: output size");
    if let Some(bn) = input {
        assert!(bn.scale.len() == c && bn.shift.len() == c, "Winograd convolution: BatchNorm channels");
    }
    let u = transform_weights(weights, c, co);
    // bf16 products: `U` once as row pairs, each group's `V` rounded as it is multiplied.
    let u16 = (g.bf16 && bf16_products()).then(|| bf16_row_pairs(&u, c, co));
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
            let mut v16 = vec![0u32; if u16.is_some() { group * c / 2 } else { 0 }];
            with_scratch(XI * (plane_stride(group, c) + plane_stride(group, co)), |buf| {
                let (v, m) = buf.split_at_mut(XI * plane_stride(group, c));
                for first in (0..tiles).step_by(group) {
                    let count = group.min(tiles - first);
                    let (vs, ms) = (plane_stride(count, c), plane_stride(count, co));
                    let (v, m) = (&mut v[..XI * vs], &mut m[..XI * ms]);
                    transform_inputs(g, xc, input, first, count, v);
                    for (xi, (vx, mx)) in v.chunks_exact(vs).zip(m.chunks_exact_mut(ms)).enumerate() {
                        let (vx, mx) = (&vx[..count * c], &mut mx[..count * co]);
                        match &u16 {
                            Some(u16) => bf16::product(vx, c, &u16[xi * c * co / 2..][..c * co / 2], co, mx, &mut v16),
                            None => product(vx, c, &u[xi * c * co..][..c * co], co, mx),
                        }
                    }
                    transform_outputs(g, m, first, count, yc);
                }
            });
            // SAFETY: the groups' tiles cover every output of the task's images.
            let yc = unsafe { std::slice::from_raw_parts(yc.as_ptr().cast::<f32>(), yc.len()) };
            yc.chunks_exact(out_len).map(then).collect()
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

/// `y (m × co) = a (m × c) · b (c × co)`, all row-major, on this thread: tiles of [`product_rows`]
/// rows × [`product_vectors`] · 16 columns in registers over the inner dimension, `b`'s rows
/// for the tile's columns from L1/L2. `co` a multiple of 16.
fn product(a: &[f32], c: usize, b: &[f32], co: usize, y: &mut [f32]) {
    let m = a.len() / c;
    assert!(a.len() == m * c && b.len() == c * co && y.len() == m * co, "Winograd product: sizes");
    assert!(co.is_multiple_of(16), "Winograd product: output channels");
    // SAFETY: the CPU has AVX-512F (`handles_forward`); the asserts bound every offset.
    unsafe { avx512::product(a, c, b, co, y) }
}

/// [`bf16::row_pairs_into`] of each of `U`'s 16 blocks (`c × co`, `c` even), on the pool.
fn bf16_row_pairs(u: &[f32], c: usize, co: usize) -> Vec<u32> {
    let mut out = vec![0u32; u.len() / 2];
    out.par_chunks_mut(c * co / 2).zip(u.par_chunks(c * co)).for_each(|(o, blk)| bf16::row_pairs_into(blk, co, o));
    out
}

/// A [`WeightGradKernel`](crate::conv::shared::WeightGradKernel): the weight gradient (taps
/// `(C_out, 3, 3, C_in)`, as `conv::conv_weight_grad_taps`) of the convolution `g` of `x` (with `input`, of `relu(x · scale + shift)`) from the output gradient
/// `dy`. The forward's transpose: with `Ŷ = A dY Aᵀ` the 4×4 image of a tile's 2×2 output
/// gradient, `dU_ξ = Σ_tiles V_ξᵀ Ŷ_ξ` (16 products summed over the tiles), and the weights'
/// gradient `Gᵀ dU G`. Each task sums its images' tiles into its own `dU`; the tasks' are added
/// up after. Only where [`handles_weight_grad`].
pub(crate) fn weight_grad_taps(g: &Geometry, x: &[f32], input: Option<&RowAffine>, dy: &[f32]) -> Vec<f32> {
    assert!(handles_weight_grad(g), "Winograd weight gradient called where it does not apply");
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
    let on_bf16 = g.bf16 && bf16_products();
    let du = ordered_zip_fold(
        (x, images * g.image_len()),
        (dy, images * out_len),
        zero,
        |mut du, _, xc, dyc| {
            let tiles = xc.len() / g.image_len() * tiles_per_image;
            let mut pairs = Vec::new();
            with_scratch(XI * (plane_stride(group, c) + plane_stride(group, co)), |buf| {
                let (v, d) = buf.split_at_mut(XI * plane_stride(group, c));
                for first in (0..tiles).step_by(group) {
                    let count = group.min(tiles - first);
                    let (vs, ds) = (plane_stride(count, c), plane_stride(count, co));
                    let (v, d) = (&mut v[..XI * vs], &mut d[..XI * ds]);
                    transform_inputs(g, xc, input, first, count, v);
                    transform_output_grads(g, dyc, first, count, d);
                    for ((vx, dx), ux) in v.chunks_exact(vs).zip(d.chunks_exact(ds)).zip(du.chunks_exact_mut(c * co)) {
                        let (vx, dx) = (&vx[..count * c], &dx[..count * co]);
                        if on_bf16 {
                            bf16::transposed_product_add(vx, c, dx, co, ux, &mut pairs);
                        } else {
                            transposed_product_add(vx, c, dx, co, ux);
                        }
                    }
                }
            });
            du
        },
        add_into,
    );
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
    // SAFETY: the CPU has AVX-512F (`handles_forward`); the asserts bound every offset.
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
    // SAFETY: the CPU has AVX-512F (`handles_forward`); every window pixel read is inside the image
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
}
