//! BYOL: online predictions against the EMA target's projections of the other view.

use candle_core::Tensor;

use super::Views;
use crate::losses::{byol, byol_symmetric};
use crate::{Error, Result};

/// `byol(p¹, t²) + byol(p², t¹)` (the sum of both directions, solo-learn / CaSSLe).
pub(crate) fn ssl(v: &Views) -> Result<Tensor> {
    match (&v.p1, &v.p2, &v.t1, &v.t2) {
        (Some(p1), Some(p2), Some(t1), Some(t2)) => byol_symmetric(p1, p2, t1, t2),
        _ => Err(Error::invalid(
            "byol: the views need predictions p1, p2 and EMA targets t1, t2",
        )),
    }
}

/// CaSSLe's `predictive` distiller: `½ [byol(g¹, f¹) + byol(g², f²)]`.
pub(crate) fn distill(g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
    let a = byol(g[0], f[0])?;
    let b = byol(g[1], f[1])?;
    Ok(a.add(&b)?.affine(0.5, 0.0)?)
}

/// PNR's BYOL pseudo-negative: `½ [byol(g¹, f²) + byol(g², f¹)]`.
pub(crate) fn pnr_negative(g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
    distill(g, [f[1], f[0]])
}
