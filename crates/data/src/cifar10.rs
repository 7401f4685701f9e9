//! CIFAR-10, binary version: `cifar-10-batches-bin/data_batch_{1..5}.bin` and `test_batch.bin`,
//! each 10,000 records of one label byte and 3,072 pixel bytes (1,024 R, then G, then B, each
//! plane row-major 32×32), plus `batches.meta.txt` with the class names.

use std::path::Path;

use crate::files::{fetch_hint, read_names, require_dir, Expected};
use crate::{Error, ImageSet, Result, Split};

pub const NAME: &str = "cifar10";
pub const DIR: &str = "cifar-10-batches-bin";
pub const SIDE: usize = 32;
pub const RECORD_LEN: usize = 1 + 3 * SIDE * SIDE;
pub const RECORDS_PER_FILE: usize = 10_000;
pub const CLASSES: usize = 10;
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Per-channel mean and std used by the W-MSE code for CIFAR-10.
pub const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const STD: [f32; 3] = [0.2023, 0.1994, 0.2010];

const DEFAULT_CLASS_NAMES: [&str; CLASSES] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

fn hint(root: &Path) -> String {
    fetch_hint(NAME, URL, root, DIR)
}

fn expected(hint: &str) -> Expected<'_> {
    Expected { dataset: NAME, records: RECORDS_PER_FILE, record_len: RECORD_LEN, hint }
}

/// The batch files of a split, in order.
pub fn files(split: Split) -> Vec<&'static str> {
    match split {
        Split::Train => {
            vec!["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
        }
        Split::Test => vec!["test_batch.bin"],
        Split::Unlabeled => Vec::new(),
    }
}

/// Check that every file of a split exists with exactly the official size, without reading it.
pub fn check(root: &Path, split: Split) -> Result<()> {
    let dir = root.join(DIR);
    let hint = hint(root);
    require_dir(NAME, &dir, &files(split).join(", "), &hint)?;
    for f in files(split) {
        expected(&hint).check(&dir.join(f))?;
    }
    Ok(())
}

/// Read the class names from `batches.meta.txt`, or the official names when it is absent.
fn class_names(root: &Path) -> Result<Vec<String>> {
    let path = root.join(DIR).join("batches.meta.txt");
    if !path.exists() {
        return Ok(DEFAULT_CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    }
    read_names(NAME, &path, CLASSES, &hint(root))
}

/// Load a split, checking every file's size and every label.
pub fn load(root: &Path, split: Split) -> Result<ImageSet> {
    check(root, split)?;
    let dir = root.join(DIR);
    let hint = hint(root);
    let files = files(split);
    let n = files.len() * RECORDS_PER_FILE;
    let mut pixels = Vec::with_capacity(n * (RECORD_LEN - 1));
    let mut labels = Vec::with_capacity(n);
    for f in files {
        let path = dir.join(f);
        let bytes = expected(&hint).read(&path)?;
        for (record, chunk) in bytes.chunks_exact(RECORD_LEN).enumerate() {
            let label = chunk[0];
            if label as usize >= CLASSES {
                return Err(Error::Label { dataset: NAME, path, record, label, classes: CLASSES });
            }
            labels.push(label);
            pixels.extend_from_slice(&chunk[1..]);
        }
    }
    Ok(ImageSet::new(NAME, split, (SIDE, SIDE), pixels, labels, class_names(root)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_split(root: &Path, split: Split, len_of: impl Fn(&str) -> usize) {
        let dir = root.join(DIR);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files(split) {
            let len = len_of(f);
            let mut bytes = vec![0u8; len];
            for (r, chunk) in bytes.chunks_mut(RECORD_LEN).enumerate() {
                chunk[0] = (r % CLASSES) as u8;
                if chunk.len() > 1 {
                    chunk[1] = r as u8; // first red pixel
                }
            }
            std::fs::write(dir.join(f), bytes).unwrap();
        }
    }

    #[test]
    fn reads_records_in_order_with_planar_pixels() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), Split::Test, |_| RECORDS_PER_FILE * RECORD_LEN);
        let set = load(tmp.path(), Split::Test).unwrap();
        assert_eq!(set.len(), 10_000);
        assert_eq!(set.labels[13], 3);
        assert_eq!(set.image(13)[0], 13);
        assert_eq!(set.image(13).len(), 3072);
        assert_eq!(set.class_counts(), vec![1000; 10]);
        assert_eq!(set.class_names[0], "airplane");
    }

    #[test]
    fn truncated_file_names_path_and_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), Split::Test, |_| 5 * RECORD_LEN);
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("test_batch.bin"), "{err}");
        assert!(err.contains("15365 bytes"), "{err}");
        assert!(err.contains("expected 30730000 bytes"), "{err}");
        assert!(err.contains(URL), "{err}");
    }

    #[test]
    fn missing_folder_and_missing_file_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains(DIR) && err.contains("datasets fetch cifar10"), "{err}");
        write_split(tmp.path(), Split::Test, |_| RECORDS_PER_FILE * RECORD_LEN);
        let err = load(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("data_batch_1.bin") && err.contains("30730000 bytes"), "{err}");
    }

    #[test]
    fn out_of_range_label_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), Split::Test, |_| RECORDS_PER_FILE * RECORD_LEN);
        let path = tmp.path().join(DIR).join("test_batch.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[7 * RECORD_LEN] = 10;
        std::fs::write(&path, bytes).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("record 7 has label 10"), "{err}");
    }

    /// The real dataset, when the data root holds it (CI points INFOMAX_DATA at it).
    #[test]
    fn real_cifar10_has_official_counts() {
        // Tests run from the crate's folder: a relative INFOMAX_DATA is read from the workspace root.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = workspace.join(crate::root::data_root(None));
        if std::env::var_os(crate::root::DATA_ENV).is_none() && !root.join(DIR).exists() {
            eprintln!("INFOMAX_DATA not set and ./datasets has no CIFAR-10: nothing to check");
            return;
        }
        let train = load(&root, Split::Train).unwrap();
        let test = load(&root, Split::Test).unwrap();
        assert_eq!(train.len(), 50_000);
        assert_eq!(test.len(), 10_000);
        assert_eq!(train.class_counts(), vec![5000; 10]);
        assert_eq!(test.class_counts(), vec![1000; 10]);
        assert_eq!(train.class_names[9], "truck");
    }
}
