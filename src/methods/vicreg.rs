//! VICReg: invariance, variance and covariance terms on the two views' projections.

use candle_core::Tensor;

use super::{MethodConfig, Views};
use crate::losses::vicreg;
use crate::{Error, Result};

/// The weighted VICReg total of `(z¹, z²)`.
pub(crate) fn ssl(cfg: &MethodConfig, v: &Views) -> Result<Tensor> {
    Ok(vicreg(&v.z1, &v.z2, &cfg.vicreg)?.total)
}

/// `mean((a − b)²)` over all entries (`F.mse_loss`), shapes checked.
pub(crate) fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() || a.rank() != 2 {
        return Err(Error::invalid(format!(
            "mse: operands {:?} and {:?} must be (n, d) matrices of one shape",
            a.dims(),
            b.dims()
        )));
    }
    Ok(a.sub(b)?.sqr()?.mean_all()?)
}

/// CaSSLe's `predictive_mse` distiller: `½ [mse(g¹, f¹) + mse(g², f²)]` (λ_d = 25).
pub(crate) fn distill(g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
    let a = mse(g[0], f[0])?;
    let b = mse(g[1], f[1])?;
    Ok(a.add(&b)?.affine(0.5, 0.0)?)
}

/// PNR's VICReg pseudo-negative: `½ [mse(g¹, f²) + mse(g², f¹)]` (weight 23 in PNR).
pub(crate) fn pnr_negative(g: [&Tensor; 2], f: [&Tensor; 2]) -> Result<Tensor> {
    distill(g, [f[1], f[0]])
}
