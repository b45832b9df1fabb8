//! The IDX format of MNIST and Fashion-MNIST (<http://yann.lecun.com/exdb/mnist/>), raw or
//! gzip-compressed (detected from the bytes).
//!
//! A file starts with the magic `0x00 0x00 0x08 ndim` (type 0x08 = unsigned byte), then `ndim`
//! big-endian u32 dimensions, then the data. Image files have magic 0x00000803 (n, rows, cols),
//! label files 0x00000801 (n).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::ImageSet;
use crate::{Error, Result};

/// Magic number of an IDX file of u8 images (n, rows, cols).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (n).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The ten Fashion-MNIST class names in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: path.to_path_buf(),
                what: "IDX file".into(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    if raw.len() >= 2 && raw[..2] == [0x1f, 0x8b] {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::bad_data(path, format!("truncated or corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file with magic `magic` and returns its dimensions and data.
fn read_idx(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let ndim = (magic & 0xff) as usize;
    let head = 4 + 4 * ndim;
    if bytes.len() < 4 {
        return Err(Error::bad_data(
            path,
            format!("{} bytes is too short for an IDX header", bytes.len()),
        ));
    }
    let got = u32::from_be_bytes(bytes[..4].try_into().unwrap());
    if got != magic {
        return Err(Error::bad_data(
            path,
            format!("bad IDX magic 0x{got:08x}, expected 0x{magic:08x} for an IDX {what} file"),
        ));
    }
    if bytes.len() < head {
        return Err(Error::bad_data(
            path,
            format!(
                "truncated IDX header ({} bytes, {head} needed)",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::bad_data(path, format!("IDX dimensions {dims:?} overflow")))?;
    let data_len = bytes.len() - head;
    if data_len != expected {
        let how = if data_len < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(Error::bad_data(
            path,
            format!(
                "{how}: dimensions {dims:?} need {expected} data bytes, the file holds {data_len}"
            ),
        ));
    }
    let mut bytes = bytes;
    bytes.drain(..head);
    Ok((dims, bytes))
}

/// Reads an IDX image file: returns `(count, rows, cols, pixels)` with pixels image after image.
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (dims, data) = read_idx(path, IDX_IMAGES_MAGIC, "image")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::bad_data(
            path,
            format!("image size {}x{} is empty", dims[1], dims[2]),
        ));
    }
    Ok((dims[0], dims[1], dims[2], data))
}

/// Reads an IDX label file.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, IDX_LABELS_MAGIC, "label")?.1)
}

/// Loads an IDX image file and its label file as a 1-channel set with `class_names`.
///
/// Errors name the file: missing file, bad magic, truncated data, an image and label count that
/// differ, a label outside `class_names`.
pub fn load_idx(images: &Path, labels: &Path, class_names: Vec<String>) -> Result<ImageSet> {
    let (n, rows, cols, pixels) = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if lab.len() != n {
        return Err(Error::bad_data(
            labels,
            format!(
                "holds {} labels but the image file {} holds {n} images",
                lab.len(),
                images.display()
            ),
        ));
    }
    if let Some((i, &l)) = lab
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= class_names.len())
    {
        return Err(Error::bad_data(
            labels,
            format!(
                "label {l} of item {i} is outside the {} classes",
                class_names.len()
            ),
        ));
    }
    Ok(ImageSet {
        pixels,
        labels: lab.into_iter().map(u32::from).collect(),
        height: rows,
        width: cols,
        channels: 1,
        class_names,
    })
}

/// Finds `{prefix}-{kind}-idx{n}-ubyte` in `dir`, also with `.gz` and with `.` before `idx`
/// (both spellings occur in distributions). Errors name the file looked for.
fn find_idx(dir: &Path, prefix: &str, kind: &str, n: u32) -> Result<PathBuf> {
    let names = [
        format!("{prefix}-{kind}-idx{n}-ubyte.gz"),
        format!("{prefix}-{kind}-idx{n}-ubyte"),
        format!("{prefix}-{kind}.idx{n}-ubyte.gz"),
        format!("{prefix}-{kind}.idx{n}-ubyte"),
    ];
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NotFound {
            path: dir.join(&names[0]),
            what: format!(
                "IDX {kind} file (also looked for {})",
                names[1..].join(", ")
            ),
        })
}

fn load_idx_dir(dir: &Path, train: bool, class_names: Vec<String>) -> Result<ImageSet> {
    if !dir.is_dir() {
        return Err(Error::NotFound {
            path: dir.to_path_buf(),
            what: "folder of IDX files".into(),
        });
    }
    let prefix = if train { "train" } else { "t10k" };
    let images = find_idx(dir, prefix, "images", 3)?;
    let labels = find_idx(dir, prefix, "labels", 1)?;
    load_idx(&images, &labels, class_names)
}

/// MNIST from a folder of the four official IDX files (`train-images-idx3-ubyte.gz`, ...):
/// train (60,000) or test (`t10k`, 10,000), 28x28x1, class names "0".."9".
pub fn mnist(dir: &Path, train: bool) -> Result<ImageSet> {
    load_idx_dir(dir, train, (0..10).map(|d| d.to_string()).collect())
}

/// Fashion-MNIST from a folder of its four IDX files (same names as MNIST's), with the ten
/// official class names ([`FASHION_MNIST_CLASSES`]).
pub fn fashion_mnist(dir: &Path, train: bool) -> Result<ImageSet> {
    load_idx_dir(
        dir,
        train,
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}
