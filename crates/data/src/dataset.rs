//! The four datasets of the papers' tables, by name: where each lives under the data root (in
//! which layouts, and which one is read when several are present), its splits and counts, its
//! official download, and the loader that reads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::augment::Preset;
use crate::folder::{FolderDataset, Stem};
use crate::{cifar10, cifar100, imagenet, stl10, tiny_imagenet, Error, ImageSet, Images, Result, Split, Unreadable};

/// A dataset with a loader. Names (CLI, experiment files, database) are the serde names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    Cifar10,
    Cifar100,
    Stl10,
    TinyImagenet,
    Imagenet,
    Imagenet100,
}

/// How a dataset's files are stored: each layout has its own folder under the data root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Fixed-size binary records: CIFAR's binary version, STL-10's binary files.
    Binary,
    /// CIFAR's python version, pickled batches: the folder torchvision downloads and reads.
    Python,
    /// Folders of JPEG files (Tiny-ImageNet).
    Jpeg,
    /// A folder of the user's images in torchvision's `ImageFolder` layout.
    Folder,
    /// ILSVRC-2012's folders: `train/<wnid>/`, and `val/` by class or flat with the devkit's labels.
    Ilsvrc,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Binary => "binary",
            Layout::Python => "python",
            Layout::Jpeg => "jpeg",
            Layout::Folder => "folder",
            Layout::Ilsvrc => "ilsvrc",
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Binary => "binary version",
            Layout::Python => "python version, as torchvision downloads it",
            Layout::Jpeg => "JPEG folders",
            Layout::Folder => "image folders, one per class",
            Layout::Ilsvrc => "ILSVRC-2012 folders",
        })
    }
}

/// One official download: the archive, its published size and MD5, and the folder it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Archive {
    pub url: &'static str,
    pub file_name: &'static str,
    pub bytes: u64,
    pub md5: &'static str,
}

impl Dataset {
    pub const ALL: [Dataset; 6] = [
        Dataset::Cifar10,
        Dataset::Cifar100,
        Dataset::Stl10,
        Dataset::TinyImagenet,
        Dataset::Imagenet,
        Dataset::Imagenet100,
    ];

    /// Every built-in name, comma-separated, for messages.
    pub fn names() -> String {
        Dataset::ALL.map(Dataset::name).join(", ")
    }

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => cifar10::NAME,
            Dataset::Cifar100 => cifar100::NAME,
            Dataset::Stl10 => stl10::NAME,
            Dataset::TinyImagenet => tiny_imagenet::NAME,
            Dataset::Imagenet => imagenet::NAME,
            Dataset::Imagenet100 => imagenet::NAME_100,
        }
    }

    /// The folder `datasets fetch` extracts under the data root (the first of [`Dataset::layouts`]).
    pub fn dir(self) -> &'static str {
        self.layouts()[0].1
    }

    /// The layouts infomax reads, each with its folder under the data root, in precedence order.
    ///
    /// CIFAR-10 and CIFAR-100 come in two: the binary version (`cifar-10-batches-bin/`,
    /// `cifar-100-binary/`) and the python version that torchvision downloads
    /// (`cifar-10-batches-py/`, `cifar-100-python/`). Both hold the same images and labels.
    /// When both folders exist, the binary one is read (see [`Dataset::found`]).
    pub fn layouts(self) -> &'static [(Layout, &'static str)] {
        match self {
            Dataset::Cifar10 => &[(Layout::Binary, cifar10::DIR), (Layout::Python, cifar10::PYTHON_DIR)],
            Dataset::Cifar100 => &[(Layout::Binary, cifar100::DIR), (Layout::Python, cifar100::PYTHON_DIR)],
            Dataset::Stl10 => &[(Layout::Binary, stl10::DIR)],
            Dataset::TinyImagenet => &[(Layout::Jpeg, tiny_imagenet::DIR)],
            Dataset::Imagenet => &[(Layout::Ilsvrc, imagenet::DIR)],
            // The subset folder solo-learn's script makes, else the full set's.
            Dataset::Imagenet100 => &[(Layout::Ilsvrc, imagenet::DIR_100), (Layout::Ilsvrc, imagenet::DIR)],
        }
    }

    /// The layouts whose folders exist under `root`, in precedence order.
    pub fn present_layouts(self, root: &Path) -> Vec<(Layout, &'static str)> {
        self.layouts().iter().copied().filter(|(_, dir)| root.join(dir).is_dir()).collect()
    }

    /// The layout that is read from `root` and its folder: the first of [`Dataset::layouts`]
    /// whose folder exists, so the binary version wins over the python version.
    ///
    /// The rule looks at folders only, not at whether they are complete: a broken binary folder
    /// is reported as broken rather than silently replaced by another copy. And since the binary
    /// folder is what `datasets fetch` extracts and what infomax read before it knew the python
    /// version, putting a torchvision download beside it never changes which files a run reads.
    pub fn found(self, root: &Path) -> Option<(Layout, &'static str)> {
        self.present_layouts(root).first().copied()
    }

    /// The splits with images, and how many each holds in the official release.
    /// Tiny-ImageNet's `test` is its labelled `val` folder (its own test images have no labels).
    pub fn splits(self) -> &'static [(Split, usize)] {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => &[(Split::Train, 50_000), (Split::Test, 10_000)],
            Dataset::Stl10 => &[(Split::Train, 5_000), (Split::Test, 8_000), (Split::Unlabeled, 100_000)],
            Dataset::TinyImagenet => &[(Split::Train, 100_000), (Split::Test, 10_000)],
            Dataset::Imagenet => &[(Split::Train, 1_281_167), (Split::Test, 50_000)],
            Dataset::Imagenet100 => &[(Split::Train, 126_689), (Split::Test, 5_000)],
        }
    }

    /// The splits self-supervised pre-training reads: STL-10 adds its unlabeled images
    /// (docs/methods.md#normalisation-and-evaluation-images).
    pub fn pretrain_splits(self) -> &'static [Split] {
        match self {
            Dataset::Stl10 => &[Split::Train, Split::Unlabeled],
            _ => &[Split::Train],
        }
    }

    pub fn classes(self) -> usize {
        match self {
            Dataset::Cifar10 | Dataset::Stl10 => 10,
            Dataset::Cifar100 => 100,
            Dataset::TinyImagenet => 200,
            Dataset::Imagenet => 1000,
            Dataset::Imagenet100 => 100,
        }
    }

    /// Stored image side in pixels (the binary and Tiny-ImageNet images are square); ImageNet's
    /// images keep their own sizes, and this is the side they are cropped to.
    pub fn side(self) -> usize {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => 32,
            Dataset::Stl10 => stl10::SIDE,
            Dataset::TinyImagenet => tiny_imagenet::SIDE,
            Dataset::Imagenet | Dataset::Imagenet100 => imagenet::CROP,
        }
    }

    /// The W-MSE code's per-channel normalisation (docs/methods.md#normalisation-and-evaluation-images);
    /// ImageNet's is torchvision's.
    pub fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Dataset::Cifar10 => (cifar10::MEAN, cifar10::STD),
            Dataset::Cifar100 => ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
            Dataset::Stl10 => ([0.43, 0.42, 0.39], [0.27, 0.26, 0.27]),
            Dataset::TinyImagenet => ([0.480, 0.448, 0.398], [0.277, 0.269, 0.282]),
            Dataset::Imagenet | Dataset::Imagenet100 => (imagenet::MEAN, imagenet::STD),
        }
    }

    /// The training crop side of the W-MSE code: 32 on CIFAR, 64 on STL-10 and Tiny-ImageNet; 224
    /// on ImageNet.
    pub fn crop_size(self) -> usize {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => 32,
            Dataset::Stl10 | Dataset::TinyImagenet => 64,
            Dataset::Imagenet | Dataset::Imagenet100 => imagenet::CROP,
        }
    }

    /// The evaluation transform `(resize, centre crop)`, `None` for images used as stored:
    /// STL-10's are resized to 70 (bicubic) and centre-cropped to 64
    /// (docs/methods.md#normalisation-and-evaluation-images); ImageNet's are resized to 256 and
    /// centre-cropped to 224.
    pub fn eval_resize_crop(self) -> Option<(usize, usize)> {
        match self {
            Dataset::Stl10 => Some((70, 64)),
            Dataset::Imagenet | Dataset::Imagenet100 => Some((imagenet::EVAL_RESIZE, imagenet::CROP)),
            _ => None,
        }
    }

    /// The official download; ImageNet has none without registration.
    pub fn archive(self) -> Option<Archive> {
        Some(match self {
            Dataset::Imagenet | Dataset::Imagenet100 => return None,
            Dataset::Cifar10 => Archive {
                url: cifar10::URL,
                file_name: "cifar-10-binary.tar.gz",
                bytes: 170_052_171,
                md5: "c32a1d4ab5d03f1284b67883e8d87530",
            },
            Dataset::Cifar100 => Archive {
                url: cifar100::URL,
                file_name: "cifar-100-binary.tar.gz",
                bytes: 168_513_733,
                md5: "03b5dce01913d631647c71ecec9e9cb8",
            },
            Dataset::Stl10 => Archive {
                url: stl10::URL,
                file_name: "stl10_binary.tar.gz",
                bytes: 2_640_397_119,
                md5: "91f7769df0f17e558f3565bffb0c7dfb",
            },
            Dataset::TinyImagenet => Archive {
                url: tiny_imagenet::URL,
                file_name: "tiny-imagenet-200.zip",
                bytes: 248_100_043,
                md5: "90528d7ca1a48142e341f4ef8d21d0de",
            },
        })
    }

    /// How to get the dataset under `root`: its `datasets fetch` command and download, or its
    /// other layouts' folders; ImageNet's, where to put the files of image-net.org.
    pub fn how_to_get(self, root: &Path) -> String {
        let Some(a) = self.archive() else {
            return self.imagenet_classes().map_or_else(String::new, |c| c.hint(root));
        };
        let mut hint = format!(
            "run `infomax datasets fetch {}`, or download {} and extract it so that {} exists",
            self.name(),
            a.url,
            root.join(self.dir()).display()
        );
        for (layout, dir) in &self.layouts()[1..] {
            hint.push_str(&format!(", or keep its {} version at {}", layout.name(), root.join(dir).display()));
        }
        hint
    }

    /// Published MD5s of the files of `layout`'s folder, where known (the python versions' are
    /// the ones torchvision checks).
    pub fn official_md5s(self, layout: Layout) -> &'static [(&'static str, &'static str)] {
        match (self, layout) {
            (Dataset::Cifar10, Layout::Python) => &[
                ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ],
            (Dataset::Cifar100, Layout::Python) => {
                &[("train", "16019d7e3df5f24257cddd939b257f8d"), ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")]
            }
            (_, Layout::Python) => &[],
            (Dataset::Cifar10, _) => &[
                ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
                ("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
                ("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
                ("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
                ("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
                ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
            ],
            (Dataset::Cifar100, _) => {
                &[("train.bin", "6172c7755cfe09b2fe270c85cebc1b15"), ("test.bin", "4499cfba6c016c1be1438163640a0898")]
            }
            (Dataset::Stl10, _) => &[
                ("train_X.bin", "918c2871b30a85fa023e0c44e0bee87f"),
                ("train_y.bin", "5a34089d4802c674881badbb80307741"),
                ("test_X.bin", "7f263ba9f9e0b06b93213547f721ac82"),
                ("test_y.bin", "36f9794fa4beb8a2c72628de14fa638e"),
                ("unlabeled_X.bin", "5242ba1fed5e4be9e1e742405eb56ca4"),
            ],
            // The archive's MD5 is published; its 120,000 JPEGs are checked by decoding them.
            (Dataset::TinyImagenet, _) => &[],
            (Dataset::Imagenet | Dataset::Imagenet100, _) => &[],
        }
    }

    /// Whether a folder of one of the dataset's layouts exists under `root` (not whether it is
    /// complete).
    pub fn is_present(self, root: &Path) -> bool {
        self.found(root).is_some()
    }

    /// Load one split from the layout [`Dataset::found`] picks, checking sizes, counts and labels.
    pub fn load(self, root: &Path, split: Split) -> Result<ImageSet> {
        if !self.splits().iter().any(|(s, _)| *s == split) {
            return Err(Error::Split {
                dataset: self.name(),
                split: split.to_string(),
                expected: self.splits().iter().map(|(s, _)| s.name()).collect::<Vec<_>>().join(", "),
            });
        }
        match self {
            Dataset::Cifar10 => cifar10::load(root, split),
            Dataset::Cifar100 => cifar100::load(root, split),
            Dataset::Stl10 => stl10::load(root, split),
            Dataset::TinyImagenet => tiny_imagenet::load(root, split),
            Dataset::Imagenet | Dataset::Imagenet100 => {
                Err(Error::Request(format!("{self} is read from its files as batches need them, never decoded whole")))
            }
        }
    }

    /// The ImageNet class set, for the two datasets read from their files.
    pub fn imagenet_classes(self) -> Option<imagenet::Classes> {
        match self {
            Dataset::Imagenet => Some(imagenet::Classes::All),
            Dataset::Imagenet100 => Some(imagenet::Classes::Hundred),
            _ => None,
        }
    }

    /// A split as training and evaluation read it: decoded in memory, or (ImageNet) its files.
    pub fn open(self, root: &Path, split: Split, unreadable: Unreadable) -> Result<Images> {
        match self.imagenet_classes() {
            Some(classes) => {
                let dir = self.found(root).map_or(self.dir(), |(_, dir)| dir);
                imagenet::list(classes, root, dir, split, unreadable).map(Images::Files)
            }
            None => self.load(root, split).map(Images::Decoded),
        }
    }

    /// The images self-supervised training reads (STL-10: train followed by unlabeled, no labels).
    pub fn load_pretrain(self, root: &Path) -> Result<ImageSet> {
        let mut splits = self.pretrain_splits().iter();
        let first = self.load(root, *splits.next().expect("every dataset pre-trains on a split"))?;
        splits.try_fold(first, |acc, s| Ok(acc.concat(&self.load(root, *s)?)))
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dataset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Dataset::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| Error::UnknownDataset(s.to_string()))
    }
}

/// What a run's `dataset` field says: a built-in dataset by name (`"cifar10"`), or a folder of
/// the user's images (`{ folder = "PATH", … }`, see [`crate::folder`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    Builtin(Dataset),
    Folder(FolderDataset),
}

impl From<Dataset> for DatasetSpec {
    fn from(d: Dataset) -> DatasetSpec {
        DatasetSpec::Builtin(d)
    }
}

impl DatasetSpec {
    pub fn name(&self) -> &'static str {
        match self {
            DatasetSpec::Builtin(d) => d.name(),
            DatasetSpec::Folder(f) => f.name(),
        }
    }

    pub fn builtin(&self) -> Option<Dataset> {
        match self {
            DatasetSpec::Builtin(d) => Some(*d),
            DatasetSpec::Folder(_) => None,
        }
    }

    /// Stored image side in pixels ([`Dataset::side`]: ImageNet's crop, its images keeping their
    /// own sizes).
    pub fn side(&self) -> usize {
        match self {
            DatasetSpec::Builtin(d) => d.side(),
            DatasetSpec::Folder(f) => f.image_size,
        }
    }

    /// The training crop's side: the built-in datasets' own, a folder's `crop_size` (default its
    /// whole stored side).
    pub fn crop_size(&self) -> usize {
        match self {
            DatasetSpec::Builtin(d) => d.crop_size(),
            DatasetSpec::Folder(f) => f.crop(),
        }
    }

    /// The encoder's stem: the small-image one (a 3×3 convolution) for crops up to STL-10's 96
    /// pixels, ImageNet's (7×7, stride 2) above; a folder may name it.
    pub fn stem(&self) -> Stem {
        match self {
            DatasetSpec::Builtin(d) => Stem::for_crop(d.crop_size()),
            DatasetSpec::Folder(f) => f.stem(),
        }
    }

    pub fn small_stem(&self) -> bool {
        self.stem() == Stem::Small
    }

    /// Whether the stem has a max-pool: ImageNet's always; the small one for images above
    /// CIFAR's size (STL-10 and Tiny-ImageNet, as the W-MSE code does; a folder's likewise).
    pub fn max_pool(&self) -> bool {
        !self.small_stem() || self.crop_size() > 32
    }

    /// The augmentations' normalisation: a built-in dataset's published statistics, a folder's
    /// own `mean`/`std` (none until given: `infomax datasets stats` computes them).
    pub fn mean_std(&self) -> Option<([f32; 3], [f32; 3])> {
        match self {
            DatasetSpec::Builtin(d) => Some(d.mean_std()),
            DatasetSpec::Folder(f) => f.mean.zip(f.std),
        }
    }

    /// The augmentation preset a run takes unless its file names one: FAIR's on ImageNet (what
    /// its papers train with), W-MSE's elsewhere (the W-MSE code's, on its four datasets).
    pub fn default_preset(&self) -> Preset {
        match self.builtin().and_then(Dataset::imagenet_classes) {
            Some(_) => Preset::Fair,
            None => Preset::Wmse,
        }
    }

    /// The evaluation transform `(resize, centre crop)`: a built-in dataset's, and a folder's
    /// centre crop of `crop_size` when it is smaller than the stored side.
    pub fn eval_resize_crop(&self) -> Option<(usize, usize)> {
        match self {
            DatasetSpec::Builtin(d) => d.eval_resize_crop(),
            DatasetSpec::Folder(f) => (f.crop() < f.image_size).then(|| (f.image_size, f.crop())),
        }
    }

    /// The splits self-supervised pre-training reads.
    pub fn pretrain_splits(&self) -> &'static [Split] {
        match self {
            DatasetSpec::Builtin(d) => d.pretrain_splits(),
            DatasetSpec::Folder(_) => &[Split::Train],
        }
    }

    /// Images in each split: the official counts of a built-in dataset, what a folder holds
    /// (none for a split it cannot list: loading it says why).
    pub fn split_sizes(&self, root: &Path) -> Vec<(Split, usize)> {
        match self {
            DatasetSpec::Builtin(d) => d.splits().to_vec(),
            DatasetSpec::Folder(f) => [Split::Train, Split::Test]
                .into_iter()
                .map(|s| (s, f.listing(root, s).map_or(0, |l| l.images.len())))
                .collect(),
        }
    }

    /// Where the dataset is read from under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        match self {
            DatasetSpec::Builtin(d) => root.join(d.found(root).map_or(d.dir(), |(_, dir)| dir)),
            DatasetSpec::Folder(f) => f.dir(root),
        }
    }

    /// Whether the dataset's folder exists (not whether it is complete).
    pub fn is_present(&self, root: &Path) -> bool {
        match self {
            DatasetSpec::Builtin(d) => d.is_present(root),
            DatasetSpec::Folder(f) => f.dir(root).is_dir(),
        }
    }

    pub fn load(&self, root: &Path, split: Split) -> Result<ImageSet> {
        match self {
            DatasetSpec::Builtin(d) => d.load(root, split),
            DatasetSpec::Folder(f) => f.load(root, split),
        }
    }

    pub fn load_pretrain(&self, root: &Path) -> Result<ImageSet> {
        match self {
            DatasetSpec::Builtin(d) => d.load_pretrain(root),
            DatasetSpec::Folder(f) => f.load(root, Split::Train),
        }
    }

    /// A split as training and evaluation read it (see [`Dataset::open`]); `unreadable` says what
    /// a file that stops decoding mid-run does (only files read as batches need them can).
    pub fn open(&self, root: &Path, split: Split, unreadable: Unreadable) -> Result<Images> {
        match self {
            DatasetSpec::Builtin(d) => d.open(root, split, unreadable),
            DatasetSpec::Folder(f) => f.load(root, split).map(Images::Decoded),
        }
    }

    /// The images self-supervised training reads, as [`DatasetSpec::open`] reads them.
    pub fn open_pretrain(&self, root: &Path, unreadable: Unreadable) -> Result<Images> {
        match self.pretrain_splits() {
            [split] => self.open(root, *split, unreadable),
            _ => self.load_pretrain(root).map(Images::Decoded),
        }
    }
}

impl std::fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DatasetSpec {
    type Err = Error;

    /// A built-in dataset's name, or the path of an image folder (one with a `/`, or an existing
    /// folder) with every other field at its default. A relative path that exists from the
    /// current folder is made absolute; any other stays relative to the data root.
    fn from_str(s: &str) -> Result<Self> {
        match s.parse::<Dataset>() {
            Ok(d) => Ok(DatasetSpec::Builtin(d)),
            Err(_) if s.contains('/') || Path::new(s).is_dir() => {
                let path = Path::new(s);
                let folder = match std::path::absolute(path) {
                    Ok(abs) if path.is_relative() && abs.is_dir() => abs.display().to_string(),
                    _ => s.to_string(),
                };
                Ok(DatasetSpec::Folder(FolderDataset::at(folder)))
            }
            Err(_) => Err(Error::Request(format!(
                "unknown dataset `{s}`: expected one of {}, or the path of an image folder (train/<class>/…, with \
                 a `/` in it)",
                Dataset::names()
            ))),
        }
    }
}

impl Serialize for DatasetSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            DatasetSpec::Builtin(d) => d.serialize(s),
            DatasetSpec::Folder(f) => f.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for DatasetSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<DatasetSpec, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = DatasetSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a dataset name ({}) or a table `{{ folder = \"PATH\", … }}`", Dataset::names())
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<DatasetSpec, E> {
                v.parse::<Dataset>()
                    .map(DatasetSpec::Builtin)
                    .map_err(|e| E::custom(format!("{e}, or a table `{{ folder = \"PATH\" }}` for a folder of images")))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<DatasetSpec, A::Error> {
                FolderDataset::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(DatasetSpec::Folder)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for d in Dataset::ALL {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.name()));
            assert_eq!(d.name().parse::<Dataset>().unwrap(), d);
        }
        let err = "imagenet1k".parse::<Dataset>().unwrap_err().to_string();
        assert!(err.contains("cifar10, cifar100, stl10, tiny-imagenet, imagenet, imagenet100"), "{err}");
    }

    #[test]
    fn unknown_split_names_the_valid_ones() {
        let err = Dataset::Cifar10.load(Path::new("/nonexistent"), Split::Unlabeled).unwrap_err().to_string();
        assert!(err.contains("unlabeled") && err.contains("train, test"), "{err}");
    }

    #[test]
    fn the_binary_version_takes_precedence_over_the_python_version() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!((Dataset::Cifar100.found(root), Dataset::Cifar100.is_present(root)), (None, false));
        crate::cifar100::tests::write_python_fixture(root);
        assert_eq!(Dataset::Cifar100.found(root), Some((Layout::Python, "cifar-100-python")));
        assert!(Dataset::Cifar100.is_present(root));
        assert_eq!(Dataset::Cifar100.load(root, Split::Test).unwrap().class_names[7], "fine7");
        // A binary folder beside it is read instead, whatever it holds.
        std::fs::create_dir(root.join("cifar-100-binary")).unwrap();
        assert_eq!(Dataset::Cifar100.found(root), Some((Layout::Binary, "cifar-100-binary")));
        let err = Dataset::Cifar100.load(root, Split::Test).unwrap_err().to_string();
        assert!(err.contains("cifar-100-binary") && err.contains("test.bin"), "{err}");
        assert_eq!(Dataset::Cifar100.present_layouts(root).len(), 2);
        assert_eq!(Dataset::Cifar10.dir(), "cifar-10-batches-bin", "fetch extracts the binary version");
        assert_eq!(serde_json::to_string(&Layout::Python).unwrap(), "\"python\"");
    }

    #[test]
    fn a_dataset_field_is_a_name_or_a_folder_table() {
        let name: DatasetSpec = serde_json::from_str("\"stl10\"").unwrap();
        assert_eq!(name, DatasetSpec::Builtin(Dataset::Stl10));
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"stl10\"", "built-in names serialise as before");
        let folder: DatasetSpec = serde_json::from_str(r#"{"folder": "pets", "image_size": 48}"#).unwrap();
        let DatasetSpec::Folder(f) = &folder else { panic!("{folder:?}") };
        assert_eq!((f.folder.as_str(), f.image_size, f.name(), folder.side()), ("pets", 48, "pets", 48));
        assert_eq!(serde_json::to_string(&folder).unwrap(), r#"{"folder":"pets","image_size":48}"#);
        let err = serde_json::from_str::<DatasetSpec>(r#"{"folder": "pets", "size": 48}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `size`") && err.contains("image_size"), "{err}");
        let err = serde_json::from_str::<DatasetSpec>("\"imagenet-1k\"").unwrap_err().to_string();
        assert!(err.contains("tiny-imagenet") && err.contains("folder"), "{err}");
        let stem: DatasetSpec = serde_json::from_str(r#"{"folder": "pets", "stem": "imagenet"}"#).unwrap();
        assert_eq!((stem.small_stem(), stem.max_pool(), stem.crop_size()), (false, true, 64), "named, not derived");
        let stem: DatasetSpec = serde_json::from_str(r#"{"folder": "pets", "image_size": 32}"#).unwrap();
        assert_eq!((stem.small_stem(), stem.max_pool(), stem.eval_resize_crop()), (true, false, None));
        let err = serde_json::from_str::<DatasetSpec>(r#"{"folder": "p", "stem": "big"}"#).unwrap_err().to_string();
        assert!(err.contains("small") && err.contains("imagenet"), "{err}");
        assert_eq!("cifar10".parse::<DatasetSpec>().unwrap(), DatasetSpec::Builtin(Dataset::Cifar10));
        assert!(matches!("data/pets".parse::<DatasetSpec>().unwrap(), DatasetSpec::Folder(_)));
        assert!("pets".parse::<DatasetSpec>().unwrap_err().to_string().contains("path of an image folder"));
    }
}
