//! Where the commands read and write: the global `--data-dir` and `--db`, and the `--out` folder
//! of the commands that render HTML.

use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Args)]
pub struct Paths {
    /// Dataset root [default: $INFOMAX_DATA, else ./datasets].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Results database (SQLite).
    #[arg(long, global = true, value_name = "FILE", default_value = "reports/results.sqlite")]
    pub db: PathBuf,
}

impl Paths {
    /// The dataset root: `--data-dir`, else `$INFOMAX_DATA`, else `./datasets`.
    pub fn data_root(&self) -> PathBuf {
        infomax_data::root::data_root(self.data_dir.clone())
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
    /// Folder the HTML report is written to [default: the database's folder, so
    /// reports/results.sqlite renders into reports/].
    #[arg(long = "out", value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl HtmlDir {
    /// The pages go beside the database they show unless `--out` says otherwise: a second
    /// database (`--db other/results.sqlite`) never overwrites the report of the first.
    pub fn for_db(&self, db: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
    }
}
