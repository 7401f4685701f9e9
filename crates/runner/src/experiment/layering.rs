//! A run's configuration from its layers: built-in defaults ← `[base]` ← grid values ←
//! matching `when`s ← the profile ← `--set`, merged table by table; and, when the result does not
//! deserialise or validate, the error naming the layer (file, line, column) that set the field.

use serde::Deserialize;
use toml::{Table, Value};

use super::position::{keys, position_of, Seg};
use super::{did_you_mean, Axis, ExperimentFile, Override};
use crate::config::{DatasetSpec, Method, RunConfig};
use crate::{Error, Result};
use infomax_data::augment::Preset;

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

/// Keys whose value a layer replaces whole rather than merging into: a dataset table names one
/// dataset (a folder's `name`, size and statistics must not outlive a change of `folder`).
const WHOLE: [&str; 1] = ["dataset"];

/// Remove from `base` each [`WHOLE`] key that `over` sets, before merging `over` into it.
fn replace_whole(base: &mut Table, over: &Table) {
    for key in WHOLE {
        if over.contains_key(key) {
            base.remove(key);
        }
    }
}

pub(super) fn set_path(table: &mut Table, key: &[String], value: Value) -> std::result::Result<(), String> {
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

/// Whether `table` sets the dotted `path` (or a table on the way to it).
fn sets_path(table: &Table, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    match (table.get(first), rest.is_empty()) {
        (Some(_), true) => true,
        (Some(Value::Table(t)), false) => sets_path(t, rest),
        (Some(_), false) => true,
        (None, _) => false,
    }
}

/// Where `show` says a folder's statistics come from when the file does not write them.
const CACHED_STATS: &str = "the statistics `datasets stats` cached";

impl ExperimentFile {
    /// The single run of a file without a grid.
    pub fn resolve(&self, profile: &str, overrides: &[Override]) -> Result<RunConfig> {
        if !self.axes.is_empty() {
            return Err(Error::Experiment {
                path: self.path.clone(),
                what: format!("this file is a grid over {}; plan it instead of resolving one run", self.axis_names()),
            });
        }
        self.resolve_cell(profile, &[], &[], overrides)
    }

    /// Resolve the run at `cell` of the grid over `axes` (the file's, or with `--seeds` applied)
    /// under `profile` and command-line overrides into a complete [`RunConfig`].
    pub fn resolve_cell(
        &self,
        profile: &str,
        axes: &[Axis],
        cell: &[usize],
        overrides: &[Override],
    ) -> Result<RunConfig> {
        let layers = self.layers(profile, axes, cell)?;
        let mut merged = self.merged(&layers, overrides)?;
        let fail = |field: &str, what: String| self.resolution_error(&layers, overrides, field, what);
        let pick = |key: &str, default: &str| -> Result<Value> {
            Ok(merged.get(key).cloned().unwrap_or_else(|| Value::String(default.into())))
        };
        let method =
            Method::deserialize(pick("method", Method::DEFAULT.name())?).map_err(|e| fail("method", e.to_string()))?;
        let dataset = DatasetSpec::deserialize(pick("dataset", "cifar10")?).map_err(|e| {
            let own = self.datasets.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            let own = if own.is_empty() { String::new() } else { format!(" (this file's [datasets] tables: {own})") };
            fail("dataset", format!("{}{own}", e.to_string().lines().next().unwrap_or_default()))
        })?;
        // Statistics cached by `datasets stats` stand in for a folder's missing `mean` and `std`,
        // written into the run's dataset so that its identity and its record carry them.
        let dataset = match (dataset, &self.data_root) {
            (DatasetSpec::Folder(f), Some(root)) if f.mean.is_none() && f.std.is_none() => {
                let f = f.with_measured_stats(root).map_err(|e| fail("dataset", e.to_string()))?;
                if f.mean.is_some() {
                    merged.insert("dataset".into(), Value::try_from(&f).expect("a folder dataset serialises to TOML"));
                }
                DatasetSpec::Folder(f)
            }
            (d, _) => d,
        };
        let mut defaults = RunConfig::defaults(method, dataset);
        if let Some(preset) = merged.get("augment").and_then(|a| a.get("preset")) {
            let preset = Preset::deserialize(preset.clone()).map_err(|e| fail("augment.preset", e.to_string()))?;
            defaults.augment = RunConfig::augment_defaults(preset, &defaults.dataset);
        }
        let mut full = match Value::try_from(&defaults).expect("defaults serialise to TOML") {
            Value::Table(t) => t,
            _ => unreachable!("a struct serialises to a table"),
        };
        replace_whole(&mut full, &merged);
        deep_merge(&mut full, &merged);
        // The second branch's encoder is the run's, changed only where the file says.
        if let (Some(Value::Table(encoder)), Some(Value::Table(branch))) =
            (full.get("encoder").cloned(), full.get_mut("branch_b"))
        {
            let mut resolved = encoder;
            if let Some(Value::Table(own)) = branch.get("encoder") {
                deep_merge(&mut resolved, own);
            }
            branch.insert("encoder".into(), Value::Table(resolved));
        }
        full.insert("experiment".into(), Value::String(self.meta.name.clone()));
        full.insert("profile".into(), Value::String(profile.to_string()));
        let grid: Table = axes
            .iter()
            .zip(cell)
            .filter(|(a, _)| !a.is_seed())
            .map(|(a, &i)| (a.name.clone(), Value::String(a.values[i].name.clone())))
            .collect();
        full.insert("grid".into(), Value::Table(grid));
        let config = RunConfig::from_toml(full).map_err(|(field, what)| fail(&field, what))?;
        crate::validate::validate(&config).map_err(|(field, what)| fail(&field, what))?;
        Ok(config)
    }

    /// What the layers and the overrides write, merged (a `[datasets.NAME]` table's name
    /// replaced by the table).
    fn merged(&self, layers: &[(Vec<Seg>, &Table)], overrides: &[Override]) -> Result<Table> {
        let mut merged = Table::new();
        for (_, table) in layers {
            replace_whole(&mut merged, table);
            deep_merge(&mut merged, table);
        }
        for o in overrides {
            set_path(&mut merged, &o.key, o.value.clone())
                .map_err(|what| Error::Override { arg: o.raw.clone(), what })?;
        }
        // A name of one of the file's `[datasets.NAME]` tables stands for that table.
        if let Some(folder) = merged.get("dataset").and_then(Value::as_str).and_then(|n| self.datasets.get(n)) {
            merged.insert("dataset".into(), Value::try_from(folder).expect("a folder dataset serialises to TOML"));
        }
        Ok(merged)
    }

    /// The file's layers of a cell, lowest first, each with where it is written: `[base]`, the
    /// cell's grid values, the matching `[[when]]`s of the file, `[profiles.P]`, then the
    /// profile's matching `[[when]]`s.
    fn layers<'a>(&'a self, profile: &str, axes: &'a [Axis], cell: &[usize]) -> Result<Vec<(Vec<Seg>, &'a Table)>> {
        let p = self.profile(profile)?;
        let mut layers: Vec<(Vec<Seg>, &Table)> = vec![(keys(&["base"]), &self.base)];
        for (axis, &i) in axes.iter().zip(cell) {
            layers.push((axis.values[i].anchor.clone(), &axis.values[i].overrides));
        }
        for w in self.when.iter().chain(&p.when) {
            if w.applies(axes, cell) {
                layers.push((w.anchor.clone(), &w.set));
            }
        }
        // The profile's own overrides come before its `when`s, after the file's.
        let profile_at = layers.len() - p.when.iter().filter(|w| w.applies(axes, cell)).count();
        layers.insert(profile_at, (keys(&["profiles", profile]), &p.overrides));
        Ok(layers)
    }

    /// Where each field of the run at grid coordinates `coords` (as a plan names them) gets its
    /// value, by dotted field: `--set KEY=VALUE`, the last layer of this file that sets it (its
    /// place and line: `profiles.paper (line 57)`, `grid.method[1] (line 20)`), `plan` for the
    /// experiment, profile and grid coordinates, or `default` (the built-in default for the
    /// method, dataset and augmentation preset).
    pub fn field_sources(
        &self,
        profile: &str,
        coords: &[(String, String)],
        overrides: &[Override],
        config: &RunConfig,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let (mut axes, mut cell) = (Vec::new(), Vec::new());
        for axis in &self.axes {
            let value = coords.iter().find(|(a, _)| *a == axis.name).map(|(_, v)| v);
            if let Some(i) = value.and_then(|v| axis.values.iter().position(|x| x.name == *v)) {
                axes.push(axis.clone());
                cell.push(i);
            }
        }
        let layers = self.layers(profile, &axes, &cell)?;
        let describe = |anchor: &[Seg], path: &[String]| -> String {
            let mut place = String::new();
            for seg in anchor {
                match seg {
                    Seg::Key(k) if place.is_empty() => place.push_str(k),
                    Seg::Key(k) => {
                        place.push('.');
                        place.push_str(k);
                    }
                    Seg::Index(i) => place.push_str(&format!("[{i}]")),
                }
            }
            // The line of the field itself (or of the deepest part of it the layer writes).
            let mut at = anchor.to_vec();
            at.extend(path.iter().map(|k| Seg::Key(k.clone())));
            match position_of(&self.text, &at) {
                Some((line, _)) => format!("{place} (line {line})"),
                None => place,
            }
        };
        // A folder's statistics the file does not write came from `datasets stats`' cache.
        let written = self.merged(&layers, overrides)?;
        let written_stats = written.get("dataset").and_then(Value::as_table).is_some_and(|d| d.contains_key("mean"));
        let cached_stats = matches!(&config.dataset, DatasetSpec::Folder(f) if f.mean.is_some()) && !written_stats;
        let mut out = std::collections::BTreeMap::new();
        for field in config.fields().into_keys() {
            let path: Vec<String> = field.split('.').map(String::from).collect();
            let source = if ["experiment", "profile", "grid"].contains(&path[0].as_str()) {
                "plan".to_string()
            } else if let Some(o) = overrides.iter().rev().find(|o| path.starts_with(&o.key)) {
                format!("--set {}", o.raw)
            } else if cached_stats && ["dataset.mean", "dataset.std"].contains(&&*field) {
                CACHED_STATS.to_string()
            } else if let Some((anchor, _)) = layers.iter().rev().find(|(_, t)| sets_path(t, &path)) {
                describe(anchor, &path)
            } else if cached_stats && ["augment.mean", "augment.std"].contains(&&*field) {
                CACHED_STATS.to_string()
            } else {
                "default".to_string()
            };
            out.insert(field, source);
        }
        Ok(out)
    }

    /// Name where a bad field was set: the last layer that sets it (its line and column), or the
    /// `--set` that did; unknown keys get the closest valid one.
    fn resolution_error(
        &self,
        layers: &[(Vec<Seg>, &Table)],
        overrides: &[Override],
        field: &str,
        what: String,
    ) -> Error {
        let mut path: Vec<String> = field.split('.').filter(|s| !s.is_empty() && *s != "?").map(String::from).collect();
        // The deserializer appends `\nin `field`` lines: the field is named already.
        let mut what = what.lines().next().unwrap_or_default().trim_end().to_string();
        if let Some(unknown) = what.strip_prefix("unknown field `").and_then(|r| r.split('`').next()).map(String::from)
        {
            if path.last() != Some(&unknown) {
                path.push(unknown.clone());
            }
            let expected: Vec<&str> = what.split('`').skip(3).step_by(2).collect();
            let hint = did_you_mean(&unknown, expected.iter().copied());
            what.push_str(&hint);
        }
        let field = path.join(".");
        if let Some(o) = overrides.iter().rev().find(|o| path.starts_with(&o.key) || o.key.starts_with(&path)) {
            return Error::Override {
                arg: o.raw.clone(),
                what: format!("field `{field}` of the runs of {}: {what}", self.path.display()),
            };
        }
        let Some((anchor, _)) = layers.iter().rev().find(|(_, t)| sets_path(t, &path)) else {
            let what = format!("{what} (the built-in default for this method and dataset: set `{field}` in the file)");
            return Error::Field { path: self.path.clone(), at: None, field, what };
        };
        let mut full = anchor.clone();
        full.extend(path.iter().map(|k| Seg::Key(k.clone())));
        Error::Field { path: self.path.clone(), at: position_of(&self.text, &full), field, what }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::tests::{parse, FILE};

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
        assert_eq!(s2.optimizer.kind, crate::config::OptimizerKind::Adam);
        assert_ne!(s.hash(), s2.hash());
        assert_eq!(f.resolve("other", &[]).unwrap().train.epochs, 9);
    }

    #[test]
    fn a_dataset_table_replaces_the_one_below_it_whole() {
        let stats = "mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25]";
        let pets = format!("dataset = {{ folder = \"pets\", name = \"my pets\", image_size = 96, {stats} }}");
        let f = parse(&FILE.replace("dataset = \"cifar10\"", &pets)).unwrap();
        let flowers: Override = format!("dataset={{ folder = \"flowers\", {stats} }}").parse().unwrap();
        let s = f.resolve("smoke", &[flowers]).unwrap();
        let infomax_data::DatasetSpec::Folder(d) = &s.dataset else { panic!("{:?}", s.dataset) };
        assert_eq!((d.folder.as_str(), d.name.as_deref(), d.image_size), ("flowers", None, 64), "nothing of pets");
        let s = f.resolve("smoke", &["dataset.image_size=32".parse().unwrap()]).unwrap();
        let infomax_data::DatasetSpec::Folder(d) = &s.dataset else { panic!("{:?}", s.dataset) };
        assert_eq!((d.folder.as_str(), d.image_size), ("pets", 32), "a dotted key still sets one field");
    }

    #[test]
    fn a_datasets_table_is_named_by_its_key_with_its_own_crop_and_stem() {
        let stats = "mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25]";
        let table = format!(
            "\n[datasets.pets]\nfolder = \"pets\"\nimage_size = 144\ncrop_size = 128\n{}\n",
            stats.replace(", std", "\nstd")
        );
        let f = parse(&(FILE.replace("dataset = \"cifar10\"", "dataset = \"pets\"") + &table)).unwrap();
        let s = f.resolve("smoke", &[]).unwrap();
        let infomax_data::DatasetSpec::Folder(d) = &s.dataset else { panic!("{:?}", s.dataset) };
        assert_eq!((d.name.as_deref(), d.image_size, d.crop_size), (Some("pets"), 144, Some(128)));
        // A 128-px crop takes the ImageNet stem; evaluation centre-crops the stored 144 to 128.
        assert_eq!((s.encoder.small_stem, s.encoder.max_pool, s.augment.size()), (false, true, 128));
        assert_eq!((s.augment.eval_resize, s.augment.eval_crop), (144, 128));
        let small = f.resolve("smoke", &["dataset.stem=\"small\"".parse().unwrap()]);
        assert!(small.is_err(), "a dotted key on a name is not a table");
        let s = f.resolve("smoke", &["dataset=\"cifar10\"".parse().unwrap()]).unwrap();
        assert_eq!(s.dataset.name(), "cifar10", "--set still picks a built-in");

        let err = parse(&(FILE.to_string() + &table.replace("pets]", "cifar10]"))).unwrap_err().to_string();
        assert!(err.contains("datasets.cifar10") && err.contains("built-in"), "{err}");
        let err =
            parse(&(FILE.to_string() + &table.replace("crop_size = 128", "crop_size = 200"))).unwrap_err().to_string();
        assert!(err.contains("datasets.pets.crop_size") && err.contains("1 to image_size (144)"), "{err}");
        let err = parse(&(FILE.to_string() + &table.replace("crop_size", "crop"))).unwrap_err().to_string();
        assert!(err.contains("datasets.pets") && err.contains("unknown field `crop`"), "{err}");
        let f = parse(&(FILE.replace("dataset = \"cifar10\"", "dataset = \"pest\"") + &table)).unwrap();
        let err = f.resolve("smoke", &[]).unwrap_err().to_string();
        assert!(err.contains("unknown dataset `pest`") && err.contains("this file's [datasets] tables: pets"), "{err}");
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
        let err = f.resolve("smoke", &[set("dataset=imagenet-1k")]).unwrap_err().to_string();
        assert!(err.contains("dataset") && err.contains("tiny-imagenet"), "{err}");
    }
}
