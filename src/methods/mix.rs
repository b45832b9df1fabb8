//! MixCo and i-Mix as terms added to a method's loss (`--mix mixco|imix`).
//!
//! Both mix the view-1 images `x¹` of the batch and score the mixed samples' anchors (p for BYOL,
//! z otherwise; MoCo's z is its normalised query) against the *targets of view 2*: the EMA
//! target where the method has one (MoCo's keys, BYOL's target, detached), the online z² (with
//! gradient) otherwise.
//! * MixCo ([`crate::losses::mixco`]): `x_mix_i = λ_i x¹_i + (1 − λ_i) x¹_{i+n/2}`,
//!   λ_i ~ U(0, 1), soft targets λ_i on key i and 1 − λ_i on key i + n/2, τ_mix 0.05, MoCo's
//!   view-2 queue as extra negatives; the term is `β · L_MixCo` (β = 1). n must be even.
//! * i-Mix ([`crate::losses::imix_npair`], [`crate::losses::imix_byol`]): a random partner
//!   π(i) and λ_i ~ Beta(α, α) per sample; the N-pair form for every method but BYOL, the BYOL
//!   form `λ ℓ(p_mix, t_i) + (1 − λ) ℓ(p_mix, t_π(i))` for BYOL; weight 1.

use candle_core::Tensor;
use rand::Rng;

use super::{Method, MethodKind, MixKind, Views};
use crate::losses::{imix_byol, imix_mix, imix_npair, mixco, mixco_mix};
use crate::{Error, Result};

pub(crate) fn mix_loss<R: Rng + ?Sized>(
    method: &Method,
    kind: MixKind,
    x1: &Tensor,
    v: &Views,
    rng: &mut R,
) -> Result<Tensor> {
    let n = super::check_images(x1, "x1")?;
    if n != v.len() {
        return Err(Error::invalid(format!(
            "{kind}: {n} images but views of {} samples",
            v.len()
        )));
    }
    let keys = method.current_target(&v.embedding(1), v.target(1))?;
    let cfg = method.config();
    match kind {
        MixKind::MixCo => {
            let batch = mixco_mix(x1, rng)?;
            let e = method.embed(&batch.x_mix, true)?;
            let queue = match method.kind() {
                MethodKind::Moco => Some(method.moco_state()?.queue(1)?.clone()),
                _ => None,
            };
            let loss = mixco(
                e.anchor(),
                &keys,
                &batch.lambdas,
                queue.as_ref(),
                &cfg.mixco,
            )?;
            Ok(loss.affine(cfg.mixco.weight, 0.0)?)
        }
        MixKind::IMix => {
            let batch = imix_mix(x1, &cfg.imix, rng)?;
            let e = method.embed(&batch.x_mix, true)?;
            if method.kind() == MethodKind::Byol {
                imix_byol(e.anchor(), &keys, &batch.lambdas, &batch.partners)
            } else {
                imix_npair(
                    e.anchor(),
                    &keys,
                    &batch.lambdas,
                    &batch.partners,
                    &cfg.imix,
                )
            }
        }
    }
}
