//! PNR (pseudo-negative regularisation): see [`Method::pnr_loss`] for the per-method forms.

use rand::Rng;

use super::cassle::distill_inputs;
use super::{assemble, BatchComposition, StepInput, StepOutput, Strategy, Teacher};
use crate::methods::Method;
use crate::Result;

pub(super) fn step<R: Rng + ?Sized>(
    strategy: &Strategy,
    method: &mut Method,
    teacher: &Teacher,
    input: &StepInput,
    rng: &mut R,
) -> Result<StepOutput> {
    let kind = method.kind();
    let v = method.views(input.x1, input.x2)?;
    let (g, f) = distill_inputs(method, teacher, &v, input.x1, input.x2)?;
    let terms = method.pnr_loss(
        &v,
        [&g[0], &g[1]],
        [&f[0], &f[1]],
        strategy.distill_weight(kind),
        strategy.pnr_negative_weight(kind),
    )?;
    let ssl = match terms.ssl {
        Some(main) => main,
        None => method.ssl_loss(&v)?,
    };
    let mix = method.mix_loss(input.x1, &v, rng)?;
    Ok(StepOutput {
        loss: assemble(ssl, Some(terms.distill), terms.negative, None, mix)?,
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
