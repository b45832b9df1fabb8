// depthwise.wgsl: depthwise 2-D convolution (one k x k filter per channel), any stride,
// per-side zero padding (top/left given; bottom/right implied by the output size).
//   x (B,C,h,w), wt (C,1,k,k), bias (C) -> y (B,C,oh,ow)
//   y[b,c,oy,ox] = epilogue(sum_{ky,kx} wt[c,ky,kx] * x[b,c,oy*s+ky-pad_t,ox*s+kx-pad_l])
// Each invocation computes 4 consecutive output columns of one row of one channel.
// Dispatch: 1-D workgroups of 64 over C * oh * ceil(ow/4) tiles (2-D grid when large),
// gid.z = image. CPU reference: `run_op_cpu(Op::Conv)` with `depthwise` (candle grouped conv2d).

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let tiles_x = (P.ow + 3u) / 4u;
    let per_c = tiles_x * P.oh;
    let id = linear_id(gid);
    if (id >= per_c * P.cout) {
        return;
    }
    let b = gid.z;
    let c = id / per_c;
    let t = id % per_c;
    let oy = t / tiles_x;
    let ox0 = (t % tiles_x) * 4u;
    let xc = (b * P.cin + c) * P.h * P.w;
    let wc = c * P.k * P.k;
    let iy0 = i32(oy * P.stride) - i32(P.pad_t);
    let ix0 = i32(ox0 * P.stride) - i32(P.pad_l);
    let s = i32(P.stride);
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < P.k; ky++) {
        let iy = iy0 + i32(ky);
        if (iy < 0 || iy >= i32(P.h)) {
            continue;
        }
        let xrow = xc + u32(iy) * P.w;
        for (var kx = 0u; kx < P.k; kx++) {
            let ix = ix0 + i32(kx);
            let xv = vec4<f32>(x_at(xrow, ix), x_at(xrow, ix + s), x_at(xrow, ix + 2 * s),
                               x_at(xrow, ix + 3 * s));
            acc += f32(wt[wc + ky * P.k + kx]) * xv;
        }
    }
    let base = ((b * P.cout + c) * P.oh + oy) * P.ow;
    for (var p = 0u; p < 4u; p++) {
        let ox = ox0 + p;
        if (ox < P.ow) {
            y[base + ox] = epilogue(acc[p], c, base + ox);
        }
    }
}
