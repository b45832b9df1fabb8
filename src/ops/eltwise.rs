//! Fused element-wise ops of the residual blocks.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{self, Float};
use crate::{Error, Result};

/// `relu(a + b)` for two tensors of one shape (a residual block's output), with gradient
/// `dy·[y > 0]` for both; on the CPU (f32/f64) one pass forward and one backward instead of
/// candle's add, ReLU and their backward ops; elsewhere candle's ops.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        return Err(Error::invalid(format!(
            "add_relu: operands must have one shape and dtype, got {:?} {:?} and {:?} {:?}",
            a.dims(),
            a.dtype(),
            b.dims(),
            b.dtype()
        )));
    }
    let fast = matches!(a.device(), Device::Cpu) && matches!(a.dtype(), DType::F32 | DType::F64);
    if !fast {
        return Ok((a + b)?.relu()?);
    }
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)?)
}

/// Elements per parallel task of the element-wise kernels.
const CHUNK: usize = 1 << 15;

struct AddRelu;

fn add_relu_fwd<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); a.len()];
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
        let off = i * CHUNK;
        let (a, b) = (&a[off..off + o.len()], &b[off..off + o.len()]);
        for ((o, &x), &z) in o.iter_mut().zip(a).zip(b) {
            let s = x + z;
            *o = if s > T::zero() { s } else { T::zero() };
        }
    });
    y
}

fn relu_mask_grad<T: Float>(y: &[T], g: &[T]) -> Vec<T> {
    let mut d = vec![T::zero(); y.len()];
    d.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
        let off = i * CHUNK;
        let (y, g) = (&y[off..off + o.len()], &g[off..off + o.len()]);
        for ((o, &yv), &gv) in o.iter_mut().zip(y).zip(g) {
            *o = if yv > T::zero() { gv } else { T::zero() };
        }
    });
    d
}

impl AddRelu {
    fn bwd_t<T: Float>(&self, res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        let grad = grad.contiguous()?;
        let d = cpu::with_cpu_slice::<T, _>(res, "add_relu bwd output", |y| {
            cpu::with_cpu_slice::<T, _>(&grad, "add_relu bwd grad", |g| Ok(relu_mask_grad(y, g)))
        })?;
        Tensor::from_vec(d, res.shape(), res.device())
    }
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "cromo-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(add_relu_fwd(
                cpu::cpu_slice::<f32>(s1, l1, "add_relu a")?,
                cpu::cpu_slice::<f32>(s2, l2, "add_relu b")?,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(add_relu_fwd(
                cpu::cpu_slice::<f64>(s1, l1, "add_relu a")?,
                cpu::cpu_slice::<f64>(s2, l2, "add_relu b")?,
            )),
            _ => candle_core::bail!(
                "cromo-add-relu: unsupported dtypes {:?} / {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = match res.dtype() {
            DType::F32 => self.bwd_t::<f32>(res, grad)?,
            DType::F64 => self.bwd_t::<f64>(res, grad)?,
            dt => candle_core::bail!("cromo-add-relu bwd: unsupported dtype {dt:?}"),
        };
        // The two operands get the same gradient; candle only reads it (no in-place update).
        Ok((Some(d.clone()), Some(d)))
    }
}
