//! Finding an experiment by name or path: the [`Catalogue`] of a directory of experiment files
//! over the set built into the binary, and suggesting the closest known name.
//!
//! The rule, in [`Catalogue::resolve`] (every command that takes an experiment goes through it):
//!
//! 1. `builtin:NAME` (or `builtin:NAME.toml`) is the built-in file `NAME.toml`, whatever the
//!    directory holds.
//! 2. An argument with an extension or a `/` (`my.toml`, `sweeps/x`) is a path to a file, read as
//!    it is; no lookup.
//! 3. Any other argument is a name: `NAME.toml` in the experiments directory if it is there, else
//!    the built-in `NAME.toml`. The directory shadows the built-in set by name: it adds names and
//!    replaces the built-ins it has a file for; the other built-ins stay available.
//!
//! The experiments directory ([`Catalogue::choose`]): `--experiments DIR`, else
//! `$INFOMAX_EXPERIMENTS`, else `./experiments` when the working directory has one, else none
//! (the built-in set alone). A directory named by the option or the variable must exist; the
//! working directory's is used only if it does.
//!
//! A built-in file is parsed exactly as the same text on disk: only the path its messages name
//! differs (`builtin:smoke.toml`), and no run's identity depends on the path. The results
//! database records an experiment by its `[experiment] name`, never by where its file was.

use std::path::{Path, PathBuf};

use super::ExperimentFile;
use crate::{Error, Result};

/// The environment variable that names an experiments directory when `--experiments` does not.
pub const EXPERIMENTS_ENV: &str = "INFOMAX_EXPERIMENTS";

/// The prefix that names a built-in experiment whatever the directory holds, and the path that
/// a built-in file's messages carry (`builtin:smoke.toml`).
pub const BUILTIN_PREFIX: &str = "builtin:";

/// An experiment file compiled into the binary: its file name (`smoke.toml`) and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltIn {
    pub file_name: &'static str,
    pub text: &'static str,
}

impl BuiltIn {
    /// The experiment name: the file name without `.toml`.
    pub fn name(&self) -> &'static str {
        self.file_name.strip_suffix(".toml").unwrap_or(self.file_name)
    }
}

/// Where an experiment's file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file on disk (in the experiments directory, or a path given as it is).
    File(PathBuf),
    /// A file built into the binary.
    BuiltIn(BuiltIn),
}

/// An experiment found by [`Catalogue::resolve`] or listed by [`Catalogue::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name it is known by (the file stem).
    pub name: String,
    pub origin: Origin,
    /// A file of the experiments directory that replaces the built-in of its name.
    pub shadows_builtin: bool,
}

impl Entry {
    /// The path its messages name: the file's path, or `builtin:NAME.toml`.
    pub fn path(&self) -> PathBuf {
        match &self.origin {
            Origin::File(p) => p.clone(),
            Origin::BuiltIn(b) => PathBuf::from(format!("{BUILTIN_PREFIX}{}", b.file_name)),
        }
    }

    /// Where it resolves, for people: the file's path, or `built in`.
    pub fn place(&self) -> String {
        match &self.origin {
            Origin::File(p) => p.display().to_string(),
            Origin::BuiltIn(_) => "built in".to_string(),
        }
    }

    /// The file's text.
    pub fn text(&self) -> Result<String> {
        match &self.origin {
            Origin::File(p) => std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.clone(), source }),
            Origin::BuiltIn(b) => Ok(b.text.to_string()),
        }
    }

    /// The parsed experiment file (a built-in one parsed from its text, as the same file on disk
    /// would be).
    pub fn load(&self) -> Result<ExperimentFile> {
        ExperimentFile::parse(&self.path(), &self.text()?)
    }
}

/// The experiments directory, if any, and why it is the one.
#[derive(Debug, Clone)]
struct Dir {
    path: PathBuf,
    /// `--experiments`, `$INFOMAX_EXPERIMENTS` (an option or variable that named it), or why else
    /// it is searched (`found in the working directory`).
    chosen_by: String,
}

/// Where experiment names are looked up: a directory of `NAME.toml` files (optional) over the
/// files built into the binary, a name in the directory winning (see the module's rule).
#[derive(Debug, Clone)]
pub struct Catalogue {
    dir: Option<Dir>,
    builtins: Vec<BuiltIn>,
}

impl Catalogue {
    /// The catalogue of `dir` (when given, it must be a directory; `chosen_by` says which option
    /// or variable named it, for messages) over `builtins`.
    pub fn new(dir: Option<(PathBuf, String)>, builtins: &[BuiltIn]) -> Result<Self> {
        if let Some((path, chosen_by)) = &dir {
            if !path.is_dir() {
                return Err(Error::Option {
                    option: format!("{chosen_by} {}", path.display()),
                    what: "no such directory of experiment files".into(),
                });
            }
        }
        let mut builtins = builtins.to_vec();
        builtins.sort_by_key(|b| b.file_name);
        Ok(Self { dir: dir.map(|(path, chosen_by)| Dir { path, chosen_by }), builtins })
    }

    /// The catalogue the command line and environment give: the directory `option`
    /// (`--experiments`), else `$INFOMAX_EXPERIMENTS` (when set and not empty), else
    /// `./experiments` when it exists, else none; over `builtins`.
    pub fn choose(option: Option<&Path>, builtins: &[BuiltIn]) -> Result<Self> {
        let dir = match (option, std::env::var_os(EXPERIMENTS_ENV).filter(|v| !v.is_empty())) {
            (Some(dir), _) => Some((dir.to_path_buf(), "--experiments".to_string())),
            (None, Some(dir)) => Some((PathBuf::from(dir), format!("${EXPERIMENTS_ENV}"))),
            (None, None) if Path::new("experiments").is_dir() => {
                Some((PathBuf::from("experiments"), "found in the working directory".to_string()))
            }
            (None, None) => None,
        };
        Self::new(dir, builtins)
    }

    /// The experiments directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path.as_path())
    }

    /// The files built into the binary, by file name.
    pub fn builtins(&self) -> &[BuiltIn] {
        &self.builtins
    }

    /// Where names are looked up, in order, for messages: `experiments (found in the working
    /// directory), then the 11 built-in experiments`.
    pub fn searched(&self) -> String {
        let builtins = match self.builtins.len() {
            0 => "no built-in experiments (this binary was built without experiments/)".to_string(),
            1 => "the 1 built-in experiment".to_string(),
            n => format!("the {n} built-in experiments"),
        };
        match &self.dir {
            Some(d) if d.chosen_by.starts_with(['-', '$']) => {
                format!("{} (named by {}), then {builtins}", d.path.display(), d.chosen_by)
            }
            Some(d) => format!("{} ({}), then {builtins}", d.path.display(), d.chosen_by),
            None => format!(
                "{builtins} (no experiments directory: no --experiments, no ${EXPERIMENTS_ENV}, no ./experiments)"
            ),
        }
    }

    /// The experiment an argument means: `builtin:NAME`, a path (an extension or a `/`), or a
    /// name looked up in the directory, then among the built-ins. An unknown name's error lists
    /// the known names and where they were looked for.
    pub fn resolve(&self, name_or_path: &str) -> Result<Entry> {
        if let Some(rest) = name_or_path.strip_prefix(BUILTIN_PREFIX) {
            let name = rest.strip_suffix(".toml").unwrap_or(rest);
            return match self.builtin(name) {
                Some(b) => Ok(Entry { name: name.to_string(), origin: Origin::BuiltIn(b), shadows_builtin: false }),
                None => Err(Error::Experiment {
                    path: PathBuf::from(name_or_path),
                    what: format!(
                        "no built-in experiment named `{name}`{}; built in: {}",
                        did_you_mean(name, self.builtins.iter().map(BuiltIn::name)),
                        list_or_none(self.builtins.iter().map(BuiltIn::name))
                    ),
                }),
            };
        }
        let as_path = PathBuf::from(name_or_path);
        if as_path.extension().is_some() || name_or_path.contains('/') {
            if as_path.is_file() {
                let name = as_path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                return Ok(Entry { name, origin: Origin::File(as_path), shadows_builtin: false });
            }
            // `smoke.toml` given from elsewhere than the repository: say that the name alone works.
            let stem = as_path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let hint = match stem.contains('.') {
                false => self.resolve(stem).ok(),
                true => None,
            };
            let hint = hint.map_or_else(String::new, |e| {
                let found = match &e.origin {
                    Origin::File(p) => p.display().to_string(),
                    Origin::BuiltIn(b) => format!("the built-in {}", b.file_name),
                };
                format!(" (an argument with an extension or a `/` is a path; the name `{stem}` alone finds {found})")
            });
            return Err(Error::Experiment { path: as_path, what: format!("no such experiment file{hint}") });
        }
        let name = name_or_path;
        if let Some(d) = &self.dir {
            let candidate = d.path.join(format!("{name}.toml"));
            if candidate.is_file() {
                let shadows_builtin = self.builtin(name).is_some();
                return Ok(Entry { name: name.to_string(), origin: Origin::File(candidate), shadows_builtin });
            }
        }
        if let Some(b) = self.builtin(name) {
            return Ok(Entry { name: name.to_string(), origin: Origin::BuiltIn(b), shadows_builtin: false });
        }
        let listed = self.list();
        let in_dir: Vec<&str> =
            listed.iter().filter(|e| matches!(e.origin, Origin::File(_))).map(|e| e.name.as_str()).collect();
        let built_in: Vec<&str> =
            listed.iter().filter(|e| matches!(e.origin, Origin::BuiltIn(_))).map(|e| e.name.as_str()).collect();
        let known = match &self.dir {
            Some(d) => format!(
                "known names in {}: {}; further built-in names: {}",
                d.path.display(),
                list_or_none(in_dir.into_iter()),
                list_or_none(built_in.into_iter())
            ),
            None => format!("known names (built in): {}", list_or_none(built_in.into_iter())),
        };
        Err(Error::Experiment {
            path: PathBuf::from(name),
            what: format!(
                "no experiment named `{name}`{}; looked for {name}.toml in {}; {known}",
                did_you_mean(name, listed.iter().map(|e| e.name.as_str())),
                self.searched(),
            ),
        })
    }

    /// Every name the catalogue resolves, sorted, each with where it resolves: the directory's
    /// files (`*.toml`), and the built-ins that none of them shadows. (A file of the directory
    /// whose stem has a `.` is not a name, since such an argument is a path: it is not listed.)
    pub fn list(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .dir
            .iter()
            .flat_map(|d| known_experiments(&d.path))
            .filter_map(|name| self.resolve(&name).ok())
            .collect();
        for b in &self.builtins {
            if !entries.iter().any(|e| e.name == b.name()) {
                entries.push(Entry { name: b.name().to_string(), origin: Origin::BuiltIn(*b), shadows_builtin: false });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    fn builtin(&self, name: &str) -> Option<BuiltIn> {
        self.builtins.iter().find(|b| b.name() == name).copied()
    }
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The experiment names (stems of the `*.toml` files) in a folder, sorted.
pub fn known_experiments(experiments_dir: &Path) -> Vec<String> {
    let mut known: Vec<String> = std::fs::read_dir(experiments_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    known
}

/// `; did you mean `x`?` when a candidate is close to `word`, else nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(word, c), c))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::tests::FILE;

    const ONE: BuiltIn = BuiltIn { file_name: "t.toml", text: FILE };
    const TWO: BuiltIn = BuiltIn { file_name: "u.toml", text: FILE };

    #[test]
    fn a_directory_shadows_built_ins_by_name_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("t.toml"), FILE.replace("title = \"test\"", "title = \"mine\"")).unwrap();
        std::fs::write(tmp.path().join("v.toml"), FILE).unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "").unwrap();
        let c = Catalogue::new(Some((tmp.path().to_path_buf(), "--experiments".into())), &[TWO, ONE]).unwrap();
        let t = c.resolve("t").unwrap();
        assert_eq!((t.origin.clone(), t.shadows_builtin), (Origin::File(tmp.path().join("t.toml")), true));
        assert_eq!(t.load().unwrap().meta.title, "mine");
        assert_eq!(c.resolve("u").unwrap().origin, Origin::BuiltIn(TWO));
        assert_eq!(c.resolve("u").unwrap().path(), Path::new("builtin:u.toml"));
        assert_eq!(c.resolve("builtin:t").unwrap().origin, Origin::BuiltIn(ONE));
        assert_eq!(c.resolve("builtin:t.toml").unwrap().load().unwrap().meta.title, "test");
        let listed: Vec<(String, String)> = c.list().into_iter().map(|e| (e.name.clone(), e.place())).collect();
        let file = |n: &str| tmp.path().join(n).display().to_string();
        let want = [("t", file("t.toml")), ("u", "built in".into()), ("v", file("v.toml"))];
        assert_eq!(listed, want.map(|(n, p)| (n.to_string(), p)));
    }

    #[test]
    fn unknown_names_list_the_known_ones_and_where_they_were_looked_for() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("v.toml"), FILE).unwrap();
        let c = Catalogue::new(Some((tmp.path().to_path_buf(), "$INFOMAX_EXPERIMENTS".into())), &[ONE]).unwrap();
        let err = c.resolve("w").unwrap_err().to_string();
        let dir = tmp.path().display().to_string();
        let known = format!("known names in {dir}: v; further built-in names: t");
        for part in ["no experiment named `w`", "named by $INFOMAX_EXPERIMENTS", "1 built-in", &known] {
            assert!(err.contains(part), "{part} in {err}");
        }
        let err = Catalogue::new(None, &[ONE]).unwrap().resolve("x").unwrap_err().to_string();
        assert!(err.contains("no experiments directory") && err.contains("known names (built in): t"), "{err}");
        let err = c.resolve("builtin:v").unwrap_err().to_string();
        assert!(err.contains("no built-in experiment named `v`") && err.contains("built in: t"), "{err}");
        let err = c.resolve("t.toml").unwrap_err().to_string();
        assert!(
            err.contains("no such experiment file") && err.contains("the name `t` alone finds the built-in t.toml"),
            "{err}"
        );
        let missing = tmp.path().join("absent");
        let err = Catalogue::new(Some((missing, "--experiments".into())), &[ONE]).unwrap_err().to_string();
        assert!(err.contains("--experiments") && err.contains("no such directory"), "{err}");
    }

    /// The same text plans the same runs whether it is read from a file or built in: no run's
    /// identity depends on where its experiment file came from.
    #[test]
    fn a_built_in_file_plans_the_runs_of_the_same_file_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("t.toml"), FILE).unwrap();
        let on_disk = Catalogue::new(Some((tmp.path().to_path_buf(), "--experiments".into())), &[ONE]).unwrap();
        let built_in = Catalogue::new(None, &[ONE]).unwrap();
        for profile in ["smoke", "other"] {
            let hashes = |c: &Catalogue| -> Vec<String> {
                let file = c.resolve("t").unwrap().load().unwrap();
                crate::plan::plan(&file, profile, &[], &Default::default())
                    .unwrap()
                    .iter()
                    .map(|r| r.config.hash())
                    .collect()
            };
            assert_eq!(hashes(&on_disk), hashes(&built_in));
        }
    }
}
