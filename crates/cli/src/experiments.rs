//! The experiment files built into the binary, and `infomax experiments list`: each name a
//! command takes, its title, and the file it resolves to.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use infomax_runner::experiment::{BuiltIn, Catalogue};

/// The workspace's `experiments/*.toml` at build time (see build.rs), sorted by file name: an
/// `infomax` installed anywhere finds the shipped experiments without a checkout.
pub static BUILT_IN: &[BuiltIn] = include!(concat!(env!("OUT_DIR"), "/builtin_experiments.rs"));

#[derive(Subcommand)]
pub enum ExperimentsCommand {
    /// Each experiment name, its title, and the file it resolves to: a path in the experiments
    /// directory (--experiments, $INFOMAX_EXPERIMENTS, else ./experiments), or "built in".
    ///
    /// A file in the directory shadows the built-in of its name (marked "shadows the built-in");
    /// `builtin:NAME` still reaches the built-in one.
    List,
}

pub fn run(cmd: ExperimentsCommand, catalogue: &Catalogue) -> Result<ExitCode> {
    match cmd {
        ExperimentsCommand::List => {
            print!("{}", list_text(catalogue));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The table `experiments list` prints: where names were looked up, then a row per name.
fn list_text(catalogue: &Catalogue) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "experiments from {}", catalogue.searched());
    let rows: Vec<[String; 3]> = catalogue
        .list()
        .into_iter()
        .map(|entry| {
            // A file that does not parse is listed with its error rather than hiding the others.
            let title = match entry.load() {
                Ok(file) => file.meta.title,
                Err(e) => format!("(does not parse: {})", e.to_string().lines().next().unwrap_or_default()),
            };
            let mut place = entry.place();
            if entry.shadows_builtin {
                place.push_str(" (shadows the built-in)");
            }
            [entry.name, title, place]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no experiments\n");
        return out;
    }
    let header = ["NAME", "TITLE", "FILE"].map(String::from);
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (name_w, title_w) = (width(0), width(1));
    for [name, title, place] in [&header].into_iter().chain(&rows) {
        let _ = writeln!(out, "{name:name_w$}  {title:title_w$}  {place}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The built-in set is the workspace's experiments/ byte for byte, so a built-in file plans
    /// exactly the runs (and run identities) of the same file on disk.
    #[test]
    fn the_built_in_set_is_the_workspace_experiments_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let names = infomax_runner::experiment::known_experiments(&dir);
        assert_eq!(BUILT_IN.iter().map(|b| b.name()).collect::<Vec<_>>(), names);
        for b in BUILT_IN {
            assert_eq!(b.text, std::fs::read_to_string(dir.join(b.file_name)).unwrap(), "{}", b.file_name);
        }
        assert!(names.iter().any(|n| n == "smoke"));
    }
}
