//! VICReg: variance–invariance–covariance regularisation, in solo-learn's convention.

use super::check_pair;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// VICReg weights and constants (solo-learn / VICReg paper defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VicregConfig {
    /// Weight of the invariance (MSE) term, 25.
    pub sim_weight: f64,
    /// Weight of the variance hinge, 25.
    pub var_weight: f64,
    /// Weight of the covariance term, 1.
    pub cov_weight: f64,
    /// Target standard deviation γ of the hinge, 1.
    pub std_target: f64,
    /// ε inside the square root of the variance, 1e-4.
    pub eps: f64,
}

impl Default for VicregConfig {
    fn default() -> Self {
        Self {
            sim_weight: 25.0,
            var_weight: 25.0,
            cov_weight: 1.0,
            std_target: 1.0,
            eps: 1e-4,
        }
    }
}

/// The VICReg terms (unweighted) and their weighted sum, all scalars.
#[derive(Debug, Clone)]
pub struct VicregTerms {
    /// `mean((z1 − z2)²)` over all n·d entries.
    pub invariance: Tensor,
    /// Σ over the two views of `mean_j relu(γ − sqrt(Var_j + ε))`.
    pub variance: Tensor,
    /// Σ over the two views of `Σ_{i≠j} Cov_ij² / d`.
    pub covariance: Tensor,
    /// `sim_weight · invariance + var_weight · variance + cov_weight · covariance`.
    pub total: Tensor,
}

/// Variance hinge and covariance penalty of one view `z` `(n, d)`.
fn var_cov(z: &Tensor, cfg: &VicregConfig) -> Result<(Tensor, Tensor)> {
    let (n, d) = z.dims2()?;
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let var = centred
        .sqr()?
        .sum(0)?
        .affine(1.0 / (n as f64 - 1.0), cfg.eps)?;
    let hinge = var
        .sqrt()?
        .affine(-1.0, cfg.std_target)?
        .relu()?
        .mean_all()?;
    let cov = centred
        .t()?
        .matmul(&centred)?
        .affine(1.0 / (n as f64 - 1.0), 0.0)?;
    let off_mask = Tensor::eye(d, DType::F32, z.device())?
        .affine(-1.0, 1.0)?
        .to_dtype(z.dtype())?;
    let cov_pen = cov
        .mul(&off_mask)?
        .sqr()?
        .sum_all()?
        .affine(1.0 / d as f64, 0.0)?;
    Ok((hinge, cov_pen))
}

/// VICReg loss as solo-learn's `vicreg_loss_func` computes it.
///
/// `z1`, `z2`: `(n, d)` projections of the two views, `n ≥ 2`; returns the three unweighted
/// terms and the weighted total (scalars).
///
/// * invariance `= mean_{i,j} (z1_ij − z2_ij)²` (`F.mse_loss`);
/// * variance `= Σ_{v=1,2} mean_j relu(γ − sqrt(Var(z^v_{·j}) + ε))`, with the unbiased
///   (÷ n−1) variance — the SUM over the two views, as solo-learn (the official VICReg code
///   halves this term);
/// * covariance `= Σ_{v=1,2} Σ_{i≠j} C^v_ij² / d`, `C^v = (z^v − mean)ᵀ(z^v − mean) / (n − 1)`.
pub fn vicreg(z1: &Tensor, z2: &Tensor, cfg: &VicregConfig) -> Result<VicregTerms> {
    const LOSS: &str = "vicreg";
    let (n, _) = check_pair(z1, z2, LOSS, ("z1", "z2"))?;
    if n < 2 {
        return Err(Error::invalid(format!(
            "{LOSS}: needs a batch of at least 2 for the variance, got {n}"
        )));
    }
    if !(cfg.eps >= 0.0 && cfg.std_target.is_finite()) {
        return Err(Error::invalid(format!(
            "{LOSS}: invalid configuration {cfg:?}"
        )));
    }
    let invariance = z1.sub(z2)?.sqr()?.mean_all()?;
    let (v1, c1) = var_cov(z1, cfg)?;
    let (v2, c2) = var_cov(z2, cfg)?;
    let variance = v1.add(&v2)?;
    let covariance = c1.add(&c2)?;
    let total = invariance
        .affine(cfg.sim_weight, 0.0)?
        .add(&variance.affine(cfg.var_weight, 0.0)?)?
        .add(&covariance.affine(cfg.cov_weight, 0.0)?)?;
    Ok(VicregTerms {
        invariance,
        variance,
        covariance,
        total,
    })
}
