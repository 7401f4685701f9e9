//! What the crate's CPU custom ops (convolution, linear, BatchNorm, max-pool) share.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Layout, Result};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// The floats of a contiguous f32 operand of `op`, or an error naming the op and the operand.
pub(crate) fn f32_slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => candle_core::bail!("{op}: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}

/// Fold the zipped chunks of `a` (`a_chunk` floats each) and `b` (`b_chunk`), as a weight
/// gradient sums over images: `fold(acc, i, a_i, b_i)` adds chunk `i` into an accumulator. The
/// chunks are split into one contiguous group per thread of rayon's pool, each folded in order
/// into its own accumulator from `zero()`, and the groups' accumulators combined in order: the
/// same bits on every run at a given thread count. (rayon's `fold` + `reduce` groups the chunks
/// by which thread happens to steal which, so float sums differed from run to run.)
pub(crate) fn ordered_zip_fold<T: Send>(
    (a, a_chunk): (&[f32], usize),
    (b, b_chunk): (&[f32], usize),
    zero: impl Fn() -> T + Sync,
    fold: impl Fn(T, usize, &[f32], &[f32]) -> T + Sync,
    combine: impl Fn(T, T) -> T,
) -> T {
    let n = a.len().div_ceil(a_chunk.max(1));
    let groups = rayon::current_num_threads().clamp(1, n.max(1));
    let per = n.div_ceil(groups);
    let part = |s: &'_ [f32], size: usize, i: usize| -> std::ops::Range<usize> {
        (i * size).min(s.len())..((i + 1) * size).min(s.len())
    };
    let partials: Vec<T> = (0..groups)
        .into_par_iter()
        .map(|g| {
            (g * per..((g + 1) * per).min(n))
                .fold(zero(), |acc, i| fold(acc, i, &a[part(a, a_chunk, i)], &b[part(b, b_chunk, i)]))
        })
        .collect();
    partials.into_iter().reduce(combine).unwrap_or_else(zero)
}

/// `a += b`, element-wise: how two accumulators of [`ordered_zip_fold`] combine.
pub(crate) fn add_into(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each operand given by its row and column strides,
/// on this thread (`Parallelism::None`, inside a kernel's own tasks) or on rayon's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
    parallelism: Parallelism,
) {
    // SAFETY: a slice is valid and initialised for all its elements.
    unsafe {
        matmul_raw(dims, dst.as_mut_ptr(), dst.len(), accumulate, lhs, lhs_strides, rhs, rhs_strides, parallelism)
    }
}

/// [`matmul`] into raw memory: with `accumulate` false the GEMM writes every element of the
/// `m × n` destination and reads none, so it may be uninitialised.
///
/// # Safety
/// `dst` must be valid for writes of `dst_len` floats, and initialised when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_len: usize,
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: Parallelism,
) {
    assert!(dst_len >= m * n, "GEMM destination too short");
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs, "GEMM lhs too short");
    assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs, "GEMM rhs too short");
    // SAFETY: the asserts keep every element the strides reach inside the slices and `dst`.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// The `cols × rows` transpose of the row-major `rows × cols` matrix `src`: bands of 8 output
/// rows on the pool, each 8 × 8 block through AVX registers where the CPU has them. Element by
/// element, every write of a long column lands on its own cache line (3×3 convolution weights
/// of 256 channels, 256 × 2304: 0.96 ms, a tenth of the convolution they feed on two cores;
/// in 16 × 16 blocks by element 0.39 ms; this way 0.08 ms, and 2048 × 2048 5.8 → 2.7 ms).
pub(crate) fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 8;
    assert_eq!(src.len(), rows * cols, "transpose: {} floats for {rows} × {cols}", src.len());
    #[cfg(target_arch = "x86_64")]
    let avx = std::is_x86_feature_detected!("avx");
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(B * rows.max(1)).enumerate().for_each(|(band, out)| {
            let c0 = band * B;
            // Rows done in whole 8 × 8 blocks; the rest (and all of them without AVX) by element.
            #[cfg(target_arch = "x86_64")]
            let r0 = if avx && out.len() == B * rows {
                let whole = rows / B * B;
                for r0 in (0..whole).step_by(B) {
                    // SAFETY: rows r0..r0 + 8 of columns c0..c0 + 8 are inside `src`, and
                    // elements r0..r0 + 8 of the band's 8 rows inside `out`; the CPU has AVX.
                    unsafe {
                        avx::transpose8(src.as_ptr().add(r0 * cols + c0), cols, out.as_mut_ptr().add(r0).cast(), rows)
                    };
                }
                whole
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let r0 = 0;
            for (dc, column) in out.chunks_exact_mut(rows).enumerate() {
                for (r, v) in column.iter_mut().enumerate().skip(r0) {
                    v.write(src[r * cols + c0 + dc]);
                }
            }
        })
    };
    // SAFETY: every element of each output row (a band's `dc`) is written, by the blocks or after them.
    unsafe { new_filled(src.len(), fill) }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// The 8 × 8 block at `src` (rows `src_row` floats apart) transposed into `dst` (rows
    /// `dst_row` apart): unpack pairs, shuffle quads, swap 128-bit halves.
    ///
    /// # Safety
    /// The CPU has AVX; both blocks lie inside their buffers.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose8(src: *const f32, src_row: usize, dst: *mut f32, dst_row: usize) {
        // SAFETY: as this function's.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_row)));
            // t: unpacklo(r0, r1), unpackhi(r0, r1), the same of (r2, r3), (r4, r5), (r6, r7).
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            // u: in each half, columns i, i + 4 of four rows; quads of rows 0-3, then 4-7.
            let u: [__m256; 8] = std::array::from_fn(|i| {
                let q = (i / 4) * 4;
                let (a, b) = match i % 4 {
                    0 | 1 => (t[q], t[q + 2]),
                    _ => (t[q + 1], t[q + 3]),
                };
                if i % 2 == 0 {
                    _mm256_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm256_shuffle_ps::<0xEE>(a, b)
                }
            });
            for i in 0..4 {
                _mm256_storeu_ps(dst.add(i * dst_row), _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]));
                _mm256_storeu_ps(dst.add((i + 4) * dst_row), _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]));
            }
        }
    }
}

/// Elements per parallel task: enough work to amortise a task, small enough to share 2-64 cores
/// whether the rows are many and narrow (a conv's pixels) or few and wide (a projector's batch).
const ELEMENTS_PER_TASK: usize = 1 << 16;

/// Rows per task for `c` channels; at most 1024, so f32 sums within a task stay exact enough.
pub(crate) fn rows_per_task(c: usize) -> usize {
    (ELEMENTS_PER_TASK / c.max(1)).clamp(8, 1024)
}

/// Runs `$body` with `$C` bound to the channel count `$c`: a constant for the ResNets' widths, so
/// that the loops over a row's `C` channels unroll into whole AVX-512 vectors (with a run-time
/// count, a 16-channel row was one vector plus a loop's set-up and remainder: BatchNorm's
/// backward ran at 8-11 GB/s), a variable otherwise (the projectors' 2048-wide rows).
macro_rules! with_channels {
    ($c:expr, $C:ident => $body:block) => {
        match $c {
            16 => {
                const $C: usize = 16;
                $body
            }
            32 => {
                const $C: usize = 32;
                $body
            }
            64 => {
                const $C: usize = 64;
                $body
            }
            128 => {
                const $C: usize = 128;
                $body
            }
            256 => {
                const $C: usize = 256;
                $body
            }
            512 => {
                const $C: usize = 512;
                $body
            }
            c => {
                #[allow(non_snake_case)]
                let $C: usize = c;
                $body
            }
        }
    };
}
pub(crate) use with_channels;

/// `len` zeros, written by every thread of the pool: for the activation-sized buffers the
/// kernels then fill, which `vec![0.0; len]` zeroed on the one thread that runs the encoder op
/// while the others waited (perf: serial `memset` ~3.5 % of a width-0.25 step's samples, ~6 %
/// of its time).
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    const TASK: usize = 1 << 16;
    if len < TASK {
        return vec![0.0; len];
    }
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(TASK)
        .for_each(|chunk| chunk.iter_mut().for_each(|v| _ = v.write(0.0)));
    // SAFETY: every one of the first `len` elements was written above.
    unsafe { out.set_len(len) };
    out
}

/// A new vector of `len` floats that `fill` writes into uninitialised memory: the kernels that
/// produce an activation or a gradient write every element, so zeroing it first was a wasted
/// pass over memory (perf: 4.5 % of a width-0.25 step's samples, even spread over the pool).
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn new_filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the caller guarantees `fill` wrote all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// `Tensor::randn` from a seeded stream for the tests: each test thread draws seeds 0, 1, 2, … in
/// call order, so every test sees the same numbers on every run (unseeded inputs made tests that
/// compare across a ReLU's kink fail about one run in eight).
#[cfg(test)]
pub(crate) fn test_randn(
    mean: f32,
    std: f32,
    shape: impl Into<candle_core::Shape>,
    dev: &candle_core::Device,
) -> Result<candle_core::Tensor> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    thread_local! {
        static DRAWS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let shape = shape.into();
    let draw = DRAWS.with(|d| d.replace(d.get() + 1));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(draw);
    let normal = rand_distr::Normal::new(mean, std).expect("a finite mean and a positive std");
    let data: Vec<f32> = (0..shape.elem_count()).map(|_| normal.sample(&mut rng)).collect();
    candle_core::Tensor::from_vec(data, shape, dev)
}

/// max |a − b| / max |b|: how far a kernel's output is from the reference's.
#[cfg(test)]
pub(crate) fn max_rel(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    use candle_core::DType;
    let a: Vec<f64> = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f64> = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[cfg(test)]
mod tests {
    /// The transpose moves each element to its mirrored place, on sizes with partial 8 × 8
    /// blocks both ways and on whole ones.
    #[test]
    fn transposed_mirrors_every_element() {
        for &(rows, cols) in &[(1, 1), (8, 8), (16, 24), (13, 29), (64, 9), (3, 40)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let out = super::transposed(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(out[c * rows + r], src[r * cols + c], "{rows} × {cols} at ({r}, {c})");
                }
            }
        }
    }
}
