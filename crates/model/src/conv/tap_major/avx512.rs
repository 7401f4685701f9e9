//! The tap-major kernels' AVX-512 bodies: for one tap and 64 output channels, a tile of 6
//! output positions (each its own window) in registers over the input channels, and the weight
//! gradient's tiles of input channels × 64 output channels over every position. [`TapJob`] and
//! `weight_grad_taps` check every offset before these run.

use std::arch::x86_64::*;

use super::TapJob;
use crate::conv::shared::simd::{add_sums_onto, outer_product_add};

/// Every tap in turn, 64 output channels at a time, tiles of 6 positions.
///
/// # Safety
/// The CPU has AVX-512F; `j`'s offsets were checked by [`TapJob::run`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward(j: &TapJob) {
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
                        6.. => tile::<6>(std::array::from_fn(at), w, (c, co), y, accumulate),
                        5 => tile::<5>(std::array::from_fn(at), w, (c, co), y, accumulate),
                        4 => tile::<4>(std::array::from_fn(at), w, (c, co), y, accumulate),
                        3 => tile::<3>(std::array::from_fn(at), w, (c, co), y, accumulate),
                        2 => tile::<2>(std::array::from_fn(at), w, (c, co), y, accumulate),
                        _ => tile::<1>(std::array::from_fn(at), w, (c, co), y, accumulate),
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
pub(super) unsafe fn weight_grad(
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
                        6.. => weight_tile::<6>(x, corners, panel, sums, co),
                        4..=5 => weight_tile::<4>(x, corners, panel, sums, co),
                        2..=3 => weight_tile::<2>(x, corners, panel, sums, co),
                        _ => weight_tile::<1>(x, corners, panel, sums, co),
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
/// As [`weight_grad`], `x` at the tap's first input channel of the tile in plane 0.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn weight_tile<const R: usize>(
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
/// As [`forward`], with the pointers at the tile's inputs, weights and first output.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const P: usize>(
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
