//! Matrix products with bf16 operands and f32 sums on the CPU's own bf16 instructions
//! (AVX512-BF16: `vcvtneps2bf16` to round, `vdpbf16ps` to multiply two pairs per lane), for the
//! kernels that run a `train.precision = "bf16"` convolution (Winograd's 16 products and the
//! im2col GEMMs of the others) and for the heads' linear layers (`crate::linear`).
//!
//! Operands are rounded to bf16 (to nearest, ties to even) into 32-bit words holding two values
//! of the reduction dimension: consecutive channels of a row ([`product`]'s left operand) or the
//! same column of two consecutive rows ([`row_pairs_into`]). Only where [`bf16_products`]: the
//! callers check it.

#[cfg(target_arch = "x86_64")]
mod avx512;

use rayon::prelude::*;

#[cfg(test)]
use super::bf16_products;
use super::product_vectors;

/// `b` (rows of `width`, row-major) in bf16 as the products read it: rows `2k` and `2k + 1`
/// interleaved into `ceil(rows/2) × width` words, row `2k`'s value in the low half (a last odd
/// row paired with zeros). The columns in whole vectors are rounded on the CPU's conversion, the
/// rest here, the same way.
pub(crate) fn row_pairs_into(b: &[f32], width: usize, out: &mut [u32]) {
    let bf16 = |x: f32| {
        let bits = x.to_bits();
        bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16
    };
    let rows = b.len() / width;
    assert!(b.len() == rows * width && out.len() == rows.div_ceil(2) * width, "bf16 row pairs: sizes");
    // SAFETY: the CPU has AVX512-BF16 (the caller's `bf16_products`); the assert bounds the offsets.
    unsafe { avx512::bf16_row_pairs(b, width, out) };
    let done = width / 16 * 16;
    for (k, o) in out.chunks_exact_mut(width).enumerate() {
        let even = &b[2 * k * width..][done..width];
        let o = &mut o[done..];
        match b.get((2 * k + 1) * width..(2 * k + 2) * width) {
            Some(odd) => {
                o.iter_mut().zip(even.iter().zip(&odd[done..])).for_each(|(o, (e, d))| *o = bf16(*e) | bf16(*d) << 16)
            }
            None => o.iter_mut().zip(even).for_each(|(o, e)| *o = bf16(*e)),
        }
    }
}

/// `y (m × co) = a (m × c) · b (c × co)` with bf16 operands and f32 sums: `a` rounded into
/// `scratch` (channel pairs), then multiplied with `b16` (`b`'s [`row_pairs_into`]) on
/// `vdpbf16ps` tiles. `c` and `co` multiples of 16.
pub(crate) fn product(a: &[f32], c: usize, b16: &[u32], co: usize, y: &mut [f32], scratch: &mut [u32]) {
    let m = a.len() / c;
    assert!(a.len() == m * c && 2 * b16.len() == c * co && y.len() == m * co, "bf16 product: sizes");
    assert!(c.is_multiple_of(16) && co.is_multiple_of(16) && scratch.len() >= m * c / 2, "bf16 product: sizes");
    let a16 = &mut scratch[..m * c / 2];
    // SAFETY: the CPU has AVX512-BF16 (`bf16_products`, checked by the caller); the asserts bound
    // every offset.
    unsafe {
        avx512::to_bf16_pairs(a, a16);
        avx512::product_bf16(a16, c, b16, co, y)
    }
}

/// `u (c × co) += aᵀ b` for `a` (`m × c`) and `b` (`m × co`), with bf16 operands and f32 sums:
/// both rounded two rows at a time into `scratch` ([`row_pairs_into`]), then summed on
/// `vdpbf16ps` tiles. `co` a multiple of 16.
pub(crate) fn transposed_product_add(a: &[f32], c: usize, b: &[f32], co: usize, u: &mut [f32], scratch: &mut Vec<u32>) {
    let m = a.len() / c;
    assert!(a.len() == m * c && b.len() == m * co && u.len() == c * co, "bf16 transposed product: sizes");
    assert!(co.is_multiple_of(16), "bf16 transposed product: columns");
    let pairs = m.div_ceil(2);
    scratch.resize(pairs * (c + co), 0);
    let (a16, b16) = scratch.split_at_mut(pairs * c);
    row_pairs_into(a, c, a16);
    row_pairs_into(b, co, b16);
    // SAFETY: the CPU has AVX512-BF16 (`bf16_products`, checked by the caller); the asserts and
    // the pair counts bound every offset.
    unsafe { avx512::transposed_product_add_bf16(a16, (c, 0..c), b16, co, u) }
}

/// `y (m × co) = a (m × c) · b (c × co)` as [`product`] does it, in one band of rows of `a` per
/// thread of rayon's pool: a layer's single large product (a head's, `m` its batch), where the
/// convolutions' kernels call [`product`] from tasks of their own. One band per thread, so that
/// `b16`, 8 MB for a 2048-wide layer, streams from memory once per thread.
pub(crate) fn product_on_pool(a: &[f32], c: usize, b16: &[u32], co: usize) -> Vec<f32> {
    let m = a.len() / c.max(1);
    let band = m.div_ceil(rayon::current_num_threads()).max(1);
    let mut y = vec![0f32; m * co];
    y.par_chunks_mut(band * co).zip(a.par_chunks(band * c)).for_each(|(y, a)| {
        let mut scratch = vec![0u32; a.len() / 2];
        product(a, c, b16, co, y, &mut scratch)
    });
    y
}

/// `aᵀ b` (`c × co`) for `a` (`m × c`) and `b` (`m × co`), with bf16 operands and f32 sums, in
/// one band of the result's rows per thread of rayon's pool (each sum over all `m` rows in
/// order on one thread: the same bits at any thread count). `co` a multiple of 16.
pub(crate) fn transposed_product_on_pool(a: &[f32], c: usize, b: &[f32], co: usize) -> Vec<f32> {
    let m = a.len() / c.max(1);
    assert!(a.len() == m * c && b.len() == m * co, "bf16 transposed product: sizes");
    assert!(co.is_multiple_of(16), "bf16 transposed product: columns");
    let pairs = m.div_ceil(2);
    let (mut a16, mut b16) = (vec![0u32; pairs * c], vec![0u32; pairs * co]);
    rayon::join(|| row_pairs_into(a, c, &mut a16), || row_pairs_into(b, co, &mut b16));
    let band = c.div_ceil(rayon::current_num_threads()).max(1);
    let mut u = vec![0f32; c * co];
    u.par_chunks_mut(band * co).enumerate().for_each(|(i, u)| {
        let rows = i * band..(i * band + u.len() / co);
        // SAFETY: the CPU has AVX512-BF16 (`bf16_products`, checked by the caller); the asserts,
        // the pair counts and `rows` (within `0..c`, `u` its rows) bound every offset.
        unsafe { avx512::transposed_product_add_bf16(&a16, (c, rows), &b16, co, u) }
    });
    u
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    pub(super) unsafe fn bf16_row_pairs(_: &[f32], _: usize, _: &mut [u32]) {
        unreachable!("bf16 products without AVX512-BF16")
    }

    pub(super) unsafe fn to_bf16_pairs(_: &[f32], _: &mut [u32]) {
        unreachable!("bf16 products without AVX512-BF16")
    }

    pub(super) unsafe fn product_bf16(_: &[u32], _: usize, _: &[u32], _: usize, _: &mut [f32]) {
        unreachable!("bf16 products without AVX512-BF16")
    }

    pub(super) unsafe fn transposed_product_add_bf16(
        _: &[u32],
        _: (usize, std::ops::Range<usize>),
        _: &[u32],
        _: usize,
        _: &mut [f32],
    ) {
        unreachable!("bf16 products without AVX512-BF16")
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Row pairs on the CPU's conversion are bf16's round-to-nearest-even of each value, paired
    /// as the products read them: whole vectors and a tail of columns, an odd last row.
    #[test]
    fn bf16_row_pairs_round_to_nearest_even_and_pair_rows() {
        if !bf16_products() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 products are not used here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Exact ties (a bf16 value plus half an ulp) as well as random values.
        let tie = |k: u32| f32::from_bits(0x3f80_0000 + (k << 16) + 0x8000);
        for (rows, width) in [(4usize, 32usize), (5, 16), (3, 21), (1, 7), (6, 48)] {
            let b: Vec<f32> = (0..rows * width)
                .map(|i| if i % 5 == 0 { tie(i as u32 % 4) } else { rng.random_range(-3.0..3.0) })
                .collect();
            let mut out = vec![0u32; rows.div_ceil(2) * width];
            row_pairs_into(&b, width, &mut out);
            // The nearer of the two bf16 values around x (the even one on a tie), by distance.
            let bf16 = |x: f32| {
                let below = x.to_bits() >> 16;
                let value = |b: u32| f32::from_bits(b << 16) as f64;
                let (d_below, d_above) = ((x as f64 - value(below)).abs(), (value(below + 1) - x as f64).abs());
                if d_below < d_above || (d_below == d_above && below.is_multiple_of(2)) {
                    below
                } else {
                    below + 1
                }
            };
            for (k, j) in (0..rows.div_ceil(2)).flat_map(|k| (0..width).map(move |j| (k, j))) {
                let odd = if 2 * k + 1 < rows { bf16(b[(2 * k + 1) * width + j]) } else { 0 };
                let expected = bf16(b[2 * k * width + j]) | odd << 16;
                assert_eq!(out[k * width + j], expected, "rows {rows} width {width}: pair {k} column {j}");
            }
        }
    }
}
