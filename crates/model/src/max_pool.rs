//! ResNet's stem max-pool (3×3 window, stride 2, padding 1; padding never wins), with a backward.
//!
//! candle 0.11's `max_pool2d` has no backward when the window is larger than the stride, which
//! is exactly ResNet's case: the W-MSE code keeps this max-pool on STL-10 and Tiny-ImageNet. The
//! gradient of each output goes to the first input of its window holding the maximum.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::f32_slice;

const K: usize = 3;
const STRIDE: usize = 2;
const PAD: usize = 1;

fn out_len(n: usize) -> usize {
    (n + 2 * PAD - K) / STRIDE + 1
}

/// For output (oy, ox) of one `h × w` plane, the offset of the first maximal input.
fn argmax(plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> usize {
    let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
    for ky in 0..K {
        let y = (oy * STRIDE + ky) as isize - PAD as isize;
        if y < 0 || y >= h as isize {
            continue;
        }
        for kx in 0..K {
            let x = (ox * STRIDE + kx) as isize - PAD as isize;
            if x < 0 || x >= w as isize {
                continue;
            }
            let i = y as usize * w + x as usize;
            if at == usize::MAX || plane[i] > best {
                (best, at) = (plane[i], i);
            }
        }
    }
    at
}

struct MaxPoolForward;
struct MaxPoolBackward;

impl CustomOp1 for MaxPoolForward {
    fn name(&self) -> &'static str {
        "max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice("max_pool_3x3_s2", s, l, "input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = (out_len(h), out_len(w));
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    yp[oy * ow + ox] = xp[argmax(xp, h, w, oy, ox)];
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolBackward)?))
    }
}

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max-pool-3x3-s2-backward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ds: &CpuStorage, dl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) =
            (f32_slice("max_pool_3x3_s2", xs, xl, "input")?, f32_slice("max_pool_3x3_s2", ds, dl, "output gradient")?);
        let (n, c, h, w) = xl.shape().dims4()?;
        let (oh, ow) = (out_len(h), out_len(w));
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).zip(dy.par_chunks(oh * ow)).for_each(|((dxp, xp), dyp)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    dxp[argmax(xp, h, w, oy, ox)] += dyp[oy * ow + ox];
                }
            }
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// ResNet's stem max-pool: 3×3 window, stride 2, padding 1, with a gradient. On the CPU (f32) a
/// kernel of its own; elsewhere (a GPU), the maximum of the nine strided shifts of the
/// edge-padded input, from differentiable candle ops — candle's `max_pool2d` has no gradient when
/// the window differs from the stride. Edge padding never changes a window's maximum: the
/// repeated value is in the window already.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(MaxPoolForward)
    } else {
        max_pool_by_shifts(x)
    }
}

fn max_pool_by_shifts(x: &Tensor) -> Result<Tensor> {
    use candle_core::D;
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = ((h + 2 - K) / STRIDE + 1, (w + 2 - K) / STRIDE + 1);
    // One before, and after enough that each of the three shifts has room for `out` strided picks.
    let padded = x.pad_with_same(D::Minus1, 1, (2 * wo + 1).saturating_sub(w))?;
    let padded = padded.pad_with_same(D::Minus2, 1, (2 * ho + 1).saturating_sub(h))?;
    let mut out: Option<Tensor> = None;
    for dy in 0..K {
        let rows = padded.narrow(2, dy, 2 * ho)?.reshape((n, c, ho, 2, padded.dim(3)?))?.narrow(3, 0, 1)?.squeeze(3)?;
        for dx in 0..K {
            let shift = rows.narrow(3, dx, 2 * wo)?.reshape((n, c, ho, wo, 2))?.narrow(4, 0, 1)?.squeeze(4)?;
            out = Some(match out {
                None => shift,
                Some(m) => m.maximum(&shift)?,
            });
        }
    }
    Ok(out.expect("a 3×3 window has nine shifts"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    #[test]
    fn forward_matches_candle_and_the_gradient_matches_finite_differences() {
        use rand::{Rng, SeedableRng};
        let dev = Device::Cpu;
        // Distinct inputs 0.05 apart in a seeded shuffle: a finite-difference step of 0.01 never
        // crosses a tie inside a window (with random draws it now and then did, and the test
        // failed by chance).
        use rand::seq::SliceRandom;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut values: Vec<f32> = (0..2 * 3 * 7 * 8).map(|i| i as f32 * 0.05 - 8.0).collect();
        values.shuffle(&mut rng);
        let x = Var::from_tensor(&Tensor::from_vec(values, (2, 3, 7, 8), &dev).unwrap()).unwrap();
        let mut draw = |shape: &[usize]| {
            let n = shape.iter().product();
            Tensor::from_vec((0..n).map(|_| rng.random_range(-1f32..1.0)).collect::<Vec<_>>(), shape, &dev).unwrap()
        };
        let y = max_pool_3x3_s2(x.as_tensor()).unwrap();
        assert_eq!(y.dims(), &[2, 3, 4, 4]);
        // Replicating the edge never changes a maximum, so candle's forward on the padded input is a reference.
        let reference = x
            .as_tensor()
            .pad_with_same(D::Minus1, 1, 1)
            .unwrap()
            .pad_with_same(D::Minus2, 1, 1)
            .unwrap()
            .max_pool2d_with_stride(3, 2)
            .unwrap();
        let diff = (&y - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
        let upstream = draw(y.dims());
        let loss = |t: &Tensor| (max_pool_3x3_s2(t).unwrap() * &upstream).unwrap().sum_all().unwrap();
        let grad = loss(x.as_tensor()).backward().unwrap().get(x.as_tensor()).unwrap().clone();
        let g: Vec<f32> = grad.flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f32> = x.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for i in [0, 5, 17, 60, 111, 200, 335] {
            let eps = 1e-2f32;
            let at = |d: f32| {
                let mut v = base.clone();
                v[i] += d;
                loss(&Tensor::from_vec(v, x.shape(), &dev).unwrap()).to_scalar::<f32>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!((fd - g[i]).abs() < 1e-3, "input {i}: finite difference {fd}, gradient {}", g[i]);
        }
        // Each output sends its gradient to exactly one input.
        let total: f32 = g.iter().sum();
        let up: f32 = upstream.sum_all().unwrap().to_scalar().unwrap();
        assert!((total - up).abs() < 1e-4);
    }

    /// The off-CPU path (nine strided shifts of candle ops) equals the CPU kernel in value and
    /// gradient, on odd and even sizes; it runs here on the CPU, as it would on a GPU.
    #[test]
    fn the_shift_composition_equals_the_kernel() {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (h, w) in [(8, 8), (7, 9), (5, 6)] {
            let n = 2 * 3 * h * w;
            let mut values: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            values.shuffle(&mut rng);
            let x = Var::from_tensor(&Tensor::from_vec(values, (2, 3, h, w), &dev).unwrap()).unwrap();
            let kernel = max_pool_3x3_s2(x.as_tensor()).unwrap();
            let shifts = max_pool_by_shifts(x.as_tensor()).unwrap();
            assert_eq!(kernel.dims(), shifts.dims());
            let diff = (&kernel - &shifts).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(diff, 0.0, "{h}×{w}");
            let upstream = crate::cpu::test_randn(0f32, 1.0, kernel.dims(), &dev).unwrap();
            let grad = |y: Tensor| (y * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
            let (gk, gs) = (grad(kernel), grad(shifts));
            let (gk, gs) = (gk.get(x.as_tensor()).unwrap(), gs.get(x.as_tensor()).unwrap());
            let diff = (gk - gs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-6, "{h}×{w}: gradients differ by {diff}");
        }
    }
}
