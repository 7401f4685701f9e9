//! `y = x Wᵀ + b` on the CPU as one op whose backward writes every gradient in its variable's
//! own layout.
//!
//! candle's `Linear` multiplies by the transposed view `Wᵀ`, so its autograd hands the weight's
//! gradient back through that transpose: `(dWᵀ)ᵀ` is added into a zeroed `(out, in)` buffer
//! element by element at a stride of `out` floats (candle's strided binary-op path), once per
//! forward call, and the bias's gradient is a sum over rows, another strided loop. With the
//! 2048-2048 projector on two views this was most of a width-0.25 VICReg step's time outside the
//! encoder (the projector and loss alone, fwd + bwd: 180-220 ms, of which the GEMMs ~45). Here
//! the forward is one GEMM reading `W` through its strides, and the backward two GEMMs, `dx =
//! dy·W` and `dW = dyᵀ·x`, each written straight into its `(rows, columns)` layout, and `db` the
//! column sums of `dy`. Elsewhere (a GPU, other dtypes) candle's own ops run.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gemm::Parallelism;

use crate::conv::shared::bf16;
use crate::cpu::{f32_slice, matmul_raw, transposed};

/// The name the ops' errors carry.
const OP: &str = "linear";

/// From how many rows the forward transposes `W` before its product.
const TRANSPOSE_ROWS: usize = 64;

/// `x Wᵀ [+ b]` for `x` `(N, in)`, `W` `(out, in)` and `b` `(out)`: the fused op on the CPU in
/// f32, candle's `matmul` and `broadcast_add` elsewhere. With `bf16` the fused op's three
/// products take bf16 operands and f32 sums on the CPU's own instructions, where it has them
/// ([`bf16_products`](crate::conv::bf16_products)) and both widths are multiples of 16; the
/// bias, its gradient and every result stay f32.
pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, bf16: bool) -> Result<Tensor> {
    let fused = x.device().is_cpu() && x.rank() == 2 && [x, w].iter().all(|t| t.dtype() == DType::F32);
    if !fused || b.is_some_and(|b| b.dtype() != DType::F32 || b.rank() != 1) {
        let y = x.matmul(&w.t()?)?;
        return match b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        };
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let (out, inputs) = w.dims2()?;
    let op = Forward { bf16: bf16 && takes_bf16(inputs, out) };
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// Whether a layer of `inputs` and `out` features runs its products on bf16 instructions: the
/// CPU has them, and both widths fill the kernels' 16-lane vectors.
pub fn takes_bf16(inputs: usize, out: usize) -> bool {
    inputs.is_multiple_of(16) && out.is_multiple_of(16) && crate::conv::bf16_products()
}

/// The shapes of one product: `n` rows, `k` inputs, `m` outputs, from `x` and `W`'s layouts.
fn dims(xl: &Layout, wl: &Layout) -> Result<(usize, usize, usize)> {
    let (n, k) = xl.shape().dims2()?;
    let (m, k2) = wl.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("{OP}: input has {k} features, the weight is {m} × {k2}");
    }
    Ok((n, k, m))
}

/// A new `rows × cols` matrix `lhs · rhs` (operands by their row and column strides) from a
/// multithreaded GEMM that writes every element: no zeroing pass first (the weight's gradient
/// of a 2048-wide layer is 16 MB).
fn product_into_new(
    (rows, cols, inner): (usize, usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) -> Vec<f32> {
    let len = rows * cols;
    if inner == 0 {
        return vec![0.0; len];
    }
    let mut out = Vec::with_capacity(len);
    // SAFETY: `out` has room for the `len` floats the GEMM writes without reading them, all of
    // them before `set_len`.
    unsafe {
        matmul_raw(
            (rows, cols, inner),
            out.as_mut_ptr(),
            len,
            false,
            lhs,
            lhs_strides,
            rhs,
            rhs_strides,
            Parallelism::Rayon(0),
        );
        out.set_len(len);
    }
    out
}

/// `(x, W[, b]) → x Wᵀ [+ b]`, the products in bf16 where `bf16` (its caller checked
/// [`takes_bf16`]).
#[derive(Debug, Clone, Copy)]
struct Forward {
    bf16: bool,
}

impl Forward {
    fn cpu(
        self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k, m) = dims(xl, wl)?;
        let (x, w) = (f32_slice(OP, xs, xl, "input")?, f32_slice(OP, ws, wl, "weight")?);
        let mut y = if self.bf16 {
            // `x · Wᵀ` with `Wᵀ`'s rows paired for the bf16 tiles.
            let mut w16 = vec![0u32; k.div_ceil(2) * m];
            bf16::row_pairs_into(&transposed(w, m, k), m, &mut w16);
            bf16::product_on_pool(x, k, &w16, m)
        } else {
            f32_product(x, w, (n, k, m))
        };
        if let Some(b) = b {
            if b.len() != m {
                candle_core::bail!("{OP}: the bias has {} entries for {m} outputs", b.len());
            }
            y.chunks_exact_mut(m).for_each(|row| row.iter_mut().zip(b).for_each(|(y, b)| *y += b));
        }
        Ok((CpuStorage::F32(y), Shape::from((n, m))))
    }

    /// `dx` and `dW` from `dy`.
    fn grads(self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let dy = dy.contiguous()?;
        let bf16 = self.bf16;
        Ok((dy.apply_op2_no_bwd(w, &InputGrad { bf16 })?, dy.apply_op2_no_bwd(x, &WeightGrad { bf16 })?))
    }
}

/// `x · Wᵀ` in f32 for `x` `(n, k)` and `W` `(m, k)`.
fn f32_product(x: &[f32], w: &[f32], (n, k, m): (usize, usize, usize)) -> Vec<f32> {
    // `W` read through its strides (`x·Wᵀ`, a column-major right operand) packs slowly:
    // 256 × 2048 × 2048 at 117-122 GFLOP/s on two cores against 155-202 for `x·W` from a
    // row-major `Wᵀ` (a GEMM probe). Transposing first (blocked, on the pool): the width-0.5
    // batch-128 VICReg step 90.3 → 92.7 images/s (medians of six alternated runs); an
    // element-by-element transpose (6.3 ms) had cost what it saved.
    if n >= TRANSPOSE_ROWS {
        product_into_new((n, m, k), x, (k, 1), &transposed(w, m, k), (m, 1))
    } else {
        product_into_new((n, m, k), x, (k, 1), w, (1, k))
    }
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu(xs, xl, ws, wl, None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, dy)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Forward {
    fn name(&self) -> &'static str {
        "linear-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu(xs, xl, ws, wl, Some(f32_slice(OP, bs, bl, "bias")?))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, dy)?;
        let db = dy.contiguous()?.apply_op1_no_bwd(&ColumnSums)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(dy, W) → dy · W`, in bf16 where `bf16`.
struct InputGrad {
    bf16: bool,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "linear-input-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, m) = dl.shape().dims2()?;
        let (m2, k) = wl.shape().dims2()?;
        if m != m2 {
            candle_core::bail!("{OP}: output gradient has {m} columns, the weight is {m2} × {k}");
        }
        let (dy, w) = (f32_slice(OP, ds, dl, "output gradient")?, f32_slice(OP, ws, wl, "weight")?);
        let dx = if self.bf16 {
            let mut w16 = vec![0u32; m.div_ceil(2) * k];
            bf16::row_pairs_into(w, k, &mut w16);
            bf16::product_on_pool(dy, m, &w16, k)
        } else {
            product_into_new((n, k, m), dy, (m, 1), w, (k, 1))
        };
        Ok((CpuStorage::F32(dx), Shape::from((n, k))))
    }
}

/// `(dy, x) → dyᵀ · x`, the weight's gradient `(out, in)`, in bf16 where `bf16`.
struct WeightGrad {
    bf16: bool,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "linear-weight-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, m) = dl.shape().dims2()?;
        let (n2, k) = xl.shape().dims2()?;
        if n != n2 {
            candle_core::bail!("{OP}: output gradient has {n} rows, the input {n2}");
        }
        let (dy, x) = (f32_slice(OP, ds, dl, "output gradient")?, f32_slice(OP, xs, xl, "input")?);
        let dw = if self.bf16 {
            bf16::transposed_product_on_pool(dy, m, x, k)
        } else {
            product_into_new((m, k, n), dy, (1, m), x, (k, 1))
        };
        Ok((CpuStorage::F32(dw), Shape::from((m, k))))
    }
}

/// `(N, M) → (M)`: the bias's gradient.
struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "linear-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, m) = l.shape().dims2()?;
        let dy = f32_slice(OP, s, l, "output gradient")?;
        let mut sums = vec![0f32; m];
        dy.chunks_exact(m).for_each(|row| sums.iter_mut().zip(row).for_each(|(s, v)| *s += v));
        Ok((CpuStorage::F32(sums), Shape::from(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::cpu::max_rel;

    /// Output and the three gradients equal candle's `matmul` + `broadcast_add`, with and without
    /// a bias, on shapes where the GEMMs' edges are partial, below and from [`TRANSPOSE_ROWS`]
    /// rows (W transposed first, its blocks' edges partial too).
    #[test]
    fn fused_linear_matches_candle() {
        let dev = Device::Cpu;
        for &(n, k, m, bias) in &[(5, 3, 7, true), (33, 17, 40, false), (128, 64, 96, true), (70, 19, 37, false)] {
            let x = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (n, k), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (m, k), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, m, &dev).unwrap()).unwrap();
            let upstream = crate::cpu::test_randn(0f32, 1.0, (n, m), &dev).unwrap();
            let b = bias.then_some(b.as_tensor());
            let reference = {
                let y = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
                match b {
                    Some(b) => y.broadcast_add(b).unwrap(),
                    None => y,
                }
            };
            let fused = linear_forward(x.as_tensor(), w.as_tensor(), b, false).unwrap();
            let case = format!("n{n} k{k} m{m} bias {bias}");
            assert!(max_rel(&fused, &reference) < 1e-6, "output {case}");
            let grads = |y: &Tensor| (y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let (g0, g1) = (grads(&reference), grads(&fused));
            let mut vars = vec![x.as_tensor(), w.as_tensor()];
            vars.extend(b);
            for v in vars {
                let (a, r) = (g1.get(v).expect("fused gradient"), g0.get(v).expect("reference gradient"));
                assert_eq!(a.dims(), r.dims(), "{case}");
                assert!(max_rel(a, r) < 1e-5, "gradient {:?} {case}: {}", v.dims(), max_rel(a, r));
            }
        }
    }

    /// With bf16 products the output and the three gradients are the f32 products of the
    /// bf16-rounded operands (`x`, `W`, `dy`), up to the order of f32 sums: forward, `dx` and `dW`
    /// on the bf16 tiles, bands of rows split unevenly over the pool, an odd batch.
    #[test]
    fn bf16_linear_is_the_product_of_rounded_operands() {
        if !crate::conv::bf16_products() {
            eprintln!("no AVX512-BF16 on this CPU: linear layers keep f32 products here");
            return;
        }
        let dev = Device::Cpu;
        let round = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
        for &(n, k, m, bias) in &[(5, 16, 32, true), (33, 48, 16, false), (70, 128, 64, true), (9, 32, 2048, true)] {
            assert!(takes_bf16(k, m));
            let x = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (n, k), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, (m, k), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&crate::cpu::test_randn(0f32, 1.0, m, &dev).unwrap()).unwrap();
            let dy = crate::cpu::test_randn(0f32, 1.0, (n, m), &dev).unwrap();
            let b = bias.then_some(b.as_tensor());
            let case = format!("n{n} k{k} m{m} bias {bias}");
            let y = linear_forward(x.as_tensor(), w.as_tensor(), b, true).unwrap();
            let (x16, w16, dy16) = (round(x.as_tensor()), round(w.as_tensor()), round(&dy));
            let mut expected = x16.matmul(&w16.t().unwrap()).unwrap();
            if let Some(b) = b {
                expected = expected.broadcast_add(b).unwrap();
            }
            assert!(max_rel(&y, &expected) < 1e-5, "output {case}: {}", max_rel(&y, &expected));
            // Rounded, the output differs from the f32 layer's: the bf16 kernels ran.
            let f32_y = linear_forward(x.as_tensor(), w.as_tensor(), b, false).unwrap();
            assert!(max_rel(&y, &f32_y) > 1e-4, "output {case}: f32 products");
            let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = dy16.matmul(&w16).unwrap();
            let dw = dy16.t().unwrap().matmul(&x16).unwrap();
            for (v, expected, what) in [(x.as_tensor(), &dx, "dx"), (w.as_tensor(), &dw, "dW")] {
                let g = grads.get(v).expect("gradient");
                assert_eq!(g.dims(), expected.dims(), "{what} {case}");
                assert!(max_rel(g, expected) < 1e-5, "{what} {case}: {}", max_rel(g, expected));
            }
            if let Some(b) = b {
                let db = grads.get(b).expect("bias gradient");
                assert!(max_rel(db, &dy.sum(0).unwrap()) < 1e-6, "db {case}");
            }
        }
        assert!(!takes_bf16(24, 32) && !takes_bf16(32, 40), "widths off the 16-lane vectors stay f32");
    }
}
