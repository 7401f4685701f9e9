//! The bf16 products' AVX512-BF16 bodies: rounding into pairs on `vcvtneps2bf16`, and register
//! tiles of 24 accumulators that add two products per lane on `vdpbf16ps`. The functions of
//! `bf16` that call them check the sizes.

use std::arch::x86_64::*;
use std::ops::Range;

/// `a16` (`m × c/2` pairs) = `a` (`m × c`, row-major f32) rounded to bf16 (to nearest, ties to
/// even), consecutive channels paired in one 32-bit word, the even channel in its low half.
///
/// # Safety
/// The CPU has AVX512-BF16; `c` a multiple of 16, `a16.len() == a.len() / 2`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn to_bf16_pairs(a: &[f32], a16: &mut [u32]) {
    for (i, out) in a.chunks_exact(16).zip(a16.chunks_exact_mut(8)) {
        let packed = _mm512_cvtneps_pbh(_mm512_loadu_ps(i.as_ptr()));
        _mm256_storeu_si256(out.as_mut_ptr().cast(), std::mem::transmute::<__m256bh, __m256i>(packed));
    }
}

/// `super::row_pairs_into`'s pairs over the first `width / 16 * 16` columns: rows `2k` and
/// `2k + 1` of `b` rounded to bf16 (nearest, ties to even) and interleaved, row `2k`'s value in
/// each word's low half; a last odd row is paired with zeros. The caller fills the other columns.
///
/// # Safety
/// The CPU has AVX512-BF16; `out.len() == rows.div_ceil(2) * width` for `rows = b.len() / width`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn bf16_row_pairs(b: &[f32], width: usize, out: &mut [u32]) {
    let rows = b.len() / width;
    let round = |p: *const f32| {
        _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(p))))
    };
    for k in 0..rows.div_ceil(2) {
        let (even, o) = (b.as_ptr().add(2 * k * width), out.as_mut_ptr().add(k * width));
        let odd = (2 * k + 1 < rows).then(|| b.as_ptr().add((2 * k + 1) * width));
        for j in (0..width / 16 * 16).step_by(16) {
            let low = round(even.add(j));
            let pair = match odd {
                Some(odd) => _mm512_or_si512(low, _mm512_slli_epi32::<16>(round(odd.add(j)))),
                None => low,
            };
            _mm512_storeu_si512(o.add(j).cast(), pair);
        }
    }
}

/// The product with bf16 operands and f32 sums: `y (m × co) = a (m × c) · b (c × co)` where
/// `a16` holds `a`'s rows as channel pairs ([`to_bf16_pairs`]) and `b16` `b`'s rows two at a
/// time, `(c/2) × co` words of (row 2k, row 2k + 1) ([`super::row_pairs_into`]).
///
/// # Safety
/// The CPU has AVX512-BF16; the sizes as `super::product` checks them.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn product_bf16(a16: &[u32], c: usize, b16: &[u32], co: usize, y: &mut [f32]) {
    match super::product_vectors(co) {
        4 => product_bf16_with::<4>(a16, c, b16, co, y),
        2 => product_bf16_with::<2>(a16, c, b16, co, y),
        _ => product_bf16_with::<1>(a16, c, b16, co, y),
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn product_bf16_with<const V: usize>(a16: &[u32], c: usize, b16: &[u32], co: usize, y: &mut [f32]) {
    let (pairs, m) = (c / 2, a16.len() / (c / 2));
    for o in (0..co).step_by(16 * V) {
        let mut p = 0;
        while p < m {
            let (ap, bp, yp) = (a16.as_ptr().add(p * pairs), b16.as_ptr().add(o), y.as_mut_ptr().add(p * co + o));
            p += match (V, m - p) {
                (4, 6..) => tile_bf16::<6, 4>(ap, bp, yp, pairs, co),
                (2, 12..) => tile_bf16::<12, 2>(ap, bp, yp, pairs, co),
                (1, 24..) => tile_bf16::<24, 1>(ap, bp, yp, pairs, co),
                (_, left) if left >= 4 => tile_bf16::<4, V>(ap, bp, yp, pairs, co),
                _ => tile_bf16::<1, V>(ap, bp, yp, pairs, co),
            };
        }
    }
}

/// A tile of `P` rows × `16·V` columns on channel pairs: each `vdpbf16ps` adds two channels' products per lane, so a tile
/// makes twice the multiply-adds of an FMA tile per instruction.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn tile_bf16<const P: usize, const V: usize>(
    a: *const u32,
    b: *const u32,
    y: *mut f32,
    pairs: usize,
    co: usize,
) -> usize {
    let mut acc = [[_mm512_setzero_ps(); V]; P];
    for k in 0..pairs {
        let bv: [__m512bh; V] = std::array::from_fn(|v| {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.add(k * co + v * 16).cast()))
        });
        for (p, row) in acc.iter_mut().enumerate() {
            let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a.add(p * pairs + k) as i32));
            for (acc, bv) in row.iter_mut().zip(&bv) {
                *acc = _mm512_dpbf16_ps(*acc, av, *bv);
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

/// The transposed product with bf16 operands and f32 sums: rows `rows` of `u (c × co) += aᵀ b`,
/// held in `u` from its row `rows.start`, where `a16` and `b16` hold `a` (`m × c`) and `b`
/// (`m × co`) two rows at a time, `(m/2) × c` and `(m/2) × co` words of (row 2j, row 2j + 1)
/// ([`super::row_pairs_into`]).
///
/// # Safety
/// The CPU has AVX512-BF16; the sizes as `super::transposed_product_add` checks them, `rows`
/// within `0..c` and `u` `rows.len() × co` floats.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn transposed_product_add_bf16(
    a16: &[u32],
    (c, rows): (usize, Range<usize>),
    b16: &[u32],
    co: usize,
    u: &mut [f32],
) {
    match super::product_vectors(co) {
        4 => transposed_product_add_bf16_with::<4>(a16, (c, rows), b16, co, u),
        2 => transposed_product_add_bf16_with::<2>(a16, (c, rows), b16, co, u),
        _ => transposed_product_add_bf16_with::<1>(a16, (c, rows), b16, co, u),
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn transposed_product_add_bf16_with<const V: usize>(
    a16: &[u32],
    (c, rows): (usize, Range<usize>),
    b16: &[u32],
    co: usize,
    u: &mut [f32],
) {
    let pairs = a16.len() / c;
    for o in (0..co).step_by(16 * V) {
        let mut i = rows.start;
        while i < rows.end {
            let (ap, bp) = (a16.as_ptr().add(i), b16.as_ptr().add(o));
            let up = u.as_mut_ptr().add((i - rows.start) * co + o);
            i += match (V, rows.end - i) {
                (4, 6..) => weight_tile_bf16::<6, 4>(ap, bp, up, (pairs, c, co)),
                (2, 12..) => weight_tile_bf16::<12, 2>(ap, bp, up, (pairs, c, co)),
                (1, 24..) => weight_tile_bf16::<24, 1>(ap, bp, up, (pairs, c, co)),
                (_, 4..) => weight_tile_bf16::<4, V>(ap, bp, up, (pairs, c, co)),
                (_, 2..) => weight_tile_bf16::<2, V>(ap, bp, up, (pairs, c, co)),
                _ => weight_tile_bf16::<1, V>(ap, bp, up, (pairs, c, co)),
            };
        }
    }
}

/// A tile of `R` × `16·V` sums over row pairs: each `vdpbf16ps` adds two rows' products per lane.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn weight_tile_bf16<const R: usize, const V: usize>(
    a: *const u32,
    b: *const u32,
    u: *mut f32,
    (pairs, c, co): (usize, usize, usize),
) -> usize {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for j in 0..pairs {
        let bv: [__m512bh; V] = std::array::from_fn(|v| {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.add(j * co + v * 16).cast()))
        });
        for (r, row) in acc.iter_mut().enumerate() {
            let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a.add(j * c + r) as i32));
            for (acc, bv) in row.iter_mut().zip(&bv) {
                *acc = _mm512_dpbf16_ps(*acc, av, *bv);
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
