// common.wgsl: the per-dispatch parameter block every kernel reads, and grid helpers.
//
// Every kernel's source is assembled by src/gpu/mod.rs as
//     header (`alias T = f32;` or `enable f16; alias T = f16;`) + common.wgsl
//     [+ epilogue.wgsl for kernels with weights] + the kernel file,
// so storage arrays hold `T` (f32, or f16 on adapters with `shader-f16`) while every kernel
// accumulates in f32. Tensors are NCHW, row-major, one image after the other.

struct Params {
    batch: u32,    // images in the batch
    cin: u32,      // input channels (GEMM: K; linear: input features)
    h: u32,        // input height
    w: u32,        // input width
    cout: u32,     // output channels (GEMM: M; linear: output features)
    oh: u32,       // output height
    ow: u32,       // output width
    k: u32,        // square window side
    stride: u32,
    pad_t: u32,    // zero rows above the input
    pad_l: u32,    // zero columns left of the input
    act: u32,      // 0 none, 1 ReLU, 2 ReLU6
    has_res: u32,  // 1: add `res` (same index as the output) before the activation
    row: u32,      // invocations per row of a 2-D dispatch grid: id = gid.x + gid.y * row
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;

// Linear invocation index of a (possibly 2-D) dispatch of 1-D workgroups.
fn linear_id(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * P.row;
}
