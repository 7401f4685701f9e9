//! Experiment files (TOML in `experiments/`) and their resolution into [`RunSpec`]s.
//!
//! ```toml
//! [experiment]            # name, title, paper, reproduces
//! [base]                  # the run: method, dataset, seed, encoder, projector, optimizer, …
//! [profiles.smoke]        # overrides merged over [base]; `about` says what the profile costs
//! ```
//! Resolution: built-in defaults for the method and dataset ← `[base]` ← `[profiles.P]` ←
//! `--set key=value`, then a strict deserialisation (unknown keys are errors naming the field).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::spec::{Dataset, Method, RunSpec};
use crate::{Error, Result};
use infomax_data::augment::Preset;

/// `[experiment]`: what the file reproduces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentMeta {
    pub name: String,
    pub title: String,
    /// The paper the experiment follows.
    pub paper: String,
    /// Which table or figure, or what the experiment checks.
    pub reproduces: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    experiment: ExperimentMeta,
    base: Table,
    #[serde(default)]
    profiles: BTreeMap<String, Table>,
}

/// A profile: overrides, and a sentence on what it costs and what it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub about: String,
    pub overrides: Table,
}

/// A parsed experiment file.
#[derive(Debug, Clone)]
pub struct ExperimentFile {
    pub path: PathBuf,
    pub meta: ExperimentMeta,
    base: Table,
    pub profiles: BTreeMap<String, Profile>,
}

/// One `--set key.path=value` override; the value is TOML (bare words are strings).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: Vec<String>,
    pub value: Value,
    pub raw: String,
}

impl std::str::FromStr for Override {
    type Err = Error;

    fn from_str(arg: &str) -> Result<Self> {
        let bad = |what: &str| Error::Override { arg: arg.to_string(), what: what.to_string() };
        let (key, value) = arg.split_once('=').ok_or_else(|| bad("expected KEY=VALUE, e.g. train.epochs=2"))?;
        let key: Vec<String> = key.trim().split('.').map(|s| s.trim().to_string()).collect();
        if key.iter().any(String::is_empty) {
            return Err(bad("the key has an empty part; expected a dotted path such as optimizer.lr"));
        }
        let value = value.trim();
        let value = match toml::from_str::<Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").expect("parsed table has v"),
            Err(_) => Value::String(value.to_string()),
        };
        Ok(Override { key, value, raw: arg.to_string() })
    }
}

/// Find an experiment by name (`experiments/NAME.toml`) or path.
pub fn locate(name_or_path: &str, experiments_dir: &Path) -> Result<PathBuf> {
    let as_path = PathBuf::from(name_or_path);
    if as_path.extension().is_some() || name_or_path.contains('/') {
        if as_path.is_file() {
            return Ok(as_path);
        }
        return Err(Error::Experiment { path: as_path, what: "no such experiment file".into() });
    }
    let candidate = experiments_dir.join(format!("{name_or_path}.toml"));
    if candidate.is_file() {
        return Ok(candidate);
    }
    let mut known: Vec<String> = std::fs::read_dir(experiments_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    Err(Error::Experiment {
        path: candidate,
        what: format!(
            "no experiment named `{name_or_path}`; known in {}: {}",
            experiments_dir.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ),
    })
}

/// Merge `over` into `base`, table by table; any other value replaces.
pub fn deep_merge(base: &mut Table, over: &Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn set_path(table: &mut Table, key: &[String], value: Value) -> std::result::Result<(), String> {
    let (last, parents) = key.split_last().expect("keys are non-empty");
    let mut t = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = t.entry(part.clone()).or_insert_with(|| Value::Table(Table::new()));
        t = match entry {
            Value::Table(inner) => inner,
            _ => return Err(format!("`{}` is a value, not a table", parents[..=i].join("."))),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}

impl ExperimentFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| Error::Experiment { path: path.to_path_buf(), what: e.to_string().trim_end().to_string() })?;
        let mut profiles = BTreeMap::new();
        for (name, mut table) in raw.profiles {
            let about = match table.remove("about") {
                Some(Value::String(s)) => s,
                Some(other) => {
                    return Err(Error::Field {
                        path: path.to_path_buf(),
                        field: format!("profiles.{name}.about"),
                        what: format!("a string expected, got {}", other.type_str()),
                    })
                }
                None => {
                    return Err(Error::Field {
                        path: path.to_path_buf(),
                        field: format!("profiles.{name}.about"),
                        what: "missing: say what the profile costs and what it is for".into(),
                    })
                }
            };
            profiles.insert(name, Profile { about, overrides: table });
        }
        Ok(Self { path: path.to_path_buf(), meta: raw.experiment, base: raw.base, profiles })
    }

    /// Resolve the run of `profile` with command-line overrides into a complete [`RunSpec`].
    pub fn resolve(&self, profile: &str, overrides: &[Override]) -> Result<RunSpec> {
        let p = self.profiles.get(profile).ok_or_else(|| Error::Experiment {
            path: self.path.clone(),
            what: format!(
                "no profile `{profile}`; this file has: {}",
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        let mut merged = self.base.clone();
        deep_merge(&mut merged, &p.overrides);
        for o in overrides {
            set_path(&mut merged, &o.key, o.value.clone())
                .map_err(|what| Error::Override { arg: o.raw.clone(), what })?;
        }
        let method: Method = self.pick(&merged, "method", Value::String("vicreg".into()))?;
        let dataset: Dataset = self.pick(&merged, "dataset", Value::String("cifar10".into()))?;
        let mut defaults = RunSpec::defaults(method, dataset);
        if let Some(preset) = merged.get("augment").and_then(|a| a.get("preset")) {
            let preset: Preset = Preset::deserialize(preset.clone()).map_err(|e| Error::Field {
                path: self.path.clone(),
                field: "augment.preset".into(),
                what: e.to_string(),
            })?;
            defaults.augment = RunSpec::augment_defaults(preset, dataset);
        }
        let mut full = match Value::try_from(&defaults).expect("defaults serialise to TOML") {
            Value::Table(t) => t,
            _ => unreachable!("a struct serialises to a table"),
        };
        deep_merge(&mut full, &merged);
        full.insert("experiment".into(), Value::String(self.meta.name.clone()));
        full.insert("profile".into(), Value::String(profile.to_string()));
        let spec: RunSpec = serde_path_to_error::deserialize(Value::Table(full)).map_err(|e| Error::Field {
            path: self.path.clone(),
            field: e.path().to_string(),
            what: e.inner().to_string(),
        })?;
        crate::validate::validate(&spec).map_err(|(field, what)| Error::Field {
            path: self.path.clone(),
            field: field.to_string(),
            what,
        })?;
        Ok(spec)
    }

    fn pick<T: serde::de::DeserializeOwned>(&self, t: &Table, key: &str, default: Value) -> Result<T> {
        let v = t.get(key).cloned().unwrap_or(default);
        T::deserialize(v).map_err(|e| Error::Field { path: self.path.clone(), field: key.into(), what: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[experiment]
name = "t"
title = "test"
paper = "VICReg"
reproduces = "nothing"

[base]
method = "vicreg"
dataset = "cifar10"
projector = { widths = [64, 32] }
optimizer = { warmup_epochs = 1 }

[base.train]
epochs = 3
batch_size = 16
train_images = 64

[profiles.smoke]
about = "tiny"
encoder = { width = 0.25 }

[profiles.other]
about = "other"
train = { epochs = 9 }
"#;

    fn parse(text: &str) -> Result<ExperimentFile> {
        ExperimentFile::parse(Path::new("experiments/t.toml"), text)
    }

    #[test]
    fn profile_and_overrides_layer_over_defaults() {
        let f = parse(FILE).unwrap();
        let s = f.resolve("smoke", &[]).unwrap();
        assert_eq!(s.encoder.width, 0.25);
        assert_eq!(s.train.epochs, 3);
        assert_eq!(s.projector.widths, vec![64, 32]);
        assert_eq!(s.optimizer.momentum, 0.9, "default kept");
        assert_eq!(s.profile, "smoke");
        let o: Override = "train.epochs=5".parse().unwrap();
        let m: Override = "optimizer.kind=adam".parse().unwrap();
        let s2 = f.resolve("smoke", &[o, m]).unwrap();
        assert_eq!(s2.train.epochs, 5);
        assert_eq!(s2.optimizer.kind, crate::spec::OptimizerKind::Adam);
        assert_ne!(s.hash(), s2.hash());
        assert_eq!(f.resolve("other", &[]).unwrap().train.epochs, 9);
    }

    #[test]
    fn unknown_key_names_file_and_field() {
        let text = FILE.replace("epochs = 3", "epochs = 3\nepohcs = 4");
        let err = parse(&text).unwrap().resolve("smoke", &[]).unwrap_err().to_string();
        assert!(err.contains("experiments/t.toml") && err.contains("train") && err.contains("epohcs"), "{err}");
    }

    #[test]
    fn wrong_type_and_bad_values_are_named() {
        let text = FILE.replace("epochs = 3", "epochs = \"three\"");
        let err = parse(&text).unwrap().resolve("smoke", &[]).unwrap_err().to_string();
        assert!(err.contains("train.epochs"), "{err}");
        let err = parse(FILE).unwrap().resolve("smoke", &["train.batch_size=1".parse().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("train.batch_size"), "{err}");
        let err = parse(FILE).unwrap().resolve("nope", &[]).unwrap_err().to_string();
        assert!(err.contains("no profile `nope`") && err.contains("smoke"), "{err}");
        let err = parse(&FILE.replace("method = \"vicreg\"", "method = \"vicrag\"")).unwrap();
        let err = err.resolve("smoke", &[]).unwrap_err().to_string();
        assert!(err.contains("method") && err.contains("vicrag"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_line_numbers_and_profiles_need_about() {
        let err = parse("[experiment\nname=1").unwrap_err().to_string();
        assert!(err.contains("experiments/t.toml") && err.contains("line 1"), "{err}");
        let err = parse(&FILE.replace("about = \"tiny\"\n", "")).unwrap_err().to_string();
        assert!(err.contains("profiles.smoke.about"), "{err}");
    }

    #[test]
    fn override_values_parse_as_toml_or_words() {
        let o: Override = "projector=[8, 4]".parse().unwrap();
        assert_eq!(o.value, Value::Array(vec![Value::Integer(8), Value::Integer(4)]));
        let o: Override = "method=vicreg".parse().unwrap();
        assert_eq!(o.value, Value::String("vicreg".into()));
        assert!("nokey".parse::<Override>().is_err());
    }

    #[test]
    fn augment_preset_dataset_defaults_and_per_view_overrides() {
        let f = parse(FILE).unwrap();
        let s = f.resolve("smoke", &[]).unwrap();
        assert_eq!(s.augment.preset, Preset::Wmse);
        assert_eq!((s.augment.size(), s.augment.eval_resize, s.encoder.max_pool), (32, 0, false));
        let set = |a: &str| a.parse::<Override>().unwrap();
        let s = f
            .resolve("smoke", &[set("dataset=stl10"), set("augment.preset=fair"), set("augment.view_b.solarize_p=0.5")])
            .unwrap();
        assert_eq!(s.augment.preset, Preset::Fair);
        assert_eq!((s.augment.view_a.blur_p, s.augment.view_b.solarize_p), (1.0, 0.5));
        assert_eq!((s.augment.size(), s.augment.eval_resize, s.augment.eval_crop), (64, 70, 64));
        assert_eq!(s.augment.mean, [0.43, 0.42, 0.39]);
        assert!(s.encoder.max_pool, "the W-MSE code keeps the max-pool on STL-10");
        let err = f.resolve("smoke", &[set("augment.preset=simclr")]).unwrap_err().to_string();
        assert!(err.contains("augment.preset") && err.contains("wmse") && err.contains("fair"), "{err}");
        let err = f.resolve("smoke", &[set("augment.view_a.blur_p=2")]).unwrap_err().to_string();
        assert!(err.contains("view_a.blur_p") && err.contains("[0, 1]"), "{err}");
        let err = f.resolve("smoke", &[set("dataset=imagenet")]).unwrap_err().to_string();
        assert!(err.contains("dataset") && err.contains("tiny-imagenet"), "{err}");
    }
}

#[cfg(test)]
mod shipped_files {
    use super::*;

    /// Every profile of every experiment file in `experiments/` resolves to a valid run.
    #[test]
    fn every_shipped_profile_resolves() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let file = ExperimentFile::load(&path).unwrap();
            assert!(!file.profiles.is_empty(), "{}: no profiles", path.display());
            for name in file.profiles.keys() {
                let spec = file.resolve(name, &[]).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(&spec.profile, name);
                seen += 1;
            }
        }
        assert!(seen >= 3, "smoke.toml alone has three profiles");
    }
}
