//! Datasets in their official on-disk formats (for CIFAR, the binary version and the pickled
//! python version torchvision downloads) and folders of the user's own images, the augmentation
//! pipelines, and batching of augmented views.
//!
//! This crate knows files and pixels only: it produces `f32` buffers in NCHW order and never
//! touches a tensor library, so the runner decides where the pixels go (CPU or GPU).

pub mod augment;
pub mod cache;
pub mod cifar10;
pub mod cifar100;
pub mod dataset;
mod error;
pub mod fetch;
mod files;
pub mod folder;
pub mod image;
pub mod imagenet;
pub mod jpeg;
mod pickle;
pub mod preview;
pub mod root;
pub mod seed;
pub mod stl10;
pub mod tiny_imagenet;
pub mod verify;
pub mod views;

pub use self::image::{ImageFiles, ImageSet, Images, Label, Split, Unreadable};
pub use dataset::{Dataset, DatasetSpec, Layout};
pub use error::{Error, Result};
