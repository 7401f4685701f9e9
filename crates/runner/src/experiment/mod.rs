//! Experiment files (TOML in `experiments/`, also built into the `infomax` binary), how a name
//! finds one ([`Catalogue`]), and their resolution into [`RunConfig`]s.
//!
//! ```toml
//! [experiment]            # name, title, paper, reproduces
//! [base]                  # what every run shares: method, dataset, encoder, projector, optimizer, …
//! [grid]                  # axes: `dataset = ["cifar10", "stl10"]`, or named values with overrides:
//! [grid.method]           #   w-mse-4 = { method = "w-mse", train = { views = 4 } }
//! [[when]]                # overrides for some cells: match = { method = "w-mse-2", dataset = "stl10" }
//!                         #   set = { projector = { widths = [1024, 128] } }
//! [profiles.smoke]        # overrides for every run; `about` says what the profile costs;
//! [[profiles.smoke.when]] #   a profile's own cell overrides
//! [[reference]]           # the paper's numbers: at = { method = "simclr", dataset = "cifar10" },
//!                         #   linear = 91.80, knn5 = 88.42, source = "W-MSE, Table 1"
//! [datasets.pets]         # a folder of images the file names as `dataset = "pets"` (its fields:
//!                         #   infomax_data::folder::FolderDataset; `name` defaults to the key)
//! ```
//! A run's configuration, lowest layer first: built-in defaults for its method and dataset ←
//! `[base]` ← its grid values (axes in file order) ← matching `[[when]]` ← the profile ← the
//! profile's matching `when` ← `--set key=value`; then a strict deserialisation (unknown keys are
//! errors naming the file, line, column and the closest valid key) and `validate`.
//!
//! The axis `seed` is special: its values set `seed` and are not part of a run's grid
//! coordinates (the seed is already in the configuration), so `--seeds N` adds seeds to a sweep
//! without renaming the runs it already has.

mod grid;
mod layering;
mod locate;
mod overrides;
mod position;
mod profile;
mod reference;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::{Error, Result};
use infomax_data::folder::FolderDataset;
use position::{keys, position_of, Seg};

pub use grid::{Axis, AxisValue, Deviation, Exclusion, Recipe};
pub use layering::deep_merge;
pub use locate::{did_you_mean, known_experiments, BuiltIn, Catalogue, Entry, Origin, BUILTIN_PREFIX, EXPERIMENTS_ENV};
pub use overrides::Override;
pub use profile::Profile;
pub use reference::{Reference, REFERENCE_METRICS};

use grid::When;

/// Keys infomax sets itself; a file that sets them would be silently overwritten.
const RESERVED: [&str; 3] = ["experiment", "profile", "grid"];

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
    grid: Table,
    #[serde(default)]
    when: Vec<Table>,
    #[serde(default)]
    exclude: Vec<Table>,
    #[serde(default)]
    reference: Vec<Table>,
    #[serde(default)]
    profiles: Table,
    #[serde(default)]
    datasets: Table,
}

/// A parsed experiment file.
#[derive(Debug, Clone)]
pub struct ExperimentFile {
    pub path: PathBuf,
    pub meta: ExperimentMeta,
    base: Table,
    /// The grid's axes in file order (none: the file is one run).
    pub axes: Vec<Axis>,
    when: Vec<When>,
    pub exclusions: Vec<Exclusion>,
    pub references: Vec<Reference>,
    pub profiles: BTreeMap<String, Profile>,
    /// The file's own folder datasets (`[datasets.NAME]`), which `dataset = "NAME"` names.
    pub datasets: BTreeMap<String, FolderDataset>,
    /// Where folder datasets are looked for when runs are resolved: a folder that gives no
    /// `mean` and `std` takes the statistics `datasets stats` cached for it there.
    data_root: Option<PathBuf>,
    text: String,
}

impl ExperimentFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// An error at a place in the file.
    fn at(&self, anchor: &[Seg], field: impl Into<String>, what: impl Into<String>) -> Error {
        Error::Field {
            path: self.path.clone(),
            at: position_of(&self.text, anchor),
            field: field.into(),
            what: what.into(),
        }
    }

    /// Resolve folder datasets under `root`, filling in the statistics cached for them.
    pub fn with_data_root(mut self, root: &Path) -> Self {
        self.data_root = Some(root.to_path_buf());
        self
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| Error::Experiment { path: path.to_path_buf(), what: e.to_string().trim_end().to_string() })?;
        let mut file = Self {
            path: path.to_path_buf(),
            meta: raw.experiment,
            base: raw.base,
            axes: Vec::new(),
            when: Vec::new(),
            exclusions: Vec::new(),
            references: Vec::new(),
            profiles: BTreeMap::new(),
            datasets: BTreeMap::new(),
            data_root: None,
            text: text.to_string(),
        };
        for (name, value) in &raw.datasets {
            let anchor = keys(&["datasets", name]);
            let field = format!("datasets.{name}");
            let mut folder =
                FolderDataset::deserialize(value.clone()).map_err(|e| file.at(&anchor, &field, e.to_string()))?;
            if name.parse::<infomax_data::Dataset>().is_ok() {
                return Err(file.at(&anchor, &field, "a built-in dataset's name; give the folder a name of its own"));
            }
            folder.name.get_or_insert_with(|| name.clone());
            if let Err((key, what)) = folder.check() {
                return Err(file.at(&anchor, format!("{field}.{key}"), what));
            }
            file.datasets.insert(name.clone(), folder);
        }
        file.check_reserved(&file.base, &keys(&["base"]))?;
        file.axes = file.parse_axes(&raw.grid)?;
        file.when = raw
            .when
            .iter()
            .enumerate()
            .map(|(i, t)| file.parse_when(t, vec![Seg::Key("when".into()), Seg::Index(i)], "when"))
            .collect::<Result<_>>()?;
        file.exclusions = raw
            .exclude
            .iter()
            .enumerate()
            .map(|(i, t)| file.parse_exclusion(t, vec![Seg::Key("exclude".into()), Seg::Index(i)], "exclude", None))
            .collect::<Result<_>>()?;
        for (name, value) in &raw.profiles {
            let anchor = keys(&["profiles", name]);
            let Value::Table(table) = value else {
                return Err(file.at(&anchor, format!("profiles.{name}"), "a table of overrides expected"));
            };
            let (profile, exclusions) = file.parse_profile(name, table.clone(), anchor)?;
            file.profiles.insert(name.clone(), profile);
            file.exclusions.extend(exclusions);
        }
        file.references = raw
            .reference
            .iter()
            .enumerate()
            .map(|(i, t)| file.parse_reference(t, vec![Seg::Key("reference".into()), Seg::Index(i)]))
            .collect::<Result<_>>()?;
        Ok(file)
    }

    fn check_reserved(&self, table: &Table, anchor: &[Seg]) -> Result<()> {
        for key in RESERVED {
            if table.contains_key(key) {
                let mut at = anchor.to_vec();
                at.push(Seg::Key(key.into()));
                return Err(self.at(
                    &at,
                    key,
                    "is set by infomax (the file's name, the profile, the grid coordinates); remove it",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const FILE: &str = r#"
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

    pub(super) fn parse(text: &str) -> Result<ExperimentFile> {
        ExperimentFile::parse(Path::new("experiments/t.toml"), text)
    }

    #[test]
    fn syntax_errors_carry_line_numbers_and_profiles_need_about() {
        let err = parse("[experiment\nname=1").unwrap_err().to_string();
        assert!(err.contains("experiments/t.toml") && err.contains("line 1"), "{err}");
        let err = parse(&FILE.replace("about = \"tiny\"\n", "")).unwrap_err().to_string();
        assert!(err.contains("profiles.smoke.about"), "{err}");
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
                let plan = crate::plan::plan(&file, name, &[], &Default::default()).unwrap_or_else(|e| panic!("{e}"));
                assert!(!plan.is_empty());
                let mut hashes: Vec<String> = plan.iter().map(|r| r.config.hash()).collect();
                hashes.sort();
                hashes.dedup();
                assert_eq!(hashes.len(), plan.len(), "{}: two cells resolve to the same run", path.display());
                assert!(plan.iter().all(|r| &r.config.profile == name));
                seen += 1;
            }
        }
        assert!(seen >= 3, "smoke.toml alone has three profiles");
    }
}
