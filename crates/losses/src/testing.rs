//! Shared test helpers: small matrices and a finite-difference gradient check.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

pub fn mat(rows: &[&[f64]]) -> Tensor {
    let n = rows.len();
    let d = rows[0].len();
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (n, d), &Device::Cpu).unwrap()
}

pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Random `(n, d)` f64 views.
pub fn random_views(n: usize, d: usize, views: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..views).map(|_| (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect()).collect()
}

/// Autograd gradients of `loss(views)` at the given `(n, d)` views, zeros where none flows.
pub fn autograd_gradients(n: usize, d: usize, x0: &[Vec<f64>], loss: impl Fn(&[Tensor]) -> Tensor) -> Vec<Vec<f64>> {
    let dev = Device::Cpu;
    let vars: Vec<Var> = x0.iter().map(|x| Var::from_slice(x, (n, d), &dev).unwrap()).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = loss(&tensors).backward().unwrap();
    vars.iter()
        .map(|var| match grads.get(var) {
            Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
            None => vec![0.0; n * d],
        })
        .collect()
}

/// The autograd gradient of `loss(views)` with respect to every view equals central finite
/// differences in f64, entry by entry.
pub fn assert_gradients_match(n: usize, d: usize, views: usize, loss: impl Fn(&[Tensor]) -> Tensor) {
    let dev = Device::Cpu;
    let x0 = random_views(n, d, views, 7 + views as u64);
    let value = |xs: &[Vec<f64>]| -> f64 {
        let ts: Vec<Tensor> = xs.iter().map(|x| Tensor::from_slice(x, (n, d), &dev).unwrap()).collect();
        scalar(&loss(&ts))
    };
    let grads = autograd_gradients(n, d, &x0, &loss);
    let h = 1e-6;
    for (v, g) in grads.iter().enumerate() {
        for i in 0..n * d {
            let mut p = x0.clone();
            let mut m = x0.clone();
            p[v][i] += h;
            m[v][i] -= h;
            let fd = (value(&p) - value(&m)) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "d view {v} [{i}]: finite difference {fd}, autograd {}",
                g[i]
            );
        }
    }
}
