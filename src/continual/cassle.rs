//! CaSSLe: `L_SSL(z¹, z²) + λ_d · L_distill([g(z¹), g(z²)], [f(x¹), f(x²)])`, with `g` the
//! student's distillation predictor and `f` the frozen teacher (CaSSLe's distill wrappers).

use candle_core::Tensor;
use rand::Rng;

use super::{assemble, BatchComposition, StepInput, StepOutput, Strategy, Teacher};
use crate::methods::{Method, Views};
use crate::Result;

/// `g(z¹), g(z²)` of the student and `f(x¹), f(x²)` of the teacher.
pub(super) fn distill_inputs(
    method: &Method,
    teacher: &Teacher,
    v: &Views,
    x1: &Tensor,
    x2: &Tensor,
) -> Result<([Tensor; 2], [Tensor; 2])> {
    let g = [
        method.distill_predict(&v.z1)?,
        method.distill_predict(&v.z2)?,
    ];
    let f = [teacher.forward(x1)?, teacher.forward(x2)?];
    Ok((g, f))
}

pub(super) fn step<R: Rng + ?Sized>(
    strategy: &Strategy,
    method: &mut Method,
    teacher: &Teacher,
    input: &StepInput,
    rng: &mut R,
) -> Result<StepOutput> {
    let v = method.views(input.x1, input.x2)?;
    let ssl = method.ssl_loss(&v)?;
    let mix = method.mix_loss(input.x1, &v, rng)?;
    let (g, f) = distill_inputs(method, teacher, &v, input.x1, input.x2)?;
    let lambda_d = strategy.distill_weight(method.kind());
    let distill = method
        .distill_loss([&g[0], &g[1]], [&f[0], &f[1]])?
        .affine(lambda_d, 0.0)?;
    Ok(StepOutput {
        loss: assemble(ssl, Some(distill), None, None, mix)?,
        batch: BatchComposition {
            current: input.x1.dims()[0],
            replayed: 0,
            mixed: 0,
            buffer_tasks: Vec::new(),
            lambda: None,
            teacher: true,
        },
        mix: None,
    })
}
