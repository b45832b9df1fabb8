//! Load-speed table for the real data readers: CIFAR-10 train + test straight from
//! `cifar10-jpeg.tar.zst` and Tiny-ImageNet val from `tiny-imagenet-200.tar.zst`, each twice
//! with a fresh cache folder: cold (decode + write the cache) and cached (read the cache).
//!
//! ```text
//! cargo run --release --example bench_data_load [-- --tiny-train]
//! ```
//! The data folder is `$CROMO_SHARED_DATA`, else `../shared/data`. `--tiny-train` adds the
//! 100,000 Tiny-ImageNet train images (1.2 GB decoded; the cache file lands in a temporary folder).

use std::path::PathBuf;
use std::time::Instant;

use cromo::data::{load_image_folder, load_tiny_imagenet, CacheMode, LoadOptions, TinySplit};

fn main() -> anyhow::Result<()> {
    let data = match std::env::var_os("CROMO_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    let tiny_train = std::env::args().any(|a| a == "--tiny-train");
    let cache_dir = std::env::temp_dir().join(format!("cromo-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache_dir);
    let opts = LoadOptions {
        cache: CacheMode::Dir(cache_dir.clone()),
        ..LoadOptions::default()
    };
    println!(
        "threads: {}  data: {}  cache: {}",
        rayon::current_num_threads(),
        data.display(),
        cache_dir.display()
    );
    println!(
        "{:<32} {:>8} {:>10} {:>10} {:>12}",
        "load", "pass", "images", "seconds", "images/s"
    );
    let cifar = data.join("cifar10-jpeg.tar.zst");
    let tiny = data.join("tiny-imagenet-200.tar.zst");
    for pass in ["cold", "cached"] {
        let t = Instant::now();
        let train = load_image_folder(&cifar, Some("cifar10-jpeg/train"), &opts)?;
        let test = load_image_folder(&cifar, Some("cifar10-jpeg/test"), &opts)?;
        row(
            "cifar10 train+test (archive)",
            pass,
            train.len() + test.len(),
            t,
        );
    }
    for pass in ["cold", "cached"] {
        let t = Instant::now();
        let val = load_tiny_imagenet(&tiny, TinySplit::Val, &opts)?;
        row("tiny-imagenet val (archive)", pass, val.len(), t);
    }
    if tiny_train {
        for pass in ["cold", "cached"] {
            let t = Instant::now();
            let tr = load_tiny_imagenet(&tiny, TinySplit::Train, &opts)?;
            row("tiny-imagenet train (archive)", pass, tr.len(), t);
        }
    }
    std::fs::remove_dir_all(&cache_dir)?;
    Ok(())
}

fn row(what: &str, pass: &str, n: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!(
        "{what:<32} {pass:>8} {n:>10} {s:>10.3} {:>12.0}",
        n as f64 / s
    );
}
