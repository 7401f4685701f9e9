//! Tiny-ImageNet-200 in its official folder layout: `tiny-imagenet-200/wnids.txt` (200 WordNet
//! ids), `words.txt` (id → names), `train/<wnid>/images/*.JPEG` (500 per class) and
//! `val/images/*.JPEG` labelled by `val/val_annotations.txt` (file, wnid, box; 50 per class).
//! Images are 64×64; the few greyscale JPEGs become RGB.
//!
//! Decoding 110,000 JPEGs every run would cost more than a CIFAR epoch, so each split is decoded
//! once into a packed cache ([`crate::cache`]) keyed by a fingerprint of the source files.
//! Classes are the WordNet ids in sorted order (torchvision's `ImageFolder` convention) and
//! images are in sorted file-name order, so labels and order do not depend on the file system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cache::{self, Fingerprint};
use crate::files::{fetch_hint, require_dir};
use crate::{Error, ImageSet, Label, Result, Split};

pub const NAME: &str = "tiny-imagenet";
pub const DIR: &str = "tiny-imagenet-200";
pub const URL: &str = "http://cs231n.stanford.edu/tiny-imagenet-200.zip";
pub const SIDE: usize = 64;
pub const CLASSES: usize = 200;

fn hint(root: &Path) -> String {
    fetch_hint(NAME, URL, root, DIR)
}

/// Images per class in the official release: 500 in train, 50 in val.
pub fn per_class(split: Split) -> usize {
    match split {
        Split::Train => 500,
        _ => 50,
    }
}

fn read_text(path: &Path, hint: &str, expected: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|_| Error::Missing {
        dataset: NAME,
        path: path.to_path_buf(),
        expected: expected.to_string(),
        hint: hint.to_string(),
    })
}

/// The sorted WordNet ids of `wnids.txt` and their names from `words.txt`.
fn classes(dir: &Path, hint: &str) -> Result<(Vec<String>, Vec<String>)> {
    let path = dir.join("wnids.txt");
    let mut wnids: Vec<String> = read_text(&path, hint, "200 WordNet ids, one per line")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    wnids.sort();
    wnids.dedup();
    if wnids.len() != CLASSES {
        return Err(Error::Format {
            dataset: NAME,
            path,
            what: format!("expected {CLASSES} distinct WordNet ids, found {}", wnids.len()),
        });
    }
    let words_path = dir.join("words.txt");
    let words: HashMap<String, String> = read_text(&words_path, hint, "lines of `wnid<TAB>names`")?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, names)| (id.trim().to_string(), names.trim().to_string()))
        .collect();
    let names = wnids
        .iter()
        .map(|id| {
            words.get(id).cloned().ok_or_else(|| Error::Format {
                dataset: NAME,
                path: words_path.clone(),
                what: format!("no names for class {id} of wnids.txt"),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((wnids, names))
}

/// Every (image path, label) of a split, in a file-system-independent order, checked against
/// `per_class` images per class.
fn listing(dir: &Path, split: Split, wnids: &[String], per_class: usize) -> Result<Vec<(PathBuf, u8)>> {
    let label_of: HashMap<&str, u8> = wnids.iter().enumerate().map(|(i, w)| (w.as_str(), i as u8)).collect();
    let mut items = Vec::with_capacity(wnids.len() * per_class);
    match split {
        Split::Train => {
            for (label, wnid) in wnids.iter().enumerate() {
                let folder = dir.join("train").join(wnid).join("images");
                let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                    .map_err(|source| Error::Io { path: folder.clone(), source })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpeg")))
                    .collect();
                if files.len() != per_class {
                    return Err(Error::Format {
                        dataset: NAME,
                        path: folder,
                        what: format!("{} JPEG images, expected {per_class}", files.len()),
                    });
                }
                files.sort();
                items.extend(files.into_iter().map(|f| (f, label as u8)));
            }
        }
        _ => {
            let path = dir.join("val").join("val_annotations.txt");
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
            for (line_no, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let mut fields = line.split('\t');
                let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
                    return Err(Error::Format {
                        dataset: NAME,
                        path,
                        what: format!("line {}: expected `file<TAB>wnid<TAB>box`, got `{line}`", line_no + 1),
                    });
                };
                let Some(&label) = label_of.get(wnid.trim()) else {
                    return Err(Error::Format {
                        dataset: NAME,
                        path,
                        what: format!("line {}: class `{wnid}` is not in wnids.txt", line_no + 1),
                    });
                };
                items.push((dir.join("val").join("images").join(file.trim()), label));
            }
            items.sort();
            let mut counts = vec![0usize; wnids.len()];
            items.iter().for_each(|(_, l)| counts[*l as usize] += 1);
            if let Some((class, n)) = counts.iter().enumerate().find(|(_, n)| **n != per_class) {
                return Err(Error::Format {
                    dataset: NAME,
                    path,
                    what: format!("class {} has {n} images, expected {per_class}", wnids[class]),
                });
            }
        }
    }
    Ok(items)
}

/// Decode one JPEG into planar RGB bytes, greyscale expanded to three equal planes.
pub fn decode(path: &Path) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?
        .with_guessed_format()
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?
        .decode()
        .map_err(|e| Error::Format {
            dataset: NAME,
            path: path.to_path_buf(),
            what: format!("not a readable JPEG: {e}"),
        })?;
    if (img.width() as usize, img.height() as usize) != (SIDE, SIDE) {
        return Err(Error::Format {
            dataset: NAME,
            path: path.to_path_buf(),
            what: format!("image is {}×{}, expected {SIDE}×{SIDE}", img.width(), img.height()),
        });
    }
    let rgb = img.to_rgb8();
    let mut planar = vec![0u8; 3 * SIDE * SIDE];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            planar[c * SIDE * SIDE + i] = px.0[c];
        }
    }
    Ok(planar)
}

/// Load a split (test = the labelled val folder), from the packed cache when it is current.
pub fn load(root: &Path, split: Split) -> Result<ImageSet> {
    load_expecting(root, split, per_class(split))
}

/// [`load`] with a given number of images per class (the tests' fixtures are small).
pub(crate) fn load_expecting(root: &Path, split: Split, per_class: usize) -> Result<ImageSet> {
    let dir = root.join(DIR);
    let hint = hint(root);
    require_dir(NAME, &dir, "wnids.txt, words.txt, train/, val/", &hint)?;
    let (wnids, names) = classes(&dir, &hint)?;
    let items = listing(&dir, split, &wnids, per_class)?;
    let fingerprint = Fingerprint::of_files(items.iter().map(|(p, l)| (p.as_path(), Label::from(*l))))?;
    let key = format!("{NAME}-{split}");
    // Training images are stored class after class; the validation images in mixed order.
    let sorted = |mut set: ImageSet| {
        set.sorted_by_class = split == Split::Train;
        set
    };
    if let Some((pixels, labels)) = cache::read(&dir, &key, &fingerprint, items.len(), 3 * SIDE * SIDE) {
        return Ok(sorted(ImageSet::new(NAME, split, (SIDE, SIDE), pixels, labels, names)));
    }
    let decoded: Vec<Vec<u8>> = items.par_iter().map(|(p, _)| decode(p)).collect::<Result<_>>()?;
    let pixels: Vec<u8> = decoded.concat();
    let labels: Vec<Label> = items.iter().map(|(_, l)| Label::from(*l)).collect();
    // A cache that cannot be written (read-only data and no cache folder) only costs time.
    let _ = cache::write(&dir, &key, &fingerprint, &pixels, &labels);
    Ok(sorted(ImageSet::new(NAME, split, (SIDE, SIDE), pixels, labels, names)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn wnid(i: usize) -> String {
        format!("n{:08}", 1000 + i * 7)
    }

    /// A colour that identifies (class, index): red = class, green = index·20, blue = 200.
    fn colour(class: usize, k: usize) -> [u8; 3] {
        [class as u8, (k * 20) as u8, 200]
    }

    /// The official layout with `per_class` train and val JPEGs per class; the first val image
    /// of class 1 is greyscale.
    pub(crate) fn write_fixture(root: &Path, per_class: usize) {
        let dir = root.join(DIR);
        let ids: Vec<String> = (0..CLASSES).map(wnid).collect();
        std::fs::create_dir_all(dir.join("val/images")).unwrap();
        // wnids.txt in a non-sorted order, as the official file is.
        let mut listed = ids.clone();
        listed.reverse();
        std::fs::write(dir.join("wnids.txt"), listed.join("\n") + "\n").unwrap();
        let words: String = ids.iter().enumerate().map(|(i, w)| format!("{w}\tthing {i}, object\n")).collect();
        std::fs::write(dir.join("words.txt"), format!("n99999999\tunused\n{words}")).unwrap();
        let mut annotations = String::new();
        for (class, id) in ids.iter().enumerate() {
            let folder = dir.join("train").join(id).join("images");
            std::fs::create_dir_all(&folder).unwrap();
            for k in 0..per_class {
                let img = image::RgbImage::from_pixel(SIDE as u32, SIDE as u32, image::Rgb(colour(class, k)));
                img.save(folder.join(format!("{id}_{k}.JPEG"))).unwrap();
                let n = class * per_class + k;
                let val = dir.join("val/images").join(format!("val_{n}.JPEG"));
                if class == 1 && k == 0 {
                    image::GrayImage::from_pixel(SIDE as u32, SIDE as u32, image::Luma([77])).save(&val).unwrap();
                } else {
                    img.save(&val).unwrap();
                }
                annotations.push_str(&format!("val_{n}.JPEG\t{id}\t0\t0\t63\t63\n"));
            }
        }
        std::fs::write(dir.join("val/val_annotations.txt"), annotations).unwrap();
    }

    fn close(a: u8, b: u8) -> bool {
        (a as i32 - b as i32).abs() <= 3
    }

    #[test]
    fn reads_the_folder_layout_with_sorted_classes_and_greyscale_as_rgb() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path(), 2);
        let train = load_expecting(tmp.path(), Split::Train, 2).unwrap();
        assert_eq!((train.len(), train.num_classes()), (400, 200));
        assert_eq!(train.class_names[5], "thing 5, object");
        // Image 2·7 + 1 is class 7, index 1: its colour says so (JPEG is lossy: within 3).
        let img = train.image(15);
        assert_eq!(train.labels[15], 7);
        let at = 64 * 10 + 20;
        assert!(close(img[at], 7) && close(img[4096 + at], 20) && close(img[8192 + at], 200), "{:?}", &img[at..at + 1]);
        let val = load_expecting(tmp.path(), Split::Test, 2).unwrap();
        assert_eq!(val.len(), 400);
        assert_eq!(val.class_counts(), vec![2; 200]);
        // val_2.JPEG (class 1, greyscale 77) is third in sorted file order: val_0, val_1, val_10, …
        let grey_idx = (0..val.len()).find(|&i| val.labels[i] == 1 && close(val.image(i)[0], 77)).unwrap();
        let g = val.image(grey_idx);
        assert!(close(g[100], 77) && close(g[4096 + 100], 77) && close(g[8192 + 100], 77));
        // Training images come class after class (a subset is spread), validation's mixed.
        assert_eq!((train.sorted_by_class, val.sorted_by_class), (true, false));
        let again = load_expecting(tmp.path(), Split::Train, 2).unwrap();
        assert!(again.sorted_by_class, "from the cache too");
    }

    #[test]
    fn a_second_load_comes_from_the_cache_and_a_changed_file_invalidates_it() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path(), 1);
        let first = load_expecting(tmp.path(), Split::Test, 1).unwrap();
        let cached = cache::locations(&tmp.path().join(DIR), "tiny-imagenet-test");
        assert!(cached.iter().any(|p| p.exists()), "a cache was written: {cached:?}");
        let second = load_expecting(tmp.path(), Split::Test, 1).unwrap();
        assert_eq!(first.pixels, second.pixels);
        // Replace one image by a different one: the fingerprint changes and the cache is rebuilt.
        let path = tmp.path().join(DIR).join("val/images/val_0.JPEG");
        image::RgbImage::from_pixel(64, 64, image::Rgb([250, 250, 250])).save(&path).unwrap();
        let third = load_expecting(tmp.path(), Split::Test, 1).unwrap();
        let i = (0..third.len()).find(|&i| third.labels[i] == 0).unwrap();
        assert!(close(third.image(i)[0], 250), "{}", third.image(i)[0]);
    }

    #[test]
    fn missing_images_bad_annotations_and_broken_jpegs_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        write_fixture(tmp.path(), 2);
        let dir = tmp.path().join(DIR);
        std::fs::remove_file(dir.join(format!("train/{0}/images/{0}_1.JPEG", wnid(3)))).unwrap();
        let err = load_expecting(tmp.path(), Split::Train, 2).unwrap_err().to_string();
        assert!(err.contains(&wnid(3)) && err.contains("1 JPEG images, expected 2"), "{err}");
        let ann = dir.join("val/val_annotations.txt");
        let text = std::fs::read_to_string(&ann).unwrap().replacen(&wnid(0), "n00000000", 1);
        std::fs::write(&ann, text).unwrap();
        let err = load_expecting(tmp.path(), Split::Test, 2).unwrap_err().to_string();
        assert!(err.contains("val_annotations.txt") && err.contains("n00000000` is not in wnids.txt"), "{err}");
        write_fixture(tmp.path(), 2);
        std::fs::write(dir.join("val/images/val_5.JPEG"), b"not a jpeg").unwrap();
        let err = load_expecting(tmp.path(), Split::Test, 2).unwrap_err().to_string();
        assert!(err.contains("val_5.JPEG") && err.contains("not a readable JPEG"), "{err}");
    }
}
