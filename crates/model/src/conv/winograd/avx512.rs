//! Winograd's AVX-512 bodies: the input, output and output-gradient transforms over 16 channels
//! at a time, and the 16 products (and their transposes, for the weight gradient) on register
//! tiles of 24 accumulators. The functions of `winograd` that call them check the sizes.

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
                Some(bn) => (_mm512_loadu_ps(bn.scale.as_ptr().add(c0)), _mm512_loadu_ps(bn.shift.as_ptr().add(c0))),
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
                let out = [*p, _mm512_add_ps(*p, *q), _mm512_sub_ps(*p, *q), _mm512_sub_ps(_mm512_setzero_ps(), *q)];
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
