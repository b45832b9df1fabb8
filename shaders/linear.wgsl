// linear.wgsl: fully connected layer on rows (classifier head, folded linear probe).
//   x (B,din), wt (dout,din), bias (dout) -> y (B,dout) = epilogue(x . wt^T)   (no residual)
// One invocation per output element, 4 partial sums over the input to shorten the dependency
// chain. Dispatch: 1-D workgroups of 64 over B * dout (2-D grid when large).
// CPU reference: `run_op_cpu(Op::Linear)` (candle matmul) in src/infer/plan.rs.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let id = linear_id(gid);
    if (id >= P.batch * P.cout) {
        return;
    }
    let b = id / P.cout;
    let o = id % P.cout;
    let xb = b * P.cin;
    let wo = o * P.cin;
    var acc = vec4<f32>(0.0);
    let n4 = P.cin / 4u;
    for (var i = 0u; i < n4; i++) {
        let j = 4u * i;
        acc += vec4<f32>(f32(x[xb + j]), f32(x[xb + j + 1u]), f32(x[xb + j + 2u]), f32(x[xb + j + 3u]))
             * vec4<f32>(f32(wt[wo + j]), f32(wt[wo + j + 1u]), f32(wt[wo + j + 2u]), f32(wt[wo + j + 3u]));
    }
    var sum = acc.x + acc.y + acc.z + acc.w;
    for (var j = 4u * n4; j < P.cin; j++) {
        sum += f32(x[xb + j]) * f32(wt[wo + j]);
    }
    y[id] = epilogue(sum, o, id);
}
