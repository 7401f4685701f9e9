//! The two pieces of linear algebra W-MSE differentiates through, which candle lacks: the
//! Cholesky factorisation and the lower-triangular solve, each a candle custom op with its own
//! backward.
//!
//! Both compute in f64 on the host whatever the tensor's dtype and device: the matrices are
//! emb × emb (64-128 in the papers) and emb × w_size, so the copy is cheap and the factorisation
//! keeps its precision. On a GPU the operands make a host round trip (`to_device`, which candle
//! differentiates), so the ops' gradients reach the GPU graph unchanged. nalgebra does the factorisation and the solves; the backward formulas are
//! the ones PyTorch uses (Murray 2016, "Differentiation of the Cholesky decomposition"):
//!
//! - `L = chol(A)`: `Ā = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹`, with `Φ(M) = ½ (tril(M) + tril(M, −1)ᵀ)` — symmetric,
//!   the gradient for symmetric perturbations of A.
//! - `X = L⁻¹ B`: `B̄ = L⁻ᵀ X̄`, `L̄ = −tril(B̄ Xᵀ)`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use nalgebra::DMatrix;

fn host_f64(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Vec<f64>> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("linalg ops need contiguous inputs".into()))?;
    Ok(match storage {
        CpuStorage::F32(v) => v[start..end].iter().map(|&x| x as f64).collect(),
        CpuStorage::F64(v) => v[start..end].to_vec(),
        other => {
            return Err(candle_core::Error::UnsupportedDTypeForOp(other.dtype(), "linalg (f32 and f64 only)"));
        }
    })
}

fn storage_of(values: &[f64], dtype: DType) -> candle_core::Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(values.iter().map(|&x| x as f32).collect()),
        DType::F64 => CpuStorage::F64(values.to_vec()),
        other => return Err(candle_core::Error::UnsupportedDTypeForOp(other, "linalg (f32 and f64 only)")),
    })
}

/// A row-major `(rows, cols)` host matrix.
fn matrix(rows: usize, cols: usize, row_major: &[f64]) -> DMatrix<f64> {
    DMatrix::from_row_slice(rows, cols, row_major)
}

fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

fn tensor_to_matrix(t: &Tensor) -> candle_core::Result<DMatrix<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(matrix(r, c, &v))
}

fn matrix_to_tensor(m: &DMatrix<f64>, like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(row_major(m), (m.nrows(), m.ncols()), like.device())?.to_dtype(like.dtype())
}

/// Solve `Lᵀ X = B` for lower-triangular `L` (back substitution).
fn solve_lower_transposed(l: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    l.tr_solve_lower_triangular(b).expect("the diagonal of a Cholesky factor is positive")
}

/// The Cholesky factor, computed on the host before the op is applied (so that a matrix without
/// one is a value, not an error string), attached to the graph with its backward.
struct Cholesky {
    factor: DMatrix<f64>,
}

impl CustomOp1 for Cholesky {
    fn name(&self) -> &'static str {
        "cholesky"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((storage_of(&row_major(&self.factor), storage.dtype())?, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let l = tensor_to_matrix(res)?;
        let gl = tensor_to_matrix(grad)?.lower_triangle();
        let m = (l.transpose() * gl).lower_triangle();
        // Φ = ½(tril(M) + tril(M, −1)ᵀ): symmetric, the diagonal halved once.
        let mut phi = (&m + m.transpose()) * 0.5;
        for i in 0..phi.nrows() {
            phi[(i, i)] = 0.5 * m[(i, i)];
        }
        // L⁻ᵀ Φ L⁻¹ = L⁻ᵀ (L⁻ᵀ Φᵀ)ᵀ, two triangular solves.
        let right = solve_lower_transposed(&l, &phi.transpose()).transpose();
        let ga = solve_lower_transposed(&l, &right);
        Ok(Some(matrix_to_tensor(&ga, res)?))
    }
}

struct SolveLower;

impl CustomOp2 for SolveLower {
    fn name(&self) -> &'static str {
        "solve-lower-triangular"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, m) = l1.shape().dims2()?;
        let (rows, cols) = l2.shape().dims2()?;
        if n != m || rows != n {
            return Err(candle_core::Error::Msg(format!(
                "solve_lower_triangular needs L (n×n) and B (n×k), got {n}×{m} and {rows}×{cols}"
            )));
        }
        let l = matrix(n, n, &host_f64(s1, l1)?).lower_triangle();
        let b = matrix(rows, cols, &host_f64(s2, l2)?);
        let x = l
            .solve_lower_triangular(&b)
            .ok_or_else(|| candle_core::Error::Msg("solve_lower_triangular: a zero on the diagonal".into()))?;
        Ok((storage_of(&row_major(&x), s2.dtype())?, l2.shape().clone()))
    }

    fn bwd(
        &self,
        arg1: &Tensor,
        _arg2: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let l = tensor_to_matrix(arg1)?.lower_triangle();
        let x = tensor_to_matrix(res)?;
        let gx = tensor_to_matrix(grad)?;
        let gb = solve_lower_transposed(&l, &gx);
        let gl = -(&gb * x.transpose()).lower_triangle();
        Ok((Some(matrix_to_tensor(&gl, arg1)?), Some(matrix_to_tensor(&gb, res)?)))
    }
}

/// The lower-triangular Cholesky factor `L` of a symmetric positive-definite `A = L Lᵀ`, or
/// `None` when `A` is not (numerically) positive definite — never NaNs.
pub fn cholesky(a: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !a.device().is_cpu() {
        let factor = cholesky(&a.to_device(&candle_core::Device::Cpu)?)?;
        return factor.map(|l| l.to_device(a.device())).transpose();
    }
    let host = tensor_to_matrix(a)?;
    if !host.is_square() {
        return Err(candle_core::Error::Msg(format!("cholesky needs a square matrix, got {:?}", a.dims())));
    }
    let factor = nalgebra::Cholesky::new(host).map(|c| c.unpack()).filter(|l| l.iter().all(|x| x.is_finite()));
    factor.map(|factor| a.apply_op1(Cholesky { factor })).transpose()
}

/// `X = L⁻¹ B` for a lower-triangular `L` (its upper triangle is ignored).
pub fn solve_lower_triangular(l: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if !b.device().is_cpu() {
        let cpu = candle_core::Device::Cpu;
        return solve_lower_triangular(&l.to_device(&cpu)?, &b.to_device(&cpu)?)?.to_device(b.device());
    }
    l.contiguous()?.apply_op2(&b.contiguous()?, SolveLower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn factorises_a_hand_computed_matrix() {
        // A = [[4, 2], [2, 5]] = L Lᵀ with L = [[2, 0], [1, 2]].
        let a = Tensor::from_vec(vec![4.0f64, 2.0, 2.0, 5.0], (2, 2), &Device::Cpu).unwrap();
        assert_eq!(rows(&cholesky(&a).unwrap().unwrap()), vec![vec![2.0, 0.0], vec![1.0, 2.0]]);
        let b = Tensor::from_vec(vec![2.0f64, 4.0, 3.0, 6.0], (2, 2), &Device::Cpu).unwrap();
        // L X = B: x₀ = B₀/2 = (1, 2); x₁ = (B₁ − x₀)/2 = (1, 2).
        let x = solve_lower_triangular(&cholesky(&a).unwrap().unwrap(), &b).unwrap();
        assert_eq!(rows(&x), vec![vec![1.0, 2.0], vec![1.0, 2.0]]);
    }

    #[test]
    fn indefinite_matrix_has_no_factor() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 2.0, 1.0], (2, 2), &Device::Cpu).unwrap();
        assert!(cholesky(&a).unwrap().is_none());
    }

    /// Both backward passes against central finite differences of a scalar function of the
    /// outputs, through symmetric perturbations of A (A = M Mᵀ + I stays symmetric).
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let (n, k) = (4, 3);
        let m0: Vec<f64> = (0..n * n).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
        let b0: Vec<f64> = (0..n * k).map(|i| ((i * 5 % 9) as f64 - 4.0) / 3.0).collect();
        let weights: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let wt = Tensor::from_vec(weights.clone(), (n, k), &dev).unwrap();
        let f = |m: &Tensor, b: &Tensor| -> Tensor {
            let a = (m.matmul(&m.t().unwrap()).unwrap() + Tensor::eye(n, DType::F64, &dev).unwrap()).unwrap();
            let l = cholesky(&a).unwrap().unwrap();
            let x = solve_lower_triangular(&l, b).unwrap();
            // Also touch L directly so its gradient path is exercised beyond the solve.
            ((x * &wt).unwrap().sum_all().unwrap() + l.sqr().unwrap().sum_all().unwrap() * 0.1).unwrap()
        };
        let value = |m: &[f64], b: &[f64]| -> f64 {
            let mt = Tensor::from_slice(m, (n, n), &dev).unwrap();
            let bt = Tensor::from_slice(b, (n, k), &dev).unwrap();
            f(&mt, &bt).to_scalar::<f64>().unwrap()
        };
        let mv = Var::from_slice(&m0, (n, n), &dev).unwrap();
        let bv = Var::from_slice(&b0, (n, k), &dev).unwrap();
        let grads = f(mv.as_tensor(), bv.as_tensor()).backward().unwrap();
        let gm: Vec<f64> = grads.get(&mv).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let gb: Vec<f64> = grads.get(&bv).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-6;
        for i in 0..n * n {
            let (mut p, mut q) = (m0.clone(), m0.clone());
            p[i] += h;
            q[i] -= h;
            let fd = (value(&p, &b0) - value(&q, &b0)) / (2.0 * h);
            assert!((fd - gm[i]).abs() < 1e-6 * (1.0 + fd.abs()), "dM[{i}]: fd {fd} vs {}", gm[i]);
        }
        for i in 0..n * k {
            let (mut p, mut q) = (b0.clone(), b0.clone());
            p[i] += h;
            q[i] -= h;
            let fd = (value(&m0, &p) - value(&m0, &q)) / (2.0 * h);
            assert!((fd - gb[i]).abs() < 1e-6 * (1.0 + fd.abs()), "dB[{i}]: fd {fd} vs {}", gb[i]);
        }
    }
}
