//! MixCo (Kim et al., 2020): mix-up contrast with semi-positive soft targets.
//!
//! Following the paper's Algorithm 1 (appendix A.1): the first half of the query batch is mixed
//! with the second half, `x_mix_i = λ_i x_i + (1 − λ_i) x_{i+n/2}`, `λ_i ~ U(0, 1)`; the mixed
//! queries are scored against all `n` keys of the other view (plus an optional queue) at the low
//! temperature τ_mix and trained towards the soft target `λ_i` on key `i` and `1 − λ_i` on key
//! `i + n/2`. The method adds `β · L_MixCo` to its contrastive loss (β = 1).

use super::{
    check_matrix, check_positive, check_same_dtype, l2_normalize, sim, soft_cross_entropy,
};
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// MixCo hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MixcoConfig {
    /// τ_mix, the temperature of the mixed logits, 0.05.
    pub temperature: f64,
    /// β, the weight of `L_MixCo` next to the contrastive loss, 1.0 (applied by the method).
    pub weight: f64,
}

impl Default for MixcoConfig {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            weight: 1.0,
        }
    }
}

/// A mixed query batch and its mixing coefficients.
#[derive(Debug, Clone)]
pub struct MixcoBatch {
    /// `(n/2, …)`: `λ_i x_i + (1 − λ_i) x_{i+n/2}`.
    pub x_mix: Tensor,
    /// `(n/2,)`: λ_i ∈ [0, 1), in `x`'s dtype.
    pub lambdas: Tensor,
}

/// Builds MixCo's mixed batch from a query batch `x` `(n, …)` (n even, any trailing shape such
/// as `(n, 3, H, W)`), drawing `λ_i ~ U(0, 1)` per mixed sample from `rng`.
pub fn mixco_mix<R: Rng + ?Sized>(x: &Tensor, rng: &mut R) -> Result<MixcoBatch> {
    let dims = x.dims();
    if dims.is_empty() || dims[0] == 0 || dims[0] % 2 != 0 || !x.dtype().is_float() {
        return Err(Error::invalid(format!(
            "mixco_mix: needs a floating-point batch with an even, non-zero number of rows, got \
             {:?} {dims:?}",
            x.dtype()
        )));
    }
    let m = dims[0] / 2;
    let lambdas: Vec<f32> = (0..m).map(|_| rng.random::<f32>()).collect();
    let lambdas = Tensor::from_vec(lambdas, m, x.device())?.to_dtype(x.dtype())?;
    let mut bshape = vec![m];
    bshape.extend(std::iter::repeat_n(1, dims.len() - 1));
    let lam = lambdas.reshape(bshape)?;
    let first = x.narrow(0, 0, m)?;
    let second = x.narrow(0, m, m)?;
    let x_mix = first
        .broadcast_mul(&lam)?
        .add(&second.broadcast_mul(&lam.affine(-1.0, 1.0)?)?)?;
    Ok(MixcoBatch { x_mix, lambdas })
}

/// Checks `lambdas` is an `(m,)` float vector like `z`.
pub(crate) fn check_lambdas(lambdas: &Tensor, m: usize, z: &Tensor, loss: &str) -> Result<()> {
    if lambdas.dims() != [m] {
        return Err(Error::invalid(format!(
            "{loss}: `lambdas` {:?} must be a vector of {m} mixing coefficients",
            lambdas.dims()
        )));
    }
    check_same_dtype(z, lambdas, loss, ("z", "lambdas"))
}

/// MixCo loss: soft-target cross-entropy of the mixed queries against the keys.
///
/// `z_mix`: `(m, d)` projections of the mixed queries; `keys`: `(2m, d)` projections of the
/// other view of the whole (unmixed) batch; `lambdas`: `(m,)` mixing coefficients (constants);
/// `extra_negatives`: optional `(K, d)` queue; `-> ()`. All vectors are L2-normalised here.
///
/// With `l_ij = ẑ_mix_i · k̂_j / τ_mix` over the 2m keys and the K extra negatives,
/// `loss = mean_i −[ λ_i log softmax(l_i)_i + (1 − λ_i) log softmax(l_i)_{i+m} ]`.
/// (The paper writes it with `KLDivLoss`, which differs by the constant entropy of the targets;
/// gradients are identical.) Keys receive gradient if they carry one: pass EMA-encoder keys for
/// MoCo, the online view-2 projections for SimCLR.
pub fn mixco(
    z_mix: &Tensor,
    keys: &Tensor,
    lambdas: &Tensor,
    extra_negatives: Option<&Tensor>,
    cfg: &MixcoConfig,
) -> Result<Tensor> {
    const LOSS: &str = "mixco";
    let (m, d) = check_matrix(z_mix, LOSS, "z_mix")?;
    let (nk, dk) = check_matrix(keys, LOSS, "keys")?;
    check_same_dtype(z_mix, keys, LOSS, ("z_mix", "keys"))?;
    if m == 0 || nk != 2 * m || dk != d {
        return Err(Error::invalid(format!(
            "{LOSS}: `keys` {:?} must be (2m, d) for `z_mix` (m, d) = {:?}",
            keys.dims(),
            z_mix.dims()
        )));
    }
    check_lambdas(lambdas, m, z_mix, LOSS)?;
    check_positive(cfg.temperature, LOSS, "temperature")?;
    let inv_t = 1.0 / cfg.temperature;
    let q = l2_normalize(z_mix)?;
    let logits = sim(&q, &l2_normalize(keys)?)?.affine(inv_t, 0.0)?;
    let extra = match extra_negatives {
        Some(e) => {
            let (_, de) = check_matrix(e, LOSS, "extra_negatives")?;
            check_same_dtype(z_mix, e, LOSS, ("z_mix", "extra_negatives"))?;
            if de != d {
                return Err(Error::invalid(format!(
                    "{LOSS}: `extra_negatives` {:?} must have d = {d} columns",
                    e.dims()
                )));
            }
            Some(sim(&q, &l2_normalize(e)?)?.affine(inv_t, 0.0)?)
        }
        None => None,
    };
    let lam = lambdas.detach().unsqueeze(1)?;
    let eye = Tensor::eye(m, DType::F32, z_mix.device())?.to_dtype(z_mix.dtype())?;
    let targets = Tensor::cat(
        &[
            eye.broadcast_mul(&lam)?,
            eye.broadcast_mul(&lam.affine(-1.0, 1.0)?)?,
        ],
        1,
    )?;
    let mut blocks = vec![(&logits, None)];
    if let Some(e) = &extra {
        blocks.push((e, None));
    }
    soft_cross_entropy(&blocks, &targets)
}
