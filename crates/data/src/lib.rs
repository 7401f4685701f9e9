//! Datasets in their official on-disk formats, the augmentation pipelines, and batching of
//! augmented views.
//!
//! This crate knows files and pixels only: it produces `f32` buffers in NCHW order and never
//! touches a tensor library, so the runner decides where the pixels go (CPU or GPU).

pub mod augment;
pub mod cifar10;
mod error;
pub mod image;
pub mod root;
pub mod seed;
pub mod views;

pub use error::{Error, Result};
pub use image::{ImageSet, Split};
