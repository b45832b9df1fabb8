//! Cross-check of `data::augment` / `data::transform` against a second, independently written
//! set of torchvision / Pillow fixtures (`tools/gen_augment_xcheck_fixtures.py`): another test
//! image with hand-placed edge pixels (gray, two-channel maxima, exactly 0.5, hue near 0/1),
//! hue shifts of ±0.5 and 0, other blur kernels and crop boxes, Pillow resizes to 1x1, 40x3
//! and the identity size, and a second photo (chelsea.png, a non-integer resize scale).

use std::path::PathBuf;

use cromo::data::augment::{ops, sample_crop_box, CropBox};
use cromo::data::transform::{preprocess_photo, resize_rgb_u8, IMAGENET_MEAN, IMAGENET_STD};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/augment_xcheck")
}

fn shared_data() -> PathBuf {
    match std::env::var_os("CROMO_SHARED_DATA").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    }
}

fn load_json(name: &str) -> Value {
    let p = fixtures().join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

fn usz(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn hflip(x: &mut [f32], w: usize) {
    for row in x.chunks_exact_mut(w) {
        row.reverse();
    }
}

#[test]
fn ops_match_a_second_torchvision_fixture() {
    let j = load_json("ops.json");
    let shape: Vec<usize> = j["image_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(usz)
        .collect();
    let (h, w) = (shape[1], shape[2]);
    let img = f32s(&j["image"]);
    let mut worst: std::collections::BTreeMap<String, f32> = Default::default();
    for case in j["cases"].as_array().unwrap() {
        let op = case["op"].as_str().unwrap();
        let p = &case["params"];
        let num = |k: &str| p[k].as_f64().unwrap() as f32;
        let want = f32s(&case["output"]);
        let mut x = img.clone();
        let got = match op {
            "brightness" => ops::adjust_brightness(&mut x, h, w, num("factor")).map(|_| x),
            "contrast" => ops::adjust_contrast(&mut x, h, w, num("factor")).map(|_| x),
            "saturation" => ops::adjust_saturation(&mut x, h, w, num("factor")).map(|_| x),
            "hue" => ops::adjust_hue(&mut x, h, w, num("hue")).map(|_| x),
            "grayscale" => ops::rgb_to_grayscale(&mut x, h, w).map(|_| x),
            "solarize" => ops::solarize(&mut x, h, w, num("threshold")).map(|_| x),
            "hflip" => {
                hflip(&mut x, w);
                Ok(x)
            }
            "gaussian_blur" => {
                ops::gaussian_blur(&mut x, h, w, usz(&p["kernel_size"]), num("sigma")).map(|_| x)
            }
            "resized_crop" => {
                let crop = CropBox {
                    top: usz(&p["top"]),
                    left: usz(&p["left"]),
                    height: usz(&p["height"]),
                    width: usz(&p["width"]),
                };
                let aa = p["antialias"].as_bool().unwrap();
                ops::resized_crop(
                    &img,
                    h,
                    w,
                    crop,
                    usz(&p["out_h"]),
                    usz(&p["out_w"]),
                    aa,
                    false,
                )
            }
            other => panic!("unknown op {other}"),
        }
        .unwrap_or_else(|e| panic!("{op} {p}: {e}"));
        let d = max_abs_diff(&got, &want);
        let tol = if op == "hue" { 1e-4 } else { 1e-5 };
        assert!(d <= tol, "{op} {p}: max-abs-diff {d:e} > {tol:e}");
        let e = worst.entry(op.to_string()).or_default();
        *e = e.max(d);
    }
    println!("max-abs-diff vs torchvision per op: {worst:?}");
}

#[test]
fn resize_matches_pillow_on_edge_sizes() {
    let j = load_json("pil_resize.json");
    let shape: Vec<usize> = j["shape"].as_array().unwrap().iter().map(usz).collect();
    let src = u8s(&j["data"]);
    for r in j["resizes"].as_array().unwrap() {
        let (dh, dw) = (usz(&r["out_h"]), usz(&r["out_w"]));
        let got = resize_rgb_u8(&src, shape[0], shape[1], dh, dw).unwrap();
        let want = u8s(&r["data"]);
        let mism = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            (got.len(), mism),
            (want.len(), 0),
            "{dh}x{dw}: bytes differ from Pillow"
        );
    }
}

#[test]
fn preprocess_photo_matches_torchvision_on_a_non_integer_scale() {
    let photos = shared_data().join("photos");
    if !photos.join("chelsea.png").exists() {
        println!(
            "skipping: {} not found (set CROMO_SHARED_DATA)",
            photos.display()
        );
        return;
    }
    // chelsea.png is 451x300: Resize(256) gives 384x256 (384.85 truncated), scales 451/384, 300/256.
    let name = "chelsea";
    let img = image::open(photos.join(format!("{name}.png"))).unwrap();
    let zst = std::fs::read(fixtures().join(format!("{name}_224.f32.zst"))).unwrap();
    let raw = zstd::decode_all(&zst[..]).unwrap();
    let want: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let t = preprocess_photo(&img, 256, 224, IMAGENET_MEAN, IMAGENET_STD).unwrap();
    let got = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&got, &want);
    println!("{name}: max-abs-diff vs torchvision {d:e}");
    // One u8 level is 0.017 after normalisation: this says every byte equals Pillow's.
    assert!(d <= 1e-5, "{name}: max-abs-diff {d:e}");
}

#[test]
fn crop_fallback_rounds_half_to_even_like_python() {
    // 3x100, ratio (1, 1.5): no try fits (the area fraction would have to be < 0.06); the
    // fallback is h = 3, w = round(3 * 1.5) = round(4.5) = 4 in Python, left = (100-4)//2.
    let mut rng = StdRng::seed_from_u64(0);
    let b = sample_crop_box(3, 100, (0.08, 1.0), (1.0, 1.5), &mut rng);
    assert_eq!(
        b,
        CropBox {
            top: 0,
            left: 48,
            height: 3,
            width: 4
        }
    );
    let b = sample_crop_box(100, 4, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
    assert_eq!(
        b,
        CropBox {
            top: 47,
            left: 0,
            height: 5,
            width: 4
        }
    );
}
