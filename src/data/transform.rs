//! Evaluation transforms: `u8` images to normalised `f32` tensors, without augmentation.
//!
//! Resizing follows Pillow's `Image.resize(..., BILINEAR)` exactly (the separable triangle
//! filter, widened by the scale factor when shrinking, with Pillow's 22-bit fixed-point
//! arithmetic and `u8` rounding between the horizontal and the vertical pass), so
//! [`preprocess_photo`] reproduces torchvision's `Resize(256) + CenterCrop(224) + ToTensor +
//! Normalize` applied to a PIL image, and [`resize_rgb_u8`] reproduces `img.resize((dw, dh))`.
//!
//! Normalisation is torchvision's `Normalize`: `(x / 255 - mean) / std` in `f32`, per channel.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::data::ImageSet;
use crate::{Error, Result};

/// CIFAR-10 per-channel mean (RGB, on `[0, 1]` values).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 per-channel standard deviation.
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// ImageNet per-channel mean (torchvision's pretrained models, ResNet-18).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel standard deviation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// EfficientNet-Lite mean (inputs mapped to `[-1, 1]`).
pub const EFFICIENTNET_LITE_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// EfficientNet-Lite standard deviation.
pub const EFFICIENTNET_LITE_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Filter taps along one axis: output sample `o` is `Σ_k w[o*ksize + k] · in[start[o] + k]`
/// for `k < len[o]`.
#[derive(Debug, Clone)]
pub(crate) struct Taps<W> {
    pub start: Vec<usize>,
    pub len: Vec<usize>,
    pub ksize: usize,
    pub w: Vec<W>,
}

impl<W: Copy> Taps<W> {
    /// The taps of output samples `from..from + n` only.
    fn window(&self, from: usize, n: usize) -> Taps<W> {
        Taps {
            start: self.start[from..from + n].to_vec(),
            len: self.len[from..from + n].to_vec(),
            ksize: self.ksize,
            w: self.w[from * self.ksize..(from + n) * self.ksize].to_vec(),
        }
    }

    /// Mirror the output axis (output `o` takes the taps of `n - 1 - o`).
    pub(crate) fn reverse(&mut self) {
        let n = self.start.len();
        self.start.reverse();
        self.len.reverse();
        for o in 0..n / 2 {
            for k in 0..self.ksize {
                self.w
                    .swap(o * self.ksize + k, (n - 1 - o) * self.ksize + k);
            }
        }
    }

    /// First input sample read and one past the last (the taps are monotone in `o`).
    pub(crate) fn span(&self) -> (usize, usize) {
        let n = self.start.len();
        let first = (0..n).map(|o| self.start[o]).min().unwrap_or(0);
        let last = (0..n)
            .map(|o| self.start[o] + self.len[o])
            .max()
            .unwrap_or(0);
        (first, last)
    }
}

/// Pillow's `precompute_coeffs` for the bilinear (triangle) filter: the box `[in0, in1)` of an
/// axis of `in_size` samples resampled to `out_size` samples. When shrinking, the triangle is
/// widened by the scale factor (antialiasing); weights are normalised over the in-range taps.
/// torch's `interpolate(..., mode="bilinear", antialias=True)` uses the same weights.
pub(crate) fn triangle_taps(in_size: usize, in0: f64, in1: f64, out_size: usize) -> Taps<f64> {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 × filterscale
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut w = vec![0.0f64; out_size * ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like Pillow's `(int)` cast.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let xmax = xmax.max(0) as usize;
        let k = &mut w[xx * ksize..xx * ksize + ksize];
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let t = ((x as i64 + xmin) as f64 - center + 0.5) * ss;
            let v = (1.0 - t.abs()).max(0.0);
            *kx = v;
            ww += v;
        }
        if ww != 0.0 {
            for kx in k.iter_mut().take(xmax) {
                *kx /= ww;
            }
        }
        start.push(xmin as usize);
        len.push(xmax);
    }
    Taps {
        start,
        len,
        ksize,
        w,
    }
}

/// Pillow's `normalize_coeffs_8bpc`: weights to 22-bit fixed point, rounded half away from zero.
fn fixed_point(t: &Taps<f64>) -> Taps<i32> {
    let one = (1u32 << PRECISION_BITS) as f64;
    Taps {
        start: t.start.clone(),
        len: t.len.clone(),
        ksize: t.ksize,
        w: t.w
            .iter()
            .map(|&k| {
                if k < 0.0 {
                    (-0.5 + k * one) as i32
                } else {
                    (0.5 + k * one) as i32
                }
            })
            .collect(),
    }
}

#[inline]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A rectangle of an image: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Pillow's horizontal 8-bit pass: `rows` rows of `src` (row stride `sw * c`, starting at row
/// `y0`) through the taps `tx` (whose starts are absolute source columns) into `rows x n x c`.
fn pass_h_u8(src: &[u8], sw: usize, c: usize, y0: usize, rows: usize, tx: &Taps<i32>) -> Vec<u8> {
    let n = tx.start.len();
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; rows * n * c];
    for r in 0..rows {
        let srow = &src[(y0 + r) * sw * c..(y0 + r + 1) * sw * c];
        let orow = &mut out[r * n * c..(r + 1) * n * c];
        for x in 0..n {
            let k = &tx.w[x * tx.ksize..x * tx.ksize + tx.len[x]];
            let s0 = tx.start[x];
            for ch in 0..c {
                let mut ss = half;
                for (j, &kj) in k.iter().enumerate() {
                    ss += srow[(s0 + j) * c + ch] as i32 * kj;
                }
                orow[x * c + ch] = clip8(ss);
            }
        }
    }
    out
}

/// Pillow's vertical 8-bit pass: rows of `src` (`row` bytes each; tap starts relative to the
/// first row of `src`) through the taps `ty`, keeping bytes `x0..x0 + n` of each row.
fn pass_v_u8(src: &[u8], row: usize, x0: usize, n: usize, ty: &Taps<i32>) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let oh = ty.start.len();
    let mut out = vec![0u8; oh * n];
    for y in 0..oh {
        let k = &ty.w[y * ty.ksize..y * ty.ksize + ty.len[y]];
        let s0 = ty.start[y];
        let orow = &mut out[y * n..(y + 1) * n];
        for (i, o) in orow.iter_mut().enumerate() {
            let mut ss = half;
            for (j, &kj) in k.iter().enumerate() {
                ss += src[(s0 + j) * row + x0 + i] as i32 * kj;
            }
            *o = clip8(ss);
        }
    }
    out
}

/// Pillow-exact bilinear resize of a `u8` HWC image `(sh, sw, c)` to `(dh, dw, c)`, computing
/// only the output pixels inside `win` (returned as `(win.height, win.width, c)`).
///
/// Pillow resizes in two passes rounded to `u8` in between; since Pillow 13 the vertical pass
/// runs first when `sh - dh > 2 (sw - dw)` and `sh > dh` (before, always horizontal first; the
/// two orders differ by one level on a few pixels). Each output pixel depends only on its own
/// taps, so a window of the full resize equals its crop. Arguments are assumed valid.
fn resize_u8_window(
    src: &[u8],
    (sh, sw, c): (usize, usize, usize),
    (dh, dw): (usize, usize),
    win: Window,
) -> Vec<u8> {
    let need_h = dw != sw;
    let need_v = dh != sh;
    let (oh, ow) = (win.height, win.width);
    if oh == 0 || ow == 0 {
        return Vec::new();
    }
    let horizontal_first = !(sh > dh && (sh as i64 - dh as i64) > (sw as i64 - dw as i64) * 2);
    let tx = fixed_point(&triangle_taps(sw, 0.0, sw as f64, dw)).window(win.left, ow);
    let mut ty = fixed_point(&triangle_taps(sh, 0.0, sh as f64, dh)).window(win.top, oh);
    // Without a pass along an axis, the window is a plain crop along it.
    let crop_cols = |rows: &[u8], nrows: usize, row: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(nrows * ow * c);
        for r in 0..nrows {
            out.extend_from_slice(&rows[r * row + win.left * c..r * row + (win.left + ow) * c]);
        }
        out
    };
    if horizontal_first || !need_v {
        // Rows of the source the vertical pass reads.
        let (y0, y1) = if need_v {
            ty.span()
        } else {
            (win.top, win.top + oh)
        };
        let tmp = if need_h {
            pass_h_u8(src, sw, c, y0, y1 - y0, &tx)
        } else {
            crop_cols(&src[y0 * sw * c..y1 * sw * c], y1 - y0, sw * c)
        };
        if need_v {
            for s in ty.start.iter_mut() {
                *s -= y0;
            }
            pass_v_u8(&tmp, ow * c, 0, ow * c, &ty)
        } else {
            tmp
        }
    } else {
        // Vertical first (need_v): only the source columns the horizontal taps read.
        let (x0, x1) = if need_h {
            tx.span()
        } else {
            (win.left, win.left + ow)
        };
        let tmp = pass_v_u8(src, sw * c, x0 * c, (x1 - x0) * c, &ty);
        if need_h {
            let mut txs = tx;
            for s in txs.start.iter_mut() {
                *s -= x0;
            }
            pass_h_u8(&tmp, x1 - x0, c, 0, oh, &txs)
        } else {
            tmp
        }
    }
}

fn check_image(what: &str, len: usize, h: usize, w: usize, c: usize) -> Result<()> {
    if h == 0 || w == 0 {
        return Err(Error::invalid(format!("{what}: empty image ({h}x{w})")));
    }
    if c != 1 && c != 3 {
        return Err(Error::invalid(format!(
            "{what}: {c} channels (expected 1 or 3)"
        )));
    }
    if len != h * w * c {
        return Err(Error::invalid(format!(
            "{what}: {len} bytes for a {h}x{w}x{c} image (expected {})",
            h * w * c
        )));
    }
    Ok(())
}

fn check_norm(what: &str, std: &[f32; 3]) -> Result<()> {
    if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::invalid(format!(
            "{what}: std {std:?} must be finite and positive"
        )));
    }
    Ok(())
}

/// Pillow-exact bilinear resize (antialiased when shrinking) of an RGB `u8` HWC image
/// `(sh, sw, 3)` to `(dh, dw, 3)`; equals `PIL.Image.resize((dw, dh), Image.BILINEAR)`.
pub fn resize_rgb_u8(src: &[u8], sh: usize, sw: usize, dh: usize, dw: usize) -> Result<Vec<u8>> {
    resize_u8(src, sh, sw, 3, dh, dw)
}

/// [`resize_rgb_u8`] for `c` interleaved channels (any `c >= 1`; each channel is resized alone,
/// so `c = 1` equals Pillow on an `L` image).
pub fn resize_u8(
    src: &[u8],
    sh: usize,
    sw: usize,
    c: usize,
    dh: usize,
    dw: usize,
) -> Result<Vec<u8>> {
    if sh == 0 || sw == 0 || c == 0 || src.len() != sh * sw * c {
        return Err(Error::invalid(format!(
            "resize: {} bytes for a {sh}x{sw}x{c} image (expected {}, all sizes > 0)",
            src.len(),
            sh * sw * c
        )));
    }
    if dh == 0 || dw == 0 {
        return Err(Error::invalid(format!(
            "resize: output size {dh}x{dw} must be positive"
        )));
    }
    let win = Window {
        top: 0,
        left: 0,
        height: dh,
        width: dw,
    };
    Ok(resize_u8_window(src, (sh, sw, c), (dh, dw), win))
}

/// Writes `(x / 255 - mean[ch]) / std[ch]` of the HWC `u8` image `src` (1 or 3 channels; one
/// channel is replicated) into the CHW `out` (`3 * h * w` values).
fn normalise_into(
    src: &[u8],
    hw: usize,
    c: usize,
    mean: &[f32; 3],
    std: &[f32; 3],
    out: &mut [f32],
) {
    for ch in 0..3 {
        let plane = &mut out[ch * hw..(ch + 1) * hw];
        let sc = if c == 1 { 0 } else { ch };
        let (m, s) = (mean[ch], std[ch]);
        // The same f32 expression, tabulated over the 256 byte values.
        let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - m) / s);
        for (o, px) in plane.iter_mut().zip(src[sc..].iter().step_by(c)) {
            *o = lut[*px as usize];
        }
    }
}

/// Normalised tensor of the images at `indices` of `images`, no augmentation:
/// `(B, 3, H, W)` f32 on the CPU, with `(H, W) = size` (Pillow-exact bilinear resize of each
/// `u8` image, as torchvision's `Resize((H, W))` on PIL images) or the set's own size when
/// `size` is `None`. One-channel sets are replicated to RGB.
pub fn to_tensor(
    images: &ImageSet,
    indices: &[usize],
    mean: [f32; 3],
    std: [f32; 3],
    size: Option<(usize, usize)>,
) -> Result<Tensor> {
    let n = images.len();
    let mut raw = Vec::with_capacity(indices.len());
    for &i in indices {
        if i >= n {
            return Err(Error::invalid(format!(
                "to_tensor: index {i} out of range for a set of {n} images"
            )));
        }
        raw.push(images.image(i));
    }
    to_tensor_raw(
        &raw,
        images.height,
        images.width,
        images.channels,
        mean,
        std,
        size,
    )
}

/// [`to_tensor`] on raw HWC `u8` images of one size `(h, w, c)` (`c` = 1 or 3):
/// `(B, 3, H, W)` f32 on the CPU.
pub fn to_tensor_raw(
    images: &[&[u8]],
    h: usize,
    w: usize,
    c: usize,
    mean: [f32; 3],
    std: [f32; 3],
    size: Option<(usize, usize)>,
) -> Result<Tensor> {
    for (k, img) in images.iter().enumerate() {
        check_image(&format!("to_tensor: image {k}"), img.len(), h, w, c)?;
    }
    check_norm("to_tensor", &std)?;
    let (oh, ow) = size.unwrap_or((h, w));
    if oh == 0 || ow == 0 {
        return Err(Error::invalid(format!(
            "to_tensor: output size {oh}x{ow} must be positive"
        )));
    }
    let per = 3 * oh * ow;
    let mut buf = vec![0f32; images.len() * per];
    buf.par_chunks_mut(per.max(1))
        .zip(images.par_iter())
        .for_each(|(out, img)| {
            if (oh, ow) == (h, w) {
                normalise_into(img, oh * ow, c, &mean, &std, out);
            } else {
                let win = Window {
                    top: 0,
                    left: 0,
                    height: oh,
                    width: ow,
                };
                let r = resize_u8_window(img, (h, w, c), (oh, ow), win);
                normalise_into(&r, oh * ow, c, &mean, &std, out);
            }
        });
    Ok(Tensor::from_vec(
        buf,
        (images.len(), 3, oh, ow),
        &Device::Cpu,
    )?)
}

/// torchvision's `Resize(s)` output size for an `(h, w)` image: the shorter side becomes `s`,
/// the longer `int(s * long / short)`. All sizes must be positive.
pub fn resized_shorter_size(h: usize, w: usize, s: usize) -> Result<(usize, usize)> {
    if h == 0 || w == 0 || s == 0 {
        return Err(Error::invalid(format!(
            "resize: cannot resize a {h}x{w} image to shorter side {s}"
        )));
    }
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (s as f64 * long as f64 / short as f64) as usize;
    Ok(if w <= h { (new_long, s) } else { (s, new_long) })
}

/// The centre crop window of torchvision's `CenterCrop` of an `(h, w)` image: offsets
/// `round((size - crop) / 2)` with Python's round-half-to-even. The crop must fit the image
/// (torchvision would pad; we do not).
pub fn center_crop_window(h: usize, w: usize, ch: usize, cw: usize) -> Result<Window> {
    if ch == 0 || cw == 0 || ch > h || cw > w {
        return Err(Error::invalid(format!(
            "center crop: a {ch}x{cw} crop does not fit a {h}x{w} image"
        )));
    }
    let off = |a: usize, b: usize| ((a - b) as f64 / 2.0).round_ties_even() as usize;
    Ok(Window {
        top: off(h, ch),
        left: off(w, cw),
        height: ch,
        width: cw,
    })
}

fn preprocess_into(
    img: &image::DynamicImage,
    resize_shorter: usize,
    crop: usize,
    mean: &[f32; 3],
    std: &[f32; 3],
    out: &mut [f32],
) -> Result<()> {
    let rgb = img.to_rgb8();
    let (h, w) = (rgb.height() as usize, rgb.width() as usize);
    let (dh, dw) = resized_shorter_size(h, w, resize_shorter)?;
    let win = center_crop_window(dh, dw, crop, crop)?;
    let cropped = resize_u8_window(rgb.as_raw(), (h, w, 3), (dh, dw), win);
    normalise_into(&cropped, crop * crop, 3, mean, std, out);
    Ok(())
}

fn check_photo(k: usize, img: &image::DynamicImage) -> Result<()> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::invalid(format!(
            "preprocess_photo: photo {k} is empty ({}x{})",
            img.width(),
            img.height()
        )));
    }
    Ok(())
}

fn check_photo_args(resize_shorter: u32, crop: u32, std: &[f32; 3]) -> Result<()> {
    if crop == 0 || crop > resize_shorter {
        return Err(Error::invalid(format!(
            "preprocess_photo: crop {crop} must be in 1..={resize_shorter} (the resized shorter side)"
        )));
    }
    check_norm("preprocess_photo", std)
}

/// A photo as a classifier input: torchvision's `Resize(resize_shorter)` (shorter side, Pillow
/// bilinear with antialiasing, computed exactly as Pillow does on the RGB `u8` image) then
/// `CenterCrop(crop)`, `ToTensor` and `Normalize(mean, std)` -> `(1, 3, crop, crop)` f32 on the
/// CPU. Alpha is dropped and grayscale replicated (`to_rgb8`). `crop` must not exceed
/// `resize_shorter`.
pub fn preprocess_photo(
    img: &image::DynamicImage,
    resize_shorter: u32,
    crop: u32,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Tensor> {
    preprocess_photos(std::slice::from_ref(img), resize_shorter, crop, mean, std)
}

/// [`preprocess_photo`] for many photos of any sizes, in parallel -> `(N, 3, crop, crop)`.
pub fn preprocess_photos(
    imgs: &[image::DynamicImage],
    resize_shorter: u32,
    crop: u32,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Tensor> {
    check_photo_args(resize_shorter, crop, &std)?;
    for (k, img) in imgs.iter().enumerate() {
        check_photo(k, img)?;
    }
    let crop = crop as usize;
    let per = 3 * crop * crop;
    let mut buf = vec![0f32; imgs.len() * per];
    buf.par_chunks_mut(per)
        .zip(imgs.par_iter())
        .try_for_each(|(out, img)| {
            preprocess_into(img, resize_shorter as usize, crop, &mean, &std, out)
        })?;
    Ok(Tensor::from_vec(
        buf,
        (imgs.len(), 3, crop, crop),
        &Device::Cpu,
    )?)
}
