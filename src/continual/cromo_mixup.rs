//! CroMo-Mixup (Mushtaq et al., ECCV 2024) and CroMo-Mixup* (its data mixup without the
//! cross-model term), following the authors' `train_mixed_distillation.py`.
//!
//! With n current images, m = min(n, buffer images) and one λ per step, view by view
//! (v = 1, 2): `x_mixᵥ = λ xᵥ[:m] + (1 − λ) x_Mᵥ[:m]`. The online network runs once per view on
//! `cat(xᵥ, x_mixᵥ)` (BatchNorm statistics over the n + m samples, as the authors' code), the
//! teacher on `cat(xᵥ, x_Mᵥ)`; then
//!
//! ```text
//! L = L_SSL(z¹[:n], z²[:n]) + λ_d · L_distill(g(z[:n]), f(x)) + ½ Σᵥ L_CroMo,ᵥ
//! L_CroMo,ᵥ = λ · L(aᵥ, cᵥ) + (1 − λ) · L(aᵥ, oᵥ)
//! ```
//!
//! where `L` is [`Method::cross_loss`], `aᵥ` the mixed samples' anchors (rows n.. of the online
//! output; BYOL's predictions), `cᵥ` the current model's target of the first m current images
//! ([`Method::current_target`], *not* detached for the methods without an EMA target; BYOL's
//! and MoCo's EMA target otherwise), and `oᵥ`
//! * CroMo-Mixup: the frozen teacher's projection of the *unmixed* buffer views `f(x_Mᵥ)`;
//! * CroMo-Mixup*: the current model's own target of the buffer views, computed by a separate
//!   forward (the "new model feature mixup" variant left commented in the authors' code).

use candle_core::Tensor;
use rand::Rng;
use rand_distr::{Beta, Distribution};

use super::{
    assemble, BatchComposition, BufferViews, MixRecord, StepInput, StepOutput, Strategy, Teacher,
};
use crate::methods::{Method, Views};
use crate::{Error, Result};

pub(super) fn step<R: Rng + ?Sized>(
    strategy: &Strategy,
    method: &mut Method,
    teacher: &Teacher,
    input: &StepInput,
    buffer: &BufferViews,
    cross_model: bool,
    rng: &mut R,
) -> Result<StepOutput> {
    let cfg = strategy.config();
    let n = input.x1.dims()[0];
    let m = n.min(buffer.x1.dims()[0]);
    let lambda = match cfg.mix_lambda {
        Some(l) => l,
        None => Beta::new(cfg.mix_alpha, cfg.mix_alpha)
            .map_err(|e| Error::invalid(format!("cromo: Beta({0}, {0}): {e}", cfg.mix_alpha)))?
            .sample(rng),
    };
    let xs = [input.x1, input.x2];
    let bs = [buffer.x1.narrow(0, 0, m)?, buffer.x2.narrow(0, 0, m)?];
    let mut x_mix = Vec::with_capacity(2);
    let mut online = Vec::with_capacity(2);
    let mut targets = Vec::with_capacity(2);
    for v in 0..2 {
        let mixed = xs[v]
            .narrow(0, 0, m)?
            .affine(lambda, 0.0)?
            .add(&bs[v].affine(1.0 - lambda, 0.0)?)?;
        online.push(method.embed(&Tensor::cat(&[xs[v], &mixed], 0)?, true)?);
        targets.push(method.embed_target(xs[v])?);
        x_mix.push(mixed);
    }
    let current = Views::from_parts(
        online[0].rows(0, n)?,
        online[1].rows(0, n)?,
        targets[0].clone(),
        targets[1].clone(),
    );
    let ssl = method.ssl_loss(&current)?;
    let method_mix = method.mix_loss(input.x1, &current, rng)?;

    let g = [
        method.distill_predict(&current.z1)?,
        method.distill_predict(&current.z2)?,
    ];
    let frozen: Vec<Tensor> = if cross_model {
        (0..2)
            .map(|v| teacher.forward(&Tensor::cat(&[xs[v], &bs[v]], 0)?))
            .collect::<Result<_>>()?
    } else {
        (0..2)
            .map(|v| teacher.forward(xs[v]))
            .collect::<Result<_>>()?
    };
    let f_cur = [frozen[0].narrow(0, 0, n)?, frozen[1].narrow(0, 0, n)?];
    let distill = method
        .distill_loss([&g[0], &g[1]], [&f_cur[0], &f_cur[1]])?
        .affine(strategy.distill_weight(method.kind()), 0.0)?;

    let mut mixed_terms = Vec::with_capacity(2);
    for v in 0..2 {
        let anchor = online[v].rows(n, m)?.anchor().clone();
        let first_m = online[v].rows(0, m)?;
        let t_first_m = current.target(v).map(|t| t.narrow(0, 0, m)).transpose()?;
        let cur_target = method.current_target(&first_m, t_first_m.as_ref())?;
        let old_target = if cross_model {
            frozen[v].narrow(0, n, m)?
        } else {
            let e = method.embed(&bs[v], true)?;
            let t = method.embed_target(&bs[v])?;
            method.current_target(&e, t.as_ref())?
        };
        let term = method
            .cross_loss(&anchor, &cur_target, v)?
            .affine(lambda, 0.0)?
            .add(
                &method
                    .cross_loss(&anchor, &old_target, v)?
                    .affine(1.0 - lambda, 0.0)?,
            )?;
        mixed_terms.push(term);
    }
    let mixed = mixed_terms[0].add(&mixed_terms[1])?.affine(0.5, 0.0)?;
    let x_mix2 = x_mix.pop();
    let x_mix1 = x_mix.pop();
    let (Some(x_mix1), Some(x_mix2)) = (x_mix1, x_mix2) else {
        return Err(Error::invalid("internal: cromo lost its mixed views"));
    };
    Ok(StepOutput {
        loss: assemble(ssl, Some(distill), None, Some(mixed), method_mix)?,
        batch: BatchComposition {
            current: n,
            replayed: 0,
            mixed: m,
            buffer_tasks: buffer.tasks[..m].to_vec(),
            lambda: Some(lambda),
            teacher: true,
        },
        mix: Some(MixRecord {
            lambda,
            x_mix1,
            x_mix2,
        }),
    })
}
