//! Data: real data-set readers, class-incremental task splits, augmentations and batching.
//!
//! Readers return an [`ImageSet`] (u8 HWC pixels + labels + class names):
//! ImageFolder trees from folders or tar archives ([`load_image_folder`]), CIFAR-10 binary
//! batches ([`load_cifar10_bin`]), IDX files ([`mnist`], [`fashion_mnist`]), Tiny-ImageNet-200
//! ([`load_tiny_imagenet`]) and named data sets ([`Dataset`]). Decoded sets are cached
//! ([`CacheMode`]). [`TaskSplit`] divides classes into class-incremental tasks.

pub mod archive;
pub mod augment;
pub mod cache;
pub mod cifar;
pub mod datasets;
pub mod folder;
pub mod idx;
mod image_set;
pub mod source;
pub mod split;
pub mod tiny_imagenet;
pub mod transform;

pub use augment::{augment_batch, augment_views, AugmentConfig};
pub use cache::{default_cache_dir, CacheKey, CacheMode};
pub use cifar::{load_cifar10_bin, CIFAR10_CLASSES};
pub use datasets::{shared_data_dir, Dataset, Split};
pub use folder::{load_image_folder, load_image_folder_split};
pub use idx::{fashion_mnist, load_idx, mnist, FASHION_MNIST_CLASSES};
pub use image_set::ImageSet;
pub use source::LoadOptions;
pub use split::TaskSplit;
pub use tiny_imagenet::{load_tiny_imagenet, TinySplit};
pub use transform::{preprocess_photo, preprocess_photos, resize_rgb_u8, to_tensor};
