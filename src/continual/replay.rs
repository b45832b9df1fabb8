//! Experience replay (ER): the method's loss on the current batch concatenated with the buffer
//! images (view by view), as CroMo-Mixup's `train_ering` trainers do.

use candle_core::Tensor;
use rand::Rng;

use super::{assemble, plain_terms, BatchComposition, BufferViews, StepInput, StepOutput};
use crate::methods::Method;
use crate::Result;

pub(super) fn step<R: Rng + ?Sized>(
    method: &mut Method,
    input: &StepInput,
    buffer: &BufferViews,
    rng: &mut R,
) -> Result<StepOutput> {
    let x1 = Tensor::cat(&[input.x1, buffer.x1], 0)?;
    let x2 = Tensor::cat(&[input.x2, buffer.x2], 0)?;
    let (ssl, mix) = plain_terms(method, &x1, &x2, rng)?;
    Ok(StepOutput {
        loss: assemble(ssl, None, None, None, mix)?,
        batch: BatchComposition {
            current: input.x1.dims()[0],
            replayed: buffer.x1.dims()[0],
            mixed: 0,
            buffer_tasks: buffer.tasks.to_vec(),
            lambda: None,
            teacher: false,
        },
        mix: None,
    })
}
