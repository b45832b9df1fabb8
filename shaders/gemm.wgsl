// gemm.wgsl: tiled matrix product with workgroup shared memory, batched over images; runs the
// 1x1 stride-1 convolutions (pointwise: expand / project / head of EfficientNet).
//   A = wt (M,K) row-major (M = cout, K = cin), B_b = x[b] (K,N) row-major (N = h*w),
//   y[b] (M,N) = epilogue(A . B_b), bias per row m, residual at the same index.
// Tiles: 64 (M) x 64 (N) outputs per workgroup of 16 x 16 invocations, K in steps of 16 staged
// in shared memory as vec4s; each invocation accumulates a 4 x 4 block in registers (f32).
// Dispatch: (ceil(N/64), ceil(M/64), B). CPU reference: `run_op_cpu(Op::Conv)` with k = 1
// (candle conv2d, i.e. a matrix product) in src/infer/plan.rs.

const TK: u32 = 16u;

var<workgroup> a_tile: array<vec4<f32>, 256>; // [k][m/4], TK x 16
var<workgroup> b_tile: array<vec4<f32>, 256>; // [k][n/4], TK x 16

fn a_at(m: u32, k: u32) -> f32 {
    if (m < P.cout && k < P.cin) {
        return f32(wt[m * P.cin + k]);
    }
    return 0.0;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let m_total = P.cout;
    let k_total = P.cin;
    let n_total = P.h * P.w;
    let m0 = wg.y * 64u;
    let n0 = wg.x * 64u;
    let b = wg.z;
    let xb = b * k_total * n_total;
    // This invocation's share of each tile load: row lk (of 16) and column group lq (of 16).
    let lk = li / 16u;
    let lq = li % 16u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k_total; k0 += TK) {
        let ka = k0 + lk;
        let ma = m0 + 4u * lq;
        a_tile[li] = vec4<f32>(a_at(ma, ka), a_at(ma + 1u, ka), a_at(ma + 2u, ka), a_at(ma + 3u, ka));
        var bv = vec4<f32>(0.0);
        let nb = n0 + 4u * lq;
        if (ka < k_total) {
            let row = xb + ka * n_total;
            for (var j = 0u; j < 4u; j++) {
                if (nb + j < n_total) {
                    bv[j] = f32(x[row + nb + j]);
                }
            }
        }
        b_tile[li] = bv;
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = a_tile[kk * 16u + lid.y];
            let bb = b_tile[kk * 16u + lid.x];
            c0 += a.x * bb;
            c1 += a.y * bb;
            c2 += a.z * bb;
            c3 += a.w * bb;
        }
        workgroupBarrier();
    }
    var acc = array<vec4<f32>, 4>(c0, c1, c2, c3);
    let yb = b * m_total * n_total;
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + 4u * lid.y + i;
        if (m >= m_total) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + 4u * lid.x + j;
            if (n < n_total) {
                let idx = yb + m * n_total + n;
                y[idx] = epilogue(acc[i][j], m, idx);
            }
        }
    }
}
