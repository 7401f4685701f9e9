//! `infomax datasets list` and `verify`: what is present, and a full integrity check of it.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};
use serde::Serialize;

use crate::folder::FolderDataset;
use crate::{Dataset, DatasetSpec, ImageFiles, Images, Layout, Result, Split, Unreadable};

/// One split as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    pub split: String,
    pub images: usize,
    pub expected_images: usize,
    /// Stored side in pixels; 0 for images kept at their own sizes (ImageNet's).
    pub side: usize,
    /// Fewest and most images of any class (labelled splits).
    pub class_min: Option<usize>,
    pub class_max: Option<usize>,
    pub expected_per_class: Option<usize>,
}

impl SplitReport {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.images != self.expected_images {
            out.push(format!("{}: {} images, expected {}", self.split, self.images, self.expected_images));
        }
        if let (Some(lo), Some(hi), Some(e)) = (self.class_min, self.class_max, self.expected_per_class) {
            if lo != e || hi != e {
                out.push(format!("{}: classes hold {lo}..{hi} images each, expected {e} each", self.split));
            }
        }
        out
    }
}

/// One file compared with its published checksum.
#[derive(Debug, Clone, Serialize)]
pub struct ChecksumReport {
    pub file: String,
    pub md5: String,
    pub official_md5: String,
    pub official: bool,
}

/// The outcome of `verify`: structural problems fail it; a checksum that differs from the
/// official release only says the copy is not byte-identical (a rebuilt copy can be sound).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dataset: String,
    /// The folder read (the one `datasets fetch` would create when the dataset is absent).
    pub path: String,
    /// The layout read from `path`; `None` when the dataset is absent.
    pub layout: Option<Layout>,
    /// Folders of other layouts that are present but not read, and why.
    pub notes: Vec<String>,
    pub splits: Vec<SplitReport>,
    pub checksums: Vec<ChecksumReport>,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// MD5 of a file, streamed.
pub fn md5_file(path: &Path) -> Result<String> {
    let io = |source| crate::Error::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Load every split (the loaders check sizes, counts and labels), check counts and class
/// balance against the official release, and compare file checksums with the published ones.
/// A split that fails to load is a problem in the report, not an early return, so one run of
/// `verify` lists everything that is wrong.
pub fn verify(dataset: &DatasetSpec, root: &Path) -> Result<VerifyReport> {
    match dataset {
        DatasetSpec::Builtin(d) => verify_builtin(*d, root),
        DatasetSpec::Folder(f) => Ok(verify_folder(f, root)),
    }
}

/// A split read from its files: every file decoded (each that fails is a problem, the first
/// few named), counts against the official release. Training classes of ImageNet are unequal
/// (732 to 1,300 images), validation classes hold 50 each.
fn verify_files(files: &ImageFiles, expected: usize, classes: usize, problems: &mut Vec<String>) -> SplitReport {
    use rayon::prelude::*;
    let failed: Vec<String> = files
        .files
        .par_iter()
        .filter_map(|p| crate::folder::decode_rgb(files.name, p).err().map(|e| e.to_string()))
        .collect();
    const NAMED: usize = 5;
    problems.extend(failed.iter().take(NAMED).cloned());
    if failed.len() > NAMED {
        problems.push(format!("{}: {} more images do not decode", files.split, failed.len() - NAMED));
    }
    let mut counts = vec![0usize; files.class_names.len()];
    files.labels.iter().for_each(|&l| counts[l as usize] += 1);
    SplitReport {
        split: files.split.to_string(),
        images: files.len(),
        expected_images: expected,
        side: 0,
        class_min: counts.iter().copied().min(),
        class_max: counts.iter().copied().max(),
        expected_per_class: (files.split == Split::Test).then(|| expected / classes),
    }
}

/// A folder dataset: both splits listed and decoded (every image, at its stored size), class
/// counts, and the files under the class folders that are not images.
fn verify_folder(folder: &FolderDataset, root: &Path) -> VerifyReport {
    let mut report = VerifyReport {
        dataset: folder.name().into(),
        path: folder.dir(root).display().to_string(),
        layout: Some(Layout::Folder),
        notes: Vec::new(),
        splits: Vec::new(),
        checksums: Vec::new(),
        problems: Vec::new(),
    };
    for split in [Split::Train, Split::Test] {
        let loaded = folder.listing(root, split).and_then(|l| Ok((folder.load(root, split)?, l.other_files)));
        match loaded {
            Ok((set, others)) => {
                let counts: Vec<usize> = set.class_counts().into_iter().filter(|&n| n > 0).collect();
                if let Some(first) = others.first() {
                    let files = if others.len() == 1 {
                        "1 file is not an image".into()
                    } else {
                        format!("{} files are not images", others.len())
                    };
                    report.notes.push(format!(
                        "{split}: {files} ({}) and not read, e.g. {}",
                        crate::folder::extensions_listed(),
                        first.display()
                    ));
                }
                report.splits.push(SplitReport {
                    split: split.to_string(),
                    images: set.len(),
                    expected_images: set.len(),
                    side: set.height,
                    class_min: counts.iter().copied().min(),
                    class_max: counts.iter().copied().max(),
                    expected_per_class: None,
                });
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    report
}

fn verify_builtin(dataset: Dataset, root: &Path) -> Result<VerifyReport> {
    let found = dataset.found(root);
    let dir = found.map_or(dataset.dir(), |(_, dir)| dir);
    let mut report = VerifyReport {
        dataset: dataset.name().into(),
        path: root.join(dir).display().to_string(),
        layout: found.map(|(layout, _)| layout),
        notes: unread_notes(dataset, root),
        splits: Vec::new(),
        checksums: Vec::new(),
        problems: Vec::new(),
    };
    let Some((layout, _)) = found else {
        let hint = dataset.how_to_get(root);
        report.problems.push(format!("{} is absent: {}", report.path, hint));
        return Ok(report);
    };
    for &(split, expected) in dataset.splits() {
        match dataset.open(root, split, Unreadable::default()) {
            Ok(Images::Files(files)) => {
                let r = verify_files(&files, expected, dataset.classes(), &mut report.problems);
                report.problems.extend(r.problems());
                report.splits.push(r);
            }
            Ok(Images::Decoded(set)) => {
                let counts = set.class_counts();
                let labelled = split != Split::Unlabeled;
                let r = SplitReport {
                    split: split.to_string(),
                    images: set.len(),
                    expected_images: expected,
                    side: set.height,
                    class_min: labelled.then(|| counts.iter().copied().min().unwrap_or(0)),
                    class_max: labelled.then(|| counts.iter().copied().max().unwrap_or(0)),
                    expected_per_class: labelled.then(|| expected / dataset.classes()),
                };
                report.problems.extend(r.problems());
                report.splits.push(r);
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    for (file, official) in dataset.official_md5s(layout) {
        let path = root.join(dir).join(file);
        if !path.exists() {
            continue; // already reported by the loader
        }
        let md5 = md5_file(&path)?;
        report.checksums.push(ChecksumReport {
            file: (*file).into(),
            official: md5 == *official,
            md5,
            official_md5: (*official).into(),
        });
    }
    Ok(report)
}

/// For each layout folder that is present but not read, a sentence saying which one is read.
fn unread_notes(dataset: Dataset, root: &Path) -> Vec<String> {
    let present = dataset.present_layouts(root);
    let Some(((read, read_dir), rest)) = present.split_first() else { return Vec::new() };
    rest.iter()
        .map(|(layout, dir)| {
            format!(
                "{} ({layout}) is present too and not read: {read_dir} ({read}) takes precedence when both exist",
                root.join(dir).display()
            )
        })
        .collect()
}

/// `datasets list`: one line of facts per dataset.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub dataset: String,
    pub present: bool,
    /// The folder read, or the one `datasets fetch` would create when the dataset is absent.
    pub path: String,
    /// The layout read from `path`; `None` when the dataset is absent.
    pub layout: Option<Layout>,
    /// Folders of other layouts that are present but not read, and why.
    pub notes: Vec<String>,
    pub splits: Vec<(String, usize)>,
    pub classes: usize,
    /// Stored side in pixels; 0 for images kept at their own sizes (ImageNet's).
    pub side: usize,
}

/// The built-in datasets, then each of `folders`.
pub fn list(root: &Path, folders: &[FolderDataset]) -> Vec<ListEntry> {
    let folders = folders.iter().map(|f| {
        let sizes = DatasetSpec::Folder(f.clone()).split_sizes(root);
        ListEntry {
            dataset: f.name().into(),
            present: f.dir(root).is_dir(),
            path: f.dir(root).display().to_string(),
            layout: Some(Layout::Folder),
            notes: Vec::new(),
            splits: sizes.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            classes: f.classes(root).map_or(0, |c| c.len()),
            side: f.image_size,
        }
    });
    builtin_entries(root).into_iter().chain(folders).collect()
}

fn builtin_entries(root: &Path) -> Vec<ListEntry> {
    Dataset::ALL
        .into_iter()
        .map(|d| ListEntry {
            dataset: d.name().into(),
            present: d.is_present(root),
            path: root.join(d.found(root).map_or(d.dir(), |(_, dir)| dir)).display().to_string(),
            layout: d.found(root).map(|(layout, _)| layout),
            notes: unread_notes(d, root),
            splits: d.splits().iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            classes: d.classes(),
            side: if d.imagenet_classes().is_some() { 0 } else { d.side() },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_a_known_string() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"The quick brown fox jumps over the lazy dog").unwrap();
        assert_eq!(md5_file(&p).unwrap(), "9e107d9d372bb6826bd81d3542a419d6");
    }

    #[test]
    fn a_partial_dataset_fails_with_every_problem_listed() {
        let tmp = tempfile::tempdir().unwrap();
        crate::stl10::tests::write_fixture(tmp.path(), Split::Train, 5_000);
        let r = verify(&Dataset::Stl10.into(), tmp.path()).unwrap();
        assert!(!r.passed());
        assert_eq!(r.splits.len(), 1, "train loaded: {:?}", r.splits);
        assert_eq!((r.splits[0].class_min, r.splits[0].class_max), (Some(500), Some(500)));
        assert!(r.problems.iter().any(|p| p.contains("test_y.bin")), "{:?}", r.problems);
        assert!(r.problems.iter().any(|p| p.contains("unlabeled_X.bin")), "{:?}", r.problems);
        let train = r.checksums.iter().find(|c| c.file == "train_X.bin").unwrap();
        assert!(!train.official, "a fixture is not the official file");
        let listed = list(tmp.path(), &[]);
        assert!(listed.iter().find(|e| e.dataset == "stl10").unwrap().present);
        assert!(!listed.iter().find(|e| e.dataset == "cifar100").unwrap().present);
    }

    #[test]
    fn verify_and_list_name_the_layout_read_and_any_other_present() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let absent = verify(&Dataset::Cifar100.into(), root).unwrap();
        assert_eq!(absent.layout, None);
        assert!(absent.problems[0].contains("cifar-100-python"), "{:?}", absent.problems);
        crate::cifar100::tests::write_python_fixture(root);
        let r = verify(&Dataset::Cifar100.into(), root).unwrap();
        assert_eq!((r.layout, r.path.ends_with("cifar-100-python")), (Some(Layout::Python), true));
        assert_eq!(r.splits.len(), 1, "test loaded: {:?}", r.problems);
        assert!(r.problems.iter().any(|p| p.contains("train")), "{:?}", r.problems);
        let test = r.checksums.iter().find(|c| c.file == "test").unwrap();
        assert_eq!((test.official, test.official_md5.as_str()), (false, "f0ef6b0ae62326f3e7ffdfab6717acfc"));
        assert!(r.notes.is_empty());
        let entry = list(root, &[]).into_iter().find(|e| e.dataset == "cifar100").unwrap();
        assert_eq!((entry.present, entry.layout), (true, Some(Layout::Python)));
        assert!(entry.path.ends_with("cifar-100-python"));

        crate::cifar100::tests::write_fixture(root);
        let r = verify(&Dataset::Cifar100.into(), root).unwrap();
        assert_eq!((r.layout, r.path.ends_with("cifar-100-binary")), (Some(Layout::Binary), true));
        assert_eq!(r.checksums[0].file, "test.bin");
        assert_eq!(r.notes.len(), 1);
        assert!(r.notes[0].contains("cifar-100-python (python version") && r.notes[0].contains("takes precedence"));
        let entry = list(root, &[]).into_iter().find(|e| e.dataset == "cifar100").unwrap();
        assert_eq!((entry.layout, entry.notes.len()), (Some(Layout::Binary), 1));
    }

    #[test]
    fn a_folder_is_verified_image_by_image_and_listed() {
        let tmp = tempfile::tempdir().unwrap();
        crate::folder::tests::write_fixture(&tmp.path().join("shots"), 2, 3);
        std::fs::write(tmp.path().join("shots/train/class_0/readme.md"), "x").unwrap();
        let folder = FolderDataset { image_size: 16, ..FolderDataset::at("shots") };
        let r = verify(&DatasetSpec::Folder(folder.clone()), tmp.path()).unwrap();
        assert!(r.passed(), "{:?}", r.problems);
        assert_eq!(r.splits.iter().map(|s| (s.images, s.side)).collect::<Vec<_>>(), [(6, 16), (2, 16)]);
        assert_eq!((r.splits[0].class_min, r.splits[0].class_max), (Some(3), Some(3)));
        assert!(r.notes[0].contains("1 file is not an image") && r.notes[0].contains("readme.md"), "{:?}", r.notes);
        let entry = list(tmp.path(), std::slice::from_ref(&folder)).pop().unwrap();
        assert_eq!((entry.dataset.as_str(), entry.classes, entry.side), ("shots", 2, 16));
        assert_eq!(entry.splits, [("train".to_string(), 6), ("test".to_string(), 2)]);
        std::fs::write(tmp.path().join("shots/val/class_1/img_0.jpg"), b"broken").unwrap();
        let r = verify(&DatasetSpec::Folder(folder), tmp.path()).unwrap();
        assert!(!r.passed() && r.problems[0].contains("val/class_1/img_0.jpg"), "{:?}", r.problems);
    }
}
