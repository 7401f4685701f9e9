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

/// The `cols × rows` transpose of the row-major `rows × cols` matrix `src`, in 16 × 16 blocks,
/// bands of 16 output rows on the pool: element by element, every write of a long column lands
/// on its own cache line (3×3 convolution weights of 256 channels, 2.4 MB: 0.96 ms, a tenth of
/// the convolution they feed on two cores; blocked, on one thread: 0.39 ms).
pub(crate) fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 16;
    assert_eq!(src.len(), rows * cols, "transpose: {} floats for {rows} × {cols}", src.len());
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(B * rows.max(1)).enumerate().for_each(|(band, out)| {
            let c0 = band * B;
            for r0 in (0..rows).step_by(B) {
                for (dc, column) in out.chunks_exact_mut(rows).enumerate() {
                    for r in r0..(r0 + B).min(rows) {
                        column[r].write(src[r * cols + c0 + dc]);
                    }
                }
            }
        })
    };
    // SAFETY: every output row `c` (a band's `dc`) gets all `rows` of its elements.
    unsafe { new_filled(src.len(), fill) }
}

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
