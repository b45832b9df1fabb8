//! SimCLR: NT-Xent on the two views' projections, and its continual-learning forms.

use candle_core::Tensor;

use super::{MethodConfig, Views};
use crate::losses::{cassle_simclr_distill, info_nce, pnr_simclr, PnrSimclrTerms};
use crate::Result;

/// `info_nce(z¹, z²)` at [`MethodConfig::info_nce`]'s temperature.
pub(crate) fn ssl(cfg: &MethodConfig, v: &Views) -> Result<Tensor> {
    info_nce(&v.z1, &v.z2, None, &cfg.info_nce)
}

/// CaSSLe's contrastive distillation (`contrastive` distiller, also used for MoCo):
/// `½ [D(g, f) + D(f, g)]` at the distillation temperature, see
/// [`crate::losses::cassle_simclr_distill`].
pub(crate) fn distill(cfg: &MethodConfig, g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
    cassle_simclr_distill(g[0], g[1], f[0], f[1], &cfg.distill)
}

/// `info_nce(a, b)`: NT-Xent with `a_i`, `b_i` as the positive pair (CroMo-Mixup's
/// `info_nce_loss` on `cat(a, b)`), at the SimCLR temperature.
pub(crate) fn cross(cfg: &MethodConfig, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    info_nce(a, b, None, &cfg.info_nce)
}

/// PNR's SimCLR loss at the distillation temperature (main term + regulariser).
pub(crate) fn pnr(
    cfg: &MethodConfig,
    v: &Views,
    g: [&Tensor; 2],
    f: [&Tensor; 2],
) -> Result<PnrSimclrTerms> {
    pnr_simclr(&v.z1, &v.z2, g[0], g[1], f[0], f[1], &cfg.distill)
}
