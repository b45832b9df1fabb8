//! 2-D convolution with a real backward pass.
//!
//! [`conv2d`] dispatches on the device and dtype of its input:
//! * **CPU, f32 / f64**: a candle [`CustomOp2`] on (input, weight) whose forward is im2col + GEMM
//!   (1×1 stride-1 convolutions: a plain GEMM on the input; depthwise: a direct kernel) and whose
//!   `bwd` computes the input gradient (GEMM + col2im) and the weight gradient (GEMM over im2col)
//!   with the same kernels, see [`super::cpu`]. The input gradient is skipped when the input
//!   tracks no gradient (e.g. the images of the first layer). The op is differentiable once
//!   (its gradients carry no graph of their own).
//! * **Other devices (CUDA, Metal) or dtypes (f16, bf16)**: candle's own `conv2d`, after
//!   `pad_with_zeros` when the padding is not the same on all four sides; candle's autograd
//!   differentiates it. This is correct everywhere; it is the reference the CPU op is tested
//!   against ([`conv2d_reference`]). (A custom op cannot delegate to candle's CUDA convolution
//!   from inside `cuda_fwd`, hence the dispatch here; cuDNN kernels come with their own op.)
//!
//! Layout: NCHW input (B, C_in, H, W), weight (C_out, C_in / groups, kh, kw), output
//! (B, C_out, H_out, W_out) with `H_out = (H + top + bottom - kh) / stride + 1` and likewise for
//! W. Dilation is 1.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Module, Shape, Tensor};

use super::cpu::{self, ConvGeom, Float};
use crate::{Error, Result};

/// Zero padding of the four sides of a feature map, in pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    /// `p` pixels on every side (PyTorch's `padding=p`).
    pub fn uniform(p: usize) -> Self {
        Self::new(p, p, p, p)
    }

    /// Each side on its own (TensorFlow "same" padding puts the extra pixel at the bottom/right).
    pub fn new(top: usize, bottom: usize, left: usize, right: usize) -> Self {
        Self {
            top,
            bottom,
            left,
            right,
        }
    }

    /// The same amount on all four sides.
    pub fn is_uniform(&self) -> bool {
        self.top == self.bottom && self.left == self.right && self.top == self.left
    }
}

/// Stride, padding and groups of a convolution (dilation is always 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvParams {
    /// Step between output pixels, in input pixels (≥ 1), both directions.
    pub stride: usize,
    /// Zero padding per side.
    pub padding: Padding,
    /// Channel groups (1: dense; C_in: depthwise). C_in and C_out must be multiples of it.
    pub groups: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        Self::new(1, 0)
    }
}

impl ConvParams {
    /// Dense convolution with `stride` and `padding` pixels on every side.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding: Padding::uniform(padding),
            groups: 1,
        }
    }

    /// The same with `padding` per side.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// The same with `groups` channel groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// (H_out, W_out) for an (h, w) input and a (kh, kw) kernel; an error when the kernel does
    /// not fit into the padded input or the stride is 0.
    pub fn output_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Result<(usize, usize)> {
        let p = &self.padding;
        let (hp, wp) = (h + p.top + p.bottom, w + p.left + p.right);
        if self.stride == 0 || kh == 0 || kw == 0 || hp < kh || wp < kw {
            return Err(Error::invalid(format!(
                "conv2d: a {kh}x{kw} kernel with stride {} does not fit a {h}x{w} input padded by {p:?}",
                self.stride
            )));
        }
        Ok(((hp - kh) / self.stride + 1, (wp - kw) / self.stride + 1))
    }

    /// Checks the shapes of `x` (B,C_in,H,W) and `w` (C_out,C_in/groups,kh,kw).
    fn geometry(&self, x: &[usize], w: &[usize]) -> Result<ConvGeom> {
        let (&[b, cin, h, wd], &[cout, cin_g, kh, kw]) = (x, w) else {
            return Err(Error::invalid(format!(
                "conv2d: input must be (B,C,H,W) and weight (C_out,C_in/groups,kh,kw), got {x:?} and {w:?}"
            )));
        };
        let g = self.groups;
        if g == 0 || cin % g != 0 || cout % g != 0 || cin_g * g != cin {
            return Err(Error::invalid(format!(
                "conv2d: input {x:?} and weight {w:?} do not match {g} groups (C_in = {cin} must \
                 equal groups x weight dim 1, and C_out = {cout} be a multiple of the groups)"
            )));
        }
        let (oh, ow) = self.output_size(h, wd, kh, kw)?;
        Ok(ConvGeom {
            b,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            stride: self.stride,
            pt: self.padding.top,
            pl: self.padding.left,
            groups: g,
            oh,
            ow,
        })
    }
}

/// 2-D convolution `(B,C_in,H,W) ⊛ (C_out,C_in/groups,kh,kw) -> (B,C_out,H_out,W_out)`,
/// differentiable in both arguments. The fast CPU op for f32/f64 on the CPU, candle's
/// convolution elsewhere (see the module docs).
pub fn conv2d(x: &Tensor, w: &Tensor, p: &ConvParams) -> Result<Tensor> {
    let geom = p.geometry(x.dims(), w.dims())?;
    if x.dtype() != w.dtype() {
        return Err(Error::invalid(format!(
            "conv2d: input is {:?} but weight is {:?}",
            x.dtype(),
            w.dtype()
        )));
    }
    let fast = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    if !fast {
        return conv2d_reference(x, w, p);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(&w, Conv2dOp { geom })?)
}

/// candle's `conv2d` (with `pad_with_zeros` for padding that differs between sides), on any
/// device and dtype: what [`conv2d`] runs off the CPU, and the reference the CPU op is tested
/// against.
pub fn conv2d_reference(x: &Tensor, w: &Tensor, p: &ConvParams) -> Result<Tensor> {
    p.geometry(x.dims(), w.dims())?;
    let pd = p.padding;
    if pd.is_uniform() {
        return Ok(x.conv2d(w, pd.top, p.stride, 1, p.groups)?);
    }
    let x = x
        .pad_with_zeros(2, pd.top, pd.bottom)?
        .pad_with_zeros(3, pd.left, pd.right)?;
    Ok(x.conv2d(w, 0, p.stride, 1, p.groups)?)
}

/// A convolution layer: weight (C_out,C_in/groups,kh,kw), optional bias (C_out), parameters.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvParams,
}

impl Conv2d {
    /// A layer over existing tensors (e.g. `Var`s of a `VarMap`, shared with the optimiser).
    pub fn new(weight: Tensor, bias: Option<Tensor>, params: ConvParams) -> Result<Self> {
        let dims = weight.dims();
        if dims.len() != 4 {
            return Err(Error::invalid(format!(
                "Conv2d: weight must be (C_out,C_in/groups,kh,kw), got {dims:?}"
            )));
        }
        if let Some(b) = &bias {
            if b.dims() != [dims[0]] {
                return Err(Error::invalid(format!(
                    "Conv2d: bias must be ({},), got {:?}",
                    dims[0],
                    b.dims()
                )));
            }
        }
        Ok(Self {
            weight,
            bias,
            params,
        })
    }

    /// The weight (C_out,C_in/groups,kh,kw).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (C_out), if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, groups.
    pub fn params(&self) -> &ConvParams {
        &self.params
    }

    /// Same as [`conv2d`] with this layer's weight and parameters, plus the bias:
    /// (B,C_in,H,W) -> (B,C_out,H_out,W_out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv2d(x, &self.weight, &self.params)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
            None => y,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Ok(Conv2d::forward(self, x)?)
    }
}

/// The CPU custom op (input, weight) -> output.
struct Conv2dOp {
    geom: ConvGeom,
}

impl Conv2dOp {
    fn out_shape(&self) -> Shape {
        let g = &self.geom;
        Shape::from((g.b, g.cout, g.oh, g.ow))
    }

    fn backward<T: Float>(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        (need_dx, need_dw): (bool, bool),
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = cpu::with_cpu_slice::<T, _>(x, "conv2d bwd input", |xs| {
            cpu::with_cpu_slice::<T, _>(w, "conv2d bwd weight", |ws| {
                cpu::with_cpu_slice::<T, _>(dy, "conv2d bwd grad", |dys| {
                    Ok(cpu::conv2d_bwd(xs, ws, dys, &self.geom, need_dx, need_dw))
                })
            })
        })?;
        let dev = x.device();
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), dev))
            .transpose()?;
        let dw = dw
            .map(|v| Tensor::from_vec(v, w.shape(), dev))
            .transpose()?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "cromo-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let x = cpu::cpu_slice::<f32>(s1, l1, "conv2d input")?;
                let w = cpu::cpu_slice::<f32>(s2, l2, "conv2d weight")?;
                CpuStorage::F32(cpu::conv2d_fwd(x, w, &self.geom))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let x = cpu::cpu_slice::<f64>(s1, l1, "conv2d input")?;
                let w = cpu::cpu_slice::<f64>(s2, l2, "conv2d weight")?;
                CpuStorage::F64(cpu::conv2d_fwd(x, w, &self.geom))
            }
            _ => candle_core::bail!(
                "cromo-conv2d: input {:?} / weight {:?}: only f32 and f64 are supported",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((y, self.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Only arguments that lead to a variable need a gradient (not, e.g., input images).
        let need = (x.track_op(), w.track_op());
        let dy = grad.contiguous()?;
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        match x.dtype() {
            DType::F32 => self.backward::<f32>(&x, &w, &dy, need),
            DType::F64 => self.backward::<f64>(&x, &w, &dy, need),
            dt => candle_core::bail!("cromo-conv2d bwd: unsupported dtype {dt:?}"),
        }
    }
}
