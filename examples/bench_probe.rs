//! Speed of the linear probe on cached features: 50,000 random 512-d features in 10 classes
//! (class-dependent means, so they are learnable but not trivially separable), full-batch L-BFGS.
//!
//!     cargo run --release --example bench_probe [-- N D C]
//!     SEPARATION=5 cargo run --release --example bench_probe   # norm of the class means
//!
//! Prints the fit time, iterations, passes over the data and the train/held-out accuracy, then
//! the time of one coding-rate-reduction evaluation (m = 512 rows, d = 64 / 512 / 2048).

use std::time::Instant;

use cromo::eval::{LinearProbe, ProbeConfig};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn synth(n: usize, d: usize, c: usize, means: &[f32], rng: &mut impl Rng) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % c;
        y.push(k as u32);
        for j in 0..d {
            let noise: f32 = rng.sample(StandardNormal);
            x.push(means[k * d + j] + noise);
        }
    }
    (x, y)
}

fn main() -> cromo::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: N D C as numbers"))
        .collect();
    let (n, d, c) = match args.as_slice() {
        [n, d, c] => (*n, *d, *c),
        [] => (50_000, 512, 10),
        _ => panic!("arguments: N D C"),
    };
    let sep: f32 = std::env::var("SEPARATION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // Class means of norm ~SEPARATION (default 3) against unit-variance noise in every
    // dimension: overlapping classes, so the probe has real work to do.
    let scale = sep / (d as f32).sqrt();
    let means: Vec<f32> = (0..c * d)
        .map(|_| scale * rng.sample::<f32, _>(StandardNormal))
        .collect();
    let (x, y) = synth(n, d, c, &means, &mut rng);
    let (xt, yt) = synth(10_000, d, c, &means, &mut rng);
    let cfg = ProbeConfig::default();
    println!(
        "linear probe: N = {n}, D = {d}, C = {c}, class-mean norm {sep}, l2 = {}, threads = {}",
        cfg.l2,
        rayon::current_num_threads()
    );
    let t0 = Instant::now();
    let probe = LinearProbe::fit(&x, d, &y, &cfg)?;
    let secs = t0.elapsed().as_secs_f64();
    let info = probe.fit_info.clone().expect("fit sets fit_info");
    let test_acc = probe.accuracy(&xt, &yt)?;
    println!(
        "| fit s | iterations | passes | stop | final loss | max abs grad | train acc | test acc |"
    );
    println!("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |");
    println!(
        "| {secs:.2} | {} | {} | {:?} | {:.6} | {:.1e} | {:.2} % | {:.2} % |",
        info.iterations,
        info.evaluations,
        info.stop,
        info.loss,
        info.grad_inf_norm,
        100.0 * info.train_accuracy,
        100.0 * test_acc
    );

    // The coding-rate monitor on one batch: m = 512 rows (256 samples × 2 views).
    println!("\ncoding-rate reduction ΔR (f64, Cholesky, smaller Gram form):");
    println!("| m | d | ms | ΔR |");
    println!("| ---: | ---: | ---: | ---: |");
    for d in [64usize, 512, 2048] {
        let z1: Vec<f32> = (0..256 * d).map(|_| rng.sample(StandardNormal)).collect();
        let z2: Vec<f32> = z1
            .iter()
            .map(|v| v + 0.3 * rng.sample::<f32, _>(StandardNormal))
            .collect();
        let t0 = Instant::now();
        let rr = cromo::eval::coding_rate_reduction_views(&z1, &z2, d, 0.1, true)?;
        let ms = 1e3 * t0.elapsed().as_secs_f64();
        println!("| 512 | {d} | {ms:.1} | {:.3} |", rr.delta);
    }
    Ok(())
}
