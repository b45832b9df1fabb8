//! Helpers shared by the inference-plan and GPU tests: deterministic random weights for any
//! architecture (the recipe of tools/gen_model_fixtures.py: fan-in-scaled weights, BatchNorm
//! statistics away from the identity so that folding them matters), photos, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use cromo::models::weights::expected_tensors;
use cromo::models::Arch;

/// splitmix64-based uniform values in [-1, 1).
pub fn uniform(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|k| {
            let mut z = (seed << 32)
                .wrapping_add(k)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Random weights for `arch` (with a `classes`-way head when given), by tensor name:
/// conv / linear weights u·sqrt(3/fan_in) (variance 1/fan_in), linear bias 0.1u, BatchNorm
/// weight 1 + 0.1u, bias 0.1u, running_mean 0.1u, running_var 0.5 + u².
pub fn random_weights(arch: Arch, classes: Option<usize>, seed: u64) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (i, spec) in expected_tensors(arch, classes)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let n: usize = spec.shape.iter().product();
        let u = uniform(seed * 1000 + i as u64, n);
        let leaf = spec.name.rsplit('.').next().unwrap();
        let v: Vec<f32> = match (leaf, spec.shape.len()) {
            ("weight", 4) | ("weight", 2) => {
                let fan_in: usize = spec.shape[1..].iter().product();
                let s = (3.0 / fan_in as f32).sqrt();
                u.iter().map(|x| x * s).collect()
            }
            ("weight", 1) => u.iter().map(|x| 1.0 + 0.1 * x).collect(),
            ("bias", _) | ("running_mean", _) => u.iter().map(|x| 0.1 * x).collect(),
            ("running_var", _) => u.iter().map(|x| 0.5 + x * x).collect(),
            other => panic!("no recipe for {} {other:?}", spec.name),
        };
        out.insert(
            spec.name.clone(),
            Tensor::from_vec(v, spec.shape.as_slice(), &Device::Cpu).unwrap(),
        );
    }
    out
}

/// A (B,3,h,w) batch of deterministic values in [-2, 2).
pub fn random_input(seed: u64, b: usize, h: usize, w: usize) -> Tensor {
    let v: Vec<f32> = uniform(seed, b * 3 * h * w)
        .iter()
        .map(|x| 2.0 * x)
        .collect();
    Tensor::from_vec(v, (b, 3, h, w), &Device::Cpu).unwrap()
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

/// Index of the largest value of each row of a (B, C) tensor.
pub fn argmax_rows(t: &Tensor) -> Vec<usize> {
    t.to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |m, (i, &v)| if v > m.1 { (i, v) } else { m },
                )
                .0
        })
        .collect()
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped photos (data/photos), sorted by name.
pub fn photos() -> Vec<PathBuf> {
    cromo::infer::collect_images(&[repo().join("data/photos")]).unwrap()
}

/// The photos preprocessed for `arch` (its evaluation transform) as one (N,3,S,S) batch.
pub fn photo_batch(arch: Arch, files: &[PathBuf]) -> Tensor {
    let (shorter, crop) = cromo::infer::eval_sizes(arch);
    let imgs: Vec<_> = files
        .iter()
        .map(|f| cromo::infer::open_image(f).unwrap())
        .collect();
    cromo::data::transform::preprocess_photos(&imgs, shorter, crop, arch.mean(), arch.std())
        .unwrap()
}

/// The CIFAR-10 subset shipped in `data/`.
pub fn subset() -> PathBuf {
    repo().join("data/cifar10-subset.tar.zst")
}

/// A tiny Split CIFAR-10/2 run of small-cnn + Barlow Twins on the shipped subset: 1 epoch,
/// batch 16, 30 train / 10 test images per class, 3 steps per task.
pub fn tiny_train_config(strategy: &str) -> cromo::learner::trainer::TrainConfig {
    let mut c = cromo::learner::trainer::TrainConfig::new(
        subset().to_str().unwrap(),
        "small-cnn".parse().unwrap(),
        "barlow".parse().unwrap(),
        strategy.parse().unwrap(),
    );
    c.tasks = 2;
    c.epochs_per_task = 1;
    c.batch = 16;
    c.images_per_class = Some(30);
    c.test_images_per_class = Some(10);
    c.max_steps_per_task = Some(3);
    c
}
