//! CIFAR-100, binary version: `cifar-100-binary/train.bin` (50,000 records) and `test.bin`
//! (10,000), each record a coarse-label byte, a fine-label byte and 3,072 pixel bytes (R, G, B
//! planes, row-major 32×32); `coarse_label_names.txt` (20) and `fine_label_names.txt` (100).

use std::path::Path;

use crate::files::{fetch_hint, read_names, require_dir, Expected};
use crate::{Error, ImageSet, Result, Split};

pub const NAME: &str = "cifar100";
pub const DIR: &str = "cifar-100-binary";
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
pub const SIDE: usize = 32;
pub const RECORD_LEN: usize = 2 + 3 * SIDE * SIDE;
pub const FINE: usize = 100;
pub const COARSE: usize = 20;

fn hint(root: &Path) -> String {
    fetch_hint(NAME, URL, root, DIR)
}

/// The file of a split and its record count.
pub fn file(split: Split) -> Option<(&'static str, usize)> {
    match split {
        Split::Train => Some(("train.bin", 50_000)),
        Split::Test => Some(("test.bin", 10_000)),
        Split::Unlabeled => None,
    }
}

/// Load a split: fine labels as the classes, coarse labels beside them.
pub fn load(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join(DIR);
    let hint = hint(root);
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

#[cfg(test)]
mod tests {
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
}
