//! `infomax loss`: a method's loss and its gradient on embeddings read from `.npy` files, so
//! anyone can check infomax against another framework on their own numbers. Computed in f64.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::method::{LossValue, Method};
use crate::{Error, Result};

/// The loss, its named terms and ∂loss/∂view for each view (float32, the views' shapes).
#[derive(Debug)]
pub struct LossOnFiles {
    pub method: Method,
    pub loss: f64,
    pub terms: BTreeMap<String, f64>,
    pub gradients: Vec<Tensor>,
}

impl LossOnFiles {
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

/// A method's `--set` keys and their defaults, in the order of its settings struct.
pub(crate) fn settings_table<T: Serialize>(defaults: &T) -> Vec<(String, toml::Value)> {
    match toml::Value::try_from(defaults) {
        Ok(toml::Value::Table(t)) => t.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Each `set` (key, value) against the method's keys, its value read as a number.
fn read_settings(method: Method, set: &[(String, String)]) -> Result<toml::Table> {
    let mut table: toml::Table = method.loss_keys().into_iter().collect();
    for (key, raw) in set {
        let arg = || format!("{key}={raw}");
        if !table.contains_key(key) {
            let valid: Vec<&str> = table.keys().map(String::as_str).collect();
            let valid = if valid.is_empty() { "none".to_string() } else { valid.join(", ") };
            return Err(Error::Override { arg: arg(), what: format!("unknown key for {method}; valid keys: {valid}") });
        }
        let raw = raw.trim();
        let value = match (raw.parse::<i64>(), raw.parse::<f64>()) {
            (Ok(i), _) => toml::Value::Integer(i),
            (_, Ok(f)) if f.is_finite() => toml::Value::Float(f),
            (_, Ok(_)) => return Err(Error::Override { arg: arg(), what: "a finite number expected".into() }),
            _ => return Err(Error::Override { arg: arg(), what: format!("a number expected, got `{raw}`") }),
        };
        table.insert(key.clone(), value);
    }
    Ok(table)
}

/// `set` (key, value) over the method's default settings.
pub(crate) fn parse_settings<T: DeserializeOwned>(method: Method, set: &[(String, String)]) -> Result<T> {
    serde_path_to_error::deserialize(toml::Value::Table(read_settings(method, set)?)).map_err(|e| {
        let key = e.path().to_string();
        let raw = set.iter().rev().find(|(k, _)| *k == key).map_or(String::new(), |(_, v)| v.clone());
        Error::Override { arg: format!("{key}={raw}"), what: e.inner().to_string() }
    })
}

/// Evaluate `method`'s loss on the views in `paths` with `set` overriding its keys.
pub fn loss_on_files(method: Method, paths: &[PathBuf], set: &[(String, String)]) -> Result<LossOnFiles> {
    read_settings(method, set)?; // bad keys fail before any file is read
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
    if method.two_views() && paths.len() != 2 {
        return Err(Error::File {
            path: paths[2].clone(),
            what: format!("{method} compares exactly 2 views, got {}", paths.len()),
        });
    }
    let vars = views.iter().map(Var::from_tensor).collect::<candle_core::Result<Vec<_>>>()?;
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let LossValue { loss, terms } = method.loss(&inputs, set)?;
    let terms = terms.iter().map(|(name, t)| Ok((name.to_string(), scalar(t)?))).collect::<Result<_>>()?;
    let value = scalar(&loss)?;
    let grads = loss.backward()?;
    let gradients = vars
        .iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => g.to_dtype(DType::F32),
            None => Tensor::zeros(v.dims(), DType::F32, &Device::Cpu),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(LossOnFiles { method, loss: value, terms, gradients })
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
        let err = loss_on_files(Method::Vicreg, &[a.clone(), b.clone()], &[("lamda".into(), "1".into())]).unwrap_err();
        assert!(err.to_string().contains("sim_coeff, std_coeff, cov_coeff"), "{err}");
        let short = write(dir.path(), "short.npy", &[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]);
        let err = loss_on_files(Method::Simclr, &[a.clone(), short], &[]).unwrap_err().to_string();
        assert!(err.contains("short.npy") && err.contains("differs"), "{err}");
        let one = write(dir.path(), "one.npy", &[[1.0, 2.0, 0.0]]);
        assert!(loss_on_files(Method::Simclr, &[one.clone(), one], &[]).unwrap_err().to_string().contains("N ≥ 2"));
        let err = loss_on_files(Method::WMse, &[a.clone(), b.clone()], &[("w_size".into(), "2".into())]).unwrap_err();
        assert!(err.to_string().contains("divide"), "{err}");
        let missing = dir.path().join("missing.npy");
        assert!(loss_on_files(Method::Simclr, &[a, missing], &[]).unwrap_err().to_string().contains("missing.npy"));
    }

    #[test]
    fn byol_target_gets_a_zero_gradient_and_gradients_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "p.npy", &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        let z = write(dir.path(), "z.npy", &[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]);
        let r = loss_on_files(Method::Byol, &[p, z], &[]).unwrap();
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
