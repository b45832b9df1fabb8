//! CorInfoMax (Ozsoy et al., NeurIPS 2022): maximise the log-determinant of the running
//! covariance of each view's projections while pulling the two views together.
//!
//! The form implemented is the authors' `CovarianceLoss` / `CorInfoMax_Loss` (corinfomax-ssl),
//! which CroMo-Mixup's trainer uses unchanged (with the projections L2-normalised first):
//!
//! ```text
//! μ'ᵛ = λ_μ μᵛ + (1 − λ_μ) mean(zᵛ)                 (gradient flows through mean(zᵛ))
//! R'ᵛ = λ_R Rᵛ + (1 − λ_R) (zᵛ − μ'ᵛ)ᵀ(zᵛ − μ'ᵛ) / n  (centred with the *updated* mean)
//! cov = −[log det(R'¹ + εI) + log det(R'² + εI)] / d
//! inv = mean((z¹ − z²)²)                              (F.mse_loss)
//! loss = cov_weight · cov + inv_weight · inv
//! ```
//!
//! `λ_R = λ_μ = 0.01` are the weights of the *old* state (the new batch dominates). The state
//! `(μ', R')` is returned detached and replaces the caller's; reset it at every task.

use super::{check_matrix, check_pair, l2_normalize};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// CorInfoMax hyper-parameters (CroMo-Mixup's CIFAR-10 command line / corinfomax-ssl).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorInfoMaxConfig {
    /// Weight of the old running covariance, λ_R = 0.01.
    pub la_r: f64,
    /// Weight of the old running mean, λ_μ = 0.01.
    pub la_mu: f64,
    /// Initial covariance `R = r_ini · I` of a fresh state, 1.0.
    pub r_ini: f64,
    /// ε of the regularised log-determinant `log det(R + εI)`: 1e-8 as the authors' code (which
    /// keeps R in float64; here the log-determinant is evaluated in float64 too, see
    /// [`logdet_spd`]). solo-learn uses 1e-6.
    pub eps: f64,
    /// Weight of the invariance (MSE) term: 250 (CroMo-Mixup / corinfomax-ssl on CIFAR-10).
    pub inv_weight: f64,
    /// Weight of the log-det term, 1.0.
    pub cov_weight: f64,
    /// L2-normalise z¹, z² before everything else (CroMo-Mixup's trainer and the paper's
    /// `normalize_on`), true.
    pub normalize: bool,
}

impl Default for CorInfoMaxConfig {
    fn default() -> Self {
        Self {
            la_r: 0.01,
            la_mu: 0.01,
            r_ini: 1.0,
            eps: 1e-8,
            inv_weight: 250.0,
            cov_weight: 1.0,
            normalize: true,
        }
    }
}

/// Running means and covariances of the two views (the CorInfoMax method's state).
#[derive(Debug, Clone)]
pub struct CorInfoMaxState {
    /// Running mean of view 1, `(d,)`.
    pub mu1: Tensor,
    /// Running mean of view 2, `(d,)`.
    pub mu2: Tensor,
    /// Running covariance of view 1, `(d, d)`.
    pub r1: Tensor,
    /// Running covariance of view 2, `(d, d)`.
    pub r2: Tensor,
}

impl CorInfoMaxState {
    /// A fresh state for `dim`-dimensional projections: zero means, `R = r_ini · I`.
    pub fn new(dim: usize, cfg: &CorInfoMaxConfig, dtype: DType, device: &Device) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("CorInfoMaxState::new: dim must be positive"));
        }
        let mu = Tensor::zeros(dim, dtype, device)?;
        let r = Tensor::eye(dim, dtype, device)?.affine(cfg.r_ini, 0.0)?;
        Ok(Self {
            mu1: mu.clone(),
            mu2: mu,
            r1: r.clone(),
            r2: r,
        })
    }

    fn check(&self, d: usize, dtype: DType) -> Result<()> {
        let ok = self.mu1.dims() == [d]
            && self.mu2.dims() == [d]
            && self.r1.dims() == [d, d]
            && self.r2.dims() == [d, d];
        if !ok {
            return Err(Error::invalid(format!(
                "corinfomax: state shapes mu {:?}/{:?}, R {:?}/{:?} do not fit d = {d}",
                self.mu1.dims(),
                self.mu2.dims(),
                self.r1.dims(),
                self.r2.dims()
            )));
        }
        for t in [&self.mu1, &self.mu2, &self.r1, &self.r2] {
            if t.dtype() != dtype {
                return Err(Error::invalid(format!(
                    "corinfomax: state is {:?} but z is {dtype:?}",
                    t.dtype()
                )));
            }
        }
        Ok(())
    }
}

/// The CorInfoMax loss, its two unweighted terms and the updated state.
#[derive(Debug, Clone)]
pub struct CorInfoMaxOutput {
    /// `cov_weight · cov_loss + inv_weight · inv_loss`, scalar.
    pub loss: Tensor,
    /// `−[log det(R'¹ + εI) + log det(R'² + εI)] / d`, scalar.
    pub cov_loss: Tensor,
    /// `mean((z¹ − z²)²)`, scalar.
    pub inv_loss: Tensor,
    /// The updated running statistics, detached.
    pub state: CorInfoMaxState,
}

/// CorInfoMax loss (see the module documentation for the exact form).
///
/// `z1`, `z2`: `(n, d)` projections of the two views; `state`: running statistics from the
/// previous step (or [`CorInfoMaxState::new`] at the start of a task). Errors if `R' + εI` is
/// not numerically positive definite (it is whenever the previous R was).
///
/// Keep the batch larger than d (the authors use 512 vs 64): with `n ≤ d` the batch covariance is
/// singular, R' keeps eigenvalues of order `λ_R^steps · r_ini` in the unobserved directions, the
/// log-det gradient `(R' + εI)⁻¹` becomes very large and float32 loses precision in it.
pub fn corinfomax(
    z1: &Tensor,
    z2: &Tensor,
    state: &CorInfoMaxState,
    cfg: &CorInfoMaxConfig,
) -> Result<CorInfoMaxOutput> {
    const LOSS: &str = "corinfomax";
    let (n, d) = check_pair(z1, z2, LOSS, ("z1", "z2"))?;
    if n == 0 {
        return Err(Error::invalid(format!("{LOSS}: empty batch")));
    }
    if !((0.0..=1.0).contains(&cfg.la_r) && (0.0..=1.0).contains(&cfg.la_mu) && cfg.eps >= 0.0) {
        return Err(Error::invalid(format!(
            "{LOSS}: invalid configuration {cfg:?}"
        )));
    }
    state.check(d, z1.dtype())?;
    let (z1, z2) = if cfg.normalize {
        (l2_normalize(z1)?, l2_normalize(z2)?)
    } else {
        (z1.clone(), z2.clone())
    };
    let update = |z: &Tensor, mu: &Tensor, r: &Tensor| -> Result<(Tensor, Tensor)> {
        let mu_new = mu
            .affine(cfg.la_mu, 0.0)?
            .add(&z.mean(0)?.affine(1.0 - cfg.la_mu, 0.0)?)?;
        let centred = z.broadcast_sub(&mu_new.unsqueeze(0)?)?;
        let r_batch = centred.t()?.matmul(&centred)?.affine(1.0 / n as f64, 0.0)?;
        let r_new = r
            .affine(cfg.la_r, 0.0)?
            .add(&r_batch.affine(1.0 - cfg.la_r, 0.0)?)?;
        Ok((mu_new, r_new))
    };
    let (mu1, r1) = update(&z1, &state.mu1.detach(), &state.r1.detach())?;
    let (mu2, r2) = update(&z2, &state.mu2.detach(), &state.r2.detach())?;
    let logdet1 = logdet_spd(&r1, cfg.eps)?;
    let logdet2 = logdet_spd(&r2, cfg.eps)?;
    let cov_loss = logdet1.add(&logdet2)?.affine(-1.0 / d as f64, 0.0)?;
    let inv_loss = z1.sub(&z2)?.sqr()?.mean_all()?;
    let loss = cov_loss
        .affine(cfg.cov_weight, 0.0)?
        .add(&inv_loss.affine(cfg.inv_weight, 0.0)?)?;
    Ok(CorInfoMaxOutput {
        loss,
        cov_loss,
        inv_loss,
        state: CorInfoMaxState {
            mu1: mu1.detach(),
            mu2: mu2.detach(),
            r1: r1.detach(),
            r2: r2.detach(),
        },
    })
}

/// `log det(A + εI)` of a symmetric positive-definite `(d, d)` matrix, differentiable in `A`;
/// `-> ()` scalar in `A`'s dtype and device.
///
/// candle has no log-determinant, so the value is computed on the CPU in float64 by a Cholesky
/// factorisation `A + εI = L Lᵀ` (`log det = 2 Σ log L_ii`; float64 keeps small eigenvalues
/// and ε = 1e-8 meaningful even when `A` is f32), and the gradient `∂/∂A = (A + εI)⁻¹` is attached
/// through the identity `value + Σ (A − detach(A)) ⊙ (A + εI)⁻¹`, whose value is exactly `value`
/// and whose first derivative is the inverse. Costs one `d × d` transfer and O(d³) CPU work
/// (fine for CorInfoMax's d = 64–256); second derivatives are not supported. Errors, rather than
/// returning NaN, when a Cholesky pivot is not positive (the matrix is not numerically positive
/// definite) or the input is not finite.
pub fn logdet_spd(a: &Tensor, eps: f64) -> Result<Tensor> {
    let (d, d2) = check_matrix(a, "logdet_spd", "a")?;
    if d != d2 || d == 0 {
        return Err(Error::invalid(format!(
            "logdet_spd: needs a non-empty square matrix, got {:?}",
            a.dims()
        )));
    }
    let mut m: Vec<f64> = a
        .detach()
        .to_dtype(DType::F64)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    for i in 0..d {
        m[i * d + i] += eps;
    }
    // In-place Cholesky on the lower triangle (row-major).
    for j in 0..d {
        let mut diag = m[j * d + j];
        for k in 0..j {
            diag -= m[j * d + k] * m[j * d + k];
        }
        if !(diag.is_finite() && diag > 0.0) {
            return Err(Error::invalid(format!(
                "logdet_spd: the {d}x{d} matrix (+{eps:e}·I) is not positive definite: pivot {j} is \
                 {diag:e}; a CorInfoMax state may need a reset or a larger eps"
            )));
        }
        let l_jj = diag.sqrt();
        m[j * d + j] = l_jj;
        for i in j + 1..d {
            let mut s = m[i * d + j];
            for k in 0..j {
                s -= m[i * d + k] * m[j * d + k];
            }
            m[i * d + j] = s / l_jj;
        }
    }
    let logdet: f64 = 2.0 * (0..d).map(|i| m[i * d + i].ln()).sum::<f64>();
    // L⁻¹ by forward substitution (lower triangular), then A⁻¹ = L⁻ᵀ L⁻¹.
    let mut linv = vec![0f64; d * d];
    for c in 0..d {
        for i in c..d {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                s -= m[i * d + k] * linv[k * d + c];
            }
            linv[i * d + c] = s / m[i * d + i];
        }
    }
    let mut inv = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (i..d).map(|k| linv[k * d + i] * linv[k * d + j]).sum();
            inv[i * d + j] = s;
            inv[j * d + i] = s;
        }
    }
    let inv = Tensor::from_vec(inv, (d, d), &Device::Cpu)?
        .to_dtype(a.dtype())?
        .to_device(a.device())?;
    let value = Tensor::new(logdet, &Device::Cpu)?
        .to_dtype(a.dtype())?
        .to_device(a.device())?;
    let zero_with_grad = a.sub(&a.detach())?.mul(&inv)?.sum_all()?;
    Ok(value.add(&zero_with_grad)?)
}
