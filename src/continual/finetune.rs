//! Fine-tune (and task 0 of every strategy): the method's loss alone.

use rand::Rng;

use super::{assemble, plain_terms, BatchComposition, StepInput, StepOutput};
use crate::methods::Method;
use crate::Result;

pub(super) fn step<R: Rng + ?Sized>(
    method: &mut Method,
    input: &StepInput,
    rng: &mut R,
) -> Result<StepOutput> {
    let (ssl, mix) = plain_terms(method, input.x1, input.x2, rng)?;
    Ok(StepOutput {
        loss: assemble(ssl, None, None, None, mix)?,
        batch: BatchComposition {
            current: input.x1.dims()[0],
            replayed: 0,
            mixed: 0,
            buffer_tasks: Vec::new(),
            lambda: None,
            teacher: false,
        },
        mix: None,
    })
}
