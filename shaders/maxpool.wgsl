// maxpool.wgsl: max-pooling over k x k windows with stride and padding; padded positions never
// win (every window holds at least one real pixel, which the plan checks: pad < k).
//   x (B,C,h,w) -> y (B,C,oh,ow),  y[b,c,oy,ox] = max over the window of x.
// One invocation per output element; dispatch: 1-D workgroups of 64 over B*C*oh*ow.
// CPU reference: `run_op_cpu(Op::MaxPool)` (padding with -inf, candle max_pool2d).

@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let id = linear_id(gid);
    if (id >= P.batch * P.cout * P.oh * P.ow) {
        return;
    }
    let ox = id % P.ow;
    let oy = (id / P.ow) % P.oh;
    let bc = id / (P.ow * P.oh);
    let xc = bc * P.h * P.w;
    let iy0 = i32(oy * P.stride) - i32(P.pad_t);
    let ix0 = i32(ox * P.stride) - i32(P.pad_l);
    var m = -3.0e38;
    for (var ky = 0u; ky < P.k; ky++) {
        let iy = iy0 + i32(ky);
        if (iy < 0 || iy >= i32(P.h)) {
            continue;
        }
        for (var kx = 0u; kx < P.k; kx++) {
            let ix = ix0 + i32(kx);
            if (ix >= 0 && ix < i32(P.w)) {
                m = max(m, f32(x[xc + u32(iy) * P.w + u32(ix)]));
            }
        }
    }
    y[id] = T(m);
}
