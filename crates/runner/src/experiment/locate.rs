//! Finding an experiment file by name or path, and suggesting the closest known name.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

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
    let known = known_experiments(experiments_dir);
    Err(Error::Experiment {
        path: candidate,
        what: format!(
            "no experiment named `{name_or_path}`{}; known in {}: {}",
            did_you_mean(name_or_path, known.iter().map(String::as_str)),
            experiments_dir.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ),
    })
}

/// The experiment names (file stems) in a folder, sorted.
pub fn known_experiments(experiments_dir: &Path) -> Vec<String> {
    let mut known: Vec<String> = std::fs::read_dir(experiments_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
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
