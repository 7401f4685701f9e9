//! A folder of the user's own images in torchvision's `ImageFolder` layout:
//! `train/<class>/…/*.{jpg,jpeg,png}` and, for evaluation, `val/<class>/…` with the same class
//! names (a subset of them is fine). Classes are the sub-folders of `train/` in sorted order, so
//! labels match torchvision's; images are in sorted path order.
//!
//! Images of any size are centre-cropped to a square and resized to `image_size` (antialiased
//! bilinear, like torchvision's `Resize` + `CenterCrop` on a square), then kept in memory in the
//! planar layout of the built-in datasets, so the augmentation pipeline sees a folder exactly as
//! it sees STL-10. Decoding happens once: each split is cached packed ([`crate::cache`]), keyed
//! by the files' paths, sizes and times and by `image_size`.
//!
//! Everything that would make a run read something other than what the folder says is an error
//! naming the file: a class folder without images, a `val/` class that `train/` lacks, an image
//! that does not decode. Files of other types are not images of the dataset; `datasets verify`
//! counts them so that nothing is left out unseen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::{Rgb, Window};
use crate::cache::{self, Fingerprint};
use crate::{jpeg, Error, ImageSet, Label, Result, Split};

/// File extensions read as images (any case), torchvision's common ones.
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The extensions as messages list them: `.jpg, .jpeg, .png`.
pub fn extensions_listed() -> String {
    EXTENSIONS.map(|e| format!(".{e}")).join(", ")
}

/// The largest stored side: 1,024² RGB bytes an image already make 3 MB.
pub const MAX_IMAGE_SIZE: usize = 1024;

/// The side images are stored at when the dataset does not say.
pub const DEFAULT_IMAGE_SIZE: usize = 64;

/// Labels are stored in two bytes per image.
pub const MAX_CLASSES: usize = Label::MAX as usize + 1;

/// A run's `dataset = { folder = "PATH", … }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderDataset {
    /// The folder holding `train/` (and `val/`); a relative path is under the data root.
    pub folder: String,
    /// The name reports show (default: the folder's own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stored side in pixels: every image is centre-cropped square and resized to it.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Side of the training crops (default: `image_size`); when smaller, evaluation centre-crops
    /// the stored images to it (as ImageNet's 224 of 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_size: Option<usize>,
    /// The encoder's stem: `small` (3×3, stride 1; max-pool above 32 px) or `imagenet` (7×7,
    /// stride 2, max-pool); default `small` for crops up to 96 px, `imagenet` above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem: Option<Stem>,
    /// Per-channel mean and standard deviation of the training images in [0, 1], the
    /// augmentations' normalisation; `infomax datasets stats` computes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<[f32; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<[f32; 3]>,
}

/// Which first layers the encoder has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// CIFAR's: a 3×3 stride-1 convolution (with the max-pool above 32 px, as the W-MSE code on
    /// STL-10 and Tiny-ImageNet).
    Small,
    /// torchvision's ImageNet stem: a 7×7 stride-2 convolution and a max-pool.
    Imagenet,
}

/// The largest training crop the small stem is chosen for by default (STL-10's 96 px).
pub const SMALL_STEM_MAX_CROP: usize = 96;

impl Stem {
    /// The stem a training crop of `crop` pixels gets unless a dataset says otherwise.
    pub fn for_crop(crop: usize) -> Stem {
        if crop <= SMALL_STEM_MAX_CROP {
            Stem::Small
        } else {
            Stem::Imagenet
        }
    }
}

fn default_image_size() -> usize {
    DEFAULT_IMAGE_SIZE
}

/// What a split of a folder holds: its classes (all of `train/`'s) and its images.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub classes: Vec<String>,
    /// (image, label) in sorted path order.
    pub images: Vec<(PathBuf, Label)>,
    /// Files under the class folders that are not images by their extension.
    pub other_files: Vec<PathBuf>,
}

/// Per-channel statistics of a set of images in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// What a folder's cached statistics say of its training images as they are now.
#[derive(Debug, Clone, PartialEq)]
pub enum CachedStats {
    /// Measured on exactly these files at this image size.
    Current(Stats),
    /// Measured on other files (images were added, removed or changed since): the record's path.
    Stale(PathBuf),
    /// Never measured at this image size.
    Missing,
}

/// The statistics record `datasets stats` caches: valid while the training files' fingerprint is.
#[derive(Serialize, Deserialize)]
struct StatsRecord {
    image_size: usize,
    images: usize,
    fingerprint: String,
    #[serde(flatten)]
    stats: Stats,
}

impl FolderDataset {
    /// A folder dataset with every field at its default.
    pub fn at(folder: impl Into<String>) -> FolderDataset {
        FolderDataset {
            folder: folder.into(),
            name: None,
            image_size: DEFAULT_IMAGE_SIZE,
            crop_size: None,
            stem: None,
            mean: None,
            std: None,
        }
    }

    /// The folder on disk, absolute (so that every spelling of it lists, and fingerprints, the
    /// same paths): relative paths are under the data root.
    pub fn dir(&self, root: &Path) -> PathBuf {
        let folder = Path::new(&self.folder);
        let dir = if folder.is_absolute() { folder.to_path_buf() } else { root.join(folder) };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// The name reports and errors use: `name`, else the folder's last component.
    pub fn name(&self) -> &'static str {
        let own = self.name.clone().unwrap_or_else(|| {
            Path::new(&self.folder)
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => s.to_str(),
                    _ => None,
                })
                .next_back()
                .unwrap_or("folder")
                .to_string()
        });
        intern(own)
    }

    /// The split's sub-folder: `train/`, or `val/` for the test split.
    fn split_dir(&self, root: &Path, split: Split) -> Result<PathBuf> {
        match split {
            Split::Train => Ok(self.dir(root).join("train")),
            Split::Test => Ok(self.dir(root).join("val")),
            Split::Unlabeled => Err(Error::Split {
                dataset: self.name(),
                split: split.to_string(),
                expected: "train, test (the val/ folder)".into(),
            }),
        }
    }

    fn layout_hint(&self, root: &Path) -> String {
        format!(
            "lay the images out as torchvision's ImageFolder does: {}/train/<class>/<image>.jpg and \
             {}/val/<class>/<image>.jpg ({})",
            self.dir(root).display(),
            self.dir(root).display(),
            extensions_listed()
        )
    }

    /// The training crop's side.
    pub fn crop(&self) -> usize {
        self.crop_size.unwrap_or(self.image_size)
    }

    /// The encoder's stem.
    pub fn stem(&self) -> Stem {
        self.stem.unwrap_or_else(|| Stem::for_crop(self.crop()))
    }

    /// The table's own rules: a stored side in 1..=[`MAX_IMAGE_SIZE`], a crop no larger and,
    /// when given, a name that is not empty and not a built-in dataset's (reports group runs by
    /// name).
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if !(1..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err((
                "image_size",
                format!("a side of 1 to {MAX_IMAGE_SIZE} pixels expected, got {}", self.image_size),
            ));
        }
        if let Some(crop) = self.crop_size.filter(|c| !(1..=self.image_size).contains(c)) {
            return Err((
                "crop_size",
                format!("a side of 1 to image_size ({}) pixels expected, got {crop}", self.image_size),
            ));
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() || name.parse::<crate::Dataset>().is_ok() {
                return Err((
                    "name",
                    format!("a name of its own expected (not empty, not a built-in dataset's), got `{name}`"),
                ));
            }
        }
        Ok(())
    }

    /// The error of a split folder [`subfolders`] could not list.
    fn unlisted(&self, root: &Path, dir: &Path, bad: Option<PathBuf>, holds: &str) -> Error {
        match bad {
            None => Error::Missing {
                dataset: self.name(),
                path: dir.to_path_buf(),
                expected: format!("a folder with {holds}"),
                hint: self.layout_hint(root),
            },
            Some(path) => Error::Format {
                dataset: self.name(),
                path,
                what: "a class folder whose name is not UTF-8; rename it".into(),
            },
        }
    }

    /// The classes: the sub-folders of `train/`, sorted.
    pub fn classes(&self, root: &Path) -> Result<Vec<String>> {
        let train = self.split_dir(root, Split::Train)?;
        let classes =
            subfolders(&train).map_err(|bad| self.unlisted(root, &train, bad, "one sub-folder of images per class"))?;
        if classes.is_empty() {
            return Err(Error::Format {
                dataset: self.name(),
                path: train,
                what: format!("no class folders; {}", self.layout_hint(root)),
            });
        }
        if classes.len() > MAX_CLASSES {
            return Err(Error::Format {
                dataset: self.name(),
                path: train,
                what: format!("{} class folders; a folder dataset has at most {MAX_CLASSES}", classes.len()),
            });
        }
        Ok(classes)
    }

    /// Every image of a split with its label, checked: each class folder of the split holds an
    /// image, and every class of `val/` is one of `train/`'s.
    pub fn listing(&self, root: &Path, split: Split) -> Result<Listing> {
        let classes = self.classes(root)?;
        let dir = self.split_dir(root, split)?;
        let present = if split == Split::Train {
            classes.clone()
        } else {
            let present = subfolders(&dir).map_err(|bad| {
                self.unlisted(root, &dir, bad, "the evaluation images, one sub-folder per class of train/")
            })?;
            if let Some(stray) = present.iter().find(|c| !classes.contains(c)) {
                return Err(Error::Format {
                    dataset: self.name(),
                    path: dir.join(stray),
                    what: format!("class `{stray}` is not a class of {}", dir.with_file_name("train").display()),
                });
            }
            present
        };
        let mut images = Vec::new();
        let mut other_files = Vec::new();
        for class in &present {
            let label = classes.iter().position(|c| c == class).expect("present classes are classes") as Label;
            let folder = dir.join(class);
            let mut files = Vec::new();
            walk(self.name(), &folder, &mut files)?;
            files.sort();
            let before = images.len();
            for f in files {
                if is_image(&f) {
                    images.push((f, label));
                } else {
                    other_files.push(f);
                }
            }
            if images.len() == before {
                return Err(Error::Format {
                    dataset: self.name(),
                    path: folder,
                    what: format!(
                        "class `{class}` holds no image ({})",
                        EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                    ),
                });
            }
        }
        if images.is_empty() {
            return Err(Error::Format {
                dataset: self.name(),
                path: dir,
                what: format!("no class folders; {}", self.layout_hint(root)),
            });
        }
        Ok(Listing { classes, images, other_files })
    }

    /// Load a split at `image_size`, from the packed cache when it is current.
    pub fn load(&self, root: &Path, split: Split) -> Result<ImageSet> {
        let listing = self.listing(root, split)?;
        let side = self.image_size;
        if let Err((field, what)) = self.check() {
            return Err(Error::Request(format!("{}: {field}: {what}", self.name())));
        }
        let dir = self.dir(root);
        let fingerprint = Fingerprint::of_files(listing.images.iter().map(|(p, l)| (p.as_path(), *l)))?;
        let key = format!("folder-{split}-{side}px");
        let image_len = 3 * side * side;
        let name = self.name();
        let (pixels, labels) = match cache::read(&dir, &key, &fingerprint, listing.images.len(), image_len) {
            Some(cached) => cached,
            None => {
                let decoded: Vec<Vec<u8>> =
                    listing.images.par_iter().map(|(p, _)| decode_square(name, p, side)).collect::<Result<_>>()?;
                let pixels = decoded.concat();
                let labels: Vec<Label> = listing.images.iter().map(|(_, l)| *l).collect();
                // A cache that cannot be written (read-only data and no cache folder) only costs time.
                let _ = cache::write(&dir, &key, &fingerprint, &pixels, &labels);
                (pixels, labels)
            }
        };
        let mut set = ImageSet::new(name, split, (side, side), pixels, labels, listing.classes);
        set.sorted_by_class = true;
        Ok(set)
    }
}

impl FolderDataset {
    fn stats_record(&self) -> String {
        format!("folder-stats-{}px", self.image_size)
    }

    fn train_fingerprint(&self, root: &Path) -> Result<Fingerprint> {
        let listing = self.listing(root, Split::Train)?;
        Fingerprint::of_files(listing.images.iter().map(|(p, l)| (p.as_path(), *l)))
    }

    /// Measure the training images' statistics at `image_size` and cache them, so that runs on
    /// this folder that give no `mean` and `std` normalise with them. Returns the statistics, the
    /// number of images and where the record went.
    pub fn measure_stats(&self, root: &Path) -> Result<(Stats, usize, PathBuf)> {
        let train = self.load(root, Split::Train)?;
        let measured = stats(&train);
        let record = StatsRecord {
            image_size: self.image_size,
            images: train.len(),
            fingerprint: self.train_fingerprint(root)?.hex(),
            stats: measured,
        };
        let json = serde_json::to_vec_pretty(&record).expect("a statistics record serialises");
        let at = cache::write_record(&self.dir(root), &self.stats_record(), &json)?;
        Ok((measured, train.len(), at))
    }

    /// The statistics `measure_stats` cached, checked against the training files as they are now.
    pub fn cached_stats(&self, root: &Path) -> Result<CachedStats> {
        let Some((path, bytes)) = cache::read_record(&self.dir(root), &self.stats_record()) else {
            return Ok(CachedStats::Missing);
        };
        // An unreadable record is one never written whole: as good as none.
        let Ok(record) = serde_json::from_slice::<StatsRecord>(&bytes) else { return Ok(CachedStats::Missing) };
        if record.image_size == self.image_size && record.fingerprint == self.train_fingerprint(root)?.hex() {
            Ok(CachedStats::Current(record.stats))
        } else {
            Ok(CachedStats::Stale(path))
        }
    }

    /// This dataset with the cached statistics filled in where it gives neither `mean` nor
    /// `std`; an error if they were measured on other files than `train/` holds now. Statistics
    /// found are kept for the process (a grid resolves the same dataset for every cell).
    pub fn with_measured_stats(mut self, root: &Path) -> Result<FolderDataset> {
        if self.mean.is_some() || self.std.is_some() {
            return Ok(self);
        }
        static FOUND: Mutex<BTreeMap<(PathBuf, usize), Stats>> = Mutex::new(BTreeMap::new());
        let key = (self.dir(root), self.image_size);
        let known = FOUND.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
        let found = match known {
            Some(found) => found,
            None => {
                let found = match self.cached_stats(root)? {
                    CachedStats::Current(s) => s,
                    CachedStats::Missing => return Ok(self),
                    CachedStats::Stale(path) => {
                        return Err(Error::Format {
                            dataset: self.name(),
                            path,
                            what: format!(
                                "these statistics were measured on other training images than train/ holds now: \
                                 run `infomax datasets stats {} --image-size {}` again",
                                key.0.display(),
                                self.image_size
                            ),
                        })
                    }
                };
                FOUND.lock().unwrap_or_else(|e| e.into_inner()).insert(key, found);
                found
            }
        };
        (self.mean, self.std) = (Some(found.mean), Some(found.std));
        Ok(self)
    }
}

/// One shared `&'static str` per distinct dataset name: image sets and errors carry names of
/// that lifetime, and a folder's name is only known when its experiment is read.
fn intern(name: String) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = names.get(name.as_str()) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}

pub(crate) fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// The names of the visible sub-folders of `dir` (hidden ones, starting with a dot, are not
/// classes), sorted; `Err(None)` when `dir` cannot be read, `Err(Some(path))` for a folder whose
/// name is not UTF-8 (a class name is text in every report).
pub(crate) fn subfolders(dir: &Path) -> std::result::Result<Vec<String>, Option<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|_| None)? {
        let path = entry.map_err(|_| None)?.path();
        if path.is_dir() && !is_hidden(&path) {
            match path.file_name().and_then(|n| n.to_str()) {
                Some(name) => out.push(name.to_string()),
                None => return Err(Some(path)),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every visible file under `dir`, recursively (as `ImageFolder` walks a class folder); a
/// folder that links back to one it is inside is an error naming the link.
pub(crate) fn walk(dataset: &'static str, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    fn inner(dataset: &'static str, dir: &Path, out: &mut Vec<PathBuf>, inside: &mut Vec<PathBuf>) -> Result<()> {
        let io = |source| Error::Io { path: dir.to_path_buf(), source };
        let real = std::fs::canonicalize(dir).map_err(io)?;
        if inside.contains(&real) {
            return Err(Error::Format {
                dataset,
                path: dir.to_path_buf(),
                what: format!("links back to {}, a folder it is inside", real.display()),
            });
        }
        inside.push(real);
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if is_hidden(&path) {
                continue;
            }
            if path.is_dir() {
                inner(dataset, &path, out, inside)?;
            } else {
                out.push(path);
            }
        }
        inside.pop();
        Ok(())
    }
    inner(dataset, dir, out, &mut Vec::new())
}

/// A file's bytes, an error naming it.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// An image file's pixels as interleaved RGB bytes, `(rgb, width, height)`: JPEGs on
/// libjpeg-turbo (at `1 / scale(width, height)`, one of [`jpeg::SCALES`]), other formats (PNG,
/// the JPEGs it leaves) whole on the `image` crate. Greyscale and alpha become RGB; any error
/// names the file.
fn decode_bytes(
    dataset: &'static str,
    path: &Path,
    bytes: &[u8],
    scale: impl Fn(usize, usize) -> usize,
) -> Result<(Vec<u8>, usize, usize)> {
    let bad = |what: String| Error::Format { dataset, path: path.to_path_buf(), what };
    if let jpeg::Jpeg::Decodable(head) = jpeg::header(bytes).map_err(bad)? {
        let decoded = jpeg::decode(bytes, None, scale(head.width, head.height)).map_err(bad)?;
        return Ok((decoded.rgb, decoded.window.width, decoded.window.height));
    }
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?
        .decode()
        .map_err(|e| bad(format!("not a readable image (JPEG or PNG): {e}")))?
        .into_rgb8();
    let (width, height) = (img.width() as usize, img.height() as usize);
    Ok((img.into_raw(), width, height))
}

/// Decode an image file at its own size into the augmentations' planar `[0, 1]` image: the
/// streaming path, for images too many or too large to keep decoded.
pub fn decode_rgb(dataset: &'static str, path: &Path) -> Result<Rgb> {
    rgb_of(dataset, path, &read(path)?)
}

/// [`decode_rgb`] of the file at `path` whose bytes are `bytes`.
pub(crate) fn rgb_of(dataset: &'static str, path: &Path, bytes: &[u8]) -> Result<Rgb> {
    let (rgb, width, height) = decode_bytes(dataset, path, bytes, |_, _| 1)?;
    Ok(Rgb::from_interleaved_u8(&rgb, height, width))
}

/// `window` (full-size pixels) of the image file whose bytes are `bytes`, decoded at `1 / scale`
/// ([`jpeg::decode`]): the decoded pixels, and where they sit in the scaled image.
pub(crate) fn decode_window(
    dataset: &'static str,
    path: &Path,
    bytes: &[u8],
    window: Window,
    scale: usize,
) -> Result<(Rgb, Window)> {
    let decoded = jpeg::decode(bytes, Some(window), scale).map_err(|what| Error::Format {
        dataset,
        path: path.to_path_buf(),
        what,
    })?;
    let at = decoded.window;
    Ok((Rgb::from_interleaved_u8(&decoded.rgb, at.height, at.width), at))
}

/// Decode an image file into planar RGB bytes of `side × side`: the centred square of its
/// shorter side, resized with an antialiased bilinear filter; greyscale and alpha become RGB.
pub fn decode_square(dataset: &'static str, path: &Path, side: usize) -> Result<Vec<u8>> {
    // A JPEG is decoded as small as its shorter side allows, still at least `side`.
    let largest = |w: usize, h: usize| jpeg::scale_for(&[Window { top: 0, left: 0, height: h, width: w }], side);
    let (rgb, w, h) = decode_bytes(dataset, path, &read(path)?, largest)?;
    let img = image::RgbImage::from_raw(w as u32, h as u32, rgb).expect("3·w·h bytes");
    let (w, h) = (img.width(), img.height());
    let s = w.min(h);
    let square = image::imageops::crop_imm(&img, (w - s) / 2, (h - s) / 2, s, s).to_image();
    let square = if s as usize == side {
        square
    } else {
        image::imageops::resize(&square, side as u32, side as u32, image::imageops::FilterType::Triangle)
    };
    let n = side * side;
    let mut planar = vec![0u8; 3 * n];
    for (i, px) in square.pixels().enumerate() {
        for c in 0..3 {
            planar[c * n + i] = px.0[c];
        }
    }
    Ok(planar)
}

/// Per-channel mean and (population) standard deviation of a set's pixels in [0, 1].
pub fn stats(set: &ImageSet) -> Stats {
    let plane = set.height * set.width;
    let (mut sum, mut sq) = ([0f64; 3], [0f64; 3]);
    for i in 0..set.len() {
        let img = set.image(i);
        for c in 0..3 {
            for &v in &img[c * plane..(c + 1) * plane] {
                let x = v as f64 / 255.0;
                sum[c] += x;
                sq[c] += x * x;
            }
        }
    }
    let n = (set.len() * plane).max(1) as f64;
    let mean = sum.map(|s| s / n);
    let std = [0, 1, 2].map(|c| (sq[c] / n - mean[c] * mean[c]).max(0.0).sqrt());
    let round = |x: f64| ((x * 1e4).round() / 1e4) as f32;
    Stats { mean: mean.map(round), std: std.map(round) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ImageFolder of `classes` classes with JPEG and PNG images of two sizes: image `k` of
    /// class `c` is a flat colour (c·40, k·30, 200) so its label can be read back from pixels.
    pub(crate) fn write_fixture(dir: &Path, classes: usize, per_class: usize) {
        for (split, n) in [("train", per_class), ("val", 1)] {
            for c in 0..classes {
                let folder = dir.join(split).join(format!("class_{c}"));
                std::fs::create_dir_all(&folder).unwrap();
                for k in 0..n {
                    let (w, h) = if k.is_multiple_of(2) { (48, 40) } else { (80, 96) };
                    let img = image::RgbImage::from_pixel(w, h, image::Rgb([(c * 40) as u8, (k * 30) as u8, 200]));
                    let (ext, format) = if k.is_multiple_of(2) {
                        ("jpg", image::ImageFormat::Jpeg)
                    } else {
                        ("PNG", image::ImageFormat::Png)
                    };
                    img.save_with_format(folder.join(format!("img_{k}.{ext}")), format).unwrap();
                }
            }
        }
    }

    fn close(a: u8, b: u8) -> bool {
        (a as i32 - b as i32).abs() <= 3
    }

    #[test]
    fn reads_sorted_classes_both_formats_and_any_size_at_the_stored_side() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(&tmp.path().join("pets"), 3, 3);
        std::fs::write(tmp.path().join("pets/train/class_1/notes.txt"), "not an image").unwrap();
        let folder = FolderDataset { image_size: 32, ..FolderDataset::at("pets") };
        assert_eq!(folder.name(), "pets");
        let train = folder.load(tmp.path(), Split::Train).unwrap();
        assert_eq!((train.len(), train.height, train.num_classes()), (9, 32, 3));
        assert_eq!(train.class_names, ["class_0", "class_1", "class_2"]);
        assert_eq!(train.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
        // Image 4 is class 1's img_1.PNG: (40, 30, 200) everywhere.
        let img = train.image(4);
        assert!(close(img[100], 40) && close(img[1024 + 100], 30) && close(img[2048 + 100], 200));
        let listing = folder.listing(tmp.path(), Split::Train).unwrap();
        assert_eq!(listing.other_files.len(), 1, "the text file is counted, not read");
        let val = folder.load(tmp.path(), Split::Test).unwrap();
        assert_eq!((val.len(), val.labels.clone()), (3, vec![0, 1, 2]));
        // An absolute path works as well, and a second load is served from the cache.
        let abs = FolderDataset { folder: tmp.path().join("pets").display().to_string(), ..folder.clone() };
        assert_eq!(abs.load(Path::new("/nonexistent"), Split::Test).unwrap().pixels, val.pixels);
        assert!(cache::locations(&tmp.path().join("pets"), "folder-test-32px").iter().any(|p| p.exists()));
    }

    #[test]
    fn a_streamed_image_keeps_its_own_size_and_colours() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path(), 2, 2);
        let img = decode_rgb("t", &tmp.path().join("train/class_1/img_1.PNG")).unwrap();
        assert_eq!((img.height, img.width), (96, 80));
        let plane = 96 * 80;
        assert_eq!(
            [img.data[5], img.data[plane + 5], img.data[2 * plane + 5]],
            [40.0 / 255.0, 30.0 / 255.0, 200.0 / 255.0]
        );
        let err = decode_rgb("t", &tmp.path().join("train/class_1/none.jpg")).unwrap_err().to_string();
        assert!(err.contains("none.jpg"), "{err}");
    }

    #[test]
    fn the_statistics_of_flat_colours_are_exact() {
        let set =
            ImageSet::new("s", Split::Train, (1, 1), vec![0, 255, 51, 255, 255, 51], vec![0u8, 0], vec!["a".into()]);
        let s = stats(&set);
        assert_eq!(s.mean, [0.5, 1.0, 0.2]);
        assert_eq!(s.std, [0.5, 0.0, 0.0]);
    }

    #[test]
    fn measured_statistics_are_cached_until_the_training_images_change() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write_fixture(&root.join("pets"), 2, 2);
        let folder = FolderDataset { image_size: 16, ..FolderDataset::at("pets") };
        assert_eq!(folder.cached_stats(root).unwrap(), CachedStats::Missing);
        assert_eq!(folder.clone().with_measured_stats(root).unwrap(), folder, "nothing cached: nothing filled");

        let (measured, images, at) = folder.measure_stats(root).unwrap();
        assert_eq!(images, 4);
        assert!(at.starts_with(root.join("pets")), "{at:?}");
        assert_eq!(measured, stats(&folder.load(root, Split::Train).unwrap()));
        assert_eq!(folder.cached_stats(root).unwrap(), CachedStats::Current(measured));
        // Another size is another measurement; statistics a dataset gives are its own.
        let other = FolderDataset { image_size: 8, ..folder.clone() };
        assert_eq!(other.cached_stats(root).unwrap(), CachedStats::Missing);
        let given = FolderDataset { mean: Some([0.5; 3]), std: Some([0.25; 3]), ..folder.clone() };
        assert_eq!(given.clone().with_measured_stats(root).unwrap(), given);
        let filled = folder.clone().with_measured_stats(root).unwrap();
        assert_eq!((filled.mean, filled.std), (Some(measured.mean), Some(measured.std)));

        // A training image added since: the record is stale and a run is refused, naming it.
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
        img.save(root.join("pets/train/class_0/new.png")).unwrap();
        assert_eq!(folder.cached_stats(root).unwrap(), CachedStats::Stale(at.clone()));
        // (Each folder is looked up once per process: the refusal is shown on one not yet seen.)
        write_fixture(&root.join("cats"), 2, 2);
        let cats = FolderDataset { image_size: 16, ..FolderDataset::at("cats") };
        let (_, _, cats_at) = cats.measure_stats(root).unwrap();
        img.save(root.join("cats/train/class_1/new.png")).unwrap();
        let err = cats.with_measured_stats(root).unwrap_err().to_string();
        assert!(err.contains(cats_at.to_str().unwrap()) && err.contains("datasets stats"), "{err}");
        // A record that is not whole is no record.
        std::fs::write(&at, b"{").unwrap();
        assert_eq!(folder.cached_stats(root).unwrap(), CachedStats::Missing);
    }

    #[test]
    fn bad_folders_are_errors_naming_the_place() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let folder = FolderDataset::at("mine");
        let err = folder.load(root, Split::Train).unwrap_err().to_string();
        assert!(err.contains("mine/train") && err.contains("ImageFolder"), "missing folder: {err}");

        write_fixture(&root.join("mine"), 2, 2);
        std::fs::create_dir_all(root.join("mine/train/class_9")).unwrap();
        let err = folder.load(root, Split::Train).unwrap_err().to_string();
        assert!(err.contains("class_9") && err.contains("holds no image"), "empty class: {err}");
        std::fs::remove_dir(root.join("mine/train/class_9")).unwrap();

        std::fs::create_dir_all(root.join("mine/val/zebra")).unwrap();
        let err = folder.load(root, Split::Test).unwrap_err().to_string();
        assert!(err.contains("val/zebra") && err.contains("not a class of"), "stray val class: {err}");
        std::fs::remove_dir(root.join("mine/val/zebra")).unwrap();

        std::fs::write(root.join("mine/train/class_1/img_0.jpg"), b"\xff\xd8\xff\xe0 truncated").unwrap();
        let err = folder.load(root, Split::Train).unwrap_err().to_string();
        assert!(err.contains("class_1/img_0.jpg") && err.contains("not a readable image"), "corrupt: {err}");

        let err = folder.load(root, Split::Unlabeled).unwrap_err().to_string();
        assert!(err.contains("no split `unlabeled`"), "{err}");

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("..", root.join("mine/train/class_0/up")).unwrap();
            let err = folder.listing(root, Split::Train).unwrap_err().to_string();
            assert!(err.contains("class_0/up") && err.contains("links back to"), "symlink loop: {err}");
        }
    }

    #[test]
    fn the_table_checks_its_size_and_name() {
        let ok = FolderDataset { image_size: 224, name: Some("pets".into()), ..FolderDataset::at("p") };
        assert_eq!(ok.check(), Ok(()));
        for (bad, field) in [
            (FolderDataset { image_size: 0, ..ok.clone() }, "image_size"),
            (FolderDataset { image_size: MAX_IMAGE_SIZE + 1, ..ok.clone() }, "image_size"),
            (FolderDataset { name: Some("cifar10".into()), ..ok.clone() }, "name"),
            (FolderDataset { name: Some(" ".into()), ..ok.clone() }, "name"),
        ] {
            assert_eq!(bad.check().unwrap_err().0, field, "{bad:?}");
        }
    }
}
