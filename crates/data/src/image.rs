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
    pub labels: Vec<u8>,
    pub class_names: Vec<String>,
    /// CIFAR-100's 20 superclasses, one per image (empty elsewhere).
    pub coarse_labels: Vec<u8>,
    pub coarse_names: Vec<String>,
}

impl ImageSet {
    /// A labelled (or, with empty `labels`, unlabelled) set without coarse labels.
    pub fn new(
        name: &'static str,
        split: Split,
        (height, width): (usize, usize),
        pixels: Vec<u8>,
        labels: Vec<u8>,
        class_names: Vec<String>,
    ) -> ImageSet {
        ImageSet {
            name,
            split,
            height,
            width,
            pixels,
            labels,
            class_names,
            coarse_labels: Vec::new(),
            coarse_names: Vec::new(),
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
