//! torchvision ResNet-18 (BasicBlock, layers [2, 2, 2, 2]) with the ImageNet or the CIFAR stem.
//!
//! Tensor names are torchvision's: `conv1`, `bn1`, `layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}`,
//! `layer{2,3,4}.0.downsample.{0,1}` (1x1 stride-2 conv, BN); the classifier `fc` is not part of
//! the encoder (see [`crate::models::Classifier`]). BatchNorm eps 1e-5, momentum 0.1.

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

use super::{global_avg_pool, Arch, ConvBn, Encoder, Features};
use crate::ops::{add_relu, Activation, ConvParams};
use crate::Result;

const BN_EPS: f64 = 1e-5;

/// The first layers before `layer1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// `conv1` 7x7 stride 2 padding 3, BN, ReLU, max-pool 3x3 stride 2 padding 1 (stride 4 total).
    ImageNet,
    /// `conv1` 3x3 stride 1 padding 1, BN, ReLU, no max-pool (stride 1), for 32x32 images.
    Cifar,
}

fn conv_cfg(stride: usize, padding: usize) -> ConvParams {
    ConvParams::new(stride, padding)
}

/// torchvision `BasicBlock`: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
#[derive(Clone, Debug)]
pub struct BasicBlock {
    c1: ConvBn,
    c2: ConvBn,
    downsample: Option<ConvBn>,
}

impl BasicBlock {
    /// (B,cin,H,W) -> (B,cout,H/stride,W/stride); a 1x1 `downsample` when stride or width change.
    pub fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let c1 = ConvBn::new(
            cin,
            cout,
            3,
            conv_cfg(stride, 1),
            BN_EPS,
            vb.pp("conv1"),
            vb.pp("bn1"),
        )?;
        let c2 = ConvBn::new(
            cout,
            cout,
            3,
            conv_cfg(1, 1),
            BN_EPS,
            vb.pp("conv2"),
            vb.pp("bn2"),
        )?;
        let downsample = if stride != 1 || cin != cout {
            let d = vb.pp("downsample");
            Some(ConvBn::new(
                cin,
                cout,
                1,
                conv_cfg(stride, 0),
                BN_EPS,
                d.pp("0"),
                d.pp("1"),
            )?)
        } else {
            None
        };
        Ok(Self { c1, c2, downsample })
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.c1.forward_act(x, train, Activation::Relu)?;
        let y = self.c2.forward_act(&y, train, Activation::Identity)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward_act(x, train, Activation::Identity)?,
            None => x.clone(),
        };
        Ok(add_relu(&y, &shortcut)?)
    }
}

/// ResNet-18 encoder: (B,3,H,W) -> (B,512).
#[derive(Clone, Debug)]
pub struct ResNet18 {
    stem: Stem,
    conv1: ConvBn,
    layers: [Vec<BasicBlock>; 4],
}

impl ResNet18 {
    /// Builds the encoder with torchvision names under `vb` (no `fc`).
    pub fn new(vb: VarBuilder, stem: Stem) -> Result<Self> {
        let (k, stride, pad) = match stem {
            Stem::ImageNet => (7, 2, 3),
            Stem::Cifar => (3, 1, 1),
        };
        let conv1 = ConvBn::new(
            3,
            64,
            k,
            conv_cfg(stride, pad),
            BN_EPS,
            vb.pp("conv1"),
            vb.pp("bn1"),
        )?;
        let widths = [64, 128, 256, 512];
        let mut cin = 64;
        let mut layers: [Vec<BasicBlock>; 4] = Default::default();
        for (i, &w) in widths.iter().enumerate() {
            let lv = vb.pp(format!("layer{}", i + 1));
            let stride = if i == 0 { 1 } else { 2 };
            layers[i].push(BasicBlock::new(cin, w, stride, lv.pp("0"))?);
            layers[i].push(BasicBlock::new(w, w, 1, lv.pp("1"))?);
            cin = w;
        }
        Ok(Self {
            stem,
            conv1,
            layers,
        })
    }

    /// Which stem this network has.
    pub fn stem(&self) -> Stem {
        self.stem
    }

    fn stem_forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.conv1.forward_act(x, train, Activation::Relu)?;
        match self.stem {
            // Zero padding is exact here: the input follows a ReLU, so it is >= 0.
            Stem::ImageNet => y
                .pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?
                .max_pool2d_with_stride(3, 2),
            Stem::Cifar => Ok(y),
        }
    }

    fn layer_forward(&self, i: usize, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for b in &self.layers[i] {
            y = b.forward_t(&y, train)?;
        }
        Ok(y)
    }
}

impl ModuleT for ResNet18 {
    /// (B,3,H,W) -> (B,512).
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = self.stem_forward(x, train)?;
        for i in 0..4 {
            y = self.layer_forward(i, &y, train)?;
        }
        global_avg_pool(&y)
    }
}

impl Encoder for ResNet18 {
    fn arch(&self) -> Arch {
        match self.stem {
            Stem::ImageNet => Arch::ResNet18,
            Stem::Cifar => Arch::ResNet18Cifar,
        }
    }

    /// early = `layer1` output (B,64,H/4,W/4) (ImageNet stem) or (B,64,H,W) (CIFAR stem).
    fn features(&self, x: &Tensor, train: bool) -> Result<Features> {
        let y = self.stem_forward(x, train)?;
        let early = self.layer_forward(0, &y, train)?;
        let mut y = early.clone();
        for i in 1..4 {
            y = self.layer_forward(i, &y, train)?;
        }
        Ok(Features {
            pooled: global_avg_pool(&y)?,
            early,
        })
    }
}
