//! Parity of every WGSL kernel in `shaders/` with its CPU reference (`run_op_cpu`, candle ops)
//! on random inputs: shapes that are not multiples of the tile sizes, odd strides, asymmetric
//! TensorFlow "same" padding, every activation, with and without a residual, batches of 2.
//!
//! Runs on whatever adapter wgpu finds (lavapipe in CI); skips with a printed reason only when
//! there is no adapter at all. The f16 path is checked where the adapter has `shader-f16`.
#![cfg(feature = "wgpu")]

use std::sync::Arc;

use candle_core::{Device, Tensor};
use cromo::gpu::{GpuContext, Kernel, Precision};
use cromo::infer::plan::{run_op_cpu, Activation, Conv, Linear, MaxPool, Op, Pad, Padding};

fn context() -> Option<Arc<GpuContext>> {
    if cromo::gpu::list_adapters().is_empty() {
        println!("skipping: no GPU adapter (wgpu found none; install mesa-vulkan-drivers)");
        return None;
    }
    let ctx = GpuContext::new().expect("an adapter exists, so the context must open");
    println!("adapter: {}", ctx.adapter());
    Some(ctx)
}

/// Deterministic values in [-1, 1) (splitmix64), so failures reproduce.
fn uniform(seed: u64, n: usize) -> Vec<f32> {
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

fn rand_tensor(seed: u64, dims: &[usize], scale: f32) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<f32> = uniform(seed, n).into_iter().map(|x| x * scale).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

/// Runs `op` on the GPU at every available precision and compares with the CPU reference:
/// f32 within 1e-5 of the output scale, f16 within 5e-3 of it.
fn check(ctx: &Arc<GpuContext>, what: &str, op: &Op, x: &Tensor, residual: Option<&Tensor>) {
    let want = run_op_cpu(op, x, residual).unwrap();
    let scale = max_abs(&want).max(1.0);
    assert!(max_abs(&want) > 0.0, "{what}: degenerate reference");
    let mut precisions = vec![(Precision::F32, 1e-5)];
    if ctx.supports_f16() {
        precisions.push((Precision::F16, 5e-3));
    }
    for (p, tol) in precisions {
        let got = ctx.run_op(op, x, residual, p).unwrap();
        let d = max_abs_diff(&got, &want);
        println!("{what} [{p}]: max |gpu - cpu| = {d:.3e} (output scale {scale:.2})");
        assert!(
            d <= tol * scale,
            "{what} [{p}]: max abs diff {d} > {}",
            tol * scale
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    seed: u64,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: Padding,
    depthwise: bool,
    act: Activation,
) -> Op {
    let wdims = if depthwise {
        [cout, 1, k, k]
    } else {
        [cout, cin, k, k]
    };
    let fan_in = if depthwise { k * k } else { cin * k * k };
    Op::Conv(Conv {
        cin,
        cout,
        k,
        stride,
        padding,
        depthwise,
        weight: rand_tensor(seed, &wdims, (3.0 / fan_in as f32).sqrt()),
        bias: rand_tensor(seed + 1, &[cout], 0.5),
        act,
    })
}

fn explicit(top: usize, bottom: usize, left: usize, right: usize) -> Padding {
    Padding::Explicit(Pad {
        top,
        bottom,
        left,
        right,
    })
}

#[test]
fn kernel_sources_name_their_reference() {
    // Every shader documents its contract and its CPU reference.
    for k in Kernel::ALL {
        let src = k.source(Precision::F32);
        assert!(
            src.contains("CPU reference"),
            "{} lacks its reference",
            k.file()
        );
        assert!(src.contains("fn main"), "{}", k.file());
    }
}

#[test]
fn conv2d_direct_matches_candle() {
    let Some(ctx) = context() else { return };
    let r = Activation::Relu;
    // ResNet-like 3x3 stride 1 pad 1 with a residual; width not a multiple of 4.
    let op = conv(1, 5, 7, 3, 1, explicit(1, 1, 1, 1), false, r);
    let x = rand_tensor(2, &[2, 5, 9, 11], 1.0);
    let res = rand_tensor(3, &[2, 7, 9, 11], 1.0);
    check(&ctx, "conv 3x3/1 +res relu", &op, &x, Some(&res));
    check(&ctx, "conv 3x3/1 relu", &op, &x, None);
    // ResNet ImageNet stem: 7x7 stride 2 pad 3.
    let op = conv(4, 3, 6, 7, 2, explicit(3, 3, 3, 3), false, Activation::None);
    check(
        &ctx,
        "conv 7x7/2",
        &op,
        &rand_tensor(5, &[2, 3, 13, 10], 1.0),
        None,
    );
    // EfficientNet stem: 3x3 stride 2 TF-same (asymmetric on even sizes), ReLU6.
    let op = conv(6, 3, 9, 3, 2, Padding::Same, false, Activation::Relu6);
    check(
        &ctx,
        "conv 3x3/2 same relu6",
        &op,
        &rand_tensor(7, &[2, 3, 12, 9], 2.0),
        None,
    );
    // ResNet downsample: 1x1 stride 2 (direct, not the gemm path).
    let op = conv(
        8,
        6,
        10,
        1,
        2,
        explicit(0, 0, 0, 0),
        false,
        Activation::None,
    );
    check(
        &ctx,
        "conv 1x1/2",
        &op,
        &rand_tensor(9, &[2, 6, 7, 8], 1.0),
        None,
    );
    // Explicit asymmetric padding, stride 3.
    let op = conv(10, 4, 5, 5, 3, explicit(2, 0, 1, 3), false, r);
    check(
        &ctx,
        "conv 5x5/3 pad(2,0,1,3)",
        &op,
        &rand_tensor(11, &[1, 4, 11, 10], 1.0),
        None,
    );
}

#[test]
fn depthwise_matches_candle_grouped_conv() {
    let Some(ctx) = context() else { return };
    let r6 = Activation::Relu6;
    let op = conv(20, 6, 6, 3, 1, Padding::Same, true, r6);
    let x = rand_tensor(21, &[2, 6, 10, 7], 3.0);
    check(&ctx, "dw 3x3/1 same relu6", &op, &x, None);
    let res = rand_tensor(22, &[2, 6, 10, 7], 1.0);
    let op = conv(23, 6, 6, 3, 1, Padding::Same, true, Activation::None);
    check(&ctx, "dw 3x3/1 +res", &op, &x, Some(&res));
    let op = conv(24, 5, 5, 5, 2, Padding::Same, true, r6);
    check(
        &ctx,
        "dw 5x5/2 same relu6",
        &op,
        &rand_tensor(25, &[2, 5, 14, 9], 3.0),
        None,
    );
    let op = conv(26, 3, 3, 3, 2, explicit(1, 1, 1, 1), true, Activation::Relu);
    check(
        &ctx,
        "dw 3x3/2 pad 1 relu",
        &op,
        &rand_tensor(27, &[1, 3, 7, 7], 1.0),
        None,
    );
}

#[test]
fn gemm_pointwise_matches_candle() {
    let Some(ctx) = context() else { return };
    // M, K, N not multiples of the 64x64x16 tiles; a residual and ReLU6 in the epilogue.
    let op = conv(30, 37, 70, 1, 1, Padding::Same, false, Activation::Relu6);
    let x = rand_tensor(31, &[2, 37, 9, 7], 2.0);
    let res = rand_tensor(32, &[2, 70, 9, 7], 1.0);
    check(&ctx, "gemm 70x37x63 +res relu6", &op, &x, Some(&res));
    // Several tiles in every direction.
    let op = conv(
        33,
        150,
        130,
        1,
        1,
        explicit(0, 0, 0, 0),
        false,
        Activation::Relu,
    );
    check(
        &ctx,
        "gemm 130x150x196",
        &op,
        &rand_tensor(34, &[2, 150, 14, 14], 1.0),
        None,
    );
    // Tiny: one output channel, one pixel.
    let op = conv(35, 3, 1, 1, 1, Padding::Same, false, Activation::None);
    check(
        &ctx,
        "gemm 1x3x1",
        &op,
        &rand_tensor(36, &[1, 3, 1, 1], 1.0),
        None,
    );
}

#[test]
fn linear_matches_candle_matmul() {
    let Some(ctx) = context() else { return };
    for (i, (b, din, dout, act)) in [
        (3, 37, 19, Activation::None),
        (1, 1280, 1000, Activation::None),
        (2, 6, 5, Activation::Relu),
    ]
    .into_iter()
    .enumerate()
    {
        let s = 40 + 3 * i as u64;
        let op = Op::Linear(Linear {
            din,
            dout,
            weight: rand_tensor(s, &[dout, din], (3.0 / din as f32).sqrt()),
            bias: rand_tensor(s + 1, &[dout], 0.5),
            act,
        });
        let x = rand_tensor(s + 2, &[b, din], 2.0);
        check(&ctx, &format!("linear {b}x{din}->{dout}"), &op, &x, None);
    }
}

#[test]
fn max_pool_matches_candle_and_padding_never_wins() {
    let Some(ctx) = context() else { return };
    let op = Op::MaxPool(MaxPool {
        k: 3,
        stride: 2,
        padding: Padding::Explicit(Pad::uniform(1)),
    });
    // All values negative: a zero-padded pool would return 0 on the border.
    let x = (rand_tensor(50, &[2, 4, 9, 8], 1.0) - 5.0).unwrap();
    check(&ctx, "maxpool 3/2 pad 1 (negative input)", &op, &x, None);
    let y = ctx.run_op(&op, &x, None, Precision::F32).unwrap();
    assert!(max_abs(&y) >= 4.0, "padding leaked into the maximum");
    let op = Op::MaxPool(MaxPool {
        k: 2,
        stride: 2,
        padding: Padding::Same,
    });
    check(
        &ctx,
        "maxpool 2/2 same",
        &op,
        &rand_tensor(51, &[1, 3, 7, 5], 1.0),
        None,
    );
}

#[test]
fn global_avg_pool_matches_candle_mean() {
    let Some(ctx) = context() else { return };
    check(
        &ctx,
        "avgpool 7x3",
        &Op::GlobalAvgPool,
        &rand_tensor(60, &[2, 5, 7, 3], 1.0),
        None,
    );
    check(
        &ctx,
        "avgpool 1x1",
        &Op::GlobalAvgPool,
        &rand_tensor(61, &[1, 3, 1, 1], 1.0),
        None,
    );
    check(
        &ctx,
        "avgpool 16x16",
        &Op::GlobalAvgPool,
        &(rand_tensor(62, &[1, 9, 16, 16], 1.0) + 0.3).unwrap(),
        None,
    );
}

#[test]
fn bad_layer_inputs_are_errors() {
    let Some(ctx) = context() else { return };
    let op = conv(70, 4, 4, 3, 1, Padding::Same, false, Activation::None);
    let x = rand_tensor(71, &[1, 4, 5, 5], 1.0);
    let wrong_res = rand_tensor(72, &[1, 4, 4, 5], 1.0);
    let e = ctx
        .run_op(&op, &x, Some(&wrong_res), Precision::F32)
        .unwrap_err();
    assert!(e.to_string().contains("residual"), "{e}");
    let wrong_c = rand_tensor(73, &[1, 3, 5, 5], 1.0);
    let e = ctx.run_op(&op, &wrong_c, None, Precision::F32).unwrap_err();
    assert!(e.to_string().contains("channels"), "{e}");
    if !ctx.supports_f16() {
        let e = ctx.run_op(&op, &x, None, Precision::F16).unwrap_err();
        assert!(e.to_string().contains("shader-f16"), "{e}");
    }
}
