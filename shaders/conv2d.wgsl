// conv2d.wgsl: direct 2-D convolution, groups = 1, square k x k window, any stride, per-side
// zero padding (top/left given; bottom/right implied by the output size).
//   x (B,cin,h,w), bias (cout) -> y (B,cout,oh,ow)
//   y[b,co,oy,ox] = epilogue(sum_{ci,ky,kx} W[co,ci,ky,kx] * x[b,ci,oy*s+ky-pad_t,ox*s+kx-pad_l])
// Weights are packed at upload in blocks of 16 output channels:
//   wt[((blk * cin + ci) * k*k + ky*k + kx) * 16 + j] = W[16*blk + j, ci, ky, kx] (0 past cout).
// A workgroup computes 64 consecutive output pixels (one per invocation) x 16 output channels
// (workgroup_id.y = block) of one image (workgroup_id.z): every invocation loads one input
// value per tap and multiplies it with 16 weights that are the same for the whole workgroup.
// Dispatch: (ceil(oh*ow/64), ceil(cout/16), B).
// CPU reference: `run_op_cpu(Op::Conv)` (candle conv2d) in src/infer/plan.rs.

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let npix = P.oh * P.ow;
    let pix = wg.x * 64u + lid.x;
    let valid = pix < npix;
    let b = wg.z;
    let oy = pix / P.ow;
    let ox = pix % P.ow;
    let kk = P.k * P.k;
    let iy0 = i32(oy * P.stride) - i32(P.pad_t);
    let ix0 = i32(ox * P.stride) - i32(P.pad_l);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var ci = 0u; ci < P.cin; ci++) {
        let xc = (b * P.cin + ci) * P.h * P.w;
        let wc = (wg.y * P.cin + ci) * kk;
        for (var ky = 0u; ky < P.k; ky++) {
            let iy = iy0 + i32(ky);
            let row_ok = valid && iy >= 0 && iy < i32(P.h);
            let xrow = xc + u32(max(iy, 0)) * P.w;
            for (var kx = 0u; kx < P.k; kx++) {
                let ix = ix0 + i32(kx);
                var xv = 0.0;
                if (row_ok && ix >= 0 && ix < i32(P.w)) {
                    xv = f32(x[xrow + u32(ix)]);
                }
                let wi = (wc + ky * P.k + kx) * 16u;
                a0 += vec4<f32>(f32(wt[wi]), f32(wt[wi + 1u]), f32(wt[wi + 2u]), f32(wt[wi + 3u])) * xv;
                a1 += vec4<f32>(f32(wt[wi + 4u]), f32(wt[wi + 5u]), f32(wt[wi + 6u]), f32(wt[wi + 7u])) * xv;
                a2 += vec4<f32>(f32(wt[wi + 8u]), f32(wt[wi + 9u]), f32(wt[wi + 10u]), f32(wt[wi + 11u])) * xv;
                a3 += vec4<f32>(f32(wt[wi + 12u]), f32(wt[wi + 13u]), f32(wt[wi + 14u]), f32(wt[wi + 15u])) * xv;
            }
        }
    }
    if (!valid) {
        return;
    }
    var acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    let co0 = wg.y * 16u;
    for (var j = 0u; j < 16u; j++) {
        let co = co0 + j;
        if (co >= P.cout) {
            break;
        }
        let idx = ((b * P.cout + co) * P.oh + oy) * P.ow + ox;
        y[idx] = epilogue(acc[j / 4u][j % 4u], co, idx);
    }
}
