//! cromo: continual self-supervised learning on the edge.
//!
//! Encoders loaded from safetensors, real data-set readers, SSL objectives, continual strategies
//! and evaluation, on candle (CPU, CUDA); encoder inference also through WGSL compute shaders
//! (feature `wgpu`, module [`gpu`]).

pub mod buffer;
pub mod continual;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod fsutil;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod infer;
pub mod learner;
pub mod losses;
pub mod methods;
pub mod models;
pub mod ops;

pub use error::{Error, Result};
