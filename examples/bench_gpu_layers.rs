//! Where the wgpu inference time goes: every fused layer of a plan timed alone (one submission
//! per layer), summed per kernel, for random-weight encoders at 224×224, batch 1.
//!
//! `cargo run --release --example bench_gpu_layers -- [--arch efficientnet-lite0] [--precision f32] [--runs 3] [--top 10]`

use std::collections::BTreeMap;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use cromo::gpu::{GpuContext, GpuPlan, Precision};
use cromo::infer::plan::InferencePlan;
use cromo::models::{build_encoder, Arch};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let arch: Arch = arg("--arch")
        .unwrap_or_else(|| "efficientnet-lite0".into())
        .parse()?;
    let precision: Precision = arg("--precision").unwrap_or_else(|| "f32".into()).parse()?;
    let runs: usize = arg("--runs").map(|s| s.parse()).transpose()?.unwrap_or(3);
    let top: usize = arg("--top").map(|s| s.parse()).transpose()?.unwrap_or(10);
    let size = arg("--size")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(arch.input_size().max(224));
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.adapter());
    let varmap = VarMap::new();
    build_encoder(
        arch,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let plan = InferencePlan::from_weights(arch, &varmap, None)?;
    let mut gpu = GpuPlan::new(&ctx, &plan, precision)?;
    let x = vec![0.5f32; 3 * size * size];
    let mut best: Vec<(String, cromo::gpu::Kernel, f64)> = Vec::new();
    for r in 0..runs.max(1) {
        let t = gpu.layer_times(&x, 1, size, size)?;
        if r == 0 {
            best = t;
        } else {
            for (b, n) in best.iter_mut().zip(t) {
                b.2 = b.2.min(n.2);
            }
        }
    }
    let total: f64 = best.iter().map(|b| b.2).sum();
    let mut per_kernel: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for (_, k, ms) in &best {
        let e = per_kernel.entry(k.file().to_string()).or_default();
        e.0 += 1;
        e.1 += ms;
    }
    println!("{arch} {size}x{size} batch 1 {precision}: {total:.1} ms summed over {} layers (best of {runs})", best.len());
    println!("| kernel | layers | ms | share |");
    println!("| --- | --- | --- | --- |");
    for (k, (n, ms)) in &per_kernel {
        println!("| {k} | {n} | {ms:.1} | {:.0}% |", 100.0 * ms / total);
    }
    best.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("slowest layers:");
    for (name, k, ms) in best.iter().take(top) {
        println!("  {ms:8.2} ms  {:<14} {name}", k.file());
    }
    Ok(())
}
