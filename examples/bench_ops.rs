//! Per-op CPU timings of `cromo::ops` against candle's own ops, same shapes, same process.
//!
//! ```text
//! cargo run --release --example bench_ops -- [--threads 2] [--runs 10] [--only small-cnn|resnet18-cifar|bn]
//! ```
//!
//! For every convolution of `small-cnn` (batch 256, 32×32) and of ResNet-18 CIFAR (batch 32,
//! 32×32), and for the train-mode BatchNorms after them, prints the median milliseconds of the
//! forward pass and of forward + backward (gradients of input and weight; the first layer's
//! input needs none, as in training) for candle (`Tensor::conv2d` / `candle_nn::BatchNorm`,
//! differentiated by candle's autograd) and for cromo's op, and the ratio candle / cromo.

use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use cromo::ops::{conv2d, conv2d_reference, BatchNorm, ConvParams};

struct Shape {
    net: &'static str,
    name: &'static str,
    b: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// How many times the network runs this shape per forward pass.
    count: usize,
}

#[allow(clippy::too_many_arguments)]
fn sh(
    net: &'static str,
    name: &'static str,
    b: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
    stride: usize,
    pad: usize,
    count: usize,
) -> Shape {
    Shape {
        net,
        name,
        b,
        cin,
        cout,
        hw,
        k,
        stride,
        pad,
        count,
    }
}

fn shapes() -> Vec<Shape> {
    let s = "small-cnn";
    let r = "resnet18-cifar";
    vec![
        sh(s, "stage0 3->32 s1", 256, 3, 32, 32, 3, 1, 1, 1),
        sh(s, "stage1 32->64 s2", 256, 32, 64, 32, 3, 2, 1, 1),
        sh(s, "stage2 64->128 s2", 256, 64, 128, 16, 3, 2, 1, 1),
        sh(s, "stage3 128->256 s2", 256, 128, 256, 8, 3, 2, 1, 1),
        sh(r, "conv1 3->64", 32, 3, 64, 32, 3, 1, 1, 1),
        sh(r, "layer1 64->64", 32, 64, 64, 32, 3, 1, 1, 4),
        sh(r, "layer2.0 64->128 s2", 32, 64, 128, 32, 3, 2, 1, 1),
        sh(r, "layer2 128->128", 32, 128, 128, 16, 3, 1, 1, 3),
        sh(r, "layer2 ds 1x1 s2", 32, 64, 128, 32, 1, 2, 0, 1),
        sh(r, "layer3.0 128->256 s2", 32, 128, 256, 16, 3, 2, 1, 1),
        sh(r, "layer3 256->256", 32, 256, 256, 8, 3, 1, 1, 3),
        sh(r, "layer3 ds 1x1 s2", 32, 128, 256, 16, 1, 2, 0, 1),
        sh(r, "layer4.0 256->512 s2", 32, 256, 512, 8, 3, 2, 1, 1),
        sh(r, "layer4 512->512", 32, 512, 512, 4, 3, 1, 1, 3),
        sh(r, "layer4 ds 1x1 s2", 32, 256, 512, 8, 1, 2, 0, 1),
    ]
}

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let runs: usize = get("--runs").map(|v| v.parse()).transpose()?.unwrap_or(10);
    let only = get("--only");
    if let Some(t) = get("--threads") {
        let t: usize = t.parse()?;
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }
    cromo::ops::cpu::tune_allocator();
    let dev = Device::Cpu;
    println!(
        "threads {}, median of {runs} runs, ms",
        rayon::current_num_threads()
    );
    println!("| net | conv | batch | in | candle fwd | cromo fwd | ratio | candle fwd+bwd | cromo fwd+bwd | ratio |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut totals = std::collections::BTreeMap::<&str, [f64; 4]>::new();
    for s in shapes() {
        if only.as_deref().is_some_and(|o| o != s.net) {
            continue;
        }
        let x = Var::randn(0f32, 1.0, (s.b, s.cin, s.hw, s.hw), &dev)?;
        let w = Var::randn(0f32, 0.1, (s.cout, s.cin, s.k, s.k), &dev)?;
        let p = ConvParams::new(s.stride, s.pad);
        // The first layer's input is an image batch: no input gradient.
        let first = s.cin == 3;
        let xin = if first {
            x.as_detached_tensor()
        } else {
            x.as_tensor().clone()
        };
        let cf = median_ms(runs, || {
            conv2d_reference(&xin, w.as_tensor(), &p).unwrap();
        });
        let of = median_ms(runs, || {
            conv2d(&xin, w.as_tensor(), &p).unwrap();
        });
        let cb = median_ms(runs.min(5), || {
            let y = conv2d_reference(&xin, w.as_tensor(), &p).unwrap();
            y.sum_all().unwrap().backward().unwrap();
        });
        let ob = median_ms(runs, || {
            let y = conv2d(&xin, w.as_tensor(), &p).unwrap();
            y.sum_all().unwrap().backward().unwrap();
        });
        println!(
            "| {} | {} x{} | {} | {}x{} | {cf:.2} | {of:.2} | {:.1}x | {cb:.1} | {ob:.2} | {:.1}x |",
            s.net,
            s.name,
            s.count,
            s.b,
            s.hw,
            s.hw,
            cf / of,
            cb / ob
        );
        let e = totals.entry(s.net).or_default();
        for (t, v) in e.iter_mut().zip([cf, of, cb, ob]) {
            *t += v * s.count as f64;
        }
    }
    for (net, [cf, of, cb, ob]) in &totals {
        println!(
            "| {net} | all convolutions (x count) | | | {cf:.1} | {of:.1} | {:.1}x | {cb:.1} | {ob:.1} | {:.1}x |",
            cf / of,
            cb / ob
        );
    }

    if only.as_deref().is_none_or(|o| o == "bn") {
        println!();
        println!("| BatchNorm (train) | candle fwd | cromo fwd | ratio | candle fwd+bwd | cromo fwd+bwd | ratio |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (n, c, hw) in [
            (256usize, 32usize, 32usize),
            (256, 64, 16),
            (32, 64, 32),
            (256, 1024, 0),
        ] {
            let dims: Vec<usize> = if hw == 0 {
                vec![n, c]
            } else {
                vec![n, c, hw, hw]
            };
            let x = Var::randn(0f32, 1.0, dims.as_slice(), &dev)?;
            let gamma = Var::ones(c, DType::F32, &dev)?;
            let beta = Var::zeros(c, DType::F32, &dev)?;
            let ours = BatchNorm::from_parts(
                Var::zeros(c, DType::F32, &dev)?,
                Var::ones(c, DType::F32, &dev)?,
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
                1e-5,
                0.1,
            )?;
            let theirs = candle_nn::BatchNorm::new(
                c,
                Tensor::zeros(c, DType::F32, &dev)?,
                Tensor::ones(c, DType::F32, &dev)?,
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
                1e-5,
            )?;
            let cf = median_ms(runs, || {
                theirs.forward_t(x.as_tensor(), true).unwrap();
            });
            let of = median_ms(runs, || {
                ours.forward_t(x.as_tensor(), true).unwrap();
            });
            let cb = median_ms(runs, || {
                let y = theirs.forward_t(x.as_tensor(), true).unwrap();
                y.sum_all().unwrap().backward().unwrap();
            });
            let ob = median_ms(runs, || {
                let y = ours.forward_t(x.as_tensor(), true).unwrap();
                y.sum_all().unwrap().backward().unwrap();
            });
            println!(
                "| {dims:?} | {cf:.2} | {of:.2} | {:.1}x | {cb:.2} | {ob:.2} | {:.1}x |",
                cf / of,
                cb / ob
            );
        }
    }
    Ok(())
}
