//! Batches of augmented views and of plain (evaluation) images, as NCHW `f32` buffers.

use rayon::prelude::*;

use crate::augment::{Augment, Order, Rgb, Window};
use crate::image::{ImageFiles, Images};
use crate::seed::{rng_for, Purpose};
use crate::{folder, jpeg, ImageSet, Result};

/// The random stream that draws view `v` of image `index` in epoch `epoch` of a run with `seed`:
/// the one place that says which stream that is.
fn view_stream(index: usize, v: usize, seed: u64, epoch: u64) -> rand_chacha::ChaCha8Rng {
    rng_for(seed, Purpose::Augment, epoch, index as u64, v as u64)
}

/// View `v` of image `index` (already decoded as `img`) in epoch `epoch` of a run with `seed`.
pub fn view_of(img: &Rgb, index: usize, v: usize, augment: &Augment, seed: u64, epoch: u64) -> Rgb {
    augment.view(v, img, &mut view_stream(index, v, seed, epoch))
}

/// Images a batch reads by index: decoded in memory, or decoded from their files as needed.
pub trait Source: Sync {
    /// Image `i` in the augmentations' planar `[0, 1]` layout.
    fn rgb(&self, i: usize) -> Result<Rgb>;

    /// The first `views` views of image `i` in `epoch` of a run with `seed` ([`view_of`]),
    /// decoded once for all of them.
    fn views(&self, i: usize, views: usize, augment: &Augment, seed: u64, epoch: u64) -> Result<Vec<Rgb>> {
        let img = self.rgb(i)?;
        Ok((0..views).map(|v| view_of(&img, i, v, augment, seed, epoch)).collect())
    }
}

impl Source for ImageSet {
    fn rgb(&self, i: usize) -> Result<Rgb> {
        Ok(Rgb::from_planar_u8(self.image(i), self.height, self.width))
    }
}

impl Source for ImageFiles {
    fn rgb(&self, i: usize) -> Result<Rgb> {
        ImageFiles::rgb(self, i)
    }

    fn views(&self, i: usize, views: usize, augment: &Augment, seed: u64, epoch: u64) -> Result<Vec<Rgb>> {
        self.decoded(i, |path| file_views(self.name, path, (i, views), augment, seed, epoch))
    }
}

impl Source for Images {
    fn rgb(&self, i: usize) -> Result<Rgb> {
        match self {
            Images::Decoded(s) => s.rgb(i),
            Images::Files(f) => f.rgb(i),
        }
    }

    fn views(&self, i: usize, views: usize, augment: &Augment, seed: u64, epoch: u64) -> Result<Vec<Rgb>> {
        match self {
            Images::Decoded(s) => s.views(i, views, augment, seed, epoch),
            Images::Files(f) => f.views(i, views, augment, seed, epoch),
        }
    }
}

/// The first `views` views of image `index`, the file at `path`. Where the file is a JPEG that
/// libjpeg-turbo decodes and every view's pipeline crops first, each view's window is drawn
/// from its stream before anything is decoded, and only the windows' union is decoded, at the
/// largest DCT scale that leaves every window at least the view's side ([`jpeg::scale_for`]);
/// each view is then finished from its window with the rest of its stream. At 1/1 the views are
/// those of the whole image; a scaled decode stands in for the views' own downsampling of those
/// pixels. Anything else is decoded whole.
fn file_views(
    dataset: &'static str,
    path: &std::path::Path,
    (index, views): (usize, usize),
    augment: &Augment,
    seed: u64,
    epoch: u64,
) -> Result<Vec<Rgb>> {
    let bytes = folder::read(path)?;
    let crop_first = (0..views).all(|v| augment.pipeline(v).order == Order::CropFirst);
    let head = match jpeg::header(&bytes) {
        Ok(jpeg::Jpeg::Decodable(head)) if crop_first => head,
        // The whole decode names the file in any error.
        _ => {
            let img = folder::rgb_of(dataset, path, &bytes)?;
            return Ok((0..views).map(|v| view_of(&img, index, v, augment, seed, epoch)).collect());
        }
    };
    let mut streams: Vec<_> = (0..views).map(|v| view_stream(index, v, seed, epoch)).collect();
    let windows: Vec<Window> = streams
        .iter_mut()
        .enumerate()
        .map(|(v, rng)| augment.pipeline(v).first_window(head.height, head.width, rng).expect("a crop-first pipeline"))
        .collect();
    let scale = jpeg::scale_for(&windows, augment.size());
    let (img, at) = folder::decode_window(dataset, path, &bytes, jpeg::union(&windows), scale)?;
    Ok(windows
        .into_iter()
        .zip(&mut streams)
        .enumerate()
        .map(|(v, (window, rng))| augment.view_in_window(v, &img, jpeg::within(window, scale, at), rng))
        .collect())
}

/// `views` buffers, one per view, each `indices.len() × 3 × size × size` (NCHW); each image is
/// decoded once for all its views.
///
/// View `v` of image `i` in epoch `e` is drawn from the stream (seed, Augment, e, i, v) alone, so the
/// same views come out whatever the thread count, batch composition or resume point.
pub fn augmented_views<S: Source + ?Sized>(
    set: &S,
    indices: &[usize],
    views: usize,
    augment: &Augment,
    seed: u64,
    epoch: u64,
) -> Result<Vec<Vec<f32>>> {
    let per_image: Vec<Vec<Rgb>> =
        indices.par_iter().map(|&i| set.views(i, views, augment, seed, epoch)).collect::<Result<_>>()?;
    Ok((0..views).map(|v| per_image.iter().flat_map(|imgs| imgs[v].data.iter().copied()).collect()).collect())
}

/// The evaluation images `indices` through the evaluation transform (NCHW).
pub fn plain_batch<S: Source + ?Sized>(set: &S, indices: &[usize], augment: &Augment) -> Result<Vec<f32>> {
    let imgs: Vec<Rgb> = indices.par_iter().map(|&i| Ok(augment.eval(&set.rgb(i)?))).collect::<Result<_>>()?;
    Ok(imgs.into_iter().flat_map(|x| x.data).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Split;

    fn tiny_set(n: usize) -> ImageSet {
        ImageSet::new(
            "synthetic",
            Split::Train,
            (32, 32),
            (0..n * 3072).map(|i| (i * 7 % 251) as u8).collect(),
            (0..n).map(|i| (i % 10) as u8).collect(),
            (0..10).map(|i| i.to_string()).collect(),
        )
    }

    #[test]
    fn same_views_whatever_the_thread_count_or_batch() {
        let set = tiny_set(16);
        let p = Augment::wmse_cifar([0.5; 3], [0.25; 3]);
        let idx: Vec<usize> = (0..16).collect();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let a = one.install(|| augmented_views(&set, &idx, 3, &p, 11, 2).unwrap());
        let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let b = four.install(|| augmented_views(&set, &idx, 3, &p, 11, 2).unwrap());
        assert_eq!(a, b);
        // Image 5 alone gets the same views as inside the batch.
        let c = augmented_views(&set, &[5], 3, &p, 11, 2).unwrap();
        for v in 0..3 {
            assert_eq!(c[v][..], a[v][5 * 3072..6 * 3072]);
        }
        // Views differ from each other and across epochs.
        assert_ne!(a[0], a[1]);
        assert_ne!(a, augmented_views(&set, &idx, 3, &p, 11, 3).unwrap());
    }

    #[test]
    fn plain_batch_is_normalised_pixels() {
        let set = tiny_set(2);
        let p = Augment::wmse_cifar([0.5; 3], [0.25; 3]);
        let out = plain_batch(&set, &[1], &p).unwrap();
        let expected = (set.image(1)[7] as f32 / 255.0 - 0.5) / 0.25;
        assert!((out[7] - expected).abs() < 1e-6);
    }

    #[test]
    fn views_of_files_are_the_views_of_the_same_pixels_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let set = tiny_set(3);
        let files: Vec<std::path::PathBuf> = (0..3)
            .map(|i| {
                let px = set.image(i);
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let j = (y * 32 + x) as usize;
                    image::Rgb([px[j], px[1024 + j], px[2048 + j]])
                });
                let path = tmp.path().join(format!("{i}.png"));
                img.save(&path).unwrap();
                path
            })
            .collect();
        let p = Augment::wmse_cifar([0.5; 3], [0.25; 3]);
        let mut source = ImageFiles {
            name: "t",
            split: Split::Train,
            files,
            labels: vec![0, 0, 1],
            class_names: vec!["a".into(), "b".into(), "c".into()],
            unreadable: crate::Unreadable::default(),
        };
        let streamed = augmented_views(&source, &[2, 0], 2, &p, 5, 1).unwrap();
        assert_eq!(streamed, augmented_views(&set, &[2, 0], 2, &p, 5, 1).unwrap(), "PNG is lossless: the same views");

        // A file that no longer decodes fails the batch, naming it ...
        std::fs::write(&source.files[0], b"not a png").unwrap();
        let err = augmented_views(&source, &[2, 0], 2, &p, 5, 1).unwrap_err().to_string();
        assert!(err.contains("0.png") && err.contains("not a readable image"), "{err}");
        // ... unless skips are allowed: then the next file of its class stands in (its views
        // drawn as image 0's), and the file is counted once however often it comes up.
        source.unreadable = crate::Unreadable::skip();
        let skipped = augmented_views(&source, &[0, 0], 1, &p, 5, 1).unwrap();
        let stand_in = view_of(&set.rgb(1).unwrap(), 0, 0, &p, 5, 1);
        assert_eq!(skipped[0][..3072], stand_in.data[..]);
        assert_eq!(skipped[0][3072..], stand_in.data[..]);
        assert_eq!(source.unreadable.skipped(), [source.files[0].clone()]);
        // Alone in its class, a file has no stand-in that keeps its label true: an error. Without
        // labels (pre-training), the next file of any class stands in.
        std::fs::write(&source.files[2], b"not a png").unwrap();
        assert!(augmented_views(&source, &[2], 1, &p, 5, 1).is_err());
        let unlabelled = ImageFiles { labels: Vec::new(), ..source.clone() };
        let wrapped = view_of(&set.rgb(1).unwrap(), 2, 0, &p, 5, 1);
        assert_eq!(augmented_views(&unlabelled, &[2], 1, &p, 5, 1).unwrap()[0], wrapped.data);
        let all_bad: Vec<_> = source.files.iter().map(|f| f.with_extension("gone")).collect();
        let broken = ImageFiles { files: all_bad, ..source.clone() };
        assert!(augmented_views(&broken, &[1], 1, &p, 5, 1).is_err(), "nothing decodes: an error, not a loop");
    }

    /// JPEG files under crop-first pipelines: only the views' windows are decoded. Where no window
    /// leaves room to scale, the views equal those of the whole decoded image exactly; where the
    /// decode is scaled (larger photos), they stay close to them. A truncated JPEG fails the
    /// batch naming the file. Colour-first pipelines decode the whole image.
    #[test]
    fn views_of_jpegs_decode_only_their_windows() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, (w, h): (usize, usize)| {
            let path = tmp.path().join(name);
            std::fs::write(&path, crate::jpeg::tests::sample_jpeg(w, h, turbojpeg_sys::TJSAMP_TJSAMP_420)).unwrap();
            path
        };
        let source = |files: Vec<std::path::PathBuf>| ImageFiles {
            name: "t",
            split: Split::Train,
            labels: vec![0; files.len()],
            files,
            class_names: vec!["a".into()],
            unreadable: crate::Unreadable::default(),
        };
        let whole_views = |set: &ImageFiles, i: usize, views: usize, p: &Augment, epoch: u64| -> Vec<Rgb> {
            let img = crate::folder::decode_rgb("t", &set.files[i]).unwrap();
            (0..views).map(|v| view_of(&img, i, v, p, 7, epoch)).collect()
        };
        let fair = |size| Augment::preset(crate::augment::Preset::Fair, size, [0.5; 3], [0.25; 3]);

        // 150 × 120 images, 96-px views: no window is 192 px each way, so every decode is 1/1.
        let small = source((0..3).map(|i| write(&format!("s{i}.jpg"), (150 + 7 * i, 120))).collect());
        for epoch in 0..4 {
            for i in 0..3 {
                assert_eq!(
                    small.views(i, 2, &fair(96), 7, epoch).unwrap(),
                    whole_views(&small, i, 2, &fair(96), epoch)
                );
            }
        }
        // 1024 × 768 photos, 32-px views: most decodes are scaled.
        let large = source((0..2).map(|i| write(&format!("l{i}.jpg"), (1024, 768 - 64 * i))).collect());
        let (mut scaled, mut differences) = (0, Vec::new());
        for epoch in 0..6 {
            for i in 0..2 {
                let (got, whole) =
                    (large.views(i, 2, &fair(32), 7, epoch).unwrap(), whole_views(&large, i, 2, &fair(32), epoch));
                for (g, w) in got.iter().zip(&whole) {
                    assert_eq!((g.height, g.width), (32, 32));
                    let mean_abs =
                        g.data.iter().zip(&w.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / g.data.len() as f32;
                    // In normalised units (std 0.25): 0.1 is 2.5 % of the [0, 1] range.
                    // In normalised units (std 0.25): 0.15 is under 4 % of the [0, 1] range, where
                    // a window misplaced by a tenth of its side differs by 0.4 or more.
                    assert!(mean_abs < 0.15, "image {i}, epoch {epoch}: mean |difference| {mean_abs}");
                    differences.push(mean_abs);
                    scaled += usize::from(g != w);
                }
            }
        }
        assert!(scaled > 0, "some decode was scaled");
        let mean = differences.iter().sum::<f32>() / differences.len() as f32;
        assert!(mean < 0.05, "mean |difference| over the views {mean}");

        // Colour-first views of a JPEG are the whole image's.
        let wmse = Augment::preset(crate::augment::Preset::Wmse, 64, [0.5; 3], [0.25; 3]);
        assert_eq!(large.views(1, 2, &wmse, 7, 3).unwrap(), whole_views(&large, 1, 2, &wmse, 3));

        // A truncated JPEG fails, naming the file.
        let bytes = std::fs::read(&small.files[1]).unwrap();
        std::fs::write(&small.files[1], &bytes[..bytes.len() / 2]).unwrap();
        let err = augmented_views(&small, &[0, 1], 2, &fair(96), 7, 0).unwrap_err().to_string();
        assert!(err.contains("s1.jpg") && err.contains("not a readable image (JPEG)"), "{err}");
    }
}
