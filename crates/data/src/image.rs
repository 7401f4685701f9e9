//! An in-memory image set in planar (CHW) `u8` layout, as the binary formats store it.

use std::fmt;

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
    /// Images without labels (STL-10's 100,000 pre-training images).
    Unlabeled,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Test, Split::Unlabeled];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Split {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown split `{s}`; expected one of train, test, unlabeled"))
    }
}

/// A class index. Two bytes: ImageNet has 1,000 classes.
pub type Label = u16;

/// `len` images of `3 × height × width` bytes, channel planes R, G, B, each row-major.
///
/// `labels` holds one class per image, or is empty for an unlabelled set (STL-10's unlabeled
/// split, or a pre-training set that includes it). CIFAR-100 also carries its coarse labels.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub name: &'static str,
    pub split: Split,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<Label>,
    pub class_names: Vec<String>,
    /// CIFAR-100's 20 superclasses, one per image (empty elsewhere).
    pub coarse_labels: Vec<u8>,
    pub coarse_names: Vec<String>,
    /// Whether the images are stored class after class (Tiny-ImageNet's training split, a
    /// folder's splits), so that a subset is spread over the set rather than its head.
    pub sorted_by_class: bool,
}

impl ImageSet {
    /// A labelled (or, with empty `labels`, unlabelled) set without coarse labels.
    pub fn new<L: Into<Label>>(
        name: &'static str,
        split: Split,
        (height, width): (usize, usize),
        pixels: Vec<u8>,
        labels: Vec<L>,
        class_names: Vec<String>,
    ) -> ImageSet {
        ImageSet {
            name,
            split,
            height,
            width,
            pixels,
            labels: labels.into_iter().map(Into::into).collect(),
            class_names,
            coarse_labels: Vec::new(),
            coarse_names: Vec::new(),
            sorted_by_class: false,
        }
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every image has a label.
    pub fn is_labelled(&self) -> bool {
        !self.labels.is_empty() && self.labels.len() == self.len()
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Bytes of one image (3 planes).
    pub fn image_len(&self) -> usize {
        3 * self.height * self.width
    }

    /// The planar bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The first `n` images (all of them when `n` is larger), in stored order.
    pub fn head(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n.min(self.labels.len())].to_vec(),
            class_names: self.class_names.clone(),
            coarse_labels: self.coarse_labels[..n.min(self.coarse_labels.len())].to_vec(),
            coarse_names: self.coarse_names.clone(),
            ..*self
        }
    }

    /// The images `indices`, in that order.
    pub fn pick(&self, indices: &[usize]) -> ImageSet {
        let labelled = self.is_labelled();
        let coarse = self.coarse_labels.len() == self.len();
        ImageSet {
            pixels: indices.iter().flat_map(|&i| self.image(i).iter().copied()).collect(),
            labels: if labelled { indices.iter().map(|&i| self.labels[i]).collect() } else { Vec::new() },
            class_names: self.class_names.clone(),
            coarse_labels: if coarse { indices.iter().map(|&i| self.coarse_labels[i]).collect() } else { Vec::new() },
            coarse_names: self.coarse_names.clone(),
            ..*self
        }
    }

    /// This set followed by `other` (same image size); labelled only when both are.
    pub fn concat(mut self, other: &ImageSet) -> ImageSet {
        assert_eq!((self.height, self.width), (other.height, other.width), "concatenated sets share an image size");
        let labelled = self.is_labelled() && other.is_labelled();
        self.pixels.extend_from_slice(&other.pixels);
        if labelled {
            self.labels.extend_from_slice(&other.labels);
        } else {
            self.labels.clear();
        }
        self.coarse_labels.clear();
        self
    }

    /// Images per class, indexed by label (all zero for an unlabelled set).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// A split read from its image files as batches need them, at each file's own size: the path
/// for sets too large to keep decoded (ImageNet). Files are in the dataset's order (classes
/// sorted, then paths sorted), each with its label.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    pub name: &'static str,
    pub split: Split,
    pub files: Vec<std::path::PathBuf>,
    pub labels: Vec<Label>,
    pub class_names: Vec<String>,
    /// What to do with a file that does not decode when a batch needs it.
    pub unreadable: Unreadable,
}

/// The policy for a file found unreadable while training: an error (the default), or, when the
/// user allows it, a counted and logged skip: the image is replaced by the next one that decodes.
#[derive(Debug, Clone, Default)]
pub struct Unreadable {
    skip: Option<std::sync::Arc<std::sync::Mutex<Vec<std::path::PathBuf>>>>,
}

impl Unreadable {
    /// Files that do not decode are skipped and remembered.
    pub fn skip() -> Unreadable {
        Unreadable { skip: Some(Default::default()) }
    }

    /// The files skipped so far, each once, in the order they were found.
    pub fn skipped(&self) -> Vec<std::path::PathBuf> {
        self.skip.as_ref().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default()
    }
}

/// How many other files a skipped one may be replaced by before the batch fails: a folder
/// where that many in a row do not decode is broken, not a file or two.
const MAX_SKIPS_IN_A_ROW: usize = 16;

impl ImageFiles {
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// `n` files spread evenly over the set (every file when `n` is larger): the files are
    /// sorted by class, so the first `n` would hold the first classes only.
    pub fn spread(&self, n: usize) -> ImageFiles {
        let picks = spread_indices(self.len(), n);
        ImageFiles {
            files: picks.iter().map(|&i| self.files[i].clone()).collect(),
            labels: picks.iter().filter_map(|&i| self.labels.get(i).copied()).collect(),
            class_names: self.class_names.clone(),
            unreadable: self.unreadable.clone(),
            ..*self
        }
    }

    /// Image `i` decoded, or, under [`Unreadable::skip`], the next file of its class (the next
    /// file, unlabelled) that decodes: its label stays true, so evaluation can skip too.
    pub fn rgb(&self, i: usize) -> crate::Result<crate::augment::Rgb> {
        self.decoded(i, |path| crate::folder::decode_rgb(self.name, path))
    }

    /// `decode` of file `i`, or, under [`Unreadable::skip`], of the next file of its class (the
    /// next file, unlabelled) it succeeds on, each failure logged and counted once.
    pub fn decoded<T>(&self, i: usize, decode: impl Fn(&std::path::Path) -> crate::Result<T>) -> crate::Result<T> {
        let Some(skipped) = &self.unreadable.skip else {
            return decode(&self.files[i]);
        };
        // The files of `i`'s class (they are contiguous), from `i` on and wrapping round.
        let label = self.labels.get(i);
        let (mut start, mut end) = (i, i + 1);
        if label.is_some() {
            while start > 0 && self.labels.get(start - 1) == label {
                start -= 1;
            }
            while end < self.len() && self.labels.get(end) == label {
                end += 1;
            }
        } else {
            (start, end) = (0, self.len());
        }
        let class = end - start;
        let mut first_error = None;
        for k in 0..=MAX_SKIPS_IN_A_ROW.min(class - 1) {
            let path = &self.files[start + (i - start + k) % class];
            match decode(path) {
                Ok(decoded) => return Ok(decoded),
                Err(e) => {
                    let mut list = skipped.lock().unwrap_or_else(|e| e.into_inner());
                    if !list.contains(path) {
                        tracing::warn!("skipping an unreadable image: {e}");
                        list.push(path.clone());
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("a failed decode was recorded"))
    }
}

/// `n` indices spread evenly over `0..len` (all of them when `n` is larger), in order.
pub fn spread_indices(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        (0..len).collect()
    } else {
        (0..n).map(|k| k * len / n).collect()
    }
}

/// A split's images: decoded in memory, or read from their files as batches need them.
#[derive(Debug, Clone)]
pub enum Images {
    Decoded(ImageSet),
    Files(ImageFiles),
}

impl From<ImageSet> for Images {
    fn from(set: ImageSet) -> Images {
        Images::Decoded(set)
    }
}

impl Images {
    pub fn name(&self) -> &'static str {
        match self {
            Images::Decoded(s) => s.name,
            Images::Files(f) => f.name,
        }
    }

    pub fn split(&self) -> Split {
        match self {
            Images::Decoded(s) => s.split,
            Images::Files(f) => f.split,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Images::Decoded(s) => s.len(),
            Images::Files(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> &[Label] {
        match self {
            Images::Decoded(s) => &s.labels,
            Images::Files(f) => &f.labels,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Images::Decoded(s) => s.num_classes(),
            Images::Files(f) => f.class_names.len(),
        }
    }

    /// The stored side of decoded images; files have none (each has its own size).
    pub fn stored_side(&self) -> Option<usize> {
        match self {
            Images::Decoded(s) => Some(s.height),
            Images::Files(_) => None,
        }
    }

    /// At most `n` images: the first `n` of a set stored in mixed order (CIFAR, STL-10), else
    /// `n` spread over it so that every class is among them ([`spread_indices`]).
    pub fn subset(&self, n: usize) -> Images {
        match self {
            Images::Decoded(s) if s.sorted_by_class => Images::Decoded(s.pick(&spread_indices(s.len(), n))),
            Images::Decoded(s) => Images::Decoded(s.head(n)),
            Images::Files(f) => Images::Files(f.spread(n)),
        }
    }

    /// The same images without their labels: what pre-training reads. Under
    /// [`Unreadable::skip`] an unreadable file among them is then replaced by the next readable
    /// file of any class, not only of its own ([`ImageFiles::rgb`]): a subset may hold a single
    /// image of a class.
    pub fn unlabelled(self) -> Images {
        match self {
            Images::Files(f) => Images::Files(ImageFiles { labels: Vec::new(), ..f }),
            decoded => decoded,
        }
    }

    /// The indices of [`Images::subset`]`(n)`'s images in this set.
    pub fn subset_indices(&self, n: usize) -> Vec<usize> {
        match self {
            Images::Decoded(s) if !s.sorted_by_class => (0..n.min(s.len())).collect(),
            _ => spread_indices(self.len(), n),
        }
    }

    /// The files found unreadable and skipped so far (none for a decoded set).
    pub fn skipped(&self) -> Vec<std::path::PathBuf> {
        match self {
            Images::Decoded(_) => Vec::new(),
            Images::Files(f) => f.unreadable.skipped(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A k-NN bank of 200 of ImageNet-100's stand-in (3 files a class, sorted by class) holds
    /// every class; the first 200 would hold 67.
    #[test]
    fn spread_indices_cover_every_class_of_a_sorted_set() {
        let picks = spread_indices(300, 200);
        assert_eq!((picks.len(), picks[0], picks.windows(2).all(|w| w[0] < w[1])), (200, 0, true));
        let classes: std::collections::BTreeSet<usize> = picks.iter().map(|i| i / 3).collect();
        assert_eq!(classes.len(), 100);
        assert_eq!(spread_indices(5, 9), [0, 1, 2, 3, 4], "all of them when asked for more");
    }

    /// A decoded set stored class after class is subset like files are; one in mixed order
    /// keeps its head.
    #[test]
    fn a_class_sorted_set_is_subset_over_its_classes() {
        let labels: Vec<Label> = (0..12).map(|i| i / 4).collect();
        let pixels: Vec<u8> = (0..12 * 3).map(|i| i as u8).collect();
        let mut set =
            ImageSet::new("s", Split::Train, (1, 1), pixels, labels, vec!["a".into(), "b".into(), "c".into()]);
        let head = Images::Decoded(set.clone()).subset(3);
        assert_eq!(head.labels(), [0, 0, 0]);
        set.sorted_by_class = true;
        let spread = Images::Decoded(set.clone()).subset(3);
        assert_eq!((spread.labels(), Images::Decoded(set.clone()).subset_indices(3)), (&[0, 1, 2][..], vec![0, 4, 8]));
        let Images::Decoded(picked) = spread else { unreachable!() };
        assert_eq!((picked.image(1), picked.len()), (set.image(4), 3), "the pixels travel with their labels");
    }
}
