//! BYOL: negative cosine similarity between the online prediction and the EMA target, and the
//! cosine schedule of the EMA rate.

use super::{check_pair, l2_normalize, row_dot};
use crate::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// BYOL's EMA rate schedule: τ goes from `base_tau` at step 0 to `final_tau` at the last step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ByolConfig {
    /// τ at step 0 (0.99).
    pub base_tau: f64,
    /// τ at the last step (1.0).
    pub final_tau: f64,
}

impl Default for ByolConfig {
    fn default() -> Self {
        Self {
            base_tau: 0.99,
            final_tau: 1.0,
        }
    }
}

/// One direction of the BYOL loss: `2 − 2 · mean_i cos(p_i, z_i)`, in `[0, 4]`.
///
/// `p`: `(n, d)` online predictions; `z_target`: `(n, d)` target projections of the *other* view
/// (detached here: no gradient reaches the target network through the loss); `-> ()`.
pub fn byol(p: &Tensor, z_target: &Tensor) -> Result<Tensor> {
    let (n, _) = check_pair(p, z_target, "byol", ("p", "z_target"))?;
    if n == 0 {
        return Err(Error::invalid("byol: empty batch"));
    }
    let cos = row_dot(&l2_normalize(p)?, &l2_normalize(&z_target.detach())?)?;
    Ok(cos.mean_all()?.affine(-2.0, 2.0)?)
}

/// Symmetrised BYOL loss as solo-learn and CaSSLe compute it: the SUM of the two directions,
/// `byol(p1, z2_target) + byol(p2, z1_target)`, in `[0, 8]` (CroMo's code averages instead,
/// i.e. half of this).
///
/// `p1`, `p2`: `(n, d)` online predictions of views 1 and 2; `z1_target`, `z2_target`: `(n, d)`
/// EMA-target projections of views 1 and 2 (detached); `-> ()`.
pub fn byol_symmetric(
    p1: &Tensor,
    p2: &Tensor,
    z1_target: &Tensor,
    z2_target: &Tensor,
) -> Result<Tensor> {
    let a = byol(p1, z2_target)?;
    let b = byol(p2, z1_target)?;
    Ok(a.add(&b)?)
}

/// EMA rate at `step` of `total_steps` (cosine schedule of BYOL / solo-learn):
/// `τ_k = τ_final − (τ_final − τ_base) · (cos(π k / K) + 1) / 2`,
/// which for `τ_final = 1` is `1 − (1 − τ_base) · (cos(π k / K) + 1) / 2`.
/// The target update is then `θ_target ← τ_k θ_target + (1 − τ_k) θ_online`.
///
/// Errors if `total_steps == 0` or `step > total_steps`.
pub fn ema_tau(cfg: &ByolConfig, step: usize, total_steps: usize) -> Result<f64> {
    if total_steps == 0 || step > total_steps {
        return Err(Error::invalid(format!(
            "ema_tau: step {step} must lie in 0..={total_steps} and total_steps must be positive"
        )));
    }
    let c = (std::f64::consts::PI * step as f64 / total_steps as f64).cos();
    Ok(cfg.final_tau - (cfg.final_tau - cfg.base_tau) * (c + 1.0) / 2.0)
}
