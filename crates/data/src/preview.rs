//! `infomax datasets preview`: a PNG grid of stored images and the augmented views the
//! training pipeline makes of them, so anyone can look at what the model is fed.

use std::path::Path;

use crate::augment::{Augment, Rgb};
use crate::views::Source;
use crate::{Error, Images, Result};

/// Tiles are drawn at least this many pixels wide (small images are enlarged by an integer
/// factor, nearest neighbour, so pixels stay visible as pixels).
const MIN_TILE: usize = 96;
/// A stored image larger than this (a photo) is shrunk to fit a tile of this side, so that a grid
/// of 12-megapixel photos stays a picture one can open; `--raw` shows one at its own size.
const MAX_STORED_TILE: usize = 512;
const GAP: usize = 4;

/// Undo the normalisation of a view and quantise it like `ToPILImage`.
fn to_bytes(img: &Rgb, augment: &Augment) -> Vec<u8> {
    let n = img.height * img.width;
    let mut out = vec![0u8; 3 * n];
    for c in 0..3 {
        for i in 0..n {
            let v = img.data[c * n + i] * augment.std[c] + augment.mean[c];
            out[c * n + i] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    out
}

/// An image in [0, 1] as planar bytes (exact for images decoded from bytes).
fn stored_bytes(img: &Rgb) -> Vec<u8> {
    img.data.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
}

/// Planar RGB bytes into an interleaved RGB image.
fn planar_to_image(planar: &[u8], height: usize, width: usize) -> image::RgbImage {
    let n = height * width;
    image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let i = y as usize * width + x as usize;
        image::Rgb([planar[i], planar[n + i], planar[2 * n + i]])
    })
}

/// Check the chosen images exist.
fn check_indices(set: &Images, indices: &[usize], what: &str) -> Result<()> {
    if indices.is_empty() {
        return Err(Error::Request(format!("{what}: at least one --index expected")));
    }
    if let Some(bad) = indices.iter().find(|&&i| i >= set.len()) {
        return Err(Error::Request(format!(
            "{what}: --index {bad} is out of range: {} {} has {} images (0..{})",
            set.name(),
            set.split(),
            set.len(),
            set.len()
        )));
    }
    Ok(())
}

/// One row per index: the stored image, then `views` augmented views exactly as training epoch
/// `epoch` of a run with `seed` draws them (same streams as `views::augmented_views`).
pub fn grid(
    set: &Images,
    indices: &[usize],
    views: usize,
    augment: &Augment,
    seed: u64,
    epoch: u64,
) -> Result<image::RgbImage> {
    check_indices(set, indices, "preview")?;
    let originals: Vec<Rgb> = indices.iter().map(|&i| set.rgb(i)).collect::<Result<_>>()?;
    let stored_side = originals.iter().map(|o| o.height.max(o.width)).max().unwrap_or(0).min(MAX_STORED_TILE);
    let side = stored_side.max(augment.size());
    let tile = side * MIN_TILE.div_ceil(side);
    let cols = 1 + views;
    let (w, h) = (cols * tile + (cols + 1) * GAP, indices.len() * tile + (indices.len() + 1) * GAP);
    let mut canvas = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    let mut put = |row: usize, col: usize, img: &image::RgbImage| {
        let longest = img.width().max(img.height()) as usize;
        let big = if longest > tile {
            let shrink = |n: u32| ((n as usize * tile / longest) as u32).max(1);
            image::imageops::resize(img, shrink(img.width()), shrink(img.height()), image::imageops::Triangle)
        } else {
            let scale = (tile / longest) as u32;
            image::imageops::resize(img, img.width() * scale, img.height() * scale, image::imageops::Nearest)
        };
        let x = GAP + col * (tile + GAP) + (tile - big.width() as usize) / 2;
        let y = GAP + row * (tile + GAP) + (tile - big.height() as usize) / 2;
        image::imageops::replace(&mut canvas, &big, x as i64, y as i64);
    };
    for (row, (&i, original)) in indices.iter().zip(&originals).enumerate() {
        put(row, 0, &planar_to_image(&stored_bytes(original), original.height, original.width));
        // As training draws them: a JPEG's views from its windows alone.
        for (v, view) in crate::views::Source::views(set, i, views, augment, seed, epoch)?.iter().enumerate() {
            put(row, 1 + v, &planar_to_image(&to_bytes(view, augment), view.height, view.width));
        }
    }
    Ok(canvas)
}

/// The stored image `index` exactly: original size, no resampling, no normalisation.
pub fn raw(set: &Images, index: usize) -> Result<image::RgbImage> {
    check_indices(set, &[index], "preview --raw")?;
    let img = set.rgb(index)?;
    Ok(planar_to_image(&stored_bytes(&img), img.height, img.width))
}

/// Write a PNG atomically (a temporary file renamed into place).
pub fn save_png(img: &image::RgbImage, out: &Path) -> Result<()> {
    let io = |source| Error::Io { path: out.to_path_buf(), source };
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = tempfile::Builder::new().suffix(".png").tempfile_in(dir).map_err(io)?;
    img.save_with_format(tmp.path(), image::ImageFormat::Png).map_err(|e| Error::Format {
        dataset: "preview",
        path: out.to_path_buf(),
        what: e.to_string(),
    })?;
    tmp.persist(out).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::{rng_for, Purpose};
    use crate::{ImageSet, Split};

    fn set() -> ImageSet {
        let pixels: Vec<u8> = (0..2 * 3 * 32 * 32).map(|i| (i % 253) as u8).collect();
        ImageSet::new("synthetic", Split::Train, (32, 32), pixels, vec![0u8, 1], vec!["a".into(), "b".into()])
    }

    #[test]
    fn raw_is_the_stored_image_pixel_for_pixel() {
        let s = set();
        let img = raw(&Images::from(s.clone()), 1).unwrap();
        assert_eq!(img.dimensions(), (32, 32));
        let stored = s.image(1);
        assert_eq!(img.get_pixel(5, 3).0, [stored[3 * 32 + 5], stored[1024 + 3 * 32 + 5], stored[2048 + 3 * 32 + 5]]);
        let err = raw(&Images::from(s.clone()), 2).unwrap_err().to_string();
        assert!(err.contains("--index 2 is out of range") && err.contains("2 images"), "{err}");
    }

    #[test]
    fn grid_has_a_row_per_image_and_a_column_per_view_and_the_stored_image_first() {
        let s = set();
        let a = Augment::wmse_cifar([0.5; 3], [0.25; 3]);
        let g = grid(&Images::from(s.clone()), &[0, 1], 3, &a, 0, 1).unwrap();
        // 32 px tiles enlarged 3× to 96, four columns, two rows, 4 px gaps.
        assert_eq!(g.dimensions(), (4 * 96 + 5 * 4, 2 * 96 + 3 * 4));
        let stored = s.image(1);
        let (x, y) = (GAP + 3 * 7, GAP + 96 + GAP + 3 * 2);
        assert_eq!(
            g.get_pixel(x as u32, y as u32).0,
            [stored[2 * 32 + 7], stored[1024 + 2 * 32 + 7], stored[2048 + 2 * 32 + 7]]
        );
        // The views are what training draws: view 2 of image 1 in epoch 1, denormalised.
        let mut rng = rng_for(0, Purpose::Augment, 1, 1, 2);
        let view = a.view(2, &Rgb::from_planar_u8(stored, 32, 32), &mut rng);
        let bytes = to_bytes(&view, &a);
        let (x, y) = (GAP + 3 * (96 + GAP) + 3 * 10, GAP + 96 + GAP + 3 * 20);
        assert_eq!(
            g.get_pixel(x as u32, y as u32).0,
            [bytes[20 * 32 + 10], bytes[1024 + 20 * 32 + 10], bytes[2048 + 20 * 32 + 10]]
        );
        // A photo larger than the largest tile is shrunk into it; its views keep their side.
        let photo =
            ImageSet::new("synthetic", Split::Train, (900, 1200), vec![128u8; 3 * 900 * 1200], vec![0u8], vec![]);
        let g = grid(&Images::from(photo), &[0], 1, &a, 0, 1).unwrap();
        assert_eq!(
            g.dimensions(),
            (2 * MAX_STORED_TILE as u32 + 3 * GAP as u32, MAX_STORED_TILE as u32 + 2 * GAP as u32)
        );

        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("sub/p.png");
        save_png(&g, &out).unwrap();
        assert_eq!(image::open(&out).unwrap().to_rgb8(), g);
    }
}
