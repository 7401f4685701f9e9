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
            crate::npy::write(g, &path)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Read one view: a 2-D float32 or float64 array.
/// The shape and item size a `.npy` header declares, checked against the file's length before
/// anything is allocated: a header may claim any size.
fn npy_header(path: &Path) -> Result<(Vec<usize>, usize)> {
    let bad = |what: String| Error::File { path: path.to_path_buf(), what };
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize, 12),
        v => return Err(bad(format!(".npy format version {v} is not one of 1, 2, 3"))),
    };
    let header = bytes.get(start..start + len).ok_or_else(|| bad("the .npy header is cut short".into()))?;
    let header = String::from_utf8_lossy(header);
    let field = |key: &str| -> Option<String> {
        let rest = &header[header.find(&format!("'{key}'"))? + key.len() + 2..];
        Some(rest.trim_start().strip_prefix(':')?.trim_start().to_string())
    };
    let shape_text = field("shape").and_then(|s| Some(s.strip_prefix('(')?.split(')').next()?.to_string()));
    let shape: Vec<usize> = shape_text
        .ok_or_else(|| bad("the .npy header has no shape".into()))?
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| bad(format!("the .npy shape holds `{d}`, not a size"))))
        .collect::<Result<_>>()?;
    let descr = field("descr").unwrap_or_default();
    let item = descr.trim_start_matches('\'').chars().skip(2).take_while(char::is_ascii_digit).collect::<String>();
    let item: usize = item.parse().unwrap_or(8);
    let data = bytes.len() - start - len;
    let claimed = shape.iter().try_fold(item, |acc, d| acc.checked_mul(*d));
    match claimed {
        Some(c) if c <= data => Ok((shape, item)),
        Some(c) => Err(bad(format!("the header claims shape {shape:?} ({c} bytes of data), the file holds {data}"))),
        None => Err(bad(format!("the header claims shape {shape:?}, more bytes than can be addressed"))),
    }
}

fn read_view(path: &Path) -> Result<Tensor> {
    npy_header(path)?;
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
    let t = t.to_dtype(DType::F64)?;
    let cols = t.dims()[1];
    if let Some(at) = t.flatten_all()?.to_vec1::<f64>()?.iter().position(|v| !v.is_finite()) {
        return Err(Error::File {
            path: path.to_path_buf(),
            what: format!("row {}, column {} is not a finite number", at / cols.max(1), at % cols.max(1)),
        });
    }
    Ok(t)
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
    let terms: BTreeMap<String, f64> =
        terms.iter().map(|(name, t)| Ok((name.to_string(), scalar(t)?))).collect::<Result<_>>()?;
    let value = scalar(&loss)?;
    if !value.is_finite() {
        // The views are finite (checked when read): a parameter made the loss so.
        let given: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let terms: Vec<String> = terms.iter().map(|(k, v)| format!("{k} {v}")).collect();
        return Err(Error::Override {
            arg: if given.is_empty() { "(none: the defaults)".into() } else { given.join(" ") },
            what: format!(
                "the {method} loss on finite views is {value} (terms: {}); a parameter is out of its range",
                terms.join(", ")
            ),
        });
    }
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

    /// A header claiming more than the file holds, a non-finite input and a parameter that
    /// makes the loss non-finite are errors that say which, never an abort or a printed NaN.
    #[test]
    fn hostile_sizes_non_finite_views_and_non_finite_losses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.npy", &[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]]);
        let b = write(dir.path(), "b.npy", &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        // A file of 9 floats whose header claims the shape (10^11, 10^11).
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 100000000000), }\n";
        let mut forged = b"\x93NUMPY\x01\x00".to_vec();
        forged.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        forged.extend_from_slice(dict.as_bytes());
        forged.extend_from_slice(&[0u8; 36]);
        let huge = dir.path().join("huge.npy");
        std::fs::write(&huge, &forged).unwrap();
        let err = loss_on_files(Method::Vicreg, &[huge, b.clone()], &[]).unwrap_err().to_string();
        assert!(err.contains("huge.npy") && err.contains("the header claims shape"), "{err}");

        let nan = write(dir.path(), "nan.npy", &[[1.0, 2.0, 0.0], [0.0, f32::NAN, 3.0], [2.0, 0.0, 1.0]]);
        let err = loss_on_files(Method::Vicreg, &[nan, b.clone()], &[]).unwrap_err().to_string();
        assert!(err.contains("nan.npy") && err.contains("row 1, column 1 is not a finite number"), "{err}");

        let err = loss_on_files(Method::Simclr, &[a, b], &[("tau".into(), "0".into())]).unwrap_err().to_string();
        assert!(err.contains("tau=0") && err.contains("a parameter is out of its range"), "{err}");
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
