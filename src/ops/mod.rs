//! candle custom ops with real backward passes, used by every encoder: 2-D convolution
//! ([`conv2d`], [`Conv2d`]), BatchNorm with an optional fused activation ([`batch_norm_train`],
//! [`batch_norm_eval`], [`BatchNorm`], [`Activation`]) and the residual `relu(a + b)`
//! ([`add_relu`]).
//!
//! On the CPU (f32, f64) they run fused multi-threaded kernels ([`cpu`]: im2col + GEMM with the
//! `gemm` crate, direct depthwise kernels, one-pass BatchNorm statistics) with closed-form
//! gradients, instead of candle's convolution (whose backward convolves axis-swapped tensors)
//! and candle's BatchNorm (a chain of small ops). On other devices and dtypes the same functions
//! run candle's own ops, which are correct there (see each module).

pub mod batch_norm;
pub mod conv;
pub mod cpu;
pub mod eltwise;

pub use batch_norm::{
    batch_norm_eval, batch_norm_eval_reference, batch_norm_train, batch_norm_train_reference,
    Activation, BatchNorm, BatchStats,
};
pub use conv::{conv2d, conv2d_reference, Conv2d, ConvParams, Padding};
pub use eltwise::add_relu;
