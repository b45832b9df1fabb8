//! Encoders (one architecture per file) and their weights I/O.
//!
//! Every encoder is a real struct implementing candle's [`ModuleT`]: `forward_t(x, train)` maps an
//! NCHW image batch to its pooled feature, with BatchNorm using batch statistics (and updating its
//! running statistics) when `train` is true and the running statistics when it is false. Encoders
//! are built from a [`VarBuilder`] whose tensor names are those of the PyTorch `state_dict()` of the
//! reference implementation (torchvision ResNet-18, `efficientnet_pytorch` EfficientNet-Lite0, the
//! `nn.Module` of `tools/gen_model_fixtures.py` for `small-cnn`), so a PyTorch checkpoint saved as
//! safetensors loads unchanged (see [`weights`]).
//!
//! | `--arch`            | feature dim | input | mean / std                                     |
//! |---------------------|-------------|-------|------------------------------------------------|
//! | `resnet18`          | 512         | 224   | ImageNet (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) |
//! | `resnet18-cifar`    | 512         | 32    | CIFAR-10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616) |
//! | `efficientnet-lite0`| 1280        | 224   | (0.5, 0.5, 0.5) / (0.5, 0.5, 0.5)              |
//! | `small-cnn`         | 256         | 32    | CIFAR-10, as `resnet18-cifar`                  |

pub mod efficientnet_lite;
pub mod heads;
pub mod resnet;
pub mod small_cnn;
pub mod weights;

use std::fmt;
use std::str::FromStr;

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{Activation, BatchNorm, Conv2d, ConvParams};
use crate::{Error, Result};

pub use efficientnet_lite::EfficientNetLite0;
pub use resnet::{ResNet18, Stem};
pub use small_cnn::SmallCnn;

/// The encoder architectures cromo knows, named on the command line by `--arch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// torchvision ResNet-18 with the ImageNet stem (7x7/2 conv, 3x3/2 max-pool).
    ResNet18,
    /// ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool).
    ResNet18Cifar,
    /// EfficientNet-Lite0 (no squeeze-excitation, ReLU6, TensorFlow "same" padding).
    EfficientNetLite0,
    /// Four 3x3 conv-BN-ReLU stages of 32, 64, 128, 256 channels (~0.39 M parameters).
    SmallCnn,
}

impl Arch {
    /// All architectures, in the order of the table above.
    pub const ALL: [Arch; 4] = [
        Arch::ResNet18,
        Arch::ResNet18Cifar,
        Arch::EfficientNetLite0,
        Arch::SmallCnn,
    ];

    /// The command-line name (`resnet18`, `resnet18-cifar`, `efficientnet-lite0`, `small-cnn`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet18Cifar => "resnet18-cifar",
            Arch::EfficientNetLite0 => "efficientnet-lite0",
            Arch::SmallCnn => "small-cnn",
        }
    }

    /// Width D of the pooled feature.
    pub fn feature_dim(self) -> usize {
        match self {
            Arch::ResNet18 | Arch::ResNet18Cifar => 512,
            Arch::EfficientNetLite0 => 1280,
            Arch::SmallCnn => 256,
        }
    }

    /// Default square input side in pixels (any size works; this is what the weights expect).
    pub fn input_size(self) -> usize {
        match self {
            Arch::ResNet18 | Arch::EfficientNetLite0 => 224,
            Arch::ResNet18Cifar | Arch::SmallCnn => 32,
        }
    }

    /// Per-channel RGB mean subtracted from images scaled to [0, 1].
    pub fn mean(self) -> [f32; 3] {
        match self {
            Arch::ResNet18 => IMAGENET_MEAN,
            Arch::ResNet18Cifar | Arch::SmallCnn => CIFAR10_MEAN,
            Arch::EfficientNetLite0 => [0.5, 0.5, 0.5],
        }
    }

    /// Per-channel RGB standard deviation images are divided by after the mean is subtracted.
    pub fn std(self) -> [f32; 3] {
        match self {
            Arch::ResNet18 => IMAGENET_STD,
            Arch::ResNet18Cifar | Arch::SmallCnn => CIFAR10_STD,
            Arch::EfficientNetLite0 => [0.5, 0.5, 0.5],
        }
    }

    /// Prefix of the classifier head's tensors in a checkpoint (`fc` or `_fc`).
    pub fn head_prefix(self) -> &'static str {
        match self {
            Arch::EfficientNetLite0 => "_fc",
            _ => "fc",
        }
    }
}

/// ImageNet RGB mean (torchvision convention).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet RGB standard deviation (torchvision convention).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// CIFAR-10 RGB mean.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 RGB standard deviation.
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                Error::invalid(format!(
                    "unknown architecture `{s}` (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// What an encoder computes for a batch of B images.
#[derive(Clone, Debug)]
pub struct Features {
    /// Global-average-pooled last feature map, (B, D) with D = [`Arch::feature_dim`].
    pub pooled: Tensor,
    /// An early feature map, (B, C, h, w): ResNet after `layer1` (64 channels, stride 4 with the
    /// ImageNet stem, stride 1 with the CIFAR stem); EfficientNet-Lite0 after the 24-channel stage
    /// (`_blocks.2`, 24 channels, stride 4); small-cnn after its first stage (`stages.0`,
    /// 32 channels, stride 1).
    pub early: Tensor,
}

/// A feature extractor: `forward_t` (from [`ModuleT`]) gives the pooled feature,
/// (B,3,H,W) -> (B,D), and [`Encoder::features`] gives it together with an early map.
pub trait Encoder: ModuleT + Send + Sync {
    /// The architecture this encoder implements.
    fn arch(&self) -> Arch;

    /// Width D of the pooled feature.
    fn feature_dim(&self) -> usize {
        self.arch().feature_dim()
    }

    /// (B,3,H,W) -> pooled (B,D) and early (B,C,h,w); `train` selects batch statistics in BatchNorm
    /// (which also updates the running statistics).
    fn features(&self, x: &Tensor, train: bool) -> Result<Features>;
}

/// Builds the encoder of `arch` from `vb`, whose names are those of the PyTorch state_dict
/// (no classifier head). Tensors absent from a `VarMap`-backed builder are created with
/// PyTorch-like initialisation; other builders fail on a missing tensor.
pub fn build_encoder(arch: Arch, vb: VarBuilder) -> Result<Box<dyn Encoder>> {
    Ok(match arch {
        Arch::ResNet18 => Box::new(ResNet18::new(vb, Stem::ImageNet)?),
        Arch::ResNet18Cifar => Box::new(ResNet18::new(vb, Stem::Cifar)?),
        Arch::EfficientNetLite0 => Box::new(EfficientNetLite0::new(vb)?),
        Arch::SmallCnn => Box::new(SmallCnn::new(vb)?),
    })
}

/// An encoder followed by a linear classifier head (`fc` for ResNet / small-cnn, `_fc` for
/// EfficientNet-Lite0): (B,3,H,W) -> logits (B, num_classes). Used for ImageNet inference with
/// the checkpoint's own head.
pub struct Classifier {
    encoder: Box<dyn Encoder>,
    head: Linear,
    num_classes: usize,
}

impl Classifier {
    /// Builds encoder and head (`<head_prefix>.weight` (num_classes, D), `<head_prefix>.bias`).
    pub fn new(arch: Arch, vb: VarBuilder, num_classes: usize) -> Result<Self> {
        let encoder = build_encoder(arch, vb.clone())?;
        let head = candle_nn::linear(arch.feature_dim(), num_classes, vb.pp(arch.head_prefix()))?;
        Ok(Self {
            encoder,
            head,
            num_classes,
        })
    }

    /// The encoder under the head.
    pub fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// (B,3,H,W) -> logits (B, num_classes), BatchNorm in eval mode.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_t(x, false)?)
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.head.forward(&self.encoder.forward_t(x, train)?)
    }
}

/// A convolution (no bias) followed by BatchNorm, the unit all three architectures are made of;
/// both run on [`crate::ops`].
#[derive(Clone, Debug)]
pub(crate) struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    /// A `k`×`k` convolution `cin -> cout` with `params` (bias-free, weight
    /// `(cout, cin/groups, k, k)` named `weight` under `vb_conv`) and a BatchNorm of `cout`
    /// channels under `vb_bn` (their names differ per architecture).
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        params: ConvParams,
        eps: f64,
        vb_conv: VarBuilder,
        vb_bn: VarBuilder,
    ) -> Result<Self> {
        let conv = conv_no_bias(cin, cout, k, params, vb_conv)?;
        let bn = BatchNorm::new(cout, eps, vb_bn)?;
        Ok(Self { conv, bn })
    }

    /// `act(bn(conv(x)))`, the activation fused into the BatchNorm kernels.
    pub fn forward_act(
        &self,
        x: &Tensor,
        train: bool,
        act: Activation,
    ) -> candle_core::Result<Tensor> {
        Ok(self.bn.forward_act(&self.conv.forward(x)?, train, act)?)
    }
}

/// A bias-free convolution whose weight `(cout, cin/groups, k, k)` is `vb`'s `weight`, created
/// (when absent from a VarMap) with candle's default Kaiming-normal initialisation, as
/// `candle_nn::conv2d_no_bias` does.
pub(crate) fn conv_no_bias(
    cin: usize,
    cout: usize,
    k: usize,
    params: ConvParams,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if params.groups == 0 || cin % params.groups != 0 {
        return Err(Error::invalid(format!(
            "convolution {cin} -> {cout}: {} groups do not divide the input channels",
            params.groups
        )));
    }
    let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
    let weight = vb.get_with_hints((cout, cin / params.groups, k, k), "weight", init)?;
    Conv2d::new(weight, None, params)
}

/// (B,C,H,W) -> (B,C): mean over the spatial dimensions.
pub(crate) fn global_avg_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    x.mean((2, 3))
}
