//! BatchNorm (+ ReLU) over channels-last activations as one fused kernel with its own backward.
//!
//! candle's `BatchNorm::forward_train` transposes its input to channels-first, copies it, and
//! runs about ten element-wise ops, each a pass over the activations with a fresh buffer, and
//! autograd adds as many on the way back: with the im2col convolutions in place this was ~40 % of
//! a width-0.25 training step (perf: `binary_map_vec_par`, `copy_strided_src_`, `memset`). Here
//! the forward is two passes over `(M, C)` rows (statistics, then normalise-scale-shift-ReLU)
//! and the backward two (per-channel sums, then the input's gradient), with sums in f64 across
//! tasks.
//!
//! Training-mode statistics are the batch's (biased variance, as PyTorch normalises); the running
//! statistics are updated as candle's `BatchNorm` does (momentum, unbiased variance), so the
//! variables and checkpoints are the same whichever path ran.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, Var};
use candle_nn::{BatchNorm, ModuleT};
use rayon::prelude::*;

use crate::conv::shared::{normalised, RowAffine};
use crate::cpu::{f32_slice, new_filled, rows_per_task, with_channels};

/// The name the ops' errors carry.
const OP: &str = "fused batch-norm";

/// Two per-channel sums over the rows of up to three aligned `(M, C)` arrays: `f(a, b, c, s, t)`
/// adds the terms of one task's rows into `s` and `t`. Rows accumulate in f32 within a task of
/// [`rows_per_task`] rows (so the loops vectorise) and tasks in f64.
fn channel_sums(
    [a, b, d]: [&[f32]; 3],
    c: usize,
    f: impl Fn(&[f32], &[f32], &[f32], &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let task = rows_per_task(c) * c;
    // Each task's sums, then all of them in task order: the same bits on every run (a rayon
    // `fold` + `reduce` would group the tasks by which thread stole which).
    let parts: Vec<(Vec<f32>, Vec<f32>)> = a
        .par_chunks(task)
        .zip(b.par_chunks(task).zip(d.par_chunks(task)))
        .map(|(ra, (rb, rd))| {
            let (mut ts, mut tt) = (vec![0f32; c], vec![0f32; c]);
            f(ra, rb, rd, &mut ts, &mut tt);
            (ts, tt)
        })
        .collect();
    let (mut s, mut t) = (vec![0f64; c], vec![0f64; c]);
    for (ts, tt) in parts {
        s.iter_mut().zip(&ts).for_each(|(x, y)| *x += *y as f64);
        t.iter_mut().zip(&tt).for_each(|(x, y)| *x += *y as f64);
    }
    (s, t)
}

/// Per-channel batch mean and biased variance of `(M, C)` rows, reading them from memory once:
/// each task of [`rows_per_task`] rows (≤ 256 KB, in cache) takes its [`Moments`], and the
/// tasks' merge in f64. That keeps the two-pass form's accuracy (no E[x²] − μ², which cancels
/// when the mean is large) at one pass over memory: the activations of a training step are far
/// larger than the cache, and the second full pass was ~1 % of a width-0.5 step.
pub(crate) fn mean_and_variance(x: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    let parts: Vec<Moments> = x.par_chunks(rows_per_task(c) * c).map(|rows| Moments::of_rows(rows, c)).collect();
    Moments::merge(parts, c)
}

/// A block of rows' count and, per channel, mean and sum of squared deviations from it (M₂).
pub(crate) struct Moments {
    count: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    /// Of `(rows, C)` rows, a task of [`rows_per_task`] rows at a time (f32 sums within one stay
    /// exact enough), each read twice while in cache: its mean, then the squares and residuals
    /// around that mean, the residuals' sum correcting both the mean (off by the rounding of a
    /// sum of up to 1024 rows) and M₂ — the corrected two-pass algorithm.
    pub(crate) fn of_rows(rows: &[f32], c: usize) -> Self {
        let mut total = Self { count: 0, mean: vec![0.0; c], m2: vec![0.0; c] };
        for task in rows.chunks(rows_per_task(c) * c) {
            total.add(Self::of_task(task, c));
        }
        total
    }

    fn of_task(rows: &[f32], c: usize) -> Self {
        let count = rows.len() / c;
        let (mut shift, mut residual, mut m2) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
        with_channels!(c, C => {
            let (shift, residual, m2) = (&mut shift[..C], &mut residual[..C], &mut m2[..C]);
            rows.chunks_exact(C).for_each(|row| shift.iter_mut().zip(row).for_each(|(s, v)| *s += v));
            shift.iter_mut().for_each(|s| *s /= count as f32);
            for row in rows.chunks_exact(C) {
                for (((r, q), v), mu) in residual.iter_mut().zip(m2.iter_mut()).zip(row).zip(shift.iter()) {
                    let d = v - mu;
                    *r += d;
                    *q += d * d;
                }
            }
        });
        let n = count as f64;
        let mean = shift.iter().zip(&residual).map(|(&s, &r)| s as f64 + r as f64 / n).collect();
        let m2 = m2.iter().zip(&residual).map(|(&q, &r)| q as f64 - (r as f64).powi(2) / n).collect();
        Self { count, mean, m2 }
    }

    /// Merges `other`'s rows into these (Chan, Golub & LeVeque's pairwise update, in f64).
    fn add(&mut self, other: Self) {
        if other.count == 0 {
            return;
        }
        let (n_a, n_b) = (self.count as f64, other.count as f64);
        let total = n_a + n_b;
        for ((mu, q), (&mu_b, &q_b)) in
            self.mean.iter_mut().zip(self.m2.iter_mut()).zip(other.mean.iter().zip(&other.m2))
        {
            let delta = mu_b - *mu;
            *mu += delta * n_b / total;
            *q += q_b + delta * delta * n_a * n_b / total;
        }
        self.count += other.count;
    }

    /// The per-channel mean and biased variance of all the blocks' rows together.
    pub(crate) fn merge(parts: impl IntoIterator<Item = Self>, c: usize) -> (Vec<f64>, Vec<f64>) {
        let mut total = Self { count: 0, mean: vec![0.0; c], m2: vec![0.0; c] };
        parts.into_iter().for_each(|p| total.add(p));
        let m = total.count.max(1) as f64;
        (total.mean, total.m2.iter().map(|q| q / m).collect())
    }
}

/// `(M, C) → (2, C)`: the batch mean and biased variance, for the running statistics.
struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "batch-norm-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = l.dims()[1];
        let (mean, var) = mean_and_variance(f32_slice(OP, s, l, "input")?, c);
        let out = mean.iter().chain(&var).map(|v| *v as f32).collect();
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// `(x, γ, β) → [relu](γ · (x − μ) / √(σ² + eps) + β)` over `(M, C)` with batch statistics.
#[derive(Debug, Clone, Copy)]
struct BatchNormTrain {
    eps: f64,
    relu: bool,
}

/// Where a ReLU after a BatchNorm cut the gradient on its way back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReluCut<'a> {
    /// No ReLU.
    None,
    /// Where the ReLU's output `y ≤ 0`: a ReLU after a residual sum.
    Where(&'a [f32]),
    /// The BatchNorm's own ReLU, its sign recomputed from `x`: one array fewer to stream
    /// through both passes than reading `y`.
    Own,
}

/// BatchNorm's side of [`RowAffine`] (the map itself and its application are in `conv::shared`,
/// as the convolution kernels apply it to their input): the map from a batch's own statistics,
/// and the backward.
impl RowAffine {
    /// Per channel, the scale `γ/σ` and the shift `β − μγ/σ` from the batch statistics of `x`.
    pub(crate) fn of_batch(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> Self {
        Self::of_statistics(mean_and_variance(x, gamma.len()), gamma, beta, eps)
    }

    /// [`Self::backward`] with `dx` a new buffer: `(dx, (dγ, dβ))`.
    pub(crate) fn backward_new(
        &self,
        gamma: &[f32],
        x: &[f32],
        dy: &[f32],
        cut: ReluCut,
    ) -> (Vec<f32>, (Vec<f32>, Vec<f32>)) {
        let mut params = None;
        // SAFETY: `backward` writes every element of `dx`.
        let dx = unsafe { new_filled(x.len(), |dx| params = Some(self.backward(gamma, x, dy, cut, dx))) };
        (dx, params.expect("the backward ran"))
    }

    /// The backward of `y = [relu](BN(x))` with these statistics and `gamma`: writes every
    /// element of `dx` and returns `(dγ, dβ)`; `cut` says where a ReLU after the BatchNorm cut
    /// the gradient.
    pub(crate) fn backward(
        &self,
        gamma: &[f32],
        x: &[f32],
        dy: &[f32],
        cut: ReluCut,
        dx: &mut [MaybeUninit<f32>],
    ) -> (Vec<f32>, Vec<f32>) {
        // Without a ReLU, or with the BatchNorm's own, `x` stands in for `y`, never read.
        match cut {
            ReluCut::None => self.backward_cut::<CUT_NONE>(gamma, x, x, dy, dx),
            ReluCut::Where(y) => self.backward_cut::<CUT_WHERE>(gamma, x, y, dy, dx),
            ReluCut::Own => self.backward_cut::<CUT_OWN>(gamma, x, x, dy, dx),
        }
    }

    /// [`Self::backward`] with the cut a constant, so that each loop below compiles to one
    /// branch-free body.
    fn backward_cut<const CUT: u8>(
        &self,
        gamma: &[f32],
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: &mut [MaybeUninit<f32>],
    ) -> (Vec<f32>, Vec<f32>) {
        let c = gamma.len();
        let m = x.len() / c;
        let (mean, inv_std) = (&self.mean, &self.inv_std);
        // The gradient reaching the normalisation: zero where the ReLU cut. `Own` recomputes
        // the forward's value through the same `normalised`, so its sign is the one the
        // forward's ReLU saw.
        #[inline(always)]
        fn g<const CUT: u8>(x: f32, y: f32, d: f32, scale: f32, shift: f32) -> f32 {
            match CUT {
                CUT_WHERE if y <= 0.0 => 0.0,
                CUT_OWN if normalised(x, scale, shift) <= 0.0 => 0.0,
                _ => d,
            }
        }
        let (scale, shift) = (&self.scale, &self.shift);
        // Σ dy and Σ dy · x̂ per channel, x̂ = (x − μ)/σ.
        let (mean32, inv32): (Vec<f32>, Vec<f32>) =
            mean.iter().zip(inv_std).map(|(m, s)| (*m as f32, *s as f32)).unzip();
        let (sum_dy, sum_dy_xhat) = channel_sums([x, y, dy], c, |xs, ys, ds, s, t| {
            with_channels!(c, C => {
                let (s, t) = (&mut s[..C], &mut t[..C]);
                let stats = mean32[..C].iter().zip(&inv32[..C]).zip(scale[..C].iter().zip(&shift[..C]));
                for ((xr, yr), dr) in xs.chunks_exact(C).zip(ys.chunks_exact(C)).zip(ds.chunks_exact(C)) {
                    for (((((s, t), &x), &y), &d), ((&mean, &inv), (&scale, &shift))) in
                        s.iter_mut().zip(t.iter_mut()).zip(xr).zip(yr).zip(dr).zip(stats.clone())
                    {
                        let d = g::<CUT>(x, y, d, scale, shift);
                        *s += d;
                        *t += d * (x - mean) * inv;
                    }
                }
            })
        });
        // dx = γ/σ · (g − Σg/M − x̂ · Σ(g·x̂)/M), written as g·a + x·b + k per channel.
        let mf = m as f64;
        let a: Vec<f32> = (0..c).map(|i| (gamma[i] as f64 * inv_std[i]) as f32).collect();
        let b: Vec<f32> =
            (0..c).map(|i| (-(gamma[i] as f64) * inv_std[i] * inv_std[i] * sum_dy_xhat[i] / mf) as f32).collect();
        let k: Vec<f32> = (0..c)
            .map(|i| {
                let gs = gamma[i] as f64 * inv_std[i];
                (gs * (-sum_dy[i] / mf + mean[i] * inv_std[i] * sum_dy_xhat[i] / mf)) as f32
            })
            .collect();
        let task = rows_per_task(c) * c;
        dx.par_chunks_mut(task).zip(x.par_chunks(task).zip(y.par_chunks(task).zip(dy.par_chunks(task)))).for_each(
            |(oc, (xc, (yc, dc)))| {
                with_channels!(c, C => {
                    let coefficients = a[..C].iter().zip(&b[..C]).zip(&k[..C]).zip(scale[..C].iter().zip(&shift[..C]));
                    for (((or, xr), yr), dr) in
                        oc.chunks_exact_mut(C).zip(xc.chunks_exact(C)).zip(yc.chunks_exact(C)).zip(dc.chunks_exact(C))
                    {
                        for ((((o, &x), &y), &d), (((&a, &b), &k), (&scale, &shift))) in
                            or.iter_mut().zip(xr).zip(yr).zip(dr).zip(coefficients.clone())
                        {
                            o.write(g::<CUT>(x, y, d, scale, shift) * a + x * b + k);
                        }
                    }
                })
            },
        );
        (sum_dy_xhat.iter().map(|v| *v as f32).collect(), sum_dy.iter().map(|v| *v as f32).collect())
    }
}

const CUT_NONE: u8 = 0;
const CUT_WHERE: u8 = 1;
const CUT_OWN: u8 = 2;

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-channels-last"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(OP, xs, xl, "input")?;
        let (gamma, beta) = (f32_slice(OP, gs, gl, "weight")?, f32_slice(OP, bs, bl, "bias")?);
        let affine = RowAffine::of_batch(x, gamma, beta, self.eps);
        let y = affine.apply_new(x, self.relu);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (x, gamma, beta, y) = (x.contiguous()?, gamma.contiguous()?, beta.contiguous()?, y.contiguous()?);
        let grads = BatchNormGrad {
            op: *self,
            gamma: gamma.to_dtype(DType::F32)?.to_vec1()?,
            beta: beta.to_dtype(DType::F32)?.to_vec1()?,
        };
        // (x, y, dy) in, [dx; dγ; dβ] out as one (M + 2, C) buffer, split below.
        let packed = x.apply_op3_no_bwd(&y, &dy, &grads)?;
        let m = x.dim(0)?;
        Ok((Some(packed.narrow(0, 0, m)?), Some(packed.get(m)?), Some(packed.get(m + 1)?)))
    }
}

/// The backward of [`BatchNormTrain`], carrying γ and β (small) by value.
struct BatchNormGrad {
    op: BatchNormTrain,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl CustomOp3 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "batch-norm-channels-last-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(OP, xs, xl, "input")?;
        let y = f32_slice(OP, ys, yl, "output")?;
        let dy = f32_slice(OP, ds, dl, "output gradient")?;
        let cut = if self.op.relu { ReluCut::Where(y) } else { ReluCut::None };
        let c = self.gamma.len();
        let m = x.len() / c;
        let affine = RowAffine::of_batch(x, &self.gamma, &self.beta, self.op.eps);
        // SAFETY: the backward writes the `m · c` floats of `dx`, the loop the `2c` after them.
        let out = unsafe {
            new_filled((m + 2) * c, |out| {
                let (dx, tail) = out.split_at_mut(m * c);
                let (dgamma, dbeta) = affine.backward(&self.gamma, x, dy, cut, dx);
                for (t, v) in tail.iter_mut().zip(dgamma.iter().chain(&dbeta)) {
                    t.write(*v);
                }
            })
        };
        Ok((CpuStorage::F32(out), Shape::from((m + 2, c))))
    }
}

/// Moves `bn`'s running statistics towards a batch's `mean` and biased `var` over `m` rows, as
/// candle's `BatchNorm` does (momentum; the variance made unbiased).
pub(crate) fn update_running_statistics(bn: &BatchNorm, mean: &Tensor, var: &Tensor, m: usize) -> Result<()> {
    let momentum = bn.momentum();
    let running_mean = Var::from_tensor(bn.running_mean())?;
    let running_var = Var::from_tensor(bn.running_var())?;
    running_mean.set(&((running_mean.as_tensor() * (1.0 - momentum))? + (mean * momentum)?)?)?;
    let unbiased = m as f64 / (m as f64 - 1.0);
    running_var.set(&((running_var.as_tensor() * (1.0 - momentum))? + (var * (momentum * unbiased))?)?)
}

/// BatchNorm of `(M, C)` rows (channels-last activations flattened), followed by a ReLU when
/// `relu`. Training mode uses and updates batch statistics as `bn.forward_t(x, true)` does.
/// Falls back to candle's ops where the fused kernel does not apply (not CPU f32 rows).
pub fn batch_norm_rows(bn: &BatchNorm, x: &Tensor, relu: bool, train: bool) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 2) {
        let y = bn.forward_t(x, train)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    // Without affine (Barlow Twins' standardisation) γ = 1 and β = 0 are constants, not variables:
    // the gradients the kernel makes for them go nowhere.
    let c = x.dim(1)?;
    let (gamma, beta) = match bn.weight_and_bias() {
        Some((g, b)) => (g.clone(), b.clone()),
        None => (Tensor::ones(c, DType::F32, x.device())?, Tensor::zeros(c, DType::F32, x.device())?),
    };
    let x = x.contiguous()?;
    if !train {
        let inv_std = (bn.running_var() + bn.eps())?.sqrt()?.recip()?;
        let scale = (&gamma * inv_std)?;
        let shift = (&beta - (bn.running_mean() * &scale)?)?;
        let y = x.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    let m = x.dim(0)?;
    if m < 2 {
        candle_core::bail!("batch-norm in training needs at least 2 rows, got {m}");
    }
    let stats = x.apply_op1_no_bwd(&ChannelStats)?;
    update_running_statistics(bn, &stats.get(0)?, &stats.get(1)?, m)?;
    x.apply_op3(&gamma, &beta, BatchNormTrain { eps: bn.eps(), relu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::{VarBuilder, VarMap};

    use crate::cpu::max_rel;

    /// The statistics equal an f64 reference over one and many tasks, narrow and wide rows, with
    /// a mean 10⁴ times the standard deviation (where E[x²] − μ² would lose every digit).
    #[test]
    fn mean_and_variance_match_an_f64_reference() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for &(m, c, mu, sd) in &[(1, 3, 0.0, 1.0), (3000, 7, 1e3, 0.1), (70_000, 16, -5.0, 2.0), (50, 2048, 0.5, 1.0)] {
            let x: Vec<f32> = (0..m * c).map(|_| (mu + sd * rng.random_range(-1.7f64..1.7)) as f32).collect();
            let (mean, var) = mean_and_variance(&x, c);
            for ch in 0..c {
                let col: Vec<f64> = x.iter().skip(ch).step_by(c).map(|v| *v as f64).collect();
                let want_mean = col.iter().sum::<f64>() / m as f64;
                let want_var = col.iter().map(|v| (v - want_mean).powi(2)).sum::<f64>() / m as f64;
                assert!(
                    (mean[ch] - want_mean).abs() <= 1e-6 * want_mean.abs().max(sd),
                    "mean m{m} c{c}: {} vs {want_mean}",
                    mean[ch]
                );
                assert!(
                    (var[ch] - want_var).abs() <= 1e-4 * want_var.max(1e-12) + 1e-12,
                    "variance m{m} c{c}: {} vs {want_var}",
                    var[ch]
                );
            }
        }
    }

    /// Output, the gradients of x, γ and β, and the running statistics equal candle's
    /// `BatchNorm` followed by a ReLU, in training and in evaluation, over one and several row
    /// tasks, narrow and wide, with and without the affine parameters.
    #[test]
    fn fused_batch_norm_matches_candle() {
        let dev = Device::Cpu;
        for &(m, c, relu, affine) in &[
            (5, 3, false, true),
            (3000, 7, true, true),
            (2500, 16, false, true),
            (96, 2048, true, true),
            (20, 4096, false, true),
            (40, 33, false, false),
        ] {
            let make = || {
                let map = VarMap::new();
                let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
                let bn = crate::mlp::batch_norm_with(c, affine, vb).unwrap();
                if let Some((g, b)) = bn.weight_and_bias() {
                    Var::from_tensor(g).unwrap().set(&crate::cpu::test_randn(1f32, 0.5, c, &dev).unwrap()).unwrap();
                    Var::from_tensor(b).unwrap().set(&crate::cpu::test_randn(0f32, 0.5, c, &dev).unwrap()).unwrap();
                }
                (map, bn)
            };
            let (map_ref, bn_ref) = make();
            let (map_fused, bn_fused) = make();
            // Same γ, β in both.
            for (name, v) in map_ref.data().lock().unwrap().iter() {
                map_fused.data().lock().unwrap()[name].set(v.as_tensor()).unwrap();
            }
            let x =
                Var::from_tensor(&(crate::cpu::test_randn(0f32, 2.0, (m, c), &dev).unwrap() + 3.0).unwrap()).unwrap();
            let upstream = crate::cpu::test_randn(0f32, 1.0, (m, c), &dev).unwrap();
            let run = |bn: &BatchNorm, fused: bool| {
                let y = if fused {
                    batch_norm_rows(bn, x.as_tensor(), relu, true).unwrap()
                } else {
                    let y = bn.forward_t(x.as_tensor(), true).unwrap();
                    if relu {
                        y.relu().unwrap()
                    } else {
                        y
                    }
                };
                let grads = (&y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
                let pick = |t: &Tensor| grads.get(t).unwrap().clone();
                let (dg, db) = match bn.weight_and_bias() {
                    Some((g, b)) => (pick(g), pick(b)),
                    None => (Tensor::zeros(1, DType::F32, &dev).unwrap(), Tensor::zeros(1, DType::F32, &dev).unwrap()),
                };
                (y, pick(x.as_tensor()), dg, db)
            };
            let reference = run(&bn_ref, false);
            let fused = run(&bn_fused, true);
            let case = format!("m{m} c{c} relu {relu} affine {affine}");
            // Where a pre-activation sits within 1e-4 of the ReLU's kink the two summation orders
            // may fall on different sides; compare the input gradient elsewhere.
            let away_from_kink = |t: &Tensor| {
                let (yf, yr) = (&fused.0, &reference.0);
                let kink = (yf.abs().unwrap().lt(1e-4).unwrap().to_dtype(DType::F32).unwrap()
                    + yr.abs().unwrap().lt(1e-4).unwrap().to_dtype(DType::F32).unwrap())
                .unwrap()
                .gt(0.0)
                .unwrap();
                let keep = kink.to_dtype(DType::F32).unwrap().affine(-1.0, 1.0).unwrap();
                if relu {
                    (t * keep).unwrap()
                } else {
                    t.clone()
                }
            };
            let (dx_fused, dx_ref) = (away_from_kink(&fused.1), away_from_kink(&reference.1));
            for (what, a, b) in [
                ("output", &fused.0, &reference.0),
                ("dx", &dx_fused, &dx_ref),
                ("dγ", &fused.2, &reference.2),
                ("dβ", &fused.3, &reference.3),
                ("running mean", bn_fused.running_mean(), bn_ref.running_mean()),
                ("running var", bn_fused.running_var(), bn_ref.running_var()),
            ] {
                let e = max_rel(a, b);
                assert!(e < 1e-4, "{what} {case}: {e}");
            }
            let eval_fused = batch_norm_rows(&bn_fused, x.as_tensor(), relu, false).unwrap();
            let eval_ref = bn_ref.forward_t(x.as_tensor(), false).unwrap();
            let eval_ref = if relu { eval_ref.relu().unwrap() } else { eval_ref };
            assert!(max_rel(&eval_fused, &eval_ref) < 1e-5, "eval {case}");
        }
    }

    /// The BatchNorm's own ReLU recomputed from `x` cuts exactly where its stored output is
    /// zero: same `dx`, `dγ`, `dβ` bit for bit, over narrow and wide rows with many values at 0.
    #[test]
    fn own_relu_cut_equals_reading_the_output() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for &(m, c) in &[(3000, 16), (700, 64), (64, 37)] {
            let x: Vec<f32> = (0..m * c).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let dy: Vec<f32> = (0..m * c).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let gamma: Vec<f32> = (0..c).map(|_| rng.random_range(0.5f32..1.5)).collect();
            let beta: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5f32..0.5)).collect();
            let bn = RowAffine::of_batch(&x, &gamma, &beta, 1e-5);
            let y = bn.apply_new(&x, true);
            let cut = y.iter().filter(|v| **v == 0.0).count();
            assert!(cut > m * c / 5, "m{m} c{c}: only {cut} cut");
            let own = bn.backward_new(&gamma, &x, &dy, ReluCut::Own);
            let read = bn.backward_new(&gamma, &x, &dy, ReluCut::Where(&y));
            let none = bn.backward_new(&gamma, &x, &dy, ReluCut::None);
            assert_eq!(own, read, "m{m} c{c}");
            assert_ne!(own.0, none.0, "m{m} c{c}: the cut changed nothing");
        }
    }
}
