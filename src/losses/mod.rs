//! Self-supervised losses as pure functions of candle tensors.
//!
//! Every loss takes projector / predictor outputs (`(n, d)` matrices, any float dtype, any device),
//! returns a scalar tensor that is differentiable through candle's autograd, and holds no state:
//! MoCo queues, EMA targets and CorInfoMax running statistics are owned by the caller, passed in
//! and (where they change) returned. The formulas, and the conventions of the authors' code they
//! follow (solo-learn, CaSSLe, PNR, CroMo-Mixup, MixCo, i-Mix), are `shared/DESIGN.md` §3; each
//! function's documentation states which form it implements.
//!
//! | family | functions |
//! |---|---|
//! | [`info_nce`](mod@info_nce) | [`info_nce()`], [`cassle_simclr_distill`], [`pnr_simclr`] |
//! | [`moco`](mod@moco) | [`moco_v2`], [`moco_v2_symmetric`], [`KeyQueue`] |
//! | [`byol`](mod@byol) | [`byol()`], [`byol_symmetric`], [`ema_tau`] |
//! | [`barlow`](mod@barlow) | [`barlow()`] |
//! | [`vicreg`](mod@vicreg) | [`vicreg()`] |
//! | [`corinfomax`](mod@corinfomax) | [`corinfomax()`], [`CorInfoMaxState`], [`logdet_spd`] |
//! | [`mixco`](mod@mixco) | [`mixco()`], [`mixco_mix`] |
//! | [`imix`](mod@imix) | [`imix_npair`], [`imix_byol`], [`imix_mix`] |
//!
//! Shape and argument errors are returned as [`Error::InvalidArgument`] naming the loss and the
//! offending shapes; no loss panics on bad input.

pub mod barlow;
pub mod byol;
pub mod corinfomax;
pub mod imix;
pub mod info_nce;
pub mod mixco;
pub mod moco;
pub mod vicreg;

pub use barlow::{barlow, BarlowConfig, BarlowNorm};
pub use byol::{byol, byol_symmetric, ema_tau, ByolConfig};
pub use corinfomax::{corinfomax, logdet_spd, CorInfoMaxConfig, CorInfoMaxOutput, CorInfoMaxState};
pub use imix::{imix_byol, imix_mix, imix_npair, ImixBatch, ImixConfig};
pub use info_nce::{cassle_simclr_distill, info_nce, pnr_simclr, InfoNceConfig, PnrSimclrTerms};
pub use mixco::{mixco, mixco_mix, MixcoBatch, MixcoConfig};
pub use moco::{moco_v2, moco_v2_symmetric, KeyQueue, MocoConfig};
pub use vicreg::{vicreg, VicregConfig, VicregTerms};

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, D};

/// Added to logits that a softmax must ignore. Finite so that `0 · logit` stays 0 in f32/f64;
/// it becomes −inf in f16/bf16, which the log-sum-exp below also handles.
const EXCLUDED: f32 = -1e30;

/// `t` must be a floating-point `(n, d)` matrix; returns `(n, d)`.
pub(crate) fn check_matrix(t: &Tensor, loss: &str, name: &str) -> Result<(usize, usize)> {
    if !t.dtype().is_float() {
        return Err(Error::invalid(format!(
            "{loss}: `{name}` must be a floating-point tensor, got {:?}",
            t.dtype()
        )));
    }
    match t.dims() {
        &[n, d] => Ok((n, d)),
        dims => Err(Error::invalid(format!(
            "{loss}: `{name}` must be an (n, d) matrix, got shape {dims:?}"
        ))),
    }
}

/// Both tensors are `(n, d)` matrices of one shape and dtype; returns `(n, d)`.
pub(crate) fn check_pair(
    a: &Tensor,
    b: &Tensor,
    loss: &str,
    names: (&str, &str),
) -> Result<(usize, usize)> {
    let sa = check_matrix(a, loss, names.0)?;
    let sb = check_matrix(b, loss, names.1)?;
    if sa != sb {
        return Err(Error::invalid(format!(
            "{loss}: `{}` {:?} and `{}` {:?} must have the same shape",
            names.0,
            a.dims(),
            names.1,
            b.dims()
        )));
    }
    check_same_dtype(a, b, loss, names)?;
    Ok(sa)
}

pub(crate) fn check_same_dtype(
    a: &Tensor,
    b: &Tensor,
    loss: &str,
    names: (&str, &str),
) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::invalid(format!(
            "{loss}: `{}` is {:?} but `{}` is {:?}",
            names.0,
            a.dtype(),
            names.1,
            b.dtype()
        )));
    }
    Ok(())
}

pub(crate) fn check_positive(x: f64, loss: &str, name: &str) -> Result<()> {
    if !(x.is_finite() && x > 0.0) {
        return Err(Error::invalid(format!(
            "{loss}: `{name}` must be a finite positive number, got {x}"
        )));
    }
    Ok(())
}

/// Row-wise L2 normalisation as `torch.nn.functional.normalize(x, dim=1)`:
/// `x / max(‖x‖₂, 1e-12)`. `(n, d) -> (n, d)`.
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// A `(n, n)` additive mask that excludes the diagonal: a huge negative number on it, 0 elsewhere.
pub(crate) fn diag_exclusion(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    // Built in f32: in f16 the constant is −inf and 0·(−inf) would be NaN.
    Ok(Tensor::eye(n, DType::F32, device)?
        .affine(EXCLUDED as f64, 0.0)?
        .to_dtype(dtype)?)
}

/// `log Σ_j exp(l_ij)` over the columns of several `(r, c_b)` logit blocks taken together, each
/// with an optional additive mask such as [`diag_exclusion`]; `-> (r,)`. The row maximum used for stability is
/// detached (the result does not depend on it), so gradients are exact.
pub(crate) fn logsumexp_blocks(blocks: &[(&Tensor, Option<&Tensor>)]) -> Result<Tensor> {
    let masked: Vec<Tensor> = blocks
        .iter()
        .map(|(l, m)| match m {
            Some(m) => l.add(m),
            None => Ok((*l).clone()),
        })
        .collect::<candle_core::Result<_>>()?;
    let maxes: Vec<Tensor> = masked
        .iter()
        .map(|l| l.max_keepdim(1))
        .collect::<candle_core::Result<_>>()?;
    let row_max = Tensor::cat(&maxes, 1)?.max_keepdim(1)?.detach();
    let mut total: Option<Tensor> = None;
    for l in &masked {
        let s = l.broadcast_sub(&row_max)?.exp()?.sum_keepdim(1)?;
        total = Some(match total {
            None => s,
            Some(t) => t.add(&s)?,
        });
    }
    let total = total.ok_or_else(|| Error::invalid("logsumexp over no logit blocks"))?;
    Ok(total.log()?.add(&row_max)?.squeeze(1)?)
}

/// Mean over rows of the soft-target cross-entropy `−Σ_j t_ij log softmax_j(l_i)`, where the
/// softmax runs over all columns of `blocks` and the targets `(r, c)` cover the first `c` columns
/// of the first block (targets elsewhere are zero). `-> ()`.
pub(crate) fn soft_cross_entropy(
    blocks: &[(&Tensor, Option<&Tensor>)],
    targets: &Tensor,
) -> Result<Tensor> {
    let lse = logsumexp_blocks(blocks)?;
    let c = targets.dim(1)?;
    let first = blocks[0].0.narrow(1, 0, c)?;
    let weighted = targets.mul(&first)?.sum(1)?;
    let mass = targets.sum(1)?;
    Ok(lse.mul(&mass)?.sub(&weighted)?.mean_all()?)
}

/// Row-wise dot products of two `(n, d)` matrices, `-> (n,)`.
pub(crate) fn row_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.mul(b)?.sum(D::Minus1)?)
}

/// `a · bᵀ`, `(n, d), (m, d) -> (n, m)`.
pub(crate) fn sim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.matmul(&b.t()?)?)
}
