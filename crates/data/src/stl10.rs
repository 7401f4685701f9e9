//! STL-10, binary version: `stl10_binary/{train,test,unlabeled}_X.bin` (uint8, each image three
//! 96×96 channel planes stored column-major), `{train,test}_y.bin` (one label byte per image,
//! 1..=10), `class_names.txt`. train 5,000, test 8,000, unlabeled 100,000 images.

use std::path::Path;

use rayon::prelude::*;

use crate::files::{fetch_hint, read_names, require_dir, Expected};
use crate::{Error, ImageSet, Result, Split};

pub const NAME: &str = "stl10";
pub const DIR: &str = "stl10_binary";
pub const URL: &str = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz";
pub const SIDE: usize = 96;
pub const IMAGE_LEN: usize = 3 * SIDE * SIDE;
pub const CLASSES: usize = 10;

fn hint(root: &Path) -> String {
    fetch_hint(NAME, URL, root, DIR)
}

/// The image file, label file (if labelled) and image count of a split.
pub fn files(split: Split) -> (&'static str, Option<&'static str>, usize) {
    match split {
        Split::Train => ("train_X.bin", Some("train_y.bin"), 5_000),
        Split::Test => ("test_X.bin", Some("test_y.bin"), 8_000),
        Split::Unlabeled => ("unlabeled_X.bin", None, 100_000),
    }
}

/// One stored image (per channel, column after column) into planar row-major order.
pub fn transpose_image(stored: &[u8], out: &mut [u8]) {
    for c in 0..3 {
        let (src, dst) = (&stored[c * SIDE * SIDE..][..SIDE * SIDE], &mut out[c * SIDE * SIDE..][..SIDE * SIDE]);
        for col in 0..SIDE {
            for row in 0..SIDE {
                dst[row * SIDE + col] = src[col * SIDE + row];
            }
        }
    }
}

/// Load a split, transposing every image to row-major and mapping labels 1..=10 to 0..10.
pub fn load(root: &Path, split: Split) -> Result<ImageSet> {
    let dir = root.join(DIR);
    let hint = hint(root);
    require_dir(NAME, &dir, "train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin", &hint)?;
    let (x_file, y_file, count) = files(split);
    let labels = match y_file {
        Some(y) => {
            let path = dir.join(y);
            let raw = Expected { dataset: NAME, records: count, record_len: 1, hint: &hint }.read(&path)?;
            let mut labels = Vec::with_capacity(count);
            for (record, &l) in raw.iter().enumerate() {
                if !(1..=CLASSES as u8).contains(&l) {
                    return Err(Error::Format {
                        dataset: NAME,
                        path,
                        what: format!("record {record} has label {l}, expected 1..={CLASSES}"),
                    });
                }
                labels.push(l - 1);
            }
            labels
        }
        None => Vec::new(),
    };
    let stored =
        Expected { dataset: NAME, records: count, record_len: IMAGE_LEN, hint: &hint }.read(&dir.join(x_file))?;
    let mut pixels = vec![0u8; stored.len()];
    pixels.par_chunks_mut(IMAGE_LEN).zip(stored.par_chunks(IMAGE_LEN)).for_each(|(dst, src)| transpose_image(src, dst));
    drop(stored);
    let names_path = dir.join("class_names.txt");
    let class_names = read_names(NAME, &names_path, CLASSES, &hint)?;
    Ok(ImageSet::new(NAME, split, (SIDE, SIDE), pixels, labels, class_names))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The pixel a fixture stores at (image, channel, row, col): distinct along every axis.
    pub(crate) fn known_pixel(i: usize, c: usize, row: usize, col: usize) -> u8 {
        ((i * 7 + c * 50 + row * 3 + col) % 256) as u8
    }

    /// A split in the official layout, each channel written column by column.
    pub(crate) fn write_fixture(root: &Path, split: Split, count: usize) {
        let dir = root.join(DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let (x, y, _) = files(split);
        let mut bytes = Vec::with_capacity(count * IMAGE_LEN);
        for i in 0..count {
            for c in 0..3 {
                for col in 0..SIDE {
                    for row in 0..SIDE {
                        bytes.push(known_pixel(i, c, row, col));
                    }
                }
            }
        }
        std::fs::write(dir.join(x), bytes).unwrap();
        if let Some(y) = y {
            std::fs::write(dir.join(y), (0..count).map(|i| (i % CLASSES) as u8 + 1).collect::<Vec<_>>()).unwrap();
        }
        let names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];
        std::fs::write(dir.join("class_names.txt"), names.join("\n") + "\n").unwrap();
    }

    #[test]
    fn column_major_images_come_out_row_major() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path(), Split::Train, 5_000);
        let set = load(tmp.path(), Split::Train).unwrap();
        assert_eq!((set.len(), set.height, set.width), (5_000, 96, 96));
        for &(i, c, row, col) in &[(0, 0, 0, 1), (3, 1, 5, 17), (4999, 2, 95, 0), (17, 0, 10, 90)] {
            assert_eq!(set.image(i)[(c * SIDE + row) * SIDE + col], known_pixel(i, c, row, col), "{i} {c} {row} {col}");
        }
        assert_eq!(set.labels[13], 3, "labels 1..=10 become 0..10");
        assert_eq!(set.class_counts(), vec![500; 10]);
        assert_eq!(set.class_names[7], "monkey");
    }

    #[test]
    fn unlabeled_split_has_no_labels_and_bad_labels_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path(), Split::Test, 8_000);
        let path = tmp.path().join(DIR).join("test_y.bin");
        let mut y = std::fs::read(&path).unwrap();
        y[99] = 0;
        std::fs::write(&path, &y).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("test_y.bin") && err.contains("record 99 has label 0, expected 1..=10"), "{err}");
        std::fs::write(&path, &y[..100]).unwrap();
        let err = load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("test_y.bin has 100 bytes, expected 8000 bytes"), "{err}");
        let err = load(tmp.path(), Split::Unlabeled).unwrap_err().to_string();
        assert!(err.contains("unlabeled_X.bin") && err.contains("2764800000 bytes"), "{err}");
    }
}
