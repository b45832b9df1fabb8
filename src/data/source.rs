//! What the real data-set readers share: load options, parallel image decoding and the
//! post-processing (`max_per_class`, resize) applied to sets read from raw-pixel formats.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::cache::CacheMode;
use super::ImageSet;
use crate::{Error, Result};

/// Options shared by the readers.
///
/// - `resize`: `Some((height, width))` resizes every image to that size (bilinear, `image`'s
///   `Triangle` filter); `None` keeps the stored size, and then all images must have one size.
/// - `max_per_class`: keep only the first `k` images of each class (by file name for folders, in
///   file order for IDX / CIFAR binary, in annotation order for Tiny-ImageNet val).
/// - `cache`: where decoded sets are cached (see [`CacheMode`]); readers of formats that hold raw
///   pixels (IDX, CIFAR binary) do not use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub resize: Option<(usize, usize)>,
    pub max_per_class: Option<usize>,
    pub cache: CacheMode,
}

impl LoadOptions {
    /// Checks the options (a resize to zero pixels or `max_per_class == Some(0)` is an error).
    pub fn validate(&self) -> Result<()> {
        if let Some((h, w)) = self.resize {
            if h == 0 || w == 0 || h > 1 << 15 || w > 1 << 15 {
                return Err(Error::invalid(format!(
                    "resize to {h}x{w} (height x width): both sides must be in 1..=32768"
                )));
            }
        }
        if self.max_per_class == Some(0) {
            return Err(Error::invalid(
                "max_per_class is 0: it must be at least 1 (or unset for all images)",
            ));
        }
        Ok(())
    }

    /// A short stable description of the options that change the decoded pixels (part of cache keys).
    pub(crate) fn key_part(&self) -> String {
        format!(
            "resize={:?};max_per_class={:?}",
            self.resize, self.max_per_class
        )
    }
}

/// True when `name` ends in `.jpg`, `.jpeg` or `.png` (any case).
pub fn is_image_file_name(name: &str) -> bool {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    ext.eq_ignore_ascii_case("jpg")
        || ext.eq_ignore_ascii_case("jpeg")
        || ext.eq_ignore_ascii_case("png")
}

/// The bytes of one encoded image: already in memory (archive member) or still on disk.
pub(crate) enum Encoded {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// One encoded image to decode: its display name (file path, or `archive: member`), its bytes
/// and its label.
pub(crate) struct EncodedImage {
    pub name: PathBuf,
    pub data: Encoded,
    pub label: u32,
}

/// The display path of an archive member in errors: `archive: member`.
pub(crate) fn member_path(archive: &Path, member: &str) -> PathBuf {
    PathBuf::from(format!("{}: {}", archive.display(), member))
}

fn decode_rgb(name: &Path, data: &Encoded) -> Result<image::RgbImage> {
    let owned;
    let bytes: &[u8] = match data {
        Encoded::Bytes(b) => b,
        Encoded::File(p) => {
            owned = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            &owned
        }
    };
    let img = image::load_from_memory(bytes).map_err(|e| Error::Image {
        path: name.to_path_buf(),
        msg: e.to_string(),
    })?;
    Ok(img.into_rgb8())
}

fn decode_into(
    item: &EncodedImage,
    out: &mut [u8],
    h: usize,
    w: usize,
    resize: bool,
    first_name: &Path,
) -> Result<()> {
    let mut rgb = decode_rgb(&item.name, &item.data)?;
    let (iw, ih) = (rgb.width() as usize, rgb.height() as usize);
    if (ih, iw) != (h, w) {
        if !resize {
            return Err(Error::bad_data(
                &item.name,
                format!(
                    "image is {iw}x{ih} (width x height) but the first image ({}) is {w}x{h}; \
                     all images must have one size unless a resize is requested",
                    first_name.display()
                ),
            ));
        }
        rgb = image::imageops::resize(&rgb, w as u32, h as u32, FilterType::Triangle);
    }
    out.copy_from_slice(rgb.as_raw());
    Ok(())
}

/// Decodes `items` in parallel (rayon) into one RGB set (grayscale and RGBA become RGB).
///
/// With `resize = Some((h, w))` every image is resized to `h x w`; otherwise the first image sets
/// the size and the first image (in `items` order) of another size is an error naming it and
/// both sizes. When several images fail, the error is the one of the first in `items` order.
pub(crate) fn decode_images(
    items: &[EncodedImage],
    resize: Option<(usize, usize)>,
    class_names: Vec<String>,
) -> Result<ImageSet> {
    let first = items
        .first()
        .ok_or_else(|| Error::invalid("decode_images: no image to decode"))?;
    let (h, w) = match resize {
        Some(hw) => hw,
        None => {
            let img = decode_rgb(&first.name, &first.data)?;
            (img.height() as usize, img.width() as usize)
        }
    };
    let bytes_per = h * w * 3;
    let mut pixels = vec![0u8; items.len() * bytes_per];
    let results: Vec<Result<()>> = pixels
        .par_chunks_mut(bytes_per)
        .zip(items.par_iter())
        .with_min_len(16)
        .map(|(out, item)| decode_into(item, out, h, w, resize.is_some(), &first.name))
        .collect();
    if let Some(err) = results.into_iter().find_map(|r| r.err()) {
        return Err(err);
    }
    Ok(ImageSet {
        pixels,
        labels: items.iter().map(|i| i.label).collect(),
        height: h,
        width: w,
        channels: 3,
        class_names,
    })
}

/// Indices of the first `k` images of each class, in order.
pub(crate) fn first_k_per_class(labels: &[u32], num_classes: usize, k: usize) -> Vec<usize> {
    let mut seen = vec![0usize; num_classes];
    labels
        .iter()
        .enumerate()
        .filter_map(|(i, &l)| {
            let c = seen.get_mut(l as usize)?;
            if *c < k {
                *c += 1;
                Some(i)
            } else {
                None
            }
        })
        .collect()
}

/// Applies `max_per_class` and `resize` of `opts` to a set read from a raw-pixel format.
pub(crate) fn apply_options(set: ImageSet, opts: &LoadOptions) -> Result<ImageSet> {
    opts.validate()?;
    let mut set = match opts.max_per_class {
        Some(k) => set.select(&first_k_per_class(&set.labels, set.num_classes(), k)),
        None => set,
    };
    if let Some((h, w)) = opts.resize {
        if (h, w) != (set.height, set.width) {
            set = resize_set(&set, h, w)?;
        }
    }
    Ok(set)
}

/// Resizes every image of `set` to `h x w` (bilinear), in parallel. Channels 1 or 3.
pub(crate) fn resize_set(set: &ImageSet, h: usize, w: usize) -> Result<ImageSet> {
    let (sh, sw, c) = (set.height as u32, set.width as u32, set.channels);
    if c != 1 && c != 3 {
        return Err(Error::invalid(format!(
            "resize: images with {c} channels are not supported (1 or 3)"
        )));
    }
    if set.pixels.len() != set.len() * set.image_bytes() {
        return Err(Error::invalid(format!(
            "resize: the set holds {} pixel bytes, not {} images x {}x{}x{c}",
            set.pixels.len(),
            set.len(),
            set.height,
            set.width
        )));
    }
    let out_bytes = h * w * c;
    let mut pixels = vec![0u8; set.len() * out_bytes];
    pixels
        .par_chunks_mut(out_bytes.max(1))
        .enumerate()
        .for_each(|(i, out)| {
            let src = set.image(i).to_vec();
            if c == 1 {
                let img =
                    image::GrayImage::from_raw(sw, sh, src).expect("size checked by ImageSet");
                let r = image::imageops::resize(&img, w as u32, h as u32, FilterType::Triangle);
                out.copy_from_slice(r.as_raw());
            } else {
                let img = image::RgbImage::from_raw(sw, sh, src).expect("size checked by ImageSet");
                let r = image::imageops::resize(&img, w as u32, h as u32, FilterType::Triangle);
                out.copy_from_slice(r.as_raw());
            }
        });
    Ok(ImageSet {
        pixels,
        labels: set.labels.clone(),
        height: h,
        width: w,
        channels: c,
        class_names: set.class_names.clone(),
    })
}
