//! ImageNet (ILSVRC-2012) and ImageNet-100, read from the folders the official archives extract
//! to, one file at a time as batches need them (neither is ever decoded whole).
//!
//! Layout under the data root, `imagenet/`:
//! - `train/<wnid>/*.JPEG`, one folder per WordNet ID, as `ILSVRC2012_img_train.tar`'s inner
//!   archives extract;
//! - `val/` either in class folders (`val/<wnid>/*.JPEG`, as most preparation scripts leave it)
//!   or flat (`val/ILSVRC2012_val_00000001.JPEG` …), labelled by the devkit's
//!   `ILSVRC2012_validation_ground_truth.txt` (beside `val/`, or in the extracted
//!   `ILSVRC2012_devkit_t12/data/`). That file holds the devkit's class IDs 1..=1000, whose order
//!   (`imagenet/devkit_classes.txt`, line k = ID k) is not the sorted WordNet IDs'; the list is
//!   the devkit's `map_clsloc.txt` as kept in PatrykChrabaszcz/Imagenet32_Scripts (commit
//!   108b12098cdd, sha256 1dd44b44…), and it maps the 50,000 ground-truth IDs onto the sorted
//!   labels torchvision's `ImageFolder` gives the same images.
//!
//! ImageNet-100 is the 100-class subset solo-learn trains on (`imagenet/imagenet100_classes.txt`,
//! solo-learn's `solo/data/dataset_subset/imagenet100_classes.txt` at commit 9187ea39; the same
//! list as its `scripts/utils/make_imagenet100.py`). It is read from `imagenet-100/` (the subset
//! folder that script makes) or, without one, straight from `imagenet/`.
//!
//! Labels are the classes' positions in sorted WordNet-ID order, as `ImageFolder` numbers them;
//! files are in sorted path order within each class.

use std::path::{Path, PathBuf};

use crate::folder::{is_image, subfolders, walk};
use crate::image::{ImageFiles, Unreadable};
use crate::{Error, Label, Result, Split};

pub const NAME: &str = "imagenet";
pub const NAME_100: &str = "imagenet100";
pub const DIR: &str = "imagenet";
pub const DIR_100: &str = "imagenet-100";

/// The devkit's classes in ID order (line k is ID k).
const DEVKIT_CLASSES: &str = include_str!("imagenet/devkit_classes.txt");
/// solo-learn's ImageNet-100 classes.
const IMAGENET100_CLASSES: &str = include_str!("imagenet/imagenet100_classes.txt");

/// The validation ground truth's file name, and where it is looked for under the dataset folder.
pub const GROUND_TRUTH: &str = "ILSVRC2012_validation_ground_truth.txt";
const GROUND_TRUTH_PLACES: [&str; 2] = ["", "ILSVRC2012_devkit_t12/data"];

/// torchvision's ImageNet statistics, which solo-learn and the papers normalise with.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The training crop and the evaluation transform (resize the shorter side to 256, centre 224).
pub const CROP: usize = 224;
pub const EVAL_RESIZE: usize = 256;

/// Which of the two class sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classes {
    All,
    Hundred,
}

impl Classes {
    pub fn name(self) -> &'static str {
        match self {
            Classes::All => NAME,
            Classes::Hundred => NAME_100,
        }
    }

    /// The WordNet IDs, sorted: label `l` is the `l`-th.
    pub fn wnids(self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = match self {
            Classes::All => DEVKIT_CLASSES.lines().collect(),
            Classes::Hundred => IMAGENET100_CLASSES.lines().collect(),
        };
        ids.sort_unstable();
        ids
    }

    /// How to get the dataset: there is no public download to fetch.
    pub fn hint(self, root: &Path) -> String {
        let full = root.join(DIR);
        let mut hint = format!(
            "ImageNet has no public download: get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (and the \
             devkit) from image-net.org, then extract the training archive's per-class archives to \
             {}/train/<wnid>/ and the validation images to {}/val/ (flat, with the devkit's {GROUND_TRUTH}, or in \
             class folders)",
            full.display(),
            full.display()
        );
        if self == Classes::Hundred {
            hint.push_str(&format!(
                "; for ImageNet-100 alone, {} in the same layout with solo-learn's 100 classes also works",
                root.join(DIR_100).display()
            ));
        }
        hint
    }
}

fn is_wnid(name: &str) -> bool {
    name.len() == 9 && name.starts_with('n') && name[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Every image of a split with its label, from the dataset folder `dir_name` under `root` (the
/// one `Dataset::found` picks), checked before anything trains: every class has a folder with
/// images in `train/` and in a `val/` by class, every folder is a class of ILSVRC-2012, and a
/// flat `val/` has one ground-truth line per image.
pub fn list(classes: Classes, root: &Path, dir_name: &str, split: Split, unreadable: Unreadable) -> Result<ImageFiles> {
    let name = classes.name();
    let dir = std::path::absolute(root.join(dir_name)).unwrap_or_else(|_| root.join(dir_name));
    let wnids = classes.wnids();
    let split_dir = match split {
        Split::Train => dir.join("train"),
        Split::Test => dir.join("val"),
        Split::Unlabeled => {
            return Err(Error::Split { dataset: name, split: split.to_string(), expected: "train, test (val/)".into() })
        }
    };
    let folders = subfolders(&split_dir).map_err(|bad| match bad {
        None => Error::Missing {
            dataset: name,
            path: split_dir.clone(),
            expected: "a folder of class folders named by WordNet ID (n01440764, …)".into(),
            hint: classes.hint(root),
        },
        Some(path) => Error::Format { dataset: name, path, what: "a folder name that is not UTF-8".into() },
    })?;
    if let Some(stray) = folders.iter().find(|f| !is_wnid(f) || !DEVKIT_CLASSES.lines().any(|w| w == *f)) {
        return Err(Error::Format {
            dataset: name,
            path: split_dir.join(stray),
            what: "not a class of ILSVRC-2012 (a folder per WordNet ID, n01440764 …, is expected)".into(),
        });
    }
    let (files, labels) = if split == Split::Test && folders.is_empty() {
        flat_val(name, &dir, &split_dir, &wnids)?
    } else {
        by_class(name, &split_dir, &wnids, &folders)?
    };
    let class_names = wnids.iter().map(|w| w.to_string()).collect();
    Ok(ImageFiles { name, split, files, labels, class_names, unreadable })
}

/// Images in class folders, every class's; folders of other ILSVRC classes (ImageNet-100 read
/// from the full set) are not read.
fn by_class(
    name: &'static str,
    split_dir: &Path,
    wnids: &[&str],
    folders: &[String],
) -> Result<(Vec<PathBuf>, Vec<Label>)> {
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    for (label, wnid) in wnids.iter().enumerate() {
        let folder = split_dir.join(wnid);
        if !folders.iter().any(|f| f == wnid) {
            return Err(Error::Format {
                dataset: name,
                path: folder,
                what: format!("class {wnid} has no folder; {name} has {} classes", wnids.len()),
            });
        }
        let mut found = Vec::new();
        walk(name, &folder, &mut found)?;
        found.retain(|p| is_image(p));
        if found.is_empty() {
            return Err(Error::Format { dataset: name, path: folder, what: format!("class {wnid} holds no image") });
        }
        found.sort();
        labels.extend(std::iter::repeat_n(label as Label, found.len()));
        files.extend(found);
    }
    if files.is_empty() {
        return Err(Error::Format {
            dataset: name,
            path: split_dir.to_path_buf(),
            what: format!("no folder of {name}'s classes"),
        });
    }
    Ok((files, labels))
}

/// A flat `val/`: file `ILSVRC2012_val_<k>.JPEG` has the class on line k of the ground truth.
fn flat_val(name: &'static str, dir: &Path, val: &Path, wnids: &[&str]) -> Result<(Vec<PathBuf>, Vec<Label>)> {
    let places: Vec<PathBuf> = GROUND_TRUTH_PLACES.iter().map(|p| dir.join(p).join(GROUND_TRUTH)).collect();
    let Some(truth_path) = places.iter().find(|p| p.is_file()) else {
        return Err(Error::Missing {
            dataset: name,
            path: places[0].clone(),
            expected: format!(
                "the devkit's {GROUND_TRUTH} for the flat val/ folder (looked in {})",
                places.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
            ),
            hint: "extract ILSVRC2012_devkit_t12.tar.gz beside val/, or sort val/ into class folders".into(),
        });
    };
    let text = std::fs::read_to_string(truth_path).map_err(|source| Error::Io { path: truth_path.clone(), source })?;
    let devkit: Vec<&str> = DEVKIT_CLASSES.lines().collect();
    let truth: Vec<&str> = text
        .lines()
        .enumerate()
        .map(|(i, line)| match line.trim().parse::<usize>() {
            Ok(id @ 1..=1000) => Ok(devkit[id - 1]),
            _ => Err(Error::Format {
                dataset: name,
                path: truth_path.clone(),
                what: format!("line {} is `{line}`, expected a class ID 1..=1000", i + 1),
            }),
        })
        .collect::<Result<_>>()?;
    let mut found = Vec::new();
    walk(name, val, &mut found)?;
    found.retain(|p| is_image(p));
    found.sort();
    if found.len() != truth.len() {
        return Err(Error::Format {
            dataset: name,
            path: val.to_path_buf(),
            what: format!(
                "{} images, but {} labels {}: a flat val/ holds every image the ground truth lists",
                found.len(),
                truth.len(),
                truth_path.display()
            ),
        });
    }
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    for path in found {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let k = stem.strip_prefix("ILSVRC2012_val_").and_then(|n| n.parse::<usize>().ok());
        let wnid = match k {
            Some(k @ 1..) if k <= truth.len() => truth[k - 1],
            _ => {
                return Err(Error::Format {
                    dataset: name,
                    path,
                    what: format!("expected a name ILSVRC2012_val_<1..={}>.JPEG", truth.len()),
                })
            }
        };
        if let Ok(label) = wnids.binary_search(&wnid) {
            files.push(path);
            labels.push(label as Label);
        }
    }
    Ok((files, labels))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stand-in ILSVRC folder under `root/dir`: every class of `classes` in `train/` with
    /// `per_class` small JPEGs (flat colours that encode class and index), and `val/` flat with
    /// a ground-truth file over `val_classes` (the devkit's IDs) or in class folders.
    pub(crate) fn write_stand_in(root: &Path, dir: &str, classes: &[&str], per_class: usize, flat_val: bool) {
        let devkit: Vec<&str> = DEVKIT_CLASSES.lines().collect();
        let jpeg = |path: &Path, c: usize, k: usize| {
            let img = image::RgbImage::from_pixel(40 + 8 * k as u32, 32, image::Rgb([(c % 256) as u8, k as u8, 7]));
            img.save_with_format(path, image::ImageFormat::Jpeg).unwrap();
        };
        for (c, wnid) in classes.iter().enumerate() {
            let folder = root.join(dir).join("train").join(wnid);
            std::fs::create_dir_all(&folder).unwrap();
            for k in 0..per_class {
                jpeg(&folder.join(format!("{wnid}_{k}.JPEG")), c, k);
            }
        }
        let val = root.join(dir).join("val");
        std::fs::create_dir_all(&val).unwrap();
        let mut truth = String::new();
        for (c, wnid) in classes.iter().enumerate() {
            if flat_val {
                let k = c + 1;
                jpeg(&val.join(format!("ILSVRC2012_val_{k:08}.JPEG")), c, 0);
                let id = devkit.iter().position(|w| w == wnid).unwrap() + 1;
                truth.push_str(&format!("{id}\n"));
            } else {
                std::fs::create_dir_all(val.join(wnid)).unwrap();
                jpeg(&val.join(wnid).join("v.JPEG"), c, 0);
            }
        }
        if flat_val {
            std::fs::write(root.join(dir).join(GROUND_TRUTH), truth).unwrap();
        }
    }

    /// The folder `Dataset::Imagenet100` reads under `root`.
    fn found(root: &Path) -> &'static str {
        crate::Dataset::Imagenet100.found(root).map_or(DIR, |(_, dir)| dir)
    }

    #[test]
    fn the_class_lists_are_the_devkits_and_solo_learns() {
        let all = Classes::All.wnids();
        assert_eq!((all.len(), all[0], all[999]), (1000, "n01440764", "n15075141"));
        assert!(all.windows(2).all(|w| w[0] < w[1]), "1,000 distinct classes");
        let devkit: Vec<&str> = DEVKIT_CLASSES.lines().collect();
        // The devkit's ID 1 is n02119789 (kit fox); the first validation image's ID, 490, is
        // n01751748 (sea snake).
        assert_eq!((devkit[0], devkit[489]), ("n02119789", "n01751748"));
        let hundred = Classes::Hundred.wnids();
        assert_eq!(hundred.len(), 100);
        assert!(hundred.iter().all(|w| all.binary_search(w).is_ok()), "a subset of ILSVRC-2012");
        assert_eq!(IMAGENET100_CLASSES.lines().next(), Some("n02869837"), "solo-learn's order, first line");
    }

    #[test]
    fn imagenet100_from_the_full_folder_with_a_flat_val() {
        let tmp = tempfile::tempdir().unwrap();
        let hundred = Classes::Hundred.wnids();
        // Two classes outside the subset sit beside the 100 and are not read.
        let mut classes = hundred.clone();
        classes.extend(["n01440764", "n15075141"]);
        write_stand_in(tmp.path(), DIR, &classes, 2, true);
        let train = list(Classes::Hundred, tmp.path(), found(tmp.path()), Split::Train, Unreadable::default()).unwrap();
        assert_eq!((train.len(), train.class_names.len()), (200, 100));
        assert_eq!((train.labels[0], train.labels[199]), (0, 99));
        assert!(train.files[0].ends_with(format!("{}/{}_0.JPEG", hundred[0], hundred[0])));
        let val = list(Classes::Hundred, tmp.path(), found(tmp.path()), Split::Test, Unreadable::default()).unwrap();
        assert_eq!(val.len(), 100, "the two other classes' images are left out");
        for (path, label) in val.files.iter().zip(&val.labels) {
            // Image k was written as class classes[k-1]: its label is that class's sorted place.
            let k: usize = path.file_stem().unwrap().to_str().unwrap()[15..].parse().unwrap();
            assert_eq!(hundred[*label as usize], classes[k - 1]);
        }
    }

    #[test]
    fn bad_layouts_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let err =
            list(Classes::Hundred, root, found(root), Split::Train, Unreadable::default()).unwrap_err().to_string();
        assert!(err.contains("imagenet/train") && err.contains("image-net.org"), "{err}");
        let hundred = Classes::Hundred.wnids();
        write_stand_in(root, DIR_100, &hundred[..99], 1, false);
        let err =
            list(Classes::Hundred, root, found(root), Split::Train, Unreadable::default()).unwrap_err().to_string();
        assert!(err.contains(&format!("imagenet-100/train/{}", hundred[99])) && err.contains("no folder"), "{err}");
        write_stand_in(root, DIR_100, &hundred, 1, false);
        std::fs::create_dir_all(root.join("imagenet-100/val/dogs")).unwrap();
        let err =
            list(Classes::Hundred, root, found(root), Split::Test, Unreadable::default()).unwrap_err().to_string();
        assert!(err.contains("val/dogs") && err.contains("not a class of ILSVRC-2012"), "{err}");
        std::fs::remove_dir(root.join("imagenet-100/val/dogs")).unwrap();
        let ok = list(Classes::Hundred, root, found(root), Split::Test, Unreadable::default()).unwrap();
        assert_eq!(ok.len(), 100, "val/ in class folders");
        // A class missing from a val/ by class is an error, not an evaluation on 99 classes.
        std::fs::remove_dir_all(root.join("imagenet-100/val").join(hundred[7])).unwrap();
        let err =
            list(Classes::Hundred, root, found(root), Split::Test, Unreadable::default()).unwrap_err().to_string();
        assert!(err.contains(&format!("val/{}", hundred[7])) && err.contains("has no folder"), "{err}");

        // A flat val/ without its ground truth, or with a line too few.
        let flat = tempfile::tempdir().unwrap();
        write_stand_in(flat.path(), DIR, &hundred, 1, true);
        let truth = flat.path().join(DIR).join(GROUND_TRUTH);
        let text = std::fs::read_to_string(&truth).unwrap();
        std::fs::write(&truth, text.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
        let err = list(Classes::Hundred, flat.path(), found(flat.path()), Split::Test, Unreadable::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("100 images, but 99 labels"), "{err}");
        std::fs::write(&truth, text.replacen('\n', "x\n", 1)).unwrap();
        let err = list(Classes::Hundred, flat.path(), found(flat.path()), Split::Test, Unreadable::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1 is") && err.contains("1..=1000"), "{err}");
        std::fs::remove_file(&truth).unwrap();
        let err = list(Classes::Hundred, flat.path(), found(flat.path()), Split::Test, Unreadable::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(GROUND_TRUTH) && err.contains("ILSVRC2012_devkit_t12/data"), "{err}");
    }
}
