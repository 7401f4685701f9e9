//! `infomax loss`: a method's loss and its gradient on embeddings read from `.npy` files, so
//! anyone can check infomax against another framework on their own numbers. Computed in f64.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use infomax_losses::{VicregWeights, WmseConfig};
use rand::SeedableRng;

use crate::spec::Method;
use crate::{Error, Result};

/// The loss, its named terms and ∂loss/∂view for each view (float32, the views' shapes).
#[derive(Debug)]
pub struct Inspection {
    pub method: Method,
    pub loss: f64,
    pub terms: BTreeMap<String, f64>,
    pub gradients: Vec<Tensor>,
}

impl Inspection {
    /// `{"method": …, "loss": …, "terms": {…}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "method": self.method.name(), "loss": self.loss, "terms": self.terms })
    }

    /// Write `grad_0.npy`, `grad_1.npy`, … into `dir` (created if needed).
    pub fn write_gradients(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let mut written = Vec::new();
        for (i, g) in self.gradients.iter().enumerate() {
            let path = dir.join(format!("grad_{i}.npy"));
            // Written beside the final name and renamed, so a reader never sees half a file.
            let partial = dir.join(format!(".grad_{i}.npy.partial"));
            g.write_npy(&partial).map_err(|e| Error::File { path: partial.clone(), what: e.to_string() })?;
            std::fs::rename(&partial, &path).map_err(|source| Error::Io { path: path.clone(), source })?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The keys each method takes, with their defaults (w-mse's `w_size` defaults to N).
pub fn keys(method: Method) -> &'static [(&'static str, f64)] {
    match method {
        Method::BarlowTwins => &[("lambda", infomax_losses::barlow_twins::DEFAULT_LAMBDA)],
        Method::Vicreg => {
            &[("sim_coeff", 25.0), ("std_coeff", 25.0), ("cov_coeff", 1.0), ("gamma", 1.0), ("eps", 1e-4)]
        }
        Method::WMse => &[("w_size", 0.0), ("w_iter", 1.0), ("eps", 0.0), ("seed", 0.0), ("permute", 1.0)],
        Method::Simclr => &[("tau", infomax_losses::simclr::DEFAULT_TAU)],
        Method::Byol | Method::Simsiam => &[],
    }
}

/// Read one view: a 2-D float32 or float64 array.
fn read_view(path: &Path) -> Result<Tensor> {
    let t = Tensor::read_npy(path).map_err(|e| Error::File { path: path.to_path_buf(), what: e.to_string() })?;
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return Err(Error::File {
            path: path.to_path_buf(),
            what: format!("float32 or float64 expected, got {:?}", t.dtype()),
        });
    }
    if t.rank() != 2 {
        return Err(Error::File {
            path: path.to_path_buf(),
            what: format!("an (N, D) array expected, got shape {:?}", t.dims()),
        });
    }
    Ok(t.to_dtype(DType::F64)?)
}

fn settings(method: Method, set: &[(String, String)]) -> Result<BTreeMap<&'static str, f64>> {
    let known = keys(method);
    let mut values: BTreeMap<&'static str, f64> = known.iter().copied().collect();
    for (key, raw) in set {
        let Some((name, _)) = known.iter().find(|(k, _)| k == key) else {
            let valid = if known.is_empty() {
                "none".to_string()
            } else {
                known.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            };
            return Err(Error::Override {
                arg: format!("{key}={raw}"),
                what: format!("unknown key for {}; valid keys: {valid}", method.name()),
            });
        };
        let value: f64 = raw.trim().parse().map_err(|_| Error::Override {
            arg: format!("{key}={raw}"),
            what: format!("a number expected, got `{raw}`"),
        })?;
        if !value.is_finite() {
            return Err(Error::Override { arg: format!("{key}={raw}"), what: "a finite number expected".into() });
        }
        values.insert(name, value);
    }
    Ok(values)
}

fn whole(key: &str, value: f64) -> Result<usize> {
    if value < 0.0 || value.fract() != 0.0 {
        return Err(Error::Override { arg: format!("{key}={value}"), what: "a whole number ≥ 0 expected".into() });
    }
    Ok(value as usize)
}

/// Evaluate `method`'s loss on the views in `paths` with `set` overriding its keys.
pub fn inspect(method: Method, paths: &[PathBuf], set: &[(String, String)]) -> Result<Inspection> {
    let values = settings(method, set)?;
    if paths.len() < 2 {
        return Err(Error::File {
            path: paths.first().cloned().unwrap_or_default(),
            what: format!("at least 2 views expected, got {}", paths.len()),
        });
    }
    let views = paths.iter().map(|p| read_view(p)).collect::<Result<Vec<_>>>()?;
    for (p, v) in paths.iter().zip(&views).skip(1) {
        if v.dims() != views[0].dims() {
            return Err(Error::File {
                path: p.clone(),
                what: format!("shape {:?} differs from {} ({:?})", v.dims(), paths[0].display(), views[0].dims()),
            });
        }
    }
    let (n, _) = views[0].dims2()?;
    if n < 2 {
        return Err(Error::File {
            path: paths[0].clone(), what: format!("at least 2 rows (N ≥ 2) expected, got {n}")
        });
    }
    let vars = views.iter().map(Var::from_tensor).collect::<candle_core::Result<Vec<_>>>()?;
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let mut terms = BTreeMap::new();
    let loss = match method {
        Method::BarlowTwins => {
            two_views(method, paths)?;
            let t = infomax_losses::barlow_twins(&inputs[0], &inputs[1], values["lambda"])?;
            terms.insert("on_diagonal".to_string(), scalar(&t.on_diagonal)?);
            terms.insert("off_diagonal".to_string(), scalar(&t.off_diagonal)?);
            t.loss
        }
        Method::Vicreg => {
            two_views(method, paths)?;
            let w = VicregWeights {
                sim_coeff: values["sim_coeff"],
                std_coeff: values["std_coeff"],
                cov_coeff: values["cov_coeff"],
                gamma: values["gamma"],
                eps: values["eps"],
            };
            let t = infomax_losses::vicreg(&inputs[0], &inputs[1], &w)?;
            terms.insert("invariance".to_string(), scalar(&t.invariance)?);
            terms.insert("variance".to_string(), scalar(&t.variance)?);
            terms.insert("covariance".to_string(), scalar(&t.covariance)?);
            t.loss
        }
        Method::WMse => {
            let w_size = match whole("w_size", values["w_size"])? {
                0 => n,
                w => w,
            };
            let cfg = WmseConfig { w_size, w_iter: whole("w_iter", values["w_iter"])?, eps: values["eps"] };
            // permute = 1: random sub-batches as in training, drawn from `seed`; permute = 0:
            // consecutive rows (the first w_size rows are the first sub-batch), so that another
            // framework can reproduce the grouping.
            let permute = match whole("permute", values["permute"])? {
                0 => false,
                1 => true,
                _ => return Err(Error::Override { arg: "permute".into(), what: "0 or 1 expected".into() }),
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(whole("seed", values["seed"])? as u64);
            let permutations = crate::method::wmse::sub_batch_permutations(n, cfg.w_iter, permute.then_some(&mut rng));
            infomax_losses::wmse(&inputs, &cfg, &permutations)?
        }
        Method::Simclr => infomax_losses::simclr(&inputs, values["tau"])?,
        Method::Byol | Method::Simsiam => {
            // [online prediction, target projection], or k predictions then k targets.
            if !inputs.len().is_multiple_of(2) {
                return Err(Error::File {
                    path: paths[paths.len() - 1].clone(),
                    what: format!(
                        "{} takes [predictions…, targets…]: an even number of views expected, got {}",
                        method.name(),
                        inputs.len()
                    ),
                });
            }
            let (p, z) = inputs.split_at(inputs.len() / 2);
            match (method, p.len()) {
                (Method::Byol, 1) => infomax_losses::distance::normalised_mse(&p[0], &z[0].detach())?,
                (Method::Byol, _) => infomax_losses::byol(p, z)?,
                (_, 1) => infomax_losses::distance::cosine_rows(&p[0], &z[0].detach())?.mean_all()?.neg()?,
                _ => infomax_losses::simsiam(p, z)?,
            }
        }
    };
    let value = scalar(&loss)?;
    let grads = loss.backward()?;
    let gradients = vars
        .iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => g.to_dtype(DType::F32),
            None => Tensor::zeros(v.dims(), DType::F32, &Device::Cpu),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Inspection { method, loss: value, terms, gradients })
}

fn two_views(method: Method, paths: &[PathBuf]) -> Result<()> {
    if paths.len() != 2 {
        return Err(Error::File {
            path: paths[2].clone(),
            what: format!("{} compares exactly 2 views, got {}", method.name(), paths.len()),
        });
    }
    Ok(())
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, rows: &[[f32; 3]]) -> PathBuf {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let path = dir.join(name);
        Tensor::from_vec(flat, (rows.len(), 3), &Device::Cpu).unwrap().write_npy(&path).unwrap();
        path
    }

    #[test]
    fn unknown_keys_list_the_valid_ones_and_bad_shapes_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.npy", &[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]]);
        let b = write(dir.path(), "b.npy", &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let err = inspect(Method::Vicreg, &[a.clone(), b.clone()], &[("lamda".into(), "1".into())]).unwrap_err();
        assert!(err.to_string().contains("sim_coeff, std_coeff, cov_coeff"), "{err}");
        let short = write(dir.path(), "short.npy", &[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]);
        let err = inspect(Method::Simclr, &[a.clone(), short], &[]).unwrap_err().to_string();
        assert!(err.contains("short.npy") && err.contains("differs"), "{err}");
        let one = write(dir.path(), "one.npy", &[[1.0, 2.0, 0.0]]);
        assert!(inspect(Method::Simclr, &[one.clone(), one], &[]).unwrap_err().to_string().contains("N ≥ 2"));
        let err = inspect(Method::WMse, &[a.clone(), b.clone()], &[("w_size".into(), "2".into())]).unwrap_err();
        assert!(err.to_string().contains("divide"), "{err}");
        let missing = dir.path().join("missing.npy");
        assert!(inspect(Method::Simclr, &[a, missing], &[]).unwrap_err().to_string().contains("missing.npy"));
    }

    #[test]
    fn byol_target_gets_a_zero_gradient_and_gradients_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "p.npy", &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        let z = write(dir.path(), "z.npy", &[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]);
        let r = inspect(Method::Byol, &[p, z], &[]).unwrap();
        // Row 0 aligned (0), row 1 orthogonal (2): mean 1.
        assert!((r.loss - 1.0).abs() < 1e-12);
        let out = r.write_gradients(&dir.path().join("grads")).unwrap();
        let g1 = Tensor::read_npy(&out[1]).unwrap();
        assert_eq!(g1.dtype(), DType::F32);
        assert!(g1.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|&x| x == 0.0));
        let g0 = Tensor::read_npy(&out[0]).unwrap().to_vec2::<f32>().unwrap();
        // ∂(1 − cos)/∂p for row 1 (p ⟂ z): −z/‖p‖‖z‖ = (−1, 0, 0), times 2/N = 1.
        assert!((g0[1][0] + 1.0).abs() < 1e-6 && g0[0].iter().all(|x| x.abs() < 1e-6), "{g0:?}");
    }
}
