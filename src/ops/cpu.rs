//! CPU kernels behind [`crate::ops`]: convolution by im2col / col2im + GEMM (the `gemm` crate
//! candle itself uses), direct depthwise kernels, and the helpers that move data between candle
//! storages and slices. Generic over `f32` and `f64` (f64 serves finite-difference checks).
//!
//! Threading: work is split over chunks of the batch with rayon when there are at least as many
//! chunks as threads (each chunk runs single-threaded GEMMs on its own buffers); otherwise (batch-1
//! inference) the chunks run one after the other and each GEMM uses all threads.

use candle_core::{CpuStorage, Layout, Storage, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The element types the CPU kernels run on: `f32` and `f64`.
pub trait Float: WithDType + sealed::Sealed {}
impl Float for f32 {}
impl Float for f64 {}

/// Columns of the im2col matrix one GEMM aims at (several samples share a GEMM when their
/// output planes are small).
const TARGET_COLS: usize = 1024;
/// Upper bound of one im2col buffer, in elements (8 MB of f32).
const COL_CAP: usize = 1 << 21;

/// The contiguous slice of a CPU storage that `layout` describes.
pub(crate) fn cpu_slice<'a, T: Float>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: the CPU kernel needs a contiguous tensor"),
    }
}

/// Runs `f` on the contiguous CPU data of `t` (an error on other devices or layouts).
pub(crate) fn with_cpu_slice<T: Float, R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(cpu_slice::<T>(s, layout, what)?),
        _ => candle_core::bail!("{what}: the CPU kernel got a tensor on another device"),
    }
}

/// Keeps freed memory in the process instead of returning it to the kernel (glibc only; a no-op
/// elsewhere). A training step allocates and frees the same large activation buffers every
/// time; glibc serves blocks above its mmap threshold (at most 32 MB) with fresh `mmap`s, so
/// every step pays page faults and page zeroing for them (a quarter of a small-cnn step on 2
/// cores). This turns `mmap` allocation off and raises the trim threshold, so those buffers are
/// reused from the heap. It changes process-wide allocator settings: the `cromo` binary and the
/// benchmarks call it at start-up; a library user decides for their own program. Returns
/// whether the settings were applied.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            let a = libc::mallopt(libc::M_MMAP_MAX, 0);
            let b = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            a == 1 && b == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Number of threads of the current rayon pool.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

fn inner_parallelism() -> Parallelism {
    match threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// A strided read-only matrix view: element (i, j) at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    pub fn new(data: &'a [T], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }
}

/// `dst (m×n, row stride dst_rs, unit column stride) = [dst +] a (m×k) · b (k×n)`.
/// Panics when a view is too short for its shape (a bug in the caller, never bad user input:
/// shapes are validated before the kernels run).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "gemm: dst too short");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(T::zero());
            }
        }
        return;
    }
    assert!(
        (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(),
        "gemm: lhs too short"
    );
    assert!(
        (k - 1) * b.rs + (n - 1) * b.cs < b.data.len(),
        "gemm: rhs too short"
    );
    // SAFETY: every index the GEMM touches lies inside the slices (checked above); dst does not
    // alias the inputs (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// Shapes of one 2-D convolution, NCHW input (b, cin, h, w), weight (cout, cin/groups, kh, kw).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub b: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// Zero rows above / columns left of the input (bottom / right padding only enters `oh`, `ow`).
    pub pt: usize,
    pub pl: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of the im2col matrix of one group.
    fn kdim(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    /// Output pixels per plane.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// One output channel per input channel, each with its own filter.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.cin && self.cout == self.cin && self.groups > 1
    }
    /// 1×1, stride 1, no padding: the input plane already is the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == 1
            && self.pt == 0
            && self.pl == 0
            && self.oh == self.h
            && self.ow == self.w
    }
    /// Output columns `[ox0, ox1)` whose input column `ox*s + kj - pl` lies inside the image.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        valid_range(self.ow, self.stride, kj, self.pl, self.w)
    }
    fn valid_rows(&self, ki: usize) -> (usize, usize) {
        valid_range(self.oh, self.stride, ki, self.pt, self.h)
    }
}

/// Outputs `o` in `[o0, o1)` with `0 <= o*s + k - pad < size`.
fn valid_range(out: usize, s: usize, k: usize, pad: usize, size: usize) -> (usize, usize) {
    let o0 = if pad > k { (pad - k).div_ceil(s) } else { 0 };
    let o1 = if size + pad > k {
        ((size + pad - k - 1) / s + 1).min(out)
    } else {
        0
    };
    (o0.min(o1), o1)
}

/// How the batch is cut into chunks of `nb` samples.
struct Plan {
    nb: usize,
    chunks: usize,
    outer: bool,
}

impl Plan {
    fn new(g: &ConvGeom) -> Self {
        let p = g.p().max(1);
        let threads = threads();
        let mut nb = (TARGET_COLS / p).max(1);
        while nb > 1 && g.kdim() * nb * p > COL_CAP {
            nb /= 2;
        }
        // Leave at least two chunks per thread when the batch allows it.
        nb = nb.min(g.b.div_ceil(2 * threads).max(1)).max(1);
        let chunks = g.b.div_ceil(nb);
        Plan {
            nb,
            chunks,
            outer: threads > 1 && chunks >= threads,
        }
    }
    fn par(&self) -> Parallelism {
        if self.outer {
            Parallelism::None
        } else {
            inner_parallelism()
        }
    }
}

/// Writes the im2col rows of channels `c0..c0 + cin_g` of one sample `x` (cin, h, w) into
/// `col[row * ncols + off ..][..p]`, row = (c * kh + ki) * kw + kj.
fn im2col<T: Float>(x: &[T], g: &ConvGeom, c0: usize, col: &mut [T], ncols: usize, off: usize) {
    let (h, w, ow, s, p) = (g.h, g.w, g.ow, g.stride, g.p());
    for c in 0..g.cin_g() {
        let plane = &x[(c0 + c) * h * w..][..h * w];
        for ki in 0..g.kh {
            let (oy0, oy1) = g.valid_rows(ki);
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let dst = &mut col[row * ncols + off..][..p];
                let (ox0, ox1) = g.valid_cols(kj);
                dst[..oy0 * ow].fill(T::zero());
                dst[oy1 * ow..].fill(T::zero());
                for oy in oy0..oy1 {
                    let d = &mut dst[oy * ow..][..ow];
                    let iy = oy * s + ki - g.pt;
                    let src = &plane[iy * w..][..w];
                    d[..ox0].fill(T::zero());
                    d[ox1..].fill(T::zero());
                    if ox1 > ox0 {
                        let ix0 = ox0 * s + kj - g.pl;
                        if s == 1 {
                            d[ox0..ox1].copy_from_slice(&src[ix0..ix0 + ox1 - ox0]);
                        } else {
                            for (o, v) in d[ox0..ox1].iter_mut().zip(src[ix0..].iter().step_by(s)) {
                                *o = *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds the im2col rows `col[row * ncols + off ..][..p]` back into channels `c0..c0 + cin_g`
/// of one sample's gradient `dx` (cin, h, w): the adjoint of [`im2col`].
fn col2im<T: Float>(col: &[T], g: &ConvGeom, c0: usize, ncols: usize, off: usize, dx: &mut [T]) {
    let (h, w, ow, s, p) = (g.h, g.w, g.ow, g.stride, g.p());
    for c in 0..g.cin_g() {
        let plane = &mut dx[(c0 + c) * h * w..][..h * w];
        for ki in 0..g.kh {
            let (oy0, oy1) = g.valid_rows(ki);
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let src = &col[row * ncols + off..][..p];
                let (ox0, ox1) = g.valid_cols(kj);
                if ox1 <= ox0 {
                    continue;
                }
                for oy in oy0..oy1 {
                    let sr = &src[oy * ow + ox0..oy * ow + ox1];
                    let iy = oy * s + ki - g.pt;
                    let ix0 = ox0 * s + kj - g.pl;
                    let d = &mut plane[iy * w..][..w];
                    if s == 1 {
                        for (o, v) in d[ix0..ix0 + sr.len()].iter_mut().zip(sr) {
                            *o += *v;
                        }
                    } else {
                        for (o, v) in d[ix0..].iter_mut().step_by(s).zip(sr) {
                            *o += *v;
                        }
                    }
                }
            }
        }
    }
}

/// Per-worker scratch of the GEMM path.
struct Bufs<T> {
    col: Vec<T>,
    tmp: Vec<T>,
}

impl<T: Float> Bufs<T> {
    fn new() -> Self {
        Self {
            col: Vec::new(),
            tmp: Vec::new(),
        }
    }
}

fn sized<T: Float>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::zero());
    }
    &mut v[..n]
}

/// Convolution forward: x (b, cin, h, w), w (cout, cin/groups, kh, kw) -> (b, cout, oh, ow).
pub(crate) fn conv2d_fwd<T: Float>(x: &[T], wt: &[T], g: &ConvGeom) -> Vec<T> {
    if g.is_depthwise() {
        return depthwise_fwd(x, wt, g);
    }
    let (p, cout) = (g.p(), g.cout);
    let mut y = vec![T::zero(); g.b * cout * p];
    if y.is_empty() {
        return y;
    }
    let plan = Plan::new(g);
    let par = plan.par();
    let body = |ci: usize, yc: &mut [T], bufs: &mut Bufs<T>| {
        let s0 = ci * plan.nb;
        let nbc = yc.len() / (cout * p);
        let (cin_g, cout_g, k) = (g.cin_g(), g.cout_g(), g.kdim());
        let ncols = nbc * p;
        for gi in 0..g.groups {
            let wg = Mat::new(&wt[gi * cout_g * k..], k, 1);
            if nbc == 1 && g.is_pointwise() {
                let xs = &x[s0 * g.cin * g.hw() + gi * cin_g * p..];
                let dst = &mut yc[gi * cout_g * p..];
                gemm(cout_g, p, k, dst, p, false, wg, Mat::new(xs, p, 1), par);
                continue;
            }
            let col = sized(&mut bufs.col, k * ncols);
            for j in 0..nbc {
                let xs = &x[(s0 + j) * g.cin * g.hw()..][..g.cin * g.hw()];
                im2col(xs, g, gi * cin_g, col, ncols, j * p);
            }
            let col = Mat::new(&*col, ncols, 1);
            if nbc == 1 {
                let dst = &mut yc[gi * cout_g * p..];
                gemm(cout_g, p, k, dst, p, false, wg, col, par);
            } else {
                let tmp = sized(&mut bufs.tmp, cout_g * ncols);
                gemm(cout_g, ncols, k, tmp, ncols, false, wg, col, par);
                for j in 0..nbc {
                    for m in 0..cout_g {
                        let d = &mut yc[(j * cout + gi * cout_g + m) * p..][..p];
                        d.copy_from_slice(&tmp[m * ncols + j * p..][..p]);
                    }
                }
            }
        }
    };
    let chunk = plan.nb * cout * p;
    if plan.outer {
        y.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(Bufs::new, |bufs, (ci, yc)| body(ci, yc, bufs));
    } else {
        let mut bufs = Bufs::new();
        for (ci, yc) in y.chunks_mut(chunk).enumerate() {
            body(ci, yc, &mut bufs);
        }
    }
    y
}

/// Per-worker state of the backward pass: scratch and this worker's share of dW.
struct BwdState<T> {
    bufs: Bufs<T>,
    dyt: Vec<T>,
    dw: Vec<T>,
}

/// Convolution backward: from dy (b, cout, oh, ow) the gradients of the input (when `need_dx`)
/// and of the weight (when `need_dw`).
pub(crate) fn conv2d_bwd<T: Float>(
    x: &[T],
    wt: &[T],
    dy: &[T],
    g: &ConvGeom,
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    if g.is_depthwise() {
        let dx = need_dx.then(|| depthwise_bwd_data(wt, dy, g));
        let dw = need_dw.then(|| depthwise_bwd_filter(x, dy, g));
        return (dx, dw);
    }
    if !need_dx && !need_dw {
        return (None, None);
    }
    let (p, cout, cin, hw) = (g.p(), g.cout, g.cin, g.hw());
    let (cin_g, cout_g, k) = (g.cin_g(), g.cout_g(), g.kdim());
    let wlen = cout * k;
    let plan = Plan::new(g);
    let par = plan.par();
    let new_state = || BwdState {
        bufs: Bufs::new(),
        dyt: Vec::new(),
        dw: if need_dw {
            vec![T::zero(); wlen]
        } else {
            Vec::new()
        },
    };
    let body = |ci: usize, mut dxc: Option<&mut [T]>, st: &mut BwdState<T>| {
        let s0 = ci * plan.nb;
        let nbc = plan.nb.min(g.b - s0);
        let ncols = nbc * p;
        let pointwise = nbc == 1 && g.is_pointwise();
        for gi in 0..g.groups {
            // dY of this group and chunk as a (cout_g × ncols) matrix.
            let dyg: Mat<'_, T> = if nbc == 1 {
                Mat::new(&dy[s0 * cout * p + gi * cout_g * p..], p, 1)
            } else {
                let t = sized(&mut st.dyt, cout_g * ncols);
                for j in 0..nbc {
                    for m in 0..cout_g {
                        t[m * ncols + j * p..][..p]
                            .copy_from_slice(&dy[((s0 + j) * cout + gi * cout_g + m) * p..][..p]);
                    }
                }
                Mat::new(&*t, ncols, 1)
            };
            if need_dw {
                let dwg = &mut st.dw[gi * cout_g * k..][..cout_g * k];
                if pointwise {
                    let xs = &x[s0 * cin * hw + gi * cin_g * p..];
                    gemm(cout_g, k, p, dwg, k, true, dyg, Mat::new(xs, 1, p), par);
                } else {
                    let col = sized(&mut st.bufs.col, k * ncols);
                    for j in 0..nbc {
                        let xs = &x[(s0 + j) * cin * hw..][..cin * hw];
                        im2col(xs, g, gi * cin_g, col, ncols, j * p);
                    }
                    let colt = Mat::new(&*col, 1, ncols);
                    gemm(cout_g, k, ncols, dwg, k, true, dyg, colt, par);
                }
            }
            if let Some(dxc) = dxc.as_deref_mut() {
                let wgt = Mat::new(&wt[gi * cout_g * k..], 1, k);
                if pointwise {
                    let dst = &mut dxc[gi * cin_g * p..];
                    gemm(k, p, cout_g, dst, p, false, wgt, dyg, par);
                } else {
                    let dcol = sized(&mut st.bufs.tmp, k * ncols);
                    gemm(k, ncols, cout_g, dcol, ncols, false, wgt, dyg, par);
                    for j in 0..nbc {
                        let dxs = &mut dxc[j * cin * hw..][..cin * hw];
                        col2im(dcol, g, gi * cin_g, ncols, j * p, dxs);
                    }
                }
            }
        }
    };
    let add = |mut a: Vec<T>, b: Vec<T>| {
        for (x, y) in a.iter_mut().zip(&b) {
            *x += *y;
        }
        a
    };
    let mut dx = need_dx.then(|| vec![T::zero(); g.b * cin * hw]);
    let chunk = plan.nb * cin * hw;
    // With the batch split over threads, each chunk's share of dW is computed into its own
    // buffer and the shares are summed in chunk order: the result does not depend on which
    // thread ran which chunk, so training is bit-reproducible (exact resume needs that).
    let in_order = |parts: Vec<Vec<T>>| {
        parts
            .into_iter()
            .reduce(|a, b| if a.is_empty() { b } else { add(a, b) })
            .unwrap_or_default()
    };
    let fresh = |st: &mut BwdState<T>| {
        if need_dw {
            st.dw.clear();
            st.dw.resize(wlen, T::zero());
        }
    };
    let dw = match (&mut dx, plan.outer) {
        (Some(dx), true) => in_order(
            dx.par_chunks_mut(chunk)
                .enumerate()
                .map_init(new_state, |st, (ci, dxc)| {
                    fresh(st);
                    body(ci, Some(dxc), st);
                    std::mem::take(&mut st.dw)
                })
                .collect(),
        ),
        (None, true) => in_order(
            (0..plan.chunks)
                .into_par_iter()
                .map_init(new_state, |st, ci| {
                    fresh(st);
                    body(ci, None, st);
                    std::mem::take(&mut st.dw)
                })
                .collect(),
        ),
        (Some(dx), false) => {
            let mut st = new_state();
            for (ci, dxc) in dx.chunks_mut(chunk).enumerate() {
                body(ci, Some(dxc), &mut st);
            }
            st.dw
        }
        (None, false) => {
            let mut st = new_state();
            for ci in 0..plan.chunks {
                body(ci, None, &mut st);
            }
            st.dw
        }
    };
    let dw = need_dw.then(|| {
        if dw.len() == wlen {
            dw
        } else {
            vec![T::zero(); wlen]
        }
    });
    (dx, dw)
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution (groups == channels, one k×k filter per channel).
//
// Each input plane is copied, zero-padded, into a scratch split into `s` column phases
// (phase q holds padded columns q, q+s, q+2s, …), so that for every tap (i, j) the inputs of an
// output row are one contiguous run: phase j % s, row oy*s + i, columns j/s .. j/s + ow. The inner
// loops are then unit-stride multiply-adds that the compiler vectorises, for any k and stride.

/// Extents of the phase-split padded plane: (rows, columns per phase).
fn dw_scratch_dims(g: &ConvGeom) -> (usize, usize) {
    let hp = (g.oh - 1) * g.stride + g.kh;
    let wp = (g.ow - 1) * g.stride + g.kw;
    (hp, wp.div_ceil(g.stride))
}

/// Fills `scr` (s phases of hp × wq) with the padded plane `x` (h × w).
fn dw_fill<T: Float>(x: &[T], g: &ConvGeom, scr: &mut [T]) {
    let (hp, wq) = dw_scratch_dims(g);
    let s = g.stride;
    scr.fill(T::zero());
    for r in 0..hp {
        let Some(iy) = r.checked_sub(g.pt).filter(|&iy| iy < g.h) else {
            continue;
        };
        let src = &x[iy * g.w..][..g.w];
        for (ix, &v) in src.iter().enumerate() {
            let c = ix + g.pl;
            let (q, t) = (c % s, c / s);
            if t < wq {
                scr[(q * hp + r) * wq + t] = v;
            }
        }
    }
}

/// Planes per parallel task so that each task has a few thousand outputs of work.
fn planes_per_task(g: &ConvGeom) -> usize {
    (4096 / g.p().max(1)).clamp(1, 64)
}

fn depthwise_fwd<T: Float>(x: &[T], wt: &[T], g: &ConvGeom) -> Vec<T> {
    let (c, p, hw, s) = (g.cin, g.p(), g.hw(), g.stride);
    let (hp, wq) = dw_scratch_dims(g);
    let kk = g.kh * g.kw;
    let mut y = vec![T::zero(); g.b * c * p];
    if y.is_empty() {
        return y;
    }
    let ppt = planes_per_task(g);
    y.par_chunks_mut(ppt * p).enumerate().for_each_init(
        || vec![T::zero(); s * hp * wq],
        |scr, (ti, yc)| {
            for (q, yp) in yc.chunks_mut(p).enumerate() {
                let plane = ti * ppt + q;
                let ch = plane % c;
                dw_fill(&x[plane * hw..][..hw], g, scr);
                let wc = &wt[ch * kk..][..kk];
                for oy in 0..g.oh {
                    let out = &mut yp[oy * g.ow..][..g.ow];
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let wv = wc[i * g.kw + j];
                            let src = &scr[((j % s) * hp + oy * s + i) * wq + j / s..][..g.ow];
                            for (o, &v) in out.iter_mut().zip(src) {
                                *o += wv * v;
                            }
                        }
                    }
                }
            }
        },
    );
    y
}

fn depthwise_bwd_data<T: Float>(wt: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let (c, p, hw, s) = (g.cin, g.p(), g.hw(), g.stride);
    let (hp, wq) = dw_scratch_dims(g);
    let kk = g.kh * g.kw;
    let mut dx = vec![T::zero(); g.b * c * hw];
    if dx.is_empty() {
        return dx;
    }
    let ppt = planes_per_task(g);
    dx.par_chunks_mut(ppt * hw).enumerate().for_each_init(
        || vec![T::zero(); s * hp * wq],
        |scr, (ti, dxc)| {
            for (q, dxp) in dxc.chunks_mut(hw).enumerate() {
                let plane = ti * ppt + q;
                let ch = plane % c;
                let wc = &wt[ch * kk..][..kk];
                let dyp = &dy[plane * p..][..p];
                scr.fill(T::zero());
                for oy in 0..g.oh {
                    let d = &dyp[oy * g.ow..][..g.ow];
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let wv = wc[i * g.kw + j];
                            let dst = &mut scr[((j % s) * hp + oy * s + i) * wq + j / s..][..g.ow];
                            for (o, &v) in dst.iter_mut().zip(d) {
                                *o += wv * v;
                            }
                        }
                    }
                }
                // Un-pad: input pixel (iy, ix) sits at padded (iy + pt, ix + pl).
                for iy in 0..g.h {
                    let r = iy + g.pt;
                    let row = &mut dxp[iy * g.w..][..g.w];
                    if r >= hp {
                        row.fill(T::zero());
                        continue;
                    }
                    for (ix, o) in row.iter_mut().enumerate() {
                        let cc = ix + g.pl;
                        let (qq, t) = (cc % s, cc / s);
                        *o = if t < wq {
                            scr[(qq * hp + r) * wq + t]
                        } else {
                            T::zero()
                        };
                    }
                }
            }
        },
    );
    dx
}

fn depthwise_bwd_filter<T: Float>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let (c, p, hw, s) = (g.cin, g.p(), g.hw(), g.stride);
    let (hp, wq) = dw_scratch_dims(g);
    let kk = g.kh * g.kw;
    let mut dw = vec![T::zero(); c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each_init(
        || vec![T::zero(); s * hp * wq],
        |scr, (ch, dwc)| {
            let mut acc = vec![0f64; kk];
            for b in 0..g.b {
                let plane = b * c + ch;
                dw_fill(&x[plane * hw..][..hw], g, scr);
                let dyp = &dy[plane * p..][..p];
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let mut sum = T::zero();
                        for oy in 0..g.oh {
                            let d = &dyp[oy * g.ow..][..g.ow];
                            let src = &scr[((j % s) * hp + oy * s + i) * wq + j / s..][..g.ow];
                            sum += dot(d, src);
                        }
                        acc[i * g.kw + j] += sum.to_f64();
                    }
                }
            }
            for (o, a) in dwc.iter_mut().zip(acc) {
                *o = T::from_f64(a);
            }
        },
    );
    dw
}

/// Dot product with 8 independent accumulators (vectorisable, and more accurate than one chain).
pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = T::zero();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += *x * *y;
    }
    acc.iter().fold(s, |t, &v| t + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for out in 1..7 {
            for s in 1..4 {
                for k in 0..5 {
                    for pad in 0..4 {
                        for size in 1..9 {
                            let want: Vec<usize> = (0..out)
                                .filter(|&o| {
                                    let i = (o * s + k) as isize - pad as isize;
                                    i >= 0 && (i as usize) < size
                                })
                                .collect();
                            let (a, b) = valid_range(out, s, k, pad, size);
                            let got: Vec<usize> = (a..b).collect();
                            assert_eq!(got, want, "out {out} s {s} k {k} pad {pad} size {size}");
                        }
                    }
                }
            }
        }
    }
}
