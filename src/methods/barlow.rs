//! Barlow Twins: cross-correlation of the batch-standardised projections.

use candle_core::Tensor;

use super::{MethodConfig, Views};
use crate::losses::{barlow, l2_normalize, row_dot};
use crate::{Error, Result};

/// `barlow(z¹, z²)` with [`MethodConfig::barlow`].
pub(crate) fn ssl(cfg: &MethodConfig, v: &Views) -> Result<Tensor> {
    barlow(&v.z1, &v.z2, &cfg.barlow)
}

/// CaSSLe's `decorrelative` distiller: `½ [barlow(g¹, f¹) + barlow(g², f²)]` (CaSSLe's defaults
/// for it, λ_off 5e-3 and scale 0.1, are [`MethodConfig::barlow`]'s CIFAR setting).
pub(crate) fn distill(cfg: &MethodConfig, g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
    let a = barlow(g[0], f[0], &cfg.barlow)?;
    let b = barlow(g[1], f[1], &cfg.barlow)?;
    Ok(a.add(&b)?.affine(0.5, 0.0)?)
}

/// PNR's Barlow pseudo-negative, SimSiam's loss with the views crossed:
/// `½ [−mean cos(g¹, f²) − mean cos(g², f¹)]`.
pub(crate) fn pnr_negative(g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
    let neg_cos = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
        if a.dims() != b.dims() {
            return Err(Error::invalid(format!(
                "pnr (barlow): g {:?} and f {:?} must have one shape",
                a.dims(),
                b.dims()
            )));
        }
        Ok(row_dot(&l2_normalize(a)?, &l2_normalize(b)?)?
            .mean_all()?
            .neg()?)
    };
    let a = neg_cos(g[0], f[1])?;
    let b = neg_cos(g[1], f[0])?;
    Ok(a.add(&b)?.affine(0.5, 0.0)?)
}
