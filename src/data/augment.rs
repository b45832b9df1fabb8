//! Seeded, batched SSL augmentations on the CPU: `u8` HWC images -> normalised `(B, 3, H, W)`.
//!
//! The pipeline is torchvision's (SimCLR / BYOL / Barlow Twins recipes), computed on `f32`
//! values in `[0, 1]` with the semantics of torchvision's *tensor* functional ops:
//!
//! 1. `RandomResizedCrop(size, scale, ratio)`: the box from [`sample_crop_box`] (10 tries of
//!    area / log-ratio sampling, then the centre-crop fallback), resampled bilinearly to `size`
//!    (antialiased like Pillow when shrinking if [`AugmentConfig::antialias`]);
//! 2. `RandomHorizontalFlip(flip_p)`;
//! 3. `RandomApply(ColorJitter(b, c, s, h), jitter_p)`: brightness, contrast, saturation and hue
//!    in a random order, factors `U[max(0, 1 - x), 1 + x]` (hue `U[-h, h]`), as [`ops`];
//! 4. `RandomGrayscale(grayscale_p)` (`0.2989 R + 0.587 G + 0.114 B`, torchvision's weights);
//! 5. `GaussianBlur(kernel, sigma ~ U[s0, s1])` with probability `blur.p` (reflect padding);
//! 6. `RandomSolarize(0.5, solarize_p)`: `x -> 1 - x` where `x >= 0.5`;
//! 7. `Normalize(mean, std)`.
//!
//! One-channel images (MNIST) are replicated to RGB before step 3.
//!
//! **Determinism.** Image `i` of a batch (its position in `indices`, not its index in the set)
//! of view stream `v` draws from `StdRng::seed_from_u64(image_seed(seed, v, i))`, so a batch is
//! the same for a seed whatever the rayon thread count. [`augment_batch`] is stream 0;
//! [`augment_views`] uses streams 0 and 1.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::transform::{
    triangle_taps, Taps, CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD,
};
use crate::data::ImageSet;
use crate::{Error, Result};

/// Colour-jitter strengths (torchvision `ColorJitter(brightness, contrast, saturation, hue)`).
/// A strength of 0 leaves that op out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    /// Brightness factor `~ U[max(0, 1 - b), 1 + b]`.
    pub brightness: f32,
    /// Contrast factor `~ U[max(0, 1 - c), 1 + c]`.
    pub contrast: f32,
    /// Saturation factor `~ U[max(0, 1 - s), 1 + s]`.
    pub saturation: f32,
    /// Hue shift `~ U[-h, h]`, `h <= 0.5`.
    pub hue: f32,
}

/// Random Gaussian blur (torchvision `GaussianBlur(kernel_size, sigma)`), applied with
/// probability `p`; `sigma ~ U[sigma.0, sigma.1]`, the same along both axes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blur {
    pub p: f64,
    /// Odd kernel size; `kernel_size / 2` must be smaller than both output sides.
    pub kernel_size: usize,
    pub sigma: (f32, f32),
}

/// One augmentation recipe (one view). See the module docs for the order of the steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Output `(height, width)`.
    pub size: (usize, usize),
    /// Random-resized-crop area fraction range (torchvision `scale`).
    pub scale: (f64, f64),
    /// Random-resized-crop aspect ratio (w / h) range (torchvision `ratio`).
    pub ratio: (f64, f64),
    /// Antialias when the crop is shrunk (Pillow's / torch `antialias=True` triangle filter);
    /// `false` is torch's plain bilinear. Enlarging is the same either way.
    pub antialias: bool,
    /// Horizontal flip probability.
    pub flip_p: f64,
    pub jitter: ColorJitter,
    /// Probability of applying the colour jitter.
    pub jitter_p: f64,
    /// Grayscale probability.
    pub grayscale_p: f64,
    pub blur: Blur,
    /// Solarisation probability.
    pub solarize_p: f64,
    /// Solarisation threshold on `[0, 1]` values (0.5).
    pub solarize_threshold: f32,
    /// Per-channel normalisation mean and std (applied last).
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

const NO_BLUR: Blur = Blur {
    p: 0.0,
    kernel_size: 3,
    sigma: (0.1, 2.0),
};

impl AugmentConfig {
    /// CIFAR (32x32) SimCLR / Barlow Twins view (DESIGN §3, CaSSLe's CIFAR recipe): crop scale
    /// (0.08, 1), ratio (3/4, 4/3), flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2,
    /// no blur, no solarisation, CIFAR-10 mean/std. Both views use it.
    pub fn cifar() -> Self {
        AugmentConfig {
            size: (32, 32),
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            antialias: true,
            flip_p: 0.5,
            jitter: ColorJitter {
                brightness: 0.4,
                contrast: 0.4,
                saturation: 0.2,
                hue: 0.1,
            },
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur: NO_BLUR,
            solarize_p: 0.0,
            solarize_threshold: 0.5,
            mean: CIFAR10_MEAN,
            std: CIFAR10_STD,
        }
    }

    /// BYOL's two asymmetric CIFAR views: [`AugmentConfig::cifar`] and the same with
    /// solarisation p 0.1 (DESIGN §3; solo-learn's CIFAR BYOL config uses 0.2).
    pub fn cifar_byol() -> (Self, Self) {
        let v1 = Self::cifar();
        let v2 = AugmentConfig {
            solarize_p: 0.1,
            ..Self::cifar()
        };
        (v1, v2)
    }

    /// Tiny-ImageNet (64x64) view: the CIFAR recipe at 64x64 with ImageNet mean/std (no blur
    /// at this size, as for CIFAR).
    pub fn tiny_imagenet() -> Self {
        AugmentConfig {
            size: (64, 64),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            blur: Blur {
                kernel_size: 7,
                ..NO_BLUR
            },
            ..Self::cifar()
        }
    }

    /// BYOL's two asymmetric Tiny-ImageNet views (second view solarised with p 0.2).
    pub fn tiny_imagenet_byol() -> (Self, Self) {
        let v2 = AugmentConfig {
            solarize_p: 0.2,
            ..Self::tiny_imagenet()
        };
        (Self::tiny_imagenet(), v2)
    }

    /// ImageNet (224x224) SimCLR view: the CIFAR recipe plus Gaussian blur p 0.5 (kernel 23,
    /// sigma U[0.1, 2]), ImageNet mean/std.
    pub fn imagenet() -> Self {
        AugmentConfig {
            size: (224, 224),
            blur: Blur {
                p: 0.5,
                kernel_size: 23,
                sigma: (0.1, 2.0),
            },
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            ..Self::cifar()
        }
    }

    /// BYOL's two asymmetric ImageNet views (BYOL paper): blur p 1.0 / 0.1, solarisation
    /// p 0 / 0.2.
    pub fn imagenet_byol() -> (Self, Self) {
        let base = Self::imagenet();
        let v1 = AugmentConfig {
            blur: Blur {
                p: 1.0,
                ..base.blur
            },
            ..base.clone()
        };
        let v2 = AugmentConfig {
            blur: Blur {
                p: 0.1,
                ..base.blur
            },
            solarize_p: 0.2,
            ..base
        };
        (v1, v2)
    }

    /// The same recipe with another output size.
    pub fn with_size(self, height: usize, width: usize) -> Self {
        AugmentConfig {
            size: (height, width),
            ..self
        }
    }

    /// The same recipe with another normalisation (e.g. EfficientNet-Lite's 0.5 / 0.5).
    pub fn with_normalization(self, mean: [f32; 3], std: [f32; 3]) -> Self {
        AugmentConfig { mean, std, ..self }
    }

    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("augment config: {m}")));
        let (h, w) = self.size;
        if h == 0 || w == 0 {
            return bad(format!("size {h}x{w} must be positive"));
        }
        let (s0, s1) = self.scale;
        if !(s0.is_finite() && s1.is_finite() && 0.0 < s0 && s0 <= s1) {
            return bad(format!("scale ({s0}, {s1}) must satisfy 0 < min <= max"));
        }
        let (r0, r1) = self.ratio;
        if !(r0.is_finite() && r1.is_finite() && 0.0 < r0 && r0 <= r1) {
            return bad(format!("ratio ({r0}, {r1}) must satisfy 0 < min <= max"));
        }
        for (name, p) in [
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur.p", self.blur.p),
            ("solarize_p", self.solarize_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p} is not a probability in [0, 1]"));
            }
        }
        let j = &self.jitter;
        for (name, v) in [
            ("brightness", j.brightness),
            ("contrast", j.contrast),
            ("saturation", j.saturation),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("jitter {name} {v} must be finite and >= 0"));
            }
        }
        if !(0.0..=0.5).contains(&j.hue) {
            return bad(format!("jitter hue {} must be in [0, 0.5]", j.hue));
        }
        if self.blur.p > 0.0 {
            let k = self.blur.kernel_size;
            if k % 2 == 0 || k / 2 >= h.min(w) {
                return bad(format!(
                    "blur kernel_size {k} must be odd with kernel_size / 2 < {}",
                    h.min(w)
                ));
            }
            let (a, b) = self.blur.sigma;
            if !(a.is_finite() && b.is_finite() && 0.0 < a && a <= b) {
                return bad(format!("blur sigma ({a}, {b}) must satisfy 0 < min <= max"));
            }
        }
        if !self.solarize_threshold.is_finite() {
            return bad(format!(
                "solarize_threshold {} must be finite",
                self.solarize_threshold
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return bad(format!(
                "mean {:?} must be finite and std {:?} finite and positive",
                self.mean, self.std
            ));
        }
        Ok(())
    }
}

/// A crop box: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// The colour-jitter draw: the order of the four ops (0 brightness, 1 contrast, 2 saturation,
/// 3 hue) and their factors (`None` where the strength is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JitterParams {
    pub order: [u8; 4],
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub saturation: Option<f32>,
    pub hue: Option<f32>,
}

/// Every random choice made for one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    pub crop: CropBox,
    pub flip: bool,
    /// `None` when the jitter is not applied.
    pub jitter: Option<JitterParams>,
    pub grayscale: bool,
    /// The blur's sigma, `None` when not blurred.
    pub blur_sigma: Option<f32>,
    pub solarize: bool,
}

/// The 64-bit seed of image `position` of view stream `stream` for a batch seed (SplitMix64
/// mixing of the three numbers).
pub fn image_seed(seed: u64, stream: u64, position: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    mix(mix(mix(seed) ^ stream) ^ position)
}

#[inline]
fn uniform<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.random::<f64>()
}

#[inline]
fn bernoulli<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// torchvision's `RandomResizedCrop.get_params` for an `(height, width)` image: up to 10 tries
/// of area `~ area · U[scale]` and aspect ratio `exp(U[ln ratio])`, with
/// `w = round(sqrt(area · ratio))`, `h = round(sqrt(area / ratio))` (half to even), accepted when
/// it fits, at a uniform position; otherwise the centre crop of the whole image clamped to the
/// ratio range.
pub fn sample_crop_box<R: Rng + ?Sized>(
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> CropBox {
    let area = (height * width) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let ar = uniform(rng, lr0, lr1).exp();
        let w = (target * ar).sqrt().round_ties_even();
        let h = (target / ar).sqrt().round_ties_even();
        if 0.0 < w && w <= width as f64 && 0.0 < h && h <= height as f64 {
            let (h, w) = (h as usize, w as usize);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0 {
        let w = width;
        (((w as f64) / ratio.0).round_ties_even() as usize, w)
    } else if in_ratio > ratio.1 {
        let h = height;
        (h, ((h as f64) * ratio.1).round_ties_even() as usize)
    } else {
        (height, width)
    };
    let (h, w) = (h.clamp(1, height.max(1)), w.clamp(1, width.max(1)));
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

fn sample_params_unchecked<R: Rng + ?Sized>(
    height: usize,
    width: usize,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> AugmentParams {
    let crop = sample_crop_box(height, width, cfg.scale, cfg.ratio, rng);
    let flip = bernoulli(rng, cfg.flip_p);
    let jitter = if bernoulli(rng, cfg.jitter_p) {
        let mut order = [0u8, 1, 2, 3];
        order.shuffle(rng);
        let j = &cfg.jitter;
        let mut factor = |x: f32| {
            let x = x as f64;
            (x > 0.0).then(|| uniform(rng, (1.0 - x).max(0.0), 1.0 + x) as f32)
        };
        let brightness = factor(j.brightness);
        let contrast = factor(j.contrast);
        let saturation = factor(j.saturation);
        let hue = (j.hue > 0.0).then(|| uniform(rng, -j.hue as f64, j.hue as f64) as f32);
        Some(JitterParams {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        })
    } else {
        None
    };
    let grayscale = bernoulli(rng, cfg.grayscale_p);
    let blur_sigma = bernoulli(rng, cfg.blur.p)
        .then(|| uniform(rng, cfg.blur.sigma.0 as f64, cfg.blur.sigma.1 as f64) as f32);
    let solarize = bernoulli(rng, cfg.solarize_p);
    AugmentParams {
        crop,
        flip,
        jitter,
        grayscale,
        blur_sigma,
        solarize,
    }
}

/// Draws every random choice for one `(height, width)` image, in this order: crop box, flip,
/// jitter (apply?, op order, brightness, contrast, saturation, hue), grayscale, blur (apply?,
/// sigma), solarise.
pub fn sample_params<R: Rng + ?Sized>(
    height: usize,
    width: usize,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> Result<AugmentParams> {
    cfg.validate()?;
    if height == 0 || width == 0 {
        return Err(Error::invalid(format!(
            "augment: empty image ({height}x{width})"
        )));
    }
    Ok(sample_params_unchecked(height, width, cfg, rng))
}

/// Filter taps for resampling `n_in` samples to `n_out`: Pillow's triangle filter
/// (antialiased) or torch's `interpolate(mode="bilinear", align_corners=False)`.
fn axis_taps(n_in: usize, n_out: usize, antialias: bool) -> Taps<f32> {
    if antialias {
        let t = triangle_taps(n_in, 0.0, n_in as f64, n_out);
        return Taps {
            start: t.start,
            len: t.len,
            ksize: t.ksize,
            w: t.w.iter().map(|&v| v as f32).collect(),
        };
    }
    let scale = n_in as f32 / n_out as f32;
    let mut start = Vec::with_capacity(n_out);
    let mut len = Vec::with_capacity(n_out);
    let mut w = Vec::with_capacity(n_out * 2);
    for o in 0..n_out {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(n_in - 1);
        let l1 = src - i0 as f32;
        let l0 = 1.0 - l1;
        start.push(i0);
        if i0 + 1 < n_in {
            len.push(2);
            w.extend_from_slice(&[l0, l1]);
        } else {
            len.push(1);
            w.extend_from_slice(&[l0 + l1, 0.0]);
        }
    }
    Taps {
        start,
        len,
        ksize: 2,
        w,
    }
}

/// One row of the horizontal pass with `K` taps per output (zero weights past `len`).
#[inline(always)]
fn taps_row<const K: usize>(tx: &Taps<f32>, prow: &[f32], trow: &mut [f32]) {
    for ((t, k), &s) in trow.iter_mut().zip(tx.w.chunks_exact(K)).zip(&tx.start) {
        let src: &[f32; K] = prow[s..s + K].try_into().expect("K taps");
        let mut acc = 0.0f32;
        for j in 0..K {
            acc += k[j] * src[j];
        }
        *t = acc;
    }
}

fn taps_row_dyn(tx: &Taps<f32>, prow: &[f32], trow: &mut [f32]) {
    let kx = tx.ksize;
    for ((t, k), &s) in trow.iter_mut().zip(tx.w.chunks_exact(kx)).zip(&tx.start) {
        let mut acc = 0.0f32;
        for (&kj, &v) in k.iter().zip(&prow[s..s + kx]) {
            acc += kj * v;
        }
        *t = acc;
    }
}

/// Separable resampling of the crop `crop` of an image into the CHW planes `out`
/// (`3 * oh * ow`), mirrored when `flip`. `fill_row(y, buf, stride)` writes source row `y`,
/// columns `crop.left..crop.left + crop.width`, as `c_in` (1 or 3) planar `f32` rows of
/// `stride` values in `buf`; a one-channel result is replicated to the three planes.
#[allow(clippy::too_many_arguments)]
fn resample_into<F: FnMut(usize, &mut [f32], usize)>(
    mut fill_row: F,
    c_in: usize,
    crop: CropBox,
    (oh, ow): (usize, usize),
    antialias: bool,
    flip: bool,
    tmp: &mut Vec<f32>,
    out: &mut [f32],
) {
    let mut tx = axis_taps(crop.width, ow, antialias);
    if flip {
        tx.reverse();
    }
    let ty = axis_taps(crop.height, oh, antialias);
    let (y0, y1) = ty.span();
    let kx = tx.ksize;
    // Source rows padded with `kx` zeros: every output reads `kx` taps, those past `len` are 0.
    let stride = crop.width + kx;
    let rows = y1 - y0;
    tmp.clear();
    tmp.resize(rows * c_in * ow + c_in * stride, 0.0);
    let (tmp, rowbuf) = tmp.split_at_mut(rows * c_in * ow);
    // Horizontal pass over the crop rows the vertical pass reads; tmp is (row, ch, x).
    for r in 0..rows {
        fill_row(crop.top + y0 + r, rowbuf, stride);
        for ch in 0..c_in {
            let prow = &rowbuf[ch * stride..(ch + 1) * stride];
            let trow = &mut tmp[(r * c_in + ch) * ow..(r * c_in + ch + 1) * ow];
            match kx {
                2 => taps_row::<2>(&tx, prow, trow),
                3 => taps_row::<3>(&tx, prow, trow),
                5 => taps_row::<5>(&tx, prow, trow),
                _ => taps_row_dyn(&tx, prow, trow),
            }
        }
    }
    // Vertical pass.
    let hw = oh * ow;
    for ch in 0..c_in {
        let plane = &mut out[ch * hw..(ch + 1) * hw];
        for y in 0..oh {
            let orow = &mut plane[y * ow..(y + 1) * ow];
            orow.fill(0.0);
            for j in 0..ty.len[y] {
                let kj = ty.w[y * ty.ksize + j];
                let r = ty.start[y] + j - y0;
                let trow = &tmp[(r * c_in + ch) * ow..(r * c_in + ch + 1) * ow];
                for (o, &t) in orow.iter_mut().zip(trow) {
                    *o += kj * t;
                }
            }
        }
    }
    if c_in == 1 {
        let (first, rest) = out.split_at_mut(hw);
        rest[..hw].copy_from_slice(first);
        rest[hw..2 * hw].copy_from_slice(first);
    }
}

/// The `u8 -> [0, 1]` table of torchvision's `ToTensor` (`x as f32 / 255`).
fn to_unit_lut() -> [f32; 256] {
    let mut lut = [0f32; 256];
    for (v, l) in lut.iter_mut().enumerate() {
        *l = v as f32 / 255.0;
    }
    lut
}

#[allow(clippy::too_many_arguments)]
fn apply_unchecked(
    src: &[u8],
    (_, w, c): (usize, usize, usize),
    p: &AugmentParams,
    cfg: &AugmentConfig,
    lut: &[f32; 256],
    tmp: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (left, cw) = (p.crop.left, p.crop.width);
    let fill = |y: usize, buf: &mut [f32], stride: usize| {
        let row = &src[(y * w + left) * c..(y * w + left + cw) * c];
        if c == 1 {
            for (b, &v) in buf[..cw].iter_mut().zip(row) {
                *b = lut[v as usize];
            }
        } else {
            let (r, rest) = buf.split_at_mut(stride);
            let (g, b) = rest.split_at_mut(stride);
            for (x, px) in row.chunks_exact(3).enumerate() {
                r[x] = lut[px[0] as usize];
                g[x] = lut[px[1] as usize];
                b[x] = lut[px[2] as usize];
            }
        }
    };
    let (oh, ow) = cfg.size;
    resample_into(fill, c, p.crop, (oh, ow), cfg.antialias, p.flip, tmp, out);
    let hw = oh * ow;
    if let Some(j) = &p.jitter {
        for op in j.order {
            match op {
                0 => {
                    if let Some(f) = j.brightness {
                        ops::brightness(out, f)
                    }
                }
                1 => {
                    if let Some(f) = j.contrast {
                        ops::contrast(out, hw, f)
                    }
                }
                2 => {
                    if let Some(f) = j.saturation {
                        ops::saturation(out, hw, f)
                    }
                }
                _ => {
                    if let Some(f) = j.hue {
                        ops::hue(out, hw, f)
                    }
                }
            }
        }
    }
    if p.grayscale {
        ops::grayscale(out, hw);
    }
    if let Some(sigma) = p.blur_sigma {
        ops::blur(out, oh, ow, cfg.blur.kernel_size, sigma, tmp);
    }
    if p.solarize {
        ops::solar(out, cfg.solarize_threshold);
    }
    for ch in 0..3 {
        let (m, s) = (cfg.mean[ch], cfg.std[ch]);
        for v in &mut out[ch * hw..(ch + 1) * hw] {
            *v = (*v - m) / s;
        }
    }
}

/// Applies the choices `params` to one HWC `u8` image `(h, w, c)` (`c` = 1 or 3), writing the
/// normalised CHW view into `out` (`3 * cfg.size.0 * cfg.size.1` values).
pub fn apply_params(
    src: &[u8],
    (h, w, c): (usize, usize, usize),
    params: &AugmentParams,
    cfg: &AugmentConfig,
    out: &mut [f32],
) -> Result<()> {
    cfg.validate()?;
    check_image("augment", src.len(), h, w, c)?;
    let b = params.crop;
    if b.height == 0 || b.width == 0 || b.top + b.height > h || b.left + b.width > w {
        return Err(Error::invalid(format!(
            "augment: crop box {b:?} is empty or outside the {h}x{w} image"
        )));
    }
    let n = 3 * cfg.size.0 * cfg.size.1;
    if out.len() != n {
        return Err(Error::invalid(format!(
            "augment: output buffer of {} values (expected {n})",
            out.len()
        )));
    }
    let mut tmp = Vec::new();
    apply_unchecked(src, (h, w, c), params, cfg, &to_unit_lut(), &mut tmp, out);
    Ok(())
}

fn check_image(what: &str, len: usize, h: usize, w: usize, c: usize) -> Result<()> {
    if h == 0 || w == 0 || (c != 1 && c != 3) {
        return Err(Error::invalid(format!(
            "{what}: images must be non-empty with 1 or 3 channels (got {h}x{w}x{c})"
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

fn gather<'a>(images: &'a ImageSet, indices: &[usize]) -> Result<Vec<&'a [u8]>> {
    let n = images.len();
    indices
        .iter()
        .map(|&i| {
            if i < n {
                Ok(images.image(i))
            } else {
                Err(Error::invalid(format!(
                    "augment: index {i} out of range for a set of {n} images"
                )))
            }
        })
        .collect()
}

fn check_batch(images: &[&[u8]], h: usize, w: usize, c: usize) -> Result<()> {
    for (k, img) in images.iter().enumerate() {
        check_image(&format!("augment: image {k}"), img.len(), h, w, c)?;
    }
    Ok(())
}

/// Writes view stream `stream` of every image into `buf` (validated inputs).
fn augment_into(
    images: &[&[u8]],
    hwc: (usize, usize, usize),
    cfg: &AugmentConfig,
    seed: u64,
    stream: u64,
    buf: &mut [f32],
) {
    let per = 3 * cfg.size.0 * cfg.size.1;
    let lut = to_unit_lut();
    buf.par_chunks_mut(per)
        .zip(images.par_iter())
        .enumerate()
        .for_each_init(Vec::new, |tmp, (i, (out, img))| {
            let mut rng = StdRng::seed_from_u64(image_seed(seed, stream, i as u64));
            let p = sample_params_unchecked(hwc.0, hwc.1, cfg, &mut rng);
            apply_unchecked(img, hwc, &p, cfg, &lut, tmp, out);
        });
}

/// One augmented view of raw HWC `u8` images of one size `(h, w, c)` (`c` = 1 or 3), in
/// parallel -> `(B, 3, cfg.size.0, cfg.size.1)` f32 on the CPU (view stream 0).
pub fn augment_raw(
    images: &[&[u8]],
    h: usize,
    w: usize,
    c: usize,
    cfg: &AugmentConfig,
    seed: u64,
) -> Result<Tensor> {
    cfg.validate()?;
    check_batch(images, h, w, c)?;
    let (oh, ow) = cfg.size;
    let mut buf = vec![0f32; images.len() * 3 * oh * ow];
    augment_into(images, (h, w, c), cfg, seed, 0, &mut buf);
    Ok(Tensor::from_vec(
        buf,
        (images.len(), 3, oh, ow),
        &Device::Cpu,
    )?)
}

/// One augmented view of the images at `indices` of `images`
/// -> `(B, 3, cfg.size.0, cfg.size.1)` f32 on the CPU, `B = indices.len()`.
pub fn augment_batch(
    images: &ImageSet,
    indices: &[usize],
    cfg: &AugmentConfig,
    seed: u64,
) -> Result<Tensor> {
    let raw = gather(images, indices)?;
    augment_raw(
        &raw,
        images.height,
        images.width,
        images.channels,
        cfg,
        seed,
    )
}

/// Two views of raw images from independent streams (0 with `cfg1`, 1 with `cfg2`): the first
/// equals [`augment_raw`] with `cfg1` and the same seed.
pub fn augment_views_raw(
    images: &[&[u8]],
    h: usize,
    w: usize,
    c: usize,
    cfg1: &AugmentConfig,
    cfg2: &AugmentConfig,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    cfg1.validate()?;
    cfg2.validate()?;
    check_batch(images, h, w, c)?;
    let mut views = Vec::with_capacity(2);
    for (stream, cfg) in [cfg1, cfg2].into_iter().enumerate() {
        let (oh, ow) = cfg.size;
        let mut buf = vec![0f32; images.len() * 3 * oh * ow];
        augment_into(images, (h, w, c), cfg, seed, stream as u64, &mut buf);
        views.push(Tensor::from_vec(
            buf,
            (images.len(), 3, oh, ow),
            &Device::Cpu,
        )?);
    }
    let v2 = views.pop().expect("two views");
    let v1 = views.pop().expect("two views");
    Ok((v1, v2))
}

/// Two views `(x¹, x²)` of the images at `indices`, from independent random streams
/// (`cfg1` for the first, `cfg2` for the second; pass the same config twice for symmetric
/// recipes) -> two `(B, 3, H, W)` f32 tensors on the CPU.
pub fn augment_views(
    images: &ImageSet,
    indices: &[usize],
    cfg1: &AugmentConfig,
    cfg2: &AugmentConfig,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    let raw = gather(images, indices)?;
    augment_views_raw(
        &raw,
        images.height,
        images.width,
        images.channels,
        cfg1,
        cfg2,
        seed,
    )
}

/// The augmentation ops with fixed parameters, on CHW `f32` RGB images with values in
/// `[0, 1]` (`img.len() == 3 * h * w`), matching torchvision's tensor functional ops
/// (`torchvision.transforms.functional`): each clamps to `[0, 1]` where torchvision does.
pub mod ops {
    use super::{resample_into, CropBox};
    use crate::{Error, Result};

    const GRAY: [f32; 3] = [0.2989, 0.587, 0.114];

    fn check(what: &str, img: &[f32], h: usize, w: usize) -> Result<()> {
        if h == 0 || w == 0 || img.len() != 3 * h * w {
            return Err(Error::invalid(format!(
                "{what}: {} values for a 3x{h}x{w} image (expected {}, sides > 0)",
                img.len(),
                3 * h * w
            )));
        }
        Ok(())
    }

    fn check_factor(what: &str, f: f32) -> Result<()> {
        if !(f.is_finite() && f >= 0.0) {
            return Err(Error::invalid(format!(
                "{what}: factor {f} must be finite and >= 0"
            )));
        }
        Ok(())
    }

    #[inline]
    fn gray(r: f32, g: f32, b: f32) -> f32 {
        GRAY[0] * r + GRAY[1] * g + GRAY[2] * b
    }

    /// `(ratio · a + (1 - ratio) · b).clamp(0, 1)` as torchvision's `_blend`.
    #[inline]
    fn blend(a: f32, b: f32, ratio: f32, one_minus: f32) -> f32 {
        (ratio * a + one_minus * b).clamp(0.0, 1.0)
    }

    pub(super) fn brightness(img: &mut [f32], f: f32) {
        let om = (1.0 - f as f64) as f32;
        for v in img {
            *v = blend(*v, 0.0, f, om);
        }
    }

    pub(super) fn contrast(img: &mut [f32], hw: usize, f: f32) {
        let (r, rest) = img.split_at_mut(hw);
        let (g, b) = rest.split_at_mut(hw);
        let sum: f64 = (0..hw).map(|i| gray(r[i], g[i], b[i]) as f64).sum();
        let mean = (sum / hw as f64) as f32;
        let om = (1.0 - f as f64) as f32;
        for v in img.iter_mut() {
            *v = blend(*v, mean, f, om);
        }
    }

    pub(super) fn saturation(img: &mut [f32], hw: usize, f: f32) {
        let om = (1.0 - f as f64) as f32;
        let (r, rest) = img.split_at_mut(hw);
        let (g, b) = rest.split_at_mut(hw);
        for i in 0..hw {
            let l = gray(r[i], g[i], b[i]);
            r[i] = blend(r[i], l, f, om);
            g[i] = blend(g[i], l, f, om);
            b[i] = blend(b[i], l, f, om);
        }
    }

    /// `floor(x)` for `|x| < 2^31` without a libm call (so loops using it vectorise).
    #[inline(always)]
    fn floor_small(x: f32) -> f32 {
        let t = x as i32 as f32;
        if t > x {
            t - 1.0
        } else {
            t
        }
    }

    /// torchvision's `_rgb2hsv`, hue shift modulo 1, `_hsv2rgb`, in f32, without branches.
    #[inline(always)]
    fn hue_px(r: f32, g: f32, b: f32, shift: f32) -> (f32, f32, f32) {
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let crd = if eqc { 1.0 } else { cr };
        let rc = (maxc - r) / crd;
        let gc = (maxc - g) / crd;
        let bc = (maxc - b) / crd;
        let hr = if maxc == r { bc - gc } else { 0.0 };
        let hg = if maxc == g && maxc != r {
            2.0 + rc - bc
        } else {
            0.0
        };
        let hb = if maxc != g && maxc != r {
            4.0 + gc - rc
        } else {
            0.0
        };
        let h = hr + hg + hb;
        // torch.fmod(h / 6 + 1, 1): the argument lies in [5/6, 2), so fmod = x - floor(x).
        let x = h / 6.0 + 1.0;
        let h = x - floor_small(x);
        let h = h + shift;
        let h = h - floor_small(h); // torch.remainder(h, 1)
        let v = maxc;
        let h6 = h * 6.0;
        let i = floor_small(h6);
        let f = h6 - i;
        let i = if i >= 6.0 { i - 6.0 } else { i }; // i % 6 (h may round up to 1)
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        // i: 0 (v,t,p) 1 (q,v,p) 2 (p,v,t) 3 (p,q,v) 4 (t,p,v) 5 (v,p,q)
        let nr = if i == 0.0 || i == 5.0 {
            v
        } else if i == 1.0 {
            q
        } else if i == 4.0 {
            t
        } else {
            p
        };
        let ng = if i == 1.0 || i == 2.0 {
            v
        } else if i == 0.0 {
            t
        } else if i == 3.0 {
            q
        } else {
            p
        };
        let nb = if i == 3.0 || i == 4.0 {
            v
        } else if i == 2.0 {
            t
        } else if i == 5.0 {
            q
        } else {
            p
        };
        (nr, ng, nb)
    }

    pub(super) fn hue(img: &mut [f32], hw: usize, shift: f32) {
        let (r, rest) = img.split_at_mut(hw);
        let (g, b) = rest.split_at_mut(hw);
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            (*r, *g, *b) = hue_px(*r, *g, *b, shift);
        }
    }

    pub(super) fn grayscale(img: &mut [f32], hw: usize) {
        let (r, rest) = img.split_at_mut(hw);
        let (g, b) = rest.split_at_mut(hw);
        for i in 0..hw {
            let l = gray(r[i], g[i], b[i]);
            r[i] = l;
            g[i] = l;
            b[i] = l;
        }
    }

    pub(super) fn solar(img: &mut [f32], threshold: f32) {
        for v in img {
            if *v >= threshold {
                *v = 1.0 - *v;
            }
        }
    }

    /// torchvision's `_get_gaussian_kernel1d`: `exp(-x²/(2σ²))` at `x = -(k-1)/2 ..= (k-1)/2`,
    /// normalised to sum 1.
    fn gaussian_kernel(k: usize, sigma: f32) -> Vec<f32> {
        let half = (k as f32 - 1.0) * 0.5;
        let pdf: Vec<f32> = (0..k)
            .map(|i| {
                let x = (-half + i as f32) / sigma;
                (-0.5 * x * x).exp()
            })
            .collect();
        let sum: f32 = pdf.iter().sum();
        pdf.into_iter().map(|v| v / sum).collect()
    }

    #[inline]
    fn reflect(i: isize, n: usize) -> usize {
        let n = n as isize;
        let r = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        r as usize
    }

    pub(super) fn blur(
        img: &mut [f32],
        h: usize,
        w: usize,
        k: usize,
        sigma: f32,
        tmp: &mut Vec<f32>,
    ) {
        let ker = gaussian_kernel(k, sigma);
        // Skip the tail taps whose weight underflowed to 0 or to a subnormal (< 1.2e-38: they
        // change no sum of [0, 1] values beyond 1e-38, and subnormal arithmetic is ~100x slow).
        let first = ker
            .iter()
            .position(|&v| v >= f32::MIN_POSITIVE)
            .unwrap_or(0);
        let last = ker
            .iter()
            .rposition(|&v| v >= f32::MIN_POSITIVE)
            .unwrap_or(k - 1);
        let half = (k / 2) as isize;
        let hw = h * w;
        let pw = w + 2 * (k / 2);
        tmp.clear();
        tmp.resize(hw + pw, 0.0);
        let (tmp, pad) = tmp.split_at_mut(hw);
        for ch in 0..3 {
            let plane = &mut img[ch * hw..(ch + 1) * hw];
            // Horizontal into tmp through a reflect-padded copy of the row.
            for y in 0..h {
                let row = &plane[y * w..(y + 1) * w];
                for (i, p) in pad.iter_mut().enumerate() {
                    *p = row[reflect(i as isize - half, w)];
                }
                let trow = &mut tmp[y * w..(y + 1) * w];
                trow.fill(0.0);
                for (j, &kj) in ker.iter().enumerate().take(last + 1).skip(first) {
                    for (t, &p) in trow.iter_mut().zip(&pad[j..j + w]) {
                        *t += kj * p;
                    }
                }
            }
            // Vertical back into the plane.
            for y in 0..h {
                let orow = &mut plane[y * w..(y + 1) * w];
                orow.fill(0.0);
                for (j, &kj) in ker.iter().enumerate().take(last + 1).skip(first) {
                    let sy = reflect(y as isize + j as isize - half, h);
                    for (o, &t) in orow.iter_mut().zip(&tmp[sy * w..(sy + 1) * w]) {
                        *o += kj * t;
                    }
                }
            }
        }
    }

    /// `adjust_brightness(img, factor)`: `(factor · x).clamp(0, 1)`.
    pub fn adjust_brightness(img: &mut [f32], h: usize, w: usize, factor: f32) -> Result<()> {
        check("adjust_brightness", img, h, w)?;
        check_factor("adjust_brightness", factor)?;
        brightness(img, factor);
        Ok(())
    }

    /// `adjust_contrast(img, factor)`: blend with the mean of the grayscale image.
    pub fn adjust_contrast(img: &mut [f32], h: usize, w: usize, factor: f32) -> Result<()> {
        check("adjust_contrast", img, h, w)?;
        check_factor("adjust_contrast", factor)?;
        contrast(img, h * w, factor);
        Ok(())
    }

    /// `adjust_saturation(img, factor)`: blend with the grayscale image.
    pub fn adjust_saturation(img: &mut [f32], h: usize, w: usize, factor: f32) -> Result<()> {
        check("adjust_saturation", img, h, w)?;
        check_factor("adjust_saturation", factor)?;
        saturation(img, h * w, factor);
        Ok(())
    }

    /// `adjust_hue(img, shift)`: hue rotated by `shift` turns in HSV, `shift` in `[-0.5, 0.5]`.
    pub fn adjust_hue(img: &mut [f32], h: usize, w: usize, shift: f32) -> Result<()> {
        check("adjust_hue", img, h, w)?;
        if !(-0.5..=0.5).contains(&shift) {
            return Err(Error::invalid(format!(
                "adjust_hue: shift {shift} is not in [-0.5, 0.5]"
            )));
        }
        hue(img, h * w, shift);
        Ok(())
    }

    /// `rgb_to_grayscale(img, 3)`: `0.2989 R + 0.587 G + 0.114 B` in all three channels.
    pub fn rgb_to_grayscale(img: &mut [f32], h: usize, w: usize) -> Result<()> {
        check("rgb_to_grayscale", img, h, w)?;
        grayscale(img, h * w);
        Ok(())
    }

    /// `solarize(img, threshold)`: `x -> 1 - x` where `x >= threshold`.
    pub fn solarize(img: &mut [f32], h: usize, w: usize, threshold: f32) -> Result<()> {
        check("solarize", img, h, w)?;
        solar(img, threshold);
        Ok(())
    }

    /// `gaussian_blur(img, [k, k], [sigma, sigma])` with reflect padding (`k` odd,
    /// `k / 2 < min(h, w)`).
    pub fn gaussian_blur(img: &mut [f32], h: usize, w: usize, k: usize, sigma: f32) -> Result<()> {
        check("gaussian_blur", img, h, w)?;
        if k % 2 == 0 || k / 2 >= h.min(w) || !(sigma.is_finite() && sigma > 0.0) {
            return Err(Error::invalid(format!(
                "gaussian_blur: kernel {k} must be odd with k / 2 < {} and sigma {sigma} > 0",
                h.min(w)
            )));
        }
        blur(img, h, w, k, sigma, &mut Vec::new());
        Ok(())
    }

    /// `resized_crop(img, top, left, height, width, [oh, ow], BILINEAR, antialias)`, then
    /// `hflip` when `flip` -> `(3, oh, ow)`.
    #[allow(clippy::too_many_arguments)]
    pub fn resized_crop(
        img: &[f32],
        h: usize,
        w: usize,
        crop: CropBox,
        oh: usize,
        ow: usize,
        antialias: bool,
        flip: bool,
    ) -> Result<Vec<f32>> {
        check("resized_crop", img, h, w)?;
        if crop.height == 0
            || crop.width == 0
            || crop.top + crop.height > h
            || crop.left + crop.width > w
            || oh == 0
            || ow == 0
        {
            return Err(Error::invalid(format!(
                "resized_crop: crop {crop:?} outside the {h}x{w} image or empty output {oh}x{ow}"
            )));
        }
        let hw = h * w;
        let get = |y: usize, buf: &mut [f32], stride: usize| {
            for ch in 0..3 {
                let s = ch * hw + y * w + crop.left;
                buf[ch * stride..ch * stride + crop.width].copy_from_slice(&img[s..s + crop.width]);
            }
        };
        let mut out = vec![0f32; 3 * oh * ow];
        resample_into(
            get,
            3,
            crop,
            (oh, ow),
            antialias,
            flip,
            &mut Vec::new(),
            &mut out,
        );
        Ok(out)
    }
}
