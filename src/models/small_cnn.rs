//! `small-cnn`: the edge encoder for CPU-only training (DESIGN section 5).
//!
//! Four stages, each a 3x3 convolution (no bias, padding 1) - BatchNorm (eps 1e-5) - ReLU, of
//! 32, 64, 128, 256 channels with strides 1, 2, 2, 2, then a global average pool to 256-d;
//! 388,896 parameters (plus 960 BatchNorm running statistics). Tensor names are those of the
//! PyTorch module in `tools/gen_model_fixtures.py`: `stages.{i}.conv.weight`,
//! `stages.{i}.bn.{weight,bias,running_mean,running_var}` for i = 0..3.

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

use super::{global_avg_pool, Arch, ConvBn, Encoder, Features};
use crate::ops::{Activation, ConvParams};
use crate::Result;

const WIDTHS: [usize; 4] = [32, 64, 128, 256];
const STRIDES: [usize; 4] = [1, 2, 2, 2];

/// small-cnn encoder: (B,3,H,W) -> (B,256).
#[derive(Clone, Debug)]
pub struct SmallCnn {
    stages: Vec<ConvBn>,
}

impl SmallCnn {
    /// Builds the four stages under `vb` (`stages.{i}.conv`, `stages.{i}.bn`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let mut stages = Vec::with_capacity(4);
        let mut cin = 3;
        for (i, (&w, &s)) in WIDTHS.iter().zip(STRIDES.iter()).enumerate() {
            let sv = vb.pp(format!("stages.{i}"));
            let cfg = ConvParams::new(s, 1);
            stages.push(ConvBn::new(
                cin,
                w,
                3,
                cfg,
                1e-5,
                sv.pp("conv"),
                sv.pp("bn"),
            )?);
            cin = w;
        }
        Ok(Self { stages })
    }

    fn stage(&self, i: usize, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.stages[i].forward_act(x, train, Activation::Relu)
    }
}

impl ModuleT for SmallCnn {
    /// (B,3,H,W) -> (B,256).
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for i in 0..self.stages.len() {
            y = self.stage(i, &y, train)?;
        }
        global_avg_pool(&y)
    }
}

impl Encoder for SmallCnn {
    fn arch(&self) -> Arch {
        Arch::SmallCnn
    }

    /// early = output of the first stage, (B,32,H,W).
    fn features(&self, x: &Tensor, train: bool) -> Result<Features> {
        let early = self.stage(0, x, train)?;
        let mut y = early.clone();
        for i in 1..self.stages.len() {
            y = self.stage(i, &y, train)?;
        }
        Ok(Features {
            pooled: global_avg_pool(&y)?,
            early,
        })
    }
}
