// conv2d.wgsl: direct 2-D convolution, groups = 1, square k x k window, any stride, per-side
// zero padding (top/left given; bottom/right implied by the output size).
//   x (B,cin,h,w), wt (cout,cin,k,k), bias (cout) -> y (B,cout,oh,ow)
//   y[b,co,oy,ox] = epilogue(sum_{ci,ky,kx} wt[co,ci,ky,kx] * x[b,ci,oy*s+ky-pad_t,ox*s+kx-pad_l])
// Each invocation computes 4 output channels x 4 consecutive output columns of one row
// (register blocking: 16 FMAs per 4 weight + 4 input loads). Dispatch: 1-D workgroups of 64
// over ceil(cout/4) * oh * ceil(ow/4) tiles (2-D grid when large), gid.z = image.
// CPU reference: `run_op_cpu(Op::Conv)` (candle conv2d) in src/infer/plan.rs.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let tiles_x = (P.ow + 3u) / 4u;
    let tiles_px = tiles_x * P.oh;
    let id = linear_id(gid);
    if (id >= tiles_px * ((P.cout + 3u) / 4u)) {
        return;
    }
    let b = gid.z;
    let co0 = (id / tiles_px) * 4u;
    let t = id % tiles_px;
    let oy = t / tiles_x;
    let ox0 = (t % tiles_x) * 4u;
    let kk = P.k * P.k;
    let wrow = P.cin * kk;
    // Rows of the weight for the 4 channels (clamped: results of channels >= cout are dropped).
    let w0 = min(co0, P.cout - 1u) * wrow;
    let w1 = min(co0 + 1u, P.cout - 1u) * wrow;
    let w2 = min(co0 + 2u, P.cout - 1u) * wrow;
    let w3 = min(co0 + 3u, P.cout - 1u) * wrow;
    let iy0 = i32(oy * P.stride) - i32(P.pad_t);
    let ix0 = i32(ox0 * P.stride) - i32(P.pad_l);
    let s = i32(P.stride);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var ci = 0u; ci < P.cin; ci++) {
        let xc = (b * P.cin + ci) * P.h * P.w;
        for (var ky = 0u; ky < P.k; ky++) {
            let iy = iy0 + i32(ky);
            if (iy < 0 || iy >= i32(P.h)) {
                continue;
            }
            let xrow = xc + u32(iy) * P.w;
            let wk = ci * kk + ky * P.k;
            for (var kx = 0u; kx < P.k; kx++) {
                let ix = ix0 + i32(kx);
                let xv = vec4<f32>(x_at(xrow, ix), x_at(xrow, ix + s), x_at(xrow, ix + 2 * s),
                                   x_at(xrow, ix + 3 * s));
                let wi = wk + kx;
                a0 += f32(wt[w0 + wi]) * xv;
                a1 += f32(wt[w1 + wi]) * xv;
                a2 += f32(wt[w2 + wi]) * xv;
                a3 += f32(wt[w3 + wi]) * xv;
            }
        }
    }
    var acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var j = 0u; j < 4u; j++) {
        let co = co0 + j;
        if (co >= P.cout) {
            break;
        }
        let base = ((b * P.cout + co) * P.oh + oy) * P.ow;
        for (var p = 0u; p < 4u; p++) {
            let ox = ox0 + p;
            if (ox < P.ow) {
                y[base + ox] = epilogue(acc[j][p], co, base + ox);
            }
        }
    }
}
