//! Augmentation throughput: two-view batches of 256 at CIFAR size (32 from 32x32) and at
//! ImageNet size (224 from 256x256), on a rayon pool of `--threads` threads (default 2).
//!
//! ```text
//! cargo run --release --example bench_augment [-- --threads 2 --seconds 3]
//! ```
//!
//! Sources are seeded random `u8` images (the cost of every op is independent of the pixel
//! values). Prints one row per recipe: ms per two-view batch (minimum and median over the
//! runs), augmented views/s and source images/s (two views each) from the minimum.

use std::time::Instant;

use cromo::data::augment::{augment_views, AugmentConfig};
use cromo::data::transform::{to_tensor, IMAGENET_MEAN, IMAGENET_STD};
use cromo::data::ImageSet;
use rand::{Rng, SeedableRng};

fn random_set(n: usize, h: usize, w: usize) -> ImageSet {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    ImageSet {
        pixels: (0..n * h * w * 3).map(|_| rng.random::<u8>()).collect(),
        labels: vec![0; n],
        height: h,
        width: w,
        channels: 3,
        class_names: vec!["x".into()],
    }
}

/// Runs `f` once to warm up, then until `seconds` have passed (at least 5 times); returns the
/// (minimum, median) seconds per call. The minimum is the figure least disturbed by other
/// processes on a shared machine.
fn time<F: FnMut()>(seconds: f64, mut f: F) -> (f64, f64) {
    f();
    let t0 = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || t0.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let threads = get("--threads", 2.0) as usize;
    let seconds = get("--seconds", 3.0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let batch = 256usize;
    let idx: Vec<usize> = (0..batch).collect();
    let cifar = random_set(batch, 32, 32);
    let big = random_set(batch, 256, 256);

    let (byol32_1, byol32_2) = AugmentConfig::cifar_byol();
    let (byol224_1, byol224_2) = AugmentConfig::imagenet_byol();
    let imagenet_no_blur = {
        let mut c = AugmentConfig::imagenet();
        c.blur.p = 0.0;
        c
    };
    let rows: Vec<(&str, &ImageSet, AugmentConfig, AugmentConfig)> = vec![
        (
            "cifar (SimCLR/Barlow)",
            &cifar,
            AugmentConfig::cifar(),
            AugmentConfig::cifar(),
        ),
        ("cifar BYOL", &cifar, byol32_1, byol32_2),
        (
            "imagenet, no blur",
            &big,
            imagenet_no_blur.clone(),
            imagenet_no_blur,
        ),
        (
            "imagenet SimCLR (blur p .5)",
            &big,
            AugmentConfig::imagenet(),
            AugmentConfig::imagenet(),
        ),
        ("imagenet BYOL", &big, byol224_1, byol224_2),
    ];

    println!("augment_views, two views of a batch of {batch}, {threads} rayon threads");
    println!(
        "| {:<30} | {:>9} | {:>7} | {:>15} | {:>8} | {:>8} |",
        "recipe", "source", "output", "ms/batch min/med", "views/s", "images/s"
    );
    println!(
        "|{:-<32}|{:-<11}|{:-<9}|{:-<17}|{:-<10}|{:-<10}|",
        "", "", "", "", "", ""
    );
    let mut seed = 0u64;
    for (name, set, c1, c2) in rows {
        let (s, med) = pool.install(|| {
            time(seconds, || {
                seed += 1;
                let (a, b) = augment_views(set, &idx, &c1, &c2, seed).expect("augment");
                std::hint::black_box((a, b));
            })
        });
        println!(
            "| {:<30} | {:>9} | {:>7} | {:>7.1}/{:>7.1} | {:>8.0} | {:>8.0} |",
            name,
            format!("{}x{}", set.height, set.width),
            format!("{}x{}", c1.size.0, c1.size.1),
            s * 1e3,
            med * 1e3,
            2.0 * batch as f64 / s,
            batch as f64 / s,
        );
    }
    // Evaluation path for comparison: plain normalisation and a 256 -> 224 resize.
    for (name, size) in [
        ("eval to_tensor (no resize)", None),
        ("eval to_tensor 256 -> 224", Some((224, 224))),
    ] {
        let (s, med) = pool.install(|| {
            time(seconds, || {
                let t =
                    to_tensor(&big, &idx, IMAGENET_MEAN, IMAGENET_STD, size).expect("to_tensor");
                std::hint::black_box(t);
            })
        });
        let (oh, ow) = size.unwrap_or((256, 256));
        println!(
            "| {:<30} | {:>9} | {:>7} | {:>7.1}/{:>7.1} | {:>8.0} | {:>8.0} |",
            name,
            "256x256",
            format!("{oh}x{ow}"),
            s * 1e3,
            med * 1e3,
            batch as f64 / s,
            batch as f64 / s,
        );
    }
    Ok(())
}
