// avgpool.wgsl: global average pooling.
//   x (B,C,h,w) -> y (B,C),  y[b,c] = mean over h*w of x[b,c].
// One invocation per (image, channel), summed in f32; dispatch: 1-D workgroups of 64 over B*C.
// CPU reference: `run_op_cpu(Op::GlobalAvgPool)` (candle mean over dims 2, 3).

@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let id = linear_id(gid);
    if (id >= P.batch * P.cin) {
        return;
    }
    let n = P.h * P.w;
    let base = id * n;
    var acc = vec4<f32>(0.0);
    let n4 = n / 4u;
    for (var i = 0u; i < n4; i++) {
        let j = base + 4u * i;
        acc += vec4<f32>(f32(x[j]), f32(x[j + 1u]), f32(x[j + 2u]), f32(x[j + 3u]));
    }
    var sum = acc.x + acc.y + acc.z + acc.w;
    for (var j = 4u * n4; j < n; j++) {
        sum += f32(x[base + j]);
    }
    y[id] = T(sum / f32(n));
}
