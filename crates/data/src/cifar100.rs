//! CIFAR-100 in either of its two official layouts:
//!
//! - binary version: `cifar-100-binary/train.bin` (50,000 records) and `test.bin` (10,000), each
//!   record a coarse-label byte, a fine-label byte and 3,072 pixel bytes (R, G, B planes,
//!   row-major 32×32); `coarse_label_names.txt` (20) and `fine_label_names.txt` (100);
//! - python version, as torchvision downloads it: `cifar-100-python/train` and `test`, each a
//!   pickled dict of `data` (a uint8 array with one row of the same 3,072 bytes per image),
//!   `fine_labels` and `coarse_labels`; `meta` with `fine_label_names` and `coarse_label_names`
//!   (read by this crate's `pickle` module).
//!
//! [`load`] reads the layout [`Dataset::found`] picks: the binary one when both are present.

use std::path::Path;

use crate::files::{read_names, require_dir, CifarLayouts, Expected};
use crate::pickle::BatchSpec;
use crate::{Dataset, Error, ImageSet, Layout, Result, Split};

pub const NAME: &str = "cifar100";
pub const DIR: &str = "cifar-100-binary";
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
/// The python version's folder, as torchvision downloads it.
pub const PYTHON_DIR: &str = "cifar-100-python";
/// The python version's archive (what torchvision downloads).
pub const PYTHON_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz";
pub const SIDE: usize = 32;
pub const RECORD_LEN: usize = 2 + 3 * SIDE * SIDE;
pub const FINE: usize = 100;
pub const COARSE: usize = 20;

const LAYOUTS: CifarLayouts =
    CifarLayouts { name: NAME, dir: DIR, url: URL, python_dir: PYTHON_DIR, python_url: PYTHON_URL };

/// The file of a split and its record count.
pub fn file(split: Split) -> Option<(&'static str, usize)> {
    match split {
        Split::Train => Some(("train.bin", 50_000)),
        Split::Test => Some(("test.bin", 10_000)),
        Split::Unlabeled => None,
    }
}

/// Load a split from the layout [`Dataset::found`] picks (the binary version when both are
/// present): fine labels as the classes, coarse labels beside them.
pub fn load(root: &Path, split: Split) -> Result<ImageSet> {
    match Dataset::Cifar100.found(root) {
        Some((Layout::Python, _)) => load_python(root, split),
        _ => load_binary(root, split),
    }
}

/// Load a split of the binary version, checking the file's size and every label.
pub fn load_binary(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join(DIR);
    let hint = LAYOUTS.hint(root);
    let (name, records) = file(split).expect("Dataset::load checks the split");
    require_dir(NAME, &dir, "train.bin, test.bin, coarse_label_names.txt, fine_label_names.txt", &hint)?;
    let path = dir.join(name);
    let bytes = Expected { dataset: NAME, records, record_len: RECORD_LEN, hint: &hint }.read(&path)?;
    let fine_names = read_names(NAME, &dir.join("fine_label_names.txt"), FINE, &hint)?;
    let coarse_names = read_names(NAME, &dir.join("coarse_label_names.txt"), COARSE, &hint)?;
    let mut pixels = Vec::with_capacity(records * (RECORD_LEN - 2));
    let (mut fine, mut coarse) = (Vec::with_capacity(records), Vec::with_capacity(records));
    for (record, chunk) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        for (label, classes) in [(chunk[0], COARSE), (chunk[1], FINE)] {
            if label as usize >= classes {
                return Err(Error::Label { dataset: NAME, path, record, label, classes });
            }
        }
        coarse.push(chunk[0]);
        fine.push(chunk[1]);
        pixels.extend_from_slice(&chunk[2..]);
    }
    let mut set = ImageSet::new(NAME, split, (SIDE, SIDE), pixels, fine, fine_names);
    set.coarse_labels = coarse;
    set.coarse_names = coarse_names;
    Ok(set)
}

/// Load a split of the python version (`train` or `test`, the binary names without `.bin`),
/// checking the array's type and shape and every label.
pub fn load_python(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join(PYTHON_DIR);
    let hint = LAYOUTS.python_hint(root);
    let (name, records) = file(split).expect("Dataset::load checks the split");
    let name = name.trim_end_matches(".bin");
    require_dir(NAME, &dir, "train, test, meta", &hint)?;
    let spec = BatchSpec {
        dataset: NAME,
        images: records,
        image_len: RECORD_LEN - 2,
        labels: &[("fine_labels", FINE), ("coarse_labels", COARSE)],
        hint: &hint,
    };
    let batch = spec.read(&dir.join(name))?;
    let mut names = crate::pickle::read_names(
        NAME,
        &dir.join("meta"),
        &[("fine_label_names", FINE), ("coarse_label_names", COARSE)],
        &hint,
    )?;
    let [fine, coarse] = <[Vec<u8>; 2]>::try_from(batch.labels).expect("one list per BatchSpec label");
    let coarse_names = names.pop().expect("two name lists");
    let fine_names = names.pop().expect("two name lists");
    let mut set = ImageSet::new(NAME, split, (SIDE, SIDE), batch.pixels, fine, fine_names);
    set.coarse_labels = coarse;
    set.coarse_names = coarse_names;
    Ok(set)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A test split in the official layout: record r has coarse r % 20, fine r % 100, and its
    /// first red, green and blue bytes r, r + 1, r + 2 (mod 256).
    pub(crate) fn write_fixture(root: &Path) {
        let dir = root.join(DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = vec![0u8; 10_000 * RECORD_LEN];
        for (r, chunk) in bytes.chunks_mut(RECORD_LEN).enumerate() {
            chunk[0] = (r % COARSE) as u8;
            chunk[1] = (r % FINE) as u8;
            chunk[2] = r as u8;
            chunk[2 + 1024] = (r + 1) as u8;
            chunk[2 + 2048] = (r + 2) as u8;
        }
        std::fs::write(dir.join("test.bin"), bytes).unwrap();
        let names = |n: usize, p: &str| (0..n).map(|i| format!("{p}{i}\n")).collect::<String>();
        std::fs::write(dir.join("fine_label_names.txt"), names(FINE, "fine")).unwrap();
        std::fs::write(dir.join("coarse_label_names.txt"), names(COARSE, "coarse")).unwrap();
    }

    #[test]
    fn reads_fine_and_coarse_labels_and_planes() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path());
        let set = load(tmp.path(), Split::Test).unwrap();
        assert_eq!(set.len(), 10_000);
        assert_eq!((set.labels[123], set.coarse_labels[123]), (23, 3));
        assert_eq!(set.class_names[23], "fine23");
        assert_eq!(set.coarse_names[3], "coarse3");
        let img = set.image(123);
        assert_eq!((img[0], img[1024], img[2048]), (123, 124, 125));
        assert_eq!(set.class_counts(), vec![100; 100]);
    }

    #[test]
    fn truncated_and_mislabelled_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path());
        let path = tmp.path().join(DIR).join("test.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[42 * RECORD_LEN + 1] = 100;
        std::fs::write(&path, &bytes).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("test.bin") && err.contains("record 42 has label 100, expected 0..100"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("expected 30740000 bytes") && err.contains("10000 records of 3074 bytes"), "{err}");
        let err = load(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("train.bin") && err.contains("datasets fetch cifar100"), "{err}");
    }

    /// The python version of the test split under `root`, holding `write_fixture`'s records as
    /// Python 2's cPickle wrote the official files, and its `meta`.
    pub(crate) fn write_python_fixture(root: &Path) {
        let bin = tempfile::tempdir().unwrap();
        write_fixture(bin.path());
        let bytes = std::fs::read(bin.path().join(DIR).join("test.bin")).unwrap();
        let records = bytes.chunks_exact(RECORD_LEN);
        let coarse: Vec<u8> = records.clone().map(|r| r[0]).collect();
        let fine: Vec<u8> = records.clone().map(|r| r[1]).collect();
        let pixels: Vec<u8> = records.flat_map(|r| &r[2..]).copied().collect();
        let dir = root.join(PYTHON_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("test"),
            crate::pickle::py2::cifar100_batch(&pixels, &fine, &coarse, "testing batch 1 of 1"),
        )
        .unwrap();
        write_meta(root, FINE);
    }

    /// `meta` with `fine` fine names and the 20 coarse ones.
    fn write_meta(root: &Path, fine: usize) {
        use crate::pickle::py2::{dict, Item};
        let names = |n: usize, p: &str| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
        let meta = dict(&[
            ("fine_label_names", Item::Strs(&names(fine, "fine"))),
            ("coarse_label_names", Item::Strs(&names(COARSE, "coarse"))),
        ]);
        std::fs::write(root.join(PYTHON_DIR).join("meta"), meta).unwrap();
    }

    #[test]
    fn the_python_version_reads_like_the_binary_version() {
        let tmp = tempfile::tempdir().unwrap();
        let (bin_root, py_root) = (tmp.path().join("bin"), tmp.path().join("py"));
        write_fixture(&bin_root);
        write_python_fixture(&py_root);
        let (want, got) = (load(&bin_root, Split::Test).unwrap(), load(&py_root, Split::Test).unwrap());
        assert_eq!(got.len(), 10_000);
        assert!(got.pixels == want.pixels, "pixels differ");
        assert_eq!((&got.labels, &got.coarse_labels), (&want.labels, &want.coarse_labels));
        assert_eq!((&got.class_names, &got.coarse_names), (&want.class_names, &want.coarse_names));
        let img = got.image(123);
        assert_eq!((img[0], img[1024], img[2048], got.labels[123], got.coarse_labels[123]), (123, 124, 125, 23, 3));
    }

    #[test]
    fn a_broken_python_file_or_meta_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        write_python_fixture(tmp.path());
        let dir = tmp.path().join(PYTHON_DIR);
        let err = load(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains(&dir.join("train").display().to_string()) && err.contains("50000 images"), "{err}");
        assert!(err.contains(PYTHON_URL), "{err}");
        write_meta(tmp.path(), 99);
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("meta") && err.contains("`fine_label_names` has 99 names, expected 100"), "{err}");
        std::fs::remove_file(dir.join("meta")).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("`coarse_label_names` (20 names)"), "{err}");
        write_meta(tmp.path(), FINE);
        let whole = std::fs::read(dir.join("test")).unwrap();
        // Cut inside the label lists, after all the pixels.
        std::fs::write(dir.join("test"), &whole[..whole.len() - 200_000]).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains(&dir.join("test").display().to_string()), "{err}");
    }
}
