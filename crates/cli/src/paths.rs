//! Where the commands read and write: the global `--data-dir`, `--db` and `--experiments`, and
//! the `--out` folder of the commands that render HTML.

use std::path::{Path, PathBuf};

use clap::Args;
use infomax_runner::experiment::{Catalogue, Entry};

/// The default database; a database of its file name renders its report into its folder.
const DEFAULT_DB: &str = "reports/results.sqlite";

#[derive(Args)]
pub struct Paths {
    /// Dataset root [default: $INFOMAX_DATA, else ./datasets].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Results database (SQLite).
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// Directory of experiment files (NAME.toml is the experiment NAME) over the ones built into
    /// infomax: a name found there wins, the names it lacks stay built in, and `builtin:NAME`
    /// always means the built-in file [default: $INFOMAX_EXPERIMENTS, else ./experiments if it
    /// exists, else the built-in set alone].
    #[arg(long, global = true, value_name = "DIR", alias = "experiments-dir")]
    pub experiments: Option<PathBuf>,
}

impl Paths {
    /// The dataset root: `--data-dir`, else `$INFOMAX_DATA`, else `./datasets`.
    pub fn data_root(&self) -> PathBuf {
        infomax_data::root::data_root(self.data_dir.clone())
    }

    /// Where experiment names are looked up: `--experiments`, else `$INFOMAX_EXPERIMENTS`, else
    /// `./experiments` if it exists, over the built-in set (a directory named by the option or
    /// the variable must exist).
    pub fn catalogue(&self) -> anyhow::Result<Catalogue> {
        Ok(Catalogue::choose(self.experiments.as_deref(), crate::experiments::BUILT_IN)?)
    }

    /// The experiment a command's argument means (a name, `builtin:NAME` or a path), resolved by
    /// the one rule every command shares: [`Catalogue::resolve`].
    pub fn experiment(&self, name_or_path: &str) -> anyhow::Result<Entry> {
        Ok(self.catalogue()?.resolve(name_or_path)?)
    }

    /// The folder of the database's per-run checkpoints (`results.sqlite` → `results.checkpoints/`).
    pub fn checkpoints(&self) -> PathBuf {
        infomax_runner::store::checkpoints_of(&self.db)
    }
}

/// Where the HTML pages go: an option of the commands that render (not global, so that
/// `export --out FILE` and `datasets preview --out FILE.png` mean their own file).
#[derive(Args)]
pub struct HtmlDir {
    /// Folder the HTML report is written to [default: reports/results.sqlite renders into
    /// reports/, any other DIR/NAME.sqlite into DIR/NAME/].
    #[arg(long = "out", value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl HtmlDir {
    /// Where the pages of `db` go unless `--out` says: a database named `results.sqlite` into
    /// its folder, any other `NAME.sqlite` into the folder `NAME/` beside it, so that no two
    /// databases overwrite each other's report (`reports/a.sqlite` → `reports/a/`,
    /// `reports/results.sqlite` → `reports/`).
    pub fn for_db(&self, db: &Path) -> PathBuf {
        if let Some(dir) = &self.dir {
            return dir.clone();
        }
        let folder = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match db.file_stem() {
            Some(name) if name != Path::new(DEFAULT_DB).file_stem().expect("a file name") => folder.join(name),
            _ => folder,
        }
    }
}

/// Check that files can be written in `dir` (creating it), so a command fails before its work,
/// not after it, when its output folder is unwritable.
pub fn ensure_writable(dir: &Path, option: &str) -> anyhow::Result<()> {
    let probe = dir.join(format!(".infomax-write-check-{}", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b""))
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| anyhow::anyhow!("{option} {}: cannot write there: {e}", dir.display()))
}
