//! Evaluation transforms and SSL augmentations against Pillow / torchvision references
//! (fixtures from `tools/gen_augment_fixtures.py`) and their stated properties.

use std::path::PathBuf;

use cromo::data::transform::{
    self, center_crop_window, preprocess_photo, preprocess_photos, resize_rgb_u8, resize_u8,
    resized_shorter_size, to_tensor, to_tensor_raw, IMAGENET_MEAN, IMAGENET_STD,
};
use cromo::data::ImageSet;
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
    assert_eq!(resized_shorter_size(400, 600, 256), (256, 384));
    assert_eq!(resized_shorter_size(600, 400, 256), (384, 256));
    assert_eq!(resized_shorter_size(333, 500, 256), (256, 384)); // 384.38 -> 384
    assert_eq!(resized_shorter_size(3, 1000, 256), (256, 85333));
    assert_eq!(resized_shorter_size(100, 100, 256), (256, 256));
    // (341 - 224) / 2 = 58.5 -> 58 (half to even); (343 - 224) / 2 = 59.5 -> 60.
    assert_eq!(center_crop_window(341, 256, 224, 224).top, 58);
    assert_eq!(center_crop_window(343, 256, 224, 224).top, 60);
    assert_eq!(center_crop_window(256, 384, 224, 224).left, 80);
    assert_eq!(center_crop_window(256, 384, 224, 224).top, 16);
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
    let (dh, dw) = resized_shorter_size(h, w, 256);
    assert_eq!((dh, dw), (256, 384));
    let resized = resize_rgb_u8(rgb.as_raw(), h, w, dh, dw).unwrap();
    let win = center_crop_window(dh, dw, 224, 224);
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
        let (dh, dw) = resized_shorter_size(hh, ww, 256);
        let full = resize_rgb_u8(img.as_raw(), hh, ww, dh, dw).unwrap();
        let win = center_crop_window(dh, dw, 224, 224);
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
