//! InfoNCE / NT-Xent (SimCLR) and the two continual-learning forms built on it: the CaSSLe SimCLR
//! distillation and the PNR SimCLR loss.
//!
//! All similarities are cosine: every input is L2-normalised here (as `F.normalize(·, dim=-1)`
//! in solo-learn / CaSSLe / PNR), so callers pass raw projector or predictor outputs.

use super::{
    check_matrix, check_pair, check_positive, check_same_dtype, diag_exclusion, l2_normalize,
    logsumexp_blocks, row_dot, sim,
};
use crate::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Temperature of the InfoNCE family.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InfoNceConfig {
    /// Softmax temperature τ: 0.2 in CaSSLe on CIFAR (the default; also CaSSLe's and PNR's
    /// distillation temperature), 0.5 in CroMo-Mixup's code.
    pub temperature: f64,
}

impl Default for InfoNceConfig {
    fn default() -> Self {
        Self { temperature: 0.2 }
    }
}

/// NT-Xent (SimCLR) loss with optional extra negatives.
///
/// `z1`, `z2`: `(n, d)` projections of the two views of the same `n` images (row `i` of both is
/// sample `i`); `extra_negatives`: `(k, d)` vectors (a MoCo queue, frozen features, …) added to
/// every anchor's denominator; `-> ()` scalar.
///
/// The 2n vectors `z = [z1; z2]` are L2-normalised. For anchor `a` the positive is the other view
/// of the same sample and the candidates are the other 2n−1 batch vectors plus the extra
/// negatives:
/// `loss = mean_a −log( exp(z_a·z_a⁺/τ) / (Σ_{b≠a} exp(z_a·z_b/τ) + Σ_k exp(z_a·e_k/τ)) )`.
/// Identical to solo-learn's / CaSSLe's / CroMo's `simclr_loss_func`. Extra negatives are
/// normalised too and receive gradient only if they carry one (a queue or a frozen output does
/// not).
pub fn info_nce(
    z1: &Tensor,
    z2: &Tensor,
    extra_negatives: Option<&Tensor>,
    cfg: &InfoNceConfig,
) -> Result<Tensor> {
    const LOSS: &str = "info_nce";
    let (n, d) = check_pair(z1, z2, LOSS, ("z1", "z2"))?;
    check_positive(cfg.temperature, LOSS, "temperature")?;
    if n == 0 {
        return Err(Error::invalid(format!("{LOSS}: empty batch")));
    }
    let inv_t = 1.0 / cfg.temperature;
    let z = l2_normalize(&Tensor::cat(&[z1, z2], 0)?)?;
    let partner = Tensor::cat(&[z.narrow(0, n, n)?, z.narrow(0, 0, n)?], 0)?;
    let pos = row_dot(&z, &partner)?.affine(inv_t, 0.0)?;
    let logits = sim(&z, &z)?.affine(inv_t, 0.0)?;
    let not_self = diag_exclusion(2 * n, z.dtype(), z.device())?;
    let extra = match extra_negatives {
        Some(e) => {
            let (_, de) = check_matrix(e, LOSS, "extra_negatives")?;
            check_same_dtype(z1, e, LOSS, ("z1", "extra_negatives"))?;
            if de != d {
                return Err(Error::invalid(format!(
                    "{LOSS}: `extra_negatives` {:?} must have d = {d} columns like `z1` {:?}",
                    e.dims(),
                    z1.dims()
                )));
            }
            Some(sim(&z, &l2_normalize(e)?)?.affine(inv_t, 0.0)?)
        }
        None => None,
    };
    let mut blocks = vec![(&logits, Some(&not_self))];
    if let Some(e) = &extra {
        blocks.push((e, None));
    }
    let lse = logsumexp_blocks(&blocks)?;
    Ok(lse.sub(&pos)?.mean_all()?)
}

/// One direction of CaSSLe's `simclr_distill_loss_func`: anchors `a = [a1; a2]`, candidates all
/// of `b = [b1; b2]`, positive the same row of `b`.
fn distill_direction(a: &Tensor, b: &Tensor, inv_t: f64) -> Result<Tensor> {
    let pos = row_dot(a, b)?.affine(inv_t, 0.0)?;
    let logits = sim(a, b)?.affine(inv_t, 0.0)?;
    let lse = logsumexp_blocks(&[(&logits, None)])?;
    Ok(lse.sub(&pos)?.mean_all()?)
}

/// CaSSLe's SimCLR distillation loss (the `L_SSL(g(z), f(x))` term of CaSSLe for SimCLR).
///
/// `g1`, `g2`: `(n, d)` predictor outputs `g(z¹)`, `g(z²)` of the current model; `f1`, `f2`:
/// `(n, d)` frozen-model projections `f(x¹)`, `f(x²)` (detached here); `-> ()`.
///
/// With `g = norm([g1; g2])` and `f = norm([f1; f2])` (2n rows each), one direction is
/// `D(g, f) = mean_a −log( exp(g_a·f_a/τ) / Σ_{b=1..2n} exp(g_a·f_b/τ) )`: the positive is the
/// frozen vector of the same sample and view, and the denominator holds all 2n frozen vectors,
/// the positive and the sample's other view included. The loss is `½ [D(g, f) + D(f, g)]` (the
/// mirrored call has the frozen vectors as anchors against the g's), as in CaSSLe's
/// `contrastive_distill_wrapper`. Use the distillation temperature (CaSSLe: 0.2).
pub fn cassle_simclr_distill(
    g1: &Tensor,
    g2: &Tensor,
    f1: &Tensor,
    f2: &Tensor,
    cfg: &InfoNceConfig,
) -> Result<Tensor> {
    const LOSS: &str = "cassle_simclr_distill";
    let (n, _) = check_pair(g1, g2, LOSS, ("g1", "g2"))?;
    check_pair(f1, f2, LOSS, ("f1", "f2"))?;
    check_pair(g1, f1, LOSS, ("g1", "f1"))?;
    check_positive(cfg.temperature, LOSS, "temperature")?;
    if n == 0 {
        return Err(Error::invalid(format!("{LOSS}: empty batch")));
    }
    let inv_t = 1.0 / cfg.temperature;
    let g = l2_normalize(&Tensor::cat(&[g1, g2], 0)?)?;
    let f = l2_normalize(&Tensor::cat(&[f1, f2], 0)?)?.detach();
    let forward = distill_direction(&g, &f, inv_t)?;
    let mirrored = distill_direction(&f, &g, inv_t)?;
    Ok(forward.add(&mirrored)?.affine(0.5, 0.0)?)
}

/// The two terms of [`pnr_simclr`], scalars.
#[derive(Debug, Clone)]
pub struct PnrSimclrTerms {
    /// Main (plasticity) term: InfoNCE of the current model with the frozen vectors as extra
    /// pseudo-negatives.
    pub main: Tensor,
    /// Regulariser (stability) term: predictor outputs against frozen positives, with the
    /// current vectors as pseudo-negatives. Can be negative.
    pub reg: Tensor,
}

impl PnrSimclrTerms {
    /// `main + reg`, the value PNR adds to its objective.
    pub fn total(&self) -> Result<Tensor> {
        Ok(self.main.add(&self.reg)?)
    }
}

/// PNR's SimCLR loss (`simclr_moco_loss_func` of the PNR code), both terms.
///
/// `z1`, `z2`: `(n, d)` current projections of the two views; `p1`, `p2`: `(n, d)` predictor
/// outputs `g(z¹)`, `g(z²)`; `f1`, `f2`: `(n, d)` frozen projections (detached here). All six are
/// L2-normalised and stacked view-major into 2n rows `z`, `p`, `f`; a = anchor index, a⁺ = the
/// same sample's other view.
///
/// * main: `mean_a −log( exp(z_a·z_a⁺/τ) / (Σ_{b≠a} exp(z_a·z_b/τ) + Σ_{b≠a} exp(z_a·f_b/τ)) )`
///   — the frozen vector of the same sample and *same* view is dropped, the other view's frozen
///   vector stays as a negative;
/// * reg: `mean_a −[ p_a·f_a/τ − log( Σ_{b≠a} exp(p_a·f_b/τ) + Σ_{b≠a} exp(p_a·z_b/τ) ) ]` —
///   the positive `p_a·f_a` is *not* in its own denominator (so the term can go negative); the
///   current vectors `z` receive gradient from it.
///
/// The PNR code averages this call with the one with views swapped, which permutes the anchors
/// and so gives the same value; it is computed once here. Use the distillation temperature
/// (PNR: 0.2).
#[allow(clippy::too_many_arguments)]
pub fn pnr_simclr(
    z1: &Tensor,
    z2: &Tensor,
    p1: &Tensor,
    p2: &Tensor,
    f1: &Tensor,
    f2: &Tensor,
    cfg: &InfoNceConfig,
) -> Result<PnrSimclrTerms> {
    const LOSS: &str = "pnr_simclr";
    let (n, _) = check_pair(z1, z2, LOSS, ("z1", "z2"))?;
    check_pair(p1, p2, LOSS, ("p1", "p2"))?;
    check_pair(f1, f2, LOSS, ("f1", "f2"))?;
    check_pair(z1, p1, LOSS, ("z1", "p1"))?;
    check_pair(z1, f1, LOSS, ("z1", "f1"))?;
    check_positive(cfg.temperature, LOSS, "temperature")?;
    if n == 0 {
        return Err(Error::invalid(format!("{LOSS}: empty batch")));
    }
    let inv_t = 1.0 / cfg.temperature;
    let z = l2_normalize(&Tensor::cat(&[z1, z2], 0)?)?;
    let p = l2_normalize(&Tensor::cat(&[p1, p2], 0)?)?;
    let f = l2_normalize(&Tensor::cat(&[f1, f2], 0)?)?.detach();
    let off_diag = diag_exclusion(2 * n, z.dtype(), z.device())?;

    let partner = Tensor::cat(&[z.narrow(0, n, n)?, z.narrow(0, 0, n)?], 0)?;
    let pos1 = row_dot(&z, &partner)?.affine(inv_t, 0.0)?;
    let zz = sim(&z, &z)?.affine(inv_t, 0.0)?;
    let zf = sim(&z, &f)?.affine(inv_t, 0.0)?;
    let lse1 = logsumexp_blocks(&[(&zz, Some(&off_diag)), (&zf, Some(&off_diag))])?;
    let main = lse1.sub(&pos1)?.mean_all()?;

    let pos2 = row_dot(&p, &f)?.affine(inv_t, 0.0)?;
    let pf = sim(&p, &f)?.affine(inv_t, 0.0)?;
    let pz = sim(&p, &z)?.affine(inv_t, 0.0)?;
    let lse2 = logsumexp_blocks(&[(&pf, Some(&off_diag)), (&pz, Some(&off_diag))])?;
    let reg = lse2.sub(&pos2)?.mean_all()?;
    Ok(PnrSimclrTerms { main, reg })
}
