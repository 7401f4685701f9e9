//! `.npy` files for other frameworks: a tensor written whole or not at all, and the augmented views
//! a run trains on (`infomax datasets preview --npy`), so a PyTorch reference can train on exactly
//! infomax's pixels.

use std::path::Path;

use candle_core::{Device, Tensor};
use infomax_data::augment::Augment;
use infomax_data::Images;

use crate::{Error, Result};

/// Write `t` to `path` beside it first and rename it into place, so a reader never sees half a file.
pub fn write(t: &Tensor, path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    t.write_npy(&partial).map_err(|e| Error::File { path: partial.clone(), what: e.to_string() })?;
    std::fs::rename(&partial, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// The views of the first `images` images of `set` in epochs 1 to `epochs` of a run with `seed`,
/// exactly as training draws and normalises them: an `f32` array of shape
/// `(epochs, images, views, 3, side, side)`, written to `path`.
pub fn write_views(
    set: &Images,
    images: usize,
    epochs: usize,
    views: usize,
    augment: &Augment,
    seed: u64,
    path: &Path,
) -> Result<[usize; 6]> {
    if images == 0 || images > set.len() || epochs == 0 || views == 0 {
        return Err(Error::Option {
            option: "--npy".into(),
            what: format!(
                "1 to {} images, at least one epoch and one view expected, got {images} images, {epochs} epochs, {views} views",
                set.len()
            ),
        });
    }
    let side = augment.size();
    let values = [epochs, images, views, 3, side, side].iter().try_fold(1u128, |n, &d| n.checked_mul(d as u128));
    // The array is built in memory: refuse one beyond this machine's before allocating it.
    crate::environment::check_fits("--npy", values.unwrap_or(u128::MAX).saturating_mul(4))?;
    let indices: Vec<usize> = (0..images).collect();
    let mut data = Vec::with_capacity(epochs * images * views * 3 * side * side);
    for epoch in 1..=epochs as u64 {
        let per_view = infomax_data::views::augmented_views(set, &indices, views, augment, seed, epoch)?;
        let plane = 3 * side * side;
        for i in 0..images {
            for view in &per_view {
                data.extend_from_slice(&view[i * plane..(i + 1) * plane]);
            }
        }
    }
    let shape = [epochs, images, views, 3, side, side];
    let t = Tensor::from_vec(data, &shape, &Device::Cpu)
        .map_err(|e| Error::File { path: path.to_path_buf(), what: format!("cannot hold the views: {e}") })?;
    write(&t, path)?;
    Ok(shape)
}
