//! Packed caches of decoded images: written once, checked on every read, never trusted blindly.
//!
//! Layout (little-endian): magic `INFOMAXP`, format version `u32`, the 32-byte fingerprint of the
//! source files, image count `u64`, bytes per image `u64`, then one little-endian `u16` label per image, then the
//! planar pixels. A cache is used only if its magic, version, fingerprint, count and total length
//! all match; anything else is ignored and rebuilt. It lives next to the data
//! (`<dataset>/.infomax-cache/`) when that folder is writable, else in the user's cache folder
//! (`$INFOMAX_CACHE`, `$XDG_CACHE_HOME/infomax` or `~/.cache/infomax`), so read-only data roots
//! work. Writes go to a temporary file renamed into place: a reader never sees half a cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Label, Result};

const MAGIC: &[u8; 8] = b"INFOMAXP";
/// Bump when the decoded pixels of the same files would differ (decoder, layout).
pub const VERSION: u32 = 3;
const HEADER: usize = 8 + 4 + 32 + 8 + 8;

/// A digest of the source files (path, label, size, modification time) in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of_files<'a>(files: impl Iterator<Item = (&'a Path, Label)>) -> Result<Fingerprint> {
        let mut h = Sha256::new();
        for (path, label) in files {
            let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            h.update(path.as_os_str().as_encoded_bytes());
            h.update([0]);
            h.update(label.to_le_bytes());
            h.update(meta.len().to_le_bytes());
            h.update(mtime.to_le_bytes());
        }
        Ok(Fingerprint(h.finalize().into()))
    }

    /// The digest in hexadecimal, as records store it.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The user's cache folder for infomax.
pub fn user_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("INFOMAX_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("infomax")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("infomax")))
}

/// Where the cache `key` of the dataset folder `dir` may be, in order of preference.
pub fn locations(dir: &Path, key: &str) -> Vec<PathBuf> {
    locations_of(dir, &format!("{key}.v{VERSION}.bin"))
}

/// Where a cache file named `file` of the dataset folder `dir` may be, in order of preference.
fn locations_of(dir: &Path, file: &str) -> Vec<PathBuf> {
    let mut out = vec![dir.join(".infomax-cache").join(file)];
    if let Some(user) = user_cache_dir() {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let tag: String =
            Sha256::digest(abs.as_os_str().as_encoded_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
        out.push(user.join(format!("{}-{tag}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("data"))).join(file));
    }
    out
}

/// The cached (pixels, labels) when a valid cache for exactly these files exists.
pub fn read(dir: &Path, key: &str, fp: &Fingerprint, count: usize, image_len: usize) -> Option<(Vec<u8>, Vec<Label>)> {
    locations(dir, key).into_iter().find_map(|path| {
        let bytes = std::fs::read(&path).ok()?;
        let expected_len = HEADER + 2 * count + count * image_len;
        let valid = bytes.len() == expected_len
            && &bytes[..8] == MAGIC
            && bytes[8..12] == VERSION.to_le_bytes()
            && bytes[12..44] == fp.0
            && bytes[44..52] == (count as u64).to_le_bytes()
            && bytes[52..60] == (image_len as u64).to_le_bytes();
        if !valid {
            return None;
        }
        let labels =
            bytes[HEADER..HEADER + 2 * count].chunks_exact(2).map(|b| Label::from_le_bytes([b[0], b[1]])).collect();
        let mut pixels = bytes;
        pixels.drain(..HEADER + 2 * count);
        Some((pixels, labels))
    })
}

/// Write a cache at the first location that accepts it; returns where it went.
pub fn write(dir: &Path, key: &str, fp: &Fingerprint, pixels: &[u8], labels: &[Label]) -> Result<PathBuf> {
    let count = labels.len();
    let image_len = pixels.len() / count.max(1);
    write_first(locations(dir, key), |w| {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&fp.0)?;
        w.write_all(&(count as u64).to_le_bytes())?;
        w.write_all(&(image_len as u64).to_le_bytes())?;
        for label in labels {
            w.write_all(&label.to_le_bytes())?;
        }
        w.write_all(pixels)
    })
}

/// A small record about the dataset folder `dir` (its statistics, as JSON) that is valid while
/// the files it was measured on are, kept where its packed caches are: the first one found.
pub fn read_record(dir: &Path, name: &str) -> Option<(PathBuf, Vec<u8>)> {
    locations_of(dir, &format!("{name}.v{VERSION}.json"))
        .into_iter()
        .find_map(|path| std::fs::read(&path).ok().map(|bytes| (path, bytes)))
}

/// Write the record `name` of `dir` at the first location that accepts it; returns where it went.
pub fn write_record(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    write_first(locations_of(dir, &format!("{name}.v{VERSION}.json")), |w| w.write_all(bytes))
}

/// Write through a temporary file renamed into place at the first of `paths` that accepts it.
fn write_first(
    paths: Vec<PathBuf>,
    fill: impl Fn(&mut std::io::BufWriter<&mut tempfile::NamedTempFile>) -> std::io::Result<()>,
) -> Result<PathBuf> {
    let mut last_err = None;
    for path in paths {
        let attempt = (|| -> std::io::Result<()> {
            let parent = path.parent().expect("cache files sit in a folder");
            std::fs::create_dir_all(parent)?;
            let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
            let mut w = std::io::BufWriter::new(&mut tmp);
            fill(&mut w)?;
            w.flush()?;
            drop(w);
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
        match attempt {
            Ok(()) => return Ok(path),
            Err(source) => last_err = Some(Error::Io { path, source }),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Request("no cache location".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_mismatch_is_a_miss() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let fp = Fingerprint([7; 32]);
        let (pixels, labels) = ((0..24u8).collect::<Vec<_>>(), vec![1 as Label, 300]);
        let at = write(&dir, "k", &fp, &pixels, &labels).unwrap();
        assert!(at.starts_with(&dir), "next to the data when writable: {at:?}");
        assert_eq!(read(&dir, "k", &fp, 2, 12), Some((pixels.clone(), labels.clone())));
        assert_eq!(read(&dir, "k", &Fingerprint([8; 32]), 2, 12), None, "other files");
        assert_eq!(read(&dir, "k", &fp, 3, 12), None, "other count");
        let bytes = std::fs::read(&at).unwrap();
        std::fs::write(&at, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(read(&dir, "k", &fp, 2, 12), None, "truncated");
    }
}
