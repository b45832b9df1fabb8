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
use candle_nn::{BatchNorm, VarBuilder};

use super::{bn_config, global_avg_pool, Arch, Encoder, Features};
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

/// A bias-free convolution with TensorFlow "same" padding; depthwise when `groups == channels`.
#[derive(Clone, Debug)]
struct SameConv {
    /// (cout, cin / groups, k, k)
    weight: Tensor,
    k: usize,
    stride: usize,
    depthwise: bool,
}

impl SameConv {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let weight = vb.get_with_hints((cout, cin, k, k), "weight", init)?;
        Ok(Self {
            weight,
            k,
            stride,
            depthwise: false,
        })
    }

    fn depthwise(c: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let weight = vb.get_with_hints((c, 1, k, k), "weight", init)?;
        Ok(Self {
            weight,
            k,
            stride,
            depthwise: true,
        })
    }

    /// (B,Cin,H,W) -> (B,Cout,ceil(H/s),ceil(W/s)).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (pt, pb) = same_padding(h, self.k, self.stride);
        let (pl, pr) = same_padding(w, self.k, self.stride);
        if self.depthwise {
            let x = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
            return depthwise_conv2d(&x, &self.weight, self.stride);
        }
        if pt == pb && pl == pr && pt == pl {
            return x.conv2d(&self.weight, pt, self.stride, 1, 1);
        }
        let x = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
        x.conv2d(&self.weight, 0, self.stride, 1, 1)
    }
}

/// Depthwise convolution without padding: x (B,C,Hp,Wp), w (C,1,k,k) -> (B,C,(Hp-k)/s+1,(Wp-k)/s+1).
///
/// Computed as a sum of k*k shifted, channel-scaled views of the input (differentiable candle
/// ops), which is far faster on CPU than candle's grouped convolution (one convolution per
/// channel). For stride s the input is first split into its s*s phases `x[.., a::s, b::s]`.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    let (b, c, hp, wp) = x.dims4()?;
    let (cw, one, k, k2) = w.dims4()?;
    if cw != c || one != 1 || k != k2 || hp < k || wp < k || stride == 0 {
        candle_core::bail!(
            "depthwise_conv2d: input {:?}, weight {:?}, stride {stride}",
            x.dims(),
            w.dims()
        );
    }
    let oh = (hp - k) / stride + 1;
    let ow = (wp - k) / stride + 1;
    // phases[a][b] = x[:, :, a::s, b::s], each (B, C, ceil(Hp/s), ceil(Wp/s))
    let phases: Vec<Vec<Tensor>> = if stride == 1 {
        vec![vec![x.clone()]]
    } else {
        let hs = hp.div_ceil(stride);
        let ws = wp.div_ceil(stride);
        let xp = x
            .pad_with_zeros(2, 0, hs * stride - hp)?
            .pad_with_zeros(3, 0, ws * stride - wp)?
            .reshape((b, c, hs, stride, ws, stride))?;
        (0..stride)
            .map(|a| {
                (0..stride)
                    .map(|bb| {
                        xp.narrow(3, a, 1)?
                            .narrow(5, bb, 1)?
                            .reshape((b, c, hs, ws))?
                            .contiguous()
                    })
                    .collect::<candle_core::Result<Vec<_>>>()
            })
            .collect::<candle_core::Result<Vec<_>>>()?
    };
    let w = w.reshape((c, k * k))?;
    let mut acc: Option<Tensor> = None;
    for i in 0..k {
        for j in 0..k {
            let tap = phases[i % stride][j % stride]
                .narrow(2, i / stride, oh)?
                .narrow(3, j / stride, ow)?;
            let wij = w.narrow(1, i * k + j, 1)?.reshape((1, c, 1, 1))?;
            let term = tap.broadcast_mul(&wij)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    Ok(acc.expect("k >= 1"))
}

fn relu6(x: &Tensor) -> candle_core::Result<Tensor> {
    x.clamp(0f32, 6f32)
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
                candle_nn::batch_norm(mid, bn_config(BN_EPS), vb.pp("_bn0"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            expand,
            dw: SameConv::depthwise(mid, k, stride, vb.pp("_depthwise_conv"))?,
            bn1: candle_nn::batch_norm(mid, bn_config(BN_EPS), vb.pp("_bn1"))?,
            project: SameConv::new(mid, cout, 1, 1, vb.pp("_project_conv"))?,
            bn2: candle_nn::batch_norm(cout, bn_config(BN_EPS), vb.pp("_bn2"))?,
            skip: stride == 1 && cin == cout,
        })
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        if let Some((conv, bn)) = &self.expand {
            y = relu6(&bn.forward_t(&conv.forward(&y)?, train)?)?;
        }
        y = relu6(&self.bn1.forward_t(&self.dw.forward(&y)?, train)?)?;
        y = self.bn2.forward_t(&self.project.forward(&y)?, train)?;
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
        let bn0 = candle_nn::batch_norm(32, bn_config(BN_EPS), vb.pp("_bn0"))?;
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
        let bn1 = candle_nn::batch_norm(1280, bn_config(BN_EPS), vb.pp("_bn1"))?;
        Ok(Self {
            stem,
            bn0,
            blocks,
            head,
            bn1,
        })
    }

    fn stem_forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        relu6(&self.bn0.forward_t(&self.stem.forward(x)?, train)?)
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
        let y = relu6(&self.bn1.forward_t(&self.head.forward(x)?, train)?)?;
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
    use candle_core::{DType, Device};

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

    #[test]
    fn depthwise_matches_grouped_conv() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2. * 3. * 9. * 8., &dev)?
            .reshape((2, 3, 9, 8))?
            .sin()?;
        let w = Tensor::arange(0f32, 3. * 25., &dev)?
            .reshape((3, 1, 5, 5))?
            .cos()?;
        for stride in [1, 2, 3] {
            let got = depthwise_conv2d(&x, &w, stride)?;
            let want = x.conv2d(&w, 0, stride, 1, 3)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.max_all()?.to_dtype(DType::F32)?;
            assert!(diff.to_scalar::<f32>()? < 1e-5, "stride {stride}");
        }
        Ok(())
    }
}
