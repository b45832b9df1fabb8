//! Data: real data-set readers, class-incremental task splits, augmentations and batching.

mod image_set;

pub use image_set::ImageSet;
