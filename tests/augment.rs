//! Evaluation transforms and SSL augmentations against Pillow / torchvision references
//! (fixtures from `tools/gen_augment_fixtures.py`) and their stated properties.

use std::path::PathBuf;

use cromo::data::augment::{
    apply_params, augment_batch, augment_raw, augment_views, image_seed, ops, sample_crop_box,
    sample_params, AugmentConfig, AugmentParams, Blur, ColorJitter, CropBox, JitterParams,
};
use cromo::data::transform::{
    self, center_crop_window, preprocess_photo, preprocess_photos, resize_rgb_u8, resize_u8,
    resized_shorter_size, to_tensor, to_tensor_raw, IMAGENET_MEAN, IMAGENET_STD,
};
use cromo::data::ImageSet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/augment")
}

fn load_json(name: &str) -> Value {
    let p = fixtures().join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

fn shared_data() -> Option<PathBuf> {
    let p = match std::env::var_os("CROMO_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    p.is_dir().then_some(p)
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Evaluation transforms
// ---------------------------------------------------------------------------------------------

/// Pillow's `Image.resize(BILINEAR)` on seeded random images (shrink, enlarge, mixed, one
/// axis only, one channel): the 8-bit fixed-point algorithm is reproduced bit for bit.
#[test]
fn resize_matches_pillow_exactly() {
    let j = load_json("transform.json");
    let cases = j["resize_cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let g = |k: &str| case[k].as_u64().unwrap() as usize;
        let (sh, sw, c, dh, dw) = (g("sh"), g("sw"), g("c"), g("dh"), g("dw"));
        let src = u8s(&case["src"]);
        let want = u8s(&case["dst"]);
        let got = if c == 3 {
            resize_rgb_u8(&src, sh, sw, dh, dw).unwrap()
        } else {
            resize_u8(&src, sh, sw, c, dh, dw).unwrap()
        };
        assert_eq!(got, want, "{sh}x{sw}x{c} -> {dh}x{dw}");
    }
}

/// torchvision's size arithmetic: shorter side to s, longer `int(s * long / short)`; centre
/// crop offsets rounded half to even (Python's `round`).
#[test]
fn resize_and_crop_geometry_follow_torchvision() {
    assert_eq!(resized_shorter_size(400, 600, 256).unwrap(), (256, 384));
    assert_eq!(resized_shorter_size(600, 400, 256).unwrap(), (384, 256));
    assert_eq!(resized_shorter_size(333, 500, 256).unwrap(), (256, 384)); // 384.38 -> 384
    assert_eq!(resized_shorter_size(3, 1000, 256).unwrap(), (256, 85333));
    assert_eq!(resized_shorter_size(100, 100, 256).unwrap(), (256, 256));
    // (341 - 224) / 2 = 58.5 -> 58 (half to even); (343 - 224) / 2 = 59.5 -> 60.
    assert_eq!(center_crop_window(341, 256, 224, 224).unwrap().top, 58);
    assert_eq!(center_crop_window(343, 256, 224, 224).unwrap().top, 60);
    assert_eq!(center_crop_window(256, 384, 224, 224).unwrap().left, 80);
    assert_eq!(center_crop_window(256, 384, 224, 224).unwrap().top, 16);
    assert!(resized_shorter_size(0, 10, 256).is_err());
    assert!(center_crop_window(200, 300, 224, 224).is_err());
}

/// `preprocess_photo` on coffee.png against torchvision's `Resize(256) + CenterCrop(224) +
/// ToTensor + Normalize` on the PIL image. The resize is Pillow's integer algorithm and the
/// normalisation the same f32 operations, so the results are identical: the u8 crop must match
/// exactly, the tensor to within 1e-6 (both sides compute `(x/255 - m)/s` in f32).
#[test]
fn preprocess_photo_matches_torchvision_on_coffee() {
    let Some(data) = shared_data() else {
        println!("skipping: shared data folder not found (set CROMO_SHARED_DATA)");
        return;
    };
    let path = data.join("photos/coffee.png");
    if !path.is_file() {
        println!("skipping: {} not found", path.display());
        return;
    }
    let j = load_json("transform.json");
    let c = &j["coffee"];
    let img = image::open(&path).unwrap();
    assert_eq!(img.height() as u64, c["height"].as_u64().unwrap());
    assert_eq!(img.width() as u64, c["width"].as_u64().unwrap());

    // The u8 stage: Resize(256) + CenterCrop(224) of torchvision/Pillow, saved losslessly.
    let want_u8 = image::open(fixtures().join("coffee_224.png"))
        .unwrap()
        .to_rgb8()
        .into_raw();
    let rgb = img.to_rgb8();
    let (h, w) = (rgb.height() as usize, rgb.width() as usize);
    let (dh, dw) = resized_shorter_size(h, w, 256).unwrap();
    assert_eq!((dh, dw), (256, 384));
    let resized = resize_rgb_u8(rgb.as_raw(), h, w, dh, dw).unwrap();
    let win = center_crop_window(dh, dw, 224, 224).unwrap();
    let mut crop = Vec::with_capacity(224 * 224 * 3);
    for y in win.top..win.top + 224 {
        crop.extend_from_slice(&resized[(y * dw + win.left) * 3..(y * dw + win.left + 224) * 3]);
    }
    assert_eq!(crop, want_u8, "resize + centre crop differs from Pillow");

    let t = preprocess_photo(&img, 256, 224, IMAGENET_MEAN, IMAGENET_STD).unwrap();
    assert_eq!(t.dims(), &[1, 3, 224, 224]);
    let got = flat(&t);
    // Full tensor against ToTensor + Normalize of the torchvision u8 crop.
    let mut want = vec![0f32; 3 * 224 * 224];
    for ch in 0..3 {
        for i in 0..224 * 224 {
            want[ch * 224 * 224 + i] =
                (want_u8[i * 3 + ch] as f32 / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
        }
    }
    let d_full = max_abs(&got, &want);
    // Sampled values of torchvision's own output tensor.
    let mut d_samples = 0f32;
    for s in c["samples"].as_array().unwrap() {
        let (ch, y, x) = (
            s["c"].as_u64().unwrap() as usize,
            s["y"].as_u64().unwrap() as usize,
            s["x"].as_u64().unwrap() as usize,
        );
        let v = s["v"].as_f64().unwrap() as f32;
        d_samples = d_samples.max((got[(ch * 224 + y) * 224 + x] - v).abs());
    }
    let sum: f64 = got.iter().map(|&v| v as f64).sum();
    let want_sum = c["sum"].as_f64().unwrap();
    println!(
        "coffee.png: max-abs diff vs torchvision {d_full:e} (full), {d_samples:e} (samples); sum {sum} vs {want_sum}"
    );
    assert!(d_full <= 1e-6, "max-abs diff {d_full}");
    assert!(d_samples <= 1e-6, "max-abs diff at samples {d_samples}");
    assert!((sum - want_sum).abs() < 1e-3 * want_sum.abs().max(1.0));

    // The batched form gives the same rows, whatever the other photo's size.
    let small = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 500, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    }));
    let b =
        preprocess_photos(&[small.clone(), img], 256, 224, IMAGENET_MEAN, IMAGENET_STD).unwrap();
    assert_eq!(b.dims(), &[2, 3, 224, 224]);
    assert_eq!(flat(&b.get(1).unwrap()), got);
    let alone = preprocess_photo(&small, 256, 224, IMAGENET_MEAN, IMAGENET_STD).unwrap();
    assert_eq!(flat(&b.get(0).unwrap()), flat(&alone));
}

/// Hand-computed case: a 2x2 one-channel image is replicated to RGB and normalised per channel.
#[test]
fn to_tensor_normalises_and_replicates_by_hand() {
    let set = ImageSet {
        pixels: vec![0, 51, 102, 255, 255, 0, 0, 0],
        labels: vec![0, 1],
        height: 2,
        width: 2,
        channels: 1,
        class_names: vec!["a".into(), "b".into()],
    };
    let mean = [0.5, 0.25, 0.0];
    let std = [0.5, 0.25, 2.0];
    let t = to_tensor(&set, &[0], mean, std, None).unwrap();
    assert_eq!(t.dims(), &[1, 3, 2, 2]);
    let v = flat(&t);
    let px = [0.0f32, 0.2, 0.4, 1.0];
    for ch in 0..3 {
        for i in 0..4 {
            let want = (px[i] - mean[ch]) / std[ch];
            assert!((v[ch * 4 + i] - want).abs() < 1e-6, "ch {ch} px {i}");
        }
    }
    // Index order is kept; image 1 first.
    let t = to_tensor(&set, &[1, 0], mean, std, None).unwrap();
    assert_eq!(t.dims(), &[2, 3, 2, 2]);
    assert!((flat(&t)[0] - 1.0).abs() < 1e-6); // (1 - 0.5) / 0.5
                                               // Out-of-range index, zero std, empty output size.
    assert!(to_tensor(&set, &[2], mean, std, None).is_err());
    assert!(to_tensor(&set, &[0], mean, [1.0, 0.0, 1.0], None).is_err());
    assert!(to_tensor(&set, &[0], mean, std, Some((0, 3))).is_err());
}

/// With a size, each image is resized exactly as `resize_u8` (Pillow) does, then normalised.
#[test]
fn to_tensor_with_size_equals_resize_then_normalise() {
    let (h, w) = (9usize, 13usize);
    let a: Vec<u8> = (0..h * w * 3)
        .map(|i| ((i * 37 + 11) % 256) as u8)
        .collect();
    let b: Vec<u8> = (0..h * w * 3)
        .map(|i| ((i * 101 + 3) % 256) as u8)
        .collect();
    let (oh, ow) = (5usize, 17usize);
    let t = to_tensor_raw(
        &[&a, &b],
        h,
        w,
        3,
        IMAGENET_MEAN,
        IMAGENET_STD,
        Some((oh, ow)),
    )
    .unwrap();
    assert_eq!(t.dims(), &[2, 3, oh, ow]);
    let v = flat(&t);
    for (k, img) in [&a, &b].iter().enumerate() {
        let r = resize_rgb_u8(img, h, w, oh, ow).unwrap();
        for ch in 0..3 {
            for i in 0..oh * ow {
                let want = (r[i * 3 + ch] as f32 / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
                assert_eq!(v[((k * 3 + ch) * oh * ow) + i], want);
            }
        }
    }
    // A wrong byte count is an error naming the image, not a panic.
    let e = to_tensor_raw(&[&a, &b[1..]], h, w, 3, IMAGENET_MEAN, IMAGENET_STD, None).unwrap_err();
    assert!(e.to_string().contains("image 1"), "{e}");
}

#[test]
fn transform_rejects_bad_arguments() {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::new(10, 10));
    assert!(preprocess_photo(&img, 256, 300, IMAGENET_MEAN, IMAGENET_STD).is_err());
    assert!(preprocess_photo(&img, 256, 0, IMAGENET_MEAN, IMAGENET_STD).is_err());
    let empty = image::DynamicImage::ImageRgb8(image::RgbImage::new(0, 10));
    assert!(preprocess_photo(&empty, 256, 224, IMAGENET_MEAN, IMAGENET_STD).is_err());
    assert!(resize_rgb_u8(&[0u8; 11], 2, 2, 4, 4).is_err());
    assert!(resize_rgb_u8(&[0u8; 12], 2, 2, 0, 4).is_err());
    // A tiny photo is enlarged (shorter side 10 -> 256) without error.
    let t = preprocess_photo(
        &img,
        256,
        224,
        transform::CIFAR10_MEAN,
        transform::CIFAR10_STD,
    )
    .unwrap();
    assert_eq!(t.dims(), &[1, 3, 224, 224]);
}

/// `preprocess_photo` computes only the centre crop of the resize; on a tall photo (where
/// Pillow 13 runs the vertical pass first) and a wide one it equals the full Pillow-exact
/// resize, cropped as torchvision's `CenterCrop`, then normalised.
#[test]
fn preprocess_photo_equals_full_resize_then_crop() {
    for (w, h) in [(300u32, 1000u32), (777, 301), (256, 256), (250, 260)] {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 7 + y * 3) % 256) as u8,
                ((x * y + 5) % 251) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let (hh, ww) = (h as usize, w as usize);
        let (dh, dw) = resized_shorter_size(hh, ww, 256).unwrap();
        let full = resize_rgb_u8(img.as_raw(), hh, ww, dh, dw).unwrap();
        let win = center_crop_window(dh, dw, 224, 224).unwrap();
        let t = preprocess_photo(
            &image::DynamicImage::ImageRgb8(img),
            256,
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
        )
        .unwrap();
        let got = flat(&t);
        for ch in 0..3 {
            for y in 0..224 {
                for x in 0..224 {
                    let v = full[((win.top + y) * dw + win.left + x) * 3 + ch];
                    let want = (v as f32 / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
                    assert_eq!(
                        got[(ch * 224 + y) * 224 + x],
                        want,
                        "{w}x{h} ch {ch} ({y},{x})"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Augmentation ops against torchvision (ops.json), fixed parameters
// ---------------------------------------------------------------------------------------------

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn num(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn ops_fixture() -> (Value, Vec<f32>) {
    let j = load_json("ops.json");
    let img = f32s(&j["image"]);
    assert_eq!(img.len(), 3 * 8 * 8);
    (j, img)
}

type Op = fn(&mut [f32], usize, usize, f32) -> cromo::Result<()>;

fn check_op(j: &Value, key: &str, param: &str, op: Op, img: &[f32], tol: f32) {
    let cases = j[key].as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let p = num(&c[param]);
        let mut x = img.to_vec();
        op(&mut x, 8, 8, p).unwrap();
        let d = max_abs(&x, &f32s(&c["out"]));
        assert!(d <= tol, "{key}({p}): max-abs diff {d} > {tol}");
        // The op changes the image (a test of a no-op would pass on a stub).
        assert!(
            max_abs(&x, img) > 1e-3,
            "{key}({p}) left the image unchanged"
        );
    }
}

#[test]
fn colour_ops_match_torchvision() {
    let (j, img) = ops_fixture();
    check_op(&j, "brightness", "f", ops::adjust_brightness, &img, 1e-6);
    check_op(&j, "contrast", "f", ops::adjust_contrast, &img, 1e-6);
    check_op(&j, "saturation", "f", ops::adjust_saturation, &img, 1e-6);
    check_op(&j, "hue", "f", ops::adjust_hue, &img, 1e-5);
    check_op(&j, "solarize", "t", ops::solarize, &img, 0.0);
    let mut g = img.clone();
    ops::rgb_to_grayscale(&mut g, 8, 8).unwrap();
    assert!(max_abs(&g, &f32s(&j["grayscale"])) <= 1e-6);
    // Out-of-range parameters are errors, not panics or silent clamps.
    let mut x = img.clone();
    assert!(ops::adjust_hue(&mut x, 8, 8, 0.6).is_err());
    assert!(ops::adjust_contrast(&mut x, 8, 8, -0.1).is_err());
    assert!(ops::adjust_brightness(&mut x[1..], 8, 8, 1.0).is_err());
}

#[test]
fn gaussian_blur_matches_torchvision() {
    let (j, img) = ops_fixture();
    for c in j["blur"].as_array().unwrap() {
        let k = c["k"].as_u64().unwrap() as usize;
        let s = num(&c["sigma"]);
        let mut x = img.clone();
        ops::gaussian_blur(&mut x, 8, 8, k, s).unwrap();
        let d = max_abs(&x, &f32s(&c["out"]));
        assert!(d <= 1e-6, "blur k {k} sigma {s}: {d}");
    }
    let mut x = img.clone();
    assert!(ops::gaussian_blur(&mut x, 8, 8, 4, 1.0).is_err()); // even kernel
    assert!(ops::gaussian_blur(&mut x, 8, 8, 17, 1.0).is_err()); // wider than the image
}

#[test]
fn resized_crop_matches_torchvision() {
    let (j, img) = ops_fixture();
    for c in j["resized_crop"].as_array().unwrap() {
        let g = |k: &str| c[k].as_u64().unwrap() as usize;
        let crop = CropBox {
            top: g("top"),
            left: g("left"),
            height: g("height"),
            width: g("width"),
        };
        let aa = c["antialias"].as_bool().unwrap();
        let flip = c["flip"].as_bool().unwrap();
        let out = ops::resized_crop(&img, 8, 8, crop, g("oh"), g("ow"), aa, flip).unwrap();
        let d = max_abs(&out, &f32s(&c["out"]));
        assert!(
            d <= 1e-6,
            "{crop:?} -> {}x{} aa {aa} flip {flip}: {d}",
            g("oh"),
            g("ow")
        );
    }
    let bad = CropBox {
        top: 4,
        left: 0,
        height: 5,
        width: 8,
    };
    assert!(ops::resized_crop(&img, 8, 8, bad, 4, 4, true, false).is_err());
}

fn jitter_params(order: &Value, b: f32, c: f32, s: f32, h: f32) -> JitterParams {
    let o: Vec<u8> = order
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    JitterParams {
        order: [o[0], o[1], o[2], o[3]],
        brightness: Some(b),
        contrast: Some(c),
        saturation: Some(s),
        hue: Some(h),
    }
}

/// The colour jitter in a fixed order and the whole view (crop, flip, jitter, grayscale, blur,
/// solarise, normalise) with fixed choices, from a u8 image, against torchvision.
#[test]
fn fixed_pipeline_matches_torchvision() {
    let (j, img) = ops_fixture();
    for c in j["jitter"].as_array().unwrap() {
        let jp = jitter_params(
            &c["order"],
            num(&c["brightness"]),
            num(&c["contrast"]),
            num(&c["saturation"]),
            num(&c["hue"]),
        );
        // Through the per-op functions in the given order.
        let mut x = img.clone();
        for op in jp.order {
            match op {
                0 => ops::adjust_brightness(&mut x, 8, 8, jp.brightness.unwrap()),
                1 => ops::adjust_contrast(&mut x, 8, 8, jp.contrast.unwrap()),
                2 => ops::adjust_saturation(&mut x, 8, 8, jp.saturation.unwrap()),
                _ => ops::adjust_hue(&mut x, 8, 8, jp.hue.unwrap()),
            }
            .unwrap();
        }
        let d = max_abs(&x, &f32s(&c["out"]));
        assert!(d <= 1e-5, "jitter {:?}: {d}", jp.order);
    }

    let p = &j["pipeline"];
    let (h, w) = (
        p["h"].as_u64().unwrap() as usize,
        p["w"].as_u64().unwrap() as usize,
    );
    let src = u8s(&p["image"]);
    for case in p["cases"].as_array().unwrap() {
        let q = &case["params"];
        let cr: Vec<usize> = q["crop"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let size: Vec<usize> = q["size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let arr3 = |v: &Value| {
            let a = f32s(v);
            [a[0], a[1], a[2]]
        };
        let jitter = (!q["jitter"].is_null()).then(|| {
            let a = q["jitter"].as_array().unwrap();
            jitter_params(&a[0], num(&a[1]), num(&a[2]), num(&a[3]), num(&a[4]))
        });
        let blur = (!q["blur"].is_null()).then(|| {
            let a = q["blur"].as_array().unwrap();
            (a[0].as_u64().unwrap() as usize, num(&a[1]))
        });
        let mut cfg = AugmentConfig::cifar()
            .with_size(size[0], size[1])
            .with_normalization(arr3(&q["mean"]), arr3(&q["std"]));
        cfg.antialias = q["antialias"].as_bool().unwrap();
        if let Some((k, _)) = blur {
            cfg.blur.kernel_size = k;
        }
        let params = AugmentParams {
            crop: CropBox {
                top: cr[0],
                left: cr[1],
                height: cr[2],
                width: cr[3],
            },
            flip: q["flip"].as_bool().unwrap(),
            jitter,
            grayscale: q["gray"].as_bool().unwrap(),
            blur_sigma: blur.map(|b| b.1),
            solarize: q["solarize"].as_bool().unwrap(),
        };
        let mut out = vec![0f32; 3 * size[0] * size[1]];
        apply_params(&src, (h, w, 3), &params, &cfg, &mut out).unwrap();
        let want = f32s(&case["out"]);
        let d = max_abs(&out, &want);
        // Normalised values: the 1e-5 of the [0, 1] ops grows by 1/std (< 4.4).
        assert!(d <= 5e-5, "pipeline {params:?}: max-abs diff {d}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling and batch properties
// ---------------------------------------------------------------------------------------------

/// E[area fraction | accepted] for the first-try acceptance region of a large square image
/// (ignoring rounding): a ~ U(0.08, 1), ln r ~ U(ln 3/4, ln 4/3), accepted when a·r <= 1 and
/// a/r <= 1. Midpoint rule on a 2000 x 2000 grid: an independent reference for the sampler.
fn reference_mean_area() -> f64 {
    let n = 2000;
    let (l0, l1) = ((0.75f64).ln(), (4.0f64 / 3.0).ln());
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..n {
        let a = 0.08 + (1.0 - 0.08) * (i as f64 + 0.5) / n as f64;
        for k in 0..n {
            let r = (l0 + (l1 - l0) * (k as f64 + 0.5) / n as f64).exp();
            if a * r <= 1.0 && a / r <= 1.0 {
                num += a;
                den += 1.0;
            }
        }
    }
    num / den
}

#[test]
fn crop_boxes_respect_scale_and_ratio() {
    let mut rng = StdRng::seed_from_u64(11);
    let (h, w) = (1000usize, 1000usize);
    let n = 40_000;
    let (mut sum_area, mut min_area, mut max_area) = (0.0f64, 1.0f64, 0.0f64);
    let mut sum_top = 0.0;
    for _ in 0..n {
        let b = sample_crop_box(h, w, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), &mut rng);
        assert!(b.height >= 1 && b.width >= 1);
        assert!(b.top + b.height <= h && b.left + b.width <= w, "{b:?}");
        let a = (b.height * b.width) as f64 / (h * w) as f64;
        let r = b.width as f64 / b.height as f64;
        // Rounding of sides >= 282 px moves the area and the ratio by well under 1 %.
        assert!((0.08 * 0.99..=1.0).contains(&a), "area {a} {b:?}");
        assert!(
            (0.75 * 0.99..=4.0 / 3.0 * 1.01).contains(&r),
            "ratio {r} {b:?}"
        );
        sum_area += a;
        min_area = min_area.min(a);
        max_area = max_area.max(a);
        if b.height < h {
            sum_top += b.top as f64 / (h - b.height) as f64;
        }
    }
    let mean = sum_area / n as f64;
    let want = reference_mean_area();
    // The area fraction's std is about 0.25: 4 standard errors of the mean are 0.005.
    println!(
        "mean crop area {mean:.4} vs reference {want:.4}, range [{min_area:.4}, {max_area:.4}]"
    );
    assert!((mean - want).abs() < 0.006, "mean area {mean} vs {want}");
    assert!(min_area < 0.085 && max_area > 0.98);
    // Positions are uniform over the valid range: mean relative offset 1/2.
    let mt = sum_top / n as f64;
    assert!((mt - 0.5).abs() < 0.01, "mean relative top {mt}");
}

/// When no try fits (a 4x100 strip: any sampled box is at least 5 px tall), the fallback is
/// torchvision's centre crop clamped to the ratio range: h = 4, w = round(4 · 4/3) = 5.
#[test]
fn crop_falls_back_to_centre_crop() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..20 {
        let b = sample_crop_box(4, 100, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), &mut rng);
        assert_eq!(
            b,
            CropBox {
                top: 0,
                left: 47,
                height: 4,
                width: 5
            }
        );
        let b = sample_crop_box(100, 4, (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0), &mut rng);
        assert_eq!(
            b,
            CropBox {
                top: 47,
                left: 0,
                height: 5, // round(4 / 0.75) = round(5.33)
                width: 4
            }
        );
    }
}

fn test_set(n: usize, h: usize, w: usize, c: usize) -> ImageSet {
    let mut rng = StdRng::seed_from_u64(99);
    ImageSet {
        pixels: (0..n * h * w * c).map(|_| rng.random::<u8>()).collect(),
        labels: (0..n as u32).collect(),
        height: h,
        width: w,
        channels: c,
        class_names: (0..n).map(|i| format!("c{i}")).collect(),
    }
}

fn no_randomness(size: usize) -> AugmentConfig {
    AugmentConfig {
        scale: (1.0, 1.0),
        ratio: (1.0, 1.0),
        flip_p: 0.0,
        jitter_p: 0.0,
        grayscale_p: 0.0,
        solarize_p: 0.0,
        ..AugmentConfig::cifar().with_size(size, size)
    }
}

#[test]
fn augment_is_deterministic_and_thread_count_independent() {
    let set = test_set(40, 32, 32, 3);
    let idx: Vec<usize> = (0..40).rev().collect();
    let cfg = AugmentConfig::cifar();
    let a = flat(&augment_batch(&set, &idx, &cfg, 5).unwrap());
    let b = flat(&augment_batch(&set, &idx, &cfg, 5).unwrap());
    assert_eq!(a, b);
    let c = flat(&augment_batch(&set, &idx, &cfg, 6).unwrap());
    assert!(max_abs(&a, &c) > 0.1, "another seed gives another batch");
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let t = pool.install(|| flat(&augment_batch(&set, &idx, &cfg, 5).unwrap()));
        assert_eq!(a, t, "{threads} threads");
    }
    // Image k of the batch depends on (seed, k) only: a sub-batch is a prefix.
    let p = flat(&augment_batch(&set, &idx[..7], &cfg, 5).unwrap());
    assert_eq!(p[..], a[..p.len()]);
}

/// scale (1, 1), ratio (1, 1), all probabilities 0 on a square image: exactly the normalised
/// image (`to_tensor`), for RGB and for one-channel (replicated) sets.
#[test]
fn identity_config_gives_the_normalised_image() {
    for c in [3, 1] {
        let set = test_set(6, 16, 16, c);
        let idx = [3, 0, 5];
        for aa in [true, false] {
            let cfg = AugmentConfig {
                antialias: aa,
                ..no_randomness(16)
            };
            let t = augment_batch(&set, &idx, &cfg, 1).unwrap();
            assert_eq!(t.dims(), &[3, 3, 16, 16]);
            let want = to_tensor(&set, &idx, cfg.mean, cfg.std, None).unwrap();
            assert_eq!(flat(&t), flat(&want), "channels {c} antialias {aa}");
        }
    }
}

#[test]
fn flip_p1_mirrors_and_grayscale_p1_equalises_channels() {
    let set = test_set(8, 24, 20, 3);
    let idx: Vec<usize> = (0..8).collect();
    let base = AugmentConfig::cifar().with_size(12, 10);
    let no_flip = AugmentConfig {
        flip_p: 0.0,
        ..base.clone()
    };
    let flip = AugmentConfig {
        flip_p: 1.0,
        ..base.clone()
    };
    let a = augment_batch(&set, &idx, &no_flip, 9).unwrap();
    let b = augment_batch(&set, &idx, &flip, 9).unwrap();
    // Same draws, only the flip differs (contrast's image mean is summed in another order,
    // hence the 1e-6).
    let mirrored = flat(&a.flip(&[3]).unwrap());
    let d = max_abs(&mirrored, &flat(&b));
    assert!(d < 1e-6, "flip p=1 vs mirrored: {d}");
    assert!(max_abs(&flat(&a), &flat(&b)) > 0.1);

    let gray = AugmentConfig {
        grayscale_p: 1.0,
        ..base.with_normalization([0.0; 3], [1.0; 3])
    };
    let g = augment_batch(&set, &idx, &gray, 4).unwrap();
    let v = flat(&g);
    let hw = 12 * 10;
    for img in v.chunks(3 * hw) {
        for i in 0..hw {
            assert_eq!(img[i], img[hw + i]);
            assert_eq!(img[i], img[2 * hw + i]);
        }
    }
    // Unnormalised outputs stay in [0, 1] through every op.
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
}

/// Over 4000 images, the share that came out grayscale (equal channels, no jitter) and the
/// share flipped are within 5 standard errors of p.
#[test]
fn probabilities_are_respected() {
    let n = 4000;
    let set = test_set(1, 6, 6, 3);
    let raw: Vec<&[u8]> = (0..n).map(|_| set.image(0)).collect();
    let cfg = AugmentConfig {
        grayscale_p: 0.2,
        flip_p: 0.5,
        ..no_randomness(6).with_normalization([0.0; 3], [1.0; 3])
    };
    let v = flat(&augment_raw(&raw, 6, 6, 3, &cfg, 17).unwrap());
    let hw = 36;
    let still = flat(&to_tensor_raw(&raw[..1], 6, 6, 3, [0.0; 3], [1.0; 3], None).unwrap());
    let (mut gray, mut flipped) = (0usize, 0usize);
    for img in v.chunks(3 * hw) {
        if (0..hw).all(|i| img[i] == img[hw + i] && img[i] == img[2 * hw + i]) {
            gray += 1;
        }
        // Compare the red plane of the first row with the source's, mirrored.
        let first: Vec<f32> = img[..6].to_vec();
        let src_gray: Vec<f32> = (0..6)
            .map(|x| 0.2989 * still[x] + 0.587 * still[hw + x] + 0.114 * still[2 * hw + x])
            .collect();
        let src_red: Vec<f32> = still[..6].to_vec();
        let reference = if img[0] == img[hw] { src_gray } else { src_red };
        let mut mirror = reference.clone();
        mirror.reverse();
        if max_abs(&first, &mirror) < 1e-5 && max_abs(&first, &reference) > 1e-5 {
            flipped += 1;
        }
    }
    let check = |count: usize, p: f64, what: &str| {
        let share = count as f64 / n as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        println!("{what}: {share:.4} (p {p})");
        assert!(
            (share - p).abs() < 5.0 * se,
            "{what} share {share} vs p {p}"
        );
    };
    check(gray, 0.2, "grayscale");
    check(flipped, 0.5, "flipped");
}

#[test]
fn two_views_differ_and_follow_their_configs() {
    let set = test_set(16, 32, 32, 3);
    let idx: Vec<usize> = (0..16).collect();
    let (c1, c2) = AugmentConfig::cifar_byol();
    assert_eq!(c1.solarize_p, 0.0);
    assert!(c2.solarize_p > 0.0);
    let (v1, v2) = augment_views(&set, &idx, &c1, &c2, 21).unwrap();
    assert_eq!(v1.dims(), &[16, 3, 32, 32]);
    assert_eq!(v2.dims(), &[16, 3, 32, 32]);
    let (a, b) = (flat(&v1), flat(&v2));
    // Each image's two views differ.
    for (x, y) in a.chunks(3 * 32 * 32).zip(b.chunks(3 * 32 * 32)) {
        assert!(max_abs(x, y) > 0.05);
    }
    // The first view is the single-view batch of the same seed.
    assert_eq!(a, flat(&augment_batch(&set, &idx, &c1, 21).unwrap()));
    // Symmetric recipe, same config twice: still independent streams.
    let c = AugmentConfig::cifar();
    let (s1, s2) = augment_views(&set, &idx, &c, &c, 21).unwrap();
    assert!(max_abs(&flat(&s1), &flat(&s2)) > 0.1);
    // Views of other sizes (ImageNet-style 224 from a 256 source would be the same code path).
    let big = test_set(2, 40, 48, 3);
    let (i1, i2) = AugmentConfig::imagenet_byol();
    let (w1, w2) = augment_views(
        &big,
        &[0, 1],
        &i1.with_size(24, 24),
        &i2.with_size(24, 24),
        2,
    )
    .unwrap();
    assert_eq!(w1.dims(), &[2, 3, 24, 24]);
    assert_eq!(w2.dims(), &[2, 3, 24, 24]);
}

/// The same random choices drawn by `sample_params` and applied by `apply_params` give the
/// batch function's output (the batch is nothing but these two per image).
#[test]
fn batch_equals_sampled_then_applied_params() {
    let set = test_set(5, 20, 24, 3);
    let cfg = AugmentConfig::cifar().with_size(16, 16);
    let t = flat(&augment_batch(&set, &[4, 2], &cfg, 77).unwrap());
    for (pos, &i) in [4usize, 2].iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(image_seed(77, 0, pos as u64));
        let p = sample_params(20, 24, &cfg, &mut rng).unwrap();
        let mut out = vec![0f32; 3 * 16 * 16];
        apply_params(set.image(i), (20, 24, 3), &p, &cfg, &mut out).unwrap();
        assert_eq!(out[..], t[pos * 768..(pos + 1) * 768]);
    }
}

#[test]
fn augment_rejects_bad_input() {
    let set = test_set(3, 8, 8, 3);
    let cfg = AugmentConfig::cifar().with_size(8, 8);
    assert!(augment_batch(&set, &[3], &cfg, 0).is_err());
    let bad = [
        AugmentConfig {
            scale: (0.5, 0.2),
            ..cfg.clone()
        },
        AugmentConfig {
            ratio: (0.0, 1.0),
            ..cfg.clone()
        },
        AugmentConfig {
            flip_p: 1.5,
            ..cfg.clone()
        },
        AugmentConfig {
            std: [1.0, 0.0, 1.0],
            ..cfg.clone()
        },
        AugmentConfig {
            size: (0, 8),
            ..cfg.clone()
        },
        AugmentConfig {
            blur: Blur {
                p: 0.5,
                kernel_size: 4,
                sigma: (0.1, 2.0),
            },
            ..cfg.clone()
        },
        AugmentConfig {
            jitter: ColorJitter {
                hue: 0.7,
                ..cfg.jitter
            },
            ..cfg.clone()
        },
    ];
    for b in &bad {
        let e = augment_batch(&set, &[0], b, 0).unwrap_err();
        assert!(e.to_string().contains("augment config"), "{e}");
    }
    let imgs: Vec<&[u8]> = vec![set.image(0), &set.image(1)[1..]];
    assert!(augment_raw(&imgs, 8, 8, 3, &cfg, 0).is_err());
    assert!(augment_raw(&[set.image(0)], 8, 8, 2, &cfg, 0).is_err());
    // An empty batch is a valid (0, 3, H, W) tensor.
    assert_eq!(
        augment_batch(&set, &[], &cfg, 0).unwrap().dims(),
        &[0, 3, 8, 8]
    );
}

#[test]
fn presets_validate_and_serialise() {
    let (b1, b2) = AugmentConfig::cifar_byol();
    let (t1, t2) = AugmentConfig::tiny_imagenet_byol();
    let (i1, i2) = AugmentConfig::imagenet_byol();
    let all = [
        AugmentConfig::cifar(),
        b1,
        b2,
        AugmentConfig::tiny_imagenet(),
        t1,
        t2,
        AugmentConfig::imagenet(),
        i1,
        i2,
    ];
    for c in &all {
        c.validate().unwrap();
        let s = serde_json::to_string(c).unwrap();
        let back: AugmentConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(&back, c);
    }
    let c = AugmentConfig::cifar();
    assert_eq!(c.size, (32, 32));
    assert_eq!(c.mean, [0.4914, 0.4822, 0.4465]);
    assert_eq!(c.std, [0.2470, 0.2435, 0.2616]);
    assert_eq!(
        (
            c.jitter.brightness,
            c.jitter.contrast,
            c.jitter.saturation,
            c.jitter.hue
        ),
        (0.4, 0.4, 0.2, 0.1)
    );
    assert_eq!(
        (c.jitter_p, c.grayscale_p, c.flip_p, c.blur.p),
        (0.8, 0.2, 0.5, 0.0)
    );
    assert_eq!(AugmentConfig::imagenet().size, (224, 224));
    assert_eq!(AugmentConfig::imagenet().mean, transform::IMAGENET_MEAN);
    assert_eq!(AugmentConfig::tiny_imagenet().size, (64, 64));
    let e = AugmentConfig::imagenet().with_normalization(
        transform::EFFICIENTNET_LITE_MEAN,
        transform::EFFICIENTNET_LITE_STD,
    );
    assert_eq!(e.std, [0.5; 3]);
}
