//! AVX-512 steps that the direct and the tap-major weight gradients share: a tile of sums
//! kept in registers over the output positions, then added onto memory.

use std::arch::x86_64::*;

/// `sums[r][v] += x[r] · d[v]`: `R` input values broadcast against `V` gradient vectors,
/// the weight gradients' step for one output pixel.
///
/// # Safety
/// The CPU has AVX-512F; `x` readable for `R` floats.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn outer_product_add<const R: usize, const V: usize>(
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
pub(crate) unsafe fn add_sums_onto<const R: usize, const V: usize>(sums: &[[__m512; V]; R], at: *mut f32, row: usize) {
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
