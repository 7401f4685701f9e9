//! File checks every loader shares: exact sizes, whole reads, class-name lists.

use std::path::Path;

use crate::{Error, Result};

/// What a binary file must be: `records` records of `record_len` bytes.
pub(crate) struct Expected<'a> {
    pub dataset: &'static str,
    pub records: usize,
    pub record_len: usize,
    pub hint: &'a str,
}

impl Expected<'_> {
    fn bytes(&self) -> u64 {
        (self.records * self.record_len) as u64
    }

    /// The file exists with exactly the expected size.
    pub fn check(&self, path: &Path) -> Result<()> {
        let meta = std::fs::metadata(path).map_err(|_| Error::Missing {
            dataset: self.dataset,
            path: path.to_path_buf(),
            expected: format!("{} bytes ({} records of {} bytes)", self.bytes(), self.records, self.record_len),
            hint: self.hint.to_string(),
        })?;
        if meta.len() != self.bytes() {
            return Err(Error::Size {
                dataset: self.dataset,
                path: path.to_path_buf(),
                actual: meta.len(),
                expected: self.bytes(),
                records: self.records,
                record_len: self.record_len,
                hint: self.hint.to_string(),
            });
        }
        Ok(())
    }

    /// The whole file, after checking its size (before and after reading).
    pub fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.check(path)?;
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        if bytes.len() as u64 != self.bytes() {
            self.check(path)?;
        }
        Ok(bytes)
    }
}

/// The folder a dataset lives in, or an error saying what it should hold and how to get it.
pub(crate) fn require_dir(dataset: &'static str, dir: &Path, holds: &str, hint: &str) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::Missing {
            dataset,
            path: dir.to_path_buf(),
            expected: format!("a folder with {holds}"),
            hint: hint.to_string(),
        })
    }
}

/// One name per non-empty line; exactly `count` of them.
pub(crate) fn read_names(dataset: &'static str, path: &Path, count: usize, hint: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|_| Error::Missing {
        dataset,
        path: path.to_path_buf(),
        expected: format!("{count} names, one per line"),
        hint: hint.to_string(),
    })?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != count {
        return Err(Error::Format {
            dataset,
            path: path.to_path_buf(),
            what: format!("expected {count} names, one per line, found {}", names.len()),
        });
    }
    Ok(names)
}

/// The hint every loader gives: the official archive and where its folder must end up.
/// The names and addresses of CIFAR's two layouts: the binary version infomax fetches and the
/// python version torchvision downloads.
pub(crate) struct CifarLayouts {
    pub name: &'static str,
    pub dir: &'static str,
    pub url: &'static str,
    pub python_dir: &'static str,
    pub python_url: &'static str,
}

impl CifarLayouts {
    /// What to do about a missing or broken binary version; while its folder is absent, a
    /// torchvision download is another way to get the dataset (once it exists, it takes
    /// precedence).
    pub fn hint(&self, root: &Path) -> String {
        let fetch = fetch_hint(self.name, self.url, root, self.dir);
        if root.join(self.dir).is_dir() {
            fetch
        } else {
            format!("{fetch}, or keep torchvision's download at {}", root.join(self.python_dir).display())
        }
    }

    /// What to do about a broken python-version folder (`datasets fetch` would not replace it).
    pub fn python_hint(&self, root: &Path) -> String {
        format!(
            "download {} again (or let torchvision do it) and extract it so that {} exists, or remove \
             that folder and run `infomax datasets fetch {}` for the binary version",
            self.python_url,
            root.join(self.python_dir).display(),
            self.name
        )
    }
}

pub(crate) fn fetch_hint(dataset: &'static str, url: &str, root: &Path, dir: &str) -> String {
    format!(
        "run `infomax datasets fetch {dataset}`, or download {url} and extract it so that {} exists",
        root.join(dir).display()
    )
}
