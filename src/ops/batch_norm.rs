//! BatchNorm over (N,C) or (N,C,H,W) (any rank ≥ 2: statistics per channel over every other
//! dimension), fused on the CPU, with PyTorch's semantics.
//!
//! * **Train mode** ([`batch_norm_train`]): `y = (x − μ) / √(σ² + ε) · γ + β` with the batch mean
//!   μ and the *biased* batch variance σ² of each channel (M = N·H·W values). On the CPU (f32/f64)
//!   one candle [`CustomOp3`] on (x, γ, β) computes the statistics in one pass over x (per-row
//!   partial sums, accumulated in f64 around a per-channel shift) and writes y in a second; its
//!   `bwd` is the closed form
//!   `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ/√(σ²+ε) · (dy − dβ/M − x̂·dγ/M)` in two passes.
//! * **Eval mode** ([`batch_norm_eval`]): the per-channel affine `y = x·a + b` with
//!   `a = γ/√(running_var + ε)`, `b = β − running_mean·a`, one pass, gradients for x, γ, β.
//! * [`BatchNorm`] keeps PyTorch's running statistics: after every train-mode forward
//!   `running_mean ← (1 − m)·running_mean + m·μ` and
//!   `running_var ← (1 − m)·running_var + m·σ²·M/(M − 1)` (the *unbiased* variance), m = 0.1.
//!   They are `Var`s named `running_mean` / `running_var` next to `weight` / `bias`, created
//!   through the `VarBuilder` exactly as `candle_nn::batch_norm` does, so with a `VarMap` they
//!   live in the map (checkpoints and weights files are unchanged) and are updated in place.
//!
//! * An [`Activation`] (ReLU, ReLU6) can be fused into either mode: `y = act(BN(x))` in the same
//!   output pass, and the backward masks the incoming gradient with the activation's derivative
//!   (read off the output: `y > 0`, resp. `0 < y < 6`, as PyTorch's `threshold_backward` /
//!   `hardtanh_backward`) inside its own passes, instead of separate activation ops.
//!
//! On other devices and dtypes the same formulas run as a chain of candle ops
//! ([`batch_norm_train_reference`], [`batch_norm_eval_reference`]), differentiated by candle.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, ModuleT, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use super::cpu::{self, Float};
use crate::{Error, Result};

/// An element-wise activation fused into [`batch_norm_train`] / [`batch_norm_eval`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// None: `y = z`.
    #[default]
    Identity,
    /// `y = max(z, 0)`.
    Relu,
    /// `y = min(max(z, 0), 6)` (MobileNet / EfficientNet-Lite).
    Relu6,
}

impl Activation {
    /// The activation on a candle tensor (what the fused kernels compute, for other devices).
    pub fn apply(self, z: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Identity => z.clone(),
            Activation::Relu => z.relu()?,
            Activation::Relu6 => z.clamp(0f32, 6f32)?,
        })
    }
}

/// Batch statistics of a train-mode forward, per channel (C,), detached.
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// Mean μ over the M values of each channel.
    pub mean: Tensor,
    /// Biased variance σ² (divided by M), the one used for normalising.
    pub var: Tensor,
    /// M = N × (product of the dimensions after the channel).
    pub count: usize,
}

/// (N, C, S) of an input of rank ≥ 2 with C channels at dim 1.
fn ncs(x: &Tensor, c_expected: usize, what: &str) -> Result<(usize, usize, usize)> {
    let d = x.dims();
    if d.len() < 2 || d[1] != c_expected {
        return Err(Error::invalid(format!(
            "{what}: input must be (N,{c_expected}) or (N,{c_expected},...), got {d:?}"
        )));
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

fn check_vec(t: &Tensor, c: usize, what: &str, name: &str) -> Result<()> {
    if t.dims() != [c] {
        return Err(Error::invalid(format!(
            "{what}: {name} must be ({c},), got {:?}",
            t.dims()
        )));
    }
    Ok(())
}

fn fast_path(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Train-mode BatchNorm with a fused activation: `(N,C,...) -> (N,C,...)`,
/// `y = act((x − μ)/√(σ² + ε)·γ + β)` with the batch statistics, plus those statistics.
/// `weight` (γ) and `bias` (β) are (C,). Errors when a channel has a single value (M = 1), as
/// PyTorch does.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Activation,
) -> Result<(Tensor, BatchStats)> {
    const WHAT: &str = "batch_norm (train)";
    let c = weight.dims().first().copied().unwrap_or(0);
    let (n, c, s) = ncs(x, c, WHAT)?;
    check_vec(weight, c, WHAT, "weight")?;
    check_vec(bias, c, WHAT, "bias")?;
    let count = n * s;
    if count < 2 {
        return Err(Error::invalid(format!(
            "{WHAT}: needs more than one value per channel, got input {:?}",
            x.dims()
        )));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(format!(
            "{WHAT}: eps must be ≥ 0, got {eps}"
        )));
    }
    if !fast_path(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        return batch_norm_train_reference(x, weight, bias, eps, act);
    }
    let op = Arc::new(BnTrainOp {
        dims: (n, c, s),
        eps,
        act,
        saved: Mutex::new(None),
    });
    let y = x.contiguous()?.apply_op3_arc(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Arc::new(Box::new(ArcOp(op.clone()))),
    )?;
    let saved = op
        .saved
        .lock()
        .map_err(|_| Error::invalid("batch_norm: statistics lock poisoned"))?
        .clone()
        .ok_or_else(|| Error::invalid("batch_norm: the forward kept no statistics"))?;
    let dev = x.device();
    let stats = BatchStats {
        mean: Tensor::from_vec(saved.mean, c, dev)?.to_dtype(x.dtype())?,
        var: Tensor::from_vec(saved.var, c, dev)?.to_dtype(x.dtype())?,
        count,
    };
    Ok((y, stats))
}

/// Eval-mode BatchNorm with a fused activation: `(N,C,...) -> (N,C,...)`,
/// `y = act((x − running_mean)/√(running_var + ε)·γ + β)`, differentiable in x, γ and β (the
/// running statistics are constants).
pub fn batch_norm_eval(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    const WHAT: &str = "batch_norm (eval)";
    let c = weight.dims().first().copied().unwrap_or(0);
    let (n, c, s) = ncs(x, c, WHAT)?;
    for (t, name) in [
        (weight, "weight"),
        (bias, "bias"),
        (running_mean, "running_mean"),
        (running_var, "running_var"),
    ] {
        check_vec(t, c, WHAT, name)?;
    }
    if !fast_path(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        return batch_norm_eval_reference(x, weight, bias, running_mean, running_var, eps, act);
    }
    let mean = running_mean.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let rv = running_var.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let invstd: Vec<f64> = rv.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    if invstd.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "{WHAT}: running_var + eps must be positive (eps {eps})"
        )));
    }
    let op = BnEvalOp {
        dims: (n, c, s),
        act,
        mean,
        invstd,
    };
    Ok(x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?)
}

/// Train-mode BatchNorm as a chain of candle ops (any device, any float dtype): the fallback
/// of [`batch_norm_train`] off the CPU.
pub fn batch_norm_train_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Activation,
) -> Result<(Tensor, BatchStats)> {
    let c = weight.dims().first().copied().unwrap_or(0);
    let (n, c, s) = ncs(x, c, "batch_norm_train_reference")?;
    let dims = x.dims().to_vec();
    let x3 = x.reshape((n, c, s))?;
    let internal = match x.dtype() {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let x3 = x3.to_dtype(internal)?;
    let mean = x3.mean_keepdim(2)?.mean_keepdim(0)?;
    let xc = x3.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(2)?.mean_keepdim(0)?;
    let y = xc
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .broadcast_mul(&weight.to_dtype(internal)?.reshape((1, c, 1))?)?
        .broadcast_add(&bias.to_dtype(internal)?.reshape((1, c, 1))?)?
        .to_dtype(x.dtype())?
        .reshape(dims)?;
    let stats = BatchStats {
        mean: mean.flatten_all()?.detach().to_dtype(x.dtype())?,
        var: var.flatten_all()?.detach().to_dtype(x.dtype())?,
        count: n * s,
    };
    Ok((act.apply(&y)?, stats))
}

/// Eval-mode BatchNorm as a chain of candle ops (any device, any float dtype).
pub fn batch_norm_eval_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    let c = weight.dims().first().copied().unwrap_or(0);
    ncs(x, c, "batch_norm_eval_reference")?;
    let mut shape = vec![1usize; x.rank()];
    shape[1] = c;
    let shape = shape.as_slice();
    let y = x
        .broadcast_sub(&running_mean.detach().reshape(shape)?)?
        .broadcast_div(&(running_var.detach().reshape(shape)? + eps)?.sqrt()?)?
        .broadcast_mul(&weight.reshape(shape)?)?
        .broadcast_add(&bias.reshape(shape)?)?;
    act.apply(&y)
}

/// A BatchNorm layer (PyTorch `BatchNorm1d` / `BatchNorm2d`, affine, momentum 0.1 by default)
/// with its running statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    running_mean: Var,
    running_var: Var,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// Gets `weight` (init 1), `bias` (0), `running_mean` (0), `running_var` (1), each
    /// (num_features,), from `vb`, as `candle_nn::batch_norm` does; momentum 0.1.
    pub fn new(num_features: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let running_mean = vb.get_with_hints(num_features, "running_mean", Init::Const(0.))?;
        let running_var = vb.get_with_hints(num_features, "running_var", Init::Const(1.))?;
        let weight = vb.get_with_hints(num_features, "weight", Init::Const(1.))?;
        let bias = vb.get_with_hints(num_features, "bias", Init::Const(0.))?;
        // A tensor that already is a Var (VarMap-backed builder) is shared, not copied.
        Self::from_parts(
            Var::from_tensor(&running_mean)?,
            Var::from_tensor(&running_var)?,
            weight,
            bias,
            eps,
            0.1,
        )
    }

    /// A layer over existing tensors; all four must be (C,).
    pub fn from_parts(
        running_mean: Var,
        running_var: Var,
        weight: Tensor,
        bias: Tensor,
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        let c = weight.dims().first().copied().unwrap_or(0);
        check_vec(&weight, c, "BatchNorm", "weight")?;
        check_vec(&bias, c, "BatchNorm", "bias")?;
        check_vec(&running_mean, c, "BatchNorm", "running_mean")?;
        check_vec(&running_var, c, "BatchNorm", "running_var")?;
        if !(eps >= 0.0 && eps.is_finite() && (0.0..=1.0).contains(&momentum)) {
            return Err(Error::invalid(format!(
                "BatchNorm: eps must be ≥ 0 and momentum in [0, 1], got {eps} and {momentum}"
            )));
        }
        Ok(Self {
            running_mean,
            running_var,
            weight,
            bias,
            eps,
            momentum,
        })
    }

    /// Number of channels C.
    pub fn num_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// γ (C,).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// β (C,).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Running mean (C,).
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// Running (unbiased) variance (C,).
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// ε.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Momentum of the running statistics.
    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    /// Train mode: `(N,C,...) -> (N,C,...)` with batch statistics; updates the running
    /// statistics in place (see the module docs).
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, true, Activation::Identity)
    }

    /// Eval mode: `(N,C,...) -> (N,C,...)` with the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false, Activation::Identity)
    }

    /// `act(BN(x))` in train (batch statistics, running statistics updated) or eval mode, the
    /// activation fused into the BatchNorm kernels: `(N,C,...) -> (N,C,...)`.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        if !train {
            return batch_norm_eval(
                x,
                &self.weight,
                &self.bias,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                self.eps,
                act,
            );
        }
        let (y, st) = batch_norm_train(x, &self.weight, &self.bias, self.eps, act)?;
        let m = self.momentum;
        let unbias = st.count as f64 / (st.count as f64 - 1.0);
        let dt = self.running_mean.dtype();
        let rm =
            ((self.running_mean.as_detached_tensor() * (1.0 - m))? + (st.mean.to_dtype(dt)? * m)?)?;
        let rv = ((self.running_var.as_detached_tensor() * (1.0 - m))?
            + (st.var.to_dtype(dt)? * (m * unbias))?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(y)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(if train {
            self.forward_train(x)?
        } else {
            self.forward_eval(x)?
        })
    }
}

// ---------------------------------------------------------------------------------------------
// CPU kernels. Data is (N, C, S) row-major. For S > 1 a "row" is one run of S values of one
// channel; for S = 1 (BatchNorm1d) a row of the (N, C) matrix holds every channel. The
// activation is a const parameter (0 identity, 1 ReLU, 2 ReLU6) so its branch folds away in
// the inner loops.

const ACT_ID: u8 = 0;
const ACT_RELU: u8 = 1;
const ACT_RELU6: u8 = 2;

fn act_code(act: Activation) -> u8 {
    match act {
        Activation::Identity => ACT_ID,
        Activation::Relu => ACT_RELU,
        Activation::Relu6 => ACT_RELU6,
    }
}

/// Calls `$f::<code>(args)` with the activation as a const parameter.
macro_rules! with_act {
    ($act:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match act_code($act) {
            ACT_ID => $f::<_, ACT_ID>($($arg),*),
            ACT_RELU => $f::<_, ACT_RELU>($($arg),*),
            _ => $f::<_, ACT_RELU6>($($arg),*),
        }
    };
}

#[inline(always)]
fn act_f<T: Float, const A: u8>(z: T) -> T {
    match A {
        ACT_ID => z,
        ACT_RELU => {
            if z > T::zero() {
                z
            } else {
                T::zero()
            }
        }
        _ => {
            let six = T::from_f64(6.0);
            let z = if z > T::zero() { z } else { T::zero() };
            if z < six {
                z
            } else {
                six
            }
        }
    }
}

/// Incoming gradient `g` masked by the activation's derivative at output `y`.
#[inline(always)]
fn act_grad<T: Float, const A: u8>(g: T, y: T) -> T {
    match A {
        ACT_ID => g,
        ACT_RELU => {
            if y > T::zero() {
                g
            } else {
                T::zero()
            }
        }
        _ => {
            if y > T::zero() && y < T::from_f64(6.0) {
                g
            } else {
                T::zero()
            }
        }
    }
}

/// Statistics the train forward keeps for its backward (f64, per channel).
#[derive(Clone, Debug)]
struct Saved {
    mean: Vec<f64>,
    var: Vec<f64>,
    invstd: Vec<f64>,
}

/// Channel blocks of the S = 1 layout (each task owns a run of columns).
const COL_BLOCK: usize = 64;

/// Per channel, Σ over its values of `pair(i) = (a, b)` → (Σ a, Σ a·b) in f64, where `row`
/// reduces one contiguous run `[off, off + len)` of one channel (S > 1) and `elem` gives (a, b) of
/// element `i` of channel `ch` (S = 1).
fn channel_reduce<R, E>(dims: (usize, usize, usize), row: R, elem: E) -> (Vec<f64>, Vec<f64>)
where
    R: Fn(usize, usize, usize) -> (f64, f64) + Sync,
    E: Fn(usize, usize) -> (f64, f64) + Sync,
{
    let (n, c, s) = dims;
    if s == 1 {
        let blocks: Vec<(Vec<f64>, Vec<f64>)> = (0..c.div_ceil(COL_BLOCK))
            .into_par_iter()
            .map(|bi| {
                let c0 = bi * COL_BLOCK;
                let w = COL_BLOCK.min(c - c0);
                let mut sa = vec![0f64; w];
                let mut sab = vec![0f64; w];
                for r in 0..n {
                    for j in 0..w {
                        let (a, ab) = elem(r * c + c0 + j, c0 + j);
                        sa[j] += a;
                        sab[j] += ab;
                    }
                }
                (sa, sab)
            })
            .collect();
        let mut sa = Vec::with_capacity(c);
        let mut sab = Vec::with_capacity(c);
        for (a, b) in blocks {
            sa.extend(a);
            sab.extend(b);
        }
        return (sa, sab);
    }
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut sa = 0f64;
            let mut sab = 0f64;
            for r in 0..n {
                let (a, ab) = row((r * c + ch) * s, s, ch);
                sa += a;
                sab += ab;
            }
            (sa, sab)
        })
        .unzip()
}

/// Calls `f(channel, offset, out_run)` over `out` in parallel: for S > 1 each run is one
/// channel's S values; for S = 1 each run is a whole (N, C) row and `channel` is `usize::MAX`.
fn for_rows<T: Float, F>(out: &mut [T], dims: (usize, usize, usize), f: F)
where
    F: Fn(usize, usize, &mut [T]) + Sync,
{
    let (_, c, s) = dims;
    if out.is_empty() {
        return;
    }
    if s == 1 {
        out.par_chunks_mut(c)
            .enumerate()
            .for_each(|(r, o)| f(usize::MAX, r * c, o));
        return;
    }
    // Several runs per task so small planes do not drown in scheduling.
    let per_task = (4096 / s).max(1);
    out.par_chunks_mut(per_task * s)
        .enumerate()
        .for_each(|(t, oc)| {
            for (k, o) in oc.chunks_mut(s).enumerate() {
                let row = t * per_task + k;
                f(row % c, row * s, o);
            }
        });
}

/// (Σ (x − shift), Σ (x − shift)²) over one run, 8 lanes wide.
fn run_moments<T: Float>(x: &[T], shift: T) -> (T, T) {
    let mut a = [T::zero(); 8];
    let mut aa = [T::zero(); 8];
    let mut it = x.chunks_exact(8);
    for v in &mut it {
        for l in 0..8 {
            let d = v[l] - shift;
            a[l] += d;
            aa[l] += d * d;
        }
    }
    let (mut ta, mut taa) = (T::zero(), T::zero());
    for &v in it.remainder() {
        let d = v - shift;
        ta += d;
        taa += d * d;
    }
    for l in 0..8 {
        ta += a[l];
        taa += aa[l];
    }
    (ta, taa)
}

/// (Σ dz, Σ dz·(x − mean)) over one run with dz = act'(y)·dy, 8 lanes wide.
fn run_grad_sums<T: Float, const A: u8>(dy: &[T], y: &[T], x: &[T], mean: T) -> (T, T) {
    let mut a = [T::zero(); 8];
    let mut ab = [T::zero(); 8];
    let n = dy.len();
    let (dy8, y8, x8) = (
        dy.chunks_exact(8),
        y[..n].chunks_exact(8),
        x[..n].chunks_exact(8),
    );
    for ((g, yv), xv) in dy8.zip(y8).zip(x8) {
        for l in 0..8 {
            let dz = act_grad::<T, A>(g[l], yv[l]);
            a[l] += dz;
            ab[l] += dz * (xv[l] - mean);
        }
    }
    let (mut ta, mut tab) = (T::zero(), T::zero());
    for i in n - n % 8..n {
        let dz = act_grad::<T, A>(dy[i], y[i]);
        ta += dz;
        tab += dz * (x[i] - mean);
    }
    for l in 0..8 {
        ta += a[l];
        tab += ab[l];
    }
    (ta, tab)
}

fn to_t<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

/// Uninitialised-free output buffer (every element is written by the kernels).
fn out_buf<T: Float>(len: usize) -> Vec<T> {
    vec![T::zero(); len]
}

/// `out = act(a[c]·x + b[c])`.
fn affine_act<T: Float, const A: u8>(
    x: &[T],
    a: &[T],
    b: &[T],
    dims: (usize, usize, usize),
) -> Vec<T> {
    let mut y = out_buf(x.len());
    for_rows(&mut y, dims, |ch, off, o| {
        let xr = &x[off..off + o.len()];
        if ch == usize::MAX {
            for (j, (o, &v)) in o.iter_mut().zip(xr).enumerate() {
                *o = act_f::<T, A>(a[j] * v + b[j]);
            }
        } else {
            let (p, q) = (a[ch], b[ch]);
            for (o, &v) in o.iter_mut().zip(xr) {
                *o = act_f::<T, A>(p * v + q);
            }
        }
    });
    y
}

/// Forward of train-mode BN + activation: statistics, then `y = act(a·x + b)`.
fn bn_train_fwd<T: Float, const A: u8>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    dims: (usize, usize, usize),
    eps: f64,
) -> (Vec<T>, Saved) {
    let (n, c, s) = dims;
    let m = (n * s) as f64;
    // Shift each channel by one of its own values, so the sums of squares lose no precision
    // to a large mean.
    let shift: Vec<T> = (0..c).map(|ch| x[ch * s]).collect();
    let (sa, saa) = channel_reduce(
        dims,
        |off, len, ch| {
            let (a, aa) = run_moments(&x[off..off + len], shift[ch]);
            (a.to_f64(), aa.to_f64())
        },
        |i, ch| {
            let d = (x[i] - shift[ch]).to_f64();
            (d, d * d)
        },
    );
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    let mut invstd = vec![0f64; c];
    for ch in 0..c {
        let d = sa[ch] / m;
        mean[ch] = shift[ch].to_f64() + d;
        var[ch] = (saa[ch] / m - d * d).max(0.0);
        invstd[ch] = 1.0 / (var[ch] + eps).sqrt();
    }
    let a: Vec<f64> = (0..c).map(|ch| gamma[ch].to_f64() * invstd[ch]).collect();
    let b: Vec<f64> = (0..c)
        .map(|ch| beta[ch].to_f64() - mean[ch] * a[ch])
        .collect();
    let y = affine_act::<T, A>(x, &to_t(&a), &to_t(&b), dims);
    (y, Saved { mean, var, invstd })
}

/// Backward of `y = act(BN(x))` around `mean`, `invstd`: (dx, dγ, dβ). `train`: the statistics
/// depend on x (batch statistics); otherwise they are constants (eval mode).
#[allow(clippy::too_many_arguments)]
fn bn_bwd<T: Float, const A: u8>(
    x: &[T],
    y: &[T],
    dy: &[T],
    gamma: &[T],
    mean: &[f64],
    invstd: &[f64],
    dims: (usize, usize, usize),
    train: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (n, c, s) = dims;
    let m = (n * s) as f64;
    let mean_t: Vec<T> = to_t(mean);
    // Σ dz and Σ dz·(x − μ) per channel, dz = act'(y)·dy.
    let (sdz, sdzx) = channel_reduce(
        dims,
        |off, len, ch| {
            let r = off..off + len;
            let (a, ab) = run_grad_sums::<T, A>(&dy[r.clone()], &y[r.clone()], &x[r], mean_t[ch]);
            (a.to_f64(), ab.to_f64())
        },
        |i, ch| {
            let dz = act_grad::<T, A>(dy[i], y[i]).to_f64();
            (dz, dz * (x[i] - mean_t[ch]).to_f64())
        },
    );
    let dgamma: Vec<f64> = (0..c).map(|ch| sdzx[ch] * invstd[ch]).collect();
    let mut k1 = vec![0f64; c];
    let mut k2 = vec![0f64; c];
    let mut k3 = vec![0f64; c];
    for ch in 0..c {
        let g = gamma[ch].to_f64() * invstd[ch];
        k1[ch] = g;
        if train {
            // dx = g·(dz − Σdz/M − (x − μ)·invstd²·Σdz(x − μ)/M) = k1·dz + k2·x + k3
            k2[ch] = -g * invstd[ch] * invstd[ch] * sdzx[ch] / m;
            k3[ch] = -g * sdz[ch] / m - k2[ch] * mean[ch];
        }
    }
    let (k1, k2, k3): (Vec<T>, Vec<T>, Vec<T>) = (to_t(&k1), to_t(&k2), to_t(&k3));
    let mut dx = out_buf(x.len());
    for_rows(&mut dx, dims, |ch, off, o| {
        let r = off..off + o.len();
        let (g, yr, xr) = (&dy[r.clone()], &y[r.clone()], &x[r]);
        if ch == usize::MAX {
            for j in 0..o.len() {
                o[j] = k1[j] * act_grad::<T, A>(g[j], yr[j]) + k2[j] * xr[j] + k3[j];
            }
        } else {
            let (p, q, t) = (k1[ch], k2[ch], k3[ch]);
            for j in 0..o.len() {
                o[j] = p * act_grad::<T, A>(g[j], yr[j]) + q * xr[j] + t;
            }
        }
    });
    (dx, to_t(&dgamma), to_t(&sdz))
}

/// Shares one train op between the graph (which owns a boxed copy) and the caller (who reads
/// the statistics it kept).
struct ArcOp(Arc<BnTrainOp>);

struct BnTrainOp {
    dims: (usize, usize, usize),
    eps: f64,
    act: Activation,
    saved: Mutex<Option<Saved>>,
}

fn slices3<'a, T: Float>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
    s3: &'a CpuStorage,
    l3: &Layout,
) -> candle_core::Result<(&'a [T], &'a [T], &'a [T])> {
    Ok((
        cpu::cpu_slice::<T>(s1, l1, "batch_norm input")?,
        cpu::cpu_slice::<T>(s2, l2, "batch_norm weight")?,
        cpu::cpu_slice::<T>(s3, l3, "batch_norm bias")?,
    ))
}

/// (dx, dγ, dβ) as tensors shaped like x, γ, β.
#[allow(clippy::too_many_arguments)]
fn bwd_tensors<T: Float>(
    x: &Tensor,
    y: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    mean: &[f64],
    invstd: &[f64],
    dims: (usize, usize, usize),
    act: Activation,
    train: bool,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let dy = dy.contiguous()?;
    let (dx, dg, db) = cpu::with_cpu_slice::<T, _>(x, "batch_norm bwd input", |xs| {
        cpu::with_cpu_slice::<T, _>(y, "batch_norm bwd output", |ys| {
            cpu::with_cpu_slice::<T, _>(gamma, "batch_norm bwd weight", |gs| {
                cpu::with_cpu_slice::<T, _>(&dy, "batch_norm bwd grad", |dys| {
                    Ok(with_act!(
                        act,
                        bn_bwd(xs, ys, dys, gs, mean, invstd, dims, train)
                    ))
                })
            })
        })
    })?;
    let dev = x.device();
    let c = dims.1;
    Ok((
        Some(Tensor::from_vec(dx, x.shape(), dev)?),
        Some(Tensor::from_vec(dg, c, dev)?),
        Some(Tensor::from_vec(db, c, dev)?),
    ))
}

fn lock_err() -> candle_core::Error {
    candle_core::Error::Msg("batch_norm: statistics lock poisoned".into())
}

impl CustomOp3 for ArcOp {
    fn name(&self) -> &'static str {
        "cromo-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = &self.0;
        let (y, saved) = match s1 {
            CpuStorage::F32(_) => {
                let (x, g, b) = slices3::<f32>(s1, l1, s2, l2, s3, l3)?;
                let (y, saved) = with_act!(op.act, bn_train_fwd(x, g, b, op.dims, op.eps));
                (CpuStorage::F32(y), saved)
            }
            CpuStorage::F64(_) => {
                let (x, g, b) = slices3::<f64>(s1, l1, s2, l2, s3, l3)?;
                let (y, saved) = with_act!(op.act, bn_train_fwd(x, g, b, op.dims, op.eps));
                (CpuStorage::F64(y), saved)
            }
            s => candle_core::bail!("cromo-batch-norm: unsupported dtype {:?}", s.dtype()),
        };
        *op.saved.lock().map_err(|_| lock_err())? = Some(saved);
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = &self.0;
        let saved = op
            .saved
            .lock()
            .map_err(|_| lock_err())?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("batch_norm: no saved statistics".into()))?;
        let (m, is) = (&saved.mean, &saved.invstd);
        match x.dtype() {
            DType::F32 => bwd_tensors::<f32>(x, res, gamma, grad, m, is, op.dims, op.act, true),
            DType::F64 => bwd_tensors::<f64>(x, res, gamma, grad, m, is, op.dims, op.act, true),
            dt => candle_core::bail!("cromo-batch-norm bwd: unsupported dtype {dt:?}"),
        }
    }
}

struct BnEvalOp {
    dims: (usize, usize, usize),
    act: Activation,
    mean: Vec<f64>,
    invstd: Vec<f64>,
}

impl BnEvalOp {
    fn fwd<T: Float>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let c = self.dims.1;
        let a: Vec<f64> = (0..c)
            .map(|ch| gamma[ch].to_f64() * self.invstd[ch])
            .collect();
        let b: Vec<f64> = (0..c)
            .map(|ch| beta[ch].to_f64() - self.mean[ch] * a[ch])
            .collect();
        let (a, b): (Vec<T>, Vec<T>) = (to_t(&a), to_t(&b));
        with_act!(self.act, affine_act(x, &a, &b, self.dims))
    }
}

impl CustomOp3 for BnEvalOp {
    fn name(&self) -> &'static str {
        "cromo-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = match s1 {
            CpuStorage::F32(_) => {
                let (x, g, b) = slices3::<f32>(s1, l1, s2, l2, s3, l3)?;
                CpuStorage::F32(self.fwd(x, g, b))
            }
            CpuStorage::F64(_) => {
                let (x, g, b) = slices3::<f64>(s1, l1, s2, l2, s3, l3)?;
                CpuStorage::F64(self.fwd(x, g, b))
            }
            s => candle_core::bail!("cromo-batch-norm: unsupported dtype {:?}", s.dtype()),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, is) = (&self.mean, &self.invstd);
        match x.dtype() {
            DType::F32 => {
                bwd_tensors::<f32>(x, res, gamma, grad, m, is, self.dims, self.act, false)
            }
            DType::F64 => {
                bwd_tensors::<f64>(x, res, gamma, grad, m, is, self.dims, self.act, false)
            }
            dt => candle_core::bail!("cromo-batch-norm bwd: unsupported dtype {dt:?}"),
        }
    }
}
