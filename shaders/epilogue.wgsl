// epilogue.wgsl: bindings of the kernels with weights (conv2d, depthwise, gemm, linear) and
// their fused epilogue  y = act(acc + bias[co] + res[idx]).
//
// CPU reference: `run_op_cpu` in src/infer/plan.rs (bias broadcast, `+ residual`,
// `Activation::apply`); exercised with every activation, with and without a residual, by
// tests/gpu_shaders.rs through each kernel that includes this file.

@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<T>;
@group(0) @binding(5) var<storage, read_write> y: array<T>;

fn epilogue(acc: f32, co: u32, idx: u32) -> T {
    var v = acc + bias[co];
    if (P.has_res != 0u) {
        v = v + f32(res[idx]);
    }
    if (P.act == 1u) {
        v = max(v, 0.0);
    } else if (P.act == 2u) {
        v = clamp(v, 0.0, 6.0);
    }
    return T(v);
}

// x[row + ix] as f32, or 0 outside 0 <= ix < P.w (zero padding).
fn x_at(row: u32, ix: i32) -> f32 {
    if (ix < 0 || ix >= i32(P.w)) {
        return 0.0;
    }
    return f32(x[row + u32(ix)]);
}
