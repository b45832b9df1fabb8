//! i-Mix (Lee et al., ICLR 2021): mix-up in the virtual-label space of instance discrimination.
//!
//! Each sample `i` of a batch has the virtual label `v_i` = one-hot of its batch index. A mixed
//! input `λ_i x_i + (1 − λ_i) x_{π(i)}` (π a random permutation, λ_i ~ Beta(α, α)) gets the label
//! `λ_i v_i + (1 − λ_i) v_{π(i)}`. Conventions follow the authors' `builder.py`: only the query
//! view is mixed; keys are the unmixed other view.

use super::{check_pair, check_positive, l2_normalize, row_dot, sim, soft_cross_entropy};
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

/// i-Mix hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImixConfig {
    /// Temperature of the N-pair logits, 0.2 (the authors' default).
    pub temperature: f64,
    /// α of `λ ~ Beta(α, α)`, 1.0 (uniform).
    pub alpha: f64,
    /// Replace λ by `max(λ, 1 − λ)` so the sample keeps the larger share, as the authors' `mixup`
    /// does (true).
    pub fold_lambda: bool,
}

impl Default for ImixConfig {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            alpha: 1.0,
            fold_lambda: true,
        }
    }
}

/// A mixed batch with its mixing coefficients and partners.
#[derive(Debug, Clone)]
pub struct ImixBatch {
    /// `(n, …)`: `λ_i x_i + (1 − λ_i) x_{π(i)}`.
    pub x_mix: Tensor,
    /// `(n,)` λ_i, in `x`'s dtype.
    pub lambdas: Tensor,
    /// `(n,)` u32 partner indices π(i) (a permutation; π(i) = i is possible).
    pub partners: Tensor,
}

/// Builds i-Mix's mixed batch from `x` `(n, …)`: a random permutation π and `λ_i ~ Beta(α, α)`
/// per sample (folded to `max(λ, 1 − λ)` when `cfg.fold_lambda`), drawn from `rng`.
pub fn imix_mix<R: Rng + ?Sized>(x: &Tensor, cfg: &ImixConfig, rng: &mut R) -> Result<ImixBatch> {
    let dims = x.dims();
    if dims.is_empty() || dims[0] == 0 || !x.dtype().is_float() {
        return Err(Error::invalid(format!(
            "imix_mix: needs a non-empty floating-point batch, got {:?} {dims:?}",
            x.dtype()
        )));
    }
    check_positive(cfg.alpha, "imix_mix", "alpha")?;
    let n = dims[0];
    let beta = Beta::new(cfg.alpha, cfg.alpha)
        .map_err(|e| Error::invalid(format!("imix_mix: Beta({0}, {0}): {e}", cfg.alpha)))?;
    let mut perm: Vec<u32> = (0..n as u32).collect();
    perm.shuffle(rng);
    let lambdas: Vec<f32> = (0..n)
        .map(|_| {
            let l: f64 = beta.sample(rng);
            (if cfg.fold_lambda { l.max(1.0 - l) } else { l }) as f32
        })
        .collect();
    let partners = Tensor::from_vec(perm, n, x.device())?;
    let lambdas = Tensor::from_vec(lambdas, n, x.device())?.to_dtype(x.dtype())?;
    let mut bshape = vec![n];
    bshape.extend(std::iter::repeat_n(1, dims.len() - 1));
    let lam = lambdas.reshape(bshape)?;
    let x_mix = x.broadcast_mul(&lam)?.add(
        &x.index_select(&partners, 0)?
            .broadcast_mul(&lam.affine(-1.0, 1.0)?)?,
    )?;
    Ok(ImixBatch {
        x_mix,
        lambdas,
        partners,
    })
}

/// Validates `(n,)` lambdas and partners for a batch of `n`.
fn check_mixing(
    lambdas: &Tensor,
    partners: &Tensor,
    n: usize,
    z: &Tensor,
    loss: &str,
) -> Result<()> {
    super::mixco::check_lambdas(lambdas, n, z, loss)?;
    if partners.dims() != [n] || partners.dtype() != DType::U32 {
        return Err(Error::invalid(format!(
            "{loss}: `partners` must be a u32 vector of {n} indices, got {:?} {:?}",
            partners.dtype(),
            partners.dims()
        )));
    }
    let idx: Vec<u32> = partners.to_vec1()?;
    if let Some(bad) = idx.iter().find(|&&j| j as usize >= n) {
        return Err(Error::invalid(format!(
            "{loss}: partner index {bad} is outside a batch of {n}"
        )));
    }
    Ok(())
}

/// i-Mix N-pair loss (i-Mix on SimCLR-style N-pair contrast).
///
/// `q_mix`: `(n, d)` projections of the mixed view; `keys`: `(n, d)` projections of the other,
/// unmixed view; `lambdas`: `(n,)`; `partners`: `(n,)` u32 π; `-> ()`. Vectors are
/// L2-normalised here; keys are not detached (in N-pair both come from the online encoder).
///
/// With `l_ij = q̂_i · k̂_j / τ`:
/// `loss = mean_i −[ λ_i log softmax(l_i)_i + (1 − λ_i) log softmax(l_i)_{π(i)} ]`, i.e. the
/// cross-entropy with the mixed virtual label `λ_i v_i + (1 − λ_i) v_{π(i)}`.
pub fn imix_npair(
    q_mix: &Tensor,
    keys: &Tensor,
    lambdas: &Tensor,
    partners: &Tensor,
    cfg: &ImixConfig,
) -> Result<Tensor> {
    const LOSS: &str = "imix_npair";
    let (n, _) = check_pair(q_mix, keys, LOSS, ("q_mix", "keys"))?;
    if n == 0 {
        return Err(Error::invalid(format!("{LOSS}: empty batch")));
    }
    check_mixing(lambdas, partners, n, q_mix, LOSS)?;
    check_positive(cfg.temperature, LOSS, "temperature")?;
    let logits =
        sim(&l2_normalize(q_mix)?, &l2_normalize(keys)?)?.affine(1.0 / cfg.temperature, 0.0)?;
    let lam = lambdas.detach().unsqueeze(1)?;
    let eye = Tensor::eye(n, DType::F32, q_mix.device())?.to_dtype(q_mix.dtype())?;
    let targets = eye.broadcast_mul(&lam)?.add(
        &eye.index_select(partners, 0)?
            .broadcast_mul(&lam.affine(-1.0, 1.0)?)?,
    )?;
    soft_cross_entropy(&[(&logits, None)], &targets)
}

/// i-Mix BYOL loss: `mean_i [ λ_i ℓ(p_i, z_i) + (1 − λ_i) ℓ(p_i, z_{π(i)}) ]` with
/// `ℓ(p, z) = 2 − 2 cos(p, z)`.
///
/// `p_mix`: `(n, d)` online predictions of the mixed view; `z_target`: `(n, d)` EMA-target
/// projections of the other, unmixed view (detached here); `lambdas`: `(n,)`; `partners`: `(n,)`
/// u32 π; `-> ()`.
pub fn imix_byol(
    p_mix: &Tensor,
    z_target: &Tensor,
    lambdas: &Tensor,
    partners: &Tensor,
) -> Result<Tensor> {
    const LOSS: &str = "imix_byol";
    let (n, _) = check_pair(p_mix, z_target, LOSS, ("p_mix", "z_target"))?;
    if n == 0 {
        return Err(Error::invalid(format!("{LOSS}: empty batch")));
    }
    check_mixing(lambdas, partners, n, p_mix, LOSS)?;
    let p = l2_normalize(p_mix)?;
    let z = l2_normalize(&z_target.detach())?;
    let own = row_dot(&p, &z)?;
    let other = row_dot(&p, &z.index_select(partners, 0)?)?;
    let lam = lambdas.detach();
    let cos = lam.mul(&own)?.add(&lam.affine(-1.0, 1.0)?.mul(&other)?)?;
    Ok(cos.mean_all()?.affine(-2.0, 2.0)?)
}
