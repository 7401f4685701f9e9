//! CIFAR-10 in either of its two official layouts:
//!
//! - binary version: `cifar-10-batches-bin/data_batch_{1..5}.bin` and `test_batch.bin`, each
//!   10,000 records of one label byte and 3,072 pixel bytes (1,024 R, then G, then B, each plane
//!   row-major 32×32), plus `batches.meta.txt` with the class names;
//! - python version, as torchvision downloads it: `cifar-10-batches-py/data_batch_{1..5}` and
//!   `test_batch`, each a pickled dict of `data` (a uint8 array of 10,000 rows of the same 3,072
//!   bytes) and `labels`, plus `batches.meta` with `label_names` (read by this crate's `pickle` module).
//!
//! [`load`] reads the layout [`Dataset::found`] picks: the binary one when both are present.

use std::path::Path;

use crate::files::{read_names, require_dir, CifarLayouts, Expected};
use crate::pickle::BatchSpec;
use crate::{Dataset, Error, ImageSet, Layout, Result, Split};

pub const NAME: &str = "cifar10";
pub const DIR: &str = "cifar-10-batches-bin";
/// The python version's folder, as torchvision downloads it.
pub const PYTHON_DIR: &str = "cifar-10-batches-py";
/// The python version's archive (what torchvision downloads).
pub const PYTHON_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz";
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

const LAYOUTS: CifarLayouts =
    CifarLayouts { name: NAME, dir: DIR, url: URL, python_dir: PYTHON_DIR, python_url: PYTHON_URL };

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

/// The python version's files of a split, in order: the binary names without `.bin`.
pub fn python_files(split: Split) -> Vec<&'static str> {
    files(split).into_iter().map(|f| f.trim_end_matches(".bin")).collect()
}

/// Check that every file of a split exists with exactly the official size, without reading it.
pub fn check(root: &Path, split: Split) -> Result<()> {
    let dir = root.join(DIR);
    let hint = LAYOUTS.hint(root);
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
    read_names(NAME, &path, CLASSES, &LAYOUTS.hint(root))
}

/// Load a split from the layout [`Dataset::found`] picks (the binary version when both are present).
pub fn load(root: &Path, split: Split) -> Result<ImageSet> {
    match Dataset::Cifar10.found(root) {
        Some((Layout::Python, _)) => load_python(root, split),
        _ => load_binary(root, split),
    }
}

/// Load a split of the binary version, checking every file's size and every label.
pub fn load_binary(root: &Path, split: Split) -> Result<ImageSet> {
    check(root, split)?;
    let dir = root.join(DIR);
    let hint = LAYOUTS.hint(root);
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

/// Load a split of the python version, checking every array's type and shape and every label.
pub fn load_python(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join(PYTHON_DIR);
    let hint = LAYOUTS.python_hint(root);
    let files = python_files(split);
    require_dir(NAME, &dir, &files.join(", "), &hint)?;
    let spec = BatchSpec {
        dataset: NAME,
        images: RECORDS_PER_FILE,
        image_len: RECORD_LEN - 1,
        labels: &[("labels", CLASSES)],
        hint: &hint,
    };
    let n = files.len() * RECORDS_PER_FILE;
    let mut pixels = Vec::with_capacity(n * (RECORD_LEN - 1));
    let mut labels = Vec::with_capacity(n);
    for f in files {
        let batch = spec.read(&dir.join(f))?;
        pixels.extend_from_slice(&batch.pixels);
        labels.extend_from_slice(&batch.labels[0]);
    }
    let meta = dir.join("batches.meta");
    let class_names = if meta.exists() {
        crate::pickle::read_names(NAME, &meta, &[("label_names", CLASSES)], &hint)?.remove(0)
    } else {
        DEFAULT_CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    };
    Ok(ImageSet::new(NAME, split, (SIDE, SIDE), pixels, labels, class_names))
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

    /// The python version of `split` under `root`, holding the records of the binary files
    /// `binary` (one pickled batch per binary file, as Python 2's cPickle wrote them), and a
    /// `batches.meta` with `names` when given.
    pub(crate) fn write_python(root: &Path, split: Split, binary: &[Vec<u8>], names: Option<&[String]>) {
        let dir = root.join(PYTHON_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (f, bytes)) in python_files(split).into_iter().zip(binary).enumerate() {
            let labels: Vec<u8> = bytes.chunks_exact(RECORD_LEN).map(|r| r[0]).collect();
            let pixels: Vec<u8> = bytes.chunks_exact(RECORD_LEN).flat_map(|r| &r[1..]).copied().collect();
            let pickle = crate::pickle::py2::cifar10_batch(&pixels, &labels, &format!("batch {} of 5", i + 1));
            std::fs::write(dir.join(f), pickle).unwrap();
        }
        if let Some(names) = names {
            use crate::pickle::py2::{dict, Item};
            let meta = dict(&[
                ("num_cases_per_batch", Item::Int(10_000)),
                ("label_names", Item::Strs(names)),
                ("num_vis", Item::Int(3072)),
            ]);
            std::fs::write(dir.join("batches.meta"), meta).unwrap();
        }
    }

    /// The shared data root when it holds the binary CIFAR-10 (CI points INFOMAX_DATA at it).
    fn shared_root() -> Option<std::path::PathBuf> {
        // Tests run from the crate's folder: a relative INFOMAX_DATA is read from the workspace root.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = workspace.join(crate::root::data_root(None));
        root.join(DIR).is_dir().then_some(root)
    }

    #[test]
    fn the_python_version_reads_like_the_binary_version() {
        let tmp = tempfile::tempdir().unwrap();
        let (bin_root, py_root) = (tmp.path().join("bin"), tmp.path().join("py"));
        write_split(&bin_root, Split::Train, |_| RECORDS_PER_FILE * RECORD_LEN);
        // Tell the five files apart: file i's first green pixels hold i.
        let binary: Vec<Vec<u8>> = files(Split::Train)
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let path = bin_root.join(DIR).join(f);
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.chunks_mut(RECORD_LEN).for_each(|r| r[1 + 1024] = i as u8);
                std::fs::write(&path, &bytes).unwrap();
                bytes
            })
            .collect();
        write_python(&py_root, Split::Train, &binary, None);
        assert_eq!(Dataset::Cifar10.found(&py_root), Some((Layout::Python, PYTHON_DIR)));
        let (want, got) = (load(&bin_root, Split::Train).unwrap(), load(&py_root, Split::Train).unwrap());
        assert_eq!(got.len(), 50_000);
        assert!(got.pixels == want.pixels && got.labels == want.labels);
        assert_eq!(got.image(3 * 10_000 + 7)[1024], 3);
        assert_eq!(got.class_names, want.class_names, "the official names without batches.meta");
        let names: Vec<String> = (0..CLASSES).map(|i| format!("class {i}")).collect();
        write_python(&py_root, Split::Train, &binary[..0], Some(&names));
        assert_eq!(load(&py_root, Split::Train).unwrap().class_names, names);
    }

    /// The real CIFAR-10's test split (its 10,000 images), pickled as torchvision's files are,
    /// reads back exactly as the binary reader reads it.
    #[test]
    fn real_cifar10_pickled_reads_like_the_binary_version() {
        let Some(shared) = shared_root() else {
            eprintln!("the data root has no CIFAR-10: nothing to check");
            return;
        };
        let binary = std::fs::read(shared.join(DIR).join("test_batch.bin")).unwrap();
        let want = load_binary(&shared, Split::Test).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        write_python(tmp.path(), Split::Test, &[binary], Some(&want.class_names));
        let got = load(tmp.path(), Split::Test).unwrap();
        assert_eq!(got.len(), 10_000);
        assert!(got.pixels == want.pixels, "pixels differ");
        assert_eq!(got.labels, want.labels);
        assert_eq!(got.class_names, want.class_names);
        assert_eq!(got.class_counts(), vec![1000; 10]);
    }

    #[test]
    fn a_broken_python_batch_names_the_file_what_was_expected_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_python(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains(PYTHON_DIR) && err.contains("test_batch") && err.contains(PYTHON_URL), "{err}");
        let records: Vec<u8> = (0..RECORDS_PER_FILE * RECORD_LEN).map(|i| (i % RECORD_LEN % 10) as u8).collect();
        write_python(tmp.path(), Split::Test, &[records], None);
        let path = tmp.path().join(PYTHON_DIR).join("test_batch");
        let whole = std::fs::read(&path).unwrap();

        std::fs::write(&path, &whole[..whole.len() - 100]).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("truncated") && err.contains("datasets fetch cifar10"), "{err}");
        std::fs::write(&path, &whole[..1000]).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("1000 bytes, fewer than 30720000") && err.contains("truncated"), "{err}");

        use crate::pickle::py2::{dict, Item};
        let pixels = vec![0u8; RECORDS_PER_FILE * 3072];
        let labels = vec![1i64; RECORDS_PER_FILE - 1];
        let data = Item::Array { dtype: "u1", shape: &[RECORDS_PER_FILE, 3072], data: &pixels };
        std::fs::write(&path, dict(&[("data", data), ("labels", Item::Ints(&labels))])).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("`labels` has 9999 entries, expected 10000 (one per image)"), "{err}");
        let rows: Vec<u8> = vec![0; 5_000 * 2 * 3072];
        std::fs::write(&path, crate::pickle::py2::cifar10_batch(&rows, &vec![1u8; 5_000], "b")).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("`data` has shape (5000, 6144), expected (10000, 3072)"), "{err}");
    }
}
