//! Deterministic parameter initialisation.
//!
//! candle's CPU random generator cannot be seeded, so a `VarMap` would initialise every run
//! differently. [`SeededVarMap`] is a `VarBuilder` backend that creates each variable from a
//! ChaCha stream chosen by (seed, the variable's full path): the same seed gives the same
//! weights whatever the construction order, and adding a module does not shift the others.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A `VarMap` whose new variables are drawn from per-name seeded streams.
#[derive(Clone)]
pub struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(seed: u64) -> Self {
        Self { map: VarMap::new(), seed }
    }

    /// The underlying map (for saving, loading and listing variables).
    pub fn var_map(&self) -> &VarMap {
        &self.map
    }

    /// A `VarBuilder` over this map.
    pub fn builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Every variable with its full path, sorted by path (a stable order for optimisers).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.map.data().lock().expect("var map lock poisoned");
        let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Draw the initial values of one variable from `init`.
pub fn draw(init: &Init, shape: &Shape, rng: &mut impl Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform =
        |rng: &mut _, lo: f64, up: f64| -> Vec<f32> { (0..n).map(|_| Rng::random_range(rng, lo..up) as f32).collect() };
    let normal = |rng: &mut _, mean: f64, std: f64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                (mean + std * z) as f32
            })
            .collect()
    };
    match *init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming { dist, fan, non_linearity } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(rng, 0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().expect("var map lock poisoned");
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("variable {name}: shape {:?} requested, {:?} stored", s, v.shape());
            }
            return v.as_tensor().to_dtype(dtype);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(fnv1a(name));
        let values = draw(&h, &s, &mut rng);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        data.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.map.data().lock().expect("var map lock poisoned");
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("variable {name} does not exist"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().expect("var map lock poisoned").contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_independent_of_order() {
        let dev = Device::Cpu;
        let init = Init::Randn { mean: 0.0, stdev: 1.0 };
        let a = SeededVarMap::new(5);
        let vb = a.builder(DType::F32, &dev);
        let a1 = vb.get_with_hints((3, 4), "x.weight", init).unwrap();
        let a2 = vb.get_with_hints(7, "y.bias", init).unwrap();
        let b = SeededVarMap::new(5);
        let vb = b.builder(DType::F32, &dev);
        let b2 = vb.get_with_hints(7, "y.bias", init).unwrap();
        let b1 = vb.get_with_hints((3, 4), "x.weight", init).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a1), v(&b1));
        assert_eq!(v(&a2), v(&b2));
        let c = SeededVarMap::new(6).builder(DType::F32, &dev);
        assert_ne!(v(&a1), v(&c.get_with_hints((3, 4), "x.weight", init).unwrap()));
        // A second request for an existing name returns the same variable.
        assert_eq!(a.named_vars().len(), 2);
    }

    #[test]
    fn kaiming_normal_has_the_right_spread() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let shape = Shape::from((64, 32, 3, 3));
        let init = Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: candle_nn::init::FanInOut::FanOut,
            non_linearity: candle_nn::init::NonLinearity::ReLU,
        };
        let v = draw(&init, &shape, &mut rng);
        let var = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let expected = 2.0 / (64.0 * 9.0);
        assert!((var / expected - 1.0).abs() < 0.05, "{var} vs {expected}");
    }
}
