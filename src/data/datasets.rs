//! Named data sets: `cifar10`, `tiny-imagenet`, `mnist`, `fashion-mnist` or a path, each with a
//! default location and one `load(split, root, options)`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::archive::looks_like_archive;
use super::cifar::{find_batch_dir, load_cifar10_bin};
use super::folder::{load_image_folder, load_image_folder_split};
use super::idx::{fashion_mnist, mnist};
use super::source::{apply_options, LoadOptions};
use super::tiny_imagenet::{load_tiny_imagenet, TinySplit};
use super::ImageSet;
use crate::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The labelled split to load. For Tiny-ImageNet, `Test` is the labelled `val/` split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// `"train"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;
    /// `train`, or `test` (also `val`), any case.
    fn from_str(s: &str) -> Result<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" | "val" => Ok(Split::Test),
            _ => Err(Error::invalid(format!(
                "unknown split {s:?}: expected train or test"
            ))),
        }
    }
}

/// A data set known by name, or any path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dataset {
    /// CIFAR-10 (10 classes, 32x32x3; 50,000 train, 10,000 test).
    Cifar10,
    /// Tiny-ImageNet-200 (200 classes, 64x64x3; 100,000 train, 10,000 val as `Test`).
    TinyImageNet,
    /// MNIST (10 classes, 28x28x1; 60,000 train, 10,000 test).
    Mnist,
    /// Fashion-MNIST (10 classes, 28x28x1; 60,000 train, 10,000 test).
    FashionMnist,
    /// A folder holding `train/` and `test/` ImageFolder trees, a tar archive holding them (at
    /// its top or under one folder), a CIFAR-10 binary folder or archive, or a Tiny-ImageNet
    /// folder or archive.
    Folder(PathBuf),
}

impl FromStr for Dataset {
    type Err = Error;
    /// `cifar10` (`cifar-10`), `tiny-imagenet` (`tinyimagenet`, `tiny-imagenet-200`), `mnist`,
    /// `fashion-mnist` (`fashion_mnist`, `fashionmnist`), any case; anything else is a path.
    fn from_str(s: &str) -> Result<Dataset> {
        if s.trim().is_empty() {
            return Err(Error::invalid(
                "empty data set name: expected cifar10, tiny-imagenet, mnist, fashion-mnist or a path",
            ));
        }
        Ok(match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Dataset::Cifar10,
            "tiny-imagenet" | "tinyimagenet" | "tiny-imagenet-200" => Dataset::TinyImageNet,
            "mnist" => Dataset::Mnist,
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Dataset::FashionMnist,
            _ => Dataset::Folder(PathBuf::from(s)),
        })
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dataset::Cifar10 => f.write_str("cifar10"),
            Dataset::TinyImageNet => f.write_str("tiny-imagenet"),
            Dataset::Mnist => f.write_str("mnist"),
            Dataset::FashionMnist => f.write_str("fashion-mnist"),
            Dataset::Folder(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The folder of the shared real data: `$CROMO_SHARED_DATA` when set, else `../shared/data`
/// (relative to the working directory, i.e. next to the project in development and CI).
pub fn shared_data_dir() -> PathBuf {
    match std::env::var_os("CROMO_SHARED_DATA").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("../shared/data"),
    }
}

impl Dataset {
    /// The number of classes of a named data set (`None` for a path).
    pub fn num_classes(&self) -> Option<usize> {
        match self {
            Dataset::Cifar10 | Dataset::Mnist | Dataset::FashionMnist => Some(10),
            Dataset::TinyImageNet => Some(200),
            Dataset::Folder(_) => None,
        }
    }

    /// Where the data set is read from when no root is given: `cifar10-jpeg.tar.zst`,
    /// `tiny-imagenet-200.tar.zst` and `mnist/` in [`shared_data_dir`], and
    /// [`FASHION_MNIST_SYSTEM_DIR`]; the path itself for [`Dataset::Folder`].
    pub fn default_root(&self) -> PathBuf {
        match self {
            Dataset::Cifar10 => shared_data_dir().join("cifar10-jpeg.tar.zst"),
            Dataset::TinyImageNet => shared_data_dir().join("tiny-imagenet-200.tar.zst"),
            Dataset::Mnist => shared_data_dir().join("mnist"),
            Dataset::FashionMnist => PathBuf::from(FASHION_MNIST_SYSTEM_DIR),
            Dataset::Folder(p) => p.clone(),
        }
    }

    fn how_to_get(&self) -> &'static str {
        match self {
            Dataset::Cifar10 => {
                "CIFAR-10 as a JPEG ImageFolder archive (cifar10-jpeg/{train,test}/<class>/*.jpg); \
                 set CROMO_SHARED_DATA to the folder holding cifar10-jpeg.tar.zst, or pass a root: \
                 such an archive, a folder with train/ and test/ ImageFolder trees, or the official \
                 binary version (cifar-10-batches-bin/ or cifar-10-binary.tar.gz from \
                 https://www.cs.toronto.edu/~kriz/cifar.html)"
            }
            Dataset::TinyImageNet => {
                "Tiny-ImageNet-200 archive; set CROMO_SHARED_DATA to the folder holding \
                 tiny-imagenet-200.tar.zst, or pass a root: the tiny-imagenet-200 folder (unzipped \
                 from http://cs231n.stanford.edu/tiny-imagenet-200.zip) or a tar archive of it"
            }
            Dataset::Mnist => {
                "folder with the MNIST IDX files (train-images-idx3-ubyte.gz, \
                 train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz \
                 from http://yann.lecun.com/exdb/mnist/); set CROMO_SHARED_DATA to the folder \
                 holding mnist/, or pass the folder as root"
            }
            Dataset::FashionMnist => {
                "folder with the Fashion-MNIST IDX files; install them with \
                 `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or download the four \
                 .gz files from https://github.com/zalandoresearch/fashion-mnist and pass their \
                 folder as root"
            }
            Dataset::Folder(_) => {
                "data set: a folder with train/ and test/ ImageFolder trees, a .tar/.tar.zst \
                 archive holding them, a CIFAR-10 binary folder or a Tiny-ImageNet folder"
            }
        }
    }

    /// Loads split `split` from `root` (default: [`Dataset::default_root`]) with `opts`.
    ///
    /// Named data sets check their number of classes. IDX and CIFAR binary sources apply
    /// `opts.max_per_class` (first images in file order) and `opts.resize` after reading and do
    /// not use the cache. When the data is missing the error names the file or folder looked
    /// for and how to get it.
    pub fn load(&self, split: Split, root: Option<&Path>, opts: &LoadOptions) -> Result<ImageSet> {
        opts.validate()?;
        let path = root
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.default_root());
        if !path.exists() {
            return Err(Error::NotFound {
                path,
                what: self.how_to_get().to_string(),
            });
        }
        let train = split == Split::Train;
        let set = match self {
            Dataset::Cifar10 if root.is_none() => {
                load_image_folder(&path, Some(&format!("cifar10-jpeg/{}", split.name())), opts)?
            }
            Dataset::TinyImageNet => load_tiny_imagenet(
                &path,
                if train {
                    TinySplit::Train
                } else {
                    TinySplit::Val
                },
                opts,
            )?,
            Dataset::Mnist => apply_options(mnist(&path, train)?, opts)?,
            Dataset::FashionMnist => apply_options(fashion_mnist(&path, train)?, opts)?,
            Dataset::Cifar10 | Dataset::Folder(_) => load_path(&path, split, opts)?,
        };
        if let Some(n) = self.num_classes() {
            if set.num_classes() != n {
                return Err(Error::bad_data(
                    &path,
                    format!(
                        "{self} has {n} classes but this source holds {}: {:?}",
                        set.num_classes(),
                        set.class_names
                    ),
                ));
            }
        }
        Ok(set)
    }
}

fn file_name_lower(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Loads a split from a path of unknown kind (see [`Dataset::Folder`]).
fn load_path(path: &Path, split: Split, opts: &LoadOptions) -> Result<ImageSet> {
    let train = split == Split::Train;
    let tiny_split = if train {
        TinySplit::Train
    } else {
        TinySplit::Val
    };
    if path.is_dir() {
        if find_batch_dir(path).is_some() {
            return apply_options(load_cifar10_bin(path, train)?, opts);
        }
        if super::tiny_imagenet::find_root(path).is_some() {
            return load_tiny_imagenet(path, tiny_split, opts);
        }
        return load_image_folder_split(path, split.name(), opts);
    }
    if !looks_like_archive(path) {
        return Err(Error::bad_data(
            path,
            "neither a folder nor a tar archive (expected a folder with train/ and test/, a \
             .tar/.tar.zst archive of one, a CIFAR-10 binary folder or archive, or Tiny-ImageNet)",
        ));
    }
    let name = file_name_lower(path);
    if name.contains("cifar-10-binary") || name.contains("batches-bin") {
        return apply_options(load_cifar10_bin(path, train)?, opts);
    }
    if name.contains("tiny-imagenet") {
        return load_tiny_imagenet(path, tiny_split, opts);
    }
    load_image_folder_split(path, split.name(), opts)
}
