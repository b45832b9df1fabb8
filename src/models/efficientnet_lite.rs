//! EfficientNet-Lite0 with the tensor names of `efficientnet_pytorch`.
//!
//! Stem 3x3 stride 2 to 32 channels; 16 MBConv blocks in 7 stages (repeats, kernel, stride,
//! expand, out): (1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40) (3,3,2,6,80) (3,5,1,6,112) (4,5,2,6,192)
//! (1,3,1,6,320); head 1x1 to 1280; global average pool. Lite: no squeeze-and-excitation, ReLU6,
//! BatchNorm eps 1e-3. Convolutions use TensorFlow "same" padding computed from the actual input
//! size (asymmetric for stride 2: the extra row / column goes at the bottom / right), so any input
//! size works. Drop-connect (a training-time regulariser of the original) is not applied.
//!
//! Names: `_conv_stem`, `_bn0`, `_blocks.{i}._expand_conv` (absent in block 0) / `_bn0` /
//! `_depthwise_conv` / `_bn1` / `_project_conv` / `_bn2`, `_conv_head`, `_bn1`; the classifier
//! `_fc` is not part of the encoder (see [`crate::models::Classifier`]).

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

use super::{conv_no_bias, global_avg_pool, Arch, Encoder, Features};
use crate::ops::{Activation, BatchNorm, Conv2d, ConvParams, Padding};
use crate::Result;

const BN_EPS: f64 = 1e-3;

/// (repeats, kernel, stride, expand ratio, output channels) per stage.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// Index of the last block of the 24-channel stage: its output is the early feature map.
const EARLY_BLOCK: usize = 2;

/// TensorFlow "same" padding of one spatial dimension: (before, after) for input size `size`.
/// out = ceil(size / stride); total = max((out - 1) * stride + k - size, 0); before = total / 2.
pub fn same_padding(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// A bias-free convolution with TensorFlow "same" padding (computed per input size); depthwise
/// when `groups == channels`. Runs on [`crate::ops::conv2d`] (the depthwise case on its direct
/// kernel).
#[derive(Clone, Debug)]
struct SameConv {
    /// weight (cout, cin / groups, k, k); padding filled in per call.
    conv: Conv2d,
    k: usize,
    stride: usize,
}

impl SameConv {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let conv = conv_no_bias(cin, cout, k, ConvParams::new(stride, 0), vb)?;
        Ok(Self { conv, k, stride })
    }

    fn depthwise(c: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let params = ConvParams::new(stride, 0).with_groups(c);
        let conv = conv_no_bias(c, c, k, params, vb)?;
        Ok(Self { conv, k, stride })
    }

    /// (B,Cin,H,W) -> (B,Cout,ceil(H/s),ceil(W/s)).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (pt, pb) = same_padding(h, self.k, self.stride);
        let (pl, pr) = same_padding(w, self.k, self.stride);
        let params = self
            .conv
            .params()
            .with_padding(Padding::new(pt, pb, pl, pr));
        Ok(crate::ops::conv2d(x, self.conv.weight(), &params)?)
    }
}

/// `act(bn(x))` (ReLU6 or none), fused.
fn bn_act(bn: &BatchNorm, x: &Tensor, train: bool, act: Activation) -> candle_core::Result<Tensor> {
    Ok(bn.forward_act(x, train, act)?)
}

/// Inverted residual (MBConv) block without squeeze-excitation.
#[derive(Clone, Debug)]
struct MbConv {
    expand: Option<(SameConv, BatchNorm)>,
    dw: SameConv,
    bn1: BatchNorm,
    project: SameConv,
    bn2: BatchNorm,
    skip: bool,
}

impl MbConv {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        expand: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mid = cin * expand;
        let expand = if expand != 1 {
            Some((
                SameConv::new(cin, mid, 1, 1, vb.pp("_expand_conv"))?,
                BatchNorm::new(mid, BN_EPS, vb.pp("_bn0"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            expand,
            dw: SameConv::depthwise(mid, k, stride, vb.pp("_depthwise_conv"))?,
            bn1: BatchNorm::new(mid, BN_EPS, vb.pp("_bn1"))?,
            project: SameConv::new(mid, cout, 1, 1, vb.pp("_project_conv"))?,
            bn2: BatchNorm::new(cout, BN_EPS, vb.pp("_bn2"))?,
            skip: stride == 1 && cin == cout,
        })
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        if let Some((conv, bn)) = &self.expand {
            y = bn_act(bn, &conv.forward(&y)?, train, Activation::Relu6)?;
        }
        y = bn_act(&self.bn1, &self.dw.forward(&y)?, train, Activation::Relu6)?;
        y = bn_act(
            &self.bn2,
            &self.project.forward(&y)?,
            train,
            Activation::Identity,
        )?;
        if self.skip {
            y = (y + x)?;
        }
        Ok(y)
    }
}

/// EfficientNet-Lite0 encoder: (B,3,H,W) -> (B,1280).
#[derive(Clone, Debug)]
pub struct EfficientNetLite0 {
    stem: SameConv,
    bn0: BatchNorm,
    blocks: Vec<MbConv>,
    head: SameConv,
    bn1: BatchNorm,
}

impl EfficientNetLite0 {
    /// Builds the encoder with `efficientnet_pytorch` names under `vb` (no `_fc`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let stem = SameConv::new(3, 32, 3, 2, vb.pp("_conv_stem"))?;
        let bn0 = BatchNorm::new(32, BN_EPS, vb.pp("_bn0"))?;
        let mut blocks = Vec::with_capacity(16);
        let mut cin = 32;
        for &(repeats, k, stride, expand, cout) in STAGES.iter() {
            for r in 0..repeats {
                let vbb = vb.pp(format!("_blocks.{}", blocks.len()));
                let s = if r == 0 { stride } else { 1 };
                blocks.push(MbConv::new(cin, cout, k, s, expand, vbb)?);
                cin = cout;
            }
        }
        let head = SameConv::new(cin, 1280, 1, 1, vb.pp("_conv_head"))?;
        let bn1 = BatchNorm::new(1280, BN_EPS, vb.pp("_bn1"))?;
        Ok(Self {
            stem,
            bn0,
            blocks,
            head,
            bn1,
        })
    }

    fn stem_forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        bn_act(&self.bn0, &self.stem.forward(x)?, train, Activation::Relu6)
    }

    fn blocks_forward(
        &self,
        range: std::ops::Range<usize>,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for b in &self.blocks[range] {
            y = b.forward_t(&y, train)?;
        }
        Ok(y)
    }

    fn head_forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = bn_act(&self.bn1, &self.head.forward(x)?, train, Activation::Relu6)?;
        global_avg_pool(&y)
    }
}

impl ModuleT for EfficientNetLite0 {
    /// (B,3,H,W) -> (B,1280).
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.stem_forward(x, train)?;
        let y = self.blocks_forward(0..self.blocks.len(), &y, train)?;
        self.head_forward(&y, train)
    }
}

impl Encoder for EfficientNetLite0 {
    fn arch(&self) -> Arch {
        Arch::EfficientNetLite0
    }

    /// early = output of `_blocks.2` (end of the 24-channel stage), (B,24,ceil(H/4),ceil(W/4)).
    fn features(&self, x: &Tensor, train: bool) -> Result<Features> {
        let y = self.stem_forward(x, train)?;
        let early = self.blocks_forward(0..EARLY_BLOCK + 1, &y, train)?;
        let y = self.blocks_forward(EARLY_BLOCK + 1..self.blocks.len(), &early, train)?;
        Ok(Features {
            pooled: self.head_forward(&y, train)?,
            early,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // TF: out = ceil(in / s); pad = max((out - 1) * s + k - in, 0), extra at the end.
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(224, 5, 2), (1, 2));
        assert_eq!(same_padding(7, 3, 2), (1, 1));
        assert_eq!(same_padding(56, 5, 1), (2, 2));
        assert_eq!(same_padding(1, 5, 2), (2, 2));
        assert_eq!(same_padding(14, 1, 1), (0, 0));
    }
}
