//! Where the CPU inference time of ResNet-18 and EfficientNet-Lite0 (224×224, batch 1) goes:
//! every convolution of both networks timed alone — candle's own `conv2d` beside cromo's
//! convolution op (`cromo::ops::conv2d`, what the encoders run) — summed per kind of layer.
//!
//! `cargo run --release --example bench_conv_shapes -- [--threads 2] [--runs 20]`
//! `python3 tools/bench_torch_conv_shapes.py --threads 2 --runs 20` times the same shapes in PyTorch.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use cromo::models::efficientnet_lite::same_padding;
use cromo::ops::conv::{conv2d, conv2d_reference, ConvParams, Padding};

/// (group, c_in, c_out, k, stride, input side, groups, tf-same padding)
type Shape = (&'static str, usize, usize, usize, usize, usize, usize, bool);

fn resnet18() -> Vec<Shape> {
    let mut v: Vec<Shape> = vec![("resnet18 stem 7x7", 3, 64, 7, 2, 224, 1, false)];
    let mut cin = 64;
    let mut side = 56;
    for (i, cout) in [64, 128, 256, 512].into_iter().enumerate() {
        let s = if i == 0 { 1 } else { 2 };
        v.push(("resnet18 3x3", cin, cout, 3, s, side, 1, false));
        if s == 2 {
            v.push(("resnet18 1x1 downsample", cin, cout, 1, 2, side, 1, false));
        }
        side /= s;
        for _ in 0..3 {
            v.push(("resnet18 3x3", cout, cout, 3, 1, side, 1, false));
        }
        cin = cout;
    }
    v
}

fn efficientnet_lite0() -> Vec<Shape> {
    let mut v: Vec<Shape> = vec![("effnet stem 3x3", 3, 32, 3, 2, 224, 1, true)];
    let table = [
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ];
    let (mut cin, mut side) = (32, 112);
    for (r, k, s, e, out) in table {
        for j in 0..r {
            let stride = if j == 0 { s } else { 1 };
            let mid = cin * e;
            if e != 1 {
                v.push(("effnet 1x1 expand", cin, mid, 1, 1, side, 1, true));
            }
            v.push(("effnet depthwise", mid, mid, k, stride, side, mid, true));
            side = side.div_ceil(stride);
            v.push(("effnet 1x1 project", mid, out, 1, 1, side, 1, true));
            cin = out;
        }
    }
    v.push(("effnet 1x1 head", 320, 1280, 1, 1, 7, 1, true));
    v
}

fn params(s: &Shape) -> ConvParams {
    let (_, _, _, k, stride, side, groups, same) = *s;
    let pad = if same {
        let (a, b) = same_padding(side, k, stride);
        Padding::new(a, b, a, b)
    } else {
        Padding::uniform(k / 2)
    };
    ConvParams::new(stride, 0)
        .with_padding(pad)
        .with_groups(groups)
}

fn median_ms(runs: usize, f: impl Fn()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, d: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let threads = get("--threads", 2);
    let runs = get("--runs", 20);
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let mut totals: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for s in resnet18().iter().chain(efficientnet_lite0().iter()) {
        let (_, cin, cout, k, _, side, groups, _) = *s;
        let x = Tensor::randn(0f32, 1.0, (1, cin, side, side), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.1, (cout, cin / groups, k, k), &Device::Cpu)?;
        let p = params(s);
        let c = median_ms(runs, || {
            conv2d_reference(&x, &w, &p).unwrap();
        });
        let o = median_ms(runs, || {
            conv2d(&x, &w, &p).unwrap();
        });
        let e = totals.entry(s.0).or_default();
        e.0 += c;
        e.1 += o;
    }
    println!(
        "| layers (224x224, batch 1, {threads} threads) | candle conv2d ms | cromo ops::conv2d ms | candle / cromo |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (g, (c, o)) in &totals {
        println!("| {g} | {c:.2} | {o:.2} | {:.2} |", c / o);
    }
    for net in ["resnet18", "effnet"] {
        let (c, o) = totals
            .iter()
            .filter(|(g, _)| g.starts_with(net))
            .fold((0.0, 0.0), |a, (_, v)| (a.0 + v.0, a.1 + v.1));
        println!(
            "| **{net} all convolutions** | **{c:.2}** | **{o:.2}** | **{:.2}** |",
            c / o
        );
    }
    Ok(())
}
