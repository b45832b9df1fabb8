//! Barlow Twins: redundancy reduction on the cross-correlation of the batch-normalised views.

use super::check_pair;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// How each view is standardised before the cross-correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarlowNorm {
    /// `(z − mean) / sqrt(biased variance + eps)`: a train-mode `BatchNorm1d(affine=False)`, as
    /// solo-learn and CaSSLe do (the default).
    BatchNorm,
    /// `(z − mean) / unbiased std`, no ε, as CroMo-Mixup's code does.
    UnbiasedStd,
}

/// Barlow Twins hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BarlowConfig {
    /// Weight λ_off of the off-diagonal (redundancy) term, 5e-3.
    pub lambda_off: f64,
    /// Overall factor on the loss: 1.0 is the paper's formula; CaSSLe and CroMo-Mixup use 0.1 on
    /// CIFAR (`scale_loss`), see [`BarlowConfig::cifar`].
    pub scale: f64,
    /// Per-view standardisation ([`BarlowNorm::BatchNorm`]).
    pub norm: BarlowNorm,
    /// ε added to the biased variance by [`BarlowNorm::BatchNorm`] (1e-5, BatchNorm1d's).
    pub bn_eps: f64,
}

impl Default for BarlowConfig {
    fn default() -> Self {
        Self {
            lambda_off: 5e-3,
            scale: 1.0,
            norm: BarlowNorm::BatchNorm,
            bn_eps: 1e-5,
        }
    }
}

impl BarlowConfig {
    /// The CIFAR setting of CaSSLe / CroMo-Mixup: the default with `scale = 0.1`.
    pub fn cifar() -> Self {
        Self {
            scale: 0.1,
            ..Self::default()
        }
    }
}

/// Standardises each column of `z` `(n, d)` over the batch.
fn standardise(z: &Tensor, cfg: &BarlowConfig) -> Result<Tensor> {
    let n = z.dims()[0] as f64;
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let sum_sq = centred.sqr()?.sum_keepdim(0)?;
    let std = match cfg.norm {
        BarlowNorm::BatchNorm => sum_sq.affine(1.0 / n, cfg.bn_eps)?.sqrt()?,
        BarlowNorm::UnbiasedStd => sum_sq.affine(1.0 / (n - 1.0), 0.0)?.sqrt()?,
    };
    Ok(centred.broadcast_div(&std)?)
}

/// Barlow Twins loss.
///
/// `z1`, `z2`: `(n, d)` projections of the two views, `n ≥ 2`; `-> ()`.
///
/// Each view is standardised per dimension over the batch ([`BarlowNorm`]), then
/// `C = ẑ1ᵀ ẑ2 / n` `(d, d)` and
/// `loss = scale · [ Σ_i (1 − C_ii)² + λ_off Σ_{i≠j} C_ij² ]`.
pub fn barlow(z1: &Tensor, z2: &Tensor, cfg: &BarlowConfig) -> Result<Tensor> {
    const LOSS: &str = "barlow";
    let (n, d) = check_pair(z1, z2, LOSS, ("z1", "z2"))?;
    if n < 2 {
        return Err(Error::invalid(format!(
            "{LOSS}: needs a batch of at least 2 to standardise, got {n}"
        )));
    }
    if !(cfg.lambda_off.is_finite() && cfg.scale.is_finite() && cfg.bn_eps >= 0.0) {
        return Err(Error::invalid(format!(
            "{LOSS}: invalid configuration {cfg:?}"
        )));
    }
    let a = standardise(z1, cfg)?;
    let b = standardise(z2, cfg)?;
    let c = a.t()?.matmul(&b)?.affine(1.0 / n as f64, 0.0)?;
    let diag = a.mul(&b)?.sum(0)?.affine(1.0 / n as f64, 0.0)?;
    let on = diag.affine(-1.0, 1.0)?.sqr()?.sum_all()?;
    let off_mask = Tensor::eye(d, DType::F32, z1.device())?
        .affine(-1.0, 1.0)?
        .to_dtype(z1.dtype())?;
    let off = c.mul(&off_mask)?.sqr()?.sum_all()?;
    let loss = on.add(&off.affine(cfg.lambda_off, 0.0)?)?;
    Ok(loss.affine(cfg.scale, 0.0)?)
}
